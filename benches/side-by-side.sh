#!/usr/bin/env bash
# Conclave (standalone media node) and Janus VideoRoom side by side, one sitting: the same
# generator (`conclave-load`), the same workload (`seed`: 1 room × N, everyone publishes
# audio + video and receives everyone else), runs alternating C,J / J,C / C,J ..., a fresh
# server for every run. Prints every run and the medians with their ratios.
#
# Both servers and every simulated participant use the address of one `dummy` interface
# (or a veth pair where the kernel has no dummy module):
# Janus skips loopback interfaces when it gathers candidates, and `ice_enforce_list` names
# this one, so neither server pays for a shim. Needs root (the interface), the `janus`
# package (Debian: `apt-get install --no-install-recommends janus`), `curl`, `python3`, and
# release builds:
#   cargo build --release -p conclave-bench -p conclave-signaling-node -p conclave-media-node
#
# Usage: benches/side-by-side.sh [--pairs 3] [--participants 20] [--duration 10]
#          [--warmup 2] [--addr 10.77.0.1] [--iface cb0] [--bin DIR] [--out DIR]
#          [--janus-event-loops N]   (Janus's event_loops; default: Janus's own, a thread
#                                     per handle)
# Everything it starts it stops by PID; the interface and the temporary directory are
# removed on exit, also on failure or Ctrl-C. Each run is bounded in time.
set -euo pipefail

PAIRS=3
N=20
DURATION=10
WARMUP=2
ADDR=10.77.0.1
IFACE=cb0
BIN="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}/release"
OUT=""
EVENT_LOOPS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --pairs) PAIRS="$2"; shift 2 ;;
        --participants) N="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --addr) ADDR="$2"; shift 2 ;;
        --iface) IFACE="$2"; shift 2 ;;
        --bin) BIN="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --janus-event-loops) EVENT_LOOPS="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "side-by-side: unknown option $1" >&2; exit 2 ;;
    esac
done

die() { echo "side-by-side: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (it creates the dummy interface $IFACE)"
command -v janus >/dev/null || die "no janus binary (apt-get install --no-install-recommends janus)"
# The folder holding Janus's plugins/ and transports/ (Debian: /usr/lib/<triplet>/janus).
VIDEOROOM=$(dpkg -L janus 2>/dev/null | grep '/plugins/libjanus_videoroom.so$' | head -1 || true)
JANUS_LIB=$(dirname "$(dirname "${VIDEOROOM:-/usr/lib/x86_64-linux-gnu/janus/plugins/x}")")
[ -f "$JANUS_LIB/plugins/libjanus_videoroom.so" ] || die "no VideoRoom plugin under $JANUS_LIB"
for b in conclave-load media-node signaling-node; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing: build the release binaries first (see the header)"
done
for i in "$IFACE" "${IFACE}p"; do
    ip link show "$i" >/dev/null 2>&1 && die "interface $i exists already; pick another with --iface"
done

TMP=$(mktemp -d /tmp/side-by-side.XXXXXX)
[ -n "$OUT" ] || OUT="$TMP/results"
mkdir -p "$OUT"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded: at most 5 s each, then SIGKILL.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    ip link del "$IFACE" 2>/dev/null || true
    case "$OUT" in "$TMP"/*) ;; *) rm -rf "$TMP" ;; esac
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A dummy interface; a kernel without the dummy module (like this CI machine kind) gets a
# veth pair instead. Either way it only holds the address: traffic between two local
# addresses takes the kernel's local path, never the link.
if ! ip link add "$IFACE" type dummy 2>/dev/null; then
    ip link add "$IFACE" type veth peer name "${IFACE}p"
    ip link set "${IFACE}p" up
fi
ip addr add "$ADDR/32" dev "$IFACE"
ip link set "$IFACE" up

# --- Janus configuration: VideoRoom and the HTTP transport only, ICE on $IFACE only, no
# NAT helpers (no STUN, no 1:1 NAT), no IPv6, half-trickle (candidates in the SDP).
JCFG="$TMP/janus"
mkdir -p "$JCFG"
cat >"$JCFG/janus.jcfg" <<EOF
general: {
    configs_folder = "$JCFG"
    plugins_folder = "$JANUS_LIB/plugins"
    transports_folder = "$JANUS_LIB/transports"
    events_folder = "$JANUS_LIB/events"
    loggers_folder = "$JANUS_LIB/loggers"
    debug_level = 3
    session_timeout = 60
${EVENT_LOOPS:+    event_loops = $EVENT_LOOPS}
}
certificates: {
}
media: {
    ipv6 = false
    rtp_port_range = "20000-39999"
}
nat: {
    nice_debug = false
    full_trickle = false
    ice_lite = false
    ice_tcp = false
    ice_enforce_list = "$IFACE"
    ignore_mdns = true
}
plugins: {
    disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so"
}
transports: {
    disable = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so,libjanus_websockets.so"
}
events: {
    broadcast = false
}
loggers: {
    disable = "libjanus_jsonlog.so"
}
EOF
cat >"$JCFG/janus.transport.http.jcfg" <<EOF
general: {
    json = "compact"
    base_path = "/janus"
    http = true
    port = 8088
    ip = "$ADDR"
    https = false
}
admin: {
    admin_http = false
    admin_https = false
}
EOF
cat >"$JCFG/janus.plugin.videoroom.jcfg" <<EOF
general: {
}
EOF

LINK_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
TOKEN_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

# wait_http URL SECONDS: until URL answers 2xx, or fail.
wait_http() {
    local i
    for i in $(seq $(($2 * 10))); do
        curl -sf -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    die "$1 did not answer within $2 s"
}

# stop PID: SIGTERM, then SIGKILL after 5 s; forget it.
stop() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=()
    for i in "${PIDS[@]}"; do [ "$i" = "$pid" ] || keep+=("$i"); done
    PIDS=("${keep[@]}")
}

# busy_ticks: CPU ticks of the whole machine so far, "busy idle" (from /proc/stat).
busy_ticks() {
    awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat
}
# machine_busy TAG BEFORE: how busy both cores were during the run, into TAG.busy.
machine_busy() {
    local before=($2) after=($(busy_ticks))
    awk -v b=$((after[0] - before[0])) -v i=$((after[1] - before[1])) \
        'BEGIN{ if (b + i > 0) printf "%.0f\n", 100 * b / (b + i) }' >"$OUT/$1.busy"
}

# Each run: fresh servers, the generator bounded by `timeout`, servers stopped.
RUN_LIMIT=$((DURATION + WARMUP + N + 60))
run_conclave() {
    local tag=$1
    "$BIN/media-node" --listen "$ADDR:18081" --udp-listen "$ADDR:40000" \
        --link-secret "$LINK_SECRET" --node-id m1 >"$TMP/media-$tag.log" 2>&1 &
    local media=$!
    PIDS+=("$media")
    wait_http "http://$ADDR:18081/healthz" 20
    "$BIN/signaling-node" --listen "$ADDR:18080" --internal-listen "$ADDR:19090" \
        --media-node "ws://$ADDR:18081/internal/link" --link-secret "$LINK_SECRET" \
        --token-secret "$TOKEN_SECRET" --room-cap 200 --max-connections-per-ip 0 \
        >"$TMP/signaling-$tag.log" 2>&1 &
    local sig=$!
    PIDS+=("$sig")
    wait_http "http://$ADDR:19090/readyz" 20
    local ticks
    ticks=$(busy_ticks)
    timeout "$RUN_LIMIT" "$BIN/conclave-load" --target conclave --url "http://$ADDR:18080" \
        --token-secret "$TOKEN_SECRET" --participants "$N" --duration "$DURATION" \
        --warmup "$WARMUP" --bind-ip "$ADDR" --media-pid "$media" \
        --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>"$TMP/load-$tag.err" \
        || echo "side-by-side: run $tag failed (see $OUT/$tag.txt)" >&2
    machine_busy "$tag" "$ticks"
    stop "$sig"
    stop "$media"
}
run_janus() {
    local tag=$1
    janus -F "$JCFG" -C "$JCFG/janus.jcfg" -o -N -L "$TMP/janus-$tag.log" >/dev/null 2>&1 &
    local jpid=$!
    PIDS+=("$jpid")
    wait_http "http://$ADDR:8088/janus/info" 20
    local ticks
    ticks=$(busy_ticks)
    timeout "$RUN_LIMIT" "$BIN/conclave-load" --target janus --url "http://$ADDR:8088/janus" \
        --participants "$N" --duration "$DURATION" --warmup "$WARMUP" --bind-ip "$ADDR" \
        --media-pid "$jpid" --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>"$TMP/load-$tag.err" \
        || echo "side-by-side: run $tag failed (see $OUT/$tag.txt)" >&2
    machine_busy "$tag" "$ticks"
    stop "$jpid"
}

COMMIT=$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "side-by-side: commit $COMMIT, $(janus --version 2>/dev/null | head -1 || echo janus),"\
     "event_loops ${EVENT_LOOPS:-default}, $(date -u '+%Y-%m-%d %H:%M UTC'), N=$N, ${DURATION}s window, $PAIRS pairs, on $ADDR ($IFACE)"
echo "side-by-side: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
START=$(date +%s)
for p in $(seq "$PAIRS"); do
    # Alternate the order within pairs (C,J then J,C ...) so a drift of the machine over the
    # sitting does not favour one side.
    if [ $((p % 2)) = 1 ]; then order="conclave janus"; else order="janus conclave"; fi
    for t in $order; do
        echo "side-by-side: pair $p: $t ($(($(date +%s) - START)) s)" >&2
        "run_$t" "$t-$p"
    done
done
echo "side-by-side: $PAIRS pairs in $(($(date +%s) - START)) s; JSON in $OUT" >&2

python3 - "$OUT" "$PAIRS" <<'EOF'
import json, os, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
def load(tag):
    try:
        with open(os.path.join(out, tag + ".json")) as f:
            s = json.load(f)
    except (OSError, ValueError):
        return None
    try:
        with open(os.path.join(out, tag + ".busy")) as f:
            s["machine_busy_percent"] = float(f.read())
    except (OSError, ValueError):
        pass
    return s
metrics = [
    ("forwarded / CPU-s", lambda s: s.get("forwarded_per_cpu_second"), "{:.1f}k", 1e-3),
    ("latency p50 (ms)", lambda s: (s.get("latency_ms") or {}).get("p50"), "{:.2f}", 1),
    ("latency p99 (ms)", lambda s: (s.get("latency_ms") or {}).get("p99"), "{:.2f}", 1),
    ("RSS / participant (KiB)", lambda s: s.get("media_rss_per_participant_kib"), "{:.0f}", 1),
    ("loss (%)", lambda s: s.get("loss_percent"), "{:.3f}", 1),
    ("server CPU in window (s)", lambda s: s.get("media_cpu_seconds"), "{:.2f}", 1),
    ("generator CPU in window (s)", lambda s: s.get("generator_cpu_seconds"), "{:.2f}", 1),
    ("packets in window", lambda s: s.get("window_packets"), "{:.0f}", 1),
    ("failed participants", lambda s: s.get("failed"), "{:.0f}", 1),
    ("machine busy, whole run (%)", lambda s: s.get("machine_busy_percent"), "{:.0f}", 1),
]
runs = {t: [load(f"{t}-{p}") for p in range(1, pairs + 1)] for t in ("conclave", "janus")}
def fmt(v, f, k):
    return "-" if v is None else f.format(v * k)
print()
print(f"| metric | Conclave runs | Janus runs | median Conclave | median Janus | Conclave / Janus |")
print(f"|---|---|---|---|---|---|")
for name, get, f, k in metrics:
    vals = {t: [get(s) if s else None for s in runs[t]] for t in runs}
    med = {t: (statistics.median([v for v in vals[t] if v is not None])
               if any(v is not None for v in vals[t]) else None) for t in vals}
    ratio = "-"
    if med["conclave"] is not None and med["janus"]:
        ratio = f"{med['conclave'] / med['janus']:.2f}"
    cells = [", ".join(fmt(v, f, k) for v in vals[t]) for t in ("conclave", "janus")]
    print(f"| {name} | {cells[0]} | {cells[1]} | {fmt(med['conclave'], f, k)} | {fmt(med['janus'], f, k)} | {ratio} |")
# The throughput ratio pair by pair (each pair ran back to back).
pr = []
for c, j in zip(runs["conclave"], runs["janus"]):
    if c and j and c.get("forwarded_per_cpu_second") and j.get("forwarded_per_cpu_second"):
        pr.append(c["forwarded_per_cpu_second"] / j["forwarded_per_cpu_second"])
if pr:
    print()
    print("forwarded / CPU-s, Conclave / Janus pair by pair: "
          + ", ".join(f"{r:.2f}" for r in pr) + f" (median {statistics.median(pr):.2f})")
for t in runs:
    for p, s in enumerate(runs[t], 1):
        if s is None:
            print(f"{t} run {p}: no result")
        elif s.get("errors"):
            print(f"{t} run {p}: " + "; ".join(s["errors"][:3]))
EOF
