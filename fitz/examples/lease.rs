//! Lease in one file: exclusive ownership, fencing tokens, waiting in line,
//! a managed lease, and a subscription to changes of holder.
//!
//! ```text
//! cargo run -p fitz --example lease
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example lease
//! FITZ_URL=tcp://127.0.0.1:4091 FITZ_TOKEN=$(scripts/dev-token.sh) cargo run -p fitz --example lease
//! ```
//!
//! Without `FITZ_URL` it starts the embedded broker in this process.

use std::error::Error;
use std::time::Duration;

use fitz::lease::WithLeaseError;
use fitz::{Client, StaticToken, codes};
use fitz_broker::Broker;
use futures_util::{StreamExt, TryStreamExt};

const ROUTE: &str = "lease://demo/billing/nightly";
const TTL: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (url, broker) = broker_url().await?;
    // Two clients: two processes competing for the same job.
    let alice = connect(&url).await?;
    let bob = connect(&url).await?;

    let mut changes = alice.lease().subscribe("lease://demo/billing/*").await?;

    let lease = alice.lease().acquire(ROUTE, "alice", TTL).await?;
    println!(
        "alice holds {} with fencing token {}",
        lease.route(),
        lease.fencing_token()
    );

    match bob.lease().acquire(ROUTE, "bob", TTL).await {
        Err(e) if e.code() == Some(codes::LEASE_HELD) => println!("bob, no wait → {e}"),
        other => println!("bob, no wait → {other:?}"),
    }

    // Bob queues behind alice; her release hands it over at once.
    let bob_leases = bob.lease();
    let waiting = tokio::spawn(async move {
        bob_leases
            .acquire_wait(ROUTE, "bob", TTL, Duration::from_secs(10))
            .await
    });
    while alice.lease().query(ROUTE).await?.waiters() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = alice.lease().query(ROUTE).await?;
    println!(
        "query: held by {:?}, {} waiting",
        status.holder().map(|h| h.owner()),
        status.waiters()
    );
    lease.release().await?;
    let bobs = waiting.await??;
    println!(
        "bob was granted it with token {} (larger: a stale alice can be fenced off)",
        bobs.fencing_token()
    );

    let listed: Vec<_> = alice.lease().list("lease://demo/**").try_collect().await?;
    for held in &listed {
        println!(
            "list: {} held by {} since {}, {:?} left",
            held.route(),
            held.owner(),
            held.acquired_at(),
            held.expires_in()
        );
    }
    // (Dropping a Lease would release it too, in the background.)
    bobs.release().await?;

    // A managed lease: renewed every TTL/3 while the work runs, released
    // after; the work is cancelled if ownership is lost.
    let out = alice
        .lease()
        .with_lease(ROUTE, "alice", Duration::from_secs(3), |own| async move {
            println!(
                "alice runs the job under token {} (renewed in the background)",
                own.fencing_token()
            );
            tokio::time::sleep(Duration::from_secs(4)).await;
            "job done"
        })
        .await;
    match out {
        Ok(msg) => println!("with_lease → {msg}; the lease was kept past its 3 s TTL"),
        Err(WithLeaseError::Lost(lost)) => println!("with_lease → {lost}"),
        Err(e) => println!("with_lease → {e}"),
    }

    // The subscription saw every change of holder.
    let mut seen = 0;
    while let Ok(Some(change)) =
        tokio::time::timeout(Duration::from_millis(200), changes.next()).await
    {
        let change = change?;
        seen += 1;
        println!("change #{seen}: {}", change.route());
    }

    changes.unsubscribe().await?;
    alice.close().await;
    bob.close().await;
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    Ok(())
}

/// `FITZ_URL`, or the address of an embedded broker started here.
async fn broker_url() -> Result<(String, Option<Broker>), Box<dyn Error>> {
    if let Ok(url) = std::env::var("FITZ_URL") {
        return Ok((url, None));
    }
    let broker = Broker::builder().start().await?;
    println!("embedded broker on {}", broker.tcp_url());
    Ok((broker.tcp_url(), Some(broker)))
}

/// A client of the broker at `url`, presenting `FITZ_TOKEN` if set.
async fn connect(url: &str) -> Result<Client, Box<dyn Error>> {
    let token = std::env::var("FITZ_TOKEN").unwrap_or_default();
    let client = Client::builder(url, StaticToken::new(token)).build()?;
    client.connect_when_ready(Duration::from_secs(10)).await?;
    Ok(client)
}
