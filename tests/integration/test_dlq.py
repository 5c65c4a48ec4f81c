"""Bad input never stops journeyd and is never silently dropped: each bad
record lands in touchpoints.dlq with its original key and bytes unchanged and
the headers journeyd.error (why) and journeyd.source (topic/partition/offset),
is counted in journeyd_dlq_total, and the good events after it are
processed.

Every record of a test goes to partition 0 of touchpoints, bad ones first, so
"after" is well defined."""

import json
import os

import pytest

import jdtest

DAY = 86400 * 1000
BASE = jdtest.base_time_ms(days_ago=5)
SOURCE = "touchpoints"
DLQ = "touchpoints.dlq"


def good(customer, type, seq, **kw):
    return jdtest.touchpoint(customer, type, BASE + seq * 60000, event_id=f"{customer}-{seq}",
                             **kw)


def body(event, writer=None):
    return jdtest.encode_touchpoint(event, "bare", writer=writer)


def run_and_collect(devbroker, journeyd_factory, config, records, n_bad, n_triggers):
    """Produces `records` ((key, value) tuples) to partition 0, runs journeyd
    until all are committed, and returns (delivery reports, DLQ records,
    trigger records, journeyd)."""
    reports = jdtest.produce(devbroker.bootstrap, SOURCE, records, partition=0)
    jd = journeyd_factory(config)
    jdtest.wait_caught_up(devbroker.bootstrap, "journeyd", SOURCE, timeout=90)
    dlq = jdtest.consume_all(devbroker.bootstrap, DLQ, expect_n=n_bad, decode=False)
    triggers = jdtest.consume_all(devbroker.bootstrap, ["loyalty.rewards", "loyalty.reengagement"],
                                  expect_n=n_triggers)
    return reports, dlq, triggers, jd


def check_dlq(records, reports, dlq, bad_indexes):
    """Each bad record is in the DLQ exactly once, unchanged, with headers."""
    by_source = {}
    for r in dlq:
        src = r.headers.get("journeyd.source")
        assert src, f"DLQ record without journeyd.source: {r}"
        assert src not in by_source, f"{src} dead-lettered twice"
        by_source[src] = r
    expected = {f"{SOURCE}/{reports[i][0]}/{reports[i][1]}": i for i in bad_indexes}
    assert sorted(by_source) == sorted(expected)
    for src, i in expected.items():
        r = by_source[src]
        key, value = records[i]
        assert r.value == value, f"record {i}: bytes changed"
        # a null key and an empty key are both "no key"; anything else must match
        assert (r.key or b"") == (key or b""), f"record {i}: key changed"
        assert (r.headers.get("journeyd.error") or "").strip(), f"record {i}: no reason"
    return {i: by_source[src].headers["journeyd.error"] for src, i in expected.items()}


def test_dlq_confluent_wire_format(devbroker, redis_server, write_config, journeyd_factory):
    config = write_config({
        "schemas.wire_format": "confluent",
        "schemas.registry_ids": jdtest.Raw('( { id = 1; file = "schemas/touchpoint.avsc"; } )'),
    })
    ok_body = body(good("c-good", "purchase", 99, amount=5.0))

    def framed(ev):
        return jdtest.confluent_frame(1, body(ev))

    records = [
        # 0: not Avro at all inside a valid frame (negative string length)
        (b"c-good", jdtest.confluent_frame(1, b"\x07garbage-that-is-not-avro")),
        # 1: a good body cut in half
        (b"c-good", jdtest.confluent_frame(1, ok_body[: len(ok_body) // 2])),
        # 2: a schema id the config does not know
        (b"c-good", jdtest.confluent_frame(999, ok_body)),
        # 3: no frame at all while wire_format = confluent
        (b"c-good", ok_body),
        # 4, 5: empty and null key, valid event
        (b"", framed(good("c-good", "page_view", 1))),
        (None, framed(good("c-good", "page_view", 2))),
        # 6: empty customer_id
        (b"c-empty", framed(good("", "purchase", 3, amount=1.0))),
        # 7: empty event_id
        (b"c-good", framed(dict(good("c-good", "purchase", 4, amount=1.0), event_id=""))),
        # good events after all of them
        (b"c-good", framed(good("c-good", "page_view", 10))),
        (b"c-good", framed(good("c-good", "purchase", 11, amount=25.0))),
        (b"c-good2", framed(good("c-good2", "feedback", 12, score=2))),
    ]
    bad = list(range(8))
    reports, dlq, triggers, jd = run_and_collect(devbroker, journeyd_factory, config, records,
                                                 n_bad=len(bad), n_triggers=2)
    reasons = check_dlq(records, reports, dlq, bad)
    assert "999" in reasons[2], f"the unknown id is named: {reasons[2]!r}"

    # the good events after the bad ones were processed, and only they
    got = jdtest.by_customer(triggers)
    assert {c: jdtest.names(t) for c, t in got.items()} == {
        "c-good": ["welcome_first_purchase"],
        "c-good2": ["service_recovery"],
    }
    assert got["c-good"][0]["source_event_id"] == "c-good-11"
    r = redis_server.client()
    s = jdtest.read_state(r, "c-good")
    assert jdtest.lifetime_count(s, "purchase") == 1
    assert jdtest.lifetime_count(s, "page_view") == 1
    assert float(s["sp"]) == pytest.approx(25.0)
    assert jdtest.read_state(r, "") is None
    assert jdtest.read_state(r, "c-empty") is None

    assert jdtest.metric_sum(jd.metrics(), "journeyd_dlq_total") == len(bad)
    assert jd.running(), "bad input must not stop journeyd"
    assert jd.stop() == 0


def test_dlq_auto_wire_format(devbroker, redis_server, write_config, journeyd_factory):
    """wire_format = auto: framed and bare bodies both decode; garbage and an
    unknown schema id (which then reads as a bare body with an empty
    event_id) are dead-lettered."""
    config = write_config({
        "schemas.wire_format": "auto",
        "schemas.registry_ids": jdtest.Raw('( { id = 1; file = "schemas/touchpoint.avsc"; } )'),
    })
    records = [
        (b"c-a", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),                    # 0
        (b"c-a", jdtest.confluent_frame(4242, body(good("c-a", "purchase", 0, amount=3.0)))),
        (b"c-a", b""),                                                                   # 2
        (b"c-a", body(good("c-a", "purchase", 1, amount=7.0))),                         # bare
        (b"c-b", jdtest.confluent_frame(1, body(good("c-b", "purchase", 2, amount=8.0)))),
    ]
    bad = [0, 1, 2]
    reports, dlq, triggers, jd = run_and_collect(devbroker, journeyd_factory, config, records,
                                                 n_bad=len(bad), n_triggers=2)
    check_dlq(records, reports, dlq, bad)
    got = jdtest.by_customer(triggers)
    assert {c: jdtest.names(t) for c, t in got.items()} == {
        "c-a": ["welcome_first_purchase"], "c-b": ["welcome_first_purchase"]}
    r = redis_server.client()
    assert float(jdtest.read_state(r, "c-a")["sp"]) == pytest.approx(7.0)
    assert float(jdtest.read_state(r, "c-b")["sp"]) == pytest.approx(8.0)
    assert jd.stop() == 0


def test_dlq_missing_fields_in_evolved_writer(devbroker, redis_server, write_config,
                                              journeyd_factory, tmp_path):
    """A registered writer schema in which event_id, customer_id and
    occurred_at are optional: a record that leaves one of them null has no
    value for a required field and is dead-lettered, while a complete record
    of the same writer schema decodes (writer -> reader resolution)."""
    with open(os.path.join(jdtest.CONFIG_DIR, "schemas", "touchpoint.avsc")) as f:
        loose = json.load(f)
    for field in loose["fields"]:
        if field["name"] in ("event_id", "customer_id", "occurred_at"):
            field["type"] = ["null", field["type"]]
            field["default"] = None
    loose_path = tmp_path / "touchpoint-loose.avsc"
    loose_path.write_text(json.dumps(loose))
    writer = jdtest.load_schema(str(loose_path))

    config = write_config({
        "schemas.wire_format": "auto",
        "schemas.registry_ids": jdtest.Raw(
            f'( {{ id = 1; file = "schemas/touchpoint.avsc"; }}, '
            f'{{ id = 7; file = "{loose_path}"; }} )'),
    })

    def loose_framed(ev):
        return jdtest.confluent_frame(7, body(ev, writer))

    records = [
        (b"c-m", loose_framed(dict(good("c-m", "purchase", 0, amount=1.0), customer_id=None))),
        (b"c-m", loose_framed(dict(good("c-m", "purchase", 1, amount=1.0), event_id=None))),
        (b"c-m", loose_framed(dict(good("c-m", "purchase", 2, amount=1.0), occurred_at=None))),
        (b"c-m", loose_framed(good("c-m", "purchase", 3, amount=9.0))),
    ]
    bad = [0, 1, 2]
    reports, dlq, triggers, jd = run_and_collect(devbroker, journeyd_factory, config, records,
                                                 n_bad=len(bad), n_triggers=1)
    check_dlq(records, reports, dlq, bad)
    (t,) = [r.trigger for r in triggers]
    assert (t["customer_id"], t["trigger"], t["source_event_id"]) == (
        "c-m", "welcome_first_purchase", "c-m-3")
    s = jdtest.read_state(redis_server.client(), "c-m")
    assert jdtest.lifetime_count(s, "purchase") == 1
    assert float(s["sp"]) == pytest.approx(9.0)
    assert jd.stop() == 0


def test_dlq_in_a_backlog(devbroker, redis_server, write_config, journeyd_factory):
    """A backlog in full batches: each batch after the first is taken ahead
    and its customers loaded while the one before is written back
    (src/engine_load.c). Bad records spread through it are dead-lettered
    exactly as in a small batch, and every good event is applied once."""
    config = write_config({
        "schemas.wire_format": "confluent",
        "schemas.registry_ids": jdtest.Raw('( { id = 1; file = "schemas/touchpoint.avsc"; } )'),
        "processing.batch_max_events": jdtest.Raw("300"),
    })

    def framed(ev):
        return jdtest.confluent_frame(1, body(ev))

    customers = [f"c-bk-{k}" for k in range(2000)]  # new ones in the first batches
    records, bad, views = [], [], {c: 0 for c in customers}
    for seq in range(6000):
        c = customers[seq % len(customers)]
        if seq % 397 == 5:
            # the kinds of bad record, in turn
            kind = len(bad) % 4
            ok = body(good(c, "page_view", seq))
            value = [jdtest.confluent_frame(1, b"\x07not-avro"),
                     jdtest.confluent_frame(1, ok[: len(ok) // 2]),
                     jdtest.confluent_frame(999, ok),
                     framed(dict(good(c, "page_view", seq), event_id=""))][kind]
            bad.append(len(records))
            records.append((c.encode(), value))
            continue
        views[c] += 1
        records.append((c.encode(), framed(good(c, "page_view", seq,
                                                attributes={"tz": "Europe/Paris",
                                                            "k": f"v{seq}"}))))
    reports, dlq, _, jd = run_and_collect(devbroker, journeyd_factory, config, records,
                                          n_bad=len(bad), n_triggers=0)
    reasons = check_dlq(records, reports, dlq, bad)
    for n, i in enumerate(bad):
        if n % 4 == 2:
            assert "999" in reasons[i], f"the unknown id is named: {reasons[i]!r}"
    r = redis_server.client()
    for c in customers:
        assert jdtest.lifetime_count(jdtest.read_state(r, c), "page_view") == views[c], c
    assert jdtest.metric_sum(jd.metrics(), "journeyd_dlq_total") == len(bad)
    # the batches after the first were taken ahead
    assert jdtest.metric_sum(jd.metrics(), "journeyd_loads_ahead_total") > 0
    assert jd.stop() == 0
