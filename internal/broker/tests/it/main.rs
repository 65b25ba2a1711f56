//! The broker's integration tests, one binary (modules per area) so the
//! workspace links one test executable per crate instead of one per file.
//! Everything runs against embedded brokers or the broker binary started by
//! the test itself (`support::binary`).

#[macro_use]
mod support;

mod abuse;
mod auth;
mod interop;
mod interop_queue_lease;
mod interop_rpc;
mod interop_schedule;
mod interop_stream;
mod kv;
mod lease;
mod limits;
mod notice;
mod persistence;
mod protocol;
mod queue;
mod rpc;
mod schedule;
mod stream;
mod streams;
