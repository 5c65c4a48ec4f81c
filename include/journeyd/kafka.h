/*
 * kafka — librdkafka handles built from the config: the group consumer
 * (cooperative-sticky, manual offset store, static membership when
 * configured) and the idempotent trigger/DLQ producer. Properties from
 * kafka.properties are applied last and untouched, so they win.
 */
#ifndef JOURNEYD_KAFKA_H
#define JOURNEYD_KAFKA_H

#include <librdkafka/rdkafka.h>

#include "journeyd/config.h"

typedef void(jd_rebalance_fn)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t *parts, void *opaque);
typedef void(jd_delivery_fn)(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);
typedef int(jd_stats_fn)(rd_kafka_t *rk, char *json, size_t len, void *opaque);

/* A subscribed group consumer; `instance_id` (group.instance.id) NULL or
 * empty: dynamic membership. NULL with errstr on failure. */
rd_kafka_t *jd_kafka_consumer_new(const struct jd_config *cfg, const char *instance_id,
                                  jd_rebalance_fn *rebalance, jd_stats_fn *stats, void *opaque,
                                  char *errstr, size_t errsize);

/* The producer for triggers and dead letters. NULL with errstr on failure. */
rd_kafka_t *jd_kafka_producer_new(const struct jd_config *cfg, jd_delivery_fn *delivery,
                                  void *opaque, char *errstr, size_t errsize);

/* Delivery reports wake the consumer's poll. The producer's reports are
 * served between the consumer's polls (rd_kafka_poll on the engine's
 * thread), and a poll waiting for messages held them until a message came:
 * at 10,000 events/s a trigger's acknowledgement was served 2-10 ms after
 * it arrived, and up to the 100 ms idle poll after the last events. Once
 * started, the producer's report queue going from empty to not empty
 * cancels the consumer's current (or next) wait, which then returns NULL.
 * Stop it before the consumer is closed or either handle destroyed. */
struct jd_ack_wake;
struct jd_ack_wake *jd_kafka_ack_wake_start(rd_kafka_t *producer, rd_kafka_t *consumer);
void jd_kafka_ack_wake_stop(struct jd_ack_wake *w); /* NULL: nothing */

#endif
