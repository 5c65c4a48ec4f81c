/*
 * engine_flush — when changed customers are written back to Redis, and when
 * that lets offsets move.
 *
 * Two lists of customers, both without duplicates (flags in jd_customer):
 *   e->dirty  (c->queued): changed since the last full write-back; written
 *             every processing.flush_interval (and on revocation, shutdown),
 *             so a customer with many events in an interval is written once;
 *   e->urgent (c->urgent): customers with a new outbox entry (or an outbox
 *             loaded after a crash): written at the end of their batch, state
 *             and outbox in one MULTI/EXEC, then produced, so a trigger waits
 *             for one Redis round trip, not for the interval (with the
 *             write-back thread, the round trip is on its way while the
 *             next batch is applied: engine_wb.c, persist_async below).
 *
 * Why the offsets stay exact (SPEC §3): a batch's checkpoints are closed at
 * the end of the batch (engine_out.c) but sealed only by the next full
 * write-back, which writes every customer the batch changed; an offset is
 * stored only past sealed checkpoints whose produced messages are all
 * acknowledged. A crash before that write-back replays the batch from the
 * last committed offset; customers written early (urgent) carry their
 * applied-offset watermark in the same write, so their events are skipped on
 * replay and their outbox is re-sent with the same ids. An acknowledgement
 * only queues the outbox entry's removal for the next write-back: losing it
 * in a crash re-sends a trigger that was delivered (same id), never loses one.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "journeyd/log.h"

#define MOD "engine"

/* Shortest interval between the commits made here (asynchronous). */
#define COMMIT_INTERVAL_NS (100 * 1000000LL)

void jd_engine_push_urgent(struct jd_engine *e, struct jd_customer *c)
{
    if (c->urgent)
        return;
    c->urgent = 1;
    if (e->nurgent == e->capurgent) {
        e->capurgent = e->capurgent ? e->capurgent * 2 : 256;
        e->urgent = jd_xrealloc(e->urgent, e->capurgent * sizeof *e->urgent);
    }
    e->urgent[e->nurgent++] = c;
}

void jd_engine_produce_customer(struct jd_engine *e, struct jd_customer *c)
{
    if (jd_engine_produce_held(e, c))
        return;
    if (c->npending == 0)
        return;
    struct jd_part *p = jd_engine_part_by_source(e, c->partition);
    jd_engine_produce_pending(e, c, p && p->assigned ? jd_engine_ckpt_open(p) : NULL);
}

int jd_engine_flush_urgent(struct jd_engine *e, jd_flag *stop)
{
    if (e->nurgent == 0)
        return 0;
    /* never two writes of one customer at once (engine_wb.c); a failed
     * write-back is back on the write-back list */
    (void)jd_engine_wb_wait(e);
    /* their triggers go into the oldest checkpoint of their partition: here
     * (a timer tick, an idle turn) the batch that gave them may be closed
     * already, and a checkpoint opened after it could be stored before
     * they are acknowledged */
    for (size_t i = 0; i < e->nurgent; i++)
        jd_engine_hold(e, e->urgent[i]);
    /* they stay in the write-back list: with nothing left to write there,
     * the next write-back skips them */
    if (jd_engine_flush_list(e, e->urgent, e->nurgent, stop) != 0)
        return -1;
    for (size_t i = 0; i < e->nurgent; i++) {
        struct jd_customer *c = e->urgent[i];
        c->urgent = 0;
        jd_engine_produce_customer(e, c);
    }
    e->nurgent = 0;
    return 0;
}

int jd_engine_persist(struct jd_engine *e, jd_flag *stop)
{
    (void)jd_engine_wb_wait(e); /* what failed is back on the list */
    jd_engine_apply_acks(e);
    /* anything urgent first: it is produced with its batch's checkpoint */
    size_t n = 0;
    if (jd_engine_flush_urgent(e, stop) != 0)
        goto failed;
    n = e->ndirty;
    if (jd_engine_flush_list(e, e->dirty, n, stop) != 0)
        goto failed;
    for (size_t i = 0; i < n; i++)
        e->dirty[i]->queued = 0;
    /* (acknowledgements served while producing are only queued: the list
     * does not change under this loop) */
    for (size_t i = 0; i < n; i++)
        jd_engine_produce_customer(e, e->dirty[i]);
    if (e->ndirty > n) /* (e->dirty may be NULL when it never held anyone) */
        memmove(e->dirty, e->dirty + n, (e->ndirty - n) * sizeof *e->dirty);
    e->ndirty -= n;
    e->last_persist_ns = jd_monotonic_ns();
    e->wb_round = 0; /* everything is written: a round in progress is over */
    e->wb_failed = 0;
    e->wb_skips = 0;
    e->wb_behind = 0;
    /* everything the closed checkpoints cover is written: their
     * watermark, then the seal (engine_clock.c) */
    if (jd_engine_clock_save(e, e->store, 0, 1) != 0)
        goto failed;
    jd_engine_ckpt_seal_closed(e);
    return 0;

failed:
    if (!jd_engine_fenced(e))
        return -1;
    jd_engine_drop_dirty(e); /* not ours any more: the new owner replays it */
    e->wb_round = 0;
    return 0;
}

/* The end of a batch with the write-back thread (engine_wb.c): one write
 * on its way holding the batch's stats, the urgent customers and, when a
 * write-back is due, the next slice of its round. The urgent
 * customers' triggers are produced when that write is finished: at the
 * next turn of the main loop, which does not wait for the write meanwhile
 * (it applies the next batch). Under light load (small batches) the
 * urgent customers go alone and are waited for at once: a trigger waits
 * for one round trip, not for a turn. */
#define SLICE_MIN 256
#define WB_SKIP_MAX 2
/* Under light load a slice is at least SLICE_LIGHT customers (SLICE_MIN once
 * the round has taken half the flush interval, so that rounds keep pace):
 * a trigger decided while a slice is on its way waits for it, so smaller
 * slices spread a round over more turns and keep each wait short
 * (docs/performance.md, ninth pass: p99 at 10,000 events/s 8.4 -> 6.5 ms). */
#define SLICE_LIGHT 64

static int persist_async(struct jd_engine *e, int due, int whole, int idle, jd_flag *stop)
{
    /* Under load (the next batch taken ahead already) a write goes every
     * WB_SKIP_MAX + 1 turns: the turns in between neither wait for
     * the write on its way nor send one; their urgent customers and slices
     * go with the next write, as if the turns had been one longer turn (the
     * slice grows by each of their batches, so that rounds keep pace with
     * the input). Fewer, larger writes: Redis pays its cost per write (the
     * stats script, a ZADD per partition set, the transaction) a third as
     * often, and the engine waits less for it; a trigger under load waits
     * up to WB_SKIP_MAX batches more (docs/performance.md, fifth pass).
     * (Skipping on while Redis still runs the write was tried: larger
     * writes, more heap left behind, no clear gain; sixth pass.) */
    if (e->prepared && e->wb_skips < WB_SKIP_MAX && jd_engine_wb_busy(e)) {
        e->wb_skips++;
        e->wb_behind += e->last_batch > SLICE_MIN ? e->last_batch : SLICE_MIN;
        return 0;
    }
    size_t behind = e->wb_behind;
    e->wb_skips = 0;
    e->wb_behind = 0;
    if (jd_engine_wb_wait(e) != 0 || e->wb_failed)
        return jd_engine_persist(e, stop); /* retries synchronously */
    /* the acknowledgements' removals join the write-back list first, so
     * that they go in its slices: an idle engine with only acknowledgements
     * left wrote them synchronously before, and an event arriving meanwhile
     * waited for that write */
    jd_engine_apply_acks(e);
    if (!due && e->nurgent == 0)
        return 0;
    if (due && e->ndirty == 0 && e->wb_round == 0 && e->nurgent == 0)
        return jd_engine_persist(e, stop); /* nothing to send: the seals */
    /* (fenced first: a member that lost its partitions writes no stats);
     * the stats go with the write, ahead of its customers (engine_wb.c) */
    if (jd_engine_fenced(e) || jd_engine_stats_build(e, stop) != 0) {
        if (!jd_engine_fenced(e))
            return -1;
        jd_engine_drop_dirty(e); /* not ours any more: the new owner replays it */
        e->wb_round = 0;
        return 0;
    }
    if (e->nurgent > 0 && e->last_batch < SLICE_MIN) {
        /* light load: the triggers first, at once, written from this
         * thread (the write-back thread is idle) */
        if (jd_engine_wb_write_now(e) != 0)
            return jd_engine_persist(e, stop);
    }
    size_t k = 0;
    int seal = 0;
    if (due && (e->ndirty > 0 || e->wb_round > 0)) {
        if (e->wb_round == 0 || whole) {
            /* a round begins: it covers every batch closed so far (whole:
             * what was left of a round in progress, and everything changed
             * since, in one write) */
            jd_engine_ckpt_mark_closed(e);
            e->wb_round = e->ndirty;
            e->last_persist_ns = jd_monotonic_ns();
        }
        /* whole: the end of a backlog, the round in one write */
        size_t least = SLICE_LIGHT;
        if (jd_monotonic_ns() - e->last_persist_ns >= e->cfg->flush_interval_ms * 500000)
            least = SLICE_MIN; /* (a round running late, or flush_interval 0) */
        size_t per = idle ? SLICE_MIN : (e->last_batch > least ? e->last_batch : least);
        k = whole ? e->wb_round : per + behind;
        if (k > e->wb_round)
            k = e->wb_round;
        e->wb_round -= k;
        seal = e->wb_round == 0;
    }
    if (k > 0 || e->nurgent > 0 || jd_insights_flying(e->insights))
        jd_engine_wb_submit(e, k, seal);
    return 0;
}

int jd_engine_persist_due(struct jd_engine *e, int idle, jd_flag *stop)
{
    int64_t interval = e->cfg->naive ? 0 : e->cfg->flush_interval_ms;
    int64_t now = jd_monotonic_ns();
    /* idle (engine.c, idle_in): nothing is gained by waiting, and the
     * offsets of the last events move at once (closed_unmarked: a batch
     * closed after the round on its way began, its customers all in that
     * round, is sealed only by a later write) */
    int due = now - e->last_persist_ns >= interval * 1000000 || e->wb_round > 0 ||
              (idle && (e->ndirty > 0 || e->nacks > 0 || e->closed_unmarked));
    int backlog_end = e->backlog_end;
    e->backlog_end = 0;
    if (e->wb && backlog_end) {
        /* a backlog consumed to its end: every changed customer in one
         * write on the write-back thread, not a synchronous one, so that
         * traffic resuming at once waits only for the encoding (a new
         * trigger, also for that write: one write of a customer at a time) */
        if (persist_async(e, 1, 1, 0, stop) != 0)
            return -1;
    } else if (e->wb) {
        /* idle too: what is left goes in slices of SLICE_MIN, one per turn
         * (a turn every ~1 ms while nothing comes and a slice is on its
         * way), so that an event arriving meanwhile waits for one slice,
         * not for a write of everything (18-21 ms at the end of the
         * benchmark's latency run; fifteenth pass) */
        if (persist_async(e, due, 0, idle, stop) != 0)
            return -1;
    } else if (due || e->nurgent > 0) {
        if (jd_engine_persist(e, stop) != 0)
            return -1;
    }
    /* Stored offsets are committed by librdkafka every auto.commit.interval.ms;
     * committing as soon as some moved keeps the committed position (what a
     * restarted or new group member starts from) close behind the work. */
    if (e->offsets_stored && now - e->last_commit_ns >= COMMIT_INTERVAL_NS) {
        rd_kafka_commit(e->consumer, NULL, 1);
        e->offsets_stored = 0;
        e->last_commit_ns = now;
    }
    return 0;
}
