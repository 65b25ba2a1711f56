//! Lease against the embedded broker (or an external one, see
//! `fitz_testkit::fixture`), over TCP and WebSocket, directly and through
//! the disconnect proxy.

use std::time::Duration;

use fitz::lease::{LossReason, WithLeaseError};
use fitz::{Client, ErrorKind, codes};
use fitz_tests::{
    Brokers, BrokersExt, Timed, Transport, WAIT, broker_code as code, connected, connected_with,
    realm, reconnected, wait_event,
};
use futures_util::{StreamExt, TryStreamExt};

const TTL: Duration = Duration::from_secs(30);

/// Waits until `route` has `n` queued acquirers (the broker's QUERY says so).
async fn waiters(client: &Client, route: &str, n: u32) {
    tokio::time::timeout(WAIT, async {
        while client.lease().query(route).await.unwrap().waiters() != n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{route} never had {n} waiters"));
}

async fn next_change(s: &mut fitz::lease::LeaseSubscription) -> String {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("no change within 10 s")
        .expect("subscription ended")
        .expect("subscription error")
        .route()
        .to_owned()
}

#[tokio::test]
async fn acquire_renew_release_and_query_over_tcp_and_websocket() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let client = connected(url).await;
        let other = connected(url).await;
        let leases = client.lease();
        let route = format!("lease://{}/basic/r", realm("lease"));
        let status = leases.query(&route).await.unwrap();
        assert!(!status.is_held() && status.holder().is_none());

        let mut lease = leases.acquire(&route, "alice", TTL).await.unwrap();
        assert_eq!((lease.route(), lease.owner()), (route.as_str(), "alice"));
        assert!(!lease.already_held() && lease.is_current());
        let token = lease.fencing_token();
        let status = leases.query(&route).await.unwrap();
        let holder = status.holder().unwrap();
        assert_eq!(holder.owner(), "alice");
        assert!(
            holder.ttl_remaining() <= TTL && holder.ttl_remaining() >= TTL - Duration::from_secs(2)
        );
        assert_eq!(status.waiters(), 0);

        // Someone else: 5001, retryable.
        let e = other.lease().acquire(&route, "bob", TTL).await.unwrap_err();
        assert_eq!(code(&e), Some(codes::LEASE_HELD));
        assert!(e.is_retryable() && !e.maybe_applied());

        lease.renew(Duration::from_secs(60)).await.unwrap();
        assert_eq!(lease.fencing_token(), token, "renewal keeps the token");
        assert_eq!(lease.ttl(), Duration::from_secs(60));
        let ttl = leases
            .query(&route)
            .await
            .unwrap()
            .holder()
            .unwrap()
            .ttl_remaining();
        assert!(ttl > TTL, "{ttl:?}");

        // The same owner again: the same grant, not a new one; releasing
        // either handle releases it.
        let again = leases.acquire(&route, "alice", TTL).await.unwrap();
        assert!(again.already_held());
        assert_eq!(again.fencing_token(), token);
        again.release().await.unwrap();
        assert!(!leases.query(&route).await.unwrap().is_held());
        let e = lease.release().await.unwrap_err();
        assert_eq!(code(&e), Some(codes::LEASE_NOT_FOUND));

        // A new owner gets a larger token.
        let bobs = other.lease().acquire(&route, "bob", TTL).await.unwrap();
        assert!(bobs.fencing_token() > token);
        bobs.release().await.unwrap();
        other.close().await;
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_stale_fencing_token_is_refused_with_5002() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let client = connected(brokers.anon_url(t)).await;
        let leases = client.lease();
        let route = format!("lease://{}/fence/r", realm("lease"));
        // Two handles on one grant; one releases it, and the same owner
        // acquires again: a new grant with a larger token.
        let mut old = leases.acquire(&route, "alice", TTL).await.unwrap();
        let twin = leases.acquire(&route, "alice", TTL).await.unwrap();
        assert!(twin.already_held());
        twin.release().await.unwrap();
        let new = leases.acquire(&route, "alice", TTL).await.unwrap();
        assert!(new.fencing_token() > old.fencing_token());
        // The old handle's token is not the holder's: 5002, not retryable,
        // and the broker changed nothing.
        let e = old.renew(TTL).await.unwrap_err();
        assert_eq!(code(&e), Some(codes::LEASE_INVALID_FENCE), "{e}");
        assert!(!e.is_retryable() && !e.maybe_applied());
        let e = old.release().await.unwrap_err();
        assert_eq!(code(&e), Some(codes::LEASE_INVALID_FENCE), "{e}");
        let status = leases.query(&route).await.unwrap();
        assert_eq!(status.holder().map(|h| h.owner()), Some("alice"));
        new.release().await.unwrap();
        assert!(!leases.query(&route).await.unwrap().is_held());
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_contended_acquire_gets_the_deferred_grant_and_tokens_keep_growing() {
    let brokers = Brokers::start().await.unwrap();
    let owned = format!("lease://{}/contended/r", realm("lease"));
    let route = owned.as_str();
    let holder = connected(&brokers.anon_tcp).await;
    let first = holder.lease().acquire(route, "a", TTL).await.unwrap();
    let mut tokens = vec![first.fencing_token()];

    // Two waiters, over both transports, granted in FIFO order.
    let b = connected(&brokers.anon_ws).await;
    let c = connected(&brokers.anon_tcp).await;
    let (lb, r) = (b.lease(), owned.clone());
    let waiting_b =
        tokio::spawn(async move { lb.acquire_wait(&r, "b", TTL, Duration::from_secs(20)).await });
    waiters(&holder, route, 1).await;
    let (lc, r) = (c.lease(), owned.clone());
    let waiting_c =
        tokio::spawn(async move { lc.acquire_wait(&r, "c", TTL, Duration::from_secs(20)).await });
    waiters(&holder, route, 2).await;
    assert!(!waiting_b.is_finished());

    first.release().await.unwrap();
    let lease_b = tokio::time::timeout(WAIT, waiting_b)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(lease_b.owner(), "b");
    tokens.push(lease_b.fencing_token());
    assert!(!waiting_c.is_finished());
    // Dropping the handle releases it: the next waiter is granted.
    drop(lease_b);
    let lease_c = tokio::time::timeout(WAIT, waiting_c)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokens.push(lease_c.fencing_token());
    lease_c.release().await.unwrap();
    let last = holder.lease().acquire(route, "a", TTL).await.unwrap();
    tokens.push(last.fencing_token());
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    last.release().await.unwrap();
    for client in [holder, b, c] {
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_wait_that_runs_out_is_5006() {
    let Some(broker) = Timed::start("a lease wait and a TTL run out on broker time").await else {
        return;
    };
    let owned = format!("lease://{}/timeout/r", realm("lease"));
    let route = owned.as_str();
    let holder = connected(&broker.tcp).await;
    let lease = holder.lease().acquire(route, "a", TTL).await.unwrap();
    let waiter = connected(&broker.ws).await;
    let (lw, r) = (waiter.lease(), owned.clone());
    let waiting =
        tokio::spawn(async move { lw.acquire_wait(&r, "b", TTL, Duration::from_secs(2)).await });
    waiters(&holder, route, 1).await;
    broker.clock.advance(Duration::from_secs(3)).await;
    let e = tokio::time::timeout(WAIT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(code(&e), Some(codes::LEASE_WAIT_TIMEOUT));
    assert!(!e.maybe_applied());
    assert_eq!(holder.lease().query(route).await.unwrap().waiters(), 0);
    // The holder's TTL runs out on the same clock: the lease is free.
    broker.clock.advance(TTL).await;
    let e = lease.release().await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            Some(codes::LEASE_EXPIRED | codes::LEASE_NOT_FOUND)
        ),
        "{e}"
    );
    assert!(!holder.lease().query(route).await.unwrap().is_held());
    holder.close().await;
    waiter.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn list_pages_one_snapshot() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let leases = client.lease();
    let test = realm("lease");
    let mut held = Vec::new();
    for i in 0..7 {
        let route = format!("lease://{test}/list/l{i}");
        held.push(leases.acquire(&route, &format!("o{i}"), TTL).await.unwrap());
    }
    let all: Vec<_> = leases
        .list(&format!("lease://{test}/list/*"))
        .page_size(3)
        .try_collect()
        .await
        .unwrap();
    let routes: Vec<&str> = all.iter().map(|l| l.route()).collect();
    let want: Vec<String> = (0..7)
        .map(|i| format!("lease://{test}/list/l{i}"))
        .collect();
    assert_eq!(routes, want);
    assert_eq!(all[3].owner(), "o3");
    assert!(all[0].expires_in() <= TTL);
    assert!(!all[0].acquired_at().is_empty());

    // By hand: the snapshot does not change under the pages.
    let wide = format!("lease://{test}/**");
    let first = leases.list_page(&wide, None, 4).await.unwrap();
    assert_eq!(first.leases().len(), 4);
    let cursor = first.next_cursor().unwrap().clone();
    held.pop().unwrap().release().await.unwrap();
    let e = leases
        .list_page(&format!("lease://{test}/list/*"), Some(&cursor), 4)
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidArgument,
        "another pattern's cursor"
    );
    let second = leases.list_page(&wide, Some(&cursor), 4).await.unwrap();
    assert_eq!(
        second.leases().len(),
        3,
        "released after the snapshot: still listed"
    );
    assert!(second.next_cursor().is_none());
    // A finished snapshot's cursor is refused by the broker.
    let e = leases.list_page(&wide, Some(&cursor), 4).await.unwrap_err();
    assert_eq!(code(&e), Some(codes::LEASE_INVALID_CURSOR));

    // An exact route lists zero or one lease.
    let one: Vec<_> = leases
        .list(&format!("lease://{test}/list/l1"))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let none: Vec<_> = leases
        .list(&format!("lease://{test}/list/l6"))
        .try_collect()
        .await
        .unwrap();
    assert!(none.is_empty());
    for l in held {
        l.release().await.unwrap();
    }
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_subscription_is_restored_on_the_same_handle_after_a_cut() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let watcher = connected(&url).await;
        let actor = connected(&brokers.anon_tcp).await;
        let test = realm("lease");
        let (a, b) = (
            format!("lease://{test}/sub/a"),
            format!("lease://{test}/sub/b"),
        );
        let pattern = format!("lease://{test}/sub/*");
        let mut sub = watcher.lease().subscribe(&pattern).await.unwrap();
        assert_eq!(sub.pattern(), pattern);

        let mut lease = actor.lease().acquire(&a, "x", TTL).await.unwrap();
        assert_eq!(next_change(&mut sub).await, a);
        // Renewals are not changes; the release is.
        lease.renew(TTL).await.unwrap();
        lease.release().await.unwrap();
        assert_eq!(next_change(&mut sub).await, a);

        let mut events = watcher.events();
        proxy.cut_all();
        assert_eq!(fitz_tests::restored(&mut events).await, 1);
        let lease = actor.lease().acquire(&b, "x", TTL).await.unwrap();
        assert_eq!(next_change(&mut sub).await, b);
        lease.release().await.unwrap();
        assert_eq!(next_change(&mut sub).await, b);
        sub.unsubscribe().await.unwrap();
        actor.close().await;
        watcher.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_lease_is_stale_after_a_reconnect_and_the_broker_freed_it() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let client = connected(&url).await;
        let other = connected(&brokers.anon_tcp).await;
        let owned = format!("lease://{}/stale/r", realm("lease"));
        let route = owned.as_str();
        let mut lease = client.lease().acquire(route, "a", TTL).await.unwrap();
        let token = lease.fencing_token();
        let (lo, r) = (other.lease(), owned.clone());
        let waiting =
            tokio::spawn(
                async move { lo.acquire_wait(&r, "b", TTL, Duration::from_secs(20)).await },
            );
        waiters(&other, route, 1).await;
        let mut events = client.events();
        proxy.cut_all();
        // The broker released it with the session and granted the waiter.
        let next = tokio::time::timeout(WAIT, waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(next.fencing_token() > token);
        wait_event(&mut events, reconnected).await;
        assert!(!lease.is_current());
        let e = lease.renew(TTL).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Stale);
        let e = lease.release().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Stale);
        next.release().await.unwrap();
        other.close().await;
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_managed_lease_renews_and_reports_loss_when_the_connection_is_cut() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let client = connected(&url).await;
        let observer = connected(&brokers.anon_tcp).await;
        let route = &format!("lease://{}/managed/r", realm("lease"));
        // TTL 1 s: renewed every ~333 ms, so it outlives its TTL only if
        // renewals work.
        let guard = client
            .lease()
            .acquire(route, "m", Duration::from_secs(1))
            .await
            .unwrap()
            .into_guard()
            .unwrap();
        let token = guard.fencing_token();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(guard.is_held());
        let listed: Vec<_> = observer.lease().list(route).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].renewals() >= 4, "{listed:?}");
        assert_eq!(guard.fencing_token(), token);

        let work = guard.cancellation_token();
        proxy.cut_all();
        let lost = tokio::time::timeout(WAIT, guard.lost()).await.unwrap();
        assert!(matches!(lost.reason(), LossReason::SessionEnded), "{lost}");
        assert_eq!(lost.fencing_token(), token);
        assert!(work.is_cancelled());
        // The broker agrees: free, or about to be.
        let after = observer
            .lease()
            .acquire_wait(route, "o", TTL, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(after.fencing_token() > token);
        after.release().await.unwrap();
        drop(guard);
        observer.close().await;
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn with_lease_runs_work_and_cancels_it_on_loss() {
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let client = connected(&url).await;
    let owned = format!("lease://{}/with/r", realm("lease"));
    let route = owned.as_str();

    let token = client
        .lease()
        .with_lease(route, "w", TTL, |own| async move { own.fencing_token() })
        .await
        .unwrap();
    assert!(token > 0);
    assert!(
        !client.lease().query(route).await.unwrap().is_held(),
        "released"
    );

    // Held elsewhere: the work never starts.
    let other = connected(&brokers.anon_tcp).await;
    let held = other.lease().acquire(route, "x", TTL).await.unwrap();
    let out = client
        .lease()
        .with_lease(route, "w", TTL, |_| async { "ran without the lease" })
        .await;
    match out {
        Err(WithLeaseError::Acquire(e)) => assert_eq!(code(&e), Some(codes::LEASE_HELD)),
        other => panic!("{other:?}"),
    }
    held.release().await.unwrap();

    // Lost midway: the work is cancelled and the loss is the outcome.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let running = tokio::spawn({
        let (leases, r) = (client.lease(), owned.clone());
        async move {
            leases
                .with_lease(&r, "w", TTL, |own| async move {
                    let _ = started_tx.send(own.fencing_token());
                    std::future::pending::<()>().await
                })
                .await
        }
    });
    let admitted = started_rx.await.unwrap();
    proxy.cut_all();
    match tokio::time::timeout(WAIT, running).await.unwrap().unwrap() {
        Err(WithLeaseError::Lost(lost)) => {
            assert!(matches!(lost.reason(), LossReason::SessionEnded));
            assert_eq!(lost.fencing_token(), admitted);
        }
        other => panic!("{other:?}"),
    }
    other.close().await;
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_scoped_token_is_refused_with_5009() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (scoped, other) = (realm("scoped"), realm("other"));
        let token = brokers.scoped_token(&[&format!("lease://{scoped}/**#*")]);
        let client = connected_with(brokers.auth_url(t), token).await;
        let leases = client.lease();
        let lease = leases
            .acquire(&format!("lease://{scoped}/a/r"), "me", TTL)
            .await
            .unwrap();
        lease.release().await.unwrap();
        let denied = format!("lease://{other}/a/r");
        let e = leases.acquire(&denied, "me", TTL).await.unwrap_err();
        assert_eq!(code(&e), Some(codes::LEASE_UNAUTHORIZED));
        let e = leases.query(&denied).await.unwrap_err();
        assert_eq!(code(&e), Some(codes::LEASE_UNAUTHORIZED));
        let wide = format!("lease://{other}/**");
        let e = leases.subscribe(&wide).await.unwrap_err();
        assert_eq!(code(&e), Some(codes::LEASE_UNAUTHORIZED));
        let e = leases
            .list(&wide)
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(codes::LEASE_UNAUTHORIZED));
        client.close().await;
    }
    brokers.shutdown().await;
}
