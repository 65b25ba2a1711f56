//! Reserved messages and what can be done with them.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use fitz_protocol::{Str, queue};

use super::{decode_exact_ack, lease_seconds};
use crate::connection::{Connection, Generation, RequestOptions};
use crate::error::{Error, Result};

/// The broker's identity for one queued message.
///
/// Opaque: compare it (the id [`Queue::enqueue`](super::Queue::enqueue)
/// returned is the id of the [`Reservation`] that later delivers the message),
/// hash it, log it. Ids are assigned by the broker and are only meaningful to
/// it; a broker restart may reuse them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId(pub(super) u64);

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A delivered message: where it came from, its id and its body.
///
/// This is what a [`Queue::worker`](super::Queue::worker) handler receives;
/// a [`Reservation`] holds one too. Cheap to clone (the body shares the
/// received frame's memory).
#[derive(Clone, PartialEq, Eq)]
pub struct QueueMessage {
    route: Str,
    id: MessageId,
    body: Bytes,
}

impl QueueMessage {
    pub(super) fn new(route: Str, id: MessageId, body: Bytes) -> Self {
        Self { route, id, body }
    }

    /// The concrete queue route the message was enqueued on (also for
    /// messages reserved through a wildcard pattern).
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The message's id.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The body as enqueued.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the body.
    pub fn into_body(self) -> Bytes {
        self.body
    }

    /// The body parsed as JSON. A body that is not JSON of type `T` is an
    /// [`ErrorKind::Decode`](crate::ErrorKind::Decode) error.
    #[cfg(feature = "serde")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let what = format_args!("the body of message {} from {}", self.id, &*self.route);
        crate::json::decode(&self.body, what)
    }
}

impl fmt::Debug for QueueMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueMessage")
            .field("route", &&*self.route)
            .field("id", &self.id)
            .field("body", &self.body)
            .finish()
    }
}

/// A reserved message: invisible to other consumers until its lease runs out.
///
/// [`extend`](Reservation::extend) the lease while working on it and
/// [`complete`](Reservation::complete) it when done; otherwise the lease
/// expires and the broker delivers the message again.
///
/// A reservation belongs to the connection session that reserved it: the
/// broker releases it when that session ends. After a reconnect every
/// operation on it fails with [`crate::ErrorKind::Stale`] without reaching the
/// broker; reserve again instead. Dropping a reservation sends nothing (the
/// protocol has no "give back"): its message reappears when the lease ends.
pub struct Reservation {
    conn: Connection,
    message: QueueMessage,
    /// The broker's proof of this reservation; never leaves the crate.
    token: u64,
    generation: Generation,
}

impl Reservation {
    pub(super) fn new(
        conn: Connection,
        message: QueueMessage,
        token: u64,
        generation: Generation,
    ) -> Self {
        Self {
            conn,
            message,
            token,
            generation,
        }
    }

    /// The concrete queue route of the message (for a wildcard reserve, the
    /// queue it actually came from).
    pub fn route(&self) -> &str {
        self.message.route()
    }

    /// The message's id.
    pub fn id(&self) -> MessageId {
        self.message.id
    }

    /// The message body.
    pub fn body(&self) -> &Bytes {
        &self.message.body
    }

    /// Route, id and body together.
    pub fn message(&self) -> &QueueMessage {
        &self.message
    }

    /// The body parsed as JSON (see [`QueueMessage::json`]).
    #[cfg(feature = "serde")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        self.message.json()
    }

    /// False once the connection session that reserved the message has
    /// ended (the connection was lost or the client closed): every call
    /// would fail with [`crate::ErrorKind::Stale`], and the broker will
    /// deliver the message again.
    pub fn is_current(&self) -> bool {
        self.conn.check_generation(self.generation).is_ok()
    }

    /// Resets the lease to `lease` from now (rounded up to whole seconds, at
    /// least one).
    ///
    /// Fails with [`crate::ErrorKind::Stale`] after a reconnect, and with a
    /// broker error when the lease is no longer held (it expired and the
    /// message may be with another consumer: 4001 invalid token, 4002 lease
    /// expired, 4003 not found).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe for the handle: dropped after EXTEND was written, the lease
    /// may or may not have been extended; extend again, the reservation stays
    /// usable.
    pub async fn extend(&self, lease: Duration) -> Result<()> {
        let msg = queue::Extend {
            route: self.message.route.clone(),
            message_id: self.message.id.0,
            lease_token: self.token,
            lease_seconds: lease_seconds(lease)?,
        };
        let payload = self
            .conn
            .request_with(&msg, RequestOptions::pinned(self.generation))
            .await?;
        decode_exact_ack(payload)
    }

    /// Completes the message: the broker deletes it and never delivers it
    /// again.
    ///
    /// On success the reservation is consumed. On failure it comes back inside
    /// the [`CompleteError`], so a rejection can be retried: a broker answer
    /// guarantees nothing was applied, and after a retryable one (4005) the
    /// same reservation can complete later. After a reconnect
    /// ([`crate::ErrorKind::Stale`]) or a lost lease (4001/4002/4003) it is of
    /// no further use. `?` turns the error into a plain [`Error`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after COMPLETE was written, the message may have
    /// been completed; if not, its lease runs out and it is delivered again
    /// (handlers must be idempotent anyway).
    pub async fn complete(self) -> std::result::Result<(), CompleteError> {
        let msg = queue::Complete {
            route: self.message.route.clone(),
            message_id: self.message.id.0,
            lease_token: self.token,
        };
        let outcome = self
            .conn
            .request_with(&msg, RequestOptions::pinned(self.generation))
            .await
            .and_then(decode_exact_ack);
        outcome.map_err(|error| CompleteError {
            error,
            reservation: Box::new(self),
        })
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("route", &self.route())
            .field("id", &self.id())
            .field("body", &self.message.body)
            .finish_non_exhaustive()
    }
}

/// A failed [`Reservation::complete`]: the error, and the reservation back.
pub struct CompleteError {
    error: Error,
    // Boxed: keeps `Result<(), CompleteError>` one pointer wide on success.
    reservation: Box<Reservation>,
}

impl CompleteError {
    /// Why completing failed.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The reservation, to retry with or inspect.
    pub fn into_reservation(self) -> Reservation {
        *self.reservation
    }

    /// Both parts.
    pub fn into_parts(self) -> (Error, Reservation) {
        (self.error, *self.reservation)
    }
}

impl From<CompleteError> for Error {
    fn from(e: CompleteError) -> Self {
        e.error
    }
}

impl fmt::Debug for CompleteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompleteError")
            .field("error", &self.error)
            .field("reservation", &self.reservation)
            .finish()
    }
}

impl fmt::Display for CompleteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "completing message {}: {}",
            self.reservation.id(),
            self.error
        )
    }
}

impl std::error::Error for CompleteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
