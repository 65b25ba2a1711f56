//! The message-type registry of the current dialect.
//!
//! A record's type is the verb's wire code. [`info`] says which domain a code
//! belongs to and which way it travels.

/// Queue ENQUEUE_BATCH: reserved, never valid on the wire.
pub const QUEUE_ENQUEUE_BATCH_RESERVED: u16 = 201;

/// The seven domains plus the control channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    /// CONNECT, correlation, hello, session metadata.
    Control,
    /// Transactional key/value store.
    Kv,
    /// Work queues.
    Queue,
    /// Request/response with workers.
    Rpc,
    /// Leases with fencing tokens.
    Lease,
    /// Fire-and-forget fan-out.
    Notice,
    /// Append-only streams.
    Stream,
    /// Cron schedules.
    Schedule,
}

impl Domain {
    /// The domain a type code belongs to, by its hundreds digit.
    pub const fn of(ty: u16) -> Option<Domain> {
        match ty {
            1..=5 => Some(Domain::Control),
            100..=199 => Some(Domain::Kv),
            200..=299 => Some(Domain::Queue),
            300..=399 => Some(Domain::Rpc),
            400..=499 => Some(Domain::Lease),
            500..=599 => Some(Domain::Notice),
            600..=699 => Some(Domain::Stream),
            700..=799 => Some(Domain::Schedule),
            _ => None,
        }
    }
}

/// Who may send a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only clients send it.
    ClientToServer,
    /// Only the broker sends it.
    ServerToClient,
    /// Both send it (RPC 302/303 and the replies of every request type).
    Both,
}

/// What the registry knows about one type code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeInfo {
    /// The wire code.
    pub code: u16,
    /// Upper-case verb name, e.g. `KV_BEGIN`.
    pub name: &'static str,
    /// Its domain.
    pub domain: Domain,
    /// True when a client may send it to the broker.
    pub client_sends: bool,
    /// True when the broker may send it to a client (responses and pushes).
    pub server_sends: bool,
}

/// The registry, written once: each entry defines the type's constant
/// (`$name = $code`, documented) and its row in [`info`] and [`ALL`]: who
/// sends it, and its name (the constant's).
macro_rules! registry {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $c:literal, $s:literal;)*) => {
        $($(#[$doc])* pub const $name: u16 = $code;)*

        /// Looks up a type code of the current dialect. Reserved (201) and unknown codes give `None`.
        pub const fn info(ty: u16) -> Option<TypeInfo> {
            match ty {
                $($name => Some(TypeInfo {
                    code: $name,
                    name: stringify!($name),
                    domain: match Domain::of($name) { Some(d) => d, None => Domain::Control },
                    client_sends: $c,
                    server_sends: $s,
                }),)*
                _ => None,
            }
        }

        /// Every type code of the current dialect, ascending.
        pub const ALL: &[u16] = &[$($name),*];
    };
}

registry! {
    /// CONNECT: the first record of a session, carrying the raw token.
    CONNECT = 1, true, false;
    /// CORRELATE: labels the next record of a client frame with a request id.
    CORRELATE = 2, true, false;
    /// CORRELATED: labels the next record of a broker frame with the request id it answers.
    CORRELATED = 3, false, true;
    /// SERVER_HELLO: protocol version and capability bits.
    SERVER_HELLO = 4, false, true;
    /// SESSION_METADATA: the client's service name.
    SESSION_METADATA = 5, true, false;
    /// KV BEGIN.
    KV_BEGIN = 100, true, true;
    /// KV COMMIT.
    KV_COMMIT = 101, true, true;
    /// KV ROLLBACK.
    KV_ROLLBACK = 102, true, true;
    /// KV GET.
    KV_GET = 103, true, true;
    /// KV PUT.
    KV_PUT = 104, true, true;
    /// KV INSERT.
    KV_INSERT = 105, true, true;
    /// KV DELETE.
    KV_DELETE = 106, true, true;
    /// KV DELETE_RANGE.
    KV_DELETE_RANGE = 107, true, true;
    /// KV SCAN.
    KV_SCAN = 108, true, true;
    /// KV SUBSCRIBE.
    KV_SUBSCRIBE = 109, true, true;
    /// KV UNSUBSCRIBE.
    KV_UNSUBSCRIBE = 110, true, true;
    /// KV NOTIFY (broker → client).
    KV_NOTIFY = 111, false, true;
    /// Queue ENQUEUE.
    QUEUE_ENQUEUE = 200, true, true;
    /// Queue RESERVE.
    QUEUE_RESERVE = 202, true, true;
    /// Queue EXTEND.
    QUEUE_EXTEND = 203, true, true;
    /// Queue COMPLETE.
    QUEUE_COMPLETE = 204, true, true;
    /// Queue SUBSCRIBE.
    QUEUE_SUBSCRIBE = 207, true, true;
    /// Queue UNSUBSCRIBE.
    QUEUE_UNSUBSCRIBE = 208, true, true;
    /// Queue NOTIFY (broker → client).
    QUEUE_NOTIFY = 209, false, true;
    /// RPC SUBSCRIBE_WORKER.
    RPC_SUBSCRIBE_WORKER = 300, true, true;
    /// RPC UNSUBSCRIBE_WORKER.
    RPC_UNSUBSCRIBE_WORKER = 301, true, true;
    /// RPC REQUEST (caller → broker, broker → worker).
    RPC_REQUEST = 302, true, true;
    /// RPC RESPONSE (worker → broker, broker → caller).
    RPC_RESPONSE = 303, true, true;
    /// RPC_CANCEL (caller or worker → broker).
    RPC_CANCEL = 304, true, false;
    /// RPC_LIFECYCLE (broker → worker or caller).
    RPC_LIFECYCLE = 305, false, true;
    /// Lease ACQUIRE.
    LEASE_ACQUIRE = 400, true, true;
    /// Lease RENEW.
    LEASE_RENEW = 401, true, true;
    /// Lease RELEASE.
    LEASE_RELEASE = 402, true, true;
    /// Lease QUERY.
    LEASE_QUERY = 403, true, true;
    /// Lease SUBSCRIBE.
    LEASE_SUBSCRIBE = 407, true, true;
    /// Lease UNSUBSCRIBE.
    LEASE_UNSUBSCRIBE = 408, true, true;
    /// Lease NOTIFY (broker → client).
    LEASE_NOTIFY = 409, false, true;
    /// Lease LIST.
    LEASE_LIST = 410, true, true;
    /// Notice PUBLISH.
    NOTICE_PUBLISH = 500, true, false;
    /// Notice SUBSCRIBE.
    NOTICE_SUBSCRIBE = 501, true, true;
    /// Notice UNSUBSCRIBE.
    NOTICE_UNSUBSCRIBE = 502, true, true;
    /// Notice UNSUBSCRIBE_ALL.
    NOTICE_UNSUBSCRIBE_ALL = 503, true, true;
    /// Notice NOTIFY (broker → client).
    NOTICE_NOTIFY = 504, false, true;
    /// Stream BEGIN.
    STREAM_BEGIN = 600, true, true;
    /// Stream APPEND.
    STREAM_APPEND = 601, true, true;
    /// Stream COMMIT.
    STREAM_COMMIT = 602, true, true;
    /// Stream ROLLBACK.
    STREAM_ROLLBACK = 603, true, true;
    /// Stream READ.
    STREAM_READ = 604, true, true;
    /// Stream LAST.
    STREAM_LAST = 605, true, true;
    /// Stream GET_METADATA.
    STREAM_GET_METADATA = 606, true, true;
    /// Stream SUBSCRIBE.
    STREAM_SUBSCRIBE = 607, true, true;
    /// Stream UNSUBSCRIBE.
    STREAM_UNSUBSCRIBE = 608, true, true;
    /// Stream NOTIFY (broker → client).
    STREAM_NOTIFY = 609, false, true;
    /// Schedule CREATE.
    SCHEDULE_CREATE = 700, true, true;
    /// Schedule CANCEL.
    SCHEDULE_CANCEL = 701, true, true;
    /// Schedule LIST.
    SCHEDULE_LIST = 702, true, true;
    /// Schedule SUBSCRIBE.
    SCHEDULE_SUBSCRIBE = 703, true, true;
    /// Schedule UNSUBSCRIBE.
    SCHEDULE_UNSUBSCRIBE = 704, true, true;
    /// Schedule NOTIFY (broker → client).
    SCHEDULE_NOTIFY = 705, false, true;
    /// Schedule CREATE_BATCH (broker extension).
    SCHEDULE_CREATE_BATCH = 706, true, true;
    /// Schedule LIST_V2 (broker extension).
    SCHEDULE_LIST_V2 = 707, true, true;
}

/// Human-readable name of a type code, `"UNKNOWN"` for codes outside the registry.
pub fn name(ty: u16) -> &'static str {
    match info(ty) {
        Some(i) => i.name,
        None => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_sorted_and_consistent() {
        assert!(ALL.windows(2).all(|w| w[0] < w[1]));
        for &t in ALL {
            let i = info(t).expect("registered");
            assert_eq!(i.code, t);
            assert_eq!(Some(i.domain), Domain::of(t));
            assert!(i.client_sends || i.server_sends);
        }
        assert_eq!(info(QUEUE_ENQUEUE_BATCH_RESERVED), None);
        assert_eq!(info(0), None);
        assert_eq!(name(504), "NOTICE_NOTIFY");
    }
}
