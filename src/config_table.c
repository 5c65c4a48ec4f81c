/*
 * config_table — the one declarative description of every configuration
 * key: type, default, bounds, allowed values, reloadable, help. The loader
 * (config.c) validates against it, applies its defaults and frees by it; the
 * reference in docs/configuration.md is generated from it, so the three can
 * never disagree.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config_internal.h"
#include "journeyd/config.h"
#include "journeyd/rules.h" /* JD_MAX_PAYLOAD */

#define C_OFF(f) offsetof(struct jd_config, f)
#define C_SZ(f) sizeof(((struct jd_config *)0)->f)
#define R_OFF(f) offsetof(struct jd_rule_src, f)
#define T_OFF(f) offsetof(struct jd_trigger_src, f)
#define T_SZ(f) sizeof(((struct jd_trigger_src *)0)->f)
#define DAY 86400000.0

static const char *const kinds[] = {"REWARD", "REENGAGEMENT", NULL};
static const char *const wire_formats[] = {"auto", "confluent", "bare", NULL};
static const char *const clocks[] = {"event", "wall", NULL};
static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};
static const char *const quiet_actions[] = {"drop", "defer", NULL};

/* Enum fields are stored through an int. */
_Static_assert(sizeof(enum jd_wire_format) == sizeof(int), "enum size");
_Static_assert(sizeof(enum jd_clock) == sizeof(int), "enum size");
_Static_assert(sizeof(enum jd_log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum jd_trigger_kind) == sizeof(int), "enum size");

#define RELOAD JD_CFG_F_RELOAD
#define REQ JD_CFG_F_REQUIRED
#define NONEMPTY JD_CFG_F_NONEMPTY
#define BOUNDS JD_CFG_F_BOUNDS

/* A stage or segment entry: the same fields, relative to a jd_rule_src. */
#define RULE_ENTRY(list, what)                                                                     \
    {list "[].name",                                                                               \
     JD_CFG_NAME,                                                                                  \
     NULL,                                                                                         \
     REQ | RELOAD,                                                                                 \
     0,                                                                                            \
     0,                                                                                            \
     NULL,                                                                                         \
     R_OFF(name),                                                                                  \
     0,                                                                                            \
     0,                                                                                            \
     "Name of the " what "; unique among " list ", letters, digits and `_`."},                     \
        {list "[].when",                                                                           \
         JD_CFG_EXPR,                                                                              \
         NULL,                                                                                     \
         REQ | RELOAD,                                                                             \
         0,                                                                                        \
         0,                                                                                        \
         NULL,                                                                                     \
         0,                                                                                        \
         0,                                                                                        \
         0,                                                                                        \
         "Rule expression; the customer is in the " what " while it is true."},                    \
    {                                                                                              \
        list "[].enabled", JD_CFG_BOOL, "true", RELOAD, 0, 0, NULL, R_OFF(enabled), 0, 0,          \
            "`false`: checked at load but not evaluated."                                          \
    }

const struct jd_cfg_key jd_cfg_keys[] = {
    /* kafka */
    {"kafka", JD_CFG_SECTION, NULL, 0, 0, 0, NULL, 0, 0, 0,
     "Where events come from and where triggers go."},
    {"kafka.brokers", JD_CFG_STRING, "127.0.0.1:9092", NONEMPTY, 0, 0, NULL, C_OFF(brokers), 0, 0,
     "Bootstrap brokers, comma-separated `host:port` (`-b/--brokers` overrides)."},
    {"kafka.group_id", JD_CFG_STRING, "journeyd", NONEMPTY, 0, 0, NULL, C_OFF(group_id), 0, 0,
     "Consumer group shared by every instance of one deployment."},
    {"kafka.group_instance_id", JD_CFG_STRING, NULL, NONEMPTY, 0, 0, NULL, C_OFF(group_instance_id),
     0, 0,
     "Static membership id (`group.instance.id`), unique per instance: a restarted instance takes "
     "its partitions back without waiting for a rebalance. Unset: dynamic membership."},
    {"kafka.session_timeout", JD_CFG_DURATION, "10s", BOUNDS, 1000, 3600000, NULL,
     C_OFF(session_timeout_ms), 0, C_SZ(session_timeout_ms),
     "How long a silent instance keeps its partitions before the group reassigns them."},
    {"kafka.input_topics", JD_CFG_STRLIST, "touchpoints", NONEMPTY, 0, 0, NULL, C_OFF(input_topics),
     C_OFF(ninput_topics), 0,
     "The topic carrying `Touchpoint` events (one topic: see docs/guarantees.md)."},
    {"kafka.dead_letter_topic", JD_CFG_STRING, "touchpoints.dlq", NONEMPTY, 0, 0, NULL,
     C_OFF(dead_letter_topic), 0, 0,
     "Where undecodable or invalid input goes, unchanged, with `journeyd.error` and "
     "`journeyd.source` headers."},
    {"kafka.rewards_topic", JD_CFG_STRING, "loyalty.rewards", NONEMPTY, 0, 0, NULL,
     C_OFF(topics[JD_KIND_REWARD]), 0, 0, "Output topic of `REWARD` triggers."},
    {"kafka.reengagement_topic", JD_CFG_STRING, "loyalty.reengagement", NONEMPTY, 0, 0, NULL,
     C_OFF(topics[JD_KIND_REENGAGEMENT]), 0, 0, "Output topic of `REENGAGEMENT` triggers."},
    {"kafka.transactions", JD_CFG_BOOL, "false", 0, 0, 0, NULL, C_OFF(transactions), 0, 0,
     "Produce triggers and commit offsets in Kafka transactions. Not implemented yet: `true` "
     "is refused at load (docs/guarantees.md)."},
    {"kafka.properties", JD_CFG_PROPS, NULL, 0, 0, 0, NULL, C_OFF(kafka_props), C_OFF(nkafka_props),
     0,
     "librdkafka properties `( (\"name\", \"value\"), ... )`, passed untouched, in order, after "
     "journeyd's own settings (so they win: overriding one of these changes what journeyd relies "
     "on, e.g. `enable.auto.commit = false` stops its commits). journeyd's own: consumer "
     "`partition.assignment.strategy = cooperative-sticky`, `enable.auto.offset.store = false`, "
     "`enable.auto.commit = true`, `auto.commit.interval.ms = 1000`, `auto.offset.reset = "
     "earliest`, `enable.partition.eof = false`, `fetch.wait.max.ms = 10`, `session.timeout.ms` "
     "and `group.instance.id` from the keys above; producer `enable.idempotence = true`, "
     "`linger.ms = 0`; both `client.id = journeyd` and `socket.nagle.disable = true` "
     "(TCP_NODELAY: with Nagle a small request could wait up to 40 ms for a delayed ACK, "
     "docs/performance.md)."},

    /* redis */
    {"redis", JD_CFG_SECTION, NULL, 0, 0, 0, NULL, 0, 0, 0, "Where journey state lives."},
    {"redis.addresses", JD_CFG_STRLIST, "127.0.0.1:6379", NONEMPTY | JD_CFG_F_HOSTPORT, 0, 0, NULL,
     C_OFF(redis_addresses), C_OFF(nredis_addresses), 0,
     "One Redis node, or seed nodes of a Redis Cluster, `host:port` (`-r/--redis` overrides)."},
    {"redis.key_prefix", JD_CFG_STRING, "j", NONEMPTY, 0, 0, NULL, C_OFF(key_prefix), 0, 0,
     "First part of every key: `PREFIX:{customer_id}:...`."},
    {"redis.timeout", JD_CFG_DURATION, "2s", BOUNDS, 1, 600000, NULL, C_OFF(redis_timeout_ms), 0,
     C_SZ(redis_timeout_ms), "Connect and command timeout."},

    /* schemas */
    {"schemas", JD_CFG_SECTION, NULL, 0, 0, 0, NULL, 0, 0, 0,
     "Avro schemas; relative paths are resolved against this file's directory."},
    {"schemas.touchpoint", JD_CFG_PATH, "schemas/touchpoint.avsc", NONEMPTY, 0, 0, NULL,
     C_OFF(touchpoint_schema), 0, 0, "Reader schema of input events."},
    {"schemas.trigger", JD_CFG_PATH, "schemas/trigger.avsc", NONEMPTY, 0, 0, NULL,
     C_OFF(trigger_schema), 0, 0, "Schema of output triggers."},
    {"schemas.wire_format", JD_CFG_ENUM, "auto", 0, 0, 0, wire_formats, C_OFF(wire_format), 0, 0,
     "Input framing: `confluent` (0x00, 4-byte schema id, body), `bare` (body only), or `auto` "
     "(Confluent when the body starts with 0x00 and a known schema id)."},
    {"schemas.registry_ids", JD_CFG_GROUPLIST, NULL, 0, 0, 0, NULL, C_OFF(registry_ids),
     C_OFF(nregistry_ids), sizeof(struct jd_schema_id),
     "Writer schemas by Confluent schema id: `( { id = 1; file = \"...\"; } )`."},
    {"schemas.registry_ids[].id", JD_CFG_INT, NULL, REQ | BOUNDS, 0, INT_MAX, NULL,
     offsetof(struct jd_schema_id, id), 0, sizeof(int), "Schema id."},
    {"schemas.registry_ids[].file", JD_CFG_PATH, NULL, REQ | NONEMPTY, 0, 0, NULL,
     offsetof(struct jd_schema_id, file), 0, 0, "Writer schema (.avsc) for that id."},
    {"schemas.trigger_schema_id", JD_CFG_INT, "-1", BOUNDS, -1, INT_MAX, NULL,
     C_OFF(trigger_schema_id), 0, C_SZ(trigger_schema_id),
     "Schema id for Confluent-framed output; -1: bare Avro bodies."},
    {"schemas.suppressed", JD_CFG_PATH, "schemas/suppressed.avsc", NONEMPTY, 0, 0, NULL,
     C_OFF(suppressed_schema), 0, 0,
     "Schema of the audit records written to `policy.audit_topic` (read only when it is set)."},
    {"schemas.suppressed_schema_id", JD_CFG_INT, "-1", BOUNDS, -1, INT_MAX, NULL,
     C_OFF(suppressed_schema_id), 0, C_SZ(suppressed_schema_id),
     "Confluent schema id framing the audit records; -1: bare Avro bodies."},

    /* processing */
    {"processing", JD_CFG_SECTION, NULL, 0, 0, 0, NULL, 0, 0, 0, "How time works and batching."},
    {"processing.clock", JD_CFG_ENUM, "event", 0, 0, 0, clocks, C_OFF(clock), 0, 0,
     "`event`: time is the events' `occurred_at` (per-partition watermark; replays are "
     "deterministic); `wall`: the machine's clock."},
    {"processing.allowed_lateness", JD_CFG_DURATION, "5m", BOUNDS, 0, 30 * DAY, NULL,
     C_OFF(allowed_lateness_ms), 0, C_SZ(allowed_lateness_ms),
     "How far behind the watermark an event may arrive and still count in windows."},
    {"processing.batch_max_events", JD_CFG_INT, "50000", BOUNDS, 1, 100000, NULL,
     C_OFF(batch_max_events), 0, C_SZ(batch_max_events),
     "Most events per batch: a batch loads its new customers in one round trip and sends "
     "its triggers' writes in one, with a slice of the write-back at least as large "
     "(under load, one write every third batch carries the three). Larger batches cost "
     "fewer round trips per event under load; a batch is only as large as what has been "
     "fetched (processing.batch_max_wait)."},
    {"processing.batch_max_wait", JD_CFG_DURATION, "0ms", BOUNDS, 0, 10000, NULL,
     C_OFF(batch_max_wait_ms), 0, C_SZ(batch_max_wait_ms),
     "Longest wait to fill a batch after its first event: bounds the latency added by "
     "batching. 0: a batch is what the consumer has already fetched (librdkafka prefetches, "
     "so under load batches are full without waiting; with light traffic a wait only adds "
     "latency)."},
    {"processing.flush_interval", JD_CFG_DURATION, "1s", BOUNDS, 0, 60000, NULL,
     C_OFF(flush_interval_ms), 0, C_SZ(flush_interval_ms),
     "How often customers changed without a new trigger are written back (one write for "
     "all their events since the last one); customers with a new trigger are written at "
     "the end of their batch. Offsets are committed only behind a write-back: a crash "
     "replays at most about this much (a round under load can take a little longer). "
     "Shorter: offsets follow closer, more Redis writes (docs/performance.md). 0: every "
     "batch."},
    {"processing.cache_max_customers", JD_CFG_INT, "1000000", BOUNDS, 1, 100000000, NULL,
     C_OFF(cache_max_customers), 0, C_SZ(cache_max_customers),
     "Customers kept in memory per instance; beyond it, clean customers are evicted, those not "
     "seen since the last eviction pass first (second chance)."},
    {"processing.engines", JD_CFG_INT, "1", BOUNDS, 1, 64, NULL, C_OFF(engines), 0, C_SZ(engines),
     "Engines in the process, each on a thread of its own and a member of the consumer group "
     "with its own consumer, producer, Redis connections and cache (a share of "
     "cache_max_customers in proportion to the partitions it owns; cache_max_customers / N "
     "while it owns none): the group splits the partitions between them as between N instances, "
     "with the same guarantees. One per core the process may use (docs/performance.md, "
     "\"Scaling\"). /metrics shows them as one."},
    {"processing.naive", JD_CFG_BOOL, "false", 0, 0, 0, NULL, C_OFF(naive), 0, 0,
     "One synchronous Redis round trip per event: the benchmark's baseline, not for production."},
    {"processing.history_max", JD_CFG_INT, "20", BOUNDS, 0, 1000, NULL, C_OFF(history_max), 0,
     C_SZ(history_max), "Trigger history entries kept per customer."},
    {"processing.timer_tick", JD_CFG_DURATION, "100ms", BOUNDS, 1, 60000, NULL,
     C_OFF(timer_tick_ms), 0, C_SZ(timer_tick_ms),
     "How often the timers that came due in the owned partitions are fetched and fired: "
     "bounds their lateness under the wall clock (docs/time.md)."},
    {"processing.idle_advance", JD_CFG_DURATION, "30s", BOUNDS, 0, 30 * DAY, NULL,
     C_OFF(idle_advance_ms), 0, C_SZ(idle_advance_ms),
     "Event clock: a partition that has been caught up and without events this long takes the "
     "wall clock as its watermark, so that its timers still fire; 0: never (docs/time.md)."},

    /* metrics, log */
    {"metrics", JD_CFG_SECTION, NULL, 0, 0, 0, NULL, 0, 0, 0, "Prometheus endpoint."},
    {"metrics.port", JD_CFG_INT, "9464", BOUNDS, 0, 65535, NULL, C_OFF(metrics_port), 0,
     C_SZ(metrics_port),
     "HTTP port of `/metrics` and the health checks; 0: off "
     "(`--metrics-port` overrides)."},
    {"metrics.bind", JD_CFG_STRING, "0.0.0.0", NONEMPTY, 0, 0, NULL, C_OFF(metrics_bind), 0, 0,
     "Address the metrics endpoint listens on."},
    {"log", JD_CFG_SECTION, NULL, 0, 0, 0, NULL, 0, 0, 0, "Log lines on stderr."},
    {"log.level", JD_CFG_ENUM, "info", 0, 0, 0, levels, C_OFF(log_level), 0, 0,
     "Lowest level written."},
    {"log.format", JD_CFG_ENUM, "text", 0, 0, 0, log_formats, C_OFF(log_json), 0, 0,
     "`text` lines or one JSON object per line."},

    /* the journey */
    {"stages", JD_CFG_GROUPLIST, NULL, RELOAD | JD_CFG_F_UNIQUE, 0, 0, NULL, C_OFF(rules.stages),
     C_OFF(rules.nstages), sizeof(struct jd_rule_src),
     "Journey stages, in order: a customer is in the first whose `when` holds."},
    RULE_ENTRY("stages", "stage"),
    {"segments", JD_CFG_GROUPLIST, NULL, RELOAD | JD_CFG_F_UNIQUE, 0, 0, NULL,
     C_OFF(rules.segments), C_OFF(rules.nsegments), sizeof(struct jd_rule_src),
     "Segments: any number may hold at once."},
    RULE_ENTRY("segments", "segment"),
    {"triggers", JD_CFG_GROUPLIST, NULL, RELOAD | JD_CFG_F_UNIQUE, 0, 0, NULL,
     C_OFF(rules.triggers), C_OFF(rules.ntriggers), sizeof(struct jd_trigger_src),
     "Triggers: messages sent when something happens in a journey."},
    {"triggers[].name", JD_CFG_NAME, NULL, REQ | RELOAD, 0, 0, NULL, T_OFF(on.name), 0, 0,
     "Name of the trigger (`Trigger.trigger`); unique among triggers."},
    {"triggers[].kind", JD_CFG_ENUM, NULL, REQ | RELOAD, 0, 0, kinds, T_OFF(kind), 0, 0,
     "Which output topic and which caps apply."},
    {"triggers[].on", JD_CFG_EXPR, NULL, REQ | RELOAD, 0, 0, NULL, T_OFF(on), 0, 0,
     "When it fires: `enter:SEGMENT`, `exit:SEGMENT`, `stage:FROM->TO` or `event: EXPRESSION`."},
    {"triggers[].topic", JD_CFG_STRING, NULL, NONEMPTY | RELOAD, 0, 0, NULL, T_OFF(topic), 0, 0,
     "Output topic; unset: the kind's topic."},
    {"triggers[].cooldown", JD_CFG_DURATION, "0", BOUNDS | RELOAD, 0, 3650 * DAY, NULL,
     T_OFF(cooldown_ms), 0, T_SZ(cooldown_ms),
     "Least time between two firings for one customer; 0: none."},
    {"triggers[].max_per_customer", JD_CFG_INT, "0", BOUNDS | RELOAD, 0, 1000000, NULL,
     T_OFF(max_per_window), 0, T_SZ(max_per_window),
     "At most this many firings per customer within `per`; 0: unlimited."},
    {"triggers[].per", JD_CFG_DURATION, "1d", BOUNDS | RELOAD, 1, 3650 * DAY, NULL,
     T_OFF(max_window_ms), 0, T_SZ(max_window_ms), "Window of `max_per_customer`."},
    {"triggers[].budget", JD_CFG_INT, "0", BOUNDS | RELOAD, 0, 1e15, NULL, T_OFF(global_budget), 0,
     T_SZ(global_budget),
     "At most this many firings across all customers per `budget_period`; 0: unlimited."},
    {"triggers[].budget_period", JD_CFG_DURATION, "1d", BOUNDS | RELOAD, 1, 3650 * DAY, NULL,
     T_OFF(global_period_ms), 0, T_SZ(global_period_ms), "Period of `budget`."},
    {"triggers[].priority", JD_CFG_INT, "0", BOUNDS | RELOAD, -1000, 1000, NULL, T_OFF(priority), 0,
     T_SZ(priority), "When caps allow only some of the triggers due at once, higher wins."},
    {"triggers[].holdout", JD_CFG_FLOAT, "0", BOUNDS | RELOAD, 0, 1, NULL, T_OFF(holdout), 0, 0,
     "Share of customers (by a hash of customer and trigger) who never receive it, to measure "
     "uplift."},
    {"triggers[].holdout_salt", JD_CFG_STRING, NULL, NONEMPTY | RELOAD, 0, 0, NULL,
     T_OFF(holdout_salt), 0, 0,
     "Salt of the holdout hash; unset: the trigger's name. Change it to draw a new group."},
    {"triggers[].goal", JD_CFG_STRING, NULL, NONEMPTY | RELOAD, 0, 0, NULL, T_OFF(goal), 0, 0,
     "Conversion goal: a touchpoint type reached after the trigger; unset: not measured."},
    {"triggers[].goal_window", JD_CFG_DURATION, "7d", BOUNDS | RELOAD, 1, 3650 * DAY, NULL,
     T_OFF(goal_window_ms), 0, T_SZ(goal_window_ms), "How long a goal may take to count."},
    {"triggers[].enabled", JD_CFG_BOOL, "true", RELOAD, 0, 0, NULL, T_OFF(on.enabled), 0, 0,
     "`false`: checked at load but never fires."},
    {"triggers[].payload", JD_CFG_PAYLOAD, NULL, BOUNDS | RELOAD, 0, JD_MAX_PAYLOAD, NULL,
     T_OFF(payload), T_OFF(npayload), 0,
     "`Trigger.attributes`: `( (\"key\", \"expression\"), ... )`, evaluated when it fires."},

    /* contact policy */
    {"policy", JD_CFG_SECTION, NULL, RELOAD, 0, 0, NULL, 0, 0, 0,
     "Contact policy across triggers: caps, quiet hours, audit, consent."},
    {"policy.caps", JD_CFG_GROUPLIST, NULL, RELOAD, 0, 0, NULL, C_OFF(policy.caps),
     C_OFF(policy.ncaps), sizeof(struct jd_cap_src),
     "Frequency caps per customer and kind: `( { kind; max; per; } )`."},
    {"policy.caps[].kind", JD_CFG_ENUM, NULL, REQ | RELOAD, 0, 0, kinds,
     offsetof(struct jd_cap_src, kind), 0, 0, "Kind of trigger capped."},
    {"policy.caps[].max", JD_CFG_INT, NULL, REQ | BOUNDS | RELOAD, 0, 1000000, NULL,
     offsetof(struct jd_cap_src, max), 0, sizeof(int), "At most this many per customer..."},
    {"policy.caps[].per", JD_CFG_DURATION, NULL, REQ | BOUNDS | RELOAD, 1, 3650 * DAY, NULL,
     offsetof(struct jd_cap_src, per_ms), 0, sizeof(int64_t), "...within this sliding window."},
    {"policy.quiet_hours", JD_CFG_SECTION, NULL, RELOAD, 0, 0, NULL, 0, 0, 0,
     "Hours in the customer's local time when triggers are held back; absent: none."},
    {"policy.quiet_hours.kinds", JD_CFG_KINDSET, "REWARD,REENGAGEMENT", NONEMPTY | RELOAD, 0, 0,
     kinds, C_OFF(policy.quiet_kinds), 0, 0, "Kinds held back."},
    {"policy.quiet_hours.from", JD_CFG_CLOCKTIME, "21:00", RELOAD, 0, 0, NULL,
     C_OFF(policy.quiet_from_min), 0, 0, "Start, `HH:MM` local time."},
    {"policy.quiet_hours.to", JD_CFG_CLOCKTIME, "08:00", RELOAD, 0, 0, NULL,
     C_OFF(policy.quiet_to_min), 0, 0,
     "End, `HH:MM` local time (may be before `from`: overnight)."},
    {"policy.quiet_hours.tz_attribute", JD_CFG_STRING, "tz", NONEMPTY | RELOAD, 0, 0, NULL,
     C_OFF(policy.quiet_tz_attribute), 0, 0,
     "Touchpoint attribute holding the customer's IANA time zone (e.g. `Europe/Paris`)."},
    {"policy.quiet_hours.default_tz", JD_CFG_STRING, "UTC", NONEMPTY | RELOAD, 0, 0, NULL,
     C_OFF(policy.quiet_default_tz), 0, 0, "Time zone of customers without that attribute."},
    {"policy.quiet_hours.action", JD_CFG_ENUM, "defer", RELOAD, 0, 0, quiet_actions,
     C_OFF(policy.quiet_defer), 0, 0,
     "`defer`: send when the quiet period ends; `drop`: do not send."},
    {"policy.audit_topic", JD_CFG_STRING, NULL, NONEMPTY | RELOAD, 0, 0, NULL,
     C_OFF(policy.audit_topic), 0, 0,
     "Topic receiving every suppressed trigger (holdouts included); unset: none."},
    {"policy.optout_attribute", JD_CFG_STRING, NULL, NONEMPTY | RELOAD, 0, 0, NULL,
     C_OFF(policy.optout_attribute), 0, 0,
     "Touchpoint attribute listing the kinds a customer opted out of; unset: none."},
};

const size_t jd_cfg_nkeys = sizeof jd_cfg_keys / sizeof jd_cfg_keys[0];
/* config.c marks the keys seen in a group in an array of this size. */
_Static_assert(sizeof jd_cfg_keys / sizeof jd_cfg_keys[0] <= JD_CFG_MAX_KEYS, "table size");

const struct jd_cfg_key *jd_cfg_key_find(const char *path)
{
    for (size_t i = 0; i < jd_cfg_nkeys; i++)
        if (strcmp(jd_cfg_keys[i].path, path) == 0)
            return &jd_cfg_keys[i];
    return NULL;
}

const char *jd_kind_name(enum jd_trigger_kind k)
{
    return (unsigned)k < JD_KIND_COUNT ? kinds[k] : "?";
}

int jd_kind_parse(const char *s, enum jd_trigger_kind *out)
{
    for (int i = 0; i < JD_KIND_COUNT; i++) {
        if (s && strcasecmp(s, kinds[i]) == 0) {
            *out = (enum jd_trigger_kind)i;
            return 0;
        }
    }
    return -1;
}

/* ---- the reference ---- */

static void put_number(FILE *out, const struct jd_cfg_key *k, double v)
{
    char buf[32];
    if (k->type == JD_CFG_DURATION)
        fputs(jd_format_duration((int64_t)v, buf, sizeof buf), out);
    else if (k->type == JD_CFG_FLOAT)
        fprintf(out, "%g", v);
    else
        fprintf(out, "%.0f", v);
}

static void put_type(FILE *out, const struct jd_cfg_key *k)
{
    static const char *names[] = {
        [JD_CFG_SECTION] = "group",
        [JD_CFG_GROUPLIST] = "list of groups",
        [JD_CFG_STRING] = "string",
        [JD_CFG_PATH] = "path",
        [JD_CFG_INT] = "integer",
        [JD_CFG_FLOAT] = "float",
        [JD_CFG_BOOL] = "boolean",
        [JD_CFG_DURATION] = "duration",
        [JD_CFG_ENUM] = "enum",
        [JD_CFG_STRLIST] = "list of strings",
        [JD_CFG_PROPS] = "list of pairs",
        [JD_CFG_KINDSET] = "list of kinds",
        [JD_CFG_CLOCKTIME] = "time of day",
        [JD_CFG_NAME] = "name",
        [JD_CFG_EXPR] = "rule expression",
        [JD_CFG_PAYLOAD] = "list of pairs",
    };
    fputs(names[k->type], out);
    if (k->choices) {
        fputs(": ", out);
        for (size_t i = 0; k->choices[i]; i++)
            fprintf(out, "%s`%s`", i ? " \\| " : "", k->choices[i]);
    }
    if ((k->flags & JD_CFG_F_BOUNDS) && k->type != JD_CFG_PAYLOAD) {
        fputs(", ", out);
        put_number(out, k, k->min);
        fputs("..", out);
        put_number(out, k, k->max);
    } else if (k->type == JD_CFG_PAYLOAD) {
        fprintf(out, ", at most %.0f", k->max);
    }
}

static void put_default(FILE *out, const struct jd_cfg_key *k)
{
    if (k->flags & JD_CFG_F_REQUIRED) {
        fputs("required", out);
        return;
    }
    if (!k->def) {
        fputs(k->type == JD_CFG_SECTION || k->type == JD_CFG_GROUPLIST ? "" : "unset", out);
        return;
    }
    switch (k->type) {
    case JD_CFG_STRING:
    case JD_CFG_PATH:
    case JD_CFG_ENUM:
    case JD_CFG_DURATION:
    case JD_CFG_CLOCKTIME:
        fprintf(out, "`\"%s\"`", k->def);
        break;
    case JD_CFG_STRLIST:
    case JD_CFG_KINDSET: {
        fputs("`[", out);
        const char *p = k->def;
        for (int first = 1; *p; first = 0) {
            size_t n = strcspn(p, ",");
            fprintf(out, "%s\"%.*s\"", first ? " " : ", ", (int)n, p);
            p += n + (p[n] == ',');
        }
        fputs(" ]`", out);
        break;
    }
    default:
        fprintf(out, "`%s`", k->def);
        break;
    }
}

void jd_config_write_reference(FILE *out)
{
    fputs("| key | type | default | reloadable | description |\n", out);
    fputs("|---|---|---|---|---|\n", out);
    for (size_t i = 0; i < jd_cfg_nkeys; i++) {
        const struct jd_cfg_key *k = &jd_cfg_keys[i];
        fprintf(out, "| `%s` | ", k->path);
        put_type(out, k);
        fputs(" | ", out);
        put_default(out, k);
        fprintf(out, " | %s | %s |\n", (k->flags & JD_CFG_F_RELOAD) ? "yes" : "no", k->help);
    }
}
