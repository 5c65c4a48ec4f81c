"""faultlib — what the fault tests (test_fault_*.py) share: a deterministic
workload, a fast producer for it, an independent reference model of the
journey state it must produce, the trigger_id formula, and the end-of-run
checks ("nothing lost, nothing doubled").

The reference model is deliberately not journeyd's code: it is the SPEC's
semantics written again in a few lines of Python (lifetime counts per type,
spend = purchases - refunds, an event_id seen again is applied once,
welcome_first_purchase fires for the first purchase), so that a bug in the
engine cannot hide behind the same bug in the checker.
"""

import random
import struct
import subprocess
import threading
import time

from confluent_kafka import Producer

import jdtest

# Topics of a fault run: 16 input partitions keep each partition far below the
# ~60,000 messages the mock cluster retains (200,000 events / 16 = 12,500).
FAULT_TOPICS = {
    "touchpoints": 16,
    "loyalty.rewards": 8,
    "loyalty.reengagement": 8,
    "touchpoints.dlq": 4,
    "loyalty.suppressed": 4,
}

TYPES = [
    ("page_view", 30), ("product_view", 18), ("add_to_cart", 10), ("purchase", 12),
    ("refund", 2), ("app_open", 9), ("email_open", 6), ("email_click", 3),
    ("feedback", 4), ("support_contact", 3), ("checkout_started", 3),
]
CHANNELS = ["web", "app", "email", "store"]
DAY_MS = 86400 * 1000


# --------------------------------------------------------------------------
# Avro, by hand: python3-avro encodes ~20k events/s, this ~300k/s. The output
# is checked against python3-avro in encode_selfcheck().


def _zz(n):
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _str(s):
    b = s.encode()
    return _zz(len(b)) + b


def encode_touchpoint(ev):
    out = [_str(ev["event_id"]), _str(ev["customer_id"]), _str(ev["type"]),
           _str(ev["channel"]), _zz(ev["occurred_at"])]
    out.append(b"\x00" if ev["amount"] is None else b"\x02" + struct.pack("<d", ev["amount"]))
    out.append(b"\x00" if ev["currency"] is None else b"\x02" + _str(ev["currency"]))
    out.append(b"\x00" if ev["score"] is None else b"\x02" + _zz(ev["score"]))
    attrs = ev.get("attributes") or {}
    if attrs:
        out.append(_zz(len(attrs)))
        for k, v in attrs.items():
            out.append(_str(k) + _str(v))
    out.append(b"\x00")
    return b"".join(out)


def encode_selfcheck(events):
    """Asserts that encode_touchpoint agrees with python3-avro (on the schema
    without its logicalType, which python3-avro wants as a datetime)."""
    import json
    import os

    import avro.schema
    with open(os.path.join(jdtest.CONFIG_DIR, "schemas", "touchpoint.avsc")) as f:
        doc = json.load(f)
    for field in doc["fields"]:
        if isinstance(field["type"], dict):
            field["type"].pop("logicalType", None)
    writer = avro.schema.parse(json.dumps(doc))
    for ev in events:
        assert encode_touchpoint(ev) == jdtest.avro_encode(ev, writer), ev


# --------------------------------------------------------------------------
# The workload


def workload(n_events=200_000, n_customers=5_000, seed=6, days=40, dup_rate=0.004,
             start_days_ago=60):
    """A deterministic list of Touchpoint dicts. Event time increases with the
    position in the list and stays inside 10:00-18:00 UTC (outside any quiet
    hours), so replays see the same event clock. About dup_rate of the events
    are re-sent right after themselves with the same event_id (a producer
    retry): journeyd must apply them once."""
    rng = random.Random(seed)
    types = [t for t, w in TYPES for _ in range(w)]
    day0 = jdtest.base_time_ms(days_ago=start_days_ago) - 2 * 3600 * 1000  # 10:00 UTC
    per_day = max(1, n_events // days)
    window = 8 * 3600 * 1000
    out = []
    i = 0
    while len(out) < n_events:
        d, k = divmod(i, per_day)
        at = day0 + d * DAY_MS + k * window // per_day
        cust = f"c{rng.randrange(n_customers):05d}"
        typ = rng.choice(types)
        amount = score = None
        if typ in ("purchase", "refund"):
            amount = round(rng.uniform(5, 300), 2)
        if typ == "feedback":
            score = rng.randrange(11)
        ev = jdtest.touchpoint(cust, typ, at, event_id=f"e{seed}-{i:07d}",
                               channel=rng.choice(CHANNELS), amount=amount, score=score)
        out.append(ev)
        if rng.random() < dup_rate and len(out) < n_events:
            out.append(ev)
        i += 1
    return out


class Reference:
    """The state and the triggers the workload must produce, computed here."""

    def __init__(self, events):
        self.counts = {}       # customer -> {type: n}
        self.spend = {}        # customer -> float
        self.first_purchase = {}  # customer -> event_id
        self.duplicates = 0
        seen = {}
        for ev in events:
            c = ev["customer_id"]
            ids = seen.setdefault(c, set())
            if ev["event_id"] in ids:
                self.duplicates += 1
                continue
            ids.add(ev["event_id"])
            cnt = self.counts.setdefault(c, {})
            cnt[ev["type"]] = cnt.get(ev["type"], 0) + 1
            sp = self.spend.get(c, 0.0)
            if ev["amount"] is not None:
                if ev["type"] == "purchase":
                    sp += ev["amount"]
                elif ev["type"] == "refund":
                    sp -= ev["amount"]
            self.spend[c] = sp
            if ev["type"] == "purchase" and c not in self.first_purchase:
                self.first_purchase[c] = ev["event_id"]


# --------------------------------------------------------------------------
# Producing


def produce(bootstrap, events, topic="touchpoints"):
    """Produces and waits (jdtest.produce) with the fast encoder."""
    return jdtest.produce(bootstrap, topic,
                          [(ev["customer_id"].encode(), encode_touchpoint(ev)) for ev in events])


class BackgroundProducer(threading.Thread):
    """Produces `events` at about `rate` events/s (0: as fast as possible) in a
    thread, waiting for every delivery. `done` is set at the end; `error`
    holds what went wrong, if anything."""

    def __init__(self, bootstrap, events, rate=0, topic="touchpoints"):
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.events = events
        self.rate = rate
        self.topic = topic
        self.sent = 0
        self.failed = []
        self.error = None
        self.done = threading.Event()

    def run(self):
        try:
            p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 20,
                          "enable.idempotence": True, "log_level": 3,
                          "queue.buffering.max.messages": 200000,
                          "message.timeout.ms": 300000})

            def cb(err, msg):
                if err is not None:
                    self.failed.append(err)

            t0 = time.monotonic()
            for i, ev in enumerate(self.events):
                if self.rate and i % 500 == 0:
                    ahead = i / self.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                while True:
                    try:
                        p.produce(self.topic, key=ev["customer_id"].encode(),
                                  value=encode_touchpoint(ev), on_delivery=cb)
                        break
                    except BufferError:
                        p.poll(0.05)
                self.sent += 1
                if i % 1000 == 0:
                    p.poll(0)
            left = p.flush(jdtest.scaled(300))
            if left or self.failed:
                self.error = f"{left} undelivered, errors {self.failed[:5]}"
        except Exception as exc:  # reported by the test
            self.error = repr(exc)
        finally:
            self.done.set()


# --------------------------------------------------------------------------
# trigger_id, as src/engine_batch.c emit() computes it (jd_hash128_hex of
# src/util.c over rule name, rule version, customer id, source event id)

M64 = (1 << 64) - 1


def _mix64(h):
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    h ^= h >> 33
    return h


def hash128_hex(parts):
    a, b = 1469598103934665603, 0x9E3779B97F4A7C15
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        for byte in struct.pack("<Q", len(data)) + data:
            a = ((a ^ byte) * 1099511628211) & M64
            b = (((b ^ byte) * 0x100000001B3) + 0x2545F4914F6CDD1D) & M64
    h0 = _mix64(a ^ _mix64(b))
    h1 = _mix64((b + 0x9E3779B97F4A7C15 * h0) & M64)
    return f"{h0:016x}{h1:016x}"


def trigger_id(name, rule_version, customer_id, source_event_id):
    return hash128_hex([name, rule_version, customer_id, source_event_id])


def rule_version(config):
    r = jdtest.run_journeyd(["--check", "-c", config])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().rsplit("rule version ", 1)[1].rstrip(")")


# --------------------------------------------------------------------------
# Reading back and checking


def read_states(client, customers, prefix="j"):
    pipe = client.pipeline(transaction=False)
    for c in customers:
        pipe.get(jdtest.state_key(c, prefix))
    return {c: jdtest.parse_state(v) for c, v in zip(customers, pipe.execute())}


def check_state(client, ref, prefix="j"):
    """Every customer's lifetime counts and spend in Redis against the
    reference. Returns a list of mismatch descriptions (empty = exact)."""
    customers = sorted(ref.counts)
    states = read_states(client, customers, prefix)
    bad = []
    for c in customers:
        st = states[c]
        if st is None:
            bad.append(f"{c}: no state")
            continue
        got = {k[2:]: int(v) for k, v in st.items() if k.startswith("c.")}
        if got != ref.counts[c]:
            bad.append(f"{c}: counts {got} != expected {ref.counts[c]}")
        sp = float(st.get("sp", "0") or 0)
        if sp != ref.spend[c]:
            bad.append(f"{c}: spend {sp!r} != expected {ref.spend[c]!r}")
    return bad


def outbox_leftovers(client, prefix="j"):
    """{customer: [trigger_id, ...]} of outbox hashes still in Redis."""
    out = {}
    for key in client.scan_iter(match=f"{prefix}:{{*}}:o", count=1000):
        cid = key[len(prefix) + 2:key.rindex("}")]
        out[cid] = list(client.hkeys(key))
    return out


class TriggerCheck:
    """The triggers consumed from the output topics, judged against the
    reference: every expected welcome_first_purchase id delivered at least
    once, no unexpected one, and every distinct trigger (rule, customer,
    source event) carried exactly one trigger_id."""

    def __init__(self, records, ref, version):
        self.records = records
        self.by_id = {}
        self.ids_by_key = {}
        for r in records:
            t = r.trigger
            self.by_id[t["trigger_id"]] = self.by_id.get(t["trigger_id"], 0) + 1
            # a logical trigger: its source event, or for a timer-driven one
            # (no source event) its deadline, which is its fired_at
            key = (t["trigger"], t["customer_id"],
                   t["source_event_id"] if t["source_event_id"] is not None
                   else ("deadline", t["fired_at"]))
            self.ids_by_key.setdefault(key, set()).add(t["trigger_id"])
        self.expected_welcome = {
            trigger_id("welcome_first_purchase", version, c, e): (c, e)
            for c, e in ref.first_purchase.items()}
        welcome = {t for (name, _, _), ids in self.ids_by_key.items()
                   if name == "welcome_first_purchase" for t in ids}
        self.missing = sorted(set(self.expected_welcome) - welcome)
        self.unexpected = sorted(welcome - set(self.expected_welcome))
        self.split = {k: v for k, v in self.ids_by_key.items() if len(v) != 1}
        self.duplicate_deliveries = sum(n - 1 for n in self.by_id.values())
        self.distinct = len(self.by_id)

    def problems(self):
        out = []
        if self.missing:
            out.append(f"{len(self.missing)} expected welcome_first_purchase ids never "
                       f"delivered, e.g. {[self.expected_welcome[t] for t in self.missing[:5]]}")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} unexpected welcome_first_purchase ids")
        if self.split:
            out.append(f"{len(self.split)} triggers carried several ids, e.g. "
                       f"{list(self.split.items())[:3]}")
        return out


class EndOfRun:
    """The end of a crash run, checked: the state against the reference, the
    delivered triggers (TriggerCheck) and the outbox entries left that were
    never delivered."""

    def __init__(self, client, bootstrap, ref, version):
        self.bad = check_state(client, ref)
        self.recs = consume_triggers(bootstrap, expect_n=len(ref.first_purchase))
        self.chk = TriggerCheck(self.recs, ref, version)
        self.leftovers = outbox_leftovers(client)
        delivered = set(self.chk.by_id)
        self.undelivered_left = [t for ids in self.leftovers.values() for t in ids
                                 if t not in delivered]

    def lines(self):
        chk = self.chk
        return [f"triggers: {len(self.recs)} delivered, {chk.distinct} distinct ids, "
                f"{chk.duplicate_deliveries} duplicate deliveries (same id), "
                f"{len(chk.expected_welcome)} welcome_first_purchase expected, "
                f"{len(chk.missing)} missing",
                f"state mismatches: {len(self.bad)}; outbox keys left: {len(self.leftovers)} "
                f"({len(self.undelivered_left)} entries never delivered)"]


def consume_triggers(bootstrap, expect_n=None, timeout=120):
    return jdtest.consume_all(bootstrap, ["loyalty.rewards", "loyalty.reengagement"],
                              expect_n=expect_n, timeout=timeout, quiet=3)


def kill_connections(client, last_command):
    """Kills the Redis connections whose last command was `last_command`
    (lower case, as CLIENT LIST shows it); a failure to list or kill (the
    server busy, the connection gone already) is ignored."""
    try:
        for c in client.client_list():
            if c.get("cmd") == last_command:
                client.client_kill_filter(_id=c["id"])
    except Exception:
        pass


def metric(jd, name):
    try:
        return jdtest.metric_sum(jd.metrics(), name)
    except Exception:
        return None


def fault_config(write_config, group, instance_id=None, session_timeout="6s", extra=None,
                 kafka_properties=None, name="journeyd.conf"):
    """The shipped config pointed at a test group, log at info, optionally
    with static membership."""
    over = {"kafka.group_id": group, "kafka.session_timeout": session_timeout,
            "log.level": "info"}
    if instance_id:
        over["kafka.group_instance_id"] = instance_id
    over.update(extra or {})
    props = {"session.timeout.ms": str(int(session_timeout.rstrip("s")) * 1000)}
    props.update(kafka_properties or {})
    return write_config(over, props, name=name)


def git_describe():
    try:
        return subprocess.run(["git", "-C", jdtest.SOURCE_DIR, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        return "?"


# --------------------------------------------------------------------------
# Fixtures (imported by the test modules)

import os  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def fault_broker(tmp_path):
    b = jdtest.DevBroker(str(tmp_path / "devbroker"), topics=FAULT_TOPICS).start()
    yield b
    b.stop()


@pytest.fixture
def jd_factory(tmp_path, fault_broker, request):
    """jd_factory(config, redis_addr) -> a started Journeyd on fault_broker;
    all are killed at teardown and their logs printed when the test failed."""
    started = []

    def make(config, redis_addr, start=True, **kw):
        kw.setdefault("bootstrap", fault_broker.bootstrap)
        jd = jdtest.Journeyd(str(tmp_path), config, redis_addr=redis_addr, **kw)
        started.append(jd)
        return jd.start() if start else jd

    yield make
    for jd in started:
        jd.cleanup()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for jd in started:
            print(f"\n----- {jd.log_path} -----\n{jd.log_text()[-6000:]}")


def new_group(what):
    return f"fault-{what}-{uuid.uuid4().hex[:8]}"


def report(tmp_path, name, lines):
    """Prints a run's figures (pytest -s shows them) and keeps them beside the
    test's files."""
    text = "\n".join(lines)
    print(f"\n== {name} ==\n{text}")
    with open(os.path.join(str(tmp_path), f"{name}.txt"), "w") as f:
        f.write(text + "\n")
