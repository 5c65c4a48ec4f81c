/*
 * redis_fixture — a real redis-server for unit tests: started on a free
 * loopback port in a temporary directory, without persistence, and killed
 * at teardown. Include redis_fixture.c in the test (it is not a test itself).
 */
#ifndef JD_TEST_REDIS_FIXTURE_H
#define JD_TEST_REDIS_FIXTURE_H

#include <hiredis/hiredis.h>
#include <sys/types.h>

struct redis_fixture {
    pid_t pid; /* 0: not running */
    int port;
    char dir[64];      /* its working directory */
    redisContext *ctl; /* a control connection for the test's own commands */
};

/* Starts redis-server (on f->port when non-zero, else a free port) and waits
 * until it answers PING. 0 or -1. */
int redis_fixture_start(struct redis_fixture *f);
/* SIGKILLs the server (a crash), keeping port and directory for a restart. */
void redis_fixture_kill(struct redis_fixture *f);
/* Stops the server and removes its directory. */
void redis_fixture_stop(struct redis_fixture *f);
/* Runs a command on the control connection (reconnecting when needed);
 * the caller frees the reply. */
redisReply *redis_fixture_cmd(struct redis_fixture *f, const char *fmt, ...);

#endif
