//! Connection state and lifecycle events.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use fitz_protocol::Capabilities;
use futures_core::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::ReusableBoxFuture;

use crate::error::Error;

/// Where the client's connection stands. Observe it with
/// [`crate::Client::state`] or [`crate::Client::watch_state`].
///
/// A first connection walks `Disconnected → Connecting → Connected →
/// Authenticating → Authenticated`; a lost session goes `Reconnecting` and
/// walks `Connecting → … → Authenticated` again (subscriptions are restored
/// before `Authenticated`); [`crate::Client::close`] and an authentication
/// rejection end in `Closed`, for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Not connected and not trying (initially, after a failed `connect()`,
    /// or after reconnect attempts ran out).
    Disconnected,
    /// Opening the transport (TCP, TLS, WebSocket upgrade).
    Connecting,
    /// The transport is open; CONNECT is not yet sent.
    Connected,
    /// CONNECT was sent; waiting for SERVER_HELLO, then restoring
    /// subscriptions after a reconnect.
    Authenticating,
    /// Ready: requests flow.
    Authenticated,
    /// The session was lost; waiting out the backoff before the next attempt.
    Reconnecting,
    /// Closed for good.
    Closed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Identifies one subscription (or push handler) of a client in events. Not
/// a wire id: it never changes across reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub(crate) u64);

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub#{}", self.0)
    }
}

/// Something that happened to the connection. See [`crate::Client::events`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A session is ready (after the handshake and any restore).
    Connected {
        /// What the broker advertised in SERVER_HELLO.
        capabilities: Capabilities,
        /// True when this session replaced a lost one.
        reconnected: bool,
    },
    /// The session ended.
    Disconnected {
        /// Why.
        reason: Error,
    },
    /// The next connection attempt will start after `delay`.
    ReconnectScheduled {
        /// Attempt number, from 1.
        attempt: u32,
        /// The jittered delay.
        delay: Duration,
    },
    /// Subscriptions and workers were re-registered on a new session.
    Restored {
        /// How many registrations were restored.
        count: usize,
    },
    /// A registration could not be restored; its subscription received the
    /// same error as its last item.
    RestoreFailed {
        /// The affected subscription.
        subscription: SubscriptionId,
        /// Why.
        error: Error,
    },
    /// A subscription's consumer fell behind and its buffer overflowed.
    SlowConsumer {
        /// The subscription.
        subscription: SubscriptionId,
        /// Notifications discarded for it so far.
        dropped: u64,
    },
    /// The broker rejected the token. The client is now closed.
    AuthRejected {
        /// The rejection.
        error: Error,
    },
    /// The client closed.
    Closed,
    /// This receiver fell behind and missed `missed` older events.
    Lagged {
        /// Events lost.
        missed: u64,
    },
}

/// A receiver of [`Event`]s; also a `Stream`.
///
/// Backed by a bounded broadcast channel (256 events): the connection never
/// waits for a listener. A receiver that falls more than 256 events behind
/// loses the oldest ones and is told so by one [`Event::Lagged`]. The stream
/// ends after [`Event::Closed`].
pub struct Events {
    fut: ReusableBoxFuture<'static, (Option<Event>, broadcast::Receiver<Event>)>,
    ended: bool,
}

async fn next_event(
    mut rx: broadcast::Receiver<Event>,
) -> (Option<Event>, broadcast::Receiver<Event>) {
    let ev = match rx.recv().await {
        Ok(ev) => Some(ev),
        Err(broadcast::error::RecvError::Lagged(missed)) => Some(Event::Lagged { missed }),
        Err(broadcast::error::RecvError::Closed) => None,
    };
    (ev, rx)
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<Event>, closed: bool) -> Self {
        Self {
            fut: ReusableBoxFuture::new(next_event(rx)),
            ended: closed,
        }
    }

    /// The next event; `None` after [`Event::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: an event is only taken when the future resolves; a dropped
    /// call loses nothing.
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let (ev, rx) = std::task::ready!(self.fut.poll(cx));
        self.fut.set(next_event(rx));
        self.ended = matches!(ev, None | Some(Event::Closed));
        Poll::Ready(ev)
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Events")
    }
}
