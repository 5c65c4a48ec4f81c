/*
 * engine_rebalance — partitions coming and going (cooperative-sticky).
 * Revoked partitions are finished before they are released: the batch in
 * hand is processed, their customers persisted, every trigger acknowledged,
 * their offsets stored and committed; then their cache is dropped. Lost
 * partitions (session timed out) are dropped without committing: another
 * member already owns them.
 */
#include <inttypes.h>
#include <string.h>

#include "engine_int.h"
#include "journeyd/log.h"

#define MOD "rebalance"

int jd_engine_topic_index(const struct jd_engine *e, const char *topic)
{
    for (size_t i = 0; i < e->cfg->ninput_topics; i++)
        if (strcmp(e->cfg->input_topics[i], topic) == 0)
            return (int)i;
    return -1;
}

/* The engine's count of owned partitions, and its process's (the cache's
 * share: engine_mem.c, jd_engine_cache_share). */
static void count_assigned(struct jd_engine *e, int delta)
{
    e->assigned_count += delta;
    if (e->peers && e->peers->assigned)
        atomic_fetch_add(e->peers->assigned, delta);
}

static void assigned(struct jd_engine *e, rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        struct jd_part *p = jd_engine_part(e, parts->elems[i].topic, parts->elems[i].partition, 1);
        if (!p)
            continue;
        if (!p->assigned)
            count_assigned(e, 1);
        p->assigned = 1;
        p->stored_offset = -1;
        p->watermark = 0;
        jd_engine_timers_assigned(e, p);
        jd_engine_clock_assigned(e, p);
        jd_info(MOD, "assigned %s/%" PRId32, p->topic, p->partition);
    }
    rd_kafka_error_t *err = rd_kafka_incremental_assign(e->consumer, parts);
    if (err) {
        jd_error(MOD, "incremental assign: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
    }
}

static int in_list(const rd_kafka_topic_partition_list_t *parts, const char *topic,
                   int32_t partition)
{
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition == partition && strcmp(parts->elems[i].topic, topic) == 0)
            return 1;
    return 0;
}

/* Customers of released partitions leave the dirty and urgent lists before
 * the cache frees them (acknowledgements served while draining put them
 * back on the first; a partition lost while a turn's urgent customers wait
 * for the write at its end, e.g. during the poll of the loads ahead, leaves
 * them on the second). */
void jd_engine_forget_dirty(struct jd_engine *e, const rd_kafka_topic_partition_list_t *parts)
{
    size_t nu = 0;
    for (size_t i = 0; i < e->nurgent; i++) {
        struct jd_part *p = jd_engine_part_by_source(e, e->urgent[i]->partition);
        if (p && in_list(parts, p->topic, p->partition))
            e->urgent[i]->urgent = 0;
        else
            e->urgent[nu++] = e->urgent[i];
    }
    e->nurgent = nu;
    size_t nd = 0;
    for (size_t i = 0; i < e->ndirty; i++) {
        struct jd_part *p = jd_engine_part_by_source(e, e->dirty[i]->partition);
        if (p && in_list(parts, p->topic, p->partition))
            e->dirty[i]->dirty = e->dirty[i]->queued = 0;
        else
            e->dirty[nd++] = e->dirty[i];
    }
    e->ndirty = nd;
}

static void released(struct jd_engine *e, rd_kafka_topic_partition_list_t *parts, int lost)
{
    /* a write-back, or a load ahead, on its way holds customers about to
     * be dropped */
    jd_engine_settle_ahead(e);
    (void)jd_engine_wb_wait(e);
    if (!lost && !e->abandoned) {
        /* finish what we hold for these partitions (and the others: the
         * batch is one unit), wait for the acknowledgements, and write them
         * back so that the next owner does not re-send delivered triggers */
        jd_engine_process_batch(e);
        if (!e->abandoned && jd_engine_persist(e, e->stop) != 0)
            e->abandoned = 1;
        if (jd_engine_drain_producer(e, 30000) != 0)
            jd_warn(MOD, "triggers still unacknowledged after 30 s; their offsets stay "
                         "uncommitted and the next owner re-sends them");
        if (!e->abandoned && jd_engine_persist(e, e->stop) != 0)
            e->abandoned = 1;
        rd_kafka_resp_err_t cerr = rd_kafka_commit(e->consumer, NULL, 0);
        if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
            jd_warn(MOD, "commit before release: %s", rd_kafka_err2str(cerr));
    } else if (lost) {
        /* the messages in hand from lost partitions belong to their new
         * owner now (it starts at the committed offset); those of the
         * partitions we keep stay in the batch */
        size_t keep = 0;
        for (size_t i = 0; i < e->nmsgs; i++) {
            rd_kafka_message_t *m = e->msgs[i];
            if (in_list(parts, rd_kafka_topic_name(m->rkt), m->partition))
                rd_kafka_message_destroy(m);
            else
                e->msgs[keep++] = m;
        }
        e->nmsgs = keep;
        jd_engine_drain_producer(e, 5000);
        jd_engine_apply_acks(e);
    }
    /* customers about to be dropped must leave the write-back list (after a
     * successful persist it holds none of them; after a failure or a loss
     * their state is not ours to write any more) */
    jd_engine_forget_dirty(e, parts);
    for (int i = 0; i < parts->cnt; i++) {
        struct jd_part *p = jd_engine_part(e, parts->elems[i].topic, parts->elems[i].partition, 0);
        if (!p)
            continue;
        if (p->assigned)
            count_assigned(e, -1);
        p->assigned = 0;
        jd_engine_holds_drop(e, p->source);
        jd_engine_part_free(p);
        jd_cache_drop_partition(e->cache, p->source);
        jd_info(MOD, "%s %s/%" PRId32, lost ? "lost" : "revoked", p->topic, p->partition);
    }
    if (e->metrics) /* (an engine left with none runs no more batches) */
        jd_metrics_gauge(e->metrics, JD_G_CACHED_CUSTOMERS, (int64_t)jd_cache_size(e->cache));
    rd_kafka_error_t *err = rd_kafka_incremental_unassign(e->consumer, parts);
    if (err) {
        jd_error(MOD, "incremental unassign: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
    }
}

void jd_engine_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct jd_engine *e = opaque;
    (void)rk;
    if (e->metrics)
        jd_metrics_add(e->metrics, JD_C_REBALANCES, 1);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        assigned(e, parts);
    else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        released(e, parts, rd_kafka_assignment_lost(e->consumer));
    else
        jd_error(MOD, "rebalance error: %s", rd_kafka_err2str(err));
    if (e->metrics) {
        jd_metrics_gauge(e->metrics, JD_G_ASSIGNED_PARTITIONS, e->assigned_count);
        jd_metrics_set_ready_inputs(e->metrics, e->assigned_count > 0, e->redis_ok,
                                    e->backpressured);
    }
}
