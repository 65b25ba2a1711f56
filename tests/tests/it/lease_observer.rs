//! The lease inventory observer (`Leases::observe`) against the embedded
//! broker, directly and through the disconnect proxy: it follows acquire,
//! release and expiry (on the broker's manual clock); recovers what changed
//! while its connection was down (the notifications of that time are lost
//! for good); converges while the held set churns during its LIST passes
//! and while its notification buffer overflows; and survives a broker
//! restart. The exact orderings (a notification, a reconnect or an overflow
//! landing inside one pass) are played byte by byte in the unit tests,
//! `fitz/src/lease/observe_tests.rs`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use fitz::lease::{ObserveOptions, Observer, ObserverStatus};
use fitz::{Client, Event};
use fitz_broker::{AuthConfig, Broker};
use fitz_testkit::Direction;
use fitz_tests::{
    Brokers, BrokersExt, Proxy, Timed, Transport, WAIT, anon_builder, connected, embedded_only,
    realm, wait_event, within,
};
use futures_util::TryStreamExt;

const TTL: Duration = Duration::from_secs(30);

/// The routes of the installed view.
fn routes(obs: &Observer) -> BTreeSet<String> {
    obs.view()
        .leases()
        .iter()
        .map(|l| l.route().to_owned())
        .collect()
}

/// Waits until the observer is ready with exactly `want` installed.
async fn converges(obs: &Observer, want: &BTreeSet<String>) {
    within("the observer converges", async {
        while !(obs.status().is_ready() && routes(obs) == *want) {
            // The next snapshot; a status change alone is looked at after
            // a short while (the observer's status has no shared receiver).
            let _ = tokio::time::timeout(Duration::from_millis(20), obs.changed()).await;
        }
    })
    .await
}

/// What the broker itself lists for `selector`.
async fn listed(client: &Client, selector: &str) -> BTreeSet<String> {
    client
        .lease()
        .list(selector)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.route().to_owned())
        .collect()
}

fn set(routes: &[&String]) -> BTreeSet<String> {
    routes.iter().map(|r| (*r).clone()).collect()
}

#[tokio::test]
async fn the_observer_follows_acquire_release_and_expiry() {
    let Some(broker) = Timed::start("lease expiry on the broker's clock").await else {
        return;
    };
    for t in Transport::BOTH {
        let watcher = connected(broker.url(t)).await;
        let actor = connected(broker.url(t)).await;
        let app = realm("observe");
        let selector = format!("lease://{app}/jobs/*");
        let (a, b) = (
            format!("lease://{app}/jobs/a"),
            format!("lease://{app}/jobs/b"),
        );
        let outside = format!("lease://{app}/other/a");
        let held = actor.lease().acquire(&a, "w1", TTL).await.unwrap();
        let _outside = actor.lease().acquire(&outside, "w1", TTL).await.unwrap();

        let obs = watcher
            .lease()
            .observe(&selector, ObserveOptions::default().expected_ttl(TTL))
            .unwrap();
        let view = within("ready", obs.ready()).await.unwrap();
        assert_eq!(routes(&obs), set(&[&a]));
        let rec = view.get(&a).unwrap();
        assert_eq!(rec.owner(), "w1");
        assert!(rec.expires_in() <= TTL);

        let _short = actor
            .lease()
            .acquire(&b, "w2", Duration::from_secs(5))
            .await
            .unwrap();
        converges(&obs, &set(&[&a, &b])).await;
        held.release().await.unwrap();
        converges(&obs, &set(&[&b])).await;
        // Expiry on the broker's clock: the notification brings it in.
        broker.clock.advance(Duration::from_secs(6)).await;
        converges(&obs, &BTreeSet::new()).await;
        drop(obs);
        actor.close().await;
        watcher.close().await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn changes_while_disconnected_are_recovered_after_the_reconnect() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let watcher = connected(&url).await;
        let actor = connected(brokers.anon_url(t)).await;
        let app = realm("observe");
        let selector = format!("lease://{app}/cut/*");
        let (a, b) = (
            format!("lease://{app}/cut/a"),
            format!("lease://{app}/cut/b"),
        );
        let held = actor.lease().acquire(&a, "w1", TTL).await.unwrap();
        let mut obs = watcher
            .lease()
            .observe(&selector, ObserveOptions::default())
            .unwrap();
        within("ready", obs.ready()).await.unwrap();
        assert_eq!(routes(&obs), set(&[&a]));

        // The connection goes and stays down: readiness is lost, the view
        // stays readable.
        proxy.refuse_new(true);
        proxy.cut_all();
        let status = within("recovering", async {
            loop {
                let s = obs.status_changed().await.unwrap();
                if !s.is_ready() {
                    return s;
                }
            }
        })
        .await;
        assert!(
            matches!(status, ObserverStatus::Recovering { .. }),
            "{status:?}"
        );
        assert_eq!(routes(&obs), set(&[&a]));
        // Changes nobody will notify this observer of.
        held.release().await.unwrap();
        let _b = actor.lease().acquire(&b, "w2", TTL).await.unwrap();
        proxy.refuse_new(false);
        converges(&obs, &set(&[&b])).await;
        drop(obs);
        actor.close().await;
        watcher.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn churn_during_the_list_passes_and_an_overflowing_buffer_converge() {
    let brokers = Brokers::start().await.unwrap();
    let t = Transport::Tcp;
    let (proxy, url) = brokers.anon_proxy(t).await;
    let watcher = anon_builder(&url).build().unwrap();
    watcher.connect().await.unwrap();
    let actor = connected(brokers.anon_url(t)).await;
    let app = realm("observe");
    let selector = format!("lease://{app}/churn/*");
    let route = |n: usize| format!("lease://{app}/churn/r{n}");
    let mut held = Vec::new();
    for n in 0..300 {
        held.push(actor.lease().acquire(&route(n), "w", TTL).await.unwrap());
    }
    let mut events = watcher.events();
    let obs = watcher
        .lease()
        .observe(
            &selector,
            ObserveOptions::default()
                .page_size(50)
                .notification_buffer(2),
        )
        .unwrap();
    within("ready", obs.ready()).await.unwrap();
    assert_eq!(routes(&obs), listed(&actor, &selector).await);

    // Overflow: notifications held back by the link arrive as one burst,
    // three or more for a buffer of two. The observer replaces its
    // subscription and lists again.
    proxy.stall(Direction::Down, true);
    for n in 300..305 {
        held.push(actor.lease().acquire(&route(n), "w", TTL).await.unwrap());
    }
    proxy.stall(Direction::Down, false);
    wait_event(&mut events, |e| matches!(e, Event::SlowConsumer { .. })).await;
    converges(&obs, &listed(&actor, &selector).await).await;

    // Churn while every frame to and from the observer is late, so its
    // seven-page passes are long and changes land inside them.
    proxy.set_delay(Duration::from_millis(5));
    for n in 305..345 {
        held.push(actor.lease().acquire(&route(n), "w", TTL).await.unwrap());
        let old = held.swap_remove(n % 7);
        old.release().await.unwrap();
    }
    let want = listed(&actor, &selector).await;
    assert_eq!(want.len(), 305);
    converges(&obs, &want).await;
    drop(obs);
    actor.close().await;
    watcher.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_broker_restart_is_a_new_inventory() {
    if embedded_only("the test restarts its broker").is_none() {
        return;
    }
    let start = |port: u16| async move {
        let mut tries = 0;
        loop {
            let started = Broker::builder()
                .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .tcp_port(port)
                .http_port(0)
                .auth(AuthConfig::anonymous())
                .start()
                .await;
            match started {
                Ok(b) => return b,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("broker restarts: {e}"),
            }
        }
    };
    let first = start(0).await;
    let addr = first.tcp_addr();
    let proxy = Proxy::start(addr).await.unwrap();
    let watcher = anon_builder(&proxy.tcp_url()).build().unwrap();
    watcher.connect().await.unwrap();
    let app = realm("observe");
    let selector = format!("lease://{app}/restart/*");
    let (a, b) = (
        format!("lease://{app}/restart/a"),
        format!("lease://{app}/restart/b"),
    );
    let actor = connected(&first.tcp_url()).await;
    let _a = actor.lease().acquire(&a, "w1", TTL).await.unwrap();
    let obs = watcher
        .lease()
        .observe(&selector, ObserveOptions::default())
        .unwrap();
    within("ready", obs.ready()).await.unwrap();
    assert_eq!(routes(&obs), set(&[&a]));

    // The broker goes away (its leases with it) and a new one comes up on
    // the same address: a new lifetime the observer only sees as a new
    // session.
    actor.close().await;
    first.shutdown().await;
    let second = start(addr.port()).await;
    let actor = connected(&second.tcp_url()).await;
    let _b = actor.lease().acquire(&b, "w2", TTL).await.unwrap();
    converges(&obs, &set(&[&b])).await;
    assert!(tokio::time::timeout(WAIT, obs.ready()).await.is_ok());
    drop(obs);
    actor.close().await;
    watcher.close().await;
    second.shutdown().await;
}
