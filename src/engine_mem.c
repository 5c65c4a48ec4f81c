/*
 * engine_mem — gives freed heap memory back to the system.
 *
 * While journeyd catches up, librdkafka's threads hold tens of MB of
 * prefetched messages in their own malloc arenas; once consumed, glibc keeps
 * those pages (freed chunks in the middle of an arena are not returned), so
 * the process's RSS stays ~40 MB above what it uses (docs/performance.md,
 * "Memory"). malloc_trim(0) returns every whole free page of every arena;
 * it takes 3-30 ms on a 100,000-customer heap, so it runs only when the
 * engine has gone idle (nothing consumed for a while, or the end of a
 * backlog reached: engine.c, idle_in) after work, at most
 * every 2 s: never on the hot path of a busy engine, and at most one such
 * pause per 2 s for the first event after an idle spell. malloc_trim locks
 * every arena of the process, so with other engines (processing.engines)
 * it waits until none of them is busy either. The Redis
 * pipelines' buffers (the engine's, the write-back's and the loader's), grown
 * to the largest write-back or load, and the list of customers to write go
 * back too, and so do the pages of the batch's per-message arrays (sized
 * processing.batch_max_events: 1.6 MB at 50,000, resident once a backlog
 * has filled them). The customers themselves are in the engine's pool (cmem.h),
 * apart from this transient memory. Owns nothing.
 *
 * Also here: how many customers the engine's cache keeps. With several
 * engines in the process (processing.engines) each keeps
 * cache_max_customers in proportion to the input partitions it owns among
 * all that the process's engines own (an even split left an engine with
 * fewer partitions room it could not use, while one with more evicted
 * customers it would load again: 3 partitions over 2 engines, say). The
 * share is read after each batch and on each idle turn, and the cache
 * trimmed to it (jd_engine_cache_fit), so it follows rebalances, also
 * those of the other engines; while one goes on the shares may add up to
 * a little more than the maximum, for a batch or two.
 */
#include <malloc.h>

#include "engine_int.h"
#include "journeyd/log.h"

#define MOD "engine"
#define TRIM_EVERY_NS (2 * 1000000000LL)

/* With other engines in the process: whether one of them is working
 * (malloc_trim would stall it). Counts this engine in or out first. */
static int peers_busy(struct jd_engine *e, int idle)
{
    if (!e->peers || !e->peers->busy)
        return 0;
    if (!idle && !e->busy)
        atomic_fetch_add(e->peers->busy, 1);
    else if (idle && e->busy)
        atomic_fetch_sub(e->peers->busy, 1);
    e->busy = !idle;
    return atomic_load(e->peers->busy) > 0;
}

size_t jd_engine_cache_share(const struct jd_engine *e)
{
    size_t total = (size_t)e->cfg->cache_max_customers;
    size_t share = total / (size_t)e->count;
    if (e->peers && e->peers->assigned) {
        int all = atomic_load(e->peers->assigned);
        if (all > 0 && e->assigned_count > 0 && e->assigned_count <= all)
            share = (size_t)((uint64_t)total * (uint64_t)e->assigned_count / (uint64_t)all);
    }
    return share ? share : 1;
}

void jd_engine_cache_fit(struct jd_engine *e)
{
    jd_cache_set_max(e->cache, jd_engine_cache_share(e));
    size_t evicted = jd_cache_evict(e->cache); /* (at once when within it) */
    if (e->metrics) {
        if (evicted)
            jd_metrics_add(e->metrics, JD_C_CACHE_EVICTIONS, evicted);
        jd_metrics_gauge(e->metrics, JD_G_CACHED_CUSTOMERS, (int64_t)jd_cache_size(e->cache));
    }
}

void jd_engine_trim(struct jd_engine *e, int idle)
{
    /* an idle engine keeps to its share too, which a peer's rebalance may
     * have made smaller (not while a batch taken ahead is being loaded:
     * its customers are the loader's) */
    if (idle && !e->prepared && e->nmsgs == 0)
        jd_engine_cache_fit(e);
    int others = peers_busy(e, idle);
    if (!idle) {
        e->trim_work += e->last_batch ? e->last_batch : 1;
        return;
    }
    if (others)
        return; /* (its turn comes once they are idle too) */
    int64_t now = jd_monotonic_ns();
    if ((!e->trim_work && !e->trim_again) ||
        (e->last_trim_ns && now - e->last_trim_ns < TRIM_EVERY_NS))
        return;
    if (jd_engine_wb_busy(e))
        return; /* its buffers are in use: once it is finished (the end of a
                   backlog goes as one write: tens of megabytes) */
    /* After the trim that follows work, one more, TRIM_EVERY_NS later: what
     * was freed meanwhile (librdkafka's threads let go of their last fetch
     * buffers, acknowledgements empty outboxes) stayed resident otherwise.
     * After a benchmark drain, one run in four kept ~6-8 MB in a thread's
     * arena without it, ~4 MB with it. */
    e->trim_again = e->trim_work != 0;
    e->trim_work = 0;
    e->last_trim_ns = now;
    /* the pipelines' buffers grow to the largest write-back (megabytes) */
    jd_store_trim(e->store);
    jd_engine_wb_trim(e);
    jd_engine_loader_trim(e);
    jd_engine_decoder_trim(e);
    if (e->nmsgs == 0) { /* (the per-message arrays: scratch between batches) */
        jd_release_pages(e->msgs, e->maxmsgs * sizeof *e->msgs);
        jd_release_pages(e->mcust, e->maxmsgs * sizeof *e->mcust);
        jd_release_pages(e->mpart, e->maxmsgs * sizeof *e->mpart);
        jd_release_pages(e->mhash, e->maxmsgs * sizeof *e->mhash);
    }
    if (e->ndirty == 0) { /* (grown to the largest write-back's customers) */
        free(e->dirty);
        e->dirty = NULL;
        e->capdirty = 0;
    }
    malloc_trim(0);
    struct jd_cmem_stats ms;
    jd_cmem_stats(e->cmem, &ms);
    jd_debug(MOD, "heap trimmed in %.1f ms; the customers' pool: %zu bytes mapped, %zu live",
             (double)(jd_monotonic_ns() - now) / 1e6, ms.mapped, ms.live);
}
