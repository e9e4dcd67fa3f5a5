/*
 * err.h — error codes. Functions return 0 or a negative code: -errno for
 * system errors, or one of the project codes below (a range far from errno).
 */
#ifndef RD_ERR_H
#define RD_ERR_H

enum rd_err {
    RD_OK = 0,
    RD_ECORRUPT = -10000,  /* bad bytes on disk or on the wire (checksum, magic, bounds) */
    RD_ENOTFOUND = -10001, /* key or object does not exist */
    RD_ETOOBIG = -10002,   /* key, value or transaction exceeds a documented limit */
    RD_EPROTO = -10003,    /* peer or client broke the protocol */
    RD_EFULL = -10004,     /* a bounded queue or buffer is full: back-pressure */
    RD_ESTALE = -10005,    /* stale epoch or timeline */
    RD_EQUORUM = -10006,   /* no quorum reachable */
    RD_EVERSION = -10007,  /* unknown format version */
    RD_ESTATE = -10008,    /* operation not allowed in the current state */
    RD_EAUTH = -10009,     /* a cluster peer failed authentication (wrong secret, cluster or nonce) */
    RD_EAGAIN = -10010,    /* not here yet: a page was requested; retry the operation when it arrives */
};

/* Returns a static string for any code above, or strerror(-err) for -errno. */
const char *rd_strerror(int err);

#endif
