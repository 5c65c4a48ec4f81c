/*
 * fuzz_rules — libFuzzer target on the rule compiler (and, when the input
 * compiles, the evaluator). The input is split at newlines into a stage, a
 * segment, a trigger `on` and a payload expression; whatever compiles is then
 * evaluated for one customer on a few events and a timer, and explained.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/rules.h"
#include "journeyd/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    /* parts: stage \n segment \n trigger-on \n payload */
    char *part[4] = {"true", "true", "enter:s", "1"};
    char *p = buf;
    for (int i = 0; i < 4 && p; i++) {
        part[i] = p;
        char *nl = strchr(p, '\n');
        if (nl)
            *nl++ = '\0';
        p = nl;
    }
    struct jd_rule_src stages[2] = {{"a", part[0], "fuzz", 1, 1, 1},
                                    {"b", "true", "fuzz", 2, 1, 1}};
    struct jd_rule_src segs[2] = {{"s", part[1], "fuzz", 3, 1, 1},
                                  {"t", "in_segment('s')", "fuzz", 4, 1, 1}};
    struct jd_payload_src payload[1] = {{"k", {"k", part[3], "fuzz", 6, 1, 1}}};
    struct jd_trigger_src trig;
    memset(&trig, 0, sizeof trig);
    trig.on = (struct jd_rule_src){"x", part[2], "fuzz", 5, 1, 1};
    trig.payload = payload;
    trig.npayload = 1;
    struct jd_rules_src src = {stages, 2, segs, 2, &trig, 1};

    struct jd_errors errs;
    jd_errors_init(&errs);
    struct jd_ruleset *rs = NULL;
    if (jd_rules_compile(&src, &rs, &errs) == 0) {
        struct jd_customer *c = jd_customer_new("c", 1, 0, rs);
        static const char *const types[] = {"purchase", "add_to_cart", "feedback", "page_view"};
        struct jd_eval_result res;
        int64_t t = 1700000000000LL;
        for (int i = 0; i < 8; i++) {
            struct jd_event ev;
            memset(&ev, 0, sizeof ev);
            ev.event_id = "e";
            ev.type = types[(size + (size_t)i) % 4];
            ev.channel = "web";
            ev.occurred_at = t + (int64_t)i * 3600000 * (1 + (int64_t)(size % 50));
            ev.has_amount = i & 1;
            ev.amount = 12.5 * i;
            ev.has_score = (i & 2) != 0;
            ev.score = i;
            ev.nattrs = 1;
            ev.attr_keys[0] = "k";
            ev.attr_vals[0] = i & 1 ? "42" : "x";
            jd_customer_apply_core(c, &ev);
            jd_rules_on_event(rs, c, &ev, ev.occurred_at, &res);
            int64_t nc = jd_rules_next_change(rs, c, ev.occurred_at);
            if (nc != INT64_MAX && nc > ev.occurred_at)
                jd_rules_on_time(rs, c, nc, &res);
        }
        struct jd_buf out;
        jd_buf_init(&out);
        char err[128];
        (void)jd_rules_explain(rs, c, NULL, "x", t, &out, err, sizeof err);
        (void)jd_rules_explain(rs, c, NULL, "s", t, &out, err, sizeof err);
        jd_buf_free(&out);
        jd_customer_destroy(c);
        jd_rules_destroy(rs);
    }
    jd_errors_free(&errs);
    free(buf);
    return 0;
}
