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
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "server/server_int.h"

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
    if (v->len > ENGINE_VALUE_MAX) {
        reply_err(c, "ERR value too large (%zu bytes; the limit is %u)", v->len, ENGINE_VALUE_MAX);
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
        rd_warn("%s failed before changing anything: %s (answered as an error)", what, rd_strerror(rc));
        reply_err(c, "ERR write failed, nothing changed: %s", rd_strerror(rc));
        return;
    }
    rd_panic("%s failed inside a transaction: %s; stopping (recovery restores the last commit)",
             what, rd_strerror(rc));
}

static struct rd_buf scratch; /* value buffer reused by reads (single thread) */

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

static void cmd_client(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s;
    if (arg_eq(&a->v[1], "setname") && a->n == 3)
        reply_ok(c);
    else if (arg_eq(&a->v[1], "id") && a->n == 2)
        reply_int(c, (int64_t)c->id);
    else if (arg_eq(&a->v[1], "setinfo"))
        reply_ok(c);
    else
        reply_err(c, "ERR unknown subcommand '%.*s'. Redoubt supports CLIENT SETNAME|ID|SETINFO.",
                  (int)RD_MIN(a->v[1].len, 64), (const char *)a->v[1].ptr);
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
    if (s->role == SERVER_ROLE_REPLICA) {
        reply_err(c, "ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if "
                     "a replica is configured to be writable (which is not the default) writes to replicas are "
                     "just local and are not propagated.");
        return;
    }
    size_t have = repl_count_acked(s, c->last_write_lsn);
    if ((int64_t)have >= n || s->role != SERVER_ROLE_PRIMARY) {
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

static void cmd_replicate(struct server *s, struct conn *c, const struct resp_args *a)
{
    repl_cmd_replicate(s, c, a);
    if (c->kind == CONN_WALSENDER && conn_make_peer(s, c) < 0)
        conn_close(s, c);
}

/* REPLICAOF host port | REPLICAOF NO ONE (promote). */
static void cmd_replicaof(struct server *s, struct conn *c, const struct resp_args *a)
{
    char err[512];
    if (arg_eq(&a->v[1], "no") && arg_eq(&a->v[2], "one")) {
        if (s->role == SERVER_ROLE_READER) {
            if (aurora_promote(s, err, sizeof(err)) < 0)
                reply_err(c, "%s", err);
            else
                reply_ok(c);
            return;
        }
        if (s->role != SERVER_ROLE_REPLICA) {
            reply_ok(c); /* already a primary: Redis answers OK too */
            return;
        }
        int rc = repl_promote(s, c, 0, err, sizeof(err));
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
    int rc = server_is_aurora(s) ? aurora_repoint(s, host, (int)port, err, sizeof(err))
                                 : repl_repoint(s, host, (int)port, err, sizeof(err));
    if (rc < 0)
        reply_err(c, "%s", err);
    else
        reply_ok(c);
}

static void cmd_promote(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)a;
    char err[512];
    if (s->role == SERVER_ROLE_READER) {
        if (aurora_promote(s, err, sizeof(err)) < 0)
            reply_err(c, "%s", err);
        else
            reply_ok(c);
        return;
    }
    int rc = repl_promote(s, c, 0, err, sizeof(err));
    if (rc < 0)
        reply_err(c, "%s", err);
    else if (rc == 0)
        reply_ok(c);
}

/* REDOUBT.FENCE [reason]: the monitor tells a primary/writer that a newer one
 * exists; from then on every write is refused (reads still work). */
static void cmd_fence(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (s->role == SERVER_ROLE_REPLICA || s->role == SERVER_ROLE_READER) {
        reply_err(c, "ERR only a primary or writer can be fenced");
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

/* REDOUBT.TERM t / REDOUBT.PROMOTE t: classic fencing by terms (replica/README.md T1-T6). */
static void cmd_term(struct server *s, struct conn *c, const struct resp_args *a) { repl_cmd_term(s, c, a); }
static void cmd_promote_term(struct server *s, struct conn *c, const struct resp_args *a)
{
    repl_cmd_promote_term(s, c, a);
}

/* REDOUBT.LEASE monitor-id monitor-monotonic-ms: a monitor renews this primary's lease (L1). */
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

static void cmd_reader(struct server *s, struct conn *c, const struct resp_args *a)
{
    aurora_cmd_reader(s, c, a);
    if (c->kind == CONN_READER_FEED && conn_make_peer(s, c) < 0)
        conn_close(s, c);
}

/* ------------------------------------------------------------ keys */

static void cmd_get(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (check_key(c, &a->v[1]) < 0)
        return;
    rd_buf_reset(&scratch);
    int rc = engine_get(s->engine, a->v[1].ptr, a->v[1].len, &scratch);
    if (rc == RD_ENOTFOUND)
        reply_null(c);
    else if (rc < 0)
        reply_err(c, "ERR read failed: %s", rd_strerror(rc));
    else
        reply_bulk(c, scratch.data, scratch.len);
}

static void cmd_type(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (check_key(c, &a->v[1]) < 0)
        return;
    int rc = engine_exists(s->engine, a->v[1].ptr, a->v[1].len);
    if (rc < 0)
        reply_err(c, "ERR read failed: %s", rd_strerror(rc));
    else if (resp_simple(&c->out, rc ? "string" : "none") < 0)
        rd_panic("out of memory for a reply");
}

static void cmd_strlen(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (check_key(c, &a->v[1]) < 0)
        return;
    rd_buf_reset(&scratch);
    int rc = engine_get(s->engine, a->v[1].ptr, a->v[1].len, &scratch);
    if (rc == RD_ENOTFOUND)
        reply_int(c, 0);
    else if (rc < 0)
        reply_err(c, "ERR read failed: %s", rd_strerror(rc));
    else
        reply_int(c, (int64_t)scratch.len);
}

static void cmd_set(struct server *s, struct conn *c, const struct resp_args *a)
{
    int nx = 0, xx = 0, get = 0;
    for (size_t i = 3; i < a->n; i++) {
        if (arg_eq(&a->v[i], "nx"))
            nx = 1;
        else if (arg_eq(&a->v[i], "xx"))
            xx = 1;
        else if (arg_eq(&a->v[i], "get"))
            get = 1;
        else if (arg_eq(&a->v[i], "keepttl"))
            ; /* keys never expire, so keeping the TTL is what happens anyway */
        else if (arg_eq(&a->v[i], "ex") || arg_eq(&a->v[i], "px") || arg_eq(&a->v[i], "exat") ||
                 arg_eq(&a->v[i], "pxat")) {
            reply_err(c, "ERR SET %.*s is not supported: keys in Redoubt do not expire",
                      (int)a->v[i].len, (const char *)a->v[i].ptr);
            return;
        } else {
            reply_err(c, "ERR syntax error");
            return;
        }
    }
    if (nx && xx) {
        reply_err(c, "ERR syntax error");
        return;
    }
    if (check_key(c, &a->v[1]) < 0 || check_value(c, &a->v[2]) < 0)
        return;
    int exists = 1;
    if (nx || xx || get) {
        rd_buf_reset(&scratch);
        int rc = engine_get(s->engine, a->v[1].ptr, a->v[1].len, &scratch);
        if (rc < 0 && rc != RD_ENOTFOUND) {
            reply_err(c, "ERR read failed: %s", rd_strerror(rc));
            return;
        }
        exists = rc == 0;
    }
    int do_set = !(nx && exists) && !(xx && !exists);
    if (do_set) {
        int rc = engine_put(s->engine, a->v[1].ptr, a->v[1].len, a->v[2].ptr, a->v[2].len);
        if (rc < 0) {
            write_failed(s, c, "SET", rc);
            return;
        }
    }
    if (get) {
        if (exists)
            reply_bulk(c, scratch.data, scratch.len);
        else
            reply_null(c);
    } else if (do_set) {
        reply_ok(c);
    } else {
        reply_null(c);
    }
}

static void cmd_setnx(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (check_key(c, &a->v[1]) < 0 || check_value(c, &a->v[2]) < 0)
        return;
    int rc = engine_exists(s->engine, a->v[1].ptr, a->v[1].len);
    if (rc < 0) {
        reply_err(c, "ERR read failed: %s", rd_strerror(rc));
        return;
    }
    if (rc == 1) {
        reply_int(c, 0);
        return;
    }
    rc = engine_put(s->engine, a->v[1].ptr, a->v[1].len, a->v[2].ptr, a->v[2].len);
    if (rc < 0) {
        write_failed(s, c, "SETNX", rc);
        return;
    }
    reply_int(c, 1);
}

static void cmd_del(struct server *s, struct conn *c, const struct resp_args *a)
{
    for (size_t i = 1; i < a->n; i++)
        if (check_key(c, &a->v[i]) < 0)
            return;
    int64_t n = 0;
    for (size_t i = 1; i < a->n; i++) {
        int rc = engine_delete(s->engine, a->v[i].ptr, a->v[i].len);
        if (rc == 0)
            n++;
        else if (rc != RD_ENOTFOUND) {
            write_failed(s, c, "DEL", rc);
            return;
        }
    }
    reply_int(c, n);
}

static void cmd_exists(struct server *s, struct conn *c, const struct resp_args *a)
{
    int64_t n = 0;
    for (size_t i = 1; i < a->n; i++) {
        if (a->v[i].len == 0 || a->v[i].len > ENGINE_KEY_MAX)
            continue;
        int rc = engine_exists(s->engine, a->v[i].ptr, a->v[i].len);
        if (rc < 0) {
            reply_err(c, "ERR read failed: %s", rd_strerror(rc));
            return;
        }
        n += rc;
    }
    reply_int(c, n);
}

static void incr_by(struct server *s, struct conn *c, const struct resp_arg *key, int64_t by)
{
    if (check_key(c, key) < 0)
        return;
    rd_buf_reset(&scratch);
    int rc = engine_get(s->engine, key->ptr, key->len, &scratch);
    int64_t v = 0;
    if (rc == 0) {
        struct resp_arg cur = {.ptr = scratch.data, .len = scratch.len};
        if (arg_int64(&cur, &v) < 0) {
            reply_err(c, "ERR value is not an integer or out of range");
            return;
        }
    } else if (rc != RD_ENOTFOUND) {
        reply_err(c, "ERR read failed: %s", rd_strerror(rc));
        return;
    }
    if ((by > 0 && v > INT64_MAX - by) || (by < 0 && v < INT64_MIN - by)) {
        reply_err(c, "ERR increment or decrement would overflow");
        return;
    }
    v += by;
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);
    rc = engine_put(s->engine, key->ptr, key->len, (const uint8_t *)tmp, (size_t)n);
    if (rc < 0) {
        write_failed(s, c, "INCR", rc);
        return;
    }
    reply_int(c, v);
}

static void cmd_incr(struct server *s, struct conn *c, const struct resp_args *a)
{
    incr_by(s, c, &a->v[1], 1);
}

static void cmd_decr(struct server *s, struct conn *c, const struct resp_args *a)
{
    incr_by(s, c, &a->v[1], -1);
}

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

static void cmd_mget(struct server *s, struct conn *c, const struct resp_args *a)
{
    size_t start = c->out.len; /* a read error replaces the partial array */
    reply_array(c, a->n - 1);
    for (size_t i = 1; i < a->n; i++) {
        if (a->v[i].len == 0 || a->v[i].len > ENGINE_KEY_MAX) {
            reply_null(c);
            continue;
        }
        rd_buf_reset(&scratch);
        int rc = engine_get(s->engine, a->v[i].ptr, a->v[i].len, &scratch);
        if (rc == 0) {
            reply_bulk(c, scratch.data, scratch.len);
        } else if (rc == RD_ENOTFOUND) {
            reply_null(c);
        } else { /* as GET: a key that could not be read is an error, never nil (logged by the engine) */
            c->out.len = start;
            reply_err(c, "ERR read failed: %s", rd_strerror(rc));
            return;
        }
    }
}

static void cmd_mset(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (a->n % 2 != 1) {
        reply_err(c, "ERR wrong number of arguments for 'mset' command");
        return;
    }
    size_t total = 0;
    for (size_t i = 1; i < a->n; i += 2) {
        if (check_key(c, &a->v[i]) < 0 || check_value(c, &a->v[i + 1]) < 0)
            return;
        total += a->v[i].len + a->v[i + 1].len;
    }
    if (total > s->cfg.max_txn_bytes) {
        reply_err(c, "ERR transaction too large (%zu bytes; the limit is %zu)", total,
                  s->cfg.max_txn_bytes);
        return;
    }
    for (size_t i = 1; i < a->n; i += 2) {
        int rc = engine_put(s->engine, a->v[i].ptr, a->v[i].len, a->v[i + 1].ptr, a->v[i + 1].len);
        if (rc < 0) {
            write_failed(s, c, "MSET", rc);
            return;
        }
    }
    reply_ok(c);
}

static void cmd_dbsize(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)a;
    reply_int(c, (int64_t)engine_key_count(s->engine));
}

/* SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]. Keys are visited in key
 * order; the cursor is a server-side handle on the next key (a table of
 * SERVER_SCAN_CURSORS, least recently used replaced): an expired cursor gets
 * an error, a full iteration from 0 returns every key present throughout. */
struct scan_acc {
    struct rd_buf keys; /* u32 len + bytes, repeated */
    size_t n;
    const char *pattern;
};

static int scan_collect(void *arg, const uint8_t *key, size_t key_len, const uint8_t *val, size_t val_len)
{
    (void)val, (void)val_len;
    struct scan_acc *acc = arg;
    if (acc->pattern) {
        char tmp[ENGINE_KEY_MAX + 1];
        memcpy(tmp, key, key_len);
        tmp[key_len] = 0;
        if (fnmatch(acc->pattern, tmp, 0) != 0)
            return 0;
    }
    uint8_t len[4];
    rd_put_u32le(len, (uint32_t)key_len);
    if (rd_buf_append(&acc->keys, len, 4) < 0 || rd_buf_append(&acc->keys, key, key_len) < 0)
        return -ENOMEM;
    acc->n++;
    return 0;
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
            ; /* every key is a string */
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
    struct scan_acc acc = {.pattern = pat};
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
    reply_array(c, acc.n);
    for (size_t off = 0; off < acc.keys.len;) {
        uint32_t n = rd_get_u32le(acc.keys.data + off);
        reply_bulk(c, acc.keys.data + off + 4, n);
        off += 4 + n;
    }
out:
    rd_buf_free(&acc.keys);
    rd_buf_free(&next);
}

/* ------------------------------------------------------------ introspection */

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
        rd_buf_appendf(b, "# Clients\r\nconnected_clients:%zu\r\nmaxclients:%zu\r\n\r\n", s->nconns,
                       s->cfg.max_clients);
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
                       s->stats.net_in_bytes, s->stats.net_out_bytes, s->loop.turns);
    if (SEC("replication")) {
        if (server_is_aurora(s))
            aurora_info(s, b);
        else
            repl_info(s, b);
    }
    if (SEC("keyspace") && s->engine)
        rd_buf_appendf(b, "# Keyspace\r\ndb0:keys=%" PRIu64 ",expires=0,avg_ttl=0\r\n\r\n",
                       engine_key_count(s->engine));
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
    reply_bulk(c, b.data ? b.data : (const uint8_t *)"", b.len);
    rd_buf_free(&b);
}

static void cmd_role(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)a;
    if (s->role == SERVER_ROLE_WRITER) {
        reply_array(c, 3);
        reply_cstr(c, "master");
        reply_int(c, (int64_t)s->aur.q.vdl);
        reply_array(c, 0);
        return;
    }
    if (s->role == SERVER_ROLE_READER) {
        reply_array(c, 5);
        reply_cstr(c, "slave");
        reply_cstr(c, s->aur.writer_host);
        reply_int(c, s->aur.writer_port);
        reply_cstr(c, s->aur.feed_conn ? "connected" : "connecting");
        reply_int(c, (int64_t)s->aur.read_lsn);
        return;
    }
    repl_role_reply(s, c);
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
    {"ping", -1, CMD_NOAUTH | CMD_NOSTORAGE, cmd_ping},
    {"echo", 2, CMD_NOSTORAGE, cmd_echo},
    {"quit", -1, CMD_NOAUTH | CMD_NOQUEUE | CMD_NOSTORAGE, cmd_quit},
    {"auth", -2, CMD_NOAUTH | CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_auth},
    {"select", 2, CMD_NOSTORAGE, cmd_select},
    {"client", -2, CMD_NOQUEUE | CMD_NOSTORAGE, cmd_client},
    {"get", 2, 0, cmd_get},
    {"set", -3, CMD_WRITE, cmd_set},
    {"setnx", 3, CMD_WRITE, cmd_setnx},
    {"del", -2, CMD_WRITE, cmd_del},
    {"unlink", -2, CMD_WRITE, cmd_del},
    {"exists", -2, 0, cmd_exists},
    {"type", 2, 0, cmd_type},
    {"strlen", 2, 0, cmd_strlen},
    {"incr", 2, CMD_WRITE, cmd_incr},
    {"decr", 2, CMD_WRITE, cmd_decr},
    {"incrby", 3, CMD_WRITE, cmd_incrby},
    {"decrby", 3, CMD_WRITE, cmd_decrby},
    {"mget", -2, 0, cmd_mget},
    {"mset", -3, CMD_WRITE, cmd_mset},
    {"scan", -2, 0, cmd_scan},
    {"dbsize", 1, 0, cmd_dbsize},
    {"info", -1, CMD_NOSTORAGE, cmd_info},
    {"role", 1, CMD_NOSTORAGE, cmd_role},
    {"config", -2, CMD_NOSTORAGE, cmd_config},
    {"wait", 3, CMD_NOMULTI | CMD_NOSTORAGE, cmd_wait},
    {"replicaof", 3, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_replicaof},
    {"slaveof", 3, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_replicaof},
    {"promote", 1, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_promote},
    {"redoubt.replicate", -1, CMD_NOQUEUE | CMD_NOMULTI, cmd_replicate},
    {"redoubt.reader", 2, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_reader},
    {"redoubt.fence", -1, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_fence},
    {"redoubt.auth", 2, CMD_NOAUTH | CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_peer_auth},
    {"redoubt.term", 2, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_term},
    {"redoubt.promote", 2, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_promote_term},
    {"redoubt.lease", 3, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_lease},
    {"multi", 1, CMD_NOQUEUE | CMD_NOMULTI, cmd_multi},
    {"exec", 1, CMD_NOQUEUE, cmd_exec},
    {"discard", 1, CMD_NOQUEUE, cmd_discard},
    {"command", -1, CMD_NOSTORAGE, cmd_command},
    {"shutdown", -1, CMD_NOQUEUE | CMD_NOMULTI | CMD_NOSTORAGE, cmd_shutdown},
};

static void cmd_command(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s;
    size_t n = RD_ARRAY_LEN(cmd_table);
    if (a->n >= 2 && arg_eq(&a->v[1], "count")) {
        reply_int(c, (int64_t)n);
        return;
    }
    if (a->n >= 2 && arg_eq(&a->v[1], "docs")) {
        reply_array(c, 0); /* redis-cli asks for docs at start-up; it copes with none */
        return;
    }
    if (a->n >= 2 && !arg_eq(&a->v[1], "info")) {
        reply_err(c, "ERR unknown subcommand of COMMAND. Try COMMAND, COMMAND COUNT, COMMAND INFO name.");
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
static uint64_t log_insert_lsn(const struct server *s)
{
    return s->role == SERVER_ROLE_WRITER ? aurora_insert_lsn(s) : wal_insert_lsn(s->wal);
}

static uint64_t txn_commit_if_changed(struct server *s, struct conn *c, uint64_t lsn_before)
{
    if (log_insert_lsn(s) == lsn_before)
        return s->last_commit_lsn; /* read-only: depends on the newest commit it could see */
    uint64_t lsn;
    int rc = s->role == SERVER_ROLE_WRITER ? aurora_append_commit(s, ++s->next_txn_id, &lsn)
                                           : wal_append_commit(s->wal, ++s->next_txn_id, &lsn);
    if (rc < 0)
        rd_panic("could not append a commit record: %s", rd_strerror(rc));
    s->last_commit_lsn = lsn;
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
        reply_err(c, "EXECABORT Transaction discarded because of previous errors.");
        return;
    }
    struct resp_args q = {0};
    uint64_t before = log_insert_lsn(s);
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
    multi_reset(c);
    conn_reply_done(s, c, txn_commit_if_changed(s, c, before));
}

/* ------------------------------------------------------------ dispatch */

void cmd_execute(struct server *s, struct conn *c, const struct resp_args *a)
{
    const struct cmd_def *d = cmd_lookup(&a->v[0]);
    s->stats.commands++;
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
    if (s->fenced && (d->flags & CMD_WRITE)) {
        reply_err(c, "READONLY this node was fenced (%s): a newer primary exists", s->fenced_by);
        conn_reply_done(s, c, 0);
        return;
    }
    if ((d->flags & CMD_WRITE) && server_lease_required(s)) {
        unsigned renewed = 0;
        if (!server_lease_ok(s, &renewed)) {
            reply_err(c, "NOLEASE this primary holds no lease: %u of %u monitors renewed it within %llu ms (it may "
                         "have been replaced); writes are refused",
                      renewed, s->cfg.lease_monitors, (unsigned long long)s->cfg.lease_ms);
            if (c->in_multi)
                c->multi_dirty = 1;
            conn_reply_done(s, c, 0);
            return;
        }
    }
    if (s->role == SERVER_ROLE_WRITER && s->aur.fenced && (d->flags & CMD_WRITE)) {
        reply_err(c, "ERR this writer was fenced: a newer writer holds a higher volume epoch, no write can be "
                     "acknowledged here");
        conn_reply_done(s, c, 0);
        return;
    }
    if ((s->role == SERVER_ROLE_REPLICA || s->role == SERVER_ROLE_READER) && (d->flags & CMD_WRITE)) {
        reply_err(c, "READONLY You can't write against a read only replica.");
        if (c->in_multi)
            c->multi_dirty = 1;
        conn_reply_done(s, c, 0);
        return;
    }
    if (!(d->flags & CMD_NOSTORAGE) &&
        (s->engine == NULL || (s->role == SERVER_ROLE_REPLICA && !repl_replica_readable(s)))) {
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
        uint64_t before = log_insert_lsn(s);
        engine_txn_begin(s->engine);
        d->fn(s, c, a);
        engine_txn_end(s->engine);
        conn_reply_done(s, c, txn_commit_if_changed(s, c, before));
        return;
    }
    s->stats.read_commands++;
    d->fn(s, c, a);
    if (c->kind != CONN_CLIENT || c->wait_active)
        return; /* became a walsender (frames follow, never held back) / blocked in WAIT */
    /* A read reflects every commit appended so far: it waits for the newest.
     * Commands that read no data (PING, INFO, ROLE, CONFIG ...) answer at once,
     * so a stalled quorum or sync replica can still be observed. */
    conn_reply_done(s, c, (d->flags & CMD_NOSTORAGE) ? 0 : s->last_commit_lsn);
}
