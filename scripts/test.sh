#!/usr/bin/env bash
# What CI runs: format check, clippy with warnings denied, the whole test suite,
# the acceptance table checked against it (docs/ACCEPTANCE.md), docs with
# warnings denied, and every benchmark built.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${FITZ_JOBS:-2}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets -j "$jobs" -- -D warnings

step "cargo test"
cargo test --workspace -j "$jobs"

# Every client acceptance criterion names tests that exist (lists, runs
# nothing; the binaries were just built).
step "acceptance criteria (docs/ACCEPTANCE.md)"
FITZ_JOBS="$jobs" scripts/acceptance.sh

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -j "$jobs"

# Built with the dev profile the tests already compiled everything in, so
# this links the bench binaries without a second, optimized build of the
# whole workspace (`scripts/bench.sh` builds them optimized to run them).
step "benchmarks compile"
cargo build --workspace --benches -j "$jobs"

step "ok"
