/*
 * engine_batch — one batch: load what it touches, apply every event in
 * order, persist, produce. Customers are loaded and written back in one
 * pipelined round trip each per batch; nothing here talks to Redis per event
 * (except in processing.naive mode, the benchmark's baseline).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine_int.h"
#include "journeyd/log.h"

#define MOD "engine"

/* Queues c for the next write-back (engine_flush.c decides when) without
 * marking its state changed: an acknowledgement only needs its outbox entry
 * removed. The list's membership flag is c->queued. */
void jd_engine_queue_write(struct jd_engine *e, struct jd_customer *c)
{
    if (c->queued)
        return;
    c->queued = 1;
    if (e->ndirty == e->capdirty) {
        e->capdirty = e->capdirty ? e->capdirty * 2 : 1024;
        e->dirty = jd_xrealloc(e->dirty, e->capdirty * sizeof *e->dirty);
    }
    e->dirty[e->ndirty++] = c;
}

/* c's state changed: written by the next write-back. */
void jd_engine_push_dirty(struct jd_engine *e, struct jd_customer *c)
{
    c->dirty = 1;
    jd_engine_queue_write(e, c);
}

static void set_backpressure(struct jd_engine *e, int on)
{
    if (e->backpressured == on)
        return;
    e->backpressured = on;
    if (e->metrics) {
        jd_metrics_gauge(e->metrics, JD_G_BACKPRESSURED, on);
        jd_metrics_set_ready_inputs(e->metrics, e->assigned_count > 0, e->redis_ok, on);
    }
}

/* Waits before the next Redis attempt, serving producer delivery reports
 * meanwhile; doubles the wait up to 5 s. Retrying is the loop doing its job,
 * so the liveness heartbeat goes on (/healthz stays up, /readyz is down). */
static void backoff(struct jd_engine *e)
{
    e->backoff_ms = e->backoff_ms ? e->backoff_ms * 2 : 50;
    if (e->backoff_ms > 5000)
        e->backoff_ms = 5000;
    int64_t until = jd_monotonic_ns() + e->backoff_ms * 1000000;
    while (jd_monotonic_ns() < until) {
        rd_kafka_poll(e->producer, 50);
        if (e->metrics)
            jd_metrics_heartbeat(e->metrics);
    }
}

/* Fencing (docs/guarantees.md): while this instance retried Redis without
 * polling the consumer, the group may have taken its partitions
 * (max.poll.interval.ms or the session ran out). Their new owner replays
 * from the committed offset, so nothing this instance holds in memory may
 * be written any more: it would overwrite the new owner's newer state.
 * librdkafka raises the flag itself; the next consumer poll delivers the
 * revocation (lost), which drops these customers from the cache. */
static int fenced(struct jd_engine *e)
{
    if (!e->consumer || !rd_kafka_assignment_lost(e->consumer))
        return 0;
    if (!e->fenced_logged) {
        jd_warn(MOD, "partition assignment lost (session or max.poll.interval.ms ran out "
                     "while retrying): nothing held in memory is written; the partitions' "
                     "new owner re-consumes from the committed offsets");
        e->fenced_logged = 1;
    }
    return 1;
}

int jd_engine_fenced(struct jd_engine *e)
{
    return fenced(e);
}

/* Forgets the dirty list unwritten (fenced). */
static void drop_dirty(struct jd_engine *e)
{
    for (size_t i = 0; i < e->ndirty; i++)
        e->dirty[i]->dirty = e->dirty[i]->queued = 0;
    e->ndirty = 0;
    for (size_t i = 0; i < e->nurgent; i++)
        e->urgent[i]->urgent = 0;
    e->nurgent = 0;
}

void jd_engine_drop_dirty(struct jd_engine *e)
{
    drop_dirty(e);
}

void jd_engine_redis_failed(struct jd_engine *e, const char *what, const char *err)
{
    jd_error(MOD, "redis %s failed: %s; retrying (consumption paused)", what, err);
    if (e->metrics) {
        jd_metrics_add(e->metrics, JD_C_REDIS_ERRORS, 1);
        jd_metrics_add(e->metrics, JD_C_REDIS_REDIRECTS, jd_store_take_redirects(e->store));
    }
    e->redis_ok = 0;
    set_backpressure(e, 1);
    backoff(e);
    char errstr[256];
    if (jd_store_reconnect(e->store, errstr, sizeof errstr) != 0)
        jd_warn(MOD, "redis reconnect: %s", errstr);
}

void jd_engine_redis_succeeded(struct jd_engine *e)
{
    e->backoff_ms = 0;
    if (e->metrics)
        jd_metrics_add(e->metrics, JD_C_REDIS_REDIRECTS, jd_store_take_redirects(e->store));
    if (!e->redis_ok) {
        e->redis_ok = 1;
        jd_info(MOD, "redis available again");
    }
    set_backpressure(e, 0);
}

static void loaded(struct jd_engine *e);

/* Loads e->load[0..nload) until it works or we are told to stop. */
int jd_engine_load(struct jd_engine *e, jd_flag *stop)
{
    char errstr[512];
    while (e->nload > 0) {
        int64_t t0 = jd_monotonic_ns();
        if (jd_store_load(e->store, e->rs, e->load, e->nload, errstr, sizeof errstr) == 0) {
            if (e->metrics)
                jd_metrics_observe(e->metrics, JD_H_REDIS_ROUNDTRIP,
                                   (double)(jd_monotonic_ns() - t0) / 1e9);
            jd_engine_redis_succeeded(e);
            break;
        }
        jd_engine_redis_failed(e, "load", errstr);
        if ((stop && *stop) || fenced(e))
            return -1;
    }
    loaded(e);
    return 0;
}

/* e->load[0..nload) is loaded: an outbox left by a crash is produced again
 * (same ids). */
static void loaded(struct jd_engine *e)
{
    for (size_t i = 0; i < e->nload; i++) {
        struct jd_customer *c = e->load[i];
        /* an outbox left by a crash is produced again (same ids) */
        if (c->npending > 0) {
            jd_engine_push_dirty(e, c);
            jd_engine_push_urgent(e, c);
            if (e->metrics)
                jd_metrics_add(e->metrics, JD_C_TRIGGERS_REDELIVERED, c->npending);
        }
    }
    e->nload = 0;
}

/* insights: the stats offsets of the partitions in this batch (a round trip
 * only for a partition newly owned) until it works or we are told to stop. */
static int load_stats_offsets(struct jd_engine *e, jd_flag *stop)
{
    char errstr[512];
    for (size_t i = 0; i < e->nmsgs; i++) {
        struct jd_part *p = e->mpart[i];
        if (p && (i == 0 || p != e->mpart[i - 1]))
            jd_insights_want(e->insights, p->source, p->topic, p->partition, p->gen);
    }
    if (jd_insights_offsets_wanted(e->insights))
        jd_engine_stats_quiet(e);
    while (jd_insights_load_offsets(e->insights, errstr, sizeof errstr) != 0) {
        jd_engine_redis_failed(e, "stats offsets", errstr);
        if (stop && *stop)
            return -1;
    }
    return 0;
}

/* Runs a stats write (the whole flush, or its build) until it works or we
 * are told to stop. */
static int stats_retry(struct jd_engine *e, jd_flag *stop,
                       int (*write)(struct jd_insights *, char *, size_t))
{
    char errstr[512];
    while (write(e->insights, errstr, sizeof errstr) != 0) {
        jd_engine_redis_failed(e, "stats flush", errstr);
        if (stop && *stop)
            return -1;
    }
    return 0;
}

int jd_engine_stats_build(struct jd_engine *e, jd_flag *stop)
{
    return stats_retry(e, stop, jd_insights_flush_build);
}

/* Waits for the write-back on its way when it carries the stats: the
 * insights connection is its until then. */
void jd_engine_stats_quiet(struct jd_engine *e)
{
    if (jd_insights_flying(e->insights))
        (void)jd_engine_wb_wait(e);
}

int jd_engine_flush_stats(struct jd_engine *e, jd_flag *stop)
{
    jd_engine_stats_quiet(e);
    return stats_retry(e, stop, jd_insights_flush);
}

/* Writes back cs[0..n) until it works or we are told to stop (or fenced),
 * at most FLUSH_CHUNK customers per round trip: that bounds the request
 * buffer and the stall of a large write-back. */
#define FLUSH_CHUNK 4096
int jd_engine_flush_list(struct jd_engine *e, struct jd_customer **cs, size_t n, jd_flag *stop)
{
    char errstr[512];
    for (size_t off = 0; off < n;) {
        size_t k = n - off < FLUSH_CHUNK ? n - off : FLUSH_CHUNK;
        if (fenced(e))
            return -1;
        int64_t t0 = jd_monotonic_ns();
        /* the batch's stats first: a crash between the two writes replays
         * events whose stats are in, and insights skips them */
        if (jd_engine_flush_stats(e, stop) != 0)
            return -1;
        if (jd_store_flush(e->store, e->rs, cs + off, k, errstr, sizeof errstr) == 0) {
            if (e->metrics)
                jd_metrics_observe(e->metrics, JD_H_REDIS_ROUNDTRIP,
                                   (double)(jd_monotonic_ns() - t0) / 1e9);
            jd_engine_redis_succeeded(e);
            off += k;
            continue;
        }
        jd_engine_redis_failed(e, "flush", errstr);
        if ((stop && *stop) || fenced(e))
            return -1;
    }
    return 0;
}

static const char *stage_name(const struct jd_engine *e, const struct jd_customer *c)
{
    if (c->stage < 0 || (size_t)c->stage >= jd_rules_nstages(e->rs))
        return "";
    return jd_rules_stage_name(e->rs, (size_t)c->stage);
}

/* Turns one fired rule into an outbox entry, if the policy lets it out
 * (a deferred one carries not_before); a suppressed one into a history line
 * and an audit record. */
void jd_engine_emit(struct jd_engine *e, struct jd_customer *c, const struct jd_event *ev,
                    const struct jd_fired *f, int64_t now, int64_t src_ts, int replayable)
{
    const struct jd_trigger_src *ts = jd_rules_trigger(e->rs, f->trigger);
    const char *version = jd_rules_version(e->rs);
    struct jd_trigger t = {0};
    const char *src_id = ev ? ev->event_id : NULL;
    char deadline[24] = "";
    if (!src_id) /* (a timer's trigger: its id is made of when it fired) */
        snprintf(deadline, sizeof deadline, "%" PRId64, now);
    const void *parts[4] = {ts->on.name, version, c->id, src_id ? src_id : deadline};
    size_t lens[4] = {strlen(ts->on.name), strlen(version), c->id_len,
                      strlen(src_id ? src_id : deadline)};
    jd_hash128_hex(parts, lens, 4, t.trigger_id);

    /* a replay of an event whose trigger is still in the outbox is skipped
     * before it gets here; this guards against a rule firing twice for one
     * event (same id) */
    for (size_t i = 0; i < c->npending; i++)
        if (strcmp(c->pending[i].trigger_id, t.trigger_id) == 0)
            return;

    t.trigger = ts->on.name;
    t.kind = ts->kind;
    t.customer_id = c->id;
    t.segment = f->segment >= 0 ? jd_rules_segment_name(e->rs, (size_t)f->segment) : NULL;
    t.journey_stage = stage_name(e, c);
    t.reason = f->reason;
    t.fired_at = (e->cfg->clock == JD_CLOCK_EVENT && ev) ? ev->occurred_at : now;
    t.source_event_id = src_id;
    t.rule_version = version;
    t.nattrs = f->nattrs < 16 ? f->nattrs : 16;
    for (size_t i = 0; i < t.nattrs; i++) {
        t.attr_keys[i] = f->attr_keys[i];
        t.attr_vals[i] = f->attr_vals[i];
    }

    char errstr[256];
    struct jd_policy_decision d;
    if (jd_policy_decide(e->policy, e->rs, c, f->trigger, now, &d) != JD_POLICY_ALLOW) {
        jd_insights_suppressed(e->insights, c, f->trigger, d.reason, now); /* holdout: control */
        if (e->metrics)
            jd_metrics_trigger_suppressed(e->metrics, f->trigger, d.reason);
        jd_debug(MOD, "customer %s: %s suppressed (%s): %s", c->id, ts->on.name, d.reason,
                 d.detail);
        if (jd_policy_record_suppressed(e->policy, c, &t, &d, now, errstr, sizeof errstr) != 0)
            jd_error(MOD, "customer %s: audit record of %s: %s", c->id, t.trigger, errstr);
        return;
    }
    char reason[JD_REASON_MAX + 260];
    if (d.not_before) {
        snprintf(reason, sizeof reason, "%s; %s", f->reason, d.detail);
        t.reason = reason;
    }

    jd_buf_reset(&e->tmp);
    if (jd_codec_encode_trigger(e->codec, &t, &e->tmp, errstr, sizeof errstr) != 0) {
        jd_error(MOD, "customer %s: encoding trigger %s: %s", c->id, t.trigger, errstr);
        return;
    }
    struct jd_pending_trigger *pt = jd_customer_add_pending(c);
    pt->not_before = d.not_before;
    jd_pending_set_value(pt, e->tmp.data, e->tmp.len);
    memcpy(pt->trigger_id, t.trigger_id, 33);
    pt->kind = (uint8_t)ts->kind;
    pt->topic = ts->topic ? jd_cstrndup(ts->topic, strlen(ts->topic)) : NULL;
    /* a deferral is on purpose, not latency: journeyd_event_to_trigger_seconds
     * measures only triggers sent at once */
    pt->src_ts = d.not_before ? 0 : src_ts;
    pt->replayable = replayable;
    jd_buf_reset(&e->history);
    jd_buf_printf(&e->history, "%" PRId64 "|%s|%s|%s|%s", t.fired_at, t.trigger, t.trigger_id,
                  jd_kind_name(t.kind), t.reason);
    pt->history = jd_strdup(jd_buf_cstr(&e->history));
    jd_insights_sent(e->insights, c, f->trigger, now); /* treated */
    if (e->metrics)
        jd_metrics_trigger_emitted(e->metrics, f->trigger);
}

void jd_engine_record_transitions(struct jd_engine *e, const struct jd_eval_result *res)
{
    if (!e->metrics)
        return;
    jd_metrics_add(e->metrics, JD_C_RULES_EVALUATED, res->evaluated);
    for (size_t s = 0; s < 64; s++) {
        uint64_t bit = 1ULL << s;
        /* members: program-wide, set from Redis by jd_insights_tick */
        if (res->entered & bit)
            jd_metrics_segment_transition(e->metrics, s, JD_DIR_ENTER);
        if (res->exited & bit)
            jd_metrics_segment_transition(e->metrics, s, JD_DIR_EXIT);
    }
}

static int64_t message_timestamp(const rd_kafka_message_t *m)
{
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    return tt == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? 0 : ts;
}

/* Applies one decoded event to its (loaded) customer. */
static void apply_event(struct jd_engine *e, struct jd_part *p, struct jd_customer *c,
                        struct jd_event *ev, int64_t src_ts)
{
    if (c->partition == p->source && ev->offset <= c->applied_offset) {
        /* already in the state: a replay after a crash or rebalance */
        if (e->metrics)
            jd_metrics_add(e->metrics, JD_C_EVENTS_REPLAYED, 1);
        return;
    }
    /* timers due before this event's time fire first (engine_timers.c) */
    jd_engine_timers_fire(e, p, c, ev->offset);
    c->partition = p->source;
    c->applied_offset = ev->offset;
    jd_engine_push_dirty(e, c);
    if (jd_customer_seen_event(c, ev->event_id)) {
        jd_info(MOD, "customer %s: duplicate event_id %s at %s/%" PRId32 "/%" PRId64 " skipped",
                c->id, ev->event_id, p->topic, p->partition, ev->offset);
        if (e->metrics)
            jd_metrics_add(e->metrics, JD_C_EVENTS_DUPLICATE, 1);
        return;
    }

    int64_t now = e->cfg->clock == JD_CLOCK_EVENT ? p->watermark : jd_now_ms();
    struct jd_eval_result res;
    size_t order[JD_MAX_FIRED];
    jd_insights_begin(e->insights, c, ev, now); /* resolves open goals */
    jd_customer_apply_core(c, ev);
    jd_policy_observe_event(e->policy, c, ev);
    jd_rules_on_event(e->rs, c, ev, now, &res);
    jd_engine_record_transitions(e, &res);
    jd_policy_order(e->rs, &res, order);
    for (size_t i = 0; i < res.nfired; i++)
        jd_engine_emit(e, c, ev, &res.fired[order[i]], now, src_ts, 1);
    jd_engine_timers_schedule(e, p, c, now);
    jd_insights_end(e->insights, c);
}

static int naive_roundtrip(struct jd_engine *e, struct jd_customer *c, jd_flag *stop)
{
    /* processing.naive: the baseline the benchmark compares against — one
     * synchronous Redis write per event */
    struct jd_customer *one[1] = {c};
    char errstr[512];
    while (jd_insights_flush(e->insights, errstr, sizeof errstr) != 0 ||
           jd_store_flush(e->store, e->rs, one, 1, errstr, sizeof errstr) != 0) {
        jd_engine_redis_failed(e, "flush", errstr);
        if ((stop && *stop) || fenced(e))
            return -1;
    }
    return 0;
}

/* The loads of the batch taken ahead are finished and taken in. */
static void settle_loads(struct jd_engine *e)
{
    /* (fenced: the revocation drops them; nothing of them is produced) */
    if (jd_engine_loader_wait(e) == 0 && !fenced(e))
        loaded(e);
}

void jd_engine_settle_ahead(struct jd_engine *e)
{
    if (!e->prepared)
        return;
    /* (shutdown or a revocation may destroy or move messages next: the
     * batch then decodes them on this thread, as without a decoder) */
    jd_engine_decoder_finish(e);
    settle_loads(e);
}

/* How many lookups ahead each stage of jd_cache_prefetch_hashed is asked for: far
 * enough for its line to arrive from memory, the later stage nearer. */
#define AHEAD_SLOT 12
#define AHEAD_CUSTOMER 6

static void prefetch_lookup(struct jd_engine *e, size_t i, int stage)
{
    if (i >= e->nmsgs)
        return;
    const rd_kafka_message_t *m = e->msgs[i];
    if (m->key && m->key_len > 0)
        jd_cache_prefetch_hashed(e->cache, e->mhash[i], stage);
}

/* Step 1 of a batch: looks up the customer and the partition of every
 * message (once: the batch takes them from mcust and mpart) and creates the
 * customers not cached yet, listed in e->load for loading. */
void jd_engine_batch_prepare(struct jd_engine *e)
{
    e->nload = 0;
    const rd_kafka_topic_t *rkt = NULL;
    int32_t partition = -1;
    struct jd_part *p = NULL;
    for (size_t i = 0; i < e->nmsgs; i++) { /* each key hashed once */
        const rd_kafka_message_t *m = e->msgs[i];
        e->mhash[i] = m->key && m->key_len > 0 ? jd_cache_hash(m->key, m->key_len) : 0;
    }
    for (size_t i = 0; i < e->nmsgs; i++) {
        rd_kafka_message_t *m = e->msgs[i];
        /* messages come in runs of one partition: looked up once a run */
        if (m->rkt != rkt || m->partition != partition) {
            rkt = m->rkt;
            partition = m->partition;
            p = jd_engine_part(e, rd_kafka_topic_name(m->rkt), m->partition, 0);
        }
        e->mpart[i] = p;
        e->mcust[i] = NULL;
        prefetch_lookup(e, i + AHEAD_SLOT, 0);
        prefetch_lookup(e, i + AHEAD_CUSTOMER, 1);
        if (!m->key || m->key_len == 0)
            continue;
        if ((e->mcust[i] = jd_cache_get_hashed(e->cache, e->mhash[i], m->key, m->key_len)))
            continue;
        struct jd_customer *c = jd_customer_new(m->key, m->key_len, p ? p->source : 0, e->rs);
        jd_cache_put_hashed(e->cache, c, e->mhash[i]);
        e->mcust[i] = c;
        if (e->nload == e->capload) {
            e->capload = e->capload ? e->capload * 2 : 1024;
            e->load = jd_xrealloc(e->load, e->capload * sizeof *e->load);
        }
        e->load[e->nload++] = c;
    }
}

void jd_engine_process_batch(struct jd_engine *e)
{
    jd_flag *stop = e->stop;
    /* a batch taken ahead: its customers are looked up, and loading them
     * may be on its way (engine_load.c) */
    int prepared = e->prepared;
    /* (its decode goes on while the batch is applied: engine_decode.c) */
    int decoding = prepared && jd_engine_decoder_covers(e);
    if (prepared)
        settle_loads(e);
    e->prepared = 0;
    if (e->nmsgs == 0)
        return;
    if (fenced(e))
        goto abandon; /* messages polled before the revocation: not ours */
    e->fenced_logged = 0;
    int64_t t0 = jd_monotonic_ns();

    if (!prepared)
        jd_engine_batch_prepare(e);
    /* (a load ahead that failed left e->load as it was: loaded here) */
    if (jd_engine_load(e, stop) != 0)
        goto abandon;
    if (load_stats_offsets(e, stop) != 0)
        goto abandon;
    /* newly assigned partitions resume their event clock (engine_clock.c) */
    if (jd_engine_clock_restore(e, 1) != 0)
        goto abandon;

    /* 2. every event, in order; seen_ns: when its customers were ready, the
     * time its partitions count their idleness from (a clock read per
     * event was a visible cost) */
    int64_t seen_ns = jd_monotonic_ns();
    char errstr[512];
    for (size_t i = 0; i < e->nmsgs; i++) {
        rd_kafka_message_t *m = e->msgs[i];
        struct jd_part *p = e->mpart[i];
        if (!p)
            continue;
        struct jd_ckpt *ck = jd_engine_ckpt_open(p);
        if (ck->events++ == 0)
            ck->taken_ns = e->taken_ns;
        jd_engine_timers_seen(e, p, m->offset, seen_ns);
        if (e->metrics)
            jd_metrics_add(e->metrics, JD_C_EVENTS_CONSUMED, 1);
        if (!m->key || m->key_len == 0) {
            jd_engine_produce_dlq(e, m, "empty message key (the key must be the customer_id)");
            if (e->metrics)
                jd_metrics_failed(e->metrics, JD_FAIL_EMPTY_KEY);
            continue;
        }
        struct jd_event ev;
        enum jd_decode_status st =
            decoding ? jd_engine_decode_at(e, i, &ev, errstr, sizeof errstr)
                     : jd_codec_decode(e->codec, m->payload, m->len, &ev, errstr, sizeof errstr);
        if (st != JD_DECODE_OK) {
            jd_engine_produce_dlq(e, m, errstr);
            if (e->metrics)
                jd_metrics_failed(e->metrics,
                                  st == JD_DECODE_UNKNOWN_SCHEMA  ? JD_FAIL_UNKNOWN_SCHEMA
                                  : st == JD_DECODE_MISSING_FIELD ? JD_FAIL_MISSING_FIELD
                                                                  : JD_FAIL_MALFORMED);
            continue;
        }
        if (strlen(ev.customer_id) != m->key_len ||
            memcmp(ev.customer_id, m->key, m->key_len) != 0) {
            snprintf(errstr, sizeof errstr,
                     "customer_id '%s' does not match the message key '%.*s' (the key must be "
                     "the customer_id, or the customer's events would be split across "
                     "partitions)",
                     ev.customer_id, (int)(m->key_len > 200 ? 200 : m->key_len),
                     (const char *)m->key);
            jd_engine_produce_dlq(e, m, errstr);
            if (e->metrics)
                jd_metrics_failed(e->metrics, JD_FAIL_MISSING_FIELD);
            continue;
        }
        ev.partition = m->partition;
        ev.offset = m->offset;
        /* well-known names as their static copies: rules and counts then
         * match them by pointer (jd_name_eq) */
        const char *known = jd_state_known(ev.type);
        if (known)
            ev.type = known;
        if ((known = jd_state_known(ev.channel)))
            ev.channel = known;
        if (ev.occurred_at > p->watermark)
            p->watermark = ev.occurred_at;
        struct jd_customer *c = e->mcust[i];
        if (i + 8 < e->nmsgs)
            jd_customer_prefetch(e->mcust[i + 8], 0);
        if (i + 4 < e->nmsgs)
            jd_customer_prefetch(e->mcust[i + 4], 1);
        size_t npending = c->npending;
        apply_event(e, p, c, &ev, message_timestamp(m));
        if (c->npending != npending)
            jd_engine_push_urgent(e, c); /* a new trigger: written at the batch's end */
        if (e->cfg->naive && c->dirty) {
            if (naive_roundtrip(e, c, stop) != 0)
                goto abandon;
            jd_engine_produce_customer(e, c);
        }
    }

    /* 3. customers with new triggers: persist (state and outbox at once),
     * then produce; the others wait for the next write-back (engine_flush.c).
     * With the write-back thread, they go with the write that leaves at the
     * end of this turn (jd_engine_persist_due). */
    if ((!e->wb && jd_engine_flush_urgent(e, stop) != 0) || fenced(e))
        goto abandon;

    /* 4. the batch's offsets wait for the next write-back and for their
     * acknowledgements now */
    for (size_t i = e->nmsgs; i-- > 0;) {
        /* messages of one partition arrive in offset order: the last one of
         * the partition in the batch (the first met from the end) closes
         * its checkpoint */
        struct jd_part *p = e->mpart[i];
        if (p && p->open) {
            jd_engine_ckpt_close(p, e->msgs[i]->offset + 1);
            e->closed_unmarked = 1; /* (sealed by a later write: engine_flush.c) */
        }
    }
    if (e->metrics)
        jd_metrics_observe(e->metrics, JD_H_BATCH_EVENTS, (double)e->nmsgs);
    int64_t ts0 = message_timestamp(e->msgs[0]);
    jd_debug(MOD, "batch of %zu events in %.3f ms, the first produced %" PRId64 " ms ago", e->nmsgs,
             (double)(jd_monotonic_ns() - t0) / 1e6, ts0 ? jd_now_ms() - ts0 : -1);
    e->last_batch = e->nmsgs;
    jd_engine_decoder_finish(e); /* (before the messages go) */
    size_t bytes = 0;
    for (size_t i = 0; i < e->nmsgs; i++) {
        bytes += e->msgs[i]->len + e->msgs[i]->key_len;
        rd_kafka_message_destroy(e->msgs[i]);
    }
    jd_fetch_nudge_msg_size(e->nudge, bytes / e->nmsgs);
    e->nmsgs = 0;
    jd_engine_cache_fit(e);
    return;

abandon:
    /* Stopping while Redis is down, or fenced: nothing of this batch is
     * persisted, no offset of it is stored, so it is consumed again (after
     * the restart, or by the partitions' next owner). The partial in-memory
     * state must not be written later either: when stopping, nothing is
     * flushed again; when fenced, the revocation drops these customers. */
    jd_warn(MOD, "abandoning a batch of %zu events (not persisted, will be re-consumed)", e->nmsgs);
    jd_engine_decoder_finish(e); /* (before the messages go) */
    for (size_t i = 0; i < e->nmsgs; i++)
        rd_kafka_message_destroy(e->msgs[i]);
    e->nmsgs = 0;
    if (fenced(e)) {
        drop_dirty(e); /* their open checkpoints go with the revocation */
        return;
    }
    e->ndirty = 0;
    e->nurgent = 0;
    jd_insights_discard(e->insights);
    e->abandoned = 1;
}
