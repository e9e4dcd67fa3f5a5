/*
 * sn_files.c — decoders of the storage node's files shared by the daemon
 * (sn_node.c) and redoubt-dump: the meta file, the recovery rules of N6, and
 * the diagnosis of a hot-log record that fails (the format itself is in
 * sn_hotlog.c). Formats: storage-node/README.md.
 *
 * DIR/meta (written whole: tmp + fdatasync + rename + fsync of the dir):
 *   0   4  magic "RDSM" (0x4d534452)       4   4  version (1)
 *   8   4  node id                         12  4  number of truncation ranges (<= 64)
 *   16  8  epoch                           24  8  coalesced_lsn
 *   32  8  scl when written (informative)  40  8  newest CPL <= coalesced_lsn (0: unknown; was zero)
 *   48  64 × 24  truncation ranges {u64 epoch, u64 keep_upto_lsn, u64 hot-log offset}
 *   1584 8 XXH3-64 of [0,1584), seed SN_SEED_META
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/util.h"
#include "storage-node/sn_int.h"

_Static_assert(SN_META_SIZE == 1592u, "meta layout");

void sn_meta_encode(uint8_t *m, const struct sn_meta *in)
{
    memset(m, 0, SN_META_SIZE);
    rd_put_u32le(m, SN_META_MAGIC);
    rd_put_u32le(m + 4, SN_META_VERSION);
    rd_put_u32le(m + 8, in->node_id);
    rd_put_u32le(m + 12, in->ntrunc);
    rd_put_u64le(m + 16, in->epoch);
    rd_put_u64le(m + 24, in->coalesced_lsn);
    rd_put_u64le(m + 32, in->scl);
    rd_put_u64le(m + 40, in->coalesced_cpl);
    for (uint32_t i = 0; i < in->ntrunc && i < SN_MAX_TRUNC; i++) {
        uint8_t *t = m + SN_META_TRUNC_OFF + i * 24u;
        rd_put_u64le(t, in->trunc[i].epoch);
        rd_put_u64le(t + 8, in->trunc[i].keep_upto);
        rd_put_u64le(t + 16, in->trunc[i].hl_off);
    }
    rd_put_u64le(m + SN_META_SIZE - 8, rd_checksum64(m, SN_META_SIZE - 8, SN_SEED_META));
}

int sn_meta_decode(const uint8_t *m, size_t n, struct sn_meta *out)
{
    memset(out, 0, sizeof(*out));
    out->size_ok = n == SN_META_SIZE;
    out->magic_ok = n >= 4 && rd_get_u32le(m) == SN_META_MAGIC;
    out->checksum_ok = out->size_ok && rd_get_u64le(m + SN_META_SIZE - 8) == rd_checksum64(m, SN_META_SIZE - 8,
                                                                                           SN_SEED_META);
    if (n >= SN_META_TRUNC_OFF) {
        out->version = rd_get_u32le(m + 4);
        out->node_id = rd_get_u32le(m + 8);
        out->ntrunc = rd_get_u32le(m + 12);
        out->epoch = rd_get_u64le(m + 16);
        out->coalesced_lsn = rd_get_u64le(m + 24);
        out->scl = rd_get_u64le(m + 32);
        out->coalesced_cpl = rd_get_u64le(m + 40);
        for (uint32_t i = 0; i < out->ntrunc && i < SN_MAX_TRUNC && SN_META_TRUNC_OFF + (i + 1) * 24u <= n; i++) {
            const uint8_t *t = m + SN_META_TRUNC_OFF + i * 24u;
            out->trunc[i] = (struct sn_trunc){rd_get_u64le(t), rd_get_u64le(t + 8), rd_get_u64le(t + 16)};
        }
    }
    if (!out->size_ok || !out->magic_ok || !out->checksum_ok)
        return RD_ECORRUPT;
    if (out->version != SN_META_VERSION)
        return RD_EVERSION;
    if (out->ntrunc > SN_MAX_TRUNC)
        return RD_ECORRUPT;
    return 0;
}

int sn_trunc_refuses(const struct sn_trunc *t, uint32_t ntrunc, uint64_t epoch, uint64_t lsn)
{
    for (uint32_t i = 0; i < ntrunc; i++)
        if (epoch < t[i].epoch && lsn > t[i].keep_upto)
            return 1;
    return 0;
}

int sn_trunc_drops(const struct sn_trunc *t, uint32_t ntrunc, uint64_t hl_off, uint64_t epoch, uint64_t lsn)
{
    for (uint32_t i = 0; i < ntrunc; i++)
        if (hl_off < t[i].hl_off && lsn > t[i].keep_upto)
            return 1; /* truncated (N6) */
    return sn_trunc_refuses(t, ntrunc, epoch, lsn);
}

/* The checks of sn_hotlog_rec_decode, one by one, to say which fails. */
const char *sn_hotlog_rec_why(const uint8_t *src, size_t n, uint32_t *len, uint64_t *epoch, int *checksum_ok)
{
    *len = 0;
    *epoch = 0;
    *checksum_ok = -1;
    struct redo_rec r;
    uint64_t e;
    size_t used;
    if (sn_hotlog_rec_decode(src, n, &e, &r, &used) == 1) {
        *len = (uint32_t)(used - SN_HOTLOG_REC_HDR_SIZE);
        *epoch = e;
        *checksum_ok = 1;
        return NULL;
    }
    if (n < SN_HOTLOG_REC_HDR_SIZE)
        return "record header cut short by the end of the file";
    *len = rd_get_u32le(src);
    *epoch = rd_get_u64le(src + 8);
    if (*len == 0 || *len > SN_HOTLOG_MAX_PAYLOAD)
        return "payload length out of range";
    if (rd_get_u32le(src + 4) != 0)
        return "reserved word is not zero";
    if (n - SN_HOTLOG_REC_HDR_SIZE < *len)
        return "payload cut short by the end of the file";
    const uint8_t *pl = src + SN_HOTLOG_REC_HDR_SIZE;
    *checksum_ok = rd_get_u64le(src + 16) == rd_checksum64_2(src, 16, pl, *len, SN_SEED_HOTLOG);
    if (!*checksum_ok)
        return "checksum mismatch";
    return "payload is not exactly one redo record with a nonzero LSN";
}

/* ------------------------------------------------------------ hot-log segments */

void sn_hotlog_seg_path(char *out, size_t cap, const char *dir, uint64_t no, int sealed)
{
    if (!sealed)
        snprintf(out, cap, "%s/hotlog", dir);
    else
        snprintf(out, cap, "%s/hotlog.%llu", dir, (unsigned long long)no);
}

int sn_hotlog_seg_name(const char *name, uint64_t *no)
{
    if (strncmp(name, "hotlog.", 7) != 0)
        return 0;
    name += 7;
    if (*name < '0' || *name > '9' || (name[0] == '0' && name[1] != 0))
        return 0;
    uint64_t v = 0;
    for (; *name; name++) {
        if (*name < '0' || *name > '9')
            return 0;
        v = v * 10 + (uint64_t)(*name - '0');
        if (v > SN_HL_MAX_SEG)
            return 0;
    }
    *no = v;
    return 1;
}

static int sn_u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int sn_hotlog_segments(const char *dir, uint64_t **nos, size_t *n, int *active)
{
    *nos = NULL;
    *n = 0;
    *active = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return -errno;
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t no;
        if (strcmp(de->d_name, "hotlog") == 0)
            *active = 1;
        if (!sn_hotlog_seg_name(de->d_name, &no))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *p = realloc(*nos, cap * sizeof(*p));
            if (p == NULL) {
                closedir(d);
                free(*nos);
                *nos = NULL;
                *n = 0;
                return -ENOMEM;
            }
            *nos = p;
        }
        (*nos)[(*n)++] = no;
    }
    closedir(d);
    if (*n > 1)
        qsort(*nos, *n, sizeof(**nos), sn_u64_cmp);
    return 0;
}
