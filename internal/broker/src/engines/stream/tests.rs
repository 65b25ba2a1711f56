//! Engine-level tests that need a storage backend the wire tests cannot
//! configure: recovery after a restart, durability ordering, failures.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use fitz_protocol::record::{LabelledRecords, Side};
use fitz_protocol::stream::ReadPage;
use fitz_protocol::{Message, decode_reply};

use super::*;
use crate::auth::Grant;
use crate::config::Config;
use crate::registry::SubscriptionIds;
use crate::session::{OutboundLimits, Transport};

/// A durable backend in memory: what it committed survives a "restart".
#[derive(Default)]
struct Disk {
    data: Mutex<BTreeMap<(Keyspace, Bytes), Bytes>>,
    commits: Mutex<Vec<Durability>>,
    fail: AtomicBool,
}

impl Backend for Disk {
    fn is_durable(&self) -> bool {
        true
    }

    fn commit(&self, batch: Batch, durability: Durability) -> Result<(), StorageError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(StorageError("disk full".into()));
        }
        let mut d = self.data.lock();
        for op in batch.ops {
            match op {
                Op::Put(ks, k, v) => {
                    d.insert((ks, k), v);
                }
                Op::Delete(ks, k) => {
                    d.remove(&(ks, k));
                }
            }
        }
        self.commits.lock().push(durability);
        Ok(())
    }

    fn load(&self, keyspace: Keyspace) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        Ok(self
            .data
            .lock()
            .iter()
            .filter(|((ks, _), _)| *ks == keyspace)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}

fn services(storage: Arc<dyn Backend>) -> Services {
    let clock = Clock::manual(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000));
    Services {
        timers: Arc::new(Timers::new(clock.clone())),
        clock,
        ids: SubscriptionIds::default(),
        storage,
        config: Arc::new(Config::default()),
    }
}

fn session(id: u64) -> Session {
    Session::new(
        id,
        Grant::anonymous(),
        Transport::Tcp,
        None,
        OutboundLimits::default(),
        Arc::default(),
    )
}

/// Runs one request and returns the reply payload.
fn call<M: Message>(e: &StreamEngine, s: &Session, request: StreamRequest) -> Bytes {
    e.handle(s, request, Reply::new(s.clone(), M::TYPE, Some(1)));
    let (batch, _) = s.take_batch();
    let frame = crate::session::frames(&batch).next().expect("a reply");
    let l = LabelledRecords::new(frame, Side::Client)
        .next()
        .expect("one record")
        .expect("decodes");
    l.record.payload
}

fn ok<M: Message, R: fitz_protocol::ReplyBody>(
    e: &StreamEngine,
    s: &Session,
    r: StreamRequest,
) -> R {
    decode_reply::<R>(call::<M>(e, s, r))
        .expect("decodes")
        .expect("succeeds")
}

fn write(
    e: &StreamEngine,
    s: &Session,
    route: &str,
    bodies: &[&str],
    durability: Durability,
) -> Bytes {
    let b: BeginOk = ok::<stream::Begin, _>(
        e,
        s,
        StreamRequest::Begin(stream::Begin {
            route: route.into(),
            ingest_metadata: None,
        }),
    );
    let first = u64::from_be_bytes(b.data[..8].try_into().unwrap());
    for (next, body) in (first..).zip(bodies) {
        let _: AppendOk = ok::<stream::Append, _>(
            e,
            s,
            StreamRequest::Append(stream::Append {
                session_id: b.session_id,
                expected_offset: next,
                body: Bytes::copy_from_slice(body.as_bytes()),
                metadata: None,
                discriminator: Some("d".into()),
            }),
        );
    }
    call::<stream::Commit>(
        e,
        s,
        StreamRequest::Commit(stream::Commit {
            session_id: b.session_id,
            durability,
        }),
    )
}

fn read_all(e: &StreamEngine, s: &Session, selector: &str) -> Vec<(String, u64, Vec<u8>)> {
    let ok: ReadOk = ok::<stream::Read, _>(
        e,
        s,
        StreamRequest::Read(stream::Read {
            selector: selector.into(),
            from_offset: 0,
            limit: 100,
            max_bytes: None,
            filter: None,
            cursor_fingerprint: None,
            captured_watermark: None,
        }),
    );
    let global = route::stream_selector(selector) == Ok(SelectorScope::Global);
    ReadPage::decode(ok.data, global)
        .unwrap()
        .items
        .into_iter()
        .map(|i| match i.kind {
            stream::ItemKind::Event(r) => (
                i.route.to_string(),
                r.global_offset.or(r.realm_offset).unwrap_or(0),
                r.body.to_vec(),
            ),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn committed_records_and_offsets_survive_a_restart() {
    let disk = Arc::new(Disk::default());
    let e = StreamEngine::start(&services(disk.clone())).unwrap();
    let s = session(1);
    write(&e, &s, "stream://r/a/x", &["1", "2"], Durability::Sync);
    write(&e, &s, "stream://q/a/y", &["3"], Durability::Buffered);
    write(&e, &s, "stream://r/b/z", &["4"], Durability::Sync);
    assert_eq!(
        *disk.commits.lock(),
        [Durability::Sync, Durability::Buffered, Durability::Sync]
    );
    let before = read_all(&e, &s, "stream://**");
    drop(e);

    let e = StreamEngine::start(&services(disk.clone())).unwrap();
    assert_eq!(read_all(&e, &s, "stream://**"), before);
    assert_eq!(
        read_all(&e, &s, "stream://r/**"),
        [
            ("stream://r/a/x".to_string(), 0, b"1".to_vec()),
            ("stream://r/a/x".to_string(), 1, b"2".to_vec()),
            ("stream://r/b/z".to_string(), 2, b"4".to_vec()),
        ]
    );
    // Offsets continue after the recovered ones on every axis.
    let data = write(&e, &s, "stream://r/a/x", &["5"], Durability::Sync);
    let committed: CommitOk = decode_reply(data).unwrap().unwrap();
    let d: Vec<u64> = committed
        .data
        .chunks(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect();
    // resource 2..2, area 2..2, realm 3..3, global 4..4
    assert_eq!(d, [2, 2, 2, 2, 3, 3, 4, 4]);
    let m: MetadataOk = ok::<stream::GetMetadata, _>(
        &e,
        &s,
        StreamRequest::GetMetadata(stream::GetMetadata::new("stream://r/a/x")),
    );
    assert_eq!(
        (
            m.metadata.record_count,
            m.metadata.area_watermark,
            m.metadata.realm_watermark
        ),
        (3, 2, 3)
    );
}

#[test]
fn a_failed_store_publishes_nothing_and_releases_the_resource() {
    let disk = Arc::new(Disk::default());
    let e = StreamEngine::start(&services(disk.clone())).unwrap();
    let s = session(1);
    disk.fail.store(true, Ordering::Relaxed);
    let reply = write(&e, &s, "stream://r/a/x", &["1"], Durability::Sync);
    let err = WireError::decode(reply).unwrap();
    assert_eq!(
        (err.envelope, err.code),
        (fitz_protocol::Envelope::Stream, codes::STREAM_BACKEND)
    );
    assert!(read_all(&e, &s, "stream://r/a/x").is_empty());
    assert_eq!(e.stats().append_sessions, 0);
    disk.fail.store(false, Ordering::Relaxed);
    write(&e, &s, "stream://r/a/x", &["2"], Durability::Sync);
    assert_eq!(
        read_all(&e, &s, "stream://r/a/x"),
        [("stream://r/a/x".to_string(), 0, b"2".to_vec())]
    );
}

#[test]
fn inconsistent_storage_refuses_to_start() {
    let disk = Arc::new(Disk::default());
    disk.data.lock().insert(
        (Keyspace::Stream, log::watermark_key(1, Mark::Global, "")),
        Bytes::copy_from_slice(&5u64.to_be_bytes()),
    );
    let err = StreamEngine::start(&services(disk)).err().unwrap();
    assert!(err.0.contains("watermark"), "{err}");
}
