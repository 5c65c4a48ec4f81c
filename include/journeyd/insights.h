/*
 * insights — program health and trigger outcomes, kept incrementally in
 * Redis (docs/outcomes.md): customers per journey stage and per segment,
 * stage-to-stage transitions, the NPS distribution, triggers sent and
 * suppressed by reason, and per trigger the treated/control decisions and
 * their conversions.
 *
 * The engine reports what each event did (jd_insights_begin/_end around the
 * rules, _sent/_suppressed per decision); the deltas are summed per input
 * partition in memory and written once per batch, BEFORE the customers'
 * writes, into one hash per partition (hash-tagged on the partition) by a
 * script that applies them only past the partition's stats offset. Events
 * at or below that offset are not counted again, so a replay after a crash
 * counts every event exactly once. jd_insights_tick reads every partition's
 * hash every few seconds and sets the program-wide gauges.
 *
 * Owns: a Redis connection of its own (a struct jd_redis), the per-partition
 * deltas and offsets.
 * Not thread-safe: the engine thread (or journeyctl) only.
 */
#ifndef JOURNEYD_INSIGHTS_H
#define JOURNEYD_INSIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "journeyd/config.h"
#include "journeyd/event.h"
#include "journeyd/metrics.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"

/* Per-trigger outcome counters. TREATED..CONTROL_CONVERTED count decisions
 * whose outcome is known (converted, or window closed); the OPEN ones count
 * decisions still inside their window. */
enum jd_out_field {
    JD_OUT_TREATED = 0,
    JD_OUT_TREATED_CONVERTED,
    JD_OUT_CONTROL,
    JD_OUT_CONTROL_CONVERTED,
    JD_OUT_TREATED_OPEN,
    JD_OUT_CONTROL_OPEN,
    JD_OUT_COUNT
};

/* NPS groups by the customer's latest feedback score. */
enum jd_nps_group { JD_NPS_PROMOTER = 0, JD_NPS_PASSIVE, JD_NPS_DETRACTOR, JD_NPS_COUNT };
const char *jd_nps_group_name(enum jd_nps_group g);
const char *jd_out_field_name(enum jd_out_field f);

/* Every counter of a rule set, in one flat array (the field layout of the
 * per-partition hashes). */
struct jd_program {
    size_t npartitions; /* hashes read */
    size_t nstages, nsegments, ntriggers;
    int64_t *v;          /* all of the below, one allocation */
    int64_t *stage;      /* [nstages] customers per stage */
    int64_t *segment;    /* [nsegments] members */
    int64_t *transition; /* [(nstages + 1) * nstages]: row from + 1 (row 0: new customers) */
    int64_t *nps;        /* [JD_NPS_COUNT] customers per group */
    int64_t *sent;       /* [ntriggers] triggers sent (put in the outbox) */
    int64_t *suppressed; /* [ntriggers * JD_SUP_COUNT] */
    int64_t *outcome;    /* [ntriggers * JD_OUT_COUNT] */
};
void jd_program_free(struct jd_program *p);

struct jd_insights;

/* Connects lazily (first use) to cfg->redis_addresses: one Redis node or a
 * Redis Cluster (redis_conn.h), every command routed by its key. */
struct jd_insights *jd_insights_new(const struct jd_config *cfg, const struct jd_ruleset *rs);
void jd_insights_destroy(struct jd_insights *ins);
/* After a rules reload (between batches). */
void jd_insights_bind(struct jd_insights *ins, const struct jd_ruleset *rs);

/* Before a batch: declare each partition it touches (gen changes when the
 * partition was released since: its stats offset is read again), then load
 * the offsets not known yet in one round trip. 0, or -1 with errstr. */
void jd_insights_want(struct jd_insights *ins, int32_t source, const char *topic, int32_t partition,
                      uint32_t gen);
int jd_insights_load_offsets(struct jd_insights *ins, char *errstr, size_t errsize);
/* jd_insights_load_offsets has something to load (a round trip). */
int jd_insights_offsets_wanted(const struct jd_insights *ins);

/* Around the rules of one event (ev) or timer (ev NULL) of customer c, whose
 * c->partition is its source: _begin resolves c's open goals and records the
 * stage, segments and score before; _end counts what changed. An event at or
 * below the partition's stats offset changes c but is not counted. */
void jd_insights_begin(struct jd_insights *ins, struct jd_customer *c, const struct jd_event *ev,
                       int64_t now);
/* _begin for a timer that fires just before the event at input `offset`
 * (counted once, like that event: a replay skips it), or for a timer tick
 * (offset -1: not tied to an offset, see docs/outcomes.md). */
void jd_insights_begin_timer(struct jd_insights *ins, struct jd_customer *c, int64_t offset,
                             int64_t now);
void jd_insights_end(struct jd_insights *ins, const struct jd_customer *c);
/* Between _begin and _end: a trigger decision. */
void jd_insights_sent(struct jd_insights *ins, struct jd_customer *c, size_t trigger, int64_t now);
void jd_insights_suppressed(struct jd_insights *ins, struct jd_customer *c, size_t trigger,
                            const char *reason, int64_t now);

/* Writes the batch's deltas (one script per partition, pipelined); call it
 * before the customers' flush. 0, or -1 with errstr (the deltas stay, a
 * retry writes them again). The same in three steps, for a thread that
 * sends them ahead of the customers (engine_wb.c): */
int jd_insights_flush(struct jd_insights *ins, char *errstr, size_t errsize);
/* Sends again, at once, what an earlier flush failed to write, then builds
 * the flush of the deltas counted since (nothing when there are none); the
 * counting goes on in fresh deltas. 0, or -1 with errstr (nothing built). */
int jd_insights_flush_build(struct jd_insights *ins, char *errstr, size_t errsize);
/* Sends what the build built (any thread, while the owner of `ins` leaves
 * its connection alone: see jd_insights_flying). 0, or -1: not written. */
int jd_insights_flush_exec(struct jd_insights *ins);
/* Judges each partition by its reply (the owner's thread, after the exec);
 * the deltas of a partition that failed are sent again by the next build.
 * 0, or -1 with errstr. */
int jd_insights_flush_finish(struct jd_insights *ins, char *errstr, size_t errsize);
/* A flush is built and not finished: until it is, nothing else may use the
 * connection (loading offsets, reading the program, rebinding rules). */
int jd_insights_flying(const struct jd_insights *ins);
/* Forgets unwritten deltas (a batch abandoned: it will be consumed again). */
void jd_insights_discard(struct jd_insights *ins);

/* Reads and sums every partition's hash under the current rule set. */
int jd_insights_read(struct jd_insights *ins, struct jd_program *out, char *errstr, size_t errsize);
/* Engine loop: at most every JD_INSIGHTS_REFRESH_MS, reads the program and
 * sets the program-wide gauges and counters in m. */
#define JD_INSIGHTS_REFRESH_MS 2000
void jd_insights_tick(struct jd_insights *ins, struct jd_metrics *m);
/* jd_insights_tick would read the program now (a round trip). */
int jd_insights_tick_due(const struct jd_insights *ins);

#endif
