/*
 * wal_switch.c — the writer's side of timelines: switching to a new timeline
 * at promotion (wal_switch_timeline) and following a primary's switch on a
 * replica (wal_follow_timeline), both completed by wal_finish_switch (W10).
 * History files and the chain: wal_timeline.c.
 */
#include "wal/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "wal/wal_int.h"
#include "wal/wal_writer.h"

uint32_t wal_timeline(const struct wal *w) { return w->timeline; }
uint64_t wal_timeline_switch_lsn(const struct wal *w) { return w->chain.v[w->chain.n - 1].begin_lsn; }
uint32_t wal_timeline_parent(const struct wal *w)
{
    return w->chain.n >= 2 ? w->chain.v[w->chain.n - 2].tli : 0;
}

/* Where wal_append_record would put a record of aligned size `aligned` now. */
static uint64_t landing_lsn(const struct wal *w, size_t aligned)
{
    uint64_t at = w->insert_lsn;
    if (at % w->seg_size == 0)
        at += WAL_SEG_HDR_SIZE;
    if (aligned > w->seg_size - at % w->seg_size)
        at = at - at % w->seg_size + w->seg_size + WAL_SEG_HDR_SIZE;
    return at;
}

/* ---------------------------------------------------------------- timelines */

/* Copies segment segno to the new timeline's name with a new header (tmp,
 * fdatasync, rename; the caller fsyncs the dir). Replaces an earlier copy. */
static int seg_copy_to_timeline(struct wal *w, uint64_t segno, uint32_t new_tli)
{
    char src[PATH_MAX], dst[PATH_MAX], tmp[PATH_MAX], name[32];
    int exists;
    wal_seg_path_ex(w, segno, src, sizeof(src), &exists);
    wal_seg_name(name, sizeof(name), new_tli, segno);
    snprintf(dst, sizeof(dst), "%s/%s", w->wal_dir, name);
    snprintf(tmp, sizeof(tmp), "%s/segtemp.%d", w->wal_dir, (int)getpid());
    uint8_t *data = calloc(1, w->seg_size);
    if (data == NULL)
        return -ENOMEM;
    const char *what = "read";
    int rc = 0, fd = -1;
    if (exists) {
        fd = open(src, O_RDONLY | O_CLOEXEC);
        long got = fd < 0 ? -errno : wal_pread_all(fd, data, w->seg_size, 0);
        if (fd >= 0)
            close(fd);
        if (got < 0) {
            rc = (int)got;
            goto fail;
        }
    }
    struct wal_seg_header h = {WAL_FORMAT_VERSION, new_tli, segno, w->seg_size, w->system_id};
    wal_seg_header_encode(data, &h);
    what = "create";
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        rc = -errno;
        goto fail;
    }
    what = "write";
    /* Only the bytes in use are copied (a promotion's outage: a 16 MiB write + fsync is
     * ~100 ms); the rest is allocated as zeros (it must read as zeros: the end of the log
     * is found by the first invalid record). Without fallocate, zeros are written. */
    size_t used = w->seg_size;
    if (segno == (w->insert_lsn - 1) / w->seg_size || w->insert_lsn <= segno * w->seg_size)
        used = RD_MIN(w->seg_size, RD_ALIGN_UP((size_t)(w->insert_lsn > segno * w->seg_size
                                                            ? w->insert_lsn - segno * w->seg_size
                                                            : 0) + WAL_SEG_HDR_SIZE,
                                               (size_t)4096));
    rc = wal_pwrite_all(fd, data, used, 0);
    if (rc == 0 && used < w->seg_size && fallocate(fd, 0, 0, (off_t)w->seg_size) < 0) {
        if (errno != EOPNOTSUPP) {
            what = "fallocate";
            rc = -errno;
        } else {
            rc = wal_pwrite_all(fd, data + used, w->seg_size - used, (off_t)used);
        }
    }
    if (rc == 0 && fdatasync(fd) < 0) {
        what = "fdatasync";
        rc = -errno;
    }
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, dst) < 0) {
        what = "rename";
        rc = -errno;
    }
    if (rc < 0)
        goto fail;
    free(data);
    return 0;
fail:
    free(data);
    rd_error("could not %s WAL segment \"%s\" (copy of \"%s\" for timeline %" PRIu32 "): %s", what, tmp, src,
             new_tli, rd_strerror(rc));
    return rc;
}

/*
 * The TIMELINE record at switch_lsn is durable in the current timeline's
 * files: copies the segments from the switch one to the end of the log under
 * the new timeline's name (new header, same records), writes the history file,
 * then the control file (the commit point), then removes the old timeline's
 * files past the switch segment. Idempotent (recovery completes a switch cut
 * short by a crash with it).
 */
int wal_finish_switch(struct wal *w, uint32_t new_tli, uint64_t switch_lsn)
{
    uint64_t first = switch_lsn / w->seg_size;
    uint64_t last = RD_MAX(first, (w->insert_lsn - 1) / w->seg_size);
    int rc;
    wal_prep_abandon(w, 0); /* it would carry the old timeline's name and header */
    for (uint64_t s = first; s <= last; s++)
        if ((rc = seg_copy_to_timeline(w, s, new_tli)) < 0)
            return rc;
    if ((rc = wal_fsync_dir(w->wal_dir)) < 0)
        return rc;
    struct wal_chain nc = {NULL, 0};
    nc.v = malloc((w->chain.n + 1) * sizeof(*nc.v));
    if (nc.v == NULL)
        return -ENOMEM;
    memcpy(nc.v, w->chain.v, w->chain.n * sizeof(*nc.v));
    nc.n = w->chain.n;
    if ((rc = wal_chain_push(&nc, new_tli, switch_lsn)) < 0 || (rc = wal_history_write(w->wal_dir, &nc)) < 0) {
        wal_chain_free(&nc);
        return rc;
    }
    struct wal_control c = w->ctl;
    c.timeline = new_tli;
    c.time_us = rd_wall_us();
    if ((rc = wal_control_write(w->dir, &c)) < 0) {
        wal_chain_free(&nc);
        return rc;
    }
    w->ctl = c;
    uint32_t old_tli = w->timeline;
    wal_chain_free(&w->chain);
    w->chain = nc;
    w->timeline = new_tli;
    /* Cached fds of the switch segment and later name the old files. */
    for (size_t i = 0; i < w->nfds;) {
        if (w->fds[i].segno >= first)
            wal_seg_fd_forget(w, w->fds[i].segno);
        else
            i++;
    }
    /* The old timeline's files past the switch segment (prepared, empty, or
     * copied above) are no longer part of this log. */
    DIR *d = opendir(w->wal_dir);
    struct dirent *de;
    int removed = 0;
    while (d != NULL && (de = readdir(d)) != NULL) {
        uint32_t tl;
        uint64_t sn;
        if (wal_seg_name_parse(de->d_name, &tl, &sn) != 0 || tl != old_tli || sn <= first)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%.64s", w->wal_dir, de->d_name);
        if (unlink(path) == 0)
            removed++;
        else
            rd_warn("could not remove WAL segment \"%s\": %s", path, strerror(errno));
    }
    if (d != NULL)
        closedir(d);
    if (removed && (rc = wal_fsync_dir(w->wal_dir)) < 0)
        return rc;
    w->prepared_segno = last;
    w->have_prepared = 1;
    rd_info("now on timeline %" PRIu32 " (from %" PRIu32 " at %X/%X)", new_tli, old_tli,
            (unsigned)(switch_lsn >> 32), (unsigned)switch_lsn);
    return 0;
}

int wal_switch_timeline(struct wal *w, uint64_t *switch_lsn) { return wal_switch_timeline_min(w, 0, switch_lsn); }

int wal_promotion_timeline(uint32_t cur, uint64_t term, uint32_t *out)
{
    uint64_t next_block = ((uint64_t)cur | WAL_TLI_CRASH_MASK) + 1u;
    uint64_t by_term = term << WAL_TLI_CRASH_BITS;
    if (term > (UINT32_MAX >> WAL_TLI_CRASH_BITS) || next_block > UINT32_MAX)
        return -ERANGE;
    *out = (uint32_t)RD_MAX(next_block, by_term);
    return 0;
}

int wal_crash_timeline(uint32_t cur, uint32_t *out)
{
    if (((cur + 1u) & WAL_TLI_CRASH_MASK) == 0 || cur == UINT32_MAX)
        return -ERANGE;
    *out = cur + 1u;
    return 0;
}

int wal_switch_timeline_min(struct wal *w, uint32_t min_tli, uint64_t *switch_lsn)
{
    rd_assert(w->recovered);
    rd_assert(w->timeline < UINT32_MAX);
    uint32_t new_tli = RD_MAX(w->timeline + 1, min_tli);
    uint64_t at = landing_lsn(w, RD_ALIGN_UP(WAL_RECORD_HDR_SIZE + WAL_TIMELINE_BODY, WAL_RECORD_ALIGN));
    uint8_t body[WAL_TIMELINE_BODY];
    rd_put_u32le(body, new_tli);
    rd_put_u32le(body + 4, w->timeline);
    rd_put_u64le(body + 8, at);
    uint64_t start, end;
    int rc = wal_append_record(w, WAL_REC_TIMELINE, 0, ENGINE_PAGE_NONE, body, sizeof(body), &start, &end);
    if (rc < 0)
        return rc;
    rd_assert(start == at);
    if ((rc = wal_flush_sync(w, end)) < 0 || (rc = wal_finish_switch(w, new_tli, at)) < 0)
        return rc;
    *switch_lsn = at;
    return 0;
}

int wal_follow_timeline(struct wal *w, uint32_t new_timeline, uint64_t switch_lsn)
{
    rd_assert(w->recovered);
    /* The end of the record before it is accepted too (as by wal_append_encoded). */
    switch_lsn = wal_next_record_lsn(switch_lsn, w->seg_size);
    char s[32];
    wal_fmt_lsn(s, sizeof(s), switch_lsn);
    if (new_timeline <= w->timeline || switch_lsn >= w->insert_lsn ||
        switch_lsn <= wal_timeline_switch_lsn(w)) {
        rd_error("cannot follow timeline %" PRIu32 " at %s from timeline %" PRIu32 " (log ends at %X/%X)",
                 new_timeline, s, w->timeline, (unsigned)(w->insert_lsn >> 32), (unsigned)w->insert_lsn);
        return -EINVAL;
    }
    int rc = wal_flush_sync(w, w->insert_lsn);
    if (rc < 0)
        return rc;
    /* The TIMELINE record must be in this log, at switch_lsn. */
    uint8_t b[RD_ALIGN_UP(WAL_RECORD_HDR_SIZE + WAL_TIMELINE_BODY, WAL_RECORD_ALIGN)];
    char path[PATH_MAX];
    wal_seg_path(w, switch_lsn / w->seg_size, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC); /* buffered: the writer's fd may be O_DIRECT */
    long got = fd < 0 ? -errno : wal_pread_all(fd, b, sizeof(b), switch_lsn % w->seg_size);
    if (fd >= 0)
        close(fd);
    struct wal_record r;
    if (got < 0)
        return (int)got;
    if (wal_record_decode(b, (size_t)got, &r) < 0 || r.type != WAL_REC_TIMELINE ||
        rd_get_u32le(r.body) != new_timeline || rd_get_u32le(r.body + 4) != w->timeline ||
        rd_get_u64le(r.body + 8) != switch_lsn) {
        rd_error("cannot follow timeline %" PRIu32 ": no matching TIMELINE record at %s", new_timeline, s);
        return RD_ECORRUPT;
    }
    return wal_finish_switch(w, new_timeline, switch_lsn);
}
