#!/usr/bin/env bash
# Instructions per request in the Portcullis process, counted by valgrind's callgrind: a deterministic figure for
# comparing two builds of the keep-alive paths (h1, h2, gRPC) on a noisy machine, where timed runs vary by 10-20 %.
# It counts user-space instructions only (the kernel's share, about half the CPU time, is not in it) and says
# nothing about NGINX or HAProxy: the figures in BENCHMARKS.md come from run.sh.
#
#   bench/callgrind.sh                            # h1 h2 grpc, target/release/portcullis
#   PORTCULLIS=/tmp/old-portcullis bench/callgrind.sh
#
# Environment (defaults in brackets):
#   FIGURES ["h1 h2 grpc"]   CONNS [10] keep-alive connections   WARMUP [8] seconds before counting
#   WINDOW [30] seconds counted   PORTCULLIS [target/release/portcullis]   WORK [bench/work-callgrind]
#
# How: run.sh sets up certificates, the origins' ports and Portcullis' data directory (one short h1 round); then
# Portcullis is started again on that data directory under callgrind, and for each figure a loadgen run is
# started; after WARMUP (handshakes, pool warm-up) the counters are zeroed, and after WINDOW they are dumped. The
# requests in the window come from portcullis_requests_total, read just before and after each callgrind command
# (the midpoints are used). Prints one line per figure and writes WORK/callgrind.json.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
WORK=${WORK:-$BENCH/work-callgrind}
FIGURES=${FIGURES:-"h1 h2 grpc"}
CONNS=${CONNS:-10}
WARMUP=${WARMUP:-8}
WINDOW=${WINDOW:-30}
PORTCULLIS=${PORTCULLIS:-$REPO/target/release/portcullis}
BASE_PORT=${BASE_PORT:-19400}
ORIGIN_PORT=$((BASE_PORT + 80))
PC_PORT=$((BASE_PORT + 43))
PC_ADMIN_PORT=$((BASE_PORT + 81))
GRPC_ORIGIN_PORT=$((BASE_PORT + 82))
LOADGEN="$BENCH/target/release/loadgen"

log() { printf '[callgrind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || die "valgrind is not installed (apt-get install valgrind)"

STARTED=()
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${STARTED[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

log "setting up with run.sh (one short h1 round against Portcullis)"
FIGURES=h1 PROXIES=portcullis RUNS=1 DURATION=1 WORK="$WORK" RESULTS_DIR="$WORK" PORTCULLIS="$PORTCULLIS" \
    BASE_PORT="$BASE_PORT" "$BENCH/run.sh" >"$WORK.setup.log" 2>&1 || { tail -20 "$WORK.setup.log" >&2; die "run.sh failed"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # wait_port PORT SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
    return 1
}

"$LOADGEN" origin --listen "127.0.0.1:$ORIGIN_PORT" >"$WORK/logs/cg-origin.log" 2>&1 &
STARTED+=("$!")
"$LOADGEN" origin --grpc --listen "127.0.0.1:$GRPC_ORIGIN_PORT" >"$WORK/logs/cg-grpc-origin.log" 2>&1 &
STARTED+=("$!")
wait_port "$ORIGIN_PORT" 10 && wait_port "$GRPC_ORIGIN_PORT" 10 || die "origins did not start"

OUT="$WORK/callgrind"
rm -rf "$OUT"; mkdir -p "$OUT"
# The same serve arguments as run.sh. Callgrind runs the threads one at a time, so the edge thread count does not
# change the instructions per request; one edge thread, as in the benchmark.
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" --dump-instr=no \
    "$PORTCULLIS" --log-format text serve --data-dir "$WORK/portcullis-data" --edge-threads 1 \
    --listen "127.0.0.1:$PC_PORT" --admin-listen "127.0.0.1:$PC_ADMIN_PORT" \
    --max-connections 30000 --idle-timeout 600 >"$WORK/logs/cg-portcullis.log" 2>&1 &
PC_PID=$!; STARTED+=("$PC_PID")
wait_port "$PC_PORT" 300 || { tail -20 "$WORK/logs/cg-portcullis.log" >&2; die "portcullis did not start under valgrind"; }

requests() {
    curl -sf --max-time 60 "http://127.0.0.1:$PC_ADMIN_PORT/metrics" |
        awk '/^portcullis_requests_total[{ ]/ { n += $NF } END { printf "%d\n", n }'
}

# Runs CMD on callgrind and prints the request count halfway between before and after it.
around() { # around CALLGRIND-OPTION
    local a b
    a=$(requests)
    callgrind_control "$1" "$PC_PID" >/dev/null
    b=$(requests)
    echo $(((a + b) / 2))
}

c="$WORK/certs/ecdsa"
RESULTS=()
for fig in $FIGURES; do
    case $fig in
        h1) args=(--mode keepalive --http 1 --sni bench.local) ;;
        h2) args=(--mode keepalive --http 2 --sni bench.local) ;;
        grpc) args=(--mode grpc --sni grpc.bench.local) ;;
        *) die "unknown figure $fig (h1, h2, grpc)" ;;
    esac
    "$LOADGEN" run --connect "127.0.0.1:$PC_PORT" --ca "$c/ca.pem" --cert "$c/client.pem" --key "$c/client.key" \
        --connections "$CONNS" --duration $((WARMUP + WINDOW + 30)) "${args[@]}" \
        --out "$OUT/$fig.loadgen.json" >/dev/null 2>>"$WORK/logs/cg-loadgen.err" &
    lg=$!; STARTED+=("$lg")
    sleep "$WARMUP"
    r0=$(around -z)
    sleep "$WINDOW"
    before=$(ls "$OUT" | grep -c '^callgrind.out' || true)
    r1=$(around -d)
    kill "$lg" 2>/dev/null || true; wait "$lg" 2>/dev/null || true
    dump=$(ls -t "$OUT"/callgrind.out.* | head -1)
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
    n=$((r1 - r0))
    ((n > 0)) || die "$fig: no requests counted in the window (is loadgen failing? see $WORK/logs/cg-loadgen.err)"
    per=$((ir / n))
    log "$fig: $per instructions per request ($ir over $n requests, $CONNS connections; dump $dump, $before before)"
    RESULTS+=("{\"figure\":\"$fig\",\"instructions_per_request\":$per,\"instructions\":$ir,\"requests\":$n,\"connections\":$CONNS}")
    sleep 2
done
printf '%s\n' "${RESULTS[@]}" | jq -s --arg bin "$PORTCULLIS" '{portcullis: $bin, figures: .}' >"$WORK/callgrind.json"
log "results: $WORK/callgrind.json"
