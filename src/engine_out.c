/*
 * engine_out — everything that leaves the engine for Kafka: triggers from
 * customers' outboxes, dead letters, and the partition checkpoints that turn
 * delivery reports into stored offsets. An offset is stored only when the
 * state up to it is persisted and every message produced because of the
 * events before it has been acknowledged (SPEC §3).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "journeyd/log.h"

#define MOD "output"

struct jd_part *jd_engine_part(struct jd_engine *e, const char *topic, int32_t partition,
                               int create)
{
    int ti = jd_engine_topic_index(e, topic);
    if (ti < 0 || partition < 0 || partition > 0xffff)
        return NULL;
    if (partition >= e->nparts[ti]) {
        if (!create)
            return NULL;
        int32_t n = e->nparts[ti] ? e->nparts[ti] : 16;
        while (n <= partition)
            n *= 2;
        e->parts[ti] = jd_xrealloc(e->parts[ti], (size_t)n * sizeof *e->parts[ti]);
        memset(e->parts[ti] + e->nparts[ti], 0, (size_t)(n - e->nparts[ti]) * sizeof *e->parts[ti]);
        e->nparts[ti] = n;
    }
    struct jd_part *p = &e->parts[ti][partition];
    if (create && !p->topic) {
        p->topic = e->cfg->input_topics[ti];
        p->partition = partition;
        p->source = (ti << 16) | partition;
        p->stored_offset = -1;
    }
    return p->topic ? p : NULL;
}

struct jd_part *jd_engine_part_by_source(struct jd_engine *e, int32_t source)
{
    int32_t ti = source >> 16, partition = source & 0xffff;
    if (ti < 0 || (size_t)ti >= e->cfg->ninput_topics || partition >= e->nparts[ti])
        return NULL;
    struct jd_part *p = &e->parts[ti][partition];
    return p->topic ? p : NULL;
}

struct jd_ckpt *jd_engine_ckpt_open(struct jd_part *p)
{
    if (!p->open) {
        struct jd_ckpt *ck = jd_xcalloc(1, sizeof *ck);
        if (p->tail)
            p->tail->next = ck;
        else
            p->head = ck;
        p->tail = ck;
        p->open = ck;
    }
    return p->open;
}

void jd_engine_ckpt_close(struct jd_part *p, int64_t next_offset)
{
    struct jd_ckpt *ck = jd_engine_ckpt_open(p);
    ck->next_offset = next_offset;
    ck->wm = p->watermark;
    ck->closed = 1;
    p->open = NULL;
}

void jd_engine_ckpt_seal_closed(struct jd_engine *e)
{
    jd_engine_ckpt_mark_closed(e);
    jd_engine_ckpt_seal_marked(e);
}

void jd_engine_ckpt_mark_closed(struct jd_engine *e)
{
    e->closed_unmarked = 0;
    for (size_t t = 0; t < e->cfg->ninput_topics; t++)
        for (int32_t i = 0; i < e->nparts[t]; i++)
            for (struct jd_ckpt *ck = e->parts[t][i].head; ck; ck = ck->next)
                if (ck->closed)
                    ck->sealing = 1;
}

void jd_engine_ckpt_seal_marked(struct jd_engine *e)
{
    for (size_t t = 0; t < e->cfg->ninput_topics; t++) {
        for (int32_t i = 0; i < e->nparts[t]; i++) {
            struct jd_part *p = &e->parts[t][i];
            if (!p->head)
                continue;
            for (struct jd_ckpt *ck = p->head; ck; ck = ck->next)
                if (ck->sealing && !ck->sealed) {
                    ck->sealed = 1; /* every event of its batch is persisted */
                    if (e->metrics && ck->events)
                        jd_metrics_observe_n(e->metrics, JD_H_EVENT_PROCESSING,
                                             (double)(jd_monotonic_ns() - ck->taken_ns) / 1e9,
                                             ck->events);
                }
            jd_engine_ckpt_advance(e, p);
        }
    }
}

void jd_engine_ckpt_advance(struct jd_engine *e, struct jd_part *p)
{
    int64_t store = -1;
    while (p->head && p->head->sealed && p->head->outstanding == 0) {
        struct jd_ckpt *ck = p->head;
        store = ck->next_offset;
        p->head = ck->next;
        if (!p->head)
            p->tail = NULL;
        free(ck);
    }
    if (store < 0 || !p->assigned || store <= p->stored_offset)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = store;
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(e->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        jd_warn(MOD, "storing offset %s/%" PRId32 "@%" PRId64 ": %s", p->topic, p->partition, store,
                rd_kafka_err2str(err));
    else {
        p->stored_offset = store;
        e->offsets_stored = 1;
    }
}

void jd_engine_part_free(struct jd_part *p)
{
    p->gen++;
    while (p->head) {
        struct jd_ckpt *ck = p->head;
        p->head = ck->next;
        free(ck);
    }
    p->tail = p->open = NULL;
}

static struct jd_inflight *inflight_new(struct jd_engine *e, struct jd_ckpt *ck, int32_t source,
                                        const char *cid, int is_trigger, const char *tid,
                                        int64_t src_ts)
{
    size_t n = cid ? strlen(cid) : 0;
    struct jd_inflight *f = jd_xmalloc(sizeof *f + n + 1);
    f->ckpt = ck;
    f->source = source;
    struct jd_part *p = jd_engine_part_by_source(e, source);
    f->gen = p ? p->gen : 0;
    f->is_trigger = is_trigger;
    f->src_ts = src_ts;
    if (tid)
        memcpy(f->trigger_id, tid, 33);
    else
        f->trigger_id[0] = '\0';
    memcpy(f->customer_id, cid ? cid : "", n + 1);
    if (ck)
        ck->outstanding++;
    return f;
}

/* Produces, waiting while the local queue is full: a full queue means the
 * brokers are behind, and waiting here is the back-pressure. Gives up only
 * when stopping or on a fatal producer error: the message's checkpoint then
 * never completes, so its offset is never stored and the event (or the
 * outbox entry, persisted in Redis) is produced again after the restart.
 * Returns 0 when the producer took the message. */
static int produce(struct jd_engine *e, const char *topic, const void *key, size_t keylen,
                   const void *val, size_t vallen, rd_kafka_headers_t *hdrs, struct jd_inflight *f)
{
    for (;;) {
        rd_kafka_headers_t *h = hdrs ? rd_kafka_headers_copy(hdrs) : NULL;
        rd_kafka_resp_err_t err;
        if (h)
            err = rd_kafka_producev(
                e->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, keylen),
                RD_KAFKA_V_VALUE((void *)val, vallen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(f), RD_KAFKA_V_END);
        else
            err = rd_kafka_producev(
                e->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, keylen),
                RD_KAFKA_V_VALUE((void *)val, vallen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_OPAQUE(f), RD_KAFKA_V_END);
        if (!err) {
            e->inflight++;
            return 0;
        }
        if (h)
            rd_kafka_headers_destroy(h);
        char fstr[256];
        if (rd_kafka_fatal_error(e->producer, fstr, sizeof fstr)) {
            jd_error(MOD, "fatal producer error: %s", fstr);
            e->fatal = 1;
        }
        if (e->fatal || (e->stop && *e->stop)) {
            free(f); /* its checkpoint stays blocked: nothing is committed past it */
            return -1;
        }
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            jd_error(MOD, "producing to %s: %s; retrying", topic, rd_kafka_err2str(err));
            if (e->metrics)
                jd_metrics_add(e->metrics, JD_C_KAFKA_ERRORS, 1);
        }
        /* delivery reports served here only queue acknowledgements
         * (jd_engine_delivery): no customer changes under our feet */
        rd_kafka_poll(e->producer, 100);
    }
}

void jd_engine_produce_dlq(struct jd_engine *e, const rd_kafka_message_t *m, const char *why)
{
    char source[512];
    snprintf(source, sizeof source, "%s/%" PRId32 "/%" PRId64, rd_kafka_topic_name(m->rkt),
             m->partition, m->offset);
    struct jd_part *p = jd_engine_part(e, rd_kafka_topic_name(m->rkt), m->partition, 0);
    struct jd_ckpt *ck = p ? jd_engine_ckpt_open(p) : NULL;
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    rd_kafka_header_add(h, "journeyd.error", -1, why, -1);
    rd_kafka_header_add(h, "journeyd.source", -1, source, -1);
    struct jd_inflight *f = inflight_new(e, ck, p ? p->source : -1, NULL, 0, NULL, 0);
    jd_warn(MOD, "dead letter %s: %s", source, why);
    produce(e, e->cfg->dead_letter_topic, m->key, m->key_len, m->payload, m->len, h, f);
    rd_kafka_headers_destroy(h);
    if (e->metrics)
        jd_metrics_add(e->metrics, JD_C_DLQ, 1);
}

void jd_engine_produce_pending(struct jd_engine *e, struct jd_customer *c, struct jd_ckpt *ck)
{
    int64_t clock = INT64_MIN; /* computed when an entry is deferred */
    for (size_t i = 0; i < c->npending; i++) {
        struct jd_pending_trigger *pt = &c->pending[i];
        if (pt->produced || !pt->stored)
            continue; /* (not stored: its write is still to come) */
        if (pt->not_before > 0) {
            /* deferred (quiet hours): produced when the customer's timer,
             * which includes not_before, fires (engine_timers.c) */
            if (clock == INT64_MIN) {
                struct jd_part *p = jd_engine_part_by_source(e, c->partition);
                clock = p ? jd_engine_send_clock(e, p) : -1;
            }
            if (pt->not_before > clock)
                continue;
        }
        const char *topic = pt->topic && *pt->topic ? pt->topic : e->cfg->topics[pt->kind];
        struct jd_inflight *f =
            inflight_new(e, ck, c->partition, c->id, 1, pt->trigger_id, pt->src_ts);
        if (produce(e, topic, c->id, c->id_len, pt->value.data, pt->value.len, NULL, f) == 0)
            pt->produced = 1;
    }
}

void jd_engine_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    struct jd_engine *e = opaque;
    struct jd_inflight *f = msg->_private;
    (void)rk;
    if (msg->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
        msg->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
        /* purged at shutdown (jd_engine_destroy): its checkpoint never
         * completed, so nothing was committed past it */
        e->inflight--;
        free(f);
        return;
    }
    if (msg->err) {
        /* The idempotent producer retried until message.timeout.ms: the
         * broker has been unreachable for that long. Produce again with the
         * same opaque; the checkpoint keeps waiting, so no offset moves. */
        jd_error(MOD, "delivery to %s failed: %s; producing again", rd_kafka_topic_name(msg->rkt),
                 rd_kafka_err2str(msg->err));
        if (e->metrics)
            jd_metrics_add(e->metrics, JD_C_KAFKA_ERRORS, 1);
        rd_kafka_headers_t *h = NULL;
        rd_kafka_message_headers(msg, &h);
        e->inflight--;
        produce(e, rd_kafka_topic_name(msg->rkt), msg->key, msg->key_len, msg->payload, msg->len, h,
                f);
        return;
    }
    e->inflight--;
    if (f->is_trigger && e->metrics && f->src_ts > 0) {
        int64_t lat = jd_now_ms() - f->src_ts;
        jd_metrics_observe(e->metrics, JD_H_EVENT_TO_TRIGGER, lat < 0 ? 0 : lat / 1000.0);
    }
    struct jd_part *p = f->ckpt ? jd_engine_part_by_source(e, f->source) : NULL;
    if (p && p->gen == f->gen) {
        f->ckpt->outstanding--;
        jd_engine_ckpt_advance(e, p);
    }
    if (!f->is_trigger) {
        free(f);
        return;
    }
    /* The customer learns of the acknowledgement at a safe point
     * (jd_engine_apply_acks): this callback runs inside rd_kafka_poll, which
     * produce() calls while a customer's outbox is being walked. */
    if (e->nacks == e->capacks) {
        e->capacks = e->capacks ? e->capacks * 2 : 256;
        e->acks = jd_xrealloc(e->acks, e->capacks * sizeof *e->acks);
    }
    e->acks[e->nacks++] = f;
}

void jd_engine_apply_acks(struct jd_engine *e)
{
    for (size_t i = 0; i < e->nacks; i++) {
        struct jd_inflight *f = e->acks[i];
        /* An acknowledgement from an earlier ownership of the partition is
         * dropped: the customer was dropped with the partition and its
         * outbox, reloaded, is produced again (same ids) by this one. It
         * must not touch a customer reloaded since, which may still be the
         * loader's (engine_load.c). */
        struct jd_part *p = jd_engine_part_by_source(e, f->source);
        if (!p || p->gen != f->gen) {
            free(f);
            continue;
        }
        struct jd_customer *c = jd_cache_get(e->cache, f->customer_id, strlen(f->customer_id));
        if (c && jd_customer_ack(c, f->trigger_id) == 0)
            jd_engine_queue_write(e, c); /* the HDEL only, not the state */
        free(f);
    }
    e->nacks = 0;
}

int jd_engine_drain_producer(struct jd_engine *e, int timeout_ms)
{
    int64_t deadline = jd_monotonic_ns() + (int64_t)timeout_ms * 1000000;
    while (e->inflight > 0) {
        if (jd_monotonic_ns() > deadline)
            return -1;
        rd_kafka_poll(e->producer, 50);
    }
    return 0;
}
