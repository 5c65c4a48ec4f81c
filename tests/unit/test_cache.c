/*
 * Unit tests for the per-instance customer cache (cache.c): lookups through
 * growth and deletions, the eviction order (second chance: a lookup or a put
 * marks a customer, the clock hand spares a marked one once), the eviction rules
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

#include "cmem_pool.h"

#include "journeyd/store.h"

static struct jd_customer *mk(const char *id, int32_t partition)
{
    return jd_customer_new(id, strlen(id), partition, NULL);
}

static struct jd_customer *get(struct jd_cache *cache, const char *id)
{
    return jd_cache_get(cache, id, strlen(id));
}

struct same {
    const struct jd_customer *c;
    int *n;
};

static void count_if_same(struct jd_customer *c, void *ud)
{
    struct same *s = ud;
    *s->n += c == s->c;
}

struct coll {
    struct jd_customer **out;
    int *n;
};

static void collect_fn(struct jd_customer *c, void *ud)
{
    struct coll *s = ud;
    s->out[(*s->n)++] = c;
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

/* Puts customers c<from>..c<to-1> and takes their marks off (a put marks). */
static void put_unmarked(struct jd_cache *cache, struct jd_customer **c, int from, int to)
{
    for (int i = from; i < to; i++) {
        char id[8];
        snprintf(id, sizeof id, "c%d", i);
        c[i] = mk(id, 0);
        jd_cache_put(cache, c[i]);
        assert_true(c[i]->referenced);
        c[i]->referenced = 0;
    }
}

static int present(struct jd_cache *cache, struct jd_customer *c)
{
    /* (no jd_cache_get: a lookup marks) */
    int n = 0;
    jd_cache_foreach(cache, -1, count_if_same, &(struct same){c, &n});
    return n;
}

static void test_eviction(void **unused)
{
    struct jd_cache *cache = jd_cache_new(4);
    struct jd_customer *c[12];
    put_unmarked(cache, c, 0, 6);
    /* mark c0 as looked up (the hand spares it once), c1 dirty, c2 with a
     * pending trigger, c3 with an acked id still to remove from Redis */
    jd_cache_touch(cache, c[0]);
    c[1]->dirty = 1;
    struct jd_pending_trigger *p = jd_customer_add_pending(c[2]);
    strcpy(p->trigger_id, "t");
    p = jd_customer_add_pending(c[3]);
    strcpy(p->trigger_id, "t");
    p->stored = 1;
    assert_int_equal(jd_customer_ack(c[3], "t"), 0);

    /* c4, c5 and c0 may go; c0 is marked: c4 and c5 go */
    assert_int_equal(jd_cache_evict(cache), 2);
    assert_int_equal(jd_cache_size(cache), 4);
    assert_null(get(cache, "c4"));
    assert_null(get(cache, "c5"));
    assert_int_equal(jd_cache_evict(cache), 0); /* at the limit */

    /* nothing evictable: the cache stays over its limit rather than lose data */
    c[0]->dirty = 1;
    put_unmarked(cache, c, 6, 7);
    c[6]->dirty = 1;
    assert_int_equal(jd_cache_evict(cache), 0);
    assert_int_equal(jd_cache_size(cache), 5);

    /* once written back, a clean one goes; the marked c2 is spared */
    c[0]->dirty = 0;
    c[0]->referenced = 1;
    c[1]->dirty = 0;
    c[1]->referenced = 1;
    assert_int_equal(jd_customer_ack(c[2], "t"), 0);
    jd_customer_clear_acked(c[3]);
    c[3]->referenced = 0;
    /* c0, c1 marked, c6 dirty: c2 (its ack still to write) stays, c3 goes */
    assert_int_equal(jd_cache_evict(cache), 1);
    assert_int_equal(jd_cache_size(cache), 4);
    assert_int_equal(present(cache, c[3]), 0);
    for (int i = 0; i < 7; i++)
        if (i != 3 && i != 4 && i != 5)
            assert_int_equal(present(cache, c[i]), 1);
    jd_cache_destroy(cache);

    /* an unbounded cache never evicts */
    cache = jd_cache_new(0);
    jd_cache_put(cache, mk("x", 0));
    assert_int_equal(jd_cache_evict(cache), 0);
    jd_cache_destroy(cache);
}

/* Second chance: a customer looked up since the hand last passed it is
 * kept (unmarked) while unmarked ones go; when every customer is marked,
 * the hand unmarks them all in a first turn and evicts in the next; the
 * hand goes on from where it stopped. */
static void test_second_chance(void **unused)
{
    (void)unused;
    struct jd_cache *cache = jd_cache_new(3);
    struct jd_customer *c[12];
    char id[16];
    put_unmarked(cache, c, 0, 5);
    assert_non_null(get(cache, "c0"));
    assert_true(c[0]->referenced); /* a lookup marks */
    assert_non_null(get(cache, "c1"));
    assert_int_equal(jd_cache_evict(cache), 2);
    assert_int_equal(jd_cache_size(cache), 3);
    assert_int_equal(present(cache, c[0]), 1);
    assert_int_equal(present(cache, c[1]), 1);
    assert_int_equal(present(cache, c[2]) + present(cache, c[3]) + present(cache, c[4]), 1);

    /* every customer marked: new ones too (a put marks); by id, not by
     * pointer: two of c2..c4 were freed */
    for (int i = 2; i < 5; i++) {
        snprintf(id, sizeof id, "c%d", i);
        (void)get(cache, id);
    }
    jd_cache_put(cache, mk("c5", 0));
    jd_cache_put(cache, mk("c6", 0));
    assert_non_null(get(cache, "c0"));
    assert_non_null(get(cache, "c1"));
    /* the first turn takes every mark off, the second evicts two */
    assert_int_equal(jd_cache_evict(cache), 2);
    assert_int_equal(jd_cache_size(cache), 3);
    assert_int_equal(jd_cache_evict(cache), 0);

    /* of the three left (unmarked now), one is looked up; two more come,
     * unmarked: the hand spares the marked one, two others go */
    struct jd_customer *left[3];
    int nleft = 0;
    jd_cache_foreach(cache, -1, collect_fn, &(struct coll){left, &nleft});
    assert_int_equal(nleft, 3);
    for (int i = 0; i < 3; i++)
        assert_false(left[i]->referenced);
    snprintf(id, sizeof id, "%s", left[1]->id);
    assert_non_null(get(cache, id));
    put_unmarked(cache, c, 7, 9);
    assert_int_equal(jd_cache_evict(cache), 2);
    assert_int_equal(jd_cache_size(cache), 3);
    assert_non_null(get(cache, id));

    /* many customers, a few looked up between passes: those always stay */
    jd_cache_destroy(cache);
    cache = jd_cache_new(50);
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "k%d", i);
        jd_cache_put(cache, mk(id, 0));
        if (i % 10 == 9) {
            for (int k = 0; k < 5; k++) { /* the hot ones */
                snprintf(id, sizeof id, "k%d", k);
                assert_non_null(get(cache, id));
            }
            jd_cache_evict(cache);
            assert_true(jd_cache_size(cache) <= 50);
        }
    }
    for (int k = 0; k < 5; k++) {
        snprintf(id, sizeof id, "k%d", k);
        assert_non_null(get(cache, id));
    }
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
    return jd_run_tests_in_pool(tests, NULL, NULL);
}
