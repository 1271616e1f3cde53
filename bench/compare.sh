#!/usr/bin/env bash
# Side-by-side benchmark of midge, Eclipse Mosquitto and rumqttd with
# midge_bench, on loopback only.
#
# Finds or installs the peers (Debian's mosquitto, rumqttd 0.20 through
# cargo install into bench/.tools), builds midge and midge_bench in release,
# then for each round runs every scenario on every broker in turn
# (A B C A B C ...), each run on a freshly started broker on a fresh port,
# with --broker-pid so the broker's CPU time and memory are measured. Writes
# the raw JSON lines and a markdown table of medians and ratios
# (midge / best peer) to bench/results/ and the table to stdout.
#
# Usage: bench/compare.sh [--rounds N] [--duration SECS] [--brokers "midge mosquitto rumqttd"]
#                         [--scenarios "fanin fanout p2p latency conn conn1t storm churn churn1t subs100k subs1"]
#                         [--no-install] [--out FILE]
#        bench/compare.sh --report RESULTS.jsonl [--out FILE]   (table only, no runs)
# Environment: MIDGE_BIN, BENCH_BIN to use prebuilt binaries instead of
# building; CARGO_TARGET_DIR as usual; MOSQUITTO_BIN, RUMQTTD_BIN.
# Needs python3 (for the table) and bash's /dev/tcp.
# The persistence comparison (QoS 1 to persistent sessions, store on and
# off, Mosquitto with persistence) is bench/persistence.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS="$ROOT/bench/.tools"
ROUNDS=3
DURATION=5
BROKERS="midge mosquitto rumqttd"
SCENARIOS="fanin fanout p2p latency conn conn1t storm churn churn1t subs100k subs1"
INSTALL=1
OUT=""
REPORT=""

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --brokers) BROKERS=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        --report) REPORT=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

say() { echo "compare.sh: $*" >&2; }

# report JSONL OUT: the markdown table of medians (min–max) and ratios.
report() {
python3 - "$1" "$2" <<'EOF'
import json, statistics, sys
raw, out = sys.argv[1], sys.argv[2]
rows, meta = [], {}
for l in open(raw):
    if l.strip():
        o = json.loads(l)
        if "meta" in o:
            meta = o["meta"]
        else:
            rows.append(o)
brokers = meta.get("brokers") or sorted({r["label"] for r in rows if "label" in r},
                                        key=lambda b: (b != "midge", b))
peers = [b for b in brokers if b != "midge"]

def vals(case, key, broker):
    return [r[key] for r in rows if r.get("case") == case and r.get("label") == broker
            and r.get(key) is not None and "error" not in r]

# (label, case, key, higher is better, format)
metrics = [
    ("fan-in 8→1, QoS 0, 64 B: msg/s", "fanin", "msgs_per_sec", True, "{:,.0f}"),
    ("fan-in: msg per broker CPU s", "fanin", "msgs_per_cpu_s", True, "{:,.0f}"),
    ("fan-in: loss %", "fanin", "loss_pct", False, "{:.2f}"),
    ("fan-in: broker RSS at the end, kB", "fanin", "broker_rss_end_kb", False, "{:,.0f}"),
    ("fan-out 1→50, QoS 0: deliveries/s", "fanout", "msgs_per_sec", True, "{:,.0f}"),
    ("fan-out: deliveries per broker CPU s", "fanout", "msgs_per_cpu_s", True, "{:,.0f}"),
    ("fan-out: loss %", "fanout", "loss_pct", False, "{:.2f}"),
    ("fan-out: broker RSS at the end, kB", "fanout", "broker_rss_end_kb", False, "{:,.0f}"),
    ("fan-out: broker RSS 3 s after, kB", "fanout", "broker_rss_settled_kb", False, "{:,.0f}"),
    ("16 pairs QoS 1 window 64: msg/s", "p2p", "msgs_per_sec", True, "{:,.0f}"),
    ("16 pairs: msg per broker CPU s", "p2p", "msgs_per_cpu_s", True, "{:,.0f}"),
    ("16 pairs: loss %", "p2p", "loss_pct", False, "{:.2f}"),
    ("16 pairs: p50 µs", "p2p", "p50_us", False, "{:,.0f}"),
    ("latency 5k msg/s QoS 1: p50 µs", "latency", "p50_us", False, "{:,.0f}"),
    ("latency: p99 µs", "latency", "p99_us", False, "{:,.0f}"),
    ("latency: broker CPU s per run", "latency", "broker_cpu_s", False, "{:.2f}"),
    ("10k idle connections: RSS bytes/conn", "conn", "broker_rss_per_conn_bytes", False, "{:,.0f}"),
    ("connect rate, 64 at a time: conn/s", "conn", "connects_per_sec", True, "{:,.0f}"),
    ("connect rate, 64 at a time, 1-thread bench: conn/s", "conn1t", "connects_per_sec", True, "{:,.0f}"),
    ("connect storm, 1000 at a time: conn/s", "storm", "connects_per_sec", True, "{:,.0f}"),
    ("connect+disconnect loop, 64 clients: conn/s", "churn", "connects_per_sec", True, "{:,.0f}"),
    ("connect+disconnect: per broker CPU s", "churn", "msgs_per_cpu_s", True, "{:,.0f}"),
    ("connect+disconnect: CONNACK p99 µs", "churn", "p99_us", False, "{:,.0f}"),
    ("connect+disconnect, 1-thread bench: conn/s", "churn1t", "connects_per_sec", True, "{:,.0f}"),
    ("100k subscriptions, 1 matching: msg/s", "subs100k", "msgs_per_sec", True, "{:,.0f}"),
    ("100k subscriptions: SUBSCRIBE time s", "subs100k", "subscribe_s", False, "{:.2f}"),
    ("1 subscription (same fan-in): msg/s", "subs1", "msgs_per_sec", True, "{:,.0f}"),
]
lines = ["| metric | " + " | ".join(brokers) + " | midge / best peer |",
         "|" + "---|" * (len(brokers) + 2)]
for label, case, key, higher, fmt in metrics:
    v = {b: vals(case, key, b) for b in brokers}
    if not any(v.values()):
        continue
    meds = {b: statistics.median(v[b]) if v[b] else None for b in brokers}
    cells = []
    for b in brokers:
        if not v[b]:
            cells.append("—")
        elif len(v[b]) == 1 or min(v[b]) == max(v[b]):
            cells.append(fmt.format(meds[b]))
        else:
            cells.append("{} ({}–{})".format(fmt.format(meds[b]), fmt.format(min(v[b])), fmt.format(max(v[b]))))
    pv = [meds[p] for p in peers if meds[p] is not None]
    ratio = "—"
    if meds.get("midge") is not None and pv and key != "loss_pct":
        best = max(pv) if higher else min(pv)
        if best:
            ratio = "{:.2f}{}".format(meds["midge"] / best, "" if higher else " (lower is better)")
    lines.append("| {} | {} | {} |".format(label, " | ".join(cells), ratio))
rel = []
for b in brokers:
    a, c = vals("subs100k", "msgs_per_sec", b), vals("subs1", "msgs_per_sec", b)
    rel.append("{:.2f}".format(statistics.median(a) / statistics.median(c)) if a and c else "—")
if any(r != "—" for r in rel):
    lines.append("| 100k subs rate / 1 sub rate | " + " | ".join(rel) + " | |")
errors = [r for r in rows if "error" in r]
n = {b: len([r for r in rows if r.get("label") == b and "error" not in r]) for b in brokers}
with open(out, "w") as f:
    f.write("# Midge vs Mosquitto vs rumqttd — {}\n\n".format(meta.get("date", "?")))
    f.write("Medians (min–max) of {} rounds, {} s of publishing per run, each run on a "
            "fresh broker. Ratio: midge's median / the best peer's median.\n\n".format(
                meta.get("rounds", "?"), meta.get("duration", "?")))
    f.write("\n".join(lines) + "\n\n")
    f.write("- machine: {}\n".format(meta.get("machine", "?")))
    f.write("- load average (1, 5, 15 min) before: {}; after: {}\n".format(
        meta.get("load_start", "?"), meta.get("load_end", "?")))
    f.write("- {}\n".format(meta.get("versions", "?")))
    f.write("- successful runs per broker: {}\n".format(", ".join(f"{b} {n[b]}" for b in brokers)))
    for e in errors:
        f.write("- failed: {} on {} (round {}): {}\n".format(e.get("case"), e.get("label"), e.get("round"), e.get("error")))
    f.write("- command: {}\n".format(meta.get("command", "bench/compare.sh")))
    f.write("- raw results: {}\n".format(raw.rsplit("/", 1)[-1]))
print(open(out).read())
EOF
}

# --report JSONL: only rebuild the table from earlier raw results.
if [ -n "$REPORT" ]; then
    report "$REPORT" "${OUT:-${REPORT%.jsonl}.md}"
    exit 0
fi

# 10 000 idle connections need as many descriptors, in the bench and in the broker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10300 ]; then
    say "warning: open-file limit is $(ulimit -n); the 10 000-connection scenario may fail"
fi

# --- the peers -------------------------------------------------------------
find_mosquitto() {
    for c in "${MOSQUITTO_BIN:-}" /usr/sbin/mosquitto "$(command -v mosquitto 2>/dev/null || true)"; do
        if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
    done
    return 1
}
find_rumqttd() {
    for c in "${RUMQTTD_BIN:-}" "$TOOLS/bin/rumqttd" "$HOME/.cargo/bin/rumqttd" "$(command -v rumqttd 2>/dev/null || true)"; do
        if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
    done
    return 1
}

MOSQUITTO=""
RUMQTTD=""
case " $BROKERS " in *" mosquitto "*)
    if ! MOSQUITTO=$(find_mosquitto) && [ $INSTALL = 1 ]; then
        say "installing mosquitto (apt-get)"
        (apt-get install -y mosquitto >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y mosquitto >/dev/null 2>&1; }) || true
        MOSQUITTO=$(find_mosquitto) || true
    fi
    [ -n "$MOSQUITTO" ] || say "mosquitto not found and could not be installed: continuing without it"
esac
case " $BROKERS " in *" rumqttd "*)
    if ! RUMQTTD=$(find_rumqttd) && [ $INSTALL = 1 ]; then
        say "installing rumqttd 0.20.0 into $TOOLS (cargo install, a few minutes)"
        if ! cargo install rumqttd --version 0.20.0 --root "$TOOLS" >"$ROOT/bench/.rumqttd-install.log" 2>&1; then
            say "cargo install rumqttd failed (see bench/.rumqttd-install.log): continuing without it"
        fi
        RUMQTTD=$(find_rumqttd) || true
    fi
    [ -n "$RUMQTTD" ] || say "rumqttd not available: continuing without it"
esac

# --- midge -----------------------------------------------------------------
if [ -z "${MIDGE_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
    say "building midge and midge_bench (release)"
    (cd "$ROOT" && cargo build --release -p midge --bin midge --bin midge_bench >&2)
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    MIDGE_BIN=${MIDGE_BIN:-$TARGET/release/midge}
    BENCH_BIN=${BENCH_BIN:-$TARGET/release/midge_bench}
fi

midge_rev=${MIDGE_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}

WORK=$(mktemp -d /tmp/midge-compare.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill -9 "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Writes the broker's configuration for PORT; the same limits for all:
# no persistence, no queue or in-flight limit that would drop messages.
write_config() {
    local broker=$1 port=$2
    case $broker in
        midge|mosquitto)
            cat >"$WORK/$broker.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
set_tcp_nodelay true
EOF
            ;;
        rumqttd)
            # next_connection_delay_ms = 0: the default 1 ms would cap accepts at 1000/s.
            cat >"$WORK/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 500
    dynamic_filters = true
EOF
            ;;
    esac
}

start_broker() {
    local broker=$1 port=$2
    write_config "$broker" "$port"
    case $broker in
        midge) "$MIDGE_BIN" -c "$WORK/midge.conf" >"$WORK/broker.log" 2>&1 & ;;
        mosquitto) "$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/broker.log" 2>&1 & ;;
        rumqttd) "$RUMQTTD" -q -c "$WORK/rumqttd.toml" >"$WORK/broker.log" 2>&1 & ;;
    esac
    PID=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        if ! kill -0 "$PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    say "$broker did not start listening on $port:"; tail -5 "$WORK/broker.log" >&2
    return 1
}

stop_broker() {
    [ -n "$PID" ] || return 0
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}

# The issue's parameters, exactly.
scenario_args() {
    case $1 in
        fanin) echo "fanin --publishers 8 --qos 0 --payload 64" ;;
        fanout) echo "fanout --subscribers 50 --qos 0 --payload 64 --settle 3" ;;
        p2p) echo "p2p --pairs 16 --qos 1 --window 64 --payload 64" ;;
        latency) echo "latency --rate 5000 --qos 1 --payload 64" ;;
        conn) echo "conn --connections 10000 --hold 1 --payload 64" ;;
        storm) echo "conn --connections 10000 --connect-concurrency 1000 --hold 0" ;;
        churn) echo "churn --connect-concurrency 64" ;;
        # The same two with the bench on one thread: it then leaves the broker a whole core.
        conn1t) echo "conn --connections 10000 --hold 0 --client-threads 1" ;;
        churn1t) echo "churn --connect-concurrency 64 --client-threads 1" ;;
        subs100k) echo "subs --filters 100000 --publishers 8 --qos 0 --payload 64" ;;
        subs1) echo "subs --filters 1 --publishers 8 --qos 0 --payload 64" ;;
        *) say "unknown scenario $1"; return 1 ;;
    esac
}

available=""
for b in $BROKERS; do
    case $b in
        midge) available="$available midge" ;;
        mosquitto) [ -n "$MOSQUITTO" ] && available="$available mosquitto" ;;
        rumqttd) [ -n "$RUMQTTD" ] && available="$available rumqttd" ;;
        *) say "unknown broker $b" ;;
    esac
done

RAW="$WORK/results.jsonl"
: >"$RAW"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
src=10
runs=0
for round in $(seq "$ROUNDS"); do
    for scen in $SCENARIOS; do
        args=$(scenario_args "$scen")
        for broker in $available; do
            port=$(free_port)
            extra=""
            case $args in
                conn\ *|churn\ *)
                    # Connect scenarios get two fresh source addresses per
                    # run: TIME_WAIT of earlier runs never collides.
                    extra="--source-addrs 127.0.0.$src,127.0.0.$((src + 1))"
                    src=$((src + 2)); [ $src -gt 250 ] && src=10 ;;
            esac
            say "round $round/$ROUNDS: $scen on $broker"
            if ! start_broker "$broker" "$port"; then
                echo "{\"scenario\":\"$scen\",\"label\":\"$broker\",\"round\":$round,\"error\":\"broker did not start\"}" >>"$RAW"
                stop_broker; continue
            fi
            # shellcheck disable=SC2086
            if out=$("$BENCH_BIN" $args $extra --port "$port" --duration "$DURATION" \
                    --broker-pid "$PID" --label "$broker" --json 2>"$WORK/bench.err"); then
                echo "$out" | python3 -c '
import json, sys
for line in sys.stdin:
    o = json.loads(line); o["case"] = sys.argv[1]; o["round"] = int(sys.argv[2]); print(json.dumps(o))
' "$scen" "$round" >>"$RAW"
            else
                err=$(tail -1 "$WORK/bench.err" | tr '"\\' "'/")
                say "  failed: $err"
                echo "{\"case\":\"$scen\",\"label\":\"$broker\",\"round\":$round,\"error\":\"$err\"}" >>"$RAW"
            fi
            stop_broker
            runs=$((runs + 1))
        done
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

midge_version=$("$MIDGE_BIN" --version 2>/dev/null | head -1 || true)
mosq_version="not run"
if [ -n "$MOSQUITTO" ]; then mosq_version=$("$MOSQUITTO" -h 2>/dev/null | head -1 || true); fi
rumqttd_version="not run"
if [ -n "$RUMQTTD" ]; then rumqttd_version="rumqttd 0.20.0"; fi
# Everything the report needs goes into the JSON lines, so --report can
# rebuild the table from them alone.
python3 - >>"$RAW" <<EOF
import json
print(json.dumps({"meta": {
    "date": "$START_DATE", "rounds": $ROUNDS, "duration": $DURATION,
    "brokers": "$available".split(),
    "machine": "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)",
    "load_start": "$LOAD_START", "load_end": "$LOAD_END",
    "versions": "midge: $midge_version, git $midge_rev; mosquitto: $mosq_version; rumqttd: $rumqttd_version",
    "command": "bench/compare.sh --rounds $ROUNDS --duration $DURATION --brokers '$BROKERS' --scenarios '$SCENARIOS'",
}}))
EOF

mkdir -p "$ROOT/bench/results"
if [ -z "$OUT" ]; then
    OUT="$ROOT/bench/results/$(date -u +%Y-%m-%d).md"
    [ -e "$OUT" ] && OUT="$ROOT/bench/results/$(date -u +%Y-%m-%d-%H%M).md"
fi
cp "$RAW" "${OUT%.md}.jsonl"
report "${OUT%.md}.jsonl" "$OUT"
say "wrote $OUT and ${OUT%.md}.jsonl"
