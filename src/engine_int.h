/*
 * engine internals, shared by engine*.c only.
 */
#ifndef JOURNEYD_ENGINE_INT_H
#define JOURNEYD_ENGINE_INT_H

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdint.h>

#include "journeyd/codec.h"
#include "journeyd/config.h"
#include "journeyd/insights.h"
#include "journeyd/engine.h"
#include "journeyd/fetch_nudge.h"
#include "journeyd/metrics.h"
#include "journeyd/policy.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"
#include "journeyd/store.h"

/* A point in a partition up to which everything is persisted: its offset can
 * be stored once `outstanding` produce acknowledgements (triggers, dead
 * letters) have arrived and every earlier checkpoint is done. */
struct jd_ckpt {
    int64_t next_offset;
    uint32_t outstanding;
    int closed;       /* its batch is over: no more events join (next_offset is final) */
    int sealed;       /* and every customer its batch changed is written back */
    int sealing;      /* closed before the write-back on its way (engine_wb.c) was built */
    uint32_t events;  /* messages of its batch (journeyd_event_processing_seconds) */
    int64_t taken_ns; /* monotonic: when its batch was taken off the consumer */
    int64_t wm;       /* the partition's watermark when it closed (engine_clock.c) */
    struct jd_ckpt *next;
};

/* A checkpoint kept from being stored until a customer's new triggers are
 * produced into it (engine_wb.c): the triggers of an urgent customer are
 * produced a turn after its batch, yet must count on a checkpoint no later
 * than its batch's. */
struct jd_hold {
    struct jd_customer *c;
    struct jd_ckpt *ck; /* valid while its partition's gen is `gen` */
    int32_t source;
    uint32_t gen;
};

/* One owned input partition. */
struct jd_part {
    int assigned;
    int32_t source; /* topic index << 16 | partition: jd_customer.partition */
    int32_t partition;
    const char *topic;     /* cfg->input_topics[i] */
    int64_t watermark;     /* event clock: highest occurred_at seen */
    int64_t stored_offset; /* last offset handed to rd_kafka_offsets_store */
    struct jd_ckpt *head, *tail;
    struct jd_ckpt *open; /* checkpoint of the batch in progress, NULL none */
    uint32_t gen;         /* bumped at each release: acknowledgements of an older
                             ownership must not touch the (freed) checkpoints */
    /* timers (engine_timers.c) */
    int64_t consumed;      /* offset after the last message processed; < 0 unknown */
    int64_t idle_since_ns; /* monotonic: last message, assignment, or not caught up */
    int recover;           /* its outbox index is still to be loaded */
    /* event clock in Redis (engine_clock.c) */
    int64_t wm_saved; /* the watermark Redis holds for it (-1: unknown) */
    int wm_restore;   /* it is still to be read (2: by this batch) */
};

/* What a produced message is waiting for (the rd_kafka msg_opaque). */
struct jd_inflight {
    struct jd_ckpt *ckpt;
    int32_t source;
    uint32_t gen;
    int is_trigger;
    int64_t src_ts; /* source event's Kafka timestamp (ms), 0 unknown */
    char trigger_id[33];
    char customer_id[]; /* flexible: the customer whose outbox holds it */
};

struct jd_engine {
    const struct jd_config *cfg;
    int count;                           /* engines in the process (processing.engines) */
    char *instance_id;                   /* its group.instance.id; NULL: dynamic membership */
    const struct jd_engine_peers *peers; /* NULL: alone in the process */
    int busy;                            /* counted in peers->busy */
    int ran;                             /* jd_engine_run was called */
    struct jd_config *reload_cfg;        /* the config the reloaded rules point into */
    struct jd_ruleset *rs;
    struct jd_ruleset *next_rs; /* during a reload */
    struct jd_metrics *metrics;
    struct jd_codec *codec;
    struct jd_store *store;
    struct jd_cache *cache;
    struct jd_cmem *cmem; /* the memory of its customers (cmem.h), from its threads */
    struct jd_policy *policy;
    struct jd_insights *insights; /* program health and trigger outcomes */
    struct jd_timers *timers;     /* engine_timers.c */
    struct jd_wb *wb;             /* engine_wb.c; NULL: write-backs are synchronous */
    struct jd_loader *loader;     /* engine_load.c; NULL: loads are synchronous */
    struct jd_decoder *decoder;   /* engine_decode.c; NULL: nothing decoded ahead */
    int prepared;                 /* the batch in hand was taken ahead (engine_load.c) */
    size_t wb_round;              /* customers of the write-back round still to send */
    int wb_failed;                /* a write-back failed: the next one is synchronous */
    int wb_skips;                 /* turns in a row that left the write on its way */
    size_t wb_behind;             /* events of those turns (their slices) */
    size_t last_batch;            /* events in the last batch (the slice size) */
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    struct jd_fetch_nudge *nudge; /* NULL: not running */
    struct jd_ack_wake *ack_wake; /* NULL: not running (kafka.h) */
    uint64_t nudges_seen;         /* its count, as last added to the metrics */

    /* owned partitions: parts[topic index][partition] */
    struct jd_part **parts;
    int32_t *nparts; /* per topic: allocated length */
    int32_t assigned_count;

    /* the batch being collected */
    rd_kafka_message_t **msgs;
    struct jd_customer **mcust; /* the customer of msgs[i] (NULL: no key) */
    struct jd_part **mpart;     /* the partition of msgs[i] (NULL: not owned) */
    uint64_t *mhash;            /* the hash of msgs[i]'s key (jd_cache_hash) */
    size_t nmsgs;
    size_t maxmsgs;
    int64_t taken_ns;      /* monotonic: when its first message was taken off the consumer */
    int64_t last_msg_ns;   /* monotonic: when the last batch was applied (0: none yet) */
    int idle;              /* collect found nothing, and the input is quiet (engine.c) */
    int backlog;           /* a full batch was taken since the last idle turn */
    int backlog_end;       /* this idle turn ends a backlog: one asynchronous write */
    int closed_unmarked;   /* a checkpoint closed since jd_engine_ckpt_mark_closed */
    uint64_t ack_inflight; /* e->inflight at the last poll for acknowledgements */
    int ack_poll_ms;       /* that poll's timeout (engine.c, ack_poll) */

    /* scratch, reused across batches */
    struct jd_customer **load;
    size_t nload, capload;
    struct jd_customer **dirty; /* c->queued: to write back (engine_flush.c) */
    size_t ndirty, capdirty;
    struct jd_customer **urgent; /* c->urgent: to write at the end of the batch */
    size_t nurgent, capurgent;
    struct jd_hold *holds; /* c->held (engine_wb.c); c NULL: released */
    size_t nholds, capholds;
    size_t hold_first;       /* holds[0..hold_first) are all released */
    int64_t last_persist_ns; /* monotonic time of the last full write-back */
    int64_t last_commit_ns;  /* of the last commit made by engine_flush.c */
    int offsets_stored;      /* offsets stored since that commit */
    struct jd_buf tmp;       /* a trigger being encoded (engine_batch.c) */
    struct jd_buf history;

    uint64_t inflight;         /* produced, not yet acknowledged */
    struct jd_inflight **acks; /* delivered triggers not yet applied to their customers */
    size_t nacks, capacks;
    int redis_ok;
    int backpressured;
    int abandoned;     /* a batch was given up while stopping: never flush again */
    int fatal;         /* a fatal Kafka error: stop, exit 2 (offsets stay safe) */
    int fenced_logged; /* the assignment-lost warning was logged for this episode */
    int64_t backoff_ms;
    int notified_ready;       /* READY=1 sent to systemd */
    int64_t last_watchdog_ns; /* last WATCHDOG=1 */
    size_t trim_work;         /* events processed since the last heap trim (engine_mem.c) */
    int64_t last_trim_ns;     /* last heap trim; 0 never */
    int trim_again;           /* a second trim is due once idle for TRIM_EVERY_NS more */
    int clock_restore;        /* some partition's watermark is still to be read */
    struct jd_watermark *wmv; /* scratch of engine_clock.c */
    int64_t wm_read_logged;   /* monotonic: a foreign clock key last logged */
    int64_t wm_write_logged;
    size_t wmcap;
    jd_flag *stop;
    jd_flag *reload;
};

/* engine_mem.c: from the main loop after each batch; `idle`: the engine is
 * idle (engine.c, idle_in). Returns the heap's free pages to the system once
 * the engine goes idle after work (at most every 2 s). */
void jd_engine_trim(struct jd_engine *e, int idle);
/* The customers this engine's cache keeps: processing.cache_max_customers
 * in proportion to the partitions it owns among those its process's engines
 * own (cache_max_customers / engines while it owns none; engine_mem.c). */
size_t jd_engine_cache_share(const struct jd_engine *e);
/* Evicts down to that share (after a batch, on idle turns: nothing taken
 * ahead); sets journeyd_cached_customers. */
void jd_engine_cache_fit(struct jd_engine *e);

/* engine_batch.c */
void jd_engine_process_batch(struct jd_engine *e);
/* Writes cs[0..n) (the stats first), retrying while Redis fails. 0, or -1
 * when stopping or fenced left them unwritten. */
int jd_engine_flush_list(struct jd_engine *e, struct jd_customer **cs, size_t n, jd_flag *stop);
/* The assignment was lost: nothing held in memory may be written. */
int jd_engine_fenced(struct jd_engine *e);
/* Forgets the write-back lists unwritten (fenced). */
void jd_engine_drop_dirty(struct jd_engine *e);

/* engine_flush.c — write-back (see the comment atop the file) */
void jd_engine_push_urgent(struct jd_engine *e, struct jd_customer *c);
/* Writes the urgent customers and produces their outbox entries. 0, or -1
 * when stopping left them unwritten. */
int jd_engine_flush_urgent(struct jd_engine *e, jd_flag *stop);
/* Writes back every queued customer (retrying while Redis fails, unless
 * stopping), produces their outbox entries and seals the closed
 * checkpoints. 0, or -1 when stopping left them unwritten. */
int jd_engine_persist(struct jd_engine *e, jd_flag *stop);
/* jd_engine_persist when processing.flush_interval has passed since the
 * last, or when idle (engine.c, idle_in); then commits the stored
 * offsets (asynchronously, at most every 100 ms). */
int jd_engine_persist_due(struct jd_engine *e, int idle, jd_flag *stop);
/* Produces c's outbox entries not yet produced. */
void jd_engine_produce_customer(struct jd_engine *e, struct jd_customer *c);

/* Shared with engine_timers.c: */
/* Loads e->load[0..nload) (retrying while Redis fails, unless stopping);
 * customers with an outbox are pushed dirty so that it is produced. */
int jd_engine_load(struct jd_engine *e, jd_flag *stop);
/* Turns one fired rule into an outbox entry if the policy lets it out; ev
 * NULL for a timer (fired_at and the trigger id then come from now);
 * replayable: fired while an input event is applied (by it, or by a timer
 * its time made due), so that a replay of that event re-sends the entry
 * (struct jd_pending_trigger). */
void jd_engine_emit(struct jd_engine *e, struct jd_customer *c, const struct jd_event *ev,
                    const struct jd_fired *f, int64_t now, int64_t src_ts, int replayable);
void jd_engine_record_transitions(struct jd_engine *e, const struct jd_eval_result *res);
void jd_engine_redis_failed(struct jd_engine *e, const char *what, const char *err);
void jd_engine_redis_succeeded(struct jd_engine *e);

/* Writes the insights stats of what was applied so far (before any
 * customer of it), retrying while Redis fails. 0, or -1 when stopping. */
int jd_engine_flush_stats(struct jd_engine *e, jd_flag *stop);
/* The same, built for the write that leaves next (engine_wb.c sends it
 * ahead of the customers); an earlier flush that failed is written again
 * first, at once, retrying while Redis fails. 0, or -1 when stopping. */
int jd_engine_stats_build(struct jd_engine *e, jd_flag *stop);
/* Waits for the write on its way if it carries the stats (before any other
 * use of the insights connection). */
void jd_engine_stats_quiet(struct jd_engine *e);

/* engine_wb.c — the write-back on its way (see the comment atop the file) */
/* Starts the write-back thread and its connection (not on a Redis Cluster,
 * nor in naive mode: e->wb stays NULL). 0, or -1 with errstr. */
int jd_engine_wb_start(struct jd_engine *e, char *errstr, size_t errsize);
void jd_engine_wb_destroy(struct jd_engine *e);
/* Hands the urgent customers and the first k of the write-back list to the
 * thread (e->wb set, none on its way; the stats written before); seal: the
 * last slice of a round (engine_wb.c). */
int jd_engine_wb_submit(struct jd_engine *e, size_t k, int seal);
/* Writes the urgent customers (and the stats) on the write-back's
 * connection from the caller's thread, none on its way, and records the
 * write as jd_engine_wb_wait does: under light load a trigger then waits
 * for Redis alone, not for two thread hand-overs as well. 0; -1 when it
 * failed (its customers are back on the write-back list). */
int jd_engine_wb_write_now(struct jd_engine *e);
/* A write is on its way (handed over, not yet waited for). */
int jd_engine_wb_busy(const struct jd_engine *e);
/* Holds the oldest checkpoint of c's partition for c's triggers (no later
 * than the batch that gave them: checkpoints are stored in order) until
 * they are produced into it; c->held says so, and lets its store write
 * skip the outbox index for what a replay re-sends (store_timers.c). */
void jd_engine_hold(struct jd_engine *e, struct jd_customer *c);
/* Produces c's triggers into the checkpoint held for it (jd_engine_hold)
 * and releases the hold; 0 when c holds none. */
int jd_engine_produce_held(struct jd_engine *e, struct jd_customer *c);
/* Forgets the holds of a partition being released (its checkpoints go). */
void jd_engine_holds_drop(struct jd_engine *e, int32_t source);
/* Waits for the write-back on its way, if any, and records it: produces
 * its customers' outbox, seals the checkpoints it covers. 0; -1 when it
 * failed (its customers are back on the write-back list). */
int jd_engine_wb_wait(struct jd_engine *e);
/* Gives back the write-back's buffers (none on its way). */
void jd_engine_wb_trim(struct jd_engine *e);

/* engine_load.c — the next batch's customers loaded ahead (see the comment
 * atop the file) */
/* Starts the loader thread and its connection (not on a Redis Cluster, nor
 * in naive mode: e->loader stays NULL). 0, or -1 with errstr. */
int jd_engine_loader_start(struct jd_engine *e, char *errstr, size_t errsize);
void jd_engine_loader_destroy(struct jd_engine *e);
/* Frees the loader's buffers while it has no load on its way (engine_mem.c). */
void jd_engine_loader_trim(struct jd_engine *e);

/* engine_decode.c: the batch taken ahead decoded on a thread of its own.
 * Started only with the loader (e->decoder stays NULL otherwise). */
int jd_engine_decoder_start(struct jd_engine *e, char *errstr, size_t errsize);
void jd_engine_decoder_destroy(struct jd_engine *e);
/* Hands e->msgs[0..nmsgs) to the decoder (none on its way). */
void jd_engine_decoder_submit(struct jd_engine *e);
/* The decoder has e->msgs, as they are, in hand. */
int jd_engine_decoder_covers(const struct jd_engine *e);
/* msgs[i] decoded (when jd_engine_decoder_covers), in order of i: taken
 * from the decoder, or decoded here when the decoder has not claimed it;
 * like jd_codec_decode. ev's strings stay valid until the next submit. */
enum jd_decode_status jd_engine_decode_at(struct jd_engine *e, size_t i, struct jd_event *ev,
                                          char *errstr, size_t errsize);
/* Ends the decoder's part (what it has not claimed, it leaves) and waits
 * for it: before e->msgs are destroyed or moved. */
void jd_engine_decoder_finish(struct jd_engine *e);
/* Frees the decoder's buffers while idle (engine_mem.c). */
void jd_engine_decoder_trim(struct jd_engine *e);
/* Hands e->load[0..nload) to the loader thread (e->loader set, none on its
 * way); e->load is empty after. */
void jd_engine_loader_submit(struct jd_engine *e);
/* Waits for the load on its way. 0: done, its customers are back in
 * e->load[0..nload); -1: it failed, e->load holds them unloaded; 1: none
 * was on its way (e->load untouched). */
int jd_engine_loader_wait(struct jd_engine *e);
/* engine_batch.c: step 1 of a batch (looks up its customers, lists the new
 * ones in e->load). */
void jd_engine_batch_prepare(struct jd_engine *e);
/* Waits for the load of a batch taken ahead, if any: before anything may
 * drop or write its customers (shutdown, a revocation). The batch stays in
 * hand; what did not load is loaded when it is processed. */
void jd_engine_settle_ahead(struct jd_engine *e);

/* engine_timers.c — timers (docs/time.md) */
struct jd_timers *jd_engine_timers_new(void);
void jd_engine_timers_destroy(struct jd_timers *t);
/* The partition's timer clock: wall time, or under the event clock its
 * watermark minus processing.allowed_lateness (-1 before any event). A
 * customer's timer (c->next_timer) fires when it reaches it. */
int64_t jd_engine_clock(const struct jd_engine *e, const struct jd_part *p);
/* The clock deferred outbox entries are released by: wall time, or the
 * partition's watermark (-1 before any event). */
int64_t jd_engine_send_clock(const struct jd_engine *e, const struct jd_part *p);
/* Fires c's timers that are due by p's clock, earliest first (before an
 * event of c is applied, and from the tick). Returns how many fired. */
int jd_engine_timers_fire(struct jd_engine *e, struct jd_part *p, struct jd_customer *c,
                          int64_t offset);
/* After an evaluation at `now`: c's next due time (rules, deferred outbox
 * entries) into c->next_timer; c is marked dirty when it changed. */
void jd_engine_timers_schedule(struct jd_engine *e, struct jd_part *p, struct jd_customer *c,
                               int64_t now);
/* A message of p at `offset` is being processed; now_ns: monotonic, read
 * once per batch (when its customers are ready). */
void jd_engine_timers_seen(struct jd_engine *e, struct jd_part *p, int64_t offset, int64_t now_ns);
/* p was just assigned: its outbox index is to be loaded. */
void jd_engine_timers_assigned(struct jd_engine *e, struct jd_part *p);
/* From the main loop: at most every processing.timer_tick, recovers newly
 * assigned partitions' outboxes, advances idle partitions' watermarks,
 * fires the due timers of every owned partition, persists and produces. */
void jd_engine_timers_tick(struct jd_engine *e);
/* 1 when every owned partition is caught up: everything the broker held
 * for it at its last fetch is processed (0: none owned). Local: reads the
 * high watermarks of the last fetches. */
int jd_engine_caught_up(struct jd_engine *e);

/* engine_clock.c — each partition's event clock in Redis (see the comment
 * atop the file); nothing is read or written under the wall clock */
/* p was just assigned: its watermark is to be read. */
void jd_engine_clock_assigned(struct jd_engine *e, struct jd_part *p);
/* Reads the watermarks of the assigned partitions that still want theirs
 * and whose log end a fetch told, or (retry: a batch) that have events in
 * the batch, in one round trip. retry: while Redis fails, with backoff,
 * until it works (0) or stopping or fenced (-1); else (the timer tick) one
 * attempt (0, or -1 after jd_engine_redis_failed). */
int jd_engine_clock_restore(struct jd_engine *e, int retry);
/* Writes each partition's watermark as of its newest checkpoint about to
 * be sealed (marked_only: those marked by a write-back round; else every
 * closed one), on st, once everything those checkpoints cover is written.
 * The same retry as above. */
int jd_engine_clock_save(struct jd_engine *e, struct jd_store *st, int marked_only, int retry);
/* From the timer tick: the watermarks that processing.idle_advance moved
 * (by a second or more since last written), of partitions whose every
 * processed event is written, as of their position. One attempt on the
 * engine's connection; a failure is logged (-1), nothing else. */
int jd_engine_clock_save_idle(struct jd_engine *e);

/* engine_out.c */
struct jd_part *jd_engine_part(struct jd_engine *e, const char *topic, int32_t partition,
                               int create);
struct jd_part *jd_engine_part_by_source(struct jd_engine *e, int32_t source);
struct jd_ckpt *jd_engine_ckpt_open(struct jd_part *p);
/* The batch is over for p: its checkpoint ends at next_offset. */
void jd_engine_ckpt_close(struct jd_part *p, int64_t next_offset);
/* Everything closed so far is written back: seal and store what can be. */
void jd_engine_ckpt_seal_closed(struct jd_engine *e);
/* Marks the checkpoints closed so far (sealing), and later seals the
 * marked ones: those a write-back on its way covers (engine_wb.c). */
void jd_engine_ckpt_mark_closed(struct jd_engine *e);
void jd_engine_ckpt_seal_marked(struct jd_engine *e);
void jd_engine_ckpt_advance(struct jd_engine *e, struct jd_part *p);
void jd_engine_produce_dlq(struct jd_engine *e, const rd_kafka_message_t *m, const char *why);
void jd_engine_produce_pending(struct jd_engine *e, struct jd_customer *c, struct jd_ckpt *ck);
void jd_engine_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);
/* Applies queued delivery acknowledgements to the cached customers (their
 * outbox entries go, to be removed from Redis at the next flush). */
void jd_engine_apply_acks(struct jd_engine *e);
/* Adds c to the list of customers to write back (once). */
void jd_engine_push_dirty(struct jd_engine *e, struct jd_customer *c);
void jd_engine_queue_write(struct jd_engine *e, struct jd_customer *c);
/* Removes from the write-back list the customers whose partition is in parts. */
void jd_engine_forget_dirty(struct jd_engine *e, const rd_kafka_topic_partition_list_t *parts);
/* Waits (serving delivery reports) until nothing is in flight or timeout. */
int jd_engine_drain_producer(struct jd_engine *e, int timeout_ms);
void jd_engine_part_free(struct jd_part *p);

/* engine_rebalance.c */
void jd_engine_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque);
int jd_engine_topic_index(const struct jd_engine *e, const char *topic);

#endif
