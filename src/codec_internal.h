/*
 * codec_internal — the codec's private state, shared by codec.c (setup),
 * codec_validate.c (byte-level checks), codec_decode.c and codec_encode.c.
 * Nothing outside src/codec*.c includes this.
 */
#ifndef JOURNEYD_CODEC_INTERNAL_H
#define JOURNEYD_CODEC_INTERNAL_H

#include <avro.h>
#include <stddef.h>
#include <stdint.h>

#include "journeyd/codec.h"

/* Touchpoint reader fields, in the order of touchpoint.avsc. */
enum jd_tp_field {
    JD_TP_EVENT_ID = 0,
    JD_TP_CUSTOMER_ID,
    JD_TP_TYPE,
    JD_TP_CHANNEL,
    JD_TP_OCCURRED_AT,
    JD_TP_AMOUNT,
    JD_TP_CURRENCY,
    JD_TP_SCORE,
    JD_TP_ATTRIBUTES,
    JD_TP_NFIELDS
};
extern const char *const jd_tp_field_names[JD_TP_NFIELDS];

enum jd_tg_field {
    JD_TG_TRIGGER_ID = 0,
    JD_TG_TRIGGER,
    JD_TG_KIND,
    JD_TG_CUSTOMER_ID,
    JD_TG_SEGMENT,
    JD_TG_JOURNEY_STAGE,
    JD_TG_REASON,
    JD_TG_FIRED_AT,
    JD_TG_SOURCE_EVENT_ID,
    JD_TG_RULE_VERSION,
    JD_TG_ATTRIBUTES,
    JD_TG_NFIELDS
};
extern const char *const jd_tg_field_names[JD_TG_NFIELDS];

/* The direct decoder's program for one writer schema: one step per writer
 * field, in writer order. */
enum jd_plan_op {
    JD_OP_SKIP = 0,   /* a field the reader does not extract: check and step over */
    JD_OP_STR,        /* string -> string */
    JD_OP_LONG,       /* long -> long */
    JD_OP_OPT_DOUBLE, /* [null, double] (either order) */
    JD_OP_OPT_STR,    /* [null, string] */
    JD_OP_OPT_INT,    /* [null, int] */
    JD_OP_MAP_STR,    /* map<string> */
};

struct jd_plan_step {
    enum jd_plan_op op;
    enum jd_tp_field field;
    int null_branch, value_branch; /* writer union indexes for JD_OP_OPT_* */
    avro_schema_t skip;            /* JD_OP_SKIP: the writer field's schema */
};

/*
 * One writer schema and everything needed to decode its bodies, built once.
 *
 * avro-c 1.11 cannot fill reader defaults during resolution ("NIY: Default
 * values": a reader field absent from the writer fails the whole
 * resolution). So the destination of the resolution is a *projection* of the
 * reader schema: the reader's fields that the writer also has, in reader
 * order, with the reader's types. The decoder supplies the defaults for the
 * rest (null, empty map, "" for channel) or reports a missing required field.
 */
struct jd_codec_writer {
    int id; /* registry id; -1 for the bare-body writer (the reader schema) */
    const char *file;
    avro_schema_t schema;           /* writer schema */
    avro_schema_t dest_schema;      /* projection of the reader schema */
    avro_value_iface_t *dest_class; /* generic class of dest_schema */
    avro_value_t dest;              /* reused decode target */
    avro_value_iface_t *resolver;   /* resolved writer iface; NULL when writer == dest */
    avro_value_t resolved;          /* reads writer bytes into dest */
    int slot[JD_TP_NFIELDS];        /* field index in dest_schema, -1: not in writer */
    /* When every field the reader extracts has exactly the reader's type in
     * the writer (the common case, and always for bare bodies), bodies are
     * decoded directly by this plan, without avro-c; otherwise (type
     * promotions such as int -> long) through `resolved`. */
    struct jd_plan_step *plan;
    size_t nplan; /* 0: no plan, use avro-c */
};

/* Union ["null", X]: which branch is which. */
struct jd_opt_branches {
    int null_branch;
    int value_branch;
};

struct jd_codec {
    avro_schema_t tp_schema; /* reader schema (touchpoint.avsc) */
    enum jd_wire_format wire_format;
    struct jd_codec_writer bare; /* writer == reader */
    struct jd_codec_writer *ids; /* one per cfg->registry_ids */
    size_t nids;
    avro_reader_t reader; /* memory reader, re-pointed per body */

    /* touchpoint encoding (loadgen, tests): its own value so that encoding
     * an event that came from jd_codec_decode does not clobber its strings */
    avro_value_iface_t *tp_class;
    avro_value_t tp_enc;
    int tp_index[JD_TP_NFIELDS];
    struct jd_opt_branches tp_amount, tp_currency, tp_score;

    /* triggers */
    avro_schema_t tg_schema;
    int tg_schema_id;
    avro_value_iface_t *tg_class;
    avro_value_t tg_enc;
    avro_value_t tg_dec;
    int tg_index[JD_TG_NFIELDS];
    int tg_kind_symbol[JD_KIND_COUNT]; /* enum symbol index per jd_trigger_kind */
    struct jd_opt_branches tg_segment, tg_source_event_id;

    avro_writer_t writer;  /* memory writer, re-pointed into the output buffer */
    struct jd_buf strings; /* the direct decoder's NUL-terminated string copies */
};

/* Builds w->plan when the writer allows the direct decoder. */
void jd_codec_plan_build(struct jd_codec_writer *w);

/* A bounds-checked read position in one Avro binary body. Every function
 * returns 0, or -1 with a message (and the byte offset) in err. */
struct jd_avro_cur {
    const uint8_t *start;
    const uint8_t *p;
    const uint8_t *end;
    int depth;
    size_t empty_items;
    char *err;
    size_t errsize;
};

static inline size_t jd_cur_left(const struct jd_avro_cur *c)
{
    return (size_t)(c->end - c->p);
}
int jd_cur_fail(struct jd_avro_cur *c, const char *what);
int jd_cur_read_long(struct jd_avro_cur *c, int64_t *out);
/* A string/bytes/block length: non-negative and within the bytes left. */
int jd_cur_read_length(struct jd_avro_cur *c, const char *what, int64_t *len);
int jd_cur_advance(struct jd_avro_cur *c, size_t n, const char *what);
/* Checks and steps over one value of schema s. */
int jd_cur_skip(struct jd_avro_cur *c, avro_schema_t s);

/* Checks that [p, p+len) is exactly one well-formed datum of `schema`:
 * varints of at most 10 bytes, lengths within the buffer, union and enum
 * indexes in range, ints in range, no trailing bytes. avro-c trusts its input
 * (an out-of-range union index is an out-of-bounds read; a garbage length is
 * a huge allocation), so every body is checked before avro-c sees it. 0, or
 * -1 with errstr. */
int jd_codec_validate(avro_schema_t schema, const uint8_t *p, size_t len, char *errstr,
                      size_t errsize);

/* Locates the null and the non-null branch of a ["null", X] union whose X is
 * of type `want`. 0 or -1. */
int jd_codec_opt_branches(avro_schema_t u, avro_type_t want, struct jd_opt_branches *out);

#endif
