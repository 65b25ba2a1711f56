//! Commit notifications (609): the subscription stream and its events.
//!
//! The payload's JSON is `fitz_protocol::stream::CommitEvent`, the type the
//! broker writes it with; unknown fields are ignored (the broker may add
//! offsets), while malformed JSON, an unknown `event` or a missing required
//! field fail that one notification.

use std::fmt;
use std::ops::RangeInclusive;

use bytes::Bytes;
use fitz_protocol::{Message, Str, stream};

use crate::connection::{Subscription, domain_subscription};
use crate::error::{Error, Result};

/// One notification of a [`StreamSubscription`].
///
/// Notifications only wake a reader: they are best effort (dropped under
/// broker backpressure, never replayed after a reconnect) and debounced (one
/// event may cover several commits to the resource). Read the stream to learn
/// what was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitEvent {
    /// One or more batches were committed to a resource.
    Committed(Committed),
    /// A resource's watermark advanced.
    WatermarkAdvanced(WatermarkAdvanced),
}

impl CommitEvent {
    /// The concrete `stream://realm/area/resource` route it is about.
    pub fn route(&self) -> &str {
        match self {
            Self::Committed(c) => c.route(),
            Self::WatermarkAdvanced(w) => w.route(),
        }
    }
}

/// Committed offsets of one resource (possibly several debounced commits).
#[derive(Clone, PartialEq, Eq)]
pub struct Committed {
    route: Str,
    resource: RangeInclusive<u64>,
    area: Option<RangeInclusive<u64>>,
    realm: Option<RangeInclusive<u64>>,
    global: Option<RangeInclusive<u64>>,
    batch_size: u64,
}

impl Committed {
    /// The concrete route committed to.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The resource offsets committed.
    pub fn resource_offsets(&self) -> RangeInclusive<u64> {
        self.resource.clone()
    }

    /// The area offsets they were given, if reported.
    pub fn area_offsets(&self) -> Option<RangeInclusive<u64>> {
        self.area.clone()
    }

    /// The realm offsets they were given, if reported.
    pub fn realm_offsets(&self) -> Option<RangeInclusive<u64>> {
        self.realm.clone()
    }

    /// The global offsets they were given, if reported.
    pub fn global_offsets(&self) -> Option<RangeInclusive<u64>> {
        self.global.clone()
    }

    /// Records committed.
    pub fn batch_size(&self) -> u64 {
        self.batch_size
    }
}

impl fmt::Debug for Committed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committed")
            .field("route", &&*self.route)
            .field("resource", &self.resource)
            .field("area", &self.area)
            .field("realm", &self.realm)
            .field("global", &self.global)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

/// A resource's watermark moved from `previous` to `watermark`.
#[derive(Clone, PartialEq, Eq)]
pub struct WatermarkAdvanced {
    route: Str,
    previous: u64,
    watermark: u64,
}

impl WatermarkAdvanced {
    /// The concrete route.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The watermark before.
    pub fn previous(&self) -> u64 {
        self.previous
    }

    /// The watermark now.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }
}

impl fmt::Debug for WatermarkAdvanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatermarkAdvanced")
            .field("route", &&*self.route)
            .field("previous", &self.previous)
            .field("watermark", &self.watermark)
            .finish()
    }
}

domain_subscription! {
    /// A live Stream subscription: a `Stream` of [`CommitEvent`]s for every
    /// resource its selector matches.
    ///
    /// It keeps working across reconnects (commits made while disconnected are
    /// not notified: read the stream to catch up, or use
    /// [`super::Streams::follow`], which does). Two kinds of `Err` items:
    ///
    /// * a notification that cannot be decoded (malformed JSON, an unknown
    ///   `event`) yields one [`crate::ErrorKind::Protocol`] item and the stream
    ///   goes on;
    /// * overflow under [`crate::Overflow::Error`], a failed restore after a
    ///   reconnect, or the client closing yield a last error, then the end.
    ///
    /// Subscriptions of one client to the same selector share one broker
    /// registration; dropping one unsubscribes it in the background.
    pub struct StreamSubscription: CommitEvent, keyed by selector, dropping "Notifications";
}

impl StreamSubscription {
    pub(crate) fn new(inner: Subscription<CommitEvent>, selector: String) -> Self {
        Self { inner, selector }
    }
}

/// Decodes one NOTIFY payload (runs in the consumer's task).
pub(crate) fn decode_notify(payload: Bytes) -> Result<CommitEvent> {
    let n = stream::Notify::decode(payload)
        .map_err(|e| Error::protocol(format!("malformed STREAM NOTIFY: {e}")).with_source(e))?;
    let event = stream::CommitEvent::from_json(&n.payload).map_err(|e| {
        Error::protocol(format!("undecodable STREAM NOTIFY for {}: {e}", &*n.route)).with_source(e)
    })?;
    Ok(CommitEvent::from_wire(n.route, event))
}

impl CommitEvent {
    fn from_wire(route: Str, event: stream::CommitEvent) -> Self {
        let span = |first: Option<u64>, last: Option<u64>| Some(first?..=last?);
        match event {
            stream::CommitEvent::Committed(c) => Self::Committed(Committed {
                route,
                resource: c.first_resource_offset..=c.last_resource_offset,
                area: span(c.first_area_offset, c.last_area_offset),
                realm: span(c.first_realm_offset, c.last_realm_offset),
                global: span(c.first_global_offset, c.last_global_offset),
                batch_size: c.batch_size(),
            }),
            stream::CommitEvent::WatermarkAdvanced {
                previous,
                watermark,
            } => Self::WatermarkAdvanced(WatermarkAdvanced {
                route,
                previous,
                watermark,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Result<CommitEvent> {
        decode_notify(notify_payload(7, "stream://r/a/x", json.as_bytes()))
    }

    #[test]
    fn decodes_committed_with_and_without_optional_axes() {
        let full = event(
            r#"{"event":"committed","first_resource_offset":0,"last_resource_offset":2,
               "first_area_offset":4,"last_area_offset":8,"first_realm_offset":9,
               "last_realm_offset":12,"first_global_offset":20,"last_global_offset":30,
               "batch_size":3,"future":{"x":[1,2,{"y":null}]}}"#,
        )
        .unwrap();
        let CommitEvent::Committed(c) = &full else {
            panic!("{full:?}")
        };
        assert_eq!(c.route(), "stream://r/a/x");
        assert_eq!(c.resource_offsets(), 0..=2);
        assert_eq!(c.area_offsets(), Some(4..=8));
        assert_eq!(c.realm_offsets(), Some(9..=12));
        assert_eq!(c.global_offsets(), Some(20..=30));
        assert_eq!(c.batch_size(), 3);

        let bare = event(
            r#" { "event" : "committed", "first_resource_offset": 5, "last_resource_offset": 6 } "#,
        )
        .unwrap();
        let CommitEvent::Committed(c) = bare else {
            panic!()
        };
        assert_eq!((c.area_offsets(), c.batch_size()), (None, 2));
    }

    #[test]
    fn decodes_watermark_advanced() {
        let e = event(r#"{"event":"watermark_advanced","previous":3,"watermark":7}"#).unwrap();
        let CommitEvent::WatermarkAdvanced(w) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            (w.previous(), w.watermark(), e.route()),
            (3, 7, "stream://r/a/x")
        );
    }

    #[test]
    fn rejects_what_it_cannot_trust() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"event":"committed"}"#,
            r#"{"event":"committed","first_resource_offset":-1,"last_resource_offset":2}"#,
            r#"{"event":"committed","first_resource_offset":1.5,"last_resource_offset":2}"#,
            r#"{"event":"committed","first_resource_offset":"1","last_resource_offset":2}"#,
            r#"{"event":"compacted","first_resource_offset":1,"last_resource_offset":2}"#,
            r#"{"event":7}"#,
            r#"{"event":"watermark_advanced","previous":1}"#,
            r#"{"event":"watermark_advanced","previous":1,"watermark":2} x"#,
            r#"{"event":"watermark_advanced",,"previous":1,"watermark":2}"#,
            r#"{"event":"watermark_advanced","previous":01,"watermark":2}"#,
            "{\"event\":\"a\u{1}\"}",
        ] {
            let e = event(bad).expect_err(bad);
            assert_eq!(e.kind(), crate::ErrorKind::Protocol);
            assert!(e.message().contains("stream://r/a/x"), "{e}");
        }
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(1000), "]".repeat(1000));
        assert!(event(&deep).is_err());
        assert!(decode_notify(Bytes::from_static(&[0, 1])).is_err());
    }

    fn notify_payload(sub_id: u64, route: &str, json: &[u8]) -> Bytes {
        stream::Notify {
            sub_id,
            route: Str::from(route),
            payload: Bytes::copy_from_slice(json),
        }
        .to_payload()
    }
}
