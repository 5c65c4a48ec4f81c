/*
 * redis_fixture — see redis_fixture.h. Included by the tests that need a
 * Redis server (#include "redis_fixture.c").
 */
#include "redis_fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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

static int redis_fixture_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void redis_fixture_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int redis_fixture_connect(struct redis_fixture *f)
{
    struct timeval tv = {1, 0};
    if (f->ctl)
        redisFree(f->ctl);
    f->ctl = redisConnectWithTimeout("127.0.0.1", f->port, tv);
    if (!f->ctl || f->ctl->err) {
        if (f->ctl)
            redisFree(f->ctl);
        f->ctl = NULL;
        return -1;
    }
    return 0;
}

int redis_fixture_start(struct redis_fixture *f)
{
    if (!f->dir[0]) {
        snprintf(f->dir, sizeof f->dir, "/tmp/jd-redis-XXXXXX");
        if (!mkdtemp(f->dir))
            return -1;
    }
    if (!f->port)
        f->port = redis_fixture_free_port();
    if (f->port <= 0)
        return -1;
    char port[16];
    snprintf(port, sizeof port, "%d", f->port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
        }
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", f->dir, (char *)NULL);
        _exit(127);
    }
    f->pid = pid;
    for (int i = 0; i < 500; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            f->pid = 0;
            return -1; /* exited: port taken? */
        }
        if (redis_fixture_connect(f) == 0) {
            redisReply *r = redisCommand(f->ctl, "PING");
            int ok = r && r->type == REDIS_REPLY_STATUS;
            if (r)
                freeReplyObject(r);
            if (ok)
                return 0;
        }
        redis_fixture_sleep_ms(10);
    }
    redis_fixture_kill(f);
    return -1;
}

void redis_fixture_kill(struct redis_fixture *f)
{
    if (f->ctl) {
        redisFree(f->ctl);
        f->ctl = NULL;
    }
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
    }
}

void redis_fixture_stop(struct redis_fixture *f)
{
    redis_fixture_kill(f);
    if (f->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", f->dir);
        f->dir[0] = '\0';
    }
}

redisReply *redis_fixture_cmd(struct redis_fixture *f, const char *fmt, ...)
{
    if (!f->ctl && redis_fixture_connect(f) != 0)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(f->ctl, fmt, ap);
    va_end(ap);
    if (!r) {
        redisFree(f->ctl);
        f->ctl = NULL;
    }
    return r;
}
