/*
 * Unit tests for the per-partition event clocks in Redis
 * (store_watermark.c) against a real redis-server: written and read back
 * in one round trip per call, absent ones read as none, a key holding
 * something else is named in the error and does not keep the others from
 * being written or read, and a lost connection is a failure to retry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "journeyd/redis_conn.h"
#include "journeyd/store.h"
#include "redis_fixture.c"
#include "store_env.h"

#define T0 1700000000000LL
#define SRC(topic, partition) ((int32_t)((topic) << 16 | (partition)))

static void hget_is(struct env *e, const char *key, const char *field, const char *want)
{
    redisReply *r = redis_fixture_cmd(&e->redis, "HGET %s %s", key, field);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, want);
    freeReplyObject(r);
}

static void cmd_ok(struct env *e, const char *cmd)
{
    redisReply *r = redis_fixture_cmd(&e->redis, cmd);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

static void test_save_and_load(void **state)
{
    struct env *e = *state;
    uint64_t rt = jd_store_roundtrips(e->st);
    struct jd_watermark w[3] = {{SRC(0, 3), 120, T0}, {SRC(1, 1), 7, T0 + 5}, {SRC(9, 0), 1, T0}};
    assert_int_equal(jd_store_watermarks_save(e->st, w, 3, e->err, sizeof e->err), 0);
    assert_int_equal(jd_store_roundtrips(e->st), rt + 1);
    hget_is(e, "j:{p:touchpoints:3}:wm", "watermark", "1700000000000");
    hget_is(e, "j:{p:touchpoints:3}:wm", "offset", "120");
    hget_is(e, "j:{p:orders:1}:wm", "watermark", "1700000000005");

    /* a newer one replaces it */
    w[0].offset = 300;
    w[0].watermark = T0 + 60000;
    assert_int_equal(jd_store_watermarks_save(e->st, w, 1, e->err, sizeof e->err), 0);

    struct jd_watermark r[4] = {
        {.source = SRC(0, 3)}, {.source = SRC(0, 4)}, {.source = SRC(1, 1)}, {.source = SRC(9, 0)}};
    assert_int_equal(jd_store_watermarks_load(e->st, r, 4, e->err, sizeof e->err), 0);
    assert_int_equal(r[0].watermark, T0 + 60000);
    assert_int_equal(r[0].offset, 300);
    assert_int_equal(r[1].watermark, -1); /* none stored */
    assert_int_equal(r[1].offset, -1);
    assert_int_equal(r[2].watermark, T0 + 5);
    assert_int_equal(r[2].offset, 7);
    assert_int_equal(r[3].watermark, -1); /* not an input topic: no key */
    assert_int_equal(jd_store_roundtrips(e->st), rt + 3);
}

static void test_foreign_keys(void **state)
{
    struct env *e = *state;
    cmd_ok(e, "SET j:{p:touchpoints:5}:wm something");
    cmd_ok(e, "HSET j:{p:touchpoints:6}:wm watermark soon offset 1");
    struct jd_watermark w[2] = {{SRC(0, 5), 10, T0}, {SRC(0, 2), 11, T0 + 1}};
    assert_int_equal(jd_store_watermarks_save(e->st, w, 2, e->err, sizeof e->err), 1);
    assert_non_null(strstr(e->err, "WRONGTYPE"));
    hget_is(e, "j:{p:touchpoints:2}:wm", "watermark", "1700000000001"); /* the other one */

    struct jd_watermark r[3] = {
        {.source = SRC(0, 5)}, {.source = SRC(0, 6)}, {.source = SRC(0, 2)}};
    assert_int_equal(jd_store_watermarks_load(e->st, r, 3, e->err, sizeof e->err), 1);
    assert_non_null(strstr(e->err, "WRONGTYPE"));
    assert_int_equal(r[0].watermark, -1);
    assert_int_equal(r[1].watermark, -1);
    assert_int_equal(r[2].watermark, T0 + 1);

    struct jd_watermark r6 = {.source = SRC(0, 6)};
    assert_int_equal(jd_store_watermarks_load(e->st, &r6, 1, e->err, sizeof e->err), 1);
    assert_non_null(strstr(e->err, "j:{p:touchpoints:6}:wm"));
    assert_int_equal(r6.watermark, -1);
}

static void test_unconnected(void **state)
{
    struct env *e = *state;
    redis_fixture_kill(&e->redis);
    struct jd_watermark w = {SRC(0, 1), 10, T0};
    assert_int_equal(jd_store_watermarks_save(e->st, &w, 1, e->err, sizeof e->err), -1);
    assert_non_null(strstr(e->err, "watermarks"));
    assert_int_equal(jd_store_watermarks_load(e->st, &w, 1, e->err, sizeof e->err), -1);
    assert_int_equal(redis_fixture_start(&e->redis), 0);
    assert_int_equal(jd_store_reconnect(e->st, e->err, sizeof e->err), 0);
    w = (struct jd_watermark){SRC(0, 1), 10, T0};
    assert_int_equal(jd_store_watermarks_save(e->st, &w, 1, e->err, sizeof e->err), 0);
    assert_int_equal(jd_store_watermarks_load(e->st, &w, 1, e->err, sizeof e->err), 0);
    assert_int_equal(w.watermark, T0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_save_and_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unconnected, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
