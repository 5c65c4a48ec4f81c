"""Once traffic stops, the offsets of the last events move within
moments, not at the next processing.flush_interval (src/engine_flush.c,
jd_engine_persist_due; engine_batch.c, closed_unmarked).

An offset moves only once a write-back that covers every customer its
batch changed is known to be written (the batch's checkpoint is sealed). A
write-back round covers the batches closed when it began; a batch closed
while the round is on its way, whose customers are all in the round's list
still to be sent, adds nothing to write, yet the round does not seal it.
When journeyd goes idle it must seal such a batch at once: with a long
flush_interval the offset would otherwise wait for it.

The scenario is made deterministic with Redis' CLIENT PAUSE WRITE (reads,
so journeyd's loads, go on): burst A (3,000 customers; the last 100 in a
later batch, so at the end of the write-back list), then, once journeyd is
idle and its round's first slice is held by the pause (CLIENT LIST shows
the write blocked), burst B touching only those last 100 customers.
journeyd fetches B while it waits for the slice and applies it once the
pause ends, with the round still on its way and B's customers in its
unsent part. flush_interval is 60 s; the offsets must reach the end within
10 s of the pause's end (30 s under ASan). Taking `closed_unmarked` out of
the idle condition (src/engine_flush.c) makes this test fail.

A second test: a delivered trigger's outbox entry is removed once journeyd
is idle, not at the next flush_interval."""

import time

from confluent_kafka import Producer

import faultlib
import jdtest

GROUP = "jd-idle-seal"
N_HEAD = 2900
N_TAIL = 100
PAUSE_MS = 6000


def send(p, customers, at_ms):
    """Page views on one connected producer (jdtest.produce connects a new
    one per call: the time it takes could let journeyd go idle between A's
    head and tail)."""
    for i, c in enumerate(customers):
        ev = jdtest.touchpoint(c, "page_view", at_ms + i)
        p.produce("touchpoints", key=c.encode(), value=jdtest.encode_touchpoint(ev))
    assert p.flush(jdtest.scaled(10)) == 0


def held_writes(r):
    """Clients whose command the pause holds (CLIENT LIST flag b)."""
    return sum("b" in c.get("flags", "") for c in r.client_list())


def consumed(jd):
    return jdtest.metric_sum(jd.metrics(), "journeyd_events_consumed_total")


def test_offsets_move_once_idle_after_a_round_in_progress(devbroker, redis_server,
                                                           journeyd_factory, write_config):
    # (redis.timeout: the write held by the pause must not time out)
    cfg = write_config({"kafka.group_id": GROUP, "processing.flush_interval": "60s",
                        "redis.timeout": "20s", "log.level": "debug"})
    jd = journeyd_factory(cfg)
    jd.wait_ready(timeout=jdtest.scaled(60))
    t0 = jdtest.base_time_ms()
    head = [f"c-head-{i}" for i in range(N_HEAD)]
    tail = [f"c-tail-{i}" for i in range(N_TAIL)]
    r = redis_server.client()
    # writes held from here; A is applied all the same (its loads are reads,
    # page views fire no trigger, and nothing is due before flush_interval)
    assert r.execute_command("CLIENT", "PAUSE", str(PAUSE_MS), "WRITE")
    paused_at = time.monotonic()
    p = Producer({"bootstrap.servers": devbroker.bootstrap, "linger.ms": 5})
    send(p, head, t0)
    time.sleep(0.03)  # (the tail in later batches: at the end of the round's list,
    send(p, tail, t0 + N_HEAD)  # and within journeyd's 100 ms to idle)
    jdtest.wait_until(lambda: consumed(jd) == N_HEAD + N_TAIL, 2, what="burst A consumed")
    # idle (100 ms): the round begins, and its first slice is held by the
    # pause (the only write journeyd has to make: nothing else is due)
    jdtest.wait_until(lambda: held_writes(r) > 0, 2, what="the round's first write held")
    send(p, tail, t0 + N_HEAD + N_TAIL)
    time.sleep(0.2)  # (B fetched by journeyd's consumer)
    # still paused: the engine waits for the round's first slice and B is
    # not applied yet (it will be while the round is on its way)
    not_applied = consumed(jd) == N_HEAD + N_TAIL
    still_paused = time.monotonic() - paused_at < PAUSE_MS / 1000 - 0.2
    assert still_paused, "the machine was too slow to set the scenario up within the pause"
    assert not_applied

    # after the pause: the round ends, B's batch is sealed when idle, and the
    # offsets reach the end far within flush_interval (60 s)
    time.sleep(max(0.0, PAUSE_MS / 1000 - (time.monotonic() - paused_at)))
    # (wait_until scales its timeout: 30 s under ASan, still within 60 s)
    start = time.monotonic()
    jdtest.wait_caught_up(devbroker.bootstrap, GROUP, "touchpoints", timeout=10)
    assert time.monotonic() - start < 40
    for c in head[:5] + tail:
        st = jdtest.read_state(r, c)
        assert jdtest.lifetime_count(st, "page_view") == (2 if c in tail else 1), (c, st)
    assert jdtest.metric_sum(jd.metrics(), "journeyd_triggers_emitted_total") == 0


def test_acknowledgements_written_once_idle(devbroker, redis_server, journeyd_factory,
                                            write_config):
    """A delivered trigger's outbox entry is removed from Redis once journeyd
    is idle, not at the next flush_interval (60 s here): the acknowledgement
    comes after the trigger's own write, so its removal may be all that is
    left to write. (Since 0.16.0 it goes in the write-back's slices rather
    than a synchronous write; which thread writes it is not visible here.)"""
    group = GROUP + "-acks"
    cfg = write_config({"kafka.group_id": group, "processing.flush_interval": "60s"})
    jd = journeyd_factory(cfg)
    jd.wait_ready(timeout=jdtest.scaled(60))
    ids = [f"c-ack-{i}" for i in range(50)]
    now = int(time.time() * 1000)
    jdtest.produce(devbroker.bootstrap, "touchpoints",
                   [jdtest.touchpoint(c, "purchase", now + i, amount=20) for i, c in enumerate(ids)])
    got = jdtest.consume_all(devbroker.bootstrap, "loyalty.rewards", expect_n=len(ids),
                             timeout=jdtest.scaled(60))
    assert sorted(x.trigger["customer_id"] for x in got) == sorted(ids)
    r = redis_server.client()
    # (wait_until scales its timeouts: 30 s under ASan, still within 60 s)
    start = time.monotonic()
    jdtest.wait_until(lambda: not faultlib.outbox_leftovers(r), 10,
                      what="every outbox entry removed")
    jdtest.wait_caught_up(devbroker.bootstrap, group, "touchpoints", timeout=10)
    assert time.monotonic() - start < 40
    for c in ids:
        assert jdtest.lifetime_count(jdtest.read_state(r, c), "purchase") == 1, c
