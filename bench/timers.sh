#!/bin/sh
# bench/timers.sh — timer costs in Redis (bench_timers.c: memory per
# customer with the shipped rules; one timer tick with 10k, 100k and 1M
# customers scheduled and 100 due). Starts a private redis-server on a free
# port, no persistence. Usage: bench/timers.sh [BUILD_DIR] (default build;
# an optimised build gives the figures to quote).
# Timer lateness in wall-clock mode is measured end to end by
# tests/integration/test_timers_wall.py (printed with pytest -s).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d /tmp/jd-bench-timers.XXXXXX)
redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
    --daemonize no --logfile "$dir/redis.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
for i in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$build/bench/bench_timers" "127.0.0.1:$port" "$here/config/journeyd.conf"
