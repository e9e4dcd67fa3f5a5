/*
 * wal_sender.c — the WAL sender's cursor: copies whole encoded records from
 * the primary's own segment files with pread (README.md, "Replication"), and
 * the oldest LSN still on disk.
 */
#include "wal/wal.h"

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

/* ---------------------------------------------------------------- WAL sender */

#define WAL_REC_MAX_ALIGNED RD_ALIGN_UP(WAL_RECORD_HDR_SIZE + WAL_BODY_MAX, WAL_RECORD_ALIGN)

struct wal_sender_cursor {
    struct wal *w;
    uint8_t *buf;
    size_t cap;
    uint64_t next_lsn; /* after the last record returned (0: none yet) */
    uint64_t last_lsn; /* start of the last record returned */
};

int wal_sender_open(struct wal *w, struct wal_sender_cursor **out)
{
    struct wal_sender_cursor *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->w = w;
    *out = c;
    return 0;
}

void wal_sender_close(struct wal_sender_cursor *c)
{
    if (c == NULL)
        return;
    free(c->buf);
    free(c);
}

int wal_sender_read(struct wal_sender_cursor *c, uint64_t from_lsn, uint64_t upto_lsn, size_t max_bytes,
                    struct rd_buf *out, uint64_t *first_lsn, uint64_t *next_lsn)
{
    struct wal *w = c->w;
    uint64_t seg = w->seg_size;
    uint64_t pos = wal_next_record_lsn(from_lsn, seg);
    if (upto_lsn > w->written_lsn)
        upto_lsn = w->written_lsn; /* only records whose write completed (in the page cache) */
    *first_lsn = *next_lsn = pos;
    /* Continuing where the last call stopped: check the prev chain across calls too. */
    int check_prev = c->next_lsn != 0 && wal_next_record_lsn(c->next_lsn, seg) == pos;
    int count = 0, stop = 0;
    size_t bytes = 0;
    while (!stop && pos < upto_lsn) {
        uint64_t segno = pos / seg, off = pos % seg;
        char path[PATH_MAX];
        int exists = 1, borrowed = 0, fd = -1;
        path[0] = 0;
        /* The log's own fd for this segment when it has one open (buffered mode only: direct-mode
         * fds need aligned buffers): no path lookup, open or close per call. pread leaves it as it was. */
        for (size_t i = 0; !w->direct && i < w->nfds && !borrowed; i++)
            if (w->fds[i].segno == segno) {
                fd = w->fds[i].fd;
                borrowed = 1;
            }
        if (!borrowed) {
            wal_seg_path_ex(w, segno, path, sizeof(path), &exists);
            fd = exists ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        }
        if (fd < 0) {
            if (count > 0)
                break;
            if (!exists || errno == ENOENT) {
                rd_warn("WAL sender: segment file \"%s\" for lsn %X/%X was removed", path,
                        (unsigned)(pos >> 32), (unsigned)pos);
                return RD_ENOTFOUND;
            }
            int rc = -errno;
            rd_error("WAL sender: could not open \"%s\": %s", path, strerror(errno));
            return rc;
        }
        /* The durable bytes of this segment from pos, but at most what this
         * call may still send plus one largest record: a window never cuts a
         * record that could still be sent. */
        uint64_t lim = RD_MIN(seg, w->written_lsn - segno * seg);
        size_t budget = max_bytes > bytes ? max_bytes - bytes : 0;
        size_t want = (size_t)RD_MIN(lim - off, (uint64_t)budget + WAL_REC_MAX_ALIGNED);
        if (want > c->cap) {
            uint8_t *np = realloc(c->buf, want);
            if (np == NULL) {
                if (!borrowed)
                    close(fd);
                return -ENOMEM;
            }
            c->buf = np;
            c->cap = want;
        }
        long got = wal_pread_all(fd, c->buf, want, off);
        int err = got < 0 ? (int)-got : 0;
        if (!borrowed)
            close(fd);
        if (got < 0) {
            if (path[0] == 0)
                wal_seg_path(w, segno, path, sizeof(path));
            rd_error("WAL sender: could not read \"%s\": %s", path, strerror(err));
            return -err;
        }
        size_t p = 0;
        for (;;) {
            if (pos >= upto_lsn) {
                stop = 1;
                break;
            }
            if (wal_next_record_lsn(pos, seg) != pos) { /* segment end or a tail < 32 bytes */
                pos = wal_next_record_lsn(pos, seg);
                break;
            }
            if (count > 0 && p + 4 <= (size_t)got) { /* message full? (before the window may cut it) */
                uint64_t len = RD_ALIGN_UP((uint64_t)rd_get_u32le(c->buf + p), WAL_RECORD_ALIGN);
                if (bytes + len > max_bytes) {
                    stop = 1;
                    break;
                }
            }
            struct wal_record r;
            const char *why = "the written part of the segment ends inside a record";
            int n = p < (size_t)got ? wal_record_decode_why(c->buf + p, (size_t)got - p, &r, &why) : RD_ECORRUPT;
            if (n > 0 && check_prev && r.prev_lsn != c->last_lsn) {
                n = RD_ECORRUPT;
                why = "prev LSN does not point at the previous record";
            }
            if (n < 0) {
                if (path[0] == 0)
                    wal_seg_path(w, segno, path, sizeof(path));
                rd_error("WAL sender: invalid record in \"%s\" at offset %" PRIu64 " (lsn %X/%X): %s", path,
                         off + p, (unsigned)(pos >> 32), (unsigned)pos, why);
                return RD_ECORRUPT;
            }
            if (count > 0 && bytes + (size_t)n > max_bytes) {
                stop = 1;
                break;
            }
            if (rd_buf_append(out, c->buf + p, (size_t)n) < 0)
                return -ENOMEM;
            if (count == 0)
                *first_lsn = pos;
            count++;
            bytes += (size_t)n;
            c->last_lsn = pos;
            check_prev = 1;
            p += (size_t)n;
            pos = r.type == WAL_REC_SWITCH ? (segno + 1) * seg : pos + (uint64_t)n;
            c->next_lsn = *next_lsn = pos;
        }
    }
    return count;
}

uint64_t wal_oldest_lsn(const struct wal *w)
{
    uint64_t *segs = NULL;
    long n = wal_chain_list(w->wal_dir, &w->chain, w->seg_size, &segs);
    uint64_t lsn = n > 0 ? segs[0] * w->seg_size : w->insert_lsn;
    free(segs);
    return lsn;
}
