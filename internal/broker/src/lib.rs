//! `fitz-broker`: an embeddable broker speaking the Fitz wire protocol, for
//! the SDK's tests, tour and benchmarks, and usable by the official
//! `cntryl-fitz` 0.2.0 client in place of the real broker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fitz_broker::StartError> {
//! use std::time::{Duration, SystemTime};
//! let broker = fitz_broker::Broker::builder()
//!     .auth(fitz_broker::AuthConfig::anonymous())
//!     .clock(fitz_broker::Clock::manual(SystemTime::now()))
//!     .start()
//!     .await?;
//! println!("{} {}", broker.tcp_url(), broker.ws_url());
//! broker.clock().advance(Duration::from_secs(301)); // idle KV transactions expire now
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Without a socket, [`Broker::serve_stream`] serves any byte stream (an
//! in-memory pipe, a harness) exactly like an accepted TCP connection, and
//! [`Broker::serve_incoming`] a stream of them (`fitz::transport::memory`'s
//! listener; the `fitz` client's `embedded-broker` feature does this).
//!
//! Layout, one way down: the public [`Broker`] binds the listeners
//! (`listener.rs`: TCP, HTTP with `/ws` and probes, handed-over streams, the
//! connection cap);
//! each accepted connection gets its frame I/O (`io.rs`, with the unfinished
//! input budget of `input.rs`) and a connection task (`connection.rs`: the
//! CONNECT handshake, the read loop, the writer). Decoded requests go to
//! [`engines`] after the route-shape and permission checks; engines answer
//! through a [`Reply`] into the session's bounded outbound queue
//! ([`session`]). What all of these share — config, clock, timers, engines,
//! the session table, storage — is `shared.rs`. Time comes from [`Clock`],
//! expiries from [`Timers`]; registrations from [`registry`]; durable data
//! through [`storage`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod auth;
mod broker;
pub mod clock;
pub mod config;
mod connection;
pub mod engines;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod hash;
mod input;
mod io;
mod listener;
pub mod registry;
pub mod session;
mod shared;
pub mod storage;

pub use auth::{Access, AuthConfig, Family, Grant, Permission, Permissions};
pub use broker::{Broker, BrokerBuilder, SessionInfo, StartError};
pub use clock::{Clock, Timers};
pub use config::{Command, Config, ConfigError, Limits};
pub use connection::{CAPABILITIES, CONNECT_REQUIRED};
pub use session::{CloseReason, Delivery, OutboundLimits, Reply, Session, SessionId, Transport};
pub use storage::StorageMode;
