//! [`Client::flush`](crate::Client::flush) and
//! [`Client::drain`](crate::Client::drain).
//!
//! # What a flush proves
//!
//! A request's reply proves the broker processed that request. A
//! fire-and-forget record (Notice PUBLISH, RPC REQUEST/RESPONSE/CANCEL) has
//! no reply, and a request whose caller gave up has nobody waiting for it.
//! A flush puts one *barrier* through every domain that carried a record
//! since the previous flush: a cheap request of that domain that changes
//! nothing, and waits for every barrier's answer (an error answer counts:
//! it was processed all the same).
//!
//! The Fitz spec lets a broker give each domain its own mailbox, processed
//! in order per connection, so a barrier of the same domain is answered only
//! after every earlier record of that domain was taken. One barrier per
//! domain is therefore the weakest sufficient rule; `fitz-broker` handles a
//! session's frames strictly in order, for which any one barrier would do.
//! The barriers are (routes under the reserved realm `fitz`, area `flush`):
//!
//! | domain | barrier | effect |
//! |---|---|---|
//! | KV | ROLLBACK of transaction 0 | none: no such transaction |
//! | Queue | EXTEND of message 0 | none: no such message |
//! | RPC | UNSUBSCRIBE_WORKER `rpc://fitz/flush/barrier` | none: never registered |
//! | Lease | QUERY `lease://fitz/flush/barrier` | read-only |
//! | Notice | UNSUBSCRIBE of subscription 0 | none: ids start at 1 |
//! | Stream | GET_METADATA `stream://fitz/flush/barrier` | read-only |
//! | Schedule | LIST, one entry | read-only |

use std::time::Duration;

use bytes::Bytes;
use fitz_protocol::{Message, Str, kv, lease, notice, queue, rpc, schedule, stream};
use futures_util::future::join_all;
use tokio::time::Instant;

use crate::connection::{Connection, RequestOptions, encode_record};
use crate::error::{Error, ErrorKind, Result};

/// What [`Client::drain`](crate::Client::drain) could not finish in time.
/// The client is closed either way.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DrainReport {
    /// RPC and queue workers whose running handlers had not finished when
    /// the time ran out. The close stopped them: an RPC call still running
    /// got no answer, a queue message not completed is delivered again after
    /// its lease.
    pub workers_unfinished: usize,
    /// Subscriptions whose UNSUBSCRIBE the broker did not confirm in time
    /// (or refused). The close removes them on the broker anyway.
    pub unsubscribes_unconfirmed: usize,
    /// Why the final flush did not confirm everything sent, if it did not.
    pub flush_error: Option<Error>,
}

impl DrainReport {
    /// True when everything finished in time.
    pub fn is_complete(&self) -> bool {
        self.workers_unfinished == 0
            && self.unsubscribes_unconfirmed == 0
            && self.flush_error.is_none()
    }
}

/// The barrier record of domain `d` (1 = KV … 7 = Schedule).
fn barrier(domain: u16) -> Option<(u16, Result<Bytes>)> {
    fn record<M: Message>(msg: &M) -> Option<(u16, Result<Bytes>)> {
        Some((M::TYPE, encode_record(msg)))
    }
    match domain {
        1 => record(&kv::Rollback {
            tx_id: 0,
            route: Str::from("kv://fitz/flush/barrier"),
        }),
        2 => record(&queue::Extend {
            route: Str::from("queue://fitz/flush/barrier"),
            message_id: 0,
            lease_token: 0,
            lease_seconds: 1,
        }),
        3 => record(&rpc::UnsubscribeWorker::new("rpc://fitz/flush/barrier")),
        4 => record(&lease::Query::new("lease://fitz/flush/barrier")),
        5 => record(&notice::Unsubscribe { sub_id: 0 }),
        6 => record(&stream::GetMetadata::new("stream://fitz/flush/barrier")),
        7 => record(&schedule::List {
            offset: None,
            limit: Some(1),
        }),
        _ => None,
    }
}

/// One barrier per domain used since the last flush; see the module docs.
pub(crate) async fn flush(conn: &Connection, deadline: Instant) -> Result<()> {
    if conn.shared().is_closed() {
        return Err(Error::closed());
    }
    let used = conn.take_domains_used();
    let domains: Vec<u16> = (1..=7u16).filter(|d| used & (1 << d) != 0).collect();
    let timeout = deadline.saturating_duration_since(Instant::now());
    let barriers = domains.iter().map(|&d| async move {
        let (ty, record) = barrier(d).ok_or_else(|| Error::invalid("no barrier"))?;
        let opts = RequestOptions {
            timeout: Some(timeout),
            barrier: true,
            ..RequestOptions::default()
        };
        // Any answer, an error reply included, means "processed".
        conn.request_record(ty, None, record?, opts).await.map(drop)
    });
    let mut failed = 0u32;
    let mut first_error = None;
    for (domain, result) in domains.iter().zip(join_all(barriers).await) {
        if let Err(e) = result {
            failed |= 1 << domain;
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => {
            // Not confirmed: the next flush must cover these domains again.
            conn.restore_domains_used(failed);
            Err(e)
        }
    }
}

/// The drain procedure; see [`Client::drain`](crate::Client::drain).
pub(crate) async fn drain(conn: &Connection, timeout: Duration) -> DrainReport {
    let deadline = Instant::now() + timeout;
    let mut report = DrainReport::default();
    if conn.begin_drain() {
        tracing::debug!(?timeout, "draining the client");
    }
    // 1. Workers stop taking work and finish what runs; an RPC worker
    //    unregisters itself only after its handlers answered.
    report.workers_unfinished = conn.workers_finished(deadline).await;
    // 2. Every other subscription ends (its stream returns `None`).
    match conn.unsubscribe_all().await {
        Ok(outcomes) => {
            for outcome in outcomes {
                let confirmed = matches!(
                    tokio::time::timeout_at(deadline, outcome).await,
                    Ok(Ok(Ok(())))
                );
                if !confirmed {
                    report.unsubscribes_unconfirmed += 1;
                }
            }
        }
        Err(e) => report.flush_error = Some(e),
    }
    // 3. Everything sent so far is processed by the broker.
    if report.flush_error.is_none() {
        report.flush_error = flush(conn, deadline).await.err();
    }
    if let Some(e) = &report.flush_error
        && e.kind() == ErrorKind::Closed
    {
        tracing::debug!("drain: the client was already closed");
    }
    conn.close().await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::domain_bit;
    use fitz_protocol::types;

    #[test]
    fn every_domain_has_a_barrier_of_its_own_domain() {
        for domain in 1..=7u16 {
            let (ty, record) = barrier(domain).expect("a barrier");
            assert_eq!(ty / 100, domain, "{}", types::name(ty));
            assert!(record.is_ok());
            assert_eq!(domain_bit(ty), 1 << domain);
        }
        assert!(barrier(0).is_none() && barrier(8).is_none());
        assert_eq!(domain_bit(types::SESSION_METADATA), 0);
    }
}
