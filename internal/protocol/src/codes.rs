//! The broker's error-code registry: every code of the current dialect with
//! its name, whether retrying is safe, and whether the operation may have
//! taken effect anyway.

/// What a client may conclude about an operation that failed with a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The broker rejected the operation; it did not take effect.
    NotApplied,
    /// The operation may or may not have taken effect (backend failure, timeout).
    Unknown,
}

/// One registered error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    /// The numeric code (travels as a `u32`).
    pub code: u32,
    /// Upper-snake name, e.g. `KV_ISOLATION_CONFLICT`.
    pub name: &'static str,
    /// True when the same request may simply be sent again later.
    pub retryable: bool,
    /// Whether the failed operation can have been applied.
    pub outcome: Outcome,
}

macro_rules! codes {
    ($($konst:ident = $code:literal, $retry:literal, $outcome:ident;)*) => {
        $(
            #[doc = concat!("Error code ", stringify!($code), " (`", stringify!($konst), "`).")]
            pub const $konst: u32 = $code;
        )*

        /// Looks up a code. Unknown codes give `None`.
        pub const fn info(code: u32) -> Option<CodeInfo> {
            match code {
                $($code => Some(CodeInfo {
                    code: $code,
                    name: stringify!($konst),
                    retryable: $retry,
                    outcome: Outcome::$outcome,
                }),)*
                _ => None,
            }
        }

        /// Every registered code, ascending.
        pub const ALL: &[u32] = &[$($code),*];
    };
}

codes! {
    KV_TX_NOT_FOUND = 1001, false, NotApplied;
    KV_INVALID_MODE = 1002, false, NotApplied;
    KV_KEY_NOT_FOUND = 1003, false, NotApplied;
    KV_ISOLATION_CONFLICT = 1004, true, NotApplied;
    KV_READ_ONLY = 1005, false, NotApplied;
    KV_KEY_EXISTS = 1006, false, NotApplied;
    KV_INVALID_ROUTE = 1007, false, NotApplied;
    KV_REALM_MISMATCH = 1008, false, NotApplied;
    KV_BACKEND = 1009, false, Unknown;
    KV_ABORTED = 1010, false, NotApplied;
    KV_UNAUTHORIZED = 1011, false, NotApplied;
    KV_INVALID_PATTERN = 1012, false, NotApplied;
    KV_SUBSCRIPTION_LIMIT = 1013, false, NotApplied;
    KV_BUSY = 1014, true, NotApplied;

    STREAM_CONCURRENCY_CONFLICT = 2001, false, NotApplied;
    STREAM_SESSION_ACTIVE = 2002, false, NotApplied;
    STREAM_SESSION_NOT_FOUND = 2003, false, NotApplied;
    STREAM_INVALID_READ_BOUND = 2004, false, NotApplied;
    STREAM_RESOURCE_NOT_FOUND = 2005, false, NotApplied;
    STREAM_FILTER_VERSION = 2006, false, NotApplied;
    STREAM_FILTER_INVALID = 2007, false, NotApplied;
    STREAM_UNAUTHORIZED = 2009, false, NotApplied;
    STREAM_INVALID_PATTERN = 2010, false, NotApplied;
    STREAM_SUBSCRIPTION_LIMIT = 2011, false, NotApplied;
    STREAM_BACKEND = 2012, false, Unknown;
    STREAM_RESPONSE_TOO_LARGE = 2013, false, NotApplied;
    STREAM_BUSY = 2014, true, NotApplied;

    NOTICE_INVALID_ROUTE = 3001, false, NotApplied;
    NOTICE_INVALID_PATTERN = 3002, false, NotApplied;
    NOTICE_SUBSCRIPTION_LIMIT = 3003, false, NotApplied;
    NOTICE_TRANSPORT_CLOSED = 3004, false, Unknown;
    NOTICE_BACKEND = 3005, false, Unknown;
    NOTICE_BUSY = 3006, true, NotApplied;
    NOTICE_UNAUTHORIZED = 3009, false, NotApplied;

    QUEUE_INVALID_TOKEN = 4001, false, NotApplied;
    QUEUE_LEASE_EXPIRED = 4002, false, NotApplied;
    QUEUE_MESSAGE_NOT_FOUND = 4003, false, NotApplied;
    QUEUE_NOT_FOUND = 4004, false, NotApplied;
    QUEUE_FULL = 4005, true, NotApplied;
    QUEUE_BAD_REQUEST = 4006, false, NotApplied;
    QUEUE_BACKEND = 4007, false, Unknown;
    QUEUE_UNAUTHORIZED = 4009, false, NotApplied;
    QUEUE_INVALID_PATTERN = 4010, false, NotApplied;
    QUEUE_SUBSCRIPTION_LIMIT = 4011, false, NotApplied;

    LEASE_HELD = 5001, true, NotApplied;
    LEASE_INVALID_FENCE = 5002, false, NotApplied;
    LEASE_EXPIRED = 5003, false, NotApplied;
    LEASE_NOT_FOUND = 5004, false, NotApplied;
    LEASE_INVALID_TOKEN = 5005, false, NotApplied;
    LEASE_WAIT_TIMEOUT = 5006, false, NotApplied;
    LEASE_QUEUE_FULL = 5007, true, NotApplied;
    LEASE_BAD_REQUEST = 5008, false, NotApplied;
    LEASE_UNAUTHORIZED = 5009, false, NotApplied;
    LEASE_INVALID_SUBSCRIPTION = 5010, false, NotApplied;
    LEASE_INVALID_CURSOR = 5011, false, NotApplied;
    LEASE_INVALID_LIST_PATTERN = 5012, false, NotApplied;

    RPC_TIMEOUT = 6001, true, Unknown;
    RPC_WORKER_NOT_FOUND = 6002, true, Unknown;
    RPC_BACKPRESSURE = 6003, true, NotApplied;
    RPC_NO_WORKER = 6004, true, NotApplied;
    RPC_CORRELATION_NOT_FOUND = 6005, false, NotApplied;
    RPC_INVALID_SEQUENCE = 6006, false, NotApplied;
    RPC_DUPLICATE_CORRELATION = 6007, false, NotApplied;
    RPC_WRONG_WORKER = 6008, false, NotApplied;
    RPC_UNAUTHORIZED = 6009, false, NotApplied;
    RPC_UNAVAILABLE = 6010, false, Unknown;
    RPC_INVALID_ROUTE = 6011, false, NotApplied;
    RPC_INVALID_PATTERN = 6012, false, NotApplied;
    RPC_SUBSCRIPTION_LIMIT = 6013, false, NotApplied;

    SCHEDULE_NOT_FOUND = 7001, false, NotApplied;
    SCHEDULE_INVALID_CRON = 7002, false, NotApplied;
    SCHEDULE_LIMIT = 7003, false, NotApplied;
    SCHEDULE_PARSE = 7004, false, NotApplied;
    SCHEDULE_INVALID_TARGET = 7005, false, NotApplied;
    SCHEDULE_INVALID_PATTERN = 7006, false, NotApplied;
    SCHEDULE_SUBSCRIPTION_LIMIT = 7007, false, NotApplied;
    SCHEDULE_INVALID_MODE = 7008, false, NotApplied;
    SCHEDULE_UNAUTHORIZED = 7009, false, NotApplied;
    SCHEDULE_BUSY = 7010, true, NotApplied;
    SCHEDULE_TIMEOUT = 7011, false, Unknown;
}

/// True for the RPC domain's codes (6001–6013): what an RPC terminal
/// response may carry, and what a worker may answer with.
pub fn is_rpc(code: u32) -> bool {
    (RPC_TIMEOUT..=RPC_SUBSCRIPTION_LIMIT).contains(&code)
}

/// True for codes the registry marks retryable.
pub fn is_retryable(code: u32) -> bool {
    matches!(
        info(code),
        Some(CodeInfo {
            retryable: true,
            ..
        })
    )
}

/// Name of a code, `"UNKNOWN"` when unregistered.
pub fn name(code: u32) -> &'static str {
    match info(code) {
        Some(i) => i.name,
        None => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_covers_every_documented_range() {
        let ranges = [
            (1001, 1014, &[][..]),
            (2001, 2014, &[2008][..]),
            (3001, 3009, &[3007, 3008][..]),
            (4001, 4011, &[4008][..]),
            (5001, 5012, &[][..]),
            (6001, 6013, &[][..]),
            (7001, 7011, &[][..]),
        ];
        let mut expected = 0;
        for (lo, hi, gaps) in ranges {
            for c in lo..=hi {
                assert_eq!(info(c).is_some(), !gaps.contains(&c), "code {c}");
                expected += usize::from(!gaps.contains(&c));
            }
        }
        assert_eq!(ALL.len(), expected);
        assert!(ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn retryable_codes_match_the_spec() {
        let retryable: Vec<u32> = ALL.iter().copied().filter(|c| is_retryable(*c)).collect();
        assert_eq!(
            retryable,
            [
                1004, 1014, 2014, 3006, 4005, 5001, 5007, 6001, 6002, 6003, 6004, 7010
            ]
        );
        assert_eq!(name(4001), "QUEUE_INVALID_TOKEN");
        assert_eq!(info(9999), None);
    }
}
