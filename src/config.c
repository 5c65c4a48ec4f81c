/*
 * config — loads the one configuration file with libconfig and checks it
 * against the key table (config_table.c): every unknown key, wrong type,
 * out-of-bounds or malformed value is reported as "FILE:LINE: error: ...",
 * all of them in one pass. Builds struct jd_config (config_lifetime.c frees
 * it); the rule and policy sources it carries are compiled elsewhere.
 */
#include "journeyd/config.h"

#include <errno.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"

struct text_cache {
    const char *file;
    struct jd_cfg_text *text;
};

struct loader {
    struct jd_config *cfg;
    struct jd_errors *errs;
    struct text_cache texts[8];
    size_t ntexts;
    const char *text; /* the config file's content when loaded from text (jd_config_load_text) */
};

static const char *keep_file(struct loader *L, const char *file);

/* The file a setting came from, as a name that lives as long as the config.
 * libconfig names an @include'd file as written in the directive, but opens
 * it relative to the include directory (the config's own directory). */
static const char *file_of(struct loader *L, const config_setting_t *s)
{
    const char *f = s ? config_setting_source_file(s) : NULL;
    if (!f || strcmp(f, L->cfg->path) == 0)
        return L->cfg->path;
    if (f[0] == '/')
        return keep_file(L, f);
    char joined[1024];
    snprintf(joined, sizeof joined, "%s/%s", L->cfg->dir, f);
    return keep_file(L, joined);
}

static void error_at(struct loader *L, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void error_at(struct loader *L, const config_setting_t *s, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = s ? (int)config_setting_source_line(s) : 0;
    jd_errors_add(L->errs, file_of(L, s), line, 0, "%s", msg);
}

static const char *lc_type_name(int type)
{
    switch (type) {
    case CONFIG_TYPE_GROUP:
        return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a float";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    default:
        return "nothing";
    }
}

static const char *expected_of(const struct jd_cfg_key *k)
{
    switch (k->type) {
    case JD_CFG_SECTION:
        return "a group { ... }";
    case JD_CFG_GROUPLIST:
        return "a list of groups ( { ... }, ... )";
    case JD_CFG_INT:
        return "an integer";
    case JD_CFG_FLOAT:
        return "a number";
    case JD_CFG_BOOL:
        return "a boolean (true or false)";
    case JD_CFG_DURATION:
        return "a duration string such as \"30d\"";
    case JD_CFG_STRLIST:
    case JD_CFG_KINDSET:
        return "a list of strings [ \"...\", ... ]";
    case JD_CFG_PROPS:
        return "a list of pairs ( (\"name\", \"value\"), ... )";
    case JD_CFG_PAYLOAD:
        return "a list of pairs ( (\"key\", \"expression\"), ... )";
    default:
        return "a string";
    }
}

static void wrong_type(struct loader *L, const config_setting_t *s, const struct jd_cfg_key *k,
                       const char *disp)
{
    error_at(L, s, "%s: expected %s, got %s", disp, expected_of(k),
             lc_type_name(config_setting_type(s)));
}

/* The text of `file`, read once per load for locating rule strings. */
static const struct jd_cfg_text *text_of(struct loader *L, const char *file)
{
    for (size_t i = 0; i < L->ntexts; i++)
        if (strcmp(L->texts[i].file, file) == 0)
            return L->texts[i].text;
    if (L->ntexts == sizeof L->texts / sizeof L->texts[0])
        return NULL;
    L->texts[L->ntexts].file = file;
    if (L->text && strcmp(file, L->cfg->path) == 0) {
        struct jd_buf b;
        jd_buf_init(&b);
        jd_buf_puts(&b, L->text);
        L->texts[L->ntexts].text = jd_cfg_text_of(&b);
    } else {
        L->texts[L->ntexts].text = jd_cfg_text_load(file);
    }
    return L->texts[L->ntexts++].text;
}

/* A file name that lives as long as the config (rule positions point at it). */
static const char *keep_file(struct loader *L, const char *file)
{
    struct jd_config *cfg = L->cfg;
    if (strcmp(file, cfg->path) == 0)
        return cfg->path;
    for (size_t i = 0; i < cfg->nincluded; i++)
        if (strcmp(cfg->included[i], file) == 0)
            return cfg->included[i];
    cfg->included = jd_xrealloc(cfg->included, (cfg->nincluded + 1) * sizeof *cfg->included);
    cfg->included[cfg->nincluded] = jd_strdup(file);
    return cfg->included[cfg->nincluded++];
}

/* ---- storing values ---- */

void jd_cfg_store_str(char **slot, const char *v)
{
    free(*slot);
    *slot = jd_strdup(v);
}

static void store_int(void *field, size_t size, int64_t v)
{
    if (size == sizeof(int64_t))
        *(int64_t *)field = v;
    else
        *(int *)field = (int)v;
}

static char *resolve_path(const struct jd_config *cfg, const char *p)
{
    if (p[0] == '/')
        return jd_strdup(p);
    size_t n = strlen(cfg->dir) + strlen(p) + 2;
    char *r = jd_xmalloc(n);
    snprintf(r, n, "%s/%s", cfg->dir, p);
    return r;
}

static int enum_index(const struct jd_cfg_key *k, const char *v)
{
    for (int i = 0; k->choices[i]; i++)
        if (strcmp(k->choices[i], v) == 0)
            return i;
    return -1;
}

static void choices_text(const struct jd_cfg_key *k, char *buf, size_t size)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; k->choices[i] && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, "%s%s", i ? ", " : "", k->choices[i]);
}

static int parse_clocktime(const char *v, int *minutes)
{
    int h, m, n = 0;
    if (sscanf(v, "%2d:%2d%n", &h, &m, &n) != 2 || v[n] || strlen(v) != 5 || h < 0 || h > 23 ||
        m < 0 || m > 59)
        return -1;
    *minutes = h * 60 + m;
    return 0;
}

static int valid_name(const char *s)
{
    if (!(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    for (const char *p = s; *p; p++)
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9')))
            return 0;
    return 1;
}

static void bounds_text(const struct jd_cfg_key *k, char *buf, size_t size)
{
    if (k->type == JD_CFG_DURATION) {
        char a[32], b[32];
        snprintf(buf, size, "%s..%s", jd_format_duration((int64_t)k->min, a, sizeof a),
                 jd_format_duration((int64_t)k->max, b, sizeof b));
    } else if (k->type == JD_CFG_FLOAT) {
        snprintf(buf, size, "%g..%g", k->min, k->max);
    } else {
        snprintf(buf, size, "%.0f..%.0f", k->min, k->max);
    }
}

static int out_of_bounds(const struct jd_cfg_key *k, double v)
{
    return (k->flags & JD_CFG_F_BOUNDS) && (v < k->min || v > k->max);
}

/* Stores a value given as text: a default from the table (s == NULL, where
 * a failure is a bug in the table) or a string from the file. */
static int set_text(struct loader *L, const struct jd_cfg_key *k, void *base, const char *v,
                    const char *disp, const config_setting_t *s)
{
    void *field = (char *)base + k->off;
    char buf[256];
    if ((k->flags & JD_CFG_F_NONEMPTY) && !v[0] && k->type != JD_CFG_STRLIST &&
        k->type != JD_CFG_KINDSET) {
        error_at(L, s, "%s: must not be empty", disp);
        return -1;
    }
    switch (k->type) {
    case JD_CFG_STRING:
        jd_cfg_store_str(field, v);
        return 0;
    case JD_CFG_NAME:
        if (!valid_name(v)) {
            error_at(L, s,
                     "%s: invalid name '%s' (letters, digits and _, not starting with a digit)",
                     disp, v);
            return -1;
        }
        jd_cfg_store_str(field, v);
        return 0;
    case JD_CFG_PATH:
        free(*(char **)field);
        *(char **)field = resolve_path(L->cfg, v);
        return 0;
    case JD_CFG_DURATION: {
        int64_t ms;
        if (jd_parse_duration(v, &ms) != 0) {
            error_at(L, s, "%s: bad duration '%s' (expected e.g. 500ms, 45s, 15m, 12h, 30d, 2w)",
                     disp, v);
            return -1;
        }
        if (out_of_bounds(k, (double)ms)) {
            bounds_text(k, buf, sizeof buf);
            error_at(L, s, "%s: %s is out of bounds (%s)", disp, v, buf);
            return -1;
        }
        store_int(field, k->size, ms);
        return 0;
    }
    case JD_CFG_ENUM: {
        int i = enum_index(k, v);
        if (i < 0) {
            choices_text(k, buf, sizeof buf);
            error_at(L, s, "%s: bad value '%s' (expected one of: %s)", disp, v, buf);
            return -1;
        }
        *(int *)field = i;
        return 0;
    }
    case JD_CFG_CLOCKTIME:
        if (parse_clocktime(v, (int *)field) != 0) {
            error_at(L, s, "%s: bad time of day '%s' (expected HH:MM, 00:00 to 23:59)", disp, v);
            return -1;
        }
        return 0;
    /* The remaining kinds come as text only from the table's defaults. */
    case JD_CFG_INT:
        store_int(field, k->size, strtoll(v, NULL, 10));
        return 0;
    case JD_CFG_FLOAT:
        *(double *)field = strtod(v, NULL);
        return 0;
    case JD_CFG_BOOL:
        *(int *)field = strcmp(v, "true") == 0;
        return 0;
    case JD_CFG_STRLIST: {
        char ***list = field;
        size_t *n = FIELD(base, k->off2, size_t);
        jd_cfg_free_strings(*list, *n);
        *list = NULL;
        *n = 0;
        for (const char *p = v; *p;) {
            size_t len = strcspn(p, ",");
            *list = jd_xrealloc(*list, (*n + 1) * sizeof **list);
            (*list)[*n] = jd_xmalloc(len + 1);
            memcpy((*list)[*n], p, len);
            (*list)[(*n)++][len] = '\0';
            p += len + (p[len] == ',');
        }
        return 0;
    }
    case JD_CFG_KINDSET: {
        unsigned mask = 0;
        for (const char *p = v; *p;) {
            size_t len = strcspn(p, ",");
            for (int i = 0; k->choices[i]; i++)
                if (strlen(k->choices[i]) == len && strncmp(k->choices[i], p, len) == 0)
                    mask |= 1u << i;
            p += len + (p[len] == ',');
        }
        *(unsigned *)field = mask;
        return 0;
    }
    default:
        return 0;
    }
}

/* ---- the table walk ---- */

int jd_cfg_in_scope(const struct jd_cfg_key *k, const char *scope)
{
    size_t n = strlen(scope);
    if (strncmp(k->path, scope, n) != 0)
        return 0;
    return k->path[n] && !strpbrk(k->path + n, ".[");
}

static void apply_defaults(struct loader *L, void *base, const char *scope, int recurse)
{
    for (size_t i = 0; i < jd_cfg_nkeys; i++) {
        const struct jd_cfg_key *k = &jd_cfg_keys[i];
        if (!jd_cfg_in_scope(k, scope))
            continue;
        if (k->type == JD_CFG_SECTION && recurse) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.", k->path);
            apply_defaults(L, base, sub, recurse);
        } else if (k->def && set_text(L, k, base, k->def, k->path, NULL) != 0) {
            abort(); /* a default in the table that its own checks reject */
        }
    }
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[64], cur[64];
    if (la >= 63 || lb >= 63)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            cur[j] = del < ins ? (del < sub ? del : sub) : (ins < sub ? ins : sub);
        }
        memcpy(prev, cur, (lb + 1) * sizeof *prev);
    }
    return prev[lb];
}

static void unknown_key(struct loader *L, const config_setting_t *s, const char *scope,
                        const char *disp_scope, const char *name)
{
    const char *best = NULL;
    size_t best_d = 3;
    for (size_t i = 0; i < jd_cfg_nkeys; i++) {
        const struct jd_cfg_key *k = &jd_cfg_keys[i];
        if (!jd_cfg_in_scope(k, scope))
            continue;
        size_t d = edit_distance(name, k->path + strlen(scope));
        if (d < best_d && d < strlen(name)) {
            best_d = d;
            best = k->path + strlen(scope);
        }
    }
    if (best)
        error_at(L, s, "unknown key '%s%s' (did you mean '%s'?)", disp_scope, name, best);
    else
        error_at(L, s, "unknown key '%s%s'", disp_scope, name);
}

static void walk(struct loader *L, const config_setting_t *grp, const char *scope,
                 const char *disp_scope, void *base);

static int is_list(const config_setting_t *s)
{
    int t = config_setting_type(s);
    return t == CONFIG_TYPE_LIST || t == CONFIG_TYPE_ARRAY;
}

/* A list of strings; NULL (with an error) when an element is not a string. */
static const char **string_elems(struct loader *L, const config_setting_t *s, const char *disp,
                                 size_t *n)
{
    *n = (size_t)config_setting_length(s);
    const char **v = jd_xcalloc(*n ? *n : 1, sizeof *v);
    for (size_t i = 0; i < *n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            error_at(L, e, "%s[%zu]: expected a string, got %s", disp, i,
                     lc_type_name(config_setting_type(e)));
            free(v);
            return NULL;
        }
        v[i] = config_setting_get_string(e);
    }
    return v;
}

static void load_strlist(struct loader *L, const struct jd_cfg_key *k, const config_setting_t *s,
                         const char *disp, void *base)
{
    size_t n;
    const char **v = string_elems(L, s, disp, &n);
    if (!v)
        return;
    int bad = 0;
    if ((k->flags & JD_CFG_F_NONEMPTY) && n == 0) {
        error_at(L, s, "%s: must list at least one value", disp);
        bad = 1;
    }
    unsigned mask = 0;
    for (size_t i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        char host[256];
        int port;
        if (!v[i][0]) {
            error_at(L, e, "%s[%zu]: must not be empty", disp, i);
            bad = 1;
        } else if ((k->flags & JD_CFG_F_HOSTPORT) &&
                   jd_parse_hostport(v[i], host, sizeof host, &port) != 0) {
            error_at(L, e, "%s[%zu]: bad address '%s' (expected HOST:PORT)", disp, i, v[i]);
            bad = 1;
        } else if (k->type == JD_CFG_KINDSET) {
            int ix = enum_index(k, v[i]);
            if (ix < 0) {
                char choices[128];
                choices_text(k, choices, sizeof choices);
                error_at(L, e, "%s[%zu]: bad value '%s' (expected one of: %s)", disp, i, v[i],
                         choices);
                bad = 1;
            } else {
                mask |= 1u << ix;
            }
        }
    }
    if (!bad && k->type == JD_CFG_KINDSET) {
        *FIELD(base, k->off, unsigned) = mask;
    } else if (!bad) {
        char ***list = FIELD(base, k->off, char **);
        size_t *count = FIELD(base, k->off2, size_t);
        jd_cfg_free_strings(*list, *count);
        *list = jd_xcalloc(n ? n : 1, sizeof **list);
        for (size_t i = 0; i < n; i++)
            (*list)[i] = jd_strdup(v[i]);
        *count = n;
    }
    free(v);
}

/* The two strings of a ("a", "b") pair, or -1 with an error. */
static int pair_elems(struct loader *L, const config_setting_t *e, const char *disp, size_t i,
                      const char *what, const char *out[2])
{
    if (!is_list(e) || config_setting_length(e) != 2 ||
        config_setting_type(config_setting_get_elem(e, 0)) != CONFIG_TYPE_STRING ||
        config_setting_type(config_setting_get_elem(e, 1)) != CONFIG_TYPE_STRING) {
        error_at(L, e, "%s[%zu]: expected a pair of strings %s", disp, i, what);
        return -1;
    }
    out[0] = config_setting_get_string(config_setting_get_elem(e, 0));
    out[1] = config_setting_get_string(config_setting_get_elem(e, 1));
    if (!out[0][0]) {
        error_at(L, e, "%s[%zu]: the name must not be empty", disp, i);
        return -1;
    }
    return 0;
}

static void load_props(struct loader *L, const struct jd_cfg_key *k, const config_setting_t *s,
                       const char *disp, void *base)
{
    char ***list = FIELD(base, k->off, char **);
    size_t *count = FIELD(base, k->off2, size_t);
    size_t n = (size_t)config_setting_length(s);
    *list = jd_xcalloc(2 * n + 1, sizeof **list);
    for (size_t i = 0; i < n; i++) {
        const char *kv[2];
        if (pair_elems(L, config_setting_get_elem(s, (unsigned)i), disp, i, "(\"name\", \"value\")",
                       kv) != 0)
            continue;
        (*list)[2 * *count] = jd_strdup(kv[0]);
        (*list)[2 * *count + 1] = jd_strdup(kv[1]);
        (*count)++;
    }
}

static void locate(struct loader *L, const config_setting_t *s, const char *key, int from_col,
                   struct jd_rule_src *r, int *end_col)
{
    const char *file = file_of(L, s);
    r->file = file;
    r->line = (int)config_setting_source_line(s);
    r->col = 0;
    int line, col, end = 0;
    if (jd_cfg_text_locate(text_of(L, file), r->line, key, from_col, r->expr, &line, &col, &end) ==
        0) {
        r->line = line;
        r->col = col;
    }
    if (end_col)
        *end_col = end;
}

static void load_payload(struct loader *L, const struct jd_cfg_key *k, const config_setting_t *s,
                         const char *disp, void *base)
{
    struct jd_payload_src **list = FIELD(base, k->off, struct jd_payload_src *);
    size_t *count = FIELD(base, k->off2, size_t);
    size_t n = (size_t)config_setting_length(s);
    if (out_of_bounds(k, (double)n)) {
        error_at(L, s, "%s: %zu entries, at most %.0f allowed", disp, n, k->max);
        return;
    }
    *list = jd_xcalloc(n ? n : 1, sizeof **list);
    for (size_t i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *kv[2];
        if (pair_elems(L, e, disp, i, "(\"key\", \"expression\")", kv) != 0)
            continue;
        int dup = 0;
        for (size_t j = 0; j < *count; j++)
            dup |= strcmp((*list)[j].key, kv[0]) == 0;
        if (dup) {
            error_at(L, e, "%s[%zu]: duplicate key '%s'", disp, i, kv[0]);
            continue;
        }
        if (!kv[1][0]) {
            error_at(L, e, "%s[%zu]: the expression must not be empty", disp, i);
            continue;
        }
        struct jd_payload_src *p = &(*list)[(*count)++];
        p->key = jd_strdup(kv[0]);
        p->expr.name = jd_strdup(kv[0]);
        p->expr.expr = jd_strdup(kv[1]);
        p->expr.enabled = 1;
        /* The key's literal comes first; the expression is the next literal
         * after it (they may be equal: ("last_channel", "last_channel")). */
        const config_setting_t *ke = config_setting_get_elem(e, 0);
        const config_setting_t *ve = config_setting_get_elem(e, 1);
        struct jd_rule_src key_src = {.expr = p->key};
        int key_end = 0;
        locate(L, ke, NULL, 1, &key_src, &key_end);
        int from = config_setting_source_line(ke) == config_setting_source_line(ve) && key_end > 0
                       ? key_end
                       : 1;
        locate(L, ve, NULL, from, &p->expr, NULL);
    }
}

static void load_grouplist(struct loader *L, const struct jd_cfg_key *k, const config_setting_t *s,
                           const char *disp, void *base)
{
    void **arr = FIELD(base, k->off, void *);
    size_t *count = FIELD(base, k->off2, size_t);
    size_t n = (size_t)config_setting_length(s);
    *arr = jd_xcalloc(n ? n : 1, k->size);
    *count = n; /* zeroed elements are safe to free even when one fails */
    char scope[128], edisp[320];
    snprintf(scope, sizeof scope, "%s[].", k->path);
    for (size_t i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        void *elem = (char *)*arr + i * k->size;
        snprintf(edisp, sizeof edisp, "%s[%zu]", disp, i);
        if (config_setting_type(e) != CONFIG_TYPE_GROUP) {
            error_at(L, e, "%s: expected a group { ... }, got %s", edisp,
                     lc_type_name(config_setting_type(e)));
            continue;
        }
        apply_defaults(L, elem, scope, 0);
        strcat(edisp, ".");
        walk(L, e, scope, edisp, elem);
    }
    if (!(k->flags & JD_CFG_F_UNIQUE))
        return;
    /* "stages" -> "stage" */
    char noun[64];
    snprintf(noun, sizeof noun, "%.*s", (int)strlen(k->path) - 1, k->path);
    for (size_t j = 0; j < n; j++) {
        const config_setting_t *nj =
            config_setting_get_member(config_setting_get_elem(s, j), "name");
        if (!nj || config_setting_type(nj) != CONFIG_TYPE_STRING)
            continue;
        for (size_t i = 0; i < j; i++) {
            const config_setting_t *ni =
                config_setting_get_member(config_setting_get_elem(s, i), "name");
            if (!ni || config_setting_type(ni) != CONFIG_TYPE_STRING ||
                strcmp(config_setting_get_string(ni), config_setting_get_string(nj)) != 0)
                continue;
            if (strcmp(file_of(L, ni), file_of(L, nj)) == 0)
                error_at(L, nj, "duplicate %s name '%s' (first defined at line %u)", noun,
                         config_setting_get_string(nj), config_setting_source_line(ni));
            else
                error_at(L, nj, "duplicate %s name '%s' (first defined at %s:%u)", noun,
                         config_setting_get_string(nj), file_of(L, ni),
                         config_setting_source_line(ni));
            break;
        }
    }
}

static void load_member(struct loader *L, const struct jd_cfg_key *k, const config_setting_t *s,
                        const char *disp, void *base)
{
    int t = config_setting_type(s);
    char buf[128];
    switch (k->type) {
    case JD_CFG_SECTION:
        if (t != CONFIG_TYPE_GROUP)
            break;
        /* The quiet-hours policy is on exactly when its group is written. */
        if (strcmp(k->path, "policy.quiet_hours") == 0)
            L->cfg->policy.quiet_enabled = 1;
        {
            char scope[128], sdisp[320];
            snprintf(scope, sizeof scope, "%s.", k->path);
            snprintf(sdisp, sizeof sdisp, "%s.", disp);
            walk(L, s, scope, sdisp, base);
        }
        return;
    case JD_CFG_GROUPLIST:
        /* `()` is a list; `[]` (empty array) is accepted too. */
        if (t != CONFIG_TYPE_LIST && !(t == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0))
            break;
        load_grouplist(L, k, s, disp, base);
        return;
    case JD_CFG_INT:
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
            break;
        {
            long long v = config_setting_get_int64(s);
            if (out_of_bounds(k, (double)v)) {
                bounds_text(k, buf, sizeof buf);
                error_at(L, s, "%s: %lld is out of bounds (%s)", disp, v, buf);
                return;
            }
            store_int(FIELD(base, k->off, char), k->size, v);
        }
        return;
    case JD_CFG_FLOAT:
        if (t != CONFIG_TYPE_FLOAT && t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
            break;
        {
            double v = t == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                              : (double)config_setting_get_int64(s);
            if (out_of_bounds(k, v)) {
                bounds_text(k, buf, sizeof buf);
                error_at(L, s, "%s: %g is out of bounds (%s)", disp, v, buf);
                return;
            }
            *FIELD(base, k->off, double) = v;
        }
        return;
    case JD_CFG_BOOL:
        if (t != CONFIG_TYPE_BOOL)
            break;
        *FIELD(base, k->off, int) = config_setting_get_bool(s);
        return;
    case JD_CFG_STRLIST:
    case JD_CFG_KINDSET:
        if (!is_list(s))
            break;
        load_strlist(L, k, s, disp, base);
        return;
    case JD_CFG_PROPS:
        if (!is_list(s))
            break;
        load_props(L, k, s, disp, base);
        return;
    case JD_CFG_PAYLOAD:
        if (!is_list(s))
            break;
        load_payload(L, k, s, disp, base);
        return;
    case JD_CFG_EXPR:
        if (t != CONFIG_TYPE_STRING)
            break;
        {
            struct jd_rule_src *r = FIELD(base, k->off, struct jd_rule_src);
            const char *v = config_setting_get_string(s);
            if (!v[0]) {
                error_at(L, s, "%s: must not be empty", disp);
                return;
            }
            jd_cfg_store_str(&r->expr, v);
            locate(L, s, config_setting_name(s), 1, r, NULL);
        }
        return;
    default: /* every kind written as a string */
        if (t != CONFIG_TYPE_STRING)
            break;
        set_text(L, k, base, config_setting_get_string(s), disp, s);
        return;
    }
    wrong_type(L, s, k, disp);
}

static void walk(struct loader *L, const config_setting_t *grp, const char *scope,
                 const char *disp_scope, void *base)
{
    char path[192], disp[256];
    unsigned char seen[JD_CFG_MAX_KEYS] = {0};
    int n = config_setting_length(grp);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const char *name = config_setting_name(s);
        snprintf(path, sizeof path, "%s%s", scope, name);
        snprintf(disp, sizeof disp, "%s%s", disp_scope, name);
        const struct jd_cfg_key *k = jd_cfg_key_find(path);
        if (!k) {
            unknown_key(L, s, scope, disp_scope, name);
            continue;
        }
        seen[k - jd_cfg_keys] = 1;
        load_member(L, k, s, disp, base);
    }
    for (size_t i = 0; i < jd_cfg_nkeys; i++) {
        const struct jd_cfg_key *k = &jd_cfg_keys[i];
        if ((k->flags & JD_CFG_F_REQUIRED) && !seen[i] && jd_cfg_in_scope(k, scope)) {
            size_t dl = strlen(disp_scope);
            error_at(L, grp, "%.*s: missing required key '%s'", (int)(dl ? dl - 1 : 0), disp_scope,
                     k->path + strlen(scope));
        }
    }
}

/* One writer schema per id: a second one would silently shadow the first. */
static void check_registry_ids(struct loader *L, const config_setting_t *list)
{
    const struct jd_config *cfg = L->cfg;
    for (size_t j = 0; list && j < cfg->nregistry_ids; j++) {
        for (size_t i = 0; i < j; i++) {
            if (cfg->registry_ids[i].id != cfg->registry_ids[j].id)
                continue;
            const config_setting_t *e = config_setting_get_elem(list, (unsigned)j);
            error_at(L, e, "schemas.registry_ids[%zu]: schema id %d is already mapped", j,
                     cfg->registry_ids[j].id);
            break;
        }
    }
}

/* kafka.transactions = true is refused rather than silently ignored: the
 * transactional producer is not implemented yet (docs/guarantees.md). */
static void check_transactions(struct loader *L, const config_setting_t *s)
{
    if (L->cfg->transactions && s)
        error_at(L, s,
                 "kafka.transactions: transactional delivery is not implemented yet; triggers "
                 "are delivered at least once, each with a stable trigger_id to de-duplicate "
                 "on (docs/guarantees.md); set it to false");
}

/* One input topic: a customer records the offset it last applied for one
 * partition, and the group's assignor does not co-partition two topics, so
 * a customer's events spread over two topics could be owned by two
 * instances and be applied twice on replay. */
static void check_input_topics(struct loader *L, const config_setting_t *s)
{
    if (L->cfg->ninput_topics > 1 && s)
        error_at(L, s,
                 "kafka.input_topics: one input topic is supported (a customer's applied offset "
                 "is tracked per partition of one topic); merge the sources into one topic "
                 "keyed by customer_id");
}

/* Each engine joins the group as a member of its own: a static id given
 * through kafka.properties would be shared by all of them (the group would
 * fence all but one); kafka.group_instance_id is suffixed per engine. */
static void check_engines(struct loader *L, const config_setting_t *props)
{
    if (L->cfg->engines <= 1)
        return;
    for (size_t i = 0; i < L->cfg->nkafka_props; i++) {
        if (strcmp(L->cfg->kafka_props[2 * i], "group.instance.id") == 0 && props)
            error_at(L, props,
                     "kafka.properties: group.instance.id with processing.engines = %d: every "
                     "engine needs an id of its own; set kafka.group_instance_id instead "
                     "(engine i joins as ID-i)",
                     L->cfg->engines);
    }
}

static struct jd_config *load(const char *path, const char *text, struct jd_errors *errs)
{
    size_t nerr0 = errs->n;
    struct jd_config *cfg = jd_xcalloc(1, sizeof *cfg);
    struct loader L = {.cfg = cfg, .errs = errs, .text = text};
    config_t lc;
    config_init(&lc);

    cfg->path = jd_strdup(path);
    const char *slash = strrchr(path, '/');
    if (!slash)
        cfg->dir = jd_strdup(".");
    else if (slash == path)
        cfg->dir = jd_strdup("/");
    else {
        cfg->dir = jd_xmalloc((size_t)(slash - path) + 1);
        memcpy(cfg->dir, path, (size_t)(slash - path));
        cfg->dir[slash - path] = '\0';
    }
    apply_defaults(&L, cfg, "", 1);

    /* libconfig reports a missing file only as "file I/O error". */
    if (!text) {
        FILE *f = fopen(path, "r");
        if (!f) {
            jd_errors_add(errs, path, 0, 0, "cannot open: %s", strerror(errno));
            goto out;
        }
        fclose(f);
    }
    config_set_include_dir(&lc, cfg->dir);
    if (!(text ? config_read_string(&lc, text) : config_read_file(&lc, path))) {
        const char *ef = config_error_file(&lc);
        char joined[1024];
        if (ef && strcmp(ef, path) != 0 && ef[0] != '/') {
            snprintf(joined, sizeof joined, "%s/%s", cfg->dir, ef);
            ef = joined;
        }
        jd_errors_add(errs, ef ? ef : path, config_error_line(&lc), 0, "%s",
                      config_error_text(&lc));
        goto out;
    }
    walk(&L, config_root_setting(&lc), "", "", cfg);
    check_registry_ids(&L, config_lookup(&lc, "schemas.registry_ids"));
    check_transactions(&L, config_lookup(&lc, "kafka.transactions"));
    check_input_topics(&L, config_lookup(&lc, "kafka.input_topics"));
    check_engines(&L, config_lookup(&lc, "kafka.properties"));

out:
    config_destroy(&lc);
    for (size_t i = 0; i < L.ntexts; i++)
        jd_cfg_text_free(L.texts[i].text);
    if (errs->n > nerr0) {
        jd_config_destroy(cfg);
        return NULL;
    }
    return cfg;
}

struct jd_config *jd_config_load(const char *path, struct jd_errors *errs)
{
    return load(path, NULL, errs);
}

struct jd_config *jd_config_load_text(const char *path, const char *text, struct jd_errors *errs)
{
    return load(path, text, errs);
}
