/*
 * engine_timers — time-driven re-evaluation (docs/time.md). A customer whose
 * rules can change with the mere passing of time has one due time
 * (c->next_timer: the earliest instant a time-dependent rule can change, or
 * a deferred outbox entry may go out), kept in its partition's timer set in
 * Redis by the store's flush. Every processing.timer_tick this module asks
 * Redis, in one round trip for all owned partitions, for the customers whose
 * due time the partition's clock has reached — the cost grows with the
 * customers due, never with those scheduled — loads them, re-evaluates them
 * at their due time and emits what fires like any trigger (source_event_id
 * null, fired_at the due time, trigger id from the due time), through the
 * same policy, outbox and flush. A customer's timers also fire just before
 * any event of its own that comes after them, so that its state sees time
 * and events in order.
 *
 * It also owns the two other things that are not tied to an input offset:
 * the outbox index of a newly assigned partition (loaded so that the
 * triggers a previous owner left unacknowledged, and that no replay brings
 * back, are produced), and the
 * event clock of an idle partition (its watermark follows the wall clock
 * once it has been caught up and silent for processing.idle_advance).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "journeyd/insights.h"
#include "journeyd/log.h"
#include "journeyd/outcomes.h"
#include "journeyd/policy.h"

#define MOD "timers"
#define DUE_PER_PARTITION 1000 /* per tick: bounds the work between two batches */
#define RECOVER_PAGE 1000
#define MAX_FIRES 10000 /* per customer and pass: a guard, never reached by sane rules */
#define COUNT_EVERY_NS 5000000000LL /* journeyd_timers_pending refresh */

struct jd_timers {
    int64_t last_tick_ns;
    int64_t last_count_ns;
    int again; /* a partition had more due than one page: tick again at once */
    struct jd_due_list due;
    struct jd_due_list strays;
    int32_t *sources;
    int64_t *upto;
    int64_t *counts;
    size_t cap;
    struct jd_buf after;
};

struct jd_timers *jd_engine_timers_new(void)
{
    struct jd_timers *t = jd_xcalloc(1, sizeof *t);
    jd_due_list_init(&t->due);
    jd_due_list_init(&t->strays);
    jd_buf_init(&t->after);
    return t;
}

void jd_engine_timers_destroy(struct jd_timers *t)
{
    if (!t)
        return;
    jd_due_list_free(&t->due);
    jd_due_list_free(&t->strays);
    jd_buf_free(&t->after);
    free(t->sources);
    free(t->upto);
    free(t->counts);
    free(t);
}

int64_t jd_engine_clock(const struct jd_engine *e, const struct jd_part *p)
{
    if (e->cfg->clock == JD_CLOCK_WALL)
        return jd_now_ms();
    if (p->watermark <= 0)
        return -1;
    return p->watermark - e->cfg->allowed_lateness_ms;
}

int64_t jd_engine_send_clock(const struct jd_engine *e, const struct jd_part *p)
{
    if (e->cfg->clock == JD_CLOCK_WALL)
        return jd_now_ms();
    return p->watermark > 0 ? p->watermark : -1;
}

/* Earliest of: the rules' next change after `now`, and for each deferred
 * entry not yet released the timer-clock instant at which the send clock
 * reaches its not_before (allowed_lateness earlier on the timer clock: a
 * decided trigger waits for no late event). 0: nothing. */
static int64_t next_due(const struct jd_engine *e, const struct jd_part *p,
                        const struct jd_customer *c, int64_t now)
{
    int64_t d = jd_rules_next_change(e->rs, c, now);
    int64_t goal = jd_outcomes_next_due(c); /* an open goal's window closes */
    if (goal < d)
        d = goal;
    int64_t send = jd_engine_send_clock(e, p);
    int64_t lag = e->cfg->clock == JD_CLOCK_EVENT ? e->cfg->allowed_lateness_ms : 0;
    for (size_t i = 0; i < c->npending; i++) {
        const struct jd_pending_trigger *pt = &c->pending[i];
        if (!pt->produced && pt->not_before > send && pt->not_before - lag < d)
            d = pt->not_before - lag;
    }
    return d == INT64_MAX || d <= 0 ? 0 : d;
}

int jd_engine_timers_fire(struct jd_engine *e, struct jd_part *p, struct jd_customer *c,
                          int64_t offset)
{
    if (c->next_timer <= 0)
        return 0;
    int64_t clock = jd_engine_clock(e, p);
    if (c->next_timer > clock)
        return 0;
    /* onto the dirty list before the rules set c->dirty themselves */
    jd_engine_push_dirty(e, c);
    int n = 0;
    while (c->next_timer > 0 && c->next_timer <= clock) {
        int64_t due = c->next_timer;
        if (++n > MAX_FIRES) {
            jd_warn(MOD, "customer %s: more than %d timers due at once; the rest wait", c->id,
                    MAX_FIRES);
            break;
        }
        struct jd_eval_result res;
        size_t order[JD_MAX_FIRED];
        /* `now` is the due time: the same transitions, fired_at and ids
         * whenever (and however late) the timer is processed; insights
         * closes the goals whose window ended and counts what changed */
        jd_insights_begin_timer(e->insights, c, offset, due);
        jd_rules_on_time(e->rs, c, due, &res);
        jd_engine_record_transitions(e, &res);
        jd_policy_order(e->rs, &res, order);
        for (size_t i = 0; i < res.nfired; i++)
            jd_engine_emit(e, c, NULL, &res.fired[order[i]], due, 0, offset >= 0);
        jd_insights_end(e->insights, c);
        if (e->metrics && e->cfg->clock == JD_CLOCK_WALL) {
            int64_t late = jd_now_ms() - due;
            jd_metrics_observe(e->metrics, JD_H_TIMER_LATENESS, late > 0 ? late / 1000.0 : 0);
        }
        c->next_timer = next_due(e, p, c, due);
    }
    return n;
}

void jd_engine_timers_schedule(struct jd_engine *e, struct jd_part *p, struct jd_customer *c,
                               int64_t now)
{
    int64_t d = next_due(e, p, c, now);
    if (d != c->next_timer) {
        c->next_timer = d;
        jd_engine_push_dirty(e, c);
    }
}

void jd_engine_timers_seen(struct jd_engine *e, struct jd_part *p, int64_t offset, int64_t now_ns)
{
    (void)e;
    p->consumed = offset + 1;
    p->idle_since_ns = now_ns;
}

void jd_engine_timers_assigned(struct jd_engine *e, struct jd_part *p)
{
    (void)e;
    p->consumed = -1;
    p->idle_since_ns = jd_monotonic_ns();
    p->recover = 1;
}

/* ------------------------------------------------------------------ */

/* The customer `id` of partition `source`, from the cache or queued for
 * loading (e->load). */
static struct jd_customer *get_or_queue(struct jd_engine *e, int32_t source, const char *id,
                                        size_t len)
{
    struct jd_customer *c = jd_cache_get(e->cache, id, len);
    if (c)
        return c;
    c = jd_customer_new(id, len, source, e->rs);
    jd_cache_put(e->cache, c);
    if (e->nload == e->capload) {
        e->capload = e->capload ? e->capload * 2 : 1024;
        e->load = jd_xrealloc(e->load, e->capload * sizeof *e->load);
    }
    e->load[e->nload++] = c;
    return c;
}

/* Loads every customer of p's outbox index that is not cached: their
 * outboxes are produced by the next persist (jd_engine_load pushes them
 * dirty). A listed customer is marked indexed, so that it is removed once
 * its outbox empties; one whose outbox is empty already (a crash between
 * its HDEL and the ZREM that follows it) is removed at once: no write is
 * on its way (the caller waited), so no addition can overtake it. Returns
 * -1 when Redis failed (retried at the next tick). */
static int recover_outboxes(struct jd_engine *e, struct jd_part *p)
{
    struct jd_timers *t = e->timers;
    char errstr[512];
    size_t total = 0, emptied = 0;
    jd_buf_reset(&t->after);
    for (;;) {
        jd_due_list_reset(&t->due);
        if (jd_store_outbox_customers(e->store, p->source, total ? t->after.data : NULL,
                                      t->after.len, RECOVER_PAGE, &t->due, errstr,
                                      sizeof errstr) != 0) {
            jd_engine_redis_failed(e, "outbox index", errstr);
            return -1;
        }
        e->nload = 0;
        for (size_t i = 0; i < t->due.n; i++)
            get_or_queue(e, p->source, jd_due_id(&t->due, i), t->due.v[i].id_len)->indexed = 1;
        if (jd_engine_load(e, e->stop) != 0)
            return -1;
        jd_due_list_reset(&t->strays);
        for (size_t i = 0; i < t->due.n; i++) {
            struct jd_customer *c =
                jd_cache_get(e->cache, jd_due_id(&t->due, i), t->due.v[i].id_len);
            if (c && c->npending == 0 && c->partition == p->source) {
                c->indexed = 0;
                jd_due_list_add(&t->strays, p->source, -1, c->id, c->id_len);
            }
        }
        if (t->strays.n && jd_store_timers_remove(e->store, &t->strays, errstr, sizeof errstr) != 0)
            jd_warn(MOD, "removing %zu outbox index entries: %s", t->strays.n, errstr);
        emptied += t->strays.n;
        jd_due_list_reset(&t->strays);
        total += t->due.n;
        if (t->due.n < RECOVER_PAGE)
            break;
        size_t last = t->due.n - 1;
        jd_buf_reset(&t->after);
        jd_buf_append(&t->after, jd_due_id(&t->due, last), t->due.v[last].id_len);
    }
    if (total > emptied)
        jd_info(MOD,
                "%s/%" PRId32 ": %zu customer(s) with triggers left unacknowledged; producing "
                "them again",
                p->topic, p->partition, total - emptied);
    if (emptied)
        jd_info(MOD, "%s/%" PRId32 ": %zu outbox index entries with an empty outbox removed",
                p->topic, p->partition, emptied);
    p->recover = 0;
    return 0;
}

/* Caught up: everything the broker holds for p has been processed. */
static int caught_up(struct jd_engine *e, struct jd_part *p)
{
    int64_t lo, hi;
    if (rd_kafka_get_watermark_offsets(e->consumer, p->topic, p->partition, &lo, &hi) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        hi < 0)
        return 0; /* not fetched yet */
    if (p->consumed == -1) {
        /* nothing consumed since the assignment: where the group stands
         * (asked once: a broker round trip) */
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        p->consumed = -2; /* asked; unknown */
        if (rd_kafka_committed(e->consumer, l, 1000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            l->elems[0].err == RD_KAFKA_RESP_ERR_NO_ERROR && l->elems[0].offset >= 0)
            p->consumed = l->elems[0].offset;
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (p->consumed == -2)
        return lo >= 0 && lo == hi; /* no commit: caught up only when empty */
    return p->consumed >= hi;
}

int jd_engine_caught_up(struct jd_engine *e)
{
    int owned = 0;
    for (size_t ti = 0; ti < e->cfg->ninput_topics; ti++) {
        for (int32_t pi = 0; pi < e->nparts[ti]; pi++) {
            struct jd_part *p = &e->parts[ti][pi];
            if (!p->topic || !p->assigned)
                continue;
            /* (never a broker round trip: a partition with nothing
             * consumed since its assignment counts only when empty) */
            int64_t lo, hi;
            if (rd_kafka_get_watermark_offsets(e->consumer, p->topic, p->partition, &lo, &hi) !=
                    RD_KAFKA_RESP_ERR_NO_ERROR ||
                hi < 0 || (p->consumed >= 0 ? p->consumed < hi : lo != hi))
                return 0;
            owned = 1;
        }
    }
    return owned;
}

/* Event clock: a partition caught up and silent for idle_advance takes the
 * wall clock as its watermark (never backwards). */
static void idle_advance(struct jd_engine *e, struct jd_part *p, int64_t mono)
{
    if (e->cfg->clock != JD_CLOCK_EVENT || e->cfg->idle_advance_ms <= 0)
        return;
    if (!caught_up(e, p)) {
        p->idle_since_ns = mono;
        return;
    }
    if (mono - p->idle_since_ns < e->cfg->idle_advance_ms * 1000000)
        return;
    int64_t now = jd_now_ms();
    if (now > p->watermark) {
        if (p->watermark > 0 && now - p->watermark > 1000)
            jd_debug(MOD, "%s/%" PRId32 " idle: watermark %" PRId64 " -> wall clock %" PRId64,
                     p->topic, p->partition, p->watermark, now);
        p->watermark = now;
    }
}

static void reserve(struct jd_timers *t, size_t n)
{
    if (n <= t->cap)
        return;
    t->cap = n * 2;
    t->sources = jd_xrealloc(t->sources, t->cap * sizeof *t->sources);
    t->upto = jd_xrealloc(t->upto, t->cap * sizeof *t->upto);
    t->counts = jd_xrealloc(t->counts, t->cap * sizeof *t->counts);
}

/* Fires what the due list names; collects entries that belong to no
 * customer of their partition into t->strays. */
static void fire_due(struct jd_engine *e)
{
    struct jd_timers *t = e->timers;
    jd_due_list_reset(&t->strays);
    for (size_t i = 0; i < t->due.n; i++) {
        const struct jd_due *d = &t->due.v[i];
        const char *id = jd_due_id(&t->due, i);
        struct jd_customer *c = jd_cache_get(e->cache, id, d->id_len);
        struct jd_part *p = jd_engine_part_by_source(e, d->source);
        if (!c || !p || !p->assigned || c->writing)
            continue;

        if ((c->exists && c->partition != d->source) || (!c->exists && c->npending == 0)) {
            /* the customer lives in another partition now, or has no state
             * at all: no flush of its will ever correct this entry */
            jd_due_list_add(&t->strays, d->source, d->due, id, d->id_len);
            continue;
        }
        if (jd_engine_timers_fire(e, p, c, -1) == 0 && c->next_timer != d->due) {
            /* an entry earlier than the customer's due time (a later one
             * is not written, store_timers.c; or a crash between two
             * writes): nothing was due; the flush moves the entry to the
             * real due time (0 held: written as new) or removes it */
            c->stored_timer = c->next_timer ? 0 : d->due;
            jd_engine_push_dirty(e, c);
        }
        /* written by this tick: its triggers go out now, and its entry is
         * moved before the next tick would fetch it again */
        jd_engine_push_urgent(e, c);
    }
}

void jd_engine_timers_tick(struct jd_engine *e)
{
    struct jd_timers *t = e->timers;
    int64_t mono = jd_monotonic_ns();
    if (!t->again && mono - t->last_tick_ns < e->cfg->timer_tick_ms * 1000000)
        return;
    if (e->abandoned || e->assigned_count == 0)
        return;
    /* Not waiting for the write on its way (engine_wb.c) to look for due
     * timers (only a tick that fires waits, to write): fire_due leaves
     * its customers for the next tick (a customer whose first write is on
     * its way has no `exists` yet and its entry would look stray; a
     * correction of a stale entry would be overwritten by the write's
     * finish); the sets may lag behind that write: an entry it adds is
     * seen next tick, one it removes finds nothing due. */
    t->last_tick_ns = mono;
    t->again = 0;
    char errstr[512];

    /* 1. outboxes a previous owner left, and the partitions' clocks (as
     * stored, for newly assigned ones: engine_clock.c) */
    if (jd_engine_clock_restore(e, 0) != 0)
        return;
    size_t n = 0;
    for (size_t ti = 0; ti < e->cfg->ninput_topics; ti++)
        n += (size_t)e->nparts[ti];
    reserve(t, n);
    n = 0;
    for (size_t ti = 0; ti < e->cfg->ninput_topics; ti++) {
        for (int32_t pi = 0; pi < e->nparts[ti]; pi++) {
            struct jd_part *p = &e->parts[ti][pi];
            if (!p->topic || !p->assigned)
                continue;
            if (p->recover) {
                (void)jd_engine_wb_wait(e); /* it loads customers */
                if (recover_outboxes(e, p) != 0)
                    return;
            }
            idle_advance(e, p, mono);
            t->sources[n] = p->source;
            t->upto[n] = jd_engine_clock(e, p);
            n++;
        }
    }
    (void)jd_engine_clock_save_idle(e); /* (optional: a failure is only logged) */

    /* 2. who is due, in every owned partition: one round trip */
    int count = mono - t->last_count_ns >= COUNT_EVERY_NS && e->metrics;
    jd_due_list_reset(&t->due);
    if (jd_store_timers_due(e->store, t->sources, t->upto, n, DUE_PER_PARTITION,
                            count ? t->counts : NULL, &t->due, errstr, sizeof errstr) != 0) {
        jd_engine_redis_failed(e, "timers", errstr);
        return;
    }
    jd_engine_redis_succeeded(e);
    if (count) {
        t->last_count_ns = mono;
        int64_t pending = 0;
        for (size_t i = 0; i < n; i++)
            pending += t->counts[i] > 0 ? t->counts[i] : 0;
        jd_metrics_gauge(e->metrics, JD_G_TIMERS_PENDING, pending);
    }
    /* nothing due: the changed customers wait for their write-back
     * (processing.flush_interval, engine_flush.c) */
    if (t->due.n == 0)
        return;
    for (size_t i = 0, run = 0; i < t->due.n; i++) {
        run = i > 0 && t->due.v[i].source == t->due.v[i - 1].source ? run + 1 : 1;
        if (run >= DUE_PER_PARTITION)
            t->again = 1;
    }

    /* 3. load who is not cached (one round trip), fire, persist, produce;
     * insights needs the stats offsets of the partitions that fire */
    for (size_t i = 0; i < t->due.n; i++) {
        struct jd_part *p = jd_engine_part_by_source(e, t->due.v[i].source);
        if (p && p->assigned)
            jd_insights_want(e->insights, p->source, p->topic, p->partition, p->gen);
    }
    if (jd_insights_offsets_wanted(e->insights))
        jd_engine_stats_quiet(e);
    if (jd_insights_load_offsets(e->insights, errstr, sizeof errstr) != 0) {
        jd_engine_redis_failed(e, "stats offsets", errstr);
        return;
    }
    e->nload = 0;
    for (size_t i = 0; i < t->due.n; i++)
        get_or_queue(e, t->due.v[i].source, jd_due_id(&t->due, i), t->due.v[i].id_len);
    if (jd_engine_load(e, e->stop) != 0)
        return;
    int64_t t0 = jd_monotonic_ns();
    fire_due(e);
    if (t->strays.n && jd_store_timers_remove(e->store, &t->strays, errstr, sizeof errstr) != 0)
        jd_warn(MOD, "removing %zu stray timer entries: %s", t->strays.n, errstr);
    /* the customers it touched (and the batch's urgent ones), not every
     * changed customer: those wait for their write-back as usual */
    if (jd_engine_flush_urgent(e, e->stop) != 0)
        return; /* stopping: shutdown persists what is dirty */
    if (t->due.n)
        jd_debug(MOD, "%zu due customer(s) processed in %.3f ms", t->due.n,
                 (double)(jd_monotonic_ns() - t0) / 1e6);
}
