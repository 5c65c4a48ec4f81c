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
    JD_C_COUNT
};

enum jd_gauge {
    JD_G_ASSIGNED_PARTITIONS = 0, /* journeyd_assigned_partitions */
    JD_G_TIMERS_PENDING,          /* journeyd_timers_pending */
    JD_G_CACHED_CUSTOMERS,        /* journeyd_cached_customers */
    JD_G_OUTBOX_PENDING,          /* journeyd_outbox_pending */
    JD_G_BACKPRESSURED,           /* journeyd_backpressured (0/1) */
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
void jd_metrics_destroy(struct jd_metrics *m);

void jd_metrics_add(struct jd_metrics *m, enum jd_counter c, uint64_t n);
void jd_metrics_gauge(struct jd_metrics *m, enum jd_gauge g, int64_t v);
void jd_metrics_observe(struct jd_metrics *m, enum jd_histogram h, double v);
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

#endif
