/*
 * Differential tests of the state encoder (state_codec.c) against a frozen
 * copy of the encoder as it was before it was rewritten for speed: the
 * stored text is a contract (docs/state-format.md), so every value must
 * come out byte for byte the same. Doubles are compared one by one over
 * edge values and random bit patterns (jd_state_format_double against the
 * old snprintf/strtod loop), then whole customers with random contents
 * (escapes, extreme integers, odd doubles in aggregates and rings) under
 * a rule set compiled by the real compiler, and each value decoded and
 * encoded again must give the same text.
 */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cmem_pool.h"

#include "journeyd/config.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"

#include "../../src/state_internal.h"

/* -------- the encoder before the rewrite (commit 545a352), verbatim -------- */

static int old_needs_escape(unsigned char ch)
{
    return ch < 0x20 || ch == 0x7f || ch == '|' || ch == '=' || ch == ',' || ch == '%';
}

static void old_put_escaped(struct jd_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!old_needs_escape(ch))
            continue;
        jd_buf_append(b, s + run, i - run);
        char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
        jd_buf_append(b, e, 3);
        run = i + 1;
    }
    jd_buf_append(b, s + run, len - run);
}

static void old_put_escaped_str(struct jd_buf *b, const char *s)
{
    old_put_escaped(b, s, strlen(s));
}

/* Integers are formatted by hand: encoding runs once per written customer,
 * and printf was the largest part of it. */
static void old_put_u64(struct jd_buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    jd_buf_append(b, tmp + i, sizeof tmp - i);
}

static void old_put_i64(struct jd_buf *b, int64_t v)
{
    if (v < 0) {
        jd_buf_append(b, "-", 1);
        old_put_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        old_put_u64(b, (uint64_t)v);
    }
}

static void old_put_hex(struct jd_buf *b, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = hex[v & 15];
        v >>= 4;
    } while (v);
    jd_buf_append(b, tmp + i, sizeof tmp - i);
}

/* Shortest text that reads back as the same double. Whole numbers (counts,
 * times) and amounts in cents, which are nearly all values, take a fast
 * path that prints what %.15g would. */
static void old_put_double(struct jd_buf *b, double d)
{
    char tmp[40];
    if (d > -1e15 && d < 1e15 && !signbit(d)) {
        double w = (double)(int64_t)d;
        if (w == d) {
            old_put_i64(b, (int64_t)d);
            return;
        }
        /* k / 100 is the double nearest to the decimal k/100, so printing
         * k/100 in decimal reads back as d (strtod rounds to nearest) */
        double k = nearbyint(d * 100);
        if (k < 1e13 && k / 100 == d) {
            int64_t ki = (int64_t)k;
            old_put_i64(b, ki / 100);
            char frac[3] = {'.', (char)('0' + ki % 100 / 10), (char)('0' + ki % 10)};
            jd_buf_append(b, frac, frac[2] == '0' ? 2 : 3);
            return;
        }
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (prec == 17 || strtod(tmp, NULL) == d || isnan(d))
            break;
    }
    jd_buf_puts(b, tmp);
}

/* A zero is written as nothing inside comma lists. */
static void old_put_double_nz(struct jd_buf *b, double d)
{
    if (d != 0 || signbit(d))
        old_put_double(b, d);
}

static int old_same_double(double x, double y)
{
    return memcmp(&x, &y, sizeof x) == 0;
}

static int old_is_pos_zero(double x)
{
    return old_same_double(x, 0.0);
}

/* The ring as the text form sees it: 2 x nbuckets doubles (the values,
 * then the counts; only the counts when `dup`), walked in ascending order
 * over the entries that are not +0. */
struct old_ring_walk {
    const struct jd_ring *r;
    uint32_t nb, k;
    int half, halves;
};

static int old_ring_next(struct old_ring_walk *w, uint64_t *pos, double *x)
{
    while (w->r && w->half < w->halves) {
        if (w->k >= w->r->len) {
            w->half++;
            w->k = 0;
            continue;
        }
        const struct jd_ring_bucket *bk = &w->r->b[w->k++];
        if (w->half == 0 && !old_is_pos_zero(bk->v)) {
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

static void old_put_agg(struct jd_buf *b, const struct jd_agg *a, const char *key, uint32_t nb)
{
    /* the ring and the string share their pointer: nb says which it is */
    const struct jd_ring *r = nb ? a->ring : NULL;
    const char *s = nb ? NULL : a->s;
    int nonzero = a->v != 0 || a->n != 0 || a->t != 0 || s != NULL;
    for (uint32_t k = 0; !nonzero && r && k < r->len; k++)
        nonzero = r->b[k].v != 0 || r->b[k].n != 0;
    if (!nonzero)
        return;
    jd_buf_puts(b, "|a.");
    old_put_escaped_str(b, key);
    jd_buf_puts(b, "=");
    old_put_double_nz(b, a->v);
    jd_buf_puts(b, ",");
    old_put_double_nz(b, a->n);
    jd_buf_puts(b, ",");
    if (a->t)
        old_put_i64(b, a->t);
    if (nb || a->base) {
        jd_buf_puts(b, ",");
        if (a->base)
            old_put_i64(b, a->base);
        /* Count windows hold the same numbers in both halves: write one. */
        int dup = nb > 0 && r;
        for (uint32_t k = 0; dup && r && k < r->len; k++)
            dup = old_same_double(r->b[k].v, (double)r->b[k].n);
        jd_buf_append(b, ",", 1);
        old_put_u64(b, nb);
        if (dup)
            jd_buf_append(b, "c", 1);
        struct old_ring_walk w = {r, nb, 0, 0, dup ? 1 : 2};
        uint64_t i = 0, j = 0;
        double x = 0, y = 0;
        int more = old_ring_next(&w, &i, &x);
        while (more) {
            uint64_t last = i; /* a run of equal values is written once */
            while ((more = old_ring_next(&w, &j, &y)) && j == last + 1 && old_same_double(y, x))
                last = j;
            jd_buf_append(b, ",", 1);
            old_put_u64(b, i);
            if (last > i) {
                jd_buf_append(b, "-", 1);
                old_put_u64(b, last);
            }
            jd_buf_append(b, ":", 1);
            old_put_double(b, x);
            i = j;
            x = y;
        }
    }
    if (s) {
        jd_buf_puts(b, "|as.");
        old_put_escaped_str(b, key);
        jd_buf_puts(b, "=");
        old_put_escaped_str(b, s);
    }
}

/* "=T1,T2,..." ascending send times */
static void old_put_times(struct jd_buf *b, const struct jd_times *ts)
{
    for (uint32_t i = 0; i < ts->n; i++)
        jd_buf_printf(b, "%c%" PRId64, i ? ',' : '=', ts->t[i]);
}

static void old_encode(const struct jd_customer *c, const struct jd_ruleset *rs, struct jd_buf *out)
{
    jd_buf_puts(out, "v1");
    if (c->applied_offset >= 0) {
        jd_buf_puts(out, "|p=");
        old_put_i64(out, c->partition);
        jd_buf_append(out, ":", 1);
        old_put_i64(out, c->applied_offset);
    }
    if (c->first_seen) {
        jd_buf_puts(out, "|fs=");
        old_put_i64(out, c->first_seen);
    }
    if (c->last_seen) {
        jd_buf_puts(out, "|ls=");
        old_put_i64(out, c->last_seen);
    }
    if (c->last_channel) {
        jd_buf_puts(out, "|ch=");
        old_put_escaped_str(out, c->last_channel);
    }
    for (size_t i = 0; i < c->ncounts; i++) {
        int64_t n = jd_customer_count_n(c, i);
        if (n == 0)
            continue;
        jd_buf_puts(out, "|c.");
        old_put_escaped_str(out, jd_customer_count_type(c, i));
        jd_buf_append(out, "=", 1);
        old_put_i64(out, n);
    }
    if (c->spend != 0) {
        jd_buf_puts(out, "|sp=");
        old_put_double(out, c->spend);
    }
    if (c->last_score >= 0) {
        jd_buf_puts(out, "|sc=");
        old_put_i64(out, c->last_score);
    }
    if (rs && c->stage >= 0 && (size_t)c->stage < jd_rules_nstages(rs)) {
        jd_buf_puts(out, "|st=");
        old_put_escaped_str(out, jd_rules_stage_name(rs, (size_t)c->stage));
    }
    if (rs && c->segments) {
        size_t nseg = jd_rules_nsegments(rs);
        int first = 1;
        for (size_t i = 0; i < nseg && i < JD_MAX_SEGMENTS; i++) {
            if (!(c->segments & (UINT64_C(1) << i)))
                continue;
            jd_buf_puts(out, first ? "|sg=" : ",");
            old_put_escaped_str(out, jd_rules_segment_name(rs, i));
            first = 0;
        }
    }
    if (rs) {
        size_t naggs = jd_rules_naggs(rs);
        for (size_t i = 0; i < c->naggs && i < naggs; i++)
            old_put_agg(out, &c->aggs[i], jd_rules_agg_key(rs, i), jd_rules_agg_nbuckets(rs, i));
        size_t ntrig = jd_rules_ntriggers(rs);
        for (size_t i = 0; i < c->ntriggers && i < ntrig; i++) {
            if (!jd_customer_last_fired(c)[i] && !jd_customer_fired_count(c)[i])
                continue;
            jd_buf_puts(out, "|tf.");
            old_put_escaped_str(out, jd_rules_trigger(rs, i)->on.name);
            jd_buf_append(out, "=", 1);
            old_put_i64(out, jd_customer_last_fired(c)[i]);
            jd_buf_append(out, ":", 1);
            old_put_u64(out, jd_customer_fired_count(c)[i]);
        }
        for (size_t i = 0; c->trigger_sends && i < c->ntriggers && i < ntrig; i++) {
            if (c->trigger_sends[i].n == 0)
                continue;
            jd_buf_puts(out, "|tt.");
            old_put_escaped_str(out, jd_rules_trigger(rs, i)->on.name);
            old_put_times(out, &c->trigger_sends[i]);
        }
    }
    for (int k = 0; c->kind_sends && k < JD_KIND_COUNT; k++) {
        if (c->kind_sends[k].n == 0)
            continue;
        jd_buf_printf(out, "|kt.%s", jd_kind_name((enum jd_trigger_kind)k));
        old_put_times(out, &c->kind_sends[k]);
    }
    if (c->tz) {
        jd_buf_puts(out, "|tz=");
        old_put_escaped_str(out, c->tz);
    }
    if (c->optout) {
        int first = 1;
        for (int k = 0; k < JD_KIND_COUNT; k++) {
            if (!(c->optout & (1u << k)))
                continue;
            jd_buf_printf(out, "%s%s", first ? "|oo=" : ",", jd_kind_name((enum jd_trigger_kind)k));
            first = 0;
        }
    }
    if (c->next_timer) {
        jd_buf_puts(out, "|nt=");
        old_put_i64(out, c->next_timer);
    }
    if (rs && c->ngoals) {
        size_t ntrig = jd_rules_ntriggers(rs);
        int first = 1;
        for (uint32_t i = 0; i < c->ngoals; i++) {
            const struct jd_goal *g = &c->goals[i];
            if (g->trigger >= ntrig)
                continue;
            jd_buf_puts(out, first ? "|og=" : ",");
            old_put_escaped_str(out, jd_rules_trigger(rs, g->trigger)->on.name);
            jd_buf_printf(out, ":%c:%" PRId64, g->control ? 'c' : 't', g->deadline);
            first = 0;
        }
    }
    /* Oldest first, so that decoding rebuilds the ring in the same order. */
    int first = 1;
    for (size_t k = 0; k < JD_RECENT_IDS; k++) {
        uint64_t h = c->recent_ids[(c->recent_pos + k) % JD_RECENT_IDS];
        if (!h)
            continue;
        jd_buf_puts(out, first ? "|ri=" : ",");
        old_put_hex(out, h);
        first = 0;
    }
}

/* the decoder's parsers before the rewrite, verbatim */

struct span {
    const char *p;
    size_t len;
};

static int old_hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int old_unescape(struct span s, struct jd_buf *out)
{
    jd_buf_reset(out);
    for (size_t i = 0; i < s.len; i++) {
        char ch = s.p[i];
        if (ch == '%') {
            if (i + 2 >= s.len)
                return -1;
            int hi = old_hexval(s.p[i + 1]), lo = old_hexval(s.p[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        } else if (old_needs_escape((unsigned char)ch)) {
            return -1;
        }
        jd_buf_append(out, &ch, 1);
    }
    jd_buf_cstr(out);
    return 0;
}

static int old_parse_i64(struct span s, int64_t *out)
{
    char tmp[32];
    if (s.len == 0 || s.len >= sizeof tmp)
        return -1;
    memcpy(tmp, s.p, s.len);
    tmp[s.len] = '\0';
    if (!(tmp[0] == '-' || (tmp[0] >= '0' && tmp[0] <= '9')))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int old_parse_u64_hex(struct span s, uint64_t *out)
{
    char tmp[24];
    if (s.len == 0 || s.len > 16)
        return -1;
    memcpy(tmp, s.p, s.len);
    tmp[s.len] = '\0';
    for (size_t i = 0; i < s.len; i++)
        if (old_hexval(tmp[i]) < 0)
            return -1;
    *out = strtoull(tmp, NULL, 16);
    return 0;
}

static int old_parse_double_opt(struct span s, double *out)
{
    char tmp[48];
    if (s.len == 0) {
        *out = 0;
        return 0;
    }
    if (s.len >= sizeof tmp)
        return -1;
    memcpy(tmp, s.p, s.len);
    tmp[s.len] = '\0';
    char *end;
    *out = strtod(tmp, &end);
    return *end ? -1 : 0;
}

/* -------- generators -------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static uint64_t rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

static double bits_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* A random magnitude: a random bit length, then random bits. */
static uint64_t rnd_bits(unsigned maxbits)
{
    unsigned n = (unsigned)rnd_below(maxbits + 1);
    return n == 0 ? 0 : rnd() >> (64 - n);
}

static double rnd_cents(void)
{
    return (double)rnd_bits(24) / 100; /* up to ~167,772.15 */
}

static const double fixed_doubles[] = {0.0,
                                       1.0,
                                       0.1,
                                       0.2,
                                       0.3,
                                       1.0 / 3,
                                       2.0 / 3,
                                       0.5,
                                       0.25,
                                       0.125,
                                       1e15,
                                       1e16,
                                       1e17,
                                       1e-4,
                                       1e-5,
                                       1e-6,
                                       9.9999999999999999e14,
                                       999999999999999.9,
                                       999999999999999.5,
                                       99999999999999.99,
                                       123456789012.34,
                                       9007199254740992.0,
                                       9007199254740994.0,
                                       9223372036854775808.0,
                                       18446744073709551616.0,
                                       4503599627370496.5,
                                       562949953421311.25,
                                       100.0001220703125,
                                       1.0000076293945312,
                                       83.89999999999999,
                                       5.539999999999999,
                                       96.27999999999999,
                                       12.91,
                                       70.99,
                                       59.9,
                                       0.01,
                                       0.07,
                                       0.99,
                                       1.005,
                                       2.675,
                                       1e-300,
                                       1e300,
                                       DBL_MIN,
                                       DBL_MAX,
                                       DBL_TRUE_MIN,
                                       DBL_EPSILON,
                                       0.000099999999999999991,
                                       0.00009999999999999999,
                                       0.0001000000000000001};

/* Edge-heavy doubles: every branch of the formatter and its neighbours. */
static double edge_double(void)
{
    double sign = rnd() & 1 ? -1 : 1;
    switch (rnd_below(12)) {
    case 0:
        return bits_double(rnd()); /* anything: NaN, inf, subnormals too */
    case 1:
        return sign * (double)rnd_bits(53); /* integers up to 2^53 */
    case 2:
        return sign * (double)rnd_bits(64); /* integers beyond */
    case 3:
        return sign * rnd_cents();
    case 4: { /* sums of amounts, refunds subtracted: rarely exact cents */
        double s = 0;
        for (uint64_t i = 1 + rnd_below(6); i > 0; i--)
            s += rnd() % 4 ? rnd_cents() : -rnd_cents();
        return s;
    }
    case 5: /* averages */
        return sign * rnd_cents() / (double)(1 + rnd_below(50));
    case 6: { /* m / 2^k: decimal ties at 15, 16 and 17 digits */
        uint64_t m = rnd_bits(53) | 1;
        return sign * ldexp((double)m, -(int)rnd_below(80));
    }
    case 7: { /* powers of ten and their neighbours */
        double x = pow(10, (double)((int)rnd_below(60) - 30));
        for (uint64_t i = rnd_below(4); i > 0; i--)
            x = nextafter(x, rnd() & 1 ? INFINITY : 0);
        return sign * x;
    }
    case 8: { /* powers of two and their neighbours (the gap below halves) */
        double x = ldexp(1, (int)rnd_below(120) - 60);
        for (uint64_t i = rnd_below(3); i > 0; i--)
            x = nextafter(x, rnd() & 1 ? INFINITY : 0);
        return sign * x;
    }
    case 9: /* log-uniform over the exact path's range and past it */
        return sign * pow(10, -7 + 23 * ((double)(rnd() >> 11) / 9007199254740992.0));
    case 10: {
        double x = fixed_doubles[rnd_below(sizeof fixed_doubles / sizeof fixed_doubles[0])];
        for (uint64_t i = rnd_below(3); i > 0; i--)
            x = nextafter(x, rnd() & 1 ? INFINITY : -INFINITY);
        return sign * x;
    }
    default: {
        static const double special[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, -NAN, 1, -1};
        return special[rnd_below(8)];
    }
    }
}

static void check_double(struct jd_buf *b, double d)
{
    char out[40];
    jd_buf_reset(b);
    old_put_double(b, d);
    size_t n = jd_state_format_double(out, d);
    out[n] = '\0';
    if (n != b->len || memcmp(out, b->data, n) != 0)
        fail_msg("double %a: old \"%s\", new \"%s\"", d, b->data, out);
}

static void test_doubles_fixed(void **unused)
{
    struct jd_buf b;
    jd_buf_init(&b);
    /* expected texts, independent of the old code */
    static const struct {
        double d;
        const char *text;
    } want[] = {
        {0.0, "0"},
        {-0.0, "-0"},
        {-15, "-15"},
        {0.1, "0.1"},
        {12.9, "12.9"},
        {-12.91, "-12.91"},
        {1.0 / 3, "0.3333333333333333"},
        {83.89999999999999, "83.89999999999999"},
        {100.0001220703125, "100.0001220703125"},
        {1.0000076293945312, "1.0000076293945312"},
        {999999999999999.9, "999999999999999.9"},
        {1e15, "1e+15"},
        {9007199254740992.0, "9007199254740992"},      /* %.16g */
        {9007199254740994.0 * 2, "18014398509481988"}, /* %.17g */
        {1e17 + 16, "1.0000000000000002e+17"},
        {0.0001, "0.0001"},
        {1e-5, "1e-05"},
        {0.00001234, "1.234e-05"},
        {DBL_TRUE_MIN, "4.94065645841247e-324"},
        {1e300, "1e+300"},
        {INFINITY, "inf"},
        {-INFINITY, "-inf"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char out[40];
        size_t n = jd_state_format_double(out, want[i].d);
        out[n] = '\0';
        assert_string_equal(out, want[i].text);
    }
    for (size_t i = 0; i < sizeof fixed_doubles / sizeof fixed_doubles[0]; i++) {
        double x = fixed_doubles[i];
        for (int k = 0; k < 8; k++) {
            check_double(&b, x);
            check_double(&b, -x);
            x = nextafter(x, INFINITY);
        }
    }
    /* every integer around 10^k and every cents value around them */
    for (int e = 0; e <= 16; e++) {
        double p = pow(10, e);
        for (int i = -300; i <= 300; i++) {
            check_double(&b, p + i);
            check_double(&b, (p + i) / 100);
            check_double(&b, -(p + i) / 100);
        }
    }
    jd_buf_free(&b);
}

static void test_doubles_random(void **unused)
{
    struct jd_buf b;
    jd_buf_init(&b);
    rng_state = 0x243f6a8885a308d3u;
    for (int i = 0; i < 400000; i++)
        check_double(&b, edge_double());
    jd_buf_free(&b);
}

/* -------- whole customers -------- */

struct fixture {
    struct jd_rule_src stages[3];
    struct jd_rule_src segments[4];
    struct jd_trigger_src triggers[3];
    struct jd_rules_src src;
    struct jd_ruleset *rs;
};

static void rule(struct jd_rule_src *r, const char *name, const char *expr)
{
    memset(r, 0, sizeof *r);
    r->name = (char *)name;
    r->expr = (char *)expr;
    r->file = "test.conf";
    r->line = 1;
    r->col = 1;
    r->enabled = 1;
}

/* Every kind of aggregate: lifetime and windowed counts, sums, averages,
 * minima, maxima, last values, times, attribute strings, event types that
 * need escaping. */
static struct jd_ruleset *compile(struct fixture *f)
{
    memset(f, 0, sizeof *f);
    rule(&f->stages[0], "repeat", "count('purchase') >= 2 && avg('purchase', amount, 7d) > 1");
    rule(&f->stages[1], "odd", "count('we|rd,ty=pe%') >= 1 || min('purchase', amount, 3d) < 0");
    rule(&f->stages[2], "prospect", "true");
    rule(&f->segments[0], "vip", "sum('purchase', amount, 30d) >= 100");
    rule(&f->segments[1], "big", "max('purchase', amount) > 500 && count_any(90d) > 2");
    rule(&f->segments[2], "sad", "last('feedback', score) <= 6 && days_since('purchase') > 1");
    rule(&f->segments[3], "cart",
         "not_followed_by('add_to_cart', 'purchase', 1h) || attr('k|e=y') == 'x' || "
         "attr('tz') == 'UTC' || sum('purchase', attributes['items'], 180d) > 3");
    rule(&f->triggers[0].on, "vip_welcome", "enter:vip");
    f->triggers[0].kind = JD_KIND_REWARD;
    rule(&f->triggers[1].on, "sad_one", "enter:sad");
    f->triggers[1].kind = JD_KIND_REENGAGEMENT;
    rule(&f->triggers[2].on, "big_one", "enter:big");
    f->triggers[2].kind = JD_KIND_REWARD;
    f->src.stages = f->stages;
    f->src.nstages = 3;
    f->src.segments = f->segments;
    f->src.nsegments = 4;
    f->src.triggers = f->triggers;
    f->src.ntriggers = 3;
    struct jd_errors errs;
    jd_errors_init(&errs);
    if (jd_rules_compile(&f->src, &f->rs, &errs) != 0) {
        jd_errors_print(&errs, stderr);
        fail_msg("rules did not compile");
    }
    jd_errors_free(&errs);
    return f->rs;
}

/* A string of random bytes (1..255), many of them to escape. */
static char *rnd_str(char *buf, size_t max)
{
    static const char pool[] = "ab|=,%\x01\x1f\x7f\xc3\xa9 :-_Z9.";
    size_t n = 1 + rnd_below(max - 1);
    for (size_t i = 0; i < n; i++)
        buf[i] = rnd() % 3 ? pool[rnd_below(sizeof pool - 1)] : (char)(1 + rnd_below(255));
    buf[n] = '\0';
    return buf;
}

static int64_t rnd_i64(void)
{
    switch (rnd_below(4)) {
    case 0:
        return (int64_t)rnd();
    case 1:
        return 1700000000000 + (int64_t)rnd_below(UINT64_C(100000000000));
    case 2:
        return -(int64_t)rnd_bits(62);
    default:
        return (int64_t)rnd_bits(62);
    }
}

static void fill_events(struct jd_customer *c, const struct jd_ruleset *rs)
{
    static const char *types[] = {"purchase",  "refund",       "feedback", "add_to_cart",
                                  "page_view", "we|rd,ty=pe%", "signup"};
    struct jd_eval_result res;
    int64_t at = 1700000000000 + (int64_t)rnd_below(UINT64_C(1000000000));
    char id[32], chan[24], attr[24];
    for (uint64_t n = rnd_below(25); n > 0; n--) {
        struct jd_event ev;
        memset(&ev, 0, sizeof ev);
        snprintf(id, sizeof id, "e%016" PRIx64, rnd());
        ev.event_id = id;
        ev.customer_id = c->id;
        ev.type = types[rnd_below(sizeof types / sizeof types[0])];
        ev.channel = rnd() % 4 ? "web" : rnd_str(chan, sizeof chan);
        at += (int64_t)rnd_below(5 * 86400000) - 86400000;
        ev.occurred_at = at;
        ev.has_amount = rnd() % 3 != 0;
        ev.amount = rnd() % 2 ? rnd_cents() : edge_double();
        if (!isfinite(ev.amount))
            ev.amount = 1;
        ev.has_score = rnd() & 1;
        ev.score = (int32_t)rnd_below(11);
        ev.attr_keys[0] = "k|e=y";
        ev.attr_vals[0] = rnd_str(attr, sizeof attr);
        ev.attr_keys[1] = "tz";
        ev.attr_vals[1] = rnd() & 1 ? "Europe/Paris" : "UTC";
        ev.attr_keys[2] = "items";
        ev.attr_vals[2] = rnd() & 1 ? "3" : "2.5";
        ev.nattrs = 3;
        if (jd_customer_seen_event(c, ev.event_id))
            continue;
        jd_customer_apply_core(c, &ev);
        jd_rules_on_event(rs, c, &ev, at, &res);
    }
}

/* Then random contents, field by field, beyond what events produce. */
static void fill_random(struct jd_customer *c, const struct jd_ruleset *rs)
{
    char s[40];
    if (rnd() & 1)
        c->applied_offset = rnd() & 1 ? rnd_i64() & INT64_MAX : (int64_t)rnd_below(1000);
    if (rnd() % 4 == 0)
        c->first_seen = rnd_i64();
    if (rnd() % 4 == 0)
        c->last_seen = rnd_i64();
    for (uint64_t n = rnd_below(4); n > 0; n--) {
        rnd_str(s, 30);
        jd_state_set_count(c, s, strlen(s), (int64_t)rnd_below((uint64_t)JD_COUNT_MAX + 1));
    }
    if (rnd() & 1)
        c->spend = edge_double();
    if (rnd() % 4 == 0)
        c->last_score = (int32_t)rnd_below(11);
    if (rnd() % 4 == 0)
        c->segments = rnd();
    for (size_t i = 0; i < c->naggs; i++) {
        struct jd_agg *a = &c->aggs[i];
        uint32_t nb = jd_rules_agg_nbuckets(rs, i);
        if (rnd() % 3 == 0)
            a->v = edge_double();
        if (rnd() % 3 == 0)
            a->n = edge_double();
        if (rnd() % 3 == 0)
            a->t = rnd_i64();
        if (nb && rnd() % 3 == 0) {
            a->base = rnd_i64();
            double runv = edge_double();
            for (uint64_t k = rnd_below(2 * nb); k > 0; k--) {
                struct jd_ring_bucket *bk = jd_ring_at(&a->ring, (uint32_t)rnd_below(nb));
                bk->v = rnd() % 3 == 0 ? runv : rnd() & 1 ? (double)bk->n : edge_double();
                bk->n = (uint32_t)(rnd() & 1 ? rnd_below(5) : rnd());
                if (rnd() % 4 == 0)
                    bk->v = (double)bk->n; /* count windows: one half written */
            }
        } else if (!nb && rnd() % 4 == 0) {
            jd_cfree(a->s);
            const char *v = rnd_str(s, 30);
            a->s = jd_cstrndup(v, strlen(v));
        }
    }
    for (size_t i = 0; i < c->ntriggers; i++) {
        if (rnd() & 1)
            jd_customer_last_fired(c)[i] = rnd_i64();
        if (rnd() & 1)
            jd_customer_fired_count(c)[i] = (uint32_t)rnd();
        for (uint64_t n = rnd() % 3 ? 0 : rnd_below(6); n > 0; n--)
            jd_times_add(jd_customer_trigger_sends(c, i), rnd_i64());
    }
    for (int k = 0; k < JD_KIND_COUNT; k++)
        for (uint64_t n = rnd() % 3 ? 0 : rnd_below(6); n > 0; n--)
            jd_times_add(jd_customer_kind_sends(c, (enum jd_trigger_kind)k), rnd_i64());
    if (rnd() % 4 == 0) {
        rnd_str(s, 30);
        jd_customer_set_tz(c, s, strlen(s));
    }
    c->optout = (uint8_t)rnd_below(1u << JD_KIND_COUNT);
    if (rnd() & 1)
        c->next_timer = rnd_i64();
    for (uint64_t n = rnd() % 3 ? 0 : rnd_below(5); n > 0; n--) {
        struct jd_goal *g = jd_customer_add_goal(c);
        g->trigger = (uint32_t)rnd_below(c->ntriggers);
        g->control = rnd() & 1;
        g->deadline = rnd_i64();
    }
    if (rnd() & 1) {
        for (size_t k = 0; k < JD_RECENT_IDS; k++)
            c->recent_ids[k] = rnd() % 4 ? rnd() >> rnd_below(64) : 0;
        c->recent_pos = (uint8_t)rnd_below(JD_RECENT_IDS);
    }
}

static void check_customer(const struct jd_customer *c, const struct jd_ruleset *rs,
                           struct jd_buf *old, struct jd_buf *now, struct jd_buf *again)
{
    jd_buf_reset(old);
    old_encode(c, rs, old);
    /* the encoder appends: start behind a prefix, as a caller's buffer may */
    jd_buf_reset(now);
    jd_buf_append(now, "prefix", 6);
    jd_customer_encode(c, rs, now);
    assert_int_equal(now->data[now->len], '\0');
    if (now->len != old->len + 6 || memcmp(now->data + 6, old->data, old->len) != 0)
        fail_msg("encodings differ:\nold %s\nnew %s", old->data, now->data + 6);

    char err[256];
    struct jd_customer *d = jd_customer_new(c->id, c->id_len, c->partition, rs);
    if (jd_customer_decode(d, rs, old->data, old->len, err, sizeof err) != 0)
        fail_msg("decode failed: %s (value %s)", err, old->data);
    jd_buf_reset(again);
    jd_customer_encode(d, rs, again);
    if (again->len != old->len || memcmp(again->data, old->data, old->len) != 0) {
        size_t k = 0;
        while (k < old->len && old->data[k] == again->data[k])
            k++;
        k = k > 60 ? k - 60 : 0;
        fail_msg("round trip differs (%zu vs %zu bytes):\nwas   %.200s\nagain %.200s", old->len,
                 again->len, old->data + k, again->data + k);
    }
    jd_customer_destroy(d);
}

static void test_customers(void **unused)
{
    struct fixture f;
    struct jd_ruleset *rs = compile(&f);
    assert_true(jd_rules_naggs(rs) >= 10);
    struct jd_buf old, now, again;
    jd_buf_init(&old);
    jd_buf_init(&now);
    jd_buf_init(&again);
    rng_state = 0x13198a2e03707344u;
    size_t longest = 0;
    for (int i = 0; i < 6000; i++) {
        char id[16];
        int n = snprintf(id, sizeof id, "c%d", i);
        struct jd_customer *c = jd_customer_new(id, (size_t)n, (int32_t)rnd_below(64), rs);
        if (rnd() % 8) /* some stay empty */
            fill_events(c, rs);
        if (rnd() & 1)
            fill_random(c, rs);
        check_customer(c, rs, &old, &now, &again);
        if (old.len > longest)
            longest = old.len;
        /* without a rule set: the core fields only */
        check_customer(c, NULL, &old, &now, &again);
        jd_customer_destroy(c);
    }
    assert_true(longest > 1024); /* the room made at first was outgrown too */
    jd_buf_free(&old);
    jd_buf_free(&now);
    jd_buf_free(&again);
    jd_rules_destroy(rs);
}

/* The shipped rules and a long, escape-heavy customer: values far past the
 * first room, growing in every kind of field. */
static void test_long_values(void **unused)
{
    struct fixture f;
    struct jd_ruleset *rs = compile(&f);
    struct jd_buf old, now, again;
    jd_buf_init(&old);
    jd_buf_init(&now);
    jd_buf_init(&again);
    rng_state = 0xa4093822299f31d0u;
    for (int i = 0; i < 50; i++) {
        struct jd_customer *c = jd_customer_new("long", 4, 3, rs);
        char s[400];
        memset(s, '|', sizeof s - 1);
        s[sizeof s - 1] = '\0';
        for (int k = 0; k < 20; k++) {
            s[k] = (char)('a' + k);
            const char *name = s + rnd_below(100);
            jd_state_set_count(c, name, strlen(name) - rnd_below(100), k + 1);
        }
        jd_customer_set_tz(c, s, strlen(s));
        for (size_t t = 0; t < c->ntriggers; t++)
            for (int k = 0; k < 300; k++)
                jd_times_add(jd_customer_trigger_sends(c, t), -(int64_t)rnd_bits(63));
        for (int k = 0; k < 200; k++)
            jd_times_add(jd_customer_kind_sends(c, JD_KIND_REENGAGEMENT), rnd_i64());
        for (int k = 0; k < 100; k++) {
            struct jd_goal *g = jd_customer_add_goal(c);
            g->trigger = (uint32_t)rnd_below(c->ntriggers);
            g->deadline = rnd_i64();
        }
        fill_random(c, rs);
        check_customer(c, rs, &old, &now, &again);
        assert_true(old.len > 10000);
        jd_customer_destroy(c);
    }
    jd_buf_free(&old);
    jd_buf_free(&now);
    jd_buf_free(&again);
    jd_rules_destroy(rs);
}

/* -------- decoding: the hand-written parsers against the libc-based ones -------- */

/* A number-like text: what the encoder writes, and its malformed cousins. */
static size_t rnd_number_text(char *buf, size_t cap)
{
    if (rnd() % 3 == 0) /* what the encoder writes */
        return jd_state_format_double(buf, edge_double());
    static const char *junk[] = {"nan", "-nan", "inf", "-inf", "0x1p3", " 1", "1 ", "+",
                                 "-",   ".",    "1.",  ".5",   "-.5",   "+7", "1e", "--1"};
    if (rnd() % 8 == 0) {
        const char *j = junk[rnd_below(sizeof junk / sizeof junk[0])];
        size_t n = strlen(j);
        memcpy(buf, j, n);
        return n;
    }
    size_t n = 0;
    if (rnd() % 3 == 0)
        buf[n++] = rnd() % 8 ? '-' : '+';
    for (uint64_t k = rnd_below(24); k > 0 && n < cap - 40; k--)
        buf[n++] = (char)('0' + (k == 1 || rnd() & 1 ? rnd_below(10) : 0));
    if (rnd() & 1) {
        buf[n++] = '.';
        for (uint64_t k = rnd_below(24); k > 0 && n < cap - 20; k--)
            buf[n++] = (char)('0' + rnd_below(10));
    }
    if (rnd() % 6 == 0) {
        buf[n++] = rnd() & 1 ? 'e' : 'E';
        if (rnd() & 1)
            buf[n++] = '-';
        for (uint64_t k = rnd_below(4); k > 0; k--)
            buf[n++] = (char)('0' + rnd_below(10));
    }
    if (rnd() % 20 == 0) /* a stray byte anywhere */
        buf[rnd_below(n + 1)] = "x .eE-+a"[rnd_below(8)];
    return n;
}

static int decode_text(struct jd_customer **c, const char *key, const char *text, size_t len)
{
    char v[512], err[256];
    int n = snprintf(v, sizeof v, "v1|%s=", key);
    memcpy(v + n, text, len);
    jd_customer_destroy(*c);
    *c = jd_customer_new("p", 1, 0, NULL);
    return jd_customer_decode(*c, NULL, v, (size_t)n + len, err, sizeof err);
}

static void test_parse_numbers(void **unused)
{
    rng_state = 0x082efa98ec4e6c89u;
    struct jd_customer *c = NULL;
    char text[128];
    int accepted[3] = {0, 0, 0};
    for (int i = 0; i < 200000; i++) {
        size_t n = rnd_number_text(text, sizeof text);
        assert_true(n < sizeof text);
        n %= sizeof text; /* (says so to the compiler's bounds check too) */
        struct span s = {text, n};
        text[n] = '\0';
        /* sp: a double, never empty */
        double want;
        int ok = n > 0 && old_parse_double_opt(s, &want) == 0;
        int rc = decode_text(&c, "sp", text, n);
        if (rc != (ok ? 0 : -1))
            fail_msg("sp=\"%s\": old %s, new %s", text, ok ? "accepts" : "rejects",
                     rc ? "rejects" : "accepts");
        if (ok && memcmp(&want, &c->spend, sizeof want) != 0)
            fail_msg("sp=\"%s\": old %a, new %a", text, want, c->spend);
        accepted[0] += ok;
        /* fs: an integer */
        int64_t wi = 0;
        ok = old_parse_i64(s, &wi) == 0;
        rc = decode_text(&c, "fs", text, n);
        if (rc != (ok ? 0 : -1) || (ok && wi != c->first_seen))
            fail_msg("fs=\"%s\": old %d %" PRId64 ", new %d %" PRId64, text, ok, wi, rc,
                     c->first_seen);
        accepted[1] += ok;
    }
    /* integers at and past the limits of int64 */
    static const char *ints[] = {"9223372036854775807",
                                 "9223372036854775808",
                                 "-9223372036854775808",
                                 "-9223372036854775809",
                                 "18446744073709551615",
                                 "18446744073709551616",
                                 "00000000000000000000000000000001",
                                 "0000000000000000000000000000001",
                                 "-0",
                                 "0"};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int64_t wi = 0;
        struct span s = {ints[i], strlen(ints[i])};
        int ok = old_parse_i64(s, &wi) == 0;
        int rc = decode_text(&c, "fs", s.p, s.len);
        if (rc != (ok ? 0 : -1) || (ok && wi != c->first_seen))
            fail_msg("fs=\"%s\": old %d, new %d", s.p, ok, rc);
    }
    /* ri: one hex id (not 0) */
    for (int i = 0; i < 50000; i++) {
        static const char hexchars[] = "0123456789abcdefABCDEFxg -";
        size_t n = (size_t)rnd_below(19);
        for (size_t k = 0; k < n; k++)
            text[k] = hexchars[rnd() % 8 ? rnd_below(22) : rnd_below(sizeof hexchars - 1)];
        text[n] = '\0';
        uint64_t wh = 0;
        struct span s = {text, n};
        int ok = old_parse_u64_hex(s, &wh) == 0 && wh != 0;
        int rc = decode_text(&c, "ri", text, n);
        if (rc != (ok ? 0 : -1) || (ok && c->recent_ids[0] != wh))
            fail_msg("ri=\"%s\": old %d, new %d", text, ok, rc);
        accepted[2] += ok;
    }
    /* every shape was seen both ways */
    assert_true(accepted[0] > 20000 && accepted[0] < 195000);
    assert_true(accepted[1] > 5000 && accepted[1] < 195000);
    assert_true(accepted[2] > 5000 && accepted[2] < 45000);
    jd_customer_destroy(c);
}

static void test_parse_escapes(void **unused)
{
    rng_state = 0xbe5466cf34e90c6cu;
    struct jd_customer *c = NULL;
    struct jd_buf want;
    jd_buf_init(&want);
    char text[64];
    int accepted = 0;
    for (int i = 0; i < 100000; i++) {
        static const char pool[] = "%%%0123456789aAfFgG=,\x01\x7f\xc3\xa9 z";
        size_t n = (size_t)rnd_below(30);
        for (size_t k = 0; k < n; k++) {
            text[k] = rnd() % 16 ? pool[rnd_below(sizeof pool - 1)] : (char)rnd();
            if (text[k] == '|')
                text[k] = '%'; /* a field separator would end the value */
        }
        text[n] = '\0';
        struct span s = {text, n};
        int ok = old_unescape(s, &want) == 0;
        int rc = decode_text(&c, "ch", text, n);
        if (rc != (ok ? 0 : -1))
            fail_msg("ch=\"%s\": old %d, new %d", text, ok, rc);
        if (ok && strcmp(c->last_channel, want.data) != 0)
            fail_msg("ch=\"%s\": old \"%s\", new \"%s\"", text, want.data, c->last_channel);
        accepted += ok;
    }
    assert_true(accepted > 10000 && accepted < 90000);
    jd_customer_destroy(c);
    jd_buf_free(&want);
}

/* The encoder copies a well-known name (jd_known_pool) without escaping
 * it: none may hold a byte the text form escapes. */
static void test_known_names_plain(void **state)
{
    (void)state;
    size_t names = 0;
    for (size_t i = 0; i < JD_KNOWN_POOL_SIZE; i += strlen(jd_known_pool + i) + 1) {
        const char *k = jd_known_pool + i;
        assert_true(k[0] != '\0');
        if (!jd_state_plain(k))
            fail_msg("known name \"%s\" holds an escaped byte", k);
        assert_ptr_equal(jd_state_known(k), k);
        names++;
    }
    assert_true(names > 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doubles_fixed),     cmocka_unit_test(test_doubles_random),
        cmocka_unit_test(test_customers),         cmocka_unit_test(test_long_values),
        cmocka_unit_test(test_parse_numbers),     cmocka_unit_test(test_parse_escapes),
        cmocka_unit_test(test_known_names_plain),
    };
    return jd_run_tests_in_pool(tests, NULL, NULL);
}
