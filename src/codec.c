/*
 * codec — setup and teardown of the Avro codec (avro-c 1.11). Everything
 * schema-related happens here, once: the touchpoint reader schema, one
 * resolved writer per configured registry id (plus one for bare bodies,
 * whose writer is the reader schema) together with the direct decoder's
 * plan for it, the trigger schema, and the reusable
 * values and memory reader/writer that decoding (codec_decode.c) and encoding
 * (codec_encode.c) use per event. The codec owns all of these.
 */
#include "codec_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const jd_tp_field_names[JD_TP_NFIELDS] = {
    "event_id", "customer_id", "type",  "channel",    "occurred_at",
    "amount",   "currency",    "score", "attributes",
};

const char *const jd_tg_field_names[JD_TG_NFIELDS] = {
    "trigger_id",      "trigger",       "kind",       "customer_id",
    "segment",         "journey_stage", "reason",     "fired_at",
    "source_event_id", "rule_version",  "attributes",
};

/* avro_reader_memory / avro_writer_memory want a buffer at creation; the
 * real one is set per call. */
static const char jd_codec_empty[1];

const char *jd_decode_status_name(enum jd_decode_status s)
{
    switch (s) {
    case JD_DECODE_OK:
        return "ok";
    case JD_DECODE_MALFORMED:
        return "malformed";
    case JD_DECODE_UNKNOWN_SCHEMA:
        return "unknown_schema";
    case JD_DECODE_MISSING_FIELD:
        return "missing_field";
    case JD_DECODE_STATUS_COUNT:
        break;
    }
    return "unknown";
}

const char *jd_event_attr(const struct jd_event *ev, const char *key)
{
    for (size_t i = 0; i < ev->nattrs; i++)
        if (jd_streq(ev->attr_keys[i], key))
            return ev->attr_vals[i];
    return NULL;
}

int jd_codec_opt_branches(avro_schema_t u, avro_type_t want, struct jd_opt_branches *out)
{
    out->null_branch = -1;
    out->value_branch = -1;
    if (!is_avro_union(u))
        return -1;
    size_t n = avro_schema_union_size(u);
    for (size_t i = 0; i < n; i++) {
        avro_schema_t b = avro_schema_union_branch(u, (int)i);
        if (is_avro_null(b) && out->null_branch < 0)
            out->null_branch = (int)i;
        else if (b && avro_typeof(b) == want && out->value_branch < 0)
            out->value_branch = (int)i;
    }
    return out->null_branch >= 0 && out->value_branch >= 0 ? 0 : -1;
}

static int load_schema(const char *path, avro_schema_t *out, char *errstr, size_t errsize)
{
    FILE *f = NULL;
    char *text = NULL;
    long size;

    *out = NULL;
    if (!path) {
        snprintf(errstr, errsize, "no schema file configured");
        return -1;
    }
    f = fopen(path, "rb");
    if (!f) {
        snprintf(errstr, errsize, "%s: %s", path, strerror(errno));
        goto err;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        snprintf(errstr, errsize, "%s: cannot determine size", path);
        goto err;
    }
    text = jd_xmalloc((size_t)size + 1);
    if (fread(text, 1, (size_t)size, f) != (size_t)size) {
        snprintf(errstr, errsize, "%s: read error", path);
        goto err;
    }
    text[size] = '\0';
    if (avro_schema_from_json_length(text, (size_t)size, out) != 0) {
        snprintf(errstr, errsize, "%s: invalid Avro schema: %s", path, avro_strerror());
        *out = NULL;
        goto err;
    }
    if (!is_avro_record(*out)) {
        snprintf(errstr, errsize, "%s: the schema must be a record", path);
        goto err;
    }
    free(text);
    fclose(f);
    return 0;
err:
    if (*out)
        avro_schema_decref(*out);
    *out = NULL;
    free(text);
    if (f)
        fclose(f);
    return -1;
}

static int field_index(avro_schema_t rec, const char *name, avro_type_t want, const char *file,
                       char *errstr, size_t errsize)
{
    int i = avro_schema_record_field_get_index(rec, name);
    if (i < 0) {
        snprintf(errstr, errsize, "%s: record %s has no field %s", file, avro_schema_name(rec),
                 name);
        return -1;
    }
    avro_schema_t t = avro_schema_record_field_get_by_index(rec, i);
    if (avro_typeof(t) != want) {
        snprintf(errstr, errsize, "%s: field %s has type %s, expected %s", file, name,
                 avro_schema_type_name(t), want == AVRO_UNION ? "a [\"null\", ...] union" : "");
        return -1;
    }
    return i;
}

static int map_of_strings(avro_schema_t rec, int idx)
{
    avro_schema_t t = avro_schema_record_field_get_by_index(rec, idx);
    return is_avro_map(t) && is_avro_string(avro_schema_map_values(t));
}

static int opt_field(avro_schema_t rec, int idx, avro_type_t want, struct jd_opt_branches *out,
                     const char *file, char *errstr, size_t errsize)
{
    if (jd_codec_opt_branches(avro_schema_record_field_get_by_index(rec, idx), want, out) != 0) {
        snprintf(errstr, errsize, "%s: field %s must be a union of null and %s", file,
                 avro_schema_record_field_name(rec, idx),
                 avro_schema_type_name(want == AVRO_DOUBLE  ? avro_schema_double()
                                       : want == AVRO_INT32 ? avro_schema_int()
                                                            : avro_schema_string()));
        return -1;
    }
    return 0;
}

/* The touchpoint reader schema must have the fields and types the decoder
 * extracts; anything else in it is carried through resolution untouched. */
static int check_touchpoint_schema(struct jd_codec *c, const char *file, char *errstr,
                                   size_t errsize)
{
    static const avro_type_t types[JD_TP_NFIELDS] = {
        AVRO_STRING, AVRO_STRING, AVRO_STRING, AVRO_STRING, AVRO_INT64,
        AVRO_UNION,  AVRO_UNION,  AVRO_UNION,  AVRO_MAP,
    };
    for (int f = 0; f < JD_TP_NFIELDS; f++) {
        c->tp_index[f] =
            field_index(c->tp_schema, jd_tp_field_names[f], types[f], file, errstr, errsize);
        if (c->tp_index[f] < 0)
            return -1;
    }
    if (opt_field(c->tp_schema, c->tp_index[JD_TP_AMOUNT], AVRO_DOUBLE, &c->tp_amount, file, errstr,
                  errsize) != 0 ||
        opt_field(c->tp_schema, c->tp_index[JD_TP_CURRENCY], AVRO_STRING, &c->tp_currency, file,
                  errstr, errsize) != 0 ||
        opt_field(c->tp_schema, c->tp_index[JD_TP_SCORE], AVRO_INT32, &c->tp_score, file, errstr,
                  errsize) != 0)
        return -1;
    if (!map_of_strings(c->tp_schema, c->tp_index[JD_TP_ATTRIBUTES])) {
        snprintf(errstr, errsize, "%s: field attributes must be a map of strings", file);
        return -1;
    }
    return 0;
}

static int check_trigger_schema(struct jd_codec *c, const char *file, char *errstr, size_t errsize)
{
    static const avro_type_t types[JD_TG_NFIELDS] = {
        AVRO_STRING, AVRO_STRING, AVRO_ENUM,  AVRO_STRING, AVRO_UNION, AVRO_STRING,
        AVRO_STRING, AVRO_INT64,  AVRO_UNION, AVRO_STRING, AVRO_MAP,
    };
    static const char *const symbols[JD_KIND_COUNT] = {"REWARD", "REENGAGEMENT"};
    for (int f = 0; f < JD_TG_NFIELDS; f++) {
        c->tg_index[f] =
            field_index(c->tg_schema, jd_tg_field_names[f], types[f], file, errstr, errsize);
        if (c->tg_index[f] < 0)
            return -1;
    }
    avro_schema_t kind =
        avro_schema_record_field_get_by_index(c->tg_schema, c->tg_index[JD_TG_KIND]);
    for (int k = 0; k < JD_KIND_COUNT; k++) {
        c->tg_kind_symbol[k] = avro_schema_enum_get_by_name(kind, symbols[k]);
        if (c->tg_kind_symbol[k] < 0) {
            snprintf(errstr, errsize, "%s: enum %s has no symbol %s", file, avro_schema_name(kind),
                     symbols[k]);
            return -1;
        }
    }
    if (opt_field(c->tg_schema, c->tg_index[JD_TG_SEGMENT], AVRO_STRING, &c->tg_segment, file,
                  errstr, errsize) != 0 ||
        opt_field(c->tg_schema, c->tg_index[JD_TG_SOURCE_EVENT_ID], AVRO_STRING,
                  &c->tg_source_event_id, file, errstr, errsize) != 0)
        return -1;
    if (!map_of_strings(c->tg_schema, c->tg_index[JD_TG_ATTRIBUTES])) {
        snprintf(errstr, errsize, "%s: field attributes must be a map of strings", file);
        return -1;
    }
    return 0;
}

/* Builds the decode path for one writer schema (takes over `wschema`). */
static int writer_init(struct jd_codec *c, struct jd_codec_writer *w, int id, const char *file,
                       avro_schema_t wschema, char *errstr, size_t errsize)
{
    avro_schema_t r = c->tp_schema;
    size_t nr = avro_schema_record_size(r);
    size_t present = 0;
    char what[64];

    if (id >= 0)
        snprintf(what, sizeof(what), "schema id %d", id);
    else
        snprintf(what, sizeof(what), "bare-body schema");
    w->id = id;
    w->file = file;
    w->schema = wschema;
    if (strcmp(avro_schema_name(wschema), avro_schema_name(r)) != 0) {
        snprintf(errstr, errsize, "%s (%s): record %s is not %s", what, file,
                 avro_schema_name(wschema), avro_schema_name(r));
        return -1;
    }
    for (size_t i = 0; i < nr; i++)
        if (avro_schema_record_field_get_index(wschema, avro_schema_record_field_name(r, (int)i)) >=
            0)
            present++;

    if (present == nr) {
        w->dest_schema = avro_schema_incref(r);
    } else {
        w->dest_schema = avro_schema_record(avro_schema_name(r), avro_schema_namespace(r));
        for (size_t i = 0; i < nr; i++) {
            const char *name = avro_schema_record_field_name(r, (int)i);
            if (avro_schema_record_field_get_index(wschema, name) < 0)
                continue;
            if (avro_schema_record_field_append(
                    w->dest_schema, name, avro_schema_record_field_get_by_index(r, (int)i)) != 0) {
                snprintf(errstr, errsize, "%s (%s): %s", what, file, avro_strerror());
                return -1;
            }
        }
    }
    for (int f = 0; f < JD_TP_NFIELDS; f++)
        w->slot[f] = avro_schema_record_field_get_index(w->dest_schema, jd_tp_field_names[f]);

    /* Identical schemas need no resolution: read straight into the value. */
    if (!avro_schema_equal(wschema, w->dest_schema)) {
        w->resolver = avro_resolved_writer_new(wschema, w->dest_schema);
        if (!w->resolver) {
            snprintf(errstr, errsize, "%s (%s) does not resolve against the touchpoint schema: %s",
                     what, file, avro_strerror());
            return -1;
        }
    }
    w->dest_class = avro_generic_class_from_schema(w->dest_schema);
    if (!w->dest_class || avro_generic_value_new(w->dest_class, &w->dest) != 0) {
        snprintf(errstr, errsize, "%s (%s): %s", what, file, avro_strerror());
        return -1;
    }
    if (w->resolver) {
        if (avro_resolved_writer_new_value(w->resolver, &w->resolved) != 0) {
            snprintf(errstr, errsize, "%s (%s): %s", what, file, avro_strerror());
            return -1;
        }
        avro_resolved_writer_set_dest(&w->resolved, &w->dest);
    }
    jd_codec_plan_build(w);
    return 0;
}

static void writer_fini(struct jd_codec_writer *w)
{
    if (w->resolved.iface)
        avro_value_decref(&w->resolved);
    if (w->resolver)
        avro_value_iface_decref(w->resolver);
    if (w->dest.iface)
        avro_value_decref(&w->dest);
    if (w->dest_class)
        avro_value_iface_decref(w->dest_class);
    if (w->dest_schema)
        avro_schema_decref(w->dest_schema);
    if (w->schema)
        avro_schema_decref(w->schema);
    free(w->plan);
    memset(w, 0, sizeof(*w));
}

static int new_value(avro_schema_t s, avro_value_iface_t **cls, avro_value_t *v, char *errstr,
                     size_t errsize)
{
    if (!*cls)
        *cls = avro_generic_class_from_schema(s);
    if (!*cls || avro_generic_value_new(*cls, v) != 0) {
        snprintf(errstr, errsize, "cannot create Avro value for %s: %s", avro_schema_name(s),
                 avro_strerror());
        return -1;
    }
    return 0;
}

struct jd_codec *jd_codec_new(const struct jd_config *cfg, char *errstr, size_t errsize)
{
    struct jd_codec *c = jd_xcalloc(1, sizeof(*c));
    avro_schema_t s;

    jd_buf_init(&c->strings);
    c->wire_format = cfg->wire_format;
    c->tg_schema_id = cfg->trigger_schema_id;

    if (load_schema(cfg->touchpoint_schema, &c->tp_schema, errstr, errsize) != 0 ||
        check_touchpoint_schema(c, cfg->touchpoint_schema, errstr, errsize) != 0)
        goto err;
    if (writer_init(c, &c->bare, -1, cfg->touchpoint_schema, avro_schema_incref(c->tp_schema),
                    errstr, errsize) != 0)
        goto err;

    c->ids = jd_xcalloc(cfg->nregistry_ids ? cfg->nregistry_ids : 1, sizeof(*c->ids));
    for (size_t i = 0; i < cfg->nregistry_ids; i++) {
        const struct jd_schema_id *sid = &cfg->registry_ids[i];
        for (size_t j = 0; j < i; j++)
            if (cfg->registry_ids[j].id == sid->id) {
                snprintf(errstr, errsize, "schema id %d is configured twice", sid->id);
                goto err;
            }
        if (sid->id < 0) {
            snprintf(errstr, errsize, "schema id %d: ids are non-negative", sid->id);
            goto err;
        }
        if (load_schema(sid->file, &s, errstr, errsize) != 0)
            goto err;
        c->nids++; /* the slot now owns s, even if writer_init fails */
        if (writer_init(c, &c->ids[i], sid->id, sid->file, s, errstr, errsize) != 0)
            goto err;
    }

    if (load_schema(cfg->trigger_schema, &c->tg_schema, errstr, errsize) != 0 ||
        check_trigger_schema(c, cfg->trigger_schema, errstr, errsize) != 0)
        goto err;
    if (new_value(c->tg_schema, &c->tg_class, &c->tg_enc, errstr, errsize) != 0 ||
        new_value(c->tg_schema, &c->tg_class, &c->tg_dec, errstr, errsize) != 0 ||
        new_value(c->tp_schema, &c->tp_class, &c->tp_enc, errstr, errsize) != 0)
        goto err;

    c->reader = avro_reader_memory(jd_codec_empty, 0);
    c->writer = avro_writer_memory(jd_codec_empty, 0);
    if (!c->reader || !c->writer) {
        snprintf(errstr, errsize, "cannot create Avro memory reader/writer");
        goto err;
    }
    return c;
err:
    jd_codec_destroy(c);
    return NULL;
}

void jd_codec_destroy(struct jd_codec *c)
{
    if (!c)
        return;
    if (c->reader)
        avro_reader_free(c->reader);
    if (c->writer)
        avro_writer_free(c->writer);
    if (c->tp_enc.iface)
        avro_value_decref(&c->tp_enc);
    if (c->tp_class)
        avro_value_iface_decref(c->tp_class);
    if (c->tg_enc.iface)
        avro_value_decref(&c->tg_enc);
    if (c->tg_dec.iface)
        avro_value_decref(&c->tg_dec);
    if (c->tg_class)
        avro_value_iface_decref(c->tg_class);
    if (c->tg_schema)
        avro_schema_decref(c->tg_schema);
    for (size_t i = 0; i < c->nids; i++)
        writer_fini(&c->ids[i]);
    free(c->ids);
    writer_fini(&c->bare);
    jd_buf_free(&c->strings);
    if (c->tp_schema)
        avro_schema_decref(c->tp_schema);
    free(c);
}

static int plan_step(avro_schema_t wt, enum jd_tp_field f, struct jd_plan_step *st)
{
    struct jd_opt_branches ob;
    st->field = f;
    switch (f) {
    case JD_TP_EVENT_ID:
    case JD_TP_CUSTOMER_ID:
    case JD_TP_TYPE:
    case JD_TP_CHANNEL:
        st->op = JD_OP_STR;
        return is_avro_string(wt) ? 0 : -1;
    case JD_TP_OCCURRED_AT:
        st->op = JD_OP_LONG;
        return is_avro_int64(wt) ? 0 : -1;
    case JD_TP_AMOUNT:
    case JD_TP_CURRENCY:
    case JD_TP_SCORE: {
        avro_type_t want = f == JD_TP_AMOUNT  ? AVRO_DOUBLE
                           : f == JD_TP_SCORE ? AVRO_INT32
                                              : AVRO_STRING;
        st->op = f == JD_TP_AMOUNT  ? JD_OP_OPT_DOUBLE
                 : f == JD_TP_SCORE ? JD_OP_OPT_INT
                                    : JD_OP_OPT_STR;
        if (jd_codec_opt_branches(wt, want, &ob) != 0 || avro_schema_union_size(wt) != 2)
            return -1;
        st->null_branch = ob.null_branch;
        st->value_branch = ob.value_branch;
        return 0;
    }
    case JD_TP_ATTRIBUTES:
        st->op = JD_OP_MAP_STR;
        return is_avro_map(wt) && is_avro_string(avro_schema_map_values(wt)) ? 0 : -1;
    case JD_TP_NFIELDS:
        break;
    }
    return -1;
}

void jd_codec_plan_build(struct jd_codec_writer *w)
{
    size_t n = avro_schema_record_size(w->schema);
    struct jd_plan_step *plan = jd_xcalloc(n ? n : 1, sizeof(*plan));
    for (size_t i = 0; i < n; i++) {
        const char *name = avro_schema_record_field_name(w->schema, (int)i);
        avro_schema_t wt = avro_schema_record_field_get_by_index(w->schema, (int)i);
        int f = 0;
        while (f < JD_TP_NFIELDS && strcmp(jd_tp_field_names[f], name) != 0)
            f++;
        if (f == JD_TP_NFIELDS) {
            plan[i].op = JD_OP_SKIP;
            plan[i].skip = wt;
        } else if (plan_step(wt, (enum jd_tp_field)f, &plan[i]) != 0) {
            free(plan); /* needs a type promotion: leave it to avro-c */
            return;
        }
    }
    w->plan = plan;
    w->nplan = n;
}
