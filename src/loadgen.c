/*
 * loadgen — the deterministic touchpoint stream of journey-loadgen (see
 * loadgen.h). Owns: the PRNG, the per-customer persona and journey plans of
 * the demo profile (one flat array, merged by a heap on event time), the
 * Zipf table of the bench profile, and the string buffers of the event it
 * last handed out. Every random draw comes from xoshiro256** seeded from the
 * options, one draw per statement, so a stream depends on nothing else.
 */
#include "journeyd/loadgen.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAY_MS (24LL * 3600 * 1000)
#define GOLDEN 0x9E3779B97F4A7C15ULL

/* ---- PRNG ---- */

uint64_t jd_loadgen_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += GOLDEN);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void jd_loadgen_rng_seed(struct jd_loadgen_rng *r, uint64_t seed)
{
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = jd_loadgen_splitmix64(&sm);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t jd_loadgen_rng_next(struct jd_loadgen_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t jd_loadgen_rng_below(struct jd_loadgen_rng *r, uint64_t n)
{
    /* Lemire's multiply-shift: the bias is below 2^-40 for our n */
    return (uint64_t)(((unsigned __int128)jd_loadgen_rng_next(r) * n) >> 64);
}

int64_t jd_loadgen_rng_range(struct jd_loadgen_rng *r, int64_t lo, int64_t hi)
{
    return lo + (int64_t)jd_loadgen_rng_below(r, (uint64_t)(hi - lo) + 1);
}

double jd_loadgen_rng_unit(struct jd_loadgen_rng *r)
{
    return (double)(jd_loadgen_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- tables ---- */

static const char *const type_names[JD_LG_TYPE_COUNT] = {
    "page_view",       "product_view", "add_to_cart", "checkout_started", "purchase",
    "refund",          "app_open",     "email_open",  "email_click",      "push_open",
    "support_contact", "feedback",     "signup"};

static const char *const channel_names[JD_LG_CHANNEL_COUNT] = {"web",   "app",         "email",
                                                               "store", "call_center", "social"};

static const char *const persona_names[JD_PERSONA_COUNT] = {
    "browser", "first_time_buyer", "repeat_buyer",  "vip",
    "unhappy", "happy_feedback",   "cart_abandoner"};

/* smooth weighted round robin over these gives exact proportions, interleaved */
static const int persona_weights[JD_PERSONA_COUNT] = {22, 18, 15, 12, 12, 11, 10};

static const struct {
    const char *name;
    int offset_h;
} tzs[] = {{"Europe/Paris", 1},         {"Europe/Berlin", 1},     {"Europe/Madrid", 1},
           {"Europe/London", 0},        {"America/New_York", -5}, {"America/Chicago", -6},
           {"America/Los_Angeles", -8}, {"Asia/Tokyo", 9},        {"Australia/Sydney", 10}};
#define N_TZ ((int)(sizeof(tzs) / sizeof(tzs[0])))
#define N_EUROPE 4

static const char *const pages[] = {"/",     "/category/shoes", "/category/bags",
                                    "/sale", "/stores",         "/help"};
static const char *const campaigns[] = {"spring_sale", "new_arrivals",   "weekly_newsletter",
                                        "vip_preview", "loyalty_points", "back_in_stock"};
static const char *const topics[] = {"late_delivery", "damaged_item", "wrong_size", "billing",
                                     "refund_request"};

/* bench event mix, per mille */
static const struct {
    enum jd_loadgen_type type;
    int per_mille;
} bench_mix[] = {{JD_LG_PAGE_VIEW, 450},       {JD_LG_PRODUCT_VIEW, 200}, {JD_LG_ADD_TO_CART, 100},
                 {JD_LG_CHECKOUT_STARTED, 20}, {JD_LG_PURCHASE, 50},      {JD_LG_APP_OPEN, 70},
                 {JD_LG_EMAIL_OPEN, 30},       {JD_LG_EMAIL_CLICK, 40},   {JD_LG_FEEDBACK, 20},
                 {JD_LG_SUPPORT_CONTACT, 10},  {JD_LG_REFUND, 5},         {JD_LG_PUSH_OPEN, 5}};
#define N_MIX ((int)(sizeof(bench_mix) / sizeof(bench_mix[0])))

const char *jd_loadgen_persona_name(enum jd_loadgen_persona p)
{
    return (unsigned)p < JD_PERSONA_COUNT ? persona_names[p] : "unknown";
}

int jd_loadgen_tz_count(void)
{
    return N_TZ;
}

const char *jd_loadgen_tz_name(int tz)
{
    return tzs[tz].name;
}

int jd_loadgen_tz_offset_h(int tz)
{
    return tzs[tz].offset_h;
}

void jd_loadgen_traits_of(uint64_t seed, uint64_t idx, struct jd_loadgen_traits *t)
{
    uint64_t sm = seed ^ ((idx + 1) * GOLDEN);
    uint64_t h = jd_loadgen_splitmix64(&sm);
    t->tz = (int)(h % (uint64_t)N_TZ);
    t->eur = t->tz < N_EUROPE;
    t->app_first = (h >> 32) % 100 < 40;
}

void jd_loadgen_customer_id(uint64_t idx, char *buf, size_t size)
{
    snprintf(buf, size, "cust-%06" PRIu64, idx);
}

/* ---- the generator ---- */

struct jd_loadgen {
    struct jd_loadgen_opts o;
    uint64_t limit; /* events to hand out */
    uint64_t count;
    int last_persona;
    uint8_t *touched; /* one bit per customer */
    uint64_t ntouched;

    /* demo: every customer's journey, planned at _new */
    uint8_t *persona;
    struct jd_loadgen_planned *plan; /* all journeys, customer after customer */
    size_t *plan_off;                /* customer -> first event in plan */
    uint32_t *plan_len;
    uint32_t *plan_pos;
    uint32_t *heap; /* customers with events left, by (next event time, customer) */
    size_t heap_n;

    /* bench */
    struct jd_loadgen_rng rng;
    double *zipf_cdf;

    /* the strings of the last event */
    char event_id[48];
    char customer_id[32];
    char detail[24];
};

void jd_loadgen_opts_default(struct jd_loadgen_opts *o, enum jd_loadgen_profile profile)
{
    /* midnight UTC today: the same seed gives the same bytes all day long */
    int64_t today = jd_now_ms() / DAY_MS * DAY_MS;
    memset(o, 0, sizeof(*o));
    o->profile = profile;
    o->seed = 42;
    if (profile == JD_LOADGEN_DEMO) {
        o->customers = 300;
        /* journeys start over 20 days and last up to ~70: the stream ends near now */
        o->start_time_ms = today - 90 * DAY_MS;
        o->time_step_ms = 0;
    } else {
        o->customers = 100000;
        o->start_time_ms = today - DAY_MS;
        o->time_step_ms = 1;
    }
}

static int heap_less(const struct jd_loadgen *g, uint32_t a, uint32_t b)
{
    int64_t ta = g->plan[g->plan_off[a] + g->plan_pos[a]].at;
    int64_t tb = g->plan[g->plan_off[b] + g->plan_pos[b]].at;
    return ta < tb || (ta == tb && a < b);
}

static void heap_down(struct jd_loadgen *g, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < g->heap_n && heap_less(g, g->heap[l], g->heap[m]))
            m = l;
        if (r < g->heap_n && heap_less(g, g->heap[r], g->heap[m]))
            m = r;
        if (m == i)
            return;
        uint32_t t = g->heap[i];
        g->heap[i] = g->heap[m];
        g->heap[m] = t;
        i = m;
    }
}

static void demo_setup(struct jd_loadgen *g)
{
    uint64_t n = g->o.customers;
    int64_t day0 = (g->o.start_time_ms + DAY_MS - 1) / DAY_MS * DAY_MS;
    int credit[JD_PERSONA_COUNT] = {0};
    int total = 0;
    size_t plan_cap = 0, scratch_cap = 0, used = 0;
    struct jd_loadgen_planned *scratch = NULL;

    for (int p = 0; p < JD_PERSONA_COUNT; p++)
        total += persona_weights[p];
    g->persona = jd_xmalloc(n);
    g->plan_off = jd_xmalloc(n * sizeof(*g->plan_off));
    g->plan_len = jd_xmalloc(n * sizeof(*g->plan_len));
    g->plan_pos = jd_xcalloc(n, sizeof(*g->plan_pos));
    g->heap = jd_xmalloc(n * sizeof(*g->heap));

    for (uint64_t i = 0; i < n; i++) {
        int best = 0;
        for (int p = 0; p < JD_PERSONA_COUNT; p++) {
            credit[p] += persona_weights[p];
            if (credit[p] > credit[best])
                best = p;
        }
        credit[best] -= total;
        g->persona[i] = (uint8_t)best;

        struct jd_loadgen_rng crng;
        struct jd_loadgen_traits traits;
        jd_loadgen_rng_seed(&crng, g->o.seed ^ ((i + 1) * GOLDEN) ^ 0xD3A0ULL);
        jd_loadgen_traits_of(g->o.seed, i, &traits);
        int64_t first_day = jd_loadgen_rng_range(&crng, 0, 20);
        size_t len = jd_loadgen_demo_plan(&crng, (enum jd_loadgen_persona)best, &traits,
                                          day0 + first_day * DAY_MS, &scratch, &scratch_cap);
        if (used + len > plan_cap) {
            plan_cap = (used + len) * 2;
            g->plan = jd_xrealloc(g->plan, plan_cap * sizeof(*g->plan));
        }
        memcpy(g->plan + used, scratch, len * sizeof(*scratch));
        g->plan_off[i] = used;
        g->plan_len[i] = (uint32_t)len;
        used += len;
        if (len > 0)
            g->heap[g->heap_n++] = (uint32_t)i;
    }
    free(scratch);
    for (size_t i = g->heap_n / 2; i-- > 0;)
        heap_down(g, i);
}

static void zipf_setup(struct jd_loadgen *g)
{
    uint64_t n = g->o.customers;
    double sum = 0;
    g->zipf_cdf = jd_xmalloc(n * sizeof(double));
    for (uint64_t k = 0; k < n; k++) {
        sum += 1.0 / pow((double)(k + 1), g->o.zipf_s);
        g->zipf_cdf[k] = sum;
    }
    for (uint64_t k = 0; k < n; k++)
        g->zipf_cdf[k] /= sum;
}

struct jd_loadgen *jd_loadgen_new(const struct jd_loadgen_opts *o, char *errstr, size_t errsize)
{
    if (o->customers == 0 || o->customers > 100000000ULL) {
        snprintf(errstr, errsize, "customers must be between 1 and 100000000");
        return NULL;
    }
    if (o->time_step_ms < 0 || o->zipf_s < 0 || o->zipf_s > 10) {
        snprintf(errstr, errsize, "time step must be >= 0 and the Zipf exponent within [0, 10]");
        return NULL;
    }
    if (o->profile != JD_LOADGEN_DEMO && o->profile != JD_LOADGEN_BENCH) {
        snprintf(errstr, errsize, "unknown profile");
        return NULL;
    }
    if (o->profile == JD_LOADGEN_DEMO && o->customers > 1000000) {
        snprintf(errstr, errsize,
                 "the demo profile plans every journey in memory: at most 1000000 customers");
        return NULL;
    }
    struct jd_loadgen *g = jd_xcalloc(1, sizeof(*g));
    g->o = *o;
    g->last_persona = -1;
    g->touched = jd_xcalloc(o->customers / 8 + 1, 1);
    if (o->profile == JD_LOADGEN_DEMO) {
        g->limit = o->events ? o->events : UINT64_MAX;
        demo_setup(g);
    } else {
        g->limit = o->events ? o->events : o->customers * 10;
        jd_loadgen_rng_seed(&g->rng, o->seed);
        if (o->zipf_s > 0)
            zipf_setup(g);
    }
    return g;
}

void jd_loadgen_destroy(struct jd_loadgen *g)
{
    if (!g)
        return;
    free(g->touched);
    free(g->persona);
    free(g->plan);
    free(g->plan_off);
    free(g->plan_len);
    free(g->plan_pos);
    free(g->heap);
    free(g->zipf_cdf);
    free(g);
}

/* Turns a planned event of customer idx into ev, with strings in g. */
static void emit(struct jd_loadgen *g, uint64_t idx, const struct jd_loadgen_planned *p,
                 struct jd_event *ev)
{
    struct jd_loadgen_traits traits;
    uint8_t bit = (uint8_t)(1u << (idx & 7));
    if (!(g->touched[idx >> 3] & bit)) {
        g->touched[idx >> 3] |= bit;
        g->ntouched++;
    }
    jd_loadgen_traits_of(g->o.seed, idx, &traits);
    snprintf(g->event_id, sizeof(g->event_id), "ev-%" PRIx64 "-%010" PRIu64, g->o.seed, g->count);
    jd_loadgen_customer_id(idx, g->customer_id, sizeof(g->customer_id));

    memset(ev, 0, sizeof(*ev));
    ev->event_id = g->event_id;
    ev->customer_id = g->customer_id;
    ev->type = type_names[p->type];
    ev->channel = channel_names[p->channel];
    ev->occurred_at = p->at;
    if (p->has_amount) {
        ev->has_amount = 1;
        ev->amount = p->amount;
        ev->currency = traits.eur ? "EUR" : "USD";
    }
    if (p->score >= 0) {
        ev->has_score = 1;
        ev->score = p->score;
    }
    ev->partition = -1;
    ev->offset = -1;

    const char *key = NULL, *val = NULL;
    switch (p->type) {
    case JD_LG_PRODUCT_VIEW:
    case JD_LG_ADD_TO_CART:
    case JD_LG_CHECKOUT_STARTED:
    case JD_LG_PURCHASE:
    case JD_LG_REFUND:
        snprintf(g->detail, sizeof(g->detail), "SKU-%05u", p->detail);
        key = "sku";
        val = g->detail;
        break;
    case JD_LG_PAGE_VIEW:
        key = "page";
        val = pages[p->detail % (sizeof(pages) / sizeof(pages[0]))];
        break;
    case JD_LG_EMAIL_OPEN:
    case JD_LG_EMAIL_CLICK:
    case JD_LG_PUSH_OPEN:
        key = "campaign";
        val = campaigns[p->detail % (sizeof(campaigns) / sizeof(campaigns[0]))];
        break;
    case JD_LG_SUPPORT_CONTACT:
        key = "topic";
        val = topics[p->detail % (sizeof(topics) / sizeof(topics[0]))];
        break;
    case JD_LG_FEEDBACK:
        key = "survey";
        val = "nps";
        break;
    default:
        break;
    }
    if (key) {
        ev->attr_keys[ev->nattrs] = key;
        ev->attr_vals[ev->nattrs++] = val;
    }
    ev->attr_keys[ev->nattrs] = "tz";
    ev->attr_vals[ev->nattrs++] = tzs[traits.tz].name;
}

static int demo_next(struct jd_loadgen *g, struct jd_event *ev)
{
    if (g->heap_n == 0)
        return 0;
    uint32_t c = g->heap[0];
    const struct jd_loadgen_planned *p = &g->plan[g->plan_off[c] + g->plan_pos[c]];
    emit(g, c, p, ev);
    g->last_persona = g->persona[c];
    if (++g->plan_pos[c] == g->plan_len[c])
        g->heap[0] = g->heap[--g->heap_n];
    heap_down(g, 0);
    return 1;
}

static uint64_t bench_customer(struct jd_loadgen *g)
{
    if (!g->zipf_cdf)
        return jd_loadgen_rng_below(&g->rng, g->o.customers);
    double u = jd_loadgen_rng_unit(&g->rng);
    uint64_t lo = 0, hi = g->o.customers - 1;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (g->zipf_cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static enum jd_loadgen_channel pick2(struct jd_loadgen *g, enum jd_loadgen_channel a, int pct_a,
                                     enum jd_loadgen_channel b)
{
    return (int)jd_loadgen_rng_below(&g->rng, 100) < pct_a ? a : b;
}

static void bench_next(struct jd_loadgen *g, struct jd_event *ev)
{
    struct jd_loadgen_planned p = {0};
    uint64_t idx = bench_customer(g);
    int roll = (int)jd_loadgen_rng_below(&g->rng, 1000);
    int i = 0;
    while (i < N_MIX - 1 && roll >= bench_mix[i].per_mille) {
        roll -= bench_mix[i].per_mille;
        i++;
    }
    p.type = (uint8_t)bench_mix[i].type;
    p.at = g->o.start_time_ms + (int64_t)g->count * g->o.time_step_ms;
    p.score = -1;
    switch (bench_mix[i].type) {
    case JD_LG_PAGE_VIEW:
        p.channel = JD_LG_WEB;
        p.detail = (uint16_t)jd_loadgen_rng_below(&g->rng, 6);
        break;
    case JD_LG_PRODUCT_VIEW:
    case JD_LG_ADD_TO_CART:
    case JD_LG_CHECKOUT_STARTED:
        p.channel = pick2(g, JD_LG_WEB, 60, JD_LG_APP);
        p.detail = (uint16_t)jd_loadgen_rng_range(&g->rng, 1, 9999);
        break;
    case JD_LG_PURCHASE:
    case JD_LG_REFUND: {
        int roll_ch = (int)jd_loadgen_rng_below(&g->rng, 100);
        p.channel = roll_ch < 50 ? JD_LG_WEB : roll_ch < 80 ? JD_LG_APP : JD_LG_STORE;
        p.detail = (uint16_t)jd_loadgen_rng_range(&g->rng, 1, 9999);
        double u = jd_loadgen_rng_unit(&g->rng);
        p.has_amount = 1;
        p.amount = floor((10.0 + 190.0 * u * u) * 100.0 + 0.5) / 100.0;
        break;
    }
    case JD_LG_APP_OPEN:
    case JD_LG_PUSH_OPEN:
        p.channel = JD_LG_APP;
        p.detail = (uint16_t)jd_loadgen_rng_below(&g->rng, 6);
        break;
    case JD_LG_EMAIL_OPEN:
    case JD_LG_EMAIL_CLICK:
        p.channel = JD_LG_EMAIL;
        p.detail = (uint16_t)jd_loadgen_rng_below(&g->rng, 6);
        break;
    case JD_LG_FEEDBACK: {
        p.channel = pick2(g, JD_LG_EMAIL, 70, JD_LG_APP);
        /* 30 % detractors (0-6), 30 % passives (7-8), 40 % promoters (9-10) */
        int roll_s = (int)jd_loadgen_rng_below(&g->rng, 100);
        if (roll_s < 30)
            p.score = (int8_t)jd_loadgen_rng_range(&g->rng, 0, 6);
        else if (roll_s < 60)
            p.score = (int8_t)jd_loadgen_rng_range(&g->rng, 7, 8);
        else
            p.score = (int8_t)jd_loadgen_rng_range(&g->rng, 9, 10);
        break;
    }
    case JD_LG_SUPPORT_CONTACT:
        p.channel = pick2(g, JD_LG_CALL_CENTER, 70, JD_LG_SOCIAL);
        p.detail = (uint16_t)jd_loadgen_rng_below(&g->rng, 5);
        break;
    default:
        p.channel = JD_LG_WEB;
        break;
    }
    emit(g, idx, &p, ev);
}

int jd_loadgen_next(struct jd_loadgen *g, struct jd_event *ev)
{
    if (g->count >= g->limit)
        return 0;
    if (g->o.profile == JD_LOADGEN_DEMO) {
        if (!demo_next(g, ev))
            return 0;
    } else {
        bench_next(g, ev);
    }
    g->count++;
    return 1;
}

int jd_loadgen_last_persona(const struct jd_loadgen *g)
{
    return g->last_persona;
}

int jd_loadgen_customer_persona(const struct jd_loadgen *g, uint64_t idx)
{
    if (!g->persona || idx >= g->o.customers)
        return -1;
    return g->persona[idx];
}

uint64_t jd_loadgen_count(const struct jd_loadgen *g)
{
    return g->count;
}

uint64_t jd_loadgen_customers_touched(const struct jd_loadgen *g)
{
    return g->ntouched;
}

static void json_str(struct jd_buf *out, const char *s)
{
    jd_buf_puts(out, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            jd_buf_printf(out, "\\%c", *p);
        else if (*p < 0x20)
            jd_buf_printf(out, "\\u%04x", *p);
        else
            jd_buf_append(out, p, 1);
    }
    jd_buf_puts(out, "\"");
}

void jd_loadgen_event_json(const struct jd_event *ev, int persona, struct jd_buf *out)
{
    jd_buf_puts(out, "{\"event_id\":");
    json_str(out, ev->event_id);
    jd_buf_puts(out, ",\"customer_id\":");
    json_str(out, ev->customer_id);
    jd_buf_puts(out, ",\"type\":");
    json_str(out, ev->type);
    jd_buf_puts(out, ",\"channel\":");
    json_str(out, ev->channel);
    jd_buf_printf(out, ",\"occurred_at\":%" PRId64, ev->occurred_at);
    if (ev->has_amount)
        jd_buf_printf(out, ",\"amount\":%.2f", ev->amount);
    else
        jd_buf_puts(out, ",\"amount\":null");
    jd_buf_puts(out, ",\"currency\":");
    if (ev->currency)
        json_str(out, ev->currency);
    else
        jd_buf_puts(out, "null");
    if (ev->has_score)
        jd_buf_printf(out, ",\"score\":%d", (int)ev->score);
    else
        jd_buf_puts(out, ",\"score\":null");
    jd_buf_puts(out, ",\"attributes\":{");
    for (size_t i = 0; i < ev->nattrs; i++) {
        if (i)
            jd_buf_puts(out, ",");
        json_str(out, ev->attr_keys[i]);
        jd_buf_puts(out, ":");
        json_str(out, ev->attr_vals[i]);
    }
    jd_buf_puts(out, "}");
    if (persona >= 0) {
        jd_buf_puts(out, ",\"persona\":");
        json_str(out, jd_loadgen_persona_name((enum jd_loadgen_persona)persona));
    }
    jd_buf_puts(out, "}");
}
