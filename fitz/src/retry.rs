//! Bounded retries for replay-safe reads (KV GET/SCAN, Lease QUERY/LIST).
//!
//! Only reads are retried, and only on failures that say the broker did not
//! act on the request: local backpressure or a connection lost before the
//! request was written, and broker codes the registry marks retryable (a
//! full domain mailbox: "not accepted"). Anything that may have been applied
//! or that a second attempt cannot change goes straight back to the caller.
//! A request pinned to a session that has since ended turns into `Stale` on
//! the next attempt, which ends the loop.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use fitz_protocol::{WireError, codes};

use crate::error::{Error, ErrorKind, Result};

/// Attempts in all, including the first.
const ATTEMPTS: u32 = 3;
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Runs `request` (which returns a raw reply payload) up to three times,
/// backing off 100 ms, then 200 ms.
pub(crate) async fn read<F, Fut>(mut request: F) -> Result<Bytes>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Bytes>>,
{
    let mut delay = FIRST_DELAY;
    let mut attempt = 1;
    loop {
        let result = request().await;
        let again = match &result {
            Ok(payload) => busy(payload),
            Err(e) => not_sent(e),
        };
        if !again || attempt >= ATTEMPTS {
            return result;
        }
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
        let r = read(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(coded(codes::KV_BUSY)) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(r.unwrap(), coded(codes::KV_BUSY));

        let calls = AtomicU32::new(0);
        let r = read(|| {
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
            let _ = read(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                let o = outcome.clone();
                async move { o }
            })
            .await;
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{outcome:?}");
        }
    }
}
