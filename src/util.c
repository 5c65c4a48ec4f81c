/*
 * util — buffers, error lists, durations, clocks, hashes. Nothing here knows
 * about Kafka, Redis or rules.
 */
#include "journeyd/util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int jd_malloc_tune(const char *tunables, const char *old_name)
{
    if (old_name || (tunables && strstr(tunables, "glibc.malloc.mmap_threshold=")))
        return 0; /* the operator's choice */
    return mallopt(M_MMAP_THRESHOLD, JD_MMAP_THRESHOLD) == 1;
}

void jd_release_pages(void *p, size_t bytes)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1);
    uintptr_t b = ((uintptr_t)p + bytes) & ~(pg - 1);
    if (p && b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

void *jd_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

void *jd_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        abort();
    return p;
}

void *jd_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        abort();
    return q;
}

char *jd_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = jd_xmalloc(n);
    memcpy(d, s, n);
    return d;
}

void jd_buf_init(struct jd_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void jd_buf_free(struct jd_buf *b)
{
    free(b->data);
    jd_buf_init(b);
}

void jd_buf_reset(struct jd_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void jd_buf_reserve(struct jd_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1; /* room for the trailing NUL */
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = jd_xrealloc(b->data, cap);
    b->cap = cap;
}

void jd_buf_printf(struct jd_buf *b, const char *fmt, ...)
{
    va_list ap;
    jd_buf_reserve(b, 64);
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= b->cap - b->len) {
        jd_buf_reserve(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

const char *jd_buf_cstr(struct jd_buf *b)
{
    jd_buf_reserve(b, 0);
    b->data[b->len] = '\0';
    return b->data;
}

int jd_buf_read_file(struct jd_buf *b, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        jd_buf_append(b, chunk, n);
    int failed = ferror(f);
    fclose(f);
    jd_buf_cstr(b);
    if (failed) {
        errno = EIO;
        return -1;
    }
    return 0;
}

void jd_errors_init(struct jd_errors *e)
{
    e->msgs = NULL;
    e->n = 0;
    e->cap = 0;
}

void jd_errors_free(struct jd_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->msgs[i]);
    free(e->msgs);
    jd_errors_init(e);
}

void jd_errors_add(struct jd_errors *e, const char *file, int line, int col, const char *fmt, ...)
{
    struct jd_buf b;
    jd_buf_init(&b);
    if (file && line > 0 && col > 0)
        jd_buf_printf(&b, "%s:%d:%d: error: ", file, line, col);
    else if (file && line > 0)
        jd_buf_printf(&b, "%s:%d: error: ", file, line);
    else if (file)
        jd_buf_printf(&b, "%s: error: ", file);
    else
        jd_buf_puts(&b, "error: ");
    va_list ap;
    va_start(ap, fmt);
    char tmp[1024];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    jd_buf_puts(&b, tmp);
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 8;
        e->msgs = jd_xrealloc(e->msgs, e->cap * sizeof *e->msgs);
    }
    e->msgs[e->n++] = b.data;
}

void jd_errors_print(const struct jd_errors *e, FILE *out)
{
    for (size_t i = 0; i < e->n; i++)
        fprintf(out, "%s\n", e->msgs[i]);
}

int jd_parse_duration(const char *s, int64_t *ms)
{
    if (!s)
        return -1;
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || v < 0)
        return -1;
    int64_t mult;
    if (*end == '\0')
        mult = 1;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        mult = 3600 * 1000;
    else if (strcmp(end, "d") == 0)
        mult = 86400LL * 1000;
    else if (strcmp(end, "w") == 0)
        mult = 7 * 86400LL * 1000;
    else
        return -1;
    if (v > INT64_MAX / mult)
        return -1;
    *ms = (int64_t)v * mult;
    return 0;
}

const char *jd_format_duration(int64_t ms, char *buf, size_t size)
{
    static const struct {
        int64_t unit;
        const char *suffix;
    } units[] = {
        {7 * 86400000LL, "w"}, {86400000LL, "d"}, {3600000LL, "h"}, {60000LL, "m"}, {1000LL, "s"}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms != 0 && ms % units[i].unit == 0) {
            snprintf(buf, size, "%" PRId64 "%s", ms / units[i].unit, units[i].suffix);
            return buf;
        }
    }
    snprintf(buf, size, "%" PRId64 "ms", ms);
    return buf;
}

int64_t jd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t jd_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

uint64_t jd_hash64(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Two independent 64-bit lanes (FNV-1a with different offsets, then a
 * murmur-style finaliser). Not cryptographic; only deterministic and well
 * spread, which is all a trigger id and a holdout bucket need. */
static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

void jd_hash128(const void *const *parts, const size_t *lens, size_t n, uint64_t out[2])
{
    uint64_t a = 1469598103934665603ULL, b = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char len[8];
        for (int k = 0; k < 8; k++)
            len[k] = (unsigned char)(((uint64_t)lens[i]) >> (8 * k));
        const unsigned char *s = parts[i];
        for (int k = 0; k < 8; k++) {
            a = (a ^ len[k]) * 1099511628211ULL;
            b = (b ^ len[k]) * 0x100000001b3ULL + 0x2545F4914F6CDD1DULL;
        }
        for (size_t k = 0; k < lens[i]; k++) {
            a = (a ^ s[k]) * 1099511628211ULL;
            b = (b ^ s[k]) * 0x100000001b3ULL + 0x2545F4914F6CDD1DULL;
        }
    }
    out[0] = mix64(a ^ mix64(b));
    out[1] = mix64(b + 0x9e3779b97f4a7c15ULL * out[0]);
}

void jd_hash128_hex(const void *const *parts, const size_t *lens, size_t n, char out[33])
{
    uint64_t h[2];
    jd_hash128(parts, lens, n, h);
    snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, h[0], h[1]);
}

int jd_parse_hostport(const char *s, char *hostbuf, size_t hostsize, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return -1;
    size_t hl = (size_t)(colon - s);
    if (hl >= hostsize)
        return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p <= 0 || p > 65535)
        return -1;
    memcpy(hostbuf, s, hl);
    hostbuf[hl] = '\0';
    *port = (int)p;
    return 0;
}
