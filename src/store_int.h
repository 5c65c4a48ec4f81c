/*
 * store internals, shared by store*.c only: the connection and the scratch
 * buffers that turn a batch into one pipelined round trip, and the helpers
 * that build commands into them.
 */
#ifndef JOURNEYD_STORE_INT_H
#define JOURNEYD_STORE_INT_H

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/store.h"

struct jd_store {
    redisContext *ctx; /* NULL while disconnected */
    char host[256];
    int port;
    int timeout_ms;
    char *prefix;
    int history_max;
    uint64_t roundtrips;
    uint64_t errors;

    /* per-batch scratch, reused */
    const char **argv;
    size_t *argvlen;
    size_t argcap;
    struct jd_buf keys[3]; /* state, outbox, history key of the customer at hand */
    struct jd_buf enc;     /* encoded state */
    struct jd_buf vals;    /* outbox values of the customer at hand */
    size_t *valoff;
    size_t valcap;
    redisReply **replies;
    size_t repcap;
    size_t *ncmds; /* flush: commands queued per customer; 0 = skipped */
    size_t ncmdscap;

    /* per-partition keys (store_timers.c) */
    char **topics; /* cfg->input_topics: a source's topic index points here */
    size_t ntopics;
    struct jd_buf pkey; /* PREFIX:{p:TOPIC:PARTITION}:... */
    uint8_t *npre;      /* flush: commands queued before each customer's MULTI/EXEC */
    /* removals and postponements whose customer transaction succeeded: sent
     * at the head of the next round trip (due > 0: timer ZADD; 0: timer
     * ZREM; -1: outbox index ZREM) */
    struct jd_due_list deferred;
    size_t ndeferred_sent;
};

/* store_timers.c: the per-partition writes that go with one customer's
 * MULTI/EXEC in a flush (timer set, outbox index). Additions are queued in
 * the same pipeline before the transaction (jd_store_queue_pre: the number
 * of commands, SIZE_MAX on an I/O error); removals and postponements only
 * once the transaction is known to have succeeded (jd_store_defer_post,
 * before the customer's stored_timer is updated), and they go out at the
 * head of the next round trip (jd_store_queue_deferred, then
 * jd_store_deferred_sent with their replies). So neither a crash between the
 * writes nor a failed transaction ever leaves a timer later than the stored
 * state implies, or an outbox unindexed: at worst an entry too many. */
size_t jd_store_queue_pre(struct jd_store *st, const struct jd_customer *c);
void jd_store_defer_post(struct jd_store *st, const struct jd_customer *c);
size_t jd_store_queue_deferred(struct jd_store *st);
void jd_store_deferred_sent(struct jd_store *st, redisReply **r);
/* The first error reply among n, or NULL. */
const char *jd_store_first_error(redisReply **r, size_t n);

/* The connection is gone: report it and drop the context. */
static inline int conn_fail(struct jd_store *st, const char *what, char *errstr, size_t errsize)
{
    st->errors++;
    if (st->ctx) {
        snprintf(errstr, errsize, "%s: Redis %s:%d: %s (connection lost)", what, st->host, st->port,
                 st->ctx->errstr[0] ? st->ctx->errstr : "I/O error");
        redisFree(st->ctx);
        st->ctx = NULL;
    } else {
        snprintf(errstr, errsize, "%s: Redis %s:%d: not connected", what, st->host, st->port);
    }
    return -1;
}
/* -------- command building -------- */

/* PREFIX:{ID}SUFFIX into keys[which]. */
static inline void build_key(struct jd_store *st, int which, const char *id, size_t id_len,
                             const char *suffix)
{
    struct jd_buf *b = &st->keys[which];
    jd_buf_reset(b);
    jd_buf_puts(b, st->prefix);
    jd_buf_append(b, ":{", 2);
    jd_buf_append(b, id, id_len);
    jd_buf_append(b, "}", 1);
    jd_buf_puts(b, suffix);
}

static inline void args_reserve(struct jd_store *st, size_t n)
{
    if (n <= st->argcap)
        return;
    size_t cap = st->argcap ? st->argcap : 16;
    while (cap < n)
        cap *= 2;
    st->argv = jd_xrealloc(st->argv, cap * sizeof *st->argv);
    st->argvlen = jd_xrealloc(st->argvlen, cap * sizeof *st->argvlen);
    st->argcap = cap;
}

static inline void arg(struct jd_store *st, size_t i, const void *p, size_t len)
{
    args_reserve(st, i + 1);
    st->argv[i] = p;
    st->argvlen[i] = len;
}

static inline void arg_str(struct jd_store *st, size_t i, const char *s)
{
    arg(st, i, s, strlen(s));
}

static inline int append(struct jd_store *st, size_t argc)
{
    return redisAppendCommandArgv(st->ctx, (int)argc, st->argv, st->argvlen) == REDIS_OK ? 0 : -1;
}

static inline void replies_reserve(struct jd_store *st, size_t n)
{
    if (n <= st->repcap)
        return;
    st->replies = jd_xrealloc(st->replies, n * sizeof *st->replies);
    st->repcap = n;
}

/* Reads n replies into st->replies. On an I/O error frees what was read. */
static inline int read_replies(struct jd_store *st, size_t n)
{
    replies_reserve(st, n);
    for (size_t i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(st->ctx, &r) != REDIS_OK || !r) {
            for (size_t k = 0; k < i; k++)
                freeReplyObject(st->replies[k]);
            return -1;
        }
        st->replies[i] = r;
    }
    return 0;
}

static inline void free_replies(struct jd_store *st, size_t n)
{
    for (size_t i = 0; i < n; i++)
        freeReplyObject(st->replies[i]);
}

#endif
