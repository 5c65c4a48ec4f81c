/*
 * redis_conn — the nodes behind a struct jd_redis: connecting to the seeds,
 * telling a single Redis from a cluster (INFO cluster), the slot map
 * (CLUSTER SLOTS) and the connection to each master. Pipelines and
 * redirects are in redis_pipe.c.
 *
 * Owns one synchronous hiredis context per node it talks to. Nodes are only
 * ever added (a cluster is a handful of them); a node that no longer serves
 * slots keeps its entry and loses its connection when it fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "redis_int.h"

int jd_redis_node_add(struct jd_redis *r, const char *host, int port)
{
    for (size_t i = 0; i < r->nnodes; i++)
        if (r->nodes[i].port == port && strcmp(r->nodes[i].host, host) == 0)
            return (int)i;
    if (r->nnodes >= NO_NODE)
        return -1;
    if (r->nnodes == r->capnodes) {
        r->capnodes = r->capnodes ? r->capnodes * 2 : 8;
        r->nodes = jd_xrealloc(r->nodes, r->capnodes * sizeof *r->nodes);
    }
    struct rnode *n = &r->nodes[r->nnodes];
    memset(n, 0, sizeof *n);
    snprintf(n->host, sizeof n->host, "%s", host);
    n->port = port;
    snprintf(n->addr, sizeof n->addr, "%s:%d", host, port);
    return (int)r->nnodes++;
}

int jd_redis_node_connect(struct jd_redis *r, struct rnode *n, char *errstr, size_t errsize)
{
    if (n->ctx)
        return 0;
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    redisContext *ctx = redisConnectWithTimeout(n->host, n->port, tv);
    if (!ctx) {
        snprintf(errstr, errsize, "Redis %s: cannot allocate a connection", n->addr);
        return -1;
    }
    if (ctx->err) {
        snprintf(errstr, errsize, "Redis %s: %s", n->addr, ctx->errstr);
        redisFree(ctx);
        return -1;
    }
    if (redisSetTimeout(ctx, tv) != REDIS_OK) {
        snprintf(errstr, errsize, "Redis %s: cannot set the timeout", n->addr);
        redisFree(ctx);
        return -1;
    }
    /* keep the reply buffer between round trips (hiredis frees one above
     * 16 KiB whenever it is emptied, and a write-back's replies come back
     * in hundreds of KiB) */
    ctx->reader->maxbuf = 0;
    n->ctx = ctx;
    return 0;
}

void jd_redis_node_drop(struct rnode *n)
{
    if (n->ctx) {
        redisFree(n->ctx);
        n->ctx = NULL;
    }
}

/* A command on a node outside any pipeline. NULL after an I/O error (the
 * connection is then dropped). */
static redisReply *node_command(struct rnode *n, const char *cmd, char *errstr, size_t errsize)
{
    redisReply *rep = redisCommand(n->ctx, cmd);
    if (!rep) {
        snprintf(errstr, errsize, "Redis %s: %s: %s", n->addr, cmd,
                 n->ctx->errstr[0] ? n->ctx->errstr : "I/O error");
        jd_redis_node_drop(n);
    }
    return rep;
}

/* 1 cluster, 0 single node, -1 error. */
static int node_is_cluster(struct rnode *n, char *errstr, size_t errsize)
{
    redisReply *rep = node_command(n, "INFO cluster", errstr, errsize);
    if (!rep)
        return -1;
    int rc = -1;
    if (rep->type == REDIS_REPLY_STRING)
        rc = strstr(rep->str, "cluster_enabled:1") != NULL;
    else
        snprintf(errstr, errsize, "Redis %s: INFO cluster: %s", n->addr,
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    return rc;
}

/* The address of one node of a CLUSTER SLOTS range: [host, port, id, ...]. A
 * node that does not know its own address says "" (or "?"): it is then the
 * one we asked. */
static int slots_node(struct jd_redis *r, const redisReply *e, const struct rnode *asked)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_INTEGER)
        return -1;
    const char *host = e->element[0]->str;
    if (!host[0] || strcmp(host, "?") == 0)
        host = asked->host;
    return jd_redis_node_add(r, host, (int)e->element[1]->integer);
}

/* Replaces the slot map with what node n says. */
static int load_map(struct jd_redis *r, size_t ni, char *errstr, size_t errsize)
{
    redisReply *rep = node_command(&r->nodes[ni], "CLUSTER SLOTS", errstr, errsize);
    if (!rep)
        return -1;
    int rc = -1;
    uint16_t *map = jd_xmalloc(JD_REDIS_SLOTS * sizeof *map);
    for (size_t s = 0; s < JD_REDIS_SLOTS; s++)
        map[s] = NO_NODE;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements == 0) {
        snprintf(errstr, errsize, "Redis %s: CLUSTER SLOTS: %s", r->nodes[ni].addr,
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "no slots assigned");
        goto out;
    }
    /* the node at ni may move when nodes are added: copy what we need */
    struct rnode asked = r->nodes[ni];
    int *replicas = jd_xcalloc(rep->elements, sizeof *replicas);
    int *masters = jd_xcalloc(rep->elements, sizeof *masters);
    for (size_t k = 0; k < rep->elements; k++) {
        const redisReply *range = rep->element[k];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
            range->element[0]->type != REDIS_REPLY_INTEGER ||
            range->element[1]->type != REDIS_REPLY_INTEGER) {
            snprintf(errstr, errsize, "Redis %s: CLUSTER SLOTS: malformed reply", asked.addr);
            free(replicas);
            free(masters);
            goto out;
        }
        long long lo = range->element[0]->integer, hi = range->element[1]->integer;
        int m = slots_node(r, range->element[2], &asked);
        if (m < 0 || lo < 0 || hi >= JD_REDIS_SLOTS || lo > hi) {
            snprintf(errstr, errsize, "Redis %s: CLUSTER SLOTS: malformed range", asked.addr);
            free(replicas);
            free(masters);
            goto out;
        }
        for (long long s = lo; s <= hi; s++)
            map[s] = (uint16_t)m;
        masters[k] = m;
        replicas[k] = (int)range->elements - 3;
    }
    for (size_t i = 0; i < r->nnodes; i++)
        r->nodes[i].replicas = 0;
    for (size_t k = 0; k < rep->elements; k++)
        if (r->nodes[masters[k]].replicas < replicas[k])
            r->nodes[masters[k]].replicas = replicas[k];
    free(replicas);
    free(masters);
    memcpy(r->slot_node, map, JD_REDIS_SLOTS * sizeof *map);
    r->nmasters = 0;
    for (size_t i = 0; i < r->nnodes; i++) {
        for (size_t s = 0; s < JD_REDIS_SLOTS; s++) {
            if (map[s] == i) {
                r->nmasters++;
                break;
            }
        }
    }
    rc = 0;
out:
    free(map);
    freeReplyObject(rep);
    return rc;
}

static int is_master(const struct jd_redis *r, size_t ni)
{
    for (size_t s = 0; s < JD_REDIS_SLOTS; s++)
        if (r->slot_node[s] == ni)
            return 1;
    return 0;
}

/* Asks the masters of the current map first (their view is the freshest),
 * then every other node known, then the seeds. */
int jd_redis_refresh_map(struct jd_redis *r, char *errstr, size_t errsize)
{
    char err[256] = "no cluster node known";
    for (size_t i = 0; i < r->nseeds; i++) {
        char host[256];
        int port;
        if (jd_parse_hostport(r->seeds[i], host, sizeof host, &port) == 0)
            (void)jd_redis_node_add(r, host, port);
    }
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < r->nnodes; i++) {
            if (is_master(r, i) != (pass == 0))
                continue;
            if (jd_redis_node_connect(r, &r->nodes[i], err, sizeof err) != 0)
                continue;
            if (load_map(r, i, err, sizeof err) == 0) {
                r->refresh_now = r->refresh_soon = 0;
                r->map_ns = jd_monotonic_ns();
                snprintf(r->desc, sizeof r->desc, "cluster of %zu masters via %s", r->nmasters,
                         r->nodes[i].addr);
                return 0;
            }
        }
    }
    snprintf(errstr, errsize, "cannot read the cluster slot map: %s", err);
    return -1;
}

unsigned jd_redis_route(const struct jd_redis *r, int slot)
{
    if (!r->cluster)
        return 0;
    if (slot >= 0)
        return r->slot_node[slot];
    for (size_t s = 0; s < JD_REDIS_SLOTS; s++)
        if (r->slot_node[s] != NO_NODE)
            return r->slot_node[s];
    return NO_NODE;
}

/* Finds the first seed that answers and what it is part of. */
static int discover(struct jd_redis *r, char *errstr, size_t errsize)
{
    char err[256] = "no Redis address given";
    for (size_t i = 0; i < r->nseeds; i++) {
        char host[256];
        int port;
        if (jd_parse_hostport(r->seeds[i], host, sizeof host, &port) != 0) {
            snprintf(errstr, errsize, "bad Redis address \"%s\" (want HOST:PORT)", r->seeds[i]);
            return -1;
        }
        int ni = jd_redis_node_add(r, host, port);
        if (ni < 0 || jd_redis_node_connect(r, &r->nodes[ni], err, sizeof err) != 0)
            continue;
        int c = node_is_cluster(&r->nodes[ni], err, sizeof err);
        if (c < 0)
            continue;
        if (!c) {
            /* a single node: it is node 0, the only one */
            if (ni != 0) {
                struct rnode tmp = r->nodes[0];
                r->nodes[0] = r->nodes[ni];
                r->nodes[ni] = tmp;
            }
            for (size_t k = 1; k < r->nnodes; k++)
                jd_redis_node_drop(&r->nodes[k]);
            r->nnodes = 1;
            r->nmasters = 1;
            snprintf(r->desc, sizeof r->desc, "%s", r->nodes[0].addr);
            return 0;
        }
        r->cluster = 1;
        return jd_redis_refresh_map(r, errstr, errsize);
    }
    snprintf(errstr, errsize, "%s", err);
    return -1;
}

struct jd_redis *jd_redis_new(const char *const *seeds, size_t nseeds, int timeout_ms, char *errstr,
                              size_t errsize)
{
    struct jd_redis *r = jd_xcalloc(1, sizeof *r);
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    r->seeds = jd_xcalloc(nseeds ? nseeds : 1, sizeof *r->seeds);
    for (size_t i = 0; i < nseeds; i++)
        r->seeds[i] = jd_strdup(seeds[i]);
    r->nseeds = nseeds;
    r->slot_node = jd_xmalloc(JD_REDIS_SLOTS * sizeof *r->slot_node);
    for (size_t s = 0; s < JD_REDIS_SLOTS; s++)
        r->slot_node[s] = NO_NODE;
    jd_buf_init(&r->wire);
    if (discover(r, errstr, errsize) != 0)
        goto err;
    return r;
err:
    jd_redis_destroy(r);
    return NULL;
}

void jd_redis_destroy(struct jd_redis *r)
{
    if (!r)
        return;
    jd_redis_clear(r);
    for (size_t i = 0; i < r->nnodes; i++) {
        jd_redis_node_drop(&r->nodes[i]);
        free(r->nodes[i].sent);
        free(r->nodes[i].iov);
    }
    free(r->nodes);
    for (size_t i = 0; i < r->nseeds; i++)
        free(r->seeds[i]);
    free(r->seeds);
    free(r->slot_node);
    jd_buf_free(&r->wire);
    free(r->cmds);
    free(r->replies);
    free(r->entries);
    free(r);
}

int jd_redis_reconnect(struct jd_redis *r, char *errstr, size_t errsize)
{
    for (size_t i = 0; i < r->nnodes; i++)
        jd_redis_node_drop(&r->nodes[i]);
    int rc = r->cluster ? jd_redis_refresh_map(r, errstr, errsize)
                        : jd_redis_node_connect(r, &r->nodes[0], errstr, errsize);
    if (rc == 0)
        r->broken = 0;
    return rc;
}

int jd_redis_connected(const struct jd_redis *r)
{
    return !r->broken;
}

int jd_redis_is_cluster(const struct jd_redis *r)
{
    return r->cluster;
}

size_t jd_redis_masters(const struct jd_redis *r)
{
    return r->nmasters;
}

const char *jd_redis_describe(const struct jd_redis *r)
{
    return r->desc;
}

uint64_t jd_redis_roundtrips(const struct jd_redis *r)
{
    return r->roundtrips;
}

uint64_t jd_redis_moved(const struct jd_redis *r)
{
    return r->moved;
}

uint64_t jd_redis_asks(const struct jd_redis *r)
{
    return r->asks;
}

uint64_t jd_redis_redirects(const struct jd_redis *r)
{
    return r->moved + r->asks;
}

uint64_t jd_redis_retries(const struct jd_redis *r)
{
    return r->retries;
}

int jd_redis_ping(struct jd_redis *r)
{
    char err[256];
    if (r->broken)
        return -1;
    for (size_t i = 0; i < r->nnodes; i++) {
        if (r->cluster ? !is_master(r, i) : i > 0)
            continue;
        struct rnode *n = &r->nodes[i];
        if (!n->ctx && (!r->cluster || jd_redis_node_connect(r, n, err, sizeof err) != 0))
            return -1;
        redisReply *rep = node_command(n, "PING", err, sizeof err);
        if (!rep) {
            if (!r->cluster)
                r->broken = 1;
            return -1;
        }
        int ok = rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
        freeReplyObject(rep);
        if (!ok)
            return -1;
        r->roundtrips++;
    }
    return 0;
}
