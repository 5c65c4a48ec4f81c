/*
 * bench_state — ns per jd_customer_encode and jd_customer_decode of the
 * customers built by the shipped rules (config/journeyd.conf, or argv[1])
 * from the event stream of `journey-loadgen --profile bench` (argv[2]
 * customers, 10 events each), the way bench_mem.c drives them (no outbox:
 * only the state string matters here). Every customer is encoded argv[3]
 * times over (rounds of all of them, as a write-back walks many customers),
 * then each encoded value is decoded as many times into a customer of its
 * own, like a load from Redis.
 *
 *   ./build-rel/bench/bench_state [config/journeyd.conf [customers [rounds [decode_rounds]]]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/config.h"
#include "journeyd/loadgen.h"
#include "journeyd/policy.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"
#include "journeyd/store.h"

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "config/journeyd.conf";
    uint64_t ncust = argc > 2 ? strtoull(argv[2], NULL, 10) : 100000;
    int rounds = argc > 3 ? atoi(argv[3]) : 5;
    int dec_rounds = argc > 4 ? atoi(argv[4]) : rounds; /* 0: encode only (for perf) */
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

    struct jd_cache *cache = jd_cache_new(0);
    struct jd_customer **all = NULL;
    size_t nall = 0, capall = 0;
    struct jd_event ev;
    struct jd_eval_result res;
    uint64_t nev = 0;
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
        c->applied_offset = (int64_t)nev++;
        if (jd_customer_seen_event(c, ev.event_id))
            continue;
        jd_customer_apply_core(c, &ev);
        jd_policy_observe_event(pol, c, &ev);
        jd_rules_on_event(rs, c, &ev, now, &res);
        for (size_t i = 0; i < res.nfired; i++) {
            struct jd_policy_decision d;
            jd_policy_decide(pol, rs, c, res.fired[i].trigger, now, &d); /* records the send */
        }
        int64_t nc = jd_rules_next_change(rs, c, now);
        c->next_timer = nc == INT64_MAX ? 0 : nc;
    }

    /* encode: every customer, `rounds` times; the last round's values are kept */
    struct jd_buf out;
    jd_buf_init(&out);
    size_t *offs = malloc((nall + 1) * sizeof *offs);
    struct jd_buf keep;
    jd_buf_init(&keep);
    uint64_t bytes = 0, sum = 0;
    int64_t t0 = jd_monotonic_ns();
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < nall; i++) {
            /* the write-back's prefetches (store.c) */
            if (i + 8 < nall)
                jd_customer_prefetch(all[i + 8], 0);
            if (i + 4 < nall)
                jd_customer_prefetch(all[i + 4], 1);
            jd_buf_reset(&out);
            jd_customer_encode(all[i], rs, &out);
            bytes += out.len;
            sum += (unsigned char)out.data[out.len - 1];
            if (r == rounds - 1) {
                offs[i] = keep.len;
                jd_buf_append(&keep, out.data, out.len);
            }
        }
    }
    int64_t t1 = jd_monotonic_ns();
    offs[nall] = keep.len;

    /* decode: each value into a fresh customer, as a load does */
    uint64_t fails = 0;
    int64_t tdec = 0;
    for (int r = 0; r < dec_rounds; r++) {
        for (size_t i = 0; i < nall; i++) {
            struct jd_customer *c = jd_customer_new(all[i]->id, all[i]->id_len, 0, rs);
            int64_t a = jd_monotonic_ns();
            if (jd_customer_decode(c, rs, keep.data + offs[i], offs[i + 1] - offs[i], err,
                                   sizeof err) != 0)
                fails++;
            tdec += jd_monotonic_ns() - a;
            jd_customer_destroy(c);
        }
    }
    if (getenv("BENCH_STATE_DUMP"))
        fwrite(keep.data, 1, keep.len > 20000 ? 20000 : keep.len, stdout);
    double n = (double)nall * rounds, nd = (double)nall * (dec_rounds ? dec_rounds : 1);
    printf("bench_state: %zu customers x %d rounds, %.0f bytes/state (check %llu)\n", nall, rounds,
           (double)bytes / n, (unsigned long long)sum);
    printf("encode %.0f ns/state, decode %.0f ns/state (%llu failed)\n", (double)(t1 - t0) / n,
           (double)tdec / nd, (unsigned long long)fails);

    jd_buf_free(&out);
    jd_buf_free(&keep);
    free(offs);
    free(all);
    jd_cache_destroy(cache);
    jd_loadgen_destroy(g);
    jd_policy_destroy(pol);
    jd_rules_destroy(rs);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
    return fails ? 1 : 0;
}
