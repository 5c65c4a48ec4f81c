/*
 * Rule compiler errors: every syntax, name and type error with its exact
 * message and FILE:LINE:COL, suggestions, cycles, and that all errors of a
 * rule set are reported at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <stdlib.h>
#include <unistd.h>

#include "journeyd/config.h"
#include "rules_testlib.h"

/* Compiles and returns the errors joined by newlines (static buffer). */
static const char *errors_of(struct tsrc *t)
{
    static char out[4096];
    struct jd_ruleset *rs = NULL;
    struct jd_errors errs;
    jd_errors_init(&errs);
    int rc = jd_rules_compile(&t->src, &rs, &errs);
    out[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; i < errs.n; i++)
        len += (size_t)snprintf(out + len, sizeof out - len, "%s%s", i ? "\n" : "", errs.msgs[i]);
    if (rc == 0) {
        assert_int_equal(errs.n, 0);
        assert_non_null(rs);
        jd_rules_destroy(rs);
    } else {
        assert_true(errs.n > 0);
        assert_null(rs);
    }
    jd_errors_free(&errs);
    return out;
}

/* one segment (t.conf line 10, column 20) */
static const struct {
    const char *expr;
    const char *err; /* "" = compiles */
} seg_cases[] = {
    {"cnt('purchase') > 1",
     "t.conf:10:20: error: unknown function cnt \xe2\x80\x94 did you mean count?"},
    {"'a' + 1 == 2",
     "t.conf:10:20: error: operator '+' needs two numbers or two durations, got string and number"},
    {"count(1) > 0", "t.conf:10:26: error: count: argument 1 must be an event type in quotes "
                     "(e.g. 'purchase'), got number"},
    {"count('purchase') >= 1 &&", "t.conf:10:45: error: expected a value, found end of expression"},
    {"count('purchase', 30x) > 1",
     "t.conf:10:40: error: invalid duration unit 'x' (use ms, s, m, h, d or w)"},
    {"count('purchase', 1.5d) > 1",
     "t.conf:10:38: error: a duration must be a whole number (1.5d)"},
    {"count('purchase', 3) > 1",
     "t.conf:10:38: error: count: the window must be a duration literal such as 30d, got number"},
    {"count('purchase', 3651d) > 1",
     "t.conf:10:38: error: count: the window is too long (at most 3650d)"},
    {"count('purchase', 0d) > 1", "t.conf:10:38: error: count: the window must be longer than 0"},
    {"days_since('x') > 99999999999999999999", ""},
    {"count('purchase')",
     "t.conf:10:20: error: a condition must be true or false, but this is a number"},
    {"count('purchase') > 3d",
     "t.conf:10:20: error: cannot compare a number with a duration (only days_since(...) and "
     "days_since_any() compare with durations)"},
    {"event.channel == 'web'",
     "t.conf:10:20: error: event.channel: the current event is only available in 'event:' "
     "triggers and payloads (use last_channel, attr('k') or an aggregate)"},
    {"'unterminated", "t.conf:10:20: error: unterminated string (missing closing ')"},
    {"count('purchase') = 1", "t.conf:10:38: error: unexpected '=' (use '==' to compare)"},
    {"count('purchase') > 1 & true", "t.conf:10:42: error: unexpected '&' (use '&&')"},
    {"count('purchase') > 1 # x", "t.conf:10:42: error: unexpected character '#'"},
    {"count('purchase') > 1)", "t.conf:10:41: error: unexpected ')' after the expression"},
    {"(count('purchase') > 1", "t.conf:10:42: error: expected ')', found end of expression"},
    {"count('purchase' > 1", "t.conf:10:40: error: expected ',' or ')', found end of expression"},
    {"event. > 1", "t.conf:10:27: error: expected a field name after '.', found '>'"},
    {"", "t.conf:10:20: error: empty expression"},
    {"sum('purchase', amout) > 1",
     "t.conf:10:36: error: sum: unknown field amout \xe2\x80\x94 did you mean amount? (fields are "
     "amount, score and attributes['k'])"},
    {"sum('purchase', 3) > 1",
     "t.conf:10:36: error: sum: expected a field (amount, score or attributes['k'])"},
    {"count('a', 1d, 2d) > 1", "t.conf:10:20: error: count takes 1 to 2 arguments, got 3"},
    {"days_since_any(1d) > 1", "t.conf:10:20: error: days_since_any takes 0 arguments, got 1"},
    {"last('feedback', score, 30d) > 1", "t.conf:10:20: error: last takes 2 arguments, got 3"},
    {"frist_seen > 0",
     "t.conf:10:20: error: unknown name frist_seen \xe2\x80\x94 did you mean first_seen?"},
    {"zzz > 0", "t.conf:10:20: error: unknown name zzz"},
    {"count > 0", "t.conf:10:20: error: count is a function: write count(...)"},
    {"true && 1", "t.conf:10:28: error: operator '&&' needs booleans, got boolean and number"},
    {"!count('x')", "t.conf:10:20: error: operator ! needs a boolean, got number"},
    {"-'a' == 1", "t.conf:10:20: error: unary - needs a number or a duration, got string"},
    {"last_channel in ['a', 1]", "t.conf:10:42: error: 'in' compares a string with a number item"},
    {"last_channel in 'a'",
     "t.conf:10:36: error: 'in' needs a list of literals, e.g. x in ['a', 'b']"},
    {"['a'] == 1", "t.conf:10:20: error: a list is only allowed after 'in'"},
    {"'a' < 1", "t.conf:10:20: error: operator '<' cannot compare string with number"},
    {"true < false", "t.conf:10:20: error: operator '<' cannot compare boolean with boolean"},
    {"attr(tz) == 'x'", "t.conf:10:25: error: attr: the attribute name must be a string literal"},
    {"event.attributes['k'] == 'x'",
     "t.conf:10:20: error: event.attributes['k']: the current event is only available in "
     "'event:' triggers and payloads (use last_channel, attr('k') or an aggregate)"},
    {"count('purchase') > 1 &&\n  cnt('x') > 1",
     "t.conf:11:3: error: unknown function cnt \xe2\x80\x94 did you mean count?"},
    {"days_since('purchase') > 30d || days_since_any() <= 12h", ""},
    {"count_any(1d) / 2 > 1 && 1h * 2 < 3h && (2h - 1h) / 1m == 60", ""},
    /* every error of one rule */
    {"cnt('a') > 1 && 'x' + 1 > 2",
     "t.conf:10:20: error: unknown function cnt \xe2\x80\x94 did you mean count?\n"
     "t.conf:10:36: error: operator '+' needs two numbers or two durations, got string and "
     "number"},
};

static void test_segment_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof seg_cases / sizeof seg_cases[0]; i++) {
        struct tsrc t;
        tsrc_init(&t);
        add_seg(&t, "s", seg_cases[i].expr);
        const char *got = errors_of(&t);
        if (strcmp(got, seg_cases[i].err) != 0)
            fail_msg("%s\n got: %s\nwant: %s", seg_cases[i].expr, got, seg_cases[i].err);
    }
}

static void test_nesting_limit(void **state)
{
    (void)state;
    char expr[400];
    size_t n = 0;
    for (int i = 0; i < 100; i++)
        expr[n++] = '(';
    expr[n++] = '1';
    for (int i = 0; i < 100; i++)
        expr[n++] = ')';
    expr[n] = '\0';
    struct tsrc t;
    tsrc_init(&t);
    add_seg(&t, "s", expr);
    assert_string_equal(errors_of(&t), "t.conf:10:84: error: expression nested too deeply");
}

static void test_names(void **state)
{
    (void)state;
    struct tsrc t;
    tsrc_init(&t);
    add_stage(&t, "loyal", "count('purchase') > 5");                                 /* line 10 */
    add_stage(&t, "repeat", "stage == 'x'");                                         /* 11 */
    add_seg(&t, "vip", "stage == 'loyl'");                                           /* 12 */
    add_seg(&t, "other", "in_segment('vipp') || stage in ['loyal', 'repet']");       /* 13 */
    add_seg(&t, "vip", "true");                                                      /* 14 */
    add_trig(&t, "t1", "event: event.amout > 1", JD_KIND_REWARD);                    /* 15 */
    add_trig(&t, "t2", "enter:vipp", JD_KIND_REWARD);                                /* 16 */
    add_trig(&t, "t3", "stage:repeet->*", JD_KIND_REWARD);                           /* 17 */
    add_trig(&t, "t4", "fire: x", JD_KIND_REWARD);                                   /* 18 */
    add_trig(&t, "t1", "exit:other", JD_KIND_REWARD);                                /* 19 */
    add_trig(&t, "t5", "stage:loyal", JD_KIND_REWARD);                               /* 20 */
    struct jd_trigger_src *p = add_trig(&t, "t6", "stage:*->loyal", JD_KIND_REWARD); /* 21 */
    add_payload(&t, p, "k", "sum('purchase', amount) +");                            /* 22 */
    add_payload(&t, p, "l", "event.type in ['a', 'b']");                             /* 23 */
    const char *want =
        "t.conf:14:20: error: duplicate segment name vip (first defined at line 12)\n"
        "t.conf:19:20: error: duplicate trigger name t1\n"
        "t.conf:16:26: error: unknown segment vipp \xe2\x80\x94 did you mean vip?\n"
        "t.conf:17:26: error: unknown stage repeet \xe2\x80\x94 did you mean repeat?\n"
        "t.conf:18:20: error: unknown trigger form 'fire: x' (expected 'event: EXPR', "
        "'enter:SEGMENT', 'exit:SEGMENT' or 'stage:FROM->TO')\n"
        "t.conf:20:26: error: expected stage:FROM->TO (FROM or TO may be *)\n"
        "t.conf:22:45: error: expected a value, found end of expression\n"
        "t.conf:11:20: error: a stage condition cannot read stage (it is being decided)\n"
        "t.conf:12:29: error: unknown stage loyl \xe2\x80\x94 did you mean loyal?\n"
        "t.conf:13:31: error: unknown segment vipp \xe2\x80\x94 did you mean vip?\n"
        "t.conf:13:61: error: unknown stage repet \xe2\x80\x94 did you mean repeat?\n"
        "t.conf:15:33: error: unknown event field event.amout \xe2\x80\x94 did you mean "
        "event.amount?";
    const char *got = errors_of(&t);
    if (strcmp(got, want) != 0)
        fail_msg("got:\n%s\nwant:\n%s", got, want);
}

static void test_cycles(void **state)
{
    (void)state;
    struct tsrc t;
    tsrc_init(&t);
    add_seg(&t, "a", "in_segment('b')");
    add_seg(&t, "b", "in_segment('a')");
    add_seg(&t, "c", "in_segment('c')");
    assert_string_equal(errors_of(&t), "t.conf:11:20: error: cycle between segments: a -> b -> a\n"
                                       "t.conf:12:20: error: cycle between segments: c -> c");
    tsrc_init(&t);
    add_stage(&t, "s", "in_segment('a')");
    add_seg(&t, "a", "stage == 's'");
    assert_string_equal(errors_of(&t),
                        "t.conf:10:20: error: cycle between segments: a -> (stages) -> a");
    /* a chain without a cycle compiles, in either order */
    tsrc_init(&t);
    add_stage(&t, "s", "in_segment('b')");
    add_seg(&t, "a", "in_segment('b') && stage == 's'");
    add_seg(&t, "b", "count('x') > 1");
    assert_string_equal(errors_of(&t), "");
}

static void test_disabled_rules_are_checked(void **state)
{
    (void)state;
    struct tsrc t;
    tsrc_init(&t);
    add_seg(&t, "s", "cnt('x') > 1");
    t.segs[0].enabled = 0;
    assert_string_equal(
        errors_of(&t),
        "t.conf:10:20: error: unknown function cnt \xe2\x80\x94 did you mean count?");
}

static void test_sketch_compiles(void **state)
{
    (void)state;
    struct tsrc t;
    sketch_rules(&t);
    assert_string_equal(errors_of(&t), "");
}

/* The shipped config/journeyd.conf compiles; a broken rule in a config file
 * is reported at its FILE:LINE:COL (config.c locates the string, the
 * compiler adds the offset inside it). */
static void test_config_files(void **state)
{
    (void)state;
    const char *dir = getenv("JD_SOURCE_DIR");
    if (!dir)
        dir = ".";
    char path[1024];
    snprintf(path, sizeof path, "%s/config/journeyd.conf", dir);
    struct jd_errors errs;
    jd_errors_init(&errs);
    struct jd_config *cfg = jd_config_load(path, &errs);
    jd_errors_print(&errs, stdout);
    assert_non_null(cfg);
    struct jd_ruleset *rs = NULL;
    assert_int_equal(jd_rules_compile(&cfg->rules, &rs, &errs), 0);
    assert_int_equal(jd_rules_nstages(rs), 7);
    assert_int_equal(jd_rules_nsegments(rs), 4);
    assert_true(jd_rules_ntriggers(rs) >= 5);
    jd_rules_destroy(rs);
    jd_config_destroy(cfg);

    char tmp[] = "/tmp/jd_rules_cfg_XXXXXX";
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    const char *text = "stages = (\n"
                       "  { name = \"a\"; when = \"count('purchase') >= 2\"; },\n"
                       "  { name = \"b\"; when = \"true\"; }\n"
                       ");\n"
                       "segments = (\n"
                       "  { name = \"vip\"; when = \"cnt('purchase', 30d) >= 3\"; },\n"
                       "  { name = \"x\"; when = \"in_segment('vpi') && 'a' + 1 > 0\"; }\n"
                       ");\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    jd_errors_free(&errs);
    jd_errors_init(&errs);
    cfg = jd_config_load(tmp, &errs);
    if (cfg) {
        assert_int_equal(jd_rules_compile(&cfg->rules, &rs, &errs), -1);
        char want[3][256];
        snprintf(want[0], sizeof want[0],
                 "%s:6:27: error: unknown function cnt \xe2\x80\x94 did you mean count?", tmp);
        snprintf(want[1], sizeof want[1],
                 "%s:7:36: error: unknown segment vpi \xe2\x80\x94 did you mean vip?", tmp);
        snprintf(want[2], sizeof want[2],
                 "%s:7:46: error: operator '+' needs two numbers or two durations, got string "
                 "and number",
                 tmp);
        jd_errors_print(&errs, stdout);
        assert_int_equal(errs.n, 3);
        for (int i = 0; i < 3; i++)
            assert_string_equal(errs.msgs[i], want[i]);
        jd_config_destroy(cfg);
    } else {
        jd_errors_print(&errs, stdout);
        fail_msg("the minimal config does not load");
    }
    unlink(tmp);
    jd_errors_free(&errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segment_errors),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_cycles),
        cmocka_unit_test(test_disabled_rules_are_checked),
        cmocka_unit_test(test_sketch_compiles),
        cmocka_unit_test(test_config_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
