/*
 * setup — the config-and-rules start shared by the programs in daemon/.
 */
#include "journeyd/setup.h"

#include <stdio.h>

int jd_setup_load(const char *path, const char *brokers, const char *redis, const char *mport,
                  struct jd_config **cfgp, struct jd_ruleset **rsp)
{
    struct jd_errors errs;
    jd_errors_init(&errs);
    struct jd_ruleset *rs = NULL;
    struct jd_config *cfg = jd_config_load(path, &errs);
    char errstr[512];
    if (cfg) {
        if (brokers)
            (void)jd_config_set_brokers(cfg, brokers);
        if (redis && jd_config_set_redis(cfg, redis, errstr, sizeof errstr) != 0)
            jd_errors_add(&errs, NULL, 0, 0, "-r %s: %s", redis, errstr);
        if (mport && jd_config_set_metrics_port(cfg, mport, errstr, sizeof errstr) != 0)
            jd_errors_add(&errs, NULL, 0, 0, "--metrics-port %s: %s", mport, errstr);
        if (jd_rules_compile(&cfg->rules, &rs, &errs) != 0)
            rs = NULL;
    }
    if (!cfg || !rs || errs.n > 0) {
        jd_errors_print(&errs, stderr);
        fprintf(stderr, "%s: %zu error(s)\n", path, errs.n);
        jd_errors_free(&errs);
        if (rs)
            jd_rules_destroy(rs);
        jd_config_destroy(cfg);
        return 1;
    }
    jd_errors_free(&errs);
    *cfgp = cfg;
    *rsp = rs;
    return 0;
}

void jd_setup_print_ok(const char *path, const struct jd_ruleset *rs)
{
    printf("%s: OK (%zu stages, %zu segments, %zu triggers, rule version %s)\n", path,
           jd_rules_nstages(rs), jd_rules_nsegments(rs), jd_rules_ntriggers(rs),
           jd_rules_version(rs));
}
