"""Timers and partition ownership (issue 4): two journeyd instances in one
group. Timers scheduled by one instance stay in Redis when a second joins
and takes partitions over; they fire once, by whoever owns the partition
then. When an instance is SIGKILLed, its partitions' timers fire once on
the survivor."""

import time

import jdtest
import timerslib

GROUP = "timers-own"


def cfg(write_config, window):
    o = {"kafka.group_id": GROUP, "processing.clock": "wall"}
    o.update(timerslib.short_cart_rules(window))
    return write_config(o, name=f"own-{window}.conf")


def carts(prefix, n, at, window_ms):
    events = [jdtest.touchpoint(f"{prefix}-{i}", "add_to_cart", at) for i in range(n)]
    return events, {f"{prefix}-{i}": at + window_ms for i in range(n)}


def assert_once(triggers, expect):
    by = {}
    for t, _ts in triggers:
        by.setdefault(t["customer_id"], []).append(t)
    missing = set(expect) - set(by)
    assert not missing, f"{len(missing)} timers never fired, e.g. {sorted(missing)[:5]}"
    for cid, due in expect.items():
        ts = by[cid]
        assert len(ts) == 1, (cid, ts)
        assert timerslib.ms(ts[0]["fired_at"]) == due
        assert ts[0]["trigger_id"] == timerslib.timer_trigger_id(
            "cart_reminder", ts[0]["rule_version"], cid, due)


def assigned(jd):
    return int(jd.metrics().get("journeyd_assigned_partitions", 0))


def timers_fired(jd):
    return jdtest.metric_sum(jd.metrics(), "journeyd_timer_lateness_seconds_count")


def test_partitions_move_timers_fire_once(devbroker, write_config, journeyd_factory):
    b = devbroker.bootstrap
    window = 30000  # outlasts the rebalance
    conf = cfg(write_config, "30s")
    a = journeyd_factory(conf)
    a.wait_ready()
    at = int(time.time() * 1000)
    events, expect = carts("own", 200, at, window)
    timerslib.produce(b, events)
    jdtest.wait_caught_up(b, GROUP, "touchpoints", timeout=20)

    # a second member: partitions (and their pending timers) move to it
    c = journeyd_factory(conf)
    c.wait_ready()
    jdtest.wait_until(lambda: assigned(a) + assigned(c) == 8 and assigned(a) < 8, 30,
                      what="partitions shared by the two members")
    assert time.time() * 1000 < at + window, "the timers came due before the rebalance"
    got = timerslib.read_triggers(b, expect_n=len(expect), timeout=40)
    assert_once(got, expect)
    fa, fc = timers_fired(a), timers_fired(c)
    print(f"\ntimers fired: first member {fa:.0f}, second member {fc:.0f} "
          f"(partitions {assigned(a)} / {assigned(c)})")
    assert fa > 0 and fc > 0

    # the second member dies holding partitions with timers pending: the
    # survivor takes them over (after the session timeout) and fires them
    at2 = int(time.time() * 1000)
    events2, expect2 = carts("own2", 200, at2, window)
    timerslib.produce(b, events2)
    jdtest.wait_caught_up(b, GROUP, "touchpoints", timeout=20)
    c.sigkill()
    c.wait()
    jdtest.wait_until(lambda: assigned(a) == 8, 60, what="the survivor owning all partitions")
    expect_all = dict(expect)
    expect_all.update(expect2)
    got = timerslib.read_triggers(b, expect_n=len(expect_all), timeout=60)
    assert_once(got, expect_all)
    assert a.stop() == 0
