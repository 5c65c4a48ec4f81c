/*
 * engines — processing.engines > 1: several engines in one process, each
 * on a thread of its own and each a member of the consumer group with its
 * own consumer, producer, Redis connections, cache and metrics.
 *
 * Why whole engines rather than one engine split over threads: the group
 * already splits the partitions between members, and every guarantee of
 * docs/guarantees.md is argued per member (a customer lives in one
 * partition, a partition belongs to one member at a time, each member
 * stores only offsets behind its own written state and acknowledged
 * triggers). N engines in one process are N instances that share an
 * address space, a config and a metrics endpoint; nothing else is shared.
 *
 * Owns: the engines, their threads and the leave gate. The caller's thread
 * watches the signals' flags and passes them on (each engine clears its own
 * reload flag), stops every engine as soon as one shuts down (on a signal
 * or on a failure), and sends the systemd notifications for the process
 * (the engines send none when there are several: READY once the merged
 * readiness holds, WATCHDOG while every engine's loop is alive).
 *
 * The leave gate: an engine that leaves the group starts a rebalance, and
 * until the group has settled it refuses the commits of the others (the
 * mock cluster refuses them outright; so does a broker once the rebalance
 * is past its first phase). Engines stopping together would then leave
 * their last offsets uncommitted, and a restart would replay those events
 * (skipped as already applied, but re-read). So every engine, once it has
 * finished, persisted and committed, waits at the gate until all have,
 * and only then leaves (at most LEAVE_WAIT_MS after stopping began: an
 * engine stuck in its shutdown does not hold the others past the time a
 * service manager gives a stop). The engines count themselves busy or
 * idle in one counter, so that an idle engine's heap trim (which locks
 * every arena) waits until none is busy (engine_mem.c).
 */
#include "journeyd/engines.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "journeyd/engine.h"
#include "journeyd/log.h"
#include "journeyd/notify.h"
#include "journeyd/util.h"

#define MOD "main"
/* How long the engines wait at the gate for each other, from the moment
 * stopping begins: under the 60 s that systemd and the k8s Deployment give
 * a stop (deploy/), so that healthy engines still leave the group cleanly
 * when another hangs in its shutdown (30 s of producer drain at most). */
#define LEAVE_WAIT_MS 40000

struct peers {
    struct jd_engine_peers hooks;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    int n;               /* engines that will reach the gate (their thread runs) */
    int arrived;         /* engines that have committed and wait to leave */
    int stopping;        /* an engine's shutdown has begun */
    struct timespec deadline;
    _Atomic int busy;
    _Atomic int assigned; /* partitions owned by all the engines (hooks.assigned) */
    char *reload_text;    /* the config file as read at the last SIGHUP; NULL: none */
};

/* Under p->lock: the first engine to stop starts the gate's clock. */
static void mark_stopping(struct peers *p)
{
    if (p->stopping)
        return;
    p->stopping = 1;
    clock_gettime(CLOCK_MONOTONIC, &p->deadline);
    p->deadline.tv_sec += LEAVE_WAIT_MS / 1000;
}

static void on_stopping(void *arg)
{
    struct peers *p = arg;
    pthread_mutex_lock(&p->lock);
    mark_stopping(p);
    pthread_mutex_unlock(&p->lock);
}

static void gate_wait(void *arg)
{
    struct peers *p = arg;
    pthread_mutex_lock(&p->lock);
    mark_stopping(p); /* (announced by on_stopping before; to be safe) */
    p->arrived++;
    pthread_cond_broadcast(&p->cond);
    int rc = 0;
    while (p->arrived < p->n && rc == 0)
        rc = pthread_cond_timedwait(&p->cond, &p->lock, &p->deadline);
    if (p->arrived < p->n)
        jd_warn(MOD, "leaving the group before %d other engine(s) finished shutting down",
                p->n - p->arrived);
    pthread_mutex_unlock(&p->lock);
}

static int peers_stopping(struct peers *p)
{
    pthread_mutex_lock(&p->lock);
    int s = p->stopping;
    pthread_mutex_unlock(&p->lock);
    return s;
}

struct slot {
    struct jd_engine *e;
    int index;
    pthread_t thread;
    int started;
    jd_flag stop;
    jd_flag reload;
    _Atomic int done;
    int rc;
};

/* Engine i's lines carry "[ei]" (set on the thread that logs them). */
static void tag_engine(int i)
{
    char tag[16];
    snprintf(tag, sizeof tag, "e%d", i);
    jd_log_set_tag(tag);
}

static void *engine_main(void *arg)
{
    struct slot *s = arg;
    char name[16];
    snprintf(name, sizeof name, "jd-engine%d", s->index);
    pthread_setname_np(pthread_self(), name);
    tag_engine(s->index); /* (the thread's, until it ends) */
    s->rc = jd_engine_run(s->e, &s->stop, &s->reload);
    atomic_store(&s->done, 1);
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Creates the engines (engine 0 takes rs0, the others compile their own);
 * on failure destroys what it created, rs0 included, and returns -1. */
static int create(struct slot *slots, int n, const struct jd_config *cfg, struct jd_ruleset *rs0,
                  struct jd_metrics *metrics)
{
    char errstr[512];
    for (int i = 0; i < n; i++) {
        struct jd_ruleset *rs = rs0;
        if (i > 0) {
            struct jd_errors errs;
            jd_errors_init(&errs);
            if (jd_rules_compile(&cfg->rules, &rs, &errs) != 0) {
                jd_error(MOD, "engine %d: rules: %zu error(s)", i, errs.n);
                jd_errors_free(&errs);
                goto err;
            }
            jd_errors_free(&errs);
        }
        struct jd_metrics *m = metrics ? jd_metrics_child(metrics) : NULL;
        tag_engine(i); /* (what it logs while starting) */
        slots[i].index = i;
        slots[i].e = jd_engine_new_member(cfg, rs, m, i, n, errstr, sizeof errstr);
        jd_log_set_tag(NULL);
        if (!slots[i].e) {
            jd_error(MOD, "engine %d: %s", i, errstr);
            jd_rules_destroy(rs); /* (stays ours on failure) */
            goto err;
        }
    }
    return 0;
err:
    for (int i = n - 1; i >= 0; i--) {
        jd_engine_destroy(slots[i].e); /* (engine 0 frees rs0) */
        slots[i].e = NULL;
    }
    return -1;
}

static char *reload_text(void *arg)
{
    struct peers *p = arg;
    pthread_mutex_lock(&p->lock);
    char *copy = p->reload_text ? jd_strdup(p->reload_text) : NULL;
    pthread_mutex_unlock(&p->lock);
    return copy;
}

/* SIGHUP: the config file is read here, once, and every engine compiles
 * that text (reload_text), so that the engines cannot end up on different
 * rules when the file is rewritten while they reload one after the other.
 * (A file it @includes is still read by each engine.) Unreadable: the
 * engines read the file themselves and report the error. */
static void snapshot_config(struct peers *p, const char *path)
{
    struct jd_buf b;
    jd_buf_init(&b);
    char *text = NULL;
    if (jd_buf_read_file(&b, path) == 0)
        text = b.data; /* (taken over) */
    else
        jd_buf_free(&b);
    pthread_mutex_lock(&p->lock);
    free(p->reload_text);
    p->reload_text = text;
    pthread_mutex_unlock(&p->lock);
}

int jd_engines_run(const struct jd_config *cfg, struct jd_ruleset *rs0, struct jd_metrics *metrics,
                   jd_flag *stop, jd_flag *reload)
{
    int n = cfg->engines;
    struct slot *slots = jd_xcalloc((size_t)n, sizeof *slots);
    for (int i = 0; i < n; i++) {
        atomic_init(&slots[i].done, 0);
        atomic_init(&slots[i].stop, 0);
        atomic_init(&slots[i].reload, 0);
    }
    if (create(slots, n, cfg, rs0, metrics) != 0) {
        free(slots);
        return -2;
    }
    struct peers pe = {.n = n};
    pe.hooks = (struct jd_engine_peers){.stopping = on_stopping,
                                        .leave_gate = gate_wait,
                                        .reload_text = reload_text,
                                        .arg = &pe,
                                        .busy = &pe.busy,
                                        .assigned = &pe.assigned};
    atomic_init(&pe.busy, 0);
    atomic_init(&pe.assigned, 0);
    pthread_mutex_init(&pe.lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pe.cond, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < n; i++)
        jd_engine_set_peers(slots[i].e, &pe.hooks);
    int failed = 0;
    for (int i = 0; i < n; i++) {
        if (pthread_create(&slots[i].thread, NULL, engine_main, &slots[i]) != 0) {
            jd_error(MOD, "engine %d: cannot start its thread", i);
            failed = 1;
            pthread_mutex_lock(&pe.lock);
            pe.n = i; /* (the others never run) */
            pthread_cond_broadcast(&pe.cond);
            pthread_mutex_unlock(&pe.lock);
            break;
        }
        slots[i].started = 1;
    }
    if (!failed)
        jd_info(MOD, "%d engines running, one thread each", n);

    int stopping = 0, ready_sent = 0;
    int64_t last_watchdog = 0;
    for (;;) {
        /* (an engine whose shutdown began, on a failure or on its own:
         * the others follow) */
        if ((*stop || failed || peers_stopping(&pe)) && !stopping) {
            stopping = 1;
            jd_notify("STOPPING=1");
            for (int i = 0; i < n; i++)
                slots[i].stop = 1;
        }
        if (atomic_exchange(reload, 0)) {
            snapshot_config(&pe, cfg->path);
            for (int i = 0; i < n; i++)
                slots[i].reload = 1;
        }
        int running = 0;
        for (int i = 0; i < n; i++) {
            if (!slots[i].started)
                continue;
            if (!atomic_load(&slots[i].done))
                running++;
            else if (slots[i].rc != 0 && !failed) {
                jd_error(MOD, "engine %d stopped on a failure: stopping the others", i);
                failed = 1;
            }
        }
        if (!running)
            break;
        if (metrics && !stopping) {
            if (!ready_sent && jd_metrics_ready(metrics, NULL)) {
                jd_notify("READY=1");
                ready_sent = 1;
            }
            int64_t wd = jd_notify_watchdog_interval_ms();
            int64_t now = jd_monotonic_ns();
            if (wd > 0 && now - last_watchdog > wd * 1000000 && jd_metrics_alive(metrics, NULL)) {
                jd_notify("WATCHDOG=1");
                last_watchdog = now;
            }
        }
        sleep_ms(20);
    }
    for (int i = 0; i < n; i++) {
        if (slots[i].started)
            pthread_join(slots[i].thread, NULL);
        jd_engine_destroy(slots[i].e);
    }
    free(pe.reload_text);
    pthread_cond_destroy(&pe.cond);
    pthread_mutex_destroy(&pe.lock);
    free(slots);
    return failed ? -1 : 0;
}
