/*
 * loadgen_demo — plans the complete journey of one demo customer from its
 * persona: sessions on days after the customer's first day, at daytime in the
 * customer's own time zone (10:00-20:00 local, so that quiet hours never
 * hide a demo trigger), each session a few events minutes apart. The
 * spacing between purchases is what makes a persona what it is:
 *   repeat buyers: 16-21 days between purchases, never 3 within 30 days;
 *   VIPs: 3-8 days between 3-5 purchases, so >= 3 within 30 days.
 * Owns nothing: it appends to the caller's plan array.
 */
#include "journeyd/loadgen.h"

#include <math.h>
#include <stdlib.h>

#define DAY_MS (24LL * 3600 * 1000)

/* detail indices for the types whose attribute is not a sku */
#define N_PAGES 6
#define N_CAMPAIGNS 6
#define N_TOPICS 5
#define CAMPAIGN_VIP_PREVIEW 3

struct plan_ctx {
    struct jd_loadgen_rng *rng;
    const struct jd_loadgen_traits *traits;
    int64_t day0;
    struct jd_loadgen_planned **plan;
    size_t *cap;
    size_t n;
    int64_t t; /* time of the next event in the current session */
};

static int64_t rr(struct plan_ctx *c, int64_t lo, int64_t hi)
{
    return jd_loadgen_rng_range(c->rng, lo, hi);
}

static int chance(struct plan_ctx *c, int percent)
{
    return (int)jd_loadgen_rng_below(c->rng, 100) < percent;
}

static double money(double x)
{
    return floor(x * 100.0 + 0.5) / 100.0;
}

/* Opens a session on `day` at a local time between 10:00 and 19:00. */
static void session(struct plan_ctx *c, int day)
{
    int64_t local_min = rr(c, 10 * 60, 19 * 60);
    int64_t utc_min = local_min - 60LL * jd_loadgen_tz_offset_h(c->traits->tz);
    int64_t sec = rr(c, 0, 59);
    c->t = c->day0 + day * DAY_MS + utc_min * 60000 + sec * 1000 + rr(c, 0, 999);
}

static void add(struct plan_ctx *c, enum jd_loadgen_type type, enum jd_loadgen_channel ch,
                unsigned detail)
{
    if (c->n == *c->cap) {
        *c->cap = *c->cap ? *c->cap * 2 : 32;
        *c->plan = jd_xrealloc(*c->plan, *c->cap * sizeof(**c->plan));
    }
    struct jd_loadgen_planned *p = &(*c->plan)[c->n++];
    p->at = c->t;
    p->type = (uint8_t)type;
    p->channel = (uint8_t)ch;
    p->detail = (uint16_t)detail;
    p->score = -1;
    p->has_amount = 0;
    p->amount = 0;
    /* the next event of the session follows 20 s to 4 min later */
    int64_t gap_s = rr(c, 20, 240);
    c->t += gap_s * 1000 + rr(c, 0, 999);
}

static enum jd_loadgen_channel device(struct plan_ctx *c)
{
    int app = c->traits->app_first ? chance(c, 75) : chance(c, 20);
    return app ? JD_LG_APP : JD_LG_WEB;
}

static unsigned sku(struct plan_ctx *c)
{
    return (unsigned)rr(c, 1, 9999);
}

static void browse(struct plan_ctx *c, int day, int signup)
{
    enum jd_loadgen_channel ch = device(c);
    session(c, day);
    if (ch == JD_LG_APP)
        add(c, JD_LG_APP_OPEN, ch, 0);
    if (signup)
        add(c, JD_LG_SIGNUP, ch, 0);
    if (ch == JD_LG_WEB || chance(c, 30))
        add(c, JD_LG_PAGE_VIEW, ch, (unsigned)rr(c, 0, N_PAGES - 1));
    for (int i = (int)rr(c, 1, 3); i > 0; i--)
        add(c, JD_LG_PRODUCT_VIEW, ch, sku(c));
}

static void email(struct plan_ctx *c, int day, unsigned campaign)
{
    session(c, day);
    add(c, JD_LG_EMAIL_OPEN, JD_LG_EMAIL, campaign);
    if (chance(c, 50)) {
        add(c, JD_LG_EMAIL_CLICK, JD_LG_EMAIL, campaign);
        add(c, JD_LG_PAGE_VIEW, JD_LG_WEB, (unsigned)rr(c, 0, N_PAGES - 1));
    }
}

static void cart(struct plan_ctx *c, int day, int checkout, enum jd_loadgen_channel ch)
{
    unsigned s = sku(c);
    session(c, day);
    if (ch == JD_LG_APP)
        add(c, JD_LG_APP_OPEN, ch, 0);
    add(c, JD_LG_PRODUCT_VIEW, ch, s);
    add(c, JD_LG_ADD_TO_CART, ch, s);
    if (checkout)
        add(c, JD_LG_CHECKOUT_STARTED, ch, s);
}

/* A purchase: online after a cart (minutes later, well within the hour that
 * makes a cart abandoned), or in a store. */
static void buy(struct plan_ctx *c, int day, double lo, double hi)
{
    double u = jd_loadgen_rng_unit(c->rng);
    double amount = money(lo + (hi - lo) * u * u);
    enum jd_loadgen_channel ch = JD_LG_STORE;
    unsigned s = sku(c);
    if (chance(c, 75)) {
        ch = device(c);
        cart(c, day, 1, ch);
        s = (*c->plan)[c->n - 1].detail;
    } else {
        session(c, day);
    }
    add(c, JD_LG_PURCHASE, ch, s);
    (*c->plan)[c->n - 1].has_amount = 1;
    (*c->plan)[c->n - 1].amount = amount;
}

static void feedback(struct plan_ctx *c, int day, int lo, int hi)
{
    session(c, day);
    add(c, JD_LG_FEEDBACK, chance(c, 70) ? JD_LG_EMAIL : JD_LG_APP, 0);
    (*c->plan)[c->n - 1].score = (int8_t)rr(c, lo, hi);
}

static int cmp_planned(const void *a, const void *b)
{
    const struct jd_loadgen_planned *x = a, *y = b;
    return (x->at > y->at) - (x->at < y->at);
}

size_t jd_loadgen_demo_plan(struct jd_loadgen_rng *rng, enum jd_loadgen_persona persona,
                            const struct jd_loadgen_traits *traits, int64_t day0_ms,
                            struct jd_loadgen_planned **plan, size_t *cap)
{
    struct plan_ctx c = {rng, traits, day0_ms, plan, cap, 0, 0};
    int day = 0;
    int signup = chance(&c, 50);

    switch (persona) {
    case JD_PERSONA_BROWSER:
        browse(&c, day, signup);
        for (int i = (int)rr(&c, 2, 5); i > 0; i--) {
            day += (int)rr(&c, 2, 8);
            if (chance(&c, 70))
                browse(&c, day, 0);
            else
                email(&c, day, (unsigned)rr(&c, 0, N_CAMPAIGNS - 1));
        }
        break;
    case JD_PERSONA_FIRST_BUYER:
        browse(&c, day, signup);
        if (chance(&c, 50)) {
            day += (int)rr(&c, 1, 6);
            browse(&c, day, 0);
        }
        day += (int)rr(&c, 1, 5);
        buy(&c, day, 15, 180);
        for (int i = (int)rr(&c, 0, 2); i > 0; i--) {
            day += (int)rr(&c, 5, 15);
            if (chance(&c, 50))
                browse(&c, day, 0);
            else
                email(&c, day, (unsigned)rr(&c, 0, N_CAMPAIGNS - 1));
        }
        break;
    case JD_PERSONA_REPEAT_BUYER:
        browse(&c, day, signup);
        day += (int)rr(&c, 1, 5);
        buy(&c, day, 15, 200);
        for (int i = (int)rr(&c, 1, 3); i > 0; i--) {
            if (chance(&c, 50)) {
                int later = (int)rr(&c, 3, 10);
                email(&c, day + later, (unsigned)rr(&c, 0, N_CAMPAIGNS - 1));
            }
            day += (int)rr(&c, 16, 21);
            buy(&c, day, 15, 200);
        }
        break;
    case JD_PERSONA_VIP:
        browse(&c, day, signup);
        day += (int)rr(&c, 1, 3);
        buy(&c, day, 60, 400);
        for (int i = (int)rr(&c, 2, 4); i > 0; i--) {
            day += (int)rr(&c, 3, 8);
            buy(&c, day, 60, 400);
        }
        day += (int)rr(&c, 2, 6);
        email(&c, day, CAMPAIGN_VIP_PREVIEW);
        break;
    case JD_PERSONA_UNHAPPY: {
        browse(&c, day, signup);
        day += (int)rr(&c, 1, 4);
        buy(&c, day, 20, 250);
        day += (int)rr(&c, 1, 5);
        session(&c, day);
        /* one PRNG draw per statement: argument order is unspecified in C */
        enum jd_loadgen_channel ch = chance(&c, 60) ? JD_LG_CALL_CENTER : JD_LG_SOCIAL;
        add(&c, JD_LG_SUPPORT_CONTACT, ch, (unsigned)rr(&c, 0, N_TOPICS - 1));
        day += (int)rr(&c, 1, 3);
        feedback(&c, day, 0, 6);
        break;
    }
    case JD_PERSONA_HAPPY:
        browse(&c, day, signup);
        day += (int)rr(&c, 1, 4);
        buy(&c, day, 20, 250);
        day += (int)rr(&c, 3, 10);
        feedback(&c, day, 9, 10);
        break;
    case JD_PERSONA_CART_ABANDONER:
    default: {
        browse(&c, day, signup);
        if (chance(&c, 50)) {
            day += (int)rr(&c, 1, 5);
            browse(&c, day, 0);
        }
        day += (int)rr(&c, 1, 5);
        int checkout = chance(&c, 50);
        cart(&c, day, checkout, device(&c));
        if (chance(&c, 50)) {
            day += (int)rr(&c, 2, 10);
            email(&c, day, (unsigned)rr(&c, 0, N_CAMPAIGNS - 1));
        }
        break;
    }
    }
    /* sessions are on increasing days and within daytime, so the plan is
     * already ordered; sorting keeps that true if a persona ever overlaps */
    qsort(*plan, c.n, sizeof(**plan), cmp_planned);
    return c.n;
}
