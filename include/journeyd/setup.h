/*
 * setup — what journeyd and journeyctl both do first: load the config,
 * apply the command-line overrides, compile the rules, and report every
 * error on stderr.
 */
#ifndef JOURNEYD_SETUP_H
#define JOURNEYD_SETUP_H

#include "journeyd/config.h"
#include "journeyd/rules.h"

/* Loads `path`, applies the overrides that are not NULL (-b, -r,
 * --metrics-port) and compiles the rules. Returns 0 with *cfg and *rs, or
 * 1 (the config-error exit code) after printing every error and
 * "PATH: N error(s)" on stderr. */
int jd_setup_load(const char *path, const char *brokers, const char *redis, const char *mport,
                  struct jd_config **cfg, struct jd_ruleset **rs);

/* The --check / `journeyctl check` success line on stdout. */
void jd_setup_print_ok(const char *path, const struct jd_ruleset *rs);

#endif
