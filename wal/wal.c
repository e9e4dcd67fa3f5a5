/*
 * wal.c — the classic write-ahead log: the life of a log (open, close,
 * initialisation of a new log or of a clone's log from a base backup), the
 * choice of sync method, and statistics. The rest of the writer is in
 * wal_segment.c, wal_append.c, wal_flush.c, wal_checkpoint.c, wal_recover.c,
 * wal_switch.c and wal_sender.c, which share struct wal (wal_writer.h); they
 * use, and are never used by, the lower layers: wal_reader.c, wal_timeline.c,
 * wal_control.c and wal_record.c (formats and the validity rule). Map and
 * layering: README.md, "Source files".
 *
 * THE CORE RULE: a change is logged before the data page that holds it is
 * written (engine sink flush_to), and a commit is acknowledged only after its
 * commit record is durable (wal_flushed_lsn >= its end LSN).
 */
#include "wal/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "wal/wal_int.h"
#include "wal/wal_writer.h"

/* ---------------------------------------------------------------- open / close */

static int mkdir_p(const char *path)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST) {
        int rc = -errno;
        rd_error("could not create directory \"%s\": %s", path, strerror(errno));
        return rc;
    }
    return 0;
}

/* A crash during seg_create leaves segtemp.PID behind: never a segment, just delete it. */
static void remove_temp_segments(const struct wal *w)
{
    DIR *d = opendir(w->wal_dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "segtemp.", 8) != 0 && strncmp(de->d_name, "directprobe.", 12) != 0)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%.64s", w->wal_dir, de->d_name);
        if (unlink(path) < 0)
            rd_warn("could not remove leftover \"%s\": %s", path, strerror(errno));
    }
    if (d != NULL)
        closedir(d);
}

/* The default when neither the option nor RD_WAL_SYNC_METHOD chooses. */
#define WAL_SYNC_DEFAULT WAL_SYNC_FDATASYNC

const char *wal_sync_method_name(int method)
{
    switch (method) {
    case WAL_SYNC_AUTO: return "auto";
    case WAL_SYNC_FDATASYNC: return "fdatasync";
    case WAL_SYNC_OPEN_DATASYNC: return "open_datasync";
    default: return "unknown";
    }
}

/* Can this file system take O_DIRECT|O_DSYNC writes of WAL_DIO_ALIGN blocks?
 * 0 or -errno (tmpfs: EINVAL at open). */
static int probe_direct(const char *wal_dir)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/directprobe.%d", wal_dir, (int)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT | O_DSYNC, 0600);
    if (fd < 0) {
        int rc = -errno;
        unlink(tmp);
        return rc;
    }
    int rc = 0;
    void *b = aligned_alloc(WAL_DIO_ALIGN, WAL_DIO_ALIGN);
    if (b == NULL) {
        rc = -ENOMEM;
    } else {
        memset(b, 0, WAL_DIO_ALIGN);
        ssize_t n = pwrite(fd, b, WAL_DIO_ALIGN, 0);
        rc = n < 0 ? -errno : n != (ssize_t)WAL_DIO_ALIGN ? -EIO : 0;
        free(b);
    }
    close(fd);
    unlink(tmp);
    return rc;
}

/* Chooses the sync method: the option, else RD_WAL_SYNC_METHOD, else the
 * default; open_datasync only if the probe succeeds. */
static void choose_sync_method(struct wal *w)
{
    int m = w->opt.sync_method;
    const char *src = "wal option";
    if (m == WAL_SYNC_AUTO) {
        const char *env = getenv("RD_WAL_SYNC_METHOD");
        src = "RD_WAL_SYNC_METHOD";
        if (env != NULL && strcmp(env, "fdatasync") == 0)
            m = WAL_SYNC_FDATASYNC;
        else if (env != NULL && strcmp(env, "open_datasync") == 0)
            m = WAL_SYNC_OPEN_DATASYNC;
        else if (env != NULL && env[0] != 0)
            rd_warn("RD_WAL_SYNC_METHOD=\"%s\" is not fdatasync or open_datasync: ignored", env);
    }
    if (m == WAL_SYNC_AUTO) {
        m = WAL_SYNC_DEFAULT;
        src = "default";
    }
    if (m == WAL_SYNC_OPEN_DATASYNC) {
        int rc = probe_direct(w->wal_dir);
        if (rc < 0) {
            rd_warn("O_DIRECT|O_DSYNC writes are not possible in \"%s\" (%s): WAL sync method fdatasync",
                    w->wal_dir, rd_strerror(rc));
            m = WAL_SYNC_FDATASYNC;
            src = "fallback";
        }
    }
    w->direct = m == WAL_SYNC_OPEN_DATASYNC;
    w->st.sync_method = (uint32_t)m;
    rd_info("WAL sync method %s (%s) in \"%s\"", wal_sync_method_name(m), src, w->wal_dir);
}

int wal_open(const struct wal_options *opt, struct wal **out)
{
    rd_assert(opt->dir != NULL);
    if (strlen(opt->dir) >= WAL_DIR_MAX) {
        rd_error("instance dir path is too long (%zu bytes, at most %u)", strlen(opt->dir), WAL_DIR_MAX - 1);
        return -ENAMETOOLONG;
    }
    struct wal *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->opt = *opt;
    snprintf(w->dir, sizeof(w->dir), "%s", opt->dir);
    snprintf(w->wal_dir, sizeof(w->wal_dir), "%s/wal", opt->dir);
    w->opt.dir = w->dir;
    int rc;
    if ((rc = mkdir_p(w->dir)) < 0 || (rc = mkdir_p(w->wal_dir)) < 0)
        goto fail;
    for (int i = 0; i < 2; i++) {
        struct wal_buf *b = &w->bufs[i];
        if ((b->mem = aligned_alloc(WAL_DIO_ALIGN, WAL_BUF_INITIAL)) == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
        b->data = b->mem;
        b->cap = WAL_BUF_INITIAL;
    }
    choose_sync_method(w);
    rc = wal_control_read(w->dir, &w->ctl);
    if (rc == -ENOENT) {
        DIR *d = opendir(w->wal_dir);
        int any = d == NULL;
        struct dirent *de;
        while (d != NULL && (de = readdir(d)) != NULL) {
            uint32_t tl;
            uint64_t s;
            any |= wal_seg_name_parse(de->d_name, &tl, &s) == 0;
        }
        if (d != NULL)
            closedir(d);
        if (any) {
            rd_error("control file \"%s/control\" is missing but WAL segments exist in \"%s\": "
                     "refusing to initialise over them",
                     w->dir, w->wal_dir);
            rc = RD_ECORRUPT;
            goto fail;
        }
        /* A new log. */
        uint64_t sysid = 0;
        if (getrandom(&sysid, sizeof(sysid), 0) != (ssize_t)sizeof(sysid)) {
            rc = -errno;
            rd_error("could not get random bytes for the system id: %s", strerror(errno));
            goto fail;
        }
        w->ctl = (struct wal_control){
            .system_id = sysid,
            .timeline = 1,
            .state = WAL_STATE_IN_PRODUCTION,
            .checkpoint_lsn = 0,
            .redo_lsn = WAL_SEG_HDR_SIZE,
            .segment_size_bytes = opt->segment_size_bytes ? opt->segment_size_bytes
                                                          : WAL_SEGMENT_SIZE_DEFAULT,
            .time_us = rd_wall_us(),
        };
        if (!wal_seg_size_ok(w->ctl.segment_size_bytes)) {
            rd_error("WAL segment size %" PRIu64 " is invalid: a power of two from 1 MiB to 1 GiB",
                     w->ctl.segment_size_bytes);
            rc = -EINVAL;
            goto fail;
        }
        w->seg_size = w->ctl.segment_size_bytes;
        w->timeline = 1;
        w->system_id = sysid;
        if ((rc = wal_chain_load(w->wal_dir, 1, &w->chain)) < 0)
            goto fail;
        if ((rc = wal_seg_prepare(w, 0)) < 0 || (rc = wal_control_write(w->dir, &w->ctl)) < 0)
            goto fail;
        rd_info("initialised a new WAL in \"%s\" (system id %016" PRIX64 ", segment size %" PRIu64
                " bytes)",
                w->dir, sysid, w->seg_size);
    } else if (rc < 0) {
        goto fail;
    } else {
        w->seg_size = w->ctl.segment_size_bytes;
        w->timeline = w->ctl.timeline;
        w->system_id = w->ctl.system_id;
        if ((rc = wal_chain_load(w->wal_dir, w->timeline, &w->chain)) < 0)
            goto fail;
        remove_temp_segments(w);
        if (opt->segment_size_bytes != 0 && opt->segment_size_bytes != w->seg_size)
            rd_warn("WAL segment size %" PRIu64 " requested, but \"%s\" was created with %" PRIu64
                    "; using the latter",
                    opt->segment_size_bytes, w->dir, w->seg_size);
    }
    w->insert_lsn = w->flushed_lsn = w->written_lsn = w->ctl.redo_lsn;
    w->last_ckpt_ms = rd_now_ms();
    *out = w;
    return 0;
fail:
    wal_chain_free(&w->chain);
    free(w->bufs[0].mem);
    free(w->bufs[1].mem);
    free(w);
    return rc;
}

int wal_free(struct wal *w)
{
    rd_assert(!w->in_flight);
    if (w->prep != NULL)
        wal_prep_abandon(w, 1);
    int rc = 0;
    for (size_t i = 0; i < w->nfds; i++)
        if (close(w->fds[i].fd) < 0 && rc == 0)
            rc = -errno;
    free(w->fds);
    wal_close_retired(w);
    free(w->retired);
    wal_chain_free(&w->chain);
    free(w->bufs[0].mem);
    free(w->bufs[1].mem);
    free(w->ios);
    free(w);
    return rc;
}

int wal_close(struct wal *w)
{
    if (w == NULL)
        return 0;
    if (w->prep != NULL)
        wal_prep_abandon(w, 1); /* before the loop may be destroyed */
    if (w->in_flight) {
        /* The kernel still owns the in-flight buffer and its fds (W5): the last
         * completion frees everything. If the loop never runs again, the memory
         * is left to the process exit. */
        rd_warn("WAL closed with a flush in flight: released when it completes");
        w->closed = 1;
        return 0;
    }
    return wal_free(w);
}

void wal_get_stats(const struct wal *w, struct wal_stats *out)
{
    *out = w->st;
    out->insert_lsn = w->insert_lsn;
    out->flushed_lsn = w->flushed_lsn;
    out->redo_lsn = w->ctl.redo_lsn;
    out->timeline = w->timeline;
    out->system_id = w->system_id;
    out->sync_method = w->direct ? WAL_SYNC_OPEN_DATASYNC : WAL_SYNC_FDATASYNC;
}

int wal_init_from_backup(const char *dir, uint64_t system_id, uint32_t timeline, uint64_t redo_lsn,
                         uint64_t checkpoint_lsn, uint64_t segment_size_bytes)
{
    if (strlen(dir) >= WAL_DIR_MAX)
        return -ENAMETOOLONG;
    if (!wal_seg_size_ok(segment_size_bytes) || timeline == 0 || redo_lsn % segment_size_bytes < WAL_SEG_HDR_SIZE ||
        (checkpoint_lsn != 0 && checkpoint_lsn < redo_lsn)) {
        rd_error("init from backup: invalid segment size, timeline or redo/checkpoint LSN");
        return -EINVAL;
    }
    struct wal *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    snprintf(w->dir, sizeof(w->dir), "%s", dir);
    snprintf(w->wal_dir, sizeof(w->wal_dir), "%s/wal", dir);
    w->seg_size = segment_size_bytes;
    w->timeline = timeline;
    w->system_id = system_id;
    struct wal_control old;
    int rc;
    if ((rc = mkdir_p(w->dir)) < 0 || (rc = mkdir_p(w->wal_dir)) < 0)
        goto out;
    if ((rc = wal_control_read(w->dir, &old)) != -ENOENT) {
        rd_error("init from backup: \"%s\" already holds a control file", dir);
        rc = -EEXIST;
        goto out;
    }
    /* A history file copied from the primary beforehand names the segments of
     * earlier timelines like the primary's. */
    if ((rc = wal_chain_load(w->wal_dir, timeline, &w->chain)) < 0)
        goto out;
    if ((rc = wal_seg_prepare(w, redo_lsn / segment_size_bytes)) < 0)
        goto out;
    w->ctl = (struct wal_control){
        .system_id = system_id,
        .timeline = timeline,
        .state = WAL_STATE_IN_PRODUCTION,
        .checkpoint_lsn = checkpoint_lsn,
        .redo_lsn = redo_lsn,
        .segment_size_bytes = segment_size_bytes,
        .time_us = rd_wall_us(),
    };
    rc = wal_control_write(w->dir, &w->ctl);
out:
    wal_free(w);
    return rc < 0 ? rc : 0;
}
