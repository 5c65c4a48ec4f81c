#!/usr/bin/python3
"""kafka_probe — the Kafka-side measurements of bench/run.sh, with Debian's
python3-confluent-kafka (run with /usr/bin/python3).

  kafka_probe.py messages -b B -t TOPIC
      messages held by TOPIC (sum over partitions of high - low watermark)

  kafka_probe.py drain -b B -t TOPIC -g GROUP --metrics URL [--events N] [--timeout S]
      times a consumer group draining TOPIC from the beginning: starts the
      clock when the daemon's first event is consumed
      (journeyd_events_consumed_total > 0 at URL), stops it when GROUP's
      committed offsets have passed N events (default: every message held)
      on TOPIC (commits come only behind persisted state and delivered
      triggers, so this is "all state persisted"). Prints one JSON object:
      {"events": committed, "seconds": t, "events_per_s": r, "complete": bool}

  kafka_probe.py latency -b B -t TOPIC[,TOPIC...] --schema trigger.avsc --done FILE
      event-to-trigger latency: reads the trigger topics from their current
      end (prints "ready" once positioned), decodes each trigger (bare Avro
      body) and takes arrival time (wall clock, ms) minus fired_at, which
      under clock = "event" is the source event's occurred_at, which
      journey-loadgen --live sets to its send time. Stops once FILE exists
      and nothing arrived for --idle seconds. Prints one JSON object:
      {"triggers": n, "p50_ms": .., "p99_ms": .., "p999_ms": .., "max_ms": ..}

  kafka_probe.py histogram FILE NAME
      quantile upper bounds (p50, p99, p99.9) of Prometheus histogram NAME in
      the exposition text FILE (the bucket bound that reaches each quantile)
"""
import argparse
import io
import json
import os
import sys
import time
import urllib.request

from confluent_kafka import OFFSET_END, TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition


def partitions(consumer, topic):
    md = consumer.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise SystemExit("kafka_probe: topic %s: %s" % (topic, t.error if t else "not found"))
    return [TopicPartition(topic, p) for p in sorted(t.partitions)]


def messages(args):
    c = Consumer({"bootstrap.servers": args.brokers, "group.id": "kafka-probe"})
    total = 0
    for tp in partitions(c, args.topic):
        lo, hi = c.get_watermark_offsets(tp, timeout=10)
        total += hi - lo
    c.close()
    print(total)


def consumed(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return -1
    for line in text.splitlines():
        if line.startswith("journeyd_events_consumed_total"):
            return float(line.split()[-1])
    return 0


def committed_events(consumer, tps, low):
    """Events behind the group's committed offsets (a partition without a
    commit yet counts from its low watermark)."""
    total = 0
    for tp in consumer.committed(tps, timeout=10):
        lo = low[tp.partition]
        total += max(tp.offset, lo) - lo
    return total


def drain(args):
    # a consumer in the daemon's group that never subscribes: it only reads
    # the group's committed offsets, it takes no partitions
    c = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group,
                  "enable.auto.commit": False})
    tps = partitions(c, args.topic)
    low, held = {}, 0
    for tp in tps:
        lo, hi = c.get_watermark_offsets(tp, timeout=10)
        low[tp.partition] = lo
        held += hi - lo
    target = args.events if args.events else held
    deadline = time.monotonic() + args.timeout
    while consumed(args.metrics) <= 0:
        if time.monotonic() > deadline:
            print(json.dumps({"events": 0, "seconds": 0, "events_per_s": 0, "complete": False}))
            return 1
        time.sleep(0.01)
    t0 = time.monotonic()
    done = 0
    while True:
        done = committed_events(c, tps, low)
        now = time.monotonic()
        if done >= target or now > deadline:
            break
        time.sleep(0.02)
    secs = now - t0
    c.close()
    print(json.dumps({"events": done, "seconds": round(secs, 3),
                      "events_per_s": round(done / secs) if secs > 0 else 0,
                      "complete": done >= target}))
    return 0 if done >= target else 1


def strip_logical_types(node):
    """python3-avro turns timestamp-millis into datetimes: keep the longs."""
    if isinstance(node, dict):
        return {k: strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [strip_logical_types(v) for v in node]
    return node


def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(q * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def latency(args):
    import avro.io
    import avro.schema
    with open(args.schema) as f:
        schema = avro.schema.parse(json.dumps(strip_logical_types(json.load(f))))
    reader = avro.io.DatumReader(schema)
    c = Consumer({"bootstrap.servers": args.brokers, "group.id": "kafka-probe-latency",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 1,
                  "fetch.error.backoff.ms": 5})
    tps = []
    for topic in args.topic.split(","):
        for tp in partitions(c, topic):
            tp.offset = OFFSET_END
            tps.append(tp)
    c.assign(tps)
    # positioned once every partition has been fetched from at least once
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        c.poll(0.05)
        if all(p.offset >= 0 for p in c.position(tps)):
            break
    print("ready", flush=True)
    # decoding waits until the end: python3-avro is slow enough that
    # decoding in the loop would delay the arrival times it measures
    got, last = [], time.monotonic()
    while True:
        m = c.poll(0.1)
        now_ms = time.time() * 1000.0
        if m is None:
            if os.path.exists(args.done) and time.monotonic() - last > args.idle:
                break
            continue
        if m.error():
            continue
        last = time.monotonic()
        kind, stamp = m.timestamp()
        got.append((now_ms, m.value(), stamp if kind != TIMESTAMP_NOT_AVAILABLE else None))
    lat, names, stamps, sent, deferred = [], [], [], [], 0
    for now_ms, value, stamp in got:
        t = reader.read(avro.io.BinaryDecoder(io.BytesIO(value)))
        if t.get("source_event_id") is None:
            continue  # timer-driven: no source event to measure from
        if "; deferred by quiet hours" in t["reason"]:
            # held back on purpose until the customer's quiet hours end
            # (docs/policy.md): how long is the clock's doing, not journeyd's
            deferred += 1
            continue
        lat.append(now_ms - t["fired_at"])
        names.append(t["trigger"])
        # the trigger's Kafka timestamp: journeyd's produce call (CreateTime)
        stamps.append("NA" if stamp is None else "%d" % (stamp - t["fired_at"]))
        sent.append(t["fired_at"])
    c.close()
    if args.dump:
        with open(args.dump, "w") as f:
            f.write("".join("%.2f %s %s %d\n" % row for row in zip(lat, names, stamps, sent)))
    lat.sort()
    r = lambda v: None if v is None else round(v, 2)
    print(json.dumps({"triggers": len(lat), "deferred": deferred, "p50_ms": r(percentile(lat, 0.50)),
                      "p99_ms": r(percentile(lat, 0.99)), "p999_ms": r(percentile(lat, 0.999)),
                      "max_ms": r(lat[-1] if lat else None)}), flush=True)
    return 0


def histogram(args):
    buckets = []
    with open(args.file) as f:
        for line in f:
            if line.startswith(args.name + "_bucket"):
                le = line.split('le="')[1].split('"')[0]
                buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    total = buckets[-1][1] if buckets else 0
    out = []
    for q in (0.5, 0.99, 0.999):
        le = next((le for le, n in buckets if total and n >= q * total), None)
        out.append("p%g <= %s ms" % (q * 100, "NA" if le is None else "%g" % (le * 1000)))
    print("%d observations, %s" % (total, ", ".join(out)))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("messages")
    m.add_argument("-b", "--brokers", required=True)
    m.add_argument("-t", "--topic", required=True)
    d = sub.add_parser("drain")
    d.add_argument("-b", "--brokers", required=True)
    d.add_argument("-t", "--topic", required=True)
    d.add_argument("-g", "--group", required=True)
    d.add_argument("--metrics", required=True, help="URL of journeyd's /metrics")
    d.add_argument("--events", type=int, default=0,
                   help="stop after this many events are committed (0: all held)")
    d.add_argument("--timeout", type=float, default=600)
    lt = sub.add_parser("latency")
    lt.add_argument("-b", "--brokers", required=True)
    lt.add_argument("-t", "--topic", required=True, help="trigger topics, comma-separated")
    lt.add_argument("--schema", required=True, help="trigger.avsc")
    lt.add_argument("--done", required=True, help="stop once this file exists (and idle)")
    lt.add_argument("--idle", type=float, default=3.0)
    lt.add_argument("--dump", help="write every latency (ms), in arrival order, to this file, "
                    "with the trigger's name, ms from the event's send to journeyd's produce call "
                    "(the trigger's Kafka timestamp) and the event's send time (ms since the epoch)")
    h = sub.add_parser("histogram")
    h.add_argument("file")
    h.add_argument("name")
    args = ap.parse_args()
    if args.cmd == "histogram":
        return histogram(args)
    if args.cmd == "messages":
        return messages(args)
    if args.cmd == "latency":
        return latency(args)
    return drain(args)


if __name__ == "__main__":
    sys.exit(main() or 0)
