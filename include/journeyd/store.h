/*
 * store — journey state in Redis, and the per-instance cache of the
 * customers of the partitions this instance owns.
 *
 * Keys (prefix from redis.key_prefix, default "j"), hash-tagged so that all
 * of one customer's keys live in one Redis Cluster slot:
 *   j:{CID}        string  the encoded state (state.h), incl. applied offset
 *   j:{CID}:o      hash    outbox: trigger_id -> kind byte, topic, NUL, value
 *   j:{CID}:h      list    trigger history lines for journeyctl (capped)
 * Per-partition keys are hash-tagged on the partition (store_timers.c):
 *   j:{p:TOPIC:PARTITION}:timers  sorted set of customer ids by due time (ms)
 *   j:{p:TOPIC:PARTITION}:outbox  sorted set (all scores 0) of the customers
 *                                 whose outbox holds an entry that no replay
 *                                 would bring back (store_timers.c)
 *   j:{p:TOPIC:PARTITION}:wm      hash: the event clock's watermark and the
 *                                 offset it stands at (store_watermark.c)
 *
 * A flush writes each dirty customer atomically: a customer whose write is
 * only its state is one SET, or on a single node one key of an MSET shared
 * with other such customers; one that also touches its outbox or history is
 * a MULTI/EXEC, its own on its own keys on a Redis Cluster, one shared by
 * all such customers of the flush on a single node (store_flush.c). All
 * customers of a batch are pipelined in one round trip (per master, on a
 * Redis Cluster).
 */
#ifndef JOURNEYD_STORE_H
#define JOURNEYD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "journeyd/config.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"
#include "journeyd/util.h"

struct jd_store;
struct jd_redis;

/* Connects to the first of cfg->redis_addresses that answers; when it is a
 * Redis Cluster node, to the cluster's masters (redis_conn.h). NULL with
 * errstr when Redis is not reachable. */
struct jd_store *jd_store_new(const struct jd_config *cfg, char *errstr, size_t errsize);
void jd_store_destroy(struct jd_store *st);

/* Drops and re-opens the connection (after an error). 0 or -1. */
int jd_store_reconnect(struct jd_store *st, char *errstr, size_t errsize);
/* PING. 0 when Redis answers. */
int jd_store_ping(struct jd_store *st);

/* Loads the state and outbox of the n customers in one pipelined round trip.
 * A customer found in Redis is decoded into cs[i] (exists = 1) and its outbox
 * entries become cs[i]->pending; one not found is left fresh. Returns 0, or
 * -1 with errstr on a Redis or decoding failure (nothing is half-applied to a
 * customer that failed). */
int jd_store_load(struct jd_store *st, const struct jd_ruleset *rs, struct jd_customer **cs,
                  size_t n, char *errstr, size_t errsize) JD_MUST_CHECK;

/* Writes back the n customers (those with dirty set, or with acked ids to
 * remove): state, new outbox entries (pending ones not yet stored), removal
 * of acked ids, history lines; each customer atomically (above), all in one
 * pipeline. On success clears dirty and acked. Returns 0, or -1 with errstr
 * (the customers whose write failed stay dirty, so a retry writes them
 * again). */
int jd_store_flush(struct jd_store *st, const struct jd_ruleset *rs, struct jd_customer **cs,
                   size_t n, char *errstr, size_t errsize) JD_MUST_CHECK;

/* jd_store_flush in three steps, so that a write-back can travel while the
 * engine goes on (engine_wb.c): build queues the writes and takes, for each
 * customer, what its write covers (the customer is clean again and marked
 * `writing`; changes made after build are not in this write); exec sends
 * them and reads the replies, touching no customer (it may run on another
 * thread; nothing else may use this store meanwhile); finish records, on the
 * engine's thread, what got written (and re-marks dirty what did not).
 * finish returns what jd_store_flush returns. */
void jd_store_flush_build(struct jd_store *st, const struct jd_ruleset *rs, struct jd_customer **cs,
                          size_t n);
void jd_store_flush_exec(struct jd_store *st);
int jd_store_flush_finish(struct jd_store *st, struct jd_customer **cs, size_t n, char *errstr,
                          size_t errsize) JD_MUST_CHECK;
/* Gives back the buffers a large flush grew (an idle engine). */
void jd_store_trim(struct jd_store *st);
/* st sends, at the head of its next round trip, the removals queued by
 * `with`'s flushes too (and its own go to the same list): two stores
 * writing the same customers keep their removals in order. */
void jd_store_share_deferred(struct jd_store *st, struct jd_store *with);

/* Reads the trigger history of one customer, newest first (journeyctl).
 * Free the lines with jd_store_free_lines. */
int jd_store_history(struct jd_store *st, const char *customer_id, size_t max, char ***lines,
                     size_t *nlines, char *errstr, size_t errsize);
void jd_store_free_lines(char **lines, size_t nlines);

/* Reads one customer (journeyctl). 0 found, 1 not found, -1 error. */
int jd_store_get_customer(struct jd_store *st, const struct jd_ruleset *rs, const char *id,
                          struct jd_customer **out, char *errstr, size_t errsize);

/* -------- per-partition timer sets and outbox index (store_timers.c) --------
 * A partition is named by its source (jd_customer.partition: topic index
 * << 16 | partition number; the topic is cfg->input_topics[index]). The
 * flush keeps both sets in step with each customer's next_timer and outbox;
 * these read them. */

/* Customers found in a per-partition set. Reused across calls (the memory
 * stays); ids live in `ids`, read them with jd_due_id. */
struct jd_due {
    int32_t source;
    int64_t due; /* the score: due time (ms) in the timer set */
    size_t id_off, id_len;
};
struct jd_due_list {
    struct jd_due *v;
    size_t n, cap;
    struct jd_buf ids;
};
void jd_due_list_init(struct jd_due_list *l);
void jd_due_list_free(struct jd_due_list *l);
void jd_due_list_reset(struct jd_due_list *l);
void jd_due_list_add(struct jd_due_list *l, int32_t source, int64_t due, const char *id,
                     size_t id_len);
static inline const char *jd_due_id(const struct jd_due_list *l, size_t i)
{
    return l->ids.data + l->v[i].id_off;
}

/* For each of the n partitions with upto[i] >= 0, the customers whose due
 * time is <= upto[i], earliest first, at most `limit` per partition, all in
 * one pipelined round trip (ZRANGEBYSCORE; O(log N + due), whatever the
 * number N of customers scheduled). counts (may be NULL) receives each
 * partition's number of scheduled customers (ZCARD) in the same round trip.
 * Appends to out. 0, or -1 with errstr. */
int jd_store_timers_due(struct jd_store *st, const int32_t *sources, const int64_t *upto, size_t n,
                        size_t limit, int64_t *counts, struct jd_due_list *out, char *errstr,
                        size_t errsize) JD_MUST_CHECK;

/* Removes the listed entries (source, id) from their partitions' timer sets
 * (entries of customers that do not belong to that partition: no flush
 * would ever correct them), or, those with due < 0, from their outbox
 * indexes (customers whose outbox is empty). One round trip. 0 or -1. */
int jd_store_timers_remove(struct jd_store *st, const struct jd_due_list *entries, char *errstr,
                           size_t errsize) JD_MUST_CHECK;

/* Up to `limit` customers of the partition's outbox index that sort after
 * `after` (NULL: from the start), appended to out (due = 0). Page through by
 * passing the last id returned. 0 or -1. */
int jd_store_outbox_customers(struct jd_store *st, int32_t source, const char *after,
                              size_t after_len, size_t limit, struct jd_due_list *out, char *errstr,
                              size_t errsize) JD_MUST_CHECK;

/* -------- per-partition event clocks (store_watermark.c) -------- */
struct jd_watermark {
    int32_t source;    /* as above */
    int64_t offset;    /* every event of the partition before it is in the stored state */
    int64_t watermark; /* the largest occurred_at (ms) of those events */
};
/* Writes the n watermarks in one round trip. 0; -1 with errstr when the
 * write failed (retry); 1 with errstr when a key holds another type
 * (WRONGTYPE: the others are written, retrying cannot help). */
int jd_store_watermarks_save(struct jd_store *st, const struct jd_watermark *w, size_t n,
                             char *errstr, size_t errsize) JD_MUST_CHECK;
/* Reads the watermarks of w[0..n) (by source) in one round trip: offset
 * and watermark -1 when none is stored. 0; -1 with errstr when the read
 * failed (retry); 1 with errstr when a key holds something else (that
 * one reads as none). */
int jd_store_watermarks_load(struct jd_store *st, struct jd_watermark *w, size_t n, char *errstr,
                             size_t errsize) JD_MUST_CHECK;

/* Counts round trips and errors, for metrics. */
uint64_t jd_store_roundtrips(const struct jd_store *st);
uint64_t jd_store_errors(const struct jd_store *st);
/* 0 after a connection error until jd_store_reconnect succeeds. */
int jd_store_connected(const struct jd_store *st);
/* Cluster redirects (MOVED + ASK) followed so far, and since the last call
 * of jd_store_take_redirects (for the metrics counter). */
uint64_t jd_store_redirects(const struct jd_store *st);
uint64_t jd_store_take_redirects(struct jd_store *st);
/* The connection, for modules that keep their own keys next to the state
 * (per-partition timers): append, exec, read replies (redis_conn.h).
 * Commands appended to it just before jd_store_load or jd_store_flush travel
 * in the same round trip; their replies are read with jd_redis_reply by the
 * indices jd_redis_append gave (NULL: not executed) after the call, until
 * jd_redis_clear or the next append. */
struct jd_redis *jd_store_redis(struct jd_store *st);
/* "host:port", or "cluster of N masters via host:port" (for logs). */
const char *jd_store_describe(const struct jd_store *st);

/* -------- cache of owned customers -------- */
struct jd_cache;

/* max_customers 0: unbounded. */
struct jd_cache *jd_cache_new(size_t max_customers);
/* Destroys every cached customer. */
void jd_cache_destroy(struct jd_cache *cache);
/* Looks a customer up (no allocation) and marks it used (jd_cache_touch). */
struct jd_customer *jd_cache_get(struct jd_cache *cache, const char *id, size_t id_len);
/* Takes ownership of c (replacing nothing: c->id must be absent). */
void jd_cache_put(struct jd_cache *cache, struct jd_customer *c);
/* The id's hash, for the _hashed calls: a batch hashes each message's key
 * once, not once per prefetch stage and lookup. */
uint64_t jd_cache_hash(const char *id, size_t id_len);
struct jd_customer *jd_cache_get_hashed(struct jd_cache *cache, uint64_t h, const char *id,
                                        size_t id_len);
void jd_cache_put_hashed(struct jd_cache *cache, struct jd_customer *c, uint64_t h);
/* Prefetching for a run of lookups (h: jd_cache_hash of the id): a lookup
 * misses the cache up to three times (the slot, then the customer's id
 * length and its id). A caller that knows the ids to come asks for stage 0
 * (the slot) a few lookups ahead and stage 1 (the customer in it) fewer
 * ahead; stage 1 reads only what stage 0 brought in. Hints only: nothing
 * changes. */
void jd_cache_prefetch_hashed(const struct jd_cache *cache, uint64_t h, int stage);
/* Gives c back to the caller without destroying it. */
void jd_cache_remove(struct jd_cache *cache, struct jd_customer *c);
size_t jd_cache_size(const struct jd_cache *cache);
/* Calls fn for each cached customer of that partition (all when partition < 0).
 * fn must not add or remove customers (the walk goes over the table). */
void jd_cache_foreach(struct jd_cache *cache, int32_t partition,
                      void (*fn)(struct jd_customer *c, void *ud), void *ud);
/* Destroys the customers of that partition (after revocation). */
void jd_cache_drop_partition(struct jd_cache *cache, int32_t partition);
/* Evicts clean customers with an empty outbox until at most the configured
 * maximum remain, by second chance ("CLOCK"): a hand goes round the table
 * from where it stopped last; a customer looked up or added since the hand
 * last passed it is spared once (unmarked), others go. Returns how many
 * were evicted. */
size_t jd_cache_evict(struct jd_cache *cache);
/* Sets the maximum the next jd_cache_evict keeps (0: unbounded). */
void jd_cache_set_max(struct jd_cache *cache, size_t max_customers);
/* Marks c as used: a byte in the customer, which is written anyway. */
void jd_cache_touch(struct jd_cache *cache, struct jd_customer *c);

#endif
