/*
 * auth.h — peer authentication between the processes of one cluster
 * (common/README.md "Peer authentication"). Both ends prove that they hold the
 * cluster's shared secret by challenge–response with fresh 32-byte nonces from
 * each side; the MAC is libsodium's crypto_auth (HMAC-SHA-512-256), the key is
 * BLAKE2b-256 (crypto_generichash) of the secret keyed by the cluster id. No
 * crypto is written here: only the message layouts and the order of checks.
 *
 * Messages (all three share an 8-byte header; integers little-endian):
 *
 * | offset | size | field                                              |
 * |-------:|-----:|----------------------------------------------------|
 * | 0      | 4    | magic "RDA1" (0x31414452)                          |
 * | 4      | 1    | version (1)                                        |
 * | 5      | 1    | type: 1 HELLO, 2 CHALLENGE, 3 PROOF                |
 * | 6      | 2    | zero                                               |
 *
 * HELLO (client -> server, 48 bytes): [8,16) cluster tag (the first 8 bytes of
 *   BLAKE2b-256 of the cluster id: "another cluster" is told apart from "wrong
 *   secret"), [16,48) client nonce cn.
 * CHALLENGE (server -> client, 72 bytes): [8,40) server nonce sn,
 *   [40,72) MAC(key, "redoubt-auth-srv" || tag || cn || sn).
 * PROOF (client -> server, 40 bytes): [8,40) MAC(key, "redoubt-auth-cli" || tag || cn || sn).
 *
 * A message is valid iff its length is exact, magic, version, type and the zero
 * bytes check, and (CHALLENGE, PROOF) the MAC verifies (crypto_auth_verify,
 * constant time). The two labels differ, so a server's MAC is never a valid
 * proof (no reflection); each side's MAC covers the other side's fresh nonce,
 * so a recorded CHALLENGE or PROOF never verifies in another handshake.
 *
 * What it does not do: messages after the handshake carry no MAC (the commit
 * path pays nothing; an attacker who can inject into an established TCP
 * connection is out of scope, as with PostgreSQL's SCRAM without channel
 * binding), and nothing is encrypted.
 *
 * Transports: on frame channels (storage nodes) each message is the payload
 * of one frame of type RD_AUTH_FRAME_TYPE; on RESP channels (redoubt's client
 * port, the monitor) it is `REDOUBT.AUTH <hex>`, answered with a bulk string
 * (the CHALLENGE in hex) or +OK (after PROOF), or -NOPEERAUTH and a close.
 */
#ifndef RD_AUTH_H
#define RD_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define RD_AUTH_MAGIC 0x31414452u /* "RDA1" */
#define RD_AUTH_VERSION 1u
#define RD_AUTH_NONCE_BYTES 32u
#define RD_AUTH_MAC_BYTES 32u
#define RD_AUTH_KEY_BYTES 32u
#define RD_AUTH_TAG_BYTES 8u
#define RD_AUTH_HELLO_LEN 48u
#define RD_AUTH_CHALLENGE_LEN 72u
#define RD_AUTH_PROOF_LEN 40u
#define RD_AUTH_MSG_MAX 72u
#define RD_AUTH_FRAME_TYPE 60u      /* frame type of an auth message on frame channels */
#define RD_AUTH_CLUSTER_ID_MAX 63u
#define RD_AUTH_DEADLINE_MS 5000u   /* an unauthenticated peer connection lives at most this long */

enum rd_auth_type { RD_AUTH_HELLO = 1, RD_AUTH_CHALLENGE = 2, RD_AUTH_PROOF = 3 };

/* The cluster's identity and key, loaded once at start-up. enabled == 0: no
 * --cluster-secret-file (every peer is trusted, as before; a warning is logged). */
struct rd_auth {
    int enabled;
    char cluster_id[RD_AUTH_CLUSTER_ID_MAX + 1];
    uint8_t key[RD_AUTH_KEY_BYTES];
    uint8_t tag[RD_AUTH_TAG_BYTES];
};

/* One handshake, either side. */
enum rd_auth_state {
    RD_AUTH_ST_NONE = 0,      /* nothing sent or received */
    RD_AUTH_ST_SENT_HELLO,    /* client: waiting for CHALLENGE */
    RD_AUTH_ST_SENT_CHALLENGE, /* server: waiting for PROOF */
    RD_AUTH_ST_DONE,          /* both ends proved the secret */
    RD_AUTH_ST_FAILED,
};
struct rd_auth_hs {
    enum rd_auth_state state;
    uint8_t cn[RD_AUTH_NONCE_BYTES], sn[RD_AUTH_NONCE_BYTES];
};

/* Initialises libsodium (idempotent). 0 or -1 if it cannot start. */
int rd_auth_global_init(void);

/* Reads the secret file at path into *a. The file must be a regular file not
 * readable or writable by group or others (like ssh's private keys) and hold
 *   cluster_id=NAME        (1..63 of [A-Za-z0-9._-])
 *   secret=HEX             (32..128 hex digits: 16..64 bytes)
 * lines ('#' lines and blank lines ignored). 0, or a negative code with a
 * sentence in err. */
int rd_auth_load(struct rd_auth *a, const char *path, char *err, size_t err_len);
/* Builds *a from a cluster id and secret bytes (tests; rd_auth_load uses it). */
int rd_auth_set(struct rd_auth *a, const char *cluster_id, const uint8_t *secret, size_t secret_len);

/* ---- pure message functions (no I/O). nonce NULL: a fresh random one. ---- */
/* Client: starts a handshake; writes HELLO (RD_AUTH_HELLO_LEN bytes) to out. */
void rd_auth_client_hello(const struct rd_auth *a, struct rd_auth_hs *hs, const uint8_t *nonce, uint8_t *out);
/* Client: checks a CHALLENGE (server proved the key) and writes PROOF
 * (RD_AUTH_PROOF_LEN bytes) to out. 0, RD_EPROTO (malformed), RD_EAUTH (bad MAC). */
int rd_auth_client_challenge(const struct rd_auth *a, struct rd_auth_hs *hs, const uint8_t *msg, size_t len,
                             uint8_t *out);
/* Server: checks a HELLO and writes CHALLENGE (RD_AUTH_CHALLENGE_LEN) to out.
 * 0, RD_EPROTO, RD_EAUTH (another cluster's tag). */
int rd_auth_server_hello(const struct rd_auth *a, struct rd_auth_hs *hs, const uint8_t *msg, size_t len,
                         const uint8_t *nonce, uint8_t *out);
/* Server: checks a PROOF. 0 (hs->state becomes DONE), RD_EPROTO, RD_EAUTH. */
int rd_auth_server_proof(const struct rd_auth *a, struct rd_auth_hs *hs, const uint8_t *msg, size_t len);
/* The type of a message (after checking the header and its exact length), or RD_EPROTO. */
int rd_auth_msg_type(const uint8_t *msg, size_t len);

/* Hex (lower case) for the RESP transport. rd_auth_unhex: bytes written, or -1. */
void rd_auth_hex(const uint8_t *p, size_t n, char *out /* 2n+1 */);
int rd_auth_unhex(const char *hex, size_t hex_len, uint8_t *out, size_t cap);

/* ---- blocking client helpers (a connected socket; poll-based, any fd mode) ---- */
/* Frame channel: HELLO, CHALLENGE, PROOF as frames. On success the server has
 * been authenticated and our PROOF sent (a wrong proof makes the server close). */
int rd_auth_client_frames(const struct rd_auth *a, int fd, int timeout_ms, char *err, size_t err_len);
/* RESP channel: REDOUBT.AUTH twice, waits for +OK. */
int rd_auth_client_resp(const struct rd_auth *a, int fd, int timeout_ms, char *err, size_t err_len);

/* "refusal logged once per source address": 1 the first time an address (IP,
 * port ignored) is seen by this process (a bounded table; when full, every 1024th
 * refusal is logged), else 0. */
int rd_auth_log_once(const char *addr);

/* Raises RLIMIT_NOFILE's soft limit to the hard limit (connection budgets count on
 * it); logs what it got. Returns the soft limit now in force. */
long rd_raise_nofile(void);

#endif
