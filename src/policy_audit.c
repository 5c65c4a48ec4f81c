/*
 * policy_audit — what is written when the policy suppresses a trigger: a
 * history line for journeyctl, and a `Suppressed` Avro record
 * (config/schemas/suppressed.avsc) for policy.audit_topic.
 *
 * The record is put in the customer's outbox with the audit topic, so it is
 * persisted in the same atomic write as the decision and produced at least
 * once, like a trigger (same redelivery after a crash, same offset gating).
 * Its outbox id is a hash of the trigger id (the record itself carries the
 * trigger id the trigger would have had, so analysts can join).
 *
 * Owns: the parsed Suppressed schema, one reusable Avro value and writer.
 */
#include <avro.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"

#define MAX_RECORD (1u << 20)

enum {
    F_TRIGGER_ID,
    F_TRIGGER,
    F_KIND,
    F_CUSTOMER_ID,
    F_REASON,
    F_DETAIL,
    F_HOLDOUT,
    F_DECIDED_AT,
    F_SEGMENT,
    F_JOURNEY_STAGE,
    F_TRIGGER_REASON,
    F_SOURCE_EVENT_ID,
    F_RULE_VERSION,
    F_COUNT
};

static const char *const field_names[F_COUNT] = {
    "trigger_id",     "trigger",         "kind",         "customer_id", "reason",
    "detail",         "holdout",         "decided_at",   "segment",     "journey_stage",
    "trigger_reason", "source_event_id", "rule_version",
};

static const avro_type_t field_types[F_COUNT] = {
    AVRO_STRING, AVRO_STRING, AVRO_ENUM,   AVRO_STRING, AVRO_STRING, AVRO_STRING, AVRO_BOOLEAN,
    AVRO_INT64,  AVRO_UNION,  AVRO_STRING, AVRO_STRING, AVRO_UNION,  AVRO_STRING,
};

struct jd_audit {
    avro_schema_t schema;
    avro_value_iface_t *cls;
    avro_value_t rec;
    int have_rec;
    avro_writer_t writer;
    int schema_id;
    int kind_symbol[JD_KIND_COUNT];
    int null_branch[F_COUNT]; /* for the two optional strings */
    int str_branch[F_COUNT];
};

static const char empty_dest[1];

static char *read_file(const char *path, size_t *len, char *errstr, size_t errsize)
{
    struct jd_buf b;
    jd_buf_init(&b);
    if (jd_buf_read_file(&b, path) != 0) {
        snprintf(errstr, errsize, "%s: %s", path, strerror(errno));
        jd_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.data;
}

static int check_fields(struct jd_audit *a, const char *path, char *errstr, size_t errsize)
{
    for (int i = 0; i < F_COUNT; i++) {
        int idx = avro_schema_record_field_get_index(a->schema, field_names[i]);
        avro_schema_t fs = idx >= 0 ? avro_schema_record_field_get_by_index(a->schema, idx) : NULL;
        if (!fs || avro_typeof(fs) != field_types[i]) {
            snprintf(errstr, errsize, "%s: record %s needs a field %s of the documented type", path,
                     avro_schema_name(a->schema), field_names[i]);
            return -1;
        }
        if (field_types[i] == AVRO_UNION) {
            a->null_branch[i] = a->str_branch[i] = -1;
            for (size_t k = 0; k < avro_schema_union_size(fs); k++) {
                avro_schema_t br = avro_schema_union_branch(fs, (int)k);
                if (is_avro_null(br) && a->null_branch[i] < 0)
                    a->null_branch[i] = (int)k;
                else if (is_avro_string(br) && a->str_branch[i] < 0)
                    a->str_branch[i] = (int)k;
            }
            if (a->null_branch[i] < 0 || a->str_branch[i] < 0) {
                snprintf(errstr, errsize, "%s: field %s must be [\"null\", \"string\"]", path,
                         field_names[i]);
                return -1;
            }
        }
        if (field_types[i] == AVRO_ENUM)
            for (int k = 0; k < JD_KIND_COUNT; k++) {
                a->kind_symbol[k] =
                    avro_schema_enum_get_by_name(fs, jd_kind_name((enum jd_trigger_kind)k));
                if (a->kind_symbol[k] < 0) {
                    snprintf(errstr, errsize, "%s: enum of field kind lacks %s", path,
                             jd_kind_name((enum jd_trigger_kind)k));
                    return -1;
                }
            }
    }
    return 0;
}

struct jd_audit *jd_audit_new(const struct jd_config *cfg, char *errstr, size_t errsize)
{
    struct jd_audit *a = jd_xcalloc(1, sizeof *a);
    size_t len = 0;
    const char *path = cfg->suppressed_schema ? cfg->suppressed_schema : "(schemas.suppressed)";
    char *text = cfg->suppressed_schema ? read_file(path, &len, errstr, errsize) : NULL;
    if (!text) {
        if (!cfg->suppressed_schema)
            snprintf(errstr, errsize, "policy.audit_topic needs schemas.suppressed");
        goto err;
    }
    if (avro_schema_from_json_length(text, len, &a->schema) != 0) {
        snprintf(errstr, errsize, "%s: invalid Avro schema: %s", path, avro_strerror());
        a->schema = NULL;
        free(text);
        goto err;
    }
    free(text);
    if (!is_avro_record(a->schema)) {
        snprintf(errstr, errsize, "%s: the schema must be a record", path);
        goto err;
    }
    if (check_fields(a, path, errstr, errsize) != 0)
        goto err;
    a->cls = avro_generic_class_from_schema(a->schema);
    if (!a->cls || avro_generic_value_new(a->cls, &a->rec) != 0) {
        snprintf(errstr, errsize, "%s: %s", path, avro_strerror());
        goto err;
    }
    a->have_rec = 1;
    a->writer = avro_writer_memory(empty_dest, 0);
    a->schema_id = cfg->suppressed_schema_id;
    return a;
err:
    jd_audit_destroy(a);
    return NULL;
}

void jd_audit_destroy(struct jd_audit *a)
{
    if (!a)
        return;
    if (a->writer)
        avro_writer_free(a->writer);
    if (a->have_rec)
        avro_value_decref(&a->rec);
    if (a->cls)
        avro_value_iface_decref(a->cls);
    if (a->schema)
        avro_schema_decref(a->schema);
    free(a);
}

static int set_str(avro_value_t *rec, int f, const char *s)
{
    avro_value_t v;
    return avro_value_get_by_name(rec, field_names[f], &v, NULL) != 0 ||
           avro_value_set_string_len(&v, s ? s : "", strlen(s ? s : "") + 1) != 0;
}

static int set_opt(struct jd_audit *a, int f, const char *s)
{
    avro_value_t v, br;
    if (avro_value_get_by_name(&a->rec, field_names[f], &v, NULL) != 0 ||
        avro_value_set_branch(&v, s ? a->str_branch[f] : a->null_branch[f], &br) != 0)
        return -1;
    return s ? avro_value_set_string_len(&br, s, strlen(s) + 1) : avro_value_set_null(&br);
}

int jd_audit_encode(struct jd_audit *a, const struct jd_trigger *t,
                    const struct jd_policy_decision *d, int64_t decided_at, struct jd_buf *out,
                    char *errstr, size_t errsize)
{
    avro_value_t *r = &a->rec, v;
    if ((unsigned)t->kind >= JD_KIND_COUNT || avro_value_reset(r) != 0)
        goto avro_err;
    if (set_str(r, F_TRIGGER_ID, t->trigger_id) || set_str(r, F_TRIGGER, t->trigger) ||
        set_str(r, F_CUSTOMER_ID, t->customer_id) || set_str(r, F_REASON, d->reason) ||
        set_str(r, F_DETAIL, d->detail) || set_str(r, F_JOURNEY_STAGE, t->journey_stage) ||
        set_str(r, F_TRIGGER_REASON, t->reason) || set_str(r, F_RULE_VERSION, t->rule_version) ||
        set_opt(a, F_SEGMENT, t->segment) != 0 ||
        set_opt(a, F_SOURCE_EVENT_ID, t->source_event_id) != 0)
        goto avro_err;
    if (avro_value_get_by_name(r, field_names[F_KIND], &v, NULL) != 0 ||
        avro_value_set_enum(&v, a->kind_symbol[t->kind]) != 0 ||
        avro_value_get_by_name(r, field_names[F_HOLDOUT], &v, NULL) != 0 ||
        avro_value_set_boolean(&v, d->holdout ? 1 : 0) != 0 ||
        avro_value_get_by_name(r, field_names[F_DECIDED_AT], &v, NULL) != 0 ||
        avro_value_set_long(&v, decided_at) != 0)
        goto avro_err;

    size_t start = out->len, hdr = a->schema_id >= 0 ? 5 : 0, room = 512;
    for (;;) {
        jd_buf_reserve(out, hdr + room);
        avro_writer_memory_set_dest(a->writer, out->data + start + hdr, (int64_t)room);
        int rc = avro_value_write(a->writer, r);
        if (rc == 0)
            break;
        if (rc != ENOSPC || room >= MAX_RECORD)
            goto avro_err;
        room *= 2;
    }
    if (hdr) {
        uint8_t *h = (uint8_t *)out->data + start;
        uint32_t id = (uint32_t)a->schema_id;
        h[0] = 0;
        h[1] = (uint8_t)(id >> 24);
        h[2] = (uint8_t)(id >> 16);
        h[3] = (uint8_t)(id >> 8);
        h[4] = (uint8_t)id;
    }
    out->len = start + hdr + (size_t)avro_writer_tell(a->writer);
    jd_buf_cstr(out);
    return 0;
avro_err:
    snprintf(errstr, errsize, "encoding Suppressed: %s", avro_strerror());
    return -1;
}

int jd_policy_record_suppressed(struct jd_policy *p, struct jd_customer *c,
                                const struct jd_trigger *t, const struct jd_policy_decision *d,
                                int64_t decided_at, char *errstr, size_t errsize)
{
    /* History: written by the customer's next flush, like an acknowledged
     * trigger's line. The flush pushes c->history before the lines of
     * pending triggers, so the lines of triggers decided earlier move there
     * first: the list stays in decision order. */
    for (size_t k = 0; k < c->npending; k++)
        if (c->pending[k].history) {
            jd_customer_add_history(c, c->pending[k].history);
            c->pending[k].history = NULL;
        }
    jd_buf_reset(&p->line);
    jd_buf_printf(&p->line, "%" PRId64 "|%s|%s|SUPPRESSED:%s|%s; rule: %s", decided_at, t->trigger,
                  t->trigger_id, d->reason, d->detail, t->reason);
    jd_customer_add_history(c, jd_strdup(jd_buf_cstr(&p->line)));

    if (!p->audit)
        return 0;
    char id[33];
    const void *parts[2] = {"suppressed", t->trigger_id};
    size_t lens[2] = {10, strlen(t->trigger_id)};
    jd_hash128_hex(parts, lens, 2, id);
    if (jd_customer_find_pending(c, id))
        return 0; /* the same suppression twice (a rule firing twice for one event) */
    jd_buf_reset(&p->value);
    if (jd_audit_encode(p->audit, t, d, decided_at, &p->value, errstr, errsize) != 0)
        return -1;
    struct jd_pending_trigger *pt = jd_customer_add_pending(c);
    memcpy(pt->trigger_id, id, 33);
    pt->kind = (uint8_t)t->kind;
    pt->topic = jd_cstrndup(p->cfg->policy.audit_topic, strlen(p->cfg->policy.audit_topic));
    jd_pending_set_value(pt, p->value.data, p->value.len);
    /* src_ts stays 0: the event-to-trigger latency is about triggers */
    return 0;
}
