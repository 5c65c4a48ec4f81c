/*
 * http — the metrics and health endpoints, served by libmicrohttpd on its
 * own internal polling thread:
 *   GET /metrics  Prometheus text format 0.0.4 (a snapshot of jd_metrics)
 *   GET /healthz  200 "ok" while the loop's heartbeat is recent, else 503
 *   GET /readyz   200 "ready" or 503 naming the failing readiness inputs
 * Owns the MHD daemon; reads jd_metrics only through its thread-safe
 * functions. One thread serves every request, so requests never overlap.
 */
#include "journeyd/log.h"
#include "journeyd/metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct jd_http {
    struct MHD_Daemon *daemon;
    struct jd_metrics *m;
    int port;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *ctype,
                             struct jd_buf *body)
{
    /* The buffer's memory passes to MHD, which frees it with free(). */
    jd_buf_cstr(body);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(body->len, body->data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        jd_buf_free(body);
        return MHD_NO;
    }
    jd_buf_init(body);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct jd_http *h = cls;
    struct jd_buf body;
    jd_buf_init(&body);
    const char *text = "text/plain; charset=utf-8";

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        jd_buf_puts(&body, "method not allowed\n");
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text, &body);
    }
    if (strcmp(url, "/metrics") == 0) {
        jd_buf_reserve(&body, 16384);
        jd_metrics_render(h->m, &body);
        return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", &body);
    }
    if (strcmp(url, "/healthz") == 0) {
        double age;
        if (jd_metrics_alive(h->m, &age)) {
            jd_buf_puts(&body, "ok\n");
            return reply(conn, MHD_HTTP_OK, text, &body);
        }
        jd_buf_printf(&body, "stalled: last heartbeat %.1f s ago\n", age);
        return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text, &body);
    }
    if (strcmp(url, "/readyz") == 0) {
        if (jd_metrics_ready(h->m, &body)) {
            jd_buf_puts(&body, "ready\n");
            return reply(conn, MHD_HTTP_OK, text, &body);
        }
        return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text, &body);
    }
    jd_buf_puts(&body, "not found; try /metrics, /healthz or /readyz\n");
    return reply(conn, MHD_HTTP_NOT_FOUND, text, &body);
}

struct jd_http *jd_http_start(struct jd_metrics *m, const char *bind, int port, char *errstr,
                              size_t errsize)
{
    struct addrinfo hints, *ai = NULL;
    struct jd_http *h = NULL;
    char portstr[16];

    if (errsize)
        errstr[0] = '\0';
    if (port == 0)
        return NULL; /* metrics disabled */
    if (port > 65535) {
        snprintf(errstr, errsize, "metrics port %d out of range", port);
        return NULL;
    }
    snprintf(portstr, sizeof(portstr), "%d", port < 0 ? 0 : port);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    int gai = getaddrinfo(bind && *bind ? bind : NULL, portstr, &hints, &ai);
    if (gai != 0) {
        snprintf(errstr, errsize, "metrics bind address '%s': %s", bind ? bind : "",
                 gai_strerror(gai));
        goto err;
    }

    h = jd_xcalloc(1, sizeof(*h));
    h->m = m;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Scrapes are small and few: a handful of connections and a short
     * timeout keep a stuck client from holding the thread. */
    h->daemon =
        MHD_start_daemon(flags, (uint16_t)(port < 0 ? 0 : port), NULL, NULL, handle, h,
                         MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(errstr, errsize, "cannot listen on %s port %d for metrics (in use?)",
                 bind && *bind ? bind : "*", port);
        goto err;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : port;
    freeaddrinfo(ai);
    jd_info("http", "serving /metrics, /healthz, /readyz on %s port %d", bind && *bind ? bind : "*",
            h->port);
    return h;
err:
    if (ai)
        freeaddrinfo(ai);
    free(h);
    return NULL;
}

int jd_http_port(const struct jd_http *h)
{
    return h ? h->port : 0;
}

void jd_http_stop(struct jd_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    free(h);
}
