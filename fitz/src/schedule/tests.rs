//! The Schedule client against a scripted peer: wire bytes, both listing
//! pagers, envelopes, local validation, subscriptions.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fitz_protocol::schedule::{self as wire, Entry};
use fitz_protocol::{Message, ReplyBody, Str, WireError, types};
use fitz_testkit::peer::{CAP_CORRELATION, Peer, Request, payloads};
use futures_util::{StreamExt, TryStreamExt};

use super::*;
use crate::transport::memory;
use crate::{Client, ErrorKind};

async fn start() -> (Client, Peer) {
    let (connector, mut listener) = memory(1 << 20);
    let client = Client::builder("memory://test", crate::StaticToken::anonymous())
        .connector(connector)
        .build()
        .unwrap();
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    let mut peer = Peer::new(listener.accept().await.unwrap());
    peer.handshake(CAP_CORRELATION).await.unwrap();
    connecting.await.unwrap().unwrap();
    // The listener may go: this client never reconnects in these tests.
    drop(listener);
    (client, peer)
}

async fn expect(peer: &mut Peer, ty: u16) -> Request {
    let r = tokio::time::timeout(Duration::from_secs(5), peer.read_request())
        .await
        .expect("no request")
        .unwrap();
    assert_eq!(r.ty, ty, "{r:?}");
    r
}

async fn ok<R: ReplyBody>(peer: &mut Peer, req: &Request, body: &R) {
    let mut b = BytesMut::new();
    b.put_u8(0);
    body.encode_body(&mut b);
    peer.reply(req, &b).await.unwrap();
}

fn entry(route: &str) -> Entry {
    Entry {
        route: Str::from(route),
        cron: Str::from_static("*/5 * * * *"),
        mode: DeliveryMode::Broadcast,
        payload: bytes::Bytes::from_static(b"p"),
    }
}

const ROUTE: &str = "schedule://prod/reports/daily/run";

#[tokio::test(start_paused = true)]
async fn create_sends_the_entry_and_surfaces_uncoded_errors() {
    let (client, mut peer) = start().await;
    let s = client.schedule();
    let t = tokio::spawn(async move {
        s.create(ROUTE, "0 6 * * *", DeliveryMode::Single, "cfg")
            .await
    });
    let r = expect(&mut peer, types::SCHEDULE_CREATE).await;
    let msg = wire::Create::decode(r.payload.clone()).unwrap();
    assert_eq!(
        (
            &*msg.entry.route,
            &*msg.entry.cron,
            msg.entry.mode,
            &msg.entry.payload[..]
        ),
        (ROUTE, "0 6 * * *", DeliveryMode::Single, &b"cfg"[..])
    );
    let mut b = BytesMut::new();
    WireError::uncoded("invalid cron expression: bad minute").encode(&mut b);
    peer.reply(&r, &b).await.unwrap();
    let e = t.await.unwrap().unwrap_err();
    assert_eq!((e.kind(), e.code()), (ErrorKind::Broker, None));
    assert!(e.message().contains("invalid cron"), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn coded_busy_is_retryable_and_cancel_is_plain() {
    let (client, mut peer) = start().await;
    let s = client.schedule();
    let t = tokio::spawn(async move { s.cancel(ROUTE).await });
    let r = expect(&mut peer, types::SCHEDULE_CANCEL).await;
    assert_eq!(&r.payload[4..], ROUTE.as_bytes());
    peer.reply(&r, &payloads::error(7010, "busy"))
        .await
        .unwrap();
    let e = t.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(crate::codes::SCHEDULE_BUSY));
    assert!(e.is_retryable() && !e.maybe_applied());
}

#[tokio::test(start_paused = true)]
async fn batches_are_validated_whole_and_empty_ones_send_nothing() {
    let (client, mut peer) = start().await;
    let s = client.schedule();
    s.create_batch(Vec::new()).await.unwrap();
    let e = s
        .create_batch([
            ScheduleEntry::new(ROUTE, "* * * * *", DeliveryMode::Broadcast, ""),
            ScheduleEntry::new(
                "schedule://prod/reports/daily",
                "* * * * *",
                DeliveryMode::Broadcast,
                "",
            ),
        ])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let t = tokio::spawn(async move {
        s.create_batch([
            ScheduleEntry::new(ROUTE, "* * * * *", DeliveryMode::Broadcast, "a"),
            ScheduleEntry::new(
                "schedule://prod/reports/weekly/run",
                "0 0 * * 0",
                DeliveryMode::Single,
                "b",
            ),
        ])
        .await
    });
    let r = expect(&mut peer, types::SCHEDULE_CREATE_BATCH).await;
    let batch = wire::CreateBatch::decode(r.payload.clone()).unwrap();
    assert_eq!(batch.entries.len(), 2);
    assert_eq!(batch.entries[1].mode, DeliveryMode::Single);
    peer.reply(&r, &payloads::ok()).await.unwrap();
    t.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn list_all_pages_by_offset_through_short_pages() {
    let (client, mut peer) = start().await;
    let s = client.schedule();
    assert_eq!(
        s.list(0, MAX_LIST_LIMIT + 1).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let t = tokio::spawn(async move { s.list_all().try_collect::<Vec<_>>().await });
    let routes = [
        "schedule://a/b/c/1",
        "schedule://a/b/c/2",
        "schedule://a/b/c/3",
    ];
    // A short first page (the broker truncated it), then the rest.
    for (offset, slice) in [(0u64, &routes[..2]), (2, &routes[2..])] {
        let r = expect(&mut peer, types::SCHEDULE_LIST).await;
        let mut want = BytesMut::new();
        want.put_u8(1);
        want.put_u64(offset);
        want.put_u8(1);
        want.put_u64(MAX_LIST_LIMIT);
        assert_eq!(&r.payload[..], &want[..], "both flags always present");
        let body = wire::ListOk {
            total_count: 3,
            entries: slice.iter().map(|r| entry(r)).collect(),
        };
        ok(&mut peer, &r, &body).await;
    }
    let all = t.await.unwrap().unwrap();
    let got: Vec<&str> = all.iter().map(ScheduleEntry::route).collect();
    assert_eq!(got, routes);
}

#[tokio::test(start_paused = true)]
async fn an_empty_page_before_the_total_is_an_error_not_a_loop() {
    let (client, mut peer) = start().await;
    let s = client.schedule();
    let t = tokio::spawn(async move { s.list_all().try_collect::<Vec<_>>().await });
    let r = expect(&mut peer, types::SCHEDULE_LIST).await;
    ok(
        &mut peer,
        &r,
        &wire::ListOk {
            total_count: 5,
            entries: Vec::new(),
        },
    )
    .await;
    assert_eq!(t.await.unwrap().unwrap_err().kind(), ErrorKind::Protocol);
}

#[tokio::test(start_paused = true)]
async fn list_matching_filters_locally_and_cursor_listing_follows_continuations() {
    let (client, mut peer) = start().await;
    let s = client.schedule();
    assert!(
        s.list_matching("schedule://a/b/c").is_err(),
        "cannot match 4 segments"
    );
    let s2 = s.clone();
    let t = tokio::spawn(async move {
        s2.list_matching("schedule://a/*/c/**")
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
    });
    let r = expect(&mut peer, types::SCHEDULE_LIST).await;
    let body = wire::ListOk {
        total_count: 2,
        entries: vec![entry("schedule://a/x/c/run"), entry("schedule://a/x/d/run")],
    };
    ok(&mut peer, &r, &body).await;
    let matched = t.await.unwrap().unwrap();
    assert_eq!(matched.len(), 1);
    assert_eq!(matched[0].route(), "schedule://a/x/c/run");

    let t = tokio::spawn(async move { s.list_all_after(None).try_collect::<Vec<_>>().await });
    let r = expect(&mut peer, types::SCHEDULE_LIST_V2).await;
    let first = wire::ListV2::decode(r.payload.clone()).unwrap();
    assert_eq!(
        (first.continuation, first.limit),
        (None, Some(MAX_LIST_LIMIT))
    );
    let cursor = "schedule-list-v1:1:schedule://a/x/c/run";
    ok(
        &mut peer,
        &r,
        &wire::ListV2Ok {
            has_more: true,
            continuation: Some(Str::from_static(cursor)),
            entries: vec![entry("schedule://a/x/c/run")],
        },
    )
    .await;
    let r = expect(&mut peer, types::SCHEDULE_LIST_V2).await;
    let second = wire::ListV2::decode(r.payload.clone()).unwrap();
    assert_eq!(second.continuation.as_deref(), Some(cursor));
    ok(
        &mut peer,
        &r,
        &wire::ListV2Ok {
            has_more: false,
            continuation: None,
            entries: vec![entry("schedule://a/x/d/run")],
        },
    )
    .await;
    assert_eq!(t.await.unwrap().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn subscriptions_deliver_fires_and_unsubscribe_by_pattern() {
    let (client, mut peer) = start().await;
    let s = client.schedule();
    for bad in [
        "schedule://a/b/c",
        "schedule://a/b/c/d/e",
        "notice://a/b/c/d",
        "schedule://a/b*/c/d",
    ] {
        assert_eq!(
            s.subscribe(bad).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{bad}"
        );
    }
    let pattern = "schedule://prod/*/*/run";
    let s2 = s.clone();
    let t = tokio::spawn(async move { s2.subscribe(pattern).await });
    let r = expect(&mut peer, types::SCHEDULE_SUBSCRIBE).await;
    assert_eq!(&r.payload[4..], pattern.as_bytes());
    peer.reply(&r, &payloads::subscribed(8)).await.unwrap();
    let mut sub = t.await.unwrap().unwrap();
    // A second handle shares the registration: nothing is sent.
    let twin = s.subscribe(pattern).await.unwrap();
    peer.send_record(
        types::SCHEDULE_NOTIFY,
        &payloads::notify(8, ROUTE, b"{\"n\":1}"),
    )
    .await
    .unwrap();
    let fire = sub.next().await.unwrap().unwrap();
    assert_eq!(
        (fire.route(), &fire.payload()[..]),
        (ROUTE, &b"{\"n\":1}"[..])
    );
    #[cfg(feature = "serde")]
    assert_eq!(fire.json::<serde_json::Value>().unwrap()["n"], 1);
    drop(twin);
    let t = tokio::spawn(async move { sub.unsubscribe().await });
    let r = expect(&mut peer, types::SCHEDULE_UNSUBSCRIBE).await;
    assert_eq!(&r.payload[4..], pattern.as_bytes());
    peer.reply(&r, &payloads::ok()).await.unwrap();
    t.await.unwrap().unwrap();
}
