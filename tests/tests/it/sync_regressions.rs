//! Regressions of the outbox found by the crash and model tests.
//!
//! * A stream append entry met another append session on its stream
//!   (BEGIN → 2002 `STREAM_SESSION_ACTIVE`: another writer, or an abandoned
//!   session of a crashed outbox that lives until its connection ends) and
//!   was dead-lettered as a permanent failure. Found by `sync_model.rs`
//!   (a crash while a stream entry was being flushed). It now waits and
//!   retries, as for a locked KV resource.

use fitz::stream::{ReadOptions, ReadPosition};
use fitz::sync::{MemoryStore, Mutation, Outbox, StreamAppend};
use fitz_tests::{Brokers, BrokersExt, Transport, connected, realm, until, within};

#[tokio::test]
async fn an_append_waits_out_another_writers_session_instead_of_dead_lettering() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(brokers.anon_url(Transport::Tcp)).await;
    let other = connected(brokers.anon_url(Transport::Tcp)).await;
    let route = format!("stream://{}/sync/busy", realm("sync"));
    let mut held = other.stream().begin(&route).await.unwrap();

    let outbox = Outbox::builder(client.clone(), MemoryStore::new())
        .open()
        .await
        .unwrap();
    outbox
        .push(&route, Mutation::Append(vec![StreamAppend::new("mine")]))
        .await
        .unwrap();
    until("the lane meets the open session", || async {
        outbox.status().lanes.iter().any(|l| {
            l.last_error
                .as_deref()
                .is_some_and(|e| e.contains("STREAM_SESSION_ACTIVE"))
        })
    })
    .await;
    let status = outbox.status();
    assert_eq!(
        (status.pending(), status.dead_letters),
        (1, 0),
        "the entry waits; it is not dead-lettered"
    );

    // The other writer takes the offset the entry expected: it lands after.
    held.append("theirs").await.unwrap();
    held.commit(fitz::stream::Durability::Sync).await.unwrap();
    outbox.sync_now();
    within("idle", outbox.wait_idle()).await;
    assert!(outbox.dead_letters().await.unwrap().is_empty());
    let page = client
        .stream()
        .read_page(&route, ReadPosition::from(0), &ReadOptions::new())
        .await
        .unwrap();
    let bodies: Vec<_> = page.records().map(|r| r.body().clone()).collect();
    assert_eq!(bodies, ["theirs", "mine"], "each once, in commit order");
    outbox.close().await;
    client.close().await;
    other.close().await;
    brokers.shutdown().await;
}
