/*
 * cmem — a pool for the memory of cached customers (include/journeyd/cmem.h).
 *
 * Layout, like glibc's chunks: an allocation of n bytes takes a slot of
 * round16(n + 8) bytes (at least 32), whose first 8 bytes are the header
 * and the rest the 16-byte aligned payload. The header word is MAGIC << 32
 * | pool index << 16 | class << 2 | state: 01 live, 11 free, 10 malloc'd
 * (no pool, or too large: the header is then 8 bytes before the payload, 16
 * after the block malloc returned). The index names the pool in a table of
 * the live pools, so a free finds its pool without trusting a pointer read
 * from memory. Free slots of a class form a list threaded through their
 * payloads. Slots are carved from 1 MiB mappings with a bump pointer; the
 * tail of a mapping too short for a slot goes to the free lists of smaller
 * classes.
 *
 * Under AddressSanitizer the free slots, the headers and the bytes past each
 * allocation's size are poisoned: a use after free or an overflow into the
 * next slot is reported like one in malloc's memory; the mappings are root
 * regions for LeakSanitizer (the malloc'd memory they point to is not
 * leaked), and a pool destroyed with allocations still live aborts (a leak
 * LeakSanitizer cannot see in a mapping).
 */
#include "journeyd/cmem.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#define JD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JD_ASAN 1
#endif
#endif

#ifdef JD_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#define NO_ASAN
#endif

#define HDR 8
#define MIN_SLOT 32
#define MAX_SLOT 1024
#define NCLASS ((MAX_SLOT - MIN_SLOT) / 16 + 1) /* 63 */
#define CHUNK ((size_t)1 << 20)
#define MAGIC 0x6a64636dULL /* "jdcm" */
#define ST_LIVE 1u
#define ST_LARGE 2u
#define ST_FREE 3u
#define LARGE_TAG (MAGIC << 32 | ST_LARGE)
#define MAX_POOLS 1024 /* live at once: 64 engines at most, and tests */

struct jd_cmem {
    unsigned index; /* in pools[] */
    pthread_mutex_t lock;
    void *free[NCLASS];
    char *bump, *end; /* the current mapping's unused tail */
    void *chunks;     /* the mappings, linked through their first 8 bytes */
    size_t mapped, live;
};

static _Thread_local struct jd_cmem *cur;
static struct jd_cmem *_Atomic pools[MAX_POOLS];
static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER; /* (for the changes) */

static size_t slot_size(size_t n)
{
    size_t s = (n + HDR + 15) & ~(size_t)15;
    return s < MIN_SLOT ? MIN_SLOT : s;
}

static size_t class_of(size_t slot)
{
    return (slot - MIN_SLOT) / 16;
}

static size_t class_slot(size_t cls)
{
    return MIN_SLOT + 16 * cls;
}

/* Headers and free-list links are poisoned: only these touch them (plain
 * aligned accesses: a memcpy call would go through ASan's interceptor). */
static NO_ASAN uint64_t hdr_get(const void *p)
{
    return *(const uint64_t *)(const void *)((const char *)p - HDR);
}

static NO_ASAN void hdr_set(void *p, uint64_t h)
{
    *(uint64_t *)(void *)((char *)p - HDR) = h;
}

static NO_ASAN void *link_get(const void *p)
{
    return *(void *const *)p;
}

static NO_ASAN void link_set(void *p, void *next)
{
    *(void **)p = next;
}

static uint64_t slot_hdr(const struct jd_cmem *m, size_t cls, unsigned st)
{
    return MAGIC << 32 | (uint64_t)m->index << 16 | (uint64_t)cls << 2 | st;
}

static void die(const char *what, const void *p)
{
    fprintf(stderr, "journeyd: cmem: %s (%p)\n", what, p);
    abort();
}

struct jd_cmem *jd_cmem_new(void)
{
    struct jd_cmem *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_lock(&pools_lock);
    while (m->index < MAX_POOLS && atomic_load(&pools[m->index]))
        m->index++;
    if (m->index == MAX_POOLS)
        die("too many pools", m);
    atomic_store(&pools[m->index], m);
    pthread_mutex_unlock(&pools_lock);
    return m;
}

size_t jd_cmem_destroy(struct jd_cmem *m)
{
    if (!m)
        return 0;
    if (cur == m)
        cur = NULL;
    pthread_mutex_lock(&pools_lock);
    atomic_store(&pools[m->index], NULL);
    pthread_mutex_unlock(&pools_lock);
    size_t live = m->live;
    for (void *c = m->chunks; c;) {
        void *next = link_get(c);
#ifdef JD_ASAN
        __lsan_unregister_root_region(c, CHUNK);
#endif
        UNPOISON(c, CHUNK);
        munmap(c, CHUNK);
        c = next;
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
#ifdef JD_ASAN
    if (live) {
        fprintf(stderr, "journeyd: cmem: pool destroyed with %zu bytes of allocations live\n",
                live);
        abort();
    }
#endif
    return live;
}

void jd_cmem_use(struct jd_cmem *m)
{
    cur = m;
}

struct jd_cmem *jd_cmem_current(void)
{
    return cur;
}

void jd_cmem_stats(struct jd_cmem *m, struct jd_cmem_stats *st)
{
    pthread_mutex_lock(&m->lock);
    st->mapped = m->mapped;
    st->live = m->live;
    pthread_mutex_unlock(&m->lock);
}

/* Puts the slot whose header is at h (size s) on its class's free list. */
static void push_free(struct jd_cmem *m, char *h, size_t s)
{
    void *p = h + HDR;
    size_t cls = class_of(s);
    hdr_set(p, slot_hdr(m, cls, ST_FREE));
    link_set(p, m->free[cls]);
    m->free[cls] = p;
}

/* A new mapping; the old one's tail goes to the free lists. Lock held. */
static int grow(struct jd_cmem *m)
{
    void *c = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c == MAP_FAILED)
        return -1;
    while (m->bump && (size_t)(m->end - m->bump) >= MIN_SLOT) {
        size_t s = (size_t)(m->end - m->bump) & ~(size_t)15;
        if (s > MAX_SLOT)
            s = MAX_SLOT;
        push_free(m, m->bump, s);
        m->bump += s;
    }
    POISON(c, CHUNK);
#ifdef JD_ASAN
    __lsan_register_root_region(c, CHUNK);
#endif
    link_set(c, m->chunks);
    m->chunks = c;
    m->mapped += CHUNK;
    m->bump = (char *)c + 16 - HDR; /* the payload at +16 is 16-byte aligned */
    m->end = (char *)c + CHUNK;
    return 0;
}

static void *pool_alloc(struct jd_cmem *m, size_t n)
{
    size_t s = slot_size(n), cls = class_of(s);
    pthread_mutex_lock(&m->lock);
    void *p = m->free[cls];
    if (p) {
        m->free[cls] = link_get(p);
    } else {
        if ((!m->bump || (size_t)(m->end - m->bump) < s) && grow(m) != 0) {
            pthread_mutex_unlock(&m->lock);
            return NULL;
        }
        p = m->bump + HDR;
        m->bump += s;
    }
    m->live += s;
    hdr_set(p, slot_hdr(m, cls, ST_LIVE));
    pthread_mutex_unlock(&m->lock);
    UNPOISON(p, n);
    return p;
}

static void *large_alloc(size_t n)
{
    if (n > SIZE_MAX - 16)
        return NULL;
    char *b = malloc(n + 16);
    if (!b)
        return NULL;
    hdr_set(b + 16, LARGE_TAG);
    return b + 16;
}

/* The pool of p (NULL: malloc'd); aborts on anything else. */
static struct jd_cmem *owner(const void *p, size_t *cls)
{
    uint64_t h = hdr_get(p);
    if (h == LARGE_TAG)
        return NULL;
    if (h >> 32 != MAGIC)
        die("free of memory it did not allocate", p);
    if ((h & 3) == ST_FREE)
        die("double free", p);
    size_t i = (size_t)(h >> 16 & 0xffff);
    *cls = (size_t)(h >> 2 & 0x3fff);
    struct jd_cmem *m = i < MAX_POOLS ? atomic_load(&pools[i]) : NULL;
    if ((h & 3) != ST_LIVE || *cls >= NCLASS || !m)
        die("free of memory it did not allocate, or of a destroyed pool", p);
    return m;
}

void *jd_cmalloc_from(struct jd_cmem *m, size_t n)
{
    if (!n)
        n = 1;
    void *p = m && n <= MAX_SLOT - HDR ? pool_alloc(m, n) : large_alloc(n);
    if (!p)
        abort();
    return p;
}

void *jd_cmalloc(size_t n)
{
    return jd_cmalloc_from(cur, n);
}

void *jd_ccalloc(size_t n)
{
    void *p = jd_cmalloc(n);
    memset(p, 0, n ? n : 1);
    return p;
}

void jd_cfree(void *p)
{
    if (!p)
        return;
    size_t cls = 0;
    struct jd_cmem *m = owner(p, &cls);
    if (!m) {
        free((char *)p - 16);
        return;
    }
    size_t s = class_slot(cls);
    POISON(p, s - HDR);
    pthread_mutex_lock(&m->lock);
    m->live -= s;
    push_free(m, (char *)p - HDR, s);
    pthread_mutex_unlock(&m->lock);
}

void *jd_crealloc(void *p, size_t n)
{
    if (!p)
        return jd_cmalloc(n);
    if (!n)
        n = 1;
    size_t cls = 0, have;
    struct jd_cmem *m = owner(p, &cls);
    if (m) {
        have = class_slot(cls) - HDR;
        if (n <= MAX_SLOT - HDR && slot_size(n) == class_slot(cls)) { /* the same slot: in place */
            UNPOISON(p, n);
            POISON((char *)p + n, have - n);
            return p;
        }
    } else {
        have = malloc_usable_size((char *)p - 16) - 16;
    }
    /* in p's pool (or malloc), whatever this thread's pool is */
    void *q = m && n <= MAX_SLOT - HDR ? pool_alloc(m, n) : large_alloc(n);
    if (!q)
        abort();
    UNPOISON(p, have); /* its tail past the old size: copied, never read */
    memcpy(q, p, have < n ? have : n);
    jd_cfree(p);
    return q;
}

size_t jd_cmem_size(const void *p)
{
    if (!p)
        return 0;
    size_t cls = 0;
    if (owner(p, &cls))
        return class_slot(cls);
    return malloc_usable_size((char *)p - 16) + 8; /* (malloc's header) */
}

char *jd_cstrndup(const char *s, size_t n)
{
    char *d = jd_cmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}
