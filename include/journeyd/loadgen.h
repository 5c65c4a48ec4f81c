/*
 * loadgen — the sample touchpoint generator behind journey-loadgen: a
 * deterministic stream of Touchpoint events (same options and seed -> the
 * same events, byte for byte) in one of two profiles:
 *   demo  — complete journeys of personas (browsers, first-time buyers,
 *           repeat buyers, VIPs, unhappy customers, happy feedback, cart
 *           abandoners), merged so that the stream is ordered by event time;
 *   bench — an event mix over N customers (uniform or Zipf-like), one event
 *           every time_step_ms of event time.
 * The generator owns the strings of the event it hands out; they stay valid
 * until the next call. No Kafka, no Avro here: the program encodes and sends.
 */
#ifndef JOURNEYD_LOADGEN_H
#define JOURNEYD_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

#include "journeyd/event.h"
#include "journeyd/util.h"

/* Deterministic PRNG: xoshiro256** seeded through splitmix64. */
struct jd_loadgen_rng {
    uint64_t s[4];
};

void jd_loadgen_rng_seed(struct jd_loadgen_rng *r, uint64_t seed);
uint64_t jd_loadgen_rng_next(struct jd_loadgen_rng *r);
/* Uniform in [0, n) (n > 0). */
uint64_t jd_loadgen_rng_below(struct jd_loadgen_rng *r, uint64_t n);
/* Uniform in [lo, hi] (lo <= hi). */
int64_t jd_loadgen_rng_range(struct jd_loadgen_rng *r, int64_t lo, int64_t hi);
/* Uniform in [0, 1). */
double jd_loadgen_rng_unit(struct jd_loadgen_rng *r);
uint64_t jd_loadgen_splitmix64(uint64_t *state);

enum jd_loadgen_profile { JD_LOADGEN_DEMO = 0, JD_LOADGEN_BENCH };

enum jd_loadgen_persona {
    JD_PERSONA_BROWSER = 0,
    JD_PERSONA_FIRST_BUYER,
    JD_PERSONA_REPEAT_BUYER,
    JD_PERSONA_VIP,
    JD_PERSONA_UNHAPPY,
    JD_PERSONA_HAPPY,
    JD_PERSONA_CART_ABANDONER,
    JD_PERSONA_COUNT
};
/* "browser", "first_time_buyer", "repeat_buyer", "vip", "unhappy", "happy_feedback",
 * "cart_abandoner". */
const char *jd_loadgen_persona_name(enum jd_loadgen_persona p);

struct jd_loadgen_opts {
    enum jd_loadgen_profile profile;
    uint64_t seed;
    uint64_t customers;
    uint64_t events;       /* 0: demo plays every journey to its end; bench: 10 per customer */
    int64_t start_time_ms; /* no event occurs before it */
    int64_t time_step_ms;  /* bench: event-time gap between consecutive events (>= 0) */
    double zipf_s;         /* bench: 0 uniform customers, > 0 Zipf exponent */
};

/* Fills the defaults of a profile (start_time_ms relative to now). */
void jd_loadgen_opts_default(struct jd_loadgen_opts *o, enum jd_loadgen_profile profile);

struct jd_loadgen;

/* NULL with errstr on invalid options. */
struct jd_loadgen *jd_loadgen_new(const struct jd_loadgen_opts *o, char *errstr, size_t errsize);
void jd_loadgen_destroy(struct jd_loadgen *g);

/* The next event into ev (strings owned by g until the next call): 1, or 0
 * when the stream is over. */
int jd_loadgen_next(struct jd_loadgen *g, struct jd_event *ev);

/* Persona of the customer of the last event (demo), or -1 (bench). */
int jd_loadgen_last_persona(const struct jd_loadgen *g);
/* Persona of customer number idx (demo), or -1. */
int jd_loadgen_customer_persona(const struct jd_loadgen *g, uint64_t idx);
/* Events handed out so far. */
uint64_t jd_loadgen_count(const struct jd_loadgen *g);
/* Distinct customers of the events handed out so far (the denominator of
 * the benchmark's bytes per customer). */
uint64_t jd_loadgen_customers_touched(const struct jd_loadgen *g);

/* Formats "cust-000123" (at least six digits). */
void jd_loadgen_customer_id(uint64_t idx, char *buf, size_t size);

/* Appends ev as one JSON object (no newline); persona < 0 is left out. */
void jd_loadgen_event_json(const struct jd_event *ev, int persona, struct jd_buf *out);

/* --- internal to the loadgen_*.c files --- */

/* One planned demo event, compact: attribute values are picked at emit time
 * from `detail`, so that a journey costs a few dozen bytes per event. */
struct jd_loadgen_planned {
    int64_t at; /* event time, ms */
    double amount;
    uint16_t detail; /* sku number, campaign, page, topic index — by type */
    uint8_t type;    /* enum jd_loadgen_type */
    uint8_t channel; /* enum jd_loadgen_channel */
    int8_t score;    /* -1: none */
    uint8_t has_amount;
};

enum jd_loadgen_type {
    JD_LG_PAGE_VIEW = 0,
    JD_LG_PRODUCT_VIEW,
    JD_LG_ADD_TO_CART,
    JD_LG_CHECKOUT_STARTED,
    JD_LG_PURCHASE,
    JD_LG_REFUND,
    JD_LG_APP_OPEN,
    JD_LG_EMAIL_OPEN,
    JD_LG_EMAIL_CLICK,
    JD_LG_PUSH_OPEN,
    JD_LG_SUPPORT_CONTACT,
    JD_LG_FEEDBACK,
    JD_LG_SIGNUP,
    JD_LG_TYPE_COUNT
};

enum jd_loadgen_channel {
    JD_LG_WEB = 0,
    JD_LG_APP,
    JD_LG_EMAIL,
    JD_LG_STORE,
    JD_LG_CALL_CENTER,
    JD_LG_SOCIAL,
    JD_LG_CHANNEL_COUNT
};

/* A customer's fixed traits, derived from its number and the seed. */
struct jd_loadgen_traits {
    int tz;        /* index into the time-zone table */
    int eur;       /* currency EUR (1) or USD (0) */
    int app_first; /* prefers the app over the web */
};

void jd_loadgen_traits_of(uint64_t seed, uint64_t idx, struct jd_loadgen_traits *t);
int jd_loadgen_tz_count(void);
const char *jd_loadgen_tz_name(int tz);
int jd_loadgen_tz_offset_h(int tz); /* standard-time UTC offset, hours */

/* Plans the whole journey of one demo customer: appends to *plan (grown
 * with jd_xrealloc) in event-time order, starting on or after day0_ms (a
 * midnight UTC). Returns the number of events. */
size_t jd_loadgen_demo_plan(struct jd_loadgen_rng *rng, enum jd_loadgen_persona persona,
                            const struct jd_loadgen_traits *traits, int64_t day0_ms,
                            struct jd_loadgen_planned **plan, size_t *cap);

#endif
