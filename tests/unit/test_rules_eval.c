/*
 * Rule evaluation: every function and operator against a table of customer
 * states, and the shipped (sketch) rule set played through a journey.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "cmem_pool.h"

#include <math.h>

#include "../../src/rules_int.h"
#include "rules_testlib.h"

/* ---- table: one segment per expression against a fixed history ---- */

static void play_history(const struct jd_ruleset *rs, struct jd_customer *c)
{
    struct jd_eval_result res;
    struct jd_event ev;
    ev = mkev("purchase", "web", T0 - 40 * DAY);
    ev.has_amount = 1;
    ev.amount = 10;
    tc_event(rs, c, &ev, &res);
    ev = mkev("purchase", "web", T0 - 2 * DAY);
    ev.has_amount = 1;
    ev.amount = 20;
    ev.nattrs = 1;
    ev.attr_keys[0] = "items";
    ev.attr_vals[0] = "2";
    tc_event(rs, c, &ev, &res);
    ev = mkev("purchase", "store", T0 - 36 * HOUR);
    ev.has_amount = 1;
    ev.amount = 30;
    ev.nattrs = 2;
    ev.attr_keys[0] = "items";
    ev.attr_vals[0] = "3";
    ev.attr_keys[1] = "tz";
    ev.attr_vals[1] = "Europe/Paris";
    tc_event(rs, c, &ev, &res);
    ev = mkev("feedback", "email", T0 - 10 * HOUR);
    ev.has_score = 1;
    ev.score = 4;
    tc_event(rs, c, &ev, &res);
    ev = mkev("add_to_cart", "web", T0 - 3 * HOUR);
    tc_event(rs, c, &ev, &res);
    ev = mkev("page_view", "app", T0 - 1 * HOUR);
    tc_event(rs, c, &ev, &res);
}

static const struct {
    const char *expr;
    int want;
} table[] = {
    /* literals and operators */
    {"true", 1},
    {"false", 0},
    {"1 + 2 * 3 == 7", 1},
    {"(1 + 2) * 3 == 9", 1},
    {"10 - 4 - 3 == 3", 1},
    {"10 / 4 == 2.5", 1},
    {"-3 + 5 == 2", 1},
    {"10 / 0 == 0", 0},
    {"10 / 0 != 0", 0},
    {"!(10 / 0 == 0)", 1},
    {"1 < 2 && 2 <= 2 && 3 > 2 && 3 >= 3", 1},
    {"1 > 2 || 2 > 1", 1},
    {"!true || !!false", 0},
    {"'a' < 'b' && 'b' >= 'b'", 1},
    {"'a' != 'a'", 0},
    {"\"x\" == 'x'", 1},
    {"30d == 720h", 1},
    {"1d / 1h == 24", 1},
    {"2 * 1h == 120m", 1},
    {"1s == 1000ms && 1w == 7d", 1},
    {"1h + 30m > 89m", 1},
    {"'web' in ['app', 'web']", 1},
    {"'x' in ['app', 'web']", 0},
    {"3 in [1, 2]", 0},
    {"2 in [1, 2]", 1},
    {"true == true && true != false", 1},
    /* core profile */
    {"count('purchase') == 3", 1},
    {"count('refund') == 0", 1},
    {"count_any() == 6", 1},
    {"first_seen == 1696544000000", 1},
    {"last_channel == 'app'", 1},
    {"last_channel in ['web', 'store']", 0},
    /* windowed and lifetime aggregates */
    {"count('purchase', 30d) == 2", 1},
    {"count('purchase', 1d) == 0", 1},
    {"count_any(1d) == 3", 1},
    {"count_any(30d) == 5", 1},
    {"sum('purchase', amount) == 60", 1},
    {"sum('purchase', amount, 30d) == 50", 1},
    {"avg('purchase', amount) == 20", 1},
    {"avg('purchase', amount, 30d) == 25", 1},
    {"min('purchase', amount) == 10", 1},
    {"max('purchase', amount) == 30", 1},
    {"min('purchase', amount, 30d) == 20", 1},
    {"max('purchase', amount, 1d) > 0", 0},
    {"avg('refund', amount) >= 0", 0},
    {"sum('refund', amount) == 0", 1},
    {"sum('purchase', attributes['items']) == 5", 1},
    {"avg('feedback', score) == 4", 1},
    {"last('feedback', score) == 4", 1},
    {"last('purchase', amount) == 30", 1},
    {"last('purchase', attributes['items']) == 3", 1},
    {"last('refund', amount) == 0", 0},
    {"days_since('purchase') == 1.5", 1},
    {"days_since('purchase') > 1d && days_since('purchase') < 2d", 1},
    {"days_since('purchase') >= 36h", 1},
    {"days_since_any() < 0.05", 1},
    {"days_since('refund') >= 0", 0},
    {"!(days_since('refund') >= 0)", 1},
    {"days_since('purchase') * 2 == 3", 1},
    {"not_followed_by('add_to_cart', 'purchase', 1h)", 1},
    {"not_followed_by('add_to_cart', 'purchase', 4h)", 0},
    {"not_followed_by('purchase', 'feedback', 1h)", 0},
    {"attr('tz') == 'Europe/Paris'", 1},
    {"attr('nope') == 'x'", 0},
    {"attr('nope') != 'x'", 0},
    {"!(attr('nope') == 'x')", 1},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        struct tsrc t;
        tsrc_init(&t);
        add_seg(&t, "s", table[i].expr);
        struct jd_ruleset *rs = NULL;
        struct jd_errors errs;
        jd_errors_init(&errs);
        int rc = jd_rules_compile(&t.src, &rs, &errs);
        if (rc != 0) {
            jd_errors_print(&errs, stdout);
            fail_msg("does not compile: %s", table[i].expr);
        }
        struct jd_customer *c = tc_new(rs);
        play_history(rs, c);
        struct jd_eval_result res;
        jd_rules_reevaluate(rs, c, T0, &res);
        int got = (int)(c->segments & 1);
        if (got != table[i].want)
            fail_msg("%s: got %d, want %d", table[i].expr, got, table[i].want);
        tc_destroy(c);
        jd_rules_destroy(rs);
        jd_errors_free(&errs);
    }
}

/* event fields, through an 'event:' trigger */
static const struct {
    const char *expr;
    int want;
} ev_table[] = {
    {"event.type == 'purchase'", 1},
    {"event.type in ['refund', 'purchase']", 1},
    {"event.channel == 'app'", 1},
    {"event.amount > 12.5 && event.amount < 13", 1},
    {"event.amount * 2 == 25.5", 1},
    {"event.score == 0", 0},
    {"event.score != 0", 0},
    {"event.attributes['sku'] == 'A1'", 1},
    {"event.attributes['missing'] == 'x'", 0},
    {"event.attributes['missing'] != 'x'", 0},
    {"event.type == 'purchase' && count('purchase') == 1", 1},
    {"event.type == 'refund' || event.channel == 'app'", 1},
    {"event.type == 'refund' || event.type == 'feedback'", 0},
};

static void test_event_fields(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ev_table / sizeof ev_table[0]; i++) {
        struct tsrc t;
        tsrc_init(&t);
        add_trig(&t, "t", ev_table[i].expr, JD_KIND_REWARD);
        char on[200];
        snprintf(on, sizeof on, "event: %s", ev_table[i].expr);
        t.trigs[0].on.expr = on;
        struct jd_ruleset *rs = NULL;
        struct jd_errors errs;
        jd_errors_init(&errs);
        if (jd_rules_compile(&t.src, &rs, &errs) != 0) {
            jd_errors_print(&errs, stdout);
            fail_msg("does not compile: %s", on);
        }
        struct jd_customer *c = tc_new(rs);
        struct jd_event ev = mkev("purchase", "app", T0);
        ev.has_amount = 1;
        ev.amount = 12.75;
        ev.nattrs = 1;
        ev.attr_keys[0] = "sku";
        ev.attr_vals[0] = "A1";
        struct jd_eval_result res;
        tc_event(rs, c, &ev, &res);
        if ((int)res.nfired != ev_table[i].want)
            fail_msg("%s: fired %zu, want %d", on, res.nfired, ev_table[i].want);
        tc_destroy(c);
        jd_rules_destroy(rs);
        jd_errors_free(&errs);
    }
}

static void test_stage_and_in_segment(void **state)
{
    (void)state;
    struct tsrc t;
    tsrc_init(&t);
    add_stage(&t, "big", "count('purchase') > 5");
    add_stage(&t, "small", "in_segment('base')");
    add_stage(&t, "none", "true");
    add_seg(&t, "is_small", "stage == 'small' && in_segment('base')");
    add_seg(&t, "base", "count_any() >= 1");
    add_seg(&t, "not_big", "stage != 'big' && stage in ['small', 'none']");
    add_trig(&t, "to_small", "stage:*->small", JD_KIND_REWARD);
    add_trig(&t, "none_to_small", "stage:none->small", JD_KIND_REWARD);
    add_trig(&t, "left_base", "exit:base", JD_KIND_REWARD);
    struct jd_ruleset *rs = NULL;
    struct jd_errors errs;
    jd_errors_init(&errs);
    int rc = jd_rules_compile(&t.src, &rs, &errs);
    jd_errors_print(&errs, stdout);
    assert_int_equal(rc, 0);
    struct jd_customer *c = tc_new(rs);
    struct jd_event ev = mkev("page_view", "web", T0);
    struct jd_eval_result res;
    tc_event(rs, c, &ev, &res);
    assert_int_equal(res.old_stage, -1);
    assert_int_equal(res.new_stage, 1);
    assert_int_equal(c->stage, 1);
    assert_int_equal(c->segments, 7);
    assert_int_equal(res.entered, 7);
    assert_int_equal(res.nfired, 1);
    assert_int_equal(res.fired[0].trigger, 0);
    assert_string_equal(res.fired[0].reason,
                        "stage (none) -> small: in_segment('base') (in_segment('base') = true)");
    tc_destroy(c);
    jd_rules_destroy(rs);
    jd_errors_free(&errs);
}

/* ---- the sketch's rules through a journey ---- */

static struct jd_eval_result res;

static void ev_at(const struct jd_ruleset *rs, struct jd_customer *c, const char *type,
                  const char *ch, int64_t t, double amount, int score)
{
    struct jd_event ev = mkev(type, ch, t);
    if (amount >= 0) {
        ev.has_amount = 1;
        ev.amount = amount;
    }
    if (score >= 0) {
        ev.has_score = 1;
        ev.score = score;
    }
    tc_event(rs, c, &ev, &res);
}

static void test_sketch_journey(void **state)
{
    (void)state;
    struct tsrc t;
    sketch_rules(&t);
    struct jd_ruleset *rs = NULL;
    struct jd_errors errs;
    jd_errors_init(&errs);
    int rc = jd_rules_compile(&t.src, &rs, &errs);
    jd_errors_print(&errs, stdout);
    assert_int_equal(rc, 0);
    assert_int_equal(jd_rules_nstages(rs), 7);
    assert_int_equal(jd_rules_nsegments(rs), 4);
    assert_int_equal(jd_rules_ntriggers(rs), 5);
    assert_int_equal(strlen(jd_rules_version(rs)), 16);
    /* the aggregates the shipped rules need, each once */
    const char *keys[] = {"since_any",           "since:purchase",
                          "count:purchase:180d", "count_any:30d",
                          "count:purchase:30d",  "nfb:add_to_cart:purchase:1h",
                          "last:feedback:score", "sum:purchase:amount:30d"};
    assert_int_equal(jd_rules_naggs(rs), 8);
    for (size_t i = 0; i < 8; i++)
        assert_string_equal(jd_rules_agg_key(rs, i), keys[i]);
    int vip = jd_rules_segment_index(rs, "vip");
    int cart = jd_rules_segment_index(rs, "cart_abandoner");
    int lapsed = jd_rules_segment_index(rs, "lapsed");
    int detr = jd_rules_segment_index(rs, "detractor");
    assert_int_equal(jd_rules_trigger_on(rs, 1), JD_ON_ENTER);

    struct jd_customer *c = tc_new(rs);
    ev_at(rs, c, "page_view", "web", T0, -1, -1);
    assert_string_equal(jd_rules_stage_name(rs, (size_t)c->stage), "prospect");
    assert_int_equal(res.evaluated, 7 + 4); /* everything but the guarded event triggers */
    assert_int_equal(res.nfired, 0);
    ev_at(rs, c, "page_view", "app", T0 + HOUR, -1, -1);
    assert_string_equal(jd_rules_stage_name(rs, (size_t)c->stage), "prospect");
    ev_at(rs, c, "product_view", "app", T0 + 2 * HOUR, -1, -1);
    assert_string_equal(jd_rules_stage_name(rs, (size_t)c->stage), "engaged");
    assert_int_equal(res.old_stage, jd_rules_stage_index(rs, "prospect"));

    ev_at(rs, c, "purchase", "web", T0 + DAY, 50, -1);
    assert_string_equal(jd_rules_stage_name(rs, (size_t)c->stage), "first_purchase");
    assert_int_equal(res.nfired, 1);
    assert_int_equal(res.fired[0].trigger, jd_rules_trigger_index(rs, "welcome_first_purchase"));
    assert_int_equal(res.fired[0].segment, -1);
    assert_string_equal(res.fired[0].reason,
                        "event.type == 'purchase' && count('purchase') == 1 (event.type = "
                        "'purchase', count('purchase') = 1)");

    ev_at(rs, c, "purchase", "app", T0 + 2 * DAY, 30, -1);
    assert_string_equal(jd_rules_stage_name(rs, (size_t)c->stage), "repeat");
    assert_int_equal(res.nfired, 0);
    ev_at(rs, c, "purchase", "app", T0 + 3 * DAY, 20.5, -1);
    assert_int_equal(res.entered, 1ULL << vip);
    assert_int_equal(res.nfired, 1);
    assert_int_equal(res.fired[0].trigger, jd_rules_trigger_index(rs, "vip_welcome"));
    assert_int_equal(res.fired[0].segment, vip);
    assert_string_equal(res.fired[0].reason,
                        "count('purchase', 30d) >= 3 (count('purchase', 30d) = 3)");
    assert_int_equal(res.fired[0].nattrs, 2);
    assert_string_equal(res.fired[0].attr_keys[0], "spend_30d");
    assert_string_equal(res.fired[0].attr_vals[0], "100.5");
    assert_string_equal(res.fired[0].attr_keys[1], "last_channel");
    assert_string_equal(res.fired[0].attr_vals[1], "app");
    /* the next change: the count_any(30d) bucket of the first page_view expires */
    assert_int_equal(jd_rules_next_change(rs, c, T0 + 3 * DAY), (T0 / DAY + 30) * DAY);

    ev_at(rs, c, "feedback", "email", T0 + 3 * DAY + HOUR, -1, 5);
    assert_int_equal(res.entered, 1ULL << detr);
    assert_int_equal(res.nfired, 1);
    assert_int_equal(res.fired[0].trigger, jd_rules_trigger_index(rs, "service_recovery"));
    assert_string_equal(res.fired[0].reason, "event.type == 'feedback' && event.score <= 6 "
                                             "(event.type = 'feedback', event.score = 5)");

    /* cart abandonment: the deadline is the next change, then a timer fires */
    int64_t tc = T0 + 4 * DAY;
    ev_at(rs, c, "add_to_cart", "web", tc, -1, -1);
    assert_int_equal(res.nfired, 0);
    assert_int_equal(jd_rules_next_change(rs, c, tc), tc + HOUR);
    jd_rules_on_time(rs, c, tc + HOUR - 1, &res);
    assert_int_equal(res.entered, 0);
    jd_rules_on_time(rs, c, tc + HOUR, &res);
    assert_int_equal(res.entered, 1ULL << cart);
    assert_int_equal(res.nfired, 1);
    assert_int_equal(res.fired[0].trigger, jd_rules_trigger_index(rs, "cart_reminder"));
    assert_string_equal(res.fired[0].reason,
                        "not_followed_by('add_to_cart', 'purchase', 1h) (not_followed_by("
                        "'add_to_cart', 'purchase', 1h) = true)");
    int64_t tp = tc + 2 * HOUR;
    ev_at(rs, c, "purchase", "web", tp, 10, -1);
    assert_int_equal(res.exited, 1ULL << cart);
    assert_int_equal(res.nfired, 0);

    /* time passes: vip ends when its purchases leave the window */
    jd_rules_on_time(rs, c, T0 + 40 * DAY, &res);
    assert_int_equal(res.exited, 1ULL << vip);
    assert_string_equal(jd_rules_stage_name(rs, (size_t)c->stage), "repeat");
    /* at_risk: more than 45 days since the last purchase, to the millisecond */
    int64_t nc = jd_rules_next_change(rs, c, tp + 45 * DAY - 10);
    assert_int_equal(nc, tp + 45 * DAY + 1);
    jd_rules_on_time(rs, c, tp + 45 * DAY, &res);
    assert_string_equal(jd_rules_stage_name(rs, (size_t)c->stage), "repeat");
    jd_rules_on_time(rs, c, nc, &res);
    assert_string_equal(jd_rules_stage_name(rs, (size_t)c->stage), "at_risk");
    assert_int_equal(res.nfired, 0);
    /* lapsed: 60 days without a touchpoint */
    assert_int_equal(jd_rules_next_change(rs, c, nc), tp + 60 * DAY);
    jd_rules_on_time(rs, c, tp + 60 * DAY, &res);
    assert_string_equal(jd_rules_stage_name(rs, (size_t)c->stage), "lapsed");
    assert_int_equal(res.entered, 1ULL << lapsed);
    assert_int_equal(res.nfired, 1);
    assert_int_equal(res.fired[0].trigger, jd_rules_trigger_index(rs, "winback"));
    assert_string_equal(res.fired[0].reason,
                        "count('purchase') >= 1 && days_since_any() >= 60 (count('purchase') = 4, "
                        "days_since_any() = 60)");
    assert_true(c->segments & (1ULL << detr));

    /* explain */
    struct jd_buf out;
    jd_buf_init(&out);
    char err[128];
    assert_int_equal(
        jd_rules_explain(rs, c, NULL, "segment:lapsed", tp + 60 * DAY, &out, err, sizeof err), 0);
    assert_string_equal(jd_buf_cstr(&out),
                        "segment lapsed: count('purchase') >= 1 && days_since_any() >= 60\n"
                        "  count('purchase') >= 1 && days_since_any() >= 60 = true\n"
                        "    count('purchase') >= 1 = true\n"
                        "      count('purchase') = 4\n"
                        "    days_since_any() >= 60 = true\n"
                        "      days_since_any() = 60\n"
                        "  member: yes\n");
    jd_buf_reset(&out);
    assert_int_equal(jd_rules_explain(rs, c, NULL, "nope", T0, &out, err, sizeof err), -1);
    assert_string_equal(err, "no stage, segment or trigger named nope");
    jd_buf_reset(&out);
    assert_int_equal(
        jd_rules_explain(rs, c, NULL, "vip_welcome", T0 + 3 * DAY, &out, err, sizeof err), 0);
    assert_string_equal(jd_buf_cstr(&out), "trigger vip_welcome (REWARD) on enter:vip\n"
                                           "  segment vip: count('purchase', 30d) >= 3\n"
                                           "  count('purchase', 30d) >= 3 = true\n"
                                           "    count('purchase', 30d) = 4\n"
                                           "  payload spend_30d = 110.5\n"
                                           "  payload last_channel = web\n");
    jd_buf_free(&out);
    tc_destroy(c);
    jd_rules_destroy(rs);
    jd_errors_free(&errs);
}

/* ---- values in reasons and payloads: jd_format_val prints without printf on
 * its common paths; the result must be what printf gave, cut included ---- */

static void ref_format_val(struct jd_val v, int precise, char *out, size_t size)
{
    if (v.t == V_NULL) {
        snprintf(out, size, "%s", precise ? "" : "null");
    } else if (v.t == V_BOOL) {
        snprintf(out, size, "%s", v.n != 0 ? "true" : "false");
    } else if (v.t == V_STR) {
        snprintf(out, size, precise ? "%s" : "'%s'", v.s);
    } else if (fabs(v.n) < 1e15 && v.n == floor(v.n)) {
        snprintf(out, size, "%.0f", v.n);
    } else if (precise) {
        snprintf(out, size, "%.15g", v.n);
    } else {
        snprintf(out, size, "%.2f", v.n);
        size_t l = strlen(out);
        while (l > 0 && out[l - 1] == '0')
            out[--l] = '\0';
        if (l > 0 && out[l - 1] == '.')
            out[--l] = '\0';
    }
}

static void test_format_val(void **state)
{
    (void)state;
    static const double nums[] = {0.0,   -0.0,     1,           -1,     7,         10,
                                  99,    100,      12345,       -98765, 999999999, 1e14 - 1,
                                  1e14,  1e15 - 1, -(1e15 - 1), 1e15,   2.5,       -0.25,
                                  110.5, 1.0 / 3,  123456.789,  NAN,    INFINITY,  -INFINITY};
    static const char *const strs[] = {"", "a", "web", "Europe/Paris", "it's"};
    struct jd_val vals[64];
    size_t nv = 0;
    vals[nv++] = (struct jd_val){.t = V_NULL};
    vals[nv++] = (struct jd_val){.t = V_BOOL, .n = 1};
    vals[nv++] = (struct jd_val){.t = V_BOOL, .n = 0};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        vals[nv++] = (struct jd_val){.t = V_NUM, .n = nums[i]};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        vals[nv++] = (struct jd_val){.t = V_STR, .s = strs[i]};
    for (size_t i = 0; i < nv; i++)
        for (int precise = 0; precise <= 1; precise++)
            for (size_t size = 1; size <= 24; size++) {
                char want[32], got[32];
                memset(got, 'x', sizeof got);
                ref_format_val(vals[i], precise, want, size);
                jd_format_val(vals[i], precise, got, size);
                if (strcmp(want, got) != 0)
                    fail_msg("value %zu precise %d size %zu: '%s', printf gives '%s'", i, precise,
                             size, got, want);
                assert_int_equal(got[size], 'x'); /* nothing past the buffer */
            }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_event_fields),
        cmocka_unit_test(test_stage_and_in_segment),
        cmocka_unit_test(test_sketch_journey),
        cmocka_unit_test(test_format_val),
    };
    return jd_run_tests_in_pool(tests, NULL, NULL);
}
