"""End to end: the contact policy (docs/policy.md) with a real devbroker,
redis-server and build/journeyd.

The config is the shipped one (service_recovery cooldown 1 day, at most 2
REENGAGEMENT per customer per 7 days, quiet hours 21:00-08:00 deferred,
audit topic loyalty.suppressed, opt-out attribute `optout`) with three
triggers added to exercise priorities, a global budget and a holdout.
Journeys sit between 12:00 and 15:00 UTC, out of the quiet hours of the
default zone, and are produced in time order so that the event clock of
every partition equals the time of the event being processed.

Checked: the exact triggers on the trigger topics (suppressed ones never
reach them), one audit record per suppression with its reason, journeyctl
showing fired and suppressed triggers, the suppression metrics, and — once
the engine holds outbox entries until their not_before — a trigger deferred
across a quiet period in event time."""

import datetime
import json
import signal
import subprocess
import zoneinfo

import pytest

import jdtest

DAY = 86400 * 1000
HOUR = 3600 * 1000
MIN = 60 * 1000
BASE = jdtest.base_time_ms(days_ago=30)  # noon UTC
REWARDS = "loyalty.rewards"
REENGAGEMENT = "loyalty.reengagement"
AUDIT = "loyalty.suppressed"
GROUP = "journeyd-policy"

# The shipped triggers, plus three for this test: two REENGAGEMENT triggers
# with priorities that compete with service_recovery for the kind cap, a
# REWARD with a global budget, and a REWARD with a 50 % holdout.
TRIGGERS = jdtest.Raw("""(
  { name = "welcome_first_purchase"; kind = "REWARD";
    on = "event: event.type == 'purchase' && count('purchase') == 1"; },
  { name = "vip_welcome"; kind = "REWARD"; on = "enter:vip"; cooldown = "30d"; },
  { name = "service_recovery"; kind = "REENGAGEMENT";
    on = "event: event.type == 'feedback' && event.score <= 6"; cooldown = "1d"; },
  { name = "detractor_call"; kind = "REENGAGEMENT"; priority = 5;
    on = "event: event.type == 'feedback' && event.attributes['escalate'] == 'yes'"; },
  { name = "apology_gift"; kind = "REENGAGEMENT"; priority = 10;
    on = "event: event.type == 'feedback' && event.attributes['escalate'] == 'yes'"; },
  { name = "app_gift"; kind = "REWARD"; on = "event: event.type == 'app_open'";
    budget = 3; budget_period = "1d"; },
  { name = "promoter_thanks"; kind = "REWARD"; holdout = 0.5;
    on = "event: event.type == 'feedback' && event.score >= 9"; }
)""")


def tp(customer, type, at, seq, **kw):
    return jdtest.touchpoint(customer, type, at, event_id=f"{customer}-{seq}", **kw)


def journeys():
    ev = []
    # A: cooldown, then the kind cap
    ev += [tp("c-a", "feedback", BASE, 0, score=3),                      # sent
           tp("c-a", "feedback", BASE + HOUR, 1, score=2),               # cooldown
           tp("c-a", "feedback", BASE + DAY + HOUR, 2, score=4),         # sent (2nd in 7d)
           tp("c-a", "feedback", BASE + 2 * DAY + 2 * HOUR, 3, score=1)]  # cap
    # B: opted out of REENGAGEMENT by attribute; REWARD still flows
    ev += [tp("c-b", "page_view", BASE, 0, attributes={"optout": "REENGAGEMENT"}),
           tp("c-b", "feedback", BASE + MIN, 1, score=3),                # optout
           tp("c-b", "purchase", BASE + 2 * MIN, 2, amount=10.0)]        # welcome sent
    # C: unsubscribe touchpoint, later subscribe again
    ev += [tp("c-c", "unsubscribe", BASE, 0, channel="email",
              attributes={"kind": "REENGAGEMENT"}),
           tp("c-c", "feedback", BASE + MIN, 1, score=3),                # optout
           tp("c-c", "subscribe", BASE + DAY, 2, channel="email",
              attributes={"kind": "REENGAGEMENT"}),
           tp("c-c", "feedback", BASE + DAY + MIN, 3, score=3)]          # sent
    # D: one event fires three REENGAGEMENT triggers, two slots: priority wins
    ev += [tp("c-d", "feedback", BASE + 2 * HOUR, 0, score=1, attributes={"escalate": "yes"})]
    # G: six customers open the app, the budget is 3 a day
    ev += [tp(f"c-g{i}", "app_open", BASE + 3 * HOUR + i * MIN, 0, channel="app")
           for i in range(6)]
    # P: forty promoters, half held out
    ev += [tp(f"c-p{i}", "feedback", BASE + 2 * HOUR + i * 1000, 0, score=10)
           for i in range(40)]
    ev.sort(key=lambda e: e["occurred_at"])
    return ev


def config(write_config, extra=None):
    overrides = {"kafka.group_id": GROUP, "triggers": TRIGGERS}
    overrides.update(extra or {})
    return write_config(overrides)


def decode_audit(record):
    value = record.value
    if len(value) >= 5 and value[0] == 0:
        value = value[5:]
    return jdtest.avro_decode(value, jdtest.schema("suppressed"))


@pytest.fixture
def processed(devbroker, redis_server, write_config, journeyd_factory):
    events = journeys()
    jdtest.produce(devbroker.bootstrap, "touchpoints", events)
    cfg = config(write_config)
    jd = journeyd_factory(cfg)
    jdtest.wait_caught_up(devbroker.bootstrap, GROUP, "touchpoints", timeout=90)
    metrics = jd.metrics()
    assert jd.stop() == 0, jd.log_text()[-3000:]
    triggers = jdtest.consume_all(devbroker.bootstrap, [REWARDS, REENGAGEMENT], expect_n=10)
    audit = jdtest.consume_all(devbroker.bootstrap, AUDIT, expect_n=10, decode=False)
    return {"config": cfg, "triggers": triggers, "audit": [decode_audit(r) for r in audit],
            "audit_records": audit, "metrics": metrics, "redis": redis_server}


def pairs(records):
    return sorted((r.trigger["customer_id"], r.trigger["trigger"]) for r in records)


def test_suppressed_triggers_never_reach_the_trigger_topics(processed):
    trig = processed["triggers"]
    got = [p for p in pairs(trig) if not p[0].startswith(("c-g", "c-p"))]
    assert got == sorted([
        ("c-a", "service_recovery"), ("c-a", "service_recovery"),
        ("c-b", "welcome_first_purchase"),
        ("c-c", "service_recovery"),
        ("c-d", "apology_gift"), ("c-d", "detractor_call"),
    ])
    gifts = [r for r in trig if r.trigger["trigger"] == "app_gift"]
    assert len(gifts) == 3
    thanks = {r.trigger["customer_id"] for r in trig if r.trigger["trigger"] == "promoter_thanks"}
    held = {a["customer_id"] for a in processed["audit"] if a["reason"] == "holdout"}
    # every promoter is either thanked or held out, never both; 2^-39 that
    # a fair 50 % split puts all forty on one side
    assert thanks | held == {f"c-p{i}" for i in range(40)}
    assert not thanks & held
    assert thanks and held
    # a suppressed trigger's id never shows up on a trigger topic
    sent_ids = {r.trigger["trigger_id"] for r in trig}
    assert not sent_ids & {a["trigger_id"] for a in processed["audit"]}
    # each sent trigger is on its kind's topic, keyed by the customer
    for r in trig:
        assert r.topic == (REWARDS if r.trigger["kind"] == "REWARD" else REENGAGEMENT)
        assert r.key.decode() == r.trigger["customer_id"]
    # the cap gave the two slots of c-d to the higher priorities
    d_events = {r.trigger["source_event_id"] for r in trig if r.trigger["customer_id"] == "c-d"}
    assert d_events == {"c-d-0"}


def test_audit_records(processed):
    audit = processed["audit"]
    by = sorted((a["customer_id"], a["trigger"], a["reason"]) for a in audit
                if not a["customer_id"].startswith(("c-g", "c-p")))
    assert by == sorted([
        ("c-a", "service_recovery", "cooldown"),
        ("c-a", "service_recovery", "cap"),
        ("c-b", "service_recovery", "optout"),
        ("c-c", "service_recovery", "optout"),
        ("c-d", "service_recovery", "cap"),
    ])
    budget = [a for a in audit if a["reason"] == "budget"]
    assert len(budget) == 3 and {a["trigger"] for a in budget} == {"app_gift"}
    for a in audit:
        assert a["holdout"] == (a["reason"] == "holdout")
        assert a["rule_version"] and a["journey_stage"]
        assert a["detail"]
        assert len(a["trigger_id"]) == 32
    cooldown = next(a for a in audit if a["reason"] == "cooldown")
    assert cooldown["source_event_id"] == "c-a-1"
    assert cooldown["decided_at"] == BASE + HOUR
    assert cooldown["detail"] == "service_recovery was sent 1h before, cooldown 1d"
    assert cooldown["trigger_reason"]  # the rule's own explanation
    cap = next(a for a in audit if a["customer_id"] == "c-a" and a["reason"] == "cap")
    assert cap["detail"] == "2 REENGAGEMENT trigger(s) sent in the last 1w (cap 2)"
    assert cap["kind"] == "REENGAGEMENT"
    # keyed by customer, like triggers
    for r in processed["audit_records"]:
        assert r.key.decode() == decode_audit(r)["customer_id"]


def test_metrics_count_suppressions(processed):
    m = processed["metrics"]

    def suppressed(reason):
        return sum(v for k, v in m.items() if k.startswith("journeyd_triggers_suppressed_total{")
                   and f'reason="{reason}"' in k)

    assert suppressed("cooldown") == 1
    assert suppressed("cap") == 2
    assert suppressed("optout") == 2
    assert suppressed("budget") == 3
    assert suppressed("holdout") == len([a for a in processed["audit"]
                                         if a["reason"] == "holdout"])


def journeyctl(cfg, redis, *args):
    r = subprocess.run([jdtest.binary("journeyctl"), "-c", cfg, "-r", redis.address] + list(args),
                       capture_output=True, text=True, timeout=jdtest.scaled(30),
                       env=jdtest.child_env())
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_journeyctl_shows_fired_and_suppressed(processed):
    cfg, redis = processed["config"], processed["redis"]
    out = json.loads(journeyctl(cfg, redis, "customer", "c-a", "--json"))
    hist = out["triggers"]  # newest first
    assert [(h["trigger"], h["suppressed"], h.get("suppression")) for h in hist] == [
        ("service_recovery", True, "cap"),
        ("service_recovery", False, None),
        ("service_recovery", True, "cooldown"),
        ("service_recovery", False, None),
    ]
    assert all(h["kind"] == "REENGAGEMENT" for h in hist)
    assert hist[0]["fired_at"] == BASE + 2 * DAY + 2 * HOUR
    assert hist[0]["reason"].startswith("2 REENGAGEMENT trigger(s) sent in the last 1w (cap 2); "
                                        "rule: ")
    assert hist[2]["reason"].startswith("service_recovery was sent 1h before, cooldown 1d")
    text = journeyctl(cfg, redis, "customer", "c-a")
    assert "SUPPRESSED (cooldown)" in text and "SUPPRESSED (cap)" in text
    assert "why not: service_recovery was sent 1h before, cooldown 1d" in text

    b = json.loads(journeyctl(cfg, redis, "customer", "c-b", "--json"))
    assert b["optout"] == ["REENGAGEMENT"]
    assert [(h["trigger"], h["suppression"] if h["suppressed"] else None)
            for h in b["triggers"]] == [("welcome_first_purchase", None),
                                       ("service_recovery", "optout")]


def next_local(ms, zone, hour):
    """The first instant after `ms` at which the clock of `zone` reads hour:00."""
    tz = zoneinfo.ZoneInfo(zone)
    t = datetime.datetime.fromtimestamp(ms / 1000, tz)
    end = t.replace(hour=hour, minute=0, second=0, microsecond=0)
    if end <= t:
        end = (t + datetime.timedelta(days=1)).replace(hour=hour, minute=0, second=0,
                                                        microsecond=0)
    return int(end.timestamp() * 1000)


def test_deferral_across_quiet_hours_in_event_time(devbroker, redis_server, write_config,
                                                   journeyd_factory):
    # 22:30 in Paris, the night after BASE
    night = next_local(BASE, "Europe/Paris", 22) + 30 * MIN
    morning = next_local(night, "Europe/Paris", 8)
    events = [tp("c-q", "page_view", night - MIN, 0, attributes={"tz": "Europe/Paris"}),
              tp("c-q", "feedback", night, 1, score=2)]
    jdtest.produce(devbroker.bootstrap, "touchpoints", events)
    cfg = config(write_config)
    jd = journeyd_factory(cfg)
    jdtest.wait_caught_up(devbroker.bootstrap, GROUP, "touchpoints", timeout=90)
    # quiet hours: decided, kept in the outbox, not produced
    assert jdtest.consume_all(devbroker.bootstrap, REENGAGEMENT, quiet=2) == []
    state = jdtest.read_state(redis_server.client(), "c-q")
    assert state["tz"] == "Europe/Paris"
    assert redis_server.client().hlen("j:{c-q}:o") == 1

    # the event clock of the customer's partition passes 08:00 in Paris
    # 1 ms short of it: still held
    jdtest.produce(devbroker.bootstrap, "touchpoints",
                   [tp("c-q", "page_view", morning - 1, 2)])
    jdtest.wait_caught_up(devbroker.bootstrap, GROUP, "touchpoints", timeout=90)
    assert jdtest.consume_all(devbroker.bootstrap, REENGAGEMENT, quiet=2) == []
    jdtest.produce(devbroker.bootstrap, "touchpoints", [tp("c-q", "page_view", morning, 3)])
    got = jdtest.consume_all(devbroker.bootstrap, REENGAGEMENT, expect_n=1, timeout=60)
    assert len(got) == 1
    t = got[0].trigger
    assert t["trigger"] == "service_recovery" and t["source_event_id"] == "c-q-1"
    assert t["fired_at"] == night
    until = datetime.datetime.fromtimestamp(morning / 1000, datetime.timezone.utc)
    assert t["reason"].endswith("; deferred by quiet hours 21:00-08:00 in Europe/Paris until "
                                + until.strftime("%Y-%m-%dT%H:%M:%SZ"))
    # its delivery is acknowledged (the outbox entry removed) ...
    jdtest.wait_until(lambda: redis_server.client().hlen("j:{c-q}:o") == 0, 30,
                      what="the deferred trigger's outbox entry removed")
    # ... but a deliberate deferral is no event-to-trigger latency: the
    # histogram leaves it out (it would put hours into an SRE's p99) and
    # counts a trigger sent at once
    latency = "journeyd_event_to_trigger_seconds_count"
    assert jdtest.metric_sum(jd.metrics(), latency) == 0
    noon = morning + 2 * DAY + 4 * HOUR  # past the 1-day cooldown, in the day
    jdtest.produce(devbroker.bootstrap, "touchpoints",
                   [tp("c-q", "feedback", noon, 4, score=3)])
    got = jdtest.consume_all(devbroker.bootstrap, REENGAGEMENT, expect_n=2, timeout=60)
    assert [g.trigger["source_event_id"] for g in got] == ["c-q-1", "c-q-4"]
    assert "deferred" not in got[1].trigger["reason"]
    jdtest.wait_until(lambda: jdtest.metric_sum(jd.metrics(), latency) == 1, 30,
                      what="the trigger sent at once in journeyd_event_to_trigger_seconds")
    assert jd.stop() == 0
    assert redis_server.client().hlen("j:{c-q}:o") == 0


def test_policy_reloads_with_the_rules(devbroker, redis_server, write_config, journeyd_factory):
    """SIGHUP rebuilds the policy from the file; a policy that cannot be
    built refuses the whole reload and the running one stays."""
    cfg = config(write_config)
    jd = journeyd_factory(cfg)
    jd.wait_ready()
    with open(cfg) as f:
        text = f.read()
    # a cooldown on app_gift now: the second app_open of a customer is suppressed
    reloaded = text.replace('budget = 3; budget_period = "1d";', 'cooldown = "1d";')
    assert reloaded != text
    with open(cfg, "w") as f:
        f.write(reloaded)
    jd.signal(signal.SIGHUP)
    jd.wait_for_log(r"rules reloaded")
    # an unknown default zone: refused, naming the cause
    with open(cfg, "w") as f:
        f.write(jdtest.config_with_overrides(reloaded, {
            "policy.quiet_hours.default_tz": "Europe/Atlantis"}))
    jd.signal(signal.SIGHUP)
    jd.wait_for_log(r"policy: policy.quiet_hours.default_tz: 'Europe/Atlantis'")
    jdtest.produce(devbroker.bootstrap, "touchpoints", [
        tp("c-r", "app_open", BASE, 0, channel="app"),
        tp("c-r", "app_open", BASE + HOUR, 1, channel="app")])
    jdtest.wait_caught_up(devbroker.bootstrap, GROUP, "touchpoints", timeout=90)
    assert jd.stop() == 0, jd.log_text()[-3000:]
    got = jdtest.consume_all(devbroker.bootstrap, REWARDS, expect_n=1)
    assert pairs(got) == [("c-r", "app_gift")]
    audit = [decode_audit(r) for r in jdtest.consume_all(devbroker.bootstrap, AUDIT,
                                                          expect_n=1, decode=False)]
    assert [(a["customer_id"], a["reason"]) for a in audit] == [("c-r", "cooldown")]
