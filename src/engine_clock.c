/*
 * engine_clock — each partition's event clock (its watermark: the largest
 * occurred_at seen) kept in Redis, so that a restart or a rebalance resumes
 * it where the stored state stands instead of from the first replayed
 * event (docs/time.md). Under the wall clock nothing here runs.
 *
 * Why replays stay exact: an event is evaluated at the watermark of
 * everything before it in its partition. A checkpoint records the
 * watermark when its batch closes (wm); the write that seals checkpoints
 * (every event they cover is in the stored state) is followed, before the
 * seal, by the watermark of the newest of them when it moved, with its
 * offset S. An offset is stored for commit only once sealed, so the stored
 * watermark is always that of a point between the committed offset C and
 * what the stored state covers: S itself is at or past C, or, when later
 * batches did not move the watermark, before C with the same watermark as
 * at C. A new owner replays from C: the events already in the state are
 * skipped (they still move the watermark), and every other event is
 * evaluated at max(stored watermark, replayed occurred_at up to it) — the
 * same watermark it had, or would have had, without the restart. A crash
 * between the customers' write and the watermark's leaves the previous
 * one, which C has not passed either.
 * A watermark moved by processing.idle_advance (the wall clock,
 * engine_timers.c) goes with the partition's next checkpoint, or, once
 * every event of the partition is written and its offset stored, from the
 * timer tick as of the partition's position (jd_engine_clock_save_idle).
 * The watermark is written only when it moved, with the write-back that
 * seals (one small write per round, per persist when synchronous).
 */
#include <inttypes.h>
#include <stdlib.h>

#include "engine_int.h"
#include "journeyd/log.h"

#define MOD "clock"

static int event_clock(const struct jd_engine *e)
{
    return e->cfg->clock == JD_CLOCK_EVENT;
}

/* A key of ours holding something else (rc 1 of the store's calls):
 * counted each time, logged at most once a minute per kind of access
 * (*last_ns: an idle partition tries its write every second). */
static void foreign_key(struct jd_engine *e, int64_t *last_ns, const char *errstr,
                        const char *consequence)
{
    int64_t now = jd_monotonic_ns();
    if (!*last_ns || now - *last_ns >= 60 * 1000000000LL) {
        *last_ns = now;
        jd_error(MOD, "%s: %s (logged at most once a minute)", errstr, consequence);
    }
    if (e->metrics)
        jd_metrics_add(e->metrics, JD_C_REDIS_ERRORS, 1);
}

static struct jd_watermark *wm_add(struct jd_engine *e, size_t n)
{
    if (n == e->wmcap) {
        e->wmcap = e->wmcap ? e->wmcap * 2 : 64;
        e->wmv = jd_xrealloc(e->wmv, e->wmcap * sizeof *e->wmv);
    }
    return &e->wmv[n];
}

void jd_engine_clock_assigned(struct jd_engine *e, struct jd_part *p)
{
    p->wm_saved = -1;
    p->wm_restore = event_clock(e);
    e->clock_restore |= p->wm_restore;
}

/* A failed attempt on st: 0 to try again, -1 not (`retry` 0 or less,
 * stopping or fenced). On the engine's connection it goes as any Redis
 * failure of the engine (backoff, reconnect, not ready meanwhile), unless
 * the write was optional (retry < 0: only logged); the write-back's
 * connection is the write-back's to reconnect (engine_wb.c). */
static int failed(struct jd_engine *e, struct jd_store *st, int retry, const char *what,
                  const char *errstr)
{
    if (st != e->store || retry < 0) {
        jd_warn(MOD, "redis %s failed: %s; written again later", what, errstr);
        if (e->metrics)
            jd_metrics_add(e->metrics, JD_C_REDIS_ERRORS, 1);
        return -1;
    }
    jd_engine_redis_failed(e, what, errstr);
    return retry <= 0 || (e->stop && *e->stop) || jd_engine_fenced(e) ? -1 : 0;
}

/* The end of p's log as of the last fetch; -1 not known yet. */
static int64_t log_end(struct jd_engine *e, const struct jd_part *p)
{
    int64_t lo = -1, hi = -1;
    if (!e->consumer ||
        rd_kafka_get_watermark_offsets(e->consumer, p->topic, p->partition, &lo, &hi) != 0)
        return -1;
    return hi < 0 ? -1 : hi;
}

/* The stored watermark of p, read at `offset`, is p's (not one left by an
 * earlier incarnation of the topic, whose offsets may have started over). */
static int plausible(struct jd_engine *e, const struct jd_part *p, int64_t offset)
{
    int64_t hi = log_end(e, p);
    if (hi < 0 || offset <= hi)
        return 1; /* (the end of the log not known: nothing to compare) */
    jd_warn(MOD,
            "%s/%" PRId32 ": stored event clock at offset %" PRId64 " is past the end of the "
            "log (%" PRId64 "): ignored, the clock starts from the partition's events",
            p->topic, p->partition, offset, hi);
    return 0;
}

int jd_engine_clock_restore(struct jd_engine *e, int retry)
{
    if (!e->clock_restore)
        return 0;
    /* a partition waits for its first fetch, which tells the end of its log
     * (plausible), unless the batch has its events */
    for (size_t i = 0; retry && i < e->nmsgs; i++)
        if (e->mpart[i] && e->mpart[i]->wm_restore == 1)
            e->mpart[i]->wm_restore = 2; /* (now or never) */
    size_t n = 0, later = 0;
    for (size_t t = 0; t < e->cfg->ninput_topics; t++)
        for (int32_t i = 0; i < e->nparts[t]; i++) {
            struct jd_part *p = &e->parts[t][i];
            if (!p->topic || !p->assigned || !p->wm_restore)
                continue;
            if (p->wm_restore == 2 || log_end(e, p) >= 0)
                wm_add(e, n++)->source = p->source;
            else
                later++;
        }
    char errstr[512];
    int rc = 0;
    while (n > 0 && (rc = jd_store_watermarks_load(e->store, e->wmv, n, errstr, sizeof errstr)) < 0)
        if (failed(e, e->store, retry, "watermark read", errstr) != 0)
            return -1;
    if (n > 0)
        jd_engine_redis_succeeded(e);
    if (rc == 1)
        foreign_key(e, &e->wm_read_logged, errstr,
                    "ignored, so that partition's event clock starts from its events");
    for (size_t k = 0; k < n; k++) {
        struct jd_part *p = jd_engine_part_by_source(e, e->wmv[k].source);
        if (!p)
            continue;
        p->wm_restore = 0;
        int64_t wm = e->wmv[k].watermark;
        if (wm <= 0 || !plausible(e, p, e->wmv[k].offset))
            continue;
        p->wm_saved = wm;
        if (wm > p->watermark)
            p->watermark = wm;
        jd_info(MOD,
                "%s/%" PRId32 ": event clock resumes at %" PRId64 " (stored at offset %" PRId64 ")",
                p->topic, p->partition, wm, e->wmv[k].offset);
    }
    e->clock_restore = later > 0;
    return 0;
}

/* Writes e->wmv[0..n) on st (see jd_engine_clock_save). */
static int save(struct jd_engine *e, struct jd_store *st, size_t n, int retry)
{
    if (n == 0)
        return 0;
    char errstr[512];
    int rc;
    do {
        if (jd_engine_fenced(e)) /* not ours any more: the new owner's clock */
            return -1;
        rc = jd_store_watermarks_save(st, e->wmv, n, errstr, sizeof errstr);
    } while (rc < 0 && failed(e, st, retry, "watermark write", errstr) == 0);
    if (rc < 0)
        return -1;
    if (st == e->store)
        jd_engine_redis_succeeded(e);
    if (rc == 1)
        foreign_key(e, &e->wm_write_logged, errstr,
                    "that partition's event clock is not kept for a restart until the key is "
                    "removed");
    for (size_t k = 0; k < n; k++) {
        struct jd_part *p = jd_engine_part_by_source(e, e->wmv[k].source);
        if (p)
            p->wm_saved = e->wmv[k].watermark;
    }
    return 0;
}

int jd_engine_clock_save(struct jd_engine *e, struct jd_store *st, int marked_only, int retry)
{
    if (!event_clock(e))
        return 0;
    size_t n = 0;
    for (size_t t = 0; t < e->cfg->ninput_topics; t++)
        for (int32_t i = 0; i < e->nparts[t]; i++) {
            struct jd_part *p = &e->parts[t][i];
            if (!p->topic || !p->assigned)
                continue;
            const struct jd_ckpt *last = NULL;
            for (const struct jd_ckpt *ck = p->head; ck; ck = ck->next)
                if (ck->closed && !ck->sealed && (ck->sealing || !marked_only))
                    last = ck;
            if (!last || last->wm <= 0 || last->wm <= p->wm_saved)
                continue;
            *wm_add(e, n++) = (struct jd_watermark){
                .source = p->source, .offset = last->next_offset, .watermark = last->wm};
        }
    return save(e, st, n, retry);
}

/* How far an idle partition's clock moves before it is written again. */
#define IDLE_SAVE_MS 1000

int jd_engine_clock_save_idle(struct jd_engine *e)
{
    if (!event_clock(e) || e->cfg->idle_advance_ms <= 0)
        return 0;
    size_t n = 0;
    for (size_t t = 0; t < e->cfg->ninput_topics; t++)
        for (int32_t i = 0; i < e->nparts[t]; i++) {
            struct jd_part *p = &e->parts[t][i];
            if (!p->topic || !p->assigned || p->wm_restore || p->consumed < 0 ||
                p->watermark < p->wm_saved + IDLE_SAVE_MS)
                continue;
            /* every event processed is written (every checkpoint of a
             * batch sealed; one that only holds triggers produced since,
             * by timers, says nothing of the state): the state covers
             * `consumed` */
            const struct jd_ckpt *ck = p->head;
            while (ck && (ck->sealed || ck->events == 0))
                ck = ck->next;
            if (ck)
                continue;
            *wm_add(e, n++) = (struct jd_watermark){
                .source = p->source, .offset = p->consumed, .watermark = p->watermark};
        }
    return save(e, e->store, n, -1);
}
