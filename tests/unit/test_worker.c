/*
 * worker: a job runs once per submit, on the worker's own thread (named),
 * and what it wrote is the owner's to read after the wait; stop waits for a
 * job on its way.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "journeyd/worker.h"

struct job {
    int runs;
    long sum;
    long input;
    char thread_name[16];
    pthread_t thread;
    int slow; /* sleep in the job: a stop or a wait must wait for it */
};

static void run(void *arg)
{
    struct job *j = arg;
    if (j->slow) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    j->runs++;
    j->sum += j->input;
    j->thread = pthread_self();
    pthread_getname_np(pthread_self(), j->thread_name, sizeof j->thread_name);
}

static void test_jobs_run_once_per_submit(void **state)
{
    (void)state;
    struct job j = {0};
    struct jd_worker *w = jd_worker_start("jd-test", run, &j);
    assert_non_null(w);
    assert_false(jd_worker_busy(w));
    jd_worker_wait(w); /* nothing on its way: returns at once */
    for (long i = 1; i <= 1000; i++) {
        j.input = i; /* the owner's between wait and submit */
        jd_worker_submit(w);
        assert_true(jd_worker_busy(w));
        jd_worker_wait(w);
        assert_false(jd_worker_busy(w));
        assert_int_equal(j.runs, i);
    }
    assert_int_equal(j.sum, 1000 * 1001 / 2);
    assert_false(pthread_equal(j.thread, pthread_self()));
    assert_string_equal(j.thread_name, "jd-test");
    jd_worker_stop(w);
    assert_int_equal(j.runs, 1000);
}

static void test_wait_and_stop_wait_for_the_job(void **state)
{
    (void)state;
    struct job j = {.slow = 1, .input = 7};
    struct jd_worker *w = jd_worker_start("jd-test-slow", run, &j);
    assert_non_null(w);
    jd_worker_submit(w);
    jd_worker_wait(w);
    assert_int_equal(j.runs, 1);
    jd_worker_submit(w);
    jd_worker_stop(w); /* a job on its way: it finishes first */
    assert_int_equal(j.runs, 2);
    assert_int_equal(j.sum, 14);
    assert_string_equal(j.thread_name, "jd-test-slow");
    jd_worker_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_run_once_per_submit),
        cmocka_unit_test(test_wait_and_stop_wait_for_the_job),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
