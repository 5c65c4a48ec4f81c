/*
 * report — the program report (journeyctl report --html): one
 * self-contained HTML page, inline CSS and SVG, no script, no network.
 */
#ifndef JOURNEYD_REPORT_H
#define JOURNEYD_REPORT_H

#include "journeyd/insights.h"
#include "journeyd/rules.h"
#include "journeyd/util.h"

/* Renders `p` (read under `rs`) into b. */
void jd_report_html(const struct jd_ruleset *rs, const struct jd_program *p, const char *title,
                    const char *generated, struct jd_buf *b);

#endif
