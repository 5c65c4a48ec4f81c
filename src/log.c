/*
 * log — formatted lines on stderr. One mutex-free write(2) per line so that
 * lines from the HTTP thread and the main loop never interleave.
 */
#include "journeyd/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static enum jd_log_level g_level = JD_LOG_INFO;
static int g_json;
static _Thread_local char t_tag[16]; /* jd_log_set_tag; "" for none */

static const char *level_names[] = {"debug", "info", "warn", "error"};

void jd_log_setup(enum jd_log_level level, int json)
{
    g_level = level;
    g_json = json;
}

void jd_log_set_tag(const char *tag)
{
    snprintf(t_tag, sizeof t_tag, "%s", tag ? tag : "");
}

int jd_log_level_parse(const char *s, enum jd_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum jd_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = JD_LOG_WARN;
        return 0;
    }
    return -1;
}

int jd_log_enabled(enum jd_log_level level)
{
    return level >= g_level;
}

static size_t json_escape(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p && o + 7 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)*p;
        } else if (*p < 0x20) {
            o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", *p);
        } else {
            dst[o++] = (char)*p;
        }
    }
    dst[o] = '\0';
    return o;
}

void jd_log(enum jd_log_level level, const char *module, const char *fmt, ...)
{
    if (level < g_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%03ldZ", ts.tv_nsec / 1000000);

    char line[4800];
    int n;
    if (g_json) {
        char esc[4200];
        json_escape(esc, sizeof esc, msg);
        if (t_tag[0])
            n = snprintf(line, sizeof line,
                         "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"engine\":\"%s\","
                         "\"msg\":\"%s\"}\n",
                         when, level_names[level], module, t_tag, esc);
        else
            n = snprintf(line, sizeof line,
                         "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"%s\"}\n",
                         when, level_names[level], module, esc);
    } else if (t_tag[0]) {
        n = snprintf(line, sizeof line, "%s %-5s %-8s [%s] %s\n", when, level_names[level], module,
                     t_tag, msg);
    } else {
        n = snprintf(line, sizeof line, "%s %-5s %-8s %s\n", when, level_names[level], module, msg);
    }
    if (n > (int)sizeof line - 1)
        n = (int)sizeof line - 1;
    ssize_t r = write(STDERR_FILENO, line, (size_t)n);
    (void)r;
}
