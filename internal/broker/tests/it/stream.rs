//! Stream through the wire (TCP and WebSocket): append sessions, optimistic
//! concurrency, commit atomicity and ordering, the ten READ selector shapes
//! with their cursors and continuation, filters, errors, LAST and
//! GET_METADATA, debounced watches, session cleanup, permissions, and the
//! official client's read-conformance fixture as data.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::support::{Kind, RawClient};
use bytes::{BufMut, Bytes, BytesMut};
use fitz_broker::engines::stream::{DEBOUNCE, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_EXAMINED};
use fitz_broker::{Broker, Clock};
use fitz_protocol::kv::Durability;
use fitz_protocol::route::{self, SelectorScope};
use fitz_protocol::stream::{
    self, AppendOk, BeginOk, CommitOk, FilterClause, FilterReason, FilterSet, ItemKind, LastOk,
    MetadataOk, Notify, ReadOk, ReadPage, Record, SubscribeReply,
};
use fitz_protocol::{Envelope, Message, WireError, codes, decode_reply, types};

both_transports!(
    begin_append_commit_and_read_back,
    one_append_session_per_resource,
    expected_offset_is_checked_inside_the_session,
    unknown_or_foreign_sessions_are_not_found,
    nothing_is_visible_before_commit_and_rollback_discards,
    offsets_follow_commit_order_on_every_axis,
    ten_selector_shapes_select_and_page_correctly,
    pages_continue_on_every_axis,
    global_replay_is_a_consistent_snapshot_across_realms,
    continuation_values_are_validated,
    filters_of_every_clause_kind_with_markers_and_ranges,
    filtered_only_pages_still_advance,
    filter_errors_keep_the_connection,
    read_bounds_sizes_and_selectors,
    unknown_resources_read_empty_and_never_2005,
    last_and_metadata,
    batch_limits,
    watches_notify_after_the_debounce_window,
    watch_patterns_and_limits,
    session_end_aborts_append_sessions,
    scoped_token_is_refused_with_2009,
    conformance_fixture_selectors_axes_and_progress,
    conformance_fixture_invalid_selectors,
);

// ---------------------------------------------------------------- helpers

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn begin(c: &mut RawClient, route: &str) -> (u64, u64) {
    let ok: BeginOk = c
        .ok(&stream::Begin {
            route: route.into(),
            ingest_metadata: None,
        })
        .await;
    let next = u64::from_be_bytes(ok.data[..8].try_into().unwrap());
    (ok.session_id, next)
}

fn append_msg(id: u64, expected: u64, body: &[u8], disc: Option<&str>) -> stream::Append {
    stream::Append {
        session_id: id,
        expected_offset: expected,
        body: Bytes::copy_from_slice(body),
        metadata: None,
        discriminator: disc.map(Into::into),
    }
}

async fn append(c: &mut RawClient, id: u64, expected: u64, body: &str, disc: Option<&str>) -> u64 {
    let ok: AppendOk = c.ok(&append_msg(id, expected, body.as_bytes(), disc)).await;
    ok.leading_u64().expect("assigned offset")
}

fn commit_msg(id: u64) -> stream::Commit {
    stream::Commit {
        session_id: id,
        durability: Durability::Sync,
    }
}

/// Commits and returns the eight offsets of the reply data.
async fn commit(c: &mut RawClient, id: u64) -> Vec<u64> {
    let ok: CommitOk = c.ok(&commit_msg(id)).await;
    ok.data
        .chunks(8)
        .map(|x| u64::from_be_bytes(x.try_into().unwrap()))
        .collect()
}

/// Writes one batch of (body, discriminator) records to `route`.
async fn write(c: &mut RawClient, route: &str, records: &[(&str, Option<&str>)]) -> Vec<u64> {
    let (id, next) = begin(c, route).await;
    for (i, (body, disc)) in records.iter().enumerate() {
        assert_eq!(
            append(c, id, next + i as u64, body, *disc).await,
            next + i as u64
        );
    }
    commit(c, id).await
}

/// A stream failure in the status-2 envelope.
async fn stream_err<M: Message>(c: &mut RawClient, m: &M) -> u32 {
    let e = c.fails(m).await;
    assert_eq!(e.envelope, Envelope::Stream, "{e:?}");
    assert!(e.message.len() < 900);
    e.code
}

/// A READ failure: status 1 coded.
async fn read_err(c: &mut RawClient, r: &stream::Read) -> u32 {
    let e = c.fails(r).await;
    assert_eq!(e.envelope, Envelope::Coded, "{e:?}");
    assert!(e.message.len() < 900);
    e.code
}

fn rd(selector: &str, from: u64, limit: u64) -> stream::Read {
    stream::Read {
        selector: selector.into(),
        from_offset: from,
        limit,
        max_bytes: None,
        filter: None,
        cursor_fingerprint: None,
        captured_watermark: None,
    }
}

fn is_global(selector: &str) -> bool {
    route::stream_selector(selector) == Ok(SelectorScope::Global)
}

async fn read(c: &mut RawClient, r: &stream::Read) -> ReadPage {
    let ok: ReadOk = c.ok(r).await;
    assert_eq!(ok.id, None, "READ replies carry has_session_id = 0");
    ReadPage::decode(ok.data, is_global(&r.selector)).expect("page decodes for its scope")
}

fn events(p: &ReadPage) -> Vec<(String, Record)> {
    p.items
        .iter()
        .filter_map(|i| match &i.kind {
            ItemKind::Event(r) => Some((i.route.to_string(), r.clone())),
            _ => None,
        })
        .collect()
}

fn bodies(p: &ReadPage) -> Vec<String> {
    events(p)
        .iter()
        .map(|(_, r)| String::from_utf8(r.body.to_vec()).unwrap())
        .collect()
}

fn filter(clauses: Vec<FilterClause>) -> Option<Bytes> {
    Some(FilterSet { clauses }.to_bytes())
}

/// The next value of the selector's cursor axis, or `from` when absent.
fn next_from(p: &ReadPage, selector: &str, from: u64) -> u64 {
    let axis = match route::stream_selector(selector).unwrap() {
        SelectorScope::Resource => Some(p.last_resource_offset),
        SelectorScope::Area => p.last_area_offset,
        SelectorScope::Realm => p.last_realm_offset,
        SelectorScope::Global => p.last_global_offset,
    };
    axis.map_or(from, |a| a + 1)
}

/// Reads `selector` to the end, `limit` items per page, continuing as the
/// conformance fixture says; checks the progress invariants on the way.
async fn read_to_end(c: &mut RawClient, base: stream::Read) -> (Vec<ReadPage>, u64) {
    let mut r = base;
    let mut pages = Vec::new();
    let mut stalled = 0;
    loop {
        let p = read(c, &r).await;
        let next = next_from(&p, &r.selector, r.from_offset);
        if p.has_more {
            // Two consecutive has_more pages without progress is a stall.
            stalled = if next == r.from_offset {
                stalled + 1
            } else {
                0
            };
            assert!(stalled < 2, "stalled at {}", r.from_offset);
        }
        let global = is_global(&r.selector);
        assert_eq!(p.cursor_fingerprint.is_some(), global);
        assert_eq!(p.captured_watermark.is_some(), global);
        r.cursor_fingerprint = p.cursor_fingerprint;
        r.captured_watermark = p.captured_watermark;
        r.from_offset = next;
        let done = !p.has_more;
        pages.push(p);
        if done {
            return (pages, next);
        }
        assert!(pages.len() < 10_000, "runaway paging");
    }
}

/// A committed record as the tests model it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    route: String,
    offsets: [u64; 4],
    body: String,
    disc: Option<String>,
}

/// Commits batches and keeps the offsets every axis should assign.
#[derive(Default)]
struct Writer {
    records: Vec<Model>,
}

impl Writer {
    async fn write(&mut self, c: &mut RawClient, route: &str, recs: &[(&str, Option<&str>)]) {
        let got = write(c, route, recs).await;
        let (realm, area) = {
            let mut p = route.trim_start_matches("stream://").split('/');
            (p.next().unwrap().to_string(), p.next().unwrap().to_string())
        };
        let count =
            |f: &dyn Fn(&Model) -> bool| self.records.iter().filter(|m| f(m)).count() as u64;
        let seg = |m: &Model, n: usize| {
            m.route
                .trim_start_matches("stream://")
                .split('/')
                .nth(n)
                .unwrap()
                .to_string()
        };
        let mut next = [
            count(&|m| m.route == route),
            count(&|m| seg(m, 0) == realm && seg(m, 1) == area),
            count(&|m| seg(m, 0) == realm),
            self.records.len() as u64,
        ];
        assert_eq!(
            got,
            [
                next[0],
                next[0] + recs.len() as u64 - 1,
                next[1],
                next[1] + recs.len() as u64 - 1,
                next[2],
                next[2] + recs.len() as u64 - 1,
                next[3],
                next[3] + recs.len() as u64 - 1
            ],
            "COMMIT data: first/last resource, area, realm, global"
        );
        for (body, disc) in recs {
            self.records.push(Model {
                route: route.into(),
                offsets: next,
                body: (*body).into(),
                disc: disc.map(Into::into),
            });
            for n in &mut next {
                *n += 1;
            }
        }
    }

    /// The records `selector` selects, in axis (= commit) order.
    fn selected(&self, selector: &str) -> Vec<&Model> {
        self.records
            .iter()
            .filter(|m| route::matches(selector, &m.route))
            .collect()
    }
}

fn check_event(route: &str, r: &Record, m: &Model, global: bool) {
    assert_eq!(route, m.route);
    assert_eq!(r.resource_offset, m.offsets[0], "{route}");
    assert_eq!(r.area_offset, Some(m.offsets[1]));
    assert_eq!(r.realm_offset, Some(m.offsets[2]));
    assert_eq!(r.global_offset, global.then_some(m.offsets[3]));
    assert_eq!(&r.body[..], m.body.as_bytes());
}

/// The axis offset of a model record for `selector`.
fn axis_of(m: &Model, selector: &str) -> u64 {
    match route::stream_selector(selector).unwrap() {
        SelectorScope::Resource => m.offsets[0],
        SelectorScope::Area => m.offsets[1],
        SelectorScope::Realm => m.offsets[2],
        SelectorScope::Global => m.offsets[3],
    }
}

/// A record to write: body and discriminator.
type Rec<'a> = (&'a str, Option<&'a str>);

/// Two realms, two areas, two resources, commits interleaved.
async fn fixture_data(c: &mut RawClient) -> Writer {
    let mut w = Writer::default();
    let plan: &[(&str, &[Rec])] = &[
        (
            "stream://realm/area/resource",
            &[("e0", Some("p.a")), ("e1", None)],
        ),
        ("stream://other/area/resource", &[("e2", Some("p.b"))]),
        ("stream://realm/b/y", &[("e3", Some("x"))]),
        ("stream://realm/area/y", &[("e4", Some("p.a"))]),
        (
            "stream://other/b/resource",
            &[("e5", None), ("e6", Some("p.c"))],
        ),
        ("stream://realm/b/resource", &[("e7", Some("p.a"))]),
        ("stream://other/area/y", &[("e8", None)]),
        ("stream://realm/area/resource", &[("e9", Some("q"))]),
        (
            "stream://other/area/resource",
            &[("e10", Some("p.a")), ("e11", None)],
        ),
    ];
    for (route, recs) in plan {
        w.write(c, route, recs).await;
    }
    w
}

/// The conformance fixture shipped in the official client's crate.
fn fixture(name: &str) -> serde_json::Value {
    let mut homes = Vec::new();
    if let Ok(h) = std::env::var("CARGO_HOME") {
        homes.push(PathBuf::from(h));
    }
    if let Ok(h) = std::env::var("HOME") {
        homes.push(PathBuf::from(h).join(".cargo"));
    }
    for home in homes {
        let Ok(dirs) = std::fs::read_dir(home.join("registry/src")) else {
            continue;
        };
        for d in dirs.flatten() {
            let p = d
                .path()
                .join("cntryl-fitz-0.2.0/docs/clients/spec")
                .join(name);
            if let Ok(text) = std::fs::read_to_string(&p) {
                return serde_json::from_str(&text).expect("fixture is JSON");
            }
        }
    }
    panic!("{name} not found in the cargo registry (cntryl-fitz 0.2.0 is a dev-dependency)");
}

async fn manual_broker() -> Broker {
    Broker::builder()
        .clock(Clock::manual(SystemTime::now()))
        .start()
        .await
        .unwrap()
}

// ------------------------------------------------------------------ tests

async fn begin_append_commit_and_read_back(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let route = "stream://prod/logs/events";
    let (id, next) = begin(&mut c, route).await;
    assert_eq!(next, 0, "BEGIN data: the resource's next offset");
    assert_eq!(append(&mut c, id, 0, "event1", Some("proj.alpha")).await, 0);
    let meta = stream::Append {
        metadata: Some(b("m1")),
        ..append_msg(id, 1, b"event2", None)
    };
    let ok: AppendOk = c.ok(&meta).await;
    assert_eq!(ok.leading_u64(), Some(1));
    assert_eq!(commit(&mut c, id).await, [0, 1, 0, 1, 0, 1, 0, 1]);
    let p = read(&mut c, &rd(route, 0, 10)).await;
    let ev = events(&p);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].0, route, "items carry the concrete route");
    assert_eq!(
        (
            ev[0].1.resource_offset,
            ev[0].1.area_offset,
            ev[0].1.realm_offset
        ),
        (0, Some(0), Some(0))
    );
    assert_eq!(&ev[0].1.body[..], b"event1");
    assert_eq!(ev[0].1.metadata, None);
    assert_eq!(ev[1].1.metadata, Some(b("m1")));
    assert!(ev[0].1.created_at > 1_600_000_000_000, "Unix milliseconds");
    assert_eq!(
        (
            p.last_resource_offset,
            p.last_area_offset,
            p.last_realm_offset,
            p.has_more
        ),
        (1, Some(1), Some(1), false)
    );
    // AC-STREAM-002: from offset 1 gives offset 1 only.
    assert_eq!(bodies(&read(&mut c, &rd(route, 1, 10)).await), ["event2"]);
    // Raw layout (V85): [0][0][bytes page], page = count, items, cursor.
    let raw = c.call(&rd(route, 1, 10)).await;
    assert_eq!(&raw[..2], &[0, 0]);
    let len = u32::from_be_bytes(raw[2..6].try_into().unwrap()) as usize;
    assert_eq!(raw.len(), 6 + len);
    assert_eq!(&raw[6..10], &[0, 0, 0, 1]);
    // A second session continues at the next offset.
    let (id, next) = begin(&mut c, route).await;
    assert_eq!(next, 2);
    assert_eq!(append(&mut c, id, 2, "event3", None).await, 2);
    commit(&mut c, id).await;
    assert_eq!(
        bodies(&read(&mut c, &rd(route, 0, 10)).await),
        ["event1", "event2", "event3"]
    );
}

async fn one_append_session_per_resource(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut o = RawClient::anon(&broker, kind).await;
    let route = "stream://r/a/x";
    let (id, _) = begin(&mut a, route).await;
    let again = stream::Begin {
        route: route.into(),
        ingest_metadata: Some(b("ingest")),
    };
    assert_eq!(
        stream_err(&mut o, &again).await,
        codes::STREAM_SESSION_ACTIVE
    );
    assert_eq!(
        stream_err(&mut a, &again).await,
        codes::STREAM_SESSION_ACTIVE
    );
    // Other resources are independent.
    let (other, _) = begin(&mut o, "stream://r/a/y").await;
    assert_ne!(other, id);
    // Commit releases the resource; so does rollback.
    append(&mut a, id, 0, "1", None).await;
    commit(&mut a, id).await;
    let (id2, next) = begin(&mut o, route).await;
    assert_eq!(next, 1);
    assert_eq!(
        stream_err(&mut a, &again).await,
        codes::STREAM_SESSION_ACTIVE
    );
    o.ok::<_, stream::RollbackOk>(&stream::Rollback { session_id: id2 })
        .await;
    begin(&mut a, route).await;
}

async fn expected_offset_is_checked_inside_the_session(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let route = "stream://r/a/x";
    write(&mut c, route, &[("a", None)]).await;
    let (id, next) = begin(&mut c, route).await;
    assert_eq!(next, 1);
    // AC-STREAM-013: a stale or future expected_offset is 2001, status 2.
    for stale in [0, 2, 99_999] {
        let code = stream_err(&mut c, &append_msg(id, stale, b"x", None)).await;
        assert_eq!(code, codes::STREAM_CONCURRENCY_CONFLICT, "{stale}");
    }
    // Inside the session, offsets count the session's own appends.
    assert_eq!(append(&mut c, id, 1, "b", None).await, 1);
    assert_eq!(append(&mut c, id, 2, "c", None).await, 2);
    assert_eq!(
        stream_err(&mut c, &append_msg(id, 2, b"dup", None)).await,
        codes::STREAM_CONCURRENCY_CONFLICT
    );
    assert_eq!(append(&mut c, id, 3, "d", None).await, 3);
    commit(&mut c, id).await;
    assert_eq!(
        bodies(&read(&mut c, &rd(route, 0, 10)).await),
        ["a", "b", "c", "d"],
        "rejected appends add nothing"
    );
}

async fn unknown_or_foreign_sessions_are_not_found(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let mut other = RawClient::anon(&broker, kind).await;
    let nf = codes::STREAM_SESSION_NOT_FOUND;
    assert_eq!(stream_err(&mut c, &append_msg(77, 0, b"x", None)).await, nf);
    assert_eq!(stream_err(&mut c, &commit_msg(77)).await, nf);
    assert_eq!(
        stream_err(&mut c, &stream::Rollback { session_id: 77 }).await,
        nf
    );
    // Session ids belong to the connection that opened them.
    let (id, _) = begin(&mut c, "stream://r/a/x").await;
    assert_eq!(
        stream_err(&mut other, &append_msg(id, 0, b"x", None)).await,
        nf
    );
    assert_eq!(stream_err(&mut other, &commit_msg(id)).await, nf);
    append(&mut c, id, 0, "mine", None).await;
    commit(&mut c, id).await;
    // A committed session is gone.
    assert_eq!(stream_err(&mut c, &commit_msg(id)).await, nf);
    assert_eq!(stream_err(&mut c, &append_msg(id, 1, b"x", None)).await, nf);
}

async fn nothing_is_visible_before_commit_and_rollback_discards(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut r = RawClient::anon(&broker, kind).await;
    let route = "stream://r/a/x";
    let (id, _) = begin(&mut w, route).await;
    for i in 0..3 {
        append(&mut w, id, i, &format!("v{i}"), None).await;
    }
    for sel in [route, "stream://r/a/*", "stream://r/**", "stream://**"] {
        assert!(
            read(&mut r, &rd(sel, 0, 10)).await.items.is_empty(),
            "{sel}"
        );
    }
    let last: LastOk = r.ok(&stream::Last::new(route)).await;
    assert_eq!(last.record, None);
    let m: MetadataOk = r.ok(&stream::GetMetadata::new(route)).await;
    assert_eq!(m.metadata.record_count, 0);
    w.ok::<_, stream::RollbackOk>(&stream::Rollback { session_id: id })
        .await;
    assert!(read(&mut r, &rd(route, 0, 10)).await.items.is_empty());
    // After a rollback the next session starts at 0 again.
    let (id, next) = begin(&mut w, route).await;
    assert_eq!(next, 0);
    for i in 0..3 {
        append(&mut w, id, i, &format!("w{i}"), None).await;
    }
    commit(&mut w, id).await;
    assert_eq!(
        bodies(&read(&mut r, &rd(route, 0, 10)).await),
        ["w0", "w1", "w2"]
    );
}

async fn offsets_follow_commit_order_on_every_axis(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b2 = RawClient::anon(&broker, kind).await;
    // Two sessions open at once; the one committed first gets the lower
    // area, realm and global offsets, whatever the BEGIN order.
    let (x, _) = begin(&mut a, "stream://r1/a/x").await;
    let (y, _) = begin(&mut b2, "stream://r1/a/y").await;
    append(&mut a, x, 0, "x0", None).await;
    append(&mut b2, y, 0, "y0", None).await;
    append(&mut b2, y, 1, "y1", None).await;
    assert_eq!(commit(&mut b2, y).await, [0, 1, 0, 1, 0, 1, 0, 1]);
    assert_eq!(commit(&mut a, x).await, [0, 0, 2, 2, 2, 2, 2, 2]);
    // Another realm has its own realm and area offsets but shares the
    // family's global axis.
    assert_eq!(
        write(&mut a, "stream://r2/a/x", &[("z0", None)]).await,
        [0, 0, 0, 0, 0, 0, 3, 3]
    );
    assert_eq!(
        write(&mut a, "stream://r1/b/x", &[("w0", None)]).await,
        [0, 0, 0, 0, 3, 3, 4, 4]
    );
    let p = read(&mut a, &rd("stream://r1/**", 0, 10)).await;
    assert_eq!(bodies(&p), ["y0", "y1", "x0", "w0"]);
    let p = read(&mut a, &rd("stream://**", 0, 10)).await;
    assert_eq!(bodies(&p), ["y0", "y1", "x0", "z0", "w0"]);
    let g: Vec<_> = events(&p).iter().map(|(_, r)| r.global_offset).collect();
    assert_eq!(g, [Some(0), Some(1), Some(2), Some(3), Some(4)]);
}

async fn ten_selector_shapes_select_and_page_correctly(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let w = fixture_data(&mut c).await;
    for sel in [
        "stream://realm/area/resource",
        "stream://realm/area/*",
        "stream://realm/*/resource",
        "stream://realm/*/*",
        "stream://realm/**",
        "stream://*/area/resource",
        "stream://*/area/*",
        "stream://*/*/resource",
        "stream://*/*/*",
        "stream://**",
    ] {
        let global = is_global(sel);
        let want = w.selected(sel);
        assert!(!want.is_empty(), "{sel}");
        let p = read(&mut c, &rd(sel, 0, 100)).await;
        let got = events(&p);
        assert_eq!(got.len(), want.len(), "{sel}");
        for ((route, r), m) in got.iter().zip(&want) {
            check_event(route, r, m, global);
        }
        assert!(!p.has_more, "{sel}");
        let last = want.last().unwrap();
        let axis = axis_of(last, sel);
        match route::stream_selector(sel).unwrap() {
            SelectorScope::Resource => assert_eq!(p.last_resource_offset, axis),
            SelectorScope::Area => assert_eq!(p.last_area_offset, Some(axis)),
            SelectorScope::Realm => {
                // The realm walk covers every record of the realm.
                let realm_len = w.selected("stream://realm/**").len() as u64;
                assert_eq!(p.last_realm_offset, Some(realm_len - 1), "{sel}");
            }
            SelectorScope::Global => {
                // A finished global page ends at the captured snapshot.
                let total = w.records.len() as u64;
                assert_eq!(p.last_global_offset, Some(total - 1), "{sel}");
                assert_eq!(p.captured_watermark, Some(total));
            }
        }
        if !global {
            assert_eq!(p.last_resource_offset, last.offsets[0], "{sel}");
        }
    }
}

async fn pages_continue_on_every_axis(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let w = fixture_data(&mut c).await;
    for sel in [
        "stream://realm/area/resource",
        "stream://realm/area/*",
        "stream://realm/*/resource",
        "stream://realm/**",
        "stream://*/area/*",
        "stream://**",
    ] {
        let global = is_global(sel);
        let want = w.selected(sel);
        for limit in [1, 2, 3] {
            let (pages, _) = read_to_end(&mut c, rd(sel, 0, limit)).await;
            let got: Vec<_> = pages.iter().flat_map(events).collect();
            assert_eq!(got.len(), want.len(), "{sel} limit {limit}");
            for ((route, r), m) in got.iter().zip(&want) {
                check_event(route, r, m, global);
            }
            assert!(pages.iter().all(|p| p.items.len() as u64 <= limit));
            if want.len() as u64 > limit {
                assert!(pages.len() > 1 && pages[0].has_more, "{sel} limit {limit}");
            }
        }
        // max_bytes pages too: a budget of about one item per page.
        let mut r = rd(sel, 0, 100);
        r.max_bytes = Some(40);
        let (pages, _) = read_to_end(&mut c, r).await;
        assert!(pages.iter().all(|p| p.items.len() <= 1), "{sel}");
        assert_eq!(
            pages.iter().map(|p| events(p).len()).sum::<usize>(),
            want.len()
        );
    }
}

async fn global_replay_is_a_consistent_snapshot_across_realms(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let mut writer = RawClient::anon(&broker, kind).await;
    let mut w = Writer::default();
    for i in 0..6 {
        let route = format!("stream://realm{}/a/x", i % 3);
        w.write(&mut c, &route, &[(&format!("s{i}"), None)]).await;
    }
    let snapshot = w.records.len() as u64;
    let mut r = rd("stream://**", 0, 2);
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let p = read(&mut c, &r).await;
        pages += 1;
        assert_eq!(p.captured_watermark, Some(snapshot), "captured on page 1");
        got.extend(bodies(&p));
        // Commits between pages land after the snapshot and stay out.
        w.write(&mut writer, "stream://realm9/a/x", &[("late", None)])
            .await;
        if !p.has_more {
            assert_eq!(p.last_global_offset, Some(snapshot - 1));
            break;
        }
        r.from_offset = p.last_global_offset.unwrap() + 1;
        r.cursor_fingerprint = p.cursor_fingerprint;
        r.captured_watermark = p.captured_watermark;
    }
    assert!(pages >= 3);
    assert_eq!(got, ["s0", "s1", "s2", "s3", "s4", "s5"]);
    let realms: std::collections::BTreeSet<_> = w.records[..6].iter().map(|m| &m.route).collect();
    assert_eq!(realms.len(), 3);
    // A fresh first page captures the new watermark and sees everything.
    let p = read(&mut c, &rd("stream://**", 0, 100)).await;
    assert_eq!(p.captured_watermark, Some(w.records.len() as u64));
    assert_eq!(events(&p).len(), w.records.len());
    // Continuing from the end of the old snapshot ends at once.
    let (pages, next) = read_to_end(&mut c, rd("stream://*/a/x", 0, 4)).await;
    assert_eq!(next, w.records.len() as u64);
    assert!(pages.last().unwrap().items.len() <= 4);
}

async fn continuation_values_are_validated(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    fixture_data(&mut c).await;
    let first = read(&mut c, &rd("stream://**", 0, 2)).await;
    assert!(first.has_more);
    let next = first.last_global_offset.unwrap() + 1;
    let good = stream::Read {
        from_offset: next,
        cursor_fingerprint: first.cursor_fingerprint,
        captured_watermark: first.captured_watermark,
        ..rd("stream://**", 0, 2)
    };
    // Both spellings of the global selector continue each other.
    let alias = stream::Read {
        selector: "stream://*/*/*".into(),
        ..good.clone()
    };
    assert_eq!(read(&mut c, &alias).await, read(&mut c, &good).await);
    let bad = codes::STREAM_INVALID_READ_BOUND;
    let cases = [
        stream::Read {
            cursor_fingerprint: first.cursor_fingerprint.map(|f| f ^ 1),
            ..good.clone()
        },
        stream::Read {
            from_offset: next + 1,
            ..good.clone()
        },
        stream::Read {
            selector: "stream://*/area/*".into(),
            ..good.clone()
        },
        stream::Read {
            filter: filter(vec![FilterClause::Equals("p.a".into())]),
            ..good.clone()
        },
        stream::Read {
            captured_watermark: Some(1_000),
            ..good.clone()
        },
        stream::Read {
            captured_watermark: None,
            ..good.clone()
        },
        stream::Read {
            cursor_fingerprint: None,
            ..good.clone()
        },
        stream::Read {
            selector: "stream://realm/**".into(),
            ..good.clone()
        },
        stream::Read {
            selector: "stream://realm/area/resource".into(),
            cursor_fingerprint: None,
            ..good.clone()
        },
    ];
    for r in &cases {
        assert_eq!(read_err(&mut c, r).await, bad, "{r:?}");
    }
    // The connection is fine and the real continuation still works.
    assert!(!read(&mut c, &good).await.items.is_empty());
}

async fn filters_of_every_clause_kind_with_markers_and_ranges(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let route = "stream://prod/logs/events";
    let discs: &[Option<&str>] = &[
        Some("proj.alpha"),
        Some("audit.beta"),
        None,
        Some("proj.gamma"),
        Some("audit.beta"),
        Some("audit.beta"),
        Some("audit.beta"),
        Some("proj.alpha"),
    ];
    let recs: Vec<(String, Option<&str>)> = discs
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("r{i}"), *d))
        .collect();
    let recs: Vec<(&str, Option<&str>)> = recs.iter().map(|(s, d)| (s.as_str(), *d)).collect();
    write(&mut c, route, &recs).await;
    let s = |v: &str| fitz_protocol::Str::from(v.to_owned());
    let cases: Vec<(Vec<FilterClause>, Vec<usize>)> = vec![
        (vec![FilterClause::Equals(s("proj.alpha"))], vec![0, 7]),
        (
            vec![FilterClause::NotEquals(s("audit.beta"))],
            vec![0, 2, 3, 7],
        ),
        (vec![FilterClause::StartsWith(s("proj."))], vec![0, 3, 7]),
        (
            vec![FilterClause::AnyOf(vec![s("proj.gamma"), s("")])],
            vec![2, 3],
        ),
        // Missing discriminators are the empty string.
        (vec![FilterClause::Equals(s(""))], vec![2]),
        // Clauses are ANDed.
        (
            vec![
                FilterClause::StartsWith(s("proj.")),
                FilterClause::NotEquals(s("proj.alpha")),
            ],
            vec![3],
        ),
        // No clauses: no filtering.
        (vec![], (0..8).collect()),
    ];
    for (clauses, want) in cases {
        let r = stream::Read {
            filter: filter(clauses.clone()),
            ..rd(route, 0, 100)
        };
        let p = read(&mut c, &r).await;
        let got: Vec<usize> = events(&p)
            .iter()
            .map(|(_, r)| r.resource_offset as usize)
            .collect();
        assert_eq!(got, want, "{clauses:?}");
        // Every committed offset is accounted for: events, markers, ranges.
        let mut covered = Vec::new();
        for i in &p.items {
            assert_eq!(&*i.route, route);
            match &i.kind {
                ItemKind::Event(r) => covered.push(r.resource_offset),
                ItemKind::Filtered { offset, reason } => {
                    assert_eq!(*reason, FilterReason::ServerFilter);
                    covered.push(*offset);
                }
                ItemKind::FilteredRange {
                    from_offset,
                    to_offset,
                    reason,
                } => {
                    assert_eq!(*reason, FilterReason::ServerFilter);
                    assert!(from_offset < to_offset);
                    covered.extend(*from_offset..=*to_offset);
                }
            }
        }
        assert_eq!(covered, (0..8).collect::<Vec<u64>>(), "{clauses:?}");
        assert_eq!((p.last_resource_offset, p.has_more), (7, false));
    }
    // Markers and ranges as items: Equals(proj.alpha) → event, range 1..6, event.
    let p = read(
        &mut c,
        &stream::Read {
            filter: filter(vec![FilterClause::Equals(s("proj.alpha"))]),
            ..rd(route, 0, 100)
        },
    )
    .await;
    assert_eq!(p.items.len(), 3);
    assert_eq!(
        p.items[1].kind,
        ItemKind::FilteredRange {
            from_offset: 1,
            to_offset: 6,
            reason: FilterReason::ServerFilter
        }
    );
    // A single withheld offset is a tag-1 marker.
    let p = read(
        &mut c,
        &stream::Read {
            filter: filter(vec![FilterClause::NotEquals(s("proj.gamma"))]),
            ..rd(route, 2, 3)
        },
    )
    .await;
    assert_eq!(
        p.items[1].kind,
        ItemKind::Filtered {
            offset: 3,
            reason: FilterReason::ServerFilter
        }
    );
    // Markers in a wildcard read carry the axis offset and their own route.
    write(
        &mut c,
        "stream://prod/logs/other",
        &[("o0", Some("audit.beta"))],
    )
    .await;
    let p = read(
        &mut c,
        &stream::Read {
            filter: filter(vec![FilterClause::StartsWith(s("proj."))]),
            ..rd("stream://prod/logs/*", 7, 100)
        },
    )
    .await;
    assert_eq!(&*p.items[1].route, "stream://prod/logs/other");
    assert_eq!(
        p.items[1].kind,
        ItemKind::Filtered {
            offset: 8,
            reason: FilterReason::ServerFilter
        }
    );
    assert_eq!(p.last_area_offset, Some(8));
}

async fn filtered_only_pages_still_advance(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let route = "stream://r/a/x";
    let recs: Vec<(&str, Option<&str>)> = (0..20).map(|_| ("n", Some("noise"))).collect();
    write(&mut c, route, &recs).await;
    write(&mut c, route, &[("hit", Some("want"))]).await;
    let eq = filter(vec![FilterClause::Equals("want".into())]);
    for sel in [route, "stream://r/a/*", "stream://r/**", "stream://**"] {
        let (pages, _) = read_to_end(
            &mut c,
            stream::Read {
                filter: eq.clone(),
                ..rd(sel, 0, 5)
            },
        )
        .await;
        let hits: Vec<String> = pages.iter().flat_map(bodies).collect();
        assert_eq!(hits, ["hit"], "{sel}");
    }
    // Skipped records of other routes (narrow selectors) advance too: more
    // than one page's examination budget of noise before the match.
    let mut big = Vec::new();
    for _ in 0..(MAX_EXAMINED / MAX_BATCH_EVENTS as usize + 1) {
        let batch: Vec<(&str, Option<&str>)> = (0..MAX_BATCH_EVENTS).map(|_| ("z", None)).collect();
        big.push(write(&mut c, "stream://r/noise/z", &batch).await);
    }
    write(&mut c, "stream://q/a/needle", &[("needle", None)]).await;
    for sel in ["stream://*/*/needle", "stream://*/a/needle"] {
        let (pages, _) = read_to_end(&mut c, rd(sel, 0, 10)).await;
        assert!(pages.len() >= 2, "{sel}");
        assert!(
            pages[0].items.is_empty() && pages[0].has_more,
            "empty page advances"
        );
        let hits: Vec<String> = pages.iter().flat_map(bodies).collect();
        assert_eq!(hits, ["needle"], "{sel}");
    }
    let (pages, _) = read_to_end(&mut c, rd("stream://r/*/x", 0, 10)).await;
    assert_eq!(pages.iter().map(|p| events(p).len()).sum::<usize>(), 21);
}

async fn filter_errors_keep_the_connection(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    write(&mut c, "stream://r/a/x", &[("1", Some("p"))]).await;
    let with = |f: &[u8]| stream::Read {
        filter: Some(Bytes::copy_from_slice(f)),
        ..rd("stream://r/a/x", 0, 10)
    };
    // AC-STREAM-009: marker/version → 2006, malformed clauses → 2007.
    for bad in [
        &[0x00, 0xF2, 0, 0, 0, 0][..],
        &[0x01, 0xF1, 0, 0, 0, 0],
        &[0x00],
        &[],
    ] {
        assert_eq!(
            read_err(&mut c, &with(bad)).await,
            codes::STREAM_FILTER_VERSION,
            "{bad:?}"
        );
    }
    for bad in [
        &[0x00, 0xF1][..],
        &[0x00, 0xF1, 0, 0, 0, 1, 9],
        &[0x00, 0xF1, 0, 0, 0, 1, 0, 0, 0, 0, 9, b'a'],
        &[0x00, 0xF1, 0, 0, 0, 0, 7],
        &[0x00, 0xF1, 0, 0, 0, 1, 3, 0xFF, 0xFF, 0xFF, 0xFF],
        &[0x00, 0xF1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0xFF],
    ] {
        assert_eq!(
            read_err(&mut c, &with(bad)).await,
            codes::STREAM_FILTER_INVALID,
            "{bad:?}"
        );
    }
    // The raw envelope (V88): status 1, u32 code, message.
    let raw = c.call(&with(&[0x00, 0xF2, 0, 0, 0, 0])).await;
    assert_eq!(&raw[..5], &[1, 0, 0, 0x07, 0xD6]);
    // The session stays open for valid requests.
    let ok = with(&FilterSet::default().to_bytes());
    assert_eq!(bodies(&read(&mut c, &ok).await), ["1"]);
    assert_eq!(broker.session_count(), 1);
}

async fn read_bounds_sizes_and_selectors(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let route = "stream://r/a/x";
    assert_eq!(
        read_err(&mut c, &rd(route, 0, 0)).await,
        codes::STREAM_INVALID_READ_BOUND
    );
    let zero = stream::Read {
        max_bytes: Some(0),
        ..rd(route, 0, 10)
    };
    assert_eq!(
        read_err(&mut c, &zero).await,
        codes::STREAM_INVALID_READ_BOUND
    );
    // Records an APPEND can carry but no READ page can: 2013 (a 65,450-byte
    // body; a 65,500-byte metadata that LAST cannot carry either), while
    // smaller neighbours stay readable.
    let (id, _) = begin(&mut c, route).await;
    append(&mut c, id, 0, "small", None).await;
    let huge = vec![7u8; 65_450];
    let ok: AppendOk = c.ok(&append_msg(id, 1, &huge, None)).await;
    assert_eq!(ok.leading_u64(), Some(1));
    let meta = stream::Append {
        metadata: Some(Bytes::from(vec![1u8; 65_500])),
        ..append_msg(id, 2, b"", None)
    };
    c.ok::<_, AppendOk>(&meta).await;
    commit(&mut c, id).await;
    let p = read(&mut c, &rd(route, 0, 10)).await;
    assert_eq!(
        (bodies(&p), p.has_more, p.last_resource_offset),
        (vec!["small".to_string()], true, 0)
    );
    for sel in [route, "stream://r/a/*", "stream://**"] {
        let e = c.fails(&rd(sel, 1, 10)).await;
        assert_eq!(
            (e.envelope, e.code),
            (Envelope::Coded, codes::STREAM_RESPONSE_TOO_LARGE),
            "{sel}"
        );
    }
    assert_eq!(
        stream_err(&mut c, &stream::Last::new(route)).await,
        codes::STREAM_RESPONSE_TOO_LARGE
    );
    // Invalid selectors and routes: 2010 (READ coded, others status 2).
    for bad in [
        "stream://r/a",
        "stream://r/**/x",
        "stream://r/a/**",
        "stream://*/**",
        "kv://r/a/x",
    ] {
        assert_eq!(
            read_err(&mut c, &rd(bad, 0, 1)).await,
            codes::STREAM_INVALID_PATTERN,
            "{bad}"
        );
    }
    for bad in [
        "stream://r/a/*",
        "stream://r/a",
        "stream://r//x",
        "queue://r/a/x",
    ] {
        let begin = stream::Begin {
            route: bad.into(),
            ingest_metadata: None,
        };
        assert_eq!(
            stream_err(&mut c, &begin).await,
            codes::STREAM_INVALID_PATTERN,
            "{bad}"
        );
        assert_eq!(
            stream_err(&mut c, &stream::Last::new(bad)).await,
            codes::STREAM_INVALID_PATTERN
        );
        assert_eq!(
            stream_err(&mut c, &stream::GetMetadata::new(bad)).await,
            codes::STREAM_INVALID_PATTERN
        );
    }
    // A payload that does not decode: 2012 in the operation's envelope.
    let mut raw = BytesMut::new();
    fitz_protocol::record::encode_raw_record(
        &mut raw,
        types::STREAM_COMMIT,
        &[0, 0, 0, 0, 0, 0, 0, 1, 9],
    )
    .unwrap();
    c.send_frame(&raw).await;
    let l = c.next_record().await;
    let e = WireError::decode(l.record.payload).unwrap();
    assert_eq!(
        (e.envelope, e.code),
        (Envelope::Stream, codes::STREAM_BACKEND)
    );
    let mut raw = BytesMut::new();
    fitz_protocol::record::encode_raw_record(&mut raw, types::STREAM_READ, &[0, 0]).unwrap();
    c.send_frame(&raw).await;
    let l = c.next_record().await;
    let e = WireError::decode(l.record.payload).unwrap();
    assert_eq!(
        (e.envelope, e.code),
        (Envelope::Coded, codes::STREAM_BACKEND)
    );
    assert_eq!(broker.session_count(), 1);
}

async fn unknown_resources_read_empty_and_never_2005(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    // Nothing written at all: every selector is an empty, caught-up page.
    for sel in [
        "stream://r/a/x",
        "stream://r/a/*",
        "stream://r/**",
        "stream://**",
    ] {
        let p = read(&mut c, &rd(sel, 0, 10)).await;
        assert!(p.items.is_empty() && !p.has_more, "{sel}");
    }
    let p = read(&mut c, &rd("stream://**", 0, 10)).await;
    assert_eq!(
        (p.last_global_offset, p.captured_watermark),
        (None, Some(0))
    );
    let p = read(&mut c, &rd("stream://r/a/*", 0, 10)).await;
    assert_eq!(
        p.last_area_offset, None,
        "missing axis: the client keeps its offset"
    );
    // AC-STREAM-003: past the end of a written stream is an empty success.
    write(&mut c, "stream://r/a/x", &[("0", None), ("1", None)]).await;
    let p = read(&mut c, &rd("stream://r/a/x", 100, 10)).await;
    assert!(p.items.is_empty() && !p.has_more);
    assert_eq!(p.last_resource_offset, 99, "the next offset stays 100");
    let p = read(&mut c, &rd("stream://r/a/*", 2, 10)).await;
    assert_eq!(
        (p.items.len(), p.last_area_offset, p.has_more),
        (0, None, false)
    );
    let p = read(&mut c, &rd("stream://**", 5, 10)).await;
    assert_eq!(
        (p.last_global_offset, p.captured_watermark),
        (Some(4), Some(2))
    );
    let raw = c.call(&stream::Last::new("stream://r/a/never")).await;
    assert_eq!(&raw[..], &[0], "LAST of an empty stream is just [0]");
    let m: MetadataOk = c.ok(&stream::GetMetadata::new("stream://r/a/never")).await;
    assert_eq!(
        (
            m.metadata.first_offset,
            m.metadata.last_offset,
            m.metadata.record_count
        ),
        (None, None, 0)
    );
    assert_eq!(m.metadata.area_watermark, 1, "the area has records of x");
}

async fn last_and_metadata(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let route = "stream://r/a/x";
    write(&mut c, "stream://r/b/q", &[("q", None); 4]).await;
    write(&mut c, "stream://r/a/y", &[("y", None); 3]).await;
    let (id, _) = begin(&mut c, route).await;
    append(&mut c, id, 0, "one", None).await;
    let meta = stream::Append {
        metadata: Some(b("m")),
        ..append_msg(id, 1, b"two", Some("d"))
    };
    c.ok::<_, AppendOk>(&meta).await;
    commit(&mut c, id).await;
    let last: LastOk = c.ok(&stream::Last::new(route)).await;
    let r = last.record.unwrap();
    assert_eq!(
        (
            r.resource_offset,
            r.area_offset,
            r.realm_offset,
            r.global_offset
        ),
        (1, Some(4), Some(8), None)
    );
    assert_eq!(
        (&r.body[..], r.metadata.clone()),
        (&b"two"[..], Some(b("m")))
    );
    // Raw (V93): [0] + record without global field, nothing trailing.
    let raw = c.call(&stream::Last::new(route)).await;
    assert_eq!(raw.len(), 1 + r.encoded_len(false));
    let m: MetadataOk = c.ok(&stream::GetMetadata::new(route)).await;
    assert_eq!(
        m.metadata,
        stream::Metadata {
            first_offset: Some(0),
            last_offset: Some(1),
            record_count: 2,
            max_batch_events: MAX_BATCH_EVENTS,
            max_batch_bytes: MAX_BATCH_BYTES,
            ttl_seconds: None,
            area_watermark: 4,
            realm_watermark: 8,
        }
    );
    assert_eq!((MAX_BATCH_EVENTS, MAX_BATCH_BYTES), (1000, 1 << 20));
}

async fn batch_limits(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let (id, _) = begin(&mut c, "stream://r/a/x").await;
    for i in 0..MAX_BATCH_EVENTS {
        append(&mut c, id, i, "e", None).await;
    }
    assert_eq!(
        stream_err(&mut c, &append_msg(id, MAX_BATCH_EVENTS, b"e", None)).await,
        codes::STREAM_BACKEND
    );
    commit(&mut c, id).await;
    let (id, next) = begin(&mut c, "stream://r/a/x").await;
    assert_eq!(next, MAX_BATCH_EVENTS);
    let chunk = vec![0u8; 60_000];
    let fit = (MAX_BATCH_BYTES as usize) / chunk.len();
    for i in 0..fit as u64 {
        c.ok::<_, AppendOk>(&append_msg(id, next + i, &chunk, None))
            .await;
    }
    assert_eq!(
        stream_err(&mut c, &append_msg(id, next + fit as u64, &chunk, None)).await,
        codes::STREAM_BACKEND
    );
    // The session survives the refusal and commits what fitted.
    let d = commit(&mut c, id).await;
    assert_eq!(d[1] - d[0] + 1, fit as u64);
    // An empty commit succeeds and publishes nothing.
    let (id, _) = begin(&mut c, "stream://r/a/x").await;
    let ok: CommitOk = c.ok(&commit_msg(id)).await;
    assert!(ok.data.is_empty());
    // Open append sessions per connection are bounded.
    for i in 0..fitz_broker::engines::stream::MAX_OPEN_SESSIONS {
        begin(&mut c, &format!("stream://r/many/s{i}")).await;
    }
    let over = stream::Begin {
        route: "stream://r/many/over".into(),
        ingest_metadata: None,
    };
    assert_eq!(stream_err(&mut c, &over).await, codes::STREAM_BUSY);
}

async fn watches_notify_after_the_debounce_window(kind: Kind) {
    let broker = manual_broker().await;
    let clock = broker.clock().clone();
    let mut s = RawClient::anon(&broker, kind).await;
    let mut w = RawClient::anon(&broker, kind).await;
    // V97: [0][1][u64 id][u32 0].
    let raw = s.call(&stream::Subscribe::new("stream://r/a/*")).await;
    assert_eq!(
        (raw.len(), &raw[..2], &raw[10..]),
        (14, &[0, 1][..], &[0, 0, 0, 0][..])
    );
    let area = u64::from_be_bytes(raw[2..10].try_into().unwrap());
    let exact: SubscribeReply = s.ok(&stream::Subscribe::new("stream://r/a/x")).await;
    let exact = exact.id.unwrap();
    assert_ne!(area, exact);
    let again: SubscribeReply = s.ok(&stream::Subscribe::new("stream://r/a/*")).await;
    assert_eq!(again.id, Some(area), "duplicate pattern, same id");

    write(&mut w, "stream://r/b/other", &[("o", None)]).await;
    write(&mut w, "stream://r/a/x", &[("1", None), ("2", None)]).await;
    clock.advance(DEBOUNCE / 2);
    write(&mut w, "stream://r/a/x", &[("3", None)]).await;
    s.expect_quiet().await;
    clock.advance(DEBOUNCE / 2);
    let mut got = Vec::new();
    for _ in 0..2 {
        let l = s.next_of_type(types::STREAM_NOTIFY).await;
        assert_eq!(l.correlation, None);
        got.push(Notify::decode(l.record.payload).unwrap());
    }
    s.expect_quiet().await;
    got.sort_by_key(|n| n.sub_id);
    let mut ids: Vec<u64> = got.iter().map(|n| n.sub_id).collect();
    ids.sort_unstable();
    let mut want_ids = vec![area, exact];
    want_ids.sort_unstable();
    assert_eq!(ids, want_ids, "overlapping registrations each notify");
    for n in &got {
        assert_eq!(&*n.route, "stream://r/a/x", "the concrete route");
        assert_eq!(
            std::str::from_utf8(&n.payload).unwrap(),
            "{\"event\":\"committed\",\"first_resource_offset\":0,\"last_resource_offset\":2,\
             \"first_area_offset\":0,\"last_area_offset\":2,\"first_realm_offset\":1,\
             \"last_realm_offset\":3,\"first_global_offset\":1,\"last_global_offset\":3,\
             \"batch_size\":3}"
        );
    }
    // Resources debounce separately; a new window opens after a flush.
    write(&mut w, "stream://r/a/y", &[("y", None)]).await;
    write(&mut w, "stream://r/a/x", &[("4", None)]).await;
    clock.advance(DEBOUNCE);
    let mut routes = Vec::new();
    for _ in 0..3 {
        let n = Notify::decode(s.next_of_type(types::STREAM_NOTIFY).await.record.payload).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&n.payload).unwrap();
        assert_eq!(v["event"], "committed");
        assert_eq!(v["batch_size"], 1);
        routes.push((n.route.to_string(), n.sub_id));
    }
    routes.sort();
    assert_eq!(
        routes,
        [
            ("stream://r/a/x".to_string(), area.min(exact)),
            ("stream://r/a/x".to_string(), area.max(exact)),
            ("stream://r/a/y".to_string(), area),
        ]
    );
    // UNSUBSCRIBE (by pattern, idempotent) stops delivery.
    s.ok::<_, stream::UnsubscribeOk>(&stream::Unsubscribe::new("stream://r/a/*"))
        .await;
    s.ok::<_, stream::UnsubscribeOk>(&stream::Unsubscribe::new("stream://r/a/*"))
        .await;
    s.ok::<_, stream::UnsubscribeOk>(&stream::Unsubscribe::new("stream://r/a/x"))
        .await;
    write(&mut w, "stream://r/a/x", &[("5", None)]).await;
    clock.advance(DEBOUNCE);
    s.expect_quiet().await;
    assert_eq!(broker.engines().stream.stats().pending_notifications, 0);
}

async fn watch_patterns_and_limits(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    for bad in [
        "stream://",
        "stream://a//b",
        "stream://a/b*/c",
        "kv://a/b/c",
        "stream://a/b/c/d",
        "stream://a/*/c/d",
    ] {
        assert_eq!(
            stream_err(&mut c, &stream::Subscribe::new(bad)).await,
            codes::STREAM_INVALID_PATTERN,
            "{bad}"
        );
        assert_eq!(
            stream_err(&mut c, &stream::Unsubscribe::new(bad)).await,
            codes::STREAM_INVALID_PATTERN,
            "{bad}"
        );
    }
    for i in 0..128 {
        c.ok::<_, SubscribeReply>(&stream::Subscribe::new(format!("stream://w{i}/**")))
            .await;
    }
    let e = c.fails(&stream::Subscribe::new("stream://x/**")).await;
    assert_eq!(
        (e.envelope, e.code, &*e.message),
        (
            Envelope::Stream,
            codes::STREAM_SUBSCRIPTION_LIMIT,
            "wildcard subscription limit exceeded (128 per session)"
        )
    );
    // Duplicates are checked before the limit; exact routes still fit.
    c.ok::<_, SubscribeReply>(&stream::Subscribe::new("stream://w0/**"))
        .await;
    c.ok::<_, SubscribeReply>(&stream::Subscribe::new("stream://x/a/b"))
        .await;
    assert_eq!(broker.engines().stream.stats().watches, 129);
    drop(c);
    broker.wait_for_session_count(0).await;
    assert_eq!(
        broker.engines().stream.stats().watches,
        0,
        "cleaned on disconnect"
    );
}

async fn session_end_aborts_append_sessions(kind: Kind) {
    let broker = crate::support::anon().await;
    let route = "stream://r/a/x";
    {
        let mut a = RawClient::anon(&broker, kind).await;
        let (id, _) = begin(&mut a, route).await;
        append(&mut a, id, 0, "lost", None).await;
        begin(&mut a, "stream://r/a/y").await;
        assert_eq!(broker.engines().stream.stats().append_sessions, 2);
    }
    broker.wait_for_session_count(0).await;
    assert_eq!(broker.engines().stream.stats().append_sessions, 0);
    let mut b2 = RawClient::anon(&broker, kind).await;
    let (id, next) = begin(&mut b2, route).await;
    assert_eq!(next, 0, "the abandoned batch was discarded");
    assert!(read(&mut b2, &rd(route, 0, 10)).await.items.is_empty());
    append(&mut b2, id, 0, "kept", None).await;
    commit(&mut b2, id).await;
    assert_eq!(bodies(&read(&mut b2, &rd(route, 0, 10)).await), ["kept"]);
}

async fn scoped_token_is_refused_with_2009(kind: Kind) {
    let broker = crate::support::jwt().await;
    let (mut admin, _) = RawClient::connect(
        &broker,
        kind,
        &crate::support::token("dev", crate::support::ALL),
    )
    .await;
    write(&mut admin, "stream://prod/a/x", &[("p", None)]).await;
    write(&mut admin, "stream://dev/a/x", &[("d", None)]).await;
    let t = crate::support::token("dev", &["stream://prod/**#read", "stream://prod/a/w#write"]);
    let (mut c, _) = RawClient::connect(&broker, kind, &t).await;
    let unauth = codes::STREAM_UNAUTHORIZED;
    // AC-STREAM-005: no write permission, no append session.
    let begin_x = stream::Begin {
        route: "stream://prod/a/x".into(),
        ingest_metadata: None,
    };
    assert_eq!(stream_err(&mut c, &begin_x).await, unauth);
    let (id, _) = begin(&mut c, "stream://prod/a/w").await;
    append(&mut c, id, 0, "w", None).await;
    commit(&mut c, id).await;
    // Reads: covered selectors work; others get 2009 in the READ envelope.
    assert_eq!(
        bodies(&read(&mut c, &rd("stream://prod/**", 0, 10)).await),
        ["p", "w"]
    );
    for sel in ["stream://**", "stream://dev/a/x", "stream://*/a/x"] {
        assert_eq!(read_err(&mut c, &rd(sel, 0, 10)).await, unauth, "{sel}");
    }
    assert_eq!(
        stream_err(&mut c, &stream::Last::new("stream://dev/a/x")).await,
        unauth
    );
    assert_eq!(
        stream_err(&mut c, &stream::GetMetadata::new("stream://dev/a/x")).await,
        unauth
    );
    assert_eq!(
        stream_err(&mut c, &stream::Subscribe::new("stream://**")).await,
        unauth
    );
    c.ok::<_, SubscribeReply>(&stream::Subscribe::new("stream://prod/a/*"))
        .await;
    // Families are isolated: acme sees none of dev's records.
    let (mut acme, _) = RawClient::connect(
        &broker,
        kind,
        &crate::support::token("acme", crate::support::ALL),
    )
    .await;
    assert!(
        read(&mut acme, &rd("stream://**", 0, 10))
            .await
            .items
            .is_empty()
    );
    assert_eq!(broker.session_count(), 3, "refusals keep sessions open");
}

async fn conformance_fixture_selectors_axes_and_progress(kind: Kind) {
    let fx = fixture("stream-read-conformance.json");
    let vendor = fixture("stream-read-conformance.vendor.json");
    assert_eq!(
        vendor["fixturePath"],
        "docs/clients/spec/stream-read-conformance.json"
    );
    assert_eq!(fx["fixture"], "fitz.stream-read-conformance");
    assert_eq!(fx["version"], 1);
    let sem = &fx["offsetSemantics"];
    assert_eq!(sem["missingApplicableAxis"], "retain fromOffset");
    assert_eq!(sem["filteredMarkersAdvance"], true);
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let w = fixture_data(&mut c).await;
    let selectors = fx["selectors"].as_array().unwrap();
    assert_eq!(selectors.len(), 10);
    for s in selectors {
        let sel = s["selector"].as_str().unwrap();
        let canonical = s["canonical"].as_str().unwrap();
        let axis = s["axis"].as_str().unwrap();
        // The scope (and so the page layout) follows the fixture's axis.
        let want_scope = match axis {
            "resource" => SelectorScope::Resource,
            "area" => SelectorScope::Area,
            "realm" => SelectorScope::Realm,
            "global" => SelectorScope::Global,
            other => panic!("axis {other}"),
        };
        assert_eq!(route::stream_selector(sel), Ok(want_scope), "{sel}");
        let raw: ReadOk = c.ok(&rd(sel, 0, 100)).await;
        let global = axis == "global";
        assert!(ReadPage::decode(raw.data.clone(), global).is_ok(), "{sel}");
        assert!(
            ReadPage::decode(raw.data, !global).is_err(),
            "{sel}: layout is scope-specific"
        );
        // A selector and its canonical spelling read the same records.
        let a = read(&mut c, &rd(sel, 0, 100)).await;
        let b2 = read(&mut c, &rd(canonical, 0, 100)).await;
        assert_eq!(events(&a), events(&b2), "{sel} ≡ {canonical}");
        // Continuation by the fixture's offset semantics, with filtered
        // markers in the way: every record once, markers advance, the
        // last page is the caught-up one, and no page stalls.
        let want = w.selected(sel);
        let f = filter(vec![FilterClause::StartsWith("p.".into())]);
        for limit in [1, 2] {
            let (pages, _) = read_to_end(
                &mut c,
                stream::Read {
                    filter: f.clone(),
                    ..rd(sel, 0, limit)
                },
            )
            .await;
            assert!(!pages.last().unwrap().has_more);
            let got: Vec<_> = pages.iter().flat_map(events).collect();
            let want_hits: Vec<&&Model> = want
                .iter()
                .filter(|m| m.disc.as_deref().is_some_and(|d| d.starts_with("p.")))
                .collect();
            assert_eq!(got.len(), want_hits.len(), "{sel} limit {limit}");
            for ((route, r), m) in got.iter().zip(&want_hits) {
                check_event(route, r, m, global);
            }
            // Every selected record shows up as an event or inside a marker.
            let mut seen = Vec::new();
            for p in &pages {
                for i in &p.items {
                    match &i.kind {
                        ItemKind::Event(r) => {
                            seen.push(r.global_offset.unwrap_or(match want_scope {
                                SelectorScope::Resource => r.resource_offset,
                                SelectorScope::Area => r.area_offset.unwrap(),
                                _ => r.realm_offset.unwrap(),
                            }))
                        }
                        ItemKind::Filtered { offset, .. } => seen.push(*offset),
                        ItemKind::FilteredRange {
                            from_offset,
                            to_offset,
                            ..
                        } => seen.extend(*from_offset..=*to_offset),
                    }
                }
            }
            let want_axes: Vec<u64> = want.iter().map(|m| axis_of(m, sel)).collect();
            assert!(
                want_axes.iter().all(|a| seen.contains(a)),
                "{sel}: {seen:?} ⊉ {want_axes:?}"
            );
        }
    }
    // Delivery item tags 0, 1 and 2 all occur and all advance the cursor.
    let tags = fx["deliveryItems"].as_array().unwrap();
    assert_eq!(tags.len(), 3);
    let route = "stream://realm/tags/resource";
    write(
        &mut c,
        route,
        &[
            ("a", Some("k")),
            ("b", Some("x")),
            ("c", Some("k")),
            ("d", Some("x")),
            ("e", Some("x")),
        ],
    )
    .await;
    let p = read(
        &mut c,
        &stream::Read {
            filter: filter(vec![FilterClause::Equals("k".into())]),
            ..rd(route, 0, 10)
        },
    )
    .await;
    let tag_of = |k: &ItemKind| match k {
        ItemKind::Event(_) => 0,
        ItemKind::Filtered { .. } => 1,
        ItemKind::FilteredRange { .. } => 2,
    };
    let got: Vec<u64> = p.items.iter().map(|i| tag_of(&i.kind)).collect();
    assert_eq!(got, [0, 1, 0, 2]);
    for t in tags {
        assert_eq!(t["advances"], true);
        assert_eq!(t["isRecord"], t["tag"] == 0);
    }
    assert_eq!(
        p.last_resource_offset, 4,
        "the trailing range advanced the cursor"
    );
    let inv = &fx["progressInvariants"];
    assert_eq!(inv["caughtUp"], "hasMore == false");
    assert_eq!(
        inv["stallBound"]["consecutiveHasMorePagesWithoutLogicalProgress"],
        2
    );
    let private: Vec<&str> = inv["privateContinuationFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(private, ["cursorFingerprint", "capturedWatermark"]);
}

async fn conformance_fixture_invalid_selectors(kind: Kind) {
    let fx = fixture("stream-read-conformance.json");
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let invalid = fx["invalidSelectors"].as_array().unwrap();
    assert!(!invalid.is_empty());
    for s in invalid {
        let sel = s.as_str().unwrap();
        assert!(route::stream_selector(sel).is_err(), "{sel}");
        assert_eq!(
            read_err(&mut c, &rd(sel, 0, 10)).await,
            codes::STREAM_INVALID_PATTERN,
            "{sel}"
        );
    }
    // Still serving.
    assert!(
        read(&mut c, &rd("stream://realm/**", 0, 10))
            .await
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn encoded_pages_match_the_vectors() {
    // V85-shaped resource page and V87-shaped global page from the codec:
    // the broker's pages decode with the same layout the vectors use.
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    let (id, _) = begin(&mut c, "stream://r/a/x").await;
    append(&mut c, id, 0, "one", None).await;
    commit(&mut c, id).await;
    let raw = c.call(&rd("stream://r/a/x", 0, 10)).await;
    let mut want = BytesMut::new();
    want.put_slice(&[0, 0]);
    let body_len = 4 + (4 + 14) + 1 + (8 + 9 + 9 + 4 + 3 + 1 + 8) + (8 + 9 + 9 + 1);
    want.put_u32(body_len as u32);
    want.put_slice(&[0, 0, 0, 1, 0, 0, 0, 14]);
    want.put_slice(b"stream://r/a/x");
    want.put_u8(0);
    want.put_u64(0);
    want.put_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    want.put_slice(&[0, 0, 0, 3]);
    want.put_slice(b"one");
    want.put_u8(0);
    assert_eq!(&raw[..want.len()], &want[..]);
    // created_at, then the cursor 0/0/0 and has_more 0.
    assert_eq!(
        &raw[want.len() + 8..],
        &[
            0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]
    );
    let v = decode_reply::<ReadOk>(raw).unwrap().unwrap();
    assert_eq!(v.data.len(), body_len);
}
