/*
 * Unit tests for the customer memory pool (cmem.c): sizes and alignment,
 * reuse of freed slots by size, realloc within and across slots and to and
 * from malloc, contents kept, frees from another thread, the pool's
 * accounting, the tails of mappings, and refusals: a double free, a free()
 * of malloc'd memory given to jd_cfree, abort.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "journeyd/cmem.h"

#include "asan_build.h"

static size_t live(struct jd_cmem *m)
{
    struct jd_cmem_stats st;
    jd_cmem_stats(m, &st);
    return st.live;
}

static void test_sizes_and_alignment(void **state)
{
    (void)state;
    struct jd_cmem *m = jd_cmem_new();
    jd_cmem_use(m);
    assert_ptr_equal(jd_cmem_current(), m);
    static const size_t n[] = {0, 1, 8, 24, 25, 40, 41, 100, 1000, 1016};
    static const size_t slot[] = {32, 32, 32, 32, 48, 48, 64, 112, 1008, 1024};
    void *p[10];
    size_t sum = 0;
    for (size_t i = 0; i < 10; i++) {
        p[i] = jd_cmalloc(n[i]);
        assert_int_equal((uintptr_t)p[i] % 16, 0);
        assert_int_equal(jd_cmem_size(p[i]), slot[i]);
        memset(p[i], (int)i, n[i]);
        sum += slot[i];
    }
    assert_int_equal(live(m), sum);
    /* above 1016 bytes: malloc's, not counted in the pool */
    void *big = jd_cmalloc(5000);
    assert_int_equal((uintptr_t)big % 16, 0);
    assert_true(jd_cmem_size(big) >= 5000);
    memset(big, 7, 5000);
    assert_int_equal(live(m), sum);
    for (size_t i = 0; i < 10; i++) {
        for (size_t k = 0; k < n[i]; k++)
            assert_int_equal(((unsigned char *)p[i])[k], i);
        jd_cfree(p[i]);
    }
    jd_cfree(big);
    jd_cfree(NULL);
    assert_int_equal(live(m), 0);
    assert_int_equal(jd_cmem_destroy(m), 0);
    assert_null(jd_cmem_current()); /* destroyed: this thread falls back to malloc */
}

static void test_reuse_by_size(void **state)
{
    (void)state;
    struct jd_cmem *m = jd_cmem_new();
    jd_cmem_use(m);
    void *a = jd_cmalloc(100), *b = jd_cmalloc(40);
    jd_cfree(a);
    jd_cfree(b);
    /* the same slot size comes back from its free list, last freed first */
    void *c = jd_cmalloc(40), *d = jd_cmalloc(104);
    assert_ptr_equal(c, b);
    assert_ptr_equal(d, a);
    unsigned char *z = jd_ccalloc(110); /* a reused slot is zeroed too */
    memset(z, 0xff, 110);
    jd_cfree(z);
    unsigned char *z2 = jd_ccalloc(115);
    assert_ptr_equal(z2, z);
    for (size_t k = 0; k < 115; k++)
        assert_int_equal(z2[k], 0);
    jd_cfree(z2);
    jd_cfree(c);
    jd_cfree(d);
    struct jd_cmem_stats st;
    jd_cmem_stats(m, &st);
    assert_int_equal(st.live, 0);
    assert_int_equal(st.mapped, 1 << 20);
    assert_int_equal(jd_cmem_destroy(m), 0);
}

static void test_resize(void **state)
{
    (void)state;
    struct jd_cmem *m = jd_cmem_new();
    jd_cmem_use(m);
    char *p = jd_crealloc(NULL, 20);
    memcpy(p, "0123456789012345678", 20);
    char *q = jd_crealloc(p, 24); /* still a 32-byte slot: in place */
    assert_ptr_equal(q, p);
    q = jd_crealloc(q, 300);
    assert_ptr_not_equal(q, p);
    assert_string_equal(q, "0123456789012345678");
    assert_int_equal(live(m), 320);
    q = jd_crealloc(q, 3000); /* to malloc */
    assert_string_equal(q, "0123456789012345678");
    assert_int_equal(live(m), 0);
    q[2999] = 'x';
    q = jd_crealloc(q, 10); /* malloc'd stays malloc'd */
    assert_int_equal(memcmp(q, "0123456789", 10), 0);
    assert_int_equal(live(m), 0);
    jd_cfree(q);

    /* an allocation made without a pool grows in malloc, whatever this
     * thread uses later; one made in a pool stays in it */
    jd_cmem_use(NULL);
    char *r = jd_cstrndup("abcdef", 3);
    assert_string_equal(r, "abc");
    char *s = jd_cstrndup("xyz", 3);
    jd_cmem_use(m);
    r = jd_crealloc(r, 60);
    assert_int_equal(live(m), 0);
    assert_string_equal(r, "abc");
    jd_cfree(r);
    jd_cmem_use(NULL);
    char *t = jd_crealloc(NULL, 10);
    jd_cmem_use(m);
    char *u = jd_cmalloc(10);
    jd_cmem_use(NULL);
    u = jd_crealloc(u, 100);
    assert_int_equal(live(m), 112);
    jd_cfree(u);
    jd_cfree(t);
    jd_cfree(s);
    assert_int_equal(jd_cmem_destroy(m), 0);
}

/* Many sizes, kept in a table and changed at random, checked against a
 * pattern: what realloc and reuse must never mix up. Also fills several
 * mappings, so that their tails go to the free lists. */
static void test_random_churn(void **state)
{
    (void)state;
    struct jd_cmem *m = jd_cmem_new();
    jd_cmem_use(m);
    enum { N = 16000 };
    static unsigned char *p[N];
    static size_t n[N];
    static int pooled[N]; /* from the pool (once malloc'd, always malloc'd) */
    uint64_t x = 88172645463325252ULL;
    for (int round = 0; round < 120000; round++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t i = (size_t)(x % N), want = (size_t)(x >> 20) % (x & 64 ? 1400 : 200);
        for (size_t k = 0; p[i] && k < n[i]; k++)
            assert_int_equal(p[i][k], (unsigned char)(i + k));
        if (x & 1 << 9) {
            jd_cfree(p[i]);
            p[i] = NULL;
            continue;
        }
        pooled[i] = (p[i] ? pooled[i] : 1) && want <= 1016;
        p[i] = jd_crealloc(p[i], want);
        assert_int_equal((uintptr_t)p[i] % 16, 0);
        for (size_t k = 0; k < want; k++)
            p[i][k] = (unsigned char)(i + k);
        n[i] = want;
    }
    struct jd_cmem_stats st;
    jd_cmem_stats(m, &st);
    assert_true(st.mapped >= 2 << 20);
    size_t sum = 0;
    for (size_t i = 0; i < N; i++)
        if (p[i] && pooled[i])
            sum += jd_cmem_size(p[i]);
    assert_int_equal(st.live, sum);
    for (size_t i = 0; i < N; i++)
        jd_cfree(p[i]);
    assert_int_equal(jd_cmem_destroy(m), 0);
}

struct batch {
    void **p;
    size_t n;
};

static void *free_all(void *arg)
{
    struct batch *b = arg;
    for (size_t i = 0; i < b->n; i++)
        jd_cfree(b->p[i]); /* into the pool they came from, not this thread's */
    return NULL;
}

static void test_free_from_another_thread(void **state)
{
    (void)state;
    struct jd_cmem *m = jd_cmem_new();
    jd_cmem_use(m);
    enum { N = 20000 };
    void **p = calloc(N, sizeof *p);
    for (size_t i = 0; i < N; i++)
        p[i] = jd_cmalloc(16 + i % 300);
    struct batch b = {p, N / 2};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, free_all, &b), 0);
    for (size_t i = N / 2; i < N; i++) /* meanwhile, here */
        jd_cfree(p[i]);
    pthread_join(t, NULL);
    assert_int_equal(live(m), 0);
    free(p);
    assert_int_equal(jd_cmem_destroy(m), 0);
}

/* Two threads allocate, grow and free in one pool at once (an engine's
 * thread and its loader), each checking its own blocks' contents; then the
 * free slots come back once each: all distinct, none handed out twice. */
struct churn {
    struct jd_cmem *m;
    unsigned seed;
    int ok;
};

static void *churn_main(void *arg)
{
    struct churn *ch = arg;
    enum { N = 500 };
    static _Thread_local unsigned char *p[N];
    static _Thread_local size_t n[N];
    jd_cmem_use(ch->m);
    uint64_t x = ch->seed;
    ch->ok = 1;
    for (int round = 0; round < 200000; round++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t i = (size_t)(x % N), want = (size_t)(x >> 24) % 600;
        for (size_t k = 0; p[i] && k < n[i]; k++)
            if (p[i][k] != (unsigned char)(ch->seed + i + k))
                ch->ok = 0;
        if (x & 1 << 10) {
            jd_cfree(p[i]);
            p[i] = NULL;
            continue;
        }
        p[i] = jd_crealloc(p[i], want);
        for (size_t k = 0; k < want; k++)
            p[i][k] = (unsigned char)(ch->seed + i + k);
        n[i] = want;
    }
    for (size_t i = 0; i < N; i++) {
        jd_cfree(p[i]);
        p[i] = NULL;
    }
    return NULL;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static void test_concurrent(void **state)
{
    (void)state;
    struct jd_cmem *m = jd_cmem_new();
    struct churn a = {m, 7, 0}, b = {m, 99, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, churn_main, &b), 0);
    churn_main(&a);
    pthread_join(t, NULL);
    assert_true(a.ok);
    assert_true(b.ok);
    assert_int_equal(live(m), 0);
    /* take 48-byte slots until the pool maps more: the free ones of that
     * size, then the rest of the mapping; no two overlap */
    struct jd_cmem_stats st;
    jd_cmem_stats(m, &st);
    size_t max = st.mapped / 48 + 2, k = 0;
    void **all = calloc(max, sizeof *all);
    for (; k < max; k++) {
        all[k] = jd_cmalloc(40);
        struct jd_cmem_stats now;
        jd_cmem_stats(m, &now);
        if (now.mapped != st.mapped) {
            jd_cfree(all[k]);
            break;
        }
    }
    assert_true(k > 100);
    qsort(all, k, sizeof *all, cmp_ptr);
    for (size_t i = 1; i < k; i++)
        assert_true((uintptr_t)all[i] >= (uintptr_t)all[i - 1] + 48);
    for (size_t i = 0; i < k; i++)
        jd_cfree(all[i]);
    free(all);
    assert_int_equal(jd_cmem_destroy(m), 0);
}

/* Runs f in a child with stderr closed; returns its wait status. */
static int in_child(void (*f)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr))
            _exit(2);
        f();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
}

/* Whether f, run in a child, is killed by SIGABRT. */
static int aborts(void (*f)(void))
{
    int st = in_child(f);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static void double_free(void)
{
    jd_cmem_use(jd_cmem_new());
    void *p = jd_cmalloc(50);
    jd_cfree(p);
    jd_cfree(p);
}

static void foreign_free(void)
{
    char *p = calloc(1, 64);
    jd_cfree(p + 16); /* not from jd_cmalloc: a zero header */
}

static void foreign_free_malloc(void)
{
    jd_cmem_use(jd_cmem_new());
    (void)jd_cmalloc(10);
    jd_cfree(malloc(300)); /* malloc's chunk size before it, not a pool's header */
}

static void test_refusals(void **state)
{
    (void)state;
    assert_true(aborts(double_free));
    assert_true(aborts(foreign_free));
    assert_true(aborts(foreign_free_malloc));
}

#ifdef JD_TEST_ASAN
/* Under AddressSanitizer, a use after free and an overflow into the next
 * slot are reported (the child dies with ASan's report, exit code 1). */
static int asan_reports(void (*f)(void))
{
    int st = in_child(f);
    return WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 2;
}

static void use_after_free(void)
{
    jd_cmem_use(jd_cmem_new());
    volatile char *p = jd_cmalloc(40);
    jd_cfree((void *)p);
    p[3] = 1;
}

static void overflow(void)
{
    jd_cmem_use(jd_cmem_new());
    volatile char *p = jd_cmalloc(20);
    (void)jd_cmalloc(20);
    p[20] = 1; /* past its size, inside its slot */
}

static void overflow_into_header(void)
{
    jd_cmem_use(jd_cmem_new());
    volatile char *p = jd_cmalloc(24);
    (void)jd_cmalloc(20);
    p[26] = 1; /* the next slot's header */
}

static void fine(void)
{
    jd_cmem_use(jd_cmem_new());
    volatile char *p = jd_cmalloc(20);
    p[19] = 1;
    jd_cfree((void *)p);
}

static void test_asan_sees_the_pool(void **state)
{
    (void)state;
    assert_true(asan_reports(use_after_free));
    assert_true(asan_reports(overflow));
    assert_true(asan_reports(overflow_into_header));
    assert_false(asan_reports(fine));
}
#endif

/* The count of what is still allocated when a pool goes (outside
 * AddressSanitizer builds, which abort instead). */
static void test_destroy_counts_leaks(void **state)
{
    (void)state;
#ifndef JD_TEST_ASAN
    struct jd_cmem *m = jd_cmem_new();
    jd_cmem_use(m);
    (void)jd_cmalloc(100);
    (void)jd_cmalloc(10);
    assert_int_equal(jd_cmem_destroy(m), 112 + 32);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_and_alignment),
        cmocka_unit_test(test_reuse_by_size),
        cmocka_unit_test(test_resize),
        cmocka_unit_test(test_random_churn),
        cmocka_unit_test(test_free_from_another_thread),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_destroy_counts_leaks),
        cmocka_unit_test(test_concurrent),
#ifdef JD_TEST_ASAN
        cmocka_unit_test(test_asan_sees_the_pool),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
