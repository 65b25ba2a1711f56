#!/usr/bin/env bash
# The chaos workloads for longer, against the fitz-broker binary on loopback:
# faults through the disconnect proxy, SIGKILL restarts on local storage, the
# broker's RSS sampled from /proc; prints one ledger summary per transport
# and fails when a check does. Bounded: --secs (default 120) split between
# TCP and WebSocket, plus the final checks.
#
#   scripts/soak.sh [--secs N] [--seed S] [--transport tcp|ws|both]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${FITZ_JOBS:-2}"
cargo build --release -j "$jobs" -p fitz-broker -p fitz-tests --bin fitz-broker --bin soak
exec target/release/soak --broker target/release/fitz-broker "$@"
