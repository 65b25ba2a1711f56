//! Client metrics in Prometheus text format: installs
//! `metrics-exporter-prometheus` as the `metrics` recorder, runs a few
//! operations and prints what the exporter would serve on `/metrics`.
//!
//! ```text
//! cargo run -p fitz --example metrics
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example metrics
//! ```
//!
//! Without `FITZ_URL` it starts the embedded broker in this process. The
//! metric names are listed in `fitz::telemetry::names` (the exporter turns
//! their dots into underscores: `fitz_request_duration`, …).

use std::error::Error;
use std::time::Duration;

use fitz::kv::{Durability, TxMode};
use fitz::{Client, StaticToken};
use fitz_broker::Broker;
use futures_util::StreamExt;
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // Before any client exists: handles are looked up per operation, so a
    // recorder installed later is picked up too, but nothing is reported
    // before it.
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    let (client, broker) = connect().await?;

    // A few KV operations: one transaction, three gets.
    let kv = client.kv();
    let mut tx = kv
        .begin("kv://demo/app/settings", TxMode::ReadWrite)
        .await?;
    tx.put("theme", "dark").await?;
    for _ in 0..3 {
        tx.get("theme").await?;
    }
    tx.commit(Durability::Buffered).await?;

    // An error: INSERT of a key that exists (counted by its broker code).
    let mut tx = kv
        .begin("kv://demo/app/settings", TxMode::ReadWrite)
        .await?;
    if let Err(e) = tx.insert("theme", "light").await {
        println!("# insert refused as expected: {e}");
    }
    drop(tx);

    // A subscription and a notice through it.
    let notice = client.notice();
    let mut sub = notice.subscribe("notice://demo/app/*").await?;
    notice.publish("notice://demo/app/deploys", "v42").await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;

    println!("{}", prometheus.render());

    drop(sub);
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
            println!("# embedded broker on {}", broker.tcp_url());
            (broker.tcp_url(), Some(broker))
        }
    };
    let token = std::env::var("FITZ_TOKEN").unwrap_or_default();
    let client = Client::builder(url, StaticToken::new(token)).build()?;
    client.connect_when_ready(Duration::from_secs(10)).await?;
    Ok((client, broker))
}
