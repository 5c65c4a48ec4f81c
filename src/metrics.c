/*
 * metrics — the counters, gauges and histograms of journeyd and their
 * Prometheus text rendering (format 0.0.4).
 *
 * Owns: every metric value. The hot path updates them with relaxed C11
 * atomics: no lock, no allocation. The HTTP thread renders a snapshot.
 *
 * The rule-bound families (triggers, suppressions, segments) live in a
 * `struct rulebound` that is replaced as a whole when the rule set changes.
 * The replacement happens on the engine thread between batches, and the
 * rule-bound update functions are called from that same thread, so they
 * read m->rb without a lock; the renderer takes m->lock, which the swap also
 * takes, so it never reads an array that has been freed. The lag table and
 * the rule version are guarded by the same lock (neither is on the hot path).
 */
#include "journeyd/metrics.h"
#include "journeyd/metrics_merge.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Histogram bucket upper bounds. A value lands in the first bucket whose
 * bound is >= the value (Prometheus "le"); larger values go to +Inf. */
static const double seconds_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                        0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
static const double batch_bounds[] = {1,   2,    5,    10,   25,    50,    100,   250,
                                      500, 1000, 2500, 5000, 10000, 25000, 50000, 100000};
/* Timer lateness can reach minutes under the event clock (the watermark
 * moves only with events), so its range is wider. */
static const double lateness_bounds[] = {0.001, 0.01, 0.1, 0.5, 1,   2.5, 5,
                                         10,    30,   60,  300, 900, 3600};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define HIST_MAX_BOUNDS 16

struct hist_def {
    const char *name;
    const char *help;
    const double *bounds;
    size_t nbounds;
    double scale; /* the sum is kept as an integer: value * scale */
};

static const struct hist_def hist_defs[JD_H_COUNT] = {
    [JD_H_EVENT_PROCESSING] = {"journeyd_event_processing_seconds",
                               "Time from taking an event off the consumer to its state being "
                               "persisted, per event.",
                               seconds_bounds, NELEM(seconds_bounds), 1e9},
    [JD_H_EVENT_TO_TRIGGER] = {"journeyd_event_to_trigger_seconds",
                               "Time from an event's arrival to the delivery of the triggers it "
                               "fired (not those deferred by quiet hours).",
                               seconds_bounds, NELEM(seconds_bounds), 1e9},
    [JD_H_REDIS_ROUNDTRIP] = {"journeyd_redis_roundtrip_seconds",
                              "Duration of one pipelined Redis round trip.", seconds_bounds,
                              NELEM(seconds_bounds), 1e9},
    [JD_H_BATCH_EVENTS] = {"journeyd_batch_events", "Events per processed batch.", batch_bounds,
                           NELEM(batch_bounds), 1},
    [JD_H_TIMER_LATENESS] = {"journeyd_timer_lateness_seconds",
                             "How late a due timer was processed after its deadline.",
                             lateness_bounds, NELEM(lateness_bounds), 1e6},
};

struct metric_def {
    const char *name;
    const char *help;
};

static const struct metric_def counter_defs[JD_C_COUNT] = {
    [JD_C_EVENTS_CONSUMED] = {"journeyd_events_consumed_total",
                              "Events taken off the input topics."},
    [JD_C_DLQ] = {"journeyd_dlq_total", "Messages sent to the dead-letter topic."},
    [JD_C_RULES_EVALUATED] = {"journeyd_rules_evaluated_total",
                              "Rule expressions evaluated (stages, segments and triggers)."},
    [JD_C_REDIS_ERRORS] = {"journeyd_redis_errors_total",
                           "Redis commands or connections that failed."},
    [JD_C_REBALANCES] = {"journeyd_rebalances_total", "Consumer group rebalances seen."},
    [JD_C_EVENTS_REPLAYED] = {"journeyd_events_replayed_total",
                              "Events skipped because their offset was already applied."},
    [JD_C_EVENTS_DUPLICATE] = {"journeyd_events_duplicate_total",
                               "Events skipped because their event_id was seen before."},
    [JD_C_TRIGGERS_REDELIVERED] = {"journeyd_triggers_redelivered_total",
                                   "Stored triggers re-sent from the outbox after a restart or "
                                   "rebalance."},
    [JD_C_KAFKA_ERRORS] = {"journeyd_kafka_errors_total", "Errors reported by librdkafka."},
    [JD_C_REDIS_REDIRECTS] = {"journeyd_redis_redirects_total",
                              "MOVED/ASK redirections followed (Redis Cluster)."},
    [JD_C_FETCH_NUDGES] = {"journeyd_kafka_fetch_nudges_total",
                           "Times the consumer's fetcher was woken after its queue ran low "
                           "(draining a backlog)."},
    [JD_C_LOADS_AHEAD] = {"journeyd_loads_ahead_total",
                          "Batches whose new customers were loaded from Redis by the loader "
                          "thread while the batch before was written back."},
    [JD_C_DECODED_AHEAD] = {"journeyd_events_decoded_ahead_total",
                            "Events decoded by the decoder thread while the batch before "
                            "was written back."},
    [JD_C_CACHE_EVICTIONS] = {"journeyd_cache_evictions_total",
                              "Customers evicted from the cache to keep it within "
                              "processing.cache_max_customers (loaded from Redis again "
                              "when their next event comes)."},
};

static const struct metric_def gauge_defs[JD_G_COUNT] = {
    [JD_G_ASSIGNED_PARTITIONS] = {"journeyd_assigned_partitions",
                                  "Input partitions assigned to this instance."},
    [JD_G_TIMERS_PENDING] = {"journeyd_timers_pending",
                             "Timers scheduled in the assigned partitions."},
    [JD_G_CACHED_CUSTOMERS] = {"journeyd_cached_customers",
                               "Customers whose state is cached in memory."},
    [JD_G_OUTBOX_PENDING] = {"journeyd_outbox_pending",
                             "Triggers stored in the outbox awaiting Kafka acknowledgement."},
    [JD_G_BACKPRESSURED] = {"journeyd_backpressured",
                            "1 while consumption is paused because Redis or Kafka is behind."},
    [JD_G_CUSTOMER_MEMORY] = {"journeyd_customer_memory_bytes",
                              "Memory mapped for the cached customers' state (the engines' pools: "
                              "each slot size's high-water mark, reused, not returned)."},
};

static const char *const fail_names[JD_FAIL_COUNT] = {
    [JD_FAIL_MALFORMED] = "malformed",
    [JD_FAIL_UNKNOWN_SCHEMA] = "unknown_schema",
    [JD_FAIL_MISSING_FIELD] = "missing_field",
    [JD_FAIL_EMPTY_KEY] = "empty_key",
};

static const char *const suppress_names[JD_SUP_COUNT] = {
    [JD_SUP_COOLDOWN] = "cooldown",       [JD_SUP_CAP] = "cap",         [JD_SUP_BUDGET] = "budget",
    [JD_SUP_QUIET_HOURS] = "quiet_hours", [JD_SUP_HOLDOUT] = "holdout", [JD_SUP_OPTOUT] = "optout",
    [JD_SUP_DUPLICATE] = "duplicate",     [JD_SUP_OTHER] = "other",
};

/* Program-wide families (insights.c reads them from Redis). */
static const struct {
    const char *name, *type, *help, *labels[2];
} program_defs[JD_PF_COUNT] = {
    [JD_PF_STAGE_CUSTOMERS] = {"journeyd_stage_customers",
                               "gauge",
                               "Customers in each journey stage, program-wide (from Redis).",
                               {"stage", NULL}},
    [JD_PF_STAGE_TRANSITIONS] = {"journeyd_stage_transitions_total",
                                 "counter",
                                 "Customers moving from one journey stage to another, "
                                 "program-wide; from=\"(new)\" for a first stage.",
                                 {"from", "to"}},
    [JD_PF_NPS] = {"journeyd_nps_responses",
                   "gauge",
                   "Customers by NPS group of their latest feedback score (promoter 9-10, "
                   "passive 7-8, detractor 0-6), program-wide.",
                   {"group", NULL}},
    [JD_PF_DECISIONS] = {"journeyd_trigger_decisions_total",
                         "counter",
                         "Trigger decisions with a conversion goal whose outcome is known, by "
                         "group (treated: sent, control: held out).",
                         {"trigger", "group"}},
    [JD_PF_CONVERSIONS] = {"journeyd_trigger_conversions_total",
                           "counter",
                           "Trigger decisions whose customer reached the goal within the "
                           "window, by group.",
                           {"trigger", "group"}},
    [JD_PF_DECISIONS_OPEN] = {"journeyd_trigger_decisions_open",
                              "gauge",
                              "Trigger decisions still inside their goal window, by group.",
                              {"trigger", "group"}},
};

#define DEFAULT_HEARTBEAT_TIMEOUT_NS (10LL * 1000000000LL)

struct hist {
    _Atomic uint64_t buckets[HIST_MAX_BOUNDS + 1]; /* per bucket, not cumulative; last: +Inf */
    _Atomic uint64_t sum_scaled;
};

struct rulebound {
    size_t ntriggers;
    char **trigger_names;
    char **trigger_kinds;
    _Atomic uint64_t *emitted;    /* [ntriggers] */
    _Atomic uint64_t *suppressed; /* [ntriggers * JD_SUP_COUNT] */
    size_t nsegments;
    char **segment_names;
    _Atomic uint64_t *transitions; /* [nsegments * 2]: enter, exit */
    _Atomic int64_t *members;      /* [nsegments] */
};

struct jd_metrics {
    _Atomic uint64_t counters[JD_C_COUNT];
    _Atomic int64_t gauges[JD_G_COUNT];
    struct hist hists[JD_H_COUNT];
    _Atomic uint64_t failed[JD_FAIL_COUNT];
    _Atomic uint64_t reloads_ok;
    _Atomic uint64_t reloads_error;

    _Atomic int64_t heartbeat_ns;
    _Atomic int64_t heartbeat_timeout_ns;
    _Atomic int ready_assigned;
    _Atomic int ready_redis;
    _Atomic int ready_backpressured;

    char *version;
    int64_t start_time_ms;

    pthread_mutex_t lock; /* guards rb (against frees), rule_version, lag */
    struct rulebound *rb; /* written under lock by the engine thread only */
    char rule_version[65];
    struct jd_lag *lag;
    size_t nlag;
    char *program; /* rendered program-wide families (jd_metrics_set_program) */

    /* processing.engines > 1: the engines' own (jd_metrics_child), shown as
     * one by render, alive and ready; the list only grows, under lock */
    struct jd_metrics **children;
    size_t nchildren;
};

static size_t children_of(struct jd_metrics *m, struct jd_metrics ***out);

struct jd_metrics *jd_metrics_new(const char *version)
{
    struct jd_metrics *m = jd_xcalloc(1, sizeof(*m));
    for (int i = 0; i < JD_C_COUNT; i++)
        atomic_init(&m->counters[i], 0);
    for (int i = 0; i < JD_G_COUNT; i++)
        atomic_init(&m->gauges[i], 0);
    for (int h = 0; h < JD_H_COUNT; h++) {
        for (int b = 0; b <= HIST_MAX_BOUNDS; b++)
            atomic_init(&m->hists[h].buckets[b], 0);
        atomic_init(&m->hists[h].sum_scaled, 0);
    }
    for (int i = 0; i < JD_FAIL_COUNT; i++)
        atomic_init(&m->failed[i], 0);
    atomic_init(&m->reloads_ok, 0);
    atomic_init(&m->reloads_error, 0);
    /* A process that has just started counts as alive until its first
     * heartbeat is overdue. */
    atomic_init(&m->heartbeat_ns, jd_monotonic_ns());
    atomic_init(&m->heartbeat_timeout_ns, DEFAULT_HEARTBEAT_TIMEOUT_NS);
    atomic_init(&m->ready_assigned, 0);
    atomic_init(&m->ready_redis, 0);
    atomic_init(&m->ready_backpressured, 0);
    m->version = jd_strdup(version ? version : "");
    m->start_time_ms = jd_now_ms();
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

static void free_strings(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void rulebound_free(struct rulebound *rb)
{
    if (!rb)
        return;
    free_strings(rb->trigger_names, rb->ntriggers);
    free_strings(rb->trigger_kinds, rb->ntriggers);
    free_strings(rb->segment_names, rb->nsegments);
    free(rb->emitted);
    free(rb->suppressed);
    free(rb->transitions);
    free(rb->members);
    free(rb);
}

void jd_metrics_destroy(struct jd_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nchildren; i++)
        jd_metrics_destroy(m->children[i]);
    free(m->children);
    rulebound_free(m->rb);
    jd_lag_free(m->lag, m->nlag);
    free(m->program);
    pthread_mutex_destroy(&m->lock);
    free(m->version);
    free(m);
}

/* ---- hot path ---------------------------------------------------------- */

void jd_metrics_add(struct jd_metrics *m, enum jd_counter c, uint64_t n)
{
    if ((unsigned)c < JD_C_COUNT)
        atomic_fetch_add_explicit(&m->counters[c], n, memory_order_relaxed);
}

void jd_metrics_gauge(struct jd_metrics *m, enum jd_gauge g, int64_t v)
{
    if ((unsigned)g < JD_G_COUNT)
        atomic_store_explicit(&m->gauges[g], v, memory_order_relaxed);
}

void jd_metrics_gauge_add(struct jd_metrics *m, enum jd_gauge g, int64_t delta)
{
    if ((unsigned)g < JD_G_COUNT)
        atomic_fetch_add_explicit(&m->gauges[g], delta, memory_order_relaxed);
}

void jd_metrics_observe(struct jd_metrics *m, enum jd_histogram h, double v)
{
    jd_metrics_observe_n(m, h, v, 1);
}

void jd_metrics_observe_n(struct jd_metrics *m, enum jd_histogram h, double v, uint64_t n)
{
    if ((unsigned)h >= JD_H_COUNT || n == 0)
        return;
    const struct hist_def *d = &hist_defs[h];
    if (!(v > 0)) /* negative or NaN: clock skew; count it as zero */
        v = 0;
    size_t lo = 0, hi = d->nbounds; /* first bound >= v, or nbounds (+Inf) */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (d->bounds[mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    struct hist *hs = &m->hists[h];
    atomic_fetch_add_explicit(&hs->buckets[lo], n, memory_order_relaxed);
    double scaled = v * d->scale * (double)n;
    uint64_t add = scaled >= 1.8e19 ? UINT64_C(18000000000000000000) : (uint64_t)(scaled + 0.5);
    atomic_fetch_add_explicit(&hs->sum_scaled, add, memory_order_relaxed);
}

void jd_metrics_failed(struct jd_metrics *m, enum jd_fail_reason r)
{
    if ((unsigned)r < JD_FAIL_COUNT)
        atomic_fetch_add_explicit(&m->failed[r], 1, memory_order_relaxed);
}

enum jd_suppress_reason jd_suppress_reason_parse(const char *reason)
{
    if (reason) {
        for (int i = 0; i < JD_SUP_OTHER; i++) {
            if (strcmp(reason, suppress_names[i]) == 0)
                return (enum jd_suppress_reason)i;
        }
    }
    return JD_SUP_OTHER;
}

const char *jd_suppress_reason_name(enum jd_suppress_reason r)
{
    return (unsigned)r < JD_SUP_COUNT ? suppress_names[r] : suppress_names[JD_SUP_OTHER];
}

void jd_metrics_trigger_emitted(struct jd_metrics *m, size_t trigger)
{
    struct rulebound *rb = m->rb;
    if (rb && trigger < rb->ntriggers)
        atomic_fetch_add_explicit(&rb->emitted[trigger], 1, memory_order_relaxed);
}

void jd_metrics_trigger_suppressed_r(struct jd_metrics *m, size_t trigger,
                                     enum jd_suppress_reason r)
{
    struct rulebound *rb = m->rb;
    if ((unsigned)r >= JD_SUP_COUNT)
        r = JD_SUP_OTHER;
    if (rb && trigger < rb->ntriggers)
        atomic_fetch_add_explicit(&rb->suppressed[trigger * JD_SUP_COUNT + r], 1,
                                  memory_order_relaxed);
}

void jd_metrics_trigger_suppressed(struct jd_metrics *m, size_t trigger, const char *reason)
{
    jd_metrics_trigger_suppressed_r(m, trigger, jd_suppress_reason_parse(reason));
}

void jd_metrics_segment_transition(struct jd_metrics *m, size_t segment, enum jd_direction d)
{
    struct rulebound *rb = m->rb;
    if (rb && segment < rb->nsegments && (d == JD_DIR_ENTER || d == JD_DIR_EXIT))
        atomic_fetch_add_explicit(&rb->transitions[segment * 2 + d], 1, memory_order_relaxed);
}

void jd_metrics_segment_members_add(struct jd_metrics *m, size_t segment, int64_t delta)
{
    struct rulebound *rb = m->rb;
    if (rb && segment < rb->nsegments)
        atomic_fetch_add_explicit(&rb->members[segment], delta, memory_order_relaxed);
}

void jd_metrics_segment_members_set(struct jd_metrics *m, size_t segment, int64_t value)
{
    struct rulebound *rb = m->rb;
    if (rb && segment < rb->nsegments)
        atomic_store_explicit(&rb->members[segment], value, memory_order_relaxed);
}

void jd_metrics_rule_reload(struct jd_metrics *m, int ok)
{
    atomic_fetch_add_explicit(ok ? &m->reloads_ok : &m->reloads_error, 1, memory_order_relaxed);
}

void jd_metrics_heartbeat(struct jd_metrics *m)
{
    atomic_store_explicit(&m->heartbeat_ns, jd_monotonic_ns(), memory_order_relaxed);
}

void jd_metrics_set_heartbeat_timeout_ms(struct jd_metrics *m, int64_t ms)
{
    atomic_store_explicit(&m->heartbeat_timeout_ns, ms * 1000000LL, memory_order_relaxed);
    struct jd_metrics **cs;
    size_t n = children_of(m, &cs);
    for (size_t i = 0; i < n; i++)
        jd_metrics_set_heartbeat_timeout_ms(cs[i], ms);
    free(cs);
}

void jd_metrics_set_ready_inputs(struct jd_metrics *m, int partitions_assigned, int redis_ok,
                                 int backpressured)
{
    atomic_store_explicit(&m->ready_assigned, partitions_assigned != 0, memory_order_relaxed);
    atomic_store_explicit(&m->ready_redis, redis_ok != 0, memory_order_relaxed);
    atomic_store_explicit(&m->ready_backpressured, backpressured != 0, memory_order_relaxed);
    atomic_store_explicit(&m->gauges[JD_G_BACKPRESSURED], backpressured != 0, memory_order_relaxed);
}

/* ---- health ------------------------------------------------------------ */

/* The children, copied under the lock (they live as long as m). */
static size_t children_of(struct jd_metrics *m, struct jd_metrics ***out)
{
    pthread_mutex_lock(&m->lock);
    size_t n = m->nchildren;
    *out = NULL;
    if (n) {
        *out = jd_xmalloc(n * sizeof **out);
        memcpy(*out, m->children, n * sizeof **out);
    }
    pthread_mutex_unlock(&m->lock);
    return n;
}

/* Every engine's loop must be alive; the age is the oldest heartbeat's. */
static int alive_all(struct jd_metrics **cs, size_t n, double *age_seconds)
{
    int alive = 1;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double age;
        if (!jd_metrics_alive(cs[i], &age))
            alive = 0;
        if (age > worst)
            worst = age;
    }
    if (age_seconds)
        *age_seconds = worst;
    return alive;
}

/* Ready when some engine owns partitions (with more engines than
 * partitions, some own none) and every engine has Redis and is not
 * back-pressured. */
static int ready_all(struct jd_metrics **cs, size_t n, struct jd_buf *why)
{
    int assigned = 0, ok = 1;
    for (size_t i = 0; i < n; i++) {
        int redis = atomic_load_explicit(&cs[i]->ready_redis, memory_order_relaxed);
        int bp = atomic_load_explicit(&cs[i]->ready_backpressured, memory_order_relaxed);
        assigned |= atomic_load_explicit(&cs[i]->ready_assigned, memory_order_relaxed);
        if (!redis || bp)
            ok = 0;
        if (why && !redis)
            jd_buf_printf(why, "redis_ok: no (engine %zu)\n", i);
        if (why && bp)
            jd_buf_printf(why, "backpressured: yes (engine %zu)\n", i);
    }
    if (why && !assigned)
        jd_buf_puts(why, "partitions_assigned: no (no engine owns a partition)\n");
    return assigned && ok;
}

int jd_metrics_alive(struct jd_metrics *m, double *age_seconds)
{
    struct jd_metrics **cs;
    size_t n = children_of(m, &cs);
    if (n) {
        int alive = alive_all(cs, n, age_seconds);
        free(cs);
        return alive;
    }
    int64_t age = jd_monotonic_ns() - atomic_load_explicit(&m->heartbeat_ns, memory_order_relaxed);
    if (age_seconds)
        *age_seconds = (double)age / 1e9;
    return age <= atomic_load_explicit(&m->heartbeat_timeout_ns, memory_order_relaxed);
}

int jd_metrics_ready(struct jd_metrics *m, struct jd_buf *why)
{
    struct jd_metrics **cs;
    size_t n = children_of(m, &cs);
    if (n) {
        int ready = ready_all(cs, n, why);
        free(cs);
        return ready;
    }
    int assigned = atomic_load_explicit(&m->ready_assigned, memory_order_relaxed);
    int redis = atomic_load_explicit(&m->ready_redis, memory_order_relaxed);
    int bp = atomic_load_explicit(&m->ready_backpressured, memory_order_relaxed);
    if (why) {
        if (!assigned)
            jd_buf_puts(why, "partitions_assigned: no\n");
        if (!redis)
            jd_buf_puts(why, "redis_ok: no\n");
        if (bp)
            jd_buf_puts(why, "backpressured: yes\n");
    }
    return assigned && redis && !bp;
}

/* ---- rule binding ------------------------------------------------------ */

static int find_name(char **names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], name) == 0)
            return (int)i;
    }
    return -1;
}

void jd_metrics_bind_names(struct jd_metrics *m, const char *rule_version, size_t ntriggers,
                           const char *const *trigger_names, const char *const *trigger_kinds,
                           size_t nsegments, const char *const *segment_names)
{
    struct rulebound *nb = jd_xcalloc(1, sizeof(*nb));
    struct rulebound *old = m->rb;

    nb->ntriggers = ntriggers;
    nb->trigger_names = jd_xcalloc(ntriggers, sizeof(char *));
    nb->trigger_kinds = jd_xcalloc(ntriggers, sizeof(char *));
    nb->emitted = jd_xcalloc(ntriggers, sizeof(*nb->emitted));
    nb->suppressed = jd_xcalloc(ntriggers * JD_SUP_COUNT, sizeof(*nb->suppressed));
    for (size_t i = 0; i < ntriggers; i++) {
        nb->trigger_names[i] = jd_strdup(trigger_names[i]);
        nb->trigger_kinds[i] = jd_strdup(trigger_kinds[i]);
        uint64_t emitted = 0;
        uint64_t sup[JD_SUP_COUNT] = {0};
        /* The update functions run on this thread, so old's counts are
         * final: nothing increments them between this read and the swap. */
        int j = old ? find_name(old->trigger_names, old->ntriggers, trigger_names[i]) : -1;
        if (j >= 0) {
            /* A trigger whose kind changed is a new series: carrying its
             * count would put REWARD deliveries under REENGAGEMENT. */
            if (strcmp(old->trigger_kinds[j], trigger_kinds[i]) == 0)
                emitted = atomic_load_explicit(&old->emitted[j], memory_order_relaxed);
            for (int r = 0; r < JD_SUP_COUNT; r++)
                sup[r] = atomic_load_explicit(&old->suppressed[(size_t)j * JD_SUP_COUNT + r],
                                              memory_order_relaxed);
        }
        atomic_init(&nb->emitted[i], emitted);
        for (int r = 0; r < JD_SUP_COUNT; r++)
            atomic_init(&nb->suppressed[i * JD_SUP_COUNT + r], sup[r]);
    }

    nb->nsegments = nsegments;
    nb->segment_names = jd_xcalloc(nsegments, sizeof(char *));
    nb->transitions = jd_xcalloc(nsegments * 2, sizeof(*nb->transitions));
    nb->members = jd_xcalloc(nsegments, sizeof(*nb->members));
    for (size_t i = 0; i < nsegments; i++) {
        nb->segment_names[i] = jd_strdup(segment_names[i]);
        int j = old ? find_name(old->segment_names, old->nsegments, segment_names[i]) : -1;
        uint64_t enter = 0, exit_ = 0;
        int64_t members = 0;
        if (j >= 0) {
            enter = atomic_load_explicit(&old->transitions[j * 2], memory_order_relaxed);
            exit_ = atomic_load_explicit(&old->transitions[j * 2 + 1], memory_order_relaxed);
            members = atomic_load_explicit(&old->members[j], memory_order_relaxed);
        }
        atomic_init(&nb->transitions[i * 2], enter);
        atomic_init(&nb->transitions[i * 2 + 1], exit_);
        atomic_init(&nb->members[i], members);
    }

    pthread_mutex_lock(&m->lock);
    m->rb = nb;
    snprintf(m->rule_version, sizeof(m->rule_version), "%s", rule_version ? rule_version : "");
    pthread_mutex_unlock(&m->lock);
    rulebound_free(old);
}

/* ---- consumer lag ------------------------------------------------------ */

void jd_metrics_set_lag(struct jd_metrics *m, struct jd_lag *nl, size_t n)
{
    pthread_mutex_lock(&m->lock);
    struct jd_lag *old = m->lag;
    size_t nold = m->nlag;
    m->lag = nl;
    m->nlag = n;
    pthread_mutex_unlock(&m->lock);
    jd_lag_free(old, nold);
}

int64_t jd_metrics_total_lag(struct jd_metrics *m)
{
    int64_t total = 0;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->nlag; i++)
        total += m->lag[i].lag;
    pthread_mutex_unlock(&m->lock);
    return total;
}

/* ---- rendering --------------------------------------------------------- */

/* Label values escape backslash, double quote and newline (format 0.0.4). */
static void put_label_value(struct jd_buf *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            jd_buf_puts(out, "\\\\");
        else if (*s == '"')
            jd_buf_puts(out, "\\\"");
        else if (*s == '\n')
            jd_buf_puts(out, "\\n");
        else
            jd_buf_append(out, s, 1);
    }
}

static void put_header(struct jd_buf *out, const char *name, const char *type, const char *help)
{
    jd_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_double(struct jd_buf *out, double v)
{
    if (isinf(v))
        jd_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    else
        jd_buf_printf(out, "%.17g", v);
}

static void render_hist(struct jd_buf *out, const struct hist_def *d, struct hist *h)
{
    put_header(out, d->name, "histogram", d->help);
    uint64_t cum = 0;
    for (size_t b = 0; b <= d->nbounds; b++) {
        cum += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
        jd_buf_printf(out, "%s_bucket{le=\"", d->name);
        if (b == d->nbounds)
            jd_buf_puts(out, "+Inf");
        else
            jd_buf_printf(out, "%g", d->bounds[b]);
        jd_buf_printf(out, "\"} %" PRIu64 "\n", cum);
    }
    double sum = (double)atomic_load_explicit(&h->sum_scaled, memory_order_relaxed) / d->scale;
    jd_buf_printf(out, "%s_sum ", d->name);
    put_double(out, sum);
    /* _count equals the +Inf bucket by construction, even while the hot path
     * keeps observing during the render. */
    jd_buf_printf(out, "\n%s_count %" PRIu64 "\n", d->name, cum);
}

static uint64_t load_u(_Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

static void render_rulebound(struct jd_metrics *m, struct jd_buf *out)
{
    struct rulebound *rb = m->rb;
    size_t nt = rb ? rb->ntriggers : 0, ns = rb ? rb->nsegments : 0;

    put_header(out, "journeyd_triggers_emitted_total", "counter",
               "Triggers delivered to their Kafka topic, by trigger rule and kind.");
    for (size_t i = 0; i < nt; i++) {
        jd_buf_puts(out, "journeyd_triggers_emitted_total{trigger=\"");
        put_label_value(out, rb->trigger_names[i]);
        jd_buf_puts(out, "\",kind=\"");
        put_label_value(out, rb->trigger_kinds[i]);
        jd_buf_printf(out, "\"} %" PRIu64 "\n", load_u(&rb->emitted[i]));
    }

    put_header(out, "journeyd_triggers_suppressed_total", "counter",
               "Triggers that fired but were not sent, by trigger rule and policy reason.");
    for (size_t i = 0; i < nt; i++) {
        for (int r = 0; r < JD_SUP_COUNT; r++) {
            jd_buf_puts(out, "journeyd_triggers_suppressed_total{trigger=\"");
            put_label_value(out, rb->trigger_names[i]);
            jd_buf_printf(out, "\",reason=\"%s\"} %" PRIu64 "\n", suppress_names[r],
                          load_u(&rb->suppressed[i * JD_SUP_COUNT + r]));
        }
    }

    put_header(out, "journeyd_segment_transitions_total", "counter",
               "Customers entering or leaving a segment.");
    for (size_t i = 0; i < ns; i++) {
        for (int d = 0; d < 2; d++) {
            jd_buf_puts(out, "journeyd_segment_transitions_total{segment=\"");
            put_label_value(out, rb->segment_names[i]);
            jd_buf_printf(out, "\",direction=\"%s\"} %" PRIu64 "\n", d == 0 ? "enter" : "exit",
                          load_u(&rb->transitions[i * 2 + d]));
        }
    }

    put_header(out, "journeyd_segment_members", "gauge",
               "Customers currently in each segment (kept incrementally).");
    for (size_t i = 0; i < ns; i++) {
        jd_buf_puts(out, "journeyd_segment_members{segment=\"");
        put_label_value(out, rb->segment_names[i]);
        jd_buf_printf(out, "\"} %" PRId64 "\n",
                      atomic_load_explicit(&rb->members[i], memory_order_relaxed));
    }
}

/* How the engines' families combine (default: sum). journeyd_ready and
 * journeyd_engines are the process's own, rendered after the merge. */
static const struct jd_merge_rule merge_rules[] = {
    {"journeyd_ready", JD_MERGE_DROP},
    {"journeyd_engines", JD_MERGE_DROP},
    {"journeyd_alive", JD_MERGE_MIN},
    /* one SIGHUP is one reload, which every engine makes */
    {"journeyd_rule_reloads_total", JD_MERGE_MAX},
    {"journeyd_heartbeat_age_seconds", JD_MERGE_MAX},
    {"journeyd_backpressured", JD_MERGE_MAX},
    {"journeyd_start_time_seconds", JD_MERGE_MAX},
    {"journeyd_build_info", JD_MERGE_MAX},
    /* (a partition moving between two engines may show in both for a moment) */
    {"journeyd_consumer_lag", JD_MERGE_MAX},
    /* program-wide: every engine reads the same values from Redis */
    {"journeyd_segment_members", JD_MERGE_MAX},
    {"journeyd_stage_customers", JD_MERGE_MAX},
    {"journeyd_stage_transitions_total", JD_MERGE_MAX},
    {"journeyd_nps_responses", JD_MERGE_MAX},
    {"journeyd_trigger_decisions_total", JD_MERGE_MAX},
    {"journeyd_trigger_conversions_total", JD_MERGE_MAX},
    {"journeyd_trigger_decisions_open", JD_MERGE_MAX},
};

static void render_engines(struct jd_buf *out, size_t n)
{
    put_header(out, "journeyd_engines", "gauge",
               "Engines in this process (processing.engines), each a member of the group.");
    jd_buf_printf(out, "journeyd_engines %zu\n", n);
}

static void render_children(struct jd_metrics **cs, size_t n, struct jd_buf *out)
{
    struct jd_buf *texts = jd_xcalloc(n, sizeof *texts);
    const char **ptr = jd_xcalloc(n, sizeof *ptr);
    size_t *len = jd_xcalloc(n, sizeof *len);
    for (size_t i = 0; i < n; i++) {
        jd_buf_init(&texts[i]);
        jd_metrics_render(cs[i], &texts[i]);
        ptr[i] = texts[i].data;
        len[i] = texts[i].len;
    }
    jd_metrics_merge_text(ptr, len, n, merge_rules, NELEM(merge_rules), out);
    put_header(out, "journeyd_ready", "gauge",
               "1 when some engine owns partitions, and every engine reaches Redis and is not "
               "back-pressured (/readyz).");
    jd_buf_printf(out, "journeyd_ready %d\n", ready_all(cs, n, NULL));
    render_engines(out, n);
    for (size_t i = 0; i < n; i++)
        jd_buf_free(&texts[i]);
    free(texts);
    free(ptr);
    free(len);
}

struct jd_metrics *jd_metrics_child(struct jd_metrics *parent)
{
    struct jd_metrics *c = jd_metrics_new(parent->version);
    c->start_time_ms = parent->start_time_ms;
    atomic_store_explicit(&c->heartbeat_timeout_ns,
                          atomic_load_explicit(&parent->heartbeat_timeout_ns, memory_order_relaxed),
                          memory_order_relaxed);
    pthread_mutex_lock(&parent->lock);
    parent->children =
        jd_xrealloc(parent->children, (parent->nchildren + 1) * sizeof *parent->children);
    parent->children[parent->nchildren++] = c;
    pthread_mutex_unlock(&parent->lock);
    return c;
}

void jd_metrics_render(struct jd_metrics *m, struct jd_buf *out)
{
    struct jd_metrics **cs;
    size_t n = children_of(m, &cs);
    if (n) {
        render_children(cs, n, out);
        free(cs);
        return;
    }
    for (int c = 0; c < JD_C_COUNT; c++) {
        put_header(out, counter_defs[c].name, "counter", counter_defs[c].help);
        jd_buf_printf(out, "%s %" PRIu64 "\n", counter_defs[c].name, load_u(&m->counters[c]));
    }

    put_header(out, "journeyd_events_failed_total", "counter",
               "Events that could not be processed (and went to the DLQ), by reason.");
    for (int r = 0; r < JD_FAIL_COUNT; r++)
        jd_buf_printf(out, "journeyd_events_failed_total{reason=\"%s\"} %" PRIu64 "\n",
                      fail_names[r], load_u(&m->failed[r]));

    put_header(out, "journeyd_rule_reloads_total", "counter", "Rule reloads (SIGHUP), by result.");
    jd_buf_printf(out, "journeyd_rule_reloads_total{result=\"ok\"} %" PRIu64 "\n",
                  load_u(&m->reloads_ok));
    jd_buf_printf(out, "journeyd_rule_reloads_total{result=\"error\"} %" PRIu64 "\n",
                  load_u(&m->reloads_error));

    for (int g = 0; g < JD_G_COUNT; g++) {
        put_header(out, gauge_defs[g].name, "gauge", gauge_defs[g].help);
        jd_buf_printf(out, "%s %" PRId64 "\n", gauge_defs[g].name,
                      atomic_load_explicit(&m->gauges[g], memory_order_relaxed));
    }

    for (int h = 0; h < JD_H_COUNT; h++)
        render_hist(out, &hist_defs[h], &m->hists[h]);

    double age;
    int alive = jd_metrics_alive(m, &age);
    put_header(out, "journeyd_ready", "gauge",
               "1 when partitions are assigned, Redis is reachable and consumption is not "
               "back-pressured (/readyz).");
    jd_buf_printf(out, "journeyd_ready %d\n", jd_metrics_ready(m, NULL));
    put_header(out, "journeyd_alive", "gauge",
               "1 when the processing loop's heartbeat is recent (/healthz).");
    jd_buf_printf(out, "journeyd_alive %d\n", alive);
    put_header(out, "journeyd_heartbeat_age_seconds", "gauge",
               "Seconds since the processing loop's last heartbeat.");
    jd_buf_puts(out, "journeyd_heartbeat_age_seconds ");
    put_double(out, age);
    jd_buf_puts(out, "\n");
    put_header(out, "journeyd_start_time_seconds", "gauge",
               "Start time of the process since the Unix epoch, in seconds.");
    jd_buf_printf(out, "journeyd_start_time_seconds %.3f\n", (double)m->start_time_ms / 1000.0);

    pthread_mutex_lock(&m->lock);
    put_header(out, "journeyd_build_info", "gauge",
               "Build and rule set versions; the value is always 1.");
    jd_buf_puts(out, "journeyd_build_info{version=\"");
    put_label_value(out, m->version);
    jd_buf_puts(out, "\",rule_version=\"");
    put_label_value(out, m->rule_version);
    jd_buf_puts(out, "\"} 1\n");

    put_header(out, "journeyd_consumer_lag", "gauge",
               "Messages between the high watermark and the consumer position, per assigned "
               "input partition (librdkafka statistics).");
    for (size_t i = 0; i < m->nlag; i++) {
        jd_buf_puts(out, "journeyd_consumer_lag{topic=\"");
        put_label_value(out, m->lag[i].topic);
        jd_buf_printf(out, "\",partition=\"%" PRId32 "\"} %" PRId64 "\n", m->lag[i].partition,
                      m->lag[i].lag);
    }

    render_rulebound(m, out);
    if (m->program)
        jd_buf_puts(out, m->program);
    pthread_mutex_unlock(&m->lock);
    render_engines(out, 1);
}

void jd_metrics_set_program(struct jd_metrics *m, const struct jd_series *s, size_t n)
{
    struct jd_buf b;
    jd_buf_init(&b);
    for (int f = 0; f < JD_PF_COUNT; f++) {
        put_header(&b, program_defs[f].name, program_defs[f].type, program_defs[f].help);
        for (size_t i = 0; i < n; i++) {
            if (s[i].family != (enum jd_program_family)f)
                continue;
            jd_buf_puts(&b, program_defs[f].name);
            for (int l = 0; l < 2 && program_defs[f].labels[l]; l++) {
                jd_buf_printf(&b, "%s%s=\"", l ? "," : "{", program_defs[f].labels[l]);
                put_label_value(&b, s[i].label[l] ? s[i].label[l] : "");
                jd_buf_puts(&b, "\"");
            }
            jd_buf_printf(&b, "} %" PRId64 "\n", s[i].value);
        }
    }
    char *text = jd_xmalloc(b.len + 1);
    memcpy(text, b.len ? b.data : "", b.len);
    text[b.len] = '\0';
    jd_buf_free(&b);
    pthread_mutex_lock(&m->lock);
    char *old = m->program;
    m->program = text;
    pthread_mutex_unlock(&m->lock);
    free(old);
}
