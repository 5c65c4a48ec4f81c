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

#define JD_NO_CMD ((size_t)-1)
#define OUTBOX_NOT_BEFORE 0x80 /* outbox value's kind byte: a not_before time follows */

/* Where one customer's commands are in the pipeline. */
struct queued {
    size_t first, n; /* its outbox and history commands (n 0: none) */
    size_t state;    /* the command carrying its state: its SET, or an MSET
                        shared with other customers (JD_NO_CMD: none) */
    size_t multi;    /* the MULTI of the transaction they are in (its own on a
                        cluster, shared on a single node; JD_NO_CMD: none) */
    size_t exec;     /* and that transaction's EXEC */
};

/* A customer's additions to its partition's sets, before its write: each a
 * member of a ZADD shared with the flush's other customers of that set. */
struct pre {
    size_t cmd[2];  /* the ZADD to the timer set, to the outbox index (JD_NO_CMD: none) */
    uint8_t failed; /* cluster: the additions failed in their own round */
};

/* One member of a grouped ZADD or ZREM on a per-partition set (store_timers.c). */
struct pmember {
    int32_t source;
    uint8_t set;    /* PSET_TIMERS, PSET_OUTBOX */
    const char *id; /* stable until the command is appended */
    size_t id_len;
    size_t score_off; /* ZADD: the score's text in st->scores */
    size_t score_len;
    size_t owner; /* additions: the customer's index in the flush */
};
#define PSET_TIMERS 0
#define PSET_OUTBOX 1

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
    uint8_t cls;       /* WRITE_NONE, WRITE_STATE (MSET), WRITE_OWN (store.c) */
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
    struct pre *pre;    /* flush: each customer's additions before its write */
    /* members of the grouped ZADDs / ZREMs being built, and the scores' text */
    struct pmember *pm;
    size_t npm, pmcap;
    struct jd_buf scores;
    /* removals whose customer's write succeeded: sent at the head of the
     * next round trip (due 0: from the timer set; -1: from the outbox
     * index), one ZREM per set */
    struct jd_due_list own_deferred;
    struct jd_due_list *deferred; /* own_deferred, or another store's (shared) */
    size_t ndeferred_sent;        /* their commands, at the head of the pipeline */
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

/* A reply holding a decimal integer (a score, a hash field): 0 and *out,
 * or -1 when it is not one. */
static inline int jd_store_reply_int(const redisReply *r, int64_t *out)
{
    if (!r || r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 30)
        return -1;
    char buf[32], *end;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    long long v = strtoll(buf, &end, 10);
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* PREFIX:{p:TOPIC:PARTITION}SUFFIX into st->pkey; -1 for an unknown source
 * (store_timers.c). */
int jd_store_pkey(struct jd_store *st, int32_t source, const char *suffix);

/* store_timers.c: the per-partition writes that go with the customers'
 * writes in a flush (timer set, outbox index). Additions are gathered per
 * set (jd_store_pre_add) and appended, one variadic ZADD per set, before
 * every customer write of the flush (jd_store_pre_emit: st->pre[i] says
 * which ZADDs hold customer i); on a Redis Cluster, where the sets live on
 * other masters than the customers, they are executed in a round of their
 * own first (jd_store_flush). Removals go only once the customer's write is
 * known to have succeeded (jd_store_defer_post, before the customer's
 * stored_timer is updated), at the head of the next round trip, one
 * variadic ZREM per set (jd_store_queue_deferred, then
 * jd_store_deferred_sent once executed). So neither a crash between the
 * writes nor a failed write ever leaves a timer later than the stored
 * state implies, or an outbox unindexed: at worst an entry too many.
 * Postponements are not written (store_timers.c: lazy postponement). */
void jd_store_pre_begin(struct jd_store *st);
void jd_store_pre_add(struct jd_store *st, struct jd_customer *c, size_t owner);
/* Appends the gathered additions; returns the number of commands. */
size_t jd_store_pre_emit(struct jd_store *st);
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
/* The first error (or missing) reply of a customer's additions, or NULL;
 * *node: the node that answered. */
const char *jd_store_pre_error(struct jd_store *st, const struct pre *p, const char *why,
                               const char **node);

#endif
