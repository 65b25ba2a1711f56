#!/usr/bin/env bash
# Runs the benchmark profile and writes docs/PERF.md and target/perf/summary.json.
#
#   scripts/bench.sh            # everything: raw baselines, ours vs official over
#                               # TCP and WS (latency, throughput), codec and client core
#   scripts/bench.sh e2e_latency lat_rpc    # one bench target, criterion filter
#   scripts/bench.sh versus     # only the interleaved comparison with NATS and
#                               # Redis and the memory figures (ROUNDS=5, ~5 min)
#
# `versus` needs the `competitors` feature of fitz-bench (async-nats, redis),
# the release `fitz-broker` binary, and `nats-server` / `redis-server`: this
# script installs the two Debian packages when missing (apt-get) and the bench
# skips a competitor's rows, saying why, when its server still is not there.
#
# Criterion runs short here (WARMUP / MEASURE seconds, env-overridable); the
# benches themselves stay runnable on their own with criterion's defaults:
#   cargo bench -p fitz-bench --bench e2e_throughput -- tput_rpc_256
# The build is not part of the ≤ 10 minute budget (it runs first, with -j2).
set -euo pipefail
cd "$(dirname "$0")/.."

WARMUP="${WARMUP:-0.3}"
MEASURE="${MEASURE:-1}"
BENCHES=(baseline e2e_latency e2e_throughput codec client_core versus)
FILTER=()
if [[ $# -gt 0 ]]; then
    BENCHES=("$1")
    shift
    FILTER=("$@")
fi

mkdir -p target/perf
load() { cut -d' ' -f1 /proc/loadavg; }

need_server() {
    # $1: the command, $2: the Debian package.
    command -v "$1" >/dev/null && return 0
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
        echo "== installing $2"
        { apt-get update -qq && apt-get install -y -qq "$2"; } >/dev/null 2>&1 || true
    fi
    command -v "$1" >/dev/null || echo "== $1 not available (no root or apt-get failed): its rows are skipped"
}

FEATURES=()
if [[ " ${BENCHES[*]} " == *" versus "* ]]; then
    need_server nats-server nats-server
    need_server redis-server redis-server
    FEATURES=(--features competitors)
    echo "== building the broker binary"
    cargo build -p fitz-broker --release -j2 --bin fitz-broker
fi

echo "== building benches"
SELECTED=()
for b in "${BENCHES[@]}"; do SELECTED+=(--bench "$b"); done
cargo bench -p fitz-bench -j2 "${FEATURES[@]}" "${SELECTED[@]}" --no-run

LOAD_BEFORE="$(load)"
START="$(date +%s)"
echo "== load before: $LOAD_BEFORE ($(nproc) cores)"
for b in "${BENCHES[@]}"; do
    echo "== $b"
    if [[ $b == versus ]]; then
        cargo bench -p fitz-bench -j2 "${FEATURES[@]}" --bench versus 2>&1 | tee target/perf/versus.log
        continue
    fi
    cargo bench -p fitz-bench -j2 "${FEATURES[@]}" --bench "$b" -- "${FILTER[@]}" \
        --warm-up-time "$WARMUP" --measurement-time "$MEASURE" --noplot \
        2>&1 | tee "target/perf/$b.log"
done
END="$(date +%s)"
LOAD_AFTER="$(load)"

CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)"
cat > target/perf/machine.json <<JSON
{"cores": $(nproc), "cpu": "$CPU", "kernel": "$(uname -sr)",
 "rustc": "$(rustc --version | cut -d' ' -f2)", "load_before": "$LOAD_BEFORE",
 "load_after": "$LOAD_AFTER", "date": "$(date -u +%Y-%m-%dT%H:%MZ)",
 "duration_s": $((END - START))}
JSON

python3 bench/report.py .
echo "== measured in $((END - START)) s; load $LOAD_BEFORE -> $LOAD_AFTER"
