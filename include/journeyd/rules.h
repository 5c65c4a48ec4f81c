/*
 * rules — the rule language (docs/rules.md): stages, segments and triggers
 * compiled once from their config sources into a rule set that knows what
 * each rule reads, so that an event re-evaluates only the rules whose inputs
 * it changed, and time-dependent rules can say when they next change.
 *
 * A rule set is immutable once compiled; a reload compiles a new one and the
 * engine swaps it between batches.
 */
#ifndef JOURNEYD_RULES_H
#define JOURNEYD_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "journeyd/config.h"
#include "journeyd/event.h"
#include "journeyd/state.h"
#include "journeyd/util.h"

#define JD_REASON_MAX 512
#define JD_MAX_PAYLOAD 8
#define JD_PAYLOAD_VALUE_MAX 96
#define JD_MAX_FIRED 16

struct jd_ruleset;

enum jd_trigger_on { JD_ON_EVENT = 0, JD_ON_ENTER, JD_ON_EXIT, JD_ON_STAGE };

/* Compiles every rule of `src`. All errors are appended to `errs` as
 * "FILE:LINE:COL: error: ..." (with "did you mean ...?" where obvious).
 * Returns 0 and *out, or -1 when there was any error. */
int jd_rules_compile(const struct jd_rules_src *src, struct jd_ruleset **out,
                     struct jd_errors *errs) JD_MUST_CHECK;
void jd_rules_destroy(struct jd_ruleset *rs);

/* Hash of the enabled rules' names and texts (16 hex chars): Trigger.rule_version. */
const char *jd_rules_version(const struct jd_ruleset *rs);

size_t jd_rules_nstages(const struct jd_ruleset *rs);
const char *jd_rules_stage_name(const struct jd_ruleset *rs, size_t i);
int jd_rules_stage_index(const struct jd_ruleset *rs, const char *name); /* -1 absent */

size_t jd_rules_nsegments(const struct jd_ruleset *rs);
const char *jd_rules_segment_name(const struct jd_ruleset *rs, size_t i);
int jd_rules_segment_index(const struct jd_ruleset *rs, const char *name);

size_t jd_rules_ntriggers(const struct jd_ruleset *rs);
int jd_rules_trigger_index(const struct jd_ruleset *rs, const char *name);
/* The trigger's source (name, kind, topic, cooldown, holdout, ...), as configured. */
const struct jd_trigger_src *jd_rules_trigger(const struct jd_ruleset *rs, size_t i);
enum jd_trigger_on jd_rules_trigger_on(const struct jd_ruleset *rs, size_t i);

/* Aggregates the rule set needs, one slot each in jd_customer.aggs. The key
 * is canonical ("count:purchase:30d", "sum:purchase:amount:30d",
 * "last:feedback:score", ...) and is what state.c stores, so a reloaded rule
 * set finds the slots it shares with the old one. */
size_t jd_rules_naggs(const struct jd_ruleset *rs);
const char *jd_rules_agg_key(const struct jd_ruleset *rs, size_t i);
/* The key's length when the state's text form writes it as it is
 * (jd_state_plain, checked once at compile), SIZE_MAX when it is escaped. */
size_t jd_rules_agg_key_plain_len(const struct jd_ruleset *rs, size_t i);
/* Shapes an empty slot i (allocates buckets for windowed aggregates). */
void jd_rules_agg_init(const struct jd_ruleset *rs, size_t i, struct jd_agg *a);
/* Buckets in slot i's ring; 0: not windowed. */
uint32_t jd_rules_agg_nbuckets(const struct jd_ruleset *rs, size_t i);
void jd_agg_free(struct jd_agg *a);

struct jd_fired {
    uint32_t trigger;           /* index into the rule set's triggers */
    int32_t segment;            /* enter/exit triggers: the segment; else -1 */
    char reason[JD_REASON_MAX]; /* the condition and the values it saw */
    size_t nattrs;
    const char *attr_keys[JD_MAX_PAYLOAD]; /* owned by the rule set */
    char attr_vals[JD_MAX_PAYLOAD][JD_PAYLOAD_VALUE_MAX];
};

struct jd_eval_result {
    int32_t old_stage;
    int32_t new_stage;
    uint64_t entered; /* segment bits entered by this evaluation */
    uint64_t exited;
    size_t nfired;
    struct jd_fired fired[JD_MAX_FIRED];
    uint64_t evaluated; /* rule expressions evaluated (stages + segments + triggers) */
};

/* Applies `ev` to the rule aggregates of `c`, re-evaluates the stages,
 * segments and triggers whose inputs the event changed (all of them for a
 * customer whose stage is still -1), updates c->stage, c->segments, c->aggs
 * and reports transitions and fired triggers in `res`. `now` is the clock
 * (event watermark or wall time, ms). Policy (cooldowns, caps) is not
 * applied here.
 * Contract: call jd_customer_apply_core(c, ev) BEFORE this function — the
 * lifetime counts (count('t'), count_any()), first_seen and last_channel are
 * read from the core profile and must already include `ev`. */
void jd_rules_on_event(const struct jd_ruleset *rs, struct jd_customer *c,
                       const struct jd_event *ev, int64_t now, struct jd_eval_result *res);

/* Time-driven re-evaluation at `now` (a timer came due): re-evaluates the
 * time-dependent rules; no event triggers fire. */
void jd_rules_on_time(const struct jd_ruleset *rs, struct jd_customer *c, int64_t now,
                      struct jd_eval_result *res);

/* Evaluates every stage and segment of `c` at `now` (no event triggers):
 * for a customer whose state was loaded or rebound under another rule set,
 * so that new rules take effect without waiting for an input to change. */
void jd_rules_reevaluate(const struct jd_ruleset *rs, struct jd_customer *c, int64_t now,
                         struct jd_eval_result *res);

/* The next instant after `now` at which a time-dependent rule's value can
 * change for `c` (a window bucket expiring, days_since crossing a threshold,
 * a not_followed_by deadline); INT64_MAX when none. */
int64_t jd_rules_next_change(const struct jd_ruleset *rs, const struct jd_customer *c, int64_t now);

/* Evaluates the stage, segment or trigger called `name` for `c` at `now`
 * (ev may be NULL) and writes one line per sub-expression with its value.
 * Returns 0, or -1 with errstr when there is no such rule. */
int jd_rules_explain(const struct jd_ruleset *rs, const struct jd_customer *c,
                     const struct jd_event *ev, const char *name, int64_t now, struct jd_buf *out,
                     char *errstr, size_t errsize);

#endif
