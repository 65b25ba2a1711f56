//! Notice in one file: publish, fan-out to wildcard subscriptions, typed
//! payloads, and a subscriber that keeps only the newest notices.
//!
//! ```text
//! cargo run -p fitz --example notice
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example notice
//! FITZ_URL=tcp://127.0.0.1:4091 FITZ_TOKEN=$(scripts/dev-token.sh) cargo run -p fitz --example notice
//! ```
//!
//! Without `FITZ_URL` it starts the embedded broker in this process.

use std::error::Error;
use std::time::Duration;

use fitz::notice::NoticeMessage;
use fitz::{Client, Overflow, StaticToken, SubscriptionOptions};
use fitz_broker::Broker;
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (client, broker) = connect().await?;
    let notice = client.notice();

    // A subscription sees what is published from now on; nothing is stored.
    let mut deploys = notice.subscribe("notice://demo/ops/deploys").await?;
    let mut everything = notice.subscribe("notice://demo/**").await?;

    notice
        .publish("notice://demo/ops/deploys", "v42 is live")
        .await?;
    notice
        .publish("notice://demo/ops/alerts", "disk 91% full")
        .await?;

    // `deploys` matches one of the two routes, `everything` both.
    println!("deploys got {}", show(&next(&mut deploys).await?));
    for _ in 0..2 {
        println!("everything got {}", show(&next(&mut everything).await?));
    }
    everything.unsubscribe().await?;

    // Typed payloads (feature `serde`, on by default).
    #[derive(serde::Serialize, serde::Deserialize, Debug)]
    struct Deploy {
        version: u32,
        by: String,
    }
    let deploy = Deploy {
        version: 43,
        by: "ada".into(),
    };
    notice
        .publish_json("notice://demo/ops/deploys", &deploy)
        .await?;
    let typed: Deploy = next(&mut deploys).await?.json()?;
    println!("deploys got {typed:?}");

    // A consumer that may fall behind can keep the newest notices instead of
    // ending its subscription with an overflow error (the default).
    let newest = SubscriptionOptions {
        buffer: 3,
        overflow: Overflow::DropOldest,
    };
    let mut ticks = notice
        .subscribe_with("notice://demo/market/*", newest)
        .await?;
    for price in 100..110 {
        notice
            .publish("notice://demo/market/ticks", price.to_string())
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // let them all arrive
    let mut kept = Vec::new();
    while let Ok(Some(tick)) = tokio::time::timeout(Duration::from_millis(50), ticks.next()).await {
        kept.push(String::from_utf8_lossy(tick?.payload()).into_owned());
    }
    println!(
        "a slow ticker kept {} and dropped {} older notices",
        kept.join(", "),
        ticks.dropped()
    );

    // Every Notice subscription of this client, at once.
    notice.unsubscribe_all().await?;
    println!(
        "after unsubscribe_all the streams end: {:?}",
        deploys.next().await.is_none()
    );

    client.close().await;
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    Ok(())
}

fn show(message: &NoticeMessage) -> String {
    format!(
        "{:?} on {}",
        String::from_utf8_lossy(message.payload()),
        message.route()
    )
}

/// The next notice, or an error when none arrives within five seconds.
async fn next(
    subscription: &mut fitz::notice::NoticeSubscription,
) -> Result<NoticeMessage, Box<dyn Error>> {
    match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await {
        Ok(Some(message)) => Ok(message?),
        Ok(None) => Err("the subscription ended".into()),
        Err(_) => Err("no notice within 5 s".into()),
    }
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
