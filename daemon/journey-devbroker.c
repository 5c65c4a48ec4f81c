/*
 * journey-devbroker — a Kafka cluster on loopback for the demo, the tests and
 * the benchmark: librdkafka's mock cluster (rdkafka_mock.h) hosted in a
 * process of its own, so that journeyd and real clients (kcat,
 * python3-confluent-kafka) talk the real Kafka protocol to it.
 *
 * Owns: one rd_kafka_t (the mock cluster needs a handle for its bookkeeping;
 * it produces nothing) and the mock cluster itself.
 *
 * Output: the bootstrap address ("127.0.0.1:PORT[,...]") is the first line
 * on stdout, flushed, and is also written to --bootstrap-file when given.
 * Control: one command per line on stdin, each answered with "ok" or
 * "error: ..." on stdout. EOF on stdin only ends the control channel; the
 * cluster runs until SIGTERM/SIGINT and then exits 0.
 *
 * Limits of the mock in librdkafka 2.0.2 worth knowing:
 * - the listeners always bind 127.0.0.1 port 0 (rd_kafka_mock_broker_new
 *   takes no address), so a fixed port cannot be chosen: read the address
 *   from stdout or --bootstrap-file instead;
 * - a partition keeps only its newest message sets (about 60,000 messages),
 *   older ones are dropped, so a consumer far behind loses data;
 * - after a member leaves a group (LeaveGroup), the coordinator waits a
 *   full session timeout of the group for the remaining members to rejoin
 *   before it rebalances, even when none remain: a consumer that restarts in
 *   the same group waits session.timeout.ms (librdkafka's default is 45 s),
 *   so tests run their consumers with a short session.timeout.ms;
 * - everything is in memory: a restart of the devbroker starts empty.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define DEVBROKER_MAX_TOPICS 64
#define DEVBROKER_MAX_ERRORS 1024

struct devbroker_topic {
    const char *name;
    char namebuf[256];
    int partitions;
};

static volatile sig_atomic_t devbroker_stop;

static void devbroker_on_signal(int sig)
{
    (void)sig;
    devbroker_stop = 1;
}

static const struct devbroker_topic devbroker_default_topics[] = {
    {"touchpoints", "", 8},     {"loyalty.rewards", "", 8},    {"loyalty.reengagement", "", 8},
    {"touchpoints.dlq", "", 4}, {"loyalty.suppressed", "", 4},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: journey-devbroker [--brokers N] [--topic NAME:PARTITIONS]... "
                 "[--bootstrap-file FILE]\n"
                 "  Runs librdkafka's mock Kafka cluster on 127.0.0.1 (ports chosen by the\n"
                 "  kernel; the mock cannot bind a fixed port) and prints its bootstrap\n"
                 "  address as the first line on stdout.\n"
                 "  --brokers N            number of brokers, ids 1..N (default 1)\n"
                 "  --topic NAME:PARTS     create a topic (repeatable); without any, creates\n"
                 "                         touchpoints:8 loyalty.rewards:8 loyalty.reengagement:8\n"
                 "                         touchpoints.dlq:4 loyalty.suppressed:4\n"
                 "  --bootstrap-file FILE  also write the bootstrap address to FILE\n"
                 "  stdin commands: down ID | up ID | rtt ID MS | error APIKEY ERRCODE COUNT |\n"
                 "                  clear APIKEY | create TOPIC PARTITIONS\n"
                 "                  (each answered 'ok' or 'error: ...')\n");
}

/* Parses a whole decimal integer in [min, max]. */
static int parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_topic_arg(const char *arg, struct devbroker_topic *t)
{
    const char *colon = strrchr(arg, ':');
    size_t n;
    long parts;

    if (!colon || colon == arg)
        return -1;
    n = (size_t)(colon - arg);
    if (n >= sizeof(t->namebuf))
        return -1;
    if (parse_int(colon + 1, 1, 10000, &parts) != 0)
        return -1;
    memcpy(t->namebuf, arg, n);
    t->namebuf[n] = '\0';
    t->name = t->namebuf;
    t->partitions = (int)parts;
    return 0;
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

/* A replication factor above the broker count is refused by the mock; above
 * three buys nothing for a test cluster. */
static int replication_for(int brokers)
{
    return brokers < 3 ? brokers : 3;
}

/* Executes one control line. Replies on stdout either way. */
static void control_command(rd_kafka_mock_cluster_t *mc, int brokers, char *line)
{
    char *argv[5];
    int argc = 0;
    char *save = NULL;
    char *tok;
    long a, b, c;
    rd_kafka_resp_err_t err;

    for (tok = strtok_r(line, " \t\r\n", &save); tok && argc < 5;
         tok = strtok_r(NULL, " \t\r\n", &save))
        argv[argc++] = tok;
    if (argc == 0)
        return;

    if ((strcmp(argv[0], "down") == 0 || strcmp(argv[0], "up") == 0) && argc == 2) {
        if (parse_int(argv[1], -1, brokers, &a) != 0) {
            reply("error: broker id must be -1 (all) or 1..%d", brokers);
            return;
        }
        err = argv[0][0] == 'd' ? rd_kafka_mock_broker_set_down(mc, (int32_t)a)
                                : rd_kafka_mock_broker_set_up(mc, (int32_t)a);
    } else if (strcmp(argv[0], "rtt") == 0 && argc == 3) {
        if (parse_int(argv[1], -1, brokers, &a) != 0 || parse_int(argv[2], 0, 600000, &b) != 0) {
            reply("error: usage: rtt BROKER_ID MS");
            return;
        }
        err = rd_kafka_mock_broker_set_rtt(mc, (int32_t)a, (int)b);
    } else if (strcmp(argv[0], "error") == 0 && argc == 4) {
        rd_kafka_resp_err_t errs[DEVBROKER_MAX_ERRORS];
        long i;

        if (parse_int(argv[1], 0, 32767, &a) != 0 || parse_int(argv[2], -200, 32767, &b) != 0 ||
            parse_int(argv[3], 1, DEVBROKER_MAX_ERRORS, &c) != 0) {
            reply("error: usage: error APIKEY ERRCODE COUNT (COUNT <= %d)", DEVBROKER_MAX_ERRORS);
            return;
        }
        for (i = 0; i < c; i++)
            errs[i] = (rd_kafka_resp_err_t)b;
        rd_kafka_mock_push_request_errors_array(mc, (int16_t)a, (size_t)c, errs);
        err = RD_KAFKA_RESP_ERR_NO_ERROR;
    } else if (strcmp(argv[0], "clear") == 0 && argc == 2) {
        /* the errors still queued for APIKEY are dropped */
        if (parse_int(argv[1], 0, 32767, &a) != 0) {
            reply("error: usage: clear APIKEY");
            return;
        }
        rd_kafka_mock_clear_request_errors(mc, (int16_t)a);
        err = RD_KAFKA_RESP_ERR_NO_ERROR;
    } else if (strcmp(argv[0], "create") == 0 && argc == 3) {
        if (parse_int(argv[2], 1, 10000, &a) != 0) {
            reply("error: usage: create TOPIC PARTITIONS");
            return;
        }
        err = rd_kafka_mock_topic_create(mc, argv[1], (int)a, replication_for(brokers));
    } else {
        reply("error: unknown command '%s' (down ID | up ID | rtt ID MS | "
              "error APIKEY ERRCODE COUNT | clear APIKEY | create TOPIC PARTITIONS)",
              argv[0]);
        return;
    }
    if (err)
        reply("error: %s", rd_kafka_err2str(err));
    else
        reply("ok");
}

static int write_bootstrap_file(const char *path, const char *bootstraps)
{
    char tmp[4096];
    FILE *f;

    /* Written under a temporary name and renamed, so a reader polling for
     * the file never sees it half-written. */
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= sizeof(tmp))
        return -1;
    f = fopen(tmp, "w");
    if (!f)
        return -1;
    if (fprintf(f, "%s\n", bootstraps) < 0) {
        fclose(f);
        unlink(tmp);
        return -1;
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct devbroker_topic topics[DEVBROKER_MAX_TOPICS];
    size_t ntopics = 0;
    long brokers = 1;
    const char *bootstrap_file = NULL;
    char errstr[512];
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    const char *bootstraps;
    struct sigaction sa;
    char line[1024];
    size_t linelen = 0;
    int stdin_open = 1;
    int rc = 1;
    size_t i;

    for (int ai = 1; ai < argc; ai++) {
        const char *opt = argv[ai];
        const char *val = ai + 1 < argc ? argv[ai + 1] : NULL;

        if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (!val) {
            fprintf(stderr, "journey-devbroker: %s needs a value\n", opt);
            usage(stderr);
            return 1;
        }
        if (strcmp(opt, "--brokers") == 0) {
            if (parse_int(val, 1, 64, &brokers) != 0) {
                fprintf(stderr, "journey-devbroker: --brokers: expected 1..64, got '%s'\n", val);
                return 1;
            }
        } else if (strcmp(opt, "--topic") == 0) {
            if (ntopics == DEVBROKER_MAX_TOPICS) {
                fprintf(stderr, "journey-devbroker: at most %d topics\n", DEVBROKER_MAX_TOPICS);
                return 1;
            }
            if (parse_topic_arg(val, &topics[ntopics]) != 0) {
                fprintf(stderr, "journey-devbroker: --topic: expected NAME:PARTITIONS, got '%s'\n",
                        val);
                return 1;
            }
            ntopics++;
        } else if (strcmp(opt, "--bootstrap-file") == 0) {
            bootstrap_file = val;
        } else {
            fprintf(stderr, "journey-devbroker: unknown option %s\n", opt);
            usage(stderr);
            return 1;
        }
        ai++;
    }
    if (ntopics == 0) {
        ntopics = sizeof(devbroker_default_topics) / sizeof(devbroker_default_topics[0]);
        memcpy(topics, devbroker_default_topics, sizeof(devbroker_default_topics));
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = devbroker_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* A test harness may close its end of our stdout before stopping us. */
    signal(SIGPIPE, SIG_IGN);

    conf = rd_kafka_conf_new();
    /* The handle never connects anywhere (no bootstrap.servers); notices
     * such as "No bootstrap.servers configured" would only confuse.
     * The mock's connections take their socket options from this handle:
     * TCP_NODELAY, as a Kafka broker sets on every connection. With Nagle
     * a small response written while the previous one is unacknowledged
     * waits for the client's delayed ACK (up to 40 ms; docs/performance.md,
     * "Twelfth pass"). */
    if (rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "socket.nagle.disable", "true", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
        fprintf(stderr, "journey-devbroker: %s\n", errstr);
        goto err;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "journey-devbroker: rd_kafka_new: %s\n", errstr);
        goto err;
    }
    conf = NULL; /* now owned by rk */

    mc = rd_kafka_mock_cluster_new(rk, (int)brokers);
    if (!mc) {
        fprintf(stderr, "journey-devbroker: could not create the mock cluster\n");
        goto err;
    }
    for (i = 0; i < ntopics; i++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
            mc, topics[i].name, topics[i].partitions, replication_for((int)brokers));
        if (err) {
            fprintf(stderr, "journey-devbroker: topic %s: %s\n", topics[i].name,
                    rd_kafka_err2str(err));
            goto err;
        }
    }

    bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (bootstrap_file && write_bootstrap_file(bootstrap_file, bootstraps) != 0) {
        fprintf(stderr, "journey-devbroker: cannot write %s: %s\n", bootstrap_file,
                strerror(errno));
        goto err;
    }
    printf("%s\n", bootstraps);
    fflush(stdout);
    fprintf(stderr, "journey-devbroker: %ld broker(s) at %s, %zu topic(s)\n", brokers, bootstraps,
            ntopics);

    while (!devbroker_stop) {
        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
        int n;

        /* The handle's own queue (logs, errors) must be served even though it
         * produces nothing. */
        rd_kafka_poll(rk, 0);
        if (!stdin_open) {
            /* sleep() returns early on a signal, so SIGTERM is seen at once. */
            usleep(200 * 1000);
            continue;
        }
        n = poll(&pfd, 1, 200);
        if (n <= 0)
            continue;
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read(STDIN_FILENO, line + linelen, sizeof(line) - 1 - linelen);
            char *nl;

            if (r <= 0) {
                if (r < 0 && errno == EINTR)
                    continue;
                stdin_open = 0; /* EOF (or /dev/null): keep serving */
                continue;
            }
            linelen += (size_t)r;
            line[linelen] = '\0';
            while ((nl = memchr(line, '\n', linelen)) != NULL) {
                size_t consumed = (size_t)(nl - line) + 1;

                *nl = '\0';
                control_command(mc, (int)brokers, line);
                memmove(line, line + consumed, linelen - consumed);
                linelen -= consumed;
                line[linelen] = '\0';
            }
            if (linelen == sizeof(line) - 1) {
                reply("error: command line too long");
                linelen = 0;
            }
        }
    }
    fprintf(stderr, "journey-devbroker: stopping\n");
    rc = 0;

err:
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    if (rk)
        rd_kafka_destroy(rk);
    if (conf)
        rd_kafka_conf_destroy(conf);
    return rc;
}
