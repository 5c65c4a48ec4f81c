/*
 * codec_validate — a bounds-checked walk over one Avro binary datum, driven
 * by its writer schema, run before avro-c reads the body. avro-c 1.11 trusts
 * its input: a union index past the last branch indexes its branch table out
 * of bounds, a garbage string length becomes a malloc of that size, and
 * block counts of zero-sized items loop for as long as they say. After this
 * check passes, avro-c only ever sees well-formed bodies. It also detects
 * trailing bytes, which avro-c cannot report from a memory reader.
 * Cost: one pass over the bytes, no allocation.
 */
#include "codec_internal.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#define JD_VALIDATE_MAX_DEPTH 64
/* Items of a zero-byte type (null, empty record) cost nothing on the wire:
 * cap how many one body may claim. */
#define JD_VALIDATE_MAX_EMPTY_ITEMS 65536

int jd_cur_fail(struct jd_avro_cur *c, const char *what)
{
    snprintf(c->err, c->errsize, "%s at byte %zu", what, (size_t)(c->p - c->start));
    return -1;
}

int jd_cur_read_long(struct jd_avro_cur *c, int64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->p >= c->end)
            return jd_cur_fail(c, "truncated varint");
        uint8_t b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)((v >> 1) ^ (~(v & 1) + 1));
            return 0;
        }
    }
    return jd_cur_fail(c, "varint longer than 10 bytes");
}

int jd_cur_advance(struct jd_avro_cur *c, size_t n, const char *what)
{
    if (jd_cur_left(c) < n) {
        char msg[96];
        snprintf(msg, sizeof(msg), "truncated %s (needs %zu bytes, %zu left)", what, n,
                 jd_cur_left(c));
        return jd_cur_fail(c, msg);
    }
    c->p += n;
    return 0;
}

int jd_cur_read_length(struct jd_avro_cur *c, const char *what, int64_t *len)
{
    if (jd_cur_read_long(c, len) != 0)
        return -1;
    if (*len < 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "negative %s length %" PRId64, what, *len);
        return jd_cur_fail(c, msg);
    }
    if ((uint64_t)*len > jd_cur_left(c)) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s length %" PRId64 " exceeds the %zu bytes left", what, *len,
                 jd_cur_left(c));
        return jd_cur_fail(c, msg);
    }
    return 0;
}

static avro_schema_t deref(avro_schema_t s)
{
    while (is_avro_link(s))
        s = avro_schema_link_target(s);
    return s;
}

/* 1 when a value of s encodes to zero bytes. */
static int zero_sized(avro_schema_t s, int depth)
{
    s = deref(s);
    if (depth > 8)
        return 0;
    if (is_avro_null(s))
        return 1;
    if (is_avro_fixed(s))
        return avro_schema_fixed_size(s) == 0;
    if (!is_avro_record(s))
        return 0;
    size_t n = avro_schema_record_size(s);
    for (size_t i = 0; i < n; i++)
        if (!zero_sized(avro_schema_record_field_get_by_index(s, (int)i), depth + 1))
            return 0;
    return 1;
}

/* Arrays and maps: blocks of (count[, byte size]) items, ended by count 0. */
static int walk_blocks(struct jd_avro_cur *c, avro_schema_t items, int is_map)
{
    int empty = !is_map && zero_sized(items, 0);
    for (;;) {
        int64_t count, bytes;
        if (jd_cur_read_long(c, &count) != 0)
            return -1;
        if (count == 0)
            return 0;
        if (count < 0) {
            if (count == INT64_MIN)
                return jd_cur_fail(c, "invalid block count");
            count = -count;
            if (jd_cur_read_length(c, "block", &bytes) != 0)
                return -1;
        }
        if (empty) {
            c->empty_items += (size_t)count;
            if ((uint64_t)count > JD_VALIDATE_MAX_EMPTY_ITEMS ||
                c->empty_items > JD_VALIDATE_MAX_EMPTY_ITEMS)
                return jd_cur_fail(c, "too many zero-sized items");
        } else if ((uint64_t)count > jd_cur_left(c)) {
            return jd_cur_fail(c, "block count exceeds the bytes left");
        }
        for (int64_t i = 0; i < count; i++) {
            if (is_map) {
                int64_t klen;
                if (jd_cur_read_length(c, "map key", &klen) != 0)
                    return -1;
                /* avro-c keeps map keys as C strings and would cut them short */
                if (memchr(c->p, 0, (size_t)klen))
                    return jd_cur_fail(c, "map key contains a NUL byte");
                c->p += klen;
            }
            if (jd_cur_skip(c, items) != 0)
                return -1;
        }
    }
}

int jd_cur_skip(struct jd_avro_cur *c, avro_schema_t s)
{
    int64_t v;
    int rc = 0;

    s = deref(s);
    if (!s)
        return jd_cur_fail(c, "unresolved schema reference");
    if (++c->depth > JD_VALIDATE_MAX_DEPTH)
        return jd_cur_fail(c, "nesting too deep");
    switch (avro_typeof(s)) {
    case AVRO_NULL:
        break;
    case AVRO_BOOLEAN:
        if (jd_cur_left(c) < 1)
            rc = jd_cur_fail(c, "truncated boolean");
        else if (*c->p > 1)
            rc = jd_cur_fail(c, "invalid boolean");
        else
            c->p++;
        break;
    case AVRO_INT32:
        if ((rc = jd_cur_read_long(c, &v)) == 0 && (v < INT32_MIN || v > INT32_MAX))
            rc = jd_cur_fail(c, "int out of range");
        break;
    case AVRO_INT64:
        rc = jd_cur_read_long(c, &v);
        break;
    case AVRO_FLOAT:
        rc = jd_cur_advance(c, 4, "float");
        break;
    case AVRO_DOUBLE:
        rc = jd_cur_advance(c, 8, "double");
        break;
    case AVRO_STRING:
    case AVRO_BYTES:
        if ((rc = jd_cur_read_length(c, "string", &v)) == 0)
            rc = jd_cur_advance(c, (size_t)v, "string");
        break;
    case AVRO_FIXED:
        rc = jd_cur_advance(c, (size_t)avro_schema_fixed_size(s), "fixed");
        break;
    case AVRO_ENUM:
        if ((rc = jd_cur_read_long(c, &v)) == 0 &&
            (v < 0 || v >= avro_schema_enum_number_of_symbols(s)))
            rc = jd_cur_fail(c, "enum index out of range");
        break;
    case AVRO_RECORD: {
        size_t n = avro_schema_record_size(s);
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = jd_cur_skip(c, avro_schema_record_field_get_by_index(s, (int)i));
        break;
    }
    case AVRO_UNION:
        if ((rc = jd_cur_read_long(c, &v)) != 0)
            break;
        if (v < 0 || (uint64_t)v >= avro_schema_union_size(s)) {
            char msg[64];
            snprintf(msg, sizeof(msg), "union index %" PRId64 " out of range", v);
            rc = jd_cur_fail(c, msg);
            break;
        }
        rc = jd_cur_skip(c, avro_schema_union_branch(s, (int)v));
        break;
    case AVRO_ARRAY:
        rc = walk_blocks(c, avro_schema_array_items(s), 0);
        break;
    case AVRO_MAP:
        rc = walk_blocks(c, avro_schema_map_values(s), 1);
        break;
    default:
        rc = jd_cur_fail(c, "unsupported schema type");
        break;
    }
    c->depth--;
    return rc;
}

int jd_codec_validate(avro_schema_t schema, const uint8_t *p, size_t len, char *errstr,
                      size_t errsize)
{
    struct jd_avro_cur c = {p, p, p + len, 0, 0, errstr, errsize};
    if (jd_cur_skip(&c, schema) != 0)
        return -1;
    if (c.p != c.end) {
        snprintf(errstr, errsize, "%zu trailing bytes after the record (body is %zu bytes)",
                 jd_cur_left(&c), len);
        return -1;
    }
    return 0;
}
