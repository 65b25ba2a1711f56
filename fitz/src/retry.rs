//! Bounded retries for replay-safe reads (protocol §9.9): KV GET/SCAN, Lease
//! QUERY/LIST, Stream READ/LAST/GET_METADATA and Schedule LIST/LIST_V2
//! change nothing on the broker, so a failure that says "try again" is worth
//! a second and a third attempt, 100 ms then 200 ms later (doubling, capped
//! at 1 s). Nothing else is ever retried.
//!
//! A timeout is never retried: it already used the caller's whole budget,
//! and three of them would silently triple it. A request pinned to a
//! session that has since ended turns into `Stale` on the next attempt,
//! which ends the loop.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use fitz_protocol::{WireError, codes};

use crate::error::{Error, ErrorKind, Result};

/// Attempts in all, including the first.
const ATTEMPTS: u32 = 3;
/// Pause before the second attempt; doubles after each further failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Runs `op` up to three times while it fails with a retryable error
/// (connection, backpressure, or a broker code the registry marks
/// retryable), never on a timeout.
pub(crate) async fn replay_safe<T, F, Fut>(op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    attempts(op, |r: &Result<T>| {
        r.as_ref()
            .is_err_and(|e| e.is_retryable() && e.kind() != ErrorKind::Timeout)
    })
    .await
}

/// For requests that return the raw reply payload (decoded by the caller):
/// retries an error reply whose code means "not accepted, try again", and
/// a failure that certainly never reached the broker (local backpressure,
/// or a connection lost before the request was written). A request that
/// was written when the connection dropped is returned as it is, so the
/// caller sees the loss with `maybe_applied()` set rather than a later
/// `Stale`.
pub(crate) async fn replay_safe_raw<F, Fut>(op: F) -> Result<Bytes>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Bytes>>,
{
    attempts(op, |r: &Result<Bytes>| match r {
        Ok(payload) => busy(payload),
        Err(e) => not_sent(e),
    })
    .await
}

async fn attempts<T, F, Fut>(mut op: F, again: impl Fn(&Result<T>) -> bool) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = FIRST_DELAY;
    let mut attempt = 1;
    loop {
        let result = op().await;
        if attempt >= ATTEMPTS || !again(&result) {
            return result;
        }
        tracing::debug!(attempt, "retrying a replay-safe read");
        tokio::time::sleep(delay).await;
        delay = delay.saturating_mul(2).min(MAX_DELAY);
        attempt += 1;
    }
}

fn not_sent(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Backpressure | ErrorKind::Connection) && !e.maybe_applied()
}

/// An error reply whose code means "not accepted, try again".
fn busy(payload: &Bytes) -> bool {
    payload.first().is_some_and(|&status| status != 0)
        && WireError::decode(payload.clone())
            .ok()
            .and_then(|e| e.code())
            .is_some_and(codes::is_retryable)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn coded(code: u32) -> Bytes {
        let mut b = bytes::BytesMut::new();
        WireError::coded(code, "x").encode(&mut b);
        b.freeze()
    }

    #[tokio::test(start_paused = true)]
    async fn busy_replies_and_unsent_requests_are_retried_three_times() {
        let calls = AtomicU32::new(0);
        let r = replay_safe_raw(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(coded(codes::KV_BUSY)) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(r.unwrap(), coded(codes::KV_BUSY));

        let calls = AtomicU32::new(0);
        let r = replay_safe_raw(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(Error::connection_lost(false))
                } else {
                    Ok(Bytes::from_static(&[0]))
                }
            }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(r.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn maybe_applied_and_final_answers_are_not_retried() {
        for outcome in [
            Err(Error::connection_lost(true)),
            Err(Error::timeout(true)),
            Err(Error::stale()),
            Ok(coded(codes::KV_TX_NOT_FOUND)),
            Ok(Bytes::from_static(&[0, 1])),
        ] {
            let calls = AtomicU32::new(0);
            let _ = replay_safe_raw(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                let o = outcome.clone();
                async move { o }
            })
            .await;
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{outcome:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_errors_three_times_at_most() {
        let calls = AtomicU32::new(0);
        let r: Result<()> = replay_safe(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::not_connected())
        })
        .await;
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Connection);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let r = replay_safe(|| async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(Error::backpressure("full"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn final_errors_and_timeouts_are_returned_at_once() {
        for err in [Error::timeout(true), Error::invalid("bad"), Error::closed()] {
            let calls = AtomicU32::new(0);
            let r: Result<()> = replay_safe(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                let err = err.clone();
                async move { Err(err) }
            })
            .await;
            assert!(r.is_err());
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{err}");
        }
    }
}
