//! Stream in five minutes: write batches, read them back, follow live.
//!
//! ```text
//! cargo run -p fitz --example stream
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example stream
//! FITZ_URL=ws://127.0.0.1:4090/ws FITZ_TOKEN=<jwt> cargo run -p fitz --example stream
//! ```
//!
//! Without `FITZ_URL` it starts an embedded broker in this process.

use std::time::Duration;

use fitz::stream::{AppendOptions, Durability, Filter, ReadOptions, StreamItem};
use fitz::{Client, StaticToken};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the embedded broker alive for the whole run.
    let (url, _broker) = match std::env::var("FITZ_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let broker = fitz_broker::Broker::builder()
                .bind_addr(std::net::Ipv4Addr::LOCALHOST)
                .tcp_port(0)
                .http_port(0)
                .start()
                .await?;
            println!("embedded broker on {}", broker.tcp_url());
            (broker.tcp_url(), Some(broker))
        }
    };
    let token = std::env::var("FITZ_TOKEN").unwrap_or_default();
    let client = Client::builder(url.as_str(), StaticToken::new(token)).build()?;
    client.connect().await?;
    let streams = client.stream();

    // A follower sees history first, then live commits, in area order.
    let selector = "stream://example/orders/*";
    let mut follower = streams.follow(selector, 0, ReadOptions::new()).await?;

    // Two batches on two resources. Each session holds its resource
    // exclusively and knows the offset its next record gets.
    for (route, events) in [
        ("stream://example/orders/o-1", ["created", "paid"]),
        ("stream://example/orders/o-2", ["created", "cancelled"]),
    ] {
        let mut session = streams.begin(route).await?;
        for event in events {
            let offset = session
                .append_with(event, AppendOptions::new().discriminator(event))
                .await?;
            println!("appended {route} #{offset}: {event}");
        }
        let info = session.commit(Durability::Sync).await?;
        println!("committed {} record(s) to {}", info.records(), info.route());
    }

    let mut seen = 0;
    while seen < 4 {
        match tokio::time::timeout(Duration::from_secs(5), follower.next()).await {
            Ok(Some(item)) => {
                if let StreamItem::Record(r) = item? {
                    println!(
                        "follow: {} #{} (area #{:?}) {:?}",
                        r.route(),
                        r.offset(),
                        r.area_offset(),
                        String::from_utf8_lossy(r.body())
                    );
                    seen += 1;
                }
            }
            Ok(None) => break,
            Err(_) => {
                println!("follow: nothing more within 5 s");
                break;
            }
        }
    }
    println!(
        "follow would resume from area offset {}",
        follower.next_offset()
    );
    drop(follower);

    // A filtered replay: withheld records come back as markers, so the
    // cursor still moves past them.
    let created = ReadOptions::new().filter(Filter::new().equals("created"));
    let page = streams.read_page(selector, 0, &created).await?;
    for item in page.items() {
        match item {
            StreamItem::Record(r) => println!("filtered read: {} #{}", r.route(), r.offset()),
            StreamItem::Filtered(f) => println!(
                "filtered read: {} offsets {:?} withheld ({:?})",
                f.route(),
                f.offsets(),
                f.reason()
            ),
        }
    }
    println!(
        "page: caught up {}, next offset {}",
        page.caught_up(),
        page.next_offset()
    );

    let route = "stream://example/orders/o-1";
    if let Some(last) = streams.last(route).await? {
        println!("last of {route}: #{} {:?}", last.offset(), last.body());
    }
    let meta = streams.metadata(route).await?;
    println!(
        "metadata of {route}: {} record(s), next offset {}",
        meta.record_count,
        meta.next_offset()
    );

    client.close().await;
    Ok(())
}
