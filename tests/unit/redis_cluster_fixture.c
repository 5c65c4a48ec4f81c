/*
 * redis_cluster_fixture — a real Redis Cluster on loopback for the tests:
 * N redis-server processes with cluster-enabled yes (no persistence, in one
 * temporary directory), joined with `redis-cli --cluster create`, waited
 * for until every node says cluster_state:ok, agrees on all 16384 slots and
 * every replica is in sync. Included by the tests that need it
 * (#include "redis_cluster_fixture.c"); it is not a test itself.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RC_MAX_NODES 6

struct redis_cluster {
    int n;
    int port[RC_MAX_NODES];
    pid_t pid[RC_MAX_NODES]; /* 0: not running */
    redisContext *ctl[RC_MAX_NODES];
    char dir[64];
};

static void rc_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int rc_port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* n consecutive ports whose cluster bus ports (+10000) are free too. */
static int rc_pick_ports(struct redis_cluster *c)
{
    static int seeded; /* once: another attempt must not draw the same ports */
    if (!seeded++)
        srand((unsigned)(getpid() ^ time(NULL)));
    for (int attempt = 0; attempt < 200; attempt++) {
        int base = 20000 + rand() % 9000;
        int ok = 1;
        for (int i = 0; i < c->n && ok; i++)
            ok = rc_port_free(base + i) && rc_port_free(base + i + 10000);
        if (ok) {
            for (int i = 0; i < c->n; i++)
                c->port[i] = base + i;
            return 0;
        }
    }
    return -1;
}

static redisContext *rc_ctl(struct redis_cluster *c, int i)
{
    if (c->ctl[i])
        return c->ctl[i];
    struct timeval tv = {2, 0};
    redisContext *ctx = redisConnectWithTimeout("127.0.0.1", c->port[i], tv);
    if (!ctx || ctx->err) {
        if (ctx)
            redisFree(ctx);
        return NULL;
    }
    redisSetTimeout(ctx, tv);
    c->ctl[i] = ctx;
    return ctx;
}

/* A command on node i (NULL when it does not answer). */
static redisReply *rc_cmd(struct redis_cluster *c, int i, const char *fmt, ...)
{
    redisContext *ctx = rc_ctl(c, i);
    if (!ctx)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(ctx, fmt, ap);
    va_end(ap);
    if (!r) {
        redisFree(c->ctl[i]);
        c->ctl[i] = NULL;
    }
    return r;
}

static int rc_start_node(struct redis_cluster *c, int i, int node_timeout_ms)
{
    char port[16], conf[64], timeout[16];
    snprintf(port, sizeof port, "%d", c->port[i]);
    snprintf(conf, sizeof conf, "nodes-%d.conf", c->port[i]);
    snprintf(timeout, sizeof timeout, "%d", node_timeout_ms);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
        }
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
               "--cluster-enabled", "yes", "--cluster-config-file", conf, "--cluster-node-timeout",
               timeout, "--dir", c->dir, "--save", "", "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    c->pid[i] = pid;
    for (int k = 0; k < 500; k++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            /* it exited: e.g. a port taken since rc_pick_ports checked it
             * (the bus ports lie in the ephemeral range) */
            c->pid[i] = 0;
            return -1;
        }
        redisReply *r = rc_cmd(c, i, "PING");
        int ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (ok)
            return 0;
        rc_sleep_ms(10);
    }
    return -1;
}

static int rc_run(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) && WEXITSTATUS(rc) == 0 ? 0 : -1;
}

/* Slots covered in node i's CLUSTER SLOTS (16384 when it sees them all). */
static long rc_slots_seen(struct redis_cluster *c, int i)
{
    redisReply *r = rc_cmd(c, i, "CLUSTER SLOTS");
    if (!r)
        return -1;
    long n = 0;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t k = 0; k < r->elements; k++)
            n +=
                (long)(r->element[k]->element[1]->integer - r->element[k]->element[0]->integer + 1);
    freeReplyObject(r);
    return n;
}

/* INFO section, or CLUSTER INFO when section is "cluster-info". */
static int rc_info_has(struct redis_cluster *c, int i, const char *section, const char *what)
{
    redisReply *r = strcmp(section, "cluster-info") == 0 ? rc_cmd(c, i, "CLUSTER INFO")
                                                         : rc_cmd(c, i, "INFO %s", section);
    int ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, what);
    if (r)
        freeReplyObject(r);
    return ok;
}

/* Fewest replicas any slot range lists in node i's CLUSTER SLOTS (-1 on
 * error). A replica linked to its master is listed by the other nodes only
 * once gossip has carried it: a client reading the map before then sees a
 * master without replicas (and does not WAIT for one). */
static long rc_min_replicas_seen(struct redis_cluster *c, int i)
{
    redisReply *r = rc_cmd(c, i, "CLUSTER SLOTS");
    if (!r)
        return -1;
    long n = r->type == REDIS_REPLY_ARRAY && r->elements ? 1000 : -1;
    for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k < r->elements; k++)
        if ((long)r->element[k]->elements - 3 < n)
            n = (long)r->element[k]->elements - 3;
    freeReplyObject(r);
    return n;
}

/* Every running node: state ok, all slots seen, replicas linked. */
static int rc_wait_ok(struct redis_cluster *c, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        int ok = 1;
        for (int i = 0; i < c->n && ok; i++) {
            if (!c->pid[i])
                continue;
            ok = rc_info_has(c, i, "cluster-info", "cluster_state:ok") &&
                 rc_slots_seen(c, i) == 16384 &&
                 (rc_info_has(c, i, "replication", "role:master") ||
                  rc_info_has(c, i, "replication", "master_link_status:up"));
        }
        if (ok)
            return 0;
        rc_sleep_ms(50);
    }
    return -1;
}

static void rc_stop(struct redis_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->ctl[i]) {
            redisFree(c->ctl[i]);
            c->ctl[i] = NULL;
        }
        if (c->pid[i] > 0) {
            kill(c->pid[i], SIGKILL);
            waitpid(c->pid[i], NULL, 0);
            c->pid[i] = 0;
        }
    }
    if (c->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", c->dir);
        c->dir[0] = '\0';
    }
}

static int rc_start_once(struct redis_cluster *c, int masters, int replicas, int node_timeout_ms);

/* masters * (1 + replicas) nodes; 0 or -1 (then everything is stopped). A
 * node that cannot start (its port was taken between the check and its
 * bind) makes another attempt on other ports, up to three in all. */
static int rc_start(struct redis_cluster *c, int masters, int replicas, int node_timeout_ms)
{
    for (int attempt = 1; attempt <= 3; attempt++) {
        if (rc_start_once(c, masters, replicas, node_timeout_ms) == 0)
            return 0;
        fprintf(stderr, "redis cluster: attempt %d of 3 failed\n", attempt);
    }
    return -1;
}

static int rc_start_once(struct redis_cluster *c, int masters, int replicas, int node_timeout_ms)
{
    memset(c, 0, sizeof *c);
    c->n = masters * (1 + replicas);
    snprintf(c->dir, sizeof c->dir, "/tmp/jd-cluster-XXXXXX");
    if (c->n > RC_MAX_NODES || !mkdtemp(c->dir) || rc_pick_ports(c) != 0)
        goto err;
    for (int i = 0; i < c->n; i++)
        if (rc_start_node(c, i, node_timeout_ms) != 0)
            goto err;
    char cmd[1024];
    int len = snprintf(cmd, sizeof cmd, "redis-cli --cluster create");
    for (int i = 0; i < c->n; i++)
        len += snprintf(cmd + len, sizeof cmd - (size_t)len, " 127.0.0.1:%d", c->port[i]);
    snprintf(cmd + len, sizeof cmd - (size_t)len,
             " --cluster-replicas %d --cluster-yes > '%s/create.log' 2>&1", replicas, c->dir);
    int up = rc_run(cmd) == 0 && rc_wait_ok(c, 30000) == 0;
    /* and every node lists every master's replicas (a client's first slot
     * map must know them, or its first writes are not WAITed for) */
    for (int waited = 0, listed = 0; up && !listed; waited += 50) {
        listed = 1;
        for (int i = 0; i < c->n && listed; i++)
            listed = rc_min_replicas_seen(c, i) >= replicas;
        if (!listed && waited >= 30000)
            up = 0;
        else if (!listed)
            rc_sleep_ms(50);
    }
    if (!up) {
        fprintf(stderr, "cluster did not come up:\n");
        snprintf(cmd, sizeof cmd, "tail -20 '%s/create.log' >&2", c->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
        for (int i = 0; i < c->n; i++)
            fprintf(stderr, "node %d (port %d): slots seen %ld\n", i, c->port[i],
                    rc_slots_seen(c, i));
        goto err;
    }
    return 0;
err:
    rc_stop(c);
    return -1;
}

static void rc_kill_node(struct redis_cluster *c, int i)
{
    if (c->ctl[i]) {
        redisFree(c->ctl[i]);
        c->ctl[i] = NULL;
    }
    if (c->pid[i] > 0) {
        kill(c->pid[i], SIGKILL);
        waitpid(c->pid[i], NULL, 0);
        c->pid[i] = 0;
    }
}

static int rc_index_of_port(const struct redis_cluster *c, long port)
{
    for (int i = 0; i < c->n; i++)
        if (c->port[i] == port)
            return i;
    return -1;
}

/* The node that serves a slot, as the first running node sees it. */
static int rc_master_of_slot(struct redis_cluster *c, unsigned slot)
{
    for (int i = 0; i < c->n; i++) {
        if (!c->pid[i])
            continue;
        redisReply *r = rc_cmd(c, i, "CLUSTER SLOTS");
        if (!r)
            continue;
        int who = -1;
        for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
            redisReply *range = r->element[k];
            if (range->element[0]->integer <= slot && slot <= range->element[1]->integer)
                who = rc_index_of_port(c, range->element[2]->element[1]->integer);
        }
        freeReplyObject(r);
        return who;
    }
    return -1;
}

static int rc_is_master(struct redis_cluster *c, int i)
{
    return rc_info_has(c, i, "replication", "role:master");
}

static void rc_node_id(struct redis_cluster *c, int i, char out[64])
{
    out[0] = '\0';
    redisReply *r = rc_cmd(c, i, "CLUSTER MYID");
    if (r && r->type == REDIS_REPLY_STRING)
        snprintf(out, 64, "%s", r->str);
    if (r)
        freeReplyObject(r);
}

/* Starts `redis-cli --cluster reshard` moving nslots from node `from` to
 * node `to` in the background; returns its pid (-1 on error). */
static pid_t rc_reshard_start(struct redis_cluster *c, int from, int to, int nslots)
{
    char fid[64], tid[64], addr[32], n[16], log[128];
    rc_node_id(c, from, fid);
    rc_node_id(c, to, tid);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", c->port[from]);
    snprintf(n, sizeof n, "%d", nslots);
    snprintf(log, sizeof log, "%s/reshard.log", c->dir);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execlp("redis-cli", "redis-cli", "--cluster", "reshard", addr, "--cluster-from", fid,
               "--cluster-to", tid, "--cluster-slots", n, "--cluster-yes", (char *)NULL);
        _exit(127);
    }
    return pid;
}
