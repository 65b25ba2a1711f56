//! `FITZ_STORAGE_MODE=local`: what survives a restart, a dropped broker and
//! a killed process (committed KV, the queue backlog, committed stream
//! records, schedules), and what never does.
//!
//! Buffered commits: visible at once, durable after a clean shutdown and
//! within ~100 ms otherwise (the background flush); a crash before that may
//! lose them, but never half a batch. Sync commits are fsync'd before the
//! reply. Sessions, transactions, reservations, append sessions and
//! subscriptions never survive.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::support::binary::{BrokerProcess, temp_dir};
use crate::support::{Kind, RawClient};
use bytes::Bytes;
use cntryl_fitz::client_domains::kv::KvGetResult;
use cntryl_fitz::{Client, KvDurability, TransactionMode};
use fitz_broker::{Broker, Clock, StartError, StorageMode};
use fitz_protocol::kv::{self, BeginOk, Durability, GetOk, TxMode};
use fitz_protocol::schedule::{self, Create, DeliveryMode, Entry, List, ListOk, Notify};
use fitz_protocol::{Message, types};

const T0: u64 = 1_704_067_200;

async fn local(path: &Path) -> Broker {
    local_with_clock(path, Clock::system()).await
}

async fn local_with_clock(path: &Path, clock: Clock) -> Broker {
    Broker::builder()
        .storage(StorageMode::Local(path.to_path_buf()))
        .clock(clock)
        .start()
        .await
        .expect("broker starts")
}

async fn write(c: &mut RawClient, route: &str, pairs: &[(&str, &str)], durability: Durability) {
    let tx = c
        .ok::<_, BeginOk>(&kv::Begin {
            route: route.into(),
            mode: TxMode::ReadWrite,
        })
        .await
        .tx_id;
    for (k, v) in pairs {
        c.ok::<_, kv::PutOk>(&kv::Put {
            tx_id: tx,
            route: route.into(),
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        })
        .await;
    }
    c.ok::<_, kv::CommitOk>(&kv::Commit {
        tx_id: tx,
        route: route.into(),
        durability,
    })
    .await;
}

async fn read(c: &mut RawClient, route: &str, key: &str) -> Option<Bytes> {
    let tx = c
        .ok::<_, BeginOk>(&kv::Begin {
            route: route.into(),
            mode: TxMode::ReadOnly,
        })
        .await
        .tx_id;
    let v = c
        .ok::<_, GetOk>(&kv::Get {
            tx_id: tx,
            route: route.into(),
            key: Bytes::copy_from_slice(key.as_bytes()),
        })
        .await
        .value;
    c.ok::<_, kv::CommitOk>(&kv::Commit {
        tx_id: tx,
        route: route.into(),
        durability: Durability::Buffered,
    })
    .await;
    v
}

fn b(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

#[tokio::test]
async fn kv_survives_shutdown_and_restart_on_the_same_path() {
    let dir = temp_dir("kv-restart");
    let broker = local(&dir).await;
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    write(
        &mut c,
        "kv://r/a/users",
        &[("alice", "1"), ("bob", "2")],
        Durability::Sync,
    )
    .await;
    write(
        &mut c,
        "kv://r/a/users",
        &[("carol", "3")],
        Durability::Buffered,
    )
    .await;
    write(&mut c, "kv://r/b/other", &[("k", "v")], Durability::Sync).await;
    // A delete is durable too.
    let tx = c
        .ok::<_, BeginOk>(&kv::Begin {
            route: "kv://r/a/users".into(),
            mode: TxMode::ReadWrite,
        })
        .await
        .tx_id;
    c.ok::<_, kv::DeleteOk>(&kv::Delete {
        tx_id: tx,
        route: "kv://r/a/users".into(),
        key: Bytes::from_static(b"bob"),
    })
    .await;
    c.ok::<_, kv::CommitOk>(&kv::Commit {
        tx_id: tx,
        route: "kv://r/a/users".into(),
        durability: Durability::Sync,
    })
    .await;
    // An open transaction never survives.
    let open = c
        .ok::<_, BeginOk>(&kv::Begin {
            route: "kv://r/c/locked".into(),
            mode: TxMode::ReadWrite,
        })
        .await
        .tx_id;
    broker.shutdown().await;
    drop(broker);

    let broker = local(&dir).await;
    let mut c = RawClient::anon(&broker, Kind::Ws).await;
    assert_eq!(read(&mut c, "kv://r/a/users", "alice").await, b("1"));
    assert_eq!(read(&mut c, "kv://r/a/users", "bob").await, None);
    assert_eq!(
        read(&mut c, "kv://r/a/users", "carol").await,
        b("3"),
        "clean shutdown keeps Buffered"
    );
    assert_eq!(read(&mut c, "kv://r/b/other", "k").await, b("v"));
    assert_eq!(broker.engines().kv.stats().locked_resources, 0);
    let e = c
        .fails(&kv::Get {
            tx_id: open,
            route: "kv://r/c/locked".into(),
            key: Bytes::new(),
        })
        .await;
    assert_eq!(e.code(), Some(fitz_protocol::codes::KV_TX_NOT_FOUND));
    broker.shutdown().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_path_in_use_is_refused_and_memory_mode_keeps_nothing() {
    let dir = temp_dir("in-use");
    let first = local(&dir).await;
    let e = Broker::builder()
        .storage(StorageMode::Local(dir.clone()))
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StartError::Storage(s) if s.0.contains("in use")),
        "{e}"
    );
    // Dropping (no shutdown) releases the path at once.
    drop(first);
    let second = local(&dir).await;
    second.shutdown().await;
    drop(second);

    let mem = crate::support::anon().await;
    let mut c = RawClient::anon(&mem, Kind::Tcp).await;
    write(&mut c, "kv://r/a/x", &[("k", "v")], Durability::Sync).await;
    mem.shutdown().await;
    drop(mem);
    let mem = crate::support::anon().await;
    let mut c = RawClient::anon(&mem, Kind::Tcp).await;
    assert_eq!(read(&mut c, "kv://r/a/x", "k").await, None);
    let _ = std::fs::remove_dir_all(dir);
}

/// A broker on its own runtime, dropped with the runtime while sessions are
/// live and without `shutdown()`: every Sync commit is there afterwards.
#[test]
fn dropping_the_runtime_without_shutdown_loses_no_sync_commit() {
    let dir = temp_dir("drop-runtime");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = rt.block_on(async {
        let broker = local(&dir).await;
        let mut c = RawClient::anon(&broker, Kind::Tcp).await;
        for i in 0..20 {
            let key = format!("k{i}");
            write(
                &mut c,
                "kv://crash/a/res",
                &[(key.as_str(), "v")],
                Durability::Sync,
            )
            .await;
        }
        // The client stays connected: its task dies with the runtime.
        std::mem::forget(c);
        broker
    });
    drop(rt);
    drop(broker);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = local(&dir).await;
        let mut c = RawClient::anon(&broker, Kind::Tcp).await;
        for i in 0..20 {
            assert_eq!(
                read(&mut c, "kv://crash/a/res", &format!("k{i}")).await,
                b("v")
            );
        }
        broker.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(dir);
}

/// The binary killed with SIGKILL mid-flight: Sync commits are on disk,
/// Buffered ones older than the flush interval too.
#[tokio::test]
async fn killing_the_binary_loses_no_sync_commit() {
    let dir = temp_dir("kill9");
    let path = dir.to_string_lossy().to_string();
    let env = [
        ("FITZ_AUTH_REQUIRED", "false"),
        ("FITZ_STORAGE_MODE", "local"),
        ("FITZ_STORAGE_PATH", path.as_str()),
    ];
    let broker = BrokerProcess::spawn(&env);
    let client = Client::anonymous(broker.tcp_url.clone()).build().unwrap();
    client.connect().await.unwrap();
    let kv = client.kv().unwrap();
    for i in 0..10 {
        let tx = kv
            .begin("kv://kill/a/sync", TransactionMode::ReadWrite)
            .await
            .unwrap();
        tx.put(format!("k{i}").as_bytes(), b"durable")
            .await
            .unwrap();
        tx.commit(KvDurability::Sync).await.unwrap();
    }
    let tx = kv
        .begin("kv://kill/a/buffered", TransactionMode::ReadWrite)
        .await
        .unwrap();
    tx.put(b"k", b"flushed").await.unwrap();
    tx.commit(KvDurability::Buffered).await.unwrap();
    let sched = client.schedule().unwrap();
    sched
        .create(
            "schedule://kill/a/job/run",
            "0 3 * * *",
            cntryl_fitz::client_domains::schedule::ScheduleDeliveryMode::Single,
            b"p",
        )
        .await
        .unwrap();
    // Past the 100 ms Buffered window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.kill();
    let _ = client.close().await;

    let broker = BrokerProcess::spawn(&env);
    let client = Client::anonymous(broker.ws_url.clone()).build().unwrap();
    client.connect().await.unwrap();
    let kv = client.kv().unwrap();
    let tx = kv
        .begin("kv://kill/a/sync", TransactionMode::ReadOnly)
        .await
        .unwrap();
    for i in 0..10 {
        assert_eq!(
            tx.get(format!("k{i}").as_bytes()).await.unwrap(),
            KvGetResult::Found(b"durable".to_vec())
        );
    }
    tx.commit(KvDurability::Buffered).await.unwrap();
    let tx = kv
        .begin("kv://kill/a/buffered", TransactionMode::ReadOnly)
        .await
        .unwrap();
    assert_eq!(
        tx.get(b"k").await.unwrap(),
        KvGetResult::Found(b"flushed".to_vec())
    );
    tx.commit(KvDurability::Buffered).await.unwrap();
    let page = client.schedule().unwrap().list(None, None).await.unwrap();
    assert_eq!(page.total_count, 1);
    assert_eq!(page.entries[0].route, "schedule://kill/a/job/run");
    client.close().await.unwrap();
    assert!(broker.terminate(), "graceful exit on SIGTERM");
    let _ = std::fs::remove_dir_all(dir);
}

fn every_minute(route: &str) -> Entry {
    Entry {
        route: route.into(),
        cron: "* * * * *".into(),
        mode: DeliveryMode::Broadcast,
        payload: Bytes::copy_from_slice(route.as_bytes()),
    }
}

#[tokio::test]
async fn schedules_survive_restart_skip_missed_runs_and_resume_firing() {
    let dir = temp_dir("schedules");
    let t0 = UNIX_EPOCH + Duration::from_secs(T0);
    let broker = local_with_clock(&dir, Clock::manual(t0)).await;
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    c.ok::<_, schedule::CreateOk>(&Create {
        entry: every_minute("schedule://r/a/keep/run"),
    })
    .await;
    c.ok::<_, schedule::CreateOk>(&Create {
        entry: Entry {
            cron: "30 12 * * *".into(),
            ..every_minute("schedule://r/a/noon/run")
        },
    })
    .await;
    c.ok::<_, schedule::CreateOk>(&Create {
        entry: every_minute("schedule://r/a/gone/run"),
    })
    .await;
    c.ok::<_, schedule::CancelOk>(&schedule::Cancel::new("schedule://r/a/gone/run"))
        .await;
    c.ok::<_, schedule::SubscribeReply>(&schedule::Subscribe::new("schedule://**"))
        .await;
    broker.shutdown().await;
    drop(broker);

    // Three hours later: no catch-up, next fires recomputed from now.
    let t1 = t0 + Duration::from_secs(3 * 3600 + 10);
    let broker = local_with_clock(&dir, Clock::manual(t1)).await;
    let engine = &broker.engines().schedule;
    assert_eq!(engine.stats().schedules, 2);
    assert!(engine.watches().is_empty(), "watches never survive");
    assert_eq!(
        engine.get(1, "schedule://r/a/keep/run").unwrap().next_fire,
        Some(t0 + Duration::from_secs(3 * 3600 + 60))
    );
    assert_eq!(
        engine.get(1, "schedule://r/a/noon/run").unwrap().next_fire,
        Some(t0 + Duration::from_secs(12 * 3600 + 30 * 60))
    );
    let mut c = RawClient::anon(&broker, Kind::Ws).await;
    let page = c.ok::<_, ListOk>(&List::default()).await;
    assert_eq!(
        page.entries.iter().map(|e| &*e.route).collect::<Vec<_>>(),
        ["schedule://r/a/keep/run", "schedule://r/a/noon/run"]
    );
    assert_eq!(&*page.entries[1].cron, "30 12 * * *");
    c.ok::<_, schedule::SubscribeReply>(&schedule::Subscribe::new("schedule://**"))
        .await;
    c.expect_quiet().await;
    broker.clock().advance(Duration::from_secs(50));
    let l = c.next_of_type(types::SCHEDULE_NOTIFY).await;
    let n = Notify::decode(l.record.payload).unwrap();
    assert_eq!(&*n.route, "schedule://r/a/keep/run");
    c.expect_quiet().await;
    broker.shutdown().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn schedules_are_kept_per_route_family() {
    let dir = temp_dir("families");
    let jwt = |path: &Path| {
        Broker::builder()
            .storage(StorageMode::Local(path.to_path_buf()))
            .auth(
                fitz_broker::AuthConfig::jwt_hs256(crate::support::SECRET)
                    .audiences(["fitz"])
                    .family_map([("dev", 1), ("acme", 2)]),
            )
            .start()
    };
    let broker = jwt(&dir).await.unwrap();
    for tid in ["dev", "acme"] {
        let (mut c, _) = RawClient::connect(
            &broker,
            Kind::Tcp,
            &crate::support::token(tid, crate::support::ALL),
        )
        .await;
        c.ok::<_, schedule::CreateOk>(&Create {
            entry: Entry {
                payload: Bytes::copy_from_slice(tid.as_bytes()),
                ..every_minute("schedule://same/a/b/run")
            },
        })
        .await;
    }
    broker.shutdown().await;
    drop(broker);
    let broker = jwt(&dir).await.unwrap();
    for tid in ["dev", "acme"] {
        let (mut c, _) = RawClient::connect(
            &broker,
            Kind::Tcp,
            &crate::support::token(tid, crate::support::ALL),
        )
        .await;
        let page = c.ok::<_, ListOk>(&List::default()).await;
        assert_eq!(page.total_count, 1);
        assert_eq!(&page.entries[0].payload[..], tid.as_bytes());
    }
    broker.shutdown().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------- queue

mod queue_support {
    use bytes::Bytes;
    use fitz_protocol::decode_reply_with;
    use fitz_protocol::queue::{self, EnqueueOk, ReserveOk, ReservedItem};

    use super::RawClient;

    pub async fn enqueue(c: &mut RawClient, route: &str, body: &str, delay: Option<u64>) -> u64 {
        c.ok::<_, EnqueueOk>(&queue::Enqueue {
            route: route.into(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            delay_seconds: delay,
        })
        .await
        .message_id
    }

    pub async fn reserve(
        c: &mut RawClient,
        route: &str,
        lease: u64,
        batch: u32,
    ) -> Vec<ReservedItem> {
        let payload = c
            .call(&queue::Reserve {
                route: route.into(),
                lease_seconds: lease,
                batch_size: Some(batch),
                wait_seconds: None,
            })
            .await;
        match decode_reply_with(payload, |r| ReserveOk::decode_body(r, false)).unwrap() {
            Ok(ok) => ok.items,
            Err(e) => panic!("RESERVE failed: {e:?}"),
        }
    }

    pub fn complete(route: &str, item: &ReservedItem) -> queue::Complete {
        queue::Complete {
            route: route.into(),
            message_id: item.message_id,
            lease_token: item.lease_token,
        }
    }

    pub fn bodies(items: &[ReservedItem]) -> Vec<&[u8]> {
        items.iter().map(|i| &i.body[..]).collect()
    }
}

/// The queue backlog — ready messages in id order, delayed ones with their
/// absolute visibility time, attempt counts — survives a restart; completed
/// messages stay gone, reservations (and their tokens) do not survive and
/// their messages are delivered again, and ids are never reused.
#[tokio::test]
async fn queue_backlog_survives_restart_and_reservations_do_not() {
    use fitz_broker::engines::queue::MessageState;
    use queue_support::{bodies, complete, enqueue, reserve};

    const JOBS: &str = "queue://r/a/jobs";
    const MAIL: &str = "queue://r/b/mail";
    let dir = temp_dir("queue-restart");
    let t0 = UNIX_EPOCH + Duration::from_secs(T0);
    let clock = Clock::manual(t0);
    let broker = local_with_clock(&dir, clock.clone()).await;
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    let done = enqueue(&mut c, JOBS, "done", None).await;
    let retried = enqueue(&mut c, JOBS, "retried", None).await;
    let held = enqueue(&mut c, JOBS, "held", None).await;
    let waiting = enqueue(&mut c, JOBS, "waiting", None).await;
    let later = enqueue(&mut c, JOBS, "later", Some(60)).await;
    let mail = enqueue(&mut c, MAIL, "mail", None).await;
    // Completed: gone for good.
    let first = reserve(&mut c, JOBS, 30, 1).await;
    assert_eq!(first[0].message_id, done);
    c.ok::<_, fitz_protocol::queue::CompleteOk>(&complete(JOBS, &first[0]))
        .await;
    // Reserved and left to expire: one failed attempt, ready again (at the
    // back of the ready order).
    let expired = reserve(&mut c, JOBS, 10, 1).await;
    assert_eq!(expired[0].message_id, retried);
    clock.advance(Duration::from_secs(10));
    let info = broker.engines().queue.message(1, JOBS, retried).unwrap();
    assert_eq!((info.state, info.attempts), (MessageState::Ready, 1));
    // Reserved at shutdown: the token dies with the broker.
    let inflight = reserve(&mut c, JOBS, 300, 1).await;
    assert_eq!(inflight[0].message_id, held);
    let before = broker.engines().queue.stats();
    assert_eq!((before.messages, before.inflight), (5, 1));
    broker.shutdown().await;
    drop(broker);

    // 20 s later: the delayed message is not due yet.
    let clock = Clock::manual(t0 + Duration::from_secs(30));
    let broker = local_with_clock(&dir, clock.clone()).await;
    let engine = &broker.engines().queue;
    let stats = engine.stats();
    assert_eq!((stats.queues, stats.messages, stats.inflight), (2, 5, 0));
    assert!(
        engine.message(1, JOBS, done).is_none(),
        "completed stays gone"
    );
    assert_eq!(engine.message(1, JOBS, retried).unwrap().attempts, 1);
    let info = engine.message(1, JOBS, held).unwrap();
    // A clean shutdown ends the reserving session first, which counts the
    // reservation as a failed attempt like any disconnect; after a crash the
    // attempt count would be the last one stored (0 here).
    assert_eq!(
        (info.state, info.attempts),
        (MessageState::Ready, 1),
        "a reservation never survives"
    );
    assert_eq!(
        engine.message(1, JOBS, later).unwrap().state,
        MessageState::Delayed
    );
    assert_eq!(engine.counters(1, JOBS).ready, 3);
    assert_eq!(engine.counters(1, JOBS).delayed, 1);

    let mut c = RawClient::anon(&broker, Kind::Ws).await;
    // The pre-restart token is not honoured.
    let e = c.fails(&complete(JOBS, &inflight[0])).await;
    assert_eq!(e.message, "invalid token", "{e:?}");
    // Recovered ready messages come back in id order, delayed ones not yet.
    let got = reserve(&mut c, JOBS, 30, 10).await;
    assert_eq!(bodies(&got), [&b"retried"[..], b"held", b"waiting"]);
    assert_eq!(
        got.iter().map(|i| i.message_id).collect::<Vec<_>>(),
        [retried, held, waiting]
    );
    for item in &got {
        c.ok::<_, fitz_protocol::queue::CompleteOk>(&complete(JOBS, item))
            .await;
    }
    assert!(reserve(&mut c, JOBS, 30, 10).await.is_empty());
    // The delay ends at the time set before the restart (T0 + 60 s).
    clock.advance(Duration::from_secs(29));
    assert!(reserve(&mut c, JOBS, 30, 10).await.is_empty());
    clock.advance(Duration::from_secs(1));
    let due = reserve(&mut c, JOBS, 30, 10).await;
    assert_eq!(
        (due[0].message_id, &due[0].body[..]),
        (later, &b"later"[..])
    );
    // Other queues are rediscovered too.
    let m = reserve(&mut c, MAIL, 30, 10).await;
    assert_eq!((m[0].message_id, &m[0].body[..]), (mail, &b"mail"[..]));
    // New ids continue after every recovered one.
    assert!(enqueue(&mut c, MAIL, "new", None).await > later);
    broker.shutdown().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------- stream

mod stream_support {
    use bytes::Bytes;
    use fitz_protocol::kv::Durability;
    use fitz_protocol::stream::{self, AppendOk, BeginOk, CommitOk, ReadOk, ReadPage};

    use super::RawClient;

    pub async fn begin(c: &mut RawClient, route: &str) -> (u64, u64) {
        let ok: BeginOk = c
            .ok(&stream::Begin {
                route: route.into(),
                ingest_metadata: None,
            })
            .await;
        let next = u64::from_be_bytes(ok.data[..8].try_into().unwrap());
        (ok.session_id, next)
    }

    pub async fn append(
        c: &mut RawClient,
        session: u64,
        expected: u64,
        body: &str,
        disc: Option<&str>,
        metadata: Option<&str>,
    ) -> u64 {
        let ok: AppendOk = c
            .ok(&stream::Append {
                session_id: session,
                expected_offset: expected,
                body: Bytes::copy_from_slice(body.as_bytes()),
                metadata: metadata.map(|m| Bytes::copy_from_slice(m.as_bytes())),
                discriminator: disc.map(Into::into),
            })
            .await;
        ok.leading_u64().expect("assigned offset")
    }

    /// One committed batch of `(body, discriminator)` records.
    pub async fn write(
        c: &mut RawClient,
        route: &str,
        records: &[(&str, Option<&str>)],
        durability: Durability,
    ) {
        let (id, next) = begin(c, route).await;
        for (i, (body, disc)) in records.iter().enumerate() {
            append(c, id, next + i as u64, body, *disc, None).await;
        }
        c.ok::<_, CommitOk>(&stream::Commit {
            session_id: id,
            durability,
        })
        .await;
    }

    pub fn rd(selector: &str, from: u64, limit: u64) -> stream::Read {
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

    pub async fn read(c: &mut RawClient, r: &stream::Read) -> ReadPage {
        let ok: ReadOk = c.ok(r).await;
        let global = fitz_protocol::route::stream_selector(&r.selector)
            == Ok(fitz_protocol::route::SelectorScope::Global);
        ReadPage::decode(ok.data, global).expect("page decodes")
    }

    pub fn bodies(p: &ReadPage) -> Vec<String> {
        p.items
            .iter()
            .filter_map(|i| match &i.kind {
                stream::ItemKind::Event(r) => Some(String::from_utf8_lossy(&r.body).into_owned()),
                _ => None,
            })
            .collect()
    }
}

/// Committed stream records survive a restart with every offset, body,
/// metadata, discriminator and `created_at`: reads from offset 0 on every
/// axis answer as before, a global read continues across the restart with
/// the cursor it got before, and new commits continue every axis where it
/// stopped. Uncommitted appends and append sessions never survive.
#[tokio::test]
async fn committed_stream_records_survive_restart_with_their_offsets() {
    use fitz_protocol::stream::{
        self, CommitOk, FilterClause, FilterSet, LastOk, MetadataOk, ReadPage,
    };
    use stream_support::{append, begin, bodies, rd, read, write};

    let dir = temp_dir("stream-restart");
    let broker = local(&dir).await;
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    write(
        &mut c,
        "stream://r/a/x",
        &[("x0", Some("created")), ("x1", Some("paid"))],
        Durability::Sync,
    )
    .await;
    write(
        &mut c,
        "stream://r/b/y",
        &[("y0", None)],
        Durability::Buffered,
    )
    .await;
    write(
        &mut c,
        "stream://s/a/z",
        &[("z0", None)],
        Durability::Buffered,
    )
    .await;
    // Metadata is kept with its record.
    let (id, next) = begin(&mut c, "stream://r/a/x").await;
    append(&mut c, id, next, "x2", Some("paid"), Some("m")).await;
    c.ok::<_, CommitOk>(&stream::Commit {
        session_id: id,
        durability: Durability::Sync,
    })
    .await;
    // Appended but never committed: lost, and the resource is free again.
    let (open, next) = begin(&mut c, "stream://r/a/x").await;
    assert_eq!(next, 3);
    append(&mut c, open, 3, "uncommitted", None, None).await;

    let selectors = [
        "stream://r/a/x",
        "stream://r/a/*",
        "stream://r/**",
        "stream://*/a/*",
        "stream://**",
    ];
    let mut before: Vec<ReadPage> = Vec::new();
    for s in selectors {
        before.push(read(&mut c, &rd(s, 0, 100)).await);
    }
    assert_eq!(bodies(&before[4]), ["x0", "x1", "y0", "z0", "x2"]);
    let last: LastOk = c.ok(&stream::Last::new("stream://r/a/x")).await;
    let meta: MetadataOk = c.ok(&stream::GetMetadata::new("stream://r/a/x")).await;
    // A global reader part-way through.
    let first_page = read(&mut c, &rd("stream://**", 0, 2)).await;
    assert!(first_page.has_more);
    broker.shutdown().await;
    drop(broker);

    let broker = local(&dir).await;
    let mut c = RawClient::anon(&broker, Kind::Ws).await;
    for (s, was) in selectors.iter().zip(&before) {
        assert_eq!(&read(&mut c, &rd(s, 0, 100)).await, was, "{s} from 0");
    }
    assert_eq!(
        c.ok::<_, LastOk>(&stream::Last::new("stream://r/a/x"))
            .await,
        last
    );
    assert_eq!(
        c.ok::<_, MetadataOk>(&stream::GetMetadata::new("stream://r/a/x"))
            .await,
        meta
    );
    // Discriminators survive: the broker still filters on them.
    let paid = stream::Read {
        filter: Some(
            FilterSet {
                clauses: vec![FilterClause::Equals("paid".into())],
            }
            .to_bytes(),
        ),
        ..rd("stream://r/a/x", 0, 100)
    };
    assert_eq!(bodies(&read(&mut c, &paid).await), ["x1", "x2"]);
    // The global cursor taken before the restart still continues.
    let rest = read(
        &mut c,
        &stream::Read {
            cursor_fingerprint: first_page.cursor_fingerprint,
            captured_watermark: first_page.captured_watermark,
            ..rd(
                "stream://**",
                first_page.last_global_offset.unwrap() + 1,
                100,
            )
        },
    )
    .await;
    assert_eq!(bodies(&rest), ["y0", "z0", "x2"]);
    assert!(!rest.has_more);
    // The open session is gone: BEGIN succeeds at the committed end, and a
    // new commit continues every axis (resource 3, area 3, realm 4, global 5).
    let (id, next) = begin(&mut c, "stream://r/a/x").await;
    assert_eq!(next, 3, "uncommitted appends are lost");
    append(&mut c, id, 3, "x3", None, None).await;
    let ok: CommitOk = c
        .ok(&stream::Commit {
            session_id: id,
            durability: Durability::Sync,
        })
        .await;
    let offsets: Vec<u64> = ok
        .data
        .chunks(8)
        .map(|x| u64::from_be_bytes(x.try_into().unwrap()))
        .collect();
    assert_eq!(offsets, [3, 3, 3, 3, 4, 4, 5, 5]);
    broker.shutdown().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

/// Opens `n` read-write transactions on `{prefix}0` … and writes `k` =
/// `v{i}` in each; returns one correlated Sync COMMIT frame per transaction
/// (not sent) and their correlation ids.
async fn sync_commits_of_open_writes(
    c: &mut RawClient,
    prefix: &str,
    n: usize,
) -> (Vec<bytes::BytesMut>, Vec<u64>) {
    let (mut frames, mut ids) = (Vec::new(), Vec::new());
    for i in 0..n {
        let route = format!("{prefix}{i}");
        let tx_id = c
            .ok::<_, BeginOk>(&kv::Begin {
                route: route.as_str().into(),
                mode: TxMode::ReadWrite,
            })
            .await
            .tx_id;
        c.ok::<_, kv::PutOk>(&kv::Put {
            tx_id,
            route: route.as_str().into(),
            key: Bytes::from_static(b"k"),
            value: Bytes::from(format!("v{i}")),
        })
        .await;
        let id = c.id();
        let mut frame = bytes::BytesMut::new();
        fitz_protocol::record::put_label(&mut frame, types::CORRELATE, id);
        kv::Commit {
            tx_id,
            route: route.as_str().into(),
            durability: Durability::Sync,
        }
        .encode_record(&mut frame)
        .unwrap();
        frames.push(frame);
        ids.push(id);
    }
    (frames, ids)
}

/// One connection's Sync commits that arrive together (here: 32 COMMIT
/// frames in one write, as a client with 32 concurrent writers sends them)
/// share one storage write, i.e. one fsync, instead of one each; every one
/// is answered and survives a restart. TCP and WebSocket.
#[tokio::test]
async fn one_connections_sync_commits_arriving_together_share_one_write() {
    for kind in [Kind::Tcp, Kind::Ws] {
        let dir = temp_dir("one-conn-group");
        let broker = local(&dir).await;
        let mut c = RawClient::anon(&broker, kind).await;
        let route = |i: usize| format!("kv://group/a/r{i}");
        let (frames, ids) = sync_commits_of_open_writes(&mut c, "kv://group/a/r", 32).await;
        let before = broker.storage_writes();
        c.send_frames(&frames).await;
        for id in ids {
            let reply = fitz_protocol::decode_reply::<kv::CommitOk>(c.reply_to(id).await);
            assert!(
                matches!(reply, Ok(Ok(_))),
                "{kind:?}: commit {id}: {reply:?}"
            );
        }
        assert_eq!(
            broker.storage_writes() - before,
            1,
            "{kind:?}: 32 Sync commits that arrived together"
        );
        broker.shutdown().await;
        drop(broker);
        let broker = local(&dir).await;
        let mut c = RawClient::anon(&broker, kind).await;
        for i in 0..32 {
            assert_eq!(read(&mut c, &route(i), "k").await, b(&format!("v{i}")));
        }
        broker.shutdown().await;
        drop(broker);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Sync commits held for the end of their batch are still written when a
/// later frame of the same batch closes the session (here an unknown
/// message type, with one more frame buffered behind it): each resource is
/// unlocked and its value durable, nothing is left half done.
#[tokio::test]
async fn held_commits_survive_a_batch_cut_short_by_a_close() {
    let dir = temp_dir("held-close");
    let broker = local(&dir).await;
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    let route = |i: usize| format!("kv://held/a/r{i}");
    let (mut frames, _) = sync_commits_of_open_writes(&mut c, "kv://held/a/r", 8).await;
    // An unknown message type, then one more frame that is never handled.
    let mut unknown = bytes::BytesMut::new();
    fitz_protocol::record::encode_raw_record(&mut unknown, 900, &[]).unwrap();
    frames.push(unknown);
    frames.push(frames[0].clone());
    c.send_frames(&frames).await;
    c.expect_closed_with(Kind::Tcp, "unknown message type 900")
        .await;
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    for i in 0..8 {
        // A read-write BEGIN fails with 1004 while a commit holds the lock.
        let tx_id = c
            .ok::<_, BeginOk>(&kv::Begin {
                route: route(i).into(),
                mode: TxMode::ReadWrite,
            })
            .await
            .tx_id;
        c.ok::<_, kv::CommitOk>(&kv::Commit {
            tx_id,
            route: route(i).into(),
            durability: Durability::Buffered,
        })
        .await;
    }
    broker.shutdown().await;
    drop(broker);
    let broker = local(&dir).await;
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    for i in 0..8 {
        assert_eq!(read(&mut c, &route(i), "k").await, b(&format!("v{i}")));
    }
    broker.shutdown().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}
