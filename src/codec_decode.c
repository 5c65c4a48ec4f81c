/*
 * codec_decode — Kafka value bytes -> struct jd_event (and, for journeyctl
 * and tests, bytes -> struct jd_trigger). Per event: pick the writer by the
 * framing, then either
 * - the direct decoder (writers whose extracted fields have exactly the
 *   reader's types — the touchpoint schema itself, and evolutions that only
 *   add or remove fields): one bounds-checked pass over the bytes following
 *   the plan built at setup, strings copied into one reused buffer, no
 *   allocation; or
 * - avro-c (writers that need type promotions): the bytes are checked
 *   (codec_validate.c), then read through the writer's prebuilt resolver
 *   into its reused value, and the event points at that value's strings.
 *   avro-c allocates each string it reads; this path is ~5x slower.
 * No schema work happens per event on either path.
 *
 * Decisions:
 * - Trailing bytes after the record make the body MALFORMED: a body that
 *   does not end where the writer schema says is the wrong schema or corrupt.
 * - A string with an embedded NUL byte is MALFORMED: the rest of journeyd
 *   handles strings as C strings and would silently truncate it.
 * - Attributes beyond JD_EVENT_MAX_ATTRS are ignored (the first ones, in
 *   wire order, are kept).
 * - A writer schema without `channel` decodes with channel "" (the field has
 *   no default in touchpoint.avsc, but nothing depends on it); a writer
 *   without event_id, customer_id, type or occurred_at decodes every body as
 *   JD_DECODE_MISSING_FIELD.
 * - ev->partition and ev->offset are left as they were: the consumer sets
 *   them.
 */
#include "codec_internal.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#define JD_FRAME_LEN 5

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static struct jd_codec_writer *find_writer(struct jd_codec *c, uint32_t id)
{
    for (size_t i = 0; i < c->nids; i++)
        if ((uint32_t)c->ids[i].id == id)
            return &c->ids[i];
    return NULL;
}

static const char *writer_name(const struct jd_codec_writer *w, char *buf, size_t size)
{
    if (w->id >= 0)
        snprintf(buf, size, "schema id %d", w->id);
    else
        snprintf(buf, size, "bare body");
    return buf;
}

/* avro-c string sizes include the terminating NUL. */
static int checked_string(avro_value_t *v, const char **out)
{
    const char *s;
    size_t size;
    if (avro_value_get_string(v, &s, &size) != 0)
        return -1;
    if (size == 0) {
        *out = "";
        return 0;
    }
    if (strlen(s) != size - 1)
        return -1;
    *out = s;
    return 0;
}

static enum jd_decode_status string_field(struct jd_codec_writer *w, enum jd_tp_field f,
                                          const char **out, char *errstr, size_t errsize)
{
    avro_value_t v;
    *out = NULL;
    if (w->slot[f] < 0)
        return JD_DECODE_OK;
    if (avro_value_get_by_index(&w->dest, (size_t)w->slot[f], &v, NULL) != 0 ||
        checked_string(&v, out) != 0) {
        snprintf(errstr, errsize, "%s contains a NUL byte", jd_tp_field_names[f]);
        return JD_DECODE_MALFORMED;
    }
    return JD_DECODE_OK;
}

/* Reads a ["null", X] field: 0 when null, 1 with *branch set otherwise. */
static int opt_field(struct jd_codec_writer *w, enum jd_tp_field f,
                     const struct jd_opt_branches *ob, avro_value_t *branch)
{
    avro_value_t v;
    int d;
    if (w->slot[f] < 0)
        return 0;
    if (avro_value_get_by_index(&w->dest, (size_t)w->slot[f], &v, NULL) != 0 ||
        avro_value_get_discriminant(&v, &d) != 0 || d != ob->value_branch)
        return 0;
    return avro_value_get_current_branch(&v, branch) == 0;
}

static enum jd_decode_status required(struct jd_codec_writer *w, enum jd_tp_field f,
                                      const char *val, char *errstr, size_t errsize)
{
    char name[32];
    if (w->slot[f] < 0) {
        snprintf(errstr, errsize, "missing %s (not in the writer schema of %s)",
                 jd_tp_field_names[f], writer_name(w, name, sizeof(name)));
        return JD_DECODE_MISSING_FIELD;
    }
    if (val && !val[0]) {
        snprintf(errstr, errsize, "empty %s", jd_tp_field_names[f]);
        return JD_DECODE_MISSING_FIELD;
    }
    return JD_DECODE_OK;
}

/* Required fields and defaults, once the event is filled by either path. */
static enum jd_decode_status finish(struct jd_codec_writer *w, struct jd_event *ev, char *errstr,
                                    size_t errsize)
{
    enum jd_decode_status st;
    if ((st = required(w, JD_TP_EVENT_ID, ev->event_id, errstr, errsize)) != JD_DECODE_OK ||
        (st = required(w, JD_TP_CUSTOMER_ID, ev->customer_id, errstr, errsize)) != JD_DECODE_OK ||
        (st = required(w, JD_TP_TYPE, ev->type, errstr, errsize)) != JD_DECODE_OK ||
        (st = required(w, JD_TP_OCCURRED_AT, NULL, errstr, errsize)) != JD_DECODE_OK)
        return st;
    if (!ev->channel)
        ev->channel = "";
    return JD_DECODE_OK;
}

/* Fills ev from the avro-c value the body was read into. */
static enum jd_decode_status extract(struct jd_codec *c, struct jd_codec_writer *w,
                                     struct jd_event *ev, char *errstr, size_t errsize)
{
    static const enum jd_tp_field strs[] = {JD_TP_EVENT_ID, JD_TP_CUSTOMER_ID, JD_TP_TYPE,
                                            JD_TP_CHANNEL};
    const char **dst[] = {&ev->event_id, &ev->customer_id, &ev->type, &ev->channel};
    enum jd_decode_status st;
    avro_value_t v;

    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if ((st = string_field(w, strs[i], dst[i], errstr, errsize)) != JD_DECODE_OK)
            return st;
    ev->occurred_at = 0;
    if (w->slot[JD_TP_OCCURRED_AT] >= 0 &&
        (avro_value_get_by_index(&w->dest, (size_t)w->slot[JD_TP_OCCURRED_AT], &v, NULL) != 0 ||
         avro_value_get_long(&v, &ev->occurred_at) != 0)) {
        snprintf(errstr, errsize, "occurred_at: %s", avro_strerror());
        return JD_DECODE_MALFORMED;
    }

    ev->has_amount = opt_field(w, JD_TP_AMOUNT, &c->tp_amount, &v) &&
                     avro_value_get_double(&v, &ev->amount) == 0;
    if (!ev->has_amount)
        ev->amount = 0;
    ev->has_score =
        opt_field(w, JD_TP_SCORE, &c->tp_score, &v) && avro_value_get_int(&v, &ev->score) == 0;
    if (!ev->has_score)
        ev->score = 0;
    ev->currency = NULL;
    if (opt_field(w, JD_TP_CURRENCY, &c->tp_currency, &v) &&
        checked_string(&v, &ev->currency) != 0) {
        snprintf(errstr, errsize, "currency contains a NUL byte");
        return JD_DECODE_MALFORMED;
    }

    ev->nattrs = 0;
    if (w->slot[JD_TP_ATTRIBUTES] >= 0) {
        avro_value_t map, val;
        size_t n = 0;
        if (avro_value_get_by_index(&w->dest, (size_t)w->slot[JD_TP_ATTRIBUTES], &map, NULL) != 0 ||
            avro_value_get_size(&map, &n) != 0) {
            snprintf(errstr, errsize, "attributes: %s", avro_strerror());
            return JD_DECODE_MALFORMED;
        }
        if (n > JD_EVENT_MAX_ATTRS)
            n = JD_EVENT_MAX_ATTRS;
        for (size_t i = 0; i < n; i++) {
            const char *key;
            if (avro_value_get_by_index(&map, i, &val, &key) != 0 ||
                checked_string(&val, &ev->attr_vals[i]) != 0) {
                snprintf(errstr, errsize, "attribute value contains a NUL byte");
                return JD_DECODE_MALFORMED;
            }
            ev->attr_keys[i] = key;
        }
        ev->nattrs = n;
    }
    return finish(w, ev, errstr, errsize);
}

/* Copies a string into the codec's string buffer, NUL-terminated. */
static int direct_string(struct jd_avro_cur *cur, char **sp, const char *what, const char **out)
{
    int64_t n;
    if (jd_cur_read_length(cur, what, &n) != 0)
        return -1;
    if (memchr(cur->p, 0, (size_t)n)) {
        char msg[64];
        snprintf(msg, sizeof(msg), "%s contains a NUL byte", what);
        return jd_cur_fail(cur, msg);
    }
    memcpy(*sp, cur->p, (size_t)n);
    (*sp)[n] = '\0';
    *out = *sp;
    *sp += n + 1;
    cur->p += n;
    return 0;
}

static int direct_map(struct jd_avro_cur *cur, char **sp, struct jd_event *ev)
{
    for (;;) {
        int64_t count, bytes;
        if (jd_cur_read_long(cur, &count) != 0)
            return -1;
        if (count == 0)
            return 0;
        if (count < 0) {
            if (count == INT64_MIN)
                return jd_cur_fail(cur, "invalid block count");
            count = -count;
            if (jd_cur_read_length(cur, "block", &bytes) != 0)
                return -1;
        }
        if ((uint64_t)count > jd_cur_left(cur))
            return jd_cur_fail(cur, "block count exceeds the bytes left");
        for (int64_t i = 0; i < count; i++) {
            const char *k, *v;
            if (direct_string(cur, sp, "attribute key", &k) != 0 ||
                direct_string(cur, sp, "attribute value", &v) != 0)
                return -1;
            if (ev->nattrs < JD_EVENT_MAX_ATTRS) {
                ev->attr_keys[ev->nattrs] = k;
                ev->attr_vals[ev->nattrs] = v;
                ev->nattrs++;
            }
        }
    }
}

/* Union index of a [null, X] field: 1 when X follows, 0 for null. */
static int direct_branch(struct jd_avro_cur *cur, const struct jd_plan_step *st, int *present)
{
    int64_t d;
    if (jd_cur_read_long(cur, &d) != 0)
        return -1;
    if (d == st->null_branch) {
        *present = 0;
        return 0;
    }
    if (d == st->value_branch) {
        *present = 1;
        return 0;
    }
    char msg[64];
    snprintf(msg, sizeof(msg), "union index %" PRId64 " out of range", d);
    return jd_cur_fail(cur, msg);
}

/*
 * The direct decoder: one bounds-checked pass over the body following the
 * writer's plan, copying strings into one reused buffer. Each string takes
 * its length plus a NUL there and at least its length plus one byte of
 * input, so a buffer of len + 1 bytes never moves during a decode.
 */
static int direct_decode(struct jd_codec *c, struct jd_codec_writer *w, const uint8_t *b,
                         size_t len, struct jd_event *ev, char *errstr, size_t errsize)
{
    struct jd_avro_cur cur = {b, b, b + len, 0, 0, errstr, errsize};
    const char **strs[JD_TP_NFIELDS] = {
        [JD_TP_EVENT_ID] = &ev->event_id, [JD_TP_CUSTOMER_ID] = &ev->customer_id,
        [JD_TP_TYPE] = &ev->type,         [JD_TP_CHANNEL] = &ev->channel,
        [JD_TP_CURRENCY] = &ev->currency,
    };
    char *sp;
    int present = 0;

    jd_buf_reset(&c->strings);
    jd_buf_reserve(&c->strings, len + 1);
    sp = c->strings.data;
    ev->event_id = ev->customer_id = ev->type = ev->channel = ev->currency = NULL;
    ev->occurred_at = 0;
    ev->has_amount = ev->has_score = 0;
    ev->amount = 0;
    ev->score = 0;
    ev->nattrs = 0;

    for (size_t i = 0; i < w->nplan; i++) {
        const struct jd_plan_step *st = &w->plan[i];
        int rc = 0;
        switch (st->op) {
        case JD_OP_SKIP:
            rc = jd_cur_skip(&cur, st->skip);
            break;
        case JD_OP_STR:
            rc = direct_string(&cur, &sp, jd_tp_field_names[st->field], strs[st->field]);
            break;
        case JD_OP_LONG:
            rc = jd_cur_read_long(&cur, &ev->occurred_at);
            break;
        case JD_OP_OPT_STR:
            if ((rc = direct_branch(&cur, st, &present)) == 0 && present)
                rc = direct_string(&cur, &sp, jd_tp_field_names[st->field], strs[st->field]);
            break;
        case JD_OP_OPT_DOUBLE:
            if ((rc = direct_branch(&cur, st, &present)) == 0 && present) {
                const uint8_t *p = cur.p;
                if ((rc = jd_cur_advance(&cur, 8, "double")) == 0) {
                    uint64_t u = 0;
                    for (int k = 7; k >= 0; k--)
                        u = u << 8 | p[k];
                    memcpy(&ev->amount, &u, sizeof(u));
                    ev->has_amount = 1;
                }
            }
            break;
        case JD_OP_OPT_INT:
            if ((rc = direct_branch(&cur, st, &present)) == 0 && present) {
                int64_t v;
                if ((rc = jd_cur_read_long(&cur, &v)) == 0) {
                    if (v < INT32_MIN || v > INT32_MAX) {
                        rc = jd_cur_fail(&cur, "int out of range");
                    } else {
                        ev->score = (int32_t)v;
                        ev->has_score = 1;
                    }
                }
            }
            break;
        case JD_OP_MAP_STR:
            rc = direct_map(&cur, &sp, ev);
            break;
        }
        if (rc != 0)
            return -1;
    }
    if (cur.p != cur.end) {
        snprintf(errstr, errsize, "%zu trailing bytes after the record (body is %zu bytes)",
                 jd_cur_left(&cur), len);
        return -1;
    }
    return 0;
}

static enum jd_decode_status decode_body(struct jd_codec *c, struct jd_codec_writer *w,
                                         const uint8_t *b, size_t len, struct jd_event *ev,
                                         char *errstr, size_t errsize);

enum jd_decode_status jd_codec_decode(struct jd_codec *c, const void *buf, size_t len,
                                      struct jd_event *ev, char *errstr, size_t errsize)
{
    const uint8_t *b = buf;
    struct jd_codec_writer *w = NULL;
    enum jd_decode_status st;

    if (len == 0 || !buf) {
        snprintf(errstr, errsize, "empty value");
        return JD_DECODE_MALFORMED;
    }
    switch (c->wire_format) {
    case JD_WIRE_CONFLUENT:
        if (len < JD_FRAME_LEN || b[0] != 0) {
            snprintf(errstr, errsize,
                     "not Confluent-framed (expected byte 0x00 and a 4-byte schema id)");
            return JD_DECODE_MALFORMED;
        }
        if (!(w = find_writer(c, be32(b + 1)))) {
            snprintf(errstr, errsize, "unknown schema id %u", be32(b + 1));
            return JD_DECODE_UNKNOWN_SCHEMA;
        }
        break;
    case JD_WIRE_AUTO:
        /* A bare body starting with 0x00 has an empty event_id: it would be
         * rejected anyway, so the framing check cannot lose a valid event. */
        if (len >= JD_FRAME_LEN && b[0] == 0)
            w = find_writer(c, be32(b + 1));
        break;
    case JD_WIRE_BARE:
        break;
    }
    if (w) {
        b += JD_FRAME_LEN;
        len -= JD_FRAME_LEN;
    } else {
        w = &c->bare;
    }
    st = decode_body(c, w, b, len, ev, errstr, errsize);
    if (st != JD_DECODE_OK && c->wire_format == JD_WIRE_AUTO && w == &c->bare &&
        len >= JD_FRAME_LEN && b[0] == 0) {
        size_t n = strlen(errstr);
        snprintf(errstr + n, errsize > n ? errsize - n : 0,
                 " (if Confluent-framed: unknown schema id %u)", be32(b + 1));
    }
    return st;
}

static enum jd_decode_status decode_body(struct jd_codec *c, struct jd_codec_writer *w,
                                         const uint8_t *b, size_t len, struct jd_event *ev,
                                         char *errstr, size_t errsize)
{
    char name[32];

    if (w->nplan) {
        if (direct_decode(c, w, b, len, ev, errstr, errsize) != 0) {
            char detail[200];
            snprintf(detail, sizeof(detail), "%s", errstr);
            snprintf(errstr, errsize, "malformed Avro (%s): %s", writer_name(w, name, sizeof(name)),
                     detail);
            return JD_DECODE_MALFORMED;
        }
        return finish(w, ev, errstr, errsize);
    }
    if (jd_codec_validate(w->schema, b, len, errstr, errsize) != 0) {
        char detail[200];
        snprintf(detail, sizeof(detail), "%s", errstr);
        snprintf(errstr, errsize, "malformed Avro (%s): %s", writer_name(w, name, sizeof(name)),
                 detail);
        return JD_DECODE_MALFORMED;
    }
    avro_reader_memory_set_source(c->reader, (const char *)b, (int64_t)len);
    if (avro_value_read(c->reader, w->resolver ? &w->resolved : &w->dest) != 0) {
        snprintf(errstr, errsize, "malformed Avro (%s): %s", writer_name(w, name, sizeof(name)),
                 avro_strerror());
        return JD_DECODE_MALFORMED;
    }
    return extract(c, w, ev, errstr, errsize);
}

static const char *tg_string(struct jd_codec *c, enum jd_tg_field f, int *bad)
{
    avro_value_t v;
    const char *s = NULL;
    if (avro_value_get_by_index(&c->tg_dec, (size_t)c->tg_index[f], &v, NULL) != 0 ||
        checked_string(&v, &s) != 0)
        *bad = 1;
    return s;
}

static const char *tg_opt_string(struct jd_codec *c, enum jd_tg_field f,
                                 const struct jd_opt_branches *ob, int *bad)
{
    avro_value_t v, branch;
    const char *s = NULL;
    int d;
    if (avro_value_get_by_index(&c->tg_dec, (size_t)c->tg_index[f], &v, NULL) != 0 ||
        avro_value_get_discriminant(&v, &d) != 0) {
        *bad = 1;
        return NULL;
    }
    if (d != ob->value_branch)
        return NULL;
    if (avro_value_get_current_branch(&v, &branch) != 0 || checked_string(&branch, &s) != 0)
        *bad = 1;
    return s;
}

int jd_codec_decode_trigger(struct jd_codec *c, const void *buf, size_t len, struct jd_trigger *t,
                            char *errstr, size_t errsize)
{
    const uint8_t *b = buf;
    avro_value_t v, map;
    const char *id;
    int bad = 0, sym;
    size_t n;

    if (len == 0 || !buf) {
        snprintf(errstr, errsize, "empty value");
        return -1;
    }
    /* Trigger ids are never empty, so a leading 0x00 is always framing. */
    if (len >= JD_FRAME_LEN && b[0] == 0) {
        if (c->tg_schema_id >= 0 && be32(b + 1) != (uint32_t)c->tg_schema_id) {
            snprintf(errstr, errsize, "unknown schema id %u (trigger schema is id %d)", be32(b + 1),
                     c->tg_schema_id);
            return -1;
        }
        b += JD_FRAME_LEN;
        len -= JD_FRAME_LEN;
    }
    if (jd_codec_validate(c->tg_schema, b, len, errstr, errsize) != 0)
        return -1;
    avro_reader_memory_set_source(c->reader, (const char *)b, (int64_t)len);
    if (avro_value_read(c->reader, &c->tg_dec) != 0) {
        snprintf(errstr, errsize, "malformed Avro trigger: %s", avro_strerror());
        return -1;
    }

    memset(t, 0, sizeof(*t));
    id = tg_string(c, JD_TG_TRIGGER_ID, &bad);
    if (!bad && strlen(id) >= sizeof(t->trigger_id)) {
        snprintf(errstr, errsize, "trigger_id longer than %zu characters",
                 sizeof(t->trigger_id) - 1);
        return -1;
    }
    if (!bad)
        memcpy(t->trigger_id, id, strlen(id) + 1);
    t->trigger = tg_string(c, JD_TG_TRIGGER, &bad);
    t->customer_id = tg_string(c, JD_TG_CUSTOMER_ID, &bad);
    t->journey_stage = tg_string(c, JD_TG_JOURNEY_STAGE, &bad);
    t->reason = tg_string(c, JD_TG_REASON, &bad);
    t->rule_version = tg_string(c, JD_TG_RULE_VERSION, &bad);
    t->segment = tg_opt_string(c, JD_TG_SEGMENT, &c->tg_segment, &bad);
    t->source_event_id = tg_opt_string(c, JD_TG_SOURCE_EVENT_ID, &c->tg_source_event_id, &bad);
    if (bad) {
        snprintf(errstr, errsize, "trigger string field contains a NUL byte");
        return -1;
    }
    if (avro_value_get_by_index(&c->tg_dec, (size_t)c->tg_index[JD_TG_FIRED_AT], &v, NULL) != 0 ||
        avro_value_get_long(&v, &t->fired_at) != 0 ||
        avro_value_get_by_index(&c->tg_dec, (size_t)c->tg_index[JD_TG_KIND], &v, NULL) != 0 ||
        avro_value_get_enum(&v, &sym) != 0) {
        snprintf(errstr, errsize, "trigger: %s", avro_strerror());
        return -1;
    }
    t->kind = JD_KIND_COUNT;
    for (int k = 0; k < JD_KIND_COUNT; k++)
        if (c->tg_kind_symbol[k] == sym)
            t->kind = (enum jd_trigger_kind)k;
    if (t->kind == JD_KIND_COUNT) {
        snprintf(errstr, errsize, "trigger kind symbol %d is not a known kind", sym);
        return -1;
    }

    if (avro_value_get_by_index(&c->tg_dec, (size_t)c->tg_index[JD_TG_ATTRIBUTES], &map, NULL) !=
            0 ||
        avro_value_get_size(&map, &n) != 0) {
        snprintf(errstr, errsize, "trigger attributes: %s", avro_strerror());
        return -1;
    }
    if (n > sizeof(t->attr_keys) / sizeof(t->attr_keys[0]))
        n = sizeof(t->attr_keys) / sizeof(t->attr_keys[0]);
    for (size_t i = 0; i < n; i++) {
        if (avro_value_get_by_index(&map, i, &v, &t->attr_keys[i]) != 0 ||
            checked_string(&v, &t->attr_vals[i]) != 0) {
            snprintf(errstr, errsize, "trigger attribute value contains a NUL byte");
            return -1;
        }
    }
    t->nattrs = n;
    return 0;
}
