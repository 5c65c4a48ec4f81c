/*
 * metrics_rules — binds the rule-bound metric families to a compiled rule
 * set. Kept apart from metrics.c so that programs and tests that never bind
 * rules do not link the rule compiler.
 */
#include "journeyd/config.h"
#include "journeyd/metrics.h"
#include "journeyd/rules.h"

#include <stdlib.h>

void jd_metrics_bind_rules(struct jd_metrics *m, const struct jd_ruleset *rs)
{
    size_t nt = jd_rules_ntriggers(rs), ns = jd_rules_nsegments(rs);
    const char **tnames = jd_xcalloc(nt, sizeof(char *));
    const char **tkinds = jd_xcalloc(nt, sizeof(char *));
    const char **snames = jd_xcalloc(ns, sizeof(char *));
    for (size_t i = 0; i < nt; i++) {
        const struct jd_trigger_src *t = jd_rules_trigger(rs, i);
        tnames[i] = t->on.name;
        tkinds[i] = jd_kind_name(t->kind);
    }
    for (size_t i = 0; i < ns; i++)
        snames[i] = jd_rules_segment_name(rs, i);
    jd_metrics_bind_names(m, jd_rules_version(rs), nt, tnames, tkinds, ns, snames);
    free(tnames);
    free(tkinds);
    free(snames);
}
