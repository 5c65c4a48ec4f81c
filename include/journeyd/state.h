/*
 * state — one customer's journey state: the core profile every deployment
 * keeps (first/last seen, last channel, lifetime counts per event type,
 * lifetime spend, last feedback score, stage, segments) plus the aggregates
 * the rule set needs (rules.h decides which), the trigger bookkeeping, and
 * the outbox of triggers not yet acknowledged by Kafka.
 *
 * The struct is plain data owned by whoever holds it (the cache in store.c);
 * it and what stays with it (counts, aggregate slots and rings, send times,
 * goals, names, the outbox entries and their topics) come from jd_cmalloc
 * and go back with jd_cfree (cmem.h): the engine's pool keeps them apart
 * from transient memory. An entry's value is in the pool when the entry is
 * deferred past quiet hours (it stays for hours), else from the heap, still
 * freed with jd_cfree. The acked ids and history lines, gone by the next
 * flush, are malloc'd.
 * rules.c reads and updates stage/segments/aggs; the engine updates the rest.
 * Serialisation (jd_customer_encode/decode) is a compact, versioned, text
 * form stored as one Redis string, readable with redis-cli.
 */
#ifndef JOURNEYD_STATE_H
#define JOURNEYD_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "journeyd/cmem.h"
#include "journeyd/config.h"
#include "journeyd/event.h"
#include "journeyd/util.h"

#define JD_MAX_SEGMENTS 64
#define JD_RECENT_IDS 8

struct jd_ruleset;

/* A lifetime count per event type in 8 bytes: v = n << JD_COUNT_CODE_BITS |
 * code. The code names the type: below jd_state_nknown() a well-known name
 * (a static string), else the customer's own copy of a user-defined name,
 * kept after the counts in the same allocation. Read an entry with
 * jd_customer_count_type / jd_customer_count_n. */
struct jd_type_count {
    uint64_t v;
};

#define JD_COUNT_CODE_BITS 24
/* the largest count kept (2^40 - 1): a larger stored value is corrupt */
#define JD_COUNT_MAX ((int64_t)(UINT64_MAX >> JD_COUNT_CODE_BITS))

/* A windowed aggregate's ring, sparse: only the buckets holding something,
 * ascending by slot i (slot 0 starts at jd_agg.base); a bucket not listed
 * has value and count 0. Most windows hold a few buckets of their 30 or
 * more, so this is a fraction of the dense 2 x nbuckets doubles. */
struct jd_ring_bucket {
    uint32_t i; /* slot, < nbuckets */
    uint32_t n; /* events counted */
    double v;   /* value (sum, min or max); 0 for a count */
};

struct jd_ring {
    uint32_t len, cap;
    struct jd_ring_bucket b[];
};

/* One aggregate slot; what the fields mean is defined by the rule set's
 * aggregate spec for that slot (rules.c), so that state.c can store any slot
 * without knowing its meaning. */
struct jd_agg {
    double v;     /* scalar: lifetime count / sum / min / max / last value */
    double n;     /* secondary scalar (e.g. the count behind an average) */
    int64_t t;    /* a time in ms (last occurrence, pending deadline...); 0 = none */
    int64_t base; /* windowed: start (ms) of the bucket in ring slot 0 */
    /* A slot is windowed or not by its spec (jd_rules_agg_nbuckets), so it
     * has a ring or a string, never both: they share the pointer, and
     * jd_agg_free frees either. */
    union {
        struct jd_ring *ring; /* windowed: NULL until the first event in the window */
        char *s;              /* not windowed: a string value (last attribute); NULL none */
    };
};

/* An empty ring (room for one bucket). */
struct jd_ring *jd_ring_new(void);
/* The bucket of slot i in *r, inserted (zero) in its place if absent; the
 * ring may move. */
struct jd_ring_bucket *jd_ring_at(struct jd_ring **r, uint32_t i);
/* The bucket of slot i, or NULL. */
const struct jd_ring_bucket *jd_ring_find(const struct jd_ring *r, uint32_t i);

/* Bytes that stay with a customer (cmem.h), set once. */
struct jd_cbytes {
    char *data; /* NUL-terminated after len */
    size_t len;
};

/* A trigger that has been decided and encoded but not yet acknowledged by
 * Kafka. It is persisted with the customer (the outbox) in the same atomic
 * write as the state change that produced it. */
struct jd_pending_trigger {
    char trigger_id[33];
    uint8_t kind;           /* enum jd_trigger_kind: selects the default topic */
    uint8_t produced;       /* handed to the producer in this process's lifetime */
    uint8_t stored;         /* present in the Redis outbox (written by a flush, or loaded) */
    uint8_t replayable;     /* fired while an input event is applied: unless deferred, while its
                               customer is held (engine_wb.c) its event's offset waits for its
                               acknowledgement, so a crash replays the event, whose load re-sends it,
                               and it needs no outbox index entry (store_timers.c) */
    char *topic;            /* NULL: the kind's topic; else jd_cmalloc'd */
    struct jd_cbytes value; /* the encoded Kafka message value: jd_pending_set_value */
    char *history;          /* history line for journeyctl, NULL once written */
    int64_t src_ts;         /* Kafka timestamp (ms) of the event that caused it; 0 unknown */
    int64_t not_before;     /* clock time (ms) before which it must not be produced (a trigger
                               deferred past quiet hours); 0 = at once */
};
/* (88 bytes: in flight, every customer with a trigger holds one or more, in
 * its outbox array, sized 1, 2, 4, ...) */
_Static_assert(sizeof(struct jd_pending_trigger) <= 88, "an outbox entry stays small");

/* Send times (ms, ascending) a frequency cap counts; the policy drops the
 * ones that no window can count any more. */
struct jd_times {
    int64_t *t;
    uint32_t n;
    uint32_t cap;
};

/* Inserts t, keeping the list ascending. */
void jd_times_add(struct jd_times *ts, int64_t t);
/* Drops the times <= before, then the oldest beyond keep_max. */
void jd_times_prune(struct jd_times *ts, int64_t before, uint32_t keep_max);
/* How many times are > after. */
uint32_t jd_times_count_after(const struct jd_times *ts, int64_t after);

/* An open conversion goal (docs/outcomes.md): a trigger decision — sent
 * (treated) or held out (control) — waiting for the customer to reach the
 * trigger's goal before `deadline` (clock ms, inclusive). */
struct jd_goal {
    int64_t deadline;
    uint32_t trigger; /* index into the rule set's triggers */
    uint8_t control;  /* 1: held out by the policy (control group) */
};

/* Field order keeps the struct free of padding holes: it is the bulk of
 * what a cached customer costs (docs/performance.md, "Memory"). */
struct jd_customer {
    uint32_t id_len; /* the length of `id`, the last member */
    int32_t partition;
    int64_t applied_offset; /* highest offset of `partition` applied; -1 none */

    int64_t first_seen; /* event time, ms; 0 = never */
    int64_t last_seen;
    char *last_channel;
    struct jd_type_count *counts;
    uint32_t ncounts;
    int32_t last_score; /* last feedback score; -1 = none */
    double spend;       /* lifetime: purchase amounts minus refund amounts */

    int32_t stage; /* index into the rule set's stages; -1 = none yet */
    uint32_t naggs;
    uint64_t segments; /* bit i: member of the rule set's segment i */
    /* aggs[naggs], then the per-trigger arrays (jd_customer_last_fired,
     * jd_customer_fired_count: [ntriggers] each), in one allocation */
    struct jd_agg *aggs;
    uint32_t ntriggers;
    /* contact policy (policy.c) */
    uint8_t optout; /* bit (1 << kind): the customer opted out of that kind */
    uint8_t recent_pos;
    /* looked up since the cache's eviction last passed it (cache.c); a byte
     * of its own: the loader thread writes the bits below of the customers
     * it loads (engine_load.c) */
    uint8_t referenced;
    unsigned dirty : 1;   /* must be written back */
    unsigned exists : 1;  /* was found in Redis or written there */
    unsigned queued : 1;  /* in the engine's write-back list (engine_flush.c) */
    unsigned urgent : 1;  /* in the engine's list of customers to write at once */
    unsigned writing : 1; /* in a write-back still on its way to Redis (store.h) */
    unsigned held : 1;    /* its triggers go into a held checkpoint (engine_wb.c) */
    unsigned indexed : 1; /* may be listed in its partition's outbox index (store_timers.c) */
    struct jd_times *trigger_sends; /* [ntriggers] for max_per_customer; NULL until needed */
    struct jd_times *kind_sends;    /* [JD_KIND_COUNT] for policy.caps; NULL until needed */
    const char *tz;       /* latest time zone attribute value, shared (jd_customer_set_tz); NULL:
                             the default zone */
    int64_t next_timer;   /* next due time registered for this customer; 0 none */
    int64_t stored_timer; /* the due time the partition's timer set holds for it (not
                             persisted: taken from next_timer on load); 0 none */

    uint64_t recent_ids[JD_RECENT_IDS]; /* hashes of the latest event_ids (duplicate guard) */

    /* The arrays below hold no capacity field: it follows the length (2, 4,
     * 8, ...; the outbox `pending` 1, 2, 4, ...; jd_customer_add_*, which
     * grow them, are their only writers that add). Setting a length lower is
     * fine. The outbox arrays are freed
     * when they empty: most customers have no trigger in flight most of the
     * time. */
    struct jd_goal *goals; /* open conversion goals (outcomes.h), oldest first */
    struct jd_pending_trigger *pending;
    char **acked; /* trigger ids acknowledged since the last flush (to remove from Redis) */
    /* History lines of triggers acknowledged before their line was written:
     * the next flush writes them (owned; freed by the flush). */
    char **history;
    uint32_t ngoals;
    uint32_t npending;
    uint32_t nacked;
    uint32_t nhistory;

    char id[]; /* the id, NUL-terminated: one allocation with the struct */
};

/* Per rule-set trigger: the time (ms) it was last sent (or, deferred by
 * quiet hours, will be sent), 0 never; NULL when ntriggers is 0. */
static inline int64_t *jd_customer_last_fired(const struct jd_customer *c)
{
    return c->ntriggers ? (int64_t *)(void *)(c->aggs + c->naggs) : NULL;
}

/* Per rule-set trigger: how many times it fired; NULL when ntriggers is 0. */
static inline uint32_t *jd_customer_fired_count(const struct jd_customer *c)
{
    return c->ntriggers ? (uint32_t *)(void *)(jd_customer_last_fired(c) + c->ntriggers) : NULL;
}

/* A fresh customer shaped for `rs` (aggs and trigger arrays sized). */
struct jd_customer *jd_customer_new(const char *id, size_t id_len, int32_t partition,
                                    const struct jd_ruleset *rs);
void jd_customer_destroy(struct jd_customer *c);

/* Core profile update for one event (counts, spend, score, first/last seen,
 * channel). Rule aggregates are updated by jd_rules_on_event. */
void jd_customer_apply_core(struct jd_customer *c, const struct jd_event *ev);

/* The shared static copy of a well-known event type or channel name (SPEC
 * §1), or NULL for any other name. The engine points decoded events at these
 * copies and the rule set its names, so that jd_name_eq matches them by
 * pointer. */
const char *jd_state_known(const char *s);

/* The pool of those copies (state.c; its size is checked there). */
#define JD_KNOWN_POOL_SIZE 206
extern const char jd_known_pool[JD_KNOWN_POOL_SIZE];
/* 1 when the state's text form writes s as it is (no byte of s is escaped:
 * docs/state-format.md): the rule set checks its aggregate keys once. */
int jd_state_plain(const char *s);
static inline int jd_state_is_known(const char *s)
{
    uintptr_t p = (uintptr_t)s, b = (uintptr_t)jd_known_pool;
    return p >= b && p < b + JD_KNOWN_POOL_SIZE;
}
/* Name equality for event types and channels: two known copies are equal
 * only if they are the same pointer, so strcmp runs only for other names. */
static inline int jd_name_eq(const char *a, const char *b)
{
    if (a == b)
        return 1;
    if (jd_state_is_known(a) && jd_state_is_known(b))
        return 0;
    return jd_streq(a, b);
}

int64_t jd_customer_count(const struct jd_customer *c, const char *type);
/* The type name and count of entry i < c->ncounts (insertion order). */
const char *jd_customer_count_type(const struct jd_customer *c, size_t i);
static inline int64_t jd_customer_count_n(const struct jd_customer *c, size_t i)
{
    return (int64_t)(c->counts[i].v >> JD_COUNT_CODE_BITS);
}

/* Duplicate guard on event_id: returns 1 if seen among the recent ids, else
 * records it and returns 0. */
int jd_customer_seen_event(struct jd_customer *c, const char *event_id);

/* Outbox. The returned entry is zeroed (no value yet); it stays valid
 * until the next add_pending or ack on the same customer. */
struct jd_pending_trigger *jd_customer_add_pending(struct jd_customer *c);
/* Sets the entry's value to a copy of data[0..len), at its exact size: in
 * the pool when the entry is deferred (set not_before first), else from
 * the heap. */
void jd_pending_set_value(struct jd_pending_trigger *p, const void *data, size_t len);
/* Finds a pending trigger by id; NULL if absent. */
struct jd_pending_trigger *jd_customer_find_pending(struct jd_customer *c, const char *trigger_id);
/* Removes the pending trigger with that id and remembers it as acked (when it
 * was stored in Redis: a never-stored one needs no removal there; its
 * unwritten history line moves to c->history). 0 or -1 if absent. */
int jd_customer_ack(struct jd_customer *c, const char *trigger_id);
void jd_customer_clear_acked(struct jd_customer *c);
/* Appends a history line (owned by c from now on) to c->history. */
void jd_customer_add_history(struct jd_customer *c, char *line);

/* The send-time list of trigger t (allocating the per-trigger lists on
 * first use); NULL when t is out of range. */
struct jd_times *jd_customer_trigger_sends(struct jd_customer *c, size_t t);

/* The send-time list of kind k for policy.caps (allocating the per-kind
 * lists on first use). */
struct jd_times *jd_customer_kind_sends(struct jd_customer *c, enum jd_trigger_kind k);

/* Sets c->tz to a copy of tz[0..len) (NULL: no zone). Customers share a
 * zone's copy: a process-wide pool keeps each name once (a few hundred
 * zones exist; past the pool's size, names are the customer's own copies). */
void jd_customer_set_tz(struct jd_customer *c, const char *tz, size_t len);

/* Appends an open goal (zeroed); valid until the next add on c. */
struct jd_goal *jd_customer_add_goal(struct jd_customer *c);

/* Serialises everything except the outbox (stored beside it, see store.h). */
void jd_customer_encode(const struct jd_customer *c, const struct jd_ruleset *rs,
                        struct jd_buf *out);
/* Fills `c` (created with jd_customer_new for the same rs) from an encoded
 * value. Names (stage, segments, aggregate keys, trigger names) are matched
 * against rs, so a value written under another rule set loads with what still
 * applies. Returns 0, or -1 with errstr on a corrupt value. */
int jd_customer_decode(struct jd_customer *c, const struct jd_ruleset *rs, const char *data,
                       size_t len, char *errstr, size_t errsize) JD_MUST_CHECK;

/* Moves the persisted state (everything jd_customer_encode writes) from src
 * into dst, which keeps its id, partition, outbox, acked ids, history and
 * flags; src is destroyed. */
void jd_customer_take_state(struct jd_customer *dst, struct jd_customer *src);

/* Re-shapes a cached customer for a new rule set (after a reload). */
void jd_customer_rebind(struct jd_customer *c, const struct jd_ruleset *old_rs,
                        const struct jd_ruleset *new_rs);

/* Cache prefetches for loops over many customers (applying a batch,
 * building a write-back): with 100,000 customers their data is rarely in
 * cache, and the first touch of each part was most of the encoder's time.
 * Call with the struct a few customers ahead (deep = 0), then its parts a
 * little later (deep = 1: the struct is in cache by then). */
static inline void jd_customer_prefetch(const struct jd_customer *c, int deep)
{
    if (!c)
        return;
    if (!deep) {
        for (size_t off = 0; off < sizeof *c; off += 64)
            __builtin_prefetch((const char *)c + off);
        return;
    }
    __builtin_prefetch(c->counts);
    for (uint32_t i = 0; i < c->naggs; i++) {
        if (i % 2 == 0) /* (a slot is 40 bytes: two per line, roughly) */
            __builtin_prefetch(&c->aggs[i]);
    }
}

#endif
