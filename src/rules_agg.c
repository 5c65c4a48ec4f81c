/*
 * rules_agg — what each aggregate slot means and how it changes. A slot is
 * a struct jd_agg (state.h) that state.c stores by its canonical key; this
 * file alone interprets its fields:
 *
 *   windowed count/sum/avg/min/max: a ring of `nb` buckets of `width` ms;
 *     slot i holds the bucket starting at base + i * width, with its value
 *     (sum, min or max) and event count; the ring (state.h) lists only the
 *     buckets that hold something;
 *     t = latest event time added (0 = never); v and n = the totals of the
 *     ring's values and counts (count/sum/avg), so that reading a window
 *     whose buckets are all current touches no bucket. A count keeps its
 *     values at zero (the counts are the value).
 *   lifetime sum/avg/min/max: v = value, n = events counted.
 *   last:    v = value, t = its event time, n = 1 once set.
 *   since:   t = latest event time.
 *   nfb:     t = latest A event, v = latest B event (ms, exact in a double).
 *   attr:    s = latest value, t = its event time.
 *
 * A windowed value at `now` counts buckets k (absolute index floor(time /
 * width)) with k > floor(now / width) - nb: an event stays counted for
 * between window - width and window. Events older than that are ignored.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static const char *kind_name(int k)
{
    static const char *const names[] = {"count", "sum",   "avg", "min", "max",
                                        "last",  "since", "nfb", "attr"};
    return names[k];
}

void jd_agg_make_key(const struct jd_aggspec *sp, char *buf, size_t size)
{
    char w[32] = "";
    if (sp->window > 0)
        jd_format_duration(sp->window, w, sizeof w);
    char field[160] = "";
    if (sp->field == F_AMOUNT)
        snprintf(field, sizeof field, "amount");
    else if (sp->field == F_SCORE)
        snprintf(field, sizeof field, "score");
    else if (sp->field == F_ATTR)
        snprintf(field, sizeof field, "attr.%s", sp->attr);
    switch (sp->kind) {
    case AGG_COUNT:
        if (sp->type)
            snprintf(buf, size, "count:%s:%s", sp->type, w);
        else
            snprintf(buf, size, "count_any:%s", w);
        break;
    case AGG_SUM:
    case AGG_AVG:
    case AGG_MIN:
    case AGG_MAX:
        if (sp->window > 0)
            snprintf(buf, size, "%s:%s:%s:%s", kind_name(sp->kind), sp->type, field, w);
        else
            snprintf(buf, size, "%s:%s:%s", kind_name(sp->kind), sp->type, field);
        break;
    case AGG_LAST:
        snprintf(buf, size, "last:%s:%s", sp->type, field);
        break;
    case AGG_SINCE:
        if (sp->type)
            snprintf(buf, size, "since:%s", sp->type);
        else
            snprintf(buf, size, "since_any");
        break;
    case AGG_NFB:
        snprintf(buf, size, "nfb:%s:%s:%s", sp->type, sp->type2, w);
        break;
    case AGG_ATTR:
        snprintf(buf, size, "attr:%s", sp->attr);
        break;
    default:
        snprintf(buf, size, "?");
        break;
    }
}

void jd_agg_shape(const struct jd_aggspec *sp, struct jd_agg *a)
{
    (void)sp;
    /* the ring is allocated by the first event in the window (ring_add):
     * most customers never fill most windows (a customer without purchases
     * has empty purchase windows); its size is the spec's nb */
    memset(a, 0, sizeof *a);
}

void jd_agg_free(struct jd_agg *a)
{
    if (!a)
        return;
    jd_cfree(a->ring); /* or a->s: the same pointer */
    memset(a, 0, sizeof *a);
}

const char *jd_event_attr_get(const struct jd_event *ev, const char *key)
{
    for (size_t i = 0; i < ev->nattrs && i < JD_EVENT_MAX_ATTRS; i++)
        if (ev->attr_keys[i] && jd_streq(ev->attr_keys[i], key))
            return ev->attr_vals[i];
    return NULL;
}

/* A numeric field of the event: 1 and *out, or 0 when absent or not a number. */
int jd_event_field(const struct jd_event *ev, uint8_t field, const char *attr, double *out)
{
    switch (field) {
    case F_AMOUNT:
        if (!ev->has_amount)
            return 0;
        *out = ev->amount;
        return 1;
    case F_SCORE:
        if (!ev->has_score)
            return 0;
        *out = ev->score;
        return 1;
    case F_ATTR: {
        const char *s = jd_event_attr_get(ev, attr);
        if (!s || !*s)
            return 0;
        char *end;
        double v = strtod(s, &end);
        if (*end != '\0' || !isfinite(v))
            return 0;
        *out = v;
        return 1;
    }
    default:
        return 0;
    }
}

static void ring_add(const struct jd_aggspec *sp, struct jd_agg *a, int64_t t, double x,
                     int64_t now)
{
    int64_t w = sp->width;
    int64_t K = sp->nb;
    if (!a->ring) {
        /* not allocated yet: start over */
        a->ring = jd_ring_new();
        a->t = 0;
    }
    int64_t kt = floordiv(t, w);
    if (kt <= floordiv(now, w) - K)
        return; /* older than the window: ignored */
    struct jd_ring *r = a->ring;
    int64_t kb0;
    if (a->t == 0) {
        r->len = 0;
        a->v = 0;
        a->n = 0;
        kb0 = kt - K + 1;
    } else {
        kb0 = floordiv(a->base, w);
        if (kt < kb0)
            return; /* before the ring (a newer event moved it on) */
        if (kt > kb0 + K - 1) {
            int64_t d = kt - (kb0 + K - 1);
            /* the ring moves on by d slots: buckets below d leave it */
            uint32_t drop = 0, j = 0;
            while (drop < r->len && (int64_t)r->b[drop].i < d)
                drop++;
            for (uint32_t k = drop; k < r->len; k++) {
                r->b[j] = r->b[k];
                r->b[j++].i -= (uint32_t)d;
            }
            r->len = j;
            kb0 += d;
            /* totals recomputed from the buckets, in order, so that sums
             * never drift and a replay computes the same doubles (the
             * buckets not listed are zeros, which add nothing) */
            a->v = 0;
            a->n = 0;
            for (uint32_t k = 0; k < r->len; k++) {
                if (sp->kind != AGG_COUNT)
                    a->v += r->b[k].v;
                a->n += r->b[k].n;
            }
        }
    }
    a->base = kb0 * w;
    struct jd_ring_bucket *bk = jd_ring_at(&a->ring, (uint32_t)(kt - kb0));
    if (sp->kind == AGG_COUNT) {
        /* a count needs no values: they stay zero */
    } else if (bk->n == 0) {
        bk->v = x;
    } else if (sp->kind == AGG_MIN) {
        if (x < bk->v)
            bk->v = x;
    } else if (sp->kind == AGG_MAX) {
        if (x > bk->v)
            bk->v = x;
    } else {
        bk->v += x;
    }
    if (bk->n < UINT32_MAX)
        bk->n++;
    if (sp->kind != AGG_COUNT)
        a->v += x;
    a->n += 1;
    if (t > a->t || a->t == 0)
        a->t = t ? t : 1;
}

void jd_agg_update(const struct jd_aggspec *sp, struct jd_agg *a, const struct jd_event *ev,
                   int64_t now)
{
    int64_t t = ev->occurred_at;
    double x = 1;
    switch (sp->kind) {
    case AGG_COUNT:
        ring_add(sp, a, t, 1, now);
        return;
    case AGG_SUM:
    case AGG_AVG:
    case AGG_MIN:
    case AGG_MAX:
        if (!jd_event_field(ev, sp->field, sp->attr, &x))
            return;
        if (sp->nb) {
            ring_add(sp, a, t, x, now);
            return;
        }
        if (a->n == 0)
            a->v = x;
        else if (sp->kind == AGG_MIN)
            a->v = x < a->v ? x : a->v;
        else if (sp->kind == AGG_MAX)
            a->v = x > a->v ? x : a->v;
        else
            a->v += x;
        a->n += 1;
        return;
    case AGG_LAST:
        if (!jd_event_field(ev, sp->field, sp->attr, &x))
            return;
        if (a->n == 0 || t >= a->t) {
            a->v = x;
            a->t = t;
            a->n = 1;
        }
        return;
    case AGG_SINCE:
        if (t > a->t)
            a->t = t;
        return;
    case AGG_NFB:
        if (jd_name_eq(ev->type, sp->type) && t > a->t)
            a->t = t;
        if (jd_name_eq(ev->type, sp->type2) && (double)t > a->v)
            a->v = (double)t;
        return;
    case AGG_ATTR: {
        const char *s = jd_event_attr_get(ev, sp->attr);
        if (!s || (a->s && t < a->t))
            return;
        a->t = t;
        if (a->s && strcmp(a->s, s) == 0)
            return;
        /* reuse the old string's memory when the new value fits */
        size_t n = strlen(s);
        if (!a->s || strlen(a->s) < n) {
            jd_cfree(a->s);
            a->s = jd_cmalloc(n + 1);
        }
        memcpy(a->s, s, n + 1);
        return;
    }
    default:
        return;
    }
}

static struct jd_val vnum(double n)
{
    struct jd_val v = {.t = V_NUM, .n = n};
    return v;
}

static struct jd_val vnull(void)
{
    struct jd_val v = {.t = V_NULL, .n = 0};
    return v;
}

struct jd_val jd_agg_value(const struct jd_aggspec *sp, const struct jd_agg *a, int64_t now)
{
    switch (sp->kind) {
    case AGG_COUNT:
    case AGG_SUM:
    case AGG_AVG:
    case AGG_MIN:
    case AGG_MAX:
        if (sp->nb) {
            double sum = 0, n = 0, best = 0;
            if (a->t != 0 && a->ring) {
                int64_t w = sp->width, K = sp->nb;
                int64_t lo = floordiv(now, w) - K + 1;
                int64_t kb0 = floordiv(a->base, w);
                const struct jd_ring *r = a->ring;
                int64_t from = lo > kb0 ? lo - kb0 : 0;
                if (from >= K) {
                    /* the whole ring has left the window */
                } else if (sp->kind == AGG_COUNT) {
                    /* the total, less the buckets that left the window
                     * (whole numbers: exact) */
                    n = a->n;
                    for (uint32_t k = 0; k < r->len && (int64_t)r->b[k].i < from; k++)
                        n -= r->b[k].n;
                } else if (from == 0 && sp->kind != AGG_MIN && sp->kind != AGG_MAX) {
                    sum = a->v;
                    n = a->n;
                } else {
                    for (uint32_t k = 0; k < r->len; k++) {
                        const struct jd_ring_bucket *bk = &r->b[k];
                        if ((int64_t)bk->i < from || bk->n == 0)
                            continue;
                        if (n == 0)
                            best = bk->v;
                        else if (sp->kind == AGG_MIN && bk->v < best)
                            best = bk->v;
                        else if (sp->kind == AGG_MAX && bk->v > best)
                            best = bk->v;
                        sum += bk->v;
                        n += bk->n;
                    }
                }
            }
            switch (sp->kind) {
            case AGG_COUNT:
                return vnum(n);
            case AGG_SUM:
                return vnum(sum);
            case AGG_AVG:
                return n ? vnum(sum / n) : vnull();
            default:
                return n ? vnum(best) : vnull();
            }
        }
        if (sp->kind == AGG_SUM)
            return vnum(a->v);
        if (a->n == 0)
            return vnull();
        return vnum(sp->kind == AGG_AVG ? a->v / a->n : a->v);
    case AGG_LAST:
        return a->n ? vnum(a->v) : vnull();
    case AGG_SINCE:
        if (a->t == 0)
            return vnull();
        return vnum((double)(now - a->t) / (double)JD_DAY_MS);
    case AGG_NFB: {
        struct jd_val v = {.t = V_BOOL, .n = 0};
        v.n = a->t != 0 && a->v < (double)a->t && now >= a->t + sp->window;
        return v;
    }
    case AGG_ATTR: {
        struct jd_val v = {.t = V_STR, .s = a->s};
        return a->s ? v : vnull();
    }
    default:
        return vnull();
    }
}

int64_t jd_agg_next_change(const struct jd_aggspec *sp, const struct jd_agg *a, int64_t now)
{
    if (sp->nb) {
        if (a->t == 0 || !a->ring)
            return INT64_MAX;
        int64_t w = sp->width, K = sp->nb;
        int64_t lo = floordiv(now, w) - K + 1;
        int64_t kb0 = floordiv(a->base, w);
        int64_t from = lo > kb0 ? lo - kb0 : 0;
        const struct jd_ring *r = a->ring;
        for (uint32_t k = 0; k < r->len; k++)
            if ((int64_t)r->b[k].i >= from && r->b[k].n != 0)
                return (kb0 + r->b[k].i + K) * w; /* the oldest live bucket leaves the window */
        return INT64_MAX;
    }
    if (sp->kind == AGG_NFB) {
        if (a->t != 0 && a->v < (double)a->t && now < a->t + sp->window)
            return a->t + sp->window;
        return INT64_MAX;
    }
    if (sp->kind == AGG_SINCE && sp->loose_days && a->t != 0) {
        /* read where no threshold is known: wake at whole days since the event */
        int64_t d = floordiv(now - a->t, JD_DAY_MS) + 1;
        return a->t + d * JD_DAY_MS;
    }
    return INT64_MAX;
}
