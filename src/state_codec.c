/*
 * state_codec — the stored form of a customer's state: one short, versioned
 * line of text ("v1|key=value|..."), readable with redis-cli and parsed in a
 * few lines of Python. docs/state-format.md is the reference. This file
 * writes it (jd_customer_encode); state_decode.c reads it.
 *
 * Names that come from the rule set (stage, segments, aggregate keys,
 * triggers) are written by name and matched against the rule set on decode,
 * so a value written under an older rule set loads with what still applies.
 * Zero and empty values are left out to keep the value small.
 */
#include "journeyd/state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/rules.h"
#include "state_internal.h"

/* The bytes the text form escapes (docs/state-format.md): below 0x20, 0x7F,
 * '%', ',', '=' and '|'. NUL is among them: the encoder stops there. */
const unsigned char jd_state_escape[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1,
};

/* The encoder writes through a cursor into out's memory: each field makes
 * room once for the longest text it can produce (wr_need), then its pieces
 * are stored without a bounds check, a call or a NUL each. Encoding runs on
 * the engine's thread for every written customer (~800,000 per 1M events). */
struct wr {
    struct jd_buf *b;
    char *p;   /* next byte */
    char *lim; /* end of the room (one byte beyond it is kept for the NUL) */
};

static void wr_grow(struct wr *w, size_t n)
{
    w->b->len = (size_t)(w->p - w->b->data);
    jd_buf_reserve(w->b, n);
    w->p = w->b->data + w->b->len;
    w->lim = w->b->data + w->b->cap - 1;
}

static inline char *wr_need(struct wr *w, size_t n)
{
    if ((size_t)(w->lim - w->p) < n)
        wr_grow(w, n);
    return w->p;
}

static inline char *put_lit(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, s) put_lit((p), (s), sizeof(s) - 1)

/* the room a number takes at most: "-" and 20 digits, or a double (24) */
#define NUM_MAX 32

static const char digits2[201] = "0001020304050607080910111213141516171819"
                                 "2021222324252627282930313233343536373839"
                                 "4041424344454647484950515253545556575859"
                                 "6061626364656667686970717273747576777879"
                                 "8081828384858687888990919293949596979899";

static const uint64_t pow10_u64[20] = {UINT64_C(1),
                                       UINT64_C(10),
                                       UINT64_C(100),
                                       UINT64_C(1000),
                                       UINT64_C(10000),
                                       UINT64_C(100000),
                                       UINT64_C(1000000),
                                       UINT64_C(10000000),
                                       UINT64_C(100000000),
                                       UINT64_C(1000000000),
                                       UINT64_C(10000000000),
                                       UINT64_C(100000000000),
                                       UINT64_C(1000000000000),
                                       UINT64_C(10000000000000),
                                       UINT64_C(100000000000000),
                                       UINT64_C(1000000000000000),
                                       UINT64_C(10000000000000000),
                                       UINT64_C(100000000000000000),
                                       UINT64_C(1000000000000000000),
                                       UINT64_C(10000000000000000000)};

/* Decimal digits of v (>= 1): the bit length's estimate, corrected by one
 * comparison. */
static inline unsigned ndigits(uint64_t v)
{
    unsigned t = (unsigned)(64 - __builtin_clzll(v | 1)) * 1233 >> 12;
    return t + (v >= pow10_u64[t]);
}

/* Exactly 8 digits of v (< 10^8) ending at e. */
static inline void put_8digits(char *e, uint32_t v)
{
    uint32_t hi = v / 10000, lo = v % 10000;
    memcpy(e - 8, digits2 + 2 * (hi / 100), 2);
    memcpy(e - 6, digits2 + 2 * (hi % 100), 2);
    memcpy(e - 4, digits2 + 2 * (lo / 100), 2);
    memcpy(e - 2, digits2 + 2 * (lo % 100), 2);
}

/* Integers are formatted by hand, two digits at a time, 8 at a time in
 * 32-bit arithmetic: times in ms have 13 digits, and the division chain
 * of a digit-by-digit loop was the largest part of encoding. */
static inline char *put_u64(char *p, uint64_t v)
{
    if (v < 10) {
        *p = (char)('0' + v);
        return p + 1;
    }
    char *e = p + ndigits(v), *q = e;
    while (v >= 100000000) {
        put_8digits(q, (uint32_t)(v % 100000000));
        v /= 100000000;
        q -= 8;
    }
    uint32_t x = (uint32_t)v;
    while (x >= 100) {
        q -= 2;
        memcpy(q, digits2 + 2 * (x % 100), 2);
        x /= 100;
    }
    if (x >= 10)
        memcpy(q - 2, digits2 + 2 * x, 2);
    else
        q[-1] = (char)('0' + x);
    return e;
}

static inline char *put_i64(char *p, int64_t v)
{
    if (v < 0) {
        *p++ = '-';
        return put_u64(p, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(p, (uint64_t)v);
}

static inline char *put_hex(char *p, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    unsigned n = (unsigned)(67 - __builtin_clzll(v | 1)) / 4;
    for (unsigned i = n; i-- > 0; v >>= 4)
        p[i] = hex[v & 15];
    return p + n;
}

#ifdef __SIZEOF_INT128__
typedef unsigned __int128 u128;

static u128 pow10_u128(int s)
{
    return s <= 19 ? pow10_u64[s] : (u128)pow10_u64[19] * pow10_u64[s - 19];
}

/* What "%.15g", "%.16g" or "%.17g" (the first that reads back as a) prints
 * for 1e-5 <= a < 1e15, computed exactly: a = m / 2^k with m < 2^53, so
 * a * 10^s (s <= 21) is m * 10^s / 2^k in 128-bit integers, rounded to
 * nearest (ties to even, as glibc's printf); the digits read back as a when
 * they are nearer to it than half the gap to its neighbours (ties: strtod
 * picks the even mantissa). Returns NULL when %g would use the exponent
 * form (snprintf then writes it). */
static char *put_double_exact(char *p, double a)
{
    uint64_t bits;
    memcpy(&bits, &a, sizeof bits);
    int be = (int)(bits >> 52 & 0x7ff);
    uint64_t m = (bits & ((UINT64_C(1) << 52) - 1)) | UINT64_C(1) << 52;
    int k = 1075 - be; /* a = m / 2^k, 3 <= k <= 69 in this range */
    /* X, the decimal exponent: 10^X <= a < 10^(X+1), i.e. the 17-digit
     * scaling of a has 17 digits before the point */
    int X = ((be - 1023) * 78913) >> 18;
    for (;;) {
        uint64_t q = (uint64_t)((m * pow10_u128(16 - X)) >> k);
        if (q >= pow10_u64[17])
            X++;
        else if (q < pow10_u64[16])
            X--;
        else
            break;
    }
    u128 one = (u128)1 << k, half = one >> 1;
    for (int prec = 15; prec <= 17; prec++) {
        int s = prec - 1 - X; /* 0 <= s <= 21 */
        u128 ps = pow10_u128(s), n = m * ps;
        uint64_t d = (uint64_t)(n >> k);
        u128 r = n & (one - 1);
        int up = r > half || (r == half && (d & 1));
        /* 2^k * |digits - a * 10^s|, against 2^k * (half a gap) * 10^s.
         * In this range the digits never fall exactly between two doubles
         * (a midpoint has more than 17 digits) and a power of two is exact
         * at 15 digits, so the last two cases are for completeness. */
        u128 err = up ? one - r : r;
        int exact;
        if (!up && r && m == UINT64_C(1) << 52) /* below a power of two: half the gap */
            exact = 4 * err <= ps;
        else
            exact = 2 * err < ps || (2 * err == ps && !(m & 1));
        if (prec < 17 && !exact)
            continue;
        d += (uint64_t)up;
        int x = X;
        if (d == pow10_u64[prec]) { /* rounded up to the next power of ten */
            d /= 10;
            x++;
        }
        if (x < -4 || x >= prec)
            return NULL;
        char dig[20];
        put_u64(dig, d); /* prec digits */
        int nd = prec;
        while (nd > x + 1 && dig[nd - 1] == '0')
            nd--; /* %g drops trailing zeros of the fraction */
        if (x >= 0) {
            p = put_lit(p, dig, (size_t)x + 1);
            if (nd > x + 1) {
                *p++ = '.';
                p = put_lit(p, dig + x + 1, (size_t)(nd - x - 1));
            }
        } else {
            p = PUT_LIT(p, "0.");
            for (int i = -1; i > x; i--)
                *p++ = '0';
            p = put_lit(p, dig, (size_t)nd);
        }
        return p;
    }
    return NULL;
}
#endif

/* Shortest text that reads back as the same double: %.15g, %.16g or
 * %.17g, whichever is first exact (docs/state-format.md). Whole numbers and
 * amounts in cents, nearly all values, take a short path; other values in
 * 1e-5..1e15 an exact integer computation; the rest snprintf. */
static char *put_double(char *p, double d)
{
    double a = fabs(d);
    if (a < 1e15) {
        if (signbit(d))
            *p++ = '-'; /* %g of -x is "-" and %g of x; so is -0 */
        double w = (double)(int64_t)a;
        if (w == a)
            return put_u64(p, (uint64_t)a);
        /* k / 100 is the double nearest to the decimal k/100, so printing
         * k/100 in decimal reads back as a (strtod rounds to nearest) */
        double k = nearbyint(a * 100);
        if (k < 1e13 && k / 100 == a) {
            uint64_t ki = (uint64_t)k;
            p = put_u64(p, ki / 100);
            p[0] = '.';
            p[1] = (char)('0' + ki % 100 / 10);
            p[2] = (char)('0' + ki % 10);
            return p + (p[2] == '0' ? 2 : 3);
        }
#ifdef __SIZEOF_INT128__
        if (a >= 1e-5) {
            char *e = put_double_exact(p, a);
            if (e)
                return e;
        }
#endif
        if (signbit(d))
            p--;
    }
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (prec == 17 || strtod(tmp, NULL) == d || isnan(d))
            break;
    }
    size_t n = strlen(tmp);
    memcpy(p, tmp, n);
    return p + n;
}

int jd_state_plain(const char *s)
{
    for (const unsigned char *u = (const unsigned char *)s; *u; u++)
        if (jd_state_escape[*u])
            return 0;
    return 1;
}

size_t jd_state_format_double(char *out, double d)
{
    return (size_t)(put_double(out, d) - out);
}

/* Writes s escaped in one pass, without its length first: the table
 * flags the terminating NUL too. Room is made 32 bytes of s at a time. */
static void put_escaped_str(struct wr *w, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    if (jd_state_is_known(s)) {
        /* a well-known type or channel (most count keys, the last channel):
         * nothing in it is escaped (test_state_codec checks them all) */
        size_t n = strlen(s);
        w->p = put_lit(wr_need(w, n), s, n);
        return;
    }
    const unsigned char *u = (const unsigned char *)s;
    for (;;) {
        char *p = wr_need(w, 3 * 32);
        for (int i = 0; i < 32; i++) {
            unsigned char ch = *u++;
            if (__builtin_expect(!jd_state_escape[ch], 1)) {
                *p++ = (char)ch;
                continue;
            }
            if (!ch) {
                w->p = p;
                return;
            }
            p[0] = '%';
            p[1] = hex[ch >> 4];
            p[2] = hex[ch & 15];
            p += 3;
        }
        w->p = p;
    }
}

/* A field's key: "|" PREFIX NAME "=". NAME is escaped, or copied as it is
 * when nlen, its length, says it needs no escaping (jd_state_plain);
 * SIZE_MAX: escape it. */
static void put_key(struct wr *w, const char *prefix, size_t plen, const char *name, size_t nlen)
{
    if (nlen != SIZE_MAX) {
        char *k = put_lit(wr_need(w, plen + nlen + 1), prefix, plen);
        k = put_lit(k, name, nlen);
        *k++ = '=';
        w->p = k;
        return;
    }
    w->p = put_lit(wr_need(w, plen), prefix, plen);
    put_escaped_str(w, name);
    *wr_need(w, 1) = '=';
    w->p++;
}

#define PUT_KEY(w, prefix, name) put_key((w), (prefix), sizeof(prefix) - 1, (name), SIZE_MAX)

static int same_double(double x, double y)
{
    return memcmp(&x, &y, sizeof x) == 0;
}

static int is_pos_zero(double x)
{
    return same_double(x, 0.0);
}

/* The ring as the text form sees it: 2 x nbuckets doubles (the values,
 * then the counts; only the counts when `dup`), walked in ascending order
 * over the entries that are not +0. */
struct ring_walk {
    const struct jd_ring *r;
    uint32_t nb, k;
    int half, halves;
};

static int ring_next(struct ring_walk *w, uint64_t *pos, double *x)
{
    while (w->r && w->half < w->halves) {
        if (w->k >= w->r->len) {
            w->half++;
            w->k = 0;
            continue;
        }
        const struct jd_ring_bucket *bk = &w->r->b[w->k++];
        if (w->half == 0 && !is_pos_zero(bk->v)) {
            *pos = bk->i;
            *x = bk->v;
            return 1;
        }
        if (w->half == 1 && bk->n != 0) {
            *pos = (uint64_t)w->nb + bk->i;
            *x = bk->n;
            return 1;
        }
    }
    return 0;
}

/* keylen: the key's length when it is written as it is (jd_state_plain),
 * SIZE_MAX when it is to be escaped. */
static void put_agg(struct wr *w, const struct jd_agg *a, const char *key, size_t keylen,
                    uint32_t nb)
{
    /* the ring and the string share their pointer: nb says which it is */
    const struct jd_ring *r = nb ? a->ring : NULL;
    const char *s = nb ? NULL : a->s;
    int nonzero = a->v != 0 || a->n != 0 || a->t != 0 || s != NULL;
    for (uint32_t k = 0; !nonzero && r && k < r->len; k++)
        nonzero = r->b[k].v != 0 || r->b[k].n != 0;
    if (!nonzero)
        return;
    put_key(w, "|a.", 3, key, keylen);
    char *p = wr_need(w, 5 * NUM_MAX);
    if (a->v != 0 || signbit(a->v))
        p = put_double(p, a->v);
    *p++ = ',';
    if (a->n != 0 || signbit(a->n))
        p = put_double(p, a->n);
    *p++ = ',';
    if (a->t)
        p = put_i64(p, a->t);
    if (nb || a->base) {
        *p++ = ',';
        if (a->base)
            p = put_i64(p, a->base);
        /* Count windows hold the same numbers in both halves: write one. */
        int dup = nb > 0 && r;
        for (uint32_t k = 0; dup && r && k < r->len; k++)
            dup = same_double(r->b[k].v, (double)r->b[k].n);
        *p++ = ',';
        p = put_u64(p, nb);
        if (dup)
            *p++ = 'c';
        struct ring_walk rw = {r, nb, 0, 0, dup ? 1 : 2};
        uint64_t i = 0, j = 0;
        double x = 0, y = 0;
        int more = ring_next(&rw, &i, &x);
        while (more) {
            uint64_t last = i; /* a run of equal values is written once */
            while ((more = ring_next(&rw, &j, &y)) && j == last + 1 && same_double(y, x))
                last = j;
            w->p = p;
            p = wr_need(w, 3 * NUM_MAX);
            *p++ = ',';
            p = put_u64(p, i);
            if (last > i) {
                *p++ = '-';
                p = put_u64(p, last);
            }
            *p++ = ':';
            p = put_double(p, x);
            i = j;
            x = y;
        }
    }
    w->p = p;
    if (s) {
        PUT_KEY(w, "|as.", key);
        put_escaped_str(w, s);
    }
}

/* "T1,T2,..." ascending send times (after the key's '=') */
static void put_times(struct wr *w, const struct jd_times *ts)
{
    for (uint32_t i = 0; i < ts->n; i++) {
        char *p = wr_need(w, NUM_MAX);
        if (i)
            *p++ = ',';
        w->p = put_i64(p, ts->t[i]);
    }
}

void jd_customer_encode(const struct jd_customer *c, const struct jd_ruleset *rs,
                        struct jd_buf *out)
{
    /* The rings are separate allocations, rarely in cache: their loads
     * start now and overlap the fields written before the aggregates. */
    if (rs) {
        size_t naggs = jd_rules_naggs(rs);
        for (size_t i = 0; i < c->naggs && i < naggs; i++)
            if (jd_rules_agg_nbuckets(rs, i) && c->aggs[i].ring)
                __builtin_prefetch(c->aggs[i].ring);
    }
    /* most values fit in the first room: the checks below rarely grow it */
    jd_buf_reserve(out, 1024);
    struct wr w = {out, out->data + out->len, out->data + out->cap - 1};
    char *p = wr_need(&w, 2 + 5 * NUM_MAX);
    p = PUT_LIT(p, JD_STATE_VERSION);
    if (c->applied_offset >= 0) {
        p = PUT_LIT(p, "|p=");
        p = put_i64(p, c->partition);
        *p++ = ':';
        p = put_i64(p, c->applied_offset);
    }
    if (c->first_seen) {
        p = PUT_LIT(p, "|fs=");
        p = put_i64(p, c->first_seen);
    }
    if (c->last_seen) {
        p = PUT_LIT(p, "|ls=");
        p = put_i64(p, c->last_seen);
    }
    w.p = p;
    if (c->last_channel) {
        w.p = PUT_LIT(wr_need(&w, 4), "|ch=");
        put_escaped_str(&w, c->last_channel);
    }
    for (size_t i = 0; i < c->ncounts; i++) {
        int64_t n = jd_customer_count_n(c, i);
        if (n == 0)
            continue;
        PUT_KEY(&w, "|c.", jd_customer_count_type(c, i));
        w.p = put_i64(wr_need(&w, NUM_MAX), n);
    }
    p = wr_need(&w, 2 * NUM_MAX);
    if (c->spend != 0) {
        p = PUT_LIT(p, "|sp=");
        p = put_double(p, c->spend);
    }
    if (c->last_score >= 0) {
        p = PUT_LIT(p, "|sc=");
        p = put_i64(p, c->last_score);
    }
    w.p = p;
    if (rs && c->stage >= 0 && (size_t)c->stage < jd_rules_nstages(rs)) {
        w.p = PUT_LIT(wr_need(&w, 4), "|st=");
        put_escaped_str(&w, jd_rules_stage_name(rs, (size_t)c->stage));
    }
    if (rs && c->segments) {
        size_t nseg = jd_rules_nsegments(rs);
        int first = 1;
        for (size_t i = 0; i < nseg && i < JD_MAX_SEGMENTS; i++) {
            if (!(c->segments & (UINT64_C(1) << i)))
                continue;
            p = wr_need(&w, 4);
            w.p = first ? PUT_LIT(p, "|sg=") : PUT_LIT(p, ",");
            put_escaped_str(&w, jd_rules_segment_name(rs, i));
            first = 0;
        }
    }
    if (rs) {
        size_t naggs = jd_rules_naggs(rs);
        for (size_t i = 0; i < c->naggs && i < naggs; i++)
            put_agg(&w, &c->aggs[i], jd_rules_agg_key(rs, i), jd_rules_agg_key_plain_len(rs, i),
                    jd_rules_agg_nbuckets(rs, i));
        size_t ntrig = jd_rules_ntriggers(rs);
        for (size_t i = 0; i < c->ntriggers && i < ntrig; i++) {
            if (!jd_customer_last_fired(c)[i] && !jd_customer_fired_count(c)[i])
                continue;
            PUT_KEY(&w, "|tf.", jd_rules_trigger(rs, i)->on.name);
            p = wr_need(&w, 2 * NUM_MAX);
            p = put_i64(p, jd_customer_last_fired(c)[i]);
            *p++ = ':';
            w.p = put_u64(p, jd_customer_fired_count(c)[i]);
        }
        for (size_t i = 0; c->trigger_sends && i < c->ntriggers && i < ntrig; i++) {
            if (c->trigger_sends[i].n == 0)
                continue;
            PUT_KEY(&w, "|tt.", jd_rules_trigger(rs, i)->on.name);
            put_times(&w, &c->trigger_sends[i]);
        }
    }
    for (int k = 0; c->kind_sends && k < JD_KIND_COUNT; k++) {
        if (c->kind_sends[k].n == 0)
            continue;
        const char *name = jd_kind_name((enum jd_trigger_kind)k); /* not escaped */
        size_t n = strlen(name);
        p = wr_need(&w, 5 + n);
        p = PUT_LIT(p, "|kt.");
        p = put_lit(p, name, n);
        *p++ = '=';
        w.p = p;
        put_times(&w, &c->kind_sends[k]);
    }
    if (c->tz) {
        w.p = PUT_LIT(wr_need(&w, 4), "|tz=");
        put_escaped_str(&w, c->tz);
    }
    if (c->optout) {
        int first = 1;
        for (int k = 0; k < JD_KIND_COUNT; k++) {
            if (!(c->optout & (1u << k)))
                continue;
            const char *name = jd_kind_name((enum jd_trigger_kind)k);
            size_t n = strlen(name);
            p = wr_need(&w, 4 + n);
            p = first ? PUT_LIT(p, "|oo=") : PUT_LIT(p, ",");
            w.p = put_lit(p, name, n);
            first = 0;
        }
    }
    if (c->next_timer) {
        p = wr_need(&w, 4 + NUM_MAX);
        p = PUT_LIT(p, "|nt=");
        w.p = put_i64(p, c->next_timer);
    }
    if (rs && c->ngoals) {
        size_t ntrig = jd_rules_ntriggers(rs);
        int first = 1;
        for (uint32_t i = 0; i < c->ngoals; i++) {
            const struct jd_goal *g = &c->goals[i];
            if (g->trigger >= ntrig)
                continue;
            p = wr_need(&w, 4);
            w.p = first ? PUT_LIT(p, "|og=") : PUT_LIT(p, ",");
            put_escaped_str(&w, jd_rules_trigger(rs, g->trigger)->on.name);
            p = wr_need(&w, 3 + NUM_MAX);
            *p++ = ':';
            *p++ = g->control ? 'c' : 't';
            *p++ = ':';
            w.p = put_i64(p, g->deadline);
            first = 0;
        }
    }
    /* Oldest first, so that decoding rebuilds the ring in the same order. */
    p = wr_need(&w, 4 + 17 * JD_RECENT_IDS);
    int first = 1;
    for (size_t k = 0; k < JD_RECENT_IDS; k++) {
        uint64_t h = c->recent_ids[(c->recent_pos + k) % JD_RECENT_IDS];
        if (!h)
            continue;
        p = first ? PUT_LIT(p, "|ri=") : PUT_LIT(p, ",");
        p = put_hex(p, h);
        first = 0;
    }
    out->len = (size_t)(p - out->data);
    *p = '\0';
}
