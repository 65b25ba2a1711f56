//! Fitz over WebSocket: one binary message per frame, no length prefix.
//!
//! Text messages are ignored, pings are answered by tungstenite itself (it
//! queues the pong while reading and sends it with the next write or flush),
//! and a Close message ends the connection with the broker's reason.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{BoxedStream, Close, Failure, Inbound};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

/// How a broker's Close reason starts when it refuses CONNECT (the spec's
/// `connect failed: <reason>`).
const CONNECT_REFUSED: &str = "connect failed";

pub(crate) struct WsIo {
    ws: WebSocketStream<BoxedStream>,
    max_frame: usize,
    ping_queued: bool,
    needs_flush: bool,
}

/// Most bytes one read asks for (tungstenite's `read_buffer_size`; a larger
/// frame still gets room for itself). Its default, 128 KiB, is zero-filled
/// before every read: at one read per wake-up that memset was the largest
/// single cost of a WebSocket RPC round trip (callgrind, `rpc_probe` with
/// `PROBE_TRANSPORT=ws`). 16 KiB, as the TCP transport reads.
const READ_BUFFER: usize = 16 * 1024;

impl WsIo {
    pub async fn handshake(
        endpoint: &Endpoint,
        raw: BoxedStream,
        max_frame: usize,
    ) -> Result<Self> {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(max_frame))
            .max_frame_size(Some(max_frame));
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(endpoint.to_string(), raw, Some(config))
                .await
                .map_err(|e| {
                    Error::connection(format!("WebSocket upgrade failed: {e}")).with_source(e)
                })?;
        Ok(Self {
            ws,
            max_frame,
            ping_queued: false,
            needs_flush: false,
        })
    }

    pub fn unflushed(&self) -> usize {
        usize::from(self.needs_flush)
    }

    pub fn queue_ping(&mut self) {
        self.ping_queued = true;
    }

    /// Turns each length-prefixed frame of `out` into one binary message
    /// (zero-copy: the message shares `out`'s allocation), then flushes once.
    pub fn poll_write_out(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut BytesMut,
    ) -> Poll<std::result::Result<(), Failure>> {
        if self.ping_queued {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(failure)?;
            Pin::new(&mut self.ws)
                .start_send(Message::Ping(Bytes::new()))
                .map_err(failure)?;
            self.ping_queued = false;
            self.needs_flush = true;
        }
        while out.len() >= 4 {
            let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
            if out.len() < 4 + len {
                // The actor only appends whole frames; a short tail is a bug.
                return Poll::Ready(Err(Failure::error(Error::protocol(
                    "internal: partial frame in the outbound buffer",
                ))));
            }
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(failure)?;
            out.advance(4);
            let frame = out.split_to(len).freeze();
            Pin::new(&mut self.ws)
                .start_send(Message::Binary(frame))
                .map_err(failure)?;
            self.needs_flush = true;
        }
        if self.needs_flush {
            ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(failure)?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<Inbound, Failure>> {
        loop {
            let msg = match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None => {
                    return Poll::Ready(Err(Failure::reset(
                        "WebSocket ended without a Close frame",
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(failure(e))),
                Some(Ok(m)) => m,
            };
            return Poll::Ready(match msg {
                Message::Binary(frame) if frame.is_empty() => {
                    Err(Failure::error(Error::protocol("empty WebSocket frame")))
                }
                Message::Binary(frame) if frame.len() > self.max_frame => {
                    Err(Failure::error(Error::protocol(format!(
                        "inbound frame of {} bytes exceeds the limit of {}",
                        frame.len(),
                        self.max_frame
                    ))))
                }
                Message::Binary(frame) => Ok(Inbound::Frame(frame)),
                Message::Ping(_) | Message::Pong(_) | Message::Text(_) => Ok(Inbound::Activity),
                Message::Close(frame) => {
                    let refused = frame
                        .as_ref()
                        .is_some_and(|f| f.reason.starts_with(CONNECT_REFUSED));
                    let reason = match frame {
                        Some(f) if !f.reason.is_empty() => {
                            format!("broker closed the WebSocket ({}): {}", f.code, f.reason)
                        }
                        Some(f) => format!("broker closed the WebSocket ({})", f.code),
                        None => "broker closed the WebSocket".to_owned(),
                    };
                    let mut failure = Failure::clean(reason);
                    if refused {
                        failure.close = Close::Refused;
                    }
                    Err(failure)
                }
                Message::Frame(_) => continue,
            });
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn failure(e: WsError) -> Failure {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => Failure::clean("WebSocket closed"),
        WsError::Io(io) => Failure::io("WebSocket I/O failed", io),
        WsError::Capacity(c) => Failure::error(Error::protocol(format!(
            "inbound WebSocket message too large: {c}"
        ))),
        // A reset without a closing handshake is how a dead broker or a cut
        // link looks: the connection was lost, retryably.
        WsError::Protocol(
            tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => Failure::reset("WebSocket connection lost without a closing handshake"),
        WsError::Protocol(p) => {
            Failure::error(Error::protocol(format!("WebSocket protocol error: {p}")))
        }
        other => Failure::error(Error::connection(format!("WebSocket failed: {other}"))),
    }
}
