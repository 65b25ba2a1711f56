//! Bounded retries (protocol §9.9) under a [`RetryPolicy`].
//!
//! Replay-safe reads — KV GET/SCAN, Lease QUERY/LIST, Stream
//! READ/LAST/GET_METADATA and Schedule LIST/LIST_V2 — change nothing on the
//! broker, so a failure that says "try again" is worth another attempt. The
//! client's policy ([`crate::ClientBuilder::retry`], default: 3 attempts,
//! 100 ms doubling, capped at 1 s, no jitter) applies to them; a domain view
//! can override it (`client.kv().with_retry(policy)`, likewise for
//! `lease()`, `stream()` and `schedule()`).
//!
//! A Queue ENQUEUE changes state, so it is retried only when the caller
//! opted in ([`crate::ClientBuilder::enqueue_retry`] or
//! `client.queue().with_retry(policy)`; off by default) and only after a
//! *confirmed negative answer*: a coded broker error the registry marks
//! retryable and not applied (4005 queue full). Never after a timeout or a
//! connection lost once the request was written: the message may be stored.
//!
//! A timeout is never retried: it already used the caller's whole budget,
//! and retrying would silently multiply it. A request pinned to a session
//! that has since ended turns into `Stale` on the next attempt, which ends
//! the loop. Nothing else (writes, RPC calls, publishes) is ever retried.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use fitz_protocol::{WireError, codes};
use rand::Rng;

use crate::error::{Error, ErrorKind, Result};
use crate::options::{capped_exponential, full_jitter};

/// How the pause before each retry is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly the capped exponential pause (today's behaviour; the default).
    #[default]
    None,
    /// A uniformly random pause in `[0, ceiling]` ("full jitter"): callers
    /// that failed together retry spread out.
    Full,
    /// Half the ceiling plus a uniformly random part of the other half:
    /// spread out, but never much shorter than the ceiling.
    Equal,
}

impl Jitter {
    /// A pause of at most `ceiling`, randomised per this kind of jitter.
    pub(crate) fn apply(self, ceiling: Duration, rng: &mut impl Rng) -> Duration {
        match self {
            Self::None => ceiling,
            Self::Full => full_jitter(ceiling, rng),
            Self::Equal => {
                let half = ceiling / 2;
                half + full_jitter(ceiling - half, rng)
            }
        }
    }
}

/// How often, and how far apart, a retryable failure is tried again.
///
/// Retry `n` (1-based: the pause before attempt `n + 1`) waits
/// `min(max_backoff, first_backoff × 2^(n−1))`, randomised per
/// [`Jitter`]. Only failures that certainly were not applied are retried
/// (see the crate's "Retries" section in the README); a policy cannot make
/// the client retry anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `0` and `1` both mean "never
    /// retry".
    pub attempts: u32,
    /// Ceiling of the pause before the second attempt.
    pub first_backoff: Duration,
    /// Ceiling of any pause.
    pub max_backoff: Duration,
    /// Randomisation of each pause.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// 3 attempts, 100 ms then 200 ms apart (doubling, capped at 1 s), no
    /// jitter: the client's behaviour before policies were configurable.
    fn default() -> Self {
        Self {
            attempts: 3,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            jitter: Jitter::None,
        }
    }
}

impl RetryPolicy {
    /// A single attempt: nothing is retried.
    pub fn none() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    /// This policy with `jitter`.
    #[must_use]
    pub fn with_jitter(self, jitter: Jitter) -> Self {
        Self { jitter, ..self }
    }

    /// The pause before attempt `retry + 1` (`retry` 1-based), drawn from
    /// `rng` when the policy has jitter.
    pub(crate) fn backoff_with(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = capped_exponential(self.first_backoff, self.max_backoff, retry);
        self.jitter.apply(ceiling, rng)
    }
}

/// Runs `op` under `policy` while it fails with a retryable error
/// (connection, backpressure, or a broker code the registry marks
/// retryable), never on a timeout.
pub(crate) async fn replay_safe<T, F, Fut>(policy: &RetryPolicy, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    attempts(policy, op, |r: &Result<T>| {
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
pub(crate) async fn replay_safe_raw<F, Fut>(policy: &RetryPolicy, op: F) -> Result<Bytes>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Bytes>>,
{
    attempts(policy, op, |r: &Result<Bytes>| match r {
        Ok(payload) => busy(payload),
        Err(e) => not_sent(e),
    })
    .await
}

/// For a write (Queue ENQUEUE): retries only a confirmed negative answer,
/// a coded broker error that is retryable and certainly not applied.
pub(crate) async fn confirmed_negative<T, F, Fut>(policy: &RetryPolicy, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    attempts(policy, op, |r: &Result<T>| {
        r.as_ref().is_err_and(is_confirmed_negative)
    })
    .await
}

/// The broker answered, with a code, that it did not apply the request and
/// that trying again may succeed.
fn is_confirmed_negative(e: &Error) -> bool {
    e.kind() == ErrorKind::Broker && e.code().is_some_and(codes::is_retryable) && !e.maybe_applied()
}

async fn attempts<T, F, Fut>(
    policy: &RetryPolicy,
    mut op: F,
    again: impl Fn(&Result<T>) -> bool,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        let result = op().await;
        if attempt >= policy.attempts || !again(&result) {
            return result;
        }
        let delay = policy.backoff_with(attempt, &mut rand::rng());
        tracing::debug!(attempt, ?delay, "retrying");
        tokio::time::sleep(delay).await;
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
        let r = replay_safe_raw(&RetryPolicy::default(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(coded(codes::KV_BUSY)) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(r.unwrap(), coded(codes::KV_BUSY));

        let calls = AtomicU32::new(0);
        let r = replay_safe_raw(&RetryPolicy::default(), || {
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
            let _ = replay_safe_raw(&RetryPolicy::default(), || {
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
        let r: Result<()> = replay_safe(&RetryPolicy::default(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::not_connected())
        })
        .await;
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Connection);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let r = replay_safe(&RetryPolicy::default(), || async {
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
            let r: Result<()> = replay_safe(&RetryPolicy::default(), || {
                calls.fetch_add(1, Ordering::SeqCst);
                let err = err.clone();
                async move { Err(err) }
            })
            .await;
            assert!(r.is_err());
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_policy_sets_attempts_and_pauses() {
        let policy = RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(25),
            jitter: Jitter::None,
        };
        let start = tokio::time::Instant::now();
        let times = std::sync::Mutex::new(Vec::new());
        let r: Result<()> = replay_safe(&policy, || {
            times.lock().unwrap().push(start.elapsed());
            async { Err(Error::not_connected()) }
        })
        .await;
        assert!(r.is_err());
        let ms: Vec<u128> = times
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(ms, [0, 10, 30, 55]);

        let calls = AtomicU32::new(0);
        let _: Result<()> = replay_safe(&RetryPolicy::none(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::not_connected()) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let zero = RetryPolicy {
            attempts: 0,
            ..RetryPolicy::default()
        };
        let _: Result<()> = replay_safe(&zero, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::not_connected()) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn jitter_spreads_pauses_under_the_ceiling() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let full = RetryPolicy::default().with_jitter(Jitter::Full);
        let equal = RetryPolicy::default().with_jitter(Jitter::Equal);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            let d = full.backoff_with(2, &mut rng);
            assert!(d <= Duration::from_millis(200));
            seen.insert(d);
            let e = equal.backoff_with(2, &mut rng);
            assert!(e >= Duration::from_millis(100) && e <= Duration::from_millis(200));
        }
        assert!(seen.len() > 60, "full jitter repeats itself");
        assert_eq!(
            RetryPolicy::default().backoff_with(5, &mut rng),
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writes_are_retried_only_after_a_confirmed_negative_answer() {
        let policy = RetryPolicy::default();
        let full = || Error::broker(&WireError::coded(codes::QUEUE_FULL, "full"));
        // Confirmed negative: retried up to the policy's attempts.
        let calls = AtomicU32::new(0);
        let r: Result<()> = confirmed_negative(&policy, || {
            calls.fetch_add(1, Ordering::SeqCst);
            let e = full();
            async move { Err(e) }
        })
        .await;
        assert_eq!(r.unwrap_err().code(), Some(codes::QUEUE_FULL));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Anything that may have been applied, or is not a broker "no": once.
        for err in [
            Error::timeout(true),
            Error::timeout(false),
            Error::connection_lost(true),
            Error::connection_lost(false),
            Error::backpressure("full"),
            Error::broker(&WireError::coded(codes::QUEUE_BACKEND, "disk")),
        ] {
            let calls = AtomicU32::new(0);
            let _: Result<()> = confirmed_negative(&policy, || {
                calls.fetch_add(1, Ordering::SeqCst);
                let e = err.clone();
                async move { Err(e) }
            })
            .await;
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{err}");
        }
        // No policy: never.
        let calls = AtomicU32::new(0);
        let _: Result<()> = confirmed_negative(&RetryPolicy::none(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            let e = full();
            async move { Err(e) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
