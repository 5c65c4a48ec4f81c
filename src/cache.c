/*
 * cache — the in-memory customers of the partitions this instance owns.
 *
 * Owns the cached jd_customer objects. An open-addressing hash table (linear
 * probing, backward-shift deletion, no tombstones) maps id -> customer with
 * no allocation per lookup; an intrusive doubly linked list through the
 * customers (lru_prev/lru_next) orders them for eviction, which drops the
 * coldest clean ones first: an approximation of least recently used
 * ("CLOCK"): a lookup only sets the customer's `referenced` mark, and the
 * eviction walk gives a referenced customer a second chance at the newest
 * end instead of relinking on every lookup. Dirty customers, and those with
 * outbox entries, acked ids or history lines still to write, are never
 * evicted: their only up-to-date copy is here.
 *
 * A slot is 8 bytes: the customer's address with 4 bits of its id's hash in
 * the low bits, which malloc's 16-byte alignment leaves free, so that a
 * probe reads another customer's id only for 1 in 16 non-matching slots.
 * (16-byte slots holding the whole hash cost 42 bytes per customer at
 * 100,000 customers, 21 now.) The home slot of a member, needed when the
 * table grows or a member is removed, is recomputed from its id.
 */
#include "journeyd/store.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define TAG_MASK ((uintptr_t)15)
_Static_assert(_Alignof(max_align_t) >= 16, "customers are 16-byte aligned");

typedef uintptr_t cache_slot; /* customer address | tag; 0: empty */

static struct jd_customer *slot_c(cache_slot s)
{
    return (struct jd_customer *)(s & ~TAG_MASK);
}

/* the hash's top bits: its low bits pick the home slot */
static uintptr_t hash_tag(uint64_t h)
{
    return (uintptr_t)(h >> 60);
}

struct jd_cache {
    cache_slot *slots;
    size_t cap; /* power of two */
    size_t n;
    size_t max; /* 0: unbounded */
    struct jd_customer *newest;
    struct jd_customer *oldest;
};

struct jd_cache *jd_cache_new(size_t max_customers)
{
    struct jd_cache *cache = jd_xcalloc(1, sizeof *cache);
    cache->cap = 64;
    cache->slots = jd_xcalloc(cache->cap, sizeof *cache->slots);
    cache->max = max_customers;
    return cache;
}

void jd_cache_destroy(struct jd_cache *cache)
{
    if (!cache)
        return;
    struct jd_customer *c = cache->newest;
    while (c) {
        struct jd_customer *next = c->lru_next;
        jd_customer_destroy(c);
        c = next;
    }
    free(cache->slots);
    free(cache);
}

static uint64_t id_hash(const char *id, size_t len)
{
    return jd_hash64(id, len);
}

static void lru_unlink(struct jd_cache *cache, struct jd_customer *c)
{
    if (c->lru_prev)
        c->lru_prev->lru_next = c->lru_next;
    else
        cache->newest = c->lru_next;
    if (c->lru_next)
        c->lru_next->lru_prev = c->lru_prev;
    else
        cache->oldest = c->lru_prev;
    c->lru_prev = c->lru_next = NULL;
}

static void lru_push_newest(struct jd_cache *cache, struct jd_customer *c)
{
    c->lru_prev = NULL;
    c->lru_next = cache->newest;
    if (cache->newest)
        cache->newest->lru_prev = c;
    else
        cache->oldest = c;
    cache->newest = c;
}

static size_t find_slot(const struct jd_cache *cache, uint64_t h, const char *id, size_t len)
{
    size_t mask = cache->cap - 1;
    uintptr_t tag = hash_tag(h);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        cache_slot s = cache->slots[i];
        if (!s)
            return i;
        if ((s & TAG_MASK) == tag) {
            const struct jd_customer *c = slot_c(s);
            if (c->id_len == len && memcmp(c->id, id, len) == 0)
                return i;
        }
    }
}

static size_t home_slot(const struct jd_cache *cache, cache_slot s)
{
    const struct jd_customer *c = slot_c(s);
    return id_hash(c->id, c->id_len) & (cache->cap - 1);
}

static void grow(struct jd_cache *cache)
{
    cache_slot *old = cache->slots;
    size_t oldcap = cache->cap;
    cache->cap *= 2;
    cache->slots = jd_xcalloc(cache->cap, sizeof *cache->slots);
    size_t mask = cache->cap - 1;
    for (size_t i = 0; i < oldcap; i++) {
        if (!old[i])
            continue;
        size_t j = home_slot(cache, old[i]);
        while (cache->slots[j])
            j = (j + 1) & mask;
        cache->slots[j] = old[i];
    }
    free(old);
}

struct jd_customer *jd_cache_get(struct jd_cache *cache, const char *id, size_t id_len)
{
    size_t i = find_slot(cache, id_hash(id, id_len), id, id_len);
    struct jd_customer *c = slot_c(cache->slots[i]);
    if (c)
        jd_cache_touch(cache, c);
    return c;
}

void jd_cache_prefetch(const struct jd_cache *cache, const char *id, size_t id_len, int stage)
{
    uint64_t h = id_hash(id, id_len);
    const cache_slot *slot = &cache->slots[h & (cache->cap - 1)];
    if (stage == 0) {
        __builtin_prefetch(slot);
        return;
    }
    /* (the home slot's customer: the match unless the probe goes on) */
    if (!*slot || (*slot & TAG_MASK) != hash_tag(h))
        return;
    const struct jd_customer *c = slot_c(*slot);
    __builtin_prefetch(&c->id_len);
    __builtin_prefetch(&c->id_buf); /* (the id compared, and the reference bit set) */
}

void jd_cache_put(struct jd_cache *cache, struct jd_customer *c)
{
    if ((cache->n + 1) * 4 > cache->cap * 3)
        grow(cache);
    uint64_t h = id_hash(c->id, c->id_len);
    size_t i = find_slot(cache, h, c->id, c->id_len);
    /* a caller bug: keep the cached copy, it may be dirty; or a customer
     * not from jd_customer_new */
    if (cache->slots[i] || ((uintptr_t)c & TAG_MASK))
        abort();
    cache->slots[i] = (uintptr_t)c | hash_tag(h);
    cache->n++;
    lru_push_newest(cache, c);
}

/* Takes c out of the cache without destroying it. */
void jd_cache_remove(struct jd_cache *cache, struct jd_customer *c)
{
    size_t mask = cache->cap - 1;
    size_t i = find_slot(cache, id_hash(c->id, c->id_len), c->id, c->id_len);
    if (slot_c(cache->slots[i]) != c)
        return;
    /* Backward shift: pull later members of the probe run into the hole when
     * their home slot does not lie (cyclically) between the hole and them. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!cache->slots[j])
            break;
        size_t home = home_slot(cache, cache->slots[j]);
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        cache->slots[i] = cache->slots[j];
        i = j;
    }
    cache->slots[i] = 0;
    cache->n--;
    lru_unlink(cache, c);
}

size_t jd_cache_size(const struct jd_cache *cache)
{
    return cache->n;
}

void jd_cache_foreach(struct jd_cache *cache, int32_t partition,
                      void (*fn)(struct jd_customer *c, void *ud), void *ud)
{
    struct jd_customer *c = cache->newest;
    while (c) {
        struct jd_customer *next = c->lru_next;
        if (partition < 0 || c->partition == partition)
            fn(c, ud);
        c = next;
    }
}

void jd_cache_drop_partition(struct jd_cache *cache, int32_t partition)
{
    struct jd_customer *c = cache->newest;
    while (c) {
        struct jd_customer *next = c->lru_next;
        if (partition < 0 || c->partition == partition) {
            jd_cache_remove(cache, c);
            jd_customer_destroy(c);
        }
        c = next;
    }
}

static int evictable(const struct jd_customer *c)
{
    /* queued/urgent: the engine's write-back lists still point at it;
     * writing: a reload could read Redis before that write lands */
    return !c->dirty && !c->queued && !c->urgent && !c->writing && c->npending == 0 &&
           c->nacked == 0 && c->nhistory == 0;
}

size_t jd_cache_evict(struct jd_cache *cache)
{
    size_t evicted = 0;
    struct jd_customer *c = cache->oldest;
    while (cache->max && cache->n > cache->max && c) {
        struct jd_customer *newer = c->lru_prev;
        if (c->referenced) {
            /* touched since the last pass: a second chance, as the newest
             * (the walk meets it again at the end, unreferenced) */
            c->referenced = 0;
            lru_unlink(cache, c);
            lru_push_newest(cache, c);
        } else if (evictable(c)) {
            jd_cache_remove(cache, c);
            jd_customer_destroy(c);
            evicted++;
        }
        c = newer;
    }
    return evicted;
}

void jd_cache_touch(struct jd_cache *cache, struct jd_customer *c)
{
    (void)cache;
    c->referenced = 1;
}
