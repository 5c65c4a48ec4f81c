/*
 * store_timers — the per-partition keys of the store (layout in store.h):
 * the timer set, which lets the engine find the customers whose time has
 * come without ever scanning customers, and the outbox index, which lets a
 * new owner of a partition find every trigger still waiting for Kafka
 * (timer-fired and deferred triggers are tied to no input offset, so no
 * replay would bring them back).
 *
 * Neither set can join a customer's MULTI/EXEC (another Redis Cluster
 * slot), so each write is ordered around that transaction for crash safety:
 * additions before it, removals and postponements after it. A crash in
 * between leaves an entry too many (a timer that finds nothing due, an index
 * entry with an empty outbox: both no-ops), never one too few.
 */
#include <inttypes.h>

#include "store_int.h"

/* PREFIX:{p:TOPIC:PARTITION}SUFFIX into st->pkey; -1 for an unknown source. */
static int build_pkey(struct jd_store *st, int32_t source, const char *suffix)
{
    int32_t ti = source >> 16;
    if (source < 0 || (size_t)ti >= st->ntopics)
        return -1;
    jd_buf_reset(&st->pkey);
    jd_buf_printf(&st->pkey, "%s:{p:%s:%" PRId32 "}%s", st->prefix, st->topics[ti], source & 0xffff,
                  suffix);
    return 0;
}

static int unstored(const struct jd_customer *c)
{
    for (size_t k = 0; k < c->npending; k++)
        if (!c->pending[k].stored)
            return 1;
    return 0;
}

static int queue_zadd(struct jd_store *st, int64_t score, const struct jd_customer *c)
{
    char num[24];
    snprintf(num, sizeof num, "%" PRId64, score);
    arg_str(st, 0, "ZADD");
    arg(st, 1, st->pkey.data, st->pkey.len);
    arg_str(st, 2, num);
    arg(st, 3, c->id, c->id_len);
    return append(st, 4);
}

static int queue_zrem(struct jd_store *st, const char *id, size_t id_len)
{
    arg_str(st, 0, "ZREM");
    arg(st, 1, st->pkey.data, st->pkey.len);
    arg(st, 2, id, id_len);
    return append(st, 3);
}

size_t jd_store_queue_pre(struct jd_store *st, const struct jd_customer *c)
{
    size_t n = 0;
    int64_t want = c->next_timer, have = c->stored_timer;
    /* a new or earlier due time: firing early finds nothing, firing late
     * would be wrong */
    if (want && (!have || want < have) && build_pkey(st, c->partition, ":timers") == 0) {
        if (queue_zadd(st, want, c) != 0)
            return SIZE_MAX;
        n++;
    }
    /* the outbox gets entries: index the customer first (a ZREM of it still
     * deferred is sent before this, at the head of the same pipeline) */
    if (unstored(c) && build_pkey(st, c->partition, ":outbox") == 0) {
        if (queue_zadd(st, 0, c) != 0)
            return SIZE_MAX;
        n++;
    }
    return n;
}

void jd_store_defer_post(struct jd_store *st, const struct jd_customer *c)
{
    int64_t want = c->next_timer, have = c->stored_timer;
    if (build_pkey(st, c->partition, "") != 0)
        return; /* no partition key: nothing was added either */
    /* later or none: only once the state that says so is written */
    if (have && want != have)
        jd_due_list_add(&st->deferred, c->partition, want, c->id, c->id_len);
    /* the last entries have left the outbox: unindex it */
    if (c->npending == 0 && c->nacked > 0)
        jd_due_list_add(&st->deferred, c->partition, -1, c->id, c->id_len);
}

size_t jd_store_queue_deferred(struct jd_store *st)
{
    size_t n = 0;
    const struct jd_due_list *l = &st->deferred;
    for (size_t i = 0; i < l->n; i++) {
        const struct jd_due *d = &l->v[i];
        build_pkey(st, d->source, d->due < 0 ? ":outbox" : ":timers"); /* checked when added */
        int rc;
        if (d->due > 0) {
            char num[24];
            snprintf(num, sizeof num, "%" PRId64, d->due);
            arg_str(st, 0, "ZADD");
            arg(st, 1, st->pkey.data, st->pkey.len);
            arg_str(st, 2, num);
            arg(st, 3, jd_due_id(l, i), d->id_len);
            rc = append(st, 4);
        } else {
            rc = queue_zrem(st, jd_due_id(l, i), d->id_len);
        }
        if (rc != 0)
            return SIZE_MAX;
        n++;
    }
    st->ndeferred_sent = n;
    return n;
}

/* Drops the first k entries of l (those sent), keeping the later ones. */
static void drop_front(struct jd_due_list *l, size_t k)
{
    if (k >= l->n) {
        jd_due_list_reset(l);
        return;
    }
    size_t base = l->v[k].id_off;
    memmove(l->ids.data, l->ids.data + base, l->ids.len - base);
    l->ids.len -= base;
    for (size_t i = k; i < l->n; i++) {
        l->v[i - k] = l->v[i];
        l->v[i - k].id_off -= base;
    }
    l->n -= k;
}

void jd_store_deferred_sent(struct jd_store *st, redisReply **r)
{
    /* An error here leaves an entry too many in a set (harmless: a timer
     * that finds nothing due is corrected when it fires); it is counted but
     * not retried. Every entry queued exactly one command. */
    for (size_t i = 0; i < st->ndeferred_sent; i++)
        if (r[i]->type == REDIS_REPLY_ERROR)
            st->errors++;
    drop_front(&st->deferred, st->ndeferred_sent);
}

const char *jd_store_first_error(redisReply **r, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (r[k]->type == REDIS_REPLY_ERROR)
            return r[k]->str;
    return NULL;
}

/* -------- due lists -------- */

void jd_due_list_init(struct jd_due_list *l)
{
    memset(l, 0, sizeof *l);
    jd_buf_init(&l->ids);
}

void jd_due_list_free(struct jd_due_list *l)
{
    free(l->v);
    jd_buf_free(&l->ids);
    memset(l, 0, sizeof *l);
}

void jd_due_list_reset(struct jd_due_list *l)
{
    l->n = 0;
    jd_buf_reset(&l->ids);
}

void jd_due_list_add(struct jd_due_list *l, int32_t source, int64_t due, const char *id,
                     size_t id_len)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = jd_xrealloc(l->v, l->cap * sizeof *l->v);
    }
    struct jd_due *d = &l->v[l->n++];
    d->source = source;
    d->due = due;
    d->id_off = l->ids.len;
    d->id_len = id_len;
    jd_buf_append(&l->ids, id, id_len);
    jd_buf_append(&l->ids, "", 1); /* ids read as C strings too */
}

/* -------- reads -------- */

static int parse_score(const redisReply *r, int64_t *out)
{
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 30)
        return -1;
    char buf[32], *end;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    /* scores are written as integers; Redis answers them as such */
    long long v = strtoll(buf, &end, 10);
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

int jd_store_timers_due(struct jd_store *st, const int32_t *sources, const int64_t *upto, size_t n,
                        size_t limit, int64_t *counts, struct jd_due_list *out, char *errstr,
                        size_t errsize)
{
    if (!st->ctx)
        return conn_fail(st, "timers", errstr, errsize);
    size_t nd = jd_store_queue_deferred(st), ncmd = nd;
    if (nd == SIZE_MAX)
        return conn_fail(st, "timers", errstr, errsize);
    char maxs[24], lims[24];
    snprintf(lims, sizeof lims, "%zu", limit);
    for (size_t i = 0; i < n; i++) {
        if (build_pkey(st, sources[i], ":timers") != 0)
            continue;
        if (upto[i] >= 0) {
            snprintf(maxs, sizeof maxs, "%" PRId64, upto[i]);
            arg_str(st, 0, "ZRANGEBYSCORE");
            arg(st, 1, st->pkey.data, st->pkey.len);
            arg_str(st, 2, "-inf");
            arg_str(st, 3, maxs);
            arg_str(st, 4, "WITHSCORES");
            arg_str(st, 5, "LIMIT");
            arg_str(st, 6, "0");
            arg_str(st, 7, lims);
            if (append(st, 8) != 0)
                return conn_fail(st, "timers", errstr, errsize);
            ncmd++;
        }
        if (counts) {
            arg_str(st, 0, "ZCARD");
            arg(st, 1, st->pkey.data, st->pkey.len);
            if (append(st, 2) != 0)
                return conn_fail(st, "timers", errstr, errsize);
            ncmd++;
        }
    }
    if (ncmd == 0)
        return 0;
    st->roundtrips++;
    if (read_replies(st, ncmd) != 0)
        return conn_fail(st, "timers", errstr, errsize);
    jd_store_deferred_sent(st, st->replies);
    int rc = -1;
    size_t pos = nd;
    for (size_t i = 0; i < n; i++) {
        if (build_pkey(st, sources[i], ":timers") != 0)
            continue;
        if (upto[i] >= 0) {
            const redisReply *r = st->replies[pos++];
            if (r->type == REDIS_REPLY_ERROR) {
                st->errors++;
                snprintf(errstr, errsize, "timers of %s: Redis %s:%d: %s", st->pkey.data, st->host,
                         st->port, r->str);
                goto out;
            }
            if (r->type != REDIS_REPLY_ARRAY || r->elements % 2) {
                snprintf(errstr, errsize, "timers of %s: unexpected Redis reply", st->pkey.data);
                goto out;
            }
            for (size_t k = 0; k < r->elements; k += 2) {
                const redisReply *m = r->element[k];
                int64_t due;
                if (m->type != REDIS_REPLY_STRING || parse_score(r->element[k + 1], &due) != 0) {
                    snprintf(errstr, errsize, "timers of %s: bad entry", st->pkey.data);
                    goto out;
                }
                jd_due_list_add(out, sources[i], due, m->str, m->len);
            }
        }
        if (counts) {
            const redisReply *r = st->replies[pos++];
            counts[i] = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        }
    }
    rc = 0;
out:
    free_replies(st, ncmd);
    return rc;
}

int jd_store_timers_remove(struct jd_store *st, const struct jd_due_list *entries, char *errstr,
                           size_t errsize)
{
    if (!st->ctx)
        return conn_fail(st, "timers", errstr, errsize);
    size_t ncmd = 0;
    for (size_t i = 0; i < entries->n; i++) {
        if (build_pkey(st, entries->v[i].source, ":timers") != 0)
            continue;
        if (queue_zrem(st, jd_due_id(entries, i), entries->v[i].id_len) != 0)
            return conn_fail(st, "timers", errstr, errsize);
        ncmd++;
    }
    if (ncmd == 0)
        return 0;
    st->roundtrips++;
    if (read_replies(st, ncmd) != 0)
        return conn_fail(st, "timers", errstr, errsize);
    const char *e = jd_store_first_error(st->replies, ncmd);
    if (e) {
        st->errors++;
        snprintf(errstr, errsize, "timers: Redis %s:%d: %s", st->host, st->port, e);
    }
    free_replies(st, ncmd);
    return e ? -1 : 0;
}

int jd_store_outbox_customers(struct jd_store *st, int32_t source, const char *after,
                              size_t after_len, size_t limit, struct jd_due_list *out, char *errstr,
                              size_t errsize)
{
    if (!st->ctx)
        return conn_fail(st, "outbox index", errstr, errsize);
    if (build_pkey(st, source, ":outbox") != 0)
        return 0;
    struct jd_buf min;
    jd_buf_init(&min);
    if (after) {
        jd_buf_append(&min, "(", 1);
        jd_buf_append(&min, after, after_len);
    } else {
        jd_buf_append(&min, "-", 1);
    }
    char lims[24];
    snprintf(lims, sizeof lims, "%zu", limit);
    arg_str(st, 0, "ZRANGEBYLEX");
    arg(st, 1, st->pkey.data, st->pkey.len);
    arg(st, 2, min.data, min.len);
    arg_str(st, 3, "+");
    arg_str(st, 4, "LIMIT");
    arg_str(st, 5, "0");
    arg_str(st, 6, lims);
    int rc = append(st, 7);
    jd_buf_free(&min);
    if (rc != 0)
        return conn_fail(st, "outbox index", errstr, errsize);
    st->roundtrips++;
    if (read_replies(st, 1) != 0)
        return conn_fail(st, "outbox index", errstr, errsize);
    const redisReply *r = st->replies[0];
    rc = -1;
    if (r->type == REDIS_REPLY_ERROR) {
        st->errors++;
        snprintf(errstr, errsize, "outbox index %s: Redis %s:%d: %s", st->pkey.data, st->host,
                 st->port, r->str);
    } else if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(errstr, errsize, "outbox index %s: unexpected Redis reply", st->pkey.data);
    } else {
        rc = 0;
        for (size_t k = 0; k < r->elements; k++)
            if (r->element[k]->type == REDIS_REPLY_STRING)
                jd_due_list_add(out, source, 0, r->element[k]->str, r->element[k]->len);
    }
    free_replies(st, 1);
    return rc;
}
