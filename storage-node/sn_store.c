/*
 * sn_store.c — the node's in-memory view of its records: an LSN index over
 * everything in the hot log, the SCL, and per page the records above the
 * coalesced page image (the version history GetPage@LSN materialises from).
 * Pure memory: no I/O (sn_node.c owns the files).
 *
 * Invariants
 *  ST1. Each LSN is held at most once (sn_store_add asserts it).
 *  ST2. scl only counts durable records: every LSN in [1, scl] is held with
 *      durable = 1. scl advances only over lsn == scl + 1 (never a gap).
 *  ST3. A page's history lists, ascending, exactly its records with
 *      coalesced_lsn < lsn <= scl.
 *  ST4. A record above coalesced_lsn has its body in memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/engine.h"
#include "storage-node/sn_int.h"

/* ------------------------------------------------------------ hash table */

static uint64_t tab_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

static void tab_put_raw(struct sn_tab *t, uint64_t key, uint32_t val)
{
    size_t mask = t->cap - 1, i = tab_hash(key) & mask;
    while (t->e[i].key != 0 && t->e[i].key != key)
        i = (i + 1) & mask;
    if (t->e[i].key == 0)
        t->n++;
    t->e[i].key = key;
    t->e[i].val = val;
}

static void tab_put(struct sn_tab *t, uint64_t key, uint32_t val)
{
    rd_assert(key != 0);
    if ((t->n + 1) * 2 > t->cap) {
        struct sn_tab nt = {.cap = t->cap ? t->cap * 2 : 1024, .n = 0};
        nt.e = calloc(nt.cap, sizeof(*nt.e));
        if (nt.e == NULL)
            rd_panic("out of memory for the storage-node index (%zu entries)", nt.cap);
        for (size_t i = 0; i < t->cap; i++)
            if (t->e[i].key)
                tab_put_raw(&nt, t->e[i].key, t->e[i].val);
        free(t->e);
        *t = nt;
    }
    tab_put_raw(t, key, val);
}

static int tab_get(const struct sn_tab *t, uint64_t key, uint32_t *val)
{
    if (t->cap == 0)
        return 0;
    size_t mask = t->cap - 1, i = tab_hash(key) & mask;
    while (t->e[i].key != 0) {
        if (t->e[i].key == key) {
            *val = t->e[i].val;
            return 1;
        }
        i = (i + 1) & mask;
    }
    return 0;
}

/* ------------------------------------------------------------ LSN index
 *
 * LSNs are dense (the writer numbers every record), so the index is an array
 * of (index in recs + 1, 0 = not held) over [lo, lo + cap), one cache line
 * per 16 LSNs and no hashing. An LSN that would stretch the array beyond
 * SN_LSNIDX_SPAN_MAX entries goes to the hash table `far` instead (not
 * expected: it keeps a bogus far-away LSN from costing memory). */
#define SN_LSNIDX_SPAN_MAX (1ull << 26)
#define SN_LSNIDX_MIN_CAP 4096u

static int lsnidx_cover(struct sn_store *st, uint64_t lsn)
{
    struct sn_lsnidx *d = &st->by_lsn;
    if (d->cap && lsn >= d->lo && lsn - d->lo < d->cap)
        return 1;
    uint64_t lo = d->cap ? RD_MIN(d->lo, lsn) : lsn;
    uint64_t hi = d->cap ? RD_MAX(d->lo + d->cap, lsn + 1) : lsn + 1;
    if (hi - lo > SN_LSNIDX_SPAN_MAX)
        return 0;
    size_t cap = d->cap ? d->cap : SN_LSNIDX_MIN_CAP;
    while (cap < hi - lo)
        cap *= 2;
    uint32_t *v = calloc(cap, sizeof(*v));
    if (v == NULL)
        rd_panic("out of memory for the storage-node LSN index (%zu entries)", cap);
    if (d->cap)
        memcpy(v + (d->lo - lo), d->v, d->cap * sizeof(*v));
    free(d->v);
    d->v = v;
    d->lo = lo;
    d->cap = cap;
    if (st->far.n) { /* far entries now in range move in */
        struct sn_tab old = st->far;
        st->far = (struct sn_tab){0};
        for (size_t i = 0; i < old.cap; i++) {
            uint64_t k = old.e[i].key;
            if (k == 0)
                continue;
            if (k >= lo && k - lo < cap)
                v[k - lo] = old.e[i].val + 1;
            else
                tab_put(&st->far, k, old.e[i].val);
        }
        free(old.e);
    }
    return 1;
}

static void lsnidx_put(struct sn_store *st, uint64_t lsn, uint32_t idx)
{
    rd_assert(lsn != 0 && idx != UINT32_MAX);
    if (lsnidx_cover(st, lsn))
        st->by_lsn.v[lsn - st->by_lsn.lo] = idx + 1;
    else
        tab_put(&st->far, lsn, idx);
}

static int lsnidx_get(const struct sn_store *st, uint64_t lsn, uint32_t *idx)
{
    const struct sn_lsnidx *d = &st->by_lsn;
    if (d->cap && lsn >= d->lo && lsn - d->lo < d->cap) {
        uint32_t v = d->v[lsn - d->lo];
        *idx = v - 1;
        return v != 0;
    }
    return st->far.n ? tab_get(&st->far, lsn, idx) : 0;
}

/* After records were dropped: rebuilt from scratch, from the lowest LSN held. */
static void lsnidx_rebuild(struct sn_store *st)
{
    free(st->by_lsn.v);
    st->by_lsn = (struct sn_lsnidx){0};
    free(st->far.e);
    st->far = (struct sn_tab){0};
    uint64_t lo = UINT64_MAX;
    for (size_t i = 0; i < st->nrecs; i++)
        lo = RD_MIN(lo, st->recs[i].lsn);
    if (lo != UINT64_MAX)
        lsnidx_cover(st, lo);
    for (size_t i = 0; i < st->nrecs; i++)
        lsnidx_put(st, st->recs[i].lsn, (uint32_t)i);
}

/* ------------------------------------------------------------ store */

void sn_store_init(struct sn_store *st) { memset(st, 0, sizeof(*st)); }

void sn_store_free(struct sn_store *st)
{
    for (size_t i = 0; i < st->nrecs; i++)
        free(st->recs[i].body);
    for (size_t i = 0; i < st->npages; i++)
        free(st->pages[i].lsn);
    free(st->recs);
    free(st->pages);
    free(st->by_lsn.v);
    free(st->far.e);
    free(st->by_page.e);
    memset(st, 0, sizeof(*st));
}

struct sn_rec *sn_store_get(struct sn_store *st, uint64_t lsn)
{
    uint32_t i;
    if (lsn == 0 || !lsnidx_get(st, lsn, &i))
        return NULL;
    return &st->recs[i];
}

struct sn_rec *sn_store_at(struct sn_store *st, uint32_t idx, uint64_t lsn)
{
    if (idx < st->nrecs && st->recs[idx].lsn == lsn)
        return &st->recs[idx];
    return sn_store_get(st, lsn);
}

struct sn_page_hist *sn_store_page(struct sn_store *st, uint32_t page_id)
{
    uint32_t i;
    return tab_get(&st->by_page, (uint64_t)page_id + 1, &i) ? &st->pages[i] : NULL;
}

static struct sn_page_hist *store_page_get_or_add(struct sn_store *st, uint32_t page_id)
{
    struct sn_page_hist *h = sn_store_page(st, page_id);
    if (h)
        return h;
    if (st->npages == st->pages_cap) {
        size_t cap = st->pages_cap ? st->pages_cap * 2 : 256;
        struct sn_page_hist *p = realloc(st->pages, cap * sizeof(*p));
        if (p == NULL)
            rd_panic("out of memory for page history");
        st->pages = p;
        st->pages_cap = cap;
    }
    h = &st->pages[st->npages];
    memset(h, 0, sizeof(*h));
    h->page_id = page_id;
    tab_put(&st->by_page, (uint64_t)page_id + 1, (uint32_t)st->npages);
    st->npages++;
    return h;
}

int sn_store_add(struct sn_store *st, const struct redo_rec *r, uint64_t epoch, uint64_t hl_off,
                 uint32_t hl_len, int durable)
{
    rd_assert(r->lsn != 0 && sn_store_get(st, r->lsn) == NULL);
    if (st->nrecs == st->recs_cap) {
        size_t cap = st->recs_cap ? st->recs_cap * 2 : 4096;
        struct sn_rec *p = realloc(st->recs, cap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        st->recs = p;
        st->recs_cap = cap;
    }
    struct sn_rec *x = &st->recs[st->nrecs];
    memset(x, 0, sizeof(*x));
    x->lsn = r->lsn;
    x->prev_pg_lsn = r->prev_pg_lsn;
    x->epoch = epoch;
    x->hl_off = hl_off;
    x->hl_len = hl_len;
    x->page_id = r->page_id;
    x->body_len = r->body_len;
    x->type = r->type;
    x->flags = r->flags;
    x->durable = durable ? 1 : 0;
    if (r->lsn > st->coalesced_lsn) {
        x->body = malloc(r->body_len ? r->body_len : 1);
        if (x->body == NULL)
            return -ENOMEM;
        if (r->body_len)
            memcpy(x->body, r->body, r->body_len);
        st->hot_records++;
    }
    lsnidx_put(st, r->lsn, (uint32_t)st->nrecs);
    st->nrecs++;
    if (durable && r->lsn > st->durable_max)
        st->durable_max = r->lsn;
    return 0;
}

static void hist_push(struct sn_page_hist *h, uint64_t lsn)
{
    rd_assert(h->n == 0 || h->lsn[h->n - 1] < lsn); /* ST3: ascending */
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 8;
        uint64_t *p = realloc(h->lsn, cap * sizeof(*p));
        if (p == NULL)
            rd_panic("out of memory for page history");
        h->lsn = p;
        h->cap = cap;
    }
    h->lsn[h->n++] = lsn;
}

uint64_t sn_store_advance(struct sn_store *st)
{
    uint64_t start = st->scl;
    for (;;) {
        /* Records mostly arrive in LSN order: try the slot after the last one first. */
        struct sn_rec *x = sn_store_at(st, st->adv_idx + 1, st->scl + 1);
        if (x == NULL || !x->durable)
            break;
        st->adv_idx = (uint32_t)(x - st->recs);
        st->scl++;
        if (x->flags & REDO_FLAG_CPL)
            st->max_cpl = x->lsn;
        if (x->page_id != ENGINE_PAGE_NONE && x->lsn > st->coalesced_lsn) {
            uint32_t pid = x->page_id;
            uint64_t lsn = x->lsn;
            hist_push(store_page_get_or_add(st, pid), lsn); /* may move pages, not recs */
        }
    }
    return st->scl - start;
}

uint64_t sn_store_scl_if_held_durable(struct sn_store *st)
{
    uint64_t scl = st->scl;
    uint32_t idx = st->adv_idx;
    for (;;) {
        struct sn_rec *x = sn_store_at(st, idx + 1, scl + 1);
        if (x == NULL)
            return scl;
        idx = (uint32_t)(x - st->recs);
        scl++;
    }
}

/* Keeps the records with lo <= lsn <= hi (the others' bodies are freed),
 * recomputes durable_max from durable_floor and rebuilds the LSN index.
 * Returns how many records were dropped. */
static size_t recs_keep_range(struct sn_store *st, uint64_t lo, uint64_t hi, uint64_t durable_floor)
{
    size_t w = 0, dropped = 0;
    st->durable_max = durable_floor;
    for (size_t i = 0; i < st->nrecs; i++) {
        struct sn_rec *x = &st->recs[i];
        if (x->lsn < lo || x->lsn > hi) {
            if (x->body)
                st->hot_records--;
            free(x->body);
            dropped++;
            continue;
        }
        if (x->durable && x->lsn > st->durable_max)
            st->durable_max = x->lsn;
        st->recs[w++] = *x;
    }
    st->nrecs = w;
    lsnidx_rebuild(st);
    return dropped;
}

void sn_store_truncate(struct sn_store *st, uint64_t keep_upto)
{
    rd_assert(keep_upto >= st->coalesced_lsn);
    recs_keep_range(st, 0, keep_upto, 0);
    if (st->scl > keep_upto)
        st->scl = keep_upto;
    if (st->max_cpl > st->scl) { /* the newest consistency point at or below the new scl */
        st->max_cpl = st->trimmed_cpl;
        for (size_t i = 0; i < st->nrecs; i++)
            if ((st->recs[i].flags & REDO_FLAG_CPL) && st->recs[i].lsn <= st->scl &&
                st->recs[i].lsn > st->max_cpl)
                st->max_cpl = st->recs[i].lsn;
    }
    for (size_t i = 0; i < st->npages; i++) {
        struct sn_page_hist *h = &st->pages[i];
        while (h->n > 0 && h->lsn[h->n - 1] > st->scl)
            h->n--;
    }
}

size_t sn_store_trim(struct sn_store *st, uint64_t min_hl_off, uint64_t upto)
{
    rd_assert(upto <= st->coalesced_lsn);
    size_t w = 0, dropped = 0;
    for (size_t i = 0; i < st->nrecs; i++) {
        struct sn_rec *x = &st->recs[i];
        if (x->hl_off < min_hl_off) {
            rd_assert(x->lsn <= upto);
            if (x->body) { /* none expected: coalesced records have no body */
                free(x->body);
                st->hot_records--;
            }
            dropped++;
            continue;
        }
        st->recs[w++] = *x;
    }
    if (upto > st->trimmed_lsn)
        st->trimmed_lsn = upto;
    if (dropped == 0)
        return 0;
    st->nrecs = w;
    lsnidx_rebuild(st);
    return dropped;
}

void sn_store_trimmed_floor(struct sn_store *st, uint64_t lsn, uint64_t cpl)
{
    rd_assert(lsn <= st->coalesced_lsn && cpl <= lsn);
    if (lsn > st->trimmed_lsn)
        st->trimmed_lsn = lsn;
    if (cpl > st->trimmed_cpl)
        st->trimmed_cpl = cpl;
    if (st->scl < lsn) {
        st->scl = lsn;
        if (st->max_cpl < st->trimmed_cpl)
            st->max_cpl = st->trimmed_cpl;
    }
}

size_t sn_store_rebase(struct sn_store *st, uint64_t base, uint64_t cpl)
{
    rd_assert(base > st->coalesced_lsn && cpl <= base);
    size_t dropped = recs_keep_range(st, base + 1, UINT64_MAX, base);
    for (size_t i = 0; i < st->npages; i++) { /* ST3: history only above the new coalesced point */
        struct sn_page_hist *h = &st->pages[i];
        uint32_t k = 0;
        while (k < h->n && h->lsn[k] <= base)
            k++;
        memmove(h->lsn, h->lsn + k, (h->n - k) * sizeof(*h->lsn));
        h->n -= k;
        h->corrupt = 0; /* its image was replaced by the copy (or the page was never written) */
    }
    st->coalesced_lsn = base;
    if (base > st->trimmed_lsn)
        st->trimmed_lsn = base;
    if (cpl > st->trimmed_cpl)
        st->trimmed_cpl = cpl;
    if (st->scl < base) {
        st->scl = base;
        if (st->max_cpl < cpl)
            st->max_cpl = cpl;
    }
    return dropped;
}

void sn_store_gc(struct sn_store *st, uint64_t upto)
{
    rd_assert(upto <= st->scl);
    if (upto <= st->coalesced_lsn)
        return;
    for (size_t i = 0; i < st->npages; i++) {
        struct sn_page_hist *h = &st->pages[i];
        uint32_t k = 0;
        while (k < h->n && h->lsn[k] <= upto) {
            struct sn_rec *x = sn_store_get(st, h->lsn[k]);
            if (x && x->body) {
                free(x->body);
                x->body = NULL;
                st->hot_records--;
            }
            k++;
        }
        memmove(h->lsn, h->lsn + k, (h->n - k) * sizeof(*h->lsn));
        h->n -= k;
    }
    /* Records without a page (commits) between the old and new point. */
    for (uint64_t lsn = st->coalesced_lsn + 1; lsn <= upto; lsn++) {
        struct sn_rec *x = sn_store_get(st, lsn);
        if (x && x->body) {
            free(x->body);
            x->body = NULL;
            st->hot_records--;
        }
    }
    st->coalesced_lsn = upto;
}

int sn_store_materialise(struct sn_store *st, uint32_t page_id, uint64_t read_lsn, uint8_t *page)
{
    uint64_t page_lsn = engine_page_lsn(page);
    if (page_lsn > read_lsn)
        return RD_ESTALE;
    struct sn_page_hist *h = sn_store_page(st, page_id);
    if (h == NULL)
        return 0;
    for (uint32_t k = 0; k < h->n && h->lsn[k] <= read_lsn; k++) {
        if (h->lsn[k] <= page_lsn)
            continue; /* already in the image (a coalesce that outran the meta file) */
        struct sn_rec *x = sn_store_get(st, h->lsn[k]);
        rd_assert(x != NULL && x->body != NULL); /* ST3, ST4 */
        int rc = engine_page_apply(page, x->type, x->body, x->body_len, x->lsn);
        if (rc < 0)
            return rc;
    }
    return 0;
}
