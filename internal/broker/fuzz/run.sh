#!/usr/bin/env bash
# Fuzzes whole broker sessions. Needs cargo-fuzz (`cargo install cargo-fuzz`);
# runs on the stable toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z
# flags). Seeds the corpus with realistic sessions first. Findings land in
# artifacts/sessions/; copy each into ../fuzz/regressions/ (the broker's
# `fuzzer_findings_stay_fixed` test replays them) once fixed.
#
#   internal/broker/fuzz/run.sh [libFuzzer options, e.g. -runs=10000000 -jobs=2]
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/sessions
FITZ_FUZZ_SEEDS_DIR="$PWD/corpus/sessions" cargo test --manifest-path ../Cargo.toml \
    --lib fuzzing::tests::write_seed_corpus -q >/dev/null
RUSTC_BOOTSTRAP=1 exec cargo fuzz run -O sessions corpus/sessions -- "$@"
