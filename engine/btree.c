/*
 * btree.c — the B+tree over byte-string keys, mini-transactions, overflow
 * chains, the free list, and the engine's public entry points.
 *
 * Every change goes through a mini-transaction (mtr): the first time an mtr
 * touches a page it copies the page's before-image; at commit it emits, for
 * each touched page in touch order, a PAGE_DELTA (bytes that differ from the
 * before-image) or a PAGE_IMAGE (first change after the FPI threshold), the
 * last one flagged MTR_END, and stamps each page with its record's end LSN.
 * If anything fails before emission, the mtr is rolled back from the
 * before-images, so the tree is never left half-changed in memory either.
 *
 * Storage paths use no recursion: descents keep an explicit bounded path.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "engine/engine_int.h"

struct path_ent {
    uint32_t pid;
    int32_t frame;
    int idx; /* child taken: -1 = link (leftmost), else cell index */
};

/* ---------------------------------------------------------------- meta */

static uint32_t meta_u32(const struct engine *e, unsigned off) { return pg_u32(meta_page(e), off); }

static int meta_check(const struct engine *e)
{
    const uint8_t *m = meta_page(e);
    if (m[PG_OFF_TYPE] != PG_META || memcmp(m + META_OFF_MAGIC, META_MAGIC, 8) != 0) {
        rd_error("\"%s\": page 0 is not a Redoubt meta page (bad type or magic)",
                 e->path ? e->path : "(memory)");
        return RD_ECORRUPT;
    }
    if (pg_u32(m, META_OFF_VERSION) != META_VERSION) {
        rd_error("\"%s\": meta page version %u, this build reads version %u",
                 e->path ? e->path : "(memory)", pg_u32(m, META_OFF_VERSION), META_VERSION);
        return RD_EVERSION;
    }
    if (meta_u32(e, META_OFF_HEIGHT) == 0 || meta_u32(e, META_OFF_HEIGHT) > ENGINE_MAX_HEIGHT ||
        meta_u32(e, META_OFF_ROOT) == 0 || meta_u32(e, META_OFF_ROOT) == ENGINE_PAGE_NONE) {
        rd_error("\"%s\": meta page has an impossible root or height", e->path ? e->path : "(memory)");
        return RD_ECORRUPT;
    }
    return 0;
}

/* ---------------------------------------------------------------- mini-transactions */

static void mtr_begin(struct engine *e)
{
    rd_assert(!e->mtr.active);
    e->mtr.active = true;
    e->mtr.npages = 0;
    e->mtr.npins = 0;
}

/* Pins a page for the rest of the mtr. */
static int mtr_get_mode(struct engine *e, uint32_t pid, enum pool_mode mode, int32_t *fidx)
{
    rd_assert(e->mtr.active && e->mtr.npins < MTR_MAX_PINS);
    int rc = pool_get(e, pid, mode, fidx);
    if (rc < 0)
        return rc;
    e->mtr.pins[e->mtr.npins++] = *fidx;
    return 0;
}

static int mtr_get(struct engine *e, uint32_t pid, int32_t *fidx) { return mtr_get_mode(e, pid, POOL_READ, fidx); }

/* Declares the intent to modify a pinned frame: saves its before-image once. */
static uint8_t *mtr_touch(struct engine *e, int32_t fidx)
{
    struct frame *fr = &e->frames[fidx];
    rd_assert(e->mtr.active && (fr->pins > 0));
    if (fr->mtr_slot < 0) {
        rd_assert(e->mtr.npages < MTR_MAX_PAGES);
        unsigned s = e->mtr.npages++;
        e->mtr.pages[s].frame = fidx;
        e->mtr.pages[s].before = e->before_mem + (size_t)s * ENGINE_PAGE_SIZE;
        memcpy(e->mtr.pages[s].before, fr->data, ENGINE_PAGE_SIZE);
        fr->mtr_slot = (int32_t)s;
    }
    return fr->data;
}

static void mtr_release(struct engine *e)
{
    for (unsigned i = 0; i < e->mtr.npages; i++)
        e->frames[e->mtr.pages[i].frame].mtr_slot = -1;
    for (unsigned i = 0; i < e->mtr.npins; i++)
        pool_unpin(e, e->mtr.pins[i]);
    e->mtr.active = false;
}

/* Undoes every change of the running mtr (nothing was emitted). */
static void mtr_abort(struct engine *e)
{
    for (unsigned i = 0; i < e->mtr.npages; i++)
        memcpy(e->frames[e->mtr.pages[i].frame].data, e->mtr.pages[i].before, ENGINE_PAGE_SIZE);
    mtr_release(e);
}

static bool page_changed(const uint8_t *before, const uint8_t *after)
{
    const unsigned from = ENGINE_PAGE_HDR_APPLY_FROM;
    return memcmp(before + from, after + from, ENGINE_PAGE_SIZE - from) != 0;
}

static int mtr_commit(struct engine *e)
{
    int last = -1, rc = 0;
    for (unsigned i = 0; i < e->mtr.npages; i++)
        if (page_changed(e->mtr.pages[i].before, e->frames[e->mtr.pages[i].frame].data))
            last = (int)i;
    for (int i = 0; i <= last && rc == 0; i++) {
        struct mtr_page *mp = &e->mtr.pages[i];
        struct frame *fr = &e->frames[mp->frame];
        if (!page_changed(mp->before, fr->data))
            continue;
        uint64_t old_lsn = engine_page_lsn(mp->before), end_lsn = 0;
        uint8_t type;
        size_t len;
        if (e->fpi_threshold != 0 && old_lsn < e->fpi_threshold) {
            type = ENGINE_REC_PAGE_IMAGE;
            len = pg_build_image(fr->data, e->scratch);
            e->st.image_records++;
        } else {
            type = ENGINE_REC_PAGE_DELTA;
            len = pg_build_delta(mp->before, fr->data, e->scratch);
            e->st.delta_records++;
        }
        uint8_t flags = i == last ? ENGINE_REC_FLAG_MTR_END : 0;
        rc = e->sink.emit(e->sink.ctx, fr->page_id, type, flags, e->scratch, len, &end_lsn);
        if (rc < 0) {
            rd_error("engine: sink refused a page record (%s); pages are ahead of the log",
                     rd_strerror(rc));
            e->failed = rc;
        }
        rd_put_u64le(fr->data + PG_OFF_LSN, end_lsn);
        fr->dirty = true;
        if (e->in_txn && !fr->txn_dirty) {
            fr->txn_dirty = true;
            e->txn_frames[e->ntxn_frames++] = e->mtr.pages[i].frame;
        }
        e->st.records_emitted++;
        e->st.record_bytes += len;
    }
    if (rc < 0) { /* keep pages unevictable: they must never reach the file */
        for (unsigned i = 0; i < e->mtr.npages; i++)
            e->frames[e->mtr.pages[i].frame].txn_dirty = true; /* stays set for good */
    }
    mtr_release(e);
    return rc;
}

/* ---------------------------------------------------------------- page allocation */

static int page_alloc(struct engine *e, uint8_t type, uint32_t *pid_out, int32_t *f_out)
{
    uint8_t *m = mtr_touch(e, e->meta_frame);
    uint32_t pid = pg_u32(m, META_OFF_FREE);
    int32_t f;
    int rc;
    if (pid != ENGINE_PAGE_NONE) {
        if ((rc = mtr_get(e, pid, &f)) < 0)
            return rc;
        const uint8_t *p = pool_data(e, f);
        if (p[PG_OFF_TYPE] != PG_FREE) {
            rd_error("engine: free-list page %u has type %u", pid, p[PG_OFF_TYPE]);
            return RD_ECORRUPT;
        }
        pg_set_u32(m, META_OFF_FREE, pg_link(p));
        pg_set_u32(m, META_OFF_NFREE, pg_u32(m, META_OFF_NFREE) - 1);
    } else {
        pid = pg_u32(m, META_OFF_PAGES);
        if (pid >= ENGINE_PAGE_NONE - 1)
            return RD_ETOOBIG;
        /* E15: a page past the volume's end has never been written: it is all zeros, so it is
         * not read (for an aurora writer, a GetPage round trip to storage saved per extension). */
        if ((rc = mtr_get_mode(e, pid, POOL_NOREAD, &f)) < 0)
            return rc;
        pg_set_u32(m, META_OFF_PAGES, pid + 1);
    }
    pg_init(mtr_touch(e, f), pid, type);
    *pid_out = pid;
    *f_out = f;
    return 0;
}

/* fidx must be pinned in the mtr. */
static void page_free(struct engine *e, uint32_t pid, int32_t fidx)
{
    uint8_t *m = mtr_touch(e, e->meta_frame);
    uint8_t *p = mtr_touch(e, fidx);
    pg_init(p, pid, PG_FREE);
    pg_set_link(p, pg_u32(m, META_OFF_FREE));
    pg_set_u32(m, META_OFF_FREE, pid);
    pg_set_u32(m, META_OFF_NFREE, pg_u32(m, META_OFF_NFREE) + 1);
}

/* ---------------------------------------------------------------- descent */

static int child_index(const uint8_t *p, const uint8_t *key, size_t key_len)
{
    bool found;
    unsigned pos = pg_search(p, key, key_len, &found);
    return found ? (int)pos : (int)pos - 1;
}

static uint32_t child_at(const uint8_t *p, int idx)
{
    return idx < 0 ? pg_link(p) : rd_get_u32le(pg_cell(p, (unsigned)idx) + 2);
}

static int bad_node(const struct engine *e, uint32_t pid, const char *why)
{
    rd_error("engine: \"%s\" page %u: %s", e->path ? e->path : "(memory)", pid, why);
    return RD_ECORRUPT;
}

/* Descends inside an mtr, pinning every page on the path. */
static int descend_w(struct engine *e, const uint8_t *key, size_t key_len, struct path_ent *path,
                     unsigned *depth)
{
    uint32_t pid = meta_u32(e, META_OFF_ROOT);
    for (unsigned d = 0; d < ENGINE_MAX_HEIGHT; d++) {
        int32_t f;
        int rc = mtr_get(e, pid, &f);
        if (rc < 0)
            return rc;
        const uint8_t *p = pool_data(e, f);
        path[d] = (struct path_ent){.pid = pid, .frame = f, .idx = -1};
        if (p[PG_OFF_TYPE] == PG_LEAF) {
            *depth = d;
            return 0;
        }
        if (p[PG_OFF_TYPE] != PG_INTERNAL)
            return bad_node(e, pid, "tree page is neither leaf nor internal");
        path[d].idx = child_index(p, key, key_len);
        pid = child_at(p, path[d].idx);
        if (pid == ENGINE_PAGE_NONE || pid == 0)
            return bad_node(e, path[d].pid, "internal page without a child");
    }
    return bad_node(e, pid, "tree deeper than the maximum height");
}

/*
 * Read-only descent: returns the leaf pinned in *leaf. If ub is not NULL it
 * receives the tightest separator above the leaf's key range (*ub_len = 0
 * means the leaf is the last one).
 */
static int descend_r(struct engine *e, const uint8_t *key, size_t key_len, int32_t *leaf,
                     uint8_t *ub, size_t *ub_len)
{
    uint32_t pid = meta_u32(e, META_OFF_ROOT);
    if (ub_len)
        *ub_len = 0;
    for (unsigned d = 0; d < ENGINE_MAX_HEIGHT; d++) {
        int32_t f;
        int rc = pool_get(e, pid, POOL_READ, &f);
        if (rc < 0)
            return rc;
        const uint8_t *p = pool_data(e, f);
        if (p[PG_OFF_TYPE] == PG_LEAF) {
            *leaf = f;
            return 0;
        }
        if (p[PG_OFF_TYPE] != PG_INTERNAL) {
            pool_unpin(e, f);
            return bad_node(e, pid, "tree page is neither leaf nor internal");
        }
        int idx = child_index(p, key, key_len);
        if (ub && idx + 1 < (int)pg_nslots(p)) {
            unsigned klen;
            const uint8_t *k = pg_key(p, (unsigned)(idx + 1), &klen);
            memcpy(ub, k, klen);
            *ub_len = klen;
        }
        uint32_t child = child_at(p, idx);
        pool_unpin(e, f);
        if (child == ENGINE_PAGE_NONE || child == 0)
            return bad_node(e, pid, "internal page without a child");
        pid = child;
    }
    return bad_node(e, pid, "tree deeper than the maximum height");
}

/* ---------------------------------------------------------------- overflow chains */

static int ovf_free(struct engine *e, uint32_t head)
{
    uint32_t pid = head;
    size_t count = 0, limit = ENGINE_VALUE_MAX / OVF_CAP + 2;
    while (pid != ENGINE_PAGE_NONE) {
        int rc = 0;
        mtr_begin(e);
        for (unsigned k = 0; k < OVF_PAGES_PER_MTR && pid != ENGINE_PAGE_NONE; k++) {
            int32_t f;
            if (++count > limit) {
                rc = bad_node(e, pid, "overflow chain too long");
                break;
            }
            if ((rc = mtr_get(e, pid, &f)) < 0)
                break;
            if (pool_data(e, f)[PG_OFF_TYPE] != PG_OVERFLOW) {
                rc = bad_node(e, pid, "overflow chain reaches a non-overflow page");
                break;
            }
            uint32_t next = pg_link(pool_data(e, f));
            page_free(e, pid, f);
            pid = next;
        }
        if (rc < 0) {
            mtr_abort(e);
            return rc;
        }
        if ((rc = mtr_commit(e)) < 0)
            return rc;
    }
    return 0;
}

/* Writes val into a new chain, last page first, OVF_PAGES_PER_MTR pages per mtr. */
static int ovf_write(struct engine *e, const uint8_t *val, size_t val_len, uint32_t *head)
{
    size_t i = (val_len + OVF_CAP - 1) / OVF_CAP;
    uint32_t committed = ENGINE_PAGE_NONE;
    while (i > 0) {
        uint32_t next = committed;
        int rc = 0;
        mtr_begin(e);
        for (unsigned k = 0; k < OVF_PAGES_PER_MTR && i > 0; k++) {
            i--;
            size_t off = i * OVF_CAP, len = RD_MIN((size_t)OVF_CAP, val_len - off);
            uint32_t pid;
            int32_t f;
            if ((rc = page_alloc(e, PG_OVERFLOW, &pid, &f)) < 0)
                break;
            uint8_t *p = pool_data(e, f);
            pg_set_link(p, next);
            pg_set_u32(p, OVF_OFF_USED, (uint32_t)len);
            memcpy(p + OVF_OFF_DATA, val + off, len);
            next = pid;
        }
        if (rc < 0) {
            mtr_abort(e);
            if (committed != ENGINE_PAGE_NONE)
                (void)ovf_free(e, committed); /* best effort; a leak is logged by the caller */
            return rc;
        }
        if ((rc = mtr_commit(e)) < 0)
            return rc;
        committed = next;
    }
    *head = committed;
    return 0;
}

static int ovf_read(struct engine *e, uint32_t head, size_t val_len, struct rd_buf *out)
{
    int rc = rd_buf_reserve(out, val_len);
    if (rc < 0)
        return rc;
    size_t left = val_len;
    uint32_t pid = head;
    while (left > 0) {
        int32_t f;
        if (pid == ENGINE_PAGE_NONE || pid == 0)
            return bad_node(e, head, "overflow chain ends early");
        if ((rc = pool_get(e, pid, POOL_READ, &f)) < 0)
            return rc;
        const uint8_t *p = pool_data(e, f);
        size_t used = pg_u32(p, OVF_OFF_USED);
        if (p[PG_OFF_TYPE] != PG_OVERFLOW || used != RD_MIN((size_t)OVF_CAP, left)) {
            pool_unpin(e, f);
            return bad_node(e, pid, "bad overflow page");
        }
        rd_buf_append(out, p + OVF_OFF_DATA, used); /* reserved above: cannot fail */
        left -= used;
        pid = pg_link(p);
        pool_unpin(e, f);
    }
    return 0;
}

/* ---------------------------------------------------------------- split */

struct cellref {
    const uint8_t *p;
    unsigned size;
};

static unsigned choose_split(const struct cellref *c, unsigned n)
{
    unsigned total = 0, acc = 0, m = 0;
    for (unsigned i = 0; i < n; i++)
        total += c[i].size + 2;
    while (m < n && (m == 0 || acc + c[m].size + 2 <= total / 2))
        acc += c[m++].size + 2;
    if (m > n - 1)
        m = n - 1;
    return m;
}

/*
 * Splits page p (full) while inserting cell at pos: the upper half by bytes
 * moves to the new page r. Leaf: r gets cells [m, n), separator = first key
 * of r. Internal: cell m moves up; r's leftmost child is cell m's child.
 */
static void split_page(struct engine *e, uint8_t *p, uint8_t *r, uint32_t rpid, unsigned pos,
                       const uint8_t *cell, unsigned size, uint8_t *sep, unsigned *sep_len)
{
    static struct cellref cells[ENGINE_PAGE_SIZE / 8];
    uint8_t *tmp = e->scratch2;
    memcpy(tmp, p, ENGINE_PAGE_SIZE);
    unsigned n = pg_nslots(tmp) + 1;
    rd_assert(n >= 2 && n <= RD_ARRAY_LEN(cells));
    for (unsigned i = 0, j = 0; i < n; i++) {
        if (i == pos) {
            cells[i] = (struct cellref){cell, size};
        } else {
            const uint8_t *c = pg_cell(tmp, j++);
            cells[i] = (struct cellref){c, pg_cell_size(tmp, c)};
        }
    }
    uint8_t type = tmp[PG_OFF_TYPE];
    unsigned m = choose_split(cells, n), hdr = type == PG_LEAF ? LEAF_CELL_HDR : INT_CELL_HDR;
    *sep_len = rd_get_u16le(cells[m].p);
    memcpy(sep, cells[m].p + hdr, *sep_len);
    pg_init(p, engine_page_id(tmp), type);
    pg_init(r, rpid, type);
    unsigned right_from = m;
    if (type == PG_INTERNAL) {
        pg_set_link(p, pg_link(tmp));
        pg_set_link(r, rd_get_u32le(cells[m].p + 2));
        right_from = m + 1;
    }
    for (unsigned i = 0; i < m; i++)
        rd_assert(pg_insert_cell(p, i, cells[i].p, cells[i].size));
    for (unsigned i = right_from; i < n; i++)
        rd_assert(pg_insert_cell(r, i - right_from, cells[i].p, cells[i].size));
}

/* Inserts cell at slot pos of path[d]'s page, splitting upwards as needed. */
static int insert_at(struct engine *e, struct path_ent *path, unsigned d, unsigned pos,
                     const uint8_t *cell, unsigned size)
{
    uint8_t sep[ENGINE_KEY_MAX], icell[INT_CELL_HDR + ENGINE_KEY_MAX];
    for (;;) {
        uint8_t *p = mtr_touch(e, path[d].frame);
        if (pg_insert_cell(p, pos, cell, size))
            return 0;
        uint32_t rpid;
        int32_t rf;
        int rc = page_alloc(e, p[PG_OFF_TYPE], &rpid, &rf);
        if (rc < 0)
            return rc;
        unsigned sep_len;
        split_page(e, p, pool_data(e, rf), rpid, pos, cell, size, sep, &sep_len);
        e->st.splits++;
        rd_put_u16le(icell, (uint16_t)sep_len);
        rd_put_u32le(icell + 2, rpid);
        memcpy(icell + INT_CELL_HDR, sep, sep_len);
        cell = icell;
        size = INT_CELL_HDR + sep_len;
        if (d == 0) { /* the root split: grow a new root */
            uint32_t npid;
            int32_t nf;
            if ((rc = page_alloc(e, PG_INTERNAL, &npid, &nf)) < 0)
                return rc;
            uint8_t *np = pool_data(e, nf);
            pg_set_link(np, path[0].pid);
            rd_assert(pg_insert_cell(np, 0, cell, size));
            uint8_t *m = mtr_touch(e, e->meta_frame);
            pg_set_u32(m, META_OFF_ROOT, npid);
            pg_set_u32(m, META_OFF_HEIGHT, pg_u32(m, META_OFF_HEIGHT) + 1);
            return 0;
        }
        d--;
        pos = (unsigned)(path[d].idx + 1);
    }
}

/* ---------------------------------------------------------------- put / delete */

static int put_mtr(struct engine *e, const uint8_t *key, size_t key_len, const uint8_t *cell,
                   unsigned size, uint32_t *old_chain)
{
    struct path_ent path[ENGINE_MAX_HEIGHT];
    unsigned depth;
    if (meta_u32(e, META_OFF_HEIGHT) >= ENGINE_MAX_HEIGHT)
        return RD_ETOOBIG;
    int rc = descend_w(e, key, key_len, path, &depth);
    if (rc < 0)
        return rc;
    uint8_t *lp = mtr_touch(e, path[depth].frame);
    bool found;
    unsigned pos = pg_search(lp, key, key_len, &found);
    if (found) {
        uint8_t *c = lp + pg_slot(lp, pos);
        if (!(c[6] & LEAF_FLAG_OVERFLOW) && !(cell[6] & LEAF_FLAG_OVERFLOW) && pg_cell_size(lp, c) == size) {
            /* E13: an inline value replaced by one of the same size is overwritten in place:
             * the record carries only the changed bytes, and the page keeps its layout. */
            memcpy(c, cell, size);
            return 0;
        }
        if (c[6] & LEAF_FLAG_OVERFLOW)
            *old_chain = rd_get_u32le(c + LEAF_CELL_HDR + key_len);
        pg_remove_cell(lp, pos);
    } else {
        uint8_t *m = mtr_touch(e, e->meta_frame);
        rd_put_u64le(m + META_OFF_KEYS, rd_get_u64le(m + META_OFF_KEYS) + 1);
    }
    return insert_at(e, path, depth, pos, cell, size);
}

int engine_put(struct engine *e, const uint8_t *key, size_t key_len, const uint8_t *val,
               size_t val_len)
{
    if (key_len == 0 || key_len > ENGINE_KEY_MAX || val_len > ENGINE_VALUE_MAX)
        return RD_ETOOBIG;
    if (e->failed)
        return e->failed;
    uint8_t cell[LEAF_INLINE_MAX];
    unsigned size = LEAF_CELL_HDR + (unsigned)key_len;
    bool overflow = LEAF_CELL_HDR + key_len + val_len > LEAF_INLINE_MAX;
    uint32_t head = ENGINE_PAGE_NONE, old_chain = ENGINE_PAGE_NONE;
    int rc;
    if (overflow && (rc = ovf_write(e, val, val_len, &head)) < 0)
        return rc;
    rd_put_u16le(cell, (uint16_t)key_len);
    rd_put_u32le(cell + 2, (uint32_t)val_len);
    cell[6] = overflow ? LEAF_FLAG_OVERFLOW : 0;
    memcpy(cell + LEAF_CELL_HDR, key, key_len);
    if (overflow) {
        rd_put_u32le(cell + size, head);
        size += 4;
    } else {
        if (val_len > 0)
            memcpy(cell + size, val, val_len);
        size += (unsigned)val_len;
    }
    mtr_begin(e);
    e->miss_ok = head == ENGINE_PAGE_NONE; /* E16: no chain written before this mtr */
    rc = put_mtr(e, key, key_len, cell, size, &old_chain);
    e->miss_ok = false;
    if (rc < 0) {
        mtr_abort(e);
        if (head != ENGINE_PAGE_NONE && ovf_free(e, head) < 0)
            rd_warn("engine: overflow pages from %u leaked after a failed put", head);
        return rc;
    }
    if ((rc = mtr_commit(e)) < 0)
        return rc;
    if (old_chain != ENGINE_PAGE_NONE && (rc = ovf_free(e, old_chain)) < 0)
        rd_warn("engine: old overflow chain from %u not freed (%s)", old_chain, rd_strerror(rc));
    return e->failed;
}

/* Frees empty pages upwards from the leaf, then collapses a root left with one child. */
static int delete_rebalance(struct engine *e, struct path_ent *path, unsigned d)
{
    for (; d > 0; d--) {
        const uint8_t *p = pool_data(e, path[d].frame);
        bool empty = pg_nslots(p) == 0 && (p[PG_OFF_TYPE] == PG_LEAF || pg_link(p) == ENGINE_PAGE_NONE);
        if (!empty)
            break;
        page_free(e, path[d].pid, path[d].frame);
        uint8_t *pp = mtr_touch(e, path[d - 1].frame);
        int idx = path[d - 1].idx;
        if (idx >= 0) {
            pg_remove_cell(pp, (unsigned)idx);
        } else if (pg_nslots(pp) > 0) {
            pg_set_link(pp, child_at(pp, 0));
            pg_remove_cell(pp, 0);
        } else {
            pg_set_link(pp, ENGINE_PAGE_NONE);
        }
    }
    for (unsigned guard = 0; guard < ENGINE_MAX_HEIGHT; guard++) {
        uint8_t *m = mtr_touch(e, e->meta_frame);
        uint32_t root = pg_u32(m, META_OFF_ROOT);
        int32_t f;
        int rc = mtr_get(e, root, &f);
        if (rc < 0)
            return rc;
        uint8_t *rp = pool_data(e, f);
        if (rp[PG_OFF_TYPE] != PG_INTERNAL || pg_nslots(rp) > 0)
            return 0;
        uint32_t child = pg_link(rp);
        if (child == ENGINE_PAGE_NONE) { /* no children left: the root becomes an empty leaf */
            pg_init(mtr_touch(e, f), root, PG_LEAF);
            pg_set_u32(m, META_OFF_HEIGHT, 1);
            return 0;
        }
        page_free(e, root, f);
        pg_set_u32(m, META_OFF_ROOT, child);
        pg_set_u32(m, META_OFF_HEIGHT, pg_u32(m, META_OFF_HEIGHT) - 1);
    }
    return 0;
}

static int delete_mtr(struct engine *e, const uint8_t *key, size_t key_len, uint32_t *old_chain)
{
    struct path_ent path[ENGINE_MAX_HEIGHT];
    unsigned depth;
    int rc = descend_w(e, key, key_len, path, &depth);
    if (rc < 0)
        return rc;
    bool found;
    unsigned pos = pg_search(pool_data(e, path[depth].frame), key, key_len, &found);
    if (!found)
        return RD_ENOTFOUND;
    uint8_t *lp = mtr_touch(e, path[depth].frame);
    const uint8_t *c = pg_cell(lp, pos);
    if (c[6] & LEAF_FLAG_OVERFLOW)
        *old_chain = rd_get_u32le(c + LEAF_CELL_HDR + key_len);
    pg_remove_cell(lp, pos);
    uint8_t *m = mtr_touch(e, e->meta_frame);
    rd_put_u64le(m + META_OFF_KEYS, rd_get_u64le(m + META_OFF_KEYS) - 1);
    return delete_rebalance(e, path, depth);
}

int engine_delete(struct engine *e, const uint8_t *key, size_t key_len)
{
    if (key_len == 0 || key_len > ENGINE_KEY_MAX)
        return RD_ENOTFOUND;
    if (e->failed)
        return e->failed;
    uint32_t old_chain = ENGINE_PAGE_NONE;
    mtr_begin(e);
    e->miss_ok = true; /* E16: the mtr is undone on a miss */
    int rc = delete_mtr(e, key, key_len, &old_chain);
    e->miss_ok = false;
    if (rc < 0) {
        mtr_abort(e);
        return rc;
    }
    if ((rc = mtr_commit(e)) < 0)
        return rc;
    if (old_chain != ENGINE_PAGE_NONE && (rc = ovf_free(e, old_chain)) < 0)
        rd_warn("engine: overflow chain from %u not freed (%s)", old_chain, rd_strerror(rc));
    return e->failed;
}

/* ---------------------------------------------------------------- reads */

/* E16: reads change nothing, so a miss anywhere in them may answer RD_EAGAIN. */
static int engine_get_inner(struct engine *e, const uint8_t *key, size_t key_len, struct rd_buf *out);

int engine_get(struct engine *e, const uint8_t *key, size_t key_len, struct rd_buf *out)
{
    bool was = e->miss_ok;
    e->miss_ok = true;
    int rc = engine_get_inner(e, key, key_len, out);
    e->miss_ok = was;
    return rc;
}

static int engine_get_inner(struct engine *e, const uint8_t *key, size_t key_len, struct rd_buf *out)
{
    if (key_len == 0 || key_len > ENGINE_KEY_MAX)
        return RD_ENOTFOUND;
    int32_t f;
    int rc = descend_r(e, key, key_len, &f, NULL, NULL);
    if (rc < 0)
        return rc;
    const uint8_t *p = pool_data(e, f);
    bool found;
    unsigned pos = pg_search(p, key, key_len, &found);
    if (!found) {
        pool_unpin(e, f);
        return RD_ENOTFOUND;
    }
    const uint8_t *c = pg_cell(p, pos);
    size_t vlen = rd_get_u32le(c + 2), old_len = out->len;
    if (c[6] & LEAF_FLAG_OVERFLOW) {
        uint32_t head = rd_get_u32le(c + LEAF_CELL_HDR + key_len);
        pool_unpin(e, f);
        if (vlen > ENGINE_VALUE_MAX)
            return bad_node(e, head, "overflow value longer than the maximum");
        rc = ovf_read(e, head, vlen, out);
    } else {
        rc = rd_buf_append(out, c + LEAF_CELL_HDR + key_len, vlen);
        pool_unpin(e, f);
    }
    if (rc < 0)
        out->len = old_len;
    return rc;
}

int engine_exists(struct engine *e, const uint8_t *key, size_t key_len)
{
    if (key_len == 0 || key_len > ENGINE_KEY_MAX)
        return 0;
    int32_t f;
    bool was = e->miss_ok;
    e->miss_ok = true; /* E16 */
    int rc = descend_r(e, key, key_len, &f, NULL, NULL);
    e->miss_ok = was;
    if (rc < 0)
        return rc;
    bool found;
    pg_search(pool_data(e, f), key, key_len, &found);
    pool_unpin(e, f);
    return found ? 1 : 0;
}

/* Delivers the keys of one leaf from pos; sets *done when max_keys were delivered. */
static int scan_leaf(struct engine *e, int32_t f, unsigned pos, size_t max_keys, int with_values,
                     engine_scan_fn fn, void *arg, struct rd_buf *next, size_t *count,
                     struct rd_buf *vbuf, bool *done)
{
    const uint8_t *p = pool_data(e, f);
    for (unsigned i = pos; i < pg_nslots(p); i++) {
        unsigned klen;
        const uint8_t *k = pg_key(p, i, &klen);
        if (*count >= max_keys) {
            *done = true;
            if (next && rd_buf_append(next, k, klen) < 0)
                return -ENOMEM;
            return 0;
        }
        const uint8_t *c = pg_cell(p, i);
        size_t vlen = rd_get_u32le(c + 2);
        const uint8_t *v = NULL;
        if (!(c[6] & LEAF_FLAG_OVERFLOW)) {
            v = k + klen;
        } else if (with_values) {
            if (vlen > ENGINE_VALUE_MAX)
                return bad_node(e, engine_page_id(p), "overflow value longer than the maximum");
            vbuf->len = 0;
            int rc = ovf_read(e, rd_get_u32le(k + klen), vlen, vbuf);
            if (rc < 0)
                return rc;
            v = vbuf->data;
        }
        (*count)++;
        int rc = fn(arg, k, klen, v, vlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int engine_scan(struct engine *e, const uint8_t *start, size_t start_len, size_t max_keys,
                int with_values, engine_scan_fn fn, void *arg, struct rd_buf *next)
{
    uint8_t cur[ENGINE_KEY_MAX], ub[ENGINE_KEY_MAX];
    const uint8_t *seek = start;
    size_t seek_len = start_len, count = 0, ub_len;
    struct rd_buf vbuf = {0};
    int rc = 0;
    if (next)
        next->len = 0;
    bool was = e->miss_ok;
    e->miss_ok = true; /* E16: the callback may have seen keys already; the caller discards them */
    /* Each leaf's upper bound strictly grows, so this ends; bound it anyway. */
    for (uint64_t leaves = 0; leaves <= UINT32_MAX; leaves++) {
        int32_t f;
        if ((rc = descend_r(e, seek, seek_len, &f, ub, &ub_len)) < 0)
            break;
        bool found;
        unsigned pos = seek_len ? pg_search(pool_data(e, f), seek, seek_len, &found) : 0;
        bool done = false;
        rc = scan_leaf(e, f, pos, max_keys, with_values, fn, arg, next, &count, &vbuf, &done);
        pool_unpin(e, f);
        if (rc != 0 || done || ub_len == 0)
            break;
        memcpy(cur, ub, ub_len);
        seek = cur;
        seek_len = ub_len;
    }
    e->miss_ok = was;
    rd_buf_free(&vbuf);
    return rc;
}

uint64_t engine_key_count(const struct engine *e) { return rd_get_u64le(meta_page(e) + META_OFF_KEYS); }

/* ---------------------------------------------------------------- transactions */

void engine_txn_begin(struct engine *e)
{
    rd_assert(!e->in_txn);
    e->in_txn = true;
}

void engine_txn_end(struct engine *e)
{
    rd_assert(e->in_txn);
    e->in_txn = false;
    if (e->failed)
        return; /* pages ahead of the log stay pinned in memory */
    for (size_t i = 0; i < e->ntxn_frames; i++)
        e->frames[e->txn_frames[i]].txn_dirty = false;
    e->ntxn_frames = 0;
}

int engine_txn_changed(const struct engine *e)
{
    rd_assert(e->in_txn && !e->mtr.active);
    return e->ntxn_frames > 0 || e->failed != 0;
}

void engine_set_fpi_threshold(struct engine *e, uint64_t redo_lsn) { e->fpi_threshold = redo_lsn; }

/* ---------------------------------------------------------------- checkpoint and redo */

int engine_flush_dirty(struct engine *e)
{
    if (e->in_txn || e->mtr.active)
        return RD_ESTATE;
    if (e->failed)
        return e->failed;
    if (e->fd < 0)
        return 0;
    for (size_t i = 0; i < e->nframes; i++) {
        struct frame *fr = &e->frames[i];
        if (fr->page_id != ENGINE_PAGE_NONE && fr->dirty) {
            int rc = pool_write_frame(e, (int32_t)i);
            if (rc < 0)
                return rc;
        }
    }
    if (fdatasync(e->fd) < 0) {
        int rc = -errno;
        rd_error("could not fdatasync \"%s\": %s", e->path, rd_strerror(rc));
        return rc;
    }
    return 0;
}

int engine_flush_dirty_slice(struct engine *e, size_t *cursor, uint64_t max_lsn, size_t max_writes,
                             size_t max_scan)
{
    rd_assert(cursor != NULL);
    if (e->failed)
        return e->failed;
    if (e->in_txn || e->mtr.active || e->fd < 0)
        return 0; /* not between transactions (or no file): nothing this time */
    size_t writes = 0;
    for (size_t scanned = 0; *cursor < e->nframes && scanned < max_scan && writes < max_writes; scanned++) {
        struct frame *fr = &e->frames[*cursor];
        (*cursor)++;
        if (fr->page_id == ENGINE_PAGE_NONE || !fr->dirty || fr->mtr_slot >= 0 ||
            engine_page_lsn(fr->data) > max_lsn)
            continue; /* changed after the redo point: logged from a full image after it */
        off_t off = (off_t)fr->page_id * ENGINE_PAGE_SIZE;
        int rc = pool_write_frame(e, (int32_t)(*cursor - 1));
        if (rc < 0)
            return rc;
        /* Start this page's writeback now (as PostgreSQL's checkpoint_flush_after), so
         * the checkpoint's final fdatasync finds little left to write. */
        if (sync_file_range(e->fd, off, ENGINE_PAGE_SIZE, SYNC_FILE_RANGE_WRITE) < 0 && writes == 0)
            rd_warn("sync_file_range on \"%s\": %s (the checkpoint's fdatasync still makes it durable)", e->path,
                    strerror(errno));
        writes++;
    }
    return (int)writes;
}

int engine_sync(struct engine *e)
{
    if (e->failed)
        return e->failed;
    if (e->fd >= 0 && fdatasync(e->fd) < 0) {
        int rc = -errno;
        rd_error("could not fdatasync \"%s\": %s", e->path, rd_strerror(rc));
        return rc;
    }
    return 0;
}

size_t engine_frame_count(const struct engine *e) { return e->nframes; }

int engine_redo(struct engine *e, uint32_t page_id, uint8_t rec_type, const uint8_t *body,
                size_t body_len, uint64_t end_lsn)
{
    if (page_id == ENGINE_PAGE_NONE || pg_validate_record(rec_type, body, body_len) < 0) {
        rd_error("engine: malformed %s record for page %u (%zu bytes)", engine_rec_type_name(rec_type),
                 page_id, body_len);
        return RD_ECORRUPT;
    }
    int32_t f;
    int rc = pool_get(e, page_id, rec_type == ENGINE_REC_PAGE_IMAGE ? POOL_NOREAD : POOL_READ, &f);
    if (rc < 0)
        return rc;
    uint8_t *p = pool_data(e, f);
    if (engine_page_lsn(p) < end_lsn) {
        /* Apply in place, then check the result's structure: readers trust
         * in-memory pages, so a bad record must not reach them (E7); a page it
         * breaks is put back from the undo copy. */
        uint8_t *undo = e->scratch2;
        memcpy(undo, p, ENGINE_PAGE_SIZE);
        rc = engine_page_apply(p, rec_type, body, body_len, end_lsn);
        rd_assert(rc == 0); /* validated above */
        if (pg_check(p, page_id) < 0) {
            rd_error("engine: %s record for page %u ending at LSN %llu leaves a malformed page",
                     engine_rec_type_name(rec_type), page_id, (unsigned long long)end_lsn);
            memcpy(p, undo, ENGINE_PAGE_SIZE);
            pool_unpin(e, f);
            pool_discard(e, f); /* a NOREAD frame must not pose as the page */
            return RD_ECORRUPT;
        }
        e->frames[f].dirty = true;
    }
    pool_unpin(e, f);
    return 0;
}

int engine_reload_meta(struct engine *e) { return meta_check(e); }

/* ---------------------------------------------------------------- open / close */

static int fsync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return -ENOMEM;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0 || fsync(fd) < 0)
        rc = -errno;
    if (fd >= 0 && close(fd) < 0 && rc == 0)
        rc = -errno;
    free(copy);
    return rc;
}

/* Builds meta page 0 and an empty root leaf 1 (LSN 0), and writes them if there is a file. */
static int create_initial(struct engine *e)
{
    int32_t mf, lf;
    int rc = pool_get(e, 0, POOL_NOREAD, &mf);
    if (rc < 0)
        return rc;
    e->meta_frame = mf;
    uint8_t *m = pool_data(e, mf);
    pg_init(m, 0, PG_META);
    memcpy(m + META_OFF_MAGIC, META_MAGIC, 8);
    pg_set_u32(m, META_OFF_VERSION, META_VERSION);
    pg_set_u32(m, META_OFF_ROOT, 1);
    pg_set_u32(m, META_OFF_PAGES, 2);
    pg_set_u32(m, META_OFF_FREE, ENGINE_PAGE_NONE);
    pg_set_u32(m, META_OFF_HEIGHT, 1);
    if ((rc = pool_get(e, 1, POOL_NOREAD, &lf)) < 0)
        return rc;
    pg_init(pool_data(e, lf), 1, PG_LEAF);
    e->frames[mf].dirty = e->frames[lf].dirty = true;
    if (e->fd < 0 && e->sink.read_page != NULL) {
        /* A new shared volume: the storage nodes learn the two pages from
         * image records, one mini-transaction. */
        int32_t fr[2] = {mf, lf};
        for (int i = 0; i < 2 && rc == 0; i++) {
            size_t len = pg_build_image(pool_data(e, fr[i]), e->scratch);
            uint64_t end_lsn = 0;
            rc = e->sink.emit(e->sink.ctx, (uint32_t)i, ENGINE_REC_PAGE_IMAGE, i == 1 ? ENGINE_REC_FLAG_MTR_END : 0,
                              e->scratch, len, &end_lsn);
            if (rc == 0) {
                rd_put_u64le(pool_data(e, fr[i]) + PG_OFF_LSN, end_lsn);
                e->st.records_emitted++;
                e->st.image_records++;
            }
        }
        goto out;
    }
    if (e->fd >= 0) {
        if ((rc = pool_write_frame(e, mf)) < 0 || (rc = pool_write_frame(e, lf)) < 0)
            goto out;
        if (fdatasync(e->fd) < 0) {
            rc = -errno;
            rd_error("could not fdatasync \"%s\": %s", e->path, rd_strerror(rc));
            goto out;
        }
        if ((rc = fsync_parent_dir(e->path)) < 0)
            rd_error("could not fsync the directory of \"%s\": %s", e->path, rd_strerror(rc));
    }
out:
    pool_unpin(e, lf);
    return rc;
}

static void engine_free(struct engine *e)
{
    pool_free(e);
    free(e->before_mem);
    free(e->scratch);
    free(e->scratch2);
    free(e->path);
    free(e);
}

int engine_open(const struct engine_options *opt, struct engine **out)
{
    if (opt == NULL || opt->sink.emit == NULL)
        return -EINVAL;
    struct engine *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    e->fd = -1;
    e->sink = opt->sink;
    e->meta_frame = -1;
    size_t nframes = RD_MAX(opt->cache_pages, (size_t)64);
    int rc = pool_init(e, nframes);
    e->before_mem = malloc((size_t)MTR_MAX_PAGES * ENGINE_PAGE_SIZE);
    e->scratch = malloc(PG_DELTA_MAX);
    e->scratch2 = malloc(ENGINE_PAGE_SIZE);
    if (opt->data_path)
        e->path = strdup(opt->data_path);
    if (rc == 0 && (!e->before_mem || !e->scratch || !e->scratch2 || (opt->data_path && !e->path)))
        rc = -ENOMEM;
    if (rc < 0)
        goto fail;
    off_t size = 0;
    if (e->path) {
        e->fd = open(e->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        struct stat stbuf;
        if (e->fd < 0 || fstat(e->fd, &stbuf) < 0) {
            rc = -errno;
            rd_error("could not open data file \"%s\": %s", e->path, rd_strerror(rc));
            goto fail;
        }
        size = stbuf.st_size;
        e->file_pages = (uint32_t)((size + ENGINE_PAGE_SIZE - 1) / ENGINE_PAGE_SIZE);
        if (size % ENGINE_PAGE_SIZE != 0)
            rd_warn("data file \"%s\" is %lld bytes, not a whole number of pages", e->path,
                    (long long)size);
    }
    int fresh = size == 0;
    if (e->fd < 0 && e->sink.read_page != NULL) { /* shared storage: is the volume new? */
        int32_t mf;
        rc = pool_get(e, 0, POOL_READ, &mf);
        if (rc < 0)
            goto fail;
        fresh = engine_page_type(pool_data(e, mf)) == 0;
        if (fresh) {
            pool_unpin(e, mf);
            pool_discard(e, mf);
        } else {
            e->meta_frame = mf;
            if ((rc = meta_check(e)) < 0)
                goto fail;
        }
    }
    if (fresh) {
        rc = create_initial(e);
    } else if (e->meta_frame < 0) {
        int32_t mf;
        rc = pool_get(e, 0, POOL_READ, &mf); /* logs a checksum failure with the path */
        if (rc == 0) {
            e->meta_frame = mf;
            rc = meta_check(e);
        }
    }
    if (rc < 0)
        goto fail;
    e->st.cache_pages = nframes;
    *out = e;
    return 0;
fail:
    if (e->fd >= 0)
        close(e->fd);
    engine_free(e);
    return rc;
}

int engine_close(struct engine *e)
{
    if (e == NULL)
        return 0;
    int rc = 0;
    if (e->fd >= 0 && close(e->fd) < 0) {
        rc = -errno;
        rd_error("could not close \"%s\": %s", e->path, rd_strerror(rc));
    }
    engine_free(e);
    return rc;
}

void engine_get_stats(const struct engine *e, struct engine_stats *out)
{
    *out = e->st;
    out->pages_total = meta_u32(e, META_OFF_PAGES);
    out->pages_free = meta_u32(e, META_OFF_NFREE);
    out->cache_pages = e->nframes;
    out->keys = engine_key_count(e);
    out->height = meta_u32(e, META_OFF_HEIGHT);
}
