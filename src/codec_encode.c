/*
 * codec_encode — struct jd_trigger / struct jd_event -> Avro binary, with or
 * without Confluent framing, appended to a caller's jd_buf. Each encoder
 * fills one value the codec built at setup (reset per call, so avro-c keeps
 * its storage) and avro-c writes it straight into the output buffer through
 * one memory writer; when the buffer is too small it is grown and the write
 * repeated. Map entries are written in insertion order, so the same input
 * always gives the same bytes.
 */
#include "codec_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define JD_FRAME_LEN 5
#define JD_ENCODE_MAX (64u << 20)

static int set_field_string(avro_value_t *rec, int idx, const char *s, const char *name,
                            char *errstr, size_t errsize)
{
    avro_value_t v;
    if (!s) {
        snprintf(errstr, errsize, "%s is required", name);
        return -1;
    }
    if (avro_value_get_by_index(rec, (size_t)idx, &v, NULL) != 0 ||
        avro_value_set_string_len(&v, s, strlen(s) + 1) != 0) {
        snprintf(errstr, errsize, "%s: %s", name, avro_strerror());
        return -1;
    }
    return 0;
}

static int set_field_long(avro_value_t *rec, int idx, int64_t x, const char *name, char *errstr,
                          size_t errsize)
{
    avro_value_t v;
    if (avro_value_get_by_index(rec, (size_t)idx, &v, NULL) != 0 ||
        avro_value_set_long(&v, x) != 0) {
        snprintf(errstr, errsize, "%s: %s", name, avro_strerror());
        return -1;
    }
    return 0;
}

/* Selects the branch of a ["null", X] field: null when present == 0,
 * otherwise X, returned in *branch for the caller to set. */
static int set_field_opt(avro_value_t *rec, int idx, const struct jd_opt_branches *ob, int present,
                         avro_value_t *branch, const char *name, char *errstr, size_t errsize)
{
    avro_value_t v, tmp;
    if (!branch)
        branch = &tmp;
    if (avro_value_get_by_index(rec, (size_t)idx, &v, NULL) != 0 ||
        avro_value_set_branch(&v, present ? ob->value_branch : ob->null_branch, branch) != 0 ||
        (!present && avro_value_set_null(branch) != 0)) {
        snprintf(errstr, errsize, "%s: %s", name, avro_strerror());
        return -1;
    }
    return 0;
}

static int set_opt_string(avro_value_t *rec, int idx, const struct jd_opt_branches *ob,
                          const char *s, const char *name, char *errstr, size_t errsize)
{
    avro_value_t branch;
    if (set_field_opt(rec, idx, ob, s != NULL, &branch, name, errstr, errsize) != 0)
        return -1;
    if (s && avro_value_set_string_len(&branch, s, strlen(s) + 1) != 0) {
        snprintf(errstr, errsize, "%s: %s", name, avro_strerror());
        return -1;
    }
    return 0;
}

static int set_map(avro_value_t *rec, int idx, size_t n, const char *const *keys,
                   const char *const *vals, char *errstr, size_t errsize)
{
    avro_value_t map, v;
    if (avro_value_get_by_index(rec, (size_t)idx, &map, NULL) != 0) {
        snprintf(errstr, errsize, "attributes: %s", avro_strerror());
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!keys[i] || !vals[i]) {
            snprintf(errstr, errsize, "attribute %zu has a NULL key or value", i);
            return -1;
        }
        if (avro_value_add(&map, keys[i], &v, NULL, NULL) != 0 ||
            avro_value_set_string_len(&v, vals[i], strlen(vals[i]) + 1) != 0) {
            snprintf(errstr, errsize, "attribute %s: %s", keys[i], avro_strerror());
            return -1;
        }
    }
    return 0;
}

/* Writes v (framed with schema_id when >= 0) at the end of out. */
static int write_value(struct jd_codec *c, avro_value_t *v, int schema_id, struct jd_buf *out,
                       char *errstr, size_t errsize)
{
    size_t start = out->len;
    size_t hdr = schema_id >= 0 ? JD_FRAME_LEN : 0;
    size_t room = out->cap > start + hdr + 1 ? out->cap - start - hdr - 1 : 0;
    int rc;

    if (room < 256)
        room = 256;
    for (;;) {
        jd_buf_reserve(out, hdr + room);
        avro_writer_memory_set_dest(c->writer, out->data + start + hdr, (int64_t)room);
        rc = avro_value_write(c->writer, v);
        if (rc == 0)
            break;
        if (rc != ENOSPC || room >= JD_ENCODE_MAX) {
            snprintf(errstr, errsize, "Avro encoding failed: %s", avro_strerror());
            return -1;
        }
        room *= 2;
    }
    if (hdr) {
        uint8_t *h = (uint8_t *)out->data + start;
        h[0] = 0;
        h[1] = (uint8_t)((uint32_t)schema_id >> 24);
        h[2] = (uint8_t)((uint32_t)schema_id >> 16);
        h[3] = (uint8_t)((uint32_t)schema_id >> 8);
        h[4] = (uint8_t)schema_id;
    }
    out->len = start + hdr + (size_t)avro_writer_tell(c->writer);
    out->data[out->len] = '\0';
    return 0;
}

int jd_codec_encode_trigger(struct jd_codec *c, const struct jd_trigger *t, struct jd_buf *out,
                            char *errstr, size_t errsize)
{
    avro_value_t *r = &c->tg_enc;
    avro_value_t v;
    const int *ix = c->tg_index;
    const size_t maxattrs = sizeof(t->attr_keys) / sizeof(t->attr_keys[0]);

    if ((unsigned)t->kind >= JD_KIND_COUNT) {
        snprintf(errstr, errsize, "invalid trigger kind %d", (int)t->kind);
        return -1;
    }
    if (t->nattrs > maxattrs) {
        snprintf(errstr, errsize, "%zu attributes (at most %zu)", t->nattrs, maxattrs);
        return -1;
    }
    if (avro_value_reset(r) != 0) {
        snprintf(errstr, errsize, "%s", avro_strerror());
        return -1;
    }
    if (set_field_string(r, ix[JD_TG_TRIGGER_ID], t->trigger_id, "trigger_id", errstr, errsize) ||
        set_field_string(r, ix[JD_TG_TRIGGER], t->trigger, "trigger", errstr, errsize) ||
        set_field_string(r, ix[JD_TG_CUSTOMER_ID], t->customer_id, "customer_id", errstr,
                         errsize) ||
        set_opt_string(r, ix[JD_TG_SEGMENT], &c->tg_segment, t->segment, "segment", errstr,
                       errsize) ||
        set_field_string(r, ix[JD_TG_JOURNEY_STAGE], t->journey_stage, "journey_stage", errstr,
                         errsize) ||
        set_field_string(r, ix[JD_TG_REASON], t->reason, "reason", errstr, errsize) ||
        set_field_long(r, ix[JD_TG_FIRED_AT], t->fired_at, "fired_at", errstr, errsize) ||
        set_opt_string(r, ix[JD_TG_SOURCE_EVENT_ID], &c->tg_source_event_id, t->source_event_id,
                       "source_event_id", errstr, errsize) ||
        set_field_string(r, ix[JD_TG_RULE_VERSION], t->rule_version, "rule_version", errstr,
                         errsize) ||
        set_map(r, ix[JD_TG_ATTRIBUTES], t->nattrs, t->attr_keys, t->attr_vals, errstr, errsize))
        return -1;
    if (avro_value_get_by_index(r, (size_t)ix[JD_TG_KIND], &v, NULL) != 0 ||
        avro_value_set_enum(&v, c->tg_kind_symbol[t->kind]) != 0) {
        snprintf(errstr, errsize, "kind: %s", avro_strerror());
        return -1;
    }
    return write_value(c, r, c->tg_schema_id, out, errstr, errsize);
}

int jd_codec_encode_touchpoint(struct jd_codec *c, const struct jd_event *ev, int schema_id,
                               struct jd_buf *out, char *errstr, size_t errsize)
{
    avro_value_t *r = &c->tp_enc;
    avro_value_t branch;
    const int *ix = c->tp_index;

    if (ev->nattrs > JD_EVENT_MAX_ATTRS) {
        snprintf(errstr, errsize, "%zu attributes (at most %d)", ev->nattrs, JD_EVENT_MAX_ATTRS);
        return -1;
    }
    if (avro_value_reset(r) != 0) {
        snprintf(errstr, errsize, "%s", avro_strerror());
        return -1;
    }
    if (set_field_string(r, ix[JD_TP_EVENT_ID], ev->event_id, "event_id", errstr, errsize) ||
        set_field_string(r, ix[JD_TP_CUSTOMER_ID], ev->customer_id, "customer_id", errstr,
                         errsize) ||
        set_field_string(r, ix[JD_TP_TYPE], ev->type, "type", errstr, errsize) ||
        set_field_string(r, ix[JD_TP_CHANNEL], ev->channel ? ev->channel : "", "channel", errstr,
                         errsize) ||
        set_field_long(r, ix[JD_TP_OCCURRED_AT], ev->occurred_at, "occurred_at", errstr, errsize) ||
        set_opt_string(r, ix[JD_TP_CURRENCY], &c->tp_currency, ev->currency, "currency", errstr,
                       errsize) ||
        set_map(r, ix[JD_TP_ATTRIBUTES], ev->nattrs, ev->attr_keys, ev->attr_vals, errstr, errsize))
        return -1;
    if (set_field_opt(r, ix[JD_TP_AMOUNT], &c->tp_amount, ev->has_amount, &branch, "amount", errstr,
                      errsize) != 0)
        return -1;
    if (ev->has_amount && avro_value_set_double(&branch, ev->amount) != 0) {
        snprintf(errstr, errsize, "amount: %s", avro_strerror());
        return -1;
    }
    if (set_field_opt(r, ix[JD_TP_SCORE], &c->tp_score, ev->has_score, &branch, "score", errstr,
                      errsize) != 0)
        return -1;
    if (ev->has_score && avro_value_set_int(&branch, ev->score) != 0) {
        snprintf(errstr, errsize, "score: %s", avro_strerror());
        return -1;
    }
    return write_value(c, r, schema_id, out, errstr, errsize);
}
