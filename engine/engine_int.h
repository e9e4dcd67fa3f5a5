/*
 * engine_int.h — internals of the engine shared by page.c, pool.c and btree.c.
 * Not part of the interface: other modules use engine.h only. The page,
 * meta and cell formats are documented as tables in engine/README.md.
 */
#ifndef RD_ENGINE_INT_H
#define RD_ENGINE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "engine/engine.h"

/* ---------------------------------------------------------------- page header */

#define PG_OFF_CKSUM 0u   /* u64 rd_checksum64(page[8..8192), RD_SEED_PAGE) */
#define PG_OFF_LSN 8u     /* u64 page LSN (end LSN of the last record applied) */
#define PG_OFF_ID 16u     /* u32 page id */
#define PG_OFF_TYPE 20u   /* u8 enum pg_type */
#define PG_OFF_FLAGS 21u  /* u8 reserved, 0 */
#define PG_OFF_NSLOTS 22u /* u16 number of slots */
#define PG_OFF_LOWER 24u  /* u16 end of slot array */
#define PG_OFF_UPPER 26u  /* u16 start of cell area */
#define PG_OFF_FRAG 28u   /* u16 bytes of dead cells inside [upper, 8192) */
#define PG_OFF_RSV1 30u   /* u16 reserved, 0 */
#define PG_OFF_LINK 32u   /* u32 internal: leftmost child; overflow/free: next page */
#define PG_OFF_RSV2 36u   /* u32 reserved, 0 */
#define PG_HDR_SIZE 40u   /* slots (u16 cell offsets, sorted by key) start here */

_Static_assert(PG_OFF_LSN == 8 && PG_OFF_ID == ENGINE_PAGE_HDR_APPLY_FROM, "page header layout");
_Static_assert(PG_OFF_RSV2 + 4 == PG_HDR_SIZE, "page header size");
_Static_assert(ENGINE_PAGE_SIZE <= 65535u, "u16 offsets must address the whole page");

enum pg_type {
    PG_NONE = 0, /* all-zero page: never written */
    PG_META = 1,
    PG_LEAF = 2,
    PG_INTERNAL = 3,
    PG_OVERFLOW = 4,
    PG_FREE = 5,
};

/* Overflow page payload. */
#define OVF_OFF_USED 40u /* u32 payload bytes on this page */
#define OVF_OFF_DATA 44u
#define OVF_CAP (ENGINE_PAGE_SIZE - OVF_OFF_DATA)

/* Meta page (page 0), after the common header. */
#define META_OFF_MAGIC 40u    /* 8 bytes "RDBTMETA" */
#define META_OFF_VERSION 48u  /* u32 = 1 */
#define META_OFF_ROOT 52u     /* u32 root page id */
#define META_OFF_PAGES 56u    /* u32 page count (file size in pages) */
#define META_OFF_FREE 60u     /* u32 free-list head or ENGINE_PAGE_NONE */
#define META_OFF_KEYS 64u     /* u64 number of keys */
#define META_OFF_HEIGHT 72u   /* u32 tree height (1 = root is a leaf) */
#define META_OFF_NFREE 76u    /* u32 pages on the free list */
#define META_END 80u
#define META_MAGIC "RDBTMETA"
#define META_VERSION 1u

/* Leaf cell: u16 key_len, u32 value_len, u8 flags, key, value | u32 overflow head. */
#define LEAF_CELL_HDR 7u
#define LEAF_FLAG_OVERFLOW 0x01u
/* A value is stored inline when the whole cell is at most this big (>= 4 cells/page). */
#define LEAF_INLINE_MAX 1900u
/* Internal cell: u16 key_len, u32 child, key. */
#define INT_CELL_HDR 6u

#define ENGINE_MAX_HEIGHT 16u
/* Pages one mini-transaction may modify, and overflow pages written or freed
 * per mini-transaction (long chains are written in several). */
#define MTR_MAX_PAGES 64u
#define MTR_MAX_PINS 256u
#define OVF_PAGES_PER_MTR 16u

static inline uint16_t pg_u16(const uint8_t *p, unsigned off) { return rd_get_u16le(p + off); }
static inline uint32_t pg_u32(const uint8_t *p, unsigned off) { return rd_get_u32le(p + off); }
static inline void pg_set_u16(uint8_t *p, unsigned off, unsigned v) { rd_put_u16le(p + off, (uint16_t)v); }
static inline void pg_set_u32(uint8_t *p, unsigned off, uint32_t v) { rd_put_u32le(p + off, v); }

static inline unsigned pg_nslots(const uint8_t *p) { return pg_u16(p, PG_OFF_NSLOTS); }
static inline unsigned pg_lower(const uint8_t *p) { return pg_u16(p, PG_OFF_LOWER); }
static inline unsigned pg_upper(const uint8_t *p) { return pg_u16(p, PG_OFF_UPPER); }
static inline unsigned pg_frag(const uint8_t *p) { return pg_u16(p, PG_OFF_FRAG); }
static inline uint32_t pg_link(const uint8_t *p) { return pg_u32(p, PG_OFF_LINK); }
static inline void pg_set_link(uint8_t *p, uint32_t v) { pg_set_u32(p, PG_OFF_LINK, v); }
static inline unsigned pg_slot(const uint8_t *p, unsigned i) { return pg_u16(p, PG_HDR_SIZE + 2 * i); }
static inline const uint8_t *pg_cell(const uint8_t *p, unsigned i) { return p + pg_slot(p, i); }

/* ---------------------------------------------------------------- page.c */

/* Zeroes bytes [16, 8192) and writes a fresh header (bytes [0,16) are kept). */
void pg_init(uint8_t *p, uint32_t id, uint8_t type);
unsigned pg_cell_size(const uint8_t *p, const uint8_t *cell);
/* Key of slot i (leaf or internal). */
const uint8_t *pg_key(const uint8_t *p, unsigned i, unsigned *key_len);
int pg_key_cmp(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len);
/* Index of the first slot whose key is >= key; *found says whether it is equal. */
unsigned pg_search(const uint8_t *p, const uint8_t *key, size_t key_len, bool *found);
/* Inserts a cell at slot idx; compacts if needed. Returns false if it does not fit. */
bool pg_insert_cell(uint8_t *p, unsigned idx, const uint8_t *cell, unsigned size);
void pg_remove_cell(uint8_t *p, unsigned idx);
void pg_compact(uint8_t *p);
/* Free bytes a new cell (plus its slot) may use after compaction. */
unsigned pg_free_total(const uint8_t *p);
/* Structural check of a page read from a file (after its checksum passed). */
int pg_check(const uint8_t *p, uint32_t page_id);
/* Validates a record body without applying it. */
int pg_validate_record(uint8_t rec_type, const uint8_t *body, size_t body_len);
/* Builds a PAGE_IMAGE body for p into out (>= ENGINE_PAGE_SIZE bytes). */
size_t pg_build_image(const uint8_t *p, uint8_t *out);
/* Builds a PAGE_DELTA body of the bytes of after that differ from before;
 * returns 0 if nothing differs. out must hold PG_DELTA_MAX bytes. */
size_t pg_build_delta(const uint8_t *before, const uint8_t *after, uint8_t *out);
#define PG_DELTA_MAX (2u * ENGINE_PAGE_SIZE)

/* ---------------------------------------------------------------- pool.c */

struct frame {
    uint8_t *data;
    uint32_t page_id; /* ENGINE_PAGE_NONE when the frame is empty */
    uint32_t pins;
    int32_t hash_next;
    int32_t mtr_slot; /* index in the running mtr's before-images, or -1 */
    bool dirty, ref, txn_dirty;
};

struct mtr_page {
    int32_t frame;
    uint8_t *before; /* ENGINE_PAGE_SIZE bytes */
};

struct mtr {
    bool active;
    unsigned npages;
    struct mtr_page pages[MTR_MAX_PAGES];
    unsigned npins;
    int32_t pins[MTR_MAX_PINS];
};

struct engine {
    int fd; /* -1: no data file */
    char *path;
    struct engine_sink sink;
    uint32_t file_pages; /* pages present in the file (for reads beyond EOF) */

    struct frame *frames;
    size_t nframes;
    uint8_t *frame_mem;
    int32_t *hash;
    size_t hash_mask;
    size_t clock_hand;
    int32_t meta_frame; /* page 0, pinned for the engine's lifetime */

    struct mtr mtr;
    uint8_t *before_mem;  /* MTR_MAX_PAGES pages */
    uint8_t *scratch;     /* PG_DELTA_MAX: record bodies, split copies */
    uint8_t *scratch2;    /* ENGINE_PAGE_SIZE */
    bool in_txn;
    int32_t *txn_frames; /* frames with txn_dirty set (at most nframes) */
    size_t ntxn_frames;
    int failed; /* sticky: a sink error left pages ahead of the log */
    bool miss_ok; /* E16: a miss here changes nothing: sink.read_page_nb may answer RD_EAGAIN */
    uint64_t fpi_threshold;
    struct engine_stats st;
};

enum pool_mode { POOL_READ = 0, POOL_NOREAD = 1 };

int pool_init(struct engine *e, size_t nframes);
void pool_free(struct engine *e);
/* Pins page pid into a frame (reading it unless POOL_NOREAD); *fidx is the frame. */
int pool_get(struct engine *e, uint32_t pid, enum pool_mode mode, int32_t *fidx);
void pool_unpin(struct engine *e, int32_t fidx);
/* Forgets an unpinned clean frame (e.g. one filled with zeros by POOL_NOREAD). */
void pool_discard(struct engine *e, int32_t fidx);
int pool_write_frame(struct engine *e, int32_t fidx);
static inline uint8_t *pool_data(struct engine *e, int32_t fidx) { return e->frames[fidx].data; }

/* For tests and tools: copies page pid (through the pool) into out. */
int engine_debug_read_page(struct engine *e, uint32_t pid, uint8_t *out);

static inline uint8_t *meta_page(const struct engine *e) { return e->frames[e->meta_frame].data; }

#endif
