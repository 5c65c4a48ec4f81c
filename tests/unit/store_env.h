/*
 * store_env — a store on a real redis-server for unit tests: two input
 * topics ("touchpoints", "orders"), key prefix "j", a history of 3, and a
 * due list. Include after redis_fixture.c; setup/teardown are cmocka group
 * or test fixtures.
 */
#ifndef JD_TEST_STORE_ENV_H
#define JD_TEST_STORE_ENV_H

#include "journeyd/store.h"
#include "redis_fixture.h"

struct env {
    struct redis_fixture redis;
    char addr[64];
    char *addrs[1];
    char *topics[2];
    struct jd_config cfg;
    struct jd_store *st;
    struct jd_due_list due;
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
    e->topics[0] = "touchpoints";
    e->topics[1] = "orders";
    e->cfg.redis_addresses = e->addrs;
    e->cfg.nredis_addresses = 1;
    e->cfg.input_topics = e->topics;
    e->cfg.ninput_topics = 2;
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
    jd_due_list_init(&e->due);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    jd_due_list_free(&e->due);
    jd_store_destroy(e->st);
    redis_fixture_stop(&e->redis);
    free(e);
    return 0;
}

#endif
