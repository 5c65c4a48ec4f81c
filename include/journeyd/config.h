/*
 * config — the one configuration file (libconfig). A single table in
 * config.c describes every key: type, default, bounds, reloadable, help.
 * Unknown keys and wrong types are errors naming FILE:LINE. The rule
 * sources are kept with their positions so that the rule compiler can point
 * at FILE:LINE:COLUMN inside a rule string.
 */
#ifndef JOURNEYD_CONFIG_H
#define JOURNEYD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "journeyd/log.h"
#include "journeyd/util.h"

enum jd_trigger_kind { JD_KIND_REWARD = 0, JD_KIND_REENGAGEMENT = 1, JD_KIND_COUNT = 2 };
const char *jd_kind_name(enum jd_trigger_kind k);            /* "REWARD" ... */
int jd_kind_parse(const char *s, enum jd_trigger_kind *out); /* 0 or -1 */

enum jd_wire_format { JD_WIRE_AUTO = 0, JD_WIRE_CONFLUENT, JD_WIRE_BARE };
enum jd_clock { JD_CLOCK_EVENT = 0, JD_CLOCK_WALL };

/* A rule expression as written in the config, with where it stands:
 * `line`/`col` are the 1-based position of the expression's first character
 * inside `file` (col counts bytes), so an error at offset k of `expr` on the
 * same line is at col + k. col is 0 when that mapping would be wrong (the
 * string has escapes or is joined from several literals): report LINE only. */
struct jd_rule_src {
    char *name;
    char *expr;
    const char *file; /* points at jd_config.path */
    int line;
    int col;
    int enabled; /* `enabled = false;` parses the rule but does not run it */
};

struct jd_payload_src {
    char *key;               /* attribute name in Trigger.attributes */
    struct jd_rule_src expr; /* expr.name == key */
};

struct jd_trigger_src {
    struct jd_rule_src on; /* on.name = trigger name, on.expr = "enter:vip" | "exit:SEG" |
                              "stage:A->B" | "event: EXPR" */
    enum jd_trigger_kind kind;
    char *topic;         /* NULL: the kind's default topic */
    int64_t cooldown_ms; /* 0: none */
    int max_per_window;  /* 0: unlimited */
    int64_t max_window_ms;
    int64_t global_budget; /* 0: unlimited */
    int64_t global_period_ms;
    int priority;
    double holdout;     /* 0..1 */
    char *holdout_salt; /* NULL: the trigger's name */
    char *goal;         /* NULL: none (issue 10) */
    int64_t goal_window_ms;
    struct jd_payload_src *payload;
    size_t npayload;
};

struct jd_rules_src {
    struct jd_rule_src *stages; /* ordered, first match wins */
    size_t nstages;
    struct jd_rule_src *segments;
    size_t nsegments;
    struct jd_trigger_src *triggers;
    size_t ntriggers;
};

struct jd_cap_src {
    enum jd_trigger_kind kind;
    int max;
    int64_t per_ms;
};

struct jd_policy_src {
    struct jd_cap_src *caps;
    size_t ncaps;
    int quiet_enabled;
    unsigned quiet_kinds; /* bit (1 << kind) */
    int quiet_from_min;   /* minutes after midnight, local time */
    int quiet_to_min;
    char *quiet_tz_attribute;
    char *quiet_default_tz;
    int quiet_defer;        /* 1 defer, 0 drop */
    char *audit_topic;      /* NULL: no audit */
    char *optout_attribute; /* NULL: none */
};

struct jd_schema_id {
    int id;
    char *file; /* resolved path */
};

struct jd_config {
    char *path;      /* the file as given */
    char *dir;       /* its directory: relative paths in the file are resolved against it */
    char **included; /* files read through @include; rule `file`s may point here */
    size_t nincluded;

    /* kafka */
    char *brokers;
    char *group_id;
    char *group_instance_id; /* NULL: dynamic membership */
    int session_timeout_ms;
    char **input_topics;
    size_t ninput_topics;
    char *dead_letter_topic;
    char *topics[JD_KIND_COUNT]; /* output topic per kind */
    int transactions;
    char **kafka_props;  /* pairs: kafka_props[2i] = name, [2i+1] = value */
    size_t nkafka_props; /* number of pairs */

    /* redis */
    char **redis_addresses; /* "host:port" */
    size_t nredis_addresses;
    char *key_prefix;
    int redis_timeout_ms;

    /* schemas (paths resolved against dir) */
    char *touchpoint_schema;
    char *trigger_schema;
    enum jd_wire_format wire_format;
    struct jd_schema_id *registry_ids;
    size_t nregistry_ids;
    int trigger_schema_id;    /* -1: bare output */
    char *suppressed_schema;  /* audit records (policy.audit_topic) */
    int suppressed_schema_id; /* -1: bare */

    /* processing */
    enum jd_clock clock;
    int64_t allowed_lateness_ms;
    int batch_max_events;
    int64_t batch_max_wait_ms;
    int64_t flush_interval_ms; /* write-back of dirty customers without new triggers */
    int cache_max_customers;
    int naive;       /* one synchronous Redis round trip per event (benchmark baseline) */
    int history_max; /* trigger history entries kept per customer */
    int engines;     /* engines in the process, each a member of the group (daemon/journeyd.c) */

    /* timers (docs/time.md) */
    int64_t timer_tick_ms;   /* how often due timers are fetched */
    int64_t idle_advance_ms; /* event clock: an idle, caught-up partition's watermark follows
                                the wall clock after this long; 0 = never */

    /* metrics, log */
    int metrics_port; /* 0: off */
    char *metrics_bind;
    enum jd_log_level log_level;
    int log_json;

    struct jd_rules_src rules;
    struct jd_policy_src policy;
};

/* Loads and validates `path`. Every error found is appended to `errs` (with
 * FILE:LINE). Returns the config, or NULL when there was any error. Rule
 * expressions are not compiled here (see rules.h). */
struct jd_config *jd_config_load(const char *path, struct jd_errors *errs);
/* The same from `text`, the file's content read earlier (a reload reads the
 * file once for every engine); `path` still names it in errors and its
 * directory is where @include looks. */
struct jd_config *jd_config_load_text(const char *path, const char *text, struct jd_errors *errs);
void jd_config_destroy(struct jd_config *cfg);

/* Command-line overrides; return 0 or -1 with errstr. */
int jd_config_set_brokers(struct jd_config *cfg, const char *brokers);
int jd_config_set_redis(struct jd_config *cfg, const char *hostport_list, char *errstr,
                        size_t errsize); /* comma-separated seeds */
int jd_config_set_metrics_port(struct jd_config *cfg, const char *port, char *errstr,
                               size_t errsize);

/* Writes the configuration reference (every key of the table: name, type,
 * default, bounds, reloadable, help) as a Markdown table. The README's
 * reference is checked against this output by a test. */
void jd_config_write_reference(FILE *out);

#endif
