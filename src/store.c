/*
 * store — customers' journey state in Redis (layout in store.h): the
 * connection, loads, and journeyctl's reads; writing back is
 * store_flush.c, the per-partition sets store_timers.c.
 *
 * Everything goes over a struct jd_redis (redis_conn.h), which sends a
 * pipeline in one round trip per Redis master: a single node or the
 * masters of a Redis Cluster, one code path. A customer's write never
 * half-writes it: its commands are one MULTI/EXEC, or one atomic command
 * (SET, a key of an MSET). On a Redis Cluster each customer's transaction
 * is its own, on its own keys (one hash tag, so one slot); on a single node
 * the customers of a flush that need a transaction share one (store_flush.c).
 * Owns the connection and the scratch buffers that are reused from batch to
 * batch.
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
    jd_buf_init(&st->scores);
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
    free(st->pm);
    jd_buf_free(&st->scores);
    jd_due_list_free(&st->own_deferred);
    free(st);
}

void jd_store_trim(struct jd_store *st)
{
    jd_redis_trim(st->rd);
    struct jd_buf *bufs[] = {&st->enc, &st->vals, &st->mset, &st->scores};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        jd_buf_free(bufs[i]); /* (leaves it empty, ready for use) */
    free(st->q);
    free(st->pre);
    free(st->snap);
    st->q = NULL;
    st->pre = NULL;
    st->snap = NULL;
    st->qcap = 0;
    free(st->pm);
    st->pm = NULL;
    st->pmcap = st->npm = 0;
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
        p->topic = jd_cstrndup(value->str + start, tlen);
    }
    size_t off = start + tlen + 1;
    jd_pending_set_value(p, value->str + off, value->len - off);
    p->stored = 1;
    return 0;
}

/* Moves the outbox entries of tmp into c (an entry c already holds wins). */
static void take_pending(struct jd_customer *c, struct jd_customer *tmp)
{
    if (tmp->npending > 0)
        c->indexed = 1; /* perhaps (a replayable entry is not): unindexed when emptied */
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
