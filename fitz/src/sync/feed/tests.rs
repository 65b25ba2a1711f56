//! Feeds against a scripted peer (the gaps the embedded broker cannot
//! produce: retention and permission-withheld records) and the local
//! transaction on a memory store.

use bytes::{Bytes, BytesMut};
use fitz_protocol::stream::{self as wire, IdDataOk, Item, ItemKind, Metadata, MetadataOk, Record};
use fitz_protocol::{Message, Str, types};

use super::*;
use crate::sync::MemoryStore;
use crate::test_support::Scripted;

const ROUTE: &str = "stream://prod/orders/o-1";

fn page(items: Vec<Item>, last: u64) -> IdDataOk<{ types::STREAM_READ }> {
    let raw = wire::ReadPage {
        items,
        last_resource_offset: last,
        has_more: false,
        ..wire::ReadPage::default()
    };
    let mut b = BytesMut::new();
    raw.encode(&mut b, false);
    IdDataOk {
        id: None,
        data: b.freeze(),
    }
}

fn event(offset: u64) -> Item {
    Item {
        route: Str::from_static(ROUTE),
        kind: ItemKind::Event(Record {
            resource_offset: offset,
            area_offset: Some(offset),
            realm_offset: Some(offset),
            global_offset: None,
            body: Bytes::from(offset.to_string()),
            metadata: Some(Bytes::from_static(br#"{"aspect":"n","sync_tx":"t"}"#)),
            created_at: 1,
        }),
    }
}

fn withheld(first: u64, last: u64, reason: FilterReason) -> Item {
    Item {
        route: Str::from_static(ROUTE),
        kind: ItemKind::FilteredRange {
            from_offset: first,
            to_offset: last,
            reason,
        },
    }
}

fn meta(first: Option<u64>, last: Option<u64>) -> MetadataOk {
    MetadataOk {
        metadata: Metadata {
            first_offset: first,
            last_offset: last,
            ..Metadata::default()
        },
    }
}

/// Catches up a fresh feed under `policy`, answering its GET_METADATA with
/// `(first, last)` and its READ with `items`; returns the outcome, the
/// offsets the handler saw (from the store) and the stored cursor.
async fn catch_up_once(
    policy: impl Fn(&Gap) -> GapAction + Send + Sync + 'static,
    first: Option<u64>,
    last: Option<u64>,
    items: Vec<Item>,
) -> (Result<(), FeedError>, Vec<u64>, u64, Vec<FeedEvent>) {
    let mut h = Scripted::start("memory://feed").await;
    let store = MemoryStore::new();
    let mut feed = Feed::<u64>::builder(h.client.clone(), store.clone(), "f", ROUTE)
        .on_gap(policy)
        .open()
        .await
        .unwrap();
    let mut events = feed.events();
    let run = tokio::spawn(async move {
        let r = feed
            .catch_up(|tx, env| {
                Box::pin(async move {
                    assert_eq!(env.meta.aspect.as_deref(), Some("n"));
                    assert_eq!(env.meta.tx.as_deref(), Some("t"));
                    tx.put("seen", env.offset.to_be_bytes(), env.body.to_string())?;
                    Ok(())
                })
            })
            .await;
        (r, feed.cursor())
    });
    let r = h.expect(types::STREAM_GET_METADATA).await;
    h.ok(&r, &meta(first, last)).await;
    let r = h.expect(types::STREAM_READ).await;
    let req = wire::Read::decode(r.payload.clone()).unwrap();
    assert_eq!((&*req.selector, req.from_offset), (ROUTE, 0));
    let end = last.unwrap_or(0);
    h.ok(&r, &page(items, end)).await;
    let (result, cursor) = run.await.unwrap();
    let seen = store
        .scan_prefix(Table::App, &app_key("seen", b""))
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            let off = u64::from_be_bytes(k[5..].try_into().unwrap());
            assert_eq!(v, off.to_string().into_bytes());
            off
        })
        .collect();
    let stored = store.get(Table::FeedCursor, b"f").unwrap();
    let stored = stored.map_or(0, |b| CursorRecord::decode(&b).unwrap().cursor);
    assert_eq!(stored, cursor, "the stored cursor is the feed's");
    let mut seen_events = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen_events.push(e);
    }
    (result, seen, cursor, seen_events)
}

#[tokio::test]
async fn retention_is_a_truncated_gap_that_stops_by_default() {
    let (r, seen, cursor, events) = catch_up_once(
        |_| GapAction::Stop,
        Some(3),
        Some(5),
        vec![event(3), event(4), event(5)],
    )
    .await;
    let want = Gap::Truncated {
        route: ROUTE.into(),
        cursor: 0,
        first_available: 3,
    };
    match r {
        Err(FeedError::Gap(g)) => assert_eq!(g, want),
        other => panic!("{other:?}"),
    }
    assert_eq!((seen, cursor), (vec![], 0), "nothing skipped silently");
    assert_eq!(
        events,
        vec![FeedEvent::Gap {
            gap: want,
            action: GapAction::Stop
        }]
    );
}

#[tokio::test]
async fn continue_after_truncation_applies_from_the_first_available() {
    let (r, seen, cursor, events) = catch_up_once(
        |_| GapAction::Continue,
        Some(3),
        Some(5),
        vec![event(3), event(4), event(5)],
    )
    .await;
    r.unwrap();
    assert_eq!((seen, cursor), (vec![3, 4, 5], 6));
    assert!(matches!(events[0], FeedEvent::Gap { .. }));
    assert_eq!(events[1], FeedEvent::CaughtUp { cursor: 6 });
}

#[tokio::test]
async fn permission_withheld_records_stop_the_feed_after_what_came_before() {
    let (r, seen, cursor, _) = catch_up_once(
        |_| GapAction::Stop,
        Some(0),
        Some(4),
        vec![
            event(0),
            withheld(1, 2, FilterReason::Permission),
            event(3),
            event(4),
        ],
    )
    .await;
    match r {
        Err(FeedError::Gap(Gap::Withheld {
            first: 1,
            last: 2,
            reason: FilterReason::Permission,
            ..
        })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!((seen, cursor), (vec![0], 1), "stops right before the gap");
}

#[tokio::test]
async fn continue_skips_withheld_records_but_reports_them() {
    let (r, seen, cursor, events) = catch_up_once(
        |_| GapAction::Continue,
        Some(0),
        Some(4),
        vec![
            event(0),
            withheld(1, 2, FilterReason::Projection),
            event(3),
            event(4),
        ],
    )
    .await;
    r.unwrap();
    assert_eq!((seen, cursor), (vec![0, 3, 4], 5));
    assert!(matches!(
        &events[0],
        FeedEvent::Gap {
            gap: Gap::Withheld {
                first: 1,
                last: 2,
                ..
            },
            action: GapAction::Continue
        }
    ));
}

#[tokio::test]
async fn the_feeds_own_filter_is_no_gap() {
    let (r, seen, cursor, events) = catch_up_once(
        |_| GapAction::Stop,
        Some(0),
        Some(3),
        vec![
            event(0),
            withheld(1, 2, FilterReason::ServerFilter),
            event(3),
        ],
    )
    .await;
    r.unwrap();
    assert_eq!((seen, cursor), (vec![0, 3], 4));
    assert_eq!(events, vec![FeedEvent::CaughtUp { cursor: 4 }]);
}

#[tokio::test]
async fn a_cursor_beyond_the_stream_is_rewound() {
    let mut h = Scripted::start("memory://feed").await;
    let store = MemoryStore::new();
    let rec = CursorRecord {
        selector: ROUTE.into(),
        cursor: 7,
        last: None,
    };
    store.apply(&[rec.op("f").unwrap()]).unwrap();
    let mut feed = Feed::<u64>::builder(h.client.clone(), store.clone(), "f", ROUTE)
        .open()
        .await
        .unwrap();
    assert_eq!(feed.cursor(), 7);
    let run = tokio::spawn(async move { feed.catch_up(|_, _| Box::pin(async { Ok(()) })).await });
    let r = h.expect(types::STREAM_GET_METADATA).await;
    h.ok(&r, &meta(Some(0), Some(2))).await;
    match run.await.unwrap() {
        Err(FeedError::Gap(Gap::Rewound {
            cursor: 7,
            broker_next: Some(3),
            last_applied: None,
        })) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_handler_failure_applies_the_records_before_it_only() {
    let mut h = Scripted::start("memory://feed").await;
    let store = MemoryStore::new();
    let mut feed = Feed::<u64>::builder(h.client.clone(), store.clone(), "f", ROUTE)
        .open()
        .await
        .unwrap();
    let run = tokio::spawn(async move {
        let r = feed
            .catch_up(|tx, env| {
                Box::pin(async move {
                    // Reads see the batch's earlier writes.
                    let prev = tx.get("sum", "all").await?.map_or(0, |v| v[0]);
                    tx.put("sum", "all", [prev + 1])?;
                    if env.body == 2 {
                        return Err(FeedError::Handler("two".into()));
                    }
                    Ok(())
                })
            })
            .await;
        (r, feed.cursor())
    });
    let r = h.expect(types::STREAM_GET_METADATA).await;
    h.ok(&r, &meta(Some(0), Some(3))).await;
    let r = h.expect(types::STREAM_READ).await;
    h.ok(&r, &page(vec![event(0), event(1), event(2), event(3)], 3))
        .await;
    let (r, cursor) = run.await.unwrap();
    assert!(matches!(r, Err(FeedError::Handler(_))), "{r:?}");
    assert_eq!(cursor, 2);
    assert_eq!(
        store.get(Table::App, &app_key("sum", "all")).unwrap(),
        Some(vec![2]),
        "the failed record's write is discarded, the two before it kept"
    );
}

#[tokio::test]
async fn feed_tx_reads_its_own_writes_and_scans_merged() {
    let store: Arc<dyn LocalStore> = Arc::new(MemoryStore::new());
    let mut seed = FeedTx::new(store.clone());
    seed.put("t", "a", "1").unwrap();
    seed.put("t", "b", "2").unwrap();
    let rec = CursorRecord {
        selector: ROUTE.into(),
        cursor: 1,
        last: None,
    };
    seed.commit("f", &rec).await.unwrap();
    let mut tx = FeedTx::new(store.clone());
    tx.begin_record();
    tx.delete("t", "a").unwrap();
    tx.put("t", "c", "3").unwrap();
    tx.put("u", "a", "other table").unwrap();
    assert_eq!(tx.get("t", "a").await.unwrap(), None);
    assert_eq!(tx.get("t", "b").await.unwrap(), Some(b"2".to_vec()));
    let keys: Vec<_> = tx
        .scan_prefix("t", "")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
    tx.discard_record();
    assert_eq!(tx.get("t", "a").await.unwrap(), Some(b"1".to_vec()));
    assert!(tx.put("", "k", "v").is_err());
    assert!(tx.put("a\0b", "k", "v").is_err());
}

#[tokio::test]
async fn a_feed_name_is_bound_to_its_selector_and_the_store_version_is_checked() {
    let h = Scripted::start("memory://feed").await;
    let store = MemoryStore::new();
    let feed = Feed::<u64>::builder(h.client.clone(), store.clone(), "f", ROUTE)
        .start_at(4)
        .open()
        .await
        .unwrap();
    assert_eq!(feed.cursor(), 4);
    let id = feed.client_id().to_owned();
    // Nothing stored until something is applied: another selector may
    // still take the name; once stored, it may not.
    let rec = CursorRecord {
        selector: ROUTE.into(),
        cursor: 4,
        last: None,
    };
    store.apply(&[rec.op("f").unwrap()]).unwrap();
    let e = Feed::<u64>::builder(
        h.client.clone(),
        store.clone(),
        "f",
        "stream://prod/orders/*",
    )
    .open()
    .await
    .unwrap_err();
    assert!(matches!(e, SyncError::InvalidArgument(_)), "{e:?}");
    let again = Feed::<u64>::builder(h.client.clone(), store.clone(), "g", ROUTE)
        .open()
        .await
        .unwrap();
    assert_eq!(again.client_id(), id, "one client id per store");
    store
        .apply(&[crate::sync::StoreOp::Put {
            table: Table::Meta,
            key: b"format".to_vec(),
            value: 99u32.to_be_bytes().to_vec(),
        }])
        .unwrap();
    let e = Feed::<u64>::builder(h.client.clone(), store, "g", ROUTE)
        .open()
        .await
        .unwrap_err();
    assert!(matches!(e, SyncError::Version { found: 99, .. }), "{e:?}");
}

#[test]
fn dense_selectors_are_the_ones_whose_axis_is_all_theirs() {
    use fitz_protocol::route::stream_selector;
    for (sel, dense) in [
        (ROUTE, true),
        ("stream://r/a/*", true),
        ("stream://r/*/*", true),
        ("stream://r/**", true),
        ("stream://r/*/x", false),
        ("stream://**", true),
        ("stream://*/*/*", true),
        ("stream://*/a/*", false),
        ("stream://*/*/x", false),
    ] {
        assert_eq!(is_dense(sel, stream_selector(sel).unwrap()), dense, "{sel}");
    }
}

#[test]
fn the_digest_tells_records_apart() {
    let rec = |body: &'static [u8], created_at: u64| {
        crate::stream::StreamRecord::from_wire(
            Str::from_static(ROUTE),
            Record {
                resource_offset: 4,
                area_offset: None,
                realm_offset: None,
                global_offset: None,
                body: Bytes::from_static(body),
                metadata: None,
                created_at,
            },
        )
    };
    assert_eq!(digest(&rec(b"a", 1)), digest(&rec(b"a", 1)));
    assert_ne!(digest(&rec(b"a", 1)), digest(&rec(b"b", 1)));
    assert_ne!(digest(&rec(b"a", 1)), digest(&rec(b"a", 2)));
}

#[test]
fn envelope_metadata_is_lenient_and_shares_the_outbox_tx_key() {
    let m = EnvelopeMeta::from_metadata(Some(&Bytes::from_static(
        br#"{"sync_tx":"c/1","aspect":"a","causation":"stream://r/a/x#3","extra":1}"#,
    )));
    assert_eq!(m.tx.as_deref(), Some("c/1"));
    assert_eq!(m.causation.as_deref(), Some("stream://r/a/x#3"));
    assert_eq!(
        EnvelopeMeta::from_metadata(Some(&Bytes::from_static(b"not json"))),
        EnvelopeMeta::default()
    );
    assert_eq!(EnvelopeMeta::from_metadata(None), EnvelopeMeta::default());
}

#[test]
fn a_store_written_before_the_feed_tables_opens_and_keeps_its_data() {
    let dir = std::env::temp_dir().join(format!("fitz-feed-old-store-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.redb");
    {
        // The layout before feeds: three tables only.
        let db = redb::Database::create(&path).unwrap();
        let w = db.begin_write().unwrap();
        for name in ["meta", "outbox", "dead_letter"] {
            let def: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new(name);
            let mut t = w.open_table(def).unwrap();
            if name == "meta" {
                t.insert(&b"format"[..], &1u32.to_be_bytes()[..]).unwrap();
            }
        }
        w.commit().unwrap();
    }
    let store = crate::sync::RedbStore::open(&path).unwrap();
    assert_eq!(
        store.get(Table::Meta, b"format").unwrap(),
        Some(1u32.to_be_bytes().to_vec())
    );
    assert_eq!(store.get(Table::FeedCursor, b"f").unwrap(), None);
    assert_eq!(
        super::super::store::open_identity(&store).unwrap().len(),
        32,
        "same version: opens"
    );
    store
        .apply(&[CursorRecord {
            selector: ROUTE.into(),
            cursor: 3,
            last: None,
        }
        .op("f")
        .unwrap()])
        .unwrap();
    assert!(store.get(Table::FeedCursor, b"f").unwrap().is_some());
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_rewind_can_be_answered_by_replaying_the_new_log() {
    let mut h = Scripted::start("memory://feed").await;
    let store = MemoryStore::new();
    let rec = CursorRecord {
        selector: ROUTE.into(),
        cursor: 7,
        last: None,
    };
    store.apply(&[rec.op("f").unwrap()]).unwrap();
    // One redb-or-memory store shared by the outbox and feeds: an Arc is a
    // store too.
    let shared: Arc<dyn LocalStore> = Arc::new(store.clone());
    let mut feed = Feed::<u64>::builder(h.client.clone(), shared.clone(), "f", ROUTE)
        .on_gap(|g| match g {
            Gap::Rewound { .. } => GapAction::ResumeAt(0),
            _ => GapAction::Stop,
        })
        .open()
        .await
        .unwrap();
    let mut events = feed.events();
    let run = tokio::spawn(async move {
        let r = feed
            .catch_up(|tx, env| {
                Box::pin(async move {
                    tx.put("seen", env.offset.to_be_bytes(), [1])?;
                    Ok(())
                })
            })
            .await;
        (r, feed.cursor())
    });
    let r = h.expect(types::STREAM_GET_METADATA).await;
    h.ok(&r, &meta(Some(0), Some(1))).await;
    // Re-anchored at 0, verified again, then read from 0.
    let r = h.expect(types::STREAM_GET_METADATA).await;
    h.ok(&r, &meta(Some(0), Some(1))).await;
    let r = h.expect(types::STREAM_READ).await;
    assert_eq!(
        wire::Read::decode(r.payload.clone()).unwrap().from_offset,
        0
    );
    h.ok(&r, &page(vec![event(0), event(1)], 1)).await;
    let (r, cursor) = run.await.unwrap();
    r.unwrap();
    assert_eq!(cursor, 2);
    assert_eq!(
        events.try_recv().unwrap(),
        FeedEvent::Gap {
            gap: Gap::Rewound {
                cursor: 7,
                broker_next: Some(2),
                last_applied: None
            },
            action: GapAction::ResumeAt(0)
        }
    );
    assert_eq!(
        shared
            .scan_prefix(Table::App, &app_key("seen", ""))
            .unwrap()
            .len(),
        2
    );
}

/// A memory store whose next `apply`, once gated, says it started, then
/// waits for a go signal.
#[derive(Clone)]
struct Gated {
    inner: MemoryStore,
    go: Arc<std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
    entered: tokio::sync::mpsc::UnboundedSender<()>,
}

impl LocalStore for Gated {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, SyncError> {
        self.inner.get(table, key)
    }
    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<crate::sync::Entries, SyncError> {
        self.inner.scan_prefix(table, prefix)
    }
    fn apply(&self, ops: &[crate::sync::StoreOp]) -> Result<(), SyncError> {
        let gate = self.go.lock().unwrap().take();
        if let Some(go) = gate {
            let _ = self.entered.send(());
            go.recv().unwrap();
        }
        self.inner.apply(ops)
    }
}

#[tokio::test]
async fn a_run_cancelled_while_its_batch_is_applied_is_settled_by_the_next() {
    let mut h = Scripted::start("memory://feed").await;
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let store = Gated {
        inner: MemoryStore::new(),
        go: Arc::default(),
        entered: entered_tx,
    };
    let mut feed = Feed::<u64>::builder(h.client.clone(), store.clone(), "f", ROUTE)
        .open()
        .await
        .unwrap();
    // Gate the next apply (open wrote the store's format and client id).
    *store.go.lock().unwrap() = Some(go_rx);
    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let seen = handled.clone();
    let first = tokio::spawn(async move {
        tokio::select! {
            _ = feed.catch_up(move |tx, env| {
                seen.lock().unwrap().push(env.offset);
                Box::pin(async move { tx.put("seen", env.offset.to_be_bytes(), [1])?; Ok(()) })
            }) => panic!("the apply is held"),
            _ = cancel_rx => {}
        }
        feed
    });
    let r = h.expect(types::STREAM_GET_METADATA).await;
    h.ok(&r, &meta(Some(0), Some(1))).await;
    let r = h.expect(types::STREAM_READ).await;
    h.ok(&r, &page(vec![event(0), event(1)], 1)).await;
    // Both handled, the batch's apply started and held: cancel the run now.
    entered.recv().await.unwrap();
    cancel_tx.send(()).unwrap();
    let mut feed = first.await.unwrap();
    assert_eq!(feed.cursor(), 0, "not applied yet");
    go_tx.send(()).unwrap();

    let seen = handled.clone();
    let second = tokio::spawn(async move {
        let r = feed
            .catch_up(move |tx, env| {
                seen.lock().unwrap().push(env.offset);
                Box::pin(async move {
                    tx.put("seen", env.offset.to_be_bytes(), [1])?;
                    Ok(())
                })
            })
            .await;
        (r, feed.cursor())
    });
    // It resumes at 2: the abandoned batch landed (same session: the log
    // was verified already).
    let r = h.expect(types::STREAM_READ).await;
    assert_eq!(
        wire::Read::decode(r.payload.clone()).unwrap().from_offset,
        2
    );
    h.ok(&r, &page(vec![], 1)).await;
    let (r, cursor) = second.await.unwrap();
    r.unwrap();
    assert_eq!(cursor, 2);
    assert_eq!(
        *handled.lock().unwrap(),
        vec![0, 1],
        "nothing handled twice"
    );
    assert_eq!(
        store
            .scan_prefix(Table::App, &app_key("seen", ""))
            .unwrap()
            .len(),
        2
    );
}
