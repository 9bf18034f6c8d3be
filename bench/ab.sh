#!/usr/bin/env bash
# Two builds of Portcullis, timed against each other: requests per proxy CPU-second on one keep-alive figure, the
# builds alternated round by round on the same machine, so that drifts in the machine's speed hit both. For a
# change that callgrind.sh says saves instructions, this says whether it saves time. NGINX and HAProxy are not
# involved: the figures in BENCHMARKS.md come from run.sh.
#
#   bench/ab.sh /tmp/old-portcullis target/release/portcullis
#
# Environment (defaults in brackets):
#   FIGURE [h2] (h1, h2, grpc)   ROUNDS [4]   CONNS [50]   DURATION [8] seconds per run
#   WORK [bench/work-callgrind] (set up by callgrind.sh or run.sh: certificates and a data directory)
#
# Each run: the build pinned to core 0 on WORK's data directory, loadgen and the origins on core 1; the proxy's
# utime and stime from /proc/<pid>/stat around the loadgen run. Prints, per round, each build's requests per
# CPU-second, its user and kernel µs per request and its p99 latency, and B ÷ A; the order of A and B swaps every
# round. The user µs move less than the totals from round to round (the kernel's part, loopback TCP, is most of the
# noise), and a change to Portcullis' code shows there first.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
A=${1:?usage: bench/ab.sh BUILD_A BUILD_B}
B=${2:?usage: bench/ab.sh BUILD_A BUILD_B}
FIGURE=${FIGURE:-h2}
ROUNDS=${ROUNDS:-4}
CONNS=${CONNS:-50}
DURATION=${DURATION:-8}
WORK=${WORK:-$BENCH/work-callgrind}
# The ports callgrind.sh set up: the data directory names the origins by them.
BASE_PORT=${BASE_PORT:-19400}
LOADGEN="$BENCH/target/release/loadgen"
ORIGIN_PORT=$((BASE_PORT + 80)); PC_PORT=$((BASE_PORT + 43)); PC_ADMIN_PORT=$((BASE_PORT + 81))
GRPC_ORIGIN_PORT=$((BASE_PORT + 82))

die() { echo "ab: $*" >&2; exit 1; }
[[ -x $A && -x $B ]] || die "both builds must be executables"
[[ -x $LOADGEN ]] || die "build the load generator first (cd bench/loadgen && cargo build --release)"
[[ -d $WORK/portcullis-data && -d $WORK/certs ]] || die "no setup in $WORK: run bench/callgrind.sh once"
case $FIGURE in
    h1) args=(--mode keepalive --http 1 --sni bench.local) ;;
    h2) args=(--mode keepalive --http 2 --sni bench.local) ;;
    grpc) args=(--mode grpc --sni grpc.bench.local) ;;
    *) die "unknown figure $FIGURE (h1, h2, grpc)" ;;
esac

STARTED=()
cleanup() { for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

taskset -c 1 "$LOADGEN" origin --listen "127.0.0.1:$ORIGIN_PORT" >/dev/null 2>&1 & STARTED+=("$!")
taskset -c 1 "$LOADGEN" origin --grpc --listen "127.0.0.1:$GRPC_ORIGIN_PORT" >/dev/null 2>&1 & STARTED+=("$!")
c="$WORK/certs/ecdsa"
cpu() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
run() { # run BUILD -> "REQUESTS-PER-CPU-SECOND USER-µs KERNEL-µs P99-MS" (per request)
    local pc n u0 s0 u1 s1
    RUST_LOG=warn taskset -c 0 "$1" --log-format text serve --data-dir "$WORK/portcullis-data" \
        --listen "127.0.0.1:$PC_PORT" --admin-listen "127.0.0.1:$PC_ADMIN_PORT" \
        --max-connections 30000 --idle-timeout 600 >"$WORK/logs/ab-portcullis.log" 2>&1 &
    pc=$!
    for _ in $(seq 100); do port_open "$PC_PORT" && break; sleep 0.1; done
    port_open "$PC_PORT" || die "$1 did not start (see $WORK/logs/ab-portcullis.log)"
    sleep 1
    read -r u0 s0 < <(cpu "$pc")
    taskset -c 1 "$LOADGEN" run --connect "127.0.0.1:$PC_PORT" --ca "$c/ca.pem" --cert "$c/client.pem" \
        --key "$c/client.key" --connections "$CONNS" --duration "$DURATION" "${args[@]}" \
        --out "$WORK/ab.json" >/dev/null 2>>"$WORK/logs/ab-loadgen.err"
    read -r u1 s1 < <(cpu "$pc")
    kill "$pc"; wait "$pc" 2>/dev/null || true
    n=$(jq '.requests' "$WORK/ab.json")
    ((u1 + s1 > u0 + s0 && n > 0)) || die "no requests or no CPU time measured"
    awk -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" -v p99="$(jq '.p99_ms' "$WORK/ab.json")" \
        'BEGIN { printf "%d %.2f %.2f %s\n", n * hz / (u + s), u * 1e6 / hz / n, s * 1e6 / hz / n, p99 }'
}
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then a=($(run "$A")); b=($(run "$B")); else b=($(run "$B")); a=($(run "$A")); fi
    printf '%s round %d: A %d, B %d per proxy CPU-second, B/A %s; µs per request user + kernel: A %s + %s, B %s + %s; p99 ms: A %s, B %s\n' \
        "$FIGURE" "$r" "${a[0]}" "${b[0]}" "$(awk -v a="${a[0]}" -v b="${b[0]}" 'BEGIN { printf "%.3f", b / a }')" \
        "${a[1]}" "${a[2]}" "${b[1]}" "${b[2]}" "${a[3]}" "${b[3]}"
done
