#!/usr/bin/env bash
# Interleaved A/B of two builds of the same criterion bench binaries, for
# changes whose cost is below the machine's drift (e.g. telemetry):
#
#   # once per side, at each commit:
#   cargo bench -p fitz-bench --bench e2e_latency --bench e2e_throughput --no-run
#   mkdir -p /tmp/ab/A && cp target/release/deps/e2e_{latency,throughput}-<hash> /tmp/ab/A/
#   # … the same into /tmp/ab/B at the other commit, then:
#   ROUNDS=10 scripts/bench-ab.sh /tmp/ab/A /tmp/ab/B
#
# Runs A B A B … ROUNDS times (short warm-up/measurement), each run with its
# own CRITERION_HOME, then prints per-side medians of criterion's median
# estimates, their range, and the change. Binaries are matched by prefix.
set -euo pipefail

A="$1"
B="$2"
ROUNDS="${ROUNDS:-6}"
OUT="${OUT:-$(mktemp -d)}"
LAT_FILTER="${LAT_FILTER:-^(lat_kv_get|lat_notice_publish_notify)/ours_tcp$}"
TPUT_FILTER="${TPUT_FILTER:-^tput_notice_32/ours_tcp$}"
OPTS=(--warm-up-time "${WARMUP:-0.5}" --measurement-time "${MEASURE:-2}" --noplot)

for r in $(seq 1 "$ROUNDS"); do
    for side in A B; do
        dir="$A"
        [[ $side == B ]] && dir="$B"
        CRITERION_HOME="$OUT/$side/$r" "$dir"/e2e_latency-* --bench "$LAT_FILTER" "${OPTS[@]}" >/dev/null 2>&1
        CRITERION_HOME="$OUT/$side/$r" "$dir"/e2e_throughput-* --bench "$TPUT_FILTER" "${OPTS[@]}" >/dev/null 2>&1
        echo "round $r $side (load $(cut -d' ' -f1 /proc/loadavg))"
    done
done

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
ids = sorted({os.path.relpath(p, f"{out}/A/1").rsplit("/new/", 1)[0]
              for p in glob.glob(f"{out}/A/1/**/new/estimates.json", recursive=True)})
for bench in ids:
    med = {}
    for side in "AB":
        med[side] = [json.load(open(p))["median"]["point_estimate"] / 1e3
                     for p in glob.glob(f"{out}/{side}/*/{bench}/new/estimates.json")]
    a, b = statistics.median(med["A"]), statistics.median(med["B"])
    print(f"{bench}: A {a:.2f} µs [{min(med['A']):.2f}–{max(med['A']):.2f}]  "
          f"B {b:.2f} µs [{min(med['B']):.2f}–{max(med['B']):.2f}]  "
          f"change {100 * (b / a - 1):+.1f}% (n={len(med['A'])}+{len(med['B'])})")
PY
