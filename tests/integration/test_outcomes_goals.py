"""Conversion goals and program health through the real daemon: scripted
journeys with exactly known treated/control/conversion counts (goal reached
just inside and just outside the window, windows that close without a
conversion), the program counters (stages, transitions, segments, NPS), the
metrics they are exported as, journeyctl segments/outcomes/triggers, and
exactness when the stats were written but the customers' writes were lost
(the crash window) and every event is consumed again."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jdtest  # noqa: E402
from jdtest import Raw  # noqa: E402

DAY = 86400 * 1000

# recover_t: everyone treated (holdout 0); recover_c: everyone held out
# (holdout 1): the same decision measured in both groups, whatever the
# holdout hash. first: fires ON a purchase with goal purchase: the purchase
# that fired it must not convert it.
TRIGGERS = Raw("""(
  { name = "recover_t"; kind = "REWARD";
    on = "event: event.type == 'feedback' && event.score <= 6";
    goal = "purchase"; goal_window = "7d"; },
  { name = "recover_c"; kind = "REWARD";
    on = "event: event.type == 'feedback' && event.score <= 6";
    goal = "purchase"; goal_window = "7d"; holdout = 1.0; },
  { name = "first"; kind = "REWARD";
    on = "event: event.type == 'purchase' && count('purchase') == 1";
    goal = "purchase"; goal_window = "30d"; }
)""")


tp = jdtest.touchpoint


def journeys(t0):
    """Events in global time order (the event clock is per partition, so
    every customer's 'now' is its own event's time)."""
    return [
        tp("A", "feedback", t0, score=3),
        tp("B", "feedback", t0, score=3),
        tp("C", "feedback", t0, score=3),
        tp("D", "feedback", t0, score=3),
        tp("E", "purchase", t0, amount=10),            # first: opens, never resolved
        tp("F", "feedback", t0, score=10),              # promoter, no trigger
        tp("D", "purchase", t0 + DAY, amount=10),      # D: recover converts; first opens
        tp("D", "purchase", t0 + 2 * DAY, amount=10),  # D: first converts (once)
        tp("D", "purchase", t0 + 3 * DAY, amount=10),  # nothing more to convert
        tp("A", "purchase", t0 + 7 * DAY, amount=10),  # exactly at the deadline: inside
        tp("B", "purchase", t0 + 7 * DAY + 1, amount=10),  # 1 ms late: outside
        tp("C", "page_view", t0 + 8 * DAY),            # C's windows closed unconverted
    ]


EXPECTED = {
    "recover_t": dict(treated=4, treated_converted=2, control=0, control_converted=0,
                      treated_open=0, control_open=0),
    "recover_c": dict(treated=0, treated_converted=0, control=4, control_converted=2,
                      treated_open=0, control_open=0),
    # D converted; A, B and E still inside their 30 days
    "first": dict(treated=1, treated_converted=1, control=0, control_converted=0,
                  treated_open=3, control_open=0),
}


def journeyctl(config, redis_addr, *args):
    r = subprocess.run([jdtest.binary("journeyctl"), "-c", config, "-r", redis_addr] + list(args),
                       capture_output=True, text=True, timeout=jdtest.scaled(30),
                       env=jdtest.child_env())
    assert r.returncode == 0, f"journeyctl {args}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def outcomes(config, redis_addr):
    return json.loads(journeyctl(config, redis_addr, "outcomes", "--json"))["triggers"]


def counts_only(o):
    return {k: o[k] for k in EXPECTED["first"]}


def expected_program(client, customers):
    """Stage and segment counts recomputed from the customers' states."""
    stages, segments = {}, {}
    for cid in customers:
        st = jdtest.read_state(client, cid)
        stages[st["st"]] = stages.get(st["st"], 0) + 1
        for s in jdtest.segments_of(st):
            segments[s] = segments.get(s, 0) + 1
    return stages, segments


def run_journeys(write_config, journeyd_factory, devbroker, group):
    cfg = write_config({"kafka.group_id": group, "triggers": TRIGGERS})
    jd = journeyd_factory(cfg)
    jd.wait_ready()
    return cfg, jd


def test_goal_counts_program_health_and_metrics(write_config, journeyd_factory, devbroker,
                                                redis_server):
    t0 = jdtest.base_time_ms(days_ago=30)
    jdtest.produce(devbroker.bootstrap, "touchpoints", journeys(t0))
    cfg, jd = run_journeys(write_config, journeyd_factory, devbroker, "g-outcomes")
    jdtest.wait_caught_up(devbroker.bootstrap, "g-outcomes", "touchpoints")

    out = outcomes(cfg, redis_server.address)
    assert {k: counts_only(v) for k, v in out.items()} == EXPECTED
    assert out["recover_t"]["uplift"] is None and out["recover_t"]["ci_low"] is None
    assert out["recover_t"]["treated_rate"] == 0.5
    assert out["recover_c"]["control_rate"] == 0.5

    # the customers' own view: open goals with their group and deadline
    tr = json.loads(journeyctl(cfg, redis_server.address, "triggers", "A", "--json"))
    assert [(g["trigger"], g["group"], g["deadline"]) for g in tr["open_goals"]] == \
        [("first", "treated", t0 + 7 * DAY + 30 * DAY)]
    assert sorted(t["trigger"] for t in tr["triggers"] if not t["suppressed"]) == \
        ["first", "recover_t"]
    held = [t for t in tr["triggers"] if t["suppressed"]]
    assert all(t["suppression"] == "holdout" for t in held), held
    assert all(t["reason"] for t in tr["triggers"])
    text = journeyctl(cfg, redis_server.address, "triggers", "C")
    assert "recover_t" in text and "why:" in text

    client = redis_server.client()
    customers = "ABCDEF"
    stages, segments = expected_program(client, customers)
    seg = json.loads(journeyctl(cfg, redis_server.address, "segments", "--json"))
    assert {k: v for k, v in seg["stages"].items() if v} == stages
    assert {k: v for k, v in seg["segments"].items() if v} == segments
    assert seg["segments"]["detractor"] == 4
    assert seg["nps"] == {"promoter": 1, "passive": 0, "detractor": 4}
    tr_counts = {(t["from"], t["to"]): t["count"] for t in seg["transitions"]}
    assert sum(v for (f, _), v in tr_counts.items() if f == "(new)") == len(customers)
    # D: prospect -> first_purchase -> repeat; the count of each move is exact
    assert tr_counts[("first_purchase", "repeat")] == 1
    assert tr_counts[("prospect", "first_purchase")] == 3  # A, B, D; E started there
    assert seg["partitions"] >= 1
    text = journeyctl(cfg, redis_server.address, "segments")
    assert "detractor" in text and "(new)" in text

    # the program-wide metrics, refreshed from Redis every few seconds
    def metrics_match():
        m = jd.metrics()
        return (m.get('journeyd_trigger_decisions_total{trigger="recover_t",group="treated"}') == 4
                and m.get('journeyd_trigger_conversions_total{trigger="recover_c",group="control"}')
                == 2 and m.get('journeyd_segment_members{segment="detractor"}') == 4
                and m.get('journeyd_nps_responses{group="promoter"}') == 1
                and m.get('journeyd_trigger_decisions_open{trigger="first",group="treated"}') == 3
                and m.get('journeyd_stage_transitions_total{from="first_purchase",to="repeat"}')
                == 1 and m)
    m = jdtest.wait_until(metrics_match, 15, interval=0.5, what="program metrics from Redis")
    assert sum(v for k, v in m.items() if k.startswith("journeyd_stage_customers{")) == 6
    assert jd.stop() == 0


def test_replay_after_lost_customer_writes_counts_once(write_config, journeyd_factory,
                                                        devbroker, redis_server):
    """The crash window: the stats of a batch are in Redis, the customers'
    writes are not. Simulated by deleting every customer's keys (and the
    partitions' event clocks) and consuming everything again under a new
    group: the customers are rebuilt,
    the counters stay exactly as they were."""
    t0 = jdtest.base_time_ms(days_ago=30)
    jdtest.produce(devbroker.bootstrap, "touchpoints", journeys(t0))
    cfg, jd = run_journeys(write_config, journeyd_factory, devbroker, "g-first")
    jdtest.wait_caught_up(devbroker.bootstrap, "g-first", "touchpoints")
    assert jd.stop() == 0
    before = outcomes(cfg, redis_server.address)
    seg_before = json.loads(journeyctl(cfg, redis_server.address, "segments", "--json"))

    client = redis_server.client()
    states = {cid: client.get(jdtest.state_key(cid)) for cid in "ABCDEF"}
    for cid in "ABCDEF":
        client.delete(jdtest.state_key(cid), jdtest.state_key(cid) + ":h",
                      jdtest.state_key(cid) + ":o")
    # nor are the partitions' event clocks in that window: each is written
    # after the customers it goes with (src/engine_clock.c)
    clocks = client.keys("j:{p:touchpoints:*}:wm")
    assert clocks
    client.delete(*clocks)
    cfg2, jd2 = run_journeys(write_config, journeyd_factory, devbroker, "g-second")
    jdtest.wait_caught_up(devbroker.bootstrap, "g-second", "touchpoints")
    assert jd2.stop() == 0
    # the customers were rebuilt to the same state (event clock: deterministic)
    for cid in "ABCDEF":
        assert client.get(jdtest.state_key(cid)) == states[cid], cid
    assert outcomes(cfg2, redis_server.address) == before
    assert json.loads(journeyctl(cfg2, redis_server.address, "segments", "--json")) == seg_before

    # new events after the replay are counted again
    jdtest.produce(devbroker.bootstrap, "touchpoints",
                   [tp("G", "feedback", t0 + 9 * DAY, score=8)])
    jd3 = journeyd_factory(cfg2)
    jdtest.wait_caught_up(devbroker.bootstrap, "g-second", "touchpoints")
    assert jd3.stop() == 0
    seg = json.loads(journeyctl(cfg2, redis_server.address, "segments", "--json"))
    assert seg["nps"] == {"promoter": 1, "passive": 1, "detractor": 4}
    assert outcomes(cfg2, redis_server.address) == before
