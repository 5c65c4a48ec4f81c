/*
 * notify — sd_notify over $NOTIFY_SOCKET: a unix datagram socket, path or
 * abstract ('@' prefix). Owns nothing: one socket per call, closed again
 * (a few calls per process lifetime, plus the watchdog ping).
 */
#include "journeyd/notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int jd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path || !state)
        return 0;
    size_t plen = strlen(path);
    struct sockaddr_un sa;
    if ((path[0] != '/' && path[0] != '@') || plen >= sizeof(sa.sun_path))
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, plen);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    if (path[0] == '/')
        salen++; /* include the terminating NUL of a filesystem path */

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    ssize_t n;
    do {
        n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    } while (n < 0 && errno == EINTR);
    close(fd);
    return n < 0 ? -1 : 1;
}

int64_t jd_notify_watchdog_interval_ms(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    if (!usec || !*usec)
        return 0;
    const char *pid = getenv("WATCHDOG_PID");
    if (pid && *pid && strtol(pid, NULL, 10) != (long)getpid())
        return 0;
    char *end;
    long long us = strtoll(usec, &end, 10);
    if (*end != '\0' || us <= 0)
        return 0;
    int64_t ms = us / 2000;
    return ms > 0 ? ms : 1;
}
