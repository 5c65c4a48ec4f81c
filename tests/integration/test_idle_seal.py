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
so journeyd's loads, go on): burst A (3,000 customers), then, once journeyd
is idle and its write-back round has begun (its first slice held by the
pause), burst B touching only customers of A's tail, which the round has
not sent. While paused the test checks that B was applied and A's tail not
yet written, so the scenario cannot pass vacuously. flush_interval is
60 s; the offsets must reach the end within a few seconds of the pause's
end."""

import time

from confluent_kafka import Producer

import jdtest

GROUP = "jd-idle-seal"
N_HEAD = 2900
N_TAIL = 100
PAUSE_MS = 6000


def send(p, customers, at_ms):
    for i, c in enumerate(customers):
        ev = jdtest.touchpoint(c, "page_view", at_ms + i)
        p.produce("touchpoints", key=c.encode(), value=jdtest.encode_touchpoint(ev))
    assert p.flush(jdtest.scaled(10)) == 0


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
    jdtest.wait_until(lambda: consumed(jd) == N_HEAD + N_TAIL, jdtest.scaled(2),
                      what="burst A consumed")
    time.sleep(0.3)  # idle: the round begins, its first slice held by the pause
    send(p, tail, t0 + N_HEAD + N_TAIL)
    time.sleep(0.2)  # (B fetched by journeyd's consumer)
    # still paused: the engine waits for the round's first slice, B is not
    # applied yet, and A's tail is not written
    not_applied = consumed(jd) == N_HEAD + N_TAIL
    unsent = sum(r.exists(jdtest.state_key(c)) == 0 for c in tail)
    still_paused = time.monotonic() - paused_at < PAUSE_MS / 1000 - 0.2
    assert still_paused, "the machine was too slow to set the scenario up within the pause"
    assert not_applied and unsent == N_TAIL, (not_applied, unsent)

    # after the pause: the round ends, B's batch is sealed when idle, and the
    # offsets reach the end far within flush_interval (60 s)
    time.sleep(max(0.0, PAUSE_MS / 1000 - (time.monotonic() - paused_at)))
    jdtest.wait_caught_up(devbroker.bootstrap, GROUP, "touchpoints", timeout=jdtest.scaled(10))
    for c in head[:5] + tail:
        st = jdtest.read_state(r, c)
        assert jdtest.lifetime_count(st, "page_view") == (2 if c in tail else 1), (c, st)
    assert jdtest.metric_sum(jd.metrics(), "journeyd_triggers_emitted_total") in (0, None)
