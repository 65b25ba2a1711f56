//! Clients of an embedded [`fitz_broker::Broker`] over memory: no socket,
//! no port (the `embedded-broker` feature).
//!
//! [`connector`] pairs a [`MemoryConnector`] with the broker: every connect
//! (the first and each reconnect) creates a fresh in-memory pipe whose far
//! end the broker serves exactly like an accepted TCP connection
//! (`Broker::serve_stream`: CONNECT and token check, limits, the same
//! connection code). When the broker shuts down or is dropped, live
//! sessions close and further connects are refused: the client sees
//! retryable [`crate::ErrorKind::Connection`] errors, as with a broker that
//! went away.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = fitz_broker::Broker::builder().start().await?;
//! let client = fitz::embedded::client(&broker, fitz::StaticToken::anonymous()).build()?;
//! client.connect().await?;
//! let mut tx = client.kv().begin("kv://app/config/flags", fitz::kv::TxMode::ReadWrite).await?;
//! tx.put("mode", "fast").await?;
//! tx.commit(fitz::kv::Durability::Buffered).await?;
//! # Ok(()) }
//! ```

use fitz_broker::Broker;

use crate::client::{Client, ClientBuilder};
use crate::token::TokenProvider;
use crate::transport::{self, MemoryConnector};

/// Bytes each in-memory pipe buffers per direction.
pub const PIPE_BUFFER: usize = 256 * 1024;

/// A connector whose connections `broker` serves in memory (pipes of
/// [`PIPE_BUFFER`] bytes each way). The broker serves them until it shuts
/// down or every clone of the connector is gone.
pub fn connector(broker: &Broker) -> MemoryConnector {
    let (connector, listener) = transport::memory(PIPE_BUFFER);
    broker.serve_incoming(listener);
    connector
}

/// A client builder for `memory://embedded` with [`connector`]`(broker)`;
/// every other option is the builder's default and can still be set.
pub fn client(broker: &Broker, tokens: impl TokenProvider) -> ClientBuilder {
    Client::builder("memory://embedded", tokens).connector(connector(broker))
}
