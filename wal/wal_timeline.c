/*
 * wal_timeline.c — timeline history files and segment lookup across timelines
 * (PostgreSQL style). See wal/README.md, "Timelines". Layer: uses wal_record.c
 * only (segment names); the switch itself (it needs the writer) is in wal_switch.c.
 *
 * History file wal/TTTTTTTT.history (timeline in 8 upper-case hex digits), for
 * every timeline > 1: one line per ancestor, oldest first,
 *   "<tli> <X/Y>\n"   (decimal timeline, LSN as high/low 32-bit hex halves)
 * meaning: timeline tli ended at X/Y, where the next timeline (the next line's,
 * or the file's own) begins. Written once, atomically, never changed.
 *
 * Segment lookup: segment segno is read from the newest timeline of the chain
 * whose LSN range touches the segment and which has a file for it. The segment
 * where a switch happened exists under both timelines (the new one's is a copy
 * of the old one's up to and including the TIMELINE record): the newer wins.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "wal/wal_int.h"

void wal_history_name(char *dst, size_t len, uint32_t tli) { snprintf(dst, len, "%08" PRIX32 ".history", tli); }

void wal_chain_free(struct wal_chain *c)
{
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

static int chain_add(struct wal_chain *c, uint32_t tli, uint64_t begin)
{
    struct wal_tl *p = realloc(c->v, (c->n + 1) * sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    c->v = p;
    c->v[c->n++] = (struct wal_tl){tli, begin, UINT64_MAX};
    return 0;
}

int wal_chain_push(struct wal_chain *c, uint32_t new_tli, uint64_t switch_lsn)
{
    rd_assert(c->n > 0);
    int rc = chain_add(c, new_tli, switch_lsn);
    if (rc == 0)
        c->v[c->n - 2].end_lsn = switch_lsn;
    return rc;
}

int wal_chain_load(const char *wal_dir, uint32_t tli, struct wal_chain *out)
{
    out->v = NULL;
    out->n = 0;
    char name[32], path[PATH_MAX];
    wal_history_name(name, sizeof(name), tli);
    snprintf(path, sizeof(path), "%s/%s", wal_dir, name);
    FILE *f = tli > 1 ? fopen(path, "r") : NULL;
    if (f == NULL && tli > 1 && errno != ENOENT) {
        int rc = -errno;
        rd_error("could not open timeline history file \"%s\": %s", path, strerror(errno));
        return rc;
    }
    uint64_t begin = 0;
    int rc = 0;
    char line[256];
    int lineno = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        if (line[0] == '\n' || line[0] == '#')
            continue;
        unsigned t, hi, lo;
        char extra;
        if (sscanf(line, "%u %X/%X %c", &t, &hi, &lo, &extra) != 3) {
            rd_error("timeline history file \"%s\" line %d is malformed", path, lineno);
            rc = RD_ECORRUPT;
            break;
        }
        uint64_t sw = ((uint64_t)hi << 32) | lo;
        if (t >= tli || sw < begin || (out->n > 0 && t <= out->v[out->n - 1].tli)) {
            rd_error("timeline history file \"%s\" line %d is out of order", path, lineno);
            rc = RD_ECORRUPT;
            break;
        }
        if ((rc = chain_add(out, t, begin)) < 0)
            break;
        out->v[out->n - 1].end_lsn = sw;
        begin = sw;
    }
    if (f != NULL)
        fclose(f);
    if (rc == 0)
        rc = chain_add(out, tli, begin);
    if (rc < 0)
        wal_chain_free(out);
    return rc;
}

int wal_history_write(const char *wal_dir, const struct wal_chain *c)
{
    rd_assert(c->n > 0);
    char name[32];
    wal_history_name(name, sizeof(name), c->v[c->n - 1].tli);
    char text[64 * 1024];
    size_t len = 0;
    for (size_t i = 0; i + 1 < c->n && len < sizeof(text) - 64; i++)
        len += (size_t)snprintf(text + len, sizeof(text) - len, "%" PRIu32 " %X/%X\n", c->v[i].tli,
                                (unsigned)(c->v[i].end_lsn >> 32), (unsigned)c->v[i].end_lsn);
    if (len >= sizeof(text) - 64)
        return RD_ETOOBIG;
    int rc = rd_write_file_atomic(wal_dir, name, text, len); /* .tmp, fsync, rename, fsync dir */
    if (rc < 0)
        rd_error("could not write timeline history file \"%s/%s\": %s", wal_dir, name, rd_strerror(rc));
    return rc;
}

int wal_chain_find(const struct wal_chain *c, uint32_t tli)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].tli == tli)
            return (int)i;
    return -1;
}

/* Does timeline entry t touch segment segno? */
static int tl_touches(const struct wal_tl *t, uint64_t seg_size, uint64_t segno)
{
    uint64_t first = t->begin_lsn / seg_size;
    uint64_t last = t->end_lsn == UINT64_MAX ? UINT64_MAX : t->end_lsn / seg_size;
    return segno >= first && segno <= last;
}

uint32_t wal_chain_seg_path(const char *wal_dir, const struct wal_chain *c, uint64_t seg_size,
                            uint64_t segno, char *path, size_t len, int *exists)
{
    uint32_t owner = 0;
    for (size_t i = c->n; i-- > 0;) {
        if (!tl_touches(&c->v[i], seg_size, segno))
            continue;
        char name[32];
        wal_seg_name(name, sizeof(name), c->v[i].tli, segno);
        snprintf(path, len, "%s/%s", wal_dir, name);
        struct stat sb;
        if (stat(path, &sb) == 0) {
            *exists = 1;
            return c->v[i].tli;
        }
        if (owner == 0)
            owner = c->v[i].tli;
    }
    if (owner == 0) /* below the oldest timeline's start: name it after that one */
        owner = c->v[0].tli;
    char name[32];
    wal_seg_name(name, sizeof(name), owner, segno);
    snprintf(path, len, "%s/%s", wal_dir, name);
    *exists = 0;
    return owner;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

long wal_chain_list(const char *wal_dir, const struct wal_chain *c, uint64_t seg_size, uint64_t **out)
{
    DIR *d = opendir(wal_dir);
    if (d == NULL)
        return -errno;
    size_t n = 0, cap = 16;
    uint64_t *v = malloc(cap * sizeof(*v));
    struct dirent *de;
    while (v != NULL && (de = readdir(d)) != NULL) {
        uint32_t tl;
        uint64_t s;
        if (wal_seg_name_parse(de->d_name, &tl, &s) != 0)
            continue;
        int i = wal_chain_find(c, tl);
        if (i < 0 || !tl_touches(&c->v[i], seg_size, s))
            continue;
        if (n == cap) {
            uint64_t *p = realloc(v, 2 * cap * sizeof(*v));
            if (p == NULL) {
                free(v);
                v = NULL;
                break;
            }
            v = p;
            cap *= 2;
        }
        v[n++] = s;
    }
    closedir(d);
    if (v == NULL)
        return -ENOMEM;
    qsort(v, n, sizeof(*v), cmp_u64);
    size_t j = 0;
    for (size_t i = 0; i < n; i++)
        if (j == 0 || v[j - 1] != v[i])
            v[j++] = v[i];
    *out = v;
    return (long)j;
}
