#!/usr/bin/python3
"""show_triggers — prints journeyd's triggers as they arrive, one readable
line each, then (on SIGTERM/SIGINT or after --idle seconds without a new
trigger) a count per trigger rule.

Reads the trigger topics with a real Kafka consumer (Debian's
python3-confluent-kafka) from the beginning, and decodes each value with
python3-avro and config/schemas/trigger.avsc, in either wire format
(Confluent framing: 0x00, 4-byte schema id, body; or a bare body).

Run with /usr/bin/python3 (Debian's python3-* packages).
"""
import argparse
import collections
import datetime
import io
import json
import os
import signal
import sys
import time

import avro.io
import avro.schema
from confluent_kafka import Consumer, KafkaError

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SCHEMA = os.path.join(HERE, "..", "..", "config", "schemas", "trigger.avsc")

stop = False


def on_signal(signum, frame):
    global stop
    stop = True


def decode(reader, value):
    """A Trigger record from a Kafka value in either wire format."""
    if len(value) >= 5 and value[0] == 0:
        try:
            return reader.read(avro.io.BinaryDecoder(io.BytesIO(value[5:])))
        except Exception:
            pass  # a bare body may start with 0x00 too: try it whole
    return reader.read(avro.io.BinaryDecoder(io.BytesIO(value)))


def fmt_time(ms):
    if isinstance(ms, datetime.datetime):  # avro may apply the logical type
        return ms.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%MZ")
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%MZ")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-b", "--brokers", required=True)
    ap.add_argument("-t", "--topics", default="loyalty.rewards,loyalty.reengagement",
                    help="comma-separated trigger topics")
    ap.add_argument("--schema", default=DEFAULT_SCHEMA, help="trigger.avsc")
    ap.add_argument("--idle", type=float, default=0,
                    help="exit after this many seconds without a trigger (0: never)")
    ap.add_argument("--jsonl", help="also append every trigger as a JSON line to this file")
    ap.add_argument("--quiet", action="store_true", help="no line per trigger, summary only")
    args = ap.parse_args()

    with open(args.schema) as f:
        reader = avro.io.DatumReader(avro.schema.parse(f.read()))
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "show-triggers-%d" % os.getpid(),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # the topics may appear only when journeyd first produces to them
        "topic.metadata.refresh.interval.ms": 1000,
    })
    consumer.subscribe(args.topics.split(","))
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    out = open(args.jsonl, "a") if args.jsonl else None
    per_rule = collections.Counter()
    undecodable = 0
    last = time.monotonic()
    while not stop:
        msg = consumer.poll(0.2)
        if msg is None:
            if args.idle and per_rule and time.monotonic() - last > args.idle:
                break
            continue
        if msg.error():
            if msg.error().code() not in (KafkaError._PARTITION_EOF,
                                          KafkaError.UNKNOWN_TOPIC_OR_PART):
                print("show_triggers: %s" % msg.error(), file=sys.stderr)
            continue
        last = time.monotonic()
        try:
            t = decode(reader, msg.value())
        except Exception as e:
            undecodable += 1
            print("show_triggers: undecodable value at %s/%d/%d: %s"
                  % (msg.topic(), msg.partition(), msg.offset(), e), file=sys.stderr)
            continue
        per_rule[t["trigger"]] += 1
        if not args.quiet:
            seg = " segment=%s" % t["segment"] if t.get("segment") else ""
            print("%s  %-12s %-22s %-12s stage=%-14s%s  %s"
                  % (fmt_time(t["fired_at"]), t["customer_id"], t["trigger"], t["kind"],
                     t["journey_stage"], seg, t["reason"]), flush=True)
        if out:
            rec = dict(t)
            if isinstance(rec["fired_at"], datetime.datetime):
                rec["fired_at"] = int(rec["fired_at"].timestamp() * 1000)
            rec["_topic"] = msg.topic()
            out.write(json.dumps(rec, sort_keys=True) + "\n")
            out.flush()
    consumer.close()
    total = sum(per_rule.values())
    print("triggers: %d total%s" % (total, "".join(
        " %s=%d" % (k, v) for k, v in sorted(per_rule.items()))), flush=True)
    if undecodable:
        print("show_triggers: %d undecodable values" % undecodable, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
