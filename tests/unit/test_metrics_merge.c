/*
 * test_metrics_merge — merging the expositions of several engines into one:
 * sums of counters and histograms, the MAX/MIN/DROP rules, series and
 * families present in only some texts, integer and float printing, a real
 * render merged alone (byte identity) and with a twin (every counter
 * doubled), malformed lines, texts that end at a guard page, and generated
 * texts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "journeyd/metrics.h"
#include "journeyd/metrics_merge.h"

/* ---- helpers ----------------------------------------------------------- */

/* Merges NUL-terminated texts; the caller frees the result. */
static char *merge_rules(const char *const *texts, size_t n, const struct jd_merge_rule *rules,
                         size_t nrules)
{
    size_t lens[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(texts[i]);
    struct jd_buf b;
    jd_buf_init(&b);
    jd_metrics_merge_text(texts, lens, n, rules, nrules, &b);
    jd_buf_cstr(&b);
    return b.data;
}

static char *merge(const char *const *texts, size_t n)
{
    return merge_rules(texts, n, NULL, 0);
}

static void assert_merge(const char *const *texts, size_t n, const struct jd_merge_rule *rules,
                         size_t nrules, const char *want)
{
    char *got = merge_rules(texts, n, rules, nrules);
    assert_string_equal(got, want);
    free(got);
}

static char *render(struct jd_metrics *m)
{
    struct jd_buf b;
    jd_buf_init(&b);
    jd_metrics_render(m, &b);
    jd_buf_cstr(&b);
    return b.data;
}

/* The value token of the sample line `series value`, copied into buf; NULL
 * when the exposition has no such series. */
static const char *value_of(const char *text, const char *series, char *buf, size_t size)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            size_t v = strcspn(p + n + 1, " \n");
            snprintf(buf, size, "%.*s", (int)v, p + n + 1);
            return buf;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return NULL;
}

static double sample(const char *text, const char *series)
{
    char buf[128];
    if (!value_of(text, series, buf, sizeof(buf)))
        fail_msg("series %s not in exposition:\n%s", series, text);
    return strtod(buf, NULL);
}

/* Walks the sample lines of an exposition as jd_metrics_render writes them
 * (no timestamps, no spaces in label values): the series, its value and the
 * type of its family. Returns 0 at the end. */
struct walk {
    const char *p;
    char type[32];
    char series[512];
    double value;
};

static int walk_next(struct walk *w)
{
    while (w->p && *w->p) {
        const char *line = w->p, *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        w->p = nl ? nl + 1 : NULL;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            const char *t = memchr(line + 7, ' ', len - 7);
            assert_non_null(t);
            snprintf(w->type, sizeof(w->type), "%.*s", (int)(line + len - t - 1), t + 1);
        } else if (len && line[0] != '#') {
            const char *sp = line + len;
            while (sp > line && sp[-1] != ' ')
                sp--;
            assert_true(sp > line);
            snprintf(w->series, sizeof(w->series), "%.*s", (int)(sp - 1 - line), line);
            char *end;
            w->value = strtod(sp, &end);
            assert_true(end == line + len);
            return 1;
        }
    }
    return 0;
}

/* A copy of s whose last byte is the last before a PROT_NONE page: reading
 * past it faults even without ASan. Free with guarded_free. */
static char *guarded_copy(const char *s, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), pages = (n + page - 1) / page + 1;
    char *map =
        mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + (pages - 1) * page, page, PROT_NONE), 0);
    char *p = map + (pages - 1) * page - n;
    memcpy(p, s, n);
    return p;
}

static void guarded_free(char *p, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), pages = (n + page - 1) / page + 1;
    char *map = p + n - (pages - 1) * page;
    munmap(map, pages * page);
}

/* ---- combining --------------------------------------------------------- */

static void test_sum_counters_and_histograms(void **state)
{
    const char *t[] = {"# HELP c_total Things.\n"
                       "# TYPE c_total counter\n"
                       "c_total 5\n"
                       "# HELP h_seconds Latency.\n"
                       "# TYPE h_seconds histogram\n"
                       "h_seconds_bucket{le=\"0.1\"} 1\n"
                       "h_seconds_bucket{le=\"+Inf\"} 2\n"
                       "h_seconds_sum 0.25\n"
                       "h_seconds_count 2\n",
                       "# HELP c_total Things (ignored: the first HELP wins).\n"
                       "# TYPE c_total counter\n"
                       "c_total 7\n"
                       "# HELP h_seconds Latency.\n"
                       "# TYPE h_seconds histogram\n"
                       "h_seconds_bucket{le=\"0.1\"} 0\n"
                       "h_seconds_bucket{le=\"+Inf\"} 3\n"
                       "h_seconds_sum 1.5\n"
                       "h_seconds_count 3\n",
                       "# HELP c_total Things.\n"
                       "# TYPE c_total counter\n"
                       "c_total 30\n"
                       "# HELP h_seconds Latency.\n"
                       "# TYPE h_seconds histogram\n"
                       "h_seconds_bucket{le=\"0.1\"} 4\n"
                       "h_seconds_bucket{le=\"+Inf\"} 4\n"
                       "h_seconds_sum 0.125\n"
                       "h_seconds_count 4\n"};
    const char *want2 = "# HELP c_total Things.\n"
                        "# TYPE c_total counter\n"
                        "c_total 12\n"
                        "# HELP h_seconds Latency.\n"
                        "# TYPE h_seconds histogram\n"
                        "h_seconds_bucket{le=\"0.1\"} 1\n"
                        "h_seconds_bucket{le=\"+Inf\"} 5\n"
                        "h_seconds_sum 1.75\n"
                        "h_seconds_count 5\n";
    assert_merge(t, 2, NULL, 0, want2);
    const char *want3 = "# HELP c_total Things.\n"
                        "# TYPE c_total counter\n"
                        "c_total 42\n"
                        "# HELP h_seconds Latency.\n"
                        "# TYPE h_seconds histogram\n"
                        "h_seconds_bucket{le=\"0.1\"} 5\n"
                        "h_seconds_bucket{le=\"+Inf\"} 9\n"
                        "h_seconds_sum 1.875\n"
                        "h_seconds_count 9\n";
    assert_merge(t, 3, NULL, 0, want3);

    /* the output appends to what out already holds */
    size_t lens[] = {strlen(t[0]), strlen(t[1])};
    struct jd_buf b;
    jd_buf_init(&b);
    jd_buf_puts(&b, "X\n");
    jd_metrics_merge_text(t, lens, 2, NULL, 0, &b);
    assert_int_equal(b.len, 2 + strlen(want2));
    assert_memory_equal(b.data, "X\n", 2);
    assert_memory_equal(b.data + 2, want2, strlen(want2));
    jd_buf_free(&b);

    /* nothing in, nothing out */
    char *empty = merge(t, 0);
    assert_string_equal(empty, "");
    free(empty);
}

static void test_max_min_drop(void **state)
{
    const char *t[] = {"# HELP up Up.\n# TYPE up gauge\nup 1\n"
                       "# TYPE start_seconds gauge\nstart_seconds 1700000100.5\n"
                       "# TYPE peak gauge\npeak{q=\"a\"} 3\npeak{q=\"b\"} -2\n"
                       "# HELP noisy Per engine.\n# TYPE noisy histogram\n"
                       "noisy_bucket{le=\"+Inf\"} 1\nnoisy_sum 1\nnoisy_count 1\n"
                       "# TYPE total counter\ntotal 1\n",
                       "# HELP up Up.\n# TYPE up gauge\nup 0\n"
                       "# TYPE start_seconds gauge\nstart_seconds 1700000000.25\n"
                       "# TYPE peak gauge\npeak{q=\"a\"} 9\npeak{q=\"b\"} -7\n"
                       "# HELP noisy Per engine.\n# TYPE noisy histogram\n"
                       "noisy_bucket{le=\"+Inf\"} 2\nnoisy_sum 2\nnoisy_count 2\n"
                       "# TYPE total counter\ntotal 2\n",
                       "# TYPE up gauge\nup 1\n"
                       "# TYPE start_seconds gauge\nstart_seconds 1700000050\n"
                       "# TYPE peak gauge\npeak{q=\"a\"} 4\npeak{q=\"b\"} -3\n"
                       "# TYPE total counter\ntotal 4\n"};
    const struct jd_merge_rule rules[] = {
        {"up", JD_MERGE_MIN},     {"start_seconds", JD_MERGE_MIN}, {"peak", JD_MERGE_MAX},
        {"noisy", JD_MERGE_DROP}, {"noisy_bucket", JD_MERGE_MAX}, /* names no family: no effect */
        {NULL, JD_MERGE_MAX},                                     /* skipped */
    };
    assert_merge(t, 3, rules, 6,
                 "# HELP up Up.\n# TYPE up gauge\nup 0\n"
                 "# TYPE start_seconds gauge\nstart_seconds 1700000000.25\n"
                 "# TYPE peak gauge\npeak{q=\"a\"} 9\npeak{q=\"b\"} -2\n"
                 "# TYPE total counter\ntotal 7\n");
    /* the same texts with MIN and MAX swapped, and nothing dropped */
    const struct jd_merge_rule swapped[] = {
        {"up", JD_MERGE_MAX},
        {"start_seconds", JD_MERGE_MAX},
        {"peak", JD_MERGE_MIN},
    };
    assert_merge(t, 3, swapped, 3,
                 "# HELP up Up.\n# TYPE up gauge\nup 1\n"
                 "# TYPE start_seconds gauge\nstart_seconds 1700000100.5\n"
                 "# TYPE peak gauge\npeak{q=\"a\"} 3\npeak{q=\"b\"} -7\n"
                 "# HELP noisy Per engine.\n# TYPE noisy histogram\n"
                 "noisy_bucket{le=\"+Inf\"} 3\nnoisy_sum 3\nnoisy_count 3\n"
                 "# TYPE total counter\ntotal 7\n");
    /* a dropped family is dropped even from a single text */
    const struct jd_merge_rule drop_up[] = {{"up", JD_MERGE_DROP}};
    char *one = merge_rules(t, 1, drop_up, 1);
    assert_null(strstr(one, "up"));
    assert_non_null(strstr(one, "# TYPE total counter\ntotal 1\n"));
    free(one);
}

static void test_series_and_families_in_later_texts(void **state)
{
    /* per-partition lag differs between engines */
    const char *t[] = {"# HELP lag Lag.\n# TYPE lag gauge\n"
                       "lag{topic=\"t\",partition=\"0\"} 5\n"
                       "lag{topic=\"t\",partition=\"2\"} 1\n"
                       "# HELP ready Ready.\n# TYPE ready gauge\nready 1\n",
                       "# HELP lag Lag.\n# TYPE lag gauge\n"
                       "lag{topic=\"t\",partition=\"1\"} 7\n"
                       "lag{topic=\"t\",partition=\"2\"} 2\n"
                       "lag{topic=\"u\",partition=\"0\"} 3\n"
                       "# HELP ready Ready.\n# TYPE ready gauge\nready 1\n"
                       "# HELP extra_total Only in engine 1.\n# TYPE extra_total counter\n"
                       "extra_total{k=\"a\"} 4\n",
                       "# HELP extra_total Only in engines 1 and 2.\n# TYPE extra_total counter\n"
                       "extra_total{k=\"b\"} 6\nextra_total{k=\"a\"} 1\n"
                       "# HELP lag Lag.\n# TYPE lag gauge\n"
                       "lag{topic=\"t\",partition=\"3\"} 9\n"
                       "# HELP late Only in engine 2.\n# TYPE late gauge\nlate 2\n"};
    assert_merge(t, 3, NULL, 0,
                 "# HELP lag Lag.\n# TYPE lag gauge\n"
                 "lag{topic=\"t\",partition=\"0\"} 5\n"
                 "lag{topic=\"t\",partition=\"2\"} 3\n"
                 "lag{topic=\"t\",partition=\"1\"} 7\n"
                 "lag{topic=\"u\",partition=\"0\"} 3\n"
                 "lag{topic=\"t\",partition=\"3\"} 9\n"
                 "# HELP ready Ready.\n# TYPE ready gauge\nready 2\n"
                 "# HELP extra_total Only in engine 1.\n# TYPE extra_total counter\n"
                 "extra_total{k=\"a\"} 5\n"
                 "extra_total{k=\"b\"} 6\n"
                 "# HELP late Only in engine 2.\n# TYPE late gauge\nlate 2\n");
    /* a family with no series anywhere keeps its header lines */
    const char *empty[] = {"# HELP e Empty.\n# TYPE e gauge\n# TYPE f gauge\nf 1\n",
                           "# HELP e Empty.\n# TYPE e gauge\n"};
    assert_merge(empty, 2, NULL, 0, "# HELP e Empty.\n# TYPE e gauge\n# TYPE f gauge\nf 1\n");
}

static void test_family_assignment(void **state)
{
    /* Samples before any TYPE line form a family of their own name; a later
     * text's headerless samples join the histogram they belong to; a sample
     * that is not the current family's joins (or starts) its own. */
    const char *t[] = {"loose 1\n"
                       "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"
                       "# TYPE c counter\nc 1\nh_count 10\nother 5\nc_count 2\n",
                       "h_sum 2\nloose 2\n# TYPE c counter\nc 3\n"};
    assert_merge(t, 2, NULL, 0,
                 "loose 3\n"
                 "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 3\nh_count 11\n"
                 "# TYPE c counter\nc 4\n"
                 "other 5\n"
                 "c_count 2\n");
    /* a summary groups like a histogram; a sample follows the most recent
     * TYPE line before an earlier family of the same name */
    const char *s[] = {"q_sum 1\n# TYPE q summary\nq{quantile=\"0.5\"} 2\nq_sum 3\nq_count 4\n",
                       "# TYPE q summary\nq_sum 5\n"};
    assert_merge(s, 2, NULL, 0,
                 "q_sum 1\n# TYPE q summary\nq{quantile=\"0.5\"} 2\nq_sum 8\nq_count 4\n");
    /* DROP of a histogram takes its _bucket/_sum/_count wherever they are */
    const struct jd_merge_rule drop_h[] = {{"h", JD_MERGE_DROP}};
    assert_merge(t, 2, drop_h, 1, "loose 3\n# TYPE c counter\nc 4\nother 5\nc_count 2\n");
}

/* ---- values ------------------------------------------------------------ */

static void test_value_printing(void **state)
{
    const char *t[] = {"# TYPE g gauge\n"
                       "g{k=\"int\"} 3\n"
                       "g{k=\"mixed\"} 1.5\n"
                       "g{k=\"float\"} 0.1\n"
                       "g{k=\"inf\"} +Inf\n"
                       "g{k=\"nan\"} 1\n"
                       "g{k=\"inf-inf\"} +Inf\n"
                       "g{k=\"neg\"} -4\n"
                       "g{k=\"big\"} 9223372036854775807\n"
                       "g{k=\"small\"} -9223372036854775808\n"
                       "g{k=\"u64\"} 18446744073709551615\n"
                       "g{k=\"exp\"} 1e3\n"
                       "g{k=\"alone\"} 1.50\n"
                       "g{k=\"ts\"} 1 1700000000000\n",
                       "# TYPE g gauge\n"
                       "g{k=\"int\"} 4\n"
                       "g{k=\"mixed\"} 2\n"
                       "g{k=\"float\"} 0.2\n"
                       "g{k=\"inf\"} 1\n"
                       "g{k=\"nan\"} NaN\n"
                       "g{k=\"inf-inf\"} -Inf\n"
                       "g{k=\"neg\"} +1\n"
                       "g{k=\"big\"} 1\n"
                       "g{k=\"small\"} -1\n"
                       "g{k=\"u64\"} 1\n"
                       "g{k=\"exp\"} 1\n"
                       "g{k=\"ts\"} 2 1700000005000\n"};
    assert_merge(t, 2, NULL, 0,
                 "# TYPE g gauge\n"
                 "g{k=\"int\"} 7\n"
                 "g{k=\"mixed\"} 3.5\n"
                 "g{k=\"float\"} 0.3\n"
                 "g{k=\"inf\"} +Inf\n"
                 "g{k=\"nan\"} NaN\n"
                 "g{k=\"inf-inf\"} NaN\n"
                 "g{k=\"neg\"} -3\n"
                 "g{k=\"big\"} 9223372036854775807\n"    /* saturated */
                 "g{k=\"small\"} -9223372036854775808\n" /* saturated */
                 "g{k=\"u64\"} 1.84467440737096e+19\n"   /* beyond int64: a double */
                 "g{k=\"exp\"} 1001\n"
                 "g{k=\"alone\"} 1.50\n" /* one value: its bytes */
                 "g{k=\"ts\"} 3\n");     /* timestamps dropped */

    const struct jd_merge_rule max[] = {{"g", JD_MERGE_MAX}};
    const char *m[] = {"g{k=\"a\"} -Inf\ng{k=\"b\"} 2.5\ng{k=\"c\"} NaN\ng{k=\"d\"} 5\n",
                       "g{k=\"a\"} -1e308\ng{k=\"b\"} 2\ng{k=\"c\"} 7\ng{k=\"d\"} 6\n"};
    assert_merge(m, 2, max, 1,
                 "g{k=\"a\"} -1e+308\ng{k=\"b\"} 2.5\ng{k=\"c\"} NaN\ng{k=\"d\"} 6\n");
    const struct jd_merge_rule min[] = {{"g", JD_MERGE_MIN}};
    assert_merge(m, 2, min, 1, "g{k=\"a\"} -Inf\ng{k=\"b\"} 2\ng{k=\"c\"} NaN\ng{k=\"d\"} 5\n");
}

/* ---- real renders ------------------------------------------------------ */

static void populate(struct jd_metrics *m)
{
    const char *tn[] = {"vip_welcome", "cart_reminder", "odd \"name\"\\x"};
    const char *tk[] = {"REWARD", "REENGAGEMENT", "REWARD"};
    const char *sn[] = {"vip", "cart_abandoner"};
    jd_metrics_bind_names(m, "aaaa000011112222", 3, tn, tk, 2, sn);
    jd_metrics_add(m, JD_C_EVENTS_CONSUMED, 12);
    jd_metrics_add(m, JD_C_DLQ, 1);
    jd_metrics_add(m, JD_C_REBALANCES, 3);
    jd_metrics_failed(m, JD_FAIL_MALFORMED);
    jd_metrics_rule_reload(m, 1);
    jd_metrics_gauge(m, JD_G_TIMERS_PENDING, 10);
    jd_metrics_gauge(m, JD_G_ASSIGNED_PARTITIONS, 3);
    jd_metrics_observe(m, JD_H_REDIS_ROUNDTRIP, 0.0011);
    jd_metrics_observe(m, JD_H_REDIS_ROUNDTRIP, 0.3);
    jd_metrics_observe_n(m, JD_H_EVENT_PROCESSING, 0.002, 7);
    jd_metrics_observe(m, JD_H_BATCH_EVENTS, 250);
    jd_metrics_trigger_emitted(m, 0);
    jd_metrics_trigger_emitted(m, 2);
    jd_metrics_trigger_suppressed(m, 1, "cap");
    jd_metrics_segment_transition(m, 0, JD_DIR_ENTER);
    jd_metrics_segment_members_add(m, 1, 4);
    const char *json = "{\"type\":\"consumer\",\"topics\":{\"touchpoints\":{\"partitions\":{"
                       "\"0\":{\"partition\":0,\"consumer_lag\":4},"
                       "\"1\":{\"partition\":1,\"consumer_lag\":0}}}}}";
    jd_metrics_update_from_kafka_stats(m, json, strlen(json));
    struct jd_series prog[] = {{JD_PF_STAGE_CUSTOMERS, {"trial", NULL}, 40},
                               {JD_PF_DECISIONS, {"vip_welcome", "treatment"}, 9}};
    jd_metrics_set_program(m, prog, 2);
    jd_metrics_heartbeat(m);
}

static void test_single_render_is_unchanged(void **state)
{
    struct jd_metrics *m = jd_metrics_new("1.2.3");
    populate(m);
    char *r = render(m);
    /* the render has what the test means to cover */
    assert_non_null(strstr(r, "journeyd_redis_roundtrip_seconds_sum 0.30"));
    assert_non_null(strstr(r, "journeyd_consumer_lag{topic=\"touchpoints\",partition=\"0\"} 4\n"));
    assert_non_null(strstr(r, "trigger=\"odd \\\"name\\\"\\\\x\""));
    assert_non_null(strstr(r, "journeyd_stage_customers{stage=\"trial\"} 40\n"));

    const char *t[] = {r};
    char *got = merge(t, 1);
    assert_int_equal(strlen(got), strlen(r));
    assert_string_equal(got, r);
    free(got);
    free(r);
    jd_metrics_destroy(m);
}

static void test_two_renders_add_up(void **state)
{
    struct jd_metrics *m[2] = {jd_metrics_new("1.2.3"), jd_metrics_new("1.2.3")};
    populate(m[0]);
    populate(m[1]);
    jd_metrics_gauge(m[1], JD_G_TIMERS_PENDING, 5); /* the engines differ here */
    char *r[2] = {render(m[0]), render(m[1])};
    const struct jd_merge_rule rules[] = {{"journeyd_build_info", JD_MERGE_MAX},
                                          {"journeyd_start_time_seconds", JD_MERGE_MIN}};
    char *got = merge_rules((const char *const *)r, 2, rules, 2);

    struct walk wa = {.p = r[0]}, wb = {.p = r[1]}, wm = {.p = got};
    size_t counters = 0, nseries = 0;
    while (walk_next(&wa)) {
        assert_true(walk_next(&wb));
        assert_true(walk_next(&wm));
        /* same series, in the same order */
        assert_string_equal(wa.series, wb.series);
        assert_string_equal(wa.series, wm.series);
        assert_string_equal(wa.type, wm.type);
        nseries++;
        if (strncmp(wa.series, "journeyd_build_info", 19) == 0) {
            assert_true(wm.value == 1);
        } else if (strcmp(wa.series, "journeyd_start_time_seconds") == 0) {
            assert_true(wm.value == fmin(wa.value, wb.value));
        } else if (strcmp(wa.type, "counter") == 0 || strcmp(wa.type, "histogram") == 0) {
            assert_true(wa.value == wb.value);
            if (fabs(wm.value - 2 * wa.value) > 1e-12 * fabs(wm.value))
                fail_msg("%s: %g merged, %g in each", wa.series, wm.value, wa.value);
            counters++;
        } else if (fabs(wm.value - (wa.value + wb.value)) > 1e-9 * fabs(wm.value)) {
            fail_msg("%s: %g merged, %g + %g", wa.series, wm.value, wa.value, wb.value);
        }
    }
    assert_false(walk_next(&wm));
    assert_true(counters > 50);
    assert_true(sample(got, "journeyd_events_consumed_total") == 24);
    assert_true(sample(got, "journeyd_redis_roundtrip_seconds_count") == 4);
    assert_true(sample(got, "journeyd_timers_pending") == 15);
    assert_true(sample(got, "journeyd_triggers_suppressed_total{trigger=\"cart_reminder\","
                            "reason=\"cap\"}") == 2);
    assert_true(nseries > 80);
    free(got);
    free(r[0]);
    free(r[1]);
    jd_metrics_destroy(m[0]);
    jd_metrics_destroy(m[1]);
}

/* ---- robustness -------------------------------------------------------- */

static void test_malformed_lines(void **state)
{
    char longval[300];
    memset(longval, '0', sizeof(longval) - 1);
    longval[0] = '1';
    longval[sizeof(longval) - 1] = '\0';
    char longline[400];
    snprintf(longline, sizeof(longline), "a{x=\"long\"} %s\n", longval);

    char text[2048];
    snprintf(text, sizeof(text), "%s",
             "# TYPE a counter\n"
             "a\n"                          /* no value */
             "a \n"                         /* no value */
             "{x=\"1\"} 5\n"                /* no name */
             "a{x=\"1\" 5\n"                /* unterminated label set */
             "a{x=\"9\\\"} 1\n"             /* the quote is escaped: unterminated */
             "a{x=\"}\\\"\",y=\"2\"} 6\n"   /* } and \" inside a label value */
             "a{x=\"3\"} abc\n"             /* not a number */
             "a{x=\"4\"} 12abc\n"           /* not a whole number */
             "a{x=\"5\"} 7 1700000000000\n" /* timestamp */
             "\n   \n\t\n"                  /* blank */
             "# just a comment\n#\n# HELP\n# TYPE \n#TYPE\n"
             "  a{x=\"6\"}\t8\r\n" /* leading blanks, tab, CRLF */
             "a{x=\"7\"} 1e999\n"  /* strtod reads it (as +Inf) */
             "a{x=\"7\"} 1\n");    /* a duplicate combines */
    strcat(text, longline);
    const char *t[] = {text, text};
    char want[4096];
    snprintf(want, sizeof(want),
             "# TYPE a counter\n"
             "a{x=\"}\\\"\",y=\"2\"} %d\n"
             "a{x=\"5\"} %d\n"
             "a{x=\"6\"} %d\n"
             "a{x=\"7\"} +Inf\n"
             "a{x=\"long\"} %s\n",
             6, 7, 8, longval);
    assert_merge(t, 1, NULL, 0, want);
    snprintf(want, sizeof(want),
             "# TYPE a counter\n"
             "a{x=\"}\\\"\",y=\"2\"} %d\n"
             "a{x=\"5\"} %d\n"
             "a{x=\"6\"} %d\n"
             "a{x=\"7\"} +Inf\n"
             "a{x=\"long\"} 2e+298\n",
             12, 14, 16);
    assert_merge(t, 2, NULL, 0, want);
}

static void test_not_nul_terminated(void **state)
{
    const char *full = "# HELP a A.\n# TYPE a counter\na{x=\"1\"} 12\nb 3";
    size_t len = strlen(full), value = (size_t)(strstr(full, "} 12") - full);
    struct {
        size_t cut;
        const char *want;
    } cases[] = {
        {len, "# HELP a A.\n# TYPE a counter\na{x=\"1\"} 12\nb 3\n"},
        {len - 1, "# HELP a A.\n# TYPE a counter\na{x=\"1\"} 12\n"},  /* "b " */
        {value + 3, "# HELP a A.\n# TYPE a counter\na{x=\"1\"} 1\n"}, /* "} 1" */
        {value + 1, "# HELP a A.\n# TYPE a counter\n"},               /* "}" */
        {value - 1, "# HELP a A.\n# TYPE a counter\n"},               /* "a{x=\"1" */
        {strlen("# HELP a"), "# HELP a\n"},                           /* cut in the HELP line */
        {strlen("# HE"), ""},                                         /* not a HELP line */
        {0, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *g = guarded_copy(full, cases[i].cut);
        const char *t[] = {g};
        size_t lens[] = {cases[i].cut};
        struct jd_buf b;
        jd_buf_init(&b);
        jd_metrics_merge_text(t, lens, 1, NULL, 0, &b);
        if (strcmp(jd_buf_cstr(&b), cases[i].want) != 0)
            fail_msg("cut at %zu: got\n%s\nwant\n%s", cases[i].cut, b.data, cases[i].want);
        jd_buf_free(&b);
        guarded_free(g, cases[i].cut);
    }
    /* every cut of every line kind, two texts at once, each ending at a guard */
    const char *tricky = "# HELP h H \\ x\n# TYPE h histogram\n"
                         "h_bucket{le=\"+Inf\",q=\"a\\\\\\\"}\"} 1.5e3 17\n"
                         "h_sum -Inf\nh_count 9223372036854775807\n"
                         "loose{} NaN\n";
    size_t tl = strlen(tricky);
    for (size_t a = 0; a <= tl; a++) {
        char *g0 = guarded_copy(tricky, a), *g1 = guarded_copy(tricky, tl - a);
        const char *t[] = {g0, g1};
        size_t lens[] = {a, tl - a};
        struct jd_buf b;
        jd_buf_init(&b);
        jd_metrics_merge_text(t, lens, 2, NULL, 0, &b);
        jd_buf_free(&b);
        guarded_free(g0, a);
        guarded_free(g1, tl - a);
    }
}

/* Texts made of pieces that matter to the parser, in a fixed pseudo-random
 * order: the merge must not crash or read past a text, and its output must
 * be a fixed point (merged alone, it comes back byte for byte). */
static void test_generated_texts(void **state)
{
    static const char *pieces[] = {
        "# HELP ", "# TYPE ", "#",        "HELP",  "TYPE",    "histogram", "summary",
        "counter", "x",       "x_bucket", "x_sum", "x_count", "y",         "_sum",
        "{",       "}",       "\"",       "\\",    "=",       ",",         "le",
        " ",       " ",       "\t",       "\r",    "\n",      "\n",        "\n",
        "1",       "-2",      "+Inf",     "-Inf",  "NaN",     "0.5",       "9223372036854775807",
        "1e999",   "abc",     "\0",       "\xff"};
    const size_t npieces = sizeof(pieces) / sizeof(pieces[0]);
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (int round = 0; round < 3000; round++) {
        char text[3][512];
        size_t lens[3], n = 1 + (size_t)round % 3;
        for (size_t i = 0; i < n; i++) {
            size_t len = 0;
            while (len < 400) {
                seed = seed * 6364136223846793005u + 1442695040888963407u;
                const char *pc = pieces[(seed >> 33) % npieces];
                size_t pl = pc[0] ? strlen(pc) : 1; /* "\0" is one NUL byte */
                memcpy(text[i] + len, pc, pl);
                len += pl;
            }
            lens[i] = len;
        }
        char *g[3];
        for (size_t i = 0; i < n; i++)
            g[i] = guarded_copy(text[i], lens[i]);
        struct jd_buf once, twice;
        jd_buf_init(&once);
        jd_buf_init(&twice);
        jd_metrics_merge_text((const char *const *)g, lens, n, NULL, 0, &once);
        const char *o[] = {once.data ? once.data : ""};
        jd_metrics_merge_text(o, &once.len, 1, NULL, 0, &twice);
        if (once.len != twice.len || (once.len && memcmp(once.data, twice.data, once.len) != 0))
            fail_msg("round %d: not a fixed point:\n%.*s\n---\n%.*s", round, (int)once.len,
                     once.data ? once.data : "", (int)twice.len, twice.data ? twice.data : "");
        jd_buf_free(&once);
        jd_buf_free(&twice);
        for (size_t i = 0; i < n; i++)
            guarded_free(g[i], lens[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sum_counters_and_histograms),
        cmocka_unit_test(test_max_min_drop),
        cmocka_unit_test(test_series_and_families_in_later_texts),
        cmocka_unit_test(test_family_assignment),
        cmocka_unit_test(test_value_printing),
        cmocka_unit_test(test_single_render_is_unchanged),
        cmocka_unit_test(test_two_renders_add_up),
        cmocka_unit_test(test_malformed_lines),
        cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_generated_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
