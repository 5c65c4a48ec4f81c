/*
 * worker — a thread that runs one job at a time for the thread that owns it.
 *
 * The owner hands a job over with jd_worker_submit and collects it with
 * jd_worker_wait; between the two, the job's data belongs to the worker,
 * and after the wait it belongs to the owner again (the mutex orders every
 * write of one before every read of the other). Used by the write-back
 * (engine_wb.c) and the loader (engine_load.c), each with its own Redis
 * connection.
 */
#ifndef JOURNEYD_WORKER_H
#define JOURNEYD_WORKER_H

/* Starts a thread named `name` (at most 15 characters: top -H, perf) that
 * runs run(arg) once per submit. NULL when the thread cannot be started. */
struct jd_worker *jd_worker_start(const char *name, void (*run)(void *arg), void *arg);
/* Stops the thread after the job on its way, if any; NULL is fine. */
void jd_worker_stop(struct jd_worker *w);
/* Hands the thread a job (none on its way). */
void jd_worker_submit(struct jd_worker *w);
/* Waits until the job on its way, if any, has run. */
void jd_worker_wait(struct jd_worker *w);
/* A job was submitted and not yet waited for. */
int jd_worker_busy(const struct jd_worker *w);

#endif
