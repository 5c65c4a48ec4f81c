/*
 * cmem — the memory of cached customers, kept apart from everything else.
 *
 * An engine's customers live for as long as they are cached; between their
 * allocations, processing makes short-lived ones (decoded events, Redis
 * replies, produced messages, outbox entries). With one malloc heap for
 * both, the short-lived ones, once freed, leave holes between customers
 * that no trim can give back: ~10 MB per engine thread's arena after a
 * benchmark drain, 100-200 bytes per cached customer (docs/performance.md,
 * "Eleventh pass"). A pool (one per engine) takes the customers' allocations
 * instead: slots of 32..1024 bytes in steps of 16, carved from 1 MiB
 * mappings of its own and reused by size through free lists, so the
 * customers stay packed and the heap keeps only transient data, which the
 * idle trim returns.
 *
 * Every allocation carries an 8-byte header before it (like malloc's), which
 * names its pool and size, so jd_cfree takes any of them, from any thread.
 * A thread allocates from the pool it was given with jd_cmem_use; without
 * one, and above 1016 bytes, an allocation comes from malloc. Pointers are
 * 16-byte aligned, like malloc's (cache.c keeps a tag in the low bits).
 * Memory from jd_cmalloc must be freed with jd_cfree, never free(), and the
 * other way round: jd_cfree aborts on a pointer it did not hand out (its
 * header, read 8 bytes before it, carries a 32-bit mark and the pool's index
 * in a table of live pools), and on a double free.
 *
 * A pool's slots are reused by size, never unmapped while it lives: its
 * mapped size is the sum of each slot size's high-water mark (outbox
 * entries, short-lived, take some too). The pool must outlive its
 * allocations (an engine destroys its customers first), and every thread
 * that used it must have ended or switched (jd_cmem_use) before it goes;
 * jd_cmem_destroy resets only the calling thread's.
 */
#ifndef JOURNEYD_CMEM_H
#define JOURNEYD_CMEM_H

#include <stddef.h>

struct jd_cmem;

struct jd_cmem *jd_cmem_new(void);
/* Unmaps the pool. Returns the bytes of its allocations still live (0 when
 * its owner freed everything, as it should). Under AddressSanitizer a
 * non-zero count aborts: a leak of customer memory. */
size_t jd_cmem_destroy(struct jd_cmem *m);
/* This thread's allocations come from m from now on (NULL: from malloc). */
void jd_cmem_use(struct jd_cmem *m);
struct jd_cmem *jd_cmem_current(void);

struct jd_cmem_stats {
    size_t mapped; /* bytes mapped */
    size_t live;   /* bytes of live slots (their headers included) */
};
void jd_cmem_stats(struct jd_cmem *m, struct jd_cmem_stats *st);

/* Abort on out of memory, like jd_xmalloc. */
void *jd_cmalloc(size_t n);
/* From pool m (NULL: from malloc), whatever this thread's pool is. */
void *jd_cmalloc_from(struct jd_cmem *m, size_t n);
void *jd_ccalloc(size_t n); /* zeroed */
/* Like realloc; the result stays in p's pool (p NULL: jd_cmalloc). */
void *jd_crealloc(void *p, size_t n);
void jd_cfree(void *p);
/* What p costs: its slot, header included (malloc'd: its chunk); 0 for NULL. */
size_t jd_cmem_size(const void *p);
char *jd_cstrndup(const char *s, size_t n);

#endif
