//! The chaos suite's long form against the `fitz-broker` binary: SIGKILL
//! restarts on local storage, the broker's memory sampled from `/proc`, a
//! one-screen ledger summary per transport. Run by `scripts/soak.sh`.
//!
//! ```text
//! soak --broker target/release/fitz-broker [--secs 120] [--seed 1] [--transport tcp|ws|both]
//! ```
//!
//! Exits 1 when a check fails.

use std::path::PathBuf;
use std::time::Duration;

use fitz_tests::Transport;
use fitz_tests::chaos::{self, Config, TargetKind};

struct Args {
    broker: PathBuf,
    secs: u64,
    seed: u64,
    transports: Vec<Transport>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        broker: PathBuf::from("target/release/fitz-broker"),
        secs: 120,
        seed: 1,
        transports: Transport::BOTH.to_vec(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--broker" => a.broker = PathBuf::from(value()?),
            "--secs" => a.secs = value()?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--transport" => {
                a.transports = match value()?.as_str() {
                    "tcp" => vec![Transport::Tcp],
                    "ws" => vec![Transport::Ws],
                    "both" => Transport::BOTH.to_vec(),
                    other => return Err(format!("unknown transport {other}")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let mut ok = true;
    let per = a.secs / a.transports.len() as u64;
    for (i, t) in a.transports.iter().enumerate() {
        let report = chaos::run(Config {
            transport: *t,
            duration: Duration::from_secs(per.max(1)),
            seed: a.seed + i as u64,
            target: TargetKind::Binary(a.broker.clone()),
            restarts: true,
        })
        .await;
        println!("{report}");
        ok &= report.ok();
    }
    std::process::exit(if ok { 0 } else { 1 });
}
