/*
 * engine — lifecycle and main loop: collect a batch (by count and by time,
 * so latency stays low when traffic is light), process it, serve delivery
 * reports, reload rules between batches, and shut down cleanly.
 */
#include "journeyd/engine.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "journeyd/kafka.h"
#include "journeyd/log.h"
#include "journeyd/notify.h"

#define MOD "engine"

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct jd_engine *e = opaque;
    (void)rk;
    if (e->metrics)
        jd_metrics_update_from_kafka_stats(e->metrics, json, len);
    return 0; /* librdkafka frees json */
}

struct jd_engine *jd_engine_new(const struct jd_config *cfg, struct jd_ruleset *rs,
                                struct jd_metrics *metrics, char *errstr, size_t errsize)
{
    return jd_engine_new_member(cfg, rs, metrics, 0, 1, errstr, errsize);
}

struct jd_engine *jd_engine_new_member(const struct jd_config *cfg, struct jd_ruleset *rs,
                                       struct jd_metrics *metrics, int index, int count,
                                       char *errstr, size_t errsize)
{
    struct jd_engine *e = jd_xcalloc(1, sizeof *e);
    e->cfg = cfg;
    e->count = count < 1 ? 1 : count;
    if (cfg->group_instance_id && *cfg->group_instance_id) {
        size_t n = strlen(cfg->group_instance_id) + 16;
        e->instance_id = jd_xmalloc(n);
        if (index == 0)
            snprintf(e->instance_id, n, "%s", cfg->group_instance_id);
        else
            snprintf(e->instance_id, n, "%s-%d", cfg->group_instance_id, index);
    }
    e->rs = rs;
    e->metrics = metrics;
    e->maxmsgs = (size_t)cfg->batch_max_events;
    e->msgs = jd_xcalloc(e->maxmsgs, sizeof *e->msgs);
    e->mcust = jd_xcalloc(e->maxmsgs, sizeof *e->mcust);
    e->mpart = jd_xcalloc(e->maxmsgs, sizeof *e->mpart);
    e->mhash = jd_xcalloc(e->maxmsgs, sizeof *e->mhash);
    e->parts = jd_xcalloc(cfg->ninput_topics, sizeof *e->parts);
    e->nparts = jd_xcalloc(cfg->ninput_topics, sizeof *e->nparts);
    jd_buf_init(&e->tmp);
    jd_buf_init(&e->history);
    e->last_persist_ns = jd_monotonic_ns();

    if (!(e->codec = jd_codec_new(cfg, errstr, errsize)))
        goto err;
    if (!(e->store = jd_store_new(cfg, errstr, errsize)))
        goto err;
    jd_info(MOD, "redis: %s", jd_store_describe(e->store));
    e->redis_ok = 1;
    size_t cache_max = (size_t)cfg->cache_max_customers / (size_t)e->count;
    e->cmem = jd_cmem_new();
    e->cache = jd_cache_new(cache_max ? cache_max : 1);
    if (!(e->policy = jd_policy_new(cfg, errstr, errsize)))
        goto err;
    e->insights = jd_insights_new(cfg, rs);
    e->timers = jd_engine_timers_new();
    if (jd_engine_wb_start(e, errstr, errsize) != 0)
        goto err;
    if (jd_engine_loader_start(e, errstr, errsize) != 0)
        goto err;
    if (jd_engine_decoder_start(e, errstr, errsize) != 0)
        goto err;
    if (!(e->producer = jd_kafka_producer_new(cfg, jd_engine_delivery, e, errstr, errsize)))
        goto err;
    if (!(e->consumer = jd_kafka_consumer_new(cfg, e->instance_id, jd_engine_rebalance, stats_cb, e,
                                              errstr, errsize)))
        goto err;
    e->nudge = jd_fetch_nudge_start(e->consumer);
    if (!(e->ack_wake = jd_kafka_ack_wake_start(e->producer, e->consumer)))
        jd_warn(MOD, "acknowledgements will not wake the consumer's poll: they are served "
                     "when a message comes or the poll times out");
    if (metrics) {
        jd_metrics_bind_rules(metrics, rs);
        jd_metrics_set_ready_inputs(metrics, 0, 1, 0);
    }
    return e;

err:
    e->rs = NULL; /* stays the caller's on failure */
    jd_engine_destroy(e);
    return NULL;
}

void jd_engine_destroy(struct jd_engine *e)
{
    if (!e)
        return;
    jd_engine_decoder_finish(e); /* (it may read the messages) */
    for (size_t i = 0; i < e->nmsgs; i++)
        rd_kafka_message_destroy(e->msgs[i]);
    jd_engine_loader_destroy(e); /* before the customers it may still hold */
    jd_engine_decoder_destroy(e);
    jd_engine_wb_destroy(e);
    jd_fetch_nudge_stop(e->nudge);
    jd_kafka_ack_wake_stop(e->ack_wake); /* (it holds a reference to the consumer's queue) */
    e->ack_wake = NULL;
    /* (never run: it was subscribed but never polled; closing it would call
     * the rebalance callback on this thread, with the engine half gone) */
    if (e->consumer)
        rd_kafka_destroy_flags(e->consumer, e->ran ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (e->producer) {
        /* what is still queued was never acknowledged: its offsets are not
         * stored, so it is produced again after the restart */
        rd_kafka_purge(e->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(e->producer, 0);
        rd_kafka_destroy(e->producer); /* no more delivery reports after this */
    }
    for (size_t i = 0; i < e->nacks; i++)
        free(e->acks[i]);
    free(e->acks);
    for (size_t t = 0; t < e->cfg->ninput_topics; t++) {
        for (int32_t p = 0; p < e->nparts[t]; p++)
            jd_engine_part_free(&e->parts[t][p]);
        free(e->parts[t]);
    }
    free(e->parts);
    free(e->nparts);
    if (e->cache)
        jd_cache_destroy(e->cache);
    jd_store_destroy(e->store);
    jd_codec_destroy(e->codec);
    jd_policy_destroy(e->policy);
    jd_insights_destroy(e->insights);
    jd_engine_timers_destroy(e->timers);
    if (e->rs)
        jd_rules_destroy(e->rs);
    jd_config_destroy(e->reload_cfg);
    free(e->msgs);
    free(e->mcust);
    free(e->mpart);
    free(e->mhash);
    free(e->load);
    free(e->dirty);
    free(e->urgent);
    free(e->holds);
    free(e->wmv);
    jd_buf_free(&e->tmp);
    jd_buf_free(&e->history);
    free(e->instance_id);
    /* last: every customer is gone (the cache, the loader, the rebalance) */
    size_t live = jd_cmem_destroy(e->cmem);
    if (live)
        jd_error(MOD, "%zu bytes of customer memory were still allocated at shutdown", live);
    free(e);
}

static void rebind_one(struct jd_customer *c, void *ud)
{
    struct jd_engine *e = ud;
    jd_customer_rebind(c, e->rs, e->next_rs);
}

/* SIGHUP: compile the rules of the config file as it is now; swap only if
 * the whole rule set and the contact policy are valid. Only the rules and the
 * policy are reloaded; connection settings need a restart. */
static void reload_rules(struct jd_engine *e)
{
    jd_engine_stats_quiet(e); /* jd_insights_bind remaps what a flush carries */
    struct jd_errors errs;
    jd_errors_init(&errs);
    char *text = e->peers && e->peers->reload_text ? e->peers->reload_text(e->peers->arg) : NULL;
    struct jd_config *ncfg =
        text ? jd_config_load_text(e->cfg->path, text, &errs) : jd_config_load(e->cfg->path, &errs);
    free(text);
    struct jd_ruleset *nrs = NULL;
    struct jd_policy *np = NULL;
    char perr[512];
    if (ncfg && jd_rules_compile(&ncfg->rules, &nrs, &errs) == 0 &&
        !(np = jd_policy_new(ncfg, perr, sizeof perr))) {
        jd_errors_add(&errs, NULL, 0, 0, "policy: %s", perr);
        jd_rules_destroy(nrs);
        nrs = NULL;
    }
    if (np) {
        jd_info(MOD, "rules reloaded: version %s -> %s", jd_rules_version(e->rs),
                jd_rules_version(nrs));
        e->next_rs = nrs;
        jd_cache_foreach(e->cache, -1, rebind_one, e);
        jd_rules_destroy(e->rs);
        jd_policy_destroy(e->policy); /* it read the old config too */
        e->policy = np;
        jd_config_destroy(e->reload_cfg); /* the old rules pointed into it */
        e->rs = nrs;
        e->next_rs = NULL;
        e->reload_cfg = ncfg;
        jd_insights_bind(e->insights, nrs);
        if (e->metrics) {
            jd_metrics_bind_rules(e->metrics, nrs);
            jd_metrics_rule_reload(e->metrics, 1);
        }
    } else {
        jd_error(MOD, "rule reload refused, the running rules (version %s) stay; %zu error(s):",
                 jd_rules_version(e->rs), errs.n);
        for (size_t i = 0; i < errs.n; i++)
            jd_error(MOD, "%s", errs.msgs[i]);
        jd_config_destroy(ncfg);
        if (e->metrics)
            jd_metrics_rule_reload(e->metrics, 0);
    }
    jd_errors_free(&errs);
}

/* The engine is idle once nothing was consumed for IDLE_MS since it last
 * finished a batch, or sooner when a backlog (a full batch since it was last
 * idle) has been consumed to the end of every owned partition and nothing
 * came for SETTLE_MS. What is left to write goes then, on the write-back
 * thread: on the quiet path in slices, one per turn, at the end of a
 * backlog in one write (engine_flush.c); and the offsets of the last
 * events move. (Before, idle needed one whole poll of IDLE_MS without a
 * message, and came only after the last write-back round had gone out in
 * slices.)
 * Steady traffic, which never fills a batch, keeps its write-backs in
 * slices; SETTLE_MS keeps traffic near capacity, which catches up with the
 * end for a moment between fetches, from ending its "backlog" at each of
 * them. A partition with nothing consumed since its assignment counts as
 * caught up only when empty (jd_engine_caught_up): the engine then waits
 * IDLE_MS. Returns the ms left until idle (0: idle); *caught_up: idle by the
 * end of a backlog. */
#define IDLE_MS 100
#define SETTLE_MS 10
/* Polls while produced messages wait for their acknowledgements, with
 * nothing else to do (the producer is served between polls): ACK_POLL_MS
 * while acknowledgements come, doubling up to IDLE_MS while none does. */
#define ACK_POLL_MS 5

static int64_t idle_in(struct jd_engine *e, int *caught_up)
{
    *caught_up = 0;
    if (!e->last_msg_ns)
        return 0; /* nothing consumed yet */
    int64_t quiet = (jd_monotonic_ns() - e->last_msg_ns) / 1000000;
    if (e->backlog && quiet >= SETTLE_MS && jd_engine_caught_up(e)) {
        *caught_up = 1;
        return 0;
    }
    if (quiet >= IDLE_MS)
        return 0;
    return (e->backlog && quiet < SETTLE_MS ? SETTLE_MS : IDLE_MS) - quiet;
}

static int ack_poll(struct jd_engine *e)
{
    if (e->inflight != e->ack_inflight) {
        e->ack_inflight = e->inflight; /* acknowledgements came, or more to wait for */
        e->ack_poll_ms = ACK_POLL_MS;
    } else if (e->ack_poll_ms < IDLE_MS) {
        e->ack_poll_ms = e->ack_poll_ms ? e->ack_poll_ms * 2 : ACK_POLL_MS;
    }
    return e->ack_poll_ms < IDLE_MS ? e->ack_poll_ms : IDLE_MS;
}

/* Collects up to batch_max_events messages, waiting at most batch_max_wait
 * after the first one; `nowait`: only what is already fetched. Returns -1
 * on a fatal consumer error. */
static int collect(struct jd_engine *e, int nowait)
{
    int64_t deadline = 0;
    while (e->nmsgs < e->maxmsgs && !*e->stop) {
        int timeout = IDLE_MS;
        if (nowait) {
            timeout = 0;
        } else if (e->nmsgs == 0 && (jd_engine_wb_busy(e) || e->nurgent > 0)) {
            /* a write on its way holds triggers, or customers with new
             * triggers wait for the next write: back soon for them */
            timeout = 1;
        } else if (e->nmsgs == 0) {
            int caught_up;
            int64_t left = idle_in(e, &caught_up);
            if (left > 0)
                timeout = (int)left; /* idle then, unless a message comes */
            else if (e->ndirty > 0 || e->nacks > 0 || e->wb_round > 0)
                timeout = 0; /* idle: what is left to write goes now */
            else if (e->inflight > 0)
                timeout = ack_poll(e); /* their acknowledgements move offsets */
        }
        if (e->nmsgs > 0 && !nowait) {
            /* past the deadline, what is already fetched still joins the
             * batch (timeout 0): batch_max_wait = 0 means "take what is
             * there, never wait" */
            int64_t left = (deadline - jd_monotonic_ns()) / 1000000;
            timeout = left > 0 ? (int)left : 0;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(e->consumer, timeout);
        if (!m) {
            if (e->nmsgs == 0 || timeout == 0)
                break; /* idle, or nothing more in time */
            continue;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                char fstr[256];
                if (rd_kafka_fatal_error(e->consumer, fstr, sizeof fstr)) {
                    jd_error(MOD, "fatal consumer error: %s", fstr);
                    rd_kafka_message_destroy(m);
                    return -1;
                }
                jd_warn(MOD, "consumer: %s", rd_kafka_message_errstr(m));
                if (e->metrics)
                    jd_metrics_add(e->metrics, JD_C_KAFKA_ERRORS, 1);
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        if (e->nmsgs == 0) {
            e->taken_ns = jd_monotonic_ns();
            deadline = e->taken_ns + e->cfg->batch_max_wait_ms * 1000000;
        }
        e->msgs[e->nmsgs++] = m;
    }
    if (e->nmsgs == e->maxmsgs)
        e->backlog = 1;
    if (!nowait) {
        int caught_up = 0;
        e->idle = e->nmsgs == 0 && idle_in(e, &caught_up) == 0;
        if (caught_up) {
            jd_debug(MOD, "caught up after a backlog: %zu changed customers written now",
                     e->ndirty);
            e->backlog_end = 1;
        }
        if (e->idle)
            e->backlog = 0;
    }
    return 0;
}

/* Under load (the last batch held at least AHEAD_MIN events), the next
 * batch is taken from what is already fetched as soon as this one is
 * applied, and its new customers are loaded by the loader thread while
 * this one is written back and produced (engine_load.c). Not while a
 * reload or a stop is asked: those are served between batches. Returns -1
 * on a fatal consumer error. */
#define AHEAD_MIN 256

static int take_ahead(struct jd_engine *e)
{
    if (!e->loader || e->last_batch < AHEAD_MIN || *e->stop || (e->reload && *e->reload))
        return 0;
    if (collect(e, 1) != 0)
        return -1;
    /* (a rebalance served by that poll may have finished what it took) */
    if (e->nmsgs > 0 && !e->abandoned) {
        jd_engine_batch_prepare(e);
        jd_engine_loader_submit(e);
        jd_engine_decoder_submit(e);
        e->prepared = 1;
    }
    return 0;
}

/* Looks up the output topics before the first trigger: otherwise the first
 * triggers after a start wait for the producer to learn each topic's
 * partition leaders (measured: several hundred ms on the benchmark). */
static void warm_producer(struct jd_engine *e)
{
    for (size_t k = 0; k < JD_KIND_COUNT; k++) {
        if (!e->cfg->topics[k] || !*e->cfg->topics[k])
            continue;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(e->producer, e->cfg->topics[k], NULL);
        const struct rd_kafka_metadata *md = NULL;
        if (rkt && rd_kafka_metadata(e->producer, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
            rd_kafka_metadata_destroy(md);
        if (rkt)
            rd_kafka_topic_destroy(rkt);
    }
}

void jd_engine_set_peers(struct jd_engine *e, const struct jd_engine_peers *p)
{
    e->peers = p;
}

static void shutdown_engine(struct jd_engine *e)
{
    if (e->peers && e->peers->stopping)
        e->peers->stopping(e->peers->arg);
    jd_engine_settle_ahead(e); /* also when abandoned: closing the consumer drops customers */
    if (e->count == 1)
        jd_notify("STOPPING=1");
    jd_info(MOD, "shutting down: finishing the batch in hand");
    if (!e->abandoned) {
        jd_engine_process_batch(e);
        if (!e->abandoned && jd_engine_persist(e, e->stop) != 0)
            e->abandoned = 1;
    }
    if (jd_engine_drain_producer(e, 30000) != 0)
        jd_warn(MOD,
                "%" PRIu64 " messages unacknowledged after 30 s; their offsets stay "
                "uncommitted (they are re-sent from the outbox after restart)",
                e->inflight);
    if (!e->abandoned && (e->ndirty > 0 || e->nacks > 0) && jd_engine_persist(e, e->stop) != 0)
        jd_warn(MOD, "could not write the last acknowledgements; re-sent after restart");
    rd_kafka_resp_err_t err = rd_kafka_commit(e->consumer, NULL, 0);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        jd_warn(MOD, "final commit: %s", rd_kafka_err2str(err));
    if (e->peers && e->peers->leave_gate)
        e->peers->leave_gate(e->peers->arg); /* the other engines have committed too */
    jd_fetch_nudge_stop(e->nudge);
    e->nudge = NULL;
    jd_kafka_ack_wake_stop(e->ack_wake);
    e->ack_wake = NULL;
    err = rd_kafka_consumer_close(e->consumer);
    if (err)
        jd_warn(MOD, "leaving the group: %s", rd_kafka_err2str(err));
    rd_kafka_flush(e->producer, 10000);
    jd_info(MOD, "stopped");
}

/* A turn whose own work (all but the wait for messages) took SLOW_TURN_MS
 * or more is logged at debug level with where the time went: t[0..8] are
 * the turn's start, then the ends of (a reload and) collect, the producer's poll, the
 * batch, timers, taking ahead, persisting, trimming and the tail. */
#define SLOW_TURN_MS 50

static void log_slow_turn(const int64_t *t, size_t nb)
{
    if (t[8] - t[1] < SLOW_TURN_MS * 1000000LL || !jd_log_enabled(JD_LOG_DEBUG))
        return;
    jd_debug(
        MOD,
        "slow turn: %.1f ms after %.1f ms of reload and collect; producer poll %.1f, batch of %zu "
        "%.1f, timers %.1f, ahead %.1f, persist %.1f, trim %.1f, tail %.1f",
        (t[8] - t[1]) / 1e6, (t[1] - t[0]) / 1e6, (t[2] - t[1]) / 1e6, nb, (t[3] - t[2]) / 1e6,
        (t[4] - t[3]) / 1e6, (t[5] - t[4]) / 1e6, (t[6] - t[5]) / 1e6, (t[7] - t[6]) / 1e6,
        (t[8] - t[7]) / 1e6);
}

int jd_engine_run(struct jd_engine *e, jd_flag *stop, jd_flag *reload)
{
    e->stop = stop;
    e->reload = reload;
    e->ran = 1;
    jd_cmem_use(e->cmem); /* (engines.c runs each engine on a thread of its own) */
    int rc = 0;
    warm_producer(e);
    jd_info(MOD, "running: rules %s, consuming %s as group %s%s%s", jd_rules_version(e->rs),
            e->cfg->input_topics[0], e->cfg->group_id, e->instance_id ? ", member " : "",
            e->instance_id ? e->instance_id : "");
    while (!*stop) {
        int64_t tt[9]; /* (log_slow_turn) */
        tt[0] = jd_monotonic_ns();
        /* (not while a batch taken ahead is being loaded: its customers are
         * the loader's until the batch waits for them) */
        if (reload && !e->prepared && atomic_exchange(reload, 0))
            reload_rules(e);
        if (!e->prepared && collect(e, 0) != 0) {
            rc = -1;
            break;
        }
        tt[1] = jd_monotonic_ns();
        rd_kafka_poll(e->producer, 0);
        tt[2] = jd_monotonic_ns();
        if (*stop)
            break; /* the batch in hand is finished by shutdown_engine */
        /* (set by collect, which a batch taken ahead skipped) */
        int idle = !e->prepared && e->idle;
        size_t nb = e->nmsgs; /* (log_slow_turn) */
        jd_engine_process_batch(e);
        tt[3] = jd_monotonic_ns();
        if (e->abandoned || e->fatal) {
            rc = -1;
            break;
        }
        if (nb)
            e->last_msg_ns = jd_monotonic_ns(); /* quiet counts from here (idle_in) */
        /* (before the write that leaves at the end of the turn: a tick that
         * fires writes its customers at once, after the write on its way) */
        jd_engine_timers_tick(e);
        tt[4] = jd_monotonic_ns();
        if (take_ahead(e) != 0) {
            rc = -1;
            break;
        }
        if (e->abandoned || e->fatal) {
            rc = -1;
            break;
        }
        tt[5] = jd_monotonic_ns();
        if (jd_engine_persist_due(e, idle, stop) != 0) {
            e->abandoned = 1;
            break;
        }
        tt[6] = jd_monotonic_ns();
        jd_engine_trim(e, idle);
        tt[7] = jd_monotonic_ns();
        if (e->count == 1 && !e->notified_ready && e->assigned_count > 0 && e->redis_ok &&
            !e->backpressured) {
            /* systemd Type=notify: ready once we own partitions and Redis answers */
            jd_notify("READY=1");
            e->notified_ready = 1;
        }
        int64_t wd = jd_notify_watchdog_interval_ms();
        if (e->count == 1 && wd > 0 && jd_monotonic_ns() - e->last_watchdog_ns > wd * 1000000) {
            jd_notify("WATCHDOG=1");
            e->last_watchdog_ns = jd_monotonic_ns();
        }
        if (e->metrics) {
            jd_metrics_heartbeat(e->metrics);
            jd_metrics_gauge(e->metrics, JD_G_OUTBOX_PENDING, (int64_t)e->inflight);
            struct jd_cmem_stats ms;
            jd_cmem_stats(e->cmem, &ms);
            jd_metrics_gauge(e->metrics, JD_G_CUSTOMER_MEMORY, (int64_t)ms.mapped);
            uint64_t nudges = jd_fetch_nudge_count(e->nudge);
            if (nudges != e->nudges_seen) {
                jd_metrics_add(e->metrics, JD_C_FETCH_NUDGES, nudges - e->nudges_seen);
                e->nudges_seen = nudges;
            }
            if (jd_insights_tick_due(e->insights))
                jd_engine_stats_quiet(e);              /* the tick reads on the stats' connection */
            jd_insights_tick(e->insights, e->metrics); /* program gauges, every few s */
        }
        tt[8] = jd_monotonic_ns();
        log_slow_turn(tt, nb);
    }
    shutdown_engine(e);
    return rc;
}
