/*
 * config_internal — the declarative key table shared by the loader
 * (config.c), the source locator (config_source.c) and the reference writer
 * (config_table.c). Private to the config module.
 */
#ifndef JOURNEYD_CONFIG_INTERNAL_H
#define JOURNEYD_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

enum jd_cfg_type {
    JD_CFG_SECTION,   /* a group of keys: kafka = { ... } */
    JD_CFG_GROUPLIST, /* a list of groups: stages = ( { ... }, ... ) */
    JD_CFG_STRING,
    JD_CFG_PATH, /* a string; relative paths resolve against the config's directory */
    JD_CFG_INT,  /* stored in a field of `size` bytes (int or int64_t) */
    JD_CFG_FLOAT,
    JD_CFG_BOOL,
    JD_CFG_DURATION,  /* a string ("5ms", "30d") stored as ms in an int or int64_t */
    JD_CFG_ENUM,      /* a string among `choices`, stored as its index in an int */
    JD_CFG_STRLIST,   /* [ "a", "b" ]: char ** at off, size_t count at off2 */
    JD_CFG_PROPS,     /* ( ("name", "value"), ... ): char ** pairs at off, count at off2 */
    JD_CFG_KINDSET,   /* [ "REWARD", ... ]: unsigned bit set (1 << kind) */
    JD_CFG_CLOCKTIME, /* "HH:MM": int minutes after midnight */
    JD_CFG_NAME,      /* a rule name: char * */
    JD_CFG_EXPR,      /* a rule expression: struct jd_rule_src at off (expr, position) */
    JD_CFG_PAYLOAD,   /* ( ("key", "expr"), ... ): jd_payload_src * at off, count at off2 */
};

enum {
    JD_CFG_F_RELOAD = 1 << 0,   /* takes effect on SIGHUP */
    JD_CFG_F_REQUIRED = 1 << 1, /* no default: must be written */
    JD_CFG_F_NONEMPTY = 1 << 2, /* strings and lists may not be empty */
    JD_CFG_F_HOSTPORT = 1 << 3, /* every string is host:port */
    JD_CFG_F_UNIQUE = 1 << 4,   /* group list whose `name`s must be unique */
    JD_CFG_F_BOUNDS = 1 << 5,   /* min/max apply */
};

struct jd_cfg_key {
    /* Full path as written in the reference: "kafka.group_id", "triggers[].cooldown".
     * Elements of a group list are the list's path followed by "[]." */
    const char *path;
    enum jd_cfg_type type;
    /* Default, written as in the file but without quotes; lists are
     * comma-separated. NULL: no default (unset, or JD_CFG_F_REQUIRED). */
    const char *def;
    unsigned flags;
    double min, max;            /* JD_CFG_F_BOUNDS: ints, floats, durations (ms), list lengths */
    const char *const *choices; /* JD_CFG_ENUM: NULL-terminated */
    size_t off;                 /* field offset in the base struct (jd_config or the element) */
    size_t off2;                /* count field for lists */
    size_t size;                /* field size for ints/durations; element size for group lists */
    const char *help;
};

#define JD_CFG_MAX_KEYS 256

/* The field at byte offset `off` of a struct the table describes. */
#define FIELD(base, off, type) ((type *)((char *)(base) + (off)))

extern const struct jd_cfg_key jd_cfg_keys[];
extern const size_t jd_cfg_nkeys;

const struct jd_cfg_key *jd_cfg_key_find(const char *path);

/* Whether `k` is a direct member of the group whose keys start with `scope`
 * ("" for the root, "kafka.", "triggers[]."). */
int jd_cfg_in_scope(const struct jd_cfg_key *k, const char *scope);
void jd_cfg_store_str(char **slot, const char *v);
void jd_cfg_free_strings(char **list, size_t n);

/* Where a string literal stands in a config file. */
struct jd_cfg_text;
struct jd_buf;
struct jd_cfg_text *jd_cfg_text_load(const char *file);
/* The same from text in hand: takes content's memory (content is left empty). */
struct jd_cfg_text *jd_cfg_text_of(struct jd_buf *content);
void jd_cfg_text_free(struct jd_cfg_text *t);
/* Finds the string literal assigned to `key` on (or, when the value starts
 * on a later line, after) line `line`; when `key` is NULL, the first literal
 * on `line` at or after byte column `from_col` whose text starts `expect`.
 * Sets *out_line and *out_col (1-based, the first byte inside the quotes)
 * and *end_col (the column just past the closing quote). *out_col is 0 when
 * the literal's raw bytes are not exactly `expect` (escapes, or literals
 * concatenated), since offsets inside the expression would then be wrong.
 * Returns 0, or -1 when no literal was found. */
int jd_cfg_text_locate(const struct jd_cfg_text *t, int line, const char *key, int from_col,
                       const char *expect, int *out_line, int *out_col, int *end_col);

#endif
