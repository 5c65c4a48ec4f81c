/*
 * policy — contact policy applied to every trigger a rule fires, before it
 * is emitted: per-trigger cooldown and holdout group. (Caps across
 * triggers, quiet hours, budgets and consent are issue 5.)
 */
#ifndef JOURNEYD_POLICY_H
#define JOURNEYD_POLICY_H

#include <stdint.h>

#include "journeyd/config.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"

enum jd_policy_verdict { JD_POLICY_ALLOW = 0, JD_POLICY_SUPPRESS };

struct jd_policy;

struct jd_policy *jd_policy_new(const struct jd_config *cfg);
void jd_policy_destroy(struct jd_policy *p);

/* Decides whether trigger `t` of rs may be sent to c at `now`. On
 * JD_POLICY_SUPPRESS, *reason is a short stable word ("cooldown", "holdout")
 * and detail (if not NULL) a sentence for the audit trail. Records the
 * decision in c (last_fired, fired_count) when allowed. */
enum jd_policy_verdict jd_policy_decide(struct jd_policy *p, const struct jd_ruleset *rs,
                                        struct jd_customer *c, size_t t, int64_t now,
                                        const char **reason, char *detail, size_t detailsize);

/* 1 when the customer is in the trigger's holdout group (deterministic: hash
 * of customer id and trigger name, compared with the holdout share). */
int jd_policy_in_holdout(const char *customer_id, const char *trigger, double share);

#endif
