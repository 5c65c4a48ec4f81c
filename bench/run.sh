#!/usr/bin/env bash
# bench/run.sh — the throughput benchmark of issue 7, rerunnable by anyone:
#   builds a Release tree (build-bench/), starts redis-server and
#   journey-devbroker (PARTITIONS partitions) on loopback, preloads EVENTS
#   touchpoints over CUSTOMERS customers with journey-loadgen --profile bench,
#   then measures in the same run:
#     (a) a bare kcat consumer draining the topic (best of KCAT_RUNS): the ceiling;
#     (b) journeyd (processing.engines = ENGINES, default one per core) from
#         its first consumed event to the last offset committed (commits
#         follow persisted state and delivered triggers), best of JD_RUNS,
#         each on a fresh Redis and consumer group; (a) and (b) take turns;
#     (c) journeyd with processing.naive = true (one synchronous Redis round
#         trip per event) over the first NAIVE_EVENTS events;
#     (d) an open-loop run at LAT_RATE events/s (journey-loadgen --live: occurred_at
#         is the send time) on fresh topics: p50/p99/p99.9 from the source event's
#         send time to each trigger's arrival at a consumer (kafka_probe.py latency;
#         triggers deferred by quiet hours are counted apart, not measured),
#         cross-checked with journeyd_event_to_trigger_seconds;
#     (e) Redis used_memory per customer and journeyd RSS per cached customer
#         after each run of (b) (the largest of them).
# The last line is exactly:
#   journeyd_events_per_s=N kcat_events_per_s=M ratio=R naive_events_per_s=K
#   p99_event_to_trigger_ms=L redis_bytes_per_customer=B
# (NA where a figure could not be measured).
#
# Environment: EVENTS (1000000), CUSTOMERS (100000), PARTITIONS (32), SEED (1),
# NAIVE_EVENTS (200000), KCAT_RUNS (3), JD_RUNS (3), TIMEOUT per drain in s (600),
# LAT_RATE (10000), LAT_EVENTS (30000), LAT_PARTITIONS (4), PRELOAD_LINGER_MS (100),
# ENGINES (processing.engines of every journeyd run; default: nproc, one per core),
# BUILD_DIR (build-bench), CMAKE_ARGS (extra cmake -D options), PERF_OUT (a file:
# `perf record -e cpu-clock -g` of journeyd during the first run of (b), for
# `perf report -i`). The mock broker keeps only the newest ~60,000 messages per
# partition: keep EVENTS <= PARTITIONS * 60000.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
EVENTS=${EVENTS:-1000000}
CUSTOMERS=${CUSTOMERS:-100000}
PARTITIONS=${PARTITIONS:-32}
SEED=${SEED:-1}
NAIVE_EVENTS=${NAIVE_EVENTS:-200000}
KCAT_RUNS=${KCAT_RUNS:-3}
JD_RUNS=${JD_RUNS:-3}
TIMEOUT=${TIMEOUT:-600}
LAT_RATE=${LAT_RATE:-10000}
LAT_EVENTS=${LAT_EVENTS:-30000}
LAT_PARTITIONS=${LAT_PARTITIONS:-4}
ENGINES=${ENGINES:-$(nproc)}
PY=/usr/bin/python3
TOPIC=touchpoints

WORK=$(mktemp -d "${TMPDIR:-/tmp}/journeyd-bench.XXXXXX")
PID_REDIS='' PID_BROKER='' PID_JD='' PID_PROBE=''
STATUS=1

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

stop_pid() { # PID GRACE_SECONDS NAME; sets STOP_RC to the exit status
    local pid=$1 grace=$2 name=$3 i
    STOP_RC=0
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "bench: $name did not stop within ${grace}s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || STOP_RC=$?
}

cleanup() {
    local rc=$?
    set +e
    stop_pid "$PID_JD" 30 journeyd
    stop_pid "$PID_PROBE" 5 kafka_probe
    stop_pid "$PID_BROKER" 10 journey-devbroker
    stop_pid "$PID_REDIS" 10 redis-server
    # on success the figures line stays the last line
    if [ "$rc" -ne 0 ] || [ "$STATUS" -ne 0 ]; then
        echo "bench: failed; logs are in $WORK" >&2
    fi
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

now_ns() { date +%s%N; }
# user + system CPU of a process, in clock ticks (/proc/PID/stat fields 14, 15)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
ticks_s() { "$PY" -c "import os, sys; print('%.2f' % (int(sys.argv[1]) / os.sysconf('SC_CLK_TCK')))" "$1"; }
redis_used() { redis-cli -p "$REDIS_PORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status"; }
metric() { # METRICS_PORT NAME: sum over label sets
    curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }'
}
# LOG: ms between the first and the last "assigned" line of a journeyd text log
assign_spread_ms() {
    awk '$3 == "rebalance" && / assigned / {
            split(substr($1, 12, 12), t, ":"); ms = (t[1] * 3600 + t[2] * 60 + t[3]) * 1000
            if (n++ == 0) first = ms; last = ms }
         END { printf "%d\n", n ? last - first : 0 }' "$1"
}
json_field() { "$PY" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# A copy of config/ (schemas beside it, so relative paths still resolve) with
# its own consumer group, processing.naive and processing.engines (ENGINES) set.
make_config() { # DIR GROUP NAIVE(true|false) [BLOCK.KEY=VALUE...]
    mkdir -p "$1"
    cp -r "$ROOT/config/." "$1/"
    "$PY" - "$1/journeyd.conf" "$2" "$3" "$ENGINES" "${@:4}" <<'EOF'
import re, sys
path, group, naive, engines = sys.argv[1:5]
text = open(path).read()
def setting(text, block, key, value):
    """Sets key inside `block = { ... }`: replaces it, or inserts it first."""
    m = re.search(r"^\s*%s\s*[=:]\s*\{" % block, text, re.M)
    if not m:
        return text + "\n%s = { %s = %s; };\n" % (block, key, value)
    end = text.index("\n};", m.end()) if "\n};" in text[m.end():] else len(text)
    body = text[m.end():end]
    kv = re.compile(r"^(\s*)%s\s*[=:][^;]*;" % key, re.M)
    if kv.search(body):
        body = kv.sub(lambda k: "%s%s = %s;" % (k.group(1), key, value), body, count=1)
    else:
        body = "\n  %s = %s;" % (key, value) + body
    return text[:m.end()] + body + text[end:]
text = setting(text, "kafka", "group_id", '"%s"' % group)
text = setting(text, "processing", "naive", naive)
text = setting(text, "processing", "engines", engines)
for extra in sys.argv[5:]:
    name, value = extra.split("=", 1)
    block, key = name.split(".", 1)
    text = setting(text, block, key, value)
open(path, "w").write(text)
EOF
    "$BUILD/journeyd" --check -c "$1/journeyd.conf" >"$1/check.log" 2>&1 ||
        die "the benchmark config $1/journeyd.conf does not check (see $1/check.log)"
}

# run_journeyd NAME CONFIG_DIR GROUP EVENTS [PERF]: runs journeyd until GROUP has
# committed EVENTS events (0: all); sets RUN_RATE, RUN_RSS_KB, RUN_RSS0_KB, RUN_CACHED,
# RUN_CMEM (journeyd_customer_memory_bytes); PERF 1: `perf record` of it into PERF_OUT.
run_journeyd() {
    local name=$1 dir=$2 group=$3 events=$4 perf=${5:-0} mport result
    mport=$(free_port)
    "$BUILD/journeyd" -c "$dir/journeyd.conf" -b "$BOOTSTRAP" -r "127.0.0.1:$REDIS_PORT" \
        --metrics-port "$mport" >"$WORK/journeyd-$name.log" 2>&1 &
    PID_JD=$!
    wait_for 30 "journeyd's /metrics" bash -c "kill -0 $PID_JD && curl -fsS http://127.0.0.1:$mport/metrics"
    RUN_RSS0_KB=$(rss_kb "$PID_JD")
    local c0_jd c0_redis c0_broker
    c0_jd=$(cpu_ticks "$PID_JD") c0_redis=$(cpu_ticks "$PID_REDIS") c0_broker=$(cpu_ticks "$PID_BROKER")
    local pid_perf=''
    if [ -n "${PERF_OUT:-}" ] && [ "$perf" -eq 1 ]; then
        perf record -e cpu-clock -g -p "$PID_JD" -o "$PERF_OUT" >"$WORK/perf.log" 2>&1 &
        pid_perf=$!
    fi
    result=$("$PY" "$ROOT/bench/kafka_probe.py" drain -b "$BOOTSTRAP" -t "$TOPIC" -g "$group" \
        --metrics "http://127.0.0.1:$mport/metrics" --events "$events" --timeout "$TIMEOUT") || true
    [ -z "$pid_perf" ] || { kill -INT "$pid_perf" 2>/dev/null; wait "$pid_perf" 2>/dev/null || true; }
    log "journeyd ($name): $result"
    log "CPU seconds during the run ($name): journeyd $(ticks_s $(($(cpu_ticks "$PID_JD") - c0_jd)))" \
        "redis $(ticks_s $(($(cpu_ticks "$PID_REDIS") - c0_redis)))" \
        "broker $(ticks_s $(($(cpu_ticks "$PID_BROKER") - c0_broker)))"
    kill -0 "$PID_JD" 2>/dev/null || die "journeyd ($name) exited during the run (see $WORK/journeyd-$name.log)"
    # memory once idle: an idle engine gives its transient buffers (fetched
    # messages, pipeline buffers) back within 2 s (engine_mem.c)
    sleep 3
    RUN_RSS_KB=$(rss_kb "$PID_JD")
    RUN_CACHED=$(metric "$mport" journeyd_cached_customers)
    RUN_CMEM=$(metric "$mport" journeyd_customer_memory_bytes)
    RUN_RATE=NA
    if [ -n "$result" ] && [ "$(json_field "$result" complete)" = True ]; then
        RUN_RATE=$(json_field "$result" events_per_s)
    fi
    stop_pid "$PID_JD" 60 journeyd
    PID_JD=''
    [ "$STOP_RC" -eq 0 ] || log "journeyd ($name) exited with $STOP_RC after SIGTERM"
}

for tool in cmake redis-server redis-cli kcat curl; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

log "building (Release) into $BUILD"
# shellcheck disable=SC2086
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >"$WORK/build.log" 2>&1 ||
    die "cmake configure failed (see $WORK/build.log)"
TARGETS="journey-devbroker journey-loadgen"
HAVE_JOURNEYD=0
if [ -f "$ROOT/daemon/journeyd.c" ]; then
    TARGETS="$TARGETS journeyd"
    HAVE_JOURNEYD=1
fi
# shellcheck disable=SC2086
cmake --build "$BUILD" -j2 --target $TARGETS >>"$WORK/build.log" 2>&1 || die "build failed (see $WORK/build.log)"

REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK" --save '' --appendonly no \
    --logfile "$WORK/redis.log" &
PID_REDIS=$!
wait_for 10 "redis-server" redis-cli -p "$REDIS_PORT" ping
"$BUILD/journey-devbroker" --bootstrap-file "$WORK/bootstrap" --topic "$TOPIC:$PARTITIONS" \
    --topic "loyalty.rewards:$PARTITIONS" --topic "loyalty.reengagement:$PARTITIONS" \
    --topic touchpoints.dlq:4 --topic loyalty.suppressed:4 \
    --topic "touchpoints.live:$LAT_PARTITIONS" --topic "loyalty.rewards.live:$LAT_PARTITIONS" \
    --topic "loyalty.reengagement.live:$LAT_PARTITIONS" \
    </dev/null >"$WORK/devbroker.out" 2>"$WORK/devbroker.log" &
PID_BROKER=$!
wait_for 10 "journey-devbroker" test -s "$WORK/bootstrap"
BOOTSTRAP=$(head -n 1 "$WORK/bootstrap")
log "redis 127.0.0.1:$REDIS_PORT, kafka $BOOTSTRAP ($PARTITIONS partitions), $(nproc) cores, journeyd with processing.engines = $ENGINES"

log "preloading $EVENTS events over $CUSTOMERS customers"
# PRELOAD_LINGER_MS (100): the preload's record batches. The mock broker finds
# a fetch's offset by walking the partition's batches one by one (librdkafka
# 2.0.2, rd_kafka_mock_msgset_find; a real broker has an offset index), so
# loadgen's default linger of 5 ms (small batches, tens of events) made the broker
# spend ~1 CPU s of a 4 s drain walking, on the cores journeyd and kcat run
# on. Batches of ~1,000 events: ~0.15 s (docs/performance.md, "Ninth pass").
"$BUILD/journey-loadgen" -b "$BOOTSTRAP" -t "$TOPIC" --profile bench --events "$EVENTS" \
    --customers "$CUSTOMERS" --seed "$SEED" -X "linger.ms=${PRELOAD_LINGER_MS:-100}" \
    --stats 2>"$WORK/loadgen.log" ||
    die "journey-loadgen failed (see $WORK/loadgen.log)"
log "$(grep -m1 'events_per_s=' "$WORK/loadgen.log")"
TOUCHED=$(sed -n 's/.* customers=\([0-9]*\).*/\1/p' "$WORK/loadgen.log" | head -n 1)
HELD=$("$PY" "$ROOT/bench/kafka_probe.py" messages -b "$BOOTSTRAP" -t "$TOPIC")
[ "$HELD" -eq "$EVENTS" ] ||
    die "the topic holds $HELD of $EVENTS events (the mock broker keeps ~60000 per partition)"

# (a) the ceiling: a bare consumer, nothing done per message but printing its
# offset. One run; KCAT_RATE keeps the best.
kcat_run() { # RUN
    local t0 t1 n rate
    t0=$(now_ns)
    n=$(kcat -C -b "$BOOTSTRAP" -t "$TOPIC" -o beginning -e -q -f '%o\n' 2>"$WORK/kcat.log" | wc -l)
    t1=$(now_ns)
    [ "$n" -eq "$EVENTS" ] || die "kcat read $n of $EVENTS events (see $WORK/kcat.log)"
    rate=$((n * 1000000000 / (t1 - t0)))
    log "kcat run $1: $n events in $(((t1 - t0) / 1000000)) ms = $rate events/s"
    if [ "$rate" -gt "$KCAT_RATE" ]; then KCAT_RATE=$rate; fi
    KCAT_ALL="$KCAT_ALL $rate"
}

# (b) journeyd as designed, one drain on a fresh Redis and group, and (e) its
# memory after it; JD_RATE keeps the best drain, REDIS_BPC and RSS_BPC the
# largest figures. With two or more engines the mock broker's group can lose
# a race at its first sync (docs/performance.md, "The mock broker's sync
# race"): the member whose SyncGroup arrives after the leader's is told to
# rejoin, and the group then waits a session timeout (~10 s) with its
# partitions unowned, while the others' commits fail with "rebalance in
# progress". A drain whose partitions were first assigned more than 2 s apart
# saw it: it is logged and made again (at most twice more) on a fresh Redis
# and group, since it measures the mock broker, not journeyd. A drain that
# does not complete makes the figure NA.
jd_run() { # RUN
    local run=$1 try spread mem0 mem1 bpc perf=0
    if [ "$run" -eq 1 ]; then perf=1; fi # (PERF_OUT: the first drain)
    for ((try = 1; try <= 3; try++)); do
        redis-cli -p "$REDIS_PORT" flushall sync >/dev/null
        make_config "$WORK/config-fast" "journeyd-bench-$run-$try" false
        mem0=$(redis_used)
        run_journeyd fast "$WORK/config-fast" "journeyd-bench-$run-$try" 0 "$perf"
        cp "$WORK/journeyd-fast.log" "$WORK/journeyd-fast-run$run.log"
        spread=$(assign_spread_ms "$WORK/journeyd-fast.log")
        [ "$spread" -gt 2000 ] || break
        cp "$WORK/journeyd-fast.log" "$WORK/journeyd-fast-run$run-try$try.log"
        log "journeyd (fast): its partitions were assigned over $spread ms (the mock broker's" \
            "sync race: $WORK/journeyd-fast-run$run-try$try.log)$( ((try < 3)) && echo '; made again')"
    done
    JD_ALL="$JD_ALL $RUN_RATE"
    if [ "$RUN_RATE" = NA ]; then
        JD_INCOMPLETE=1
    elif [ "$JD_RATE" = NA ] || [ "$RUN_RATE" -gt "$JD_RATE" ]; then
        JD_RATE=$RUN_RATE
    fi
    mem1=$(redis_used)
    bpc=$(((mem1 - mem0) / TOUCHED))
    log "redis used_memory $mem0 -> $mem1 bytes over $TOUCHED customers = $bpc bytes/customer"
    if [ "$REDIS_BPC" = NA ] || [ "$bpc" -gt "$REDIS_BPC" ]; then REDIS_BPC=$bpc; fi
    if [ "${RUN_CACHED:-0}" -gt 0 ]; then
        bpc=$(((RUN_RSS_KB - RUN_RSS0_KB) * 1024 / RUN_CACHED))
        log "journeyd RSS ${RUN_RSS0_KB} kB at start -> ${RUN_RSS_KB} kB with $RUN_CACHED cached customers" \
            "= $bpc bytes/cached customer (of which the customers' pools: $((${RUN_CMEM:-0} / RUN_CACHED)))"
        if [ "$RSS_BPC" = NA ] || [ "$bpc" -gt "$RSS_BPC" ]; then RSS_BPC=$bpc; fi
    else
        log "journeyd RSS ${RUN_RSS0_KB} kB at start -> ${RUN_RSS_KB} kB (journeyd_cached_customers not reported)"
    fi
}

# (a) and (b) take turns, kcat first, so that both sample the same minutes of
# this shared machine (its speed moves by tens of % from minute to minute);
# each figure is the best of its runs.
KCAT_RATE=0 KCAT_ALL='' JD_ALL='' JD_INCOMPLETE=0 RSS_BPC=NA
JD_RATE=NA NAIVE_RATE=NA REDIS_BPC=NA P99=NA
if [ "$HAVE_JOURNEYD" -ne 1 ]; then JD_RUNS=0; fi
for ((run = 1; run <= KCAT_RUNS || run <= JD_RUNS; run++)); do
    if [ "$run" -le "$KCAT_RUNS" ]; then kcat_run "$run"; fi
    if [ "$run" -le "$JD_RUNS" ]; then jd_run "$run"; fi
done
if [ "$JD_INCOMPLETE" -ne 0 ]; then JD_RATE=NA; fi
log "drains, events/s: kcat$KCAT_ALL; journeyd$JD_ALL (best of each: $KCAT_RATE, $JD_RATE);" \
    "largest memory figures: Redis $REDIS_BPC, journeyd RSS $RSS_BPC bytes per customer"

if [ "$HAVE_JOURNEYD" -eq 1 ]; then
    # (d) latency, open loop, on topics nothing else wrote to: the mock broker
    # looks a fetch offset up by walking the partition's message sets from the
    # start, so a long log of small sets slows every fetch. Every customer
    # starts fresh (Redis flushed). fetch.wait.max.ms = 1: the mock broker
    # answers a fetch that finds no data only after the full wait (a real
    # broker answers as soon as data arrives), which would add up to 10 ms.
    # Everything else is the shipped config. The event source (journey-loadgen)
    # produces with linger.ms = 1 instead of its throughput default of 5: the
    # figure starts at the send call, so the source's own linger counts in it;
    # linger 0 would make the mock broker slow (a message set per message,
    # walked on every fetch).
    redis-cli -p "$REDIS_PORT" flushall sync >/dev/null
    make_config "$WORK/config-live" journeyd-bench-live false \
        'kafka.input_topics=[ "touchpoints.live" ]' 'kafka.rewards_topic="loyalty.rewards.live"' \
        'kafka.reengagement_topic="loyalty.reengagement.live"' \
        'kafka.properties=( ( "statistics.interval.ms", "5000" ), ( "fetch.wait.max.ms", "1" ) )'
    rm -f "$WORK/latency.done"
    "$PY" "$ROOT/bench/kafka_probe.py" latency -b "$BOOTSTRAP" \
        -t loyalty.rewards.live,loyalty.reengagement.live --schema "$ROOT/config/schemas/trigger.avsc" \
        --done "$WORK/latency.done" --dump "$WORK/latency.ms" >"$WORK/latency.out" 2>"$WORK/latency.log" &
    PID_PROBE=$!
    mport=$(free_port)
    "$BUILD/journeyd" -c "$WORK/config-live/journeyd.conf" -b "$BOOTSTRAP" -r "127.0.0.1:$REDIS_PORT" \
        --metrics-port "$mport" >"$WORK/journeyd-live.log" 2>&1 &
    PID_JD=$!
    # (every partition owned: with the mock broker's sync race, above, the
    # engines are ready before the group has settled)
    wait_for 60 "journeyd (live) to be ready, own its $LAT_PARTITIONS partitions, and the probe positioned" \
        bash -c "curl -fsS http://127.0.0.1:$mport/readyz >/dev/null &&
            [ \"\$(curl -fsS http://127.0.0.1:$mport/metrics | awk '\$1 == \"journeyd_assigned_partitions\" { print \$2 }')\" = $LAT_PARTITIONS ] &&
            grep -q ready $WORK/latency.out"
    l0_jd=$(cpu_ticks "$PID_JD") l0_redis=$(cpu_ticks "$PID_REDIS") l0_broker=$(cpu_ticks "$PID_BROKER")
    "$BUILD/journey-loadgen" -b "$BOOTSTRAP" -t touchpoints.live --profile bench --live \
        --rate "$LAT_RATE" --events "$LAT_EVENTS" --customers "$CUSTOMERS" --seed "$((SEED + 1))" \
        -X linger.ms=1 --stats 2>"$WORK/loadgen-live.log" || die "journey-loadgen --live failed (see $WORK/loadgen-live.log)"
    log "$(grep -m1 'events_per_s=' "$WORK/loadgen-live.log")"
    # (the mock broker answers every fetch and produce on one thread of
    # these two cores: ~0.8 CPU s in this run, as much as journeyd)
    log "CPU seconds during the run (live): journeyd $(ticks_s $(($(cpu_ticks "$PID_JD") - l0_jd)))" \
        "redis $(ticks_s $(($(cpu_ticks "$PID_REDIS") - l0_redis)))" \
        "broker $(ticks_s $(($(cpu_ticks "$PID_BROKER") - l0_broker)))"
    touch "$WORK/latency.done"
    wait "$PID_PROBE" || true
    PID_PROBE=''
    LAT=$(tail -n 1 "$WORK/latency.out")
    log "latency at $LAT_RATE events/s, event sent -> trigger received: $LAT"
    curl -fsS "http://127.0.0.1:$mport/metrics" >"$WORK/metrics-live.txt" 2>/dev/null || true
    log "cross-check, journeyd_event_to_trigger_seconds (event sent -> trigger acknowledged):" \
        "$("$PY" "$ROOT/bench/kafka_probe.py" histogram "$WORK/metrics-live.txt" journeyd_event_to_trigger_seconds)"
    stop_pid "$PID_JD" 60 journeyd
    PID_JD=''
    P99=$(json_field "$LAT" p99_ms 2>/dev/null || echo NA)
    [ "$P99" = None ] && P99=NA

    # (c) the naive baseline, on a fresh Redis and its own group
    redis-cli -p "$REDIS_PORT" flushall sync >/dev/null
    make_config "$WORK/config-naive" journeyd-bench-naive true
    [ "$NAIVE_EVENTS" -le "$EVENTS" ] || NAIVE_EVENTS=$EVENTS
    run_journeyd naive "$WORK/config-naive" journeyd-bench-naive "$NAIVE_EVENTS"
    NAIVE_RATE=$RUN_RATE
else
    log "daemon/journeyd.c is not there yet: (b), (c) and (e) are NA"
fi

RATIO=NA
if [ "$JD_RATE" != NA ] && [ "$KCAT_RATE" -gt 0 ]; then
    RATIO=$("$PY" -c "print('%.2f' % ($JD_RATE / $KCAT_RATE))")
fi
log "logs: $WORK"
STATUS=0
echo "journeyd_events_per_s=$JD_RATE kcat_events_per_s=$KCAT_RATE ratio=$RATIO naive_events_per_s=$NAIVE_RATE p99_event_to_trigger_ms=$P99 redis_bytes_per_customer=$REDIS_BPC"
