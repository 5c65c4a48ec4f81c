/*
 * Unit tests for the Redis store (store.c) against a real redis-server that
 * the test starts: load/flush round trips, one round trip for a large batch,
 * the outbox life cycle, the history cap, Redis answering errors (OOM),
 * Redis dying and coming back, the value being readable from Python, and a
 * write built, sent and finished in three steps while the customer changes.
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

struct env {
    struct redis_fixture redis;
    char addr[64];
    char *addrs[1];
    struct jd_config cfg;
    struct jd_store *st;
    char err[512];
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    if (redis_fixture_start(&e->redis) != 0) {
        fprintf(stderr, "cannot start redis-server\n");
        free(e);
        return -1;
    }
    snprintf(e->addr, sizeof e->addr, "127.0.0.1:%d", e->redis.port);
    e->addrs[0] = e->addr;
    e->cfg.redis_addresses = e->addrs;
    e->cfg.nredis_addresses = 1;
    e->cfg.key_prefix = "j";
    e->cfg.redis_timeout_ms = 2000;
    e->cfg.history_max = 3;
    e->st = jd_store_new(&e->cfg, e->err, sizeof e->err);
    if (!e->st) {
        fprintf(stderr, "%s\n", e->err);
        redis_fixture_stop(&e->redis);
        free(e);
        return -1;
    }
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    jd_store_destroy(e->st);
    redis_fixture_stop(&e->redis);
    free(e);
    return 0;
}

static struct jd_event mkev(const char *id, const char *type, int64_t at, double amount)
{
    struct jd_event ev;
    memset(&ev, 0, sizeof ev);
    ev.event_id = id;
    ev.type = type;
    ev.channel = "web";
    ev.occurred_at = at;
    ev.has_amount = amount != 0;
    ev.amount = amount;
    return ev;
}

static struct jd_pending_trigger *add(struct jd_customer *c, const char *id, const char *topic,
                                      const char *hist)
{
    struct jd_pending_trigger *p = jd_customer_add_pending(c);
    snprintf(p->trigger_id, sizeof p->trigger_id, "%s", id);
    p->kind = JD_KIND_REENGAGEMENT;
    p->topic = topic ? jd_cstrndup(topic, strlen(topic)) : NULL;
    jd_pending_set_value(p, "\0\x01\x02value\0end", 13); /* binary, with NULs */
    p->history = hist ? strdup(hist) : NULL;
    c->dirty = 1;
    return p;
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

static void test_roundtrip(void **state)
{
    struct env *e = *state;
    const char id[] = "cust {1}\x01 \xc3\xa9"; /* braces, control byte, UTF-8 */
    struct jd_customer *c = jd_customer_new(id, sizeof id - 1, 4, NULL);
    struct jd_event ev = mkev("e1", "purchase", 1700000000000, 12.5);
    jd_customer_apply_core(c, &ev);
    (void)jd_customer_seen_event(c, "e1");
    c->applied_offset = 41;
    add(c, "trig-a", NULL, "line a");
    add(c, "trig-b", "custom.topic", NULL);

    struct jd_customer *cs[1] = {c};
    uint64_t rt = jd_store_roundtrips(e->st);
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_int_equal(jd_store_roundtrips(e->st), rt + 1);
    assert_false(c->dirty);
    assert_true(c->exists);
    assert_true(c->pending[0].stored && c->pending[1].stored);
    assert_null(c->pending[0].history);

    /* the keys of store.h, as redis-cli sees them */
#define KEY "j:{cust {1}\x01 \xc3\xa9}"
    redisReply *r = redis_fixture_cmd(&e->redis, "GET %b", KEY, sizeof KEY - 1);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_non_null(strstr(r->str, "|p=4:41|"));
    assert_non_null(strstr(r->str, "|c.purchase=1|"));
    freeReplyObject(r);
    r = redis_fixture_cmd(&e->redis, "HGET %b trig-b", KEY ":o", sizeof KEY + 1);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_int_equal(r->len, 1 + 12 + 1 + 13);
    assert_memory_equal(r->str,
                        "\x01"
                        "custom.topic\0\0\x01\x02value\0end",
                        r->len);
    freeReplyObject(r);
    r = redis_fixture_cmd(&e->redis, "LRANGE %b 0 -1", KEY ":h", sizeof KEY + 1);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    assert_string_equal(r->element[0]->str, "line a");
    freeReplyObject(r);

    /* nothing to write: no round trip */
    rt = jd_store_roundtrips(e->st);
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_int_equal(jd_store_roundtrips(e->st), rt);

    /* load into a fresh customer */
    struct jd_customer *d = jd_customer_new(id, sizeof id - 1, 4, NULL);
    struct jd_customer *ds[1] = {d};
    assert_int_equal(jd_store_load(e->st, NULL, ds, 1, e->err, sizeof e->err), 0);
    assert_true(d->exists);
    assert_false(d->dirty);
    assert_int_equal(d->applied_offset, 41);
    assert_int_equal(jd_customer_count(d, "purchase"), 1);
    assert_true(d->spend == 12.5);
    assert_int_equal(jd_customer_seen_event(d, "e1"), 1);
    assert_int_equal(d->npending, 2);
    struct jd_pending_trigger *p = jd_customer_find_pending(d, "trig-b");
    assert_non_null(p);
    assert_int_equal(p->kind, JD_KIND_REENGAGEMENT);
    assert_string_equal(p->topic, "custom.topic");
    assert_int_equal(p->value.len, 13);
    assert_memory_equal(p->value.data, "\0\x01\x02value\0end", 13);
    assert_true(p->stored);
    assert_false(p->produced);
    assert_null(p->history);
    p = jd_customer_find_pending(d, "trig-a");
    assert_non_null(p);
    assert_null(p->topic);

    /* a customer Redis has never seen stays fresh */
    struct jd_customer *x = jd_customer_new("nobody", 6, 4, NULL);
    ds[0] = x;
    assert_int_equal(jd_store_load(e->st, NULL, ds, 1, e->err, sizeof e->err), 0);
    assert_false(x->exists);
    assert_int_equal(x->ncounts, 0);
    assert_int_equal(x->npending, 0);

    /* journeyctl's view */
    struct jd_customer *g = NULL;
    assert_int_equal(jd_store_get_customer(e->st, NULL, "nobody", &g, e->err, sizeof e->err), 1);
    assert_null(g);
    char **lines;
    size_t nlines;
    assert_int_equal(jd_store_history(e->st, id, 10, &lines, &nlines, e->err, sizeof e->err), 0);
    assert_int_equal(nlines, 1);
    assert_string_equal(lines[0], "line a");
    jd_store_free_lines(lines, nlines);

    jd_customer_destroy(c);
    jd_customer_destroy(d);
    jd_customer_destroy(x);
}

static void test_outbox_lifecycle(void **state)
{
    struct env *e = *state;
    struct jd_customer *c = jd_customer_new("ob", 2, 0, NULL);
    struct jd_customer *cs[1] = {c};
    add(c, "t1", NULL, "h1");
    add(c, "t2", NULL, "h2");
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_int_equal(cmd_int(e, "HLEN %s", "j:{ob}:o"), 2);

    /* acked by Kafka: removed from Redis by the next flush, state untouched */
    assert_int_equal(jd_customer_ack(c, "t1"), 0);
    c->dirty = 0;
    assert_int_equal(c->nacked, 1);
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_int_equal(c->nacked, 0);
    assert_int_equal(cmd_int(e, "HLEN %s", "j:{ob}:o"), 1);
    assert_int_equal(cmd_int(e, "HEXISTS %s t2", "j:{ob}:o"), 1);

    /* added and acked between two flushes: never reaches Redis, history does */
    add(c, "t3", NULL, "h3");
    assert_int_equal(jd_customer_ack(c, "t3"), 0);
    assert_int_equal(jd_customer_ack(c, "t2"), 0);
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_int_equal(cmd_int(e, "EXISTS %s", "j:{ob}:o"), 0);
    assert_int_equal(cmd_int(e, "LLEN %s", "j:{ob}:h"), 3);
    jd_customer_destroy(c);
}

static void test_history_cap(void **state)
{
    struct env *e = *state;
    struct jd_customer *c = jd_customer_new("hc", 2, 0, NULL);
    struct jd_customer *cs[1] = {c};
    char id[16], line[16];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "t%d", i);
        snprintf(line, sizeof line, "fired %d", i);
        add(c, id, NULL, line);
        if (i != 2) /* two lines in one flush once */
            assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    }
    char **lines;
    size_t n;
    assert_int_equal(jd_store_history(e->st, "hc", 100, &lines, &n, e->err, sizeof e->err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(lines[0], "fired 4");
    assert_string_equal(lines[1], "fired 3");
    assert_string_equal(lines[2], "fired 2");
    jd_store_free_lines(lines, n);
    assert_int_equal(jd_store_history(e->st, "hc", 1, &lines, &n, e->err, sizeof e->err), 0);
    assert_int_equal(n, 1);
    jd_store_free_lines(lines, n);
    jd_customer_destroy(c);
}

#define MANY 10000

static void test_many_one_roundtrip(void **state)
{
    struct env *e = *state;
    redisReply *r = redis_fixture_cmd(&e->redis, "FLUSHALL");
    freeReplyObject(r);
    struct jd_customer **cs = calloc(MANY, sizeof *cs);
    char id[32];
    for (int i = 0; i < MANY; i++) {
        snprintf(id, sizeof id, "m%05d", i);
        cs[i] = jd_customer_new(id, strlen(id), i % 32, NULL);
        struct jd_event ev = mkev(id, i % 3 ? "page_view" : "purchase", 1700000000000 + i, 1);
        jd_customer_apply_core(cs[i], &ev);
        cs[i]->applied_offset = i;
        if (i % 100 == 0)
            add(cs[i], "tr", NULL, "h");
    }
    cs[7]->dirty = 0; /* one clean customer is skipped */
    uint64_t rt = jd_store_roundtrips(e->st);
    assert_int_equal(jd_store_flush(e->st, NULL, cs, MANY, e->err, sizeof e->err), 0);
    assert_int_equal(jd_store_roundtrips(e->st), rt + 1);
    r = redis_fixture_cmd(&e->redis, "DBSIZE");
    /* MANY - 1 states, plus an outbox and a history list per 100 customers */
    assert_int_equal(r->integer, MANY - 1 + 2 * (MANY / 100));
    freeReplyObject(r);

    struct jd_customer **ds = calloc(MANY, sizeof *ds);
    for (int i = 0; i < MANY; i++)
        ds[i] = jd_customer_new(cs[i]->id, cs[i]->id_len, i % 32, NULL);
    rt = jd_store_roundtrips(e->st);
    assert_int_equal(jd_store_load(e->st, NULL, ds, MANY, e->err, sizeof e->err), 0);
    assert_int_equal(jd_store_roundtrips(e->st), rt + 1);
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(ds[i]->exists, i != 7);
        if (i == 7)
            continue;
        assert_int_equal(ds[i]->applied_offset, i);
        assert_int_equal(ds[i]->last_seen, 1700000000000 + i);
        assert_int_equal(jd_customer_count(ds[i], i % 3 ? "page_view" : "purchase"), 1);
        assert_int_equal(ds[i]->npending, i % 100 == 0);
    }
    for (int i = 0; i < MANY; i++) {
        jd_customer_destroy(cs[i]);
        jd_customer_destroy(ds[i]);
    }
    free(cs);
    free(ds);
}

static void config_set(struct env *e, const char *k, const char *v)
{
    redisReply *r = redis_fixture_cmd(&e->redis, "CONFIG SET %s %s", k, v);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
}

static void test_redis_error(void **state)
{
    struct env *e = *state;
    struct jd_customer *a = jd_customer_new("oom-a", 5, 0, NULL);
    struct jd_customer *b = jd_customer_new("oom-b", 5, 0, NULL);
    struct jd_event ev = mkev("e", "purchase", 1700000000000, 3);
    jd_customer_apply_core(a, &ev);
    jd_customer_apply_core(b, &ev);
    add(b, "t", NULL, "h");
    struct jd_customer *cs[2] = {a, b};

    config_set(e, "maxmemory-policy", "noeviction");
    config_set(e, "maxmemory", "1");
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 2, e->err, sizeof e->err), -1);
    assert_non_null(strstr(e->err, "oom-a"));
    assert_non_null(strstr(e->err, "OOM"));
    assert_non_null(strstr(e->err, "1 more"));
    assert_true(a->dirty && b->dirty);
    assert_false(b->pending[0].stored);
    assert_non_null(b->pending[0].history);
    assert_true(jd_store_connected(e->st)); /* an error reply is not a lost connection */

    config_set(e, "maxmemory", "0");
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 2, e->err, sizeof e->err), 0);
    assert_false(a->dirty || b->dirty);
    assert_int_equal(cmd_int(e, "EXISTS %s", "j:{oom-a}"), 1);
    assert_int_equal(cmd_int(e, "HLEN %s", "j:{oom-b}:o"), 1);
    assert_int_equal(cmd_int(e, "LLEN %s", "j:{oom-b}:h"), 1);

    /* a key of the wrong type fails that customer only */
    redisReply *r = redis_fixture_cmd(&e->redis, "SET %s x", "j:{oom-b}:h");
    freeReplyObject(r);
    add(b, "t2", NULL, "h2");
    a->dirty = 1;
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 2, e->err, sizeof e->err), -1);
    assert_non_null(strstr(e->err, "oom-b"));
    assert_non_null(strstr(e->err, "WRONGTYPE"));
    assert_false(a->dirty);
    assert_true(b->dirty);

    /* a corrupt stored value fails the load and applies nothing */
    r = redis_fixture_cmd(&e->redis, "SET %s %s", "j:{bad}", "v1|fs=oops");
    freeReplyObject(r);
    struct jd_customer *g = jd_customer_new("oom-a", 5, 0, NULL);
    struct jd_customer *bad = jd_customer_new("bad", 3, 0, NULL);
    struct jd_customer *ls[2] = {g, bad};
    assert_int_equal(jd_store_load(e->st, NULL, ls, 2, e->err, sizeof e->err), -1);
    assert_non_null(strstr(e->err, "'bad'"));
    assert_false(g->exists);
    assert_int_equal(g->ncounts, 0);

    jd_customer_destroy(a);
    jd_customer_destroy(b);
    jd_customer_destroy(g);
    jd_customer_destroy(bad);
}

/* A write on its way (build, exec, finish: the engine's write-back thread,
 * engine_wb.c): what changes between build and finish is not in the write
 * and stays to be written; a failed write leaves the customer dirty. Plain
 * state writes of several customers share one MSET on a single node. */
static void test_write_in_flight(void **state)
{
    struct env *e = *state;
    redisReply *r = redis_fixture_cmd(&e->redis, "FLUSHALL");
    freeReplyObject(r);
    struct jd_customer *a = jd_customer_new("wa", 2, 0, NULL);
    struct jd_customer *b = jd_customer_new("wb", 2, 0, NULL);
    struct jd_event ev = mkev("e1", "page_view", 1700000000000, 0);
    jd_customer_apply_core(a, &ev);
    jd_customer_apply_core(b, &ev);
    a->dirty = b->dirty = 1;
    add(b, "t1", NULL, NULL);
    struct jd_customer *cs[2] = {a, b};

    r = redis_fixture_cmd(&e->redis, "CONFIG RESETSTAT");
    freeReplyObject(r);
    jd_store_flush_build(e->st, NULL, cs, 2);
    assert_true(a->writing && b->writing);
    assert_false(a->dirty || b->dirty);
    /* the engine goes on: a new event for a, a new trigger for b */
    struct jd_event ev2 = mkev("e2", "purchase", 1700000001000, 5);
    jd_customer_apply_core(a, &ev2);
    a->dirty = 1;
    add(b, "t2", NULL, NULL);
    jd_customer_add_history(b, strdup("suppressed while on its way"));
    jd_store_flush_exec(e->st);
    assert_int_equal(jd_store_flush_finish(e->st, cs, 2, e->err, sizeof e->err), 0);
    assert_false(a->writing || b->writing);
    assert_true(a->dirty); /* its purchase is still to be written */
    assert_true(b->pending[0].stored);
    assert_false(b->pending[1].stored);
    assert_int_equal(b->nhistory, 1); /* added after the build: still to write */
    assert_int_equal(cmd_int(e, "HLEN %s", "j:{wb}:o"), 1);
    r = redis_fixture_cmd(&e->redis, "GET %s", "j:{wa}");
    assert_null(strstr(r->str, "purchase"));
    freeReplyObject(r);

    /* a third customer whose write is its state only: one MSET for two */
    struct jd_customer *c = jd_customer_new("wc", 2, 0, NULL);
    jd_customer_apply_core(c, &ev);
    c->dirty = 1;
    struct jd_customer *cs3[3] = {a, b, c};
    assert_int_equal(jd_store_flush(e->st, NULL, cs3, 3, e->err, sizeof e->err), 0);
    r = redis_fixture_cmd(&e->redis, "GET %s", "j:{wa}");
    assert_non_null(strstr(r->str, "c.purchase=1"));
    freeReplyObject(r);
    assert_int_equal(cmd_int(e, "HLEN %s", "j:{wb}:o"), 2);
    assert_int_equal(b->nhistory, 0);
    assert_int_equal(cmd_int(e, "LLEN %s", "j:{wb}:h"), 1);
    r = redis_fixture_cmd(&e->redis, "INFO commandstats");
    /* {a} then {a, c}; and b's, with its outbox in a transaction, twice */
    assert_non_null(strstr(r->str, "cmdstat_mset:calls=4,"));
    assert_null(strstr(r->str, "cmdstat_set:"));
    assert_non_null(strstr(r->str, "cmdstat_multi:calls=2,"));
    freeReplyObject(r);

    /* a write refused on its way: dirty again, nothing recorded as written */
    jd_customer_apply_core(c, &ev2);
    c->dirty = 1;
    add(c, "t3", NULL, "line");
    config_set(e, "maxmemory-policy", "noeviction");
    config_set(e, "maxmemory", "1");
    jd_store_flush_build(e->st, NULL, &c, 1);
    assert_false(c->dirty);
    jd_store_flush_exec(e->st);
    assert_int_equal(jd_store_flush_finish(e->st, &c, 1, e->err, sizeof e->err), -1);
    assert_non_null(strstr(e->err, "OOM"));
    assert_true(c->dirty);
    assert_false(c->writing);
    assert_false(c->pending[0].stored);
    assert_non_null(c->pending[0].history);
    config_set(e, "maxmemory", "0");
    assert_int_equal(jd_store_flush(e->st, NULL, &c, 1, e->err, sizeof e->err), 0);
    assert_true(c->pending[0].stored);
    assert_false(c->dirty);

    jd_customer_destroy(a);
    jd_customer_destroy(b);
    jd_customer_destroy(c);
}

static void test_redis_killed(void **state)
{
    struct env *e = *state;
    struct jd_customer *c = jd_customer_new("k", 1, 0, NULL);
    struct jd_customer *cs[1] = {c};
    struct jd_event ev = mkev("e", "purchase", 1700000000000, 3);
    jd_customer_apply_core(c, &ev);
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_int_equal(jd_store_ping(e->st), 0);

    redis_fixture_kill(&e->redis);
    jd_customer_apply_core(c, &ev);
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), -1);
    assert_non_null(strstr(e->err, "flush"));
    assert_true(c->dirty);
    assert_false(jd_store_connected(e->st));
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), -1);
    assert_non_null(strstr(e->err, "not connected"));
    assert_int_equal(jd_store_load(e->st, NULL, cs, 1, e->err, sizeof e->err), -1);
    assert_int_equal(jd_store_ping(e->st), -1);
    assert_int_equal(jd_store_reconnect(e->st, e->err, sizeof e->err), -1);

    c->applied_offset = 5;
    assert_int_equal(redis_fixture_start(&e->redis), 0); /* same port */
    assert_int_equal(jd_store_reconnect(e->st, e->err, sizeof e->err), 0);
    assert_int_equal(jd_store_ping(e->st), 0);
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_false(c->dirty);
    struct jd_customer *g = NULL;
    assert_int_equal(jd_store_get_customer(e->st, NULL, "k", &g, e->err, sizeof e->err), 0);
    assert_int_equal(jd_customer_count(g, "purchase"), 2);
    assert_int_equal(g->partition, 0); /* learnt from the watermark */
    assert_int_equal(g->applied_offset, 5);
    jd_customer_destroy(g);
    jd_customer_destroy(c);
}

/* A Redis that stops answering: the call fails within the timeout. */
static void test_redis_hangs(void **state)
{
    struct env *e = *state;
    struct jd_config cfg = e->cfg;
    cfg.redis_timeout_ms = 300;
    struct jd_store *st = jd_store_new(&cfg, e->err, sizeof e->err);
    assert_non_null(st);
    struct jd_customer *c = jd_customer_new("h", 1, 0, NULL);
    struct jd_customer *cs[1] = {c};
    struct jd_event ev = mkev("e", "purchase", 1700000000000, 3);
    jd_customer_apply_core(c, &ev);

    kill(e->redis.pid, SIGSTOP);
    int64_t t0 = jd_monotonic_ns();
    int rc = jd_store_flush(st, NULL, cs, 1, e->err, sizeof e->err);
    int64_t waited_ms = (jd_monotonic_ns() - t0) / 1000000;
    kill(e->redis.pid, SIGCONT);
    assert_int_equal(rc, -1);
    assert_true(c->dirty);
    assert_true(waited_ms >= 250 && waited_ms < 3000);
    assert_int_equal(jd_store_reconnect(st, e->err, sizeof e->err), 0);
    assert_int_equal(jd_store_flush(st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_false(c->dirty);
    jd_customer_destroy(c);
    jd_store_destroy(st);

    /* nothing listening */
    char addr[32];
    char *addrs[1] = {addr};
    snprintf(addr, sizeof addr, "127.0.0.1:%d", redis_fixture_free_port());
    cfg.redis_addresses = addrs;
    assert_null(jd_store_new(&cfg, e->err, sizeof e->err));
    assert_non_null(strstr(e->err, addr));
    cfg.redis_addresses[0] = "no-port";
    assert_null(jd_store_new(&cfg, e->err, sizeof e->err));
    assert_non_null(strstr(e->err, "no-port"));
}

/* The stored value parses with the few lines of Python in docs/state-format.md. */
static void test_python_reads_it(void **state)
{
    struct env *e = *state;
    struct jd_customer *c = jd_customer_new("py", 2, 2, NULL);
    struct jd_event ev = mkev("e", "odd|type=x", 1700000000000, 0);
    ev.channel = "caf\xc3\xa9,%";
    jd_customer_apply_core(c, &ev);
    ev = mkev("e2", "purchase", 1700000000001, 19.99);
    ev.channel = "caf\xc3\xa9,%";
    jd_customer_apply_core(c, &ev);
    c->applied_offset = 77;
    struct jd_customer *cs[1] = {c};
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"\n"
             "import redis, urllib.parse\n"
             "raw = redis.Redis(port=%d).get('j:{py}').decode()\n"
             "version, *fields = raw.split('|')\n"
             "assert version == 'v1'\n"
             "state = {}\n"
             "for f in fields:\n"
             "    k, v = f.split('=', 1)\n"
             "    state[urllib.parse.unquote(k)] = v\n"
             "print(state['c.odd|type=x'], urllib.parse.unquote(state['ch']), state['sp'], "
             "state['p'])\n"
             "\"",
             e->redis.port);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[256] = "";
    if (!fgets(out, sizeof out, p))
        out[0] = '\0';
    assert_int_equal(pclose(p), 0);
    assert_string_equal(out, "1 caf\xc3\xa9,% 19.99 2:77\n");
    jd_customer_destroy(c);
}

/* An id starting with '}' gives keys without a hash tag: a single node still
 * writes them in one MULTI (the cluster path is in test_store_cluster.c). */
static void test_untagged_id(void **state)
{
    struct env *e = *state;
    struct jd_customer *c = jd_customer_new("}odd", 4, 1, NULL);
    struct jd_event ev = mkev("e", "purchase", 1700000000000, 3);
    jd_customer_apply_core(c, &ev);
    c->applied_offset = 9;
    add(c, "t-odd", NULL, "odd");
    struct jd_customer *cs[1] = {c};
    assert_int_equal(jd_store_flush(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_int_equal(cmd_int(e, "HLEN %s", "j:{}odd}:o"), 1);
    struct jd_customer *d = jd_customer_new("}odd", 4, 1, NULL);
    cs[0] = d;
    assert_int_equal(jd_store_load(e->st, NULL, cs, 1, e->err, sizeof e->err), 0);
    assert_int_equal(d->applied_offset, 9);
    assert_int_equal(d->npending, 1);
    jd_customer_destroy(c);
    jd_customer_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),   cmocka_unit_test(test_outbox_lifecycle),
        cmocka_unit_test(test_history_cap), cmocka_unit_test(test_many_one_roundtrip),
        cmocka_unit_test(test_redis_error), cmocka_unit_test(test_redis_killed),
        cmocka_unit_test(test_redis_hangs), cmocka_unit_test(test_python_reads_it),
        cmocka_unit_test(test_untagged_id), cmocka_unit_test(test_write_in_flight),
    };
    return jd_run_tests_in_pool(tests, setup, teardown);
}
