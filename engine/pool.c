/*
 * pool.c — the buffer pool ("shared buffers"): a fixed array of 8 KiB frames,
 * a page id → frame hash (chained through the frames), clock eviction and pin
 * counts.
 *
 * A frame may be evicted only if it is unpinned, not part of a running
 * mini-transaction, not dirtied by a running transaction (no-steal, E3), and —
 * when there is no data file — not dirty. Writing a dirty frame first calls
 * sink.flush_to(page LSN) (the WAL rule, E1), then seals and pwrites it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "engine/engine_int.h"

int pool_init(struct engine *e, size_t nframes)
{
    e->nframes = nframes;
    size_t hsize = 1;
    while (hsize < 2 * nframes)
        hsize *= 2;
    e->hash_mask = hsize - 1;
    e->frames = calloc(nframes, sizeof(*e->frames));
    e->txn_frames = calloc(nframes, sizeof(*e->txn_frames));
    e->ntxn_frames = 0;
    e->hash = malloc(hsize * sizeof(*e->hash));
    /* Anonymous memory is zero and page aligned, and the kernel hands its pages
     * out on first touch: opening a 128 MiB pool costs nothing up front (a
     * memset here touched every page: 100s of ms on a busy VM, paid again by
     * every aurora promotion, which opens a fresh engine). */
    void *m = mmap(NULL, nframes * ENGINE_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    e->frame_mem = m == MAP_FAILED ? NULL : m;
    if (e->frames == NULL || e->txn_frames == NULL || e->hash == NULL || e->frame_mem == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < hsize; i++)
        e->hash[i] = -1;
    for (size_t i = 0; i < nframes; i++) {
        e->frames[i].data = e->frame_mem + i * ENGINE_PAGE_SIZE;
        e->frames[i].page_id = ENGINE_PAGE_NONE;
        e->frames[i].hash_next = -1;
        e->frames[i].mtr_slot = -1;
    }
    return 0;
}

void pool_free(struct engine *e)
{
    free(e->frames);
    free(e->txn_frames);
    e->txn_frames = NULL;
    free(e->hash);
    if (e->frame_mem != NULL && munmap(e->frame_mem, e->nframes * ENGINE_PAGE_SIZE) < 0)
        rd_warn("munmap of the buffer pool failed: %s", strerror(errno));
    e->frames = NULL;
    e->hash = NULL;
    e->frame_mem = NULL;
}

static size_t hash_of(const struct engine *e, uint32_t pid)
{
    return (size_t)((pid * 2654435761u) & e->hash_mask);
}

static int32_t hash_find(const struct engine *e, uint32_t pid)
{
    for (int32_t f = e->hash[hash_of(e, pid)]; f >= 0; f = e->frames[f].hash_next)
        if (e->frames[f].page_id == pid)
            return f;
    return -1;
}

static void hash_remove(struct engine *e, int32_t fidx)
{
    int32_t *pp = &e->hash[hash_of(e, e->frames[fidx].page_id)];
    while (*pp != fidx) {
        rd_assert(*pp >= 0);
        pp = &e->frames[*pp].hash_next;
    }
    *pp = e->frames[fidx].hash_next;
    e->frames[fidx].hash_next = -1;
}

static int pwrite_all(int fd, const uint8_t *buf, size_t len, off_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        buf += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* Writes a dirty frame to the data file (WAL rule first) and marks it clean. */
int pool_write_frame(struct engine *e, int32_t fidx)
{
    struct frame *fr = &e->frames[fidx];
    rd_assert(fr->dirty && e->fd >= 0 && fr->mtr_slot < 0);
    uint64_t lsn = engine_page_lsn(fr->data);
    if (e->sink.flush_to != NULL && lsn > 0) {
        int rc = e->sink.flush_to(e->sink.ctx, lsn);
        if (rc < 0)
            return rc;
    }
    engine_page_seal(fr->data);
    off_t off = (off_t)fr->page_id * ENGINE_PAGE_SIZE;
    int rc = pwrite_all(e->fd, fr->data, ENGINE_PAGE_SIZE, off);
    if (rc < 0) {
        rd_error("could not write page %u at offset %lld of \"%s\": %s", fr->page_id, (long long)off,
                 e->path, rd_strerror(rc));
        return rc;
    }
    if (fr->page_id >= e->file_pages)
        e->file_pages = fr->page_id + 1;
    fr->dirty = false;
    e->st.dirty_writes++;
    return 0;
}

static bool evictable(const struct engine *e, const struct frame *fr)
{
    if (fr->pins > 0 || fr->mtr_slot >= 0 || fr->txn_dirty)
        return false;
    if (fr->dirty && e->fd < 0) /* no file: droppable once durable in shared storage */
        return e->sink.durable_lsn != NULL && engine_page_lsn(fr->data) <= e->sink.durable_lsn(e->sink.ctx);
    return true;
}

/* Finds a frame to reuse (writing it out if dirty). RD_ETOOBIG if none can be. */
static int find_victim(struct engine *e, int32_t *out)
{
    for (size_t step = 0; step < 3 * e->nframes; step++) {
        int32_t f = (int32_t)e->clock_hand;
        e->clock_hand = (e->clock_hand + 1) % e->nframes;
        struct frame *fr = &e->frames[f];
        if (fr->page_id == ENGINE_PAGE_NONE) {
            *out = f;
            return 0;
        }
        if (!evictable(e, fr))
            continue;
        if (fr->ref) {
            fr->ref = false;
            continue;
        }
        if (fr->dirty && e->fd >= 0) {
            int rc = pool_write_frame(e, f);
            if (rc < 0)
                return rc;
        }
        fr->dirty = false;
        hash_remove(e, f);
        fr->page_id = ENGINE_PAGE_NONE;
        e->st.evictions++;
        *out = f;
        return 0;
    }
    return RD_ETOOBIG;
}

static int read_page(struct engine *e, uint32_t pid, uint8_t *buf)
{
    memset(buf, 0, ENGINE_PAGE_SIZE);
    if (e->fd < 0 && e->sink.read_page != NULL) {
        /* E16: only where a miss changes nothing; once the running transaction changed a page
         * (or the engine failed), re-running it would repeat that change: block instead. */
        bool nb = e->miss_ok && e->sink.read_page_nb != NULL && !(e->in_txn && e->ntxn_frames > 0) && e->failed == 0;
        int rc = nb ? e->sink.read_page_nb(e->sink.ctx, pid, buf) : e->sink.read_page(e->sink.ctx, pid, buf);
        if (rc == RD_EAGAIN) {
            rd_assert(nb); /* a blocking read never answers "not yet" */
            e->st.read_waits++;
            return rc;
        }
        if (rc < 0) {
            rd_error("could not read page %u from shared storage: %s", pid, rd_strerror(rc));
            return rc;
        }
        if (engine_page_verify(buf) < 0 || (engine_page_type(buf) != 0 && pg_check(buf, pid) < 0)) {
            rd_error("page %u from shared storage fails its checksum or layout check", pid);
            return RD_ECORRUPT;
        }
        return 0;
    }
    if (e->fd < 0 || pid >= e->file_pages)
        return 0; /* never written: a zero page */
    off_t off = (off_t)pid * ENGINE_PAGE_SIZE;
    size_t got = 0;
    while (got < ENGINE_PAGE_SIZE) {
        ssize_t n = pread(e->fd, buf + got, ENGINE_PAGE_SIZE - got, off + (off_t)got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int rc = -errno;
            rd_error("could not read page %u at offset %lld of \"%s\": %s", pid, (long long)off,
                     e->path, rd_strerror(rc));
            return rc;
        }
        if (n == 0)
            break; /* short file: the rest reads as zeros */
        got += (size_t)n;
    }
    if (engine_page_verify(buf) < 0) {
        rd_error("page %u at offset %lld of \"%s\" fails its checksum", pid, (long long)off, e->path);
        return RD_ECORRUPT;
    }
    if (pg_check(buf, pid) < 0) {
        rd_error("page %u at offset %lld of \"%s\" has a bad header or cell layout", pid,
                 (long long)off, e->path);
        return RD_ECORRUPT;
    }
    return 0;
}

int pool_get(struct engine *e, uint32_t pid, enum pool_mode mode, int32_t *fidx)
{
    rd_assert(pid != ENGINE_PAGE_NONE);
    int32_t f = hash_find(e, pid);
    if (f >= 0) {
        e->st.cache_hits++;
        e->frames[f].pins++;
        e->frames[f].ref = true;
        *fidx = f;
        return 0;
    }
    e->st.cache_misses++;
    int rc = find_victim(e, &f);
    if (rc < 0)
        return rc;
    struct frame *fr = &e->frames[f];
    if (mode == POOL_READ) {
        rc = read_page(e, pid, fr->data);
        if (rc < 0)
            return rc; /* frame stays empty */
    } else {
        memset(fr->data, 0, ENGINE_PAGE_SIZE);
    }
    fr->page_id = pid;
    fr->pins = 1;
    fr->ref = true;
    fr->dirty = false;
    fr->txn_dirty = false;
    fr->mtr_slot = -1;
    size_t h = hash_of(e, pid);
    fr->hash_next = e->hash[h];
    e->hash[h] = f;
    *fidx = f;
    return 0;
}

void pool_unpin(struct engine *e, int32_t fidx)
{
    rd_assert(e->frames[fidx].pins > 0);
    e->frames[fidx].pins--;
}

void pool_discard(struct engine *e, int32_t fidx)
{
    struct frame *fr = &e->frames[fidx];
    if (fr->pins > 0 || fr->dirty || fr->mtr_slot >= 0 || fr->page_id == ENGINE_PAGE_NONE ||
        fidx == e->meta_frame)
        return;
    hash_remove(e, fidx);
    fr->page_id = ENGINE_PAGE_NONE;
}

int engine_debug_read_page(struct engine *e, uint32_t pid, uint8_t *out)
{
    int32_t f;
    int rc = pool_get(e, pid, POOL_READ, &f);
    if (rc < 0)
        return rc;
    memcpy(out, pool_data(e, f), ENGINE_PAGE_SIZE);
    pool_unpin(e, f);
    return 0;
}

int engine_invalidate_page(struct engine *e, uint32_t pid)
{
    int32_t f = hash_find(e, pid);
    if (f < 0)
        return 0;
    struct frame *fr = &e->frames[f];
    if (f == e->meta_frame) {
        if (fr->dirty || fr->mtr_slot >= 0)
            return RD_ESTATE;
        return read_page(e, 0, fr->data);
    }
    if (fr->pins > 0 || fr->dirty || fr->mtr_slot >= 0)
        return RD_ESTATE;
    hash_remove(e, f);
    fr->page_id = ENGINE_PAGE_NONE;
    return 0;
}

int engine_redo_if_cached(struct engine *e, uint32_t pid, uint8_t rec_type, const uint8_t *body, size_t body_len,
                          uint64_t end_lsn)
{
    if (pid == ENGINE_PAGE_NONE || pg_validate_record(rec_type, body, body_len) < 0)
        return RD_ECORRUPT;
    int32_t f = hash_find(e, pid);
    if (f < 0)
        return 0; /* not cached: the next read fetches it at the read point */
    struct frame *fr = &e->frames[f];
    if ((fr->pins > 0 && f != e->meta_frame) || fr->dirty || fr->mtr_slot >= 0)
        return RD_ESTATE; /* (the meta page is pinned for good; nothing else holds it between commands) */
    if (engine_page_lsn(fr->data) >= end_lsn)
        return 0;
    uint8_t *undo = e->scratch2;
    memcpy(undo, fr->data, ENGINE_PAGE_SIZE);
    int rc = engine_page_apply(fr->data, rec_type, body, body_len, end_lsn);
    if (rc == 0 && pg_check(fr->data, pid) < 0)
        rc = RD_ECORRUPT;
    if (rc < 0) { /* never serve a page a bad record broke: forget it */
        memcpy(fr->data, undo, ENGINE_PAGE_SIZE);
        if (f != e->meta_frame) {
            hash_remove(e, f);
            fr->page_id = ENGINE_PAGE_NONE;
        }
        return rc;
    }
    return 1;
}

int engine_install_page(struct engine *e, uint32_t pid, const uint8_t *page, uint64_t max_lsn)
{
    rd_assert(!e->mtr.active && pid != ENGINE_PAGE_NONE);
    if (hash_find(e, pid) >= 0)
        return 0; /* cached: the same page at the read point (E17), or newer on a writer */
    if (engine_page_verify(page) < 0 || (engine_page_type(page) != 0 && pg_check(page, pid) < 0)) {
        rd_error("page %u from shared storage fails its checksum or layout check", pid);
        return RD_ECORRUPT;
    }
    if (engine_page_lsn(page) > max_lsn)
        return RD_ESTALE;
    int32_t f;
    if (find_victim(e, &f) < 0)
        return 0; /* every frame busy: the next read asks again */
    struct frame *fr = &e->frames[f];
    memcpy(fr->data, page, ENGINE_PAGE_SIZE);
    fr->page_id = pid;
    fr->pins = 0;
    fr->ref = true;
    fr->dirty = false;
    fr->txn_dirty = false;
    fr->mtr_slot = -1;
    size_t h = hash_of(e, pid);
    fr->hash_next = e->hash[h];
    e->hash[h] = f;
    e->st.pages_installed++;
    return 1;
}
