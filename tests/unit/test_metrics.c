/*
 * test_metrics — metrics values and their Prometheus rendering, label
 * carry-over across rule rebinds, librdkafka statistics parsing, the HTTP
 * endpoints over a real socket, rendering concurrently with updates, and
 * the exposition checked by promtool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "journeyd/metrics.h"
#include "journeyd/rules.h"
#include "rules_testlib.h"

/* ---- helpers ----------------------------------------------------------- */

static char *render(struct jd_metrics *m)
{
    struct jd_buf b;
    jd_buf_init(&b);
    jd_metrics_render(m, &b);
    jd_buf_cstr(&b);
    return b.data; /* caller frees */
}

/* The value of the sample whose line starts with `series` followed by a
 * space; fails the test when the series is absent. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    fail_msg("series %s not in exposition:\n%s", series, text);
    return -1;
}

static int has_series(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return 1;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return 0;
}

static char *read_file(const char *rel, size_t *len)
{
    const char *src = getenv("JD_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", src ? src : ".", rel);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *d = malloc((size_t)n + 1);
    assert_int_equal(fread(d, 1, (size_t)n, f), (size_t)n);
    d[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return d;
}

static void bind_v1(struct jd_metrics *m)
{
    const char *tn[] = {"vip_welcome", "cart_reminder", "odd \"name\"\\x"};
    const char *tk[] = {"REWARD", "REENGAGEMENT", "REWARD"};
    const char *sn[] = {"vip", "cart_abandoner"};
    jd_metrics_bind_names(m, "aaaa000011112222", 3, tn, tk, 2, sn);
}

/* ---- counters, gauges, histograms -------------------------------------- */

static void test_counters_and_gauges(void **state)
{
    struct jd_metrics *m = jd_metrics_new("1.2.3");
    jd_metrics_add(m, JD_C_EVENTS_CONSUMED, 5);
    jd_metrics_add(m, JD_C_EVENTS_CONSUMED, 7);
    jd_metrics_add(m, JD_C_DLQ, 1);
    jd_metrics_add(m, JD_C_COUNT, 99); /* out of range: ignored */
    jd_metrics_gauge(m, JD_G_ASSIGNED_PARTITIONS, 6);
    jd_metrics_gauge(m, JD_G_TIMERS_PENDING, 10);
    jd_metrics_gauge_add(m, JD_G_TIMERS_PENDING, -3);
    jd_metrics_failed(m, JD_FAIL_MALFORMED);
    jd_metrics_failed(m, JD_FAIL_MALFORMED);
    jd_metrics_failed(m, JD_FAIL_EMPTY_KEY);
    jd_metrics_rule_reload(m, 1);
    jd_metrics_rule_reload(m, 0);
    jd_metrics_rule_reload(m, 0);

    char *t = render(m);
    assert_true(sample(t, "journeyd_events_consumed_total") == 12);
    assert_true(sample(t, "journeyd_dlq_total") == 1);
    assert_true(sample(t, "journeyd_redis_errors_total") == 0);
    assert_true(sample(t, "journeyd_assigned_partitions") == 6);
    assert_true(sample(t, "journeyd_timers_pending") == 7);
    assert_true(sample(t, "journeyd_events_failed_total{reason=\"malformed\"}") == 2);
    assert_true(sample(t, "journeyd_events_failed_total{reason=\"empty_key\"}") == 1);
    assert_true(sample(t, "journeyd_events_failed_total{reason=\"unknown_schema\"}") == 0);
    assert_true(sample(t, "journeyd_rule_reloads_total{result=\"ok\"}") == 1);
    assert_true(sample(t, "journeyd_rule_reloads_total{result=\"error\"}") == 2);
    assert_true(sample(t, "journeyd_build_info{version=\"1.2.3\",rule_version=\"\"}") == 1);
    assert_non_null(strstr(t, "# TYPE journeyd_events_consumed_total counter\n"));
    assert_non_null(strstr(t, "# HELP journeyd_events_consumed_total "));
    assert_non_null(strstr(t, "# TYPE journeyd_assigned_partitions gauge\n"));
    /* the names issue 8 asks for, all present before any rules are bound */
    const char *names[] = {"journeyd_events_consumed_total",
                           "journeyd_events_failed_total",
                           "journeyd_dlq_total",
                           "journeyd_triggers_emitted_total",
                           "journeyd_triggers_suppressed_total",
                           "journeyd_segment_transitions_total",
                           "journeyd_segment_members",
                           "journeyd_rules_evaluated_total",
                           "journeyd_event_processing_seconds",
                           "journeyd_event_to_trigger_seconds",
                           "journeyd_redis_roundtrip_seconds",
                           "journeyd_redis_errors_total",
                           "journeyd_batch_events",
                           "journeyd_consumer_lag",
                           "journeyd_assigned_partitions",
                           "journeyd_rebalances_total",
                           "journeyd_timers_pending",
                           "journeyd_timer_lateness_seconds",
                           "journeyd_rule_reloads_total",
                           "journeyd_build_info"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char type[128];
        snprintf(type, sizeof(type), "# TYPE %s ", names[i]);
        if (!strstr(t, type))
            fail_msg("no TYPE line for %s", names[i]);
    }
    free(t);
    jd_metrics_destroy(m);
}

static void test_histograms(void **state)
{
    struct jd_metrics *m = jd_metrics_new("x");
    /* le is inclusive: 0.001 lands in le="0.001" */
    jd_metrics_observe(m, JD_H_REDIS_ROUNDTRIP, 0.00005);
    jd_metrics_observe(m, JD_H_REDIS_ROUNDTRIP, 0.001);
    jd_metrics_observe(m, JD_H_REDIS_ROUNDTRIP, 0.0011);
    jd_metrics_observe(m, JD_H_REDIS_ROUNDTRIP, 42.0);
    jd_metrics_observe(m, JD_H_REDIS_ROUNDTRIP, -1.0); /* clock skew: counted as 0 */
    jd_metrics_observe(m, JD_H_BATCH_EVENTS, 1);
    jd_metrics_observe(m, JD_H_BATCH_EVENTS, 5000);
    jd_metrics_observe(m, JD_H_BATCH_EVENTS, 5001);
    jd_metrics_observe(m, JD_H_BATCH_EVENTS, 200000);

    char *t = render(m), *t2;
    assert_non_null(strstr(t, "# TYPE journeyd_redis_roundtrip_seconds histogram\n"));
    assert_true(sample(t, "journeyd_redis_roundtrip_seconds_bucket{le=\"0.0001\"}") == 2);
    assert_true(sample(t, "journeyd_redis_roundtrip_seconds_bucket{le=\"0.0005\"}") == 2);
    assert_true(sample(t, "journeyd_redis_roundtrip_seconds_bucket{le=\"0.001\"}") == 3);
    assert_true(sample(t, "journeyd_redis_roundtrip_seconds_bucket{le=\"0.0025\"}") == 4);
    assert_true(sample(t, "journeyd_redis_roundtrip_seconds_bucket{le=\"10\"}") == 4);
    assert_true(sample(t, "journeyd_redis_roundtrip_seconds_bucket{le=\"+Inf\"}") == 5);
    assert_true(sample(t, "journeyd_redis_roundtrip_seconds_count") == 5);
    double sum = sample(t, "journeyd_redis_roundtrip_seconds_sum");
    assert_true(sum > 42.00214 && sum < 42.00216);

    assert_true(sample(t, "journeyd_batch_events_bucket{le=\"1\"}") == 1);
    assert_true(sample(t, "journeyd_batch_events_bucket{le=\"5000\"}") == 2);
    assert_true(sample(t, "journeyd_batch_events_bucket{le=\"10000\"}") == 3);
    assert_true(sample(t, "journeyd_batch_events_bucket{le=\"100000\"}") == 3);
    assert_true(sample(t, "journeyd_batch_events_bucket{le=\"+Inf\"}") == 4);
    assert_true(sample(t, "journeyd_batch_events_sum") == 210002);
    /* n observations at once (a sealed checkpoint's events); n = 0 is none */
    jd_metrics_observe_n(m, JD_H_EVENT_PROCESSING, 0.3, 1000);
    jd_metrics_observe_n(m, JD_H_EVENT_PROCESSING, 0.002, 3);
    jd_metrics_observe_n(m, JD_H_EVENT_PROCESSING, 7.0, 0);
    t2 = render(m);
    assert_true(sample(t2, "journeyd_event_processing_seconds_bucket{le=\"0.0025\"}") == 3);
    assert_true(sample(t2, "journeyd_event_processing_seconds_bucket{le=\"0.25\"}") == 3);
    assert_true(sample(t2, "journeyd_event_processing_seconds_bucket{le=\"0.5\"}") == 1003);
    assert_true(sample(t2, "journeyd_event_processing_seconds_count") == 1003);
    sum = sample(t2, "journeyd_event_processing_seconds_sum");
    assert_true(sum > 300.0059 && sum < 300.0061);
    free(t2);
    /* untouched histograms still render every bucket at 0 */
    assert_true(sample(t, "journeyd_timer_lateness_seconds_bucket{le=\"3600\"}") == 0);
    assert_true(sample(t, "journeyd_event_to_trigger_seconds_count") == 0);
    free(t);
    jd_metrics_destroy(m);
}

/* ---- rule-bound families ----------------------------------------------- */

static void test_rulebound_before_bind_is_ignored(void **state)
{
    struct jd_metrics *m = jd_metrics_new("x");
    jd_metrics_trigger_emitted(m, 0);
    jd_metrics_trigger_suppressed(m, 0, "cap");
    jd_metrics_segment_transition(m, 0, JD_DIR_ENTER);
    jd_metrics_segment_members_add(m, 0, 1);
    char *t = render(m);
    assert_null(strstr(t, "journeyd_triggers_emitted_total{"));
    assert_non_null(strstr(t, "# TYPE journeyd_triggers_emitted_total counter\n"));
    free(t);
    jd_metrics_destroy(m);
}

static void test_rulebound_and_carry_over(void **state)
{
    struct jd_metrics *m = jd_metrics_new("x");
    bind_v1(m);
    jd_metrics_trigger_emitted(m, 0);
    jd_metrics_trigger_emitted(m, 0);
    jd_metrics_trigger_emitted(m, 1);
    jd_metrics_trigger_emitted(m, 2);
    jd_metrics_trigger_emitted(m, 3); /* out of range: ignored */
    jd_metrics_trigger_suppressed(m, 1, "cooldown");
    jd_metrics_trigger_suppressed(m, 1, "quiet_hours");
    jd_metrics_trigger_suppressed(m, 1, "quiet_hours");
    jd_metrics_trigger_suppressed(m, 1, "no such reason");
    jd_metrics_trigger_suppressed(m, 1, NULL);
    jd_metrics_trigger_suppressed_r(m, 0, JD_SUP_HOLDOUT);
    jd_metrics_segment_transition(m, 0, JD_DIR_ENTER);
    jd_metrics_segment_transition(m, 0, JD_DIR_ENTER);
    jd_metrics_segment_transition(m, 0, JD_DIR_EXIT);
    jd_metrics_segment_members_add(m, 0, 2);
    jd_metrics_segment_members_add(m, 0, -1);
    jd_metrics_segment_members_set(m, 1, 40);

    char *t = render(m);
    assert_true(
        sample(t, "journeyd_triggers_emitted_total{trigger=\"vip_welcome\",kind=\"REWARD\"}") == 2);
    assert_true(sample(t, "journeyd_triggers_emitted_total{trigger=\"cart_reminder\","
                          "kind=\"REENGAGEMENT\"}") == 1);
    /* label values escape quotes and backslashes */
    assert_true(sample(t, "journeyd_triggers_emitted_total{trigger=\"odd \\\"name\\\"\\\\x\","
                          "kind=\"REWARD\"}") == 1);
    assert_true(sample(t, "journeyd_triggers_suppressed_total{trigger=\"cart_reminder\","
                          "reason=\"cooldown\"}") == 1);
    assert_true(sample(t, "journeyd_triggers_suppressed_total{trigger=\"cart_reminder\","
                          "reason=\"quiet_hours\"}") == 2);
    assert_true(sample(t, "journeyd_triggers_suppressed_total{trigger=\"cart_reminder\","
                          "reason=\"other\"}") == 2);
    assert_true(sample(t, "journeyd_triggers_suppressed_total{trigger=\"cart_reminder\","
                          "reason=\"cap\"}") == 0);
    assert_true(sample(t, "journeyd_triggers_suppressed_total{trigger=\"vip_welcome\","
                          "reason=\"holdout\"}") == 1);
    assert_true(
        sample(t, "journeyd_segment_transitions_total{segment=\"vip\",direction=\"enter\"}") == 2);
    assert_true(
        sample(t, "journeyd_segment_transitions_total{segment=\"vip\",direction=\"exit\"}") == 1);
    assert_true(sample(t, "journeyd_segment_members{segment=\"vip\"}") == 1);
    assert_true(sample(t, "journeyd_segment_members{segment=\"cart_abandoner\"}") == 40);
    assert_true(sample(t, "journeyd_build_info{version=\"x\",rule_version=\"aaaa000011112222\"}") ==
                1);
    free(t);

    /* v2: vip_welcome stays (moved to index 1), cart_reminder changes kind,
     * the odd one goes, winback is new; segment vip stays, lapsed is new. */
    const char *tn[] = {"winback", "vip_welcome", "cart_reminder"};
    const char *tk[] = {"REENGAGEMENT", "REWARD", "REWARD"};
    const char *sn[] = {"lapsed", "vip"};
    jd_metrics_bind_names(m, "bbbb", 3, tn, tk, 2, sn);
    jd_metrics_trigger_emitted(m, 1);
    jd_metrics_segment_members_add(m, 1, 5);

    t = render(m);
    assert_true(
        sample(t, "journeyd_triggers_emitted_total{trigger=\"vip_welcome\",kind=\"REWARD\"}") == 3);
    assert_true(sample(t, "journeyd_triggers_emitted_total{trigger=\"winback\","
                          "kind=\"REENGAGEMENT\"}") == 0);
    /* a changed kind starts a new series at 0; its suppressions stay */
    assert_true(sample(t, "journeyd_triggers_emitted_total{trigger=\"cart_reminder\","
                          "kind=\"REWARD\"}") == 0);
    assert_false(has_series(t, "journeyd_triggers_emitted_total{trigger=\"cart_reminder\","
                               "kind=\"REENGAGEMENT\"}"));
    assert_true(sample(t, "journeyd_triggers_suppressed_total{trigger=\"cart_reminder\","
                          "reason=\"quiet_hours\"}") == 2);
    assert_true(sample(t, "journeyd_triggers_suppressed_total{trigger=\"vip_welcome\","
                          "reason=\"holdout\"}") == 1);
    assert_null(strstr(t, "odd"));
    assert_null(strstr(t, "cart_abandoner"));
    assert_true(
        sample(t, "journeyd_segment_transitions_total{segment=\"vip\",direction=\"enter\"}") == 2);
    assert_true(sample(t, "journeyd_segment_members{segment=\"vip\"}") == 6);
    assert_true(sample(t, "journeyd_segment_members{segment=\"lapsed\"}") == 0);
    assert_true(sample(t, "journeyd_build_info{version=\"x\",rule_version=\"bbbb\"}") == 1);
    free(t);
    jd_metrics_destroy(m);
}

static struct jd_ruleset *compile(struct tsrc *t)
{
    struct jd_ruleset *rs = NULL;
    struct jd_errors errs;
    jd_errors_init(&errs);
    if (jd_rules_compile(&t->src, &rs, &errs) != 0) {
        jd_errors_print(&errs, stderr);
        fail_msg("rules did not compile");
    }
    jd_errors_free(&errs);
    return rs;
}

static void test_bind_compiled_rules(void **state)
{
    struct tsrc t1, t2;
    tsrc_init(&t1);
    add_stage(&t1, "prospect", "true");
    add_seg(&t1, "vip", "count('purchase', 30d) >= 3");
    add_seg(&t1, "lapsed", "count('purchase') >= 1 && days_since_any() >= 60");
    add_trig(&t1, "vip_welcome", "enter:vip", JD_KIND_REWARD);
    add_trig(&t1, "winback", "enter:lapsed", JD_KIND_REENGAGEMENT);
    struct jd_ruleset *rs1 = compile(&t1);

    struct jd_metrics *m = jd_metrics_new("x");
    jd_metrics_bind_rules(m, rs1);
    size_t vip_welcome = (size_t)jd_rules_trigger_index(rs1, "vip_welcome");
    size_t winback = (size_t)jd_rules_trigger_index(rs1, "winback");
    size_t vip = (size_t)jd_rules_segment_index(rs1, "vip");
    jd_metrics_trigger_emitted(m, vip_welcome);
    jd_metrics_trigger_emitted(m, winback);
    jd_metrics_trigger_suppressed(m, vip_welcome, "cooldown");
    jd_metrics_segment_transition(m, vip, JD_DIR_ENTER);
    jd_metrics_segment_members_add(m, vip, 1);

    char *t = render(m);
    char series[256];
    snprintf(series, sizeof(series), "journeyd_build_info{version=\"x\",rule_version=\"%s\"}",
             jd_rules_version(rs1));
    assert_true(sample(t, series) == 1);
    assert_true(sample(t, "journeyd_triggers_emitted_total{trigger=\"winback\","
                          "kind=\"REENGAGEMENT\"}") == 1);
    assert_true(sample(t, "journeyd_segment_members{segment=\"lapsed\"}") == 0);
    free(t);

    /* reload: winback and lapsed go, cart_reminder and cart_abandoner come,
     * and the surviving rules move to other indexes */
    tsrc_init(&t2);
    add_stage(&t2, "prospect", "true");
    add_seg(&t2, "cart_abandoner", "not_followed_by('add_to_cart', 'purchase', 1h)");
    add_seg(&t2, "vip", "count('purchase', 30d) >= 3");
    add_trig(&t2, "cart_reminder", "enter:cart_abandoner", JD_KIND_REENGAGEMENT);
    add_trig(&t2, "vip_welcome", "enter:vip", JD_KIND_REWARD);
    struct jd_ruleset *rs2 = compile(&t2);
    assert_string_not_equal(jd_rules_version(rs1), jd_rules_version(rs2));
    jd_metrics_bind_rules(m, rs2);
    jd_rules_destroy(rs1); /* the metrics keep their own copies of the names */
    jd_metrics_trigger_emitted(m, (size_t)jd_rules_trigger_index(rs2, "vip_welcome"));
    jd_metrics_segment_members_add(m, (size_t)jd_rules_segment_index(rs2, "vip"), 1);

    t = render(m);
    snprintf(series, sizeof(series), "journeyd_build_info{version=\"x\",rule_version=\"%s\"}",
             jd_rules_version(rs2));
    assert_true(sample(t, series) == 1);
    assert_true(
        sample(t, "journeyd_triggers_emitted_total{trigger=\"vip_welcome\",kind=\"REWARD\"}") == 2);
    assert_true(sample(t, "journeyd_triggers_suppressed_total{trigger=\"vip_welcome\","
                          "reason=\"cooldown\"}") == 1);
    assert_true(sample(t, "journeyd_triggers_emitted_total{trigger=\"cart_reminder\","
                          "kind=\"REENGAGEMENT\"}") == 0);
    assert_null(strstr(t, "winback"));
    assert_null(strstr(t, "\"lapsed\""));
    assert_true(sample(t, "journeyd_segment_members{segment=\"vip\"}") == 2);
    assert_true(
        sample(t, "journeyd_segment_transitions_total{segment=\"vip\",direction=\"enter\"}") == 1);
    free(t);
    jd_metrics_destroy(m);
    jd_rules_destroy(rs2);
}

static void test_suppress_reason_names(void **state)
{
    const char *known[] = {"cooldown", "cap",    "budget",   "quiet_hours",
                           "holdout",  "optout", "duplicate"};
    for (size_t i = 0; i < 7; i++) {
        enum jd_suppress_reason r = jd_suppress_reason_parse(known[i]);
        assert_int_not_equal(r, JD_SUP_OTHER);
        assert_string_equal(jd_suppress_reason_name(r), known[i]);
    }
    assert_int_equal(jd_suppress_reason_parse("Cooldown"), JD_SUP_OTHER);
    assert_int_equal(jd_suppress_reason_parse(""), JD_SUP_OTHER);
    assert_string_equal(jd_suppress_reason_name(JD_SUP_OTHER), "other");
}

/* ---- librdkafka statistics --------------------------------------------- */

static void test_kafka_stats_sample(void **state)
{
    /* Captured from librdkafka 2.0.2 against its mock cluster: partition 0
     * committed at 10 of 25, partition 1 with nothing committed (lag -1),
     * plus the internal partition -1. */
    size_t len;
    char *json = read_file("tests/data/rdkafka_stats_consumer.json", &len);
    struct jd_lag *v;
    size_t n;
    int consumer;
    assert_int_equal(jd_kafka_stats_lag(json, len, &v, &n, &consumer), 0);
    assert_int_equal(consumer, 1);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].topic, "touchpoints");
    assert_int_equal(v[0].partition, 0);
    assert_int_equal(v[0].lag, 15);
    jd_lag_free(v, n);

    struct jd_metrics *m = jd_metrics_new("x");
    jd_metrics_update_from_kafka_stats(m, json, len);
    char *t = render(m);
    assert_true(sample(t, "journeyd_consumer_lag{topic=\"touchpoints\",partition=\"0\"}") == 15);
    assert_false(has_series(t, "journeyd_consumer_lag{topic=\"touchpoints\",partition=\"1\"}"));
    assert_false(has_series(t, "journeyd_consumer_lag{topic=\"touchpoints\",partition=\"-1\"}"));
    free(t);
    assert_int_equal(jd_metrics_total_lag(m), 15);

    /* The producer's statistics must not replace the consumer's lag. */
    char *prod = strdup(json);
    char *ty = strstr(prod, "\"type\": \"consumer\"");
    assert_non_null(ty);
    memcpy(ty, "\"type\": \"producer\"", strlen("\"type\": \"producer\""));
    jd_metrics_update_from_kafka_stats(m, prod, len);
    assert_int_equal(jd_metrics_total_lag(m), 15);
    free(prod);

    /* Truncated JSON is rejected and leaves the table as it was. */
    jd_metrics_update_from_kafka_stats(m, json, len / 2);
    assert_int_equal(jd_metrics_total_lag(m), 15);
    free(json);
    jd_metrics_destroy(m);
}

static void test_kafka_stats_shapes(void **state)
{
    struct jd_lag *v;
    size_t n;
    int consumer;
    /* two topics, escapes in unrelated strings, nested arrays, key order
     * with consumer_lag before partition, a revoked partition (lag -1) */
    const char *doc =
        "{\"name\":\"a\\\"b\\\\c\\u00e9\\ud83d\\ude00\",\"type\":\"consumer\",\"x\":[1,[2,{}],"
        "true,false,null,-1.5e3],\"topics\":{\"t1\":{\"topic\":\"t1\",\"partitions\":{"
        "\"3\":{\"consumer_lag\":7,\"partition\":3,\"hi_offset\":100},"
        "\"4\":{\"partition\":4,\"consumer_lag\":-1}}},"
        "\"t2\":{\"partitions\":{\"0\":{\"partition\":0,\"consumer_lag\":123456789012}}},"
        "\"t3\":{\"partitions\":[]}},\"cgrp\":{\"state\":\"up\"}}";
    assert_int_equal(jd_kafka_stats_lag(doc, strlen(doc), &v, &n, &consumer), 0);
    assert_int_equal(consumer, 1);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].topic, "t1");
    assert_int_equal(v[0].partition, 3);
    assert_int_equal(v[0].lag, 7);
    assert_string_equal(v[1].topic, "t2");
    assert_int_equal(v[1].lag, 123456789012LL);
    jd_lag_free(v, n);

    const char *empty = "{\"type\":\"consumer\",\"topics\":{}}";
    assert_int_equal(jd_kafka_stats_lag(empty, strlen(empty), &v, &n, &consumer), 0);
    assert_int_equal(n, 0);
    jd_lag_free(v, n);

    const char *bad[] = {"",
                         "[]",
                         "{",
                         "{\"type\":\"consumer\",}",
                         "{\"topics\":{\"t\":{\"partitions\":{\"0\":{\"partition\":0,"
                         "\"consumer_lag\":5}}}} trailing",
                         "{\"a\":\"unterminated}",
                         "{\"a\":\"bad \\q escape\"}",
                         "{\"a\":tru}",
                         "{\"a\" 1}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (jd_kafka_stats_lag(bad[i], strlen(bad[i]), &v, &n, &consumer) != -1)
            fail_msg("accepted malformed JSON: %s", bad[i]);
        assert_null(v);
    }

    /* deep nesting is refused, not a stack overflow */
    char deep[4096];
    size_t k = 0;
    k += (size_t)snprintf(deep, sizeof(deep), "{\"a\":");
    for (int i = 0; i < 1000; i++)
        deep[k++] = '[';
    for (int i = 0; i < 1000; i++)
        deep[k++] = ']';
    deep[k++] = '}';
    assert_int_equal(jd_kafka_stats_lag(deep, k, &v, &n, &consumer), -1);
}

/* ---- engines (jd_metrics_child) ----------------------------------------- */

/* Two engines' metrics shown as one: counters and histograms summed, gauges
 * summed (partitions, cached customers), journeyd_engines, and the process's
 * own readiness and liveness. */
static void test_children_render_as_one(void **state)
{
    (void)state;
    struct jd_metrics *m = jd_metrics_new("x");
    char *t = render(m);
    assert_true(sample(t, "journeyd_engines") == 1);
    free(t);

    struct jd_metrics *a = jd_metrics_child(m), *b = jd_metrics_child(m);
    jd_metrics_add(a, JD_C_EVENTS_CONSUMED, 7);
    jd_metrics_add(b, JD_C_EVENTS_CONSUMED, 5);
    jd_metrics_add(m, JD_C_EVENTS_CONSUMED, 1000); /* the parent's own: not shown */
    jd_metrics_gauge(a, JD_G_ASSIGNED_PARTITIONS, 3);
    jd_metrics_gauge(b, JD_G_ASSIGNED_PARTITIONS, 4);
    jd_metrics_observe(a, JD_H_BATCH_EVENTS, 3);
    jd_metrics_observe(b, JD_H_BATCH_EVENTS, 300);
    jd_metrics_failed(b, JD_FAIL_MALFORMED);

    t = render(m);
    assert_true(sample(t, "journeyd_events_consumed_total") == 12);
    assert_true(sample(t, "journeyd_assigned_partitions") == 7);
    assert_true(sample(t, "journeyd_batch_events_count") == 2);
    assert_true(sample(t, "journeyd_batch_events_sum") == 303);
    assert_true(sample(t, "journeyd_batch_events_bucket{le=\"5\"}") == 1);
    assert_true(sample(t, "journeyd_events_failed_total{reason=\"malformed\"}") == 1);
    assert_true(sample(t, "journeyd_engines") == 2);
    assert_true(sample(t, "journeyd_alive") == 1);
    /* each family once */
    assert_non_null(strstr(t, "# TYPE journeyd_engines gauge"));
    assert_null(strstr(strstr(t, "# TYPE journeyd_engines gauge") + 1, "# TYPE journeyd_engines"));
    assert_null(strstr(strstr(t, "# TYPE journeyd_ready gauge") + 1, "# TYPE journeyd_ready"));
    free(t);

    /* ready: some engine owns partitions, every engine has Redis and is not
     * back-pressured; an engine without partitions does not hold it back */
    struct jd_buf why;
    jd_buf_init(&why);
    assert_false(jd_metrics_ready(m, &why));
    assert_non_null(strstr(jd_buf_cstr(&why), "partitions_assigned: no"));
    jd_metrics_set_ready_inputs(a, 1, 1, 0);
    jd_metrics_set_ready_inputs(b, 0, 1, 0);
    jd_buf_reset(&why);
    assert_true(jd_metrics_ready(m, &why));
    t = render(m);
    assert_true(sample(t, "journeyd_ready") == 1);
    free(t);
    jd_metrics_set_ready_inputs(b, 0, 0, 0);
    jd_buf_reset(&why);
    assert_false(jd_metrics_ready(m, &why));
    assert_non_null(strstr(jd_buf_cstr(&why), "redis_ok: no (engine 1)"));
    jd_metrics_set_ready_inputs(b, 0, 1, 1);
    assert_false(jd_metrics_ready(m, NULL));
    t = render(m);
    assert_true(sample(t, "journeyd_ready") == 0);
    assert_true(sample(t, "journeyd_backpressured") == 1);
    free(t);

    /* alive only while every engine's loop is */
    jd_metrics_set_heartbeat_timeout_ms(m, 50);
    usleep(120 * 1000);
    jd_metrics_heartbeat(a);
    double age;
    assert_false(jd_metrics_alive(m, &age));
    assert_true(age >= 0.1);
    jd_metrics_heartbeat(b);
    assert_true(jd_metrics_alive(m, NULL));
    jd_buf_free(&why);
    jd_metrics_destroy(m); /* and its children */
}

/* ---- health ------------------------------------------------------------ */

static void test_health(void **state)
{
    struct jd_metrics *m = jd_metrics_new("x");
    struct jd_buf why;
    jd_buf_init(&why);
    assert_true(jd_metrics_alive(m, NULL));
    assert_false(jd_metrics_ready(m, &why));
    assert_non_null(strstr(jd_buf_cstr(&why), "partitions_assigned: no"));
    assert_non_null(strstr(jd_buf_cstr(&why), "redis_ok: no"));
    assert_null(strstr(jd_buf_cstr(&why), "backpressured"));

    jd_metrics_set_ready_inputs(m, 1, 1, 0);
    jd_buf_reset(&why);
    assert_true(jd_metrics_ready(m, &why));
    assert_int_equal(why.len, 0);

    jd_metrics_set_ready_inputs(m, 1, 1, 1);
    assert_false(jd_metrics_ready(m, &why));
    assert_non_null(strstr(jd_buf_cstr(&why), "backpressured: yes"));
    char *t = render(m);
    assert_true(sample(t, "journeyd_backpressured") == 1);
    assert_true(sample(t, "journeyd_ready") == 0);
    free(t);

    jd_metrics_set_heartbeat_timeout_ms(m, 50);
    usleep(120 * 1000);
    double age;
    assert_false(jd_metrics_alive(m, &age));
    assert_true(age >= 0.1);
    jd_metrics_heartbeat(m);
    assert_true(jd_metrics_alive(m, NULL));
    jd_buf_free(&why);
    jd_metrics_destroy(m);
}

/* ---- HTTP -------------------------------------------------------------- */

/* GET `path` on 127.0.0.1:port over a plain socket; returns the status and
 * the whole response (headers and body) in *resp (caller frees). */
static int http_get(int port, const char *method, const char *path, char **resp)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char req[256];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n", method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    struct jd_buf b;
    jd_buf_init(&b);
    char chunk[4096];
    ssize_t r;
    while ((r = read(fd, chunk, sizeof(chunk))) > 0)
        jd_buf_append(&b, chunk, (size_t)r);
    close(fd);
    jd_buf_cstr(&b);
    int status = 0;
    assert_int_equal(sscanf(b.data, "HTTP/1.%*d %d", &status), 1);
    *resp = b.data;
    return status;
}

static const char *body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    assert_non_null(p);
    return p + 4;
}

static void test_http_endpoints(void **state)
{
    char err[256];
    struct jd_metrics *m = jd_metrics_new("9.9.9");
    assert_null(jd_http_start(m, "127.0.0.1", 0, err, sizeof(err))); /* disabled */
    assert_string_equal(err, "");
    assert_null(jd_http_start(m, "not-an-address", -1, err, sizeof(err)));
    assert_true(strlen(err) > 0);

    struct jd_http *h = jd_http_start(m, "127.0.0.1", -1, err, sizeof(err));
    assert_non_null(h);
    int port = jd_http_port(h);
    assert_true(port > 0);

    /* a second server on the same port fails with a message */
    assert_null(jd_http_start(m, "127.0.0.1", port, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot listen"));

    jd_metrics_add(m, JD_C_EVENTS_CONSUMED, 31);
    char *resp;
    assert_int_equal(http_get(port, "GET", "/metrics", &resp), 200);
    assert_non_null(strstr(resp, "text/plain; version=0.0.4"));
    assert_true(sample(body_of(resp), "journeyd_events_consumed_total") == 31);
    assert_true(sample(body_of(resp), "journeyd_build_info{version=\"9.9.9\",rule_version=\"\"}") ==
                1);
    free(resp);

    assert_int_equal(http_get(port, "GET", "/healthz", &resp), 200);
    assert_string_equal(body_of(resp), "ok\n");
    free(resp);

    assert_int_equal(http_get(port, "GET", "/readyz", &resp), 503);
    assert_non_null(strstr(body_of(resp), "partitions_assigned: no"));
    assert_non_null(strstr(body_of(resp), "redis_ok: no"));
    free(resp);
    jd_metrics_set_ready_inputs(m, 1, 0, 1);
    assert_int_equal(http_get(port, "GET", "/readyz", &resp), 503);
    assert_null(strstr(body_of(resp), "partitions_assigned"));
    assert_non_null(strstr(body_of(resp), "redis_ok: no"));
    assert_non_null(strstr(body_of(resp), "backpressured: yes"));
    free(resp);
    jd_metrics_set_ready_inputs(m, 1, 1, 0);
    assert_int_equal(http_get(port, "GET", "/readyz", &resp), 200);
    free(resp);

    jd_metrics_set_heartbeat_timeout_ms(m, 30);
    usleep(80 * 1000);
    assert_int_equal(http_get(port, "GET", "/healthz", &resp), 503);
    assert_non_null(strstr(body_of(resp), "stalled"));
    free(resp);
    jd_metrics_heartbeat(m);
    assert_int_equal(http_get(port, "GET", "/healthz", &resp), 200);
    free(resp);

    assert_int_equal(http_get(port, "GET", "/nope", &resp), 404);
    free(resp);
    assert_int_equal(http_get(port, "POST", "/metrics", &resp), 405);
    free(resp);

    jd_http_stop(h);
    jd_metrics_destroy(m);
}

/* ---- concurrency ------------------------------------------------------- */

struct render_ctx {
    struct jd_metrics *m;
    atomic_int stop;
    atomic_int renders;
};

static void *render_loop(void *arg)
{
    struct render_ctx *rc = arg;
    struct jd_buf b;
    jd_buf_init(&b);
    while (!rc->stop) {
        jd_buf_reset(&b);
        jd_metrics_render(rc->m, &b);
        rc->renders++;
    }
    jd_buf_free(&b);
    return NULL;
}

static void test_concurrent_render(void **state)
{
    struct jd_metrics *m = jd_metrics_new("x");
    bind_v1(m);
    struct render_ctx rc = {.m = m};
    atomic_init(&rc.stop, 0);
    atomic_init(&rc.renders, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, render_loop, &rc), 0);
    const int N = 200000;
    for (int i = 0; i < N; i++) {
        jd_metrics_add(m, JD_C_EVENTS_CONSUMED, 1);
        jd_metrics_observe(m, JD_H_EVENT_PROCESSING, 0.0002);
        jd_metrics_trigger_emitted(m, 0);
        jd_metrics_segment_members_add(m, 1, 1);
        /* rebinding while the other thread renders: the swap must never
         * hand the renderer freed arrays, and counts must carry over */
        if (i % 20000 == 0)
            bind_v1(m);
    }
    /* keep the renderer going until it has overlapped with some updates */
    while (rc.renders < 5)
        usleep(1000);
    rc.stop = 1;
    pthread_join(th, NULL);

    char *t = render(m);
    assert_true(sample(t, "journeyd_events_consumed_total") == N);
    assert_true(sample(t, "journeyd_event_processing_seconds_count") == N);
    assert_true(sample(t, "journeyd_event_processing_seconds_bucket{le=\"0.00025\"}") == N);
    assert_true(
        sample(t, "journeyd_triggers_emitted_total{trigger=\"vip_welcome\",kind=\"REWARD\"}") == N);
    assert_true(sample(t, "journeyd_segment_members{segment=\"cart_abandoner\"}") == N);
    free(t);
    jd_metrics_destroy(m);
}

/* ---- promtool ---------------------------------------------------------- */

/* promtool (Debian package prometheus) finds nothing to say about text. */
static void promtool_accepts(const char *text)
{
    char path[] = "/tmp/jd_metrics_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[8192];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    unlink(path);
    if (rc != 0 || n != 0)
        fail_msg("promtool check metrics (rc %d):\n%s", rc, out);
}

static void test_promtool_accepts_exposition(void **state)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        fprintf(stderr, "promtool not installed (Debian package prometheus): skipped\n");
        skip();
    }
    struct jd_metrics *m = jd_metrics_new("0.1.0");
    bind_v1(m);
    jd_metrics_add(m, JD_C_EVENTS_CONSUMED, 3);
    jd_metrics_observe(m, JD_H_TIMER_LATENESS, 12.5);
    jd_metrics_trigger_suppressed(m, 1, "cap");
    const char *json = "{\"type\":\"consumer\",\"topics\":{\"touchpoints\":{\"partitions\":{"
                       "\"0\":{\"partition\":0,\"consumer_lag\":4}}}}}";
    jd_metrics_update_from_kafka_stats(m, json, strlen(json));
    char *t = render(m);
    promtool_accepts(t);
    free(t);
    jd_metrics_destroy(m);

    /* two engines shown as one (metrics_merge.c) */
    m = jd_metrics_new("0.1.0");
    struct jd_metrics *a = jd_metrics_child(m), *b = jd_metrics_child(m);
    bind_v1(a);
    bind_v1(b);
    jd_metrics_add(a, JD_C_EVENTS_CONSUMED, 3);
    jd_metrics_observe(b, JD_H_TIMER_LATENESS, 12.5);
    jd_metrics_trigger_suppressed(b, 1, "cap");
    jd_metrics_update_from_kafka_stats(a, json, strlen(json));
    t = render(m);
    promtool_accepts(t);
    free(t);
    jd_metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_and_gauges),
        cmocka_unit_test(test_histograms),
        cmocka_unit_test(test_rulebound_before_bind_is_ignored),
        cmocka_unit_test(test_rulebound_and_carry_over),
        cmocka_unit_test(test_bind_compiled_rules),
        cmocka_unit_test(test_suppress_reason_names),
        cmocka_unit_test(test_kafka_stats_sample),
        cmocka_unit_test(test_kafka_stats_shapes),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_http_endpoints),
        cmocka_unit_test(test_concurrent_render),
        cmocka_unit_test(test_promtool_accepts_exposition),
        cmocka_unit_test(test_children_render_as_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
