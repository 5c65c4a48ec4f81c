/*
 * log — one line per event of note, to stderr: time, level, module, message,
 * as text or as JSON (log.format = "json"). Never a line per ordinary event.
 */
#ifndef JOURNEYD_LOG_H
#define JOURNEYD_LOG_H

enum jd_log_level { JD_LOG_DEBUG = 0, JD_LOG_INFO, JD_LOG_WARN, JD_LOG_ERROR };

void jd_log_setup(enum jd_log_level level, int json);
/* Names the calling thread in its lines ("[TAG] " before the message, or
 * "engine": TAG in JSON) until set again; NULL: none. The string is copied
 * (at most 15 bytes). processing.engines > 1 tags each engine's thread. */
void jd_log_set_tag(const char *tag);
int jd_log_level_parse(const char *s, enum jd_log_level *out);
int jd_log_enabled(enum jd_log_level level);
void jd_log(enum jd_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define jd_debug(mod, ...) jd_log(JD_LOG_DEBUG, mod, __VA_ARGS__)
#define jd_info(mod, ...) jd_log(JD_LOG_INFO, mod, __VA_ARGS__)
#define jd_warn(mod, ...) jd_log(JD_LOG_WARN, mod, __VA_ARGS__)
#define jd_error(mod, ...) jd_log(JD_LOG_ERROR, mod, __VA_ARGS__)

#endif
