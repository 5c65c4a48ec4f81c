/*
 * bench_rules — microbenchmark of rule evaluation for the shipped rule set
 * (config/journeyd.conf, or the file given as argv[1]) over a realistic
 * event mix: 10,000 customers, a 90-day stream of page views, product
 * views, carts, purchases, feedback and the rest, with timers firing between
 * events as the daemon would.
 *
 * Each event does what the engine does per event: jd_customer_apply_core,
 * jd_rules_on_event, then jd_rules_next_change (to schedule the customer's
 * timer). Thread CPU time is taken per batch of 1,000 events (the machine
 * is shared); the line printed is the median (and p99) batch cost divided
 * by 1,000, and the mean wall time. Target: < 1 µs median.
 *
 *   ./build/bench/bench_rules [config/journeyd.conf [customers]]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journeyd/config.h"
#include "journeyd/rules.h"
#include "journeyd/state.h"

static size_t NCUST = 10000;
#define NEVENTS 1000000
#define BATCH 1000
#define DAY 86400000LL

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static const struct {
    const char *type;
    int weight; /* per mille */
} mix[] = {
    {"page_view", 380}, {"product_view", 200},   {"add_to_cart", 90}, {"checkout_started", 30},
    {"purchase", 60},   {"app_open", 90},        {"email_open", 70},  {"email_click", 30},
    {"feedback", 20},   {"support_contact", 10}, {"refund", 5},       {"reward_redeemed", 5},
    {"push_open", 10},
};

static const char *const channels[] = {"web", "app", "email", "store"};
static const char *const tzs[] = {"Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC"};

struct gen {
    uint32_t cust;
    struct jd_event ev;
};

/* CPU time of this thread: the machine is shared, and time spent
 * descheduled is not the rules' cost */
static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Fills gens[0..n) with the events numbered first.. of the stream. */
static void generate(struct gen *gens, size_t first, size_t n)
{
    int64_t start = 1700000000000LL;
    for (size_t j = 0; j < n; j++) {
        size_t i = first + j;
        struct gen *g = &gens[j];
        memset(g, 0, sizeof *g);
        g->cust = (uint32_t)(next_rand() % NCUST);
        int r = (int)(next_rand() % 1000), acc = 0;
        const char *type = mix[0].type;
        for (size_t k = 0; k < sizeof mix / sizeof mix[0]; k++) {
            acc += mix[k].weight;
            if (r < acc) {
                type = mix[k].type;
                break;
            }
        }
        struct jd_event *ev = &g->ev;
        ev->event_id = "e";
        /* as the engine does after decoding: well-known names are their
         * shared static copies (jd_state_known) */
        ev->type = jd_state_known(type) ? jd_state_known(type) : type;
        ev->channel = channels[next_rand() % 4];
        if (jd_state_known(ev->channel))
            ev->channel = jd_state_known(ev->channel);
        ev->occurred_at = start + (int64_t)i * (90 * DAY / NEVENTS);
        if (strcmp(type, "purchase") == 0 || strcmp(type, "refund") == 0) {
            ev->has_amount = 1;
            ev->amount = (double)(next_rand() % 20000) / 100.0;
        }
        if (strcmp(type, "feedback") == 0) {
            ev->has_score = 1;
            ev->score = (int32_t)(next_rand() % 11);
        }
        if (next_rand() % 4 == 0) {
            ev->nattrs = 2;
            ev->attr_keys[0] = "tz";
            ev->attr_vals[0] = tzs[next_rand() % 4];
            ev->attr_keys[1] = "sku";
            ev->attr_vals[1] = "SKU-12345";
        }
    }
}

/* The shipped rules, as in config/journeyd.conf, for runs without the file. */
static int builtin_rules(struct jd_ruleset **rs, struct jd_errors *errs)
{
    static struct jd_rule_src stages[] = {
        {"lapsed", "count('purchase') >= 1 && days_since_any() >= 60", "builtin", 1, 1, 1},
        {"at_risk", "count('purchase') >= 2 && days_since('purchase') > 45", "builtin", 2, 1, 1},
        {"loyal", "count('purchase', 180d) >= 5", "builtin", 3, 1, 1},
        {"repeat", "count('purchase') >= 2", "builtin", 4, 1, 1},
        {"first_purchase", "count('purchase') == 1", "builtin", 5, 1, 1},
        {"engaged", "count('purchase') == 0 && count_any(30d) >= 3", "builtin", 6, 1, 1},
        {"prospect", "true", "builtin", 7, 1, 1},
    };
    static struct jd_rule_src segs[] = {
        {"vip", "count('purchase', 30d) >= 3", "builtin", 8, 1, 1},
        {"cart_abandoner", "not_followed_by('add_to_cart', 'purchase', 1h)", "builtin", 9, 1, 1},
        {"lapsed", "count('purchase') >= 1 && days_since_any() >= 60", "builtin", 10, 1, 1},
        {"detractor", "last('feedback', score) <= 6", "builtin", 11, 1, 1},
    };
    static struct jd_payload_src vip_payload[] = {
        {"spend_30d", {"spend_30d", "sum('purchase', amount, 30d)", "builtin", 13, 1, 1}},
        {"last_channel", {"last_channel", "last_channel", "builtin", 14, 1, 1}},
    };
    static struct jd_trigger_src trigs[5];
    memset(trigs, 0, sizeof trigs);
    trigs[0].on = (struct jd_rule_src){"welcome_first_purchase",
                                       "event: event.type == 'purchase' && count('purchase') == 1",
                                       "builtin",
                                       12,
                                       1,
                                       1};
    trigs[1].on = (struct jd_rule_src){"vip_welcome", "enter:vip", "builtin", 13, 1, 1};
    trigs[1].payload = vip_payload;
    trigs[1].npayload = 2;
    trigs[2].on = (struct jd_rule_src){"service_recovery",
                                       "event: event.type == 'feedback' && event.score <= 6",
                                       "builtin",
                                       15,
                                       1,
                                       1};
    trigs[2].kind = JD_KIND_REENGAGEMENT;
    trigs[3].on =
        (struct jd_rule_src){"cart_reminder", "enter:cart_abandoner", "builtin", 16, 1, 1};
    trigs[3].kind = JD_KIND_REENGAGEMENT;
    trigs[4].on = (struct jd_rule_src){"winback", "enter:lapsed", "builtin", 17, 1, 1};
    trigs[4].kind = JD_KIND_REENGAGEMENT;
    struct jd_rules_src src = {stages, 7, segs, 4, trigs, 5};
    return jd_rules_compile(&src, rs, errs);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "config/journeyd.conf";
    if (argc > 2)
        NCUST = (size_t)strtoul(argv[2], NULL, 10);
    if (NCUST == 0)
        NCUST = 1;
    struct jd_errors errs;
    jd_errors_init(&errs);
    struct jd_config *cfg = NULL;
    FILE *f = fopen(path, "r");
    if (f) {
        fclose(f);
        cfg = jd_config_load(path, &errs);
    }
    struct jd_ruleset *rs = NULL;
    int rc = cfg ? jd_rules_compile(&cfg->rules, &rs, &errs) : builtin_rules(&rs, &errs);
    if (rc != 0 || (f && !cfg)) {
        jd_errors_print(&errs, stderr);
        return 1;
    }
    const char *source = cfg ? path : "builtin copy of the shipped rules";

    struct jd_customer **cs = calloc(NCUST, sizeof *cs);
    for (size_t i = 0; i < NCUST; i++) {
        char id[32];
        int n = snprintf(id, sizeof id, "customer-%zu", i);
        cs[i] = jd_customer_new(id, (size_t)n, 0, rs);
    }

    /* the stream is generated batch by batch, outside the timed region */
    struct gen *gens = calloc(BATCH, sizeof *gens);
    size_t nb = NEVENTS / BATCH;
    int64_t *batch_ns = calloc(nb, sizeof *batch_ns);
    int64_t wall_ns = 0;
    uint64_t evaluated = 0, fired = 0, timers_fired = 0;
    struct jd_eval_result res;
    for (size_t b = 0; b < nb; b++) {
        generate(gens, b * BATCH, BATCH);
        int64_t t0 = cpu_ns(), w0 = jd_monotonic_ns();
        for (size_t i = 0; i < BATCH; i++) {
            struct jd_customer *c = cs[gens[i].cust];
            const struct jd_event *ev = &gens[i].ev;
            int64_t now = ev->occurred_at;
            if (c->next_timer && c->next_timer <= now) {
                /* the timer the daemon would have fired meanwhile */
                jd_rules_on_time(rs, c, c->next_timer, &res);
                timers_fired++;
                fired += res.nfired;
            }
            jd_customer_apply_core(c, ev);
            jd_rules_on_event(rs, c, ev, now, &res);
            int64_t nc = jd_rules_next_change(rs, c, now);
            c->next_timer = nc == INT64_MAX ? 0 : nc;
            evaluated += res.evaluated;
            fired += res.nfired;
        }
        batch_ns[b] = cpu_ns() - t0;
        wall_ns += jd_monotonic_ns() - w0;
    }
    qsort(batch_ns, nb, sizeof *batch_ns, cmp_i64);
    double median = (double)batch_ns[nb / 2] / BATCH;
    double p99 = (double)batch_ns[nb * 99 / 100] / BATCH;
    printf("bench_rules: %s (version %s, %zu aggregates): %zu customers, %d events: median %.0f "
           "ns/event, p99 batch %.0f ns/event (thread CPU time; wall mean %.0f) for apply_core + "
           "on_event + next_change, timers included; %.1f rule evaluations/event, %" PRIu64
           " timers, %" PRIu64 " triggers fired\n",
           source, jd_rules_version(rs), jd_rules_naggs(rs), NCUST, NEVENTS, median, p99,
           (double)wall_ns / NEVENTS, (double)evaluated / NEVENTS, timers_fired, fired);

    for (size_t i = 0; i < NCUST; i++)
        jd_customer_destroy(cs[i]);
    free(cs);
    free(gens);
    free(batch_ns);
    jd_rules_destroy(rs);
    jd_config_destroy(cfg);
    jd_errors_free(&errs);
    return 0;
}
