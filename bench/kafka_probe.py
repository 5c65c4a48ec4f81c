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
"""
import argparse
import json
import sys
import time
import urllib.request

from confluent_kafka import Consumer, TopicPartition


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
    args = ap.parse_args()
    if args.cmd == "messages":
        return messages(args)
    return drain(args)


if __name__ == "__main__":
    sys.exit(main() or 0)
