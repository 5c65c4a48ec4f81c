/*
 * test_insights_cluster — program stats (insights.c) and global budgets
 * (policy_budget.c) on a real 3-master Redis Cluster: every command goes to
 * the master of its key's slot, the scripts run there, a slot that moved is
 * followed, a script error is reported and does not make other partitions
 * count twice, and a flushed script cache does not matter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/policy_int.h"
#include "journeyd/insights.h"
#include "journeyd/redis_conn.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"
#include "redis_cluster_fixture.c"

#define NPARTS 12

struct env {
    struct redis_cluster rc;
    char addr[2][32];
    char *addrs[2];
    char *topics[1];
    struct jd_config cfg;
    struct jd_rule_src stage;
    struct jd_trigger_src trig;
    struct jd_rules_src src;
    struct jd_ruleset *rs;
    char err[512];
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    if (rc_start(&e->rc, 3, 0, 2000) != 0) {
        fprintf(stderr, "cannot start a Redis Cluster\n");
        free(e);
        return -1;
    }
    /* two seeds, the first one dead: the second is used */
    snprintf(e->addr[0], sizeof e->addr[0], "127.0.0.1:%d", e->rc.port[0] + 9);
    snprintf(e->addr[1], sizeof e->addr[1], "127.0.0.1:%d", e->rc.port[1]);
    e->addrs[0] = e->addr[0];
    e->addrs[1] = e->addr[1];
    e->topics[0] = "touchpoints";
    e->cfg.redis_addresses = e->addrs;
    e->cfg.nredis_addresses = 2;
    e->cfg.redis_timeout_ms = 2000;
    e->cfg.key_prefix = "j";
    e->cfg.input_topics = e->topics;
    e->cfg.ninput_topics = 1;
    e->stage = (struct jd_rule_src){"prospect", "true", "t.conf", 1, 1, 1};
    e->trig.on =
        (struct jd_rule_src){"welcome", "event: event.type == 'signup'", "t.conf", 2, 1, 1};
    e->src.stages = &e->stage;
    e->src.nstages = 1;
    e->src.triggers = &e->trig;
    e->src.ntriggers = 1;
    struct jd_errors errs;
    jd_errors_init(&errs);
    if (jd_rules_compile(&e->src, &e->rs, &errs) != 0) {
        jd_errors_print(&errs, stderr);
        jd_errors_free(&errs);
        rc_stop(&e->rc);
        free(e);
        return -1;
    }
    jd_errors_free(&errs);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (!e)
        return 0;
    jd_rules_destroy(e->rs);
    rc_stop(&e->rc);
    free(e);
    return 0;
}

static void part_key(int p, char *out, size_t n)
{
    snprintf(out, n, "j:{p:touchpoints:%d}:stats", p);
}

/* HGET on the master that serves the key (no redirect followed here, so a
 * key on the wrong node would show). */
static long long owner_hget(struct env *e, const char *key, const char *field)
{
    int m = rc_master_of_slot(&e->rc, jd_redis_key_slot(key, strlen(key)));
    assert_true(m >= 0);
    redisReply *r = rc_cmd(&e->rc, m, "HGET %s %s", key, field);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_STRING ? atoll(r->str)
                  : r->type == REDIS_REPLY_NIL  ? 0
                                                : -999;
    if (r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "HGET %s: %s\n", key, r->str);
    freeReplyObject(r);
    return v;
}

static void owner_cmd(struct env *e, const char *key, const char *fmt, const char *a)
{
    int m = rc_master_of_slot(&e->rc, jd_redis_key_slot(key, strlen(key)));
    redisReply *r = rc_cmd(&e->rc, m, fmt, a);
    assert_non_null(r);
    freeReplyObject(r);
}

/* One signup per partition at offset `off`, counted and flushed. */
static int count_round(struct env *e, struct jd_insights *ins, int64_t off, uint32_t gen)
{
    for (int p = 0; p < NPARTS; p++)
        jd_insights_want(ins, p, "touchpoints", p, gen);
    assert_int_equal(jd_insights_load_offsets(ins, e->err, sizeof e->err), 0);
    for (int p = 0; p < NPARTS; p++) {
        char id[16];
        snprintf(id, sizeof id, "c%d-%lld", p, (long long)off);
        struct jd_customer *c = jd_customer_new(id, strlen(id), p, e->rs);
        struct jd_event ev;
        memset(&ev, 0, sizeof ev);
        ev.event_id = "e";
        ev.customer_id = id;
        ev.type = "signup";
        ev.channel = "web";
        ev.occurred_at = 1000;
        ev.offset = off;
        jd_insights_begin(ins, c, &ev, 1000);
        c->stage = 0;
        jd_insights_sent(ins, c, 0, 1000);
        jd_insights_end(ins, c);
        jd_customer_destroy(c);
    }
    return jd_insights_flush(ins, e->err, sizeof e->err);
}

static void test_insights_on_cluster(void **state)
{
    struct env *e = *state;
    char key[64];
    /* the partitions' hashes are spread over the masters */
    int on[3] = {0, 0, 0};
    for (int p = 0; p < NPARTS; p++) {
        part_key(p, key, sizeof key);
        int m = rc_master_of_slot(&e->rc, jd_redis_key_slot(key, strlen(key)));
        assert_true(m >= 0 && m < 3);
        on[m]++;
    }
    assert_true((on[0] > 0) + (on[1] > 0) + (on[2] > 0) >= 2);

    struct jd_insights *ins = jd_insights_new(&e->cfg, e->rs);
    if (count_round(e, ins, 10, 0) != 0)
        fail_msg("flush: %s", e->err);
    for (int p = 0; p < NPARTS; p++) {
        part_key(p, key, sizeof key);
        assert_int_equal(owner_hget(e, key, "@offset"), 10);
        assert_int_equal(owner_hget(e, key, "stage:prospect"), 1);
        assert_int_equal(owner_hget(e, key, "sent:welcome"), 1);
    }
    /* the registry lives on its own slot */
    redisReply *r = rc_cmd(&e->rc, rc_master_of_slot(&e->rc, jd_redis_key_slot("{stats}", 7)),
                           "SCARD j:{stats}:partitions");
    assert_int_equal(r->integer, NPARTS);
    freeReplyObject(r);

    /* the script cache flushed everywhere (a restart, a failover): EVAL
     * needs no NOSCRIPT handling */
    for (int i = 0; i < 3; i++) {
        r = rc_cmd(&e->rc, i, "SCRIPT FLUSH");
        freeReplyObject(r);
    }
    if (count_round(e, ins, 20, 0) != 0)
        fail_msg("flush after SCRIPT FLUSH: %s", e->err);
    part_key(0, key, sizeof key);
    assert_int_equal(owner_hget(e, key, "stage:prospect"), 2);

    /* partition 3's hash moves to another master: MOVED, followed */
    part_key(3, key, sizeof key);
    unsigned slot = jd_redis_key_slot(key, strlen(key));
    int a = rc_master_of_slot(&e->rc, slot), b = (a + 1) % 3;
    char ida[64], idb[64], sslot[16], port[16];
    rc_node_id(&e->rc, a, ida);
    rc_node_id(&e->rc, b, idb);
    snprintf(sslot, sizeof sslot, "%u", slot);
    snprintf(port, sizeof port, "%d", e->rc.port[b]);
    r = rc_cmd(&e->rc, b, "CLUSTER SETSLOT %s IMPORTING %s", sslot, ida);
    freeReplyObject(r);
    r = rc_cmd(&e->rc, a, "CLUSTER SETSLOT %s MIGRATING %s", sslot, idb);
    freeReplyObject(r);
    r = rc_cmd(&e->rc, a, "MIGRATE 127.0.0.1 %s %s 0 5000", port, key);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    for (int i = 0; i < 3; i++) {
        r = rc_cmd(&e->rc, i, "CLUSTER SETSLOT %s NODE %s", sslot, idb);
        freeReplyObject(r);
    }
    assert_int_equal(rc_master_of_slot(&e->rc, slot), b);
    if (count_round(e, ins, 30, 0) != 0)
        fail_msg("flush after a slot moved: %s", e->err);
    assert_int_equal(owner_hget(e, key, "stage:prospect"), 3);
    assert_int_equal(owner_hget(e, key, "@offset"), 30);

    /* a script error on one partition: reported with the key, the others
     * written once (not again by the retry) */
    part_key(5, key, sizeof key);
    owner_cmd(e, key, "DEL %s", key);
    owner_cmd(e, key, "SET %s garbage", key);
    assert_int_equal(count_round(e, ins, 40, 0), -1);
    assert_non_null(strstr(e->err, "WRONGTYPE"));
    assert_non_null(strstr(e->err, key));
    owner_cmd(e, key, "DEL %s", key);
    if (jd_insights_flush(ins, e->err, sizeof e->err) != 0)
        fail_msg("retry: %s", e->err);
    char other[64];
    part_key(6, other, sizeof other);
    assert_int_equal(owner_hget(e, other, "stage:prospect"), 4);
    assert_int_equal(owner_hget(e, key, "stage:prospect"), 1); /* only the retried delta */
    jd_insights_destroy(ins);

    /* the reader sums every partition from every master */
    ins = jd_insights_new(&e->cfg, e->rs);
    struct jd_program p;
    if (jd_insights_read(ins, &p, e->err, sizeof e->err) != 0)
        fail_msg("read: %s", e->err);
    assert_int_equal(p.npartitions, NPARTS);
    assert_int_equal(p.stage[0], 4 * (NPARTS - 1) + 1);
    assert_int_equal(p.sent[0], 4 * (NPARTS - 1) + 1);
    jd_program_free(&p);
    jd_insights_destroy(ins);
}

static void test_budget_on_cluster(void **state)
{
    struct env *e = *state;
    /* triggers whose budget keys live on different masters */
    const char *names[] = {"vip", "welcome", "winback", "birthday", "recover", "nudge"};
    size_t nn = sizeof names / sizeof *names;
    int on[3] = {0, 0, 0};
    for (size_t i = 0; i < nn; i++)
        on[rc_master_of_slot(&e->rc, jd_redis_key_slot(names[i], strlen(names[i])))]++;
    assert_true((on[0] > 0) + (on[1] > 0) + (on[2] > 0) >= 2);

    struct jd_budget *a = jd_budget_new(&e->cfg), *b = jd_budget_new(&e->cfg);
    int64_t day = 86400000LL, at = 19700 * day;
    for (size_t i = 0; i < nn; i++) {
        int got = 0;
        /* budget 7, chunk 1: exact across the two instances */
        for (int k = 0; k < 20; k++) {
            int r = jd_budget_take(k % 2 ? b : a, names[i], 7, day, at, e->err, sizeof e->err);
            if (r < 0)
                fail_msg("take %s: %s", names[i], e->err);
            got += r;
        }
        assert_int_equal(got, 7);
        char key[64];
        snprintf(key, sizeof key, "j:budget:{%s}:19700", names[i]);
        int m = rc_master_of_slot(&e->rc, jd_redis_key_slot(key, strlen(key)));
        redisReply *r = rc_cmd(&e->rc, m, "GET %s", key);
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        assert_true(atoll(r->str) >= 7);
        freeReplyObject(r);
        r = rc_cmd(&e->rc, m, "PTTL %s", key);
        assert_true(r->integer > 2 * day);
        freeReplyObject(r);
    }
    jd_budget_destroy(a);
    jd_budget_destroy(b);
}

int main(void)
{
    /* fixture helpers other cluster tests use */
    (void)rc_kill_node;
    (void)rc_is_master;
    (void)rc_reshard_start;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insights_on_cluster),
        cmocka_unit_test(test_budget_on_cluster),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
