//! The command tree (clap derive). Every leaf is one subcommand; the
//! integration tests walk this tree and require a test for each leaf.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `fitz`: every Fitz domain from the shell, a load generator and a dev broker.
#[derive(Debug, Parser)]
#[command(name = "fitz", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Connection and output options shared by every command.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Commands,
}

/// Options accepted before or after any subcommand.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Broker URL (`tcp://host:port`, `ws://host:port/ws`, `tls://…`, `wss://…`).
    /// Overrides the context's.
    #[arg(long, env = "FITZ_URL", global = true)]
    pub url: Option<String>,
    /// Bearer token (JWT). Overrides `--token-file` and the context's.
    #[arg(long, env = "FITZ_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token (read at every connection attempt).
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Named context to use instead of the current one (see `fitz context`).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// One JSON object per line instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Bound on connecting (transport, handshake), e.g. `500ms`, `5s`.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Bound on each request, e.g. `30s`.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Named connection settings saved in the user's config directory.
    #[command(subcommand)]
    Context(ContextCmd),
    /// Run the embedded broker in the foreground (the flags and `FITZ_*`
    /// variables of `fitz-broker`; `fitz broker --help` lists them).
    #[command(disable_help_flag = true)]
    Broker(BrokerArgs),
    /// Key-value transactions, scans and change notifications.
    #[command(subcommand)]
    Kv(KvCmd),
    /// Work queues: enqueue, availability counters, consume.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Request/response: call a route, or serve one.
    #[command(subcommand)]
    Rpc(RpcCmd),
    /// Exclusive leases with fencing tokens.
    #[command(subcommand)]
    Lease(LeaseCmd),
    /// Fire-and-forget fan-out.
    #[command(subcommand)]
    Notice(NoticeCmd),
    /// Durable append-only logs.
    #[command(subcommand)]
    Stream(StreamCmd),
    /// Durable cron schedules.
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Load generator: throughput and a latency histogram.
    #[command(subcommand)]
    Bench(BenchCmd),
}

/// `fitz context …`
#[derive(Debug, Subcommand)]
pub enum ContextCmd {
    /// Save (or replace) a named context.
    Add {
        /// Context name.
        name: String,
        /// Broker URL of the context.
        #[arg(long = "server", value_name = "URL")]
        server: String,
        /// Token stored in the context (prefer `--token-path`).
        #[arg(long = "bearer", value_name = "TOKEN")]
        bearer: Option<String>,
        /// Token file the context reads at every connection.
        #[arg(long = "token-path", value_name = "PATH")]
        token_path: Option<PathBuf>,
        /// Also make it the current context.
        #[arg(long = "select")]
        select: bool,
    },
    /// Make a context the current one.
    Use {
        /// Context name.
        name: String,
    },
    /// List the contexts (`*` marks the current one).
    Ls,
}

/// `fitz broker [fitz-broker flags]`
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Flags passed to the broker's own parser (`--tcp-port 4091`, …).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<String>,
}

/// Where a body comes from: the argument, `--file`, or standard input.
#[derive(Debug, Args, Clone)]
pub struct BodyArgs {
    /// The body; omit it (or give `-`) to read standard input.
    pub body: Option<String>,
    /// Read the body from this file (binary-safe).
    #[arg(long, short = 'f', value_name = "PATH", conflicts_with = "body")]
    pub file: Option<PathBuf>,
}

/// Stop after this many items (default: until Ctrl-C).
#[derive(Debug, Args, Clone, Copy)]
pub struct CountArg {
    /// Stop after this many items (default: until Ctrl-C).
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
}

/// `fitz kv …`
#[derive(Debug, Subcommand)]
pub enum KvCmd {
    /// Read one key.
    Get {
        /// `kv://realm/area/resource`
        route: String,
        /// Key.
        key: String,
    },
    /// Write one key (create or replace).
    Put {
        /// `kv://realm/area/resource`
        route: String,
        /// Key.
        key: String,
        /// Value source.
        #[command(flatten)]
        value: BodyArgs,
    },
    /// Write one key that must not exist yet.
    Insert {
        /// `kv://realm/area/resource`
        route: String,
        /// Key.
        key: String,
        /// Value source.
        #[command(flatten)]
        value: BodyArgs,
    },
    /// Delete one key.
    Del {
        /// `kv://realm/area/resource`
        route: String,
        /// Key.
        key: String,
    },
    /// List keys and values in order.
    Scan {
        /// `kv://realm/area/resource`
        route: String,
        /// Only keys with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// At most this many entries.
        #[arg(long)]
        limit: Option<u64>,
        /// Descending key order.
        #[arg(long)]
        reverse: bool,
    },
    /// Print commits to resources matching a pattern.
    Watch {
        /// `kv://…` pattern (`*`, `**` allowed).
        pattern: String,
        /// Stop condition.
        #[command(flatten)]
        count: CountArg,
    },
}

/// `fitz queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Append a message.
    Enqueue {
        /// `queue://realm/area/resource`
        route: String,
        /// Body source.
        #[command(flatten)]
        body: BodyArgs,
        /// Deliver no earlier than this from now (e.g. `10s`).
        #[arg(long, value_parser = parse_duration)]
        delay: Option<Duration>,
    },
    /// Print availability counters (ready, delayed, in flight) as they change.
    Watch {
        /// `queue://…` pattern.
        pattern: String,
        /// Stop condition.
        #[command(flatten)]
        count: CountArg,
    },
    /// Reserve messages one at a time; print them (or run a command with the
    /// body on stdin) and complete each on success.
    Consume {
        /// `queue://realm/area/resource`
        route: String,
        /// Shell command run per message (`sh -c`), body on stdin; the message
        /// is completed only when it exits 0.
        #[arg(long)]
        exec: Option<String>,
        /// Reservation lease per message.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        lease: Duration,
        /// Stop condition.
        #[command(flatten)]
        count: CountArg,
    },
}

/// `fitz rpc …`
#[derive(Debug, Subcommand)]
pub enum RpcCmd {
    /// Send a request and print the response.
    Call {
        /// `rpc://…` route.
        route: String,
        /// Body source.
        #[command(flatten)]
        body: BodyArgs,
        /// Deadline of the call (default: the request timeout).
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Answer requests: echo the body, or run a command per request.
    Serve {
        /// `rpc://…` pattern.
        pattern: String,
        /// Shell command (`sh -c`) per request, body on stdin, its stdout the
        /// response; a non-zero exit fails the request.
        #[arg(long)]
        exec: Option<String>,
        /// Requests handled at once.
        #[arg(long, default_value_t = 16)]
        max_concurrent: u32,
        /// Stop condition.
        #[command(flatten)]
        count: CountArg,
    },
}

/// `fitz lease …`
#[derive(Debug, Subcommand)]
pub enum LeaseCmd {
    /// Acquire a lease: print it and release (a probe), hold it with
    /// `--hold` until Ctrl-C, or run a command under it (after `--`).
    Acquire {
        /// `lease://realm/area/resource`
        route: String,
        /// Owner id (default: `fitz-<host pid>`).
        #[arg(long)]
        owner: Option<String>,
        /// Lease TTL; renewed every TTL/3 while held.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        ttl: Duration,
        /// Queue for the lease up to this long when someone else holds it.
        #[arg(long, value_parser = parse_duration)]
        wait: Option<Duration>,
        /// Hold (and renew) until Ctrl-C.
        #[arg(long, conflicts_with = "command")]
        hold: bool,
        /// Command run under the lease; released when it exits.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Who holds a lease and how many wait.
    Query {
        /// `lease://realm/area/resource`
        route: String,
    },
    /// Held leases matching a pattern.
    Ls {
        /// `lease://…` pattern.
        #[arg(default_value = "lease://**")]
        pattern: String,
    },
    /// Follow the held leases matching a selector (the inventory observer):
    /// one snapshot each time the inventory is re-listed, until Ctrl-C.
    Observe {
        /// `lease://…` selector.
        #[arg(default_value = "lease://**")]
        selector: String,
        /// Shortest lease TTL the application uses: sets the backstop LIST
        /// interval to clamp(ttl / 2, 5 s, 60 s). Default: every 60 s.
        #[arg(long, value_parser = parse_duration)]
        expected_ttl: Option<Duration>,
        /// Stop condition (snapshots printed).
        #[command(flatten)]
        count: CountArg,
    },
}

/// `fitz notice …`
#[derive(Debug, Subcommand)]
pub enum NoticeCmd {
    /// Publish one notice.
    Pub {
        /// `notice://…` route.
        route: String,
        /// Body source.
        #[command(flatten)]
        body: BodyArgs,
    },
    /// Print notices matching a pattern until Ctrl-C.
    Sub {
        /// `notice://…` pattern.
        pattern: String,
        /// Stop condition.
        #[command(flatten)]
        count: CountArg,
    },
}

/// Broker-side discriminator filter of stream reads.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only records whose discriminator equals one of these.
    #[arg(long = "eq", value_name = "DISCRIMINATOR")]
    pub equals: Vec<String>,
    /// Only records whose discriminator starts with this.
    #[arg(long = "prefix", value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Skip records whose discriminator equals this.
    #[arg(long = "not-eq", value_name = "DISCRIMINATOR")]
    pub not_equals: Option<String>,
}

/// `fitz stream …`
#[derive(Debug, Subcommand)]
pub enum StreamCmd {
    /// Append one record (committed at once).
    Append {
        /// `stream://realm/area/resource`
        route: String,
        /// Body source.
        #[command(flatten)]
        body: BodyArgs,
        /// Discriminator (what filters match).
        #[arg(long, short = 'd')]
        discriminator: Option<String>,
    },
    /// Read committed records from an offset.
    Read {
        /// `stream://…` selector (a resource, or a wildcard scope).
        selector: String,
        /// First offset.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many records.
        #[arg(long)]
        limit: Option<u64>,
        /// Filter.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Read from an offset and follow new records live.
    Tail {
        /// `stream://…` selector.
        selector: String,
        /// First offset (default: after the last record).
        #[arg(long)]
        from: Option<u64>,
        /// Filter.
        #[command(flatten)]
        filter: FilterArgs,
        /// Stop condition.
        #[command(flatten)]
        count: CountArg,
    },
    /// The last record of a resource.
    Last {
        /// `stream://realm/area/resource`
        route: String,
    },
    /// Offsets, counts and limits of a resource.
    Meta {
        /// `stream://realm/area/resource`
        route: String,
    },
}

/// Delivery of a schedule's fires.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// One subscription per fire, round-robin.
    Single,
    /// Every matching subscription.
    Broadcast,
}

/// `fitz schedule …`
#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Create or replace a schedule.
    Create {
        /// `schedule://realm/area/resource/operation`
        route: String,
        /// Cron expression, 5 fields, UTC (quote it).
        cron: String,
        /// Payload source.
        #[command(flatten)]
        payload: BodyArgs,
        /// Delivery mode.
        #[arg(long, value_enum, default_value = "single")]
        mode: Mode,
    },
    /// List schedules.
    Ls {
        /// Only routes matching this pattern.
        pattern: Option<String>,
    },
    /// Delete a schedule.
    Cancel {
        /// `schedule://…` route.
        route: String,
    },
    /// Print fires of schedules matching a pattern.
    Watch {
        /// `schedule://…` pattern.
        pattern: String,
        /// Stop condition.
        #[command(flatten)]
        count: CountArg,
    },
}

/// Load shape shared by the bench commands.
#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Connections (each its own client).
    #[arg(long, default_value_t = 1)]
    pub clients: u32,
    /// Operations in flight per client.
    #[arg(long, default_value_t = 16)]
    pub depth: u32,
    /// Body size in bytes.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Total operations (ignored with `--duration`).
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Run for this long instead of a count (e.g. `10s`).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Route (default: a per-run route of the domain).
    #[arg(long)]
    pub route: Option<String>,
}

/// `fitz bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Publish notices (with one live subscriber counting deliveries).
    Notice(BenchArgs),
    /// RPC calls to an echo worker this process serves.
    Rpc(BenchArgs),
    /// KV put transactions (begin, put, commit).
    Kv(BenchArgs),
    /// Queue enqueues.
    Queue(BenchArgs),
}

/// Parses `250ms`, `5s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 5s, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}` (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
