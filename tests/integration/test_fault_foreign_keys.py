"""Keys of journeyd's that Redis holds with something journeyd cannot use
(another client wrote them): a customer's state key made a list, a corrupt
state string, an outbox key made a string (and a partition's event clock,
the exception: ignored). Retrying cannot cure these, yet
nothing may be skipped: journeyd refuses to go past the event — consumption
paused, /readyz 503, journeyd_backpressured 1, nothing committed beyond
it, the log naming the customer and the Redis error — and once the operator
removes the key it carries on with nothing lost (docs/guarantees.md)."""

import jdtest

PART = 0


def produce(devbroker, events):
    return jdtest.produce(devbroker.bootstrap, "touchpoints", events, partition=PART)


def refused_then_resumed(devbroker, r, jd, group, key, log, events):
    """Produces events, expects journeyd stuck on `key` (log matching `log`),
    removes the key, expects every event processed."""
    done_before = jdtest.committed_offsets(devbroker.bootstrap, group, "touchpoints")[PART]
    offsets = produce(devbroker, events)
    jd.wait_for_log(log)
    jdtest.wait_until(lambda: jd.http_get("/readyz")[0] == 503, 10, what="/readyz 503")
    assert jdtest.metric_sum(jd.metrics(), "journeyd_backpressured") == 1
    committed = jdtest.committed_offsets(devbroker.bootstrap, group, "touchpoints")[PART]
    assert committed == done_before, (committed, done_before, offsets)
    r.delete(key)
    jdtest.wait_caught_up(devbroker.bootstrap, group, "touchpoints", timeout=30)
    jd.wait_ready()


def test_foreign_keys_pause_until_removed(devbroker, redis_server, write_config,
                                          journeyd_factory):
    r = redis_server.client()
    b = jdtest.base_time_ms(days_ago=3)
    tp = jdtest.touchpoint
    # 0. the partition's event clock key (engine_clock.c) is the exception:
    # reported and ignored, read or written; nothing waits for it
    r.set("j:{p:touchpoints:%d}:wm" % PART, "not a watermark")
    cfg = write_config({"kafka.group_id": "foreign"})
    jd = journeyd_factory(cfg)
    jd.wait_ready()
    produce(devbroker, [tp("fk-warmup", "page_view", b)])
    jdtest.wait_caught_up(devbroker.bootstrap, "foreign", "touchpoints", timeout=30)
    jd.wait_for_log(r"watermark key .*WRONGTYPE.*: ignored, so that partition's event clock")
    jd.wait_for_log(r"watermark key .*WRONGTYPE.*: that partition's event clock is not kept")
    r.delete("j:{p:touchpoints:%d}:wm" % PART)

    # 1. the state key is a list: its load fails with WRONGTYPE
    r.rpush("j:{fk-list}", "not a state")
    refused_then_resumed(devbroker, r, jd, "foreign", "j:{fk-list}",
                         r"load customer 'fk-list': Redis .*WRONGTYPE",
                         [tp("fk-list", "page_view", b), tp("fk-bystander", "page_view", b)])
    assert r.type("j:{fk-list}") == "string" and r.type("j:{fk-bystander}") == "string"

    # 2. the state string is not one journeyd wrote
    r.set("j:{fk-corrupt}", "garbage")
    refused_then_resumed(devbroker, r, jd, "foreign", "j:{fk-corrupt}",
                         r"load customer 'fk-corrupt': ",
                         [tp("fk-corrupt", "page_view", b)])
    assert r.get("j:{fk-corrupt}") != "garbage"

    # 3. the outbox key is a string: read with the state, it fails the load
    # like 1.; made a string once the customer is cached, it fails the write
    # of the customer's first-purchase reward, which goes out once the key is
    # removed
    r.set("j:{fk-outbox}:o", "x")
    refused_then_resumed(devbroker, r, jd, "foreign", "j:{fk-outbox}:o",
                         r"load customer 'fk-outbox': Redis .*WRONGTYPE",
                         [tp("fk-outbox", "page_view", b)])
    r.set("j:{fk-outbox}:o", "x")
    refused_then_resumed(devbroker, r, jd, "foreign", "j:{fk-outbox}:o",
                         r"flush customer 'fk-outbox': Redis .*WRONGTYPE",
                         [tp("fk-outbox", "purchase", b + 1000, amount=12)])
    rewards = jdtest.consume_all(devbroker.bootstrap, "loyalty.rewards", expect_n=1, timeout=10)
    assert [t.trigger["customer_id"] for t in rewards] == ["fk-outbox"], rewards
    assert jd.stop() == 0
