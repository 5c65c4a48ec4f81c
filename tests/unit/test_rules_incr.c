/*
 * Incremental evaluation (what an event re-evaluates), sliding windows
 * (bucket precision, late and too-old events), next_change, disabled rules,
 * aggregate deduplication and the rule version.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "cmem_pool.h"

#include "rules_testlib.h"

static struct jd_ruleset *compile_ok(struct tsrc *t)
{
    struct jd_ruleset *rs = NULL;
    struct jd_errors errs;
    jd_errors_init(&errs);
    int rc = jd_rules_compile(&t->src, &rs, &errs);
    jd_errors_print(&errs, stdout);
    jd_errors_free(&errs);
    assert_int_equal(rc, 0);
    return rs;
}

static struct jd_eval_result res;

static void ev_at(const struct jd_ruleset *rs, struct jd_customer *c, const char *type, int64_t t,
                  double amount)
{
    struct jd_event ev = mkev(type, "web", t);
    if (amount >= 0) {
        ev.has_amount = 1;
        ev.amount = amount;
    }
    tc_event(rs, c, &ev, &res);
}

static void test_only_changed_inputs(void **state)
{
    (void)state;
    struct tsrc t;
    tsrc_init(&t);
    add_stage(&t, "big", "count('purchase') >= 2");
    add_stage(&t, "none", "true");
    add_seg(&t, "spender", "sum('purchase', amount) > 100");
    add_seg(&t, "browser", "count('page_view') >= 3");
    add_seg(&t, "rich_browser", "in_segment('spender') && in_segment('browser')");
    add_seg(&t, "is_big", "stage == 'big'");
    add_trig(&t, "first", "event: event.type == 'purchase' && count('purchase') == 1",
             JD_KIND_REWARD);
    add_trig(&t, "any_app", "event: event.channel == 'app'", JD_KIND_REWARD);
    struct jd_ruleset *rs = compile_ok(&t);
    struct jd_customer *c = tc_new(rs);

    ev_at(rs, c, "page_view", T0, -1); /* a new customer: everything */
    assert_int_equal(res.evaluated, 2 + 4 + 1);
    assert_int_equal(c->stage, 1);
    ev_at(rs, c, "page_view", T0 + 1, -1);  /* page_view rules only */
    assert_int_equal(res.evaluated, 1 + 1); /* browser, any_app */
    ev_at(rs, c, "page_view", T0 + 2, -1);  /* browser flips: rich_browser too */
    assert_int_equal(res.entered, 1ULL << 1);
    assert_int_equal(res.evaluated, 1 + 1 + 1);
    ev_at(rs, c, "app_open", T0 + 3, -1);  /* a type no rule reads */
    assert_int_equal(res.evaluated, 1);    /* any_app */
    ev_at(rs, c, "purchase", T0 + 4, 150); /* stages, spender, rich_browser, both triggers */
    assert_int_equal(res.evaluated, 2 + 1 + 1 + 2);
    assert_int_equal(res.entered, (1ULL << 0) | (1ULL << 2));
    assert_int_equal(res.nfired, 1);
    ev_at(rs, c, "purchase", T0 + 5, 10); /* stage changes: is_big follows */
    assert_int_equal(res.evaluated, 1 + 1 + 1 + 2);
    assert_int_equal(res.old_stage, 1);
    assert_int_equal(res.new_stage, 0);
    assert_int_equal(res.entered, 1ULL << 3);
    jd_rules_on_time(rs, c, T0 + 100 * DAY, &res); /* nothing depends on time */
    assert_int_equal(res.evaluated, 0);
    assert_int_equal(jd_rules_next_change(rs, c, T0 + 5), INT64_MAX);
    tc_destroy(c);
    jd_rules_destroy(rs);
}

static void test_sketch_page_view(void **state)
{
    (void)state;
    struct tsrc t;
    sketch_rules(&t);
    struct jd_ruleset *rs = compile_ok(&t);
    struct jd_customer *c = tc_new(rs);
    ev_at(rs, c, "purchase", T0, 10);
    ev_at(rs, c, "purchase", T0 + DAY, 10);
    assert_string_equal(jd_rules_stage_name(rs, (size_t)c->stage), "repeat");
    /* a page_view: the time-dependent stage chain (lapsed, at_risk, loyal,
     * repeat) and the time-dependent segments, not the purchase/feedback
     * event triggers */
    ev_at(rs, c, "page_view", T0 + 2 * DAY, -1);
    assert_int_equal(res.evaluated, 4 + 3); /* not detractor (feedback only) */
    ev_at(rs, c, "purchase", T0 + 3 * DAY, 10);
    assert_int_equal(res.evaluated, 4 + 3 + 1); /* + welcome_first_purchase */
    ev_at(rs, c, "feedback", T0 + 4 * DAY, -1);
    assert_int_equal(res.evaluated, 4 + 4 + 1); /* + detractor, service_recovery */
    tc_destroy(c);
    jd_rules_destroy(rs);
}

static void test_windows(void **state)
{
    (void)state;
    struct tsrc t;
    tsrc_init(&t);
    add_seg(&t, "s",
            "count('x', 30d) >= 0 && sum('x', amount, 30d) >= 0 && "
            "min('x', amount, 30d) >= 0 && max('x', amount, 30d) >= 0 && "
            "count('x', 3s) >= 0");
    struct jd_ruleset *rs = compile_ok(&t);
    assert_int_equal(jd_rules_naggs(rs), 5);
    struct jd_agg a;
    jd_rules_agg_init(rs, 0, &a);
    assert_int_equal(jd_rules_agg_nbuckets(rs, 0), 30);
    assert_null(a.ring); /* allocated by the first event in the window */
    jd_agg_free(&a);
    assert_null(a.ring);

    struct jd_customer *c = tc_new(rs);
    struct jd_ectx;
    /* explain prints each aggregate's value at a given instant */
    struct jd_buf out;
    jd_buf_init(&out);
    char err[64];
#define VALUES_AT(now, want)                                                                       \
    do {                                                                                           \
        jd_buf_reset(&out);                                                                        \
        assert_int_equal(jd_rules_explain(rs, c, NULL, "s", (now), &out, err, sizeof err), 0);     \
        const char *o = jd_buf_cstr(&out);                                                         \
        const char *v = strstr(o, "count('x', 30d) = ");                                           \
        char got[160];                                                                             \
        double n1, s1, n3;                                                                         \
        char mn[16], mx[16];                                                                       \
        assert_non_null(v);                                                                        \
        sscanf(v, "count('x', 30d) = %lf", &n1);                                                   \
        sscanf(strstr(o, "sum('x', amount, 30d) = "), "sum('x', amount, 30d) = %lf", &s1);         \
        sscanf(strstr(o, "min('x', amount, 30d) = "), "min('x', amount, 30d) = %15s", mn);         \
        sscanf(strstr(o, "max('x', amount, 30d) = "), "max('x', amount, 30d) = %15s", mx);         \
        sscanf(strstr(o, "count('x', 3s) = "), "count('x', 3s) = %lf", &n3);                       \
        snprintf(got, sizeof got, "%g %g %s %s %g", n1, s1, mn, mx, n3);                           \
        assert_string_equal(got, (want));                                                          \
    } while (0)

    int64_t b = (T0 / DAY) * DAY; /* a day boundary: the 30d window's buckets are days */
    ev_at(rs, c, "x", b + 10 * DAY, 5);
    VALUES_AT(b + 10 * DAY, "1 5 5 5 1");
    ev_at(rs, c, "x", b + 12 * DAY, 7);
    VALUES_AT(b + 12 * DAY, "2 12 5 7 1");
    /* late, still inside the window: lands in its bucket */
    ev_at(rs, c, "x", b + 5 * DAY, 1);
    VALUES_AT(b + 12 * DAY, "3 13 1 7 1");
    /* older than the window at the current time: ignored */
    struct jd_event old = mkev("x", "web", b - 20 * DAY);
    old.has_amount = 1;
    old.amount = 100;
    tc_apply_core(c, &old);
    jd_rules_on_event(rs, c, &old, b + 12 * DAY, &res);
    VALUES_AT(b + 12 * DAY, "3 13 1 7 1");
    /* the next change: first the 3s window's bucket, then the bucket of day 5
     * leaves the 30d window at day 35, to the millisecond */
    assert_int_equal(jd_rules_next_change(rs, c, b + 12 * DAY + 1), b + 12 * DAY + 3000);
    assert_int_equal(jd_rules_next_change(rs, c, b + 13 * DAY), b + 35 * DAY);
    VALUES_AT(b + 35 * DAY - 1, "3 13 1 7 0");
    VALUES_AT(b + 35 * DAY, "2 12 5 7 0");
    VALUES_AT(b + 40 * DAY, "1 7 7 7 0");
    VALUES_AT(b + 42 * DAY, "0 0 null null 0");
    /* the ring moves on: a new event 45 days later keeps what is still in the window */
    ev_at(rs, c, "x", b + 41 * DAY, 2);
    VALUES_AT(b + 41 * DAY, "2 9 2 7 1");
    /* a jump of more than the window clears it */
    ev_at(rs, c, "x", b + 200 * DAY, 3);
    VALUES_AT(b + 200 * DAY, "1 3 3 3 1");
    /* 3s window: 100 ms buckets */
    int64_t s0 = b + 300 * DAY;
    ev_at(rs, c, "x", s0, 1);
    ev_at(rs, c, "x", s0 + 1500, 1);
    VALUES_AT(s0 + 2999, "2 2 1 1 2");
    VALUES_AT(s0 + 3000, "2 2 1 1 1");
    VALUES_AT(s0 + 4500, "2 2 1 1 0");
    jd_buf_free(&out);
    tc_destroy(c);
    jd_rules_destroy(rs);
}

static void test_foreign_slot_shape(void **state)
{
    (void)state;
    struct tsrc t;
    tsrc_init(&t);
    add_seg(&t, "s", "count('x', 30d) >= 2");
    struct jd_ruleset *rs = compile_ok(&t);
    struct jd_customer *c = tc_new(rs);
    /* a slot stored with another bucket count (corrupt or foreign): starts
     * afresh */
    char v[128], err[128];
    int n = snprintf(v, sizeof v, "v1|a.count:x:30d=,5,%lld,%lld,3,3-5:1", (long long)T0,
                     (long long)T0);
    assert_int_equal(jd_customer_decode(c, rs, v, (size_t)n, err, sizeof err), 0);
    assert_null(c->aggs[0].ring);
    assert_true(c->aggs[0].n == 0);
    ev_at(rs, c, "x", T0, -1);
    assert_int_equal(c->segments, 0);
    ev_at(rs, c, "x", T0 + 1, -1);
    assert_int_equal(c->segments, 1);
    tc_destroy(c);
    jd_rules_destroy(rs);
}

static void test_disabled_and_dedup(void **state)
{
    (void)state;
    struct tsrc t;
    tsrc_init(&t);
    add_seg(&t, "a", "count('purchase', 30d) >= 1");
    add_seg(&t, "b", "count('purchase', 30d) >= 2 || sum('purchase', amount, 30d) > 10");
    add_seg(&t, "off", "count('refund', 7d) >= 1");
    t.segs[2].enabled = 0;
    add_trig(&t, "on_off", "enter:off", JD_KIND_REWARD);
    struct jd_trigger_src *d =
        add_trig(&t, "disabled", "event: event.type == 'purchase'", JD_KIND_REWARD);
    d->on.enabled = 0;
    struct jd_ruleset *rs = compile_ok(&t);
    char v1[17];
    strcpy(v1, jd_rules_version(rs));
    assert_int_equal(jd_rules_naggs(rs), 2); /* shared count slot; none for the disabled rule */
    assert_string_equal(jd_rules_agg_key(rs, 0), "count:purchase:30d");
    assert_string_equal(jd_rules_agg_key(rs, 1), "sum:purchase:amount:30d");
    struct jd_customer *c = tc_new(rs);
    ev_at(rs, c, "refund", T0, 5);
    assert_int_equal(res.evaluated, 2); /* a, b: the disabled segment never runs */
    assert_int_equal(c->segments, 0);
    ev_at(rs, c, "purchase", T0 + 1, 20);
    assert_int_equal(c->segments, 3);
    assert_int_equal(res.nfired, 0);
    tc_destroy(c);
    jd_rules_destroy(rs);

    /* the version covers enabled rules only */
    t.segs[2].expr = "count('refund', 8d) >= 1";
    rs = compile_ok(&t);
    assert_string_equal(jd_rules_version(rs), v1);
    jd_rules_destroy(rs);
    t.segs[1].expr = "count('purchase', 30d) >= 3";
    rs = compile_ok(&t);
    assert_string_not_equal(jd_rules_version(rs), v1);
    jd_rules_destroy(rs);
}

static void test_payload_only_window_needs_no_timer(void **state)
{
    (void)state;
    struct tsrc t;
    tsrc_init(&t);
    add_seg(&t, "buyer", "count('purchase') >= 1");
    struct jd_trigger_src *tr = add_trig(&t, "hi", "enter:buyer", JD_KIND_REWARD);
    add_payload(&t, tr, "spend", "sum('purchase', amount, 30d)");
    add_payload(&t, tr, "tz", "attr('tz')");
    add_payload(&t, tr, "avg", "avg('purchase', amount) / 3");
    struct jd_ruleset *rs = compile_ok(&t);
    struct jd_customer *c = tc_new(rs);
    struct jd_event ev = mkev("purchase", "web", T0);
    ev.has_amount = 1;
    ev.amount = 10;
    ev.nattrs = 1;
    ev.attr_keys[0] = "tz";
    ev.attr_vals[0] = "Asia/Tokyo";
    tc_event(rs, c, &ev, &res);
    assert_int_equal(res.nfired, 1);
    assert_string_equal(res.fired[0].attr_vals[0], "10");
    assert_string_equal(res.fired[0].attr_vals[1], "Asia/Tokyo");
    assert_string_equal(res.fired[0].attr_vals[2], "3.33333333333333");
    assert_string_equal(res.fired[0].reason, "count('purchase') >= 1 (count('purchase') = 1)");
    assert_int_equal(jd_rules_next_change(rs, c, T0), INT64_MAX);
    tc_destroy(c);
    jd_rules_destroy(rs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_only_changed_inputs),
        cmocka_unit_test(test_sketch_page_view),
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_foreign_slot_shape),
        cmocka_unit_test(test_disabled_and_dedup),
        cmocka_unit_test(test_payload_only_window_needs_no_timer),
    };
    return jd_run_tests_in_pool(tests, NULL, NULL);
}
