/*
 * redoubt-dump — prints Redoubt's on-disk files in human form (like pg_waldump).
 *
 *   redoubt-dump wal DIR [--from LSN]   one line per WAL record, then why it stopped
 *   redoubt-dump control DIR            the control file
 *   redoubt-dump timeline DIR           control file timeline, history file(s), segments per timeline
 *   redoubt-dump page FILE N            one page of a data file, described
 *   redoubt-dump pages FILE             one line per page of a data file
 *
 * Exit status: 0 success (the end of a WAL is not an error), 1 usage or I/O
 * error, 2 corruption found.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/engine.h"
#include "wal/wal.h"
#include "wal/wal_int.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: redoubt-dump wal DIR [--from LSN]   WAL records from LSN (X/Y hex; default: oldest)\n"
            "       redoubt-dump control DIR            the control file DIR/control\n"
            "       redoubt-dump timeline DIR           timeline (control), history files, segments per timeline\n"
            "       redoubt-dump page FILE N            page N of a data file (e.g. DIR/data.rdb)\n"
            "       redoubt-dump pages FILE             one line per page of a data file\n"
            "       redoubt-dump --help\n"
            "exit status: 0 ok, 1 usage or I/O error, 2 corruption found\n");
}

static void fmt_lsn(char *dst, size_t len, uint64_t lsn)
{
    snprintf(dst, len, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
}

/* "X/Y" (hex halves, as printed) or a plain number (0x.. hex or decimal). */
static int parse_lsn(const char *s, uint64_t *out)
{
    char *end;
    const char *slash = strchr(s, '/');
    errno = 0;
    if (slash != NULL) {
        unsigned long long hi = strtoull(s, &end, 16);
        if (end != slash || errno || hi > 0xFFFFFFFFull)
            return -1;
        unsigned long long lo = strtoull(slash + 1, &end, 16);
        if (*end || end == slash + 1 || errno || lo > 0xFFFFFFFFull)
            return -1;
        *out = ((uint64_t)hi << 32) | lo;
        return 0;
    }
    unsigned long long v = strtoull(s, &end, 0);
    if (*end || end == s || errno)
        return -1;
    *out = v;
    return 0;
}

static const char *state_name(uint32_t s)
{
    switch (s) {
    case WAL_STATE_IN_PRODUCTION: return "in production";
    case WAL_STATE_SHUT_DOWN: return "shut down";
    default: return "UNKNOWN";
    }
}

static void fmt_time(char *dst, size_t len, uint64_t us)
{
    time_t t = (time_t)(us / 1000000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(dst, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---------------------------------------------------------------- wal */

static void print_body(const struct wal_record *rec)
{
    char a[32], t[32];
    switch (rec->type) {
    case WAL_REC_COMMIT:
        fmt_time(t, sizeof(t), rd_get_u64le(rec->body));
        printf("  txn %" PRIu64 " at %s", rd_get_u64le(rec->body + 8), t);
        break;
    case WAL_REC_CHECKPOINT:
        fmt_lsn(a, sizeof(a), rd_get_u64le(rec->body));
        fmt_time(t, sizeof(t), rd_get_u64le(rec->body + 12));
        printf("  redo %s timeline %" PRIu32 " at %s", a, rd_get_u32le(rec->body + 8), t);
        break;
    case WAL_REC_TIMELINE:
        fmt_lsn(a, sizeof(a), rd_get_u64le(rec->body + 8));
        printf("  timeline %" PRIu32 " (from %" PRIu32 ") at %s", rd_get_u32le(rec->body),
               rd_get_u32le(rec->body + 4), a);
        break;
    default: break;
    }
}

static int dump_wal(const char *dir, uint64_t from)
{
    struct wal_reader *r;
    int rc = wal_reader_open(dir, from, &r);
    if (rc < 0) {
        fprintf(stderr, "redoubt-dump: cannot read the WAL in \"%s\": %s\n", dir, rd_strerror(rc));
        return 1;
    }
    printf("WAL in %s/wal: timeline %" PRIu32 ", segment size %" PRIu64 " bytes\n", dir,
           wal_reader_timeline(r), wal_reader_segment_size(r));
    struct wal_record rec;
    uint64_t n = 0, bytes = 0;
    while ((rc = wal_reader_next(r, &rec)) == 1) {
        char lsn[32], prev[32], page[16];
        fmt_lsn(lsn, sizeof(lsn), rec.lsn);
        fmt_lsn(prev, sizeof(prev), rec.prev_lsn);
        if (rec.page_id == ENGINE_PAGE_NONE)
            snprintf(page, sizeof(page), "-");
        else
            snprintf(page, sizeof(page), "%" PRIu32, rec.page_id);
        printf("lsn %-12s prev %-12s %-10s page %-6s flags %-7s len %-5" PRIu32 " checksum ok",
               lsn, prev, wal_rec_type_name(rec.type), page,
               (rec.flags & ENGINE_REC_FLAG_MTR_END) ? "MTR_END" : "-",
               rec.body_len + WAL_RECORD_HDR_SIZE);
        print_body(&rec);
        printf("\n");
        n++;
        bytes += rec.end_lsn - rec.lsn;
    }
    printf("%" PRIu64 " records, %" PRIu64 " bytes\n", n, bytes);
    int status = 0;
    if (rc < 0 && rc != RD_ECORRUPT) {
        fprintf(stderr, "redoubt-dump: read error: %s\n", rd_strerror(rc));
        status = 1;
    } else {
        struct wal_reader_stop s;
        wal_reader_stop_info(r, &s);
        char lsn[32];
        fmt_lsn(lsn, sizeof(lsn), s.lsn);
        if (s.corrupt) {
            printf("CORRUPTION at segment file \"%s\" offset %" PRIu64 " (lsn %s): %s; valid records "
                   "follow in \"%s\" at offset %" PRIu64 "\n",
                   s.path, s.offset, lsn, s.reason, s.valid_path, s.valid_offset);
            if (n == 0 && from != 0)
                printf("(no valid record at the start: is %s the start of a record?)\n", lsn);
            status = 2;
        } else {
            printf("end of log at lsn %s (segment file \"%s\" offset %" PRIu64 "): %s\n", lsn, s.path,
                   s.offset, s.reason ? s.reason : "?");
        }
    }
    wal_reader_close(r);
    return status;
}

/* ---------------------------------------------------------------- control */

static int dump_control(const char *dir)
{
    struct wal_control c;
    int rc = wal_control_read(dir, &c);
    if (rc < 0) {
        fprintf(stderr, "redoubt-dump: cannot read control file \"%s/control\": %s\n", dir,
                rd_strerror(rc));
        return rc == RD_ECORRUPT ? 2 : 1;
    }
    char ck[32], redo[32], t[32];
    fmt_lsn(ck, sizeof(ck), c.checkpoint_lsn);
    fmt_lsn(redo, sizeof(redo), c.redo_lsn);
    fmt_time(t, sizeof(t), c.time_us);
    printf("control file %s/control (checksum ok)\n", dir);
    printf("  state:          %s (%" PRIu32 ")\n", state_name(c.state), c.state);
    printf("  system id:      %016" PRIX64 "\n", c.system_id);
    printf("  timeline:       %" PRIu32 "\n", c.timeline);
    printf("  checkpoint lsn: %s\n", ck);
    printf("  redo lsn:       %s\n", redo);
    printf("  segment size:   %" PRIu64 " bytes\n", c.segment_size_bytes);
    printf("  updated:        %s (%" PRIu64 " us)\n", t, c.time_us);
    return 0;
}

/* ---------------------------------------------------------------- timeline */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int dump_timeline(const char *dir)
{
    struct wal_control c;
    int rc = wal_control_read(dir, &c);
    int status = 0;
    char wal_dir[4200];
    snprintf(wal_dir, sizeof(wal_dir), "%s/wal", dir);
    if (rc < 0) {
        fprintf(stderr, "redoubt-dump: cannot read control file \"%s/control\": %s\n", dir, rd_strerror(rc));
        status = rc == RD_ECORRUPT ? 2 : 1;
    } else {
        printf("control file timeline: %" PRIu32 "\n", c.timeline);
        struct wal_chain ch;
        rc = wal_chain_load(wal_dir, c.timeline, &ch);
        if (rc < 0) {
            printf("  history of timeline %" PRIu32 ": unreadable (%s)\n", c.timeline, rd_strerror(rc));
            status = 2;
        } else {
            printf("  chain (oldest first):\n");
            for (size_t i = 0; i < ch.n; i++) {
                char b[32], e[32];
                fmt_lsn(b, sizeof(b), ch.v[i].begin_lsn);
                if (ch.v[i].end_lsn == UINT64_MAX)
                    snprintf(e, sizeof(e), "(current)");
                else
                    fmt_lsn(e, sizeof(e), ch.v[i].end_lsn);
                printf("    timeline %-4" PRIu32 " from %-12s to %s\n", ch.v[i].tli, b, e);
            }
            if (c.timeline > 1 && ch.n == 1)
                printf("  (no history file for timeline %" PRIu32 ")\n", c.timeline);
            wal_chain_free(&ch);
        }
    }
    /* Every history file, verbatim, and the segment files per timeline. */
    DIR *d = opendir(wal_dir);
    if (d == NULL) {
        fprintf(stderr, "redoubt-dump: cannot open \"%s\": %s\n", wal_dir, strerror(errno));
        return 1;
    }
    char *names[4096];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 4096)
        if (strstr(de->d_name, ".history") != NULL || strlen(de->d_name) == 24)
            names[n++] = strdup(de->d_name);
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (len < 8 || strcmp(names[i] + len - 8, ".history") != 0)
            continue;
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", wal_dir, names[i]);
        printf("history file %s:\n", path);
        FILE *f = fopen(path, "r");
        char line[256];
        while (f != NULL && fgets(line, sizeof(line), f) != NULL)
            printf("  %s%s", line, line[strlen(line) - 1] == '\n' ? "" : "\n");
        if (f != NULL)
            fclose(f);
    }
    uint32_t cur_tl = 0;
    uint64_t first = 0, last = 0, count = 0;
    for (size_t i = 0; i <= n; i++) {
        uint32_t tl = 0;
        uint64_t s = 0;
        int seg = i < n && wal_seg_name_parse(names[i], &tl, &s) == 0;
        if (i < n && !seg)
            continue;
        if (count > 0 && (i == n || tl != cur_tl)) {
            printf("timeline %" PRIu32 ": %" PRIu64 " segment file(s), segno %" PRIX64 " .. %" PRIX64 "\n",
                   cur_tl, count, first, last);
            count = 0;
        }
        if (i == n)
            break;
        if (count == 0) {
            cur_tl = tl;
            first = s;
        }
        last = s;
        count++;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    return status;
}

/* ---------------------------------------------------------------- pages */

static int open_data(const char *path, uint64_t *npages)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        fprintf(stderr, "redoubt-dump: cannot open data file \"%s\": %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (sb.st_size % ENGINE_PAGE_SIZE != 0)
        fprintf(stderr, "redoubt-dump: warning: \"%s\" is %lld bytes, not a whole number of pages\n",
                path, (long long)sb.st_size);
    *npages = (uint64_t)sb.st_size / ENGINE_PAGE_SIZE;
    return fd;
}

static int read_page(int fd, uint64_t n, uint8_t *page)
{
    long got = wal_pread_all(fd, page, ENGINE_PAGE_SIZE, n * ENGINE_PAGE_SIZE);
    if (got != (long)ENGINE_PAGE_SIZE) {
        fprintf(stderr, "redoubt-dump: cannot read page %" PRIu64 ": %s\n", n,
                got < 0 ? strerror((int)-got) : "short read");
        return -1;
    }
    return 0;
}

static int dump_page(const char *path, const char *nstr)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(nstr, &end, 0);
    if (*end || end == nstr || errno) {
        fprintf(stderr, "redoubt-dump: bad page number \"%s\"\n", nstr);
        return 1;
    }
    uint64_t npages;
    int fd = open_data(path, &npages);
    if (fd < 0)
        return 1;
    int status = 0;
    uint8_t page[ENGINE_PAGE_SIZE];
    if (n >= npages) {
        fprintf(stderr, "redoubt-dump: page %llu is beyond the end of \"%s\" (%" PRIu64 " pages)\n", n,
                path, npages);
        status = 1;
    } else if (read_page(fd, n, page) < 0) {
        status = 1;
    } else {
        int ok = engine_page_verify(page) == 0;
        char lsn[32];
        fmt_lsn(lsn, sizeof(lsn), engine_page_lsn(page));
        printf("page %llu of %s: id %" PRIu32 " type %u lsn %s checksum %s\n", n, path,
               engine_page_id(page), engine_page_type(page), lsn, ok ? "ok" : "BAD");
        if (ok && engine_page_id(page) != n && engine_page_lsn(page) != 0)
            printf("  WARNING: page header says id %" PRIu32 "\n", engine_page_id(page));
        engine_page_describe(page, stdout);
        status = ok ? 0 : 2;
    }
    close(fd);
    return status;
}

static int dump_pages(const char *path)
{
    uint64_t npages;
    int fd = open_data(path, &npages);
    if (fd < 0)
        return 1;
    uint8_t page[ENGINE_PAGE_SIZE];
    uint64_t bad = 0;
    printf("%s: %" PRIu64 " pages\n", path, npages);
    for (uint64_t n = 0; n < npages; n++) {
        if (read_page(fd, n, page) < 0) {
            close(fd);
            return 1;
        }
        int ok = engine_page_verify(page) == 0;
        bad += !ok;
        char lsn[32];
        fmt_lsn(lsn, sizeof(lsn), engine_page_lsn(page));
        printf("page %-8" PRIu64 " id %-8" PRIu32 " type %-3u lsn %-12s checksum %s\n", n,
               engine_page_id(page), engine_page_type(page), lsn, ok ? "ok" : "BAD");
    }
    close(fd);
    if (bad)
        printf("%" PRIu64 " pages fail their checksum\n", bad);
    return bad ? 2 : 0;
}

int main(int argc, char **argv)
{
    rd_log_init("dump", RD_LOG_WARN);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "wal") == 0) {
        uint64_t from = 0;
        if (argc == 5 && strcmp(argv[3], "--from") == 0) {
            if (parse_lsn(argv[4], &from) < 0) {
                fprintf(stderr, "redoubt-dump: bad LSN \"%s\" (expected X/Y in hex)\n", argv[4]);
                return 1;
            }
        } else if (argc != 3) {
            usage(stderr);
            return 1;
        }
        return dump_wal(argv[2], from);
    }
    if (argc == 3 && strcmp(argv[1], "control") == 0)
        return dump_control(argv[2]);
    if (argc == 3 && strcmp(argv[1], "timeline") == 0)
        return dump_timeline(argv[2]);
    if (argc == 4 && strcmp(argv[1], "page") == 0)
        return dump_page(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "pages") == 0)
        return dump_pages(argv[2]);
    usage(stderr);
    return 1;
}
