//! The `fitz-broker` binary: configuration from `FITZ_*` variables and
//! flags (see `--help`), graceful shutdown on Ctrl-C or SIGTERM.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use fitz_broker::{Broker, Clock, Command, Config};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config =
        match Config::from_env_and_args(|k| std::env::var(k).ok(), std::env::args().skip(1)) {
            Ok(Command::Run(c)) => *c,
            Ok(Command::Help) => {
                print!("{}", fitz_broker::config::help());
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("fitz-broker: {e}");
                return ExitCode::from(2);
            }
        };
    let filter = config.log_filter.as_deref().unwrap_or("info");
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fitz-broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let broker = match Broker::start(config, Clock::system()).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "fitz-broker listening: {} {}",
            broker.tcp_url(),
            broker.ws_url()
        );
        wait_for_signal().await;
        tracing::info!("shutting down");
        broker.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
