//! What every scenario gets: the cell it runs in (transport, auth mode,
//! brokers), an evidence recorder, and assertion helpers that fail the
//! scenario with a message instead of panicking.

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fitz::{Client, ClientBuilder, Event, ReconnectPolicy, StaticToken};
use fitz_broker::Broker;
use fitz_tests::{Brokers, BrokersExt, ProxyHandle, Transport};
use serde_json::{Map, Value};

/// How long one expected thing may take before the scenario fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A scenario's outcome: `Err` carries why it failed.
pub type Outcome = Result<(), String>;

/// Fails the scenario unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}
pub(crate) use ensure;

/// `?` for fallible steps: the error becomes the failure, prefixed with what
/// the step was.
pub trait Ctx<T> {
    /// The value, or a failure message naming `what`.
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

impl<T> Ctx<T> for Option<T> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.ok_or_else(|| format!("{what}: nothing"))
    }
}

/// `fut` within [`WAIT`], or a failure naming `what`.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(WAIT, fut)
        .await
        .map_err(|_| format!("{what}: nothing within {WAIT:?}"))
}

/// The first event matching `pred`, within [`WAIT`].
pub async fn event(
    events: &mut fitz::Events,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Result<Event, String> {
    within(what, async {
        loop {
            match events.recv().await {
                Some(ev) if pred(&ev) => return Ok(ev),
                Some(_) => {}
                None => return Err(format!("{what}: events ended")),
            }
        }
    })
    .await?
}

/// What a scenario observed, recorded as it goes (so a failed scenario
/// still reports what it saw up to the failure).
#[derive(Clone, Default)]
pub struct Ev(Arc<Mutex<Map<String, Value>>>);

impl Ev {
    /// Sets `key`.
    pub fn put(&self, key: &str, value: impl serde::Serialize) {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), value);
    }

    /// Appends to the list at `key`.
    pub fn push(&self, key: &str, value: impl serde::Serialize) {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map
            .entry(key.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(value),
            other => *other = Value::Array(vec![other.take(), value]),
        }
    }

    /// Everything recorded.
    pub fn take(&self) -> Value {
        Value::Object(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A typed error as evidence: kind, code and its registry name,
/// retryability, maybe_applied, message.
pub fn error_json(e: &fitz::Error) -> Value {
    serde_json::json!({
        "kind": format!("{:?}", e.kind()),
        "code": e.code(),
        "code_name": e.code().map(fitz::codes::name),
        "retryable": e.is_retryable(),
        "maybe_applied": e.maybe_applied(),
        "message": e.message(),
    })
}

/// The cell's authentication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The anonymous broker, empty token.
    Anonymous,
    /// The authenticated broker, a valid HS256 token.
    Jwt,
}

impl Auth {
    /// File-name form: `anonymous` / `jwt`.
    pub fn name(self) -> &'static str {
        match self {
            Auth::Anonymous => "anonymous",
            Auth::Jwt => "jwt",
        }
    }

    /// The suite's vocabulary: `anonymous` / `valid_jwt`.
    pub fn suite_name(self) -> &'static str {
        match self {
            Auth::Anonymous => "anonymous",
            Auth::Jwt => "valid_jwt",
        }
    }
}

/// The suite's transport names.
pub fn suite_transport(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Ws => "websocket",
    }
}

/// One cell of the matrix.
pub struct Cx {
    pub transport: Transport,
    pub auth: Auth,
    pub brokers: Arc<Brokers>,
}

impl Cx {
    /// The broker this cell talks to, directly.
    pub fn url(&self) -> &str {
        match self.auth {
            Auth::Anonymous => self.brokers.anon_url(self.transport),
            Auth::Jwt => self.brokers.auth_url(self.transport),
        }
    }

    /// The cell's token (empty when anonymous).
    pub fn token(&self) -> String {
        match self.auth {
            Auth::Anonymous => String::new(),
            Auth::Jwt => self.brokers.token(),
        }
    }

    /// The embedded broker of this cell, for extra evidence (`None` when
    /// the suite runs against an external broker).
    pub fn broker(&self) -> Option<&Broker> {
        match self.auth {
            Auth::Anonymous => self.brokers.anon(),
            Auth::Jwt => self.brokers.auth(),
        }
    }

    /// A client builder for `url` with this cell's token and a quick
    /// reconnect policy.
    pub fn builder(&self, url: &str) -> ClientBuilder {
        Client::builder(url, StaticToken::new(self.token())).reconnect(ReconnectPolicy {
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            ..ReconnectPolicy::default()
        })
    }

    /// A client of this cell, connected directly.
    pub async fn client(&self) -> Result<Client, String> {
        let c = self.builder(self.url()).build().ctx("build")?;
        c.connect().await.ctx("connect")?;
        Ok(c)
    }

    /// A disconnect proxy in front of this cell's broker port, and the URL
    /// through it.
    pub async fn proxy(&self) -> (ProxyHandle, String) {
        match self.auth {
            Auth::Anonymous => self.brokers.anon_proxy(self.transport).await,
            Auth::Jwt => self.brokers.auth_proxy(self.transport).await,
        }
    }

    /// A route segment unique to this scenario run.
    pub fn realm(&self, tag: &str) -> String {
        fitz_tests::realm(&format!("cs-{tag}"))
    }
}
