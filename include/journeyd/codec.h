/*
 * codec — Avro (avro-c) in and out. Decodes Touchpoint values in either wire
 * format (Confluent framing: 0x00, 4-byte big-endian schema id, body; or a
 * bare body) with writer -> reader schema resolution, and encodes Trigger
 * values. Schemas are parsed once at jd_codec_new; decoding reuses one
 * resolved reader per writer schema and one value, with no per-event schema
 * work.
 */
#ifndef JOURNEYD_CODEC_H
#define JOURNEYD_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "journeyd/config.h"
#include "journeyd/event.h"
#include "journeyd/util.h"

struct jd_codec;

enum jd_decode_status {
    JD_DECODE_OK = 0,
    JD_DECODE_MALFORMED,      /* not a valid Avro body for the writer schema */
    JD_DECODE_UNKNOWN_SCHEMA, /* Confluent framing with an id the config does not know
                                 (only with wire_format = confluent; in auto such a body
                                 is tried as bare) */
    JD_DECODE_MISSING_FIELD,  /* empty customer_id, event_id, type, or no occurred_at */
    JD_DECODE_STATUS_COUNT
};
/* Short stable name for metrics labels: "malformed", "unknown_schema", "missing_field". */
const char *jd_decode_status_name(enum jd_decode_status s);

struct jd_trigger {
    char trigger_id[33];
    const char *trigger;
    enum jd_trigger_kind kind;
    const char *customer_id;
    const char *segment; /* NULL */
    const char *journey_stage;
    const char *reason;
    int64_t fired_at;
    const char *source_event_id; /* NULL for timer-driven */
    const char *rule_version;
    size_t nattrs;
    const char *attr_keys[16];
    const char *attr_vals[16];
};

/* Parses the schemas named in cfg (touchpoint reader schema, registry id ->
 * writer schema files, trigger schema). NULL with errstr on failure. */
struct jd_codec *jd_codec_new(const struct jd_config *cfg, char *errstr, size_t errsize);
void jd_codec_destroy(struct jd_codec *codec);

/* Decodes one Kafka value into ev (strings valid until the next decode).
 * On failure errstr says what is wrong, for the DLQ header. Trailing bytes
 * after the record and strings with embedded NUL bytes are MALFORMED;
 * attributes beyond JD_EVENT_MAX_ATTRS are ignored; ev->partition and
 * ev->offset are not touched. */
enum jd_decode_status jd_codec_decode(struct jd_codec *codec, const void *buf, size_t len,
                                      struct jd_event *ev, char *errstr, size_t errsize);

/* Decodes a Trigger value (journeyctl, tests) into t; its strings point into
 * codec-owned storage valid until the next jd_codec_decode_trigger. A value
 * starting with 0x00 is taken as Confluent-framed (its id must equal
 * cfg->trigger_schema_id when that is >= 0). Attributes beyond 16 are
 * ignored. 0, or -1 with errstr. */
int jd_codec_decode_trigger(struct jd_codec *codec, const void *buf, size_t len,
                            struct jd_trigger *t, char *errstr, size_t errsize) JD_MUST_CHECK;

/* Encodes a trigger (Confluent-framed when cfg->trigger_schema_id >= 0, bare
 * otherwise), appending to out. 0, or -1 with errstr. */
int jd_codec_encode_trigger(struct jd_codec *codec, const struct jd_trigger *t, struct jd_buf *out,
                            char *errstr, size_t errsize) JD_MUST_CHECK;

/* Encodes a touchpoint (used by journey-loadgen and tests); framing per
 * schema_id (>= 0: Confluent with that id; -1: bare). The body is always
 * written with the touchpoint (reader) schema, so a schema_id >= 0 should be
 * an id that maps to that schema. NULL channel is written as "". */
int jd_codec_encode_touchpoint(struct jd_codec *codec, const struct jd_event *ev, int schema_id,
                               struct jd_buf *out, char *errstr, size_t errsize) JD_MUST_CHECK;

#endif
