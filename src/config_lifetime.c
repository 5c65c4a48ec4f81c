/*
 * config_lifetime — what happens to a loaded jd_config afterwards: the
 * command-line overrides that replace values of the file, and freeing every
 * string and list the table says the config owns.
 */
#include "journeyd/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"

void jd_cfg_free_strings(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static void free_scope(void *base, const char *scope)
{
    for (size_t i = 0; i < jd_cfg_nkeys; i++) {
        const struct jd_cfg_key *k = &jd_cfg_keys[i];
        if (!jd_cfg_in_scope(k, scope))
            continue;
        char sub[128];
        switch (k->type) {
        case JD_CFG_SECTION:
            snprintf(sub, sizeof sub, "%s.", k->path);
            free_scope(base, sub);
            break;
        case JD_CFG_GROUPLIST: {
            char *arr = *FIELD(base, k->off, char *);
            size_t n = *FIELD(base, k->off2, size_t);
            snprintf(sub, sizeof sub, "%s[].", k->path);
            for (size_t j = 0; arr && j < n; j++)
                free_scope(arr + j * k->size, sub);
            free(arr);
            break;
        }
        case JD_CFG_STRING:
        case JD_CFG_PATH:
        case JD_CFG_NAME:
            free(*FIELD(base, k->off, char *));
            break;
        case JD_CFG_EXPR:
            free(FIELD(base, k->off, struct jd_rule_src)->expr);
            break;
        case JD_CFG_STRLIST:
            jd_cfg_free_strings(*FIELD(base, k->off, char **), *FIELD(base, k->off2, size_t));
            break;
        case JD_CFG_PROPS:
            jd_cfg_free_strings(*FIELD(base, k->off, char **), 2 * *FIELD(base, k->off2, size_t));
            break;
        case JD_CFG_PAYLOAD: {
            struct jd_payload_src *p = *FIELD(base, k->off, struct jd_payload_src *);
            size_t n = *FIELD(base, k->off2, size_t);
            for (size_t j = 0; p && j < n; j++) {
                free(p[j].key);
                free(p[j].expr.name);
                free(p[j].expr.expr);
            }
            free(p);
            break;
        }
        default:
            break;
        }
    }
}

void jd_config_destroy(struct jd_config *cfg)
{
    if (!cfg)
        return;
    free_scope(cfg, "");
    jd_cfg_free_strings(cfg->included, cfg->nincluded);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
}

/* ---- command-line overrides ---- */

int jd_config_set_brokers(struct jd_config *cfg, const char *brokers)
{
    if (!brokers || !brokers[0])
        return -1;
    jd_cfg_store_str(&cfg->brokers, brokers);
    return 0;
}

int jd_config_set_redis(struct jd_config *cfg, const char *hostport_list, char *errstr,
                        size_t errsize)
{
    char **list = NULL;
    size_t n = 0;
    const char *p = hostport_list ? hostport_list : "";
    do {
        size_t len = strcspn(p, ",");
        while (len && (*p == ' ' || *p == '\t'))
            p++, len--;
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        char item[300], host[256];
        int port;
        snprintf(item, sizeof item, "%.*s", (int)len, p);
        if (len >= sizeof item || jd_parse_hostport(item, host, sizeof host, &port) != 0) {
            snprintf(errstr, errsize, "bad Redis address '%s' (expected HOST:PORT[,HOST:PORT...])",
                     item);
            jd_cfg_free_strings(list, n);
            return -1;
        }
        list = jd_xrealloc(list, (n + 1) * sizeof *list);
        list[n++] = jd_strdup(item);
        p += strcspn(p, ",");
    } while (*p++ == ',');
    jd_cfg_free_strings(cfg->redis_addresses, cfg->nredis_addresses);
    cfg->redis_addresses = list;
    cfg->nredis_addresses = n;
    return 0;
}

int jd_config_set_metrics_port(struct jd_config *cfg, const char *port, char *errstr,
                               size_t errsize)
{
    char *end;
    errno = 0;
    long v = port && port[0] ? strtol(port, &end, 10) : -1;
    if (!port || !port[0] || errno || *end || v < 0 || v > 65535) {
        snprintf(errstr, errsize, "bad metrics port '%s' (expected 0..65535, 0: off)",
                 port ? port : "");
        return -1;
    }
    cfg->metrics_port = (int)v;
    return 0;
}
