//! The codec's integration tests in one binary: golden vectors, proptest
//! round trips, regressions. (`alloc.rs` stays apart: it installs a counting
//! global allocator and has its own `main`.)

mod golden;
mod regressions;
mod roundtrip;
