#include "loop.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "log.h"
#include "util.h"

int rd_loop_init(struct rd_loop *l, unsigned entries, char *why, size_t why_len)
{
    memset(l, 0, sizeof(*l));
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
    int rc = io_uring_queue_init_params(entries, &l->ring, &p);
    if (rc == -EINVAL) { /* older kernel: no SINGLE_ISSUER / COOP_TASKRUN */
        memset(&p, 0, sizeof(p));
        rc = io_uring_queue_init_params(entries, &l->ring, &p);
    }
    if (rc < 0) {
        snprintf(why, why_len,
                 "io_uring is not available (io_uring_queue_init: %s); Redoubt needs Linux >= 6.0 "
                 "with io_uring enabled (sysctl kernel.io_uring_disabled=0, not blocked by seccomp)",
                 strerror(-rc));
        return rc;
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&l->ring);
    if (probe == NULL) {
        snprintf(why, why_len, "io_uring probe failed: kernel too old (need >= 6.0)");
        io_uring_queue_exit(&l->ring);
        return -ENOSYS;
    }
    static const struct { int op; const char *name; } need[] = {
        {IORING_OP_ACCEPT, "accept"}, {IORING_OP_RECV, "recv"},   {IORING_OP_SEND, "send"},
        {IORING_OP_WRITE, "write"},   {IORING_OP_FSYNC, "fsync"}, {IORING_OP_TIMEOUT, "timeout"},
        {IORING_OP_CONNECT, "connect"}, {IORING_OP_ASYNC_CANCEL, "cancel"},
    };
    for (size_t i = 0; i < RD_ARRAY_LEN(need); i++) {
        if (!io_uring_opcode_supported(probe, need[i].op)) {
            snprintf(why, why_len, "io_uring lacks the %s operation: kernel too old (need >= 6.0)",
                     need[i].name);
            io_uring_free_probe(probe);
            io_uring_queue_exit(&l->ring);
            return -ENOSYS;
        }
    }
    io_uring_free_probe(probe);
    /* Multishot recv with provided buffer rings needs 6.0; the feature bit for it
     * does not exist, so check the buffer-ring registration the server relies on. */
    l->has_multishot_recv = (p.features & IORING_FEAT_NODROP) != 0;
    return 0;
}

void rd_loop_destroy(struct rd_loop *l) { io_uring_queue_exit(&l->ring); }

struct io_uring_sqe *rd_loop_sqe(struct rd_loop *l, struct rd_io *io)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
    if (sqe == NULL) {
        int rc = io_uring_submit(&l->ring);
        rd_assert(rc >= 0);
        sqe = io_uring_get_sqe(&l->ring);
        rd_assert(sqe != NULL);
    }
    io_uring_sqe_set_data(sqe, io);
    return sqe;
}

int rd_loop_submit(struct rd_loop *l)
{
    int rc = io_uring_submit(&l->ring);
    return rc < 0 ? rc : 0;
}

static int loop_dispatch(struct rd_loop *l)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&l->ring, head, cqe)
    {
        struct rd_io *io = io_uring_cqe_get_data(cqe);
        n++;
        if (io != NULL)
            io->on_cqe(io, cqe);
    }
    io_uring_cq_advance(&l->ring, n);
    l->cqes += n;
    return (int)n;
}

int rd_loop_run_once(struct rd_loop *l, uint64_t timeout_us)
{
    l->turns++;
    int rc;
    if (timeout_us == 0) {
        rc = io_uring_submit(&l->ring);
    } else {
        struct __kernel_timespec ts = {.tv_sec = (long long)(timeout_us / 1000000u),
                                       .tv_nsec = (long long)(timeout_us % 1000000u) * 1000};
        struct io_uring_cqe *cqe = NULL;
        rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
    }
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
        return rc;
    return loop_dispatch(l);
}

int rd_buf_ring_setup(struct rd_loop *l, struct rd_buf_ring *r, unsigned entries, size_t buf_size, unsigned bgid)
{
    rd_assert(entries > 0 && (entries & (entries - 1)) == 0 && entries <= 32768);
    memset(r, 0, sizeof(*r));
    r->entries = entries;
    r->buf_size = buf_size;
    size_t ring_bytes = entries * sizeof(struct io_uring_buf);
    void *ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (ring == MAP_FAILED)
        return -errno;
    r->br = ring;
    r->bufs = malloc(entries * buf_size);
    if (r->bufs == NULL)
        return -ENOMEM;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)ring;
    reg.ring_entries = entries;
    reg.bgid = (uint16_t)bgid;
    int rc = io_uring_register_buf_ring(&l->ring, &reg, 0);
    if (rc < 0) {
        rd_error("io_uring provided buffer rings are not supported (%s): Redoubt needs Linux >= 5.19",
                 strerror(-rc));
        return rc;
    }
    io_uring_buf_ring_init(r->br);
    for (unsigned i = 0; i < entries; i++)
        io_uring_buf_ring_add(r->br, r->bufs + (size_t)i * buf_size, (unsigned)buf_size, (unsigned short)i,
                              io_uring_buf_ring_mask(entries), (int)i);
    io_uring_buf_ring_advance(r->br, (int)entries);
    return 0;
}

void rd_buf_ring_return(struct rd_buf_ring *r, unsigned bid)
{
    rd_assert(bid < r->entries);
    io_uring_buf_ring_add(r->br, r->bufs + (size_t)bid * r->buf_size, (unsigned)r->buf_size, (unsigned short)bid,
                          io_uring_buf_ring_mask(r->entries), 0);
    io_uring_buf_ring_advance(r->br, 1);
}

void rd_buf_ring_free(struct rd_buf_ring *r)
{
    if (r->br != NULL && munmap(r->br, r->entries * sizeof(struct io_uring_buf)) < 0)
        rd_warn("munmap of a buffer ring failed: %s", strerror(errno));
    free(r->bufs);
    r->br = NULL;
    r->bufs = NULL;
}
