/*
 * wal_control.c — the control file: where recovery starts, the timeline, the
 * system id and the segment size. Read and replaced whole (W8).
 *
 * Control file DIR/control, 512 bytes, replaced atomically (control.tmp,
 * fdatasync, rename, fsync dir):
 *
 *   offset size  meaning
 *   0      8     magic "RDCONTRL"
 *   8      4     format version (1)
 *   12     4     state (1 in production, 2 shut down)
 *   16     8     system id
 *   24     4     timeline
 *   28     4     reserved, zero
 *   32     8     checkpoint LSN (start of the last CHECKPOINT record)
 *   40     8     redo LSN (replay starts here)
 *   48     8     segment size in bytes
 *   56     8     wall time of the update, µs since the epoch
 *   64     440   zero
 *   504    8     checksum: rd_checksum64(bytes [0,504), RD_SEED_CONTROL)
 */
#include "wal/wal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "wal/wal_int.h"

/* ================================================================ control file */

int wal_control_read(const char *dir, struct wal_control *out)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/control", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t b[WAL_CONTROL_SIZE + 1];
    long n = wal_pread_all(fd, b, sizeof(b), 0);
    int rc = n < 0 ? (int)n : 0;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0) {
        rd_error("could not read control file \"%s\": %s", path, rd_strerror(rc));
        return rc;
    }
    const char *why = NULL;
    if (n != WAL_CONTROL_SIZE)
        why = "wrong file size (expected 512 bytes)";
    else if (memcmp(b, WAL_CONTROL_MAGIC, 8) != 0)
        why = "bad magic";
    else if (rd_get_u32le(b + 8) != WAL_FORMAT_VERSION) {
        rd_error("control file \"%s\" has format version %" PRIu32 ", this build reads %u", path,
                 rd_get_u32le(b + 8), WAL_FORMAT_VERSION);
        return RD_EVERSION;
    } else if (rd_get_u64le(b + 504) != rd_checksum64(b, 504, RD_SEED_CONTROL))
        why = "checksum mismatch";
    else if (!wal_seg_size_ok(rd_get_u64le(b + 48)))
        why = "implausible segment size";
    if (why != NULL) {
        rd_error("control file \"%s\" is corrupt: %s", path, why);
        return RD_ECORRUPT;
    }
    out->state = rd_get_u32le(b + 12);
    out->system_id = rd_get_u64le(b + 16);
    out->timeline = rd_get_u32le(b + 24);
    out->checkpoint_lsn = rd_get_u64le(b + 32);
    out->redo_lsn = rd_get_u64le(b + 40);
    out->segment_size_bytes = rd_get_u64le(b + 48);
    out->time_us = rd_get_u64le(b + 56);
    return 0;
}

int wal_control_write(const char *dir, const struct wal_control *c)
{
    uint8_t b[WAL_CONTROL_SIZE];
    memset(b, 0, sizeof(b));
    memcpy(b, WAL_CONTROL_MAGIC, 8);
    rd_put_u32le(b + 8, WAL_FORMAT_VERSION);
    rd_put_u32le(b + 12, c->state);
    rd_put_u64le(b + 16, c->system_id);
    rd_put_u32le(b + 24, c->timeline);
    rd_put_u64le(b + 32, c->checkpoint_lsn);
    rd_put_u64le(b + 40, c->redo_lsn);
    rd_put_u64le(b + 48, c->segment_size_bytes);
    rd_put_u64le(b + 56, c->time_us);
    rd_put_u64le(b + 504, rd_checksum64(b, 504, RD_SEED_CONTROL));

    /* control.tmp, fsync, rename, fsync dir: a crash leaves the old or the new file (W8). */
    int rc = rd_write_file_atomic(dir, "control", b, sizeof(b));
    if (rc < 0)
        rd_error("could not write the control file \"%s/control\": %s", dir, rd_strerror(rc));
    return rc;
}
