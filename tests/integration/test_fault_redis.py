"""Fault test 2 (issue 6): Redis killed and restarted mid-run (AOF with
appendfsync always), and Redis answering errors (OOM through maxmemory).
journeyd must retry with backoff, report not ready meanwhile, stay alive
(/healthz), and lose nothing once Redis is back (docs/guarantees.md)."""

import time

import pytest

import jdtest
import faultlib
from faultlib import fault_broker, jd_factory  # noqa: F401 (fixtures)


@pytest.fixture
def aof_redis(tmp_path):
    r = jdtest.Redis(str(tmp_path / "redis-aof"), appendonly=True, appendfsync="always").start()
    yield r
    r.kill()


class Watch:
    """Samples /readyz, /healthz and journeyd_backpressured while waiting."""

    def __init__(self, jd):
        self.jd = jd
        self.ready = []
        self.health = []
        self.bp = []

    def sample(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self.ready.append(self.jd.http_get("/readyz")[0])
                self.health.append(self.jd.http_get("/healthz")[0])
                self.bp.append(faultlib.metric(self.jd, "journeyd_backpressured"))
            except OSError:
                pass
            assert self.jd.running(), self.jd.log_text()[-3000:]
            time.sleep(0.25)


def run_with_outage(tmp_path, name, write_config, redis, jd_factory, fault_broker, outage,
                    n_events=60_000, extra_props=None):
    group = faultlib.new_group(name)
    conf = faultlib.fault_config(write_config, group, kafka_properties=extra_props)
    version = faultlib.rule_version(conf)
    events = faultlib.workload(n_events=n_events, n_customers=2000, seed=11, days=20)
    ref = faultlib.Reference(events)
    jd = jd_factory(conf, redis.address)
    jd.wait_ready(timeout=60)
    prod = faultlib.BackgroundProducer(fault_broker.bootstrap, events, rate=4000)
    prod.start()
    time.sleep(2)
    w = Watch(jd)
    t0 = time.monotonic()
    recovered_at = outage(w)
    # back: ready again, and every event processed
    jdtest.wait_until(lambda: jd.http_get("/readyz")[0] == 200, 60, what="ready again")
    ready_after = time.monotonic() - recovered_at
    prod.join(jdtest.scaled(120))
    assert prod.error is None, prod.error
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=180)
    jdtest.wait_until(lambda: faultlib.metric(jd, "journeyd_outbox_pending") == 0, 60,
                      what="outbox drained")
    errors = faultlib.metric(jd, "journeyd_redis_errors_total")
    assert jd.stop() == 0
    bad = faultlib.check_state(redis.client(), ref)
    recs = faultlib.consume_triggers(fault_broker.bootstrap, expect_n=len(ref.first_purchase))
    chk = faultlib.TriggerCheck(recs, ref, version)
    faultlib.report(tmp_path, name, [
        f"{len(events)} events, fault for {recovered_at - t0:.1f}s; redis errors counted "
        f"{errors}; ready {ready_after:.2f}s after the fault ended",
        f"/readyz samples during the fault: {sorted(set(w.ready))}, /healthz: "
        f"{sorted(set(w.health))}, backpressured: {sorted(set(x for x in w.bp if x is not None))}",
        f"triggers {len(recs)} delivered, {chk.duplicate_deliveries} duplicate deliveries, "
        f"{len(chk.missing)} missing; state mismatches {len(bad)}"])
    assert 503 in w.ready, "journeyd never reported not ready during the fault"
    assert 1.0 in w.bp
    assert set(w.health) == {200}, "liveness must hold while back-pressured"
    assert errors and errors > 0
    assert bad == [], bad[:10]
    assert chk.problems() == []


def test_redis_killed_and_restarted(tmp_path, write_config, aof_redis, jd_factory,
                                    fault_broker):
    def outage(w):
        aof_redis.kill()
        w.sample(12)  # longer than the 10 s liveness window
        aof_redis.start()
        return time.monotonic()

    run_with_outage(tmp_path, "redis_kill", write_config, aof_redis, jd_factory, fault_broker,
                    outage)


def test_redis_oom_errors(tmp_path, write_config, aof_redis, jd_factory, fault_broker):
    cli = aof_redis.client()

    def outage(w):
        cli.config_set("maxmemory-policy", "noeviction")
        cli.config_set("maxmemory", "1")  # every write is refused with OOM
        w.sample(6)
        cli.config_set("maxmemory", "0")
        return time.monotonic()

    run_with_outage(tmp_path, "redis_oom", write_config, aof_redis, jd_factory, fault_broker,
                    outage)


def test_redis_outage_longer_than_max_poll_interval(tmp_path, write_config, aof_redis,
                                                    jd_factory, fault_broker):
    """An outage longer than max.poll.interval.ms (here 8 s): the consumer
    leaves the group while the engine is still retrying; nothing may be
    lost or doubled when Redis returns."""
    def outage(w):
        aof_redis.kill()
        w.sample(14)
        aof_redis.start()
        return time.monotonic()

    run_with_outage(tmp_path, "redis_long", write_config, aof_redis, jd_factory, fault_broker,
                    outage, extra_props={"max.poll.interval.ms": "8000"})
