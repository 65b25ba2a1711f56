//! Client options: reconnect policy, subscription buffering, TLS.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

/// How the client reconnects after an established session drops.
///
/// Delays use *full jitter*: attempt `n` (1-based) sleeps a uniformly random
/// duration in `[0, min(max_delay, base_delay × 2^(n−1))]`, which spreads a
/// fleet of clients out after a broker restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Reconnect at all. When false a lost session leaves the client
    /// [`crate::State::Disconnected`] until [`crate::Client::connect`] is called.
    pub enabled: bool,
    /// Ceiling of the first delay.
    pub base_delay: Duration,
    /// Ceiling of any delay.
    pub max_delay: Duration,
    /// Attempts before giving up and going [`crate::State::Disconnected`];
    /// `0` retries forever.
    pub max_attempts: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            max_attempts: 0,
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect automatically.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The capped exponential ceiling for `attempt` (1-based), before jitter.
    pub(crate) fn ceiling(&self, attempt: u32) -> Duration {
        capped_exponential(self.base_delay, self.max_delay, attempt)
    }

    /// A full-jitter delay for `attempt` (1-based).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }

    /// [`ReconnectPolicy::delay`] drawn from `rng` (a seeded one in tests).
    pub(crate) fn delay_with(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        full_jitter(self.ceiling(attempt), rng)
    }

    /// True when `attempt` (1-based) is beyond the configured limit.
    pub(crate) fn exhausted(&self, attempt: u32) -> bool {
        self.max_attempts != 0 && attempt > self.max_attempts
    }
}

/// `min(max, base × 2^(attempt−1))` for `attempt` (1-based): the backoff
/// ceiling shared by reconnects, `connect_when_ready` and read retries.
pub(crate) fn capped_exponential(base: Duration, max: Duration, attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << shift).min(max)
}

/// A uniformly random duration in `[0, ceiling]` ("full jitter").
pub(crate) fn full_jitter(ceiling: Duration, rng: &mut impl Rng) -> Duration {
    if ceiling.is_zero() {
        return ceiling;
    }
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// What a subscription does when its consumer falls behind and its buffer is
/// full.
///
/// Either way the connection's reader never waits for a consumer, so one slow
/// subscription never stalls the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// End the subscription: the consumer first receives everything already
    /// buffered, then one [`crate::ErrorKind::Overflow`] error, then the end of
    /// the stream. The broker registration is removed. Nothing is lost
    /// silently. The default.
    #[default]
    Error,
    /// Keep the newest notifications: the oldest buffered one is discarded to
    /// make room. Discards are counted (see the subscription's `dropped()`),
    /// and a [`crate::Event::SlowConsumer`] is emitted once per overflow
    /// episode (the first discard after a delivery that needed none).
    DropOldest,
}

/// Buffering of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Notifications buffered for the consumer (at least 1).
    pub buffer: usize,
    /// What happens when the buffer is full.
    pub overflow: Overflow,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            buffer: 256,
            overflow: Overflow::Error,
        }
    }
}

/// Which certificate authorities a `tls://` or `wss://` connection trusts.
#[derive(Clone, Default)]
pub enum TlsConfig {
    /// The operating system's trust store (via `rustls-native-certs`).
    #[default]
    SystemRoots,
    /// Only the CA certificates in this PEM bundle (for private PKI and tests).
    CustomCa(Vec<u8>),
    /// A complete rustls configuration (client certificates, pinning …). Its
    /// crypto provider is used as-is.
    Rustls(Arc<tokio_rustls::rustls::ClientConfig>),
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SystemRoots => f.write_str("SystemRoots"),
            Self::CustomCa(pem) => write!(f, "CustomCa({} bytes)", pem.len()),
            Self::Rustls(_) => f.write_str("Rustls(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_ceilings_double_and_cap() {
        let p = ReconnectPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..ReconnectPolicy::default()
        };
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(1));
        assert_eq!(p.ceiling(500), Duration::from_secs(1));
        for attempt in 1..10 {
            assert!(p.delay(attempt) <= p.ceiling(attempt));
        }
        assert!(!p.exhausted(1_000));
        let limited = ReconnectPolicy {
            max_attempts: 3,
            ..p
        };
        assert!(!limited.exhausted(3));
        assert!(limited.exhausted(4));
    }
}
