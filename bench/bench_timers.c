/*
 * bench_timers — what timers cost in Redis, with the shipped rules
 * (bench/timers.sh starts a private redis-server and runs this):
 *
 *   1. memory: M customers, each with a realistic month of touchpoints,
 *      evaluated by the shipped rules and written by jd_store_flush (state,
 *      timer set entry); Redis used_memory per customer, and the timer
 *      set's share of it (MEMORY USAGE).
 *   2. tick cost: a partition's timer set holding N scheduled customers
 *      (10k, 100k, 1M), of which a fixed K are due; one tick as the engine
 *      does it — fetch the due (ZRANGEBYSCORE), load them, re-evaluate at
 *      their due time, write back (state + timer set) — timed over R ticks.
 *      It must not grow with N.
 *
 * Usage: bench_timers HOST:PORT [CONFIG] (default config/journeyd.conf).
 * The Redis database is flushed.
 */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/config.h"
#include "journeyd/rules.h"
#include "journeyd/store.h"

#define DAY 86400000LL
#define K_DUE 100
#define TICKS 200
#define MEM_CUSTOMERS 20000

static char g_err[512];
static redisContext *g_ctl;

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_timers: %s: %s\n", what, err);
    exit(1);
}

static long long info_used_memory(void)
{
    redisReply *r = redisCommand(g_ctl, "INFO memory");
    if (!r || r->type != REDIS_REPLY_STRING)
        die("INFO", "no reply");
    const char *p = strstr(r->str, "used_memory:");
    long long v = p ? atoll(p + 12) : -1;
    freeReplyObject(r);
    return v;
}

static void cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(g_ctl, fmt, ap);
    va_end(ap);
    if (!r || r->type == REDIS_REPLY_ERROR)
        die(fmt, r ? r->str : "no reply");
    freeReplyObject(r);
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A month of touchpoints for one customer, evaluated by the rules; the
 * customer's timer is scheduled as the engine would. */
static void live_a_month(const struct jd_ruleset *rs, struct jd_customer *c, int64_t now,
                         uint64_t *seed)
{
    static const char *const types[] = {"page_view",  "product_view", "add_to_cart", "purchase",
                                        "email_open", "app_open",     "feedback"};
    static const char *const channels[] = {"web", "app", "email", "store"};
    int n = 3 + (int)(rnd(seed) % 10);
    char id[40];
    for (int i = 0; i < n; i++) {
        struct jd_event ev;
        memset(&ev, 0, sizeof ev);
        snprintf(id, sizeof id, "%s-%d", c->id, i);
        ev.event_id = id;
        ev.customer_id = c->id;
        ev.type = types[rnd(seed) % 7];
        ev.channel = channels[rnd(seed) % 4];
        ev.occurred_at = now - 30 * DAY + (int64_t)(i + 1) * 30 * DAY / (n + 1);
        if (strcmp(ev.type, "purchase") == 0) {
            ev.has_amount = 1;
            ev.amount = 5 + (double)(rnd(seed) % 20000) / 100;
        }
        if (strcmp(ev.type, "feedback") == 0) {
            ev.has_score = 1;
            ev.score = (int32_t)(rnd(seed) % 11);
        }
        struct jd_eval_result res;
        (void)jd_customer_seen_event(c, ev.event_id);
        jd_customer_apply_core(c, &ev);
        jd_rules_on_event(rs, c, &ev, ev.occurred_at, &res);
    }
    int64_t d = jd_rules_next_change(rs, c, now);
    c->next_timer = d == INT64_MAX ? 0 : d;
    c->applied_offset = n;
    c->dirty = 1;
}

static void bench_memory(struct jd_store *st, const struct jd_ruleset *rs, int64_t now)
{
    cmd("FLUSHALL");
    long long before = info_used_memory();
    uint64_t seed = 88172645463325252ULL;
    struct jd_customer *batch[1000];
    size_t scheduled = 0;
    for (int base = 0; base < MEM_CUSTOMERS; base += 1000) {
        for (int i = 0; i < 1000; i++) {
            char id[32];
            snprintf(id, sizeof id, "customer-%07d", base + i);
            batch[i] = jd_customer_new(id, strlen(id), 0, rs);
            live_a_month(rs, batch[i], now, &seed);
            scheduled += batch[i]->next_timer != 0;
        }
        if (jd_store_flush(st, rs, batch, 1000, g_err, sizeof g_err) != 0)
            die("flush", g_err);
        for (int i = 0; i < 1000; i++)
            jd_customer_destroy(batch[i]);
    }
    long long after = info_used_memory();
    redisReply *r = redisCommand(g_ctl, "MEMORY USAGE j:{p:touchpoints:0}:timers SAMPLES 0");
    long long zset = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    r = redisCommand(g_ctl, "STRLEN j:{customer-0000042}");
    long long one = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    printf("memory: %d customers (a month of 3-12 touchpoints each, shipped rules), %zu with a "
           "timer\n",
           MEM_CUSTOMERS, scheduled);
    printf("  redis used_memory: %.0f bytes per customer (state value e.g. %lld bytes)\n",
           (double)(after - before) / MEM_CUSTOMERS, one);
    printf("  of which the timer set: %.1f bytes per scheduled customer\n",
           (double)zset / (double)(scheduled ? scheduled : 1));
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void bench_tick(struct jd_store *st, const struct jd_ruleset *rs, int64_t now, long nsched)
{
    cmd("FLUSHALL");
    /* the not-due: entries only (their state is never read by a tick) */
    char **argv = malloc((2 + 2 * 1000) * sizeof *argv);
    size_t *lens = malloc((2 + 2 * 1000) * sizeof *lens);
    char *buf = malloc(1000 * 64);
    for (long base = 0; base < nsched; base += 1000) {
        int argc = 2;
        argv[0] = "ZADD";
        argv[1] = "j:{p:touchpoints:0}:timers";
        for (long i = base; i < base + 1000 && i < nsched; i++) {
            char *score = buf + (i - base) * 64, *member = score + 24;
            snprintf(score, 24, "%" PRId64, (int64_t)(now + DAY + i));
            snprintf(member, 40, "sleeper-%09ld", i);
            argv[argc++] = score;
            argv[argc++] = member;
        }
        for (int k = 0; k < argc; k++)
            lens[k] = strlen(argv[k]);
        redisAppendCommandArgv(g_ctl, argc, (const char **)argv, lens);
    }
    for (long base = 0; base < nsched; base += 1000) {
        void *r;
        if (redisGetReply(g_ctl, &r) != REDIS_OK)
            die("ZADD", "I/O");
        freeReplyObject(r);
    }
    free(argv);
    free(lens);
    free(buf);

    /* the K due: real customers, written as the engine writes them */
    uint64_t seed = 42;
    struct jd_customer *due[K_DUE];
    for (int i = 0; i < K_DUE; i++) {
        char id[32];
        snprintf(id, sizeof id, "due-%04d", i);
        due[i] = jd_customer_new(id, strlen(id), 0, rs);
        live_a_month(rs, due[i], now - 40 * DAY, &seed);
        due[i]->next_timer = now - 1000 - i; /* due */
    }
    if (jd_store_flush(st, rs, due, K_DUE, g_err, sizeof g_err) != 0)
        die("flush", g_err);
    for (int i = 0; i < K_DUE; i++)
        jd_customer_destroy(due[i]);

    struct jd_due_list list;
    jd_due_list_init(&list);
    int64_t fetch_ns[TICKS], tick_ns[TICKS];
    int32_t src = 0;
    int64_t upto = now;
    struct jd_customer *cs[K_DUE];
    for (int t = 0; t < TICKS; t++) {
        int64_t t0 = jd_monotonic_ns();
        jd_due_list_reset(&list);
        if (jd_store_timers_due(st, &src, &upto, 1, 1000, NULL, &list, g_err, sizeof g_err) != 0)
            die("due", g_err);
        int64_t t1 = jd_monotonic_ns();
        if (list.n != K_DUE)
            die("due", "unexpected number of due customers");
        for (size_t i = 0; i < list.n; i++)
            cs[i] = jd_customer_new(jd_due_id(&list, i), list.v[i].id_len, 0, rs);
        if (jd_store_load(st, rs, cs, list.n, g_err, sizeof g_err) != 0)
            die("load", g_err);
        for (size_t i = 0; i < list.n; i++) {
            struct jd_eval_result res;
            jd_rules_on_time(rs, cs[i], list.v[i].due, &res);
            /* keep them due for the next round: the same work each tick */
            cs[i]->next_timer = list.v[i].due + (t % 2 ? 1 : -1);
            cs[i]->dirty = 1;
        }
        if (jd_store_flush(st, rs, cs, list.n, g_err, sizeof g_err) != 0)
            die("flush", g_err);
        tick_ns[t] = jd_monotonic_ns() - t0;
        fetch_ns[t] = t1 - t0;
        for (size_t i = 0; i < list.n; i++)
            jd_customer_destroy(cs[i]);
    }
    jd_due_list_free(&list);
    qsort(fetch_ns, TICKS, sizeof fetch_ns[0], cmp_i64);
    qsort(tick_ns, TICKS, sizeof tick_ns[0], cmp_i64);
    printf("tick: %8ld scheduled, %d due: fetch p50 %6.1f us p99 %6.1f us; whole tick (fetch, "
           "load, evaluate, write back) p50 %6.2f ms p99 %6.2f ms\n",
           nsched, K_DUE, fetch_ns[TICKS / 2] / 1e3, fetch_ns[TICKS * 99 / 100] / 1e3,
           tick_ns[TICKS / 2] / 1e6, tick_ns[TICKS * 99 / 100] / 1e6);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_timers HOST:PORT [CONFIG]\n");
        return 2;
    }
    const char *conf = argc > 2 ? argv[2] : "config/journeyd.conf";
    struct jd_errors errs;
    jd_errors_init(&errs);
    struct jd_config *cfg = jd_config_load(conf, &errs);
    struct jd_ruleset *rs = NULL;
    if (!cfg || jd_rules_compile(&cfg->rules, &rs, &errs) != 0)
        die(conf, errs.n ? errs.msgs[0] : "cannot load");
    if (jd_config_set_redis(cfg, argv[1], g_err, sizeof g_err) != 0)
        die("address", g_err);
    struct jd_store *st = jd_store_new(cfg, g_err, sizeof g_err);
    if (!st)
        die("redis", g_err);
    char host[256];
    int port;
    if (jd_parse_hostport(argv[1], host, sizeof host, &port) != 0)
        die("address", argv[1]);
    g_ctl = redisConnect(host, port);
    if (!g_ctl || g_ctl->err)
        die("redis", "cannot connect");

    int64_t now = jd_now_ms();
    bench_memory(st, rs, now);
    long sizes[] = {10000, 100000, 1000000};
    for (size_t i = 0; i < 3; i++)
        bench_tick(st, rs, now, sizes[i]);

    redisFree(g_ctl);
    jd_store_destroy(st);
    jd_rules_destroy(rs);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
    return 0;
}
