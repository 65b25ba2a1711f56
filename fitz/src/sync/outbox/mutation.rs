//! What an outbox entry does: the [`Mutation`] kinds, and how a named
//! mutation's handler fails.
//!
//! Entries are stored as JSON (serde's external tagging: `{"Writes":[…]}`,
//! `{"Append":[…]}`, `"ScheduleCancel"` …). New variants are added, never
//! renamed, so a store written by an earlier build of this format version
//! still opens; a store holding a variant this build does not know fails to
//! open with [`SyncError::Corrupt`](crate::sync::SyncError::Corrupt) naming it,
//! and is not changed.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::RESERVED_PREFIX;
use crate::Error;
use crate::kv::Transaction;
use crate::schedule::DeliveryMode;

/// One KV write of a [`Mutation::Writes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvWrite {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Creates `key` with `value`; the broker refuses it (code 1006, a
    /// permanent failure: the entry goes to the dead letter) when the key
    /// exists.
    Insert {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Removes every key in `[start, end)`, except the sync layer's reserved
    /// keys (the range is split around [`RESERVED_PREFIX`]).
    DeleteRange {
        /// The first key removed.
        start: Vec<u8>,
        /// The first key kept after the range.
        end: Vec<u8>,
    },
}

impl KvWrite {
    /// A [`KvWrite::Put`].
    pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        Self::Put {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        }
    }

    /// A [`KvWrite::Insert`].
    pub fn insert(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        Self::Insert {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        }
    }

    /// A [`KvWrite::Delete`].
    pub fn delete(key: impl AsRef<[u8]>) -> Self {
        Self::Delete {
            key: key.as_ref().to_vec(),
        }
    }

    /// A [`KvWrite::DeleteRange`] of `[start, end)`.
    pub fn delete_range(start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> Self {
        Self::DeleteRange {
            start: start.as_ref().to_vec(),
            end: end.as_ref().to_vec(),
        }
    }

    pub(super) fn touches_reserved(&self) -> bool {
        match self {
            KvWrite::Put { key, .. } | KvWrite::Insert { key, .. } | KvWrite::Delete { key } => {
                key.starts_with(RESERVED_PREFIX)
            }
            // Split around the prefix at flush time.
            KvWrite::DeleteRange { .. } => false,
        }
    }
}

/// One record of a [`Mutation::Append`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAppend {
    /// The record's body.
    pub body: Vec<u8>,
    /// Its discriminator (the broker filters on it); repeated in the
    /// record's metadata as `aspect`, because READ items carry none.
    pub aspect: Option<String>,
}

impl StreamAppend {
    /// A record with `body` and no discriminator.
    pub fn new(body: impl AsRef<[u8]>) -> Self {
        Self {
            body: body.as_ref().to_vec(),
            aspect: None,
        }
    }

    /// This record with discriminator `aspect`.
    pub fn aspect(mut self, aspect: impl Into<String>) -> Self {
        self.aspect = Some(aspect.into());
        self
    }
}

/// What an outbox entry does to its resource (the entry's *lane*), as one
/// transaction (KV), one atomic batch (Stream) or one request (Schedule,
/// Queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// These writes, in order, as one unit.
    Writes(Vec<KvWrite>),
    /// The handler registered under `name` ([`OutboxBuilder::handler`](super::OutboxBuilder::handler)),
    /// called with `args` inside the flush's read-write transaction.
    Named {
        /// The handler's name.
        name: String,
        /// Its arguments, as the caller serialized them.
        args: Vec<u8>,
    },
    /// Records appended to a `stream://` resource as one committed batch,
    /// exactly once: at an expected offset fixed (and stored) just before
    /// the first send, each record's metadata carrying the entry's tx id
    /// (`{"sync_tx":"<client id>/<seq>","aspect":…}`).
    Append(Vec<StreamAppend>),
    /// Creates (or replaces) the schedule at the lane's
    /// `schedule://realm/area/resource/operation` route
    /// ([`Schedule::create`](crate::schedule::Schedule::create)).
    /// Idempotent: sent again after a lost answer, it sets the same
    /// definition.
    ScheduleCreate {
        /// The five-field UTC cron expression (checked when pushed).
        cron: String,
        /// How fires are delivered.
        #[serde(with = "delivery_mode")]
        mode: DeliveryMode,
        /// The payload every fire carries.
        payload: Vec<u8>,
    },
    /// Cancels the schedule at the lane's route
    /// ([`Schedule::cancel`](crate::schedule::Schedule::cancel)).
    /// Idempotent: cancelling a cancelled schedule succeeds.
    ScheduleCancel,
    /// Enqueues `body` on the lane's `queue://realm/area/resource`
    /// ([`Queue::enqueue`](crate::queue::Queue::enqueue)), at least once:
    /// an attempt whose answer was lost is sent again, so the message may
    /// be stored twice. With `envelope`, the body travels in a
    /// [`QueueEnvelope`](crate::sync::QueueEnvelope) carrying the entry's tx id
    /// (`<client id>/<seq>`), which consumers use to deduplicate
    /// ([`TxDedup`](crate::sync::TxDedup)); without it the body is sent as it is.
    Enqueue {
        /// The message body (the application's, before any envelope).
        body: Vec<u8>,
        /// Wrap the body in a [`QueueEnvelope`](crate::sync::QueueEnvelope).
        envelope: bool,
    },
}

impl Mutation {
    /// A [`Mutation::ScheduleCreate`].
    pub fn schedule_create(
        cron: impl Into<String>,
        mode: DeliveryMode,
        payload: impl AsRef<[u8]>,
    ) -> Self {
        Self::ScheduleCreate {
            cron: cron.into(),
            mode,
            payload: payload.as_ref().to_vec(),
        }
    }

    /// A [`Mutation::Enqueue`] whose body travels in a
    /// [`QueueEnvelope`](crate::sync::QueueEnvelope) (consumers can deduplicate).
    pub fn enqueue(body: impl AsRef<[u8]>) -> Self {
        Self::Enqueue {
            body: body.as_ref().to_vec(),
            envelope: true,
        }
    }

    /// A [`Mutation::Enqueue`] sent as it is, with no envelope (consumers
    /// see the plain body and cannot tell a duplicate).
    pub fn enqueue_plain(body: impl AsRef<[u8]>) -> Self {
        Self::Enqueue {
            body: body.as_ref().to_vec(),
            envelope: false,
        }
    }
}

impl Mutation {
    /// Fails when the request this schedule or queue entry becomes would not
    /// fit one record (the broker could never take it): checked at push, so
    /// it is refused there instead of going to the dead letter. An enqueue
    /// is measured with its envelope and the longest tx id `client_id` can
    /// have.
    pub(super) fn check_fits(&self, route: &str, client_id: &str) -> Result<(), Error> {
        use fitz_protocol::{Str, queue, schedule};
        let record = match self {
            Mutation::ScheduleCreate {
                cron,
                mode,
                payload,
            } => crate::connection::encode_record(&schedule::Create {
                entry: schedule::Entry {
                    route: Str::from(route),
                    cron: Str::from(cron.as_str()),
                    mode: *mode,
                    payload: Bytes::from(payload.clone()),
                },
            }),
            Mutation::Enqueue { body, envelope } => {
                let body = match envelope {
                    true => {
                        crate::sync::QueueEnvelope::wrap(&format!("{client_id}/{}", u64::MAX), body)
                            .ok_or_else(|| Error::invalid("the client id contains a newline"))?
                    }
                    false => Bytes::from(body.clone()),
                };
                crate::connection::encode_record(&queue::Enqueue {
                    route: Str::from(route),
                    body,
                    delay_seconds: None,
                })
            }
            _ => return Ok(()),
        };
        record.map(drop)
    }
}

/// [`DeliveryMode`] in a stored entry: `"broadcast"` or `"single"`.
mod delivery_mode {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::DeliveryMode;

    pub(super) fn serialize<S: Serializer>(m: &DeliveryMode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match m {
            DeliveryMode::Broadcast => "broadcast",
            DeliveryMode::Single => "single",
        })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DeliveryMode, D::Error> {
        match String::deserialize(d)?.as_str() {
            "broadcast" => Ok(DeliveryMode::Broadcast),
            "single" => Ok(DeliveryMode::Single),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["broadcast", "single"],
            )),
        }
    }
}

/// How a named handler failed.
#[derive(Debug)]
pub enum MutationError {
    /// A client or broker error: retried when it is retryable (or may have
    /// been applied), otherwise a permanent failure.
    Fitz(Error),
    /// The handler refuses the mutation for good: the entry goes to the dead
    /// letter with this message.
    Permanent(String),
}

impl From<Error> for MutationError {
    fn from(e: Error) -> Self {
        MutationError::Fitz(e)
    }
}

/// A named mutation's handler: runs inside the flush's read-write
/// transaction (do not commit or roll it back; the outbox does) with the
/// entry's arguments. It may run more than once for one entry (after a
/// failed attempt, in a new transaction) but its writes commit at most once.
pub type Handler = Arc<
    dyn for<'a> Fn(&'a mut Transaction, Bytes) -> BoxFuture<'a, Result<(), MutationError>>
        + Send
        + Sync,
>;

#[cfg(test)]
mod tests {
    use super::super::{DeadLetter, Entry, decode, encode};
    use super::*;

    /// Entries as the first release of format version 1 wrote them (KV
    /// writes, a named mutation, a stream append with its expected offset)
    /// still decode.
    #[test]
    fn entries_written_before_the_schedule_and_queue_kinds_still_decode() {
        let old: [(&str, Mutation); 3] = [
            (
                r#"{"seq":1,"lane":"kv://a/b/c","mutation":{"Writes":[{"Put":{"key":[107],"value":[118]}},{"Insert":{"key":[105],"value":[]}},{"Delete":{"key":[100]}},{"DeleteRange":{"start":[],"end":[255]}}]}}"#,
                Mutation::Writes(vec![
                    KvWrite::put("k", "v"),
                    KvWrite::insert("i", ""),
                    KvWrite::delete("d"),
                    KvWrite::delete_range("", [0xff]),
                ]),
            ),
            (
                r#"{"seq":2,"lane":"kv://a/b/c","mutation":{"Named":{"name":"incr","args":[49]}}}"#,
                Mutation::Named {
                    name: "incr".into(),
                    args: b"1".to_vec(),
                },
            ),
            (
                r#"{"seq":3,"lane":"stream://a/b/c","mutation":{"Append":[{"body":[120],"aspect":"t"},{"body":[],"aspect":null}]},"expected":5}"#,
                Mutation::Append(vec![
                    StreamAppend::new("x").aspect("t"),
                    StreamAppend::new(""),
                ]),
            ),
        ];
        for (i, (json, mutation)) in old.into_iter().enumerate() {
            let e: Entry = decode(json.as_bytes()).unwrap();
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.mutation, mutation);
            assert_eq!(e.expected, (i == 2).then_some(5));
        }
        let dead: DeadLetter = decode(
            br#"{"seq":9,"lane":"kv://a/b/c","mutation":{"Writes":[]},"error":"no","code":1006}"#,
        )
        .unwrap();
        assert_eq!((dead.seq, dead.code), (9, Some(1006)));
    }

    #[test]
    fn schedule_and_queue_entries_round_trip_in_a_documented_shape() {
        let cases = [
            (
                Mutation::schedule_create("0 6 * * *", DeliveryMode::Broadcast, "p"),
                r#"{"ScheduleCreate":{"cron":"0 6 * * *","mode":"broadcast","payload":[112]}}"#,
            ),
            (
                Mutation::schedule_create("* * * * *", DeliveryMode::Single, ""),
                r#"{"ScheduleCreate":{"cron":"* * * * *","mode":"single","payload":[]}}"#,
            ),
            (Mutation::ScheduleCancel, r#""ScheduleCancel""#),
            (
                Mutation::enqueue("m"),
                r#"{"Enqueue":{"body":[109],"envelope":true}}"#,
            ),
            (
                Mutation::enqueue_plain(""),
                r#"{"Enqueue":{"body":[],"envelope":false}}"#,
            ),
        ];
        for (m, json) in cases {
            assert_eq!(String::from_utf8(encode(&m).unwrap()).unwrap(), json);
            let back: Mutation = decode(json.as_bytes()).unwrap();
            assert_eq!(back, m);
        }
        // An unknown kind (a later build's) is a clear error, not a panic.
        let e = decode::<Mutation>(br#"{"Teleport":{}}"#).unwrap_err();
        assert!(e.to_string().contains("Teleport"), "{e}");
        let e = decode::<Mutation>(
            br#"{"ScheduleCreate":{"cron":"* * * * *","mode":"sometimes","payload":[]}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
    }
}
