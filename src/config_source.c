/*
 * config_source — finds where a rule string stands in the config file.
 * libconfig records only the line of a setting, but the rule compiler must
 * point at FILE:LINE:COLUMN inside an expression, so the loader re-reads the
 * file's text and locates the string literal itself. Owns a copy of the
 * file's bytes and its line index, for the duration of one load.
 */
#include "config_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/util.h"

struct jd_cfg_text {
    char *data;
    size_t len;
    size_t *line_start; /* line_start[i]: offset of line i+1 */
    size_t nlines;
};

struct jd_cfg_text *jd_cfg_text_load(const char *file)
{
    struct jd_buf b;
    jd_buf_init(&b);
    if (jd_buf_read_file(&b, file) != 0) {
        jd_buf_free(&b);
        return NULL;
    }
    return jd_cfg_text_of(&b);
}

struct jd_cfg_text *jd_cfg_text_of(struct jd_buf *content)
{
    struct jd_buf b = *content;
    jd_buf_cstr(&b);
    jd_buf_init(content);

    struct jd_cfg_text *t = jd_xcalloc(1, sizeof *t);
    t->data = b.data;
    t->len = b.len;
    size_t cap = 64;
    t->line_start = jd_xmalloc(cap * sizeof *t->line_start);
    t->line_start[t->nlines++] = 0;
    for (size_t i = 0; i < t->len; i++) {
        if (t->data[i] != '\n')
            continue;
        if (t->nlines == cap) {
            cap *= 2;
            t->line_start = jd_xrealloc(t->line_start, cap * sizeof *t->line_start);
        }
        t->line_start[t->nlines++] = i + 1;
    }
    return t;
}

void jd_cfg_text_free(struct jd_cfg_text *t)
{
    if (!t)
        return;
    free(t->data);
    free(t->line_start);
    free(t);
}

static size_t line_end(const struct jd_cfg_text *t, size_t pos)
{
    while (pos < t->len && t->data[pos] != '\n')
        pos++;
    return pos;
}

/* 1-based line and column of byte offset `pos`. */
static void position_of(const struct jd_cfg_text *t, size_t pos, int *line, int *col)
{
    size_t lo = 0, hi = t->nlines;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (t->line_start[mid] <= pos)
            lo = mid;
        else
            hi = mid;
    }
    *line = (int)lo + 1;
    *col = (int)(pos - t->line_start[lo]) + 1;
}

/* Skips blanks, newlines and comments (# and // to end of line, block
 * comments) from `pos`; returns the next significant offset. */
static size_t skip_space(const struct jd_cfg_text *t, size_t pos)
{
    const char *d = t->data;
    while (pos < t->len) {
        if (isspace((unsigned char)d[pos])) {
            pos++;
        } else if (d[pos] == '#' || (d[pos] == '/' && d[pos + 1] == '/')) {
            pos = line_end(t, pos);
        } else if (d[pos] == '/' && d[pos + 1] == '*') {
            const char *e = strstr(d + pos + 2, "*/");
            pos = e ? (size_t)(e - d) + 2 : t->len;
        } else {
            break;
        }
    }
    return pos;
}

/* The literal whose opening quote is at `q`: sets *close to the offset of
 * its closing quote and decodes its text into `out`. Returns 1 when the raw
 * bytes equal the decoded text (no escapes), 0 when not, -1 when the
 * literal is not closed on its line. */
static int scan_literal(const struct jd_cfg_text *t, size_t q, size_t *close, struct jd_buf *out)
{
    const char *d = t->data;
    int verbatim = 1;
    jd_buf_reset(out);
    jd_buf_reserve(out, 0); /* data is never NULL, even for "" */
    for (size_t i = q + 1; i < t->len && d[i] != '\n'; i++) {
        if (d[i] == '"') {
            *close = i;
            return verbatim;
        }
        if (d[i] != '\\' || i + 1 >= t->len) {
            jd_buf_append(out, &d[i], 1);
            continue;
        }
        verbatim = 0;
        char c = d[++i];
        switch (c) {
        case 'n':
            c = '\n';
            break;
        case 't':
            c = '\t';
            break;
        case 'r':
            c = '\r';
            break;
        case 'f':
            c = '\f';
            break;
        case 'x':
            if (i + 2 < t->len && isxdigit((unsigned char)d[i + 1]) &&
                isxdigit((unsigned char)d[i + 2])) {
                char hex[3] = {d[i + 1], d[i + 2], 0};
                c = (char)strtol(hex, NULL, 16);
                i += 2;
            }
            break;
        default:
            break;
        }
        jd_buf_append(out, &c, 1);
    }
    return -1;
}

/* Offset just past `key` followed by '=' or ':' on the line starting at
 * `pos`, skipping string literals and comments; 0 when absent. */
static size_t find_key(const struct jd_cfg_text *t, size_t pos, const char *key)
{
    const char *d = t->data;
    size_t end = line_end(t, pos), klen = strlen(key);
    while (pos < end) {
        char c = d[pos];
        if (c == '"') {
            pos++;
            while (pos < end && d[pos] != '"')
                pos += d[pos] == '\\' ? 2 : 1;
            pos++;
        } else if (c == '#' || (c == '/' && d[pos + 1] == '/')) {
            return 0;
        } else if (c == '/' && d[pos + 1] == '*') {
            const char *e = strstr(d + pos + 2, "*/");
            if (!e || (size_t)(e - d) >= end)
                return 0;
            pos = (size_t)(e - d) + 2;
        } else if (isalpha((unsigned char)c) || c == '*') {
            size_t s = pos;
            while (pos < end && (isalnum((unsigned char)d[pos]) || d[pos] == '_' || d[pos] == '-' ||
                                 d[pos] == '*'))
                pos++;
            if (pos - s != klen || memcmp(d + s, key, klen) != 0)
                continue;
            size_t p = pos;
            while (p < end && (d[p] == ' ' || d[p] == '\t'))
                p++;
            if (p < end && (d[p] == '=' || d[p] == ':'))
                return p + 1;
        } else {
            pos++;
        }
    }
    return 0;
}

static int report(const struct jd_cfg_text *t, size_t q, size_t close, int verbatim,
                  const struct jd_buf *text, const char *expect, int *out_line, int *out_col,
                  int *end_col)
{
    int l, c;
    position_of(t, q + 1, &l, &c);
    *out_line = l;
    /* Offsets into the expression map to columns only when its bytes stand
     * verbatim between these two quotes: no escapes, no "a" "b" joining. */
    size_t after = skip_space(t, close + 1);
    int joined = after < t->len && t->data[after] == '"';
    int exact = verbatim == 1 && !joined && text->len == strlen(expect) &&
                memcmp(text->data, expect, text->len) == 0;
    *out_col = exact ? c : 0;
    int el, ec;
    position_of(t, close + 1, &el, &ec);
    *end_col = el == l ? ec : 0;
    return 0;
}

int jd_cfg_text_locate(const struct jd_cfg_text *t, int line, const char *key, int from_col,
                       const char *expect, int *out_line, int *out_col, int *end_col)
{
    if (!t || line < 1 || (size_t)line > t->nlines)
        return -1;
    size_t start = t->line_start[line - 1];
    struct jd_buf text;
    jd_buf_init(&text);
    int rc = -1;
    size_t close = 0;

    if (key) {
        size_t p = find_key(t, start, key);
        if (!p)
            goto out;
        p = skip_space(t, p);
        if (p >= t->len || t->data[p] != '"')
            goto out;
        int v = scan_literal(t, p, &close, &text);
        if (v < 0)
            goto out;
        rc = report(t, p, close, v, &text, expect, out_line, out_col, end_col);
        goto out;
    }

    size_t end = line_end(t, start);
    size_t p = start + (size_t)(from_col > 1 ? from_col - 1 : 0);
    while (p < end) {
        char c = t->data[p];
        if (c == '#' || (c == '/' && t->data[p + 1] == '/'))
            break;
        if (c != '"') {
            p++;
            continue;
        }
        int v = scan_literal(t, p, &close, &text);
        if (v < 0)
            break;
        if (strncmp(expect, text.data, text.len) == 0 && (text.len > 0 || expect[0] == '\0')) {
            rc = report(t, p, close, v, &text, expect, out_line, out_col, end_col);
            break;
        }
        p = close + 1;
    }
out:
    jd_buf_free(&text);
    return rc;
}
