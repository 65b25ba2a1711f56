//! An async client for the [Fitz](https://github.com/cntryl/fitz) multi-domain
//! broker.
//!
//! One [`Client`] owns one connection (TCP, TLS, WebSocket or WSS) run by a
//! single background task. Domain views such as [`Client::notice`] are cheap
//! handles on it. The client
//!
//! * negotiates capabilities from the broker's SERVER_HELLO and correlates
//!   requests when the broker supports it (falling back to one request per
//!   message type on the wire for legacy brokers);
//! * reconnects with jittered backoff, asking the [`TokenProvider`] for a
//!   fresh token each time, and restores subscriptions before reporting
//!   [`State::Authenticated`], so a subscription stream keeps flowing;
//! * never lets a slow subscriber stall the connection ([`Overflow`]);
//! * reports every failure as one [`Error`] with a [`ErrorKind`], the broker
//!   code, [`Error::is_retryable`] and [`Error::maybe_applied`].
//!
//! ```no_run
//! # async fn demo() -> fitz::Result<()> {
//! use std::time::Duration;
//! use fitz::{Client, ReconnectPolicy};
//!
//! let client = Client::builder("ws://127.0.0.1:4090/ws", || async {
//!     Ok::<_, std::io::Error>(std::env::var("FITZ_TOKEN").unwrap_or_default())
//! })
//! .request_timeout(Duration::from_secs(5))
//! .reconnect(ReconnectPolicy { max_attempts: 0, ..ReconnectPolicy::default() })
//! .service_name("orders-api")
//! .build()?;
//! client.connect_when_ready(Duration::from_secs(30)).await?;
//! client.notice().publish("notice://prod/orders/created", &b"{\"id\":1}"[..]).await?;
//! client.close().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod client;
mod connection;
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
mod token;
pub mod transport;

pub use client::{Client, ClientBuilder};
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
pub use rpc::Rpc;
pub use schedule::Schedule;
pub use stream::Streams;
pub use token::{StaticToken, TokenError, TokenFuture, TokenProvider};

// Former crate-root names of domain types, which now live in their domain
// module only (like every other domain type). Kept, hidden, while the test
// suite moves over to the module paths.
#[doc(hidden)]
pub use notice::{NoticeMessage, NoticeSubscription};
#[doc(hidden)]
pub use rpc::RpcWorker as WorkerHandle;

#[doc(hidden)]
pub use connection::DebugSnapshot;

/// Benchmark harnesses over internal structures. Not a stable API.
#[doc(hidden)]
pub mod __bench {
    pub use crate::connection::bench::*;
}
