//! Availability watches: SUBSCRIBE 207, UNSUBSCRIBE 208, NOTIFY 209.

use std::fmt;

use bytes::Bytes;
use fitz_protocol::{Message, Str, queue, types};

use crate::connection::{
    Connection, Registration, RegistrationSpec, decode_ack, domain_subscription,
    record_with_payload,
};
use crate::error::{Error, Result};
use crate::options::SubscriptionOptions;

static AVAILABILITY: RegistrationSpec = RegistrationSpec {
    name: "queue availability",
    subscribe_type: types::QUEUE_SUBSCRIBE,
    notify_type: Some(types::QUEUE_NOTIFY),
    ack: |payload| decode_ack::<queue::SubscribeReply>(payload, |ok| ok.sub_id),
    // Queue unsubscribes by the original pattern, which is exactly the
    // SUBSCRIBE payload.
    unsubscribe: |_wire_id, payload| record_with_payload(types::QUEUE_UNSUBSCRIBE, payload),
};

pub(super) async fn subscribe(
    conn: &Connection,
    pattern: &str,
    options: SubscriptionOptions,
) -> Result<QueueSubscription> {
    let reg = Registration::new(
        &AVAILABILITY,
        &queue::Subscribe::new(pattern),
        decode_notify,
        options,
    )?;
    let inner = conn.register(reg).await?;
    Ok(QueueSubscription {
        inner,
        pattern: pattern.to_owned(),
    })
}

fn decode_notify(payload: Bytes) -> Result<QueueAvailability> {
    let n = queue::Notify::decode(payload)
        .map_err(|e| Error::protocol(format!("malformed QUEUE NOTIFY: {e}")).with_source(e))?;
    Ok(QueueAvailability {
        counters: n.counters().map(|c| QueueCounters {
            ready: c.ready,
            delayed: c.delayed,
            inflight: c.inflight,
        }),
        route: n.route,
    })
}

/// "This queue has work": one availability notification.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueAvailability {
    route: Str,
    counters: Option<QueueCounters>,
}

impl QueueAvailability {
    /// The concrete queue route (never the subscribed pattern).
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The queue's counters when the notification was sent. `None` from a
    /// broker that sends an opaque payload instead of counters (the dialect of
    /// some older brokers); the notification still means work may be ready.
    pub fn counters(&self) -> Option<QueueCounters> {
        self.counters
    }
}

impl fmt::Debug for QueueAvailability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueAvailability")
            .field("route", &&*self.route)
            .field("counters", &self.counters)
            .finish()
    }
}

/// A point-in-time snapshot of one queue's messages. A hint: by the time it
/// is read other consumers may have changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounters {
    /// Visible now, ready to be reserved.
    pub ready: u64,
    /// Waiting out an enqueue delay.
    pub delayed: u64,
    /// Reserved and not yet completed or expired.
    pub inflight: u64,
}

domain_subscription! {
    /// A live availability watch: a `Stream` of [`QueueAvailability`].
    ///
    /// It keeps working across reconnects (the broker reports the queues that
    /// have ready work again right after the watch is restored). Items are `Err`
    /// only as the last item before the stream ends: on overflow under
    /// [`crate::Overflow::Error`], when the watch could not be restored after a
    /// reconnect, or when the client closed. Dropping it unsubscribes in the
    /// background.
    pub struct QueueSubscription: QueueAvailability, keyed by pattern, dropping "Notifications";
}
