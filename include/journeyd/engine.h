/*
 * engine — the daemon's one pass of data: poll a batch from the consumer,
 * decode, load the customers it touches (one pipelined round trip), apply
 * each event (core state, rules, policy), persist the dirty customers with
 * their new triggers in one pipelined round trip, produce the triggers, and
 * store each partition's offset only when everything before it is persisted
 * and acknowledged. Rebalances, reloads and shutdown happen between batches.
 */
#ifndef JOURNEYD_ENGINE_H
#define JOURNEYD_ENGINE_H

#include <signal.h>

#include "journeyd/config.h"
#include "journeyd/metrics.h"
#include "journeyd/rules.h"

struct jd_engine;

/* Takes ownership of rs. metrics may be NULL. NULL with errstr on failure
 * (Redis or Kafka handles could not be created). */
struct jd_engine *jd_engine_new(const struct jd_config *cfg, struct jd_ruleset *rs,
                                struct jd_metrics *metrics, char *errstr, size_t errsize);
void jd_engine_destroy(struct jd_engine *e);

/* Runs until *stop becomes non-zero; *reload set to non-zero asks for a rule
 * reload from the config file (it is cleared when handled). Returns 0 after
 * a clean shutdown (batch finished, state persisted, triggers delivered,
 * offsets committed, group left), -1 on a fatal runtime failure. */
int jd_engine_run(struct jd_engine *e, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload);

#endif
