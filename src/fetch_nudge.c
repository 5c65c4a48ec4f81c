/*
 * fetch_nudge — wakes librdkafka's fetcher when the consumer's queue runs
 * low after it was full.
 *
 * Why: librdkafka (2.0.2, Debian 12) stops fetching a partition while the
 * consumer's queue holds queued.min.messages messages or
 * queued.max.messages.kbytes (with the high-level consumer every partition
 * counts the one shared queue), and decides again only when its broker
 * thread wakes up: on a response, on any request to that broker, or about
 * once a second. journeyd drains a backlog faster than that: the queue of
 * 100,000 messages was empty after ~0.7 s and stayed empty until the next
 * wake-up, every second (bench/run.sh: 130,000 events/s with the stalls;
 * 175,000-190,000 without). librdkafka 2.1 added fetch.queue.backoff.ms
 * for this; 2.0.2 has no setting for it.
 *
 * What: a thread looks at the queue's length every 5 ms. Once it has seen
 * the queue full (90 % of the smaller of the two thresholds, the byte one
 * counted in messages of the average size consumed), it waits for the
 * queue to fall to a third of that and then asks the leaders of the
 * assigned partitions for their end offsets (one ListOffsets request per
 * leader, rd_kafka_offsets_for_times): the request wakes each broker
 * thread, which finds the queue below its threshold and fetches again
 * while two thirds of the queue are still to be consumed. A caught-up
 * consumer never fills its queue, so it is never nudged.
 */
#include "journeyd/fetch_nudge.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journeyd/log.h"

#define MOD "kafka"
#define TICK_NS (5 * 1000000L)
#define REQUEST_TIMEOUT_MS 1000

struct jd_fetch_nudge {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int quit;
    size_t min_msgs;   /* queued.min.messages */
    size_t max_kbytes; /* queued.max.messages.kbytes */
    size_t avg;        /* average message size (atomic) */
    uint64_t sent;     /* (atomic) */
};

static size_t conf_num(rd_kafka_t *rk, const char *name, size_t dflt)
{
    char v[64];
    size_t n = sizeof v;
    if (rd_kafka_conf_get(rd_kafka_conf(rk), name, v, &n) != RD_KAFKA_CONF_OK)
        return dflt;
    long long x = atoll(v);
    return x > 0 ? (size_t)x : dflt;
}

/* Queue length at which the fetcher has stopped. */
static size_t full_at(const struct jd_fetch_nudge *n)
{
    size_t full = n->min_msgs;
    size_t avg = __atomic_load_n(&n->avg, __ATOMIC_RELAXED);
    if (avg > 0 && n->max_kbytes * 1024 / avg < full)
        full = n->max_kbytes * 1024 / avg;
    return full - full / 10;
}

static void nudge(struct jd_fetch_nudge *n)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(n->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || !parts)
        return;
    if (parts->cnt > 0) {
        for (int i = 0; i < parts->cnt; i++)
            parts->elems[i].offset = -1; /* the end offset: answered at once */
        rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(n->rk, parts, REQUEST_TIMEOUT_MS);
        if (err)
            jd_debug(MOD, "fetch nudge: %s", rd_kafka_err2str(err));
        __atomic_add_fetch(&n->sent, 1, __ATOMIC_RELAXED);
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

static void *nudge_main(void *arg)
{
    struct jd_fetch_nudge *n = arg;
    pthread_setname_np(pthread_self(), "jd-fetchnudge");
    int armed = 0;
    pthread_mutex_lock(&n->mu);
    while (!n->quit) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts); /* (the condition's clock) */
        ts.tv_nsec += TICK_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&n->cv, &n->mu, &ts);
        if (n->quit)
            break;
        pthread_mutex_unlock(&n->mu);
        size_t len = rd_kafka_queue_length(n->q), full = full_at(n);
        if (len >= full)
            armed = 1;
        else if (armed && len <= full / 3) {
            armed = 0; /* again once the fetcher has filled the queue */
            nudge(n);
        }
        pthread_mutex_lock(&n->mu);
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

struct jd_fetch_nudge *jd_fetch_nudge_start(rd_kafka_t *consumer)
{
    struct jd_fetch_nudge *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->rk = consumer;
    n->q = rd_kafka_queue_get_consumer(consumer);
    n->min_msgs = conf_num(consumer, "queued.min.messages", 100000);
    n->max_kbytes = conf_num(consumer, "queued.max.messages.kbytes", 65536);
    pthread_mutex_init(&n->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* a clock step does not stall it */
    pthread_cond_init(&n->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!n->q || pthread_create(&n->thread, NULL, nudge_main, n) != 0) {
        jd_warn(MOD, "fetch nudge thread not started: a backlog drains slower");
        if (n->q)
            rd_kafka_queue_destroy(n->q);
        pthread_mutex_destroy(&n->mu);
        pthread_cond_destroy(&n->cv);
        free(n);
        return NULL;
    }
    return n;
}

void jd_fetch_nudge_msg_size(struct jd_fetch_nudge *n, size_t avg)
{
    if (n)
        __atomic_store_n(&n->avg, avg, __ATOMIC_RELAXED);
}

uint64_t jd_fetch_nudge_count(const struct jd_fetch_nudge *n)
{
    return n ? __atomic_load_n(&n->sent, __ATOMIC_RELAXED) : 0;
}

void jd_fetch_nudge_stop(struct jd_fetch_nudge *n)
{
    if (!n)
        return;
    pthread_mutex_lock(&n->mu);
    n->quit = 1;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    pthread_join(n->thread, NULL);
    rd_kafka_queue_destroy(n->q);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
    free(n);
}
