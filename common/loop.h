/*
 * loop.h — the io_uring event loop shared by every process of the project.
 *
 * Every in-flight operation carries a `struct rd_io *` as its user_data; the
 * loop reaps completions with io_uring_for_each_cqe, calls io->on_cqe for each,
 * and advances the CQ once per batch. SQEs are batched and submitted once per
 * loop turn (rd_loop_submit_and_wait), except when the SQ ring is full.
 *
 * Invariants
 *  L1. An rd_io (and any buffer its operation uses) stays valid until its last
 *      completion: for multishot operations, until a CQE without IORING_CQE_F_MORE.
 *  L2. user_data 0 is reserved for operations nobody waits for (cancels).
 *  L3. on_cqe may queue new SQEs; it must not call rd_loop_dispatch.
 */
#ifndef RD_LOOP_H
#define RD_LOOP_H

#include <liburing.h>
#include <stddef.h>
#include <stdint.h>

struct rd_io {
    void (*on_cqe)(struct rd_io *io, const struct io_uring_cqe *cqe);
};

struct rd_loop {
    struct io_uring ring;
    uint64_t turns;
    uint64_t cqes;
    int has_multishot_recv; /* probed at start-up */
};

/* Creates the ring and probes the operations the project needs (accept,
 * multishot recv with provided buffers, send, write, fsync, timeout). On
 * failure returns a negative code and writes a human sentence into why. */
int rd_loop_init(struct rd_loop *l, unsigned entries, char *why, size_t why_len);
void rd_loop_destroy(struct rd_loop *l);

/* Returns a zeroed SQE; submits what is queued when the SQ ring is full.
 * Never returns NULL (asserts after a failed flush: a programmer error). */
struct io_uring_sqe *rd_loop_sqe(struct rd_loop *l, struct rd_io *io);

/* Submits queued SQEs and waits for at least one completion or timeout_us
 * (0 = do not wait), then dispatches every ready completion. Returns the
 * number dispatched, or a negative errno (other than EINTR/ETIME). */
int rd_loop_run_once(struct rd_loop *l, uint64_t timeout_us);

/* Submits queued SQEs without waiting. */
int rd_loop_submit(struct rd_loop *l);

/* A provided buffer ring for multishot recv (IOSQE_BUFFER_SELECT with buf_group
 * = bgid): entries buffers of buf_size bytes, owned by the ring. A completion
 * names its buffer (cqe->flags >> IORING_CQE_BUFFER_SHIFT); the consumer copies
 * the bytes out and hands the buffer back at once with rd_buf_ring_return. */
struct rd_buf_ring {
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    unsigned entries; /* a power of two */
    size_t buf_size;
};
int rd_buf_ring_setup(struct rd_loop *l, struct rd_buf_ring *r, unsigned entries, size_t buf_size, unsigned bgid);
static inline const uint8_t *rd_buf_ring_data(const struct rd_buf_ring *r, unsigned bid)
{
    return r->bufs + (size_t)bid * r->buf_size;
}
void rd_buf_ring_return(struct rd_buf_ring *r, unsigned bid);
/* Releases the memory (after the ring is destroyed: the kernel no longer uses it). */
void rd_buf_ring_free(struct rd_buf_ring *r);

#endif
