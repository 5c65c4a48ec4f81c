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

#endif
