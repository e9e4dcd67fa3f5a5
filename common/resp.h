/*
 * resp.h — RESP2 (the Redis protocol): the request parser the server runs on
 * client input, the reply encoders it writes with, and a reply reader for
 * clients (redoubt-bench, tests).
 *
 * Requests (what a client sends)
 *   multibulk  *<n>\r\n then n times $<len>\r\n<len bytes>\r\n
 *              n <= 0 (*0, *-1) is consumed and yields zero arguments.
 *   inline     any other line, ended by \n (an optional \r before it is
 *              dropped), split on whitespace; "..." supports \" \\ \n \r \t
 *              \b \a \xHH, '...' supports \' ; a closing quote must be
 *              followed by whitespace or the end of the line. A blank line
 *              is consumed and yields zero arguments.
 *   Integers are strict: optional '-', decimal digits, no leading zeros
 *   ("0" itself is fine), no '+', no spaces, must fit in int64.
 *
 * Invariants
 *   RP1. resp_parse reads only buf[0 .. len-1] and never writes to it.
 *   RP2. A call does work bounded by O(header bytes + number of arguments) of
 *       the command it looks at: a bulk payload is never scanned, so feeding
 *       a huge bulk in small pieces costs O(1) per call (inline lines, at most
 *       max_inline_bytes, are scanned with memchr).
 *   RP3. Every count and length is checked against struct resp_limits before it
 *       is used to allocate or index; memory for arguments grows with the
 *       arguments actually received, never with a declared count.
 *   RP4. Encoders are all-or-nothing: on -ENOMEM the rd_buf is unchanged.
 */
#ifndef RD_RESP_H
#define RD_RESP_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* ------------------------------------------------------------ request parser */

#define RESP_DEFAULT_MAX_ARGS 1048576u
#define RESP_DEFAULT_MAX_BULK_BYTES (2u * 1024u * 1024u)
#define RESP_DEFAULT_MAX_INLINE_BYTES (64u * 1024u)

struct resp_limits {
    size_t max_args;         /* multibulk count above this: "invalid multibulk length" */
    size_t max_bulk_bytes;   /* bulk length above this: "invalid bulk length" */
    size_t max_inline_bytes; /* inline line (without its \n) above this: "too big inline request" */
};

void resp_limits_default(struct resp_limits *lim);

/* One argument. ptr points into the caller's input buffer (multibulk and
 * unquoted inline) or into resp_args.scratch (decoded quoted inline); valid
 * until the input buffer changes or the next resp_parse on the same resp_args. */
struct resp_arg {
    const uint8_t *ptr;
    size_t len;
};

/* Arguments of the last parsed command. Zero-initialise; reuse across calls
 * (capacity is kept); release with resp_args_free. */
struct resp_args {
    struct resp_arg *v;
    size_t n, cap;
    size_t need_bytes;  /* after a 0 return: total bytes from buf[0] known to be
                           needed before the command can complete (a lower bound,
                           >= len + 1); callers may wait for that much input */
    uint8_t *scratch;   /* decoded quoted inline arguments */
    size_t scratch_cap;
};

void resp_args_free(struct resp_args *a);

/*
 * Parses at most one command from buf[0 .. len-1].
 *   > 0      bytes consumed by one complete command; out->v[0 .. out->n-1] are
 *            its arguments. out->n == 0 means there was nothing to execute (a
 *            blank inline line, *0 or *-1): skip it and parse on.
 *   0        incomplete: call again with the same bytes plus more; out->need_bytes
 *            says how many bytes (from buf[0]) are needed at least.
 *   RD_EPROTO  malformed input; *err (if err is not NULL) is a Redis-like message
 *            without the "ERR " prefix, e.g. "Protocol error: invalid bulk length",
 *            a static or thread-local string valid until the next resp_parse call
 *            on this thread. The connection cannot be resynchronised: close it.
 *   -ENOMEM  out of memory (out is unchanged apart from n = 0).
 * lim NULL means resp_limits_default. buf may be NULL when len == 0.
 */
int resp_parse(const uint8_t *buf, size_t len, const struct resp_limits *lim,
               struct resp_args *out, const char **err);

/* ------------------------------------------------------------ reply encoders */
/* All append to b and return 0 or -ENOMEM (RP4). */

/* +s\r\n and -s\r\n; any \r or \n in s is written as a space (as Redis does)
 * so a message can never break the framing. s is a NUL-terminated string. */
/* 1 if the argument equals s, ASCII case ignored (command and option names). */
int resp_arg_eq(const struct resp_arg *a, const char *s);

int resp_simple(struct rd_buf *b, const char *s);
int resp_error(struct rd_buf *b, const char *msg);
int resp_errorf(struct rd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int resp_int(struct rd_buf *b, int64_t v);                  /* :v\r\n */
int resp_bulk(struct rd_buf *b, const void *p, size_t len); /* $len\r\n...\r\n */
int resp_bulk_str(struct rd_buf *b, const char *s);
int resp_bulkf(struct rd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int resp_null(struct rd_buf *b);                            /* $-1\r\n */
int resp_array_hdr(struct rd_buf *b, size_t n);             /* *n\r\n, then n replies */
int resp_null_array(struct rd_buf *b);                      /* *-1\r\n */

/* A request as a multibulk: what clients send. argv[i].ptr are not kept. */
int resp_command(struct rd_buf *b, size_t argc, const struct resp_arg *argv);
/* The same with NUL-terminated strings. */
int resp_command_str(struct rd_buf *b, size_t argc, const char *const *argv);

/* ------------------------------------------------------------ reply reader */

enum resp_type {
    RESP_STATUS = 1,   /* +text */
    RESP_ERROR,        /* -text */
    RESP_INT,          /* :n */
    RESP_BULK,         /* $len payload */
    RESP_NIL,          /* $-1 */
    RESP_ARRAY,        /* *n elements */
    RESP_NIL_ARRAY,    /* *-1 */
};

#define RESP_REPLY_MAX_DEPTH 16                       /* nested arrays */
#define RESP_REPLY_MAX_LINE_BYTES (1024u * 1024u)     /* + - : lines and headers */
#define RESP_REPLY_MAX_BULK_BYTES (512ull * 1024u * 1024u)
#define RESP_REPLY_MAX_ELEMS (64u * 1024u * 1024u)

/* One reply. str points into the buffer given to resp_read_reply (valid as
 * long as it is); elems is malloc'd and owned by the reply: free the whole
 * tree with resp_reply_free. */
struct resp_reply {
    enum resp_type type;
    int64_t integer;           /* RESP_INT */
    const uint8_t *str;        /* RESP_STATUS, RESP_ERROR, RESP_BULK */
    size_t len;
    struct resp_reply *elems;  /* RESP_ARRAY */
    size_t nelems;
};

/*
 * Reads one reply from buf[0 .. len-1]: returns the bytes it took, 0 when
 * incomplete, RD_EPROTO on bytes that are not RESP2 (or exceed the limits
 * above), -ENOMEM. On anything but > 0, *out holds nothing to free (but
 * calling resp_reply_free on it is harmless).
 */
int resp_read_reply(const uint8_t *buf, size_t len, struct resp_reply *out);
void resp_reply_free(struct resp_reply *r);
/* True if r is a status reply equal to s ("OK", "QUEUED"). */
int resp_reply_is_status(const struct resp_reply *r, const char *s);

#endif
