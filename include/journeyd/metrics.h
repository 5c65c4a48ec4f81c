/*
 * metrics — Prometheus metrics kept by the hot path with relaxed atomics (no
 * locks, no allocation per event) and rendered as a snapshot by the HTTP
 * thread (http.c): /metrics, /healthz, /readyz.
 */
#ifndef JOURNEYD_METRICS_H
#define JOURNEYD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "journeyd/util.h"

struct jd_ruleset;

enum jd_counter {
    JD_C_EVENTS_CONSUMED = 0,  /* journeyd_events_consumed_total */
    JD_C_DLQ,                  /* journeyd_dlq_total */
    JD_C_RULES_EVALUATED,      /* journeyd_rules_evaluated_total */
    JD_C_REDIS_ERRORS,         /* journeyd_redis_errors_total */
    JD_C_REBALANCES,           /* journeyd_rebalances_total */
    JD_C_EVENTS_REPLAYED,      /* journeyd_events_replayed_total: skipped, already applied */
    JD_C_EVENTS_DUPLICATE,     /* journeyd_events_duplicate_total: same event_id seen again */
    JD_C_TRIGGERS_REDELIVERED, /* journeyd_triggers_redelivered_total: outbox re-sent */
    JD_C_KAFKA_ERRORS,         /* journeyd_kafka_errors_total */
    JD_C_REDIS_REDIRECTS,      /* journeyd_redis_redirects_total (cluster) */
    JD_C_FETCH_NUDGES,         /* journeyd_kafka_fetch_nudges_total (src/fetch_nudge.c) */
    JD_C_LOADS_AHEAD,          /* journeyd_loads_ahead_total (src/engine_load.c) */
    JD_C_DECODED_AHEAD,        /* journeyd_events_decoded_ahead_total (src/engine_decode.c) */
    JD_C_CACHE_EVICTIONS,      /* journeyd_cache_evictions_total */
    JD_C_COUNT
};

enum jd_gauge {
    JD_G_ASSIGNED_PARTITIONS = 0, /* journeyd_assigned_partitions */
    JD_G_TIMERS_PENDING,          /* journeyd_timers_pending */
    JD_G_CACHED_CUSTOMERS,        /* journeyd_cached_customers */
    JD_G_OUTBOX_PENDING,          /* journeyd_outbox_pending */
    JD_G_BACKPRESSURED,           /* journeyd_backpressured (0/1) */
    JD_G_CUSTOMER_MEMORY,         /* journeyd_customer_memory_bytes */
    JD_G_COUNT
};

enum jd_histogram {
    JD_H_EVENT_PROCESSING = 0, /* journeyd_event_processing_seconds */
    JD_H_EVENT_TO_TRIGGER,     /* journeyd_event_to_trigger_seconds */
    JD_H_REDIS_ROUNDTRIP,      /* journeyd_redis_roundtrip_seconds */
    JD_H_BATCH_EVENTS,         /* journeyd_batch_events */
    JD_H_TIMER_LATENESS,       /* journeyd_timer_lateness_seconds */
    JD_H_COUNT
};

/* Why an event failed (journeyd_events_failed_total{reason}). */
enum jd_fail_reason {
    JD_FAIL_MALFORMED = 0,
    JD_FAIL_UNKNOWN_SCHEMA,
    JD_FAIL_MISSING_FIELD,
    JD_FAIL_EMPTY_KEY,
    JD_FAIL_COUNT
};

enum jd_direction { JD_DIR_ENTER = 0, JD_DIR_EXIT = 1 };

struct jd_metrics;

struct jd_metrics *jd_metrics_new(const char *version);
/* Destroys m and its children. */
void jd_metrics_destroy(struct jd_metrics *m);
/* processing.engines > 1: a jd_metrics for one engine, owned by `parent`.
 * Once a parent has children, its render, alive and ready show them as one
 * (counters and histograms summed, see metrics.c's merge_rules; alive when
 * every engine is; ready when some engine owns partitions and none lacks
 * Redis or is back-pressured), plus journeyd_engines; the parent's own
 * values are no longer shown. Thread-safe. */
struct jd_metrics *jd_metrics_child(struct jd_metrics *parent);

void jd_metrics_add(struct jd_metrics *m, enum jd_counter c, uint64_t n);
void jd_metrics_gauge(struct jd_metrics *m, enum jd_gauge g, int64_t v);
void jd_metrics_observe(struct jd_metrics *m, enum jd_histogram h, double v);
/* n observations of the same value at once. */
void jd_metrics_observe_n(struct jd_metrics *m, enum jd_histogram h, double v, uint64_t n);
void jd_metrics_failed(struct jd_metrics *m, enum jd_fail_reason r);

/* Label sets that follow the rule set. jd_metrics_bind_rules is called at
 * start and after each successful reload (between batches); counters of
 * names that stay are kept. */
void jd_metrics_bind_rules(struct jd_metrics *m, const struct jd_ruleset *rs);
void jd_metrics_trigger_emitted(struct jd_metrics *m, size_t trigger);
void jd_metrics_trigger_suppressed(struct jd_metrics *m, size_t trigger, const char *reason);
void jd_metrics_segment_transition(struct jd_metrics *m, size_t segment, enum jd_direction d);
void jd_metrics_segment_members_add(struct jd_metrics *m, size_t segment, int64_t delta);
void jd_metrics_rule_reload(struct jd_metrics *m, int ok);

/* Consumer lag per partition, from librdkafka's statistics JSON. */
void jd_metrics_update_from_kafka_stats(struct jd_metrics *m, const char *json, size_t len);

/* Health: the loop's last heartbeat and the readiness inputs. */
void jd_metrics_heartbeat(struct jd_metrics *m);
void jd_metrics_set_ready_inputs(struct jd_metrics *m, int partitions_assigned, int redis_ok,
                                 int backpressured);

/* Renders the Prometheus text exposition (format 0.0.4) into out. */
void jd_metrics_render(struct jd_metrics *m, struct jd_buf *out);

/* HTTP server (libmicrohttpd, own thread): /metrics, /healthz, /readyz. */
struct jd_http;
struct jd_http *jd_http_start(struct jd_metrics *m, const char *bind, int port, char *errstr,
                              size_t errsize);
void jd_http_stop(struct jd_http *h);

/* ---- additions (ops) ---------------------------------------------------- */

/* Policy reasons of journeyd_triggers_suppressed_total{reason}; any other
 * string passed to jd_metrics_trigger_suppressed counts as "other". */
enum jd_suppress_reason {
    JD_SUP_COOLDOWN = 0,
    JD_SUP_CAP,
    JD_SUP_BUDGET,
    JD_SUP_QUIET_HOURS,
    JD_SUP_HOLDOUT,
    JD_SUP_OPTOUT,
    JD_SUP_DUPLICATE,
    JD_SUP_OTHER,
    JD_SUP_COUNT
};
enum jd_suppress_reason jd_suppress_reason_parse(const char *reason);
const char *jd_suppress_reason_name(enum jd_suppress_reason r);
/* Same as jd_metrics_trigger_suppressed without the string comparison. */
void jd_metrics_trigger_suppressed_r(struct jd_metrics *m, size_t trigger,
                                     enum jd_suppress_reason r);

/* The rule-bound update functions (trigger_*, segment_*) must be called from
 * the thread that calls jd_metrics_bind_rules (the engine thread): they read
 * the current label arrays without a lock. Everything else is thread-safe. */

/* jd_metrics_bind_rules without a compiled rule set: the label values
 * themselves. Counts of trigger names (with the same kind) and segment
 * names that stay are carried over. */
void jd_metrics_bind_names(struct jd_metrics *m, const char *rule_version, size_t ntriggers,
                           const char *const *trigger_names, const char *const *trigger_kinds,
                           size_t nsegments, const char *const *segment_names);
/* Sets a segment's member count outright (e.g. from the counts kept in
 * Redis, at start or after a rebalance). */
void jd_metrics_segment_members_set(struct jd_metrics *m, size_t segment, int64_t value);
void jd_metrics_gauge_add(struct jd_metrics *m, enum jd_gauge g, int64_t delta);

/* ---- additions (insights) ---------------------------------------------- */

/* Program-wide families read from Redis every few seconds (insights.h); the
 * label names are fixed per family (see metrics.c). */
enum jd_program_family {
    JD_PF_STAGE_CUSTOMERS = 0, /* journeyd_stage_customers{stage} */
    JD_PF_STAGE_TRANSITIONS,   /* journeyd_stage_transitions_total{from,to} */
    JD_PF_NPS,                 /* journeyd_nps_responses{group} */
    JD_PF_DECISIONS,           /* journeyd_trigger_decisions_total{trigger,group} */
    JD_PF_CONVERSIONS,         /* journeyd_trigger_conversions_total{trigger,group} */
    JD_PF_DECISIONS_OPEN,      /* journeyd_trigger_decisions_open{trigger,group} */
    JD_PF_COUNT
};
struct jd_series {
    enum jd_program_family family;
    const char *label[2]; /* NULL past the family's labels */
    int64_t value;
};
/* Replaces every program-wide series (thread-safe; rendered as given). */
void jd_metrics_set_program(struct jd_metrics *m, const struct jd_series *s, size_t n);

/* Consumer lag of one partition. */
struct jd_lag {
    char *topic; /* owned */
    int32_t partition;
    int64_t lag;
};
void jd_lag_free(struct jd_lag *v, size_t n);
/* Parses librdkafka's statistics JSON: topics -> partitions -> consumer_lag,
 * keeping the partitions with a known lag (>= 0; partition -1 is skipped).
 * *is_consumer is set from the top-level "type". Returns 0 and a malloc'd
 * array in *out (free with jd_lag_free), or -1 on malformed JSON. */
int jd_kafka_stats_lag(const char *json, size_t len, struct jd_lag **out, size_t *n,
                       int *is_consumer) JD_MUST_CHECK;
/* Replaces the lag table with `v` (ownership passes to m). */
void jd_metrics_set_lag(struct jd_metrics *m, struct jd_lag *v, size_t n);
/* Sum of the current lag table (for "lag > 0" decisions). */
int64_t jd_metrics_total_lag(struct jd_metrics *m);

/* Health: alive = last heartbeat within the timeout (10 s by default);
 * ready = partitions assigned && Redis ok && not back-pressured. When `why`
 * is given, one line per failing input is appended to it. */
void jd_metrics_set_heartbeat_timeout_ms(struct jd_metrics *m, int64_t ms);
int jd_metrics_alive(struct jd_metrics *m, double *age_seconds);
int jd_metrics_ready(struct jd_metrics *m, struct jd_buf *why);

/* The port the HTTP server listens on. jd_http_start with port 0 (metrics
 * disabled) returns NULL with an empty errstr: callers skip it. A negative
 * port binds any free port (for tests). */
int jd_http_port(const struct jd_http *h);

#endif
