/*
 * rules — compiling a rule set (copy the sources, parse, check, order,
 * index the aggregates by event type) and the public API: incremental
 * evaluation on an event or a timer, the next instant a time-dependent value
 * can change, and explain.
 *
 * Owns the compiled rule set (one arena plus a few index arrays). Reads and
 * updates a customer's stage, segments and aggregate slots; the core profile
 * (counts, channel, first/last seen) is the engine's, already updated for the
 * event by jd_customer_apply_core when jd_rules_on_event runs.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

/* ---- compile --------------------------------------------------------- */

/* local, so that the rules need nothing from config.c at link time */
static const char *kind_name(enum jd_trigger_kind k)
{
    return k == JD_KIND_REWARD ? "REWARD" : k == JD_KIND_REENGAGEMENT ? "REENGAGEMENT" : "?";
}

static void copy_rule(struct jd_ruleset *rs, struct jd_crule *d, const struct jd_rule_src *s)
{
    d->name = jd_arena_strdup(&rs->arena, s->name ? s->name : "");
    d->text = jd_arena_strdup(&rs->arena, s->expr ? s->expr : "");
    d->file = jd_arena_strdup(&rs->arena, s->file);
    d->line = s->line;
    d->col = s->col;
    d->enabled = s->enabled;
}

static void copy_src(struct jd_ruleset *rs, struct jd_rule_src *d, const struct jd_rule_src *s)
{
    *d = *s;
    d->name = jd_arena_strdup(&rs->arena, s->name);
    d->expr = jd_arena_strdup(&rs->arena, s->expr);
    d->file = jd_arena_strdup(&rs->arena, s->file);
}

static int parse_rule(struct jd_ruleset *rs, struct jd_crule *r, struct jd_errors *errs)
{
    char msg[256];
    size_t off = 0;
    r->root = jd_parse(&rs->arena, r->text, strlen(r->text), msg, sizeof msg, &off);
    if (!r->root) {
        jd_rule_error(errs, r, off, "%s", msg);
        return -1;
    }
    return 0;
}

static size_t skip_ws(const char *s, size_t i)
{
    while (s[i] == ' ' || s[i] == '\t')
        i++;
    return i;
}

/* A sub-rule for the part of `on` starting at byte `off`. */
static void sub_rule(struct jd_ruleset *rs, struct jd_crule *d, const struct jd_rule_src *on,
                     size_t off, size_t len)
{
    d->name = jd_arena_strdup(&rs->arena, on->name ? on->name : "");
    d->text = jd_arena_strndup(&rs->arena, on->expr + off, len);
    d->file = jd_arena_strdup(&rs->arena, on->file);
    d->line = on->line;
    d->col = on->col + (int)off;
    d->enabled = on->enabled;
}

static int find_name(const struct jd_crule *rules, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(rules[i].name) == len && memcmp(rules[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static void unknown_name(struct jd_errors *errs, const struct jd_crule *at, size_t off,
                         const char *what, const char *name, size_t len,
                         const struct jd_crule *rules, size_t n)
{
    char nm[128];
    snprintf(nm, sizeof nm, "%.*s", (int)len, name);
    const char *cands[256];
    size_t nc = 0;
    for (size_t i = 0; i < n && nc < 256; i++)
        cands[nc++] = rules[i].name;
    const char *s = jd_suggest(nm, cands, nc);
    if (s)
        jd_rule_error(errs, at, off, "unknown %s %s \xe2\x80\x94 did you mean %s?", what, nm, s);
    else if (len == 0)
        jd_rule_error(errs, at, off, "missing %s name", what);
    else
        jd_rule_error(errs, at, off, "unknown %s %s", what, nm);
}

/* "event: EXPR" | "enter:SEG" | "exit:SEG" | "stage:A->B" */
static int parse_on(struct jd_ruleset *rs, struct jd_ctrigger *t, struct jd_errors *errs)
{
    const struct jd_rule_src *on = &t->src.on;
    const char *s = on->expr ? on->expr : "";
    struct jd_crule whole;
    memset(&whole, 0, sizeof whole);
    sub_rule(rs, &whole, on, 0, strlen(s));
    size_t i = skip_ws(s, 0);
    const char *colon = strchr(s + i, ':');
    size_t kw = colon ? (size_t)(colon - (s + i)) : 0;
    size_t body = colon ? skip_ws(s, (size_t)(colon - s) + 1) : 0;
    size_t end = strlen(s);
    while (end > body && (s[end - 1] == ' ' || s[end - 1] == '\t'))
        end--;
    t->seg = -1;
    t->from = t->to = -1;
    if (colon && kw == 5 && memcmp(s + i, "event", 5) == 0) {
        t->on = JD_ON_EVENT;
        sub_rule(rs, &t->cond, on, body, strlen(s) - body);
        return parse_rule(rs, &t->cond, errs);
    }
    if (colon && ((kw == 5 && memcmp(s + i, "enter", 5) == 0) ||
                  (kw == 4 && memcmp(s + i, "exit", 4) == 0))) {
        t->on = kw == 5 ? JD_ON_ENTER : JD_ON_EXIT;
        t->seg = find_name(rs->segs, rs->nsegs, s + body, end - body);
        if (t->seg < 0) {
            unknown_name(errs, &whole, body, "segment", s + body, end - body, rs->segs, rs->nsegs);
            return -1;
        }
        return 0;
    }
    if (colon && kw == 5 && memcmp(s + i, "stage", 5) == 0) {
        t->on = JD_ON_STAGE;
        const char *arrow = strstr(s + body, "->");
        if (!arrow) {
            jd_rule_error(errs, &whole, body, "expected stage:FROM->TO (FROM or TO may be *)");
            return -1;
        }
        size_t a0 = body, a1 = (size_t)(arrow - s);
        while (a1 > a0 && (s[a1 - 1] == ' ' || s[a1 - 1] == '\t'))
            a1--;
        size_t b0 = skip_ws(s, (size_t)(arrow - s) + 2);
        int bad = 0;
        int32_t *ends[2] = {&t->from, &t->to};
        size_t lo[2] = {a0, b0}, hi[2] = {a1, end};
        for (int k = 0; k < 2; k++) {
            if (hi[k] - lo[k] == 1 && s[lo[k]] == '*') {
                *ends[k] = -1;
                continue;
            }
            *ends[k] = find_name(rs->stages, rs->nstages, s + lo[k], hi[k] - lo[k]);
            if (*ends[k] < 0) {
                unknown_name(errs, &whole, lo[k], "stage", s + lo[k], hi[k] - lo[k], rs->stages,
                             rs->nstages);
                bad = 1;
            }
        }
        return bad ? -1 : 0;
    }
    jd_rule_error(errs, &whole, i,
                  "unknown trigger form '%s' (expected 'event: EXPR', 'enter:SEGMENT', "
                  "'exit:SEGMENT' or 'stage:FROM->TO')",
                  s + i);
    return -1;
}

static void dup_names(const struct jd_crule *rules, size_t n, const char *what,
                      struct jd_errors *errs)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(rules[i].name, rules[j].name) == 0) {
                jd_rule_error(errs, &rules[i], 0, "duplicate %s name %s (first defined at line %d)",
                              what, rules[i].name, rules[j].line);
                break;
            }
}

static int want_bool(struct jd_check *ck, struct jd_crule *r, int allow_event, int in_stage)
{
    if (!r->root)
        return -1;
    int t = jd_check_rule(ck, r, allow_event, in_stage);
    if (t == TY_ERR)
        return -1;
    if (t != TY_BOOL) {
        jd_rule_error(ck->errs, r, 0, "a condition must be true or false, but this is a %s",
                      t == TY_STR    ? "string"
                      : t == TY_DUR  ? "duration"
                      : t == TY_LIST ? "list"
                                     : "number");
        return -1;
    }
    return 0;
}

/* The event types an 'event:' trigger can be true for, when its condition
 * pins event.type (== or in, possibly inside && and ||). */
static int guard_of(struct jd_ruleset *rs, const struct jd_node *n, uint64_t *mask)
{
    if (n->kind == NK_BIN && n->op == TK_AND) {
        uint64_t a = 0, b = 0;
        int ga = guard_of(rs, n->kids[0], &a), gb = guard_of(rs, n->kids[1], &b);
        if (ga && gb)
            *mask = a & b;
        else if (ga)
            *mask = a;
        else if (gb)
            *mask = b;
        return ga || gb;
    }
    if (n->kind == NK_BIN && n->op == TK_OR) {
        uint64_t a = 0, b = 0;
        if (!guard_of(rs, n->kids[0], &a) || !guard_of(rs, n->kids[1], &b))
            return 0;
        *mask = a | b;
        return 1;
    }
    const struct jd_node *lits[32];
    size_t nl = 0;
    if (n->kind == NK_BIN && n->op == TK_EQ) {
        const struct jd_node *l = n->kids[0], *r = n->kids[1];
        if (l->kind == NK_EV_TYPE && r->kind == NK_LIT && r->lit.t == V_STR)
            lits[nl++] = r;
        else if (r->kind == NK_EV_TYPE && l->kind == NK_LIT && l->lit.t == V_STR)
            lits[nl++] = l;
        else
            return 0;
    } else if (n->kind == NK_IN && n->kids[0]->kind == NK_EV_TYPE) {
        for (uint32_t i = 0; i < n->kids[1]->nkids && nl < 32; i++)
            lits[nl++] = n->kids[1]->kids[i];
    } else {
        return 0;
    }
    uint64_t m = 0;
    for (size_t i = 0; i < nl; i++) {
        if (lits[i]->lit.t != V_STR)
            continue;
        int id = jd_type_id(rs, lits[i]->lit.s, 1);
        if (id >= 64)
            return 0;
        m |= 1ULL << id;
    }
    *mask = m;
    return 1;
}

static void index_aggs(struct jd_ruleset *rs)
{
    size_t nt = rs->ntypes;
    rs->type_aggs = jd_xcalloc(nt ? nt : 1, sizeof *rs->type_aggs);
    rs->ntype_aggs = jd_xcalloc(nt ? nt : 1, sizeof *rs->ntype_aggs);
    rs->any_aggs = jd_xcalloc(rs->naggs ? rs->naggs : 1, sizeof *rs->any_aggs);
    for (size_t t = 0; t < nt; t++)
        rs->type_aggs[t] = jd_xcalloc(rs->naggs ? rs->naggs : 1, sizeof **rs->type_aggs);
    for (size_t i = 0; i < rs->naggs; i++) {
        struct jd_aggspec *sp = &rs->aggs[i];
        sp->key_plain_len = jd_state_plain(sp->key) ? strlen(sp->key) : SIZE_MAX;
        if (!sp->type && sp->kind != AGG_NFB) {
            rs->any_aggs[rs->nany_aggs++] = (uint32_t)i;
            continue;
        }
        for (size_t t = 0; t < nt; t++) {
            if ((sp->type && strcmp(sp->type, rs->types[t]) == 0) ||
                (sp->type2 && strcmp(sp->type2, rs->types[t]) == 0))
                rs->type_aggs[t][rs->ntype_aggs[t]++] = (uint32_t)i;
        }
    }
}

static void compute_version(struct jd_ruleset *rs)
{
    size_t cap = 8, n = 0;
    for (size_t i = 0; i < rs->ntrigs; i++)
        cap += 4 + 2 * rs->trigs[i].src.npayload;
    cap += 3 * (rs->nstages + rs->nsegs);
    const void **parts = jd_xcalloc(cap, sizeof *parts);
    size_t *lens = jd_xcalloc(cap, sizeof *lens);
#define PART(s)                                                                                    \
    do {                                                                                           \
        parts[n] = (s) ? (const void *)(s) : (const void *)"";                                     \
        lens[n] = (s) ? strlen(s) : 0;                                                             \
        n++;                                                                                       \
    } while (0)
    for (size_t i = 0; i < rs->nstages; i++)
        if (rs->stages[i].enabled) {
            PART("stage");
            PART(rs->stages[i].name);
            PART(rs->stages[i].text);
        }
    for (size_t i = 0; i < rs->nsegs; i++)
        if (rs->segs[i].enabled) {
            PART("segment");
            PART(rs->segs[i].name);
            PART(rs->segs[i].text);
        }
    for (size_t i = 0; i < rs->ntrigs; i++) {
        const struct jd_trigger_src *t = &rs->trigs[i].src;
        if (!t->on.enabled)
            continue;
        PART("trigger");
        PART(t->on.name);
        PART(t->on.expr);
        PART(kind_name(t->kind));
        for (size_t k = 0; k < t->npayload && n + 2 <= cap; k++) {
            PART(t->payload[k].key);
            PART(t->payload[k].expr.expr);
        }
    }
#undef PART
    char hex[33];
    jd_hash128_hex(parts, lens, n, hex);
    memcpy(rs->version, hex, 16);
    rs->version[16] = '\0';
    free(parts);
    free(lens);
}

void jd_rules_destroy(struct jd_ruleset *rs)
{
    if (!rs)
        return;
    for (size_t t = 0; t < rs->ntypes && rs->type_aggs; t++)
        free(rs->type_aggs[t]);
    free(rs->type_aggs);
    free(rs->ntype_aggs);
    free(rs->any_aggs);
    free(rs->types);
    free(rs->aggs);
    free(rs->th);
    jd_arena_free(&rs->arena);
    free(rs);
}

int jd_rules_compile(const struct jd_rules_src *src, struct jd_ruleset **out,
                     struct jd_errors *errs)
{
    struct jd_errors local;
    jd_errors_init(&local);
    if (!errs)
        errs = &local;
    size_t n0 = errs->n;
    *out = NULL;
    struct jd_ruleset *rs = jd_xcalloc(1, sizeof *rs);

    rs->nstages = src->nstages;
    rs->stages = jd_arena_alloc(&rs->arena, (src->nstages + 1) * sizeof *rs->stages);
    for (size_t i = 0; i < src->nstages; i++)
        copy_rule(rs, &rs->stages[i], &src->stages[i]);
    rs->nsegs = src->nsegments;
    rs->segs = jd_arena_alloc(&rs->arena, (src->nsegments + 1) * sizeof *rs->segs);
    for (size_t i = 0; i < src->nsegments; i++)
        copy_rule(rs, &rs->segs[i], &src->segments[i]);
    if (rs->nsegs > JD_MAX_SEGMENTS) {
        jd_rule_error(errs, &rs->segs[JD_MAX_SEGMENTS], 0, "too many segments (at most %d)",
                      JD_MAX_SEGMENTS);
        rs->nsegs = JD_MAX_SEGMENTS;
    }
    rs->ntrigs = src->ntriggers;
    rs->trigs = jd_arena_alloc(&rs->arena, (src->ntriggers + 1) * sizeof *rs->trigs);
    for (size_t i = 0; i < src->ntriggers; i++) {
        struct jd_ctrigger *t = &rs->trigs[i];
        const struct jd_trigger_src *s = &src->triggers[i];
        t->src = *s;
        copy_src(rs, &t->src.on, &s->on);
        t->src.topic = jd_arena_strdup(&rs->arena, s->topic);
        t->src.goal = jd_arena_name(&rs->arena, s->goal); /* compared with event types */
        t->src.payload = jd_arena_alloc(&rs->arena, (s->npayload + 1) * sizeof *t->src.payload);
        for (size_t k = 0; k < s->npayload; k++) {
            t->src.payload[k].key = jd_arena_strdup(&rs->arena, s->payload[k].key);
            copy_src(rs, &t->src.payload[k].expr, &s->payload[k].expr);
        }
    }

    dup_names(rs->stages, rs->nstages, "stage", errs);
    dup_names(rs->segs, rs->nsegs, "segment", errs);
    for (size_t i = 0; i < rs->ntrigs; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(rs->trigs[i].src.on.name, rs->trigs[j].src.on.name) == 0) {
                struct jd_crule w;
                sub_rule(rs, &w, &rs->trigs[i].src.on, 0, 0);
                jd_rule_error(errs, &w, 0, "duplicate trigger name %s", w.name);
                break;
            }

    /* parse */
    for (size_t i = 0; i < rs->nstages; i++)
        (void)parse_rule(rs, &rs->stages[i], errs);
    for (size_t i = 0; i < rs->nsegs; i++)
        (void)parse_rule(rs, &rs->segs[i], errs);
    for (size_t i = 0; i < rs->ntrigs; i++) {
        struct jd_ctrigger *t = &rs->trigs[i];
        (void)parse_on(rs, t, errs);
        if (t->src.npayload > JD_MAX_PAYLOAD) {
            struct jd_crule w;
            sub_rule(rs, &w, &t->src.on, 0, 0);
            jd_rule_error(errs, &w, 0, "trigger %s: too many payload entries (at most %d)", w.name,
                          JD_MAX_PAYLOAD);
        }
        t->npayload = t->src.npayload < JD_MAX_PAYLOAD ? t->src.npayload : JD_MAX_PAYLOAD;
        for (size_t k = 0; k < t->npayload; k++) {
            const struct jd_rule_src *ps = &t->src.payload[k].expr;
            copy_rule(rs, &t->payload[k], ps);
            t->payload[k].enabled = t->src.on.enabled;
            t->keys[k] = t->src.payload[k].key;
            (void)parse_rule(rs, &t->payload[k], errs);
        }
    }

    /* check: names, types, aggregates, dependencies */
    struct jd_check ck;
    memset(&ck, 0, sizeof ck);
    ck.rs = rs;
    ck.errs = errs;
    for (size_t i = 0; i < rs->nstages; i++)
        (void)want_bool(&ck, &rs->stages[i], 0, 1);
    for (size_t i = 0; i < rs->nsegs; i++)
        (void)want_bool(&ck, &rs->segs[i], 0, 0);
    for (size_t i = 0; i < rs->ntrigs; i++) {
        struct jd_ctrigger *t = &rs->trigs[i];
        if (t->on == JD_ON_EVENT && t->cond.root && want_bool(&ck, &t->cond, 1, 0) == 0)
            t->guarded = guard_of(rs, t->cond.root, &t->guard);
        for (size_t k = 0; k < t->npayload; k++) {
            if (!t->payload[k].root)
                continue;
            int ty = jd_check_rule(&ck, &t->payload[k], 1, 0);
            if (ty == TY_LIST)
                jd_rule_error(errs, &t->payload[k], 0, "a payload value cannot be a list");
        }
        t->inert = !t->src.on.enabled || ((t->on == JD_ON_ENTER || t->on == JD_ON_EXIT) &&
                                          t->seg >= 0 && !rs->segs[t->seg].enabled);
    }
    if (errs->n == n0)
        (void)jd_check_cycles(rs, errs);
    for (size_t i = 0; i < rs->nstages; i++) {
        const struct jd_deps *d = &rs->stages[i].deps;
        if (!rs->stages[i].enabled)
            continue;
        rs->stage_deps.types |= d->types;
        rs->stage_deps.segs |= d->segs;
        rs->stage_deps.any |= d->any;
        rs->stage_deps.time |= d->time;
    }
    if (errs->n != n0) {
        jd_rules_destroy(rs);
        jd_errors_free(&local);
        return -1;
    }
    index_aggs(rs);
    compute_version(rs);
    *out = rs;
    return 0;
}

/* ---- accessors ------------------------------------------------------- */

const char *jd_rules_version(const struct jd_ruleset *rs)
{
    return rs->version;
}

size_t jd_rules_nstages(const struct jd_ruleset *rs)
{
    return rs->nstages;
}

const char *jd_rules_stage_name(const struct jd_ruleset *rs, size_t i)
{
    return i < rs->nstages ? rs->stages[i].name : NULL;
}

int jd_rules_stage_index(const struct jd_ruleset *rs, const char *name)
{
    return name ? find_name(rs->stages, rs->nstages, name, strlen(name)) : -1;
}

size_t jd_rules_nsegments(const struct jd_ruleset *rs)
{
    return rs->nsegs;
}

const char *jd_rules_segment_name(const struct jd_ruleset *rs, size_t i)
{
    return i < rs->nsegs ? rs->segs[i].name : NULL;
}

int jd_rules_segment_index(const struct jd_ruleset *rs, const char *name)
{
    return name ? find_name(rs->segs, rs->nsegs, name, strlen(name)) : -1;
}

size_t jd_rules_ntriggers(const struct jd_ruleset *rs)
{
    return rs->ntrigs;
}

int jd_rules_trigger_index(const struct jd_ruleset *rs, const char *name)
{
    for (size_t i = 0; name && i < rs->ntrigs; i++)
        if (strcmp(rs->trigs[i].src.on.name, name) == 0)
            return (int)i;
    return -1;
}

const struct jd_trigger_src *jd_rules_trigger(const struct jd_ruleset *rs, size_t i)
{
    return i < rs->ntrigs ? &rs->trigs[i].src : NULL;
}

enum jd_trigger_on jd_rules_trigger_on(const struct jd_ruleset *rs, size_t i)
{
    return i < rs->ntrigs ? rs->trigs[i].on : JD_ON_EVENT;
}

size_t jd_rules_naggs(const struct jd_ruleset *rs)
{
    return rs->naggs;
}

const char *jd_rules_agg_key(const struct jd_ruleset *rs, size_t i)
{
    return i < rs->naggs ? rs->aggs[i].key : NULL;
}

size_t jd_rules_agg_key_plain_len(const struct jd_ruleset *rs, size_t i)
{
    return i < rs->naggs ? rs->aggs[i].key_plain_len : SIZE_MAX;
}

uint32_t jd_rules_agg_nbuckets(const struct jd_ruleset *rs, size_t i)
{
    return i < rs->naggs ? rs->aggs[i].nb : 0;
}

void jd_rules_agg_init(const struct jd_ruleset *rs, size_t i, struct jd_agg *a)
{
    if (i < rs->naggs)
        jd_agg_shape(&rs->aggs[i], a);
    else
        memset(a, 0, sizeof *a);
}

/* ---- evaluation ------------------------------------------------------ */

enum { MODE_EVENT, MODE_TIME, MODE_ALL };

static int dirty(const struct jd_deps *d, int mode, uint64_t tmask)
{
    if (mode == MODE_ALL)
        return 1;
    if (d->time)
        return 1; /* `now` moved */
    if (mode == MODE_TIME)
        return 0;
    return d->any || d->event || (d->types & tmask);
}

static void fire(const struct jd_ruleset *rs, const struct jd_ectx *x, size_t k, int32_t seg,
                 const struct jd_crule *why, const char *prefix, struct jd_eval_result *res)
{
    if (res->nfired >= JD_MAX_FIRED)
        return;
    const struct jd_ctrigger *t = &rs->trigs[k];
    struct jd_fired *f = &res->fired[res->nfired++];
    f->trigger = (uint32_t)k;
    f->segment = seg;
    jd_reason(x, why, prefix, f->reason, sizeof f->reason);
    f->nattrs = t->npayload;
    for (size_t i = 0; i < t->npayload; i++) {
        f->attr_keys[i] = t->keys[i];
        jd_format_val(jd_eval(x, t->payload[i].root), 1, f->attr_vals[i], sizeof f->attr_vals[i]);
    }
}

static void evaluate(const struct jd_ruleset *rs, struct jd_customer *c, const struct jd_event *ev,
                     int64_t now, int mode, uint64_t tmask, struct jd_eval_result *res)
{
    struct jd_memo memo; /* (only its two masks need setting) */
    memo.have_count = memo.have_agg = 0;
    struct jd_ectx x = {rs, c, ev, now, c->stage, c->segments, &memo};
    uint64_t changed = 0;
    int stage_changed = 0;
    res->old_stage = c->stage;
    res->entered = res->exited = 0;
    res->nfired = 0;
    res->evaluated = 0;

    for (size_t o = 0; o < rs->norder; o++) {
        int32_t v = rs->order[o];
        if (v == JD_ORDER_STAGES) {
            if (!dirty(&rs->stage_deps, mode, tmask) && !(rs->stage_deps.segs & changed))
                continue;
            int32_t ns = -1;
            for (size_t i = 0; i < rs->nstages; i++) {
                if (!rs->stages[i].enabled)
                    continue;
                res->evaluated++;
                if (jd_truthy(jd_eval(&x, rs->stages[i].root))) {
                    ns = (int32_t)i;
                    break;
                }
            }
            if (ns != x.stage) {
                stage_changed = 1;
                x.stage = ns;
            }
            continue;
        }
        const struct jd_crule *r = &rs->segs[v];
        if (!dirty(&r->deps, mode, tmask) && !(r->deps.segs & changed) &&
            !(r->deps.stage && stage_changed))
            continue;
        res->evaluated++;
        uint64_t bit = 1ULL << v;
        int now_in = jd_truthy(jd_eval(&x, r->root));
        int was_in = (x.segs & bit) != 0;
        if (now_in == was_in)
            continue;
        changed |= bit;
        if (now_in) {
            x.segs |= bit;
            res->entered |= bit;
        } else {
            x.segs &= ~bit;
            res->exited |= bit;
        }
    }
    res->new_stage = x.stage;

    for (size_t k = 0; k < rs->ntrigs; k++) {
        const struct jd_ctrigger *t = &rs->trigs[k];
        if (t->inert)
            continue;
        switch (t->on) {
        case JD_ON_EVENT:
            if (!ev || (t->guarded && !(t->guard & tmask)))
                break;
            res->evaluated++;
            if (jd_truthy(jd_eval(&x, t->cond.root)))
                fire(rs, &x, k, -1, &t->cond, NULL, res);
            break;
        case JD_ON_ENTER:
            if (res->entered & (1ULL << t->seg))
                fire(rs, &x, k, t->seg, &rs->segs[t->seg], NULL, res);
            break;
        case JD_ON_EXIT:
            if (res->exited & (1ULL << t->seg))
                fire(rs, &x, k, t->seg, &rs->segs[t->seg], NULL, res);
            break;
        case JD_ON_STAGE:
            if (stage_changed && x.stage >= 0 && (t->from < 0 || t->from == res->old_stage) &&
                (t->to < 0 || t->to == x.stage)) {
                char prefix[160];
                snprintf(prefix, sizeof prefix, "stage %s -> %s: ",
                         res->old_stage >= 0 ? rs->stages[res->old_stage].name : "(none)",
                         rs->stages[x.stage].name);
                fire(rs, &x, k, -1, &rs->stages[x.stage], prefix, res);
            }
            break;
        }
    }
    if (c->stage != x.stage || c->segments != x.segs)
        c->dirty = 1;
    c->stage = x.stage;
    c->segments = x.segs;
}

static int type_id_of(const struct jd_ruleset *rs, const char *type)
{
    if (!type)
        return -1;
    for (size_t i = 0; i < rs->ntypes; i++)
        if (jd_name_eq(rs->types[i], type))
            return (int)i;
    return -1;
}

void jd_rules_on_event(const struct jd_ruleset *rs, struct jd_customer *c,
                       const struct jd_event *ev, int64_t now, struct jd_eval_result *res)
{
    int tid = type_id_of(rs, ev->type);
    if (c->aggs && c->naggs == rs->naggs) {
        if (tid >= 0)
            for (size_t i = 0; i < rs->ntype_aggs[tid]; i++) {
                uint32_t s = rs->type_aggs[tid][i];
                jd_agg_update(&rs->aggs[s], &c->aggs[s], ev, now);
            }
        for (size_t i = 0; i < rs->nany_aggs; i++) {
            uint32_t s = rs->any_aggs[i];
            jd_agg_update(&rs->aggs[s], &c->aggs[s], ev, now);
        }
    }
    c->dirty = 1;
    uint64_t tmask = tid >= 0 && tid < 64 ? 1ULL << tid : 0;
    evaluate(rs, c, ev, now, c->stage < 0 ? MODE_ALL : MODE_EVENT, tmask, res);
}

void jd_rules_on_time(const struct jd_ruleset *rs, struct jd_customer *c, int64_t now,
                      struct jd_eval_result *res)
{
    evaluate(rs, c, NULL, now, c->stage < 0 ? MODE_ALL : MODE_TIME, 0, res);
}

void jd_rules_reevaluate(const struct jd_ruleset *rs, struct jd_customer *c, int64_t now,
                         struct jd_eval_result *res)
{
    evaluate(rs, c, NULL, now, MODE_ALL, 0, res);
}

int64_t jd_rules_next_change(const struct jd_ruleset *rs, const struct jd_customer *c, int64_t now)
{
    int64_t best = INT64_MAX;
    if (!c->aggs || c->naggs != rs->naggs)
        return best;
    for (size_t i = 0; i < rs->naggs; i++) {
        if (!rs->aggs[i].timed)
            continue;
        int64_t t = jd_agg_next_change(&rs->aggs[i], &c->aggs[i], now);
        if (t < best)
            best = t;
    }
    for (size_t i = 0; i < rs->nth; i++) {
        const struct jd_agg *a = &c->aggs[rs->th[i].slot];
        if (a->t == 0)
            continue;
        int64_t at = a->t + rs->th[i].ms;
        if ((rs->th[i].when & 1) && at > now && at < best)
            best = at;
        if ((rs->th[i].when & 2) && at + 1 > now && at + 1 < best)
            best = at + 1;
    }
    return best;
}

/* ---- explain --------------------------------------------------------- */

static void explain_rule(const struct jd_ectx *x, const char *what, const struct jd_crule *r,
                         struct jd_buf *out)
{
    jd_buf_printf(out, "%s %s%s: %s\n", what, r->name, r->enabled ? "" : " (disabled)", r->text);
    if (r->root)
        jd_explain_tree(x, r->root, 1, out);
}

int jd_rules_explain(const struct jd_ruleset *rs, const struct jd_customer *c,
                     const struct jd_event *ev, const char *name, int64_t now, struct jd_buf *out,
                     char *errstr, size_t errsize)
{
    struct jd_ectx x = {rs, c, ev, now, c->stage, c->segments, NULL};
    int want = 7; /* stages, segments, triggers */
    if (strncmp(name, "stage:", 6) == 0) {
        want = 1;
        name += 6;
    } else if (strncmp(name, "segment:", 8) == 0) {
        want = 2;
        name += 8;
    } else if (strncmp(name, "trigger:", 8) == 0) {
        want = 4;
        name += 8;
    }
    int found = 0;
    if (want & 1) {
        int i = jd_rules_stage_index(rs, name);
        if (i >= 0) {
            found++;
            explain_rule(&x, "stage", &rs->stages[i], out);
            jd_buf_printf(out, "  current stage: %s\n",
                          c->stage >= 0 ? rs->stages[c->stage].name : "(none)");
        }
    }
    if (want & 2) {
        int i = jd_rules_segment_index(rs, name);
        if (i >= 0) {
            found++;
            explain_rule(&x, "segment", &rs->segs[i], out);
            jd_buf_printf(out, "  member: %s\n", (c->segments >> i) & 1 ? "yes" : "no");
        }
    }
    if (want & 4) {
        int i = jd_rules_trigger_index(rs, name);
        if (i >= 0) {
            const struct jd_ctrigger *t = &rs->trigs[i];
            found++;
            jd_buf_printf(out, "trigger %s%s (%s) on %s\n", t->src.on.name,
                          t->inert ? " (inert)" : "", kind_name(t->src.kind), t->src.on.expr);
            if (t->on == JD_ON_EVENT)
                jd_explain_tree(&x, t->cond.root, 1, out);
            else if (t->on == JD_ON_ENTER || t->on == JD_ON_EXIT)
                explain_rule(&x, "  segment", &rs->segs[t->seg], out);
            for (size_t k = 0; k < t->npayload; k++) {
                char v[JD_PAYLOAD_VALUE_MAX];
                jd_format_val(jd_eval(&x, t->payload[k].root), 1, v, sizeof v);
                jd_buf_printf(out, "  payload %s = %s\n", t->keys[k], v);
            }
        }
    }
    if (!found) {
        snprintf(errstr, errsize, "no stage, segment or trigger named %s", name);
        return -1;
    }
    return 0;
}
