"""Loading ahead (src/engine_load.c): under load, the next batch's new
customers are loaded from Redis by the loader thread while the batch before
is written back. The cache is cold and Redis warm after a restart, which is
when every customer of a batch is loaded, so these tests restart journeyd
over a warm Redis with a backlog waiting, and judge the end state against
the reference model of the fault tests (faultlib.Reference): exact state,
every welcome_first_purchase delivered with its one id.
"""

import threading
import time

import jdtest
import faultlib
from jdtest import Raw
from faultlib import fault_broker, jd_factory  # noqa: F401 (fixtures)

SEED = 11


def run_two_halves(write_config, redis_server, jd_factory, fault_broker, during_second=None,
                   n_events=60_000, first=0.5):
    """Drains the first part of a workload, stops, produces the rest as a
    backlog and drains it with a fresh instance (cold cache, warm Redis).
    Returns (reference, rule version, the second instance's
    journeyd_loads_ahead_total, its log text, its
    journeyd_events_decoded_ahead_total)."""
    group = faultlib.new_group("ahead")
    # a small cache: customers are evicted and loaded again all along, so
    # that loads ahead go on for the whole drain, not only in its first
    # batches (3,000 customers fit one batch); batches of 10,000 (not the
    # default 50,000): a backlog of tens of thousands of events makes
    # several batches, so that there are batches to take ahead
    conf = faultlib.fault_config(write_config, group,
                                 extra={"processing.cache_max_customers": Raw("300"),
                                        "processing.batch_max_events": Raw("10000")})
    version = faultlib.rule_version(conf)
    events = faultlib.workload(n_events=n_events, n_customers=3_000, seed=SEED, days=20)
    ref = faultlib.Reference(events)
    half = int(len(events) * first)

    faultlib.produce(fault_broker.bootstrap, events[:half])
    jd = jd_factory(conf, redis_server.address)
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=180)
    assert jd.stop() == 0

    faultlib.produce(fault_broker.bootstrap, events[half:])
    jd = jd_factory(conf, redis_server.address)
    stop = threading.Event()
    helper = None
    if during_second:
        helper = threading.Thread(target=during_second, args=(jd, stop), daemon=True)
        helper.start()
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=300)
    stop.set()
    if helper:
        helper.join(30)
    jdtest.wait_until(lambda: faultlib.metric(jd, "journeyd_outbox_pending") == 0, 60,
                      what="outbox drained")
    ahead = faultlib.metric(jd, "journeyd_loads_ahead_total")
    decoded = faultlib.metric(jd, "journeyd_events_decoded_ahead_total")
    assert jd.stop() == 0
    return ref, version, ahead, jd.log_text(), decoded


def judge(redis_server, fault_broker, ref, version):
    client = redis_server.client()
    assert faultlib.check_state(client, ref) == []
    recs = faultlib.consume_triggers(fault_broker.bootstrap, expect_n=len(ref.first_purchase))
    chk = faultlib.TriggerCheck(recs, ref, version)
    assert chk.problems() == []


def test_warm_restart_loads_ahead(write_config, redis_server, jd_factory, fault_broker):
    ref, version, ahead, _, decoded = run_two_halves(write_config, redis_server, jd_factory,
                                                     fault_broker)
    # the backlog came in full batches: their customers were loaded ahead,
    # and their events decoded ahead (src/engine_decode.c), and the end
    # state is still exact
    assert ahead is not None and ahead > 0
    assert decoded is not None and decoded > 0
    judge(redis_server, fault_broker, ref, version)


def test_load_ahead_survives_redis_connection_kills(write_config, redis_server, jd_factory,
                                                    fault_broker):
    """The connections that load customers (last command HGETALL: the
    loader's, and the engine's own when it loads) are killed every 5 ms
    while the backlog drains, until a load ahead has failed: the batch then
    loads its customers itself (retrying with backoff), and the end state is
    still exact. (With every 30 ms over a 90,000-event backlog, a CI run saw
    no load ahead fail.)"""
    client = redis_server.client()

    def kill_loaders(jd, stop):
        deadline = time.monotonic() + jdtest.scaled(120)
        while not stop.is_set() and time.monotonic() < deadline:
            if "redis load (ahead of the batch) failed" in jd.log_text():
                return
            faultlib.kill_connections(client, "hgetall")
            time.sleep(0.005)

    ref, version, ahead, log, _ = run_two_halves(write_config, redis_server, jd_factory,
                                              fault_broker, during_second=kill_loaders,
                                              n_events=160_000, first=0.25)
    assert "redis load (ahead of the batch) failed" in log
    assert ahead is not None and ahead > 0
    judge(redis_server, fault_broker, ref, version)


def test_end_of_backlog_written_when_caught_up(write_config, redis_server, jd_factory,
                                               fault_broker):
    """A backlog (full batches) consumed to the end of every partition makes
    the engine idle at once (engine.c, idle_in), not after a quiet time: the
    changed customers are written and the last offsets move then. The log
    says which way the engine went idle; the end state is exact."""
    group = faultlib.new_group("caughtup")
    conf = faultlib.fault_config(write_config, group,
                                 extra={"processing.batch_max_events": Raw("500"),
                                        "log.level": "debug"})
    version = faultlib.rule_version(conf)
    events = faultlib.workload(n_events=20_000, n_customers=2_000, seed=SEED + 1, days=20)
    ref = faultlib.Reference(events)
    faultlib.produce(fault_broker.bootstrap, events)
    jd = jd_factory(conf, redis_server.address)
    jdtest.wait_caught_up(fault_broker.bootstrap, group, "touchpoints", timeout=180)
    jd.wait_for_log(r"caught up after a backlog: [0-9]+ changed customers written now")
    jdtest.wait_until(lambda: faultlib.metric(jd, "journeyd_outbox_pending") == 0, 60,
                      what="outbox drained")
    assert jd.stop() == 0
    judge(redis_server, fault_broker, ref, version)
