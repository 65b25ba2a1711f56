//! Lease through the wire: acquire/renew/release/query, fencing tokens,
//! FIFO waiters and their deferred grants, wait timeouts, expiry and
//! disconnect hand-over on the manual clock, watches, LIST snapshots,
//! errors and permissions.

use std::time::{Duration, SystemTime};

use crate::support::{Kind, RawClient, code};
use bytes::{Bytes, BytesMut};
use fitz_broker::{AuthConfig, Broker, Clock};
use fitz_protocol::lease::{
    self, AcquireKind, AcquireOk, ListCursor, ListOk, Notify, QueryOk, RenewOk, SubscribeReply,
};
use fitz_protocol::{Message, WireError, codes, decode_reply, types};

both_transports!(
    acquire_renew_query_release,
    fencing_tokens_strictly_increase,
    fifo_waiters_get_deferred_grants,
    a_wait_that_runs_out_gets_5006,
    waiter_queue_is_capped,
    expiry_hands_over_to_the_next_waiter,
    owner_disconnect_hands_over,
    renew_and_release_errors,
    list_pages_a_stable_snapshot,
    list_clamps_and_fields,
    watches_fire_on_exactly_the_right_events,
    bad_requests,
    unauthorized_requests_keep_the_session,
    route_families_are_isolated,
);

const L: &str = "lease://realm/area/resource";

fn manual() -> Clock {
    Clock::manual(SystemTime::now())
}

async fn broker_with(clock: &Clock) -> Broker {
    Broker::builder()
        .clock(clock.clone())
        .start()
        .await
        .unwrap()
}

fn acq(route: &str, owner: &str, ttl: u64, wait: u32) -> lease::Acquire {
    lease::Acquire {
        route: route.into(),
        owner: owner.into(),
        ttl_secs: ttl,
        wait_seconds: Some(wait),
    }
}

fn renew(route: &str, owner: &str, token: u64, ttl: u64) -> lease::Renew {
    lease::Renew {
        route: route.into(),
        owner: owner.into(),
        fencing_token: token,
        ttl_secs: ttl,
    }
}

fn release(route: &str, owner: &str, token: u64) -> lease::Release {
    lease::Release {
        route: route.into(),
        owner: owner.into(),
        fencing_token: token,
    }
}

fn list(pattern: &str, cursor: Option<ListCursor>, limit: u32) -> lease::List {
    lease::List {
        pattern: pattern.into(),
        cursor,
        limit,
    }
}

fn acquired(payload: Bytes) -> AcquireOk {
    decode_reply::<AcquireOk>(payload)
        .unwrap()
        .unwrap_or_else(|e| panic!("ACQUIRE failed: {e:?}"))
}

/// Acquires a free lease; returns its token.
async fn take(c: &mut RawClient, route: &str, owner: &str, ttl: u64) -> u64 {
    let ok = acquired(c.call(&acq(route, owner, ttl, 0)).await);
    assert_eq!(ok.kind, AcquireKind::Acquired);
    ok.fencing_token
}

async fn query(c: &mut RawClient, route: &str) -> QueryOk {
    c.ok::<_, QueryOk>(&lease::Query::new(route)).await
}

/// Waits until the broker handled everything sent before on this session.
async fn sync(c: &mut RawClient) {
    c.ok::<_, lease::UnsubscribeOk>(&lease::Unsubscribe::new("lease://sync/sync/sync"))
        .await;
}

async fn subscribe(c: &mut RawClient, pattern: &str) -> u64 {
    c.ok::<_, SubscribeReply>(&lease::Subscribe::new(pattern))
        .await
        .sub_id
}

async fn next_notify(c: &mut RawClient) -> Notify {
    let l = c.next_of_type(types::LEASE_NOTIFY).await;
    assert_eq!(l.correlation, None, "notifications are never labelled");
    Notify::decode(l.record.payload).unwrap()
}

/// The next `n` notifications as (sub id, route), sorted.
async fn notifies(c: &mut RawClient, n: usize) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let x = next_notify(c).await;
        got.push((x.sub_id, x.route.to_string()));
    }
    got.sort();
    got
}

async fn acquire_renew_query_release(kind: Kind) {
    let clock = manual();
    let broker = broker_with(&clock).await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b = RawClient::anon(&broker, kind).await;
    let raw = a.call(&acq(L, "worker-1", 30, 0)).await;
    assert_eq!(
        (raw.len(), &raw[..2]),
        (10, &[0u8, 0][..]),
        "[0][0][u64 token]"
    );
    let token = u64::from_be_bytes(raw[2..].try_into().unwrap());
    // V65 layout: [0][1][str owner][u64 ttl][u32 waiters].
    let raw = b.call(&lease::Query::new(L)).await;
    assert_eq!(
        &raw[..],
        b"\x00\x01\x00\x00\x00\x08worker-1\x00\x00\x00\x00\x00\x00\x00\x1e\x00\x00\x00\x00"
    );
    // The holder's own owner id: same token, TTL not reset.
    clock.advance(Duration::from_secs(10));
    let again = acquired(b.call(&acq(L, "worker-1", 30, 0)).await);
    assert_eq!(
        (again.kind, again.fencing_token),
        (AcquireKind::AlreadyHeld, token)
    );
    assert_eq!(
        query(&mut b, L).await.holder.unwrap().ttl_remaining_secs,
        20
    );
    // V60: another owner without waiting.
    let raw = b.call(&acq(L, "worker-2", 30, 0)).await;
    assert_eq!(
        &raw[..],
        b"\x01\x00\x00\x13\x89\x00\x00\x00\x15HeldByOther: worker-1"
    );
    // RENEW keeps the token and counts the TTL from now.
    let r = a.ok::<_, RenewOk>(&renew(L, "worker-1", token, 30)).await;
    assert_eq!(r.fencing_token, token);
    assert_eq!(
        query(&mut b, L).await.holder.unwrap().ttl_remaining_secs,
        30
    );
    let ack = a.call(&release(L, "worker-1", token)).await;
    assert_eq!(&ack[..], &[0]);
    // V66: free, no waiters.
    assert_eq!(
        &b.call(&lease::Query::new(L)).await[..],
        &[0, 0, 0, 0, 0, 0]
    );
    for e in [
        a.fails(&release(L, "worker-1", token)).await,
        a.fails(&renew(L, "worker-1", token, 30)).await,
    ] {
        assert_eq!(code(&e), codes::LEASE_NOT_FOUND);
    }
    assert_eq!(broker.engines().lease.stats().held, 0);
}

async fn fencing_tokens_strictly_increase(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut tokens = Vec::new();
    for (i, owner) in ["a", "b", "c", "a"].into_iter().enumerate() {
        let mut c = RawClient::anon(&broker, kind).await;
        let route = if i == 2 {
            "lease://realm/area/other"
        } else {
            L
        };
        let t = take(&mut c, route, owner, 30).await;
        c.ok::<_, lease::ReleaseOk>(&release(route, owner, t)).await;
        tokens.push(t);
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
}

/// Leases end with the broker process, but a restarted broker's tokens
/// still exceed every token the earlier one issued: a resource guarded by
/// fencing tokens never takes a new holder for an old one.
#[tokio::test]
async fn fencing_tokens_keep_growing_across_a_restart() {
    let start = SystemTime::now();
    let mut last = 0;
    for restart in 0..3u64 {
        // A second between incarnations, on the broker's clock.
        let clock = Clock::manual(start + Duration::from_secs(restart));
        let broker = broker_with(&clock).await;
        let mut c = RawClient::anon(&broker, Kind::Tcp).await;
        for _ in 0..100 {
            let t = take(&mut c, L, "a", 30).await;
            c.ok::<_, lease::ReleaseOk>(&release(L, "a", t)).await;
            assert!(t > last, "incarnation {restart}: {t} after {last}");
            last = t;
        }
        broker.shutdown().await;
    }
}

async fn fifo_waiters_get_deferred_grants(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    let t1 = take(&mut a, L, "a", 30).await;
    b.send(Some(1001), &acq(L, "b", 30, 10)).await;
    let q = acquired(b.reply_to(1001).await);
    assert_eq!((q.kind, q.fencing_token), (AcquireKind::Queued, 0));
    c.send(Some(1002), &acq(L, "c", 30, 10)).await;
    assert_eq!(acquired(c.reply_to(1002).await).kind, AcquireKind::Queued);
    c.send(Some(1003), &acq(L, "c", 30, 10)).await;
    assert_eq!(
        acquired(c.reply_to(1003).await).kind,
        AcquireKind::AlreadyQueued
    );
    assert_eq!(query(&mut a, L).await.waiters, 2);
    // The release hands the lease to B: a second type-400 record with the
    // same correlation id.
    a.ok::<_, lease::ReleaseOk>(&release(L, "a", t1)).await;
    let g = acquired(b.reply_to(1001).await);
    assert_eq!(g.kind, AcquireKind::Acquired);
    assert!(g.fencing_token > t1);
    c.expect_quiet().await;
    assert_eq!(&*query(&mut a, L).await.holder.unwrap().owner, "b");
    b.ok::<_, lease::ReleaseOk>(&release(L, "b", g.fencing_token))
        .await;
    let g2 = acquired(c.reply_to(1002).await);
    assert_eq!(g2.kind, AcquireKind::Acquired);
    assert!(g2.fencing_token > g.fencing_token);
    c.expect_quiet().await;
    // Without CORRELATE both records arrive unlabelled, Queued first.
    a.send(None, &acq(L, "a", 30, 10)).await;
    let l = a.next_record().await;
    assert_eq!((l.correlation, l.record.ty), (None, types::LEASE_ACQUIRE));
    assert_eq!(acquired(l.record.payload).kind, AcquireKind::Queued);
    c.ok::<_, lease::ReleaseOk>(&release(L, "c", g2.fencing_token))
        .await;
    let l = a.next_record().await;
    assert_eq!((l.correlation, l.record.ty), (None, types::LEASE_ACQUIRE));
    let g3 = acquired(l.record.payload);
    assert_eq!(g3.kind, AcquireKind::Acquired);
    assert!(g3.fencing_token > g2.fencing_token);
}

async fn a_wait_that_runs_out_gets_5006(kind: Kind) {
    let clock = manual();
    let broker = broker_with(&clock).await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b = RawClient::anon(&broker, kind).await;
    let t = take(&mut a, L, "a", 100).await;
    b.send(Some(1001), &acq(L, "b", 30, 3)).await;
    assert_eq!(acquired(b.reply_to(1001).await).kind, AcquireKind::Queued);
    clock.advance(Duration::from_secs(2));
    b.expect_quiet().await;
    clock.advance(Duration::from_secs(1));
    let e = WireError::decode(b.reply_to(1001).await).unwrap();
    assert_eq!(code(&e), codes::LEASE_WAIT_TIMEOUT);
    assert_eq!(query(&mut a, L).await.waiters, 0);
    a.ok::<_, lease::ReleaseOk>(&release(L, "a", t)).await;
    b.expect_quiet().await;
    assert_eq!(query(&mut b, L).await.holder, None);
    assert_eq!(broker.engines().lease.stats(), Default::default());
}

async fn waiter_queue_is_capped(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut w = RawClient::anon(&broker, kind).await;
    take(&mut a, L, "a", 300).await;
    for i in 0..100 {
        w.send(Some(1000 + i), &acq(L, &format!("w{i}"), 30, 30))
            .await;
    }
    sync(&mut w).await;
    assert_eq!(query(&mut a, L).await.waiters, 100);
    let e = w.fails(&acq(L, "w100", 30, 30)).await;
    assert_eq!(code(&e), codes::LEASE_QUEUE_FULL);
    // An owner already waiting is told so even when the queue is full.
    assert_eq!(
        acquired(w.call(&acq(L, "w7", 30, 30)).await).kind,
        AcquireKind::AlreadyQueued
    );
    let e = w.fails(&acq(L, "x", 30, 31)).await;
    assert_eq!(code(&e), codes::LEASE_BAD_REQUEST);
    drop(w);
    broker.wait_for_session_count(1).await;
    assert_eq!(query(&mut a, L).await.waiters, 0);
}

async fn expiry_hands_over_to_the_next_waiter(kind: Kind) {
    let clock = manual();
    let broker = broker_with(&clock).await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b = RawClient::anon(&broker, kind).await;
    let mut w = RawClient::anon(&broker, kind).await;
    let sub = subscribe(&mut w, L).await;
    let t1 = take(&mut a, L, "a", 5).await;
    assert_eq!(notifies(&mut w, 1).await, [(sub, L.to_string())]);
    b.send(Some(1001), &acq(L, "b", 30, 10)).await;
    assert_eq!(acquired(b.reply_to(1001).await).kind, AcquireKind::Queued);
    clock.advance(Duration::from_secs(4));
    b.expect_quiet().await;
    clock.advance(Duration::from_secs(1));
    let g = acquired(b.reply_to(1001).await);
    assert_eq!(g.kind, AcquireKind::Acquired);
    assert!(g.fencing_token > t1);
    // Expiry and grant: two changes of the holder set.
    assert_eq!(
        notifies(&mut w, 2).await,
        [(sub, L.to_string()), (sub, L.to_string())]
    );
    // The old holder is fenced out.
    assert_eq!(
        code(&a.fails(&renew(L, "a", t1, 30)).await),
        codes::LEASE_NOT_FOUND
    );
    assert_eq!(
        code(&a.fails(&release(L, "a", t1)).await),
        codes::LEASE_NOT_FOUND
    );
    // Expiry without waiters frees the lease.
    clock.advance(Duration::from_secs(30));
    assert_eq!(notifies(&mut w, 1).await, [(sub, L.to_string())]);
    assert_eq!(query(&mut a, L).await.holder, None);
    assert_eq!(broker.engines().lease.stats().held, 0);
}

async fn owner_disconnect_hands_over(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    let other = "lease://realm/area/other";
    take(&mut a, L, "a", 300).await;
    let tc = take(&mut c, other, "c", 300).await;
    a.send(Some(1001), &acq(other, "a", 30, 30)).await;
    b.send(Some(1002), &acq(L, "b", 30, 30)).await;
    assert_eq!(acquired(a.reply_to(1001).await).kind, AcquireKind::Queued);
    assert_eq!(acquired(b.reply_to(1002).await).kind, AcquireKind::Queued);
    drop(a);
    let g = acquired(b.reply_to(1002).await);
    assert_eq!(g.kind, AcquireKind::Acquired);
    // A's wait on the other lease ended with its session.
    assert_eq!(query(&mut c, other).await.waiters, 0);
    c.ok::<_, lease::ReleaseOk>(&release(other, "c", tc)).await;
    assert_eq!(query(&mut c, other).await.holder, None);
    assert_eq!(&*query(&mut c, L).await.holder.unwrap().owner, "b");
}

async fn renew_and_release_errors(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let t = take(&mut a, L, "a", 30).await;
    let cases = [
        (
            a.fails(&renew(L, "a", t + 1, 30)).await,
            codes::LEASE_INVALID_FENCE,
        ),
        (
            a.fails(&release(L, "a", t + 1)).await,
            codes::LEASE_INVALID_FENCE,
        ),
        (a.fails(&renew(L, "z", t, 30)).await, codes::LEASE_NOT_FOUND),
        (a.fails(&release(L, "z", t)).await, codes::LEASE_NOT_FOUND),
        (
            a.fails(&renew(L, "a", t, 0)).await,
            codes::LEASE_BAD_REQUEST,
        ),
        (
            a.fails(&renew("lease://realm/area/free", "a", t, 30)).await,
            codes::LEASE_NOT_FOUND,
        ),
        (
            a.fails(&release("lease://realm/area/free", "a", t)).await,
            codes::LEASE_NOT_FOUND,
        ),
    ];
    for (e, want) in cases {
        assert_eq!(code(&e), want, "{e:?}");
    }
    // State unchanged: the holder still renews with its token.
    assert_eq!(
        a.ok::<_, RenewOk>(&renew(L, "a", t, 30))
            .await
            .fencing_token,
        t
    );
}

async fn list_pages_a_stable_snapshot(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut tokens = Vec::new();
    for i in 0..250 {
        tokens.push(take(&mut a, &format!("lease://l/a/r{i:03}"), "o", 300).await);
    }
    take(&mut a, "lease://m/a/x", "o", 300).await;
    let p = "lease://l/**";
    let first = a.ok::<_, ListOk>(&list(p, None, 100)).await;
    assert_eq!(first.items.len(), 100);
    let cur = first.next.expect("more pages");
    assert_eq!(cur.offset, 100);
    // Changes after the first call do not alter the snapshot.
    a.ok::<_, lease::ReleaseOk>(&release("lease://l/a/r150", "o", tokens[150]))
        .await;
    take(&mut a, "lease://l/a/r999", "o", 300).await;
    let e = a
        .fails(&list(p, Some(ListCursor { offset: 101, ..cur }), 100))
        .await;
    assert_eq!(code(&e), codes::LEASE_INVALID_CURSOR);
    let e = a.fails(&list("lease://l/a/*", Some(cur), 100)).await;
    assert_eq!(code(&e), codes::LEASE_INVALID_CURSOR);
    let second = a.ok::<_, ListOk>(&list(p, Some(cur), 100)).await;
    let cur2 = second.next.expect("more pages");
    assert_eq!((cur2.snapshot_id, cur2.offset), (cur.snapshot_id, 200));
    let third = a.ok::<_, ListOk>(&list(p, Some(cur2), 100)).await;
    assert_eq!((third.items.len(), third.next), (50, None));
    let routes: Vec<String> = [first, second, third]
        .iter()
        .flat_map(|pg| pg.items.iter().map(|i| i.route.to_string()))
        .collect();
    let want: Vec<String> = (0..250).map(|i| format!("lease://l/a/r{i:03}")).collect();
    assert_eq!(routes, want);
    // A finished snapshot cannot be continued; neither can an unknown one.
    for c in [
        cur2,
        ListCursor {
            snapshot_id: 999_999,
            offset: 0,
        },
    ] {
        let e = a.fails(&list(p, Some(c), 100)).await;
        assert_eq!(code(&e), codes::LEASE_INVALID_CURSOR);
    }
    // V75: the 5011 error record.
    let raw = a.call(&list(p, Some(cur2), 100)).await;
    assert_eq!(
        &raw[..],
        b"\x01\x00\x00\x13\x93\x00\x00\x00\x1fcursor does not match this scan"
    );
    // A fresh scan sees the changes; limit 0 means 100.
    let fresh = a.ok::<_, ListOk>(&list(p, None, 0)).await;
    assert_eq!(fresh.items.len(), 100);
    assert_ne!(fresh.next.unwrap().snapshot_id, cur.snapshot_id);
    assert_eq!(broker.engines().lease.stats().snapshots, 1);
    // Exact patterns read zero or one lease, without a cursor.
    let one = a.ok::<_, ListOk>(&list("lease://l/a/r001", None, 0)).await;
    assert_eq!((one.items.len(), one.next), (1, None));
    let none = a.ok::<_, ListOk>(&list("lease://l/a/r150", None, 0)).await;
    assert!(none.items.is_empty());
    // V74: a last page without items is [0][u32 0][0].
    assert_eq!(
        &a.call(&list("lease://z/**", None, 0)).await[..],
        &[0, 0, 0, 0, 0, 0]
    );
    for bad in [
        "lease://l/a*",
        "lease://l/a",
        "lease://l//a",
        "kv://**",
        "lease://l/**/**",
    ] {
        let e = a.fails(&list(bad, None, 0)).await;
        assert_eq!(code(&e), codes::LEASE_INVALID_LIST_PATTERN, "{bad}");
    }
    // Snapshots end with their session.
    drop(a);
    broker.wait_for_session_count(0).await;
    assert_eq!(broker.engines().lease.stats().snapshots, 0);
}

async fn list_clamps_and_fields(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b = RawClient::anon(&broker, kind).await;
    // Pipelined acquires (one frame each, replies read afterwards): 520 leases.
    for i in 0..520 {
        a.send(
            Some(5000 + i),
            &acq(&format!("lease://c/a/{i:04}"), "o", 300, 0),
        )
        .await;
    }
    for i in 0..520 {
        assert_eq!(
            acquired(a.reply_to(5000 + i).await).kind,
            AcquireKind::Acquired
        );
    }
    let big = a.ok::<_, ListOk>(&list("lease://c/**", None, 10_000)).await;
    assert_eq!(big.items.len(), 500, "clamped to 500");
    let rest = a
        .ok::<_, ListOk>(&list("lease://c/**", big.next, 10_000))
        .await;
    assert_eq!((rest.items.len(), rest.next), (20, None));
    // Item fields.
    let tb = take(&mut b, "lease://c/b/x", "other", 60).await;
    b.ok::<_, RenewOk>(&renew("lease://c/b/x", "other", tb, 60))
        .await;
    let page = a.ok::<_, ListOk>(&list("lease://c/*/*", None, 500)).await;
    let mine = &page.items[0];
    let exact = a.ok::<_, ListOk>(&list("lease://c/b/x", None, 0)).await;
    let theirs = &exact.items[0];
    assert_eq!((&*mine.owner, mine.renewals), ("o", 0));
    assert_eq!((&*theirs.owner, theirs.renewals), ("other", 1));
    assert!(theirs.expires_in_secs <= 60 && theirs.expires_in_secs >= 58);
    let at = &*theirs.acquired_at;
    assert_eq!(
        (at.len(), &at[4..5], &at[10..11], &at[19..]),
        (20, "-", "T", "Z"),
        "{at}"
    );
    // One incarnation per holder session.
    assert!(
        page.items
            .iter()
            .all(|i| i.holder_incarnation == mine.holder_incarnation)
    );
    assert_ne!(theirs.holder_incarnation, mine.holder_incarnation);
}

async fn watches_fire_on_exactly_the_right_events(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b = RawClient::anon(&broker, kind).await;
    let x = "lease://w/a/x";
    let raw = w.call(&lease::Subscribe::new("lease://w/*/x")).await;
    assert_eq!(raw.len(), 9, "[0][u64 id], no flag");
    let wild = u64::from_be_bytes(raw[1..].try_into().unwrap());
    let exact = subscribe(&mut w, x).await;
    assert_eq!(subscribe(&mut w, x).await, exact, "duplicate");
    // Acquire of a free lease: both registrations, with the concrete route (V69).
    let ta = take(&mut a, x, "a", 30).await;
    let l = w.next_of_type(types::LEASE_NOTIFY).await;
    let mut want = BytesMut::new();
    want.extend_from_slice(&wild.to_be_bytes());
    want.extend_from_slice(&(x.len() as u32).to_be_bytes());
    want.extend_from_slice(x.as_bytes());
    want.extend_from_slice(&[0, 0, 0, 0]);
    let mut want_exact = want.clone();
    want_exact[..8].copy_from_slice(&exact.to_be_bytes());
    assert!(l.record.payload == want || l.record.payload == want_exact);
    next_notify(&mut w).await;
    // No change of holder: nothing.
    assert_eq!(
        acquired(a.call(&acq(x, "a", 30, 0)).await).kind,
        AcquireKind::AlreadyHeld
    );
    a.ok::<_, RenewOk>(&renew(x, "a", ta, 30)).await;
    assert_eq!(code(&b.fails(&acq(x, "b", 30, 0)).await), codes::LEASE_HELD);
    b.send(Some(1001), &acq(x, "b", 30, 10)).await;
    assert_eq!(acquired(b.reply_to(1001).await).kind, AcquireKind::Queued);
    assert_eq!(
        code(&a.fails(&release(x, "a", ta + 1)).await),
        codes::LEASE_INVALID_FENCE
    );
    w.expect_quiet().await;
    // Release with a waiter: the release and the grant, each to both.
    a.ok::<_, lease::ReleaseOk>(&release(x, "a", ta)).await;
    let tb = acquired(b.reply_to(1001).await).fencing_token;
    let four = notifies(&mut w, 4).await;
    assert_eq!(
        four,
        [
            (wild, x.into()),
            (wild, x.into()),
            (exact, x.into()),
            (exact, x.into())
        ]
    );
    w.expect_quiet().await;
    // A plain release: once per registration.
    b.ok::<_, lease::ReleaseOk>(&release(x, "b", tb)).await;
    assert_eq!(
        notifies(&mut w, 2).await,
        [(wild, x.into()), (exact, x.into())]
    );
    // Routes no registration matches stay silent.
    take(&mut a, "lease://w/a/y", "a", 30).await;
    take(&mut a, "lease://v/a/x", "a", 30).await;
    w.expect_quiet().await;
    // A holder's disconnect.
    take(&mut b, "lease://w/b/x", "b", 30).await;
    assert_eq!(notifies(&mut w, 1).await, [(wild, "lease://w/b/x".into())]);
    drop(b);
    assert_eq!(notifies(&mut w, 1).await, [(wild, "lease://w/b/x".into())]);
    // UNSUBSCRIBE by the original pattern (idempotent) stops it.
    for _ in 0..2 {
        w.ok::<_, lease::UnsubscribeOk>(&lease::Unsubscribe::new("lease://w/*/x"))
            .await;
    }
    take(&mut a, "lease://w/c/x", "a", 30).await;
    w.expect_quiet().await;
    for bad in [
        "lease://w/a",
        "lease://w/a*/x",
        "kv://a/b/c",
        "lease://a//b",
        "lease://**/**",
    ] {
        let e = w.fails(&lease::Subscribe::new(bad)).await;
        assert_eq!(code(&e), codes::LEASE_INVALID_SUBSCRIPTION, "{bad}");
        let e = w.fails(&lease::Unsubscribe::new(bad)).await;
        assert_eq!(code(&e), codes::LEASE_INVALID_SUBSCRIPTION, "{bad}");
    }
}

async fn bad_requests(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let long_owner = "o".repeat(513);
    let long_route = format!("lease://a/b/{}", "r".repeat(60_000));
    let cases = [
        acq(L, &long_owner, 30, 0),
        acq(L, "o", 0, 0),
        acq(L, "o", u64::MAX, 0),
        acq(L, "o", 30, 31),
        acq("lease://a/*/c", "o", 30, 0),
        acq("lease://a/b", "o", 30, 0),
        acq(&long_route, "o", 30, 0),
    ];
    for a in cases {
        let e = c.fails(&a).await;
        assert_eq!(
            code(&e),
            codes::LEASE_BAD_REQUEST,
            "{}",
            &a.route[..20.min(a.route.len())]
        );
    }
    take(&mut c, L, &"o".repeat(512), 30).await;
    let e = c.fails(&lease::Query::new("lease://a/**")).await;
    assert_eq!(code(&e), codes::LEASE_BAD_REQUEST);
    // A malformed payload is a bad request; the session stays usable.
    c.send_frame(&[0xFF, 0x01, 0x90, 0, 2, 0, 0]).await;
    let l = c.next_record().await;
    assert_eq!(l.record.ty, types::LEASE_ACQUIRE);
    assert_eq!(
        WireError::decode(l.record.payload).unwrap().code(),
        Some(codes::LEASE_BAD_REQUEST)
    );
    // An ACQUIRE without the optional wait field waits 0.
    let mut old = acq(L, "x", 30, 0);
    old.wait_seconds = None;
    assert_eq!(code(&c.fails(&old).await), codes::LEASE_HELD);
}

async fn unauthorized_requests_keep_the_session(kind: Kind) {
    let broker = Broker::builder()
        .auth(
            AuthConfig::jwt_hs256(crate::support::SECRET)
                .audiences(["fitz"])
                .family_map([("dev", 1)]),
        )
        .start()
        .await
        .unwrap();
    let token = crate::support::token("dev", &["lease://ok/**#*", "lease://ro/**#read"]);
    let (mut c, _) = RawClient::connect(&broker, kind, &token).await;
    let ro = "lease://ro/a/b";
    for e in [
        c.fails(&acq(ro, "o", 30, 0)).await,
        c.fails(&renew(ro, "o", 1, 30)).await,
        c.fails(&release(ro, "o", 1)).await,
        c.fails(&lease::Query::new("lease://no/a/b")).await,
        c.fails(&lease::Subscribe::new("lease://no/**")).await,
        c.fails(&lease::Unsubscribe::new("lease://**")).await,
        c.fails(&list("lease://**", None, 0)).await,
    ] {
        assert_eq!(code(&e), codes::LEASE_UNAUTHORIZED, "{e:?}");
    }
    assert_eq!(query(&mut c, ro).await.holder, None);
    subscribe(&mut c, "lease://ro/**").await;
    c.ok::<_, ListOk>(&list("lease://ro/*/*", None, 0)).await;
    let t = take(&mut c, "lease://ok/a/b", "o", 30).await;
    c.ok::<_, lease::ReleaseOk>(&release("lease://ok/a/b", "o", t))
        .await;
    assert_eq!(broker.session_count(), 1, "still open");
}

async fn route_families_are_isolated(kind: Kind) {
    let broker = crate::support::jwt().await;
    let (mut dev, _) = RawClient::connect(
        &broker,
        kind,
        &crate::support::token("dev", crate::support::ALL),
    )
    .await;
    let (mut acme, _) = RawClient::connect(
        &broker,
        kind,
        &crate::support::token("acme", crate::support::ALL),
    )
    .await;
    subscribe(&mut acme, "lease://**").await;
    let td = take(&mut dev, L, "same-owner-name", 30).await;
    acme.expect_quiet().await;
    assert_eq!(query(&mut acme, L).await.holder, None);
    assert!(
        acme.ok::<_, ListOk>(&list("lease://**", None, 0))
            .await
            .items
            .is_empty()
    );
    let ta = take(&mut acme, L, "other", 30).await;
    assert!(ta > td, "one token counter per broker");
    next_notify(&mut acme).await;
    // A cursor from another family is refused.
    for i in 0..3 {
        take(&mut dev, &format!("lease://f/a/{i}"), "o", 30).await;
    }
    let page = dev.ok::<_, ListOk>(&list("lease://f/**", None, 1)).await;
    let e = acme.fails(&list("lease://f/**", page.next, 1)).await;
    assert_eq!(code(&e), codes::LEASE_INVALID_CURSOR);
    assert_eq!(
        dev.ok::<_, ListOk>(&list("lease://f/**", page.next, 1))
            .await
            .items
            .len(),
        1
    );
}
