//! Pub/sub probe for profiling: one publisher → one subscriber on the
//! embedded broker over TCP.
//!
//! `notice_probe [size] [count] [split]`: `count` publishes of `size` bytes,
//! at most 16 awaiting their acknowledgement and 48 published but not yet
//! delivered (the `tput_notice_*` arrangement). With `split` the subscriber
//! runs on its own current-thread runtime on a second thread, so the
//! publisher's and the subscriber's client costs are not summed on one
//! thread.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fitz_bench::{Env, Transport, windowed};
use futures_util::StreamExt;
use tokio::sync::Semaphore;

const WINDOW: usize = 48;
const PUBLISHING: usize = 16;

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(32);
    let n: u64 = args.next().map(|s| s.parse().unwrap()).unwrap_or(200_000);
    let split = args.next().as_deref() == Some("split");
    let env = Env::start();
    let t = Transport::Tcp;
    let publisher = env.ours(t);
    let route = "notice://bench/probe/ev";
    let payload = Bytes::from(vec![7u8; size]);
    let window = Arc::new(Semaphore::new(WINDOW));
    let notice = publisher.notice();
    let publish = |window: Arc<Semaphore>| {
        let (notice, payload) = (&notice, &payload);
        windowed(n, PUBLISHING, move |_| {
            let window = window.clone();
            async move {
                window.acquire().await.unwrap().forget();
                notice.publish(route, payload.clone()).await.unwrap();
            }
        })
    };
    let elapsed = if split {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let url = t.url(&env.broker);
        let w = window.clone();
        let sub_thread = std::thread::spawn(move || {
            let rt = fitz_bench::client_runtime();
            rt.block_on(async move {
                let c = fitz::Client::builder(url, fitz::StaticToken::anonymous())
                    .build()
                    .unwrap();
                c.connect().await.unwrap();
                let mut sub = c.notice().subscribe(route).await.unwrap();
                ready_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                for _ in 0..n {
                    sub.next().await.unwrap().unwrap();
                    w.add_permits(1);
                }
                drop(sub);
                c.close().await;
            })
        });
        ready_rx.recv().unwrap();
        go_tx.send(()).unwrap();
        let started = Instant::now();
        env.rt.block_on(publish(window.clone()));
        sub_thread.join().unwrap();
        started.elapsed()
    } else {
        let subscriber = env.ours(t);
        let mut sub = env
            .rt
            .block_on(subscriber.notice().subscribe(route))
            .unwrap();
        env.rt.block_on(async {
            let started = Instant::now();
            let receive = async {
                for _ in 0..n {
                    sub.next().await.unwrap().unwrap();
                    window.add_permits(1);
                }
            };
            tokio::join!(publish(window.clone()), receive);
            started.elapsed()
        })
    };
    println!(
        "size {size} split {split}: {n} notices in {elapsed:?} ({:.0} msg/s)",
        n as f64 / elapsed.as_secs_f64()
    );
}
