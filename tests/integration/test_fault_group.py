"""Fault test 4 (issue 6): scale-out and scale-in under load. A second
journeyd joins the group mid-run and later leaves (SIGTERM: revoked
partitions are finished and committed before release); a third is SIGKILLed
while it owns partitions (its partitions are taken over after the session
times out, their uncommitted tail replayed). The state must be exact and
every trigger delivered with one id."""

import time

import jdtest
import faultlib
from faultlib import fault_broker, jd_factory  # noqa: F401 (fixtures)


def owns_and_consumes(jd):
    m = jd.metrics()
    return (jdtest.metric_sum(m, "journeyd_assigned_partitions") > 0
            and jdtest.metric_sum(m, "journeyd_events_consumed_total") > 0)


def test_join_leave_and_kill_a_member(tmp_path, write_config, redis_server, jd_factory,
                                      fault_broker):
    group = faultlib.new_group("group")
    confs = {name: faultlib.fault_config(write_config, group, instance_id=f"jd-{name}",
                                         name=f"{name}.conf")
             for name in ("a", "b", "c")}
    version = faultlib.rule_version(confs["a"])
    events = faultlib.workload(n_events=120_000, n_customers=4000, seed=17, days=30)
    ref = faultlib.Reference(events)
    a = jd_factory(confs["a"], redis_server.address)
    a.wait_ready(timeout=60)
    prod = faultlib.BackgroundProducer(fault_broker.bootstrap, events, rate=4000)
    prod.start()
    t0 = time.monotonic()
    marks = []

    def mark(what):
        marks.append(f"{time.monotonic() - t0:5.1f}s {what}")

    time.sleep(3)
    b = jd_factory(confs["b"], redis_server.address)
    mark("b started")
    jdtest.wait_until(lambda: owns_and_consumes(b), 60, interval=0.2, what="b consuming")
    mark(f"b owns {faultlib.metric(b, 'journeyd_assigned_partitions'):.0f} partitions")
    c = jd_factory(confs["c"], redis_server.address)
    mark("c started")
    jdtest.wait_until(lambda: owns_and_consumes(c), 60, interval=0.2, what="c consuming")
    mark(f"c owns {faultlib.metric(c, 'journeyd_assigned_partitions'):.0f} partitions")
    time.sleep(1.5)
    c.sigkill()
    c.wait(10)
    mark("c SIGKILLed")
    time.sleep(4)
    b.sigterm()
    assert b.wait(60) == 0
    mark("b left (SIGTERM, exit 0)")
    assert "revoked" in b.log_text()

    prod.join(jdtest.scaled(180))
    assert prod.error is None, prod.error
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=240)
    mark("a caught up")
    replayed = faultlib.metric(a, "journeyd_events_replayed_total")
    jdtest.wait_until(lambda: faultlib.metric(a, "journeyd_outbox_pending") == 0, 60,
                      what="outbox drained")
    assert a.stop() == 0
    bad = faultlib.check_state(redis_server.client(), ref)
    recs = faultlib.consume_triggers(fault_broker.bootstrap, expect_n=len(ref.first_purchase))
    chk = faultlib.TriggerCheck(recs, ref, version)
    faultlib.report(tmp_path, "group", marks + [
        f"{len(events)} events; a replayed {replayed} already-applied events",
        f"triggers {len(recs)} delivered, {chk.duplicate_deliveries} duplicate deliveries, "
        f"{len(chk.missing)} missing; state mismatches {len(bad)}"])
    assert bad == [], bad[:10]
    assert chk.problems() == []
