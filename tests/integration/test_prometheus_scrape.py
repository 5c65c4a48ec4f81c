"""A real Prometheus (Debian package `prometheus`) scrapes a running journeyd
(on the devbroker and a private redis-server) and the values come back through
Prometheus's HTTP API; the live exposition also passes `promtool check
metrics`, and the shipped alert rules load into that Prometheus."""
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import avro.schema
import pytest

import jdtest

ALERTS = os.path.join(jdtest.SOURCE_DIR, "deploy", "prometheus", "alerts.yml")


def need_binaries():
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian package prometheus)")
    if not os.access(jdtest.binary("journeyd"), os.X_OK):
        pytest.skip("journeyd is not built")


class Prometheus:
    def __init__(self, workdir, target_port):
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.port = jdtest.free_port()
        shutil.copy(ALERTS, os.path.join(self.dir, "alerts.yml"))
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yml
scrape_configs:
  - job_name: journeyd
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
""")
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.proc = None

    def start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.config}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        jdtest.wait_until(self._ready, jdtest.scaled(30), interval=0.2, what="prometheus ready")
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise jdtest.Fatal(f"prometheus exited with {self.proc.returncode}: "
                               f"{open(self.log_path).read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr):
        """Instant query -> [(labels, float)]."""
        data = self.api("query", query=expr)
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def scalar(self, expr):
        r = self.query(expr)
        return r[0][1] if r else None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()


@pytest.fixture
def prometheus_for(tmp_path):
    started = []

    def make(port):
        p = Prometheus(str(tmp_path / f"prometheus{len(started)}"), port).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def encoded(events):
    """(key, Avro body) pairs. The writer schema drops the timestamp-millis
    logical type (python3-avro would want datetime objects); the bytes are
    the same."""
    with open(os.path.join(jdtest.CONFIG_DIR, "schemas", "touchpoint.avsc")) as f:
        doc = json.load(f)
    for field in doc["fields"]:
        if isinstance(field["type"], dict):
            field["type"].pop("logicalType", None)
    writer = avro.schema.parse(json.dumps(doc))
    return [(ev["customer_id"].encode(), jdtest.encode_touchpoint(ev, writer=writer))
            for ev in events]


def wait_value(prom, expr, want, timeout=30):
    last = [None]

    def ok():
        last[0] = prom.scalar(expr)
        return last[0] is not None and last[0] == want
    try:
        jdtest.wait_until(ok, jdtest.scaled(timeout), interval=0.5, what=f"{expr} == {want}")
    except Exception:
        raise AssertionError(f"{expr}: wanted {want}, Prometheus has {last[0]}")


def test_prometheus_scrapes_journeyd(write_config, journeyd_factory, devbroker, prometheus_for,
                                     tmp_path):
    need_binaries()
    conf = write_config({"metrics.bind": "127.0.0.1"},
                        kafka_properties={"statistics.interval.ms": "500"})
    jd = journeyd_factory(conf)
    jd.wait_ready(timeout=30)

    # the live exposition is valid text format, lint included
    status, body = jd.http_get("/metrics")
    assert status == 200
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                       text=True)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    assert jd.http_get("/healthz") == (200, "ok\n")

    prom = prometheus_for(jd.metrics_port)

    t0 = jdtest.base_time_ms(days_ago=3)
    events = [jdtest.touchpoint(f"cust-{i}", "page_view", t0 + i) for i in range(30)]
    events += [jdtest.touchpoint(f"cust-{i}", "purchase", t0 + 1000 + i, amount=20 + i)
               for i in range(12)]
    jdtest.produce(devbroker.bootstrap, "touchpoints", encoded(events))

    wait_value(prom, 'sum(journeyd_events_consumed_total{job="journeyd"})', len(events))
    wait_value(prom, 'up{job="journeyd"}', 1)
    wait_value(prom, "journeyd_ready", 1)
    wait_value(prom, "journeyd_alive", 1)
    # every customer's first purchase fires welcome_first_purchase once
    wait_value(prom, 'sum(journeyd_triggers_emitted_total{trigger="welcome_first_purchase",'
                     'kind="REWARD"})', 12)
    wait_value(prom, "sum(journeyd_events_failed_total)", 0)
    wait_value(prom, "journeyd_assigned_partitions", float(jdtest.DEFAULT_TOPICS["touchpoints"]))
    # histograms arrive as _bucket/_sum/_count and quantiles work on them
    wait_value(prom, "sum(journeyd_event_processing_seconds_count)", len(events))
    p99 = prom.scalar("histogram_quantile(0.99, sum by (le) "
                      "(journeyd_event_processing_seconds_bucket))")
    assert p99 is not None and 0 < p99 <= 10
    # consumer lag from librdkafka statistics: one series per assigned
    # partition once offsets are committed, all drained to 0
    jdtest.wait_until(lambda: len(prom.query("journeyd_consumer_lag")) ==
                      jdtest.DEFAULT_TOPICS["touchpoints"], jdtest.scaled(30), interval=0.5,
                      what="journeyd_consumer_lag for every partition")
    wait_value(prom, "sum(journeyd_consumer_lag)", 0)

    (info,) = prom.query("journeyd_build_info")
    assert info[1] == 1
    assert info[0]["version"] and len(info[0]["rule_version"]) == 16

    targets = prom.api("targets")["activeTargets"]
    assert [t["health"] for t in targets] == ["up"], targets
    groups = prom.api("rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert "JourneydConsumerLagGrowing" in rules
    assert all(r["health"] == "ok" for r in rules.values()), rules
    # a healthy, drained instance fires none of them
    time.sleep(2)
    firing = [a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"]
    assert firing == [], firing

    assert jd.stop() == 0


def test_readyz_follows_redis(write_config, journeyd_factory, devbroker, redis_server):
    need_binaries()
    conf = write_config({"metrics.bind": "127.0.0.1"})
    jd = journeyd_factory(conf)
    jd.wait_ready(timeout=30)

    redis_server.kill()
    t0 = jdtest.base_time_ms(days_ago=2)
    jdtest.produce(devbroker.bootstrap, "touchpoints",
                   encoded([jdtest.touchpoint(f"r-{i}", "page_view", t0 + i) for i in range(5)]))
    jdtest.wait_until(lambda: jd.http_get("/readyz")[0] == 503, jdtest.scaled(30),
                      interval=0.2, what="/readyz 503 while Redis is down")
    status, body = jd.http_get("/readyz")
    assert "redis_ok: no" in body or "backpressured: yes" in body, body
    # alive all the same: the loop keeps beating while it waits for Redis
    assert jd.http_get("/healthz")[0] == 200
    assert jdtest.metric_sum(jd.metrics(), "journeyd_redis_errors_total") > 0

    redis_server.start()
    jd.wait_ready(timeout=60)
    jdtest.wait_until(lambda: jdtest.metric_sum(jd.metrics(), "journeyd_events_consumed_total")
                      >= 5, jdtest.scaled(30), what="events consumed after Redis came back")
    assert jd.stop() == 0
