/*
 * store_flush — writing customers back (jd_store_flush and its three steps:
 * build, exec, finish). A flush is one pipeline, one round trip per Redis
 * master. On a single node it reads, in order:
 *   1. the removals from the per-partition sets deferred by earlier flushes
 *      (one variadic ZREM per set: store_timers.c);
 *   2. this flush's additions to those sets (one variadic ZADD per set);
 *   3. the customers whose write is their state only, MSET_CHUNK states to
 *      an MSET;
 *   4. ONE MULTI ... EXEC for all the customers whose write touches their
 *      outbox or history: their HSET/HDEL/LPUSH/LTRIM, then their states
 *      (MSETs), EXEC (queue_shared).
 * On a Redis Cluster 1 and 2 go in a round of their own first (other
 * masters), then each customer is one SET, or its own MULTI ... EXEC on its
 * own keys (one slot: no transaction ever spans two customers there).
 * Customers are judged one by one on their replies: what got through is
 * done even when others failed, and a command shared by several customers
 * (a grouped ZADD, an MSET, the shared transaction) that fails fails every
 * one of them (they stay dirty: the engine writes them again).
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/redis_conn.h"
#include "journeyd/store.h"
#include "store_int.h"

static int unstored_pending(const struct jd_customer *c)
{
    for (size_t k = 0; k < c->npending; k++)
        if (!c->pending[k].stored || c->pending[k].history)
            return 1;
    return 0;
}

static int needs_write(const struct jd_customer *c)
{
    return c->dirty || c->nacked || c->nhistory || unstored_pending(c) || jd_store_timer_write(c);
}

/* Outbox values of c not yet stored, into st->vals; returns how many. */
static size_t outbox_values(struct jd_store *st, const struct jd_customer *c)
{
    jd_buf_reset(&st->vals);
    size_t nvals = 0;
    if (st->valcap < c->npending + 1) {
        st->valcap = c->npending + 1;
        st->valoff = jd_xrealloc(st->valoff, st->valcap * sizeof *st->valoff);
    }
    for (size_t k = 0; k < c->npending; k++) {
        const struct jd_pending_trigger *p = &c->pending[k];
        if (p->stored)
            continue;
        st->valoff[nvals++] = st->vals.len;
        uint8_t kind = (uint8_t)(p->kind | (p->not_before ? OUTBOX_NOT_BEFORE : 0));
        jd_buf_append(&st->vals, &kind, 1);
        for (int sh = 56; p->not_before && sh >= 0; sh -= 8) {
            uint8_t byte = (uint8_t)((uint64_t)p->not_before >> sh);
            jd_buf_append(&st->vals, &byte, 1);
        }
        if (p->topic)
            jd_buf_puts(&st->vals, p->topic);
        jd_buf_append(&st->vals, "", 1);
        jd_buf_append(&st->vals, p->value.data, p->value.len);
    }
    st->valoff[nvals] = st->vals.len;
    return nvals;
}

/* Queues the outbox (HSET new entries, HDEL acked ones) and history (LPUSH,
 * LTRIM) commands of c, whose keys are in keys[1] and keys[2], into q. */
static void queue_outbox_history(struct jd_store *st, const struct jd_customer *c, struct queued *q)
{
    size_t nvals = outbox_values(st, c);
    if (nvals) {
        arg_str(st, 0, "HSET");
        arg(st, 1, st->keys[1].data, st->keys[1].len);
        size_t a = 2, v = 0;
        for (size_t k = 0; k < c->npending; k++) {
            const struct jd_pending_trigger *p = &c->pending[k];
            if (p->stored)
                continue;
            arg_str(st, a++, p->trigger_id);
            arg(st, a++, st->vals.data + st->valoff[v], st->valoff[v + 1] - st->valoff[v]);
            v++;
        }
        size_t i = append(st, a, 1);
        if (q->n++ == 0)
            q->first = i;
    }

    if (c->nacked) {
        arg_str(st, 0, "HDEL");
        arg(st, 1, st->keys[1].data, st->keys[1].len);
        for (size_t k = 0; k < c->nacked; k++)
            arg_str(st, 2 + k, c->acked[k]);
        size_t i = append(st, 2 + c->nacked, 1);
        if (q->n++ == 0)
            q->first = i;
    }

    if (st->history_max > 0) {
        arg_str(st, 0, "LPUSH");
        arg(st, 1, st->keys[2].data, st->keys[2].len);
        size_t a = 2;
        for (size_t k = 0; k < c->nhistory; k++)
            arg_str(st, a++, c->history[k]);
        for (size_t k = 0; k < c->npending; k++)
            if (c->pending[k].history)
                arg_str(st, a++, c->pending[k].history);
        if (a > 2) {
            size_t i = append(st, a, 1);
            if (q->n++ == 0)
                q->first = i;
            char stop[24];
            snprintf(stop, sizeof stop, "%d", st->history_max - 1);
            arg_str(st, 0, "LTRIM");
            arg(st, 1, st->keys[2].data, st->keys[2].len);
            arg_str(st, 2, "0");
            arg_str(st, 3, stop);
            (void)append(st, 4, 1);
            q->n++;
        }
    }
}

static int writes_state(const struct jd_customer *c)
{
    return c->dirty || jd_store_timer_write(c); /* nt is in the state */
}

/* Queues one customer's write on a Redis Cluster: MULTI, its outbox and
 * history commands, its state (SET), EXEC. Returns where it went.
 *
 * The state goes last because it carries the applied offset: should the
 * commands ever run without a transaction, an outbox written ahead of its
 * state is harmless (the replayed event recomputes the same trigger ids),
 * a state ahead of its outbox would lose triggers. They do run without one
 * when the customer's keys fall in two slots — an id starting with '}'
 * leaves the key without a hash tag — since MULTI cannot span two slots.
 * (On a single node the same order holds inside the flush's shared
 * transaction, queue_shared.) */
static struct queued queue_customer(struct jd_store *st, const struct jd_ruleset *rs,
                                    const struct jd_customer *c)
{
    struct queued q = {0, 0, JD_NO_CMD, JD_NO_CMD, JD_NO_CMD};
    build_key(st, 0, c->id, c->id_len, "");
    build_key(st, 1, c->id, c->id_len, ":o");
    build_key(st, 2, c->id, c->id_len, ":h");
    /* Most writes change the state only (the write-back of customers without
     * a new trigger): one SET is atomic on its own, and MULTI/EXEC would
     * triple the commands Redis runs and the replies read. */
    int multi = jd_redis_key_slot(st->keys[0].data, st->keys[0].len) ==
                    jd_redis_key_slot(st->keys[1].data, st->keys[1].len) &&
                (c->nacked || c->nhistory || unstored_pending(c));

    if (multi) {
        jd_redis_group_begin(st->rd);
        arg_str(st, 0, "MULTI");
        q.multi = append(st, 1, 0);
    }
    queue_outbox_history(st, c, &q);
    if (writes_state(c)) {
        jd_buf_reset(&st->enc);
        jd_customer_encode(c, rs, &st->enc);
        arg_str(st, 0, "SET");
        arg(st, 1, st->keys[0].data, st->keys[0].len);
        arg(st, 2, st->enc.data, st->enc.len);
        q.state = append(st, 3, 1);
    }
    if (multi) {
        arg_str(st, 0, "EXEC");
        q.exec = append(st, 1, 0);
        jd_redis_group_end(st->rd);
    }
    return q;
}

/* On a single node, customers whose write is their state only (nearly every
 * write-back) are gathered MSET_CHUNK at a time into one MSET: Redis runs
 * one command and sends one reply instead of one per customer (SETs were
 * the larger part of its work and of the replies journeyd parsed). An MSET
 * is atomic: each customer's state is still written whole or not at all,
 * and its applied offset with it. A cluster keeps one SET per customer
 * (MSET cannot span slots). */
#define MSET_CHUNK 512

/* What a customer's write is, decided at build. */
#define WRITE_NONE 0
#define WRITE_STATE 1 /* its state only: a SET, or a key of an MSET */
#define WRITE_OWN 2   /* outbox or history too: within a transaction */

static int write_class(const struct jd_customer *c)
{
    if (!needs_write(c))
        return WRITE_NONE;
    if (!c->nacked && !c->nhistory && !unstored_pending(c))
        return WRITE_STATE;
    return WRITE_OWN;
}

static void gather_state(struct jd_store *st, const struct jd_ruleset *rs,
                         const struct jd_customer *c, size_t qi)
{
    if (st->nmset == st->msetcap) {
        st->msetcap = st->msetcap ? st->msetcap * 2 : MSET_CHUNK;
        st->msetoff = jd_xrealloc(st->msetoff, (2 * st->msetcap + 1) * sizeof *st->msetoff);
        st->msetcust = jd_xrealloc(st->msetcust, st->msetcap * sizeof *st->msetcust);
    }
    if (st->nmset == 0) {
        jd_buf_reset(&st->mset);
        st->msetoff[0] = 0;
    }
    build_key(st, 0, c->id, c->id_len, "");
    jd_buf_append(&st->mset, st->keys[0].data, st->keys[0].len);
    st->msetoff[2 * st->nmset + 1] = st->mset.len;
    jd_customer_encode(c, rs, &st->mset);
    st->msetoff[2 * st->nmset + 2] = st->mset.len;
    st->msetcust[st->nmset++] = qi;
}

/* Appends the gathered customers' MSET; their q[] entries point at it. */
static void emit_mset(struct jd_store *st)
{
    if (st->nmset == 0)
        return;
    size_t argc = 1 + 2 * st->nmset;
    args_reserve(st, argc);
    arg_str(st, 0, "MSET");
    for (size_t k = 0; k < 2 * st->nmset; k++)
        arg(st, 1 + k, st->mset.data + st->msetoff[k], st->msetoff[k + 1] - st->msetoff[k]);
    size_t i = append(st, argc, 1);
    for (size_t k = 0; k < st->nmset; k++)
        st->q[st->msetcust[k]].state = i;
    st->nmset = 0;
}

/* Takes what c's write will have done once it succeeds (flushed), and
 * hands the changes to the write: c is clean again until its next change. */
static void snapshot(struct jd_customer *c, struct wsnap *w)
{
    w->built = 1;
    w->was_dirty = c->dirty;
    w->held = jd_store_timer_held(c);
    w->rm_timer = c->stored_timer && !c->next_timer;
    w->unindex = c->npending == 0 && c->nacked > 0 && c->indexed;
    w->npending = c->npending;
    w->nhistory = c->nhistory;
    c->dirty = 0;
    c->writing = 1;
}

/* The customers of a flush whose write needs a transaction, on a single
 * node: ONE MULTI ... EXEC for all of them (it used to be one per
 * customer: MULTI and EXEC were a fifth of the commands Redis ran): MULTI,
 * each customer's outbox and history commands followed (in MSETs of up to
 * MSET_CHUNK, a chunk at a time) by the states, EXEC. Each state is still
 * after its own outbox (queue_customer says why), and the customers are
 * written together or, should the transaction be refused (EXECABORT: a
 * command refused when queued, OOM), not at all; every one of them then
 * fails and is written again. A command failing when it runs (WRONGTYPE)
 * fails its customer, found by its place in EXEC's reply array. */
static size_t queue_shared(struct jd_store *st, const struct jd_ruleset *rs,
                           struct jd_customer **cs, size_t n)
{
    size_t ncmd = 0;
    jd_redis_group_begin(st->rd);
    arg_str(st, 0, "MULTI");
    size_t multi = append(st, 1, 0);
    for (size_t i = 0; i < n; i++) {
        if (i + 8 < n)
            jd_customer_prefetch(cs[i + 8], 0);
        if (i + 4 < n)
            jd_customer_prefetch(cs[i + 4], 1);
        if (st->snap[i].cls != WRITE_OWN || st->snap[i].built)
            continue;
        struct jd_customer *c = cs[i];
        struct queued *q = &st->q[i];
        build_key(st, 1, c->id, c->id_len, ":o");
        build_key(st, 2, c->id, c->id_len, ":h");
        q->multi = multi;
        queue_outbox_history(st, c, q);
        ncmd += q->n;
        if (writes_state(c)) {
            gather_state(st, rs, c, i);
            if (st->nmset == MSET_CHUNK) {
                emit_mset(st);
                ncmd++;
            }
        }
        snapshot(c, &st->snap[i]);
    }
    if (st->nmset) {
        emit_mset(st);
        ncmd++;
    }
    arg_str(st, 0, "EXEC");
    size_t exec = append(st, 1, 0);
    jd_redis_group_end(st->rd);
    for (size_t i = 0; i < n; i++)
        if (st->q[i].multi == multi)
            st->q[i].exec = exec;
    return ncmd + 2;
}

/* The customer's write is in Redis: record what it wrote (taken when it was
 * built: events may have changed the customer since, and what they changed
 * is still to be written). */
static void flushed(struct jd_store *st, struct jd_customer *c, const struct wsnap *w)
{
    c->exists = 1;
    c->stored_timer = w->held;
    /* acknowledgements come only from the engine's jd_engine_apply_acks,
     * which waits for writes on their way; history lines also from the
     * policy (a suppressed trigger) while a write travels: those added
     * since the build stay for the next write */
    jd_customer_clear_acked(c);
    size_t nh = w->nhistory < c->nhistory ? w->nhistory : c->nhistory;
    for (size_t k = 0; k < nh; k++)
        free(c->history[k]);
    if (nh < c->nhistory)
        memmove(c->history, c->history + nh, (c->nhistory - nh) * sizeof *c->history);
    c->nhistory -= (uint32_t)nh;
    for (size_t k = 0; k < c->npending && k < w->npending; k++) {
        c->pending[k].stored = 1;
        free(c->pending[k].history);
        c->pending[k].history = NULL;
    }
    if (w->unindex)
        c->indexed = 0;
    jd_store_defer_post(st, c, w->rm_timer, w->unindex);
}

/* Reply i: NULL when it is a success; the error, or `why` when it is
 * missing (not executed: the pipeline's own error). */
static const char *reply_failed(struct jd_store *st, size_t i, const char *why)
{
    const redisReply *r = jd_redis_reply(st->rd, i);
    if (!r)
        return why;
    return r->type == REDIS_REPLY_ERROR ? r->str : NULL;
}

/* The element of EXEC's reply for command i of the transaction. */
static const char *exec_element_failed(const redisReply *ex, size_t multi, size_t i)
{
    const redisReply *r = ex->element[i - multi - 1];
    return r->type == REDIS_REPLY_ERROR ? r->str : NULL;
}

/* The first error among one customer's replies (queueing errors first: the
 * EXEC error only says the transaction was discarded). NULL when written;
 * *node says which node answered. */
static const char *customer_error(struct jd_store *st, const struct queued *q, const char *why,
                                  const char **node)
{
    size_t any = q->multi != JD_NO_CMD ? q->multi : q->n ? q->first : q->state;
    *node = jd_redis_reply_node(st->rd, any);
    const char *e;
    if (q->multi != JD_NO_CMD && (e = reply_failed(st, q->multi, why)))
        return e;
    for (size_t k = 0; k < q->n; k++)
        if ((e = reply_failed(st, q->first + k, why)))
            return e;
    if (q->state != JD_NO_CMD && (e = reply_failed(st, q->state, why)))
        return e;
    if (q->multi == JD_NO_CMD)
        return NULL;
    const redisReply *ex = jd_redis_reply(st->rd, q->exec);
    if (!ex)
        return why;
    if (ex->type == REDIS_REPLY_ERROR)
        return ex->str;
    if (ex->type != REDIS_REPLY_ARRAY)
        return "transaction aborted (EXEC returned nil)";
    if (ex->elements != q->exec - q->multi - 1)
        return "unexpected EXEC reply";
    for (size_t k = 0; k < q->n; k++)
        if ((e = exec_element_failed(ex, q->multi, q->first + k)))
            return e;
    if (q->state != JD_NO_CMD && (e = exec_element_failed(ex, q->multi, q->state)))
        return e;
    return NULL;
}

static void reserve_flush(struct jd_store *st, size_t n)
{
    if (st->qcap >= n)
        return;
    st->q = jd_xrealloc(st->q, n * sizeof *st->q);
    st->pre = jd_xrealloc(st->pre, n * sizeof *st->pre);
    st->snap = jd_xrealloc(st->snap, n * sizeof *st->snap);
    st->qcap = n;
}

void jd_store_flush_build(struct jd_store *st, const struct jd_ruleset *rs, struct jd_customer **cs,
                          size_t n)
{
    static const struct queued none = {0, 0, JD_NO_CMD, JD_NO_CMD, JD_NO_CMD};
    reserve_flush(st, n);
    st->fl_base = jd_redis_pending(st->rd); /* commands riding along (store.h) */
    st->fl_n = n;
    st->fl_why[0] = '\0';
    int cluster = jd_redis_is_cluster(st->rd);
    /* On a cluster the partition keys live on other masters than the
     * customers', and a pipeline serves the masters in parallel: the
     * additions get a round of their own first (unless another module's
     * commands ride along, whose replies that round would consume). */
    int split = cluster && st->fl_base == 0;
    /* the pipeline: per-partition removals of earlier flushes, additions of
     * this one, then the customers' writes (comment atop this file) */
    jd_store_queue_deferred(st);
    jd_store_pre_begin(st);
    size_t nown = 0;
    for (size_t i = 0; i < n; i++) {
        st->q[i] = none;
        st->pre[i].cmd[0] = st->pre[i].cmd[1] = JD_NO_CMD;
        st->pre[i].failed = 0;
        st->snap[i].built = 0;
        if (i + 8 < n)
            jd_customer_prefetch(cs[i + 8], 0);
        st->snap[i].cls = (uint8_t)write_class(cs[i]);
        if (st->snap[i].cls == WRITE_NONE)
            continue;
        nown += st->snap[i].cls == WRITE_OWN;
        jd_store_pre_add(st, cs[i], i);
    }
    size_t npre = jd_store_pre_emit(st), total = 0;
    if (split && (npre || st->ndeferred_sent)) {
        /* a customer whose additions failed is not written now */
        (void)jd_redis_exec(st->rd, JD_REDIS_REPLICATED, st->fl_why, sizeof st->fl_why);
        jd_store_deferred_sent(st);
        for (size_t i = 0; i < n; i++) {
            const char *node;
            if (jd_store_pre_error(st, &st->pre[i], st->fl_why, &node))
                st->pre[i].failed = 1;
            st->pre[i].cmd[0] = st->pre[i].cmd[1] = JD_NO_CMD; /* replies gone with the clear */
        }
        jd_redis_clear(st->rd);
    }
    for (size_t i = 0; i < n; i++) {
        if (i + 8 < n)
            jd_customer_prefetch(cs[i + 8], 0);
        if (i + 4 < n)
            jd_customer_prefetch(cs[i + 4], 1);
        int cls = st->snap[i].cls;
        if (cls == WRITE_NONE || (cls == WRITE_OWN && !cluster))
            continue; /* nothing, or in the shared transaction below */
        if (!st->pre[i].failed) {
            if (!cluster) {
                gather_state(st, rs, cs[i], i);
                total++;
                if (st->nmset == MSET_CHUNK)
                    emit_mset(st);
            } else {
                st->q[i] = queue_customer(st, rs, cs[i]);
                total +=
                    st->q[i].n + (st->q[i].state != JD_NO_CMD) + 2 * (st->q[i].multi != JD_NO_CMD);
            }
        }
        snapshot(cs[i], &st->snap[i]);
    }
    emit_mset(st);
    if (nown && !cluster)
        total += queue_shared(st, rs, cs, n);
    st->fl_exec = total || (!split && (npre || st->ndeferred_sent || st->fl_base));
}

void jd_store_flush_exec(struct jd_store *st)
{
    /* written only once a replica has it, when the cluster has replicas: a
     * failover must not lose what the engine then commits to Kafka */
    if (st->fl_exec)
        (void)jd_redis_exec(st->rd, JD_REDIS_REPLICATED, st->fl_why, sizeof st->fl_why);
}

int jd_store_flush_finish(struct jd_store *st, struct jd_customer **cs, size_t n, char *errstr,
                          size_t errsize)
{
    const char *why = st->fl_why;
    if (st->fl_exec)
        jd_store_deferred_sent(st);
    /* customer by customer: what got through is done even if some did not */
    size_t failed = 0;
    for (size_t i = 0; i < n && i < st->fl_n; i++) {
        if (i + 8 < n && i + 8 < st->fl_n)
            jd_customer_prefetch(cs[i + 8], 0); /* (long out of the cache by now) */
        if (!st->snap[i].built)
            continue;
        struct jd_customer *c = cs[i];
        c->writing = 0;
        const char *node = "(partition keys)";
        const char *e = st->pre[i].failed ? (why[0] ? why : "timer set write failed") : NULL;
        if (!e)
            e = jd_store_pre_error(st, &st->pre[i], why, &node);
        const struct queued *q = &st->q[i];
        if (!e && (q->n || q->state != JD_NO_CMD || q->multi != JD_NO_CMD))
            e = customer_error(st, q, why, &node);
        if (!e) {
            flushed(st, c, &st->snap[i]);
            continue;
        }
        c->dirty |= st->snap[i].was_dirty; /* still to be written */
        if (failed++ == 0) {
            if (e == why)
                snprintf(errstr, errsize, "flush customer '%s': %s", c->id, why);
            else
                snprintf(errstr, errsize, "flush customer '%s': Redis %s: %s", c->id, node, e);
        }
    }
    if (st->fl_base == 0)
        jd_redis_clear(st->rd);
    st->fl_n = 0;
    if (failed) {
        st->errors++;
        if (failed > 1) {
            size_t len = strlen(errstr);
            snprintf(errstr + len, errsize > len ? errsize - len : 0,
                     " (and %zu more customers not written)", failed - 1);
        }
        return -1;
    }
    return 0;
}

int jd_store_flush(struct jd_store *st, const struct jd_ruleset *rs, struct jd_customer **cs,
                   size_t n, char *errstr, size_t errsize)
{
    if (n == 0)
        return 0;
    jd_store_flush_build(st, rs, cs, n);
    jd_store_flush_exec(st);
    return jd_store_flush_finish(st, cs, n, errstr, errsize);
}
