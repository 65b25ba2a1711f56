//! KV in one file: transactions, conflicts, scans and a change subscription.
//!
//! ```text
//! cargo run -p fitz --example kv
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example kv
//! FITZ_URL=tcp://127.0.0.1:4091 FITZ_TOKEN=$(scripts/dev-token.sh) cargo run -p fitz --example kv
//! ```
//!
//! Without `FITZ_URL` it starts the embedded broker in this process.

use std::error::Error;
use std::time::Duration;

use fitz::kv::{Durability, ScanOptions, TxMode};
use fitz::{Client, StaticToken, codes};
use fitz_broker::Broker;
use futures_util::{StreamExt, TryStreamExt};

const ROUTE: &str = "kv://demo/shop/carts";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (client, broker) = connect().await?;
    let kv = client.kv();

    // Hear about every commit to the shop's resources.
    let mut changes = kv.subscribe("kv://demo/shop/*").await?;

    // A read-write transaction holds the resource's lock until commit.
    let mut tx = kv.begin(ROUTE, TxMode::ReadWrite).await?;
    for (user, items) in [("ada", 3), ("bob", 1), ("cy", 7), ("dee", 2)] {
        tx.put(format!("cart:{user}"), items.to_string()).await?;
    }
    match tx.insert("cart:ada", "99").await {
        Err(e) if e.code() == Some(codes::KV_KEY_EXISTS) => {
            println!("insert cart:ada → refused, the key exists (the transaction lives on)");
        }
        other => println!("insert cart:ada → {other:?}"),
    }

    // A second writer is turned away at once rather than blocked.
    let e = kv.begin(ROUTE, TxMode::ReadWrite).await.err();
    println!(
        "second read-write BEGIN → {}",
        e.map_or("accepted?".into(), |e| e.to_string())
    );
    tx.commit(Durability::Sync).await?;

    let change = tokio::time::timeout(Duration::from_secs(5), changes.next()).await?;
    if let Some(change) = change {
        let change = change?;
        println!(
            "subscription: {} changed ({} writes)",
            change.route(),
            change.mutation_count()
        );
    }

    // Readers see a snapshot and never wait for writers.
    let mut ro = kv.begin(ROUTE, TxMode::ReadOnly).await?;
    let newest_first: Vec<_> = ro
        .scan(ScanOptions::prefix("cart:").reverse().page_size(2))
        .map_ok(|(k, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(&k),
                String::from_utf8_lossy(&v)
            )
        })
        .try_collect()
        .await?;
    println!("scan, descending, two per page: {newest_first:?}");
    println!("get cart:cy → {:?}", ro.get("cart:cy").await?);
    ro.rollback().await?;

    // Dropping an unfinished transaction rolls it back in the background.
    {
        let mut tx = kv.begin(ROUTE, TxMode::ReadWrite).await?;
        tx.delete_range("cart:a".."cart:z").await?;
    }
    let mut ro = kv.begin(ROUTE, TxMode::ReadOnly).await?;
    let left = ro.scan(ScanOptions::all()).count().await;
    println!("after a dropped delete_range, {left} carts are still there");
    ro.rollback().await?;

    changes.unsubscribe().await?;
    client.close().await;
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    Ok(())
}

/// A client of the broker named by `FITZ_URL` (token from `FITZ_TOKEN`), or
/// of an embedded broker started here.
async fn connect() -> Result<(Client, Option<Broker>), Box<dyn Error>> {
    let (url, broker) = match std::env::var("FITZ_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let broker = Broker::builder().start().await?;
            println!("embedded broker on {}", broker.tcp_url());
            (broker.tcp_url(), Some(broker))
        }
    };
    let token = std::env::var("FITZ_TOKEN").unwrap_or_default();
    let client = Client::builder(url, StaticToken::new(token)).build()?;
    client.connect_when_ready(Duration::from_secs(10)).await?;
    Ok((client, broker))
}
