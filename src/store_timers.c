/*
 * store_timers — the per-partition keys of the store (layout in store.h):
 * the timer set, which lets the engine find the customers whose time has
 * come without ever scanning customers, and the outbox index, which lets a
 * new owner of a partition find every trigger still waiting for Kafka that
 * no replay would bring back (fired by a timer between events, deferred).
 * A trigger fired while an event is applied, whose customer is held
 * (engine_wb.c: its offset is not committed before the acknowledgement),
 * is re-sent by the replay of that event, which loads its customer: it is
 * not indexed (a ZADD and a ZREM per trigger were a tenth of Redis's work).
 * c->indexed remembers who may be listed, so that only they are removed.
 *
 * Neither set can join a customer's write (another Redis Cluster slot), so
 * each change is ordered around that write for crash safety: additions
 * before it, removals after it. A crash in between leaves an entry too many
 * (a timer that finds nothing due, an index entry with an empty outbox:
 * both no-ops), never one too few. Within a flush's pipeline that reads:
 * the removals of earlier flushes whose writes succeeded (one ZREM per set,
 * at the head), then every addition of this flush (one ZADD per set), then
 * the customers' writes (store_flush.c). Grouping keeps the rules: every
 * addition still precedes every write of the flush (a failed ZADD fails
 * all its customers, which are then written again, so none is counted as
 * written without its entry), a removal still waits for its write to have
 * succeeded, and removals precede additions, so an entry removed and added
 * again (a customer with a new due time or trigger since) stays.
 *
 * A later due time is not written at all (lazy postponement): the set keeps
 * the earlier entry, which fires, finds nothing due, and is then moved to
 * the customer's real due time (engine_timers.c). A customer active every
 * day with a "14 days without activity" rule moves its due time at every
 * event; writing each move was a third of Redis's work. The set holds, for
 * each customer, a time no later than its real due time.
 */
#include <inttypes.h>

#include "store_int.h"

int jd_store_pkey(struct jd_store *st, int32_t source, const char *suffix)
{
    int32_t ti = source >> 16;
    if (source < 0 || (size_t)ti >= st->ntopics)
        return -1;
    jd_buf_reset(&st->pkey);
    jd_buf_printf(&st->pkey, "%s:{p:%s:%" PRId32 "}%s", st->prefix, st->topics[ti], source & 0xffff,
                  suffix);
    return 0;
}

/* The set a due-list entry names: due < 0 the outbox index, else the timers. */
static uint8_t due_set(int64_t due)
{
    return due < 0 ? PSET_OUTBOX : PSET_TIMERS;
}

static int known_source(const struct jd_store *st, int32_t source)
{
    return source >= 0 && (size_t)(source >> 16) < st->ntopics;
}

/* c's outbox gets an entry that no replay would bring back: a timer-fired
 * or deferred trigger, or one whose customer is not held (its checkpoint
 * may be stored before it is acknowledged). */
static int needs_index(const struct jd_customer *c)
{
    for (size_t k = 0; k < c->npending; k++) {
        const struct jd_pending_trigger *p = &c->pending[k];
        if (!p->stored && !(p->replayable && !p->not_before && c->held))
            return 1;
    }
    return 0;
}

/* -------- grouped writes --------
 * All the additions (or removals) of one round trip to one set go as one
 * variadic ZADD (ZREM): Redis runs one command and sends one reply per
 * partition instead of one per customer. A ZADD or ZREM is applied whole
 * or not at all, so a failed one fails every customer in it. */

#define PM_CHUNK 1024 /* members per command */

static struct pmember *pm_add(struct jd_store *st, int32_t source, uint8_t set, const char *id,
                              size_t id_len, size_t owner)
{
    if (st->npm == st->pmcap) {
        st->pmcap = st->pmcap ? st->pmcap * 2 : 64;
        st->pm = jd_xrealloc(st->pm, st->pmcap * sizeof *st->pm);
    }
    struct pmember *m = &st->pm[st->npm++];
    m->source = source;
    m->set = set;
    m->id = id;
    m->id_len = id_len;
    m->score_off = m->score_len = 0;
    m->owner = owner;
    return m;
}

static int pm_cmp(const void *a, const void *b)
{
    const struct pmember *x = a, *y = b;
    if (x->source != y->source)
        return x->source < y->source ? -1 : 1;
    if (x->set != y->set)
        return x->set < y->set ? -1 : 1;
    return x->owner < y->owner ? -1 : x->owner > y->owner;
}

/* Appends st->pm[0..npm) as one ZADD (add) or ZREM per set and PM_CHUNK
 * members, and empties it; an addition's customer learns its command
 * (st->pre). Returns the number of commands. */
static size_t pm_emit(struct jd_store *st, int add)
{
    static const char *const suffix[2] = {":timers", ":outbox"};
    size_t ncmd = 0;
    if (st->npm == 0)
        return 0;
    qsort(st->pm, st->npm, sizeof *st->pm, pm_cmp);
    for (size_t g = 0; g < st->npm;) {
        const struct pmember *m0 = &st->pm[g];
        size_t end = g + 1;
        while (end < st->npm && end - g < PM_CHUNK && st->pm[end].source == m0->source &&
               st->pm[end].set == m0->set)
            end++;
        if (jd_store_pkey(st, m0->source, suffix[m0->set]) != 0) { /* checked when added */
            g = end;
            continue;
        }
        args_reserve(st, 2 + 2 * (end - g));
        arg_str(st, 0, add ? "ZADD" : "ZREM");
        arg(st, 1, st->pkey.data, st->pkey.len);
        size_t a = 2;
        for (size_t k = g; k < end; k++) {
            if (add)
                arg(st, a++, st->scores.data + st->pm[k].score_off, st->pm[k].score_len);
            arg(st, a++, st->pm[k].id, st->pm[k].id_len);
        }
        size_t i = append(st, a, 1);
        ncmd++;
        for (size_t k = g; add && k < end; k++)
            st->pre[st->pm[k].owner].cmd[st->pm[k].set] = i;
        g = end;
    }
    st->npm = 0;
    return ncmd;
}

void jd_store_pre_begin(struct jd_store *st)
{
    st->npm = 0;
    jd_buf_reset(&st->scores);
}

void jd_store_pre_add(struct jd_store *st, struct jd_customer *c, size_t owner)
{
    int64_t want = c->next_timer, have = c->stored_timer;
    /* a new or earlier due time: firing early finds nothing, firing late
     * would be wrong */
    if (want && (!have || want < have) && known_source(st, c->partition)) {
        struct pmember *m = pm_add(st, c->partition, PSET_TIMERS, c->id, c->id_len, owner);
        m->score_off = st->scores.len;
        jd_buf_printf(&st->scores, "%" PRId64, want);
        m->score_len = st->scores.len - m->score_off;
    }
    /* the outbox gets entries: index the customer first (a deferred ZREM of
     * it goes at the head of the same pipeline, so before this) */
    if (needs_index(c) && known_source(st, c->partition)) {
        c->indexed = 1;
        struct pmember *m = pm_add(st, c->partition, PSET_OUTBOX, c->id, c->id_len, owner);
        m->score_off = st->scores.len;
        jd_buf_append(&st->scores, "0", 1);
        m->score_len = 1;
    }
}

size_t jd_store_pre_emit(struct jd_store *st)
{
    return pm_emit(st, 1);
}

const char *jd_store_pre_error(struct jd_store *st, const struct pre *p, const char *why,
                               const char **node)
{
    for (size_t k = 0; k < 2; k++) {
        if (p->cmd[k] == JD_NO_CMD)
            continue;
        const redisReply *r = jd_redis_reply(st->rd, p->cmd[k]);
        *node = jd_redis_reply_node(st->rd, p->cmd[k]);
        if (!r)
            return why && why[0] ? why : "not executed";
        if (r->type == REDIS_REPLY_ERROR)
            return r->str;
    }
    return NULL;
}

int jd_store_timer_write(const struct jd_customer *c)
{
    int64_t want = c->next_timer, have = c->stored_timer;
    return want ? !have || want < have : have != 0;
}

int64_t jd_store_timer_held(const struct jd_customer *c)
{
    int64_t want = c->next_timer, have = c->stored_timer;
    return want && have && want > have ? have : want;
}

void jd_store_defer_post(struct jd_store *st, const struct jd_customer *c, int rm_timer,
                         int unindex)
{
    if (!rm_timer && !unindex)
        return; /* nothing to remove (the common case) */
    if (!known_source(st, c->partition))
        return; /* no partition key: nothing was added either */
    /* no due time any more: removed only once the state that says so is written */
    if (rm_timer)
        jd_due_list_add(st->deferred, c->partition, 0, c->id, c->id_len);
    /* the last entries have left the outbox: unindex it */
    if (unindex)
        jd_due_list_add(st->deferred, c->partition, -1, c->id, c->id_len);
}

void jd_store_share_deferred(struct jd_store *st, struct jd_store *with)
{
    st->deferred = with->deferred;
}

void jd_store_queue_deferred(struct jd_store *st)
{
    /* Taken out of the list as they are queued, executed or not: a lost
     * removal leaves an entry too many in a set (harmless: a timer that
     * finds nothing due is corrected when it fires). Taking them keeps a
     * removal from being sent again, later, by another store sharing the
     * list, after a newer addition of the same customer. The ids stay in
     * the list's buffer (a reset keeps the memory) until they are appended
     * here. */
    struct jd_due_list *l = st->deferred;
    st->npm = 0;
    for (size_t i = 0; i < l->n; i++)
        (void)pm_add(st, l->v[i].source, due_set(l->v[i].due), jd_due_id(l, i), l->v[i].id_len, i);
    st->ndeferred_sent = pm_emit(st, 0);
    jd_due_list_reset(l);
}

void jd_store_deferred_sent(struct jd_store *st)
{
    st->ndeferred_sent = 0;
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

/* A reply that is missing or an error: errstr, -1. */
static int bad_reply(struct jd_store *st, size_t i, const char *what, const char *why, char *errstr,
                     size_t errsize)
{
    const redisReply *r = jd_redis_reply(st->rd, i);
    if (r && r->type != REDIS_REPLY_ERROR)
        return 0;
    st->errors++;
    if (!r)
        snprintf(errstr, errsize, "%s: %s", what, why[0] ? why : "not executed");
    else
        snprintf(errstr, errsize, "%s: Redis %s: %s", what, jd_redis_reply_node(st->rd, i), r->str);
    return -1;
}

int jd_store_timers_due(struct jd_store *st, const int32_t *sources, const int64_t *upto, size_t n,
                        size_t limit, int64_t *counts, struct jd_due_list *out, char *errstr,
                        size_t errsize)
{
    if (jd_redis_pending(st->rd))
        return exec_fail(st, "timers", "commands of another module are pending", errstr, errsize);
    jd_store_queue_deferred(st);
    size_t nd = st->ndeferred_sent, ncmd = nd;
    char maxs[24], lims[24], why[400];
    why[0] = '\0';
    snprintf(lims, sizeof lims, "%zu", limit);
    for (size_t i = 0; i < n; i++) {
        if (jd_store_pkey(st, sources[i], ":timers") != 0)
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
            (void)append(st, 8, 1);
            ncmd++;
        }
        if (counts) {
            arg_str(st, 0, "ZCARD");
            arg(st, 1, st->pkey.data, st->pkey.len);
            (void)append(st, 2, 1);
            ncmd++;
        }
    }
    if (ncmd == 0)
        return 0;
    (void)jd_redis_exec(st->rd, 0, why, sizeof why);
    jd_store_deferred_sent(st);
    int rc = -1;
    if (ncmd == nd) { /* only the deferred writes: their loss is harmless */
        rc = 0;
        goto out;
    }
    size_t pos = nd;
    for (size_t i = 0; i < n; i++) {
        if (jd_store_pkey(st, sources[i], ":timers") != 0)
            continue;
        if (upto[i] >= 0) {
            size_t ri = pos++;
            if (bad_reply(st, ri, "timers", why, errstr, errsize) != 0)
                goto out;
            const redisReply *r = jd_redis_reply(st->rd, ri);
            if (r->type != REDIS_REPLY_ARRAY || r->elements % 2) {
                snprintf(errstr, errsize, "timers of %s: unexpected Redis reply", st->pkey.data);
                goto out;
            }
            for (size_t k = 0; k < r->elements; k += 2) {
                const redisReply *m = r->element[k];
                int64_t due;
                if (m->type != REDIS_REPLY_STRING ||
                    jd_store_reply_int(r->element[k + 1], &due) != 0) {
                    snprintf(errstr, errsize, "timers of %s: bad entry", st->pkey.data);
                    goto out;
                }
                jd_due_list_add(out, sources[i], due, m->str, m->len);
            }
        }
        if (counts) {
            const redisReply *r = jd_redis_reply(st->rd, pos++);
            counts[i] = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        }
    }
    rc = 0;
out:
    jd_redis_clear(st->rd);
    return rc;
}

int jd_store_timers_remove(struct jd_store *st, const struct jd_due_list *entries, char *errstr,
                           size_t errsize)
{
    if (jd_redis_pending(st->rd))
        return exec_fail(st, "timers", "commands of another module are pending", errstr, errsize);
    st->npm = 0;
    for (size_t i = 0; i < entries->n; i++)
        if (known_source(st, entries->v[i].source))
            (void)pm_add(st, entries->v[i].source, due_set(entries->v[i].due),
                         jd_due_id(entries, i), entries->v[i].id_len, i);
    size_t ncmd = pm_emit(st, 0); /* (nothing was pending: they are commands 0..ncmd) */
    if (ncmd == 0)
        return 0;
    char why[400];
    why[0] = '\0';
    (void)jd_redis_exec(st->rd, 0, why, sizeof why);
    int rc = 0;
    for (size_t k = 0; k < ncmd && rc == 0; k++)
        rc = bad_reply(st, k, "timers", why, errstr, errsize);
    jd_redis_clear(st->rd);
    return rc;
}

int jd_store_outbox_customers(struct jd_store *st, int32_t source, const char *after,
                              size_t after_len, size_t limit, struct jd_due_list *out, char *errstr,
                              size_t errsize)
{
    if (jd_redis_pending(st->rd))
        return exec_fail(st, "outbox index", "commands of another module are pending", errstr,
                         errsize);
    if (jd_store_pkey(st, source, ":outbox") != 0)
        return 0;
    struct jd_buf min;
    jd_buf_init(&min);
    if (after) {
        jd_buf_append(&min, "(", 1);
        jd_buf_append(&min, after, after_len);
    } else {
        jd_buf_append(&min, "-", 1);
    }
    char lims[24], why[400];
    why[0] = '\0';
    snprintf(lims, sizeof lims, "%zu", limit);
    arg_str(st, 0, "ZRANGEBYLEX");
    arg(st, 1, st->pkey.data, st->pkey.len);
    arg(st, 2, min.data, min.len);
    arg_str(st, 3, "+");
    arg_str(st, 4, "LIMIT");
    arg_str(st, 5, "0");
    arg_str(st, 6, lims);
    size_t i = append(st, 7, 1);
    (void)jd_redis_exec(st->rd, 0, why, sizeof why);
    jd_buf_free(&min);
    int rc = bad_reply(st, i, "outbox index", why, errstr, errsize);
    const redisReply *r = jd_redis_reply(st->rd, i);
    if (rc == 0 && r->type != REDIS_REPLY_ARRAY) {
        snprintf(errstr, errsize, "outbox index %s: unexpected Redis reply", st->pkey.data);
        rc = -1;
    }
    for (size_t k = 0; rc == 0 && k < r->elements; k++)
        if (r->element[k]->type == REDIS_REPLY_STRING)
            jd_due_list_add(out, source, 0, r->element[k]->str, r->element[k]->len);
    jd_redis_clear(st->rd);
    return rc;
}
