/*
 * bench_codec — ns per call of jd_codec_decode (a typical touchpoint, bare
 * and Confluent-framed) and jd_codec_encode_trigger, over 1,000,000
 * iterations each. Usage: bench_codec [SOURCE_DIR] (default $JD_SOURCE_DIR,
 * else "."); build with optimisation (the default RelWithDebInfo).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd/codec.h"

#define ITERATIONS 1000000

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_codec: %s: %s\n", what, err);
    exit(1);
}

static double bench_decode(struct jd_codec *codec, const struct jd_buf *body)
{
    struct jd_event ev;
    char err[256];
    int64_t t0 = jd_monotonic_ns();
    for (int i = 0; i < ITERATIONS; i++)
        if (jd_codec_decode(codec, body->data, body->len, &ev, err, sizeof(err)) != JD_DECODE_OK)
            die("decode", err);
    return (double)(jd_monotonic_ns() - t0) / ITERATIONS;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : getenv("JD_SOURCE_DIR");
    char tp[1024], tg[1024], err[256];
    struct jd_schema_id ids[1];
    struct jd_config cfg;
    struct jd_buf bare, framed, out;
    static const char *keys[] = {"sku", "campaign", "page"};
    static const char *vals[] = {"SKU-123456", "spring-sale", "/product/123456"};

    if (!dir)
        dir = ".";
    snprintf(tp, sizeof(tp), "%s/config/schemas/touchpoint.avsc", dir);
    snprintf(tg, sizeof(tg), "%s/config/schemas/trigger.avsc", dir);
    memset(&cfg, 0, sizeof(cfg));
    ids[0].id = 1;
    ids[0].file = tp;
    cfg.touchpoint_schema = tp;
    cfg.trigger_schema = tg;
    cfg.registry_ids = ids;
    cfg.nregistry_ids = 1;
    cfg.wire_format = JD_WIRE_AUTO;
    cfg.trigger_schema_id = -1;
    struct jd_codec *codec = jd_codec_new(&cfg, err, sizeof(err));
    if (!codec)
        die("jd_codec_new", err);

    struct jd_event ev = {
        .event_id = "0f8fad5b-d9cb-469f-a165-70867728950e",
        .customer_id = "customer-000123",
        .type = "purchase",
        .channel = "web",
        .occurred_at = 1700000000123,
        .has_amount = 1,
        .amount = 49.95,
        .currency = "EUR",
        .nattrs = 3,
    };
    for (int i = 0; i < 3; i++) {
        ev.attr_keys[i] = keys[i];
        ev.attr_vals[i] = vals[i];
    }
    jd_buf_init(&bare);
    jd_buf_init(&framed);
    jd_buf_init(&out);
    if (jd_codec_encode_touchpoint(codec, &ev, -1, &bare, err, sizeof(err)) != 0 ||
        jd_codec_encode_touchpoint(codec, &ev, 1, &framed, err, sizeof(err)) != 0)
        die("encode_touchpoint", err);

    double d_bare = bench_decode(codec, &bare);
    double d_framed = bench_decode(codec, &framed);

    struct jd_trigger t;
    memset(&t, 0, sizeof(t));
    strcpy(t.trigger_id, "5d41402abc4b2a76b9719d911017c592");
    t.trigger = "vip_welcome";
    t.kind = JD_KIND_REWARD;
    t.customer_id = "customer-000123";
    t.segment = "vip";
    t.journey_stage = "loyal";
    t.reason = "purchases within 30d = 3 >= 3";
    t.fired_at = 1700000000123;
    t.source_event_id = ev.event_id;
    t.rule_version = "3f2a9c1e";
    t.nattrs = 2;
    t.attr_keys[0] = "lifetime_spend";
    t.attr_vals[0] = "310.50";
    t.attr_keys[1] = "last_channel";
    t.attr_vals[1] = "web";
    int64_t t0 = jd_monotonic_ns();
    for (int i = 0; i < ITERATIONS; i++) {
        jd_buf_reset(&out);
        if (jd_codec_encode_trigger(codec, &t, &out, err, sizeof(err)) != 0)
            die("encode_trigger", err);
    }
    double e_trig = (double)(jd_monotonic_ns() - t0) / ITERATIONS;

    printf("decode touchpoint, bare (%zu bytes):     %7.1f ns/event\n", bare.len, d_bare);
    printf("decode touchpoint, framed (%zu bytes):   %7.1f ns/event\n", framed.len, d_framed);
    printf("encode trigger, bare (%zu bytes):       %7.1f ns/trigger\n", out.len, e_trig);

    jd_buf_free(&bare);
    jd_buf_free(&framed);
    jd_buf_free(&out);
    jd_codec_destroy(codec);
    return 0;
}
