//! An async client for the [Fitz](https://github.com/cntryl/fitz) multi-domain
//! broker: KV, Queue, RPC, Lease, Notice, Stream and Schedule over one
//! connection.
//!
//! One [`Client`] owns one connection (TCP, TLS, WebSocket or WSS) run by a
//! single background task; the seven domain views ([`Client::kv`],
//! [`Client::queue`], …) are cheap handles on it. The client
//!
//! * negotiates capabilities from the broker's SERVER_HELLO and correlates
//!   requests when the broker supports it (falling back to one request per
//!   message type on the wire for legacy brokers);
//! * reconnects with jittered backoff, asking the [`TokenProvider`] for a
//!   fresh token each time, and restores subscriptions and workers before
//!   reporting [`State::Authenticated`], so their streams keep flowing;
//! * fails handles that cannot outlive their session (transactions,
//!   reservations, leases, append sessions) with [`ErrorKind::Stale`]
//!   rather than acting on something the broker has forgotten;
//! * never lets a slow subscriber stall the connection ([`Overflow`]);
//! * reports every failure as one [`Error`] with an [`ErrorKind`], the
//!   broker's code, [`Error::is_retryable`] and [`Error::maybe_applied`].
//!
//! The quickest way in is the tour, which walks every domain against a
//! broker it starts in-process: `cargo run -p fitz --example tour`
//! (`fitz/examples/tour.rs`).
//!
//! # Connecting
//!
//! ```no_run
//! # async fn demo() -> fitz::Result<()> {
//! use std::time::Duration;
//! use fitz::{Client, ReconnectPolicy};
//!
//! let client = Client::builder("ws://127.0.0.1:4090/ws", || async {
//!     // Asked before every connection attempt, reconnects included.
//!     std::env::var("FITZ_TOKEN")
//! })
//! .request_timeout(Duration::from_secs(5))
//! .reconnect(ReconnectPolicy::default())
//! .service_name("orders-api")
//! .build()?;
//! client.connect_when_ready(Duration::from_secs(30)).await?;
//! // … use the domains …
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! [`Client::anonymous`] is the short form for brokers without
//! authentication.
//!
//! # The domains
//!
//! Routes are `scheme://realm/area/resource` (Schedule adds an operation
//! segment, RPC allows any depth); patterns may use whole-segment `*` (one
//! segment) and `**` (any number). Routes are checked locally before
//! anything is sent. Bodies are anything `Into<Bytes>`, keys anything
//! `AsRef<[u8]>`, and what comes back is [`bytes::Bytes`], sharing the
//! received frame's memory. With the `serde` feature (on by default) every
//! domain has `*_json` helpers.
//!
//! Live updates have one shape in every domain that has them (all but RPC,
//! whose workers [`Rpc::serve`] instead): `subscribe(pattern)`, or
//! `subscribe_with(pattern, options)` for a buffer of its own, returns a
//! `Stream` of `Result<item>` that survives reconnects, ends with at most
//! one error, and unsubscribes when dropped.
//!
//! | domain | handle | module | in short |
//! |---|---|---|---|
//! | KV | [`Kv`] | [`kv`] | transactions over one resource, scans, change subscriptions |
//! | Queue | [`Queue`] | [`queue`] | at-least-once work queues: enqueue, reserve, extend, complete, managed workers |
//! | RPC | [`Rpc`] | [`rpc`] | calls answered once or as a stream by workers; deadlines and cancellation |
//! | Lease | [`Leases`] | [`lease`] | exclusive ownership with fencing tokens, waiting in line, managed renewal |
//! | Notice | [`Notice`] | [`notice`] | fire-and-forget fan-out to live subscriptions |
//! | Stream | [`Streams`] | [`stream`] | durable append-only logs: atomic batches, paged and filtered reads, following |
//! | Schedule | [`Schedule`] | [`schedule`] | durable cron schedules fired to subscriptions |
//!
//! ```no_run
//! # async fn demo(client: fitz::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use fitz::kv::{Durability, TxMode};
//! use fitz::schedule::DeliveryMode;
//! use futures_util::StreamExt;
//!
//! // KV: a read-write transaction holds the resource until commit.
//! let mut tx = client.kv().begin("kv://prod/shop/carts", TxMode::ReadWrite).await?;
//! tx.put("cart:42", "3 apples").await?;
//! tx.commit(Durability::Sync).await?;
//!
//! // Queue: a message stays invisible to others while reserved.
//! let queue = client.queue();
//! queue.enqueue("queue://prod/billing/invoices", "invoice #1").await?;
//! for job in queue.reserve("queue://prod/billing/invoices", Default::default()).await? {
//!     job.complete().await?;
//! }
//!
//! // RPC: one worker answers each call.
//! let answer = client.rpc().request("rpc://prod/greeter/hello", "fitz").await?;
//!
//! // Lease: one owner at a time; the fencing token grows with every owner.
//! let lease = client
//!     .lease()
//!     .acquire("lease://prod/billing/nightly", "worker-7", Duration::from_secs(30))
//!     .await?;
//! println!("fencing token {}", lease.fencing_token());
//! lease.release().await?;
//!
//! // Notice: delivered to whoever listens right now.
//! let mut deploys = client.notice().subscribe("notice://prod/ops/*").await?;
//! client.notice().publish("notice://prod/ops/deploys", "v42").await?;
//! let deployed = deploys.next().await;
//!
//! // Stream: a batch becomes visible atomically; readers choose the offset.
//! let mut session = client.stream().begin("stream://prod/orders/o-1").await?;
//! session.append("created").await?;
//! session.commit(Durability::Sync).await?;
//! let last = client.stream().last("stream://prod/orders/o-1").await?;
//!
//! // Schedule: the broker fires the payload when the cron expression is due.
//! client
//!     .schedule()
//!     .create("schedule://prod/reports/daily/run", "0 6 * * *", DeliveryMode::Single, "{}")
//!     .await?;
//! # let _ = (answer, deployed, last); Ok(()) }
//! ```
//!
//! # Errors
//!
//! One [`Error`] type for everything: branch on [`Error::kind`], read the
//! broker's code with [`Error::code`] (named in [`codes`]), and decide what
//! to do next with [`Error::is_retryable`] and [`Error::maybe_applied`] (the
//! broker may have acted although the call failed). See the [`Error`] docs
//! and [`Event`] for connection lifecycle events.
//!
//! # Retries and cancel safety
//!
//! Replay-safe reads are retried under a [`RetryPolicy`]
//! ([`ClientBuilder::retry`], or per view: `client.kv().with_retry(..)`);
//! a Queue ENQUEUE only when opted in ([`ClientBuilder::enqueue_retry`]) and
//! only after the broker answered that it stored nothing. Nothing else that
//! changes state is retried. Every async method documents under
//! "Cancel safety" what dropping its future (a lost `tokio::select!` race)
//! does.
//!
//! # Features
//!
//! * `serde` (default): the `*_json` helpers (`put_json`, `enqueue_json`,
//!   `request_json`, `publish_json`, `append_json`, `create_json`, the
//!   `json()` accessors of received items, JSON workers). A value that
//!   cannot be encoded fails with [`ErrorKind::InvalidArgument`], a payload
//!   that is not JSON of the requested type with [`ErrorKind::Decode`].
//! * `embedded-broker`: `fitz::embedded`, clients of an embedded
//!   `fitz_broker::Broker` over in-memory pipes instead of sockets, for
//!   testing services (see the README's "Testing your service").
//! * `sync`: `fitz::sync`, the offline-first layer, part 1: a durable local
//!   store (redb) and an outbox that applies queued KV mutations exactly
//!   once (see the README's "Offline-first (feature `sync`, part 1)").
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod client;
mod connection;
mod drain;
#[cfg(feature = "embedded-broker")]
pub mod embedded;
mod endpoint;
mod error;
mod events;
#[cfg(feature = "serde")]
mod json;
pub mod kv;
pub mod lease;
pub mod notice;
mod options;
pub mod queue;
mod retry;
pub mod rpc;
pub mod schedule;
pub mod stream;
#[cfg(feature = "sync")]
pub mod sync;
pub mod telemetry;
#[cfg(test)]
mod test_support;
mod token;
pub mod transport;

pub use client::{Client, ClientBuilder};
pub use drain::DrainReport;
pub use error::{Error, ErrorKind, Result};
pub use events::{Event, Events, State, SubscriptionId};
pub use fitz_protocol::Capabilities;
/// The broker's error-code registry: named constants, names, retryability
/// and whether a failed operation may have been applied.
pub use fitz_protocol::codes;
pub use kv::Kv;
pub use lease::Leases;
pub use notice::Notice;
pub use options::{Overflow, ReconnectPolicy, SubscriptionOptions, TlsConfig};
pub use queue::Queue;
pub use retry::{Jitter, RetryPolicy};
pub use rpc::Rpc;
pub use schedule::Schedule;
pub use stream::Streams;
pub use token::{StaticToken, TokenError, TokenFuture, TokenProvider};

#[doc(hidden)]
pub use connection::DebugSnapshot;

// The README's Rust snippets are compiled as doctests, so they cannot drift
// from the API.
#[cfg(all(doctest, feature = "serde"))]
#[doc = include_str!("../../README.md")]
struct ReadmeSnippets;

/// Benchmark harnesses over internal structures (the `unstable-bench`
/// feature, which only `bench/` turns on). Not a stable API.
#[cfg(feature = "unstable-bench")]
#[doc(hidden)]
pub mod __bench {
    pub use crate::connection::bench::*;
}
