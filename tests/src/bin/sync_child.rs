//! The child process of the outbox crash test (`tests/tests/it/sync_crash.rs`):
//! opens an outbox on a redb file, pushes entries and flushes them, printing
//! one progress line per step so the parent can SIGKILL it at chosen points.
//!
//! ```text
//! sync_child <broker url> <store file> <kv route> <stream route> <run> <count>
//! ```
//!
//! Each push `i` of run `r` has the id `r.i` (unique across restarts): a
//! named mutation `mark` on the KV route (counter += 1 and `seen/<id>` put,
//! in one transaction), then a one-record append of `<id>` on the stream
//! route. Lines on stdout:
//!
//! * `open <pending>`: the outbox opened; `<pending>` entries were left by
//!   earlier runs.
//! * `pushed <id>`: both entries of `<id>` are durable in the store.
//! * `synced <seq>`: an entry was applied on the broker and left the outbox.
//! * `failed <seq> <error>`: an entry went to the dead letter.
//! * `idle`: nothing is pending (printed before a clean exit).
//!
//! `FITZ_SYNC_UNCHECKED_MARKER=1` switches the marker check off (the test
//! then fails: entries applied twice). Exits 2 on bad arguments or errors.

use fitz::sync::{Mutation, Outbox, RedbStore, StreamAppend, SyncEvent};

struct Args {
    url: String,
    store: String,
    kv: String,
    stream: String,
    run: u64,
    count: u64,
}

fn args() -> Result<Args, String> {
    let v: Vec<String> = std::env::args().skip(1).collect();
    let [url, store, kv, stream, run, count] = v.as_slice() else {
        return Err(
            "usage: sync_child <url> <store> <kv route> <stream route> <run> <count>".into(),
        );
    };
    Ok(Args {
        url: url.clone(),
        store: store.clone(),
        kv: kv.clone(),
        stream: stream.clone(),
        run: run.parse().map_err(|e| format!("run: {e}"))?,
        count: count.parse().map_err(|e| format!("count: {e}"))?,
    })
}

fn number(v: Option<impl AsRef<[u8]>>) -> u64 {
    v.and_then(|b| std::str::from_utf8(b.as_ref()).ok()?.parse().ok())
        .unwrap_or(0)
}

async fn run(a: Args) -> Result<(), String> {
    let client = fitz_tests::anon_builder(&a.url)
        .build()
        .map_err(|e| e.to_string())?;
    let store = RedbStore::open(&a.store).map_err(|e| e.to_string())?;
    let mut builder = Outbox::builder(client.clone(), store).handler("mark", |tx, id| {
        Box::pin(async move {
            let n = number(tx.get("counter").await?);
            tx.put("counter", (n + 1).to_string()).await?;
            let mut key = b"seen/".to_vec();
            key.extend_from_slice(&id);
            tx.put(key, "1").await?;
            Ok(())
        })
    });
    if std::env::var_os("FITZ_SYNC_UNCHECKED_MARKER").is_some() {
        builder = builder.unchecked_marker_for_tests();
    }
    let outbox = builder.open().await.map_err(|e| e.to_string())?;
    let mut events = outbox.events();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            match e {
                SyncEvent::Synced { seq, .. } => println!("synced {seq}"),
                SyncEvent::Failed { seq, error, .. } => println!("failed {seq} {error}"),
                _ => {}
            }
        }
    });
    println!("open {}", outbox.status().pending());
    client.connect().await.map_err(|e| e.to_string())?;
    for i in 0..a.count {
        let id = format!("{}.{i}", a.run);
        outbox
            .mutate(&a.kv, "mark", id.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        outbox
            .push(&a.stream, Mutation::Append(vec![StreamAppend::new(&id)]))
            .await
            .map_err(|e| e.to_string())?;
        println!("pushed {id}");
    }
    outbox.wait_idle().await;
    let dead = outbox.dead_letters().await.map_err(|e| e.to_string())?;
    if let Some(d) = dead.first() {
        return Err(format!("dead letter: {d:?}"));
    }
    println!("idle");
    outbox.close().await;
    client.close().await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let result = match args() {
        Ok(a) => run(a).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("sync_child: {e}");
        std::process::exit(2);
    }
}
