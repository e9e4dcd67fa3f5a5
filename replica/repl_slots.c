/*
 * repl_slots.c — replication slots (PostgreSQL's pg_replslot): DIR/slots, the WAL kept for each replica name.
 * Part of the classic wing (replica/); see repl.c's header for the whole picture.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/util.h"
#include "replica/proto.h"
#include "server/server_int.h"
#include "replica/repl_int.h"

/* ================================================================ primary side */

/* Writes DIR/slots (replica/proto.h); a failure is logged and returned. */
int repl_slots_save(struct server *s)
{
    if (s->role != SERVER_ROLE_PRIMARY || s->cfg.dir == NULL)
        return 0;
    struct repl_slot_rec v[REPL_MAX_SLOTS];
    size_t n = 0;
    for (size_t i = 0; i < REPL_MAX_SLOTS; i++)
        if (repl_of(s)->slots[i].in_use) {
            memset(&v[n], 0, sizeof(v[n]));
            snprintf(v[n].name, sizeof(v[n].name), "%s", repl_of(s)->slots[i].name);
            v[n++].restart_lsn = repl_of(s)->slots[i].restart_lsn;
        }
    struct rd_buf b = {0};
    int rc = repl_slots_encode(&b, v, n);
    if (rc == 0)
        rc = rd_write_file_atomic(s->cfg.dir, "slots", b.data, b.len);
    rd_buf_free(&b);
    if (rc < 0)
        rd_error("could not write the replication slots file \"%s/slots\": %s", s->cfg.dir, rd_strerror(rc));
    return rc;
}


int repl_slots_load(struct server *s)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/slots", s->cfg.dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        rd_error("could not open the replication slots file \"%s\": %s", path, strerror(errno));
        return -errno;
    }
    uint8_t buf[16 + REPL_SLOTS_MAX * 72 + 8 + 1];
    ssize_t got = read(fd, buf, sizeof(buf));
    int err = got < 0 ? errno : 0;
    close(fd);
    struct repl_slot_rec v[REPL_SLOTS_MAX];
    size_t n = 0;
    int rc = got < 0 ? -err : repl_slots_decode(buf, (size_t)got, v, RD_ARRAY_LEN(v), &n);
    if (rc < 0) {
        rd_error("the replication slots file \"%s\" is unreadable (%s): remove it to start without slots "
                 "(replicas that fell behind may then have to re-clone)",
                 path, rd_strerror(rc));
        return rc;
    }
    for (size_t i = 0; i < n && i < REPL_MAX_SLOTS; i++) {
        struct repl_slot *sl = &repl_of(s)->slots[i];
        memset(sl, 0, sizeof(*sl));
        _Static_assert(sizeof(sl->name) == sizeof(v[i].name), "slot names");
        memcpy(sl->name, v[i].name, sizeof(sl->name)); /* NUL-terminated: checked by the decoder */
        sl->restart_lsn = v[i].restart_lsn;
        sl->in_use = 1;
        char l1[32];
        lsn_str(sl->restart_lsn, l1, sizeof(l1));
        rd_info("replication slot \"%s\" restored: WAL from %s is kept for it", sl->name, l1);
    }
    repl_slots_update_keep(s);
    return 0;
}

struct repl_slot *repl_slot_get(struct server *s, const char *name)
{
    struct repl_slot *free_slot = NULL;
    for (size_t i = 0; i < REPL_MAX_SLOTS; i++) {
        if (repl_of(s)->slots[i].in_use && strcmp(repl_of(s)->slots[i].name, name) == 0)
            return &repl_of(s)->slots[i];
        if (!repl_of(s)->slots[i].in_use && free_slot == NULL)
            free_slot = &repl_of(s)->slots[i];
    }
    if (free_slot) {
        memset(free_slot, 0, sizeof(*free_slot));
        snprintf(free_slot->name, sizeof(free_slot->name), "%s", name);
        free_slot->in_use = 1;
        free_slot->created = 1; /* saved once its restart LSN is set (repl_cmd_replicate) */
    }
    return free_slot;
}


void repl_slots_update_keep(struct server *s)
{
    if (s->wal == NULL || s->role != SERVER_ROLE_PRIMARY)
        return;
    uint64_t insert = wal_insert_lsn(s->wal), keep = insert;
    for (size_t i = 0; i < REPL_MAX_SLOTS; i++) {
        struct repl_slot *sl = &repl_of(s)->slots[i];
        if (!sl->in_use)
            continue;
        if (sl->restart_lsn > insert) /* the replica holds WAL we lost in a crash (CR3/CR4): keep from here */
            sl->restart_lsn = insert;
        if (s->cfg.wal_keep_bytes && insert - sl->restart_lsn > s->cfg.wal_keep_bytes) {
            rd_warn("replica \"%s\" is more than %" PRIu64 " MB behind (--wal-keep-mb): its WAL is no longer kept; "
                    "it must re-clone", sl->name, s->cfg.wal_keep_bytes >> 20);
            sl->in_use = 0;
            repl_slots_save(s);
            continue;
        }
        keep = RD_MIN(keep, sl->restart_lsn);
    }
    wal_set_keep_lsn(s->wal, keep);
}
