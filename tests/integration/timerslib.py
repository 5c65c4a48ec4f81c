"""Helpers shared by the timer tests (test_timers_*.py): configs with short
windows, a trigger reader that keeps Kafka timestamps (for lateness), and
the holdout hash of src/policy.c."""

import datetime
import struct
import time
import uuid

from confluent_kafka import Consumer

import jdtest

REENGAGEMENT = "loyalty.reengagement"

# The shipped stages, and only the timer-driven segment/trigger under test:
# a cart left for `window` gets a reminder.
def short_cart_rules(window="2s"):
    return {
        "segments": jdtest.Raw(
            "( { name = \"cart_abandoner\"; "
            f"when = \"not_followed_by('add_to_cart', 'purchase', {window})\"; }} )"),
        "triggers": jdtest.Raw(
            "( { name = \"cart_reminder\"; kind = \"REENGAGEMENT\"; on = \"enter:cart_abandoner\"; } )"),
        # contact policy out of the way: these tests are about time
        "policy": jdtest.Raw("{ }"),
    }


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
MS = datetime.timedelta(milliseconds=1)


def ms(v):
    """A timestamp-millis field as python3-avro gives it (datetime) -> int ms."""
    return v if isinstance(v, int) else (v - EPOCH) // MS


def produce(bootstrap, events, **kw):
    """jdtest.produce for Touchpoint dicts with occurred_at in ms
    (python3-avro wants a datetime for the timestamp-millis field)."""
    conv = []
    for ev in events:
        ev = dict(ev)
        ev["occurred_at"] = EPOCH + ev["occurred_at"] * MS
        conv.append(ev)
    return jdtest.produce(bootstrap, "touchpoints", conv, **kw)


def read_triggers(bootstrap, topic=REENGAGEMENT, expect_n=None, timeout=30, quiet=2.0):
    """Every trigger on `topic` from the beginning, as (trigger dict, Kafka
    timestamp ms) pairs; stops after `quiet` seconds without a message once
    at least expect_n arrived (or at timeout)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex[:10]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "log_level": 4})
    c.subscribe([topic])
    out = []
    deadline = time.monotonic() + jdtest.scaled(timeout)
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.1)
            now = time.monotonic()
            if m is None:
                if (expect_n is None or len(out) >= expect_n) and now - last >= quiet:
                    break
                continue
            if m.error():
                continue
            out.append((jdtest.decode_trigger(m.value()), m.timestamp()[1]))
            last = now
    finally:
        c.close()
    return out


M64 = (1 << 64) - 1


def _mix64(h):
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & M64
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & M64
    h ^= h >> 33
    return h


def hash128(*parts):
    """src/util.c jd_hash128 over byte strings: (h0, h1)."""
    a, b = 1469598103934665603, 0x9e3779b97f4a7c15
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        for byte in struct.pack("<Q", len(p)) + p:
            a = ((a ^ byte) * 1099511628211) & M64
            b = (((b ^ byte) * 0x100000001b3) + 0x2545F4914F6CDD1D) & M64
    h0 = _mix64(a ^ _mix64(b))
    h1 = _mix64((b + 0x9e3779b97f4a7c15 * h0) & M64)
    return h0, h1


def in_holdout(customer_id, trigger, share):
    """src/policy.c jd_policy_in_holdout."""
    h0, _ = hash128("holdout", trigger, customer_id)
    return (h0 >> 11) / 9007199254740992.0 < share


def timer_trigger_id(trigger, rule_version, customer_id, due_ms):
    """The id of a timer-fired trigger (engine emit: the due time stands in
    for the source event id)."""
    h0, h1 = hash128(trigger, rule_version, customer_id, str(int(due_ms)))
    return f"{h0:016x}{h1:016x}"


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(q / 100.0 * (len(xs) - 1)))))
    return xs[k]
