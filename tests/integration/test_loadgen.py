"""journey-loadgen against journey-devbroker, read back with a real consumer
(python3-confluent-kafka) and decoded with python3-avro and
config/schemas/touchpoint.avsc: what it sends is exactly what --dry-run
prints, keyed by customer_id, in both wire formats; the same seed gives the
same bytes; --rate paces."""

import io
import json
import os
import struct
import subprocess
import time

import avro.io
import avro.schema
from confluent_kafka import Consumer

import jdtest

SCHEMA = avro.schema.parse(open(os.path.join(jdtest.SOURCE_DIR, "config", "schemas",
                                             "touchpoint.avsc")).read())


def loadgen(*args, timeout=60):
    return subprocess.run([jdtest.binary("journey-loadgen"), *args], capture_output=True,
                          timeout=jdtest.scaled(timeout), env=jdtest.child_env(),
                          cwd=jdtest.SOURCE_DIR)


def consume_all(bootstrap, topic, expected, timeout=30):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-loadgen-" + topic,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out = []
    deadline = time.monotonic() + jdtest.scaled(timeout)
    while len(out) < expected and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        out.append((m.key(), m.value()))
    # nothing more than expected
    end = time.monotonic() + 1
    while time.monotonic() < end:
        m = c.poll(0.2)
        if m is not None and not m.error():
            out.append((m.key(), m.value()))
    c.close()
    return out


def decode(body):
    rec = avro.io.DatumReader(SCHEMA).read(avro.io.BinaryDecoder(io.BytesIO(body)))
    if not isinstance(rec["occurred_at"], int):  # the logical type may be applied
        rec["occurred_at"] = round(rec["occurred_at"].timestamp() * 1000)
    return rec


def dry_run(*args):
    r = loadgen("--dry-run", *args)
    assert r.returncode == 0, r.stderr.decode()
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    for row in rows:
        row.pop("persona", None)
    return rows


def test_bare_stream_is_the_dry_run(devbroker):
    opts = ["--profile", "demo", "--customers", "40", "--seed", "5", "--start-time",
            "1700000000000"]
    expected = dry_run(*opts)
    assert len(expected) > 200
    r = loadgen("-b", devbroker.bootstrap, "-t", "touchpoints", "--stats", *opts)
    assert r.returncode == 0, r.stderr.decode()
    assert f"delivered={len(expected)} " in r.stderr.decode()
    got = consume_all(devbroker.bootstrap, "touchpoints", len(expected))
    assert len(got) == len(expected)
    by_id = {}
    for key, value in got:
        rec = decode(value)
        assert key.decode() == rec["customer_id"]
        by_id[rec["event_id"]] = rec
    for want in expected:
        rec = by_id[want["event_id"]]
        for field in ("customer_id", "type", "channel", "occurred_at", "currency", "score",
                      "attributes"):
            assert rec[field] == want[field], (field, rec, want)
        if want["amount"] is None:
            assert rec["amount"] is None
        else:
            assert abs(rec["amount"] - want["amount"]) < 0.005


def test_confluent_framing_and_same_seed_same_bytes(devbroker):
    devbroker.create_topic("tp_a", 4)
    devbroker.create_topic("tp_b", 4)
    opts = ["--profile", "bench", "--customers", "500", "--events", "3000", "--seed", "9",
            "--framing", "confluent", "--schema-id", "7", "--start-time", "1700000000000"]
    for topic in ("tp_a", "tp_b"):
        r = loadgen("-b", devbroker.bootstrap, "-t", topic, *opts)
        assert r.returncode == 0, r.stderr.decode()
    a = consume_all(devbroker.bootstrap, "tp_a", 3000)
    b = consume_all(devbroker.bootstrap, "tp_b", 3000)
    assert len(a) == 3000
    assert sorted(a) == sorted(b)
    types = set()
    for key, value in a:
        assert value[0] == 0 and struct.unpack(">I", value[1:5])[0] == 7
        rec = decode(value[5:])
        assert key.decode() == rec["customer_id"]
        types.add(rec["type"])
    assert {"page_view", "product_view", "add_to_cart", "purchase", "feedback"} <= types


def test_rate_paces(devbroker):
    t0 = time.monotonic()
    r = loadgen("-b", devbroker.bootstrap, "--profile", "bench", "--events", "1500",
                "--rate", "1000", "--stats")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr.decode()
    assert "delivered=1500 " in r.stderr.decode()
    assert elapsed >= 1.4


def test_bad_usage():
    r = loadgen("--profile", "nope", "--dry-run")
    assert r.returncode == 1 and b"--profile must be demo or bench" in r.stderr
    r = loadgen("--profile", "bench")
    assert r.returncode == 1 and b"-b BROKERS is required" in r.stderr
    r = loadgen("--dry-run", "--rate", "10", "--speedup", "10")
    assert r.returncode == 1
    r = loadgen("--dry-run", "--profile", "demo", "--time-step", "5")
    assert r.returncode == 1 and b"--profile bench" in r.stderr
