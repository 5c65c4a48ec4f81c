"""The command line around the rules: `journeyd --check` and `journeyctl check`
print every error with FILE:LINE:COLUMN; `journeyctl customer` and `explain`
read a real customer from Redis; SIGHUP reloads the rules while events flow
(a valid rule set takes effect and changes rule_version, an invalid one is
refused and the running rules keep working)."""

import json
import os
import re
import signal
import subprocess

import jdtest

DAY = 86400 * 1000
BASE = jdtest.base_time_ms(days_ago=30)
REWARDS = "loyalty.rewards"


def tp(customer, type, day, seq, **kw):
    return jdtest.touchpoint(customer, type, BASE + day * DAY + seq * 60000,
                             event_id=f"{customer}-{seq}", **kw)


def journeyctl(*args, timeout=30):
    return subprocess.run([jdtest.binary("journeyctl")] + list(args), capture_output=True,
                          text=True, timeout=jdtest.scaled(timeout), env=jdtest.child_env())


def broken_config(tmp_path):
    """The shipped config with two rule errors on known lines and columns."""
    with open(jdtest.DEFAULT_CONFIG) as f:
        text = f.read()
    text = text.replace("count('purchase', 30d) >= 3", "cnt('purchase', 30d) >= 3", 1)
    text = text.replace("on = \"enter:cart_abandoner\"", "on = \"enter:cart_abandonr\"", 1)
    path = jdtest.write_config(str(tmp_path / "broken"), base=jdtest.DEFAULT_CONFIG)
    with open(path, "w") as f:
        f.write(text)
    lines = text.splitlines()
    want = []
    for needle in ("cnt('purchase'", "enter:cart_abandonr"):
        for i, line in enumerate(lines, 1):
            if needle in line:
                col = line.index(needle) + 1
                if needle.startswith("enter:"):
                    col += len("enter:")  # the error points at the segment name
                want.append((i, col))
                break
    return path, want


def test_check_prints_every_error_with_position(tmp_path):
    path, want = broken_config(tmp_path)
    for run in (jdtest.run_journeyd(["--check", "-c", path]), journeyctl("check", "-c", path)):
        assert run.returncode == 1, run.stdout + run.stderr
        errors = [l for l in run.stderr.splitlines() if ": error: " in l]
        assert len(errors) == 2, run.stderr
        errors.sort(key=lambda l: int(l[len(path) + 1:].split(":")[0]))
        assert re.search(r"unknown function cnt .*did you mean count\?", errors[0]), errors[0]
        assert "cart_abandonr" in errors[1] and "cart_abandoner" in errors[1], errors[1]
        for (line, col), err in zip(want, errors):
            assert err.startswith(f"{path}:{line}:{col}: error: "), (err, line, col)


def test_check_accepts_the_shipped_config():
    for run in (jdtest.run_journeyd(["--check", "-c", jdtest.DEFAULT_CONFIG]),
                journeyctl("check", "-c", jdtest.DEFAULT_CONFIG)):
        assert run.returncode == 0, run.stderr
        assert "OK" in run.stdout


def test_customer_and_explain(devbroker, redis_server, write_config, journeyd_factory):
    events = [tp("ctl-1", "page_view", 0, 0),
              tp("ctl-1", "purchase", 1, 1, amount=20.0),
              tp("ctl-1", "purchase", 2, 2, amount=30.0),
              tp("ctl-1", "purchase", 3, 3, amount=50.0, channel="app"),
              tp("ctl-1", "feedback", 4, 4, score=4)]
    jdtest.produce(devbroker.bootstrap, "touchpoints", events)
    config = write_config()
    jd = journeyd_factory(config)
    jdtest.wait_caught_up(devbroker.bootstrap, "journeyd", "touchpoints", timeout=60)
    assert jd.stop() == 0

    r = journeyctl("-c", config, "-r", redis_server.address, "customer", "ctl-1", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["customer_id"] == "ctl-1"
    assert doc["stage"] == "repeat"
    assert sorted(doc["segments"]) == ["detractor", "vip"]
    assert doc["counts"] == {"page_view": 1, "purchase": 3, "feedback": 1}
    assert abs(doc["spend"] - 100.0) < 1e-9
    fired = sorted(t["trigger"] for t in doc["triggers"])
    assert fired == ["service_recovery", "vip_welcome", "welcome_first_purchase"]
    assert all(len(t["trigger_id"]) == 32 and t["reason"] for t in doc["triggers"])
    # the rules' aggregates and their last update: purchases seen, lateness none
    assert doc["aggregates"]["count:purchase:30d"] == events[3]["occurred_at"]
    assert "nfb:add_to_cart:purchase:1h" in doc["aggregates"]

    r = journeyctl("-c", config, "-r", redis_server.address, "customer", "ctl-1")
    assert r.returncode == 0 and "vip_welcome" in r.stdout and "why:" in r.stdout

    r = journeyctl("-c", config, "-r", redis_server.address, "explain", "ctl-1", "segment:vip")
    assert r.returncode == 0, r.stderr
    assert "count('purchase', 30d)" in r.stdout and "3" in r.stdout, r.stdout

    r = journeyctl("-c", config, "-r", redis_server.address, "customer", "nobody")
    assert r.returncode == 1 and "no customer" in r.stderr


def test_sighup_reload_while_events_flow(devbroker, redis_server, write_config, journeyd_factory,
                                         tmp_path):
    config = write_config()
    with open(config) as f:
        original = f.read()
    jd = journeyd_factory(config)
    jd.wait_ready(timeout=jdtest.scaled(30))

    def play(customer, seq0):
        jdtest.produce(devbroker.bootstrap, "touchpoints",
                       [tp(customer, "purchase", 1, seq0, amount=150.0)])

    play("r-before", 0)
    first = jdtest.consume_all(devbroker.bootstrap, REWARDS, expect_n=1)
    v1 = first[0].trigger["rule_version"]

    # a valid new rule set: one more trigger
    new_rule = ('  { name = "big_spender"; kind = "REWARD";\n'
                '    on = "event: event.type == \'purchase\' && event.amount >= 100"; },\n')
    with open(config, "w") as f:
        f.write(original.replace("triggers = (\n", "triggers = (\n" + new_rule, 1))
    jd.signal(signal.SIGHUP)
    jd.wait_for_log(r"rules reloaded: version", timeout=jdtest.scaled(20))
    play("r-after", 0)
    got = jdtest.consume_all(devbroker.bootstrap, REWARDS, expect_n=3)
    after = [r.trigger for r in got if r.trigger["customer_id"] == "r-after"]
    assert sorted(t["trigger"] for t in after) == ["big_spender", "welcome_first_purchase"]
    v2 = after[0]["rule_version"]
    assert v2 != v1 and all(t["rule_version"] == v2 for t in after)

    # an invalid rule set is refused; the running one (v2) keeps working
    with open(config, "w") as f:
        f.write(original.replace("count('purchase') == 1", "count('purchase') == ", 1))
    jd.signal(signal.SIGHUP)
    jd.wait_for_log(r"rule reload refused", timeout=jdtest.scaled(20))
    assert re.search(re.escape(config) + r":\d+:\d+: error", jd.log_text())
    play("r-refused", 0)
    got = jdtest.consume_all(devbroker.bootstrap, REWARDS, expect_n=5)
    refused = [r.trigger for r in got if r.trigger["customer_id"] == "r-refused"]
    assert sorted(t["trigger"] for t in refused) == ["big_spender", "welcome_first_purchase"]
    assert all(t["rule_version"] == v2 for t in refused)
    m = jd.metrics()
    assert m.get('journeyd_rule_reloads_total{result="ok"}') == 1
    assert m.get('journeyd_rule_reloads_total{result="error"}') == 1
    assert jd.stop() == 0
