#!/usr/bin/env bash
# bench/cluster_vs_single.sh — journeyd's throughput on one Redis vs a
# 3-master Redis Cluster, same input, same machine, same run (issue 9):
#   builds a Release tree (build-bench/), starts journey-devbroker, one
#   redis-server and a 3-master cluster (redis-cli --cluster create),
#   preloads EVENTS touchpoints over CUSTOMERS customers with
#   journey-loadgen --profile bench, then drains the topic with journeyd
#   RUNS times against each (alternating, each run with its own consumer
#   group and freshly emptied Redis), timed with bench/kafka_probe.py
#   (first consumed event -> last offset committed).
# The last line is exactly:
#   single_events_per_s=N cluster_events_per_s=M cluster_redirects=R
# (the best run of each; redirects summed over the cluster runs).
#
# Environment: EVENTS (300000), CUSTOMERS (30000), PARTITIONS (16), RUNS (2),
# SEED (1), TIMEOUT per drain in s (600), BUILD_DIR (build-bench).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
EVENTS=${EVENTS:-300000}
CUSTOMERS=${CUSTOMERS:-30000}
PARTITIONS=${PARTITIONS:-16}
RUNS=${RUNS:-2}
SEED=${SEED:-1}
TIMEOUT=${TIMEOUT:-600}
PY=/usr/bin/python3
TOPIC=touchpoints

WORK=$(mktemp -d "${TMPDIR:-/tmp}/journeyd-cluster-bench.XXXXXX")
PIDS=()

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() { # SECONDS WHAT COMMAND...
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "timed out after ${secs}s waiting for $what"
}
metric() { # METRICS_PORT NAME
    curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }'
}
json_field() { "$PY" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

log "building (Release) into $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$WORK/build.log" 2>&1 || die "cmake failed"
cmake --build "$BUILD" -j2 --target journey-devbroker journey-loadgen journeyd >>"$WORK/build.log" 2>&1 ||
    die "build failed (see $WORK/build.log)"

# one Redis
SINGLE=$(free_port)
redis-server --bind 127.0.0.1 --port "$SINGLE" --dir "$WORK" --save '' --appendonly no \
    --logfile "$WORK/redis-single.log" &
PIDS+=($!)
# a 3-master cluster: ports whose bus ports (+10000) are free too
BASE=$("$PY" - <<'EOF'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    b = random.randrange(20000, 29000)
    if all(free(b + i) and free(b + i + 10000) for i in range(3)):
        print(b); break
EOF
)
NODES=()
for i in 0 1 2; do
    p=$((BASE + i))
    redis-server --bind 127.0.0.1 --port "$p" --cluster-enabled yes --cluster-config-file "nodes-$p.conf" \
        --dir "$WORK" --save '' --appendonly no --logfile "$WORK/redis-$p.log" &
    PIDS+=($!)
    NODES+=("127.0.0.1:$p")
done
wait_for 10 "redis-server" redis-cli -p "$SINGLE" ping
for n in "${NODES[@]}"; do wait_for 10 "$n" redis-cli -p "${n#*:}" ping; done
redis-cli --cluster create "${NODES[@]}" --cluster-replicas 0 --cluster-yes >"$WORK/create.log" 2>&1 ||
    die "cluster create failed (see $WORK/create.log)"
for n in "${NODES[@]}"; do
    wait_for 20 "cluster_state:ok on $n" bash -c "redis-cli -p ${n#*:} cluster info | grep -q cluster_state:ok"
done
SEEDS="${NODES[0]},${NODES[1]}"

"$BUILD/journey-devbroker" --bootstrap-file "$WORK/bootstrap" --topic "$TOPIC:$PARTITIONS" \
    --topic "loyalty.rewards:$PARTITIONS" --topic "loyalty.reengagement:$PARTITIONS" \
    --topic touchpoints.dlq:4 --topic loyalty.suppressed:4 \
    </dev/null >"$WORK/devbroker.out" 2>"$WORK/devbroker.log" &
PIDS+=($!)
wait_for 10 "journey-devbroker" test -s "$WORK/bootstrap"
BOOTSTRAP=$(head -n 1 "$WORK/bootstrap")
log "redis 127.0.0.1:$SINGLE; cluster ${NODES[*]}; kafka $BOOTSTRAP; $(nproc) cores"

log "preloading $EVENTS events over $CUSTOMERS customers"
"$BUILD/journey-loadgen" -b "$BOOTSTRAP" -t "$TOPIC" --profile bench --events "$EVENTS" \
    --customers "$CUSTOMERS" --seed "$SEED" --stats 2>"$WORK/loadgen.log" ||
    die "journey-loadgen failed (see $WORK/loadgen.log)"

flush_all() {
    redis-cli -p "$SINGLE" flushall sync >/dev/null
    for n in "${NODES[@]}"; do redis-cli -p "${n#*:}" flushall sync >/dev/null; done
}

# run NAME REDIS_ADDRS GROUP: sets RATE and REDIRECTS
run() {
    local name=$1 addrs=$2 group=$3 mport result pid conf
    conf="$WORK/config-$group"
    mkdir -p "$conf"
    cp -r "$ROOT/config/." "$conf/"
    sed -i "s/group_id = \"journeyd\"/group_id = \"$group\"/" "$conf/journeyd.conf"
    grep -q "group_id = \"$group\"" "$conf/journeyd.conf" || die "could not set the group in $conf"
    mport=$(free_port)
    "$BUILD/journeyd" -c "$conf/journeyd.conf" -b "$BOOTSTRAP" -r "$addrs" --metrics-port "$mport" \
        >"$WORK/journeyd-$group.log" 2>&1 &
    pid=$!
    wait_for 30 "journeyd's /metrics" bash -c "kill -0 $pid && curl -fsS http://127.0.0.1:$mport/metrics"
    result=$("$PY" "$ROOT/bench/kafka_probe.py" drain -b "$BOOTSTRAP" -t "$TOPIC" -g "$group" \
        --metrics "http://127.0.0.1:$mport/metrics" --timeout "$TIMEOUT") || true
    REDIRECTS=$(metric "$mport" journeyd_redis_redirects_total)
    kill -TERM "$pid"
    wait "$pid" || true
    RATE=NA
    if [ -n "$result" ] && [ "$(json_field "$result" complete)" = True ]; then
        RATE=$(json_field "$result" events_per_s)
    fi
    log "$name: $result (redirects $REDIRECTS)"
}

BEST_SINGLE=0 BEST_CLUSTER=0 ALL_REDIRECTS=0
for ((r = 1; r <= RUNS; r++)); do
    flush_all
    run "single run $r" "127.0.0.1:$SINGLE" "bench-single-$r"
    [ "$RATE" != NA ] && BEST_SINGLE=$("$PY" -c "print(max($BEST_SINGLE, $RATE))")
    flush_all
    run "cluster run $r" "$SEEDS" "bench-cluster-$r"
    [ "$RATE" != NA ] && BEST_CLUSTER=$("$PY" -c "print(max($BEST_CLUSTER, $RATE))")
    ALL_REDIRECTS=$((ALL_REDIRECTS + REDIRECTS))
done
log "logs: $WORK"
echo "single_events_per_s=$BEST_SINGLE cluster_events_per_s=$BEST_CLUSTER cluster_redirects=$ALL_REDIRECTS"
