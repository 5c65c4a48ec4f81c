/*
 * policy_budget — global budgets per trigger and period ("at most 10,000
 * vip_welcome a day across all customers"), exact across instances without
 * a Redis round trip per trigger.
 *
 * Each (trigger, period bucket) has a counter in Redis,
 * PREFIX:budget:{TRIGGER}:BUCKET (BUCKET = floor(time / period)), counting
 * tokens handed out to instances. An instance reserves a chunk with INCRBY;
 * if the counter went from `before` to `before + chunk`, the instance owns
 * the tokens (before, before + chunk] that are <= budget, and spends them
 * locally. So the tokens handed out never exceed the budget; tokens an
 * instance reserved but did not spend (the period ended, the instance
 * stopped) are lost: the budget may be under-used by at most
 * chunk x instances per period, never exceeded. Unused tokens are not
 * returned (that would need a second round trip and a way to tell a
 * returned token from a reserved one when instances race).
 *
 * Owns: its own Redis connection (a struct jd_redis opened on first use
 * from all of redis.addresses: one node or a cluster; INCRBY and PEXPIRE
 * are one group routed by the budget key, hash-tagged on the trigger) and
 * the local token pools. Not the store's connection: a reservation happens
 * in the middle of a batch, while other modules may have commands waiting
 * in the store's pipeline for its next round trip.
 */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/redis_conn.h"
#include "policy_int.h"

#define RETRY_AFTER_NS (1000LL * 1000000LL) /* after a failure, fail fast for 1 s */

struct pool {
    char *trigger;
    int64_t bucket;
    int64_t left;  /* tokens reserved and not spent */
    int exhausted; /* the bucket's counter reached the budget */
    struct pool *next;
};

struct jd_budget {
    char **seeds;
    size_t nseeds;
    int timeout_ms;
    char *prefix;
    struct jd_redis *rd;  /* NULL until first use */
    int64_t failed_at_ns; /* last failure, 0 none */
    struct pool *pools;
};

int64_t jd_policy_budget_chunk(int64_t budget)
{
    /* 1 % of the budget, between 1 and 1000: a 10,000 budget is reserved
     * 100 tokens at a time (one round trip per 100 triggers, at most 100
     * tokens per instance unused). */
    int64_t c = budget / 100;
    return c < 1 ? 1 : c > 1000 ? 1000 : c;
}

struct jd_budget *jd_budget_new(const struct jd_config *cfg)
{
    struct jd_budget *b = jd_xcalloc(1, sizeof *b);
    b->nseeds = cfg->nredis_addresses ? cfg->nredis_addresses : 1;
    b->seeds = jd_xcalloc(b->nseeds, sizeof *b->seeds);
    for (size_t i = 0; i < b->nseeds; i++)
        b->seeds[i] = jd_strdup(cfg->nredis_addresses ? cfg->redis_addresses[i] : "127.0.0.1:6379");
    b->timeout_ms = cfg->redis_timeout_ms > 0 ? cfg->redis_timeout_ms : 2000;
    b->prefix = jd_strdup(cfg->key_prefix ? cfg->key_prefix : "j");
    return b;
}

void jd_budget_destroy(struct jd_budget *b)
{
    if (!b)
        return;
    jd_redis_destroy(b->rd);
    for (size_t i = 0; i < b->nseeds; i++)
        free(b->seeds[i]);
    free(b->seeds);
    while (b->pools) {
        struct pool *next = b->pools->next;
        free(b->pools->trigger);
        free(b->pools);
        b->pools = next;
    }
    free(b->prefix);
    free(b);
}

/* Opens (or, after a lost connection, re-opens) the connection; after a
 * failure, fails fast for a while rather than stall every decision on it. */
static int connect_redis(struct jd_budget *b, char *errstr, size_t errsize)
{
    if (b->failed_at_ns && jd_monotonic_ns() - b->failed_at_ns < RETRY_AFTER_NS) {
        snprintf(errstr, errsize, "Redis %s failed a moment ago",
                 b->rd ? jd_redis_describe(b->rd) : b->seeds[0]);
        return -1;
    }
    if (b->rd && jd_redis_connected(b->rd))
        return 0;
    if (!b->rd)
        b->rd =
            jd_redis_new((const char *const *)b->seeds, b->nseeds, b->timeout_ms, errstr, errsize);
    else if (jd_redis_reconnect(b->rd, errstr, errsize) != 0) {
        b->failed_at_ns = jd_monotonic_ns();
        return -1;
    }
    if (!b->rd) {
        b->failed_at_ns = jd_monotonic_ns();
        return -1;
    }
    b->failed_at_ns = 0;
    return 0;
}

static struct pool *find_pool(struct jd_budget *b, const char *trigger)
{
    for (struct pool *p = b->pools; p; p = p->next)
        if (strcmp(p->trigger, trigger) == 0)
            return p;
    struct pool *p = jd_xcalloc(1, sizeof *p);
    p->trigger = jd_strdup(trigger);
    p->bucket = INT64_MIN;
    p->next = b->pools;
    b->pools = p;
    return p;
}

/* INCRBY + PEXPIRE in one round trip, to the master of the key's slot;
 * *total is the counter after INCRBY. A re-send after a lost reply reserves
 * a chunk twice: tokens lost, the budget never exceeded. */
static int reserve(struct jd_budget *b, const char *trigger, int64_t bucket, int64_t chunk,
                   int64_t ttl_ms, int64_t *total, char *errstr, size_t errsize)
{
    char key[512], n[24], ttl[24];
    snprintf(key, sizeof key, "%s:budget:{%s}:%" PRId64, b->prefix, trigger, bucket);
    snprintf(n, sizeof n, "%" PRId64, chunk);
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    const char *a1[3] = {"INCRBY", key, n};
    const char *a2[3] = {"PEXPIRE", key, ttl};
    const size_t l1[3] = {6, strlen(key), strlen(n)};
    const size_t l2[3] = {7, strlen(key), strlen(ttl)};
    jd_redis_group_begin(b->rd);
    size_t i1 = jd_redis_append(b->rd, 1, 3, a1, l1);
    (void)jd_redis_append(b->rd, 1, 3, a2, l2);
    jd_redis_group_end(b->rd);
    /* replicated: a counter lost in a failover would hand its tokens out
     * again; when no replica confirms in time, the tokens are given up */
    int rc = -1;
    if (jd_redis_exec(b->rd, JD_REDIS_REPLICATED, errstr, errsize) != 0) {
        b->failed_at_ns = jd_monotonic_ns();
        goto out;
    }
    const redisReply *r1 = jd_redis_reply(b->rd, i1);
    if (r1->type != REDIS_REPLY_INTEGER) {
        snprintf(errstr, errsize, "INCRBY %s: Redis %s: %s", key, jd_redis_reply_node(b->rd, i1),
                 r1->type == REDIS_REPLY_ERROR ? r1->str : "unexpected reply");
        goto out;
    }
    *total = r1->integer;
    rc = 0;
out:
    jd_redis_clear(b->rd);
    return rc;
}

int jd_budget_take(struct jd_budget *b, const char *trigger, int64_t budget, int64_t period_ms,
                   int64_t at_ms, char *errstr, size_t errsize)
{
    if (period_ms <= 0)
        period_ms = 1;
    int64_t bucket = at_ms / period_ms - (at_ms % period_ms < 0);
    struct pool *p = find_pool(b, trigger);
    if (p->bucket != bucket) {
        /* a new period: what was left of the old one is not used (it may
         * still be current for another instance whose clock lags) */
        p->bucket = bucket;
        p->left = 0;
        p->exhausted = 0;
    }
    if (p->left == 0) {
        if (p->exhausted)
            return 0;
        int64_t chunk = jd_policy_budget_chunk(budget), total;
        if (connect_redis(b, errstr, errsize) != 0)
            return -1;
        /* the key outlives its period by a day, so that a late instance
         * (or a replay in event time) does not find it gone and start over */
        if (reserve(b, trigger, bucket, chunk, 2 * period_ms + 86400000, &total, errstr, errsize) !=
            0)
            return -1;
        int64_t before = total - chunk;
        int64_t granted = budget - before;
        granted = granted < 0 ? 0 : granted > chunk ? chunk : granted;
        p->left = granted;
        if (before + chunk >= budget)
            p->exhausted = 1;
        if (p->left == 0)
            return 0;
    }
    p->left--;
    return 1;
}
