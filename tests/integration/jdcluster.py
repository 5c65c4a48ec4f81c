"""jdcluster — a real Redis Cluster on loopback for the integration tests.

N redis-server processes (Debian's) with `cluster-enabled yes`, no
persistence, in one work dir; joined with `redis-cli --cluster create`
(optionally with replicas); waited for until every node says
cluster_state:ok, sees all 16384 slots, and every replica is linked.
Resharding runs `redis-cli --cluster reshard` in the background.
"""

import os
import shutil
import socket
import subprocess
import time

import redis
from redis.cluster import RedisCluster as _ClusterClient

import jdtest


def _port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _pick_ports(n):
    """n consecutive ports whose cluster bus ports (+10000) are free too."""
    import random
    for _ in range(200):
        base = random.randrange(20000, 29000)
        if all(_port_free(base + i) and _port_free(base + i + 10000) for i in range(n)):
            return [base + i for i in range(n)]
    raise RuntimeError("no free ports for a Redis Cluster")


class RedisCluster:
    def __init__(self, workdir, masters=3, replicas=0, node_timeout_ms=2000):
        self.workdir = workdir
        self.n = masters * (1 + replicas)
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = []
        self.procs = []
        os.makedirs(workdir, exist_ok=True)

    # ---- life cycle

    def start(self, timeout=30):
        self.ports = _pick_ports(self.n)
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        for p in self.ports:
            self.procs.append(subprocess.Popen(
                [exe, "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", f"nodes-{p}.conf",
                 "--cluster-node-timeout", str(self.node_timeout_ms), "--dir", self.workdir,
                 "--save", "", "--appendonly", "no", "--logfile", f"redis-{p}.log"],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT))
        for i in range(self.n):
            jdtest.wait_until(lambda i=i: self.node(i).ping(), 10, what=f"node {self.ports[i]}")
        r = subprocess.run(
            ["redis-cli", "--cluster", "create"] + [f"127.0.0.1:{p}" for p in self.ports]
            + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{r.stdout}\n{r.stderr}")
        self.wait_ok(timeout)
        return self

    def _ok(self):
        for i in range(self.n):
            if not self.alive(i):
                continue
            c = self.node(i)
            if "cluster_state:ok" not in c.execute_command("CLUSTER INFO"):
                return False
            seen = sum(r[1] - r[0] + 1 for r in c.execute_command("CLUSTER SLOTS"))
            if seen != 16384:
                return False
            rep = c.info("replication")
            if rep["role"] != "master" and rep.get("master_link_status") != "up":
                return False
        return True

    def wait_ok(self, timeout=30):
        jdtest.wait_until(self._ok, timeout, interval=0.1, what="cluster_state:ok everywhere")

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def kill(self, i):
        """SIGKILL node i (a crash)."""
        if self.procs[i].poll() is None:
            self.procs[i].kill()
            self.procs[i].wait()

    def alive(self, i):
        return self.procs[i].poll() is None

    # ---- views

    def seeds(self, n=2):
        return ",".join(f"127.0.0.1:{p}" for p in self.ports[:n])

    def node(self, i):
        """A plain client of node i; CLUSTER replies come back raw (as the
        server sends them), not reshaped by python3-redis."""
        c = redis.Redis(host="127.0.0.1", port=self.ports[i], decode_responses=True,
                        socket_timeout=10)
        for cmd in ("CLUSTER INFO", "CLUSTER SLOTS", "CLUSTER MYID", "CLUSTER KEYSLOT"):
            c.response_callbacks.pop(cmd, None)
        return c

    def client(self):
        """A cluster-aware client (python3-redis)."""
        i = next(i for i in range(self.n) if self.alive(i))
        return _ClusterClient(host="127.0.0.1", port=self.ports[i], decode_responses=True)

    def node_id(self, i):
        return self.node(i).execute_command("CLUSTER MYID")

    def masters(self):
        return [i for i in range(self.n)
                if self.alive(i) and self.node(i).info("replication")["role"] == "master"]

    def master_of_slot(self, slot):
        i = next(i for i in range(self.n) if self.alive(i))
        for lo, hi, master, *_ in self.node(i).execute_command("CLUSTER SLOTS"):
            if lo <= slot <= hi:
                return self.ports.index(int(master[1]))
        return None

    def keyslot(self, key):
        i = next(i for i in range(self.n) if self.alive(i))
        return int(self.node(i).execute_command("CLUSTER KEYSLOT", key))

    def dbsizes(self):
        return {self.ports[i]: self.node(i).dbsize() for i in self.masters()}

    def reshard(self, src, dst, nslots):
        """Starts `redis-cli --cluster reshard` (src -> dst) in the background."""
        log = open(os.path.join(self.workdir, "reshard.log"), "ab")
        return subprocess.Popen(
            ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{self.ports[src]}",
             "--cluster-from", self.node_id(src), "--cluster-to", self.node_id(dst),
             "--cluster-slots", str(nslots), "--cluster-yes"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def wait_all_exits(proc, timeout):
    deadline = time.monotonic() + jdtest.scaled(timeout)
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("reshard did not finish")
        time.sleep(0.1)
    return proc.returncode
