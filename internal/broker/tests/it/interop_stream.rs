//! The official client, `cntryl-fitz` 0.2.0, against the embedded broker's
//! Stream domain: append sessions, reads (exact, filtered with markers,
//! global across realms with continuation), LAST, metadata and a commit
//! notification — anonymously and with its test JWT, over TCP and WebSocket.

use std::time::Duration;

use crate::support::{ALL, token};
use cntryl_fitz::client_domains::stream::{
    StreamClient, StreamCommitMode, StreamDiscriminator, StreamFilterClause, StreamFilterSet,
    StreamReadOptions,
};
use cntryl_fitz::{Client, FitzError};
use fitz_broker::Broker;
use futures_util::StreamExt;

async fn write(stream: &StreamClient, route: &str, records: &[(&str, Option<&str>)]) -> u64 {
    let first = stream.metadata(route).await.unwrap().record_count;
    let mut session = stream.begin(route, None).await.unwrap();
    for (i, (body, disc)) in records.iter().enumerate() {
        let disc = disc.map(StreamDiscriminator::from);
        let offset = session
            .append(first + i as u64, body.as_bytes(), None, disc.as_ref())
            .await
            .unwrap();
        assert_eq!(offset, Some(first + i as u64));
    }
    session.commit(StreamCommitMode::Sync).await.unwrap();
    first
}

async fn exercise(client: &Client, tag: &str) {
    client.connect().await.expect("connects");
    let stream = client.stream().unwrap();
    let route = format!("stream://interop/{tag}/events");

    // A live subscription first: it must see the commit below.
    let mut sub = stream
        .subscribe(&format!("stream://interop/{tag}/*"))
        .await
        .unwrap();

    // begin / append (with metadata and discriminator) / commit.
    let mut s = stream.begin(&route, Some(b"ingest")).await.unwrap();
    let alpha = StreamDiscriminator::from("proj.alpha");
    assert_eq!(
        s.append(0, b"one", Some(b"m1"), Some(&alpha))
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(s.append(1, b"two", None, None).await.unwrap(), Some(1));
    s.commit(StreamCommitMode::Sync).await.unwrap();

    let n = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("notification in time")
        .expect("subscription open")
        .unwrap();
    assert_eq!(n.route, route);
    assert_eq!(n.event, "committed");
    assert_eq!(
        (
            n.first_resource_offset,
            n.last_resource_offset,
            n.batch_size
        ),
        (0, 1, 2)
    );
    assert_eq!(n.last_area_offset - n.first_area_offset, 1);

    // OCC conflicts are classified by code, in the status-2 envelope.
    let mut stale = stream.begin(&route, None).await.unwrap();
    match stale.append(0, b"stale", None, None).await {
        Err(FitzError::Domain { code, .. }) => assert_eq!(code, 2001),
        other => panic!("expected 2001, got {other:?}"),
    }
    stale.rollback().await.unwrap();

    // Exact read: items, cursor, flattened records.
    let page = stream
        .read_page(&route, 0, 10, StreamReadOptions::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.cursor.last_resource_offset, 1);
    assert!(!page.cursor.has_more);
    let records = stream.read(&route, 1, 10, None, None, None).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].offset, &records[0].body[..]), (1, &b"two"[..]));
    assert_eq!(records[0].route, route);

    // LAST and metadata.
    let last = stream.peek(&route).await.unwrap().unwrap();
    assert_eq!((last.offset, &last.body[..]), (1, &b"two"[..]));
    assert!(
        stream
            .peek(&format!("stream://interop/{tag}/empty"))
            .await
            .unwrap()
            .is_none()
    );
    let m = stream.metadata(&route).await.unwrap();
    assert_eq!(
        (
            m.first_offset,
            m.last_offset,
            m.record_count,
            m.max_batch_events,
            m.ttl_seconds
        ),
        (0, 1, 2, 1000, None)
    );

    // Filtered read: markers keep the cursor moving past withheld records.
    write(
        &stream,
        &route,
        &[
            ("three", Some("proj.x")),
            ("four", Some("audit")),
            ("five", Some("audit")),
            ("six", Some("proj.beta")),
        ],
    )
    .await;
    let f = StreamFilterSet {
        clauses: vec![StreamFilterClause::StartsWith("proj.".into())],
    };
    let page = stream
        .read_page(
            &route,
            0,
            10,
            StreamReadOptions {
                filter: Some(&f),
                ..StreamReadOptions::default()
            },
        )
        .await
        .unwrap();
    let shapes: Vec<String> = page
        .items
        .iter()
        .map(|i| {
            let d = format!("{i:?}");
            d.split([' ', '(']).next().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        shapes,
        ["Event", "Filtered", "Event", "FilteredRange", "Event"]
    );
    assert_eq!(page.cursor.last_resource_offset, 5);
    let hits = stream
        .read(&route, 0, 10, None, Some(&f), None)
        .await
        .unwrap();
    let hit_bodies: Vec<&[u8]> = hits.iter().map(|r| &r.body[..]).collect();
    assert_eq!(hit_bodies, [&b"one"[..], b"three", b"six"]);

    // Global read over two realms, continued page by page with the
    // private continuation values echoed.
    let area = format!("g{tag}");
    for i in 0..5 {
        write(
            &stream,
            &format!("stream://realm{}/{area}/x", i % 2),
            &[(&format!("g{i}"), None)],
        )
        .await;
    }
    let (pages, items) = global_read(&stream, &format!("stream://*/{area}/*")).await;
    assert!(pages >= 3, "5 records, 2 per page");
    let routes: Vec<&str> = items.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        routes,
        [0, 1, 0, 1, 0].map(|i| format!("stream://realm{i}/{area}/x"))
    );
    let bodies: Vec<String> = items.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(bodies, (0..5).map(|i| format!("g{i}")).collect::<Vec<_>>());
    let (pages, items) = global_read(&stream, "stream://**").await;
    assert!(pages >= 2);
    let mine: Vec<&str> = items
        .iter()
        .filter(|(r, _)| r.contains(&format!("/{area}/")))
        .map(|(_, b)| b.as_str())
        .collect();
    assert_eq!(mine, ["g0", "g1", "g2", "g3", "g4"]);
    // A continuation must carry both private values: `read` sends only the
    // fingerprint, which the broker refuses as an invalid bound.
    let first = stream
        .read_page("stream://**", 0, 1, StreamReadOptions::default())
        .await
        .unwrap();
    let half = stream
        .read(
            "stream://**",
            first.cursor.last_global_offset.unwrap() + 1,
            1,
            None,
            None,
            first.cursor.cursor_fingerprint,
        )
        .await;
    assert!(matches!(half, Err(FitzError::Domain { code: 2004, .. })));

    sub.unsubscribe().await.unwrap();
    client.close().await.unwrap();
}

/// Reads a global selector to the end, two items per page, echoing the
/// continuation values; returns the page count and (route, body) of events.
async fn global_read(stream: &StreamClient, selector: &str) -> (usize, Vec<(String, String)>) {
    let (mut from, mut fingerprint, mut watermark) = (0, None, None);
    let mut pages = 0;
    let mut items = Vec::new();
    loop {
        let page = stream
            .read_page(
                selector,
                from,
                2,
                StreamReadOptions {
                    cursor_fingerprint: fingerprint,
                    captured_watermark: watermark,
                    ..StreamReadOptions::default()
                },
            )
            .await
            .unwrap();
        pages += 1;
        // The item type is not exported by 0.2.0; its Debug form is.
        for item in &page.items {
            let d = format!("{item:?}");
            assert!(d.starts_with("Event("), "{d}");
            let route = d
                .split("route: \"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let body = d
                .split("body: [")
                .nth(1)
                .unwrap()
                .split(']')
                .next()
                .unwrap();
            let body: Vec<u8> = body.split(", ").map(|b| b.parse().unwrap()).collect();
            items.push((route.to_string(), String::from_utf8(body).unwrap()));
        }
        let c = &page.cursor;
        assert!(c.cursor_fingerprint.is_some() && c.captured_watermark.is_some());
        assert!(c.last_global_offset.is_some());
        if !c.has_more {
            return (pages, items);
        }
        from = c.last_global_offset.unwrap() + 1;
        fingerprint = c.cursor_fingerprint;
        watermark = c.captured_watermark;
        assert!(pages < 1_000, "runaway paging");
    }
}

fn urls(broker: &Broker) -> [(String, &'static str); 2] {
    [(broker.tcp_url(), "tcp"), (broker.ws_url(), "ws")]
}

#[tokio::test]
async fn official_client_streams_anonymously_over_tcp_and_ws() {
    let broker = crate::support::anon().await;
    for (url, tag) in urls(&broker) {
        let client = Client::anonymous(url)
            .service_name("interop-stream")
            .build()
            .unwrap();
        exercise(&client, tag).await;
    }
}

#[tokio::test]
async fn official_client_streams_with_its_test_jwt_over_tcp_and_ws() {
    let broker = crate::support::jwt().await;
    for (url, tag) in urls(&broker) {
        let client = Client::builder(url, || async { Ok(token("dev", ALL)) })
            .build()
            .unwrap();
        exercise(&client, tag).await;
    }
}

#[tokio::test]
async fn official_client_sees_stream_errors_by_code() {
    let broker = crate::support::jwt().await;
    for (url, tag) in urls(&broker) {
        let t = token("dev", &["stream://ro/**#read"]);
        let client = Client::builder(url, move || {
            let t = t.clone();
            async move { Ok(t) }
        })
        .build()
        .unwrap();
        client.connect().await.unwrap();
        let stream = client.stream().unwrap();
        // Unauthorized BEGIN: 2009 in the status-2 envelope.
        match stream.begin(&format!("stream://ro/{tag}/x"), None).await {
            Err(FitzError::Domain { code, .. }) => assert_eq!(code, 2009),
            other => panic!("expected 2009, got {:?}", other.err()),
        }
        // Unauthorized READ: 2009, status 1 coded.
        match stream
            .read_page("stream://**", 0, 1, StreamReadOptions::default())
            .await
        {
            Err(FitzError::Domain { code, .. }) => assert_eq!(code, 2009),
            other => panic!("expected 2009, got {other:?}"),
        }
        // An allowed read of nothing is an empty, caught-up page.
        let page = stream
            .read_page(
                &format!("stream://ro/{tag}/*"),
                0,
                1,
                StreamReadOptions::default(),
            )
            .await
            .unwrap();
        assert!(page.items.is_empty() && !page.cursor.has_more);
        client.close().await.unwrap();
    }
}
