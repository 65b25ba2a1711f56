//! The `fitz` command-line tool: every Fitz domain from the shell, a live
//! tail, a load generator (`fitz bench`) and the embedded broker
//! (`fitz broker`). See `fitz --help` and the README's CLI section.
//!
//! Exit codes: 0 success, 1 broker or domain error (the message names the
//! code), 2 usage, 3 connection or authentication failure. Ctrl-C ends
//! subscriptions and workers cleanly (unsubscribe, release, close) with 0.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::Parser;

mod bench;
mod broker;
pub mod cli;
mod conn;
mod domains;
mod failure;
mod out;

pub use cli::Cli;
pub use failure::Failure;

/// Parses the command line, runs the command, and maps the outcome to the
/// exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let cli::Commands::Broker(args) = &cli.command {
        // The broker sets up its own logging and runtime.
        return broker::run(&args.args);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fitz: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(domains::dispatch(cli));
    // Do not wait for lingering blocking tasks (stdin readers).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("fitz: {f}");
            ExitCode::from(f.exit_code())
        }
    }
}
