//! Schedule through the wire: CREATE/CREATE_BATCH/CANCEL/LIST/LIST_V2,
//! watches, firing under a manual clock, error envelopes, permissions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{Kind, RawClient, token};
use bytes::{BufMut, Bytes, BytesMut};
use fitz_broker::{Broker, Clock};
use fitz_protocol::record::{self, encode_raw_record};
use fitz_protocol::schedule::{
    self, Create, CreateBatch, DeliveryMode, Entry, List, ListOk, ListV2, ListV2Ok, Notify,
};
use fitz_protocol::{Envelope, Message, WireError, codes, types};

both_transports!(
    create_is_an_upsert_listed_by_route,
    create_batch_is_all_or_nothing,
    cancel_is_idempotent,
    list_pages_with_total_and_limits,
    list_pages_stop_at_one_record,
    list_v2_cursor_paging,
    list_v2_foreign_and_malformed_cursors_restart,
    watches_with_wildcards_duplicates_and_limits,
    broadcast_reaches_every_watch,
    single_rotates_between_watches,
    fires_at_the_due_minute_never_before,
    no_backlog_after_a_large_clock_jump,
    unheard_fires_are_skipped_not_queued,
    cancel_stops_fires_and_upsert_reschedules,
    envelopes_are_uncoded_from_the_domain_and_coded_on_list,
    bad_routes_and_patterns,
    unauthorized_is_coded_7009,
    route_families_are_isolated,
    watches_end_with_the_session,
);

/// 2024-01-01T00:00:00Z, a Monday, on a whole minute.
const T0: u64 = 1_704_067_200;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0)
}

async fn manual() -> Broker {
    Broker::builder()
        .clock(Clock::manual(t0()))
        .start()
        .await
        .expect("broker starts")
}

fn entry(route: &str, cron: &str, mode: DeliveryMode, payload: &[u8]) -> Entry {
    Entry {
        route: route.into(),
        cron: cron.into(),
        mode,
        payload: Bytes::copy_from_slice(payload),
    }
}

fn every_minute(route: &str, mode: DeliveryMode) -> Entry {
    entry(route, "* * * * *", mode, route.as_bytes())
}

async fn create(c: &mut RawClient, e: Entry) {
    let raw = c.call(&Create { entry: e }).await;
    assert_eq!(&raw[..], &[0], "CREATE success is exactly [0]");
}

async fn list(c: &mut RawClient, offset: Option<u64>, limit: Option<u64>) -> ListOk {
    c.ok::<_, ListOk>(&List { offset, limit }).await
}

async fn list_v2(c: &mut RawClient, cursor: Option<&str>, limit: Option<u64>) -> ListV2Ok {
    c.ok::<_, ListV2Ok>(&ListV2 {
        continuation: cursor.map(Into::into),
        limit,
    })
    .await
}

async fn subscribe(c: &mut RawClient, pattern: &str) -> u64 {
    let raw = c.call(&schedule::Subscribe::new(pattern)).await;
    assert_eq!((raw.len(), &raw[..2]), (10, &[0u8, 1][..]), "[0][1][u64]");
    u64::from_be_bytes(raw[2..].try_into().unwrap())
}

async fn next_notify(c: &mut RawClient) -> Notify {
    let l = c.next_of_type(types::SCHEDULE_NOTIFY).await;
    assert_eq!(l.correlation, None, "notifications are never labelled");
    Notify::decode(l.record.payload).unwrap()
}

fn routes(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| &*e.route).collect()
}

fn uncoded(e: &WireError) -> &str {
    assert_eq!(e.envelope, Envelope::Uncoded, "uncoded: {e:?}");
    &e.message
}

fn minute(broker: &Broker) {
    broker.clock().advance(Duration::from_secs(60));
}

async fn create_is_an_upsert_listed_by_route(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    create(
        &mut c,
        entry(
            "schedule://r/a/z/run",
            "0 2 * * *",
            DeliveryMode::Broadcast,
            b"z",
        ),
    )
    .await;
    create(
        &mut c,
        entry(
            "schedule://r/a/b/run",
            "*/5 * * * *",
            DeliveryMode::Single,
            b"b",
        ),
    )
    .await;
    let page = list(&mut c, None, None).await;
    assert_eq!(page.total_count, 2);
    assert_eq!(
        routes(&page.entries),
        ["schedule://r/a/b/run", "schedule://r/a/z/run"]
    );
    assert_eq!(
        page.entries[1],
        entry(
            "schedule://r/a/z/run",
            "0 2 * * *",
            DeliveryMode::Broadcast,
            b"z"
        )
    );
    // Same route: replaced, not added.
    let updated = entry(
        "schedule://r/a/z/run",
        "30 6 * * 1-5",
        DeliveryMode::Single,
        b"new",
    );
    create(&mut c, updated.clone()).await;
    let page = list(&mut c, Some(0), Some(100)).await;
    assert_eq!(page.total_count, 2);
    assert_eq!(page.entries[1], updated);
    assert_eq!(broker.engines().schedule.stats().schedules, 2);
}

async fn create_batch_is_all_or_nothing(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let good = every_minute("schedule://r/a/one/run", DeliveryMode::Broadcast);
    let bad = entry(
        "schedule://r/a/two/run",
        "0 0 31 2 *",
        DeliveryMode::Single,
        b"",
    );
    let e = c
        .fails(&CreateBatch {
            entries: vec![good.clone(), bad],
        })
        .await;
    assert!(uncoded(&e).contains("invalid cron"), "{e:?}");
    assert!(uncoded(&e).contains("schedule://r/a/two/run"));
    assert_eq!(
        list(&mut c, None, None).await.total_count,
        0,
        "nothing applied"
    );
    let raw = c
        .call(&CreateBatch {
            entries: vec![
                good.clone(),
                every_minute("schedule://r/a/two/run", DeliveryMode::Single),
                // A later duplicate wins.
                entry(
                    "schedule://r/a/one/run",
                    "0 * * * *",
                    DeliveryMode::Single,
                    b"2",
                ),
            ],
        })
        .await;
    assert_eq!(&raw[..], &[0]);
    let page = list(&mut c, None, None).await;
    assert_eq!(
        routes(&page.entries),
        ["schedule://r/a/one/run", "schedule://r/a/two/run"]
    );
    assert_eq!(&*page.entries[0].cron, "0 * * * *");
    // An empty batch is fine.
    assert_eq!(&c.call(&CreateBatch::default()).await[..], &[0]);
    // An unknown delivery mode anywhere in the batch: uncoded, nothing applied.
    let mut b = BytesMut::new();
    b.put_u32(2);
    every_minute("schedule://r/a/three/run", DeliveryMode::Single).encode(&mut b);
    let mut odd = BytesMut::new();
    every_minute("schedule://r/a/four/run", DeliveryMode::Single).encode(&mut odd);
    let mode_at = 4 + "schedule://r/a/four/run".len() + 4 + "* * * * *".len();
    odd[mode_at] = 2;
    b.extend_from_slice(&odd);
    let e = raw_call(&mut c, types::SCHEDULE_CREATE_BATCH, &b).await;
    assert_eq!(uncoded(&e), "invalid schedule delivery mode 2");
    assert_eq!(list(&mut c, None, None).await.total_count, 2);
}

/// Sends a raw payload of `ty` and decodes the error reply.
async fn raw_call(c: &mut RawClient, ty: u16, payload: &[u8]) -> WireError {
    let payload = raw_reply(c, ty, payload).await;
    WireError::decode(payload).unwrap()
}

async fn raw_reply(c: &mut RawClient, ty: u16, payload: &[u8]) -> Bytes {
    let id = c.id();
    let mut b = BytesMut::new();
    record::put_label(&mut b, types::CORRELATE, id);
    encode_raw_record(&mut b, ty, payload).unwrap();
    c.send_frame(&b).await;
    c.reply_to(id).await
}

async fn cancel_is_idempotent(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    create(
        &mut c,
        every_minute("schedule://r/a/x/run", DeliveryMode::Broadcast),
    )
    .await;
    for _ in 0..2 {
        let raw = c.call(&schedule::Cancel::new("schedule://r/a/x/run")).await;
        assert_eq!(&raw[..], &[0]);
    }
    let raw = c
        .call(&schedule::Cancel::new("schedule://r/a/never/run"))
        .await;
    assert_eq!(&raw[..], &[0]);
    assert_eq!(list(&mut c, None, None).await, ListOk::default());
}

async fn list_pages_with_total_and_limits(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let batch: Vec<Entry> = (0..25)
        .map(|i| every_minute(&format!("schedule://r/a/j{i:02}/run"), DeliveryMode::Single))
        .collect();
    c.ok::<_, schedule::CreateBatchOk>(&CreateBatch { entries: batch })
        .await;
    // An empty payload means offset 0, limit 100.
    let mut all = Vec::new();
    let p = c.ok::<_, ListOk>(&List::default()).await;
    assert_eq!((p.total_count, p.entries.len()), (25, 25));
    // Paging with offset += returned, the way 0.2.0 lists by selector.
    let mut offset = 0;
    while offset < 25 {
        let p = list(&mut c, Some(offset), Some(10)).await;
        assert_eq!(p.total_count, 25);
        assert!(p.entries.len() <= 10);
        offset += p.entries.len() as u64;
        all.extend(p.entries);
    }
    let want: Vec<String> = (0..25)
        .map(|i| format!("schedule://r/a/j{i:02}/run"))
        .collect();
    assert_eq!(routes(&all), want);
    // Past the end: empty page, the total still told.
    let p = list(&mut c, Some(1000), Some(5)).await;
    assert_eq!((p.total_count, p.entries.len()), (25, 0));
    // limit 0: as many as fit; limit 1000 is fine, 1001 is a coded error.
    assert_eq!(list(&mut c, None, Some(0)).await.entries.len(), 25);
    assert_eq!(list(&mut c, Some(20), Some(1000)).await.entries.len(), 5);
    let e = c
        .fails(&List {
            offset: None,
            limit: Some(1001),
        })
        .await;
    assert_eq!(
        (e.envelope, e.code),
        (Envelope::Coded, codes::SCHEDULE_PARSE)
    );
}

async fn list_pages_stop_at_one_record(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let big = vec![7u8; 20_000];
    for i in 0..5 {
        create(
            &mut c,
            entry(
                &format!("schedule://r/a/big{i}/run"),
                "* * * * *",
                DeliveryMode::Single,
                &big,
            ),
        )
        .await;
    }
    // Three 20 kB entries fit one 65,535-byte record, four do not.
    let p = list(&mut c, None, Some(0)).await;
    assert_eq!((p.total_count, p.entries.len()), (5, 3));
    let p = list(&mut c, Some(3), Some(100)).await;
    assert_eq!(p.entries.len(), 2);
    let p = list_v2(&mut c, None, None).await;
    assert_eq!((p.entries.len(), p.has_more), (3, true));
    let p = list_v2(&mut c, p.continuation.as_deref(), None).await;
    assert_eq!((p.entries.len(), p.has_more), (2, false));
    // A definition that fits a CREATE record but could never be listed (a
    // LIST_V2 page adds its continuation) is refused.
    let huge = vec![0u8; 65_480];
    let e = c
        .fails(&Create {
            entry: entry(
                "schedule://r/a/huge/run",
                "* * * * *",
                DeliveryMode::Single,
                &huge,
            ),
        })
        .await;
    assert!(uncoded(&e).contains("too large"), "{e:?}");
}

async fn list_v2_cursor_paging(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    // An empty family: the V111 last page.
    let raw = c.call(&ListV2::default()).await;
    assert_eq!(&raw[..], &[0, 1, 0, 0, 0]);
    for name in ["a", "b", "c", "d", "e"] {
        create(
            &mut c,
            every_minute(
                &format!("schedule://r/x/{name}/run"),
                DeliveryMode::Broadcast,
            ),
        )
        .await;
    }
    let p = list_v2(&mut c, None, Some(2)).await;
    assert_eq!(
        routes(&p.entries),
        ["schedule://r/x/a/run", "schedule://r/x/b/run"]
    );
    assert!(p.has_more);
    let cursor = p.continuation.clone().unwrap();
    assert_eq!(&*cursor, "schedule-list-v1:1:schedule://r/x/b/run");
    // The named route is cancelled: paging resumes after it all the same.
    c.ok::<_, schedule::CancelOk>(&schedule::Cancel::new("schedule://r/x/b/run"))
        .await;
    let p = list_v2(&mut c, Some(&cursor), Some(2)).await;
    assert_eq!(
        routes(&p.entries),
        ["schedule://r/x/c/run", "schedule://r/x/d/run"]
    );
    let p = list_v2(&mut c, p.continuation.as_deref(), Some(2)).await;
    assert_eq!(routes(&p.entries), ["schedule://r/x/e/run"]);
    assert!(!p.has_more);
    assert_eq!(p.continuation, None);
    // Exactly at the end: no more, no cursor.
    let p = list_v2(&mut c, None, Some(4)).await;
    assert_eq!(
        (p.entries.len(), p.has_more, p.continuation),
        (4, false, None)
    );
    // Default 100, 0 means the default, 1000 max.
    assert_eq!(list_v2(&mut c, None, Some(0)).await.entries.len(), 4);
    assert_eq!(list_v2(&mut c, None, Some(1000)).await.entries.len(), 4);
    let e = c
        .fails(&ListV2 {
            continuation: None,
            limit: Some(1001),
        })
        .await;
    assert!(uncoded(&e).contains("1000"));
}

async fn list_v2_foreign_and_malformed_cursors_restart(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    for name in ["a", "b", "c"] {
        create(
            &mut c,
            every_minute(
                &format!("schedule://r/x/{name}/run"),
                DeliveryMode::Broadcast,
            ),
        )
        .await;
    }
    for cursor in [
        "schedule-list-v1:2:schedule://r/x/a/run",
        "schedule-list-v1:1:",
        "schedule-list-v1:one:schedule://r/x/a/run",
        "schedule-list-v9:1:schedule://r/x/a/run",
        "",
        "garbage",
    ] {
        let p = list_v2(&mut c, Some(cursor), Some(2)).await;
        assert_eq!(
            routes(&p.entries),
            ["schedule://r/x/a/run", "schedule://r/x/b/run"],
            "{cursor:?}"
        );
    }
    // A cursor past every route: an empty last page.
    let p = list_v2(&mut c, Some("schedule-list-v1:1:schedule://zzz"), None).await;
    assert_eq!((p.entries.len(), p.has_more), (0, false));
}

async fn watches_with_wildcards_duplicates_and_limits(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let a = subscribe(&mut c, "schedule://r/a/*/run").await;
    assert_eq!(
        subscribe(&mut c, "schedule://r/a/*/run").await,
        a,
        "duplicate"
    );
    subscribe(&mut c, "schedule://**").await;
    subscribe(&mut c, "schedule://*/a/b/run").await;
    subscribe(&mut c, "schedule://r/a/b/run").await;
    assert_eq!(broker.engines().schedule.watches().session_count(1), 4);
    for _ in 0..2 {
        let raw = c
            .call(&schedule::Unsubscribe::new("schedule://r/a/*/run"))
            .await;
        assert_eq!(&raw[..], &[0], "idempotent");
    }
    assert_eq!(broker.engines().schedule.watches().len(), 3);
    // Limits: 128 wildcards, 1024 in total, exact uncoded messages.
    let mut d = RawClient::anon(&broker, kind).await;
    for i in 0..128 {
        subscribe(&mut d, &format!("schedule://w{i}/**")).await;
    }
    let e = d.fails(&schedule::Subscribe::new("schedule://x/**")).await;
    assert_eq!(
        uncoded(&e),
        "wildcard subscription limit exceeded (128 per session)"
    );
    subscribe(&mut d, "schedule://w0/**").await;
    for i in 128..1024 {
        subscribe(&mut d, &format!("schedule://e/a/b/{i}")).await;
    }
    let e = d
        .fails(&schedule::Subscribe::new("schedule://e/a/b/x"))
        .await;
    assert_eq!(
        uncoded(&e),
        "total subscription limit exceeded (1024 per session)"
    );
}

async fn broadcast_reaches_every_watch(kind: Kind) {
    let broker = manual().await;
    let mut s1 = RawClient::anon(&broker, kind).await;
    let mut s2 = RawClient::anon(&broker, kind).await;
    let a = subscribe(&mut s1, "schedule://r/a/*/run").await;
    let b = subscribe(&mut s1, "schedule://**").await;
    let c = subscribe(&mut s2, "schedule://r/a/job/run").await;
    create(
        &mut s2,
        entry(
            "schedule://r/a/job/run",
            "* * * * *",
            DeliveryMode::Broadcast,
            b"x",
        ),
    )
    .await;
    minute(&broker);
    let mut got = [next_notify(&mut s1).await, next_notify(&mut s1).await];
    got.sort_by_key(|n| n.sub_id);
    let n = next_notify(&mut s2).await;
    assert_eq!(
        (n.sub_id, &*n.route, &n.payload[..]),
        (c, "schedule://r/a/job/run", &b"x"[..])
    );
    assert_eq!(
        got.iter()
            .map(|n| (n.sub_id, &*n.route))
            .collect::<Vec<_>>(),
        [(a, "schedule://r/a/job/run"), (b, "schedule://r/a/job/run")]
    );
    s1.expect_quiet().await;
    s2.expect_quiet().await;
    let stats = broker.engines().schedule.stats();
    assert_eq!((stats.fires, stats.notifications), (1, 3));
}

async fn single_rotates_between_watches(kind: Kind) {
    let broker = manual().await;
    let mut s1 = RawClient::anon(&broker, kind).await;
    let mut s2 = RawClient::anon(&broker, kind).await;
    let a = subscribe(&mut s1, "schedule://r/a/job/run").await;
    let b = subscribe(&mut s2, "schedule://r/a/*/run").await;
    create(
        &mut s1,
        entry(
            "schedule://r/a/job/run",
            "* * * * *",
            DeliveryMode::Single,
            b"s",
        ),
    )
    .await;
    let mut takers = Vec::new();
    for _ in 0..4 {
        minute(&broker);
        tokio::select! {
            n = next_notify(&mut s1) => takers.push(n.sub_id),
            n = next_notify(&mut s2) => takers.push(n.sub_id),
        }
    }
    assert_eq!(takers, [a, b, a, b], "registration order, round-robin");
    s1.expect_quiet().await;
    s2.expect_quiet().await;
    // A watch that leaves is skipped.
    drop(s2);
    broker.wait_for_session_count(1).await;
    minute(&broker);
    minute(&broker);
    assert_eq!(next_notify(&mut s1).await.sub_id, a);
    assert_eq!(next_notify(&mut s1).await.sub_id, a);
}

async fn fires_at_the_due_minute_never_before(kind: Kind) {
    let broker = manual().await;
    let mut c = RawClient::anon(&broker, kind).await;
    subscribe(&mut c, "schedule://r/a/job/run").await;
    create(
        &mut c,
        entry(
            "schedule://r/a/job/run",
            "2 * * * *",
            DeliveryMode::Broadcast,
            b"",
        ),
    )
    .await;
    let info = broker
        .engines()
        .schedule
        .get(1, "schedule://r/a/job/run")
        .unwrap();
    assert_eq!(info.next_fire, Some(t0() + Duration::from_secs(120)));
    broker.clock().advance(Duration::from_secs(119));
    c.expect_quiet().await;
    broker.clock().advance(Duration::from_secs(1));
    assert_eq!(&*next_notify(&mut c).await.route, "schedule://r/a/job/run");
    let info = broker
        .engines()
        .schedule
        .get(1, "schedule://r/a/job/run")
        .unwrap();
    assert_eq!(info.next_fire, Some(t0() + Duration::from_secs(3600 + 120)));
    assert_eq!(info.last_fire, Some(t0() + Duration::from_secs(120)));
    assert_eq!(info.executions, 1);
    // The test hook fires an extra occurrence without moving the next one.
    assert!(
        broker
            .engines()
            .schedule
            .fire_now(1, "schedule://r/a/job/run")
    );
    next_notify(&mut c).await;
    assert!(
        !broker
            .engines()
            .schedule
            .fire_now(1, "schedule://r/a/none/run")
    );
}

async fn no_backlog_after_a_large_clock_jump(kind: Kind) {
    let broker = manual().await;
    let mut c = RawClient::anon(&broker, kind).await;
    subscribe(&mut c, "schedule://**").await;
    create(
        &mut c,
        every_minute("schedule://r/a/m/run", DeliveryMode::Broadcast),
    )
    .await;
    create(
        &mut c,
        entry(
            "schedule://r/a/h/run",
            "0 * * * *",
            DeliveryMode::Single,
            b"h",
        ),
    )
    .await;
    // A day later: each schedule fires once, not 1,440 / 24 times.
    broker.clock().advance(Duration::from_secs(86_400 + 30));
    let mut got = [
        next_notify(&mut c).await.route.to_string(),
        next_notify(&mut c).await.route.to_string(),
    ];
    got.sort();
    assert_eq!(got, ["schedule://r/a/h/run", "schedule://r/a/m/run"]);
    c.expect_quiet().await;
    let m = broker
        .engines()
        .schedule
        .get(1, "schedule://r/a/m/run")
        .unwrap();
    assert_eq!(m.next_fire, Some(t0() + Duration::from_secs(86_400 + 60)));
    broker.clock().advance(Duration::from_secs(30));
    assert_eq!(&*next_notify(&mut c).await.route, "schedule://r/a/m/run");
    c.expect_quiet().await;
}

async fn unheard_fires_are_skipped_not_queued(kind: Kind) {
    let broker = manual().await;
    let mut c = RawClient::anon(&broker, kind).await;
    create(
        &mut c,
        every_minute("schedule://r/a/b/run", DeliveryMode::Broadcast),
    )
    .await;
    create(
        &mut c,
        every_minute("schedule://r/a/s/run", DeliveryMode::Single),
    )
    .await;
    minute(&broker);
    minute(&broker);
    assert_eq!(broker.engines().schedule.stats().unheard, 4);
    subscribe(&mut c, "schedule://r/a/*/run").await;
    c.expect_quiet().await;
    minute(&broker);
    next_notify(&mut c).await;
    next_notify(&mut c).await;
    c.expect_quiet().await;
}

async fn cancel_stops_fires_and_upsert_reschedules(kind: Kind) {
    let broker = manual().await;
    let mut c = RawClient::anon(&broker, kind).await;
    subscribe(&mut c, "schedule://**").await;
    create(
        &mut c,
        every_minute("schedule://r/a/x/run", DeliveryMode::Broadcast),
    )
    .await;
    c.ok::<_, schedule::CancelOk>(&schedule::Cancel::new("schedule://r/a/x/run"))
        .await;
    minute(&broker);
    c.expect_quiet().await;
    create(
        &mut c,
        every_minute("schedule://r/a/x/run", DeliveryMode::Broadcast),
    )
    .await;
    create(
        &mut c,
        entry(
            "schedule://r/a/x/run",
            "5 * * * *",
            DeliveryMode::Broadcast,
            b"",
        ),
    )
    .await;
    minute(&broker);
    c.expect_quiet().await;
    broker.clock().advance(Duration::from_secs(3 * 60));
    assert_eq!(next_notify(&mut c).await.payload.len(), 0);
}

async fn envelopes_are_uncoded_from_the_domain_and_coded_on_list(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    // Uncoded: [1][u32 len][msg] with len = total − 5.
    let raw = c
        .call(&Create {
            entry: entry(
                "schedule://r/a/b/run",
                "61 * * * *",
                DeliveryMode::Single,
                b"",
            ),
        })
        .await;
    let len = u32::from_be_bytes(raw[1..5].try_into().unwrap()) as usize;
    assert_eq!((raw[0], len), (1, raw.len() - 5));
    assert!(
        std::str::from_utf8(&raw[5..])
            .unwrap()
            .starts_with("invalid cron expression")
    );
    let mut want = BytesMut::new();
    WireError::uncoded("invalid schedule delivery mode 9").encode(&mut want);
    let mut create_mode_9 = BytesMut::new();
    every_minute("schedule://r/a/b/run", DeliveryMode::Single).encode(&mut create_mode_9);
    let at = 4 + "schedule://r/a/b/run".len() + 4 + "* * * * *".len();
    create_mode_9[at] = 9;
    assert_eq!(
        raw_reply(&mut c, types::SCHEDULE_CREATE, &create_mode_9).await,
        want
    );
    // Malformed payloads: uncoded on every type but LIST.
    for ty in [
        types::SCHEDULE_CREATE,
        types::SCHEDULE_CANCEL,
        types::SCHEDULE_SUBSCRIBE,
        types::SCHEDULE_UNSUBSCRIBE,
        types::SCHEDULE_CREATE_BATCH,
        types::SCHEDULE_LIST_V2,
    ] {
        let e = raw_call(&mut c, ty, &[9, 9, 9]).await;
        assert!(
            uncoded(&e).starts_with("malformed request"),
            "type {ty}: {e:?}"
        );
    }
    let e = raw_call(&mut c, types::SCHEDULE_LIST, &[1, 0]).await;
    assert_eq!(
        (e.envelope, e.code),
        (Envelope::Coded, codes::SCHEDULE_PARSE)
    );
    // LIST limit: [1][u32 7004][u32 len][msg], nothing trailing.
    let raw = c
        .call(&List {
            offset: None,
            limit: Some(5000),
        })
        .await;
    let mut want = BytesMut::new();
    WireError::coded(
        codes::SCHEDULE_PARSE,
        "LIST limit 5000 is over the maximum of 1000",
    )
    .encode(&mut want);
    assert_eq!(raw, want);
}

async fn bad_routes_and_patterns(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    for bad in [
        "schedule://r/a/b",
        "schedule://r/a/b/c/d",
        "schedule://r/a/*/run",
        "schedule://r/a//run",
        "kv://r/a/b/run",
        "schedule://r/a/b/ru*",
    ] {
        let e = c
            .fails(&Create {
                entry: every_minute(bad, DeliveryMode::Single),
            })
            .await;
        assert!(
            uncoded(&e).starts_with("invalid schedule route"),
            "{bad}: {e:?}"
        );
        let e = c.fails(&schedule::Cancel::new(bad)).await;
        assert!(uncoded(&e).starts_with("invalid schedule route"), "{bad}");
        let e = c
            .fails(&CreateBatch {
                entries: vec![
                    every_minute("schedule://r/a/ok/run", DeliveryMode::Single),
                    every_minute(bad, DeliveryMode::Single),
                ],
            })
            .await;
        assert!(uncoded(&e).starts_with("invalid schedule route"), "{bad}");
    }
    assert_eq!(list(&mut c, None, None).await.total_count, 0);
    for bad in [
        "schedule://r/a/b",
        "schedule://r/a/b/c/d",
        "schedule://r/a/b*",
        "notice://**",
        "schedule://**/**",
    ] {
        let e = c.fails(&schedule::Subscribe::new(bad)).await;
        assert!(
            uncoded(&e).starts_with("invalid schedule subscription pattern"),
            "{bad}: {e:?}"
        );
        let e = c.fails(&schedule::Unsubscribe::new(bad)).await;
        assert!(
            uncoded(&e).starts_with("invalid schedule subscription pattern"),
            "{bad}"
        );
    }
    // Patterns able to match four segments are fine.
    for ok in [
        "schedule://**",
        "schedule://r/**",
        "schedule://*/*/*/*",
        "schedule://r/**/run",
    ] {
        subscribe(&mut c, ok).await;
    }
}

async fn unauthorized_is_coded_7009(kind: Kind) {
    let broker = crate::support::jwt().await;
    let scoped = token("dev", &["schedule://prod/jobs/**#write"]);
    let (mut c, _) = RawClient::connect(&broker, kind, &scoped).await;
    // Inside the scope: allowed.
    create(
        &mut c,
        every_minute("schedule://prod/jobs/backup/run", DeliveryMode::Broadcast),
    )
    .await;
    let denied = |e: WireError| {
        assert_eq!(
            (e.envelope, e.code),
            (Envelope::Coded, codes::SCHEDULE_UNAUTHORIZED),
            "{e:?}"
        );
    };
    denied(
        c.fails(&Create {
            entry: every_minute("schedule://prod/other/x/run", DeliveryMode::Single),
        })
        .await,
    );
    denied(
        c.fails(&schedule::Cancel::new("schedule://dev/jobs/x/run"))
            .await,
    );
    denied(
        c.fails(&CreateBatch {
            entries: vec![
                every_minute("schedule://prod/jobs/a/run", DeliveryMode::Single),
                every_minute("schedule://prod/nope/a/run", DeliveryMode::Single),
            ],
        })
        .await,
    );
    // Write does not grant read; LIST needs schedule://** read.
    denied(c.fails(&List::default()).await);
    denied(c.fails(&ListV2::default()).await);
    denied(
        c.fails(&schedule::Subscribe::new("schedule://prod/jobs/*/run"))
            .await,
    );
    let reader = token("dev", &["schedule://prod/**#read"]);
    let (mut r, _) = RawClient::connect(&broker, kind, &reader).await;
    subscribe(&mut r, "schedule://prod/jobs/*/run").await;
    denied(r.fails(&schedule::Subscribe::new("schedule://**")).await);
    denied(r.fails(&List::default()).await);
    // The refused batch applied nothing.
    let (mut all, _) = RawClient::connect(&broker, kind, &token("dev", crate::support::ALL)).await;
    assert_eq!(
        routes(&list(&mut all, None, None).await.entries),
        ["schedule://prod/jobs/backup/run"]
    );
}

async fn route_families_are_isolated(kind: Kind) {
    let broker = crate::support::jwt_with_clock(Clock::manual(t0())).await;
    let (mut dev, _) = RawClient::connect(&broker, kind, &token("dev", crate::support::ALL)).await;
    let (mut acme, _) =
        RawClient::connect(&broker, kind, &token("acme", crate::support::ALL)).await;
    subscribe(&mut dev, "schedule://**").await;
    subscribe(&mut acme, "schedule://**").await;
    create(
        &mut dev,
        every_minute("schedule://shared/a/b/run", DeliveryMode::Broadcast),
    )
    .await;
    assert_eq!(list(&mut acme, None, None).await.total_count, 0);
    // The same route in another family is another schedule.
    create(
        &mut acme,
        entry(
            "schedule://shared/a/b/run",
            "0 0 1 1 *",
            DeliveryMode::Single,
            b"",
        ),
    )
    .await;
    assert_eq!(
        list(&mut dev, None, None).await.entries[0].cron,
        "* * * * *"
    );
    let p = list_v2(&mut acme, None, Some(1)).await;
    assert_eq!(p.continuation, None);
    minute(&broker);
    next_notify(&mut dev).await;
    acme.expect_quiet().await;
    // A dev cursor means nothing to acme: first page.
    let p = list_v2(&mut acme, Some("schedule-list-v1:1:schedule://a"), None).await;
    assert_eq!(p.entries.len(), 1);
}

async fn watches_end_with_the_session(kind: Kind) {
    let broker = manual().await;
    let mut c = RawClient::anon(&broker, kind).await;
    subscribe(&mut c, "schedule://**").await;
    subscribe(&mut c, "schedule://r/a/b/run").await;
    create(
        &mut c,
        every_minute("schedule://r/a/b/run", DeliveryMode::Single),
    )
    .await;
    drop(c);
    broker.wait_for_session_count(0).await;
    assert!(broker.engines().schedule.watches().is_empty());
    // Schedules outlive the session that created them.
    minute(&broker);
    assert_eq!(broker.engines().schedule.stats().schedules, 1);
    assert_eq!(broker.engines().schedule.stats().unheard, 1);
}

#[tokio::test]
async fn uncorrelated_requests_get_uncorrelated_replies() {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    c.send(
        None,
        &Create {
            entry: every_minute("schedule://r/a/b/run", DeliveryMode::Single),
        },
    )
    .await;
    let l = c.next_record().await;
    assert_eq!(
        (l.correlation, l.record.ty, &l.record.payload[..]),
        (None, types::SCHEDULE_CREATE, &[0u8][..])
    );
    c.send(None, &List::default()).await;
    let l = c.next_record().await;
    assert_eq!(l.record.ty, types::SCHEDULE_LIST);
    let page = fitz_protocol::decode_reply::<ListOk>(l.record.payload)
        .unwrap()
        .unwrap();
    assert_eq!(page.total_count, 1);
    let _ = Message::encode_record(&List::default(), &mut BytesMut::new());
}
