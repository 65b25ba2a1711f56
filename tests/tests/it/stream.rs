//! The Stream client against the embedded broker (or an external one, see
//! `fitz_testkit::fixture`), over TCP and WebSocket, directly and through
//! the disconnect proxy.

use fitz::stream::{
    AppendOptions, CommitEvent, Durability, Filter, FilterReason, ReadOptions, SelectorScope,
    StreamItem, StreamRecord,
};
use fitz::{Client, ErrorKind, Event, codes};
use fitz_tests::{
    Brokers, BrokersExt, Transport, connected, connected_with, next_item as next, realm, wait_event,
};
use futures_util::{StreamExt, TryStreamExt};

/// Commits `bodies` to `route` in one batch.
async fn commit(client: &Client, route: &str, bodies: &[&str]) {
    let mut s = client.stream().begin(route).await.unwrap();
    for b in bodies {
        s.append(b.to_string()).await.unwrap();
    }
    s.commit(Durability::Sync).await.unwrap();
}

fn records(items: &[StreamItem]) -> Vec<(String, String)> {
    items
        .iter()
        .filter_map(StreamItem::as_record)
        .map(|r| (r.route().to_owned(), body(r)))
        .collect()
}

fn body(r: &StreamRecord) -> String {
    String::from_utf8(r.body().to_vec()).unwrap()
}

/// The global offset after the last record of the route family: where a
/// family-wide replay of what a test commits from now on starts (0 on an
/// embedded broker; whatever earlier runs left on an external one).
async fn global_end(client: &Client) -> u64 {
    let pages: Vec<_> = client
        .stream()
        .read_pages("stream://**", 0, ReadOptions::new())
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    pages.last().map_or(0, |p| p.next_offset())
}

/// Whether `route` is under one of `realms`.
fn under(route: &str, realms: &[&str]) -> bool {
    realms
        .iter()
        .any(|r| route.starts_with(&format!("stream://{r}/")))
}

#[tokio::test]
async fn append_commit_read_round_trip_over_tcp_and_websocket() {
    let brokers = Brokers::start().await.unwrap();
    // Two tests read family-wide (`stream://**`): against a shared broker
    // every test here commits alone.
    let _serial = brokers.exclusive().await;
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let client = connected(url).await;
        let streams = client.stream();
        let route = format!("stream://{}/orders/o-1", realm(t.name()));
        assert_eq!(streams.last(&route).await.unwrap(), None);
        assert_eq!(streams.metadata(&route).await.unwrap().next_offset(), 0);

        let mut s = streams.begin(&route).await.unwrap();
        assert_eq!(s.next_offset(), 0);
        assert_eq!(s.append("created").await.unwrap(), 0);
        let opts = AppendOptions::new().metadata("m1").discriminator("pay");
        assert_eq!(s.append_with("paid", opts).await.unwrap(), 1);
        let info = s.commit(Durability::Sync).await.unwrap();
        assert_eq!((info.offsets(), info.records()), (Some(0..=1), 2));

        // A second session appends at the end on its own.
        let mut s = streams.begin(&route).await.unwrap();
        assert_eq!(s.next_offset(), 2);
        s.append("shipped").await.unwrap();
        s.commit(Durability::Buffered).await.unwrap();

        let page = streams
            .read_page(&route, 0, &ReadOptions::new())
            .await
            .unwrap();
        assert_eq!(page.scope(), SelectorScope::Resource);
        assert!(page.caught_up(), "{url}");
        assert_eq!(page.next_offset(), 3);
        let got: Vec<(u64, String)> = page.records().map(|r| (r.offset(), body(r))).collect();
        assert_eq!(
            got,
            [
                (0, "created".into()),
                (1, "paid".into()),
                (2, "shipped".into())
            ]
        );
        let paid = page.records().nth(1).unwrap();
        assert_eq!(paid.metadata().map(|m| &m[..]), Some(&b"m1"[..]));
        assert_eq!(paid.route(), route);

        let last = streams.last(&route).await.unwrap().unwrap();
        assert_eq!((last.offset(), body(&last)), (2, "shipped".into()));
        let meta = streams.metadata(&route).await.unwrap();
        assert_eq!(
            (meta.last_offset, meta.record_count, meta.next_offset()),
            (Some(2), 3, 3)
        );
        // Past the end: an empty, caught-up page that keeps its offset.
        let past = streams
            .read_page(&route, 10, &ReadOptions::new())
            .await
            .unwrap();
        assert!(past.is_empty() && past.caught_up());
        assert_eq!(past.next_offset(), 10);
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn json_records_round_trip() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Order {
        id: u32,
    }
    let brokers = Brokers::start().await.unwrap();
    // Two tests read family-wide (`stream://**`): against a shared broker
    // every test here commits alone.
    let _serial = brokers.exclusive().await;
    let client = connected(&brokers.anon_tcp).await;
    let route = &format!("stream://{}/orders/o-1", realm("json"));
    let mut s = client.stream().begin(route).await.unwrap();
    s.append_json(&Order { id: 7 }).await.unwrap();
    s.commit(Durability::Sync).await.unwrap();
    let last = client.stream().last(route).await.unwrap().unwrap();
    assert_eq!(last.json::<Order>().unwrap(), Order { id: 7 });
    let e = last.json::<Vec<String>>().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn occ_conflicts_and_session_exclusivity_are_typed() {
    let brokers = Brokers::start().await.unwrap();
    // Two tests read family-wide (`stream://**`): against a shared broker
    // every test here commits alone.
    let _serial = brokers.exclusive().await;
    let a = connected(&brokers.anon_tcp).await;
    let b = connected(&brokers.anon_ws).await;
    let route = &format!("stream://{}/orders/o-1", realm("occ"));
    commit(&a, route, &["r0", "r1"]).await;

    // A writer that built on revision 1 (next offset 1) lost the race.
    let mut stale = a.stream().begin_at(route, 1).await.unwrap();
    let e = stale.append("late").await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::Broker, Some(codes::STREAM_CONCURRENCY_CONFLICT))
    );
    assert!(!e.is_retryable() && !e.maybe_applied());
    assert_eq!(stale.next_offset(), 1, "a conflict moves nothing");

    // While that session holds the resource nobody else may begin.
    let e = b.stream().begin(route).await.unwrap_err();
    assert_eq!(e.code(), Some(codes::STREAM_SESSION_ACTIVE), "{e}");
    stale.rollback().await.unwrap();
    let mut s = b.stream().begin_at(route, 2).await.unwrap();
    assert_eq!(s.append("r2").await.unwrap(), 2);
    s.commit(Durability::Sync).await.unwrap();
    assert_eq!(a.stream().metadata(route).await.unwrap().record_count, 3);
    a.close().await;
    b.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn rolled_back_and_dropped_sessions_leave_nothing_visible() {
    let brokers = Brokers::start().await.unwrap();
    // Two tests read family-wide (`stream://**`): against a shared broker
    // every test here commits alone.
    let _serial = brokers.exclusive().await;
    let a = connected(&brokers.anon_tcp).await;
    let b = connected(&brokers.anon_tcp).await;
    let route = &format!("stream://{}/orders/o-1", realm("rb"));
    commit(&a, route, &["kept"]).await;

    let mut s = a.stream().begin(route).await.unwrap();
    s.append("discarded").await.unwrap();
    s.rollback().await.unwrap();

    let mut s = a.stream().begin(route).await.unwrap();
    s.append("dropped").await.unwrap();
    drop(s);
    // The background ROLLBACK was answered once nothing is pending.
    fitz_tests::until("the background rollback is answered", || async {
        a.debug_snapshot().await.unwrap().pending == 0
    })
    .await;
    // The lock is free again for another client, and only "kept" is there.
    let s = b.stream().begin(route).await.unwrap();
    assert_eq!(s.next_offset(), 1);
    s.rollback().await.unwrap();
    let all: Vec<StreamItem> = a
        .stream()
        .read(route, 0, ReadOptions::new())
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(records(&all), [(route.to_owned(), "kept".to_owned())]);
    a.close().await;
    b.close().await;
    brokers.shutdown().await;
}

/// Ten selector shapes over two realms, two areas and two resources: each
/// reads exactly its routes, in commit order, through multi-page replays.
#[tokio::test]
async fn every_selector_scope_replays_its_axis_across_pages() {
    let brokers = Brokers::start().await.unwrap();
    // Two tests read family-wide (`stream://**`): against a shared broker
    // every test here commits alone.
    let _serial = brokers.exclusive().await;
    let client = connected(&brokers.anon_tcp).await;
    let base = global_end(&client).await;
    let (r1, r2) = (realm("r1"), realm("r2"));
    let at = |r: &str, rest: &str| format!("stream://{r}/{rest}");
    let batches: Vec<(String, &[&str])> = vec![
        (at(&r1, "a/x"), &["1", "2"]),
        (at(&r2, "a/x"), &["3"]),
        (at(&r1, "b/y"), &["4"]),
        (at(&r1, "a/y"), &["5", "6"]),
        (at(&r2, "b/x"), &["7"]),
        (at(&r1, "a/x"), &["8"]),
        (at(&r2, "a/y"), &["9"]),
        (at(&r1, "b/x"), &["10"]),
    ];
    let mut committed = Vec::new();
    for (route, bodies) in &batches {
        commit(&client, route, bodies).await;
        committed.extend(bodies.iter().map(|b| (route.clone(), b.to_string())));
    }
    let streams = client.stream();
    let ours = [r1.as_str(), r2.as_str()];
    for (selector, scope) in [
        (at(&r1, "a/x"), SelectorScope::Resource),
        (at(&r1, "a/*"), SelectorScope::Area),
        (at(&r1, "*/x"), SelectorScope::Realm),
        (at(&r1, "*/*"), SelectorScope::Realm),
        (at(&r1, "**"), SelectorScope::Realm),
        ("stream://*/a/x".to_owned(), SelectorScope::Global),
        ("stream://*/a/*".to_owned(), SelectorScope::Global),
        ("stream://*/*/x".to_owned(), SelectorScope::Global),
        ("stream://*/*/*".to_owned(), SelectorScope::Global),
        ("stream://**".to_owned(), SelectorScope::Global),
    ] {
        let selector = selector.as_str();
        let want: Vec<(String, String)> = committed
            .iter()
            .filter(|(route, _)| fitz_protocol::route::matches(selector, route))
            .cloned()
            .collect();
        // Global selectors start after what was there before this test.
        let from = if scope == SelectorScope::Global {
            base
        } else {
            0
        };
        let mut reader = streams
            .read(selector, from, ReadOptions::new().limit(2))
            .unwrap();
        assert_eq!(reader.scope(), scope, "{selector}");
        let mut items = Vec::new();
        while let Some(item) = reader.next().await {
            items.push(item.unwrap());
        }
        let got: Vec<_> = records(&items)
            .into_iter()
            .filter(|(route, _)| under(route, &ours))
            .collect();
        assert_eq!(got, want, "{selector}");
        // Resuming where the replay stopped finds nothing new.
        let again = streams
            .read_page(selector, reader.next_offset(), &ReadOptions::new())
            .await
            .unwrap();
        assert!(again.records().next().is_none(), "{selector}");
    }
    // The family-wide read spans both realms over several continued pages.
    let pages: Vec<_> = streams
        .read_pages("stream://**", base, ReadOptions::new().limit(3))
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(pages.len() >= 4, "{} pages", pages.len());
    assert!(pages[..pages.len() - 1].iter().all(|p| !p.caught_up()));
    assert!(pages.last().unwrap().caught_up());
    let globals: Vec<u64> = pages
        .iter()
        .flat_map(|p| p.records().map(|r| r.global_offset().unwrap()))
        .collect();
    assert!(globals.windows(2).all(|w| w[0] < w[1]), "{globals:?}");
    assert_eq!(globals.len(), committed.len());
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn filtered_replay_yields_markers_and_moves_past_them() {
    let brokers = Brokers::start().await.unwrap();
    // Two tests read family-wide (`stream://**`): against a shared broker
    // every test here commits alone.
    let _serial = brokers.exclusive().await;
    let client = connected(&brokers.anon_ws).await;
    let base = global_end(&client).await;
    let (f1, f2) = (realm("f1"), realm("f2"));
    for (realm, tags) in [(&f1, ["keep", "drop", ""]), (&f2, ["drop", "keep", "drop"])] {
        let route = format!("stream://{realm}/events/e");
        let mut s = client.stream().begin(&route).await.unwrap();
        for (i, tag) in tags.iter().enumerate() {
            let opts = AppendOptions::new().discriminator(*tag);
            s.append_with(format!("{realm}-{i}"), opts).await.unwrap();
        }
        s.commit(Durability::Sync).await.unwrap();
    }
    let (e1, e2) = (
        format!("stream://{f1}/events/e"),
        format!("stream://{f2}/events/e"),
    );
    let keep = Filter::new().equals("keep");
    // Exact resource: one record, markers for the rest, cursor at the end.
    let page = client
        .stream()
        .read_page(&e1, 0, &ReadOptions::new().filter(keep.clone()))
        .await
        .unwrap();
    assert_eq!(records(page.items()), [(e1.clone(), format!("{f1}-0"))]);
    let withheld: Vec<u64> = page
        .items()
        .iter()
        .filter_map(|i| match i {
            StreamItem::Filtered(f) => {
                assert_eq!(f.reason(), FilterReason::ServerFilter);
                Some(f.offsets())
            }
            StreamItem::Record(_) => None,
        })
        .flatten()
        .collect();
    assert_eq!(withheld, [1, 2]);
    assert_eq!(page.next_offset(), 3);

    // Global, filtered, one item per page: the replay still completes.
    let mut reader = client
        .stream()
        .read(
            "stream://**",
            base,
            ReadOptions::new().limit(1).filter(keep),
        )
        .unwrap();
    let mut items = Vec::new();
    while let Some(item) = reader.next().await {
        items.push(item.unwrap());
    }
    assert_eq!(
        records(&items),
        [(e1, format!("{f1}-0")), (e2, format!("{f2}-1"))]
    );
    assert!(items.len() > 2, "markers for the withheld records");
    assert_eq!(reader.next_offset(), base + 6);
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn read_bounds_and_unauthorized_access_are_typed() {
    let brokers = Brokers::start().await.unwrap();
    // Two tests read family-wide (`stream://**`): against a shared broker
    // every test here commits alone.
    let _serial = brokers.exclusive().await;
    let client = connected(&brokers.anon_tcp).await;
    let b = realm("b");
    for opts in [ReadOptions::new().limit(0), ReadOptions::new().max_bytes(0)] {
        let e = client
            .stream()
            .read_page(&format!("stream://{b}/a/x"), 0, &opts)
            .await
            .unwrap_err();
        assert_eq!(
            (e.kind(), e.code()),
            (ErrorKind::Broker, Some(codes::STREAM_INVALID_READ_BOUND))
        );
    }
    client.close().await;

    let writer = connected_with(&brokers.auth_tcp, brokers.token()).await;
    let (secure, other) = (realm("secure"), realm("other"));
    let route = format!("stream://{secure}/a/x");
    commit(&writer, &route, &["secret"]).await;
    for t in Transport::BOTH {
        let url = brokers.auth_url(t);
        let token = brokers.scoped_token(&[&format!("stream://{secure}/**#read")]);
        let reader = connected_with(url, token).await;
        let page = reader
            .stream()
            .read_page(&route, 0, &ReadOptions::new())
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        for e in [
            reader.stream().begin(&route).await.unwrap_err(),
            reader
                .stream()
                .last(&format!("stream://{other}/a/x"))
                .await
                .unwrap_err(),
            reader
                .stream()
                .subscribe(&format!("stream://{other}/**"))
                .await
                .unwrap_err(),
        ] {
            assert_eq!(
                (e.kind(), e.code()),
                (ErrorKind::Broker, Some(codes::STREAM_UNAUTHORIZED)),
                "{url}: {e}"
            );
            assert!(!e.is_retryable());
        }
        reader.close().await;
    }
    writer.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_subscription_survives_a_cut_on_the_same_handle() {
    let brokers = Brokers::start().await.unwrap();
    // Two tests read family-wide (`stream://**`): against a shared broker
    // every test here commits alone.
    let _serial = brokers.exclusive().await;
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let watcher = connected(&url).await;
    let writer = connected(&brokers.anon_tcp).await;
    let mut events = watcher.events();
    let live = realm("live");
    let mut sub = watcher
        .stream()
        .subscribe(&format!("stream://{live}/orders/*"))
        .await
        .unwrap();
    let (o1, o2) = (
        format!("stream://{live}/orders/o-1"),
        format!("stream://{live}/orders/o-2"),
    );
    commit(&writer, &o1, &["a", "b"]).await;
    match next(&mut sub).await {
        CommitEvent::Committed(c) => {
            assert_eq!(c.route(), o1);
            assert_eq!(c.resource_offsets(), 0..=1);
        }
        other => panic!("{other:?}"),
    }

    proxy.cut_all();
    wait_event(&mut events, |e| matches!(e, Event::Restored { .. })).await;
    commit(&writer, &o2, &["c"]).await;
    let event = next(&mut sub).await;
    assert_eq!(event.route(), o2);
    sub.unsubscribe().await.unwrap();
    watcher.close().await;
    writer.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn follow_catches_up_on_commits_made_during_an_outage() {
    let brokers = Brokers::start().await.unwrap();
    // Two tests read family-wide (`stream://**`): against a shared broker
    // every test here commits alone.
    let _serial = brokers.exclusive().await;
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let follower = connected(&url).await;
    let writer = connected(&brokers.anon_tcp).await;
    let fl = realm("fl");
    let selector = format!("stream://{fl}/orders/*");
    let (o1, o2) = (
        format!("stream://{fl}/orders/o-1"),
        format!("stream://{fl}/orders/o-2"),
    );
    commit(&writer, &o1, &["before"]).await;
    let mut reader = follower
        .stream()
        .follow(&selector, 0, ReadOptions::new())
        .await
        .unwrap();
    let first = next(&mut reader).await;
    assert_eq!(body(first.as_record().unwrap()), "before");

    commit(&writer, &o2, &["live"]).await;
    assert_eq!(body(next(&mut reader).await.as_record().unwrap()), "live");

    // Down, a commit nobody can notify, then back up.
    let mut events = follower.events();
    fitz_tests::refuse_new(&proxy).await;
    proxy.cut_all();
    wait_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    commit(&writer, &o1, &["outage"]).await;
    proxy.refuse_new(false);
    let item = next(&mut reader).await;
    assert_eq!(body(item.as_record().unwrap()), "outage");
    assert_eq!(reader.next_offset(), 3, "area offsets 0..=2 consumed");
    drop(reader);
    follower.close().await;
    writer.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn in_flight_work_during_a_cut_fails_typed_or_is_replayed_safely() {
    let brokers = Brokers::start().await.unwrap();
    // Two tests read family-wide (`stream://**`): against a shared broker
    // every test here commits alone.
    let _serial = brokers.exclusive().await;
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let client = connected(&url).await;
    let cut = realm("cut");
    let route = format!("stream://{cut}/orders/o-1");
    let mut session = client.stream().begin(&route).await.unwrap();
    session.append("x").await.unwrap();

    proxy.blackhole(true);
    let commit = tokio::spawn(session.commit(Durability::Sync));
    let streams = client.stream();
    let area = format!("stream://{cut}/orders/*");
    let read = tokio::spawn(async move { streams.read_page(&area, 0, &ReadOptions::new()).await });
    // Both are written (correlated: on admission) before the cut.
    fitz_tests::until_pending(&client, 2).await;
    proxy.cut_all();
    proxy.blackhole(false);

    let e = commit.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.maybe_applied(), "it was written before the cut");
    assert!(e.is_retryable());
    // The READ changes nothing, so it was sent again after the reconnect.
    let page = read.await.unwrap().unwrap();
    assert!(page.caught_up());

    // The session died with its connection: using it again is stale.
    let mut s = client
        .stream()
        .begin(&format!("stream://{cut}/orders/o-2"))
        .await
        .unwrap();
    s.append("y").await.unwrap();
    let mut events = client.events();
    proxy.cut_all();
    wait_event(&mut events, |e| {
        matches!(
            e,
            Event::Restored { .. }
                | Event::Connected {
                    reconnected: true,
                    ..
                }
        )
    })
    .await;
    assert_eq!(s.append("z").await.unwrap_err().kind(), ErrorKind::Stale);
    assert_eq!(
        s.commit(Durability::Sync).await.unwrap_err().kind(),
        ErrorKind::Stale
    );
    client.close().await;
    brokers.shutdown().await;
}
