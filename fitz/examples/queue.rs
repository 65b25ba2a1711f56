//! Queue in one file: enqueue jobs, reserve and complete one by hand, then
//! let a managed worker process the rest.
//!
//! ```text
//! cargo run -p fitz --example queue
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example queue
//! FITZ_URL=tcp://127.0.0.1:4091 FITZ_TOKEN=$(scripts/dev-token.sh) cargo run -p fitz --example queue
//! ```
//!
//! Without `FITZ_URL` it starts the embedded broker in this process.

use std::error::Error;
use std::time::Duration;

use fitz::queue::ReserveOptions;
use fitz::{Client, StaticToken};
use fitz_broker::Broker;

const INVOICES: &str = "queue://demo/billing/invoices";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (client, broker) = connect().await?;
    let queue = client.queue();

    // Producer: each message gets an id from the broker.
    for n in 1..=5 {
        let id = queue.enqueue(INVOICES, format!("invoice #{n}")).await?;
        println!("enqueued invoice #{n} as message {id}");
    }

    // By hand: a reservation hides the message from other consumers for its
    // lease; complete it when done, or it is delivered again later.
    let options = ReserveOptions {
        lease: Duration::from_secs(30),
        ..ReserveOptions::default()
    };
    for reservation in queue.reserve(INVOICES, options).await? {
        let body = String::from_utf8_lossy(reservation.body()).into_owned();
        reservation.extend(Duration::from_secs(60)).await?; // need more time
        reservation.complete().await?;
        println!("reserved, extended and completed {body}");
    }

    // A managed worker: two handlers at a time on every queue called
    // `invoices`, leases renewed while a handler runs, the message completed
    // when it returns Ok (an Err leaves it to be delivered again).
    let worker = queue
        .worker("queue://demo/*/invoices", 2, |message| async move {
            let text = String::from_utf8_lossy(message.body()).into_owned();
            println!("  worker: {text} (message {})", message.id());
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, std::io::Error>(())
        })
        .await?;

    // Wait until the other four are done, then stop cleanly.
    let mut stats = worker.watch_stats();
    tokio::time::timeout(
        Duration::from_secs(10),
        stats.wait_for(|s| s.completed >= 4),
    )
    .await??;
    let stats = worker.shutdown().await;
    println!(
        "worker stopped: {} completed, {} failed",
        stats.completed, stats.failed
    );

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
