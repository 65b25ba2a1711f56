//! Schedule in five minutes: create cron schedules, list them, receive
//! their fires, cancel.
//!
//! ```text
//! cargo run -p fitz --example schedule
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example schedule
//! ```
//!
//! Without `FITZ_URL` it starts an embedded broker on a manual clock and
//! moves that clock forward, so fires arrive at once. Against a real broker
//! it waits (up to a little over a minute) for the next whole minute.

use std::time::{Duration, SystemTime};

use fitz::schedule::{DeliveryMode, ScheduleEntry};
use fitz::{Client, StaticToken};
use futures_util::{StreamExt, TryStreamExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (url, broker) = match std::env::var("FITZ_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let broker = fitz_broker::Broker::builder()
                .bind_addr(std::net::Ipv4Addr::LOCALHOST)
                .tcp_port(0)
                .http_port(0)
                .clock(fitz_broker::Clock::manual(SystemTime::now()))
                .start()
                .await?;
            println!("embedded broker on {} (manual clock)", broker.tcp_url());
            (broker.tcp_url(), Some(broker))
        }
    };
    let token = std::env::var("FITZ_TOKEN").unwrap_or_default();
    let client = Client::builder(url.as_str(), StaticToken::new(token)).build()?;
    client.connect().await?;
    let schedule = client.schedule();

    // Subscribe first: fires nobody listens to are skipped, never queued.
    let mut fires = schedule
        .subscribe("schedule://example/reports/*/run")
        .await?;

    schedule
        .create(
            "schedule://example/reports/minutely/run",
            "* * * * *",
            DeliveryMode::Broadcast,
            "every minute",
        )
        .await?;
    schedule
        .create_batch([
            ScheduleEntry::new(
                "schedule://example/reports/daily/run",
                "0 6 * * *",
                DeliveryMode::Single,
                "06:00 UTC",
            ),
            ScheduleEntry::new(
                "schedule://example/reports/weekdays/run",
                "30 8 * * 1-5",
                DeliveryMode::Single,
                "08:30 UTC, Monday to Friday",
            ),
        ])
        .await?;

    match schedule
        .create(
            "schedule://example/reports/bad/run",
            "61 * * * *",
            DeliveryMode::Single,
            "",
        )
        .await
    {
        Err(e) => println!("rejected as expected: {e}"),
        Ok(()) => println!("unexpectedly accepted an invalid cron"),
    }

    let all: Vec<ScheduleEntry> = schedule
        .list_matching("schedule://example/**")?
        .try_collect()
        .await?;
    for entry in &all {
        println!(
            "listed {} `{}` {:?} {:?}",
            entry.route(),
            entry.cron(),
            entry.mode(),
            entry.payload()
        );
    }

    match &broker {
        Some(broker) => {
            println!("advancing the broker's clock by one minute");
            broker.clock().advance(Duration::from_secs(60));
        }
        None => println!("waiting for the next whole minute"),
    }
    match tokio::time::timeout(Duration::from_secs(75), fires.next()).await {
        Ok(Some(fire)) => {
            let fire = fire?;
            println!("fired: {} with {:?}", fire.route(), fire.payload());
        }
        Ok(None) => println!("the subscription ended"),
        Err(_) => println!("no fire within 75 s"),
    }

    for entry in all {
        schedule.cancel(entry.route()).await?;
    }
    println!(
        "cancelled; {} schedule(s) left",
        schedule.list(0, 0).await?.total()
    );
    fires.unsubscribe().await?;
    client.close().await;
    Ok(())
}
