//! A live session as engines see it: identity, route family, and the
//! outbound queue every reply and notification goes through.
//!
//! # Outbound queue and backpressure
//!
//! Each session owns one outbound buffer: a `parking_lot` mutex around a
//! [`BytesMut`] holding whole encoded frames, each with its 4-byte length
//! prefix, plus counters. Anyone (the session's own reader, another
//! session's publish, a timer tick) appends a frame without awaiting: lock,
//! encode in place, unlock, and wake the writer through a
//! [`tokio::sync::Notify`] on the empty → non-empty transition. No lock is
//! ever held across an `.await`.
//!
//! Whoever writes takes everything that is ready in one step and writes it
//! as one batch, holding the transport's write half (an async mutex, so
//! batches go out in the order they were taken). Usually that is the
//! session's writer task. Replies produced while the session's own reader
//! handles a frame are flushed by the reader right after the frame with
//! non-blocking writes (no task wake-up on the request/reply path; on
//! WebSocket the sink is fed and flushed, each polled once without
//! waiting); what the transport does not take at once is put back in front
//! of the queue for the writer task, so the reader never waits for its
//! peer to read. A
//! batch is written: on TCP a single `write_all` of the buffer (the
//! prefixes are the TCP framing); on WebSocket one binary message per frame,
//! fed to the sink and flushed once per batch. Counters restart at zero each
//! time the writer takes the buffer, so they measure the backlog that built
//! up while the previous batch was being written.
//!
//! What happens when the backlog is full depends on the kind of frame:
//!
//! * **Notifications** (NOTIFY, RPC deliveries are *not* notifications) are
//!   bounded by [`OutboundLimits::max_notification_frames`] and
//!   [`OutboundLimits::max_notification_bytes`]. Over either bound the new
//!   notification is dropped and counted (per session and broker-wide, see
//!   [`Session::dropped_notifications`]) and logged at debug. The publisher
//!   is never blocked and never told, as the spec's best-effort contract says.
//! * **Replies** (and anything else sent through a [`Reply`] or
//!   [`Session::send_frame`]) are never dropped while the session lives. A
//!   backlog over [`OutboundLimits::max_reply_frames`] or
//!   [`OutboundLimits::max_reply_bytes`] means the peer stopped reading: the
//!   session is closed with reason `slow consumer` and its backlog discarded.
//! * After close every push is discarded silently: a deferred answer to a
//!   dead session (a lease grant, a parked reserve) cannot reach a new one.
//!
//! Only CORRELATED + its response share a frame; everything else is one
//! record per frame (the official client reads the hello and registration
//! restores with a strict single-record reader).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::record::{self, put_label};
use fitz_protocol::{EncodeError, Message, ReplyBody, WireError, encode_error, encode_ok, types};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::{Family, Grant};
use crate::storage::Pending;

/// Broker-unique id of a session (never sent on the wire).
pub type SessionId = u64;

/// Bounds of a session's outbound backlog (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimits {
    /// Notifications waiting for the writer before new ones are dropped.
    pub max_notification_frames: usize,
    /// Bytes of waiting notifications before new ones are dropped.
    pub max_notification_bytes: usize,
    /// Waiting replies before the session is closed as a slow consumer.
    pub max_reply_frames: usize,
    /// Bytes of waiting replies before the session is closed as a slow consumer.
    pub max_reply_bytes: usize,
}

impl Default for OutboundLimits {
    fn default() -> Self {
        Self {
            max_notification_frames: 8_192,
            max_notification_bytes: 16 << 20,
            max_reply_frames: 65_536,
            max_reply_bytes: 64 << 20,
        }
    }
}

/// Which listener a session came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Raw TCP with 4-byte length prefixes.
    Tcp,
    /// WebSocket binary messages on `/ws`.
    WebSocket,
    /// A byte stream handed to [`crate::Broker::serve_stream`] (or
    /// [`crate::Broker::serve_incoming`]), with TCP's 4-byte length prefixes:
    /// an in-memory pipe, a test harness, a transport of the embedder's own.
    Stream,
}

/// Why a session ended; for WebSocket it becomes the Close frame's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason(pub Cow<'static, str>);

impl CloseReason {
    /// A reason from a static string.
    pub const fn new(reason: &'static str) -> Self {
        Self(Cow::Borrowed(reason))
    }

    /// The reason text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for CloseReason {
    fn from(s: String) -> Self {
        Self(Cow::Owned(s))
    }
}

impl From<&'static str> for CloseReason {
    fn from(s: &'static str) -> Self {
        Self(Cow::Borrowed(s))
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Close reason sent when the broker stops.
pub const SHUTDOWN: CloseReason = CloseReason::new("broker shutting down");

/// Close reason of a session whose reply backlog exceeded its bound.
pub const SLOW_CONSUMER: CloseReason = CloseReason::new("slow consumer");

/// Counters shared by every session of a broker.
#[derive(Debug, Default)]
pub(crate) struct BrokerStats {
    pub dropped_notifications: AtomicU64,
    pub sessions_opened: AtomicU64,
    /// Connections closed at accept because the connection limit was reached.
    pub refused_connections: AtomicU64,
}

/// A live session. Cheap to clone; engines keep clones in their state (a
/// registration's subscriber, a lease holder) and push to it from anywhere.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    id: SessionId,
    grant: Grant,
    transport: Transport,
    peer: Option<SocketAddr>,
    service_name: Mutex<Option<String>>,
    out: Mutex<OutState>,
    writer_wake: Notify,
    /// Set with `closed`: read on every frame, without the token's mutex.
    is_closed: AtomicBool,
    closed: CancellationToken,
    limits: OutboundLimits,
    dropped: AtomicU64,
    stats: Arc<BrokerStats>,
}

#[derive(Default)]
struct OutState {
    buf: BytesMut,
    reply_frames: usize,
    reply_bytes: usize,
    notify_frames: usize,
    notify_bytes: usize,
    close: Option<CloseReason>,
    /// The session's reader is handling a frame and flushes right after it,
    /// so pushes need not wake the writer task.
    inline: bool,
    /// Commits held back until the end of the reader's batch of frames
    /// ([`Session::defer_commit`]): at most what the batch's frames carry.
    deferred: Vec<Pending>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reply,
    Notification,
}

/// Outcome of a notification push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the writer.
    Queued,
    /// Dropped because the session's notification backlog is full.
    Dropped,
    /// Discarded because the session is closed.
    Closed,
}

impl Session {
    pub(crate) fn new(
        id: SessionId,
        grant: Grant,
        transport: Transport,
        peer: Option<SocketAddr>,
        limits: OutboundLimits,
        stats: Arc<BrokerStats>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                grant,
                transport,
                peer,
                service_name: Mutex::new(None),
                out: Mutex::new(OutState::default()),
                writer_wake: Notify::new(),
                is_closed: AtomicBool::new(false),
                closed: CancellationToken::new(),
                limits,
                dropped: AtomicU64::new(0),
                stats,
            }),
        }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    /// The route family every request of this session is scoped to.
    pub fn family(&self) -> Family {
        self.inner.grant.family
    }

    /// What CONNECT granted.
    pub fn grant(&self) -> &Grant {
        &self.inner.grant
    }

    /// The listener the session came through.
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// The peer's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.inner.peer
    }

    /// The service name from SESSION_METADATA (display only, untrusted).
    pub fn service_name(&self) -> Option<String> {
        self.inner.service_name.lock().clone()
    }

    pub(crate) fn set_service_name(&self, name: String) {
        *self.inner.service_name.lock() = Some(name);
    }

    /// True once the session is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed.load(Ordering::Acquire)
    }

    /// Why the session was closed, once it was.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.inner.out.lock().close.clone()
    }

    /// Resolves when the session starts closing.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await;
    }

    /// Notifications dropped because this session's backlog was full.
    pub fn dropped_notifications(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Closes the session: the writer flushes what is queued (bounded in
    /// time), then the transport is closed with `reason`. The first reason
    /// wins; later calls do nothing.
    pub fn close(&self, reason: impl Into<CloseReason>) {
        {
            let mut out = self.inner.out.lock();
            if out.close.is_some() {
                return;
            }
            out.close = Some(reason.into());
        }
        self.inner.is_closed.store(true, Ordering::Release);
        self.inner.closed.cancel();
        self.inner.writer_wake.notify_one();
    }

    /// Pushes a notification record (one frame, never labelled). Dropped and
    /// counted when the backlog is full.
    pub fn notify<M: Message>(&self, message: &M) -> Delivery {
        self.notify_with(|b| message.encode_record(b))
    }

    /// Pushes a notification frame whose records `body` writes.
    pub fn notify_with(
        &self,
        body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Delivery {
        match self.push(Kind::Notification, None, body) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(session = self.id(), error = %e, "notification not encodable");
                Delivery::Dropped
            }
        }
    }

    /// Pushes a frame that must not be dropped (an RPC delivery to a worker,
    /// the hello), optionally labelled with `correlation`. Discarded only if
    /// the session is closed.
    pub fn send_frame(
        &self,
        correlation: Option<u64>,
        body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        self.push(Kind::Reply, correlation, body).map(|_| ())
    }

    fn push(
        &self,
        kind: Kind,
        correlation: Option<u64>,
        body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<Delivery, EncodeError> {
        let limits = &self.inner.limits;
        let mut out = self.inner.out.lock();
        if out.close.is_some() {
            return Ok(Delivery::Closed);
        }
        if kind == Kind::Notification
            && (out.notify_frames >= limits.max_notification_frames
                || out.notify_bytes >= limits.max_notification_bytes)
        {
            drop(out);
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            self.inner
                .stats
                .dropped_notifications
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(session = self.id(), "notification backlog full: dropped");
            return Ok(Delivery::Dropped);
        }
        let was_empty = out.buf.is_empty();
        let start = out.buf.len();
        out.buf.put_u32(0);
        if let Some(id) = correlation {
            put_label(&mut out.buf, types::CORRELATED, id);
        }
        if let Err(e) = body(&mut out.buf) {
            out.buf.truncate(start);
            return Err(e);
        }
        let size = out.buf.len() - start;
        let prefix = u32::try_from(size - 4).unwrap_or(u32::MAX);
        out.buf[start..start + 4].copy_from_slice(&prefix.to_be_bytes());
        let slow = match kind {
            Kind::Notification => {
                out.notify_frames += 1;
                out.notify_bytes += size;
                false
            }
            Kind::Reply => {
                out.reply_frames += 1;
                out.reply_bytes += size;
                out.reply_frames > limits.max_reply_frames
                    || out.reply_bytes > limits.max_reply_bytes
            }
        };
        if slow {
            out.buf.clear();
            out.close = Some(SLOW_CONSUMER);
            drop(out);
            self.inner.is_closed.store(true, Ordering::Release);
            tracing::debug!(
                session = self.id(),
                "reply backlog over its bound: slow consumer"
            );
            self.inner.closed.cancel();
            self.inner.writer_wake.notify_one();
            return Ok(Delivery::Closed);
        }
        let wake = was_empty && !out.inline;
        drop(out);
        if wake {
            self.inner.writer_wake.notify_one();
        }
        Ok(Delivery::Queued)
    }

    /// The writer's side: everything queued (prefixed frames) and, once the
    /// backlog is empty, the close reason if the session is closing.
    pub(crate) fn take_batch(&self) -> (Bytes, Option<CloseReason>) {
        let mut out = self.inner.out.lock();
        out.reply_frames = 0;
        out.reply_bytes = 0;
        out.notify_frames = 0;
        out.notify_bytes = 0;
        let batch = out.buf.split().freeze();
        let close = if batch.is_empty() {
            out.close.clone()
        } else {
            None
        };
        (batch, close)
    }

    /// Resolves when the writer has something to do.
    pub(crate) async fn writer_wait(&self) {
        self.inner.writer_wake.notified().await;
    }

    /// Puts bytes a writer could not write back in front of the queue.
    pub(crate) fn requeue_front(&self, rest: Bytes) {
        let mut out = self.inner.out.lock();
        if out.close.is_some() {
            return;
        }
        let mut buf = BytesMut::with_capacity(rest.len() + out.buf.len());
        buf.extend_from_slice(&rest);
        buf.extend_from_slice(&out.buf);
        out.buf = buf;
        out.reply_frames += 1;
        out.reply_bytes += rest.len();
    }

    /// Wakes the writer task.
    pub(crate) fn wake_writer(&self) {
        self.inner.writer_wake.notify_one();
    }

    /// The reader starts handling a frame: replies it produces are flushed
    /// by the reader itself afterwards ([`Session::end_inline`]), saving the
    /// writer task's wake-up on the request/reply path.
    pub(crate) fn begin_inline(&self) {
        self.inner.out.lock().inline = true;
    }

    /// Holds a commit back until the reader's batch of frames ends, when
    /// the reader is inside one (else gives it back): the batch's held
    /// commits then go to storage together
    /// ([`crate::storage::Backend::commit_all_then`]), sharing one write.
    pub(crate) fn defer_commit(&self, commit: Pending) -> Result<(), Pending> {
        let mut out = self.inner.out.lock();
        if !out.inline {
            return Err(commit);
        }
        out.deferred.push(commit);
        Ok(())
    }

    /// The commits held back in this batch ([`Session::defer_commit`]).
    pub(crate) fn take_deferred(&self) -> Vec<Pending> {
        std::mem::take(&mut self.inner.out.lock().deferred)
    }

    /// The reader finished a frame; true when something waits to be written.
    pub(crate) fn end_inline(&self) -> bool {
        let mut out = self.inner.out.lock();
        out.inline = false;
        !out.buf.is_empty()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id())
            .field("family", &self.family())
            .field("transport", &self.transport())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Splits a batch of prefixed frames into frame bodies (for WebSocket).
pub(crate) fn frames(batch: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let head = batch.get(at..at + 4)?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let body = batch
            .get(at + 4..at + 4 + len)
            .map(|_| batch.slice(at + 4..at + 4 + len));
        at += 4 + len;
        body
    })
}

/// Where the answer to one request goes: the session, the request's type and
/// its correlation id. Engines answer through it now, or clone and store it
/// to answer later (a parked RESERVE, a queued lease ACQUIRE granted on
/// release); one reply handle may send several frames. Every frame it sends
/// is labelled with CORRELATED iff the request was labelled.
#[derive(Clone)]
pub struct Reply {
    session: Session,
    ty: u16,
    correlation: Option<u64>,
}

impl Reply {
    pub(crate) fn new(session: Session, ty: u16, correlation: Option<u64>) -> Self {
        Self {
            session,
            ty,
            correlation,
        }
    }

    /// The session the request came from.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The request's record type (the reply's type).
    pub fn message_type(&self) -> u16 {
        self.ty
    }

    /// The request's CORRELATE id.
    pub fn correlation(&self) -> Option<u64> {
        self.correlation
    }

    /// False once the session is gone (a deferred answer would be discarded).
    pub fn is_open(&self) -> bool {
        !self.session.is_closed()
    }

    /// Sends `[0]` followed by `body`.
    pub fn ok<R: ReplyBody>(&self, body: &R) -> Result<(), EncodeError> {
        debug_assert_eq!(R::TYPE, self.ty, "reply body of another type");
        self.session
            .send_frame(self.correlation, |b| encode_ok(b, body))
    }

    /// Sends a bare success `[0]`.
    pub fn ack(&self) {
        let ty = self.ty;
        // One status byte always fits a record.
        let _ = self
            .session
            .send_frame(self.correlation, |b| record::encode_raw_record(b, ty, &[0]));
    }

    /// Sends an error in the envelope `err` carries. Messages are cut to fit
    /// one record.
    pub fn error(&self, err: &WireError) {
        let ty = self.ty;
        let mut err = err.clone();
        if err.message.len() > 60_000 {
            let mut cut = 60_000;
            while !err.message.is_char_boundary(cut) {
                cut -= 1;
            }
            err.message = err.message[..cut].to_owned().into();
        }
        let _ = self
            .session
            .send_frame(self.correlation, |b| encode_error(b, ty, &err));
    }

    /// Sends a coded error `[1][u32 code][str message]`.
    pub fn coded(&self, code: u32, message: &str) {
        self.error(&WireError::coded(code, message));
    }

    /// Sends any record (for example a terminal RPC RESPONSE answering a
    /// REQUEST), labelled like every frame of this reply.
    pub fn message<M: Message>(&self, message: &M) -> Result<(), EncodeError> {
        self.session
            .send_frame(self.correlation, |b| message.encode_record(b))
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("session", &self.session.id())
            .field("type", &self.ty)
            .field("correlation", &self.correlation)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitz_protocol::notice;

    fn session(limits: OutboundLimits) -> Session {
        Session::new(
            1,
            Grant::anonymous(),
            Transport::Tcp,
            None,
            limits,
            Arc::default(),
        )
    }

    fn notify(s: &Session) -> Delivery {
        s.notify(&notice::Notify {
            sub_id: 1,
            route: "notice://a/b".into(),
            payload: Bytes::from_static(b"x"),
        })
    }

    #[test]
    fn notifications_drop_when_full_and_replies_do_not() {
        let s = session(OutboundLimits {
            max_notification_frames: 2,
            ..OutboundLimits::default()
        });
        assert_eq!(notify(&s), Delivery::Queued);
        assert_eq!(notify(&s), Delivery::Queued);
        assert_eq!(notify(&s), Delivery::Dropped);
        assert_eq!(s.dropped_notifications(), 1);
        Reply::new(s.clone(), 501, Some(7)).ack();
        let (batch, close) = s.take_batch();
        assert!(close.is_none());
        let got: Vec<_> = frames(&batch).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(
            &got[2][..],
            &[3, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7, 0xFF, 1, 0xF5, 0, 1, 0]
        );
        assert_eq!(notify(&s), Delivery::Queued);
    }

    #[test]
    fn reply_backlog_over_bound_closes_as_slow_consumer() {
        let s = session(OutboundLimits {
            max_reply_frames: 1,
            ..OutboundLimits::default()
        });
        let r = Reply::new(s.clone(), 502, None);
        r.ack();
        assert!(!s.is_closed());
        r.ack();
        assert!(s.is_closed());
        let (batch, close) = s.take_batch();
        assert!(batch.is_empty());
        assert_eq!(close, Some(SLOW_CONSUMER));
        assert_eq!(notify(&s), Delivery::Closed);
    }
}
