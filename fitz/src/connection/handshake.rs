//! One connection attempt: token, transport, CONNECT, SERVER_HELLO — and,
//! when it fails, what the failure says about the token ([`Verdict`]).

use std::sync::Arc;

use bytes::Bytes;
use fitz_protocol::control::{self, ServerHello};
use fitz_protocol::frame::encode_frame_with;
use fitz_protocol::record::decode_single_record;
use fitz_protocol::{Message, types};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use crate::error::Error;
use crate::events::State;
use crate::transport::{Close, OpenSettings, Transport};

/// What a failed handshake says about the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing points at the token: the network or the broker failed
    /// (refused, reset, timed out, cut before CONNECT was written, a
    /// WebSocket closed for another reason). Retried like any lost
    /// connection.
    Network,
    /// The broker said so: a WebSocket Close with `connect failed: …`.
    Refused,
    /// The provider handed back the very token the broker refused; it is
    /// not sent again (AC-CONN-003).
    RefusedAgain,
    /// A TCP connection closed cleanly right after CONNECT was written, with
    /// nothing received and no reset following: how a broker refuses a token
    /// on TCP, and also how a cut at that instant looks.
    Ambiguous,
}

/// A failed handshake.
pub(super) struct Handshake {
    pub verdict: Verdict,
    pub error: Error,
    /// The token CONNECT carried, when one was sent.
    pub token: Option<Bytes>,
}

impl Handshake {
    fn network(error: Error) -> Self {
        Self {
            verdict: Verdict::Network,
            error,
            token: None,
        }
    }
}

/// Handshakes in a row that may have been token refusals.
#[derive(Default)]
pub(super) struct Refusals {
    pub streak: u32,
    /// The last token the broker refused outright.
    pub token: Option<Bytes>,
}

/// Token, transport, CONNECT, SERVER_HELLO: one attempt, bounded by
/// `deadline`.
///
/// On TCP a broker refuses a token by closing without a word, so a close is
/// judged from what the client can know (see [`Verdict`]): whether CONNECT
/// was completely written, whether the close was orderly, whether a reset
/// followed it (the peer never read CONNECT), and on WebSocket the Close
/// reason.
pub(super) async fn handshake(
    shared: Arc<Shared>,
    state: watch::Sender<State>,
    deadline: Instant,
    refused: Option<Bytes>,
) -> std::result::Result<(Transport, ServerHello), Handshake> {
    let cfg = &shared.config;
    let timed_out = |what: &str| {
        Handshake::network(Error::timed_out(format!(
            "{what} within the connect timeout of {:?}",
            cfg.connect_timeout
        )))
    };
    let token = match tokio::time::timeout_at(deadline, cfg.tokens.token()).await {
        Err(_) => return Err(timed_out("no token from the token provider")),
        Ok(Err(e)) => {
            return Err(Handshake::network(Error::connection(format!(
                "the token provider failed: {e}"
            ))));
        }
        Ok(Ok(t)) => Bytes::from(t),
    };
    if refused.as_ref() == Some(&token) {
        return Err(Handshake {
            verdict: Verdict::RefusedAgain,
            error: Error::auth(
                "the token provider returned the token the broker refused; it is not sent again",
            ),
            token: Some(token),
        });
    }
    let settings = OpenSettings {
        connector: cfg.connector.as_deref(),
        tls: cfg.tls.as_ref(),
        max_frame: cfg.max_frame,
        keepalive: Some(cfg.ping_interval),
    };
    let mut transport =
        match tokio::time::timeout_at(deadline, Transport::open(&cfg.endpoint, &settings)).await {
            Err(_) => return Err(timed_out("transport not open")),
            Ok(Err(e)) => return Err(Handshake::network(e)),
            Ok(Ok(t)) => t,
        };
    state.send_replace(State::Connected);

    let connect = control::Connect {
        token: token.clone(),
    };
    let max = transport.max_frame();
    encode_frame_with(transport.out(), max, |b| connect.encode_record(b))
        .map_err(|e| Handshake::network(Error::encode(e)))?;
    state.send_replace(State::Authenticating);

    // A failure before CONNECT is completely written is never a refusal.
    match tokio::time::timeout_at(deadline, transport.flush()).await {
        Err(_) => return Err(timed_out("CONNECT not written")),
        Ok(Err(f)) => return Err(Handshake::network(f.error)),
        Ok(Ok(())) => {}
    }
    let frame = match tokio::time::timeout_at(deadline, transport.read_frame()).await {
        Err(_) => return Err(timed_out("no SERVER_HELLO")),
        Ok(Err(f)) => {
            let verdict = match f.close {
                Close::Refused => Verdict::Refused,
                Close::Clean if !transport.is_websocket() => match transport.take_probe() {
                    Some(probe) => {
                        match tokio::time::timeout_at(deadline, probe.reset_follows()).await {
                            Ok(true) => Verdict::Network,
                            _ => Verdict::Ambiguous,
                        }
                    }
                    None => Verdict::Ambiguous,
                },
                _ => Verdict::Network,
            };
            return Err(Handshake {
                verdict,
                error: f.error,
                token: Some(token),
            });
        }
        Ok(Ok(f)) => f,
    };
    drop(transport.take_probe());
    // The hello must be alone in its frame and unlabelled.
    let record = decode_single_record(frame).map_err(|e| {
        Handshake::network(Error::protocol(format!("malformed handshake frame: {e}")))
    })?;
    if record.ty != types::SERVER_HELLO {
        return Err(Handshake::network(Error::protocol(format!(
            "expected SERVER_HELLO, the broker sent {} ({})",
            record.ty,
            types::name(record.ty)
        ))));
    }
    let hello = ServerHello::decode(record.payload)
        .map_err(|e| Handshake::network(Error::protocol(format!("malformed SERVER_HELLO: {e}"))))?;
    Ok((transport, hello))
}
