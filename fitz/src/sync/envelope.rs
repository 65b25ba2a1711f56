//! The queue envelope: how a queued message carries its outbox tx id.
//!
//! ENQUEUE has no metadata field, so an outbox entry's tx id
//! (`<client id>/<seq>`, unique per entry) travels in the body, in front of
//! the application's bytes, when the entry asks for it
//! ([`Mutation::enqueue`](super::Mutation::enqueue); opt-in, because
//! consumers must unwrap it). The format, version 1:
//!
//! ```text
//! \0sync-tx/1\n  <tx id, UTF-8, no \n>  \n  <the application's body, as is>
//! ```
//!
//! The leading NUL byte keeps it apart from text and JSON bodies. A body
//! that does not start with the magic, or starts with it but has no
//! terminated UTF-8 tx id, is not an envelope: [`QueueEnvelope::open`]
//! returns it whole, with no tx id. Consumers in other languages parse the
//! same three parts.
//!
//! Delivery is at least once (an enqueue whose answer was lost is sent
//! again, and a reservation that expires is delivered again), so a consumer
//! that must act once per entry deduplicates by tx id: [`TxDedup`] keeps a
//! bounded window of the ids it has handled.

use std::collections::{HashSet, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

/// The first bytes of an enveloped body (format version 1).
pub const ENVELOPE_MAGIC: &[u8] = b"\0sync-tx/1\n";

/// A queue message body opened: the tx id it carried (if it was an
/// envelope) and the application's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEnvelope {
    tx_id: Option<String>,
    body: Bytes,
}

impl QueueEnvelope {
    /// Wraps `body` in an envelope carrying `tx_id`. `None` when the tx id
    /// contains a newline (it could not be read back).
    pub fn wrap(tx_id: &str, body: &[u8]) -> Option<Bytes> {
        if tx_id.contains('\n') {
            return None;
        }
        let mut b = BytesMut::with_capacity(ENVELOPE_MAGIC.len() + tx_id.len() + 1 + body.len());
        b.put_slice(ENVELOPE_MAGIC);
        b.put_slice(tx_id.as_bytes());
        b.put_u8(b'\n');
        b.put_slice(body);
        Some(b.freeze())
    }

    /// Opens a received body. Never fails: a body that is not an envelope
    /// comes back whole with no tx id. The application's body shares
    /// `body`'s memory.
    pub fn open(body: Bytes) -> Self {
        let parsed = body.strip_prefix(ENVELOPE_MAGIC).and_then(|rest| {
            let nl = rest.iter().position(|&b| b == b'\n')?;
            let id = std::str::from_utf8(&rest[..nl]).ok()?.to_owned();
            Some((id, ENVELOPE_MAGIC.len() + nl + 1))
        });
        match parsed {
            Some((id, at)) => Self {
                tx_id: Some(id),
                body: body.slice(at..),
            },
            None => Self { tx_id: None, body },
        }
    }

    /// The tx id (`<client id>/<seq>`), when the body was an envelope.
    pub fn tx_id(&self) -> Option<&str> {
        self.tx_id.as_deref()
    }

    /// The application's body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the application's body.
    pub fn into_body(self) -> Bytes {
        self.body
    }
}

/// Consumer-side deduplication by tx id over a bounded window: the last
/// `capacity` ids recorded. When it is full, recording a new id forgets the
/// oldest one, so a duplicate arriving after `capacity` other ids were
/// recorded is not caught: size the window for the redeliveries you expect
/// (or keep handled tx ids in your own durable store, in the transaction
/// that makes the message's effect, for exactly-once effects across
/// restarts; this window lives in memory).
///
/// Record an id once the message's effect is done, not when it arrives: a
/// message whose handling failed must still be accepted when it is
/// delivered again.
///
/// ```
/// use bytes::Bytes;
/// use fitz::sync::{QueueEnvelope, TxDedup};
///
/// let mut dedup = TxDedup::new(10_000);
/// let body = QueueEnvelope::wrap("c1/7", b"hello").unwrap();
/// for delivery in [body.clone(), body] {
///     let Some(msg) = dedup.open(delivery) else { continue }; // a duplicate
///     // ... act on msg.body(), then:
///     if let Some(id) = msg.tx_id() {
///         dedup.record(id);
///     }
/// }
/// assert_eq!(dedup.len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct TxDedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl TxDedup {
    /// A window of the last `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Opens `body` ([`QueueEnvelope::open`]); `None` when its tx id is in
    /// the window (a duplicate). A body without a tx id always comes back.
    /// Records nothing: call [`TxDedup::record`] once the message is
    /// handled.
    pub fn open(&self, body: Bytes) -> Option<QueueEnvelope> {
        let msg = QueueEnvelope::open(body);
        match msg.tx_id() {
            Some(id) if self.seen.contains(id) => None,
            _ => Some(msg),
        }
    }

    /// True when `tx_id` is in the window.
    pub fn contains(&self, tx_id: &str) -> bool {
        self.seen.contains(tx_id)
    }

    /// Records `tx_id` as handled; false when it was already in the window.
    /// A full window forgets its oldest id.
    pub fn record(&mut self, tx_id: &str) -> bool {
        if self.seen.contains(tx_id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(tx_id.to_owned());
        self.order.push_back(tx_id.to_owned());
        true
    }

    /// Ids in the window.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// No id recorded.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The window's size.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_other_bodies_pass_whole() {
        let wrapped = QueueEnvelope::wrap("abc/12", b"body\n\0bytes").unwrap();
        assert_eq!(&wrapped[..], b"\0sync-tx/1\nabc/12\nbody\n\0bytes");
        let msg = QueueEnvelope::open(wrapped);
        assert_eq!(msg.tx_id(), Some("abc/12"));
        assert_eq!(&msg.body()[..], b"body\n\0bytes");
        // An empty body.
        let msg = QueueEnvelope::open(QueueEnvelope::wrap("x/1", b"").unwrap());
        assert_eq!((msg.tx_id(), msg.body().len()), (Some("x/1"), 0));
        // Not envelopes: plain text, a truncated envelope, a bad tx id.
        for raw in [
            &b"plain"[..],
            b"",
            b"\0sync-tx/1\nno-newline",
            b"\0sync-tx/1\n\xff\xfe\nbody",
            b"\0sync-tx/2\nid\nbody",
        ] {
            let msg = QueueEnvelope::open(Bytes::copy_from_slice(raw));
            assert_eq!(msg.tx_id(), None, "{raw:?}");
            assert_eq!(&msg.body()[..], raw);
        }
        assert_eq!(QueueEnvelope::wrap("a\nb", b"x"), None);
    }

    #[test]
    fn dedup_yields_each_tx_id_once_within_its_window() {
        let mut d = TxDedup::new(2);
        let m = |id: &str| QueueEnvelope::wrap(id, b"x").unwrap();
        assert!(d.open(m("a/1")).is_some());
        // Not recorded yet: a redelivery before handling still comes back.
        assert!(d.open(m("a/1")).is_some());
        assert!(d.record("a/1"));
        assert!(d.open(m("a/1")).is_none());
        assert!(!d.record("a/1"));
        assert!(d.record("a/2"));
        // Full: the oldest is forgotten.
        assert!(d.record("a/3"));
        assert_eq!(d.len(), 2);
        assert!(!d.contains("a/1") && d.contains("a/2") && d.contains("a/3"));
        assert!(d.open(m("a/1")).is_some());
        // Bodies without a tx id always pass.
        assert!(d.open(Bytes::from_static(b"plain")).is_some());
        assert_eq!(TxDedup::new(0).capacity(), 1);
    }
}
