//! The SDK's integration tests in one binary, a module per area, against
//! the embedded brokers (or the external pair, see docs/TESTING.md). The
//! conformance runner (`tests/conformance/`) has its own harness.

mod auth;
mod chaos;
mod errors;
mod faults;
mod kv;
mod lease;
mod notice;
mod queue;
mod reconnect;
mod rpc;
mod schedule;
mod stream;
mod telemetry;
mod tls;
mod websocket;
