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

/* Ensures room for `extra` more bytes. Returns 0, or -ENOMEM. */
int rd_buf_reserve(struct rd_buf *b, size_t extra);
int rd_buf_append(struct rd_buf *b, const void *data, size_t len);
int rd_buf_appendf(struct rd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (memmove). */
void rd_buf_consume(struct rd_buf *b, size_t n);
void rd_buf_reset(struct rd_buf *b);
void rd_buf_free(struct rd_buf *b);

#endif
