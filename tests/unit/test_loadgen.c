/*
 * Unit tests of the loadgen stream: determinism, event-time order, the
 * persona invariants the demo relies on (VIPs reach 3 purchases within 30
 * days, repeat buyers never do, browsers never buy, unhappy customers give a
 * score <= 6 after a purchase) and the bench event mix.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "journeyd/loadgen.h"

#define DAY_MS (24LL * 3600 * 1000)
#define START 1700000000000LL /* 2023-11-14T22:13:20Z */

static const char *attr(const struct jd_event *ev, const char *key)
{
    for (size_t i = 0; i < ev->nattrs; i++)
        if (!strcmp(ev->attr_keys[i], key))
            return ev->attr_vals[i];
    return NULL;
}

static struct jd_loadgen *make(enum jd_loadgen_profile p, uint64_t seed, uint64_t customers,
                               uint64_t events)
{
    struct jd_loadgen_opts o;
    char err[256];
    jd_loadgen_opts_default(&o, p);
    o.seed = seed;
    o.customers = customers;
    o.events = events;
    o.start_time_ms = START;
    struct jd_loadgen *g = jd_loadgen_new(&o, err, sizeof(err));
    assert_non_null(g);
    return g;
}

/* The whole stream as JSON lines. */
static char *stream_json(enum jd_loadgen_profile p, uint64_t seed, uint64_t customers,
                         uint64_t events)
{
    struct jd_loadgen *g = make(p, seed, customers, events);
    struct jd_buf out;
    struct jd_event ev;
    jd_buf_init(&out);
    while (jd_loadgen_next(g, &ev)) {
        jd_loadgen_event_json(&ev, jd_loadgen_last_persona(g), &out);
        jd_buf_puts(&out, "\n");
    }
    jd_loadgen_destroy(g);
    char *s = jd_strdup(jd_buf_cstr(&out));
    jd_buf_free(&out);
    return s;
}

static void test_rng_known_values(void **state)
{
    (void)state;
    /* splitmix64 reference output for state 0 (Vigna's splitmix64.c) */
    uint64_t sm = 0;
    assert_int_equal(jd_loadgen_splitmix64(&sm), 0xe220a8397b1dcdafULL);
    struct jd_loadgen_rng r;
    jd_loadgen_rng_seed(&r, 1);
    for (int i = 0; i < 10000; i++) {
        assert_true(jd_loadgen_rng_below(&r, 7) < 7);
        int64_t v = jd_loadgen_rng_range(&r, -3, 3);
        assert_true(v >= -3 && v <= 3);
        double u = jd_loadgen_rng_unit(&r);
        assert_true(u >= 0.0 && u < 1.0);
    }
}

static void test_same_seed_same_stream(void **state)
{
    (void)state;
    for (int p = JD_LOADGEN_DEMO; p <= JD_LOADGEN_BENCH; p++) {
        char *a = stream_json(p, 7, 200, 3000);
        char *b = stream_json(p, 7, 200, 3000);
        char *c = stream_json(p, 8, 200, 3000);
        assert_true(strlen(a) > 1000);
        assert_string_equal(a, b);
        assert_true(strcmp(a, c) != 0);
        free(a);
        free(b);
        free(c);
    }
}

static void test_demo_ordered_and_complete(void **state)
{
    (void)state;
    struct jd_loadgen *g = make(JD_LOADGEN_DEMO, 42, 300, 0);
    struct jd_event ev;
    int64_t prev = 0;
    uint64_t n = 0;
    char seen_ids[300] = {0};
    while (jd_loadgen_next(g, &ev)) {
        assert_true(ev.occurred_at >= prev);
        assert_true(ev.occurred_at >= START);
        assert_true(ev.occurred_at < START + 100 * DAY_MS);
        prev = ev.occurred_at;
        assert_int_equal(strlen(ev.customer_id), 11);
        assert_memory_equal(ev.customer_id, "cust-", 5);
        seen_ids[atoi(ev.customer_id + 5)] = 1;
        assert_non_null(attr(&ev, "tz"));
        n++;
    }
    assert_int_equal(n, jd_loadgen_count(g));
    assert_int_equal(jd_loadgen_customers_touched(g), 300);
    assert_true(n > 300 * 5);
    for (int i = 0; i < 300; i++)
        assert_true(seen_ids[i]);
    jd_loadgen_destroy(g);
}

/* Per customer: purchase times, max purchases in any 30-day window, scores. */
struct journey {
    int persona;
    int purchases;
    int max_in_30d;
    int64_t purchase_at[16];
    int carts;
    int feedbacks;
    int min_score, max_score;
    int64_t first_purchase_at, first_feedback_at, support_at;
};

static void test_demo_personas(void **state)
{
    (void)state;
    enum { N = 700 };
    struct journey *j = calloc(N, sizeof(*j));
    struct jd_loadgen *g = make(JD_LOADGEN_DEMO, 1234, N, 0);
    struct jd_event ev;
    while (jd_loadgen_next(g, &ev)) {
        struct journey *c = &j[atoi(ev.customer_id + 5)];
        c->persona = jd_loadgen_last_persona(g);
        assert_int_equal(c->persona, jd_loadgen_customer_persona(g, atoi(ev.customer_id + 5)));
        if (!strcmp(ev.type, "purchase")) {
            assert_true(ev.has_amount && ev.amount > 0);
            assert_true(!strcmp(ev.currency, "EUR") || !strcmp(ev.currency, "USD"));
            assert_non_null(attr(&ev, "sku"));
            if (c->purchases == 0)
                c->first_purchase_at = ev.occurred_at;
            c->purchase_at[c->purchases++] = ev.occurred_at;
            int in = 0;
            for (int k = 0; k < c->purchases; k++)
                in += ev.occurred_at - c->purchase_at[k] <= 30 * DAY_MS;
            if (in > c->max_in_30d)
                c->max_in_30d = in;
        } else {
            assert_false(ev.has_amount);
        }
        if (!strcmp(ev.type, "add_to_cart"))
            c->carts++;
        if (!strcmp(ev.type, "support_contact") && !c->support_at)
            c->support_at = ev.occurred_at;
        if (!strcmp(ev.type, "feedback")) {
            assert_true(ev.has_score);
            if (c->feedbacks++ == 0) {
                c->min_score = c->max_score = ev.score;
                c->first_feedback_at = ev.occurred_at;
            }
            if (ev.score < c->min_score)
                c->min_score = ev.score;
            if (ev.score > c->max_score)
                c->max_score = ev.score;
        } else {
            assert_false(ev.has_score);
        }
    }
    int per_persona[JD_PERSONA_COUNT] = {0};
    for (int i = 0; i < N; i++) {
        struct journey *c = &j[i];
        per_persona[c->persona]++;
        switch (c->persona) {
        case JD_PERSONA_BROWSER:
            assert_int_equal(c->purchases, 0);
            assert_int_equal(c->carts, 0);
            assert_int_equal(c->feedbacks, 0);
            break;
        case JD_PERSONA_FIRST_BUYER:
            assert_int_equal(c->purchases, 1);
            break;
        case JD_PERSONA_REPEAT_BUYER:
            assert_in_range(c->purchases, 2, 4);
            assert_true(c->max_in_30d <= 2);
            break;
        case JD_PERSONA_VIP:
            assert_true(c->purchases >= 3);
            assert_true(c->max_in_30d >= 3);
            break;
        case JD_PERSONA_UNHAPPY:
            assert_int_equal(c->purchases, 1);
            assert_int_equal(c->feedbacks, 1);
            assert_in_range(c->max_score, 0, 6);
            assert_true(c->support_at > c->first_purchase_at);
            assert_true(c->first_feedback_at > c->support_at);
            break;
        case JD_PERSONA_HAPPY:
            assert_int_equal(c->feedbacks, 1);
            assert_in_range(c->min_score, 9, 10);
            assert_true(c->first_feedback_at > c->first_purchase_at);
            break;
        case JD_PERSONA_CART_ABANDONER:
            assert_int_equal(c->purchases, 0);
            assert_true(c->carts >= 1);
            break;
        default:
            fail();
        }
    }
    /* the weights 22/18/15/12/12/11/10 are met exactly by the round robin */
    assert_int_equal(per_persona[JD_PERSONA_BROWSER], 154);
    assert_int_equal(per_persona[JD_PERSONA_CART_ABANDONER], 70);
    jd_loadgen_destroy(g);
    free(j);
}

static void test_bench_mix_and_ids(void **state)
{
    (void)state;
    enum { N = 200000 };
    struct jd_loadgen *g = make(JD_LOADGEN_BENCH, 99, 1000, N);
    struct jd_event ev;
    int page = 0, product = 0, cart = 0, purchase = 0, feedback = 0, low = 0;
    int64_t prev = START - 1;
    uint64_t n = 0;
    char last_id[64] = "";
    while (jd_loadgen_next(g, &ev)) {
        assert_true(ev.occurred_at == START + (int64_t)n);
        assert_true(ev.occurred_at > prev);
        prev = ev.occurred_at;
        assert_true(strcmp(ev.event_id, last_id) != 0);
        snprintf(last_id, sizeof(last_id), "%s", ev.event_id);
        page += !strcmp(ev.type, "page_view");
        product += !strcmp(ev.type, "product_view");
        cart += !strcmp(ev.type, "add_to_cart");
        if (!strcmp(ev.type, "purchase")) {
            purchase++;
            assert_true(ev.has_amount && ev.amount >= 10 && ev.amount <= 200);
        }
        if (!strcmp(ev.type, "feedback")) {
            feedback++;
            assert_true(ev.has_score && ev.score >= 0 && ev.score <= 10);
            low += ev.score <= 6;
        }
        n++;
    }
    assert_int_equal(n, N);
    /* 200 events per customer on average: every one of the 1000 appears */
    assert_int_equal(jd_loadgen_customers_touched(g), 1000);
    assert_in_range(page, N * 44 / 100, N * 46 / 100);
    assert_in_range(product, N * 19 / 100, N * 21 / 100);
    assert_in_range(cart, N * 9 / 100, N * 11 / 100);
    assert_in_range(purchase, N * 45 / 1000, N * 55 / 1000);
    assert_in_range(low, feedback * 25 / 100, feedback * 35 / 100);
    jd_loadgen_destroy(g);
}

static void test_bench_zipf_skews(void **state)
{
    (void)state;
    struct jd_loadgen_opts o;
    char err[256];
    int uniform0 = 0, zipf0 = 0;
    for (int z = 0; z < 2; z++) {
        jd_loadgen_opts_default(&o, JD_LOADGEN_BENCH);
        o.customers = 10000;
        o.events = 100000;
        o.zipf_s = z ? 1.0 : 0.0;
        struct jd_loadgen *g = jd_loadgen_new(&o, err, sizeof(err));
        assert_non_null(g);
        struct jd_event ev;
        while (jd_loadgen_next(g, &ev))
            *(z ? &zipf0 : &uniform0) += !strcmp(ev.customer_id, "cust-000000");
        jd_loadgen_destroy(g);
    }
    /* uniform: ~10 events; Zipf(1) over 10^4: 1/H(10^4) ~ 10 % of events */
    assert_true(uniform0 < 40);
    assert_true(zipf0 > 8000 && zipf0 < 12000);
}

static void test_bad_options(void **state)
{
    (void)state;
    struct jd_loadgen_opts o;
    char err[256] = "";
    jd_loadgen_opts_default(&o, JD_LOADGEN_BENCH);
    o.customers = 0;
    assert_null(jd_loadgen_new(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "customers"));
    jd_loadgen_opts_default(&o, JD_LOADGEN_BENCH);
    o.time_step_ms = -1;
    assert_null(jd_loadgen_new(&o, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_known_values),
        cmocka_unit_test(test_same_seed_same_stream),
        cmocka_unit_test(test_demo_ordered_and_complete),
        cmocka_unit_test(test_demo_personas),
        cmocka_unit_test(test_bench_mix_and_ids),
        cmocka_unit_test(test_bench_zipf_skews),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
