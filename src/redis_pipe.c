/*
 * redis_pipe — pipelines over a struct jd_redis (see redis_conn.h).
 *
 * Commands are kept as RESP bytes in one reused buffer, so the caller's
 * argument buffers can be reused at once and a command can be re-sent after
 * a redirect. An exec runs in rounds: every pending command (or group) is
 * appended to the connection of the node that serves its slot, every
 * connection's output is written, then every connection's replies are read
 * (so all masters work at once: one round trip for the batch). A command
 * that came back with MOVED, ASK, TRYAGAIN, CLUSTERDOWN or LOADING, or whose
 * connection failed, stays pending for the next round; rounds stop when
 * nothing is pending, or after a bounded number of rounds and a bounded time
 * of backoff (the caller then retries the whole batch later).
 *
 * Why the error classes are treated so:
 * - MOVED: the slot has a new owner for good; the slot entry is corrected at
 *   once and the whole map re-read before the next exec.
 * - ASK: the slot is migrating and this key is already on the target; only
 *   this command goes there, after ASKING (ASKING before MULTI covers the
 *   whole transaction: the flag lasts until EXEC).
 * - a redirected command inside MULTI makes EXEC answer EXECABORT: nothing
 *   of the transaction ran, so the whole group is sent again.
 * - TRYAGAIN (a multi-key transaction on a slot half migrated), CLUSTERDOWN
 *   (failover in progress), LOADING (a node starting up): wait and retry.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "redis_int.h"

#define MAX_ROUNDS 32
#define BACKOFF_FIRST_MS 10
#define BACKOFF_MAX_MS 250
#define MAP_EVERY_NS (10 * 1000000000LL)

/* -------- building -------- */

static void put_len(struct jd_buf *b, char type, size_t n)
{
    char tmp[24];
    size_t i = sizeof tmp;
    tmp[--i] = '\n';
    tmp[--i] = '\r';
    do {
        tmp[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    tmp[--i] = type;
    jd_buf_append(b, tmp + i, sizeof tmp - i);
}

static struct rentry *new_entry(struct jd_redis *r)
{
    if (r->nentries == r->capentries) {
        r->capentries = r->capentries ? r->capentries * 2 : 64;
        r->entries = jd_xrealloc(r->entries, r->capentries * sizeof *r->entries);
    }
    struct rentry *e = &r->entries[r->nentries++];
    memset(e, 0, sizeof *e);
    e->first = r->ncmds;
    e->slot = -1;
    e->ask = -1;
    e->node = -1;
    return e;
}

size_t jd_redis_append(struct jd_redis *r, int key_arg, int argc, const char *const *argv,
                       const size_t *argvlen)
{
    if (r->executed)
        jd_redis_clear(r);
    if (r->ncmds == r->capcmds) {
        r->capcmds = r->capcmds ? r->capcmds * 2 : 256;
        r->cmds = jd_xrealloc(r->cmds, r->capcmds * sizeof *r->cmds);
        r->replies = jd_xrealloc(r->replies, r->capcmds * sizeof *r->replies);
    }
    struct rentry *e = r->in_group && r->nentries ? &r->entries[r->nentries - 1] : new_entry(r);
    if (e->n == 0 && argc > 0 && argvlen[0] == 5 && strncasecmp(argv[0], "MULTI", 5) == 0)
        e->multi = 1;
    if (key_arg > 0 && key_arg < argc) {
#ifdef NDEBUG
        if (r->cluster && e->slot < 0)
            e->slot = (int)jd_redis_key_slot(argv[key_arg], argvlen[key_arg]);
#else
        /* on a cluster no unit spans two slots (two customers); a single
         * node takes any MULTI */
        int slot = (int)jd_redis_key_slot(argv[key_arg], argvlen[key_arg]);
        assert(!r->cluster || e->slot < 0 || e->slot == slot);
        if (e->slot < 0)
            e->slot = slot;
#endif
    }
    struct rcmd *c = &r->cmds[r->ncmds];
    c->off = r->wire.len;
    c->entry = (size_t)(e - r->entries);
    put_len(&r->wire, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        put_len(&r->wire, '$', argvlen[i]);
        jd_buf_append(&r->wire, argv[i], argvlen[i]);
        jd_buf_append(&r->wire, "\r\n", 2);
    }
    c->len = r->wire.len - c->off;
    r->replies[r->ncmds] = NULL;
    e->n++;
    return r->ncmds++;
}

void jd_redis_group_begin(struct jd_redis *r)
{
    if (r->executed)
        jd_redis_clear(r);
    assert(!r->in_group);
    (void)new_entry(r);
    r->in_group = 1;
}

void jd_redis_group_end(struct jd_redis *r)
{
    assert(r->in_group);
    r->in_group = 0;
    /* an empty group sends nothing */
    if (r->nentries && r->entries[r->nentries - 1].n == 0)
        r->nentries--;
}

size_t jd_redis_pending(const struct jd_redis *r)
{
    return r->executed ? 0 : r->ncmds;
}

const redisReply *jd_redis_reply(const struct jd_redis *r, size_t i)
{
    return i < r->ncmds ? r->replies[i] : NULL;
}

const char *jd_redis_reply_node(const struct jd_redis *r, size_t i)
{
    if (i >= r->ncmds)
        return "?";
    const struct rentry *e = &r->entries[r->cmds[i].entry];
    if (e->node >= 0)
        return r->nodes[e->node].addr;
    return r->desc;
}

void jd_redis_clear(struct jd_redis *r)
{
    for (size_t i = 0; i < r->ncmds; i++) {
        if (r->replies[i])
            freeReplyObject(r->replies[i]);
        r->replies[i] = NULL;
    }
    r->ncmds = 0;
    r->nentries = 0;
    r->in_group = 0;
    r->executed = 0;
    jd_buf_reset(&r->wire);
}

void jd_redis_trim(struct jd_redis *r)
{
    jd_redis_clear(r);
    jd_buf_free(&r->wire); /* (leaves it empty, ready for use) */
    free(r->cmds);
    free(r->replies);
    free(r->entries);
    r->cmds = NULL;
    r->replies = NULL;
    r->entries = NULL;
    r->capcmds = r->capentries = 0;
    for (size_t i = 0; i < r->nnodes; i++) {
        free(r->nodes[i].iov);
        free(r->nodes[i].sent);
        r->nodes[i].iov = NULL;
        r->nodes[i].sent = NULL;
        r->nodes[i].capiov = r->nodes[i].capsent = 0;
    }
}

/* -------- one round -------- */

static void free_entry_replies(struct jd_redis *r, struct rentry *e)
{
    for (size_t k = 0; k < e->n; k++) {
        if (r->replies[e->first + k])
            freeReplyObject(r->replies[e->first + k]);
        r->replies[e->first + k] = NULL;
    }
}

static int starts(const redisReply *rep, const char *word)
{
    size_t n = strlen(word);
    return rep && rep->type == REDIS_REPLY_ERROR && rep->len >= n &&
           strncmp(rep->str, word, n) == 0 && (rep->len == n || rep->str[n] == ' ');
}

/* "MOVED 3999 127.0.0.1:6381" -> the node at that address. */
static int redirect_target(struct jd_redis *r, const redisReply *rep, int *slot)
{
    char host[256];
    int port;
    const char *sp = strchr(rep->str, ' ');
    if (!sp)
        return -1;
    char *end;
    long s = strtol(sp + 1, &end, 10);
    if (*end != ' ' || s < 0 || s >= JD_REDIS_SLOTS)
        return -1;
    if (jd_parse_hostport(end + 1, host, sizeof host, &port) != 0)
        return -1;
    *slot = (int)s;
    return jd_redis_node_add(r, host, port);
}

struct round {
    int backoff;   /* wait before the next round */
    int conn_lost; /* some node could not be reached */
    char why[300]; /* the last reason something stays pending */
};

static void why(struct round *rd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void why(struct round *rd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rd->why, sizeof rd->why, fmt, ap);
    va_end(ap);
}

/* Decides what becomes of an entry whose replies are all in. */
static void classify(struct jd_redis *r, struct rentry *e, int node, struct round *rd)
{
    redisReply **rep = r->replies + e->first;
    const redisReply *last = rep[e->n - 1];
    if (e->multi && last->type == REDIS_REPLY_ARRAY) {
        e->state = E_DONE; /* the transaction ran */
        e->node = node;
        return;
    }
    const redisReply *bad = NULL;
    for (size_t k = 0; k < e->n && !bad; k++) {
        if (starts(rep[k], "MOVED") || starts(rep[k], "ASK") || starts(rep[k], "TRYAGAIN") ||
            starts(rep[k], "CLUSTERDOWN") || starts(rep[k], "LOADING") ||
            starts(rep[k], "MASTERDOWN"))
            bad = rep[k];
    }
    if (!bad) {
        e->state = E_DONE;
        e->node = node;
        return;
    }
    int slot, target;
    if (starts(bad, "MOVED") && r->cluster && (target = redirect_target(r, bad, &slot)) >= 0) {
        r->moved++;
        r->slot_node[slot] = (uint16_t)target;
        r->refresh_soon = 1;
    } else if (starts(bad, "ASK") && r->cluster && (target = redirect_target(r, bad, &slot)) >= 0) {
        r->asks++;
        e->ask = target;
    } else {
        rd->backoff = 1;
        if (starts(bad, "CLUSTERDOWN") || starts(bad, "MOVED") || starts(bad, "ASK"))
            r->refresh_now = 1;
    }
    /* after redirect_target: r->nodes may have moved */
    why(rd, "Redis %s: %s", r->nodes[node].addr, bad->str);
    free_entry_replies(r, e);
}

static void node_push(struct rnode *n, size_t ei)
{
    if (n->nsent == n->capsent) {
        n->capsent = n->capsent ? n->capsent * 2 : 64;
        n->sent = jd_xrealloc(n->sent, n->capsent * sizeof *n->sent);
    }
    n->sent[n->nsent++] = ei;
}

/* The connection of node ni failed: its entries not yet done stay pending,
 * and so do those done this round if their replication was still to be
 * confirmed. */
static void node_failed(struct jd_redis *r, size_t ni, struct round *rd, const char *what)
{
    struct rnode *n = &r->nodes[ni];
    why(rd, "Redis %s: %s: %s", n->addr, what,
        n->ctx && n->ctx->errstr[0] ? n->ctx->errstr : "I/O error");
    for (size_t k = 0; k < n->nsent; k++) {
        struct rentry *e = &r->entries[n->sent[k]];
        if (e->state == E_DONE && !n->waited)
            continue;
        free_entry_replies(r, e);
        e->state = E_PENDING;
        e->node = -1;
    }
    n->nsent = 0;
    jd_redis_node_drop(n);
    rd->conn_lost = 1;
    rd->backoff = 1;
    r->refresh_now = 1;
}

static int read_one(struct rnode *n, redisReply **out)
{
    void *p = NULL;
    if (redisGetReply(n->ctx, &p) != REDIS_OK || !p)
        return -1;
    *out = p;
    return 0;
}

/* Reads node ni's replies. classify may add nodes (a redirect to a node not
 * seen yet), which moves r->nodes: the node is looked up by index. */
static void read_node(struct jd_redis *r, size_t ni, struct round *rd)
{
#define N (&r->nodes[ni])
    for (size_t k = 0; k < N->nsent; k++) {
        struct rentry *e = &r->entries[N->sent[k]];
        redisReply *tmp;
        if (e->asking) {
            if (read_one(N, &tmp) != 0)
                goto io;
            freeReplyObject(tmp);
        }
        for (size_t c = 0; c < e->n; c++)
            if (read_one(N, &r->replies[e->first + c]) != 0)
                goto io;
        classify(r, e, (int)ni, rd);
    }
    if (N->waited) {
        redisReply *w;
        if (read_one(N, &w) != 0)
            goto io;
        if (w->type != REDIS_REPLY_INTEGER || w->integer < 1) {
            why(rd, "Redis %s: writes not acknowledged by a replica (%s)", N->addr,
                w->type == REDIS_REPLY_ERROR ? w->str : "WAIT timed out");
            /* they ran but a failover could lose them: not done */
            for (size_t k = 0; k < N->nsent; k++) {
                struct rentry *e = &r->entries[N->sent[k]];
                if (e->state == E_DONE) {
                    free_entry_replies(r, e);
                    e->state = E_FAILED;
                    e->node = -1;
                }
            }
            r->refresh_soon = 1; /* the replica may be gone from the map */
        }
        freeReplyObject(w);
    }
#undef N
    return;
io:
    node_failed(r, ni, rd, "reading replies");
}

/* A node's requests go out as pieces of r->wire, written with sendmsg
 * straight to the socket: contiguous commands are one piece. Copying them
 * into hiredis's output buffer first cost a tenth of the engine's time on a
 * write-back (a fresh multi-megabyte buffer per round trip, page faults
 * included). hiredis still reads and parses the replies: its own output
 * buffer stays empty, so reading never writes. */
static const char ASKING_CMD[] = "*1\r\n$6\r\nASKING\r\n";

static void node_piece(struct rnode *n, const void *p, size_t len)
{
    if (n->niov && (const char *)n->iov[n->niov - 1].iov_base + n->iov[n->niov - 1].iov_len == p) {
        n->iov[n->niov - 1].iov_len += len;
        return;
    }
    if (n->niov == n->capiov) {
        n->capiov = n->capiov ? n->capiov * 2 : 16;
        n->iov = jd_xrealloc(n->iov, n->capiov * sizeof *n->iov);
    }
    n->iov[n->niov].iov_base = (void *)(uintptr_t)p;
    n->iov[n->niov].iov_len = len;
    n->niov++;
}

/* Writes the node's pieces (blocking, within the connection's timeout;
 * MSG_NOSIGNAL: a peer gone is an error here, not a SIGPIPE for the
 * program). 0, or -1 with the connection's error set. */
static int node_send(struct rnode *n)
{
    struct iovec *v = n->iov;
    size_t left = n->niov;
    while (left > 0) {
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = v;
        msg.msg_iovlen = left > IOV_MAX ? IOV_MAX : left;
        ssize_t w = sendmsg(n->ctx->fd, &msg, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            snprintf(n->ctx->errstr, sizeof n->ctx->errstr, "%s",
                     errno == EAGAIN ? "timed out sending" : strerror(errno));
            n->ctx->err = REDIS_ERR_IO;
            return -1;
        }
        size_t done = (size_t)w;
        while (left > 0 && done >= v->iov_len) {
            done -= v->iov_len;
            v++;
            left--;
        }
        if (left > 0) {
            v->iov_base = (char *)v->iov_base + done;
            v->iov_len -= done;
        }
    }
    n->niov = 0;
    return 0;
}

static void run_round(struct jd_redis *r, int flags, struct round *rd)
{
    for (size_t i = 0; i < r->nnodes; i++) {
        r->nodes[i].nsent = 0;
        r->nodes[i].waited = 0;
        r->nodes[i].niov = 0;
    }
    for (size_t ei = 0; ei < r->nentries; ei++) {
        struct rentry *e = &r->entries[ei];
        if (e->state != E_PENDING)
            continue;
        e->asking = 0;
        unsigned ni = e->ask >= 0 ? (unsigned)e->ask : jd_redis_route(r, e->slot);
        if (ni == NO_NODE) {
            why(rd, "slot %d is served by no master", e->slot);
            rd->backoff = 1;
            r->refresh_now = 1;
            continue;
        }
        struct rnode *n = &r->nodes[ni];
        if (!n->ctx) {
            if (!r->cluster) {
                why(rd, "Redis %s: not connected", n->addr);
                rd->conn_lost = 1;
                continue;
            }
            if (jd_redis_node_connect(r, n, rd->why, sizeof rd->why) != 0) {
                rd->conn_lost = 1;
                rd->backoff = 1;
                r->refresh_now = 1;
                continue;
            }
        }
        if (e->ask >= 0) {
            node_piece(n, ASKING_CMD, sizeof ASKING_CMD - 1);
            e->asking = 1;
            e->ask = -1;
        }
        for (size_t k = 0; k < e->n; k++) {
            const struct rcmd *c = &r->cmds[e->first + k];
            node_piece(n, r->wire.data + c->off, c->len);
        }
        node_push(n, ei);
    }
    if ((flags & JD_REDIS_REPLICATED) && r->cluster) {
        char ms[24];
        snprintf(ms, sizeof ms, "%d", r->timeout_ms / 4 > 10 ? r->timeout_ms / 4 : 10);
        for (size_t i = 0; i < r->nnodes; i++) {
            struct rnode *n = &r->nodes[i];
            if (n->nsent && n->replicas > 0) {
                int len = snprintf(n->wait, sizeof n->wait,
                                   "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$%zu\r\n%s\r\n", strlen(ms), ms);
                node_piece(n, n->wait, (size_t)len);
                n->waited = 1;
            }
        }
    }
    r->roundtrips++;
    /* all requests out first, so that every master works at once */
    for (size_t i = 0; i < r->nnodes; i++) {
        struct rnode *n = &r->nodes[i];
        if (n->nsent && node_send(n) != 0)
            node_failed(r, i, rd, "sending");
    }
    for (size_t i = 0; i < r->nnodes; i++)
        if (r->nodes[i].nsent)
            read_node(r, i, rd);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int jd_redis_exec(struct jd_redis *r, int flags, char *errstr, size_t errsize)
{
    assert(!r->in_group);
    r->in_group = 0;
    r->executed = 1;
    if (r->nentries == 0)
        return 0;
    struct round rd;
    memset(&rd, 0, sizeof rd);
    if (r->broken) {
        why(&rd, "Redis %s: not connected", r->desc);
        goto fail;
    }
    /* also every MAP_EVERY_NS: a replica added (or a node moved) without
     * any redirect is seen, so that WAIT covers every master with replicas */
    if (r->cluster &&
        (r->refresh_soon || r->refresh_now || jd_monotonic_ns() - r->map_ns > MAP_EVERY_NS))
        (void)jd_redis_refresh_map(r, rd.why, sizeof rd.why);

    /* retries stay within about one command timeout; beyond that the
     * caller backs off and retries the batch */
    int64_t deadline = jd_monotonic_ns() + (int64_t)r->timeout_ms * 1000000;
    int backoff_ms = 0;
    for (int round = 0; round < MAX_ROUNDS; round++) {
        rd.backoff = 0;
        rd.conn_lost = 0;
        run_round(r, flags, &rd);
        size_t pending = 0;
        for (size_t i = 0; i < r->nentries; i++)
            pending += r->entries[i].state == E_PENDING;
        if (!pending)
            break;
        if (rd.conn_lost && !r->cluster)
            break; /* a single node: the caller reconnects */
        if (rd.backoff) {
            backoff_ms = backoff_ms ? backoff_ms * 2 : BACKOFF_FIRST_MS;
            if (backoff_ms > BACKOFF_MAX_MS)
                backoff_ms = BACKOFF_MAX_MS;
            if (jd_monotonic_ns() + (int64_t)backoff_ms * 1000000 > deadline)
                break;
            sleep_ms(backoff_ms);
            r->retries++;
        }
        if (r->cluster && r->refresh_now)
            (void)jd_redis_refresh_map(r, rd.why, sizeof rd.why);
    }

fail:;
    size_t failed = 0;
    for (size_t i = 0; i < r->nentries; i++) {
        struct rentry *e = &r->entries[i];
        if (e->state == E_DONE)
            continue;
        free_entry_replies(r, e);
        e->state = E_FAILED;
        failed += e->n;
    }
    if (!failed)
        return 0;
    if (rd.conn_lost)
        r->broken = 1;
    snprintf(errstr, errsize, "%s (%zu of %zu commands not executed)", rd.why, failed, r->ncmds);
    return -1;
}
