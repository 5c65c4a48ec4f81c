/*
 * store_watermark — each partition's event clock, kept in Redis so that a
 * restart or a rebalance resumes it where the stored state stands.
 *
 *   PREFIX:{p:TOPIC:PARTITION}:wm  hash  watermark -> ms (the largest
 *                                        occurred_at of the partition's
 *                                        events before `offset`)
 *                                        offset -> that offset
 *
 * The engine writes it only once every event before `offset` is in the
 * stored state, and before it stores that offset for commit (engine_clock.c
 * says why that makes replays exact).
 */
#include <inttypes.h>

#include "store_int.h"

/* A field of HMGET: -1 when absent (nil), -2 when not a non-negative
 * integer. */
static int64_t int_reply(const redisReply *r)
{
    int64_t v;
    if (!r || r->type == REDIS_REPLY_NIL)
        return -1;
    return jd_store_reply_int(r, &v) == 0 && v >= 0 ? v : -2;
}

/* Replies [0, n): -1 (errstr) at the first missing one or error other
 * than WRONGTYPE (a failure worth retrying); else 1 (errstr) when a key
 * holds something else than a watermark (`bad`, may be NULL, marks which:
 * retrying cannot help, and the operator is told which key), else 0. */
static int check_replies(struct jd_store *st, size_t n, const char *why, uint8_t *bad, char *errstr,
                         size_t errsize)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *r = jd_redis_reply(st->rd, i);
        if (r && r->type != REDIS_REPLY_ERROR)
            continue;
        st->errors++;
        if (!r) {
            snprintf(errstr, errsize, "watermarks: %s", why[0] ? why : "not executed");
            return -1;
        }
        if (strncmp(r->str, "WRONGTYPE", 9) != 0) {
            snprintf(errstr, errsize, "watermarks: Redis %s: %s", jd_redis_reply_node(st->rd, i),
                     r->str);
            return -1;
        }
        if (bad)
            bad[i] = 1;
        if (rc == 0)
            snprintf(errstr, errsize, "watermark key %zu of %zu: Redis %s: %s", i + 1, n,
                     jd_redis_reply_node(st->rd, i), r->str);
        rc = 1;
    }
    return rc;
}

int jd_store_watermarks_save(struct jd_store *st, const struct jd_watermark *w, size_t n,
                             char *errstr, size_t errsize)
{
    if (jd_redis_pending(st->rd))
        return exec_fail(st, "watermarks", "commands of another module are pending", errstr,
                         errsize);
    char wms[24], offs[24], why[400];
    why[0] = '\0';
    size_t ncmd = 0;
    for (size_t i = 0; i < n; i++) {
        if (jd_store_pkey(st, w[i].source, ":wm") != 0)
            continue;
        snprintf(wms, sizeof wms, "%" PRId64, w[i].watermark);
        snprintf(offs, sizeof offs, "%" PRId64, w[i].offset);
        arg_str(st, 0, "HSET");
        arg(st, 1, st->pkey.data, st->pkey.len);
        arg_str(st, 2, "watermark");
        arg_str(st, 3, wms);
        arg_str(st, 4, "offset");
        arg_str(st, 5, offs);
        (void)append(st, 6, 1); /* (copied: wms, offs and pkey are reused) */
        ncmd++;
    }
    if (ncmd == 0)
        return 0;
    /* like the customers' writes: only once a replica has it, when there
     * are replicas (the offset it covers is committed next) */
    (void)jd_redis_exec(st->rd, JD_REDIS_REPLICATED, why, sizeof why);
    int rc = check_replies(st, ncmd, why, NULL, errstr, errsize);
    jd_redis_clear(st->rd);
    return rc;
}

int jd_store_watermarks_load(struct jd_store *st, struct jd_watermark *w, size_t n, char *errstr,
                             size_t errsize)
{
    if (jd_redis_pending(st->rd))
        return exec_fail(st, "watermarks", "commands of another module are pending", errstr,
                         errsize);
    char why[400];
    why[0] = '\0';
    size_t ncmd = 0;
    for (size_t i = 0; i < n; i++) {
        w[i].watermark = w[i].offset = -1;
        if (jd_store_pkey(st, w[i].source, ":wm") != 0)
            continue;
        arg_str(st, 0, "HMGET");
        arg(st, 1, st->pkey.data, st->pkey.len);
        arg_str(st, 2, "watermark");
        arg_str(st, 3, "offset");
        (void)append(st, 4, 1);
        ncmd++;
    }
    if (ncmd == 0)
        return 0;
    (void)jd_redis_exec(st->rd, 0, why, sizeof why);
    uint8_t *bad = jd_xcalloc(ncmd, 1);
    int rc = check_replies(st, ncmd, why, bad, errstr, errsize);
    for (size_t i = 0, k = 0; rc >= 0 && i < n; i++) {
        if (jd_store_pkey(st, w[i].source, ":wm") != 0)
            continue;
        const redisReply *r = jd_redis_reply(st->rd, k);
        if (bad[k++])
            continue;
        int64_t wm = -2, off = -2;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
            wm = int_reply(r->element[0]);
            off = int_reply(r->element[1]);
        }
        if (wm == -2 || off == -2) {
            st->errors++;
            if (rc == 0)
                snprintf(errstr, errsize,
                         "watermark %s: unexpected contents (a hash of "
                         "watermark and offset, non-negative integers, expected)",
                         st->pkey.data);
            rc = 1;
            continue;
        }
        w[i].watermark = wm;
        w[i].offset = off;
    }
    free(bad);
    jd_redis_clear(st->rd);
    return rc;
}
