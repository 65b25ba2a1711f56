//! Benchmark helpers.
#![forbid(unsafe_code)]
