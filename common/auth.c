/* auth.c — peer authentication (auth.h has the message layouts and rules). */
#include "common/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/util.h"

_Static_assert(crypto_auth_BYTES == RD_AUTH_MAC_BYTES, "MAC size");
_Static_assert(crypto_auth_KEYBYTES == RD_AUTH_KEY_BYTES, "key size");
_Static_assert(RD_AUTH_HELLO_LEN == 8 + RD_AUTH_TAG_BYTES + RD_AUTH_NONCE_BYTES, "HELLO layout");
_Static_assert(RD_AUTH_CHALLENGE_LEN == 8 + RD_AUTH_NONCE_BYTES + RD_AUTH_MAC_BYTES, "CHALLENGE layout");
_Static_assert(RD_AUTH_PROOF_LEN == 8 + RD_AUTH_MAC_BYTES, "PROOF layout");

static const char LABEL_SRV[16] = "redoubt-auth-srv";
static const char LABEL_CLI[16] = "redoubt-auth-cli";

int rd_auth_global_init(void) { return sodium_init() < 0 ? -1 : 0; }

int rd_auth_set(struct rd_auth *a, const char *cluster_id, const uint8_t *secret, size_t secret_len)
{
    size_t idn = strlen(cluster_id);
    if (idn == 0 || idn > RD_AUTH_CLUSTER_ID_MAX || secret_len < 16 || secret_len > 64)
        return RD_EPROTO;
    if (rd_auth_global_init() < 0)
        return -ENOSYS;
    memset(a, 0, sizeof(*a));
    memcpy(a->cluster_id, cluster_id, idn);
    /* key = BLAKE2b-256(secret) keyed with the cluster id: one secret reused for
     * two clusters still gives two keys. */
    uint8_t idkey[RD_AUTH_CLUSTER_ID_MAX + 1] = {0};
    memcpy(idkey, cluster_id, idn);
    crypto_generichash(a->key, sizeof(a->key), secret, secret_len, idkey, RD_MAX(idn, (size_t)crypto_generichash_KEYBYTES_MIN));
    uint8_t h[32];
    crypto_generichash(h, sizeof(h), (const uint8_t *)cluster_id, idn, NULL, 0);
    memcpy(a->tag, h, sizeof(a->tag));
    a->enabled = 1;
    return 0;
}

static int id_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
           ch == '_' || ch == '-';
}

int rd_auth_load(struct rd_auth *a, const char *path, char *err, size_t err_len)
{
    memset(a, 0, sizeof(*a));
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, err_len, "could not open the cluster secret file \"%s\": %s", path, strerror(errno));
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "the cluster secret file \"%s\" is not a regular file", path);
        close(fd);
        return RD_EPROTO;
    }
    if (st.st_mode & 077) {
        snprintf(err, err_len,
                 "the cluster secret file \"%s\" is accessible by group or others (mode %04o): "
                 "run chmod 600 on it (a secret others can read authenticates nobody)",
                 path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return RD_EAUTH;
    }
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0) {
        snprintf(err, err_len, "could not read \"%s\": %s", path, strerror(errno));
        return -EIO;
    }
    buf[n] = 0;
    char id[RD_AUTH_CLUSTER_ID_MAX + 1] = "";
    uint8_t secret[64];
    int secret_len = -1;
    for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t ll = strlen(line);
        while (ll > 0 && (line[ll - 1] == '\r' || line[ll - 1] == ' '))
            line[--ll] = 0;
        if (ll == 0 || line[0] == '#')
            continue;
        if (strncmp(line, "cluster_id=", 11) == 0) {
            const char *v = line + 11;
            size_t vl = strlen(v);
            int ok = vl > 0 && vl <= RD_AUTH_CLUSTER_ID_MAX;
            for (size_t i = 0; ok && i < vl; i++)
                ok = id_char_ok(v[i]);
            if (!ok) {
                snprintf(err, err_len, "\"%s\": cluster_id must be 1..63 of [A-Za-z0-9._-]", path);
                return RD_EPROTO;
            }
            memcpy(id, v, vl + 1);
        } else if (strncmp(line, "secret=", 7) == 0) {
            secret_len = rd_auth_unhex(line + 7, strlen(line + 7), secret, sizeof(secret));
            if (secret_len < 16) {
                snprintf(err, err_len, "\"%s\": secret must be 32..128 hex digits", path);
                sodium_memzero(secret, sizeof(secret));
                return RD_EPROTO;
            }
        } else {
            snprintf(err, err_len, "\"%s\": unexpected line (want cluster_id=... and secret=...)", path);
            sodium_memzero(secret, sizeof(secret));
            return RD_EPROTO;
        }
    }
    if (id[0] == 0 || secret_len < 0) {
        snprintf(err, err_len, "\"%s\" must hold a cluster_id=... and a secret=... line", path);
        sodium_memzero(secret, sizeof(secret));
        return RD_EPROTO;
    }
    int rc = rd_auth_set(a, id, secret, (size_t)secret_len);
    sodium_memzero(secret, sizeof(secret));
    if (rc < 0)
        snprintf(err, err_len, "could not initialise libsodium");
    return rc;
}

/* ------------------------------------------------------------ messages */

static void put_hdr(uint8_t *p, enum rd_auth_type t)
{
    rd_put_u32le(p, RD_AUTH_MAGIC);
    p[4] = RD_AUTH_VERSION;
    p[5] = (uint8_t)t;
    p[6] = p[7] = 0;
}

int rd_auth_msg_type(const uint8_t *msg, size_t len)
{
    if (len < 8 || rd_get_u32le(msg) != RD_AUTH_MAGIC || msg[4] != RD_AUTH_VERSION || msg[6] != 0 || msg[7] != 0)
        return RD_EPROTO;
    size_t want = msg[5] == RD_AUTH_HELLO       ? RD_AUTH_HELLO_LEN
                  : msg[5] == RD_AUTH_CHALLENGE ? RD_AUTH_CHALLENGE_LEN
                  : msg[5] == RD_AUTH_PROOF     ? RD_AUTH_PROOF_LEN
                                                : 0;
    return want != 0 && len == want ? msg[5] : RD_EPROTO;
}

/* MAC over label || tag || cn || sn. */
static void transcript_mac(const struct rd_auth *a, const char label[16], const struct rd_auth_hs *hs, uint8_t *mac)
{
    uint8_t t[16 + RD_AUTH_TAG_BYTES + 2 * RD_AUTH_NONCE_BYTES];
    memcpy(t, label, 16);
    memcpy(t + 16, a->tag, RD_AUTH_TAG_BYTES);
    memcpy(t + 16 + RD_AUTH_TAG_BYTES, hs->cn, RD_AUTH_NONCE_BYTES);
    memcpy(t + 16 + RD_AUTH_TAG_BYTES + RD_AUTH_NONCE_BYTES, hs->sn, RD_AUTH_NONCE_BYTES);
    crypto_auth(mac, t, sizeof(t), a->key);
}

static int transcript_verify(const struct rd_auth *a, const char label[16], const struct rd_auth_hs *hs,
                             const uint8_t *mac)
{
    uint8_t t[16 + RD_AUTH_TAG_BYTES + 2 * RD_AUTH_NONCE_BYTES];
    memcpy(t, label, 16);
    memcpy(t + 16, a->tag, RD_AUTH_TAG_BYTES);
    memcpy(t + 16 + RD_AUTH_TAG_BYTES, hs->cn, RD_AUTH_NONCE_BYTES);
    memcpy(t + 16 + RD_AUTH_TAG_BYTES + RD_AUTH_NONCE_BYTES, hs->sn, RD_AUTH_NONCE_BYTES);
    return crypto_auth_verify(mac, t, sizeof(t), a->key) == 0 ? 0 : RD_EAUTH;
}

void rd_auth_client_hello(const struct rd_auth *a, struct rd_auth_hs *hs, const uint8_t *nonce, uint8_t *out)
{
    rd_assert(a->enabled);
    memset(hs, 0, sizeof(*hs));
    if (nonce)
        memcpy(hs->cn, nonce, RD_AUTH_NONCE_BYTES);
    else
        randombytes_buf(hs->cn, RD_AUTH_NONCE_BYTES);
    put_hdr(out, RD_AUTH_HELLO);
    memcpy(out + 8, a->tag, RD_AUTH_TAG_BYTES);
    memcpy(out + 16, hs->cn, RD_AUTH_NONCE_BYTES);
    hs->state = RD_AUTH_ST_SENT_HELLO;
}

int rd_auth_client_challenge(const struct rd_auth *a, struct rd_auth_hs *hs, const uint8_t *msg, size_t len,
                             uint8_t *out)
{
    if (hs->state != RD_AUTH_ST_SENT_HELLO || rd_auth_msg_type(msg, len) != RD_AUTH_CHALLENGE) {
        hs->state = RD_AUTH_ST_FAILED;
        return RD_EPROTO;
    }
    memcpy(hs->sn, msg + 8, RD_AUTH_NONCE_BYTES);
    if (transcript_verify(a, LABEL_SRV, hs, msg + 8 + RD_AUTH_NONCE_BYTES) < 0) {
        hs->state = RD_AUTH_ST_FAILED;
        return RD_EAUTH;
    }
    put_hdr(out, RD_AUTH_PROOF);
    transcript_mac(a, LABEL_CLI, hs, out + 8);
    hs->state = RD_AUTH_ST_DONE;
    return 0;
}

int rd_auth_server_hello(const struct rd_auth *a, struct rd_auth_hs *hs, const uint8_t *msg, size_t len,
                         const uint8_t *nonce, uint8_t *out)
{
    rd_assert(a->enabled);
    memset(hs, 0, sizeof(*hs));
    hs->state = RD_AUTH_ST_FAILED;
    if (rd_auth_msg_type(msg, len) != RD_AUTH_HELLO)
        return RD_EPROTO;
    if (sodium_memcmp(msg + 8, a->tag, RD_AUTH_TAG_BYTES) != 0)
        return RD_EAUTH; /* another cluster */
    memcpy(hs->cn, msg + 16, RD_AUTH_NONCE_BYTES);
    if (nonce)
        memcpy(hs->sn, nonce, RD_AUTH_NONCE_BYTES);
    else
        randombytes_buf(hs->sn, RD_AUTH_NONCE_BYTES);
    put_hdr(out, RD_AUTH_CHALLENGE);
    memcpy(out + 8, hs->sn, RD_AUTH_NONCE_BYTES);
    transcript_mac(a, LABEL_SRV, hs, out + 8 + RD_AUTH_NONCE_BYTES);
    hs->state = RD_AUTH_ST_SENT_CHALLENGE;
    return 0;
}

int rd_auth_server_proof(const struct rd_auth *a, struct rd_auth_hs *hs, const uint8_t *msg, size_t len)
{
    if (hs->state != RD_AUTH_ST_SENT_CHALLENGE || rd_auth_msg_type(msg, len) != RD_AUTH_PROOF) {
        hs->state = RD_AUTH_ST_FAILED;
        return RD_EPROTO;
    }
    if (transcript_verify(a, LABEL_CLI, hs, msg + 8) < 0) {
        hs->state = RD_AUTH_ST_FAILED;
        return RD_EAUTH;
    }
    hs->state = RD_AUTH_ST_DONE;
    return 0;
}

void rd_auth_hex(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int rd_auth_unhex(const char *hex, size_t hex_len, uint8_t *out, size_t cap)
{
    if (hex_len % 2 != 0 || hex_len / 2 > cap)
        return -1;
    for (size_t i = 0; i < hex_len / 2; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return (int)(hex_len / 2);
}

/* ------------------------------------------------------------ blocking clients */

static int send_all(int fd, const void *p, size_t n, uint64_t deadline_ms)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            uint64_t now = rd_now_ms();
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            if (now >= deadline_ms || poll(&pf, 1, (int)(deadline_ms - now)) < 0)
                return -ETIMEDOUT;
            continue;
        }
        if (w <= 0)
            return -ECONNRESET;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Appends what arrives to in; -ETIMEDOUT at the deadline, -ECONNRESET on EOF. */
static int recv_some(int fd, struct rd_buf *in, uint64_t deadline_ms)
{
    for (;;) {
        uint64_t now = rd_now_ms();
        if (now >= deadline_ms)
            return -ETIMEDOUT;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int pr = poll(&pf, 1, (int)(deadline_ms - now));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return pr == 0 ? -ETIMEDOUT : -errno;
        if (rd_buf_reserve(in, 4096) < 0)
            return -ENOMEM;
        ssize_t r = recv(fd, in->data + in->len, 4096, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r <= 0)
            return -ECONNRESET;
        in->len += (size_t)r;
        return 0;
    }
}

int rd_auth_client_frames(const struct rd_auth *a, int fd, int timeout_ms, char *err, size_t err_len)
{
    uint64_t deadline = rd_now_ms() + (uint64_t)timeout_ms;
    struct rd_auth_hs hs;
    uint8_t msg[RD_AUTH_MSG_MAX];
    struct rd_buf out = {0}, in = {0}, scratch = {0};
    int rc;
    rd_auth_client_hello(a, &hs, NULL, msg);
    if ((rc = frame_append(&out, RD_AUTH_FRAME_TYPE, 0, msg, RD_AUTH_HELLO_LEN, 0)) < 0 ||
        (rc = send_all(fd, out.data, out.len, deadline)) < 0) {
        snprintf(err, err_len, "could not send HELLO: %s", rd_strerror(rc));
        goto done;
    }
    for (;;) {
        struct frame_hdr h;
        const uint8_t *p;
        size_t n;
        const char *why = NULL;
        rc = frame_decode(in.data, in.len, &h, &scratch, &p, &n, &why);
        if (rc < 0) {
            snprintf(err, err_len, "invalid answer to HELLO (%s)", why ? why : rd_strerror(rc));
            goto done;
        }
        if (rc > 0) {
            if (h.type != RD_AUTH_FRAME_TYPE) {
                /* SN_MSG_ERROR (42) carries u32 code, u32 0, text */
                snprintf(err, err_len, "the peer refused the handshake (frame type %u%s%.*s)", h.type,
                         n > 8 ? ": " : "", n > 8 ? (int)RD_MIN(n - 8, 200) : 0, n > 8 ? (const char *)p + 8 : "");
                rc = RD_EAUTH;
                goto done;
            }
            rc = rd_auth_client_challenge(a, &hs, p, n, msg);
            if (rc < 0) {
                snprintf(err, err_len, "the peer failed to prove the cluster secret (%s)", rd_strerror(rc));
                goto done;
            }
            break;
        }
        if ((rc = recv_some(fd, &in, deadline)) < 0) {
            snprintf(err, err_len, "no answer to HELLO: %s", rd_strerror(rc));
            goto done;
        }
    }
    rd_buf_reset(&out);
    if ((rc = frame_append(&out, RD_AUTH_FRAME_TYPE, 0, msg, RD_AUTH_PROOF_LEN, 0)) < 0 ||
        (rc = send_all(fd, out.data, out.len, deadline)) < 0)
        snprintf(err, err_len, "could not send PROOF: %s", rd_strerror(rc));
done:
    rd_buf_free(&out);
    rd_buf_free(&in);
    rd_buf_free(&scratch);
    return rc < 0 ? rc : 0;
}

/* Waits for one RESP line reply (+..., -..., or $n bulk) into line/bulk. */
static int resp_reply_line(int fd, struct rd_buf *in, uint64_t deadline, char *out, size_t cap)
{
    for (;;) {
        const uint8_t *nl = in->len ? memchr(in->data, '\n', in->len) : NULL;
        if (nl != NULL) {
            size_t ll = (size_t)(nl - in->data) + 1;
            if (in->data[0] == '$') {
                long bl = strtol((const char *)in->data + 1, NULL, 10);
                if (bl < 0 || (size_t)bl + 1 > cap)
                    return RD_EPROTO;
                if (in->len >= ll + (size_t)bl + 2) {
                    memcpy(out, in->data + ll, (size_t)bl);
                    out[bl] = 0;
                    rd_buf_consume(in, ll + (size_t)bl + 2);
                    return '$';
                }
            } else {
                size_t k = RD_MIN(ll - 1, cap - 1);
                memcpy(out, in->data + 1, k);
                out[k] = 0;
                if (k > 0 && out[k - 1] == '\r')
                    out[k - 1] = 0;
                int t = in->data[0];
                rd_buf_consume(in, ll);
                return t;
            }
        }
        if (in->len > 4096)
            return RD_EPROTO;
        int rc = recv_some(fd, in, deadline);
        if (rc < 0)
            return rc;
    }
}

static int resp_send_auth(int fd, const uint8_t *msg, size_t n, uint64_t deadline)
{
    char hex[2 * RD_AUTH_MSG_MAX + 1], cmd[256];
    rd_auth_hex(msg, n, hex);
    int len = snprintf(cmd, sizeof(cmd), "*2\r\n$12\r\nREDOUBT.AUTH\r\n$%zu\r\n%s\r\n", 2 * n, hex);
    return send_all(fd, cmd, (size_t)len, deadline);
}

int rd_auth_client_resp(const struct rd_auth *a, int fd, int timeout_ms, char *err, size_t err_len)
{
    uint64_t deadline = rd_now_ms() + (uint64_t)timeout_ms;
    struct rd_auth_hs hs;
    uint8_t msg[RD_AUTH_MSG_MAX];
    char line[512];
    struct rd_buf in = {0};
    int rc;
    rd_auth_client_hello(a, &hs, NULL, msg);
    if ((rc = resp_send_auth(fd, msg, RD_AUTH_HELLO_LEN, deadline)) < 0) {
        snprintf(err, err_len, "could not send REDOUBT.AUTH: %s", rd_strerror(rc));
        goto done;
    }
    rc = resp_reply_line(fd, &in, deadline, line, sizeof(line));
    if (rc != '$') {
        snprintf(err, err_len, "the peer refused REDOUBT.AUTH: %s", rc == '-' ? line : rd_strerror(rc < 0 ? rc : RD_EPROTO));
        rc = rc < 0 ? rc : RD_EAUTH;
        goto done;
    }
    uint8_t ch[RD_AUTH_MSG_MAX];
    int chn = rd_auth_unhex(line, strlen(line), ch, sizeof(ch));
    if (chn < 0 || (rc = rd_auth_client_challenge(a, &hs, ch, (size_t)chn, msg)) < 0) {
        snprintf(err, err_len, "the peer failed to prove the cluster secret");
        rc = RD_EAUTH;
        goto done;
    }
    if ((rc = resp_send_auth(fd, msg, RD_AUTH_PROOF_LEN, deadline)) < 0) {
        snprintf(err, err_len, "could not send the proof: %s", rd_strerror(rc));
        goto done;
    }
    rc = resp_reply_line(fd, &in, deadline, line, sizeof(line));
    if (rc != '+') {
        snprintf(err, err_len, "the peer refused our proof: %s", rc == '-' ? line : rd_strerror(rc < 0 ? rc : RD_EPROTO));
        rc = rc < 0 ? rc : RD_EAUTH;
        goto done;
    }
    rc = 0;
done:
    rd_assert(in.len == 0 || rc < 0); /* nothing but the replies was sent to us */
    rd_buf_free(&in);
    return rc;
}

/* ------------------------------------------------------------ logging, limits */

int rd_auth_log_once(const char *addr)
{
    enum { SLOTS = 256 };
    static char seen[SLOTS][48];
    static unsigned nseen;
    static uint64_t overflow;
    char ip[48];
    size_t k = strcspn(addr, ":");
    k = RD_MIN(k, sizeof(ip) - 1);
    memcpy(ip, addr, k);
    ip[k] = 0;
    for (unsigned i = 0; i < nseen; i++)
        if (strcmp(seen[i], ip) == 0)
            return 0;
    if (nseen < SLOTS) {
        memcpy(seen[nseen++], ip, k + 1);
        return 1;
    }
    return overflow++ % 1024 == 0;
}

long rd_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
        struct rlimit nr = {.rlim_cur = want, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &nr) == 0)
            rl.rlim_cur = want;
    }
    return (long)rl.rlim_cur;
}
