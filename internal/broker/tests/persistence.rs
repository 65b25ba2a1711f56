//! `FITZ_STORAGE_MODE=local`: what survives a restart, a dropped broker and
//! a killed process, and what never does.
//!
//! Buffered commits: visible at once, durable after a clean shutdown and
//! within ~100 ms otherwise (the background flush); a crash before that may
//! lose them, but never half a batch. Sync commits are fsync'd before the
//! reply. Sessions, transactions and subscriptions never survive.

mod support;

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use cntryl_fitz::client_domains::kv::KvGetResult;
use cntryl_fitz::{Client, KvDurability, TransactionMode};
use fitz_broker::{Broker, Clock, StartError, StorageMode};
use fitz_protocol::kv::{self, BeginOk, Durability, GetOk, TxMode};
use fitz_protocol::schedule::{self, Create, DeliveryMode, Entry, List, ListOk, Notify};
use fitz_protocol::{Message, types};
use support::binary::{BrokerProcess, temp_dir};
use support::{Kind, RawClient};

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

    let mem = support::anon().await;
    let mut c = RawClient::anon(&mem, Kind::Tcp).await;
    write(&mut c, "kv://r/a/x", &[("k", "v")], Durability::Sync).await;
    mem.shutdown().await;
    drop(mem);
    let mem = support::anon().await;
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
                fitz_broker::AuthConfig::jwt_hs256(support::SECRET)
                    .audiences(["fitz"])
                    .family_map([("dev", 1), ("acme", 2)]),
            )
            .start()
    };
    let broker = jwt(&dir).await.unwrap();
    for tid in ["dev", "acme"] {
        let (mut c, _) =
            RawClient::connect(&broker, Kind::Tcp, &support::token(tid, support::ALL)).await;
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
        let (mut c, _) =
            RawClient::connect(&broker, Kind::Tcp, &support::token(tid, support::ALL)).await;
        let page = c.ok::<_, ListOk>(&List::default()).await;
        assert_eq!(page.total_count, 1);
        assert_eq!(&page.entries[0].payload[..], tid.as_bytes());
    }
    broker.shutdown().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}
