"""Fault test 3 (issue 6): the broker goes down and comes back, and requests
fail with errors injected through the mock cluster's error API (devbroker
`error APIKEY ERRCODE COUNT`). Nothing may be lost: the state equals the
reference and every expected trigger is delivered with one id."""

import time

import jdtest
import faultlib
from faultlib import fault_broker, jd_factory  # noqa: F401 (fixtures)

PRODUCE, FETCH, OFFSET_COMMIT, HEARTBEAT = 0, 1, 8, 12
NOT_LEADER, REQUEST_TIMED_OUT, COORDINATOR_NOT_AVAILABLE = 6, 7, 15


def run(tmp_path, name, write_config, redis_server, jd_factory, fault_broker, fault):
    group = faultlib.new_group(name)
    conf = faultlib.fault_config(write_config, group)
    version = faultlib.rule_version(conf)
    events = faultlib.workload(n_events=60_000, n_customers=2000, seed=13, days=20)
    ref = faultlib.Reference(events)
    jd = jd_factory(conf, redis_server.address)
    jd.wait_ready(timeout=60)
    prod = faultlib.BackgroundProducer(fault_broker.bootstrap, events, rate=4000)
    prod.start()
    time.sleep(2)
    t0 = time.monotonic()
    ready = fault(jd)
    t_fault = time.monotonic() - t0
    prod.join(jdtest.scaled(180))
    assert prod.error is None, prod.error
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=240)
    jdtest.wait_until(lambda: faultlib.metric(jd, "journeyd_outbox_pending") == 0, 60,
                      what="outbox drained")
    kerr = faultlib.metric(jd, "journeyd_kafka_errors_total")
    assert jd.stop() == 0
    bad = faultlib.check_state(redis_server.client(), ref)
    recs = faultlib.consume_triggers(fault_broker.bootstrap, expect_n=len(ref.first_purchase))
    chk = faultlib.TriggerCheck(recs, ref, version)
    faultlib.report(tmp_path, name, [
        f"{len(events)} events; fault phase {t_fault:.1f}s; kafka errors counted {kerr}; "
        f"/readyz during the fault {sorted(set(ready))}",
        f"triggers {len(recs)} delivered, {chk.duplicate_deliveries} duplicate deliveries, "
        f"{len(chk.missing)} missing; state mismatches {len(bad)}"])
    assert bad == [], bad[:10]
    assert chk.problems() == []
    return ready


def sample_ready(jd, seconds):
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(jd.http_get("/readyz")[0])
        assert jd.running(), jd.log_text()[-3000:]
        time.sleep(0.25)
    return out


def test_broker_down_and_up(tmp_path, write_config, redis_server, jd_factory, fault_broker):
    def fault(jd):
        fault_broker.down(1)
        ready = sample_ready(jd, 10)  # longer than the 6 s group session
        fault_broker.up(1)
        return ready

    ready = run(tmp_path, "broker_down", write_config, redis_server, jd_factory, fault_broker,
                fault)
    assert 503 in ready, "journeyd stayed ready with the only broker down"


def test_injected_request_errors(tmp_path, write_config, redis_server, jd_factory,
                                 fault_broker):
    def fault(jd):
        ready = []
        for api, err, n in [(PRODUCE, NOT_LEADER, 40), (PRODUCE, REQUEST_TIMED_OUT, 40),
                            (FETCH, NOT_LEADER, 20), (OFFSET_COMMIT, COORDINATOR_NOT_AVAILABLE, 10),
                            (HEARTBEAT, COORDINATOR_NOT_AVAILABLE, 5)]:
            fault_broker.push_errors(api, err, n)
            ready += sample_ready(jd, 1.5)
        return ready

    run(tmp_path, "broker_errors", write_config, redis_server, jd_factory, fault_broker, fault)


def test_transactions_refused_until_implemented(write_config):
    """kafka.transactions = true must not be silently ignored: it is refused
    at load with a pointer to docs/guarantees.md."""
    r = jdtest.run_journeyd(["--check", "-c", write_config({"kafka.transactions": True})])
    assert r.returncode == 1
    assert "kafka.transactions" in r.stderr and "not implemented" in r.stderr
    r = jdtest.run_journeyd(["--check", "-c", write_config({"kafka.transactions": False})])
    assert r.returncode == 0, r.stderr
