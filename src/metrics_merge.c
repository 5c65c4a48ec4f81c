/*
 * metrics_merge — one /metrics exposition out of the N engines' expositions
 * (see include/journeyd/metrics_merge.h for the semantics).
 *
 * The texts outlive the call, so the tables keep spans into them rather than
 * copies: a family holds its HELP and TYPE lines and its series, a series its
 * key (name and labels, verbatim), its first value token and the running
 * combination. It runs once per scrape over a few hundred series, so lookups
 * are linear; a family remembers where its last series was found, because
 * every engine renders the same series in the same order.
 */
#include "journeyd/metrics_merge.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NO_FAMILY SIZE_MAX

struct span {
    const char *p;
    size_t n;
};

struct series {
    struct span key;   /* metric name and label set, as in the text */
    struct span first; /* the first value token, printed as is when alone */
    size_t ncontrib;   /* values combined so far (a duplicate within a text counts) */
    int all_int;       /* every value so far was an int64 token */
    int64_t i;         /* the combination as integers, meaningful while all_int */
    double d;          /* the combination as doubles, always kept */
};

struct family {
    struct span name;
    struct span help, type; /* whole lines without the newline; n == 0 when not seen */
    int grouped;            /* histogram or summary: name_bucket/_sum/_count belong here */
    enum jd_merge_op op;
    struct series *s;
    size_t ns, cap;
    size_t hint; /* index after the series last found */
};

struct merge {
    struct family *f;
    size_t nf, cap;
    const struct jd_merge_rule *rules;
    size_t nrules;
};

/* '\r' counts as a blank so that CRLF texts parse. */
static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static int span_eq(struct span a, struct span b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static int span_is(struct span a, const char *s)
{
    return a.n == strlen(s) && memcmp(a.p, s, a.n) == 0;
}

/* The next run of non-blank bytes in [*pp, end); advances *pp past it. */
static struct span next_token(const char **pp, const char *end)
{
    const char *p = *pp;
    while (p < end && is_blank(*p))
        p++;
    const char *start = p;
    while (p < end && !is_blank(*p))
        p++;
    *pp = p;
    return (struct span){start, (size_t)(p - start)};
}

/* ---- families and series ------------------------------------------------ */

static enum jd_merge_op rule_op(const struct merge *m, struct span name)
{
    for (size_t i = 0; i < m->nrules; i++)
        if (m->rules[i].family && span_is(name, m->rules[i].family))
            return m->rules[i].op;
    return JD_MERGE_SUM;
}

static size_t family_add(struct merge *m, struct span name)
{
    if (m->nf == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 32;
        m->f = jd_xrealloc(m->f, m->cap * sizeof(*m->f));
    }
    m->f[m->nf] = (struct family){.name = name, .op = rule_op(m, name)};
    return m->nf++;
}

/* The family named exactly `name` (HELP and TYPE lines), created when new. */
static size_t family_named(struct merge *m, struct span name)
{
    for (size_t i = 0; i < m->nf; i++)
        if (span_eq(m->f[i].name, name))
            return i;
    return family_add(m, name);
}

static int family_owns(const struct family *f, struct span metric)
{
    if (span_eq(f->name, metric))
        return 1;
    if (!f->grouped || metric.n <= f->name.n || memcmp(metric.p, f->name.p, f->name.n) != 0)
        return 0;
    struct span suffix = {metric.p + f->name.n, metric.n - f->name.n};
    return span_is(suffix, "_bucket") || span_is(suffix, "_sum") || span_is(suffix, "_count");
}

static size_t family_of_sample(struct merge *m, struct span metric, size_t cur)
{
    if (cur != NO_FAMILY && family_owns(&m->f[cur], metric))
        return cur;
    for (size_t i = 0; i < m->nf; i++)
        if (family_owns(&m->f[i], metric))
            return i;
    return family_add(m, metric);
}

static int64_t combine_int(enum jd_merge_op op, int64_t a, int64_t b)
{
    int64_t r;
    switch (op) {
    case JD_MERGE_MAX:
        return a > b ? a : b;
    case JD_MERGE_MIN:
        return a < b ? a : b;
    default:
        if (__builtin_add_overflow(a, b, &r))
            return b > 0 ? INT64_MAX : INT64_MIN;
        return r;
    }
}

static double combine_double(enum jd_merge_op op, double a, double b)
{
    if (op == JD_MERGE_SUM || op == JD_MERGE_DROP)
        return a + b;
    if (isnan(a) || isnan(b))
        return NAN;
    if (op == JD_MERGE_MAX)
        return a > b ? a : b;
    return a < b ? a : b;
}

static struct series *series_find(struct family *f, struct span key)
{
    for (size_t k = 0; k < f->ns; k++) {
        size_t i = (f->hint + k) % f->ns;
        if (span_eq(f->s[i].key, key)) {
            f->hint = i + 1;
            return &f->s[i];
        }
    }
    return NULL;
}

static void series_add(struct family *f, struct span key, struct span tok, int is_int, int64_t iv,
                       double dv)
{
    struct series *s = series_find(f, key);
    if (!s) {
        if (f->ns == f->cap) {
            f->cap = f->cap ? f->cap * 2 : 16;
            f->s = jd_xrealloc(f->s, f->cap * sizeof(*f->s));
        }
        f->s[f->ns++] = (struct series){key, tok, 1, is_int, iv, dv};
        f->hint = f->ns;
        return;
    }
    s->ncontrib++;
    if (s->all_int && is_int)
        s->i = combine_int(f->op, s->i, iv);
    else
        s->all_int = 0;
    s->d = combine_double(f->op, s->d, dv);
}

/* ---- parsing ------------------------------------------------------------- */

/* Optional sign and digits, within int64. */
static int parse_int(struct span t, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (i < t.n && (t.p[i] == '+' || t.p[i] == '-'))
        neg = t.p[i++] == '-';
    if (i == t.n)
        return 0;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, v = 0;
    for (; i < t.n; i++) {
        if (t.p[i] < '0' || t.p[i] > '9')
            return 0;
        unsigned d = (unsigned)(t.p[i] - '0');
        if (v > (limit - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    /* -(INT64_MAX + 1) without signed overflow */
    *out = neg ? (v == limit ? INT64_MIN : -(int64_t)v) : (int64_t)v;
    return 1;
}

/* A value strtod reads whole (which includes the "+Inf" and "NaN" spellings). */
static int parse_double(struct span t, double *out)
{
    char small[64];
    if (t.n == 0)
        return 0;
    /* strtod needs a NUL the text may not have */
    char *buf = t.n < sizeof(small) ? small : jd_xmalloc(t.n + 1), *end;
    memcpy(buf, t.p, t.n);
    buf[t.n] = '\0';
    *out = strtod(buf, &end);
    int whole = end == buf + t.n;
    if (buf != small)
        free(buf);
    return whole;
}

static void comment_line(struct merge *m, const char *line, const char *p, const char *end,
                         size_t *cur)
{
    struct span kw = next_token(&p, end);
    int help = span_is(kw, "HELP"), type = span_is(kw, "TYPE");
    if (!help && !type)
        return;
    struct span name = next_token(&p, end);
    if (name.n == 0)
        return;
    *cur = family_named(m, name);
    struct family *f = &m->f[*cur];
    struct span whole = {line, (size_t)(end - line)};
    if (help && f->help.n == 0)
        f->help = whole;
    if (type && f->type.n == 0) {
        struct span t = next_token(&p, end);
        f->type = whole;
        f->grouped = span_is(t, "histogram") || span_is(t, "summary");
    }
}

static void sample_line(struct merge *m, const char *p, const char *end, size_t cur)
{
    const char *start = p;
    while (p < end && *p != '{' && !is_blank(*p))
        p++;
    struct span metric = {start, (size_t)(p - start)};
    if (metric.n == 0)
        return;
    if (p < end && *p == '{') {
        int quoted = 0;
        for (p++; p < end; p++) {
            if (quoted) {
                if (*p == '\\' && p + 1 < end)
                    p++;
                else if (*p == '"')
                    quoted = 0;
            } else if (*p == '"') {
                quoted = 1;
            } else if (*p == '}') {
                break;
            }
        }
        if (p == end)
            return; /* unterminated label set */
        p++;
    }
    struct span key = {start, (size_t)(p - start)};
    struct span tok = next_token(&p, end); /* a timestamp after it is dropped */
    int64_t iv = 0;
    double dv;
    if (!parse_double(tok, &dv))
        return;
    int is_int = parse_int(tok, &iv);

    size_t fi = family_of_sample(m, metric, cur); /* may move m->f */
    struct family *f = &m->f[fi];
    if (f->op != JD_MERGE_DROP)
        series_add(f, key, tok, is_int, iv, dv);
}

static void merge_text(struct merge *m, const char *text, size_t len)
{
    size_t cur = NO_FAMILY; /* the family of the last HELP/TYPE line of this text */
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end, *q = p;
        while (q < eol && is_blank(*q))
            q++;
        if (q < eol && *q == '#')
            comment_line(m, p, q + 1, eol, &cur);
        else if (q < eol)
            sample_line(m, q, eol, cur);
        p = nl ? nl + 1 : end;
    }
}

/* ---- output ---------------------------------------------------------------- */

static void put_value(struct jd_buf *out, const struct series *s)
{
    if (s->ncontrib == 1)
        jd_buf_append(out, s->first.p, s->first.n);
    else if (s->all_int)
        jd_buf_printf(out, "%" PRId64, s->i);
    else if (isnan(s->d))
        jd_buf_puts(out, "NaN");
    else if (isinf(s->d))
        jd_buf_puts(out, s->d > 0 ? "+Inf" : "-Inf");
    else
        jd_buf_printf(out, "%.15g", s->d);
}

void jd_metrics_merge_text(const char *const *texts, const size_t *lens, size_t n,
                           const struct jd_merge_rule *rules, size_t nrules, struct jd_buf *out)
{
    struct merge m = {.rules = rules, .nrules = rules ? nrules : 0};
    for (size_t i = 0; i < n; i++)
        if (texts[i] && lens[i])
            merge_text(&m, texts[i], lens[i]);

    for (size_t i = 0; i < m.nf; i++) {
        struct family *f = &m.f[i];
        if (f->op != JD_MERGE_DROP) {
            if (f->help.n) {
                jd_buf_append(out, f->help.p, f->help.n);
                jd_buf_append(out, "\n", 1);
            }
            if (f->type.n) {
                jd_buf_append(out, f->type.p, f->type.n);
                jd_buf_append(out, "\n", 1);
            }
            for (size_t k = 0; k < f->ns; k++) {
                jd_buf_append(out, f->s[k].key.p, f->s[k].key.n);
                jd_buf_append(out, " ", 1);
                put_value(out, &f->s[k]);
                jd_buf_append(out, "\n", 1);
            }
        }
        free(f->s);
    }
    free(m.f);
}
