//! Handles the actor delivers to: subscriptions, push streams, multi-frame
//! replies.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use tokio::sync::mpsc;

use super::{Connection, MailboxRx, Push};
use crate::error::{Error, Result};
use crate::events::SubscriptionId;

/// A live, restorable subscription yielding decoded notifications.
///
/// The stream survives reconnects (the wire id changes underneath). It ends
/// after an error item (overflow under `Overflow::Error`, a failed restore,
/// the client closing) or cleanly (`None`) when the registration was ended
/// on purpose. Dropping it unsubscribes in the background.
pub(crate) struct Subscription<T> {
    conn: Connection,
    sink: SubscriptionId,
    mailbox: MailboxRx,
    decode: fn(Bytes) -> Result<T>,
    /// Unsubscribed explicitly: Drop has nothing left to do.
    detached: bool,
}

impl<T> Subscription<T> {
    pub(super) fn new(
        conn: Connection,
        sink: SubscriptionId,
        mailbox: MailboxRx,
        decode: fn(Bytes) -> Result<T>,
    ) -> Self {
        crate::telemetry::subscription_active(1.0);
        Self {
            conn,
            sink,
            mailbox,
            decode,
            detached: false,
        }
    }

    pub fn id(&self) -> SubscriptionId {
        self.sink
    }

    /// Notifications discarded under `Overflow::DropOldest` so far.
    pub fn dropped(&self) -> u64 {
        self.mailbox.dropped()
    }

    /// Unsubscribes and waits for the broker's acknowledgement (immediate
    /// when other handles still share the wire registration).
    ///
    /// Cancel-safe: dropped before the request reached the connection task,
    /// the handle's `Drop` unsubscribes in the background instead.
    pub async fn unsubscribe(mut self) -> Result<()> {
        if self.mailbox.is_finished() {
            self.detached = true;
            return Ok(());
        }
        let ack = self.conn.queue_unsubscribe(self.sink).await?;
        self.detached = true;
        match ack.await {
            Ok(r) => r,
            // The actor is gone, and with it the session and the registration.
            Err(_) => Ok(()),
        }
    }

    pub fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        match self.mailbox.poll_recv(cx) {
            Poll::Ready(Some(Ok(payload))) => Poll::Ready(Some((self.decode)(payload))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Stream for Subscription<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        // Subscription is Unpin: every field is.
        self.get_mut().poll_item(cx)
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        crate::telemetry::subscription_active(-1.0);
        if !self.detached {
            // First: a REGISTER still queued behind this removal is refused.
            self.mailbox.release();
            self.conn.unsubscribe_in_background(self.sink);
        }
    }
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.sink)
            .finish()
    }
}

/// Raw pushes matched by a [`super::PushKey`]: whole record payloads, and
/// for RPC worker deliveries the session boundaries between them.
pub(crate) struct PushStream {
    conn: Connection,
    sink: SubscriptionId,
    mailbox: MailboxRx<Push>,
}

impl PushStream {
    pub(super) fn new(conn: Connection, sink: SubscriptionId, mailbox: MailboxRx<Push>) -> Self {
        Self {
            conn,
            sink,
            mailbox,
        }
    }

    pub fn dropped(&self) -> u64 {
        self.mailbox.dropped()
    }

    /// The next record payload (session boundaries, which only worker
    /// deliveries carry, are skipped).
    pub fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        loop {
            return match self.mailbox.poll_recv(cx) {
                Poll::Ready(Some(Ok(Push::SessionEnded { .. }))) => continue,
                Poll::Ready(Some(Ok(Push::Record(payload)))) => Poll::Ready(Some(Ok(payload))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }

    /// [`PushStream::poll_record`] as a future.
    pub async fn next_record(&mut self) -> Option<Result<Bytes>> {
        std::future::poll_fn(|cx| self.poll_record(cx)).await
    }
}

impl Stream for PushStream {
    type Item = Result<Push>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Push>>> {
        self.get_mut().mailbox.poll_recv(cx)
    }
}

impl Drop for PushStream {
    fn drop(&mut self) {
        // First: an installation still queued behind this removal is refused.
        self.mailbox.release();
        // The actor already let go of it (a call's last response): one
        // control message less per RPC call.
        if !self.mailbox.is_sender_gone() {
            self.conn.drop_push_handler(self.sink);
        }
    }
}

/// The frames answering one multi-frame request, in arrival order. Ends
/// after the final frame or an error. Dropping it abandons the request (its
/// remaining frames are discarded).
pub(crate) struct ReplyFrames {
    rx: mpsc::Receiver<Result<Bytes>>,
}
impl ReplyFrames {
    pub(super) fn new(rx: mpsc::Receiver<Result<Bytes>>) -> Self {
        Self { rx }
    }

    /// The next frame; `None` after the final one.
    pub async fn next(&mut self) -> Option<Result<Bytes>> {
        self.rx.recv().await
    }
}

impl Stream for ReplyFrames {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        self.get_mut().rx.poll_recv(cx)
    }
}
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Subscription<Bytes>>();
    is_send::<PushStream>();
    is_send::<ReplyFrames>();
    let _ = Error::closed;
}

/// Declares a domain's public subscription type: a named `Stream` of
/// `Result<$item>` over a [`Subscription`], keyed by the pattern (or
/// selector) it was made for, with the accessors every domain shares. The
/// doc comment and the name of the key field come from the caller; the
/// struct is built with a literal in the domain's module.
macro_rules! domain_subscription {
    (
        $(#[$doc:meta])*
        pub struct $name:ident: $item:ty, keyed by $key:ident, dropping $what:literal;
    ) => {
        $(#[$doc])*
        pub struct $name {
            inner: $crate::connection::Subscription<$item>,
            $key: ::std::string::String,
        }

        impl $name {
            #[doc = concat!("The ", stringify!($key), " subscribed to.")]
            pub fn $key(&self) -> &str {
                &self.$key
            }

            /// This subscription's id in [`crate::Event`]s.
            pub fn id(&self) -> $crate::events::SubscriptionId {
                self.inner.id()
            }

            #[doc = concat!(
                $what,
                " discarded so far under [`crate::Overflow::DropOldest`]."
            )]
            pub fn dropped(&self) -> u64 {
                self.inner.dropped()
            }

            #[doc = concat!(
                "Unsubscribes and waits for the broker's acknowledgement \
                 (immediate when another subscription of this client shares the ",
                stringify!($key),
                ")."
            )]
            ///
            /// # Cancel safety
            ///
            /// Cancel-safe. Dropped before the request reached the connection
            /// task, the subscription's own `Drop` unsubscribes in the
            /// background instead; after that the unsubscribe completes
            /// without the caller.
            pub async fn unsubscribe(self) -> $crate::error::Result<()> {
                self.inner.unsubscribe().await
            }
        }

        impl ::futures_core::Stream for $name {
            type Item = $crate::error::Result<$item>;

            fn poll_next(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<Option<Self::Item>> {
                self.get_mut().inner.poll_item(cx)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("id", &self.id())
                    .field(stringify!($key), &self.$key)
                    .finish()
            }
        }
    };
}
pub(crate) use domain_subscription;
