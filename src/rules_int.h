/*
 * rules_int — private types shared by the rule compiler's files:
 * rules_lex.c (tokens), rules_parse.c (syntax tree), rules_check.c (names,
 * types, dependencies, cycles), rules_agg.c (aggregate slots), rules_eval.c
 * (evaluation, reasons, explain) and rules.c (compile and the public API).
 *
 * Everything a compiled rule set points at lives in its arena, so a rule set
 * is freed in one go and evaluation never allocates.
 */
#ifndef JOURNEYD_RULES_INT_H
#define JOURNEYD_RULES_INT_H

#include <stddef.h>
#include <stdint.h>

#include "journeyd/rules.h"

#define JD_DAY_MS 86400000LL
#define JD_MAX_WINDOW_MS (3650 * JD_DAY_MS)

/* ---- arena ---------------------------------------------------------- */

struct jd_arena_block;
struct jd_arena {
    struct jd_arena_block *head;
};
void *jd_arena_alloc(struct jd_arena *a, size_t n);
char *jd_arena_strndup(struct jd_arena *a, const char *s, size_t n);
char *jd_arena_strdup(struct jd_arena *a, const char *s);
/* An event type or channel name of the rule set: the shared static copy of a
 * well-known name (jd_state_known: matched by pointer on the hot path), else
 * an arena copy. The result is never written to. */
char *jd_arena_name(struct jd_arena *a, const char *s);
void jd_arena_free(struct jd_arena *a);

/* ---- lexer ---------------------------------------------------------- */

enum jd_tok {
    TK_EOF = 0,
    TK_NUM,
    TK_DUR,
    TK_STR,
    TK_IDENT,
    TK_LP,
    TK_RP,
    TK_LB,
    TK_RB,
    TK_COMMA,
    TK_DOT,
    TK_PLUS,
    TK_MINUS,
    TK_STAR,
    TK_SLASH,
    TK_EQ,
    TK_NE,
    TK_LT,
    TK_LE,
    TK_GT,
    TK_GE,
    TK_AND,
    TK_OR,
    TK_NOT,
    TK_ERR
};

struct jd_token {
    enum jd_tok k;
    size_t off; /* byte offset in the expression */
    size_t len;
    double num; /* TK_NUM: value; TK_DUR: milliseconds */
};

struct jd_lexer {
    const char *s;
    size_t n;
    size_t pos;
};

void jd_lex_init(struct jd_lexer *lx, const char *s, size_t n);
/* Next token; TK_ERR with a message in msg (and t->off at the culprit). */
void jd_lex_next(struct jd_lexer *lx, struct jd_token *t, char *msg, size_t msgsize);
const char *jd_tok_desc(enum jd_tok k);

/* ---- syntax tree ---------------------------------------------------- */

enum jd_node_kind {
    /* as parsed */
    NK_LIT = 0, /* number, duration, string, bool literal */
    NK_LIST,    /* [a, b, ...] (right side of `in`) */
    NK_IDENT,   /* str = name */
    NK_CALL,    /* str = function name, kids = arguments */
    NK_MEMBER,  /* kids[0].str (= "event") . str */
    NK_INDEX,   /* kids[0] [ kids[1] ] */
    NK_UNARY,   /* op = TK_NOT | TK_MINUS */
    NK_BIN,     /* op = TK_PLUS ... TK_OR */
    NK_IN,      /* kids[0] in kids[1] (a list) */
    /* resolved by the checker */
    NK_EV_TYPE,
    NK_EV_CHANNEL,
    NK_EV_AMOUNT,
    NK_EV_SCORE,
    NK_EV_ATTR,      /* str = key */
    NK_COUNT,        /* lifetime count of type str (core profile) */
    NK_COUNT_ANY,    /* lifetime count of all events (core profile) */
    NK_FIRST_SEEN,   /* core */
    NK_LAST_CHANNEL, /* core */
    NK_STAGE,        /* current stage name */
    NK_SEG,          /* in_segment: idx = segment */
    NK_AGG,          /* idx = aggregate slot (-1 for disabled rules) */
    NK_TODAYS,       /* kids[0] (a duration) in days */
    NK_FIELD         /* function argument: amount | score | attributes['k'] */
};

enum jd_type { TY_ERR = 0, TY_BOOL, TY_NUM, TY_DAYS, TY_DUR, TY_STR, TY_LIST, TY_FIELD };

enum jd_vtype { V_NULL = 0, V_BOOL, V_NUM, V_STR };

/* 16 bytes, so that jd_eval returns it in registers: a string has no
 * number and the other kinds no string. */
struct jd_val {
    uint8_t t;
    union {
        double n;      /* V_NUM, V_BOOL (0 or 1) */
        const char *s; /* V_STR */
    };
};

enum jd_field { F_NONE = 0, F_AMOUNT, F_SCORE, F_ATTR };

struct jd_node {
    uint8_t kind;
    uint8_t op;
    uint8_t ty;
    uint8_t field; /* NK_FIELD */
    uint32_t off;  /* span in `src` */
    uint32_t len;
    const char *src;
    struct jd_val lit;
    char *str;
    struct jd_node **kids;
    uint32_t nkids;
    int32_t idx;
};

/* Parses `expr` (n bytes) into a tree. On a syntax error returns NULL with
 * the message and its offset. */
struct jd_node *jd_parse(struct jd_arena *a, const char *expr, size_t n, char *msg, size_t msgsize,
                         size_t *erroff);

/* ---- aggregates ------------------------------------------------------ */

enum jd_agg_kind {
    AGG_COUNT = 0, /* windowed count (of a type, or of any event) */
    AGG_SUM,
    AGG_AVG,
    AGG_MIN,
    AGG_MAX,
    AGG_LAST,  /* last value of a field for a type */
    AGG_SINCE, /* time of the latest event (of a type or any) */
    AGG_NFB,   /* A not followed by B within T */
    AGG_ATTR   /* last value of an attribute on any event */
};

struct jd_aggspec {
    uint8_t kind;
    uint8_t field;
    char *type;     /* NULL: any event */
    char *type2;    /* AGG_NFB: the B type */
    char *attr;     /* F_ATTR / AGG_ATTR: the attribute name */
    int64_t window; /* ms; 0 lifetime. AGG_NFB: T */
    int64_t width;  /* windowed: bucket width, ms */
    uint32_t nb;    /* windowed: buckets */
    char *key;
    size_t key_plain_len; /* jd_rules_agg_key_plain_len */
    int loose_days;       /* AGG_SINCE read outside a comparison with a constant */
    int timed;            /* read by a stage or segment: its time changes need a timer */
};

/* Canonical key of a spec (without its key field) into buf. */
void jd_agg_make_key(const struct jd_aggspec *sp, char *buf, size_t size);
void jd_agg_shape(const struct jd_aggspec *sp, struct jd_agg *a);
void jd_agg_update(const struct jd_aggspec *sp, struct jd_agg *a, const struct jd_event *ev,
                   int64_t now);
struct jd_val jd_agg_value(const struct jd_aggspec *sp, const struct jd_agg *a, int64_t now);
/* Earliest instant > now where this slot's value changes by time alone, or INT64_MAX. */
int64_t jd_agg_next_change(const struct jd_aggspec *sp, const struct jd_agg *a, int64_t now);
const char *jd_event_attr_get(const struct jd_event *ev, const char *key);
int jd_event_field(const struct jd_event *ev, uint8_t field, const char *attr, double *out);

/* ---- compiled rules -------------------------------------------------- */

/* What a rule reads, for incremental evaluation. */
struct jd_deps {
    uint64_t types;     /* bit i: reads something that events of type i change */
    uint64_t segs;      /* in_segment(i) */
    unsigned any : 1;   /* reads something every event changes */
    unsigned time : 1;  /* value can change with time alone */
    unsigned stage : 1; /* reads `stage` */
    unsigned event : 1; /* reads the current event's fields */
};

struct jd_crule {
    char *name;
    char *text; /* the expression (for triggers: the part after "event:") */
    char *file;
    int line;
    int col; /* of text[0] */
    int enabled;
    struct jd_node *root; /* NULL: no expression (enter/exit/stage triggers) */
    struct jd_deps deps;
};

struct jd_ctrigger {
    struct jd_trigger_src src; /* deep copy, owned by the arena */
    enum jd_trigger_on on;
    struct jd_crule cond; /* JD_ON_EVENT: the expression */
    int32_t seg;          /* enter/exit */
    int32_t from, to;     /* stage: -1 = '*' */
    int guarded;          /* only events whose type is in `guard` can make it true */
    uint64_t guard;
    int inert; /* disabled, or on a disabled segment */
    struct jd_crule payload[JD_MAX_PAYLOAD];
    const char *keys[JD_MAX_PAYLOAD];
    size_t npayload;
};

struct jd_thresh {
    uint32_t slot;
    int64_t ms;   /* the comparison flips at t + ms (+ 1 when `plus1`) */
    uint8_t when; /* 1: at t + ms, 2: at t + ms + 1, 3: both (== and !=) */
};

#define JD_ORDER_STAGES (-1)

struct jd_ruleset {
    struct jd_arena arena;
    char version[17];

    struct jd_crule *stages;
    size_t nstages;
    struct jd_crule *segs;
    size_t nsegs;
    struct jd_ctrigger *trigs;
    size_t ntrigs;

    struct jd_aggspec *aggs;
    size_t naggs, capaggs;

    char **types; /* interned event types (bit positions of jd_deps.types) */
    size_t ntypes, captypes;
    uint32_t **type_aggs; /* per type: slots an event of that type updates */
    size_t *ntype_aggs;
    uint32_t *any_aggs; /* slots every event updates */
    size_t nany_aggs;

    int32_t order[JD_MAX_SEGMENTS + 1]; /* segments and JD_ORDER_STAGES, dependencies first */
    size_t norder;
    struct jd_deps stage_deps; /* union over enabled stages */

    struct jd_thresh *th;
    size_t nth, capth;
};

/* rules_check.c */
struct jd_check {
    struct jd_ruleset *rs;
    struct jd_errors *errs;
    struct jd_crule *rule; /* being checked */
    int enabled;
    int in_stage; /* checking a stage condition */
    int allow_event;
    int timed; /* a stage or segment condition */
    struct jd_deps *deps;
    int nerr;
};
/* Resolves names, checks types, registers aggregates and records deps.
 * Returns the node type (TY_ERR after reported errors). */
int jd_check_rule(struct jd_check *ck, struct jd_crule *r, int allow_event, int in_stage);
int jd_check_cycles(struct jd_ruleset *rs, struct jd_errors *errs);
void jd_check_error(struct jd_check *ck, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void jd_rule_error(struct jd_errors *errs, const struct jd_crule *r, size_t off, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));
int jd_type_id(struct jd_ruleset *rs, const char *type, int create);
const char *jd_suggest(const char *name, const char *const *cands, size_t n);

/* rules_eval.c */
/* What one evaluation of a customer's rules has read already: its lifetime
 * count of a type (by type id) and its aggregates (by slot) do not change
 * while its rules are evaluated (evaluate, rules.c), and the shipped stages
 * alone read count('purchase') six times. Only the first JD_MEMO_SLOTS of
 * each are kept; the rest are read every time. */
#define JD_MEMO_SLOTS 64
struct jd_memo {
    uint64_t have_count; /* bit i: count[i] holds type id i's count */
    uint64_t have_agg;   /* bit i: agg[i] holds aggregate slot i's value */
    double count[JD_MEMO_SLOTS];
    struct jd_val agg[JD_MEMO_SLOTS];
};

struct jd_ectx {
    const struct jd_ruleset *rs;
    const struct jd_customer *c;
    const struct jd_event *ev;
    int64_t now;
    int32_t stage;
    uint64_t segs;
    struct jd_memo *memo; /* NULL: nothing remembered (explain) */
};
struct jd_val jd_eval(const struct jd_ectx *x, const struct jd_node *n);
/* (inline: evaluate calls it for every rule) */
static inline int jd_truthy(struct jd_val v)
{
    return v.t == V_BOOL && v.n != 0;
}
/* "COND (sub = value, ...)" into out (size bytes, always NUL-terminated). */
void jd_reason(const struct jd_ectx *x, const struct jd_crule *r, const char *prefix, char *out,
               size_t size);
void jd_explain_tree(const struct jd_ectx *x, const struct jd_node *n, int depth,
                     struct jd_buf *out);
void jd_format_val(struct jd_val v, int precise, char *out, size_t size);

#endif
