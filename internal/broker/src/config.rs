//! Broker configuration: embedding defaults ([`Config::default`]) and the
//! binary's environment + command line ([`Config::from_env_and_args`]),
//! using the real broker's `FITZ_*` names and defaults.
//!
//! Command-line flags override environment variables. The parser is written
//! by hand: a dozen `--name value` flags whose defaults and env fallbacks
//! need custom merging do not justify clap's build time and dependency tree
//! in a crate every test of the workspace compiles.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use fitz_protocol::frame::DEFAULT_MAX_FRAME;

use crate::auth::{self, AuthConfig, Family};
use crate::session::OutboundLimits;
use crate::storage::StorageMode;

/// Everything a broker needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address both listeners bind.
    pub bind_addr: IpAddr,
    /// Raw TCP port (0 = ephemeral).
    pub tcp_port: u16,
    /// HTTP port: `/ws`, probes (0 = ephemeral).
    pub http_port: u16,
    /// How CONNECT tokens are checked.
    pub auth: AuthConfig,
    /// Largest transport frame accepted (TCP prefix value / WS message size).
    pub max_frame: usize,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Where committed data lives.
    pub storage: StorageMode,
    /// Idle time after which a ReadWrite KV transaction is rolled back.
    pub kv_idle_transaction_ttl: Duration,
    /// Broker-side RPC request timeout; caller budgets are capped at it.
    pub rpc_request_timeout: Duration,
    /// Time a worker has to acknowledge an RPC cancellation before its
    /// session is closed (`FITZ_RPC_CANCELLATION_GRACE_MS`).
    pub rpc_cancellation_grace: Duration,
    /// Bounds of each session's outbound backlog.
    pub outbound: OutboundLimits,
    /// Bounds on connections and on what unfinished input may hold.
    pub limits: Limits,
    /// `tracing` filter for the binary (`RUST_LOG`); unused when embedded.
    pub log_filter: Option<String>,
}

/// Bounds on what clients can make the broker hold in memory: connections,
/// unfinished frames, uncommitted KV writes. The real broker has its own
/// limits; these variables are this broker's (see docs/ARCHITECTURE.md,
/// "Memory bounds").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once, TCP and HTTP together
    /// (`FITZ_MAX_CONNECTIONS`). A connection beyond it is closed as soon as
    /// it is accepted.
    pub max_connections: usize,
    /// Time a frame may take to arrive once its first byte has, after
    /// CONNECT (`FITZ_FRAME_TIMEOUT_SECS`; before CONNECT the connect timeout
    /// applies). A connection that sends part of a frame and stalls is
    /// closed with `frame timeout`.
    pub frame_timeout: Duration,
    /// Bytes of unfinished frames held across all connections
    /// (`FITZ_MAX_PENDING_INPUT_BYTES`, at least the largest frame). A connection in the middle of a
    /// frame reads on only while this budget has room; otherwise it waits
    /// (the kernel's flow control holds the sender) until others finish
    /// their frames or are closed by the frame timeout.
    pub max_pending_input: usize,
    /// Bytes of keys and values one uncommitted KV transaction may write
    /// (`FITZ_KV_TX_MAX_BYTES`). A write beyond it aborts the transaction:
    /// `1010` (the spec has no "transaction too large" code).
    pub kv_tx_max_bytes: usize,
    /// The same across every open KV transaction of the broker
    /// (`FITZ_KV_TX_TOTAL_BYTES`); a write beyond it aborts its
    /// transaction the same way.
    pub kv_tx_total_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            frame_timeout: Duration::from_secs(10),
            max_pending_input: 32 << 20,
            kv_tx_max_bytes: 8 << 20,
            kv_tx_total_bytes: 32 << 20,
        }
    }
}

/// Default connect deadline.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `FITZ_KV_IDLE_TRANSACTION_TTL_SECS`.
pub const DEFAULT_KV_IDLE_TTL: Duration = Duration::from_secs(300);
/// Default RPC request timeout.
pub const DEFAULT_RPC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `FITZ_RPC_CANCELLATION_GRACE_MS`.
pub const DEFAULT_RPC_CANCELLATION_GRACE: Duration = Duration::from_millis(5_000);

impl Default for Config {
    /// Embedding defaults: loopback, ephemeral ports, anonymous, memory.
    fn default() -> Self {
        Self {
            bind_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tcp_port: 0,
            http_port: 0,
            auth: AuthConfig::anonymous(),
            max_frame: DEFAULT_MAX_FRAME,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            storage: StorageMode::Memory,
            kv_idle_transaction_ttl: DEFAULT_KV_IDLE_TTL,
            rpc_request_timeout: DEFAULT_RPC_REQUEST_TIMEOUT,
            rpc_cancellation_grace: DEFAULT_RPC_CANCELLATION_GRACE,
            outbound: OutboundLimits::default(),
            limits: Limits::default(),
            log_filter: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start a broker.
    Run(Box<Config>),
    /// Print the `--help` text and exit.
    Help,
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// One setting: its flag, its environment variable, its help line.
struct Setting {
    flag: &'static str,
    env: &'static [&'static str],
    help: &'static str,
}

const SETTINGS: &[Setting] = &[
    Setting {
        flag: "bind-addr",
        env: &["FITZ_BIND_ADDR"],
        help: "Address both listeners bind [default: 0.0.0.0]",
    },
    Setting {
        flag: "http-port",
        env: &["FITZ_HTTP_PORT"],
        help: "HTTP port: /ws, /healthz, /readyz, /livez; 0 = ephemeral [default: 4090]",
    },
    Setting {
        flag: "tcp-port",
        env: &["FITZ_TCP_PORT"],
        help: "Raw TCP port; 0 = ephemeral [default: 4091]",
    },
    Setting {
        flag: "auth-required",
        env: &["FITZ_AUTH_REQUIRED"],
        help: "true: HS256 JWT required; false: anonymous, full access, family 1 [default: true]",
    },
    Setting {
        flag: "jwt-hmac-secret",
        env: &["FITZ_JWT_HMAC_SECRET"],
        help: "HS256 secret (required when auth is on)",
    },
    Setting {
        flag: "jwt-audiences",
        env: &["FITZ_JWT_AUDIENCES", "FITZ_JWT_AUDIENCE"],
        help: "Accepted aud values, comma separated (FITZ_JWT_AUDIENCE: legacy single value) [default: fitz,fitz-broker]",
    },
    Setting {
        flag: "route-family-map",
        env: &["FITZ_ROUTE_FAMILY_MAP"],
        help: "identity=family list, comma separated [default: dev=1]",
    },
    Setting {
        flag: "route-family-claim",
        env: &["FITZ_ROUTE_FAMILY_CLAIM"],
        help: "Claim holding the identity [default: tid]",
    },
    Setting {
        flag: "org-claim",
        env: &["FITZ_AUTH_ORG_CLAIM"],
        help: "Claim preferred over the family claim when present",
    },
    Setting {
        flag: "permissions-claim",
        env: &["FITZ_AUTH_PERMISSIONS_CLAIM"],
        help: "Claim holding permissions (3rd source)",
    },
    Setting {
        flag: "custom-claim",
        env: &["FITZ_AUTH_CUSTOM_CLAIM"],
        help: "Object claim whose .permissions is the 1st source",
    },
    Setting {
        flag: "role-claim",
        env: &["FITZ_AUTH_ROLE_CLAIM"],
        help: "Role array claim (4th source) [default: roles]",
    },
    Setting {
        flag: "storage-mode",
        env: &["FITZ_STORAGE_MODE"],
        help: "memory | local (a redb file under the storage path; `cloud` is not supported) [default: local]",
    },
    Setting {
        flag: "storage-path",
        env: &["FITZ_STORAGE_PATH"],
        help: "Data directory of local storage, created if missing [default: ./.fitz]",
    },
    Setting {
        flag: "kv-idle-transaction-ttl-secs",
        env: &["FITZ_KV_IDLE_TRANSACTION_TTL_SECS"],
        help: "Idle ReadWrite KV transactions are rolled back after this [default: 300]",
    },
    Setting {
        flag: "rpc-cancellation-grace-ms",
        env: &["FITZ_RPC_CANCELLATION_GRACE_MS"],
        help: "Time a worker has to acknowledge an RPC cancellation, 0-86400000; invalid values use the default [default: 5000]",
    },
    Setting {
        flag: "max-frame-bytes",
        env: &["FITZ_MAX_FRAME_BYTES"],
        help: "Largest transport frame accepted [default: 1048576]",
    },
    Setting {
        flag: "connect-timeout-secs",
        env: &["FITZ_CONNECT_TIMEOUT_SECS"],
        help: "Seconds a connection has to send CONNECT [default: 10]",
    },
    Setting {
        flag: "max-connections",
        env: &["FITZ_MAX_CONNECTIONS"],
        help: "Connections served at once (this broker's own limit) [default: 4096]",
    },
    Setting {
        flag: "frame-timeout-secs",
        env: &["FITZ_FRAME_TIMEOUT_SECS"],
        help: "Seconds a started frame may take to arrive (this broker's own limit) [default: 10]",
    },
    Setting {
        flag: "max-pending-input-bytes",
        env: &["FITZ_MAX_PENDING_INPUT_BYTES"],
        help: "Bytes of unfinished frames held across connections (this broker's own limit) [default: 33554432]",
    },
    Setting {
        flag: "kv-tx-max-bytes",
        env: &["FITZ_KV_TX_MAX_BYTES"],
        help: "Bytes one uncommitted KV transaction may write (this broker's own limit) [default: 8388608]",
    },
    Setting {
        flag: "kv-tx-total-bytes",
        env: &["FITZ_KV_TX_TOTAL_BYTES"],
        help: "Bytes all uncommitted KV transactions may write (this broker's own limit) [default: 33554432]",
    },
    Setting {
        flag: "log",
        env: &["RUST_LOG"],
        help: "tracing filter, e.g. info,fitz_broker=debug [default: info]",
    },
];

/// The `--help` text.
pub fn help() -> String {
    let mut s = String::from(
        "fitz-broker: an embeddable Fitz-compatible broker\n\n\
         Usage: fitz-broker [--flag value | --flag=value]...\n\n\
         Every flag overrides its environment variable.\n\n",
    );
    for set in SETTINGS {
        let flag = format!("--{} <value>", set.flag);
        s.push_str(&format!(
            "  {flag:<38} {}\n  {:<38} env: {}\n",
            set.help,
            "",
            set.env.join(", ")
        ));
    }
    s.push_str(&format!("  {:<38} Print this help\n", "-h, --help"));
    s
}

impl Config {
    /// Reads the binary's configuration: environment through `env`
    /// (`|k| std::env::var(k).ok()` in production), then flags from `args`
    /// (without the program name). Binary defaults follow the real broker:
    /// bind 0.0.0.0, ports 4090/4091, auth required, local storage in
    /// `./.fitz`.
    pub fn from_env_and_args<E, A, S>(env: E, args: A) -> Result<Command, ConfigError>
    where
        E: Fn(&str) -> Option<String>,
        A: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut flags: Vec<(&'static str, String)> = Vec::new();
        let mut it = args.into_iter().map(Into::into);
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                return Ok(Command::Help);
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(ConfigError(format!(
                    "unexpected argument {arg:?} (see --help)"
                )));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(set) = SETTINGS.iter().find(|s| s.flag == name) else {
                return Err(ConfigError(format!("unknown flag --{name} (see --help)")));
            };
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| ConfigError(format!("--{name} needs a value")))?,
            };
            flags.push((set.flag, value));
        }
        let get = |flag: &str| -> Option<String> {
            if let Some((_, v)) = flags.iter().rev().find(|(f, _)| *f == flag) {
                return Some(v.clone());
            }
            let set = SETTINGS.iter().find(|s| s.flag == flag)?;
            set.env
                .iter()
                .find_map(|k| env(k).filter(|v| !v.trim().is_empty()))
        };
        if env("FITZ_AUTH_ALLOW_JWT_ROUTE_FAMILY").is_some() {
            return Err(ConfigError(
                "FITZ_AUTH_ALLOW_JWT_ROUTE_FAMILY has been removed; use FITZ_ROUTE_FAMILY_MAP"
                    .into(),
            ));
        }

        let mut c = Config {
            bind_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            tcp_port: 4091,
            http_port: 4090,
            ..Config::default()
        };
        if let Some(v) = get("bind-addr") {
            c.bind_addr = parse(&v, "bind address")?;
        }
        if let Some(v) = get("http-port") {
            c.http_port = parse(&v, "HTTP port")?;
        }
        if let Some(v) = get("tcp-port") {
            c.tcp_port = parse(&v, "TCP port")?;
        }
        let auth_required = match get("auth-required") {
            Some(v) => parse_bool(&v)?,
            None => true,
        };
        c.auth = if auth_required {
            let secret = get("jwt-hmac-secret").ok_or_else(|| {
                ConfigError(
                    "auth is required but FITZ_JWT_HMAC_SECRET is not set (JWKS is not supported; \
                     set FITZ_AUTH_REQUIRED=false for anonymous mode)"
                        .into(),
                )
            })?;
            let mut a = AuthConfig::jwt_hs256(secret);
            if let Some(v) = get("jwt-audiences") {
                a = a.audiences(list(&v));
            }
            if let Some(v) = get("route-family-map") {
                a = a.family_map(parse_family_map(&v)?);
            }
            if let Some(v) = get("route-family-claim") {
                a = a.family_claim(v.trim());
            }
            if let Some(v) = get("org-claim") {
                a = a.org_claim(v.trim());
            }
            if let Some(v) = get("permissions-claim") {
                a = a.permissions_claim(v.trim());
            }
            if let Some(v) = get("custom-claim") {
                a = a.custom_claim(v.trim());
            }
            if let Some(v) = get("role-claim") {
                a = a.role_claim(v.trim());
            }
            a.validate().map_err(ConfigError)?;
            a
        } else {
            AuthConfig::anonymous()
        };
        let path = get("storage-path").map_or_else(|| PathBuf::from("./.fitz"), PathBuf::from);
        c.storage = match get("storage-mode").as_deref().map(str::trim) {
            Some("memory") => StorageMode::Memory,
            None | Some("local") => StorageMode::Local(path),
            Some("cloud") => {
                return Err(ConfigError(
                    "FITZ_STORAGE_MODE=cloud is not supported".into(),
                ));
            }
            Some(other) => {
                return Err(ConfigError(format!(
                    "FITZ_STORAGE_MODE must be memory or local, not {other:?}"
                )));
            }
        };
        if let Some(v) = get("kv-idle-transaction-ttl-secs") {
            let secs: u64 = parse(&v, "KV idle transaction TTL")?;
            if secs == 0 {
                return Err(ConfigError(
                    "FITZ_KV_IDLE_TRANSACTION_TTL_SECS must be > 0".into(),
                ));
            }
            c.kv_idle_transaction_ttl = Duration::from_secs(secs);
        }
        // Like the reference broker, an invalid grace falls back to the
        // default instead of refusing to start.
        if let Some(ms) = get("rpc-cancellation-grace-ms")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms <= 86_400_000)
        {
            c.rpc_cancellation_grace = Duration::from_millis(ms);
        }
        if let Some(v) = get("max-frame-bytes") {
            c.max_frame = parse(&v, "max frame")?;
            if c.max_frame < 64 {
                return Err(ConfigError("max frame must be at least 64 bytes".into()));
            }
        }
        if let Some(v) = get("connect-timeout-secs") {
            let secs: u64 = parse(&v, "connect timeout")?;
            c.connect_timeout = Duration::from_secs(secs.max(1));
        }
        let positive = |name: &str, what: &str| -> Result<Option<u64>, ConfigError> {
            match get(name) {
                None => Ok(None),
                Some(v) => match parse::<u64>(&v, what)? {
                    0 => Err(ConfigError(format!("{what} must be > 0"))),
                    n => Ok(Some(n)),
                },
            }
        };
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(n) = positive("max-connections", "max connections")? {
            c.limits.max_connections = size(n);
        }
        if let Some(n) = positive("frame-timeout-secs", "frame timeout")? {
            c.limits.frame_timeout = Duration::from_secs(n);
        }
        if let Some(n) = positive("max-pending-input-bytes", "max pending input")? {
            c.limits.max_pending_input = size(n);
        }
        if let Some(n) = positive("kv-tx-max-bytes", "KV transaction bytes")? {
            c.limits.kv_tx_max_bytes = size(n);
        }
        if let Some(n) = positive("kv-tx-total-bytes", "KV transaction total bytes")? {
            c.limits.kv_tx_total_bytes = size(n);
        }
        c.log_filter = get("log");
        Ok(Command::Run(Box::new(c)))
    }
}

fn parse<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError(format!("invalid {what}: {v:?}")))
}

fn parse_bool(v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError(format!("invalid boolean {v:?}"))),
    }
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses `FITZ_ROUTE_FAMILY_MAP`: `identity=family[,identity=family…]`.
pub fn parse_family_map(v: &str) -> Result<Vec<(String, Family)>, ConfigError> {
    list(v)
        .into_iter()
        .map(|pair| {
            let (id, fam) = pair.split_once('=').ok_or_else(|| {
                ConfigError(format!(
                    "route family map entry {pair:?} is not identity=family"
                ))
            })?;
            let fam: Family = parse(fam, "route family")?;
            if fam == 0 {
                return Err(ConfigError(format!(
                    "identity {id:?} maps to route family 0"
                )));
            }
            Ok((id.trim().to_owned(), fam))
        })
        .collect()
}

/// Default audiences, for documentation and tests.
pub fn default_audiences() -> Vec<String> {
    auth::DEFAULT_AUDIENCES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(env: &[(&str, &str)], args: &[&str]) -> Result<Command, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env_and_args(|k| env.get(k).cloned(), args.iter().copied())
    }

    fn config(env: &[(&str, &str)], args: &[&str]) -> Config {
        match run(env, args).unwrap() {
            Command::Run(c) => *c,
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn binary_defaults_follow_the_real_broker() {
        let c = config(&[("FITZ_JWT_HMAC_SECRET", "s")], &[]);
        assert_eq!(c.bind_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!((c.http_port, c.tcp_port), (4090, 4091));
        assert!(!c.auth.is_anonymous());
        assert_eq!(c.storage, StorageMode::Local("./.fitz".into()));
        assert_eq!(c.kv_idle_transaction_ttl, Duration::from_secs(300));
        assert_eq!(c.rpc_cancellation_grace, Duration::from_millis(5_000));
        let c = config(
            &[
                ("FITZ_AUTH_REQUIRED", "false"),
                ("FITZ_RPC_CANCELLATION_GRACE_MS", "250"),
            ],
            &[],
        );
        assert_eq!(c.rpc_cancellation_grace, Duration::from_millis(250));
        let c = config(
            &[
                ("FITZ_AUTH_REQUIRED", "false"),
                ("FITZ_RPC_CANCELLATION_GRACE_MS", "86400001"),
            ],
            &[],
        );
        assert_eq!(c.rpc_cancellation_grace, Duration::from_millis(5_000));
        assert!(run(&[], &[]).is_err(), "auth on without a secret");
    }

    #[test]
    fn flags_override_env() {
        let c = config(
            &[
                ("FITZ_AUTH_REQUIRED", "false"),
                ("FITZ_TCP_PORT", "1"),
                ("RUST_LOG", "warn"),
            ],
            &[
                "--tcp-port",
                "2",
                "--http-port=3",
                "--storage-mode",
                "local",
                "--log=debug",
            ],
        );
        assert!(c.auth.is_anonymous());
        assert_eq!((c.tcp_port, c.http_port), (2, 3));
        assert_eq!(c.storage, StorageMode::Local("./.fitz".into()));
        assert_eq!(c.log_filter.as_deref(), Some("debug"));
    }

    #[test]
    fn storage_mode_and_path() {
        let anon = ("FITZ_AUTH_REQUIRED", "false");
        let c = config(&[anon, ("FITZ_STORAGE_MODE", "memory")], &[]);
        assert_eq!(c.storage, StorageMode::Memory);
        let c = config(
            &[
                anon,
                ("FITZ_STORAGE_MODE", "local"),
                ("FITZ_STORAGE_PATH", "/data"),
            ],
            &[],
        );
        assert_eq!(c.storage, StorageMode::Local("/data".into()));
        let c = config(&[anon], &["--storage-path", "x"]);
        assert_eq!(c.storage, StorageMode::Local("x".into()));
        let e = run(&[anon, ("FITZ_STORAGE_MODE", "cloud")], &[]).unwrap_err();
        assert!(e.0.contains("cloud"), "{e}");
    }

    #[test]
    fn jwt_settings_and_errors() {
        let c = config(
            &[
                ("FITZ_JWT_HMAC_SECRET", "s"),
                ("FITZ_JWT_AUDIENCE", "legacy"),
                ("FITZ_ROUTE_FAMILY_MAP", "dev=1, acme=2"),
            ],
            &[],
        );
        let want = AuthConfig::jwt_hs256("s")
            .audiences(["legacy"])
            .family_map([("dev", 1), ("acme", 2)]);
        assert_eq!(c.auth, want);
        assert!(
            run(
                &[
                    ("FITZ_JWT_HMAC_SECRET", "s"),
                    ("FITZ_ROUTE_FAMILY_MAP", "dev=0")
                ],
                &[]
            )
            .is_err()
        );
        assert!(run(&[("FITZ_AUTH_REQUIRED", "maybe")], &[]).is_err());
        assert!(run(&[("FITZ_AUTH_REQUIRED", "false")], &["--nope", "1"]).is_err());
        assert!(
            run(
                &[
                    ("FITZ_AUTH_REQUIRED", "false"),
                    ("FITZ_STORAGE_MODE", "disk")
                ],
                &[]
            )
            .is_err()
        );
        assert_eq!(run(&[], &["--help"]).unwrap(), Command::Help);
        assert!(help().contains("FITZ_KV_IDLE_TRANSACTION_TTL_SECS"));
    }

    #[test]
    fn memory_limits_are_ours_and_configurable() {
        let anon = ("FITZ_AUTH_REQUIRED", "false");
        assert_eq!(config(&[anon], &[]).limits, Limits::default());
        let c = config(
            &[
                anon,
                ("FITZ_MAX_CONNECTIONS", "10"),
                ("FITZ_FRAME_TIMEOUT_SECS", "3"),
                ("FITZ_MAX_PENDING_INPUT_BYTES", "65536"),
                ("FITZ_KV_TX_MAX_BYTES", "1000"),
            ],
            &["--kv-tx-total-bytes", "5000"],
        );
        assert_eq!(
            c.limits,
            Limits {
                max_connections: 10,
                frame_timeout: Duration::from_secs(3),
                max_pending_input: 65536,
                kv_tx_max_bytes: 1000,
                kv_tx_total_bytes: 5000,
            }
        );
        assert!(run(&[anon, ("FITZ_MAX_CONNECTIONS", "0")], &[]).is_err());
        assert!(run(&[anon, ("FITZ_KV_TX_MAX_BYTES", "lots")], &[]).is_err());
        for name in [
            "FITZ_MAX_CONNECTIONS",
            "FITZ_FRAME_TIMEOUT_SECS",
            "FITZ_MAX_PENDING_INPUT_BYTES",
            "FITZ_KV_TX_MAX_BYTES",
            "FITZ_KV_TX_TOTAL_BYTES",
        ] {
            assert!(help().contains(name), "{name}");
        }
    }
}
