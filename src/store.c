/*
 * store — customers' journey state in Redis (layout in store.h).
 *
 * Turns a batch of customers into one pipeline over a struct jd_redis
 * (redis_conn.h), which sends it in one round trip per Redis master: a
 * single node or the masters of a Redis Cluster, one code path. Each
 * customer's write is its own MULTI/EXEC on its own keys (one hash tag, so
 * one cluster slot): one customer's failure (an OOM, a READONLY replica)
 * never half-writes it or touches another, and no transaction ever spans two
 * customers. Owns the connection and the scratch buffers that are reused
 * from batch to batch.
 *
 * After a lost connection every call fails fast until jd_store_reconnect
 * succeeds.
 */
#include "journeyd/store.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/redis_conn.h"
#include "store_int.h"

#define DEFAULT_ADDRESS "127.0.0.1:6379"
#define OUTBOX_NOT_BEFORE 0x80 /* kind byte flag: a not_before time follows */

struct jd_store *jd_store_new(const struct jd_config *cfg, char *errstr, size_t errsize)
{
    struct jd_store *st = jd_xcalloc(1, sizeof *st);
    static const char *const fallback[1] = {DEFAULT_ADDRESS};
    const char *const *seeds = fallback;
    size_t nseeds = 1;
    if (cfg->nredis_addresses) {
        seeds = (const char *const *)cfg->redis_addresses;
        nseeds = cfg->nredis_addresses;
    }
    st->prefix = jd_strdup(cfg->key_prefix ? cfg->key_prefix : "j");
    st->history_max = cfg->history_max;
    st->topics = cfg->input_topics;
    st->ntopics = cfg->ninput_topics;
    jd_buf_init(&st->pkey);
    jd_due_list_init(&st->own_deferred);
    st->deferred = &st->own_deferred;
    for (size_t i = 0; i < 3; i++)
        jd_buf_init(&st->keys[i]);
    jd_buf_init(&st->enc);
    jd_buf_init(&st->vals);
    st->rd = jd_redis_new(seeds, nseeds, cfg->redis_timeout_ms > 0 ? cfg->redis_timeout_ms : 2000,
                          errstr, errsize);
    if (!st->rd)
        goto err;
    return st;
err:
    jd_store_destroy(st);
    return NULL;
}

void jd_store_destroy(struct jd_store *st)
{
    if (!st)
        return;
    jd_redis_destroy(st->rd);
    free(st->prefix);
    free(st->argv);
    free(st->argvlen);
    for (size_t i = 0; i < 3; i++)
        jd_buf_free(&st->keys[i]);
    jd_buf_free(&st->enc);
    jd_buf_free(&st->vals);
    free(st->valoff);
    free(st->q);
    free(st->pre);
    free(st->snap);
    jd_buf_free(&st->mset);
    free(st->msetoff);
    free(st->msetcust);
    jd_buf_free(&st->pkey);
    jd_due_list_free(&st->own_deferred);
    free(st);
}

void jd_store_trim(struct jd_store *st)
{
    jd_redis_trim(st->rd);
    struct jd_buf *bufs[] = {&st->enc, &st->vals, &st->mset};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        jd_buf_free(bufs[i]); /* (leaves it empty, ready for use) */
    free(st->q);
    free(st->pre);
    free(st->snap);
    st->q = NULL;
    st->pre = NULL;
    st->snap = NULL;
    st->qcap = 0;
}

int jd_store_reconnect(struct jd_store *st, char *errstr, size_t errsize)
{
    return jd_redis_reconnect(st->rd, errstr, errsize);
}

int jd_store_ping(struct jd_store *st)
{
    return jd_redis_ping(st->rd);
}

uint64_t jd_store_roundtrips(const struct jd_store *st)
{
    return jd_redis_roundtrips(st->rd);
}

uint64_t jd_store_errors(const struct jd_store *st)
{
    return st->errors;
}

int jd_store_connected(const struct jd_store *st)
{
    return jd_redis_connected(st->rd);
}

uint64_t jd_store_redirects(const struct jd_store *st)
{
    return jd_redis_redirects(st->rd);
}

uint64_t jd_store_take_redirects(struct jd_store *st)
{
    uint64_t now = jd_redis_redirects(st->rd), n = now - st->redirects_taken;
    st->redirects_taken = now;
    return n;
}

struct jd_redis *jd_store_redis(struct jd_store *st)
{
    return st->rd;
}

const char *jd_store_describe(const struct jd_store *st)
{
    return jd_redis_describe(st->rd);
}

/* -------- load -------- */

/* kind byte [, not_before: 8 bytes big-endian when the kind byte has 0x80],
 * topic, NUL, value */
static int parse_outbox_entry(struct jd_customer *tmp, const redisReply *field,
                              const redisReply *value)
{
    if (field->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING || field->len == 0 ||
        field->len > 32 || value->len < 2)
        return -1;
    uint8_t kind = (uint8_t)value->str[0];
    size_t start = 1;
    int64_t not_before = 0;
    if (kind & OUTBOX_NOT_BEFORE) {
        if (value->len < 10)
            return -1;
        uint64_t nb = 0;
        for (size_t k = 1; k < 9; k++)
            nb = nb << 8 | (uint8_t)value->str[k];
        not_before = (int64_t)nb;
        kind &= (uint8_t)~OUTBOX_NOT_BEFORE;
        start = 9;
    }
    const char *nul = memchr(value->str + start, '\0', value->len - start);
    if (!nul || kind >= JD_KIND_COUNT)
        return -1;
    struct jd_pending_trigger *p = jd_customer_add_pending(tmp);
    memcpy(p->trigger_id, field->str, field->len);
    p->trigger_id[field->len] = '\0';
    p->kind = kind;
    p->not_before = not_before;
    size_t tlen = (size_t)(nul - (value->str + start));
    if (tlen) {
        p->topic = jd_xmalloc(tlen + 1);
        memcpy(p->topic, value->str + start, tlen + 1);
    }
    size_t off = start + tlen + 1;
    jd_buf_append(&p->value, value->str + off, value->len - off);
    p->stored = 1;
    return 0;
}

/* Moves the outbox entries of tmp into c (an entry c already holds wins). */
static void take_pending(struct jd_customer *c, struct jd_customer *tmp)
{
    for (size_t k = 0; k < tmp->npending; k++) {
        struct jd_pending_trigger *src = &tmp->pending[k];
        if (jd_customer_find_pending(c, src->trigger_id))
            continue;
        struct jd_pending_trigger *dst = jd_customer_add_pending(c);
        *dst = *src;
        memset(src, 0, sizeof *src);
    }
}

static int reply_error(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR;
}

int jd_store_load(struct jd_store *st, const struct jd_ruleset *rs, struct jd_customer **cs,
                  size_t n, char *errstr, size_t errsize)
{
    if (n == 0)
        return 0;
    char why[400];
    /* commands another module appended ride along (store.h) */
    size_t base = jd_redis_pending(st->rd);
    for (size_t i = 0; i < n; i++) {
        build_key(st, 0, cs[i]->id, cs[i]->id_len, "");
        arg_str(st, 0, "GET");
        arg(st, 1, st->keys[0].data, st->keys[0].len);
        (void)append(st, 2, 1);
        build_key(st, 0, cs[i]->id, cs[i]->id_len, ":o");
        arg_str(st, 0, "HGETALL");
        arg(st, 1, st->keys[0].data, st->keys[0].len);
        (void)append(st, 2, 1);
    }
    if (jd_redis_exec(st->rd, 0, why, sizeof why) != 0)
        return exec_fail(st, "load", why, errstr, errsize);

    /* Everything is decoded first and applied only if all of it is good:
     * a failed load leaves every customer as it was. */
    struct jd_customer **tmps = jd_xcalloc(n, sizeof *tmps);
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        size_t si = base + 2 * i, oi = si + 1;
        const redisReply *s = jd_redis_reply(st->rd, si), *o = jd_redis_reply(st->rd, oi);
        if (reply_error(s) || reply_error(o)) {
            st->errors++;
            size_t bad = reply_error(s) ? si : oi;
            snprintf(errstr, errsize, "load customer '%s': Redis %s: %s", cs[i]->id,
                     jd_redis_reply_node(st->rd, bad), jd_redis_reply(st->rd, bad)->str);
            goto out;
        }
        if ((s->type != REDIS_REPLY_STRING && s->type != REDIS_REPLY_NIL) ||
            o->type != REDIS_REPLY_ARRAY || o->elements % 2) {
            snprintf(errstr, errsize, "load customer '%s': unexpected Redis reply", cs[i]->id);
            goto out;
        }
        if (s->type == REDIS_REPLY_NIL && o->elements == 0)
            continue;
        tmps[i] = jd_customer_new(cs[i]->id, cs[i]->id_len, cs[i]->partition, rs);
        if (s->type == REDIS_REPLY_STRING) {
            char derr[200];
            if (jd_customer_decode(tmps[i], rs, s->str, s->len, derr, sizeof derr) != 0) {
                snprintf(errstr, errsize, "load customer '%s': %s", cs[i]->id, derr);
                goto out;
            }
        }
        for (size_t k = 0; k < o->elements; k += 2) {
            if (parse_outbox_entry(tmps[i], o->element[k], o->element[k + 1]) != 0) {
                snprintf(errstr, errsize, "load customer '%s': corrupt outbox entry", cs[i]->id);
                goto out;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!tmps[i])
            continue;
        take_pending(cs[i], tmps[i]);
        if (jd_redis_reply(st->rd, base + 2 * i)->type == REDIS_REPLY_STRING) {
            if (cs[i]->partition < 0)
                cs[i]->partition = tmps[i]->partition;
            jd_customer_take_state(cs[i], tmps[i]);
            cs[i]->stored_timer = cs[i]->next_timer; /* what the timer set holds */
            cs[i]->exists = 1;
        } else {
            jd_customer_destroy(tmps[i]);
        }
        tmps[i] = NULL;
    }
    rc = 0;
out:
    for (size_t i = 0; i < n; i++)
        jd_customer_destroy(tmps[i]);
    free(tmps);
    if (base == 0)
        jd_redis_clear(st->rd);
    return rc;
}

/* -------- flush -------- */

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

/* Queues one customer's write: MULTI, the outbox (HSET new entries, HDEL
 * acked ones), the history (LPUSH, LTRIM), the state (SET), EXEC. Returns
 * where it went.
 *
 * The state goes last because it carries the applied offset: should the
 * commands ever run without a transaction, an outbox written ahead of its
 * state is harmless (the replayed event recomputes the same trigger ids),
 * a state ahead of its outbox would lose triggers. They do run without one
 * in a cluster when the customer's keys fall in two slots — an id starting
 * with '}' leaves the key without a hash tag — since MULTI cannot span two
 * slots. */
static struct queued queue_customer(struct jd_store *st, const struct jd_ruleset *rs,
                                    const struct jd_customer *c)
{
    struct queued q = {0, 0, 1};
    build_key(st, 0, c->id, c->id_len, "");
    build_key(st, 1, c->id, c->id_len, ":o");
    build_key(st, 2, c->id, c->id_len, ":h");
    if (jd_redis_is_cluster(st->rd) && jd_redis_key_slot(st->keys[0].data, st->keys[0].len) !=
                                           jd_redis_key_slot(st->keys[1].data, st->keys[1].len))
        q.multi = 0;
    /* Most writes change the state only (the write-back of customers without
     * a new trigger): one SET is atomic on its own, and MULTI/EXEC would
     * triple the commands Redis runs and the replies read. */
    if (!c->nacked && !c->nhistory && !unstored_pending(c))
        q.multi = 0;

    if (q.multi) {
        jd_redis_group_begin(st->rd);
        arg_str(st, 0, "MULTI");
        q.first = append(st, 1, 0);
        q.n++;
    }

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
        if (q.n++ == 0)
            q.first = i;
    }

    if (c->nacked) {
        arg_str(st, 0, "HDEL");
        arg(st, 1, st->keys[1].data, st->keys[1].len);
        for (size_t k = 0; k < c->nacked; k++)
            arg_str(st, 2 + k, c->acked[k]);
        size_t i = append(st, 2 + c->nacked, 1);
        if (q.n++ == 0)
            q.first = i;
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
            if (q.n++ == 0)
                q.first = i;
            char stop[24];
            snprintf(stop, sizeof stop, "%d", st->history_max - 1);
            arg_str(st, 0, "LTRIM");
            arg(st, 1, st->keys[2].data, st->keys[2].len);
            arg_str(st, 2, "0");
            arg_str(st, 3, stop);
            (void)append(st, 4, 1);
            q.n++;
        }
    }

    if (c->dirty || jd_store_timer_write(c)) { /* nt is in the state */
        jd_buf_reset(&st->enc);
        jd_customer_encode(c, rs, &st->enc);
        arg_str(st, 0, "SET");
        arg(st, 1, st->keys[0].data, st->keys[0].len);
        arg(st, 2, st->enc.data, st->enc.len);
        size_t i = append(st, 3, 1);
        if (q.n++ == 0)
            q.first = i;
    }

    if (q.multi) {
        arg_str(st, 0, "EXEC");
        (void)append(st, 1, 0);
        q.n++;
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

static int state_only(const struct jd_store *st, const struct jd_customer *c)
{
    return !jd_redis_is_cluster(st->rd) && !c->nacked && !c->nhistory && !unstored_pending(c) &&
           (c->dirty || jd_store_timer_write(c));
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
    for (size_t k = 0; k < st->nmset; k++) {
        st->q[st->msetcust[k]].first = i;
        st->q[st->msetcust[k]].n = 1;
        st->q[st->msetcust[k]].multi = 0;
    }
    st->nmset = 0;
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
    jd_store_defer_post(st, c, w->rm_timer, w->unindex);
}

/* The first error among one customer's replies (queueing errors first: the
 * EXEC error only says the transaction was discarded). NULL when written;
 * *node says which node answered. */
static const char *customer_error(struct jd_store *st, const struct queued *q, const char *why,
                                  const char **node)
{
    *node = jd_redis_reply_node(st->rd, q->first);
    for (size_t k = 0; k < q->n; k++)
        if (!jd_redis_reply(st->rd, q->first + k))
            return why; /* not executed: the pipeline's own error */
    size_t nq = q->multi ? q->n - 1 : q->n;
    for (size_t k = 0; k < nq; k++) {
        const redisReply *r = jd_redis_reply(st->rd, q->first + k);
        if (r->type == REDIS_REPLY_ERROR)
            return r->str;
    }
    if (!q->multi)
        return NULL;
    const redisReply *ex = jd_redis_reply(st->rd, q->first + q->n - 1);
    if (ex->type == REDIS_REPLY_ERROR)
        return ex->str;
    if (ex->type != REDIS_REPLY_ARRAY)
        return "transaction aborted (EXEC returned nil)";
    if (ex->elements != q->n - 2)
        return "unexpected EXEC reply";
    for (size_t k = 0; k < ex->elements; k++)
        if (ex->element[k]->type == REDIS_REPLY_ERROR)
            return ex->element[k]->str;
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

/* Takes what c's write will have done once it succeeds (flushed), and
 * hands the changes to the write: c is clean again until its next change. */
static void snapshot(struct jd_customer *c, struct wsnap *w)
{
    w->built = 1;
    w->was_dirty = c->dirty;
    w->held = jd_store_timer_held(c);
    w->rm_timer = c->stored_timer && !c->next_timer;
    w->unindex = c->npending == 0 && c->nacked > 0;
    w->npending = c->npending;
    w->nhistory = c->nhistory;
    c->dirty = 0;
    c->writing = 1;
}

void jd_store_flush_build(struct jd_store *st, const struct jd_ruleset *rs, struct jd_customer **cs,
                          size_t n)
{
    reserve_flush(st, n);
    st->fl_base = jd_redis_pending(st->rd); /* commands riding along (store.h) */
    st->fl_n = n;
    st->fl_why[0] = '\0';
    size_t total = 0, npre = 0;
    /* On a cluster the partition keys live on other masters than the
     * customers', and a pipeline serves the masters in parallel: the
     * additions get a round of their own first (unless another module's
     * commands ride along, whose replies that round would consume). */
    int split = jd_redis_is_cluster(st->rd) && st->fl_base == 0;
    /* per-partition removals of earlier flushes */
    jd_store_queue_deferred(st);
    for (size_t i = 0; i < n; i++) {
        st->q[i].n = 0;
        st->pre[i].n = 0;
        st->pre[i].multi = 0; /* here: 1 when the additions failed */
        st->snap[i].built = 0;
        if (i + 8 < n)
            jd_customer_prefetch(cs[i + 8], 0);
        if (i + 4 < n)
            jd_customer_prefetch(cs[i + 4], 1);
        if (!needs_write(cs[i]))
            continue;
        /* per-partition additions go before the transaction (store_int.h) */
        st->pre[i] = jd_store_queue_pre(st, cs[i]);
        npre += st->pre[i].n;
        if (split)
            continue;
        if (state_only(st, cs[i])) {
            gather_state(st, rs, cs[i], i);
            total++;
            if (st->nmset == MSET_CHUNK)
                emit_mset(st);
        } else {
            st->q[i] = queue_customer(st, rs, cs[i]);
            total += st->q[i].n;
        }
        snapshot(cs[i], &st->snap[i]);
    }
    emit_mset(st);
    if (split && (npre || st->ndeferred_sent)) {
        /* a customer whose additions failed is not written now */
        (void)jd_redis_exec(st->rd, JD_REDIS_REPLICATED, st->fl_why, sizeof st->fl_why);
        jd_store_deferred_sent(st);
        for (size_t i = 0; i < n; i++) {
            if (st->pre[i].n && jd_store_queued_error(st, &st->pre[i], st->fl_why))
                st->pre[i].multi = 1;
            st->pre[i].n = 0; /* their replies go with the next append */
        }
        jd_redis_clear(st->rd);
    }
    if (split) {
        for (size_t i = 0; i < n; i++) {
            if (!needs_write(cs[i]))
                continue;
            if (!st->pre[i].multi) {
                st->q[i] = queue_customer(st, rs, cs[i]);
                total += st->q[i].n;
            }
            snapshot(cs[i], &st->snap[i]);
        }
    }
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
        if (!st->snap[i].built)
            continue;
        struct jd_customer *c = cs[i];
        c->writing = 0;
        const char *node = "(partition keys)";
        const char *e = st->pre[i].multi ? (why[0] ? why : "timer set write failed") : NULL;
        if (!e && st->pre[i].n) {
            e = jd_store_queued_error(st, &st->pre[i], why);
            node = jd_redis_reply_node(st->rd, st->pre[i].first);
        }
        if (!e && st->q[i].n)
            e = customer_error(st, &st->q[i], why, &node);
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

/* -------- journeyctl -------- */

int jd_store_history(struct jd_store *st, const char *customer_id, size_t max, char ***lines,
                     size_t *nlines, char *errstr, size_t errsize)
{
    *lines = NULL;
    *nlines = 0;
    if (max == 0)
        return 0;
    build_key(st, 0, customer_id, strlen(customer_id), ":h");
    char stop[24], why[400];
    snprintf(stop, sizeof stop, "%zu", max - 1);
    jd_redis_clear(st->rd);
    arg_str(st, 0, "LRANGE");
    arg(st, 1, st->keys[0].data, st->keys[0].len);
    arg_str(st, 2, "0");
    arg_str(st, 3, stop);
    (void)append(st, 4, 1);
    if (jd_redis_exec(st->rd, 0, why, sizeof why) != 0)
        return exec_fail(st, "history", why, errstr, errsize);
    const redisReply *r = jd_redis_reply(st->rd, 0);
    int rc = -1;
    if (r->type == REDIS_REPLY_ERROR) {
        st->errors++;
        snprintf(errstr, errsize, "history of '%s': Redis: %s", customer_id, r->str);
        goto out;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(errstr, errsize, "history of '%s': unexpected Redis reply", customer_id);
        goto out;
    }
    *lines = jd_xcalloc(r->elements + 1, sizeof **lines);
    for (size_t k = 0; k < r->elements; k++) {
        const redisReply *e = r->element[k];
        (*lines)[k] = jd_xmalloc(e->len + 1);
        memcpy((*lines)[k], e->str ? e->str : "", e->len);
        (*lines)[k][e->len] = '\0';
    }
    *nlines = r->elements;
    rc = 0;
out:
    jd_redis_clear(st->rd);
    return rc;
}

int jd_store_get_customer(struct jd_store *st, const struct jd_ruleset *rs, const char *id,
                          struct jd_customer **out, char *errstr, size_t errsize)
{
    *out = NULL;
    struct jd_customer *c = jd_customer_new(id, strlen(id), -1, rs);
    if (jd_store_load(st, rs, &c, 1, errstr, errsize) != 0) {
        jd_customer_destroy(c);
        return -1;
    }
    if (!c->exists && c->npending == 0) {
        jd_customer_destroy(c);
        return 1;
    }
    *out = c;
    return 0;
}

void jd_store_free_lines(char **lines, size_t nlines)
{
    for (size_t k = 0; k < nlines; k++)
        free(lines[k]);
    free(lines);
}
