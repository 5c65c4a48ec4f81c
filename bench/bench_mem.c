/*
 * bench_mem — heap bytes per cached customer with the shipped rules
 * (config/journeyd.conf, or argv[1]) and the event stream of
 * `journey-loadgen --profile bench` (argv[2] customers, 10 events each).
 *
 * Each event goes the engine's way (engine_batch.c): cache lookup or
 * jd_customer_new + jd_cache_put, duplicate guard, apply_core, the policy's
 * observation, jd_rules_on_event, then per fired trigger the policy decision
 * and an outbox entry, which the next "flush" (every 5,000 events, like
 * processing.batch_max_events) marks stored and an acknowledgement removes,
 * as store.c and the producer's delivery report do. Redis and Kafka are not
 * involved. The customers' memory comes from a pool (cmem.h), as in an
 * engine: the figure is the pool's mappings plus the heap's growth
 * (mallinfo2), which is what journeyd's RSS grows by per cached customer. A
 * breakdown by part follows (the slots' sizes, jd_cmem_size), then the
 * pool's mapped and live bytes.
 *
 *   ./build/bench/bench_mem [config/journeyd.conf [customers]]
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/config.h"
#include "journeyd/loadgen.h"
#include "journeyd/policy.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"
#include "journeyd/store.h"

#define FLUSH_EVERY 5000

static struct jd_customer **all;
static size_t nall, capall;

/* What a chunk of p costs: its slot in the pool, or malloc's chunk. */
static size_t chunk(const void *p)
{
    return jd_cmem_size(p);
}
/* What a malloc'd outbox array (acked ids, history lines) costs. */
static size_t mchunk(const void *p)
{
    return p ? malloc_usable_size((void *)p) + 8 : 0;
}

static void flush(void)
{
    for (size_t i = 0; i < nall; i++) {
        struct jd_customer *c = all[i];
        /* store.c's flushed(), then the delivery report of each entry */
        jd_customer_clear_acked(c);
        for (size_t k = 0; k < c->nhistory; k++)
            free(c->history[k]);
        c->nhistory = 0;
        for (size_t k = 0; k < c->npending; k++) {
            c->pending[k].stored = 1;
            free(c->pending[k].history);
            c->pending[k].history = NULL;
        }
        while (c->npending)
            jd_customer_ack(c, c->pending[0].trigger_id);
        c->dirty = 0;
    }
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "config/journeyd.conf";
    uint64_t ncust = argc > 2 ? strtoull(argv[2], NULL, 10) : 100000;
    struct jd_errors errs;
    jd_errors_init(&errs);
    struct jd_config *cfg = jd_config_load(path, &errs);
    struct jd_ruleset *rs = NULL;
    if (!cfg || jd_rules_compile(&cfg->rules, &rs, &errs) != 0) {
        jd_errors_print(&errs, stderr);
        return 1;
    }
    char err[256];
    struct jd_policy *pol = jd_policy_new(cfg, err, sizeof err);
    if (!pol) {
        fprintf(stderr, "policy: %s\n", err);
        return 1;
    }
    struct jd_loadgen_opts o;
    jd_loadgen_opts_default(&o, JD_LOADGEN_BENCH);
    o.customers = ncust;
    o.events = ncust * 10;
    o.seed = 1; /* bench/run.sh's SEED */
    struct jd_loadgen *g = jd_loadgen_new(&o, err, sizeof err);
    if (!g) {
        fprintf(stderr, "loadgen: %s\n", err);
        return 1;
    }

    struct jd_cmem *pool = jd_cmem_new(); /* the engine's (engine.c) */
    jd_cmem_use(pool);
    struct mallinfo2 m0 = mallinfo2();
    struct jd_cache *cache = jd_cache_new(0);
    struct jd_event ev;
    struct jd_eval_result res;
    uint64_t nev = 0, nfired = 0;
    while (jd_loadgen_next(g, &ev)) {
        size_t idlen = strlen(ev.customer_id);
        struct jd_customer *c = jd_cache_get(cache, ev.customer_id, idlen);
        if (!c) {
            c = jd_customer_new(ev.customer_id, idlen, 0, rs);
            jd_cache_put(cache, c);
            if (nall == capall) {
                capall = capall ? capall * 2 : 1024;
                all = realloc(all, capall * sizeof *all);
            }
            all[nall++] = c;
        }
        int64_t now = ev.occurred_at;
        if (!jd_customer_seen_event(c, ev.event_id)) {
            jd_customer_apply_core(c, &ev);
            jd_policy_observe_event(pol, c, &ev);
            jd_rules_on_event(rs, c, &ev, now, &res);
            for (size_t i = 0; i < res.nfired; i++) {
                struct jd_policy_decision d;
                if (jd_policy_decide(pol, rs, c, res.fired[i].trigger, now, &d) != JD_POLICY_ALLOW)
                    continue;
                struct jd_pending_trigger *pt = jd_customer_add_pending(c);
                snprintf(pt->trigger_id, sizeof pt->trigger_id, "%032llx",
                         (unsigned long long)++nfired);
                jd_pending_set_value(pt, res.fired[i].reason, 120);
                pt->history = jd_strdup(res.fired[i].reason);
            }
            int64_t nc = jd_rules_next_change(rs, c, now);
            c->next_timer = nc == INT64_MAX ? 0 : nc;
        }
        if (++nev % FLUSH_EVERY == 0)
            flush();
    }
    flush();
    struct mallinfo2 m1 = mallinfo2();
    size_t n = jd_cache_size(cache);
    struct jd_cmem_stats ps;
    jd_cmem_stats(pool, &ps);
    /* the pool's mappings are the customers' memory, beside the heap's */
    double heap =
        (double)(m1.uordblks - m0.uordblks) + (double)(m1.hblkhd - m0.hblkhd) + (double)ps.mapped;

    /* where it goes */
    size_t s_struct = 0, s_counts = 0, s_aggs = 0, s_rings = 0, s_strs = 0, s_trig = 0,
           s_policy = 0, s_outbox = 0, nrings = 0;
    for (size_t i = 0; i < nall; i++) {
        const struct jd_customer *c = all[i];
        s_struct += chunk(c);
        s_counts += chunk(c->counts);
        s_aggs += chunk(c->aggs);
        for (size_t k = 0; k < c->naggs; k++) {
            if (!jd_rules_agg_nbuckets(rs, k)) {
                s_strs += chunk(c->aggs[k].s);
            } else if (c->aggs[k].ring) { /* the same pointer as s */
                s_rings += chunk(c->aggs[k].ring);
                nrings++;
            }
        }
        s_trig += chunk(c->trigger_sends); /* last_fired, fired_count: in aggs */
        /* c->tz: shared (a pool) */
        s_policy += chunk(c->goals) + chunk(c->kind_sends);
        for (size_t k = 0; c->kind_sends && k < JD_KIND_COUNT; k++)
            s_policy += chunk(c->kind_sends[k].t);
        s_outbox += chunk(c->pending) + mchunk(c->acked) + mchunk(c->history);
        for (size_t k = 0; k < c->npending; k++)
            s_outbox += chunk(c->pending[k].value.data) + chunk(c->pending[k].topic);
    }
    double d = (double)n;
    printf("bench_mem: %s: %zu customers, %llu events, %llu triggers: heap %.0f bytes/customer "
           "(mallinfo2)\n",
           path, n, (unsigned long long)nev, (unsigned long long)nfired, heap / d);
    printf("  struct+id %.0f (sizeof %zu), counts %.0f, agg slots+trigger arrays %.0f, rings %.0f "
           "(%.2f/customer), agg strings %.0f, trigger_sends %.0f, policy %.0f, outbox %.0f, "
           "cache rest %.0f\n",
           s_struct / d, sizeof(struct jd_customer), s_counts / d, s_aggs / d, s_rings / d,
           (double)nrings / d, s_strs / d, s_trig / d, s_policy / d, s_outbox / d,
           heap / d - (double)(s_struct + s_counts + s_aggs + s_rings + s_strs + s_trig + s_policy +
                               s_outbox) /
                          d);

    printf("  pool: %.0f bytes mapped, %.0f in live slots per customer\n", (double)ps.mapped / d,
           (double)ps.live / d);
    jd_cache_destroy(cache);
    jd_cmem_destroy(pool);
    free(all);
    jd_loadgen_destroy(g);
    jd_policy_destroy(pol);
    jd_rules_destroy(rs);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
    return 0;
}
