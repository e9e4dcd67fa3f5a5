/*
 * test_kv.c — the value format (engine/kv.h): codec, hash payloads, and a
 * model test: a writer engine with typed values and expiry times on a fake
 * clock, its records replayed into a replica engine (engine_redo, as a classic
 * replica or a storage node does); at every step both answer every key exactly
 * as the model does at the writer's clock (X1, X2 in server/commands.c).
 * Randomized: prints seed=, SEED=n replays.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/err.h"
#include "engine/engine.h"
#include "engine/kv.h"

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void seed_init(void)
{
    const char *s = getenv("SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    if (seed == 0)
        seed = 1;
    printf("seed=%lu\n", (unsigned long)seed);
    fflush(stdout);
    rng_state = seed * 0x9E3779B97F4A7C15ull | 1;
}

Test(kv, plain_strings_are_stored_unchanged)
{
    struct rd_buf b = {0};
    struct engine_kv v;
    cr_assert_eq(engine_kv_encode(&b, ENGINE_KV_STRING, 0, (const uint8_t *)"hello", 5), 0);
    cr_assert_eq(b.len, 5);
    cr_assert_eq(memcmp(b.data, "hello", 5), 0);
    cr_assert_eq(engine_kv_decode(b.data, b.len, &v), 0);
    cr_assert(v.type == ENGINE_KV_STRING && v.expire_ms == 0 && v.len == 5);
    rd_buf_reset(&b);
    cr_assert_eq(engine_kv_encode(&b, ENGINE_KV_STRING, 0, NULL, 0), 0);
    cr_assert_eq(engine_kv_decode(b.data, b.len, &v), 0);
    cr_assert_eq(v.len, 0);
    rd_buf_free(&b);
}

Test(kv, string_starting_with_tag_byte_round_trips)
{
    struct rd_buf b = {0};
    struct engine_kv v;
    const uint8_t s[] = {0xFE, 0x01, 0x02};
    cr_assert_eq(engine_kv_encode(&b, ENGINE_KV_STRING, 0, s, 3), 0);
    cr_assert_eq(b.len, 6);
    cr_assert_eq(engine_kv_encoded_len(ENGINE_KV_STRING, 0, s, 3), 6);
    cr_assert_eq(engine_kv_decode(b.data, b.len, &v), 0);
    cr_assert(v.len == 3 && memcmp(v.data, s, 3) == 0 && v.expire_ms == 0);
    rd_buf_free(&b);
}

Test(kv, expiry_round_trips_and_hides)
{
    struct rd_buf b = {0};
    struct engine_kv v;
    cr_assert_eq(engine_kv_encode(&b, ENGINE_KV_STRING, 1234567, (const uint8_t *)"x", 1), 0);
    cr_assert_eq(b.len, 12);
    cr_assert_eq(engine_kv_decode(b.data, b.len, &v), 0);
    cr_assert_eq(v.expire_ms, 1234567);
    cr_assert(!engine_kv_expired(&v, 1234566));
    cr_assert(engine_kv_expired(&v, 1234567));
    rd_buf_free(&b);
}

Test(kv, rejects_malformed_values)
{
    struct engine_kv v;
    const uint8_t bad_type[] = {0xFE, 7, 0};
    const uint8_t bad_flags[] = {0xFE, 0, 2};
    const uint8_t short_exp[] = {0xFE, 0, 1, 1, 2};
    const uint8_t zero_exp[] = {0xFE, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
    const uint8_t short_hdr[] = {0xFE, 0};
    const uint8_t bad_hash[] = {0xFE, 1, 0, 1, 0, 0, 0, 9, 0, 0, 0, 'a'};
    const uint8_t trailing_hash[] = {0xFE, 1, 0, 0, 0, 0, 0, 'x'};
    cr_assert_eq(engine_kv_decode(bad_type, sizeof(bad_type), &v), RD_ECORRUPT);
    cr_assert_eq(engine_kv_decode(bad_flags, sizeof(bad_flags), &v), RD_ECORRUPT);
    cr_assert_eq(engine_kv_decode(short_exp, sizeof(short_exp), &v), RD_ECORRUPT);
    cr_assert_eq(engine_kv_decode(zero_exp, sizeof(zero_exp), &v), RD_ECORRUPT);
    cr_assert_eq(engine_kv_decode(short_hdr, sizeof(short_hdr), &v), RD_ECORRUPT);
    cr_assert_eq(engine_kv_decode(bad_hash, sizeof(bad_hash), &v), RD_ECORRUPT);
    cr_assert_eq(engine_kv_decode(trailing_hash, sizeof(trailing_hash), &v), RD_ECORRUPT);
}

Test(kv, hash_set_replace_remove_keep_order)
{
    struct rd_buf a = {0}, b = {0};
    int added, removed;
    cr_assert_eq(engine_kv_hash_set(NULL, 0, (const uint8_t *)"f1", 2, (const uint8_t *)"v1", 2, &a, &added, &removed), 0);
    cr_assert(added && !removed);
    cr_assert_eq(engine_kv_hash_set(a.data, a.len, (const uint8_t *)"f2", 2, (const uint8_t *)"v2", 2, &b, &added, &removed), 0);
    cr_assert_eq(engine_kv_hash_set(b.data, b.len, (const uint8_t *)"f1", 2, (const uint8_t *)"new", 3, &a, &added, &removed), 0);
    cr_assert(!added && !removed);
    cr_assert_eq(engine_kv_hash_count(a.data, a.len), 2);
    size_t off = 0;
    const uint8_t *f, *v;
    size_t fl, vl;
    cr_assert_eq(engine_kv_hash_next(a.data, a.len, &off, &f, &fl, &v, &vl), 1);
    cr_assert(fl == 2 && memcmp(f, "f1", 2) == 0 && vl == 3 && memcmp(v, "new", 3) == 0);
    cr_assert_eq(engine_kv_hash_set(a.data, a.len, (const uint8_t *)"f1", 2, NULL, 0, &b, &added, &removed), 0);
    cr_assert(removed && engine_kv_hash_count(b.data, b.len) == 1);
    cr_assert_eq(engine_kv_hash_find(b.data, b.len, (const uint8_t *)"f2", 2, &v, &vl), 1);
    cr_assert_eq(engine_kv_hash_find(b.data, b.len, (const uint8_t *)"f1", 2, &v, &vl), 0);
    rd_buf_free(&a);
    rd_buf_free(&b);
}

/* ---- the model test ---- */

struct fwd {
    uint64_t lsn;
    struct engine *replica;
};

static int fwd_emit(void *ctx, uint32_t pid, uint8_t type, uint8_t flags, const uint8_t *body, size_t len,
                    uint64_t *end_lsn)
{
    (void)flags;
    struct fwd *f = ctx;
    f->lsn += 24 + len;
    *end_lsn = f->lsn;
    if (f->replica) {
        int rc = engine_redo(f->replica, pid, type, body, len, f->lsn);
        cr_assert_eq(rc, 0, "replica redo: %s", rd_strerror(rc));
    }
    return 0;
}

#define NKEYS 48
#define NFIELDS 6
struct mkey {
    int present, type;
    uint64_t expire;
    uint8_t val[64];
    size_t len;
    int has[NFIELDS];
    uint8_t hval[NFIELDS][8];
};

static void check_key(struct engine *e, const struct mkey *m, int i, uint64_t now, const char *who)
{
    char key[16];
    int kl = snprintf(key, sizeof(key), "key:%d", i);
    struct rd_buf raw = {0};
    struct engine_kv v;
    int expired = 0;
    int rc = engine_kv_get(e, (const uint8_t *)key, (size_t)kl, now, &raw, &v, &expired);
    int live = m->present && !(m->expire && m->expire <= now);
    if (!live) {
        cr_assert_eq(rc, RD_ENOTFOUND, "%s %s: hidden or absent expected, rc %d", who, key, rc);
        cr_assert_eq(expired, m->present, "%s %s: expired flag", who, key);
        rd_buf_free(&raw);
        return;
    }
    cr_assert_eq(rc, 0, "%s %s: live expected, rc %d", who, key, rc);
    cr_assert_eq(v.type, m->type);
    cr_assert_eq(v.expire_ms, m->expire, "%s %s: expiry", who, key);
    if (m->type == ENGINE_KV_STRING) {
        cr_assert(v.len == m->len && (m->len == 0 || memcmp(v.data, m->val, m->len) == 0), "%s %s: value", who, key);
    } else {
        int n = 0;
        for (int f = 0; f < NFIELDS; f++) {
            char fn[8];
            int fl = snprintf(fn, sizeof(fn), "f%d", f);
            const uint8_t *fv;
            size_t vl;
            int found = engine_kv_hash_find(v.data, v.len, (const uint8_t *)fn, (size_t)fl, &fv, &vl);
            cr_assert_eq(found, m->has[f], "%s %s field %s", who, key, fn);
            if (found)
                cr_assert(vl == 8 && memcmp(fv, m->hval[f], 8) == 0);
            n += m->has[f];
        }
        cr_assert_eq(engine_kv_hash_count(v.data, v.len), n);
    }
    rd_buf_free(&raw);
}

Test(kv, writer_and_replica_agree_with_model_at_the_writers_clock)
{
    seed_init();
    struct fwd wf = {0}, rf = {0};
    struct engine *rep = NULL, *wr = NULL;
    struct engine_options ro = {.data_path = NULL, .cache_pages = 4096, .sink = {.ctx = &rf, .emit = fwd_emit}};
    cr_assert_eq(engine_open(&ro, &rep), 0);
    wf.replica = rep;
    struct engine_options wo = {.data_path = NULL, .cache_pages = 4096, .sink = {.ctx = &wf, .emit = fwd_emit}};
    cr_assert_eq(engine_open(&wo, &wr), 0);
    static struct mkey m[NKEYS];
    memset(m, 0, sizeof(m));
    uint64_t now = 1000000;
    struct rd_buf enc = {0}, payload = {0}, tmp = {0}, raw = {0};
    for (int step = 0; step < 20000; step++) {
        int i = (int)(rnd() % NKEYS);
        char key[16];
        int kl = snprintf(key, sizeof(key), "key:%d", i);
        struct mkey *k = &m[i];
        int live = k->present && !(k->expire && k->expire <= now);
        uint64_t r = rnd() % 100;
        engine_txn_begin(wr);
        if (r < 35) { /* SET with maybe a TTL (some already in the past) */
            k->present = 1, k->type = ENGINE_KV_STRING;
            k->len = rnd() % sizeof(k->val);
            for (size_t j = 0; j < k->len; j++)
                k->val[j] = (uint8_t)(j == 0 && rnd() % 4 == 0 ? 0xFE : rnd());
            k->expire = rnd() % 3 == 0 ? now - 50 + rnd() % 500 : 0;
            rd_buf_reset(&enc);
            cr_assert_eq(engine_kv_encode(&enc, k->type, k->expire, k->val, k->len), 0);
            cr_assert_eq(engine_put(wr, (const uint8_t *)key, (size_t)kl, enc.data, enc.len), 0);
        } else if (r < 60) { /* HSET field (a hash replaces an expired or string key) */
            int f = (int)(rnd() % NFIELDS);
            if (!live || k->type != ENGINE_KV_HASH) {
                memset(k->has, 0, sizeof(k->has));
                k->expire = 0;
            }
            rd_buf_reset(&payload);
            for (int g = 0; g < NFIELDS; g++) /* the model's fields, in field order */
                if (k->has[g] && g != f) {
                    char fn[8];
                    int fl = snprintf(fn, sizeof(fn), "f%d", g);
                    int ad, rm;
                    cr_assert_eq(engine_kv_hash_set(payload.data, payload.len, (const uint8_t *)fn, (size_t)fl,
                                                    k->hval[g], 8, &tmp, &ad, &rm), 0);
                    rd_buf_reset(&payload);
                    rd_buf_append(&payload, tmp.data, tmp.len);
                }
            for (int j = 0; j < 8; j++)
                k->hval[f][j] = (uint8_t)rnd();
            k->has[f] = 1;
            char fn[8];
            int fl = snprintf(fn, sizeof(fn), "f%d", f), ad, rm;
            cr_assert_eq(engine_kv_hash_set(payload.data, payload.len, (const uint8_t *)fn, (size_t)fl, k->hval[f],
                                            8, &tmp, &ad, &rm), 0);
            k->present = 1, k->type = ENGINE_KV_HASH;
            rd_buf_reset(&enc);
            cr_assert_eq(engine_kv_encode(&enc, k->type, k->expire, tmp.data, tmp.len), 0);
            cr_assert_eq(engine_put(wr, (const uint8_t *)key, (size_t)kl, enc.data, enc.len), 0);
        } else if (r < 70) { /* EXPIRE / PERSIST on a live key: re-store with the new time */
            if (live) {
                struct engine_kv v;
                cr_assert_eq(engine_kv_get(wr, (const uint8_t *)key, (size_t)kl, now, &raw, &v, NULL), 0);
                k->expire = rnd() % 2 ? now + 1 + rnd() % 400 : 0;
                rd_buf_reset(&enc);
                cr_assert_eq(engine_kv_encode(&enc, v.type, k->expire, v.data, v.len), 0);
                cr_assert_eq(engine_put(wr, (const uint8_t *)key, (size_t)kl, enc.data, enc.len), 0);
            }
        } else if (r < 78) { /* DEL */
            int rc = engine_delete(wr, (const uint8_t *)key, (size_t)kl);
            cr_assert_eq(rc, k->present ? 0 : RD_ENOTFOUND);
            k->present = 0;
        } else if (r < 90) { /* the clock moves */
            now += rnd() % 100;
        } else { /* the writer's expiry cycle: deletes (logged) what has expired */
            for (int j = 0; j < NKEYS; j++)
                if (m[j].present && m[j].expire && m[j].expire <= now) {
                    char kj[16];
                    int kjl = snprintf(kj, sizeof(kj), "key:%d", j);
                    cr_assert_eq(engine_delete(wr, (const uint8_t *)kj, (size_t)kjl), 0);
                    m[j].present = 0;
                }
        }
        engine_txn_end(wr);
        if (step % 97 == 0) {
            cr_assert_eq(engine_reload_meta(rep), 0);
            for (int j = 0; j < NKEYS; j++) {
                check_key(wr, &m[j], j, now, "writer");
                check_key(rep, &m[j], j, now, "replica"); /* a replica judges by the writer's clock */
            }
            cr_assert_eq(engine_key_count(rep), engine_key_count(wr));
        }
    }
    rd_buf_free(&enc);
    rd_buf_free(&payload);
    rd_buf_free(&tmp);
    rd_buf_free(&raw);
    engine_close(wr);
    engine_close(rep);
}
