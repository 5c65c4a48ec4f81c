/*
 * rules_parse — recursive-descent parser from tokens to an untyped syntax
 * tree (names are resolved later by rules_check.c). Also the arena that owns
 * every node and string of a rule set.
 *
 * Precedence, loosest first: ||, &&, comparisons (== != < <= > >= in),
 * + -, * /, unary ! -, then calls, .member and [index].
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

#define ARENA_BLOCK 8192
#define MAX_DEPTH 64

struct jd_arena_block {
    struct jd_arena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *jd_arena_alloc(struct jd_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct jd_arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        b = jd_xmalloc(sizeof *b + cap);
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *jd_arena_strndup(struct jd_arena *a, const char *s, size_t n)
{
    char *d = jd_arena_alloc(a, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *jd_arena_strdup(struct jd_arena *a, const char *s)
{
    return s ? jd_arena_strndup(a, s, strlen(s)) : NULL;
}

char *jd_arena_name(struct jd_arena *a, const char *s)
{
    const char *k = jd_state_known(s);
    return k ? (char *)k : jd_arena_strdup(a, s);
}

void jd_arena_free(struct jd_arena *a)
{
    struct jd_arena_block *b = a->head;
    while (b) {
        struct jd_arena_block *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
}

struct parser {
    struct jd_arena *a;
    struct jd_lexer lx;
    struct jd_token tok;
    const char *src;
    char *msg;
    size_t msgsize;
    size_t erroff;
    int failed;
    int depth;
};

static void fail(struct parser *p, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct parser *p, size_t off, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = 1;
    p->erroff = off;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->msg, p->msgsize, fmt, ap);
    va_end(ap);
}

static void advance(struct parser *p)
{
    if (p->failed) {
        p->tok.k = TK_EOF;
        return;
    }
    jd_lex_next(&p->lx, &p->tok, p->msg, p->msgsize);
    if (p->tok.k == TK_ERR) {
        p->failed = 1;
        p->erroff = p->tok.off;
        p->tok.k = TK_EOF;
    }
}

static void found_desc(struct parser *p, char *buf, size_t size)
{
    if (p->tok.k == TK_EOF)
        snprintf(buf, size, "end of expression");
    else if (p->tok.k == TK_IDENT || p->tok.k == TK_NUM || p->tok.k == TK_DUR || p->tok.k == TK_STR)
        snprintf(buf, size, "%s %.*s", jd_tok_desc(p->tok.k),
                 (int)(p->tok.len > 40 ? 40 : p->tok.len), p->src + p->tok.off);
    else
        snprintf(buf, size, "%s", jd_tok_desc(p->tok.k));
}

static int expect(struct parser *p, enum jd_tok k, const char *what)
{
    if (p->failed)
        return -1;
    if (p->tok.k != k) {
        char f[64];
        found_desc(p, f, sizeof f);
        fail(p, p->tok.off, "expected %s, found %s", what, f);
        return -1;
    }
    advance(p);
    return 0;
}

static struct jd_node *mk(struct parser *p, int kind, size_t off, size_t end)
{
    struct jd_node *n = jd_arena_alloc(p->a, sizeof *n);
    n->kind = (uint8_t)kind;
    n->off = (uint32_t)off;
    n->len = (uint32_t)(end > off ? end - off : 0);
    n->src = p->src;
    n->idx = -1;
    return n;
}

static size_t tok_end(const struct parser *p)
{
    /* the end of the previous token: the current token's start minus spacing */
    size_t e = p->tok.off;
    while (e > 0 && (p->src[e - 1] == ' ' || p->src[e - 1] == '\t' || p->src[e - 1] == '\n' ||
                     p->src[e - 1] == '\r'))
        e--;
    return e;
}

static void set_kids(struct parser *p, struct jd_node *n, struct jd_node **kids, size_t nk)
{
    n->kids = jd_arena_alloc(p->a, (nk ? nk : 1) * sizeof *kids);
    memcpy(n->kids, kids, nk * sizeof *kids);
    n->nkids = (uint32_t)nk;
}

static struct jd_node *parse_or(struct parser *p);

/* arguments or list items up to `close` */
static struct jd_node *parse_items(struct parser *p, struct jd_node *n, enum jd_tok close,
                                   const char *closedesc)
{
    struct jd_node *items[32];
    size_t ni = 0;
    if (p->tok.k != close) {
        for (;;) {
            struct jd_node *e = parse_or(p);
            if (!e)
                return NULL;
            if (ni == sizeof items / sizeof items[0]) {
                fail(p, e->off, "too many items (at most 32)");
                return NULL;
            }
            items[ni++] = e;
            if (p->tok.k == TK_COMMA) {
                advance(p);
                continue;
            }
            break;
        }
    }
    char what[48];
    snprintf(what, sizeof what, "',' or %s", closedesc);
    if (expect(p, close, what) < 0)
        return NULL;
    set_kids(p, n, items, ni);
    n->len = (uint32_t)(tok_end(p) - n->off);
    return n;
}

static struct jd_node *parse_primary(struct parser *p)
{
    if (p->failed)
        return NULL;
    struct jd_token t = p->tok;
    struct jd_node *n;
    switch (t.k) {
    case TK_NUM:
    case TK_DUR:
        n = mk(p, NK_LIT, t.off, t.off + t.len);
        n->lit.t = V_NUM;
        n->lit.n = t.num;
        n->ty = t.k == TK_NUM ? TY_NUM : TY_DUR;
        advance(p);
        return n;
    case TK_STR:
        n = mk(p, NK_LIT, t.off, t.off + t.len);
        n->str = jd_arena_strndup(p->a, p->src + t.off + 1, t.len - 2);
        n->str = jd_arena_name(p->a, n->str); /* (a known name: its static copy) */
        n->lit.t = V_STR;
        n->lit.s = n->str;
        n->ty = TY_STR;
        advance(p);
        return n;
    case TK_IDENT:
        if ((t.len == 4 && memcmp(p->src + t.off, "true", 4) == 0) ||
            (t.len == 5 && memcmp(p->src + t.off, "false", 5) == 0)) {
            n = mk(p, NK_LIT, t.off, t.off + t.len);
            n->lit.t = V_BOOL;
            n->lit.n = t.len == 4;
            n->ty = TY_BOOL;
            advance(p);
            return n;
        }
        n = mk(p, NK_IDENT, t.off, t.off + t.len);
        n->str = jd_arena_strndup(p->a, p->src + t.off, t.len);
        advance(p);
        if (p->tok.k == TK_LP) {
            n->kind = NK_CALL;
            advance(p);
            return parse_items(p, n, TK_RP, "')'");
        }
        return n;
    case TK_LP: {
        advance(p);
        struct jd_node *e = parse_or(p);
        if (!e || expect(p, TK_RP, "')'") < 0)
            return NULL;
        /* the parenthesised span, so reasons quote what was written */
        e->off = (uint32_t)t.off;
        e->len = (uint32_t)(tok_end(p) - t.off);
        return e;
    }
    case TK_LB:
        n = mk(p, NK_LIST, t.off, t.off + 1);
        advance(p);
        return parse_items(p, n, TK_RB, "']'");
    default: {
        char f[64];
        found_desc(p, f, sizeof f);
        fail(p, t.off, "expected a value, found %s", f);
        return NULL;
    }
    }
}

static struct jd_node *parse_postfix(struct parser *p)
{
    struct jd_node *n = parse_primary(p);
    while (n && !p->failed) {
        if (p->tok.k == TK_DOT) {
            advance(p);
            if (p->tok.k != TK_IDENT) {
                char f[64];
                found_desc(p, f, sizeof f);
                fail(p, p->tok.off, "expected a field name after '.', found %s", f);
                return NULL;
            }
            struct jd_node *m = mk(p, NK_MEMBER, n->off, p->tok.off + p->tok.len);
            m->str = jd_arena_strndup(p->a, p->src + p->tok.off, p->tok.len);
            set_kids(p, m, &n, 1);
            advance(p);
            n = m;
        } else if (p->tok.k == TK_LB) {
            advance(p);
            struct jd_node *k = parse_or(p);
            if (!k || expect(p, TK_RB, "']'") < 0)
                return NULL;
            struct jd_node *m = mk(p, NK_INDEX, n->off, tok_end(p));
            struct jd_node *kids[2] = {n, k};
            set_kids(p, m, kids, 2);
            n = m;
        } else {
            break;
        }
    }
    return n;
}

static struct jd_node *parse_unary(struct parser *p)
{
    if (p->tok.k == TK_NOT || p->tok.k == TK_MINUS) {
        struct jd_token t = p->tok;
        if (++p->depth > MAX_DEPTH) {
            fail(p, t.off, "expression nested too deeply");
            return NULL;
        }
        advance(p);
        struct jd_node *e = parse_unary(p);
        p->depth--;
        if (!e)
            return NULL;
        struct jd_node *n = mk(p, NK_UNARY, t.off, e->off + e->len);
        n->op = (uint8_t)t.k;
        set_kids(p, n, &e, 1);
        return n;
    }
    return parse_postfix(p);
}

static struct jd_node *binary(struct parser *p, struct jd_node *l, enum jd_tok op,
                              struct jd_node *r)
{
    struct jd_node *n = mk(p, NK_BIN, l->off, r->off + r->len);
    n->op = (uint8_t)op;
    struct jd_node *kids[2] = {l, r};
    set_kids(p, n, kids, 2);
    return n;
}

static struct jd_node *parse_mul(struct parser *p)
{
    struct jd_node *l = parse_unary(p);
    while (l && (p->tok.k == TK_STAR || p->tok.k == TK_SLASH)) {
        enum jd_tok op = p->tok.k;
        advance(p);
        struct jd_node *r = parse_unary(p);
        if (!r)
            return NULL;
        l = binary(p, l, op, r);
    }
    return l;
}

static struct jd_node *parse_add(struct parser *p)
{
    struct jd_node *l = parse_mul(p);
    while (l && (p->tok.k == TK_PLUS || p->tok.k == TK_MINUS)) {
        enum jd_tok op = p->tok.k;
        advance(p);
        struct jd_node *r = parse_mul(p);
        if (!r)
            return NULL;
        l = binary(p, l, op, r);
    }
    return l;
}

static int is_in(const struct parser *p)
{
    return p->tok.k == TK_IDENT && p->tok.len == 2 && memcmp(p->src + p->tok.off, "in", 2) == 0;
}

static struct jd_node *parse_cmp(struct parser *p)
{
    struct jd_node *l = parse_add(p);
    while (l) {
        enum jd_tok op = p->tok.k;
        if (is_in(p)) {
            advance(p);
            struct jd_node *r = parse_add(p);
            if (!r)
                return NULL;
            l = binary(p, l, TK_IDENT, r);
            l->kind = NK_IN;
            continue;
        }
        if (op != TK_EQ && op != TK_NE && op != TK_LT && op != TK_LE && op != TK_GT && op != TK_GE)
            break;
        advance(p);
        struct jd_node *r = parse_add(p);
        if (!r)
            return NULL;
        l = binary(p, l, op, r);
    }
    return l;
}

static struct jd_node *parse_and(struct parser *p)
{
    struct jd_node *l = parse_cmp(p);
    while (l && p->tok.k == TK_AND) {
        advance(p);
        struct jd_node *r = parse_cmp(p);
        if (!r)
            return NULL;
        l = binary(p, l, TK_AND, r);
    }
    return l;
}

static struct jd_node *parse_or(struct parser *p)
{
    if (++p->depth > MAX_DEPTH) {
        fail(p, p->tok.off, "expression nested too deeply");
        return NULL;
    }
    struct jd_node *l = parse_and(p);
    while (l && p->tok.k == TK_OR) {
        advance(p);
        struct jd_node *r = parse_and(p);
        if (!r)
            return NULL;
        l = binary(p, l, TK_OR, r);
    }
    p->depth--;
    return l;
}

struct jd_node *jd_parse(struct jd_arena *a, const char *expr, size_t n, char *msg, size_t msgsize,
                         size_t *erroff)
{
    struct parser p;
    memset(&p, 0, sizeof p);
    p.a = a;
    p.src = expr;
    p.msg = msg;
    p.msgsize = msgsize;
    jd_lex_init(&p.lx, expr, n);
    advance(&p);
    if (p.failed) {
        *erroff = p.erroff;
        return NULL;
    }
    if (p.tok.k == TK_EOF) {
        snprintf(msg, msgsize, "empty expression");
        *erroff = 0;
        return NULL;
    }
    struct jd_node *root = parse_or(&p);
    if (root && !p.failed && p.tok.k != TK_EOF) {
        char f[64];
        found_desc(&p, f, sizeof f);
        fail(&p, p.tok.off, "unexpected %s after the expression", f);
    }
    if (p.failed) {
        *erroff = p.erroff;
        return NULL;
    }
    return root;
}
