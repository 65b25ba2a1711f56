//! Lease against scripted peers over the in-memory transport, under paused
//! time: exact requests, deferred grants, cancelled waits, the renewer and
//! ownership loss.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use fitz_protocol::lease::{self, AcquireKind, AcquireOk, ListCursor as WireCursor, ListOk};
use fitz_protocol::{Message, WireError, codes, types};
use fitz_testkit::peer::{CAP_CORRELATION, Peer, Request};
use futures_util::{FutureExt, TryStreamExt};

use super::{LossReason, WithLeaseError};
use crate::ErrorKind;
use crate::test_support::{Scripted, ok};

const ROUTE: &str = "lease://t/jobs/nightly";

type Harness = Scripted;

async fn start() -> Harness {
    Scripted::start("memory://lease").await
}

fn grant(kind: AcquireKind, token: u64) -> Vec<u8> {
    ok(&AcquireOk {
        kind,
        fencing_token: token,
    })
}

fn error(code: u32) -> Vec<u8> {
    let mut b = BytesMut::new();
    WireError::coded(code, "no").encode(&mut b);
    b.to_vec()
}

async fn expect(peer: &mut Peer, ty: u16) -> Request {
    let r = tokio::time::timeout(Duration::from_secs(60), peer.read_request())
        .await
        .expect("no request")
        .unwrap();
    assert_eq!(r.ty, ty, "{r:?}");
    r
}

async fn nothing_more(peer: &mut Peer) {
    let r = tokio::time::timeout(Duration::from_secs(30), peer.read_request()).await;
    assert!(r.is_err(), "unexpected request: {r:?}");
}

/// Acquires `ROUTE` immediately with `token` (the peer answers).
async fn acquired(h: &mut Harness, ttl: Duration, token: u64) -> super::Lease {
    let c = h.client.clone();
    let task = tokio::spawn(async move { c.lease().acquire(ROUTE, "w1", ttl).await });
    let r = expect(&mut h.peer, types::LEASE_ACQUIRE).await;
    h.peer
        .reply(&r, &grant(AcquireKind::Acquired, token))
        .await
        .unwrap();
    task.await.unwrap().unwrap()
}

#[tokio::test(start_paused = true)]
async fn acquire_sends_whole_seconds_and_drop_releases() {
    let mut h = start().await;
    let c = h.client.clone();
    let task = tokio::spawn(async move {
        c.lease()
            .acquire(ROUTE, "w1", Duration::from_millis(1500))
            .await
    });
    let r = expect(&mut h.peer, types::LEASE_ACQUIRE).await;
    assert_eq!(
        lease::Acquire::decode(r.payload.clone()).unwrap(),
        lease::Acquire {
            route: ROUTE.into(),
            owner: "w1".into(),
            ttl_secs: 2,
            wait_seconds: Some(0),
        }
    );
    h.peer
        .reply(&r, &grant(AcquireKind::Acquired, 41))
        .await
        .unwrap();
    let lease = task.await.unwrap().unwrap();
    assert_eq!(
        (lease.fencing_token(), lease.ttl()),
        (41, Duration::from_secs(2))
    );
    assert!(!lease.already_held() && lease.is_current());
    drop(lease);
    let r = expect(&mut h.peer, types::LEASE_RELEASE).await;
    assert_eq!(
        lease::Release::decode(r.payload.clone())
            .unwrap()
            .fencing_token,
        41
    );
    h.peer.reply(&r, &[0]).await.unwrap();
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn bad_arguments_never_leave() {
    let h = start().await;
    let leases = h.client.lease();
    let ttl = Duration::from_secs(5);
    for route in [
        "lease://t/jobs",
        "lease://t/*/x",
        "kv://t/jobs/x",
        "lease://t/jobs/x/y",
    ] {
        let e = leases.acquire(route, "w", ttl).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{route}");
        let e = leases.query(route).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{route}");
    }
    let long = "o".repeat(513);
    for (owner, ttl, wait) in [
        (long.as_str(), ttl, Duration::ZERO),
        ("w", Duration::ZERO, Duration::ZERO),
        ("w", ttl, Duration::from_millis(30_001)),
    ] {
        let e = leases
            .acquire_wait(ROUTE, owner, ttl, wait)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
    for pattern in ["lease://t/*/x/y", "lease://t/ab*", "queue://**"] {
        let e = leases.subscribe(pattern).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{pattern}");
        let e = leases
            .list(pattern)
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{pattern}");
    }
    assert_eq!(h.client.debug_snapshot().await.unwrap().pending, 0);
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_queued_acquire_takes_the_deferred_grant_on_the_same_correlation() {
    let mut h = start().await;
    let c = h.client.clone();
    let task = tokio::spawn(async move {
        c.lease()
            .acquire_wait(ROUTE, "w2", Duration::from_secs(10), Duration::from_secs(7))
            .await
    });
    let r = expect(&mut h.peer, types::LEASE_ACQUIRE).await;
    assert_eq!(
        lease::Acquire::decode(r.payload.clone())
            .unwrap()
            .wait_seconds,
        Some(7)
    );
    h.peer
        .reply(&r, &grant(AcquireKind::Queued, 0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!task.is_finished());
    // The grant: same correlation id, the final token.
    h.peer
        .reply(&r, &grant(AcquireKind::Acquired, 77))
        .await
        .unwrap();
    let lease = task.await.unwrap().unwrap();
    assert_eq!(lease.fencing_token(), 77);
    assert_eq!(h.client.debug_snapshot().await.unwrap().pending, 0);
    drop(lease);
    let r = expect(&mut h.peer, types::LEASE_RELEASE).await;
    h.peer.reply(&r, &[0]).await.unwrap();

    // A wait that runs out is the broker's 5006.
    let c = h.client.clone();
    let task = tokio::spawn(async move {
        c.lease()
            .acquire_wait(
                "lease://t/jobs/other",
                "w2",
                Duration::from_secs(10),
                Duration::from_secs(1),
            )
            .await
    });
    let r = expect(&mut h.peer, types::LEASE_ACQUIRE).await;
    h.peer
        .reply(&r, &grant(AcquireKind::AlreadyQueued, 0))
        .await
        .unwrap();
    h.peer
        .reply(&r, &error(codes::LEASE_WAIT_TIMEOUT))
        .await
        .unwrap();
    let e = task.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(codes::LEASE_WAIT_TIMEOUT));
    assert!(!e.maybe_applied());
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_grant_that_arrives_as_the_wait_is_cancelled_is_released() {
    let mut h = start().await;
    let leases = h.client.lease();
    let mut acquiring =
        Box::pin(leases.acquire_wait(ROUTE, "w3", Duration::from_secs(10), Duration::from_secs(5)));
    assert!(
        acquiring.as_mut().now_or_never().is_none(),
        "submitted, waiting"
    );
    let r = expect(&mut h.peer, types::LEASE_ACQUIRE).await;
    h.peer
        .reply(&r, &grant(AcquireKind::Queued, 0))
        .await
        .unwrap();
    h.peer
        .reply(&r, &grant(AcquireKind::Acquired, 9))
        .await
        .unwrap();
    // The grant has been handed over (the exchange is finished) …
    tokio::time::timeout(Duration::from_secs(5), async {
        while h.client.debug_snapshot().await.unwrap().pending != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    // … but nobody reads it: the caller gave up.
    drop(acquiring);
    let r = expect(&mut h.peer, types::LEASE_RELEASE).await;
    let release = lease::Release::decode(r.payload.clone()).unwrap();
    assert_eq!((&*release.owner, release.fencing_token), ("w3", 9));
    h.peer.reply(&r, &[0]).await.unwrap();
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_queued_answer_to_an_immediate_acquire_is_5001() {
    let mut h = start().await;
    let c = h.client.clone();
    let task =
        tokio::spawn(async move { c.lease().acquire(ROUTE, "w", Duration::from_secs(3)).await });
    let r = expect(&mut h.peer, types::LEASE_ACQUIRE).await;
    h.peer
        .reply(&r, &grant(AcquireKind::Queued, 0))
        .await
        .unwrap();
    let e = task.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(codes::LEASE_HELD));
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn renew_keeps_the_fencing_token_and_refusals_end_the_handle() {
    let mut h = start().await;
    let mut lease = acquired(&mut h, Duration::from_secs(30), 5).await;
    let c = tokio::spawn(async move {
        lease.renew(Duration::from_secs(60)).await.unwrap();
        assert_eq!(lease.ttl(), Duration::from_secs(60));
        let e = lease.renew(Duration::from_secs(60)).await.unwrap_err();
        assert_eq!(e.code(), Some(codes::LEASE_INVALID_FENCE));
        lease
    });
    let r = expect(&mut h.peer, types::LEASE_RENEW).await;
    let renew = lease::Renew::decode(r.payload.clone()).unwrap();
    assert_eq!((renew.fencing_token, renew.ttl_secs), (5, 60));
    h.peer
        .reply(&r, &ok(&lease::RenewOk { fencing_token: 5 }))
        .await
        .unwrap();
    let r = expect(&mut h.peer, types::LEASE_RENEW).await;
    h.peer
        .reply(&r, &error(codes::LEASE_INVALID_FENCE))
        .await
        .unwrap();
    let lease = c.await.unwrap();
    assert_eq!(lease.fencing_token(), 5);
    // Fenced: not ours, nothing to release on drop.
    drop(lease);
    nothing_more(&mut h.peer).await;
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_guard_renews_every_third_of_the_ttl_and_releases() {
    let mut h = start().await;
    let lease = acquired(&mut h, Duration::from_secs(9), 12).await;
    let guard = lease.into_guard().unwrap();
    assert_eq!(guard.fencing_token(), 12);
    let start = tokio::time::Instant::now();
    for n in 1..=3u32 {
        let r = expect(&mut h.peer, types::LEASE_RENEW).await;
        assert_eq!(start.elapsed().as_secs(), u64::from(3 * n));
        let renew = lease::Renew::decode(r.payload.clone()).unwrap();
        assert_eq!((renew.fencing_token, renew.ttl_secs), (12, 9));
        h.peer
            .reply(&r, &ok(&lease::RenewOk { fencing_token: 12 }))
            .await
            .unwrap();
    }
    assert!(guard.is_held());
    let own = guard.ownership();
    let c = tokio::spawn(guard.release());
    let r = expect(&mut h.peer, types::LEASE_RELEASE).await;
    h.peer.reply(&r, &[0]).await.unwrap();
    c.await.unwrap().unwrap();
    // Views of the guard see ownership end, on purpose.
    assert!(matches!(own.lost().await.reason(), LossReason::Released));
    assert!(own.cancellation_token().is_cancelled() && !own.is_held());
    nothing_more(&mut h.peer).await;
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_guard_of_an_already_held_lease_renews_at_once() {
    let mut h = start().await;
    let c = h.client.clone();
    let task = tokio::spawn(async move {
        c.lease()
            .acquire(ROUTE, "w1", Duration::from_secs(30))
            .await
    });
    let r = expect(&mut h.peer, types::LEASE_ACQUIRE).await;
    h.peer
        .reply(&r, &grant(AcquireKind::AlreadyHeld, 4))
        .await
        .unwrap();
    let lease = task.await.unwrap().unwrap();
    assert!(lease.already_held());
    let start = tokio::time::Instant::now();
    let guard = lease.into_guard().unwrap();
    let r = expect(&mut h.peer, types::LEASE_RENEW).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    h.peer
        .reply(&r, &ok(&lease::RenewOk { fencing_token: 4 }))
        .await
        .unwrap();
    drop(guard);
    expect(&mut h.peer, types::LEASE_RELEASE).await;
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_renewal_is_ownership_lost_and_cancels_the_work() {
    let mut h = start().await;
    let lease = acquired(&mut h, Duration::from_secs(3), 8).await;
    let cancelled = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let (c, d) = (cancelled.clone(), dropped.clone());
    let run = tokio::spawn(lease.run(move |own| async move {
        let token = own.cancellation_token();
        tokio::spawn(async move {
            token.cancelled().await;
            c.store(true, Ordering::SeqCst);
        });
        let _flag = SetOnDrop(d);
        std::future::pending::<()>().await
    }));
    let r = expect(&mut h.peer, types::LEASE_RENEW).await;
    h.peer
        .reply(&r, &error(codes::LEASE_EXPIRED))
        .await
        .unwrap();
    let lost = match run.await.unwrap() {
        Err(WithLeaseError::Lost(lost)) => lost,
        other => panic!("{other:?}"),
    };
    assert_eq!((lost.route(), lost.fencing_token()), (ROUTE, 8));
    match lost.reason() {
        LossReason::RenewalFailed(e) => assert_eq!(e.code(), Some(codes::LEASE_EXPIRED)),
        other => panic!("{other:?}"),
    }
    assert!(dropped.load(Ordering::SeqCst), "the work was dropped");
    tokio::task::yield_now().await;
    assert!(
        cancelled.load(Ordering::SeqCst),
        "spawned work saw the token"
    );
    // Not ours any more: no RELEASE.
    nothing_more(&mut h.peer).await;
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn transient_renewal_failures_are_retried_until_the_ttl_runs_out() {
    let mut h = start().await;
    let lease = acquired(&mut h, Duration::from_secs(6), 3).await;
    let guard = lease.into_guard().unwrap();
    // The broker is busy twice, then answers: still held.
    for _ in 0..2 {
        let r = expect(&mut h.peer, types::LEASE_RENEW).await;
        h.peer
            .reply(&r, &error(codes::LEASE_QUEUE_FULL))
            .await
            .unwrap();
    }
    let r = expect(&mut h.peer, types::LEASE_RENEW).await;
    h.peer
        .reply(&r, &ok(&lease::RenewOk { fencing_token: 3 }))
        .await
        .unwrap();
    assert!(guard.is_held());
    // Then it stops answering at all: lost before the TTL is over.
    let start = tokio::time::Instant::now();
    let lost = guard.lost().await;
    assert!(
        matches!(lost.reason(), LossReason::RenewalFailed(e) if e.kind() == ErrorKind::Timeout)
    );
    assert!(
        start.elapsed() <= Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert!(!guard.is_held());
    let e = guard.release().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_is_ownership_lost_at_once_and_nothing_is_released() {
    let mut h = start().await;
    let lease = acquired(&mut h, Duration::from_secs(30), 21).await;
    let guard = lease.into_guard().unwrap();
    let token = guard.cancellation_token();
    // The connection drops long before the first renewal.
    let Harness {
        client,
        peer,
        mut listener,
    } = h;
    peer.close().await;
    let lost = tokio::time::timeout(Duration::from_secs(1), guard.lost())
        .await
        .expect("loss noticed at once");
    assert!(matches!(lost.reason(), LossReason::SessionEnded), "{lost}");
    assert!(token.is_cancelled());
    let e = lost.to_error();
    assert_eq!(e.kind(), ErrorKind::Stale);
    // The new session must not see a RELEASE (or RENEW) of the old lease.
    let mut peer = Peer::new(listener.accept().await.unwrap());
    peer.handshake(CAP_CORRELATION).await.unwrap();
    drop(guard);
    nothing_more(&mut peer).await;
    client.close().await;
}

#[tokio::test(start_paused = true)]
async fn with_lease_returns_the_output_and_releases() {
    let mut h = start().await;
    let c = h.client.clone();
    let task = tokio::spawn(async move {
        c.lease()
            .with_lease(ROUTE, "w1", Duration::from_secs(30), |own| async move {
                assert!(own.is_held());
                own.fencing_token() * 2
            })
            .await
    });
    let r = expect(&mut h.peer, types::LEASE_ACQUIRE).await;
    h.peer
        .reply(&r, &grant(AcquireKind::Acquired, 50))
        .await
        .unwrap();
    let r = expect(&mut h.peer, types::LEASE_RELEASE).await;
    h.peer.reply(&r, &[0]).await.unwrap();
    assert_eq!(task.await.unwrap().unwrap(), 100);

    // Held elsewhere: the work never runs.
    let c = h.client.clone();
    let task = tokio::spawn(async move {
        c.lease()
            .with_lease(ROUTE, "w1", Duration::from_secs(30), |_| async {
                unreachable!()
            })
            .await
    });
    let r = expect(&mut h.peer, types::LEASE_ACQUIRE).await;
    h.peer.reply(&r, &error(codes::LEASE_HELD)).await.unwrap();
    match task.await.unwrap() {
        Err(WithLeaseError::Acquire(e)) => {
            assert_eq!(e.code(), Some(codes::LEASE_HELD));
            assert!(e.is_retryable());
        }
        other => panic!("{other:?}"),
    }
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn list_echoes_the_cursor_verbatim_and_query_reads_both_shapes() {
    let mut h = start().await;
    let c = h.client.clone();
    let task = tokio::spawn(async move {
        let leases = c.lease();
        let all: Vec<_> = leases
            .list("lease://t/**")
            .page_size(2)
            .try_collect()
            .await
            .unwrap();
        let free = leases.query(ROUTE).await.unwrap();
        let held = leases.query(ROUTE).await.unwrap();
        (all, free, held)
    });
    let item = |n: u32| lease::LeaseInfo {
        route: format!("lease://t/jobs/{n}").into(),
        owner: "w".into(),
        holder_incarnation: 1,
        acquired_at: "2026-01-01T00:00:00Z".into(),
        expires_in_secs: 9,
        renewals: n,
    };
    let cursor = WireCursor {
        snapshot_id: 0xDEAD_BEEF_0000_0001,
        offset: 2,
    };
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    let first = lease::List::decode(r.payload.clone()).unwrap();
    assert_eq!((first.cursor, first.limit), (None, 2));
    h.peer
        .reply(
            &r,
            &ok(&ListOk {
                items: vec![item(0), item(1)],
                next: Some(cursor),
            }),
        )
        .await
        .unwrap();
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    let second = lease::List::decode(r.payload.clone()).unwrap();
    assert_eq!(second.cursor, Some(cursor));
    assert_eq!(&*second.pattern, "lease://t/**");
    h.peer
        .reply(
            &r,
            &ok(&ListOk {
                items: vec![item(2)],
                next: None,
            }),
        )
        .await
        .unwrap();
    let r = expect(&mut h.peer, types::LEASE_QUERY).await;
    h.peer
        .reply(
            &r,
            &ok(&lease::QueryOk {
                holder: None,
                waiters: 0,
            }),
        )
        .await
        .unwrap();
    let r = expect(&mut h.peer, types::LEASE_QUERY).await;
    h.peer
        .reply(
            &r,
            &ok(&lease::QueryOk {
                holder: Some(lease::Holder {
                    owner: "w9".into(),
                    ttl_remaining_secs: 4,
                }),
                waiters: 3,
            }),
        )
        .await
        .unwrap();
    let (all, free, held) = task.await.unwrap();
    let renewals: Vec<u32> = all.iter().map(|l| l.renewals()).collect();
    assert_eq!(renewals, [0, 1, 2]);
    assert_eq!(all[2].route(), "lease://t/jobs/2");
    assert!(free.holder().is_none() && !free.is_held());
    let holder = held.holder().unwrap();
    assert_eq!(
        (holder.owner(), holder.ttl_remaining(), held.waiters()),
        ("w9", Duration::from_secs(4), 3)
    );
    h.client.close().await;
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_view_overrides_the_read_retry_policy() {
    let mut h = start().await;
    let free = ok(&lease::QueryOk {
        holder: None,
        waiters: 0,
    });
    // Four attempts 50 ms apart instead of the client's three.
    let leases = h.client.lease().with_retry(crate::RetryPolicy {
        attempts: 4,
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(50),
        jitter: crate::Jitter::None,
    });
    let task = tokio::spawn(async move { leases.query(ROUTE).await });
    let mut last = None;
    for _ in 0..3 {
        let r = expect(&mut h.peer, types::LEASE_QUERY).await;
        let now = tokio::time::Instant::now();
        if let Some(at) = last {
            assert_eq!(now - at, Duration::from_millis(50));
        }
        last = Some(now);
        h.peer
            .reply(&r, &error(codes::LEASE_QUEUE_FULL))
            .await
            .unwrap();
    }
    let r = expect(&mut h.peer, types::LEASE_QUERY).await;
    h.peer.reply(&r, &free).await.unwrap();
    assert!(task.await.unwrap().unwrap().holder().is_none());

    // `none()`: the first busy answer is the caller's.
    let leases = h.client.lease().with_retry(crate::RetryPolicy::none());
    let task = tokio::spawn(async move { leases.query(ROUTE).await });
    let r = expect(&mut h.peer, types::LEASE_QUERY).await;
    h.peer
        .reply(&r, &error(codes::LEASE_QUEUE_FULL))
        .await
        .unwrap();
    let e = task.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(codes::LEASE_QUEUE_FULL));
    nothing_more(&mut h.peer).await;
    h.client.close().await;
}
