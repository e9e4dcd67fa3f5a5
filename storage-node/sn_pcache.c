/*
 * sn_pcache.c — the storage node's page cache (storage-node/README.md N18):
 * a direct-mapped table of page-store images, so a coalescing round does not
 * read and verify again the pages the previous round wrote.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/util.h"
#include "engine/engine.h"
#include "storage-node/sn_int.h"

int sn_pcache_init(struct sn_pcache *c, uint32_t nslots)
{
    memset(c, 0, sizeof(*c));
    if (nslots == 0)
        return 0;
    c->ids = malloc((size_t)nslots * sizeof(*c->ids));
    void *m = mmap(NULL, (size_t)nslots * ENGINE_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (c->ids == NULL || m == MAP_FAILED) {
        free(c->ids);
        if (m != MAP_FAILED)
            munmap(m, (size_t)nslots * ENGINE_PAGE_SIZE);
        c->ids = NULL;
        return -ENOMEM;
    }
    memset(c->ids, 0xff, (size_t)nslots * sizeof(*c->ids));
    c->imgs = m;
    c->nslots = nslots;
    return 0;
}

void sn_pcache_free(struct sn_pcache *c)
{
    if (c->nslots)
        munmap(c->imgs, (size_t)c->nslots * ENGINE_PAGE_SIZE);
    free(c->ids);
    memset(c, 0, sizeof(*c));
}

int sn_pcache_get(struct sn_pcache *c, uint32_t page_id, uint8_t *out)
{
    if (c->nslots == 0)
        return 0;
    uint32_t k = page_id % c->nslots;
    if (c->ids[k] != page_id) {
        c->misses++;
        return 0;
    }
    memcpy(out, c->imgs + (size_t)k * ENGINE_PAGE_SIZE, ENGINE_PAGE_SIZE);
    c->hits++;
    return 1;
}

void sn_pcache_put(struct sn_pcache *c, uint32_t page_id, const uint8_t *img)
{
    if (c->nslots == 0)
        return;
    rd_assert(page_id != UINT32_MAX);
    uint32_t k = page_id % c->nslots;
    memcpy(c->imgs + (size_t)k * ENGINE_PAGE_SIZE, img, ENGINE_PAGE_SIZE);
    c->ids[k] = page_id;
}

void sn_pcache_drop(struct sn_pcache *c, uint32_t page_id)
{
    if (c->nslots == 0)
        return;
    uint32_t k = page_id % c->nslots;
    if (c->ids[k] == page_id)
        c->ids[k] = UINT32_MAX;
}
