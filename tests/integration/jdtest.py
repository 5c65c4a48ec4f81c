"""jdtest — the shared harness of the integration and end-to-end tests.

Everything here drives real programs: Debian's redis-server on a free
loopback port, build/journey-devbroker (librdkafka's mock cluster, spoken to
over the real Kafka protocol), build/journeyd, and real clients
(python3-confluent-kafka, python3-redis, python3-avro). Nothing is mocked.

Paths: JD_BUILD_DIR (default ./build) and JD_SOURCE_DIR (default the repo
root); ctest sets both. Timeouts are multiplied by JD_TIMEOUT_SCALE, which
defaults to 3 for a sanitizer build (JD_SANITIZE=ON in the build's cache).
Run with /usr/bin/python3: the python3 first on PATH may not see Debian's
python3-* packages.
"""

import datetime
import io
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import avro.io
import avro.schema
import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

SOURCE_DIR = os.path.abspath(
    os.environ.get("JD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
)
BUILD_DIR = os.path.abspath(os.environ.get("JD_BUILD_DIR", os.path.join(SOURCE_DIR, "build")))
CONFIG_DIR = os.path.join(SOURCE_DIR, "config")
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "journeyd.conf")

DEFAULT_TOPICS = {
    "touchpoints": 8,
    "loyalty.rewards": 8,
    "loyalty.reengagement": 8,
    "touchpoints.dlq": 4,
    "loyalty.suppressed": 4,
}


def _sanitized_build():
    try:
        with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
            return re.search(r"^JD_SANITIZE:BOOL=(ON|1|TRUE|YES)$", f.read(), re.M | re.I) is not None
    except OSError:
        return False


SANITIZED = _sanitized_build()
TIMEOUT_SCALE = float(os.environ.get("JD_TIMEOUT_SCALE", "3" if SANITIZED else "1"))


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def binary(name):
    path = os.path.join(BUILD_DIR, name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is not built (JD_BUILD_DIR={BUILD_DIR})")
    return path


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago. Callers that bind it
    later retry on a clash (see Redis.start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fatal(RuntimeError):
    """Raised by a polled predicate when waiting longer cannot help (the
    process being waited for has exited)."""


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns a truthy value, which is returned.
    Raises TimeoutError naming `what` after `timeout` (scaled) seconds."""
    deadline = time.monotonic() + scaled(timeout)
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Fatal:
            raise
        except Exception as exc:  # the thing polled may not be up yet
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {scaled(timeout):.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def child_env(extra=None):
    """The environment for a program under test: ours, plus sanitizer options
    that make a leak or UB fail the run loudly (unless the caller set them)."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:strict_string_checks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    if extra:
        env.update(extra)
    return env


def _tail(path, nbytes=4000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - nbytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------
# Redis


class Redis:
    """A private redis-server on a free loopback port, data in its own dir.

    By default nothing is persisted (`--save '' --appendonly no`); pass
    appendonly=True (and appendfsync) or save="60 1" for persistence tests.
    """

    def __init__(self, workdir, appendonly=False, appendfsync="everysec", save="", extra_args=()):
        self.workdir = workdir
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.save = save
        self.extra_args = list(extra_args)
        self.host = "127.0.0.1"
        self.port = None
        self.proc = None
        self.log_path = os.path.join(workdir, "redis.log")
        os.makedirs(workdir, exist_ok=True)

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def _args(self):
        return [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", self.workdir,
            "--save", self.save,
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--logfile", self.log_path,
            "--protected-mode", "no",
        ] + self.extra_args

    def start(self, timeout=10):
        """Starts on a free port, or on the port it had before (restart)."""
        fixed = self.port is not None
        for _ in range(1 if fixed else 5):
            if not fixed:
                self.port = free_port()
            self.proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            try:
                wait_until(self._ping, timeout, what=f"redis-server on {self.address}")
                return self
            except TimeoutError:
                self.proc.kill()
                self.proc.wait()
                raise
            except Fatal:
                pass  # it exited: most likely the port was taken meanwhile
        raise RuntimeError(f"redis-server did not start; log:\n{_tail(self.log_path)}")

    def _ping(self):
        if self.proc.poll() is not None:
            raise Fatal(f"redis-server exited with {self.proc.returncode}")
        return self.client().ping()

    def client(self, decode=True):
        return redis.Redis(host=self.host, port=self.port, decode_responses=decode,
                           socket_timeout=10)

    def stop(self, timeout=10):
        """Orderly stop: SHUTDOWN (saving when persistence is on)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.client().shutdown(save=bool(self.save) or self.appendonly,
                                   nosave=not (bool(self.save) or self.appendonly))
        except (redis.ConnectionError, redis.ResponseError):
            pass  # the connection drops as the server exits
        try:
            self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self):
        """SIGKILL: what an OOM kill or a crash looks like to journeyd."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, timeout=10):
        """Starts again on the same port and dir (the same address journeyd uses)."""
        self.stop()
        return self.start(timeout)


# --------------------------------------------------------------------------
# journey-devbroker


class DevBroker:
    """build/journey-devbroker: the mock cluster, its address and control channel."""

    def __init__(self, workdir, brokers=1, topics=None):
        self.workdir = workdir
        self.brokers = brokers
        self.topics = dict(DEFAULT_TOPICS if topics is None else topics)
        self.proc = None
        self.bootstrap = None
        self.log_path = os.path.join(workdir, "devbroker.log")
        self._sel = None
        self._buf = b""
        os.makedirs(workdir, exist_ok=True)

    def start(self, timeout=10):
        args = [binary("journey-devbroker"), "--brokers", str(self.brokers)]
        for name, parts in self.topics.items():
            args += ["--topic", f"{name}:{parts}"]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=child_env())
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        line = self._readline(timeout)
        if not re.fullmatch(r"127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+)*", line):
            raise RuntimeError(f"unexpected first line from devbroker: {line!r}")
        self.bootstrap = line
        return self

    def _readline(self, timeout):
        deadline = time.monotonic() + scaled(timeout)
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"devbroker said nothing; log:\n{_tail(self.log_path)}")
            if not self._sel.select(left):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"devbroker closed stdout (exit {self.proc.poll()}); "
                                   f"log:\n{_tail(self.log_path)}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode().strip()

    def control(self, command, timeout=10):
        """Sends one control line ("down 1", "error 0 7 3", ...) and returns the
        reply; raises on anything but "ok"."""
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        reply = self._readline(timeout)
        if reply != "ok":
            raise RuntimeError(f"devbroker {command!r}: {reply}")
        return reply

    def down(self, broker_id):
        return self.control(f"down {broker_id}")

    def up(self, broker_id):
        return self.control(f"up {broker_id}")

    def push_errors(self, api_key, err_code, count):
        return self.control(f"error {api_key} {err_code} {count}")

    def clear_errors(self, api_key):
        return self.control(f"clear {api_key}")

    def create_topic(self, name, partitions):
        self.topics[name] = partitions
        return self.control(f"create {name} {partitions}")

    def stop(self, timeout=15):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(scaled(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        if self._sel:
            self._sel.close()
            self._sel = None
        self._log.close()
        return self.proc.returncode


# --------------------------------------------------------------------------
# Configuration files (libconfig) derived from config/journeyd.conf


class Raw:
    """A libconfig value written verbatim (lists, groups, anything exotic)."""

    def __init__(self, text):
        self.text = text


def libconfig_value(v):
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}L" if not -(2**31) <= v < 2**31 else str(v)
    if isinstance(v, float):
        return repr(v) if ("." in repr(v) or "e" in repr(v)) else repr(v) + ".0"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[ " + ", ".join(libconfig_value(x) for x in v) + " ]"
    if isinstance(v, tuple):
        return "( " + ", ".join(libconfig_value(x) for x in v) + " )"
    if isinstance(v, dict):
        return "{ " + " ".join(f"{k} = {libconfig_value(x)};" for k, x in v.items()) + " }"
    raise TypeError(f"no libconfig form for {v!r}")


_TOKEN = re.compile(
    r"""(?P<ws>\s+)|(?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)|(?P<str>"(?:\\.|[^"\\])*")"""
    r"""|(?P<punct>[=:;,{}\[\]()])|(?P<word>[^\s=:;,{}\[\]()"#/]+|/)""",
    re.S,
)


def _tokens(text):
    pos = 0
    out = []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot tokenize config at offset {pos}: {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        if kind not in ("ws", "comment"):
            out.append((kind, m.group(), m.start(), m.end()))
        pos = m.end()
    return out


def _settings(text):
    """Maps every setting path reachable through groups ("kafka.brokers") to
    (setting_start, value_start, value_end, setting_end); groups also map
    "PATH{}" to the offset of their closing brace."""
    toks = _tokens(text)
    found = {}

    def skip_value(i):
        depth = 0
        while True:
            kind, tok, _, _ = toks[i]
            if tok in "([{" and kind == "punct":
                depth += 1
            elif tok in ")]}" and kind == "punct":
                depth -= 1
            i += 1
            if depth == 0 and (i >= len(toks) or toks[i][1] in ",;)]}"):
                return i

    def group(i, prefix):
        while i < len(toks) and toks[i][1] != "}":
            kind, name, start, _ = toks[i]
            if kind != "word" or toks[i + 1][1] not in ("=", ":"):
                raise ValueError(f"unexpected {name!r} at offset {start}")
            path = prefix + name
            vi = i + 2
            if toks[vi][1] == "{":
                j = group(vi + 1, path + ".")
                found[path + "{}"] = toks[j][2]
                j += 1
            else:
                j = skip_value(vi)
            vend = toks[j - 1][3]
            end = vend
            if j < len(toks) and toks[j][1] in ";,":
                end = toks[j][3]
                j += 1
            found[path] = (start, toks[vi][2], vend, end)
            i = j
        return i

    group(0, "")
    return found


def config_with_overrides(base_text, overrides):
    """Applies {path: value} to a libconfig text. An existing setting gets the
    new value; a missing one is added at the end of its group (created at the
    top level when absent); None removes the setting."""
    text = base_text
    for path, value in overrides.items():
        found = _settings(text)
        parent, _, name = path.rpartition(".")
        if path in found:
            start, vstart, vend, end = found[path]
            if value is None:
                text = text[:start] + text[end:]
            else:
                text = text[:vstart] + libconfig_value(value) + text[vend:]
        elif value is None:
            continue
        elif not parent:
            text = text.rstrip("\n") + f"\n{name} = {libconfig_value(value)};\n"
        elif parent + "{}" in found:
            close = found[parent + "{}"]
            text = text[:close] + f"  {name} = {libconfig_value(value)};\n" + text[close:]
        else:
            text = config_with_overrides(text, {parent: Raw("{ }")})
            text = config_with_overrides(text, {path: value})
    return text


def append_kafka_properties(text, props, path="kafka.properties"):
    """Sets librdkafka pass-through pairs in the list of ("name", "value")
    pairs at `path` (creating it): a name already there gets the new value."""
    found = _settings(text)
    pairs = {}
    if path in found:
        _, vstart, vend, _ = found[path]
        for k, v in re.findall(r'\(\s*"((?:\\.|[^"\\])*)"\s*,\s*"((?:\\.|[^"\\])*)"\s*\)',
                               text[vstart:vend]):
            pairs[k] = v
    pairs.update({k: str(v) for k, v in props.items()})
    value = Raw("( " + ", ".join(f"( {libconfig_value(k)}, {libconfig_value(v)} )"
                                 for k, v in pairs.items()) + " )")
    return config_with_overrides(text, {path: value})


def write_config(directory, overrides=None, kafka_properties=None, base=DEFAULT_CONFIG,
                 name="journeyd.conf"):
    """Writes DIRECTORY/NAME: `base` with `overrides` ({"kafka.group_id": "g",
    "schemas.wire_format": "confluent", ...}) and extra librdkafka properties.
    Relative paths in the file (schemas/...) keep working because every other
    entry of the base file's directory is symlinked beside the new file.

    By default kafka.session_timeout is "6s": after a member leaves, the
    devbroker's group coordinator waits one session timeout before it
    rebalances (journey-devbroker.c), so a restarted journeyd idles that long
    before it gets its partitions back."""
    os.makedirs(directory, exist_ok=True)
    base_dir = os.path.dirname(os.path.abspath(base))
    for entry in os.listdir(base_dir):
        link = os.path.join(directory, entry)
        if entry != os.path.basename(base) and not os.path.lexists(link):
            os.symlink(os.path.join(base_dir, entry), link)
    with open(base) as f:
        text = f.read()
    merged = {"kafka.session_timeout": "6s"}
    merged.update(overrides or {})
    text = config_with_overrides(text, merged)
    if kafka_properties:
        text = append_kafka_properties(text, kafka_properties)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# --------------------------------------------------------------------------
# journeyd


class Journeyd:
    """build/journeyd as SPEC §1 runs it:
    journeyd -c FILE [-b BROKERS] [-r HOST:PORT] [--metrics-port N] [--check].
    stdout and stderr go to LOG (default WORKDIR/journeyd.N.log)."""

    _seq = 0

    def __init__(self, workdir, config, bootstrap=None, redis_addr=None, metrics_port=None,
                 extra_args=(), env=None, binary_name="journeyd"):
        self.workdir = workdir
        self.config = config
        self.bootstrap = bootstrap
        self.redis_addr = redis_addr
        self.metrics_port = free_port() if metrics_port is None else metrics_port
        self.extra_args = list(extra_args)
        self.env = env
        self.binary_name = binary_name
        self.proc = None
        self.log_path = None
        self._log = None

    def args(self):
        a = [binary(self.binary_name), "-c", self.config]
        if self.bootstrap:
            a += ["-b", self.bootstrap]
        if self.redis_addr:
            a += ["-r", self.redis_addr]
        if self.metrics_port:
            a += ["--metrics-port", str(self.metrics_port)]
        return a + self.extra_args

    def start(self):
        Journeyd._seq += 1
        self.log_path = os.path.join(self.workdir, f"journeyd.{Journeyd._seq}.log")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=child_env(self.env))
        return self

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def wait_for_log(self, pattern, timeout=30):
        rx = re.compile(pattern)
        return wait_until(lambda: self._alive_or_raise() and rx.search(self.log_text()), timeout,
                          what=f"log line /{pattern}/ from journeyd")

    def _alive_or_raise(self):
        if not self.running():
            raise Fatal(f"journeyd exited with {self.proc.returncode}; log:\n"
                               f"{_tail(self.log_path)}")
        return True

    def http_get(self, path, timeout=2):
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=30):
        """Until /readyz answers 200 (partitions assigned, Redis reachable)."""
        return wait_until(lambda: self._alive_or_raise() and self.http_get("/readyz")[0] == 200,
                          timeout, interval=0.1, what="journeyd /readyz")

    def metrics(self):
        """The Prometheus text as {'name{labels}': value}."""
        status, body = self.http_get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return parse_prometheus(body)

    def signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def sigterm(self):
        self.signal(signal.SIGTERM)

    def sigkill(self):
        self.signal(signal.SIGKILL)

    def wait(self, timeout=30):
        """Waits for exit (scaled timeout) and returns the exit code; on
        timeout the process is killed and TimeoutError raised."""
        try:
            rc = self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise TimeoutError(f"journeyd did not exit within {scaled(timeout):.0f}s; log:\n"
                               f"{_tail(self.log_path)}")
        self._close_log()
        return rc

    def stop(self, timeout=30):
        self.sigterm()
        return self.wait(timeout)

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def cleanup(self):
        if self.running():
            self.proc.kill()
            self.proc.wait()
        self._close_log()


def run_journeyd(args, timeout=30, env=None):
    """Runs journeyd to completion (e.g. --check) and returns CompletedProcess."""
    return subprocess.run([binary("journeyd")] + list(args), capture_output=True, text=True,
                          timeout=scaled(timeout), env=child_env(env))


def parse_prometheus(body):
    out = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\S+?(?:\{.*\})?)\s+(\S+)(?:\s+\d+)?$", line)
        if m:
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    return out


def metric_sum(metrics, name):
    """Sum of a metric over all its label sets."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


# --------------------------------------------------------------------------
# Avro


def load_schema(name_or_path):
    path = name_or_path
    if not os.path.isabs(path):
        path = os.path.join(CONFIG_DIR, "schemas", name_or_path)
    with open(path) as f:
        return avro.schema.parse(f.read())


_SCHEMAS = {}


def schema(name):
    """'touchpoint' or 'trigger', parsed once from config/schemas/NAME.avsc."""
    if name not in _SCHEMAS:
        _SCHEMAS[name] = load_schema(name + ".avsc")
    return _SCHEMAS[name]


def _is_timestamp_millis(field_schema):
    branches = getattr(field_schema, "schemas", None) or [field_schema]
    return any(getattr(b, "props", {}).get("logicalType") == "timestamp-millis" for b in branches)


def _ms_to_datetime(ms):
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + \
        datetime.timedelta(milliseconds=ms)


def _datetime_to_ms(dt):
    delta = dt - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def avro_encode(record, sch):
    """Encodes a record dict whose timestamp-millis fields are ints (ms since
    the epoch; python3-avro itself wants datetimes there)."""
    rec = dict(record)
    for f in sch.fields:
        if isinstance(rec.get(f.name), int) and _is_timestamp_millis(f.type):
            rec[f.name] = _ms_to_datetime(rec[f.name])
    buf = io.BytesIO()
    avro.io.DatumWriter(sch).write(rec, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def avro_decode(body, writer, reader=None):
    """Decodes one record; timestamp-millis fields come back as ints (ms).
    Trailing bytes are an error: a real decoder must consume the body."""
    stream = io.BytesIO(body)
    rec = avro.io.DatumReader(writer, reader or writer).read(avro.io.BinaryDecoder(stream))
    if stream.tell() != len(body):
        raise ValueError(f"{len(body) - stream.tell()} bytes left after the record")
    for k, v in list(rec.items()):
        if isinstance(v, datetime.datetime):
            rec[k] = _datetime_to_ms(v)
    return rec


def confluent_frame(schema_id, body):
    return b"\x00" + struct.pack(">I", schema_id) + body


def encode_touchpoint(event, framing="bare", schema_id=1, writer=None):
    """Encodes a Touchpoint dict: framing 'bare' (the Avro body) or
    'confluent' (0x00, 4-byte big-endian schema id, body)."""
    body = avro_encode(event, writer or schema("touchpoint"))
    if framing == "bare":
        return body
    if framing == "confluent":
        return confluent_frame(schema_id, body)
    raise ValueError(f"unknown framing {framing!r}")


def decode_trigger(value):
    """Decodes a Trigger, Confluent-framed or bare. A bare Trigger never starts
    with 0x00: that would be an empty trigger_id."""
    if len(value) >= 5 and value[0] == 0:
        value = value[5:]
    return avro_decode(value, schema("trigger"))


def base_time_ms(days_ago=20):
    """Noon UTC `days_ago` days before today: journeys placed at midday stay
    out of any quiet hours, and relative to now so that clock=wall agrees."""
    day = 86400 * 1000
    today = int(time.time() * 1000) // day * day
    return today - days_ago * day + 12 * 3600 * 1000


def touchpoint(customer_id, type, at_ms, event_id=None, channel="web", amount=None,
               currency=None, score=None, attributes=None):
    return {
        "event_id": event_id or f"ev-{uuid.uuid4().hex}",
        "customer_id": customer_id,
        "type": type,
        "channel": channel,
        "occurred_at": int(at_ms),
        "amount": None if amount is None else float(amount),
        "currency": currency if currency is not None else ("EUR" if amount is not None else None),
        "score": score,
        "attributes": dict(attributes or {}),
    }


# --------------------------------------------------------------------------
# Kafka clients


def _client_conf(bootstrap, **extra):
    conf = {"bootstrap.servers": bootstrap, "log_level": 4}
    conf.update(extra)
    return conf


def produce(bootstrap, topic, events, framing="bare", schema_id=1, partition=None, timeout=30,
            headers=None):
    """Produces events and waits for every delivery; returns one
    (partition, offset) per event, in order.

    An event is a Touchpoint dict (encoded with `framing`, keyed by its
    customer_id) or a (key, value_bytes) tuple sent as is (key may be None or
    b"" for the empty-key cases). `partition` forces a partition."""
    p = Producer(_client_conf(bootstrap, **{"linger.ms": 5, "enable.idempotence": True}))
    results = [None] * len(events)
    errors = []

    def report(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                results[i] = (msg.partition(), msg.offset())
        return cb

    for i, ev in enumerate(events):
        if isinstance(ev, tuple):
            key, value = ev
        else:
            key, value = ev["customer_id"].encode(), encode_touchpoint(ev, framing, schema_id)
        kwargs = {"key": key, "value": value, "on_delivery": report(i)}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                p.produce(topic, **kwargs)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(scaled(timeout))
    if left or errors:
        raise RuntimeError(f"produce to {topic}: {left} undelivered, errors {errors[:5]}")
    return results


class Record:
    """One consumed message."""

    def __init__(self, msg, decode):
        self.topic = msg.topic()
        self.partition = msg.partition()
        self.offset = msg.offset()
        self.key = msg.key()
        self.value = msg.value()
        self.headers = {}
        for k, v in msg.headers() or []:
            self.headers[k] = v.decode("utf-8", "replace") if v is not None else None
        self.trigger = decode_trigger(self.value) if decode else None

    def __repr__(self):
        what = self.trigger if self.trigger is not None else self.value[:40]
        return f"<{self.topic}/{self.partition}/{self.offset} key={self.key!r} {what}>"


def consume_all(bootstrap, topic, expect_n=None, timeout=30, quiet=1.5, decode=True,
                group=None):
    """Reads `topic` from the beginning with a fresh consumer group and
    returns Records. Stops once `quiet` seconds pass without a message after
    the partitions are assigned and, when expect_n is given, at least expect_n
    arrived (reading on through the quiet period, so extra messages show up
    in the result). Stops at `timeout` (scaled) regardless.
    decode=True decodes each value as a Trigger."""
    topics = [topic] if isinstance(topic, str) else list(topic)
    c = Consumer(_client_conf(bootstrap, **{
        "group.id": group or f"jdtest-{uuid.uuid4().hex[:12]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }))
    assigned = []
    c.subscribe(topics, on_assign=lambda _c, parts: assigned.extend(parts))
    out = []
    eof = set()
    deadline = time.monotonic() + scaled(timeout)
    last = None
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.1)
            now = time.monotonic()
            if msg is None:
                if assigned and last is None:
                    last = now
            elif msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    eof.add((msg.topic(), msg.partition()))
                    last = last or now
                    continue
                raise KafkaException(msg.error())
            else:
                out.append(Record(msg, decode))
                last = now
                continue
            enough = expect_n is None or len(out) >= expect_n
            if enough and assigned and last is not None and now - last >= quiet:
                break
    finally:
        c.close()
    return out


def partition_count(bootstrap, topic, timeout=10):
    c = Consumer(_client_conf(bootstrap, **{"group.id": "jdtest-meta"}))
    try:
        md = c.list_topics(topic, timeout=scaled(timeout))
        return len(md.topics[topic].partitions)
    finally:
        c.close()


def high_watermarks(bootstrap, topic, timeout=10):
    c = Consumer(_client_conf(bootstrap, **{"group.id": "jdtest-meta"}))
    try:
        n = len(c.list_topics(topic, timeout=scaled(timeout)).topics[topic].partitions)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=scaled(timeout))[1]
                for p in range(n)}
    finally:
        c.close()


def committed_offsets(bootstrap, group, topic, timeout=10):
    """The group's committed offset per partition (-1001 when none). Reads the
    offsets without joining the group."""
    c = Consumer(_client_conf(bootstrap, **{"group.id": group}))
    try:
        n = len(c.list_topics(topic, timeout=scaled(timeout)).topics[topic].partitions)
        tps = c.committed([TopicPartition(topic, p) for p in range(n)], timeout=scaled(timeout))
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def wait_caught_up(bootstrap, group, topic, timeout=60):
    """Until `group` has committed the end of every partition of `topic`.
    journeyd commits an offset only after the event's state is persisted and
    its triggers acknowledged, so this is "everything processed"."""
    def done():
        high = high_watermarks(bootstrap, topic)
        com = committed_offsets(bootstrap, group, topic)
        return all(h == 0 or com.get(p, -1) >= h for p, h in high.items())
    return wait_until(done, timeout, interval=0.25, what=f"group {group} to commit all of {topic}")


# --------------------------------------------------------------------------
# Journey state in Redis


def state_key(customer_id, prefix="j"):
    return f"{prefix}:{{{customer_id}}}"


def parse_state(text):
    """Parses the text form `v1|key=value|...` (docs/state-format.md) into a
    dict of unescaped keys and values; "version" holds the leading tag."""
    if text is None:
        return None
    parts = text.split("|")
    out = {"version": parts[0]}
    for part in parts[1:]:
        if not part:
            continue
        k, _, v = part.partition("=")
        out[urllib.parse.unquote(k)] = v
    return out


def read_state(client, customer_id, prefix="j"):
    return parse_state(client.get(state_key(customer_id, prefix)))


def lifetime_count(state, event_type):
    if not state:
        return 0
    return int(float(state.get(f"c.{event_type}", "0") or 0))


def segments_of(state):
    sg = (state or {}).get("sg", "")
    return set(urllib.parse.unquote(s) for s in sg.split(",") if s)


def by_customer(records):
    """{customer_id: [trigger dict, ...]} from decoded Records."""
    out = {}
    for r in records:
        out.setdefault(r.trigger["customer_id"], []).append(r.trigger)
    return out


def names(triggers):
    return sorted(t["trigger"] for t in triggers)


