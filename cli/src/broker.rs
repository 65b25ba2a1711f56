//! `fitz broker`: the embedded broker in the foreground, configured by
//! fitz-broker's own parser (`Config::from_env_and_args`): same flags, same
//! `FITZ_*` variables, same help.

use std::process::ExitCode;

use fitz_broker::{Broker, Clock, Command, Config};
use tracing_subscriber::EnvFilter;

/// Runs the broker until Ctrl-C or SIGTERM.
pub fn run(args: &[String]) -> ExitCode {
    let config = match Config::from_env_and_args(|k| std::env::var(k).ok(), args.iter().cloned()) {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Help) => {
            print!("{}", fitz_broker::config::help());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fitz broker: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = config.log_filter.as_deref().unwrap_or("info");
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fitz broker: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        crate::conn::install_signal_handlers();
        let broker = match Broker::start(config, Clock::system()).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("fitz broker: cannot start: {e}");
                return ExitCode::from(1);
            }
        };
        println!(
            "fitz broker listening: {} {}",
            broker.tcp_url(),
            broker.ws_url()
        );
        crate::conn::interrupted().await;
        broker.shutdown().await;
        ExitCode::SUCCESS
    })
}
