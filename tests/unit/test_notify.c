/*
 * test_notify — sd_notify datagrams reach a real unix socket, by path and
 * in the abstract namespace; the watchdog interval follows the environment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "journeyd/notify.h"

static int listen_at(const char *name, int abstract)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t n = strlen(name);
    memcpy(sa.sun_path + (abstract ? 1 : 0), name, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
    return fd;
}

static void expect_datagram(int fd, const char *want)
{
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void test_path_socket(void **state)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/jd_notify_%d.sock", (int)getpid());
    unlink(path);
    int fd = listen_at(path, 0);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(jd_notify("READY=1"), 1);
    expect_datagram(fd, "READY=1");
    assert_int_equal(jd_notify("STOPPING=1\nSTATUS=draining"), 1);
    expect_datagram(fd, "STOPPING=1\nSTATUS=draining");
    close(fd);
    unlink(path);
    /* the listener is gone: a send error, not a crash */
    assert_int_equal(jd_notify("WATCHDOG=1"), -1);
    unsetenv("NOTIFY_SOCKET");
}

static void test_abstract_socket(void **state)
{
    char name[64], env[66];
    snprintf(name, sizeof(name), "jd_notify_test_%d", (int)getpid());
    int fd = listen_at(name, 1);
    snprintf(env, sizeof(env), "@%s", name);
    setenv("NOTIFY_SOCKET", env, 1);
    assert_int_equal(jd_notify("READY=1"), 1);
    expect_datagram(fd, "READY=1");
    close(fd);
    unsetenv("NOTIFY_SOCKET");
}

static void test_no_socket(void **state)
{
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(jd_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_int_equal(jd_notify("READY=1"), -1);
    unsetenv("NOTIFY_SOCKET");
}

static void test_watchdog_interval(void **state)
{
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    assert_int_equal(jd_notify_watchdog_interval_ms(), 0);
    setenv("WATCHDOG_USEC", "30000000", 1);
    assert_int_equal(jd_notify_watchdog_interval_ms(), 15000);
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(jd_notify_watchdog_interval_ms(), 15000);
    setenv("WATCHDOG_PID", "1", 1); /* meant for another process */
    assert_int_equal(jd_notify_watchdog_interval_ms(), 0);
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "garbage", 1);
    assert_int_equal(jd_notify_watchdog_interval_ms(), 0);
    unsetenv("WATCHDOG_USEC");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_socket),
        cmocka_unit_test(test_abstract_socket),
        cmocka_unit_test(test_no_socket),
        cmocka_unit_test(test_watchdog_interval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
