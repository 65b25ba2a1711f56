//! Notice through the wire: fan-out, wildcards, isolation, limits and the
//! slow-consumer policy.

use crate::support::{Kind, RawClient, code};
use bytes::{Bytes, BytesMut};
use fitz_broker::{Broker, OutboundLimits};
use fitz_protocol::control::SessionMetadata;
use fitz_protocol::kv::{self, BeginOk, TxMode};
use fitz_protocol::notice::{self, Notify, SubscribeReply};
use fitz_protocol::{Message, WireError, codes, types};

both_transports!(
    subscribe_reply_and_delivery,
    wildcards_and_realm_isolation,
    overlapping_patterns_deliver_twice_duplicates_once,
    unsubscribe_by_id_and_all,
    invalid_routes_and_patterns,
    registration_limits,
    order_is_kept_per_subscriber,
    slow_subscriber_loses_notifications_others_do_not,
    reply_backlog_over_the_bound_closes_a_slow_consumer,
);

fn publish(route: &str, payload: &[u8]) -> notice::Publish {
    notice::Publish {
        route: route.into(),
        payload: Bytes::copy_from_slice(payload),
    }
}

async fn subscribe(c: &mut RawClient, pattern: &str) -> u64 {
    c.ok::<_, SubscribeReply>(&notice::Subscribe::new(pattern))
        .await
        .sub_id
}

async fn next_notify(c: &mut RawClient) -> Notify {
    let l = c.next_of_type(types::NOTICE_NOTIFY).await;
    assert_eq!(l.correlation, None, "notifications are never labelled");
    Notify::decode(l.record.payload).unwrap()
}

async fn subscribe_reply_and_delivery(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut s = RawClient::anon(&broker, kind).await;
    let mut p = RawClient::anon(&broker, kind).await;
    let raw = s.call(&notice::Subscribe::new("notice://prod/app/*")).await;
    assert_eq!(raw.len(), 10);
    assert_eq!(&raw[..2], &[0, 1], "[0][1][u64 id]");
    let id = u64::from_be_bytes(raw[2..].try_into().unwrap());
    p.send(None, &publish("notice://prod/app/orders", b"hi"))
        .await;
    let n = next_notify(&mut s).await;
    assert_eq!(
        (n.sub_id, &*n.route, &n.payload[..]),
        (id, "notice://prod/app/orders", &b"hi"[..])
    );
    // No reply to a successful PUBLISH, and no subscribers is fine.
    p.send(None, &publish("notice://nobody/x", b"")).await;
    p.expect_quiet().await;
}

async fn wildcards_and_realm_isolation(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut s = RawClient::anon(&broker, kind).await;
    let mut p = RawClient::anon(&broker, kind).await;
    let star = subscribe(&mut s, "notice://a/*/events").await;
    let deep = subscribe(&mut s, "notice://b/**").await;
    let realm = subscribe(&mut s, "notice://*/orders/created").await;
    for route in [
        "notice://a/x/events",
        "notice://a/x/y/events",
        "notice://b",
        "notice://b/1/2/3/4",
        "notice://z/orders/created",
        "notice://c/x/events",
    ] {
        p.send(None, &publish(route, route.as_bytes())).await;
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        let n = next_notify(&mut s).await;
        got.push((n.sub_id, n.route.to_string()));
    }
    assert_eq!(
        got,
        [
            (star, "notice://a/x/events".to_string()),
            (deep, "notice://b".to_string()),
            (deep, "notice://b/1/2/3/4".to_string()),
            (realm, "notice://z/orders/created".to_string()),
        ]
    );
    s.expect_quiet().await;
}

async fn overlapping_patterns_deliver_twice_duplicates_once(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut s = RawClient::anon(&broker, kind).await;
    let a = subscribe(&mut s, "notice://prod/app/*").await;
    let b = subscribe(&mut s, "notice://prod/**").await;
    assert_eq!(subscribe(&mut s, "notice://prod/**").await, b);
    s.send(None, &publish("notice://prod/app/orders", b"x"))
        .await;
    let mut ids = vec![
        next_notify(&mut s).await.sub_id,
        next_notify(&mut s).await.sub_id,
    ];
    ids.sort_unstable();
    assert_eq!(ids, [a, b]);
    s.expect_quiet().await;
}

async fn unsubscribe_by_id_and_all(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut s = RawClient::anon(&broker, kind).await;
    let mut other = RawClient::anon(&broker, kind).await;
    let a = subscribe(&mut s, "notice://r/a").await;
    let b = subscribe(&mut s, "notice://r/b").await;
    // Another session cannot remove it; the call still succeeds (idempotent).
    other
        .ok::<_, notice::UnsubscribeOk>(&notice::Unsubscribe { sub_id: a })
        .await;
    s.ok::<_, notice::UnsubscribeOk>(&notice::Unsubscribe { sub_id: a })
        .await;
    s.ok::<_, notice::UnsubscribeOk>(&notice::Unsubscribe { sub_id: a })
        .await;
    other.send(None, &publish("notice://r/a", b"1")).await;
    other.send(None, &publish("notice://r/b", b"2")).await;
    assert_eq!(next_notify(&mut s).await.sub_id, b);
    s.ok::<_, notice::UnsubscribeAllOk>(&notice::UnsubscribeAll)
        .await;
    other.send(None, &publish("notice://r/b", b"3")).await;
    s.expect_quiet().await;
    assert_eq!(broker.engines().notice.subscriptions().len(), 0);
}

async fn invalid_routes_and_patterns(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    for bad in ["notice://", "kv://a/b", "notice://a/b*", "notice://a//b"] {
        let e = c.fails(&notice::Subscribe::new(bad)).await;
        assert_eq!(code(&e), codes::NOTICE_INVALID_PATTERN, "{bad}");
    }
    // An invalid PUBLISH route gets a coded 3001 record (correlated when labelled).
    for bad in ["notice://a/*", "notice://a//b", "queue://a/b/c"] {
        let e = c.fails(&publish(bad, b"")).await;
        assert_eq!(code(&e), codes::NOTICE_INVALID_ROUTE, "{bad}");
    }
    c.send(None, &publish("notice://a/**", b"")).await;
    let l = c.next_record().await;
    assert_eq!((l.correlation, l.record.ty), (None, types::NOTICE_PUBLISH));
    assert_eq!(
        WireError::decode(l.record.payload).unwrap().code(),
        Some(codes::NOTICE_INVALID_ROUTE)
    );
}

async fn registration_limits(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    for i in 0..128 {
        subscribe(&mut c, &format!("notice://w{i}/**")).await;
    }
    let e = c.fails(&notice::Subscribe::new("notice://x/**")).await;
    assert_eq!(
        (code(&e), &*e.message),
        (
            codes::NOTICE_SUBSCRIPTION_LIMIT,
            "wildcard subscription limit exceeded (128 per session)"
        )
    );
    // Duplicate checked before the limit; exact routes still fit.
    subscribe(&mut c, "notice://w0/**").await;
    for i in 128..1024 {
        subscribe(&mut c, &format!("notice://e/{i}")).await;
    }
    let e = c.fails(&notice::Subscribe::new("notice://e/x")).await;
    assert_eq!(
        (code(&e), &*e.message),
        (
            codes::NOTICE_SUBSCRIPTION_LIMIT,
            "total subscription limit exceeded (1024 per session)"
        )
    );
    // Limits are per session.
    let mut d = RawClient::anon(&broker, kind).await;
    subscribe(&mut d, "notice://x/**").await;
}

async fn order_is_kept_per_subscriber(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut s1 = RawClient::anon(&broker, kind).await;
    let mut s2 = RawClient::anon(&broker, kind).await;
    let mut p = RawClient::anon(&broker, kind).await;
    subscribe(&mut s1, "notice://o/**").await;
    subscribe(&mut s2, "notice://o/x").await;
    for i in 0u32..500 {
        p.send(None, &publish("notice://o/x", &i.to_be_bytes()))
            .await;
    }
    for s in [&mut s1, &mut s2] {
        for i in 0u32..500 {
            assert_eq!(&next_notify(s).await.payload[..], &i.to_be_bytes());
        }
    }
}

async fn slow_subscriber_loses_notifications_others_do_not(kind: Kind) {
    let broker = Broker::builder()
        .outbound_limits(OutboundLimits {
            max_notification_frames: 256,
            max_notification_bytes: 4 << 20,
            ..OutboundLimits::default()
        })
        .start()
        .await
        .unwrap();
    let mut slow = RawClient::anon(&broker, kind).await;
    slow.send(
        None,
        &SessionMetadata {
            service_name: "slow".into(),
        },
    )
    .await;
    subscribe(&mut slow, "notice://load/**").await;
    let mut fast = RawClient::anon(&broker, kind).await;
    subscribe(&mut fast, "notice://load/**").await;
    let mut p = RawClient::anon(&broker, kind).await;

    // 2,000 × 16 KiB = 32 MiB: far more than socket buffers plus the slow
    // subscriber's backlog. The fast one reads each chunk as it comes.
    let body = vec![7u8; 16 * 1024];
    const CHUNKS: u32 = 50;
    const PER: u32 = 40;
    for chunk in 0..CHUNKS {
        for i in 0..PER {
            let mut payload = (chunk * PER + i).to_be_bytes().to_vec();
            payload.extend_from_slice(&body);
            let mut f = BytesMut::new();
            publish("notice://load/x", &payload)
                .encode_record(&mut f)
                .unwrap();
            p.send_frame(&f).await;
        }
        for i in 0..PER {
            let n = next_notify(&mut fast).await;
            assert_eq!(&n.payload[..4], &(chunk * PER + i).to_be_bytes());
        }
    }
    // The publisher was never blocked: it still answers at once.
    let started = std::time::Instant::now();
    p.ok::<_, BeginOk>(&kv::Begin {
        route: "kv://r/a/x".into(),
        mode: TxMode::ReadOnly,
    })
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let info = broker
        .sessions()
        .into_iter()
        .find(|s| s.service_name.as_deref() == Some("slow"))
        .unwrap();
    assert!(
        info.dropped_notifications > 0,
        "slow subscriber dropped some"
    );
    assert_eq!(
        broker.dropped_notifications(),
        info.dropped_notifications,
        "only the slow one"
    );
    // What the slow subscriber does get is in order, with gaps.
    let mut last = None;
    let mut seen = 0u64;
    while let Some(l) = slow
        .record_within(std::time::Duration::from_millis(500))
        .await
    {
        if l.record.ty != types::NOTICE_NOTIFY {
            continue;
        }
        let n = Notify::decode(l.record.payload).unwrap();
        let seq = u32::from_be_bytes(n.payload[..4].try_into().unwrap());
        assert!(last.is_none_or(|l| seq > l));
        last = Some(seq);
        seen += 1;
    }
    assert_eq!(seen + info.dropped_notifications, u64::from(CHUNKS * PER));
}

async fn reply_backlog_over_the_bound_closes_a_slow_consumer(kind: Kind) {
    let broker = Broker::builder()
        .outbound_limits(OutboundLimits {
            max_reply_frames: 64,
            max_reply_bytes: 1 << 20,
            ..OutboundLimits::default()
        })
        .start()
        .await
        .unwrap();
    let mut c = RawClient::anon(&broker, kind).await;
    let route = "kv://r/a/big";
    let tx = c
        .ok::<_, BeginOk>(&kv::Begin {
            route: route.into(),
            mode: TxMode::ReadWrite,
        })
        .await
        .tx_id;
    let value = Bytes::from(vec![1u8; 60_000]);
    c.ok::<_, kv::PutOk>(&kv::Put {
        tx_id: tx,
        route: route.into(),
        key: Bytes::from_static(b"k"),
        value,
    })
    .await;
    // Ask for ~30 MB of replies without reading any of them.
    let mut get = BytesMut::new();
    kv::Get {
        tx_id: tx,
        route: route.into(),
        key: Bytes::from_static(b"k"),
    }
    .encode_record(&mut get)
    .unwrap();
    for _ in 0..500 {
        c.send_frame(&get).await;
    }
    tokio::time::timeout(crate::support::WAIT, broker.wait_for_session_count(0))
        .await
        .expect("slow consumer closed");
    assert_eq!(
        broker.engines().kv.stats().locked_resources,
        0,
        "cleanup ran"
    );
}
