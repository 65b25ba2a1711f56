//! The message-type registry of the current dialect.
//!
//! A record's type is the verb's wire code. [`info`] says which domain a code
//! belongs to and which way it travels.

/// CONNECT: the first record of a session, carrying the raw token.
pub const CONNECT: u16 = 1;
/// CORRELATE: labels the next record of a client frame with a request id.
pub const CORRELATE: u16 = 2;
/// CORRELATED: labels the next record of a broker frame with the request id it answers.
pub const CORRELATED: u16 = 3;
/// SERVER_HELLO: protocol version and capability bits.
pub const SERVER_HELLO: u16 = 4;
/// SESSION_METADATA: the client's service name.
pub const SESSION_METADATA: u16 = 5;

/// KV BEGIN.
pub const KV_BEGIN: u16 = 100;
/// KV COMMIT.
pub const KV_COMMIT: u16 = 101;
/// KV ROLLBACK.
pub const KV_ROLLBACK: u16 = 102;
/// KV GET.
pub const KV_GET: u16 = 103;
/// KV PUT.
pub const KV_PUT: u16 = 104;
/// KV INSERT.
pub const KV_INSERT: u16 = 105;
/// KV DELETE.
pub const KV_DELETE: u16 = 106;
/// KV DELETE_RANGE.
pub const KV_DELETE_RANGE: u16 = 107;
/// KV SCAN.
pub const KV_SCAN: u16 = 108;
/// KV SUBSCRIBE.
pub const KV_SUBSCRIBE: u16 = 109;
/// KV UNSUBSCRIBE.
pub const KV_UNSUBSCRIBE: u16 = 110;
/// KV NOTIFY (broker → client).
pub const KV_NOTIFY: u16 = 111;

/// Queue ENQUEUE.
pub const QUEUE_ENQUEUE: u16 = 200;
/// Queue ENQUEUE_BATCH: reserved, never valid on the wire.
pub const QUEUE_ENQUEUE_BATCH_RESERVED: u16 = 201;
/// Queue RESERVE.
pub const QUEUE_RESERVE: u16 = 202;
/// Queue EXTEND.
pub const QUEUE_EXTEND: u16 = 203;
/// Queue COMPLETE.
pub const QUEUE_COMPLETE: u16 = 204;
/// Queue SUBSCRIBE.
pub const QUEUE_SUBSCRIBE: u16 = 207;
/// Queue UNSUBSCRIBE.
pub const QUEUE_UNSUBSCRIBE: u16 = 208;
/// Queue NOTIFY (broker → client).
pub const QUEUE_NOTIFY: u16 = 209;

/// RPC SUBSCRIBE_WORKER.
pub const RPC_SUBSCRIBE_WORKER: u16 = 300;
/// RPC UNSUBSCRIBE_WORKER.
pub const RPC_UNSUBSCRIBE_WORKER: u16 = 301;
/// RPC REQUEST (caller → broker, broker → worker).
pub const RPC_REQUEST: u16 = 302;
/// RPC RESPONSE (worker → broker, broker → caller).
pub const RPC_RESPONSE: u16 = 303;
/// RPC_CANCEL (caller or worker → broker).
pub const RPC_CANCEL: u16 = 304;
/// RPC_LIFECYCLE (broker → worker or caller).
pub const RPC_LIFECYCLE: u16 = 305;

/// Lease ACQUIRE.
pub const LEASE_ACQUIRE: u16 = 400;
/// Lease RENEW.
pub const LEASE_RENEW: u16 = 401;
/// Lease RELEASE.
pub const LEASE_RELEASE: u16 = 402;
/// Lease QUERY.
pub const LEASE_QUERY: u16 = 403;
/// Lease SUBSCRIBE.
pub const LEASE_SUBSCRIBE: u16 = 407;
/// Lease UNSUBSCRIBE.
pub const LEASE_UNSUBSCRIBE: u16 = 408;
/// Lease NOTIFY (broker → client).
pub const LEASE_NOTIFY: u16 = 409;
/// Lease LIST.
pub const LEASE_LIST: u16 = 410;

/// Notice PUBLISH.
pub const NOTICE_PUBLISH: u16 = 500;
/// Notice SUBSCRIBE.
pub const NOTICE_SUBSCRIBE: u16 = 501;
/// Notice UNSUBSCRIBE.
pub const NOTICE_UNSUBSCRIBE: u16 = 502;
/// Notice UNSUBSCRIBE_ALL.
pub const NOTICE_UNSUBSCRIBE_ALL: u16 = 503;
/// Notice NOTIFY (broker → client).
pub const NOTICE_NOTIFY: u16 = 504;

/// Stream BEGIN.
pub const STREAM_BEGIN: u16 = 600;
/// Stream APPEND.
pub const STREAM_APPEND: u16 = 601;
/// Stream COMMIT.
pub const STREAM_COMMIT: u16 = 602;
/// Stream ROLLBACK.
pub const STREAM_ROLLBACK: u16 = 603;
/// Stream READ.
pub const STREAM_READ: u16 = 604;
/// Stream LAST.
pub const STREAM_LAST: u16 = 605;
/// Stream GET_METADATA.
pub const STREAM_GET_METADATA: u16 = 606;
/// Stream SUBSCRIBE.
pub const STREAM_SUBSCRIBE: u16 = 607;
/// Stream UNSUBSCRIBE.
pub const STREAM_UNSUBSCRIBE: u16 = 608;
/// Stream NOTIFY (broker → client).
pub const STREAM_NOTIFY: u16 = 609;

/// Schedule CREATE.
pub const SCHEDULE_CREATE: u16 = 700;
/// Schedule CANCEL.
pub const SCHEDULE_CANCEL: u16 = 701;
/// Schedule LIST.
pub const SCHEDULE_LIST: u16 = 702;
/// Schedule SUBSCRIBE.
pub const SCHEDULE_SUBSCRIBE: u16 = 703;
/// Schedule UNSUBSCRIBE.
pub const SCHEDULE_UNSUBSCRIBE: u16 = 704;
/// Schedule NOTIFY (broker → client).
pub const SCHEDULE_NOTIFY: u16 = 705;
/// Schedule CREATE_BATCH (broker extension).
pub const SCHEDULE_CREATE_BATCH: u16 = 706;
/// Schedule LIST_V2 (broker extension).
pub const SCHEDULE_LIST_V2: u16 = 707;

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

macro_rules! registry {
    ($($code:ident => $name:literal, $c:literal, $s:literal;)*) => {
        /// Looks up a type code of the current dialect. Reserved (201) and unknown codes give `None`.
        pub const fn info(ty: u16) -> Option<TypeInfo> {
            match ty {
                $($code => Some(TypeInfo {
                    code: $code,
                    name: $name,
                    domain: match Domain::of($code) { Some(d) => d, None => Domain::Control },
                    client_sends: $c,
                    server_sends: $s,
                }),)*
                _ => None,
            }
        }

        /// Every type code of the current dialect, ascending.
        pub const ALL: &[u16] = &[$($code),*];
    };
}

registry! {
    CONNECT => "CONNECT", true, false;
    CORRELATE => "CORRELATE", true, false;
    CORRELATED => "CORRELATED", false, true;
    SERVER_HELLO => "SERVER_HELLO", false, true;
    SESSION_METADATA => "SESSION_METADATA", true, false;
    KV_BEGIN => "KV_BEGIN", true, true;
    KV_COMMIT => "KV_COMMIT", true, true;
    KV_ROLLBACK => "KV_ROLLBACK", true, true;
    KV_GET => "KV_GET", true, true;
    KV_PUT => "KV_PUT", true, true;
    KV_INSERT => "KV_INSERT", true, true;
    KV_DELETE => "KV_DELETE", true, true;
    KV_DELETE_RANGE => "KV_DELETE_RANGE", true, true;
    KV_SCAN => "KV_SCAN", true, true;
    KV_SUBSCRIBE => "KV_SUBSCRIBE", true, true;
    KV_UNSUBSCRIBE => "KV_UNSUBSCRIBE", true, true;
    KV_NOTIFY => "KV_NOTIFY", false, true;
    QUEUE_ENQUEUE => "QUEUE_ENQUEUE", true, true;
    QUEUE_RESERVE => "QUEUE_RESERVE", true, true;
    QUEUE_EXTEND => "QUEUE_EXTEND", true, true;
    QUEUE_COMPLETE => "QUEUE_COMPLETE", true, true;
    QUEUE_SUBSCRIBE => "QUEUE_SUBSCRIBE", true, true;
    QUEUE_UNSUBSCRIBE => "QUEUE_UNSUBSCRIBE", true, true;
    QUEUE_NOTIFY => "QUEUE_NOTIFY", false, true;
    RPC_SUBSCRIBE_WORKER => "RPC_SUBSCRIBE_WORKER", true, true;
    RPC_UNSUBSCRIBE_WORKER => "RPC_UNSUBSCRIBE_WORKER", true, true;
    RPC_REQUEST => "RPC_REQUEST", true, true;
    RPC_RESPONSE => "RPC_RESPONSE", true, true;
    RPC_CANCEL => "RPC_CANCEL", true, false;
    RPC_LIFECYCLE => "RPC_LIFECYCLE", false, true;
    LEASE_ACQUIRE => "LEASE_ACQUIRE", true, true;
    LEASE_RENEW => "LEASE_RENEW", true, true;
    LEASE_RELEASE => "LEASE_RELEASE", true, true;
    LEASE_QUERY => "LEASE_QUERY", true, true;
    LEASE_SUBSCRIBE => "LEASE_SUBSCRIBE", true, true;
    LEASE_UNSUBSCRIBE => "LEASE_UNSUBSCRIBE", true, true;
    LEASE_NOTIFY => "LEASE_NOTIFY", false, true;
    LEASE_LIST => "LEASE_LIST", true, true;
    NOTICE_PUBLISH => "NOTICE_PUBLISH", true, false;
    NOTICE_SUBSCRIBE => "NOTICE_SUBSCRIBE", true, true;
    NOTICE_UNSUBSCRIBE => "NOTICE_UNSUBSCRIBE", true, true;
    NOTICE_UNSUBSCRIBE_ALL => "NOTICE_UNSUBSCRIBE_ALL", true, true;
    NOTICE_NOTIFY => "NOTICE_NOTIFY", false, true;
    STREAM_BEGIN => "STREAM_BEGIN", true, true;
    STREAM_APPEND => "STREAM_APPEND", true, true;
    STREAM_COMMIT => "STREAM_COMMIT", true, true;
    STREAM_ROLLBACK => "STREAM_ROLLBACK", true, true;
    STREAM_READ => "STREAM_READ", true, true;
    STREAM_LAST => "STREAM_LAST", true, true;
    STREAM_GET_METADATA => "STREAM_GET_METADATA", true, true;
    STREAM_SUBSCRIBE => "STREAM_SUBSCRIBE", true, true;
    STREAM_UNSUBSCRIBE => "STREAM_UNSUBSCRIBE", true, true;
    STREAM_NOTIFY => "STREAM_NOTIFY", false, true;
    SCHEDULE_CREATE => "SCHEDULE_CREATE", true, true;
    SCHEDULE_CANCEL => "SCHEDULE_CANCEL", true, true;
    SCHEDULE_LIST => "SCHEDULE_LIST", true, true;
    SCHEDULE_SUBSCRIBE => "SCHEDULE_SUBSCRIBE", true, true;
    SCHEDULE_UNSUBSCRIBE => "SCHEDULE_UNSUBSCRIBE", true, true;
    SCHEDULE_NOTIFY => "SCHEDULE_NOTIFY", false, true;
    SCHEDULE_CREATE_BATCH => "SCHEDULE_CREATE_BATCH", true, true;
    SCHEDULE_LIST_V2 => "SCHEDULE_LIST_V2", true, true;
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
