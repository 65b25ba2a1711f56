//! Schedule in one file: create cron schedules, list them, receive a fire,
//! cancel.
//!
//! ```text
//! cargo run -p fitz --example schedule
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example schedule
//! FITZ_URL=tcp://127.0.0.1:4091 FITZ_TOKEN=$(scripts/dev-token.sh) cargo run -p fitz --example schedule
//! ```
//!
//! Without `FITZ_URL` it starts the embedded broker in this process, on a
//! manual clock that it moves forward, so the fire arrives at once. Against
//! another broker it waits (up to a little over a minute) for the next whole
//! minute.

use std::error::Error;
use std::time::{Duration, SystemTime};

use fitz::schedule::{DeliveryMode, ScheduleEntry};
use fitz::{Client, StaticToken};
use fitz_broker::{Broker, Clock};
use futures_util::{StreamExt, TryStreamExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (client, broker) = connect().await?;
    let schedule = client.schedule();

    // Subscribe first: fires nobody listens to are skipped, never queued.
    let mut fires = schedule.subscribe("schedule://demo/reports/*/run").await?;

    schedule
        .create(
            "schedule://demo/reports/minutely/run",
            "* * * * *",
            DeliveryMode::Broadcast,
            "every minute",
        )
        .await?;
    schedule
        .create_batch([
            ScheduleEntry::new(
                "schedule://demo/reports/daily/run",
                "0 6 * * *",
                DeliveryMode::Single,
                "06:00 UTC",
            ),
            ScheduleEntry::new(
                "schedule://demo/reports/weekdays/run",
                "30 8 * * 1-5",
                DeliveryMode::Single,
                "08:30 UTC, Monday to Friday",
            ),
        ])
        .await?;

    match schedule
        .create(
            "schedule://demo/reports/bad/run",
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
        .list_matching("schedule://demo/**")?
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
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    Ok(())
}

/// A client of the broker named by `FITZ_URL` (token from `FITZ_TOKEN`), or
/// of an embedded broker on a manual clock started here.
async fn connect() -> Result<(Client, Option<Broker>), Box<dyn Error>> {
    let (url, broker) = match std::env::var("FITZ_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let broker = Broker::builder()
                .clock(Clock::manual(SystemTime::now()))
                .start()
                .await?;
            println!("embedded broker on {} (manual clock)", broker.tcp_url());
            (broker.tcp_url(), Some(broker))
        }
    };
    let token = std::env::var("FITZ_TOKEN").unwrap_or_default();
    let client = Client::builder(url, StaticToken::new(token)).build()?;
    client.connect_when_ready(Duration::from_secs(10)).await?;
    Ok((client, broker))
}
