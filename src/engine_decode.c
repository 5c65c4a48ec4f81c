/*
 * engine_decode — the batch taken ahead is decoded on a thread of its own
 * while the engine's thread writes back and produces the batch it just
 * applied.
 *
 * Under load the main loop takes the next batch ahead (engine.c,
 * take_ahead); its customers are loaded by the loader thread
 * (engine_load.c) and, from here, its messages are decoded by the decoder
 * thread, with a codec of its own, into events whose strings are copied
 * into an arena of the decoder's. The next batch then takes each event as
 * decoded instead of decoding it on the engine's thread (decoding was ~12 %
 * of that thread's time on the benchmark: docs/performance.md, eighth pass).
 *
 * The two threads claim messages in order from one atomic counter: the
 * decoder from wherever it is, the engine the message it needs when the
 * decoder has not claimed it yet (it then decodes it itself, as without a
 * decoder). So the engine waits only for a message the decoder is decoding
 * at that moment, never for the decoder to be scheduled, and a batch the
 * decoder did not get to is decoded where it always was.
 *
 * What keeps it exact: decoding is a pure function of a message's bytes
 * and the schemas (the same for both codecs, fixed at start), so an event
 * decoded ahead is the event the engine would have decoded; the engine
 * still handles every message in order, with the same checks and the same
 * dead letters. Each message is decoded by whoever claimed it; the decoder
 * publishes an event with a release store of its ready flag, which the
 * engine reads with acquire. The decoder reads e->msgs between submit and
 * finish, and the engine does not destroy or move them meanwhile: the
 * consumer is not polled (the batch is the one taken ahead), the batch
 * finishes the decoder before its messages go (jd_engine_decoder_finish),
 * and shutdown and a revocation do it first (jd_engine_settle_ahead).
 * On a Redis Cluster and in processing.naive mode (no batch is taken ahead)
 * nothing is decoded ahead.
 *
 * One thing is shared: avro-c (1.11, as packaged) keeps the text of its last
 * error in one process-wide buffer, so a decode failing on this thread at
 * the very moment the engine's thread fails an avro-c call could garble the
 * reason of a dead letter or a log line; the decision (the status) is not
 * affected.
 */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "journeyd/log.h"
#include "journeyd/worker.h"

#define MOD "engine"

/* The decoded events' strings: blocks kept from batch to batch. */
#define BLOCK_SIZE (1024 * 1024)

struct block {
    struct block *next;
    size_t used, cap;
    char data[];
};

/* A decoded event, compact (a struct jd_event is ~600 bytes, most of it
 * room for attributes): its strings and attribute pairs are in the arena. */
struct dev {
    const char *event_id, *customer_id, *type, *channel, *currency;
    const char **attrs; /* key, value, key, value... */
    int64_t occurred_at;
    double amount;
    int32_t score;
    uint8_t has_amount, has_score;
    uint8_t st; /* enum jd_decode_status, or NOT_DECODED */
    uint8_t nattrs;
    char *err; /* why it failed (heap), or NULL */
};

struct jd_decoder {
    struct jd_codec *codec; /* its own: the engine's encodes triggers meanwhile */
    struct jd_worker *worker;
    rd_kafka_message_t *const *msgs; /* the engine's, read only between submit and wait */
    size_t n;
    struct dev *devs;       /* devs[i]: msgs[i] decoded; NULL after a trim */
    _Atomic uint8_t *ready; /* ready[i]: devs[i] is published */
    size_t cap;
    atomic_size_t next; /* the next message to claim */
    size_t ndecoded;    /* by the decoder in this job */
    int active;         /* submitted, not finished */
    struct block *head, *cur;
};

#define NOT_DECODED 0xff

static char *arena_alloc(struct jd_decoder *d, size_t n)
{
    while (d->cur && d->cur->used + ((n + 7) & ~(size_t)7) > d->cur->cap)
        d->cur = d->cur->next; /* (a block too small for n stays for later batches) */
    if (!d->cur) {
        size_t cap = n + 8 > BLOCK_SIZE ? n + 8 : BLOCK_SIZE;
        struct block *b = jd_xmalloc(sizeof *b + cap);
        b->used = 0;
        b->cap = cap;
        b->next = d->head; /* (at the front: the blocks before cur are full) */
        d->head = b;
        d->cur = b;
    }
    char *p = d->cur->data + d->cur->used;
    d->cur->used += (n + 7) & ~(size_t)7; /* (attribute arrays hold pointers) */
    return p;
}

static const char *keep(struct jd_decoder *d, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    return memcpy(arena_alloc(d, n), s, n);
}

/* A well-known type or channel as its static copy (jd_state_known: what the
 * engine does to every event; here off its thread, and then not copied) */
static const char *keep_known(struct jd_decoder *d, const char *s)
{
    const char *k = jd_state_known(s);
    return k ? k : keep(d, s);
}

static void decoder_run(void *arg)
{
    struct jd_decoder *d = arg;
    char errstr[512];
    struct jd_event ev;
    _Static_assert(JD_EVENT_MAX_ATTRS <= 255, "nattrs is a byte");
    for (struct block *b = d->head; b; b = b->next)
        b->used = 0;
    d->cur = d->head;
    d->ndecoded = 0;
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&d->next, 1, memory_order_acq_rel);
        if (i >= d->n)
            break;
        const rd_kafka_message_t *m = d->msgs[i];
        struct dev *v = &d->devs[i];
        free(v->err);
        v->err = NULL;
        if (!m->key || m->key_len == 0) {
            v->st = NOT_DECODED; /* (a dead letter without decoding) */
            atomic_store_explicit(&d->ready[i], 1, memory_order_release);
            continue;
        }
        enum jd_decode_status st =
            jd_codec_decode(d->codec, m->payload, m->len, &ev, errstr, sizeof errstr);
        v->st = (uint8_t)st;
        if (st != JD_DECODE_OK) {
            v->err = jd_strdup(errstr);
            atomic_store_explicit(&d->ready[i], 1, memory_order_release);
            continue;
        }
        /* its strings live in the codec until its next decode */
        v->event_id = keep(d, ev.event_id);
        v->customer_id = keep(d, ev.customer_id);
        v->type = keep_known(d, ev.type);
        v->channel = keep_known(d, ev.channel);
        v->currency = keep(d, ev.currency);
        v->occurred_at = ev.occurred_at;
        v->amount = ev.amount;
        v->has_amount = (uint8_t)(ev.has_amount != 0);
        v->score = ev.score;
        v->has_score = (uint8_t)(ev.has_score != 0);
        v->nattrs = (uint8_t)ev.nattrs;
        v->attrs = NULL;
        if (ev.nattrs) {
            v->attrs = (const char **)(void *)arena_alloc(d, 2 * ev.nattrs * sizeof *v->attrs);
            for (size_t k = 0; k < ev.nattrs; k++) {
                v->attrs[2 * k] = keep(d, ev.attr_keys[k]);
                v->attrs[2 * k + 1] = keep(d, ev.attr_vals[k]);
            }
        }
        d->ndecoded++;
        atomic_store_explicit(&d->ready[i], 1, memory_order_release);
    }
}

int jd_engine_decoder_start(struct jd_engine *e, char *errstr, size_t errsize)
{
    if (!e->loader)
        return 0; /* no batch is taken ahead */
    struct jd_decoder *d = jd_xcalloc(1, sizeof *d);
    if (!(d->codec = jd_codec_new(e->cfg, errstr, errsize))) {
        free(d);
        return -1;
    }
    if (!(d->worker = jd_worker_start("jd-decoder", decoder_run, d))) {
        snprintf(errstr, errsize, "cannot start the decoder thread");
        jd_codec_destroy(d->codec);
        free(d);
        return -1;
    }
    e->decoder = d;
    return 0;
}

static void free_buffers(struct jd_decoder *d)
{
    for (size_t i = 0; i < d->cap; i++)
        free(d->devs[i].err);
    free(d->devs);
    free((void *)d->ready);
    d->devs = NULL;
    d->ready = NULL;
    d->cap = 0;
    while (d->head) {
        struct block *b = d->head;
        d->head = b->next;
        free(b);
    }
    d->cur = NULL;
}

/* Gives the events and the arena back (idle: engine_mem.c); the next
 * batch decoded ahead takes them again. */
void jd_engine_decoder_trim(struct jd_engine *e)
{
    struct jd_decoder *d = e->decoder;
    if (d && !jd_worker_busy(d->worker))
        free_buffers(d);
}

void jd_engine_decoder_destroy(struct jd_engine *e)
{
    struct jd_decoder *d = e->decoder;
    if (!d)
        return;
    jd_worker_stop(d->worker); /* after the decode on its way */
    free_buffers(d);
    jd_codec_destroy(d->codec);
    free(d);
    e->decoder = NULL;
}

void jd_engine_decoder_submit(struct jd_engine *e)
{
    struct jd_decoder *d = e->decoder;
    if (!d || e->nmsgs == 0)
        return;
    if (d->cap < e->nmsgs) {
        free_buffers(d); /* (not busy: the last decode was finished) */
        d->devs = jd_xcalloc(e->maxmsgs, sizeof *d->devs);
        d->ready = jd_xcalloc(e->maxmsgs, sizeof *d->ready);
        d->cap = e->maxmsgs;
    }
    for (size_t i = 0; i < e->nmsgs; i++)
        atomic_store_explicit(&d->ready[i], 0, memory_order_relaxed);
    atomic_store_explicit(&d->next, 0, memory_order_relaxed);
    d->msgs = e->msgs;
    d->n = e->nmsgs;
    d->active = 1;
    jd_worker_submit(d->worker); /* (its mutex publishes the above) */
}

int jd_engine_decoder_covers(const struct jd_engine *e)
{
    const struct jd_decoder *d = e->decoder;
    return d && d->active && d->msgs == e->msgs && d->n == e->nmsgs;
}

void jd_engine_decoder_finish(struct jd_engine *e)
{
    struct jd_decoder *d = e->decoder;
    if (!d || !d->active)
        return;
    /* what the decoder has not claimed yet it never will */
    atomic_store_explicit(&d->next, d->n, memory_order_release);
    jd_worker_wait(d->worker);
    d->active = 0;
    if (e->metrics && d->ndecoded)
        jd_metrics_add(e->metrics, JD_C_DECODED_AHEAD, d->ndecoded);
}

static void from_dev(const struct dev *v, struct jd_event *ev)
{
    ev->event_id = v->event_id;
    ev->customer_id = v->customer_id;
    ev->type = v->type;
    ev->channel = v->channel;
    ev->currency = v->currency;
    ev->occurred_at = v->occurred_at;
    ev->has_amount = v->has_amount;
    ev->amount = v->amount;
    ev->has_score = v->has_score;
    ev->score = v->score;
    ev->nattrs = v->nattrs;
    for (size_t k = 0; k < v->nattrs; k++) {
        ev->attr_keys[k] = v->attrs[2 * k];
        ev->attr_vals[k] = v->attrs[2 * k + 1];
    }
}

enum jd_decode_status jd_engine_decode_at(struct jd_engine *e, size_t i, struct jd_event *ev,
                                          char *errstr, size_t errsize)
{
    struct jd_decoder *d = e->decoder;
    const rd_kafka_message_t *m = e->msgs[i];
    if (!d->active) /* (finished: what it did not publish it never will) */
        return jd_codec_decode(e->codec, m->payload, m->len, ev, errstr, errsize);
    if (!atomic_load_explicit(&d->ready[i], memory_order_acquire)) {
        /* not claimed yet: ours (the ones skipped before it were not
         * wanted: the engine takes messages in order) */
        size_t cur = atomic_load_explicit(&d->next, memory_order_acquire);
        while (cur <= i)
            if (atomic_compare_exchange_weak_explicit(&d->next, &cur, i + 1, memory_order_acq_rel,
                                                      memory_order_acquire))
                return jd_codec_decode(e->codec, m->payload, m->len, ev, errstr, errsize);
        /* the decoder is on it */
        for (unsigned spin = 0; !atomic_load_explicit(&d->ready[i], memory_order_acquire); spin++)
            if (spin >= 64)
                sched_yield();
    }
    const struct dev *v = &d->devs[i];
    if (v->st == NOT_DECODED) /* (never asked for: a message without a key) */
        return jd_codec_decode(e->codec, m->payload, m->len, ev, errstr, errsize);
    if (v->st != JD_DECODE_OK) {
        snprintf(errstr, errsize, "%s", v->err ? v->err : "?");
        return (enum jd_decode_status)v->st;
    }
    from_dev(v, ev);
    return JD_DECODE_OK;
}
