/*
 * log.h — one logging macro with levels. Every line is prefixed with the wall
 * time, the process role and pid:  2026-11-27T03:41:18.123Z [primary 4242] W message
 * Log an error once, where it is handled.
 */
#ifndef RD_LOG_H
#define RD_LOG_H

enum rd_log_level { RD_LOG_DEBUG = 0, RD_LOG_INFO = 1, RD_LOG_WARN = 2, RD_LOG_ERROR = 3, RD_LOG_PANIC = 4 };

/* role: a short static string ("standalone", "bench" ...); copied. */
void rd_log_init(const char *role, enum rd_log_level min_level);
void rd_log_set_role(const char *role);
void rd_log(enum rd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Logs at PANIC level and exits the process with status 70 (EX_SOFTWARE), without
 * flushing or cleaning anything: used when continuing could acknowledge a lie
 * (a failed fsync, PostgreSQL's PANIC). */
void rd_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define rd_debug(...) rd_log(RD_LOG_DEBUG, __VA_ARGS__)
#define rd_info(...) rd_log(RD_LOG_INFO, __VA_ARGS__)
#define rd_warn(...) rd_log(RD_LOG_WARN, __VA_ARGS__)
#define rd_error(...) rd_log(RD_LOG_ERROR, __VA_ARGS__)

#endif
