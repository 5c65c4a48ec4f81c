/*
 * metrics_kstats — reads the consumer lag per partition out of librdkafka's
 * statistics JSON (statistics.interval.ms), for journeyd_consumer_lag.
 *
 * No JSON library is a dependency of journeyd, and only one path of the
 * document matters (topics -> NAME -> partitions -> N -> consumer_lag), so
 * this is a small strict scanner that walks the document once and skips
 * every other value. It owns nothing beyond the array it returns.
 */
#include "journeyd/metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

struct scan {
    const char *p;
    const char *end;
    int depth;
};

struct lagvec {
    struct jd_lag *v;
    size_t n;
    size_t cap;
};

static void ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int peek(struct scan *s)
{
    ws(s);
    return s->p < s->end ? (unsigned char)*s->p : -1;
}

static int eat(struct scan *s, char c)
{
    if (peek(s) != (unsigned char)c)
        return -1;
    s->p++;
    return 0;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(struct jd_buf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    jd_buf_append(b, u, n);
}

/* A string value, unescaped into `out` (NULL: just skip it). */
static int string(struct scan *s, struct jd_buf *out)
{
    if (eat(s, '"') < 0)
        return -1;
    if (out)
        jd_buf_reset(out);
    while (s->p < s->end) {
        char c = *s->p++;
        if (c == '"') {
            if (out)
                jd_buf_cstr(out);
            return 0;
        }
        if ((unsigned char)c < 0x20)
            return -1;
        if (c != '\\') {
            if (out)
                jd_buf_append(out, &c, 1);
            continue;
        }
        if (s->p >= s->end)
            return -1;
        char e = *s->p++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e != '\0' && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            if (out)
                jd_buf_append(out, &map[simple - "\"\\/bfnrt"], 1);
        } else if (e == 'u') {
            unsigned cp, lo;
            if (s->end - s->p < 4 || hex4(s->p, &cp) < 0)
                return -1;
            s->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s->end - s->p >= 6 && s->p[0] == '\\' &&
                s->p[1] == 'u' && hex4(s->p + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                s->p += 6;
            }
            if (out)
                put_utf8(out, cp);
        } else {
            return -1;
        }
    }
    return -1;
}

static int number(struct scan *s, double *v)
{
    ws(s);
    char tmp[64];
    size_t n = 0;
    while (s->p < s->end && n + 1 < sizeof(tmp) && strchr("+-0123456789.eE", *s->p) &&
           *s->p != '\0')
        tmp[n++] = *s->p++;
    if (n == 0 || n + 1 >= sizeof(tmp))
        return -1;
    tmp[n] = '\0';
    char *endp;
    errno = 0;
    *v = strtod(tmp, &endp);
    return (*endp != '\0' || errno == ERANGE) ? -1 : 0;
}

static int literal(struct scan *s, const char *word)
{
    size_t n = strlen(word);
    ws(s);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int skip_value(struct scan *s);

/* Iterates an object: calls member(s, key, ctx) with the scanner on the
 * member's value, which the callback must consume. */
typedef int (*member_fn)(struct scan *s, const char *key, void *ctx);

static int object(struct scan *s, member_fn member, void *ctx)
{
    struct jd_buf key;
    jd_buf_init(&key);
    if (++s->depth > MAX_DEPTH || eat(s, '{') < 0)
        goto err;
    if (peek(s) == '}') {
        s->p++;
        goto ok;
    }
    for (;;) {
        if (string(s, &key) < 0 || eat(s, ':') < 0)
            goto err;
        if (member(s, jd_buf_cstr(&key), ctx) < 0)
            goto err;
        int c = peek(s);
        if (c != '}' && c != ',')
            goto err;
        s->p++;
        if (c == '}')
            break;
    }
ok:
    s->depth--;
    jd_buf_free(&key);
    return 0;
err:
    jd_buf_free(&key);
    return -1;
}

static int skip_member(struct scan *s, const char *key, void *ctx)
{
    return skip_value(s);
}

static int skip_value(struct scan *s)
{
    double d;
    switch (peek(s)) {
    case '{':
        return object(s, skip_member, NULL);
    case '[':
        if (++s->depth > MAX_DEPTH)
            return -1;
        s->p++;
        if (peek(s) == ']') {
            s->p++;
            s->depth--;
            return 0;
        }
        for (;;) {
            if (skip_value(s) < 0)
                return -1;
            int c = peek(s);
            if (c != ']' && c != ',')
                return -1;
            s->p++;
            if (c == ']')
                break;
        }
        s->depth--;
        return 0;
    case '"':
        return string(s, NULL);
    case 't':
        return literal(s, "true");
    case 'f':
        return literal(s, "false");
    case 'n':
        return literal(s, "null");
    default:
        return number(s, &d);
    }
}

/* A number member, or -1 when it is something else. */
static int number_member(struct scan *s, double *v, int *have)
{
    int c = peek(s);
    if (c == '-' || (c >= '0' && c <= '9')) {
        if (number(s, v) < 0)
            return -1;
        *have = 1;
        return 0;
    }
    return skip_value(s);
}

struct part_ctx {
    double partition, lag;
    int have_partition, have_lag;
};

static int partition_member(struct scan *s, const char *key, void *ctx)
{
    struct part_ctx *pc = ctx;
    if (strcmp(key, "partition") == 0)
        return number_member(s, &pc->partition, &pc->have_partition);
    if (strcmp(key, "consumer_lag") == 0)
        return number_member(s, &pc->lag, &pc->have_lag);
    return skip_value(s);
}

struct topic_ctx {
    const char *topic;
    struct lagvec *out;
};

static int partitions_member(struct scan *s, const char *key, void *ctx)
{
    struct topic_ctx *tc = ctx;
    if (peek(s) != '{')
        return skip_value(s);
    struct part_ctx pc = {0};
    if (object(s, partition_member, &pc) < 0)
        return -1;
    /* -1 is librdkafka's internal unassigned partition; a lag of -1 means
     * unknown (not assigned, or no offset yet). */
    if (!pc.have_partition || !pc.have_lag || pc.partition < 0 || pc.lag < 0 ||
        pc.partition > 2147483647.0)
        return 0;
    struct lagvec *lv = tc->out;
    if (lv->n == lv->cap) {
        lv->cap = lv->cap ? lv->cap * 2 : 16;
        lv->v = jd_xrealloc(lv->v, lv->cap * sizeof(*lv->v));
    }
    lv->v[lv->n].topic = jd_strdup(tc->topic);
    lv->v[lv->n].partition = (int32_t)pc.partition;
    lv->v[lv->n].lag = pc.lag > 9.2e18 ? INT64_MAX : (int64_t)pc.lag;
    lv->n++;
    return 0;
}

static int topic_member(struct scan *s, const char *key, void *ctx)
{
    if (strcmp(key, "partitions") != 0 || peek(s) != '{')
        return skip_value(s);
    return object(s, partitions_member, ctx);
}

static int topics_member(struct scan *s, const char *key, void *ctx)
{
    if (peek(s) != '{')
        return skip_value(s);
    struct topic_ctx tc = {key, ctx};
    return object(s, topic_member, &tc);
}

struct top_ctx {
    struct lagvec *out;
    int is_consumer;
};

static int top_member(struct scan *s, const char *key, void *ctx)
{
    struct top_ctx *t = ctx;
    if (strcmp(key, "type") == 0 && peek(s) == '"') {
        struct jd_buf v;
        jd_buf_init(&v);
        int rc = string(s, &v);
        if (rc == 0)
            t->is_consumer = strcmp(jd_buf_cstr(&v), "consumer") == 0;
        jd_buf_free(&v);
        return rc;
    }
    if (strcmp(key, "topics") == 0 && peek(s) == '{')
        return object(s, topics_member, t->out);
    return skip_value(s);
}

void jd_lag_free(struct jd_lag *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i].topic);
    free(v);
}

int jd_kafka_stats_lag(const char *json, size_t len, struct jd_lag **out, size_t *n,
                       int *is_consumer)
{
    struct lagvec lv = {0};
    struct top_ctx t = {&lv, 0};
    struct scan s = {json, json + len, 0};
    *out = NULL;
    *n = 0;
    if (is_consumer)
        *is_consumer = 0;
    if (!json || object(&s, top_member, &t) < 0 || peek(&s) != -1) {
        jd_lag_free(lv.v, lv.n);
        return -1;
    }
    *out = lv.v;
    *n = lv.n;
    if (is_consumer)
        *is_consumer = t.is_consumer;
    return 0;
}

void jd_metrics_update_from_kafka_stats(struct jd_metrics *m, const char *json, size_t len)
{
    struct jd_lag *v;
    size_t n;
    int consumer;
    if (jd_kafka_stats_lag(json, len, &v, &n, &consumer) < 0)
        return;
    /* The producer's statistics list the output topics with lag -1: they
     * must not replace the consumer's table. */
    if (!consumer) {
        jd_lag_free(v, n);
        return;
    }
    jd_metrics_set_lag(m, v, n);
}
