/*
 * redoubt-dump — prints Redoubt's on-disk files in human form (like pg_waldump).
 *
 *   redoubt-dump wal DIR [--from LSN] [--to LSN] [-n N] [--type T] [--page N] [--stats] [--follow]
 *                                       one line per WAL record (PAGE_DELTA lines show the printable
 *                                       runs of the changed bytes: key names, string values), then
 *                                       why it stopped; --stats: per-type counts and the FPI share
 *   redoubt-dump control DIR            the control file
 *   redoubt-dump slots DIR              a primary's replication slots (DIR/slots)
 *   redoubt-dump timeline DIR           control file timeline, history file(s), segments per timeline
 *   redoubt-dump page FILE N            one page of a data file, described
 *   redoubt-dump pages FILE             one line per page of a data file
 *   redoubt-dump sn-hotlog DIR [--from LSN]  storage node: one line per hot-log record, then why it stopped
 *   redoubt-dump sn-meta DIR            storage node: the meta file (epoch, truncations) and the recovered SCL
 *   redoubt-dump sn-pages DIR [N]       storage node: one line per written page of DIR/pages, or page N
 *
 * Exit status: 0 success (the end of a WAL is not an error), 1 usage or I/O
 * error, 2 corruption found.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/engine.h"
#include "redo/redo.h"
#include "replica/proto.h"
#include "storage-node/sn_int.h"
#include "wal/wal.h"
#include "wal/wal_int.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: redoubt-dump wal DIR [options]      WAL records, one per line (like pg_waldump)\n"
            "         --from LSN / -s LSN   start at LSN (X/Y hex; default: oldest); inside a record:\n"
            "                               from the next record, with a note\n"
            "         --to LSN / -e LSN     stop before the first record at or after LSN\n"
            "         -n N                  at most N records (after filters)\n"
            "         --type T              only records of type T (PAGE_DELTA, PAGE_IMAGE, CELL_INSERT, PAGE_SPLIT,\n"
            "                               COMMIT, ...)\n"
            "         --page N              only records of page N\n"
            "         --stats               records and bytes per type, FPI share, bytes per commit\n"
            "         --follow / -f         at the end of the log, wait for more (until Ctrl-C)\n"
            "       redoubt-dump control DIR            the control file DIR/control\n"
            "       redoubt-dump slots DIR              a classic primary's replication slots, DIR/slots\n"
            "       redoubt-dump timeline DIR           timeline (control), history files, segments per timeline\n"
            "       redoubt-dump page FILE N            page N of a data file (e.g. DIR/data.rdb)\n"
            "       redoubt-dump pages FILE             one line per page of a data file\n"
            "  aurora storage node (redoubt-storage --dir DIR):\n"
            "       redoubt-dump sn-hotlog DIR [--from LSN]  hot-log records (only LSN >= LSN printed; decimal),\n"
            "                                           then why the log ends and what a restart recovers\n"
            "       redoubt-dump sn-meta DIR            DIR/meta: epoch, coalesced LSN, truncations; SCL\n"
            "       redoubt-dump sn-pages DIR [N]       one line per written page of DIR/pages, or page N in full\n"
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

/* A logical record's slot and key (engine/README.md E18); bounds checked here, since the
 * WAL's validity rule does not look inside page records. */
static void print_logical(uint8_t type, const uint8_t *b, size_t n)
{
    if (n < 2)
        return;
    size_t cell = 2;
    if (type == ENGINE_REC_CELL_INSERT) {
        printf("  slot %u", rd_get_u16le(b));
    } else {
        printf("  keep %u", rd_get_u16le(b));
        if (n < 4)
            return;
        printf(" pos %u", rd_get_u16le(b + 2));
        cell = 4;
    }
    if (n < cell + 2)
        return;
    size_t klen = rd_get_u16le(b + cell), hdr = n - cell >= 7 + klen ? 7 : 6; /* leaf or internal cell */
    if (n < cell + hdr + klen)
        return;
    printf(" key \"");
    for (size_t i = 0; i < klen && i < 48; i++) {
        uint8_t c = b[cell + hdr + i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            putchar(c);
        else
            printf("\\x%02x", c);
    }
    printf("\"%s", klen > 48 ? "..." : "");
}

static void print_body(const struct wal_record *rec)
{
    char a[32], t[32];
    switch (rec->type) {
    case WAL_REC_CELL_INSERT:
    case WAL_REC_PAGE_SPLIT:
        print_logical(rec->type, rec->body, rec->body_len);
        break;
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

/* What `redoubt-dump wal` prints (pg_waldump's options). */
struct wal_dump_opts {
    uint64_t from, to;   /* to: 0 = no end */
    uint64_t limit;      /* -n: 0 = all */
    int stats, follow;
    int type;            /* --type: -1 = all */
    uint32_t page;       /* --page: ENGINE_PAGE_NONE = all */
};

struct wal_type_stats {
    uint64_t count, bytes;
};

/* Printable runs (>= 3 bytes) of a PAGE_DELTA's changed bytes: key names and
 * string values usually show here (the record itself names no key). */
static void print_delta_text(const struct wal_record *rec)
{
    if (rec->body_len < 2)
        return;
    uint16_t nr = rd_get_u16le(rec->body);
    size_t off = 2, shown = 0;
    printf("  ranges %u", nr);
    for (uint16_t i = 0; i < nr && off + 4 <= rec->body_len && shown < 60; i++) {
        uint16_t len = rd_get_u16le(rec->body + off + 2);
        const uint8_t *p = rec->body + off + 4;
        if (off + 4 + len > rec->body_len)
            break;
        for (size_t j = 0; j < len && shown < 60;) {
            size_t k = j;
            while (k < len && p[k] >= 0x20 && p[k] < 0x7f && p[k] != '"')
                k++;
            if (k - j >= 3) {
                printf("%s\"%.*s\"", shown ? " " : "  text ", (int)RD_MIN(k - j, 60 - shown), (const char *)p + j);
                shown += k - j;
            }
            j = k + 1;
        }
        off += 4 + len;
    }
}

static volatile sig_atomic_t dump_stop;
static void dump_on_sigint(int sig)
{
    (void)sig;
    dump_stop = 1;
}

/* One pass of the reader from *next; returns the status of the stop (0 end, 1 error, 2 corruption). */
static int dump_wal_pass(const char *dir, const struct wal_dump_opts *o, uint64_t *next, uint64_t *n,
                         uint64_t *bytes, struct wal_type_stats *st, int first_pass, int quiet_end)
{
    struct wal_reader *r;
    int rc = wal_reader_open(dir, *next, &r);
    if (rc < 0) {
        fprintf(stderr, "redoubt-dump: cannot read the WAL in \"%s\": %s\n", dir, rd_strerror(rc));
        return 1;
    }
    if (first_pass && !o->stats)
        printf("WAL in %s/wal: timeline %" PRIu32 ", segment size %" PRIu64 " bytes\n", dir, wal_reader_timeline(r),
               wal_reader_segment_size(r));
    struct wal_record rec;
    int done = 0;
    while (!done && !dump_stop && (rc = wal_reader_next(r, &rec)) == 1) {
        *next = rec.end_lsn;
        if (rec.lsn < o->from)
            continue; /* skipping to the first record at or after --from */
        if (o->to && rec.lsn >= o->to) {
            done = 1;
            break;
        }
        if ((o->type >= 0 && rec.type != o->type) || (o->page != ENGINE_PAGE_NONE && rec.page_id != o->page))
            continue;
        st[rec.type].count++;
        st[rec.type].bytes += rec.end_lsn - rec.lsn;
        (*n)++;
        *bytes += rec.end_lsn - rec.lsn;
        if (!o->stats) {
            char lsn[32], prev[32], page[16];
            fmt_lsn(lsn, sizeof(lsn), rec.lsn);
            fmt_lsn(prev, sizeof(prev), rec.prev_lsn);
            if (rec.page_id == ENGINE_PAGE_NONE)
                snprintf(page, sizeof(page), "-");
            else
                snprintf(page, sizeof(page), "%" PRIu32, rec.page_id);
            printf("lsn %-12s prev %-12s %-10s page %-6s flags %-7s len %-5" PRIu32 " checksum ok", lsn, prev,
                   wal_rec_type_name(rec.type), page, (rec.flags & ENGINE_REC_FLAG_MTR_END) ? "MTR_END" : "-",
                   rec.body_len + WAL_RECORD_HDR_SIZE);
            print_body(&rec);
            if (rec.type == WAL_REC_PAGE_DELTA)
                print_delta_text(&rec);
            printf("\n");
        }
        if (o->limit && *n >= o->limit)
            done = 1;
    }
    int status = 0;
    if (done || dump_stop) {
        wal_reader_close(r);
        return -1; /* asked to stop */
    }
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
            status = 2;
        } else if (!quiet_end) {
            printf("end of log at lsn %s (segment file \"%s\" offset %" PRIu64 "): %s\n", lsn, s.path, s.offset,
                   s.reason ? s.reason : "?");
        }
    }
    wal_reader_close(r);
    return status;
}

/* Is from the start of a record? Reading there yields a valid record (or the clean end). */
static int wal_at_record(const char *dir, uint64_t from)
{
    struct wal_reader *r;
    if (wal_reader_open(dir, from, &r) < 0)
        return 1; /* let the real pass report it */
    struct wal_record rec;
    int rc = wal_reader_next(r, &rec);
    wal_reader_close(r);
    return rc != RD_ECORRUPT;
}

static int dump_wal(const char *dir, const struct wal_dump_opts *o)
{
    struct wal_type_stats st[256];
    memset(st, 0, sizeof(st));
    uint64_t n = 0, bytes = 0, next = o->from;
    if (o->from != 0 && !wal_at_record(dir, o->from)) {
        /* pg_waldump's way: a --from inside a record starts at the next record. */
        char f[32];
        fmt_lsn(f, sizeof(f), o->from);
        printf("note: %s is not the start of a record; starting at the first record after it\n", f);
        next = 0;
    }
    if (o->follow) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = dump_on_sigint;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
    }
    int status = dump_wal_pass(dir, o, &next, &n, &bytes, st, 1, o->follow);
    while (o->follow && status == 0 && !dump_stop) { /* --follow: wait for more, like tail -f */
        fflush(stdout);
        usleep(200 * 1000);
        status = dump_wal_pass(dir, o, &next, &n, &bytes, st, 0, 1);
    }
    if (status < 0)
        status = 0;
    if (o->stats) {
        printf("%-12s %10s %8s %14s %8s\n", "type", "records", "(%)", "bytes", "(%)");
        for (int t = 0; t < 256; t++)
            if (st[t].count)
                printf("%-12s %10" PRIu64 " %7.2f%% %14" PRIu64 " %7.2f%%\n", wal_rec_type_name((uint8_t)t),
                       st[t].count, 100.0 * (double)st[t].count / (double)RD_MAX(n, 1), st[t].bytes,
                       100.0 * (double)st[t].bytes / (double)RD_MAX(bytes, 1));
        uint64_t commits = st[WAL_REC_COMMIT].count;
        printf("%-12s %10" PRIu64 " %8s %14" PRIu64 "\n", "total", n, "", bytes);
        printf("full-page images: %.2f%% of the bytes; %.1f bytes per commit (%.1f without FPIs)\n",
               100.0 * (double)st[WAL_REC_PAGE_IMAGE].bytes / (double)RD_MAX(bytes, 1),
               commits ? (double)bytes / (double)commits : 0.0,
               commits ? (double)(bytes - st[WAL_REC_PAGE_IMAGE].bytes) / (double)commits : 0.0);
    } else {
        printf("%" PRIu64 " records, %" PRIu64 " bytes\n", n, bytes);
    }
    return status;
}

static int parse_wal_type(const char *s)
{
    static const uint8_t types[] = {WAL_REC_PAGE_DELTA, WAL_REC_PAGE_IMAGE, WAL_REC_CELL_INSERT, WAL_REC_PAGE_SPLIT,
                                    WAL_REC_COMMIT, WAL_REC_CHECKPOINT, WAL_REC_SWITCH, WAL_REC_TIMELINE};
    for (size_t i = 0; i < RD_ARRAY_LEN(types); i++)
        if (strcasecmp(s, wal_rec_type_name(types[i])) == 0)
            return types[i];
    return -1;
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

static int dump_slots(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/slots", dir);
    uint8_t buf[16 + REPL_SLOTS_MAX * 72 + 8 + 1];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            printf("no replication slots file %s (no replica registered, or not a primary)\n", path);
            return 0;
        }
        fprintf(stderr, "redoubt-dump: cannot open \"%s\": %s\n", path, strerror(errno));
        return 1;
    }
    ssize_t got = read(fd, buf, sizeof(buf));
    int err = errno;
    if (close(fd) < 0 || got < 0) {
        fprintf(stderr, "redoubt-dump: cannot read \"%s\": %s\n", path, strerror(got < 0 ? err : errno));
        return 1;
    }
    struct repl_slot_rec v[REPL_SLOTS_MAX];
    size_t n = 0;
    int rc = repl_slots_decode(buf, (size_t)got, v, REPL_SLOTS_MAX, &n);
    if (rc < 0) {
        fprintf(stderr, "redoubt-dump: \"%s\" (%zd bytes) is corrupt: %s\n", path, got, rd_strerror(rc));
        return 2;
    }
    printf("replication slots %s (checksum ok): %zu\n", path, n);
    for (size_t i = 0; i < n; i++) {
        char l[32];
        fmt_lsn(l, sizeof(l), v[i].restart_lsn);
        printf("  %-24s restart lsn %s (WAL from here is kept for it)\n", v[i].name, l);
    }
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

/* ---------------------------------------------------------------- storage node */

/* Maps a whole file read-only. 0 (*data NULL when it is empty), or -errno. */
static int map_file(const char *path, const uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return -e;
    }
    if (sb.st_size > 0) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return -e;
        }
        *data = m;
        *len = (size_t)sb.st_size;
    }
    close(fd);
    return 0;
}

static void unmap_file(const uint8_t *data, size_t len)
{
    if (data != NULL)
        munmap((void *)data, len);
}

static int dir_exists(const char *dir)
{
    struct stat sb;
    if (stat(dir, &sb) < 0) {
        fprintf(stderr, "redoubt-dump: cannot open directory \"%s\": %s\n", dir, strerror(errno));
        return 0;
    }
    if (!S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "redoubt-dump: \"%s\" is not a directory (give the node's --dir)\n", dir);
        return 0;
    }
    return 1;
}

/* Reads DIR/meta as the node does at start-up (sn_meta_decode). Returns 1 (m
 * filled), 0 if there is none (a node that never wrote one: epoch 0, nothing
 * coalesced, no truncation; m zeroed), -1 on an I/O error, -2 if it is
 * corrupt or of another version (m holds what could be read); *size its size. */
static int sn_load_meta(const char *dir, struct sn_meta *m, long long *size, int *rc_out)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/meta", dir);
    memset(m, 0, sizeof(*m));
    *size = -1;
    *rc_out = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        fprintf(stderr, "redoubt-dump: cannot open \"%s\": %s\n", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    uint8_t buf[SN_META_SIZE];
    ssize_t r = fstat(fd, &sb) == 0 ? read(fd, buf, sizeof(buf)) : -1; /* like sn_meta_read */
    int e = errno;
    close(fd);
    if (r < 0) {
        fprintf(stderr, "redoubt-dump: cannot read \"%s\": %s\n", path, strerror(e));
        return -1;
    }
    *size = (long long)sb.st_size;
    *rc_out = sn_meta_decode(buf, (size_t)r, m);
    return *rc_out < 0 ? -2 : 1;
}

static const char *sn_rec_type_name(uint8_t type)
{
    return type == REDO_REC_COMMIT ? "COMMIT" : engine_rec_type_name(type);
}

/* The hot-log scan, with the node's recovery rules applied to each valid
 * record (sn_trunc_drops, then one record per LSN) into an sn_store whose scl
 * is what the node would recover. */
struct sn_hl_ctx {
    const struct sn_meta *meta;
    struct sn_store st;
    uint64_t from;
    int print;
    uint64_t printed, dropped_trunc, dropped_dup, max_lsn;
    uint64_t seg;   /* the segment being scanned: offsets are virtual (SN_HL_VOFF) */
};

static int sn_hl_cb(void *arg, uint64_t off, uint32_t len, uint64_t epoch, const struct redo_rec *r)
{
    struct sn_hl_ctx *x = arg;
    const char *fate = "";
    uint64_t voff = SN_HL_VOFF(x->seg, off);
    if (sn_trunc_drops(x->meta->trunc, x->meta->ntrunc, voff, epoch, r->lsn)) {
        fate = "  (dropped at restart: truncated, N6)";
        x->dropped_trunc++;
    } else if (sn_store_get(&x->st, r->lsn) != NULL) {
        fate = "  (dropped at restart: this LSN is held earlier in the log)";
        x->dropped_dup++;
    } else {
        int rc = sn_store_add(&x->st, r, epoch, voff, len, 1);
        if (rc < 0)
            return rc;
        if (r->lsn > x->max_lsn)
            x->max_lsn = r->lsn;
    }
    if (!x->print || r->lsn < x->from)
        return 0;
    char page[16], extra[48] = "";
    if (r->page_id == ENGINE_PAGE_NONE)
        snprintf(page, sizeof(page), "-");
    else
        snprintf(page, sizeof(page), "%" PRIu32, r->page_id);
    uint64_t txn;
    if (r->type == REDO_REC_COMMIT && redo_commit_txn(r->body, r->body_len, &txn) == 0)
        snprintf(extra, sizeof(extra), "  txn %" PRIu64, txn);
    if (x->seg)
        printf("seg %-4" PRIu64 " ", x->seg);
    printf("off %-10" PRIu64 " lsn %-10" PRIu64 " prev %-10" PRIu64 " epoch %-4" PRIu64
           " page %-8s %-10s %-3s len %-5" PRIu32 " checksum ok%s%s\n",
           off, r->lsn, r->prev_pg_lsn, epoch, page, sn_rec_type_name(r->type),
           (r->flags & REDO_FLAG_CPL) ? "CPL" : "-", r->body_len, extra, fate);
    x->printed++;
    return 0;
}

struct sn_hl_result {
    struct sn_scan_result scan; /* of the segment where the scan stopped (the last, or a corrupt one) */
    size_t file_len;
    uint32_t node_id;
    uint64_t seg;               /* that segment's number */
    uint64_t records, bytes;    /* over all segments */
    size_t nsegs;
    uint64_t first_seg;
    int corrupt, torn;
};

static int sn_hl_run_seg(const char *dir, uint64_t seg, int sealed, struct sn_hl_ctx *x, struct sn_hl_result *out,
                         int verbose);

/* Reads and scans every hot-log segment of DIR in order, as the node does.
 * 0, 1 (I/O error, printed), 2 (bad header, printed). */
static int sn_hl_run(const char *dir, struct sn_hl_ctx *x, struct sn_hl_result *out, int verbose)
{
    uint64_t *nos = NULL;
    size_t n = 0;
    int active = 0;
    memset(out, 0, sizeof(*out));
    int rc = sn_hotlog_segments(dir, &nos, &n, &active);
    if (rc < 0) {
        fprintf(stderr, "redoubt-dump: cannot list \"%s\": %s\n", dir, strerror(-rc));
        return 1;
    }
    if (active) { /* DIR/hotlog comes last; its number is in its header (UINT64_MAX: read it) */
        uint64_t *p = realloc(nos, (n + 1) * sizeof(*p));
        if (p == NULL) {
            free(nos);
            return 1;
        }
        nos = p;
        nos[n++] = UINT64_MAX;
    }
    if (n == 0) {
        fprintf(stderr, "redoubt-dump: cannot read hot log \"%s/hotlog\": %s\n", dir, strerror(ENOENT));
        return 1;
    }
    out->nsegs = n;
    if (verbose && n > 1)
        printf("hot log in %zu segments: %zu sealed (hotlog.%" PRIu64 " to hotlog.%" PRIu64 ")%s\n", n,
               active ? n - 1 : n, nos[0], active ? nos[n - 2] : nos[n - 1], active ? " and hotlog" : "");
    struct sn_hl_result one;
    for (size_t i = 0; i < n; i++) {
        int sealed = nos[i] != UINT64_MAX;
        x->seg = sealed ? nos[i] : i ? nos[i - 1] + 1 : 0; /* DIR/hotlog: replaced by its header's number */
        rc = sn_hl_run_seg(dir, nos[i], sealed, x, &one, verbose);
        if (rc != 0)
            break;
        if (i == 0)
            out->first_seg = x->seg;
        nos[i] = x->seg;
        out->records += one.scan.records;
        if (one.scan.valid_end > SN_HOTLOG_FILE_HDR_SIZE)
            out->bytes += one.scan.valid_end - SN_HOTLOG_FILE_HDR_SIZE;
        if (one.scan.corrupt || i + 1 == n) {
            out->scan = one.scan;
            out->file_len = one.file_len;
            out->node_id = one.node_id;
            out->seg = nos[i];
        }
        out->corrupt |= one.scan.corrupt;
        out->torn |= one.scan.torn;
    }
    if (rc == 0 && out->first_seg > 0) { /* as sn_open_hotlog: LSNs <= coalesced are in the page store */
        if (verbose)
            printf("older segments were trimmed: lsns <= %" PRIu64 " (coalesced) are only in the page store\n",
                   x->meta->coalesced_lsn);
        sn_store_trimmed_floor(&x->st, x->meta->coalesced_lsn, x->meta->coalesced_cpl <= x->meta->coalesced_lsn ?
                               x->meta->coalesced_cpl : 0);
    }
    if (rc == 0)
        sn_store_advance(&x->st); /* as sn_open_storage does after the scan */
    free(nos);
    return rc;
}

/* Reads and scans one segment. 0, 1 (I/O error, printed), 2 (bad header, printed). */
static int sn_hl_run_seg(const char *dir, uint64_t seg, int sealed, struct sn_hl_ctx *x, struct sn_hl_result *out,
                         int verbose)
{
    char path[4200];
    sn_hotlog_seg_path(path, sizeof(path), dir, seg, sealed);
    const uint8_t *file;
    size_t len;
    int rc = map_file(path, &file, &len);
    memset(out, 0, sizeof(*out));
    if (rc < 0) {
        fprintf(stderr, "redoubt-dump: cannot read hot log \"%s\": %s\n", path, strerror(-rc));
        return 1;
    }
    out->file_len = len;
    if (len < SN_HOTLOG_FILE_HDR_SIZE) {
        /* The node writes a new header over it at start-up (new, or torn at creation). */
        if (verbose)
            printf("hot log %s: %zu bytes, shorter than its %u-byte header: no records (the node starts it "
                   "afresh)\n", path, len, SN_HOTLOG_FILE_HDR_SIZE);
        out->scan.valid_end = len;
        unmap_file(file, len);
        return 0;
    }
    rc = sn_hotlog_check_file_hdr(file, len, &out->node_id);
    if (rc < 0) {
        fprintf(stderr, "redoubt-dump: hot log \"%s\" has a bad header (%s): %s\n", path, rd_strerror(rc),
                rc == RD_EVERSION ? "unknown version" : "bad magic or checksum; the node refuses to start");
        unmap_file(file, len);
        return 2;
    }
    uint64_t hno = sn_hotlog_hdr_seg(file);
    if (sealed && hno != seg) {
        fprintf(stderr, "redoubt-dump: hot log \"%s\" says it is segment %" PRIu64 ": the node refuses to start\n",
                path, hno);
        unmap_file(file, len);
        return 2;
    }
    x->seg = hno;
    if (verbose)
        printf("hot log %s: %zu bytes, segment %" PRIu64 ", created by node %" PRIu32 ", version %u (header "
               "checksum ok)\n", path, len, hno, out->node_id, SN_HOTLOG_VERSION);
    rc = sn_hotlog_scan(file, len, sn_hl_cb, x, &out->scan);
    if (rc < 0) {
        fprintf(stderr, "redoubt-dump: scanning \"%s\": %s\n", path, rd_strerror(rc));
        unmap_file(file, len);
        return 1;
    }
    if (verbose && (out->scan.corrupt || out->scan.torn)) {
        /* The record where the scan stopped, and why. */
        uint64_t off = out->scan.valid_end;
        uint32_t plen;
        uint64_t epoch;
        int ck;
        const char *why = sn_hotlog_rec_why(file + off, len - off, &plen, &epoch, &ck);
        printf("off %-10" PRIu64 " %s: payload length %" PRIu32 " epoch %" PRIu64 " checksum %s\n", off,
               out->scan.corrupt ? "INVALID" : "torn", plen, epoch,
               ck < 0 ? "- (cannot be checked)" : ck ? "ok" : "BAD");
        size_t rest = len - off;
        if (out->scan.corrupt) {
            printf("CORRUPTION at offset %" PRIu64 ": %s; %zu bytes follow it. The node keeps the %" PRIu64
                   " records before it, cuts the log there and fetches the rest from its peers\n",
                   off, why ? why : "?", rest, out->scan.records);
            /* Does a valid record follow where this one claims to end? */
            if (plen >= 1 && plen <= SN_HOTLOG_MAX_PAYLOAD &&
                (uint64_t)SN_HOTLOG_REC_HDR_SIZE + plen < rest) {
                size_t next = off + SN_HOTLOG_REC_HDR_SIZE + plen, used;
                struct redo_rec r;
                uint64_t e;
                if (sn_hotlog_rec_decode(file + next, len - next, &e, &r, &used) == 1)
                    printf("  a valid record follows at offset %zu (lsn %" PRIu64 ")\n", next, r.lsn);
            }
        } else {
            printf("torn tail at offset %" PRIu64 ": %s; %zu bytes never acknowledged (the node cuts them at "
                   "start-up)\n", off, why ? why : "?", rest);
        }
    } else if (verbose) {
        printf("end of hot log at offset %" PRIu64 " (end of file)\n", out->scan.valid_end);
    }
    unmap_file(file, len);
    return 0;
}

/* What a restart recovers (before gap fill). */
static void sn_print_recovered(const struct sn_hl_ctx *x, const struct sn_hl_result *res, const char *indent)
{
    printf("%srecovered at restart: %zu records, scl %" PRIu64 ", max_cpl %" PRIu64 ", highest lsn %" PRIu64
           " (%" PRIu64 " dropped as truncated, %" PRIu64 " as duplicates)\n",
           indent, x->st.nrecs, x->st.scl, x->st.max_cpl, x->max_lsn, x->dropped_trunc, x->dropped_dup);
    if (x->max_lsn > x->st.scl)
        printf("%s  records above a gap: lsn %" PRIu64 " is missing (gap fill from peers brings it)\n", indent,
               x->st.scl + 1);
    (void)res;
}

static void sn_ctx_init(struct sn_hl_ctx *x, const struct sn_meta *m)
{
    memset(x, 0, sizeof(*x));
    x->meta = m;
    sn_store_init(&x->st);
    /* Only scl, max_cpl and the LSN index are wanted: with everything counted
     * as coalesced the store keeps no bodies and no page history. */
    x->st.coalesced_lsn = UINT64_MAX;
}

static int dump_sn_hotlog(const char *dir, uint64_t from)
{
    if (!dir_exists(dir))
        return 1;
    struct sn_meta m;
    long long msize;
    int mrc;
    int status = 0;
    int ml = sn_load_meta(dir, &m, &msize, &mrc);
    if (ml == -1)
        return 1;
    if (ml == -2) {
        fprintf(stderr, "redoubt-dump: \"%s/meta\" is corrupt (%s): truncation ranges ignored below; the node "
                "refuses to start (see sn-meta)\n", dir, rd_strerror(mrc));
        memset(&m, 0, sizeof(m));
        status = 2;
    }
    struct sn_hl_ctx x;
    sn_ctx_init(&x, &m);
    x.from = from;
    x.print = 1;
    struct sn_hl_result res;
    int rc = sn_hl_run(dir, &x, &res, 1);
    if (rc == 0) {
        printf("%" PRIu64 " valid records, %" PRIu64 " printed%s, %" PRIu64 " bytes\n", res.records,
               x.printed, from ? " (lsn >= --from)" : "", res.bytes);
        sn_print_recovered(&x, &res, "");
        if (res.corrupt)
            status = 2;
    } else {
        status = rc;
    }
    sn_store_free(&x.st);
    return status;
}

static int dump_sn_meta(const char *dir)
{
    if (!dir_exists(dir))
        return 1;
    struct sn_meta m;
    long long size;
    int mrc;
    int ml = sn_load_meta(dir, &m, &size, &mrc);
    if (ml == -1)
        return 1;
    int status = 0;
    char hl[4200];
    snprintf(hl, sizeof(hl), "%s/hotlog", dir);
    if (ml == 0) {
        uint64_t *nos = NULL;
        size_t nseg = 0;
        int act = 0;
        int lrc = sn_hotlog_segments(dir, &nos, &nseg, &act);
        free(nos);
        if (lrc < 0 || (nseg == 0 && !act)) {
            fprintf(stderr, "redoubt-dump: no meta file \"%s/meta\" and no hot log: \"%s\" is not a storage-node "
                    "directory\n", dir, dir);
            return 1;
        }
        printf("no meta file %s/meta: the node has not changed epoch, truncated or coalesced yet "
               "(it starts at epoch 0, coalesced lsn 0, no truncation)\n", dir);
    } else {
        const char *ck = m.checksum_ok ? "ok" : "BAD";
        printf("meta file %s/meta (%lld bytes, checksum %s)\n", dir, size, ck);
        if (ml == -2) {
            status = 2;
            char why[160] = "";
            if (!m.size_ok)
                snprintf(why, sizeof(why), "wrong size (expected %u bytes)", SN_META_SIZE);
            if (!m.magic_ok)
                snprintf(why + strlen(why), sizeof(why) - strlen(why), "%sbad magic", *why ? ", " : "");
            if (m.size_ok && !m.checksum_ok)
                snprintf(why + strlen(why), sizeof(why) - strlen(why), "%schecksum mismatch", *why ? ", " : "");
            if (!*why)
                snprintf(why, sizeof(why), "%s",
                         mrc == RD_EVERSION ? "unknown version" : "more than 64 truncation ranges");
            printf("  CORRUPT: %s: the node refuses to start (its epoch is unknown); the fields below are "
                   "unverified\n", why);
        }
        printf("  version:          %" PRIu32 "\n", m.version);
        printf("  node id:          %" PRIu32 "\n", m.node_id);
        printf("  epoch:            %" PRIu64 "\n", m.epoch);
        printf("  coalesced lsn:    %" PRIu64 "\n", m.coalesced_lsn);
        printf("  coalesced cpl:    %" PRIu64 " (newest consistency point <= the coalesced lsn; 0: unknown)\n",
               m.coalesced_cpl);
        printf("  scl when written: %" PRIu64 " (informative: meta is rewritten only on an epoch change, a "
               "truncation or a coalesce)\n", m.scl);
        printf("  truncation ranges: %" PRIu32 "%s\n", m.ntrunc, m.ntrunc > SN_MAX_TRUNC ? " (more than 64!)" : "");
        for (uint32_t i = 0; i < m.ntrunc && i < SN_MAX_TRUNC; i++)
            printf("    [%" PRIu32 "] epoch %" PRIu64 " keeps lsn <= %" PRIu64 " (hot-log offset %" PRIu64 ")\n",
                   i, m.trunc[i].epoch, m.trunc[i].keep_upto, m.trunc[i].hl_off);
    }
    /* The SCL itself is not stored: it is what the hot log holds. */
    if (ml == -2)
        memset(&m, 0, sizeof(m));
    struct sn_hl_ctx x;
    sn_ctx_init(&x, &m);
    struct sn_hl_result res;
    int rc = sn_hl_run(dir, &x, &res, 0);
    if (rc == 0) {
        printf("scl (recovered from %s%s): %" PRIu64 "\n", hl, ml == -2 ? ", ignoring the truncations" : "",
               x.st.scl);
        sn_print_recovered(&x, &res, "  ");
        if (res.nsegs > 1 || res.first_seg > 0)
            printf("  hot log: %zu segments from %" PRIu64 "\n", res.nsegs, res.first_seg);
        if (res.corrupt)
            printf("  the hot log is corrupt at offset %" PRIu64 "%s (see sn-hotlog)\n", res.scan.valid_end,
                   res.seg ? " of a later segment" : "");
        else if (res.torn)
            printf("  the hot log has a torn tail at offset %" PRIu64 "\n", res.scan.valid_end);
    } else {
        printf("scl: unknown (the hot log cannot be read)\n");
    }
    sn_store_free(&x.st);
    if (status == 0 && rc != 0)
        status = rc;
    return status;
}

static int all_zero_page(const uint8_t *p)
{
    for (size_t i = 0; i < ENGINE_PAGE_SIZE; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

static int dump_sn_pages(const char *dir, const char *nstr)
{
    if (!dir_exists(dir))
        return 1;
    char path[4200];
    snprintf(path, sizeof(path), "%s/pages", dir);
    unsigned long long want = 0;
    if (nstr != NULL) {
        char *end;
        errno = 0;
        want = strtoull(nstr, &end, 0);
        if (*end || end == nstr || errno || want > SN_MAX_PAGE_ID) {
            fprintf(stderr, "redoubt-dump: bad page number \"%s\" (0 .. %u)\n", nstr, SN_MAX_PAGE_ID);
            return 1;
        }
    }
    uint64_t npages;
    int fd = open_data(path, &npages);
    if (fd < 0)
        return 1;
    uint8_t page[ENGINE_PAGE_SIZE];
    int status = 0;
    if (nstr != NULL) {
        if (want >= npages) {
            printf("page %llu of %s: never written (beyond the end of the page store, %" PRIu64 " pages)\n", want,
                   path, npages);
        } else if (read_page(fd, want, page) < 0) {
            status = 1;
        } else if (all_zero_page(page)) {
            printf("page %llu of %s: never written (all zeros)\n", want, path);
        } else {
            int ok = engine_page_verify(page) == 0;
            printf("page %llu of %s: id %" PRIu32 " type %u lsn %" PRIu64 " checksum %s\n", want, path,
                   engine_page_id(page), engine_page_type(page), engine_page_lsn(page), ok ? "ok" : "BAD");
            if (ok && engine_page_id(page) != want)
                printf("  WARNING: page header says id %" PRIu32 "\n", engine_page_id(page));
            engine_page_describe(page, stdout);
            status = ok ? 0 : 2;
        }
        close(fd);
        return status;
    }
    /* A sparse file: visit the data regions only (SEEK_DATA), page by page. */
    uint64_t written = 0, bad = 0, n = 0;
    printf("%s: %" PRIu64 " page slots (sparse; pages never written are not listed)\n", path, npages);
    while (n < npages) {
        off_t d = lseek(fd, (off_t)(n * ENGINE_PAGE_SIZE), SEEK_DATA);
        if (d < 0) {
            if (errno == ENXIO)
                break; /* only a hole is left */
            d = (off_t)(n * ENGINE_PAGE_SIZE); /* SEEK_DATA unsupported: read every page */
        }
        if ((uint64_t)d / ENGINE_PAGE_SIZE > n)
            n = (uint64_t)d / ENGINE_PAGE_SIZE;
        if (n >= npages)
            break;
        if (read_page(fd, n, page) < 0) {
            close(fd);
            return 1;
        }
        if (!all_zero_page(page)) {
            int ok = engine_page_verify(page) == 0;
            written++;
            bad += !ok;
            printf("page %-8" PRIu64 " id %-8" PRIu32 " type %-3u lsn %-10" PRIu64 " checksum %s%s\n", n,
                   engine_page_id(page), engine_page_type(page), engine_page_lsn(page), ok ? "ok" : "BAD",
                   ok && engine_page_id(page) != n ? "  (WARNING: header id differs)" : "");
        }
        n++;
    }
    close(fd);
    printf("%" PRIu64 " pages written, %" PRIu64 " never written\n", written, npages - written);
    if (bad)
        printf("%" PRIu64 " pages fail their checksum (the node rebuilds them from its hot log)\n", bad);
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
        struct wal_dump_opts o = {.type = -1, .page = ENGINE_PAGE_NONE};
        for (int i = 3; i < argc; i++) {
            const char *v = i + 1 < argc ? argv[i + 1] : NULL;
            char *end = NULL;
            if (strcmp(argv[i], "--stats") == 0) {
                o.stats = 1;
            } else if (strcmp(argv[i], "--follow") == 0 || strcmp(argv[i], "-f") == 0) {
                o.follow = 1;
            } else if (v && (strcmp(argv[i], "--from") == 0 || strcmp(argv[i], "-s") == 0)) {
                if (parse_lsn(v, &o.from) < 0) {
                    fprintf(stderr, "redoubt-dump: bad LSN \"%s\" (expected X/Y in hex)\n", v);
                    return 1;
                }
                i++;
            } else if (v && (strcmp(argv[i], "--to") == 0 || strcmp(argv[i], "-e") == 0)) {
                if (parse_lsn(v, &o.to) < 0) {
                    fprintf(stderr, "redoubt-dump: bad LSN \"%s\" (expected X/Y in hex)\n", v);
                    return 1;
                }
                i++;
            } else if (v && (strcmp(argv[i], "-n") == 0 || strcmp(argv[i], "--limit") == 0)) {
                o.limit = strtoull(v, &end, 10);
                if (end == v || *end || o.limit == 0) {
                    fprintf(stderr, "redoubt-dump: -n expects a positive number, got \"%s\"\n", v);
                    return 1;
                }
                i++;
            } else if (v && strcmp(argv[i], "--type") == 0) {
                if ((o.type = parse_wal_type(v)) < 0) {
                    fprintf(stderr, "redoubt-dump: unknown record type \"%s\" (PAGE_DELTA, PAGE_IMAGE, CELL_INSERT, PAGE_SPLIT, COMMIT, "
                                    "CHECKPOINT, SWITCH, TIMELINE)\n", v);
                    return 1;
                }
                i++;
            } else if (v && strcmp(argv[i], "--page") == 0) {
                unsigned long pg = strtoul(v, &end, 10);
                if (end == v || *end || pg >= ENGINE_PAGE_NONE) {
                    fprintf(stderr, "redoubt-dump: --page expects a page number, got \"%s\"\n", v);
                    return 1;
                }
                o.page = (uint32_t)pg;
                i++;
            } else {
                usage(stderr);
                return 1;
            }
        }
        if (o.to && o.to <= o.from) {
            fprintf(stderr, "redoubt-dump: --to must be above --from\n");
            return 1;
        }
        return dump_wal(argv[2], &o);
    }
    if (argc == 3 && strcmp(argv[1], "control") == 0)
        return dump_control(argv[2]);
    if (argc == 3 && strcmp(argv[1], "slots") == 0)
        return dump_slots(argv[2]);
    if (argc == 3 && strcmp(argv[1], "timeline") == 0)
        return dump_timeline(argv[2]);
    if (argc == 4 && strcmp(argv[1], "page") == 0)
        return dump_page(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "pages") == 0)
        return dump_pages(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "sn-hotlog") == 0) {
        uint64_t from = 0;
        if (argc == 5 && strcmp(argv[3], "--from") == 0) {
            if (parse_lsn(argv[4], &from) < 0) {
                fprintf(stderr, "redoubt-dump: bad LSN \"%s\" (expected a record number)\n", argv[4]);
                return 1;
            }
        } else if (argc != 3) {
            usage(stderr);
            return 1;
        }
        return dump_sn_hotlog(argv[2], from);
    }
    if (argc == 3 && strcmp(argv[1], "sn-meta") == 0)
        return dump_sn_meta(argv[2]);
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "sn-pages") == 0)
        return dump_sn_pages(argv[2], argc == 4 ? argv[3] : NULL);
    usage(stderr);
    return 1;
}
