/*
 * wal_writer.h — struct wal and the functions the writer's files share
 * (wal.c, wal_segment.c, wal_append.c, wal_flush.c, wal_checkpoint.c,
 * wal_recover.c, wal_switch.c, wal_sender.c). Private to wal/: only those
 * files include it — not the lower layers (wal_record.c, wal_control.c,
 * wal_timeline.c, wal_reader.c), not tools, not tests (they use wal.h and
 * wal_int.h). Layering: wal/README.md, "Source files".
 */
#ifndef RD_WAL_WRITER_H
#define RD_WAL_WRITER_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "common/loop.h"
#include "wal/wal.h"
#include "wal/wal_int.h"

#define WAL_BUF_INITIAL (1024u * 1024u)
/* Hard limit on one in-memory buffer: appends beyond it fail with RD_EFULL
 * (the server keeps wal_unflushed_bytes far below this by back-pressure). */
#define WAL_BUF_MAX (256u * 1024u * 1024u)

/* In direct mode (open_datasync) a buffer starts on a block boundary: the
 * `pre` bytes before start_lsn are a copy of the log's partial last block,
 * already durable, rewritten (identical) by the next write of that block. */
struct wal_buf {
    uint8_t *mem;       /* WAL_DIO_ALIGN-aligned allocation of cap bytes */
    uint8_t *data;      /* mem + pre: the byte at start_lsn */
    size_t pre, len, cap;
    uint64_t start_lsn; /* LSN of data[0] */
    uint64_t commits;   /* commit records in it */
};

/* Asynchronous preparation of the next segment file through the loop: one
 * operation in flight at a time — header block, zero chunks, fdatasync — then
 * (in the completion) rename and fsync of the dir. Allocated on its own: an
 * abandoned preparation (prep->w == NULL) lives until its last completion. */
struct wal_prep {
    struct rd_io io;
    struct wal *w;      /* NULL once abandoned */
    struct wal_prep *next_orphan;
    uint64_t segno;
    uint32_t tli;
    int fd;
    int stage;          /* 0 header block, 1 zero chunks, 2 fdatasync */
    uint64_t off;       /* next chunk offset */
    size_t expect;
    uint8_t *chunk;     /* WAL_PREP_CHUNK zero bytes, aligned; the first block carries the header */
    char tmp[PATH_MAX];
};

struct wal_fd {
    uint64_t segno;
    int fd;
};

struct wal_flush_io {
    struct rd_io io;
    struct wal *w;
    int is_fsync;
    size_t expect; /* bytes for a write */
    uint64_t segno;
};

struct wal {
    char dir[WAL_DIR_MAX];
    char wal_dir[WAL_DIR_MAX + 8];
    struct wal_options opt;
    uint64_t seg_size;
    struct wal_control ctl; /* as last written */
    uint32_t timeline;
    uint64_t system_id;
    struct wal_chain chain; /* current timeline and its ancestors (wal_timeline.c) */
    int recovered;
    int prev_unknown;     /* no record before insert_lsn is known (new log, fresh backup):
                             wal_append_encoded accepts the first record's prev as is */

    uint64_t insert_lsn;  /* end of the last record */
    uint64_t prev_lsn;    /* start of the last record */
    uint64_t flushed_lsn; /* durable below this */
    uint64_t written_lsn; /* written (write CQEs done, or pwrite) below this; >= flushed_lsn */
    uint64_t ckpt_end_lsn;/* end of the last CHECKPOINT record (0 = none this run) */
    uint64_t last_ckpt_ms;
    struct {              /* a spread checkpoint in progress (wal_checkpoint_begin/_step) */
        int active;
        int restart;      /* a replica's spread restart point (W17): ends with wal_restartpoint_end */
        uint64_t restart_ckpt_lsn; /* its CHECKPOINT record (restart == 1) */
        uint64_t redo_lsn, start_ms, spread_ms;
        size_t cursor, pages_written;
    } spread;
    uint64_t keep_lsn;
    uint64_t prepared_segno; /* highest segment file known to exist, zero-filled and synced */
    int have_prepared;
    int direct;              /* WAL_SYNC_OPEN_DATASYNC in use: O_DIRECT|O_DSYNC segment fds */
    struct wal_prep *prep;   /* asynchronous preparation of the next segment, or NULL */
    uint64_t prep_failed_segno; /* + 1: an asynchronous preparation of it failed: do not retry */

    struct wal_buf bufs[2];
    int active; /* index of the buffer appends go to */
    int in_flight;
    int closed;         /* wal_close ran while a flush was in flight: free at its completion */
    int notify_pending; /* flushed_lsn advanced outside the loop: tell on_flushed */
    struct wal_flush_io *ios;
    size_t ios_total, ios_done, writes_total, writes_done;
    uint64_t flush_started_us;

    struct wal_fd *fds;
    size_t nfds, fds_cap;
    /* fds replaced by a timeline switch while a flush was in flight (the
     * kernel may still use them, W5): closed once no flush is in flight */
    int *retired;
    size_t nretired;

    struct wal_stats st;
};

/* ---- wal.c */
/* Frees the log (no flush may be in flight): also called by the last
 * completion of a flush that wal_close left in flight. */
int wal_free(struct wal *w);

/* ---- wal_segment.c: segment files */
/* fsync of a directory; 0 or -errno. */
int wal_fsync_dir(const char *path);
/* The file of segment segno along the chain (see the definition); returns its timeline. */
uint32_t wal_seg_path_ex(const struct wal *w, uint64_t segno, char *dst, size_t len, int *exists);
void wal_seg_path(const struct wal *w, uint64_t segno, char *dst, size_t len);
/* Makes sure segment segno (and every missing one before it) exists, synchronously. */
int wal_seg_prepare(struct wal *w, uint64_t segno);
/* An open fd of segment segno (cached), or -errno. */
int wal_seg_fd(struct wal *w, uint64_t segno);
/* Drops the cached fd of segment segno (retired while a flush is in flight, W5). */
void wal_seg_fd_forget(struct wal *w, uint64_t segno);
/* Closes fds retired by wal_seg_fd_forget (no flush in flight). */
void wal_close_retired(struct wal *w);
/* Closes fds no buffer and no flush needs any more. */
void wal_prune_fds(struct wal *w);
/* Deletes the segment files of the chain with segno in [lo, hi]; fsyncs the dir. */
int wal_seg_remove_range(struct wal *w, uint64_t lo, uint64_t hi);
/* Waits for `need` of our completions in the CQ ring without consuming any. */
void wal_wait_cqes_peek(struct rd_loop *l, int (*match)(void *ctx, const struct io_uring_cqe *cqe),
                        void *ctx, size_t need, const char *what);
/* Background preparation of the next segment (W6, W13). */
int wal_prepare_next(struct wal *w, uint64_t segno, uint64_t off);
void wal_prep_abandon(struct wal *w, int wait);

/* ---- wal_append.c */
/* Appends one record of the log's own (the engine's, COMMIT, CHECKPOINT,
 * TIMELINE); *start_lsn / *end_lsn its position. */
int wal_append_record(struct wal *w, uint8_t type, uint8_t flags, uint32_t page_id,
                      const uint8_t *body, size_t body_len, uint64_t *start_lsn, uint64_t *end_lsn);

/* ---- wal_flush.c */
/* Both buffers empty at lsn (recovery, truncation). */
int wal_bufs_reset_at(struct wal *w, uint64_t lsn);

/* ---- wal_switch.c */
/* Completes a switch whose TIMELINE record at switch_lsn is durable (W10). */
int wal_finish_switch(struct wal *w, uint32_t new_tli, uint64_t switch_lsn);

#endif
