//! Lease subscriptions: SUBSCRIBE (407), UNSUBSCRIBE (408), NOTIFY (409).

use std::fmt;

use bytes::Bytes;
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::{Message, Str, lease, types};

use crate::connection::{
    Connection, Registration, RegistrationSpec, decode_ack, domain_subscription,
    record_with_payload,
};
use crate::error::{Error, Result};
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

domain_subscription! {
    /// A live Lease subscription: a `Stream` of [`LeaseChange`]s.
    ///
    /// It keeps working across reconnects (changes while disconnected are not
    /// replayed). Items are `Err` only as the last item before the stream ends:
    /// on overflow under [`crate::Overflow::Error`], when it could not be
    /// restored after a reconnect, or when the client closed. Dropping it
    /// unsubscribes in the background.
    pub struct LeaseSubscription: LeaseChange, keyed by pattern, dropping "Changes";
}
