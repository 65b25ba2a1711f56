//! The per-subscription channel: bounded, lock-free on the steady path,
//! never blocks the sender.
//!
//! The connection actor is the only producer; one subscription stream is the
//! consumer. A push never waits: when the buffer is full the subscription's
//! [`Overflow`] policy decides between evicting the oldest item (counted)
//! and ending the subscription with an overflow error after what is already
//! buffered. The terminal error (overflow, restore failure, client closed)
//! travels beside the queue so it can never be lost to a full buffer.
//!
//! # One-item fast path
//!
//! Most mailboxes carry one item at a time: an RPC call's single response
//! chunk, a subscription whose consumer keeps up. Until a second item is
//! pushed while the first is still unread, items go through a one-item
//! `slot`, and the bounded queue (`buffer` slots) is not allocated at all.
//! The first push that finds the slot occupied allocates the queue; from then
//! on every push goes to the queue and the slot only drains (its item is
//! always older than anything queued), so order is kept. The bound counts
//! the slot's item too: never more than `buffer` items are held.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use futures_util::task::AtomicWaker;

use crate::error::Error;
use crate::options::{Overflow, SubscriptionOptions};
use crate::telemetry;

struct Shared<T> {
    /// The one-item fast path (see the module docs). Written by the producer
    /// only while `queue` does not exist yet.
    slot: Mutex<Option<T>>,
    /// `slot` holds an item (a hint read without the lock; exact under it).
    slot_full: AtomicBool,
    /// Allocated on the first push that finds the slot occupied. Boxed: its
    /// cache-padded ends would make every mailbox (one per RPC call) a
    /// 768-byte, 128-aligned allocation.
    queue: OnceLock<Box<ArrayQueue<T>>>,
    /// Items held at most (slot and queue together).
    capacity: usize,
    waker: AtomicWaker,
    /// The producer finished; `terminal` (if set) is the reason.
    closed: AtomicBool,
    terminal: OnceLock<Error>,
    /// The consumer is gone; pushes are pointless.
    receiver_gone: AtomicBool,
    dropped: AtomicU64,
    overflow: Overflow,
}

impl<T> Shared<T> {
    fn lock_slot(&self) -> std::sync::MutexGuard<'_, Option<T>> {
        // The slot is only ever `take`n or set under the lock: a panic cannot
        // leave it half-written.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the slot's item, if any.
    fn take_slot(&self) -> Option<T> {
        if !self.slot_full.load(Ordering::Acquire) {
            return None;
        }
        let mut slot = self.lock_slot();
        let item = slot.take();
        self.slot_full.store(false, Ordering::Release);
        item
    }

    /// The oldest item: the slot's, then the queue's.
    fn pop(&self) -> Option<T> {
        self.take_slot()
            .or_else(|| self.queue.get().and_then(|q| q.pop()))
    }

    fn len(&self) -> usize {
        usize::from(self.slot_full.load(Ordering::Acquire))
            + self.queue.get().map_or(0, |q| q.len())
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Items nobody will take leave the buffered gauge with the mailbox.
        let left = self.len();
        if left > 0 {
            telemetry::mailbox_buffered(-(left as f64));
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Delivered,
    /// Delivered after evicting the oldest buffered item.
    DroppedOldest,
    /// The buffer was full under [`Overflow::Error`]: the mailbox is now
    /// closed with an overflow error.
    Overflowed,
    ReceiverGone,
}

pub(crate) fn mailbox<T>(options: SubscriptionOptions) -> (MailboxTx<T>, MailboxRx<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(None),
        slot_full: AtomicBool::new(false),
        queue: OnceLock::new(),
        capacity: options.buffer.max(1),
        waker: AtomicWaker::new(),
        closed: AtomicBool::new(false),
        terminal: OnceLock::new(),
        receiver_gone: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
        overflow: options.overflow,
    });
    (
        MailboxTx {
            shared: shared.clone(),
        },
        MailboxRx {
            shared,
            finished: false,
        },
    )
}

/// The actor's end.
pub(crate) struct MailboxTx<T = Bytes> {
    shared: Arc<Shared<T>>,
}

impl<T> MailboxTx<T> {
    /// Delivers without ever waiting.
    pub fn push(&self, item: T) -> Pushed {
        let s = &*self.shared;
        if s.receiver_gone.load(Ordering::Acquire) {
            return Pushed::ReceiverGone;
        }
        if s.closed.load(Ordering::Acquire) {
            return Pushed::Overflowed;
        }
        let outcome = match self.store(item) {
            Ok(()) => {
                telemetry::mailbox_buffered(1.0);
                Pushed::Delivered
            }
            Err(item) => {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                telemetry::mailbox_dropped();
                match s.overflow {
                    Overflow::DropOldest => {
                        self.evict_oldest_and_store(item);
                        Pushed::DroppedOldest
                    }
                    Overflow::Error => {
                        self.close(Some(Error::overflow(
                            "the subscription's buffer overflowed: the consumer fell behind",
                        )));
                        return Pushed::Overflowed;
                    }
                }
            }
        };
        s.waker.wake();
        outcome
    }

    /// Stores `item` unless `capacity` items are held; gives it back if so.
    fn store(&self, item: T) -> Result<(), T> {
        let s = &*self.shared;
        let queue = match s.queue.get() {
            Some(queue) => queue,
            None => {
                let mut slot = s.lock_slot();
                if slot.is_none() {
                    *slot = Some(item);
                    s.slot_full.store(true, Ordering::Release);
                    return Ok(());
                }
                if s.capacity == 1 {
                    return Err(item);
                }
                drop(slot);
                // From now on the slot only drains: its item stays the oldest.
                s.queue
                    .get_or_init(|| Box::new(ArrayQueue::new(s.capacity)))
            }
        };
        // Only this producer adds items and the consumer only removes them,
        // so a count that fits stays fitting until the push below.
        let held = queue.len() + usize::from(s.slot_full.load(Ordering::Acquire));
        if held >= s.capacity {
            // Exact under the lock: the consumer may have just taken the
            // slot's item.
            let slot_full = s.lock_slot().is_some();
            if queue.len() + usize::from(slot_full) >= s.capacity {
                return Err(item);
            }
        }
        queue.push(item)
    }

    /// `DropOldest` on a full mailbox: the oldest item (the slot's if it
    /// holds one, else the queue's head) makes room for `item`.
    fn evict_oldest_and_store(&self, item: T) {
        let s = &*self.shared;
        if s.take_slot().is_some() {
            telemetry::mailbox_buffered(-1.0);
        }
        match s.queue.get() {
            // The queue's head goes only if the queue is still full.
            Some(queue) => {
                if queue.force_push(item).is_some() {
                    telemetry::mailbox_buffered(-1.0);
                }
            }
            None => {
                // Capacity 1, the slot just emptied (by us or the consumer).
                let mut slot = s.lock_slot();
                *slot = Some(item);
                s.slot_full.store(true, Ordering::Release);
            }
        }
        telemetry::mailbox_buffered(1.0);
    }

    /// Ends the stream after what is buffered; `reason` becomes its last item.
    pub fn close(&self, reason: Option<Error>) {
        if let Some(e) = reason {
            let _ = self.shared.terminal.set(e);
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.waker.wake();
    }

    pub fn is_receiver_alive(&self) -> bool {
        !self.shared.receiver_gone.load(Ordering::Acquire)
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// A second way to end a mailbox's stream, with an error, held apart from
/// its producer (an RPC request's write outcome: the call's response
/// handler is installed with the request, and a request that is never
/// written ends the call's stream with the error the write met). It does
/// not count as a producer ([`MailboxRx::is_sender_gone`]). Dropped without
/// [`MailboxFail::written`] or [`MailboxFail::fail`] (the actor is gone with
/// the command), it ends the stream as closed, as a lost confirmation did.
pub(crate) struct MailboxFail<T> {
    shared: Option<Weak<Shared<T>>>,
}

impl<T> MailboxTx<T> {
    /// A [`MailboxFail`] for this mailbox.
    pub fn failer(&self) -> MailboxFail<T> {
        MailboxFail {
            shared: Some(Arc::downgrade(&self.shared)),
        }
    }
}

impl<T> MailboxFail<T> {
    /// The record was written: the stream is the producer's business.
    pub fn written(mut self) {
        self.shared = None;
    }

    /// Ends the stream with `error` (first terminal error wins).
    pub fn fail(mut self, error: Error) {
        self.end(error);
    }

    fn end(&mut self, error: Error) {
        if let Some(shared) = self.shared.take().and_then(|w| w.upgrade()) {
            let _ = shared.terminal.set(error);
            shared.closed.store(true, Ordering::Release);
            shared.waker.wake();
        }
    }
}

impl<T> Drop for MailboxFail<T> {
    fn drop(&mut self) {
        // Checked first: building the error allocates, and a written
        // record (every call's case) has nothing to end.
        if self.shared.is_some() {
            self.end(Error::closed());
        }
    }
}

impl<T> Drop for MailboxTx<T> {
    fn drop(&mut self) {
        // A producer that vanishes without a reason ends the stream cleanly.
        self.shared.closed.store(true, Ordering::Release);
        self.shared.waker.wake();
    }
}

/// The consumer's end.
pub(crate) struct MailboxRx<T = Bytes> {
    shared: Arc<Shared<T>>,
    finished: bool,
}

impl<T> MailboxRx<T> {
    /// Next item; `Some(Err)` is always the last item before `None`.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, Error>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(item) = self.shared.pop() {
            telemetry::mailbox_buffered(-1.0);
            return Poll::Ready(Some(Ok(item)));
        }
        self.shared.waker.register(cx.waker());
        // Re-check after registering so a push racing the registration is seen.
        if let Some(item) = self.shared.pop() {
            telemetry::mailbox_buffered(-1.0);
            return Poll::Ready(Some(Ok(item)));
        }
        if self.shared.closed.load(Ordering::Acquire) {
            // Items pushed before `closed` was set are visible now.
            if let Some(item) = self.shared.pop() {
                telemetry::mailbox_buffered(-1.0);
                return Poll::Ready(Some(Ok(item)));
            }
            self.finished = true;
            return Poll::Ready(self.shared.terminal.get().cloned().map(Err));
        }
        Poll::Pending
    }

    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// True once the actor's end was dropped (it is never cloned): the actor
    /// holds no handler for this mailbox any more.
    pub fn is_sender_gone(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }

    /// Marks the consumer gone before its handle is dropped. A handle's
    /// `Drop` calls this *before* asking the actor to remove it: the removal
    /// travels on the control channel and may overtake the command that
    /// installs the handle, which the actor then refuses to install because
    /// the receiver is gone (`is_receiver_alive`), so a dropped
    /// subscribe or push handler never leaks.
    pub fn release(&self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
    }
}

impl<T> Drop for MailboxRx<T> {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receiver_sees_its_sender_go() {
        let (tx, rx) = mailbox::<u8>(SubscriptionOptions::default());
        assert!(!rx.is_sender_gone());
        drop(tx);
        assert!(rx.is_sender_gone());
    }

    /// A write failure ends the stream with its error, before the producer
    /// is dropped; a written record leaves the stream to the producer; a
    /// failer dropped unanswered (the actor is gone) ends it as closed.
    #[test]
    fn a_failer_ends_the_stream_with_the_write_error() {
        use crate::error::ErrorKind;
        let (tx, mut rx) = mailbox::<Bytes>(SubscriptionOptions::default());
        tx.failer().fail(Error::stale());
        drop(tx);
        let e = recv(&mut rx);
        assert!(matches!(e, Poll::Ready(Some(Err(ref e))) if e.kind() == ErrorKind::Stale));
        assert!(matches!(recv(&mut rx), Poll::Ready(None)));

        let (tx, mut rx) = mailbox::<Bytes>(SubscriptionOptions::default());
        let fail = tx.failer();
        assert!(!rx.is_sender_gone(), "a failer is not a producer");
        fail.written();
        assert!(recv(&mut rx).is_pending());
        tx.push(Bytes::from_static(b"a"));
        tx.close(Some(Error::closed()));
        assert!(matches!(recv(&mut rx), Poll::Ready(Some(Ok(_)))));
        let e = recv(&mut rx);
        assert!(matches!(e, Poll::Ready(Some(Err(ref e))) if e.kind() == ErrorKind::Closed));

        let (tx, mut rx) = mailbox::<Bytes>(SubscriptionOptions::default());
        drop(tx.failer());
        let e = recv(&mut rx);
        assert!(matches!(e, Poll::Ready(Some(Err(ref e))) if e.kind() == ErrorKind::Closed));
    }

    use futures_util::task::noop_waker_ref;

    fn recv(rx: &mut MailboxRx) -> Poll<Option<Result<Bytes, Error>>> {
        rx.poll_recv(&mut Context::from_waker(noop_waker_ref()))
    }

    fn opts(buffer: usize, overflow: Overflow) -> SubscriptionOptions {
        SubscriptionOptions { buffer, overflow }
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts() {
        let (tx, mut rx) = mailbox(opts(2, Overflow::DropOldest));
        assert_eq!(tx.push(Bytes::from_static(b"1")), Pushed::Delivered);
        assert_eq!(tx.push(Bytes::from_static(b"2")), Pushed::Delivered);
        assert_eq!(tx.push(Bytes::from_static(b"3")), Pushed::DroppedOldest);
        assert_eq!(rx.dropped(), 1);
        let Poll::Ready(Some(Ok(a))) = recv(&mut rx) else {
            panic!()
        };
        let Poll::Ready(Some(Ok(b))) = recv(&mut rx) else {
            panic!()
        };
        assert_eq!((&a[..], &b[..]), (&b"2"[..], &b"3"[..]));
        assert!(recv(&mut rx).is_pending());
    }

    #[test]
    fn error_policy_drains_then_fails_then_ends() {
        let (tx, mut rx) = mailbox(opts(1, Overflow::Error));
        assert_eq!(tx.push(Bytes::from_static(b"1")), Pushed::Delivered);
        assert_eq!(tx.push(Bytes::from_static(b"2")), Pushed::Overflowed);
        assert!(tx.is_closed());
        assert!(matches!(recv(&mut rx), Poll::Ready(Some(Ok(_)))));
        match recv(&mut rx) {
            Poll::Ready(Some(Err(e))) => assert_eq!(e.kind(), crate::ErrorKind::Overflow),
            other => panic!("{other:?}"),
        }
        assert!(matches!(recv(&mut rx), Poll::Ready(None)));
    }

    #[test]
    fn receiver_drop_is_visible_to_the_sender() {
        let (tx, rx) = mailbox(opts(4, Overflow::Error));
        assert!(tx.is_receiver_alive());
        drop(rx);
        assert!(!tx.is_receiver_alive());
        assert_eq!(tx.push(Bytes::new()), Pushed::ReceiverGone);
    }

    #[test]
    fn sender_drop_ends_without_error() {
        let (tx, mut rx) = mailbox(opts(4, Overflow::Error));
        tx.push(Bytes::from_static(b"x"));
        drop(tx);
        assert!(matches!(recv(&mut rx), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(recv(&mut rx), Poll::Ready(None)));
    }

    fn item(rx: &mut MailboxRx) -> Bytes {
        match recv(rx) {
            Poll::Ready(Some(Ok(b))) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_item_at_a_time_never_allocates_the_queue() {
        let (tx, mut rx) = mailbox(opts(64, Overflow::Error));
        for i in 0..10u8 {
            assert_eq!(tx.push(Bytes::from(vec![i])), Pushed::Delivered);
            assert_eq!(&item(&mut rx)[..], &[i]);
        }
        assert!(tx.shared.queue.get().is_none());
        assert!(recv(&mut rx).is_pending());
    }

    #[test]
    fn a_second_unread_item_grows_the_queue_and_keeps_the_order() {
        let (tx, mut rx) = mailbox(opts(3, Overflow::Error));
        for i in 1..=3u8 {
            assert_eq!(tx.push(Bytes::from(vec![i])), Pushed::Delivered);
        }
        assert!(tx.shared.queue.get().is_some());
        assert_eq!(&item(&mut rx)[..], &[1]);
        // The slot only drains now: a new item queues behind 2 and 3.
        assert_eq!(tx.push(Bytes::from_static(&[4])), Pushed::Delivered);
        for i in 2..=4u8 {
            assert_eq!(&item(&mut rx)[..], &[i]);
        }
        assert!(recv(&mut rx).is_pending());
    }

    #[test]
    fn the_bound_counts_the_slot() {
        let (tx, mut rx) = mailbox(opts(2, Overflow::Error));
        assert_eq!(tx.push(Bytes::from_static(b"1")), Pushed::Delivered);
        assert_eq!(tx.push(Bytes::from_static(b"2")), Pushed::Delivered);
        assert_eq!(tx.push(Bytes::from_static(b"3")), Pushed::Overflowed);
        assert_eq!(&item(&mut rx)[..], b"1");
        assert_eq!(&item(&mut rx)[..], b"2");
        assert!(matches!(recv(&mut rx), Poll::Ready(Some(Err(_)))));
    }

    #[test]
    fn drop_oldest_evicts_the_slot_first() {
        let (tx, mut rx) = mailbox(opts(2, Overflow::DropOldest));
        for b in [b"1", b"2"] {
            assert_eq!(tx.push(Bytes::from_static(b)), Pushed::Delivered);
        }
        assert_eq!(tx.push(Bytes::from_static(b"3")), Pushed::DroppedOldest);
        assert_eq!(tx.push(Bytes::from_static(b"4")), Pushed::DroppedOldest);
        assert_eq!(rx.dropped(), 2);
        assert_eq!(&item(&mut rx)[..], b"3");
        assert_eq!(&item(&mut rx)[..], b"4");
        assert!(recv(&mut rx).is_pending());
        // Capacity 1 lives in the slot alone.
        let (tx, mut rx) = mailbox(opts(1, Overflow::DropOldest));
        tx.push(Bytes::from_static(b"a"));
        assert_eq!(tx.push(Bytes::from_static(b"b")), Pushed::DroppedOldest);
        assert!(tx.shared.queue.get().is_none());
        assert_eq!(&item(&mut rx)[..], b"b");
    }

    #[test]
    fn a_consumer_on_another_thread_sees_every_item_in_order() {
        let (tx, mut rx) = mailbox(opts(8, Overflow::Error));
        const N: u32 = 20_000;
        let consumer = std::thread::spawn(move || {
            let mut next = 0u32;
            while next < N {
                if let Poll::Ready(Some(Ok(b))) = recv(&mut rx) {
                    assert_eq!(&b[..], &next.to_be_bytes());
                    next += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let mut i = 0u32;
        while i < N {
            match tx.store(Bytes::copy_from_slice(&i.to_be_bytes())) {
                Ok(()) => i += 1,
                Err(_) => std::thread::yield_now(),
            }
        }
        consumer.join().unwrap();
    }
}
