/*
 * util: durations, host:port, buffers, error lists, and the hash behind
 * trigger ids — pinned to fixed values, because a trigger id that changed
 * between releases would defeat consumers' de-duplication.
 */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "journeyd/util.h"

#include "asan_build.h"

static void test_durations(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(jd_parse_duration("500ms", &ms), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(jd_parse_duration("45s", &ms), 0);
    assert_int_equal(ms, 45000);
    assert_int_equal(jd_parse_duration("15m", &ms), 0);
    assert_int_equal(ms, 900000);
    assert_int_equal(jd_parse_duration("12h", &ms), 0);
    assert_int_equal(ms, 43200000);
    assert_int_equal(jd_parse_duration("30d", &ms), 0);
    assert_int_equal(ms, 2592000000LL);
    assert_int_equal(jd_parse_duration("2w", &ms), 0);
    assert_int_equal(ms, 1209600000LL);
    assert_int_equal(jd_parse_duration("250", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(jd_parse_duration("", &ms), -1);
    assert_int_equal(jd_parse_duration("5x", &ms), -1);
    assert_int_equal(jd_parse_duration("-5s", &ms), -1);
    assert_int_equal(jd_parse_duration("d", &ms), -1);
    assert_int_equal(jd_parse_duration("99999999999999999999d", &ms), -1);
    char buf[32];
    assert_string_equal(jd_format_duration(2592000000LL, buf, sizeof buf), "30d");
    assert_string_equal(jd_format_duration(3600000, buf, sizeof buf), "1h");
    assert_string_equal(jd_format_duration(1500, buf, sizeof buf), "1500ms");
    assert_string_equal(jd_format_duration(1209600000LL, buf, sizeof buf), "2w");
}

static void test_hostport(void **state)
{
    (void)state;
    char host[64];
    int port;
    assert_int_equal(jd_parse_hostport("127.0.0.1:6379", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6379);
    assert_int_equal(jd_parse_hostport("redis:0", host, sizeof host, &port), -1);
    assert_int_equal(jd_parse_hostport("redis:70000", host, sizeof host, &port), -1);
    assert_int_equal(jd_parse_hostport(":6379", host, sizeof host, &port), -1);
    assert_int_equal(jd_parse_hostport("redis", host, sizeof host, &port), -1);
    assert_int_equal(jd_parse_hostport("redis:63a", host, sizeof host, &port), -1);
}

static void test_buffers_and_errors(void **state)
{
    (void)state;
    struct jd_buf b;
    jd_buf_init(&b);
    for (int i = 0; i < 1000; i++)
        jd_buf_printf(&b, "%d,", i);
    assert_int_equal(b.len, strlen(jd_buf_cstr(&b)));
    assert_memory_equal(b.data, "0,1,2,", 6);
    jd_buf_reset(&b);
    assert_int_equal(b.len, 0);
    jd_buf_append(&b, "a\0b", 3);
    assert_int_equal(b.len, 3);
    jd_buf_free(&b);

    struct jd_errors e;
    jd_errors_init(&e);
    jd_errors_add(&e, "f.conf", 3, 7, "bad %s", "thing");
    jd_errors_add(&e, "f.conf", 4, 0, "no column");
    jd_errors_add(&e, NULL, 0, 0, "plain");
    assert_int_equal(e.n, 3);
    assert_string_equal(e.msgs[0], "f.conf:3:7: error: bad thing");
    assert_string_equal(e.msgs[1], "f.conf:4: error: no column");
    assert_string_equal(e.msgs[2], "error: plain");
    jd_errors_free(&e);
}

/* The trigger id of (rule, version, customer, source event) — the exact
 * parts emit() in engine_batch.c hashes. */
static void trigger_id(const char *rule, const char *version, const char *customer,
                       const char *source, char out[33])
{
    const void *parts[4] = {rule, version, customer, source};
    size_t lens[4] = {strlen(rule), strlen(version), strlen(customer), strlen(source)};
    jd_hash128_hex(parts, lens, 4, out);
}

static void test_trigger_id_is_deterministic(void **state)
{
    (void)state;
    char a[33], b[33], c[33], d[33];
    trigger_id("vip_welcome", "c3ab0aba6a27d517", "alice", "ev-1", a);
    trigger_id("vip_welcome", "c3ab0aba6a27d517", "alice", "ev-1", b);
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), 32);
    /* pinned: this value must never change between releases */
    assert_string_equal(a, "3200a3ddb0897e18fe07c29dc50bf605");
    /* every part matters, and parts are length-prefixed */
    trigger_id("vip_welcome", "c3ab0aba6a27d517", "alice", "ev-2", c);
    assert_string_not_equal(a, c);
    trigger_id("vip_welcom", "ec3ab0aba6a27d517", "alice", "ev-1", d);
    assert_string_not_equal(a, d);
    trigger_id("vip_welcome", "c3ab0aba6a27d517", "alic", "eev-1", d);
    assert_string_not_equal(a, d);
}

/* journeyd fixes glibc's mmap threshold: a large block freed no longer
 * raises it, so a block above it is still mapped on its own, not carved from
 * an arena. (Under AddressSanitizer mallopt does nothing.) */
static void test_malloc_tune(void **state)
{
    (void)state;
    assert_int_equal(
        jd_malloc_tune("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=65536", NULL), 0);
#ifdef JD_TEST_ASAN
    skip();
#else
    assert_int_equal(jd_malloc_tune("glibc.malloc.arena_max=2", NULL), 1);
    assert_int_equal(jd_malloc_tune(NULL, NULL), 1);
    volatile char *big = malloc(8 << 20);
    assert_non_null(big);
    big[0] = 1;
    free((void *)big); /* (with the dynamic threshold: now 8 MB) */
    size_t mapped = mallinfo2().hblks;
    volatile char *mid = malloc(JD_MMAP_THRESHOLD * 2);
    assert_non_null(mid);
    mid[0] = 1;
    assert_int_equal(mallinfo2().hblks, mapped + 1);
    free((void *)mid);
    volatile char *small = malloc(JD_MMAP_THRESHOLD / 4);
    assert_non_null(small);
    small[0] = 1;
    assert_int_equal(mallinfo2().hblks, mapped);
    free((void *)small);
#endif
}

/* How many of the whole pages inside p[0..n) are resident. */
static size_t resident_pages(const char *p, size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + pg - 1) & ~(uintptr_t)(pg - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~(uintptr_t)(pg - 1);
    unsigned char v[1024];
    size_t np = (size_t)(b - a) / pg;
    assert_true(np <= sizeof v);
    assert_int_equal(mincore((void *)a, b - a, v), 0);
    size_t r = 0;
    for (size_t i = 0; i < np; i++)
        r += v[i] & 1;
    return r;
}

/* An idle engine's scratch arrays give their pages back and read as zeros;
 * the bytes outside the whole pages (malloc's, or a neighbour's) stay. */
static void test_release_pages(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    char *p = malloc(n);
    assert_non_null(p);
    memset(p, 0x5a, n);
    size_t before = resident_pages(p, n);
    assert_true(before >= 200);
    jd_release_pages(p + 100, n - 200);
    assert_true(resident_pages(p, n) <= 2);
    assert_int_equal(p[0], 0x5a);
    assert_int_equal(p[99], 0x5a);
    assert_int_equal(p[n - 1], 0x5a);
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    assert_int_equal(p[pg + 1], 0);
    assert_int_equal(p[n / 2], 0);
    jd_release_pages(NULL, n); /* nothing */
    jd_release_pages(p, 10);   /* no whole page: nothing */
    assert_int_equal(p[0], 0x5a);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_hostport),
        cmocka_unit_test(test_buffers_and_errors),
        cmocka_unit_test(test_trigger_id_is_deterministic),
        cmocka_unit_test(test_malloc_tune),
        cmocka_unit_test(test_release_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
