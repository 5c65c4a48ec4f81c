/*
 * engine_load — the next batch's customers are loaded while the engine
 * finishes the last one.
 *
 * Under load, once a batch is applied, the main loop takes the messages
 * that are already fetched (no waiting) as the next batch, creates the
 * customers it touches that are not cached, and hands them to a thread of
 * its own with a Redis connection of its own; the engine's thread then
 * writes back and produces the batch it just applied (engine_flush.c) while
 * Redis answers the loads and the thread decodes them. The next batch
 * starts by waiting for that load. Measured before this (docs/performance.md):
 * the load round trip was 7-9 % of the engine thread's time on the
 * benchmark, spent waiting.
 *
 * What keeps it exact:
 * - the customers handed over are new in the cache and on no list, and
 *   nothing between the hand-over and the wait touches them: the consumer
 *   is not polled (so no rebalance drops them), rules are not reloaded (the
 *   main loop takes no batch ahead while a reload or a stop is asked), the
 *   write-back and the timer tick work on other customers, and the cache
 *   evicts only at the end of a batch;
 * - jd_store_load leaves every customer as it was when it fails: the wait
 *   then falls back to the engine's own load, which retries with backoff
 *   and reports Redis as unavailable, as before;
 * - jd_engine_process_batch waits for the load before anything else, and
 *   shutdown and a revocation wait for it first too (jd_engine_settle_ahead),
 *   also when they do not finish the batch (abandoned, lost): they drop
 *   customers;
 * - an acknowledgement from an earlier ownership of a partition is dropped
 *   (jd_engine_apply_acks): it could name a customer reloaded since.
 * On a Redis Cluster and in processing.naive mode loads stay synchronous
 * (like the write-back: engine_wb.c).
 */
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "journeyd/log.h"
#include "journeyd/redis_conn.h"
#include "journeyd/worker.h"

#define MOD "engine"

struct jd_loader {
    struct jd_store *st;  /* its own connection; the worker's between submit and wait */
    struct jd_cmem *cmem; /* the engine's: the loaded customers' memory */
    struct jd_worker *worker;
    const struct jd_ruleset *rs;
    int rc; /* jd_store_load's result */
    char errstr[512];
    struct jd_customer **cs; /* swapped with e->load at submit and wait */
    size_t n, cap;
    int64_t t0;
};

static void loader_run(void *arg)
{
    struct jd_loader *ld = arg;
    jd_cmem_use(ld->cmem);
    ld->rc = jd_store_load(ld->st, ld->rs, ld->cs, ld->n, ld->errstr, sizeof ld->errstr);
}

int jd_engine_loader_start(struct jd_engine *e, char *errstr, size_t errsize)
{
    if (e->cfg->naive || jd_redis_is_cluster(jd_store_redis(e->store)))
        return 0;
    struct jd_loader *ld = jd_xcalloc(1, sizeof *ld);
    if (!(ld->st = jd_store_new(e->cfg, errstr, errsize))) {
        free(ld);
        return -1;
    }
    ld->cmem = e->cmem;
    if (!(ld->worker = jd_worker_start("jd-loader", loader_run, ld))) {
        snprintf(errstr, errsize, "cannot start the loader thread");
        jd_store_destroy(ld->st);
        free(ld);
        return -1;
    }
    e->loader = ld;
    return 0;
}

void jd_engine_loader_destroy(struct jd_engine *e)
{
    struct jd_loader *ld = e->loader;
    if (!ld)
        return;
    jd_worker_stop(ld->worker); /* after the load on its way */
    jd_store_destroy(ld->st);
    free(ld->cs);
    free(ld);
    e->loader = NULL;
}

void jd_engine_loader_trim(struct jd_engine *e)
{
    struct jd_loader *ld = e->loader;
    if (!ld || jd_worker_busy(ld->worker))
        return;
    /* its pipeline grew to the largest load: ~2 MB after a benchmark drain */
    jd_store_trim(ld->st);
}

/* Swaps e->load (and its capacity) with the loader's list. */
static void swap_lists(struct jd_engine *e, struct jd_loader *ld)
{
    struct jd_customer **cs = ld->cs;
    size_t n = ld->n, cap = ld->cap;
    ld->cs = e->load;
    ld->n = e->nload;
    ld->cap = e->capload;
    e->load = cs;
    e->nload = n;
    e->capload = cap;
}

void jd_engine_loader_submit(struct jd_engine *e)
{
    struct jd_loader *ld = e->loader;
    if (e->nload == 0)
        return; /* every customer of the batch is cached */
    swap_lists(e, ld);
    e->nload = 0;
    ld->rs = e->rs;
    ld->t0 = jd_monotonic_ns();
    jd_worker_submit(ld->worker);
}

int jd_engine_loader_wait(struct jd_engine *e)
{
    struct jd_loader *ld = e->loader;
    if (!ld || !jd_worker_busy(ld->worker))
        return 1;
    jd_worker_wait(ld->worker);
    swap_lists(e, ld); /* the customers are e->load[0..nload) again */
    ld->n = 0;
    if (ld->rc != 0) {
        jd_warn(MOD, "redis load (ahead of the batch) failed: %s; loading again", ld->errstr);
        if (e->metrics)
            jd_metrics_add(e->metrics, JD_C_REDIS_ERRORS, 1);
        if (jd_store_reconnect(ld->st, ld->errstr, sizeof ld->errstr) != 0)
            jd_warn(MOD, "redis reconnect (loader): %s", ld->errstr);
        return -1; /* e->load is untouched: the caller loads it itself */
    }
    if (e->metrics) {
        jd_metrics_observe(e->metrics, JD_H_REDIS_ROUNDTRIP,
                           (double)(jd_monotonic_ns() - ld->t0) / 1e9);
        jd_metrics_add(e->metrics, JD_C_LOADS_AHEAD, 1);
    }
    return 0;
}
