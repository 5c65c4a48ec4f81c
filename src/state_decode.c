/*
 * state_decode — reads the stored form of a customer's state
 * (docs/state-format.md; state_codec.c writes it) into a fresh customer,
 * matching names against the loading rule set, and rejects a corrupt value
 * as a whole. Runs for every customer loaded from Redis (first touches,
 * rebalances, restarts), so numbers are parsed by hand.
 */
#include "journeyd/state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/rules.h"
#include "state_internal.h"

/* sanity bound on a send-time list (max_per_customer and caps[].max are at most 1e6) */
#define JD_MAX_SEND_TIMES 1000000u

static int is_pos_zero(double x)
{
    double z = 0.0;
    return memcmp(&x, &z, sizeof x) == 0;
}

struct span {
    const char *p;
    size_t len;
};

struct dec {
    struct jd_customer *c;
    const struct jd_ruleset *rs;
    struct jd_buf name; /* unescaped name scratch */
    struct jd_buf name2;
    char *errstr;
    size_t errsize;
};

static int fail(struct dec *d, const char *what, struct span s)
{
    int n = s.len > 40 ? 40 : (int)s.len;
    snprintf(d->errstr, d->errsize, "corrupt state: %s near \"%.*s\"", what, n, s.p);
    return -1;
}

/* hex digit values, -1: not one (bytes above 0x7F are not) */
static const signed char hex_tab[128] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, 0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  -1, -1, -1, -1, -1, -1, -1, 10,
    11, 12, 13, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, 10, 11, 12, 13, 14, 15, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

static int hexval(char ch)
{
    unsigned char u = (unsigned char)ch;
    return u < 128 ? hex_tab[u] : -1;
}

static int unescape(struct span s, struct jd_buf *out)
{
    jd_buf_reset(out);
    jd_buf_reserve(out, s.len);
    char *p = out->data;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        if (ch == '%') {
            if (i + 2 >= s.len)
                return -1;
            int hi = hexval(s.p[i + 1]), lo = hexval(s.p[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            ch = (unsigned char)(hi * 16 + lo);
            i += 2;
        } else if (jd_state_escape[ch]) {
            return -1;
        }
        *p++ = (char)ch;
    }
    out->len = (size_t)(p - out->data);
    *p = '\0';
    return 0;
}

/* Splits `s` at the first `sep`: head in *head, the rest (after sep) in *s.
 * Returns 0 when there was no separator (head = all of s). */
static int split(struct span *s, char sep, struct span *head)
{
    const char *q = memchr(s->p, sep, s->len);
    if (!q) {
        *head = *s;
        s->p += s->len;
        s->len = 0;
        return 0;
    }
    head->p = s->p;
    head->len = (size_t)(q - s->p);
    s->len -= head->len + 1;
    s->p = q + 1;
    return 1;
}

/* Numbers are parsed by hand with the rules of the strtoll/strtoull calls
 * they replace (loading a batch of customers spent most of its time in
 * them): an optional '-' (decimal only), then digits only, in range, and
 * fewer than 32 characters. */
static int parse_i64(struct span s, int64_t *out)
{
    if (s.len == 0 || s.len >= 32)
        return -1;
    size_t i = s.p[0] == '-';
    if (i == s.len)
        return -1;
    uint64_t v = 0;
    for (; i < s.len; i++) {
        unsigned dg = (unsigned)(s.p[i] - '0');
        if (dg > 9 || v > (UINT64_MAX - dg) / 10)
            return -1;
        v = v * 10 + dg;
    }
    if (s.p[0] == '-') {
        if (v > (uint64_t)INT64_MAX + 1)
            return -1;
        *out = (int64_t)(0 - v);
    } else {
        if (v > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)v;
    }
    return 0;
}

/* An empty field is 0 (zeros are left out in lists). */
static int parse_i64_opt(struct span s, int64_t *out)
{
    if (s.len == 0) {
        *out = 0;
        return 0;
    }
    return parse_i64(s, out);
}

static int parse_u64_hex(struct span s, uint64_t *out)
{
    if (s.len == 0 || s.len > 16)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        int h = hexval(s.p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | (uint64_t)h;
    }
    *out = v;
    return 0;
}

/* 10^0 .. 10^22: exact doubles */
static const double pow10_dbl[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int parse_double_opt(struct span s, double *out)
{
    char tmp[48];
    if (s.len == 0) {
        *out = 0;
        return 0;
    }
    if (s.len >= sizeof tmp)
        return -1;
    /* [-]DIGITS[.DIGITS] with at most 15 digits, what the encoder writes for
     * whole numbers and amounts: M / 10^F with M < 2^53 and F <= 22 is one
     * correctly rounded division of two exact doubles, the value strtod
     * gives. Anything else goes to strtod. */
    size_t i = s.p[0] == '-', start = i, dot = 0;
    uint64_t m = 0;
    int nd = 0;
    for (; i < s.len; i++) {
        unsigned dg = (unsigned)(s.p[i] - '0');
        if (dg <= 9) {
            m = m * 10 + dg;
            nd++;
        } else if (s.p[i] == '.' && !dot && i > start) {
            dot = i;
        } else {
            break;
        }
    }
    if (i == s.len && nd > 0 && nd <= 15 && (!dot || dot + 1 < s.len)) {
        double x = (double)m;
        if (dot)
            x /= pow10_dbl[s.len - dot - 1];
        *out = start ? -x : x;
        return 0;
    }
    memcpy(tmp, s.p, s.len);
    tmp[s.len] = '\0';
    char *end;
    *out = strtod(tmp, &end);
    return *end ? -1 : 0;
}

static int is_key(struct span k, const char *name)
{
    size_t n = strlen(name);
    return k.len == n && memcmp(k.p, name, n) == 0;
}

static int has_prefix(struct span k, const char *pfx, struct span *rest)
{
    size_t n = strlen(pfx);
    if (k.len <= n || memcmp(k.p, pfx, n) != 0)
        return 0;
    rest->p = k.p + n;
    rest->len = k.len - n;
    return 1;
}

static int find_agg(const struct dec *d, const char *key)
{
    if (!d->rs)
        return -1;
    size_t n = jd_rules_naggs(d->rs);
    for (size_t i = 0; i < n && i < d->c->naggs; i++)
        if (strcmp(jd_rules_agg_key(d->rs, i), key) == 0)
            return (int)i;
    return -1;
}

/* A bucket count as the ring holds it: the whole number it always is when
 * journeyd wrote it; anything else (a corrupt value) is rounded into
 * 0..UINT32_MAX rather than failing the whole customer. */
static uint32_t count_of(double x)
{
    if (!(x > 0))
        return 0; /* also NaN */
    if (x >= 4294967295.0)
        return UINT32_MAX;
    return (uint32_t)nearbyint(x);
}

/* v,n,t[,base,nb[,i:val...]] — parsed fully (so corruption is caught even
 * for a slot the rule set no longer has), stored only into a slot of the
 * same shape. */
static int dec_agg(struct dec *d, struct span key, struct span val)
{
    if (unescape(key, &d->name) != 0)
        return fail(d, "bad escape in aggregate key", key);
    int slot = find_agg(d, d->name.data);
    struct jd_agg *a = slot >= 0 ? &d->c->aggs[slot] : NULL;
    struct span f, rest = val;
    double v, n;
    int64_t t, base = 0, nb = 0;
    if (!split(&rest, ',', &f) || parse_double_opt(f, &v) != 0)
        return fail(d, "bad aggregate value", val);
    if (!split(&rest, ',', &f) || parse_double_opt(f, &n) != 0)
        return fail(d, "bad aggregate count", val);
    int more = split(&rest, ',', &f);
    int dup = 0;
    if (parse_i64_opt(f, &t) != 0)
        return fail(d, "bad aggregate time", val);
    if (more) {
        if (!split(&rest, ',', &f) || parse_i64_opt(f, &base) != 0)
            return fail(d, "bad aggregate base", val);
        more = split(&rest, ',', &f);
        if (f.len > 1 && f.p[f.len - 1] == 'c') {
            dup = 1;
            f.len--;
        }
        if (parse_i64(f, &nb) != 0 || nb < 0 || nb > 1000000)
            return fail(d, "bad aggregate bucket count", val);
    }
    if (a && (uint32_t)nb != jd_rules_agg_nbuckets(d->rs, (size_t)slot))
        a = NULL; /* the window's shape changed: start it afresh */
    if (a) {
        a->v = v;
        a->n = n;
        a->t = t;
        a->base = base;
        if (nb > 0 && a->ring) /* nb == 0: the pointer is the string's */
            a->ring->len = 0;
        else if (more && nb > 0) /* else the ring stays unallocated (all zero) */
            a->ring = jd_ring_new();
    }
    int64_t end = dup ? nb : 2 * nb;
    while (more) {
        more = split(&rest, ',', &f);
        struct span idx, first;
        int64_t lo, hi;
        double bv;
        if (!split(&f, ':', &idx) || f.len == 0 || parse_double_opt(f, &bv) != 0)
            return fail(d, "bad aggregate bucket", val);
        if (split(&idx, '-', &first)) {
            if (parse_i64(first, &lo) != 0 || parse_i64(idx, &hi) != 0)
                return fail(d, "bad aggregate bucket range", val);
        } else if (parse_i64(first, &lo) != 0) {
            return fail(d, "bad aggregate bucket", val);
        } else {
            hi = lo;
        }
        if (lo < 0 || hi < lo || hi >= end)
            return fail(d, "aggregate bucket out of range", val);
        for (int64_t i = lo; a && i <= hi; i++) {
            /* entry i < nb is the value of bucket i, else the count of
             * bucket i - nb; zeros are what an absent bucket holds */
            uint32_t bi = (uint32_t)(i < nb ? i : i - nb);
            if (is_pos_zero(bv) && !jd_ring_find(a->ring, bi))
                continue;
            struct jd_ring_bucket *bk = jd_ring_at(&a->ring, bi);
            if (i < nb)
                bk->v = bv;
            else
                bk->n = count_of(bv);
        }
    }
    if (a && dup && a->ring)
        for (uint32_t k = 0; k < a->ring->len; k++)
            a->ring->b[k].n = count_of(a->ring->b[k].v);
    return 0;
}

static int dec_agg_str(struct dec *d, struct span key, struct span val)
{
    if (unescape(key, &d->name) != 0 || unescape(val, &d->name2) != 0)
        return fail(d, "bad escape in aggregate string", key);
    int slot = find_agg(d, d->name.data);
    if (slot < 0)
        return 0;
    if (jd_rules_agg_nbuckets(d->rs, (size_t)slot))
        return 0; /* a windowed slot has no string (its pointer is the ring's) */
    struct jd_agg *a = &d->c->aggs[slot];
    jd_cfree(a->s);
    a->s = jd_cstrndup(d->name2.data, strlen(d->name2.data));
    return 0;
}

/* "T1,T2,..." into ts (NULL: checked and dropped). */
static int dec_times(struct dec *d, struct span val, struct jd_times *ts)
{
    struct span rest = val, f;
    uint32_t n = 0;
    if (ts)
        ts->n = 0;
    for (int more = 1; more;) {
        more = split(&rest, ',', &f);
        int64_t t;
        if (parse_i64(f, &t) != 0 || ++n > JD_MAX_SEND_TIMES)
            return fail(d, "bad send times", val);
        if (ts)
            jd_times_add(ts, t);
    }
    return 0;
}

static int dec_field(struct dec *d, struct span key, struct span val)
{
    struct jd_customer *c = d->c;
    struct span rest, f;
    int64_t x;

    if (is_key(key, "p")) {
        int64_t part, off;
        rest = val;
        if (!split(&rest, ':', &f) || parse_i64(f, &part) != 0 || parse_i64(rest, &off) != 0 ||
            part < INT32_MIN || part > INT32_MAX || off < -1)
            return fail(d, "bad applied offset", val);
        /* A watermark only means something for the source it was taken on. */
        if (c->partition < 0)
            c->partition = (int32_t)part;
        c->applied_offset = (int32_t)part == c->partition ? off : -1;
    } else if (is_key(key, "fs")) {
        if (parse_i64(val, &c->first_seen) != 0)
            return fail(d, "bad first_seen", val);
    } else if (is_key(key, "ls")) {
        if (parse_i64(val, &c->last_seen) != 0)
            return fail(d, "bad last_seen", val);
    } else if (is_key(key, "nt")) {
        if (parse_i64(val, &c->next_timer) != 0)
            return fail(d, "bad next_timer", val);
    } else if (is_key(key, "ch")) {
        if (unescape(val, &d->name) != 0)
            return fail(d, "bad escape in channel", val);
        jd_state_unintern(c->last_channel);
        c->last_channel = jd_state_intern(d->name.data, d->name.len);
    } else if (has_prefix(key, "c.", &rest)) {
        if (unescape(rest, &d->name) != 0)
            return fail(d, "bad escape in event type", key);
        if (parse_i64(val, &x) != 0 || x < 0 || x > JD_COUNT_MAX)
            return fail(d, "bad count", val);
        jd_state_set_count(c, d->name.data, d->name.len, x);
    } else if (is_key(key, "sp")) {
        if (val.len == 0 || parse_double_opt(val, &c->spend) != 0)
            return fail(d, "bad spend", val);
    } else if (is_key(key, "sc")) {
        if (parse_i64(val, &x) != 0 || x < 0 || x > INT32_MAX)
            return fail(d, "bad score", val);
        c->last_score = (int32_t)x;
    } else if (is_key(key, "st")) {
        if (unescape(val, &d->name) != 0)
            return fail(d, "bad escape in stage", val);
        c->stage = d->rs ? jd_rules_stage_index(d->rs, d->name.data) : -1;
    } else if (is_key(key, "sg")) {
        rest = val;
        c->segments = 0;
        for (int more = 1; more;) {
            more = split(&rest, ',', &f);
            if (unescape(f, &d->name) != 0)
                return fail(d, "bad escape in segment", val);
            int i = d->rs ? jd_rules_segment_index(d->rs, d->name.data) : -1;
            if (i >= 0 && i < JD_MAX_SEGMENTS)
                c->segments |= UINT64_C(1) << i;
        }
    } else if (has_prefix(key, "a.", &rest)) {
        return dec_agg(d, rest, val);
    } else if (has_prefix(key, "as.", &rest)) {
        return dec_agg_str(d, rest, val);
    } else if (has_prefix(key, "tf.", &rest)) {
        int64_t ms, n;
        struct span v2 = val;
        if (!split(&v2, ':', &f) || parse_i64(f, &ms) != 0 || parse_i64(v2, &n) != 0 || n < 0 ||
            n > UINT32_MAX)
            return fail(d, "bad trigger bookkeeping", val);
        if (unescape(rest, &d->name) != 0)
            return fail(d, "bad escape in trigger name", key);
        int i = d->rs ? jd_rules_trigger_index(d->rs, d->name.data) : -1;
        if (i >= 0 && (size_t)i < c->ntriggers) {
            jd_customer_last_fired(c)[i] = ms;
            jd_customer_fired_count(c)[i] = (uint32_t)n;
        }
    } else if (has_prefix(key, "tt.", &rest)) {
        if (unescape(rest, &d->name) != 0)
            return fail(d, "bad escape in trigger name", key);
        int i = d->rs ? jd_rules_trigger_index(d->rs, d->name.data) : -1;
        struct jd_times *ts = i >= 0 ? jd_customer_trigger_sends(c, (size_t)i) : NULL;
        return dec_times(d, val, ts);
    } else if (has_prefix(key, "kt.", &rest)) {
        if (unescape(rest, &d->name) != 0)
            return fail(d, "bad escape in kind", key);
        enum jd_trigger_kind k;
        /* a kind this build does not know is parsed and dropped */
        return dec_times(
            d, val, jd_kind_parse(d->name.data, &k) == 0 ? jd_customer_kind_sends(c, k) : NULL);
    } else if (is_key(key, "tz")) {
        if (unescape(val, &d->name) != 0 || d->name.len == 0)
            return fail(d, "bad time zone", val);
        jd_customer_set_tz(c, d->name.data, d->name.len);
    } else if (is_key(key, "oo")) {
        rest = val;
        c->optout = 0;
        for (int more = 1; more;) {
            more = split(&rest, ',', &f);
            enum jd_trigger_kind k;
            if (unescape(f, &d->name) != 0 || d->name.len == 0)
                return fail(d, "bad opt-out kinds", val);
            if (jd_kind_parse(d->name.data, &k) == 0)
                c->optout |= (uint8_t)(1u << k);
        }
    } else if (is_key(key, "og")) {
        /* NAME:t|c:DEADLINE,... — goals of triggers the rule set no longer
         * has are dropped (their outcome is no longer measured) */
        rest = val;
        for (int more = 1; more;) {
            more = split(&rest, ',', &f);
            struct span name, grp;
            int64_t deadline;
            if (!split(&f, ':', &name) || !split(&f, ':', &grp) || grp.len != 1 ||
                (grp.p[0] != 't' && grp.p[0] != 'c') || parse_i64(f, &deadline) != 0)
                return fail(d, "bad open goal", val);
            if (unescape(name, &d->name) != 0)
                return fail(d, "bad escape in goal trigger", val);
            int i = d->rs ? jd_rules_trigger_index(d->rs, d->name.data) : -1;
            if (i < 0)
                continue;
            struct jd_goal *g = jd_customer_add_goal(c);
            g->trigger = (uint32_t)i;
            g->control = grp.p[0] == 'c';
            g->deadline = deadline;
        }
    } else if (is_key(key, "ri")) {
        rest = val;
        size_t k = 0;
        memset(c->recent_ids, 0, sizeof c->recent_ids);
        for (int more = 1; more;) {
            more = split(&rest, ',', &f);
            uint64_t h;
            if (k == JD_RECENT_IDS || parse_u64_hex(f, &h) != 0 || h == 0)
                return fail(d, "bad recent ids", val);
            c->recent_ids[k++] = h;
        }
        c->recent_pos = (uint8_t)(k % JD_RECENT_IDS);
    } else {
        return fail(d, "unknown field", key);
    }
    return 0;
}

int jd_customer_decode(struct jd_customer *c, const struct jd_ruleset *rs, const char *data,
                       size_t len, char *errstr, size_t errsize)
{
    /* Decoded into a fresh customer, moved into c only when all of it
     * parsed: a corrupt value leaves c untouched. */
    struct jd_customer *tmp = jd_customer_new(c->id, c->id_len, c->partition, rs);
    struct dec d = {.c = tmp, .rs = rs, .errstr = errstr, .errsize = errsize};
    jd_buf_init(&d.name);
    jd_buf_init(&d.name2);
    struct span rest = {data, len}, field, key;
    int rc = -1;

    if (!data) {
        snprintf(errstr, errsize, "corrupt state: no value");
        goto out;
    }
    int more = split(&rest, '|', &field);
    if (!is_key(field, JD_STATE_VERSION)) {
        fail(&d, "unknown version", field);
        goto out;
    }
    while (more) {
        more = split(&rest, '|', &field);
        if (!split(&field, '=', &key) || key.len == 0) {
            fail(&d, "field without '='", key);
            goto out;
        }
        if (dec_field(&d, key, field) != 0)
            goto out;
    }
    rc = 0;
out:
    jd_buf_free(&d.name);
    jd_buf_free(&d.name2);
    if (rc == 0) {
        if (c->partition < 0)
            c->partition = tmp->partition;
        jd_customer_take_state(c, tmp);
    } else {
        jd_customer_destroy(tmp);
    }
    return rc;
}
