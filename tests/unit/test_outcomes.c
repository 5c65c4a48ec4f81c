/*
 * Unit tests for outcomes.c (uplift and its interval against published
 * values; goals opened, converted, closed), the `og` field of the state
 * codec, and insights.c against a real redis-server: counts written per
 * partition, and a replay of counted offsets (a restarted process) that
 * changes nothing.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cmem_pool.h"

#include "journeyd/insights.h"
#include "journeyd/outcomes.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"
#include "redis_fixture.c"

/* ---- uplift ---- */

/* Newcombe (1998), "Interval estimation for the difference between
 * independent proportions", Statistics in Medicine 17:873-890, Table II,
 * method 10 (score interval without continuity correction), to 4 decimals. */
static const struct {
    int64_t a, m, b, n;
    double lo, hi;
} newcombe[] = {
    {56, 70, 48, 80, 0.0524, 0.3339}, {9, 10, 3, 10, 0.1705, 0.8090},
    {6, 7, 2, 7, 0.0582, 0.8062},     {5, 56, 0, 29, -0.0381, 0.1926},
    {0, 10, 0, 20, -0.1611, 0.2775},  {0, 10, 0, 10, -0.2775, 0.2775},
    {10, 10, 0, 20, 0.6791, 1.0000},  {10, 10, 0, 10, 0.6075, 1.0000},
};

static void test_uplift_published_values(void **unused)
{
    (void)unused;
    for (size_t i = 0; i < sizeof newcombe / sizeof newcombe[0]; i++) {
        struct jd_uplift u;
        jd_uplift_compute(newcombe[i].m, newcombe[i].a, newcombe[i].n, newcombe[i].b, &u);
        double p1 = (double)newcombe[i].a / (double)newcombe[i].m;
        double p2 = (double)newcombe[i].b / (double)newcombe[i].n;
        assert_true(fabs(u.treated_rate - p1) < 1e-12);
        assert_true(fabs(u.control_rate - p2) < 1e-12);
        assert_true(fabs(u.uplift - (p1 - p2)) < 1e-12);
        if (fabs(u.ci_low - newcombe[i].lo) > 0.00005 || fabs(u.ci_high - newcombe[i].hi) > 0.00005)
            fail_msg("case %zu: [%.5f, %.5f], published [%.4f, %.4f]", i, u.ci_low, u.ci_high,
                     newcombe[i].lo, newcombe[i].hi);
        assert_true(u.ci_low <= u.uplift && u.uplift <= u.ci_high);
        assert_true(u.ci_low >= -1 && u.ci_high <= 1);
    }
}

static void test_uplift_hand_computed(void **unused)
{
    (void)unused;
    /* 30/100 vs 20/100, by hand (z^2 = 3.841459): Wilson(30,100): centre
     * (0.3 + 0.0192073) / 1.0384146 = 0.307399, half-width 1.959964 *
     * sqrt(0.0021 + 0.0000960) / 1.0384146 = 0.088450 -> [0.218949, 0.395849];
     * Wilson(20,100) likewise [0.133367, 0.288829]; d = 0.1;
     * L = 0.1 - sqrt(0.081051^2 + 0.088829^2) = -0.020249,
     * U = 0.1 + sqrt(0.095849^2 + 0.066633^2) = 0.216734 */
    double lo, hi;
    jd_wilson_interval(30, 100, JD_Z95, &lo, &hi);
    assert_true(fabs(lo - 0.218949) < 5e-6 && fabs(hi - 0.395849) < 5e-6);
    struct jd_uplift u;
    jd_uplift_compute(100, 30, 100, 20, &u);
    assert_true(fabs(u.uplift - 0.1) < 1e-12);
    assert_true(fabs(u.ci_low - -0.020249) < 5e-6);
    assert_true(fabs(u.ci_high - 0.216734) < 5e-6);
}

static void test_uplift_edges(void **unused)
{
    (void)unused;
    struct jd_uplift u;
    /* no control group: the treated rate only */
    jd_uplift_compute(40, 10, 0, 0, &u);
    assert_true(u.treated_rate == 0.25);
    assert_true(isnan(u.control_rate) && isnan(u.uplift) && isnan(u.ci_low) && isnan(u.ci_high));
    /* nothing treated yet */
    jd_uplift_compute(0, 0, 12, 3, &u);
    assert_true(isnan(u.treated_rate) && u.control_rate == 0.25 && isnan(u.uplift));
    /* 0 % and 100 % in both groups: the interval stays inside [-1, 1] */
    jd_uplift_compute(5, 5, 5, 5, &u);
    assert_true(u.uplift == 0 && u.ci_low < 0 && u.ci_high > 0);
    assert_true(fabs(u.ci_low + u.ci_high) < 1e-12);
    jd_uplift_compute(1, 1, 1, 0, &u);
    assert_true(u.uplift == 1 && u.ci_high == 1 && u.ci_low > -1 && u.ci_low < 1);
    jd_uplift_compute(1, 0, 1, 1, &u);
    assert_true(u.uplift == -1 && u.ci_low == -1);
    /* Wilson at the edges is exact */
    double lo, hi;
    jd_wilson_interval(0, 7, JD_Z95, &lo, &hi);
    assert_true(lo == 0 && hi > 0 && hi < 1);
    jd_wilson_interval(7, 7, JD_Z95, &lo, &hi);
    assert_true(hi == 1 && lo > 0);
}

/* ---- goals, with a compiled rule set ---- */

struct rules_fixture {
    struct jd_rule_src stages[1];
    struct jd_trigger_src triggers[3];
    struct jd_rules_src src;
    struct jd_ruleset *rs;
};

static void rule(struct jd_rule_src *r, const char *name, const char *expr)
{
    memset(r, 0, sizeof *r);
    r->name = (char *)name;
    r->expr = (char *)expr;
    r->file = "test.conf";
    r->line = 1;
    r->col = 1;
    r->enabled = 1;
}

#define DAY 86400000LL

/* variant 1 drops "nudge" (a reload) */
static struct jd_ruleset *compile(struct rules_fixture *f, int variant)
{
    memset(f, 0, sizeof *f);
    rule(&f->stages[0], "prospect", "true");
    size_t n = 0;
    rule(&f->triggers[n].on, "recover", "event: event.type == 'feedback'");
    f->triggers[n].goal = "purchase";
    f->triggers[n++].goal_window_ms = 7 * DAY;
    if (!variant) {
        rule(&f->triggers[n].on, "nudge", "event: event.type == 'page_view'");
        f->triggers[n].goal = "add_to_cart";
        f->triggers[n++].goal_window_ms = DAY;
    }
    rule(&f->triggers[n++].on, "plain", "event: event.type == 'signup'");
    f->src.stages = f->stages;
    f->src.nstages = 1;
    f->src.triggers = f->triggers;
    f->src.ntriggers = n;
    struct jd_errors errs;
    jd_errors_init(&errs);
    if (jd_rules_compile(&f->src, &f->rs, &errs) != 0) {
        jd_errors_print(&errs, stderr);
        fail_msg("rules did not compile");
    }
    jd_errors_free(&errs);
    return f->rs;
}

struct seen {
    int n;
    uint32_t trigger[8];
    int control[8];
    int converted[8];
};

static void record(void *ud, const struct jd_goal *g, int converted)
{
    struct seen *s = ud;
    s->trigger[s->n] = g->trigger;
    s->control[s->n] = g->control;
    s->converted[s->n++] = converted;
}

static struct jd_event ev_of(const char *type, int64_t at)
{
    struct jd_event ev;
    memset(&ev, 0, sizeof ev);
    ev.event_id = "e";
    ev.customer_id = "c1";
    ev.type = type;
    ev.channel = "web";
    ev.occurred_at = at;
    return ev;
}

static void test_goals(void **unused)
{
    (void)unused;
    struct rules_fixture f;
    struct jd_ruleset *rs = compile(&f, 0);
    int recover = jd_rules_trigger_index(rs, "recover"),
        nudge = jd_rules_trigger_index(rs, "nudge"), plain = jd_rules_trigger_index(rs, "plain");
    struct jd_customer *c = jd_customer_new("c1", 2, 0, rs);
    int64_t t0 = 1700000000000LL;

    assert_int_equal(jd_outcomes_next_due(c), INT64_MAX);
    assert_int_equal(jd_outcomes_open(rs, c, (size_t)plain, 0, t0), 0); /* no goal */
    assert_int_equal(jd_outcomes_open(rs, c, (size_t)recover, 0, t0), 1);
    assert_int_equal(jd_outcomes_open(rs, c, (size_t)recover, 1, t0 + 10), 1);
    assert_int_equal(jd_outcomes_open(rs, c, (size_t)nudge, 0, t0), 1);
    assert_int_equal(c->ngoals, 3);
    assert_int_equal(c->goals[0].deadline, t0 + 7 * DAY);
    assert_int_equal(jd_outcomes_next_due(c), t0 + DAY + 1); /* nudge closes first */

    struct seen s = {0};
    /* another type converts nothing; nothing is past its deadline */
    struct jd_event ev = ev_of("page_view", t0 + 1000);
    jd_outcomes_resolve(rs, c, &ev, ev.occurred_at, ev.occurred_at, record, &s);
    assert_int_equal(s.n, 0);
    /* the timer at nudge's due time: the window closed, a non-conversion */
    jd_outcomes_resolve(rs, c, NULL, 0, t0 + DAY + 1, record, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.trigger[0], nudge);
    assert_int_equal(s.converted[0], 0);
    assert_int_equal(c->ngoals, 2);
    /* a purchase exactly at the treated goal's deadline converts both (the
     * control one's deadline is 10 ms later), even with the clock past it */
    ev = ev_of("purchase", t0 + 7 * DAY);
    jd_outcomes_resolve(rs, c, &ev, ev.occurred_at, t0 + 7 * DAY + 5, record, &s);
    assert_int_equal(s.n, 3);
    assert_true(s.converted[1] && s.converted[2]);
    assert_int_equal(s.control[1] + s.control[2], 1);
    assert_int_equal(c->ngoals, 0);

    /* one millisecond late: closed, not converted */
    jd_outcomes_open(rs, c, (size_t)recover, 0, t0);
    ev = ev_of("purchase", t0 + 7 * DAY + 1);
    jd_outcomes_resolve(rs, c, &ev, ev.occurred_at, ev.occurred_at, record, &s);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.converted[3], 0);

    /* the cap on open goals */
    for (int i = 0; i < JD_MAX_OPEN_GOALS; i++)
        assert_int_equal(jd_outcomes_open(rs, c, (size_t)recover, i & 1, t0 + i), 1);
    assert_int_equal(jd_outcomes_open(rs, c, (size_t)recover, 0, t0), -1);
    assert_int_equal(c->ngoals, JD_MAX_OPEN_GOALS);
    jd_customer_destroy(c);
    jd_rules_destroy(rs);
}

static void test_goals_in_state(void **unused)
{
    (void)unused;
    struct rules_fixture f, f2;
    struct jd_ruleset *rs = compile(&f, 0);
    struct jd_customer *c = jd_customer_new("c1", 2, 0, rs);
    jd_outcomes_open(rs, c, (size_t)jd_rules_trigger_index(rs, "nudge"), 1, 1000);
    jd_outcomes_open(rs, c, (size_t)jd_rules_trigger_index(rs, "recover"), 0, 2000);
    struct jd_buf b;
    jd_buf_init(&b);
    jd_customer_encode(c, rs, &b);
    assert_non_null(strstr(jd_buf_cstr(&b), "|og=nudge:c:86401000,recover:t:604802000"));

    char err[200];
    struct jd_customer *d = jd_customer_new("c1", 2, 0, rs);
    assert_int_equal(jd_customer_decode(d, rs, b.data, b.len, err, sizeof err), 0);
    assert_int_equal(d->ngoals, 2);
    assert_int_equal(d->goals[0].trigger, jd_rules_trigger_index(rs, "nudge"));
    assert_int_equal(d->goals[0].control, 1);
    assert_int_equal(d->goals[1].deadline, 2000 + 7 * DAY);

    /* a reload without "nudge": its goal is dropped, recover's is kept */
    struct jd_ruleset *rs2 = compile(&f2, 1);
    jd_customer_rebind(d, rs, rs2);
    assert_int_equal(d->ngoals, 1);
    assert_int_equal(d->goals[0].trigger, jd_rules_trigger_index(rs2, "recover"));
    assert_int_equal(d->goals[0].deadline, 2000 + 7 * DAY);

    const char *bad[] = {"v1|og=recover:x:5", "v1|og=recover:t:", "v1|og=recover",
                         "v1|og=a%ZZ:t:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct jd_customer *e = jd_customer_new("c1", 2, 0, rs);
        assert_int_equal(jd_customer_decode(e, rs, bad[i], strlen(bad[i]), err, sizeof err), -1);
        jd_customer_destroy(e);
    }
    jd_buf_free(&b);
    jd_customer_destroy(c);
    jd_customer_destroy(d);
    jd_rules_destroy(rs);
    jd_rules_destroy(rs2);
}

/* ---- insights against redis-server ---- */

static int64_t hget(struct redis_fixture *r, const char *key, const char *field)
{
    redisReply *rep = redis_fixture_cmd(r, "HGET %s %s", key, field);
    /* a counter that never moved is absent: 0 */
    int64_t v = rep && rep->type == REDIS_REPLY_STRING ? strtoll(rep->str, NULL, 10)
                : rep && rep->type == REDIS_REPLY_NIL  ? 0
                                                       : -999;
    freeReplyObject(rep);
    return v;
}

/* One process's view: events at `offsets` of partition 3, each a feedback
 * (a decision of recover, treated) followed by the customer's purchase. */
static void run(struct jd_config *cfg, struct jd_ruleset *rs, const int64_t *offsets, size_t n)
{
    struct jd_insights *ins = jd_insights_new(cfg, rs);
    char err[256];
    jd_insights_want(ins, 3, "touchpoints", 3, 0);
    assert_int_equal(jd_insights_load_offsets(ins, err, sizeof err), 0);
    size_t recover = (size_t)jd_rules_trigger_index(rs, "recover");
    for (size_t i = 0; i < n; i++) {
        struct jd_customer *c = jd_customer_new("c1", 2, 3, rs);
        struct jd_event ev = ev_of("feedback", 1000);
        ev.offset = offsets[i];
        ev.has_score = 1;
        ev.score = 9;
        jd_insights_begin(ins, c, &ev, 1000);
        c->stage = 0;
        c->last_score = 9;
        jd_insights_sent(ins, c, recover, 1000);
        jd_insights_end(ins, c);
        ev = ev_of("purchase", 2000);
        ev.offset = offsets[i] + 1;
        jd_insights_begin(ins, c, &ev, 2000);
        jd_insights_end(ins, c);
        jd_customer_destroy(c);
    }
    assert_int_equal(jd_insights_flush(ins, err, sizeof err), 0);
    jd_insights_destroy(ins);
}

static void test_insights_redis(void **unused)
{
    (void)unused;
    struct redis_fixture r = {0};
    if (redis_fixture_start(&r) != 0)
        fail_msg("cannot start redis-server");
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", r.port);
    char *addrs[1] = {addr};
    char *topics[1] = {"touchpoints"};
    struct jd_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.redis_addresses = addrs;
    cfg.nredis_addresses = 1;
    cfg.redis_timeout_ms = 2000;
    cfg.key_prefix = "j";
    cfg.input_topics = topics;
    cfg.ninput_topics = 1;
    struct rules_fixture f;
    struct jd_ruleset *rs = compile(&f, 0);
    const char *key = "j:{p:touchpoints:3}:stats";

    int64_t first[] = {10, 20};
    run(&cfg, rs, first, 2);
    assert_int_equal(hget(&r, key, "@offset"), 21);
    assert_int_equal(hget(&r, key, "sent:recover"), 2);
    assert_int_equal(hget(&r, key, "out:recover:treated"), 2);
    assert_int_equal(hget(&r, key, "out:recover:treated_converted"), 2);
    assert_int_equal(hget(&r, key, "out:recover:treated_open"), 0);
    assert_int_equal(hget(&r, key, "stage:prospect"), 2);
    assert_int_equal(hget(&r, key, "tr:(new)>prospect"), 2);
    assert_int_equal(hget(&r, key, "nps:promoter"), 2);

    /* a restarted process replays offsets already counted: nothing changes,
     * whatever the batch boundaries were */
    int64_t replay[] = {20};
    run(&cfg, rs, replay, 1);
    assert_int_equal(hget(&r, key, "sent:recover"), 2);
    assert_int_equal(hget(&r, key, "@offset"), 21);
    /* a batch straddling the offset counts only what is past it */
    int64_t straddle[] = {20, 30};
    run(&cfg, rs, straddle, 2);
    assert_int_equal(hget(&r, key, "sent:recover"), 3);
    assert_int_equal(hget(&r, key, "out:recover:treated_converted"), 3);
    assert_int_equal(hget(&r, key, "@offset"), 31);

    /* the reader sums the partitions listed in the registry */
    struct jd_insights *ins = jd_insights_new(&cfg, rs);
    struct jd_program p;
    char err[256];
    assert_int_equal(jd_insights_read(ins, &p, err, sizeof err), 0);
    assert_int_equal(p.npartitions, 1);
    assert_int_equal(p.stage[0], 3);
    assert_int_equal(p.nps[JD_NPS_PROMOTER], 3);
    size_t t = (size_t)jd_rules_trigger_index(rs, "recover");
    assert_int_equal(p.sent[t], 3);
    assert_int_equal(p.outcome[t * JD_OUT_COUNT + JD_OUT_TREATED], 3);
    assert_int_equal(p.outcome[t * JD_OUT_COUNT + JD_OUT_CONTROL], 0);
    jd_program_free(&p);
    jd_insights_destroy(ins);

    /* Redis down: the flush fails and keeps the deltas for a retry */
    ins = jd_insights_new(&cfg, rs);
    jd_insights_want(ins, 3, "touchpoints", 3, 0);
    assert_int_equal(jd_insights_load_offsets(ins, err, sizeof err), 0);
    struct jd_customer *c = jd_customer_new("c2", 2, 3, rs);
    struct jd_event ev = ev_of("signup", 5000);
    ev.offset = 40;
    jd_insights_begin(ins, c, &ev, 5000);
    c->stage = 0;
    jd_insights_end(ins, c);
    redis_fixture_kill(&r);
    assert_int_equal(jd_insights_flush(ins, err, sizeof err), -1);
    if (redis_fixture_start(&r) != 0)
        fail_msg("cannot restart redis-server");
    assert_int_equal(jd_insights_flush(ins, err, sizeof err), 0);
    assert_int_equal(hget(&r, key, "stage:prospect"), 1); /* the restart lost the rest */
    assert_int_equal(hget(&r, key, "@offset"), 40);
    jd_customer_destroy(c);
    jd_insights_destroy(ins);
    jd_rules_destroy(rs);
    redis_fixture_stop(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uplift_published_values),
        cmocka_unit_test(test_uplift_hand_computed),
        cmocka_unit_test(test_uplift_edges),
        cmocka_unit_test(test_goals),
        cmocka_unit_test(test_goals_in_state),
        cmocka_unit_test(test_insights_redis),
    };
    return jd_run_tests_in_pool(tests, NULL, NULL);
}
