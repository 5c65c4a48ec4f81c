"""The insights stats ride with the write-back (src/engine_wb.c): each write
carries the stats of what it holds, sent ahead of the customers on the
write-back thread. They must still count every event exactly once when
their write fails: the same events, drained once undisturbed and once with
the stats connection killed over and over, give the same stats.

The rules here change only with events (no time windows, no quiet hours), so
that the stats of the two runs do not depend on when timers fire.
"""

import socket
import threading
import time

import jdtest
import faultlib
from faultlib import fault_broker, jd_factory  # noqa: F401 (fixtures)
from jdtest import Raw

SEED = 12

RULES = {
    "stages": Raw("""(
      { name = "repeat";         when = "count('purchase') >= 2"; },
      { name = "first_purchase"; when = "count('purchase') == 1"; },
      { name = "prospect";       when = "true"; }
    )"""),
    "segments": Raw("""(
      { name = "multi";     when = "count('purchase') >= 3"; },
      { name = "detractor"; when = "last('feedback', score) <= 6"; }
    )"""),
    "triggers": Raw("""(
      { name = "welcome_first_purchase"; kind = "REWARD";
        on = "event: event.type == 'purchase' && count('purchase') == 1"; },
      { name = "multi_welcome"; kind = "REWARD"; on = "enter:multi"; },
      { name = "service_recovery"; kind = "REENGAGEMENT";
        on = "event: event.type == 'feedback' && event.score <= 6"; cooldown = "1d"; }
    )"""),
    "policy": Raw("""{ audit_topic = "loyalty.suppressed"; }"""),
}


def stats(client, prefix):
    """Every partition's stats hash summed field by field (the offsets
    aside)."""
    total = {}
    for key in client.smembers(f"{prefix}:{{stats}}:partitions"):
        for field, value in client.hgetall(key).items():
            if field != "@offset":
                total[field] = total.get(field, 0) + int(value)
    return total


def check_against_reference(got, events):
    """What the reference model (faultlib.Reference) says of the stages and
    the first purchases: each customer in one stage by its purchase count,
    one welcome_first_purchase per customer who bought."""
    ref = faultlib.Reference(events)
    buys = [c.get("purchase", 0) for c in ref.counts.values()]
    want = {"stage:prospect": buys.count(0), "stage:first_purchase": buys.count(1),
            "stage:repeat": sum(1 for b in buys if b >= 2),
            "sent:welcome_first_purchase": len(ref.first_purchase)}
    assert {k: got.get(k, 0) for k in want} == want


def finish(jd, fault_broker, group, prod=None):
    """Lets the producer (if any) finish, waits until journeyd has committed
    everything and every trigger is acknowledged, stops it cleanly; returns
    its journeyd_redis_errors_total."""
    if prod:
        prod.join(jdtest.scaled(120))
        assert prod.error is None, prod.error
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=300)
    jdtest.wait_until(lambda: faultlib.metric(jd, "journeyd_outbox_pending") == 0, 60,
                      what="outbox drained")
    errors = faultlib.metric(jd, "journeyd_redis_errors_total")
    assert jd.stop() == 0
    return errors


def drain(write_config, jd_factory, fault_broker, redis_server, prefix, during=None):
    group = faultlib.new_group("stats-" + prefix)
    conf = faultlib.fault_config(write_config, group, name=f"{prefix}.conf",
                                 extra=dict(RULES, **{"redis.key_prefix": prefix}))
    jd = jd_factory(conf, redis_server.address)
    if during:
        during(jd)
    errors = finish(jd, fault_broker, group)
    return jd.log_text(), errors


def test_stats_exact_when_their_writes_fail(write_config, redis_server, jd_factory,
                                            fault_broker):
    """The events arrive at 10,000/s while the stats connection (the one
    whose last command was EVAL, the stats script) is killed every 20 ms
    until a stats write has failed on the write-back thread; then the same
    topic is drained again, undisturbed, under another key prefix."""
    events = faultlib.workload(n_events=60_000, n_customers=3_000, seed=SEED, days=20)
    client = redis_server.client()
    prod = faultlib.BackgroundProducer(fault_broker.bootstrap, events, rate=10_000)

    def kill_stats_connection(jd):
        jd.wait_ready(timeout=60)
        prod.start()
        deadline = time.monotonic() + jdtest.scaled(120)
        while time.monotonic() < deadline and not prod.done.is_set():
            faultlib.kill_connections(client, "eval")
            time.sleep(0.02)
        prod.join(jdtest.scaled(120))
        assert prod.error is None, prod.error

    log, errors = drain(write_config, jd_factory, fault_broker, redis_server, "killed",
                        during=kill_stats_connection)
    assert "redis stats write failed" in log
    assert errors > 0
    killed = stats(client, "killed")

    _, errors = drain(write_config, jd_factory, fault_broker, redis_server, "calm")
    assert errors == 0
    calm = stats(client, "calm")
    check_against_reference(calm, events)
    assert killed == calm


def test_customers_wait_for_their_stats_across_a_crash(write_config, redis_server, jd_factory,
                                                       fault_broker):
    """A partition's stats script fails (its hash swapped for a string:
    WRONGTYPE) while events flow; journeyd is SIGKILLed while it fails, the
    hash is put back and journeyd restarted. Had the customers behind the
    failed stats been written, the replay would skip their events and their
    stats would be missing; the end stats equal an undisturbed run's."""
    events = faultlib.workload(n_events=60_000, n_customers=3_000, seed=SEED + 1, days=20)
    client = redis_server.client()
    group = faultlib.new_group("stats-crash")
    conf = faultlib.fault_config(write_config, group, instance_id="jd-stats-1",
                                 session_timeout="4s", name="crash.conf",
                                 kafka_properties={"heartbeat.interval.ms": "500"},
                                 extra=dict(RULES, **{"redis.key_prefix": "crash"}))
    prod = faultlib.BackgroundProducer(fault_broker.bootstrap, events, rate=10_000)
    jd = jd_factory(conf, redis_server.address)
    jd.wait_ready(timeout=60)
    prod.start()
    jdtest.wait_until(lambda: (faultlib.metric(jd, "journeyd_events_consumed_total") or 0)
                      > 10_000, 60, what="10,000 events consumed")
    key = sorted(client.smembers("crash:{stats}:partitions"))[0]
    aside = key + ":aside"
    swap = client.pipeline(transaction=True)
    swap.rename(key, aside)
    swap.set(key, "not a hash")
    swap.execute()
    jdtest.wait_until(lambda: "redis stats write failed" in jd.log_text(), 60,
                      what="a stats write failing")
    time.sleep(0.3)
    jd.sigkill()
    jd.wait(10)
    back = client.pipeline(transaction=True)
    back.delete(key)
    back.rename(aside, key)
    back.execute()
    jd = jd_factory(conf, redis_server.address)
    finish(jd, fault_broker, group, prod)
    crashed = stats(client, "crash")
    check_against_reference(crashed, events)

    drain(write_config, jd_factory, fault_broker, redis_server, "calm2")
    assert crashed == stats(client, "calm2")


class ReplyDropper:
    """A TCP proxy in front of Redis that, `drops` times (every `every`-th
    time, so that the retry goes through), lets a command containing EVAL
    through and then drops its connection instead of passing the reply back:
    Redis has run the stats script, journeyd never hears of it."""

    def __init__(self, redis_port, drops, every=5):
        self.redis_port = redis_port
        self.drops = drops
        self.every = every
        self.evals = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.closed:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.redis_port))
            pair = {"eval": False}
            threading.Thread(target=self.up, args=(c, s, pair), daemon=True).start()
            threading.Thread(target=self.down, args=(s, c, pair), daemon=True).start()

    def up(self, c, s, pair):
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                if b"EVAL" in data:
                    pair["eval"] = True
                s.sendall(data)
        except OSError:
            pass
        for x in (c, s):
            x.close()

    def down(self, s, c, pair):
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                if pair["eval"]:
                    pair["eval"] = False
                    with self.lock:
                        self.evals += 1
                        drop = self.dropped < self.drops and self.evals % self.every == 0
                        self.dropped += drop
                    if drop:
                        break  # the script ran; its reply is lost
                c.sendall(data)
        except OSError:
            pass
        for x in (c, s):
            x.close()

    def close(self):
        self.closed = True
        self.srv.close()


def test_stats_counted_once_when_their_reply_is_lost(write_config, redis_server, jd_factory,
                                                     fault_broker):
    """The stats script runs but its reply is lost (the proxy drops the
    connection), 5 times while events flow: the failed flight is sent again
    alone under its own offset, which Redis then skips; merged into newer
    deltas it would be counted twice."""
    events = faultlib.workload(n_events=40_000, n_customers=2_000, seed=SEED + 2, days=20)
    # (write-backs every 200 ms: some 40 stats writes go out in the run,
    # every other one is lost until 5 were)
    proxy = ReplyDropper(redis_server.port, drops=5, every=2)
    try:
        group = faultlib.new_group("stats-lost")
        conf = faultlib.fault_config(write_config, group, name="lost.conf",
                                     extra=dict(RULES, **{"redis.key_prefix": "lost",
                                                          "processing.flush_interval": "200ms"}))
        prod = faultlib.BackgroundProducer(fault_broker.bootstrap, events, rate=10_000)
        jd = jd_factory(conf, f"127.0.0.1:{proxy.port}")
        jd.wait_ready(timeout=60)
        prod.start()
        finish(jd, fault_broker, group, prod)
        assert proxy.dropped >= 1, (proxy.dropped, proxy.evals)
        # each lost flight was sent again and found counted already (one
        # line per partition in it)
        assert jd.log_text().count("deltas skipped") >= proxy.dropped
    finally:
        proxy.close()
    check_against_reference(stats(redis_server.client(), "lost"), events)
