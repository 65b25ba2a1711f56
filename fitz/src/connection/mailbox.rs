//! The per-subscription channel: bounded, lock-free, never blocks the sender.
//!
//! The connection actor is the only producer; one subscription stream is the
//! consumer. A push never waits: when the buffer is full the subscription's
//! [`Overflow`] policy decides between evicting the oldest item
//! (`force_push`, counted) and ending the subscription with an overflow error
//! after what is already buffered. The terminal error (overflow, restore
//! failure, client closed) travels beside the queue so it can never be lost
//! to a full buffer.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use futures_util::task::AtomicWaker;

use crate::error::Error;
use crate::options::{Overflow, SubscriptionOptions};
use crate::telemetry;

struct Shared<T> {
    queue: ArrayQueue<T>,
    waker: AtomicWaker,
    /// The producer finished; `terminal` (if set) is the reason.
    closed: AtomicBool,
    terminal: OnceLock<Error>,
    /// The consumer is gone; pushes are pointless.
    receiver_gone: AtomicBool,
    dropped: AtomicU64,
    overflow: Overflow,
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Items nobody will take leave the buffered gauge with the mailbox.
        let left = self.queue.len();
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
        queue: ArrayQueue::new(options.buffer.max(1)),
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
        let outcome = match s.overflow {
            Overflow::DropOldest => match s.queue.force_push(item) {
                None => {
                    telemetry::mailbox_buffered(1.0);
                    Pushed::Delivered
                }
                Some(_evicted) => {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    telemetry::mailbox_dropped();
                    Pushed::DroppedOldest
                }
            },
            Overflow::Error => match s.queue.push(item) {
                Ok(()) => {
                    telemetry::mailbox_buffered(1.0);
                    Pushed::Delivered
                }
                Err(_) => {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    telemetry::mailbox_dropped();
                    self.close(Some(Error::overflow(
                        "the subscription's buffer overflowed: the consumer fell behind",
                    )));
                    return Pushed::Overflowed;
                }
            },
        };
        s.waker.wake();
        outcome
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
        if let Some(item) = self.shared.queue.pop() {
            telemetry::mailbox_buffered(-1.0);
            return Poll::Ready(Some(Ok(item)));
        }
        self.shared.waker.register(cx.waker());
        // Re-check after registering so a push racing the registration is seen.
        if let Some(item) = self.shared.queue.pop() {
            telemetry::mailbox_buffered(-1.0);
            return Poll::Ready(Some(Ok(item)));
        }
        if self.shared.closed.load(Ordering::Acquire) {
            // Items pushed before `closed` was set are visible now.
            if let Some(item) = self.shared.queue.pop() {
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
}
