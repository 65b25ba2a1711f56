//! The Stream client against a scripted peer: exact wire bytes, offset
//! tracking, Drop rollback, stale sessions, paging rules, follow order.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::stream::{
    self as wire, BeginOk, DataOk, FilterReason, IdDataOk, Item, ItemKind, Metadata, MetadataOk,
    Record,
};
use fitz_protocol::{Message, Str, WireError, types};
use fitz_testkit::peer::payloads;
use futures_util::StreamExt;

use super::*;
use crate::test_support::Scripted;
use crate::{ErrorKind, State};

type Harness = Scripted;

async fn start() -> Harness {
    Scripted::start("memory://stream").await
}

fn page_bytes(page: &wire::ReadPage, global: bool) -> IdDataOk<{ types::STREAM_READ }> {
    let mut b = BytesMut::new();
    page.encode(&mut b, global);
    IdDataOk {
        id: None,
        data: b.freeze(),
    }
}

fn record(offset: u64, body: &'static [u8]) -> Record {
    Record {
        resource_offset: offset,
        area_offset: Some(offset),
        realm_offset: Some(offset),
        global_offset: None,
        body: Bytes::from_static(body),
        metadata: None,
        created_at: 1,
    }
}

fn meta(last: Option<u64>) -> MetadataOk {
    MetadataOk {
        metadata: Metadata {
            last_offset: last,
            first_offset: last.map(|_| 0),
            ..Metadata::default()
        },
    }
}

const ROUTE: &str = "stream://prod/orders/o-1";

#[tokio::test(start_paused = true)]
async fn a_session_probes_its_offset_then_appends_consecutively() {
    let mut h = start().await;
    let streams = h.client.stream();
    let begin = tokio::spawn(async move {
        let mut s = streams
            .begin_with(ROUTE, BeginOptions::new().ingest_metadata(Bytes::new()))
            .await?;
        let a = s.append(&b"one"[..]).await?;
        let b = s
            .append_with(
                &b"two"[..],
                AppendOptions::new().metadata("m").discriminator(""),
            )
            .await?;
        assert_eq!((a, b, s.appended(), s.next_offset()), (5, 6, 2, 7));
        s.commit(Durability::Sync).await
    });
    let r = h.expect(types::STREAM_BEGIN).await;
    let msg = wire::Begin::decode(r.payload.clone()).unwrap();
    assert_eq!(
        (&*msg.route, msg.ingest_metadata),
        (ROUTE, None),
        "empty is absent"
    );
    h.ok(
        &r,
        &BeginOk {
            session_id: 77,
            data: Bytes::new(),
        },
    )
    .await;
    // The probe comes after BEGIN: the session holds the resource by then.
    let r = h.expect(types::STREAM_GET_METADATA).await;
    assert_eq!(
        &*wire::GetMetadata::decode(r.payload.clone()).unwrap().route,
        ROUTE
    );
    h.ok(&r, &meta(Some(4))).await;
    for (offset, body, metadata) in [(5u64, &b"one"[..], None), (6, b"two", Some(&b"m"[..]))] {
        let r = h.expect(types::STREAM_APPEND).await;
        let a = wire::Append::decode(r.payload.clone()).unwrap();
        assert_eq!(
            (
                a.session_id,
                a.expected_offset,
                &a.body[..],
                a.metadata.as_deref(),
                a.discriminator
            ),
            (77, offset, body, metadata, None)
        );
        let mut data = BytesMut::new();
        data.put_u64(offset);
        h.ok(
            &r,
            &DataOk::<{ types::STREAM_APPEND }> {
                data: data.freeze(),
            },
        )
        .await;
    }
    let r = h.expect(types::STREAM_COMMIT).await;
    assert_eq!(&r.payload[..], &[0, 0, 0, 0, 0, 0, 0, 77, 1]);
    h.ok(&r, &DataOk::<{ types::STREAM_COMMIT }>::default())
        .await;
    let info = begin.await.unwrap().unwrap();
    assert_eq!(
        (info.route(), info.offsets(), info.records()),
        (ROUTE, Some(5..=6), 2)
    );
}

#[tokio::test(start_paused = true)]
async fn a_conflict_is_typed_and_leaves_the_offset_alone() {
    let mut h = start().await;
    let streams = h.client.stream();
    let t = tokio::spawn(async move {
        let mut s = streams.begin_at(ROUTE, 3).await.unwrap();
        let e = s.append(&b"x"[..]).await.unwrap_err();
        assert_eq!(s.next_offset(), 3);
        s.rollback().await.unwrap();
        e
    });
    let r = h.expect(types::STREAM_BEGIN).await;
    h.ok(
        &r,
        &BeginOk {
            session_id: 9,
            data: Bytes::new(),
        },
    )
    .await;
    let r = h.expect(types::STREAM_APPEND).await;
    assert_eq!(
        wire::Append::decode(r.payload.clone())
            .unwrap()
            .expected_offset,
        3
    );
    h.fail(&r, WireError::stream(2001, "expected offset 3, next is 5"))
        .await;
    let r = h.expect(types::STREAM_ROLLBACK).await;
    assert_eq!(&r.payload[..], &[0, 0, 0, 0, 0, 0, 0, 9]);
    h.ok(&r, &wire::RollbackOk::default()).await;
    let e = t.await.unwrap();
    assert_eq!(
        (e.kind(), e.code(), e.maybe_applied()),
        (
            ErrorKind::Broker,
            Some(crate::codes::STREAM_CONCURRENCY_CONFLICT),
            false
        )
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_an_open_session_rolls_it_back() {
    let mut h = start().await;
    let streams = h.client.stream();
    let t = tokio::spawn(async move { streams.begin_at(ROUTE, 0).await });
    let r = h.expect(types::STREAM_BEGIN).await;
    h.ok(
        &r,
        &BeginOk {
            session_id: 5,
            data: Bytes::new(),
        },
    )
    .await;
    drop(t.await.unwrap().unwrap());
    let r = h.expect(types::STREAM_ROLLBACK).await;
    assert_eq!(&r.payload[..], &[0, 0, 0, 0, 0, 0, 0, 5]);
    h.ok(&r, &wire::RollbackOk::default()).await;
    // The swallowed answer frees its slot: nothing is left pending.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.client.debug_snapshot().await.unwrap().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn a_session_from_before_a_reconnect_is_stale() {
    let mut h = start().await;
    let streams = h.client.stream();
    let t = tokio::spawn(async move { streams.begin_at(ROUTE, 0).await });
    let r = h.expect(types::STREAM_BEGIN).await;
    h.ok(
        &r,
        &BeginOk {
            session_id: 5,
            data: Bytes::new(),
        },
    )
    .await;
    let mut session = t.await.unwrap().unwrap();
    h.reconnect().await;
    h.wait_authenticated().await;
    let e = session.append(&b"late"[..]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Stale);
    // Rolling back a session the broker already dropped is a no-op success,
    // and neither it nor Drop sends anything.
    session.rollback().await.unwrap();
    let streams = h.client.stream();
    let t = tokio::spawn(async move { streams.last(ROUTE).await });
    let r = h.expect(types::STREAM_LAST).await;
    h.ok(&r, &wire::LastOk { record: None }).await;
    assert_eq!(t.await.unwrap().unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn read_always_sends_all_four_options() {
    let mut h = start().await;
    let streams = h.client.stream();
    let t = tokio::spawn(async move {
        let opts = ReadOptions::new().limit(10);
        streams.read_page("stream://prod/orders/*", 7, &opts).await
    });
    let r = h.expect(types::STREAM_READ).await;
    let mut want = BytesMut::new();
    want.put_u32(22);
    want.put_slice(b"stream://prod/orders/*");
    want.put_u64(7);
    want.put_u64(10);
    want.put_slice(&[0, 0, 0, 0]);
    assert_eq!(&r.payload[..], &want[..]);
    let page = wire::ReadPage {
        items: vec![Item {
            route: Str::from_static(ROUTE),
            kind: ItemKind::Event(record(0, b"a")),
        }],
        last_resource_offset: 0,
        last_area_offset: Some(7),
        last_realm_offset: Some(7),
        has_more: false,
        ..wire::ReadPage::default()
    };
    h.ok(&r, &page_bytes(&page, false)).await;
    let page = t.await.unwrap().unwrap();
    assert_eq!(page.scope(), SelectorScope::Area);
    assert_eq!((page.next_offset(), page.caught_up()), (8, true));
    assert_eq!(page.records().next().unwrap().body(), &b"a"[..]);
}

#[tokio::test(start_paused = true)]
async fn global_replay_echoes_the_continuation_and_stops_when_caught_up() {
    let mut h = start().await;
    let streams = h.client.stream();
    let filter = Filter::new().equals("keep");
    let t = tokio::spawn(async move {
        let opts = ReadOptions::new().limit(2).filter(filter);
        let mut reader = streams.read("stream://**", 0, opts).unwrap();
        let mut got = Vec::new();
        while let Some(item) = reader.next().await {
            got.push(item.unwrap());
        }
        (got, reader.next_offset())
    });
    let first = h.expect(types::STREAM_READ).await;
    let req = wire::Read::decode(first.payload.clone()).unwrap();
    assert!(req.filter.is_some());
    assert_eq!(
        (req.cursor_fingerprint, req.captured_watermark),
        (None, None)
    );
    let mut rec = record(0, b"a");
    rec.global_offset = Some(10);
    let page1 = wire::ReadPage {
        items: vec![
            Item {
                route: Str::from_static("stream://r1/a/x"),
                kind: ItemKind::Event(rec),
            },
            Item {
                route: Str::from_static("stream://r2/a/x"),
                kind: ItemKind::FilteredRange {
                    from_offset: 11,
                    to_offset: 12,
                    reason: FilterReason::ServerFilter,
                },
            },
        ],
        last_global_offset: Some(12),
        has_more: true,
        cursor_fingerprint: Some(0xABCD),
        captured_watermark: Some(20),
        ..wire::ReadPage::default()
    };
    h.ok(&first, &page_bytes(&page1, true)).await;
    let second = h.expect(types::STREAM_READ).await;
    let req = wire::Read::decode(second.payload.clone()).unwrap();
    assert_eq!(
        (
            req.from_offset,
            req.cursor_fingerprint,
            req.captured_watermark
        ),
        (13, Some(0xABCD), Some(20))
    );
    let page2 = wire::ReadPage {
        last_global_offset: Some(19),
        has_more: false,
        cursor_fingerprint: Some(0xABCE),
        captured_watermark: Some(20),
        ..wire::ReadPage::default()
    };
    h.ok(&second, &page_bytes(&page2, true)).await;
    let (items, next) = t.await.unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].route(), "stream://r1/a/x");
    assert!(matches!(&items[1], StreamItem::Filtered(f) if f.offsets() == (11..=12)));
    assert_eq!(next, 20);
}

#[tokio::test(start_paused = true)]
async fn two_pages_with_more_and_no_progress_are_a_stall() {
    let mut h = start().await;
    let streams = h.client.stream();
    let t = tokio::spawn(async move {
        let mut pages = streams
            .read_pages("stream://prod/*/*", 4, ReadOptions::new())
            .unwrap();
        let first = pages.next().await.unwrap();
        let second = pages.next().await.unwrap();
        (first, second, pages.next().await.is_none())
    });
    let stuck = wire::ReadPage {
        last_realm_offset: None,
        has_more: true,
        ..wire::ReadPage::default()
    };
    for _ in 0..2 {
        let r = h.expect(types::STREAM_READ).await;
        assert_eq!(
            wire::Read::decode(r.payload.clone()).unwrap().from_offset,
            4
        );
        h.ok(&r, &page_bytes(&stuck, false)).await;
    }
    let (first, second, ended) = t.await.unwrap();
    assert!(
        first.unwrap().is_empty(),
        "one empty continuation page is fine"
    );
    let e = second.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert!(!e.is_retryable());
    assert!(ended);
}

#[tokio::test(start_paused = true)]
async fn a_retryable_read_failure_is_retried() {
    let mut h = start().await;
    let streams = h.client.stream();
    let t = tokio::spawn(async move { streams.read_page(ROUTE, 0, &ReadOptions::default()).await });
    let r = h.expect(types::STREAM_READ).await;
    let mut b = BytesMut::new();
    WireError::coded(crate::codes::STREAM_BUSY, "busy").encode(&mut b);
    h.peer.reply(&r, &b).await.unwrap();
    let r = h.expect(types::STREAM_READ).await;
    h.ok(&r, &page_bytes(&wire::ReadPage::default(), false))
        .await;
    let page = t.await.unwrap().unwrap();
    assert!(page.caught_up() && page.is_empty());
}

#[tokio::test(start_paused = true)]
async fn follow_subscribes_before_reading_and_rereads_on_a_commit() {
    let mut h = start().await;
    let streams = h.client.stream();
    let selector = "stream://prod/orders/*";
    let t = tokio::spawn(async move {
        let mut reader = streams
            .follow(selector, 0, ReadOptions::new())
            .await
            .unwrap();
        let a = reader.next().await.unwrap().unwrap();
        let b = reader.next().await.unwrap().unwrap();
        (a, b, reader.next_offset())
    });
    let sub = h.expect(types::STREAM_SUBSCRIBE).await;
    assert_eq!(&sub.payload[4..], selector.as_bytes());
    h.peer.reply(&sub, &payloads::subscribed(31)).await.unwrap();
    let read = h.expect(types::STREAM_READ).await;
    let one = |offset: u64, body: &'static [u8], more: bool| wire::ReadPage {
        items: vec![Item {
            route: Str::from_static(ROUTE),
            kind: ItemKind::Event(record(offset, body)),
        }],
        last_resource_offset: offset,
        last_area_offset: Some(offset),
        last_realm_offset: Some(offset),
        has_more: more,
        ..wire::ReadPage::default()
    };
    h.ok(&read, &page_bytes(&one(0, b"a", false), false)).await;
    // Caught up: nothing is read until a commit is notified.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), h.peer.read_request())
            .await
            .is_err()
    );
    let json = br#"{"event":"committed","first_resource_offset":1,"last_resource_offset":1}"#;
    for _ in 0..3 {
        // Several queued wakes coalesce into one READ.
        h.peer
            .send_record(types::STREAM_NOTIFY, &payloads::notify(31, ROUTE, json))
            .await
            .unwrap();
    }
    let read = h.expect(types::STREAM_READ).await;
    assert_eq!(
        wire::Read::decode(read.payload.clone())
            .unwrap()
            .from_offset,
        1
    );
    h.ok(&read, &page_bytes(&one(1, b"b", false), false)).await;
    let (a, b, next) = t.await.unwrap();
    assert_eq!(a.as_record().unwrap().body(), &b"a"[..]);
    assert_eq!(b.as_record().unwrap().body(), &b"b"[..]);
    assert_eq!(next, 2);
    // Dropping the follower released its subscription.
    let unsub = h.expect(types::STREAM_UNSUBSCRIBE).await;
    assert_eq!(&unsub.payload[4..], selector.as_bytes());
}

#[tokio::test(start_paused = true)]
async fn follow_rereads_after_a_reconnect() {
    let mut h = start().await;
    let streams = h.client.stream();
    let t = tokio::spawn(async move {
        let mut reader = streams.follow(ROUTE, 0, ReadOptions::new()).await.unwrap();
        reader.next().await.unwrap().unwrap()
    });
    let sub = h.expect(types::STREAM_SUBSCRIBE).await;
    h.peer.reply(&sub, &payloads::subscribed(1)).await.unwrap();
    let read = h.expect(types::STREAM_READ).await;
    h.ok(&read, &page_bytes(&wire::ReadPage::default(), false))
        .await;
    h.reconnect().await;
    // The restore, then a READ nobody notified: commits during the outage.
    let restore = h.expect(types::STREAM_SUBSCRIBE).await;
    h.peer
        .reply(&restore, &payloads::subscribed(2))
        .await
        .unwrap();
    let read = h.expect(types::STREAM_READ).await;
    assert_eq!(
        wire::Read::decode(read.payload.clone())
            .unwrap()
            .from_offset,
        0
    );
    let page = wire::ReadPage {
        items: vec![Item {
            route: Str::from_static(ROUTE),
            kind: ItemKind::Event(record(0, b"during")),
        }],
        ..wire::ReadPage::default()
    };
    h.ok(&read, &page_bytes(&page, false)).await;
    let item = t.await.unwrap();
    assert_eq!(item.as_record().unwrap().body(), &b"during"[..]);
}

#[tokio::test(start_paused = true)]
async fn subscriptions_decode_events_and_survive_a_bad_one() {
    let mut h = start().await;
    let streams = h.client.stream();
    let t = tokio::spawn(async move { streams.subscribe("stream://*/orders/*").await });
    let sub = h.expect(types::STREAM_SUBSCRIBE).await;
    // The form with the trailing `bytes data` is accepted too.
    let mut ack = BytesMut::new();
    ack.put_slice(&[0, 1]);
    ack.put_u64(4);
    ack.put_u32(0);
    h.peer.reply(&sub, &ack).await.unwrap();
    let mut sub = t.await.unwrap().unwrap();
    for json in [
        &b"{oops"[..],
        br#"{"event":"watermark_advanced","previous":1,"watermark":3}"#,
    ] {
        h.peer
            .send_record(types::STREAM_NOTIFY, &payloads::notify(4, ROUTE, json))
            .await
            .unwrap();
    }
    let bad = sub.next().await.unwrap().unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Protocol);
    let good = sub.next().await.unwrap().unwrap();
    assert_eq!(good.route(), ROUTE);
    assert!(matches!(good, CommitEvent::WatermarkAdvanced(w) if w.watermark() == 3));
}

#[tokio::test(start_paused = true)]
async fn invalid_routes_and_selectors_never_leave_the_client() {
    let h = start().await;
    let streams = h.client.stream();
    for bad in [
        "stream://prod/orders",
        "stream://prod/*/o-1",
        "kv://prod/orders/o-1",
    ] {
        assert_eq!(
            streams.begin(bad).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            streams.last(bad).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
    for bad in [
        "stream://r/a",
        "stream://r/**/x",
        "stream://*/**",
        "stream://r/a/**",
    ] {
        assert!(streams.read(bad, 0, ReadOptions::new()).is_err(), "{bad}");
        assert!(streams.subscribe(bad).await.is_err(), "{bad}");
    }
    assert_eq!(h.client.debug_snapshot().await.unwrap().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn filter_errors_are_typed_request_errors_not_transport_failures() {
    let mut h = start().await;
    for code in [
        crate::codes::STREAM_FILTER_VERSION,
        crate::codes::STREAM_FILTER_INVALID,
    ] {
        let streams = h.client.stream();
        let t = tokio::spawn(async move {
            let opts = ReadOptions::new().filter(Filter::new().equals("x"));
            streams.read_page(ROUTE, 0, &opts).await
        });
        let r = h.expect(types::STREAM_READ).await;
        // READ errors travel in the coded status-1 envelope.
        h.fail(&r, WireError::coded(code, "bad filter")).await;
        let e = t.await.unwrap().unwrap_err();
        assert_eq!((e.kind(), e.code()), (ErrorKind::Broker, Some(code)));
        assert!(!e.is_retryable() && !e.maybe_applied());
    }
    assert_eq!(
        h.client.state(),
        State::Authenticated,
        "the connection stays up"
    );
}

#[tokio::test(start_paused = true)]
async fn subscriptions_to_one_selector_share_a_registration() {
    let mut h = start().await;
    let selector = "stream://prod/**";
    let streams = h.client.stream();
    let t = tokio::spawn(async move { streams.subscribe(selector).await });
    let sub = h.expect(types::STREAM_SUBSCRIBE).await;
    h.peer.reply(&sub, &payloads::subscribed(3)).await.unwrap();
    let first = t.await.unwrap().unwrap();
    // A second subscription and a follower of the same selector send nothing.
    let second = h.client.stream().subscribe(selector).await.unwrap();
    let streams = h.client.stream();
    let follower = tokio::spawn(async move {
        let mut reader = streams
            .follow(selector, 0, ReadOptions::new())
            .await
            .unwrap();
        reader.next().await
    });
    let read = h.expect(types::STREAM_READ).await;
    h.ok(&read, &page_bytes(&wire::ReadPage::default(), false))
        .await;
    follower.abort();
    let _ = follower.await;
    drop(second);
    // The last handle's unsubscribe is the only UNSUBSCRIBE on the wire.
    let streams_unsub = tokio::spawn(first.unsubscribe());
    let unsub = h.expect(types::STREAM_UNSUBSCRIBE).await;
    assert_eq!(&unsub.payload[4..], selector.as_bytes());
    h.peer.reply(&unsub, &payloads::ok()).await.unwrap();
    streams_unsub.await.unwrap().unwrap();
    assert_eq!(h.client.debug_snapshot().await.unwrap().registrations, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_follow_releases_its_subscription_at_once() {
    let mut h = start().await;
    let streams = h.client.stream();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let t = tokio::spawn(async move {
        let mut reader = streams.follow(ROUTE, 0, ReadOptions::new()).await.unwrap();
        let e = reader.next().await.unwrap().unwrap_err();
        assert!(reader.next().await.is_none(), "the error is the last item");
        // Keep the reader alive: the release must not wait for its Drop.
        let _ = rx.await;
        (e, reader)
    });
    let sub = h.expect(types::STREAM_SUBSCRIBE).await;
    h.peer.reply(&sub, &payloads::subscribed(6)).await.unwrap();
    let read = h.expect(types::STREAM_READ).await;
    h.fail(
        &read,
        WireError::coded(crate::codes::STREAM_INVALID_READ_BOUND, "bad bound"),
    )
    .await;
    let unsub = h.expect(types::STREAM_UNSUBSCRIBE).await;
    h.peer.reply(&unsub, &payloads::ok()).await.unwrap();
    tx.send(()).unwrap();
    let (e, _reader) = t.await.unwrap();
    assert_eq!(e.code(), Some(crate::codes::STREAM_INVALID_READ_BOUND));
}
