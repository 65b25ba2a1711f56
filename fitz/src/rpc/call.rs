//! The caller side: [`RpcCall`], [`CallOptions`], cancellation.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::rpc::{self, Cancel, CancelStatus, Lifecycle, Response, RpcId};
use fitz_protocol::{Message, Str, codes, types};
use futures_core::Stream;
use futures_util::StreamExt;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{RpcRequest, session_capabilities, supports_cancellation};
use crate::connection::{
    Connection, Generation, PushKey, PushStream, encode_record, encode_record_sized,
};
use crate::error::{Error, ErrorKind, Result};
use crate::options::{Overflow, SubscriptionOptions};

/// Response chunks buffered per call by default.
const DEFAULT_BUFFER: usize = 64;

/// The longest budget the wire can carry: one day.
const MAX_BUDGET: Duration = Duration::from_millis(rpc::MAX_BUDGET_MS as u64);

/// How one call behaves: its deadline, its response buffer, its parent.
///
/// ```
/// use std::time::Duration;
/// use fitz::rpc::CallOptions;
///
/// let options = CallOptions::timeout(Duration::from_secs(2)).with_buffer(256);
/// assert_eq!(options.buffer(), 256);
/// ```
#[derive(Clone, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    buffer: Option<usize>,
    parent: Option<CancellationToken>,
}

impl CallOptions {
    /// No deadline, the default buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the call with a [`Timeout`](crate::ErrorKind::Timeout) error
    /// `timeout` after it starts (at most one day).
    pub fn timeout(timeout: Duration) -> Self {
        Self::default().with_timeout(timeout)
    }

    /// Ends the call with a [`Timeout`](crate::ErrorKind::Timeout) error at
    /// `deadline` (at most one day away).
    pub fn deadline(deadline: impl Into<Instant>) -> Self {
        Self::default().with_deadline(deadline)
    }

    /// The options of a downstream call made while serving `parent`: its
    /// remaining budget (if the caller gave one) and its cancellation.
    pub fn child_of(parent: &RpcRequest) -> Self {
        Self {
            deadline: parent.deadline(),
            parent: Some(parent.token()),
            ..Self::default()
        }
    }

    /// Sets a timeout; with a deadline too, the earlier one wins.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets a deadline; with a timeout too, the earlier one wins.
    #[must_use]
    pub fn with_deadline(mut self, deadline: impl Into<Instant>) -> Self {
        let deadline = deadline.into();
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// Response chunks buffered for a consumer that falls behind (default
    /// 64, at least 1). When the buffer is full the call yields a
    /// [`Backpressure`](crate::ErrorKind::Backpressure) error, ends, and is
    /// cancelled: the protocol has no flow control, so falling further
    /// behind would only lose chunks.
    #[must_use]
    pub fn with_buffer(mut self, chunks: usize) -> Self {
        self.buffer = Some(chunks.max(1));
        self
    }

    /// The response buffer, in chunks.
    pub fn buffer(&self) -> usize {
        self.buffer.unwrap_or(DEFAULT_BUFFER)
    }

    /// The effective deadline of a call starting `now`.
    fn deadline_from(&self, now: Instant) -> Option<Instant> {
        let by_timeout = self.timeout.map(|t| now + t);
        match (by_timeout, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallOptions")
            .field("timeout", &self.timeout)
            .field("deadline", &self.deadline)
            .field("buffer", &self.buffer())
            .field("has_parent", &self.parent.is_some())
            .finish()
    }
}

/// What became of a cancellation ([`RpcCall::cancel`]).
///
/// Cancellation is cooperative: even [`CancelOutcome::Forwarded`] only says
/// the worker was told, not that it stopped or undid anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The call was still queued at the broker and was removed: no worker
    /// saw it.
    QueuedRemoved,
    /// The broker passed the cancellation on to the worker.
    Forwarded,
    /// The worker does not support cancellation; the call runs to its end
    /// (its response is no longer read).
    WorkerUnsupported,
    /// The call was already cancelled and awaits the worker's cleanup.
    AlreadyCancelled,
    /// The broker does not know the call: it already finished, or it is not
    /// this caller's.
    Unknown,
    /// The broker could not reach the worker.
    ForwardFailed,
    /// The broker does not support cancellation (capability bit 3 absent):
    /// nothing was sent.
    Unsupported,
    /// The call had already ended (answered or failed): nothing was sent.
    Finished,
    /// A cancellation was sent but no outcome arrived within the request
    /// timeout, or one had already been sent automatically (deadline,
    /// parent, dropped buffer) whose outcome was not awaited.
    Unconfirmed,
    /// The session ended before the outcome arrived (or before the
    /// cancellation could be sent); the broker drops the calls of a lost
    /// session and tells workers that support it to stop.
    ConnectionLost,
}

impl CancelOutcome {
    fn from_status(status: CancelStatus) -> Self {
        match status {
            CancelStatus::QueuedRemoved => Self::QueuedRemoved,
            CancelStatus::Forwarded => Self::Forwarded,
            CancelStatus::Unsupported => Self::WorkerUnsupported,
            CancelStatus::AlreadyCancelled => Self::AlreadyCancelled,
            CancelStatus::Unknown => Self::Unknown,
            CancelStatus::ForwardFailed => Self::ForwardFailed,
        }
    }
}

/// One call in flight: a `Stream` of response chunks, in order.
///
/// Items are the worker's chunks; the stream ends after the final one. An
/// `Err` item is always the last: a broker error (its 6001–6013 code, e.g.
/// `6004` when no worker serves the route), a [`Timeout`](ErrorKind::Timeout)
/// at the call's deadline, [`Cancelled`](ErrorKind::Cancelled) when its
/// parent request was cancelled, [`Backpressure`](ErrorKind::Backpressure)
/// when the consumer fell more than the buffer behind, a
/// [`Connection`](ErrorKind::Connection) error when the session ended
/// (`maybe_applied()` true when the request was written, false when it
/// never left), [`Closed`](ErrorKind::Closed) when the client closed, or a
/// [`Protocol`](ErrorKind::Protocol) error for a malformed or out-of-order
/// chunk. A worker's empty final chunk after others only marks the end and is
/// not yielded.
///
/// Dropping an unfinished call cancels it (best effort, in the background).
pub struct RpcCall {
    conn: Connection,
    id: RpcId,
    generation: Generation,
    /// The session supports cancellation (capability bit 3).
    cancellable: bool,
    /// `None` once the call ended: the push handler is released early.
    responses: Option<PushStream>,
    next_seq: u64,
    done: bool,
    /// The REQUEST was committed to the wire.
    sent: bool,
    /// A cancellation went out: never a second one.
    cancel_sent: bool,
    outcome: Option<CancelOutcome>,
    deadline: Option<Pin<Box<Sleep>>>,
    deadline_at: Option<Instant>,
    /// When the budget sent to the broker runs out (send time + budget): a
    /// broker timeout (6001) from then on is this call's deadline passing.
    budget_end: Option<Instant>,
    parent: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl RpcCall {
    /// True once the call ended (final chunk, error, cancellation).
    pub fn is_finished(&self) -> bool {
        self.done
    }

    /// The call's local deadline, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline_at
    }

    /// Cancels the call (RPC_CANCEL, reason "explicit") and waits, at most
    /// the request timeout, for the broker to say what it did. The stream
    /// ends either way. Calling it again returns the same outcome; at most
    /// one cancellation is ever sent per call.
    ///
    /// Without broker support (capability bit 3) nothing is sent and the
    /// outcome is [`CancelOutcome::Unsupported`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropped before the CANCEL was queued nothing is sent, and
    /// dropping the [`RpcCall`] cancels it in the background anyway.
    pub async fn cancel(&mut self) -> CancelOutcome {
        if let Some(outcome) = self.outcome {
            return outcome;
        }
        let outcome = self.cancel_and_wait().await;
        self.finish();
        self.outcome = Some(outcome);
        outcome
    }

    async fn cancel_and_wait(&mut self) -> CancelOutcome {
        if !self.cancellable {
            return CancelOutcome::Unsupported;
        }
        if self.cancel_sent {
            return CancelOutcome::Unconfirmed;
        }
        if self.done {
            return CancelOutcome::Finished;
        }
        // Listen before asking so the answer cannot slip past.
        let options = SubscriptionOptions {
            buffer: 4,
            overflow: Overflow::DropOldest,
        };
        let Ok(mut lifecycle) = self
            .conn
            .push_handler(types::RPC_LIFECYCLE, PushKey::Uuid(self.id.0), options)
            .await
        else {
            return CancelOutcome::ConnectionLost;
        };
        let Self {
            conn,
            id,
            generation,
            cancel_sent,
            ..
        } = self;
        let cancel = Cancel::Caller {
            id: *id,
            reason: rpc::CancelReason::Explicit,
        };
        let sent = conn
            .send_committed(types::RPC_CANCEL, *generation, || {
                *cancel_sent = true;
                Ok((encode_record(&cancel)?, ()))
            })
            .await;
        match sent {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Backpressure => return CancelOutcome::Unconfirmed,
            Err(_) => return CancelOutcome::ConnectionLost,
        }
        let id = *id;
        let wait = conn.shared().config.request_timeout;
        let answer = tokio::time::timeout(wait, async {
            while let Some(item) = lifecycle.next_record().await {
                match item.map(Lifecycle::decode) {
                    Ok(Ok(Lifecycle::CallerResult { id: of, status })) if of == id => {
                        return Some(status);
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            None
        })
        .await;
        match answer {
            Ok(Some(status)) => CancelOutcome::from_status(status),
            Ok(None) => CancelOutcome::ConnectionLost,
            Err(_) => CancelOutcome::Unconfirmed,
        }
    }

    /// Collects every chunk: the single one as is, several concatenated.
    pub(super) async fn collect(mut self) -> Result<Bytes> {
        let mut first: Option<Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            match (&mut joined, first.take()) {
                (Some(buf), _) => buf.extend_from_slice(&chunk),
                (None, None) => first = Some(chunk),
                (None, Some(prev)) => {
                    let mut buf = BytesMut::with_capacity(prev.len() + chunk.len());
                    buf.extend_from_slice(&prev);
                    buf.extend_from_slice(&chunk);
                    joined = Some(buf);
                }
            }
        }
        Ok(joined.map_or_else(|| first.unwrap_or_default(), BytesMut::freeze))
    }

    /// Ends the call locally: no more items, listeners released.
    fn finish(&mut self) {
        self.done = true;
        self.responses = None;
        self.deadline = None;
        self.parent = None;
    }

    fn fail(&mut self, error: Error) -> Option<Result<Bytes>> {
        self.finish();
        Some(Err(error))
    }

    /// Sends the one cancellation of this call without waiting (from
    /// `poll_next` and `Drop`).
    fn cancel_in_background(&mut self, reason: rpc::CancelReason) {
        if !self.cancellable || !self.sent || self.cancel_sent {
            return;
        }
        self.cancel_sent = true;
        if let Ok(record) = encode_record(&Cancel::Caller {
            id: self.id,
            reason,
        }) {
            let _ = self
                .conn
                .send_detached(types::RPC_CANCEL, self.generation, record);
        }
    }

    /// Handles one RESPONSE; `None` when it yields nothing.
    fn on_response(&mut self, payload: Bytes) -> Option<Result<Bytes>> {
        let response = match Response::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                self.cancel_in_background(rpc::CancelReason::Explicit);
                let error = Error::protocol(format!("malformed RPC response: {e}"))
                    .with_source(e)
                    .applied_if(true);
                return self.fail(error);
            }
        };
        if response.id != self.id {
            return None;
        }
        // Broker failures come as a terminal frame numbered 0, whatever was
        // streamed before.
        if let Some(error) = response.as_error() {
            // The broker enforces the budget we sent: its timeout at the end
            // of that budget is our deadline, whoever noticed first.
            if error.code() == Some(codes::RPC_TIMEOUT)
                && self.budget_end.is_some_and(|end| Instant::now() >= end)
            {
                return self.fail(deadline_passed());
            }
            return self.fail(Error::broker(&error));
        }
        if response.sequence != self.next_seq {
            self.cancel_in_background(rpc::CancelReason::Explicit);
            let error = Error::protocol(format!(
                "RPC response chunk {} arrived where {} was expected",
                response.sequence, self.next_seq
            ))
            .applied_if(true);
            return self.fail(error);
        }
        self.next_seq += 1;
        if response.end {
            self.finish();
            if response.body.is_empty() && response.sequence > 0 {
                return None;
            }
        }
        Some(Ok(response.body))
    }
}

impl Stream for RpcCall {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        // Every field is Unpin.
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let Some(responses) = this.responses.as_mut() else {
                return Poll::Ready(None);
            };
            match responses.poll_record(cx) {
                Poll::Ready(Some(Ok(payload))) => {
                    if let Some(item) = this.on_response(payload) {
                        return Poll::Ready(Some(item));
                    }
                }
                Poll::Ready(Some(Err(e))) if e.kind() == ErrorKind::Overflow => {
                    this.cancel_in_background(rpc::CancelReason::Explicit);
                    let error = Error::backpressure(
                        "the call's response buffer overflowed: the consumer fell behind",
                    )
                    .applied_if(true);
                    return Poll::Ready(this.fail(error));
                }
                // The request was filed for a session that ended before it
                // was written: it never left.
                Poll::Ready(Some(Err(e))) if e.kind() == ErrorKind::Stale => {
                    return Poll::Ready(this.fail(Error::connection_lost(false)));
                }
                // The session ended (or the client closed), or the request
                // was never written: the broker drops the call with it.
                Poll::Ready(Some(Err(e))) => return Poll::Ready(this.fail(e)),
                Poll::Ready(None) => {
                    return Poll::Ready(this.fail(Error::connection_lost(true)));
                }
                Poll::Pending => break,
            }
        }
        if let Some(parent) = this.parent.as_mut()
            && parent.as_mut().poll(cx).is_ready()
        {
            this.cancel_in_background(rpc::CancelReason::Explicit);
            let error = Error::cancelled("the parent request was cancelled").applied_if(true);
            return Poll::Ready(this.fail(error));
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.cancel_in_background(rpc::CancelReason::CallerDeadline);
            return Poll::Ready(this.fail(deadline_passed()));
        }
        Poll::Pending
    }
}

impl Drop for RpcCall {
    fn drop(&mut self) {
        if !self.done {
            self.cancel_in_background(rpc::CancelReason::Explicit);
        }
    }
}

impl fmt::Debug for RpcCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcCall")
            .field("next_chunk", &self.next_seq)
            .field("finished", &self.done)
            .field("cancellable", &self.cancellable)
            .finish()
    }
}

/// Validates, listens, sends: a call from its first byte.
pub(super) async fn start(
    conn: &Connection,
    route: &str,
    body: Bytes,
    options: CallOptions,
) -> Result<RpcCall> {
    route::validate_concrete(route, Scheme::Rpc).map_err(Error::route)?;
    // The clock is read only for a call with a timeout or a deadline.
    let timed = options.timeout.is_some() || options.deadline.is_some();
    let now = timed.then(Instant::now);
    let deadline = now.and_then(|now| options.deadline_from(now));
    if let (Some(d), Some(now)) = (deadline, now) {
        let budget = d.saturating_duration_since(now);
        if budget > MAX_BUDGET {
            return Err(Error::invalid(
                "an RPC deadline may be at most one day away",
            ));
        }
        if budget.is_zero() {
            return Err(Error::timed_out(
                "the call's deadline passed before it was sent",
            ));
        }
    }
    if options
        .parent
        .as_ref()
        .is_some_and(CancellationToken::is_cancelled)
    {
        return Err(Error::cancelled("the parent request was cancelled"));
    }
    let cancellable = supports_cancellation(session_capabilities(conn, deadline).await);
    let generation = conn.generation();
    let id = RpcId(random_uuid());
    let buffer = options.buffer();
    // The call exists before anything is sent, so that dropping this future
    // at any await below cancels a request that may have left (`sent` is
    // set once the record is built, right before it is queued).
    let mut call = RpcCall {
        conn: conn.clone(),
        id,
        generation,
        cancellable,
        responses: None,
        next_seq: 0,
        done: false,
        sent: false,
        cancel_sent: false,
        outcome: None,
        deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        deadline_at: deadline,
        budget_end: None,
        parent: options.parent.map(|t| Box::pin(t.cancelled_owned())),
    };
    let route = Str::from(route);
    // The response handler travels in the request's own command: the actor
    // installs it just before the request is written, so no response can
    // arrive unclaimed, and nothing waits for its installation. Nor does
    // anything wait for the write: the call is returned once the request is
    // queued, and a write that fails later (stale or lost session, closed
    // client) ends the response stream with that error (see `poll_next`).
    let handler = (
        types::RPC_RESPONSE,
        PushKey::Uuid(id.0),
        SubscriptionOptions {
            buffer,
            overflow: Overflow::Error,
        },
    );
    let send = conn.send_committed_with_handler(types::RPC_REQUEST, generation, handler, || {
        // The budget is what remains right now, rounded down.
        let budget = deadline.filter(|_| cancellable).map(|d| {
            let now = Instant::now();
            let ms = d.saturating_duration_since(now).as_millis();
            let ms = u32::try_from(ms)
                .unwrap_or(rpc::MAX_BUDGET_MS)
                .min(rpc::MAX_BUDGET_MS);
            (ms, now + Duration::from_millis(u64::from(ms)))
        });
        let budget_ms = budget.map(|(ms, _)| ms);
        call.budget_end = budget.map(|(_, end)| end);
        let variable = route.len() + body.len();
        let request = rpc::Request {
            id,
            route,
            body,
            budget_ms,
        };
        let record = encode_record_sized(&request, variable)?;
        call.sent = true;
        Ok((record, ()))
    });
    // On failure (before the request was queued) the call is dropped here.
    match send.await {
        Ok(responses) => {
            call.responses = Some(responses);
            Ok(call)
        }
        // Another session by now: the request never left.
        Err(e) if e.kind() == ErrorKind::Stale => Err(Error::connection_lost(false)),
        Err(e) => Err(e),
    }
}

fn deadline_passed() -> Error {
    Error::timed_out("the call's deadline passed").applied_if(true)
}

/// A random RFC 4122 version 4 UUID.
fn random_uuid() -> [u8; 16] {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_cross_tasks() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<RpcCall>();
        send::<CallOptions>();
        send::<super::super::RpcRequest>();
        sync::<super::super::RpcRequest>();
        send::<super::super::Responder>();
        send::<super::super::RpcWorker>();
        sync::<super::super::RpcWorker>();
    }

    /// Hundreds of calls polled by one task exhaust its coop budget: the
    /// response listener must still be installed before each request is
    /// written, or responses arrive unclaimed and calls hang. (The broker
    /// runs on its own runtime, so responses come back while the caller's
    /// task is still issuing requests.)
    #[test]
    fn many_calls_in_one_task_all_complete() {
        use futures_util::StreamExt;
        use futures_util::stream::FuturesUnordered;
        let brt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let broker = brt
            .block_on(fitz_broker::Broker::builder().start())
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (caller, worker) = (
                crate::Client::anonymous(broker.tcp_url()).unwrap(),
                crate::Client::anonymous(broker.tcp_url()).unwrap(),
            );
            caller.connect().await.unwrap();
            worker.connect().await.unwrap();
            let route = "rpc://test/many/echo";
            let _serving = worker
                .rpc()
                .serve(route, 1024, |req: super::super::RpcRequest| async move {
                    Ok::<Bytes, std::io::Error>(req.body().clone())
                })
                .await
                .unwrap();
            let rpc = caller.rpc();
            let calls = async {
                for _ in 0..20 {
                    let mut inflight: FuturesUnordered<_> = (0..512)
                        .map(|_| rpc.request(route, Bytes::from_static(b"x")))
                        .collect();
                    while let Some(r) = inflight.next().await {
                        assert_eq!(&r.unwrap()[..], b"x");
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(30), calls)
                .await
                .expect("every call completes");
            caller.close().await;
            worker.close().await;
        });
        brt.block_on(broker.shutdown());
    }

    #[test]
    fn uuids_are_version_4() {
        let a = random_uuid();
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 0b10);
        assert_ne!(a, random_uuid());
    }

    #[test]
    fn the_earlier_of_timeout_and_deadline_wins() {
        let now = Instant::now();
        let o = CallOptions::timeout(Duration::from_secs(5))
            .with_deadline(now + Duration::from_secs(2));
        assert_eq!(o.deadline_from(now), Some(now + Duration::from_secs(2)));
        let o = CallOptions::deadline(now + Duration::from_secs(9))
            .with_timeout(Duration::from_secs(1));
        assert_eq!(o.deadline_from(now), Some(now + Duration::from_secs(1)));
        assert_eq!(CallOptions::new().deadline_from(now), None);
        assert_eq!(CallOptions::new().with_buffer(0).buffer(), 1);
    }
}
