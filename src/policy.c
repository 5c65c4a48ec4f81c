/*
 * policy — decides, per fired trigger, whether it goes out, when, and if
 * not, why. Owns nothing per customer: what it counts (send times per
 * trigger and per kind, the time zone, the opt-outs) lives in the customer's
 * state, so each decision is persisted with the state change that caused it
 * and a replay decides the same way. The exceptions are global budgets,
 * which live in Redis (policy_budget.c).
 *
 * Checks, in order (the first that fails names the suppression):
 *   optout, holdout, quiet_hours (drop; or defer: the send time moves to the
 *   end of the quiet period), cooldown, cap (the trigger's max_per_customer,
 *   then policy.caps of its kind), budget.
 * Cooldowns and caps are counted at the send time, so a deferred trigger
 * counts at the moment it will reach the customer.
 */
#include "journeyd/policy.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "journeyd/log.h"
#include "policy_int.h"

#define MOD "policy"
#define DAY_MS 86400000LL

struct jd_policy *jd_policy_new(const struct jd_config *cfg, char *errstr, size_t errsize)
{
    struct jd_policy *p = jd_xcalloc(1, sizeof *p);
    const struct jd_policy_src *ps = &cfg->policy;
    p->cfg = cfg;
    jd_buf_init(&p->line);
    jd_buf_init(&p->value);
    p->tzdb = jd_tzdb_new(NULL);
    const char *dz = ps->quiet_default_tz ? ps->quiet_default_tz : "UTC";
    p->default_tz = jd_tzdb_get(p->tzdb, dz);
    if (!p->default_tz && ps->quiet_enabled) {
        snprintf(errstr, errsize,
                 "policy.quiet_hours.default_tz: '%s' is not a time zone of /usr/share/zoneinfo "
                 "(is tzdata installed?)",
                 dz);
        goto err;
    }
    for (size_t i = 0; i < ps->ncaps; i++) {
        const struct jd_cap_src *cap = &ps->caps[i];
        p->has_cap[cap->kind] = 1;
        if (cap->per_ms > p->cap_window[cap->kind])
            p->cap_window[cap->kind] = cap->per_ms;
        if ((uint32_t)cap->max > p->cap_keep[cap->kind])
            p->cap_keep[cap->kind] = (uint32_t)cap->max;
    }
    p->budget = jd_budget_new(cfg);
    if (ps->audit_topic && !(p->audit = jd_audit_new(cfg, errstr, errsize)))
        goto err;
    return p;
err:
    jd_policy_destroy(p);
    return NULL;
}

void jd_policy_destroy(struct jd_policy *p)
{
    if (!p)
        return;
    jd_tzdb_destroy(p->tzdb);
    jd_budget_destroy(p->budget);
    jd_audit_destroy(p->audit);
    jd_buf_free(&p->line);
    jd_buf_free(&p->value);
    free(p);
}

int jd_policy_in_holdout(const char *customer_id, const char *salt, double share)
{
    if (share <= 0)
        return 0;
    if (share >= 1)
        return 1;
    const void *parts[3] = {"holdout", salt, customer_id};
    size_t lens[3] = {7, strlen(salt), strlen(customer_id)};
    uint64_t h[2];
    jd_hash128(parts, lens, 3, h);
    /* top 53 bits as a uniform number in [0, 1) */
    double u = (double)(h[0] >> 11) / 9007199254740992.0;
    return u < share;
}

unsigned jd_policy_parse_kinds(const char *s)
{
    unsigned mask = 0;
    const char *p = s;
    while (p && *p) {
        while (*p == ',' || *p == ' ' || *p == ';')
            p++;
        size_t n = strcspn(p, ", ;");
        if (n == 0)
            break;
        char word[32];
        if (n < sizeof word) {
            memcpy(word, p, n);
            word[n] = '\0';
            if (strcasecmp(word, "all") == 0)
                mask |= (1u << JD_KIND_COUNT) - 1;
            for (int k = 0; k < JD_KIND_COUNT; k++)
                if (strcasecmp(word, jd_kind_name((enum jd_trigger_kind)k)) == 0)
                    mask |= 1u << k;
        }
        p += n;
    }
    return mask;
}

void jd_policy_observe_event(const struct jd_policy *p, struct jd_customer *c,
                             const struct jd_event *ev)
{
    const struct jd_policy_src *ps = &p->cfg->policy;
    const char *v;
    if (ev->nattrs && ps->quiet_tz_attribute && (v = jd_event_attr(ev, ps->quiet_tz_attribute))) {
        if (!*v)
            jd_customer_set_tz(c, NULL, 0);
        else if (!c->tz || strcmp(c->tz, v) != 0)
            jd_customer_set_tz(c, v, strlen(v));
    }
    /* the attribute is the customer's current list: it replaces the mask */
    if (ev->nattrs && ps->optout_attribute && (v = jd_event_attr(ev, ps->optout_attribute)))
        c->optout = (uint8_t)jd_policy_parse_kinds(v);
    if (ev->type && (jd_streq(ev->type, "unsubscribe") || jd_streq(ev->type, "subscribe"))) {
        const char *k = jd_event_attr(ev, "kind");
        unsigned mask = k && *k ? jd_policy_parse_kinds(k) : (1u << JD_KIND_COUNT) - 1;
        if (ev->type[0] == 'u')
            c->optout |= (uint8_t)mask;
        else
            c->optout &= (uint8_t)~mask;
    }
}

void jd_policy_order(const struct jd_ruleset *rs, const struct jd_eval_result *res,
                     size_t order[JD_MAX_FIRED])
{
    size_t n = res->nfired < JD_MAX_FIRED ? res->nfired : JD_MAX_FIRED;
    for (size_t i = 0; i < n; i++) {
        /* insertion sort: stable, and n is tiny */
        int pri = jd_rules_trigger(rs, res->fired[i].trigger)->priority;
        size_t j = i;
        while (j > 0 && jd_rules_trigger(rs, res->fired[order[j - 1]].trigger)->priority < pri) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static const char *fmt_utc(int64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)floor_div(ms, 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* 1 when `now` is inside the quiet hours in zone z; then *end is the first
 * instant after them. */
static int quiet_end(const struct jd_policy_src *ps, const struct jd_tz *z, int64_t now,
                     int *local_min, int64_t *end)
{
    int64_t local = now + (int64_t)jd_tz_offset(z, floor_div(now, 1000)) * 1000;
    int64_t day = floor_div(local, DAY_MS) * DAY_MS;
    int m = (int)((local - day) / 60000);
    int from = ps->quiet_from_min, to = ps->quiet_to_min;
    int quiet = from < to ? (m >= from && m < to) : from > to ? (m >= from || m < to) : 0;
    *local_min = m;
    if (!quiet)
        return 0;
    int64_t target = day + (int64_t)to * 60000;
    if (target <= local)
        target += DAY_MS;
    *end = jd_tz_local_to_utc_ms(z, now, target);
    return 1;
}

static enum jd_policy_verdict suppress(struct jd_policy_decision *d, const char *reason,
                                       const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static enum jd_policy_verdict suppress(struct jd_policy_decision *d, const char *reason,
                                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->detail, sizeof d->detail, fmt, ap);
    va_end(ap);
    d->reason = reason;
    d->not_before = 0;
    return JD_POLICY_SUPPRESS;
}

enum jd_policy_verdict jd_policy_decide(struct jd_policy *p, const struct jd_ruleset *rs,
                                        struct jd_customer *c, size_t t, int64_t now,
                                        struct jd_policy_decision *d)
{
    const struct jd_trigger_src *ts = jd_rules_trigger(rs, t);
    const struct jd_policy_src *ps = &p->cfg->policy;
    const char *name = ts->on.name;
    enum jd_trigger_kind kind = ts->kind;
    const char *kname = jd_kind_name(kind);
    char d1[32], d2[32];

    d->reason = NULL;
    d->detail[0] = '\0';
    d->not_before = 0;
    d->send_at = now;
    d->holdout =
        ts->holdout > 0 &&
        jd_policy_in_holdout(c->id, ts->holdout_salt ? ts->holdout_salt : name, ts->holdout);

    if (c->optout & (1u << kind))
        return suppress(d, "optout", "customer opted out of %s triggers", kname);
    if (d->holdout)
        return suppress(d, "holdout", "customer is in the %g%% holdout group of %s",
                        ts->holdout * 100, name);

    if (ps->quiet_enabled && (ps->quiet_kinds & (1u << kind))) {
        const struct jd_tz *z = c->tz ? jd_tzdb_get(p->tzdb, c->tz) : NULL;
        if (!z)
            z = p->default_tz;
        int64_t end;
        int m;
        if (z && quiet_end(ps, z, now, &m, &end)) {
            if (!ps->quiet_defer)
                return suppress(d, "quiet_hours",
                                "quiet hours %02d:%02d-%02d:%02d in %s (local time %02d:%02d)",
                                ps->quiet_from_min / 60, ps->quiet_from_min % 60,
                                ps->quiet_to_min / 60, ps->quiet_to_min % 60, jd_tz_name(z), m / 60,
                                m % 60);
            d->not_before = end;
            d->send_at = end;
            snprintf(d->detail, sizeof d->detail,
                     "deferred by quiet hours %02d:%02d-%02d:%02d in %s until %s",
                     ps->quiet_from_min / 60, ps->quiet_from_min % 60, ps->quiet_to_min / 60,
                     ps->quiet_to_min % 60, jd_tz_name(z), fmt_utc(end, d1, sizeof d1));
        }
    }
    int64_t at = d->send_at;

    const int64_t *last_fired = jd_customer_last_fired(c);
    if (t < c->ntriggers && ts->cooldown_ms > 0 && last_fired[t] > 0 &&
        at - last_fired[t] < ts->cooldown_ms)
        return suppress(d, "cooldown", "%s was sent %s before, cooldown %s", name,
                        at >= last_fired[t] ? jd_format_duration(at - last_fired[t], d1, sizeof d1)
                                            : "0ms",
                        jd_format_duration(ts->cooldown_ms, d2, sizeof d2));

    struct jd_times *tsends = ts->max_per_window > 0 ? jd_customer_trigger_sends(c, t) : NULL;
    if (tsends) {
        uint32_t n = jd_times_count_after(tsends, at - ts->max_window_ms);
        if (n >= (uint32_t)ts->max_per_window)
            return suppress(d, "cap", "%s was sent %" PRIu32 " time(s) in the last %s (max %d)",
                            name, n, jd_format_duration(ts->max_window_ms, d1, sizeof d1),
                            ts->max_per_window);
    }
    for (size_t i = 0; i < ps->ncaps; i++) {
        const struct jd_cap_src *cap = &ps->caps[i];
        if (cap->kind != kind)
            continue;
        uint32_t n =
            c->kind_sends ? jd_times_count_after(&c->kind_sends[kind], at - cap->per_ms) : 0;
        if (n >= (uint32_t)cap->max)
            return suppress(d, "cap", "%" PRIu32 " %s trigger(s) sent in the last %s (cap %d)", n,
                            kname, jd_format_duration(cap->per_ms, d1, sizeof d1), cap->max);
    }

    if (ts->global_budget > 0) {
        char err[256];
        int r = jd_budget_take(p->budget, name, ts->global_budget, ts->global_period_ms, at, err,
                               sizeof err);
        if (r == 0)
            return suppress(d, "budget", "the budget of %s (%" PRId64 " per %s) is spent", name,
                            ts->global_budget,
                            jd_format_duration(ts->global_period_ms, d1, sizeof d1));
        if (r < 0) {
            /* failing closed: a budget may be under-used, never exceeded */
            jd_warn(MOD, "customer %s: %s: budget store unavailable, suppressed: %s", c->id, name,
                    err);
            return suppress(d, "budget", "the budget of %s could not be checked (%s)", name, err);
        }
    }

    /* allowed: record the send */
    if (t < c->ntriggers) {
        jd_customer_last_fired(c)[t] = at;
        jd_customer_fired_count(c)[t]++;
    }
    if (tsends) {
        jd_times_add(tsends, at);
        jd_times_prune(tsends, at - ts->max_window_ms, (uint32_t)ts->max_per_window);
    } else if (c->trigger_sends && t < c->ntriggers) {
        c->trigger_sends[t].n = 0; /* the cap was removed by a reload */
    }
    if (p->has_cap[kind]) {
        struct jd_times *ks = jd_customer_kind_sends(c, kind);
        jd_times_add(ks, at);
        jd_times_prune(ks, at - p->cap_window[kind], p->cap_keep[kind]);
    } else if (c->kind_sends) {
        c->kind_sends[kind].n = 0;
    }
    return JD_POLICY_ALLOW;
}
