/*
 * policy — decides, per fired trigger, whether it goes out. Owns nothing
 * per customer: the times it needs live in the customer's state
 * (last_fired), so the decision is persisted with the state change that
 * caused it and replays decide the same way.
 */
#include "journeyd/policy.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jd_policy {
    const struct jd_config *cfg;
};

struct jd_policy *jd_policy_new(const struct jd_config *cfg)
{
    struct jd_policy *p = jd_xcalloc(1, sizeof *p);
    p->cfg = cfg;
    return p;
}

void jd_policy_destroy(struct jd_policy *p)
{
    free(p);
}

int jd_policy_in_holdout(const char *customer_id, const char *trigger, double share)
{
    if (share <= 0)
        return 0;
    if (share >= 1)
        return 1;
    const void *parts[3] = {"holdout", trigger, customer_id};
    size_t lens[3] = {7, strlen(trigger), strlen(customer_id)};
    uint64_t h[2];
    jd_hash128(parts, lens, 3, h);
    /* top 53 bits as a uniform number in [0, 1) */
    double u = (double)(h[0] >> 11) / 9007199254740992.0;
    return u < share;
}

enum jd_policy_verdict jd_policy_decide(struct jd_policy *p, const struct jd_ruleset *rs,
                                        struct jd_customer *c, size_t t, int64_t now,
                                        const char **reason, char *detail, size_t detailsize)
{
    (void)p;
    const struct jd_trigger_src *ts = jd_rules_trigger(rs, t);
    char d1[32];

    if (ts->holdout > 0 && jd_policy_in_holdout(c->id, ts->on.name, ts->holdout)) {
        *reason = "holdout";
        if (detail)
            snprintf(detail, detailsize, "customer is in the %.0f%% holdout group of %s",
                     ts->holdout * 100, ts->on.name);
        return JD_POLICY_SUPPRESS;
    }
    if (t < c->ntriggers && ts->cooldown_ms > 0 && c->last_fired[t] > 0 &&
        now - c->last_fired[t] < ts->cooldown_ms) {
        *reason = "cooldown";
        if (detail)
            snprintf(detail, detailsize, "%s fired %" PRId64 " ms ago, cooldown %s", ts->on.name,
                     now - c->last_fired[t], jd_format_duration(ts->cooldown_ms, d1, sizeof d1));
        return JD_POLICY_SUPPRESS;
    }
    if (t < c->ntriggers) {
        c->last_fired[t] = now;
        c->fired_count[t]++;
    }
    return JD_POLICY_ALLOW;
}
