/*
 * journeyd — entry point: command line, config and rules, signals, metrics
 * endpoint, then the engine (or processing.engines of them, src/engines.c)
 * until SIGTERM/SIGINT.
 *
 *   journeyd -c FILE [-b BROKERS] [-r HOST:PORT[,HOST:PORT...]] [--metrics-port N] [--check]
 *
 * Exit codes: 0 clean, 1 config error, 2 runtime failure.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/config.h"
#include "journeyd/engine.h"
#include "journeyd/engines.h"
#include "journeyd/log.h"
#include "journeyd/metrics.h"
#include "journeyd/rules.h"
#include "journeyd/setup.h"
#include "journeyd/util.h"

static jd_flag g_stop;
static jd_flag g_reload;

static void on_stop(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void on_hup(int sig)
{
    (void)sig;
    g_reload = 1;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: journeyd -c FILE [-b BROKERS] [-r HOST:PORT[,HOST:PORT...]]\n"
            "                [--metrics-port N] [--check]\n"
            "  -c, --config FILE     configuration file (libconfig)\n"
            "  -b, --brokers LIST    Kafka bootstrap servers (overrides kafka.brokers)\n"
            "  -r, --redis ADDRS     Redis address or cluster seeds (overrides redis.addresses)\n"
            "      --metrics-port N  port of /metrics, /healthz, /readyz (0 = off)\n"
            "      --check           validate the config and rules, print every error, exit\n"
            "      --config-reference  print the configuration reference (Markdown) and exit\n"
            "  -V, --version         print the version and exit\n"
            "signals: SIGTERM/SIGINT stop cleanly, SIGHUP reloads the rules\n"
            "exit codes: 0 clean, 1 config error, 2 runtime failure\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"brokers", required_argument, NULL, 'b'},
        {"redis", required_argument, NULL, 'r'},
        {"metrics-port", required_argument, NULL, 'm'},
        {"check", no_argument, NULL, 'k'},
        {"config-reference", no_argument, NULL, 'R'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *brokers = NULL, *redis = NULL, *mport = NULL;
    int check = 0, opt;
    while ((opt = getopt_long(argc, argv, "c:b:r:Vh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'b':
            brokers = optarg;
            break;
        case 'r':
            redis = optarg;
            break;
        case 'm':
            mport = optarg;
            break;
        case 'k':
            check = 1;
            break;
        case 'R':
            jd_config_write_reference(stdout);
            return 0;
        case 'V':
            printf("journeyd %s\n", JD_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (!path || optind < argc) {
        usage(stderr);
        return 1;
    }

    struct jd_config *cfg = NULL;
    struct jd_ruleset *rs = NULL;
    if (jd_setup_load(path, brokers, redis, mport, &cfg, &rs) != 0)
        return 1;
    char errstr[512];
    if (check) {
        jd_setup_print_ok(path, rs);
        jd_rules_destroy(rs);
        jd_config_destroy(cfg);
        return 0;
    }

    jd_log_setup(cfg->log_level, cfg->log_json);
    jd_malloc_tune(getenv("GLIBC_TUNABLES"), getenv("MALLOC_MMAP_THRESHOLD_"));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 2;
    struct jd_metrics *metrics = jd_metrics_new(JD_VERSION);
    struct jd_http *http = NULL;
    struct jd_engine *engine = NULL;
    if (cfg->metrics_port > 0) {
        http = jd_http_start(metrics, cfg->metrics_bind, cfg->metrics_port, errstr, sizeof errstr);
        if (!http) {
            jd_error("main", "metrics endpoint on port %d: %s", cfg->metrics_port, errstr);
            goto out;
        }
    }
    if (cfg->engines > 1) {
        jd_info("main", "journeyd %s starting %d engines (brokers %s, redis %s, metrics port %d)",
                JD_VERSION, cfg->engines, cfg->brokers, cfg->redis_addresses[0], cfg->metrics_port);
        rc = jd_engines_run(cfg, rs, metrics, &g_stop, &g_reload) == 0 ? 0 : 2;
        rs = NULL; /* (theirs) */
        goto out;
    }
    engine = jd_engine_new(cfg, rs, metrics, errstr, sizeof errstr);
    if (!engine) {
        jd_error("main", "%s", errstr);
        jd_rules_destroy(rs);
        goto out;
    }
    rs = NULL; /* now owned by the engine */
    jd_info("main", "journeyd %s started (brokers %s, redis %s, metrics port %d)", JD_VERSION,
            cfg->brokers, cfg->redis_addresses[0], cfg->metrics_port);
    rc = jd_engine_run(engine, &g_stop, &g_reload) == 0 ? 0 : 2;

out:
    jd_engine_destroy(engine);
    jd_http_stop(http);
    jd_metrics_destroy(metrics);
    jd_config_destroy(cfg);
    return rc;
}
