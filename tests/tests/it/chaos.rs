//! The chaos suite's short form (seconds), run in CI: for each transport,
//! episodes of faults through the disconnect proxy — cuts, cuts right after
//! CONNECT, black holes both ways and one way, delays, clean restarts of the
//! embedded broker on local storage — against ledger-checked KV, Queue,
//! Stream and Lease workloads, with the client's subscription and worker
//! probed after every episode. See `fitz_tests::chaos` for the checks and
//! `scripts/soak.sh` for the long form against the broker binary.
//!
//! `FITZ_CHAOS_SEED` replays a run; `FITZ_CHAOS_SECS` lengthens it.

use std::time::Duration;

use fitz_tests::Transport;
use fitz_tests::chaos::{self, Config, TargetKind};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(transport: Transport) {
    if let Some(()) = fitz_tests::embedded_only("the chaos suite restarts its own broker") {
        let config = Config {
            transport,
            duration: Duration::from_secs(setting("FITZ_CHAOS_SECS", 3)),
            seed: setting("FITZ_CHAOS_SEED", 0x5EED) + transport as u64,
            target: TargetKind::Embedded,
            restarts: true,
        };
        let report = chaos::run(config).await;
        println!("{report}");
        assert!(report.ok(), "{report}");
        assert!(report.ledger.probes > 0, "{report}");
        let (acked, _, _) = report.ledger.kv.counts();
        assert!(acked > 0, "the KV workload made progress: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_over_tcp() {
    run(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_over_websocket() {
    run(Transport::Ws).await;
}
