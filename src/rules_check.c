/*
 * rules_check — turns a parsed rule into a typed, resolved one: names of
 * functions, fields, segments and stages are looked up (with a "did you
 * mean" by edit distance), types are checked, the aggregates a rule needs
 * are registered once per rule set (deduplicated by canonical key), and
 * what each rule reads is recorded for incremental evaluation. Also the
 * cycle check between segments (in_segment) and stages (stage).
 *
 * Errors never stop the check: every rule is checked and every error
 * reported, with a node of type TY_ERR absorbing follow-on errors.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

static const char *const functions[] = {
    "count",          "count_any",       "sum",        "avg", "min", "max", "last", "days_since",
    "days_since_any", "not_followed_by", "in_segment", "attr"};
static const char *const idents[] = {"first_seen", "last_channel", "stage",
                                     "event",      "true",         "false"};
static const char *const event_fields[] = {"type", "channel", "amount", "score", "attributes"};
static const char *const arg_fields[] = {"amount", "score", "attributes"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

void jd_rule_error(struct jd_errors *errs, const struct jd_crule *r, size_t off, const char *fmt,
                   ...)
{
    int line = r->line, col = r->col;
    size_t tl = strlen(r->text);
    for (size_t i = 0; i < off && i < tl; i++) {
        if (r->text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jd_errors_add(errs, r->file, line, col, "%s", msg);
}

void jd_check_error(struct jd_check *ck, size_t off, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jd_rule_error(ck->errs, ck->rule, off, "%s", msg);
    ck->nerr++;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 64;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *jd_suggest(const char *name, const char *const *cands, size_t n)
{
    const char *best = NULL;
    size_t bestd = (size_t)-1;
    size_t len = strlen(name);
    size_t limit = len / 3 > 2 ? len / 3 : 2;
    for (size_t i = 0; i < n; i++) {
        if (!cands[i])
            continue;
        size_t d = edit_distance(name, cands[i]);
        if (d < bestd) {
            bestd = d;
            best = cands[i];
        }
    }
    if (best && bestd <= limit && bestd < len)
        return best;
    return NULL;
}

/* " — did you mean X?" or "" */
static const char *mean(char *buf, size_t size, const char *name, const char *const *cands,
                        size_t n)
{
    const char *s = jd_suggest(name, cands, n);
    if (!s)
        return "";
    snprintf(buf, size, " \xe2\x80\x94 did you mean %s?", s);
    return buf;
}

int jd_type_id(struct jd_ruleset *rs, const char *type, int create)
{
    for (size_t i = 0; i < rs->ntypes; i++)
        if (strcmp(rs->types[i], type) == 0)
            return (int)i;
    if (!create)
        return -1;
    if (rs->ntypes == rs->captypes) {
        rs->captypes = rs->captypes ? rs->captypes * 2 : 8;
        rs->types = jd_xrealloc(rs->types, rs->captypes * sizeof *rs->types);
    }
    rs->types[rs->ntypes] = jd_arena_name(&rs->arena, type);
    return (int)rs->ntypes++;
}

static void dep_type(struct jd_check *ck, const char *type)
{
    if (!type) {
        ck->deps->any = 1;
        return;
    }
    int id = jd_type_id(ck->rs, type, 1);
    if (id >= 64)
        ck->deps->any = 1;
    else
        ck->deps->types |= 1ULL << id;
}

static int32_t add_agg(struct jd_check *ck, struct jd_aggspec *sp)
{
    struct jd_ruleset *rs = ck->rs;
    char key[256];
    jd_agg_make_key(sp, key, sizeof key);
    if (!ck->enabled)
        return -1;
    for (size_t i = 0; i < rs->naggs; i++) {
        if (strcmp(rs->aggs[i].key, key) == 0) {
            rs->aggs[i].timed |= ck->timed;
            return (int32_t)i;
        }
    }
    if (rs->naggs == rs->capaggs) {
        rs->capaggs = rs->capaggs ? rs->capaggs * 2 : 8;
        rs->aggs = jd_xrealloc(rs->aggs, rs->capaggs * sizeof *rs->aggs);
    }
    struct jd_aggspec *d = &rs->aggs[rs->naggs];
    *d = *sp;
    d->type = jd_arena_name(&rs->arena, sp->type);
    d->type2 = jd_arena_name(&rs->arena, sp->type2);
    d->attr = jd_arena_strdup(&rs->arena, sp->attr);
    d->key = jd_arena_strdup(&rs->arena, key);
    d->timed = ck->timed;
    if (d->window > 0 && d->kind != AGG_NFB && d->kind != AGG_SINCE && d->kind != AGG_LAST &&
        d->kind != AGG_ATTR) {
        /* bucket width: 1/30 of the window, so a windowed value is exact to
         * within one bucket (docs/rules.md, "Windows") */
        d->width = (d->window + 15) / 30;
        if (d->width < 1)
            d->width = 1;
        d->nb = (uint32_t)((d->window + d->width - 1) / d->width);
    }
    return (int32_t)rs->naggs++;
}

static const char *ty_name(int t)
{
    switch (t) {
    case TY_BOOL:
        return "boolean";
    case TY_NUM:
    case TY_DAYS:
        return "number";
    case TY_DUR:
        return "duration";
    case TY_STR:
        return "string";
    case TY_LIST:
        return "list";
    case TY_FIELD:
        return "field";
    default:
        return "invalid";
    }
}

static int is_num(int t)
{
    return t == TY_NUM || t == TY_DAYS;
}

static int check(struct jd_check *ck, struct jd_node *n);

static int is_str_lit(const struct jd_node *n)
{
    return n->kind == NK_LIT && n->lit.t == V_STR;
}

static int is_dur_lit(const struct jd_node *n)
{
    return n->kind == NK_LIT && n->ty == TY_DUR;
}

/* A field argument: amount | score | attributes['k']. */
static int check_field(struct jd_check *ck, struct jd_node *n, const char *fn)
{
    char sug[96];
    if (n->kind == NK_IDENT && strcmp(n->str, "amount") == 0) {
        n->kind = NK_FIELD;
        n->field = F_AMOUNT;
        return 0;
    }
    if (n->kind == NK_IDENT && strcmp(n->str, "score") == 0) {
        n->kind = NK_FIELD;
        n->field = F_SCORE;
        return 0;
    }
    if (n->kind == NK_INDEX && n->kids[0]->kind == NK_IDENT &&
        strcmp(n->kids[0]->str, "attributes") == 0) {
        if (!is_str_lit(n->kids[1])) {
            jd_check_error(ck, n->kids[1]->off, "%s: the attribute name must be a string literal",
                           fn);
            return -1;
        }
        n->kind = NK_FIELD;
        n->field = F_ATTR;
        n->str = n->kids[1]->str;
        return 0;
    }
    if (n->kind == NK_IDENT) {
        jd_check_error(ck, n->off,
                       "%s: unknown field %s%s (fields are amount, score and attributes['k'])", fn,
                       n->str, mean(sug, sizeof sug, n->str, arg_fields, NELEM(arg_fields)));
        return -1;
    }
    jd_check_error(ck, n->off, "%s: expected a field (amount, score or attributes['k'])", fn);
    return -1;
}

static int check_type_arg(struct jd_check *ck, struct jd_node *n, const char *fn, int pos)
{
    if (is_str_lit(n))
        return 0;
    int t = check(ck, n);
    if (t == TY_ERR)
        return -1;
    jd_check_error(ck, n->off,
                   "%s: argument %d must be an event type in quotes (e.g. '%s'), got %s", fn, pos,
                   "purchase", ty_name(t));
    return -1;
}

static int check_window_arg(struct jd_check *ck, struct jd_node *n, const char *fn, int64_t *ms)
{
    if (is_dur_lit(n)) {
        if (n->lit.n > (double)JD_MAX_WINDOW_MS) {
            jd_check_error(ck, n->off, "%s: the window is too long (at most 3650d)", fn);
            return -1;
        }
        *ms = (int64_t)n->lit.n;
        if (*ms <= 0) {
            jd_check_error(ck, n->off, "%s: the window must be longer than 0", fn);
            return -1;
        }
        return 0;
    }
    int t = check(ck, n);
    if (t == TY_ERR)
        return -1;
    jd_check_error(ck, n->off, "%s: the window must be a duration literal such as 30d, got %s", fn,
                   ty_name(t));
    return -1;
}

static int arity(struct jd_check *ck, struct jd_node *n, uint32_t lo, uint32_t hi)
{
    if (n->nkids >= lo && n->nkids <= hi)
        return 0;
    if (lo == hi)
        jd_check_error(ck, n->off, "%s takes %u argument%s, got %u", n->str, lo, lo == 1 ? "" : "s",
                       n->nkids);
    else
        jd_check_error(ck, n->off, "%s takes %u to %u arguments, got %u", n->str, lo, hi, n->nkids);
    return -1;
}

static void make_agg(struct jd_check *ck, struct jd_node *n, struct jd_aggspec *sp)
{
    n->kind = NK_AGG;
    n->idx = add_agg(ck, sp);
    n->lit.n = sp->kind; /* kept for explain/next_change of disabled rules */
    if (sp->kind == AGG_NFB) {
        dep_type(ck, sp->type);
        dep_type(ck, sp->type2);
    } else if (sp->kind == AGG_ATTR) {
        ck->deps->any = 1;
    } else {
        dep_type(ck, sp->type);
    }
    if (sp->window > 0 || sp->kind == AGG_SINCE || sp->kind == AGG_NFB)
        ck->deps->time = 1;
}

static int check_call(struct jd_check *ck, struct jd_node *n)
{
    const char *fn = n->str;
    struct jd_aggspec sp;
    memset(&sp, 0, sizeof sp);
    char sug[96];

    if (strcmp(fn, "count") == 0 || strcmp(fn, "count_any") == 0) {
        int any = fn[5] == '_';
        if (arity(ck, n, any ? 0 : 1, any ? 1 : 2) < 0)
            return TY_ERR;
        if (!any && check_type_arg(ck, n->kids[0], fn, 1) < 0)
            return TY_ERR;
        uint32_t wi = any ? 0 : 1;
        if (n->nkids > wi) {
            if (check_window_arg(ck, n->kids[wi], fn, &sp.window) < 0)
                return TY_ERR;
            sp.kind = AGG_COUNT;
            sp.type = any ? NULL : n->kids[0]->str;
            make_agg(ck, n, &sp);
            return TY_NUM;
        }
        if (any) {
            n->kind = NK_COUNT_ANY;
            ck->deps->any = 1;
        } else {
            n->kind = NK_COUNT;
            n->str = n->kids[0]->str;
            dep_type(ck, n->str);
            n->idx = jd_type_id(ck->rs, n->str, 1); /* its slot in jd_memo */
        }
        return TY_NUM;
    }
    static const struct {
        const char *name;
        uint8_t kind;
    } stats[] = {
        {"sum", AGG_SUM}, {"avg", AGG_AVG}, {"min", AGG_MIN}, {"max", AGG_MAX}, {"last", AGG_LAST}};
    for (size_t i = 0; i < NELEM(stats); i++) {
        if (strcmp(fn, stats[i].name) != 0)
            continue;
        int last = stats[i].kind == AGG_LAST;
        if (arity(ck, n, 2, last ? 2 : 3) < 0)
            return TY_ERR;
        int bad = check_type_arg(ck, n->kids[0], fn, 1) < 0;
        bad |= check_field(ck, n->kids[1], fn) < 0;
        if (n->nkids == 3)
            bad |= check_window_arg(ck, n->kids[2], fn, &sp.window) < 0;
        if (bad)
            return TY_ERR;
        sp.kind = stats[i].kind;
        sp.type = n->kids[0]->str;
        sp.field = n->kids[1]->field;
        sp.attr = n->kids[1]->field == F_ATTR ? n->kids[1]->str : NULL;
        make_agg(ck, n, &sp);
        return TY_NUM;
    }
    if (strcmp(fn, "days_since") == 0 || strcmp(fn, "days_since_any") == 0) {
        int any = fn[10] == '_';
        if (arity(ck, n, any ? 0 : 1, any ? 0 : 1) < 0)
            return TY_ERR;
        if (!any && check_type_arg(ck, n->kids[0], fn, 1) < 0)
            return TY_ERR;
        sp.kind = AGG_SINCE;
        sp.type = any ? NULL : n->kids[0]->str;
        make_agg(ck, n, &sp);
        return TY_DAYS;
    }
    if (strcmp(fn, "not_followed_by") == 0) {
        if (arity(ck, n, 3, 3) < 0)
            return TY_ERR;
        int bad = check_type_arg(ck, n->kids[0], fn, 1) < 0;
        bad |= check_type_arg(ck, n->kids[1], fn, 2) < 0;
        bad |= check_window_arg(ck, n->kids[2], fn, &sp.window) < 0;
        if (bad)
            return TY_ERR;
        sp.kind = AGG_NFB;
        sp.type = n->kids[0]->str;
        sp.type2 = n->kids[1]->str;
        make_agg(ck, n, &sp);
        return TY_BOOL;
    }
    if (strcmp(fn, "attr") == 0) {
        if (arity(ck, n, 1, 1) < 0)
            return TY_ERR;
        if (!is_str_lit(n->kids[0])) {
            jd_check_error(ck, n->kids[0]->off,
                           "attr: the attribute name must be a string literal");
            return TY_ERR;
        }
        sp.kind = AGG_ATTR;
        sp.attr = n->kids[0]->str;
        make_agg(ck, n, &sp);
        return TY_STR;
    }
    if (strcmp(fn, "in_segment") == 0) {
        if (arity(ck, n, 1, 1) < 0)
            return TY_ERR;
        if (!is_str_lit(n->kids[0])) {
            jd_check_error(ck, n->kids[0]->off,
                           "in_segment: the segment name must be a string literal");
            return TY_ERR;
        }
        const char *name = n->kids[0]->str;
        const char *names[JD_MAX_SEGMENTS];
        int found = -1;
        for (size_t i = 0; i < ck->rs->nsegs; i++) {
            names[i] = ck->rs->segs[i].name;
            if (strcmp(names[i], name) == 0)
                found = (int)i;
        }
        if (found < 0) {
            jd_check_error(ck, n->kids[0]->off, "unknown segment %s%s", name,
                           mean(sug, sizeof sug, name, names, ck->rs->nsegs));
            return TY_ERR;
        }
        n->kind = NK_SEG;
        n->idx = found;
        ck->deps->segs |= 1ULL << found;
        return TY_BOOL;
    }
    jd_check_error(ck, n->off, "unknown function %s%s", fn,
                   mean(sug, sizeof sug, fn, functions, NELEM(functions)));
    for (uint32_t i = 0; i < n->nkids; i++)
        if (n->kids[i]->kind != NK_IDENT && n->kids[i]->kind != NK_INDEX)
            (void)check(ck, n->kids[i]);
    return TY_ERR;
}

static int check_ident(struct jd_check *ck, struct jd_node *n)
{
    char sug[96];
    if (strcmp(n->str, "first_seen") == 0) {
        n->kind = NK_FIRST_SEEN;
        ck->deps->any = 1;
        return TY_NUM;
    }
    if (strcmp(n->str, "last_channel") == 0) {
        n->kind = NK_LAST_CHANNEL;
        ck->deps->any = 1;
        return TY_STR;
    }
    if (strcmp(n->str, "stage") == 0) {
        if (ck->in_stage) {
            jd_check_error(ck, n->off, "a stage condition cannot read stage (it is being decided)");
            return TY_ERR;
        }
        n->kind = NK_STAGE;
        ck->deps->stage = 1;
        return TY_STR;
    }
    if (strcmp(n->str, "event") == 0) {
        jd_check_error(ck, n->off,
                       "event needs a field: event.type, event.channel, event.amount, "
                       "event.score or event.attributes['k']");
        return TY_ERR;
    }
    for (size_t i = 0; i < NELEM(functions); i++) {
        if (strcmp(n->str, functions[i]) == 0) {
            jd_check_error(ck, n->off, "%s is a function: write %s(...)", n->str, n->str);
            return TY_ERR;
        }
    }
    const char *cands[NELEM(idents) + NELEM(functions)];
    size_t nc = 0;
    for (size_t i = 0; i < NELEM(idents); i++)
        cands[nc++] = idents[i];
    for (size_t i = 0; i < NELEM(functions); i++)
        cands[nc++] = functions[i];
    jd_check_error(ck, n->off, "unknown name %s%s", n->str,
                   mean(sug, sizeof sug, n->str, cands, nc));
    return TY_ERR;
}

static int event_allowed(struct jd_check *ck, struct jd_node *n)
{
    if (ck->allow_event) {
        ck->deps->event = 1;
        return 1;
    }
    jd_check_error(ck, n->off,
                   "%.*s: the current event is only available in 'event:' triggers and payloads "
                   "(use last_channel, attr('k') or an aggregate)",
                   (int)n->len, n->src + n->off);
    return 0;
}

static int check_member(struct jd_check *ck, struct jd_node *n)
{
    char sug[96];
    struct jd_node *base = n->kids[0];
    if (base->kind != NK_IDENT || strcmp(base->str, "event") != 0) {
        jd_check_error(ck, n->off, "only event has fields (event.%s)", n->str);
        return TY_ERR;
    }
    static const struct {
        const char *name;
        uint8_t kind, ty;
    } f[] = {{"type", NK_EV_TYPE, TY_STR},
             {"channel", NK_EV_CHANNEL, TY_STR},
             {"amount", NK_EV_AMOUNT, TY_NUM},
             {"score", NK_EV_SCORE, TY_NUM}};
    for (size_t i = 0; i < NELEM(f); i++) {
        if (strcmp(n->str, f[i].name) == 0) {
            if (!event_allowed(ck, n))
                return TY_ERR;
            n->kind = f[i].kind;
            return f[i].ty;
        }
    }
    if (strcmp(n->str, "attributes") == 0) {
        jd_check_error(ck, n->off, "event.attributes needs a key: event.attributes['k']");
        return TY_ERR;
    }
    char full[96];
    const char *s = jd_suggest(n->str, event_fields, NELEM(event_fields));
    if (s)
        snprintf(sug, sizeof sug, " \xe2\x80\x94 did you mean event.%s?", s);
    else
        sug[0] = '\0';
    snprintf(full, sizeof full, "event.%s", n->str);
    jd_check_error(ck, n->off + 6, "unknown event field %s%s", full, sug);
    return TY_ERR;
}

static int check_index(struct jd_check *ck, struct jd_node *n)
{
    struct jd_node *b = n->kids[0];
    if (b->kind == NK_MEMBER && b->kids[0]->kind == NK_IDENT &&
        strcmp(b->kids[0]->str, "event") == 0 && strcmp(b->str, "attributes") == 0) {
        if (!is_str_lit(n->kids[1])) {
            jd_check_error(ck, n->kids[1]->off, "the attribute name must be a string literal");
            return TY_ERR;
        }
        if (!event_allowed(ck, n))
            return TY_ERR;
        n->kind = NK_EV_ATTR;
        n->str = n->kids[1]->str;
        return TY_STR;
    }
    jd_check_error(ck, n->off, "only event.attributes can be indexed (event.attributes['k'])");
    return TY_ERR;
}

static void check_stage_name(struct jd_check *ck, const struct jd_node *lit)
{
    const char *names[256];
    size_t nn = 0;
    for (size_t i = 0; i < ck->rs->nstages; i++) {
        if (strcmp(ck->rs->stages[i].name, lit->str) == 0)
            return;
        if (nn < NELEM(names))
            names[nn++] = ck->rs->stages[i].name;
    }
    char sug[96];
    jd_check_error(ck, lit->off, "unknown stage %s%s", lit->str,
                   mean(sug, sizeof sug, lit->str, names, nn));
}

/* A days_since(...) compared with a constant: record the instants where the
 * comparison can flip so that jd_rules_next_change is exact. */
static void days_threshold(struct jd_check *ck, struct jd_node *agg, struct jd_node *k, int op)
{
    if (agg->kind != NK_AGG || agg->lit.n != AGG_SINCE)
        return;
    double ms;
    if (k->kind == NK_LIT && k->ty == TY_NUM)
        ms = k->lit.n * (double)JD_DAY_MS;
    else if (k->kind == NK_TODAYS && k->kids[0]->kind == NK_LIT)
        ms = k->kids[0]->lit.n;
    else
        return;
    if (!(ms > -(double)JD_MAX_WINDOW_MS && ms < (double)JD_MAX_WINDOW_MS))
        return;  /* no instant worth a timer */
    agg->op = 1; /* claimed: its changes are known exactly */
    if (agg->idx < 0 || !ck->timed)
        return;
    struct jd_ruleset *rs = ck->rs;
    if (rs->nth == rs->capth) {
        rs->capth = rs->capth ? rs->capth * 2 : 8;
        rs->th = jd_xrealloc(rs->th, rs->capth * sizeof *rs->th);
    }
    rs->th[rs->nth].slot = (uint32_t)agg->idx;
    rs->th[rs->nth].ms = (int64_t)ms;
    /* X > C and X <= C flip just after t + C; X >= C and X < C at it */
    rs->th[rs->nth].when = op == TK_GT || op == TK_LE ? 2 : op == TK_GE || op == TK_LT ? 1 : 3;
    rs->nth++;
}

static struct jd_node *to_days(struct jd_check *ck, struct jd_node *d)
{
    struct jd_node *w = jd_arena_alloc(&ck->rs->arena, sizeof *w);
    *w = *d;
    w->kind = NK_TODAYS;
    w->ty = TY_DAYS;
    w->kids = jd_arena_alloc(&ck->rs->arena, sizeof *w->kids);
    w->kids[0] = d;
    w->nkids = 1;
    return w;
}

static int check_bin(struct jd_check *ck, struct jd_node *n)
{
    int l = check(ck, n->kids[0]);
    int r = check(ck, n->kids[1]);
    if (l == TY_ERR || r == TY_ERR)
        return TY_ERR;
    const char *opname = jd_tok_desc((enum jd_tok)n->op);
    switch (n->op) {
    case TK_AND:
    case TK_OR:
        if (l != TY_BOOL || r != TY_BOOL) {
            jd_check_error(ck, l != TY_BOOL ? n->kids[0]->off : n->kids[1]->off,
                           "operator %s needs booleans, got %s and %s", opname, ty_name(l),
                           ty_name(r));
            return TY_ERR;
        }
        return TY_BOOL;
    case TK_PLUS:
    case TK_MINUS:
        if (is_num(l) && is_num(r))
            return TY_NUM;
        if (l == TY_DUR && r == TY_DUR)
            return TY_DUR;
        jd_check_error(ck, n->off, "operator %s needs two numbers or two durations, got %s and %s",
                       opname, ty_name(l), ty_name(r));
        return TY_ERR;
    case TK_STAR:
        if (is_num(l) && is_num(r))
            return TY_NUM;
        if ((l == TY_DUR && is_num(r)) || (is_num(l) && r == TY_DUR))
            return TY_DUR;
        jd_check_error(ck, n->off,
                       "operator %s needs numbers (or a duration and a number), got %s and %s",
                       opname, ty_name(l), ty_name(r));
        return TY_ERR;
    case TK_SLASH:
        if (is_num(l) && is_num(r))
            return TY_NUM;
        if (l == TY_DUR && is_num(r))
            return TY_DUR;
        if (l == TY_DUR && r == TY_DUR)
            return TY_NUM;
        jd_check_error(ck, n->off,
                       "operator %s needs numbers (or a duration and a number), got %s and %s",
                       opname, ty_name(l), ty_name(r));
        return TY_ERR;
    default:
        break;
    }
    /* comparisons */
    if (l == TY_DAYS && r == TY_DUR) {
        n->kids[1] = to_days(ck, n->kids[1]);
        r = TY_DAYS;
    } else if (l == TY_DUR && r == TY_DAYS) {
        n->kids[0] = to_days(ck, n->kids[0]);
        l = TY_DAYS;
    }
    int ok;
    if (is_num(l) || is_num(r))
        ok = is_num(l) && is_num(r);
    else
        ok = l == r && l != TY_LIST;
    if (ok && l == TY_BOOL && n->op != TK_EQ && n->op != TK_NE)
        ok = 0;
    if (!ok) {
        if ((l == TY_DUR && is_num(r)) || (is_num(l) && r == TY_DUR))
            jd_check_error(ck, n->off,
                           "cannot compare a number with a duration (only days_since(...) and "
                           "days_since_any() compare with durations)");
        else
            jd_check_error(ck, n->off, "operator %s cannot compare %s with %s", opname, ty_name(l),
                           ty_name(r));
        return TY_ERR;
    }
    if (l == TY_STR) {
        if (n->kids[0]->kind == NK_STAGE && is_str_lit(n->kids[1]))
            check_stage_name(ck, n->kids[1]);
        if (n->kids[1]->kind == NK_STAGE && is_str_lit(n->kids[0]))
            check_stage_name(ck, n->kids[0]);
    }
    if (is_num(l)) {
        /* C op X is X op' C with the comparison mirrored */
        int mirror = n->op == TK_LT   ? TK_GT
                     : n->op == TK_GT ? TK_LT
                     : n->op == TK_LE ? TK_GE
                     : n->op == TK_GE ? TK_LE
                                      : n->op;
        days_threshold(ck, n->kids[0], n->kids[1], n->op);
        days_threshold(ck, n->kids[1], n->kids[0], mirror);
    }
    return TY_BOOL;
}

static int check_in(struct jd_check *ck, struct jd_node *n)
{
    int l = check(ck, n->kids[0]);
    struct jd_node *list = n->kids[1];
    if (list->kind != NK_LIST) {
        jd_check_error(ck, list->off, "'in' needs a list of literals, e.g. x in ['a', 'b']");
        return TY_ERR;
    }
    int bad = l == TY_ERR;
    for (uint32_t i = 0; i < list->nkids; i++) {
        struct jd_node *it = list->kids[i];
        if (it->kind != NK_LIT || (it->ty != TY_STR && it->ty != TY_NUM)) {
            jd_check_error(ck, it->off, "list items must be string or number literals");
            bad = 1;
            continue;
        }
        if (l != TY_ERR && !(it->ty == l || (is_num(l) && it->ty == TY_NUM))) {
            jd_check_error(ck, it->off, "'in' compares a %s with a %s item", ty_name(l),
                           ty_name(it->ty));
            bad = 1;
            continue;
        }
        if (n->kids[0]->kind == NK_STAGE)
            check_stage_name(ck, it);
    }
    if (!bad && l != TY_STR && !is_num(l)) {
        jd_check_error(ck, n->off, "'in' needs a string or a number on its left, got %s",
                       ty_name(l));
        bad = 1;
    }
    return bad ? TY_ERR : TY_BOOL;
}

static int check(struct jd_check *ck, struct jd_node *n)
{
    int t = TY_ERR;
    switch (n->kind) {
    case NK_LIT:
        t = n->ty;
        break;
    case NK_LIST:
        jd_check_error(ck, n->off, "a list is only allowed after 'in'");
        t = TY_ERR;
        break;
    case NK_IDENT:
        t = check_ident(ck, n);
        break;
    case NK_CALL:
        t = check_call(ck, n);
        break;
    case NK_MEMBER:
        t = check_member(ck, n);
        break;
    case NK_INDEX:
        t = check_index(ck, n);
        break;
    case NK_UNARY: {
        int k = check(ck, n->kids[0]);
        if (k == TY_ERR)
            break;
        if (n->op == TK_NOT) {
            if (k != TY_BOOL)
                jd_check_error(ck, n->off, "operator ! needs a boolean, got %s", ty_name(k));
            else
                t = TY_BOOL;
        } else {
            if (!is_num(k) && k != TY_DUR)
                jd_check_error(ck, n->off, "unary - needs a number or a duration, got %s",
                               ty_name(k));
            else
                t = k == TY_DAYS ? TY_NUM : k;
        }
        break;
    }
    case NK_BIN:
        t = check_bin(ck, n);
        break;
    case NK_IN:
        t = check_in(ck, n);
        break;
    default:
        t = n->ty; /* already resolved */
        break;
    }
    n->ty = (uint8_t)t;
    return t;
}

static void mark_loose(struct jd_ruleset *rs, const struct jd_node *n)
{
    if (n->kind == NK_AGG && n->lit.n == AGG_SINCE && !n->op && n->idx >= 0)
        rs->aggs[n->idx].loose_days = 1;
    for (uint32_t i = 0; i < n->nkids; i++)
        mark_loose(rs, n->kids[i]);
}

int jd_check_rule(struct jd_check *ck, struct jd_crule *r, int allow_event, int in_stage)
{
    ck->rule = r;
    ck->enabled = r->enabled;
    ck->allow_event = allow_event;
    ck->timed = !allow_event;
    ck->in_stage = in_stage;
    ck->deps = &r->deps;
    int t = check(ck, r->root);
    if (t != TY_ERR)
        mark_loose(ck->rs, r->root);
    return t;
}

/* ---- cycles ---------------------------------------------------------- */

static size_t find_seg_ref(const struct jd_node *n, int32_t seg, int stage)
{
    if ((!stage && n->kind == NK_SEG && n->idx == seg) || (stage && n->kind == NK_STAGE))
        return n->off;
    for (uint32_t i = 0; i < n->nkids; i++) {
        size_t o = find_seg_ref(n->kids[i], seg, stage);
        if (o != (size_t)-1)
            return o;
    }
    return (size_t)-1;
}

struct cyc {
    struct jd_ruleset *rs;
    struct jd_errors *errs;
    uint8_t color[JD_MAX_SEGMENTS + 1];
    int path[JD_MAX_SEGMENTS + 1];
    int npath;
    int nerr;
};

/* node S (= nsegs) is the stage list */
static uint64_t node_deps(const struct jd_ruleset *rs, int v, int *reads_stage)
{
    if (v == (int)rs->nsegs) {
        uint64_t m = 0;
        for (size_t i = 0; i < rs->nstages; i++)
            m |= rs->stages[i].deps.segs;
        *reads_stage = 0;
        return m;
    }
    *reads_stage = rs->segs[v].deps.stage;
    return rs->segs[v].deps.segs;
}

static const char *node_name(const struct jd_ruleset *rs, int v)
{
    return v == (int)rs->nsegs ? "(stages)" : rs->segs[v].name;
}

static void visit(struct cyc *cy, int v)
{
    struct jd_ruleset *rs = cy->rs;
    cy->color[v] = 1;
    cy->path[cy->npath++] = v;
    int rstage;
    uint64_t m = node_deps(rs, v, &rstage);
    for (int w = 0; w <= (int)rs->nsegs; w++) {
        int edge = w == (int)rs->nsegs ? rstage : (w < 64 && (m >> w) & 1);
        if (!edge)
            continue;
        if (cy->color[w] == 1) {
            char path[512];
            size_t pl = 0;
            int start = 0;
            while (cy->path[start] != w)
                start++;
            for (int i = start; i < cy->npath && pl < sizeof path; i++)
                pl += (size_t)snprintf(path + pl, sizeof path - pl, "%s -> ",
                                       node_name(rs, cy->path[i]));
            if (pl < sizeof path)
                snprintf(path + pl, sizeof path - pl, "%s", node_name(rs, w));
            /* report at the reference that closes the cycle */
            const struct jd_crule *r = NULL;
            size_t off = 0;
            if (v < (int)rs->nsegs) {
                r = &rs->segs[v];
                off = find_seg_ref(r->root, w, w == (int)rs->nsegs);
            } else {
                for (size_t i = 0; i < rs->nstages && !r; i++) {
                    size_t o = find_seg_ref(rs->stages[i].root, w, 0);
                    if (o != (size_t)-1) {
                        r = &rs->stages[i];
                        off = o;
                    }
                }
            }
            if (off == (size_t)-1)
                off = 0;
            if (r)
                jd_rule_error(cy->errs, r, off, "cycle between segments: %s", path);
            cy->nerr++;
        } else if (cy->color[w] == 0) {
            visit(cy, w);
        }
    }
    cy->npath--;
    cy->color[v] = 2;
    /* post-order: every dependency is placed before v */
    if (v == (int)rs->nsegs || rs->segs[v].enabled)
        rs->order[rs->norder++] = v == (int)rs->nsegs ? JD_ORDER_STAGES : v;
}

int jd_check_cycles(struct jd_ruleset *rs, struct jd_errors *errs)
{
    struct cyc cy;
    memset(&cy, 0, sizeof cy);
    cy.rs = rs;
    cy.errs = errs;
    rs->norder = 0;
    for (int v = 0; v <= (int)rs->nsegs; v++)
        if (cy.color[v] == 0)
            visit(&cy, v);
    return cy.nerr ? -1 : 0;
}
