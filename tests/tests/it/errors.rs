//! Bad input and missing things, per domain, through the SDK against the
//! embedded broker (or an external one).
//!
//! * A malformed route or pattern never leaves the client: every domain
//!   answers it with a local [`ErrorKind::InvalidArgument`]. The client sits
//!   behind a proxy that moves no bytes, so a request that did go out would
//!   hang instead.
//! * What "not found" looks like in each domain: an error with the
//!   domain's code where the broker has one for it (KV 1001, Lease 5004, RPC
//!   6004), the uncoded Queue refusal for a reservation whose message is
//!   gone, and plain empty answers where absence is not an error (KV GET,
//!   Stream LAST/GET_METADATA/READ, Lease QUERY, Schedule CANCEL).

use std::time::Duration;

use fitz::kv::{Durability, TxMode};
use fitz::queue::ReserveOptions;
use fitz::rpc::{HandlerError, RpcRequest};
use fitz::schedule::DeliveryMode;
use fitz::stream::ReadOptions;
use fitz::{ErrorKind, codes};
use fitz_tests::{Brokers, BrokersExt, Timed, Transport, broker_code, connected, realm, within};
use futures_util::TryStreamExt;

const TTL: Duration = Duration::from_secs(30);

/// A local refusal: typed, final, nothing sent.
fn local<T: std::fmt::Debug>(what: &str, r: fitz::Result<T>) {
    let e = r.expect_err(what);
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
    assert!(!e.is_retryable() && !e.maybe_applied(), "{what}: {e}");
}

#[tokio::test]
async fn malformed_routes_never_leave_the_client_in_any_domain() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let client = connected(&url).await;
        // From now on nothing reaches the broker and nothing comes back.
        proxy.blackhole(true);
        let r = realm("bad");
        within("every local refusal", async {
            // KV: BEGIN takes realm/area/resource; watches whole segments.
            let kv = client.kv();
            for bad in [
                format!("kv://{r}/a"),
                format!("kv://{r}/a/b/c"),
                format!("kv://{r}/*/b"),
                format!("kv://{r}//b"),
                format!("queue://{r}/a/b"),
            ] {
                local(&bad, kv.begin(&bad, TxMode::ReadOnly).await);
            }
            local("kv watch", kv.subscribe(&format!("kv://{r}/a*")).await);

            // Queue: concrete three-segment routes to enqueue; patterns
            // that can match one to reserve and watch.
            let q = client.queue();
            for bad in [format!("queue://{r}/a"), format!("queue://{r}/*/jobs")] {
                local(&bad, q.enqueue(&bad, "x").await);
            }
            local(
                "queue reserve",
                q.reserve(&format!("queue://{r}/a/*/*"), ReserveOptions::default())
                    .await,
            );
            local(
                "queue subscribe",
                q.subscribe(&format!("queue://{r}/a/b/c/d")).await,
            );

            // RPC: concrete routes to call, valid patterns to serve.
            let rpc = client.rpc();
            for bad in [format!("rpc://{r}/*"), format!("kv://{r}/a/b")] {
                local(&bad, rpc.call(&bad, "").await);
            }
            local(
                "rpc serve",
                rpc.serve(&format!("rpc://{r}/a*"), 1, |_r: RpcRequest| async {
                    Ok::<_, HandlerError>(())
                })
                .await,
            );

            // Lease: three-segment routes; patterns for watching and listing.
            let leases = client.lease();
            local(
                "lease acquire",
                leases.acquire(&format!("lease://{r}/a"), "me", TTL).await,
            );
            local(
                "lease acquire wildcard",
                leases.acquire(&format!("lease://{r}/*/b"), "me", TTL).await,
            );
            local("lease query", leases.query(&format!("lease://{r}/a")).await);
            local(
                "lease subscribe",
                leases.subscribe(&format!("lease://{r}/a/b/c/d")).await,
            );
            local(
                "lease list",
                leases
                    .list(&format!("lease://{r}/a*/b"))
                    .try_collect::<Vec<_>>()
                    .await,
            );

            // Notice: concrete routes to publish; any valid pattern.
            let notice = client.notice();
            local(
                "notice publish",
                notice.publish(&format!("notice://{r}/a/*"), "x").await,
            );
            local(
                "notice subscribe",
                notice.subscribe(&format!("notice://{r}/a*")).await,
            );

            // Stream: concrete three-segment routes to write and inspect;
            // selectors to read and watch.
            let streams = client.stream();
            local(
                "stream begin",
                streams.begin(&format!("stream://{r}/a")).await,
            );
            local(
                "stream last",
                streams.last(&format!("stream://{r}/*/x")).await,
            );
            local(
                "stream metadata",
                streams.metadata(&format!("stream://{r}/a/b/c")).await,
            );
            local(
                "stream read",
                streams
                    .read_page(&format!("kv://{r}/a/x"), 0, &ReadOptions::new())
                    .await,
            );
            local(
                "stream reader",
                streams.read(&format!("stream://{r}/a*/x"), 0, ReadOptions::new()),
            );
            local(
                "stream subscribe",
                streams.subscribe(&format!("stream://{r}/a/b/c/d")).await,
            );

            // Schedule: four-segment routes; cron checked with the broker's
            // grammar.
            let schedule = client.schedule();
            local(
                "schedule create route",
                schedule
                    .create(
                        &format!("schedule://{r}/a/b"),
                        "* * * * *",
                        DeliveryMode::Single,
                        "",
                    )
                    .await,
            );
            local(
                "schedule create cron",
                schedule
                    .create(
                        &format!("schedule://{r}/a/b/c"),
                        "* * * *",
                        DeliveryMode::Single,
                        "",
                    )
                    .await,
            );
            local(
                "schedule cancel",
                schedule.cancel(&format!("schedule://{r}/*/b/c")).await,
            );
            local(
                "schedule subscribe",
                schedule.subscribe(&format!("schedule://{r}/a*")).await,
            );
            local(
                "schedule list_matching",
                schedule.list_matching(&format!("notice://{r}/**")),
            );
        })
        .await;
        // Nothing is outstanding: no request was ever admitted.
        assert_eq!(client.debug_snapshot().await.unwrap().pending, 0);
        proxy.blackhole(false);
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn what_is_missing_looks_like_in_each_domain() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let client = connected(brokers.anon_url(t)).await;
        let r = realm("missing");

        // KV: a missing key is None; a transaction the broker no longer
        // knows is 1001 (its idle expiry is in kv.rs).
        let mut tx = client
            .kv()
            .begin(&format!("kv://{r}/a/r"), TxMode::ReadWrite)
            .await
            .unwrap();
        assert_eq!(tx.get("nothing").await.unwrap(), None);
        tx.commit(Durability::Buffered).await.unwrap();

        // Stream: an unknown resource reads as empty, not as an error.
        let streams = client.stream();
        let route = format!("stream://{r}/a/x");
        assert_eq!(streams.last(&route).await.unwrap(), None);
        let meta = streams.metadata(&route).await.unwrap();
        assert_eq!((meta.record_count, meta.next_offset()), (0, 0));
        let page = streams
            .read_page(&route, 0, &ReadOptions::new())
            .await
            .unwrap();
        assert!(page.is_empty() && page.caught_up());

        // Lease: nobody holds it (QUERY); releasing what is not held is 5004.
        let leases = client.lease();
        let route = format!("lease://{r}/a/r");
        assert!(!leases.query(&route).await.unwrap().is_held());
        let lease = leases.acquire(&route, "me", TTL).await.unwrap();
        let twin = leases.acquire(&route, "me", TTL).await.unwrap();
        twin.release().await.unwrap();
        let e = lease.release().await.unwrap_err();
        assert_eq!(broker_code(&e), Some(codes::LEASE_NOT_FOUND));
        assert!(!e.is_retryable() && !e.maybe_applied());

        // RPC: a route nobody serves is 6004, retryable (a worker may come).
        let e = client
            .rpc()
            .request(&format!("rpc://{r}/nobody"), "")
            .await
            .unwrap_err();
        assert_eq!(broker_code(&e), Some(codes::RPC_NO_WORKER));
        assert!(e.is_retryable() && !e.maybe_applied());

        // Schedule: cancelling what does not exist succeeds (idempotent).
        client
            .schedule()
            .cancel(&format!("schedule://{r}/a/b/run"))
            .await
            .unwrap();

        // Queue: an empty queue reserves nothing.
        let got = client
            .queue()
            .reserve(&format!("queue://{r}/a/jobs"), ReserveOptions::default())
            .await
            .unwrap();
        assert!(got.is_empty());
        client.close().await;
    }
    brokers.shutdown().await;
}

/// A reservation whose message was redelivered and completed by someone
/// else: the broker no longer has the message. Its refusal of EXTEND and
/// COMPLETE is the Queue domain's own, in the uncoded envelope, so the SDK
/// reports a broker error without a code; the refused COMPLETE hands the
/// reservation back.
#[tokio::test]
async fn a_reservation_whose_message_is_gone_is_refused_uncoded() {
    let Some(broker) = Timed::start("a reservation's lease runs out on broker time").await else {
        return;
    };
    let a = connected(&broker.tcp).await;
    let b = connected(&broker.ws).await;
    let route = format!("queue://{}/a/jobs", realm("gone"));
    let id = a.queue().enqueue(&route, "x").await.unwrap();
    let lease2 = ReserveOptions {
        lease: Duration::from_secs(2),
        ..ReserveOptions::default()
    };
    let old = a
        .queue()
        .reserve(&route, lease2)
        .await
        .unwrap()
        .pop()
        .unwrap();
    broker.clock.advance(Duration::from_secs(3)).await;
    let again = b
        .queue()
        .reserve(&route, ReserveOptions::default())
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(again.id(), id);
    again.complete().await.unwrap();

    let e = old.extend(Duration::from_secs(5)).await.unwrap_err();
    assert_eq!((e.kind(), e.code()), (ErrorKind::Broker, None), "{e}");
    assert!(e.message().contains("not found"), "{e}");
    let failed = old.complete().await.unwrap_err();
    assert_eq!(
        (failed.error().kind(), failed.error().code()),
        (ErrorKind::Broker, None),
        "{failed}"
    );
    assert!(failed.error().message().contains("not found"), "{failed}");
    assert!(!failed.error().maybe_applied() && !failed.error().is_retryable());
    assert_eq!(failed.into_reservation().id(), id);
    a.close().await;
    b.close().await;
    broker.shutdown().await;
}
