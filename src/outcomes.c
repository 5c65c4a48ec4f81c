/*
 * outcomes — conversion goals in the customer's state and the uplift
 * arithmetic (outcomes.h, docs/outcomes.md). Owns nothing: goals live in
 * struct jd_customer (persisted by state_codec.c as the `og` field), and the
 * counts they resolve into are kept by insights.c.
 */
#include "journeyd/outcomes.h"

#include <math.h>
#include <string.h>

void jd_outcomes_resolve(const struct jd_ruleset *rs, struct jd_customer *c,
                         const struct jd_event *ev, int64_t t_goal, int64_t now, jd_goal_cb cb,
                         void *ud)
{
    uint32_t keep = 0;
    size_t ntrig = jd_rules_ntriggers(rs);
    for (uint32_t i = 0; i < c->ngoals; i++) {
        struct jd_goal g = c->goals[i];
        if (g.trigger >= ntrig)
            continue; /* cannot happen: decode drops unknown triggers */
        const char *goal = jd_rules_trigger(rs, g.trigger)->goal;
        int converted =
            ev && goal && ev->type && jd_name_eq(ev->type, goal) && t_goal <= g.deadline;
        if (converted || g.deadline < now) {
            if (cb)
                cb(ud, &g, converted);
            continue;
        }
        c->goals[keep++] = g;
    }
    c->ngoals = keep;
}

int jd_outcomes_open(const struct jd_ruleset *rs, struct jd_customer *c, size_t t, int control,
                     int64_t now)
{
    if (t >= jd_rules_ntriggers(rs))
        return 0;
    const struct jd_trigger_src *ts = jd_rules_trigger(rs, t);
    if (!ts->goal || !*ts->goal)
        return 0;
    if (c->ngoals >= JD_MAX_OPEN_GOALS)
        return -1;
    struct jd_goal *g = jd_customer_add_goal(c);
    g->trigger = (uint32_t)t;
    g->control = control ? 1 : 0;
    g->deadline = now > INT64_MAX - ts->goal_window_ms ? INT64_MAX : now + ts->goal_window_ms;
    return 1;
}

int64_t jd_outcomes_next_due(const struct jd_customer *c)
{
    int64_t due = INT64_MAX;
    for (uint32_t i = 0; i < c->ngoals; i++) {
        int64_t d = c->goals[i].deadline == INT64_MAX ? INT64_MAX : c->goals[i].deadline + 1;
        if (d < due)
            due = d;
    }
    return due;
}

void jd_wilson_interval(int64_t k, int64_t n, double z, double *lo, double *hi)
{
    double nn = (double)n, p = (double)k / nn, z2 = z * z;
    double denom = 1 + z2 / nn;
    double center = (p + z2 / (2 * nn)) / denom;
    double half = z * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / denom;
    *lo = center - half;
    *hi = center + half;
    /* exact bounds at the edges (rounding would leave 1e-17 off 0 or 1) */
    if (k == 0)
        *lo = 0;
    if (k == n)
        *hi = 1;
}

void jd_uplift_compute(int64_t treated, int64_t treated_converted, int64_t control,
                       int64_t control_converted, struct jd_uplift *out)
{
    out->treated_rate = treated > 0 ? (double)treated_converted / (double)treated : NAN;
    out->control_rate = control > 0 ? (double)control_converted / (double)control : NAN;
    if (treated <= 0 || control <= 0) {
        out->uplift = out->ci_low = out->ci_high = NAN;
        return;
    }
    double p1 = out->treated_rate, p2 = out->control_rate, l1, u1, l2, u2;
    jd_wilson_interval(treated_converted, treated, JD_Z95, &l1, &u1);
    jd_wilson_interval(control_converted, control, JD_Z95, &l2, &u2);
    double d = p1 - p2;
    out->uplift = d;
    out->ci_low = d - sqrt((p1 - l1) * (p1 - l1) + (u2 - p2) * (u2 - p2));
    out->ci_high = d + sqrt((u1 - p1) * (u1 - p1) + (p2 - l2) * (p2 - l2));
}
