/*
 * report — the program report as one self-contained HTML page (inline CSS
 * and SVG, no script, no network): the journey as a flow of stage
 * transitions, stage and segment sizes, triggers sent and suppressed by
 * reason, the uplift of each trigger with its interval, and the NPS.
 *
 * Owns nothing: renders a jd_program (read from Redis by insights.c) into a
 * buffer. Stages are drawn in reverse rule order: rules list the stages
 * first-match-wins, so the catch-all first stage of a journey comes last.
 */
#include "journeyd/report.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/outcomes.h"

static void esc(struct jd_buf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<':
            jd_buf_puts(b, "&lt;");
            break;
        case '>':
            jd_buf_puts(b, "&gt;");
            break;
        case '&':
            jd_buf_puts(b, "&amp;");
            break;
        case '"':
            jd_buf_puts(b, "&quot;");
            break;
        default:
            jd_buf_append(b, s, 1);
        }
    }
}

static const char *const sup_colors[JD_SUP_COUNT] = {"#f2a541", "#e4572e", "#a23b72", "#5d576b",
                                                     "#7d8597", "#c9184a", "#b08968", "#adb5bd"};

static const char CSS[] =
    "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;"
    "color:#1f2933}"
    "header{background:#1f2a44;color:#fff;padding:18px 32px}"
    "header h1{margin:0;font-size:24px}header p{margin:4px 0 0;color:#c7d0e0;font-size:13px}"
    "main{padding:16px 32px;max-width:1320px}"
    ".cards{display:flex;gap:14px;flex-wrap:wrap;margin-bottom:14px}"
    ".card{background:#fff;border-radius:8px;padding:12px 18px;min-width:150px;"
    "box-shadow:0 1px 3px rgba(0,0,0,.12)}"
    ".card .v{font-size:28px;font-weight:bold}.card .l{font-size:12px;color:#616e7c}"
    "section{background:#fff;border-radius:8px;padding:12px 18px;margin-bottom:14px;"
    "box-shadow:0 1px 3px rgba(0,0,0,.12)}"
    "section h2{font-size:17px;margin:0 0 2px}section p.h{margin:0 0 8px;color:#616e7c;"
    "font-size:12px}"
    ".row{display:flex;gap:14px}.row section{flex:1}"
    "svg text{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif}"
    "table{border-collapse:collapse;font-size:12px;margin-top:6px}"
    "td,th{padding:3px 9px;border-bottom:1px solid #e4e7eb;text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    ".legend span{display:inline-block;margin-right:12px;font-size:12px}"
    ".legend i{display:inline-block;width:11px;height:11px;margin-right:4px;"
    "vertical-align:-1px;border-radius:2px}";

static int64_t max64(const int64_t *v, size_t n)
{
    int64_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

/* Horizontal bars: one row per label. */
static void bars(struct jd_buf *b, size_t n, const char *(*label)(const void *, size_t),
                 const void *ud, const int64_t *v, const char *color, int width)
{
    int rowh = 26, lw = 130, h = (int)n * rowh + 8;
    int64_t m = max64(v, n);
    jd_buf_printf(b, "<svg width=\"%d\" height=\"%d\" role=\"img\">", width, h);
    for (size_t i = 0; i < n; i++) {
        int y = 4 + (int)i * rowh;
        double w = m > 0 ? (double)(width - lw - 70) * (double)v[i] / (double)m : 0;
        if (w < 0)
            w = 0; /* a count below zero is a counting error, shown as its number */
        jd_buf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" font-size=\"13\">", lw - 8,
                      y + 16);
        esc(b, label(ud, i));
        jd_buf_printf(b,
                      "</text><rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" rx=\"3\" "
                      "fill=\"%s\"/><text x=\"%.1f\" y=\"%d\" font-size=\"12\">%" PRId64 "</text>",
                      lw, y + 2, w < 1 && v[i] > 0 ? 1 : w, rowh - 8, color, lw + w + 6, y + 16,
                      v[i]);
    }
    jd_buf_puts(b, "</svg>");
}

static const char *stage_label(const void *ud, size_t i)
{
    const struct jd_ruleset *rs = ud;
    size_t n = jd_rules_nstages(rs);
    return jd_rules_stage_name(rs, n - 1 - i); /* journey order */
}

static const char *segment_label(const void *ud, size_t i)
{
    return jd_rules_segment_name(ud, i);
}

/* The journey: stages as boxes left to right (plus "new customers" first),
 * transitions as arcs whose width follows their count; forward moves above,
 * moves back (regressions) below. */
static void flow(struct jd_buf *b, const struct jd_ruleset *rs, const struct jd_program *p)
{
    size_t ns = p->nstages, nn = ns + 1;
    int width = 1250, boxw = 128, boxh = 56, y0 = 250;
    double gap = nn > 1 ? (double)(width - 40 - boxw) / (double)(nn - 1) : 0;
    int64_t maxt = max64(p->transition, (ns + 1) * ns);
    int back = 0; /* anything moved back (drawn below the boxes)? */
    for (size_t f = 1; f <= ns; f++)
        for (size_t t = 0; t < ns; t++)
            if (p->transition[f * ns + t] > 0 && ns - t < ns - (f - 1))
                back = 1;
    int height = back ? 500 : y0 + boxh / 2 + 40;
    int64_t total = 0;
    for (size_t i = 0; i < ns; i++)
        total += p->stage[i];
    /* node k: 0 = new customers, k >= 1 = stage ns - k (journey order) */
    jd_buf_printf(b,
                  "<svg width=\"%d\" height=\"%d\" role=\"img\"><defs>"
                  "<marker id=\"af\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" "
                  "markerWidth=\"12\" markerHeight=\"12\" markerUnits=\"userSpaceOnUse\" "
                  "orient=\"auto-start-reverse\"><path d=\"M0,0L10,5L0,10z\" "
                  "fill=\"#3a7d44\"/></marker>"
                  "<marker id=\"ab\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" "
                  "markerWidth=\"12\" markerHeight=\"12\" markerUnits=\"userSpaceOnUse\" "
                  "orient=\"auto-start-reverse\"><path d=\"M0,0L10,5L0,10z\" "
                  "fill=\"#d1603d\"/></marker></defs>",
                  width, height);
    jd_buf_printf(b,
                  "<text x=\"10\" y=\"18\" font-size=\"12\" fill=\"#3a7d44\">above: moves "
                  "forward</text><text x=\"10\" y=\"%d\" font-size=\"12\" fill=\"#d1603d\">"
                  "%s</text>",
                  height - 8, back ? "below: moves back" : "nobody moved back a stage");
    for (size_t f = 0; f <= ns; f++) {
        for (size_t t = 0; t < ns; t++) {
            int64_t v = p->transition[f * ns + t];
            if (v <= 0)
                continue;
            size_t kf = f == 0 ? 0 : ns - (f - 1), kt = ns - t;
            if (kf == kt)
                continue;
            double x1 = 20 + boxw / 2.0 + gap * (double)kf, x2 = 20 + boxw / 2.0 + gap * (double)kt;
            int fwd = kt > kf;
            double span = fabs(x2 - x1), hgt = 40 + span * 0.28;
            if (hgt > 205)
                hgt = 205;
            double sw = 2 + 16.0 * (double)v / (double)(maxt ? maxt : 1);
            double ys = fwd ? y0 - boxh / 2.0 : y0 + boxh / 2.0;
            double yc = fwd ? ys - hgt : ys + hgt;
            const char *col = fwd ? "#3a7d44" : "#d1603d";
            jd_buf_printf(b,
                          "<path d=\"M%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"none\" "
                          "stroke=\"%s\" stroke-opacity=\"0.55\" stroke-width=\"%.1f\" "
                          "marker-end=\"url(#%s)\"><title>",
                          x1 + (fwd ? 8 : -8), ys, x1, yc, x2, yc, x2 - (fwd ? 8 : -8), ys, col, sw,
                          fwd ? "af" : "ab");
            esc(b, f ? jd_rules_stage_name(rs, f - 1) : "new");
            jd_buf_puts(b, " to ");
            esc(b, jd_rules_stage_name(rs, t));
            jd_buf_printf(b, ": %" PRId64 "</title></path>", v);
            /* the count at the arc's apex (3/4 of the control offset) */
            double ly = ys + (yc - ys) * 0.75 + (fwd ? -4 : 12);
            jd_buf_printf(b,
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\" "
                          "fill=\"%s\" font-weight=\"bold\">%" PRId64 "</text>",
                          (x1 + x2) / 2, ly, col, v);
        }
    }
    for (size_t k = 0; k < nn; k++) {
        double x = 20 + gap * (double)k;
        const char *name = k == 0 ? "new customers" : jd_rules_stage_name(rs, ns - k);
        int64_t v = k == 0 ? 0 : p->stage[ns - k];
        double share = total > 0 ? (double)v / (double)total : 0;
        jd_buf_printf(b,
                      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" rx=\"7\" "
                      "fill=\"%s\" stroke=\"#1f2a44\" stroke-width=\"1.2\"/>",
                      x, y0 - boxh / 2.0, boxw, boxh, k == 0 ? "#eef0f3" : "#e3ecfa");
        if (k > 0)
            jd_buf_printf(b,
                          "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"6\" rx=\"2\" "
                          "fill=\"#3b6fd4\"/>",
                          x + 6, y0 + boxh / 2.0 - 11, (boxw - 12) * share);
        jd_buf_printf(b,
                      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\" "
                      "font-weight=\"bold\">",
                      x + boxw / 2.0, y0 - 6.0);
        esc(b, name);
        jd_buf_puts(b, "</text>");
        if (k > 0)
            jd_buf_printf(b,
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">"
                          "%" PRId64 " (%.0f%%)</text>",
                          x + boxw / 2.0, y0 + 11.0, v, share * 100);
    }
    jd_buf_puts(b, "</svg>");
}

static void triggers_chart(struct jd_buf *b, const struct jd_ruleset *rs,
                           const struct jd_program *p)
{
    size_t nt = p->ntriggers;
    int rowh = 30, lw = 190, width = 1250, h = (int)nt * rowh + 10;
    int64_t m = 0;
    for (size_t t = 0; t < nt; t++) {
        int64_t sum = p->sent[t];
        for (int r = 0; r < JD_SUP_COUNT; r++)
            sum += p->suppressed[t * JD_SUP_COUNT + r];
        if (sum > m)
            m = sum;
    }
    jd_buf_puts(b, "<div class=\"legend\"><span><i style=\"background:#3b6fd4\"></i>sent</span>");
    for (int r = 0; r < JD_SUP_COUNT; r++) {
        int64_t any = 0;
        for (size_t t = 0; t < nt; t++)
            any += p->suppressed[t * JD_SUP_COUNT + r];
        if (any > 0)
            jd_buf_printf(b, "<span><i style=\"background:%s\"></i>suppressed: %s</span>",
                          sup_colors[r], jd_suppress_reason_name((enum jd_suppress_reason)r));
    }
    jd_buf_printf(b, "</div><svg width=\"%d\" height=\"%d\" role=\"img\">", width, h);
    double scale = m > 0 ? (double)(width - lw - 240) / (double)m : 0;
    for (size_t t = 0; t < nt; t++) {
        int y = 6 + (int)t * rowh;
        jd_buf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" font-size=\"13\">", lw - 8,
                      y + 16);
        esc(b, jd_rules_trigger(rs, t)->on.name);
        jd_buf_puts(b, "</text>");
        double x = lw;
        int64_t sup = 0;
        for (int r = -1; r < JD_SUP_COUNT; r++) {
            int64_t v = r < 0 ? p->sent[t] : p->suppressed[t * JD_SUP_COUNT + r];
            if (v <= 0)
                continue;
            if (r >= 0)
                sup += v;
            double w = (double)v * scale;
            jd_buf_printf(b,
                          "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\">"
                          "<title>%s: %" PRId64 "</title></rect>",
                          x, y + 2, w < 1 ? 1 : w, rowh - 10, r < 0 ? "#3b6fd4" : sup_colors[r],
                          r < 0 ? "sent" : jd_suppress_reason_name((enum jd_suppress_reason)r), v);
            x += w < 1 ? 1 : w;
        }
        jd_buf_printf(b,
                      "<text x=\"%.1f\" y=\"%d\" font-size=\"12\">%" PRId64 " sent, %" PRId64
                      " suppressed</text>",
                      x + 8, y + 16, p->sent[t], sup);
    }
    jd_buf_puts(b, "</svg>");
}

static void pct(struct jd_buf *b, double v)
{
    if (isnan(v))
        jd_buf_puts(b, "–");
    else
        jd_buf_printf(b, "%.1f%%", v * 100);
}

static void pp(struct jd_buf *b, double v)
{
    if (isnan(v))
        jd_buf_puts(b, "–");
    else
        jd_buf_printf(b, "%+.1f pp", v * 100);
}

/* Uplift per trigger with a goal: dot (uplift) and whisker (95 % interval)
 * on a common axis through zero, then the numbers. */
static void uplift_chart(struct jd_buf *b, const struct jd_ruleset *rs, const struct jd_program *p)
{
    size_t nt = p->ntriggers, rows = 0;
    double lo = -0.1, hi = 0.1;
    for (size_t t = 0; t < nt; t++) {
        if (!jd_rules_trigger(rs, t)->goal)
            continue;
        rows++;
        const int64_t *o = p->outcome + t * JD_OUT_COUNT;
        struct jd_uplift u;
        jd_uplift_compute(o[JD_OUT_TREATED], o[JD_OUT_TREATED_CONVERTED], o[JD_OUT_CONTROL],
                          o[JD_OUT_CONTROL_CONVERTED], &u);
        if (!isnan(u.ci_low) && u.ci_low < lo)
            lo = u.ci_low;
        if (!isnan(u.ci_high) && u.ci_high > hi)
            hi = u.ci_high;
    }
    if (rows == 0) {
        jd_buf_puts(b, "<p>No trigger names a conversion goal (<code>goal</code> + "
                       "<code>goal_window</code> in the trigger rule).</p>");
        return;
    }
    lo = floor(lo * 10) / 10;
    hi = ceil(hi * 10) / 10;
    int width = 1250, lw = 190, plotw = 520, rowh = 34, h = (int)rows * rowh + 40;
    double sx = plotw / (hi - lo);
#define XOF(v) (lw + ((v)-lo) * sx)
    jd_buf_printf(b, "<svg width=\"%d\" height=\"%d\" role=\"img\">", width, h);
    for (double g = lo; g <= hi + 1e-9; g += 0.1) {
        double x = XOF(g);
        int zero = fabs(g) < 1e-9;
        jd_buf_printf(b,
                      "<line x1=\"%.1f\" y1=\"4\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\" "
                      "stroke-width=\"%s\"/><text x=\"%.1f\" y=\"%d\" font-size=\"11\" "
                      "text-anchor=\"middle\" fill=\"#616e7c\">%+.0f</text>",
                      x, x, h - 22, zero ? "#1f2933" : "#e4e7eb", zero ? "1.5" : "1", x, h - 8,
                      zero ? 0.0 : g * 100);
    }
    jd_buf_printf(b,
                  "<text x=\"%d\" y=\"%d\" font-size=\"11\" fill=\"#616e7c\" "
                  "text-anchor=\"end\">uplift (pp)</text>",
                  lw - 24, h - 8);
    size_t row = 0;
    for (size_t t = 0; t < nt; t++) {
        const struct jd_trigger_src *ts = jd_rules_trigger(rs, t);
        if (!ts->goal)
            continue;
        const int64_t *o = p->outcome + t * JD_OUT_COUNT;
        struct jd_uplift u;
        jd_uplift_compute(o[JD_OUT_TREATED], o[JD_OUT_TREATED_CONVERTED], o[JD_OUT_CONTROL],
                          o[JD_OUT_CONTROL_CONVERTED], &u);
        double y = 8 + (double)row * rowh + rowh / 2.0;
        jd_buf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" font-size=\"13\">", lw - 8,
                      y + 4);
        esc(b, ts->on.name);
        jd_buf_puts(b, "</text>");
        if (!isnan(u.uplift)) {
            const char *col = u.ci_low > 0 ? "#3a7d44" : u.ci_high < 0 ? "#d1603d" : "#3b6fd4";
            jd_buf_printf(b,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                          "stroke-width=\"3\"/><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
                          "y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/><line x1=\"%.1f\" "
                          "y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>"
                          "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"6\" fill=\"%s\"/>",
                          XOF(u.ci_low), y, XOF(u.ci_high), y, col, XOF(u.ci_low), y - 7,
                          XOF(u.ci_low), y + 7, col, XOF(u.ci_high), y - 7, XOF(u.ci_high), y + 7,
                          col, XOF(u.uplift), y, col);
        } else {
            jd_buf_printf(b,
                          "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#616e7c\" "
                          "text-anchor=\"middle\">%s</text>",
                          XOF(0), y + 4,
                          o[JD_OUT_CONTROL] == 0 ? "no control group yet (set holdout)"
                                                 : "no treated decisions yet");
        }
        jd_buf_printf(b, "<text x=\"%d\" y=\"%.1f\" font-size=\"12\">", lw + plotw + 12, y + 4);
        pp(b, u.uplift);
        if (!isnan(u.uplift)) {
            jd_buf_puts(b, " [");
            pp(b, u.ci_low);
            jd_buf_puts(b, ", ");
            pp(b, u.ci_high);
            jd_buf_puts(b, "]");
        }
        jd_buf_printf(b,
                      " · treated %" PRId64 "/%" PRId64 " · control %" PRId64 "/%" PRId64 "</text>",
                      o[JD_OUT_TREATED_CONVERTED], o[JD_OUT_TREATED], o[JD_OUT_CONTROL_CONVERTED],
                      o[JD_OUT_CONTROL]);
        row++;
    }
#undef XOF
    jd_buf_puts(b, "</svg><table><tr><th>trigger</th><th>goal</th><th>treated</th>"
                   "<th>converted</th><th>rate</th><th>control</th><th>converted</th>"
                   "<th>rate</th><th>uplift</th><th>95% interval</th><th>open (t/c)</th></tr>");
    for (size_t t = 0; t < nt; t++) {
        const struct jd_trigger_src *ts = jd_rules_trigger(rs, t);
        if (!ts->goal)
            continue;
        const int64_t *o = p->outcome + t * JD_OUT_COUNT;
        struct jd_uplift u;
        jd_uplift_compute(o[JD_OUT_TREATED], o[JD_OUT_TREATED_CONVERTED], o[JD_OUT_CONTROL],
                          o[JD_OUT_CONTROL_CONVERTED], &u);
        char win[32];
        jd_buf_puts(b, "<tr><td>");
        esc(b, ts->on.name);
        jd_buf_puts(b, "</td><td>");
        esc(b, ts->goal);
        jd_buf_printf(b, " in %s</td><td>%" PRId64 "</td><td>%" PRId64 "</td><td>",
                      jd_format_duration(ts->goal_window_ms, win, sizeof win), o[JD_OUT_TREATED],
                      o[JD_OUT_TREATED_CONVERTED]);
        pct(b, u.treated_rate);
        jd_buf_printf(b, "</td><td>%" PRId64 "</td><td>%" PRId64 "</td><td>", o[JD_OUT_CONTROL],
                      o[JD_OUT_CONTROL_CONVERTED]);
        pct(b, u.control_rate);
        jd_buf_puts(b, "</td><td>");
        pp(b, u.uplift);
        jd_buf_puts(b, "</td><td>");
        if (!isnan(u.uplift)) {
            pp(b, u.ci_low);
            jd_buf_puts(b, " to ");
            pp(b, u.ci_high);
        } else {
            jd_buf_puts(b, "–");
        }
        jd_buf_printf(b, "</td><td>%" PRId64 " / %" PRId64 "</td></tr>", o[JD_OUT_TREATED_OPEN],
                      o[JD_OUT_CONTROL_OPEN]);
    }
    jd_buf_puts(b, "</table>");
}

static void nps_chart(struct jd_buf *b, const struct jd_program *p)
{
    int64_t pro = p->nps[JD_NPS_PROMOTER], pas = p->nps[JD_NPS_PASSIVE],
            det = p->nps[JD_NPS_DETRACTOR], n = pro + pas + det;
    if (n == 0) {
        jd_buf_puts(b, "<p>No feedback scores yet.</p>");
        return;
    }
    int width = 700;
    const struct {
        const char *name, *color;
        int64_t v;
    } g[3] = {{"detractors 0–6", "#d1603d", det},
              {"passives 7–8", "#adb5bd", pas},
              {"promoters 9–10", "#3a7d44", pro}};
    jd_buf_printf(b, "<svg width=\"%d\" height=\"34\" role=\"img\">", width);
    double x = 0;
    for (int i = 0; i < 3; i++) {
        double w = (double)width * (double)g[i].v / (double)n;
        if (w <= 0)
            continue;
        jd_buf_printf(b,
                      "<rect x=\"%.1f\" y=\"2\" width=\"%.1f\" height=\"30\" fill=\"%s\">"
                      "<title>%s: %" PRId64 "</title></rect>",
                      x, w, g[i].color, g[i].name, g[i].v);
        x += w;
    }
    jd_buf_puts(b, "</svg><div class=\"legend\">");
    for (int i = 0; i < 3; i++)
        jd_buf_printf(b, "<span><i style=\"background:%s\"></i>%s: %" PRId64 " (%.0f%%)</span>",
                      g[i].color, g[i].name, g[i].v, 100.0 * (double)g[i].v / (double)n);
    jd_buf_printf(b,
                  "<span><b>NPS %+.0f</b> = %% promoters − %% detractors, over %" PRId64
                  " customers</span></div>",
                  100.0 * (double)(pro - det) / (double)n, n);
}

void jd_report_html(const struct jd_ruleset *rs, const struct jd_program *p, const char *title,
                    const char *generated, struct jd_buf *b)
{
    int64_t customers = 0, sent = 0, sup = 0;
    for (size_t i = 0; i < p->nstages; i++)
        customers += p->stage[i];
    for (size_t t = 0; t < p->ntriggers; t++) {
        sent += p->sent[t];
        for (int r = 0; r < JD_SUP_COUNT; r++)
            sup += p->suppressed[t * JD_SUP_COUNT + r];
    }
    int64_t pro = p->nps[JD_NPS_PROMOTER], det = p->nps[JD_NPS_DETRACTOR];
    int64_t resp = pro + det + p->nps[JD_NPS_PASSIVE];

    jd_buf_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                   "<meta name=\"viewport\" content=\"width=device-width\"><title>");
    esc(b, title);
    jd_buf_printf(b, "</title><style>%s</style></head><body><header><h1>", CSS);
    esc(b, title);
    jd_buf_puts(b, "</h1><p>generated ");
    esc(b, generated);
    jd_buf_printf(b, " · rules %s · %zu partition(s) read</p></header><main>", jd_rules_version(rs),
                  p->npartitions);

    jd_buf_printf(b,
                  "<div class=\"cards\"><div class=\"card\"><div class=\"v\">%" PRId64
                  "</div><div class=\"l\">customers</div></div>"
                  "<div class=\"card\"><div class=\"v\">%" PRId64
                  "</div><div class=\"l\">triggers sent</div></div>"
                  "<div class=\"card\"><div class=\"v\">%" PRId64
                  "</div><div class=\"l\">triggers suppressed</div></div>"
                  "<div class=\"card\"><div class=\"v\">",
                  customers, sent, sup);
    if (resp > 0)
        jd_buf_printf(b, "%+.0f", 100.0 * (double)(pro - det) / (double)resp);
    else
        jd_buf_puts(b, "–");
    jd_buf_printf(b,
                  "</div><div class=\"l\">NPS (%" PRId64 " customers with a score)</div></div>"
                  "</div>",
                  resp);

    jd_buf_puts(b, "<section><h2>The journey</h2><p class=\"h\">Customers per stage (boxes) and "
                   "how many moved between stages (arcs, width by count) since counting "
                   "began.</p>");
    flow(b, rs, p);
    jd_buf_puts(b, "</section><div class=\"row\"><section><h2>Stage sizes</h2>"
                   "<p class=\"h\">Customers in each journey stage now.</p>");
    int64_t *rev = jd_xcalloc(p->nstages + 1, sizeof *rev);
    for (size_t i = 0; i < p->nstages; i++)
        rev[i] = p->stage[p->nstages - 1 - i];
    bars(b, p->nstages, stage_label, rs, rev, "#3b6fd4", 600);
    free(rev);
    jd_buf_puts(b, "</section><section><h2>Segment sizes</h2><p class=\"h\">Members of each "
                   "segment now (a customer may be in several).</p>");
    bars(b, p->nsegments, segment_label, rs, p->segment, "#7b5ea7", 600);
    jd_buf_puts(b, "</section></div><section><h2>Triggers sent and suppressed</h2>"
                   "<p class=\"h\">Every decision of every trigger rule: sent, or held back "
                   "by the contact policy and why.</p>");
    triggers_chart(b, rs, p);
    jd_buf_puts(b, "</section><section><h2>What the triggers achieve</h2><p class=\"h\">"
                   "Conversion to each trigger's goal within its window: customers who got the "
                   "trigger (treated) against the holdout group (control). Dot: absolute "
                   "uplift; whisker: 95% interval (Newcombe hybrid score). Green: the interval "
                   "is above zero.</p>");
    uplift_chart(b, rs, p);
    jd_buf_puts(b, "</section><section><h2>How customers feel (NPS)</h2><p class=\"h\">"
                   "Customers by the group of their latest feedback score.</p>");
    nps_chart(b, p);
    jd_buf_puts(b, "</section></main></body></html>\n");
}
