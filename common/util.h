/*
 * util.h — small helpers shared by every module: little-endian put/get,
 * always-on asserts, clocks, min/max.
 *
 * Persistent and wire integers are little-endian and go through these helpers,
 * never through a cast struct (STYLE.md).
 */
#ifndef RD_UTIL_H
#define RD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define RD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define RD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RD_MAX(a, b) ((a) > (b) ? (a) : (b))
#define RD_ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))

/* Replaces dir/name with len bytes of data atomically and durably: writes
 * dir/name.tmp, fsyncs it, renames it over dir/name, fsyncs dir. A crash leaves
 * the old file or the new one, never a mix. Returns 0 or -errno (the .tmp is
 * removed on failure). */
int rd_write_file_atomic(const char *dir, const char *name, const void *data, size_t len);

/* Fault injection for tests (PostgreSQL's injection points, SQLite's test
 * controls): RD_FAULT="point:N[,point:N...]" in the environment makes
 * rd_fault(point) return 1 on its Nth call (1-based) and on no other; 0 always
 * when RD_FAULT is unset. Points: wal_fsync (a WAL fdatasync reports EIO),
 * sn_fsync (a storage node's hot-log fdatasync reports EIO). */
int rd_fault(const char *point);

/* Always compiled in: guards programmer errors, never bad input. */
void rd_assert_fail(const char *expr, const char *file, int line, const char *func)
    __attribute__((noreturn));
#define rd_assert(expr) \
    ((expr) ? (void)0 : rd_assert_fail(#expr, __FILE__, __LINE__, __func__))

static inline void rd_put_u16le(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void rd_put_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void rd_put_u64le(uint8_t *p, uint64_t v)
{
    rd_put_u32le(p, (uint32_t)v);
    rd_put_u32le(p + 4, (uint32_t)(v >> 32));
}
static inline uint16_t rd_get_u16le(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rd_get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t rd_get_u64le(const uint8_t *p)
{
    return (uint64_t)rd_get_u32le(p) | ((uint64_t)rd_get_u32le(p + 4) << 32);
}

static inline uint64_t rd_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static inline uint64_t rd_now_us(void) { return rd_now_ns() / 1000u; }
static inline uint64_t rd_now_ms(void) { return rd_now_ns() / 1000000u; }

/* Wall clock in microseconds since the epoch (for logs and lag stamps across hosts). */
static inline uint64_t rd_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000u;
}

#endif
