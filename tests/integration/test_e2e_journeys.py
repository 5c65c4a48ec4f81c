"""End to end: scripted customer journeys produced with a real Kafka client
to journey-devbroker, processed by build/journeyd with the shipped
config/journeyd.conf against a real redis-server; the triggers are read back
with a real consumer and the journey state with python3-redis.

The journeys sit at noon UTC (out of any quiet hours) and span at most 40
days ending 10 days ago, so no customer is lapsed or at risk whichever clock
(event or wall) the config uses."""

import re
import signal
import time

import pytest

import jdtest

DAY = 86400 * 1000
BASE = jdtest.base_time_ms(days_ago=50)
REWARDS = "loyalty.rewards"
REENGAGEMENT = "loyalty.reengagement"


def tp(customer, type, day, seq, **kw):
    return jdtest.touchpoint(customer, type, BASE + day * DAY + seq * 60000,
                             event_id=f"{customer}-{seq}", **kw)


def journeys():
    """The scripted journeys, in the order they are produced."""
    ev = []
    # three purchases within ten days: first purchase, then VIP
    ev += [tp("c-buyer", "page_view", 0, 0),
           tp("c-buyer", "purchase", 1, 1, amount=20.0),
           tp("c-buyer", "purchase", 4, 2, amount=35.5),
           tp("c-buyer", "purchase", 10, 3, amount=44.5, channel="app")]
    # one purchase
    ev += [tp("c-once", "product_view", 2, 0), tp("c-once", "purchase", 2, 1, amount=12.0)]
    # three purchases, but 20 days apart: never three in 30 days, so no VIP
    ev += [tp("c-slow", "purchase", 0, 0, amount=10.0),
           tp("c-slow", "purchase", 20, 1, amount=10.0),
           tp("c-slow", "purchase", 40, 2, amount=10.0)]
    # unhappy and happy feedback
    ev += [tp("c-unhappy", "app_open", 3, 0, channel="app"),
           tp("c-unhappy", "feedback", 3, 1, channel="app", score=3)]
    ev += [tp("c-happy", "feedback", 3, 0, score=9)]
    # browsing only: engaged, never a trigger
    ev += [tp("c-browser", "page_view", 5, 0), tp("c-browser", "product_view", 5, 1),
           tp("c-browser", "page_view", 6, 2), tp("c-browser", "email_open", 7, 3,
                                                  channel="email")]
    return ev


def run_once(devbroker, write_config, journeyd_factory, events, group=None):
    """Produces `events`, runs journeyd until it has committed them all,
    stops it with SIGTERM (asserting exit 0) and returns the config."""
    overrides = {"kafka.group_id": group} if group else None
    config = write_config(overrides, name=f"journeyd-{group or 'default'}.conf")
    jd = journeyd_factory(config)
    jdtest.wait_caught_up(devbroker.bootstrap, group or "journeyd", "touchpoints", timeout=90)
    assert jd.stop() == 0, jd.log_text()[-3000:]
    return jd


@pytest.fixture
def processed(devbroker, redis_server, write_config, journeyd_factory):
    """The journeys produced and fully processed by one journeyd run."""
    events = journeys()
    jdtest.produce(devbroker.bootstrap, "touchpoints", events)
    run_once(devbroker, write_config, journeyd_factory, events)
    triggers = jdtest.consume_all(devbroker.bootstrap, [REWARDS, REENGAGEMENT], expect_n=5)
    return {"events": {e["event_id"]: e for e in events}, "records": triggers}


def test_shipped_config_checks():
    r = jdtest.run_journeyd(["--check", "-c", jdtest.DEFAULT_CONFIG])
    assert r.returncode == 0, r.stdout + r.stderr


def test_exact_triggers_per_customer(processed):
    got = jdtest.by_customer(processed["records"])
    assert {c: jdtest.names(t) for c, t in got.items()} == {
        "c-buyer": ["vip_welcome", "welcome_first_purchase"],
        "c-once": ["welcome_first_purchase"],
        "c-slow": ["welcome_first_purchase"],
        "c-unhappy": ["service_recovery"],
    }


def test_trigger_fields(processed):
    events = processed["events"]
    records = processed["records"]
    rule_versions = set()
    ids = set()
    now = time.time() * 1000
    for r in records:
        t = r.trigger
        # topic, key and kind agree
        assert r.key == t["customer_id"].encode()
        assert t["kind"] == ("REWARD" if r.topic == REWARDS else "REENGAGEMENT")
        assert t["trigger_id"] and t["trigger_id"] not in ids
        ids.add(t["trigger_id"])
        assert t["reason"].strip(), t
        assert t["rule_version"].strip(), t
        rule_versions.add(t["rule_version"])
        src = events[t["source_event_id"]]
        assert src["customer_id"] == t["customer_id"]
        assert src["occurred_at"] <= t["fired_at"] <= now + 60000

    assert len(rule_versions) == 1, "one rule set fired all of them"

    def one(customer, name):
        (t,) = [r.trigger for r in records
                if r.trigger["customer_id"] == customer and r.trigger["trigger"] == name]
        return t

    t = one("c-buyer", "welcome_first_purchase")
    assert (t["kind"], t["source_event_id"], t["journey_stage"]) == (
        "REWARD", "c-buyer-1", "first_purchase")

    t = one("c-buyer", "vip_welcome")
    assert (t["kind"], t["source_event_id"], t["journey_stage"], t["segment"]) == (
        "REWARD", "c-buyer-3", "repeat", "vip")
    assert float(t["attributes"]["spend_30d"]) == pytest.approx(100.0)
    assert t["attributes"]["last_channel"] == "app"

    t = one("c-slow", "welcome_first_purchase")
    assert t["source_event_id"] == "c-slow-0"

    t = one("c-unhappy", "service_recovery")
    assert (t["kind"], t["source_event_id"], t["journey_stage"]) == (
        "REENGAGEMENT", "c-unhappy-1", "prospect")
    assert "3" in t["reason"], "the reason shows the score it saw"


def test_journey_state_in_redis(processed, redis_server):
    r = redis_server.client()
    st = {c: jdtest.read_state(r, c) for c in
          ("c-buyer", "c-once", "c-slow", "c-unhappy", "c-happy", "c-browser")}
    for c, s in st.items():
        assert s is not None, f"no state for {c}"
        assert re.fullmatch(r"v\d+", s["version"])

    b = st["c-buyer"]
    assert jdtest.lifetime_count(b, "purchase") == 3
    assert jdtest.lifetime_count(b, "page_view") == 1
    assert float(b["sp"]) == pytest.approx(100.0)
    assert b["st"] == "repeat"
    assert "vip" in jdtest.segments_of(b)

    assert jdtest.lifetime_count(st["c-once"], "purchase") == 1
    assert st["c-once"]["st"] == "first_purchase"

    s = st["c-slow"]
    assert jdtest.lifetime_count(s, "purchase") == 3
    assert float(s["sp"]) == pytest.approx(30.0)
    assert s["st"] == "repeat"
    assert "vip" not in jdtest.segments_of(s)

    u = st["c-unhappy"]
    assert jdtest.lifetime_count(u, "feedback") == 1
    assert jdtest.lifetime_count(u, "app_open") == 1
    assert u["st"] == "prospect"
    assert "detractor" in jdtest.segments_of(u)
    assert "detractor" not in jdtest.segments_of(st["c-happy"])

    w = st["c-browser"]
    assert jdtest.lifetime_count(w, "page_view") == 2
    assert jdtest.lifetime_count(w, "product_view") == 1
    assert jdtest.lifetime_count(w, "email_open") == 1
    assert jdtest.lifetime_count(w, "purchase") == 0
    assert w["st"] == "engaged"
    assert float(w.get("sp") or 0) == 0.0


def test_replay_gives_the_same_trigger_ids(devbroker, redis_server, write_config,
                                           journeyd_factory):
    """trigger_id is deterministic: replaying the same input into empty
    state (a fresh Redis and a new consumer group reading from the start)
    fires the same triggers with the same ids."""
    events = journeys()
    jdtest.produce(devbroker.bootstrap, "touchpoints", events)
    run_once(devbroker, write_config, journeyd_factory, events)
    first = jdtest.consume_all(devbroker.bootstrap, [REWARDS, REENGAGEMENT], expect_n=5)

    redis_server.client().flushall()
    run_once(devbroker, write_config, journeyd_factory, events, group="journeyd-replay")
    both = jdtest.consume_all(devbroker.bootstrap, [REWARDS, REENGAGEMENT], expect_n=10)

    def ids(records):
        return sorted((r.trigger["customer_id"], r.trigger["trigger"], r.trigger["trigger_id"])
                      for r in records)

    assert len(first) == 5
    assert ids(both) == sorted(ids(first) * 2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_right_after_start_exits_0(devbroker, write_config, journeyd_factory, sig):
    jd = journeyd_factory(write_config())
    time.sleep(0.5)
    jd.signal(sig)
    assert jd.wait(30) == 0, jd.log_text()[-3000:]
