//! A tour of fitz: one client, all seven domains of the Fitz broker.
//!
//! ```text
//! cargo run -p fitz --example tour
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example tour
//! FITZ_URL=ws://127.0.0.1:4090/ws FITZ_TOKEN=$(scripts/dev-token.sh) cargo run -p fitz --example tour
//! ```
//!
//! Without `FITZ_URL` the tour starts the embedded broker (`fitz-broker`) in
//! this process: anonymous, in memory, and on a manual clock that it moves
//! forward to make a cron schedule fire at once. With `FITZ_URL` it runs
//! against that broker (presenting `FITZ_TOKEN`, if set) and waits for the
//! next whole minute instead.
//!
//! Every domain has a longer example of its own next to this one:
//! `cargo run -p fitz --example kv` (or `queue`, `rpc`, `lease`, `notice`,
//! `stream`, `schedule`).

use std::error::Error;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fitz::kv::{Durability, TxMode};
use fitz::rpc::HandlerError;
use fitz::schedule::DeliveryMode;
use fitz::stream::{AppendOptions, Filter, ReadOptions, StreamItem};
use fitz::{Client, StaticToken, codes};
use fitz_broker::{Broker, Clock};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

type Result<T = (), E = Box<dyn Error>> = std::result::Result<T, E>;

#[tokio::main]
async fn main() -> Result {
    let started = Instant::now();

    // The broker named by FITZ_URL, or one embedded in this process.
    let (url, embedded) = match std::env::var("FITZ_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let broker = Broker::builder()
                .clock(Clock::manual(SystemTime::now()))
                .start()
                .await?;
            println!("started an embedded broker on {}", broker.tcp_url());
            (broker.tcp_url(), Some(broker))
        }
    };
    let client = connect(&url, "tour").await?;
    let capabilities = client.server_capabilities().unwrap_or_default();
    println!("connected to {url}; the broker supports {capabilities:?}");

    // Names for what outlives this run on a broker with durable storage.
    let run = format!(
        "{:x}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
    );

    kv(&client).await?;
    queue(&client).await?;
    rpc(&client).await?;
    lease(&client, &url).await?;
    notice(&client).await?;
    stream(&client, &run).await?;
    schedule(&client, embedded.as_ref(), &run).await?;

    client.close().await;
    if let Some(broker) = embedded {
        broker.shutdown().await;
    }
    println!("\ntour finished in {:.1?}", started.elapsed());
    Ok(())
}

/// A client of the broker at `url`, presenting `FITZ_TOKEN` (anonymous
/// without it). The client reconnects by itself if the connection drops.
async fn connect(url: &str, name: &str) -> Result<Client> {
    let token = std::env::var("FITZ_TOKEN").unwrap_or_default();
    let client = Client::builder(url, StaticToken::new(token))
        .service_name(name)
        .build()?;
    client.connect_when_ready(Duration::from_secs(10)).await?;
    Ok(client)
}

// ----- KV -----

#[derive(Debug, Serialize, Deserialize)]
struct Cart {
    items: u32,
}

/// A read-write transaction holds its resource until it commits, and a
/// subscription hears about the commit.
async fn kv(client: &Client) -> Result {
    section("KV", "transactions and change subscriptions");
    let kv = client.kv();
    let mut changes = kv.subscribe("kv://tour/shop/*").await?;

    let mut tx = kv.begin("kv://tour/shop/carts", TxMode::ReadWrite).await?;
    tx.put_json("cart:ada", &Cart { items: 3 }).await?;
    tx.put_json("cart:bob", &Cart { items: 1 }).await?;
    // INSERT never overwrites. A refusal is an error with the broker's code,
    // and the transaction carries on.
    match tx.insert_json("cart:ada", &Cart { items: 99 }).await {
        Err(e) if e.code() == Some(codes::KV_KEY_EXISTS) => {
            println!("  insert cart:ada → refused, the key exists")
        }
        other => other?,
    }
    tx.commit(Durability::Sync).await?;
    println!("  committed cart:ada and cart:bob to kv://tour/shop/carts");

    let change = next(&mut changes, Duration::from_secs(5)).await?;
    println!(
        "  subscription: {} changed ({} writes)",
        change.route(),
        change.mutation_count()
    );

    // Readers get a snapshot and take no lock.
    let mut snapshot = kv.begin("kv://tour/shop/carts", TxMode::ReadOnly).await?;
    let ada: Option<Cart> = snapshot.get_json("cart:ada").await?;
    println!("  read-only transaction: cart:ada = {ada:?}");
    snapshot.rollback().await?;
    Ok(())
}

// ----- Queue -----

#[derive(Serialize, Deserialize)]
struct Resize {
    photo: String,
    width: u32,
}

/// Jobs wait in a durable queue until a worker takes them.
async fn queue(client: &Client) -> Result {
    section("Queue", "jobs processed by a worker");
    let queue = client.queue();
    for photo in ["beach.jpg", "cat.png", "dog.png"] {
        let job = Resize {
            photo: photo.into(),
            width: 640,
        };
        let id = queue
            .enqueue_json("queue://tour/photos/resize", &job)
            .await?;
        println!("  enqueued {photo} as message {id}");
    }

    // Two jobs at a time. The worker keeps each job's lease alive while the
    // handler runs and completes the message when it returns Ok; an Err
    // leaves the message to be delivered again.
    let worker = queue
        .worker_json("queue://tour/photos/resize", 2, |job: Resize| async move {
            println!("  worker: {} resized to {} px", job.photo, job.width);
            Ok::<_, std::io::Error>(())
        })
        .await?;
    let mut stats = worker.watch_stats();
    tokio::time::timeout(
        Duration::from_secs(10),
        stats.wait_for(|s| s.completed >= 3),
    )
    .await??;
    let stats = worker.shutdown().await;
    println!(
        "  worker stopped: {} completed, {} failed",
        stats.completed, stats.failed
    );
    Ok(())
}

// ----- RPC -----

/// A call goes to one worker whose pattern matches its route; the answer is
/// one chunk or a stream of them.
async fn rpc(client: &Client) -> Result {
    section("RPC", "calls served by workers");
    let rpc = client.rpc();

    // JSON in, JSON out.
    let adder = rpc
        .serve_json(
            "rpc://tour/math/add",
            8,
            |(a, b): (i64, i64), _request| async move { Ok::<_, HandlerError>(a + b) },
        )
        .await?;
    // Chunks first, then the final answer.
    let countdown = rpc
        .serve("rpc://tour/launch/countdown", 8, |request| async move {
            let chunks = request.stream();
            for n in (1..=3).rev() {
                chunks.send(n.to_string()).await?;
            }
            Ok::<_, HandlerError>("liftoff")
        })
        .await?;

    let sum: i64 = rpc.request_json("rpc://tour/math/add", &(2, 3)).await?;
    println!("  rpc://tour/math/add (2, 3) → {sum}");

    let mut call = rpc.call("rpc://tour/launch/countdown", "").await?;
    print!("  rpc://tour/launch/countdown →");
    while let Some(chunk) = call.next().await {
        print!(" {}", String::from_utf8_lossy(&chunk?));
    }
    println!();

    adder.shutdown().await?;
    countdown.shutdown().await?;
    Ok(())
}

// ----- Lease -----

/// One owner at a time. Every new owner gets a larger fencing token, so a
/// storage system that remembers the largest token it saw can refuse the
/// late writes of an owner that lost the lease without knowing it.
async fn lease(client: &Client, url: &str) -> Result {
    section("Lease", "exclusive ownership with fencing tokens");
    const NIGHTLY: &str = "lease://tour/reports/nightly";
    let ttl = Duration::from_secs(30);
    // Two contenders: usually two processes, here two clients.
    let alice = client.lease();
    let bob_client = connect(url, "tour-bob").await?;
    let bob = bob_client.lease();

    let alices = alice.acquire(NIGHTLY, "alice", ttl).await?;
    println!(
        "  alice holds {NIGHTLY}, fencing token {}",
        alices.fencing_token()
    );

    // Bob queues behind alice for up to ten seconds …
    let waiting = tokio::spawn(async move {
        bob.acquire_wait(NIGHTLY, "bob", ttl, Duration::from_secs(10))
            .await
    });
    while alice.query(NIGHTLY).await?.waiters() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("  bob is waiting for it");

    // … and alice's release hands the lease over at once.
    let alices_token = alices.fencing_token();
    alices.release().await?;
    let bobs = waiting.await??;
    println!(
        "  alice released it; bob holds it now, fencing token {} > {alices_token}",
        bobs.fencing_token()
    );
    bobs.release().await?;
    bob_client.close().await;
    Ok(())
}

// ----- Notice -----

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
}

/// A notice goes to every matching subscription that is listening right now
/// (and to nobody else: notices are not stored).
async fn notice(client: &Client) -> Result {
    section("Notice", "fire-and-forget fan-out");
    let notice = client.notice();
    let mut billing = notice.subscribe("notice://tour/orders/*").await?;
    let mut audit = notice.subscribe("notice://tour/**").await?;

    notice
        .publish_json("notice://tour/orders/created", &Order { id: 42 })
        .await?;
    println!("  published order 42 to notice://tour/orders/created");
    for (name, subscription) in [("billing", &mut billing), ("audit", &mut audit)] {
        let message = next(subscription, Duration::from_secs(5)).await?;
        let order: Order = message.json()?;
        println!(
            "  {name} ({}) got order {}",
            subscription.pattern(),
            order.id
        );
    }
    Ok(())
}

// ----- Stream -----

/// Records are appended in batches that become visible atomically; readers
/// choose where to start and which records they want.
async fn stream(client: &Client, run: &str) -> Result {
    section("Stream", "an append-only log and a filtered read");
    let streams = client.stream();
    let order = format!("stream://tour/orders/order-{run}");

    let mut session = streams.begin(&order).await?;
    for event in ["created", "paid", "packed", "shipped"] {
        let options = AppendOptions::new().discriminator(event);
        session.append_with(event, options).await?;
    }
    let committed = session.commit(Durability::Sync).await?;
    if let Some(offsets) = committed.offsets() {
        println!("  appended 4 events to {order}: {}", span(offsets));
    }

    // Filtering happens in the broker. What it withholds comes back as a
    // marker, so a reader's position still moves past it.
    let money = ReadOptions::new().filter(Filter::new().any_of(["paid", "refunded"]));
    let page = streams.read_page(&order, 0, &money).await?;
    for item in page.items() {
        match item {
            StreamItem::Record(r) => {
                println!("  #{} {}", r.offset(), String::from_utf8_lossy(r.body()))
            }
            StreamItem::Filtered(f) => println!("  {} filtered out", span(f.offsets())),
        }
    }
    println!("  continue from offset {}", page.next_offset());
    Ok(())
}

// ----- Schedule -----

#[derive(Serialize, Deserialize)]
struct Report {
    name: String,
}

/// The broker fires cron schedules to the subscriptions listening when they
/// are due (a fire nobody hears is skipped, not queued).
async fn schedule(client: &Client, embedded: Option<&Broker>, run: &str) -> Result {
    section("Schedule", "cron schedules fired by the broker");
    let schedule = client.schedule();
    let minutely = format!("schedule://tour/reports/{run}/run");

    let mut fires = schedule.subscribe(&minutely).await?;
    let report = Report {
        name: "minutely".into(),
    };
    schedule
        .create_json(&minutely, "* * * * *", DeliveryMode::Broadcast, &report)
        .await?;
    println!("  created {minutely}, cron \"* * * * *\" (every minute, UTC)");

    match embedded {
        Some(broker) => {
            println!("  moving the embedded broker's clock one minute ahead");
            broker.clock().advance(Duration::from_secs(60));
        }
        None => println!("  waiting for the next whole minute …"),
    }
    let fire = next(&mut fires, Duration::from_secs(75)).await?;
    let fired: Report = fire.json()?;
    println!("  fired: {} with report {:?}", fire.route(), fired.name);

    schedule.cancel(&minutely).await?;
    println!("  cancelled it");
    Ok(())
}

// ----- helpers -----

fn section(domain: &str, what: &str) {
    println!("\n{domain}: {what}");
}

/// `#4` or `#0–3`.
fn span(offsets: std::ops::RangeInclusive<u64>) -> String {
    match offsets.into_inner() {
        (first, last) if first == last => format!("#{first}"),
        (first, last) => format!("#{first}–{last}"),
    }
}

/// The next item of a subscription, or an error when none comes `within`.
async fn next<T>(
    subscription: &mut (impl Stream<Item = fitz::Result<T>> + Unpin),
    within: Duration,
) -> Result<T> {
    match tokio::time::timeout(within, subscription.next()).await {
        Ok(Some(item)) => Ok(item?),
        Ok(None) => Err("the subscription ended".into()),
        Err(_) => Err(format!("nothing arrived within {within:?}").into()),
    }
}
