"""Timers under the event clock (issue 4), with the shipped rules: a 90-day
journey played in seconds fires exactly the expected re-engagement triggers
(cart_reminder one hour after an add_to_cart without purchase, winback 60
days after the last touchpoint of a buyer), each once, with fired_at the due
time and the trigger id derived from it; a second run of the same input
(another group, another key prefix) produces the same triggers; an idle
partition's timers fire once its watermark follows the wall clock, and not
before."""

import time
import zlib

import jdtest
import timerslib

H = 3600 * 1000
D = 24 * H
NPART = 8


def part_of(cid):
    return zlib.crc32(cid.encode()) % NPART


def pick(base):
    """A customer id outside winback's 10 % holdout (src/policy.c)."""
    for i in range(100):
        cid = f"{base}-{i}"
        if not timerslib.in_holdout(cid, "winback", 0.10):
            return cid
    raise AssertionError("no id outside the holdout")


def produce_by_partition(bootstrap, events):
    """Events in time order, each to its customer's partition (part_of)."""
    events = sorted(events, key=lambda e: e["occurred_at"])
    for p in range(NPART):
        mine = [e for e in events if part_of(e["customer_id"]) == p]
        if mine:
            timerslib.produce(bootstrap, mine, partition=p)


def journey():
    """(events, {(customer, trigger): fired_at}) of the 90-day journey."""
    b = jdtest.base_time_ms(days_ago=100)  # noon UTC: dues stay out of quiet hours
    tp = jdtest.touchpoint
    ev, want = [], {}
    a, bb, c, d, e, f = (pick(x) for x in ("cart-silent", "buyer-lapses", "cart-bought",
                                            "cart-late-buy", "active", "returns"))
    # an abandoned cart, no purchase ever: a reminder, never a winback
    ev.append(tp(a, "add_to_cart", b))
    want[(a, "cart_reminder")] = b + H
    # a buyer whose last touch is day 5: winback on day 65
    ev += [tp(bb, "purchase", b, amount=20), tp(bb, "page_view", b + 5 * D)]
    want[(bb, "winback")] = b + 65 * D
    # a cart bought within the hour: no reminder; winback 60 days after
    ev += [tp(c, "add_to_cart", b + D), tp(c, "purchase", b + D + H // 2, amount=5)]
    want[(c, "winback")] = b + D + H // 2 + 60 * D
    # a cart bought two hours later: reminder after one, then winback
    ev += [tp(d, "add_to_cart", b + 2 * D), tp(d, "purchase", b + 2 * D + 2 * H, amount=7)]
    want[(d, "cart_reminder")] = b + 2 * D + H
    want[(d, "winback")] = b + 2 * D + 2 * H + 60 * D
    # active all along (a cart bought within ten minutes on day 30): nothing
    for k in range(0, 91, 10):
        ev.append(tp(e, "purchase" if k % 20 == 0 else "page_view", b + k * D, amount=3))
    ev += [tp(e, "add_to_cart", b + 30 * D + H), tp(e, "purchase", b + 30 * D + H + 600000,
                                                      amount=9)]
    # lapses on day 60, comes back on day 80: one winback only
    ev += [tp(f, "purchase", b, amount=1), tp(f, "page_view", b + 80 * D)]
    want[(f, "winback")] = b + 60 * D
    # the event clock: a pulse customer per partition every 12 hours, to day 91
    for p in range(NPART):
        pid = next(f"pulse{p}-{i}" for i in range(1000) if part_of(f"pulse{p}-{i}") == p)
        for k in range(0, 91 * 2 + 1):
            ev.append(tp(pid, "page_view", b + k * 12 * H))
    return ev, want


def check(triggers, want):
    got = {}
    for t, _ts in triggers:
        key = (t["customer_id"], t["trigger"])
        assert key not in got, f"{key} fired twice"
        got[key] = t
    assert set(got) == set(want), set(got) ^ set(want)
    for key, t in got.items():
        assert timerslib.ms(t["fired_at"]) == want[key], (key, t["fired_at"], want[key])
        assert t["source_event_id"] is None
        assert t["kind"] == "REENGAGEMENT"
        assert t["trigger_id"] == timerslib.timer_trigger_id(key[1], t["rule_version"], key[0],
                                                             want[key])
    return got


def no_triggers(devbroker):
    """Nothing on the re-engagement topic (read to its end, once joined)."""
    return jdtest.consume_all(devbroker.bootstrap, timerslib.REENGAGEMENT, timeout=20) == []


def run_from_scratch(devbroker, write_config, journeyd_factory, group):
    """journeyd over the whole input again, as if for the first time (its own
    group and key prefix), until it has committed everything."""
    cfg = write_config({"kafka.group_id": group, "processing.idle_advance": "0",
                        "redis.key_prefix": group}, name=f"{group}.conf")
    jd = journeyd_factory(cfg)
    jd.wait_ready()
    jdtest.wait_caught_up(devbroker.bootstrap, group, "touchpoints", timeout=60)
    return jd


def test_ninety_day_journey(devbroker, write_config, journeyd_factory):
    events, want = journey()
    produce_by_partition(devbroker.bootstrap, events)
    t0 = time.monotonic()
    # idle_advance off: nothing here depends on the wall clock
    cfg = write_config({"kafka.group_id": "timers-90d", "processing.idle_advance": "0"})
    jd = journeyd_factory(cfg)
    jd.wait_ready()
    jdtest.wait_caught_up(devbroker.bootstrap, "timers-90d", "touchpoints", timeout=60)
    first = timerslib.read_triggers(devbroker.bootstrap, expect_n=len(want), timeout=30)
    print(f"\n{len(events)} events over 91 days played in {time.monotonic() - t0:.1f} s; "
          f"{len(first)} re-engagement triggers")
    got = check(first, want)
    rewards = jdtest.consume_all(devbroker.bootstrap, "loyalty.rewards", timeout=10,
                                 decode=False)
    assert rewards, "the buyers' welcome_first_purchase rewards"
    assert jd.stop() == 0

    # the same input again, from scratch (another group, another key
    # prefix): the same triggers, ids included
    jd2 = run_from_scratch(devbroker, write_config, journeyd_factory, "timers-90d-replay")
    both = timerslib.read_triggers(devbroker.bootstrap, expect_n=2 * len(want), timeout=30)
    assert len(both) == 2 * len(want)
    ids = {}
    for t, _ts in both:
        ids.setdefault(t["trigger_id"], []).append(t)
    assert set(ids) == {t["trigger_id"] for t in got.values()}
    for tid, ts in ids.items():
        assert len(ts) == 2 and ts[0] == ts[1], ts
    assert jd2.stop() == 0


def test_idle_partition_follows_wall_clock(devbroker, redis_server, write_config,
                                           journeyd_factory):
    # a buyer silent since 70 days ago: winback came due 10 days ago, but
    # nothing else arrives to move the partition's watermark
    b = jdtest.base_time_ms(days_ago=70)
    cid = pick("idle-buyer")
    timerslib.produce(devbroker.bootstrap, [jdtest.touchpoint(cid, "purchase", b, amount=4)])
    cfg = write_config({"kafka.group_id": "timers-idle", "processing.idle_advance": "0"})
    jd = journeyd_factory(cfg)
    jd.wait_ready()
    jdtest.wait_caught_up(devbroker.bootstrap, "timers-idle", "touchpoints", timeout=30)
    time.sleep(2)
    assert no_triggers(devbroker)
    assert jd.stop() == 0

    # with idle_advance, the caught-up, silent partition takes the wall clock
    cfg = write_config({"kafka.group_id": "timers-idle", "processing.idle_advance": "2s"},
                       name="idle.conf")
    jd2 = journeyd_factory(cfg)
    jd2.wait_ready()
    got = timerslib.read_triggers(devbroker.bootstrap, expect_n=1, timeout=30)
    check(got, {(cid, "winback"): b + 60 * D})
    # the wall clock it follows is stored as its event clock too (every
    # second or so, its events all written: src/engine_clock.c), as of its
    # position
    key = "j:{p:touchpoints:%d}:wm" % part_of(cid)

    def stored():
        wm = redis_server.client().hgetall(key)
        assert not wm or wm["offset"] == "1", wm
        return int(wm["watermark"]) if wm else 0
    jdtest.wait_until(lambda: stored() > b + 60 * D, 10, what="the idle partition's clock stored")
    first = stored()
    jdtest.wait_until(lambda: stored() >= first + 1000, 10, what="the stored clock to move on")
    assert jd2.stop() == 0


def test_clock_resumes_after_a_crash(devbroker, redis_server, write_config, journeyd_factory):
    """The event clock is kept in Redis (src/engine_clock.c): after a crash,
    a purchase arriving 61 days of event time behind its partition's
    watermark is evaluated at that watermark, as in a run without the crash
    — the buyer is lapsed at once and gets its winback. Evaluated at its own
    time (the clock restarting from the replayed events) it would not be."""
    b = jdtest.base_time_ms(days_ago=100)
    part = 3
    ahead = jdtest.touchpoint("clock-ahead", "page_view", b + 61 * D)
    late = jdtest.touchpoint(pick("clock-late-buyer"), "purchase", b, amount=5)
    timerslib.produce(devbroker.bootstrap, [ahead], partition=part)
    cfg = write_config({"kafka.group_id": "clock-crash", "processing.idle_advance": "0"})
    jd = journeyd_factory(cfg)
    jd.wait_ready()
    jdtest.wait_caught_up(devbroker.bootstrap, "clock-crash", "touchpoints", timeout=30)
    # committed, so stored (it moved with the batch of that offset)
    committed = jdtest.committed_offsets(devbroker.bootstrap, "clock-crash", "touchpoints")[part]
    wm = redis_server.client().hgetall("j:{p:touchpoints:%d}:wm" % part)
    assert int(wm["watermark"]) == b + 61 * D, wm
    assert int(wm["offset"]) == committed == 1, (wm, committed)
    jd.sigkill()
    jd.wait()

    timerslib.produce(devbroker.bootstrap, [late], partition=part)
    jd2 = journeyd_factory(cfg)
    jd2.wait_ready()
    jdtest.wait_caught_up(devbroker.bootstrap, "clock-crash", "touchpoints", timeout=30)
    got = timerslib.read_triggers(devbroker.bootstrap, expect_n=1, timeout=20)
    assert [(t["customer_id"], t["trigger"], t["source_event_id"]) for t, _ in got] == \
        [(late["customer_id"], "winback", late["event_id"])], got
    jd2.wait_for_log(r"touchpoints/%d: event clock resumes at %d" % (part, b + 61 * D))
    assert jd2.stop() == 0

    # the same input without a crash (another group, another key prefix):
    # the same trigger, id included
    jd3 = run_from_scratch(devbroker, write_config, journeyd_factory, "clock-whole")
    both = timerslib.read_triggers(devbroker.bootstrap, expect_n=2, timeout=20)
    assert len(both) == 2 and both[0][0] == both[1][0], both
    assert jd3.stop() == 0


def test_clock_of_another_log_is_ignored(devbroker, redis_server, write_config,
                                         journeyd_factory):
    """A stored event clock whose offset is past the end of the partition's
    log was left by an earlier topic of that name (recreated, its offsets
    started over): ignored with a warning, the clock starts from the events,
    so the late buyer of the test above is not lapsed."""
    b = jdtest.base_time_ms(days_ago=100)
    part = 2
    redis_server.client().hset("j:{p:touchpoints:%d}:wm" % part,
                               mapping={"watermark": b + 61 * D, "offset": 1000})
    late = jdtest.touchpoint(pick("clock-other-log"), "purchase", b, amount=5)
    timerslib.produce(devbroker.bootstrap, [late], partition=part)
    jd = journeyd_factory(write_config({"kafka.group_id": "clock-other",
                                        "processing.idle_advance": "0"}))
    jd.wait_ready()
    jdtest.wait_caught_up(devbroker.bootstrap, "clock-other", "touchpoints", timeout=30)
    jd.wait_for_log(r"touchpoints/%d: stored event clock at offset 1000 is past the end of the "
                    r"log \(1\): ignored" % part)
    assert no_triggers(devbroker)
    wm = redis_server.client().hgetall("j:{p:touchpoints:%d}:wm" % part)
    assert wm == {"watermark": str(b), "offset": "1"}, wm  # its own, once written
    assert jd.stop() == 0
