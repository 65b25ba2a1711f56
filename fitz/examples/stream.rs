//! Stream in one file: append batches, follow them live, read them back
//! filtered.
//!
//! ```text
//! cargo run -p fitz --example stream
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example stream
//! FITZ_URL=ws://127.0.0.1:4090/ws FITZ_TOKEN=$(scripts/dev-token.sh) cargo run -p fitz --example stream
//! ```
//!
//! Without `FITZ_URL` it starts the embedded broker in this process.

use std::error::Error;
use std::time::Duration;

use fitz::stream::{AppendOptions, Durability, Filter, ReadOptions, StreamItem};
use fitz::{Client, StaticToken};
use fitz_broker::Broker;
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (client, broker) = connect().await?;
    let streams = client.stream();

    // A follower sees history first, then live commits, in area order.
    let selector = "stream://demo/orders/*";
    let mut follower = streams.follow(selector, 0, ReadOptions::new()).await?;

    // Two batches on two resources. Each session holds its resource
    // exclusively and knows the offset its next record gets.
    for (route, events) in [
        ("stream://demo/orders/o-1", ["created", "paid"]),
        ("stream://demo/orders/o-2", ["created", "cancelled"]),
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

    let route = "stream://demo/orders/o-1";
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
