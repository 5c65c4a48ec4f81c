/*
 * fetch_nudge — keeps librdkafka's fetcher going while journeyd drains a
 * backlog (src/fetch_nudge.c explains why it is needed).
 */
#ifndef JOURNEYD_FETCH_NUDGE_H
#define JOURNEYD_FETCH_NUDGE_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

struct jd_fetch_nudge;

/* Starts watching the consumer's queue (its own thread). NULL when the
 * thread cannot be started (journeyd runs without it: only slower). */
struct jd_fetch_nudge *jd_fetch_nudge_start(rd_kafka_t *consumer);
/* The average size of the messages consumed (key + value, bytes): the
 * fetcher's byte threshold is counted in them. Any thread. */
void jd_fetch_nudge_msg_size(struct jd_fetch_nudge *n, size_t avg);
/* Nudges sent so far. */
uint64_t jd_fetch_nudge_count(const struct jd_fetch_nudge *n);
/* Stops the thread (before the consumer is closed). NULL is fine. */
void jd_fetch_nudge_stop(struct jd_fetch_nudge *n);

#endif
