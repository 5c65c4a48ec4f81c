/*
 * util — small shared helpers: growable byte buffers, error lists that carry
 * file:line:column, durations, clocks and the deterministic 128-bit hash used
 * for trigger ids and holdout assignment.
 */
#ifndef JOURNEYD_UTIL_H
#define JOURNEYD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define JD_MUST_CHECK __attribute__((warn_unused_result))

/* A growable byte buffer; reuse it across events (jd_buf_reset keeps the memory). */
struct jd_buf {
    char *data;
    size_t len;
    size_t cap;
};

void jd_buf_init(struct jd_buf *b);
void jd_buf_free(struct jd_buf *b);
void jd_buf_reset(struct jd_buf *b);
/* Ensures room for `extra` more bytes. Aborts on out of memory. */
void jd_buf_reserve(struct jd_buf *b, size_t extra);
/* Inline: the state encoder and the Redis pipeline append many short
 * pieces per customer, and the call was a visible share of a write-back. */
static inline void jd_buf_append(struct jd_buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap)
        jd_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}
static inline void jd_buf_puts(struct jd_buf *b, const char *s)
{
    jd_buf_append(b, s, strlen(s));
}
/* Equality of NUL-terminated strings that calls strcmp only when the
 * pointers differ and the first bytes match: event type and channel names
 * are compared many times per event, and the well-known ones share one
 * static copy (jd_state_known), so equal names are usually the same pointer. */
static inline int jd_streq(const char *a, const char *b)
{
    return a == b || (a[0] == b[0] && strcmp(a, b) == 0);
}
void jd_buf_printf(struct jd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Keeps data NUL-terminated after len (not counted in len). */
const char *jd_buf_cstr(struct jd_buf *b);
/* Appends the whole file at path and NUL-terminates (jd_buf_cstr).
 * 0, or -1 with errno set when it cannot be opened or read. */
int jd_buf_read_file(struct jd_buf *b, const char *path);

/* A list of human-readable errors, each already formatted as
 * "FILE:LINE:COL: error: MESSAGE" (or without position when line is 0). */
struct jd_errors {
    char **msgs;
    size_t n;
    size_t cap;
};

void jd_errors_init(struct jd_errors *e);
void jd_errors_free(struct jd_errors *e);
void jd_errors_add(struct jd_errors *e, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void jd_errors_print(const struct jd_errors *e, FILE *out);

/* Durations: "500ms", "45s", "15m", "12h", "30d", "2w"; a bare integer is milliseconds.
 * Returns 0 and sets *ms, or -1 on a malformed value. */
int jd_parse_duration(const char *s, int64_t *ms) JD_MUST_CHECK;
/* Formats a duration compactly ("30d", "1h", "250ms") into buf. */
const char *jd_format_duration(int64_t ms, char *buf, size_t size);

int64_t jd_now_ms(void);       /* wall clock, ms since the epoch */
int64_t jd_monotonic_ns(void); /* monotonic clock, ns */

/* Deterministic, platform-independent 128-bit hash of a list of byte strings
 * (each part is length-prefixed, so ("ab","c") != ("a","bc")). */
void jd_hash128(const void *const *parts, const size_t *lens, size_t n, uint64_t out[2]);
/* The same hash as 32 lowercase hex characters plus NUL. */
void jd_hash128_hex(const void *const *parts, const size_t *lens, size_t n, char out[33]);
/* 64-bit FNV-1a, for hash tables. */
uint64_t jd_hash64(const void *p, size_t n);

/* strdup that aborts on out of memory; NULL stays NULL. */
char *jd_strdup(const char *s);
void *jd_xmalloc(size_t n);
void *jd_xcalloc(size_t n, size_t size);
void *jd_xrealloc(void *p, size_t n);

/* Fixes glibc's mmap threshold at JD_MMAP_THRESHOLD unless the operator set
 * it: `tunables` (the GLIBC_TUNABLES environment value, may be NULL) names
 * glibc.malloc.mmap_threshold, or `old_name` (MALLOC_MMAP_THRESHOLD_, the
 * older name) is not NULL. glibc otherwise raises the threshold to
 * the largest block freed (megabytes: fetch responses, pipeline buffers), so
 * later blocks of that size come from the threads' arenas and leave them
 * fragmented; fixed, they are mapped and unmapped whole
 * (docs/performance.md, "Thirteenth pass"). Returns 1 if it set it. */
#define JD_MMAP_THRESHOLD (256 * 1024)
int jd_malloc_tune(const char *tunables, const char *old_name);

/* Gives the whole pages inside p[0..bytes) of a malloc'd block back to the
 * system; they read as zeros afterwards, as calloc left them. For scratch
 * arrays whose content is dead, such as an idle engine's per-message arrays
 * (engine_mem.c). */
void jd_release_pages(void *p, size_t bytes);

/* Splits "host:port"; returns 0 or -1. host is copied into hostbuf. */
int jd_parse_hostport(const char *s, char *hostbuf, size_t hostsize, int *port) JD_MUST_CHECK;

#endif
