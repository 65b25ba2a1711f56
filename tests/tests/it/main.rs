//! The SDK's integration tests in one binary, a module per area, against
//! the embedded brokers (or the external pair, see docs/TESTING.md). The
//! conformance runner (`tests/conformance/`) has its own harness.

mod acceptance_frames;
mod acceptance_lease;
mod acceptance_notice;
mod acceptance_rpc;
mod acceptance_schedule;
mod acceptance_stream;
mod auth;
mod cancel;
mod chaos;
mod drain;
mod errors;
mod faults;
mod guide;
mod kv;
mod lease;
mod lease_observer;
mod memory;
mod notice;
mod queue;
mod reconnect;
mod rpc;
mod schedule;
mod stream;
mod sync;
mod sync_crash;
mod sync_feed;
mod sync_lanes;
mod sync_model;
mod sync_regressions;
mod telemetry;
mod tls;
mod websocket;
