/*
 * state_internal — helpers shared by the state module's files (state.c,
 * state_codec.c, state_decode.c); not part of the public interface.
 */
#ifndef JOURNEYD_STATE_INTERNAL_H
#define JOURNEYD_STATE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "journeyd/state.h"

/* Well-known type and channel names are shared static strings, others are
 * heap copies; jd_state_unintern frees only the latter. */
char *jd_state_intern(const char *s, size_t len);
void jd_state_unintern(char *s);

/* Sets the count of a type (0..JD_COUNT_MAX), creating its entry when
 * absent. */
void jd_state_set_count(struct jd_customer *c, const char *type, size_t len, int64_t n);

/* Hash of an event id as kept in the duplicate ring (never 0). */
uint64_t jd_state_event_hash(const char *event_id);

#define JD_STATE_VERSION "v1"

/* 1 for the bytes the text form escapes (docs/state-format.md), and NUL. */
extern const unsigned char jd_state_escape[256];

/* Writes d as the state text form does (the shortest of %.15g, %.16g,
 * %.17g that reads back as d) to out (room for 32 bytes, no NUL); returns
 * the length. Exposed for the codec's tests. */
size_t jd_state_format_double(char *out, double d);

#endif
