#!/usr/bin/python3
"""bench/redis_mset.py — what the store's write shape costs Redis.

Starts a redis-server of its own on a free loopback port and writes N
customer states (600-byte values, keys like journeyd's) three times each
way: 500 pipelined SETs per round trip, then one MSET of 500 keys per round
trip; prints the CPU seconds Redis spent on each (/proc/PID/stat), the figure
behind store.c's choice of MSET for state-only writes on a single node.
Usage: /usr/bin/python3 bench/redis_mset.py [N]
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300000
CHUNK = 500


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def main():
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="redis-mset.")
    srv = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                            "--save", "", "--appendonly", "no", "--dir", tmp],
                           stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                sock = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("redis-server did not start")
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu():
            f = open("/proc/%d/stat" % srv.pid).read().split()
            return (int(f[13]) + int(f[14])) / ticks

        def drain(n):  # n replies of the form +OK\r\n
            buf = b""
            while buf.count(b"\r\n") < n:
                buf += sock.recv(1 << 20)

        val = b"v1|" + b"x" * 597
        sets = [b"".join(resp("SET", "j:{cust-%06d}" % i, val) for i in range(b, b + CHUNK))
                for b in range(0, N, CHUNK)]
        msets = []
        for b in range(0, N, CHUNK):
            args = ["MSET"]
            for i in range(b, b + CHUNK):
                args += ["j:{cust-%06d}" % i, val]
            msets.append(resp(*args))
        for rnd in range(3):  # the first round also creates the keys
            c0 = cpu()
            for x in sets:
                sock.sendall(x)
                drain(CHUNK)
            c1 = cpu()
            for x in msets:
                sock.sendall(x)
                drain(1)
            c2 = cpu()
            print("round %d: %d states: redis CPU s: SET %.2f  MSET %.2f" % (rnd + 1, N, c1 - c0, c2 - c1))
    finally:
        srv.kill()
        srv.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
