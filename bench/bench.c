/*
 * bench.c — redoubt-bench: a closed-loop RESP2 load generator and checker
 * (one thread, epoll, non-blocking TCP_NODELAY sockets). Works against any
 * RESP server, redis-server included. See bench/README.md.
 *
 *   run     (default) each client keeps --pipeline SETs of random keys in
 *           flight (every value new: a per-request stamp in its first bytes);
 *           latency of every request completed after the warm-up goes
 *           into an rd_hist; prints throughput and percentiles.
 *   acked   each client writes its own keys ack:<c>:<i>, one request in
 *           flight, until --duration ends or the server goes away; writes
 *           --state FILE: what was acknowledged and what was in flight.
 *   verify  reads FILE, GETs every key, and checks no acknowledged write is
 *           lost and no MULTI block is torn.
 *   lag     replica visibility lag: a probe connection SETs a unique value on
 *           the primary, then GETs it from --replica-port in a tight loop until
 *           it is there; the lag of every probe goes into an rd_hist. Optional
 *           run-mode load (--clients) on the primary runs in a second thread.
 *   failover acked mode against the writer named by a sentinel (--sentinel,
 *           --cluster); a dropped connection reconnects through the sentinel;
 *           measures the write outage (last ack on the old writer -> first
 *           ack on the new one) and writes --state like acked mode.
 *
 * With --sentinel HOST:PORT --cluster NAME the writer is found with
 * SENTINEL get-master-addr-by-name NAME instead of --host/--port, and in run,
 * acked and failover modes a client whose connection drops (or that gets an
 * error reply, or whose request stalls for --stall-ms while the sentinel names
 * another writer) asks the sentinel again and reconnects, every 50 ms for at
 * most --reconnect-s seconds.
 *
 * Invariants
 *   B1. A latency sample is (time the reply was parsed) - (time the request
 *       was queued for sending), in µs, for requests queued after the warm-up.
 *   B2. In acked mode a key's acked value only advances on a success reply
 *       (+OK, or EXEC answering +OK for both SETs); anything sent and not
 *       answered with success since is the key's in-flight value.
 *   B7. Verify accepts, for a key, its acked value, or any value written after
 *       it up to the newest in-flight one (all of those were answered with an
 *       error or not at all, so each may or may not have committed).
 *   B3. Every loop and buffer is bounded: reads per wake-up, replies per
 *       read, clients, pipeline depth, verify window, lag samples and the
 *       time one probe may wait (BENCH_LAG_PROBE_TIMEOUT_US).
 *   B4. A lag sample is (time of the first replica GET reply holding the
 *       probe's value) - (time the primary's +OK for the probe SET was
 *       parsed), in µs; the time from sending the SET is kept as well.
 *   B5. With --sentinel an ack counts for the old writer iff its connection
 *       goes to the address the sentinel named at the start; the outage is
 *       (first ack on any other address, over all clients) - (last ack on the
 *       start address, over all clients), wall clock, in ms.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/hist.h"
#include "common/util.h"
#include "server/resp.h"

#define BENCH_MAX_CLIENTS 10000
#define BENCH_MAX_PIPELINE 100000
#define BENCH_MAX_VALUE_BYTES (64u * 1024u * 1024u)
#define BENCH_READ_CHUNK_BYTES (64u * 1024u)
#define BENCH_READS_PER_WAKE 16
#define BENCH_ERRORS_SHOWN 5
#define BENCH_VERIFY_WINDOW 512
#define BENCH_CONNECT_TIMEOUT_MS 5000
#define BENCH_DRAIN_US 5000000u
#define BENCH_LAG_MAX_SAMPLES 10000000u
#define BENCH_LAG_PROBE_TIMEOUT_US 30000000u
#define BENCH_LAG_PAUSE_US 1000u /* between probes, so the probe is a light writer */
#define BENCH_RECONNECT_EVERY_US 50000u
#define BENCH_SENTINEL_TIMEOUT_MS 1000
#define BENCH_STALL_CHECK_EVERY_US 100000u
#define BENCH_ADDR_LEN 320

enum bench_mode { MODE_RUN, MODE_ACKED, MODE_VERIFY };

struct bench_opts {
    const char *host;
    const char *port;
    unsigned clients;
    double duration_s;
    double warmup_s;
    uint64_t keyspace;
    size_t value_size;
    unsigned pipeline;
    uint64_t seed;
    int json;
    const char *label;
    enum bench_mode mode;
    const char *state_path;
    int multi;
    const char *key_prefix; /* acked mode: prepended to every key */
    int lag;                /* --mode lag: mode stays MODE_RUN for the load clients */
    int clients_given;
    const char *replica_host, *replica_port;
    uint64_t samples;
    uint64_t lag_keys;      /* lag: probe keys cycled over; 0 = a new key per probe (the default) */
    const char *sentinel_host, *sentinel_port; /* --sentinel HOST:PORT */
    const char *cluster;                       /* --cluster NAME */
    double reconnect_s;                        /* give up reconnecting after this */
    unsigned stall_ms;                         /* sentinel mode: a request this old -> ask the sentinel */
    int failover;                              /* --mode failover (mode is MODE_ACKED) */
};

struct client {
    unsigned id;
    int fd;
    int alive;
    int want_out;       /* EPOLLOUT armed */
    struct rd_buf in;
    struct rd_buf out;
    size_t out_off;     /* bytes of out already written */
    uint64_t rng;
    /* run mode: send times of outstanding requests, a ring of opts.pipeline */
    uint64_t *sent_us;
    unsigned ring_head, ring_n;
    /* acked mode */
    uint64_t seq;            /* next request number */
    int pending;             /* a request (or MULTI block) is outstanding */
    uint64_t pend_key, pend_seq, pend_sent_us;
    int pend_multi, pend_left, pend_ok;
    int64_t *acked_seq;      /* per key of this client, -1: none */
    int64_t *inflight_seq;
    /* sentinel mode */
    char addr[BENCH_ADDR_LEN]; /* host:port of the current (or last) connection */
    int reconnecting;          /* dropped; reconnect through the sentinel */
    int drop_after;            /* error reply: drop and reconnect after this read */
    uint64_t next_try_us, give_up_us, down_us;
    uint64_t reconnects;
    uint64_t last_ack_wall_us, last_old_ack_wall_us, first_new_ack_wall_us, max_gap_us;
};

struct bench {
    struct bench_opts o;
    int ep;
    struct client *cl;
    uint8_t *value;          /* run mode: value_size bytes */
    uint8_t *value_scratch;  /* run mode: value with this request's stamp */
    uint64_t measure_start_us, end_us;
    struct rd_hist hist;
    uint64_t ops, errors, errors_shown, conn_lost;
    uint64_t keys_per_client;
    uint64_t acked_writes;   /* acked mode: successful writes (all of the run) */
    /* sentinel mode (B5) */
    char init_addr[BENCH_ADDR_LEN]; /* the writer the sentinel named at the start */
    char new_addr[BENCH_ADDR_LEN];  /* the first other address an ack came from */
    uint64_t reconnects, gave_up, drops_shown, last_stall_check_us;
    uint64_t last_ack_wall_us, max_gap_us, gap_from_wall_us, gap_to_wall_us;
    uint64_t acked_old, acked_new;
};

/* ------------------------------------------------------------ small helpers */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "redoubt-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (p == NULL)
        die("out of memory (%zu x %zu bytes)", n, sz);
    return p;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void git_commit(char *out, size_t n)
{
    const char *env = getenv("REDOUBT_COMMIT");
    snprintf(out, n, "unknown");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return;
    }
    FILE *p = popen("git rev-parse --short HEAD 2>/dev/null", "r");
    if (p == NULL)
        return;
    char line[64];
    if (fgets(line, sizeof(line), p)) {
        line[strcspn(line, "\r\n")] = 0;
        if (line[0])
            snprintf(out, n, "%s", line);
    }
    pclose(p);
}

static void machine_desc(char *out, size_t n)
{
    struct utsname u;
    char model[128] = "unknown cpu";
    if (uname(&u) < 0)
        memset(&u, 0, sizeof(u));
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                if (c) {
                    c += 1 + (c[1] == ' ');
                    c[strcspn(c, "\n")] = 0;
                    snprintf(model, sizeof(model), "%s", c);
                }
                break;
            }
        }
        fclose(f);
    }
    snprintf(out, n, "%s, %s %s %s, %ld cpus, %s", u.nodename, u.sysname, u.release, u.machine,
             sysconf(_SC_NPROCESSORS_ONLN), model);
}

/* ------------------------------------------------------------ connections */

/* Connects with a timeout; returns a non-blocking TCP_NODELAY socket or -1 with *why. */
static int bench_connect(const char *host, const char *port, char *why, size_t why_len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(why, why_len, "cannot resolve %s:%s: %s", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        err = errno;
        if (err == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int pr = poll(&p, 1, BENCH_CONNECT_TIMEOUT_MS);
            socklen_t sl = sizeof(err);
            if (pr == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0)
                break;
            if (pr == 0)
                err = ETIMEDOUT;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(why, why_len, "cannot connect to %s:%s: %s", host, port, strerror(err));
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
        snprintf(why, why_len, "setsockopt TCP_NODELAY: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const uint8_t *p, size_t n);
static int read_replies_t(int fd, struct rd_buf *in, struct resp_reply *out, size_t want, int timeout_ms);

/* Asks the sentinel for the writer of --cluster (SENTINEL get-master-addr-by-name).
 * Returns 0 with host/port filled in, or -1 with why. */
static int sentinel_resolve(const struct bench_opts *o, char *host, size_t host_len, char *port, size_t port_len,
                            char *why, size_t why_len)
{
    int fd = bench_connect(o->sentinel_host, o->sentinel_port, why, why_len);
    if (fd < 0)
        return -1;
    struct rd_buf out = {0}, in = {0};
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", o->cluster};
    struct resp_reply r;
    int rc = -1, used = -1;
    if (resp_command_str(&out, 3, argv) < 0)
        die("out of memory");
    if (write_all(fd, out.data, out.len) < 0 ||
        (used = read_replies_t(fd, &in, &r, 1, BENCH_SENTINEL_TIMEOUT_MS)) < 0) {
        snprintf(why, why_len, "sentinel %s:%s did not answer", o->sentinel_host, o->sentinel_port);
    } else {
        if (r.type == RESP_ARRAY && r.nelems == 2 && r.elems[0].type == RESP_BULK && r.elems[1].type == RESP_BULK &&
            r.elems[0].len > 0 && r.elems[0].len < host_len && r.elems[1].len > 0 && r.elems[1].len < port_len) {
            memcpy(host, r.elems[0].str, r.elems[0].len);
            host[r.elems[0].len] = 0;
            memcpy(port, r.elems[1].str, r.elems[1].len);
            port[r.elems[1].len] = 0;
            rc = 0;
        } else if (r.type == RESP_ERROR) {
            snprintf(why, why_len, "sentinel %s:%s: %.*s", o->sentinel_host, o->sentinel_port,
                     (int)RD_MIN(r.len, 200u), (const char *)r.str);
        } else {
            snprintf(why, why_len, "sentinel %s:%s knows no writer of cluster \"%s\"", o->sentinel_host,
                     o->sentinel_port, o->cluster);
        }
        resp_reply_free(&r);
    }
    rd_buf_free(&out);
    rd_buf_free(&in);
    if (close(fd) < 0)
        fprintf(stderr, "redoubt-bench: close: %s\n", strerror(errno));
    return rc;
}

/* Connects client c to host:port and registers it with epoll; -1 with why. */
static int client_connect(struct bench *b, struct client *c, const char *host, const char *port, char *why,
                          size_t why_len)
{
    c->fd = bench_connect(host, port, why, why_len);
    if (c->fd < 0)
        return -1;
    c->alive = 1;
    c->want_out = 0;
    c->drop_after = 0;
    snprintf(c->addr, sizeof(c->addr), "%s:%s", host, port);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(b->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl add: %s", strerror(errno));
    return 0;
}

static int reconnect_enabled(const struct bench *b) { return b->o.sentinel_host != NULL && !b->o.lag; }

static void client_down(struct bench *b, struct client *c, const char *why)
{
    if (!c->alive)
        return;
    c->alive = 0;
    if (epoll_ctl(b->ep, EPOLL_CTL_DEL, c->fd, NULL) < 0 && errno != EBADF)
        fprintf(stderr, "redoubt-bench: epoll_ctl del: %s\n", strerror(errno));
    if (close(c->fd) < 0)
        fprintf(stderr, "redoubt-bench: close: %s\n", strerror(errno));
    c->fd = -1;
    int reconnect = reconnect_enabled(b) && rd_now_us() < b->end_us;
    if (b->o.mode == MODE_RUN)
        b->conn_lost++;
    if ((b->o.mode == MODE_RUN && !reconnect) || (reconnect && b->drops_shown++ < BENCH_ERRORS_SHOWN))
        fprintf(stderr, "redoubt-bench: client %u: connection to %s lost: %s%s\n", c->id, c->addr, why,
                reconnect ? "; reconnecting through the sentinel" : "");
    if (!reconnect)
        return;
    /* the requests of this connection stay in flight (B2); start over on a new one */
    rd_buf_reset(&c->in);
    rd_buf_reset(&c->out);
    c->out_off = 0;
    c->ring_head = c->ring_n = 0;
    c->pending = 0;
    c->drop_after = 0;
    c->reconnecting = 1;
    c->down_us = rd_now_us();
    c->next_try_us = c->down_us;
    c->give_up_us = c->down_us + (uint64_t)(b->o.reconnect_s * 1e6);
}

/* Sentinel mode: the wall time of every successful reply (B5). */
static void track_ack(struct bench *b, struct client *c)
{
    uint64_t w = rd_wall_us();
    if (c->last_ack_wall_us && w > c->last_ack_wall_us && w - c->last_ack_wall_us > c->max_gap_us)
        c->max_gap_us = w - c->last_ack_wall_us;
    c->last_ack_wall_us = w;
    if (b->last_ack_wall_us && w > b->last_ack_wall_us && w - b->last_ack_wall_us > b->max_gap_us) {
        b->max_gap_us = w - b->last_ack_wall_us;
        b->gap_from_wall_us = b->last_ack_wall_us;
        b->gap_to_wall_us = w;
    }
    b->last_ack_wall_us = w;
    if (strcmp(c->addr, b->init_addr) == 0) {
        c->last_old_ack_wall_us = w;
        b->acked_old++;
    } else {
        if (c->first_new_ack_wall_us == 0)
            c->first_new_ack_wall_us = w;
        if (b->new_addr[0] == 0)
            snprintf(b->new_addr, sizeof(b->new_addr), "%s", c->addr);
        b->acked_new++;
    }
}

static void client_arm(struct bench *b, struct client *c, int want_out)
{
    if (c->want_out == want_out || !c->alive)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0u), .data.ptr = c};
    if (epoll_ctl(b->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl mod: %s", strerror(errno));
    c->want_out = want_out;
}

static void client_flush(struct bench *b, struct client *c)
{
    while (c->alive && c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            client_arm(b, c, 1);
            return;
        } else {
            client_down(b, c, n < 0 ? strerror(errno) : "short send");
            return;
        }
    }
    rd_buf_reset(&c->out);
    c->out_off = 0;
    client_arm(b, c, 0);
}

static void count_error(struct bench *b, struct client *c, const struct resp_reply *r)
{
    b->errors++;
    if (b->errors_shown < BENCH_ERRORS_SHOWN) {
        b->errors_shown++;
        if (r->type == RESP_ERROR)
            fprintf(stderr, "redoubt-bench: client %u: error reply: %.*s\n", c->id, (int)RD_MIN(r->len, 200u),
                    (const char *)r->str);
        else
            fprintf(stderr, "redoubt-bench: client %u: unexpected reply type %d\n", c->id, (int)r->type);
    }
}

/* ------------------------------------------------------------ run mode */

static void run_send(struct bench *b, struct client *c, uint64_t now_us)
{
    char key[32];
    uint64_t k = splitmix64(&c->rng) % b->o.keyspace;
    int kn = snprintf(key, sizeof(key), "key:%08" PRIu64, k);
    /* Every SET writes a value it has not written before (its first bytes are a stamp of
     * client and request number): an overwrite with identical bytes could be skipped by a
     * store (Redoubt's same-size overwrite would log nothing), which is not the write
     * being measured. */
    memcpy(b->value_scratch, b->value, b->o.value_size);
    char stamp[32];
    int sn = snprintf(stamp, sizeof(stamp), "%x.%" PRIx64 ".", c->id, c->seq++);
    memcpy(b->value_scratch, stamp, RD_MIN((size_t)sn, b->o.value_size));
    struct resp_arg av[3] = {
        {(const uint8_t *)"SET", 3},
        {(const uint8_t *)key, (size_t)kn},
        {b->value_scratch, b->o.value_size},
    };
    if (resp_command(&c->out, 3, av) < 0)
        die("out of memory");
    rd_assert(c->ring_n < b->o.pipeline);
    c->sent_us[(c->ring_head + c->ring_n) % b->o.pipeline] = now_us;
    c->ring_n++;
}

static void run_on_reply(struct bench *b, struct client *c, const struct resp_reply *r, uint64_t now_us)
{
    if (c->ring_n == 0) {
        count_error(b, c, r); /* a reply nobody asked for */
        return;
    }
    uint64_t sent = c->sent_us[c->ring_head];
    c->ring_head = (c->ring_head + 1) % b->o.pipeline;
    c->ring_n--;
    if (r->type == RESP_ERROR && reconnect_enabled(b))
        c->drop_after = 1; /* maybe not the writer any more: ask the sentinel */
    else if (r->type != RESP_ERROR && reconnect_enabled(b))
        track_ack(b, c);
    if (sent < b->measure_start_us)
        return; /* B1: warm-up */
    if (r->type == RESP_ERROR) {
        count_error(b, c, r);
        return;
    }
    b->ops++;
    rd_hist_record(&b->hist, now_us - sent);
}

static void run_refill(struct bench *b, struct client *c, uint64_t now_us)
{
    while (c->alive && c->ring_n < b->o.pipeline && now_us < b->end_us)
        run_send(b, c, now_us);
}

/* ------------------------------------------------------------ acked mode */

/* "v:<c>:<seq>:" padded with 'x' to value_size (never truncated). */
static size_t acked_value(const struct bench *b, unsigned c, uint64_t seq, char *out, size_t cap)
{
    int n = snprintf(out, cap, "v:%u:%" PRIu64 ":", c, seq);
    rd_assert(n > 0 && (size_t)n < cap);
    size_t len = RD_MAX((size_t)n, RD_MIN(b->o.value_size, cap - 1));
    memset(out + n, 'x', len - (size_t)n);
    out[len] = 0;
    return len;
}

static int acked_is_multi(const struct bench *b, uint64_t key) { return b->o.multi && (key & 1); }

static void acked_send(struct bench *b, struct client *c, uint64_t now_us, char *vbuf, size_t vcap)
{
    uint64_t seq = c->seq++;
    uint64_t k = seq % b->keys_per_client;
    char key[160], keym[160];
    int kn = snprintf(key, sizeof(key), "%sack:%u:%" PRIu64, b->o.key_prefix, c->id, k);
    int kmn = snprintf(keym, sizeof(keym), "%sack:%u:%" PRIu64 ":m", b->o.key_prefix, c->id, k);
    size_t vn = acked_value(b, c->id, seq, vbuf, vcap);
    struct resp_arg set1[3] = {{(const uint8_t *)"SET", 3}, {(const uint8_t *)key, (size_t)kn}, {(uint8_t *)vbuf, vn}};
    int rc;
    c->pend_multi = acked_is_multi(b, k);
    if (c->pend_multi) {
        struct resp_arg multi = {(const uint8_t *)"MULTI", 5}, exec = {(const uint8_t *)"EXEC", 4};
        struct resp_arg set2[3] = {{(const uint8_t *)"SET", 3}, {(const uint8_t *)keym, (size_t)kmn}, {(uint8_t *)vbuf, vn}};
        rc = resp_command(&c->out, 1, &multi);
        rc = rc ? rc : resp_command(&c->out, 3, set1);
        rc = rc ? rc : resp_command(&c->out, 3, set2);
        rc = rc ? rc : resp_command(&c->out, 1, &exec);
        c->pend_left = 4;
    } else {
        rc = resp_command(&c->out, 3, set1);
        c->pend_left = 1;
    }
    if (rc < 0)
        die("out of memory");
    c->pending = 1;
    c->pend_ok = 1;
    c->pend_key = k;
    c->pend_seq = seq;
    c->pend_sent_us = now_us;
    c->inflight_seq[k] = (int64_t)seq; /* B2 */
}

static void acked_on_reply(struct bench *b, struct client *c, const struct resp_reply *r, uint64_t now_us)
{
    if (!c->pending) {
        count_error(b, c, r);
        return;
    }
    int ok;
    if (!c->pend_multi)
        ok = resp_reply_is_status(r, "OK");
    else if (c->pend_left == 4)
        ok = resp_reply_is_status(r, "OK");            /* MULTI */
    else if (c->pend_left > 1)
        ok = resp_reply_is_status(r, "QUEUED");        /* SET, SET */
    else
        ok = r->type == RESP_ARRAY && r->nelems == 2 && /* EXEC */
             resp_reply_is_status(&r->elems[0], "OK") && resp_reply_is_status(&r->elems[1], "OK");
    if (!ok) {
        if (c->pend_ok)
            count_error(b, c, r);
        c->pend_ok = 0;
    }
    if (--c->pend_left > 0)
        return;
    c->pending = 0;
    if (c->pend_ok) {
        c->acked_seq[c->pend_key] = (int64_t)c->pend_seq;
        c->inflight_seq[c->pend_key] = -1;
        b->acked_writes++;
        b->ops++;
        rd_hist_record(&b->hist, now_us - c->pend_sent_us);
        if (reconnect_enabled(b))
            track_ack(b, c);
    } else if (reconnect_enabled(b)) {
        c->drop_after = 1; /* maybe not the writer any more: ask the sentinel */
    }
    /* a failed request stays in flight (B2): the server may or may not have applied it */
}

static int acked_write_state(struct bench *b)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", b->o.state_path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        fprintf(stderr, "redoubt-bench: could not create \"%s\": %s\n", tmp, strerror(errno));
        return -1;
    }
    size_t vcap = b->o.value_size + 64;
    char *va = xcalloc(1, vcap), *vi = xcalloc(1, vcap);
    uint64_t keys = 0;
    for (unsigned ci = 0; ci < b->o.clients; ci++) {
        struct client *c = &b->cl[ci];
        for (uint64_t k = 0; k < b->keys_per_client; k++) {
            if (c->acked_seq[k] < 0 && c->inflight_seq[k] < 0)
                continue;
            if (c->acked_seq[k] >= 0)
                acked_value(b, ci, (uint64_t)c->acked_seq[k], va, vcap);
            else
                strcpy(va, "-");
            if (c->inflight_seq[k] >= 0)
                acked_value(b, ci, (uint64_t)c->inflight_seq[k], vi, vcap);
            else
                strcpy(vi, "-");
            fprintf(f, "%sack:%u:%" PRIu64 " %s %s%s\n", b->o.key_prefix, ci, k, va, vi,
                    acked_is_multi(b, k) ? " m" : "");
            keys++;
        }
    }
    free(va);
    free(vi);
    if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) < 0) {
        fprintf(stderr, "redoubt-bench: could not write \"%s\": %s\n", tmp, strerror(errno));
        fclose(f);
        return -1;
    }
    if (fclose(f) != 0 || rename(tmp, b->o.state_path) < 0) {
        fprintf(stderr, "redoubt-bench: could not write \"%s\": %s\n", b->o.state_path, strerror(errno));
        return -1;
    }
    if (!b->o.json)
        printf("state: %" PRIu64 " keys written to %s\n", keys, b->o.state_path);
    return 0;
}

/* ------------------------------------------------------------ event loop */

/* Reads what is there and handles every complete reply. */
static void client_read(struct bench *b, struct client *c, char *vbuf, size_t vcap)
{
    int eof = 0;
    for (int i = 0; i < BENCH_READS_PER_WAKE && !eof; i++) {
        if (rd_buf_reserve(&c->in, BENCH_READ_CHUNK_BYTES) < 0)
            die("out of memory");
        ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        eof = n == 0 ? 1 : -errno;
    }
    uint64_t now_us = rd_now_us();
    size_t off = 0;
    int rc;
    for (;;) {
        struct resp_reply r;
        rc = resp_read_reply(c->in.data + off, c->in.len - off, &r);
        if (rc <= 0)
            break;
        if (b->o.mode == MODE_RUN)
            run_on_reply(b, c, &r, now_us);
        else
            acked_on_reply(b, c, &r, now_us);
        resp_reply_free(&r);
        off += (size_t)rc;
    }
    rd_buf_consume(&c->in, off);
    if (rc < 0) {
        b->errors++;
        client_down(b, c, "protocol error in the server's reply");
        return;
    }
    if (c->drop_after) {
        client_down(b, c, "error reply");
        c->next_try_us = rd_now_us() + BENCH_RECONNECT_EVERY_US;
        return;
    }
    if (eof) {
        client_down(b, c, eof == 1 ? "closed by the server" : strerror(-eof));
        return;
    }
    if (b->o.mode == MODE_RUN)
        run_refill(b, c, now_us);
    else if (!c->pending && now_us < b->end_us)
        acked_send(b, c, now_us, vbuf, vcap);
    client_flush(b, c);
}

static void client_start(struct bench *b, struct client *c, uint64_t now_us, char *vbuf, size_t vcap)
{
    if (b->o.mode == MODE_RUN)
        run_refill(b, c, now_us);
    else if (now_us < b->end_us)
        acked_send(b, c, now_us, vbuf, vcap);
    client_flush(b, c);
}

/* Sentinel mode: reconnects the dropped clients whose retry time has come
 * (one sentinel question per call), every BENCH_RECONNECT_EVERY_US until
 * --reconnect-s has passed. */
static void reconnect_due(struct bench *b, uint64_t now_us, char *vbuf, size_t vcap)
{
    int resolved = 0; /* 0: not asked yet, 1: answer in host/port, -1: failed */
    char host[256], port[16], why[256] = "";
    for (unsigned i = 0; i < b->o.clients; i++) {
        struct client *c = &b->cl[i];
        if (!c->reconnecting || now_us < c->next_try_us)
            continue;
        if (now_us >= b->end_us) {
            c->reconnecting = 0; /* the run is over */
            continue;
        }
        if (resolved == 0)
            resolved = sentinel_resolve(&b->o, host, sizeof(host), port, sizeof(port), why, sizeof(why)) == 0 ? 1 : -1;
        if (resolved == 1 && client_connect(b, c, host, port, why, sizeof(why)) == 0) {
            c->reconnecting = 0;
            c->reconnects++;
            b->reconnects++;
            client_start(b, c, rd_now_us(), vbuf, vcap);
            continue;
        }
        if (now_us >= c->give_up_us) {
            c->reconnecting = 0;
            b->gave_up++;
            fprintf(stderr, "redoubt-bench: client %u: gave up reconnecting after %g s: %s\n", c->id,
                    b->o.reconnect_s, why);
            continue;
        }
        c->next_try_us = now_us + BENCH_RECONNECT_EVERY_US;
    }
}

/* Sentinel mode: a client whose oldest request has waited --stall-ms while the
 * sentinel names another writer (the old one is paused, say) drops its
 * connection and reconnects. */
static void stall_check(struct bench *b, uint64_t now_us)
{
    if (now_us - b->last_stall_check_us < BENCH_STALL_CHECK_EVERY_US)
        return;
    b->last_stall_check_us = now_us;
    uint64_t stall_us = (uint64_t)b->o.stall_ms * 1000u;
    int resolved = 0;
    char host[256], port[16], why[256], addr[BENCH_ADDR_LEN];
    for (unsigned i = 0; i < b->o.clients; i++) {
        struct client *c = &b->cl[i];
        uint64_t oldest = b->o.mode == MODE_RUN ? (c->ring_n ? c->sent_us[c->ring_head] : now_us)
                                                : (c->pending ? c->pend_sent_us : now_us);
        if (!c->alive || now_us - oldest < stall_us)
            continue;
        if (resolved == 0) {
            resolved = sentinel_resolve(&b->o, host, sizeof(host), port, sizeof(port), why, sizeof(why)) == 0 ? 1 : -1;
            snprintf(addr, sizeof(addr), "%s:%s", host, port);
        }
        if (resolved == 1 && strcmp(addr, c->addr) != 0)
            client_down(b, c, "request stalled and the sentinel names another writer");
    }
}

static int bench_loop(struct bench *b)
{
    size_t vcap = b->o.value_size + 64;
    char *vbuf = xcalloc(1, vcap);
    uint64_t now_us = rd_now_us();
    for (unsigned i = 0; i < b->o.clients; i++)
        client_start(b, &b->cl[i], now_us, vbuf, vcap);
    struct epoll_event evs[256];
    /* acked mode: after the duration, wait up to BENCH_DRAIN_US for the
     * replies still outstanding, so fewer writes end up "in flight" */
    uint64_t hard_end_us = b->end_us + (b->o.mode == MODE_ACKED ? BENCH_DRAIN_US : 0);
    int reconnect = reconnect_enabled(b);
    for (;;) {
        now_us = rd_now_us();
        if (reconnect) {
            reconnect_due(b, now_us, vbuf, vcap);
            if (b->o.stall_ms)
                stall_check(b, now_us);
            now_us = rd_now_us();
        }
        unsigned alive = 0, pending = 0, reconnecting = 0;
        for (unsigned i = 0; i < b->o.clients; i++) {
            alive += (unsigned)b->cl[i].alive;
            pending += (unsigned)(b->cl[i].alive && b->cl[i].pending);
            reconnecting += (unsigned)b->cl[i].reconnecting;
        }
        if ((alive == 0 && reconnecting == 0) || now_us >= hard_end_us || (now_us >= b->end_us && pending == 0))
            break;
        uint64_t wait_until = now_us < b->end_us ? b->end_us : hard_end_us;
        int timeout_ms = (int)RD_MIN((wait_until - now_us + 999) / 1000, reconnect ? 10u : 100u);
        int n = epoll_wait(b->ep, evs, (int)RD_ARRAY_LEN(evs), timeout_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            struct client *c = evs[i].data.ptr;
            if (c->alive && (evs[i].events & EPOLLOUT))
                client_flush(b, c);
            if (c->alive && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                client_read(b, c, vbuf, vcap);
        }
    }
    free(vbuf);
    return 0;
}

/* ------------------------------------------------------------ verify mode */

static int read_replies(int fd, struct rd_buf *in, struct resp_reply *out, size_t want)
{
    return read_replies_t(fd, in, out, want, 10000);
}

struct verify_item {
    char *key;
    char *acked, *inflight; /* "-" for none */
    int multi;
};

struct verify_stats {
    uint64_t checked, pairs, ok, missing, older, other, torn, errors, shown;
};

static int64_t value_seq(const uint8_t *v, size_t n)
{
    /* "v:<c>:<seq>:..." -> seq, or -1 */
    const uint8_t *end = v + n, *p = v;
    if (n < 2 || p[0] != 'v' || p[1] != ':')
        return -1;
    p += 2;
    while (p < end && *p != ':')
        p++;
    if (p == end)
        return -1;
    int64_t s = 0;
    int digits = 0;
    for (p++; p < end && *p >= '0' && *p <= '9' && digits < 18; p++, digits++)
        s = s * 10 + (*p - '0');
    return digits ? s : -1;
}

static int reply_eq(const struct resp_reply *r, const char *s)
{
    size_t n = strlen(s);
    return r->type == RESP_BULK && r->len == n && memcmp(r->str, s, n) == 0;
}

static void verify_example(struct verify_stats *st, const char *what, const struct verify_item *it,
                           const struct resp_reply *r)
{
    if (st->shown++ >= 10)
        return;
    printf("  %s: %s acked %.40s inflight %.40s found ", what, it->key, it->acked, it->inflight);
    if (r->type == RESP_BULK)
        printf("\"%.*s\"\n", (int)RD_MIN(r->len, 40u), (const char *)r->str);
    else
        printf("%s\n", r->type == RESP_NIL ? "(nil)" : "(not a string)");
}

static void verify_one(struct verify_stats *st, const struct verify_item *it, const struct resp_reply *r,
                       const struct resp_reply *rm)
{
    st->checked++;
    if (r->type != RESP_BULK && r->type != RESP_NIL) {
        st->errors++;
        verify_example(st, "ERROR", it, r);
        return;
    }
    int has_acked = strcmp(it->acked, "-") != 0;
    int ok = (has_acked && reply_eq(r, it->acked)) ||
             (strcmp(it->inflight, "-") != 0 && reply_eq(r, it->inflight)) ||
             (!has_acked && r->type == RESP_NIL);
    /* B7: every write to this key sent after the acked one was answered with an error
     * (-TIMEOUT commit outcome unknown, a dropped connection) or not at all — the acked
     * value only advances on success — so any of them may have committed: a value
     * between the acked and the newest in-flight one is indeterminate, not lost. */
    if (!ok && r->type == RESP_BULK && strcmp(it->inflight, "-") != 0) {
        int64_t got = value_seq(r->str, r->len);
        int64_t lo = has_acked ? value_seq((const uint8_t *)it->acked, strlen(it->acked)) : -1;
        int64_t hi = value_seq((const uint8_t *)it->inflight, strlen(it->inflight));
        ok = got >= 0 && got > lo && got <= hi;
    }
    if (ok) {
        st->ok++;
    } else if (r->type == RESP_NIL) {
        st->missing++;
        verify_example(st, "LOST (missing)", it, r);
    } else if (value_seq(r->str, r->len) >= 0 && value_seq(r->str, r->len) < value_seq((const uint8_t *)it->acked, strlen(it->acked))) {
        st->older++;
        verify_example(st, "LOST (older value)", it, r);
    } else {
        st->other++;
        verify_example(st, "UNEXPECTED value", it, r);
    }
    if (rm == NULL)
        return;
    st->pairs++;
    int same = r->type == rm->type &&
               (r->type == RESP_NIL || (rm->len == r->len && memcmp(rm->str, r->str, r->len) == 0));
    if (!same) {
        st->torn++;
        verify_example(st, "TORN multi (ackm twin differs)", it, rm);
    }
}

static int read_state(const char *path, struct verify_item **out, size_t *n_out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "redoubt-bench: could not open state file \"%s\": %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = 0, cap = 1024;
    struct verify_item *v = xcalloc(cap, sizeof(*v));
    char *line = NULL;
    size_t lcap = 0;
    ssize_t ll;
    unsigned long lineno = 0;
    while ((ll = getline(&line, &lcap, f)) > 0) {
        lineno++;
        char *save = NULL;
        char *k = strtok_r(line, " \n", &save), *a = strtok_r(NULL, " \n", &save);
        char *i = strtok_r(NULL, " \n", &save), *m = strtok_r(NULL, " \n", &save);
        if (k == NULL || a == NULL || i == NULL || (m && strcmp(m, "m") != 0)) {
            fprintf(stderr, "redoubt-bench: %s:%lu: expected \"key acked inflight [m]\"\n", path, lineno);
            free(line);
            fclose(f);
            return -1;
        }
        if (n == cap) {
            cap *= 2;
            struct verify_item *nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL)
                die("out of memory");
            v = nv;
        }
        v[n].key = strdup(k);
        v[n].acked = strdup(a);
        v[n].inflight = strdup(i);
        v[n].multi = m != NULL;
        if (!v[n].key || !v[n].acked || !v[n].inflight)
            die("out of memory");
        n++;
    }
    free(line);
    fclose(f);
    *out = v;
    *n_out = n;
    return 0;
}

/* Blocking helpers for verify: one connection, pipelined windows. */
static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            poll(&pf, 1, 1000);
            continue;
        }
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_replies_t(int fd, struct rd_buf *in, struct resp_reply *out, size_t want, int timeout_ms)
{
    size_t got = 0, off = 0;
    while (got < want) {
        int rc = resp_read_reply(in->data + off, in->len - off, &out[got]);
        if (rc > 0) {
            off += (size_t)rc;
            got++;
            continue;
        }
        if (rc < 0)
            return -1;
        /* replies point into in: grow without moving consumed bytes away
         * is not possible, so re-parse from the start after reading more */
        for (size_t i = 0; i < got; i++)
            resp_reply_free(&out[i]);
        got = 0;
        off = 0;
        if (rd_buf_reserve(in, BENCH_READ_CHUNK_BYTES) < 0)
            die("out of memory");
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, timeout_ms) <= 0)
            return -1;
        ssize_t r = recv(fd, in->data + in->len, in->cap - in->len, 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0)
            return -1;
        in->len += (size_t)r;
    }
    return (int)off;
}

static int verify_run(struct bench *b)
{
    struct verify_item *items = NULL;
    size_t n = 0;
    if (read_state(b->o.state_path, &items, &n) < 0)
        return 2;
    char why[256];
    int fd = bench_connect(b->o.host, b->o.port, why, sizeof(why));
    if (fd < 0) {
        fprintf(stderr, "redoubt-bench: %s\n", why);
        return 2;
    }
    struct verify_stats st = {0};
    struct rd_buf out = {0}, in = {0};
    struct resp_reply *rep = xcalloc(2 * BENCH_VERIFY_WINDOW, sizeof(*rep));
    char keym[4096];
    uint64_t t0 = rd_now_us();
    for (size_t base = 0; base < n; base += BENCH_VERIFY_WINDOW) {
        size_t end = RD_MIN(n, base + BENCH_VERIFY_WINDOW), want = 0;
        for (size_t i = base; i < end; i++) {
            const char *get[2] = {"GET", items[i].key};
            if (resp_command_str(&out, 2, get) < 0)
                die("out of memory");
            want++;
            if (items[i].multi) {
                snprintf(keym, sizeof(keym), "%s:m", items[i].key); /* the pair's second key */
                get[1] = keym;
                if (resp_command_str(&out, 2, get) < 0)
                    die("out of memory");
                want++;
            }
        }
        int used;
        if (write_all(fd, out.data, out.len) < 0 || (used = read_replies(fd, &in, rep, want)) < 0) {
            fprintf(stderr, "redoubt-bench: verify: lost the connection to %s:%s\n", b->o.host, b->o.port);
            return 2;
        }
        rd_buf_reset(&out);
        size_t r = 0;
        for (size_t i = base; i < end; i++) {
            const struct resp_reply *rm = items[i].multi ? &rep[r + 1] : NULL;
            verify_one(&st, &items[i], &rep[r], rm);
            r += items[i].multi ? 2 : 1;
        }
        for (size_t i = 0; i < want; i++)
            resp_reply_free(&rep[i]);
        rd_buf_consume(&in, (size_t)used);
    }
    uint64_t lost = st.missing + st.older + st.other;
    printf("verify: %" PRIu64 " keys checked (%" PRIu64 " multi pairs) in %.2f s: %" PRIu64 " ok, %" PRIu64
           " lost (%" PRIu64 " missing, %" PRIu64 " older, %" PRIu64 " unexpected), %" PRIu64 " torn multis, %" PRIu64
           " error replies\n",
           st.checked, st.pairs, (double)(rd_now_us() - t0) / 1e6, st.ok, lost, st.missing, st.older, st.other,
           st.torn, st.errors);
    printf("verify: %s\n", lost || st.torn || st.errors ? "FAIL" : "PASS");
    for (size_t i = 0; i < n; i++) {
        free(items[i].key);
        free(items[i].acked);
        free(items[i].inflight);
    }
    free(items);
    free(rep);
    rd_buf_free(&out);
    rd_buf_free(&in);
    if (close(fd) < 0)
        fprintf(stderr, "redoubt-bench: close: %s\n", strerror(errno));
    return lost || st.torn || st.errors ? 1 : 0;
}

/* ------------------------------------------------------------ lag mode */

struct lag_result {
    struct rd_hist ack_hist;  /* B4: from the primary's ack to visible on the replica */
    struct rd_hist send_hist; /* from sending the SET to visible on the replica */
    uint64_t samples, poll_gets, error_replies;
    double secs;
};

static void *lag_load_thread(void *arg)
{
    bench_loop(arg);
    return NULL;
}

/* One blocking request on fd; the reply is parsed into *r (points into in).
 * Returns the bytes to consume from in, or -1 if the connection is gone. */
static int lag_request(int fd, struct rd_buf *out, struct rd_buf *in, size_t argc, const char *const *argv,
                       struct resp_reply *r)
{
    rd_buf_reset(out);
    if (resp_command_str(out, argc, argv) < 0)
        die("out of memory");
    if (write_all(fd, out->data, out->len) < 0)
        return -1;
    return read_replies(fd, in, r, 1);
}

static int lag_connect(const char *host, const char *port)
{
    char why[256];
    int fd = bench_connect(host, port, why, sizeof(why));
    if (fd < 0)
        die("%s (lag probe)", why);
    return fd;
}

/* Probes until end_us or o.samples; exits 1 if a probe is never visible. */
static void lag_probe(struct bench *b, uint64_t start_us, uint64_t end_us, struct lag_result *res)
{
    int pfd = lag_connect(b->o.host, b->o.port);
    int rfd = lag_connect(b->o.replica_host, b->o.replica_port);
    struct rd_buf out = {0}, pin = {0}, rin = {0};
    char key[96], val[96];
    rd_hist_init(&res->ack_hist);
    rd_hist_init(&res->send_hist);
    while (rd_now_us() < start_us)
        usleep(1000);
    uint64_t t_first = rd_now_us();
    for (uint64_t i = 0; i < b->o.samples && rd_now_us() < end_us; i++) {
        /* A new key per probe by default: an application inserting rows, whose key lands
         * on a leaf the replica/reader may not have cached (an aurora reader then reads
         * the page from storage: that is part of the lag it shows). --lag-keys N cycles
         * over N keys, which stay cached (the bench measured only that before). */
        snprintf(key, sizeof(key), "lag:%" PRIu64 ":%" PRIu64, b->o.seed % 1000000007u,
                 b->o.lag_keys ? i % b->o.lag_keys : i);
        int vn = snprintf(val, sizeof(val), "probe:%" PRIu64 ":%" PRIu64, b->o.seed, i);
        const char *set[3] = {"SET", key, val}, *get[2] = {"GET", key};
        struct resp_reply r;
        uint64_t t_send = rd_now_us();
        int used = lag_request(pfd, &out, &pin, 3, set, &r);
        if (used < 0)
            die("lag: lost the connection to the primary %s:%s", b->o.host, b->o.port);
        uint64_t t_ack = rd_now_us();
        int ok = resp_reply_is_status(&r, "OK");
        if (!ok)
            fprintf(stderr, "redoubt-bench: lag: probe SET on the primary failed: %.*s\n",
                    r.type == RESP_ERROR ? (int)RD_MIN(r.len, 200u) : 0, r.type == RESP_ERROR ? (const char *)r.str : "");
        resp_reply_free(&r);
        rd_buf_consume(&pin, (size_t)used);
        if (!ok) {
            res->error_replies++;
            usleep(100000);
            continue;
        }
        for (;;) { /* tight poll, bounded by BENCH_LAG_PROBE_TIMEOUT_US (B3) */
            used = lag_request(rfd, &out, &rin, 2, get, &r);
            if (used < 0)
                die("lag: lost the connection to the replica %s:%s", b->o.replica_host, b->o.replica_port);
            uint64_t now = rd_now_us();
            res->poll_gets++;
            int seen = r.type == RESP_BULK && r.len == (size_t)vn && memcmp(r.str, val, (size_t)vn) == 0;
            if (r.type == RESP_ERROR && res->error_replies++ < BENCH_ERRORS_SHOWN)
                fprintf(stderr, "redoubt-bench: lag: replica GET error: %.*s\n", (int)RD_MIN(r.len, 200u),
                        (const char *)r.str);
            resp_reply_free(&r);
            rd_buf_consume(&rin, (size_t)used);
            if (seen) {
                rd_hist_record(&res->ack_hist, now - t_ack);
                rd_hist_record(&res->send_hist, now - t_send);
                res->samples++;
                break;
            }
            if (now - t_ack > BENCH_LAG_PROBE_TIMEOUT_US) {
                fprintf(stderr, "redoubt-bench: lag: %s=%s not visible on the replica %s:%s after %u s\n", key, val,
                        b->o.replica_host, b->o.replica_port, BENCH_LAG_PROBE_TIMEOUT_US / 1000000u);
                exit(1);
            }
        }
        usleep(BENCH_LAG_PAUSE_US);
    }
    res->secs = (double)(rd_now_us() - t_first) / 1e6;
    rd_buf_free(&out);
    rd_buf_free(&pin);
    rd_buf_free(&rin);
    if (close(pfd) < 0 || close(rfd) < 0)
        fprintf(stderr, "redoubt-bench: close: %s\n", strerror(errno));
}

static void lag_report(const struct bench *b, const struct lag_result *res)
{
    const struct rd_hist *h = &res->ack_hist, *hs = &res->send_hist;
    if (b->o.json) {
        printf(",\"replica_host\":");
        json_str(stdout, b->o.replica_host);
        printf(",\"replica_port\":%s,\"samples\":%" PRIu64 ",\"lag_secs\":%.3f,\"lag_poll_gets\":%" PRIu64
               ",\"lag_error_replies\":%" PRIu64 ",\"lag_p50_us\":%" PRIu64 ",\"lag_p90_us\":%" PRIu64
               ",\"lag_p99_us\":%" PRIu64 ",\"lag_p999_us\":%" PRIu64 ",\"lag_max_us\":%" PRIu64
               ",\"lag_mean_us\":%.1f,\"set_to_visible_p50_us\":%" PRIu64 ",\"set_to_visible_p99_us\":%" PRIu64
               ",\"set_to_visible_max_us\":%" PRIu64,
               b->o.replica_port, res->samples, res->secs, res->poll_gets, res->error_replies,
               rd_hist_percentile(h, 50), rd_hist_percentile(h, 90), rd_hist_percentile(h, 99),
               rd_hist_percentile(h, 99.9), h->total ? h->max : 0, rd_hist_mean(h), rd_hist_percentile(hs, 50),
               rd_hist_percentile(hs, 99), hs->total ? hs->max : 0);
        return;
    }
    printf("lag: %" PRIu64 " samples over %.2f s, replica %s:%s, %" PRIu64 " replica GETs, %" PRIu64
           " error replies\n",
           res->samples, res->secs, b->o.replica_host, b->o.replica_port, res->poll_gets, res->error_replies);
    printf("visibility_lag_us (primary ack -> readable on replica) p50 %" PRIu64 "  p90 %" PRIu64 "  p99 %" PRIu64
           "  p999 %" PRIu64 "  max %" PRIu64 "  mean %.1f\n",
           rd_hist_percentile(h, 50), rd_hist_percentile(h, 90), rd_hist_percentile(h, 99),
           rd_hist_percentile(h, 99.9), h->total ? h->max : 0, rd_hist_mean(h));
    printf("set_to_visible_us (SET sent -> readable on replica) p50 %" PRIu64 "  p99 %" PRIu64 "  max %" PRIu64
           "\n",
           rd_hist_percentile(hs, 50), rd_hist_percentile(hs, 99), hs->total ? hs->max : 0);
}

/* ------------------------------------------------------------ reporting */

/* Sentinel mode: reconnects and the write outage (B5), as JSON fields or text. */
static void failover_report(const struct bench *b)
{
    uint64_t last_old = 0, first_new = 0, cmin = UINT64_MAX, cmax = 0, csum = 0, cn = 0;
    for (unsigned i = 0; i < b->o.clients; i++) {
        const struct client *c = &b->cl[i];
        last_old = RD_MAX(last_old, c->last_old_ack_wall_us);
        if (c->first_new_ack_wall_us && (first_new == 0 || c->first_new_ack_wall_us < first_new))
            first_new = c->first_new_ack_wall_us;
        if (c->last_old_ack_wall_us && c->first_new_ack_wall_us > c->last_old_ack_wall_us) {
            uint64_t d = c->first_new_ack_wall_us - c->last_old_ack_wall_us;
            cmin = RD_MIN(cmin, d);
            cmax = RD_MAX(cmax, d);
            csum += d;
            cn++;
        }
    }
    int have = last_old && first_new;
    double outage_ms = have ? ((double)first_new - (double)last_old) / 1000.0 : -1;
    if (b->o.json) {
        printf(",\"sentinel\":\"%s:%s\",\"cluster\":", b->o.sentinel_host, b->o.sentinel_port);
        json_str(stdout, b->o.cluster);
        printf(",\"old_writer\":");
        json_str(stdout, b->init_addr);
        printf(",\"new_writer\":");
        json_str(stdout, b->new_addr);
        printf(",\"reconnects\":%" PRIu64 ",\"gave_up\":%" PRIu64 ",\"acked_old\":%" PRIu64
               ",\"acked_new\":%" PRIu64 ",\"last_old_ack_unix_ms\":%.3f,\"first_new_ack_unix_ms\":%.3f",
               b->reconnects, b->gave_up, b->acked_old, b->acked_new, (double)last_old / 1000.0,
               (double)first_new / 1000.0);
        if (have)
            printf(",\"outage_ms\":%.1f", outage_ms);
        else
            printf(",\"outage_ms\":null");
        printf(",\"client_outage_min_ms\":%.1f,\"client_outage_max_ms\":%.1f,\"client_outage_mean_ms\":%.1f"
               ",\"max_ack_gap_ms\":%.1f,\"max_ack_gap_from_unix_ms\":%.3f,\"max_ack_gap_to_unix_ms\":%.3f",
               cn ? (double)cmin / 1000.0 : 0, cn ? (double)cmax / 1000.0 : 0, cn ? (double)csum / 1000.0 / (double)cn : 0,
               (double)b->max_gap_us / 1000.0, (double)b->gap_from_wall_us / 1000.0, (double)b->gap_to_wall_us / 1000.0);
        return;
    }
    printf("sentinel %s:%s cluster %s: writer at start %s, %" PRIu64 " reconnects, %" PRIu64 " clients gave up\n",
           b->o.sentinel_host, b->o.sentinel_port, b->o.cluster, b->init_addr, b->reconnects, b->gave_up);
    if (!have) {
        printf("failover: no acknowledged write on another writer than %s (%" PRIu64 " acks on it)\n", b->init_addr,
               b->acked_old);
    } else {
        printf("failover: %s -> %s: %" PRIu64 " acks on the old writer, %" PRIu64 " on the new\n", b->init_addr,
               b->new_addr, b->acked_old, b->acked_new);
        printf("failover: last ack on the old writer at unix ms %.3f, first ack on the new at %.3f\n",
               (double)last_old / 1000.0, (double)first_new / 1000.0);
        printf("write outage %.1f ms (last ack on the old writer -> first ack on the new); per client min %.1f "
               "max %.1f mean %.1f ms\n",
               outage_ms, cn ? (double)cmin / 1000.0 : 0, cn ? (double)cmax / 1000.0 : 0,
               cn ? (double)csum / 1000.0 / (double)cn : 0);
    }
    printf("longest time without any ack: %.1f ms\n", (double)b->max_gap_us / 1000.0);
}

static void report(struct bench *b, const char *commit, const char *machine, const struct lag_result *lag)
{
    double secs = (double)(b->end_us - b->measure_start_us) / 1e6;
    double ops_s = secs > 0 ? (double)b->ops / secs : 0;
    const struct rd_hist *h = &b->hist;
    uint64_t p50 = rd_hist_percentile(h, 50), p90 = rd_hist_percentile(h, 90), p99 = rd_hist_percentile(h, 99),
             p999 = rd_hist_percentile(h, 99.9);
    const char *mode = b->o.lag ? "lag" : b->o.mode == MODE_RUN ? "run" : b->o.failover ? "failover" : "acked";
    if (b->o.json) {
        printf("{\"label\":");
        json_str(stdout, b->o.label);
        printf(",\"mode\":\"%s\",\"host\":", mode);
        json_str(stdout, b->o.host);
        printf(",\"port\":%s,\"clients\":%u,\"pipeline\":%u,\"keyspace\":%" PRIu64 ",\"value_size\":%zu"
               ",\"warmup_s\":%g,\"duration_s\":%.3f,\"seed\":%" PRIu64 ",\"ops\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"connections_lost\":%" PRIu64 ",\"ops_per_sec\":%.1f,\"p50_us\":%" PRIu64 ",\"p90_us\":%" PRIu64
               ",\"p99_us\":%" PRIu64 ",\"p999_us\":%" PRIu64 ",\"max_us\":%" PRIu64 ",\"mean_us\":%.1f,\"commit\":",
               b->o.port, b->o.clients, b->o.pipeline, b->o.keyspace, b->o.value_size, b->o.warmup_s, secs,
               b->o.seed, b->ops, b->errors, b->conn_lost, ops_s, p50, p90, p99, p999, h->max, rd_hist_mean(h));
        json_str(stdout, commit);
        printf(",\"machine\":");
        json_str(stdout, machine);
        if (lag)
            lag_report(b, lag);
        if (b->o.mode == MODE_ACKED)
            printf(",\"acked\":%" PRIu64, b->acked_writes);
        if (b->o.sentinel_host)
            failover_report(b);
        printf("}\n");
        return;
    }
    if (lag)
        lag_report(b, lag);
    if (b->o.sentinel_host && !lag)
        failover_report(b);
    if (lag && b->o.clients == 0)
        return;
    if (lag)
        printf("load on the primary (%u clients):\n", b->o.clients);
    printf("ops %" PRIu64 "  errors %" PRIu64 "  connections lost %" PRIu64 "  (over %.2f s%s)\n", b->ops,
           b->errors, b->conn_lost, secs, b->o.mode == MODE_RUN ? " after warm-up" : "");
    printf("throughput %.0f ops/s\n", ops_s);
    printf("latency_us p50 %" PRIu64 "  p90 %" PRIu64 "  p99 %" PRIu64 "  p999 %" PRIu64 "  max %" PRIu64
           "  mean %.1f\n",
           p50, p90, p99, p999, h->total ? h->max : 0, rd_hist_mean(h));
}

/* ------------------------------------------------------------ main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: redoubt-bench [options]\n"
            "  --host H          server address (127.0.0.1)\n"
            "  --port P          server port (6379)\n"
            "  --clients N       connections (8)\n"
            "  --duration S      measured seconds (10); in acked mode the whole run\n"
            "  --warmup S        seconds before measuring starts (1; run mode only)\n"
            "  --keyspace K      keys: key:%%08lu in [0,K) (run) or split across clients (acked) (100000)\n"
            "  --value-size B    value bytes (100)\n"
            "  --pipeline P      requests in flight per client (1; run mode)\n"
            "  --seed S          key sequence seed (random; printed)\n"
            "  --json            print one JSON object instead of text\n"
            "  --label TEXT      name of this run in the output\n"
            "  --mode M          run | acked | verify (run)\n"
            "  --state FILE      acked: write the ack state; verify: read it\n"
            "  --key-prefix P    acked: prefix every key with P (one prefix per round of a kill test)\n"
            "  --multi           acked: every 2nd key is written by MULTI/SET/SET key:m/EXEC\n"
            "  --mode lag        replica visibility lag (needs --replica-port); --clients N adds\n"
            "                    run-mode load on the primary (default 0 in lag mode)\n"
            "  --replica-host H  lag: replica address (--host)\n"
            "  --replica-port P  lag: replica port\n"
            "  --samples K       lag: at most K probes (100000); the run ends at --duration anyway\n"
            "  --lag-keys N      lag: cycle the probe over N keys (default 0: a new key per probe,\n"
            "                    which may land on a page the replica/reader has not cached)\n"
            "  --sentinel H:P    find the writer with SENTINEL get-master-addr-by-name (instead of\n"
            "                    --host/--port); run/acked/failover reconnect through it when a\n"
            "                    connection drops or answers an error\n"
            "  --cluster NAME    the cluster name to ask the sentinel about\n"
            "  --reconnect-s S   sentinel mode: retry every 50 ms for at most S seconds (30)\n"
            "  --stall-ms MS     sentinel mode: a request unanswered for MS ms makes the client ask\n"
            "                    the sentinel, and reconnect if it names another writer (1000; 0: off)\n"
            "  --mode failover   acked mode through --sentinel: reconnects when the writer dies and\n"
            "                    reports the write outage (last ack on the old writer -> first ack\n"
            "                    on the new one); needs --state; exits 1 if no new writer acked\n");
}

static uint64_t parse_u64(const char *name, const char *s, uint64_t lo, uint64_t hi)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        die("--%s must be an integer in [%" PRIu64 ", %" PRIu64 "], got \"%s\"", name, lo, hi, s);
    return v;
}

static double parse_secs(const char *name, const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0) || v > 1e7)
        die("--%s must be a number of seconds, got \"%s\"", name, s);
    return v;
}

static void parse_opts(int argc, char **argv, struct bench_opts *o)
{
    static const struct option lo[] = {
        {"host", required_argument, 0, 'h'},     {"port", required_argument, 0, 'p'},
        {"clients", required_argument, 0, 'c'},  {"duration", required_argument, 0, 'd'},
        {"keyspace", required_argument, 0, 'k'}, {"value-size", required_argument, 0, 'v'},
        {"pipeline", required_argument, 0, 'P'}, {"seed", required_argument, 0, 's'},
        {"json", no_argument, 0, 'j'},           {"label", required_argument, 0, 'l'},
        {"warmup", required_argument, 0, 'w'},   {"mode", required_argument, 0, 'm'},
        {"state", required_argument, 0, 'S'},    {"multi", no_argument, 0, 'M'},
        {"key-prefix", required_argument, 0, 'K'}, {"help", no_argument, 0, 'H'},
        {"replica-host", required_argument, 0, 'R'}, {"replica-port", required_argument, 0, 'r'},
        {"samples", required_argument, 0, 'n'},  {"sentinel", required_argument, 0, 'T'},
        {"cluster", required_argument, 0, 'C'},  {"reconnect-s", required_argument, 0, 'X'},
        {"stall-ms", required_argument, 0, 'Y'}, {"lag-keys", required_argument, 0, 'L'},
        {0, 0, 0, 0},
    };
    *o = (struct bench_opts){.host = "127.0.0.1", .port = "6379", .clients = 8, .duration_s = 10,
                             .warmup_s = 1, .keyspace = 100000, .value_size = 100, .pipeline = 1,
                             .label = "", .mode = MODE_RUN, .key_prefix = "", .samples = 100000,
                             .reconnect_s = 30, .stall_ms = 1000};
    int have_seed = 0, ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': o->host = optarg; break;
        case 'p': parse_u64("port", optarg, 1, 65535); o->port = optarg; break;
        case 'c':
            o->clients = (unsigned)parse_u64("clients", optarg, 0, BENCH_MAX_CLIENTS);
            o->clients_given = 1;
            break;
        case 'R': o->replica_host = optarg; break;
        case 'r': parse_u64("replica-port", optarg, 1, 65535); o->replica_port = optarg; break;
        case 'n': o->samples = parse_u64("samples", optarg, 1, BENCH_LAG_MAX_SAMPLES); break;
        case 'L': o->lag_keys = parse_u64("lag-keys", optarg, 0, 1000000); break;
        case 'T': {
            char *hp = strdup(optarg), *colon = hp ? strrchr(hp, ':') : NULL;
            if (hp == NULL)
                die("out of memory");
            if (colon == NULL || colon == hp || colon[1] == 0)
                die("--sentinel expects HOST:PORT, got \"%s\"", optarg);
            *colon = 0;
            parse_u64("sentinel port", colon + 1, 1, 65535);
            o->sentinel_host = hp;
            o->sentinel_port = colon + 1;
            break;
        }
        case 'C': o->cluster = optarg; break;
        case 'X': o->reconnect_s = parse_secs("reconnect-s", optarg); break;
        case 'Y': o->stall_ms = (unsigned)parse_u64("stall-ms", optarg, 0, 3600000); break;
        case 'd': o->duration_s = parse_secs("duration", optarg); break;
        case 'w': o->warmup_s = parse_secs("warmup", optarg); break;
        case 'k': o->keyspace = parse_u64("keyspace", optarg, 1, 100000000); break;
        case 'v': o->value_size = (size_t)parse_u64("value-size", optarg, 0, BENCH_MAX_VALUE_BYTES); break;
        case 'P': o->pipeline = (unsigned)parse_u64("pipeline", optarg, 1, BENCH_MAX_PIPELINE); break;
        case 's': o->seed = parse_u64("seed", optarg, 0, UINT64_MAX); have_seed = 1; break;
        case 'j': o->json = 1; break;
        case 'l': o->label = optarg; break;
        case 'S': o->state_path = optarg; break;
        case 'M': o->multi = 1; break;
        case 'K':
            if (strlen(optarg) > 64)
                die("--key-prefix is limited to 64 bytes");
            o->key_prefix = optarg;
            break;
        case 'm':
            if (strcmp(optarg, "run") == 0)
                o->mode = MODE_RUN;
            else if (strcmp(optarg, "acked") == 0)
                o->mode = MODE_ACKED;
            else if (strcmp(optarg, "verify") == 0)
                o->mode = MODE_VERIFY;
            else if (strcmp(optarg, "lag") == 0)
                o->mode = MODE_RUN, o->lag = 1;
            else if (strcmp(optarg, "failover") == 0)
                o->mode = MODE_ACKED, o->failover = 1;
            else
                die("unknown --mode \"%s\" (run, acked, verify, lag, failover)", optarg);
            break;
        case 'H': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc)
        die("unexpected argument \"%s\" (see --help)", argv[optind]);
    if (o->lag) {
        if (o->replica_port == NULL)
            die("--mode lag needs --replica-port P");
        if (o->replica_host == NULL)
            o->replica_host = o->host;
        if (!o->clients_given)
            o->clients = 0;
    } else if (o->clients == 0) {
        die("--clients must be at least 1 in mode run/acked");
    }
    if ((o->sentinel_host == NULL) != (o->cluster == NULL))
        die("--sentinel HOST:PORT and --cluster NAME go together");
    if (o->failover && o->sentinel_host == NULL)
        die("--mode failover needs --sentinel HOST:PORT --cluster NAME");
    if (o->mode != MODE_RUN && o->state_path == NULL)
        die("--mode %s needs --state FILE", o->failover ? "failover" : o->mode == MODE_ACKED ? "acked" : "verify");
    if (o->mode == MODE_ACKED) {
        o->pipeline = 1;
        o->warmup_s = 0;
    }
    if (!have_seed)
        o->seed = rd_wall_us() ^ ((uint64_t)getpid() << 32);
}

int main(int argc, char **argv)
{
    struct bench b;
    memset(&b, 0, sizeof(b));
    parse_opts(argc, argv, &b.o);
    signal(SIGPIPE, SIG_IGN);
    static char wr_host[256], wr_port[16];
    if (b.o.sentinel_host) { /* the writer, from the sentinel (retried: it may be starting or failing over) */
        char why[256];
        uint64_t give_up = rd_now_us() + (uint64_t)(b.o.reconnect_s * 1e6);
        while (sentinel_resolve(&b.o, wr_host, sizeof(wr_host), wr_port, sizeof(wr_port), why, sizeof(why)) < 0) {
            if (rd_now_us() >= give_up)
                die("%s", why);
            usleep(BENCH_RECONNECT_EVERY_US);
        }
        b.o.host = wr_host;
        b.o.port = wr_port;
        snprintf(b.init_addr, sizeof(b.init_addr), "%s:%s", wr_host, wr_port);
    }
    if (b.o.mode == MODE_VERIFY)
        return verify_run(&b);

    char commit[64], machine[512];
    git_commit(commit, sizeof(commit));
    machine_desc(machine, sizeof(machine));
    FILE *info = b.o.json ? stderr : stdout;
    fprintf(info, "redoubt-bench: mode %s, seed %" PRIu64 " (replay the key sequence with --seed %" PRIu64 ")\n",
            b.o.lag ? "lag" : b.o.mode == MODE_RUN ? "run" : b.o.failover ? "failover" : "acked", b.o.seed, b.o.seed);
    if (!b.o.json) {
        printf("machine: %s; commit %s\n", machine, commit);
        printf("settings: host %s port %s clients %u pipeline %u keyspace %" PRIu64 " value_size %zu B warmup %g s "
               "duration %g s%s label \"%s\"\n",
               b.o.host, b.o.port, b.o.clients, b.o.pipeline, b.o.keyspace, b.o.value_size, b.o.warmup_s,
               b.o.duration_s, b.o.multi ? " multi" : "", b.o.label);
        if (b.o.lag)
            printf("lag: replica %s:%s, at most %" PRIu64 " samples\n", b.o.replica_host, b.o.replica_port,
                   b.o.samples);
        if (b.o.sentinel_host)
            printf("sentinel: %s:%s cluster %s names the writer %s; reconnect for at most %g s\n",
                   b.o.sentinel_host, b.o.sentinel_port, b.o.cluster, b.init_addr, b.o.reconnect_s);
        fflush(stdout);
    }

    b.ep = epoll_create1(EPOLL_CLOEXEC);
    if (b.ep < 0)
        die("epoll_create1: %s", strerror(errno));
    rd_hist_init(&b.hist);
    b.cl = xcalloc(b.o.clients, sizeof(*b.cl));
    b.keys_per_client = RD_MAX(b.o.keyspace / RD_MAX(b.o.clients, 1u), 1u);
    b.value = xcalloc(1, b.o.value_size + 1);
    b.value_scratch = xcalloc(1, b.o.value_size + 1);
    uint64_t vs = b.o.seed ^ 0x76616c7565ull;
    for (size_t i = 0; i < b.o.value_size; i++)
        b.value[i] = (uint8_t)('a' + splitmix64(&vs) % 26);
    for (unsigned i = 0; i < b.o.clients; i++) {
        struct client *c = &b.cl[i];
        char why[256];
        c->id = i;
        c->rng = b.o.seed * 0x9e3779b97f4a7c15ull + i;
        if (client_connect(&b, c, b.o.host, b.o.port, why, sizeof(why)) < 0)
            die("%s (client %u)", why, i);
        c->sent_us = xcalloc(b.o.pipeline, sizeof(uint64_t));
        if (b.o.mode == MODE_ACKED) {
            c->acked_seq = xcalloc(b.keys_per_client, sizeof(int64_t));
            c->inflight_seq = xcalloc(b.keys_per_client, sizeof(int64_t));
            for (uint64_t k = 0; k < b.keys_per_client; k++)
                c->acked_seq[k] = c->inflight_seq[k] = -1;
        }
    }
    uint64_t start_us = rd_now_us();
    b.measure_start_us = start_us + (uint64_t)(b.o.warmup_s * 1e6);
    b.end_us = b.measure_start_us + (uint64_t)(b.o.duration_s * 1e6);
    struct lag_result *lag = NULL;
    if (b.o.lag) {
        lag = xcalloc(1, sizeof(*lag));
        pthread_t load;
        int prc = b.o.clients ? pthread_create(&load, NULL, lag_load_thread, &b) : 0;
        if (prc != 0)
            die("pthread_create: %s", strerror(prc));
        lag_probe(&b, b.measure_start_us, b.end_us, lag);
        if (b.o.clients && (prc = pthread_join(load, NULL)) != 0)
            die("pthread_join: %s", strerror(prc));
    } else {
        bench_loop(&b);
    }
    uint64_t stop_us = rd_now_us();
    if (b.o.mode == MODE_ACKED || stop_us < b.end_us)
        b.end_us = RD_MAX(stop_us, b.measure_start_us); /* the server went away early, or drain time */

    int status = 0;
    if (b.o.mode == MODE_ACKED) {
        uint64_t inflight = 0, alive = 0;
        for (unsigned i = 0; i < b.o.clients; i++) {
            if (b.o.sentinel_host) { /* dropped connections leave writes in flight too */
                for (uint64_t k = 0; k < b.keys_per_client; k++)
                    inflight += (uint64_t)(b.cl[i].inflight_seq[k] >= 0);
            } else {
                inflight += (uint64_t)b.cl[i].pending;
            }
            alive += (uint64_t)b.cl[i].alive;
        }
        if (!b.o.json)
            printf("acked: %" PRIu64 " acknowledged writes, %" PRIu64 " in flight at the end, %" PRIu64
                   " of %u connections still open (%s)\n",
                   b.acked_writes, inflight, alive, b.o.clients,
                   alive ? "duration ended" : "the server went away");
        if (acked_write_state(&b) < 0)
            status = 2;
        else if (b.o.failover) {
            int seen = 0;
            for (unsigned i = 0; i < b.o.clients; i++)
                seen |= b.cl[i].first_new_ack_wall_us != 0;
            if (!seen) {
                fprintf(stderr, "redoubt-bench: failover: no write was acknowledged by a new writer\n");
                status = 1;
            }
        }
    } else if (b.o.sentinel_host ? b.gave_up > 0 : b.conn_lost > 0) {
        status = 1;
    }
    report(&b, commit, machine, lag);
    free(lag);
    for (unsigned i = 0; i < b.o.clients; i++) {
        struct client *c = &b.cl[i];
        if (c->alive && close(c->fd) < 0)
            fprintf(stderr, "redoubt-bench: close: %s\n", strerror(errno));
        rd_buf_free(&c->in);
        rd_buf_free(&c->out);
        free(c->sent_us);
        free(c->acked_seq);
        free(c->inflight_seq);
    }
    free(b.cl);
    free(b.value);
    free(b.value_scratch);
    if (close(b.ep) < 0)
        fprintf(stderr, "redoubt-bench: close: %s\n", strerror(errno));
    return status;
}
