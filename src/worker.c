/*
 * worker — one thread, one job at a time (see worker.h). Owns the thread and
 * its mutex and condition variable; the job's data is the owner's.
 */
#include "journeyd/worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "journeyd/util.h"

struct jd_worker {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void (*run)(void *arg);
    void *arg;
    char name[16];
    int pending; /* a job was handed to the thread */
    int done;    /* and the thread has run it */
    int quit;
    int busy; /* owner side: submitted, not yet waited for */
};

static void *worker_main(void *p)
{
    struct jd_worker *w = p;
    pthread_setname_np(pthread_self(), w->name);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->pending && !w->quit)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->quit)
            break;
        pthread_mutex_unlock(&w->mu);
        w->run(w->arg);
        pthread_mutex_lock(&w->mu);
        w->pending = 0;
        w->done = 1;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

struct jd_worker *jd_worker_start(const char *name, void (*run)(void *arg), void *arg)
{
    struct jd_worker *w = jd_xcalloc(1, sizeof *w);
    w->run = run;
    w->arg = arg;
    snprintf(w->name, sizeof w->name, "%s", name);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
        return NULL;
    }
    return w;
}

void jd_worker_stop(struct jd_worker *w)
{
    if (!w)
        return;
    jd_worker_wait(w);
    pthread_mutex_lock(&w->mu);
    w->quit = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void jd_worker_submit(struct jd_worker *w)
{
    pthread_mutex_lock(&w->mu);
    w->pending = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    w->busy = 1;
}

void jd_worker_wait(struct jd_worker *w)
{
    if (!w->busy)
        return;
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    w->done = 0;
    pthread_mutex_unlock(&w->mu);
    w->busy = 0;
}

int jd_worker_busy(const struct jd_worker *w)
{
    return w->busy;
}
