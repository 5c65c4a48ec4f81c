/*
 * kafka — builds the consumer and producer handles. Defaults chosen here are
 * the ones journeyd's guarantees rely on (manual offset store, idempotence);
 * anything else comes from kafka.properties, passed through untouched.
 */
#include "journeyd/kafka.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/log.h"
#include "journeyd/util.h"

static int set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
               size_t errsize)
{
    if (rd_kafka_conf_set(conf, name, value, errstr, errsize) != RD_KAFKA_CONF_OK)
        return -1;
    return 0;
}

/* The user's properties go last: they override our defaults. A property that
 * only applies to the other client type is skipped with a debug line, since
 * one list serves both handles. */
static int apply_user_props(rd_kafka_conf_t *conf, const struct jd_config *cfg, int consumer,
                            char *errstr, size_t errsize)
{
    for (size_t i = 0; i < cfg->nkafka_props; i++) {
        const char *k = cfg->kafka_props[2 * i], *v = cfg->kafka_props[2 * i + 1];
        char e[256];
        rd_kafka_conf_res_t r = rd_kafka_conf_set(conf, k, v, e, sizeof e);
        if (r == RD_KAFKA_CONF_OK)
            continue;
        if (r == RD_KAFKA_CONF_INVALID) {
            snprintf(errstr, errsize, "kafka.properties %s=%s: %s", k, v, e);
            return -1;
        }
        snprintf(errstr, errsize, "kafka.properties %s: %s", k, e);
        return -1;
    }
    (void)consumer;
    return 0;
}

rd_kafka_t *jd_kafka_consumer_new(const struct jd_config *cfg, const char *instance_id,
                                  jd_rebalance_fn *rebalance, jd_stats_fn *stats, void *opaque,
                                  char *errstr, size_t errsize)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    char num[32];

    if (set(conf, "bootstrap.servers", cfg->brokers, errstr, errsize) ||
        set(conf, "group.id", cfg->group_id, errstr, errsize) ||
        set(conf, "partition.assignment.strategy", "cooperative-sticky", errstr, errsize) ||
        /* an offset is stored only once its state is persisted and its
         * triggers acknowledged (engine_out.c); librdkafka commits what is
         * stored */
        set(conf, "enable.auto.offset.store", "false", errstr, errsize) ||
        set(conf, "enable.auto.commit", "true", errstr, errsize) ||
        set(conf, "auto.commit.interval.ms", "1000", errstr, errsize) ||
        set(conf, "auto.offset.reset", "earliest", errstr, errsize) ||
        set(conf, "enable.partition.eof", "false", errstr, errsize) ||
        set(conf, "fetch.wait.max.ms", "10", errstr, errsize) ||
        set(conf, "socket.nagle.disable", "true", errstr, errsize) || /* (jd_kafka_producer_new) */
        set(conf, "client.id", "journeyd", errstr, errsize))
        goto err;
    snprintf(num, sizeof num, "%d", cfg->session_timeout_ms);
    if (set(conf, "session.timeout.ms", num, errstr, errsize))
        goto err;
    if (instance_id && *instance_id && set(conf, "group.instance.id", instance_id, errstr, errsize))
        goto err;
    if (apply_user_props(conf, cfg, 1, errstr, errsize))
        goto err;

    rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance);
    if (stats)
        rd_kafka_conf_set_stats_cb(conf, stats);

    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errsize);
    if (!rk)
        goto err;
    conf = NULL; /* now owned by rk */
    rd_kafka_poll_set_consumer(rk);

    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new((int)cfg->ninput_topics);
    for (size_t i = 0; i < cfg->ninput_topics; i++)
        rd_kafka_topic_partition_list_add(topics, cfg->input_topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        snprintf(errstr, errsize, "subscribe: %s", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;

err:
    if (conf)
        rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_t *jd_kafka_producer_new(const struct jd_config *cfg, jd_delivery_fn *delivery,
                                  void *opaque, char *errstr, size_t errsize)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;

    if (set(conf, "bootstrap.servers", cfg->brokers, errstr, errsize) ||
        set(conf, "enable.idempotence", "true", errstr, errsize) ||
        /* a trigger leaves at once: librdkafka still batches what is
         * produced while earlier requests are in flight, so under load
         * batches form anyway; triggers are sparse (a few % of events), so
         * a linger is mostly waited in full by each (docs/performance.md) */
        set(conf, "linger.ms", "0", errstr, errsize) ||
        /* TCP_NODELAY: with Nagle, a small request written while an
         * earlier one is unacknowledged waits for that ACK, which the
         * other side may delay by up to 40 ms (docs/performance.md,
         * "Twelfth pass") */
        set(conf, "socket.nagle.disable", "true", errstr, errsize) ||
        set(conf, "client.id", "journeyd", errstr, errsize))
        goto err;
    if (apply_user_props(conf, cfg, 0, errstr, errsize))
        goto err;
    rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_conf_set_dr_msg_cb(conf, delivery);

    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errsize);
    if (!rk)
        goto err;
    return rk; /* conf owned by rk */

err:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

struct jd_ack_wake {
    rd_kafka_queue_t *reports; /* the producer's main queue: delivery reports */
    rd_kafka_queue_t *consumer;
};

/* (on a librdkafka thread, with the report queue's lock held) */
static void on_report(rd_kafka_t *rk, void *opaque)
{
    struct jd_ack_wake *w = opaque;
    (void)rk;
    rd_kafka_queue_yield(w->consumer);
}

struct jd_ack_wake *jd_kafka_ack_wake_start(rd_kafka_t *producer, rd_kafka_t *consumer)
{
    struct jd_ack_wake *w = jd_xcalloc(1, sizeof *w);
    w->reports = rd_kafka_queue_get_main(producer);
    w->consumer = rd_kafka_queue_get_consumer(consumer);
    if (!w->reports || !w->consumer) {
        jd_kafka_ack_wake_stop(w);
        return NULL;
    }
    rd_kafka_queue_cb_event_enable(w->reports, on_report, w);
    return w;
}

void jd_kafka_ack_wake_stop(struct jd_ack_wake *w)
{
    if (!w)
        return;
    if (w->reports) {
        /* (takes the queue's lock: no callback runs past this) */
        rd_kafka_queue_cb_event_enable(w->reports, NULL, NULL);
        rd_kafka_queue_destroy(w->reports);
    }
    if (w->consumer)
        rd_kafka_queue_destroy(w->consumer);
    free(w);
}
