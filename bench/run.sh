#!/usr/bin/env bash
# Portcullis vs NGINX vs HAProxy under mTLS (issue 7). Sets everything up from scratch, runs, stops exactly what it
# started, and writes bench/results.md (markdown table) and bench/results.json.
#
#   bench/run.sh                      # full run: RUNS=3 rounds, DURATION=10 s per measurement
#   QUICK=1 bench/run.sh              # smoke test: 1 round, 3 s per measurement, 1,000 idle connections
#   FIGURES="full_ecdsa h1" PROXIES="nginx portcullis" bench/run.sh
#
# Environment (defaults in brackets):
#   RUNS [3; QUICK: 1]   DURATION [10; QUICK: 3] seconds per measurement
#   FIGURES ["full_ecdsa full_rsa resumed h1 h2 grpc idle rules"]   PROXIES ["nginx haproxy portcullis"]
#   HS_CONNS [16] concurrent connect-handshake-request loops for the handshake figures
#   KA_CONNS [50] keep-alive connections   IDLE_CONNS [10000; QUICK: 1000]   IDLE_HOLD [5] seconds
#   RULES [1000] rules for the "rules" figure   KX [x25519] key exchange offered by the client (x25519|p256|default)
#   PROXY_CPU [0] core for the proxy under test   LOAD_CPU [1] core for the load generator and the origin
#   PORTCULLIS [target/release/portcullis, built with `cargo build --release` when missing]
#   PC_ARGS: extra arguments for `portcullis serve`
#   BASE_PORT [19400]: origin BASE+80, gRPC origin BASE+82, NGINX BASE+41, HAProxy BASE+42, Portcullis BASE+43,
#     its admin API BASE+81
#   WORK [bench/work]: working directory (certificates, configs, logs, runs.jsonl); emptied at the start of a run
#   RESULTS_DIR [bench/ when WORK is not set, else WORK]: where results.md and results.json go
#   CROSSCHECK [0]: 1 also runs oha (h1, h2) and `openssl s_time -new` (full handshakes) against every proxy and
#     reports them in a separate table (oha is installed with `cargo install oha --locked --root bench/target/oha-bin`
#     when missing)   OHA [bench/target/oha-bin/bin/oha, else oha on PATH]   STIME_PROCS [2] parallel s_time processes
#   PROFILE [0]: 1 records every measurement of a proxy with `perf record -e cpu-clock -g` (linux-perf is installed
#     when missing) and writes WORK/perf/summary.md: each proxy's CPU split into the kernel's system calls and its
#     own code, and its hottest functions (bench/perfsplit.py). Sampling slows every proxy a little, so take the
#     ratios from a run without it.   PROFILE_FREQ [2000] samples per second
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
if [[ -n ${WORK:-} ]]; then
    RESULTS_DIR=${RESULTS_DIR:-$WORK}
else
    RESULTS_DIR=${RESULTS_DIR:-$BENCH}
fi
WORK=${WORK:-$BENCH/work}
W="$WORK"
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    RUNS=${RUNS:-1}; DURATION=${DURATION:-3}; IDLE_CONNS=${IDLE_CONNS:-1000}
else
    RUNS=${RUNS:-3}; DURATION=${DURATION:-10}; IDLE_CONNS=${IDLE_CONNS:-10000}
fi
FIGURES=${FIGURES:-"full_ecdsa full_rsa resumed h1 h2 grpc idle rules"}
PROXIES=${PROXIES:-"nginx haproxy portcullis"}
HS_CONNS=${HS_CONNS:-16}
KA_CONNS=${KA_CONNS:-50}
IDLE_HOLD=${IDLE_HOLD:-5}
RULES=${RULES:-1000}
KX=${KX:-x25519}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-19400}
ORIGIN_PORT=$((BASE_PORT + 80))
NGINX_PORT=$((BASE_PORT + 41))
HAPROXY_PORT=$((BASE_PORT + 42))
PC_PORT=$((BASE_PORT + 43))
PC_ADMIN_PORT=$((BASE_PORT + 81))
GRPC_ORIGIN_PORT=$((BASE_PORT + 82))
CROSSCHECK=${CROSSCHECK:-0}
STIME_PROCS=${STIME_PROCS:-2}
OHA=${OHA:-}
PROFILE=${PROFILE:-0}
PROFILE_FREQ=${PROFILE_FREQ:-2000}
PORTCULLIS=${PORTCULLIS:-$REPO/target/release/portcullis}
LOADGEN="$BENCH/target/release/loadgen"
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------------------------
# Processes: every one this script starts is recorded here and stopped on exit, by its own pid.
STARTED=()
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    STARTED=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The pid and its children (NGINX's master and worker).
proc_tree() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }

# utime and stime of a process tree, in clock ticks (/proc/PID/stat fields 14 and 15, counted after the ')'):
# prints "USER SYSTEM". They are kept apart because on loopback the kernel's share (TCP send and receive, waking
# the peer) is most of every proxy's time, and the user-space share is what a proxy's own code decides.
cpu_ticks() {
    local user=0 sys=0 pid rest
    for pid in $(proc_tree "$1"); do
        rest=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        # After "pid (comm) ", field 3 is the state, so utime/stime are the 12th and 13th words.
        set -- $rest
        user=$((user + ${12})); sys=$((sys + ${13}))
    done
    echo "$user $sys"
}

# cpu_json "U0 S0" "U1 S1": the CPU used between two cpu_ticks readings, in seconds, as JSON fields.
cpu_json() {
    local u0 s0 u1 s1
    read -r u0 s0 <<<"$1"; read -r u1 s1 <<<"$2"
    python3 -c "u, s = ($u1 - $u0) / $CLK_TCK, ($s1 - $s0) / $CLK_TCK; print(f'{{\"proxy_cpu_s\": {u + s}, \"proxy_user_s\": {u}, \"proxy_sys_s\": {s}}}')"
}

# Threads of a process tree.
threads() {
    local total=0 pid n
    for pid in $(proc_tree "$1"); do
        n=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${n:-0}))
    done
    echo "$total"
}

# Resident memory of a process tree in KiB.
rss_kib() {
    local total=0 pid kb
    for pid in $(proc_tree "$1"); do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# ---------------------------------------------------------------------------------------------------------------
# Setup: tools

install_peers() {
    local missing=()
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v jq >/dev/null 2>&1 || missing+=(jq)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    [[ $PROFILE != 1 ]] || command -v perf >/dev/null 2>&1 || missing+=(linux-perf)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} with apt-get (their services are not started)"
        local policy=/usr/sbin/policy-rc.d made_policy=0
        if [[ ! -e $policy ]]; then
            # Keep the packages' postinst scripts from starting system-wide nginx/haproxy services.
            printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1
        fi
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$W/apt.log" 2>&1; then
            apt-get update >>"$W/apt.log" 2>&1
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$W/apt.log" 2>&1 ||
                { [[ $made_policy == 1 ]] && rm -f "$policy"; die "apt-get install failed, see $W/apt.log"; }
        fi
        [[ $made_policy == 1 ]] && rm -f "$policy"
    fi
    export PATH="$PATH:/usr/sbin:/sbin"
    command -v python3 >/dev/null 2>&1 || die "python3 is needed for the report"
}

build_binaries() {
    if [[ ! -x $PORTCULLIS ]]; then
        log "building Portcullis (cargo build --release in $REPO)"
        (cd "$REPO" && nice cargo build --release --locked) || die "cargo build --release failed"
    fi
    log "building the load generator (bench/loadgen, target dir bench/target)"
    (cd "$BENCH/loadgen" && nice cargo build --release --target-dir "$BENCH/target") || die "building loadgen failed"
}

# ---------------------------------------------------------------------------------------------------------------
# Setup: certificates (ECDSA P-256 and RSA-2048: a CA, a server certificate and a client certificate each)

gen_key() { # gen_key ecdsa|rsa FILE  (PKCS#8)
    if [[ $1 == ecdsa ]]; then
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$2" 2>/dev/null
    else
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$2" 2>/dev/null
    fi
}

gen_leaf() { # gen_leaf DIR NAME CN EKU ["SAN1 SAN2 …"]
    local d=$1 name=$2 cn=$3 eku=$4 san=${5:-}
    gen_key "$(basename "$d")" "$d/$name.key"
    openssl req -new -key "$d/$name.key" -subj "/CN=$cn" -out "$d/$name.csr" 2>/dev/null
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$eku"
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid"
        [[ -n $san ]] && echo "subjectAltName=$(sed 's/[^ ]*/DNS:&/g; s/ /,/g' <<<"$san")"
    } >"$d/$name.ext"
    openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
        -days 825 -sha256 -extfile "$d/$name.ext" -out "$d/$name.pem" 2>/dev/null
    rm -f "$d/$name.csr" "$d/$name.ext"
}

gen_certs() {
    local kind d host
    for kind in ecdsa rsa; do
        d="$W/certs/$kind"; mkdir -p "$d"
        [[ $kind == ecdsa ]] && host=bench.local || host=rsa.bench.local
        gen_key "$kind" "$d/ca.key"
        openssl req -x509 -new -key "$d/ca.key" -subj "/CN=Portcullis bench $kind CA" -days 3650 -sha256 \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -out "$d/ca.pem" 2>/dev/null
        # The ECDSA server certificate also names grpc.bench.local, the host of the gRPC figure.
        gen_leaf "$d" server "$host" serverAuth "$host$([[ $kind == ecdsa ]] && echo " grpc.bench.local")"
        gen_leaf "$d" client "bench-client-$kind" clientAuth
        cat "$d/server.pem" "$d/server.key" >"$d/server-bundle.pem" # HAProxy wants both in one file
        openssl verify -CAfile "$d/ca.pem" -purpose sslclient "$d/client.pem" >/dev/null || die "bad $kind client cert"
        openssl verify -CAfile "$d/ca.pem" -purpose sslserver "$d/server.pem" >/dev/null || die "bad $kind server cert"
    done
    log "certificates in $W/certs (ECDSA P-256 for bench.local and grpc.bench.local, RSA-2048 for rsa.bench.local)"
}

# ---------------------------------------------------------------------------------------------------------------
# Origin and proxies

declare -A PID PORT
wait_port() { # wait_port PORT SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

start_origin() {
    taskset -c "$LOAD_CPU" "$LOADGEN" origin --listen "127.0.0.1:$ORIGIN_PORT" >"$W/logs/origin.log" 2>&1 &
    PID[origin]=$!; STARTED+=("$!")
    wait_port "$ORIGIN_PORT" 10 || die "origin did not start"
    # The gRPC origin (h2c with prior knowledge, echoes each call's message with grpc-status 0), same core.
    taskset -c "$LOAD_CPU" "$LOADGEN" origin --grpc --listen "127.0.0.1:$GRPC_ORIGIN_PORT" >"$W/logs/grpc-origin.log" 2>&1 &
    PID[grpc_origin]=$!; STARTED+=("$!")
    wait_port "$GRPC_ORIGIN_PORT" 10 || die "gRPC origin did not start"
}

start_nginx() {
    local d="$W/nginx"; mkdir -p "$d/tmp"
    local c="$W/certs"
    cat >"$d/nginx.conf" <<EOF
# One worker, pinned by taskset; access log off (as in every proxy here).
user root;
worker_processes 1;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $((NOFILE - 100)); }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_timeout 600s;
    keepalive_requests 10000000;
    http2_max_requests 10000000;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:SSL:20m;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    upstream grpc_origin {
        server 127.0.0.1:$GRPC_ORIGIN_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT ssl http2;
        server_name bench.local;
        ssl_certificate $c/ecdsa/server.pem;
        ssl_certificate_key $c/ecdsa/server.key;
        ssl_client_certificate $c/ecdsa/ca.pem;
        ssl_verify_client on;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
    server {
        listen 127.0.0.1:$NGINX_PORT ssl http2;
        server_name grpc.bench.local;
        ssl_certificate $c/ecdsa/server.pem;
        ssl_certificate_key $c/ecdsa/server.key;
        ssl_client_certificate $c/ecdsa/ca.pem;
        ssl_verify_client on;
        location / {
            grpc_pass grpc://grpc_origin;
            grpc_set_header X-Forwarded-For \$remote_addr;
        }
    }
    server {
        listen 127.0.0.1:$NGINX_PORT ssl http2;
        server_name rsa.bench.local;
        ssl_certificate $c/rsa/server.pem;
        ssl_certificate_key $c/rsa/server.key;
        ssl_client_certificate $c/rsa/ca.pem;
        ssl_verify_client on;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
}
EOF
    nginx -t -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$W/logs/nginx-t.log" 2>&1 || { cat "$W/logs/nginx-t.log" >&2; die "nginx config test failed"; }
    taskset -c "$PROXY_CPU" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$W/logs/nginx.log" 2>&1 &
    PID[nginx]=$!; STARTED+=("$!"); PORT[nginx]=$NGINX_PORT
    wait_port "$NGINX_PORT" 10 || die "nginx did not start (see $d/error.log)"
}

start_haproxy() {
    local d="$W/haproxy"; mkdir -p "$d"
    local c="$W/certs"
    cat >"$d/crt-list.txt" <<EOF
$c/ecdsa/server-bundle.pem [ca-file $c/ecdsa/ca.pem verify required] bench.local grpc.bench.local
$c/rsa/server-bundle.pem [ca-file $c/rsa/ca.pem verify required] rsa.bench.local
EOF
    cat >"$d/haproxy.cfg" <<EOF
# One thread, pinned by taskset; no logging (as in every proxy here).
global
    nbthread 1
    no strict-limits  # maxconn needs a little more than the hard limit of open files allows: warn, do not fail
    maxconn $((NOFILE / 2 + 500))
    ssl-default-bind-options ssl-min-ver TLSv1.2
    stats socket $d/stats.sock mode 600 level user  # "show stat": the frontend's ssl_sess / ssl_reused_sess
defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 60s
    timeout http-keep-alive 600s
    timeout http-request 10s
    option http-keep-alive
frontend edge
    bind 127.0.0.1:$HAPROXY_PORT ssl crt-list $d/crt-list.txt alpn h2,http/1.1
    option forwardfor
    use_backend grpc_origin if { hdr(host) -i grpc.bench.local }
    default_backend origin
backend origin
    http-reuse always
    server origin 127.0.0.1:$ORIGIN_PORT
backend grpc_origin
    http-reuse always
    server grpc_origin 127.0.0.1:$GRPC_ORIGIN_PORT proto h2
EOF
    haproxy -c -f "$d/haproxy.cfg" >"$W/logs/haproxy-c.log" 2>&1 || { cat "$W/logs/haproxy-c.log" >&2; die "haproxy config check failed"; }
    taskset -c "$PROXY_CPU" haproxy -db -f "$d/haproxy.cfg" >"$W/logs/haproxy.log" 2>&1 &
    PID[haproxy]=$!; STARTED+=("$!"); PORT[haproxy]=$HAPROXY_PORT
    wait_port "$HAPROXY_PORT" 10 || die "haproxy did not start (see $W/logs/haproxy.log)"
}

pc() { "$PORTCULLIS" --log-format text "$@"; }

pc_api() { # pc_api METHOD PATH [JSON-FILE]
    local args=(-sS -X "$1" -H "Authorization: Bearer $(cat "$PC_DATA/admin-token")" "http://127.0.0.1:$PC_ADMIN_PORT/client/v4$2")
    [[ -n ${3:-} ]] && args+=(-H "Content-Type: application/json" --data-binary "@$3")
    curl "${args[@]}"
}

start_portcullis() {
    PC_DATA="$W/portcullis-data"
    # openssl s_time sends no SNI: with CROSSCHECK=1 such handshakes get bench.local (NGINX and HAProxy answer them
    # with their first, ECDSA, certificate too). Without it, unchanged: handshakes without SNI are refused.
    PC_DEFAULT_HOST=""
    if [[ $CROSSCHECK == 1 ]]; then PC_DEFAULT_HOST="--default-host bench.local"; fi
    rm -rf "$PC_DATA"
    export PORTCULLIS_API="http://127.0.0.1:$PC_ADMIN_PORT" PORTCULLIS_DATA_DIR="$PC_DATA"
    # Access log off (RUST_LOG=warn), as NGINX and HAProxy run without one. Pinned to one core, Portcullis runs one
    # edge thread (--edge-threads defaults to the CPUs in the affinity mask).
    # Keep-alive timeouts raised to 600 s as for NGINX (keepalive_timeout) and HAProxy (timeout http-keep-alive), for
    # the idle-connection figure. (The header-read timeout runs only while a request head is arriving, so the
    # default stays.)
    RUST_LOG=warn taskset -c "$PROXY_CPU" "$PORTCULLIS" --log-format text serve --data-dir "$PC_DATA" \
        --listen "127.0.0.1:$PC_PORT" --admin-listen "127.0.0.1:$PC_ADMIN_PORT" \
        --max-connections 30000 --idle-timeout 600 $PC_DEFAULT_HOST ${PC_ARGS:-} >"$W/logs/portcullis.log" 2>&1 &
    PID[portcullis]=$!; STARTED+=("$!"); PORT[portcullis]=$PC_PORT
    local i
    for ((i = 0; i < 600; i++)); do
        [[ -s $PC_DATA/admin-token ]] && curl -sf "http://127.0.0.1:$PC_ADMIN_PORT/client/v4/openapi.json" -o /dev/null && break
        kill -0 "${PID[portcullis]}" 2>/dev/null || { cat "$W/logs/portcullis.log" >&2; die "portcullis exited"; }
        sleep 0.1
    done
    wait_port "$PC_PORT" 10 || die "portcullis edge did not start"
    local c="$W/certs" zone ca host kind
    zone=$(pc zone add bench.local --json | jq -r .id)
    [[ -n $zone && $zone != null ]] || die "zone add failed"
    PC_ZONE=$zone
    for kind in ecdsa rsa; do
        [[ $kind == ecdsa ]] && host=bench.local || host=rsa.bench.local
        pc host add "$host" --origin "http://127.0.0.1:$ORIGIN_PORT" --tls-client-auth require >/dev/null
        ca=$(pc ca upload --name "bench-$kind" "$c/$kind/ca.pem" --json | jq -r .id)
        [[ -n $ca && $ca != null ]] || die "ca upload ($kind) failed"
        pc mtls enable "$host" --ca "$ca" >/dev/null
        jq -n --rawfile cert "$c/$kind/server.pem" --rawfile key "$c/$kind/server.key" \
            '{certificate: $cert, private_key: $key}' >"$W/portcullis-cert-$kind.json"
        pc_api POST "/zones/$zone/custom_certificates" "$W/portcullis-cert-$kind.json" | jq -e .success >/dev/null ||
            die "custom certificate upload ($kind) failed"
        if [[ $kind == ecdsa ]]; then PC_CA_ECDSA=$ca; fi
    done
    # The gRPC figure's host: an h2c origin (--origin-h2), the same CA and the ECDSA certificate (it names
    # grpc.bench.local too).
    pc host add grpc.bench.local --origin "http://127.0.0.1:$GRPC_ORIGIN_PORT" --origin-h2 --tls-client-auth require >/dev/null
    pc mtls enable grpc.bench.local --ca "$PC_CA_ECDSA" >/dev/null
    # Server-side handshake counts: portcullis_handshakes_resumed_total appears on /metrics with the first resumed
    # handshake; a binary that does not know the counter at all reports "n/a".
    if grep -qa portcullis_handshakes_resumed_total "$PORTCULLIS"; then PC_RESUMED_METRIC=1; else PC_RESUMED_METRIC=0; fi
    # The one rule every Portcullis figure runs with: Cloudflare's revocation-aware mTLS rule (on /api; requests
    # go to /, so it is evaluated and does not match).
    pc rule add-mtls --path /api >/dev/null
}

# Puts N rules in the zone's entry-point ruleset: N-1 path rules that never match (not pinned to a host, so not
# indexed away) followed by the mTLS rule.
set_rules() {
    local n=$1
    python3 - "$n" >"$W/rules-$n.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
rules = [{"expression": f'http.request.uri.path eq "/deny/{i}" or http.request.headers["x-deny"][0] eq "v{i}"',
          "action": "block", "description": f"bench rule {i}"} for i in range(1, n)]
rules.append({"expression": '(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}',
              "action": "block", "description": "mTLS-enforced authentication"})
print(json.dumps({"rules": rules}))
EOF
    pc_api PUT "/zones/$PC_ZONE/rulesets/phases/http_request_firewall_custom/entrypoint" "$W/rules-$n.json" \
        >"$W/logs/rules-$n.out" || die "setting $n rules failed"
    jq -e '.success and (.result.rules | length) == '"$n" "$W/logs/rules-$n.out" >/dev/null ||
        die "setting $n rules failed: $(head -c 400 "$W/logs/rules-$n.out")"
    sleep 1 # let the edge's snapshot pick the ruleset up
}

# ---------------------------------------------------------------------------------------------------------------
# Measuring

# loadgen arguments for a proxy and a key type.
lg_args() { # lg_args PROXY ecdsa|rsa [SNI]
    local c="$W/certs/$2" sni=bench.local
    [[ $2 == rsa ]] && sni=rsa.bench.local
    [[ -n ${3:-} ]] && sni=$3
    echo --connect "127.0.0.1:${PORT[$1]}" --sni "$sni" --ca "$c/ca.pem" --cert "$c/client.pem" --key "$c/client.key" --kx "$KX"
}

# Checks that a proxy answers 200 with the client certificate and refuses a request without one.
check_proxy() { # check_proxy PROXY
    local p=$1 kind i ok=0 code
    for kind in ecdsa rsa; do
        for ((i = 0; i < 50; i++)); do
            if taskset -c "$LOAD_CPU" "$LOADGEN" run $(lg_args "$p" "$kind") --connections 1 --duration 0.2 \
                >"$W/logs/check-$p-$kind.json" 2>>"$W/logs/check-$p.err" &&
                jq -e '.requests > 0 and .errors == 0 and .non_2xx == 0' "$W/logs/check-$p-$kind.json" >/dev/null; then
                ok=1; break
            fi
            sleep 0.2
        done
        [[ $ok == 1 ]] || die "$p does not answer $kind mTLS requests: $(cat "$W/logs/check-$p-$kind.json" 2>/dev/null) $(tail -3 "$W/logs/check-$p.err")"
        local sni=bench.local; [[ $kind == rsa ]] && sni=rsa.bench.local
        code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$W/certs/$kind/ca.pem" \
            --resolve "$sni:${PORT[$p]}:127.0.0.1" "https://$sni:${PORT[$p]}/" || true)
        [[ $code == 200 ]] && die "$p answered 200 to a request without a client certificate ($kind)"
    done
    if has "$FIGURES" grpc; then
        # One gRPC call must come back with HTTP 200, grpc-status 0 and the message echoed.
        ok=0
        for ((i = 0; i < 50; i++)); do
            if taskset -c "$LOAD_CPU" "$LOADGEN" run $(lg_args "$p" ecdsa grpc.bench.local) --mode grpc --connections 1 --duration 0.2 \
                >"$W/logs/check-$p-grpc.json" 2>>"$W/logs/check-$p.err" &&
                jq -e '.requests > 0 and .errors == 0 and .non_2xx == 0 and .grpc_failures == 0' "$W/logs/check-$p-grpc.json" >/dev/null; then
                ok=1; break
            fi
            sleep 0.2
        done
        [[ $ok == 1 ]] || die "$p does not answer gRPC calls with grpc-status 0: $(cat "$W/logs/check-$p-grpc.json" 2>/dev/null) $(tail -3 "$W/logs/check-$p.err")"
        log "$p: gRPC unary call answered with HTTP 200 and grpc-status 0"
    fi
    log "$p: 200 with the client certificate, refused without ($code) — ECDSA and RSA; $(proc_tree "${PID[$p]}" | wc -l) process(es), $(threads "${PID[$p]}") thread(s), affinity $(taskset -cp "${PID[$p]}" | sed 's/.*: //')"
}

RUNS_FILE="$W/runs.jsonl"

# The proxy's own count of successful handshakes so far, as JSON {"ok": N, "resumed": N}, or null where the proxy
# has no such counter: Portcullis' /metrics on the admin listener (no token: it is for the local scraper),
# portcullis_handshakes_total{result="ok"} and portcullis_handshakes_resumed_total; HAProxy's "show stat" on its
# stats socket, the frontend's ssl_sess and ssl_reused_sess; NGINX has no counter (only $ssl_session_reused in an
# access log, which is off).
server_handshakes() { # server_handshakes PROXY
    case $1 in
        portcullis)
            local text
            text=$(curl -sf --max-time 5 "http://127.0.0.1:$PC_ADMIN_PORT/metrics" 2>/dev/null) || { echo null; return; }
            python3 -c '
import json, sys
ok, resumed, known = 0.0, None, sys.argv[1] == "1"
for line in sys.stdin:
    if line.startswith("portcullis_handshakes_total{") and "result=\"ok\"" in line:
        ok += float(line.rsplit(" ", 1)[1])
    elif line.startswith("portcullis_handshakes_resumed_total "):
        resumed = float(line.rsplit(" ", 1)[1])
if resumed is None and known:
    resumed = 0.0  # the binary has the counter; it appears with the first resumed handshake
print(json.dumps({"ok": ok, "resumed": resumed}))' "${PC_RESUMED_METRIC:-0}" <<<"$text" || echo null ;;
        haproxy)
            python3 - "$W/haproxy/stats.sock" <<'PY' 2>/dev/null || echo null
import csv, json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
lines = data.decode().splitlines()
rows = list(csv.DictReader([lines[0].lstrip("# ")] + lines[1:]))
row = next(r for r in rows if r["pxname"] == "edge" and r["svname"] == "FRONTEND")
# ssl_sess counts new (full) sessions only, ssl_reused_sess the resumed ones.
sess, reused = float(row["ssl_sess"]), float(row["ssl_reused_sess"])
print(json.dumps({"ok": sess + reused, "resumed": reused}))
PY
            ;;
        *) echo null ;;
    esac
}

# Runs loadgen against PROXY and records the result with the proxy's CPU time, and the proxy's own count of full and
# resumed handshakes during the run where it has one (read outside the CPU-time window).
measure() { # measure FIGURE PROXY ROUND LOADGEN-ARGS...
    local fig=$1 p=$2 round=$3; shift 3
    local out="$W/runs/$fig.$p.$round.json" c0 c1 t0 t1 s0 s1
    s0=$(server_handshakes "$p")
    local perf_pid=
    if [[ $PROFILE == 1 ]]; then
        mkdir -p "$W/perf"
        # All of the proxy's processes (NGINX's master and worker); perf stops at SIGINT and then writes its file.
        perf record -q -e cpu-clock -F "$PROFILE_FREQ" -g -p "$(proc_tree "${PID[$p]}" | paste -sd,)" \
            -o "$W/perf/$fig.$p.$round.data" >>"$W/logs/perf.log" 2>&1 &
        perf_pid=$!
        sleep 0.5
    fi
    c0=$(cpu_ticks "${PID[$p]}"); t0=$(date +%s.%N)
    taskset -c "$LOAD_CPU" "$LOADGEN" run "$@" --label "$p" --out "$out" >/dev/null 2>>"$W/logs/loadgen.err" ||
        log "warning: loadgen failed for $fig/$p (see $W/logs/loadgen.err)"
    c1=$(cpu_ticks "${PID[$p]}"); t1=$(date +%s.%N)
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || log "warning: perf record failed for $fig/$p (see $W/logs/perf.log)"
    fi
    s1=$(server_handshakes "$p")
    [[ -s $out ]] || echo '{}' >"$out"
    jq -c --arg fig "$fig" --arg p "$p" --argjson round "$round" \
        --argjson cpu "$(cpu_json "$c0" "$c1")" --argjson wall "$(python3 -c "print($t1 - $t0)")" \
        --argjson s0 "${s0:-null}" --argjson s1 "${s1:-null}" \
        '. + $cpu + {figure: $fig, proxy: $p, round: $round, wall_s: $wall,
              server_handshakes_resumed: (if $s0 == null or $s1 == null or $s0.resumed == null or $s1.resumed == null
                  then null else ($s1.resumed - $s0.resumed - (.priming_handshakes_resumed // 0)) end),
              server_handshakes_full: (if $s0 == null or $s1 == null or $s0.resumed == null or $s1.resumed == null
                  then null else (($s1.ok - $s0.ok) - ($s1.resumed - $s0.resumed) - (.priming_handshakes_full // 0)) end)}' \
        "$out" >>"$RUNS_FILE"
    jq -r '"  \(.figure) \(.proxy) round \(.round): \(.rps // 0 | floor) req/s, proxy CPU \(.proxy_cpu_s) s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, errors \(.errors)\(if (.grpc_failures // 0) > 0 then ", gRPC failures \(.grpc_failures)" else "" end), hs full/resumed \(.handshakes_full)/\(.handshakes_resumed), proxy saw \(.server_handshakes_full // "n/a")/\(.server_handshakes_resumed // "n/a")"' \
        <<<"$(tail -1 "$RUNS_FILE")" >&2
}

measure_idle() { # measure_idle PROXY
    local p=$1 before after ready="$W/runs/idle.$p.ready" out="$W/runs/idle.$p.json" lg i
    rm -f "$ready"
    sleep 1
    before=$(rss_kib "${PID[$p]}")
    taskset -c "$LOAD_CPU" "$LOADGEN" idle $(lg_args "$p" ecdsa) --connections "$IDLE_CONNS" --hold "$IDLE_HOLD" \
        --ready-file "$ready" --label "$p" --out "$out" >/dev/null 2>>"$W/logs/loadgen.err" &
    lg=$!; STARTED+=("$lg")
    for ((i = 0; i < 3000; i++)); do [[ -s $ready ]] && break; kill -0 "$lg" 2>/dev/null || break; sleep 0.1; done
    sleep 1
    after=$(rss_kib "${PID[$p]}")
    wait "$lg" || log "warning: idle loadgen failed for $p"
    [[ -s $out ]] || echo '{}' >"$out"
    jq -c --arg p "$p" --argjson before "$before" --argjson after "$after" \
        '. + {figure: "idle", proxy: $p, round: 1, rss_before_kib: $before, rss_after_kib: $after,
              rss_per_conn_kib: (if (.opened // 0) > 0 then (($after - $before) / .opened) else null end)}' \
        "$out" >>"$RUNS_FILE"
    jq -r '"  idle \(.proxy): \(.opened) open, \(.alive_after_hold) alive after hold, RSS \(.rss_before_kib) -> \(.rss_after_kib) KiB, \(.rss_per_conn_kib) KiB/conn"' \
        <<<"$(tail -1 "$RUNS_FILE")" >&2
}

has() { [[ " $1 " == *" $2 "* ]]; }

# ---------------------------------------------------------------------------------------------------------------
# Cross-checks (CROSSCHECK=1): oha for the keep-alive figures, openssl s_time for full handshakes

CROSS_FILE="$W/crosscheck.jsonl"

ensure_oha() {
    if [[ -z $OHA ]]; then
        if [[ -x $BENCH/target/oha-bin/bin/oha ]]; then
            OHA=$BENCH/target/oha-bin/bin/oha
        elif command -v oha >/dev/null 2>&1; then
            OHA=$(command -v oha)
        else
            log "installing oha (cargo install oha --locked --root bench/target/oha-bin)"
            nice cargo install oha --locked --root "$BENCH/target/oha-bin" >"$W/logs/oha-install.log" 2>&1 ||
                die "cargo install oha failed, see $W/logs/oha-install.log"
            OHA=$BENCH/target/oha-bin/bin/oha
        fi
    fi
    "$OHA" --help >"$W/logs/oha-help.txt" 2>&1 || die "$OHA --help failed"
    grep -q -- '--cert' "$W/logs/oha-help.txt" && grep -q -- '--key' "$W/logs/oha-help.txt" ||
        die "$OHA has no --cert/--key (client certificates): a newer oha is needed"
    log "oha: $("$OHA" --version 2>&1 | head -1) ($OHA)"
}

# Runs one cross-check command against PROXY, with the proxy's CPU time and its own handshake count around it, and
# records the tool's figures (parsed by cross_parse) in $CROSS_FILE.
cross_measure() { # cross_measure FIGURE PROXY ROUND TOOL COMPARE_WITH CMD...
    local fig=$1 p=$2 round=$3 tool=$4 cmp=$5; shift 5
    local out="$W/runs/cross.$fig.$p.$round" c0 c1 t0 t1 s0 s1
    s0=$(server_handshakes "$p")
    c0=$(cpu_ticks "${PID[$p]}"); t0=$(date +%s.%N)
    "$@" >"$out.out" 2>"$out.err" || log "warning: $tool failed for $fig/$p (see $out.err)"
    c1=$(cpu_ticks "${PID[$p]}"); t1=$(date +%s.%N)
    s1=$(server_handshakes "$p")
    python3 - "$tool" "$out.out" "$(python3 -c "print($t1 - $t0)")" >"$out.json" <<'PY' || echo '{}' >"$out.json"
import glob, json, re, sys
tool, path, wall = sys.argv[1], sys.argv[2], float(sys.argv[3])
if tool == "oha":
    d = json.load(open(path))
    summary, pct = d.get("summary", {}), d.get("latencyPercentiles", {})
    codes = {str(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    requests = sum(codes.values())
    total_s = summary.get("total") or wall
    errs = dict(d.get("errorDistribution") or {})
    aborted = errs.pop("aborted due to deadline", 0)  # requests in flight when -z ran out: not failures
    errors = sum(errs.values())
    print(json.dumps({
        "requests": requests, "rps": requests / total_s if total_s else None,
        "oha_requests_per_sec": summary.get("requestsPerSec"), "success_rate": summary.get("successRate"),
        "non_2xx": sum(v for k, v in codes.items() if not k.startswith("2")), "errors": errors,
        "p50_ms": pct["p50"] * 1000 if pct.get("p50") is not None else None,
        "p99_ms": pct["p99"] * 1000 if pct.get("p99") is not None else None,
        "duration_s": total_s, "aborted_at_deadline": aborted, "error_kinds": errs,
    }))
else:  # openssl s_time: one output file per process, "N connections in T real seconds, ..."
    conns = 0
    for f in sorted(glob.glob(path + ".*")):
        m = re.findall(r"(\d+) connections in [\d.]+ real seconds", open(f).read())
        if m:
            conns += int(m[-1])
    # Our own wall clock around all the processes (s_time's "real seconds" are whole seconds).
    try:
        status = open(path + ".status").read().strip()
    except FileNotFoundError:
        status = ""
    print(json.dumps({"requests": conns, "rps": conns / wall if wall else None, "errors": 0 if conns else 1,
                      "duration_s": wall, "probe_status_line": status}))
PY
    jq -c --arg fig "$fig" --arg p "$p" --argjson round "$round" --arg tool "$tool" --arg cmp "$cmp" \
        --argjson cpu "$(cpu_json "$c0" "$c1")" --argjson wall "$(python3 -c "print($t1 - $t0)")" \
        --argjson s0 "${s0:-null}" --argjson s1 "${s1:-null}" \
        '. + $cpu + {figure: $fig, proxy: $p, round: $round, tool: $tool, compare_with: $cmp, wall_s: $wall,
              server_handshakes_resumed: (if $s0 == null or $s1 == null or $s0.resumed == null or $s1.resumed == null
                  then null else ($s1.resumed - $s0.resumed) end),
              server_handshakes_full: (if $s0 == null or $s1 == null or $s0.resumed == null or $s1.resumed == null
                  then null else (($s1.ok - $s0.ok) - ($s1.resumed - $s0.resumed)) end)}' \
        "$out.json" >>"$CROSS_FILE"
    jq -r '"  cross-check \(.figure) \(.proxy) round \(.round): \(.rps // 0 | floor)/s, proxy CPU \(.proxy_cpu_s) s, p50 \(.p50_ms // "—") ms, p99 \(.p99_ms // "—") ms, errors \(.errors), proxy saw \(.server_handshakes_full // "n/a")/\(.server_handshakes_resumed // "n/a")\(if .probe_status_line then ", answer: \(.probe_status_line)" else "" end)"' \
        <<<"$(tail -1 "$CROSS_FILE")" >&2
}

# oha keep-alive: -c connections, each sending one request after another (oha's default keep-alive mode), for
# DURATION seconds, with the client certificate; pinned to the load core like loadgen.
oha_cmd() { # oha_cmd PROXY 1|2
    local p=$1 c="$W/certs/ecdsa" port=${PORT[$1]}
    local args=(taskset -c "$LOAD_CPU" "$OHA" --no-tui -z "${DURATION}s" -c "$KA_CONNS"
        --cacert "$c/ca.pem" --cert "$c/client.pem" --key "$c/client.key"
        --connect-to "bench.local:$port:127.0.0.1:$port")
    if grep -q -- '--output-format' "$W/logs/oha-help.txt"; then args+=(--output-format json); else args+=(--json); fi
    [[ $2 == 2 ]] && args+=(--http2)
    args+=("https://bench.local:$port/")
    "${args[@]}"
}

# STIME_PROCS parallel `openssl s_time -new` (TLS 1.3, client certificate, one GET / per connection) for DURATION
# seconds, pinned to the load core; s_time sends no SNI. Each process writes its own output file.
# s_time's request is "GET <www> HTTP/1.0" and nothing else; a -www carrying a Host header (and closing the request
# line itself) makes it the same request as loadgen's: "GET / HTTP/1.1", Host bench.local, Connection: close (the
# trailing " HTTP/1.0" ends up in a dummy header). One s_client with the same request first records the status line.
STIME_WWW=$'/ HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\nX-Bench: s_time'
stime_probe() { # stime_probe PROXY OUT-PREFIX
    local c="$W/certs/ecdsa"
    printf 'GET %s HTTP/1.0\r\n\r\n' "$STIME_WWW" |
        timeout 10 openssl s_client -quiet -connect "127.0.0.1:${PORT[$1]}" -noservername -tls1_3 \
            -cert "$c/client.pem" -key "$c/client.key" -CAfile "$c/ca.pem" 2>/dev/null | head -1 | tr -d '\r' >"$2.status" || true
}
stime_cmd() { # stime_cmd PROXY OUT-PREFIX
    local p=$1 c="$W/certs/ecdsa" i pids=()
    for ((i = 0; i < STIME_PROCS; i++)); do
        taskset -c "$LOAD_CPU" openssl s_time -connect "127.0.0.1:${PORT[$p]}" -new -tls1_3 -www "$STIME_WWW" \
            -cert "$c/client.pem" -key "$c/client.key" -CAfile "$c/ca.pem" -time "$DURATION" >"$2.$i" 2>&1 &
        pids+=("$!")
    done
    local rc=0
    for i in "${pids[@]}"; do wait "$i" || rc=1; done
    return $rc
}

crosscheck_round() { # crosscheck_round ROUND
    local round=$1 p
    for p in $PROXIES; do
        cross_measure oha_h1 "$p" "$round" oha h1 oha_cmd "$p" 1
        cross_measure oha_h2 "$p" "$round" oha h2 oha_cmd "$p" 2
        rm -f "$W/runs/cross.stime_new.$p.$round.out".*
        stime_probe "$p" "$W/runs/cross.stime_new.$p.$round.out"
        cross_measure stime_new "$p" "$round" s_time full_ecdsa stime_cmd "$p" "$W/runs/cross.stime_new.$p.$round.out"
    done
}

# ---------------------------------------------------------------------------------------------------------------
# Main

main() {
    rm -rf "$W"; mkdir -p "$W/logs" "$W/runs"
    # Open files: as many as the hard limit allows (20,000 on the development machines, enough for 10,000 idle
    # connections per proxy; the proxies' own limits below follow it).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    NOFILE=$(ulimit -n)
    log "QUICK=$QUICK RUNS=$RUNS DURATION=${DURATION}s FIGURES=[$FIGURES] PROXIES=[$PROXIES] proxy on core $PROXY_CPU, load on core $LOAD_CPU"
    install_peers
    build_binaries
    if [[ $CROSSCHECK == 1 ]]; then ensure_oha; fi
    gen_certs
    start_origin
    local p
    for p in $PROXIES; do
        case $p in
            nginx) start_nginx ;;
            haproxy) start_haproxy ;;
            portcullis) start_portcullis ;;
            *) die "unknown proxy $p" ;;
        esac
        check_proxy "$p"
    done
    : >"$RUNS_FILE"
    rm -f "$CROSS_FILE"

    local round fig
    for ((round = 1; round <= RUNS; round++)); do
        log "round $round of $RUNS"
        for fig in $FIGURES; do
            case $fig in
                idle | rules) continue ;;
            esac
            for p in $PROXIES; do
                case $fig in
                    full_ecdsa) measure "$fig" "$p" "$round" $(lg_args "$p" ecdsa) --mode full --connections "$HS_CONNS" --duration "$DURATION" ;;
                    full_rsa) measure "$fig" "$p" "$round" $(lg_args "$p" rsa) --mode full --connections "$HS_CONNS" --duration "$DURATION" ;;
                    resumed) measure "$fig" "$p" "$round" $(lg_args "$p" ecdsa) --mode resumed --connections "$HS_CONNS" --duration "$DURATION" ;;
                    h1) measure "$fig" "$p" "$round" $(lg_args "$p" ecdsa) --mode keepalive --http 1 --connections "$KA_CONNS" --duration "$DURATION" ;;
                    h2) measure "$fig" "$p" "$round" $(lg_args "$p" ecdsa) --mode keepalive --http 2 --connections "$KA_CONNS" --duration "$DURATION" ;;
                    grpc) measure "$fig" "$p" "$round" $(lg_args "$p" ecdsa grpc.bench.local) --mode grpc --connections "$KA_CONNS" --duration "$DURATION" ;;
                    *) die "unknown figure $fig" ;;
                esac
            done
        done
        if has "$FIGURES" rules && has "$PROXIES" portcullis; then
            measure rules_1 portcullis "$round" $(lg_args portcullis ecdsa) --mode keepalive --http 1 --connections "$KA_CONNS" --duration "$DURATION"
            set_rules "$RULES"
            measure "rules_$RULES" portcullis "$round" $(lg_args portcullis ecdsa) --mode keepalive --http 1 --connections "$KA_CONNS" --duration "$DURATION"
            set_rules 1
        fi
        if [[ $CROSSCHECK == 1 ]]; then
            log "cross-checks, round $round: oha (h1, h2), openssl s_time -new"
            crosscheck_round "$round"
        fi
    done
    if has "$FIGURES" idle; then
        log "idle connections: $IDLE_CONNS per proxy (one round)"
        for p in $PROXIES; do measure_idle "$p"; done
    fi

    local versions
    versions=$(jq -n --arg nginx "$(nginx -v 2>&1 | head -1)" --arg haproxy "$(haproxy -v 2>&1 | head -1)" \
        --arg portcullis "$("$PORTCULLIS" --version 2>&1 | head -1) ($(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO" && git diff --quiet 2>/dev/null || echo '+dirty'))" \
        --arg openssl "$(openssl version)" --arg kernel "$(uname -r)" \
        --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" --arg nproc "$(nproc)" \
        '{nginx: $nginx, haproxy: $haproxy, portcullis: $portcullis, openssl: $openssl, kernel: $kernel, cpu: $cpu, nproc: $nproc}')
    python3 "$BENCH/report.py" "$RUNS_FILE" "$RESULTS_DIR/results.json" "$RESULTS_DIR/results.md" --crosscheck "$CROSS_FILE" \
        --meta "$versions" --config "$(jq -n --arg quick "$QUICK" --arg runs "$RUNS" --arg duration "$DURATION" \
            --arg hs "$HS_CONNS" --arg ka "$KA_CONNS" --arg idle "$IDLE_CONNS" --arg rules "$RULES" --arg kx "$KX" \
            --arg pcpu "$PROXY_CPU" --arg lcpu "$LOAD_CPU" \
            '{quick: $quick, runs: $runs, duration_s: $duration, handshake_loops: $hs, keepalive_connections: $ka,
              idle_connections: $idle, rules: $rules, kx: $kx, proxy_cpu: $pcpu, load_cpu: $lcpu}')"
    cat "$RESULTS_DIR/results.md"
    log "results: $RESULTS_DIR/results.md and $RESULTS_DIR/results.json (raw runs: $RUNS_FILE)"
    if [[ $PROFILE == 1 && -d $W/perf ]]; then
        python3 "$BENCH/perfsplit.py" "$W/perf" "$RUNS_FILE" >"$W/perf/summary.md"
        log "profiles: $W/perf/summary.md (perf report -i $W/perf/FIGURE.PROXY.ROUND.data for the detail)"
    fi
}

main "$@"
