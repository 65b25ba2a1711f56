//! Queue: durable at-least-once work queues (types 200–209).
//!
//! Producers [`enqueue`](Queue::enqueue) bodies on a concrete route
//! `queue://realm/area/resource`. Consumers [`reserve`](Queue::reserve)
//! messages from a route or a wildcard pattern: each comes back as a
//! [`Reservation`], invisible to other consumers for its lease, which the
//! consumer [`extend`](Reservation::extend)s while it works and
//! [`complete`](Reservation::complete)s when done. A reservation that is
//! neither completed nor extended expires and the message is delivered again
//! (possibly to another consumer): handlers must tolerate seeing a message
//! twice.
//!
//! Two helpers sit on top:
//!
//! * [`Queue::subscribe`]: a restorable stream of [`QueueAvailability`]
//!   hints ("this queue has ready work").
//! * [`Queue::worker`]: a managed consumer that long-polls, runs a bounded
//!   number of handlers, keeps their leases extended, completes on success
//!   and survives reconnects.
//!
//! ```no_run
//! # async fn demo(client: fitz::Client) -> fitz::Result<()> {
//! use fitz::queue::ReserveOptions;
//!
//! let queue = client.queue();
//! queue.enqueue("queue://prod/billing/invoices", "invoice #1").await?;
//!
//! for reservation in queue.reserve("queue://prod/billing/*", ReserveOptions::default()).await? {
//!     println!("{} from {}", reservation.id(), reservation.route());
//!     reservation.complete().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! # Durations on the wire
//!
//! The protocol counts whole seconds. Leases, delays and waits are rounded
//! **up** to the next whole second, so a message is never visible earlier, and
//! a lease never shorter, than asked for.

mod availability;
mod reservation;
mod worker;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::{
    DecodeError, Envelope, Reader, Str, WireError, decode_reply_with, queue, types,
};

pub use availability::{QueueAvailability, QueueCounters, QueueSubscription};
pub use reservation::{CompleteError, MessageId, QueueMessage, Reservation};
pub use worker::{QueueWorker, WorkerOptions, WorkerStats};

use crate::connection::{Connection, RequestOptions, encode_record};
use crate::error::{Error, Result};
use crate::options::SubscriptionOptions;
use crate::retry::RetryPolicy;

/// Most messages one [`Queue::reserve`] can return.
pub const MAX_BATCH: u32 = queue::MAX_BATCH;
/// Longest long-poll of one [`Queue::reserve`].
pub const MAX_WAIT: Duration = Duration::from_secs(queue::MAX_WAIT_SECONDS);

/// The Queue domain of a [`crate::Client`] (see [`crate::Client::queue`]).
///
/// Cheap to clone; every clone uses the client's one connection.
#[derive(Clone)]
pub struct Queue {
    conn: Connection,
    /// Retries of ENQUEUE after a confirmed negative answer (off unless
    /// configured).
    enqueue_retry: RetryPolicy,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Queue")
    }
}

/// Options of [`Queue::enqueue_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EnqueueOptions {
    /// How long the message stays invisible before consumers can reserve it
    /// (rounded up to whole seconds). Zero, the default, means at once.
    pub delay: Duration,
}

impl EnqueueOptions {
    /// Options with a delay.
    pub fn delay(delay: Duration) -> Self {
        Self { delay }
    }
}

/// Options of [`Queue::reserve`].
///
/// ```
/// use std::time::Duration;
/// use fitz::queue::ReserveOptions;
///
/// // Up to 10 messages, each invisible to others for 2 minutes; wait up to
/// // 20 s for the first one when the queue is empty.
/// let options = ReserveOptions {
///     lease: Duration::from_secs(120),
///     batch: 10,
///     wait: Duration::from_secs(20),
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveOptions {
    /// How long each reserved message stays invisible to other consumers
    /// unless extended or completed. At least one second. Default 30 s.
    pub lease: Duration,
    /// Most messages to reserve, `1..=`[`MAX_BATCH`]. Default 1.
    pub batch: u32,
    /// When nothing is ready, how long the broker holds the request open
    /// waiting for work (a long poll). At most [`MAX_WAIT`]; longer waits are
    /// rejected rather than silently shortened. Default 0: answer at once.
    pub wait: Duration,
}

impl Default for ReserveOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            batch: 1,
            wait: Duration::ZERO,
        }
    }
}

impl ReserveOptions {
    /// Checks the options and converts them to wire seconds.
    fn to_wire(self) -> Result<(u64, u32, Option<u64>)> {
        let lease = lease_seconds(self.lease)?;
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(Error::invalid(format!(
                "batch must be 1..={MAX_BATCH}, got {}",
                self.batch
            )));
        }
        if self.wait > MAX_WAIT {
            return Err(Error::invalid(format!(
                "wait must be at most {} s, got {:?}",
                MAX_WAIT.as_secs(),
                self.wait
            )));
        }
        Ok((lease, self.batch, optional_seconds(self.wait)))
    }
}

impl Queue {
    pub(crate) fn new(conn: Connection) -> Self {
        let enqueue_retry = conn.shared().config.enqueue_retry;
        Self {
            conn,
            enqueue_retry,
        }
    }

    /// This view with `policy` for [`Queue::enqueue`] instead of the
    /// client's [`crate::ClientBuilder::enqueue_retry`] (off by default).
    /// Cheap: a clone of the handle.
    ///
    /// Even with a policy, an ENQUEUE is sent again only after a confirmed
    /// negative answer: a coded broker error that is retryable and means
    /// nothing was stored (4005 queue full). A timeout, or a connection lost
    /// after the request was written, is returned at once
    /// ([`Error::maybe_applied`]): the message may have been stored.
    pub fn with_retry(&self, policy: RetryPolicy) -> Self {
        Self {
            conn: self.conn.clone(),
            enqueue_retry: policy,
        }
    }

    /// Appends `body` to the queue at `route`, a concrete
    /// `queue://realm/area/resource` route (checked locally; nothing is sent
    /// when it is invalid), and returns the broker's id for the message.
    ///
    /// Not retried by default. With a retry policy
    /// ([`crate::ClientBuilder::enqueue_retry`], [`Queue::with_retry`]) the
    /// same request is sent again only when the broker answered that it
    /// stored nothing and may accept it later (4005 queue full). No other
    /// failure is retried: after a timeout or a lost connection
    /// ([`Error::maybe_applied`]) the message may have been stored, and
    /// sending it again could duplicate it.
    ///
    /// A body must fit one 64 KiB record together with the route; a larger
    /// one is an [`crate::ErrorKind::InvalidArgument`] error and nothing is
    /// sent.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the ENQUEUE was written, the message may
    /// have been stored (whole, never half) and the caller does not learn its id;
    /// enqueueing again may duplicate it. Dropped before it was written, nothing
    /// is sent.
    pub async fn enqueue(&self, route: &str, body: impl Into<Bytes>) -> Result<MessageId> {
        self.enqueue_with(route, body, EnqueueOptions::default())
            .await
    }

    /// [`Queue::enqueue`] with options (a delivery delay).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the ENQUEUE was written, the message may
    /// have been stored (whole, never half) and the caller does not learn its id;
    /// enqueueing again may duplicate it. Dropped before it was written, nothing
    /// is sent.
    pub async fn enqueue_with(
        &self,
        route: &str,
        body: impl Into<Bytes>,
        options: EnqueueOptions,
    ) -> Result<MessageId> {
        validate_route(route)?;
        let msg = queue::Enqueue {
            route: Str::from(route),
            body: body.into(),
            delay_seconds: optional_seconds(options.delay),
        };
        // Encoded once: a retry re-sends the very same bytes.
        let record = encode_record(&msg)?;
        crate::retry::confirmed_negative(&self.enqueue_retry, || async {
            let payload = self
                .conn
                .request_record(
                    types::QUEUE_ENQUEUE,
                    Some(route),
                    record.clone(),
                    RequestOptions::default(),
                )
                .await?;
            decode_coded::<queue::EnqueueOk>(payload).map(|ok| MessageId(ok.message_id))
        })
        .await
    }

    /// [`Queue::enqueue`] with `value` encoded as JSON (a value that cannot
    /// be is an [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// error, and nothing is sent).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the ENQUEUE was written, the message may
    /// have been stored (whole, never half) and the caller does not learn its id;
    /// enqueueing again may duplicate it. Dropped before it was written, nothing
    /// is sent.
    #[cfg(feature = "serde")]
    pub async fn enqueue_json<T: serde::Serialize + ?Sized>(
        &self,
        route: &str,
        value: &T,
    ) -> Result<MessageId> {
        self.enqueue(route, crate::json::encode(value)?).await
    }

    /// Reserves up to `options.batch` messages from `route_or_pattern`: a
    /// concrete queue route, or a pattern with whole-segment wildcards (`*`
    /// one segment, `**` any number) that can match a three-segment queue
    /// route, e.g. `queue://prod/*/invoices` or `queue://prod/**`.
    ///
    /// Returns at once with what is ready (possibly nothing), or, with a
    /// `wait`, as soon as something arrives or the wait is over. Each
    /// [`Reservation`] carries the concrete route its message came from. The
    /// reply is checked as a whole: if any item names an invalid route the
    /// call fails with [`crate::ErrorKind::Protocol`] and returns nothing (the
    /// broker's reservations then simply expire).
    ///
    /// The request timeout is the client's plus `wait`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in the at-least-once sense: dropped after RESERVE was
    /// written, the broker may reserve messages the caller never sees; they are
    /// invisible until their lease runs out and are then delivered again. Nothing
    /// is lost.
    pub async fn reserve(
        &self,
        route_or_pattern: &str,
        options: ReserveOptions,
    ) -> Result<Vec<Reservation>> {
        let shape = validate_pattern(route_or_pattern)?;
        let (lease_seconds, batch, wait_seconds) = options.to_wire()?;
        let route = Str::from(route_or_pattern);
        let msg = queue::Reserve {
            route: route.clone(),
            lease_seconds,
            batch_size: Some(batch),
            wait_seconds,
        };
        // The reply's item layout depends on the request (routed items for
        // wildcard requests), so it is decided here, not from the reply.
        let wildcard = !shape.is_concrete();
        // Captured before sending: the actor never writes an unpinned request
        // on a later session than the one current when it was issued, so a
        // reply always belongs to this generation.
        let generation = self.conn.generation();
        let timeout = self.conn.shared().config.request_timeout + options.wait;
        let payload = self
            .conn
            .request_with(&msg, RequestOptions::timeout(timeout))
            .await?;
        let ok = decode_coded_with(payload, |r| queue::ReserveOk::decode_body(r, wildcard))?;
        let mut out = Vec::with_capacity(ok.items.len());
        for item in ok.items {
            let item_route = match item.route {
                Some(r) => {
                    route::validate_concrete(&r, Scheme::Queue).map_err(|e| {
                        Error::protocol(format!("RESERVE reply names an invalid route {r:?}: {e}"))
                            .with_source(e)
                            .applied_if(true)
                    })?;
                    r
                }
                None if wildcard => {
                    return Err(
                        Error::protocol("RESERVE reply item without a route").applied_if(true)
                    );
                }
                None => route.clone(),
            };
            out.push(Reservation::new(
                self.conn.clone(),
                QueueMessage::new(item_route, MessageId(item.message_id), item.body),
                item.lease_token,
                generation,
            ));
        }
        Ok(out)
    }

    /// Watches `pattern` (a concrete queue route or a wildcard pattern that can
    /// match one) for available work, with the client's default buffering.
    ///
    /// Right after subscribing the broker reports every matching queue that
    /// already has ready messages; afterwards it reports queues as work
    /// becomes ready. Notifications are hints, not reservations: another
    /// consumer may take the work first.
    ///
    /// The stream keeps working across reconnects. Two subscriptions of this
    /// client to the same pattern share one broker registration.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, no registration is left behind:
    /// the handle under construction unsubscribes in the background, or is never
    /// installed when the connection task had not handled it yet.
    pub async fn subscribe(&self, pattern: &str) -> Result<QueueSubscription> {
        let options = self.conn.shared().config.subscription;
        self.subscribe_with(pattern, options).await
    }

    /// [`Queue::subscribe`] with explicit buffering for this subscription.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, no registration is left behind:
    /// the handle under construction unsubscribes in the background, or is never
    /// installed when the connection task had not handled it yet.
    pub async fn subscribe_with(
        &self,
        pattern: &str,
        options: SubscriptionOptions,
    ) -> Result<QueueSubscription> {
        validate_pattern(pattern)?;
        availability::subscribe(&self.conn, pattern, options).await
    }
}

/// A concrete `queue://realm/area/resource` route.
pub(crate) fn validate_route(route: &str) -> Result<()> {
    route::validate_concrete(route, Scheme::Queue)
        .map(drop)
        .map_err(Error::route)
}

/// A route or pattern that can match a three-segment queue route.
fn validate_pattern(pattern: &str) -> Result<route::Shape> {
    route::validate_pattern(pattern, Scheme::Queue).map_err(Error::route)
}

/// Whole seconds, rounded up (a lease or delay is never shorter than asked).
fn ceil_seconds(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// A delay or wait: zero travels as "absent", as the official client sends it.
fn optional_seconds(d: Duration) -> Option<u64> {
    Some(ceil_seconds(d)).filter(|&s| s > 0)
}

/// A lease: at least one second.
fn lease_seconds(lease: Duration) -> Result<u64> {
    match ceil_seconds(lease) {
        0 => Err(Error::invalid("a lease must be at least one second")),
        s => Ok(s),
    }
}

/// The error of a failed queue reply. ENQUEUE and RESERVE errors must be
/// coded; EXTEND, COMPLETE and the subscription calls may be either form.
/// Queue never uses the Stream status-2 envelope.
fn queue_error(e: &WireError, coded_only: bool) -> Error {
    match e.envelope {
        Envelope::Coded => Error::broker(e),
        Envelope::Uncoded if !coded_only => Error::broker(e),
        _ => Error::protocol(format!(
            "queue reply carries an error in an unexpected envelope: {}",
            e.message
        ))
        .applied_if(true),
    }
}

/// A coded-only reply of a [`fitz_protocol::ReplyBody`] type.
fn decode_coded<R: fitz_protocol::ReplyBody>(payload: Bytes) -> Result<R> {
    decode_coded_with(payload, R::decode_body)
}

/// A coded-only reply whose body needs context.
fn decode_coded_with<T>(
    payload: Bytes,
    body: impl FnOnce(&mut Reader) -> std::result::Result<T, DecodeError>,
) -> Result<T> {
    match decode_reply_with(payload, body) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(queue_error(&e, true)),
        Err(e) => Err(Error::malformed_reply(e)),
    }
}

/// A bare `[0]` acknowledgement, nothing after it (EXTEND, COMPLETE).
fn decode_exact_ack(payload: Bytes) -> Result<()> {
    match decode_reply_with(payload, |_| Ok(())) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(queue_error(&e, false)),
        Err(e) => Err(Error::malformed_reply(e)),
    }
}
