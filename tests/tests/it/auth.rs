//! Authentication and authorization through the SDK, over TCP and
//! WebSocket, against the authenticated broker (HS256, audience `fitz`,
//! family map `dev=1`).
//!
//! * At connect, a token the broker refuses (bad signature, expired, wrong
//!   audience, unmapped identity, no permissions, not a JWT, none) is a typed
//!   [`ErrorKind::Auth`] error and the client is closed for good; the same
//!   during a reconnect closes the client with [`Event::AuthRejected`]. Over
//!   TCP that takes the configured number of refused handshakes in a row
//!   (`auth_attempts`, 3), each with a fresh token; over WebSocket the
//!   broker's `connect failed` reason settles it at once.
//! * A valid token whose permissions do not cover an operation gets that
//!   domain's unauthorized code on **every** domain (1011, 2009, 3009, 4009,
//!   5009, 6009, 7009), as a [`ErrorKind::Broker`] error that is neither
//!   retryable nor possibly applied, and the session stays usable. Each
//!   domain reports it through its own envelope: coded replies for KV,
//!   Stream, Notice SUBSCRIBE, Queue, Lease and Schedule (the broker checks
//!   permissions before the domain, so Schedule's refusal is coded although
//!   its domain errors are not), the terminal response of the call for RPC.
//!   Notice PUBLISH has no reply at all: an unauthorized publish is dropped
//!   by the broker, which the test proves by delivery order. Queue EXTEND
//!   and COMPLETE need the same write permission as the RESERVE that made
//!   the reservation, so the SDK can never send an unauthorized one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fitz::kv::{Durability, TxMode};
use fitz::queue::ReserveOptions;
use fitz::rpc::{HandlerError, RpcRequest};
use fitz::schedule::{DeliveryMode, ScheduleEntry};
use fitz::stream::ReadOptions;
use fitz::{Client, ErrorKind, Event, State, codes};
use fitz_tests::{
    Brokers, BrokersExt, Jwt, Transport, connected_with, jwt, next_item, realm, token_builder,
    wait_event,
};
use futures_util::TryStreamExt;

const TTL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn authenticated_broker_accepts_the_test_token_and_rejects_others() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let url = brokers.auth_url(t);
        let ok = token_builder(url, brokers.token())
            .service_name("fitz-tests")
            .build()
            .unwrap();
        ok.connect().await.unwrap();
        assert_eq!(ok.state(), State::Authenticated);
        ok.close().await;

        let dev = || Jwt::dev().secret(&brokers.secret);
        for bad in [
            jwt::wrong_secret_token(),
            dev().expires_in(-60).mint(),
            dev().tid("nobody").mint(),
            String::new(),
        ] {
            let client = token_builder(url, bad).build().unwrap();
            let e = client.connect().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Auth, "{url}: {e}");
            assert!(!e.is_retryable());
            assert_eq!(client.state(), State::Closed);
        }
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn every_refused_token_is_a_typed_auth_error_and_closes_the_client() {
    let brokers = Brokers::start().await.unwrap();
    let dev = || Jwt::dev().secret(&brokers.secret);
    let refused = [
        ("signed with another secret", jwt::wrong_secret_token()),
        ("expired a minute ago", dev().expires_in(-60).mint()),
        (
            "another audience",
            dev().claim("aud", "someone-else".into()).mint(),
        ),
        ("an unmapped identity", dev().tid("nobody").mint()),
        (
            "no permission claim",
            dev().claim("permissions", serde_json::Value::Null).mint(),
        ),
        ("not a JWT", "not-a-jwt".to_owned()),
        ("no token", String::new()),
    ];
    for t in Transport::BOTH {
        let url = brokers.auth_url(t);
        for (what, token) in &refused {
            let client = token_builder(url, token.clone()).build().unwrap();
            let mut events = client.events();
            let e = client.connect().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Auth, "{url}, {what}: {e}");
            assert!(!e.is_retryable() && !e.maybe_applied(), "{what}");
            assert_eq!(client.state(), State::Closed, "{what}");
            match wait_event(&mut events, |e| matches!(e, Event::AuthRejected { .. })).await {
                Event::AuthRejected { error } => assert_eq!(error.kind(), ErrorKind::Auth),
                _ => unreachable!(),
            }
            // For good: nothing silently continues as authenticated.
            let e = client.connect().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Closed, "{what}");
            let e = client
                .kv()
                .begin(&format!("kv://{}/a/r", realm("x")), TxMode::ReadOnly)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Closed, "{what}");
        }
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_token_refused_on_reconnect_closes_the_client() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.auth_proxy(t).await;
        // The first session gets a valid token, every later one an expired one.
        let calls = Arc::new(AtomicUsize::new(0));
        let (good, expired) = (
            brokers.token(),
            Jwt::dev().secret(&brokers.secret).expires_in(-60).mint(),
        );
        let c = calls.clone();
        let client = Client::builder(url.as_str(), move || {
            let token = if c.fetch_add(1, Ordering::SeqCst) == 0 {
                good.clone()
            } else {
                expired.clone()
            };
            async move { Ok::<_, std::io::Error>(token) }
        })
        .reconnect(fitz_tests::fast_reconnect())
        .build()
        .unwrap();
        client.connect().await.unwrap();
        let mut sub = client
            .notice()
            .subscribe(&format!("notice://{}/a/*", realm("re")))
            .await
            .unwrap();
        let mut events = client.events();
        proxy.cut_all();
        match wait_event(&mut events, |e| matches!(e, Event::AuthRejected { .. })).await {
            Event::AuthRejected { error } => assert_eq!(error.kind(), ErrorKind::Auth),
            _ => unreachable!(),
        }
        wait_event(&mut events, |e| matches!(e, Event::Closed)).await;
        assert_eq!(client.state(), State::Closed);
        // The first session's token, then fresh ones until the refusal is
        // settled: on TCP the broker closes without a word, so the default
        // three handshakes in a row; over WebSocket it says `connect failed`,
        // and the provider's next token is that same one, never sent again.
        let asked = match t {
            Transport::Tcp => 1 + 3,
            Transport::Ws => 1 + 2,
        };
        assert_eq!(calls.load(Ordering::SeqCst), asked, "{t:?}");
        // The subscription ends with the rejection; requests fail closed.
        let e = fitz_tests::within(
            "the subscription's end",
            futures_util::StreamExt::next(&mut sub),
        )
        .await
        .expect("an error item before the end")
        .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Auth | ErrorKind::Closed),
            "{e}"
        );
        let e = client
            .notice()
            .publish(&format!("notice://{}/a/b", realm("re")), "x")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed);
    }
    brokers.shutdown().await;
}

/// Checks one refusal: the domain's code, typed, final, not applied.
fn refused<T: std::fmt::Debug>(what: &str, want: u32, result: fitz::Result<T>) {
    let e = result.expect_err(what);
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::Broker, Some(want)),
        "{what}: {e}"
    );
    assert_eq!(
        fitz::codes::name(want).rsplit('_').next(),
        Some("UNAUTHORIZED")
    );
    assert!(!e.is_retryable(), "{what}: {e}");
    assert!(!e.maybe_applied(), "{what}: {e}");
}

/// A token that may do anything under one realm per domain and nothing
/// elsewhere: every domain refuses the other realm with its own code, and
/// the same session keeps working where it is allowed.
#[tokio::test]
async fn every_domain_refuses_an_unauthorized_operation_with_its_code() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (ok, no) = (realm("ok"), realm("no"));
        let grants: Vec<String> = [
            "kv", "queue", "rpc", "notice", "lease", "stream", "schedule",
        ]
        .iter()
        .map(|scheme| format!("{scheme}://{ok}/**#*"))
        .collect();
        let grants: Vec<&str> = grants.iter().map(String::as_str).collect();
        let url = brokers.auth_url(t);
        let client = connected_with(url, brokers.scoped_token(&grants)).await;
        let full = connected_with(url, brokers.token()).await;

        // KV (1011): BEGIN for reading or writing, and watching.
        let kv = client.kv();
        for mode in [TxMode::ReadOnly, TxMode::ReadWrite] {
            refused(
                "kv begin",
                codes::KV_UNAUTHORIZED,
                kv.begin(&format!("kv://{no}/a/r"), mode).await,
            );
        }
        refused(
            "kv watch",
            codes::KV_UNAUTHORIZED,
            kv.subscribe(&format!("kv://{no}/**")).await,
        );

        // Stream (2009): appending, reading, the latest record, watching.
        let streams = client.stream();
        let denied = format!("stream://{no}/a/x");
        refused(
            "stream begin",
            codes::STREAM_UNAUTHORIZED,
            streams.begin(&denied).await,
        );
        refused(
            "stream read",
            codes::STREAM_UNAUTHORIZED,
            streams.read_page(&denied, 0, &ReadOptions::new()).await,
        );
        refused(
            "stream last",
            codes::STREAM_UNAUTHORIZED,
            streams.last(&denied).await,
        );
        refused(
            "stream subscribe",
            codes::STREAM_UNAUTHORIZED,
            streams.subscribe(&format!("stream://{no}/**")).await,
        );

        // Notice (3009): SUBSCRIBE is refused with its code. PUBLISH has no
        // reply; the broker drops it. A watcher allowed everywhere sees the
        // marker published after it, and nothing before.
        refused(
            "notice subscribe",
            codes::NOTICE_UNAUTHORIZED,
            client
                .notice()
                .subscribe(&format!("notice://{no}/**"))
                .await,
        );
        let route = format!("notice://{no}/a/b");
        let mut watch = full
            .notice()
            .subscribe(&format!("notice://{no}/**"))
            .await
            .unwrap();
        client
            .notice()
            .publish(&route, "unauthorized")
            .await
            .unwrap();
        // A round trip on the same connection: the broker has handled the
        // publish before it answers this.
        client
            .notice()
            .subscribe(&format!("notice://{ok}/**"))
            .await
            .unwrap()
            .unsubscribe()
            .await
            .unwrap();
        full.notice().publish(&route, "marker").await.unwrap();
        let first = next_item(&mut watch).await;
        assert_eq!(
            &first.payload()[..],
            b"marker",
            "the refused publish was delivered"
        );

        // Queue (4009): ENQUEUE and RESERVE (writes), SUBSCRIBE (a read).
        let q = client.queue();
        let denied = format!("queue://{no}/a/jobs");
        refused(
            "queue enqueue",
            codes::QUEUE_UNAUTHORIZED,
            q.enqueue(&denied, "x").await,
        );
        refused(
            "queue reserve",
            codes::QUEUE_UNAUTHORIZED,
            q.reserve(&denied, ReserveOptions::default()).await,
        );
        refused(
            "queue subscribe",
            codes::QUEUE_UNAUTHORIZED,
            q.subscribe(&format!("queue://{no}/**")).await,
        );

        // Lease (5009): ACQUIRE, QUERY, SUBSCRIBE, LIST.
        let leases = client.lease();
        let denied = format!("lease://{no}/a/r");
        refused(
            "lease acquire",
            codes::LEASE_UNAUTHORIZED,
            leases.acquire(&denied, "me", TTL).await,
        );
        refused(
            "lease query",
            codes::LEASE_UNAUTHORIZED,
            leases.query(&denied).await,
        );
        refused(
            "lease subscribe",
            codes::LEASE_UNAUTHORIZED,
            leases.subscribe(&format!("lease://{no}/**")).await,
        );
        refused(
            "lease list",
            codes::LEASE_UNAUTHORIZED,
            leases
                .list(&format!("lease://{no}/**"))
                .try_collect::<Vec<_>>()
                .await,
        );

        // RPC (6009): a call (its terminal response carries the code) and a
        // worker registration.
        refused(
            "rpc request",
            codes::RPC_UNAUTHORIZED,
            client.rpc().request(&format!("rpc://{no}/op"), "").await,
        );
        refused(
            "rpc serve",
            codes::RPC_UNAUTHORIZED,
            client
                .rpc()
                .serve(&format!("rpc://{no}/*"), 1, |_r: RpcRequest| async {
                    Ok::<_, HandlerError>(())
                })
                .await,
        );

        // Schedule (7009): CREATE, CREATE_BATCH, CANCEL, SUBSCRIBE.
        let schedule = client.schedule();
        let denied = format!("schedule://{no}/a/b/run");
        refused(
            "schedule create",
            codes::SCHEDULE_UNAUTHORIZED,
            schedule
                .create(&denied, "* * * * *", DeliveryMode::Single, "")
                .await,
        );
        refused(
            "schedule create_batch",
            codes::SCHEDULE_UNAUTHORIZED,
            schedule
                .create_batch([ScheduleEntry::new(
                    &denied,
                    "* * * * *",
                    DeliveryMode::Single,
                    "",
                )])
                .await,
        );
        refused(
            "schedule cancel",
            codes::SCHEDULE_UNAUTHORIZED,
            schedule.cancel(&denied).await,
        );
        refused(
            "schedule subscribe",
            codes::SCHEDULE_UNAUTHORIZED,
            schedule.subscribe(&format!("schedule://{no}/**")).await,
        );

        // None of that hurt the session: where it is allowed, it works.
        assert_eq!(client.state(), State::Authenticated);
        let mut tx = kv
            .begin(&format!("kv://{ok}/a/r"), TxMode::ReadWrite)
            .await
            .unwrap();
        tx.put("k", "v").await.unwrap();
        tx.commit(Durability::Sync).await.unwrap();
        let id = q
            .enqueue(&format!("queue://{ok}/a/jobs"), "x")
            .await
            .unwrap();
        let got = q
            .reserve(&format!("queue://{ok}/a/jobs"), ReserveOptions::default())
            .await
            .unwrap();
        assert_eq!(got.iter().map(|r| r.id()).collect::<Vec<_>>(), [id]);
        for r in got {
            r.complete().await.unwrap();
        }
        leases
            .acquire(&format!("lease://{ok}/a/r"), "me", TTL)
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        full.close().await;
        client.close().await;
    }
    brokers.shutdown().await;
}

/// Read-only grants: the reading half of each domain works, the writing
/// half is refused with the domain's code.
#[tokio::test]
async fn read_only_grants_refuse_every_write() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let ro = realm("ro");
        let grants: Vec<String> = [
            "kv", "queue", "rpc", "notice", "lease", "stream", "schedule",
        ]
        .iter()
        .map(|scheme| format!("{scheme}://{ro}/**#read"))
        .collect();
        let grants: Vec<&str> = grants.iter().map(String::as_str).collect();
        let client = connected_with(brokers.auth_url(t), brokers.scoped_token(&grants)).await;

        // Reads are fine.
        let mut tx = client
            .kv()
            .begin(&format!("kv://{ro}/a/r"), TxMode::ReadOnly)
            .await
            .unwrap();
        assert_eq!(tx.get("k").await.unwrap(), None);
        tx.rollback().await.unwrap();
        client
            .stream()
            .read_page(&format!("stream://{ro}/a/x"), 0, &ReadOptions::new())
            .await
            .unwrap();
        client
            .lease()
            .query(&format!("lease://{ro}/a/r"))
            .await
            .unwrap();
        client
            .notice()
            .subscribe(&format!("notice://{ro}/**"))
            .await
            .unwrap()
            .unsubscribe()
            .await
            .unwrap();

        // Writes are not.
        refused(
            "kv begin read-write",
            codes::KV_UNAUTHORIZED,
            client
                .kv()
                .begin(&format!("kv://{ro}/a/r"), TxMode::ReadWrite)
                .await,
        );
        refused(
            "stream begin",
            codes::STREAM_UNAUTHORIZED,
            client.stream().begin(&format!("stream://{ro}/a/x")).await,
        );
        refused(
            "queue enqueue",
            codes::QUEUE_UNAUTHORIZED,
            client
                .queue()
                .enqueue(&format!("queue://{ro}/a/jobs"), "x")
                .await,
        );
        refused(
            "lease acquire",
            codes::LEASE_UNAUTHORIZED,
            client
                .lease()
                .acquire(&format!("lease://{ro}/a/r"), "me", TTL)
                .await,
        );
        refused(
            "rpc request",
            codes::RPC_UNAUTHORIZED,
            client.rpc().request(&format!("rpc://{ro}/op"), "").await,
        );
        // A worker needs every access to its pattern (AC-RPC-007).
        refused(
            "rpc serve",
            codes::RPC_UNAUTHORIZED,
            client
                .rpc()
                .serve(&format!("rpc://{ro}/*"), 1, |_r: RpcRequest| async {
                    Ok::<_, HandlerError>(())
                })
                .await,
        );
        refused(
            "schedule create",
            codes::SCHEDULE_UNAUTHORIZED,
            client
                .schedule()
                .create(
                    &format!("schedule://{ro}/a/b/run"),
                    "* * * * *",
                    DeliveryMode::Single,
                    "",
                )
                .await,
        );
        client.close().await;
    }
    brokers.shutdown().await;
}
