/* Unit tests for common/auth.c: the challenge–response handshake, every way a
 * message can be wrong, replays, and the secret file's checks. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/err.h"

static const uint8_t SECRET[32] = "0123456789abcdef0123456789abcdef";

static void keys(struct rd_auth *a, struct rd_auth *b)
{
    cr_assert_eq(rd_auth_set(a, "c1", SECRET, sizeof(SECRET)), 0);
    cr_assert_eq(rd_auth_set(b, "c1", SECRET, sizeof(SECRET)), 0);
}

/* Runs a whole handshake; returns the server's verdict on the proof. */
static int handshake(const struct rd_auth *cli, const struct rd_auth *srv, int *client_rc)
{
    struct rd_auth_hs ch, sh;
    uint8_t hello[RD_AUTH_HELLO_LEN], chal[RD_AUTH_CHALLENGE_LEN], proof[RD_AUTH_PROOF_LEN];
    rd_auth_client_hello(cli, &ch, NULL, hello);
    int rc = rd_auth_server_hello(srv, &sh, hello, sizeof(hello), NULL, chal);
    if (rc < 0)
        return rc;
    *client_rc = rd_auth_client_challenge(cli, &ch, chal, sizeof(chal), proof);
    if (*client_rc < 0)
        return *client_rc;
    return rd_auth_server_proof(srv, &sh, proof, sizeof(proof));
}

Test(auth, both_ends_with_the_same_secret_authenticate)
{
    struct rd_auth a, b;
    keys(&a, &b);
    int crc = -1;
    cr_assert_eq(handshake(&a, &b, &crc), 0);
    cr_assert_eq(crc, 0);
}

Test(auth, a_different_secret_is_refused_by_the_client_first)
{
    struct rd_auth a, b;
    uint8_t other[32];
    memcpy(other, SECRET, 32);
    other[31] ^= 1;
    cr_assert_eq(rd_auth_set(&a, "c1", SECRET, 32), 0);
    cr_assert_eq(rd_auth_set(&b, "c1", other, 32), 0);
    int crc = 0;
    cr_assert_eq(handshake(&a, &b, &crc), RD_EAUTH);
    cr_assert_eq(crc, RD_EAUTH);
}

Test(auth, another_cluster_id_is_refused_at_hello)
{
    struct rd_auth a, b;
    cr_assert_eq(rd_auth_set(&a, "c1", SECRET, 32), 0);
    cr_assert_eq(rd_auth_set(&b, "c2", SECRET, 32), 0);
    int crc = 0;
    cr_assert_eq(handshake(&a, &b, &crc), RD_EAUTH);
}

Test(auth, a_recorded_proof_does_not_verify_against_a_fresh_challenge)
{
    struct rd_auth a, b;
    keys(&a, &b);
    struct rd_auth_hs ch, sh;
    uint8_t hello[RD_AUTH_HELLO_LEN], chal[RD_AUTH_CHALLENGE_LEN], proof[RD_AUTH_PROOF_LEN];
    rd_auth_client_hello(&a, &ch, NULL, hello);
    cr_assert_eq(rd_auth_server_hello(&b, &sh, hello, sizeof(hello), NULL, chal), 0);
    cr_assert_eq(rd_auth_client_challenge(&a, &ch, chal, sizeof(chal), proof), 0);
    cr_assert_eq(rd_auth_server_proof(&b, &sh, proof, sizeof(proof)), 0);
    /* replay: the same HELLO and PROOF against a new server handshake */
    struct rd_auth_hs sh2;
    cr_assert_eq(rd_auth_server_hello(&b, &sh2, hello, sizeof(hello), NULL, chal), 0);
    cr_assert_eq(rd_auth_server_proof(&b, &sh2, proof, sizeof(proof)), RD_EAUTH);
}

Test(auth, a_recorded_challenge_does_not_verify_for_a_new_client_nonce)
{
    struct rd_auth a, b;
    keys(&a, &b);
    struct rd_auth_hs ch, sh, ch2;
    uint8_t hello[RD_AUTH_HELLO_LEN], chal[RD_AUTH_CHALLENGE_LEN], proof[RD_AUTH_PROOF_LEN];
    rd_auth_client_hello(&a, &ch, NULL, hello);
    cr_assert_eq(rd_auth_server_hello(&b, &sh, hello, sizeof(hello), NULL, chal), 0);
    rd_auth_client_hello(&a, &ch2, NULL, hello);
    cr_assert_eq(rd_auth_client_challenge(&a, &ch2, chal, sizeof(chal), proof), RD_EAUTH);
}

Test(auth, the_servers_mac_is_not_a_valid_proof)
{
    struct rd_auth a, b;
    keys(&a, &b);
    struct rd_auth_hs ch, sh;
    uint8_t hello[RD_AUTH_HELLO_LEN], chal[RD_AUTH_CHALLENGE_LEN], proof[RD_AUTH_PROOF_LEN];
    rd_auth_client_hello(&a, &ch, NULL, hello);
    cr_assert_eq(rd_auth_server_hello(&b, &sh, hello, sizeof(hello), NULL, chal), 0);
    memcpy(proof, chal, 8);
    proof[5] = RD_AUTH_PROOF;
    memcpy(proof + 8, chal + 40, 32); /* reflect the server's own MAC */
    cr_assert_eq(rd_auth_server_proof(&b, &sh, proof, sizeof(proof)), RD_EAUTH);
}

Test(auth, malformed_messages_are_protocol_errors)
{
    struct rd_auth a, b;
    keys(&a, &b);
    struct rd_auth_hs ch, sh;
    uint8_t hello[RD_AUTH_HELLO_LEN], chal[RD_AUTH_CHALLENGE_LEN];
    rd_auth_client_hello(&a, &ch, NULL, hello);
    for (size_t i = 0; i < 8; i++) {
        uint8_t bad[RD_AUTH_HELLO_LEN];
        memcpy(bad, hello, sizeof(bad));
        bad[i] ^= 0x40;
        cr_assert_eq(rd_auth_server_hello(&b, &sh, bad, sizeof(bad), NULL, chal), RD_EPROTO, "byte %zu", i);
    }
    cr_assert_eq(rd_auth_server_hello(&b, &sh, hello, sizeof(hello) - 1, NULL, chal), RD_EPROTO);
    cr_assert_eq(rd_auth_server_proof(&b, &sh, hello, sizeof(hello)), RD_EPROTO); /* out of order */
}

Test(auth, hex_round_trips_and_refuses_bad_digits)
{
    uint8_t in[5] = {0, 1, 0xab, 0xff, 0x10}, out[5];
    char hex[11];
    rd_auth_hex(in, 5, hex);
    cr_assert_str_eq(hex, "0001abff10");
    cr_assert_eq(rd_auth_unhex(hex, 10, out, 5), 5);
    cr_assert_arr_eq(in, out, 5);
    cr_assert_eq(rd_auth_unhex("0g", 2, out, 5), -1);
    cr_assert_eq(rd_auth_unhex("000", 3, out, 5), -1);
}

Test(auth, secret_file_readable_by_others_is_refused)
{
    char path[] = "/tmp/rd_auth_testXXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    const char *txt = "# test\ncluster_id=abc\nsecret=00112233445566778899aabbccddeeff\n";
    cr_assert_eq(write(fd, txt, strlen(txt)), (ssize_t)strlen(txt));
    close(fd);
    struct rd_auth a;
    char err[512];
    cr_assert_eq(chmod(path, 0600), 0);
    cr_assert_eq(rd_auth_load(&a, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(a.cluster_id, "abc");
    cr_assert_eq(chmod(path, 0640), 0);
    cr_assert_eq(rd_auth_load(&a, path, err, sizeof(err)), RD_EAUTH);
    cr_assert(strstr(err, "chmod 600") != NULL, "%s", err);
    cr_assert_eq(chmod(path, 0600), 0);
    FILE *f = fopen(path, "w");
    fputs("cluster_id=abc\nsecret=0011\n", f); /* too short */
    fclose(f);
    cr_assert_eq(rd_auth_load(&a, path, err, sizeof(err)), RD_EPROTO);
    unlink(path);
}

Test(auth, log_once_per_source_address)
{
    cr_assert_eq(rd_auth_log_once("10.9.8.7:1234"), 1);
    cr_assert_eq(rd_auth_log_once("10.9.8.7:999"), 0);
    cr_assert_eq(rd_auth_log_once("10.9.8.6:1234"), 1);
}
