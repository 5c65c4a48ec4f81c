/*
 * journeyctl — the companion CLI: look at one customer's journey, explain a
 * rule for that customer, check a config.
 *
 *   journeyctl -c FILE [-r HOST:PORT] customer ID [--json]
 *   journeyctl -c FILE [-r HOST:PORT] explain ID RULE [--at MS]
 *   journeyctl -c FILE [-r HOST:PORT] triggers ID [--json]
 *   journeyctl -c FILE [-r HOST:PORT] segments [--json]
 *   journeyctl -c FILE [-r HOST:PORT] outcomes [--json]
 *   journeyctl -c FILE [-r HOST:PORT] report --html FILE
 *   journeyctl check -c FILE
 *
 * segments, outcomes and report read the per-partition counters that
 * journeyd keeps in Redis (insights.h): nothing is scanned.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journeyd/config.h"
#include "journeyd/insights.h"
#include "journeyd/outcomes.h"
#include "journeyd/report.h"
#include "journeyd/rules.h"
#include "journeyd/setup.h"
#include "journeyd/state.h"
#include "journeyd/store.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: journeyctl -c FILE [-r HOST:PORT] customer ID [--json]\n"
                 "       journeyctl -c FILE [-r HOST:PORT] explain ID RULE [--at MS]\n"
                 "       journeyctl -c FILE [-r HOST:PORT] triggers ID [--json]\n"
                 "       journeyctl -c FILE [-r HOST:PORT] segments [--json]\n"
                 "       journeyctl -c FILE [-r HOST:PORT] outcomes [--json]\n"
                 "       journeyctl -c FILE [-r HOST:PORT] report --html FILE\n"
                 "       journeyctl check -c FILE\n");
}

static void json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static const char *fmt_time(int64_t ms, char *buf, size_t n)
{
    if (ms <= 0) {
        snprintf(buf, n, "-");
        return buf;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* A history line is "FIRED_AT|TRIGGER|TRIGGER_ID|KIND|REASON"; for a trigger
 * the policy suppressed, KIND is "SUPPRESSED:REASON_WORD" and REASON the
 * policy's detail followed by the rule's reason (docs/policy.md). */
struct hist {
    const char *f[5];
};

static void split_hist(char *line, struct hist *h)
{
    for (int i = 0; i < 5; i++) {
        h->f[i] = line ? line : "";
        if (line && i < 4) {
            char *bar = strchr(line, '|');
            if (bar) {
                *bar = '\0';
                line = bar + 1;
            } else {
                line = NULL;
            }
        }
    }
}

/* "SUPPRESSED:cooldown" -> "cooldown"; NULL for a fired trigger's kind. */
static const char *suppression_of(const char *kind_field)
{
    static const char pfx[] = "SUPPRESSED:";
    return strncmp(kind_field, pfx, sizeof pfx - 1) == 0 ? kind_field + sizeof pfx - 1 : NULL;
}

/* The kind of a trigger by name, from the rules; "" when the rules no longer
 * have it. */
static const char *kind_of(const struct jd_ruleset *rs, const char *trigger)
{
    int t = jd_rules_trigger_index(rs, trigger);
    return t >= 0 ? jd_kind_name(jd_rules_trigger(rs, (size_t)t)->kind) : "";
}

/* Reads customer `id` and its trigger history. 0, or the exit code to
 * return (1: no such customer, 2: Redis failed) after saying why. */
static int load_customer(const struct jd_config *cfg, const struct jd_ruleset *rs,
                         struct jd_store *st, const char *id, struct jd_customer **c, char ***lines,
                         size_t *nlines)
{
    char errstr[512];
    int r = jd_store_get_customer(st, rs, id, c, errstr, sizeof errstr);
    if (r < 0) {
        fprintf(stderr, "journeyctl: %s\n", errstr);
        return 2;
    }
    if (r == 1) {
        fprintf(stderr, "journeyctl: no customer %s\n", id);
        return 1;
    }
    *lines = NULL;
    *nlines = 0;
    if (jd_store_history(st, id, (size_t)cfg->history_max, lines, nlines, errstr, sizeof errstr) !=
        0) {
        fprintf(stderr, "journeyctl: history: %s\n", errstr);
        jd_customer_destroy(*c);
        return 2;
    }
    return 0;
}

static int show_customer(const struct jd_config *cfg, const struct jd_ruleset *rs,
                         struct jd_store *st, const char *id, int json)
{
    char t1[32], t2[32];
    struct jd_customer *c = NULL;
    char **lines;
    size_t nlines;
    int rc = load_customer(cfg, rs, st, id, &c, &lines, &nlines);
    if (rc)
        return rc;
    const char *stage = c->stage >= 0 ? jd_rules_stage_name(rs, (size_t)c->stage) : "";
    if (json) {
        printf("{\"customer_id\":");
        json_str(stdout, c->id);
        printf(",\"stage\":");
        json_str(stdout, stage);
        printf(",\"segments\":[");
        int first = 1;
        for (size_t s = 0; s < jd_rules_nsegments(rs); s++)
            if (c->segments & (1ULL << s)) {
                printf(first ? "" : ",");
                json_str(stdout, jd_rules_segment_name(rs, s));
                first = 0;
            }
        printf("],\"counts\":{");
        for (size_t i = 0; i < c->ncounts; i++) {
            printf(i ? "," : "");
            json_str(stdout, jd_customer_count_type(c, i));
            printf(":%" PRId64, jd_customer_count_n(c, i));
        }
        printf("},\"spend\":%.2f,\"first_seen\":%" PRId64 ",\"last_seen\":%" PRId64
               ",\"last_channel\":",
               c->spend, c->first_seen, c->last_seen);
        json_str(stdout, c->last_channel);
        printf(",\"last_score\":");
        if (c->last_score >= 0)
            printf("%d", c->last_score);
        else
            printf("null");
        printf(",\"tz\":");
        if (c->tz)
            json_str(stdout, c->tz);
        else
            printf("null");
        printf(",\"optout\":[");
        for (int k = 0, n = 0; k < JD_KIND_COUNT; k++)
            if (c->optout & (1u << k)) {
                printf(n++ ? "," : "");
                json_str(stdout, jd_kind_name((enum jd_trigger_kind)k));
            }
        printf("]");
        /* the rule set's aggregates and when each last saw an event (null:
         * none yet — an aggregate a reload added starts empty then) */
        printf(",\"aggregates\":{");
        for (size_t i = 0; i < c->naggs && i < jd_rules_naggs(rs); i++) {
            printf(i ? "," : "");
            json_str(stdout, jd_rules_agg_key(rs, i));
            if (c->aggs[i].t > 0)
                printf(":%" PRId64, c->aggs[i].t);
            else
                printf(":null");
        }
        printf("}");
        printf(",\"outbox_pending\":%zu,\"triggers\":[", (size_t)c->npending);
        for (size_t i = 0; i < nlines; i++) {
            struct hist h;
            split_hist(lines[i], &h);
            const char *sup = suppression_of(h.f[3]);
            printf("%s{\"fired_at\":%s,\"trigger\":", i ? "," : "", *h.f[0] ? h.f[0] : "null");
            json_str(stdout, h.f[1]);
            printf(",\"trigger_id\":");
            json_str(stdout, h.f[2]);
            printf(",\"kind\":");
            json_str(stdout, sup ? kind_of(rs, h.f[1]) : h.f[3]);
            printf(",\"suppressed\":%s", sup ? "true" : "false");
            if (sup) {
                printf(",\"suppression\":");
                json_str(stdout, sup);
            }
            printf(",\"reason\":");
            json_str(stdout, h.f[4]);
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("customer      %s\n", c->id);
        printf("stage         %s\n", *stage ? stage : "-");
        printf("segments     ");
        int any = 0;
        for (size_t s = 0; s < jd_rules_nsegments(rs); s++)
            if (c->segments & (1ULL << s)) {
                printf(" %s", jd_rules_segment_name(rs, s));
                any = 1;
            }
        printf("%s\n", any ? "" : " -");
        printf("first seen    %s\nlast seen     %s\n", fmt_time(c->first_seen, t1, sizeof t1),
               fmt_time(c->last_seen, t2, sizeof t2));
        printf("last channel  %s\n", c->last_channel ? c->last_channel : "-");
        printf("spend         %.2f\n", c->spend);
        if (c->last_score >= 0)
            printf("last score    %d\n", c->last_score);
        printf("counts       ");
        for (size_t i = 0; i < c->ncounts; i++)
            printf(" %s=%" PRId64, jd_customer_count_type(c, i), jd_customer_count_n(c, i));
        printf("\n");
        printf("aggregates (the rules' inputs, last event seen):\n");
        for (size_t i = 0; i < c->naggs && i < jd_rules_naggs(rs); i++)
            printf("  %-36s %s\n", jd_rules_agg_key(rs, i),
                   c->aggs[i].t > 0 ? fmt_time(c->aggs[i].t, t1, sizeof t1) : "no event yet");
        if (c->tz)
            printf("time zone     %s\n", c->tz);
        if (c->optout) {
            printf("opted out    ");
            for (int k = 0; k < JD_KIND_COUNT; k++)
                if (c->optout & (1u << k))
                    printf(" %s", jd_kind_name((enum jd_trigger_kind)k));
            printf("\n");
        }
        if (c->npending)
            printf("outbox        %zu trigger(s) awaiting Kafka acknowledgement\n",
                   (size_t)c->npending);
        printf("triggers, fired and suppressed (newest first):\n");
        if (nlines == 0)
            printf("  none\n");
        for (size_t i = 0; i < nlines; i++) {
            struct hist h;
            split_hist(lines[i], &h);
            const char *sup = suppression_of(h.f[3]);
            if (sup)
                printf("  %s  %-24s SUPPRESSED (%s) %s %s\n      why not: %s\n",
                       fmt_time(strtoll(h.f[0], NULL, 10), t1, sizeof t1), h.f[1], sup,
                       kind_of(rs, h.f[1]), h.f[2], h.f[4]);
            else
                printf("  %s  %-24s %-13s %s\n      why: %s\n",
                       fmt_time(strtoll(h.f[0], NULL, 10), t1, sizeof t1), h.f[1], h.f[3], h.f[2],
                       h.f[4]);
        }
    }
    for (size_t i = 0; i < nlines; i++)
        free(lines[i]);
    free(lines);
    jd_customer_destroy(c);
    return 0;
}

static int explain(const struct jd_config *cfg, const struct jd_ruleset *rs, struct jd_store *st,
                   const char *id, const char *rule, int64_t at)
{
    char errstr[512];
    struct jd_customer *c = NULL;
    int r = jd_store_get_customer(st, rs, id, &c, errstr, sizeof errstr);
    if (r < 0) {
        fprintf(stderr, "journeyctl: %s\n", errstr);
        return 2;
    }
    if (r == 1) {
        fprintf(stderr, "journeyctl: no customer %s\n", id);
        return 1;
    }
    /* in event time the customer's "now" is the last event seen */
    int64_t now = at > 0 ? at : cfg->clock == JD_CLOCK_EVENT ? c->last_seen : jd_now_ms();
    struct jd_buf out;
    jd_buf_init(&out);
    int rc = 0;
    if (jd_rules_explain(rs, c, NULL, rule, now, &out, errstr, sizeof errstr) != 0) {
        fprintf(stderr, "journeyctl: %s\n", errstr);
        rc = 1;
    } else {
        char t[32];
        printf("customer %s, rule %s, at %s (rules %s)\n", id, rule, fmt_time(now, t, sizeof t),
               jd_rules_version(rs));
        fputs(jd_buf_cstr(&out), stdout);
    }
    jd_buf_free(&out);
    jd_customer_destroy(c);
    return rc;
}

static void json_num(FILE *out, double v)
{
    if (isnan(v))
        fputs("null", out);
    else
        fprintf(out, "%.6f", v);
}

/* A customer's trigger history with the reasons, and its open goals. */
static int show_triggers(const struct jd_config *cfg, const struct jd_ruleset *rs,
                         struct jd_store *st, const char *id, int json)
{
    char t1[32];
    struct jd_customer *c = NULL;
    char **lines;
    size_t nlines;
    int rc = load_customer(cfg, rs, st, id, &c, &lines, &nlines);
    if (rc)
        return rc;
    if (json) {
        printf("{\"customer_id\":");
        json_str(stdout, id);
        printf(",\"triggers\":[");
    } else {
        printf("triggers of %s (newest first; history keeps %d):\n", id, cfg->history_max);
        if (nlines == 0)
            printf("  none\n");
    }
    for (size_t i = 0; i < nlines; i++) {
        struct hist h;
        split_hist(lines[i], &h);
        if (json) {
            printf("%s{\"fired_at\":%s,\"trigger\":", i ? "," : "", h.f[0]);
            json_str(stdout, h.f[1]);
            printf(",\"trigger_id\":");
            json_str(stdout, h.f[2]);
            printf(",\"kind\":");
            json_str(stdout, h.f[3]);
            printf(",\"reason\":");
            json_str(stdout, h.f[4]);
            const char *sup = suppression_of(h.f[3]);
            printf(",\"suppressed\":%s", sup ? "true" : "false");
            if (sup) {
                printf(",\"suppression\":");
                json_str(stdout, sup);
            }
            printf("}");
        } else {
            printf("  %s  %-24s %-13s %s\n      why: %s\n",
                   fmt_time(strtoll(h.f[0], NULL, 10), t1, sizeof t1), h.f[1], h.f[3], h.f[2],
                   h.f[4]);
        }
    }
    if (json)
        printf("],\"open_goals\":[");
    else if (c->ngoals)
        printf("open conversion goals:\n");
    for (uint32_t i = 0; i < c->ngoals; i++) {
        const struct jd_goal *g = &c->goals[i];
        const struct jd_trigger_src *ts = jd_rules_trigger(rs, g->trigger);
        if (json) {
            printf("%s{\"trigger\":", i ? "," : "");
            json_str(stdout, ts->on.name);
            printf(",\"goal\":");
            json_str(stdout, ts->goal);
            printf(",\"group\":\"%s\",\"deadline\":%" PRId64 "}",
                   g->control ? "control" : "treated", g->deadline);
        } else {
            printf("  %-24s %s, goal %s until %s\n", ts->on.name,
                   g->control ? "control (held out)" : "treated", ts->goal ? ts->goal : "-",
                   fmt_time(g->deadline, t1, sizeof t1));
        }
    }
    if (json)
        printf("]}\n");
    jd_store_free_lines(lines, nlines);
    jd_customer_destroy(c);
    return 0;
}

static void print_segments(const struct jd_ruleset *rs, const struct jd_program *p, int json)
{
    size_t ns = p->nstages;
    if (json) {
        printf("{\"partitions\":%zu,\"segments\":{", p->npartitions);
        for (size_t i = 0; i < p->nsegments; i++) {
            printf(i ? "," : "");
            json_str(stdout, jd_rules_segment_name(rs, i));
            printf(":%" PRId64, p->segment[i]);
        }
        printf("},\"stages\":{");
        for (size_t i = 0; i < ns; i++) {
            printf(i ? "," : "");
            json_str(stdout, jd_rules_stage_name(rs, i));
            printf(":%" PRId64, p->stage[i]);
        }
        printf("},\"transitions\":[");
        int first = 1;
        for (size_t f = 0; f <= ns; f++)
            for (size_t t = 0; t < ns; t++) {
                if (!p->transition[f * ns + t])
                    continue;
                printf("%s{\"from\":", first ? "" : ",");
                json_str(stdout, f ? jd_rules_stage_name(rs, f - 1) : "(new)");
                printf(",\"to\":");
                json_str(stdout, jd_rules_stage_name(rs, t));
                printf(",\"count\":%" PRId64 "}", p->transition[f * ns + t]);
                first = 0;
            }
        printf("],\"nps\":{");
        for (int g = 0; g < JD_NPS_COUNT; g++)
            printf("%s\"%s\":%" PRId64, g ? "," : "", jd_nps_group_name((enum jd_nps_group)g),
                   p->nps[g]);
        printf("}}\n");
        return;
    }
    printf("segments (members, over %zu partition(s))\n", p->npartitions);
    for (size_t i = 0; i < p->nsegments; i++)
        printf("  %-20s %10" PRId64 "\n", jd_rules_segment_name(rs, i), p->segment[i]);
    printf("stages (customers)\n");
    for (size_t i = ns; i-- > 0;)
        printf("  %-20s %10" PRId64 "\n", jd_rules_stage_name(rs, i), p->stage[i]);
    printf("stage transitions\n");
    for (size_t f = 0; f <= ns; f++)
        for (size_t t = 0; t < ns; t++)
            if (p->transition[f * ns + t])
                printf("  %-20s -> %-20s %10" PRId64 "\n",
                       f ? jd_rules_stage_name(rs, f - 1) : "(new)", jd_rules_stage_name(rs, t),
                       p->transition[f * ns + t]);
    printf("nps (customers by latest score)\n");
    for (int g = 0; g < JD_NPS_COUNT; g++)
        printf("  %-20s %10" PRId64 "\n", jd_nps_group_name((enum jd_nps_group)g), p->nps[g]);
}

static void print_outcomes(const struct jd_ruleset *rs, const struct jd_program *p, int json)
{
    int first = 1;
    if (json)
        printf("{\"interval\":\"newcombe-hybrid-score-95\",\"triggers\":{");
    else
        printf("%-24s %-14s %9s %9s %7s %9s %9s %7s %9s %21s\n", "trigger", "goal", "treated",
               "converted", "rate", "control", "converted", "rate", "uplift", "95% interval");
    for (size_t t = 0; t < p->ntriggers; t++) {
        const struct jd_trigger_src *ts = jd_rules_trigger(rs, t);
        if (!ts->goal)
            continue;
        const int64_t *o = p->outcome + t * JD_OUT_COUNT;
        struct jd_uplift u;
        jd_uplift_compute(o[JD_OUT_TREATED], o[JD_OUT_TREATED_CONVERTED], o[JD_OUT_CONTROL],
                          o[JD_OUT_CONTROL_CONVERTED], &u);
        if (json) {
            printf("%s", first ? "" : ",");
            json_str(stdout, ts->on.name);
            printf(":{\"goal\":");
            json_str(stdout, ts->goal);
            printf(",\"goal_window_ms\":%" PRId64 ",\"treated\":%" PRId64
                   ",\"treated_converted\":%" PRId64 ",\"control\":%" PRId64
                   ",\"control_converted\":%" PRId64 ",\"treated_open\":%" PRId64
                   ",\"control_open\":%" PRId64 ",\"treated_rate\":",
                   ts->goal_window_ms, o[JD_OUT_TREATED], o[JD_OUT_TREATED_CONVERTED],
                   o[JD_OUT_CONTROL], o[JD_OUT_CONTROL_CONVERTED], o[JD_OUT_TREATED_OPEN],
                   o[JD_OUT_CONTROL_OPEN]);
            json_num(stdout, u.treated_rate);
            printf(",\"control_rate\":");
            json_num(stdout, u.control_rate);
            printf(",\"uplift\":");
            json_num(stdout, u.uplift);
            printf(",\"ci_low\":");
            json_num(stdout, u.ci_low);
            printf(",\"ci_high\":");
            json_num(stdout, u.ci_high);
            printf("}");
        } else {
            char rate1[16], rate2[16], up[16], ci[40];
            snprintf(rate1, sizeof rate1, isnan(u.treated_rate) ? "-" : "%.1f%%",
                     u.treated_rate * 100);
            snprintf(rate2, sizeof rate2, isnan(u.control_rate) ? "-" : "%.1f%%",
                     u.control_rate * 100);
            snprintf(up, sizeof up, isnan(u.uplift) ? "-" : "%+.1fpp", u.uplift * 100);
            if (isnan(u.uplift))
                snprintf(ci, sizeof ci, "-");
            else
                snprintf(ci, sizeof ci, "[%+.1fpp, %+.1fpp]", u.ci_low * 100, u.ci_high * 100);
            printf("%-24s %-14s %9" PRId64 " %9" PRId64 " %7s %9" PRId64 " %9" PRId64
                   " %7s %9s %21s\n",
                   ts->on.name, ts->goal, o[JD_OUT_TREATED], o[JD_OUT_TREATED_CONVERTED], rate1,
                   o[JD_OUT_CONTROL], o[JD_OUT_CONTROL_CONVERTED], rate2, up, ci);
        }
        first = 0;
    }
    if (json)
        printf("}}\n");
    else if (first)
        printf("(no trigger rule names a goal)\n");
}

static int write_report(const struct jd_ruleset *rs, const struct jd_program *p, const char *file)
{
    struct jd_buf b;
    jd_buf_init(&b);
    char gen[32];
    jd_report_html(rs, p, "journeyd — loyalty program report",
                   fmt_time(jd_now_ms(), gen, sizeof gen), &b);
    FILE *f = fopen(file, "w");
    int ok = f && fwrite(b.data, 1, b.len, f) == b.len;
    if (f && fclose(f) != 0)
        ok = 0;
    jd_buf_free(&b);
    if (!ok) {
        fprintf(stderr, "journeyctl: cannot write %s\n", file);
        return 2;
    }
    printf("report written to %s\n", file);
    return 0;
}

static int program_command(const struct jd_config *cfg, const struct jd_ruleset *rs,
                           const char *cmd, int json, const char *html)
{
    char errstr[512];
    struct jd_insights *ins = jd_insights_new(cfg, rs);
    struct jd_program p;
    int rc = 0;
    if (jd_insights_read(ins, &p, errstr, sizeof errstr) != 0) {
        fprintf(stderr, "journeyctl: %s\n", errstr);
        jd_insights_destroy(ins);
        return 2;
    }
    if (strcmp(cmd, "segments") == 0)
        print_segments(rs, &p, json);
    else if (strcmp(cmd, "outcomes") == 0)
        print_outcomes(rs, &p, json);
    else
        rc = write_report(rs, &p, html);
    jd_program_free(&p);
    jd_insights_destroy(ins);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"redis", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},
        {"at", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {"html", required_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *redis = NULL, *html = NULL;
    int json = 0, opt;
    int64_t at = 0;
    /* options may come before or after the command */
    while ((opt = getopt_long(argc, argv, "c:r:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'r':
            redis = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'a':
            at = strtoll(optarg, NULL, 10);
            break;
        case 'H':
            html = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind >= argc || !path) {
        usage(stderr);
        return 1;
    }
    const char *cmd = argv[optind];

    struct jd_config *cfg = NULL;
    struct jd_ruleset *rs = NULL;
    if (jd_setup_load(path, NULL, redis, NULL, &cfg, &rs) != 0)
        return 1;
    char errstr[512];

    int rc;
    if (strcmp(cmd, "check") == 0) {
        jd_setup_print_ok(path, rs);
        rc = 0;
    } else if ((strcmp(cmd, "customer") == 0 && optind + 2 == argc) ||
               (strcmp(cmd, "explain") == 0 && optind + 3 == argc)) {
        struct jd_store *st = jd_store_new(cfg, errstr, sizeof errstr);
        if (!st) {
            fprintf(stderr, "journeyctl: redis: %s\n", errstr);
            rc = 2;
        } else {
            rc = cmd[0] == 'c' ? show_customer(cfg, rs, st, argv[optind + 1], json)
                               : explain(cfg, rs, st, argv[optind + 1], argv[optind + 2], at);
            jd_store_destroy(st);
        }
    } else if (strcmp(cmd, "triggers") == 0 && optind + 2 == argc) {
        struct jd_store *st = jd_store_new(cfg, errstr, sizeof errstr);
        if (!st) {
            fprintf(stderr, "journeyctl: redis: %s\n", errstr);
            rc = 2;
        } else {
            rc = show_triggers(cfg, rs, st, argv[optind + 1], json);
            jd_store_destroy(st);
        }
    } else if ((strcmp(cmd, "segments") == 0 || strcmp(cmd, "outcomes") == 0 ||
                (strcmp(cmd, "report") == 0 && html)) &&
               optind + 1 == argc) {
        rc = program_command(cfg, rs, cmd, json, html);
    } else {
        usage(stderr);
        rc = 1;
    }
    jd_rules_destroy(rs);
    jd_config_destroy(cfg);
    return rc;
}
