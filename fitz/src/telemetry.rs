//! Telemetry: a `tracing` span per request and per worker delivery, and
//! metrics through the [`metrics`] facade.
//!
//! Nothing here is configured on the client: install a `tracing` subscriber
//! and/or a `metrics` recorder (e.g. `metrics-exporter-prometheus`) in the
//! application and the client reports into them. Without either, the cost per
//! request is a few atomic loads and one clock read (the clock also serves
//! the slow-request log): span macros check a cached callsite interest before
//! building anything, and the hot metric keys are `static` (no allocation;
//! the `metrics` no-op recorder hands back no-op handles).
//!
//! # Spans
//!
//! Every request (`Connection::request*`, `call`, `send*`) opens a span
//! named `fitz.request` (target `fitz::request`, level INFO) with the
//! OpenTelemetry messaging fields: `messaging.system = "fitz"`,
//! `messaging.operation.name` (e.g. `get`), `messaging.operation.type`
//! (`send`), `fitz.domain` (e.g. `kv`), `messaging.destination.name` (the
//! route, when the message carries one), `messaging.message.conversation_id`
//! (the correlation id) and, once finished, `fitz.outcome` (`ok` / `error`)
//! and `error.type` (the broker's numeric code or the local error kind).
//! A request whose caller stops waiting (its future dropped) records
//! nothing. `request_frames` (Lease ACQUIRE) is spanned until it is queued,
//! and `send*` until the record is in the output buffer; neither is timed.
//! The span opens when the call starts and closes when it is answered, as a
//! child of the caller's current span; it is not entered (nothing in the
//! caller's task logs inside it, and an `Instrumented` wrapper would grow
//! and move every request's future).
//! RPC and queue worker handlers run inside a `fitz.process` span
//! (`messaging.operation.type = "process"`) per delivery.
//!
//! # Metrics
//!
//! See [`names`] for every metric and its labels.
//!
//! # Slow requests
//!
//! A request that takes longer than the client's
//! [`slow_request_threshold`](crate::ClientBuilder::slow_request_threshold)
//! (default 1 s) is logged with `tracing::warn!` (target `fitz::slow`) with
//! its domain, operation, route and duration.

use std::time::Duration;

use bytes::Bytes;
use fitz_protocol::WireError;
use metrics::{Key, Label, Level, Metadata};
use tokio::time::Instant;
use tracing::Span;
use tracing::field::Empty;

use crate::error::{Error, ErrorKind};
use crate::events::{Event, State};

/// The metric names the client reports (the `metrics` facade; a Prometheus
/// exporter turns the dots into underscores).
pub mod names {
    /// Histogram, seconds: one sample per request (from the call to its
    /// answer), labels `domain`, `operation`, `outcome` (`ok` / `error`).
    /// Gives p50/p95/p99. Fire-and-forget sends (Notice PUBLISH, RPC
    /// REQUEST/RESPONSE/CANCEL records) are not sampled: they end when
    /// buffered, and their cost is that of the notice/RPC they carry.
    pub const REQUEST_DURATION: &str = "fitz.request.duration";
    /// Counter: failed requests, labels `domain`, `operation`, `code` (the
    /// broker's numeric error code, or the local error kind such as
    /// `timeout`, `connection`, `backpressure`).
    pub const REQUEST_ERRORS: &str = "fitz.request.errors";
    /// Gauge: the connection state, `0` disconnected, `1` connecting, `2`
    /// connected, `3` authenticating, `4` authenticated, `5` reconnecting,
    /// `6` closed.
    pub const CONNECTION_STATE: &str = "fitz.connection.state";
    /// Counter: sessions re-established after a loss.
    pub const RECONNECTS: &str = "fitz.reconnects";
    /// Gauge: live subscription handles (KV/Lease/Stream/Schedule/Queue/
    /// Notice subscriptions and worker registrations).
    pub const SUBSCRIPTIONS_ACTIVE: &str = "fitz.subscriptions.active";
    /// Gauge: notifications buffered in subscription mailboxes, not yet
    /// taken by their consumers (all mailboxes together).
    pub const MAILBOX_BUFFERED: &str = "fitz.subscription.buffered";
    /// Counter: notifications a full mailbox discarded (evicted under
    /// `Overflow::DropOldest`, refused under `Overflow::Error`).
    pub const MAILBOX_DROPPED: &str = "fitz.subscription.dropped";
    /// Gauge: requests and sends holding an in-flight permit (sampled when a
    /// request ends).
    pub const IN_FLIGHT: &str = "fitz.requests.in_flight";
    /// Counter: requests that failed with `Backpressure` (the in-flight
    /// limit or the command queue stayed full for their whole timeout).
    pub const REJECTED: &str = "fitz.requests.rejected";
    /// Gauge: bytes written to the connection's output buffer but not yet
    /// taken by the transport.
    pub const OUTBOUND_PENDING: &str = "fitz.outbound.pending_bytes";
    /// Counter: frames held back because the output was above its
    /// high-water mark (256 KiB).
    pub const OUTBOUND_BACKPRESSURED: &str = "fitz.outbound.backpressured";
}

/// The span field holding the correlation id.
pub(crate) const CONVERSATION_ID: &str = "messaging.message.conversation_id";

const METADATA: Metadata<'static> = Metadata::new("fitz", Level::INFO, Some(module_path!()));

/// A label-less metric key, built at compile time (the `metrics` macros
/// build a key per call when the name is not a literal).
macro_rules! key {
    ($name:expr) => {{
        static KEY: Key = Key::from_static_name($name);
        &KEY
    }};
}

fn gauge(key: &Key) -> metrics::Gauge {
    metrics::with_recorder(|r| r.register_gauge(key, &METADATA))
}

fn counter(key: &Key) -> metrics::Counter {
    metrics::with_recorder(|r| r.register_counter(key, &METADATA))
}

/// The labels of one operation and its duration histogram's keys, fixed
/// at compile time (a key built per request hashed its name and labels
/// every time: ~240 instructions per request).
pub(crate) struct Op {
    pub domain: &'static str,
    pub operation: &'static str,
    ok: Key,
    err: Key,
}

impl Op {
    const fn labels(
        domain: &'static str,
        operation: &'static str,
        outcome: &'static str,
    ) -> [Label; 3] {
        [
            Label::from_static_parts("domain", domain),
            Label::from_static_parts("operation", operation),
            Label::from_static_parts("outcome", outcome),
        ]
    }

    const fn new(
        domain: &'static str,
        operation: &'static str,
        ok: &'static [Label],
        err: &'static [Label],
    ) -> Self {
        Self {
            domain,
            operation,
            ok: Key::from_static_parts(names::REQUEST_DURATION, ok),
            err: Key::from_static_parts(names::REQUEST_DURATION, err),
        }
    }
}

/// `fn op(ty) -> &'static Op` over every record type a client sends.
macro_rules! ops {
    ($($ty:ident => $domain:literal, $op:literal;)*) => {
        /// The operation labels of a client record type.
        pub(crate) fn op(ty: u16) -> &'static Op {
            use fitz_protocol::types;
            match ty {
                $(types::$ty => {
                    static OK: [Label; 3] = Op::labels($domain, $op, "ok");
                    static ERR: [Label; 3] = Op::labels($domain, $op, "error");
                    static OP: Op = Op::new($domain, $op, &OK, &ERR);
                    &OP
                })*
                _ => {
                    static OK: [Label; 3] = Op::labels("unknown", "unknown", "ok");
                    static ERR: [Label; 3] = Op::labels("unknown", "unknown", "error");
                    static UNKNOWN: Op = Op::new("unknown", "unknown", &OK, &ERR);
                    &UNKNOWN
                }
            }
        }
    };
}

ops! {
    SESSION_METADATA => "control", "session_metadata";
    KV_BEGIN => "kv", "begin";
    KV_COMMIT => "kv", "commit";
    KV_ROLLBACK => "kv", "rollback";
    KV_GET => "kv", "get";
    KV_PUT => "kv", "put";
    KV_INSERT => "kv", "insert";
    KV_DELETE => "kv", "delete";
    KV_DELETE_RANGE => "kv", "delete_range";
    KV_SCAN => "kv", "scan";
    KV_SUBSCRIBE => "kv", "subscribe";
    KV_UNSUBSCRIBE => "kv", "unsubscribe";
    QUEUE_ENQUEUE => "queue", "enqueue";
    QUEUE_RESERVE => "queue", "reserve";
    QUEUE_EXTEND => "queue", "extend";
    QUEUE_COMPLETE => "queue", "complete";
    QUEUE_SUBSCRIBE => "queue", "subscribe";
    QUEUE_UNSUBSCRIBE => "queue", "unsubscribe";
    RPC_SUBSCRIBE_WORKER => "rpc", "subscribe_worker";
    RPC_UNSUBSCRIBE_WORKER => "rpc", "unsubscribe_worker";
    RPC_REQUEST => "rpc", "request";
    RPC_RESPONSE => "rpc", "response";
    RPC_CANCEL => "rpc", "cancel";
    LEASE_ACQUIRE => "lease", "acquire";
    LEASE_RENEW => "lease", "renew";
    LEASE_RELEASE => "lease", "release";
    LEASE_QUERY => "lease", "query";
    LEASE_SUBSCRIBE => "lease", "subscribe";
    LEASE_UNSUBSCRIBE => "lease", "unsubscribe";
    LEASE_LIST => "lease", "list";
    NOTICE_PUBLISH => "notice", "publish";
    NOTICE_SUBSCRIBE => "notice", "subscribe";
    NOTICE_UNSUBSCRIBE => "notice", "unsubscribe";
    NOTICE_UNSUBSCRIBE_ALL => "notice", "unsubscribe_all";
    STREAM_BEGIN => "stream", "begin";
    STREAM_APPEND => "stream", "append";
    STREAM_COMMIT => "stream", "commit";
    STREAM_ROLLBACK => "stream", "rollback";
    STREAM_READ => "stream", "read";
    STREAM_LAST => "stream", "last";
    STREAM_GET_METADATA => "stream", "get_metadata";
    STREAM_SUBSCRIBE => "stream", "subscribe";
    STREAM_UNSUBSCRIBE => "stream", "unsubscribe";
    SCHEDULE_CREATE => "schedule", "create";
    SCHEDULE_CANCEL => "schedule", "cancel";
    SCHEDULE_LIST => "schedule", "list";
    SCHEDULE_SUBSCRIBE => "schedule", "subscribe";
    SCHEDULE_UNSUBSCRIBE => "schedule", "unsubscribe";
    SCHEDULE_CREATE_BATCH => "schedule", "create_batch";
    SCHEDULE_LIST_V2 => "schedule", "list_v2";
}

/// One request being measured: its span, start time and labels.
pub(crate) struct Request<'a> {
    op: &'static Op,
    route: Option<&'a str>,
    /// `None` for fire-and-forget sends: no duration sample, no slow log.
    start: Option<Instant>,
    span: Span,
}

impl<'a> Request<'a> {
    /// Opens the span and starts the clock for a request of record type `ty`.
    #[inline]
    pub fn start(ty: u16, route: Option<&'a str>) -> Self {
        Self::start_at(ty, route, Instant::now())
    }

    /// [`Request::start`] with the clock started at `at` (requests issued
    /// together share one clock read).
    #[inline]
    pub fn start_at(ty: u16, route: Option<&'a str>, at: Instant) -> Self {
        let mut r = Self::start_send(ty, route);
        r.start = Some(at);
        r
    }

    /// When the clock started (`None` for a send).
    pub fn started(&self) -> Option<Instant> {
        self.start
    }

    /// Opens the span of a fire-and-forget send: it finishes when the record
    /// is buffered, not answered, so it is not timed (no duration sample, no
    /// slow log, no clock read); failures are still counted.
    #[inline]
    pub fn start_send(ty: u16, route: Option<&'a str>) -> Self {
        let op = op(ty);
        let span = tracing::info_span!(
            target: "fitz::request",
            "fitz.request",
            "messaging.system" = "fitz",
            "messaging.operation.name" = op.operation,
            "messaging.operation.type" = "send",
            "fitz.domain" = op.domain,
            "messaging.destination.name" = Empty,
            "messaging.message.conversation_id" = Empty,
            "fitz.outcome" = Empty,
            "error.type" = Empty,
        );
        if let Some(route) = route
            && !span.is_disabled()
        {
            span.record("messaging.destination.name", route);
        }
        Self {
            op,
            route,
            start: None,
            span,
        }
    }

    /// The request's span (instrument the request's future with it).
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Records the outcome: span fields, duration histogram, error counter,
    /// and the slow-request warning when it took `slow` or longer.
    pub fn finish<T>(self, result: &Result<T, Error>, slow: Duration) {
        self.finish_at(result, slow, None);
    }

    /// [`Request::finish`] with the clock read at `now` when given
    /// (requests answered together share one clock read).
    pub fn finish_at<T>(self, result: &Result<T, Error>, slow: Duration, now: Option<Instant>) {
        match result {
            Ok(_) => {
                if !self.span.is_disabled() {
                    self.span.record("fitz.outcome", "ok");
                }
            }
            Err(e) => self.failed(e),
        }
        let Some(start) = self.start else {
            return;
        };
        let elapsed = now.map_or_else(
            || start.elapsed(),
            |now| now.saturating_duration_since(start),
        );
        let key = if result.is_ok() {
            &self.op.ok
        } else {
            &self.op.err
        };
        metrics::with_recorder(|r| {
            r.register_histogram(key, &METADATA)
                .record(elapsed.as_secs_f64());
        });
        if elapsed >= slow {
            tracing::warn!(
                target: "fitz::slow",
                domain = self.op.domain,
                operation = self.op.operation,
                route = self.route.unwrap_or(""),
                duration_ms = elapsed.as_secs_f64() * 1e3,
                "fitz slow request"
            );
        }
    }

    /// [`Request::finish`] for a raw reply payload: a payload holding the
    /// broker's error envelope counts as an error with its code.
    pub fn finish_reply(self, result: &Result<Bytes, Error>, slow: Duration) {
        self.finish_reply_at(result, slow, None);
    }

    /// [`Request::finish_reply`] with the clock read at `now` when given.
    pub fn finish_reply_at(
        self,
        result: &Result<Bytes, Error>,
        slow: Duration,
        now: Option<Instant>,
    ) {
        match result {
            Ok(payload) if payload.first().is_some_and(|&status| status != 0) => {
                match WireError::decode(payload.clone()) {
                    Ok(wire) => self.finish_at::<()>(&Err(Error::broker(&wire)), slow, now),
                    Err(_) => self.finish_at(result, slow, now),
                }
            }
            _ => self.finish_at(result, slow, now),
        }
    }

    #[cold]
    fn failed(&self, e: &Error) {
        let code = error_code(e);
        self.span.record("fitz.outcome", "error");
        self.span.record("error.type", code.as_str());
        if e.kind() == ErrorKind::Backpressure {
            counter(key!(names::REJECTED)).increment(1);
        }
        metrics::counter!(
            names::REQUEST_ERRORS,
            "domain" => self.op.domain,
            "operation" => self.op.operation,
            "code" => code,
        )
        .increment(1);
    }
}

/// The `code` label of an error: the broker's numeric code, else the kind.
pub(crate) fn error_code(e: &Error) -> String {
    if let Some(code) = e.code() {
        return code.to_string();
    }
    kind_name(e.kind()).to_owned()
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Connection => "connection",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Closed => "closed",
        ErrorKind::Auth => "auth",
        ErrorKind::Protocol => "protocol",
        ErrorKind::Backpressure => "backpressure",
        ErrorKind::Broker => "broker",
        ErrorKind::Stale => "stale",
        ErrorKind::Cancelled => "cancelled",
        ErrorKind::InvalidArgument => "invalid_argument",
        ErrorKind::Overflow => "overflow",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Decode => "decode",
    }
}

/// A span for one worker delivery (`domain` is `rpc` or `queue`).
pub(crate) fn delivery_span(domain: &'static str, route: &str) -> Span {
    tracing::info_span!(
        target: "fitz::process",
        "fitz.process",
        "messaging.system" = "fitz",
        "messaging.operation.name" = "process",
        "messaging.operation.type" = "process",
        "fitz.domain" = domain,
        "messaging.destination.name" = route,
        "messaging.message.id" = Empty,
    )
}

/// The in-flight gauge, `used` permits of the limit.
#[inline]
pub(crate) fn in_flight(used: usize) {
    gauge(key!(names::IN_FLIGHT)).set(used as f64);
}

/// The connection state gauge.
pub(crate) fn state(s: State) {
    let v = match s {
        State::Disconnected => 0.0,
        State::Connecting => 1.0,
        State::Connected => 2.0,
        State::Authenticating => 3.0,
        State::Authenticated => 4.0,
        State::Reconnecting => 5.0,
        State::Closed => 6.0,
    };
    gauge(key!(names::CONNECTION_STATE)).set(v);
}

/// Counters fed by connection events.
pub(crate) fn event(e: &Event) {
    if let Event::Connected {
        reconnected: true, ..
    } = e
    {
        counter(key!(names::RECONNECTS)).increment(1);
    }
}

/// A subscription handle was created (`+1`) or dropped (`-1`).
#[inline]
pub(crate) fn subscription_active(delta: f64) {
    gauge(key!(names::SUBSCRIPTIONS_ACTIVE)).increment(delta);
}

/// `n` notifications entered (`n > 0`) or left (`n < 0`) a mailbox.
#[inline]
pub(crate) fn mailbox_buffered(n: f64) {
    gauge(key!(names::MAILBOX_BUFFERED)).increment(n);
}

/// A full mailbox discarded a notification.
#[inline]
pub(crate) fn mailbox_dropped() {
    counter(key!(names::MAILBOX_DROPPED)).increment(1);
}

/// The output buffer's unwritten bytes.
#[inline]
pub(crate) fn outbound_pending(bytes: usize) {
    gauge(key!(names::OUTBOUND_PENDING)).set(bytes as f64);
}

/// A frame was held back above the output high-water mark.
#[inline]
pub(crate) fn outbound_backpressured() {
    counter(key!(names::OUTBOUND_BACKPRESSURED)).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_type_has_labels() {
        for &ty in fitz_protocol::types::ALL {
            let info = fitz_protocol::types::info(ty).unwrap_or_else(|| panic!("{ty}"));
            if !info.client_sends || matches!(ty, 1..=3) {
                continue;
            }
            let op = op(ty);
            assert_ne!(op.domain, "unknown", "{}", info.name);
            assert!(
                info.name.to_ascii_lowercase().ends_with(op.operation),
                "{} vs {}",
                info.name,
                op.operation
            );
        }
        assert_eq!(op(9999).domain, "unknown");
    }

    #[test]
    fn error_codes() {
        assert_eq!(error_code(&Error::closed()), "closed");
        assert_eq!(error_code(&Error::stale()), "stale");
    }
}
