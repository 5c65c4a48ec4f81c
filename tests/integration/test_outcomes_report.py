"""journeyctl report --html: a program with varied journeys runs through the
real daemon, the report is written from Redis and rendered in headless
Chromium (Debian `chromium`): the page is self-contained (no script, no
external reference), Chromium reports no console error, the DOM carries every
view with the program's numbers, and a screenshot is produced (kept in
BUILD_DIR/test-artifacts/ for a person to look at)."""

import json
import os
import random
import re
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import jdtest  # noqa: E402
from jdtest import Raw  # noqa: E402

DAY = 86400 * 1000

TRIGGERS = Raw("""(
  { name = "welcome_first_purchase"; kind = "REWARD";
    on = "event: event.type == 'purchase' && count('purchase') == 1";
    goal = "purchase"; goal_window = "30d"; holdout = 0.25; },
  { name = "vip_welcome"; kind = "REWARD"; on = "enter:vip"; cooldown = "30d";
    goal = "purchase"; goal_window = "14d"; holdout = 0.25; },
  { name = "service_recovery"; kind = "REENGAGEMENT";
    on = "event: event.type == 'feedback' && event.score <= 6"; cooldown = "1d";
    goal = "purchase"; goal_window = "7d"; holdout = 0.3; },
  { name = "cart_nudge"; kind = "REENGAGEMENT"; on = "event: event.type == 'add_to_cart'";
    cooldown = "2d"; goal = "purchase"; goal_window = "2d"; holdout = 0.5; }
)""")


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Debian package chromium is not installed (tests/deps.sh installs it)")


tp = jdtest.touchpoint


def program(t0, n=80, seed=7):
    """Varied journeys over 100 days, in global time order."""
    rnd = random.Random(seed)
    events = []
    for i in range(n):
        cid = f"cust{i:03d}"
        t = t0 + rnd.randrange(0, 20) * DAY
        kind = rnd.random()
        for _ in range(rnd.randrange(1, 5)):
            events.append(tp(cid, rnd.choice(["page_view", "product_view", "app_open"]), t))
            t += rnd.randrange(1, 4) * DAY
        if kind < 0.2:
            continue  # browses only
        buys = 1 if kind < 0.45 else rnd.randrange(2, 4) if kind < 0.8 else rnd.randrange(5, 8)
        for _ in range(buys):
            if rnd.random() < 0.5:
                events.append(tp(cid, "add_to_cart", t))
                t += 3600 * 1000
                if rnd.random() < 0.4:  # abandoned; back days later, maybe
                    t += rnd.randrange(1, 6) * DAY
            events.append(tp(cid, "purchase", t, amount=rnd.randrange(10, 200)))
            t += rnd.randrange(1, 12) * DAY
        if rnd.random() < 0.7:
            events.append(tp(cid, "feedback", t, score=rnd.choice([2, 4, 6, 7, 8, 9, 10, 10])))
            t += rnd.randrange(1, 5) * DAY
            if rnd.random() < 0.5:
                events.append(tp(cid, "purchase", t, amount=25))
        if kind > 0.9:  # bought, then silent for seven weeks, then a look
            t += 50 * DAY
            events.append(tp(cid, "page_view", t))
    events.sort(key=lambda e: e["occurred_at"])
    return events


def run_chromium(tmp, url, *extra, timeout=120):
    profile = os.path.join(tmp, "chromium-profile")
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}"] + list(extra) + [url]
    return subprocess.run(args, capture_output=True, text=True, timeout=jdtest.scaled(timeout))


def test_report_renders_in_chromium(tmp_path, write_config, journeyd_factory, devbroker,
                                    redis_server):
    t0 = jdtest.base_time_ms(days_ago=120)
    events = program(t0)
    jdtest.produce(devbroker.bootstrap, "touchpoints", events)
    cfg = write_config({"kafka.group_id": "g-report", "triggers": TRIGGERS})
    jd = journeyd_factory(cfg)
    jdtest.wait_caught_up(devbroker.bootstrap, "g-report", "touchpoints", timeout=120)
    assert jd.stop() == 0

    ctl = [jdtest.binary("journeyctl"), "-c", cfg, "-r", redis_server.address]
    html = str(tmp_path / "report.html")
    r = subprocess.run(ctl + ["report", "--html", html], capture_output=True, text=True,
                       timeout=60, env=jdtest.child_env())
    assert r.returncode == 0, r.stderr
    seg = json.loads(subprocess.run(ctl + ["segments", "--json"], capture_output=True, text=True,
                                    timeout=60, env=jdtest.child_env(), check=True).stdout)
    out = json.loads(subprocess.run(ctl + ["outcomes", "--json"], capture_output=True, text=True,
                                    timeout=60, env=jdtest.child_env(), check=True).stdout)

    page = open(html, encoding="utf-8").read()
    # self-contained: no script, nothing fetched from anywhere
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page and "url(http" not in page

    # the numbers in the page are the program's
    customers = sum(seg["stages"].values())
    assert customers == 80
    assert f'<div class="v">{customers}</div><div class="l">customers</div>' in page
    for name, n in seg["stages"].items():
        if n:
            assert f"{n} (" in page, name
    out = out["triggers"]
    assert any(o["control"] > 0 and o["treated"] > 0 for o in out.values())
    for name in out:
        assert name in page

    shutil.copy(html, str(tmp_path / "copy.html"))
    url = "file://" + html
    # the DOM as Chromium built it (layout ran), and its console
    r = run_chromium(str(tmp_path), url, "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert r.returncode == 0, r.stderr[-3000:]
    dom = r.stdout
    for title in ("The journey", "Stage sizes", "Segment sizes", "Triggers sent and suppressed",
                  "What the triggers achieve", "How customers feel (NPS)"):
        assert title in dom, title
    assert dom.count("<svg") >= 6
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console

    shot = str(tmp_path / "report.png")
    r = run_chromium(str(tmp_path), url, f"--screenshot={shot}", "--window-size=1400,1800",
                     "--hide-scrollbars")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(shot, "rb") as f:
        png = f.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1400, 1800)
    assert len(png) > 50000  # a page with charts, not a blank one
    keep = os.path.join(jdtest.BUILD_DIR, "test-artifacts")
    os.makedirs(keep, exist_ok=True)
    shutil.copy(shot, os.path.join(keep, "outcomes_report.png"))
    shutil.copy(html, os.path.join(keep, "outcomes_report.html"))
