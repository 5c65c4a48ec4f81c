/*
 * state — one customer's journey state in memory: the core profile, the
 * rule set's aggregate slots and trigger bookkeeping, the duplicate guard,
 * and the outbox of triggers waiting for Kafka's acknowledgement.
 *
 * Owns every allocation hanging off a jd_customer. The serialised form is in
 * state_codec.c (docs/state-format.md).
 *
 * Hot path: jd_customer_apply_core runs once per event; it allocates only
 * when a customer sees an event type or channel for the first time, and the
 * shipped type and channel names point at static strings instead.
 *
 * Also owns the process-wide pool of time zone names (jd_customer_set_tz).
 */
#include "journeyd/state.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/rules.h"
#include "state_internal.h"

/* The well-known event types (SPEC §1) and channels, one after the other in
 * one array, so that "is this one of them" is a range check on the pointer
 * (jd_name_eq). Everything about them is laid out at compile time: nothing
 * depends on initialisation order. */
/* clang-format off */
#define KNOWN_NAMES(X)                                                                             \
    /* event types */                                                                              \
    X(page_view) X(product_view) X(add_to_cart) X(checkout_started) X(purchase) X(refund)          \
    X(app_open) X(email_open) X(email_click) X(push_open) X(support_contact) X(feedback)           \
    X(reward_redeemed) X(signup)                                                                   \
    /* channels */                                                                                 \
    X(web) X(app) X(email) X(store) X(call_center) X(social) X(sms) X(push)
/* clang-format on */
#define AS_FIELD(n) char n[sizeof #n];
#define AS_TEXT(n) #n "\0"
#define AS_NAME(n) jd_known_pool + offsetof(struct known_layout, n),
struct known_layout {
    KNOWN_NAMES(AS_FIELD)
};
_Static_assert(sizeof(struct known_layout) == JD_KNOWN_POOL_SIZE, "JD_KNOWN_POOL_SIZE (state.h)");
/* (the literal's own final NUL does not fit, and is not needed) */
const char jd_known_pool[JD_KNOWN_POOL_SIZE] = KNOWN_NAMES(AS_TEXT);

static const char *const known_names[] = {KNOWN_NAMES(AS_NAME)};
#define NKNOWN (sizeof known_names / sizeof known_names[0])
_Static_assert(NKNOWN < 256, "codes fit the lookup index");

/* the names apply_core compares every event with */
#define K_PURCHASE (jd_known_pool + offsetof(struct known_layout, purchase))
#define K_REFUND (jd_known_pool + offsetof(struct known_layout, refund))
#define K_FEEDBACK (jd_known_pool + offsetof(struct known_layout, feedback))

/* The code (index in known_names) of a known copy. */
#define AS_ENUM(n) KN_##n,
enum { KNOWN_NAMES(AS_ENUM) KN_COUNT };
_Static_assert(KN_COUNT == NKNOWN, "one list");
#define AS_CODE(n)                                                                                 \
    case offsetof(struct known_layout, n):                                                         \
        return KN_##n;
static uint64_t code_of(const char *k)
{
    switch ((size_t)((uintptr_t)k - (uintptr_t)jd_known_pool)) {
        KNOWN_NAMES(AS_CODE)
    default:
        abort(); /* a pointer into the pool that is not a name's start */
    }
}

/* The known names by first byte (codes), for the lookups; built once, by the
 * first lookup. */
static uint8_t by_first[256][NKNOWN];
static uint8_t nby_first[256];
static pthread_once_t by_first_once = PTHREAD_ONCE_INIT;

static void index_known(void)
{
    for (size_t i = 0; i < NKNOWN; i++) {
        unsigned char f = (unsigned char)known_names[i][0];
        by_first[f][nby_first[f]++] = (uint8_t)i;
    }
}

/* The code of a known name of len bytes (not NUL-terminated), or NKNOWN. */
static size_t known_code(const char *s, size_t len)
{
    if (len == 0)
        return NKNOWN;
    pthread_once(&by_first_once, index_known);
    unsigned char f = (unsigned char)s[0];
    for (size_t i = 0; i < nby_first[f]; i++) {
        const char *k = known_names[by_first[f][i]];
        if (strncmp(k, s, len) == 0 && k[len] == '\0')
            return by_first[f][i];
    }
    return NKNOWN;
}

const char *jd_state_known(const char *s)
{
    if (!s || jd_state_is_known(s))
        return s;
    pthread_once(&by_first_once, index_known);
    unsigned char f = (unsigned char)s[0];
    for (size_t i = 0; i < nby_first[f]; i++) {
        const char *k = known_names[by_first[f][i]];
        /* (the second byte first: it tells most names of a first byte
         * apart, so strcmp runs about once per lookup; s[1] is in bounds:
         * at worst the NUL of a one-byte name) */
        if (k[1] == s[1] && strcmp(k, s) == 0)
            return k;
    }
    return NULL;
}

#define CODE_MASK (((uint64_t)1 << JD_COUNT_CODE_BITS) - 1)
#define COUNT_ONE ((uint64_t)1 << JD_COUNT_CODE_BITS)

/* The user-defined type names sit after the counts, in code order. */
_Static_assert(sizeof(struct jd_type_count) % _Alignof(char *) == 0, "names after the counts");

static char **count_names(const struct jd_customer *c)
{
    return (char **)(c->counts + c->ncounts);
}

static size_t count_nnames(const struct jd_customer *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->ncounts; i++)
        n += (c->counts[i].v & CODE_MASK) >= NKNOWN;
    return n;
}

const char *jd_customer_count_type(const struct jd_customer *c, size_t i)
{
    size_t code = (size_t)(c->counts[i].v & CODE_MASK);
    return code < NKNOWN ? known_names[code] : count_names(c)[code - NKNOWN];
}

/* Returns a static copy of a well-known name, or a heap copy. */
char *jd_state_intern(const char *s, size_t len)
{
    size_t code = known_code(s, len);
    if (code < NKNOWN)
        return (char *)known_names[code];
    return jd_cstrndup(s, len);
}

void jd_state_unintern(char *s)
{
    if (s && !jd_state_is_known(s))
        jd_cfree(s);
}

struct jd_customer *jd_customer_new(const char *id, size_t id_len, int32_t partition,
                                    const struct jd_ruleset *rs)
{
    /* the id lives at the end of the struct: one allocation less per customer */
    struct jd_customer *c = jd_ccalloc(sizeof *c + id_len + 1);
    memcpy(c->id, id, id_len);
    c->id_len = (uint32_t)id_len;
    c->partition = partition;
    c->applied_offset = -1;
    c->last_score = -1;
    c->stage = -1;
    if (rs) {
        c->naggs = (uint32_t)jd_rules_naggs(rs);
        c->ntriggers = (uint32_t)jd_rules_ntriggers(rs);
        if (c->naggs || c->ntriggers) {
            /* the slots and the trigger arrays share one allocation, owned
             * through c->aggs */
            size_t sz =
                c->naggs * sizeof *c->aggs + c->ntriggers * (sizeof(int64_t) + sizeof(uint32_t));
            c->aggs = jd_ccalloc(sz);
            for (size_t i = 0; i < c->naggs; i++)
                jd_rules_agg_init(rs, i, &c->aggs[i]);
        }
    }
    return c;
}

/* Frees what jd_customer_encode covers, leaving those fields empty. */
static void free_persisted(struct jd_customer *c)
{
    jd_state_unintern(c->last_channel);
    c->last_channel = NULL;
    if (c->counts) {
        size_t nnames = count_nnames(c);
        for (size_t j = 0; j < nnames; j++)
            jd_cfree(count_names(c)[j]);
    }
    jd_cfree(c->counts);
    c->counts = NULL;
    c->ncounts = 0;
    for (size_t i = 0; i < c->naggs; i++)
        jd_agg_free(&c->aggs[i]);
    jd_cfree(c->aggs); /* and the trigger arrays with it */
    c->aggs = NULL;
    c->naggs = 0;
    if (c->trigger_sends)
        for (size_t i = 0; i < c->ntriggers; i++)
            jd_cfree(c->trigger_sends[i].t);
    jd_cfree(c->trigger_sends);
    c->trigger_sends = NULL;
    c->ntriggers = 0;
    if (c->kind_sends)
        for (size_t k = 0; k < JD_KIND_COUNT; k++)
            jd_cfree(c->kind_sends[k].t);
    jd_cfree(c->kind_sends);
    c->kind_sends = NULL;
    jd_customer_set_tz(c, NULL, 0);
    c->optout = 0;
    jd_cfree(c->goals);
    c->goals = NULL;
    c->ngoals = 0;
}

static void pending_free(struct jd_pending_trigger *p)
{
    jd_cfree(p->topic);
    jd_cfree(p->value.data);
    free(p->history);
}

void jd_pending_set_value(struct jd_pending_trigger *p, const void *data, size_t len)
{
    jd_cfree(p->value.data);
    /* A value sent at once goes within milliseconds (its acknowledgement):
     * from the heap, so that the pool holds what stays, like a value
     * deferred past quiet hours (for hours). */
    p->value.data = jd_cmalloc_from(p->not_before ? jd_cmem_current() : NULL, len + 1);
    memcpy(p->value.data, data, len);
    p->value.data[len] = '\0';
    p->value.len = len;
}

void jd_customer_destroy(struct jd_customer *c)
{
    if (!c)
        return;
    free_persisted(c);
    for (size_t i = 0; i < c->npending; i++)
        pending_free(&c->pending[i]);
    jd_cfree(c->pending);
    jd_customer_clear_acked(c);
    free(c->acked);
    for (size_t i = 0; i < c->nhistory; i++)
        free(c->history[i]);
    free(c->history);
    jd_cfree(c);
}

static struct jd_type_count *find_count(const struct jd_customer *c, const char *type)
{
    if (jd_state_is_known(type)) {
        /* by code: known names are counted under theirs */
        uint64_t code = code_of(type);
        for (size_t i = 0; i < c->ncounts; i++)
            if ((c->counts[i].v & CODE_MASK) == code)
                return &c->counts[i];
        return NULL;
    }
    for (size_t i = 0; i < c->ncounts; i++)
        if (jd_name_eq(jd_customer_count_type(c, i), type))
            return &c->counts[i];
    return NULL;
}

/* A new entry (count 0) for a type not counted yet; NULL past 2^24 type
 * codes, which a customer cannot reach: its state would exceed Redis's
 * 512 MB string limit first. */
static struct jd_type_count *add_count(struct jd_customer *c, const char *type, size_t len)
{
    size_t code = known_code(type, len);
    size_t nnames = c->counts ? count_nnames(c) : 0;
    size_t grow = code == NKNOWN;
    if (grow) {
        code = NKNOWN + nnames;
        if (code > CODE_MASK)
            return NULL;
    }
    /* entries grow by one (a customer sees a handful of types); the names
     * move up by one entry */
    c->counts = jd_crealloc(c->counts, (c->ncounts + 1) * sizeof *c->counts +
                                           (nnames + grow) * sizeof(char *));
    memmove(c->counts + c->ncounts + 1, c->counts + c->ncounts, nnames * sizeof(char *));
    struct jd_type_count *tc = &c->counts[c->ncounts++];
    tc->v = code;
    if (grow)
        count_names(c)[nnames] = jd_cstrndup(type, len);
    return tc;
}

void jd_state_set_count(struct jd_customer *c, const char *type, size_t len, int64_t n)
{
    struct jd_type_count *tc = NULL;
    for (size_t i = 0; i < c->ncounts && !tc; i++) {
        const char *t = jd_customer_count_type(c, i);
        if (strncmp(t, type, len) == 0 && t[len] == '\0')
            tc = &c->counts[i];
    }
    if (!tc && !(tc = add_count(c, type, len)))
        return;
    tc->v = (tc->v & CODE_MASK) | (uint64_t)n << JD_COUNT_CODE_BITS;
}

void jd_customer_apply_core(struct jd_customer *c, const struct jd_event *ev)
{
    if (c->first_seen == 0 || ev->occurred_at < c->first_seen)
        c->first_seen = ev->occurred_at;
    /* Ties go to the later-processed event, so a replay in the same order
     * gives the same channel. */
    if (ev->occurred_at >= c->last_seen) {
        c->last_seen = ev->occurred_at;
        if (ev->channel && (!c->last_channel || !jd_name_eq(c->last_channel, ev->channel))) {
            jd_state_unintern(c->last_channel);
            c->last_channel = jd_state_intern(ev->channel, strlen(ev->channel));
        }
    }
    if (ev->type) {
        struct jd_type_count *tc = find_count(c, ev->type);
        if (!tc)
            tc = add_count(c, ev->type, strlen(ev->type));
        if (tc && tc->v >> JD_COUNT_CODE_BITS < (uint64_t)JD_COUNT_MAX)
            tc->v += COUNT_ONE;
        if (ev->has_amount) {
            if (jd_name_eq(ev->type, K_PURCHASE))
                c->spend += ev->amount;
            else if (jd_name_eq(ev->type, K_REFUND))
                c->spend -= ev->amount;
        }
        if (ev->has_score && jd_name_eq(ev->type, K_FEEDBACK))
            c->last_score = ev->score;
    }
    c->dirty = 1;
}

int64_t jd_customer_count(const struct jd_customer *c, const char *type)
{
    const struct jd_type_count *tc = find_count(c, type);
    return tc ? (int64_t)(tc->v >> JD_COUNT_CODE_BITS) : 0;
}

uint64_t jd_state_event_hash(const char *event_id)
{
    uint64_t h = jd_hash64(event_id, strlen(event_id));
    return h ? h : 1; /* 0 marks an empty ring slot */
}

int jd_customer_seen_event(struct jd_customer *c, const char *event_id)
{
    uint64_t h = jd_state_event_hash(event_id);
    for (size_t i = 0; i < JD_RECENT_IDS; i++)
        if (c->recent_ids[i] == h)
            return 1;
    c->recent_ids[c->recent_pos] = h;
    c->recent_pos = (uint8_t)((c->recent_pos + 1) % JD_RECENT_IDS);
    return 0;
}

/* Room for element n of an array whose capacity follows its length n: 2,
 * then the next power of two. It grows when n is 0 or a power of two >= 2;
 * a length set lower keeps the larger allocation, which stays enough. */
static int grows_at(uint32_t n)
{
    return n != 1 && (n & (n - 1)) == 0;
}

static size_t grown_bytes(uint32_t n, size_t elem)
{
    return (n ? 2 * (size_t)n : 2) * elem;
}

static void *grow_for(void *arr, uint32_t n, size_t elem)
{
    return grows_at(n) ? jd_xrealloc(arr, grown_bytes(n, elem)) : arr;
}

/* The same for an array that stays with the customer (cmem.h). */
static void *grow_customer(void *arr, uint32_t n, size_t elem)
{
    return grows_at(n) ? jd_crealloc(arr, grown_bytes(n, elem)) : arr;
}

struct jd_pending_trigger *jd_customer_add_pending(struct jd_customer *c)
{
    /* sized 1, 2, 4, ...: most customers have one trigger in flight at a
     * time, and while a backlog is worked off tens of thousands of them do
     * (the pool keeps their slots for later outboxes) */
    uint32_t n = c->npending;
    if ((n & (n - 1)) == 0) /* (0 or a power of two) */
        c->pending = jd_crealloc(c->pending, (n ? 2 * (size_t)n : 1) * sizeof *c->pending);
    struct jd_pending_trigger *p = &c->pending[c->npending++];
    memset(p, 0, sizeof *p);
    return p;
}

struct jd_pending_trigger *jd_customer_find_pending(struct jd_customer *c, const char *trigger_id)
{
    for (size_t i = 0; i < c->npending; i++)
        if (strcmp(c->pending[i].trigger_id, trigger_id) == 0)
            return &c->pending[i];
    return NULL;
}

static void push_str(char ***arr, uint32_t *n, char *s)
{
    *arr = grow_for(*arr, *n, sizeof **arr);
    (*arr)[(*n)++] = s;
}

void jd_customer_add_history(struct jd_customer *c, char *line)
{
    push_str(&c->history, &c->nhistory, line);
}

int jd_customer_ack(struct jd_customer *c, const char *trigger_id)
{
    struct jd_pending_trigger *p = jd_customer_find_pending(c, trigger_id);
    if (!p)
        return -1;
    if (p->stored)
        push_str(&c->acked, &c->nacked, jd_strdup(p->trigger_id));
    if (p->history) {
        push_str(&c->history, &c->nhistory, p->history);
        p->history = NULL;
    }
    pending_free(p);
    size_t i = (size_t)(p - c->pending);
    memmove(p, p + 1, (c->npending - i - 1) * sizeof *p);
    if (--c->npending == 0) {
        jd_cfree(c->pending);
        c->pending = NULL;
    }
    return 0;
}

void jd_customer_clear_acked(struct jd_customer *c)
{
    for (size_t i = 0; i < c->nacked; i++)
        free(c->acked[i]);
    free(c->acked);
    c->acked = NULL;
    c->nacked = 0;
}

struct jd_goal *jd_customer_add_goal(struct jd_customer *c)
{
    c->goals = grow_customer(c->goals, c->ngoals, sizeof *c->goals);
    struct jd_goal *g = &c->goals[c->ngoals++];
    memset(g, 0, sizeof *g);
    return g;
}

void jd_customer_take_state(struct jd_customer *dst, struct jd_customer *src)
{
    free_persisted(dst);
    dst->applied_offset = src->applied_offset;
    dst->first_seen = src->first_seen;
    dst->last_seen = src->last_seen;
    dst->last_channel = src->last_channel;
    dst->counts = src->counts;
    dst->ncounts = src->ncounts;
    dst->spend = src->spend;
    dst->last_score = src->last_score;
    dst->stage = src->stage;
    dst->segments = src->segments;
    dst->aggs = src->aggs;
    dst->naggs = src->naggs;
    dst->ntriggers = src->ntriggers;
    dst->trigger_sends = src->trigger_sends;
    dst->kind_sends = src->kind_sends;
    dst->tz = src->tz;
    dst->optout = src->optout;
    dst->next_timer = src->next_timer;
    dst->goals = src->goals;
    dst->ngoals = src->ngoals;
    memcpy(dst->recent_ids, src->recent_ids, sizeof dst->recent_ids);
    dst->recent_pos = src->recent_pos;
    src->last_channel = NULL;
    src->counts = NULL;
    src->ncounts = 0;
    src->aggs = NULL;
    src->naggs = 0;
    src->ntriggers = 0;
    src->trigger_sends = NULL;
    src->kind_sends = NULL;
    src->tz = NULL;
    src->goals = NULL;
    src->ngoals = 0;
    jd_customer_destroy(src);
}

void jd_customer_rebind(struct jd_customer *c, const struct jd_ruleset *old_rs,
                        const struct jd_ruleset *new_rs)
{
    struct jd_buf b;
    char err[128];
    jd_buf_init(&b);
    jd_customer_encode(c, old_rs, &b);
    struct jd_customer *tmp = jd_customer_new(c->id, c->id_len, c->partition, new_rs);
    if (jd_customer_decode(tmp, new_rs, b.data, b.len, err, sizeof err) != 0) {
        /* Cannot happen for a value we just wrote; keep the core profile
         * rather than lose it, with fresh rule slots. */
        tmp->applied_offset = c->applied_offset;
        tmp->first_seen = c->first_seen;
        tmp->last_seen = c->last_seen;
        tmp->spend = c->spend;
        tmp->last_score = c->last_score;
        tmp->last_channel = c->last_channel;
        tmp->counts = c->counts;
        tmp->ncounts = c->ncounts;
        c->last_channel = NULL;
        c->counts = NULL;
        c->ncounts = 0;
    }
    jd_buf_free(&b);
    jd_customer_take_state(c, tmp);
}

void jd_times_add(struct jd_times *ts, int64_t t)
{
    if (ts->n == ts->cap) {
        ts->cap = ts->cap ? ts->cap * 2 : 2;
        ts->t = jd_crealloc(ts->t, ts->cap * sizeof *ts->t);
    }
    uint32_t i = ts->n;
    while (i > 0 && ts->t[i - 1] > t) {
        ts->t[i] = ts->t[i - 1];
        i--;
    }
    ts->t[i] = t;
    ts->n++;
}

void jd_times_prune(struct jd_times *ts, int64_t before, uint32_t keep_max)
{
    uint32_t drop = 0;
    while (drop < ts->n && ts->t[drop] <= before)
        drop++;
    if (ts->n - drop > keep_max)
        drop = ts->n - keep_max;
    if (drop == 0)
        return;
    memmove(ts->t, ts->t + drop, (ts->n - drop) * sizeof *ts->t);
    ts->n -= drop;
}

uint32_t jd_times_count_after(const struct jd_times *ts, int64_t after)
{
    uint32_t n = 0;
    for (uint32_t i = ts->n; i > 0 && ts->t[i - 1] > after; i--)
        n++;
    return n;
}

struct jd_times *jd_customer_trigger_sends(struct jd_customer *c, size_t t)
{
    if (t >= c->ntriggers)
        return NULL;
    if (!c->trigger_sends)
        c->trigger_sends = jd_ccalloc(c->ntriggers * sizeof *c->trigger_sends);
    return &c->trigger_sends[t];
}

struct jd_times *jd_customer_kind_sends(struct jd_customer *c, enum jd_trigger_kind k)
{
    if (!c->kind_sends)
        c->kind_sends = jd_ccalloc(JD_KIND_COUNT * sizeof *c->kind_sends);
    return &c->kind_sends[k];
}

/* Time zone names: every customer of a zone points at one copy in this
 * append-only pool (a heap copy per customer cost ~32 bytes each). It is
 * bounded, since the names come from events: past TZ_POOL_BYTES or
 * TZ_POOL_MAX names, customers get their own heap copies as before. The
 * lock covers lookups and inserts (only on a zone change or a load); a
 * pooled name never changes or goes away, so readers need no lock. */
#define TZ_POOL_BYTES 32768
#define TZ_POOL_SLOTS 2048 /* open addressing, at most 3/4 full */
#define TZ_POOL_MAX (TZ_POOL_SLOTS / 4 * 3)

static char tz_pool[TZ_POOL_BYTES];
static size_t tz_pool_used, tz_pool_n;
static const char *tz_slots[TZ_POOL_SLOTS];
static pthread_mutex_t tz_lock = PTHREAD_MUTEX_INITIALIZER;

static int tz_pooled(const char *s)
{
    uintptr_t p = (uintptr_t)s, b = (uintptr_t)tz_pool;
    return p >= b && p < b + sizeof tz_pool;
}

/* The pool's copy of s[0..len), added if absent; NULL when the pool is full. */
static const char *tz_intern(const char *s, size_t len)
{
    const char *r = NULL;
    size_t h = (size_t)jd_hash64(s, len) & (TZ_POOL_SLOTS - 1);
    pthread_mutex_lock(&tz_lock);
    for (;; h = (h + 1) & (TZ_POOL_SLOTS - 1)) {
        const char *e = tz_slots[h];
        if (!e)
            break;
        if (strncmp(e, s, len) == 0 && e[len] == '\0') {
            r = e;
            goto out;
        }
    }
    if (tz_pool_n < TZ_POOL_MAX && len < sizeof tz_pool - tz_pool_used) {
        char *d = tz_pool + tz_pool_used;
        memcpy(d, s, len);
        d[len] = '\0';
        tz_pool_used += len + 1;
        tz_pool_n++;
        tz_slots[h] = r = d;
    }
out:
    pthread_mutex_unlock(&tz_lock);
    return r;
}

void jd_customer_set_tz(struct jd_customer *c, const char *tz, size_t len)
{
    if (c->tz && !tz_pooled(c->tz))
        jd_cfree((char *)c->tz);
    c->tz = NULL;
    if (!tz)
        return;
    c->tz = tz_intern(tz, len);
    if (!c->tz)
        c->tz = jd_cstrndup(tz, len);
}

struct jd_ring *jd_ring_new(void)
{
    /* 8 + 16 bytes: the pool's smallest slot holds the header and a bucket */
    struct jd_ring *r = jd_cmalloc(sizeof *r + sizeof r->b[0]);
    r->len = 0;
    r->cap = 1;
    return r;
}

/* Index of the first bucket with slot >= i. Buckets are added mostly at
 * the newest end, so the search starts there. */
static uint32_t ring_lower(const struct jd_ring *r, uint32_t i)
{
    uint32_t k = r->len;
    while (k > 0 && r->b[k - 1].i >= i)
        k--;
    return k;
}

struct jd_ring_bucket *jd_ring_at(struct jd_ring **rp, uint32_t i)
{
    struct jd_ring *r = *rp;
    if (!r)
        r = *rp = jd_ring_new();
    uint32_t k = ring_lower(r, i);
    if (k < r->len && r->b[k].i == i)
        return &r->b[k];
    if (r->len == r->cap) {
        /* small rings grow by one (most hold a handful of buckets) */
        r->cap = r->cap < 4 ? r->cap + 1 : r->cap + r->cap / 2;
        r = *rp = jd_crealloc(r, sizeof *r + r->cap * sizeof r->b[0]);
    }
    memmove(&r->b[k + 1], &r->b[k], (r->len - k) * sizeof r->b[0]);
    r->len++;
    r->b[k].i = i;
    r->b[k].n = 0;
    r->b[k].v = 0;
    return &r->b[k];
}

const struct jd_ring_bucket *jd_ring_find(const struct jd_ring *r, uint32_t i)
{
    if (!r)
        return NULL;
    uint32_t k = ring_lower(r, i);
    return k < r->len && r->b[k].i == i ? &r->b[k] : NULL;
}
