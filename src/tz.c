/*
 * tz — IANA time zones read from TZif files (RFC 8536), cached per name.
 *
 * Why not localtime_r: it reads the zone from the process-wide TZ, and
 * switching TZ per customer (setenv + tzset) is neither thread-safe nor
 * cheap. A zone here is the file's transition table (64-bit data block) plus
 * its footer rule ("CET-1CEST,M3.5.0,M10.5.0/3"), which gives the
 * transitions after the table ends (slim files end it early; fat ones at
 * 2037). Leap-second ("right/") files are not supported: their times are
 * not POSIX times.
 *
 * Owns: the cache (chained hash of zone names, including the names that are
 * not zones, up to a bound, so that a bad attribute value does not cost a
 * file system look-up per trigger).
 */
#include "journeyd/tz.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "journeyd/util.h"

#define TZ_BUCKETS 256
#define TZ_MAX_UNKNOWN 1024 /* cached names that are not zones */
#define TZ_MAX_FILE (1 << 20)

/* A date in a POSIX TZ rule: Jn (1..365, no Feb 29), n (0..365), Mm.w.d. */
struct rule_date {
    char kind; /* 'J', 'N', 'M' */
    int n, m, w, d;
    int32_t time; /* seconds after local midnight (may be negative or > 24 h) */
};

struct posix_rule {
    int32_t std_off; /* seconds east */
    int32_t dst_off;
    int has_dst;
    struct rule_date start, end;
};

struct jd_tz {
    char *name;
    int64_t *trans; /* transition instants, ascending */
    uint8_t *idx;   /* type index after each transition */
    size_t ntrans;
    int32_t *offs; /* per type: offset */
    size_t ntypes;
    int has_rule;
    struct posix_rule rule;
};

struct entry {
    char *name;
    struct jd_tz *zone; /* NULL: not a zone */
    struct entry *next;
};

struct jd_tzdb {
    char *dir;
    struct entry *buckets[TZ_BUCKETS];
    size_t nunknown;
};

/* ---------------- civil calendar (proleptic Gregorian, UTC) ---------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days since 1970-01-01 of y-m-d (m 1..12). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t year_of_days(int64_t z)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    return yoe + era * 400 + (m <= 2);
}

static int days_in_month(int64_t y, int m)
{
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return dm[m - 1] + (m == 2 && is_leap(y));
}

/* Local seconds (since the local epoch) of the rule date's transition in year y. */
static int64_t rule_local(const struct rule_date *r, int64_t y)
{
    int64_t day;
    if (r->kind == 'J') {
        day = days_from_civil(y, 1, 1) + r->n - 1 + (is_leap(y) && r->n >= 60);
    } else if (r->kind == 'N') {
        day = days_from_civil(y, 1, 1) + r->n;
    } else {
        int64_t first = days_from_civil(y, r->m, 1);
        int wday_first = (int)(((first + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
        int mday = 1 + (r->d - wday_first + 7) % 7 + (r->w - 1) * 7;
        while (mday > days_in_month(y, r->m))
            mday -= 7;
        day = first + mday - 1;
    }
    return day * 86400 + r->time;
}

/* DST start and end of year y as UTC instants. */
static void rule_year(const struct posix_rule *r, int64_t y, int64_t *start, int64_t *end)
{
    /* the start time is given in standard time, the end time in DST */
    *start = rule_local(&r->start, y) - r->std_off;
    *end = rule_local(&r->end, y) - r->dst_off;
}

static int32_t rule_offset(const struct posix_rule *r, int64_t t)
{
    if (!r->has_dst)
        return r->std_off;
    int64_t y = year_of_days(floor_div(t + r->std_off, 86400));
    int64_t s, e;
    rule_year(r, y, &s, &e);
    int dst = s < e ? (t >= s && t < e) : !(t >= e && t < s);
    return dst ? r->dst_off : r->std_off;
}

static int64_t rule_next(const struct posix_rule *r, int64_t t)
{
    if (!r->has_dst)
        return INT64_MAX;
    int64_t y = year_of_days(floor_div(t + r->std_off, 86400));
    int64_t best = INT64_MAX;
    for (int64_t k = y - 1; k <= y + 1; k++) {
        int64_t s, e;
        rule_year(r, k, &s, &e);
        if (s > t && s < best)
            best = s;
        if (e > t && e < best)
            best = e;
    }
    return best;
}

/* ---------------- POSIX TZ string ---------------- */

static const char *parse_name(const char *p)
{
    if (*p == '<') {
        const char *q = strchr(p, '>');
        return q && q - p >= 4 ? q + 1 : NULL;
    }
    const char *q = p;
    while ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z'))
        q++;
    return q - p >= 3 ? q : NULL;
}

static int parse_num(const char **pp, int lo, int hi, int *out)
{
    const char *p = *pp;
    int v = 0, n = 0;
    while (*p >= '0' && *p <= '9' && n < 4) {
        v = v * 10 + (*p++ - '0');
        n++;
    }
    if (n == 0 || v < lo || v > hi)
        return -1;
    *pp = p;
    *out = v;
    return 0;
}

/* [+-]hh[:mm[:ss]] -> seconds (hours up to 167, RFC 8536 §3.3.1). */
static const char *parse_hms(const char *p, int32_t *out)
{
    int sign = 1, h, m = 0, s = 0;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    if (parse_num(&p, 0, 167, &h) != 0)
        return NULL;
    if (*p == ':') {
        p++;
        if (parse_num(&p, 0, 59, &m) != 0)
            return NULL;
        if (*p == ':') {
            p++;
            if (parse_num(&p, 0, 59, &s) != 0)
                return NULL;
        }
    }
    *out = sign * (h * 3600 + m * 60 + s);
    return p;
}

static const char *parse_date(const char *p, struct rule_date *r)
{
    memset(r, 0, sizeof *r);
    if (*p == 'J') {
        p++;
        r->kind = 'J';
        if (parse_num(&p, 1, 365, &r->n) != 0)
            return NULL;
    } else if (*p == 'M') {
        p++;
        r->kind = 'M';
        if (parse_num(&p, 1, 12, &r->m) != 0 || *p++ != '.' || parse_num(&p, 1, 5, &r->w) != 0 ||
            *p++ != '.' || parse_num(&p, 0, 6, &r->d) != 0)
            return NULL;
    } else {
        r->kind = 'N';
        if (parse_num(&p, 0, 365, &r->n) != 0)
            return NULL;
    }
    r->time = 7200;
    if (*p == '/' && !(p = parse_hms(p + 1, &r->time)))
        return NULL;
    return p;
}

/* "std offset [dst [offset] [,start[/time],end[/time]]]"; 0 or -1. */
static int parse_posix(const char *s, struct posix_rule *r)
{
    int32_t off;
    memset(r, 0, sizeof *r);
    const char *p = parse_name(s);
    if (!p || !(p = parse_hms(p, &off)))
        return -1;
    r->std_off = -off; /* POSIX offsets are west of Greenwich */
    if (*p == '\0')
        return 0;
    if (!(p = parse_name(p)))
        return -1;
    r->has_dst = 1;
    r->dst_off = r->std_off + 3600;
    if (*p && *p != ',') {
        if (!(p = parse_hms(p, &off)))
            return -1;
        r->dst_off = -off;
    }
    if (*p == '\0') {
        /* no rule: the US rule, as POSIX implementations do */
        p = ",M3.2.0,M11.1.0";
    }
    if (*p++ != ',' || !(p = parse_date(p, &r->start)) || *p++ != ',' ||
        !(p = parse_date(p, &r->end)) || *p != '\0')
        return -1;
    return 0;
}

/* ---------------- TZif ---------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzif_hdr {
    int version;
    uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

static int read_hdr(const unsigned char *p, size_t len, struct tzif_hdr *h)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return -1;
    h->version = p[4] ? p[4] - '0' : 1;
    h->isutcnt = be32(p + 20);
    h->isstdcnt = be32(p + 24);
    h->leapcnt = be32(p + 28);
    h->timecnt = be32(p + 32);
    h->typecnt = be32(p + 36);
    h->charcnt = be32(p + 40);
    if (h->typecnt == 0 || h->typecnt > 256 || h->timecnt > 100000 || h->charcnt > 100000 ||
        h->leapcnt > 100000 || h->isutcnt > 256 || h->isstdcnt > 256)
        return -1;
    return 0;
}

static size_t block_len(const struct tzif_hdr *h, int timesize)
{
    return (size_t)h->timecnt * (size_t)timesize + h->timecnt + (size_t)h->typecnt * 6 +
           h->charcnt + (size_t)h->leapcnt * (size_t)(timesize + 4) + h->isstdcnt + h->isutcnt;
}

static struct jd_tz *parse_tzif(const char *name, const unsigned char *buf, size_t len)
{
    struct tzif_hdr h;
    const unsigned char *p = buf;
    int timesize = 4;
    if (read_hdr(p, len, &h) != 0)
        return NULL;
    if (h.version >= 2) {
        /* skip the 32-bit block: the 64-bit one follows with its own header */
        size_t skip = 44 + block_len(&h, 4);
        if (skip > len)
            return NULL;
        p += skip;
        len -= skip;
        if (read_hdr(p, len, &h) != 0)
            return NULL;
        timesize = 8;
    }
    if (44 + block_len(&h, timesize) > len)
        return NULL;
    const unsigned char *d = p + 44;
    struct jd_tz *z = jd_xcalloc(1, sizeof *z);
    z->name = jd_strdup(name);
    z->ntrans = h.timecnt;
    z->ntypes = h.typecnt;
    z->trans = jd_xcalloc(h.timecnt + 1, sizeof *z->trans);
    z->idx = jd_xcalloc(h.timecnt + 1, 1);
    z->offs = jd_xcalloc(h.typecnt, sizeof *z->offs);
    for (uint32_t i = 0; i < h.timecnt; i++)
        z->trans[i] = timesize == 8 ? be64(d + (size_t)i * 8) : (int32_t)be32(d + (size_t)i * 4);
    d += (size_t)h.timecnt * (size_t)timesize;
    for (uint32_t i = 0; i < h.timecnt; i++) {
        if (d[i] >= h.typecnt)
            goto bad;
        z->idx[i] = d[i];
        if (i > 0 && z->trans[i] <= z->trans[i - 1])
            goto bad;
    }
    d += h.timecnt;
    for (uint32_t i = 0; i < h.typecnt; i++)
        z->offs[i] = (int32_t)be32(d + (size_t)i * 6);
    d += (size_t)h.typecnt * 6;
    d += h.charcnt + (size_t)h.leapcnt * (size_t)(timesize + 4) + h.isstdcnt + h.isutcnt;
    if (h.version >= 2) {
        /* footer: "\nTZ-STRING\n"; an empty string means no rule */
        const unsigned char *end = p + len;
        if (d < end && *d == '\n') {
            const unsigned char *nl = memchr(d + 1, '\n', (size_t)(end - d - 1));
            if (nl && nl > d + 1) {
                char tzs[128];
                size_t n = (size_t)(nl - d - 1);
                if (n < sizeof tzs) {
                    memcpy(tzs, d + 1, n);
                    tzs[n] = '\0';
                    z->has_rule = parse_posix(tzs, &z->rule) == 0;
                }
            }
        }
    }
    return z;
bad:
    free(z->name);
    free(z->trans);
    free(z->idx);
    free(z->offs);
    free(z);
    return NULL;
}

static void tz_free(struct jd_tz *z)
{
    if (!z)
        return;
    free(z->name);
    free(z->trans);
    free(z->idx);
    free(z->offs);
    free(z);
}

const char *jd_tz_name(const struct jd_tz *z)
{
    return z->name;
}

int32_t jd_tz_offset(const struct jd_tz *z, int64_t t)
{
    if (z->ntrans == 0 || t < z->trans[0]) {
        if (z->ntrans == 0 && z->has_rule)
            return rule_offset(&z->rule, t);
        return z->offs[0];
    }
    if (t >= z->trans[z->ntrans - 1] && z->has_rule)
        return rule_offset(&z->rule, t);
    /* the last transition at or before t */
    size_t lo = 0, hi = z->ntrans;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return z->offs[z->idx[lo]];
}

int64_t jd_tz_next_transition(const struct jd_tz *z, int64_t t)
{
    if (z->ntrans > 0 && t < z->trans[z->ntrans - 1]) {
        size_t lo = 0, hi = z->ntrans - 1; /* first transition > t is in [lo, hi] */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (z->trans[mid] > t)
                hi = mid;
            else
                lo = mid + 1;
        }
        return z->trans[lo];
    }
    return z->has_rule ? rule_next(&z->rule, t) : INT64_MAX;
}

int64_t jd_tz_local_to_utc_ms(const struct jd_tz *z, int64_t from_ms, int64_t local_ms)
{
    /* Walk the offset segments from `from`: in a segment with offset o the
     * local clock reads t + o, so local_ms is reached at local_ms - o if that
     * is inside the segment; a segment that starts with the clock already
     * past local_ms (a forward jump) reaches it at its start. */
    int64_t t = from_ms;
    for (int i = 0; i < 64; i++) {
        int64_t o = (int64_t)jd_tz_offset(z, floor_div(t, 1000)) * 1000;
        if (local_ms - o <= t)
            return t;
        int64_t nt = jd_tz_next_transition(z, floor_div(t, 1000));
        int64_t nt_ms = nt >= INT64_MAX / 1000 ? INT64_MAX : nt * 1000;
        if (local_ms - o < nt_ms)
            return local_ms - o;
        t = nt_ms;
    }
    return t;
}

/* ---------------- the database ---------------- */

struct jd_tzdb *jd_tzdb_new(const char *dir)
{
    struct jd_tzdb *db = jd_xcalloc(1, sizeof *db);
    db->dir = jd_strdup(dir ? dir : "/usr/share/zoneinfo");
    return db;
}

void jd_tzdb_destroy(struct jd_tzdb *db)
{
    if (!db)
        return;
    for (size_t i = 0; i < TZ_BUCKETS; i++) {
        struct entry *e = db->buckets[i];
        while (e) {
            struct entry *next = e->next;
            tz_free(e->zone);
            free(e->name);
            free(e);
            e = next;
        }
    }
    free(db->dir);
    free(db);
}

/* Zone names are paths below the zoneinfo directory: letters, digits, '_',
 * '-', '+' and single '/' between components; never absolute, never "..". */
static int safe_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64 || name[0] == '/' || name[n - 1] == '/')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                 ch == '_' || ch == '-' || ch == '+' || ch == '/';
        if (!ok || (ch == '/' && name[i + 1] == '/'))
            return 0;
    }
    return 1;
}

static struct jd_tz *load_zone(const struct jd_tzdb *db, const char *name)
{
    char path[512];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", db->dir, name);
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > TZ_MAX_FILE)
        return NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *buf = jd_xmalloc((size_t)sb.st_size + 1);
    size_t len = fread(buf, 1, (size_t)sb.st_size, f);
    fclose(f);
    struct jd_tz *z = parse_tzif(name, buf, len);
    free(buf);
    return z;
}

const struct jd_tz *jd_tzdb_get(struct jd_tzdb *db, const char *name)
{
    if (!name || !safe_name(name))
        return NULL;
    size_t b = jd_hash64(name, strlen(name)) % TZ_BUCKETS;
    for (struct entry *e = db->buckets[b]; e; e = e->next)
        if (strcmp(e->name, name) == 0)
            return e->zone;
    struct jd_tz *z = load_zone(db, name);
    if (!z) {
        if (db->nunknown >= TZ_MAX_UNKNOWN)
            return NULL; /* not cached: looked up again next time */
        db->nunknown++;
    }
    struct entry *e = jd_xcalloc(1, sizeof *e);
    e->name = jd_strdup(name);
    e->zone = z;
    e->next = db->buckets[b];
    db->buckets[b] = e;
    return z;
}
