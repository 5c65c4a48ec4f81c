"""journey-devbroker: the mock cluster the other tests stand on, checked
with real clients (python3-confluent-kafka and kcat)."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer

import jdtest


def test_prints_bootstrap_and_creates_default_topics(devbroker):
    assert re.fullmatch(r"127\.0\.0\.1:\d+", devbroker.bootstrap)
    for topic, parts in jdtest.DEFAULT_TOPICS.items():
        assert jdtest.partition_count(devbroker.bootstrap, topic) == parts


def test_flags_brokers_topics_and_bootstrap_file(tmp_path):
    bfile = tmp_path / "bootstrap"
    proc = subprocess.Popen(
        [jdtest.binary("journey-devbroker"), "--brokers", "3", "--topic", "a.b:3",
         "--topic", "c:1", "--bootstrap-file", str(bfile)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=jdtest.child_env())
    try:
        first = proc.stdout.readline().decode().strip()
        addrs = first.split(",")
        assert len(addrs) == 3 and all(re.fullmatch(r"127\.0\.0\.1:\d+", a) for a in addrs)
        assert bfile.read_text().strip() == first
        assert jdtest.partition_count(first, "a.b") == 3
        assert jdtest.partition_count(first, "c") == 1
        # stdin is /dev/null: EOF on the control channel must not stop it
        time.sleep(0.5)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(jdtest.scaled(15)) == 0


@pytest.mark.parametrize("args", [["--brokers", "0"], ["--topic", "nopartitions"],
                                  ["--topic", "t:0"], ["--bogus", "1"], ["--brokers"]])
def test_bad_flags_exit_1(args):
    r = subprocess.run([jdtest.binary("journey-devbroker")] + args, capture_output=True,
                       timeout=jdtest.scaled(10), env=jdtest.child_env())
    assert r.returncode == 1
    assert r.stderr and not r.stdout


def test_round_trip_group_offsets_survive_consumer_restart(devbroker):
    b = devbroker.bootstrap
    first = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(200)]
    jdtest.produce(b, "touchpoints", first)

    group = "devbroker-test"
    # The mock coordinator waits a whole session timeout after a member
    # leaves before the next rebalance (see journey-devbroker.c), hence 6 s.
    conf = {"bootstrap.servers": b, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000}

    def read(n, timeout=30):
        c = Consumer(conf)
        c.subscribe(["touchpoints"])
        got = []
        deadline = time.monotonic() + jdtest.scaled(timeout)
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            got.append((m.key(), m.value()))
        # read past n for a moment: nothing more may arrive
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            m = c.poll(0.1)
            if m is not None and not m.error():
                got.append((m.key(), m.value()))
        c.commit(asynchronous=False)
        c.close()
        return got

    assert sorted(read(200)) == sorted(first)
    committed = jdtest.committed_offsets(b, group, "touchpoints")
    assert sum(committed.values()) == 200
    assert committed == jdtest.high_watermarks(b, "touchpoints")

    second = [(f"k{i}".encode(), f"w{i}".encode()) for i in range(50)]
    jdtest.produce(b, "touchpoints", second)
    # a restarted member of the group resumes at the committed offsets
    assert sorted(read(50)) == sorted(second)


def test_kcat_produce_and_consume(devbroker):
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed (tests/deps.sh installs it)")
    lines = "".join(f"c{i}:payload-{i}\n" for i in range(20))
    subprocess.run([kcat, "-b", devbroker.bootstrap, "-P", "-t", "loyalty.rewards", "-K:"],
                   input=lines.encode(), check=True, timeout=jdtest.scaled(30))
    out = subprocess.run([kcat, "-b", devbroker.bootstrap, "-C", "-t", "loyalty.rewards", "-e",
                          "-q", "-f", "%k:%s\n"], check=True, capture_output=True,
                         timeout=jdtest.scaled(30)).stdout.decode()
    assert sorted(out.splitlines()) == sorted(lines.splitlines())


def test_sigterm_exits_0(tmp_path):
    b = jdtest.DevBroker(str(tmp_path)).start()
    jdtest.produce(b.bootstrap, "touchpoints", [(b"k", b"v")])
    assert b.stop() == 0


def test_control_down_up_create_error(devbroker):
    b = devbroker.bootstrap
    assert devbroker.create_topic("extra", 2) == "ok"
    assert jdtest.partition_count(b, "extra") == 2

    with pytest.raises(RuntimeError, match="unknown command"):
        devbroker.control("frobnicate 1")
    with pytest.raises(RuntimeError, match="broker id"):
        devbroker.control("down 7")

    # broker 1 is the only broker: while it is down nothing can be delivered
    devbroker.down(1)
    p = Producer({"bootstrap.servers": b, "message.timeout.ms": 60000})
    delivered = []
    p.produce("touchpoints", key=b"x", value=b"during-outage",
              on_delivery=lambda err, msg: delivered.append(err))
    assert p.flush(2) == 1 and not delivered
    devbroker.up(1)
    assert p.flush(jdtest.scaled(30)) == 0
    assert delivered == [None]

    # error injection: the next 2 Produce requests (ApiKey 0) fail with a
    # retriable NOT_ENOUGH_REPLICAS (19); the producer's retries get through
    devbroker.push_errors(0, 19, 2)
    res = jdtest.produce(b, "touchpoints", [(b"y", b"after-errors")])
    assert res[0][1] >= 0
    values = [r.value for r in jdtest.consume_all(b, "touchpoints", expect_n=2, decode=False)]
    assert sorted(values) == [b"after-errors", b"during-outage"]

    # errors queued and then cleared fail nothing
    devbroker.push_errors(0, 19, 1000)
    assert devbroker.clear_errors(0) == "ok"
    p = Producer({"bootstrap.servers": b, "retries": 0})
    failed = []
    p.produce("touchpoints", key=b"z", value=b"after-clear",
              on_delivery=lambda err, msg: failed.append(err))
    assert p.flush(jdtest.scaled(10)) == 0 and failed == [None]


def test_stdin_eof_does_not_stop_it(devbroker):
    devbroker.proc.stdin.close()
    time.sleep(0.6)
    assert devbroker.proc.poll() is None
    jdtest.produce(devbroker.bootstrap, "touchpoints", [(b"k", b"still-up")])
    assert devbroker.stop() == 0
    assert os.path.exists(devbroker.log_path)
