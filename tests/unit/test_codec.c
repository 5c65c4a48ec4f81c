/*
 * test_codec — the Avro codec against real avro-c: round trips in both
 * framings, auto detection, evolved writer schemas (bodies written by avro-c
 * with the writer schema from tests/fixtures/schemas), corrupt and truncated
 * bodies, missing fields, trigger encode/decode and its determinism.
 */
#include <avro.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "journeyd/codec.h"
/* White box: the differential test switches writers to the avro-c path. */
#include "../../src/codec_internal.h"

#define ID_SAME 1     /* touchpoint.avsc itself */
#define ID_V2 2       /* extra fields, reordered */
#define ID_V0 3       /* no optional fields */
#define ID_NO_OCC 4   /* no occurred_at */
#define ID_PROMOTED 5 /* int -> long, float -> double, string -> [null, string] */

static char paths[8][512];

static const char *src_path(int slot, const char *rel)
{
    const char *dir = getenv("JD_SOURCE_DIR");
    snprintf(paths[slot], sizeof(paths[slot]), "%s/%s", dir ? dir : ".", rel);
    return paths[slot];
}

struct fixture {
    struct jd_config cfg;
    struct jd_schema_id ids[5];
    struct jd_codec *codec;
    struct jd_buf buf;
    char err[256];
};

static void config_init(struct fixture *f, enum jd_wire_format wf, int trigger_id)
{
    memset(f, 0, sizeof(*f));
    f->cfg.touchpoint_schema = (char *)src_path(0, "config/schemas/touchpoint.avsc");
    f->cfg.trigger_schema = (char *)src_path(1, "config/schemas/trigger.avsc");
    f->ids[0] = (struct jd_schema_id){ID_SAME, f->cfg.touchpoint_schema};
    f->ids[1] = (struct jd_schema_id){
        ID_V2, (char *)src_path(2, "tests/fixtures/schemas/touchpoint_v2_extra_field.avsc")};
    f->ids[2] = (struct jd_schema_id){
        ID_V0, (char *)src_path(3, "tests/fixtures/schemas/touchpoint_v0_no_optional.avsc")};
    f->ids[3] = (struct jd_schema_id){
        ID_NO_OCC, (char *)src_path(4, "tests/fixtures/schemas/touchpoint_no_occurred_at.avsc")};
    f->ids[4] = (struct jd_schema_id){
        ID_PROMOTED, (char *)src_path(5, "tests/fixtures/schemas/touchpoint_promoted.avsc")};
    f->cfg.registry_ids = f->ids;
    f->cfg.nregistry_ids = 5;
    f->cfg.wire_format = wf;
    f->cfg.trigger_schema_id = trigger_id;
    jd_buf_init(&f->buf);
}

static struct fixture *fixture_new(enum jd_wire_format wf, int trigger_id)
{
    struct fixture *f = malloc(sizeof(*f));
    config_init(f, wf, trigger_id);
    f->codec = jd_codec_new(&f->cfg, f->err, sizeof(f->err));
    if (!f->codec)
        fail_msg("jd_codec_new: %s", f->err);
    return f;
}

static void fixture_free(struct fixture *f)
{
    jd_codec_destroy(f->codec);
    jd_buf_free(&f->buf);
    free(f);
}

static struct jd_event sample_event(void)
{
    static const char *keys[] = {"sku", "campaign"};
    static const char *vals[] = {"SKU-1", "spring"};
    struct jd_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.event_id = "e-1";
    ev.customer_id = "c-42";
    ev.type = "purchase";
    ev.channel = "web";
    ev.occurred_at = 1700000000123;
    ev.has_amount = 1;
    ev.amount = 99.5;
    ev.currency = "EUR";
    ev.has_score = 1;
    ev.score = 7;
    ev.nattrs = 2;
    for (int i = 0; i < 2; i++) {
        ev.attr_keys[i] = keys[i];
        ev.attr_vals[i] = vals[i];
    }
    return ev;
}

static void assert_event_eq(const struct jd_event *a, const struct jd_event *b)
{
    assert_string_equal(a->event_id, b->event_id);
    assert_string_equal(a->customer_id, b->customer_id);
    assert_string_equal(a->type, b->type);
    assert_string_equal(a->channel, b->channel);
    assert_int_equal(a->occurred_at, b->occurred_at);
    assert_int_equal(a->has_amount, b->has_amount);
    if (a->has_amount)
        assert_true(a->amount == b->amount);
    if (a->currency || b->currency)
        assert_string_equal(a->currency, b->currency);
    assert_int_equal(a->has_score, b->has_score);
    if (a->has_score)
        assert_int_equal(a->score, b->score);
    assert_int_equal(a->nattrs, b->nattrs);
    for (size_t i = 0; i < a->nattrs; i++) {
        assert_string_equal(a->attr_keys[i], b->attr_keys[i]);
        assert_string_equal(a->attr_vals[i], b->attr_vals[i]);
    }
}

static enum jd_decode_status decode(struct fixture *f, const void *p, size_t n, struct jd_event *ev)
{
    /* An exact-size heap copy, so that ASan sees any read past the end. */
    void *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    f->err[0] = '\0';
    enum jd_decode_status st = jd_codec_decode(f->codec, copy, n, ev, f->err, sizeof(f->err));
    free(copy);
    return st;
}

static void encode_sample(struct fixture *f, const struct jd_event *ev, int id)
{
    jd_buf_reset(&f->buf);
    if (jd_codec_encode_touchpoint(f->codec, ev, id, &f->buf, f->err, sizeof(f->err)) != 0)
        fail_msg("encode_touchpoint: %s", f->err);
}

/* ---- round trips ------------------------------------------------------ */

static void test_roundtrip_bare(void **state)
{
    enum jd_wire_format fmts[] = {JD_WIRE_BARE, JD_WIRE_AUTO};
    for (int k = 0; k < 2; k++) {
        struct fixture *f = fixture_new(fmts[k], -1);
        struct jd_event in = sample_event(), out;
        out.partition = 3;
        out.offset = 77;
        encode_sample(f, &in, -1);
        assert_int_not_equal((unsigned char)f->buf.data[0], 0);
        assert_int_equal(decode(f, f->buf.data, f->buf.len, &out), JD_DECODE_OK);
        assert_event_eq(&in, &out);
        assert_int_equal(out.partition, 3); /* untouched */
        assert_int_equal(out.offset, 77);
        assert_string_equal(jd_event_attr(&out, "campaign"), "spring");
        assert_null(jd_event_attr(&out, "nope"));
        fixture_free(f);
    }
}

static void test_roundtrip_framed(void **state)
{
    enum jd_wire_format fmts[] = {JD_WIRE_CONFLUENT, JD_WIRE_AUTO};
    for (int k = 0; k < 2; k++) {
        struct fixture *f = fixture_new(fmts[k], -1);
        struct jd_event in = sample_event(), out;
        in.has_amount = 0;
        in.currency = NULL;
        in.has_score = 0;
        in.nattrs = 0;
        in.channel = "";
        encode_sample(f, &in, ID_SAME);
        assert_int_equal(f->buf.data[0], 0);
        assert_int_equal(f->buf.data[4], ID_SAME);
        assert_int_equal(decode(f, f->buf.data, f->buf.len, &out), JD_DECODE_OK);
        assert_event_eq(&in, &out);
        assert_null(out.currency);
        fixture_free(f);
    }
}

static void test_bare_in_confluent_mode(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_CONFLUENT, -1);
    struct jd_event in = sample_event(), out;
    encode_sample(f, &in, -1);
    assert_int_equal(decode(f, f->buf.data, f->buf.len, &out), JD_DECODE_MALFORMED);
    assert_non_null(strstr(f->err, "not Confluent-framed"));
    fixture_free(f);
}

static void test_unknown_schema_id(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_CONFLUENT, -1);
    struct jd_event in = sample_event(), out;
    encode_sample(f, &in, 42);
    assert_int_equal(decode(f, f->buf.data, f->buf.len, &out), JD_DECODE_UNKNOWN_SCHEMA);
    assert_string_equal(f->err, "unknown schema id 42");
    assert_string_equal(jd_decode_status_name(JD_DECODE_UNKNOWN_SCHEMA), "unknown_schema");
    assert_string_equal(jd_decode_status_name(JD_DECODE_MALFORMED), "malformed");
    assert_string_equal(jd_decode_status_name(JD_DECODE_MISSING_FIELD), "missing_field");
    fixture_free(f);

    /* auto: an unknown id means "not framed": the bytes are tried as a bare
     * body, whose first field is then an empty event_id. */
    f = fixture_new(JD_WIRE_AUTO, -1);
    encode_sample(f, &in, 42);
    assert_int_not_equal(decode(f, f->buf.data, f->buf.len, &out), JD_DECODE_OK);
    assert_non_null(strstr(f->err, "unknown schema id 42"));
    fixture_free(f);
}

static void test_bare_mode_ignores_framing(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_BARE, -1);
    struct jd_event in = sample_event(), out;
    encode_sample(f, &in, ID_SAME);
    assert_int_not_equal(decode(f, f->buf.data, f->buf.len, &out), JD_DECODE_OK);
    fixture_free(f);
}

/* ---- evolved writer schemas ------------------------------------------- */

struct wbody {
    avro_schema_t schema;
    avro_value_iface_t *cls;
    avro_value_t v;
};

static void wbody_init(struct wbody *w, const char *path)
{
    FILE *fp = fopen(path, "rb");
    char text[8192];
    assert_non_null(fp);
    size_t n = fread(text, 1, sizeof(text), fp);
    fclose(fp);
    assert_int_equal(avro_schema_from_json_length(text, n, &w->schema), 0);
    w->cls = avro_generic_class_from_schema(w->schema);
    assert_int_equal(avro_generic_value_new(w->cls, &w->v), 0);
}

static void wbody_free(struct wbody *w)
{
    avro_value_decref(&w->v);
    avro_value_iface_decref(w->cls);
    avro_schema_decref(w->schema);
}

static avro_value_t wfield(struct wbody *w, const char *name)
{
    avro_value_t f;
    assert_int_equal(avro_value_get_by_name(&w->v, name, &f, NULL), 0);
    return f;
}

static void wset_str(struct wbody *w, const char *name, const char *s)
{
    avro_value_t f = wfield(w, name);
    assert_int_equal(avro_value_set_string(&f, s), 0);
}

/* Writes the value, Confluent-framed with id, into out. */
static size_t wbody_write(struct wbody *w, int id, char *out, size_t cap)
{
    avro_writer_t wr = avro_writer_memory(out + 5, (int64_t)(cap - 5));
    assert_int_equal(avro_value_write(wr, &w->v), 0);
    size_t n = (size_t)avro_writer_tell(wr);
    avro_writer_free(wr);
    out[0] = 0;
    out[1] = out[2] = out[3] = 0;
    out[4] = (char)id;
    return n + 5;
}

static void test_evolved_extra_fields(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_AUTO, -1);
    struct wbody w;
    avro_value_t fld, br, child;
    char body[1024];
    struct jd_event ev;

    wbody_init(&w, f->ids[1].file);
    wset_str(&w, "customer_id", "c-7");
    wset_str(&w, "event_id", "e-7");
    wset_str(&w, "device", "iphone");
    wset_str(&w, "type", "feedback");
    wset_str(&w, "channel", "app");
    fld = wfield(&w, "occurred_at");
    assert_int_equal(avro_value_set_long(&fld, 1234567), 0);
    fld = wfield(&w, "amount");
    assert_int_equal(avro_value_set_branch(&fld, 0, &br), 0);
    assert_int_equal(avro_value_set_null(&br), 0);
    fld = wfield(&w, "currency");
    assert_int_equal(avro_value_set_branch(&fld, 0, &br), 0);
    assert_int_equal(avro_value_set_null(&br), 0);
    fld = wfield(&w, "score");
    assert_int_equal(avro_value_set_branch(&fld, 1, &br), 0);
    assert_int_equal(avro_value_set_int(&br, 3), 0);
    fld = wfield(&w, "attributes");
    assert_int_equal(avro_value_add(&fld, "topic", &child, NULL, NULL), 0);
    assert_int_equal(avro_value_set_string(&child, "delivery"), 0);
    fld = wfield(&w, "tags");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(avro_value_append(&fld, &child, NULL), 0);
        assert_int_equal(avro_value_set_string(&child, "tag"), 0);
    }
    fld = wfield(&w, "session");
    assert_int_equal(avro_value_set_branch(&fld, 1, &br), 0);
    assert_int_equal(avro_value_get_by_name(&br, "id", &child, NULL), 0);
    assert_int_equal(avro_value_set_string(&child, "s-1"), 0);
    assert_int_equal(avro_value_get_by_name(&br, "n", &child, NULL), 0);
    assert_int_equal(avro_value_set_int(&child, 5), 0);

    size_t n = wbody_write(&w, ID_V2, body, sizeof(body));
    assert_int_equal(decode(f, body, n, &ev), JD_DECODE_OK);
    assert_string_equal(ev.event_id, "e-7");
    assert_string_equal(ev.customer_id, "c-7");
    assert_string_equal(ev.type, "feedback");
    assert_string_equal(ev.channel, "app");
    assert_int_equal(ev.occurred_at, 1234567);
    assert_false(ev.has_amount);
    assert_null(ev.currency);
    assert_true(ev.has_score);
    assert_int_equal(ev.score, 3);
    assert_int_equal(ev.nattrs, 1);
    assert_string_equal(ev.attr_keys[0], "topic");
    assert_string_equal(ev.attr_vals[0], "delivery");

    /* The same bytes under the reader schema's id do not parse. */
    body[4] = ID_SAME;
    assert_int_equal(decode(f, body, n, &ev), JD_DECODE_MALFORMED);
    wbody_free(&w);
    fixture_free(f);
}

static void test_evolved_missing_optional(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_CONFLUENT, -1);
    struct wbody w;
    avro_value_t fld;
    char body[512];
    struct jd_event ev = sample_event(); /* stale values must be cleared */

    wbody_init(&w, f->ids[2].file);
    wset_str(&w, "event_id", "e-0");
    wset_str(&w, "customer_id", "c-0");
    wset_str(&w, "type", "page_view");
    wset_str(&w, "channel", "email");
    fld = wfield(&w, "occurred_at");
    assert_int_equal(avro_value_set_long(&fld, -5), 0);
    size_t n = wbody_write(&w, ID_V0, body, sizeof(body));
    assert_int_equal(decode(f, body, n, &ev), JD_DECODE_OK);
    assert_string_equal(ev.event_id, "e-0");
    assert_string_equal(ev.channel, "email");
    assert_int_equal(ev.occurred_at, -5);
    assert_false(ev.has_amount);
    assert_null(ev.currency);
    assert_false(ev.has_score);
    assert_int_equal(ev.nattrs, 0);
    wbody_free(&w);
    fixture_free(f);
}

static void test_evolved_promoted_types(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_AUTO, -1);
    struct wbody w;
    avro_value_t fld, br;
    char body[512];
    struct jd_event ev;

    wbody_init(&w, f->ids[4].file);
    wset_str(&w, "event_id", "e-p");
    wset_str(&w, "customer_id", "c-p");
    wset_str(&w, "type", "purchase");
    wset_str(&w, "channel", "store");
    wset_str(&w, "currency", "USD");
    fld = wfield(&w, "occurred_at");
    assert_int_equal(avro_value_set_int(&fld, 1000), 0);
    fld = wfield(&w, "amount");
    assert_int_equal(avro_value_set_branch(&fld, 1, &br), 0);
    assert_int_equal(avro_value_set_float(&br, 2.5f), 0);
    size_t n = wbody_write(&w, ID_PROMOTED, body, sizeof(body));
    assert_int_equal(decode(f, body, n, &ev), JD_DECODE_OK);
    assert_int_equal(ev.occurred_at, 1000);
    assert_true(ev.has_amount);
    assert_true(ev.amount == 2.5);
    assert_string_equal(ev.currency, "USD");
    assert_false(ev.has_score);
    wbody_free(&w);
    fixture_free(f);
}

static void test_writer_without_occurred_at(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_AUTO, -1);
    struct wbody w;
    char body[512];
    struct jd_event ev;

    wbody_init(&w, f->ids[3].file);
    wset_str(&w, "event_id", "e-1");
    wset_str(&w, "customer_id", "c-1");
    wset_str(&w, "type", "app_open");
    wset_str(&w, "channel", "app");
    size_t n = wbody_write(&w, ID_NO_OCC, body, sizeof(body));
    assert_int_equal(decode(f, body, n, &ev), JD_DECODE_MISSING_FIELD);
    assert_non_null(strstr(f->err, "occurred_at"));
    wbody_free(&w);
    fixture_free(f);
}

static void test_incompatible_writer_rejected_at_setup(void **state)
{
    struct fixture f;
    config_init(&f, JD_WIRE_AUTO, -1);
    f.ids[0].file = (char *)src_path(6, "tests/fixtures/schemas/touchpoint_bad_type.avsc");
    assert_null(jd_codec_new(&f.cfg, f.err, sizeof(f.err)));
    assert_non_null(strstr(f.err, "schema id 1"));
    assert_non_null(strstr(f.err, "customer_id"));

    config_init(&f, JD_WIRE_AUTO, -1);
    f.ids[0].file = (char *)src_path(6, "tests/fixtures/schemas/does_not_exist.avsc");
    assert_null(jd_codec_new(&f.cfg, f.err, sizeof(f.err)));
    assert_non_null(strstr(f.err, "does_not_exist.avsc"));
}

/* ---- missing and empty required fields -------------------------------- */

static void test_missing_fields(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_AUTO, -1);
    struct jd_event out;
    const char *names[] = {"event_id", "customer_id", "type"};
    for (int i = 0; i < 3; i++) {
        struct jd_event in = sample_event();
        const char **field = i == 0 ? &in.event_id : i == 1 ? &in.customer_id : &in.type;
        *field = "";
        encode_sample(f, &in, -1);
        assert_int_equal(decode(f, f->buf.data, f->buf.len, &out), JD_DECODE_MISSING_FIELD);
        assert_non_null(strstr(f->err, names[i]));
        encode_sample(f, &in, ID_SAME);
        assert_int_equal(decode(f, f->buf.data, f->buf.len, &out), JD_DECODE_MISSING_FIELD);
        assert_non_null(strstr(f->err, names[i]));
    }
    /* encoding refuses NULL required strings */
    struct jd_event in = sample_event();
    in.customer_id = NULL;
    jd_buf_reset(&f->buf);
    assert_int_equal(jd_codec_encode_touchpoint(f->codec, &in, -1, &f->buf, f->err, sizeof(f->err)),
                     -1);
    assert_non_null(strstr(f->err, "customer_id"));
    fixture_free(f);
}

/* ---- corrupt bodies ---------------------------------------------------- */

static void test_truncated_every_length(void **state)
{
    enum jd_wire_format fmts[] = {JD_WIRE_AUTO, JD_WIRE_CONFLUENT, JD_WIRE_BARE};
    int ids[] = {-1, ID_SAME};
    for (int k = 0; k < 3; k++) {
        struct fixture *f = fixture_new(fmts[k], -1);
        for (int j = 0; j < 2; j++) {
            struct jd_event in = sample_event(), out;
            if (fmts[k] == JD_WIRE_CONFLUENT && ids[j] < 0)
                continue;
            if (fmts[k] == JD_WIRE_BARE && ids[j] >= 0)
                continue;
            encode_sample(f, &in, ids[j]);
            char *full = malloc(f->buf.len);
            size_t len = f->buf.len;
            memcpy(full, f->buf.data, len);
            assert_int_equal(decode(f, full, len, &out), JD_DECODE_OK);
            for (size_t n = 0; n < len; n++) {
                enum jd_decode_status st = decode(f, full, n, &out);
                if (st != JD_DECODE_MALFORMED)
                    fail_msg("format %d id %d: prefix %zu/%zu gave %s (%s)", k, ids[j], n, len,
                             jd_decode_status_name(st), f->err);
                assert_true(f->err[0] != '\0');
            }
            free(full);
        }
        fixture_free(f);
    }
}

static void test_trailing_bytes(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_AUTO, -1);
    struct jd_event in = sample_event(), out;
    encode_sample(f, &in, -1);
    jd_buf_append(&f->buf, "\x02", 1);
    assert_int_equal(decode(f, f->buf.data, f->buf.len, &out), JD_DECODE_MALFORMED);
    assert_non_null(strstr(f->err, "trailing"));
    fixture_free(f);
}

static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    p[0] = (uint8_t)(n * 2);
    memcpy(p + 1, s, n);
    return n + 1;
}

/* Hand-built bodies that would make avro-c misbehave if it saw them. */
static void test_crafted_bodies(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_BARE, -1);
    struct jd_event out;
    uint8_t b[128], hdr[64];
    size_t n, head;

    head = put_str(b, "e");
    head += put_str(b + head, "c");
    head += put_str(b + head, "t");
    head += put_str(b + head, "w");
    b[head++] = 0x02; /* occurred_at = 1 */
    memcpy(hdr, b, head);

    /* well-formed: amount null, currency null, score null, empty map */
    n = head;
    b[n++] = 0;
    b[n++] = 0;
    b[n++] = 0;
    b[n++] = 0;
    assert_int_equal(decode(f, b, n, &out), JD_DECODE_OK);
    assert_string_equal(out.channel, "w");

    /* union index out of range (7) */
    n = head;
    b[n++] = 14;
    assert_int_equal(decode(f, b, n, &out), JD_DECODE_MALFORMED);
    assert_non_null(strstr(f->err, "union index 7"));

    /* negative union index */
    n = head;
    b[n++] = 1;
    assert_int_equal(decode(f, b, n, &out), JD_DECODE_MALFORMED);

    /* string length of about 2^62 */
    n = 0;
    for (int i = 0; i < 8; i++)
        b[n++] = 0xfe;
    b[n++] = 0x7f;
    assert_int_equal(decode(f, b, n, &out), JD_DECODE_MALFORMED);
    assert_non_null(strstr(f->err, "exceeds"));

    /* varint longer than 10 bytes */
    memset(b, 0xff, 12);
    assert_int_equal(decode(f, b, 12, &out), JD_DECODE_MALFORMED);
    assert_non_null(strstr(f->err, "varint"));

    /* map claiming a huge block count */
    memcpy(b, hdr, head);
    n = head;
    b[n++] = 0;
    b[n++] = 0;
    b[n++] = 0;
    for (int i = 0; i < 8; i++)
        b[n++] = 0xfe;
    b[n++] = 0x7f;
    assert_int_equal(decode(f, b, n, &out), JD_DECODE_MALFORMED);

    /* negative block count with a block byte size, then one entry */
    memcpy(b, hdr, head);
    n = head;
    b[n++] = 0;
    b[n++] = 0;
    b[n++] = 0;
    b[n++] = 1; /* count -1 */
    b[n++] = 8; /* block size 4 */
    n += put_str(b + n, "k");
    n += put_str(b + n, "v");
    b[n++] = 0;
    assert_int_equal(decode(f, b, n, &out), JD_DECODE_OK);
    assert_int_equal(out.nattrs, 1);
    assert_string_equal(jd_event_attr(&out, "k"), "v");

    /* embedded NUL in customer_id */
    n = put_str(b, "e");
    b[n++] = 4;
    b[n++] = 'c';
    b[n++] = 0;
    n += put_str(b + n, "t");
    n += put_str(b + n, "w");
    b[n++] = 0x02;
    memset(b + n, 0, 4);
    n += 4;
    assert_int_equal(decode(f, b, n, &out), JD_DECODE_MALFORMED);
    assert_non_null(strstr(f->err, "customer_id"));

    assert_int_equal(decode(f, b, 0, &out), JD_DECODE_MALFORMED);
    fixture_free(f);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static void test_random_garbage(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_AUTO, -1);
    struct jd_event in = sample_event(), out;
    uint8_t b[96];
    int ok = 0;

    encode_sample(f, &in, ID_SAME);
    size_t vlen = f->buf.len;
    uint8_t valid[256];
    memcpy(valid, f->buf.data, vlen);
    for (int i = 0; i < 20000; i++) {
        size_t n;
        if (i % 2) {
            n = rnd() % sizeof(b);
            for (size_t j = 0; j < n; j++)
                b[j] = (uint8_t)rnd();
            if (n >= 5 && i % 4 == 1) { /* garbage behind a known id */
                static const int ids[] = {ID_SAME, ID_V2, ID_V0, ID_NO_OCC, ID_PROMOTED};
                memset(b, 0, 4);
                b[4] = (uint8_t)ids[rnd() % 5];
            }
        } else {
            /* a valid framed body with a few bytes changed */
            n = vlen;
            memcpy(b, valid, n);
            for (int m = 1 + rnd() % 3; m > 0; m--)
                b[5 + rnd() % (n - 5)] = (uint8_t)rnd();
        }
        enum jd_decode_status st = decode(f, b, n, &out);
        assert_true(st < JD_DECODE_STATUS_COUNT);
        if (st == JD_DECODE_OK) {
            ok++;
            assert_true(out.event_id[0] && out.customer_id[0] && out.type[0]);
            assert_non_null(out.channel);
            assert_true(out.nattrs <= JD_EVENT_MAX_ATTRS);
        } else {
            assert_true(f->err[0] != '\0');
        }
    }
    print_message("random garbage: %d of 20000 decoded\n", ok);
    fixture_free(f);
}

static void assert_same_result(struct fixture *a, struct fixture *b, const uint8_t *p, size_t n)
{
    struct jd_event x, y;
    memset(&x, 0, sizeof(x));
    memset(&y, 0, sizeof(y));
    enum jd_decode_status sa = decode(a, p, n, &x);
    enum jd_decode_status sb = decode(b, p, n, &y);
    if (sa != sb)
        fail_msg("direct %s (%s) vs avro-c %s (%s), %zu bytes", jd_decode_status_name(sa), a->err,
                 jd_decode_status_name(sb), b->err, n);
    if (sa == JD_DECODE_OK)
        assert_event_eq(&x, &y);
}

/* The direct decoder and the avro-c path agree on every body. */
static void test_direct_matches_avro(void **state)
{
    struct fixture *direct = fixture_new(JD_WIRE_AUTO, -1);
    struct fixture *avro = fixture_new(JD_WIRE_AUTO, -1);
    struct jd_codec *c = avro->codec;
    uint8_t b[256];

    assert_true(c->bare.nplan > 0);
    c->bare.nplan = 0;
    for (size_t i = 0; i < c->nids; i++) {
        if (c->ids[i].id == ID_PROMOTED)
            assert_int_equal(c->ids[i].nplan, 0); /* promotions always use avro-c */
        else
            assert_true(c->ids[i].nplan > 0);
        c->ids[i].nplan = 0;
    }

    struct jd_event in = sample_event();
    for (int variant = 0; variant < 4; variant++) {
        in.has_amount = variant & 1;
        in.currency = variant & 2 ? "USD" : NULL;
        in.has_score = !(variant & 1);
        in.nattrs = (size_t)variant % 3;
        for (int framed = 0; framed < 2; framed++) {
            encode_sample(direct, &in, framed ? ID_SAME : -1);
            size_t n = direct->buf.len;
            memcpy(b, direct->buf.data, n);
            for (size_t k = 0; k <= n; k++)
                assert_same_result(direct, avro, b, k);
            for (int r = 0; r < 3000; r++) {
                uint8_t m[256];
                memcpy(m, b, n);
                for (int j = 1 + rnd() % 3; j > 0; j--)
                    m[rnd() % n] = (uint8_t)rnd();
                assert_same_result(direct, avro, m, n);
            }
        }
    }
    fixture_free(direct);
    fixture_free(avro);
}

static void test_attribute_limit(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_AUTO, -1);
    struct jd_event in = sample_event(), out;
    char keys[JD_EVENT_MAX_ATTRS][8];
    in.nattrs = JD_EVENT_MAX_ATTRS;
    for (int i = 0; i < JD_EVENT_MAX_ATTRS; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        in.attr_keys[i] = keys[i];
        in.attr_vals[i] = keys[i];
    }
    encode_sample(f, &in, -1);
    assert_int_equal(decode(f, f->buf.data, f->buf.len, &out), JD_DECODE_OK);
    assert_int_equal(out.nattrs, JD_EVENT_MAX_ATTRS);
    assert_string_equal(out.attr_vals[31], "k31");

    /* more on the wire than fit: the first JD_EVENT_MAX_ATTRS are kept. A
     * map block of 40 entries is appended by hand to a body with no map. */
    in.nattrs = 0;
    encode_sample(f, &in, -1);
    f->buf.len--;     /* drop the empty map's 0 */
    uint8_t cnt = 80; /* zigzag 40 */
    jd_buf_append(&f->buf, &cnt, 1);
    for (int i = 0; i < 40; i++) {
        char kv[8];
        snprintf(kv, sizeof(kv), "a%02d", i);
        uint8_t l = 6;
        jd_buf_append(&f->buf, &l, 1);
        jd_buf_append(&f->buf, kv, 3);
        jd_buf_append(&f->buf, &l, 1);
        jd_buf_append(&f->buf, kv, 3);
    }
    jd_buf_append(&f->buf, "", 1);
    assert_int_equal(decode(f, f->buf.data, f->buf.len, &out), JD_DECODE_OK);
    assert_int_equal(out.nattrs, JD_EVENT_MAX_ATTRS);
    assert_string_equal(out.attr_keys[0], "a00");
    assert_string_equal(out.attr_vals[31], "a31");
    fixture_free(f);
}

/* ---- triggers ---------------------------------------------------------- */

static struct jd_trigger sample_trigger(void)
{
    struct jd_trigger t;
    memset(&t, 0, sizeof(t));
    strcpy(t.trigger_id, "0123456789abcdef0123456789abcdef");
    t.trigger = "vip_welcome";
    t.kind = JD_KIND_REENGAGEMENT;
    t.customer_id = "c-42";
    t.segment = "vip";
    t.journey_stage = "loyal";
    t.reason = "purchases_30d = 3 >= 3";
    t.fired_at = 1700000000000;
    t.source_event_id = "e-9";
    t.rule_version = "r1";
    t.nattrs = 2;
    t.attr_keys[0] = "lifetime_spend";
    t.attr_vals[0] = "310.50";
    t.attr_keys[1] = "last_channel";
    t.attr_vals[1] = "web";
    return t;
}

static void assert_trigger_eq(const struct jd_trigger *a, const struct jd_trigger *b)
{
    assert_string_equal(a->trigger_id, b->trigger_id);
    assert_string_equal(a->trigger, b->trigger);
    assert_int_equal(a->kind, b->kind);
    assert_string_equal(a->customer_id, b->customer_id);
    if (a->segment || b->segment)
        assert_string_equal(a->segment, b->segment);
    assert_string_equal(a->journey_stage, b->journey_stage);
    assert_string_equal(a->reason, b->reason);
    assert_int_equal(a->fired_at, b->fired_at);
    if (a->source_event_id || b->source_event_id)
        assert_string_equal(a->source_event_id, b->source_event_id);
    assert_string_equal(a->rule_version, b->rule_version);
    assert_int_equal(a->nattrs, b->nattrs);
    for (size_t i = 0; i < a->nattrs; i++) {
        assert_string_equal(a->attr_keys[i], b->attr_keys[i]);
        assert_string_equal(a->attr_vals[i], b->attr_vals[i]);
    }
}

static void test_trigger_roundtrip(void **state)
{
    int ids[] = {-1, 7};
    for (int k = 0; k < 2; k++) {
        struct fixture *f = fixture_new(JD_WIRE_AUTO, ids[k]);
        struct jd_trigger in = sample_trigger(), out;
        assert_int_equal(jd_codec_encode_trigger(f->codec, &in, &f->buf, f->err, sizeof(f->err)),
                         0);
        if (ids[k] >= 0) {
            assert_int_equal(f->buf.data[0], 0);
            assert_int_equal(f->buf.data[4], 7);
        } else {
            assert_int_not_equal(f->buf.data[0], 0);
        }
        assert_int_equal(jd_codec_decode_trigger(f->codec, f->buf.data, f->buf.len, &out, f->err,
                                                 sizeof(f->err)),
                         0);
        assert_trigger_eq(&in, &out);
        assert_int_equal(out.kind, JD_KIND_REENGAGEMENT);

        /* null unions, no attributes, the other kind */
        in.segment = NULL;
        in.source_event_id = NULL;
        in.nattrs = 0;
        in.kind = JD_KIND_REWARD;
        jd_buf_reset(&f->buf);
        assert_int_equal(jd_codec_encode_trigger(f->codec, &in, &f->buf, f->err, sizeof(f->err)),
                         0);
        assert_int_equal(jd_codec_decode_trigger(f->codec, f->buf.data, f->buf.len, &out, f->err,
                                                 sizeof(f->err)),
                         0);
        assert_trigger_eq(&in, &out);
        assert_null(out.segment);
        assert_null(out.source_event_id);
        assert_int_equal(out.nattrs, 0);
        assert_int_equal(out.kind, JD_KIND_REWARD);

        /* truncations never decode */
        for (size_t n = 0; n < f->buf.len; n++) {
            char *p = malloc(n ? n : 1);
            memcpy(p, f->buf.data, n);
            assert_int_equal(jd_codec_decode_trigger(f->codec, p, n, &out, f->err, sizeof(f->err)),
                             -1);
            free(p);
        }
        fixture_free(f);
    }
}

static void test_trigger_appends_and_grows(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_AUTO, 3);
    struct jd_trigger in = sample_trigger(), out;
    size_t big = 200000;
    char *reason = malloc(big + 1);
    memset(reason, 'r', big);
    reason[big] = '\0';
    in.reason = reason;

    jd_buf_append(&f->buf, "prefix", 6);
    assert_int_equal(jd_codec_encode_trigger(f->codec, &in, &f->buf, f->err, sizeof(f->err)), 0);
    assert_memory_equal(f->buf.data, "prefix", 6);
    assert_true(f->buf.len > big);
    assert_int_equal(jd_codec_decode_trigger(f->codec, f->buf.data + 6, f->buf.len - 6, &out,
                                             f->err, sizeof(f->err)),
                     0);
    assert_int_equal(strlen(out.reason), big);

    /* framed with an id other than the configured one */
    f->buf.data[6 + 4] = 9;
    assert_int_equal(jd_codec_decode_trigger(f->codec, f->buf.data + 6, f->buf.len - 6, &out,
                                             f->err, sizeof(f->err)),
                     -1);
    assert_non_null(strstr(f->err, "unknown schema id 9"));

    in.kind = JD_KIND_COUNT;
    assert_int_equal(jd_codec_encode_trigger(f->codec, &in, &f->buf, f->err, sizeof(f->err)), -1);
    free(reason);
    fixture_free(f);
}

static void test_trigger_deterministic(void **state)
{
    struct fixture *f = fixture_new(JD_WIRE_AUTO, 5);
    struct jd_trigger a = sample_trigger(), b = sample_trigger();
    struct jd_buf x, y;
    jd_buf_init(&x);
    jd_buf_init(&y);
    b.customer_id = "someone-else";
    b.segment = NULL;
    b.nattrs = 1;
    assert_int_equal(jd_codec_encode_trigger(f->codec, &a, &x, f->err, sizeof(f->err)), 0);
    assert_int_equal(jd_codec_encode_trigger(f->codec, &b, &f->buf, f->err, sizeof(f->err)), 0);
    assert_int_equal(jd_codec_encode_trigger(f->codec, &a, &y, f->err, sizeof(f->err)), 0);
    assert_int_equal(x.len, y.len);
    assert_memory_equal(x.data, y.data, x.len);
    assert_true(f->buf.len != x.len || memcmp(f->buf.data, x.data, x.len) != 0);

    /* a second codec gives the same bytes too */
    struct fixture *g = fixture_new(JD_WIRE_AUTO, 5);
    jd_buf_reset(&y);
    assert_int_equal(jd_codec_encode_trigger(g->codec, &a, &y, g->err, sizeof(g->err)), 0);
    assert_int_equal(x.len, y.len);
    assert_memory_equal(x.data, y.data, x.len);
    fixture_free(g);
    jd_buf_free(&x);
    jd_buf_free(&y);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_bare),
        cmocka_unit_test(test_roundtrip_framed),
        cmocka_unit_test(test_bare_in_confluent_mode),
        cmocka_unit_test(test_unknown_schema_id),
        cmocka_unit_test(test_bare_mode_ignores_framing),
        cmocka_unit_test(test_evolved_extra_fields),
        cmocka_unit_test(test_evolved_missing_optional),
        cmocka_unit_test(test_evolved_promoted_types),
        cmocka_unit_test(test_writer_without_occurred_at),
        cmocka_unit_test(test_incompatible_writer_rejected_at_setup),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_truncated_every_length),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_crafted_bodies),
        cmocka_unit_test(test_random_garbage),
        cmocka_unit_test(test_direct_matches_avro),
        cmocka_unit_test(test_attribute_limit),
        cmocka_unit_test(test_trigger_roundtrip),
        cmocka_unit_test(test_trigger_appends_and_grows),
        cmocka_unit_test(test_trigger_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
