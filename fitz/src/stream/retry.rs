//! Replay-safe retries (protocol §9.9): Stream READ, LAST and GET_METADATA
//! and Schedule LIST / LIST_V2 change nothing on the broker, so a retryable
//! failure is worth a second and third attempt.

use std::future::Future;
use std::time::Duration;

use crate::error::{ErrorKind, Result};

/// Attempts in total, the first included.
const ATTEMPTS: u32 = 3;
/// Pause before the second attempt; doubles after each further failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Runs `op` up to three times while it fails with a retryable error,
/// pausing 100 ms, then 200 ms (doubling, capped at 1 s) in between.
///
/// A timeout is not retried: it already used the whole request budget the
/// caller configured, and three of them would silently triple it.
pub(crate) async fn replay_safe<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = FIRST_DELAY;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < ATTEMPTS && e.is_retryable() && e.kind() != ErrorKind::Timeout => {
                tracing::debug!(attempt, error = %e, "retrying a replay-safe read");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2).min(MAX_DELAY);
                attempt += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::Error;

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
