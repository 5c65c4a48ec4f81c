"""A backlog larger than the consumer's queue: librdkafka 2.0.2 stops
fetching once the queue holds queued.min.messages and looks again only when
its broker thread wakes (about once a second); journeyd's fetch nudge
(src/fetch_nudge.c) wakes it when the queue runs low after being full. The
backlog here is 30 queues deep (queued.min.messages = 1000): every event is
processed, the nudge fired, and a caught-up journeyd is not nudged.

The queue fills only while journeyd consumes slower than the fetcher
fetches; with batches of 200 it does here, so that the queue is seen full
every time (with full batches journeyd takes the next one as soon as a batch
is applied, engine_load.c, and on a quiet machine often empties a queue
this small before the nudge's 5 ms look sees it full: it then needs no
nudge)."""

import subprocess
import time

import jdtest
from jdtest import Raw

EVENTS = 30000


def test_backlog_is_drained_with_nudges(devbroker, journeyd_factory, write_config):
    r = subprocess.run([jdtest.binary("journey-loadgen"), "-b", devbroker.bootstrap,
                        "-t", "touchpoints", "--profile", "bench", "--events", str(EVENTS),
                        "--customers", "3000", "--seed", "5"],
                       capture_output=True, timeout=jdtest.scaled(120), env=jdtest.child_env(),
                       cwd=jdtest.SOURCE_DIR)
    assert r.returncode == 0, r.stderr.decode()
    config = write_config({"processing.batch_max_events": Raw("200")},
                          kafka_properties={"queued.min.messages": "1000"})
    jd = journeyd_factory(config)
    jdtest.wait_caught_up(devbroker.bootstrap, "journeyd", "touchpoints", timeout=120)

    m = jd.metrics()
    assert jdtest.metric_sum(m, "journeyd_events_consumed_total") == EVENTS
    nudges = jdtest.metric_sum(m, "journeyd_kafka_fetch_nudges_total")
    # the queue filled (1000) and ran low many times over 30,000 events
    assert nudges >= 3, f"{nudges} nudges"

    # caught up: the queue never fills again, so no more nudges
    time.sleep(1.5)
    assert jdtest.metric_sum(jd.metrics(), "journeyd_kafka_fetch_nudges_total") == nudges
