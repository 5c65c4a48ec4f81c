/*
 * journey-loadgen — plays a sample touchpoint stream (src/loadgen.c) into
 * Kafka as Avro Touchpoint values keyed by customer_id, for the demo, the
 * tests and the benchmark; or prints it as JSON lines with --dry-run.
 * Owns the producer, the codec used to encode, and the pacing: as fast as
 * possible, a fixed rate, or event time sped up by a factor (a 90-day
 * journey in seconds). Exit: 0 done, 1 usage or setup error, 2 some events
 * were not delivered.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "journeyd/codec.h"
#include "journeyd/config.h"
#include "journeyd/loadgen.h"
#include "journeyd/util.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

struct delivery {
    uint64_t delivered;
    uint64_t failed;
    char first_error[256];
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct delivery *d = opaque;
    (void)rk;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        d->delivered++;
    } else {
        if (d->failed++ == 0)
            snprintf(d->first_error, sizeof(d->first_error), "%s", rd_kafka_err2str(m->err));
    }
}

struct options {
    struct jd_loadgen_opts gen;
    const char *brokers;
    const char *topic;
    double rate;    /* events/s, 0: unpaced */
    double speedup; /* event time / wall time, 0: unpaced */
    int schema_id;  /* -1: bare */
    int stats;
    int dry_run;
    int live; /* occurred_at = wall clock at send */
    const char *schema_file;
    char **props; /* -X name=value, in order */
    size_t nprops;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: journey-loadgen [-b BROKERS] [options]\n"
            "Plays a deterministic stream of Avro Touchpoint events into Kafka (key customer_id).\n"
            "  -b, --brokers LIST      bootstrap servers (required unless --dry-run)\n"
            "  -t, --topic NAME        topic (default touchpoints)\n"
            "  -p, --profile P         demo: complete persona journeys ordered by event time\n"
            "                          (default); bench: an event mix over many customers\n"
            "      --customers N       customers (demo 300, bench 100000)\n"
            "      --events N          stop after N events (demo: every journey to its end;\n"
            "                          bench: 10 per customer)\n"
            "      --seed S            PRNG seed (default 42): the same options and seed give\n"
            "                          the same bytes\n"
            "      --start-time MS     no event before this time, ms since the epoch (demo:\n"
            "                          midnight UTC 90 days ago; bench: midnight yesterday)\n"
            "      --time-step MS      bench: event-time gap between events (default 1)\n"
            "      --zipf S            bench: customers Zipf-distributed with exponent S\n"
            "                          (default 0: uniform)\n"
            "      --rate R            send R events/s (default 0: as fast as possible)\n"
            "      --speedup X         send at event time / X: 864000 plays a day in 0.1 s\n"
            "      --live              set occurred_at to the wall clock at send time\n"
            "      --framing F         bare (default) or confluent (0x00, schema id, body)\n"
            "      --schema-id ID      schema id of the Confluent framing (default 1)\n"
            "      --schema FILE       touchpoint.avsc (default: config/schemas/ beside the\n"
            "                          working directory or the program)\n"
            "  -X  NAME=VALUE          librdkafka producer property (repeatable)\n"
            "      --dry-run           print one JSON object per event to stdout, send nothing\n"
            "      --stats             print the count and rate at the end (stderr)\n"
            "  -h, --help\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

enum {
    OPT_CUSTOMERS = 1000,
    OPT_EVENTS,
    OPT_SEED,
    OPT_START,
    OPT_STEP,
    OPT_ZIPF,
    OPT_RATE,
    OPT_SPEEDUP,
    OPT_LIVE,
    OPT_FRAMING,
    OPT_SCHEMA_ID,
    OPT_SCHEMA,
    OPT_DRY_RUN,
    OPT_STATS,
};

/* 0, or 1 after printing why (exit code 1). */
static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {{"brokers", required_argument, NULL, 'b'},
                                             {"topic", required_argument, NULL, 't'},
                                             {"profile", required_argument, NULL, 'p'},
                                             {"customers", required_argument, NULL, OPT_CUSTOMERS},
                                             {"events", required_argument, NULL, OPT_EVENTS},
                                             {"seed", required_argument, NULL, OPT_SEED},
                                             {"start-time", required_argument, NULL, OPT_START},
                                             {"time-step", required_argument, NULL, OPT_STEP},
                                             {"zipf", required_argument, NULL, OPT_ZIPF},
                                             {"rate", required_argument, NULL, OPT_RATE},
                                             {"speedup", required_argument, NULL, OPT_SPEEDUP},
                                             {"live", no_argument, NULL, OPT_LIVE},
                                             {"framing", required_argument, NULL, OPT_FRAMING},
                                             {"schema-id", required_argument, NULL, OPT_SCHEMA_ID},
                                             {"schema", required_argument, NULL, OPT_SCHEMA},
                                             {"dry-run", no_argument, NULL, OPT_DRY_RUN},
                                             {"stats", no_argument, NULL, OPT_STATS},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    /* the profile decides the defaults, so find it first */
    enum jd_loadgen_profile profile = JD_LOADGEN_DEMO;
    const char *profile_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-p") || !strcmp(argv[i], "--profile")) && i + 1 < argc)
            profile_arg = argv[i + 1];
        else if (!strncmp(argv[i], "--profile=", 10))
            profile_arg = argv[i] + 10;
    }
    if (profile_arg) {
        if (!strcmp(profile_arg, "bench")) {
            profile = JD_LOADGEN_BENCH;
        } else if (strcmp(profile_arg, "demo") != 0) {
            fprintf(stderr, "journey-loadgen: --profile must be demo or bench, not '%s'\n",
                    profile_arg);
            return 1;
        }
    }
    jd_loadgen_opts_default(&o->gen, profile);
    o->topic = "touchpoints";
    o->schema_id = -1;
    int confluent = 0, schema_id = 1;

    int c;
    while ((c = getopt_long(argc, argv, "b:t:p:X:h", longopts, NULL)) != -1) {
        int bad = 0;
        uint64_t u;
        switch (c) {
        case 'b':
            o->brokers = optarg;
            break;
        case 't':
            o->topic = optarg;
            break;
        case 'p':
            break;
        case OPT_CUSTOMERS:
            bad = parse_u64(optarg, &o->gen.customers);
            break;
        case OPT_EVENTS:
            bad = parse_u64(optarg, &o->gen.events);
            break;
        case OPT_SEED:
            bad = parse_u64(optarg, &o->gen.seed);
            break;
        case OPT_START:
            bad = parse_i64(optarg, &o->gen.start_time_ms);
            break;
        case OPT_STEP:
            bad = parse_i64(optarg, &o->gen.time_step_ms) || o->gen.time_step_ms < 0;
            break;
        case OPT_ZIPF:
            bad = parse_double(optarg, &o->gen.zipf_s);
            break;
        case OPT_RATE:
            bad = parse_double(optarg, &o->rate);
            break;
        case OPT_SPEEDUP:
            bad = parse_double(optarg, &o->speedup);
            break;
        case OPT_LIVE:
            o->live = 1;
            break;
        case OPT_FRAMING:
            if (!strcmp(optarg, "confluent"))
                confluent = 1;
            else if (!strcmp(optarg, "bare"))
                confluent = 0;
            else
                bad = 1;
            break;
        case OPT_SCHEMA_ID:
            bad = parse_u64(optarg, &u) || u > INT32_MAX;
            schema_id = (int)u;
            break;
        case OPT_SCHEMA:
            o->schema_file = optarg;
            break;
        case OPT_DRY_RUN:
            o->dry_run = 1;
            break;
        case OPT_STATS:
            o->stats = 1;
            break;
        case 'X':
            if (!strchr(optarg, '=')) {
                bad = 1;
                break;
            }
            o->props = jd_xrealloc(o->props, (o->nprops + 1) * sizeof(*o->props));
            o->props[o->nprops++] = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 1;
        }
        if (bad) {
            fprintf(stderr, "journey-loadgen: bad value for %s: '%s'\n", argv[optind - 1], optarg);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "journey-loadgen: unexpected argument '%s'\n", argv[optind]);
        return 1;
    }
    if (!o->dry_run && !o->brokers) {
        fprintf(stderr, "journey-loadgen: -b BROKERS is required (or --dry-run)\n");
        return 1;
    }
    if (profile == JD_LOADGEN_DEMO && (o->gen.time_step_ms != 0 || o->gen.zipf_s != 0)) {
        /* demo journeys keep their own calendar: pace them with --speedup */
        fprintf(stderr, "journey-loadgen: --time-step and --zipf are for --profile bench\n");
        return 1;
    }
    if (o->rate > 0 && o->speedup > 0) {
        fprintf(stderr, "journey-loadgen: --rate and --speedup exclude each other\n");
        return 1;
    }
    if (confluent)
        o->schema_id = schema_id;
    return 0;
}

/* The touchpoint schema: --schema, or config/schemas/ under the working
 * directory, or beside the program (build/../config). */
static char *find_schema(const char *given, const char *argv0, const char *name)
{
    char path[2 * PATH_MAX];
    if (given) {
        if (!strcmp(name, "touchpoint.avsc"))
            return jd_strdup(given);
        /* the trigger schema is wanted beside the touchpoint one */
        const char *slash = strrchr(given, '/');
        int dirlen = slash ? (int)(slash - given) : 1;
        snprintf(path, sizeof(path), "%.*s/%s", dirlen, slash ? given : ".", name);
        return jd_strdup(path);
    }
    snprintf(path, sizeof(path), "config/schemas/%s", name);
    if (access(path, R_OK) == 0)
        return jd_strdup(path);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        snprintf(exe, sizeof(exe), "%s", argv0);
    else
        exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    for (int up = 1; up <= 2; up++) {
        snprintf(path, sizeof(path), "%s/%s/config/schemas/%s", exe, up == 1 ? ".." : "../..",
                 name);
        if (access(path, R_OK) == 0)
            return jd_strdup(path);
    }
    return NULL;
}

/* The codec wants a config; the generator needs only the schema part of one. */
struct codec_setup {
    struct jd_config cfg;
    struct jd_schema_id id;
    struct jd_codec *codec;
};

static int codec_setup(struct codec_setup *cs, const struct options *o, const char *argv0)
{
    char err[512];
    memset(cs, 0, sizeof(*cs));
    cs->cfg.touchpoint_schema = find_schema(o->schema_file, argv0, "touchpoint.avsc");
    cs->cfg.trigger_schema = find_schema(o->schema_file, argv0, "trigger.avsc");
    if (!cs->cfg.touchpoint_schema || !cs->cfg.trigger_schema) {
        fprintf(stderr, "journey-loadgen: cannot find config/schemas/touchpoint.avsc and "
                        "trigger.avsc; run from the repository or pass --schema FILE\n");
        return -1;
    }
    cs->cfg.wire_format = o->schema_id >= 0 ? JD_WIRE_CONFLUENT : JD_WIRE_BARE;
    cs->cfg.trigger_schema_id = -1;
    if (o->schema_id >= 0) {
        cs->id.id = o->schema_id;
        cs->id.file = cs->cfg.touchpoint_schema;
        cs->cfg.registry_ids = &cs->id;
        cs->cfg.nregistry_ids = 1;
    }
    cs->codec = jd_codec_new(&cs->cfg, err, sizeof(err));
    if (!cs->codec) {
        fprintf(stderr, "journey-loadgen: %s\n", err);
        return -1;
    }
    return 0;
}

static void codec_teardown(struct codec_setup *cs)
{
    if (cs->codec)
        jd_codec_destroy(cs->codec);
    free(cs->cfg.touchpoint_schema);
    free(cs->cfg.trigger_schema);
}

static rd_kafka_t *producer_new(const struct options *o, struct delivery *d)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* throughput first: large batches, a short linger, a deep local queue */
    static const char *const defaults[][2] = {{"linger.ms", "5"},
                                              {"batch.size", "1000000"},
                                              {"batch.num.messages", "100000"},
                                              {"compression.type", "none"},
                                              {"queue.buffering.max.messages", "2000000"},
                                              {"queue.buffering.max.kbytes", "2097151"},
                                              {"message.max.bytes", "4000000"},
                                              /* no Nagle: --live sends small requests */
                                              {"socket.nagle.disable", "true"}};
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        if (rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1], err, sizeof(err)) !=
            RD_KAFKA_CONF_OK) {
            fprintf(stderr, "journey-loadgen: %s\n", err);
            goto err;
        }
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", o->brokers, err, sizeof(err)) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "journey-loadgen: %s\n", err);
        goto err;
    }
    for (size_t i = 0; i < o->nprops; i++) {
        char name[256];
        const char *eq = strchr(o->props[i], '=');
        snprintf(name, sizeof(name), "%.*s", (int)(eq - o->props[i]), o->props[i]);
        if (rd_kafka_conf_set(conf, name, eq + 1, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "journey-loadgen: -X %s: %s\n", o->props[i], err);
            goto err;
        }
    }
    rd_kafka_conf_set_opaque(conf, d);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "journey-loadgen: %s\n", err);
        goto err;
    }
    return rk; /* conf is now owned by rk */
err:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* Sleeps until monotonic time target_ns, serving delivery reports meanwhile. */
static void wait_until(rd_kafka_t *rk, int64_t target_ns)
{
    for (;;) {
        int64_t left = target_ns - jd_monotonic_ns();
        if (left <= 0 || g_stop)
            return;
        if (rk && left > 2000000) {
            rd_kafka_poll(rk, (int)(left / 1000000 > 100 ? 100 : left / 1000000));
            continue;
        }
        struct timespec ts = {left / 1000000000, left % 1000000000};
        nanosleep(&ts, NULL);
    }
}

static int produce_one(rd_kafka_topic_t *rkt, rd_kafka_t *rk, const struct jd_buf *value,
                       const char *key)
{
    for (;;) {
        if (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, value->data,
                             value->len, key, strlen(key), NULL) == 0)
            return 0;
        rd_kafka_resp_err_t e = rd_kafka_last_error();
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            fprintf(stderr, "journey-loadgen: produce: %s\n", rd_kafka_err2str(e));
            return -1;
        }
        /* the local queue is full: let the broker catch up */
        rd_kafka_poll(rk, 10);
        if (g_stop)
            return -1;
    }
}

int main(int argc, char **argv)
{
    struct options o = {0};
    struct codec_setup cs = {0};
    struct delivery d = {0};
    struct jd_loadgen *g = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    struct jd_buf buf;
    char err[512];
    int rc = 1, have_codec = 0;
    uint64_t sent = 0, bytes = 0;
    uint64_t personas[JD_PERSONA_COUNT] = {0};

    jd_buf_init(&buf);
    if (parse_args(argc, argv, &o) != 0)
        goto out;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    g = jd_loadgen_new(&o.gen, err, sizeof(err));
    if (!g) {
        fprintf(stderr, "journey-loadgen: %s\n", err);
        goto out;
    }
    if (!o.dry_run) {
        have_codec = 1;
        if (codec_setup(&cs, &o, argv[0]) != 0)
            goto out;
        rk = producer_new(&o, &d);
        if (!rk)
            goto out;
        rkt = rd_kafka_topic_new(rk, o.topic, NULL);
        if (!rkt) {
            fprintf(stderr, "journey-loadgen: topic %s: %s\n", o.topic,
                    rd_kafka_err2str(rd_kafka_last_error()));
            goto out;
        }
    }

    rc = 0;
    struct jd_event ev;
    int64_t t0 = jd_monotonic_ns();
    int64_t first_at = 0;
    while (!g_stop && jd_loadgen_next(g, &ev)) {
        if (sent == 0)
            first_at = ev.occurred_at;
        if (o.rate > 0)
            wait_until(rk, t0 + (int64_t)((double)sent * 1e9 / o.rate));
        else if (o.speedup > 0)
            wait_until(rk, t0 + (int64_t)((double)(ev.occurred_at - first_at) * 1e6 / o.speedup));
        if (g_stop)
            break;
        if (o.live)
            ev.occurred_at = jd_now_ms();
        int persona = jd_loadgen_last_persona(g);
        if (persona >= 0)
            personas[persona]++;
        jd_buf_reset(&buf);
        if (o.dry_run) {
            jd_loadgen_event_json(&ev, persona, &buf);
            jd_buf_puts(&buf, "\n");
            if (fwrite(buf.data, 1, buf.len, stdout) != buf.len) {
                rc = 2;
                break;
            }
        } else {
            if (jd_codec_encode_touchpoint(cs.codec, &ev, o.schema_id, &buf, err, sizeof(err)) !=
                0) {
                fprintf(stderr, "journey-loadgen: encode %s: %s\n", ev.event_id, err);
                rc = 2;
                break;
            }
            if (produce_one(rkt, rk, &buf, ev.customer_id) != 0) {
                rc = g_stop ? 0 : 2;
                break;
            }
            if ((sent & 1023) == 0)
                rd_kafka_poll(rk, 0);
        }
        sent++;
        bytes += buf.len;
    }
    if (o.dry_run) {
        fflush(stdout);
    } else {
        /* deliver what is queued even after a signal, so that counts add up */
        int64_t deadline = jd_monotonic_ns() + 60LL * 1000000000;
        while (rd_kafka_outq_len(rk) > 0 && jd_monotonic_ns() < deadline)
            rd_kafka_poll(rk, 50);
        if (rd_kafka_outq_len(rk) > 0) {
            fprintf(stderr, "journey-loadgen: %d events still queued after 60 s\n",
                    rd_kafka_outq_len(rk));
            rc = 2;
        }
        if (d.failed > 0) {
            fprintf(stderr, "journey-loadgen: %" PRIu64 " events not delivered (first: %s)\n",
                    d.failed, d.first_error);
            rc = 2;
        }
    }
    double secs = (double)(jd_monotonic_ns() - t0) / 1e9;
    if (o.stats) {
        uint64_t done = o.dry_run ? sent : d.delivered;
        fprintf(stderr,
                "journey-loadgen: profile=%s produced=%" PRIu64 " delivered=%" PRIu64
                " failed=%" PRIu64 " customers=%" PRIu64 " bytes=%" PRIu64
                " seconds=%.3f events_per_s=%.0f\n",
                o.gen.profile == JD_LOADGEN_DEMO ? "demo" : "bench", sent, done, d.failed,
                jd_loadgen_customers_touched(g), bytes, secs, secs > 0 ? (double)done / secs : 0.0);
        if (o.gen.profile == JD_LOADGEN_DEMO) {
            uint64_t cust[JD_PERSONA_COUNT] = {0};
            for (uint64_t i = 0; i < o.gen.customers; i++)
                cust[jd_loadgen_customer_persona(g, i)]++;
            fprintf(stderr, "journey-loadgen: customers by persona:");
            for (int p = 0; p < JD_PERSONA_COUNT; p++)
                fprintf(stderr, " %s=%" PRIu64 "", jd_loadgen_persona_name(p), cust[p]);
            fprintf(stderr, "\njourney-loadgen: events by persona:");
            for (int p = 0; p < JD_PERSONA_COUNT; p++)
                fprintf(stderr, " %s=%" PRIu64 "", jd_loadgen_persona_name(p), personas[p]);
            fprintf(stderr, "\n");
        }
    }
out:
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (rk)
        rd_kafka_destroy(rk);
    if (have_codec)
        codec_teardown(&cs);
    jd_loadgen_destroy(g);
    jd_buf_free(&buf);
    free(o.props);
    return rc;
}
