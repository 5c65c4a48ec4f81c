"""SIGTERM mid-stream: journeyd finishes and persists its in-flight batch,
commits, flushes, leaves the group and exits 0; a restarted journeyd resumes
from the committed offsets and every produced event is counted."""

import random
import threading
import time

import jdtest

BASE = jdtest.base_time_ms(days_ago=15)
CUSTOMERS = [f"s-{i:03d}" for i in range(300)]
TYPES = ["page_view"] * 5 + ["product_view"] * 3 + ["email_open"] * 2 + ["purchase"] * 2 + [
    "feedback"]


class StreamProducer(threading.Thread):
    """Produces batches of touchpoints until told to finish, then `tail`
    more batches, so that the stream is still flowing whenever the test
    acts. Keeps the expected lifetime count per (customer, type)."""

    def __init__(self, bootstrap, batch=100, pause=0.05, tail=10, seed=7):
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.batch = batch
        self.pause = pause
        self.tail = tail
        self.rng = random.Random(seed)
        self.finish = threading.Event()
        self.seq = 0
        self.counts = {}
        self.buyers = set()
        self.error = None

    def next_batch(self):
        out = []
        for _ in range(self.batch):
            c = self.rng.choice(CUSTOMERS)
            t = self.rng.choice(TYPES)
            kw = {}
            if t == "purchase":
                kw["amount"] = round(self.rng.uniform(5, 200), 2)
                self.buyers.add(c)
            elif t == "feedback":
                kw["score"] = self.rng.randint(0, 10)
            # one second apart in event time: the whole stream spans hours
            out.append(jdtest.touchpoint(c, t, BASE + self.seq * 1000, event_id=f"e{self.seq}",
                                         **kw))
            self.counts[(c, t)] = self.counts.get((c, t), 0) + 1
            self.seq += 1
        return out

    def run(self):
        try:
            left = None
            while left is None or left > 0:
                jdtest.produce(self.bootstrap, "touchpoints", self.next_batch())
                if left is None and self.finish.is_set():
                    left = self.tail
                if left is not None:
                    left -= 1
                time.sleep(self.pause)
        except Exception as exc:  # surfaced by the test
            self.error = exc


def committed_total(bootstrap):
    return sum(max(0, o) for o in jdtest.committed_offsets(bootstrap, "journeyd",
                                                           "touchpoints").values())


def test_sigterm_mid_stream_then_restart_counts_every_event(devbroker, redis_server,
                                                            write_config, journeyd_factory):
    b = devbroker.bootstrap
    stream = StreamProducer(b)
    stream.start()
    config = write_config()
    jd = journeyd_factory(config)

    # Let it process part of the stream, then stop it while events keep coming.
    jdtest.wait_until(lambda: committed_total(b) > 0, 60,
                      what="journeyd to commit its first offsets")
    assert stream.is_alive() and not stream.finish.is_set()
    jd.sigterm()
    rc = jd.wait(60)
    assert rc == 0, jd.log_text()[-3000:]
    at_stop = committed_total(b)

    # While it is down the stream goes on; then it ends.
    stream.finish.set()
    stream.join(jdtest.scaled(120))
    assert not stream.is_alive() and stream.error is None, stream.error
    produced = stream.seq
    assert at_stop < produced, "the stop must have come mid-stream"

    jd2 = journeyd_factory(config)
    jdtest.wait_caught_up(b, "journeyd", "touchpoints", timeout=120)
    assert committed_total(b) == produced

    # Every produced event is counted at least once. Offsets are committed
    # only after the state of the events below them is persisted, and a
    # SIGTERM persists and commits the in-flight batch before exiting, so a
    # clean stop replays nothing: the counts are exactly the produced ones.
    # (A count above produced would be a replayed event; below, a lost one.)
    r = redis_server.client()
    wrong = []
    for c in CUSTOMERS:
        s = jdtest.read_state(r, c)
        for t in set(TYPES):
            want = stream.counts.get((c, t), 0)
            got = jdtest.lifetime_count(s, t)
            if got != want:
                wrong.append((c, t, want, got))
    assert not wrong, f"{len(wrong)} counts differ (customer, type, produced, counted): {wrong[:10]}"

    # every buyer got its welcome_first_purchase, under one trigger_id
    triggers = jdtest.consume_all(b, "loyalty.rewards", expect_n=len(stream.buyers))
    welcome = {}
    for rec in triggers:
        t = rec.trigger
        if t["trigger"] == "welcome_first_purchase":
            welcome.setdefault(t["customer_id"], set()).add(t["trigger_id"])
    assert set(welcome) == stream.buyers
    assert all(len(ids) == 1 for ids in welcome.values()), welcome

    assert jd2.stop() == 0
