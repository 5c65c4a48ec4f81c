/*
 * engines — processing.engines > 1: N engines in one process, each on a
 * thread of its own and a member of the consumer group (src/engines.c).
 */
#ifndef JOURNEYD_ENGINES_H
#define JOURNEYD_ENGINES_H

#include "journeyd/config.h"
#include "journeyd/engine.h"
#include "journeyd/metrics.h"
#include "journeyd/rules.h"

/* Runs cfg->engines engines until *stop (or one of them fails), passing
 * *reload on to each; takes ownership of rs0 (engine 0's rules; the others
 * compile their own from cfg). Each engine gets jd_metrics_child(metrics).
 * Returns 0 after a clean shutdown of all, -1 when one failed at runtime
 * (the others were stopped cleanly), -2 when they could not be created. */
int jd_engines_run(const struct jd_config *cfg, struct jd_ruleset *rs0, struct jd_metrics *metrics,
                   jd_flag *stop, jd_flag *reload);

#endif
