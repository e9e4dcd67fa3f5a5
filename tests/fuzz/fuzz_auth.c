/*
 * fuzz_auth.c — libFuzzer target for the peer-authentication decoders
 * (common/auth.c): the input is a server and a client handshake's received
 * messages and their hex form. Nothing may crash; a message that is not a
 * correct MAC under the test key must never authenticate.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/auth.h"
#include "common/err.h"
#include "common/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct rd_auth a;
    if (!a.enabled) {
        static const uint8_t secret[32] = "fuzz-secret-fuzz-secret-fuzz-sec";
        rd_assert(rd_auth_set(&a, "fuzz", secret, sizeof(secret)) == 0);
    }
    (void)rd_auth_msg_type(data, size);
    /* server side: the input is a HELLO followed by a PROOF */
    struct rd_auth_hs sh;
    uint8_t out[RD_AUTH_MSG_MAX];
    static const uint8_t sn[RD_AUTH_NONCE_BYTES] = {1};
    size_t h = RD_MIN(size, (size_t)RD_AUTH_HELLO_LEN);
    if (rd_auth_server_hello(&a, &sh, data, h, sn, out) == 0 && size > h)
        rd_assert(rd_auth_server_proof(&a, &sh, data + h, size - h) != 0 || sh.state == RD_AUTH_ST_DONE);
    /* client side: the input is a CHALLENGE */
    struct rd_auth_hs ch;
    static const uint8_t cn[RD_AUTH_NONCE_BYTES] = {2};
    rd_auth_client_hello(&a, &ch, cn, out);
    (void)rd_auth_client_challenge(&a, &ch, data, size, out);
    /* hex transport */
    uint8_t bin[RD_AUTH_MSG_MAX];
    (void)rd_auth_unhex((const char *)data, size, bin, sizeof(bin));
    return 0;
}
