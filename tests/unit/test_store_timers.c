/*
 * Unit tests for the per-partition keys of the store (store_timers.c)
 * against a real redis-server: the timer set follows each customer's
 * next_timer through flushes (new, earlier, later, none), due customers are
 * fetched per partition in one round trip, the outbox index follows the
 * outbox, deferred outbox entries keep their not_before, and the order of
 * the writes around a customer's transaction is the crash-safe one: a
 * transaction that fails (here: refused by an ACL, as a crash between the
 * writes would leave it) leaves an entry too many, never one too few.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cmem_pool.h"

#include "journeyd/redis_conn.h"
#include "journeyd/store.h"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" /* the fixture's other helpers */
#include "redis_cluster_fixture.c"
#pragma GCC diagnostic pop
#include "redis_fixture.c"
#include "store_env.h"

#define T0 1700000000000LL
#define TKEY0 "j:{p:touchpoints:0}:timers"
#define TKEY3 "j:{p:touchpoints:3}:timers"
#define TKEYO "j:{p:orders:1}:timers"
#define OKEY0 "j:{p:touchpoints:0}:outbox"
#define TKEY1C "j:{p:touchpoints:1}:timers"

/* ZSCORE as an integer; -1 when the member is absent. */
static long long zscore(struct env *e, const char *key, const char *member)
{
    redisReply *r = redis_fixture_cmd(&e->redis, "ZSCORE %s %s", key, member);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_STRING ? atoll(r->str) : -1;
    assert_true(r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL);
    freeReplyObject(r);
    return v;
}

static void flush1(struct env *e, struct jd_customer *c, int want_rc)
{
    struct jd_customer *cs[1] = {c};
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), want_rc);
}

/* Any round trip: removals and postponements go out at the head of the
 * next one after their customer's transaction succeeded. */
static void next_roundtrip(struct env *e)
{
    int32_t src = 0;
    int64_t upto = -1;
    assert_int_equal(
        jd_store_timers_due(e->st, &src, &upto, 1, 1, NULL, &e->due, e->err, sizeof e->err), 0);
}

/* The default user may touch only the per-partition keys: every customer
 * transaction is refused (EXECABORT), the writes around it go through. */
static void restrict_to_partition_keys(struct env *e, int on)
{
    redisReply *r = on ? redis_fixture_cmd(&e->redis, "ACL SETUSER default resetkeys ~j:{p:*")
                       : redis_fixture_cmd(&e->redis, "ACL SETUSER default allkeys");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
}

static void test_timer_follows_next_timer(void **state)
{
    struct env *e = *state;
    struct jd_customer *c = jd_customer_new("c1", 2, 0, NULL);
    c->next_timer = T0 + 3600000;
    c->dirty = 1;
    flush1(e, c, 0);
    assert_int_equal(zscore(e, TKEY0, "c1"), T0 + 3600000);
    assert_int_equal(c->stored_timer, T0 + 3600000);

    c->next_timer = T0 + 60000; /* earlier */
    c->dirty = 1;
    flush1(e, c, 0);
    assert_int_equal(zscore(e, TKEY0, "c1"), T0 + 60000);

    /* later: not written at all (lazy postponement); the earlier entry
     * stays, fires, finds nothing due and is moved then (engine_timers.c) */
    c->next_timer = T0 + 86400000;
    c->dirty = 1;
    flush1(e, c, 0);
    assert_int_equal(zscore(e, TKEY0, "c1"), T0 + 60000);
    next_roundtrip(e);
    assert_int_equal(zscore(e, TKEY0, "c1"), T0 + 60000);
    assert_int_equal(c->stored_timer, T0 + 60000);
    redisReply *r = redis_fixture_cmd(&e->redis, "GET j:{c1}");
    assert_non_null(strstr(r->str, "|nt=1700086400000"));
    freeReplyObject(r);

    /* a later timer alone is no reason to write */
    c->next_timer = T0 + 2 * 86400000LL;
    uint64_t rt = jd_store_roundtrips(e->st);
    flush1(e, c, 0);
    assert_int_equal(jd_store_roundtrips(e->st), rt);
    /* an entry that fired early is moved when its holder reads 0 */
    c->stored_timer = 0;
    flush1(e, c, 0);
    assert_int_equal(jd_store_roundtrips(e->st), rt + 1);
    assert_int_equal(zscore(e, TKEY0, "c1"), T0 + 2 * 86400000LL);
    r = redis_fixture_cmd(&e->redis, "GET j:{c1}");
    assert_non_null(strstr(r->str, "|nt=1700172800000"));
    freeReplyObject(r);

    c->next_timer = 0; /* nothing due any more: removed after the state */
    c->dirty = 1;
    flush1(e, c, 0);
    assert_int_equal(zscore(e, TKEY0, "c1"), T0 + 2 * 86400000LL);
    next_roundtrip(e);
    assert_int_equal(zscore(e, TKEY0, "c1"), -1);
    assert_int_equal(c->stored_timer, 0);

    /* the state carries nt; a load takes the timer set to agree with it */
    c->next_timer = T0 + 5000;
    c->dirty = 1;
    flush1(e, c, 0);
    struct jd_customer *d = jd_customer_new("c1", 2, 0, NULL);
    struct jd_customer *ds[1] = {d};
    assert_int_equal(jd_store_load(e->st, NULL, ds, 1, e->err, sizeof e->err), 0);
    assert_int_equal(d->next_timer, T0 + 5000);
    assert_int_equal(d->stored_timer, T0 + 5000);

    /* a customer of another topic: its own partition key */
    struct jd_customer *o = jd_customer_new("o1", 2, (1 << 16) | 1, NULL);
    o->next_timer = T0;
    o->dirty = 1;
    flush1(e, o, 0);
    assert_int_equal(zscore(e, TKEYO, "o1"), T0);
    jd_customer_destroy(c);
    jd_customer_destroy(d);
    jd_customer_destroy(o);
}

/* A transaction that does not happen (as after a crash between the writes,
 * or a Redis error): new and earlier due times are already in the set,
 * later ones and removals are not even queued; either way the set holds a
 * due time no later than the one the stored state implies. */
static void test_crash_order(void **state)
{
    struct env *e = *state;
    struct jd_customer *c = jd_customer_new("c2", 2, 0, NULL);
    c->next_timer = T0 + 1000;
    c->dirty = 1;
    flush1(e, c, 0);

    restrict_to_partition_keys(e, 1);
    c->next_timer = T0 + 500; /* earlier: added before the transaction */
    c->dirty = 1;
    flush1(e, c, -1);
    assert_non_null(strstr(e->err, "c2"));
    assert_int_equal(zscore(e, TKEY0, "c2"), T0 + 500);
    assert_true(c->dirty);
    assert_int_equal(c->stored_timer, T0 + 1000); /* not known to be written */

    restrict_to_partition_keys(e, 0);
    flush1(e, c, 0);
    assert_int_equal(c->stored_timer, T0 + 500);

    restrict_to_partition_keys(e, 1);
    c->next_timer = T0 + 9000; /* later: never postponed (lazy) */
    c->dirty = 1;
    flush1(e, c, -1);
    next_roundtrip(e);
    assert_int_equal(zscore(e, TKEY0, "c2"), T0 + 500);
    c->next_timer = 0; /* none: removed only after the transaction */
    flush1(e, c, -1);
    next_roundtrip(e);
    assert_int_equal(zscore(e, TKEY0, "c2"), T0 + 500);

    /* the outbox index: entries coming are indexed before they are written */
    struct jd_pending_trigger *p = jd_customer_add_pending(c);
    snprintf(p->trigger_id, sizeof p->trigger_id, "t1");
    jd_pending_set_value(p, "v", 1);
    flush1(e, c, -1);
    assert_int_equal(zscore(e, OKEY0, "c2"), 0);

    restrict_to_partition_keys(e, 0);
    flush1(e, c, 0);
    next_roundtrip(e);
    assert_int_equal(zscore(e, TKEY0, "c2"), -1);
    assert_int_equal(zscore(e, OKEY0, "c2"), 0);

    /* the last entry leaves: unindexed only after the transaction */
    assert_int_equal(jd_customer_ack(c, "t1"), 0);
    restrict_to_partition_keys(e, 1);
    flush1(e, c, -1);
    next_roundtrip(e);
    assert_int_equal(zscore(e, OKEY0, "c2"), 0);
    restrict_to_partition_keys(e, 0);
    flush1(e, c, 0);
    assert_int_equal(zscore(e, OKEY0, "c2"), 0);
    next_roundtrip(e);
    assert_int_equal(zscore(e, OKEY0, "c2"), -1);

    /* a deferred removal followed, before it went out, by new entries: the
     * removal is sent first, the new index entry after it */
    struct jd_pending_trigger *q = jd_customer_add_pending(c);
    snprintf(q->trigger_id, sizeof q->trigger_id, "t2");
    jd_pending_set_value(q, "v", 1);
    flush1(e, c, 0);
    assert_int_equal(jd_customer_ack(c, "t2"), 0);
    flush1(e, c, 0); /* defers the ZREM */
    q = jd_customer_add_pending(c);
    snprintf(q->trigger_id, sizeof q->trigger_id, "t3");
    jd_pending_set_value(q, "v", 1);
    flush1(e, c, 0); /* ZREM, then ZADD */
    assert_int_equal(zscore(e, OKEY0, "c2"), 0);
    jd_customer_destroy(c);
}

/* A replayable entry (fired by an input event, due at once) of a held
 * customer is not indexed: until it is acknowledged its event's offset is
 * not stored, and the replay of that event re-sends it. Not held, or
 * deferred (not_before), or timer-fired (not replayable): indexed. A
 * customer never indexed is not unindexed either; one loaded with an
 * outbox is (it may have been indexed by an earlier owner). */
static struct jd_pending_trigger *entry(struct jd_customer *c, const char *tid, int replayable,
                                        int64_t not_before)
{
    struct jd_pending_trigger *p = jd_customer_add_pending(c);
    snprintf(p->trigger_id, sizeof p->trigger_id, "%s", tid);
    p->replayable = replayable;
    p->not_before = not_before;
    jd_pending_set_value(p, "v", 1);
    return p;
}

static long long zrem_calls(struct env *e)
{
    redisReply *r = redis_fixture_cmd(&e->redis, "INFO commandstats");
    assert_non_null(r);
    const char *s = strstr(r->str, "cmdstat_zrem:calls=");
    long long n = s ? atoll(s + strlen("cmdstat_zrem:calls=")) : 0;
    freeReplyObject(r);
    return n;
}

static void test_index_only_what_no_replay_brings_back(void **state)
{
    struct env *e = *state;
    const char *ids[5] = {"rh", "rn", "dh", "th", "ld"};
    struct jd_customer *cs[5];
    for (int i = 0; i < 5; i++)
        cs[i] = jd_customer_new(ids[i], 2, 0, NULL);
    cs[0]->held = cs[2]->held = cs[3]->held = 1;
    entry(cs[0], "e0", 1, 0);              /* replayable, held: no entry */
    entry(cs[1], "e1", 1, 0);              /* replayable, not held */
    entry(cs[2], "e2", 1, T0 + 3600000LL); /* deferred */
    entry(cs[3], "e3", 0, 0);              /* timer-fired */
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 4, e->err, sizeof e->err), 0);
    assert_int_equal(zscore(e, OKEY0, "rh"), -1);
    assert_int_equal(zscore(e, OKEY0, "rn"), 0);
    assert_int_equal(zscore(e, OKEY0, "dh"), 0);
    assert_int_equal(zscore(e, OKEY0, "th"), 0);
    assert_false(cs[0]->indexed);
    assert_true(cs[1]->indexed && cs[2]->indexed && cs[3]->indexed);
    redisReply *r = redis_fixture_cmd(&e->redis, "HEXISTS j:{rh}:o e0");
    assert_int_equal(r->integer, 1); /* in the outbox all the same */
    freeReplyObject(r);

    /* a second entry that needs the index, next to one that does not */
    entry(cs[0], "e5", 0, 0);
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_int_equal(zscore(e, OKEY0, "rh"), 0);

    /* acknowledged, emptied: only the indexed are unindexed */
    for (int i = 0; i < 4; i++)
        for (uint32_t k = cs[i]->npending; k-- > 0;)
            assert_int_equal(jd_customer_ack(cs[i], cs[i]->pending[k].trigger_id), 0);
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 4, e->err, sizeof e->err), 0);
    next_roundtrip(e);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(zscore(e, OKEY0, ids[i]), -1);
        assert_false(cs[i]->indexed);
    }
    cs[4]->held = 1;
    entry(cs[4], "e4", 1, 0);
    assert_int_equal(jd_store_flush(e->st, NULL, &cs[4], 1, e->err, sizeof e->err), 0);
    assert_int_equal(zscore(e, OKEY0, "ld"), -1);
    long long zrem0 = zrem_calls(e);
    assert_int_equal(jd_customer_ack(cs[4], "e4"), 0);
    assert_int_equal(jd_store_flush(e->st, NULL, &cs[4], 1, e->err, sizeof e->err), 0);
    next_roundtrip(e);
    assert_int_equal(zrem_calls(e), zrem0); /* never indexed: no ZREM */

    /* loaded with an outbox: may be indexed, so unindexed once emptied */
    entry(cs[4], "e6", 1, 0);
    assert_int_equal(jd_store_flush(e->st, NULL, &cs[4], 1, e->err, sizeof e->err), 0);
    struct jd_customer *d = jd_customer_new("ld", 2, 0, NULL);
    assert_int_equal(jd_store_load(e->st, NULL, &d, 1, e->err, sizeof e->err), 0);
    assert_int_equal(d->npending, 1);
    assert_true(d->indexed);
    assert_int_equal(jd_customer_ack(d, "e6"), 0);
    assert_int_equal(jd_store_flush(e->st, NULL, &d, 1, e->err, sizeof e->err), 0);
    next_roundtrip(e);
    assert_int_equal(zrem_calls(e), zrem0 + 1);
    jd_customer_destroy(d);

    /* a stale entry (an empty outbox) found at assignment goes at once */
    redisReply *z = redis_fixture_cmd(&e->redis, "ZADD " OKEY0 " 0 stale 0 keep");
    freeReplyObject(z);
    jd_due_list_reset(&e->due);
    jd_due_list_add(&e->due, 0, -1, "stale", 5);
    assert_int_equal(jd_store_timers_remove(e->st, &e->due, e->err, sizeof e->err), 0);
    assert_int_equal(zscore(e, OKEY0, "stale"), -1);
    assert_int_equal(zscore(e, OKEY0, "keep"), 0);
    for (int i = 0; i < 5; i++)
        jd_customer_destroy(cs[i]);
}

static void test_due_fetch(void **state)
{
    struct env *e = *state;
    /* 50 customers in partition 0 due at T0 + i s, 3 in partition 3 */
    struct jd_customer *cs[53];
    char id[16];
    for (int i = 0; i < 53; i++) {
        snprintf(id, sizeof id, "d%02d", i);
        int32_t src = i < 50 ? 0 : 3;
        cs[i] = jd_customer_new(id, strlen(id), src, NULL);
        cs[i]->next_timer = T0 + (i < 50 ? i : i - 50) * 1000LL;
        cs[i]->dirty = 1;
    }
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 53, e->err, sizeof e->err), 0);

    int32_t src[3] = {0, 3, (1 << 16) | 1};
    int64_t upto[3] = {T0 + 9500, T0 + 100000, -1};
    int64_t counts[3] = {0, 0, 0};
    uint64_t rt = jd_store_roundtrips(e->st);
    jd_due_list_reset(&e->due);
    assert_int_equal(
        jd_store_timers_due(e->st, src, upto, 3, 100, counts, &e->due, e->err, sizeof e->err), 0);
    assert_int_equal(jd_store_roundtrips(e->st), rt + 1);
    assert_int_equal(e->due.n, 10 + 3);
    for (size_t i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "d%02zu", i);
        assert_string_equal(jd_due_id(&e->due, i), id); /* earliest first */
        assert_int_equal(e->due.v[i].due, T0 + (int64_t)i * 1000);
        assert_int_equal(e->due.v[i].source, 0);
    }
    assert_int_equal(e->due.v[10].source, 3);
    assert_int_equal(counts[0], 50);
    assert_int_equal(counts[1], 3);
    assert_int_equal(counts[2], 0);

    /* the limit bounds one partition's page */
    jd_due_list_reset(&e->due);
    assert_int_equal(
        jd_store_timers_due(e->st, src, upto, 1, 4, NULL, &e->due, e->err, sizeof e->err), 0);
    assert_int_equal(e->due.n, 4);
    assert_string_equal(jd_due_id(&e->due, 3), "d03");

    /* removing strays */
    assert_int_equal(jd_store_timers_remove(e->st, &e->due, e->err, sizeof e->err), 0);
    assert_int_equal(zscore(e, TKEY0, "d00"), -1);
    assert_int_equal(zscore(e, TKEY0, "d04"), T0 + 4000);
    assert_int_equal(zscore(e, TKEY3, "d50"), T0);
    for (int i = 0; i < 53; i++)
        jd_customer_destroy(cs[i]);
}

static void test_outbox_index_and_not_before(void **state)
{
    struct env *e = *state;
    struct jd_customer *cs[5];
    char id[16];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "ob%d", i);
        cs[i] = jd_customer_new(id, strlen(id), 0, NULL);
        struct jd_pending_trigger *p = jd_customer_add_pending(cs[i]);
        snprintf(p->trigger_id, sizeof p->trigger_id, "t%d", i);
        p->kind = JD_KIND_REENGAGEMENT;
        p->not_before = i == 2 ? T0 + 8 * 3600000LL : 0;
        jd_pending_set_value(p, "\0body", 5);
        cs[i]->dirty = 1;
    }
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 5, e->err, sizeof e->err), 0);

    /* pages of 2 */
    jd_due_list_reset(&e->due);
    assert_int_equal(
        jd_store_outbox_customers(e->st, 0, NULL, 0, 2, &e->due, e->err, sizeof e->err), 0);
    assert_int_equal(e->due.n, 2);
    assert_int_equal(jd_store_outbox_customers(e->st, 0, jd_due_id(&e->due, 1), e->due.v[1].id_len,
                                               2, &e->due, e->err, sizeof e->err),
                     0);
    assert_int_equal(jd_store_outbox_customers(e->st, 0, jd_due_id(&e->due, 3), e->due.v[3].id_len,
                                               2, &e->due, e->err, sizeof e->err),
                     0);
    assert_int_equal(e->due.n, 5);
    for (size_t i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "ob%zu", i);
        assert_string_equal(jd_due_id(&e->due, i), id);
    }

    /* not_before survives; an entry without one keeps the old layout */
    redisReply *r = redis_fixture_cmd(&e->redis, "HGET j:{ob1}:o t1");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_int_equal(r->len, 1 + 1 + 5);
    assert_memory_equal(r->str, "\x01\0\0body", 7);
    freeReplyObject(r);
    r = redis_fixture_cmd(&e->redis, "HGET j:{ob2}:o t2");
    assert_int_equal(r->len, 1 + 8 + 1 + 5);
    assert_int_equal((unsigned char)r->str[0], 0x81);
    freeReplyObject(r);
    struct jd_customer *d = jd_customer_new("ob2", 3, 0, NULL);
    struct jd_customer *ds[1] = {d};
    assert_int_equal(jd_store_load(e->st, NULL, ds, 1, e->err, sizeof e->err), 0);
    assert_int_equal(d->npending, 1);
    assert_int_equal(d->pending[0].not_before, T0 + 8 * 3600000LL);
    assert_int_equal(d->pending[0].kind, JD_KIND_REENGAGEMENT);
    assert_null(d->pending[0].topic);
    assert_int_equal(d->pending[0].value.len, 5);
    assert_memory_equal(d->pending[0].value.data, "\0body", 5);
    jd_customer_destroy(d);

    /* acknowledged: out of the index */
    assert_int_equal(jd_customer_ack(cs[2], "t2"), 0);
    flush1(e, cs[2], 0);
    next_roundtrip(e);
    assert_int_equal(zscore(e, OKEY0, "ob2"), -1);
    assert_int_equal(zscore(e, OKEY0, "ob3"), 0);
    for (int i = 0; i < 5; i++)
        jd_customer_destroy(cs[i]);
}

static void test_unconnected(void **state)
{
    struct env *e = *state;
    redis_fixture_kill(&e->redis);
    int32_t src = 0;
    int64_t upto = T0;
    jd_due_list_reset(&e->due);
    assert_int_equal(
        jd_store_timers_due(e->st, &src, &upto, 1, 10, NULL, &e->due, e->err, sizeof e->err), -1);
    assert_non_null(strstr(e->err, "timers"));
    assert_int_equal(
        jd_store_timers_due(e->st, &src, &upto, 1, 10, NULL, &e->due, e->err, sizeof e->err), -1);
    assert_non_null(strstr(e->err, "not connected"));
    assert_int_equal(redis_fixture_start(&e->redis), 0);
    assert_int_equal(jd_store_reconnect(e->st, e->err, sizeof e->err), 0);
    assert_int_equal(
        jd_store_timers_due(e->st, &src, &upto, 1, 10, NULL, &e->due, e->err, sizeof e->err), 0);
}

/* On a Redis Cluster the partition keys and the customer's keys are on
 * different masters: the additions are executed in a round of their own
 * before the transactions, due customers are read from the partition's
 * master, and a removal goes out with the next round. */
static void test_cluster(void **state)
{
    (void)state;
    struct redis_cluster rc;
    memset(&rc, 0, sizeof rc);
    if (rc_start(&rc, 3, 0, 2000) != 0)
        fail_msg("cannot start a Redis Cluster");
    char addr[64], err[512];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rc.port[0]);
    char *addrs[1] = {addr}, *topics[1] = {"touchpoints"};
    struct jd_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.redis_addresses = addrs;
    cfg.nredis_addresses = 1;
    cfg.input_topics = topics;
    cfg.ninput_topics = 1;
    cfg.key_prefix = "j";
    cfg.redis_timeout_ms = 2000;
    cfg.history_max = 3;
    struct jd_store *st = jd_store_new(&cfg, err, sizeof err);
    assert_non_null(st);
    assert_true(jd_redis_is_cluster(jd_store_redis(st)));

    enum { N = 200 };
    struct jd_customer *cs[N];
    char id[16];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "k%03d", i);
        cs[i] = jd_customer_new(id, strlen(id), i % 2, NULL);
        cs[i]->next_timer = T0 + i;
        cs[i]->dirty = 1;
    }
    uint64_t rt = jd_store_roundtrips(st);
    assert_int_equal(jd_store_flush(st, NULL, cs, N, err, sizeof err), 0);
    assert_int_equal(jd_store_roundtrips(st), rt + 2); /* additions, then transactions */
    int owner = rc_master_of_slot(&rc, jd_redis_key_slot("p:touchpoints:1", 15));
    redisReply *r = rc_cmd(&rc, owner, "ZCARD " TKEY1C);
    assert_int_equal(r->integer, N / 2);
    freeReplyObject(r);

    struct jd_due_list due;
    jd_due_list_init(&due);
    int32_t src[2] = {0, 1};
    int64_t upto[2] = {T0 + 9, T0 + 9};
    assert_int_equal(jd_store_timers_due(st, src, upto, 2, 100, NULL, &due, err, sizeof err), 0);
    assert_int_equal(due.n, 10);

    cs[1]->next_timer = 0; /* none: removed after the transaction, next round */
    cs[1]->dirty = 1;
    assert_int_equal(jd_store_flush(st, NULL, cs, N, err, sizeof err), 0);
    r = rc_cmd(&rc, owner, "ZSCORE " TKEY1C " k001");
    assert_string_equal(r->str, "1700000000001");
    freeReplyObject(r);
    jd_due_list_reset(&due);
    assert_int_equal(jd_store_timers_due(st, src, upto, 2, 100, NULL, &due, err, sizeof err), 0);
    assert_int_equal(due.n, 9);
    r = rc_cmd(&rc, owner, "ZSCORE " TKEY1C " k001");
    assert_int_equal(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);

    jd_due_list_free(&due);
    for (int i = 0; i < N; i++)
        jd_customer_destroy(cs[i]);
    jd_store_destroy(st);
    rc_stop(&rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_timer_follows_next_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_due_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_index_and_not_before, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_only_what_no_replay_brings_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unconnected, setup, teardown),
        cmocka_unit_test(test_cluster),
    };
    return jd_run_tests_in_pool(tests, NULL, NULL);
}
