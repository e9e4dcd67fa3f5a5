/*
 * commands.c — the command table and handlers.
 *
 * Every command runs to completion on the loop thread (serial execution, as
 * Redis). A command that changes the engine runs inside engine_txn_begin/end
 * and ends with one WAL commit record; its reply is tagged with that record's
 * end LSN. A command that only reads is tagged with last_commit_lsn, the
 * newest commit it could have observed. MULTI/EXEC runs every queued command
 * in one transaction with one commit record.
 */
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "engine/kv.h"
#include "server/server_int.h"
#include "server/trace_hooks.h"

enum {
    CMD_WRITE = 1u << 0,   /* may change the engine: runs in a transaction */
    CMD_NOAUTH = 1u << 1,  /* allowed before AUTH */
    CMD_NOQUEUE = 1u << 2, /* executed immediately even inside MULTI */
    CMD_NOMULTI = 1u << 3, /* refused inside MULTI */
    CMD_NOSTORAGE = 1u << 4, /* works while a replica is still cloning */
};

struct cmd_def {
    const char *name;
    int arity; /* Redis convention: N exact, -N at least N (name included) */
    unsigned flags;
    void (*fn)(struct server *s, struct conn *c, const struct resp_args *a);
    const char *group;   /* COMMAND DOCS: Redis's group (string, hash, generic, ..., redoubt) */
    const char *summary; /* COMMAND DOCS: one line; docs/commands.md has the differences from Redis */
};

static const struct cmd_def *cmd_lookup(const struct resp_arg *name);

/* ------------------------------------------------------------ helpers */

static void reply_err(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_err(struct conn *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->srv->stats.errors++;
    if (resp_error(&c->out, msg) < 0)
        rd_panic("out of memory for a reply");
}

static void reply_ok(struct conn *c)
{
    if (resp_simple(&c->out, "OK") < 0)
        rd_panic("out of memory for a reply");
}

static void reply_int(struct conn *c, int64_t v)
{
    if (resp_int(&c->out, v) < 0)
        rd_panic("out of memory for a reply");
}

static void reply_bulk(struct conn *c, const void *p, size_t n)
{
    if (resp_bulk(&c->out, p, n) < 0)
        rd_panic("out of memory for a reply");
}

static void reply_null(struct conn *c)
{
    if (resp_null(&c->out) < 0)
        rd_panic("out of memory for a reply");
}

static void reply_array(struct conn *c, size_t n)
{
    if (resp_array_hdr(&c->out, n) < 0)
        rd_panic("out of memory for a reply");
}

static void reply_cstr(struct conn *c, const char *s) { reply_bulk(c, s, strlen(s)); }

static int arg_eq(const struct resp_arg *a, const char *s)
{
    size_t n = strlen(s);
    return a->len == n && strncasecmp((const char *)a->ptr, s, n) == 0;
}

/* Parses a whole argument as a signed 64-bit integer. */
static int arg_int64(const struct resp_arg *a, int64_t *out)
{
    char tmp[32];
    if (a->len == 0 || a->len >= sizeof(tmp))
        return -1;
    memcpy(tmp, a->ptr, a->len);
    tmp[a->len] = 0;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (errno != 0 || end != tmp + a->len || tmp[0] == ' ' || tmp[0] == '+')
        return -1;
    *out = v;
    return 0;
}

static int check_key(struct conn *c, const struct resp_arg *k)
{
    if (k->len == 0) {
        reply_err(c, "ERR empty keys are not supported");
        return -1;
    }
    if (k->len > ENGINE_KEY_MAX) {
        reply_err(c, "ERR key too large (%zu bytes; the limit is %u)", k->len, ENGINE_KEY_MAX);
        return -1;
    }
    return 0;
}

static int check_value(struct conn *c, const struct resp_arg *v)
{
    if (v->len > ENGINE_VALUE_MAX - ENGINE_KV_HDR_MAX) { /* room for a type and a TTL (engine/kv.h) */
        reply_err(c, "ERR value too large (%zu bytes; the limit is %u)", v->len, ENGINE_VALUE_MAX - ENGINE_KV_HDR_MAX);
        return -1;
    }
    return 0;
}

/* An engine error inside a write. If the transaction changed nothing yet (the
 * failed operation rolled its own mini-transaction back, E4) — typically a page
 * that could not be read: a corrupt page, or an aurora writer's GetPage failing
 * on every storage node — the client gets the error and the server goes on.
 * Otherwise the in-memory state may be ahead of the log, and the only safe move
 * is to stop (recovery restores the last commit). */
static void write_failed(struct server *s, struct conn *c, const char *what, int rc)
{
    if (!engine_txn_changed(s->engine)) {
        if (rc != RD_EAGAIN) /* a page miss: the command is parked and runs again (suspend.c) */
            rd_warn("%s failed before changing anything: %s (answered as an error)", what, rd_strerror(rc));
        reply_err(c, "ERR write failed, nothing changed: %s", rd_strerror(rc));
        return;
    }
    rd_panic("%s failed inside a transaction: %s; stopping (recovery restores the last commit)",
             what, rd_strerror(rc));
}

static struct rd_buf scratch; /* value buffer reused by reads (single thread) */

/* ------------------------------------------------------------ values, TTL, WATCH
 *
 * Values carry a type and an optional expiry (engine/kv.h). Expiry is decided
 * by the writer alone:
 *   X1 the writer hides a key whose expire_ms <= its wall clock now, and deletes
 *      it (engine_delete: a logged change like any DEL) from its expiry index in
 *      cmd_tick, or when a command overwrites or deletes it;
 *   X2 a classic replica hides a key whose expire_ms <= the writer's clock when it
 *      sent the newest commit the replica applied (up.apply_echo_us); an aurora
 *      reader uses the writer's clock in the newest feed frame (aur.feed_send_us).
 *      So a replica shows the writer's state at one instant of the writer's clock
 *      and never a key the writer already hid at that instant; the delete that
 *      follows reaches it through the log. Before its first commit from the
 *      writer (just restarted) a replica uses its own clock (one machine).
 *   X3 the index (key -> expire_ms, a min-heap plus a hash) exists only on a
 *      writable node; it is built by an incremental scan after the node becomes
 *      writable (start-up, promotion) while writes keep it current, and dropped
 *      when the node stops being writable.
 */

static struct rd_buf wbuf; /* encoded value being written (single thread) */
static struct rd_buf hbuf; /* hash payload being rebuilt */

static uint64_t wall_ms(void) { return rd_wall_us() / 1000u; }

/* The clock expiry is judged by on this node (X1, X2). */
static uint64_t view_ms(const struct server *s)
{
    uint64_t leader_ms = s->ops->clock_ms(s); /* a follower: the leader's clock at its newest change */
    return leader_ms != 0 ? leader_ms : wall_ms();
}

static uint64_t key_hash(const uint8_t *k, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 1099511628211ull;
    return h;
}

/* ---- the writer's expiry index (X3) ---- */
struct exp_ent {
    uint64_t at;
    uint64_t hash;
    size_t pos;            /* in heap */
    struct exp_ent *next;  /* hash chain */
    uint32_t klen;
    uint8_t key[];
};
static struct {
    int active, built;
    struct exp_ent **heap;
    size_t n, cap;
    struct exp_ent **tab;
    size_t tab_cap;        /* power of two */
    struct rd_buf build_next; /* next key of the building scan (empty: from the start) */
    uint64_t build_ms, expired_total;
} expi;

static void exp_swap(size_t i, size_t j)
{
    struct exp_ent *t = expi.heap[i];
    expi.heap[i] = expi.heap[j];
    expi.heap[j] = t;
    expi.heap[i]->pos = i;
    expi.heap[j]->pos = j;
}

static void exp_sift(size_t i)
{
    while (i > 0 && expi.heap[(i - 1) / 2]->at > expi.heap[i]->at) {
        exp_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < expi.n && expi.heap[l]->at < expi.heap[m]->at)
            m = l;
        if (r < expi.n && expi.heap[r]->at < expi.heap[m]->at)
            m = r;
        if (m == i)
            return;
        exp_swap(i, m);
        i = m;
    }
}

static struct exp_ent **exp_slot(const uint8_t *k, size_t n, uint64_t h)
{
    struct exp_ent **pp = &expi.tab[h & (expi.tab_cap - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->klen == n && memcmp((*pp)->key, k, n) == 0))
        pp = &(*pp)->next;
    return pp;
}

static void exp_reset(void)
{
    for (size_t i = 0; i < expi.n; i++)
        free(expi.heap[i]);
    free(expi.heap);
    free(expi.tab);
    rd_buf_free(&expi.build_next);
    memset(&expi, 0, sizeof(expi));
}

static void exp_grow_tab(void)
{
    size_t cap = expi.tab_cap ? expi.tab_cap * 2 : 1024;
    struct exp_ent **t = calloc(cap, sizeof(*t));
    if (t == NULL)
        rd_panic("out of memory for the expiry index");
    for (size_t i = 0; i < expi.n; i++) {
        struct exp_ent *e = expi.heap[i];
        e->next = t[e->hash & (cap - 1)];
        t[e->hash & (cap - 1)] = e;
    }
    free(expi.tab);
    expi.tab = t;
    expi.tab_cap = cap;
}

/* Records that key now expires at `at` (0: never). No-op unless the index is active. */
static void exp_note(const uint8_t *k, size_t n, uint64_t at)
{
    if (!expi.active)
        return;
    if (expi.tab_cap == 0)
        exp_grow_tab();
    uint64_t h = key_hash(k, n);
    struct exp_ent **pp = exp_slot(k, n, h);
    struct exp_ent *e = *pp;
    if (e != NULL && at == 0) { /* remove */
        *pp = e->next;
        size_t pos = e->pos;
        expi.n--;
        if (pos != expi.n) {
            expi.heap[pos] = expi.heap[expi.n];
            expi.heap[pos]->pos = pos;
            exp_sift(pos);
        }
        free(e);
    } else if (e != NULL) {
        e->at = at;
        exp_sift(e->pos);
    } else if (at != 0) {
        if (expi.n == expi.cap) {
            size_t cap = expi.cap ? expi.cap * 2 : 1024;
            struct exp_ent **hp = realloc(expi.heap, cap * sizeof(*hp));
            if (hp == NULL)
                rd_panic("out of memory for the expiry index");
            expi.heap = hp;
            expi.cap = cap;
        }
        e = malloc(sizeof(*e) + n);
        if (e == NULL)
            rd_panic("out of memory for the expiry index");
        e->at = at, e->hash = h, e->klen = (uint32_t)n;
        memcpy(e->key, k, n);
        e->next = *pp;
        *pp = e;
        e->pos = expi.n;
        expi.heap[expi.n++] = e;
        exp_sift(e->pos);
        if (expi.n > expi.tab_cap)
            exp_grow_tab();
    }
}

/* INFO keyspace: keys with a TTL (known on a writable node only, X3). */
static uint64_t cmd_expires_count(void) { return expi.active ? expi.n : 0; }

/* ---- WATCH: versions per key-hash bucket; a write bumps its key's bucket ---- */
#define WATCH_BUCKETS 65536u
#define WATCH_MAX_KEYS 1024u
static uint64_t watch_ver[WATCH_BUCKETS];
static uint64_t watch_flush_ver; /* FLUSHDB/FLUSHALL */
struct cmd_watch {
    uint32_t bucket;
    uint64_t ver, expire_ms;
};

static void key_touched(const uint8_t *k, size_t n) { watch_ver[key_hash(k, n) & (WATCH_BUCKETS - 1)]++; }

static void unwatch_all(struct conn *c)
{
    free(c->watched);
    c->watched = NULL;
    c->nwatched = 0;
}

/* 1 if a watched key changed (or expired) since WATCH: EXEC must abort. */
static int watch_broken(struct server *s, struct conn *c)
{
    uint64_t now = view_ms(s);
    const struct cmd_watch *w = c->watched;
    for (size_t i = 0; i < c->nwatched; i++)
        if (watch_ver[w[i].bucket] != w[i].ver || (w[i].expire_ms != 0 && w[i].expire_ms <= now))
            return 1;
    return c->nwatched > 0 && c->watch_flush_ver != watch_flush_ver;
}

/* ---- reading and writing typed values ---- */

static void reply_wrongtype(struct conn *c)
{
    reply_err(c, "WRONGTYPE Operation against a key holding the wrong kind of value");
}

/* 1 live (*v decoded from scratch), 0 absent or expired, -1 error answered. */
static int lookup(struct server *s, struct conn *c, const struct resp_arg *k, struct engine_kv *v)
{
    int rc = engine_kv_get(s->engine, k->ptr, k->len, view_ms(s), &scratch, v, NULL);
    if (rc == 0)
        return 1;
    if (rc == RD_ENOTFOUND)
        return 0;
    reply_err(c, "ERR read failed: %s", rd_strerror(rc));
    return -1;
}

/* As lookup, but a live key of another type than `type` answers WRONGTYPE (-1). */
static int lookup_typed(struct server *s, struct conn *c, const struct resp_arg *k, uint8_t type, struct engine_kv *v)
{
    int rc = lookup(s, c, k, v);
    if (rc == 1 && v->type != type) {
        reply_wrongtype(c);
        return -1;
    }
    return rc;
}

/* Stores (type, expire, payload) under key: logged, watched keys bumped, the
 * expiry index updated. 0, or -1 (answered; see write_failed). */
static int kv_store(struct server *s, struct conn *c, const struct resp_arg *k, uint8_t type, uint64_t expire_ms,
                    const uint8_t *data, size_t len, const char *what)
{
    if (engine_kv_encoded_len(type, expire_ms, data, len) > ENGINE_VALUE_MAX) {
        reply_err(c, "ERR value too large (the limit is %u bytes with its type and TTL)", ENGINE_VALUE_MAX);
        return -1;
    }
    rd_buf_reset(&wbuf);
    if (engine_kv_encode(&wbuf, type, expire_ms, data, len) < 0)
        rd_panic("out of memory for a value");
    int rc = engine_put(s->engine, k->ptr, k->len, wbuf.data, wbuf.len);
    if (rc < 0) {
        write_failed(s, c, what, rc);
        return -1;
    }
    key_touched(k->ptr, k->len);
    exp_note(k->ptr, k->len, expire_ms);
    return 0;
}

/* Deletes key (live or expired). 1 deleted, 0 absent, -1 answered. */
static int kv_delete(struct server *s, struct conn *c, const uint8_t *k, size_t n, const char *what)
{
    int rc = engine_delete(s->engine, k, n);
    if (rc == RD_ENOTFOUND)
        return 0;
    if (rc < 0) {
        if (c != NULL)
            write_failed(s, c, what, rc);
        else if (!engine_txn_changed(s->engine))
            rd_warn("%s failed before changing anything: %s", what, rd_strerror(rc));
        else
            rd_panic("%s failed inside a transaction: %s; stopping", what, rd_strerror(rc));
        return -1;
    }
    key_touched(k, n);
    exp_note(k, n, 0);
    return 1;
}

/* Parses an expiry argument: unit 1000 (seconds) or 1 (ms), relative or
 * absolute; *at = absolute ms on the writer's clock. -1 answered. */
static int parse_expire(struct conn *c, const struct resp_arg *arg, int64_t unit, int absolute, const char *cmd,
                        uint64_t now, uint64_t *at)
{
    int64_t v;
    if (arg_int64(arg, &v) < 0) {
        reply_err(c, "ERR value is not an integer or out of range");
        return -1;
    }
    if (v <= 0 && cmd != NULL) {
        reply_err(c, "ERR invalid expire time in '%s' command", cmd);
        return -1;
    }
    if (v > INT64_MAX / unit || (!absolute && v * unit > INT64_MAX - (int64_t)now)) {
        reply_err(c, "ERR invalid expire time in '%s' command", cmd ? cmd : "expire");
        return -1;
    }
    int64_t ms = v * unit + (absolute ? 0 : (int64_t)now);
    *at = ms <= 0 ? 1 : (uint64_t)ms; /* in the past: expired at once (1 = the epoch, never 0 = none) */
    return 0;
}

/* ------------------------------------------------------------ connection / server */

static void cmd_ping(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s;
    if (a->n == 2)
        reply_bulk(c, a->v[1].ptr, a->v[1].len);
    else if (resp_simple(&c->out, "PONG") < 0)
        rd_panic("out of memory for a reply");
}

static void cmd_echo(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s;
    reply_bulk(c, a->v[1].ptr, a->v[1].len);
}

static void cmd_quit(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s, (void)a;
    reply_ok(c);
    conn_close_after_reply(c);
}

static void cmd_auth(struct server *s, struct conn *c, const struct resp_args *a)
{
    const struct resp_arg *pass = &a->v[a->n - 1];
    if (s->cfg.password == NULL) {
        reply_err(c, "ERR AUTH <password> called without any password configured for the default "
                     "user. Are you sure your configuration is correct?");
        return;
    }
    if (a->n == 3 && !arg_eq(&a->v[1], "default")) {
        reply_err(c, "WRONGPASS invalid username-password pair or user is disabled.");
        return;
    }
    size_t n = strlen(s->cfg.password);
    if (pass->len == n && memcmp(pass->ptr, s->cfg.password, n) == 0) {
        c->authed = 1;
        reply_ok(c);
    } else {
        reply_err(c, "WRONGPASS invalid username-password pair or user is disabled.");
    }
}

static void cmd_select(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s;
    int64_t db;
    if (arg_int64(&a->v[1], &db) < 0)
        reply_err(c, "ERR value is not an integer or out of range");
    else if (db != 0)
        reply_err(c, "ERR DB index is out of range (Redoubt has one database, 0)");
    else
        reply_ok(c);
}

static const char *conn_flags(const struct conn *c)
{
    switch (c->kind) {
    case CONN_CLIENT: return c->in_multi ? "x" : "N";
    case CONN_DOWNSTREAM: return "S"; /* a follower attached to us */
    case CONN_UPSTREAM: return "M";   /* our link to the leader */
    default: return "N";               /* another link of the role (storage nodes) */
    }
}

static void client_list_line(struct server *s, struct rd_buf *b, const struct conn *x, uint64_t now)
{
    rd_buf_appendf(b,
                   "id=%" PRIu64 " addr=%s fd=%d name=%s age=%" PRIu64 " idle=%" PRIu64
                   " flags=%s db=0 sub=0 psub=0 multi=%d qbuf=%zu obl=%zu watch=%zu cmds=%" PRIu64 " kind=%s\n",
                   x->id, x->addr, x->fd, x->name, (now - x->created_ms) / 1000,
                   (now - (x->last_cmd_ms ? x->last_cmd_ms : x->created_ms)) / 1000, conn_flags(x),
                   x->in_multi ? (int)x->multi_count : -1, x->in.len, x->out.len, x->nwatched, x->cmds,
                   x->kind == CONN_CLIENT ? "client" : s->ops->conn_kind_name(x));
}

static int name_ok(const struct resp_arg *n)
{
    if (n->len >= sizeof(((struct conn *)0)->name))
        return 0;
    for (size_t i = 0; i < n->len; i++)
        if (n->ptr[i] <= ' ' || n->ptr[i] > '~')
            return 0;
    return 1;
}

/* CLIENT ID | GETNAME | SETNAME n | LIST [ID id...] | INFO | KILL (addr | ID id | ADDR addr) | SETINFO ... */
static void cmd_client(struct server *s, struct conn *c, const struct resp_args *a)
{
    const struct resp_arg *sub = &a->v[1];
    uint64_t now = rd_now_ms();
    if (arg_eq(sub, "setname") && a->n == 3) {
        if (!name_ok(&a->v[2])) {
            reply_err(c, "ERR Client names cannot contain spaces, newlines or special characters (and at most 63 "
                         "bytes here).");
            return;
        }
        memcpy(c->name, a->v[2].ptr, a->v[2].len);
        c->name[a->v[2].len] = 0;
        reply_ok(c);
    } else if (arg_eq(sub, "getname") && a->n == 2) {
        if (c->name[0])
            reply_cstr(c, c->name);
        else
            reply_null(c);
    } else if (arg_eq(sub, "id") && a->n == 2) {
        reply_int(c, (int64_t)c->id);
    } else if (arg_eq(sub, "setinfo")) {
        reply_ok(c);
    } else if ((arg_eq(sub, "list") || arg_eq(sub, "info")) && (a->n == 2 || arg_eq(sub, "list"))) {
        struct rd_buf b = {0};
        int only_ids = a->n >= 4 && arg_eq(&a->v[2], "id");
        if (arg_eq(sub, "info"))
            client_list_line(s, &b, c, now);
        for (struct conn *x = s->conns; x && arg_eq(sub, "list"); x = x->next) {
            if (x->closing)
                continue;
            if (a->n == 4 && arg_eq(&a->v[2], "type")) {
                int want_client = arg_eq(&a->v[3], "normal"), want_repl = arg_eq(&a->v[3], "replica") ||
                                                                           arg_eq(&a->v[3], "slave");
                if (!((want_client && x->kind == CONN_CLIENT) ||
                      (want_repl && x->kind == CONN_DOWNSTREAM)))
                    continue;
            } else if (only_ids) {
                int hit = 0;
                for (size_t i = 3; i < a->n; i++) {
                    int64_t id;
                    hit |= arg_int64(&a->v[i], &id) == 0 && (uint64_t)id == x->id;
                }
                if (!hit)
                    continue;
            } else if (a->n != 2) {
                rd_buf_free(&b);
                reply_err(c, "ERR syntax error");
                return;
            }
            client_list_line(s, &b, x, now);
        }
        reply_bulk(c, b.data ? b.data : (const uint8_t *)"", b.len);
        rd_buf_free(&b);
    } else if (arg_eq(sub, "kill") && (a->n == 3 || a->n == 4)) {
        int by_id = a->n == 4 && arg_eq(&a->v[2], "id");
        int by_addr = a->n == 3 || arg_eq(&a->v[2], "addr");
        const struct resp_arg *want = &a->v[a->n - 1];
        int64_t id = 0;
        if ((!by_id && !by_addr) || (by_id && arg_int64(want, &id) < 0)) {
            reply_err(c, "ERR syntax error");
            return;
        }
        int64_t killed = 0;
        for (struct conn *x = s->conns; x; x = x->next) {
            int match = by_id ? x->id == (uint64_t)id
                              : strlen(x->addr) == want->len && memcmp(x->addr, want->ptr, want->len) == 0;
            if (!match || x->closing || x->kind == CONN_UPSTREAM || x->kind == CONN_LINK)
                continue; /* outbound links are not clients */
            killed++;
            rd_info("CLIENT KILL: client %llu (%s) closed by client %llu", (unsigned long long)x->id, x->addr,
                    (unsigned long long)c->id);
            if (x == c)
                conn_close_after_reply(c);
            else
                conn_close(s, x);
        }
        if (a->n == 3) { /* the old form answers OK or an error */
            if (killed)
                reply_ok(c);
            else
                reply_err(c, "ERR No such client");
        } else {
            reply_int(c, killed);
        }
    } else {
        reply_err(c, "ERR unknown subcommand '%.*s'. Redoubt supports CLIENT ID|GETNAME|SETNAME|LIST|INFO|KILL|"
                     "SETINFO.",
                  (int)RD_MIN(a->v[1].len, 64), (const char *)a->v[1].ptr);
    }
}

/* HELLO [protover [AUTH user pass] [SETNAME name]]: RESP2 only. */
static void cmd_hello(struct server *s, struct conn *c, const struct resp_args *a)
{
    size_t i = 1;
    if (a->n >= 2) {
        int64_t ver;
        if (arg_int64(&a->v[1], &ver) < 0) {
            reply_err(c, "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (ver != 2) {
            reply_err(c, "NOPROTO sorry, this protocol version is not supported (Redoubt speaks RESP2)");
            return;
        }
        i = 2;
    }
    const struct resp_arg *name = NULL;
    for (; i < a->n; i++) {
        if (arg_eq(&a->v[i], "auth") && i + 2 < a->n) {
            const struct resp_arg *user = &a->v[i + 1], *pass = &a->v[i + 2];
            size_t pl = s->cfg.password ? strlen(s->cfg.password) : 0;
            if (s->cfg.password == NULL || !arg_eq(user, "default") || pass->len != pl ||
                memcmp(pass->ptr, s->cfg.password, pl) != 0) {
                reply_err(c, "WRONGPASS invalid username-password pair or user is disabled.");
                return;
            }
            c->authed = 1;
            i += 2;
        } else if (arg_eq(&a->v[i], "setname") && i + 1 < a->n) {
            name = &a->v[++i];
            if (!name_ok(name)) {
                reply_err(c, "ERR Client names cannot contain spaces, newlines or special characters.");
                return;
            }
        } else {
            reply_err(c, "ERR Syntax error in HELLO option '%.*s'", (int)RD_MIN(a->v[i].len, 32),
                      (const char *)a->v[i].ptr);
            return;
        }
    }
    if (!c->authed) {
        reply_err(c, "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> "
                     "AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol "
                     "version at the same time");
        return;
    }
    if (name) {
        memcpy(c->name, name->ptr, name->len);
        c->name[name->len] = 0;
    }
    int replica = server_is_follower(s);
    reply_array(c, 14);
    reply_cstr(c, "server");
    reply_cstr(c, "redis");
    reply_cstr(c, "version");
    reply_cstr(c, "7.0.0");
    reply_cstr(c, "proto");
    reply_int(c, 2);
    reply_cstr(c, "id");
    reply_int(c, (int64_t)c->id);
    reply_cstr(c, "mode");
    reply_cstr(c, "standalone");
    reply_cstr(c, "role");
    reply_cstr(c, replica ? "replica" : "master");
    reply_cstr(c, "modules");
    reply_array(c, 0);
}

static void cmd_time(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s, (void)a;
    uint64_t us = rd_wall_us();
    char t[32];
    reply_array(c, 2);
    reply_bulk(c, t, (size_t)snprintf(t, sizeof(t), "%" PRIu64, us / 1000000u));
    reply_bulk(c, t, (size_t)snprintf(t, sizeof(t), "%" PRIu64, us % 1000000u));
}

/* WATCH key...: EXEC aborts (null reply) if any of them is written (or
 * expires) before it, by anyone. Versions are per key-hash bucket, so a write
 * to another key of the same bucket (1 in 65536) aborts too: a client retries,
 * as it must for a real conflict. */
static void cmd_watch(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (c->in_multi) {
        reply_err(c, "ERR WATCH inside MULTI is not allowed");
        return;
    }
    if (c->nwatched + a->n - 1 > WATCH_MAX_KEYS) {
        reply_err(c, "ERR too many watched keys (the limit is %u per connection)", WATCH_MAX_KEYS);
        return;
    }
    struct cmd_watch *w = realloc(c->watched, (c->nwatched + a->n - 1) * sizeof(*w));
    if (w == NULL)
        rd_panic("out of memory for WATCH");
    c->watched = w;
    if (c->nwatched == 0)
        c->watch_flush_ver = watch_flush_ver;
    for (size_t i = 1; i < a->n; i++) {
        struct engine_kv v = {0};
        int live = 0;
        if (a->v[i].len > 0 && a->v[i].len <= ENGINE_KEY_MAX) {
            live = lookup(s, c, &a->v[i], &v);
            if (live < 0)
                return; /* answered; the keys so far stay watched */
        }
        uint64_t h = key_hash(a->v[i].ptr, a->v[i].len);
        w[c->nwatched++] = (struct cmd_watch){.bucket = (uint32_t)(h & (WATCH_BUCKETS - 1)),
                                              .ver = watch_ver[h & (WATCH_BUCKETS - 1)],
                                              .expire_ms = live == 1 ? v.expire_ms : 0};
    }
    reply_ok(c);
}

static void cmd_unwatch(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s, (void)a;
    unwatch_all(c);
    reply_ok(c);
}

static void cmd_shutdown(struct server *s, struct conn *c, const struct resp_args *a)
{
    for (size_t i = 1; i < a->n; i++)
        if (!arg_eq(&a->v[i], "nosave") && !arg_eq(&a->v[i], "save") && !arg_eq(&a->v[i], "now") &&
            !arg_eq(&a->v[i], "force")) {
            reply_err(c, "ERR syntax error");
            return;
        }
    rd_info("SHUTDOWN requested by client %llu", (unsigned long long)c->id);
    s->shutdown_requested = 1; /* the loop checkpoints and exits; the client sees EOF */
}

/* WAIT numreplicas timeout_ms: blocks this client until numreplicas replicas
 * have flushed its last write, or the timeout (0 = forever) expires; replies
 * with the number that had (Redis semantics). */
static void cmd_wait(struct server *s, struct conn *c, const struct resp_args *a)
{
    int64_t n, t;
    if (arg_int64(&a->v[1], &n) < 0 || arg_int64(&a->v[2], &t) < 0 || n < 0 || t < 0) {
        reply_err(c, "ERR value is not an integer or out of range");
        return;
    }
    if (server_is_follower(s)) {
        reply_err(c, "ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if "
                     "a replica is configured to be writable (which is not the default) writes to replicas are "
                     "just local and are not propagated.");
        return;
    }
    size_t have = s->ops->count_acked(s, c->last_write_lsn);
    if ((int64_t)have >= n || s->role != SERVER_ROLE_PRIMARY) { /* only a primary has followers that ack */
        reply_int(c, (int64_t)have);
        return;
    }
    c->wait_active = 1;
    c->wait_num = n;
    c->wait_deadline_ms = t == 0 ? UINT64_MAX : rd_now_ms() + (uint64_t)t;
    s->nwaiting++;
}

/* ------------------------------------------------------------ peers (common/auth.h) */

/* Commands that change who leads, what a node follows or whether it runs:
 * only an authenticated cluster peer may send them once a secret is configured
 * (DESIGN "Peers and trust"). Gated by name, so commands another branch adds
 * (REDOUBT.TERM, REDOUBT.PROMOTE, REDOUBT.LEASE) are covered when they land. */
static const char *const admin_cmds[] = {
    "replicaof", "slaveof", "promote", "shutdown", "redoubt.fence", "redoubt.term",
    "redoubt.promote", "redoubt.lease", "redoubt.replicate", "redoubt.reader",
};

static int cmd_is_admin(const struct resp_args *a)
{
    for (size_t i = 0; i < RD_ARRAY_LEN(admin_cmds); i++)
        if (arg_eq(&a->v[0], admin_cmds[i]))
            return 1;
    /* CONFIG GET only reads; every other CONFIG subcommand changes the node. */
    return arg_eq(&a->v[0], "config") && a->n >= 2 && !arg_eq(&a->v[1], "get");
}

/* REDOUBT.AUTH <hex>: one step of the peer handshake (HELLO -> CHALLENGE in hex,
 * PROOF -> +OK). Any failure: -NOPEERAUTH and the connection is closed. */
static void cmd_peer_auth(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (!s->auth.enabled) {
        reply_err(c, "ERR this node has no --cluster-secret-file: peers are not authenticated here");
        return;
    }
    uint8_t msg[RD_AUTH_MSG_MAX], out[RD_AUTH_MSG_MAX];
    int n = rd_auth_unhex((const char *)a->v[1].ptr, a->v[1].len, msg, sizeof(msg));
    int type = n < 0 ? RD_EPROTO : rd_auth_msg_type(msg, (size_t)n);
    int rc = RD_EPROTO;
    if (type == RD_AUTH_HELLO && c->hs.state == RD_AUTH_ST_NONE) {
        rc = rd_auth_server_hello(&s->auth, &c->hs, msg, (size_t)n, NULL, out);
        if (rc == 0) {
            char hex[2 * RD_AUTH_MSG_MAX + 1];
            rd_auth_hex(out, RD_AUTH_CHALLENGE_LEN, hex);
            reply_cstr(c, hex);
            return;
        }
    } else if (type == RD_AUTH_PROOF) {
        rc = rd_auth_server_proof(&s->auth, &c->hs, msg, (size_t)n);
        if (rc == 0) {
            if (conn_make_peer(s, c) < 0) {
                reply_err(c, "ERR max number of peer connections reached");
                conn_close_after_reply(c);
                return;
            }
            c->peer_authed = 1;
            c->authed = 1; /* a cluster peer needs no client password */
            reply_ok(c);
            return;
        }
    }
    c->hs.state = RD_AUTH_ST_FAILED;
    if (rd_auth_log_once(c->addr))
        rd_warn("peer authentication from %s failed: %s (wrong cluster id or secret, a replayed or malformed "
                "message); closing. Further failures from this address are not logged",
                c->addr, rc == RD_EAUTH ? "the proof does not verify" : "malformed or out-of-order message");
    reply_err(c, "NOPEERAUTH peer authentication failed: %s",
              rc == RD_EAUTH ? "wrong cluster id or secret" : "malformed or out-of-order message");
    conn_close_after_reply(c);
}

/* REDOUBT.REPLICATE (classic), REDOUBT.READER (aurora), REDOUBT.TERM and
 * REDOUBT.PROMOTE (classic terms, replica/README.md T1-T6): the role's own commands. */
static void cmd_role_command(struct server *s, struct conn *c, const struct resp_args *a) { s->ops->command(s, c, a); }
static void cmd_replicate(struct server *s, struct conn *c, const struct resp_args *a) { cmd_role_command(s, c, a); }

/* REPLICAOF host port | REPLICAOF NO ONE (promote). */
static void cmd_replicaof(struct server *s, struct conn *c, const struct resp_args *a)
{
    char err[512];
    if (arg_eq(&a->v[1], "no") && arg_eq(&a->v[2], "one")) {
        if (!server_is_follower(s)) {
            reply_ok(c); /* already a primary: Redis answers OK too */
            return;
        }
        int rc = s->ops->promote(s, c, 0, err, sizeof(err));
        if (rc < 0)
            reply_err(c, "%s", err);
        else if (rc == 0)
            reply_ok(c);
        return;
    }
    int64_t port;
    if (arg_int64(&a->v[2], &port) < 0 || port < 1 || port > 65535 || a->v[1].len == 0 || a->v[1].len > 255) {
        reply_err(c, "ERR Invalid master port or host");
        return;
    }
    char host[256];
    memcpy(host, a->v[1].ptr, a->v[1].len);
    host[a->v[1].len] = 0;
    int rc = s->ops->repoint(s, host, (int)port, err, sizeof(err));
    if (rc < 0)
        reply_err(c, "%s", err);
    else
        reply_ok(c);
}

static void cmd_promote(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)a;
    char err[512];
    int rc = s->ops->promote(s, c, 0, err, sizeof(err));
    if (rc < 0)
        reply_err(c, "%s", err);
    else if (rc == 0)
        reply_ok(c);
}

/* REDOUBT.FENCE [reason]: the monitor tells a primary/writer that a newer one
 * exists; from then on every write is refused (reads still work). */
static void cmd_fence(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (server_is_follower(s)) {
        reply_err(c, "ERR only a primary or writer can be fenced");
        return;
    }
    int64_t rank = 0; /* S21: REDOUBT.FENCE reason RANK: the installed writer's term / volume epoch */
    if (a->n > 2 && (arg_int64(&a->v[2], &rank) < 0 || rank < 0)) {
        reply_err(c, "ERR REDOUBT.FENCE reason [rank]: rank must be a non-negative integer");
        return;
    }
    uint64_t mine = s->ops->fence_rank(s);
    if (a->n > 2 && mine > (uint64_t)rank) {
        reply_err(c, "STALEFENCE this writer is at %s %" PRIu64 ", newer than the writer that fences it (%" PRId64 ")",
                  strcmp(s->ops->name, "aurora") == 0 ? "epoch" : "term", mine, rank);
        return;
    }
    snprintf(s->fenced_by, sizeof(s->fenced_by), "%.*s", a->n > 1 ? (int)RD_MIN(a->v[1].len, 100) : 7,
             a->n > 1 ? (const char *)a->v[1].ptr : "monitor");
    if (!s->fenced)
        rd_error("FENCED by %s (%s): a newer primary exists; this node refuses every write from now on", c->addr,
                 s->fenced_by);
    s->fenced = 1;
    reply_ok(c);
}

static void cmd_term(struct server *s, struct conn *c, const struct resp_args *a) { cmd_role_command(s, c, a); }
static void cmd_promote_term(struct server *s, struct conn *c, const struct resp_args *a) { cmd_role_command(s, c, a); }

/* REDOUBT.LEASE monitor-id monitor-monotonic-ms: a monitor renews this primary's lease (LS1). */
static void cmd_lease(struct server *s, struct conn *c, const struct resp_args *a)
{
    int64_t id = 0, ms = 0;
    if (arg_int64(&a->v[1], &id) < 0 || id < 0 || id >= SERVER_LEASE_MONITORS_MAX || arg_int64(&a->v[2], &ms) < 0 ||
        ms <= 0) {
        reply_err(c, "ERR REDOUBT.LEASE expects a monitor id in [0, %d] and a CLOCK_MONOTONIC time in ms",
                  SERVER_LEASE_MONITORS_MAX - 1);
        return;
    }
    server_lease_renew(s, (unsigned)id, (uint64_t)ms);
    reply_ok(c);
}

static void cmd_reader(struct server *s, struct conn *c, const struct resp_args *a) { cmd_role_command(s, c, a); }

/* ------------------------------------------------------------ strings */

static void cmd_get(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_STRING, &v);
    if (rc == 1)
        reply_bulk(c, v.data, v.len);
    else if (rc == 0)
        reply_null(c);
}

static void cmd_type(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup(s, c, &a->v[1], &v);
    if (rc < 0)
        return;
    if (resp_simple(&c->out, rc == 0 ? "none" : v.type == ENGINE_KV_HASH ? "hash" : "string") < 0)
        rd_panic("out of memory for a reply");
}

static void cmd_strlen(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_STRING, &v);
    if (rc >= 0)
        reply_int(c, rc == 1 ? (int64_t)v.len : 0);
}

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL] */
static void cmd_set(struct server *s, struct conn *c, const struct resp_args *a)
{
    int nx = 0, xx = 0, get = 0, keepttl = 0, nexp = 0;
    uint64_t now = wall_ms(), at = 0;
    for (size_t i = 3; i < a->n; i++) {
        const struct resp_arg *o = &a->v[i];
        if (arg_eq(o, "nx"))
            nx = 1;
        else if (arg_eq(o, "xx"))
            xx = 1;
        else if (arg_eq(o, "get"))
            get = 1;
        else if (arg_eq(o, "keepttl"))
            keepttl = 1;
        else if ((arg_eq(o, "ex") || arg_eq(o, "px") || arg_eq(o, "exat") || arg_eq(o, "pxat")) && i + 1 < a->n) {
            int ms = o->len >= 2 && (o->ptr[0] | 0x20) == 'p';
            int abs_ = o->len == 4;
            if (parse_expire(c, &a->v[++i], ms ? 1 : 1000, abs_, "set", now, &at) < 0)
                return;
            nexp++;
        } else {
            reply_err(c, "ERR syntax error");
            return;
        }
    }
    if ((nx && xx) || nexp > 1 || (keepttl && nexp)) {
        reply_err(c, "ERR syntax error");
        return;
    }
    if (check_key(c, &a->v[1]) < 0 || check_value(c, &a->v[2]) < 0)
        return;
    struct engine_kv old = {0};
    int exists = 0;
    if (nx || xx || get || keepttl) {
        exists = lookup(s, c, &a->v[1], &old);
        if (exists < 0)
            return;
        if (get && exists && old.type != ENGINE_KV_STRING) {
            reply_wrongtype(c);
            return;
        }
    }
    int do_set = !(nx && exists) && !(xx && !exists);
    if (get) { /* answered from scratch before it is reused */
        if (exists)
            reply_bulk(c, old.data, old.len);
        else
            reply_null(c);
    }
    if (do_set) {
        if (keepttl && exists)
            at = old.expire_ms;
        if (kv_store(s, c, &a->v[1], ENGINE_KV_STRING, at, a->v[2].ptr, a->v[2].len, "SET") < 0) {
            rd_assert(!get); /* GET's reply is out: only a write failure (the process stops) gets here */
            return;
        }
    }
    if (!get) {
        if (do_set)
            reply_ok(c);
        else
            reply_null(c);
    }
}

/* SETEX key seconds value / PSETEX key ms value */
static void setex_common(struct server *s, struct conn *c, const struct resp_args *a, int64_t unit, const char *cmd)
{
    uint64_t at;
    if (check_key(c, &a->v[1]) < 0 || parse_expire(c, &a->v[2], unit, 0, cmd, wall_ms(), &at) < 0 ||
        check_value(c, &a->v[3]) < 0)
        return;
    if (kv_store(s, c, &a->v[1], ENGINE_KV_STRING, at, a->v[3].ptr, a->v[3].len, cmd) == 0)
        reply_ok(c);
}
static void cmd_setex(struct server *s, struct conn *c, const struct resp_args *a) { setex_common(s, c, a, 1000, "setex"); }
static void cmd_psetex(struct server *s, struct conn *c, const struct resp_args *a) { setex_common(s, c, a, 1, "psetex"); }

static void cmd_setnx(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0 || check_value(c, &a->v[2]) < 0)
        return;
    int rc = lookup(s, c, &a->v[1], &v);
    if (rc < 0)
        return;
    if (rc == 1) {
        reply_int(c, 0);
        return;
    }
    if (kv_store(s, c, &a->v[1], ENGINE_KV_STRING, 0, a->v[2].ptr, a->v[2].len, "SETNX") == 0)
        reply_int(c, 1);
}

static void cmd_getset(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0 || check_value(c, &a->v[2]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_STRING, &v);
    if (rc < 0)
        return;
    if (rc == 1)
        reply_bulk(c, v.data, v.len);
    else
        reply_null(c);
    kv_store(s, c, &a->v[1], ENGINE_KV_STRING, 0, a->v[2].ptr, a->v[2].len, "GETSET");
}

static void cmd_getdel(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_STRING, &v);
    if (rc < 0)
        return;
    if (rc == 0) {
        reply_null(c);
        return;
    }
    reply_bulk(c, v.data, v.len);
    kv_delete(s, c, a->v[1].ptr, a->v[1].len, "GETDEL");
}

/* GETEX key [EX s|PX ms|EXAT ts|PXAT ms-ts|PERSIST] */
static void cmd_getex(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    uint64_t at = 0, now = wall_ms();
    int persist = 0, nexp = 0;
    for (size_t i = 2; i < a->n; i++) {
        const struct resp_arg *o = &a->v[i];
        if (arg_eq(o, "persist"))
            persist = 1;
        else if ((arg_eq(o, "ex") || arg_eq(o, "px") || arg_eq(o, "exat") || arg_eq(o, "pxat")) && i + 1 < a->n) {
            int ms = (o->ptr[0] | 0x20) == 'p';
            if (parse_expire(c, &a->v[++i], ms ? 1 : 1000, o->len == 4, "getex", now, &at) < 0)
                return;
            nexp++;
        } else {
            reply_err(c, "ERR syntax error");
            return;
        }
    }
    if (persist + nexp > 1) {
        reply_err(c, "ERR syntax error");
        return;
    }
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_STRING, &v);
    if (rc < 0)
        return;
    if (rc == 0) {
        reply_null(c);
        return;
    }
    reply_bulk(c, v.data, v.len);
    if ((persist && v.expire_ms != 0) || nexp) {
        rd_buf_reset(&hbuf); /* scratch is reused by kv_store's encoder? no: copy for safety */
        if (rd_buf_append(&hbuf, v.data, v.len) < 0)
            rd_panic("out of memory");
        kv_store(s, c, &a->v[1], ENGINE_KV_STRING, persist ? 0 : at, hbuf.data, hbuf.len, "GETEX");
    }
}

static void cmd_append(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_STRING, &v);
    if (rc < 0)
        return;
    size_t old_len = rc == 1 ? v.len : 0;
    if (old_len + a->v[2].len > ENGINE_VALUE_MAX - ENGINE_KV_HDR_MAX) {
        reply_err(c, "ERR string exceeds maximum allowed size (%u bytes)", ENGINE_VALUE_MAX - ENGINE_KV_HDR_MAX);
        return;
    }
    rd_buf_reset(&hbuf);
    if ((old_len && rd_buf_append(&hbuf, v.data, old_len) < 0) || rd_buf_append(&hbuf, a->v[2].ptr, a->v[2].len) < 0)
        rd_panic("out of memory");
    if (kv_store(s, c, &a->v[1], ENGINE_KV_STRING, rc == 1 ? v.expire_ms : 0, hbuf.data, hbuf.len, "APPEND") == 0)
        reply_int(c, (int64_t)hbuf.len);
}

/* INCR/DECR/INCRBY/DECRBY: a missing (or expired) key counts as 0; the TTL is kept. */
static void incr_by(struct server *s, struct conn *c, const struct resp_arg *key, int64_t by)
{
    struct engine_kv v;
    if (check_key(c, key) < 0)
        return;
    int rc = lookup_typed(s, c, key, ENGINE_KV_STRING, &v);
    if (rc < 0)
        return;
    int64_t cur = 0;
    if (rc == 1) {
        struct resp_arg arg = {.ptr = v.data, .len = v.len};
        if (arg_int64(&arg, &cur) < 0) {
            reply_err(c, "ERR value is not an integer or out of range");
            return;
        }
    }
    if ((by > 0 && cur > INT64_MAX - by) || (by < 0 && cur < INT64_MIN - by)) {
        reply_err(c, "ERR increment or decrement would overflow");
        return;
    }
    cur += by;
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, cur);
    if (kv_store(s, c, key, ENGINE_KV_STRING, rc == 1 ? v.expire_ms : 0, (const uint8_t *)tmp, (size_t)n, "INCR") == 0)
        reply_int(c, cur);
}

static void cmd_incr(struct server *s, struct conn *c, const struct resp_args *a) { incr_by(s, c, &a->v[1], 1); }
static void cmd_decr(struct server *s, struct conn *c, const struct resp_args *a) { incr_by(s, c, &a->v[1], -1); }

static void cmd_incrby(struct server *s, struct conn *c, const struct resp_args *a)
{
    int64_t by;
    if (arg_int64(&a->v[2], &by) < 0) {
        reply_err(c, "ERR value is not an integer or out of range");
        return;
    }
    incr_by(s, c, &a->v[1], by);
}

static void cmd_decrby(struct server *s, struct conn *c, const struct resp_args *a)
{
    int64_t by;
    if (arg_int64(&a->v[2], &by) < 0 || by == INT64_MIN) {
        reply_err(c, "ERR value is not an integer or out of range");
        return;
    }
    incr_by(s, c, &a->v[1], -by);
}

/* A decimal as Redis prints long doubles: %.17Lf without trailing zeros. */
static int parse_ld(const uint8_t *p, size_t n, long double *out)
{
    char tmp[64];
    if (n == 0 || n >= sizeof(tmp) || isspace(p[0]))
        return -1;
    memcpy(tmp, p, n);
    tmp[n] = 0;
    char *end;
    errno = 0;
    long double v = strtold(tmp, &end);
    if (errno != 0 || end != tmp + n || isnan(v) || isinf(v))
        return -1;
    *out = v;
    return 0;
}

static void cmd_incrbyfloat(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    long double by, cur = 0;
    if (parse_ld(a->v[2].ptr, a->v[2].len, &by) < 0) {
        reply_err(c, "ERR value is not a valid float");
        return;
    }
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_STRING, &v);
    if (rc < 0)
        return;
    if (rc == 1 && parse_ld(v.data, v.len, &cur) < 0) {
        reply_err(c, "ERR value is not a valid float");
        return;
    }
    cur += by;
    if (isnan(cur) || isinf(cur)) {
        reply_err(c, "ERR increment would produce NaN or Infinity");
        return;
    }
    char tmp[5200];
    int n = snprintf(tmp, sizeof(tmp), "%.17Lf", cur);
    if (n <= 0 || (size_t)n >= sizeof(tmp)) {
        reply_err(c, "ERR increment would produce NaN or Infinity");
        return;
    }
    if (strchr(tmp, '.')) {
        while (tmp[n - 1] == '0')
            tmp[--n] = 0;
        if (tmp[n - 1] == '.')
            tmp[--n] = 0;
    }
    if (n == 2 && strcmp(tmp, "-0") == 0)
        tmp[0] = '0', tmp[1] = 0, n = 1;
    if (kv_store(s, c, &a->v[1], ENGINE_KV_STRING, rc == 1 ? v.expire_ms : 0, (const uint8_t *)tmp, (size_t)n,
                 "INCRBYFLOAT") == 0)
        reply_bulk(c, tmp, (size_t)n);
}

static void cmd_del(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    for (size_t i = 1; i < a->n; i++)
        if (check_key(c, &a->v[i]) < 0)
            return;
    int64_t n = 0;
    for (size_t i = 1; i < a->n; i++) {
        int live = lookup(s, c, &a->v[i], &v);
        if (live < 0)
            return;
        int rc = kv_delete(s, c, a->v[i].ptr, a->v[i].len, "DEL"); /* an expired key goes too, uncounted */
        if (rc < 0)
            return;
        n += live;
    }
    reply_int(c, n);
}

static void cmd_exists(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    int64_t n = 0;
    for (size_t i = 1; i < a->n; i++) {
        if (a->v[i].len == 0 || a->v[i].len > ENGINE_KEY_MAX)
            continue;
        int rc = lookup(s, c, &a->v[i], &v);
        if (rc < 0)
            return;
        n += rc;
    }
    reply_int(c, n);
}

static void cmd_mget(struct server *s, struct conn *c, const struct resp_args *a)
{
    size_t start = c->out.len; /* a read error replaces the partial array */
    reply_array(c, a->n - 1);
    for (size_t i = 1; i < a->n; i++) {
        struct engine_kv v;
        if (a->v[i].len == 0 || a->v[i].len > ENGINE_KEY_MAX) {
            reply_null(c);
            continue;
        }
        int rc = engine_kv_get(s->engine, a->v[i].ptr, a->v[i].len, view_ms(s), &scratch, &v, NULL);
        if (rc == 0 && v.type == ENGINE_KV_STRING) {
            reply_bulk(c, v.data, v.len);
        } else if (rc == 0 || rc == RD_ENOTFOUND) {
            reply_null(c);
        } else { /* as GET: a key that could not be read is an error, never nil (logged by the engine) */
            c->out.len = start;
            reply_err(c, "ERR read failed: %s", rd_strerror(rc));
            return;
        }
    }
}

static int mset_check(struct server *s, struct conn *c, const struct resp_args *a, const char *name)
{
    if (a->n % 2 != 1) {
        reply_err(c, "ERR wrong number of arguments for '%s' command", name);
        return -1;
    }
    size_t total = 0;
    for (size_t i = 1; i < a->n; i += 2) {
        if (check_key(c, &a->v[i]) < 0 || check_value(c, &a->v[i + 1]) < 0)
            return -1;
        total += a->v[i].len + a->v[i + 1].len;
    }
    if (total > s->cfg.max_txn_bytes) {
        reply_err(c, "ERR transaction too large (%zu bytes; the limit is %zu)", total, s->cfg.max_txn_bytes);
        return -1;
    }
    return 0;
}

static int mset_all(struct server *s, struct conn *c, const struct resp_args *a)
{
    for (size_t i = 1; i < a->n; i += 2)
        if (kv_store(s, c, &a->v[i], ENGINE_KV_STRING, 0, a->v[i + 1].ptr, a->v[i + 1].len, "MSET") < 0)
            return -1;
    return 0;
}

static void cmd_mset(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (mset_check(s, c, a, "mset") == 0 && mset_all(s, c, a) == 0)
        reply_ok(c);
}

static void cmd_msetnx(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (mset_check(s, c, a, "msetnx") < 0)
        return;
    for (size_t i = 1; i < a->n; i += 2) {
        int rc = lookup(s, c, &a->v[i], &v);
        if (rc < 0)
            return;
        if (rc == 1) {
            reply_int(c, 0);
            return;
        }
    }
    if (mset_all(s, c, a) == 0)
        reply_int(c, 1);
}

/* ------------------------------------------------------------ expiry commands */

/* EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key t [NX|XX|GT|LT] */
static void expire_common(struct server *s, struct conn *c, const struct resp_args *a, int64_t unit, int absolute)
{
    struct engine_kv v;
    int nx = 0, xx = 0, gt = 0, lt = 0;
    for (size_t i = 3; i < a->n; i++) {
        if (arg_eq(&a->v[i], "nx"))
            nx = 1;
        else if (arg_eq(&a->v[i], "xx"))
            xx = 1;
        else if (arg_eq(&a->v[i], "gt"))
            gt = 1;
        else if (arg_eq(&a->v[i], "lt"))
            lt = 1;
        else {
            reply_err(c, "ERR Unsupported option %.*s", (int)RD_MIN(a->v[i].len, 32), (const char *)a->v[i].ptr);
            return;
        }
    }
    if (nx && (xx || gt || lt)) {
        reply_err(c, "ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if (gt && lt) {
        reply_err(c, "ERR GT and LT options at the same time are not compatible");
        return;
    }
    uint64_t now = wall_ms(), at;
    if (check_key(c, &a->v[1]) < 0 || parse_expire(c, &a->v[2], unit, absolute, NULL, now, &at) < 0)
        return;
    int rc = lookup(s, c, &a->v[1], &v);
    if (rc <= 0) {
        if (rc == 0)
            reply_int(c, 0);
        return;
    }
    uint64_t cur = v.expire_ms;
    if ((nx && cur) || (xx && !cur) || (gt && (!cur || at <= cur)) || (lt && cur && at >= cur)) {
        reply_int(c, 0);
        return;
    }
    if (at <= now) { /* in the past: the key goes now (a logged delete) */
        if (kv_delete(s, c, a->v[1].ptr, a->v[1].len, "EXPIRE") >= 0)
            reply_int(c, 1);
        return;
    }
    rd_buf_reset(&hbuf);
    if (rd_buf_append(&hbuf, v.data, v.len) < 0)
        rd_panic("out of memory");
    if (kv_store(s, c, &a->v[1], v.type, at, hbuf.data, hbuf.len, "EXPIRE") == 0)
        reply_int(c, 1);
}
static void cmd_expire(struct server *s, struct conn *c, const struct resp_args *a) { expire_common(s, c, a, 1000, 0); }
static void cmd_pexpire(struct server *s, struct conn *c, const struct resp_args *a) { expire_common(s, c, a, 1, 0); }
static void cmd_expireat(struct server *s, struct conn *c, const struct resp_args *a) { expire_common(s, c, a, 1000, 1); }
static void cmd_pexpireat(struct server *s, struct conn *c, const struct resp_args *a) { expire_common(s, c, a, 1, 1); }

/* TTL/PTTL/EXPIRETIME/PEXPIRETIME: -2 no key, -1 no expiry. */
static void ttl_common(struct server *s, struct conn *c, const struct resp_args *a, int ms, int absolute)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup(s, c, &a->v[1], &v);
    if (rc < 0)
        return;
    if (rc == 0) {
        reply_int(c, -2);
        return;
    }
    if (v.expire_ms == 0) {
        reply_int(c, -1);
        return;
    }
    uint64_t now = view_ms(s);
    int64_t t = absolute ? (int64_t)v.expire_ms : (int64_t)(v.expire_ms - now);
    reply_int(c, ms ? t : (absolute ? t / 1000 : (t + 500) / 1000));
}
static void cmd_ttl(struct server *s, struct conn *c, const struct resp_args *a) { ttl_common(s, c, a, 0, 0); }
static void cmd_pttl(struct server *s, struct conn *c, const struct resp_args *a) { ttl_common(s, c, a, 1, 0); }
static void cmd_expiretime(struct server *s, struct conn *c, const struct resp_args *a) { ttl_common(s, c, a, 0, 1); }
static void cmd_pexpiretime(struct server *s, struct conn *c, const struct resp_args *a) { ttl_common(s, c, a, 1, 1); }

static void cmd_persist(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup(s, c, &a->v[1], &v);
    if (rc < 0)
        return;
    if (rc == 0 || v.expire_ms == 0) {
        reply_int(c, 0);
        return;
    }
    rd_buf_reset(&hbuf);
    if (rd_buf_append(&hbuf, v.data, v.len) < 0)
        rd_panic("out of memory");
    if (kv_store(s, c, &a->v[1], v.type, 0, hbuf.data, hbuf.len, "PERSIST") == 0)
        reply_int(c, 1);
}

/* ------------------------------------------------------------ hashes
 * A hash is one value (engine/kv.h): its fields and values together are at
 * most ENGINE_VALUE_MAX bytes. HSET keeps the key's TTL (as Redis does). */

static void cmd_hset(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (a->n % 2 != 0) {
        reply_err(c, "ERR wrong number of arguments for '%.*s' command", (int)RD_MIN(a->v[0].len, 16),
                  (const char *)a->v[0].ptr);
        return;
    }
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_HASH, &v);
    if (rc < 0)
        return;
    uint64_t at = rc == 1 ? v.expire_ms : 0;
    struct rd_buf cur = {0};
    if (rc == 1 && rd_buf_append(&cur, v.data, v.len) < 0)
        rd_panic("out of memory");
    int64_t added = 0;
    for (size_t i = 2; i < a->n; i += 2) {
        int ad, rm;
        if (engine_kv_hash_set(cur.data, cur.len, a->v[i].ptr, a->v[i].len, a->v[i + 1].ptr, a->v[i + 1].len, &hbuf,
                               &ad, &rm) < 0)
            rd_panic("out of memory");
        added += ad;
        if (hbuf.len > ENGINE_VALUE_MAX - ENGINE_KV_HDR_MAX) {
            reply_err(c, "ERR hash too large (its fields and values are limited to %u bytes)",
                      ENGINE_VALUE_MAX - ENGINE_KV_HDR_MAX);
            rd_buf_free(&cur);
            return;
        }
        rd_buf_reset(&cur);
        if (rd_buf_append(&cur, hbuf.data, hbuf.len) < 0)
            rd_panic("out of memory");
    }
    if (kv_store(s, c, &a->v[1], ENGINE_KV_HASH, at, cur.data, cur.len, "HSET") == 0) {
        if (arg_eq(&a->v[0], "hmset"))
            reply_ok(c);
        else
            reply_int(c, added);
    }
    rd_buf_free(&cur);
}

static void cmd_hsetnx(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    const uint8_t *fv;
    size_t fl;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_HASH, &v);
    if (rc < 0)
        return;
    if (rc == 1 && engine_kv_hash_find(v.data, v.len, a->v[2].ptr, a->v[2].len, &fv, &fl) == 1) {
        reply_int(c, 0);
        return;
    }
    struct resp_arg args[4] = {a->v[0], a->v[1], a->v[2], a->v[3]};
    struct resp_args hs = {.v = args, .n = 4, .cap = 4};
    cmd_hset(s, c, &hs);
}

static void cmd_hget(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    const uint8_t *fv;
    size_t fl;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_HASH, &v);
    if (rc < 0)
        return;
    if (rc == 1 && engine_kv_hash_find(v.data, v.len, a->v[2].ptr, a->v[2].len, &fv, &fl) == 1)
        reply_bulk(c, fv, fl);
    else
        reply_null(c);
}

static void cmd_hmget(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_HASH, &v);
    if (rc < 0)
        return;
    reply_array(c, a->n - 2);
    for (size_t i = 2; i < a->n; i++) {
        const uint8_t *fv;
        size_t fl;
        if (rc == 1 && engine_kv_hash_find(v.data, v.len, a->v[i].ptr, a->v[i].len, &fv, &fl) == 1)
            reply_bulk(c, fv, fl);
        else
            reply_null(c);
    }
}

static void cmd_hdel(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_HASH, &v);
    if (rc <= 0) {
        if (rc == 0)
            reply_int(c, 0);
        return;
    }
    uint64_t at = v.expire_ms;
    struct rd_buf cur = {0};
    if (rd_buf_append(&cur, v.data, v.len) < 0)
        rd_panic("out of memory");
    int64_t removed = 0;
    for (size_t i = 2; i < a->n; i++) {
        int ad, rm;
        if (engine_kv_hash_set(cur.data, cur.len, a->v[i].ptr, a->v[i].len, NULL, 0, &hbuf, &ad, &rm) < 0)
            rd_panic("out of memory");
        removed += rm;
        rd_buf_reset(&cur);
        if (rd_buf_append(&cur, hbuf.data, hbuf.len) < 0)
            rd_panic("out of memory");
    }
    int ok = 0;
    if (removed == 0)
        ok = 0;
    else if (engine_kv_hash_count(cur.data, cur.len) == 0) /* the last field: the key goes */
        ok = kv_delete(s, c, a->v[1].ptr, a->v[1].len, "HDEL") < 0 ? -1 : 0;
    else
        ok = kv_store(s, c, &a->v[1], ENGINE_KV_HASH, at, cur.data, cur.len, "HDEL");
    if (ok == 0)
        reply_int(c, removed);
    rd_buf_free(&cur);
}

/* HGETALL / HKEYS / HVALS / HLEN */
static void hash_list(struct server *s, struct conn *c, const struct resp_args *a, int keys, int vals)
{
    struct engine_kv v;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_HASH, &v);
    if (rc < 0)
        return;
    int64_t n = rc == 1 ? engine_kv_hash_count(v.data, v.len) : 0;
    if (!keys && !vals) {
        reply_int(c, n);
        return;
    }
    reply_array(c, (size_t)n * (size_t)(keys + vals));
    size_t off = 0;
    const uint8_t *f, *fv;
    size_t fl, vl;
    while (rc == 1 && engine_kv_hash_next(v.data, v.len, &off, &f, &fl, &fv, &vl) == 1) {
        if (keys)
            reply_bulk(c, f, fl);
        if (vals)
            reply_bulk(c, fv, vl);
    }
}
static void cmd_hgetall(struct server *s, struct conn *c, const struct resp_args *a) { hash_list(s, c, a, 1, 1); }
static void cmd_hkeys(struct server *s, struct conn *c, const struct resp_args *a) { hash_list(s, c, a, 1, 0); }
static void cmd_hvals(struct server *s, struct conn *c, const struct resp_args *a) { hash_list(s, c, a, 0, 1); }
static void cmd_hlen(struct server *s, struct conn *c, const struct resp_args *a) { hash_list(s, c, a, 0, 0); }

static void cmd_hexists(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    const uint8_t *fv;
    size_t fl;
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_HASH, &v);
    if (rc >= 0)
        reply_int(c, rc == 1 && engine_kv_hash_find(v.data, v.len, a->v[2].ptr, a->v[2].len, &fv, &fl) == 1);
}

static void cmd_hincrby(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct engine_kv v;
    int64_t by, cur = 0;
    const uint8_t *fv;
    size_t fl;
    if (arg_int64(&a->v[3], &by) < 0) {
        reply_err(c, "ERR value is not an integer or out of range");
        return;
    }
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = lookup_typed(s, c, &a->v[1], ENGINE_KV_HASH, &v);
    if (rc < 0)
        return;
    if (rc == 1 && engine_kv_hash_find(v.data, v.len, a->v[2].ptr, a->v[2].len, &fv, &fl) == 1) {
        struct resp_arg arg = {.ptr = fv, .len = fl};
        if (arg_int64(&arg, &cur) < 0) {
            reply_err(c, "ERR hash value is not an integer");
            return;
        }
    }
    if ((by > 0 && cur > INT64_MAX - by) || (by < 0 && cur < INT64_MIN - by)) {
        reply_err(c, "ERR increment or decrement would overflow");
        return;
    }
    cur += by;
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, cur);
    struct resp_arg args[4] = {{.ptr = (const uint8_t *)"hset", .len = 4}, a->v[1], a->v[2],
                               {.ptr = (const uint8_t *)tmp, .len = (size_t)n}};
    struct resp_args hs = {.v = args, .n = 4, .cap = 4};
    size_t mark = c->out.len;
    cmd_hset(s, c, &hs); /* answers an integer (fields added) or an error */
    if (c->out.len > mark && c->out.data[mark] == ':') {
        c->out.len = mark;
        reply_int(c, cur);
    }
}

static void cmd_dbsize(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)a;
    reply_int(c, (int64_t)engine_key_count(s->engine));
}

/* SCAN cursor [MATCH pattern] [COUNT n] [TYPE t] and KEYS pattern. Keys are
 * visited in key order; the cursor is a server-side handle on the next key (a
 * table of SERVER_SCAN_CURSORS, least recently used replaced): an expired cursor
 * gets an error, a full iteration from 0 returns every key present throughout.
 * Expired keys (X1, X2) are left out: an inline value is judged in the scan
 * callback, an overflow value (not read by the scan) by a lookup afterwards. */
struct scan_acc {
    struct rd_buf keys; /* u32 len, u8 needs-lookup, bytes; repeated */
    size_t n;
    const char *pattern;
    int type;          /* -1 any, else ENGINE_KV_* */
    uint64_t now;
};

static int scan_collect(void *arg, const uint8_t *key, size_t key_len, const uint8_t *val, size_t val_len)
{
    struct scan_acc *acc = arg;
    if (acc->pattern) {
        char tmp[ENGINE_KEY_MAX + 1];
        memcpy(tmp, key, key_len);
        tmp[key_len] = 0;
        if (fnmatch(acc->pattern, tmp, 0) != 0)
            return 0;
    }
    uint8_t lookup_later = val == NULL && val_len > 0;
    if (!lookup_later) {
        struct engine_kv v;
        if (engine_kv_decode(val, val_len, &v) < 0)
            return 0; /* a value that does not decode: GET reports it */
        if (engine_kv_expired(&v, acc->now) || (acc->type >= 0 && v.type != acc->type))
            return 0;
    }
    uint8_t len[5];
    rd_put_u32le(len, (uint32_t)key_len);
    len[4] = lookup_later;
    if (rd_buf_append(&acc->keys, len, 5) < 0 || rd_buf_append(&acc->keys, key, key_len) < 0)
        return -ENOMEM;
    acc->n++;
    return 0;
}

/* Replies with the collected keys as an array; overflow values are looked up now. */
static void scan_reply(struct server *s, struct conn *c, struct scan_acc *acc)
{
    size_t n = 0;
    for (size_t off = 0; off < acc->keys.len;) { /* first pass: drop overflow keys that are expired */
        uint32_t kl = rd_get_u32le(acc->keys.data + off);
        if (acc->keys.data[off + 4]) {
            struct engine_kv v;
            int rc = engine_kv_get(s->engine, acc->keys.data + off + 5, kl, acc->now, &scratch, &v, NULL);
            acc->keys.data[off + 4] = rc == 0 && (acc->type < 0 || v.type == acc->type) ? 0 : 2;
        }
        n += acc->keys.data[off + 4] == 0;
        off += 5 + kl;
    }
    reply_array(c, n);
    for (size_t off = 0; off < acc->keys.len;) {
        uint32_t kl = rd_get_u32le(acc->keys.data + off);
        if (acc->keys.data[off + 4] == 0)
            reply_bulk(c, acc->keys.data + off + 5, kl);
        off += 5 + kl;
    }
}

static int parse_type_name(const struct resp_arg *t)
{
    if (arg_eq(t, "string"))
        return ENGINE_KV_STRING;
    if (arg_eq(t, "hash"))
        return ENGINE_KV_HASH;
    return 99; /* a type Redoubt has not: matches nothing */
}

static void cmd_scan(struct server *s, struct conn *c, const struct resp_args *a)
{
    int64_t cur_id;
    if (arg_int64(&a->v[1], &cur_id) < 0 || cur_id < 0) {
        reply_err(c, "ERR invalid cursor");
        return;
    }
    char pattern[1024];
    const char *pat = NULL;
    int64_t count = 10;
    int type = -1;
    for (size_t i = 2; i < a->n; i++) {
        if (i + 1 >= a->n) {
            reply_err(c, "ERR syntax error");
            return;
        }
        if (arg_eq(&a->v[i], "match")) {
            if (a->v[i + 1].len >= sizeof(pattern)) {
                reply_err(c, "ERR MATCH pattern too long");
                return;
            }
            memcpy(pattern, a->v[i + 1].ptr, a->v[i + 1].len);
            pattern[a->v[i + 1].len] = 0;
            pat = strcmp(pattern, "*") == 0 ? NULL : pattern;
        } else if (arg_eq(&a->v[i], "count")) {
            if (arg_int64(&a->v[i + 1], &count) < 0 || count < 1) {
                reply_err(c, "ERR value is not an integer or out of range");
                return;
            }
            count = RD_MIN(count, 100000);
        } else if (arg_eq(&a->v[i], "type")) {
            type = parse_type_name(&a->v[i + 1]);
        } else {
            reply_err(c, "ERR syntax error");
            return;
        }
        i++;
    }
    struct scan_cursor *sc = NULL;
    const uint8_t *start = NULL;
    size_t start_len = 0;
    if (cur_id != 0) {
        for (size_t i = 0; i < SERVER_SCAN_CURSORS; i++)
            if (s->cursors[i].id == (uint64_t)cur_id)
                sc = &s->cursors[i];
        if (sc == NULL) {
            reply_err(c, "ERR invalid cursor (expired or unknown; restart the scan from 0)");
            return;
        }
        start = sc->next_key.data;
        start_len = sc->next_key.len;
    }
    struct scan_acc acc = {.pattern = pat, .type = type, .now = view_ms(s)};
    struct rd_buf next = {0};
    int rc = engine_scan(s->engine, start, start_len, (size_t)count, 0, scan_collect, &acc, &next);
    if (rc < 0) {
        reply_err(c, "ERR scan failed: %s", rd_strerror(rc));
        goto out;
    }
    uint64_t new_id = 0;
    if (next.len > 0) {
        if (sc == NULL) { /* take the least recently used slot */
            sc = &s->cursors[0];
            for (size_t i = 1; i < SERVER_SCAN_CURSORS; i++)
                if (s->cursors[i].used_ms < sc->used_ms)
                    sc = &s->cursors[i];
        }
        sc->id = new_id = ++s->next_cursor_id;
        sc->used_ms = rd_now_ms();
        rd_buf_reset(&sc->next_key);
        if (rd_buf_append(&sc->next_key, next.data, next.len) < 0)
            rd_panic("out of memory for a scan cursor");
    } else if (sc != NULL) {
        sc->id = 0;
    }
    char idbuf[32];
    reply_array(c, 2);
    reply_bulk(c, idbuf, (size_t)snprintf(idbuf, sizeof(idbuf), "%" PRIu64, new_id));
    scan_reply(s, c, &acc);
out:
    rd_buf_free(&acc.keys);
    rd_buf_free(&next);
}

/* KEYS pattern: every live key matching, in key order (one full scan, as in
 * Redis: meant for debugging, not for large databases). */
static void cmd_keys(struct server *s, struct conn *c, const struct resp_args *a)
{
    char pattern[1024];
    if (a->v[1].len >= sizeof(pattern)) {
        reply_err(c, "ERR pattern too long");
        return;
    }
    memcpy(pattern, a->v[1].ptr, a->v[1].len);
    pattern[a->v[1].len] = 0;
    struct scan_acc acc = {.pattern = strcmp(pattern, "*") == 0 ? NULL : pattern, .type = -1, .now = view_ms(s)};
    struct rd_buf next = {0}, start = {0};
    for (;;) {
        rd_buf_reset(&next);
        int rc = engine_scan(s->engine, start.data, start.len, 4096, 0, scan_collect, &acc, &next);
        if (rc < 0) {
            reply_err(c, "ERR scan failed: %s", rd_strerror(rc));
            goto out;
        }
        if (next.len == 0)
            break;
        rd_buf_reset(&start);
        if (rd_buf_append(&start, next.data, next.len) < 0)
            rd_panic("out of memory for KEYS");
    }
    scan_reply(s, c, &acc);
out:
    rd_buf_free(&acc.keys);
    rd_buf_free(&next);
    rd_buf_free(&start);
}

static int collect_any(void *arg, const uint8_t *key, size_t key_len, const uint8_t *val, size_t val_len)
{
    (void)val, (void)val_len;
    uint8_t len[4];
    rd_put_u32le(len, (uint32_t)key_len);
    struct rd_buf *b = arg;
    return rd_buf_append(b, len, 4) < 0 || rd_buf_append(b, key, key_len) < 0 ? -ENOMEM : 0;
}

static uint64_t txn_commit_if_changed(struct server *s, struct conn *c, uint64_t lsn_before);
static uint64_t log_insert_lsn(const struct server *s);

/* FLUSHDB / FLUSHALL [ASYNC|SYNC]: deletes every key, FLUSH_BATCH keys per
 * transaction (a transaction's pages must fit the buffer pool, E3), all in this
 * one command: no other client sees a partial flush; a crash in the middle
 * leaves the keys of the batches not yet committed. */
#define FLUSH_BATCH 64
static void cmd_flushdb(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (a->n > 2 || (a->n == 2 && !arg_eq(&a->v[1], "async") && !arg_eq(&a->v[1], "sync"))) {
        reply_err(c, "ERR syntax error");
        return;
    }
    struct rd_buf keys = {0}, nx = {0};
    for (;;) {
        uint64_t batch_start = log_insert_lsn(s);
        rd_buf_reset(&keys);
        rd_buf_reset(&nx);
        int rc = engine_scan(s->engine, NULL, 0, FLUSH_BATCH, 0, collect_any, &keys, &nx);
        if (rc < 0) {
            if (!engine_txn_changed(s->engine))
                reply_err(c, "ERR scan failed: %s", rd_strerror(rc));
            else
                write_failed(s, c, "FLUSHDB", rc);
            goto out;
        }
        if (keys.len == 0)
            break;
        for (size_t off = 0; off < keys.len;) {
            uint32_t kl = rd_get_u32le(keys.data + off);
            if (kv_delete(s, c, keys.data + off + 4, kl, "FLUSHDB") < 0)
                goto out;
            off += 4 + kl;
        }
        /* commit this batch; the caller's wrapper commits the last one */
        engine_txn_end(s->engine);
        txn_commit_if_changed(s, c, batch_start);
        engine_txn_begin(s->engine);
    }
    watch_flush_ver++;
    reply_ok(c);
out:
    rd_buf_free(&keys);
    rd_buf_free(&nx);
}

/* ------------------------------------------------------------ scripts
 * There is no Lua here. EVAL / EVALSHA / SCRIPT LOAD|EXISTS|FLUSH accept only
 * the three scripts of redis-py's Lock (release, extend, reacquire), recognised
 * by their text with all white space removed, and run them natively as one
 * transaction. Their ids are fixed (not SHA1s): redis-py's first EVALSHA gets
 * NOSCRIPT, it loads the script and uses the id SCRIPT LOAD returned. */
enum { SCRIPT_RELEASE = 0, SCRIPT_EXTEND = 1, SCRIPT_REACQUIRE = 2, SCRIPT_N = 3 };
static const char *const script_text[SCRIPT_N] = {
    "localtoken=redis.call('get',KEYS[1])ifnottokenortoken~=ARGV[1]thenreturn0endredis.call('del',KEYS[1])return1",
    "localtoken=redis.call('get',KEYS[1])ifnottokenortoken~=ARGV[1]thenreturn0endlocalexpiration=redis.call('pttl',"
    "KEYS[1])ifnotexpirationthenexpiration=0endifexpiration<0thenreturn0endlocalnewttl=ARGV[2]ifARGV[3]==\"0\"then"
    "newttl=ARGV[2]+expirationendredis.call('pexpire',KEYS[1],newttl)return1",
    "localtoken=redis.call('get',KEYS[1])ifnottokenortoken~=ARGV[1]thenreturn0endredis.call('pexpire',KEYS[1],ARGV[2])"
    "return1",
};
static const char *const script_id[SCRIPT_N] = {
    "7265646f7562742d6c6f636b2d72656c65617365", /* "redoubt-lock-release" in hex */
    "7265646f7562742d6c6f636b2d657874656e6430",
    "7265646f7562742d6c6f636b2d72656163717569",
};

static int script_by_text(const struct resp_arg *t)
{
    for (int i = 0; i < SCRIPT_N; i++) {
        const char *p = script_text[i];
        size_t j = 0;
        for (; j < t->len; j++) {
            if (isspace(t->ptr[j]))
                continue;
            if (*p != (char)t->ptr[j])
                break;
            p++;
        }
        if (j == t->len && *p == 0)
            return i;
    }
    return -1;
}

static int script_by_id(const struct resp_arg *id)
{
    for (int i = 0; i < SCRIPT_N; i++)
        if (arg_eq(id, script_id[i]))
            return i;
    return -1;
}

static void script_run(struct server *s, struct conn *c, int which, const struct resp_args *a)
{
    int64_t nkeys;
    if (arg_int64(&a->v[2], &nkeys) < 0 || nkeys != 1 || a->n < 5) {
        reply_err(c, "ERR this script takes 1 key and its arguments");
        return;
    }
    const struct resp_arg *key = &a->v[3], *token = &a->v[4];
    struct engine_kv v;
    if (check_key(c, key) < 0)
        return;
    int rc = lookup(s, c, key, &v);
    if (rc < 0)
        return;
    if (rc == 0 || v.type != ENGINE_KV_STRING || v.len != token->len || memcmp(v.data, token->ptr, v.len) != 0) {
        reply_int(c, 0);
        return;
    }
    if (which == SCRIPT_RELEASE) {
        if (kv_delete(s, c, key->ptr, key->len, "EVAL") >= 0)
            reply_int(c, 1);
        return;
    }
    int64_t ms;
    if (a->n < 6 || arg_int64(&a->v[5], &ms) < 0) {
        reply_err(c, "ERR value is not an integer or out of range");
        return;
    }
    uint64_t now = wall_ms();
    if (which == SCRIPT_EXTEND) {
        if (v.expire_ms == 0) {
            reply_int(c, 0);
            return;
        }
        if (a->n < 7 || !arg_eq(&a->v[6], "1"))
            ms += (int64_t)(v.expire_ms - now);
    }
    rd_buf_reset(&hbuf);
    if (rd_buf_append(&hbuf, v.data, v.len) < 0)
        rd_panic("out of memory");
    if (ms <= 0) {
        if (kv_delete(s, c, key->ptr, key->len, "EVAL") >= 0)
            reply_int(c, 1);
        return;
    }
    if (kv_store(s, c, key, ENGINE_KV_STRING, now + (uint64_t)ms, hbuf.data, hbuf.len, "EVAL") == 0)
        reply_int(c, 1);
}

static void cmd_eval(struct server *s, struct conn *c, const struct resp_args *a)
{
    int which = arg_eq(&a->v[0], "evalsha") ? script_by_id(&a->v[1]) : script_by_text(&a->v[1]);
    if (which < 0) {
        if (arg_eq(&a->v[0], "evalsha"))
            reply_err(c, "NOSCRIPT No matching script. Please use EVAL.");
        else
            reply_err(c, "ERR Redoubt has no Lua: EVAL runs only redis-py's Lock scripts (docs/commands.md)");
        return;
    }
    script_run(s, c, which, a);
}

static void cmd_script(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s;
    if (arg_eq(&a->v[1], "load") && a->n == 3) {
        int which = script_by_text(&a->v[2]);
        if (which < 0)
            reply_err(c, "ERR Redoubt has no Lua: SCRIPT LOAD accepts only redis-py's Lock scripts");
        else
            reply_cstr(c, script_id[which]);
    } else if (arg_eq(&a->v[1], "exists")) {
        reply_array(c, a->n - 2);
        for (size_t i = 2; i < a->n; i++)
            reply_int(c, script_by_id(&a->v[i]) >= 0);
    } else if (arg_eq(&a->v[1], "flush")) {
        reply_ok(c);
    } else {
        reply_err(c, "ERR unknown subcommand of SCRIPT. Redoubt supports SCRIPT LOAD|EXISTS|FLUSH.");
    }
}

/* ------------------------------------------------------------ introspection */

/* INFO clients: client connections only (replica links, storage links and
 * feeds are not clients); blocked = waiting in WAIT or for a promotion. */
static void info_clients(struct server *s, struct rd_buf *b)
{
    size_t clients = 0, waiting = 0, in_multi = 0, named = 0;
    for (struct conn *x = s->conns; x; x = x->next) {
        if (x->kind != CONN_CLIENT || x->closing)
            continue;
        clients++;
        waiting += x->nmarks > 0;
        in_multi += x->in_multi != 0;
        named += x->name[0] != 0;
    }
    rd_buf_appendf(b,
                   "# Clients\r\nconnected_clients:%zu\r\nmaxclients:%zu\r\nblocked_clients:%zu\r\n"
                   "clients_waiting_for_durability:%zu\r\nclients_in_multi:%zu\r\nconnections_total:%zu\r\n"
                   "connected_replicas:%zu\r\n\r\n",
                   clients, s->cfg.max_clients, s->nwaiting, waiting, in_multi, s->nconns, s->ops->followers(s));
    (void)named;
}

static void human_bytes(char *out, size_t n, uint64_t v)
{
    const char *u = "BKMGT";
    double x = (double)v;
    while (x >= 1024 && u[1]) {
        x /= 1024;
        u++;
    }
    snprintf(out, n, *u == 'B' ? "%.0f%c" : "%.2f%c", x, *u);
}

/* INFO memory: used_memory is what malloc has handed out (mallinfo2: arenas and
 * mmapped blocks) plus the buffer pool, which is its own anonymous mapping
 * (pages are touched on first use, so rss from /proc may be lower). */
static void info_memory(struct server *s, struct rd_buf *b, const struct engine_stats *es)
{
    static uint64_t peak;
    struct mallinfo2 mi = mallinfo2();
    uint64_t used = (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
    uint64_t rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        unsigned long long pages_total = 0, pages_rss = 0;
        if (fscanf(f, "%llu %llu", &pages_total, &pages_rss) == 2)
            rss = pages_rss * (uint64_t)sysconf(_SC_PAGESIZE);
        fclose(f);
    }
    uint64_t pool = es->cache_pages * ENGINE_PAGE_SIZE;
    used += pool;
    peak = RD_MAX(peak, used);
    uint64_t bufs = 0;
    for (struct conn *x = s->conns; x; x = x->next)
        bufs += x->in.cap + x->out.cap + x->sending.cap + x->multi_q.cap;
    char h1[32], h2[32], h3[32], h4[32];
    human_bytes(h1, sizeof(h1), used);
    human_bytes(h2, sizeof(h2), rss);
    human_bytes(h3, sizeof(h3), peak);
    human_bytes(h4, sizeof(h4), pool);
    rd_buf_appendf(b,
                   "# Memory\r\nused_memory:%" PRIu64 "\r\nused_memory_human:%s\r\nused_memory_rss:%" PRIu64
                   "\r\nused_memory_rss_human:%s\r\nused_memory_peak:%" PRIu64 "\r\nused_memory_peak_human:%s\r\n"
                   "used_memory_buffer_pool:%" PRIu64 "\r\nused_memory_buffer_pool_human:%s\r\n"
                   "used_memory_clients:%" PRIu64 "\r\nused_memory_expiry_index:%zu\r\nmaxmemory:%" PRIu64
                   "\r\nmaxmemory_policy:noeviction\r\nmem_fragmentation_ratio:%.2f\r\nmem_allocator:glibc\r\n\r\n",
                   used, h1, rss, h2, peak, h3, pool, h4, bufs, expi.n * (sizeof(struct exp_ent) + 32 + sizeof(void *)),
                   pool, used ? (double)rss / (double)used : 0.0);
}

static void info_section(struct server *s, struct rd_buf *b, const char *sec)
{
    struct wal_stats ws;
    struct engine_stats es;
    memset(&ws, 0, sizeof(ws));
    memset(&es, 0, sizeof(es));
    if (s->wal)
        wal_get_stats(s->wal, &ws);
    if (s->engine)
        engine_get_stats(s->engine, &es);
    static const char *roles[] = {"standalone", "primary", "replica", "writer", "reader"};
    uint64_t up_s = (rd_now_ms() - s->start_ms) / 1000;
    int all = sec == NULL || strcasecmp(sec, "all") == 0 || strcasecmp(sec, "everything") == 0 ||
              strcasecmp(sec, "default") == 0;
#define SEC(name) (all || strcasecmp(sec, name) == 0)
    if (SEC("server")) {
        rd_buf_appendf(b,
                       "# Server\r\nredis_version:7.0.0\r\nredoubt_version:0.1.0\r\nredis_mode:standalone\r\n"
                       "redoubt_role:%s\r\nprocess_id:%d\r\ntcp_port:%d\r\nuptime_in_seconds:%" PRIu64
                       "\r\ndata_dir:%s\r\ncommit_level:%s\r\nsystem_id:%" PRIu64 "\r\n\r\n",
                       roles[s->role], (int)getpid(), s->cfg.port, up_s, s->cfg.dir,
                       server_commit_name(s->cfg.commit), ws.system_id);
    }
    if (SEC("clients"))
        info_clients(s, b);
    if (SEC("memory"))
        info_memory(s, b, &es);
    if (SEC("persistence")) {
        double avg_group = ws.flushes ? (double)ws.commits / (double)ws.flushes : 0.0;
        double avg_flush_us = ws.flushes ? (double)ws.flush_lat_us_total / (double)ws.flushes : 0.0;
        rd_buf_appendf(
            b,
            "# Persistence\r\nloading:0\r\naof_enabled:0\r\nwal_insert_lsn:%" PRIu64 "\r\nwal_flushed_lsn:%" PRIu64
            "\r\nwal_redo_lsn:%" PRIu64 "\r\ntimeline:%u\r\nwal_records:%" PRIu64 "\r\nwal_bytes:%" PRIu64
            "\r\nwal_fpi_records:%" PRIu64 "\r\nwal_fpi_bytes:%" PRIu64 "\r\nwal_commits:%" PRIu64
            "\r\nwal_bytes_per_commit:%.1f\r\nwal_flushes:%" PRIu64 "\r\nwal_fsyncs:%" PRIu64
            "\r\nwal_group_commit_avg:%.2f\r\nwal_group_commit_max:%" PRIu64
            "\r\nwal_flush_latency_avg_us:%.1f\r\ncheckpoints:%" PRIu64 "\r\npages_total:%" PRIu64
            "\r\npages_free:%" PRIu64 "\r\ncache_pages:%" PRIu64 "\r\ncache_hits:%" PRIu64
            "\r\ncache_misses:%" PRIu64 "\r\ncache_evictions:%" PRIu64 "\r\npage_splits:%" PRIu64
            "\r\nbtree_height:%u\r\n\r\n",
            ws.insert_lsn, ws.flushed_lsn, ws.redo_lsn, ws.timeline, ws.records, ws.record_bytes,
            ws.image_records, ws.image_bytes, ws.commits,
            ws.commits ? (double)ws.record_bytes / (double)ws.commits : 0.0, ws.flushes, ws.fsyncs,
            avg_group, ws.group_commits_max, avg_flush_us, ws.checkpoints, es.pages_total,
            es.pages_free, es.cache_pages, es.cache_hits, es.cache_misses, es.evictions, es.splits,
            es.height);
    }
    if (SEC("stats"))
        rd_buf_appendf(b,
                       "# Stats\r\ntotal_connections_received:%" PRIu64 "\r\nrejected_connections:%" PRIu64
                       "\r\ntotal_commands_processed:%" PRIu64 "\r\ntotal_transactions:%" PRIu64
                       "\r\ntotal_error_replies:%" PRIu64 "\r\nprotocol_errors:%" PRIu64
                       "\r\nreplies_delayed_for_durability:%" PRIu64 "\r\ntotal_net_input_bytes:%" PRIu64
                       "\r\ntotal_net_output_bytes:%" PRIu64 "\r\nloop_turns:%" PRIu64 "\r\n\r\n",
                       s->stats.connections_received, s->stats.connections_rejected, s->stats.commands,
                       s->stats.txns, s->stats.errors, s->stats.protocol_errors, s->stats.replies_delayed,
                       s->net.in_bytes, s->net.out_bytes, s->loop.turns);
    if (SEC("replication"))
        s->ops->info(s, b);
    if (SEC("keyspace") && s->engine)
        rd_buf_appendf(b, "# Keyspace\r\ndb0:keys=%" PRIu64 ",expires=%" PRIu64 ",avg_ttl=0\r\n\r\n",
                       engine_key_count(s->engine), cmd_expires_count());
#undef SEC
}

static void cmd_info(struct server *s, struct conn *c, const struct resp_args *a)
{
    struct rd_buf b = {0};
    char sec[32];
    if (a->n >= 2) {
        size_t n = RD_MIN(a->v[1].len, sizeof(sec) - 1);
        memcpy(sec, a->v[1].ptr, n);
        sec[n] = 0;
    }
    info_section(s, &b, a->n >= 2 ? sec : NULL);
    rd_info_lsns_xy(&b); /* LSNs as X/Y, as in the logs and redoubt-dump (common/metrics.h C21) */
    reply_bulk(c, b.data ? b.data : (const uint8_t *)"", b.len);
    rd_buf_free(&b);
}

static void cmd_role(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)a;
    s->ops->role_reply(s, c);
}

static void cmd_config(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (!arg_eq(&a->v[1], "get")) {
        if (arg_eq(&a->v[1], "resetstat") && a->n == 2) {
            memset(&s->stats, 0, sizeof(s->stats));
            reply_ok(c);
            return;
        }
        reply_err(c, "ERR CONFIG %.*s is not supported; Redoubt is configured by command-line flags",
                  (int)RD_MIN(a->v[1].len, 32), (const char *)a->v[1].ptr);
        return;
    }
    if (a->n != 3) {
        reply_err(c, "ERR wrong number of arguments for 'config|get' command");
        return;
    }
    char pat[256], v1[64], v2[64], v3[64];
    size_t n = RD_MIN(a->v[2].len, sizeof(pat) - 1);
    memcpy(pat, a->v[2].ptr, n);
    pat[n] = 0;
    snprintf(v1, sizeof(v1), "%d", s->cfg.port);
    snprintf(v2, sizeof(v2), "%zu", s->cfg.max_clients);
    snprintf(v3, sizeof(v3), "%zu", s->cfg.cache_mb * 1024u * 1024u);
    const char *params[][2] = {
        {"save", ""},
        {"appendonly", "no"},
        {"appendfsync", s->cfg.commit == SERVER_COMMIT_ASYNC ? "no" : "always"},
        {"port", v1},
        {"bind", s->cfg.bind_addr},
        {"dir", s->cfg.dir},
        {"databases", "1"},
        {"maxclients", v2},
        {"maxmemory", v3},
        {"synchronous_commit", s->cfg.commit == SERVER_COMMIT_ASYNC ? "off" : "local"},
    };
    size_t matches = 0;
    for (size_t i = 0; i < RD_ARRAY_LEN(params); i++)
        if (fnmatch(pat, params[i][0], FNM_CASEFOLD) == 0)
            matches++;
    reply_array(c, matches * 2);
    for (size_t i = 0; i < RD_ARRAY_LEN(params); i++)
        if (fnmatch(pat, params[i][0], FNM_CASEFOLD) == 0) {
            reply_cstr(c, params[i][0]);
            reply_cstr(c, params[i][1]);
        }
}

static void cmd_multi(struct server *s, struct conn *c, const struct resp_args *a);
static void cmd_exec(struct server *s, struct conn *c, const struct resp_args *a);
static void cmd_discard(struct server *s, struct conn *c, const struct resp_args *a);
static void cmd_command(struct server *s, struct conn *c, const struct resp_args *a);

static const struct cmd_def cmd_table[] = {
    {"ping", -1, CMD_NOAUTH | CMD_NOSTORAGE, cmd_ping, "connection", "Returns PONG, or the argument."},
    {"echo", 2, CMD_NOSTORAGE, cmd_echo, "connection", "Returns the given string."},
    {"quit", -1, CMD_NOAUTH | CMD_NOQUEUE | CMD_NOSTORAGE, cmd_quit, "connection", "Closes the connection."},
    {"auth", -2, CMD_NOAUTH | CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_auth, "connection", "Authenticates the connection (--requirepass)."},
    {"select", 2, CMD_NOSTORAGE, cmd_select, "connection", "Selects database 0 (the only one)."},
    {"client", -2, CMD_NOQUEUE | CMD_NOSTORAGE, cmd_client, "connection", "CLIENT ID|GETNAME|SETNAME|LIST|INFO|KILL|SETINFO: this and other connections."},
    {"hello", -1, CMD_NOAUTH | CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_hello, "connection", "Handshake: protocol 2 (RESP3 is refused), AUTH, SETNAME."},
    {"time", 1, CMD_NOSTORAGE, cmd_time, "server", "Returns the server's wall-clock time (seconds, microseconds)."},
    {"watch", -2, CMD_NOQUEUE | CMD_NOMULTI, cmd_watch, "transactions", "Watches keys: EXEC aborts if one changed (optimistic locking)."},
    {"unwatch", 1, CMD_NOQUEUE, cmd_unwatch, "transactions", "Forgets every watched key."},
    {"get", 2, 0, cmd_get, "string", "Returns the value of a key."},
    {"set", -3, CMD_WRITE, cmd_set, "string", "Sets a key's value [NX|XX] [GET] [EX|PX|EXAT|PXAT|KEEPTTL]; durable when answered."},
    {"setnx", 3, CMD_WRITE, cmd_setnx, "string", "Sets a key only if it does not exist."},
    {"setex", 4, CMD_WRITE, cmd_setex, "string", "Sets a key with a TTL in seconds."},
    {"psetex", 4, CMD_WRITE, cmd_psetex, "string", "Sets a key with a TTL in milliseconds."},
    {"getset", 3, CMD_WRITE, cmd_getset, "string", "Sets a key and returns its old value."},
    {"getdel", 2, CMD_WRITE, cmd_getdel, "string", "Returns a key's value and deletes it."},
    {"getex", -2, CMD_WRITE, cmd_getex, "string", "Returns a key's value and sets or removes its TTL."},
    {"append", 3, CMD_WRITE, cmd_append, "string", "Appends to a key's value; returns the new length."},
    {"incrbyfloat", 3, CMD_WRITE, cmd_incrbyfloat, "string", "Adds a floating-point number to a key's value."},
    {"msetnx", -3, CMD_WRITE, cmd_msetnx, "string", "Sets several keys only if none exists."},
    {"expire", -3, CMD_WRITE, cmd_expire, "generic", "Sets a key's TTL in seconds [NX|XX|GT|LT]."},
    {"pexpire", -3, CMD_WRITE, cmd_pexpire, "generic", "Sets a key's TTL in milliseconds [NX|XX|GT|LT]."},
    {"expireat", -3, CMD_WRITE, cmd_expireat, "generic", "Sets a key's expiry as a Unix time in seconds."},
    {"pexpireat", -3, CMD_WRITE, cmd_pexpireat, "generic", "Sets a key's expiry as a Unix time in milliseconds."},
    {"persist", 2, CMD_WRITE, cmd_persist, "generic", "Removes a key's TTL."},
    {"ttl", 2, 0, cmd_ttl, "generic", "Returns a key's remaining TTL in seconds."},
    {"pttl", 2, 0, cmd_pttl, "generic", "Returns a key's remaining TTL in milliseconds."},
    {"expiretime", 2, 0, cmd_expiretime, "generic", "Returns a key's expiry as a Unix time in seconds."},
    {"pexpiretime", 2, 0, cmd_pexpiretime, "generic", "Returns a key's expiry as a Unix time in milliseconds."},
    {"hset", -4, CMD_WRITE, cmd_hset, "hash", "Sets fields of a hash; returns how many were added."},
    {"hmset", -4, CMD_WRITE, cmd_hset, "hash", "Sets fields of a hash (old name of HSET)."},
    {"hsetnx", 4, CMD_WRITE, cmd_hsetnx, "hash", "Sets a hash field only if it does not exist."},
    {"hget", 3, 0, cmd_hget, "hash", "Returns a hash field's value."},
    {"hmget", -3, 0, cmd_hmget, "hash", "Returns the values of several hash fields."},
    {"hdel", -3, CMD_WRITE, cmd_hdel, "hash", "Deletes hash fields."},
    {"hgetall", 2, 0, cmd_hgetall, "hash", "Returns every field and value of a hash (insertion order)."},
    {"hkeys", 2, 0, cmd_hkeys, "hash", "Returns the fields of a hash."},
    {"hvals", 2, 0, cmd_hvals, "hash", "Returns the values of a hash."},
    {"hlen", 2, 0, cmd_hlen, "hash", "Returns the number of fields of a hash."},
    {"hexists", 3, 0, cmd_hexists, "hash", "Whether a hash field exists."},
    {"hincrby", 4, CMD_WRITE, cmd_hincrby, "hash", "Adds an integer to a hash field."},
    {"keys", 2, 0, cmd_keys, "generic", "Returns the keys matching a glob pattern (key order)."},
    {"eval", -3, CMD_WRITE, cmd_eval, "scripting", "Runs one of redis-py Lock's three scripts natively (no Lua)."},
    {"evalsha", -3, CMD_WRITE, cmd_eval, "scripting", "EVAL by script id (ids are not SHA1)."},
    {"script", -2, CMD_NOSTORAGE, cmd_script, "scripting", "SCRIPT LOAD|EXISTS|FLUSH for the Lock scripts."},
    {"flushdb", -1, CMD_WRITE | CMD_NOMULTI, cmd_flushdb, "server", "Deletes every key (transactions of 64 keys)."},
    {"flushall", -1, CMD_WRITE | CMD_NOMULTI, cmd_flushdb, "server", "Deletes every key (the same as FLUSHDB: one database)."},
    {"del", -2, CMD_WRITE, cmd_del, "generic", "Deletes keys; returns how many existed."},
    {"unlink", -2, CMD_WRITE, cmd_del, "generic", "Deletes keys (the same as DEL)."},
    {"exists", -2, 0, cmd_exists, "generic", "Counts the given keys that exist."},
    {"type", 2, 0, cmd_type, "generic", "Returns a key's type: string, hash or none."},
    {"strlen", 2, 0, cmd_strlen, "string", "Returns the length of a key's value."},
    {"incr", 2, CMD_WRITE, cmd_incr, "string", "Adds 1 to a key's integer value."},
    {"decr", 2, CMD_WRITE, cmd_decr, "string", "Subtracts 1 from a key's integer value."},
    {"incrby", 3, CMD_WRITE, cmd_incrby, "string", "Adds an integer to a key's value."},
    {"decrby", 3, CMD_WRITE, cmd_decrby, "string", "Subtracts an integer from a key's value."},
    {"mget", -2, 0, cmd_mget, "string", "Returns the values of several keys."},
    {"mset", -3, CMD_WRITE, cmd_mset, "string", "Sets several keys in one transaction."},
    {"scan", -2, 0, cmd_scan, "generic", "Iterates over keys in key order [MATCH] [COUNT] [TYPE]."},
    {"dbsize", 1, 0, cmd_dbsize, "server", "Returns the number of keys."},
    {"info", -1, CMD_NOSTORAGE, cmd_info, "server", "Server, clients, memory, persistence (WAL), stats, replication and keyspace fields; LSNs as X/Y."},
    {"redoubt.trace", -2, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_redoubt_trace, "redoubt", "REDOUBT.TRACE SAMPLE n|LAST|GET [id]|LSN|WATCH id lsn: commit traces (common/trace.h)."},
    {"role", 1, CMD_NOSTORAGE, cmd_role, "server", "The replication role, offsets and replicas (listening ports) or readers."},
    {"config", -2, CMD_NOSTORAGE, cmd_config, "server", "CONFIG GET pattern, CONFIG RESETSTAT (SET is refused: flags configure the process)."},
    {"wait", 3, CMD_NOMULTI | CMD_NOSTORAGE, cmd_wait, "generic", "Waits until N replicas acknowledged this connection's writes, or a timeout."},
    {"replicaof", 3, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_replicaof, "server", "REPLICAOF host port | NO ONE: follow a primary, or promote."},
    {"slaveof", 3, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_replicaof, "server", "The old name of REPLICAOF."},
    {"promote", 1, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_promote, "server", "Promotes a replica (PostgreSQL's pg_promote)."},
    {"redoubt.replicate", -1, CMD_NOQUEUE | CMD_NOMULTI, cmd_replicate, "redoubt", "Internal: a replica's WAL streaming handshake."},
    {"redoubt.reader", -2, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_reader, "redoubt", "Internal: an aurora reader subscribes to the writer's feed."},
    {"redoubt.fence", -1, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_fence, "redoubt", "Internal: the monitors fence an old writer (it refuses writes)."},
    {"redoubt.auth", 2, CMD_NOAUTH | CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_peer_auth, "redoubt", "Internal: peer authentication with the cluster secret."},
    {"redoubt.term", 2, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_term, "redoubt", "Internal: the failover leader raises the classic term."},
    {"redoubt.promote", 2, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_promote_term, "redoubt", "Internal: promotion under a term."},
    {"redoubt.lease", 3, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_lease, "redoubt", "Internal: a monitor renews the primary's lease."},
    {"multi", 1, CMD_NOQUEUE | CMD_NOMULTI, cmd_multi, "transactions", "Starts a transaction: commands are queued until EXEC."},
    {"exec", 1, CMD_NOQUEUE, cmd_exec, "transactions", "Runs the queued commands as one transaction (one commit record)."},
    {"discard", 1, CMD_NOQUEUE, cmd_discard, "transactions", "Drops the queued commands."},
    {"command", -1, CMD_NOSTORAGE, cmd_command, "server", "COMMAND [COUNT|INFO name...|DOCS [name...]|LIST]: this table."},
    {"shutdown", -1, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_shutdown, "server", "Checkpoints and stops the server."},
};

/* COMMAND DOCS entry of d (Redis 7's shape: name, then a map as a flat array). */
static void command_doc(struct conn *c, const struct cmd_def *d)
{
    char arity[16];
    reply_cstr(c, d->name);
    reply_array(c, 8);
    reply_cstr(c, "summary");
    reply_cstr(c, d->summary);
    reply_cstr(c, "since");
    reply_cstr(c, "0.1.0");
    reply_cstr(c, "group");
    reply_cstr(c, d->group);
    reply_cstr(c, "arity"); /* not in Redis's DOCS (it is in COMMAND INFO): N exact, -N at least N */
    snprintf(arity, sizeof(arity), "%d", d->arity);
    reply_cstr(c, arity);
}

/* COMMAND [COUNT | LIST | INFO [name...] | DOCS [name...]]: everything comes from
 * cmd_table, so the four answers always list the same commands. */
static void cmd_command(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s;
    size_t n = RD_ARRAY_LEN(cmd_table);
    if (a->n >= 2 && arg_eq(&a->v[1], "count")) {
        reply_int(c, (int64_t)n);
        return;
    }
    if (a->n >= 2 && arg_eq(&a->v[1], "list")) {
        reply_array(c, n);
        for (size_t i = 0; i < n; i++)
            reply_cstr(c, cmd_table[i].name);
        return;
    }
    if (a->n >= 2 && arg_eq(&a->v[1], "docs")) {
        if (a->n == 2) {
            reply_array(c, 2 * n);
            for (size_t i = 0; i < n; i++)
                command_doc(c, &cmd_table[i]);
            return;
        }
        size_t found = 0; /* unknown names are left out, as Redis does */
        for (size_t i = 2; i < a->n; i++)
            found += cmd_lookup(&a->v[i]) != NULL;
        reply_array(c, 2 * found);
        for (size_t i = 2; i < a->n; i++)
            if (cmd_lookup(&a->v[i]) != NULL)
                command_doc(c, cmd_lookup(&a->v[i]));
        return;
    }
    if (a->n >= 2 && !arg_eq(&a->v[1], "info")) {
        reply_err(c, "ERR unknown subcommand of COMMAND. Try COMMAND, COMMAND COUNT, COMMAND LIST, COMMAND INFO "
                     "name, COMMAND DOCS name.");
        return;
    }
    size_t first = a->n >= 3 ? 2 : 0;
    reply_array(c, a->n >= 3 ? a->n - 2 : n);
    for (size_t i = 0; i < (a->n >= 3 ? a->n - 2 : n); i++) {
        const struct cmd_def *d = a->n >= 3 ? cmd_lookup(&a->v[first + i]) : &cmd_table[i];
        if (d == NULL) {
            if (resp_null_array(&c->out) < 0)
                rd_panic("out of memory for a reply");
            continue;
        }
        int keyed = d->fn == cmd_get || d->fn == cmd_set || d->fn == cmd_del || d->fn == cmd_exists ||
                    d->fn == cmd_incr || d->fn == cmd_mget || d->fn == cmd_mset || d->fn == cmd_setnx;
        reply_array(c, 6);
        reply_cstr(c, d->name);
        reply_int(c, d->arity);
        reply_array(c, 1);
        if (resp_simple(&c->out, (d->flags & CMD_WRITE) ? "write" : "readonly") < 0)
            rd_panic("out of memory for a reply");
        reply_int(c, keyed ? 1 : 0);
        reply_int(c, keyed ? (d->arity < 0 ? -1 : 1) : 0);
        reply_int(c, keyed ? (d->fn == cmd_mset ? 2 : 1) : 0);
    }
}

static const struct cmd_def *cmd_lookup(const struct resp_arg *name)
{
    for (size_t i = 0; i < RD_ARRAY_LEN(cmd_table); i++)
        if (arg_eq(name, cmd_table[i].name))
            return &cmd_table[i];
    return NULL;
}

/* ------------------------------------------------------------ transactions */

static void cmd_multi(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s, (void)a;
    if (c->in_multi) {
        reply_err(c, "ERR MULTI calls can not be nested");
        return;
    }
    c->in_multi = 1;
    c->multi_dirty = 0;
    c->multi_count = 0;
    rd_buf_reset(&c->multi_q);
    reply_ok(c);
}

static void multi_reset(struct conn *c)
{
    c->in_multi = 0;
    c->multi_dirty = 0;
    c->multi_count = 0;
    rd_buf_reset(&c->multi_q);
    if (c->multi_q.cap > (1u << 20))
        rd_buf_free(&c->multi_q);
}

static void cmd_discard(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s, (void)a;
    if (!c->in_multi) {
        reply_err(c, "ERR DISCARD without MULTI");
        return;
    }
    multi_reset(c);
    unwatch_all(c);
    reply_ok(c);
}

static void multi_queue(struct server *s, struct conn *c, const struct resp_args *a)
{
    size_t bytes = 4;
    for (size_t i = 0; i < a->n; i++)
        bytes += 4 + a->v[i].len;
    if (c->multi_q.len + bytes > s->cfg.max_txn_bytes) {
        c->multi_dirty = 1;
        reply_err(c, "ERR transaction too large (the limit is %zu bytes)", s->cfg.max_txn_bytes);
        return;
    }
    uint8_t n4[4];
    rd_put_u32le(n4, (uint32_t)a->n);
    if (rd_buf_append(&c->multi_q, n4, 4) < 0)
        rd_panic("out of memory for MULTI");
    for (size_t i = 0; i < a->n; i++) {
        rd_put_u32le(n4, (uint32_t)a->v[i].len);
        if (rd_buf_append(&c->multi_q, n4, 4) < 0 || rd_buf_append(&c->multi_q, a->v[i].ptr, a->v[i].len) < 0)
            rd_panic("out of memory for MULTI");
    }
    c->multi_count++;
    if (resp_simple(&c->out, "QUEUED") < 0)
        rd_panic("out of memory for a reply");
}

/* The log the commit goes to: the local WAL, or aurora's redo stream. */
static uint64_t log_insert_lsn(const struct server *s) { return s->ops->insert_lsn(s); }

static void metrics_commit(uint64_t lsn);
static uint64_t txn_commit_if_changed(struct server *s, struct conn *c, uint64_t lsn_before)
{
    if (log_insert_lsn(s) == lsn_before)
        return s->last_commit_lsn; /* read-only: depends on the newest commit it could see */
    uint64_t lsn;
    int rc = s->ops->append_commit(s, ++s->next_txn_id, &lsn);
    if (rc < 0)
        rd_panic("could not append a commit record: %s", rd_strerror(rc));
    s->last_commit_lsn = lsn;
    server_suspend_no_park(s); /* committed: a command that goes on (FLUSHDB) can no longer be re-run */
    if (s->cfg.metrics_port)
        metrics_commit(lsn);
    if (c != NULL) /* NULL: the writer's own expiry deletes (cmd_tick) */
        c->last_write_lsn = lsn;
    s->stats.txns++;
    return lsn;
}

static void cmd_exec(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)a;
    if (!c->in_multi) {
        reply_err(c, "ERR EXEC without MULTI");
        return;
    }
    if (c->multi_dirty) {
        multi_reset(c);
        unwatch_all(c);
        reply_err(c, "EXECABORT Transaction discarded because of previous errors.");
        return;
    }
    if (watch_broken(s, c)) { /* optimistic locking: a watched key changed */
        multi_reset(c);
        unwatch_all(c);
        if (resp_null_array(&c->out) < 0)
            rd_panic("out of memory for a reply");
        conn_reply_done(s, c, s->last_commit_lsn);
        return;
    }
    struct resp_args q = {0};
    uint64_t before = log_insert_lsn(s);
    size_t out_mark = c->out.len;
    engine_txn_begin(s->engine);
    reply_array(c, c->multi_count);
    for (size_t off = 0; off < c->multi_q.len;) {
        uint32_t n = rd_get_u32le(c->multi_q.data + off);
        off += 4;
        q.n = 0;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t len = rd_get_u32le(c->multi_q.data + off);
            if (q.n == q.cap) {
                size_t cap = q.cap ? q.cap * 2 : 8;
                struct resp_arg *v = realloc(q.v, cap * sizeof(*v));
                if (v == NULL)
                    rd_panic("out of memory for EXEC");
                q.v = v;
                q.cap = cap;
            }
            q.v[q.n++] = (struct resp_arg){.ptr = c->multi_q.data + off + 4, .len = len};
            off += 4 + len;
        }
        const struct cmd_def *d = cmd_lookup(&q.v[0]);
        rd_assert(d != NULL); /* checked when queued */
        d->fn(s, c, &q);
        s->stats.commands++;
    }
    engine_txn_end(s->engine);
    free(q.v);
    if (server_suspend_undo(s, c, out_mark, log_insert_lsn(s) != before))
        return; /* a page miss before any change: parked with its queue; EXEC runs again (suspend.c) */
    multi_reset(c);
    unwatch_all(c);
    conn_reply_done(s, c, txn_commit_if_changed(s, c, before));
}

/* ------------------------------------------------------------ Prometheus metrics
 * --metrics-port N: GET /metrics through common/metrics.h, polled from cmd_tick
 * (every loop turn: a scrape waits at most one turn, <= 100 ms when idle). The body:
 *   redoubt_commit_latency_seconds  histogram: a commit record appended to the
 *       moment its reply may be released (durable at the commit level);
 *   redoubt_group_commit_size  histogram: commits per WAL flush (write + fdatasync);
 *   redoubt_role{role=...} 1, and every numeric INFO field as a gauge
 *       redoubt_<field> (WAL/redo bytes, LSNs, SCL/VCL/VDL, epoch, timeline, term,
 *       fenced, lag, connections, memory, ...);
 *   per replica / storage node / reader: redoubt_replica_<field>{replica="name"},
 *   redoubt_writer_storage_<field>{storage="addr"}, redoubt_reader_<field>{reader="name"}
 *   from INFO's list lines; redoubt_keyspace_keys{db="db0"}. */

#define COMMIT_RING 65536
static const double commit_le_s[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                     0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5, 5, 10};
static const double group_le[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
_Static_assert(RD_ARRAY_LEN(group_le) + 1 == WAL_GROUP_HIST, "one bucket per wal_stats.group_hist entry");
static struct {
    int started;
    struct rd_metrics ep;
    struct { uint64_t lsn, t_us; } ring[COMMIT_RING];
    size_t head, n;
    struct rd_metrics_hist commit;
    /* edges seen by metrics_poll (every loop turn): times fenced, times promoted */
    int was_fenced, was_follower;
    uint64_t fenced_total, promotions_total;
} met;

/* txn_commit_if_changed: a commit to time. */
static void metrics_commit(uint64_t lsn)
{
    if (met.n == COMMIT_RING) { /* full: the oldest is dropped (not measured) */
        met.head = (met.head + 1) % COMMIT_RING;
        met.n--;
    }
    size_t i = (met.head + met.n++) % COMMIT_RING;
    met.ring[i].lsn = lsn;
    met.ring[i].t_us = rd_now_us();
}

static void metrics_release(struct server *s)
{
    uint64_t now = rd_now_us();
    uint64_t rel = s->cfg.commit == SERVER_COMMIT_ASYNC ? UINT64_MAX : s->release_lsn;
    while (met.n > 0 && met.ring[met.head].lsn <= rel) {
        rd_metrics_hist_observe(&met.commit, (double)(now - met.ring[met.head].t_us) / 1e6);
        met.head = (met.head + 1) % COMMIT_RING;
        met.n--;
    }
}

static void info_section(struct server *s, struct rd_buf *b, const char *sec);

static void metrics_body(void *arg, struct rd_buf *out)
{
    struct server *s = arg;
    static const char *roles[] = {"standalone", "primary", "replica", "writer", "reader"};
    static const struct rd_metrics_list lists[] = {{"slave", "replica", "replica"},
                                                   {"storage", "writer_storage", "storage"},
                                                   {"reader", "reader", "reader"},
                                                   {"db", "keyspace", "db"}};
    rd_metrics_hist_write(out, "redoubt_commit_latency_seconds",
                          "commit record appended until its reply may be released at the commit level", &met.commit);
    struct rd_metrics_hist g;
    rd_metrics_hist_init(&g, group_le, RD_ARRAY_LEN(group_le));
    if (s->wal != NULL) {
        struct wal_stats ws;
        wal_get_stats(s->wal, &ws);
        for (size_t i = 0; i < WAL_GROUP_HIST; i++)
            g.bucket[i] = ws.group_hist[i], g.count += ws.group_hist[i];
        g.sum = (double)ws.group_hist_commits;
    }
    rd_metrics_hist_write(out, "redoubt_group_commit_size", "commits made durable by one WAL flush (write + fdatasync)",
                          &g);
    char lab[64];
    snprintf(lab, sizeof(lab), "role=\"%s\"", roles[s->role]);
    rd_metrics_counter(out, "redoubt_fencings_total", "times this process was fenced (REDOUBT.FENCE, a newer term "
                       "or volume epoch) since it started", (double)met.fenced_total);
    rd_metrics_counter(out, "redoubt_promotions_total", "times this process became the primary/writer since it started",
                       (double)met.promotions_total);
    rd_metrics_family(out, "redoubt_role", "gauge", "this process's role");
    rd_metrics_sample(out, "redoubt_role", lab, 1);
    struct rd_buf info = {0};
    info_section(s, &info, "all");
    rd_metrics_from_info(out, "redoubt_", (const char *)info.data, info.len, lists, RD_ARRAY_LEN(lists));
    rd_buf_free(&info);
}

static void metrics_poll(struct server *s)
{
    if (s->cfg.metrics_port == 0)
        return;
    if (!met.started) {
        met.started = 1;
        met.was_follower = server_is_follower(s);
        rd_metrics_init(&met.ep);
        rd_metrics_hist_init(&met.commit, commit_le_s, RD_ARRAY_LEN(commit_le_s));
        int rc = rd_metrics_listen(&met.ep, s->cfg.bind_addr, s->cfg.metrics_port);
        if (rc < 0)
            rd_error("metrics: could not listen on %s:%d: %s; no metrics endpoint", s->cfg.bind_addr,
                     s->cfg.metrics_port, rd_strerror(rc));
        else
            rd_info("metrics: Prometheus endpoint on http://%s:%d/metrics", s->cfg.bind_addr, s->cfg.metrics_port);
    }
    metrics_release(s);
    char why[200] = "";
    int follower = server_is_follower(s);
    int fenced = s->fenced || (!follower && !s->ops->may_write(s, why, sizeof(why)) && strstr(why, "fenced") != NULL);
    met.fenced_total += fenced && !met.was_fenced;
    met.promotions_total += met.was_follower && !follower;
    met.was_fenced = fenced, met.was_follower = follower;
    rd_metrics_poll(&met.ep, metrics_body, s);
}

/* ------------------------------------------------------------ the writer's expiry (X1, X3) */

#define EXP_BUILD_KEYS 2048  /* keys read per build step */
#define EXP_DELETE_MAX 256   /* expired keys deleted per transaction */

/* Whether this node may log changes of its own now (the gates cmd_execute applies to writes). */
static int node_writable(struct server *s)
{
    if (s->engine == NULL || s->shutdown_requested || s->fenced)
        return 0;
    char why[8];
    if (server_is_follower(s) || !s->ops->may_write(s, why, sizeof(why)) || s->ops->paused(s))
        return 0;
    unsigned renewed = 0;
    if (server_lease_required(s) && !server_lease_ok(s, &renewed))
        return 0;
    return 1;
}

struct exp_build_acc {
    struct rd_buf later; /* keys whose value is in an overflow chain: u32 len, bytes */
};

static int exp_build_collect(void *arg, const uint8_t *key, size_t key_len, const uint8_t *val, size_t val_len)
{
    struct exp_build_acc *acc = arg;
    if (val == NULL && val_len > 0) {
        uint8_t l[4];
        rd_put_u32le(l, (uint32_t)key_len);
        return rd_buf_append(&acc->later, l, 4) < 0 || rd_buf_append(&acc->later, key, key_len) < 0 ? -ENOMEM : 0;
    }
    struct engine_kv v;
    if (engine_kv_decode(val, val_len, &v) == 0 && v.expire_ms != 0)
        exp_note(key, key_len, v.expire_ms);
    return 0;
}

/* One step of the scan that fills the index after the node became writable. */
static void exp_build_step(struct server *s)
{
    struct exp_build_acc acc = {0};
    struct rd_buf next = {0};
    int rc = engine_scan(s->engine, expi.build_next.len ? expi.build_next.data : NULL, expi.build_next.len,
                         EXP_BUILD_KEYS, 0, exp_build_collect, &acc, &next);
    if (rc < 0) {
        if (rc != RD_EAGAIN) /* a page miss: requested; this step runs again next turn */
            rd_warn("expiry index: scan failed (%s); retrying", rd_strerror(rc));
        goto out;
    }
    for (size_t off = 0; off < acc.later.len;) {
        uint32_t kl = rd_get_u32le(acc.later.data + off);
        struct engine_kv v;
        int grc = engine_kv_get(s->engine, acc.later.data + off + 4, kl, 0, &scratch, &v, NULL);
        if (grc == RD_EAGAIN)
            goto out; /* a page miss: the whole step again next turn (build_next unchanged) */
        if (grc == 0)
            exp_note(acc.later.data + off + 4, kl, v.expire_ms);
        off += 4 + kl;
    }
    rd_buf_reset(&expi.build_next);
    if (next.len == 0) {
        expi.built = 1;
        rd_info("expiry index built: %zu keys with a TTL", expi.n);
    } else if (rd_buf_append(&expi.build_next, next.data, next.len) < 0) {
        rd_panic("out of memory for the expiry index");
    }
out:
    rd_buf_free(&acc.later);
    rd_buf_free(&next);
}

/* Deletes (logged) up to EXP_DELETE_MAX keys whose time has come, in one transaction. */
static void exp_cycle(struct server *s)
{
    uint64_t now = wall_ms();
    if (expi.n == 0 || expi.heap[0]->at > now)
        return;
    uint64_t before = log_insert_lsn(s);
    engine_txn_begin(s->engine);
    for (int i = 0; i < EXP_DELETE_MAX && expi.n > 0 && expi.heap[0]->at <= now; i++) {
        struct exp_ent *e = expi.heap[0];
        struct engine_kv v;
        int expired = 0;
        int rc = engine_kv_get(s->engine, e->key, e->klen, now, &scratch, &v, &expired);
        if (rc == 0 || (rc == RD_ENOTFOUND && !expired)) { /* not expired (or gone): the index was stale */
            exp_note(e->key, e->klen, rc == 0 ? v.expire_ms : 0);
            continue;
        }
        if (rc != RD_ENOTFOUND) {
            if (rc != RD_EAGAIN) /* a page miss: requested; the next cycle finds it */
                rd_warn("expiry: could not read a key (%s); trying again later", rd_strerror(rc));
            break;
        }
        if (kv_delete(s, NULL, e->key, e->klen, "expiry") < 0) /* removes e from the index */
            break;
        expi.expired_total++;
    }
    engine_txn_end(s->engine);
    txn_commit_if_changed(s, NULL, before);
}

void cmd_tick(struct server *s)
{
    metrics_poll(s);
    if (!node_writable(s)) {
        if (expi.active)
            exp_reset();
        return;
    }
    expi.active = 1;
    uint64_t now = rd_now_ms();
    if (!expi.built && now - expi.build_ms >= 2) {
        expi.build_ms = now;
        server_suspend_background(s, 1); /* a page miss skips this step: retried next turn (suspend.c) */
        exp_build_step(s);
        server_suspend_background(s, 0);
    }
    server_suspend_background(s, 1);
    exp_cycle(s);
    server_suspend_background(s, 0);
}


/* ------------------------------------------------------------ dispatch */

void cmd_execute(struct server *s, struct conn *c, const struct resp_args *a)
{
    const struct cmd_def *d = cmd_lookup(&a->v[0]);
    s->stats.commands++;
    c->last_cmd_ms = rd_now_ms();
    if (!c->peer_authed && cmd_is_admin(a)) {
        char what[80];
        snprintf(what, sizeof(what), "%.*s", (int)RD_MIN(a->v[0].len, 40), (const char *)a->v[0].ptr);
        conn_require_peer(s, c, what);
        return;
    }
    if (d == NULL) {
        char args[200];
        size_t off = 0;
        for (size_t i = 1; i < a->n && off < 120; i++) {
            int n = snprintf(args + off, sizeof(args) - off, "'%.*s' ", (int)RD_MIN(a->v[i].len, 40),
                             (const char *)a->v[i].ptr);
            if (n < 0)
                break;
            off += (size_t)n;
        }
        args[RD_MIN(off, sizeof(args) - 1)] = 0;
        reply_err(c, "ERR unknown command '%.*s', with args beginning with: %s",
                  (int)RD_MIN(a->v[0].len, 64), (const char *)a->v[0].ptr, args);
        if (c->in_multi)
            c->multi_dirty = 1;
        conn_reply_done(s, c, 0);
        return;
    }
    if ((d->arity > 0 && a->n != (size_t)d->arity) || (d->arity < 0 && a->n < (size_t)-d->arity)) {
        reply_err(c, "ERR wrong number of arguments for '%s' command", d->name);
        if (c->in_multi)
            c->multi_dirty = 1;
        conn_reply_done(s, c, 0);
        return;
    }
    if (!c->authed && !(d->flags & CMD_NOAUTH)) {
        reply_err(c, "NOAUTH Authentication required.");
        conn_reply_done(s, c, 0);
        return;
    }
    /* A fenced or lease-less writer may have been replaced: it refuses writes, and reads of data
     * too (LS4: a deposed writer serving its last state would break linearizable reads). */
    int data_cmd = ((d->flags & CMD_WRITE) || !(d->flags & CMD_NOSTORAGE)) && d->fn != cmd_replicate &&
                   d->fn != cmd_reader; /* a replica or reader subscribing reads no user data */
    if (s->fenced && data_cmd) {
        reply_err(c, "READONLY this node was fenced (%s): a newer primary exists", s->fenced_by);
        if (c->in_multi)
            c->multi_dirty = 1;
        conn_reply_done(s, c, 0);
        return;
    }
    if (data_cmd && server_lease_required(s)) {
        unsigned renewed = 0;
        if (!server_lease_ok(s, &renewed)) {
            reply_err(c, "NOLEASE this %s holds no lease: %u of %u monitors renewed it within %llu ms (it may "
                         "have been replaced); reads and writes are refused",
                      s->role == SERVER_ROLE_WRITER ? "writer" : "primary", renewed, s->cfg.lease_monitors,
                      (unsigned long long)s->cfg.lease_ms);
            if (c->in_multi)
                c->multi_dirty = 1;
            conn_reply_done(s, c, 0);
            return;
        }
    }
    char role_err[256];
    if ((d->flags & CMD_WRITE) && !s->ops->may_write(s, role_err, sizeof(role_err))) {
        reply_err(c, "%s", role_err);
        conn_reply_done(s, c, 0);
        return;
    }
    if (server_is_follower(s) && (d->flags & CMD_WRITE)) {
        reply_err(c, "READONLY You can't write against a read only replica.");
        if (c->in_multi)
            c->multi_dirty = 1;
        conn_reply_done(s, c, 0);
        return;
    }
    if (!(d->flags & CMD_NOSTORAGE) &&
        (s->engine == NULL || !s->ops->readable(s))) {
        reply_err(c, "LOADING this replica is cloning from its primary or has not replayed up to a consistent "
                     "point yet");
        conn_reply_done(s, c, 0);
        return;
    }
    if (c->in_multi && (d->flags & CMD_NOMULTI)) {
        reply_err(c, "ERR Command not allowed inside a transaction");
        c->multi_dirty = 1;
        conn_reply_done(s, c, 0);
        return;
    }
    if (c->in_multi && !(d->flags & CMD_NOQUEUE)) {
        multi_queue(s, c, a);
        conn_reply_done(s, c, 0);
        return;
    }
    if (d->fn == cmd_exec) {
        cmd_exec(s, c, a);
        return;
    }
    if (d->flags & CMD_WRITE) {
        s->stats.write_commands++;
        uint64_t before = log_insert_lsn(s), t_recv_us = server_trace_now();
        size_t out_mark = c->out.len;
        engine_txn_begin(s->engine);
        d->fn(s, c, a);
        engine_txn_end(s->engine);
        if (server_suspend_undo(s, c, out_mark, log_insert_lsn(s) != before))
            return; /* a page miss changed nothing (E16): parked, runs again (suspend.c) */
        uint64_t commit_lsn = txn_commit_if_changed(s, c, before);
        server_trace_write(s, before, commit_lsn, t_recv_us); /* issue 13: commit trace */
        conn_reply_done(s, c, commit_lsn);
        return;
    }
    s->stats.read_commands++;
    size_t out_mark = c->out.len;
    d->fn(s, c, a);
    if (server_suspend_undo(s, c, out_mark, 0))
        return; /* a page miss: parked, runs again (suspend.c) */
    if (c->kind != CONN_CLIENT || c->wait_active)
        return; /* became a walsender (frames follow, never held back) / blocked in WAIT */
    /* A read reflects every commit appended so far: it waits for the newest.
     * Commands that read no data (PING, INFO, ROLE, CONFIG ...) answer at once,
     * so a stalled quorum or sync replica can still be observed. */
    conn_reply_done(s, c, (d->flags & CMD_NOSTORAGE) ? 0 : s->last_commit_lsn);
}
