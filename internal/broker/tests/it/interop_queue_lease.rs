//! The official client, `cntryl-fitz` 0.2.0, using Queue and Lease on the
//! embedded broker: anonymous and with its test JWT, over TCP and WebSocket.

use std::time::Duration;

use crate::support::{ALL, token};
use cntryl_fitz::Client;
use cntryl_fitz::client_domains::lease::LeaseAcquireOptions;
use fitz_broker::Broker;
use fitz_protocol::queue::Counters;
use futures_util::StreamExt;

const WAIT: Duration = Duration::from_secs(5);

fn client(url: &str, jwt: bool) -> Client {
    if jwt {
        Client::builder(url.to_owned(), || async { Ok(token("dev", ALL)) })
            .build()
            .unwrap()
    } else {
        Client::anonymous(url.to_owned())
            .service_name("interop-queue-lease")
            .build()
            .unwrap()
    }
}

async fn queue_round_trips(broker: &Broker, client: &Client, tag: &str) {
    let queue = client.queue().unwrap();
    let route = format!("queue://interop/{tag}/jobs");
    let other = format!("queue://interop/{tag}/other");
    let pattern = format!("queue://interop/{tag}/*");
    let mut sub = queue.subscribe(&pattern).await.unwrap();

    let id = queue.enqueue(&route, b"job-1", None).await.unwrap();
    assert!(id > 0);
    let n = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("availability notification in time")
        .expect("subscription open")
        .unwrap();
    assert_eq!(n.route, route);
    let counters = Counters::from_bytes(&n.payload).expect("24 counter bytes");
    assert_eq!(counters.ready, 1);

    // Exact RESERVE, then COMPLETE.
    let items = queue.reserve(&route, 30, 10, None).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].route.as_str(), &items[0].body[..]),
        (route.as_str(), &b"job-1"[..])
    );
    items[0].extend(30).await.unwrap();
    items[0].complete().await.unwrap();
    assert!(
        queue
            .reserve(&route, 30, 10, None)
            .await
            .unwrap()
            .is_empty()
    );

    // Wildcard RESERVE carries the concrete route; COMPLETE uses it.
    queue.enqueue(&other, b"job-2", Some(0)).await.unwrap();
    let items = queue.reserve(&pattern, 30, 10, Some(1)).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].route.as_str(), &items[0].body[..]),
        (other.as_str(), &b"job-2"[..])
    );
    items[0].complete().await.unwrap();

    // A long poll answered by an ENQUEUE from another task.
    let waiter = {
        let queue = client.queue().unwrap();
        let pattern = pattern.clone();
        tokio::spawn(async move { queue.reserve(&pattern, 30, 1, Some(10)).await })
    };
    let parked = async {
        while broker.engines().queue.stats().parked == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, parked)
        .await
        .expect("RESERVE parked");
    queue.enqueue(&route, b"job-3", None).await.unwrap();
    let items = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("long poll answered in time")
        .unwrap()
        .unwrap();
    assert_eq!(&items[0].body[..], b"job-3");
    items[0].complete().await.unwrap();
    sub.unsubscribe().await.unwrap();
}

async fn lease_round_trips(client: &Client, contender: &Client, tag: &str) {
    let lease = client.lease().unwrap();
    let route = format!("lease://interop/{tag}/leader");
    let mut watch = lease
        .subscribe(&format!("lease://interop/{tag}/*"))
        .await
        .unwrap();

    let held = lease
        .acquire(&route, "owner-a", 30, LeaseAcquireOptions::default())
        .await
        .unwrap();
    let n = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("lease notification in time")
        .expect("watch open")
        .unwrap();
    assert_eq!(n.route, route);
    let info = lease.query(&route).await.unwrap();
    assert_eq!(
        (info.held, info.owner_id.as_deref()),
        (true, Some("owner-a"))
    );
    let page = lease
        .list(&format!("lease://interop/{tag}/*"), None, 0)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].owner_id, "owner-a");
    assert!(page.next_cursor.is_none());

    // Held elsewhere without waiting: 5001.
    let other = contender.lease().unwrap();
    let err = other
        .acquire(&route, "owner-b", 30, LeaseAcquireOptions::default())
        .await
        .err()
        .expect("held by owner-a");
    assert!(err.to_string().contains("owner-a"), "{err}");

    // A contended ACQUIRE with a wait is queued and granted on release: the
    // client's deferred-grant path.
    let waiter = {
        let route = route.clone();
        tokio::spawn(async move {
            other
                .acquire(
                    &route,
                    "owner-b",
                    30,
                    LeaseAcquireOptions { wait_seconds: 10 },
                )
                .await
        })
    };
    let queued = async {
        while lease.query(&route).await.unwrap().pending_waiters == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, queued)
        .await
        .expect("waiter queued");
    held.release().await.unwrap();
    let granted = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("deferred grant in time")
        .unwrap()
        .unwrap();
    let info = lease.query(&route).await.unwrap();
    assert_eq!(info.owner_id.as_deref(), Some("owner-b"));
    granted.release().await.unwrap();
    assert!(!lease.query(&route).await.unwrap().held);

    // The managed form sees a fencing token above every earlier one.
    let first = lease
        .with_lease_authority(&route, "owner-c", 30, |_, a| async move {
            Ok::<_, ()>(a.fencing_token)
        })
        .await
        .unwrap();
    let second = lease
        .with_lease_authority(&route, "owner-c", 30, |_, a| async move {
            Ok::<_, ()>(a.fencing_token)
        })
        .await
        .unwrap();
    assert!(second > first);
    watch.unsubscribe().await.unwrap();
}

async fn exercise(broker: &Broker, jwt: bool) {
    for (url, tag) in [(broker.tcp_url(), "tcp"), (broker.ws_url(), "ws")] {
        let a = client(&url, jwt);
        let b = client(&url, jwt);
        a.connect().await.expect("connects");
        b.connect().await.expect("connects");
        queue_round_trips(broker, &a, tag).await;
        lease_round_trips(&a, &b, tag).await;
        a.close().await.unwrap();
        b.close().await.unwrap();
    }
}

#[tokio::test]
async fn official_client_uses_queue_and_lease_anonymously() {
    let broker = crate::support::anon().await;
    exercise(&broker, false).await;
}

#[tokio::test]
async fn official_client_uses_queue_and_lease_with_its_test_jwt() {
    let broker = crate::support::jwt().await;
    exercise(&broker, true).await;
}
