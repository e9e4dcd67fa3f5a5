/*
 * buf.h — a growable byte buffer with a hard capacity limit.
 * Ownership: the buffer owns data; rd_buf_free releases it.
 */
#ifndef RD_BUF_H
#define RD_BUF_H

#include <stddef.h>
#include <stdint.h>

struct rd_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Ensures room for `extra` more bytes. Out of memory ends the process here (rd_panic,
 * as Redis's zmalloc does): callers need no check of their own. Return 0 (kept int
 * so older call sites that still test for < 0 compile; they can drop the test). */
int rd_buf_reserve(struct rd_buf *b, size_t extra);
int rd_buf_append(struct rd_buf *b, const void *data, size_t len);
/* 0, or -EINVAL for a bad format (a programmer error); out of memory aborts. */
int rd_buf_appendf(struct rd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (memmove). */
void rd_buf_consume(struct rd_buf *b, size_t n);
void rd_buf_reset(struct rd_buf *b);
void rd_buf_free(struct rd_buf *b);

#endif
