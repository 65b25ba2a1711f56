//! KV change subscriptions: SUBSCRIBE (109), UNSUBSCRIBE (110), NOTIFY (111).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::{Message, Str, kv, types};
use futures_core::Stream;

use crate::connection::{
    Connection, Registration, RegistrationSpec, Subscription, decode_ack, record_with_payload,
};
use crate::error::{Error, Result};
use crate::events::SubscriptionId;
use crate::options::SubscriptionOptions;

static WATCH: RegistrationSpec = RegistrationSpec {
    name: "kv subscription",
    subscribe_type: types::KV_SUBSCRIBE,
    notify_type: Some(types::KV_NOTIFY),
    ack: |payload| decode_ack::<kv::SubscribeReply>(payload, |ok| ok.sub_id),
    // KV unsubscribes by the pattern string, which is the whole SUBSCRIBE
    // payload.
    unsubscribe: |_wire_id, payload| record_with_payload(types::KV_UNSUBSCRIBE, payload),
};

pub(super) async fn subscribe(
    conn: &Connection,
    pattern: &str,
    options: SubscriptionOptions,
) -> Result<KvSubscription> {
    route::validate_pattern(pattern, Scheme::Kv).map_err(Error::route)?;
    let reg = Registration::new(&WATCH, &kv::Subscribe::new(pattern), decode_change, options)?;
    let inner = conn.register(reg).await?;
    Ok(KvSubscription {
        inner,
        pattern: pattern.to_owned(),
    })
}

fn decode_change(payload: Bytes) -> Result<KvChange> {
    let n = kv::Notify::decode(payload)
        .map_err(|e| Error::protocol(format!("malformed KV NOTIFY: {e}")).with_source(e))?;
    Ok(KvChange {
        route: n.route,
        mutation_count: n.mutation_count,
    })
}

/// A commit that changed a resource a [`KvSubscription`] matches.
#[derive(Clone, PartialEq, Eq)]
pub struct KvChange {
    route: Str,
    mutation_count: u64,
}

impl KvChange {
    /// The concrete resource route that was committed to.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// How many writes of the commit changed the resource (each PUT and
    /// INSERT, each DELETE of a present key, each key a DELETE_RANGE
    /// removed — as the broker counts them). Always at least 1: commits that
    /// change nothing are not reported.
    pub fn mutation_count(&self) -> u64 {
        self.mutation_count
    }
}

impl fmt::Debug for KvChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvChange")
            .field("route", &&*self.route)
            .field("mutation_count", &self.mutation_count)
            .finish()
    }
}

/// A live KV subscription: a `Stream` of [`KvChange`]s.
///
/// It keeps working across reconnects (commits made while disconnected are
/// not replayed: re-read what matters after
/// [`Event::Restored`](crate::Event::Restored)). Items are `Err` only as the
/// last item before the stream ends: on overflow under
/// [`crate::Overflow::Error`], when the subscription could not be restored after a
/// reconnect, or when the client closed. Dropping it unsubscribes in the
/// background.
pub struct KvSubscription {
    inner: Subscription<KvChange>,
    pattern: String,
}

impl KvSubscription {
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

impl Stream for KvSubscription {
    type Item = Result<KvChange>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_item(cx)
    }
}

impl fmt::Debug for KvSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvSubscription")
            .field("id", &self.id())
            .field("pattern", &self.pattern)
            .finish()
    }
}
