/*
 * test_config — the configuration module: the shipped config's values, every
 * kind of error with its exact FILE:LINE message, rule string positions,
 * command-line overrides, property pass-through, and that
 * docs/configuration.md carries the reference generated from the key table.
 *
 * Regenerate the docs' reference after changing the table:
 *   JD_SOURCE_DIR=$PWD JD_UPDATE_DOCS=1 build/tests/test_config
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journeyd/config.h"

static char g_dir[64];
static char g_path[128];

static int setup(void **state)
{
    strcpy(g_dir, "/tmp/jd_test_config.XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_path, sizeof g_path, "%s/t.conf", g_dir);
    return 0;
}

static int teardown(void **state)
{
    unlink(g_path);
    char inc[160];
    snprintf(inc, sizeof inc, "%s/rules.inc", g_dir);
    unlink(inc);
    rmdir(g_dir);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Loads `text` as t.conf; errors go to *errs. */
static struct jd_config *load_text(const char *text, struct jd_errors *errs)
{
    write_file(g_path, text);
    jd_errors_init(errs);
    return jd_config_load(g_path, errs);
}

static const char *source_dir(void)
{
    const char *d = getenv("JD_SOURCE_DIR");
    return d ? d : ".";
}

/* Expects exactly the given messages, in order; "%F" stands for t.conf's path. */
static void expect_errors(const char *text, size_t n, ...)
{
    struct jd_errors errs;
    struct jd_config *cfg = load_text(text, &errs);
    assert_null(cfg);
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++) {
        const char *fmt = va_arg(ap, const char *);
        char want[1024];
        snprintf(want, sizeof want, "%s%s", g_path, fmt);
        if (i >= errs.n || strcmp(errs.msgs[i], want) != 0) {
            jd_errors_print(&errs, stderr);
            print_error("error %zu: want '%s'\n", i, want);
        }
        assert_true(i < errs.n);
        assert_string_equal(errs.msgs[i], want);
    }
    va_end(ap);
    assert_int_equal(errs.n, n);
    jd_errors_free(&errs);
}

/* ---- the shipped configuration ---- */

static const struct jd_rule_src *find_rule(const struct jd_rule_src *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return &v[i];
    return NULL;
}

static const struct jd_trigger_src *find_trigger(const struct jd_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->rules.ntriggers; i++)
        if (strcmp(cfg->rules.triggers[i].on.name, name) == 0)
            return &cfg->rules.triggers[i];
    return NULL;
}

/* The bytes at (line, col) of `file` are `expr`: what the rule compiler relies on. */
static void assert_at(const struct jd_rule_src *r)
{
    assert_true(r->line > 0);
    assert_true(r->col > 0);
    FILE *f = fopen(r->file, "r");
    assert_non_null(f);
    char line[1024];
    for (int i = 0; i < r->line; i++)
        assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_true(strlen(line) >= (size_t)r->col - 1 + strlen(r->expr));
    assert_memory_equal(line + r->col - 1, r->expr, strlen(r->expr));
    assert_int_equal(line[r->col - 2], '"');
    assert_int_equal(line[r->col - 1 + strlen(r->expr)], '"');
}

static void test_shipped_config(void **state)
{
    char path[512], want[600];
    snprintf(path, sizeof path, "%s/config/journeyd.conf", source_dir());
    struct jd_errors errs;
    jd_errors_init(&errs);
    struct jd_config *cfg = jd_config_load(path, &errs);
    jd_errors_print(&errs, stderr);
    assert_non_null(cfg);
    assert_int_equal(errs.n, 0);

    assert_string_equal(cfg->brokers, "127.0.0.1:9092");
    assert_string_equal(cfg->group_id, "journeyd");
    assert_null(cfg->group_instance_id);
    assert_int_equal(cfg->session_timeout_ms, 10000);
    assert_int_equal(cfg->ninput_topics, 1);
    assert_string_equal(cfg->input_topics[0], "touchpoints");
    assert_string_equal(cfg->dead_letter_topic, "touchpoints.dlq");
    assert_string_equal(cfg->topics[JD_KIND_REWARD], "loyalty.rewards");
    assert_string_equal(cfg->topics[JD_KIND_REENGAGEMENT], "loyalty.reengagement");
    assert_int_equal(cfg->transactions, 0);
    assert_int_equal(cfg->nkafka_props, 2);
    assert_string_equal(cfg->kafka_props[0], "statistics.interval.ms");
    assert_string_equal(cfg->kafka_props[1], "5000");
    assert_string_equal(cfg->kafka_props[2], "fetch.wait.max.ms");
    assert_string_equal(cfg->kafka_props[3], "10");

    assert_int_equal(cfg->nredis_addresses, 1);
    assert_string_equal(cfg->redis_addresses[0], "127.0.0.1:6379");
    assert_string_equal(cfg->key_prefix, "j");
    assert_int_equal(cfg->redis_timeout_ms, 2000);

    snprintf(want, sizeof want, "%s/config/schemas/touchpoint.avsc", source_dir());
    assert_string_equal(cfg->touchpoint_schema, want);
    assert_int_equal(access(cfg->touchpoint_schema, R_OK), 0);
    snprintf(want, sizeof want, "%s/config/schemas/trigger.avsc", source_dir());
    assert_string_equal(cfg->trigger_schema, want);
    assert_int_equal(access(cfg->trigger_schema, R_OK), 0);
    assert_int_equal(cfg->wire_format, JD_WIRE_AUTO);
    assert_int_equal(cfg->nregistry_ids, 1);
    assert_int_equal(cfg->registry_ids[0].id, 1);
    assert_string_equal(cfg->registry_ids[0].file, cfg->touchpoint_schema);
    assert_int_equal(cfg->trigger_schema_id, -1);

    assert_int_equal(cfg->clock, JD_CLOCK_EVENT);
    assert_int_equal(cfg->allowed_lateness_ms, 5 * 60000);
    assert_int_equal(cfg->batch_max_events, 50000);
    assert_int_equal(cfg->batch_max_wait_ms, 0);
    assert_int_equal(cfg->cache_max_customers, 1000000);
    assert_int_equal(cfg->naive, 0);
    assert_int_equal(cfg->history_max, 20);
    assert_int_equal(cfg->timer_tick_ms, 100);
    assert_int_equal(cfg->idle_advance_ms, 30000);
    assert_int_equal(cfg->metrics_port, 9464);
    assert_string_equal(cfg->metrics_bind, "0.0.0.0");
    assert_int_equal(cfg->log_level, JD_LOG_INFO);
    assert_int_equal(cfg->log_json, 0);

    /* Stages, in order; all enabled. */
    static const char *stages[] = {"lapsed",         "at_risk", "loyal",   "repeat",
                                   "first_purchase", "engaged", "prospect"};
    assert_int_equal(cfg->rules.nstages, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(cfg->rules.stages[i].name, stages[i]);
        assert_true(cfg->rules.stages[i].enabled);
        assert_ptr_equal(cfg->rules.stages[i].file, cfg->path);
        assert_at(&cfg->rules.stages[i]);
    }
    assert_string_equal(cfg->rules.stages[0].expr,
                        "count('purchase') >= 1 && days_since_any() >= 60");
    assert_string_equal(cfg->rules.stages[6].expr, "true");

    /* Segments: all enabled, the timer-driven ones included (issue 4). */
    assert_int_equal(cfg->rules.nsegments, 4);
    const struct jd_rule_src *seg;
    assert_non_null(seg = find_rule(cfg->rules.segments, 4, "vip"));
    assert_true(seg->enabled);
    assert_string_equal(seg->expr, "count('purchase', 30d) >= 3");
    assert_non_null(seg = find_rule(cfg->rules.segments, 4, "cart_abandoner"));
    assert_true(seg->enabled);
    assert_string_equal(seg->expr, "not_followed_by('add_to_cart', 'purchase', 1h)");
    assert_non_null(seg = find_rule(cfg->rules.segments, 4, "lapsed"));
    assert_true(seg->enabled);
    assert_non_null(seg = find_rule(cfg->rules.segments, 4, "detractor"));
    assert_true(seg->enabled);
    for (size_t i = 0; i < 4; i++)
        assert_at(&cfg->rules.segments[i]);

    assert_int_equal(cfg->rules.ntriggers, 5);
    const struct jd_trigger_src *t;
    assert_non_null(t = find_trigger(cfg, "welcome_first_purchase"));
    assert_int_equal(t->kind, JD_KIND_REWARD);
    assert_string_equal(t->on.expr, "event: event.type == 'purchase' && count('purchase') == 1");
    assert_true(t->on.enabled);
    assert_int_equal(t->cooldown_ms, 0);

    assert_non_null(t = find_trigger(cfg, "vip_welcome"));
    assert_int_equal(t->kind, JD_KIND_REWARD);
    assert_string_equal(t->on.expr, "enter:vip");
    assert_int_equal(t->cooldown_ms, 30 * 86400000LL);
    assert_null(t->topic);
    assert_int_equal(t->npayload, 2);
    assert_string_equal(t->payload[0].key, "spend_30d");
    assert_string_equal(t->payload[0].expr.name, "spend_30d");
    assert_string_equal(t->payload[0].expr.expr, "sum('purchase', amount, 30d)");
    assert_string_equal(t->payload[1].key, "last_channel");
    assert_string_equal(t->payload[1].expr.expr, "last_channel");
    assert_at(&t->payload[0].expr);
    assert_at(&t->payload[1].expr);

    assert_non_null(t = find_trigger(cfg, "service_recovery"));
    assert_int_equal(t->kind, JD_KIND_REENGAGEMENT);
    assert_int_equal(t->cooldown_ms, 86400000);
    assert_true(t->on.enabled);

    assert_non_null(t = find_trigger(cfg, "cart_reminder"));
    assert_int_equal(t->kind, JD_KIND_REENGAGEMENT);
    assert_string_equal(t->on.expr, "enter:cart_abandoner");
    assert_true(t->on.enabled);

    assert_non_null(t = find_trigger(cfg, "winback"));
    assert_string_equal(t->on.expr, "enter:lapsed");
    assert_true(t->holdout > 0.0999 && t->holdout < 0.1001);
    assert_true(t->on.enabled);
    for (size_t i = 0; i < 5; i++)
        assert_at(&cfg->rules.triggers[i].on);

    assert_int_equal(cfg->policy.ncaps, 1);
    assert_int_equal(cfg->policy.caps[0].kind, JD_KIND_REENGAGEMENT);
    assert_int_equal(cfg->policy.caps[0].max, 2);
    assert_int_equal(cfg->policy.caps[0].per_ms, 7 * 86400000LL);
    assert_true(cfg->policy.quiet_enabled);
    assert_int_equal(cfg->policy.quiet_kinds, 1u << JD_KIND_REENGAGEMENT);
    assert_int_equal(cfg->policy.quiet_from_min, 21 * 60);
    assert_int_equal(cfg->policy.quiet_to_min, 8 * 60);
    assert_string_equal(cfg->policy.quiet_tz_attribute, "tz");
    assert_string_equal(cfg->policy.quiet_default_tz, "UTC");
    assert_int_equal(cfg->policy.quiet_defer, 1);
    assert_string_equal(cfg->policy.audit_topic, "loyalty.suppressed");
    assert_string_equal(cfg->policy.optout_attribute, "optout");

    jd_config_destroy(cfg);
    jd_errors_free(&errs);
}

/* An empty file is a valid configuration: every default from the table. */
static void test_defaults(void **state)
{
    struct jd_errors errs;
    struct jd_config *cfg = load_text("# nothing\n", &errs);
    assert_non_null(cfg);
    char want[256];
    assert_string_equal(cfg->dir, g_dir);
    snprintf(want, sizeof want, "%s/schemas/touchpoint.avsc", g_dir);
    assert_string_equal(cfg->touchpoint_schema, want);
    assert_string_equal(cfg->brokers, "127.0.0.1:9092");
    assert_string_equal(cfg->group_id, "journeyd");
    assert_int_equal(cfg->session_timeout_ms, 10000);
    assert_string_equal(cfg->input_topics[0], "touchpoints");
    assert_int_equal(cfg->nkafka_props, 0);
    assert_int_equal(cfg->nredis_addresses, 1);
    assert_string_equal(cfg->redis_addresses[0], "127.0.0.1:6379");
    assert_int_equal(cfg->trigger_schema_id, -1);
    assert_int_equal(cfg->nregistry_ids, 0);
    assert_int_equal(cfg->batch_max_events, 50000);
    assert_int_equal(cfg->batch_max_wait_ms, 0);
    assert_int_equal(cfg->flush_interval_ms, 1000);
    assert_int_equal(cfg->history_max, 20);
    assert_int_equal(cfg->timer_tick_ms, 100);
    assert_int_equal(cfg->idle_advance_ms, 30000);
    assert_int_equal(cfg->metrics_port, 9464);
    assert_int_equal(cfg->rules.nstages + cfg->rules.nsegments + cfg->rules.ntriggers, 0);
    assert_false(cfg->policy.quiet_enabled);
    assert_null(cfg->policy.audit_topic);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
}

/* Every option of a trigger, and the policy's other values. */
static void test_trigger_options(void **state)
{
    struct jd_errors errs;
    struct jd_config *cfg =
        load_text("schemas = { touchpoint = \"/abs/tp.avsc\"; trigger_schema_id = 7; };\n"
                  "processing = { clock = \"wall\"; naive = true; };\n"
                  "log = { level = \"debug\"; format = \"json\"; };\n"
                  "triggers = ( { name = \"t1\"; kind = \"REENGAGEMENT\"; on = \"exit:x\";\n"
                  "  topic = \"custom\"; cooldown = \"2h\"; max_per_customer = 3; per = \"7d\";\n"
                  "  budget = 10000000000L; budget_period = \"1w\"; priority = -5;\n"
                  "  holdout = 1; goal = \"purchase\"; goal_window = \"3d\"; enabled = true; } );\n"
                  "policy = { optout_attribute = \"optout\";\n"
                  "  quiet_hours = { from = \"00:00\"; to = \"23:59\"; action = \"drop\"; }; };\n",
                  &errs);
    jd_errors_print(&errs, stderr);
    assert_non_null(cfg);
    assert_string_equal(cfg->touchpoint_schema, "/abs/tp.avsc");
    assert_int_equal(cfg->trigger_schema_id, 7);
    assert_int_equal(cfg->clock, JD_CLOCK_WALL);
    assert_int_equal(cfg->naive, 1);
    assert_int_equal(cfg->log_level, JD_LOG_DEBUG);
    assert_int_equal(cfg->log_json, 1);
    const struct jd_trigger_src *t = &cfg->rules.triggers[0];
    assert_int_equal(t->kind, JD_KIND_REENGAGEMENT);
    assert_string_equal(t->topic, "custom");
    assert_int_equal(t->cooldown_ms, 7200000);
    assert_int_equal(t->max_per_window, 3);
    assert_int_equal(t->max_window_ms, 7 * 86400000LL);
    assert_int_equal(t->global_budget, 10000000000LL);
    assert_int_equal(t->global_period_ms, 7 * 86400000LL);
    assert_int_equal(t->priority, -5);
    assert_true(t->holdout == 1.0);
    assert_string_equal(t->goal, "purchase");
    assert_int_equal(t->goal_window_ms, 3 * 86400000LL);
    assert_true(cfg->policy.quiet_enabled);
    assert_int_equal(cfg->policy.quiet_kinds, 3); /* default: both kinds */
    assert_int_equal(cfg->policy.quiet_from_min, 0);
    assert_int_equal(cfg->policy.quiet_to_min, 23 * 60 + 59);
    assert_int_equal(cfg->policy.quiet_defer, 0);
    assert_string_equal(cfg->policy.quiet_default_tz, "UTC");
    assert_string_equal(cfg->policy.optout_attribute, "optout");
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
}

/* ---- each kind of error, with its exact message ---- */

static void test_error_unknown_key(void **state)
{
    expect_errors("kafka = {\n  brokers = \"b:1\";\n  bogus = 1;\n};\n", 1,
                  ":3: error: unknown key 'kafka.bogus'");
    expect_errors("kafka = { group_idd = \"x\"; };\n", 1,
                  ":1: error: unknown key 'kafka.group_idd' (did you mean 'group_id'?)");
    expect_errors("kafak = { };\n", 1, ":1: error: unknown key 'kafak' (did you mean 'kafka'?)");
    expect_errors("triggers = (\n { name = \"a\"; kind = \"REWARD\"; on = \"enter:x\";\n"
                  "   colldown = \"1d\"; }\n);\n",
                  1, ":3: error: unknown key 'triggers[0].colldown' (did you mean 'cooldown'?)");
    expect_errors("policy = { quiet_hours = { form = \"21:00\"; }; };\n", 1,
                  ":1: error: unknown key 'policy.quiet_hours.form' (did you mean 'from'?)");
}

static void test_error_wrong_type(void **state)
{
    expect_errors("kafka = { group_id = 5; };\n", 1,
                  ":1: error: kafka.group_id: expected a string, got an integer");
    expect_errors("processing = { batch_max_events = \"5000\"; };\n", 1,
                  ":1: error: processing.batch_max_events: expected an integer, got a string");
    expect_errors("kafka = { transactions = 1; };\n", 1,
                  ":1: error: kafka.transactions: expected a boolean (true or false), got an "
                  "integer");
    expect_errors("redis = \"x\";\n", 1,
                  ":1: error: redis: expected a group { ... }, got a string");
    expect_errors("processing = { batch_max_wait = 5; };\n", 1,
                  ":1: error: processing.batch_max_wait: expected a duration string such as "
                  "\"30d\", got an integer");
    expect_errors("kafka = { input_topics = [ 1 ]; };\n", 1,
                  ":1: error: kafka.input_topics[0]: expected a string, got an integer");
    expect_errors("stages = ( \"x\" );\n", 1,
                  ":1: error: stages[0]: expected a group { ... }, got a string");
}

static void test_error_bounds(void **state)
{
    expect_errors("processing = { batch_max_events = 0; };\n", 1,
                  ":1: error: processing.batch_max_events: 0 is out of bounds (1..100000)");
    expect_errors("metrics = { port = 70000; };\n", 1,
                  ":1: error: metrics.port: 70000 is out of bounds (0..65535)");
    expect_errors("kafka = { session_timeout = \"2h\"; };\n", 1,
                  ":1: error: kafka.session_timeout: 2h is out of bounds (1s..1h)");
    expect_errors("triggers = ( { name = \"a\"; kind = \"REWARD\"; on = \"enter:x\";\n"
                  "  holdout = 1.5; } );\n",
                  1, ":2: error: triggers[0].holdout: 1.5 is out of bounds (0..1)");
    expect_errors("kafka = { input_topics = [ ]; };\n", 1,
                  ":1: error: kafka.input_topics: must list at least one value");
    expect_errors("kafka = { input_topics = [ \"a\", \"b\" ]; };\n", 1,
                  ":1: error: kafka.input_topics: one input topic is supported (a customer's "
                  "applied offset is tracked per partition of one topic); merge the sources into "
                  "one topic keyed by customer_id");
}

/* The timer keys (issue 4): values, "0" turning the idle advance off, bounds. */
static void test_timer_keys(void **state)
{
    struct jd_errors errs;
    struct jd_config *cfg =
        load_text("processing = { timer_tick = \"250ms\"; idle_advance = \"2m\"; };\n", &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->timer_tick_ms, 250);
    assert_int_equal(cfg->idle_advance_ms, 120000);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
    cfg = load_text("processing = { idle_advance = \"0\"; };\n", &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->idle_advance_ms, 0);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
    expect_errors("processing = { timer_tick = \"0\"; };\n", 1,
                  ":1: error: processing.timer_tick: 0 is out of bounds (1ms..1m)");
    expect_errors("processing = { timer_tick = \"2m\"; };\n", 1,
                  ":1: error: processing.timer_tick: 2m is out of bounds (1ms..1m)");
    expect_errors("processing = { idle_advance = \"31d\"; };\n", 1,
                  ":1: error: processing.idle_advance: 31d is out of bounds (0ms..30d)");
}

static void test_error_enum(void **state)
{
    expect_errors("processing = { clock = \"sometimes\"; };\n", 1,
                  ":1: error: processing.clock: bad value 'sometimes' (expected one of: event, "
                  "wall)");
    expect_errors("schemas = { wire_format = \"Auto\"; };\n", 1,
                  ":1: error: schemas.wire_format: bad value 'Auto' (expected one of: auto, "
                  "confluent, bare)");
    expect_errors("log = { level = \"verbose\"; };\n", 1,
                  ":1: error: log.level: bad value 'verbose' (expected one of: debug, info, "
                  "warn, error)");
}

static void test_error_duration(void **state)
{
    expect_errors("processing = { batch_max_wait = \"5 parsecs\"; };\n", 1,
                  ":1: error: processing.batch_max_wait: bad duration '5 parsecs' (expected e.g. "
                  "500ms, 45s, 15m, 12h, 30d, 2w)");
    expect_errors("triggers = ( { name = \"a\"; kind = \"REWARD\"; on = \"enter:x\";\n"
                  "  cooldown = \"-1d\"; } );\n",
                  1,
                  ":2: error: triggers[0].cooldown: bad duration '-1d' (expected e.g. 500ms, 45s, "
                  "15m, 12h, 30d, 2w)");
}

static void test_error_duplicate_rule(void **state)
{
    expect_errors("stages = (\n  { name = \"a\"; when = \"true\"; },\n"
                  "  { name = \"b\"; when = \"true\"; },\n"
                  "  { name = \"a\"; when = \"false\"; }\n);\n",
                  1, ":4: error: duplicate stage name 'a' (first defined at line 2)");
    expect_errors("triggers = (\n  { name = \"t\"; kind = \"REWARD\"; on = \"enter:x\"; },\n"
                  "  { name = \"t\"; kind = \"REWARD\"; on = \"enter:y\"; }\n);\n",
                  1, ":3: error: duplicate trigger name 't' (first defined at line 2)");
    /* A stage and a segment may share a name (the shipped `lapsed`). */
    struct jd_errors errs;
    struct jd_config *cfg = load_text("stages = ( { name = \"x\"; when = \"true\"; } );\n"
                                      "segments = ( { name = \"x\"; when = \"true\"; } );\n",
                                      &errs);
    assert_non_null(cfg);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
}

static void test_error_kind(void **state)
{
    expect_errors("triggers = (\n  { name = \"t\"; kind = \"COUPON\"; on = \"enter:x\"; }\n);\n", 1,
                  ":2: error: triggers[0].kind: bad value 'COUPON' (expected one of: REWARD, "
                  "REENGAGEMENT)");
    expect_errors("policy = { caps = ( { kind = \"reward\"; max = 1; per = \"1d\"; } ); };\n", 1,
                  ":1: error: policy.caps[0].kind: bad value 'reward' (expected one of: REWARD, "
                  "REENGAGEMENT)");
    expect_errors("policy = { quiet_hours = { kinds = [ \"SMS\" ]; }; };\n", 1,
                  ":1: error: policy.quiet_hours.kinds[0]: bad value 'SMS' (expected one of: "
                  "REWARD, REENGAGEMENT)");
}

static void test_error_syntax(void **state)
{
    expect_errors("kafka = {\n  brokers = \"x\";\n  group_id = ;\n};\n", 1,
                  ":3: error: syntax error");
    expect_errors("a = { b = 1; b = 2; };\n", 1, ":1: error: duplicate setting name");

    struct jd_errors errs;
    jd_errors_init(&errs);
    assert_null(jd_config_load("/nonexistent/journeyd.conf", &errs));
    assert_int_equal(errs.n, 1);
    assert_string_equal(
        errs.msgs[0], "/nonexistent/journeyd.conf: error: cannot open: No such file or directory");
    jd_errors_free(&errs);
}

static void test_error_other_values(void **state)
{
    expect_errors("triggers = ( { name = \"t\"; on = \"enter:x\"; } );\n", 1,
                  ":1: error: triggers[0]: missing required key 'kind'");
    expect_errors("stages = ( { name = \"1st\"; when = \"true\"; } );\n", 1,
                  ":1: error: stages[0].name: invalid name '1st' (letters, digits and _, not "
                  "starting with a digit)");
    expect_errors("stages = ( { name = \"a\"; when = \"\"; } );\n", 1,
                  ":1: error: stages[0].when: must not be empty");
    expect_errors("redis = { addresses = [ \"localhost\" ]; };\n", 1,
                  ":1: error: redis.addresses[0]: bad address 'localhost' (expected HOST:PORT)");
    expect_errors("policy = { quiet_hours = { from = \"9pm\"; to = \"24:00\"; }; };\n", 2,
                  ":1: error: policy.quiet_hours.from: bad time of day '9pm' (expected HH:MM, "
                  "00:00 to 23:59)",
                  ":1: error: policy.quiet_hours.to: bad time of day '24:00' (expected HH:MM, "
                  "00:00 to 23:59)");
    expect_errors("kafka = { properties = ( ( \"a\", \"1\" ), ( \"b\" ) ); };\n", 1,
                  ":1: error: kafka.properties[1]: expected a pair of strings (\"name\", "
                  "\"value\")");
    expect_errors("triggers = ( { name = \"t\"; kind = \"REWARD\"; on = \"enter:x\";\n"
                  "  payload = ( ( \"k\", \"1\" ), ( \"k\", \"2\" ) ); } );\n",
                  1, ":2: error: triggers[0].payload[1]: duplicate key 'k'");
    expect_errors("schemas = { registry_ids = (\n  { id = 1; file = \"a.avsc\"; },\n"
                  "  { id = 1; file = \"b.avsc\"; } ); };\n",
                  1, ":3: error: schemas.registry_ids[1]: schema id 1 is already mapped");
    expect_errors("kafka = { group_id = \"\"; };\n", 1,
                  ":1: error: kafka.group_id: must not be empty");
}

/* All errors of a file in one pass, in file order. */
static void test_error_many(void **state)
{
    expect_errors(
        "kafka = { bogus = 1; group_id = 2; };\n"
        "processing = { batch_max_events = 0; clock = \"x\"; batch_max_wait = \"y\"; };\n"
        "stages = ( { name = \"a\"; when = \"true\"; }, { name = \"a\"; when = \"1\"; } );\n"
        "triggers = ( { name = \"t\"; kind = \"BAD\"; on = \"enter:a\"; } );\n",
        7, ":1: error: unknown key 'kafka.bogus'",
        ":1: error: kafka.group_id: expected a string, got an integer",
        ":2: error: processing.batch_max_events: 0 is out of bounds (1..100000)",
        ":2: error: processing.clock: bad value 'x' (expected one of: event, wall)",
        ":2: error: processing.batch_max_wait: bad duration 'y' (expected e.g. 500ms, "
        "45s, 15m, 12h, 30d, 2w)",
        ":3: error: duplicate stage name 'a' (first defined at line 3)",
        ":4: error: triggers[0].kind: bad value 'BAD' (expected one of: REWARD, "
        "REENGAGEMENT)");
}

/* ---- rule string positions ---- */

static void test_rule_columns(void **state)
{
    struct jd_errors errs;
    struct jd_config *cfg = load_text(
        /* 1 */ "stages = (\n"
                /* 2 */ "  { name = \"a\"; when = \"count('purchase') >= 1\"; },\n"
                /* 3 */ "  { name = \"b\";\n"
                /* 4 */ "    when =\n"
                /* 5 */ "      \"true\"; },\n"
                /* 6 */ "  { name = \"c\"; when = \"x\" \"y\"; },\n"
                /* 7 */ "  { name = \"d\"; when = \"a \\\"q\\\"\"; },\n"
                /* 8 */ "\t{ name = \"when\"; when=\"w\"; }\n"
                /* 9 */ ");\n"
                /* 10 */ "triggers = (\n"
                /* 11 */ "  { name = \"t\"; kind = \"REWARD\"; on = \"enter:a\"; # on = \"no\"\n"
                /* 12 */ "    payload = ( (\"last_channel\", \"last_channel\"), (\"k2\",\n"
                /* 13 */ "       \"sum('purchase', amount, 30d)\") ); }\n"
                /* 14 */ ");\n",
        &errs);
    jd_errors_print(&errs, stderr);
    assert_non_null(cfg);
    const struct jd_rule_src *s = cfg->rules.stages;
    assert_int_equal(s[0].line, 2);
    assert_int_equal(s[0].col, 25);
    assert_at(&s[0]);
    /* The value on the line after its key. */
    assert_int_equal(s[1].line, 5);
    assert_int_equal(s[1].col, 8);
    assert_at(&s[1]);
    /* Joined literals and escapes: offsets would not map to columns. */
    assert_string_equal(s[2].expr, "xy");
    assert_int_equal(s[2].line, 6);
    assert_int_equal(s[2].col, 0);
    assert_string_equal(s[3].expr, "a \"q\"");
    assert_int_equal(s[3].line, 7);
    assert_int_equal(s[3].col, 0);
    /* A tab is one byte; a string equal to the key name is not the key. */
    assert_string_equal(s[4].name, "when");
    assert_int_equal(s[4].line, 8);
    assert_int_equal(s[4].col, 25);
    assert_at(&s[4]);

    const struct jd_trigger_src *t = &cfg->rules.triggers[0];
    assert_int_equal(t->on.line, 11);
    assert_int_equal(t->on.col, 40);
    assert_at(&t->on);
    assert_int_equal(t->npayload, 2);
    /* The expression, not the identical key before it. */
    assert_int_equal(t->payload[0].expr.line, 12);
    assert_int_equal(t->payload[0].expr.col, 35);
    assert_at(&t->payload[0].expr);
    assert_int_equal(t->payload[1].expr.line, 13);
    assert_int_equal(t->payload[1].expr.col, 9);
    assert_at(&t->payload[1].expr);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
}

/* Rules in an @include file point at that file. */
static void test_rule_include(void **state)
{
    char inc[160];
    snprintf(inc, sizeof inc, "%s/rules.inc", g_dir);
    write_file(inc,
               "segments = (\n  { name = \"vip\"; when = \"count('purchase', 30d) >= 3\"; }\n);\n");
    struct jd_errors errs;
    struct jd_config *cfg = load_text("# rules live elsewhere\n@include \"rules.inc\"\n", &errs);
    jd_errors_print(&errs, stderr);
    assert_non_null(cfg);
    assert_int_equal(cfg->rules.nsegments, 1);
    assert_string_equal(cfg->rules.segments[0].file, inc);
    assert_int_equal(cfg->rules.segments[0].line, 2);
    assert_int_equal(cfg->rules.segments[0].col, 27);
    assert_at(&cfg->rules.segments[0]);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);

    write_file(inc, "segments = (\n  { name = \"vip\"; bogus = 1; when = \"true\"; }\n);\n");
    jd_errors_init(&errs);
    assert_null(jd_config_load(g_path, &errs));
    assert_int_equal(errs.n, 1);
    char want[256];
    snprintf(want, sizeof want, "%s:2: error: unknown key 'segments[0].bogus'", inc);
    assert_string_equal(errs.msgs[0], want);
    jd_errors_free(&errs);

    write_file(inc, "segments = (\n  { name = \"vip\" when = ; }\n);\n");
    jd_errors_init(&errs);
    assert_null(jd_config_load(g_path, &errs));
    assert_int_equal(errs.n, 1);
    snprintf(want, sizeof want, "%s:2: error: syntax error", inc);
    assert_string_equal(errs.msgs[0], want);
    jd_errors_free(&errs);
}

/* A reload reads the file once and every engine loads that text
 * (jd_config_load_text): the text wins over what the file holds by then,
 * errors and rule positions still name the file, @include still looks in
 * its directory. */
static void test_load_text(void **state)
{
    (void)state;
    write_file(g_path, "processing = { engines = 3; };\n");
    const char *text =
        "processing = { engines = 2; };\n"
        "segments = (\n  { name = \"vip\"; when = \"count('purchase') >= 3\"; }\n);\n";
    struct jd_errors errs;
    jd_errors_init(&errs);
    struct jd_config *cfg = jd_config_load_text(g_path, text, &errs);
    jd_errors_print(&errs, stderr);
    assert_non_null(cfg);
    assert_int_equal(cfg->engines, 2);
    assert_string_equal(cfg->path, g_path);
    assert_int_equal(cfg->rules.nsegments, 1);
    assert_string_equal(cfg->rules.segments[0].file, g_path);
    assert_int_equal(cfg->rules.segments[0].line, 3);
    assert_int_equal(cfg->rules.segments[0].col, 27); /* located in the text, not the file */
    jd_config_destroy(cfg);
    jd_errors_free(&errs);

    jd_errors_init(&errs);
    assert_null(jd_config_load_text(g_path, "kafka = {\n  group_id = ;\n};\n", &errs));
    assert_int_equal(errs.n, 1);
    char want[256];
    snprintf(want, sizeof want, "%s:2: error: syntax error", g_path);
    assert_string_equal(errs.msgs[0], want);
    jd_errors_free(&errs);

    char inc[160];
    snprintf(inc, sizeof inc, "%s/rules.inc", g_dir);
    write_file(inc, "segments = (\n  { name = \"vip\"; when = \"true\"; }\n);\n");
    jd_errors_init(&errs);
    cfg = jd_config_load_text(g_path, "@include \"rules.inc\"\n", &errs);
    jd_errors_print(&errs, stderr);
    assert_non_null(cfg);
    assert_int_equal(cfg->rules.nsegments, 1);
    assert_string_equal(cfg->rules.segments[0].file, inc);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
}

/* ---- overrides and pass-through ---- */

static void test_cli_overrides(void **state)
{
    struct jd_errors errs;
    struct jd_config *cfg = load_text("", &errs);
    assert_non_null(cfg);
    char err[256];

    assert_int_equal(jd_config_set_brokers(cfg, "k1:9092,k2:9092"), 0);
    assert_string_equal(cfg->brokers, "k1:9092,k2:9092");
    assert_int_equal(jd_config_set_brokers(cfg, ""), -1);
    assert_string_equal(cfg->brokers, "k1:9092,k2:9092");

    assert_int_equal(jd_config_set_redis(cfg, "10.0.0.1:7000, 10.0.0.2:7001", err, sizeof err), 0);
    assert_int_equal(cfg->nredis_addresses, 2);
    assert_string_equal(cfg->redis_addresses[0], "10.0.0.1:7000");
    assert_string_equal(cfg->redis_addresses[1], "10.0.0.2:7001");
    assert_int_equal(jd_config_set_redis(cfg, "10.0.0.3:7000,nope", err, sizeof err), -1);
    assert_string_equal(err, "bad Redis address 'nope' (expected HOST:PORT[,HOST:PORT...])");
    assert_int_equal(cfg->nredis_addresses, 2); /* unchanged */
    assert_int_equal(jd_config_set_redis(cfg, "a:1,", err, sizeof err), -1);
    assert_int_equal(jd_config_set_redis(cfg, "a:0", err, sizeof err), -1);
    assert_int_equal(jd_config_set_redis(cfg, "127.0.0.1:6380", err, sizeof err), 0);
    assert_int_equal(cfg->nredis_addresses, 1);
    assert_string_equal(cfg->redis_addresses[0], "127.0.0.1:6380");

    assert_int_equal(jd_config_set_metrics_port(cfg, "0", err, sizeof err), 0);
    assert_int_equal(cfg->metrics_port, 0);
    assert_int_equal(jd_config_set_metrics_port(cfg, "65535", err, sizeof err), 0);
    assert_int_equal(cfg->metrics_port, 65535);
    assert_int_equal(jd_config_set_metrics_port(cfg, "65536", err, sizeof err), -1);
    assert_string_equal(err, "bad metrics port '65536' (expected 0..65535, 0: off)");
    assert_int_equal(jd_config_set_metrics_port(cfg, "80x", err, sizeof err), -1);
    assert_int_equal(jd_config_set_metrics_port(cfg, "", err, sizeof err), -1);
    assert_int_equal(cfg->metrics_port, 65535);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
}

static void test_property_passthrough(void **state)
{
    struct jd_errors errs;
    struct jd_config *cfg =
        load_text("kafka = { properties = (\n"
                  "  ( \"zz.last.alphabetically\", \"1\" ),\n"
                  "  [ \"debug\", \"broker, topic\" ],\n"
                  "  ( \"sasl.jaas.config\", \"  spaces kept \\\"quoted\\\"  \" ),\n"
                  "  ( \"a.first\", \"\" )\n"
                  "); };\n",
                  &errs);
    jd_errors_print(&errs, stderr);
    assert_non_null(cfg);
    assert_int_equal(cfg->nkafka_props, 4);
    assert_string_equal(cfg->kafka_props[0], "zz.last.alphabetically");
    assert_string_equal(cfg->kafka_props[1], "1");
    assert_string_equal(cfg->kafka_props[2], "debug");
    assert_string_equal(cfg->kafka_props[3], "broker, topic");
    assert_string_equal(cfg->kafka_props[4], "sasl.jaas.config");
    assert_string_equal(cfg->kafka_props[5], "  spaces kept \"quoted\"  ");
    assert_string_equal(cfg->kafka_props[6], "a.first");
    assert_string_equal(cfg->kafka_props[7], "");
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
}

static void test_kind_names(void **state)
{
    enum jd_trigger_kind k;
    assert_string_equal(jd_kind_name(JD_KIND_REWARD), "REWARD");
    assert_string_equal(jd_kind_name(JD_KIND_REENGAGEMENT), "REENGAGEMENT");
    assert_int_equal(jd_kind_parse("REENGAGEMENT", &k), 0);
    assert_int_equal(k, JD_KIND_REENGAGEMENT);
    assert_int_equal(jd_kind_parse("reward", &k), 0);
    assert_int_equal(k, JD_KIND_REWARD);
    assert_int_equal(jd_kind_parse("COUPON", &k), -1);
}

/* ---- the reference ---- */

static char *reference(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    jd_config_write_reference(f);
    fclose(f);
    return text;
}

static void test_reference_rows(void **state)
{
    char *ref = reference();
    assert_non_null(strstr(ref, "| key | type | default | reloadable | description |\n"));
    assert_non_null(strstr(ref, "| `processing.batch_max_events` | integer, 1..100000 | `50000` | "
                                "no | "));
    assert_non_null(strstr(ref, "| `kafka.group_id` | string | `\"journeyd\"` | no | "));
    assert_non_null(
        strstr(ref, "| `kafka.session_timeout` | duration, 1s..1h | `\"10s\"` | no | "));
    assert_non_null(strstr(ref, "| `schemas.wire_format` | enum: `auto` \\| `confluent` \\| "
                                "`bare` | `\"auto\"` | no | "));
    assert_non_null(strstr(ref, "| `triggers[].kind` | enum: `REWARD` \\| `REENGAGEMENT` | "
                                "required | yes | "));
    assert_non_null(
        strstr(ref, "| `kafka.input_topics` | list of strings | `[ \"touchpoints\" ]`"));
    /* Every row has five cells. */
    for (char *line = ref; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        int cells = 0;
        for (char *p = line; p < nl; p++)
            cells += *p == '|' && (p == line || p[-1] != '\\');
        assert_int_equal(cells, 6);
        line = nl + 1;
    }
    free(ref);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *text = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[4096];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            text = realloc(text, cap);
            assert_non_null(text);
        }
        memcpy(text + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (text)
        text[len] = '\0';
    return text;
}

#define REF_BEGIN "<!-- config-reference:begin -->\n"
#define REF_END "<!-- config-reference:end -->"

/* `path` (relative to the source tree) carries the generated reference
 * between the markers; with JD_UPDATE_DOCS=1 it is rewritten instead. */
static void check_reference_in(const char *rel)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", source_dir(), rel);
    char *doc = read_all(path);
    if (!doc)
        fail_msg("cannot read %s", path);
    char *b = strstr(doc, REF_BEGIN);
    char *e = b ? strstr(b, REF_END) : NULL;
    if (!b || !e)
        fail_msg("%s: markers %s / %s not found", path, "config-reference:begin",
                 "config-reference:end");
    b += strlen(REF_BEGIN);
    char *ref = reference();
    size_t have = (size_t)(e - b);
    if (getenv("JD_UPDATE_DOCS") && strcmp(getenv("JD_UPDATE_DOCS"), "1") == 0) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fwrite(doc, 1, (size_t)(b - doc), f);
        fputs(ref, f);
        fputs(e, f);
        fclose(f);
    } else if (have != strlen(ref) || memcmp(b, ref, have) != 0) {
        fail_msg("%s: the configuration reference is out of date; regenerate it with "
                 "JD_SOURCE_DIR=%s JD_UPDATE_DOCS=1 tests/test_config",
                 path, source_dir());
    }
    free(ref);
    free(doc);
}

static void test_reference_in_docs(void **state)
{
    check_reference_in("docs/configuration.md");
    check_reference_in("README.md");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_config),       cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_trigger_options),      cmocka_unit_test(test_error_unknown_key),
        cmocka_unit_test(test_error_wrong_type),     cmocka_unit_test(test_error_bounds),
        cmocka_unit_test(test_error_enum),           cmocka_unit_test(test_error_duration),
        cmocka_unit_test(test_error_duplicate_rule), cmocka_unit_test(test_error_kind),
        cmocka_unit_test(test_error_syntax),         cmocka_unit_test(test_error_other_values),
        cmocka_unit_test(test_error_many),           cmocka_unit_test(test_rule_columns),
        cmocka_unit_test(test_rule_include),         cmocka_unit_test(test_cli_overrides),
        cmocka_unit_test(test_property_passthrough), cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_reference_rows),       cmocka_unit_test(test_reference_in_docs),
        cmocka_unit_test(test_timer_keys),           cmocka_unit_test(test_load_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
