"""Fault test 1 (issue 6): SIGKILL journeyd at random moments during a
200,000-event run over 5,000 customers, restart it each time, and find the
state exact and every trigger delivered with one id (docs/guarantees.md).

Also checks the trigger_id formula against an independent implementation,
so that the big run can name every trigger it expects by id.

Figures (events replayed after each crash, time to recover, duplicate
deliveries) are printed; run with `pytest -s` to see them.
"""

import os
import random
import time

import jdtest
import faultlib
from faultlib import fault_broker, jd_factory  # noqa: F401 (fixtures)

SEED = int(os.environ.get("JD_FAULT_SEED", "6"))


def test_trigger_id_formula(tmp_path, write_config, redis_server, jd_factory, fault_broker):
    """welcome_first_purchase ids equal the hash of (rule, version, customer,
    source event) computed here, and a second delivery of the same logical
    trigger (a replay from an offset reset) carries the same id."""
    group = faultlib.new_group("tid")
    conf = faultlib.fault_config(write_config, group)
    version = faultlib.rule_version(conf)
    events = faultlib.workload(n_events=2000, n_customers=100, seed=SEED + 1, dup_rate=0.02)
    faultlib.encode_selfcheck(events[:500])
    ref = faultlib.Reference(events)
    faultlib.produce(fault_broker.bootstrap, events)
    jd = jd_factory(conf, redis_server.address)
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=60)
    assert jd.stop() == 0
    assert faultlib.check_state(redis_server.client(), ref) == []
    recs = faultlib.consume_triggers(fault_broker.bootstrap, expect_n=len(ref.first_purchase))
    chk = faultlib.TriggerCheck(recs, ref, version)
    assert chk.problems() == []
    assert chk.duplicate_deliveries == 0  # no crash, no duplicate
    assert faultlib.outbox_leftovers(redis_server.client()) == {}


def test_sigkill_at_random_moments(tmp_path, write_config, redis_server, jd_factory,
                                   fault_broker):
    rng = random.Random(SEED)
    group = faultlib.new_group("kill")
    # static membership: a restarted instance takes its partitions back
    # without waiting for the group session of the killed one to time out
    conf = faultlib.fault_config(write_config, group, instance_id="jd-fault-1",
                                 session_timeout="4s",
                                 kafka_properties={"heartbeat.interval.ms": "500"})
    version = faultlib.rule_version(conf)
    events = faultlib.workload(seed=SEED)
    ref = faultlib.Reference(events)
    prod = faultlib.BackgroundProducer(fault_broker.bootstrap, events, rate=5000)

    def start():
        return jd_factory(conf, redis_server.address)

    jd = start()
    jd.wait_ready(timeout=60)
    prod.start()
    crashes = []
    t_run = time.monotonic()
    kills = 0
    while True:
        # Each instance lives until it resumed consuming plus a random
        # 0.3-4 s (a crash in full flow), except every third one, killed at a
        # random moment of its start-up (a crash during recovery).
        started = time.monotonic()
        early = kills % 3 == 2
        life = rng.uniform(0.5, 4.0) if early else None
        resumed = None
        last = {}
        while True:
            now = time.monotonic()
            if early and now - started >= life:
                break
            if not early and resumed is not None and now - resumed >= extra:
                break
            if not early and now - started > jdtest.scaled(60):
                break  # never resumed: reported below
            consumed = faultlib.metric(jd, "journeyd_events_consumed_total")
            if consumed is not None:
                last = {"consumed": consumed,
                        "replayed": faultlib.metric(jd, "journeyd_events_replayed_total"),
                        "redelivered": faultlib.metric(jd, "journeyd_triggers_redelivered_total")}
                if resumed is None and consumed > 0:
                    resumed = time.monotonic()
                    extra = rng.uniform(0.3, 4.0)
            assert jd.running(), f"journeyd exited on its own:\n{jd.log_text()[-3000:]}"
            time.sleep(0.05)
        if crashes:
            crashes[-1].update(last)
            crashes[-1]["recover_s"] = None if resumed is None else resumed - crashes[-1]["t_kill"]
        if kills >= 6 and prod.done.is_set():
            break
        jd.sigkill()
        jd.wait(10)
        kills += 1
        crashes.append({"t_kill": time.monotonic(), "at_s": time.monotonic() - t_run,
                        "produced": prod.sent, "early": early})
        jd = start()
    prod.join(jdtest.scaled(120))
    assert prod.error is None, prod.error

    # the last instance finishes the run
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=240)
    crashes[-1].update({"consumed": faultlib.metric(jd, "journeyd_events_consumed_total"),
                        "replayed": faultlib.metric(jd, "journeyd_events_replayed_total"),
                        "redelivered": faultlib.metric(jd, "journeyd_triggers_redelivered_total")})
    jdtest.wait_until(lambda: faultlib.metric(jd, "journeyd_outbox_pending") == 0, 60,
                      what="outbox drained")
    assert jd.stop() == 0
    elapsed = time.monotonic() - t_run

    end = faultlib.EndOfRun(redis_server.client(), fault_broker.bootstrap, ref, version)

    lines = [f"seed {SEED}, {len(events)} events ({ref.duplicates} duplicate event ids), "
             f"{len(ref.counts)} customers, {kills} SIGKILLs, {elapsed:.1f} s"]
    for i, c in enumerate(crashes, 1):
        rec = c.get("recover_s")
        lines.append(f"crash {i} at {c['at_s']:.1f}s{' (start-up)' if c['early'] else ''} "
                     f"(produced {c['produced']}): "
                     f"replayed {c.get('replayed')}, outbox re-sent {c.get('redelivered')}, "
                     f"next resumed {'-' if rec is None else f'{rec:.2f}s'} after the kill")
    lines += end.lines()
    faultlib.report(tmp_path, "sigkill", lines)

    assert end.bad == [], end.bad[:10]
    assert end.chk.problems() == []
    assert end.undelivered_left == []
    recovered = [c["recover_s"] for c in crashes if c.get("recover_s") is not None]
    assert recovered, "no restarted instance ever resumed consuming"


def test_unacknowledged_event_triggers_survive_a_crash(tmp_path, write_config, redis_server,
                                                       jd_factory, fault_broker):
    """A trigger fired by an input event is in its customer's outbox but not
    in the partition's outbox index (store_timers.c): until Kafka
    acknowledges it, its event's offset is not committed, so a crash
    replays the event, and loading the customer re-sends the outbox. Here
    every Produce request of journeyd fails (injected NOT_LEADER), it is
    SIGKILLed with all the expected triggers in the outboxes and none in the
    index, and the next start delivers each expected id exactly once."""
    group = faultlib.new_group("evob")
    conf = faultlib.fault_config(write_config, group, instance_id="jd-evob-1",
                                 session_timeout="4s",
                                 kafka_properties={"heartbeat.interval.ms": "500"})
    version = faultlib.rule_version(conf)
    events = faultlib.workload(n_events=3000, n_customers=200, seed=SEED + 2, dup_rate=0.01)
    ref = faultlib.Reference(events)
    faultlib.produce(fault_broker.bootstrap, events)
    fault_broker.push_errors(0, 6, 1024)  # Produce: NOT_LEADER_OR_FOLLOWER
    jd = jd_factory(conf, redis_server.address)
    client = redis_server.client()
    want = {faultlib.trigger_id("welcome_first_purchase", version, c, e)
            for c, e in ref.first_purchase.items()}
    assert len(want) > 50

    def outboxed():
        return {t for ids in faultlib.outbox_leftovers(client).values() for t in ids}

    jdtest.wait_until(lambda: want <= outboxed(), 60, what="every expected trigger outboxed")
    # indexed: only customers with a trigger that no replay brings back (a
    # timer that the partition's clock made due between events)
    indexed = set()
    for p in range(faultlib.FAULT_TOPICS["touchpoints"]):
        indexed |= set(client.zrange(f"j:{{p:touchpoints:{p}}}:outbox", 0, -1))
    only_event = {c for c, ids in faultlib.outbox_leftovers(client).items() if set(ids) <= want}
    assert len(only_event) >= 10
    assert not indexed & only_event, f"{sorted(indexed & only_event)[:5]} indexed"
    assert faultlib.metric(jd, "journeyd_triggers_redelivered_total") == 0
    jd.sigkill()
    jd.wait(10)
    fault_broker.clear_errors(0)
    # an entry left by a crash between an outbox's HDEL and its ZREM: the
    # next owner removes it at assignment
    client.zadd("j:{p:touchpoints:0}:outbox", {"stale-customer": 0})

    jd = jd_factory(conf, redis_server.address)
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=60)
    jdtest.wait_until(lambda: faultlib.metric(jd, "journeyd_outbox_pending") == 0, 60,
                      what="outbox drained")
    assert faultlib.metric(jd, "journeyd_triggers_redelivered_total") >= len(want)
    jd.wait_for_log(r"touchpoints/0: \d+ outbox index entries with an empty outbox removed")
    assert client.zscore("j:{p:touchpoints:0}:outbox", "stale-customer") is None
    assert jd.stop() == 0
    assert faultlib.check_state(client, ref) == []
    recs = faultlib.consume_triggers(fault_broker.bootstrap, expect_n=len(want))
    chk = faultlib.TriggerCheck(recs, ref, version)
    assert chk.problems() == []
    assert want <= set(chk.by_id)
    assert chk.duplicate_deliveries == 0, "nothing was delivered before the crash"
    assert faultlib.outbox_leftovers(client) == {}
