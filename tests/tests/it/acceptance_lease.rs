//! Lease acceptance criteria through the SDK on the broker's manual clock
//! (docs/ACCEPTANCE.md): AC-LEASE-005 (an unrenewed lease expires after its
//! TTL, and the next grant has a larger fencing token) and AC-LEASE-012 (a
//! wildcard watch is told of every change of the held set — grant, expiry,
//! release — and of nothing else: not a renewal, not another area).
//!
//! "Nothing else" is proved by order: the watch keeps the broker's order, so
//! when the next change is a later one, the earlier operation sent none.

use std::time::Duration;

use fitz::lease::LeaseSubscription;
use fitz_tests::{Timed, connected, next_item, realm};

const SHORT: Duration = Duration::from_secs(5);
const LONG: Duration = Duration::from_secs(60);

async fn next_change(sub: &mut LeaseSubscription) -> String {
    let change: fitz::lease::LeaseChange = next_item(sub).await;
    change.route().to_owned()
}

#[tokio::test]
async fn an_unrenewed_lease_expires_and_watches_see_every_change_of_the_held_set() {
    let Some(broker) = Timed::start("lease TTLs run out on broker time").await else {
        return;
    };
    let test = realm("acc-lease");
    let (r1, r2) = (
        format!("lease://{test}/locks/r1"),
        format!("lease://{test}/locks/r2"),
    );
    let unwatched = format!("lease://{test}/other/r1");
    let watcher = connected(&broker.tcp).await;
    let holder = connected(&broker.tcp).await;
    let other = connected(&broker.ws).await;
    let mut watch = watcher
        .lease()
        .subscribe(&format!("lease://{test}/locks/*"))
        .await
        .unwrap();

    // A grant is a change; a renewal is not (the next change is r2's grant).
    let mut first = holder.lease().acquire(&r1, "alice", SHORT).await.unwrap();
    assert_eq!(next_change(&mut watch).await, r1);
    first.renew(SHORT).await.unwrap();
    let long = holder.lease().acquire(&r2, "alice", LONG).await.unwrap();
    assert_eq!(next_change(&mut watch).await, r2);

    // AC-LEASE-005: not renewed for longer than its TTL, r1 is free: another
    // client gets it with a larger fencing token; r2 (60 s) is still held.
    broker.clock.advance(SHORT + Duration::from_secs(1)).await;
    let second = other.lease().acquire(&r1, "bob", SHORT).await.unwrap();
    assert!(!second.already_held());
    assert!(
        second.fencing_token() > first.fencing_token(),
        "{} after {}",
        second.fencing_token(),
        first.fencing_token()
    );
    let status = other.lease().query(&r1).await.unwrap();
    assert_eq!(status.holder().map(|h| h.owner()), Some("bob"));
    assert!(other.lease().query(&r2).await.unwrap().is_held());
    // The expiry and the new grant: one change each, both r1.
    assert_eq!(next_change(&mut watch).await, r1);
    assert_eq!(next_change(&mut watch).await, r1);

    // Another area is not watched; a release is a change.
    let outside = other
        .lease()
        .acquire(&unwatched, "bob", LONG)
        .await
        .unwrap();
    second.release().await.unwrap();
    assert_eq!(next_change(&mut watch).await, r1);
    long.release().await.unwrap();
    assert_eq!(next_change(&mut watch).await, r2);

    outside.release().await.unwrap();
    drop(first);
    watch.unsubscribe().await.unwrap();
    for c in [watcher, holder, other] {
        c.close().await;
    }
    broker.shutdown().await;
}
