/*
 * outcomes — what each trigger achieves (docs/outcomes.md): conversion
 * goals kept in the customer's state, and the uplift of a trigger computed
 * from its treated/control counts.
 *
 * A trigger rule with `goal = "purchase"; goal_window = "7d";` opens one goal
 * per decision — sent (treated) or held out by the policy (control) — in the
 * customer's state. The goal converts at the customer's next touchpoint of
 * the goal type within the window, or closes unconverted when the clock
 * passes the deadline. The caller counts the resolutions (insights.c).
 */
#ifndef JOURNEYD_OUTCOMES_H
#define JOURNEYD_OUTCOMES_H

#include <stddef.h>
#include <stdint.h>

#include "journeyd/event.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"

/* Open goals kept per customer; a decision beyond it is not measured. */
#define JD_MAX_OPEN_GOALS 16

/* 1.96: the two-sided 95 % normal quantile. */
#define JD_Z95 1.959963984540054

/* Called for each goal resolved: converted 1 (goal reached within the
 * window) or 0 (window closed). */
typedef void (*jd_goal_cb)(void *ud, const struct jd_goal *g, int converted);

/* Resolves c's open goals. With an event, a goal whose trigger's goal type is
 * ev->type converts when t_goal <= deadline (t_goal: the event's time in the
 * event clock, the wall time otherwise). Then every goal with deadline < now
 * closes unconverted. Resolved goals are removed (the order of the others is
 * kept). ev may be NULL (a timer). */
void jd_outcomes_resolve(const struct jd_ruleset *rs, struct jd_customer *c,
                         const struct jd_event *ev, int64_t t_goal, int64_t now, jd_goal_cb cb,
                         void *ud);

/* Opens the goal of a decision of trigger t taken at `now`. Returns 1 when a
 * goal was opened, 0 when the trigger has no goal, -1 when the customer
 * already has JD_MAX_OPEN_GOALS open (the decision is not measured). */
int jd_outcomes_open(const struct jd_ruleset *rs, struct jd_customer *c, size_t t, int control,
                     int64_t now);

/* The earliest instant at which an open goal of c closes (its deadline + 1
 * ms: a goal reached at the deadline still counts); INT64_MAX when none. The
 * engine includes it in the customer's timer due time. */
int64_t jd_outcomes_next_due(const struct jd_customer *c);

/* ---- uplift ---- */

struct jd_uplift {
    double treated_rate;    /* NaN when treated == 0 */
    double control_rate;    /* NaN when control == 0 */
    double uplift;          /* treated_rate - control_rate; NaN unless both groups have decisions */
    double ci_low, ci_high; /* 95 % Newcombe hybrid score interval of the uplift; NaN likewise */
};

/* Wilson score interval of k successes out of n (n > 0) at quantile z. */
void jd_wilson_interval(int64_t k, int64_t n, double z, double *lo, double *hi);

/* Conversion rates, absolute uplift and its 95 % interval (Newcombe 1998,
 * method 10: the hybrid score interval built from the two Wilson intervals).
 * Counts must satisfy 0 <= converted <= decisions. */
void jd_uplift_compute(int64_t treated, int64_t treated_converted, int64_t control,
                       int64_t control_converted, struct jd_uplift *out);

#endif
