"""End to end on Redis Cluster: build/journeyd given cluster seeds
(`-r 127.0.0.1:P1,127.0.0.1:P2`) against a real 3-master cluster
(jdcluster.py), events produced with a real Kafka client to
journey-devbroker, triggers read back with a real consumer and the state
with python3-redis's cluster client.

- the scripted journeys give the same triggers, the same state and the
  same program stats (`journeyctl segments --json`, per-partition hashes
  written by a script on each partition's slot) as on a single Redis (run
  side by side, each with its own broker), and a trigger with a global
  budget (a counter on its own slot) fires exactly its budget on both;
- `redis-cli --cluster reshard` of 1000 slots while events flow: every
  event applied exactly once, every trigger exactly once by id, MOVED/ASK
  counted in journeyd_redis_redirects_total;
- a master with a replica SIGKILLed while events flow: journeyd backs off
  (not ready), resumes after the failover, and the state is exact.
"""

import json
import os
import re
import subprocess
import threading
import time

import pytest

import jdcluster
import jdtest

DAY = 86400 * 1000
HOUR = 3600 * 1000
BASE = jdtest.base_time_ms(days_ago=50)
REWARDS = "loyalty.rewards"
REENGAGEMENT = "loyalty.reengagement"


def tp(customer, type, day, seq, **kw):
    return jdtest.touchpoint(customer, type, BASE + day * DAY + seq * 60000,
                             event_id=f"{customer}-{seq}", **kw)


def journeys():
    ev = []
    # three purchases in ten days: a first purchase, then VIP
    ev += [tp("c-buyer", "page_view", 0, 0),
           tp("c-buyer", "purchase", 1, 1, amount=20.0),
           tp("c-buyer", "purchase", 4, 2, amount=35.5),
           tp("c-buyer", "purchase", 10, 3, amount=44.5, channel="app")]
    ev += [tp("c-once", "product_view", 2, 0), tp("c-once", "purchase", 2, 1, amount=12.0)]
    # three purchases 20 days apart: never three in 30 days
    ev += [tp("c-slow", "purchase", 0, 0, amount=10.0),
           tp("c-slow", "purchase", 20, 1, amount=10.0),
           tp("c-slow", "purchase", 40, 2, amount=10.0)]
    ev += [tp("c-unhappy", "app_open", 3, 0, channel="app"),
           tp("c-unhappy", "feedback", 3, 1, channel="app", score=3)]
    ev += [tp("c-happy", "feedback", 3, 0, score=9)]
    ev += [tp("c-browser", "page_view", 5, 0), tp("c-browser", "product_view", 5, 1),
           tp("c-browser", "page_view", 6, 2),
           tp("c-browser", "email_open", 7, 3, channel="email")]
    # many more customers, so that every master holds some
    for i in range(60):
        ev += [tp(f"c-many-{i}", "purchase", 1 + i % 5, 0, amount=1.0 + i)]
    return ev


CUSTOMERS = sorted({e["customer_id"] for e in journeys()})

# the shipped triggers plus one with a global budget: 3 a day over 8 takers
GIFT = ("""{ name = "app_gift"; kind = "REWARD"; budget = 3; budget_period = "1d";\n"""
        """    on = "event: event.type == 'app_open' && event.attributes['gift'] == 'yes'"; }""")
GIFT_TAKERS = [f"c-gift-{i}" for i in range(8)]
GIFT_BUDGET = 3


def gift_events():
    # after every other event: the policy's clock is the partition's event
    # clock, so these must be the latest of their partitions to fall in one
    # budget period
    return [tp(c, "app_open", 45, i, channel="app", attributes={"gift": "yes"})
            for i, c in enumerate(GIFT_TAKERS)]


def triggers_with_budget():
    with open(jdtest.DEFAULT_CONFIG) as f:
        text = f.read()
    m = re.search(r"^triggers = (\(.*?^\));", text, re.S | re.M)
    assert m, "no triggers list in the shipped config"
    return jdtest.Raw(m.group(1)[:-1].rstrip() + ",\n  " + GIFT + "\n)")


def journeyctl(config, redis_addr, *args):
    r = subprocess.run([jdtest.binary("journeyctl"), "-c", config, "-r", redis_addr] + list(args),
                       capture_output=True, text=True, timeout=jdtest.scaled(30))
    assert r.returncode == 0, f"journeyctl {args}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def suppressed(metrics, reason):
    return sum(v for k, v in metrics.items() if k.startswith("journeyd_triggers_suppressed_total{")
               and f'reason="{reason}"' in k)


def trigger_view(records):
    """What must not depend on where the state lives."""
    keep = ("trigger_id", "customer_id", "trigger", "kind", "source_event_id", "journey_stage",
            "segment", "reason", "fired_at", "attributes")
    return sorted(tuple(str(r.trigger.get(k)) for k in keep) for r in records)


@pytest.fixture
def cluster(tmp_path):
    c = jdcluster.RedisCluster(str(tmp_path / "cluster"), masters=3).start()
    yield c
    c.stop()


@pytest.fixture
def cluster_with_replicas(tmp_path):
    c = jdcluster.RedisCluster(str(tmp_path / "cluster6"), masters=3, replicas=1,
                               node_timeout_ms=2000).start()
    yield c
    c.stop()


def run_to_end(journeyd_factory, config, bootstrap, redis_addr, group="journeyd"):
    jd = journeyd_factory(config, bootstrap=bootstrap, redis_addr=redis_addr)
    jdtest.wait_caught_up(bootstrap, group, "touchpoints", timeout=90)
    return jd


def test_journeys_same_as_single_redis(tmp_path, devbroker, redis_server, cluster, write_config,
                                       journeyd_factory):
    events = journeys() + gift_events()
    config = write_config({"triggers": triggers_with_budget()})
    n_triggers = 65 + GIFT_BUDGET

    # a single Redis, on the fixture's broker
    jdtest.produce(devbroker.bootstrap, "touchpoints", events)
    jd1 = run_to_end(journeyd_factory, config, devbroker.bootstrap, redis_server.address)
    m1 = jd1.metrics()
    assert jd1.stop() == 0, jd1.log_text()[-3000:]
    single = jdtest.consume_all(devbroker.bootstrap, [REWARDS, REENGAGEMENT], expect_n=n_triggers)
    segments1 = json.loads(journeyctl(config, redis_server.address, "segments", "--json"))

    # the cluster, on a broker of its own, the same events in the same order
    broker2 = jdtest.DevBroker(str(tmp_path / "devbroker2")).start()
    try:
        jdtest.produce(broker2.bootstrap, "touchpoints", events)
        jd2 = run_to_end(journeyd_factory, config, broker2.bootstrap, cluster.seeds(2))
        assert "cluster of 3 masters" in jd2.log_text()
        m2 = jd2.metrics()
        log2 = jd2.log_text()
        assert jd2.stop() == 0, jd2.log_text()[-3000:]
        clustered = jdtest.consume_all(broker2.bootstrap, [REWARDS, REENGAGEMENT],
                                       expect_n=n_triggers)
    finally:
        broker2.stop()
    # the stats and budget keys live on other masters than the first seed:
    # not one Redis error (a MOVED used to stall the stats flush for good)
    assert jdtest.metric_sum(m2, "journeyd_redis_errors_total") == 0, log2[-3000:]
    assert "stats" not in "".join(l for l in log2.splitlines() if "failed" in l), log2[-3000:]

    # the global budget: exactly its size on both, the rest suppressed
    for records, m in ((single, m1), (clustered, m2)):
        gifts = [r.trigger for r in records if r.trigger["trigger"] == "app_gift"]
        assert len(gifts) == GIFT_BUDGET, gifts
        assert {g["customer_id"] for g in gifts} <= set(GIFT_TAKERS)
        assert suppressed(m, "budget") == len(GIFT_TAKERS) - GIFT_BUDGET
    budget_keys = {i: cluster.node(i).keys("j:budget:*") for i in cluster.masters()}
    owner = cluster.master_of_slot(cluster.keyslot("app_gift"))
    assert [k for keys in budget_keys.values() for k in keys] == budget_keys[owner], budget_keys
    assert len(budget_keys[owner]) == 1 and "{app_gift}" in budget_keys[owner][0], budget_keys
    assert int(cluster.node(owner).get(budget_keys[owner][0])) >= GIFT_BUDGET
    # which takers got the gift depends on the order partitions are processed
    single = [r for r in single if r.trigger["trigger"] != "app_gift"]
    clustered = [r for r in clustered if r.trigger["trigger"] != "app_gift"]

    # the program stats: summed over partition hashes on every master
    segments2 = json.loads(journeyctl(config, cluster.seeds(2), "segments", "--json"))
    assert segments2 == segments1
    assert segments1["partitions"] > 1 and sum(segments1["stages"].values()) > 0, segments1
    stats_masters = {cluster.master_of_slot(cluster.keyslot(k))
                     for k in cluster.client().smembers("j:{stats}:partitions")}
    assert len(stats_masters) > 1, stats_masters
    # the partitions' event clocks (src/engine_clock.c): the same on both,
    # each on its partition's master
    single_keys = redis_server.client().keys("j:{p:*}:wm")
    assert len(single_keys) > 1, single_keys
    clocks1 = {k: int(redis_server.client().hget(k, "watermark")) for k in single_keys}
    clocks2 = {k: int(cluster.client().hget(k, "watermark")) for k in single_keys}
    # (a partition idle for processing.idle_advance follows the wall clock:
    # past every event's time, and not the same in both runs)
    last_event = max(e["occurred_at"] for e in events)
    for k in single_keys:
        assert clocks1[k] == clocks2[k] or min(clocks1[k], clocks2[k]) > last_event, k
    assert len({cluster.master_of_slot(cluster.keyslot(k)) for k in single_keys}) > 1

    got = {c: jdtest.names(t) for c, t in jdtest.by_customer(clustered).items()
           if not c.startswith("c-many-")}
    assert got == {
        "c-buyer": ["vip_welcome", "welcome_first_purchase"],
        "c-once": ["welcome_first_purchase"],
        "c-slow": ["welcome_first_purchase"],
        "c-unhappy": ["service_recovery"],
    }
    assert trigger_view(clustered) == trigger_view(single)

    # the same state, field by field, and spread over every master
    one = redis_server.client()
    many = cluster.client()
    for c in CUSTOMERS:
        a, b = jdtest.read_state(one, c), jdtest.read_state(many, c)
        assert a is not None and a == b, c
        assert one.hgetall(f"j:{{{c}}}:o") == many.hgetall(f"j:{{{c}}}:o") == {}, c
        assert one.lrange(f"j:{{{c}}}:h", 0, -1) == many.lrange(f"j:{{{c}}}:h", 0, -1), c
    assert all(n > 0 for n in cluster.dbsizes().values()), cluster.dbsizes()
    assert len(cluster.dbsizes()) == 3


class Flow:
    """Produces one purchase per customer per round, in the background,
    until told to stop (at least `min_rounds`); event times advance an hour
    a round so every customer's events are in order."""

    def __init__(self, bootstrap, customers, min_rounds=4):
        self.bootstrap = bootstrap
        self.customers = customers
        self.min_rounds = min_rounds
        self.rounds = 0
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def produce_round(self):
        r = self.rounds
        events = [jdtest.touchpoint(c, "purchase", BASE + r * HOUR, event_id=f"{c}-r{r}",
                                    amount=1.0) for c in self.customers]
        jdtest.produce(self.bootstrap, "touchpoints", events)
        self.rounds += 1

    def _run(self):
        try:
            while self.rounds < self.min_rounds or not self.stop.is_set():
                self.produce_round()
                time.sleep(0.2)
        except Exception as exc:  # reported by join()
            self.error = exc

    def start(self):
        self.thread.start()
        return self

    def join(self, timeout=120):
        self.stop.set()
        self.thread.join(jdtest.scaled(timeout))
        assert not self.thread.is_alive(), "producer stuck"
        if self.error:
            raise self.error
        return self.rounds


def check_exact(cluster, bootstrap, customers, rounds):
    r = cluster.client()
    for c in customers:
        s = jdtest.read_state(r, c)
        assert s is not None, c
        assert jdtest.lifetime_count(s, "purchase") == rounds, (c, s)
        assert float(s["sp"]) == pytest.approx(rounds), (c, s)
        assert r.hlen(f"j:{{{c}}}:o") == 0, c  # every trigger acknowledged
    records = jdtest.consume_all(bootstrap, [REWARDS, REENGAGEMENT],
                                 expect_n=2 * len(customers), timeout=60)
    ids = {}
    for rec in records:
        t = rec.trigger
        ids.setdefault((t["customer_id"], t["trigger"]), set()).add(t["trigger_id"])
    want = {(c, n) for c in customers for n in ("welcome_first_purchase", "vip_welcome")}
    assert set(ids) == want
    doubled = {k: v for k, v in ids.items() if len(v) != 1}
    assert not doubled, f"triggers fired twice (distinct ids): {list(doubled.items())[:5]}"


def test_reshard_while_events_flow(cluster, devbroker, write_config, journeyd_factory):
    customers = [f"rs-{i}" for i in range(1000)]
    flow = Flow(devbroker.bootstrap, customers)
    flow.produce_round()
    jd = journeyd_factory(write_config(), redis_addr=cluster.seeds(1))
    jdtest.wait_caught_up(devbroker.bootstrap, "journeyd", "touchpoints", timeout=90)
    flow.start()

    src = cluster.master_of_slot(0)
    dst = next(i for i in cluster.masters() if i != src)
    reshard = cluster.reshard(src, dst, 1000)
    assert jdcluster.wait_all_exits(reshard, 120) == 0
    rounds = flow.join()
    jdtest.wait_caught_up(devbroker.bootstrap, "journeyd", "touchpoints", timeout=120)
    assert cluster.master_of_slot(0) == dst

    m = jd.metrics()
    redirects = jdtest.metric_sum(m, "journeyd_redis_redirects_total")
    print(f"reshard of 1000 slots under {rounds} rounds of {len(customers)} events: "
          f"{redirects:.0f} redirects, {jdtest.metric_sum(m, 'journeyd_redis_errors_total'):.0f} "
          "redis errors")
    assert redirects > 0
    assert jdtest.metric_sum(m, "journeyd_dlq_total") == 0
    assert jd.stop() == 0, jd.log_text()[-3000:]
    check_exact(cluster, devbroker.bootstrap, customers, rounds)


def test_failover_while_events_flow(cluster_with_replicas, devbroker, write_config,
                                    journeyd_factory):
    cluster = cluster_with_replicas
    customers = [f"fo-{i}" for i in range(600)]
    flow = Flow(devbroker.bootstrap, customers, min_rounds=6)
    flow.produce_round()
    jd = journeyd_factory(write_config(), redis_addr=cluster.seeds(2))
    jdtest.wait_caught_up(devbroker.bootstrap, "journeyd", "touchpoints", timeout=90)
    flow.start()
    time.sleep(0.5)

    victim = cluster.master_of_slot(cluster.keyslot(customers[0]))
    t0 = time.monotonic()
    cluster.kill(victim)
    # journeyd notices (Redis errors, not ready) unless its connection layer's
    # own retries (within redis.timeout) outlast the failover: timing decides,
    # the outcome checked below must be exact either way
    jdtest.wait_until(lambda: jdtest.metric_sum(jd.metrics(), "journeyd_redis_errors_total") > 0
                      or cluster.master_of_slot(cluster.keyslot(customers[0])) != victim,
                      30, what="journeyd to see the dead master, or the failover to end")
    cluster.wait_ok(60)  # the replica took over
    saw_errors = jdtest.metric_sum(jd.metrics(), "journeyd_redis_errors_total") > 0
    failover_s = time.monotonic() - t0
    rounds = flow.join()
    jdtest.wait_caught_up(devbroker.bootstrap, "journeyd", "touchpoints", timeout=120)
    resumed_s = time.monotonic() - t0
    jd.wait_ready(30)
    assert victim not in cluster.masters()
    print(f"failover: cluster ok again after {failover_s:.1f}s, journeyd caught up "
          f"{resumed_s:.1f}s after the kill")
    assert not saw_errors or "redis available again" in jd.log_text()
    assert jd.stop() == 0, jd.log_text()[-3000:]
    check_exact(cluster, devbroker.bootstrap, customers, rounds)
