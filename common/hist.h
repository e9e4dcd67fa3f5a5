/*
 * hist.h — log-linear latency histogram (HdrHistogram-like, 3 significant
 * bits of sub-bucket precision: ≤ 1/16 relative error), fixed memory,
 * values in any unit (callers name the unit: lat_us).
 */
#ifndef RD_HIST_H
#define RD_HIST_H

#include <stdint.h>

#define RD_HIST_SUB_BITS 4
#define RD_HIST_SUB (1u << RD_HIST_SUB_BITS)
#define RD_HIST_BUCKETS ((64 - RD_HIST_SUB_BITS + 1) * RD_HIST_SUB)

struct rd_hist {
    uint64_t counts[RD_HIST_BUCKETS];
    uint64_t total;
    uint64_t min;
    uint64_t max;
    long double sum;
};

void rd_hist_init(struct rd_hist *h);
void rd_hist_record(struct rd_hist *h, uint64_t value);
void rd_hist_merge(struct rd_hist *dst, const struct rd_hist *src);
/* p in [0,100]. Returns the upper bound of the bucket holding the p-th percentile
 * (clamped to max), 0 if empty. */
uint64_t rd_hist_percentile(const struct rd_hist *h, double p);
double rd_hist_mean(const struct rd_hist *h);

#endif
