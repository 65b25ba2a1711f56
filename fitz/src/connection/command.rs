//! Messages from handles to the connection actor.
//!
//! Two bounded channels carry them:
//!
//! * `commands` (capacity: max in-flight + 64): everything a caller awaits.
//!   Requests and sends hold an in-flight permit, so at most
//!   `max_in_flight` of them can be queued or outstanding at once and a
//!   sender waits only briefly for a slot.
//! * `control` (capacity 1024): unsubscribes, including the best-effort ones
//!   sent with `try_send` from `Drop`. If it is ever full the drop is lost,
//!   and the actor cleans up anyway the next time a notification finds the
//!   consumer gone.

use bytes::{Bytes, BytesMut};
use fitz_protocol::Message;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;

use super::Push;
use super::mailbox::{MailboxFail, MailboxTx};
use super::{PushKey, RegistrationSpec};
use crate::error::{Error, Result};
use crate::events::SubscriptionId;

pub(crate) enum Command {
    /// Start connecting (`Client::connect`).
    Connect(oneshot::Sender<Result<()>>),
    /// A request expecting one or more reply frames.
    Request(Outbound),
    /// A fire-and-forget record.
    Send(Outbound),
    /// An RPC request and its response handler in one command: the handler
    /// is installed (in a session) just before the request is handled like
    /// a `Send`, so no response can arrive unclaimed.
    /// (`out` first: dropped unhandled, its confirmation ends the handler's
    /// stream with an error before the handler itself is dropped.)
    Call { out: Outbound, push: PushCmd },
    /// Register (or join) a restorable subscription.
    Register(RegisterCmd),
    /// Install a raw push handler.
    Push(PushCmd),
    /// End every registration of one subscribe type without unsubscribing on
    /// the wire (after e.g. Notice UNSUBSCRIBE_ALL was acknowledged).
    EndRegistrations {
        subscribe_type: u16,
        reply: oneshot::Sender<()>,
    },
    /// Drain: end every subscription and unsubscribe on the wire; the reply
    /// carries one receiver per UNSUBSCRIBE sent.
    UnsubscribeAll(oneshot::Sender<Vec<oneshot::Receiver<Result<()>>>>),
    /// Test and debugging inspection.
    Inspect(oneshot::Sender<super::DebugSnapshot>),
}

/// How the answer to a request travels back.
pub(crate) enum Reply {
    /// Exactly one reply frame.
    Once(oneshot::Sender<Result<Bytes>>),
    /// Every reply frame until `is_final` says so.
    Frames {
        tx: mpsc::Sender<Result<Bytes>>,
        is_final: fn(&Bytes) -> bool,
    },
    /// A send: acknowledged once written to the outbound buffer.
    Written(oneshot::Sender<Result<()>>),
    /// A request nobody waits for (best-effort cleanup from `Drop`): written
    /// like any request, its answer swallowed.
    Detached,
    /// A send that stays queued even when nobody waits for it: once filed it
    /// is written, in order, unless its session ends first. It never times
    /// out. The [`Confirm`] says who learns the outcome. (RPC chunks and
    /// cancellations: dropping a waiter must not leave a gap on the wire.)
    Committed(Confirm),
    /// One reply frame, from which the actor makes the requests that follow
    /// (see [`super::pair::Then`]).
    Then(Box<dyn super::pair::FollowUp>),
    /// Exactly one reply frame, and written even once nobody waits for it:
    /// a `Then` follow-up, which ends the transaction its first request
    /// opened.
    Kept(oneshot::Sender<Result<Bytes>>),
}

/// Who learns the outcome of a committed send.
pub(crate) enum Confirm {
    /// Nobody.
    None,
    /// The sender, who waits for it.
    Wait(oneshot::Sender<Result<()>>),
    /// An RPC call's response stream, and only of a failure: the call was
    /// returned as soon as its request was queued.
    Stream(MailboxFail<Push>),
}

impl From<Option<oneshot::Sender<Result<()>>>> for Confirm {
    fn from(tx: Option<oneshot::Sender<Result<()>>>) -> Self {
        tx.map_or(Self::None, Self::Wait)
    }
}

impl Confirm {
    /// Delivers the outcome.
    pub fn deliver(self, result: Result<()>) {
        match (self, result) {
            (Self::None, _) => {}
            (Self::Wait(tx), result) => {
                let _ = tx.send(result);
            }
            (Self::Stream(fail), Ok(())) => fail.written(),
            (Self::Stream(fail), Err(e)) => fail.fail(e),
        }
    }
}

/// A request or send on its way to the wire.
pub(crate) struct Outbound {
    /// Correlation id (requests) or local id (sends); never reused, never 0.
    pub id: u64,
    pub ty: u16,
    /// The whole encoded record.
    pub record: RecordBuf,
    pub deadline: Instant,
    /// The session generation it was issued for.
    pub generation: u64,
    /// Pinned to `generation`: a handle from an earlier session is stale.
    pub pinned: bool,
    pub reply: Reply,
    pub permit: OwnedSemaphorePermit,
}

pub(crate) struct RegisterCmd {
    pub spec: &'static RegistrationSpec,
    /// The whole encoded SUBSCRIBE record; re-sent verbatim on restore.
    pub record: Bytes,
    pub sink: SubscriptionId,
    pub mailbox: MailboxTx,
    pub reply: oneshot::Sender<Result<()>>,
}

pub(crate) struct PushCmd {
    pub ty: u16,
    pub key: PushKey,
    pub sink: SubscriptionId,
    pub mailbox: MailboxTx<Push>,
    /// `None`: nobody waits for the installation (an RPC call's response
    /// handler, installed with its request by [`Command::Call`]; a handler
    /// that is never installed ends its stream).
    pub reply: Option<oneshot::Sender<Result<()>>>,
}

pub(crate) enum Control {
    /// A subscription handle is done with its registration.
    Unsubscribe {
        sink: SubscriptionId,
        /// `Some` for an explicit `unsubscribe().await`, answered once the
        /// broker acknowledged (or immediately when other handles share it).
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// A push handler was dropped.
    DropPush { sink: SubscriptionId },
}

/// Answers an item that will never be written.
pub(super) fn reject(out: Outbound, error: Error) {
    match out.reply {
        Reply::Once(tx) | Reply::Kept(tx) => {
            let _ = tx.send(Err(error));
        }
        Reply::Frames { tx, .. } => {
            let _ = tx.try_send(Err(error));
        }
        Reply::Written(tx) => {
            let _ = tx.send(Err(error));
        }
        Reply::Committed(confirm) => confirm.deliver(Err(error)),
        Reply::Then(then) => then.reject(error),
        Reply::Detached => {}
    }
}

/// Encodes one record into a fresh buffer.
pub(crate) fn encode_record<M: Message>(msg: &M) -> Result<Bytes> {
    encode_record_sized(msg, 0)
}

/// Records up to this size are encoded in the thread's scratch buffer and
/// copied out into an exactly sized one (see [`encode_record_sized`]).
const SMALL_RECORD: usize = 2048;

thread_local! {
    /// The scratch buffer small records are encoded in; it never holds more
    /// than [`SMALL_RECORD`] bytes of capacity between calls.
    static SCRATCH: std::cell::RefCell<BytesMut> =
        std::cell::RefCell::new(BytesMut::with_capacity(SMALL_RECORD));
}

/// Records up to this size travel inside their command, by value: a request
/// that is written at once then needs no allocation for its record at all.
pub(crate) const INLINE_RECORD: usize = 110;

/// An encoded record on its way to the actor.
pub(crate) enum RecordBuf {
    /// A small record carried by value (`len` bytes of `bytes`).
    Inline { len: u8, bytes: [u8; INLINE_RECORD] },
    /// Any record, as shared bytes.
    Shared(Bytes),
}

impl RecordBuf {
    /// `record` inline when it fits, else copied into an exact allocation.
    fn small(record: &[u8]) -> Self {
        match u8::try_from(record.len()) {
            Ok(len) if record.len() <= INLINE_RECORD => {
                let mut bytes = [0; INLINE_RECORD];
                bytes[..record.len()].copy_from_slice(record);
                Self::Inline { len, bytes }
            }
            _ => Self::Shared(Bytes::copy_from_slice(record)),
        }
    }

    /// The encoded record.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Shared(b) => b,
        }
    }

    /// The record as bytes that can wait in the request book (an inline
    /// record is copied out: only requests that are not written at once).
    pub fn into_bytes(self) -> Bytes {
        match self {
            Self::Inline { .. } => Bytes::copy_from_slice(self.as_slice()),
            Self::Shared(b) => b,
        }
    }
}

impl From<Bytes> for RecordBuf {
    fn from(b: Bytes) -> Self {
        Self::Shared(b)
    }
}

impl std::fmt::Debug for RecordBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordBuf({} bytes)", self.as_slice().len())
    }
}

/// Encodes `msg` in the thread's scratch buffer: `small` takes a record of
/// at most [`SMALL_RECORD`] bytes; a larger one keeps the buffer it was
/// encoded in (no extra copy) and the scratch is replaced by a fresh small
/// one, so the thread never keeps a large buffer. `None`: no scratch (thread
/// teardown, re-entry).
fn in_scratch<M: Message, R>(
    msg: &M,
    small: impl FnOnce(&[u8]) -> R,
    large: impl FnOnce(Bytes) -> R,
) -> Option<Result<R>> {
    SCRATCH
        .try_with(|cell| {
            let mut buf = cell.try_borrow_mut().ok()?;
            buf.clear();
            Some(match msg.encode_record(&mut buf) {
                Ok(()) if buf.len() <= SMALL_RECORD => Ok(small(&buf)),
                Ok(()) => {
                    let fresh = BytesMut::with_capacity(SMALL_RECORD);
                    Ok(large(std::mem::replace(&mut *buf, fresh).freeze()))
                }
                Err(e) => {
                    if buf.capacity() > SMALL_RECORD {
                        *buf = BytesMut::with_capacity(SMALL_RECORD);
                    }
                    Err(Error::encode(e))
                }
            })
        })
        .ok()
        .flatten()
}

/// [`encode_record`] for a message with about `variable` bytes of route, body
/// or payload.
///
/// A small record (the common request: a route, a key, a short value) is
/// encoded in a per-thread scratch buffer and copied into an allocation of
/// exactly its size: one allocation, freed with one `free`. Freezing a
/// `BytesMut` with spare capacity would allocate a second, shared header as
/// well (and free both), which cost ~250 instructions per request in the
/// client profile.
pub(crate) fn encode_record_sized<M: Message>(msg: &M, variable: usize) -> Result<Bytes> {
    if variable < SMALL_RECORD
        && let Some(encoded) = in_scratch(msg, Bytes::copy_from_slice, |b| b)
    {
        return encoded;
    }
    // A large record, or no scratch.
    let mut buf = BytesMut::with_capacity(64 + variable);
    msg.encode_record(&mut buf).map_err(Error::encode)?;
    Ok(buf.freeze())
}

/// Encodes a request's record: inline in the command when it fits in
/// [`INLINE_RECORD`] bytes (no allocation), else as [`encode_record`].
pub(crate) fn encode_request<M: Message>(msg: &M) -> Result<RecordBuf> {
    match in_scratch(msg, RecordBuf::small, RecordBuf::Shared) {
        Some(encoded) => encoded,
        None => encode_record(msg).map(RecordBuf::Shared),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitz_protocol::kv;

    fn put(value_len: usize) -> kv::Put {
        kv::Put {
            tx_id: 7,
            route: "kv://a/b".into(),
            key: Bytes::from_static(b"key"),
            value: Bytes::from(vec![b'v'; value_len]),
        }
    }

    fn plain(msg: &kv::Put) -> Bytes {
        let mut buf = BytesMut::new();
        msg.encode_record(&mut buf).expect("encodes");
        buf.freeze()
    }

    #[test]
    fn small_and_large_records_encode_as_the_plain_encoder_does() {
        // Small, just over the scratch limit, and large: byte for byte the
        // same, and the scratch never keeps more than its small capacity.
        for len in [0, 16, SMALL_RECORD - 40, SMALL_RECORD + 1, 60_000, 16] {
            let msg = put(len);
            let got = encode_record(&msg).expect("encodes");
            assert_eq!(got, plain(&msg), "value of {len} bytes");
            let kept = SCRATCH.with(|c| c.borrow().capacity());
            assert!(
                kept <= SMALL_RECORD,
                "scratch kept {kept} bytes after {len}"
            );
        }
        // Too large for a record: refused, and the scratch is not kept big.
        assert!(encode_record(&put(1 << 20)).is_err());
        assert!(SCRATCH.with(|c| c.borrow().capacity()) <= SMALL_RECORD);
        assert_eq!(encode_record(&put(3)).expect("encodes"), plain(&put(3)));
    }

    #[test]
    fn requests_travel_inline_up_to_the_inline_size() {
        // The record header and fixed fields of this `Put` take 26 bytes.
        let fixed = plain(&put(0)).len();
        for len in [0, INLINE_RECORD - fixed, INLINE_RECORD - fixed + 1, 5_000] {
            let msg = put(len);
            let rec = encode_request(&msg).expect("encodes");
            assert_eq!(rec.as_slice(), &plain(&msg)[..], "value of {len} bytes");
            let inline = matches!(rec, RecordBuf::Inline { .. });
            assert_eq!(inline, fixed + len <= INLINE_RECORD, "value of {len} bytes");
            assert_eq!(rec.into_bytes(), plain(&msg));
        }
        assert!(encode_request(&put(1 << 20)).is_err());
    }
}
