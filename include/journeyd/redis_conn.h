/*
 * redis_conn — the way to Redis for the store and its neighbours: one Redis
 * node, or a Redis Cluster, behind one pipelining interface.
 *
 * jd_redis_new takes one or more seed addresses. The first seed that answers
 * says with INFO cluster whether it is part of a cluster; if so the slot map
 * comes from CLUSTER SLOTS and there is one connection per master, otherwise
 * everything goes to that one node.
 *
 * A pipeline is built by appending commands, each routed by one of its
 * arguments (its key); commands that must reach one node together and be
 * re-sent together (a MULTI ... EXEC, all on one hash tag) are appended
 * between jd_redis_group_begin and jd_redis_group_end. jd_redis_exec sends
 * everything, one round trip per master (all masters at once), and follows
 * MOVED/ASK redirects, TRYAGAIN/CLUSTERDOWN/LOADING and lost connections
 * (cluster mode) within a bounded time; the replies are then read by the
 * index jd_redis_append returned, in the order of appending.
 *
 * A command whose connection died before its reply arrived may have run:
 * commands are re-sent, so they must be idempotent (or tolerate a repeat),
 * and a group that is not a MULTI ... EXEC is re-sent whole.
 */
#ifndef JOURNEYD_REDIS_CONN_H
#define JOURNEYD_REDIS_CONN_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "journeyd/util.h"

#define JD_REDIS_SLOTS 16384

struct jd_redis;

/* Connects to the first seed ("host:port") that answers and discovers the
 * cluster when there is one. NULL with errstr when no seed answers. */
struct jd_redis *jd_redis_new(const char *const *seeds, size_t nseeds, int timeout_ms, char *errstr,
                              size_t errsize);
void jd_redis_destroy(struct jd_redis *r);

/* Drops every connection and connects again (cluster: re-reads the slot map
 * from the masters last known, then the seeds). 0 or -1. */
int jd_redis_reconnect(struct jd_redis *r, char *errstr, size_t errsize);
/* 0 after a lost connection (single node) or a call that failed for want of
 * connections (cluster) until jd_redis_reconnect succeeds. */
int jd_redis_connected(const struct jd_redis *r);
int jd_redis_is_cluster(const struct jd_redis *r);
/* PING to the node, or to every master. 0 when all answer PONG. */
int jd_redis_ping(struct jd_redis *r);
/* Number of masters serving slots (1 for a single node). */
size_t jd_redis_masters(const struct jd_redis *r);
/* "host:port" of the single node, or "cluster via host:port" (for logs). */
const char *jd_redis_describe(const struct jd_redis *r);

/* -------- pipelines -------- */

/* Appends one command; argv[key_arg] is its routing key (key_arg 0: no key,
 * the command goes with its group, or to any master). The arguments are
 * copied. Returns the command's index for jd_redis_reply. */
size_t jd_redis_append(struct jd_redis *r, int key_arg, int argc, const char *const *argv,
                       const size_t *argvlen);
/* Commands appended between these two form one unit: sent to one node in
 * order, re-sent whole after a redirect (ASKING before the first one after
 * an ASK). Every key of a group must hash to one slot (asserted in debug
 * builds). */
void jd_redis_group_begin(struct jd_redis *r);
void jd_redis_group_end(struct jd_redis *r);
/* Commands appended and not yet executed or cleared. */
size_t jd_redis_pending(const struct jd_redis *r);

/* With JD_REDIS_REPLICATED, a master that has live replicas is also sent a
 * WAIT for one replica after the commands; if no replica acknowledges in
 * time, that master's commands count as not executed (they ran, but a
 * failover could lose them). */
#define JD_REDIS_REPLICATED 1

/* Sends the pipeline and collects every reply. 0 when every command has a
 * reply (which may be an error reply: OOM, WRONGTYPE...), -1 with errstr
 * when some have none (jd_redis_reply is NULL for those). */
int jd_redis_exec(struct jd_redis *r, int flags, char *errstr, size_t errsize);
/* The reply of command i of the last exec; NULL when it was not executed. */
const redisReply *jd_redis_reply(const struct jd_redis *r, size_t i);
/* "host:port" of the node that gave reply i (for error messages). */
const char *jd_redis_reply_node(const struct jd_redis *r, size_t i);
/* Frees the replies and empties the pipeline (also done by the next
 * jd_redis_append after an exec). */
void jd_redis_clear(struct jd_redis *r);
/* Clears the pipeline and gives its buffers back (they grow to the size of
 * the largest write-back: megabytes). For an idle engine. */
void jd_redis_trim(struct jd_redis *r);

/* -------- counters -------- */
uint64_t jd_redis_roundtrips(const struct jd_redis *r); /* one per exec round */
uint64_t jd_redis_moved(const struct jd_redis *r);
uint64_t jd_redis_asks(const struct jd_redis *r);
uint64_t jd_redis_redirects(const struct jd_redis *r); /* MOVED + ASK */
uint64_t jd_redis_retries(const struct jd_redis *r);   /* rounds after a backoff */

/* -------- slots (redis_slots.c) -------- */

/* CRC16-CCITT (XMODEM), as Redis Cluster hashes keys. */
uint16_t jd_redis_crc16(const void *buf, size_t len);
/* The hash slot of a key: of what lies between the first '{' and the first
 * '}' after it when that is not empty, else of the whole key. */
unsigned jd_redis_key_slot(const void *key, size_t len);

#endif
