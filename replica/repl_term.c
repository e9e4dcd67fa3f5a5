/*
 * repl_term.c — terms: the fence before a classic promotion (replica/README.md T1-T6).
 * Part of the classic wing (replica/); see repl.c's header for the whole picture.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/util.h"
#include "replica/proto.h"
#include "server/server_int.h"
#include "replica/repl_int.h"

/* ================================================================ terms (replica/README.md T1-T6) */

void repl_term_save(struct server *s, uint64_t term, const char *why)
{
    rd_assert(term > repl_of(s)->term && term <= REPL_TERM_MAX);
    uint8_t f[REPL_TERM_FILE_BYTES];
    repl_term_encode(f, term);
    int rc = rd_write_file_atomic(s->cfg.dir, "term", f, sizeof(f));
    if (rc < 0) /* T1: a term is acted on only once it is durable; never retried */
        rd_panic("could not write \"%s/term\": %s", s->cfg.dir, rd_strerror(rc));
    rd_info("term %" PRIu64 " -> %" PRIu64 " (%s)", repl_of(s)->term, term, why);
    repl_of(s)->term = term;
}

int repl_term_load(struct server *s)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/term", s->cfg.dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            repl_of(s)->term = 0;
            return 0;
        }
        rd_error("could not open \"%s\": %s", path, strerror(errno));
        return -1;
    }
    uint8_t buf[REPL_TERM_FILE_BYTES + 1];
    ssize_t n = read(fd, buf, sizeof(buf));
    int err = errno;
    if (close(fd) < 0)
        rd_warn("close of \"%s\" failed: %s", path, strerror(errno));
    if (n < 0) {
        rd_error("could not read \"%s\": %s", path, strerror(err));
        return -1;
    }
    if (repl_term_decode(buf, (size_t)n, &repl_of(s)->term) < 0) {
        rd_error("\"%s\" is corrupt (%zd bytes; bad magic, version, length or checksum): refusing to start, "
                 "since a forgotten term could let a replaced primary's WAL be acknowledged again; restore it "
                 "or re-clone this node",
                 path, n);
        return -1;
    }
    if (repl_of(s)->term)
        rd_info("term %" PRIu64 " (from %s)", repl_of(s)->term, path);
    return 0;
}

/* T3: a primary that learns of a newer term has been replaced: it fences
 * itself (nothing more is released: server_update_release) and drops its
 * replicas (their acknowledgements were given under the old term). */
void repl_term_fence_primary(struct server *s, uint64_t term, const char *why, const struct conn *keep)
{
    repl_term_save(s, term, why);
    s->fenced = 1;
    repl_of(s)->term_fenced = 1;
    snprintf(s->fenced_by, sizeof(s->fenced_by), "term %" PRIu64 ": %s", term, why);
    rd_error("FENCED: %s; a newer primary may exist, this node acknowledges nothing more", s->fenced_by);
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c != keep && c->kind == CONN_WALSENDER && !c->closing)
            conn_close(s, c);
    }
}


static void reply_term_state(struct server *s, struct conn *c)
{
    int replica = s->role == SERVER_ROLE_REPLICA;
    uint64_t ins = s->wal ? wal_insert_lsn(s->wal) : 0, fl = s->wal ? wal_flushed_lsn(s->wal) : 0;
    int rc = resp_array_hdr(&c->out, 6);
    rc |= resp_int(&c->out, (int64_t)repl_of(s)->term);
    rc |= resp_bulk_str(&c->out, replica ? "replica" : "primary");
    rc |= resp_int(&c->out, s->wal ? (int64_t)wal_timeline(s->wal) : 0);
    rc |= resp_int(&c->out, (int64_t)ins);
    rc |= resp_int(&c->out, (int64_t)fl);
    rc |= resp_int(&c->out, (int64_t)(replica ? repl_of(s)->up.apply_lsn : fl));
    if (rc < 0)
        rd_panic("out of memory for a reply");
}

/* REDOUBT.TERM t (T2, T3): persist t, then stop acknowledging anything of an
 * older term; answers what this node holds now. */
void repl_cmd_term(struct server *s, struct conn *c, const struct resp_args *a)
{
    uint64_t t;
    if (s->role != SERVER_ROLE_PRIMARY && s->role != SERVER_ROLE_REPLICA) {
        resp_error(&c->out, "ERR terms are for classic primaries and replicas (aurora fences with epochs)");
        return;
    }
    if (repl_term_arg(&a->v[1], &t) < 0) {
        resp_error(&c->out, "ERR REDOUBT.TERM expects a term in [1, 4294967295]");
        return;
    }
    if (t < repl_of(s)->term) {
        char msg[160];
        snprintf(msg, sizeof(msg), "STALETERM current term is %" PRIu64, repl_of(s)->term);
        resp_error(&c->out, msg);
        return;
    }
    if (t > repl_of(s)->term) {
        char why[400];
        snprintf(why, sizeof(why), "REDOUBT.TERM from %s", c->addr);
        if (s->role == SERVER_ROLE_PRIMARY) {
            repl_term_fence_primary(s, t, why, NULL);
        } else {
            repl_term_save(s, t, why);
            if (repl_of(s)->up.conn) { /* T2: not one more byte from, or status to, the old primary */
                rd_info("dropping the link to %s:%d: it is on an older term", repl_of(s)->up.host, repl_of(s)->up.port);
                conn_close(s, repl_of(s)->up.conn);
            }
        }
    }
    reply_term_state(s, c);
}

/* REDOUBT.PROMOTE t (T4): promote this replica — or lift a primary's term
 * fence — only if t is the term it was fenced for. */
void repl_cmd_promote_term(struct server *s, struct conn *c, const struct resp_args *a)
{
    uint64_t t;
    char err[512];
    if (repl_term_arg(&a->v[1], &t) < 0) {
        resp_error(&c->out, "ERR REDOUBT.PROMOTE expects a term in [1, 4294967295]");
        return;
    }
    if (s->role != SERVER_ROLE_PRIMARY && s->role != SERVER_ROLE_REPLICA) {
        resp_error(&c->out, "ERR REDOUBT.PROMOTE is for classic primaries and replicas");
        return;
    }
    if (t != repl_of(s)->term) {
        snprintf(err, sizeof(err), "STALETERM this node is at term %" PRIu64 ", not %" PRIu64, repl_of(s)->term, t);
        resp_error(&c->out, err);
        return;
    }
    if (s->role == SERVER_ROLE_PRIMARY) {
        if (s->fenced && !repl_of(s)->term_fenced) {
            snprintf(err, sizeof(err), "ERR this primary was fenced by REDOUBT.FENCE (%s); restart it as a replica",
                     s->fenced_by);
            resp_error(&c->out, err);
            return;
        }
        if (repl_of(s)->term_fenced) {
            rd_info("REDOUBT.PROMOTE %" PRIu64 " from %s: primary again at this term (fence lifted)", t, c->addr);
            s->fenced = repl_of(s)->term_fenced = 0;
            s->fenced_by[0] = 0;
            server_update_release(s);
        }
        if (resp_simple(&c->out, "OK") < 0)
            rd_panic("out of memory for a reply");
        return;
    }
    int rc = repl_promote(s, c, t, err, sizeof(err));
    if (rc < 0)
        resp_error(&c->out, err);
    else if (rc == 0 && resp_simple(&c->out, "OK") < 0)
        rd_panic("out of memory for a reply");
}

int repl_arg_u64(const struct resp_arg *a, int base, uint64_t *out)
{
    char tmp[40];
    if (a->len == 0 || a->len >= sizeof(tmp))
        return -1;
    memcpy(tmp, a->ptr, a->len);
    tmp[a->len] = 0;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(tmp, &end, base);
    if (errno || *end || tmp[0] == '-')
        return -1;
    *out = v;
    return 0;
}

int repl_term_arg(const struct resp_arg *a, uint64_t *t)
{
    return repl_arg_u64(a, 10, t) < 0 || *t == 0 || *t > REPL_TERM_MAX ? -1 : 0;
}

/* REDOUBT.REPLICATE <cluster-id-hex|0> <name> <timeline> <start-lsn> <STREAM|CLONE> [TERM t] [LISTEN-PORT p] */
