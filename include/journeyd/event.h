/*
 * event — one decoded touchpoint. Strings point into the decoder's reusable
 * buffers: valid until the next decode with the same codec.
 */
#ifndef JOURNEYD_EVENT_H
#define JOURNEYD_EVENT_H

#include <stddef.h>
#include <stdint.h>

#define JD_EVENT_MAX_ATTRS 32

struct jd_event {
    const char *event_id;
    const char *customer_id;
    const char *type;
    const char *channel;
    int64_t occurred_at; /* ms since the epoch */
    int has_amount;
    double amount;
    const char *currency; /* NULL when absent */
    int has_score;
    int32_t score;
    size_t nattrs;
    const char *attr_keys[JD_EVENT_MAX_ATTRS];
    const char *attr_vals[JD_EVENT_MAX_ATTRS];
    /* where it came from */
    int32_t partition;
    int64_t offset;
};

/* Value of attribute `key`, or NULL. */
const char *jd_event_attr(const struct jd_event *ev, const char *key);

#endif
