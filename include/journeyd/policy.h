/*
 * policy — the contact policy applied to every trigger a rule fires, before
 * it is emitted (docs/policy.md): consent (opt-outs), holdout groups, quiet
 * hours in the customer's time zone (defer or drop), per-trigger cooldown
 * and cap per customer, caps per kind across triggers, and a global budget
 * per trigger shared by every instance (through Redis). Suppressions are
 * written to the customer's history and, optionally, to an audit topic.
 */
#ifndef JOURNEYD_POLICY_H
#define JOURNEYD_POLICY_H

#include <stdint.h>

#include "journeyd/codec.h"
#include "journeyd/config.h"
#include "journeyd/event.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"

enum jd_policy_verdict { JD_POLICY_ALLOW = 0, JD_POLICY_SUPPRESS };

struct jd_policy_decision {
    const char *reason; /* suppressed: "optout", "holdout", "quiet_hours", "cooldown", "cap",
                           "budget" (the metrics' reason words); NULL when allowed */
    char detail[256];   /* suppressed: the numbers behind the reason; allowed but deferred:
                           the quiet period; else empty */
    int64_t not_before; /* allowed, deferred past quiet hours: the end of the quiet period
                           (jd_pending_trigger.not_before); 0: at once */
    int64_t send_at;    /* when it is (or will be) delivered: not_before, or the decision time */
    int holdout;        /* the customer is in this trigger's holdout group */
};

struct jd_policy;

/* Reads what the policy needs from cfg (kept by reference: cfg must outlive
 * it): checks that policy.quiet_hours.default_tz is a zone and, when
 * policy.audit_topic is set, loads schemas.suppressed. NULL with errstr. */
struct jd_policy *jd_policy_new(const struct jd_config *cfg, char *errstr, size_t errsize);
void jd_policy_destroy(struct jd_policy *p);

/* Per event, before the rules run (so that the event's own triggers obey
 * it): the time zone attribute, the opt-out attribute, and the `unsubscribe`
 * / `subscribe` touchpoints update the customer's state. */
void jd_policy_observe_event(const struct jd_policy *p, struct jd_customer *c,
                             const struct jd_event *ev);

/* The order in which to decide the triggers of one evaluation: higher
 * priority first, rule order among equals (a higher priority trigger takes a
 * shared cap before a lower one). order[0..res->nfired) receives indices. */
void jd_policy_order(const struct jd_ruleset *rs, const struct jd_eval_result *res,
                     size_t order[JD_MAX_FIRED]);

/* Decides whether trigger t of rs, fired at clock time `now`, may be sent to
 * c, filling d. When allowed, records the send (at d->send_at) in c so that
 * the next decision counts it; a suppression changes nothing in c (except
 * budget tokens, which are global). */
enum jd_policy_verdict jd_policy_decide(struct jd_policy *p, const struct jd_ruleset *rs,
                                        struct jd_customer *c, size_t t, int64_t now,
                                        struct jd_policy_decision *d);

/* Writes a suppression down: a history line ("AT|TRIGGER|ID|SUPPRESSED:REASON|DETAIL")
 * for journeyctl and, when policy.audit_topic is set, a Suppressed record in
 * c's outbox (delivered at least once like a trigger). `t` is the trigger as
 * it would have been sent. 0, or -1 with errstr when encoding failed. */
int jd_policy_record_suppressed(struct jd_policy *p, struct jd_customer *c,
                                const struct jd_trigger *t, const struct jd_policy_decision *d,
                                int64_t decided_at, char *errstr, size_t errsize);

/* 1 when the customer is in the holdout group of share `share`
 * (deterministic: hash of the salt — by default the trigger's name — and
 * the customer id). */
int jd_policy_in_holdout(const char *customer_id, const char *salt, double share);

/* The kinds named in s ("REENGAGEMENT", "reward,reengagement", "all"),
 * as a bit mask (1 << kind); "none" or empty: 0. Unknown words are ignored. */
unsigned jd_policy_parse_kinds(const char *s);

/* Global budgets: tokens are reserved from Redis in chunks (docs/policy.md).
 * The chunk used for a budget. */
int64_t jd_policy_budget_chunk(int64_t budget);

#endif
