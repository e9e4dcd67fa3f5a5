/* common.c — errors, logging, checksums, buffers, histograms. */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "buf.h"
#include "checksum.h"
#include "err.h"
#include "hist.h"
#include "log.h"
#include "util.h"

/* ---------------------------------------------------------------- errors */

const char *rd_strerror(int err)
{
    switch (err) {
    case RD_OK: return "ok";
    case RD_ECORRUPT: return "data corruption (checksum, magic or bounds check failed)";
    case RD_ENOTFOUND: return "not found";
    case RD_ETOOBIG: return "exceeds a size limit";
    case RD_EPROTO: return "protocol error";
    case RD_EFULL: return "queue or buffer full";
    case RD_ESTALE: return "stale epoch or timeline";
    case RD_EQUORUM: return "quorum not reachable";
    case RD_EVERSION: return "unsupported format version";
    case RD_ESTATE: return "not allowed in the current state";
    case RD_EAUTH: return "peer authentication failed";
    case RD_EAGAIN: return "page requested from storage, not here yet";
    default: break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}

int rd_fault(const char *point)
{
    enum { MAX_POINTS = 8 };
    static int parsed;
    static struct { char name[32]; uint64_t at, hits; } pts[MAX_POINTS];
    static size_t npts;
    if (!parsed) {
        parsed = 1;
        const char *env = getenv("RD_FAULT");
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", env ? env : "");
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && npts < MAX_POINTS;
             tok = strtok_r(NULL, ",", &save)) {
            char *colon = strchr(tok, ':');
            if (colon == NULL)
                continue;
            *colon = 0;
            snprintf(pts[npts].name, sizeof(pts[npts].name), "%s", tok);
            pts[npts].at = strtoull(colon + 1, NULL, 10);
            rd_warn("fault injection armed: %s fails on call %" PRIu64 " (RD_FAULT)", pts[npts].name,
                    pts[npts].at);
            npts++;
        }
    }
    for (size_t i = 0; i < npts; i++)
        if (strcmp(pts[i].name, point) == 0 && ++pts[i].hits == pts[i].at)
            return 1;
    return 0;
}

int rd_write_file_atomic(const char *dir, const char *name, const void *data, size_t len)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path) ||
        snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    int fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rc = 0;
    const uint8_t *p = data;
    for (size_t done = 0; done < len && rc == 0;) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            rc = w < 0 ? -errno : -EIO;
        else
            done += (size_t)w;
    }
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    if (fsync(dfd) < 0)
        rc = -errno;
    if (close(dfd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

void rd_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    fprintf(stderr, "assertion failed: %s (%s:%d in %s)\n", expr, file, line, func);
    fflush(stderr);
    abort();
}

/* ---------------------------------------------------------------- logging */

static char log_role[32] = "redoubt";
static enum rd_log_level log_min = RD_LOG_INFO;

void rd_log_init(const char *role, enum rd_log_level min_level)
{
    rd_log_set_role(role);
    log_min = min_level;
    const char *env = getenv("RD_LOG_LEVEL");
    if (env != NULL && strcmp(env, "debug") == 0)
        log_min = RD_LOG_DEBUG;
}

void rd_log_set_role(const char *role) { snprintf(log_role, sizeof(log_role), "%s", role); }

static void log_vwrite(enum rd_log_level level, const char *fmt, va_list ap)
{
    static const char letters[] = "DIWEP";
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ [%s %d] %c ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), log_role, (int)getpid(), letters[level]);
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : RD_MIN((size_t)m, sizeof(line) - (size_t)n - 2));
    line[len++] = '\n';
    /* One write per line so concurrent processes sharing a log do not interleave. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nowhere left to report a failed log write */
}

void rd_log(enum rd_log_level level, const char *fmt, ...)
{
    if (level < log_min)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

void rd_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(RD_LOG_PANIC, fmt, ap);
    va_end(ap);
    _exit(70);
}

/* ---------------------------------------------------------------- checksums */

uint64_t rd_checksum64(const void *data, size_t len, uint64_t seed)
{
    return XXH3_64bits_withSeed(data, len, seed);
}

uint64_t rd_checksum64_2(const void *a, size_t a_len, const void *b, size_t b_len, uint64_t seed)
{
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset_withSeed(&st, seed);
    XXH3_64bits_update(&st, a, a_len);
    XXH3_64bits_update(&st, b, b_len);
    return XXH3_64bits_digest(&st);
}

/* ---------------------------------------------------------------- buffers */

int rd_buf_reserve(struct rd_buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL) /* C10: one place for every buffer of the project */
        rd_panic("out of memory: a buffer of %zu bytes could not grow to %zu", b->cap, cap);
    b->data = p;
    b->cap = cap;
    return 0;
}

int rd_buf_append(struct rd_buf *b, const void *data, size_t len)
{
    int rc = rd_buf_reserve(b, len);
    if (rc < 0)
        return rc;
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int rd_buf_appendf(struct rd_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    int rc = rd_buf_reserve(b, (size_t)n + 1);
    if (rc < 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void rd_buf_consume(struct rd_buf *b, size_t n)
{
    rd_assert(n <= b->len);
    if (n < b->len)
        memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void rd_buf_reset(struct rd_buf *b) { b->len = 0; }

void rd_buf_free(struct rd_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---------------------------------------------------------------- histogram */

static unsigned hist_index(uint64_t v)
{
    if (v < RD_HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);            /* >= SUB_BITS */
    unsigned shift = msb - (RD_HIST_SUB_BITS - 1);                /* keep SUB_BITS top bits */
    unsigned sub = (unsigned)(v >> shift) & (RD_HIST_SUB / 2 - 1); /* below the leading 1 */
    return (shift + 1) * (RD_HIST_SUB / 2) + sub + RD_HIST_SUB / 2;
}

static uint64_t hist_upper(unsigned idx)
{
    if (idx < RD_HIST_SUB)
        return idx;
    unsigned k = idx - RD_HIST_SUB / 2;
    unsigned shift = k / (RD_HIST_SUB / 2) - 1;
    uint64_t sub = k % (RD_HIST_SUB / 2);
    uint64_t base = ((uint64_t)(RD_HIST_SUB / 2) + sub) << shift;
    return base + (((uint64_t)1 << shift) - 1);
}

void rd_hist_init(struct rd_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void rd_hist_record(struct rd_hist *h, uint64_t v)
{
    unsigned i = hist_index(v);
    rd_assert(i < RD_HIST_BUCKETS);
    h->counts[i]++;
    h->total++;
    h->sum += (long double)v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void rd_hist_merge(struct rd_hist *dst, const struct rd_hist *src)
{
    for (unsigned i = 0; i < RD_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t rd_hist_percentile(const struct rd_hist *h, double p)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)((p / 100.0) * (double)h->total + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < RD_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank)
            return RD_MIN(hist_upper(i), h->max);
    }
    return h->max;
}

double rd_hist_mean(const struct rd_hist *h)
{
    return h->total ? (double)(h->sum / (long double)h->total) : 0.0;
}
