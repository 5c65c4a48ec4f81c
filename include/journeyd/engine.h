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

#include <stdatomic.h>

#include "journeyd/config.h"
#include "journeyd/metrics.h"
#include "journeyd/rules.h"

struct jd_engine;

/* A stop or reload flag: set by a signal handler or by another thread (the
 * engines' supervisor, engines.c), read and cleared on the engine's thread.
 * A lock-free atomic int: the one type C11 lets both a signal handler and
 * another thread touch (volatile sig_atomic_t is only for the former). */
typedef atomic_int jd_flag;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2,
               "jd_flag must be lock-free to be set in a signal handler");

/* Takes ownership of rs. metrics may be NULL. NULL with errstr on failure
 * (Redis or Kafka handles could not be created). */
struct jd_engine *jd_engine_new(const struct jd_config *cfg, struct jd_ruleset *rs,
                                struct jd_metrics *metrics, char *errstr, size_t errsize);
/* Engine `index` of `count` in one process (processing.engines): a member
 * of the group of its own (kafka.group_instance_id ID: engine 0 joins as
 * ID, engine i as ID-i), caching cache_max_customers / count customers; it
 * leaves systemd notifications to the caller when count > 1. jd_engine_new
 * is engine 0 of 1. */
struct jd_engine *jd_engine_new_member(const struct jd_config *cfg, struct jd_ruleset *rs,
                                       struct jd_metrics *metrics, int index, int count,
                                       char *errstr, size_t errsize);
void jd_engine_destroy(struct jd_engine *e);

/* Runs until *stop becomes non-zero; *reload set to non-zero asks for a rule
 * reload from the config file (it is cleared when handled). Returns 0 after
 * a clean shutdown (batch finished, state persisted, triggers delivered,
 * offsets committed, group left), -1 on a fatal runtime failure. */
int jd_engine_run(struct jd_engine *e, jd_flag *stop, jd_flag *reload);

/* processing.engines > 1 (src/engines.c): what an engine shares with the
 * others of its process. */
struct jd_engine_peers {
    /* called on the engine's thread as its shutdown begins (on a stop or on
     * a failure), so that the others stop too */
    void (*stopping)(void *arg);
    /* called on the engine's thread after its last commit and before it
     * leaves the group: no engine leaves (which starts a rebalance, and the
     * group refuses commits until it settles) while another still has
     * offsets to commit */
    void (*leave_gate)(void *arg);
    /* called on the engine's thread when it reloads its rules (SIGHUP): a
     * copy (to free) of the config file as the caller read it once for all
     * the engines, so that all load the same rules even when the file
     * changes in between; NULL: read the file */
    char *(*reload_text)(void *arg);
    void *arg;
    /* engines that have worked since they last went idle: malloc_trim
     * locks every arena of the process, so an idle engine trims only while
     * this is 0 (engine_mem.c) */
    _Atomic int *busy;
    /* input partitions the process's engines own together: each engine's
     * cache keeps cache_max_customers in proportion to its own share of
     * them (engine_mem.c, jd_engine_cache_share) */
    _Atomic int *assigned;
};
/* Before jd_engine_run; p must outlive the engine. */
void jd_engine_set_peers(struct jd_engine *e, const struct jd_engine_peers *p);

#endif
