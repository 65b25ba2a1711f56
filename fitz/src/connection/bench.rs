//! Harnesses that let `bench/benches/client_core.rs` time the actor's hot
//! structures without a socket. Not a stable API.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::types;
use futures_util::task::noop_waker_ref;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use super::command::{Outbound, RegisterCmd, Reply};
use super::mailbox::{MailboxRx, mailbox};
use super::registry::{Registry, Wire};
use super::requests::{Book, Finished, Internal, Session};
use super::{RegistrationSpec, RequestOptions, Shared};
use crate::error::Result;
use crate::events::SubscriptionId;
use crate::options::{Overflow, SubscriptionOptions};

const SESSION: Session = Session {
    correlated: true,
    generation: 0,
    max_frame: 1 << 20,
};

/// The pending-request book with `in_flight` correlated requests outstanding:
/// each [`CorrelationMap::step`] files and writes one request and completes
/// the oldest with its reply.
pub struct CorrelationMap {
    book: Book,
    out: BytesMut,
    finished: Vec<Finished>,
    permits: Arc<Semaphore>,
    outstanding: VecDeque<(u64, oneshot::Receiver<Result<Bytes>>)>,
    next_id: u64,
    record: Bytes,
    reply: Bytes,
}

impl CorrelationMap {
    /// A book holding `in_flight` written requests.
    pub fn new(in_flight: usize) -> Self {
        let mut rec = BytesMut::new();
        fitz_protocol::record::encode_raw_record(&mut rec, types::KV_GET, b"0123456789abcdef")
            .unwrap_or_default();
        let mut m = Self {
            book: Book::default(),
            out: BytesMut::with_capacity(64 * 1024),
            finished: Vec::new(),
            permits: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            outstanding: VecDeque::with_capacity(in_flight + 1),
            next_id: 1,
            record: rec.freeze(),
            reply: Bytes::from_static(b"\0\0\0\0\x05value"),
        };
        for _ in 0..in_flight {
            m.file_one();
        }
        m
    }

    fn file_one(&mut self) {
        let (tx, rx) = oneshot::channel();
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        let filed = self.book.file(Outbound {
            id,
            ty: types::KV_GET,
            record: self.record.clone().into(),
            deadline: Instant::now() + Duration::from_secs(30),
            generation: 0,
            pinned: false,
            reply: Reply::Once(tx),
            permit,
        });
        self.book
            .admit(filed, &SESSION, &mut self.out, &mut self.finished);
        self.out.clear();
        self.outstanding.push_back((id, rx));
    }

    /// One insert and one reply lookup. Returns the reply's length.
    pub fn step(&mut self) -> usize {
        self.file_one();
        let Some((id, mut rx)) = self.outstanding.pop_front() else {
            return 0;
        };
        self.book.on_record(
            Some(id),
            types::KV_GET,
            self.reply.clone(),
            &SESSION,
            &mut self.out,
            &mut self.finished,
        );
        match rx.try_recv() {
            Ok(Ok(b)) => b.len(),
            _ => 0,
        }
    }

    /// Requests outstanding in the book.
    pub fn len(&self) -> usize {
        self.book.counts().0
    }

    /// True when nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

static BENCH_SPEC: RegistrationSpec = RegistrationSpec {
    name: "bench",
    subscribe_type: types::NOTICE_SUBSCRIBE,
    notify_type: Some(types::NOTICE_NOTIFY),
    ack: |p| {
        Ok(p.get(2..10)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes))
    },
    unsubscribe: |_, _| None,
};

/// A registry with `subs` live subscriptions; [`NotifyDispatch::dispatch`]
/// routes one NOTIFY to one of them, exactly as the reader does.
pub struct NotifyDispatch {
    shared: Arc<Shared>,
    registry: Registry,
    book: Book,
    out: BytesMut,
    finished: Vec<Finished>,
    receivers: Vec<MailboxRx>,
    payloads: Vec<Bytes>,
}

impl NotifyDispatch {
    /// `subs` subscriptions (wire ids 1..=subs), each buffering `buffer`
    /// notifications (drop-oldest, so the benchmark never ends a stream).
    pub fn new(client: &crate::Client, subs: usize, buffer: usize) -> Self {
        let shared = client.connection().shared_arc();
        let mut d = Self {
            shared,
            registry: Registry::default(),
            book: Book::default(),
            out: BytesMut::new(),
            finished: Vec::new(),
            receivers: Vec::with_capacity(subs),
            payloads: Vec::with_capacity(subs),
        };
        // One frame holding every notification, sliced like the reader does.
        let mut frame = BytesMut::new();
        let mut spans = Vec::with_capacity(subs);
        for i in 0..subs {
            let start = frame.len();
            frame.put_u64(i as u64 + 1);
            let route = format!("notice://bench/area/r{i}");
            frame.put_u32(route.len() as u32);
            frame.put_slice(route.as_bytes());
            frame.put_u32(32);
            frame.put_bytes(0xAB, 32);
            spans.push(start..frame.len());
        }
        let frame = frame.freeze();
        for (i, span) in spans.into_iter().enumerate() {
            d.payloads.push(frame.slice(span));
            d.subscribe(i as u64 + 1, buffer);
        }
        d
    }

    fn subscribe(&mut self, wire_id: u64, buffer: usize) {
        let (tx, rx) = mailbox(SubscriptionOptions {
            buffer,
            overflow: Overflow::DropOldest,
        });
        let (reply, _ack) = oneshot::channel();
        let mut record = BytesMut::new();
        let pattern = format!("notice://bench/area/r{wire_id}");
        fitz_protocol::record::encode_record_with(&mut record, types::NOTICE_SUBSCRIBE, |b| {
            b.put_u32(pattern.len() as u32);
            b.put_slice(pattern.as_bytes());
        })
        .unwrap_or_default();
        self.out.clear();
        let mut wire = Wire {
            shared: &self.shared,
            book: &mut self.book,
            out: Some(&mut self.out),
            session: Some(SESSION),
            ready: true,
            finished: &mut self.finished,
        };
        self.registry.register(
            RegisterCmd {
                spec: &BENCH_SPEC,
                record: record.freeze(),
                sink: SubscriptionId(wire_id),
                mailbox: tx,
                reply,
            },
            &mut wire,
        );
        // The SUBSCRIBE went out labelled: [len][02 00 08 id][record].
        let id = self
            .out
            .get(7..15)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        let mut ack = BytesMut::new();
        ack.put_u8(0);
        ack.put_u8(1);
        ack.put_u64(wire_id);
        self.book.on_record(
            id,
            types::NOTICE_SUBSCRIBE,
            ack.freeze(),
            &SESSION,
            &mut self.out,
            &mut self.finished,
        );
        let finished = std::mem::take(&mut self.finished);
        for (internal, result) in finished {
            if let Internal::Subscribe(reg) = internal {
                let mut wire = Wire {
                    shared: &self.shared,
                    book: &mut self.book,
                    out: Some(&mut self.out),
                    session: Some(SESSION),
                    ready: true,
                    finished: &mut self.finished,
                };
                self.registry.subscribed(reg, result, &mut wire);
            }
        }
        self.receivers.push(rx);
    }

    /// Routes the NOTIFY of subscription `i` (0-based). True when delivered.
    pub fn dispatch(&mut self, i: usize) -> bool {
        let Some(payload) = self.payloads.get(i) else {
            return false;
        };
        let mut wire = Wire {
            shared: &self.shared,
            book: &mut self.book,
            out: Some(&mut self.out),
            session: Some(SESSION),
            ready: true,
            finished: &mut self.finished,
        };
        self.registry
            .dispatch_notify(types::NOTICE_NOTIFY, payload, &mut wire)
    }

    /// Consumes whatever subscription `i` has buffered; returns the count.
    pub fn drain(&mut self, i: usize) -> usize {
        let Some(rx) = self.receivers.get_mut(i) else {
            return 0;
        };
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut n = 0;
        while let std::task::Poll::Ready(Some(Ok(_))) = rx.poll_recv(&mut cx) {
            n += 1;
        }
        n
    }
}

/// One request through the whole client (handle → actor → transport → peer
/// → actor → handle): the record's reply payload.
pub async fn round_trip(client: &crate::Client, ty: u16, record: Bytes) -> Result<Bytes> {
    client
        .connection()
        .request_record(ty, None, record, RequestOptions::default())
        .await
}
