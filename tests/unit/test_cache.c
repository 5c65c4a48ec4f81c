/*
 * Unit tests for the per-instance customer cache (cache.c): lookups through
 * growth and deletions, the eviction order (second chance: a lookup marks a
 * customer, the eviction walk spares a marked one once), the eviction rules
 * (only clean customers with nothing left to write), and per-partition
 * iteration and dropping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "journeyd/store.h"

static struct jd_customer *mk(const char *id, int32_t partition)
{
    return jd_customer_new(id, strlen(id), partition, NULL);
}

static struct jd_customer *get(struct jd_cache *cache, const char *id)
{
    return jd_cache_get(cache, id, strlen(id));
}

static void test_lookup_and_growth(void **unused)
{
    struct jd_cache *cache = jd_cache_new(0);
    char id[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "cust-%d", i);
        jd_cache_put(cache, mk(id, i % 7));
    }
    assert_int_equal(jd_cache_size(cache), 5000);
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "cust-%d", i);
        struct jd_customer *c = get(cache, id);
        assert_non_null(c);
        assert_string_equal(c->id, id);
    }
    assert_null(get(cache, "cust-5000"));
    assert_null(jd_cache_get(cache, "cust-1", 5)); /* a prefix is another id */
    /* ids are byte strings */
    jd_cache_put(cache, jd_customer_new("a\0b", 3, 0, NULL));
    assert_non_null(jd_cache_get(cache, "a\0b", 3));
    assert_null(jd_cache_get(cache, "a\0c", 3));

    /* removals keep every other entry reachable (backward-shift deletion) */
    for (int i = 0; i < 5000; i += 3) {
        snprintf(id, sizeof id, "cust-%d", i);
        struct jd_customer *c = get(cache, id);
        jd_cache_remove(cache, c);
        jd_customer_destroy(c);
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "cust-%d", i);
        if (i % 3 == 0)
            assert_null(get(cache, id));
        else
            assert_non_null(get(cache, id));
    }
    assert_int_equal(jd_cache_size(cache), 5000 - 1667 + 1);
    jd_cache_destroy(cache);
}

static void test_eviction(void **unused)
{
    struct jd_cache *cache = jd_cache_new(4);
    struct jd_customer *c[6];
    for (int i = 0; i < 6; i++) {
        char id[8];
        snprintf(id, sizeof id, "c%d", i);
        c[i] = mk(id, 0);
        jd_cache_put(cache, c[i]);
    }
    /* mark c0 as looked up (the walk spares it once: it then goes to the
     * newest end), c1 dirty, c2 with a pending trigger, c3 with an acked id
     * still to remove from Redis */
    jd_cache_touch(cache, c[0]);
    c[1]->dirty = 1;
    struct jd_pending_trigger *p = jd_customer_add_pending(c[2]);
    strcpy(p->trigger_id, "t");
    p = jd_customer_add_pending(c[3]);
    strcpy(p->trigger_id, "t");
    p->stored = 1;
    assert_int_equal(jd_customer_ack(c[3], "t"), 0);

    /* c4, c5 and c0 may go; the two coldest do */
    assert_int_equal(jd_cache_evict(cache), 2);
    assert_int_equal(jd_cache_size(cache), 4);
    assert_null(get(cache, "c4"));
    assert_null(get(cache, "c5"));
    assert_int_equal(jd_cache_evict(cache), 0); /* at the limit */

    /* nothing evictable: the cache stays over its limit rather than lose data */
    jd_cache_touch(cache, c[0]);
    c[0]->dirty = 1;
    jd_cache_put(cache, mk("c6", 0));
    jd_cache_get(cache, "c6", 2)->dirty = 1;
    assert_int_equal(jd_cache_evict(cache), 0);
    assert_int_equal(jd_cache_size(cache), 5);

    /* once written back, the coldest clean one goes first: c1 */
    c[0]->dirty = 0;
    c[1]->dirty = 0;
    assert_int_equal(jd_customer_ack(c[2], "t"), 0);
    jd_customer_clear_acked(c[3]);
    assert_int_equal(jd_cache_evict(cache), 1);
    assert_null(get(cache, "c1"));
    /* get() marks c2: the walk spares it, c3 is the coldest unmarked */
    assert_non_null(get(cache, "c2"));
    jd_cache_put(cache, mk("c9", 0));
    assert_int_equal(jd_cache_evict(cache), 1);
    assert_null(get(cache, "c3"));
    assert_non_null(get(cache, "c0"));
    assert_non_null(get(cache, "c2"));
    assert_non_null(get(cache, "c9"));
    jd_cache_destroy(cache);

    /* an unbounded cache never evicts */
    cache = jd_cache_new(0);
    jd_cache_put(cache, mk("x", 0));
    assert_int_equal(jd_cache_evict(cache), 0);
    jd_cache_destroy(cache);
}

/* Second chance: a customer looked up since the last eviction pass is kept
 * (moved to the newest end, unmarked) while unmarked ones go; when every
 * customer is marked, the walk unmarks them all and goes on to the ones it
 * moved: the coldest of them then go. */
static void test_second_chance(void **unused)
{
    (void)unused;
    struct jd_cache *cache = jd_cache_new(3);
    char id[8];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "c%d", i);
        jd_cache_put(cache, mk(id, 0));
        assert_true(get(cache, id)->referenced); /* a lookup marks */
        get(cache, id)->referenced = 0;
    }
    /* oldest first: c0 c1 c2 c3 c4; c0 and c1 looked up */
    assert_non_null(get(cache, "c0"));
    assert_non_null(get(cache, "c1"));
    assert_int_equal(jd_cache_evict(cache), 2);
    assert_int_equal(jd_cache_size(cache), 3);
    assert_null(get(cache, "c2"));
    assert_null(get(cache, "c3"));
    /* now c4 c0 c1, all marked by these lookups */
    assert_non_null(get(cache, "c4"));
    assert_non_null(get(cache, "c0"));
    assert_non_null(get(cache, "c1"));

    /* every customer marked: c5 and c6 too */
    jd_cache_put(cache, mk("c5", 0));
    jd_cache_put(cache, mk("c6", 0));
    assert_non_null(get(cache, "c5"));
    assert_non_null(get(cache, "c6"));
    /* the walk moves c4 c0 c1 c5 c6 (unmarked) to the newest end in that
     * order, then meets c4 and c0 again: they go */
    assert_int_equal(jd_cache_evict(cache), 2);
    assert_int_equal(jd_cache_size(cache), 3);
    assert_null(get(cache, "c4"));
    assert_null(get(cache, "c0"));
    assert_non_null(get(cache, "c1"));
    assert_non_null(get(cache, "c5"));
    assert_non_null(get(cache, "c6"));
    jd_cache_destroy(cache);
}

static void count_fn(struct jd_customer *c, void *ud)
{
    int *n = ud;
    (*n)++;
    c->next_timer = 1; /* the callback may change the customer */
}

static void test_partitions(void **unused)
{
    struct jd_cache *cache = jd_cache_new(0);
    char id[16];
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "p%d", i);
        jd_cache_put(cache, mk(id, i % 4));
    }
    int n = 0;
    jd_cache_foreach(cache, 1, count_fn, &n);
    assert_int_equal(n, 25);
    n = 0;
    jd_cache_foreach(cache, -1, count_fn, &n);
    assert_int_equal(n, 100);
    jd_cache_drop_partition(cache, 2);
    assert_int_equal(jd_cache_size(cache), 75);
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "p%d", i);
        struct jd_customer *c = get(cache, id);
        if (i % 4 == 2) {
            assert_null(c);
        } else {
            assert_non_null(c);
            assert_int_equal(c->partition, i % 4);
        }
    }
    n = 0;
    jd_cache_foreach(cache, 2, count_fn, &n);
    assert_int_equal(n, 0);
    jd_cache_drop_partition(cache, -1);
    assert_int_equal(jd_cache_size(cache), 0);
    jd_cache_put(cache, mk("again", 0));
    assert_non_null(get(cache, "again"));
    jd_cache_destroy(cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_and_growth),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_second_chance),
        cmocka_unit_test(test_partitions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
