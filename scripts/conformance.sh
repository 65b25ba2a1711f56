#!/usr/bin/env bash
# Runs the conformance matrix — CS-001 … CS-018 over {tcp, ws} × {anonymous,
# jwt} — and prints one summary line per cell with its result file.
#
# Usage: scripts/conformance.sh [CELL|CS-xxx ...]
#
# Against the embedded brokers by default. With FITZ_BROKER_ANON_TCP_ADDR,
# FITZ_BROKER_AUTH_TCP_ADDR, FITZ_BROKER_ANON_WS_ADDR,
# FITZ_BROKER_AUTH_WS_ADDR and FITZ_BROKER_JWT_HMAC_SECRET all set, against
# that pair instead (e.g. scripts/brokers.sh start, or compose.yml).
# Arguments narrow the run (a cell such as ws-jwt, a scenario such as
# CS-010); so does FITZ_CONFORMANCE_CELLS=tcp-anonymous,ws-jwt.
#
# Reports go to $FITZ_CONFORMANCE_OUT, default <target dir>/conformance
# (target/ unless CARGO_TARGET_DIR says otherwise). Exits non-zero when a
# scenario failed, a selected cell wrote no report, or the build failed.
set -uo pipefail
cd "$(dirname "$0")/.."

jobs="${FITZ_JOBS:-2}"
target="${CARGO_TARGET_DIR:-target}"
[[ "$target" == /* ]] || target="$PWD/$target"
out="${FITZ_CONFORMANCE_OUT:-$target/conformance}"
[[ "$out" == /* ]] || out="$PWD/$out"
export FITZ_CONFORMANCE_OUT="$out"

all_cells=(tcp-anonymous tcp-jwt ws-anonymous ws-jwt)
cells=()
for arg in "$@"; do
    for c in "${all_cells[@]}"; do [[ "$arg" == "$c" ]] && cells+=("$c"); done
done
if [[ -n "${FITZ_CONFORMANCE_CELLS:-}" && "${FITZ_CONFORMANCE_CELLS}" != all ]]; then
    IFS=',' read -r -a from_env <<<"$FITZ_CONFORMANCE_CELLS"
    for c in "${from_env[@]}"; do cells+=("${c// /}"); done
fi
((${#cells[@]})) || cells=("${all_cells[@]}")

external=no
if [[ -n "${FITZ_BROKER_ANON_TCP_ADDR:-}" && -n "${FITZ_BROKER_AUTH_TCP_ADDR:-}" &&
    -n "${FITZ_BROKER_ANON_WS_ADDR:-}" && -n "${FITZ_BROKER_AUTH_WS_ADDR:-}" &&
    -n "${FITZ_BROKER_JWT_HMAC_SECRET:-}" ]]; then
    external=yes
fi
if [[ $external == yes ]]; then
    echo "==> conformance against the external brokers" \
        "(anon tcp $FITZ_BROKER_ANON_TCP_ADDR ws $FITZ_BROKER_ANON_WS_ADDR," \
        "auth tcp $FITZ_BROKER_AUTH_TCP_ADDR ws $FITZ_BROKER_AUTH_WS_ADDR)"
else
    echo "==> conformance against embedded brokers (set FITZ_BROKER_* for an external pair)"
fi

# A stale report of a previous run must not pass for this one.
mkdir -p "$out"
for c in "${cells[@]}"; do rm -f "$out/results-$c.json"; done

cargo test -j "$jobs" -p fitz-tests --test conformance -- "$@"
rc=$?

# One line per cell, read back from the reports (the runner's own format:
# pretty JSON, summary fields four spaces deep).
field() { sed -n "s/^    \"$2\": \([0-9]*\),\{0,1\}$/\1/p" "$1" | head -n 1; }
echo
echo "==> conformance summary"
printf '%-14s %-6s %-9s %s\n' cell status passed report
missing=0
for c in "${cells[@]}"; do
    f="$out/results-$c.json"
    if [[ ! -f "$f" ]]; then
        printf '%-14s %-6s %-9s %s\n' "$c" none - "(no report written)"
        missing=1
        continue
    fi
    status=$(sed -n 's/^  "overall_status": "\([a-z]*\)",$/\1/p' "$f")
    printf '%-14s %-6s %-9s %s\n' "$c" "${status:-?}" \
        "$(field "$f" passed)/$(field "$f" total)" "$f"
    # The failed scenarios by id.
    awk '/"scenario_id":/ { gsub(/[",]/, "", $2); id = $2 }
         /"verdict": "fail"/ { print "    failed: " id }' "$f"
done

if ((rc != 0 || missing != 0)); then
    echo "==> conformance FAILED"
    exit 1
fi
echo "==> conformance ok"
