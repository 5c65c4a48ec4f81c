/*
 * insights — program health and trigger outcomes counted per input
 * partition and written to Redis idempotently (insights.h,
 * docs/outcomes.md).
 *
 * Owns: its Redis connection (a struct jd_redis of its own, opened on first
 * use from all of redis.addresses: one node or a cluster, every command
 * routed by its key), the field layout of the rule set (every
 * counter's name and index), and per owned partition the deltas of the
 * batch in progress and the partition's stats offset: the highest input
 * offset whose effects are in the partition's hash. An event at or below it
 * was counted by an earlier run (a crash between the stats write and the
 * customers' writes), so it changes the customer but not the counts.
 *
 * Layout of the hash PREFIX:{p:TOPIC:PARTITION}:stats (docs/outcomes.md):
 *   stage:NAME  seg:NAME  tr:FROM>TO  nps:GROUP  sent:TRIGGER
 *   sup:TRIGGER:REASON  out:TRIGGER:FIELD  @offset
 * Every partition hash is listed in the set PREFIX:{stats}:partitions so
 * that readers (the gauges, journeyctl) find them without a scan.
 *
 * Why not share the store's jd_redis: the stats must be written in a round
 * trip of their own BEFORE the customers' (a crash between the two replays
 * events the offset then skips), and a pipeline is one buffer: an exec here
 * would send (and a later append clear) commands that other modules append
 * to the store's connection to ride along with its next load or flush. The
 * cost is one more connection per master.
 *
 * The script is sent with EVAL, not EVALSHA: no NOSCRIPT to handle after a
 * failover, a restart or SCRIPT FLUSH (Redis caches the compiled script by
 * its SHA either way), for ~400 bytes per partition and batch. It touches
 * KEYS[1] only, so it runs on the one slot of its partition.
 */
#include "journeyd/insights.h"

#include <assert.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/log.h"
#include "journeyd/outcomes.h"
#include "journeyd/redis_conn.h"

#define MOD "insights"

/* Applies the deltas only past the stored offset (ARGV[1]; empty: deltas
 * of timers, which carry no offset, applied unconditionally). */
static const char FLUSH_SCRIPT[] =
    "local off = redis.call('HGET', KEYS[1], '@offset')\n"
    "if ARGV[1] ~= '' then\n"
    "  if off and tonumber(ARGV[1]) <= tonumber(off) then return 0 end\n"
    "  redis.call('HSET', KEYS[1], '@offset', ARGV[1])\n"
    "end\n"
    "for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end\n"
    "return 1\n";

static const char *const nps_names[JD_NPS_COUNT] = {"promoter", "passive", "detractor"};
static const char *const out_names[JD_OUT_COUNT] = {
    "treated", "treated_converted", "control", "control_converted", "treated_open", "control_open"};

const char *jd_nps_group_name(enum jd_nps_group g)
{
    return (unsigned)g < JD_NPS_COUNT ? nps_names[g] : "";
}

const char *jd_out_field_name(enum jd_out_field f)
{
    return (unsigned)f < JD_OUT_COUNT ? out_names[f] : "";
}

/* ---- layout ---- */

struct named {
    const char *name;
    size_t idx;
};

struct layout {
    size_t ns, ng, nt;
    size_t off_seg, off_tr, off_nps, off_trig, per_trig, n;
    char **names;         /* [n] field names */
    struct named *sorted; /* [n] by name */
};

#define TRIG_SENT 0
#define TRIG_SUP 1
#define TRIG_OUT (1 + JD_SUP_COUNT)

static int cmp_named(const void *a, const void *b)
{
    return strcmp(((const struct named *)a)->name, ((const struct named *)b)->name);
}

static char *fmt(const char *f, const char *a, const char *b)
{
    size_t n = strlen(f) + strlen(a) + (b ? strlen(b) : 0) + 1;
    char *s = jd_xmalloc(n);
    snprintf(s, n, f, a, b ? b : "");
    return s;
}

static void layout_build(struct layout *l, const struct jd_ruleset *rs)
{
    l->ns = jd_rules_nstages(rs);
    l->ng = jd_rules_nsegments(rs);
    l->nt = jd_rules_ntriggers(rs);
    l->off_seg = l->ns;
    l->off_tr = l->off_seg + l->ng;
    l->off_nps = l->off_tr + (l->ns + 1) * l->ns;
    l->off_trig = l->off_nps + JD_NPS_COUNT;
    l->per_trig = 1 + JD_SUP_COUNT + JD_OUT_COUNT;
    l->n = l->off_trig + l->nt * l->per_trig;
    l->names = jd_xcalloc(l->n ? l->n : 1, sizeof *l->names);
    for (size_t i = 0; i < l->ns; i++)
        l->names[i] = fmt("stage:%s", jd_rules_stage_name(rs, i), NULL);
    for (size_t i = 0; i < l->ng; i++)
        l->names[l->off_seg + i] = fmt("seg:%s", jd_rules_segment_name(rs, i), NULL);
    for (size_t f = 0; f <= l->ns; f++)
        for (size_t t = 0; t < l->ns; t++)
            l->names[l->off_tr + f * l->ns + t] =
                fmt("tr:%s>%s", f ? jd_rules_stage_name(rs, f - 1) : "(new)",
                    jd_rules_stage_name(rs, t));
    for (size_t i = 0; i < JD_NPS_COUNT; i++)
        l->names[l->off_nps + i] = fmt("nps:%s", nps_names[i], NULL);
    for (size_t t = 0; t < l->nt; t++) {
        const char *tn = jd_rules_trigger(rs, t)->on.name;
        size_t base = l->off_trig + t * l->per_trig;
        l->names[base + TRIG_SENT] = fmt("sent:%s", tn, NULL);
        for (int r = 0; r < JD_SUP_COUNT; r++) {
            char tmp[256];
            snprintf(tmp, sizeof tmp, "sup:%s:%s", tn,
                     jd_suppress_reason_name((enum jd_suppress_reason)r));
            l->names[base + TRIG_SUP + (size_t)r] = jd_strdup(tmp);
        }
        for (int k = 0; k < JD_OUT_COUNT; k++)
            l->names[base + TRIG_OUT + (size_t)k] = fmt("out:%s:%s", tn, out_names[k]);
    }
    l->sorted = jd_xcalloc(l->n ? l->n : 1, sizeof *l->sorted);
    for (size_t i = 0; i < l->n; i++)
        l->sorted[i] = (struct named){l->names[i], i};
    qsort(l->sorted, l->n, sizeof *l->sorted, cmp_named);
}

static void layout_free(struct layout *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    free(l->sorted);
    memset(l, 0, sizeof *l);
}

/* Index of a field name, -1 when the rule set has no such counter. */
static long layout_find(const struct layout *l, const char *name)
{
    struct named key = {name, 0};
    const struct named *f = bsearch(&key, l->sorted, l->n, sizeof *l->sorted, cmp_named);
    return f ? (long)f->idx : -1;
}

/* ---- state ---- */

enum { FLY_NONE, FLY_BUILT, FLY_FAILED };

struct ipart {
    char *key; /* NULL: slot unused */
    uint32_t gen;
    int want;
    int known;      /* offset loaded for the current ownership */
    int registered; /* listed in the partitions set by this process */
    int dirty;
    int64_t offset;  /* stats offset in Redis; -1 none */
    int64_t pending; /* highest offset counted in the unwritten deltas */
    int64_t *d;      /* [layout.n] */
    /* the deltas of a flush (see "writing" below): taken out of d by the
     * build, zero again once written; kept whole when their write failed */
    int64_t *fly; /* [layout.n] */
    int64_t fly_offset;
    int fly_state; /* FLY_NONE, FLY_BUILT (in the pipeline), FLY_FAILED */
    /* reply indices in the pipeline at hand; SIZE_MAX: no such command */
    size_t q_hget, q_sadd, q_eval;
};

struct jd_insights {
    const struct jd_config *cfg;
    const struct jd_ruleset *rs;
    struct layout lay;
    struct jd_redis *rd; /* NULL until first use */
    int timeout_ms;
    char *registry; /* PREFIX:{stats}:partitions */

    struct ipart **parts; /* [topic][partition] */
    int32_t *nparts;

    /* the event or timer in progress */
    struct ipart *cur; /* NULL: not counted */
    struct jd_customer *c;
    int32_t old_stage;
    uint64_t old_segments;
    int old_nps;

    int64_t last_tick_ns;
    int tick_failing;

    /* a flush built and not yet finished (the write-back thread may be
     * sending it: nothing else uses rd meanwhile) */
    int built;
    size_t nbuilt; /* commands in it */
    int exec_rc;
    char exec_err[512];

    /* scratch */
    const char **argv;
    size_t *argvlen;
    size_t argcap;
    struct jd_buf nums;
};

struct jd_insights *jd_insights_new(const struct jd_config *cfg, const struct jd_ruleset *rs)
{
    struct jd_insights *ins = jd_xcalloc(1, sizeof *ins);
    ins->cfg = cfg;
    ins->rs = rs;
    layout_build(&ins->lay, rs);
    ins->timeout_ms = cfg->redis_timeout_ms > 0 ? cfg->redis_timeout_ms : 2000;
    const char *prefix = cfg->key_prefix ? cfg->key_prefix : "j";
    ins->registry = fmt("%s:{stats}:partitions", prefix, NULL);
    ins->parts = jd_xcalloc(cfg->ninput_topics ? cfg->ninput_topics : 1, sizeof *ins->parts);
    ins->nparts = jd_xcalloc(cfg->ninput_topics ? cfg->ninput_topics : 1, sizeof *ins->nparts);
    jd_buf_init(&ins->nums);
    return ins;
}

void jd_insights_destroy(struct jd_insights *ins)
{
    if (!ins)
        return;
    for (size_t t = 0; t < ins->cfg->ninput_topics; t++) {
        for (int32_t p = 0; p < ins->nparts[t]; p++) {
            free(ins->parts[t][p].key);
            free(ins->parts[t][p].d);
            free(ins->parts[t][p].fly);
        }
        free(ins->parts[t]);
    }
    free(ins->parts);
    free(ins->nparts);
    jd_redis_destroy(ins->rd);
    layout_free(&ins->lay);
    free(ins->registry);
    free(ins->argv);
    free(ins->argvlen);
    jd_buf_free(&ins->nums);
    free(ins);
}

static void each_part(struct jd_insights *ins,
                      void (*fn)(struct jd_insights *, struct ipart *, void *), void *ud)
{
    for (size_t t = 0; t < ins->cfg->ninput_topics; t++)
        for (int32_t p = 0; p < ins->nparts[t]; p++)
            if (ins->parts[t][p].key)
                fn(ins, &ins->parts[t][p], ud);
}

static int64_t *remap(const struct jd_insights *ins, const struct layout *old, int64_t *d)
{
    int64_t *nd = jd_xcalloc(ins->lay.n ? ins->lay.n : 1, sizeof *nd);
    for (size_t i = 0; i < old->n; i++) {
        long j = d[i] ? layout_find(&ins->lay, old->names[i]) : -1;
        if (j >= 0)
            nd[j] = d[i];
    }
    free(d);
    return nd;
}

static void remap_part(struct jd_insights *ins, struct ipart *ip, void *ud)
{
    /* Deltas are written at the end of every batch and reloads happen
     * between batches, so this is normally all zero; carry what is not
     * (a failed flush's deltas too: they are sent again under the new
     * names, which keep their meaning across a reload). */
    const struct layout *old = ud;
    ip->d = remap(ins, old, ip->d);
    ip->fly = remap(ins, old, ip->fly);
}

void jd_insights_bind(struct jd_insights *ins, const struct jd_ruleset *rs)
{
    assert(!ins->built);
    struct layout old = ins->lay;
    ins->rs = rs;
    layout_build(&ins->lay, rs);
    each_part(ins, remap_part, &old);
    layout_free(&old);
}

static struct ipart *part_of(struct jd_insights *ins, int32_t source)
{
    int32_t ti = source >> 16, pi = source & 0xffff;
    if (ti < 0 || (size_t)ti >= ins->cfg->ninput_topics || pi >= ins->nparts[ti])
        return NULL;
    struct ipart *ip = &ins->parts[ti][pi];
    return ip->key ? ip : NULL;
}

void jd_insights_want(struct jd_insights *ins, int32_t source, const char *topic, int32_t partition,
                      uint32_t gen)
{
    int32_t ti = source >> 16, pi = source & 0xffff;
    if (ti < 0 || (size_t)ti >= ins->cfg->ninput_topics)
        return;
    if (pi >= ins->nparts[ti]) {
        int32_t n = ins->nparts[ti] ? ins->nparts[ti] : 16;
        while (n <= pi)
            n *= 2;
        ins->parts[ti] = jd_xrealloc(ins->parts[ti], (size_t)n * sizeof *ins->parts[ti]);
        memset(ins->parts[ti] + ins->nparts[ti], 0,
               (size_t)(n - ins->nparts[ti]) * sizeof *ins->parts[ti]);
        ins->nparts[ti] = n;
    }
    struct ipart *ip = &ins->parts[ti][pi];
    if (!ip->key) {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s:{p:%s:%" PRId32 "}:stats",
                 ins->cfg->key_prefix ? ins->cfg->key_prefix : "j", topic, partition);
        ip->key = jd_strdup(tmp);
        ip->d = jd_xcalloc(ins->lay.n ? ins->lay.n : 1, sizeof *ip->d);
        ip->fly = jd_xcalloc(ins->lay.n ? ins->lay.n : 1, sizeof *ip->fly);
        ip->gen = gen;
        /* in no pipeline (a flush on its way judges only its own) */
        ip->q_hget = ip->q_sadd = ip->q_eval = SIZE_MAX;
    }
    if (ip->gen != gen) {
        /* Released and owned again: another instance may have counted
         * meanwhile, and unwritten deltas belong to a batch that will be
         * consumed again. */
        ip->gen = gen;
        ip->known = 0;
        ip->dirty = 0;
        memset(ip->d, 0, ins->lay.n * sizeof *ip->d);
        memset(ip->fly, 0, ins->lay.n * sizeof *ip->fly);
        ip->fly_state = FLY_NONE;
    }
    if (!ip->known)
        ip->want = 1;
}

/* ---- Redis ---- */

/* The connection, opened (or, after a lost connection, re-opened) here:
 * the engine retries a failed call after a backoff, so a call finding no
 * connection is the moment to make one. */
static int conn(struct jd_insights *ins, char *errstr, size_t errsize)
{
    if (ins->rd && jd_redis_connected(ins->rd))
        return 0;
    if (ins->rd)
        return jd_redis_reconnect(ins->rd, errstr, errsize);
    static const char *const fallback[1] = {"127.0.0.1:6379"};
    const char *const *seeds = fallback;
    size_t nseeds = 1;
    if (ins->cfg->nredis_addresses) {
        seeds = (const char *const *)ins->cfg->redis_addresses;
        nseeds = ins->cfg->nredis_addresses;
    }
    ins->rd = jd_redis_new(seeds, nseeds, ins->timeout_ms, errstr, errsize);
    return ins->rd ? 0 : -1;
}

static void arg(struct jd_insights *ins, size_t i, const char *p, size_t len)
{
    if (i >= ins->argcap) {
        ins->argcap = ins->argcap ? ins->argcap * 2 : 64;
        while (ins->argcap <= i)
            ins->argcap *= 2;
        ins->argv = jd_xrealloc(ins->argv, ins->argcap * sizeof *ins->argv);
        ins->argvlen = jd_xrealloc(ins->argvlen, ins->argcap * sizeof *ins->argvlen);
    }
    ins->argv[i] = p;
    ins->argvlen[i] = len;
}

/* Appends argv[0..argc) routed by argv[key_arg]; its reply index. */
static size_t append(struct jd_insights *ins, int key_arg, size_t argc)
{
    size_t i = jd_redis_append(ins->rd, key_arg, (int)argc, ins->argv, ins->argvlen);
    ins->nbuilt = i + 1;
    return i;
}

/* 0 when command i has a reply that is not an error; -1 otherwise, with
 * errstr set for an error reply (no reply: the exec's errstr says why). */
static int reply_ok(struct jd_insights *ins, size_t i, const char *what, const char *key,
                    char *errstr, size_t errsize)
{
    const redisReply *r = jd_redis_reply(ins->rd, i);
    if (!r)
        return -1; /* not executed: errstr has the exec's reason */
    if (r->type != REDIS_REPLY_ERROR)
        return 0;
    snprintf(errstr, errsize, "%s %s: Redis %s: %s", what, key, jd_redis_reply_node(ins->rd, i),
             r->str);
    return -1;
}

/* The outcome of a pipeline, gathered over the partitions. */
struct outcome {
    int rc;
    char *errstr;
    size_t errsize;
};

static void want_cmd(struct jd_insights *ins, struct ipart *ip, void *ud)
{
    (void)ud;
    ip->q_hget = SIZE_MAX;
    if (ip->want && !ip->known) {
        arg(ins, 0, "HGET", 4);
        arg(ins, 1, ip->key, strlen(ip->key));
        arg(ins, 2, "@offset", 7);
        ip->q_hget = append(ins, 1, 3);
    }
}

static void want_reply(struct jd_insights *ins, struct ipart *ip, void *ud)
{
    struct outcome *ld = ud;
    size_t i = ip->q_hget;
    if (i == SIZE_MAX)
        return;
    char err[512];
    if (reply_ok(ins, i, "stats offset of", ip->key, err, sizeof err) != 0) {
        if (!ld->rc && jd_redis_reply(ins->rd, i))
            snprintf(ld->errstr, ld->errsize, "%s", err);
        ld->rc = -1;
        return;
    }
    const redisReply *r = jd_redis_reply(ins->rd, i);
    if (r->type == REDIS_REPLY_STRING) {
        ip->offset = strtoll(r->str, NULL, 10);
    } else if (r->type == REDIS_REPLY_NIL) {
        ip->offset = -1;
    } else {
        if (!ld->rc)
            snprintf(ld->errstr, ld->errsize, "stats offset of %s: unexpected reply", ip->key);
        ld->rc = -1;
        return;
    }
    ip->known = 1;
    ip->want = 0;
    ip->pending = ip->offset;
}

int jd_insights_offsets_wanted(const struct jd_insights *ins)
{
    for (size_t t = 0; t < ins->cfg->ninput_topics; t++)
        for (int32_t p = 0; p < ins->nparts[t]; p++)
            if (ins->parts[t][p].want && !ins->parts[t][p].known)
                return 1;
    return 0;
}

int jd_insights_load_offsets(struct jd_insights *ins, char *errstr, size_t errsize)
{
    size_t n = 0;
    for (size_t t = 0; t < ins->cfg->ninput_topics && n == 0; t++)
        for (int32_t p = 0; p < ins->nparts[t] && n == 0; p++)
            n = ins->parts[t][p].want && !ins->parts[t][p].known;
    if (n == 0)
        return 0;
    assert(!ins->built);
    if (conn(ins, errstr, errsize) != 0)
        return -1;
    struct outcome ld = {0, errstr, errsize};
    each_part(ins, want_cmd, NULL);
    /* partitions whose offset came back are known even when others failed */
    ld.rc = jd_redis_exec(ins->rd, 0, errstr, errsize);
    each_part(ins, want_reply, &ld);
    jd_redis_clear(ins->rd);
    return ld.rc;
}

/* ---- counting ---- */

static void add(struct jd_insights *ins, size_t idx, int64_t delta)
{
    if (!ins->cur || idx >= ins->lay.n)
        return;
    ins->cur->d[idx] += delta;
    ins->cur->dirty = 1;
}

static size_t trig_idx(const struct jd_insights *ins, size_t t, size_t field)
{
    return ins->lay.off_trig + t * ins->lay.per_trig + field;
}

static int nps_group(int32_t score)
{
    if (score < 0)
        return -1;
    return score >= 9 ? JD_NPS_PROMOTER : score >= 7 ? JD_NPS_PASSIVE : JD_NPS_DETRACTOR;
}

static void goal_resolved(void *ud, const struct jd_goal *g, int converted)
{
    struct jd_insights *ins = ud;
    size_t base = TRIG_OUT;
    if (g->control) {
        add(ins, trig_idx(ins, g->trigger, base + JD_OUT_CONTROL_OPEN), -1);
        add(ins, trig_idx(ins, g->trigger, base + JD_OUT_CONTROL), 1);
        if (converted)
            add(ins, trig_idx(ins, g->trigger, base + JD_OUT_CONTROL_CONVERTED), 1);
    } else {
        add(ins, trig_idx(ins, g->trigger, base + JD_OUT_TREATED_OPEN), -1);
        add(ins, trig_idx(ins, g->trigger, base + JD_OUT_TREATED), 1);
        if (converted)
            add(ins, trig_idx(ins, g->trigger, base + JD_OUT_TREATED_CONVERTED), 1);
    }
}

/* offset: the input offset the change is tied to (an event's, or the event
 * a timer fired just before), -1 for none (a timer tick: not guarded). */
static void begin(struct jd_insights *ins, struct jd_customer *c, const struct jd_event *ev,
                  int64_t offset, int64_t now)
{
    struct ipart *ip = part_of(ins, c->partition);
    ins->cur = NULL;
    if (ip && ip->known) {
        if (offset < 0) {
            ins->cur = ip;
        } else if (offset > ip->offset) {
            ins->cur = ip;
            if (offset > ip->pending)
                ip->pending = offset;
        }
    }
    ins->c = c;
    ins->old_stage = c->stage;
    ins->old_segments = c->segments;
    ins->old_nps = nps_group(c->last_score);
    if (c->ngoals) {
        int64_t t_goal = ev && ins->cfg->clock == JD_CLOCK_EVENT ? ev->occurred_at : now;
        jd_outcomes_resolve(ins->rs, c, ev, t_goal, now, goal_resolved, ins);
    }
}

void jd_insights_begin(struct jd_insights *ins, struct jd_customer *c, const struct jd_event *ev,
                       int64_t now)
{
    begin(ins, c, ev, ev ? ev->offset : -1, now);
}

void jd_insights_begin_timer(struct jd_insights *ins, struct jd_customer *c, int64_t offset,
                             int64_t now)
{
    begin(ins, c, NULL, offset, now);
}

void jd_insights_end(struct jd_insights *ins, const struct jd_customer *c)
{
    if (ins->cur && c == ins->c) {
        const struct layout *l = &ins->lay;
        int32_t from = ins->old_stage, to = c->stage;
        if (from != to && to >= 0 && (size_t)to < l->ns && from < (int32_t)l->ns) {
            if (from >= 0)
                add(ins, (size_t)from, -1);
            add(ins, (size_t)to, 1);
            add(ins, l->off_tr + (size_t)(from + 1) * l->ns + (size_t)to, 1);
        }
        uint64_t changed = ins->old_segments ^ c->segments;
        for (size_t s = 0; changed && s < l->ng && s < 64; s++)
            if (changed & (UINT64_C(1) << s))
                add(ins, l->off_seg + s, (c->segments >> s) & 1 ? 1 : -1);
        int g = nps_group(c->last_score);
        if (g != ins->old_nps) {
            if (ins->old_nps >= 0)
                add(ins, l->off_nps + (size_t)ins->old_nps, -1);
            if (g >= 0)
                add(ins, l->off_nps + (size_t)g, 1);
        }
    }
    ins->cur = NULL;
    ins->c = NULL;
}

static void decided(struct jd_insights *ins, struct jd_customer *c, size_t t, int control,
                    int64_t now)
{
    int r = jd_outcomes_open(ins->rs, c, t, control, now);
    if (r > 0)
        add(ins, trig_idx(ins, t, TRIG_OUT + (control ? JD_OUT_CONTROL_OPEN : JD_OUT_TREATED_OPEN)),
            1);
    else if (r < 0)
        jd_debug(MOD, "customer %s: %d goals open, decision of %s not measured", c->id,
                 JD_MAX_OPEN_GOALS, jd_rules_trigger(ins->rs, t)->on.name);
}

void jd_insights_sent(struct jd_insights *ins, struct jd_customer *c, size_t trigger, int64_t now)
{
    if (trigger >= ins->lay.nt)
        return;
    add(ins, trig_idx(ins, trigger, TRIG_SENT), 1);
    decided(ins, c, trigger, 0, now);
}

void jd_insights_suppressed(struct jd_insights *ins, struct jd_customer *c, size_t trigger,
                            const char *reason, int64_t now)
{
    if (trigger >= ins->lay.nt)
        return;
    enum jd_suppress_reason r = jd_suppress_reason_parse(reason);
    add(ins, trig_idx(ins, trigger, TRIG_SUP + (size_t)r), 1);
    if (r == JD_SUP_HOLDOUT)
        decided(ins, c, trigger, 1, now);
}

/* ---- writing ----
 * A flush sends each partition's deltas with the highest offset they count
 * (the script's marker: deltas up to an offset are added once; Redis skips
 * them when it has counted that far). It goes in three steps so that the
 * write-back thread can send it ahead of the customers (engine_wb.c):
 * build moves the deltas out of ip->d into the flight (ip->fly), so that
 * the next batch counts afresh while it travels; exec sends it; finish
 * judges every partition by its own reply. A flight whose write failed is
 * kept whole and sent again first, alone, with its own marker: had Redis
 * run it and only the reply been lost, the script skips it, whereas merged
 * into newer deltas under a newer marker it would be counted twice. */

static void flush_cmd(struct jd_insights *ins, struct ipart *ip, void *ud)
{
    const int *retry = ud;
    ip->q_sadd = ip->q_eval = SIZE_MAX;
    if (!ip->known)
        return;
    if (*retry) {
        if (ip->fly_state != FLY_FAILED)
            return;
    } else {
        if (!ip->dirty)
            return;
        int64_t *d = ip->fly; /* zero: no failed flight is left (the retry came first) */
        ip->fly = ip->d;
        ip->d = d;
        ip->fly_offset = ip->pending;
        ip->dirty = 0;
    }
    ip->fly_state = FLY_BUILT;
    if (!ip->registered) {
        /* on the registry's slot, apart from the script (another slot) */
        arg(ins, 0, "SADD", 4);
        arg(ins, 1, ins->registry, strlen(ins->registry));
        arg(ins, 2, ip->key, strlen(ip->key));
        ip->q_sadd = append(ins, 1, 3);
    }
    /* numbers first (the buffer may move), then the pointers into it */
    jd_buf_reset(&ins->nums);
    if (ip->fly_offset > ip->offset)
        jd_buf_printf(&ins->nums, "%" PRId64, ip->fly_offset);
    size_t marker_len = ins->nums.len;
    for (size_t i = 0; i < ins->lay.n; i++)
        if (ip->fly[i]) {
            jd_buf_printf(&ins->nums, "%" PRId64, ip->fly[i]);
            jd_buf_append(&ins->nums, "", 1);
        }
    const char *p = ins->nums.data ? ins->nums.data : "";
    arg(ins, 0, "EVAL", 4);
    arg(ins, 1, FLUSH_SCRIPT, sizeof FLUSH_SCRIPT - 1);
    arg(ins, 2, "1", 1);
    arg(ins, 3, ip->key, strlen(ip->key)); /* KEYS[1]: the script's slot */
    arg(ins, 4, p, marker_len);
    size_t a = 5;
    const char *q = p + marker_len;
    for (size_t i = 0; i < ins->lay.n; i++) {
        if (!ip->fly[i])
            continue;
        arg(ins, a++, ins->lay.names[i], strlen(ins->lay.names[i]));
        size_t len = strlen(q);
        arg(ins, a++, q, len);
        q += len + 1;
    }
    /* jd_redis_append copies the arguments: nums is free again */
    ip->q_eval = append(ins, 3, a);
}

static void flush_reply(struct jd_insights *ins, struct ipart *ip, void *ud)
{
    struct outcome *fl = ud;
    size_t sadd = ip->q_sadd, eval = ip->q_eval;
    if (eval == SIZE_MAX || ip->fly_state != FLY_BUILT)
        return; /* not in this flush (a partition may have come while it travelled) */
    char err[512];
    if (sadd != SIZE_MAX) {
        if (reply_ok(ins, sadd, "stats registry", ins->registry, err, sizeof err) == 0)
            ip->registered = 1;
        else if (jd_redis_reply(ins->rd, sadd)) {
            if (!fl->rc)
                snprintf(fl->errstr, fl->errsize, "%s", err);
            fl->rc = -1;
        }
    }
    if (reply_ok(ins, eval, "stats flush", ip->key, err, sizeof err) != 0) {
        /* a script error (or no reply): the flight is sent again, first */
        if (!fl->rc && jd_redis_reply(ins->rd, eval))
            snprintf(fl->errstr, fl->errsize, "%s", err);
        fl->rc = -1;
        ip->fly_state = FLY_FAILED;
        return;
    }
    const redisReply *r = jd_redis_reply(ins->rd, eval);
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 0)
        /* someone counted past us: a zombie owner, or our own write whose
         * reply was lost (then re-sent) */
        jd_warn(MOD, "%s: stats offset already past %" PRId64 "; deltas skipped", ip->key,
                ip->fly_offset);
    /* written: a partition's deltas are never sent twice, even when another
     * partition's write failed */
    memset(ip->fly, 0, ins->lay.n * sizeof *ip->fly);
    ip->fly_state = FLY_NONE;
    if (ip->fly_offset > ip->offset)
        ip->offset = ip->fly_offset;
}

static int any_part(struct jd_insights *ins, int failed)
{
    for (size_t t = 0; t < ins->cfg->ninput_topics; t++)
        for (int32_t p = 0; p < ins->nparts[t]; p++) {
            const struct ipart *ip = &ins->parts[t][p];
            if (ip->key && ip->known && (failed ? ip->fly_state == FLY_FAILED : ip->dirty))
                return 1;
        }
    return 0;
}

/* Builds the pipeline of the failed flights (retry) or of the current
 * deltas; 0 with nothing to send, 1 built, -1 no connection. */
static int build(struct jd_insights *ins, int retry, char *errstr, size_t errsize)
{
    if (!any_part(ins, retry))
        return 0;
    if (conn(ins, errstr, errsize) != 0)
        return -1;
    ins->nbuilt = 0;
    each_part(ins, flush_cmd, &retry);
    ins->built = 1;
    return 1;
}

int jd_insights_flush_build(struct jd_insights *ins, char *errstr, size_t errsize)
{
    assert(!ins->built);
    int rc = build(ins, 1, errstr, errsize);
    if (rc == 1) {
        jd_insights_flush_exec(ins);
        rc = jd_insights_flush_finish(ins, errstr, errsize);
    }
    return rc < 0 ? -1 : build(ins, 0, errstr, errsize) < 0 ? -1 : 0;
}

int jd_insights_flush_exec(struct jd_insights *ins)
{
    if (!ins->built)
        return 0;
    /* replicated like the customers' writes: the stats offset must not be
     * lost in a failover that keeps the customers written after it */
    ins->exec_rc = jd_redis_exec(ins->rd, JD_REDIS_REPLICATED, ins->exec_err, sizeof ins->exec_err);
    if (ins->exec_rc != 0)
        return -1;
    /* an error reply (a script error, WRONGTYPE, NOPERM) is a failure too:
     * the customers behind it must not be sent (only the pipeline's own
     * replies are read here: the partitions are the owner's; the finish
     * says which partition failed and why) */
    for (size_t i = 0; i < ins->nbuilt; i++) {
        const redisReply *r = jd_redis_reply(ins->rd, i);
        if (!r || r->type == REDIS_REPLY_ERROR)
            return -1;
    }
    return 0;
}

int jd_insights_flush_finish(struct jd_insights *ins, char *errstr, size_t errsize)
{
    if (!ins->built)
        return 0;
    struct outcome fl = {ins->exec_rc, errstr, errsize};
    if (fl.rc)
        snprintf(errstr, errsize, "%s", ins->exec_err);
    each_part(ins, flush_reply, &fl);
    jd_redis_clear(ins->rd);
    ins->built = 0;
    return fl.rc;
}

int jd_insights_flying(const struct jd_insights *ins)
{
    return ins->built;
}

int jd_insights_flush(struct jd_insights *ins, char *errstr, size_t errsize)
{
    if (jd_insights_flush_build(ins, errstr, errsize) != 0)
        return -1;
    jd_insights_flush_exec(ins);
    return jd_insights_flush_finish(ins, errstr, errsize);
}

static void discard_part(struct jd_insights *ins, struct ipart *ip, void *ud)
{
    (void)ud;
    memset(ip->d, 0, ins->lay.n * sizeof *ip->d);
    ip->dirty = 0;
    ip->pending = ip->offset;
}

void jd_insights_discard(struct jd_insights *ins)
{
    each_part(ins, discard_part, NULL);
}

/* ---- reading ---- */

void jd_program_free(struct jd_program *p)
{
    free(p->v);
    memset(p, 0, sizeof *p);
}

static void program_shape(struct jd_program *p, const struct layout *l)
{
    memset(p, 0, sizeof *p);
    p->nstages = l->ns;
    p->nsegments = l->ng;
    p->ntriggers = l->nt;
    p->v = jd_xcalloc(l->n ? l->n : 1, sizeof *p->v);
    p->stage = p->v;
    p->segment = p->v + l->off_seg;
    p->transition = p->v + l->off_tr;
    p->nps = p->v + l->off_nps;
    /* the trigger blocks interleave; copied out below */
}

int jd_insights_read(struct jd_insights *ins, struct jd_program *out, char *errstr, size_t errsize)
{
    assert(!ins->built);
    const struct layout *l = &ins->lay;
    memset(out, 0, sizeof *out);
    if (conn(ins, errstr, errsize) != 0)
        return -1;
    arg(ins, 0, "SMEMBERS", 8);
    arg(ins, 1, ins->registry, strlen(ins->registry));
    size_t si = append(ins, 1, 2);
    if (jd_redis_exec(ins->rd, 0, errstr, errsize) != 0 ||
        reply_ok(ins, si, "stats read", ins->registry, errstr, errsize) != 0) {
        jd_redis_clear(ins->rd);
        return -1;
    }
    const redisReply *set = jd_redis_reply(ins->rd, si);
    if (set->type != REDIS_REPLY_ARRAY) {
        snprintf(errstr, errsize, "stats read %s: unexpected reply", ins->registry);
        jd_redis_clear(ins->rd);
        return -1;
    }
    /* the member names outlive the SMEMBERS reply (the next append clears it) */
    struct jd_buf names;
    jd_buf_init(&names);
    size_t nparts = set->elements;
    for (size_t i = 0; i < nparts; i++)
        jd_buf_append(&names, set->element[i]->str, set->element[i]->len + 1);
    jd_redis_clear(ins->rd);
    const char *name = names.data;
    for (size_t i = 0; i < nparts; i++) {
        size_t len = strlen(name);
        arg(ins, 0, "HGETALL", 7);
        arg(ins, 1, name, len);
        (void)append(ins, 1, 2); /* index i */
        name += len + 1;
    }
    struct jd_program p;
    program_shape(&p, l);
    int rc = nparts ? jd_redis_exec(ins->rd, 0, errstr, errsize) : 0;
    name = names.data;
    for (size_t i = 0; i < nparts && rc == 0; i++) {
        if (reply_ok(ins, i, "stats read", name, errstr, errsize) != 0) {
            rc = -1;
            break;
        }
        const redisReply *r = jd_redis_reply(ins->rd, i);
        if (r->type != REDIS_REPLY_ARRAY) {
            snprintf(errstr, errsize, "stats read %s: unexpected reply", name);
            rc = -1;
            break;
        }
        for (size_t k = 0; k + 1 < r->elements; k += 2) {
            long j = layout_find(l, r->element[k]->str);
            if (j >= 0)
                p.v[j] += strtoll(r->element[k + 1]->str, NULL, 10);
        }
        name += strlen(name) + 1;
    }
    jd_redis_clear(ins->rd);
    jd_buf_free(&names);
    p.npartitions = nparts;
    if (rc) {
        jd_program_free(&p);
        return -1;
    }
    /* flat per-trigger blocks into the three arrays */
    int64_t *blocks = jd_xcalloc(l->nt * l->per_trig + 1, sizeof *blocks);
    memcpy(blocks, p.v + l->off_trig, l->nt * l->per_trig * sizeof *blocks);
    size_t base = l->off_trig;
    p.sent = p.v + base;
    p.suppressed = p.sent + l->nt;
    p.outcome = p.suppressed + l->nt * JD_SUP_COUNT;
    for (size_t t = 0; t < l->nt; t++) {
        const int64_t *b = blocks + t * l->per_trig;
        p.sent[t] = b[TRIG_SENT];
        memcpy(p.suppressed + t * JD_SUP_COUNT, b + TRIG_SUP, JD_SUP_COUNT * sizeof *b);
        memcpy(p.outcome + t * JD_OUT_COUNT, b + TRIG_OUT, JD_OUT_COUNT * sizeof *b);
    }
    free(blocks);
    *out = p;
    return 0;
}

/* ---- gauges ---- */

int jd_insights_tick_due(const struct jd_insights *ins)
{
    return !ins->last_tick_ns ||
           jd_monotonic_ns() - ins->last_tick_ns >= JD_INSIGHTS_REFRESH_MS * 1000000LL;
}

void jd_insights_tick(struct jd_insights *ins, struct jd_metrics *m)
{
    int64_t now = jd_monotonic_ns();
    if (!m || !jd_insights_tick_due(ins))
        return;
    ins->last_tick_ns = now;
    struct jd_program p;
    char errstr[512];
    if (jd_insights_read(ins, &p, errstr, sizeof errstr) != 0) {
        if (!ins->tick_failing)
            jd_warn(MOD, "program gauges not refreshed: %s", errstr);
        ins->tick_failing = 1;
        return;
    }
    ins->tick_failing = 0;
    const struct jd_ruleset *rs = ins->rs;
    size_t ns = p.nstages, cap = ns + (ns + 1) * ns + JD_NPS_COUNT + p.ntriggers * 6 + 1, n = 0;
    struct jd_series *s = jd_xcalloc(cap, sizeof *s);
    for (size_t i = 0; i < ns; i++)
        s[n++] = (struct jd_series){
            JD_PF_STAGE_CUSTOMERS, {jd_rules_stage_name(rs, i), NULL}, p.stage[i]};
    for (size_t f = 0; f <= ns; f++)
        for (size_t t = 0; t < ns; t++)
            if (p.transition[f * ns + t])
                s[n++] = (struct jd_series){
                    JD_PF_STAGE_TRANSITIONS,
                    {f ? jd_rules_stage_name(rs, f - 1) : "(new)", jd_rules_stage_name(rs, t)},
                    p.transition[f * ns + t]};
    for (int g = 0; g < JD_NPS_COUNT; g++)
        s[n++] = (struct jd_series){JD_PF_NPS, {nps_names[g], NULL}, p.nps[g]};
    for (size_t t = 0; t < p.ntriggers; t++) {
        const struct jd_trigger_src *ts = jd_rules_trigger(rs, t);
        if (!ts->goal)
            continue;
        const int64_t *o = p.outcome + t * JD_OUT_COUNT;
        const char *name = ts->on.name;
        s[n++] = (struct jd_series){JD_PF_DECISIONS, {name, "treated"}, o[JD_OUT_TREATED]};
        s[n++] = (struct jd_series){JD_PF_DECISIONS, {name, "control"}, o[JD_OUT_CONTROL]};
        s[n++] =
            (struct jd_series){JD_PF_CONVERSIONS, {name, "treated"}, o[JD_OUT_TREATED_CONVERTED]};
        s[n++] =
            (struct jd_series){JD_PF_CONVERSIONS, {name, "control"}, o[JD_OUT_CONTROL_CONVERTED]};
        s[n++] =
            (struct jd_series){JD_PF_DECISIONS_OPEN, {name, "treated"}, o[JD_OUT_TREATED_OPEN]};
        s[n++] =
            (struct jd_series){JD_PF_DECISIONS_OPEN, {name, "control"}, o[JD_OUT_CONTROL_OPEN]};
    }
    jd_metrics_set_program(m, s, n);
    for (size_t i = 0; i < p.nsegments; i++)
        jd_metrics_segment_members_set(m, i, p.segment[i]);
    free(s);
    jd_program_free(&p);
}
