//! Connection settings (flags, `FITZ_*` variables, named contexts), the
//! client they build, bodies from arguments, files or stdin, and Ctrl-C.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use fitz::{Client, ReconnectPolicy};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::cli::{BodyArgs, Global};
use crate::failure::Failure;

/// The URL used when neither a flag, `FITZ_URL` nor a context names one.
pub const DEFAULT_URL: &str = "tcp://127.0.0.1:4091";

/// One saved context.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Context {
    /// Broker URL.
    pub url: String,
    /// Token stored inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Token file read at every connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// The contexts file (`contexts.json` in the config directory).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Contexts {
    /// The context used when `--context` is not given.
    #[serde(default)]
    pub current: Option<String>,
    /// By name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// The config directory: `FITZ_CONFIG_DIR`, else the platform's (e.g.
/// `~/.config/fitz`).
pub fn config_dir() -> Result<PathBuf, Failure> {
    if let Some(dir) = std::env::var_os("FITZ_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "fitz")
        .map(|d| d.config_dir().to_path_buf())
        .ok_or_else(|| Failure::usage("no home directory: set FITZ_CONFIG_DIR"))
}

fn contexts_path() -> Result<PathBuf, Failure> {
    Ok(config_dir()?.join("contexts.json"))
}

impl Contexts {
    /// Loads the file (empty when missing).
    pub fn load() -> Result<Self, Failure> {
        let path = contexts_path()?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Failure::usage(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Failure::usage(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes the file (creating the directory), via a temporary file and a
    /// rename so a crash never leaves half a file.
    pub fn save(&self) -> Result<(), Failure> {
        let path = contexts_path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| Failure::domain(format!("cannot encode contexts: {e}")))?;
        write_private(&tmp, &text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}

/// Writes a file only its owner can read (it may hold tokens).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

/// Where the token comes from.
#[derive(Debug, Clone)]
enum TokenSource {
    None,
    Inline(String),
    File(PathBuf),
}

/// Resolves URL and token: flags and `FITZ_URL`/`FITZ_TOKEN` first, then
/// `--token-file`, then the context (named, else current), then defaults.
fn resolve(global: &Global) -> Result<(String, TokenSource), Failure> {
    let contexts = Contexts::load()?;
    let ctx = match &global.context {
        Some(name) => Some(
            contexts
                .contexts
                .get(name)
                .cloned()
                .ok_or_else(|| Failure::usage(format!("no context named `{name}`")))?,
        ),
        None => contexts
            .current
            .as_ref()
            .and_then(|n| contexts.contexts.get(n).cloned()),
    };
    let url = global
        .url
        .clone()
        .or_else(|| ctx.as_ref().map(|c| c.url.clone()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let token = if let Some(t) = &global.token {
        TokenSource::Inline(t.clone())
    } else if let Some(f) = &global.token_file {
        TokenSource::File(f.clone())
    } else if let Some(t) = ctx.as_ref().and_then(|c| c.token.clone()) {
        TokenSource::Inline(t)
    } else if let Some(f) = ctx.as_ref().and_then(|c| c.token_file.clone()) {
        TokenSource::File(f)
    } else {
        TokenSource::None
    };
    Ok((url, token))
}

fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// Builds a client from the settings and connects it (one attempt bounded
/// by `--connect-timeout`). Failures are exit code 3.
pub async fn connect(global: &Global) -> Result<Client, Failure> {
    let (url, token) = resolve(global)?;
    if let TokenSource::File(path) = &token {
        // Fail early and clearly rather than inside the handshake.
        read_token(path).map_err(|e| {
            Failure::Connection(format!("cannot read token file {}: {e}", path.display()))
        })?;
    }
    let token = Arc::new(token);
    let client = Client::builder(url.clone(), move || {
        let token = token.clone();
        async move {
            match &*token {
                TokenSource::None => Ok(String::new()),
                TokenSource::Inline(t) => Ok(t.clone()),
                TokenSource::File(p) => read_token(p),
            }
        }
    })
    .connect_timeout(global.connect_timeout)
    .request_timeout(global.request_timeout)
    .auth_attempts(1)
    .reconnect(ReconnectPolicy::default())
    .service_name("fitz-cli")
    .build()
    .map_err(|e| Failure::usage(format!("{url}: {e}")))?;
    match client.connect().await {
        Ok(()) => Ok(client),
        Err(e) => {
            client.close().await;
            Err(Failure::Connection(format!("cannot connect to {url}: {e}")))
        }
    }
}

/// The body of a command: the argument, `--file`, or stdin (also for `-`).
pub async fn read_body(args: &BodyArgs) -> Result<Bytes, Failure> {
    if let Some(path) = &args.file {
        return tokio::fs::read(path)
            .await
            .map(Bytes::from)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())));
    }
    match args.body.as_deref() {
        Some("-") | None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("fitz: reading the body from stdin (end with Ctrl-D)");
            }
            let mut buf = Vec::new();
            tokio::io::stdin().read_to_end(&mut buf).await?;
            Ok(Bytes::from(buf))
        }
        Some(s) => Ok(Bytes::copy_from_slice(s.as_bytes())),
    }
}

/// Set once SIGINT or SIGTERM arrived; never reset.
static STOP: OnceLock<watch::Sender<bool>> = OnceLock::new();

/// Installs the SIGINT/SIGTERM handlers (call once, inside the runtime,
/// before any command runs). A signal sets a process-wide flag, so one that
/// arrives while nothing waits for it (say, while a consumer runs its
/// command) is still seen by the next [`interrupted`].
pub fn install_signal_handlers() {
    let (tx, _) = watch::channel(false);
    if STOP.set(tx).is_err() {
        return;
    }
    let stop = || {
        if let Some(tx) = STOP.get() {
            tx.send_replace(true);
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
            if let Ok(mut sig) = signal(kind) {
                tokio::spawn(async move {
                    if sig.recv().await.is_some() {
                        stop();
                    }
                });
            }
        }
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop();
        }
    });
}

/// Resolves once Ctrl-C (SIGINT) or SIGTERM has arrived (at once if it
/// already has). Never resolves when no handlers were installed.
pub async fn interrupted() {
    match STOP.get() {
        Some(tx) => {
            let mut rx = tx.subscribe();
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
        None => std::future::pending().await,
    }
}
