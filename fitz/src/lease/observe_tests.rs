//! The inventory observer against a scripted peer over the in-memory
//! transport, under paused (manual) time: each race of the spec's ordering
//! is played exactly — a notification, a reconnect or an overflow landing
//! inside a LIST pass — plus the backstop timer, backoff and shutdown.

use std::time::Duration;

use fitz_protocol::lease::{self, LeaseInfo, ListCursor as WireCursor, ListOk, SubscribeReply};
use fitz_protocol::{Message, codes, types};
use fitz_testkit::peer::{Peer, Request, payloads};
use tokio::time::Instant;

use super::{ObserveOptions, Observer, ObserverStatus, backstop_for_ttl};
use crate::ErrorKind;
use crate::test_support::{Scripted, ok};

const SELECTOR: &str = "lease://t/jobs/*";
const LONG: Duration = Duration::from_secs(600);

type Harness = Scripted;

async fn start() -> Harness {
    Scripted::start("memory://observe").await
}

impl Scripted {
    async fn notify(&mut self, sub_id: u64, route: &str) {
        self.peer
            .send_record(types::LEASE_NOTIFY, &payloads::notify(sub_id, route, &[]))
            .await
            .unwrap();
    }
}

fn info(name: &str, owner: &str) -> LeaseInfo {
    LeaseInfo {
        route: format!("lease://t/jobs/{name}").into(),
        owner: owner.into(),
        holder_incarnation: 7,
        acquired_at: "2026-01-01T00:00:00Z".into(),
        expires_in_secs: 30,
        renewals: 0,
    }
}

fn page(items: Vec<LeaseInfo>, next: Option<WireCursor>) -> Vec<u8> {
    ok(&ListOk { items, next })
}

async fn expect_within(peer: &mut Peer, ty: u16, within: Duration) -> Request {
    let r = tokio::time::timeout(within, peer.read_request())
        .await
        .unwrap_or_else(|_| panic!("no request of type {ty} within {within:?}"))
        .unwrap();
    assert_eq!(r.ty, ty, "{r:?}");
    r
}

async fn expect(peer: &mut Peer, ty: u16) -> Request {
    expect_within(peer, ty, LONG).await
}

async fn nothing_for(peer: &mut Peer, d: Duration) {
    let r = tokio::time::timeout(d, peer.read_request()).await;
    assert!(r.is_err(), "unexpected request: {r:?}");
}

/// Answers the SUBSCRIBE with `sub_id`.
async fn subscribed(peer: &mut Peer, sub_id: u64) {
    let r = expect(peer, types::LEASE_SUBSCRIBE).await;
    assert_eq!(
        &*lease::Subscribe::decode(r.payload.clone()).unwrap().route,
        SELECTOR
    );
    peer.reply(&r, &ok(&SubscribeReply { sub_id }))
        .await
        .unwrap();
}

/// Answers the next LIST (one page) with `items`.
async fn listed(peer: &mut Peer, items: Vec<LeaseInfo>) {
    let r = expect(peer, types::LEASE_LIST).await;
    peer.reply(&r, &page(items, None)).await.unwrap();
}

async fn ready(obs: &Observer) -> std::sync::Arc<super::Inventory> {
    tokio::time::timeout(LONG, obs.ready())
        .await
        .expect("not ready in time")
        .expect("observer stopped")
}

fn owners(obs: &Observer) -> Vec<(String, String)> {
    obs.view()
        .leases()
        .iter()
        .map(|l| (l.route().to_owned(), l.owner().to_owned()))
        .collect()
}

fn route(name: &str) -> String {
    format!("lease://t/jobs/{name}")
}

/// An observer made ready with one lease `a` held by `w1` (subscription 7).
async fn ready_observer(h: &mut Harness, options: ObserveOptions) -> Observer {
    let obs = h.client.lease().observe(SELECTOR, options).unwrap();
    subscribed(&mut h.peer, 7).await;
    listed(&mut h.peer, vec![info("a", "w1")]).await;
    assert_eq!(ready(&obs).await.version(), 1);
    obs
}

#[tokio::test(start_paused = true)]
async fn bootstrap_lists_only_after_the_ack_and_drains_every_page() {
    let mut h = start().await;
    let obs = h
        .client
        .lease()
        .observe(SELECTOR, ObserveOptions::default().page_size(2))
        .unwrap();
    let r = expect(&mut h.peer, types::LEASE_SUBSCRIBE).await;
    // No LIST before the acknowledgement.
    nothing_for(&mut h.peer, Duration::from_secs(1)).await;
    assert!(matches!(obs.status(), ObserverStatus::Bootstrapping));
    assert_eq!(obs.view().version(), 0);
    h.peer
        .reply(&r, &ok(&SubscribeReply { sub_id: 7 }))
        .await
        .unwrap();
    let cursor = WireCursor {
        snapshot_id: 99,
        offset: 2,
    };
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    let first = lease::List::decode(r.payload.clone()).unwrap();
    assert_eq!(
        (&*first.pattern, first.cursor, first.limit),
        (SELECTOR, None, 2)
    );
    h.peer
        .reply(
            &r,
            &page(vec![info("c", "w3"), info("a", "w1")], Some(cursor)),
        )
        .await
        .unwrap();
    // Not ready on a partial snapshot.
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    assert!(!obs.status().is_ready());
    let second = lease::List::decode(r.payload.clone()).unwrap();
    assert_eq!(second.cursor, Some(cursor));
    h.peer
        .reply(&r, &page(vec![info("b", "w2")], None))
        .await
        .unwrap();
    let view = ready(&obs).await;
    assert_eq!(view.version(), 1);
    assert!(view.listed_at().is_some());
    // Sorted by route; records as LIST reported them.
    assert_eq!(
        owners(&obs),
        [
            (route("a"), "w1".into()),
            (route("b"), "w2".into()),
            (route("c"), "w3".into())
        ]
    );
    let b = view.get(&route("b")).unwrap();
    assert_eq!(
        (b.holder_incarnation(), b.expires_in()),
        (7, Duration::from_secs(30))
    );
    assert!(view.get(&route("zz")).is_none());
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_notification_during_the_list_discards_the_pass() {
    let mut h = start().await;
    let obs = h
        .client
        .lease()
        .observe(SELECTOR, ObserveOptions::default())
        .unwrap();
    subscribed(&mut h.peer, 7).await;
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    // The held set changes while the snapshot is on its way.
    h.notify(7, &route("b")).await;
    h.peer
        .reply(&r, &page(vec![info("a", "w1")], None))
        .await
        .unwrap();
    // Discarded: a fresh full LIST, and only that one is installed.
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    assert_eq!(lease::List::decode(r.payload.clone()).unwrap().cursor, None);
    assert!(!obs.status().is_ready());
    assert_eq!(obs.view().version(), 0);
    h.peer
        .reply(&r, &page(vec![info("a", "w1"), info("b", "w2")], None))
        .await
        .unwrap();
    let view = ready(&obs).await;
    assert_eq!(view.version(), 1);
    assert_eq!(view.len(), 2);
    nothing_for(&mut h.peer, Duration::from_secs(1)).await;
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_during_the_list_discards_the_pass() {
    let mut h = start().await;
    let obs = h
        .client
        .lease()
        .observe(SELECTOR, ObserveOptions::default().page_size(1))
        .unwrap();
    subscribed(&mut h.peer, 7).await;
    // Page one on the old session, then the session ends mid-scan.
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    let cursor = WireCursor {
        snapshot_id: 5,
        offset: 1,
    };
    h.peer
        .reply(&r, &page(vec![info("old", "w0")], Some(cursor)))
        .await
        .unwrap();
    h.reconnect().await;
    // The subscription is restored first.
    subscribed(&mut h.peer, 8).await;
    let mut r = expect(&mut h.peer, types::LEASE_LIST).await;
    if lease::List::decode(r.payload.clone())
        .unwrap()
        .cursor
        .is_some()
    {
        // The rest of the old scan, completed on the new session: a whole
        // LIST, but one a reconnect crossed, so it is not installed.
        h.peer
            .reply(&r, &page(vec![info("old2", "w0")], None))
            .await
            .unwrap();
        r = expect(&mut h.peer, types::LEASE_LIST).await;
        assert!(!obs.status().is_ready());
        assert_eq!(obs.view().version(), 0);
    }
    // A LIST that began after the restore is installed.
    assert_eq!(lease::List::decode(r.payload.clone()).unwrap().cursor, None);
    h.peer
        .reply(&r, &page(vec![info("new", "w1")], None))
        .await
        .unwrap();
    let view = ready(&obs).await;
    assert_eq!(view.version(), 1);
    assert_eq!(owners(&obs), [(route("new"), "w1".into())]);
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn an_overflow_during_the_list_replaces_the_subscription() {
    let mut h = start().await;
    let obs = h
        .client
        .lease()
        .observe(SELECTOR, ObserveOptions::default().notification_buffer(2))
        .unwrap();
    subscribed(&mut h.peer, 7).await;
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    for n in 0..3 {
        h.notify(7, &route(&format!("n{n}"))).await;
    }
    h.peer
        .reply(&r, &page(vec![info("a", "w1")], None))
        .await
        .unwrap();
    // The overflowed registration is removed, a new one made, and listed.
    let r = expect(&mut h.peer, types::LEASE_UNSUBSCRIBE).await;
    h.peer.reply(&r, &[0]).await.unwrap();
    subscribed(&mut h.peer, 9).await;
    assert_eq!(obs.view().version(), 0);
    listed(&mut h.peer, vec![info("b", "w2")]).await;
    ready(&obs).await;
    assert_eq!(owners(&obs), [(route("b"), "w2".into())]);
    // The new wire id is the one that counts now.
    h.notify(9, &route("c")).await;
    listed(&mut h.peer, vec![info("b", "w2"), info("c", "w3")]).await;
    assert_eq!(obs.changed().await.unwrap().len(), 2);
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn notifications_in_steady_state_coalesce_into_one_full_list() {
    let mut h = start().await;
    let obs = ready_observer(&mut h, ObserveOptions::default()).await;
    // A burst while the observer is parked: one reconciliation.
    h.notify(7, &route("b")).await;
    h.notify(7, &route("c")).await;
    h.notify(7, &route("a")).await;
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    assert_eq!(lease::List::decode(r.payload.clone()).unwrap().cursor, None);
    h.peer
        .reply(&r, &page(vec![info("b", "w2"), info("c", "w3")], None))
        .await
        .unwrap();
    let view = obs.changed().await.unwrap();
    assert_eq!(view.version(), 2);
    assert!(view.get(&route("a")).is_none());
    assert!(obs.status().is_ready());
    // Nothing else was scheduled by the burst.
    nothing_for(&mut h.peer, Duration::from_secs(1)).await;
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_notification_is_caught_by_the_jittered_backstop() {
    let mut h = start().await;
    let interval = Duration::from_secs(10);
    let obs = ready_observer(&mut h, ObserveOptions::default().backstop(interval)).await;
    let installed = Instant::now();
    // No NOTIFY arrives for a change: nothing happens before 80 % …
    nothing_for(
        &mut h.peer,
        interval.mul_f64(0.8) - Duration::from_millis(10),
    )
    .await;
    // … and a full LIST comes by 120 %.
    let r = expect_within(&mut h.peer, types::LEASE_LIST, interval.mul_f64(0.45)).await;
    let waited = installed.elapsed();
    assert!(
        waited >= interval.mul_f64(0.8) && waited <= interval.mul_f64(1.2),
        "{waited:?}"
    );
    h.peer
        .reply(&r, &page(vec![info("a", "w1"), info("lost", "w9")], None))
        .await
        .unwrap();
    assert!(obs.changed().await.unwrap().get(&route("lost")).is_some());
    // And again, from that pass.
    expect_within(&mut h.peer, types::LEASE_LIST, interval.mul_f64(1.21)).await;
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_in_steady_state_invalidates_readiness_until_a_fresh_list() {
    let mut h = start().await;
    let mut obs = ready_observer(&mut h, ObserveOptions::default()).await;
    // A broker restart looks like this to the client: the session ends and
    // a new one starts (the protocol has no broker epoch).
    h.reconnect().await;
    let status = tokio::time::timeout(LONG, obs.status_changed())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(status, ObserverStatus::Recovering { .. }),
        "{status:?}"
    );
    subscribed(&mut h.peer, 1).await;
    // While that LIST runs the view is the old one and not ready.
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    assert!(!obs.status().is_ready());
    assert_eq!(obs.view().version(), 1);
    h.peer
        .reply(&r, &page(vec![info("z", "w5")], None))
        .await
        .unwrap();
    let view = ready(&obs).await;
    assert_eq!(view.version(), 2);
    assert_eq!(owners(&obs), [(route("z"), "w5".into())]);
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_restore_is_replaced_by_a_new_subscription() {
    let mut h = start().await;
    let obs = ready_observer(&mut h, ObserveOptions::default()).await;
    h.reconnect().await;
    // The broker refuses the restored SUBSCRIBE (a transient code): the
    // subscription ends, and the observer makes a new one, then lists.
    let r = expect(&mut h.peer, types::LEASE_SUBSCRIBE).await;
    h.peer
        .reply(&r, &payloads::error(codes::LEASE_QUEUE_FULL, "later"))
        .await
        .unwrap();
    subscribed(&mut h.peer, 3).await;
    match obs.status() {
        ObserverStatus::Recovering { error: Some(e) } => {
            assert_eq!(e.code(), Some(codes::LEASE_QUEUE_FULL));
        }
        other => panic!("{other:?}"),
    }
    listed(&mut h.peer, vec![info("r", "w4")]).await;
    assert_eq!(obs.changed().await.unwrap().version(), 2);
    assert!(obs.status().is_ready());
    assert_eq!(owners(&obs), [(route("r"), "w4".into())]);
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_list_backs_off_and_reports_the_error() {
    let mut h = start().await;
    let obs = h
        .client
        .lease()
        .observe(
            SELECTOR,
            ObserveOptions::default().retry_backoff(Duration::from_secs(4), Duration::from_secs(8)),
        )
        .unwrap();
    subscribed(&mut h.peer, 7).await;
    // A retryable broker error on every attempt (the page read itself is
    // retried three times).
    for _ in 0..3 {
        let r = expect(&mut h.peer, types::LEASE_LIST).await;
        h.peer
            .reply(&r, &payloads::error(codes::LEASE_HELD, "busy"))
            .await
            .unwrap();
    }
    let failed = Instant::now();
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    let waited = failed.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited <= Duration::from_secs(4),
        "{waited:?}"
    );
    match obs.status() {
        ObserverStatus::Recovering { error: Some(e) } => {
            assert_eq!(e.code(), Some(codes::LEASE_HELD));
        }
        other => panic!("{other:?}"),
    }
    h.peer.reply(&r, &page(vec![], None)).await.unwrap();
    assert!(ready(&obs).await.is_empty());
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_selector_stops_the_observer() {
    let mut h = start().await;
    let obs = h
        .client
        .lease()
        .observe(SELECTOR, ObserveOptions::default())
        .unwrap();
    subscribed(&mut h.peer, 7).await;
    let r = expect(&mut h.peer, types::LEASE_LIST).await;
    h.peer
        .reply(
            &r,
            &payloads::error(codes::LEASE_INVALID_LIST_PATTERN, "too broad"),
        )
        .await
        .unwrap();
    let e = obs.ready().await.unwrap_err();
    assert_eq!(e.code(), Some(codes::LEASE_INVALID_LIST_PATTERN));
    assert!(matches!(obs.status(), ObserverStatus::Stopped { .. }));
    h.client.close().await;
}

#[tokio::test(start_paused = true)]
async fn dropping_the_observer_unsubscribes_and_closing_the_client_stops_it() {
    let mut h = start().await;
    let obs = ready_observer(&mut h, ObserveOptions::default()).await;
    drop(obs);
    let r = expect(&mut h.peer, types::LEASE_UNSUBSCRIBE).await;
    assert_eq!(
        &*lease::Unsubscribe::decode(r.payload.clone()).unwrap().route,
        SELECTOR
    );
    h.peer.reply(&r, &[0]).await.unwrap();

    let obs = ready_observer(&mut h, ObserveOptions::default()).await;
    h.client.close().await;
    let e = obs.changed().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    assert!(matches!(obs.status(), ObserverStatus::Stopped { .. }));
}

#[tokio::test(start_paused = true)]
async fn bad_selectors_and_options_are_refused_locally() {
    let mut h = start().await;
    let leases = h.client.lease();
    for bad in ["lease://t/jobs", "kv://t/jobs/*", "lease://t/jo*/x"] {
        let e = leases.observe(bad, ObserveOptions::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
    }
    for bad in [
        ObserveOptions::default().backstop(Duration::ZERO),
        ObserveOptions::default().page_size(0),
        ObserveOptions::default().page_size(501),
        ObserveOptions::default().notification_buffer(0),
        ObserveOptions::default().retry_backoff(Duration::from_secs(2), Duration::from_secs(1)),
    ] {
        let e = leases.observe(SELECTOR, bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
    nothing_for(&mut h.peer, Duration::from_secs(1)).await;
    h.client.close().await;
}

#[test]
fn the_backstop_is_half_the_ttl_between_5_and_60_seconds() {
    let s = Duration::from_secs;
    assert_eq!(backstop_for_ttl(s(30)), s(15));
    assert_eq!(backstop_for_ttl(s(4)), s(5));
    assert_eq!(backstop_for_ttl(Duration::ZERO), s(5));
    assert_eq!(backstop_for_ttl(s(600)), s(60));
    assert_eq!(ObserveOptions::default().backstop_interval(), s(60));
    assert_eq!(
        ObserveOptions::default()
            .expected_ttl(s(20))
            .backstop_interval(),
        s(10)
    );
}
