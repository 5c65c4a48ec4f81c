"""pytest fixtures over jdtest: a private redis-server, a fresh devbroker and
journeyd factories per test, each stopped (and its log shown on failure) at
teardown. Every test gets its own ports, dirs and consumer groups."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import jdtest  # noqa: E402


@pytest.fixture
def redis_server(tmp_path):
    r = jdtest.Redis(str(tmp_path / "redis")).start()
    yield r
    r.kill()


@pytest.fixture
def devbroker(tmp_path):
    b = jdtest.DevBroker(str(tmp_path / "devbroker")).start()
    yield b
    b.stop()


@pytest.fixture
def write_config(tmp_path):
    """write_config(overrides=None, kafka_properties=None, name=...) -> path of
    a config derived from config/journeyd.conf, in the test's tmp dir."""
    def make(overrides=None, kafka_properties=None, name="journeyd.conf"):
        return jdtest.write_config(str(tmp_path / "conf"), overrides, kafka_properties, name=name)
    return make


@pytest.fixture
def journeyd_factory(tmp_path, devbroker, redis_server, request):
    """journeyd_factory(config, **kw) -> a started Journeyd pointed at this
    test's devbroker and redis-server. All are killed at teardown; their logs
    are printed when the test failed (pytest shows them with the failure)."""
    started = []

    def make(config, start=True, **kw):
        kw.setdefault("bootstrap", devbroker.bootstrap)
        kw.setdefault("redis_addr", redis_server.address)
        jd = jdtest.Journeyd(str(tmp_path), config, **kw)
        started.append(jd)
        return jd.start() if start else jd

    yield make
    for jd in started:
        jd.cleanup()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for jd in started:
            print(f"\n----- {jd.log_path} -----\n{jd.log_text()[-8000:]}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
