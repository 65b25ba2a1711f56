//! Work queues: a producer enqueues jobs, a managed worker processes them.
//!
//! Runs against an embedded broker started in-process, or against the broker
//! named by `FITZ_URL` (with `FITZ_TOKEN`, if it needs one):
//!
//! ```text
//! cargo run -p fitz --example queue
//! FITZ_URL=tcp://127.0.0.1:4190 cargo run -p fitz --example queue
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use fitz::{Client, StaticToken};

const ROUTE: &str = "queue://demo/billing/invoices";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // An embedded broker unless told where a real one is.
    let (url, token, embedded) = match std::env::var("FITZ_URL") {
        Ok(url) => (url, std::env::var("FITZ_TOKEN").unwrap_or_default(), None),
        Err(_) => {
            let broker = fitz_broker::Broker::builder()
                .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .tcp_port(0)
                .http_port(0)
                .start()
                .await?;
            println!("embedded broker on {}", broker.tcp_url());
            (broker.tcp_url(), String::new(), Some(broker))
        }
    };
    let client = Client::builder(url, StaticToken::new(token)).build()?;
    client.connect_when_ready(Duration::from_secs(10)).await?;
    let queue = client.queue();

    // Producer.
    for n in 1..=5 {
        let id = queue.enqueue(ROUTE, format!("invoice #{n}")).await?;
        println!("enqueued invoice #{n} as message {id}");
    }

    // Worker: two handlers at a time, on every queue called `invoices`.
    let worker = queue
        .worker("queue://demo/*/invoices", 2, |msg| async move {
            let text = String::from_utf8_lossy(msg.body()).into_owned();
            println!(
                "  processing {text} (message {}, {})",
                msg.id(),
                msg.route()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, std::io::Error>(())
        })
        .await?;

    // Wait until all five are done, then stop cleanly.
    let mut stats = worker.watch_stats();
    tokio::time::timeout(
        Duration::from_secs(10),
        stats.wait_for(|s| s.completed >= 5),
    )
    .await??;
    let stats = worker.shutdown().await;
    println!(
        "worker stopped: {} completed, {} failed",
        stats.completed, stats.failed
    );

    client.close().await;
    if let Some(broker) = embedded {
        broker.shutdown().await;
    }
    Ok(())
}
