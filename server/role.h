/*
 * role.h — what the instance asks of its replication role, and nothing more.
 *
 * The instance (server/: event loop, connections, commands, reply release on
 * durability) runs one role, chosen once at start-up from --role the way the
 * engine's sink is chosen when the engine is opened (server_run: role_for):
 *
 *   role_classic (replica/)  standalone, primary and replica: a local WAL,
 *                            shipped to replicas by walsenders; replicas apply it
 *   role_aurora  (aurora/)   writer and reader: redo to six storage nodes, 4-of-6
 *                            quorum, no local log; readers follow the writer's feed
 *
 * A role may change its server_role at run time within its own mode (a replica
 * promoted to primary, a reader to writer); it never changes mode.
 *
 * The instance calls the role only through this table; a role calls the
 * instance only through server_int.h (connections, replies, durability).
 * Every function pointer is set (no NULL checks at the call sites).
 */
#ifndef RD_SERVER_ROLE_H
#define RD_SERVER_ROLE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/resp.h"

struct server;
struct conn;

struct role_ops {
    const char *name; /* "classic", "aurora" (logs, INFO) */
    /* Start-up, after the client port is bound: open the storage (local WAL and data
     * file, or the volume on the storage nodes) and the role's own state. 0, or < 0
     * after logging why (the process exits 1). */
    int (*start)(struct server *s);
    /* Where the next record would go (a command that appends nothing leaves it
     * unchanged: read-only) and the commit record of one transaction. */
    uint64_t (*insert_lsn)(const struct server *s);
    int (*append_commit)(struct server *s, uint64_t txn_id, uint64_t *lsn);
    /* End of every loop turn, after the commands and the local WAL flush were started:
     * send what this turn appended (aurora: one redo batch to every storage link). */
    void (*ship)(struct server *s);
    /* Once per loop turn: links, timers, WAL senders, status messages. */
    void (*tick)(struct server *s);
    /* The highest LSN the role's acknowledgement set holds besides local durability
     * (classic: the k-th sync replica at the commit level); UINT64_MAX when only
     * durable_lsn counts. The instance releases replies up to min(durable, this). */
    uint64_t (*sync_lsn)(const struct server *s);
    /* Frames on a role connection (kind != CONN_CLIENT), and its end (before free). */
    void (*process_input)(struct server *s, struct conn *c);
    void (*on_conn_closed)(struct server *s, struct conn *c);
    /* The role's commands (REDOUBT.REPLICATE / TERM / PROMOTE, REDOUBT.READER): the
     * handler answers c (or turns it into a role connection). */
    void (*command)(struct server *s, struct conn *c, const struct resp_args *a);
    /* Promotion (REPLICAOF NO ONE, PROMOTE, REDOUBT.PROMOTE t: term 0 for the manual
     * ones): 0 promoted, 1 in progress (c is answered when done), -1 refused (err). */
    int (*promote)(struct server *s, struct conn *c, uint64_t term, char *err, size_t err_len);
    /* REPLICAOF host port: follow another leader. 0, or -1 (err). */
    int (*repoint)(struct server *s, const char *host, int port, char *err, size_t err_len);
    /* A write may be executed now: 1, or 0 with the error reply in err (fenced by a
     * newer writer, back-pressure ...). Called after the instance's own gates. */
    int (*may_write)(const struct server *s, char *err, size_t err_len);
    /* Data reads may be served (a replica that finished cloning and replayed to a
     * consistent point): 1, else 0 (-LOADING). */
    int (*readable)(const struct server *s);
    /* Execute no client command this turn (aurora back-pressure): 1. */
    int (*paused)(const struct server *s);
    /* The clock expiry is judged by (X1, X2): the leader's clock at the newest change
     * applied, or 0 for this node's wall clock. */
    uint64_t (*clock_ms)(const struct server *s);
    /* Followers attached (replicas, readers: INFO clients), and how many confirmed
     * lsn durable (WAIT). */
    size_t (*followers)(const struct server *s);
    size_t (*count_acked)(const struct server *s, uint64_t lsn);
    /* What REDOUBT.FENCE's optional rank is weighed against: the term (classic) or the volume epoch
     * (aurora); a fence from a monitor whose writer ranks lower is refused (S21). */
    uint64_t (*fence_rank)(const struct server *s);
    /* INFO replication, and the ROLE reply. */
    void (*info)(struct server *s, struct rd_buf *b);
    void (*role_reply)(struct server *s, struct conn *c);
    /* Name of a role connection's kind (CLIENT LIST kind=, flags). */
    const char *(*conn_kind_name)(const struct conn *c);
    /* Local storage (server_open_storage): the log was recovered, the end-of-recovery
     * checkpoint has not run yet (classic: load the slots, which keep WAL). 0: take
     * the end-of-recovery checkpoint, 1: skip it (a replica appends nothing of its
     * own; a crashed primary checkpoints on its new timeline), < 0: fail. */
    int (*after_recovery)(struct server *s);
    /* Before a checkpoint removes WAL (classic: save the slots). */
    void (*before_checkpoint)(struct server *s);
    /* Clean shutdown: make what was acknowledged durable, final checkpoint or
     * restart point. */
    void (*shutdown)(struct server *s);
};

extern const struct role_ops role_classic; /* replica/repl_role.c */
extern const struct role_ops role_aurora;  /* aurora/aur_role.c */

#endif
