//! Notice: fire-and-forget fan-out (types 500–504).
//!
//! A notice published to a concrete `notice://realm/area/resource` route
//! goes to every subscription whose pattern matches it *at that moment*;
//! nothing is stored or replayed. Publishing sends one record and waits for
//! nothing from the broker (which drops notices silently under pressure:
//! best effort by design), so use Notice for hints, invalidations and live
//! dashboards, and [`Queue`](crate::queue) or [`Streams`](crate::stream)
//! when every message matters.
//!
//! Subscriptions are live streams restored after a reconnect (notices
//! published while the connection was down are lost). Two subscriptions to
//! the same pattern on one client share one broker registration, and
//! unsubscribing one never silences the other.
//!
//! ```no_run
//! # async fn demo(client: fitz::Client) -> fitz::Result<()> {
//! use futures_util::StreamExt;
//!
//! let notice = client.notice();
//! let mut deploys = notice.subscribe("notice://prod/ops/*").await?;
//! notice.publish("notice://prod/ops/deploys", "v42 is live").await?;
//! while let Some(message) = deploys.next().await {
//!     let message = message?;
//!     println!("{}: {:?}", message.route(), message.payload());
//! }
//! # Ok(()) }
//! ```
//!
//! A subscriber that may fall behind chooses what happens when its buffer is
//! full with [`Notice::subscribe_with`] and [`crate::Overflow`]: end the
//! stream with an error (the default: nothing is lost silently), or keep the
//! newest notices and count the dropped ones.

use std::fmt;

use bytes::Bytes;
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::{Message, Str, notice, types};

use crate::connection::{
    Connection, Registration, RegistrationSpec, decode_ack, domain_subscription, encode_record,
};
use crate::error::{Error, Result};
use crate::options::SubscriptionOptions;

/// Segments of a notice route one publishes to: `notice://realm/area/resource`.
const PUBLISH_DEPTH: usize = 3;

static NOTICE: RegistrationSpec = RegistrationSpec {
    name: "notice subscription",
    subscribe_type: types::NOTICE_SUBSCRIBE,
    notify_type: Some(types::NOTICE_NOTIFY),
    ack: |payload| decode_ack::<notice::SubscribeReply>(payload, |ok| ok.sub_id),
    // Notice unsubscribes by wire id, not by pattern.
    unsubscribe: |wire_id, _| {
        wire_id.and_then(|sub_id| encode_record(&notice::Unsubscribe { sub_id }).ok())
    },
};

/// The Notice domain of a [`crate::Client`] (see [`crate::Client::notice`]).
#[derive(Clone)]
pub struct Notice {
    conn: Connection,
}

impl fmt::Debug for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Notice")
    }
}

impl Notice {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }

    /// Publishes `payload` to every subscription matching `route`, a concrete
    /// `notice://realm/area/resource` route (checked locally; nothing is sent
    /// when it is invalid).
    ///
    /// Resolves once the record is queued for writing on a ready session; the
    /// broker sends no reply. Payloads are limited by the 64 KiB record size.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the record was handed to the connection,
    /// the notice may still be published (whole, never half); dropped before,
    /// nothing is sent. Notice delivery is best effort anyway.
    pub async fn publish(&self, route: &str, payload: impl Into<Bytes>) -> Result<()> {
        validate_publish_route(route)?;
        let payload = payload.into();
        let variable = route.len() + payload.len();
        let msg = notice::Publish {
            route: Str::from(route),
            payload,
        };
        self.conn.send(&msg, variable).await
    }

    /// [`Notice::publish`] with `value` encoded as JSON (a value that cannot
    /// be is an [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// error, and nothing is sent).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the record was handed to the connection,
    /// the notice may still be published (whole, never half); dropped before,
    /// nothing is sent. Notice delivery is best effort anyway.
    #[cfg(feature = "serde")]
    pub async fn publish_json<T: serde::Serialize + ?Sized>(
        &self,
        route: &str,
        value: &T,
    ) -> Result<()> {
        self.publish(route, crate::json::encode(value)?).await
    }

    /// Subscribes to `pattern` (`*` = one segment, `**` = any number; any
    /// depth) with the client's default buffering.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, no registration is left behind:
    /// the handle under construction unsubscribes in the background, or is never
    /// installed when the connection task had not handled it yet.
    pub async fn subscribe(&self, pattern: &str) -> Result<NoticeSubscription> {
        let options = self.conn.shared().config.subscription;
        self.subscribe_with(pattern, options).await
    }

    /// Subscribes with explicit buffering for this subscription.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, no registration is left behind:
    /// the handle under construction unsubscribes in the background, or is never
    /// installed when the connection task had not handled it yet.
    pub async fn subscribe_with(
        &self,
        pattern: &str,
        options: SubscriptionOptions,
    ) -> Result<NoticeSubscription> {
        route::validate_pattern(pattern, Scheme::Notice).map_err(Error::route)?;
        let reg = Registration::new(
            &NOTICE,
            &notice::Subscribe::new(pattern),
            decode_notify,
            options,
        )?;
        let inner = self.conn.register(reg).await?;
        Ok(NoticeSubscription {
            inner,
            pattern: pattern.to_owned(),
        })
    }

    /// Removes every Notice subscription of this client on the broker
    /// (UNSUBSCRIBE_ALL) and, once the broker acknowledged, ends every local
    /// Notice subscription stream.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after UNSUBSCRIBE_ALL was written, the broker
    /// may have removed every Notice subscription while the local streams stay
    /// open (they receive nothing until a reconnect restores them). Call it again
    /// to finish.
    pub async fn unsubscribe_all(&self) -> Result<()> {
        self.conn
            .call::<_, notice::UnsubscribeAllOk>(&notice::UnsubscribeAll)
            .await?;
        self.conn.end_registrations(&NOTICE).await
    }
}

fn validate_publish_route(route: &str) -> Result<()> {
    let shape = route::validate_concrete(route, Scheme::Notice).map_err(Error::route)?;
    if shape.segments != PUBLISH_DEPTH {
        return Err(Error::route(route::RouteError::WrongDepth {
            expected: PUBLISH_DEPTH,
            found: shape.segments,
        }));
    }
    Ok(())
}

fn decode_notify(payload: Bytes) -> Result<NoticeMessage> {
    let n = notice::Notify::decode(payload)
        .map_err(|e| Error::protocol(format!("malformed NOTICE NOTIFY: {e}")).with_source(e))?;
    Ok(NoticeMessage {
        route: n.route,
        payload: n.payload,
    })
}

/// One delivered notice.
#[derive(Clone, PartialEq, Eq)]
pub struct NoticeMessage {
    route: Str,
    payload: Bytes,
}

impl NoticeMessage {
    /// The concrete route it was published to.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The published payload (shares the received frame's memory).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Takes the payload.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// The payload parsed as JSON. A payload that is not JSON of type `T` is
    /// an [`ErrorKind::Decode`](crate::ErrorKind::Decode) error.
    #[cfg(feature = "serde")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let what = format_args!("the notice on {}", &*self.route);
        crate::json::decode(&self.payload, what)
    }
}

impl fmt::Debug for NoticeMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoticeMessage")
            .field("route", &&*self.route)
            .field("payload", &self.payload)
            .finish()
    }
}

domain_subscription! {
    /// A live Notice subscription: a `Stream` of [`NoticeMessage`]s.
    ///
    /// It keeps working across reconnects. Items are `Err` only as the last item
    /// before the stream ends: on overflow under [`crate::Overflow::Error`], when
    /// the subscription could not be restored after a reconnect, or when the
    /// client closed. After [`Notice::unsubscribe_all`] it ends without an error.
    /// Dropping it unsubscribes in the background.
    pub struct NoticeSubscription: NoticeMessage, keyed by pattern, dropping "Notices";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_routes_are_concrete_and_three_deep() {
        assert!(validate_publish_route("notice://prod/app/deploys").is_ok());
        for bad in [
            "notice://prod/app",
            "notice://prod/app/deploys/extra",
            "notice://prod/app/*",
            "kv://prod/app/deploys",
            "notice://prod//deploys",
        ] {
            let e = validate_publish_route(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn unsubscribe_uses_the_wire_id() {
        let record = (NOTICE.unsubscribe)(Some(7), &Bytes::new()).unwrap();
        assert_eq!(
            &record[..],
            &[0xFF, 0x01, 0xF6, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]
        );
        assert!((NOTICE.unsubscribe)(None, &Bytes::new()).is_none());
    }

    #[cfg(feature = "serde")]
    #[tokio::test]
    async fn json_notices_round_trip_and_a_foreign_payload_is_a_decode_error() {
        use futures_util::StreamExt;

        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Deploy {
            version: u32,
        }

        let broker = fitz_broker::Broker::builder().start().await.unwrap();
        let client = crate::Client::anonymous(broker.tcp_url()).unwrap();
        client.connect().await.unwrap();
        let notice = client.notice();
        let mut sub = notice.subscribe("notice://test/app/*").await.unwrap();

        notice
            .publish_json("notice://test/app/deploys", &Deploy { version: 42 })
            .await
            .unwrap();
        notice
            .publish("notice://test/app/deploys", "plain text")
            .await
            .unwrap();

        let first = sub.next().await.unwrap().unwrap();
        assert_eq!(&first.payload()[..], br#"{"version":42}"#);
        assert_eq!(first.json::<Deploy>().unwrap(), Deploy { version: 42 });
        let second = sub.next().await.unwrap().unwrap();
        let e = second.json::<Deploy>().unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Decode);
        assert!(e.message().contains("notice://test/app/deploys"), "{e}");

        client.close().await;
        broker.shutdown().await;
    }

    #[test]
    fn acks_decode_both_forms_and_errors() {
        assert_eq!(
            (NOTICE.ack)(Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 9])).unwrap(),
            Some(9)
        );
        assert_eq!(
            (NOTICE.ack)(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 9])).unwrap(),
            Some(9)
        );
        let mut err = bytes::BytesMut::new();
        fitz_protocol::WireError::coded(3002, "bad").encode(&mut err);
        let e = (NOTICE.ack)(err.freeze()).unwrap_err();
        assert_eq!(e.code(), Some(3002));
    }
}
