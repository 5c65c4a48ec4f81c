/*
 * redis_int — what redis_conn.c (nodes, discovery, slot map) and
 * redis_pipe.c (pipelines, exec, redirects) share. Not for other modules.
 */
#ifndef JD_REDIS_INT_H
#define JD_REDIS_INT_H

#include <sys/uio.h>

#include "journeyd/redis_conn.h"

#define NO_NODE 0xffff

struct rnode {
    char host[256];
    int port;
    char addr[272];    /* "host:port" */
    redisContext *ctx; /* NULL while not connected */
    int replicas;      /* live replicas in the last slot map */
    /* the exec round at hand */
    size_t *sent; /* entries sent to this node, in sending order */
    size_t nsent, capsent;
    int waited; /* a WAIT follows the entries */
    /* what this round sends it: pieces of the pipeline's RESP buffer (and
     * of wait), written with sendmsg, no copy (redis_pipe.c) */
    struct iovec *iov;
    size_t niov, capiov;
    char wait[48]; /* the WAIT command, RESP */
};

enum { E_PENDING = 0, E_DONE, E_FAILED };

/* One command, or one group of commands that travel together. */
struct rentry {
    size_t first, n; /* commands [first, first + n) */
    int slot;        /* -1: no key */
    int ask;         /* node to send to after ASKING (one shot), or -1 */
    int asking;      /* this round: an ASKING precedes the entry */
    int multi;       /* a MULTI ... EXEC group */
    int state;
    int node; /* the node that answered, or -1 */
};

struct rcmd {
    size_t off, len; /* RESP bytes in wire */
    size_t entry;
};

struct jd_redis {
    int timeout_ms;
    char **seeds;
    size_t nseeds;
    int cluster;
    int broken;
    struct rnode *nodes;
    size_t nnodes, capnodes;
    uint16_t *slot_node; /* JD_REDIS_SLOTS entries (cluster) */
    size_t nmasters;
    int refresh_soon; /* a MOVED was seen: re-read the map before the next exec */
    int refresh_now;  /* topology in doubt: re-read it before the next round */
    int64_t map_ns;   /* monotonic time of the last slot map read */
    char desc[300];

    /* the pipeline */
    struct jd_buf wire;
    struct rcmd *cmds;
    redisReply **replies;
    size_t ncmds, capcmds;
    struct rentry *entries;
    size_t nentries, capentries;
    int in_group;
    int executed;

    uint64_t roundtrips, moved, asks, retries;
};

/* redis_conn.c */
int jd_redis_node_add(struct jd_redis *r, const char *host, int port);
int jd_redis_node_connect(struct jd_redis *r, struct rnode *n, char *errstr, size_t errsize);
void jd_redis_node_drop(struct rnode *n);
int jd_redis_refresh_map(struct jd_redis *r, char *errstr, size_t errsize);
/* The node for a slot (-1: any master); NO_NODE when none serves it. */
unsigned jd_redis_route(const struct jd_redis *r, int slot);

#endif
