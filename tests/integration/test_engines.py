"""processing.engines: N engines in one journeyd process, each on a thread of
its own and a full member of the consumer group (its own consumer, producer,
Redis connections and cache). The group splits the input partitions between
them as between N instances, with the guarantees of N instances: state
exactly once, every trigger delivered at least once with a stable
trigger_id, nothing lost on SIGKILL. /metrics shows the engines as one
(counters summed, journeyd_engines = N); the text log tags engine i's lines
with "[e<i>]"; SIGHUP reloads every engine; SIGTERM stops them all cleanly.

Which engine owns which partition is read from the rebalance lines of the
log ("[e1] assigned touchpoints/3", "[e0] revoked touchpoints/3"): /metrics
only shows the sum."""

import os
import random
import re
import signal
import time

import jdtest
import faultlib
from jdtest import Raw
from faultlib import fault_broker, jd_factory  # noqa: F401 (fixtures)

SEED = int(os.environ.get("JD_FAULT_SEED", "6"))

_REBALANCE = re.compile(
    r"^\S+ +\w+ +rebalance +\[e(\d+)\] (assigned|revoked|lost) ([^\s/]+)/(\d+)\s*$", re.M)
_UNTAGGED_REBALANCE = re.compile(r"^\S+ +\w+ +rebalance +(assigned|revoked|lost) ", re.M)


def ownership(log_text, topic="touchpoints"):
    """{engine index: set of partitions of `topic` it owns now}, replaying the
    tagged rebalance lines of the log in order."""
    owned = {}
    for m in _REBALANCE.finditer(log_text):
        if m.group(3) != topic:
            continue
        parts = owned.setdefault(int(m.group(1)), set())
        if m.group(2) == "assigned":
            parts.add(int(m.group(4)))
        else:
            parts.discard(int(m.group(4)))
    return owned


def split_between(jd, engines, partitions, topic="touchpoints"):
    """The ownership when every one of `engines` owns partitions and together
    they own each of `partitions` exactly once; None otherwise (raises Fatal
    when journeyd exited)."""
    jd._alive_or_raise()
    owned = ownership(jd.log_text(), topic)
    if sorted(owned) != list(range(engines)) or not all(owned.values()):
        return None
    union = set().union(*owned.values())
    if union != set(range(partitions)) or sum(len(s) for s in owned.values()) != partitions:
        return None
    return owned


def build_info_versions(metrics):
    """The rule_version label of every journeyd_build_info series."""
    out = []
    for key in metrics:
        if key.startswith("journeyd_build_info{"):
            m = re.search(r'rule_version="((?:\\.|[^"\\])*)"', key)
            out.append(m.group(1) if m else None)
    return out


def metric_exact(jd, name):
    """The value of the series `name` (no labels), None when absent or when
    /metrics does not answer."""
    try:
        return jd.metrics().get(name)
    except Exception:
        return None


def engines_config(write_config, group, engines=2, **kw):
    extra = {"processing.engines": engines}
    extra.update(kw.pop("extra", None) or {})
    return faultlib.fault_config(write_config, group, extra=extra, **kw)


def test_two_engines_exact(tmp_path, write_config, redis_server, jd_factory, fault_broker):
    """20,000 events over 1,000 customers, produced before the start: both
    engines own partitions (8 + 8 of the 16), every event is applied once,
    and after SIGTERM (exit 0, offsets committed) the state is exact, every
    expected trigger was delivered exactly once and no outbox is left."""
    parts = faultlib.FAULT_TOPICS["touchpoints"]
    group = faultlib.new_group("eng2")
    conf = engines_config(write_config, group)
    version = faultlib.rule_version(conf)
    events = faultlib.workload(n_events=20_000, n_customers=1_000, seed=SEED, days=20)
    ref = faultlib.Reference(events)
    faultlib.produce(fault_broker.bootstrap, events)

    jd = jd_factory(conf, redis_server.address)
    owned = jdtest.wait_until(lambda: split_between(jd, 2, parts), 60, interval=0.1,
                              what="both engines owning partitions, all 16 owned once")
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=120)
    jdtest.wait_until(lambda: faultlib.metric(jd, "journeyd_outbox_pending") == 0, 60,
                      what="outbox drained")

    m = jd.metrics()
    assert m.get("journeyd_engines") == 2, m.get("journeyd_engines")
    assert m.get("journeyd_assigned_partitions") == parts, m.get("journeyd_assigned_partitions")
    # Each engine keeps its customers in a memory pool of its own (src/cmem.c),
    # mapped 1 MiB at a time: ~500 customers each take one mapping apiece.
    mem = int(m.get("journeyd_customer_memory_bytes") or 0)
    assert mem % (1 << 20) == 0 and 2 <= mem >> 20 <= 4, mem
    assert 0 < m.get("journeyd_cached_customers") <= 1000
    # Every event applied once. (Consumed twice only if the group handed
    # partitions from one engine to the other at start-up before their first
    # commit, as between two instances: then the second read is skipped as
    # already applied and counted as replayed.)
    consumed = jdtest.metric_sum(m, "journeyd_events_consumed_total")
    replayed = jdtest.metric_sum(m, "journeyd_events_replayed_total")
    assert consumed - replayed == len(events), (
        f"{consumed} events consumed for {len(events)} produced; replayed {replayed}, "
        f"rebalances {jdtest.metric_sum(m, 'journeyd_rebalances_total')}")
    assert m.get("journeyd_ready") == 1
    assert jd.http_get("/readyz")[0] == 200
    assert jd.http_get("/healthz")[0] == 200
    log = jd.log_text()
    # no rebalance moved partitions since the split was seen
    assert ownership(log) == owned, (ownership(log), owned)
    for i in (0, 1):
        assert re.search(rf"^\S+ +\w+ +\S+ +\[e{i}\] running: ", log, re.M), f"no [e{i}] running"
    assert not _UNTAGGED_REBALANCE.search(log), "an engine's rebalance line without its tag"
    assert "[e2]" not in log

    assert jd.stop() == 0
    log = jd.log_text()
    for i in (0, 1):
        assert re.search(rf"\[e{i}\] stopped\s*$", log, re.M), f"[e{i}] did not stop cleanly"
    high = jdtest.high_watermarks(fault_broker.bootstrap, "touchpoints")
    committed = jdtest.committed_offsets(fault_broker.bootstrap, group, "touchpoints")
    assert {p: committed.get(p) for p in high if high[p]} == {p: h for p, h in high.items() if h}

    client = redis_server.client()
    bad = faultlib.check_state(client, ref)
    assert bad == [], bad[:10]
    recs = faultlib.consume_triggers(fault_broker.bootstrap, expect_n=len(ref.first_purchase))
    chk = faultlib.TriggerCheck(recs, ref, version)
    assert len(chk.expected_welcome) > 100
    assert chk.problems() == []
    assert chk.duplicate_deliveries == 0  # no crash, no duplicate
    assert faultlib.outbox_leftovers(client) == {}



def test_cache_shared_by_partitions(tmp_path, write_config, redis_server):
    """3 input partitions over 2 engines: one owns 2, the other 1, and each
    engine's cache keeps cache_max_customers in proportion (2/3 and 1/3;
    src/engine_mem.c), not half each. 600 customers, 200 per partition,
    cache_max_customers = 630: the shares (420, 210) hold every customer, so
    nothing is evicted; an even split (315 each) would have evicted ~85 of
    the engine with 2 partitions while room sat unused in the other. The
    state is exact either way."""
    topics = dict(faultlib.FAULT_TOPICS, touchpoints=3)
    broker = jdtest.DevBroker(str(tmp_path / "devbroker3"), topics=topics).start()
    jd = None
    try:
        group = faultlib.new_group("share")
        cap = 630
        conf = engines_config(write_config, group,
                              extra={"processing.cache_max_customers": Raw(str(cap))})
        events = faultlib.workload(n_events=6_000, n_customers=600, seed=SEED + 7, days=5)
        ids = sorted({ev["customer_id"] for ev in events})
        part_of = {cid: i % 3 for i, cid in enumerate(ids)}
        per_part = [sum(1 for cid in ids if part_of[cid] == p) for p in range(3)]
        heavy = sum(per_part) - min(per_part)  # the most an engine with 2 partitions holds
        assert heavy <= cap * 2 // 3 and max(per_part) <= cap // 3, per_part
        assert heavy > cap // 2, "an even split must have had to evict"

        jd = jdtest.Journeyd(str(tmp_path), conf, redis_addr=redis_server.address,
                             bootstrap=broker.bootstrap).start()
        owned = jdtest.wait_until(lambda: split_between(jd, 2, 3), 60, interval=0.1,
                                  what="both engines owning partitions, all 3 owned once")
        for p in range(3):
            jdtest.produce(broker.bootstrap, "touchpoints",
                           [(ev["customer_id"].encode(), faultlib.encode_touchpoint(ev))
                            for ev in events if part_of[ev["customer_id"]] == p],
                           partition=p)
        jdtest.wait_caught_up(broker.bootstrap, group, "touchpoints", timeout=120)
        jdtest.wait_until(lambda: faultlib.metric(jd, "journeyd_outbox_pending") == 0, 60,
                          what="outbox drained")
        # the cache is trimmed to its share after each batch, and the last
        # batch's customers were not written yet then (a dirty customer is
        # never evicted): one more event per partition, once every customer
        # is written and its acknowledgements too, makes each engine trim
        # (twice: the second round's batches find the first's customers
        # written too)
        extra = []
        for rnd in range(2):
            time.sleep(2)
            for p in range(3):
                last = [ev for ev in events if part_of[ev["customer_id"]] == p][-1]
                ev = dict(last, event_id=f"share-extra-{rnd}-{p}",
                          occurred_at=last["occurred_at"] + 1000 * (rnd + 1))
                extra.append(ev)
                jdtest.produce(broker.bootstrap, "touchpoints",
                               [(ev["customer_id"].encode(), faultlib.encode_touchpoint(ev))],
                               partition=p)
            jdtest.wait_caught_up(broker.bootstrap, group, "touchpoints", timeout=60)
        assert ownership(jd.log_text()) == owned, "a rebalance moved partitions meanwhile"
        m = jd.metrics()
        assert m.get("journeyd_cached_customers") == len(ids), (
            m.get("journeyd_cached_customers"), owned, per_part)
        assert m.get("journeyd_cache_evictions_total") == 0, m.get("journeyd_cache_evictions_total")
        assert jd.stop() == 0
        bad = faultlib.check_state(redis_server.client(), faultlib.Reference(events + extra))
        assert bad == [], bad[:10]
    finally:
        if jd is not None:
            jd.cleanup()
        broker.stop()

def committed_total(bootstrap, group):
    return sum(max(0, o) for o in jdtest.committed_offsets(bootstrap, group,
                                                           "touchpoints").values())


def test_two_engines_sigterm_mid_stream(tmp_path, write_config, redis_server, jd_factory,
                                        fault_broker):
    """SIGTERM while events flow: both engines finish their batch, persist,
    commit and stop (exit 0). The next start resumes exactly at the
    committed offsets: it replays nothing (journeyd_events_replayed_total
    == 0), consumes exactly the events above them, and no trigger is sent
    twice; the state ends exact."""
    parts = faultlib.FAULT_TOPICS["touchpoints"]
    group = faultlib.new_group("eng2term")
    conf = engines_config(write_config, group)
    version = faultlib.rule_version(conf)
    events = faultlib.workload(n_events=40_000, n_customers=1_500, seed=SEED + 3, days=20)
    ref = faultlib.Reference(events)
    prod = faultlib.BackgroundProducer(fault_broker.bootstrap, events, rate=4000)

    jd = jd_factory(conf, redis_server.address)
    jdtest.wait_until(lambda: split_between(jd, 2, parts), 60, interval=0.1,
                      what="both engines owning partitions")
    prod.start()
    jdtest.wait_until(lambda: (faultlib.metric(jd, "journeyd_events_consumed_total") or 0)
                      >= 8000 or prod.done.is_set(), 60, what="8,000 events consumed")
    assert not prod.done.is_set(), "the stop must come mid-stream"
    jd.sigterm()
    assert jd.wait(60) == 0, jd.log_text()[-3000:]
    log = jd.log_text()
    for i in (0, 1):
        assert re.search(rf"\[e{i}\] stopped\s*$", log, re.M), f"[e{i}] did not stop cleanly"
    at_stop = committed_total(fault_broker.bootstrap, group)
    assert at_stop > 0

    prod.join(jdtest.scaled(120))
    assert not prod.is_alive() and prod.error is None, prod.error
    assert at_stop < len(events), "the stop must have come mid-stream"

    jd2 = jd_factory(conf, redis_server.address)
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=120)
    jdtest.wait_until(lambda: faultlib.metric(jd2, "journeyd_outbox_pending") == 0, 60,
                      what="outbox drained")
    m = jd2.metrics()
    assert jdtest.metric_sum(m, "journeyd_events_replayed_total") == 0
    assert jdtest.metric_sum(m, "journeyd_events_consumed_total") == len(events) - at_stop
    assert jdtest.metric_sum(m, "journeyd_triggers_redelivered_total") == 0
    assert jd2.stop() == 0

    client = redis_server.client()
    bad = faultlib.check_state(client, ref)
    assert bad == [], bad[:10]
    recs = faultlib.consume_triggers(fault_broker.bootstrap, expect_n=len(ref.first_purchase))
    chk = faultlib.TriggerCheck(recs, ref, version)
    assert chk.problems() == []
    assert chk.duplicate_deliveries == 0  # a clean stop sends nothing twice
    assert faultlib.outbox_leftovers(client) == {}


def test_two_engines_sigkill(tmp_path, write_config, redis_server, jd_factory, fault_broker):
    """test_sigkill_at_random_moments, shorter, with 2 engines and static
    membership (engine 0 joins as ID, engine 1 as ID-1): 60,000 events over
    2,000 customers produced in the background, 3 SIGKILLs at seeded random
    moments (the second during start-up), a restart after each. The state
    ends exact and every expected trigger is delivered (with one id; a
    trigger sent again after a crash keeps its id)."""
    rng = random.Random(SEED)
    parts = faultlib.FAULT_TOPICS["touchpoints"]
    group = faultlib.new_group("eng2kill")
    instance = "jd-eng-kill"
    conf = engines_config(write_config, group, instance_id=instance, session_timeout="4s",
                          kafka_properties={"heartbeat.interval.ms": "500"})
    version = faultlib.rule_version(conf)
    events = faultlib.workload(n_events=60_000, n_customers=2_000, seed=SEED, days=30)
    ref = faultlib.Reference(events)
    prod = faultlib.BackgroundProducer(fault_broker.bootstrap, events, rate=3000)

    def start():
        return jd_factory(conf, redis_server.address)

    def consumed(jd):
        jd._alive_or_raise()
        return (faultlib.metric(jd, "journeyd_events_consumed_total") or 0) > 0

    jd = start()
    jd.wait_ready(timeout=60)
    # static membership: each engine joins with an id of its own
    jd.wait_for_log(rf"\[e1\] running: .*\b{instance}-1\b", timeout=30)
    log = jd.log_text()
    assert re.search(rf"\[e0\] running: .*\b{instance}\b(?!-)", log), log[-3000:]
    prod.start()
    t0 = time.monotonic()
    crashes = []
    for k in range(3):
        early = k == 1  # killed at a random moment of its start-up
        if early:
            life = rng.uniform(0.5, 3.0)
            until = time.monotonic() + life
            while time.monotonic() < until:
                assert jd.running(), f"journeyd exited on its own:\n{jd.log_text()[-3000:]}"
                time.sleep(0.05)
        else:
            jdtest.wait_until(lambda: consumed(jd), 60, interval=0.05,
                              what="the restarted journeyd consuming")
            resumed = time.monotonic()
            if crashes:
                crashes[-1]["recover_s"] = resumed - crashes[-1]["t_kill"]
            # a crash in full flow, at a random moment after it resumed
            time.sleep(rng.uniform(0.3, 3.0))
            assert jd.running(), f"journeyd exited on its own:\n{jd.log_text()[-3000:]}"
        crashes.append({"at_s": time.monotonic() - t0, "produced": prod.sent, "early": early,
                        "consumed": faultlib.metric(jd, "journeyd_events_consumed_total")})
        jd.sigkill()
        jd.wait(10)
        crashes[-1]["t_kill"] = time.monotonic()
        jd = start()
    prod.join(jdtest.scaled(120))
    assert not prod.is_alive(), "the producer did not finish"
    assert prod.error is None, prod.error

    # the last instance finishes the run, its two engines sharing the partitions
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=180)
    jdtest.wait_until(lambda: faultlib.metric(jd, "journeyd_outbox_pending") == 0, 60,
                      what="outbox drained")
    jdtest.wait_until(lambda: split_between(jd, 2, parts), 60, interval=0.1,
                      what="both engines of the last instance owning partitions")
    jdtest.wait_until(lambda: metric_exact(jd, "journeyd_assigned_partitions") == parts, 60,
                      what=f"journeyd_assigned_partitions == {parts}")
    assert metric_exact(jd, "journeyd_engines") == 2
    replayed = faultlib.metric(jd, "journeyd_events_replayed_total")
    redelivered = faultlib.metric(jd, "journeyd_triggers_redelivered_total")
    assert jd.stop() == 0
    elapsed = time.monotonic() - t0

    end = faultlib.EndOfRun(redis_server.client(), fault_broker.bootstrap, ref, version)

    lines = [f"seed {SEED}, {len(events)} events ({ref.duplicates} duplicate event ids), "
             f"{len(ref.counts)} customers, 2 engines, {len(crashes)} SIGKILLs, {elapsed:.1f} s"]
    for i, c in enumerate(crashes, 1):
        rec = c.get("recover_s")
        lines.append(f"crash {i} at {c['at_s']:.1f}s{' (start-up)' if c['early'] else ''} "
                     f"(produced {c['produced']}, consumed {c['consumed']}), next resumed "
                     f"{'-' if rec is None else f'{rec:.2f}s'} after the kill")
    lines.append(f"last instance: replayed {replayed}, outbox re-sent {redelivered}")
    lines += end.lines()
    faultlib.report(tmp_path, "engines-sigkill", lines)

    assert end.bad == [], end.bad[:10]
    assert len(end.chk.expected_welcome) > 500
    assert end.chk.problems() == []
    assert end.undelivered_left == []
    assert any(c.get("recover_s") is not None for c in crashes), \
        "no restarted instance ever resumed consuming"


def test_reload_reaches_every_engine(devbroker, redis_server, write_config, journeyd_factory):
    """A changed rule set and SIGHUP: each of the 2 engines reloads (one
    "rules reloaded" line per engine; journeyd_build_info names the new
    rule_version only, so no engine kept the old one;
    journeyd_rule_reloads_total{result="ok"} counts the process's one
    reload), and events on every partition (so on both engines) fire the
    new rule."""
    parts = jdtest.DEFAULT_TOPICS["touchpoints"]
    config = write_config({"processing.engines": 2, "log.level": "info"})
    v1 = faultlib.rule_version(config)
    with open(config) as f:
        original = f.read()
    jd = journeyd_factory(config)
    jdtest.wait_until(lambda: split_between(jd, 2, parts), 60, interval=0.1,
                      what="both engines owning partitions")
    jdtest.wait_until(lambda: metric_exact(jd, "journeyd_assigned_partitions") == parts, 30,
                      what=f"journeyd_assigned_partitions == {parts}")
    m = jd.metrics()
    assert m.get("journeyd_engines") == 2
    assert build_info_versions(m) == [v1], build_info_versions(m)
    assert m.get('journeyd_rule_reloads_total{result="ok"}') == 0

    new_rule = ('  { name = "big_spender"; kind = "REWARD";\n'
                '    on = "event: event.type == \'purchase\' && event.amount >= 100"; },\n')
    changed = original.replace("triggers = (\n", "triggers = (\n" + new_rule, 1)
    assert changed != original
    with open(config, "w") as f:
        f.write(changed)
    v2 = faultlib.rule_version(config)
    assert v2 != v1
    jd.signal(signal.SIGHUP)

    def reloaded():
        jd._alive_or_raise()
        m = jd.metrics()
        return (m.get('journeyd_rule_reloads_total{result="ok"}') == 1
                and build_info_versions(m) == [v2])

    jdtest.wait_until(reloaded, 30, interval=0.1,
                      what=f"a reload and journeyd_build_info rule_version {v2} only")
    for i in (0, 1):
        jd.wait_for_log(rf"\[e{i}\] rules reloaded: version {re.escape(v1)} -> {re.escape(v2)}",
                        timeout=10)

    # purchases on every partition: both engines must fire big_spender (v2)
    base = jdtest.base_time_ms(days_ago=10)
    events = [jdtest.touchpoint(f"rl-{i:03d}", "purchase", base + i * 60000,
                                event_id=f"rl-{i:03d}-0", amount=150.0) for i in range(48)]
    placed = jdtest.produce(devbroker.bootstrap, "touchpoints", events)
    assert {p for p, _ in placed} == set(range(parts)), "a partition got no event"
    got = jdtest.consume_all(devbroker.bootstrap, "loyalty.rewards", expect_n=2 * len(events),
                             timeout=60)
    fired = {}
    for r in got:
        fired.setdefault(r.trigger["customer_id"], []).append(r.trigger)
    assert sorted(fired) == sorted(e["customer_id"] for e in events)
    for cust, trigs in fired.items():
        assert jdtest.names(trigs) == ["big_spender", "welcome_first_purchase"], (cust, trigs)
        assert all(t["rule_version"] == v2 for t in trigs), (cust, trigs)

    m = jd.metrics()
    assert m.get('journeyd_rule_reloads_total{result="ok"}') == 1
    assert m.get('journeyd_rule_reloads_total{result="error"}') == 0
    assert build_info_versions(m) == [v2]
    assert len(re.findall(r"rules reloaded: version", jd.log_text())) == 2
    assert jd.stop() == 0


def test_one_engine_is_one_and_untagged(devbroker, write_config, journeyd_factory):
    """The default (one engine): journeyd_engines is 1 and no line is tagged."""
    jd = journeyd_factory(write_config({"log.level": "info"}))
    jd.wait_ready(timeout=60)
    jd.wait_for_log(r"rebalance +assigned touchpoints/\d+", timeout=30)
    assert metric_exact(jd, "journeyd_engines") == 1
    assert jd.http_get("/healthz")[0] == 200
    assert jd.stop() == 0
    assert not re.search(r"\[e\d+\]", jd.log_text()), jd.log_text()[-2000:]


def test_engines_config_checked(write_config):
    """--check: processing.engines is 1..64; group.instance.id in
    kafka.properties is refused with more than one engine (they would share
    it), kafka.group_instance_id is not (each engine suffixes it)."""

    def check(overrides, props=None, name="c.conf"):
        path = write_config(overrides, props, name=name)
        return path, jdtest.run_journeyd(["--check", "-c", path])

    for bad in (0, 65, -1):
        path, r = check({"processing.engines": bad}, name=f"engines{bad}.conf")
        assert r.returncode != 0, f"processing.engines = {bad} accepted: {r.stdout}{r.stderr}"
        assert "processing.engines" in r.stderr, r.stderr
        assert "OK" not in r.stdout, r.stdout

    path, r = check({"processing.engines": 2}, {"group.instance.id": "jd-shared"},
                    name="props-2.conf")
    assert r.returncode != 0, f"group.instance.id with 2 engines accepted: {r.stdout}{r.stderr}"
    assert "group.instance.id" in r.stderr and "processing.engines" in r.stderr, r.stderr

    # the same property with one engine is what it always was: accepted
    path, r = check({"processing.engines": 1}, {"group.instance.id": "jd-one"},
                    name="props-1.conf")
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout, r.stdout

    for good in (2, 64):
        path, r = check({"processing.engines": good}, name=f"engines{good}.conf")
        assert r.returncode == 0, r.stderr
        assert "OK" in r.stdout, r.stdout

    path, r = check({"processing.engines": 2, "kafka.group_instance_id": "jd-static"},
                    name="static-2.conf")
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout, r.stdout
