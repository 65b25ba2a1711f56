//! Offline-first with `fitz::sync` (feature `sync`): work is queued while the
//! broker is down and lands exactly once when it comes up.
//!
//! ```text
//! cargo run -p fitz --features sync --example offline
//! ```
//!
//! The example picks a free port, queues 100 increments (a named
//! read-modify-write mutation) and a plain KV write in an outbox file while
//! nothing listens there, then starts the embedded broker on that port and
//! waits for the outbox to drain: the counter reads exactly 100.

use std::error::Error;
use std::time::Duration;

use fitz::kv::TxMode;
use fitz::sync::{KvWrite, Mutation, Outbox, RedbStore};
use fitz::{Client, ReconnectPolicy, StaticToken};
use fitz_broker::Broker;

type Result<T = (), E = Box<dyn Error>> = std::result::Result<T, E>;

const ROUTE: &str = "kv://demo/offline/counters";
const INCREMENTS: u64 = 100;

fn number(v: Option<bytes::Bytes>) -> u64 {
    v.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result {
    // A port nobody listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let client = Client::builder(&url, StaticToken::anonymous())
        .reconnect(ReconnectPolicy {
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            ..ReconnectPolicy::default()
        })
        .build()?;

    let dir = std::env::temp_dir().join(format!("fitz-offline-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let outbox = Outbox::builder(client.clone(), RedbStore::open(dir.join("outbox.redb"))?)
        .handler("incr", |tx, _args| {
            Box::pin(async move {
                let n = number(tx.get("visits").await?);
                tx.put("visits", (n + 1).to_string()).await?;
                Ok(())
            })
        })
        .open()
        .await?;
    println!("outbox open, client id {}", outbox.client_id());

    // The broker is down: every push is durable locally, nothing is sent.
    match client.connect().await {
        Err(e) => println!("broker unreachable ({e}); queueing anyway"),
        Ok(()) => println!("unexpected: something listens on {url}"),
    }
    for _ in 0..INCREMENTS {
        outbox.mutate(ROUTE, "incr", b"").await?;
    }
    outbox
        .push(
            ROUTE,
            Mutation::Writes(vec![KvWrite::put("greeting", "hello, offline")]),
        )
        .await?;
    println!("queued: {:?}", outbox.status());

    // The broker comes up; the client connects and the outbox drains.
    let broker = Broker::builder().tcp_port(port).start().await?;
    println!("started an embedded broker on {}", broker.tcp_url());
    client.connect_when_ready(Duration::from_secs(30)).await?;
    tokio::time::timeout(Duration::from_secs(30), outbox.wait_idle()).await?;

    let mut tx = client.kv().begin(ROUTE, TxMode::ReadOnly).await?;
    let visits = number(tx.get("visits").await?);
    let greeting = tx.get("greeting").await?;
    tx.rollback().await?;
    println!(
        "visits = {visits} (pushed {INCREMENTS}), greeting = {:?}",
        greeting.as_deref().map(String::from_utf8_lossy)
    );
    assert_eq!(visits, INCREMENTS, "each increment applied exactly once");

    outbox.close().await;
    client.close().await;
    broker.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
