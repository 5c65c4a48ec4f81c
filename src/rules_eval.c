/*
 * rules_eval — evaluates a resolved rule tree against one customer (and
 * maybe the current event) at an instant. Values live on the C stack; strings
 * point into the event, the customer or the rule set, so evaluation never
 * allocates. Also the human side: reasons ("COND (sub = value, ...)") and
 * the per-sub-expression explain listing.
 *
 * Null (an absent field, an aggregate with no data) propagates through
 * arithmetic, makes every comparison false, and is false for && || !.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rules_int.h"

static struct jd_val vnull(void)
{
    struct jd_val v = {.t = V_NULL, .n = 0};
    return v;
}

static struct jd_val vbool(int b)
{
    struct jd_val v = {.t = V_BOOL, .n = b ? 1 : 0};
    return v;
}

static struct jd_val vnum(double n)
{
    struct jd_val v = {.t = V_NUM, .n = n};
    return v;
}

static struct jd_val vstr(const char *s)
{
    struct jd_val v = {.t = V_STR, .s = s};
    return s ? v : vnull();
}

static int compare(int op, struct jd_val l, struct jd_val r)
{
    if (l.t == V_NULL || r.t == V_NULL)
        return 0;
    double d;
    if (l.t == V_STR && r.t == V_STR)
        d = op == TK_EQ || op == TK_NE ? !jd_name_eq(l.s, r.s) : strcmp(l.s, r.s);
    else if (l.t == r.t)
        d = l.n < r.n ? -1 : l.n > r.n ? 1 : 0;
    else
        return 0;
    switch (op) {
    case TK_EQ:
        return d == 0;
    case TK_NE:
        return d != 0;
    case TK_LT:
        return d < 0;
    case TK_LE:
        return d <= 0;
    case TK_GT:
        return d > 0;
    case TK_GE:
        return d >= 0;
    default:
        return 0;
    }
}

static struct jd_val arith(int op, struct jd_val l, struct jd_val r)
{
    if (l.t != V_NUM || r.t != V_NUM)
        return vnull();
    switch (op) {
    case TK_PLUS:
        return vnum(l.n + r.n);
    case TK_MINUS:
        return vnum(l.n - r.n);
    case TK_STAR:
        return vnum(l.n * r.n);
    case TK_SLASH:
        return r.n == 0 ? vnull() : vnum(l.n / r.n);
    default:
        return vnull();
    }
}

/* A kid's value; literals (half the leaves) without a call. */
static inline struct jd_val kid(const struct jd_ectx *x, const struct jd_node *k)
{
    return k->kind == NK_LIT ? k->lit : jd_eval(x, k);
}

struct jd_val jd_eval(const struct jd_ectx *x, const struct jd_node *n)
{
    const struct jd_customer *c = x->c;
    const struct jd_event *ev = x->ev;
    switch (n->kind) {
    case NK_LIT:
        return n->lit;
    case NK_UNARY: {
        struct jd_val v = kid(x, n->kids[0]);
        if (n->op == TK_NOT)
            return vbool(!jd_truthy(v));
        return v.t == V_NUM ? vnum(-v.n) : vnull();
    }
    case NK_BIN:
        switch (n->op) {
        case TK_AND:
            if (!jd_truthy(kid(x, n->kids[0])))
                return vbool(0);
            return vbool(jd_truthy(kid(x, n->kids[1])));
        case TK_OR:
            if (jd_truthy(kid(x, n->kids[0])))
                return vbool(1);
            return vbool(jd_truthy(kid(x, n->kids[1])));
        case TK_PLUS:
        case TK_MINUS:
        case TK_STAR:
        case TK_SLASH:
            return arith(n->op, kid(x, n->kids[0]), kid(x, n->kids[1]));
        default:
            return vbool(compare(n->op, kid(x, n->kids[0]), kid(x, n->kids[1])));
        }
    case NK_IN: {
        struct jd_val l = kid(x, n->kids[0]);
        const struct jd_node *list = n->kids[1];
        for (uint32_t i = 0; i < list->nkids; i++)
            if (compare(TK_EQ, l, list->kids[i]->lit))
                return vbool(1);
        return vbool(0);
    }
    case NK_EV_TYPE:
        return ev ? vstr(ev->type) : vnull();
    case NK_EV_CHANNEL:
        return ev ? vstr(ev->channel) : vnull();
    case NK_EV_AMOUNT:
        return ev && ev->has_amount ? vnum(ev->amount) : vnull();
    case NK_EV_SCORE:
        return ev && ev->has_score ? vnum(ev->score) : vnull();
    case NK_EV_ATTR:
        return ev ? vstr(jd_event_attr_get(ev, n->str)) : vnull();
    case NK_COUNT: {
        /* the core profile's lifetime count: jd_customer_apply_core has already
         * counted the current event */
        struct jd_memo *m = x->memo;
        if (!m || n->idx < 0 || n->idx >= JD_MEMO_SLOTS)
            return vnum((double)jd_customer_count(c, n->str));
        uint64_t bit = 1ULL << n->idx;
        if (!(m->have_count & bit)) {
            m->count[n->idx] = (double)jd_customer_count(c, n->str);
            m->have_count |= bit;
        }
        return vnum(m->count[n->idx]);
    }
    case NK_COUNT_ANY: {
        int64_t s = 0;
        for (size_t i = 0; i < c->ncounts; i++)
            s += jd_customer_count_n(c, i);
        return vnum((double)s);
    }
    case NK_FIRST_SEEN:
        return c->first_seen ? vnum((double)c->first_seen) : vnull();
    case NK_LAST_CHANNEL:
        return vstr(c->last_channel);
    case NK_STAGE:
        return x->stage >= 0 && (size_t)x->stage < x->rs->nstages
                   ? vstr(x->rs->stages[x->stage].name)
                   : vnull();
    case NK_SEG:
        return vbool((x->segs >> n->idx) & 1);
    case NK_AGG:
        if (n->idx < 0 || (size_t)n->idx >= c->naggs || !c->aggs)
            return vnull();
        if (x->memo && n->idx < JD_MEMO_SLOTS) {
            struct jd_memo *m = x->memo;
            uint64_t bit = 1ULL << n->idx;
            if (!(m->have_agg & bit)) {
                m->agg[n->idx] = jd_agg_value(&x->rs->aggs[n->idx], &c->aggs[n->idx], x->now);
                m->have_agg |= bit;
            }
            return m->agg[n->idx];
        }
        return jd_agg_value(&x->rs->aggs[n->idx], &c->aggs[n->idx], x->now);
    case NK_TODAYS: {
        struct jd_val v = kid(x, n->kids[0]);
        return v.t == V_NUM ? vnum(v.n / (double)JD_DAY_MS) : vnull();
    }
    default:
        return vnull();
    }
}

/* Copies the n bytes of s into out, cut to fit with its NUL (as snprintf). */
static void put_cut(char *out, size_t size, const char *s, size_t n)
{
    if (size == 0)
        return;
    if (n >= size)
        n = size - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* A whole number below 1e15 in magnitude as "%.0f" prints it (also "-0"),
 * without printf: this runs for every value of a fired trigger's reason and
 * payload. */
static void put_whole(char *out, size_t size, double n)
{
    char tmp[24], *p = tmp + sizeof tmp;
    int neg = signbit(n) != 0;
    uint64_t u = (uint64_t)(neg ? -n : n);
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg)
        *--p = '-';
    put_cut(out, size, p, (size_t)(tmp + sizeof tmp - p));
}

void jd_format_val(struct jd_val v, int precise, char *out, size_t size)
{
    switch (v.t) {
    case V_NULL:
        put_cut(out, size, "null", precise ? 0 : 4);
        return;
    case V_BOOL:
        if (v.n != 0)
            put_cut(out, size, "true", 4);
        else
            put_cut(out, size, "false", 5);
        return;
    case V_STR:
        if (precise) {
            put_cut(out, size, v.s, strlen(v.s));
        } else {
            size_t n = strlen(v.s);
            if (size < 2) {
                put_cut(out, size, "'", 1);
                return;
            }
            out[0] = '\'';
            put_cut(out + 1, size - 1, v.s, n);
            if (n + 2 < size) {
                out[n + 1] = '\'';
                out[n + 2] = '\0';
            }
        }
        return;
    default:
        break;
    }
    if (fabs(v.n) < 1e15 && v.n == floor(v.n)) {
        put_whole(out, size, v.n);
        return;
    }
    if (precise) {
        snprintf(out, size, "%.15g", v.n);
        return;
    }
    snprintf(out, size, "%.2f", v.n);
    size_t l = strlen(out);
    while (l > 0 && out[l - 1] == '0')
        out[--l] = '\0';
    if (l > 0 && out[l - 1] == '.')
        out[--l] = '\0';
}

static int is_leaf(const struct jd_node *n)
{
    switch (n->kind) {
    case NK_EV_TYPE:
    case NK_EV_CHANNEL:
    case NK_EV_AMOUNT:
    case NK_EV_SCORE:
    case NK_EV_ATTR:
    case NK_COUNT:
    case NK_COUNT_ANY:
    case NK_FIRST_SEEN:
    case NK_LAST_CHANNEL:
    case NK_STAGE:
    case NK_SEG:
    case NK_AGG:
        return 1;
    default:
        return 0;
    }
}

#define MAX_LEAVES 16

static void collect(const struct jd_node *n, const struct jd_node **leaves, size_t *nl)
{
    if (is_leaf(n)) {
        for (size_t i = 0; i < *nl; i++)
            if (leaves[i]->len == n->len &&
                memcmp(leaves[i]->src + leaves[i]->off, n->src + n->off, n->len) == 0)
                return;
        if (*nl < MAX_LEAVES)
            leaves[(*nl)++] = n;
        return;
    }
    for (uint32_t i = 0; i < n->nkids; i++)
        collect(n->kids[i], leaves, nl);
}

struct sbuf {
    char *p;
    size_t size, len;
};

static void sput(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + 1 >= b->size)
        return;
    size_t room = b->size - 1 - b->len;
    if (n > room)
        n = room;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void jd_reason(const struct jd_ectx *x, const struct jd_crule *r, const char *prefix, char *out,
               size_t size)
{
    struct sbuf b = {out, size, 0};
    out[0] = '\0';
    if (prefix)
        sput(&b, prefix, strlen(prefix));
    if (!r || !r->root)
        return;
    sput(&b, r->text, strlen(r->text));
    const struct jd_node *leaves[MAX_LEAVES];
    size_t nl = 0;
    collect(r->root, leaves, &nl);
    for (size_t i = 0; i < nl; i++) {
        char v[JD_PAYLOAD_VALUE_MAX];
        jd_format_val(jd_eval(x, leaves[i]), 0, v, sizeof v);
        sput(&b, i == 0 ? " (" : ", ", 2);
        sput(&b, leaves[i]->src + leaves[i]->off, leaves[i]->len);
        sput(&b, " = ", 3);
        sput(&b, v, strlen(v));
    }
    if (nl)
        sput(&b, ")", 1);
}

void jd_explain_tree(const struct jd_ectx *x, const struct jd_node *n, int depth,
                     struct jd_buf *out)
{
    if (n->kind == NK_LIT || n->kind == NK_LIST || n->kind == NK_TODAYS || n->kind == NK_FIELD)
        return;
    char v[JD_PAYLOAD_VALUE_MAX];
    jd_format_val(jd_eval(x, n), 0, v, sizeof v);
    jd_buf_printf(out, "%*s%.*s = %s\n", 2 * depth, "", (int)n->len, n->src + n->off, v);
    if (n->kind == NK_BIN || n->kind == NK_UNARY || n->kind == NK_IN)
        for (uint32_t i = 0; i < n->nkids; i++)
            jd_explain_tree(x, n->kids[i], depth + 1, out);
}
