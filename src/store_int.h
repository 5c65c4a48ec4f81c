/*
 * store internals, shared by store*.c only: the connection, the scratch
 * buffers that turn a batch into one pipeline, and the helpers that build
 * commands into them.
 */
#ifndef JOURNEYD_STORE_INT_H
#define JOURNEYD_STORE_INT_H

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/redis_conn.h"
#include "journeyd/store.h"

/* Where one customer's commands are in the pipeline. */
struct queued {
    size_t first, n; /* n 0: nothing to write */
    int multi;       /* MULTI ... EXEC (else single commands, see queue_customer) */
};

/* What a customer's write does once it succeeds, taken when it is built:
 * the engine may change the customer while the write is on its way. */
struct wsnap {
    int64_t held;      /* the timer set's entry for it (jd_store_timer_held) */
    size_t npending;   /* outbox entries [0, npending) are in the write */
    size_t nhistory;   /* and history lines [0, nhistory) */
    uint8_t built;     /* a write of it is in the pipeline */
    uint8_t was_dirty; /* its state was changed (restored if the write fails) */
    uint8_t rm_timer;  /* no due time any more: remove its entry after */
    uint8_t unindex;   /* the outbox is empty after: unindex it after */
};

struct jd_store {
    struct jd_redis *rd;
    char *prefix;
    int history_max;
    uint64_t errors;
    uint64_t redirects_taken;

    /* per-batch scratch, reused */
    const char **argv;
    size_t *argvlen;
    size_t argcap;
    struct jd_buf keys[3]; /* state, outbox, history key of the customer at hand */
    struct jd_buf enc;     /* encoded state */
    struct jd_buf vals;    /* outbox values of the customer at hand */
    size_t *valoff;
    size_t valcap;
    struct queued *q;
    struct wsnap *snap;
    size_t qcap; /* of q, pre and snap */
    /* the flush being built, executed, finished (jd_store_flush_build) */
    size_t fl_base, fl_n;
    int fl_exec;
    char fl_why[400];
    /* single node: the state-only writes of a flush, gathered into MSETs
     * (store.c): keys and values back to back, 2 offsets per customer */
    struct jd_buf mset;
    size_t *msetoff;
    size_t *msetcust; /* their index in the flush (q[]) */
    size_t nmset, msetcap;

    /* per-partition keys (store_timers.c) */
    char **topics; /* cfg->input_topics: a source's topic index points here */
    size_t ntopics;
    struct jd_buf pkey; /* PREFIX:{p:TOPIC:PARTITION}:... */
    struct queued *pre; /* flush: each customer's additions before its transaction */
    /* removals and postponements whose customer transaction succeeded: sent
     * at the head of the next round trip (due > 0: timer ZADD; 0: timer
     * ZREM; -1: outbox index ZREM) */
    struct jd_due_list own_deferred;
    struct jd_due_list *deferred; /* own_deferred, or another store's (shared) */
    size_t ndeferred_sent;
};

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

/* Appends argv[0..argc) (argv[1] is the key when has_key) to the pipeline. */
static inline size_t append(struct jd_store *st, size_t argc, int has_key)
{
    return jd_redis_append(st->rd, has_key ? 1 : 0, (int)argc, st->argv, st->argvlen);
}

/* The pipeline failed as a whole (nothing usable came back). */
static inline int exec_fail(struct jd_store *st, const char *what, const char *why, char *errstr,
                            size_t errsize)
{
    st->errors++;
    snprintf(errstr, errsize, "%s: %s", what, why);
    return -1;
}

/* store_timers.c: the per-partition writes that go with one customer's
 * MULTI/EXEC in a flush (timer set, outbox index). Additions are appended
 * before the transaction (jd_store_queue_pre: where they went); on a Redis
 * Cluster, where the two live on different masters, they are executed in a
 * round of their own first (jd_store_flush). Removals go only once the
 * transaction is known to have succeeded
 * (jd_store_defer_post, before the customer's stored_timer is updated), at
 * the head of the next round trip (jd_store_queue_deferred, then
 * jd_store_deferred_sent once executed). So neither a crash between the
 * writes nor a failed transaction ever leaves a timer later than the stored
 * state implies, or an outbox unindexed: at worst an entry too many.
 * Postponements are not written (store_timers.c: lazy postponement). */
struct queued jd_store_queue_pre(struct jd_store *st, const struct jd_customer *c);
void jd_store_defer_post(struct jd_store *st, const struct jd_customer *c, int rm_timer,
                         int unindex);
/* c's timer set entry must be written: a new or earlier due time (added
 * before the transaction), or none any more (removed after it). */
int jd_store_timer_write(const struct jd_customer *c);
/* The due time the set holds for c once its write is done (a later one is
 * not written: the earlier entry stays). */
int64_t jd_store_timer_held(const struct jd_customer *c);
void jd_store_queue_deferred(struct jd_store *st);
void jd_store_deferred_sent(struct jd_store *st);
/* The first error (or missing) reply of a queued run, or NULL. */
const char *jd_store_queued_error(struct jd_store *st, const struct queued *q, const char *why);

#endif
