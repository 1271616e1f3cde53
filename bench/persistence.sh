#!/usr/bin/env bash
# The persistence comparison: QoS 1 throughput to persistent sessions
# (midge_bench p2p --persistent: 16 pairs, QoS 1, window 64, 64 B, the
# subscribers on clean session 0) with the store on and off, on loopback.
#
# Variants, run in turn (A B C D A B C D ...), each on a freshly started
# broker with a fresh, empty store directory under /tmp (which must be a
# real disk, not tmpfs, for the fsyncs to mean anything):
#   midge-off          midge, persistence false
#   midge-sync-always  midge, persistence true, persistence_sync always
#                      (fsync before every acknowledgement: the default)
#   midge-sync-10ms    midge, persistence true, persistence_sync 10
#   mosquitto-on       Debian's Mosquitto, persistence true, its default
#                      autosave_interval (1800 s): during a run it writes
#                      nothing to disk, so it guarantees nothing on a crash
#   mosquitto-off      (only if asked for with --variants) persistence false
# Writes the raw JSON lines and a markdown table of medians (min–max) with
# the ratios against midge-off and mosquitto-on to bench/results/ and prints
# the table.
#
# Usage: bench/persistence.sh [--rounds 3] [--duration 5] [--variants "..."] [--window 64]
#                             [--offline] [--out FILE]
#        bench/persistence.sh --report RESULTS.jsonl [--out FILE]   (table only)
# --window changes the publishers' window (64 is the issue's scenario; a
# larger one shows whether a variant is bound by commit latency).
# --offline passes --offline to every run: the subscribers subscribe and
# disconnect, so every message is queued for an offline session (and, with
# persistence on, written to the store before its PUBACK); msg/s is then the
# publish phase's rate of acknowledged publishes, and the table gives the
# time the subscribers took to drain their queues after reconnecting.
# Default output: bench/results/persistence-offline-DATE.md.
# Environment: MIDGE_BIN, BENCH_BIN (prebuilt binaries; otherwise built in
# release with cargo, CARGO_TARGET_DIR as usual), MOSQUITTO_BIN.
# Needs python3 and bash's /dev/tcp.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=3
DURATION=5
VARIANTS="midge-off midge-sync-always midge-sync-10ms mosquitto-on"
WINDOW=64
OUT=""
REPORT=""
OFFLINE=0

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --variants) VARIANTS=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --report) REPORT=$2; shift 2 ;;
        --offline) OFFLINE=1; shift ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        *) echo "persistence.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

say() { echo "persistence.sh: $*" >&2; }

# report JSONL OUT: the markdown table.
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
variants = meta.get("variants") or sorted({r["label"] for r in rows if "label" in r})

def vals(v, key):
    return [r[key] for r in rows if r.get("label") == v and r.get(key) is not None and "error" not in r]

def cell(v, key, fmt):
    x = vals(v, key)
    if not x:
        return "—"
    m = statistics.median(x)
    if len(x) == 1 or min(x) == max(x):
        return fmt.format(m)
    return "{} ({}–{})".format(fmt.format(m), fmt.format(min(x)), fmt.format(max(x)))

def med(v, key):
    x = vals(v, key)
    return statistics.median(x) if x else None

def ratio(v, ref):
    a, b = med(v, "msgs_per_sec"), med(ref, "msgs_per_sec")
    return "{:.2f}".format(a / b) if a is not None and b else "—"

offline = bool(meta.get("offline"))
cols = [("msg/s", "msgs_per_sec", "{:,.0f}"),
        ("msg per broker CPU s", "msgs_per_cpu_s", "{:,.0f}"),
        ("loss %", "loss_pct", "{:.2f}")]
if offline:
    # Latency means nothing when the sessions were away: the drain instead.
    cols += [("drain s", "drain_s", "{:,.2f}")]
else:
    cols += [("p50 µs", "p50_us", "{:,.0f}"),
             ("p99 µs", "p99_us", "{:,.0f}")]
cols += [("disk written, MB", "broker_disk_write_mb", "{:,.1f}")]
head = ["variant"] + [c[0] for c in cols] + ["/ midge-off", "/ mosquitto-on"]
lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for v in variants:
    cells = [cell(v, k, f) for _, k, f in cols]
    lines.append("| {} | {} | {} | {} |".format(v, " | ".join(cells), ratio(v, "midge-off"), ratio(v, "mosquitto-on")))
errors = [r for r in rows if "error" in r]
n = {v: len([r for r in rows if r.get("label") == v and "error" not in r]) for v in variants}
with open(out, "w") as f:
    f.write("# QoS 1 to {}persistent sessions, persistence on and off — {}\n\n".format(
        "offline " if offline else "", meta.get("date", "?")))
    f.write("p2p: 16 pairs, QoS 1, window {}, 64 B, subscribers on persistent sessions "
            "(clean session 0){}. Medians (min–max) of {} rounds, {} s of publishing per run, "
            "each run on a fresh broker with an empty store directory. Ratios: msg/s median "
            "over the named variant's.\n\n".format(
                meta.get("window", 64),
                ", offline while the publishers publish (`--offline`)" if offline else "",
                meta.get("rounds", "?"), meta.get("duration", "?")))
    f.write("\n".join(lines) + "\n\n")
    if offline:
        f.write("- offline: the subscribers subscribed and disconnected before the publishers "
                "started, so every message was queued for an offline session; msg/s and msg per "
                "broker CPU s are publishes acknowledged by the broker during the publish phase; "
                "loss counts acknowledged publishes not delivered after the subscribers "
                "reconnected; drain s is from reconnecting to the last delivery\n")
    f.write("- disk written: the broker's `write_bytes` from /proc/PID/io at the end of the run "
            "(what reached the block layer, the journal and its checkpoints)\n")
    f.write("- machine: {}\n".format(meta.get("machine", "?")))
    f.write("- store directory on: {}\n".format(meta.get("store_fs", "?")))
    f.write("- load average (1, 5, 15 min) before: {}; after: {}\n".format(
        meta.get("load_start", "?"), meta.get("load_end", "?")))
    f.write("- {}\n".format(meta.get("versions", "?")))
    f.write("- successful runs: {}\n".format(", ".join(f"{v} {n[v]}" for v in variants)))
    for e in errors:
        f.write("- failed: {} (round {}): {}\n".format(e.get("label"), e.get("round"), e.get("error")))
    f.write("- command: {}\n".format(meta.get("command", "bench/persistence.sh")))
    f.write("- raw results: {}\n".format(raw.rsplit("/", 1)[-1]))
print(open(out).read())
EOF
}

if [ -n "$REPORT" ]; then
    report "$REPORT" "${OUT:-${REPORT%.jsonl}.md}"
    exit 0
fi

MOSQUITTO=""
for c in "${MOSQUITTO_BIN:-}" /usr/sbin/mosquitto "$(command -v mosquitto 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then MOSQUITTO=$c; break; fi
done
case " $VARIANTS " in *" mosquitto-"*)
    if [ -z "$MOSQUITTO" ]; then
        say "installing mosquitto (apt-get)"
        (apt-get install -y mosquitto >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y mosquitto >/dev/null 2>&1; }) || true
        [ -x /usr/sbin/mosquitto ] && MOSQUITTO=/usr/sbin/mosquitto
    fi
    [ -n "$MOSQUITTO" ] || say "mosquitto not found and could not be installed: its variants are skipped"
esac

if [ -z "${MIDGE_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
    say "building midge and midge_bench (release)"
    (cd "$ROOT" && cargo build --release -p midge --bin midge --bin midge_bench >&2)
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    MIDGE_BIN=${MIDGE_BIN:-$TARGET/release/midge}
    BENCH_BIN=${BENCH_BIN:-$TARGET/release/midge_bench}
fi
midge_rev=${MIDGE_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}

WORK=$(mktemp -d /tmp/midge-persist.XXXXXX)
# Mosquitto started as root drops to the mosquitto user: let it into its store.
chmod 755 "$WORK"
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill -9 "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# write_config VARIANT PORT STORE: the configuration file's path on stdout.
# Beyond persistence, the same lines as compare.sh: no limit that drops.
write_config() {
    local v=$1 port=$2 store=$3 conf="$WORK/$1.conf"
    cat >"$conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
set_tcp_nodelay true
EOF
    case $v in
        midge-off|mosquitto-off) echo "persistence false" >>"$conf" ;;
        midge-sync-always) printf 'persistence true\npersistence_location %s/\npersistence_sync always\n' "$store" >>"$conf" ;;
        midge-sync-10ms) printf 'persistence true\npersistence_location %s/\npersistence_sync 10\n' "$store" >>"$conf" ;;
        mosquitto-on) printf 'persistence true\npersistence_location %s/\n' "$store" >>"$conf" ;;
    esac
    echo "$conf"
}

start_broker() {
    local v=$1 port=$2 store=$3 conf
    conf=$(write_config "$v" "$port" "$store")
    case $v in
        midge-*) "$MIDGE_BIN" -c "$conf" >"$WORK/broker.log" 2>&1 & ;;
        mosquitto-*) "$MOSQUITTO" -c "$conf" >"$WORK/broker.log" 2>&1 & ;;
    esac
    PID=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        if ! kill -0 "$PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    say "$v did not start listening on $port:"; tail -5 "$WORK/broker.log" >&2
    return 1
}

stop_broker() {
    [ -n "$PID" ] || return 0
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}

available=""
for v in $VARIANTS; do
    case $v in
        midge-off|midge-sync-always|midge-sync-10ms) available="$available $v" ;;
        mosquitto-on|mosquitto-off) [ -n "$MOSQUITTO" ] && available="$available $v" ;;
        *) say "unknown variant $v" ;;
    esac
done

RAW="$WORK/results.jsonl"
: >"$RAW"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
ARGS="p2p --pairs 16 --qos 1 --window $WINDOW --payload 64 --persistent"
OFFLINE_OPT=""
if [ "$OFFLINE" = 1 ]; then ARGS="$ARGS --offline"; OFFLINE_OPT=" --offline"; fi
run=0
for round in $(seq "$ROUNDS"); do
    for v in $available; do
        run=$((run + 1))
        port=$(free_port)
        store="$WORK/store-$run"
        mkdir -p "$store"
        case $v in mosquitto-*) chown mosquitto: "$store" 2>/dev/null || chmod 777 "$store" ;; esac
        say "round $round/$ROUNDS: $v"
        if ! start_broker "$v" "$port" "$store"; then
            echo "{\"label\":\"$v\",\"round\":$round,\"error\":\"broker did not start\"}" >>"$RAW"
            stop_broker; continue
        fi
        # shellcheck disable=SC2086
        if out=$("$BENCH_BIN" $ARGS --port "$port" --duration "$DURATION" \
                --broker-pid "$PID" --label "$v" --json 2>"$WORK/bench.err"); then
            disk=$(awk '/^write_bytes/ {print $2}' "/proc/$PID/io" 2>/dev/null || echo null)
            stop_broker
            # The store after a clean stop: proof the variant really persisted.
            stored=$(du -sb "$store" | cut -f1)
            echo "$out" | python3 -c '
import json, sys
disk = sys.argv[2]
for line in sys.stdin:
    o = json.loads(line); o["round"] = int(sys.argv[1])
    o["broker_disk_write_mb"] = round(int(disk) / 1e6, 3) if disk.isdigit() else None
    o["store_bytes_after_stop"] = int(sys.argv[3])
    print(json.dumps(o))
' "$round" "$disk" "$stored" >>"$RAW"
        else
            err=$(tail -1 "$WORK/bench.err" | tr '"\\' "'/")
            say "  failed: $err"
            echo "{\"label\":\"$v\",\"round\":$round,\"error\":\"$err\"}" >>"$RAW"
            stop_broker
        fi
        rm -rf "$store"
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

midge_version=$("$MIDGE_BIN" --version 2>/dev/null | head -1 || true)
mosq_version="not run"
if [ -n "$MOSQUITTO" ]; then mosq_version=$("$MOSQUITTO" -h 2>/dev/null | head -1 || true); fi
python3 - >>"$RAW" <<EOF
import json
print(json.dumps({"meta": {
    "date": "$START_DATE", "rounds": $ROUNDS, "duration": $DURATION,
    "variants": "$available".split(),
    "machine": "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)",
    "store_fs": "$(df -T "$WORK" | awk 'NR==2 {print $2 " on " $1}')",
    "load_start": "$LOAD_START", "load_end": "$LOAD_END",
    "versions": "midge: $midge_version, git $midge_rev; mosquitto: $mosq_version",
    "command": "bench/persistence.sh --rounds $ROUNDS --duration $DURATION --window $WINDOW$OFFLINE_OPT --variants '$VARIANTS'",
    "window": $WINDOW,
    "offline": $([ "$OFFLINE" = 1 ] && echo True || echo False),
    "bench_args": "$ARGS",
}}))
EOF

mkdir -p "$ROOT/bench/results"
if [ -z "$OUT" ]; then
    name=persistence
    [ "$OFFLINE" = 1 ] && name=persistence-offline
    OUT="$ROOT/bench/results/$name-$(date -u +%Y-%m-%d).md"
    [ -e "$OUT" ] && OUT="$ROOT/bench/results/$name-$(date -u +%Y-%m-%d-%H%M).md"
fi
cp "$RAW" "${OUT%.md}.jsonl"
report "${OUT%.md}.jsonl" "$OUT"
say "wrote $OUT and ${OUT%.md}.jsonl"
