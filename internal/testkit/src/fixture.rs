//! Brokers for integration tests: the embedded `fitz-broker` on free
//! loopback ports, or an external broker named by environment variables.
//!
//! With every one of `FITZ_BROKER_ANON_TCP_ADDR`, `FITZ_BROKER_AUTH_TCP_ADDR`,
//! `FITZ_BROKER_ANON_WS_ADDR`, `FITZ_BROKER_AUTH_WS_ADDR` (each `host:port`)
//! and `FITZ_BROKER_JWT_HMAC_SECRET` set, [`Brokers::start`] uses that broker
//! (e.g. the real image from `compose.yml`); otherwise it starts two embedded
//! brokers: anonymous, and JWT HS256 with secret `dev-test-secret`, audience
//! `fitz` and family map `dev=1`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use fitz_broker::{AuthConfig, Broker};

use crate::jwt::{AUDIENCE, DEV_SECRET};

/// The broker endpoints a test may use.
pub struct Brokers {
    /// `tcp://…` of the anonymous broker.
    pub anon_tcp: String,
    /// `ws://…/ws` of the anonymous broker.
    pub anon_ws: String,
    /// `tcp://…` of the authenticated broker.
    pub auth_tcp: String,
    /// `ws://…/ws` of the authenticated broker.
    pub auth_ws: String,
    /// HMAC secret of the authenticated broker.
    pub secret: String,
    anon: Option<Broker>,
    auth: Option<Broker>,
}

const ENV: [&str; 5] = [
    "FITZ_BROKER_ANON_TCP_ADDR",
    "FITZ_BROKER_AUTH_TCP_ADDR",
    "FITZ_BROKER_ANON_WS_ADDR",
    "FITZ_BROKER_AUTH_WS_ADDR",
    "FITZ_BROKER_JWT_HMAC_SECRET",
];

impl Brokers {
    /// The external broker if configured, else embedded ones.
    pub async fn start() -> io::Result<Self> {
        let vars: Vec<Option<String>> = ENV.iter().map(|k| std::env::var(k).ok()).collect();
        if let [Some(at), Some(ut), Some(aw), Some(uw), Some(secret)] = &vars[..] {
            return Ok(Self {
                anon_tcp: format!("tcp://{at}"),
                auth_tcp: format!("tcp://{ut}"),
                anon_ws: format!("ws://{aw}/ws"),
                auth_ws: format!("ws://{uw}/ws"),
                secret: secret.clone(),
                anon: None,
                auth: None,
            });
        }
        let anon = embedded(AuthConfig::anonymous()).await?;
        let auth = embedded(
            AuthConfig::jwt_hs256(DEV_SECRET)
                .audiences([AUDIENCE])
                .family_map([("dev", 1)]),
        )
        .await?;
        Ok(Self {
            anon_tcp: anon.tcp_url(),
            anon_ws: anon.ws_url(),
            auth_tcp: auth.tcp_url(),
            auth_ws: auth.ws_url(),
            secret: DEV_SECRET.to_owned(),
            anon: Some(anon),
            auth: Some(auth),
        })
    }

    /// The embedded anonymous broker (`None` when external).
    pub fn anon(&self) -> Option<&Broker> {
        self.anon.as_ref()
    }

    /// The embedded authenticated broker (`None` when external).
    pub fn auth(&self) -> Option<&Broker> {
        self.auth.as_ref()
    }

    /// The anonymous broker's TCP address (for a [`crate::Proxy`]).
    pub fn anon_tcp_addr(&self) -> io::Result<SocketAddr> {
        addr_of(&self.anon_tcp)
    }

    /// The anonymous broker's HTTP (WebSocket) address.
    pub fn anon_ws_addr(&self) -> io::Result<SocketAddr> {
        addr_of(&self.anon_ws)
    }

    /// The authenticated broker's TCP address (for a [`crate::Proxy`]).
    pub fn auth_tcp_addr(&self) -> io::Result<SocketAddr> {
        addr_of(&self.auth_tcp)
    }

    /// The authenticated broker's HTTP (WebSocket) address.
    pub fn auth_ws_addr(&self) -> io::Result<SocketAddr> {
        addr_of(&self.auth_ws)
    }

    /// True when the endpoints come from `FITZ_BROKER_*` (nothing embedded).
    pub fn is_external(&self) -> bool {
        self.anon.is_none()
    }

    /// True when every `FITZ_BROKER_*` variable is set, i.e. [`Brokers::start`]
    /// will use an external broker.
    pub fn external_configured() -> bool {
        ENV.iter().all(|k| std::env::var_os(k).is_some())
    }

    /// Stops the embedded brokers.
    pub async fn shutdown(&self) {
        for b in [&self.anon, &self.auth].into_iter().flatten() {
            b.shutdown().await;
        }
    }
}

/// Starts one embedded broker on free loopback ports.
pub async fn embedded(auth: AuthConfig) -> io::Result<Broker> {
    Broker::builder()
        .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .tcp_port(0)
        .http_port(0)
        .auth(auth)
        .start()
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

fn addr_of(url: &str) -> io::Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))
}
