//! The chaos workloads: each a loop of one operation at a time on the client
//! under attack, recording every outcome in the shared [`Ledger`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fitz::kv::{Durability, ScanOptions, TxMode};
use fitz::queue::ReserveOptions;
use fitz::stream::{ReadOptions, StreamItem};
use fitz::{Client, ErrorKind};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::ledger::{Ledger, Outcome};

/// Routes of one run (unique per seed).
#[derive(Debug, Clone)]
pub struct Routes {
    /// KV resources are `{kv}/r0` … `{kv}/r3`.
    pub kv: String,
    /// The queue.
    pub queue: String,
    /// The stream resource.
    pub stream: String,
    /// The lease.
    pub lease: String,
    /// Liveness notices.
    pub notice: String,
    /// The liveness RPC worker's route.
    pub rpc: String,
}

impl Routes {
    /// Routes under a realm named after `tag`.
    pub fn new(tag: &str) -> Routes {
        Routes {
            kv: format!("kv://{tag}/kv"),
            queue: format!("queue://{tag}/q/work"),
            stream: format!("stream://{tag}/s/log"),
            lease: format!("lease://{tag}/l/one"),
            notice: format!("notice://{tag}/live/probe"),
            rpc: format!("rpc://{tag}/live/echo"),
        }
    }

    /// The KV resource key `id` goes to.
    pub fn kv_resource(&self, id: u64) -> String {
        format!("{}/r{}", self.kv, id % 4)
    }
}

pub(super) type Shared = Arc<Mutex<Ledger>>;

fn id_of(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Writes key `k{id}` in one read-write transaction per operation,
/// committed with `Sync`. A failure before COMMIT is never applied (the
/// broker rolls the transaction back when its session ends).
pub(super) async fn kv(client: Client, routes: Routes, ledger: Shared, stop: CancellationToken) {
    let record = |l: &mut Ledger, id, outcome| l.kv.record(id, outcome);
    each_write(&stop, &ledger, record, |id| {
        let (client, route) = (&client, routes.kv_resource(id));
        async move {
            let mut tx = match client.kv().begin(&route, TxMode::ReadWrite).await {
                Ok(tx) => tx,
                Err(_) => return Outcome::NotApplied,
            };
            if tx.put(format!("k{id}"), id.to_string()).await.is_err() {
                return Outcome::NotApplied;
            }
            Outcome::of(&tx.commit(Durability::Sync).await)
        }
    })
    .await;
}

/// Runs `write` for ids 1, 2, … until `stop`, one at a time, recording each
/// outcome with `record`; backs off for a moment after anything but an
/// acknowledgement (the connection is probably down).
async fn each_write<F, Fut>(
    stop: &CancellationToken,
    ledger: &Shared,
    record: impl Fn(&mut Ledger, u64, Outcome),
    mut write: F,
) where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let mut id = 0u64;
    while !stop.is_cancelled() {
        id += 1;
        let outcome = write(id).await;
        record(&mut ledger.lock(), id, outcome);
        if outcome != Outcome::Acked {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Every key present in the KV resources, read through `client`.
pub(super) async fn kv_present(client: &Client, routes: &Routes) -> fitz::Result<BTreeSet<u64>> {
    let mut present = BTreeSet::new();
    for r in 0..4 {
        let mut tx = client
            .kv()
            .begin(&routes.kv_resource(r), TxMode::ReadOnly)
            .await?;
        let pairs: Vec<_> = tx.scan(ScanOptions::all()).collect().await;
        for pair in pairs {
            let (key, _) = pair?;
            if let Some(id) = key.strip_prefix(b"k").and_then(id_of) {
                present.insert(id);
            }
        }
        tx.rollback().await?;
    }
    Ok(present)
}

/// Enqueues messages whose bodies are their ids.
pub(super) async fn produce(
    client: Client,
    routes: Routes,
    ledger: Shared,
    stop: CancellationToken,
) {
    let record = |l: &mut Ledger, id, outcome| {
        l.queue.record(id, outcome);
        l.enqueued_at.insert(id, std::time::Instant::now());
    };
    each_write(&stop, &ledger, record, |id| {
        let enqueue = client.queue();
        let route = routes.queue.clone();
        async move { Outcome::of(&enqueue.enqueue(&route, id.to_string()).await) }
    })
    .await;
}

/// Reserves and completes; every delivery and confirmed completion goes in
/// the ledger. Runs until `stop`.
pub(super) async fn consume(
    client: Client,
    routes: Routes,
    ledger: Shared,
    stop: CancellationToken,
) {
    let options = ReserveOptions {
        lease: Duration::from_secs(5),
        batch: 16,
        wait: Duration::from_millis(200),
    };
    while !stop.is_cancelled() {
        let batch = match client.queue().reserve(&routes.queue, options).await {
            Ok(b) => b,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        for r in batch {
            let Some(id) = id_of(r.body()) else {
                ledger.lock().violations.push(format!(
                    "queue: a message that no producer wrote: {:?}",
                    r.body()
                ));
                continue;
            };
            ledger.lock().delivered(id);
            if r.complete().await.is_ok() {
                ledger.lock().completed(id);
            }
        }
    }
}

/// Appends one record per append session (body = id), committed with
/// `Sync`.
pub(super) async fn append(
    client: Client,
    routes: Routes,
    ledger: Shared,
    stop: CancellationToken,
) {
    let record = |l: &mut Ledger, id, outcome| l.stream.record(id, outcome);
    each_write(&stop, &ledger, record, |id| {
        let (client, route) = (&client, &routes.stream);
        async move {
            let mut s = match client.stream().begin(route).await {
                Ok(s) => s,
                Err(_) => return Outcome::NotApplied,
            };
            if s.append(id.to_string()).await.is_err() {
                return Outcome::NotApplied;
            }
            Outcome::of(&s.commit(Durability::Sync).await)
        }
    })
    .await;
}

/// Follows the stream from offset 0 across every fault, checking offsets run
/// on without gaps, repeats or reorders. Restarts the follow (from where it
/// got to) when it ends with an error.
pub(super) async fn follow(
    client: Client,
    routes: Routes,
    ledger: Shared,
    stop: CancellationToken,
) {
    let mut from = 0u64;
    while !stop.is_cancelled() {
        let mut reader = match client
            .stream()
            .follow(&routes.stream, from, ReadOptions::default())
            .await
        {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        loop {
            let item = tokio::select! {
                () = stop.cancelled() => return,
                item = reader.next() => item,
            };
            match item {
                Some(Ok(StreamItem::Record(rec))) => {
                    let id = id_of(rec.body()).unwrap_or(u64::MAX);
                    ledger.lock().followed(rec.offset(), id);
                    from = rec.offset() + 1;
                }
                Some(Ok(StreamItem::Filtered(_))) => {}
                Some(Err(_)) | None => break,
            }
        }
    }
}

/// The stream's records `(offset, id)` read through `client`, to the end.
pub(super) async fn stream_present(
    client: &Client,
    routes: &Routes,
) -> fitz::Result<Vec<(u64, u64)>> {
    let reader = client
        .stream()
        .read(&routes.stream, 0, ReadOptions::default())?;
    let items: Vec<_> = reader.collect().await;
    let mut out = Vec::new();
    for item in items {
        if let StreamItem::Record(rec) = item? {
            out.push((rec.offset(), id_of(rec.body()).unwrap_or(u64::MAX)));
        }
    }
    Ok(out)
}

/// Acquires and releases one lease over and over, recording fencing tokens.
pub(super) async fn lease(
    client: Client,
    routes: Routes,
    owner: String,
    ledger: Shared,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        match client
            .lease()
            .acquire(&routes.lease, &owner, Duration::from_secs(5))
            .await
        {
            Ok(l) => {
                ledger.lock().granted(l.fencing_token(), l.already_held());
                let _ = l.release().await;
            }
            Err(e) if e.kind() == ErrorKind::Broker => {
                // Held by our previous session until the broker sees it end.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}
