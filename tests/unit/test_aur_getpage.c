/*
 * test_aur_getpage.c — the choices of the non-blocking GetPage (aurora/aur_getpage.c):
 * which node is asked next (a node known to cover the LSN first, then the lowest
 * recent latency; never one already asked or skipped, never one whose link is down)
 * and how long to wait before hedging to a second node.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "aurora/aur_int.h"

static void nodes_up(struct aur_gp_nodeinfo n[REDO_NODES], int scl_known, uint64_t scl)
{
    for (unsigned i = 0; i < REDO_NODES; i++)
        n[i] = (struct aur_gp_nodeinfo){.usable = 1, .scl_known = scl_known, .scl = scl, .lat_us = 1000 + i * 100};
}

Test(aur_getpage, asks_the_fastest_node_first_then_the_next_fastest)
{
    struct aur_gp_try t[REDO_NODES];
    struct aur_gp_nodeinfo n[REDO_NODES];
    memset(t, 0, sizeof(t));
    nodes_up(n, 0, 0);
    n[4].lat_us = 200;
    n[2].lat_us = 300;
    int first = aur_gp_pick(t, n, 10, 3);
    cr_assert_eq(first, 4);
    t[4].asked = 1;
    cr_assert_eq(aur_gp_pick(t, n, 10, 3), 2, "the hedge goes to the next fastest");
    t[2].asked = 1;
    cr_assert_eq(aur_gp_pick(t, n, 10, 3), 0);
}

Test(aur_getpage, a_writer_prefers_nodes_whose_scl_covers_the_lsn)
{
    struct aur_gp_try t[REDO_NODES];
    struct aur_gp_nodeinfo n[REDO_NODES];
    memset(t, 0, sizeof(t));
    nodes_up(n, 1, 100);
    n[0].scl = 50, n[0].lat_us = 1; /* fastest, but behind: NOT_YET */
    n[5].scl = 99, n[5].lat_us = 2;
    cr_assert_eq(aur_gp_pick(t, n, 100, 0), 1);
    for (unsigned i = 1; i < 5; i++)
        t[i].skipped = 1;
    cr_assert_eq(aur_gp_pick(t, n, 100, 0), 0, "with no covering node left, the fastest other one");
}

Test(aur_getpage, never_asks_a_node_twice_or_one_that_is_down)
{
    struct aur_gp_try t[REDO_NODES];
    struct aur_gp_nodeinfo n[REDO_NODES];
    memset(t, 0, sizeof(t));
    nodes_up(n, 0, 0);
    n[1].usable = n[3].usable = 0;
    int seen[REDO_NODES] = {0};
    for (int k = 0; k < 4; k++) {
        int i = aur_gp_pick(t, n, 1, (unsigned)k);
        cr_assert(i >= 0 && i != 1 && i != 3 && !seen[i]);
        seen[i] = 1;
        t[i].asked = 1;
    }
    cr_assert_eq(aur_gp_pick(t, n, 1, 0), -1, "every usable node asked");
}

Test(aur_getpage, hedge_delay_is_twice_the_latency_within_bounds)
{
    cr_assert_eq(aur_gp_hedge_delay_us(0), AUR_GP_HEDGE_MIN_US);
    cr_assert_eq(aur_gp_hedge_delay_us(300), AUR_GP_HEDGE_MIN_US);
    cr_assert_eq(aur_gp_hedge_delay_us(5000), 10000);
    cr_assert_eq(aur_gp_hedge_delay_us(10000000), AUR_GP_HEDGE_MAX_US);
}
