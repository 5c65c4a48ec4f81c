/*
 * tz — local time in IANA time zones without touching the process's TZ:
 * the TZif files of /usr/share/zoneinfo are parsed here (version 1–4, with
 * the POSIX TZ rule of the footer for instants past the last transition)
 * and kept in a cache per zone name owned by a jd_tzdb. Nothing is global,
 * so two databases can be used from two threads; one database is used by
 * one thread at a time.
 */
#ifndef JOURNEYD_TZ_H
#define JOURNEYD_TZ_H

#include <stddef.h>
#include <stdint.h>

struct jd_tzdb;
struct jd_tz;

/* dir: the zoneinfo directory; NULL: /usr/share/zoneinfo. */
struct jd_tzdb *jd_tzdb_new(const char *dir);
void jd_tzdb_destroy(struct jd_tzdb *db);

/* The zone called `name` ("Europe/Paris", "UTC"), loaded on first use and
 * cached. NULL when the name is not a zone (unsafe names — absolute, with
 * "..", odd bytes — are refused without touching the file system). */
const struct jd_tz *jd_tzdb_get(struct jd_tzdb *db, const char *name);

const char *jd_tz_name(const struct jd_tz *z);

/* Offset of local time from UTC at instant t (seconds since the epoch), in
 * seconds east of Greenwich (Paris in summer: 7200). */
int32_t jd_tz_offset(const struct jd_tz *z, int64_t t);

/* The first instant after t (seconds) at which the offset may change;
 * INT64_MAX when never. */
int64_t jd_tz_next_transition(const struct jd_tz *z, int64_t t);

/* The earliest instant (ms) at or after from_ms at which the local clock
 * reads local_ms (ms of local wall-clock time since the local epoch) or has
 * jumped past it: inside a DST gap that is the end of the gap, for a time
 * that occurs twice its first occurrence. */
int64_t jd_tz_local_to_utc_ms(const struct jd_tz *z, int64_t from_ms, int64_t local_ms);

#endif
