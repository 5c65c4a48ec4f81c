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
#include "journeyd/engine.h"
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
    int sealed; /* the batch that opened it is persisted: no more produces join */
    struct jd_ckpt *next;
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
    struct jd_config *reload_cfg; /* the config the reloaded rules point into */
    struct jd_ruleset *rs;
    struct jd_ruleset *next_rs; /* during a reload */
    struct jd_metrics *metrics;
    struct jd_codec *codec;
    struct jd_store *store;
    struct jd_cache *cache;
    struct jd_policy *policy;
    rd_kafka_t *consumer;
    rd_kafka_t *producer;

    /* owned partitions: parts[topic index][partition] */
    struct jd_part **parts;
    int32_t *nparts; /* per topic: allocated length */
    int32_t assigned_count;

    /* the batch being collected */
    rd_kafka_message_t **msgs;
    size_t nmsgs;
    size_t maxmsgs;

    /* scratch, reused across batches */
    struct jd_customer **load;
    size_t nload, capload;
    struct jd_customer **dirty;
    size_t ndirty, capdirty;
    struct jd_buf tmp;
    struct jd_buf history;

    uint64_t inflight; /* produced, not yet acknowledged */
    int redis_ok;
    int backpressured;
    int abandoned; /* a batch was given up while stopping: never flush again */
    int64_t backoff_ms;
    int notified_ready;       /* READY=1 sent to systemd */
    int64_t last_watchdog_ns; /* last WATCHDOG=1 */
    volatile sig_atomic_t *stop;
    volatile sig_atomic_t *reload;
};

/* engine_batch.c */
void jd_engine_process_batch(struct jd_engine *e);
/* Writes back the dirty customers (retrying while Redis fails, unless
 * stopping) and produces their new outbox entries. 0, or -1 when stopping
 * left them unwritten. */
int jd_engine_persist(struct jd_engine *e, volatile sig_atomic_t *stop);

/* engine_out.c */
struct jd_part *jd_engine_part(struct jd_engine *e, const char *topic, int32_t partition,
                               int create);
struct jd_part *jd_engine_part_by_source(struct jd_engine *e, int32_t source);
struct jd_ckpt *jd_engine_ckpt_open(struct jd_part *p);
void jd_engine_ckpt_seal(struct jd_engine *e, struct jd_part *p, int64_t next_offset);
void jd_engine_ckpt_advance(struct jd_engine *e, struct jd_part *p);
void jd_engine_produce_dlq(struct jd_engine *e, const rd_kafka_message_t *m, const char *why);
void jd_engine_produce_pending(struct jd_engine *e, struct jd_customer *c, struct jd_ckpt *ck);
void jd_engine_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);
/* Waits (serving delivery reports) until nothing is in flight or timeout. */
int jd_engine_drain_producer(struct jd_engine *e, int timeout_ms);
void jd_engine_part_free(struct jd_part *p);

/* engine_rebalance.c */
void jd_engine_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque);
int jd_engine_topic_index(const struct jd_engine *e, const char *topic);

#endif
