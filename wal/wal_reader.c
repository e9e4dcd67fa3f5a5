/*
 * wal_reader.c — reads the log with pread (not io_uring): crash recovery,
 * redoubt-dump and wal_truncate. Formats and the validity rule are at the
 * top of wal_record.c. Layer: uses wal_record.c, wal_control.c and
 * wal_timeline.c only; the writer (wal_recover.c) uses it, never the reverse.
 *
 * The reader loads one whole segment at a time. At an invalid record it
 * re-reads the rest of that segment once (the log may have grown since it was
 * loaded), then decides torn tail vs corruption by scanning forward for any
 * record with a valid checksum (wal_record.c, "Torn tail or corruption?").
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/util.h"
#include "wal/wal.h"
#include "wal/wal_int.h"

struct wal_reader {
    char wal_dir[WAL_DIR_MAX + 8];
    uint64_t seg_size;
    uint32_t timeline;   /* the newest of the chain */
    struct wal_chain chain;
    uint64_t pos;      /* next record */
    uint64_t prev;     /* start of the last record returned */
    int have_prev;
    uint8_t *seg;      /* seg_size bytes: the loaded segment */
    uint64_t segno;
    int loaded;        /* seg holds segment segno */
    int missing;       /* ... which does not exist */
    const char *hdr_why; /* ... whose header is invalid (NULL: valid) */
    struct wal_reader_stop stop;
};

static uint32_t path_of(const struct wal_reader *r, uint64_t segno, char *dst, size_t len)
{
    int exists;
    return wal_chain_seg_path(r->wal_dir, &r->chain, r->seg_size, segno, dst, len, &exists);
}

/* The newest timeline that has a segment file (no control file to say). */
static uint32_t newest_timeline(const char *wal_dir)
{
    DIR *d = opendir(wal_dir);
    uint32_t best = 0;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        uint32_t tl;
        uint64_t s;
        if (wal_seg_name_parse(de->d_name, &tl, &s) == 0 && tl > best)
            best = tl;
    }
    if (d != NULL)
        closedir(d);
    return best;
}

/* Loads segment segno into r->seg (a short or missing file reads as zeros). */
static int load_segment(struct wal_reader *r, uint64_t segno)
{
    char path[PATH_MAX];
    uint32_t file_tl = path_of(r, segno, path, sizeof(path));
    r->segno = segno;
    r->loaded = 1;
    r->missing = 0;
    r->hdr_why = NULL;
    memset(r->seg, 0, r->seg_size);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            r->loaded = 0;
            return -errno;
        }
        r->missing = 1;
        return 0;
    }
    long n = wal_pread_all(fd, r->seg, r->seg_size, 0);
    int rc = n < 0 ? (int)n : 0;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0) {
        r->loaded = 0;
        return rc;
    }
    struct wal_seg_header h;
    const char *why;
    if (wal_seg_header_decode(r->seg, (size_t)n, &h, &why) != 0)
        r->hdr_why = why;
    else if (h.segno != segno || h.segment_size_bytes != r->seg_size || h.timeline != file_tl)
        r->hdr_why = "segment header does not match its file name or the segment size";
    return 0;
}

/* Re-reads bytes [off, seg_size) of the loaded segment (the log may have grown). */
static int refresh_segment(struct wal_reader *r, uint64_t off)
{
    char path[PATH_MAX];
    path_of(r, r->segno, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    long n = wal_pread_all(fd, r->seg + off, r->seg_size - off, off);
    int rc = n < 0 ? (int)n : 0;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

static int scan_buffer(const uint8_t *seg, uint64_t seg_size, uint64_t from, uint64_t *found)
{
    struct wal_record rec;
    for (uint64_t off = RD_ALIGN_UP(from, WAL_RECORD_ALIGN); off + WAL_RECORD_HDR_SIZE <= seg_size;
         off += WAL_RECORD_ALIGN) {
        if (wal_record_decode(seg + off, seg_size - off, &rec) > 0) {
            *found = off;
            return 1;
        }
    }
    return 0;
}

/*
 * After the first invalid record at r->pos: looks for any record with a valid
 * checksum after it, in this segment and in every later segment file. Fills
 * r->stop; returns 1 if one was found (corruption), 0 if not, or -errno.
 * Leaves r->seg unloaded when it read other segments.
 */
static int scan_forward(struct wal_reader *r, uint64_t from_off)
{
    uint64_t found;
    if (!r->missing && scan_buffer(r->seg, r->seg_size, from_off, &found)) {
        path_of(r, r->segno, r->stop.valid_path, sizeof(r->stop.valid_path));
        r->stop.valid_offset = found;
        return 1;
    }
    uint64_t *segs = NULL;
    long n = wal_chain_list(r->wal_dir, &r->chain, r->seg_size, &segs);
    if (n < 0)
        return (int)n;
    uint64_t here = r->segno;
    int rc = 0;
    for (long i = 0; i < n && rc == 0; i++) {
        if (segs[i] <= here)
            continue;
        if ((rc = load_segment(r, segs[i])) < 0)
            break;
        if (scan_buffer(r->seg, r->seg_size, WAL_SEG_HDR_SIZE, &found)) {
            path_of(r, segs[i], r->stop.valid_path, sizeof(r->stop.valid_path));
            r->stop.valid_offset = found;
            rc = 1;
        }
    }
    free(segs);
    r->loaded = 0;
    return rc;
}

static int stop_at(struct wal_reader *r, const char *why)
{
    memset(&r->stop, 0, sizeof(r->stop));
    r->stop.reason = why;
    r->stop.lsn = r->pos;
    r->stop.offset = r->pos % r->seg_size;
    path_of(r, r->pos / r->seg_size, r->stop.path, sizeof(r->stop.path));
    uint64_t from = r->hdr_why != NULL ? WAL_SEG_HDR_SIZE : r->stop.offset + WAL_RECORD_ALIGN;
    int rc = scan_forward(r, from);
    if (rc < 0)
        return rc;
    r->stop.corrupt = rc;
    return rc ? RD_ECORRUPT : 0;
}

int wal_reader_open(const char *dir, uint64_t start_lsn, struct wal_reader **out)
{
    return wal_reader_open_timeline(dir, start_lsn, 0, out);
}

int wal_reader_open_timeline(const char *dir, uint64_t start_lsn, uint32_t timeline, struct wal_reader **out)
{
    if (strlen(dir) >= WAL_DIR_MAX)
        return -ENAMETOOLONG;
    struct wal_reader *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    snprintf(r->wal_dir, sizeof(r->wal_dir), "%s/wal", dir);
    struct wal_control c;
    int rc = wal_control_read(dir, &c);
    uint64_t *segs = NULL;
    long n = 0;
    r->timeline = timeline != 0 ? timeline : rc == 0 ? c.timeline : newest_timeline(r->wal_dir);
    if (rc == 0 || r->timeline != 0) {
        int crc = wal_chain_load(r->wal_dir, r->timeline, &r->chain);
        if (crc < 0) {
            free(r);
            return crc;
        }
    }
    if (rc == 0) {
        r->seg_size = c.segment_size_bytes;
        n = wal_chain_list(r->wal_dir, &r->chain, r->seg_size, &segs);
    } else if (r->timeline == 0) {
        rc = -ENOENT;
    } else {
        /* No usable control file (redoubt-dump on a damaged dir): take the
         * newest timeline and the segment size from one of its segments' header. */
        char path[PATH_MAX];
        DIR *d = opendir(r->wal_dir);
        struct dirent *de;
        path[0] = 0;
        while (d != NULL && (de = readdir(d)) != NULL) {
            uint32_t tl;
            uint64_t s;
            if (wal_seg_name_parse(de->d_name, &tl, &s) == 0 && tl == r->timeline) {
                snprintf(path, sizeof(path), "%s/%s", r->wal_dir, de->d_name);
                break;
            }
        }
        if (d != NULL)
            closedir(d);
        uint8_t hb[WAL_SEG_HDR_SIZE];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        long got = fd < 0 ? -errno : wal_pread_all(fd, hb, sizeof(hb), 0);
        if (fd >= 0 && close(fd) < 0 && got >= 0)
            got = -errno;
        struct wal_seg_header h;
        if (got < 0)
            rc = (int)got;
        else if (wal_seg_header_decode(hb, (size_t)got, &h, NULL) != 0)
            rc = RD_ECORRUPT;
        else {
            r->seg_size = h.segment_size_bytes;
            rc = 0;
            n = wal_chain_list(r->wal_dir, &r->chain, r->seg_size, &segs);
        }
    }
    if (rc == 0 && n < 0)
        rc = (int)n;
    if (rc < 0) {
        free(segs);
        wal_chain_free(&r->chain);
        free(r);
        return rc;
    }
    if (start_lsn == 0)
        start_lsn = n > 0 ? segs[0] * r->seg_size + WAL_SEG_HDR_SIZE : WAL_SEG_HDR_SIZE;
    free(segs);
    r->pos = start_lsn;
    r->seg = malloc(r->seg_size);
    if (r->seg == NULL) {
        wal_chain_free(&r->chain);
        free(r);
        return -ENOMEM;
    }
    *out = r;
    return 0;
}

int wal_reader_next(struct wal_reader *r, struct wal_record *rec)
{
    int refreshed = 0;
    for (;;) {
        uint64_t segno = r->pos / r->seg_size, off = r->pos % r->seg_size;
        if (off < WAL_SEG_HDR_SIZE) {
            r->pos = segno * r->seg_size + WAL_SEG_HDR_SIZE;
            off = WAL_SEG_HDR_SIZE;
        }
        if (r->seg_size - off < WAL_RECORD_HDR_SIZE) {
            r->pos = (segno + 1) * r->seg_size; /* the rest is padding */
            continue;
        }
        int rc;
        if (!r->loaded || r->segno != segno) {
            if ((rc = load_segment(r, segno)) < 0)
                return rc;
            refreshed = 1;
        }
        if (r->missing)
            return stop_at(r, "segment file does not exist");
        if (r->hdr_why != NULL)
            return stop_at(r, r->hdr_why);
        const char *why;
        rc = wal_record_decode_why(r->seg + off, r->seg_size - off, rec, &why);
        if (rc > 0 && r->have_prev && rec->prev_lsn != r->prev) {
            rc = RD_ECORRUPT;
            why = "prev LSN does not point at the previous record";
        }
        if (rc < 0) {
            if (!refreshed) {
                refreshed = 1;
                if ((rc = refresh_segment(r, off)) < 0)
                    return rc;
                continue;
            }
            return stop_at(r, why);
        }
        rec->lsn = r->pos;
        rec->end_lsn = r->pos + (uint64_t)rc;
        r->prev = r->pos;
        r->have_prev = 1;
        r->pos = rec->type == WAL_REC_SWITCH ? (segno + 1) * r->seg_size : rec->end_lsn;
        return 1;
    }
}

void wal_reader_position(const struct wal_reader *r, char *path, size_t path_len, uint64_t *offset)
{
    path_of(r, r->pos / r->seg_size, path, path_len);
    *offset = r->pos % r->seg_size;
}

void wal_reader_stop_info(const struct wal_reader *r, struct wal_reader_stop *out) { *out = r->stop; }
uint64_t wal_reader_segment_size(const struct wal_reader *r) { return r->seg_size; }
uint32_t wal_reader_timeline(const struct wal_reader *r) { return r->timeline; }

void wal_reader_close(struct wal_reader *r)
{
    if (r == NULL)
        return;
    free(r->seg);
    wal_chain_free(&r->chain);
    free(r);
}
