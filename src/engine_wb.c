/*
 * engine_wb — the periodic write-back travels while the engine goes on.
 *
 * A write-back of every changed customer (engine_flush.c) is built on the
 * engine's thread (encoding needs the customers), then sent and its replies
 * read by a thread of its own on a Redis connection of its own, while the
 * engine's thread applies the next batch. Measured on the benchmark before
 * this: a third of the engine thread's time was spent waiting for Redis to
 * run the write-backs (docs/performance.md).
 *
 * What keeps it exact:
 * - build takes, per customer, what its write covers (store.h); a change
 *   made while the write travels marks the customer dirty again and goes
 *   with the next write-back;
 * - a write-back round is the list of changed customers when it begins;
 *   it goes out in slices, one per turn of the main loop (each at least as
 *   large as the last batch, so that rounds keep pace with the input), so
 *   that no turn stalls to encode thousands of customers (at 10,000
 *   events/s a whole round stalled the events behind it by 20-40 ms);
 * - under load (the next batch taken ahead) a write goes every third
 *   turn: the two turns between neither wait for the write on its way nor
 *   send one, their urgent customers and slices go with the next write
 *   (engine_flush.c, persist_async), exactly as if the three turns had
 *   been one;
 * - the customers with a new trigger (urgent) ride with the slice that
 *   leaves at the end of their batch, ahead of it, and are produced when
 *   it is finished, at the next turn (the stats of the batch are written
 *   before it leaves); so the engine's thread waits for Redis only to load
 *   customers (measured before: a third of its time went to waiting for
 *   the slice on its way and then writing the urgent customers itself);
 *   their triggers are produced into the oldest checkpoint of their
 *   partition, held from the submit (struct jd_hold; also by a synchronous
 *   write of urgent customers, engine_flush.c) so that it cannot be stored
 *   meanwhile: an offset never passes an event whose trigger is not
 *   acknowledged, also after a failed write (the hold waits for the retry),
 *   which is what lets such triggers go without an outbox index entry
 *   (store_timers.c); under light load they go alone and at once, written
 *   from the engine's thread on this same connection while the worker is
 *   idle (jd_engine_wb_write_now): the trigger then waits for Redis, not
 *   also for two hand-overs between threads (6-7 % less CPU at 10,000
 *   events/s, docs/performance.md, fourteenth pass);
 * - the checkpoints closed when a round begins are sealed only once its
 *   last slice is known to be written (never those closed meanwhile: their
 *   customers go with the next round), so no offset is stored ahead of its
 *   state;
 * - one write travels at a time, and anything else that writes customers
 *   or their outbox (a synchronous write-back, acknowledgements, timers
 *   that fire, rebalances, shutdown) first waits for it: a customer is
 *   never written by two connections at once, so no older state can land
 *   after a newer; the timer tick itself does not wait, it leaves the
 *   customers on their way for its next turn (engine_timers.c);
 * - customers on their way are not evicted from the cache (a reload could
 *   read Redis before their write lands), and removals from the partition
 *   sets share one list across both connections (store_timers.c);
 * - a write-back that fails puts its customers back on the write-back list
 *   and the engine retries synchronously (engine_flush.c), as before.
 * On a Redis Cluster and in processing.naive mode the write-back stays
 * synchronous.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "journeyd/log.h"
#include "journeyd/redis_conn.h"
#include "journeyd/worker.h"

#define MOD "engine"

struct jd_wb {
    struct jd_store *st; /* its own connection; the worker's between submit and wait */
    struct jd_worker *worker;
    struct jd_insights *ins; /* the engine's; its flush is the worker's when `stats` */
    int stats;               /* an insights flush goes first (jd_insights_flush_build) */
    int seal;                /* the last slice of its round: seals the marked checkpoints */
    struct jd_customer **cs;
    size_t n, cap;
    int64_t t0;
};

static void wb_run(void *arg)
{
    struct jd_wb *wb = arg;
    /* the stats of what the customers hold are written first, and the
     * customers only once they are (a crash in between must not find
     * customers whose events the stats offset does not cover): not written,
     * the customers are not sent either, and their finish says so */
    if (wb->stats && jd_insights_flush_exec(wb->ins) != 0)
        return;
    jd_store_flush_exec(wb->st);
}

int jd_engine_wb_start(struct jd_engine *e, char *errstr, size_t errsize)
{
    if (e->cfg->naive || jd_redis_is_cluster(jd_store_redis(e->store)))
        return 0;
    struct jd_wb *wb = jd_xcalloc(1, sizeof *wb);
    if (!(wb->st = jd_store_new(e->cfg, errstr, errsize))) {
        free(wb);
        return -1;
    }
    jd_store_share_deferred(wb->st, e->store);
    wb->ins = e->insights;
    if (!(wb->worker = jd_worker_start("jd-writeback", wb_run, wb))) {
        snprintf(errstr, errsize, "cannot start the write-back thread");
        jd_store_destroy(wb->st);
        free(wb);
        return -1;
    }
    e->wb = wb;
    return 0;
}

void jd_engine_wb_destroy(struct jd_engine *e)
{
    struct jd_wb *wb = e->wb;
    if (!wb)
        return;
    (void)jd_engine_wb_wait(e);
    jd_worker_stop(wb->worker);
    jd_store_destroy(wb->st);
    free(wb->cs);
    free(wb);
    e->wb = NULL;
}

/* Records a write that has run (on the worker, or on the engine's thread:
 * jd_engine_wb_write_now): produces its customers' outbox, seals the
 * checkpoints it covers; on failure its customers go back on the list. */
static int finish(struct jd_engine *e)
{
    struct jd_wb *wb = e->wb;
    char errstr[512];
    int stats_rc = 0;
    if (wb->stats) {
        wb->stats = 0;
        if ((stats_rc = jd_insights_flush_finish(e->insights, errstr, sizeof errstr)) != 0)
            jd_error(MOD, "redis stats write failed: %s", errstr);
    }
    int rc = jd_store_flush_finish(wb->st, wb->cs, wb->n, errstr, sizeof errstr);
    int store_failed = rc != 0 && stats_rc == 0; /* (not sent at all when the stats failed) */
    if (stats_rc != 0 && rc == 0) {
        /* nothing of the customers was to be sent: the stats are written
         * again (first) by the next flush, and nothing is sealed meanwhile */
        snprintf(errstr, sizeof errstr, "stats not written");
        rc = -1;
    }
    for (size_t i = 0; i < wb->n; i++)
        wb->cs[i]->writing = 0; /* (also those with nothing to write) */
    if (rc == 0) {
        if (e->metrics)
            jd_metrics_observe(e->metrics, JD_H_REDIS_ROUNDTRIP,
                               (double)(jd_monotonic_ns() - wb->t0) / 1e9);
        jd_engine_redis_succeeded(e);
        for (size_t i = 0; i < wb->n; i++)
            jd_engine_produce_customer(e, wb->cs[i]);
        if (wb->seal && jd_engine_clock_save(e, wb->st, 1, 0) == 0) {
            jd_engine_ckpt_seal_marked(e);
        } else if (wb->seal) {
            /* not sealed: the next write-back goes synchronously, writes
             * the watermark again and seals (engine_clock.c) */
            e->wb_failed = 1;
            if (!jd_store_connected(wb->st) && jd_store_reconnect(wb->st, errstr, sizeof errstr))
                jd_warn(MOD, "redis reconnect (write-back): %s", errstr);
        }
    } else {
        /* back on the list; the caller's synchronous write-back retries */
        jd_error(MOD, "redis write-back failed: %s; retrying", errstr);
        if (e->metrics)
            jd_metrics_add(e->metrics, JD_C_REDIS_ERRORS, 1);
        for (size_t i = 0; i < wb->n; i++)
            jd_engine_queue_write(e, wb->cs[i]);
        /* at the tail of the list now: the round in progress no longer
         * covers them, so it must not seal; the next round covers all */
        e->wb_round = 0;
        /* the next write-back goes synchronously (with backoff), also when
         * this failure was met by a wait other than the write-back's own */
        e->wb_failed = 1;
        if (store_failed && jd_store_reconnect(wb->st, errstr, sizeof errstr) != 0)
            jd_warn(MOD, "redis reconnect (write-back): %s", errstr);
    }
    wb->n = 0;
    return rc;
}

int jd_engine_wb_wait(struct jd_engine *e)
{
    struct jd_wb *wb = e->wb;
    if (!wb || !jd_worker_busy(wb->worker))
        return 0;
    jd_worker_wait(wb->worker);
    return finish(e);
}

void jd_engine_wb_trim(struct jd_engine *e)
{
    struct jd_wb *wb = e->wb;
    if (!wb || jd_worker_busy(wb->worker))
        return;
    jd_store_trim(wb->st);
    free(wb->cs);
    wb->cs = NULL;
    wb->cap = 0;
}

int jd_engine_wb_busy(const struct jd_engine *e)
{
    return e->wb && jd_worker_busy(e->wb->worker);
}

void jd_engine_hold(struct jd_engine *e, struct jd_customer *c)
{
    struct jd_part *p = jd_engine_part_by_source(e, c->partition);
    if (c->held || !p || !p->assigned || !p->head)
        return;
    if (e->nholds == e->capholds) {
        e->capholds = e->capholds ? e->capholds * 2 : 64;
        e->holds = jd_xrealloc(e->holds, e->capholds * sizeof *e->holds);
    }
    e->holds[e->nholds++] = (struct jd_hold){c, p->head, p->source, p->gen};
    p->head->outstanding++;
    c->held = 1;
}

/* Released holds stay in place (c NULL) until every one before them is
 * released too: customers are produced in the order they were held, so the
 * search for one starts where the live holds begin and finds it at once
 * (a swap with the last made a tick of n urgent customers cost n*n/2). */
static void release(struct jd_engine *e, size_t i)
{
    e->holds[i].c = NULL;
    while (e->hold_first < e->nholds && !e->holds[e->hold_first].c)
        e->hold_first++;
    if (e->hold_first == e->nholds)
        e->hold_first = e->nholds = 0;
}

int jd_engine_produce_held(struct jd_engine *e, struct jd_customer *c)
{
    if (!c->held)
        return 0;
    c->held = 0;
    for (size_t i = e->hold_first; i < e->nholds; i++) {
        struct jd_hold h = e->holds[i];
        if (h.c != c)
            continue;
        release(e, i);
        struct jd_part *p = jd_engine_part_by_source(e, h.source);
        if (!p || p->gen != h.gen || !p->assigned) {
            jd_engine_produce_customer(e, c); /* released meanwhile */
            return 1;
        }
        jd_engine_produce_pending(e, c, h.ck);
        h.ck->outstanding--;
        jd_engine_ckpt_advance(e, p);
        return 1;
    }
    return 0;
}

void jd_engine_holds_drop(struct jd_engine *e, int32_t source)
{
    for (size_t i = e->hold_first; i < e->nholds; i++) {
        if (e->holds[i].c && e->holds[i].source == source) {
            e->holds[i].c->held = 0;
            release(e, i);
        }
    }
}

static void take(struct jd_wb *wb, struct jd_customer *c)
{
    c->writing = 1; /* pinned in the cache until the write is finished */
    wb->cs[wb->n++] = c;
}

/* Takes the urgent customers and the first k of the write-back list into
 * the write and encodes it. */
static void build(struct jd_engine *e, size_t k, int seal)
{
    struct jd_wb *wb = e->wb;
    assert(!jd_worker_busy(wb->worker)); /* (none on its way) */
    /* the urgent customers, then the first k queued ones (those urgent
     * too are in already: one write each); a change from now on queues a
     * customer again (at the tail) */
    if (k > e->ndirty)
        k = e->ndirty;
    if (wb->cap < e->nurgent + k) {
        wb->cap = e->nurgent + k;
        wb->cs = jd_xrealloc(wb->cs, wb->cap * sizeof *wb->cs);
    }
    wb->n = 0;
    for (size_t i = 0; i < e->nurgent; i++) {
        jd_engine_hold(e, e->urgent[i]);
        take(wb, e->urgent[i]);
    }
    for (size_t i = 0; i < k; i++) {
        struct jd_customer *c = e->dirty[i];
        c->queued = 0;
        if (!c->urgent)
            take(wb, c);
    }
    for (size_t i = 0; i < e->nurgent; i++)
        e->urgent[i]->urgent = 0;
    e->nurgent = 0;
    memmove(e->dirty, e->dirty + k, (e->ndirty - k) * sizeof *e->dirty);
    e->ndirty -= k;
    wb->seal = seal;
    wb->t0 = jd_monotonic_ns();
    wb->stats = jd_insights_flying(e->insights);
    jd_store_flush_build(wb->st, e->rs, wb->cs, wb->n);
}

int jd_engine_wb_submit(struct jd_engine *e, size_t k, int seal)
{
    build(e, k, seal);
    jd_worker_submit(e->wb->worker);
    return 0;
}

int jd_engine_wb_write_now(struct jd_engine *e)
{
    struct jd_wb *wb = e->wb;
    build(e, 0, 0);
    wb_run(wb); /* (the worker is idle: its connection and the stats are ours) */
    return finish(e);
}
