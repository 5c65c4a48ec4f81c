/*
 * Unit tests for the grouping of a flush's commands on a single Redis node
 * (store.c, store_timers.c) against a real redis-server: the additions to
 * each per-partition set are one ZADD per set, the deferred removals one
 * ZREM per set, and the customers whose write needs a transaction share one
 * MULTI ... EXEC; Redis's command counts prove the grouping, its contents
 * that everything arrived. Errors stay attributed to the right customers: a
 * grouped ZADD refused (a key of the wrong type) fails every customer in it
 * and no other, a command failing inside the shared transaction fails its
 * customer only, a transaction discarded (a command refused when queued)
 * fails all of its customers and none of the state-only ones.
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

#include "journeyd/store.h"
#include "redis_fixture.c"
#include "store_env.h"

#define T0 1700000000000LL
#define ORDERS1 ((1 << 16) | 1)

static void cmd_ok(struct env *e, const char *cmd)
{
    redisReply *r = redis_fixture_cmd(&e->redis, cmd);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

static long long cmd_int(struct env *e, const char *fmt, const char *arg)
{
    redisReply *r = redis_fixture_cmd(&e->redis, fmt, arg);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

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

/* Calls of one command since the last CONFIG RESETSTAT (0: none). */
static long long calls(struct env *e, const char *cmd)
{
    redisReply *r = redis_fixture_cmd(&e->redis, "INFO commandstats");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    char pat[64];
    snprintf(pat, sizeof pat, "cmdstat_%s:calls=", cmd);
    const char *p = strstr(r->str, pat);
    long long v = p ? atoll(p + strlen(pat)) : 0;
    freeReplyObject(r);
    return v;
}

static struct jd_customer *mk(const char *id, int32_t source, int64_t timer)
{
    struct jd_customer *c = jd_customer_new(id, strlen(id), source, NULL);
    c->next_timer = timer;
    c->dirty = 1;
    return c;
}

static void trigger(struct jd_customer *c, const char *tid)
{
    struct jd_pending_trigger *p = jd_customer_add_pending(c);
    snprintf(p->trigger_id, sizeof p->trigger_id, "%s", tid);
    p->kind = JD_KIND_REENGAGEMENT;
    jd_pending_set_value(p, "\0v", 2);
    char line[64];
    snprintf(line, sizeof line, "fired %s", tid);
    p->history = strdup(line);
    c->dirty = 1;
}

static void next_roundtrip(struct env *e)
{
    int32_t src = 0;
    int64_t upto = -1;
    assert_int_equal(
        jd_store_timers_due(e->st, &src, &upto, 1, 1, NULL, &e->due, e->err, sizeof e->err), 0);
}

/* Twelve customers in four partitions: new ones with timers (state only),
 * new triggers (outbox, history, some with timers), acknowledgements. */
static void test_grouped(void **state)
{
    struct env *e = *state;
    enum { N0, N1, N2, N3, N4, N5, TA, TB, TC, TD, A0, A1, A2, NC };
    static const char *const ids[NC] = {"n0", "n1", "n2", "n3", "n4", "n5", "ta",
                                        "tb", "tc", "td", "a0", "a1", "a2"};
    static const int32_t src[NC] = {0, 0, 1, 1, 2, ORDERS1, 0, 1, 2, 2, 0, 0, 1};
    static const int64_t tm[NC] = {T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5, T0 + 6, T0 + 7,
                                   T0 + 8, 0,      0,      0,      0,      0};
    struct jd_customer *cs[NC];
    for (int i = 0; i < NC; i++)
        cs[i] = mk(ids[i], src[i], tm[i]);
    /* a0..a2 have a stored trigger each (their own flush first) */
    for (int i = A0; i <= A2; i++)
        trigger(cs[i], "old");
    assert_int_equal(jd_store_flush(e->st, NULL, cs + A0, 3, e->err, sizeof e->err), 0);
    assert_int_equal(zscore(e, "j:{p:touchpoints:0}:outbox", "a1"), 0);
    for (int i = TA; i <= TD; i++)
        trigger(cs[i], "t1");
    for (int i = A0; i <= A2; i++)
        assert_int_equal(jd_customer_ack(cs[i], "old"), 0);

    cmd_ok(e, "CONFIG RESETSTAT");
    uint64_t rt = jd_store_roundtrips(e->st);
    assert_int_equal(jd_store_flush(e->st, NULL, cs, NC, e->err, sizeof e->err), 0);
    assert_int_equal(jd_store_roundtrips(e->st), rt + 1);
    /* timer sets of touchpoints 0, 1, 2 and orders 1; outbox index of
     * touchpoints 0, 1, 2: one ZADD each */
    assert_int_equal(calls(e, "zadd"), 7);
    assert_int_equal(calls(e, "multi"), 1);
    assert_int_equal(calls(e, "exec"), 1);
    assert_int_equal(calls(e, "mset"), 2); /* n0..n5; ta..td in the transaction */
    assert_int_equal(calls(e, "set"), 0);
    assert_int_equal(calls(e, "hset"), 4);
    assert_int_equal(calls(e, "hdel"), 3);
    assert_int_equal(calls(e, "lpush"), 4);
    assert_int_equal(calls(e, "zrem"), 0); /* after the write: next round trip */
    for (int i = 0; i < NC; i++) {
        assert_false(cs[i]->dirty);
        assert_int_equal(cmd_int(e, "EXISTS j:{%s}", ids[i]), 1);
        char key[64];
        snprintf(key, sizeof key, "j:{p:%s:%d}:timers",
                 src[i] == ORDERS1 ? "orders" : "touchpoints", src[i] & 0xffff);
        assert_int_equal(zscore(e, key, ids[i]), tm[i] ? tm[i] : -1);
        assert_int_equal(cs[i]->stored_timer, tm[i]);
        snprintf(key, sizeof key, "j:{p:touchpoints:%d}:outbox", src[i] & 0xffff);
        if (i >= TA && i <= TD) {
            assert_int_equal(zscore(e, key, ids[i]), 0);
            assert_true(cs[i]->pending[0].stored);
            assert_int_equal(cmd_int(e, "HLEN j:{%s}:o", ids[i]), 1);
            assert_int_equal(cmd_int(e, "LLEN j:{%s}:h", ids[i]), 1);
        }
        if (i >= A0) {
            assert_int_equal(cmd_int(e, "HLEN j:{%s}:o", ids[i]), 0);
            assert_int_equal(zscore(e, key, ids[i]), 0); /* still: removed after */
        }
    }

    /* the unindexing of a0, a1 (touchpoints 0) and a2 (1): two ZREMs at
     * the head of the next round trip; n0 and n2's timers go after that */
    cs[N0]->next_timer = cs[N2]->next_timer = 0;
    cs[N0]->dirty = cs[N2]->dirty = 1;
    assert_int_equal(jd_store_flush(e->st, NULL, cs, NC, e->err, sizeof e->err), 0);
    assert_int_equal(calls(e, "zrem"), 2);
    assert_int_equal(calls(e, "multi"), 1); /* nothing needed one */
    for (int i = A0; i <= A2; i++)
        assert_int_equal(
            zscore(e, i == A2 ? "j:{p:touchpoints:1}:outbox" : "j:{p:touchpoints:0}:outbox",
                   ids[i]),
            -1);
    assert_int_equal(zscore(e, "j:{p:touchpoints:0}:timers", "n0"), T0 + 1);
    next_roundtrip(e);
    assert_int_equal(calls(e, "zrem"), 4);
    assert_int_equal(zscore(e, "j:{p:touchpoints:0}:timers", "n0"), -1);
    assert_int_equal(zscore(e, "j:{p:touchpoints:1}:timers", "n2"), -1);
    assert_int_equal(zscore(e, "j:{p:touchpoints:0}:timers", "n1"), T0 + 2);
    assert_int_equal(zscore(e, "j:{p:touchpoints:0}:outbox", "ta"), 0);
    for (int i = 0; i < NC; i++)
        jd_customer_destroy(cs[i]);
}

/* A grouped ZADD refused fails exactly its customers; a command failing in
 * the shared transaction fails its customer only. */
static void test_group_errors(void **state)
{
    struct env *e = *state;
    enum { E0, E1, E2, TA, TB, TC, TD, NC };
    static const char *const ids[NC] = {"e0", "e1", "e2", "ta", "tb", "tc", "td"};
    static const int32_t src[NC] = {0, 2, 2, 0, 1, 2, 2};
    static const int64_t tm[NC] = {T0 + 1, T0 + 2, T0 + 3, 0, 0, 0, T0 + 4};
    static const int fails[NC] = {0, 1, 1, 0, 1, 0, 1};
    struct jd_customer *cs[NC];
    for (int i = 0; i < NC; i++) {
        cs[i] = mk(ids[i], src[i], tm[i]);
        if (i >= TA)
            trigger(cs[i], "t1");
    }
    /* touchpoints 2's timer set is not a sorted set: its ZADD fails (e1,
     * e2, td); tb's history list is not a list: its LPUSH fails (tb) */
    cmd_ok(e, "SET j:{p:touchpoints:2}:timers x");
    cmd_ok(e, "SET j:{tb}:h x");
    assert_int_equal(jd_store_flush(e->st, NULL, cs, NC, e->err, sizeof e->err), -1);
    assert_non_null(strstr(e->err, "'e1'"));
    assert_non_null(strstr(e->err, "WRONGTYPE"));
    assert_non_null(strstr(e->err, "(and 3 more customers not written)"));
    for (int i = 0; i < NC; i++) {
        assert_int_equal(cs[i]->dirty, fails[i]);
        assert_false(cs[i]->writing);
        assert_int_equal(cs[i]->stored_timer, fails[i] ? 0 : tm[i]);
        if (i >= TA) {
            assert_int_equal(cs[i]->pending[0].stored, !fails[i]);
            assert_int_equal(cs[i]->pending[0].history == NULL, !fails[i]);
        }
    }
    assert_int_equal(zscore(e, "j:{p:touchpoints:0}:timers", "e0"), T0 + 1);
    assert_int_equal(cmd_int(e, "HLEN j:{%s}:o", "ta"), 1);
    assert_int_equal(cmd_int(e, "LLEN j:{%s}:h", "tc"), 1);
    assert_int_equal(cmd_int(e, "EXISTS j:{%s}", "tc"), 1);

    /* once the keys are right, the failed ones are written again */
    cmd_ok(e, "DEL j:{p:touchpoints:2}:timers j:{tb}:h");
    assert_int_equal(jd_store_flush(e->st, NULL, cs, NC, e->err, sizeof e->err), 0);
    for (int i = 0; i < NC; i++) {
        assert_false(cs[i]->dirty);
        assert_int_equal(cs[i]->stored_timer, tm[i]);
    }
    assert_int_equal(zscore(e, "j:{p:touchpoints:2}:timers", "e2"), T0 + 3);
    assert_int_equal(zscore(e, "j:{p:touchpoints:2}:timers", "td"), T0 + 4);
    assert_int_equal(cmd_int(e, "LLEN j:{%s}:h", "tb"), 1);
    for (int i = 0; i < NC; i++)
        jd_customer_destroy(cs[i]);
}

/* A command refused when queued discards the shared transaction: every
 * customer in it fails and none of it is written; the state-only customers
 * (an MSET outside it) are not affected. */
static void test_shared_transaction_discarded(void **state)
{
    struct env *e = *state;
    struct jd_customer *cs[4] = {mk("okD", 0, 0), mk("okA", 0, 0), mk("badB", 0, 0),
                                 mk("okC", 0, 0)};
    trigger(cs[0], "t0");
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_int_equal(jd_customer_ack(cs[0], "t0"), 0); /* okD: an HDEL only, no state */
    trigger(cs[1], "t1");
    trigger(cs[2], "t1");
    /* the default user may not touch badB's keys: its commands are refused
     * when queued (NOPERM), and so is the MSET of okA's and badB's states */
    cmd_ok(e, "ACL SETUSER default resetkeys ~j:{p:* ~j:{ok*");
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 4, e->err, sizeof e->err), -1);
    cmd_ok(e, "ACL SETUSER default allkeys");
    assert_non_null(strstr(e->err, "'okD'"));
    assert_non_null(strstr(e->err, "EXECABORT"));
    assert_non_null(strstr(e->err, "(and 2 more customers not written)"));
    assert_int_equal(cs[0]->nacked, 1);
    assert_true(cs[1]->dirty && cs[2]->dirty);
    assert_false(cs[3]->dirty);
    assert_false(cs[1]->pending[0].stored);
    assert_int_equal(cmd_int(e, "HLEN j:{%s}:o", "okD"), 1); /* the HDEL did not run */
    assert_int_equal(cmd_int(e, "EXISTS j:{%s}:o", "okA"), 0);
    assert_int_equal(cmd_int(e, "EXISTS j:{%s}:h", "okA"), 0);
    assert_int_equal(cmd_int(e, "EXISTS j:{%s}", "okA"), 0);
    assert_int_equal(cmd_int(e, "EXISTS j:{%s}", "okC"), 1);
    /* indexed before the write: an entry too many, never one too few */
    assert_int_equal(zscore(e, "j:{p:touchpoints:0}:outbox", "okA"), 0);

    assert_int_equal(jd_store_flush(e->st, NULL, cs, 4, e->err, sizeof e->err), 0);
    assert_int_equal(cmd_int(e, "HLEN j:{%s}:o", "okD"), 0);
    assert_int_equal(cmd_int(e, "HLEN j:{%s}:o", "okA"), 1);
    assert_int_equal(cmd_int(e, "HLEN j:{%s}:o", "badB"), 1);
    assert_int_equal(cs[0]->nacked, 0);
    assert_true(cs[1]->pending[0].stored && cs[2]->pending[0].stored);
    for (int i = 0; i < 4; i++)
        jd_customer_destroy(cs[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_grouped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_transaction_discarded, setup, teardown),
    };
    return jd_run_tests_in_pool(tests, NULL, NULL);
}
