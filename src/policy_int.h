/*
 * policy internals, shared by policy*.c only.
 */
#ifndef JOURNEYD_POLICY_INT_H
#define JOURNEYD_POLICY_INT_H

#include <stdint.h>

#include "journeyd/config.h"
#include "journeyd/policy.h"
#include "journeyd/tz.h"

/* policy_budget.c: global budgets in Redis */
struct jd_budget;
struct jd_budget *jd_budget_new(const struct jd_config *cfg);
void jd_budget_destroy(struct jd_budget *b);
/* Takes one token of `trigger`'s budget for the period containing at_ms:
 * 1 taken, 0 the period's budget is spent, -1 Redis failed (errstr). */
int jd_budget_take(struct jd_budget *b, const char *trigger, int64_t budget, int64_t period_ms,
                   int64_t at_ms, char *errstr, size_t errsize);

/* policy_audit.c: Suppressed records (Avro) */
struct jd_audit;
struct jd_audit *jd_audit_new(const struct jd_config *cfg, char *errstr, size_t errsize);
void jd_audit_destroy(struct jd_audit *a);
int jd_audit_encode(struct jd_audit *a, const struct jd_trigger *t,
                    const struct jd_policy_decision *d, int64_t decided_at, struct jd_buf *out,
                    char *errstr, size_t errsize);

struct jd_policy {
    const struct jd_config *cfg;
    struct jd_tzdb *tzdb;
    const struct jd_tz *default_tz;
    struct jd_budget *budget;
    struct jd_audit *audit; /* NULL: no audit topic */
    struct jd_buf line;     /* history line scratch */
    struct jd_buf value;    /* audit value scratch */
    /* per kind, over policy.caps: the longest window and the largest max */
    int64_t cap_window[JD_KIND_COUNT];
    uint32_t cap_keep[JD_KIND_COUNT];
    int has_cap[JD_KIND_COUNT];
};

#endif
