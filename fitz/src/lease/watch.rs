//! Lease subscriptions: SUBSCRIBE (407), UNSUBSCRIBE (408), NOTIFY (409).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::{Message, Str, lease, types};
use futures_core::Stream;

use crate::connection::{
    Connection, Registration, RegistrationSpec, Subscription, decode_ack, record_with_payload,
};
use crate::error::{Error, Result};
use crate::events::SubscriptionId;
use crate::options::SubscriptionOptions;

static SUBSCRIPTION: RegistrationSpec = RegistrationSpec {
    name: "lease subscription",
    subscribe_type: types::LEASE_SUBSCRIBE,
    notify_type: Some(types::LEASE_NOTIFY),
    ack: |payload| decode_ack::<lease::SubscribeReply>(payload, |ok| ok.sub_id),
    // Lease unsubscribes by the original pattern string: the whole SUBSCRIBE
    // payload.
    unsubscribe: |_wire_id, payload| record_with_payload(types::LEASE_UNSUBSCRIBE, payload),
};

pub(super) async fn subscribe(
    conn: &Connection,
    pattern: &str,
    options: SubscriptionOptions,
) -> Result<LeaseSubscription> {
    route::validate_pattern(pattern, Scheme::Lease).map_err(Error::route)?;
    let reg = Registration::new(
        &SUBSCRIPTION,
        &lease::Subscribe::new(pattern),
        decode_change,
        options,
    )?;
    let inner = conn.register(reg).await?;
    Ok(LeaseSubscription {
        inner,
        pattern: pattern.to_owned(),
    })
}

fn decode_change(payload: Bytes) -> Result<LeaseChange> {
    let n = lease::Notify::decode(payload)
        .map_err(|e| Error::protocol(format!("malformed LEASE NOTIFY: {e}")).with_source(e))?;
    Ok(LeaseChange { route: n.route })
}

/// The held set of one lease changed (acquired, granted, released, expired,
/// or its holder disconnected). A hint to re-read, not an event log.
#[derive(Clone, PartialEq, Eq)]
pub struct LeaseChange {
    route: Str,
}

impl LeaseChange {
    /// The concrete route of the lease that changed.
    pub fn route(&self) -> &str {
        &self.route
    }
}

impl fmt::Debug for LeaseChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseChange")
            .field("route", &&*self.route)
            .finish()
    }
}

/// A live Lease subscription: a `Stream` of [`LeaseChange`]s.
///
/// It keeps working across reconnects (changes while disconnected are not
/// replayed). Items are `Err` only as the last item before the stream ends:
/// on overflow under [`crate::Overflow::Error`], when it could not be
/// restored after a reconnect, or when the client closed. Dropping it
/// unsubscribes in the background.
pub struct LeaseSubscription {
    inner: Subscription<LeaseChange>,
    pattern: String,
}

impl LeaseSubscription {
    /// The pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// This subscription's id in [`crate::Event`]s.
    pub fn id(&self) -> SubscriptionId {
        self.inner.id()
    }

    /// Changes discarded so far under [`crate::Overflow::DropOldest`].
    pub fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    /// Unsubscribes and waits for the broker's acknowledgement (immediate
    /// when another subscription of this client shares the pattern).
    pub async fn unsubscribe(self) -> Result<()> {
        self.inner.unsubscribe().await
    }
}

impl Stream for LeaseSubscription {
    type Item = Result<LeaseChange>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_item(cx)
    }
}

impl fmt::Debug for LeaseSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseSubscription")
            .field("id", &self.id())
            .field("pattern", &self.pattern)
            .finish()
    }
}
