/*
 * cache — the in-memory customers of the partitions this instance owns.
 *
 * Owns the cached jd_customer objects. An open-addressing hash table (linear
 * probing, backward-shift deletion, no tombstones) maps id -> customer with
 * no allocation per lookup. Eviction is by second chance ("CLOCK") with the
 * table itself as the clock: a hand goes round the slots, a customer looked
 * up (or added) since the hand last passed it keeps its place and loses its
 * `referenced` mark, an unmarked one is evicted. Dirty customers, and those
 * with outbox entries, acked ids or history lines still to write, are never
 * evicted: their only up-to-date copy is here. (Before, an intrusive list
 * through the customers ordered them for eviction: 16 bytes in every
 * customer, and two more customers written by every insertion and removal.)
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
    size_t max;  /* 0: unbounded */
    size_t hand; /* the eviction's next slot */
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
    for (size_t i = 0; i < cache->cap; i++)
        if (cache->slots[i])
            jd_customer_destroy(slot_c(cache->slots[i]));
    free(cache->slots);
    free(cache);
}

static uint64_t id_hash(const char *id, size_t len)
{
    return jd_hash64(id, len);
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

uint64_t jd_cache_hash(const char *id, size_t id_len)
{
    return id_hash(id, id_len);
}

struct jd_customer *jd_cache_get_hashed(struct jd_cache *cache, uint64_t h, const char *id,
                                        size_t id_len)
{
    size_t i = find_slot(cache, h, id, id_len);
    struct jd_customer *c = slot_c(cache->slots[i]);
    if (c)
        jd_cache_touch(cache, c);
    return c;
}

struct jd_customer *jd_cache_get(struct jd_cache *cache, const char *id, size_t id_len)
{
    return jd_cache_get_hashed(cache, id_hash(id, id_len), id, id_len);
}

void jd_cache_prefetch_hashed(const struct jd_cache *cache, uint64_t h, int stage)
{
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
    __builtin_prefetch(c->id); /* (the id compared, and the reference bit set) */
}

void jd_cache_put_hashed(struct jd_cache *cache, struct jd_customer *c, uint64_t h)
{
    if ((cache->n + 1) * 4 > cache->cap * 3)
        grow(cache);
    size_t i = find_slot(cache, h, c->id, c->id_len);
    /* a caller bug: keep the cached copy, it may be dirty; or a customer
     * not from jd_customer_new */
    if (cache->slots[i] || ((uintptr_t)c & TAG_MASK))
        abort();
    cache->slots[i] = (uintptr_t)c | hash_tag(h);
    cache->n++;
    c->referenced = 1; /* (new: spared by the hand's next pass) */
}

void jd_cache_put(struct jd_cache *cache, struct jd_customer *c)
{
    jd_cache_put_hashed(cache, c, id_hash(c->id, c->id_len));
}

/* Empties slot i by backward shift: later members of its probe run move
 * into the hole when their home slot does not lie (cyclically) between the
 * hole and them. Slot i may then hold a member that was after it. */
static void remove_at(struct jd_cache *cache, size_t i)
{
    size_t mask = cache->cap - 1;
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
}

/* Takes c out of the cache without destroying it. */
void jd_cache_remove(struct jd_cache *cache, struct jd_customer *c)
{
    size_t i = find_slot(cache, id_hash(c->id, c->id_len), c->id, c->id_len);
    if (slot_c(cache->slots[i]) == c)
        remove_at(cache, i);
}

size_t jd_cache_size(const struct jd_cache *cache)
{
    return cache->n;
}

void jd_cache_foreach(struct jd_cache *cache, int32_t partition,
                      void (*fn)(struct jd_customer *c, void *ud), void *ud)
{
    for (size_t i = 0; i < cache->cap; i++) {
        struct jd_customer *c = slot_c(cache->slots[i]);
        if (c && (partition < 0 || c->partition == partition))
            fn(c, ud);
    }
}

void jd_cache_drop_partition(struct jd_cache *cache, int32_t partition)
{
    /* (a removal may move a later member into slot i: i is looked at again;
     * one moved there from the table's start was looked at already, and is
     * kept again) */
    for (size_t i = 0; i < cache->cap && cache->n > 0;) {
        struct jd_customer *c = slot_c(cache->slots[i]);
        if (c && (partition < 0 || c->partition == partition)) {
            remove_at(cache, i);
            jd_customer_destroy(c);
        } else {
            i++;
        }
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
    size_t evicted = 0, mask = cache->cap - 1;
    /* at most two turns: the first may only take the marks off */
    size_t steps = 2 * cache->cap;
    size_t i = cache->hand & mask;
    while (cache->max && cache->n > cache->max && steps > 0) {
        struct jd_customer *c = slot_c(cache->slots[i]);
        if (c && !c->referenced && evictable(c)) {
            remove_at(cache, i); /* (slot i may now hold the next member) */
            jd_customer_destroy(c);
            evicted++;
            continue;
        }
        if (c)
            c->referenced = 0; /* looked up since the last pass: a second chance */
        i = (i + 1) & mask;
        steps--;
    }
    cache->hand = i;
    return evicted;
}

void jd_cache_set_max(struct jd_cache *cache, size_t max_customers)
{
    cache->max = max_customers;
}

void jd_cache_touch(struct jd_cache *cache, struct jd_customer *c)
{
    (void)cache;
    c->referenced = 1;
}
