//! The official client, `cntryl-fitz` 0.2.0: Schedule against the embedded
//! broker (manual clock; anonymous and JWT; TCP and WebSocket), and the
//! built binary run as the compose pair (env only), including a fire on the
//! real clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::binary::{BrokerProcess, temp_dir};
use crate::support::{ALL, SECRET, token};
use cntryl_fitz::client_domains::kv::KvGetResult;
use cntryl_fitz::client_domains::schedule::{ScheduleDeliveryMode as Mode, ScheduleEntry};
use cntryl_fitz::{Client, FitzError, KvDurability, TransactionMode};
use fitz_broker::{AuthConfig, Broker, Clock};
use futures_util::StreamExt;

const T0: u64 = 1_704_067_200;
const WAIT: Duration = Duration::from_secs(5);

fn entry(route: &str, cron: &str, mode: Mode, payload: &[u8]) -> ScheduleEntry {
    ScheduleEntry {
        route: route.into(),
        cron: cron.into(),
        delivery_mode: mode,
        payload: payload.to_vec(),
    }
}

fn domain_code(e: &FitzError) -> u32 {
    match e {
        FitzError::Domain { code, .. } => *code,
        other => panic!("not a domain error: {other:?}"),
    }
}

/// Every Schedule operation through the official client; `fire` moves the
/// broker's clock past the next minute.
async fn exercise(client: &Client, tag: &str, fire: impl Fn()) {
    client.connect().await.expect("connects");
    let s = client.schedule().unwrap();
    let route = |name: &str| format!("schedule://interop/{tag}/{name}/run");
    assert_eq!(
        s.create(&route("a"), "* * * * *", Mode::Broadcast, b"x")
            .await
            .unwrap(),
        route("a")
    );
    s.create_batch(&[
        entry(&route("b"), "0 2 * * *", Mode::Single, b"b"),
        entry(&route("c"), "*/5 * * * 1-5", Mode::Broadcast, b""),
    ])
    .await
    .unwrap();
    // Upsert.
    s.create(&route("b"), "15 6 * * *", Mode::Single, b"b2")
        .await
        .unwrap();
    let page = s.list(Some(0), Some(100)).await.unwrap();
    assert_eq!(page.total_count, 3);
    assert_eq!(
        page.entries[1],
        entry(&route("b"), "15 6 * * *", Mode::Single, b"b2")
    );
    let selected = s
        .list_by_selector(&format!("schedule://interop/{tag}/*/run"))
        .await
        .unwrap();
    assert_eq!(selected.len(), 3);
    let first = s.list_v2(None, Some(2)).await.unwrap();
    assert!(first.has_more);
    assert_eq!(
        first.continuation.as_deref(),
        Some(format!("schedule-list-v1:1:{}", route("b")).as_str())
    );
    let rest = s
        .list_v2(first.continuation.as_deref(), None)
        .await
        .unwrap();
    assert_eq!(
        (rest.entries.len(), rest.has_more, rest.continuation),
        (1, false, None)
    );
    // Errors: uncoded from the domain (code 0), coded on LIST.
    let e = s
        .create(&route("bad"), "0 0 31 2 *", Mode::Single, b"")
        .await
        .unwrap_err();
    assert_eq!(domain_code(&e), 0, "{e}");
    assert!(e.to_string().contains("never fire"), "{e}");
    let e = s.list(None, Some(1001)).await.unwrap_err();
    assert_eq!(domain_code(&e), 7004, "{e}");
    let e = s.list_v2(None, Some(1001)).await.unwrap_err();
    assert_eq!(domain_code(&e), 0, "{e}");

    // A subscription receives a fire.
    let mut sub = s
        .subscribe(&format!("schedule://interop/{tag}/*/run"))
        .await
        .unwrap();
    fire();
    let n = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("fire in time")
        .expect("stream open")
        .unwrap();
    assert_eq!((n.route, n.payload), (route("a"), b"x".to_vec()));
    sub.unsubscribe().await.unwrap();

    s.cancel(&route("a")).await.unwrap();
    s.cancel(&route("a")).await.unwrap();
    s.cancel(&route("never")).await.unwrap();
    assert_eq!(s.list(None, None).await.unwrap().total_count, 2);
    for name in ["b", "c"] {
        s.cancel(&route(name)).await.unwrap();
    }
    client.close().await.unwrap();
}

fn urls(broker: &Broker) -> [(String, &'static str); 2] {
    [(broker.tcp_url(), "tcp"), (broker.ws_url(), "ws")]
}

fn manual_clock() -> Clock {
    Clock::manual(UNIX_EPOCH + Duration::from_secs(T0))
}

#[tokio::test]
async fn official_client_schedule_anonymous_over_tcp_and_ws() {
    let broker = Broker::builder()
        .clock(manual_clock())
        .start()
        .await
        .unwrap();
    for (url, tag) in urls(&broker) {
        let client = Client::anonymous(url).build().unwrap();
        exercise(&client, tag, || {
            broker.clock().advance(Duration::from_secs(60));
        })
        .await;
    }
}

#[tokio::test]
async fn official_client_schedule_with_jwt_over_tcp_and_ws() {
    let broker = Broker::builder()
        .clock(manual_clock())
        .auth(
            AuthConfig::jwt_hs256(SECRET)
                .audiences(["fitz"])
                .family_map([("dev", 1), ("acme", 2)]),
        )
        .start()
        .await
        .unwrap();
    for (url, tag) in urls(&broker) {
        let client = Client::builder(url.clone(), || async { Ok(token("dev", ALL)) })
            .build()
            .unwrap();
        exercise(&client, tag, || {
            broker.clock().advance(Duration::from_secs(60));
        })
        .await;
        // A token scoped to one area: 7009 outside it.
        let scoped = Client::builder(url, || async {
            Ok(token(
                "dev",
                &["schedule://prod/jobs/**#write", "schedule://prod/**#read"],
            ))
        })
        .build()
        .unwrap();
        scoped.connect().await.unwrap();
        let s = scoped.schedule().unwrap();
        s.create(
            "schedule://prod/jobs/backup/run",
            "0 2 * * *",
            Mode::Broadcast,
            b"",
        )
        .await
        .unwrap();
        let e = s
            .create(
                "schedule://prod/other/x/run",
                "0 2 * * *",
                Mode::Broadcast,
                b"",
            )
            .await
            .unwrap_err();
        assert_eq!(domain_code(&e), 7009, "{e}");
        let e = s.list(None, None).await.unwrap_err();
        assert_eq!(domain_code(&e), 7009, "{e}");
        let e = s.subscribe("schedule://**").await.err().unwrap();
        assert_eq!(domain_code(&e), 7009, "{e}");
        s.cancel("schedule://prod/jobs/backup/run").await.unwrap();
        scoped.close().await.unwrap();
    }
}

/// KV and Schedule through the official client against one binary.
async fn exercise_binary(url: String, jwt: bool, tag: &str) {
    let client = if jwt {
        Client::builder(url, || async { Ok(token("dev", ALL)) })
            .build()
            .unwrap()
    } else {
        Client::anonymous(url).build().unwrap()
    };
    client.connect().await.expect("connects");
    let kv = client.kv().unwrap();
    let route = format!("kv://interop/{tag}/users");
    let tx = kv.begin(&route, TransactionMode::ReadWrite).await.unwrap();
    tx.put(b"alice", b"1").await.unwrap();
    tx.commit(KvDurability::Sync).await.unwrap();
    let tx = kv.begin(&route, TransactionMode::ReadOnly).await.unwrap();
    assert_eq!(
        tx.get(b"alice").await.unwrap(),
        KvGetResult::Found(b"1".to_vec())
    );
    tx.commit(KvDurability::Buffered).await.unwrap();
    let s = client.schedule().unwrap();
    let sroute = format!("schedule://interop/{tag}/job/run");
    s.create(&sroute, "0 3 * * *", Mode::Single, b"p")
        .await
        .unwrap();
    let page = s.list(None, None).await.unwrap();
    assert!(page.entries.iter().any(|e| e.route == sroute));
    s.cancel(&sroute).await.unwrap();
    client.close().await.unwrap();
}

/// The pair `scripts/brokers.sh` runs (and compose.yml documents), from
/// the built binary with environment alone.
#[tokio::test]
async fn the_binary_runs_as_the_compose_pair() {
    let auth_dir = temp_dir("pair-auth");
    let anon_dir = temp_dir("pair-anon");
    let auth_path = auth_dir.to_string_lossy().to_string();
    let anon_path = anon_dir.to_string_lossy().to_string();
    let auth = BrokerProcess::spawn(&[
        ("FITZ_AUTH_REQUIRED", "true"),
        ("FITZ_JWT_HMAC_SECRET", "dev-test-secret"),
        ("FITZ_JWT_AUDIENCE", "fitz"),
        ("FITZ_ROUTE_FAMILY_MAP", "dev=1"),
        ("FITZ_ASSUME_LOCAL_LOOPBACK_EDGE", "true"),
        ("FITZ_ADMIN_AUTH_MODE", "open"),
        ("FITZ_STORAGE_MODE", "local"),
        ("FITZ_STORAGE_PATH", auth_path.as_str()),
    ]);
    let anon = BrokerProcess::spawn(&[
        ("FITZ_AUTH_REQUIRED", "false"),
        ("FITZ_ADMIN_AUTH_MODE", "open"),
        ("FITZ_STORAGE_MODE", "local"),
        ("FITZ_STORAGE_PATH", anon_path.as_str()),
    ]);
    for (url, tag) in [(&auth.tcp_url, "tcp"), (&auth.ws_url, "ws")] {
        exercise_binary(url.clone(), true, tag).await;
    }
    for (url, tag) in [(&anon.tcp_url, "tcp"), (&anon.ws_url, "ws")] {
        exercise_binary(url.clone(), false, tag).await;
    }
    // The auth broker refuses an anonymous client.
    let client = Client::anonymous(auth.tcp_url.clone()).build().unwrap();
    assert_eq!(
        client.connect().await.unwrap_err().kind(),
        cntryl_fitz::FitzErrorKind::Authentication
    );
    assert!(auth.terminate() && anon.terminate(), "graceful exits");
    let _ = std::fs::remove_dir_all(auth_dir);
    let _ = std::fs::remove_dir_all(anon_dir);
}

/// AC-SCHEDULE-003 on the real clock: an every-minute schedule notifies at
/// the next minute boundary (within a second or two). Waits up to a minute.
#[tokio::test]
async fn the_binary_fires_on_the_real_clock() {
    let dir = temp_dir("real-clock");
    let path = dir.to_string_lossy().to_string();
    let broker = BrokerProcess::spawn(&[
        ("FITZ_AUTH_REQUIRED", "false"),
        ("FITZ_STORAGE_MODE", "local"),
        ("FITZ_STORAGE_PATH", path.as_str()),
    ]);
    let client = Client::anonymous(broker.ws_url.clone()).build().unwrap();
    client.connect().await.unwrap();
    let s = client.schedule().unwrap();
    let mut sub = s.subscribe("schedule://clock/**").await.unwrap();
    s.create(
        "schedule://clock/a/tick/run",
        "* * * * *",
        Mode::Broadcast,
        b"tick",
    )
    .await
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(70), sub.next())
        .await
        .expect("fired within a minute")
        .expect("stream open")
        .unwrap();
    let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(
        (n.route.as_str(), n.payload.as_slice()),
        ("schedule://clock/a/tick/run", &b"tick"[..])
    );
    assert!(
        at.as_secs() % 60 < 3,
        "delivered {}s after the minute",
        at.as_secs() % 60
    );
    client.close().await.unwrap();
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}
