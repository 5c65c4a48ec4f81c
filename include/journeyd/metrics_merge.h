/*
 * metrics_merge — merges the Prometheus text expositions (format 0.0.4) of
 * several engines, one struct jd_metrics each (processing.engines = N), into
 * the one exposition served on /metrics. A pure function over its inputs: no
 * global state; the tables it allocates live for one call.
 */
#ifndef JOURNEYD_METRICS_MERGE_H
#define JOURNEYD_METRICS_MERGE_H

#include <stddef.h>

#include "journeyd/util.h"

/* How the values of one series combine across the expositions. */
enum jd_merge_op {
    JD_MERGE_SUM = 0, /* the default: counters, histograms, most gauges */
    JD_MERGE_MAX,
    JD_MERGE_MIN,
    JD_MERGE_DROP /* the family is left out: HELP, TYPE and samples */
};

/* The op of one family, by its exact name (the name on its # TYPE line;
 * for a histogram the base name, without _bucket/_sum/_count). */
struct jd_merge_rule {
    const char *family;
    enum jd_merge_op op;
};

/*
 * Appends to out (initialised by the caller) the merge of n expositions,
 * texts[i] of lens[i] bytes (no NUL needed; nothing past lens[i] is read).
 *
 * Families come in order of first appearance (text 0 first), each with its
 * HELP and TYPE lines once, from where they first appear, then its series in
 * order of first appearance. A series is the exact bytes of the metric name
 * and label set; series present in only some texts are kept. A sample line
 * belongs to the family of the most recent HELP/TYPE line when its name is
 * that family's name (or, for a histogram or summary, the name plus _bucket,
 * _sum or _count); otherwise to the earliest family it matches that way, or
 * else to a family of its own metric name.
 *
 * Values combine by the family's rule (JD_MERGE_SUM when no rule names it).
 * A series seen once keeps its value token byte for byte. When every value
 * of a series is an integer that fits int64 the result is an integer (a sum
 * saturates at INT64_MIN/INT64_MAX); otherwise values combine as doubles,
 * printed "%.15g", +Inf, -Inf or NaN (MAX and MIN of a NaN give NaN).
 * Timestamps after the value are dropped: the merged value belongs to no
 * single engine's time. Blank lines, other comments and malformed sample
 * lines (no value, a value strtod does not read whole, an unterminated label
 * set) are skipped.
 */
void jd_metrics_merge_text(const char *const *texts, const size_t *lens, size_t n,
                           const struct jd_merge_rule *rules, size_t nrules, struct jd_buf *out);

#endif
