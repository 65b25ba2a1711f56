//! Broker URLs: `tcp://host:port`, `tls://host:port`, `ws://host:port/path`,
//! `wss://host:port/path` (path defaults to `/ws`), and `memory://name` for a
//! caller-supplied [`crate::transport::Connector`].

use std::fmt;

use crate::error::{Error, Result};

/// How bytes reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Tcp,
    Tls,
    Ws,
    Wss,
    Memory,
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub scheme: Scheme,
    /// Host as written, without IPv6 brackets (the TLS server name).
    pub host: String,
    pub port: u16,
    /// WebSocket request path, always starting with `/`.
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid(format!("invalid broker URL {url:?}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing scheme"))?;
        let scheme = match scheme {
            "tcp" => Scheme::Tcp,
            "tls" => Scheme::Tls,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            "memory" => Scheme::Memory,
            _ => return Err(bad("scheme must be tcp, tls, ws, wss or memory")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if scheme == Scheme::Memory {
            return Ok(Self {
                scheme,
                host: authority.to_owned(),
                port: 0,
                path: path.to_owned(),
            });
        }
        if matches!(scheme, Scheme::Tcp | Scheme::Tls) && !path.is_empty() && path != "/" {
            return Err(bad("tcp and tls URLs take no path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = match (port, scheme) {
            (Some(p), _) => p.parse().map_err(|_| bad("invalid port"))?,
            (None, Scheme::Ws) => 80,
            (None, Scheme::Wss) => 443,
            (None, _) => return Err(bad("missing port")),
        };
        let path = match (scheme, path) {
            (Scheme::Ws | Scheme::Wss, "" | "/") => "/ws".to_owned(),
            (_, p) => p.to_owned(),
        };
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// `host:port` for `TcpStream::connect`, bracketing IPv6 literals.
    pub fn socket_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.scheme, Scheme::Tls | Scheme::Wss)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
            Scheme::Memory => "memory",
        };
        match self.scheme {
            Scheme::Memory => write!(f, "memory://{}{}", self.host, self.path),
            Scheme::Ws | Scheme::Wss => {
                write!(f, "{scheme}://{}{}", self.socket_addr(), self.path)
            }
            _ => write!(f, "{scheme}://{}", self.socket_addr()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        let e = Endpoint::parse("tcp://127.0.0.1:4191").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Tcp, "127.0.0.1", 4191)
        );
        let e = Endpoint::parse("ws://localhost:4190").unwrap();
        assert_eq!(e.path, "/ws");
        assert_eq!(e.to_string(), "ws://localhost:4190/ws");
        let e = Endpoint::parse("wss://broker.example/custom").unwrap();
        assert_eq!((e.port, e.path.as_str()), (443, "/custom"));
        assert!(e.is_tls());
        let e = Endpoint::parse("tls://[::1]:4091").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.socket_addr(), "[::1]:4091");
        assert_eq!(
            Endpoint::parse("memory://bench").unwrap().scheme,
            Scheme::Memory
        );
    }

    #[test]
    fn rejects_malformed_urls() {
        for url in [
            "127.0.0.1:4191",
            "http://x:1",
            "tcp://:1",
            "tcp://host",
            "tcp://host:99999",
            "tcp://host:1/path",
            "tls://[::1:4091",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url}");
        }
    }
}
