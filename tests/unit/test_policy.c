/*
 * Unit tests for the contact policy (policy*.c): exact expectations for each
 * check at the edges of its window (1 ms before the end, exactly at it),
 * caps across triggers and priorities, quiet hours across midnight and DST
 * in real zones (Europe/Paris, America/New_York) with the deferral's end
 * time, holdout shares over 10,000 customers within binomial bounds,
 * consent, the state encoding of what the policy keeps, the suppression
 * history line and audit record, and global budgets shared by two
 * instances through a real redis-server.
 */
#include <avro.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cmem_pool.h"

#include "journeyd/policy.h"
#include "redis_fixture.c"
#include "rules_testlib.h"

#define MIN 60000LL

/* ms since the epoch of a UTC date-time */
static int64_t utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    return (int64_t)timegm(&tm) * 1000;
}

/* A rule set and policy config built in place. */
struct fx {
    struct tsrc src;
    struct jd_config cfg;
    struct jd_cap_src caps[4];
    struct jd_ruleset *rs;
    struct jd_policy *p;
    char schema[512];
    char addr[64];
    char *addrs[1];
    char err[512];
};

static void fx_init(struct fx *f)
{
    memset(f, 0, sizeof *f);
    tsrc_init(&f->src);
    f->cfg.policy.caps = f->caps;
    f->cfg.policy.quiet_tz_attribute = "tz";
    f->cfg.policy.quiet_default_tz = "UTC";
    f->cfg.suppressed_schema_id = -1;
    f->cfg.key_prefix = "j";
    f->cfg.redis_timeout_ms = 2000;
    f->cfg.history_max = 20;
}

static void fx_quiet(struct fx *f, unsigned kinds, int from, int to, int defer)
{
    f->cfg.policy.quiet_enabled = 1;
    f->cfg.policy.quiet_kinds = kinds;
    f->cfg.policy.quiet_from_min = from;
    f->cfg.policy.quiet_to_min = to;
    f->cfg.policy.quiet_defer = defer;
}

static void fx_cap(struct fx *f, enum jd_trigger_kind kind, int max, int64_t per)
{
    struct jd_cap_src *c = &f->caps[f->cfg.policy.ncaps++];
    c->kind = kind;
    c->max = max;
    c->per_ms = per;
}

static void fx_build(struct fx *f)
{
    struct jd_errors errs;
    jd_errors_init(&errs);
    if (jd_rules_compile(&f->src.src, &f->rs, &errs) != 0) {
        jd_errors_print(&errs, stderr);
        fail();
    }
    jd_errors_free(&errs);
    f->p = jd_policy_new(&f->cfg, f->err, sizeof f->err);
    if (!f->p)
        fail_msg("jd_policy_new: %s", f->err);
}

static void fx_free(struct fx *f)
{
    jd_policy_destroy(f->p);
    jd_rules_destroy(f->rs);
}

static struct jd_customer *cust(const struct fx *f, const char *id)
{
    return jd_customer_new(id, strlen(id), 0, f->rs);
}

static size_t trig(const struct fx *f, const char *name)
{
    int i = jd_rules_trigger_index(f->rs, name);
    assert_true(i >= 0);
    return (size_t)i;
}

/* Decides and returns the suppression word, or "" when allowed. */
static const char *decide(struct fx *f, struct jd_customer *c, const char *name, int64_t now,
                          struct jd_policy_decision *out)
{
    struct jd_policy_decision d;
    enum jd_policy_verdict v = jd_policy_decide(f->p, f->rs, c, trig(f, name), now, &d);
    if (out)
        *out = d;
    if (v == JD_POLICY_ALLOW) {
        assert_null(d.reason);
        return "";
    }
    assert_non_null(d.reason);
    assert_true(d.detail[0] != '\0');
    return d.reason;
}

static struct jd_event event(const char *type, const char *k, const char *v)
{
    struct jd_event ev = {0};
    ev.event_id = "e";
    ev.customer_id = "c";
    ev.type = type;
    ev.occurred_at = T0;
    if (k) {
        ev.nattrs = 1;
        ev.attr_keys[0] = k;
        ev.attr_vals[0] = v;
    }
    return ev;
}

/* ---------------- per trigger ---------------- */

static void test_cooldown_edges(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    add_trig(&f.src, "recover", "event: true", JD_KIND_REENGAGEMENT)->cooldown_ms = DAY;
    fx_build(&f);
    struct jd_customer *c = cust(&f, "c1");
    assert_string_equal(decide(&f, c, "recover", T0, NULL), "");
    assert_int_equal(jd_customer_last_fired(c)[0], T0);
    assert_int_equal(jd_customer_fired_count(c)[0], 1);
    struct jd_policy_decision d;
    assert_string_equal(decide(&f, c, "recover", T0 + DAY - 1, &d), "cooldown");
    assert_string_equal(d.detail, "recover was sent 86399999ms before, cooldown 1d");
    /* a suppression records nothing */
    assert_int_equal(jd_customer_last_fired(c)[0], T0);
    assert_int_equal(jd_customer_fired_count(c)[0], 1);
    assert_string_equal(decide(&f, c, "recover", T0 + DAY, NULL), "");
    assert_int_equal(jd_customer_last_fired(c)[0], T0 + DAY);
    assert_int_equal(jd_customer_fired_count(c)[0], 2);
    jd_customer_destroy(c);
    fx_free(&f);
}

static void test_max_per_customer(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    struct jd_trigger_src *t = add_trig(&f.src, "nudge", "event: true", JD_KIND_REWARD);
    t->max_per_window = 2;
    t->max_window_ms = DAY;
    fx_build(&f);
    struct jd_customer *c = cust(&f, "c1");
    assert_string_equal(decide(&f, c, "nudge", T0, NULL), "");
    assert_string_equal(decide(&f, c, "nudge", T0 + HOUR, NULL), "");
    struct jd_policy_decision d;
    assert_string_equal(decide(&f, c, "nudge", T0 + 2 * HOUR, &d), "cap");
    assert_string_equal(d.detail, "nudge was sent 2 time(s) in the last 1d (max 2)");
    assert_string_equal(decide(&f, c, "nudge", T0 + DAY - 1, NULL), "cap");
    /* the window is (now - 1d, now]: the send at T0 has left it */
    assert_string_equal(decide(&f, c, "nudge", T0 + DAY, NULL), "");
    assert_string_equal(decide(&f, c, "nudge", T0 + DAY + HOUR - 1, NULL), "cap");
    assert_string_equal(decide(&f, c, "nudge", T0 + DAY + HOUR, NULL), "");
    /* only what a window can still count is kept */
    assert_int_equal(c->trigger_sends[0].n, 2);
    assert_int_equal(c->trigger_sends[0].t[0], T0 + DAY);
    assert_int_equal(c->trigger_sends[0].t[1], T0 + DAY + HOUR);
    jd_customer_destroy(c);
    fx_free(&f);
}

/* ---------------- per customer, across triggers ---------------- */

static void test_kind_cap(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    add_trig(&f.src, "a", "event: true", JD_KIND_REENGAGEMENT);
    add_trig(&f.src, "b", "event: true", JD_KIND_REENGAGEMENT);
    add_trig(&f.src, "gift", "event: true", JD_KIND_REWARD);
    fx_cap(&f, JD_KIND_REENGAGEMENT, 2, 7 * DAY);
    fx_build(&f);
    struct jd_customer *c = cust(&f, "c1");
    assert_string_equal(decide(&f, c, "a", T0, NULL), "");
    assert_string_equal(decide(&f, c, "b", T0 + DAY, NULL), "");
    struct jd_policy_decision d;
    assert_string_equal(decide(&f, c, "a", T0 + 2 * DAY, &d), "cap");
    assert_string_equal(d.detail, "2 REENGAGEMENT trigger(s) sent in the last 1w (cap 2)");
    assert_string_equal(decide(&f, c, "b", T0 + 7 * DAY - 1, NULL), "cap");
    /* another kind is not capped */
    for (int i = 0; i < 5; i++)
        assert_string_equal(decide(&f, c, "gift", T0 + 2 * DAY + i, NULL), "");
    assert_string_equal(decide(&f, c, "b", T0 + 7 * DAY, NULL), "");
    assert_string_equal(decide(&f, c, "a", T0 + 8 * DAY - 1, NULL), "cap");
    assert_string_equal(decide(&f, c, "a", T0 + 8 * DAY, NULL), "");
    assert_int_equal(c->kind_sends[JD_KIND_REENGAGEMENT].n, 2);
    assert_int_equal(c->kind_sends[JD_KIND_REWARD].n, 0); /* no cap on REWARD: nothing kept */
    jd_customer_destroy(c);
    fx_free(&f);
}

static void test_priority(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    add_trig(&f.src, "low", "event: true", JD_KIND_REENGAGEMENT)->priority = 0;
    add_trig(&f.src, "mid", "event: true", JD_KIND_REENGAGEMENT)->priority = 5;
    add_trig(&f.src, "high", "event: true", JD_KIND_REENGAGEMENT)->priority = 10;
    add_trig(&f.src, "mid2", "event: true", JD_KIND_REENGAGEMENT)->priority = 5;
    fx_cap(&f, JD_KIND_REENGAGEMENT, 2, 7 * DAY);
    fx_build(&f);

    /* one evaluation fired all four, in rule order */
    struct jd_eval_result res;
    memset(&res, 0, sizeof res);
    res.nfired = 4;
    for (uint32_t i = 0; i < 4; i++)
        res.fired[i].trigger = i;
    size_t order[JD_MAX_FIRED];
    jd_policy_order(f.rs, &res, order);
    /* higher first; among equals, rule order */
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 3);
    assert_int_equal(order[3], 0);

    struct jd_customer *c = cust(&f, "c1");
    const char *want[4] = {"", "", "cap", "cap"};
    for (size_t i = 0; i < 4; i++) {
        struct jd_policy_decision d;
        enum jd_policy_verdict v =
            jd_policy_decide(f.p, f.rs, c, res.fired[order[i]].trigger, T0, &d);
        assert_string_equal(v == JD_POLICY_ALLOW ? "" : d.reason, want[i]);
    }
    assert_int_equal(jd_customer_fired_count(c)[trig(&f, "high")], 1);
    assert_int_equal(jd_customer_fired_count(c)[trig(&f, "mid")], 1);
    assert_int_equal(jd_customer_fired_count(c)[trig(&f, "mid2")], 0);
    assert_int_equal(jd_customer_fired_count(c)[trig(&f, "low")], 0);
    jd_customer_destroy(c);
    fx_free(&f);
}

/* ---------------- quiet hours ---------------- */

#define REENG (1u << JD_KIND_REENGAGEMENT)

static struct jd_customer *in_zone(struct fx *f, const char *id, const char *tz)
{
    struct jd_customer *c = cust(f, id);
    struct jd_event ev = event("page_view", "tz", tz);
    jd_policy_observe_event(f->p, c, &ev);
    assert_string_equal(c->tz, tz);
    return c;
}

/* Expects trigger `name` at `now` to be deferred to `until` (0: sent at once). */
static void expect_defer(struct fx *f, struct jd_customer *c, const char *name, int64_t now,
                         int64_t until)
{
    struct jd_policy_decision d;
    assert_string_equal(decide(f, c, name, now, &d), "");
    assert_int_equal(d.not_before, until);
    assert_int_equal(d.send_at, until ? until : now);
    if (until)
        assert_non_null(strstr(d.detail, "deferred by quiet hours 21:00-08:00 in "));
}

static void test_quiet_paris(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    add_trig(&f.src, "r", "event: true", JD_KIND_REENGAGEMENT);
    add_trig(&f.src, "gift", "event: true", JD_KIND_REWARD);
    fx_quiet(&f, REENG, 21 * 60, 8 * 60, 1);
    fx_build(&f);
    struct jd_customer *c = in_zone(&f, "c1", "Europe/Paris");

    /* winter (CET, UTC+1): 21:00 local is 20:00Z, 08:00 local is 07:00Z */
    expect_defer(&f, c, "r", utc(2024, 1, 15, 20, 0) - 1, 0);
    expect_defer(&f, c, "r", utc(2024, 1, 15, 20, 0), utc(2024, 1, 16, 7, 0));
    /* across midnight: 23:30 and 00:30 local end at the same 08:00 */
    expect_defer(&f, c, "r", utc(2024, 1, 15, 22, 30), utc(2024, 1, 16, 7, 0));
    expect_defer(&f, c, "r", utc(2024, 1, 15, 23, 30), utc(2024, 1, 16, 7, 0));
    expect_defer(&f, c, "r", utc(2024, 1, 16, 7, 0) - 1, utc(2024, 1, 16, 7, 0));
    expect_defer(&f, c, "r", utc(2024, 1, 16, 7, 0), 0);
    /* REWARD is not held back */
    expect_defer(&f, c, "gift", utc(2024, 1, 15, 23, 0), 0);

    /* the night the clocks go forward (2024-03-31 02:00 CET -> 03:00 CEST at
     * 01:00Z): from 22:00 CET, 08:00 CEST is 06:00Z, 9 hours later */
    expect_defer(&f, c, "r", utc(2024, 3, 30, 21, 0), utc(2024, 3, 31, 6, 0));
    /* the night they go back (2024-10-27 03:00 CEST -> 02:00 CET at 01:00Z):
     * from 22:00 CEST (20:00Z), 08:00 CET is 07:00Z, 11 hours later */
    expect_defer(&f, c, "r", utc(2024, 10, 26, 20, 0), utc(2024, 10, 27, 7, 0));
    /* summer: quiet starts at 19:00Z */
    expect_defer(&f, c, "r", utc(2024, 7, 1, 19, 0) - 1, 0);
    expect_defer(&f, c, "r", utc(2024, 7, 1, 19, 0), utc(2024, 7, 2, 6, 0));

    /* the same instant for a customer in the default zone (UTC) is day time */
    struct jd_customer *u = cust(&f, "c2");
    expect_defer(&f, u, "r", utc(2024, 7, 1, 19, 0), 0);
    expect_defer(&f, u, "r", utc(2024, 7, 1, 21, 0), utc(2024, 7, 2, 8, 0));
    /* an unknown zone falls back to the default, an empty value clears it */
    struct jd_event ev = event("page_view", "tz", "Mars/Olympus_Mons");
    jd_policy_observe_event(f.p, u, &ev);
    expect_defer(&f, u, "r", utc(2024, 7, 1, 19, 0), 0);
    ev = event("page_view", "tz", "");
    jd_policy_observe_event(f.p, c, &ev);
    assert_null(c->tz);
    jd_customer_destroy(c);
    jd_customer_destroy(u);
    fx_free(&f);
}

static void test_quiet_new_york(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    add_trig(&f.src, "r", "event: true", JD_KIND_REENGAGEMENT);
    fx_quiet(&f, REENG, 21 * 60, 8 * 60, 1);
    fx_build(&f);
    struct jd_customer *c = in_zone(&f, "c1", "America/New_York");
    /* EST (UTC-5): 21:00 local is 02:00Z the next day */
    expect_defer(&f, c, "r", utc(2024, 1, 16, 2, 0) - 1, 0);
    expect_defer(&f, c, "r", utc(2024, 1, 16, 2, 0), utc(2024, 1, 16, 13, 0));
    /* spring forward 2024-03-10 (07:00Z): from 23:00 EST, 08:00 EDT = 12:00Z */
    expect_defer(&f, c, "r", utc(2024, 3, 10, 4, 0), utc(2024, 3, 10, 12, 0));
    /* fall back 2024-11-03 (06:00Z): from 22:00 EDT, 08:00 EST = 13:00Z */
    expect_defer(&f, c, "r", utc(2024, 11, 3, 2, 0), utc(2024, 11, 3, 13, 0));
    /* 01:30 EST after the fall back is still quiet */
    expect_defer(&f, c, "r", utc(2024, 11, 3, 6, 30), utc(2024, 11, 3, 13, 0));
    jd_customer_destroy(c);
    fx_free(&f);

    /* quiet hours ending inside the gap (02:30 does not exist on
     * 2024-03-10): they end when the clock jumps to 03:00 EDT (07:00Z) */
    fx_init(&f);
    add_trig(&f.src, "r", "event: true", JD_KIND_REENGAGEMENT);
    fx_quiet(&f, REENG, 21 * 60, 2 * 60 + 30, 1);
    fx_build(&f);
    c = in_zone(&f, "c1", "America/New_York");
    struct jd_policy_decision d;
    assert_string_equal(decide(&f, c, "r", utc(2024, 3, 10, 4, 0), &d), "");
    assert_int_equal(d.not_before, utc(2024, 3, 10, 7, 0));
    assert_string_equal(d.detail, "deferred by quiet hours 21:00-02:30 in America/New_York until "
                                  "2024-03-10T07:00:00Z");
    jd_customer_destroy(c);
    fx_free(&f);
}

static void test_quiet_drop_and_counting(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    add_trig(&f.src, "r", "event: true", JD_KIND_REENGAGEMENT)->cooldown_ms = DAY;
    fx_quiet(&f, REENG, 21 * 60, 8 * 60, 0);
    fx_build(&f);
    struct jd_customer *c = cust(&f, "c1"); /* default zone: UTC */
    struct jd_policy_decision d;
    assert_string_equal(decide(&f, c, "r", utc(2024, 1, 15, 21, 0), &d), "quiet_hours");
    assert_string_equal(d.detail, "quiet hours 21:00-08:00 in UTC (local time 21:00)");
    assert_int_equal(jd_customer_fired_count(c)[0], 0);
    assert_string_equal(decide(&f, c, "r", utc(2024, 1, 16, 8, 0), NULL), "");
    jd_customer_destroy(c);
    fx_free(&f);

    /* deferred: cooldowns count from the send time */
    fx_init(&f);
    add_trig(&f.src, "r", "event: true", JD_KIND_REENGAGEMENT)->cooldown_ms = DAY;
    fx_quiet(&f, REENG, 21 * 60, 8 * 60, 1);
    fx_build(&f);
    c = cust(&f, "c1");
    expect_defer(&f, c, "r", utc(2024, 1, 15, 22, 0), utc(2024, 1, 16, 8, 0));
    assert_int_equal(jd_customer_last_fired(c)[0], utc(2024, 1, 16, 8, 0));
    /* later the same night: same send time, within the cooldown */
    assert_string_equal(decide(&f, c, "r", utc(2024, 1, 16, 7, 0), &d), "cooldown");
    assert_string_equal(decide(&f, c, "r", utc(2024, 1, 16, 20, 59), &d), "cooldown");
    /* 1 ms before the next morning's end of quiet hours: deferred to it,
     * which is exactly one cooldown after the first send */
    expect_defer(&f, c, "r", utc(2024, 1, 17, 8, 0) - 1, utc(2024, 1, 17, 8, 0));
    jd_customer_destroy(c);
    fx_free(&f);
}

/* ---------------- holdout ---------------- */

static void test_holdout_share(void **state)
{
    (void)state;
    static const double shares[] = {0.10, 0.5, 0.01};
    char id[32];
    for (size_t s = 0; s < 3; s++) {
        int n = 10000, in = 0, in_other_salt = 0, both = 0;
        for (int i = 0; i < n; i++) {
            snprintf(id, sizeof id, "customer-%d", i);
            int a = jd_policy_in_holdout(id, "winback", shares[s]);
            int b = jd_policy_in_holdout(id, "winback-2025", shares[s]);
            assert_int_equal(a, jd_policy_in_holdout(id, "winback", shares[s]));
            in += a;
            in_other_salt += b;
            both += a && b;
        }
        /* binomial(10000, p): 5 standard deviations around the mean (a
         * chance of 6e-7 to fail for a fair hash; the hash is fixed, so
         * the result is too) */
        double mean = n * shares[s], sd = sqrt(n * shares[s] * (1 - shares[s]));
        assert_true(in > mean - 5 * sd && in < mean + 5 * sd);
        assert_true(in_other_salt > mean - 5 * sd && in_other_salt < mean + 5 * sd);
        /* another salt draws an independent group: overlap ~ n p^2 */
        double mo = n * shares[s] * shares[s], so = sqrt(n * shares[s] * shares[s]);
        assert_true(both > mo - 5 * so - 1 && both < mo + 5 * so + 1);
    }
    assert_int_equal(jd_policy_in_holdout("x", "t", 0), 0);
    assert_int_equal(jd_policy_in_holdout("x", "t", 1), 1);
}

static void test_holdout_decision(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    add_trig(&f.src, "winback", "event: true", JD_KIND_REENGAGEMENT)->holdout = 0.10;
    struct jd_trigger_src *t2 = add_trig(&f.src, "salted", "event: true", JD_KIND_REENGAGEMENT);
    t2->holdout = 0.10;
    t2->holdout_salt = "winback";
    fx_build(&f);
    char id[32];
    int held = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "customer-%d", i);
        struct jd_customer *c = cust(&f, id);
        struct jd_policy_decision d;
        const char *r = decide(&f, c, "winback", T0, &d);
        int in = jd_policy_in_holdout(id, "winback", 0.10);
        assert_string_equal(r, in ? "holdout" : "");
        assert_int_equal(d.holdout, in);
        held += in;
        if (in)
            assert_string_equal(d.detail, "customer is in the 10% holdout group of winback");
        /* the same salt: the same group */
        assert_string_equal(decide(&f, c, "salted", T0, NULL), in ? "holdout" : "");
        jd_customer_destroy(c);
    }
    assert_true(held > 850 && held < 1150);
    fx_free(&f);
}

/* ---------------- consent ---------------- */

static void test_optout(void **state)
{
    (void)state;
    assert_int_equal(jd_policy_parse_kinds("REENGAGEMENT"), 1u << JD_KIND_REENGAGEMENT);
    assert_int_equal(jd_policy_parse_kinds("reward, Reengagement"), 3);
    assert_int_equal(jd_policy_parse_kinds("all"), 3);
    assert_int_equal(jd_policy_parse_kinds("none"), 0);
    assert_int_equal(jd_policy_parse_kinds(""), 0);
    assert_int_equal(jd_policy_parse_kinds("sms,COUPON"), 0);

    struct fx f;
    fx_init(&f);
    f.cfg.policy.optout_attribute = "optout";
    add_trig(&f.src, "r", "event: true", JD_KIND_REENGAGEMENT)->holdout = 1;
    add_trig(&f.src, "gift", "event: true", JD_KIND_REWARD);
    fx_build(&f);
    struct jd_customer *c = cust(&f, "c1");
    struct jd_event ev = event("page_view", "optout", "REENGAGEMENT");
    jd_policy_observe_event(f.p, c, &ev);
    struct jd_policy_decision d;
    /* consent comes before the holdout */
    assert_string_equal(decide(&f, c, "r", T0, &d), "optout");
    assert_string_equal(d.detail, "customer opted out of REENGAGEMENT triggers");
    assert_true(d.holdout);
    assert_string_equal(decide(&f, c, "gift", T0, NULL), "");
    /* the attribute replaces the list */
    ev = event("page_view", "optout", "none");
    jd_policy_observe_event(f.p, c, &ev);
    assert_string_equal(decide(&f, c, "r", T0, NULL), "holdout");
    /* an unsubscribe touchpoint names a kind... */
    ev = event("unsubscribe", "kind", "REWARD");
    jd_policy_observe_event(f.p, c, &ev);
    assert_string_equal(decide(&f, c, "gift", T0 + 1, NULL), "optout");
    assert_string_equal(decide(&f, c, "r", T0 + 1, NULL), "holdout");
    /* ...or, without one, every kind */
    ev = event("unsubscribe", NULL, NULL);
    jd_policy_observe_event(f.p, c, &ev);
    assert_int_equal(c->optout, 3);
    /* subscribe lifts the kind it names */
    ev = event("subscribe", "kind", "reward");
    jd_policy_observe_event(f.p, c, &ev);
    assert_int_equal(c->optout, 1u << JD_KIND_REENGAGEMENT);
    assert_string_equal(decide(&f, c, "gift", T0 + 2, NULL), "");
    /* other touchpoints without the attribute change nothing */
    ev = event("purchase", "kind", "REWARD");
    jd_policy_observe_event(f.p, c, &ev);
    assert_int_equal(c->optout, 1u << JD_KIND_REENGAGEMENT);
    jd_customer_destroy(c);
    fx_free(&f);
}

/* ---------------- state, history, audit ---------------- */

static void test_state_roundtrip(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    struct jd_trigger_src *t = add_trig(&f.src, "nudge", "event: true", JD_KIND_REENGAGEMENT);
    t->max_per_window = 3;
    t->max_window_ms = DAY;
    add_trig(&f.src, "gift", "event: true", JD_KIND_REWARD);
    fx_cap(&f, JD_KIND_REENGAGEMENT, 2, 7 * DAY);
    fx_build(&f);
    struct jd_customer *c = in_zone(&f, "c1", "America/New_York");
    c->optout = 1u << JD_KIND_REWARD;
    assert_string_equal(decide(&f, c, "nudge", T0, NULL), "");
    assert_string_equal(decide(&f, c, "nudge", T0 + HOUR, NULL), "");
    struct jd_buf b;
    jd_buf_init(&b);
    jd_customer_encode(c, f.rs, &b);
    const char *s = jd_buf_cstr(&b);
    assert_non_null(strstr(s, "|tt.nudge=1700000000000,1700003600000"));
    assert_non_null(strstr(s, "|kt.REENGAGEMENT=1700000000000,1700003600000"));
    assert_non_null(strstr(s, "|tz=America/New_York"));
    assert_non_null(strstr(s, "|oo=REWARD"));
    struct jd_customer *d = cust(&f, "c1");
    char err[256];
    assert_int_equal(jd_customer_decode(d, f.rs, b.data, b.len, err, sizeof err), 0);
    assert_string_equal(d->tz, "America/New_York");
    assert_int_equal(d->optout, 1u << JD_KIND_REWARD);
    assert_int_equal(d->trigger_sends[0].n, 2);
    assert_int_equal(d->trigger_sends[0].t[1], T0 + HOUR);
    assert_int_equal(d->kind_sends[JD_KIND_REENGAGEMENT].n, 2);
    /* and the decoded customer decides like the original */
    assert_string_equal(decide(&f, d, "nudge", T0 + 2 * HOUR, NULL), "cap");
    assert_string_equal(decide(&f, d, "gift", T0 + 2 * HOUR, NULL), "optout");
    /* corrupt lists are rejected */
    static const char *const bad[] = {"v1|tt.nudge=1,x", "v1|kt.REWARD=", "v1|tz=", "v1|oo="};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(jd_customer_decode(d, f.rs, bad[i], strlen(bad[i]), err, sizeof err), -1);
    /* unknown trigger or kind names are dropped, like other rule names */
    const char *old = "v1|tt.gone=5,6|kt.COUPON=7|oo=COUPON,REENGAGEMENT";
    assert_int_equal(jd_customer_decode(d, f.rs, old, strlen(old), err, sizeof err), 0);
    assert_int_equal(d->optout, 1u << JD_KIND_REENGAGEMENT);
    jd_buf_free(&b);
    jd_customer_destroy(c);
    jd_customer_destroy(d);
    fx_free(&f);
}

static const char *source_dir(void)
{
    const char *d = getenv("JD_SOURCE_DIR");
    return d ? d : ".";
}

/* Reads one string field of a decoded record. */
static const char *rec_str(avro_value_t *rec, const char *name)
{
    avro_value_t v;
    const char *s = NULL;
    size_t n;
    assert_int_equal(avro_value_get_by_name(rec, name, &v, NULL), 0);
    assert_int_equal(avro_value_get_string(&v, &s, &n), 0);
    return s;
}

static void test_record_suppressed(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    snprintf(f.schema, sizeof f.schema, "%s/config/schemas/suppressed.avsc", source_dir());
    f.cfg.suppressed_schema = f.schema;
    f.cfg.policy.audit_topic = "loyalty.suppressed";
    add_trig(&f.src, "r", "event: true", JD_KIND_REENGAGEMENT)->cooldown_ms = DAY;
    fx_build(&f);
    struct jd_customer *c = cust(&f, "c1");
    assert_string_equal(decide(&f, c, "r", T0, NULL), "");
    struct jd_policy_decision d;
    assert_string_equal(decide(&f, c, "r", T0 + HOUR, &d), "cooldown");
    struct jd_trigger t = {0};
    strcpy(t.trigger_id, "0123456789abcdef0123456789abcdef");
    t.trigger = "r";
    t.kind = JD_KIND_REENGAGEMENT;
    t.customer_id = "c1";
    t.journey_stage = "engaged";
    t.reason = "event.type == 'feedback' (feedback)";
    t.source_event_id = "ev-9";
    t.rule_version = "abcd";
    /* a trigger sent earlier in the batch, its history line not written yet */
    struct jd_pending_trigger *sent = jd_customer_add_pending(c);
    strcpy(sent->trigger_id, "ffffffffffffffffffffffffffffffff");
    sent->history = strdup("1700000000000|r|ffffffffffffffffffffffffffffffff|REENGAGEMENT|x");
    char err[256];
    assert_int_equal(jd_policy_record_suppressed(f.p, c, &t, &d, T0 + HOUR, err, sizeof err), 0);
    /* lines stay in decision order: the earlier trigger's line moved first */
    assert_int_equal(c->nhistory, 2);
    /* (the suppression's entry grew the outbox array: look the entry up again) */
    sent = jd_customer_find_pending(c, "ffffffffffffffffffffffffffffffff");
    assert_non_null(sent);
    assert_null(sent->history);
    assert_string_equal(c->history[0],
                        "1700000000000|r|ffffffffffffffffffffffffffffffff|REENGAGEMENT|x");
    assert_string_equal(c->history[1],
                        "1700003600000|r|0123456789abcdef0123456789abcdef|SUPPRESSED:cooldown|r "
                        "was sent 1h before, cooldown 1d; rule: event.type == 'feedback' "
                        "(feedback)");
    assert_int_equal(c->npending, 2);
    struct jd_pending_trigger *pt = &c->pending[1];
    assert_string_equal(pt->topic, "loyalty.suppressed");
    assert_int_equal(pt->not_before, 0);
    assert_string_not_equal(pt->trigger_id, t.trigger_id); /* its own outbox id */
    /* the same suppression again adds no second record */
    assert_int_equal(jd_policy_record_suppressed(f.p, c, &t, &d, T0 + HOUR, err, sizeof err), 0);
    assert_int_equal(c->npending, 2);

    /* the value is a Suppressed record as the schema says */
    avro_schema_t sch;
    FILE *fp = fopen(f.schema, "r");
    assert_non_null(fp);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    assert_int_equal(avro_schema_from_json_length(text, n, &sch), 0);
    avro_value_iface_t *cls = avro_generic_class_from_schema(sch);
    avro_value_t rec, v, br;
    assert_int_equal(avro_generic_value_new(cls, &rec), 0);
    avro_reader_t rd = avro_reader_memory(pt->value.data, (int64_t)pt->value.len);
    assert_int_equal(avro_value_read(rd, &rec), 0);
    assert_string_equal(rec_str(&rec, "trigger_id"), t.trigger_id);
    assert_string_equal(rec_str(&rec, "trigger"), "r");
    assert_string_equal(rec_str(&rec, "customer_id"), "c1");
    assert_string_equal(rec_str(&rec, "reason"), "cooldown");
    assert_string_equal(rec_str(&rec, "detail"), "r was sent 1h before, cooldown 1d");
    assert_string_equal(rec_str(&rec, "trigger_reason"), t.reason);
    assert_string_equal(rec_str(&rec, "journey_stage"), "engaged");
    assert_string_equal(rec_str(&rec, "rule_version"), "abcd");
    int e;
    assert_int_equal(avro_value_get_by_name(&rec, "kind", &v, NULL), 0);
    assert_int_equal(avro_value_get_enum(&v, &e), 0);
    assert_int_equal(e, 1);
    int64_t at;
    assert_int_equal(avro_value_get_by_name(&rec, "decided_at", &v, NULL), 0);
    assert_int_equal(avro_value_get_long(&v, &at), 0);
    assert_int_equal(at, T0 + HOUR);
    int hold;
    assert_int_equal(avro_value_get_by_name(&rec, "holdout", &v, NULL), 0);
    assert_int_equal(avro_value_get_boolean(&v, &hold), 0);
    assert_int_equal(hold, 0);
    assert_int_equal(avro_value_get_by_name(&rec, "segment", &v, NULL), 0);
    assert_int_equal(avro_value_get_discriminant(&v, &e), 0);
    assert_int_equal(e, 0); /* null */
    assert_int_equal(avro_value_get_by_name(&rec, "source_event_id", &v, NULL), 0);
    assert_int_equal(avro_value_get_current_branch(&v, &br), 0);
    const char *sid;
    assert_int_equal(avro_value_get_string(&br, &sid, &n), 0);
    assert_string_equal(sid, "ev-9");
    avro_reader_free(rd);
    avro_value_decref(&rec);
    avro_value_iface_decref(cls);
    avro_schema_decref(sch);
    jd_customer_destroy(c);
    fx_free(&f);

    /* a bad default zone or a missing schema is refused at start */
    fx_init(&f);
    f.cfg.policy.quiet_enabled = 1;
    f.cfg.policy.quiet_default_tz = "Europe/Atlantis";
    assert_null(jd_policy_new(&f.cfg, f.err, sizeof f.err));
    assert_non_null(strstr(f.err, "Europe/Atlantis"));
    fx_init(&f);
    f.cfg.policy.audit_topic = "a";
    f.cfg.suppressed_schema = "/nonexistent/suppressed.avsc";
    assert_null(jd_policy_new(&f.cfg, f.err, sizeof f.err));
    assert_non_null(strstr(f.err, "/nonexistent/suppressed.avsc"));
}

/* ---------------- global budgets (real Redis) ---------------- */

static void test_budget(void **state)
{
    (void)state;
    struct redis_fixture r = {0};
    if (redis_fixture_start(&r) != 0)
        fail_msg("cannot start redis-server");
    struct fx a, b;
    fx_init(&a);
    snprintf(a.addr, sizeof a.addr, "127.0.0.1:%d", r.port);
    a.addrs[0] = a.addr;
    a.cfg.redis_addresses = a.addrs;
    a.cfg.nredis_addresses = 1;
    struct jd_trigger_src *t = add_trig(&a.src, "vip", "event: true", JD_KIND_REWARD);
    t->global_budget = 1000;
    t->global_period_ms = DAY;
    struct jd_trigger_src *t5 = add_trig(&a.src, "five", "event: true", JD_KIND_REWARD);
    t5->global_budget = 5;
    t5->global_period_ms = DAY;
    fx_build(&a);
    /* instance b: the same rules and Redis, its own policy (own token pools) */
    b = a;
    b.addrs[0] = b.addr;
    b.cfg.redis_addresses = b.addrs;
    b.p = jd_policy_new(&b.cfg, b.err, sizeof b.err);
    assert_non_null(b.p);
    assert_int_equal(jd_policy_budget_chunk(1000), 10);
    assert_int_equal(jd_policy_budget_chunk(5), 1);
    assert_int_equal(jd_policy_budget_chunk(10000000), 1000);

    /* chunk 1: exact, alternating instances, one customer each time */
    char id[32];
    int allowed = 0;
    int64_t day0 = 19700 * DAY; /* a period start */
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof id, "c%d", i);
        struct jd_customer *c = cust(&a, id);
        const char *res = decide(i % 2 ? &b : &a, c, "five", day0 + i, NULL);
        allowed += res[0] == '\0';
        assert_string_equal(res, i < 5 ? "" : "budget");
        jd_customer_destroy(c);
    }
    assert_int_equal(allowed, 5);
    /* the next period has a fresh budget; exactly at its start */
    struct jd_customer *c = cust(&a, "x");
    assert_string_equal(decide(&a, c, "five", day0 + DAY - 1, NULL), "budget");
    assert_string_equal(decide(&a, c, "five", day0 + DAY, NULL), "");
    jd_customer_destroy(c);

    /* chunk 10 of 1000: a takes one (reserving 10), b takes all it can */
    int na = 0, nb = 0;
    c = cust(&a, "y");
    na += decide(&a, c, "vip", day0, NULL)[0] == '\0';
    for (int i = 0; i < 1200; i++)
        nb += decide(&b, c, "vip", day0, NULL)[0] == '\0';
    assert_int_equal(na, 1);
    assert_int_equal(nb, 990);
    /* a still spends the 9 it holds, then the budget is spent everywhere */
    for (int i = 0; i < 20; i++)
        na += decide(&a, c, "vip", day0, NULL)[0] == '\0';
    assert_int_equal(na, 10);
    assert_int_equal(na + nb, 1000);
    redisReply *rep = redis_fixture_cmd(&r, "GET j:budget:{vip}:19700");
    assert_non_null(rep);
    assert_true(atoll(rep->str) >= 1000);
    freeReplyObject(rep);
    rep = redis_fixture_cmd(&r, "PTTL j:budget:{vip}:19700");
    assert_true(rep->integer > 2 * DAY && rep->integer <= 3 * DAY);
    freeReplyObject(rep);

    /* Redis gone: fail closed (never exceed), with the cause in the detail */
    redis_fixture_kill(&r);
    struct jd_policy_decision d;
    assert_string_equal(decide(&a, c, "vip", day0 + 2 * DAY, &d), "budget");
    assert_non_null(strstr(d.detail, "could not be checked"));
    jd_customer_destroy(c);
    jd_policy_destroy(b.p);
    fx_free(&a);
    redis_fixture_stop(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cooldown_edges),
        cmocka_unit_test(test_max_per_customer),
        cmocka_unit_test(test_kind_cap),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_quiet_paris),
        cmocka_unit_test(test_quiet_new_york),
        cmocka_unit_test(test_quiet_drop_and_counting),
        cmocka_unit_test(test_holdout_share),
        cmocka_unit_test(test_holdout_decision),
        cmocka_unit_test(test_optout),
        cmocka_unit_test(test_state_roundtrip),
        cmocka_unit_test(test_record_suppressed),
        cmocka_unit_test(test_budget),
    };
    return jd_run_tests_in_pool(tests, NULL, NULL);
}
