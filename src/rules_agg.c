/*
 * rules_agg — what each aggregate slot means and how it changes. A slot is
 * a struct jd_agg (state.h) that state.c stores by its canonical key; this
 * file alone interprets its fields:
 *
 *   windowed count/sum/avg/min/max: a ring of `nb` buckets of `width` ms;
 *     slot i holds the bucket starting at base + i * width; buckets[i] is
 *     its value (sum, min or max), buckets[nb + i] its event count;
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
    memset(a, 0, sizeof *a);
    if (sp->nb) {
        a->nbuckets = sp->nb;
        a->buckets = jd_xcalloc(2 * (size_t)sp->nb, sizeof(double));
    }
}

void jd_agg_free(struct jd_agg *a)
{
    if (!a)
        return;
    free(a->buckets);
    free(a->s);
    memset(a, 0, sizeof *a);
}

const char *jd_event_attr_get(const struct jd_event *ev, const char *key)
{
    for (size_t i = 0; i < ev->nattrs && i < JD_EVENT_MAX_ATTRS; i++)
        if (ev->attr_keys[i] && strcmp(ev->attr_keys[i], key) == 0)
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
    if (a->nbuckets != sp->nb || !a->buckets) {
        /* a slot from another shape (corrupt or foreign): start over */
        free(a->buckets);
        a->nbuckets = sp->nb;
        a->buckets = jd_xcalloc(2 * (size_t)sp->nb, sizeof(double));
        a->t = 0;
    }
    int64_t kt = floordiv(t, w);
    if (kt <= floordiv(now, w) - K)
        return; /* older than the window: ignored */
    double *val = a->buckets, *cnt = a->buckets + K;
    int64_t kb0;
    if (a->t == 0) {
        memset(a->buckets, 0, 2 * (size_t)K * sizeof(double));
        a->v = 0;
        a->n = 0;
        kb0 = kt - K + 1;
    } else {
        kb0 = floordiv(a->base, w);
        if (kt < kb0)
            return; /* before the ring (a newer event moved it on) */
        if (kt > kb0 + K - 1) {
            int64_t d = kt - (kb0 + K - 1);
            if (d >= K) {
                memset(a->buckets, 0, 2 * (size_t)K * sizeof(double));
            } else {
                size_t keep = (size_t)(K - d);
                if (sp->kind != AGG_COUNT) {
                    memmove(val, val + d, keep * sizeof(double));
                    memset(val + keep, 0, (size_t)d * sizeof(double));
                }
                memmove(cnt, cnt + d, keep * sizeof(double));
                memset(cnt + keep, 0, (size_t)d * sizeof(double));
            }
            kb0 += d;
            /* totals recomputed from the buckets, in order, so that sums
             * never drift and a replay computes the same doubles */
            a->v = 0;
            a->n = 0;
            for (int64_t i = 0; i < K; i++) {
                if (sp->kind != AGG_COUNT)
                    a->v += val[i];
                a->n += cnt[i];
            }
        }
    }
    a->base = kb0 * w;
    size_t i = (size_t)(kt - kb0);
    if (sp->kind == AGG_COUNT) {
        /* a count needs no values: its value half stays zero (one cache
         * line less per event, and stored compactly) */
    } else if (cnt[i] == 0) {
        val[i] = x;
    } else if (sp->kind == AGG_MIN) {
        if (x < val[i])
            val[i] = x;
    } else if (sp->kind == AGG_MAX) {
        if (x > val[i])
            val[i] = x;
    } else {
        val[i] += x;
    }
    cnt[i] += 1;
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
        if (strcmp(ev->type, sp->type) == 0 && t > a->t)
            a->t = t;
        if (strcmp(ev->type, sp->type2) == 0 && (double)t > a->v)
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
            free(a->s);
            a->s = jd_xmalloc(n + 1);
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
    struct jd_val v = {V_NUM, n, NULL};
    return v;
}

static struct jd_val vnull(void)
{
    struct jd_val v = {V_NULL, 0, NULL};
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
            if (a->t != 0 && a->nbuckets == sp->nb && a->buckets) {
                int64_t w = sp->width, K = sp->nb;
                int64_t lo = floordiv(now, w) - K + 1;
                int64_t kb0 = floordiv(a->base, w);
                const double *val = a->buckets, *cnt = a->buckets + K;
                int64_t from = lo > kb0 ? lo - kb0 : 0;
                if (from >= K) {
                    /* the whole ring has left the window */
                } else if (sp->kind == AGG_COUNT) {
                    /* the total, less the buckets that left the window
                     * (whole numbers: exact) */
                    n = a->n;
                    for (int64_t i = 0; i < from; i++)
                        n -= cnt[i];
                } else if (from == 0 && sp->kind != AGG_MIN && sp->kind != AGG_MAX) {
                    sum = a->v;
                    n = a->n;
                } else {
                    for (int64_t i = from; i < K; i++) {
                        if (cnt[i] == 0)
                            continue;
                        if (n == 0)
                            best = val[i];
                        else if (sp->kind == AGG_MIN && val[i] < best)
                            best = val[i];
                        else if (sp->kind == AGG_MAX && val[i] > best)
                            best = val[i];
                        sum += val[i];
                        n += cnt[i];
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
        struct jd_val v = {V_BOOL, 0, NULL};
        v.n = a->t != 0 && a->v < (double)a->t && now >= a->t + sp->window;
        return v;
    }
    case AGG_ATTR: {
        struct jd_val v = {V_STR, 0, a->s};
        return a->s ? v : vnull();
    }
    default:
        return vnull();
    }
}

int64_t jd_agg_next_change(const struct jd_aggspec *sp, const struct jd_agg *a, int64_t now)
{
    if (sp->nb) {
        if (a->t == 0 || a->nbuckets != sp->nb || !a->buckets)
            return INT64_MAX;
        int64_t w = sp->width, K = sp->nb;
        int64_t lo = floordiv(now, w) - K + 1;
        int64_t kb0 = floordiv(a->base, w);
        const double *cnt = a->buckets + K;
        for (int64_t i = lo > kb0 ? lo - kb0 : 0; i < K; i++)
            if (cnt[i] != 0)
                return (kb0 + i + K) * w; /* the oldest live bucket leaves the window */
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
