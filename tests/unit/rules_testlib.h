/*
 * rules_testlib — helpers for the rule tests: a rule source built from
 * string literals (the sketch's rules), events, and customers from state.c
 * driven the way the engine drives them (core profile, then the rules).
 */
#ifndef RULES_TESTLIB_H
#define RULES_TESTLIB_H

#include <stdlib.h>
#include <string.h>

#include "journeyd/rules.h"
#include "journeyd/state.h"

#define DAY 86400000LL
#define HOUR 3600000LL
#define T0 1700000000000LL /* 2023-11-14 */

struct tsrc {
    struct jd_rules_src src;
    struct jd_rule_src stages[16], segs[16];
    struct jd_trigger_src trigs[16];
    struct jd_payload_src payload[16][4];
    int line;
};

static inline void tsrc_init(struct tsrc *t)
{
    memset(t, 0, sizeof *t);
    t->src.stages = t->stages;
    t->src.segments = t->segs;
    t->src.triggers = t->trigs;
    t->line = 10;
}

static inline struct jd_rule_src mkrule(struct tsrc *t, const char *name, const char *expr)
{
    struct jd_rule_src r = {(char *)name, (char *)expr, "t.conf", t->line++, 20, 1};
    return r;
}

static inline void add_stage(struct tsrc *t, const char *name, const char *expr)
{
    t->stages[t->src.nstages++] = mkrule(t, name, expr);
}

static inline void add_seg(struct tsrc *t, const char *name, const char *expr)
{
    t->segs[t->src.nsegments++] = mkrule(t, name, expr);
}

static inline struct jd_trigger_src *add_trig(struct tsrc *t, const char *name, const char *on,
                                              enum jd_trigger_kind kind)
{
    struct jd_trigger_src *tr = &t->trigs[t->src.ntriggers];
    memset(tr, 0, sizeof *tr);
    tr->on = mkrule(t, name, on);
    tr->kind = kind;
    tr->payload = t->payload[t->src.ntriggers];
    t->src.ntriggers++;
    return tr;
}

static inline void add_payload(struct tsrc *t, struct jd_trigger_src *tr, const char *key,
                               const char *expr)
{
    struct jd_payload_src *p = &tr->payload[tr->npayload++];
    p->key = (char *)key;
    p->expr = mkrule(t, key, expr);
}

/* The rules of design/journeyd.conf.sketch, verbatim. */
static inline void sketch_rules(struct tsrc *t)
{
    tsrc_init(t);
    add_stage(t, "lapsed", "count('purchase') >= 1 && days_since_any() >= 60");
    add_stage(t, "at_risk", "count('purchase') >= 2 && days_since('purchase') > 45");
    add_stage(t, "loyal", "count('purchase', 180d) >= 5");
    add_stage(t, "repeat", "count('purchase') >= 2");
    add_stage(t, "first_purchase", "count('purchase') == 1");
    add_stage(t, "engaged", "count_any(30d) >= 3");
    add_stage(t, "prospect", "true");
    add_seg(t, "vip", "count('purchase', 30d) >= 3");
    add_seg(t, "cart_abandoner", "not_followed_by('add_to_cart', 'purchase', 1h)");
    add_seg(t, "lapsed", "count('purchase') >= 1 && days_since_any() >= 60");
    add_seg(t, "detractor", "last('feedback', score) <= 6");
    add_trig(t, "welcome_first_purchase",
             "event: event.type == 'purchase' && count('purchase') == 1", JD_KIND_REWARD);
    struct jd_trigger_src *v = add_trig(t, "vip_welcome", "enter:vip", JD_KIND_REWARD);
    v->cooldown_ms = 30 * DAY;
    add_payload(t, v, "spend_30d", "sum('purchase', amount, 30d)");
    add_payload(t, v, "last_channel", "last_channel");
    struct jd_trigger_src *s =
        add_trig(t, "service_recovery", "event: event.type == 'feedback' && event.score <= 6",
                 JD_KIND_REENGAGEMENT);
    s->cooldown_ms = DAY;
    add_trig(t, "cart_reminder", "enter:cart_abandoner", JD_KIND_REENGAGEMENT);
    struct jd_trigger_src *w = add_trig(t, "winback", "enter:lapsed", JD_KIND_REENGAGEMENT);
    w->holdout = 0.10;
}

static inline struct jd_customer *tc_new(const struct jd_ruleset *rs)
{
    return jd_customer_new("c1", 2, 0, rs);
}

static inline void tc_destroy(struct jd_customer *c)
{
    jd_customer_destroy(c);
}

static inline void tc_apply_core(struct jd_customer *c, const struct jd_event *ev)
{
    jd_customer_apply_core(c, ev);
}

/* Every other event carries the shared static copies of well-known names, as
 * the engine's decoded events do (jd_state_known), the others the caller's
 * strings: rules, counts and aggregates must not tell them apart. */
static inline struct jd_event mkev(const char *type, const char *channel, int64_t t)
{
    static unsigned n;
    struct jd_event ev;
    memset(&ev, 0, sizeof ev);
    ev.event_id = "e";
    ev.customer_id = "c1";
    ev.type = type;
    ev.channel = channel;
    if (n++ % 2) {
        if (jd_state_known(type))
            ev.type = jd_state_known(type);
        if (jd_state_known(channel))
            ev.channel = jd_state_known(channel);
    }
    ev.occurred_at = t;
    return ev;
}

/* apply one event the way the engine does: core, then rules at now = event time */
static inline void tc_event(const struct jd_ruleset *rs, struct jd_customer *c,
                            const struct jd_event *ev, struct jd_eval_result *res)
{
    tc_apply_core(c, ev);
    jd_rules_on_event(rs, c, ev, ev->occurred_at, res);
}

#endif
