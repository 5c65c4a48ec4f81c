/*
 * rules_lex — the rule language's tokens. Positions are byte offsets into
 * the expression so that errors can point at FILE:LINE:COL. Strings take
 * '...' or "..." without escapes (use the other quote); a number directly
 * followed by ms, s, m, h, d or w is a duration in milliseconds.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

void jd_lex_init(struct jd_lexer *lx, const char *s, size_t n)
{
    lx->s = s;
    lx->n = n;
    lx->pos = 0;
}

const char *jd_tok_desc(enum jd_tok k)
{
    switch (k) {
    case TK_EOF:
        return "end of expression";
    case TK_NUM:
        return "number";
    case TK_DUR:
        return "duration";
    case TK_STR:
        return "string";
    case TK_IDENT:
        return "name";
    case TK_LP:
        return "'('";
    case TK_RP:
        return "')'";
    case TK_LB:
        return "'['";
    case TK_RB:
        return "']'";
    case TK_COMMA:
        return "','";
    case TK_DOT:
        return "'.'";
    case TK_PLUS:
        return "'+'";
    case TK_MINUS:
        return "'-'";
    case TK_STAR:
        return "'*'";
    case TK_SLASH:
        return "'/'";
    case TK_EQ:
        return "'=='";
    case TK_NE:
        return "'!='";
    case TK_LT:
        return "'<'";
    case TK_LE:
        return "'<='";
    case TK_GT:
        return "'>'";
    case TK_GE:
        return "'>='";
    case TK_AND:
        return "'&&'";
    case TK_OR:
        return "'||'";
    case TK_NOT:
        return "'!'";
    case TK_ERR:
        return "invalid token";
    }
    return "?";
}

static int is_ident_start(int c)
{
    return isalpha(c) || c == '_';
}

static int is_ident_char(int c)
{
    return isalnum(c) || c == '_';
}

static void lex_number(struct jd_lexer *lx, struct jd_token *t, char *msg, size_t msgsize)
{
    const char *s = lx->s;
    size_t p = lx->pos;
    while (p < lx->n && isdigit((unsigned char)s[p]))
        p++;
    int frac = 0;
    if (p + 1 < lx->n && s[p] == '.' && isdigit((unsigned char)s[p + 1])) {
        frac = 1;
        p++;
        while (p < lx->n && isdigit((unsigned char)s[p]))
            p++;
    }
    char num[64];
    size_t nl = p - lx->pos;
    if (nl >= sizeof num) {
        t->k = TK_ERR;
        snprintf(msg, msgsize, "number too long");
        return;
    }
    memcpy(num, s + lx->pos, nl);
    num[nl] = '\0';
    double v = strtod(num, NULL);
    /* unit suffix: a duration */
    size_t u = p;
    while (u < lx->n && is_ident_char((unsigned char)s[u]))
        u++;
    if (u > p) {
        size_t ul = u - p;
        double mult = 0;
        if (ul == 2 && memcmp(s + p, "ms", 2) == 0)
            mult = 1;
        else if (ul == 1 && s[p] == 's')
            mult = 1000;
        else if (ul == 1 && s[p] == 'm')
            mult = 60000;
        else if (ul == 1 && s[p] == 'h')
            mult = 3600000;
        else if (ul == 1 && s[p] == 'd')
            mult = (double)JD_DAY_MS;
        else if (ul == 1 && s[p] == 'w')
            mult = 7.0 * (double)JD_DAY_MS;
        if (mult == 0 || frac) {
            t->k = TK_ERR;
            t->off = frac ? lx->pos : p;
            t->len = frac ? u - lx->pos : ul;
            if (frac)
                snprintf(msg, msgsize, "a duration must be a whole number (%.*s%.*s)", (int)nl, num,
                         (int)ul, s + p);
            else
                snprintf(msg, msgsize, "invalid duration unit '%.*s' (use ms, s, m, h, d or w)",
                         (int)ul, s + p);
            lx->pos = u;
            return;
        }
        t->k = TK_DUR;
        t->num = v * mult;
        t->len = u - lx->pos;
        lx->pos = u;
        return;
    }
    t->k = TK_NUM;
    t->num = v;
    t->len = p - lx->pos;
    lx->pos = p;
}

void jd_lex_next(struct jd_lexer *lx, struct jd_token *t, char *msg, size_t msgsize)
{
    const char *s = lx->s;
    while (lx->pos < lx->n && isspace((unsigned char)s[lx->pos]))
        lx->pos++;
    t->off = lx->pos;
    t->len = 0;
    t->num = 0;
    if (lx->pos >= lx->n) {
        t->k = TK_EOF;
        return;
    }
    unsigned char c = (unsigned char)s[lx->pos];
    unsigned char c2 = lx->pos + 1 < lx->n ? (unsigned char)s[lx->pos + 1] : 0;
    if (isdigit(c)) {
        lex_number(lx, t, msg, msgsize);
        return;
    }
    if (is_ident_start(c)) {
        size_t p = lx->pos;
        while (p < lx->n && is_ident_char((unsigned char)s[p]))
            p++;
        t->k = TK_IDENT;
        t->len = p - lx->pos;
        lx->pos = p;
        return;
    }
    if (c == '\'' || c == '"') {
        size_t p = lx->pos + 1;
        while (p < lx->n && (unsigned char)s[p] != c)
            p++;
        if (p >= lx->n) {
            t->k = TK_ERR;
            snprintf(msg, msgsize, "unterminated string (missing closing %c)", c);
            lx->pos = lx->n;
            return;
        }
        t->k = TK_STR;
        t->len = p + 1 - lx->pos;
        lx->pos = p + 1;
        return;
    }
    struct {
        char a, b;
        enum jd_tok k;
    } two[] = {{'=', '=', TK_EQ}, {'!', '=', TK_NE},  {'<', '=', TK_LE},
               {'>', '=', TK_GE}, {'&', '&', TK_AND}, {'|', '|', TK_OR}};
    for (size_t i = 0; i < sizeof two / sizeof two[0]; i++) {
        if (c == (unsigned char)two[i].a && c2 == (unsigned char)two[i].b) {
            t->k = two[i].k;
            t->len = 2;
            lx->pos += 2;
            return;
        }
    }
    enum jd_tok k = TK_ERR;
    switch (c) {
    case '(':
        k = TK_LP;
        break;
    case ')':
        k = TK_RP;
        break;
    case '[':
        k = TK_LB;
        break;
    case ']':
        k = TK_RB;
        break;
    case ',':
        k = TK_COMMA;
        break;
    case '.':
        k = TK_DOT;
        break;
    case '+':
        k = TK_PLUS;
        break;
    case '-':
        k = TK_MINUS;
        break;
    case '*':
        k = TK_STAR;
        break;
    case '/':
        k = TK_SLASH;
        break;
    case '<':
        k = TK_LT;
        break;
    case '>':
        k = TK_GT;
        break;
    case '!':
        k = TK_NOT;
        break;
    default:
        break;
    }
    t->len = 1;
    lx->pos++;
    t->k = k;
    if (k != TK_ERR)
        return;
    if (c == '=')
        snprintf(msg, msgsize, "unexpected '=' (use '==' to compare)");
    else if (c == '&')
        snprintf(msg, msgsize, "unexpected '&' (use '&&')");
    else if (c == '|')
        snprintf(msg, msgsize, "unexpected '|' (use '||')");
    else if (isprint(c))
        snprintf(msg, msgsize, "unexpected character '%c'", c);
    else
        snprintf(msg, msgsize, "unexpected byte 0x%02x", c);
}
