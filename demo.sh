#!/usr/bin/env bash
# demo.sh — the journeyd demo, end to end on this machine:
#   installs what is missing (tests/deps.sh), builds (build/), starts a
#   redis-server and journey-devbroker (librdkafka's mock Kafka cluster) on
#   loopback, runs journeyd with config/journeyd.conf, plays the journeys of a
#   few hundred customers (browsers, first-time buyers, repeat buyers, VIPs,
#   unhappy customers, happy feedback, cart abandoners) with journey-loadgen,
#   prints every trigger as it arrives, then a summary; stops everything.
#
# Environment: CUSTOMERS (300), SEED (42), SPEEDUP (800000: ~90 days of event
# time in ~10 s), BUILD_DIR (build), CMAKE_ARGS (extra cmake -D options).
# The logs stay in a temp dir, named at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
CUSTOMERS=${CUSTOMERS:-300}
SEED=${SEED:-42}
SPEEDUP=${SPEEDUP:-800000}
PY=/usr/bin/python3 # Debian's python3-* packages live there
CONF=$ROOT/config/journeyd.conf

WORK=$(mktemp -d "${TMPDIR:-/tmp}/journeyd-demo.XXXXXX")
PID_REDIS='' PID_BROKER='' PID_JD='' PID_SHOW='' PID_GEN=''
STATUS=1

say() { printf '\n==> %s\n' "$*"; }
die() {
    printf '\ndemo: error: %s\n' "$*" >&2
    exit 1
}

# Stops a process we started: SIGTERM, then SIGKILL after GRACE seconds.
# STOP_RC gets its exit status.
stop_pid() { # PID GRACE NAME
    local pid=$1 grace=$2 name=$3 i
    STOP_RC=0
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "demo: $name did not stop within ${grace}s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || STOP_RC=$?
}

cleanup() {
    local rc=$?
    set +e
    stop_pid "$PID_GEN" 5 journey-loadgen
    stop_pid "$PID_SHOW" 5 show_triggers
    stop_pid "$PID_JD" 30 journeyd
    stop_pid "$PID_BROKER" 10 journey-devbroker
    stop_pid "$PID_REDIS" 10 redis-server
    if [ "$rc" -ne 0 ] || [ "$STATUS" -ne 0 ]; then
        echo "demo: failed; logs are in $WORK" >&2
        for f in "$WORK"/*.log; do
            [ -s "$f" ] || continue
            echo "--- last lines of $f" >&2
            tail -n 15 "$f" >&2
        done
    else
        echo "logs: $WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for SECONDS WHAT COMMAND... : retries COMMAND every 0.2 s.
wait_for() {
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    die "timed out after ${secs}s waiting for $what"
}

alive() { kill -0 "$1" 2>/dev/null; }

metric() { # sum of a Prometheus metric over its label sets, 0 when absent
    curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
        awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }'
}

say "Dependencies"
if [ -f "$ROOT/tests/deps.sh" ]; then
    bash "$ROOT/tests/deps.sh" >"$WORK/deps.log" 2>&1 || die "tests/deps.sh failed (see $WORK/deps.log)"
    echo "ok (tests/deps.sh)"
else
    echo "tests/deps.sh not found: assuming the packages are installed"
fi
for tool in cmake redis-server redis-cli curl; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

say "Building into $BUILD"
# an existing build tree keeps its build type; a new one is optimized
BUILD_TYPE=
[ -f "$BUILD/CMakeCache.txt" ] || BUILD_TYPE=-DCMAKE_BUILD_TYPE=RelWithDebInfo
# shellcheck disable=SC2086
cmake -S "$ROOT" -B "$BUILD" $BUILD_TYPE ${CMAKE_ARGS:-} >"$WORK/build.log" 2>&1 ||
    die "cmake configure failed (see $WORK/build.log)"
cmake --build "$BUILD" -j2 --target journeyd journey-devbroker journey-loadgen >>"$WORK/build.log" 2>&1 ||
    die "build failed (see $WORK/build.log)"
[ -x "$BUILD/journeyctl" ] || cmake --build "$BUILD" -j2 --target journeyctl >>"$WORK/build.log" 2>&1 || true
echo "ok"

say "Starting redis-server and journey-devbroker"
REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK" --save '' --appendonly no \
    --logfile "$WORK/redis.log" &
PID_REDIS=$!
wait_for 10 "redis-server on port $REDIS_PORT" redis-cli -p "$REDIS_PORT" ping
"$BUILD/journey-devbroker" --bootstrap-file "$WORK/bootstrap" </dev/null >"$WORK/devbroker.out" 2>"$WORK/devbroker.log" &
PID_BROKER=$!
wait_for 10 "journey-devbroker's bootstrap address" test -s "$WORK/bootstrap"
BOOTSTRAP=$(head -n 1 "$WORK/bootstrap")
echo "redis 127.0.0.1:$REDIS_PORT, kafka $BOOTSTRAP"

say "Starting journeyd -c config/journeyd.conf"
METRICS_PORT=$(free_port)
"$BUILD/journeyd" -c "$CONF" -b "$BOOTSTRAP" -r "127.0.0.1:$REDIS_PORT" \
    --metrics-port "$METRICS_PORT" >"$WORK/journeyd.log" 2>&1 &
PID_JD=$!
wait_for 20 "journeyd's /metrics on port $METRICS_PORT" \
    bash -c "kill -0 $PID_JD && curl -fsS http://127.0.0.1:$METRICS_PORT/metrics"
for ((i = 0; i < 100; i++)); do
    alive "$PID_JD" || die "journeyd exited (see $WORK/journeyd.log)"
    curl -fsS "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
if curl -fsS "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null 2>&1; then
    echo "ready (metrics on http://127.0.0.1:$METRICS_PORT/metrics)"
else
    echo "not ready after 20 s; continuing (events wait in Kafka)"
fi

say "Triggers as they arrive ($CUSTOMERS customers, ~90 days of event time in ~$((7776000000 / SPEEDUP / 1000)) s; times are fired_at, UTC)"
"$PY" "$ROOT/tests/tools/show_triggers.py" -b "$BOOTSTRAP" --jsonl "$WORK/triggers.jsonl" \
    2>"$WORK/show_triggers.log" &
PID_SHOW=$!

"$BUILD/journey-loadgen" -b "$BOOTSTRAP" --profile demo --customers "$CUSTOMERS" --seed "$SEED" \
    --speedup "$SPEEDUP" --stats 2>"$WORK/loadgen.log" &
PID_GEN=$!
wait "$PID_GEN" || die "journey-loadgen failed (see $WORK/loadgen.log)"
PID_GEN=''
PRODUCED=$(sed -n 's/.* delivered=\([0-9]*\).*/\1/p' "$WORK/loadgen.log" | head -n 1)
[ -n "$PRODUCED" ] || die "journey-loadgen printed no count (see $WORK/loadgen.log)"

# journeyd has caught up when it has consumed every event played
for ((i = 0; i < 300; i++)); do
    alive "$PID_JD" || die "journeyd exited (see $WORK/journeyd.log)"
    [ "$(metric journeyd_events_consumed_total)" -ge "$PRODUCED" ] && break
    sleep 0.2
done
CONSUMED=$(metric journeyd_events_consumed_total)
[ "$CONSUMED" -ge "$PRODUCED" ] ||
    echo "demo: warning: journeyd consumed $CONSUMED of $PRODUCED events within 60 s" >&2
sleep 3 # the last batch's triggers reach the consumer
stop_pid "$PID_SHOW" 10 show_triggers
PID_SHOW=''

say "Summary"
echo "events played:   $PRODUCED ($(sed -n 's/.*customers by persona: //p' "$WORK/loadgen.log"))"
echo "events consumed: $CONSUMED (journeyd_events_consumed_total)"
echo "dead letters:    $(metric journeyd_dlq_total) (journeyd_dlq_total)"
"$PY" - "$WORK/triggers.jsonl" <<'EOF'
import collections, json, os, sys
path = sys.argv[1]
rows = [json.loads(l) for l in open(path)] if os.path.exists(path) else []
by_rule = collections.Counter((r["trigger"], r["kind"]) for r in rows)
ids = {r["trigger_id"] for r in rows}
print("triggers:        %d (%d distinct trigger_id)" % (len(rows), len(ids)))
for (rule, kind), n in sorted(by_rule.items()):
    print("  %-24s %-13s %d" % (rule, kind, n))
EOF

# one customer of each persona, from the same deterministic stream
"$BUILD/journey-loadgen" --dry-run --profile demo --customers "$CUSTOMERS" --seed "$SEED" |
    "$PY" -c '
import json, sys
seen = {}
for line in sys.stdin:
    e = json.loads(line)
    seen.setdefault(e["persona"], e["customer_id"])
for p in ("vip", "unhappy", "repeat_buyer", "cart_abandoner"):
    if p in seen:
        print(p, seen[p])' >"$WORK/sample_customers"
while read -r persona cust; do
    echo
    echo "--- $cust ($persona)"
    if [ -x "$BUILD/journeyctl" ] &&
        "$BUILD/journeyctl" -c "$CONF" -r "127.0.0.1:$REDIS_PORT" customer "$cust" 2>>"$WORK/journeyctl.log"; then
        continue
    fi
    # no journeyctl: the raw keys of that customer
    redis-cli -p "$REDIS_PORT" --scan --pattern "*{$cust}*" | sort | while read -r key; do
        case $(redis-cli -p "$REDIS_PORT" type "$key") in
        hash) echo "$key:"; redis-cli -p "$REDIS_PORT" hgetall "$key" | paste - - | sed 's/^/    /' | head -n 30 ;;
        zset) echo "$key: $(redis-cli -p "$REDIS_PORT" zcard "$key") members" ;;
        list) echo "$key: $(redis-cli -p "$REDIS_PORT" llen "$key") entries" ;;
        set) echo "$key: $(redis-cli -p "$REDIS_PORT" smembers "$key" | tr '\n' ' ')" ;;
        string) echo "$key: $(redis-cli -p "$REDIS_PORT" strlen "$key") bytes" ;;
        esac
    done
done <"$WORK/sample_customers"

say "Stopping"
stop_pid "$PID_JD" 30 journeyd
PID_JD=''
[ "$STOP_RC" -eq 0 ] || die "journeyd exited with status $STOP_RC after SIGTERM (see $WORK/journeyd.log)"
echo "journeyd stopped cleanly (exit 0)"
STATUS=0
