/*
 * store — customers' journey state in Redis (layout in store.h).
 *
 * Owns one synchronous hiredis connection and the scratch buffers that turn
 * a batch of customers into one pipelined round trip: every command of the
 * batch is appended (redisAppendCommandArgv, binary-safe), then every reply
 * is read. Each customer's write is its own MULTI/EXEC on its own keys, so
 * the layout stays valid for Redis Cluster and one customer's failure (an
 * OOM, a READONLY replica) never half-writes another.
 *
 * After an I/O error the hiredis context is unusable; every call then fails
 * fast until jd_store_reconnect succeeds.
 */
#include "journeyd/store.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "store_int.h"

#define DEFAULT_ADDRESS "127.0.0.1:6379"
#define OUTBOX_NOT_BEFORE 0x80 /* kind byte flag: a not_before time follows */

static int store_connect(struct jd_store *st, char *errstr, size_t errsize)
{
    struct timeval tv = {st->timeout_ms / 1000, (st->timeout_ms % 1000) * 1000};
    redisContext *ctx = redisConnectWithTimeout(st->host, st->port, tv);
    if (!ctx) {
        snprintf(errstr, errsize, "Redis %s:%d: cannot allocate a connection", st->host, st->port);
        return -1;
    }
    if (ctx->err) {
        snprintf(errstr, errsize, "Redis %s:%d: %s", st->host, st->port, ctx->errstr);
        redisFree(ctx);
        return -1;
    }
    if (redisSetTimeout(ctx, tv) != REDIS_OK) {
        snprintf(errstr, errsize, "Redis %s:%d: cannot set the timeout", st->host, st->port);
        redisFree(ctx);
        return -1;
    }
    st->ctx = ctx;
    return 0;
}

struct jd_store *jd_store_new(const struct jd_config *cfg, char *errstr, size_t errsize)
{
    struct jd_store *st = jd_xcalloc(1, sizeof *st);
    const char *addr = cfg->nredis_addresses ? cfg->redis_addresses[0] : DEFAULT_ADDRESS;
    if (jd_parse_hostport(addr, st->host, sizeof st->host, &st->port) != 0) {
        snprintf(errstr, errsize, "bad Redis address \"%s\" (want HOST:PORT)", addr);
        goto err;
    }
    st->timeout_ms = cfg->redis_timeout_ms > 0 ? cfg->redis_timeout_ms : 2000;
    st->prefix = jd_strdup(cfg->key_prefix ? cfg->key_prefix : "j");
    st->history_max = cfg->history_max;
    st->topics = cfg->input_topics;
    st->ntopics = cfg->ninput_topics;
    jd_buf_init(&st->pkey);
    jd_due_list_init(&st->deferred);
    for (size_t i = 0; i < 3; i++)
        jd_buf_init(&st->keys[i]);
    jd_buf_init(&st->enc);
    jd_buf_init(&st->vals);
    if (store_connect(st, errstr, errsize) != 0)
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
    if (st->ctx)
        redisFree(st->ctx);
    free(st->prefix);
    free(st->argv);
    free(st->argvlen);
    for (size_t i = 0; i < 3; i++)
        jd_buf_free(&st->keys[i]);
    jd_buf_free(&st->enc);
    jd_buf_free(&st->vals);
    free(st->valoff);
    free(st->replies);
    free(st->ncmds);
    free(st->npre);
    jd_due_list_free(&st->deferred);
    jd_buf_free(&st->pkey);
    free(st);
}

int jd_store_reconnect(struct jd_store *st, char *errstr, size_t errsize)
{
    if (st->ctx) {
        redisFree(st->ctx);
        st->ctx = NULL;
    }
    return store_connect(st, errstr, errsize);
}

int jd_store_ping(struct jd_store *st)
{
    char err[256];
    if (!st->ctx)
        return -1;
    redisReply *r = redisCommand(st->ctx, "PING");
    st->roundtrips++;
    if (!r)
        return conn_fail(st, "PING", err, sizeof err);
    int ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    freeReplyObject(r);
    return ok ? 0 : -1;
}

uint64_t jd_store_roundtrips(const struct jd_store *st)
{
    return st->roundtrips;
}

uint64_t jd_store_errors(const struct jd_store *st)
{
    return st->errors;
}

int jd_store_connected(const struct jd_store *st)
{
    return st->ctx != NULL;
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
    if (!st->ctx)
        return conn_fail(st, "load", errstr, errsize);
    for (size_t i = 0; i < n; i++) {
        build_key(st, 0, cs[i]->id, cs[i]->id_len, "");
        arg_str(st, 0, "GET");
        arg(st, 1, st->keys[0].data, st->keys[0].len);
        if (append(st, 2) != 0)
            return conn_fail(st, "load", errstr, errsize);
        build_key(st, 0, cs[i]->id, cs[i]->id_len, ":o");
        arg_str(st, 0, "HGETALL");
        arg(st, 1, st->keys[0].data, st->keys[0].len);
        if (append(st, 2) != 0)
            return conn_fail(st, "load", errstr, errsize);
    }
    st->roundtrips++;
    if (read_replies(st, 2 * n) != 0)
        return conn_fail(st, "load", errstr, errsize);

    /* Everything is decoded first and applied only if all of it is good:
     * a failed load leaves every customer as it was. */
    struct jd_customer **tmps = jd_xcalloc(n, sizeof *tmps);
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        const redisReply *s = st->replies[2 * i], *o = st->replies[2 * i + 1];
        if (reply_error(s) || reply_error(o)) {
            st->errors++;
            snprintf(errstr, errsize, "load customer '%s': Redis %s:%d: %s", cs[i]->id, st->host,
                     st->port, reply_error(s) ? s->str : o->str);
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
        if (st->replies[2 * i]->type == REDIS_REPLY_STRING) {
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
    free_replies(st, 2 * n);
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
    return c->dirty || c->nacked || c->nhistory || unstored_pending(c) ||
           c->next_timer != c->stored_timer;
}

/* Queues MULTI ... EXEC for one customer; returns the number of commands
 * queued, 0 on an I/O error. */
static size_t queue_customer(struct jd_store *st, const struct jd_ruleset *rs,
                             const struct jd_customer *c)
{
    size_t ncmd = 0, a;
    build_key(st, 0, c->id, c->id_len, "");
    build_key(st, 1, c->id, c->id_len, ":o");
    build_key(st, 2, c->id, c->id_len, ":h");

    arg_str(st, 0, "MULTI");
    if (append(st, 1) != 0)
        return 0;
    ncmd++;

    if (c->dirty || c->next_timer != c->stored_timer) { /* nt is in the state */
        jd_buf_reset(&st->enc);
        jd_customer_encode(c, rs, &st->enc);
        arg_str(st, 0, "SET");
        arg(st, 1, st->keys[0].data, st->keys[0].len);
        arg(st, 2, st->enc.data, st->enc.len);
        if (append(st, 3) != 0)
            return 0;
        ncmd++;
    }

    /* outbox values first, into one buffer; pointers taken once it is final */
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
    if (nvals) {
        arg_str(st, 0, "HSET");
        arg(st, 1, st->keys[1].data, st->keys[1].len);
        a = 2;
        size_t v = 0;
        for (size_t k = 0; k < c->npending; k++) {
            const struct jd_pending_trigger *p = &c->pending[k];
            if (p->stored)
                continue;
            arg_str(st, a++, p->trigger_id);
            arg(st, a++, st->vals.data + st->valoff[v], st->valoff[v + 1] - st->valoff[v]);
            v++;
        }
        if (append(st, a) != 0)
            return 0;
        ncmd++;
    }

    if (c->nacked) {
        arg_str(st, 0, "HDEL");
        arg(st, 1, st->keys[1].data, st->keys[1].len);
        for (size_t k = 0; k < c->nacked; k++)
            arg_str(st, 2 + k, c->acked[k]);
        if (append(st, 2 + c->nacked) != 0)
            return 0;
        ncmd++;
    }

    if (st->history_max > 0) {
        arg_str(st, 0, "LPUSH");
        arg(st, 1, st->keys[2].data, st->keys[2].len);
        a = 2;
        for (size_t k = 0; k < c->nhistory; k++)
            arg_str(st, a++, c->history[k]);
        for (size_t k = 0; k < c->npending; k++)
            if (c->pending[k].history)
                arg_str(st, a++, c->pending[k].history);
        if (a > 2) {
            if (append(st, a) != 0)
                return 0;
            char stop[24];
            snprintf(stop, sizeof stop, "%d", st->history_max - 1);
            arg_str(st, 0, "LTRIM");
            arg(st, 1, st->keys[2].data, st->keys[2].len);
            arg_str(st, 2, "0");
            arg_str(st, 3, stop);
            if (append(st, 4) != 0)
                return 0;
            ncmd += 2;
        }
    }

    arg_str(st, 0, "EXEC");
    if (append(st, 1) != 0)
        return 0;
    return ncmd + 1;
}

/* The customer's write is in Redis: record what no longer needs writing. */
static void flushed(struct jd_customer *c)
{
    c->dirty = 0;
    c->exists = 1;
    c->stored_timer = c->next_timer;
    jd_customer_clear_acked(c);
    for (size_t k = 0; k < c->nhistory; k++)
        free(c->history[k]);
    c->nhistory = 0;
    for (size_t k = 0; k < c->npending; k++) {
        c->pending[k].stored = 1;
        free(c->pending[k].history);
        c->pending[k].history = NULL;
    }
}

/* The first error among one customer's replies (queueing errors first: the
 * EXEC error only says the transaction was discarded). NULL when written. */
static const char *customer_error(redisReply **r, size_t ncmd)
{
    for (size_t k = 0; k + 1 < ncmd; k++)
        if (r[k]->type == REDIS_REPLY_ERROR)
            return r[k]->str;
    const redisReply *ex = r[ncmd - 1];
    if (ex->type == REDIS_REPLY_ERROR)
        return ex->str;
    if (ex->type != REDIS_REPLY_ARRAY)
        return "transaction aborted (EXEC returned nil)";
    if (ex->elements != ncmd - 2)
        return "unexpected EXEC reply";
    for (size_t k = 0; k < ex->elements; k++)
        if (ex->element[k]->type == REDIS_REPLY_ERROR)
            return ex->element[k]->str;
    return NULL;
}

int jd_store_flush(struct jd_store *st, const struct jd_ruleset *rs, struct jd_customer **cs,
                   size_t n, char *errstr, size_t errsize)
{
    if (n == 0)
        return 0;
    if (!st->ctx)
        return conn_fail(st, "flush", errstr, errsize);
    if (st->ncmdscap < n) {
        st->ncmds = jd_xrealloc(st->ncmds, n * sizeof *st->ncmds);
        st->npre = jd_xrealloc(st->npre, n * sizeof *st->npre);
        st->ncmdscap = n;
    }
    size_t total = jd_store_queue_deferred(st);
    if (total == SIZE_MAX)
        return conn_fail(st, "flush", errstr, errsize);
    for (size_t i = 0; i < n; i++) {
        st->ncmds[i] = 0;
        if (!needs_write(cs[i]))
            continue;
        /* per-partition additions go before the transaction (store_int.h) */
        size_t pre = jd_store_queue_pre(st, cs[i]);
        if (pre == SIZE_MAX || (st->ncmds[i] = queue_customer(st, rs, cs[i])) == 0)
            return conn_fail(st, "flush", errstr, errsize);
        st->npre[i] = (uint8_t)pre;
        total += pre + st->ncmds[i];
    }
    if (total == 0)
        return 0;
    st->roundtrips++;
    if (read_replies(st, total) != 0)
        return conn_fail(st, "flush", errstr, errsize);

    jd_store_deferred_sent(st, st->replies);
    size_t failed = 0, pos = st->ndeferred_sent;
    for (size_t i = 0; i < n; i++) {
        if (!st->ncmds[i])
            continue;
        const char *e = jd_store_first_error(st->replies + pos, st->npre[i]);
        pos += st->npre[i];
        const char *tx = customer_error(st->replies + pos, st->ncmds[i]);
        pos += st->ncmds[i];
        e = e ? e : tx;
        if (!e) {
            jd_store_defer_post(st, cs[i]);
            flushed(cs[i]);
            continue;
        }
        if (failed++ == 0)
            snprintf(errstr, errsize, "flush customer '%s': Redis %s:%d: %s", cs[i]->id, st->host,
                     st->port, e);
    }
    free_replies(st, total);
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

/* -------- journeyctl -------- */

int jd_store_history(struct jd_store *st, const char *customer_id, size_t max, char ***lines,
                     size_t *nlines, char *errstr, size_t errsize)
{
    *lines = NULL;
    *nlines = 0;
    if (!st->ctx)
        return conn_fail(st, "history", errstr, errsize);
    if (max == 0)
        return 0;
    build_key(st, 0, customer_id, strlen(customer_id), ":h");
    char stop[24];
    snprintf(stop, sizeof stop, "%zu", max - 1);
    arg_str(st, 0, "LRANGE");
    arg(st, 1, st->keys[0].data, st->keys[0].len);
    arg_str(st, 2, "0");
    arg_str(st, 3, stop);
    if (append(st, 4) != 0)
        return conn_fail(st, "history", errstr, errsize);
    st->roundtrips++;
    if (read_replies(st, 1) != 0)
        return conn_fail(st, "history", errstr, errsize);
    redisReply *r = st->replies[0];
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
    freeReplyObject(r);
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
