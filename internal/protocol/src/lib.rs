//! `fitz-protocol`: the sans-IO codec for the Fitz broker wire protocol.
//!
//! Both the `fitz` client and `fitz-broker` use this crate, so the two cannot
//! drift apart. It knows nothing about sockets or runtimes:
//!
//! * [`frame`]: TCP framing (`[u32 BE length][records]`); WebSocket carries
//!   one frame per binary message.
//! * [`record`]: records `[type][u16 length][payload]`, several per frame,
//!   and the CORRELATE/CORRELATED labels.
//! * one module per domain ([`kv`], [`queue`], [`rpc`], [`lease`],
//!   [`notice`], [`stream`], [`schedule`]) plus [`control`], each with the
//!   messages of both directions as plain structs;
//! * [`reply`]: reply bodies and the three error envelopes;
//! * [`codes`]: the error-code registry; [`caps`]: capability bits;
//! * [`cron`]: the five-field UTC cron grammar of the Schedule domain;
//! * [`route`]: route grammar, per-domain shapes and wildcard matching.
//!
//! Decoding slices the input [`bytes::Bytes`]: byte and string fields share
//! the frame's allocation. Encoding writes straight into a
//! [`bytes::BytesMut`]. Decoders reject truncation, trailing bytes, bad flags
//! and hostile counts, and never panic.
//!
//! ```
//! use bytes::BytesMut;
//! use fitz_protocol::{kv, Message, decode_reply, encode_ok};
//!
//! let begin = kv::Begin { route: "kv://prod/app/users".into(), mode: kv::TxMode::ReadWrite };
//! let mut buf = BytesMut::new();
//! begin.encode_record(&mut buf).unwrap();
//! assert_eq!(&buf[..3], &[100, 0, 24]);
//!
//! let mut reply = BytesMut::new();
//! encode_ok(&mut reply, &kv::BeginOk { tx_id: 7 }).unwrap();
//! let payload = reply.freeze().slice(3..);
//! assert_eq!(decode_reply::<kv::BeginOk>(payload).unwrap(), Ok(kv::BeginOk { tx_id: 7 }));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod caps;
pub mod codes;
mod commit_event;
pub mod control;
pub mod cron;
mod error;
pub mod frame;
pub mod kv;
pub mod lease;
pub mod message;
pub mod notice;
pub mod queue;
pub mod record;
pub mod reply;
pub mod route;
pub mod rpc;
pub mod schedule;
pub mod stream;
pub mod types;
pub mod wire;

pub use caps::Capabilities;
pub use error::{DecodeError, EncodeError, FrameError};
pub use message::{ClientMessage, ServerPush};
pub use record::{Labelled, LabelledRecords, Record, Records, Side};
pub use reply::{
    Ack, Envelope, Message, ReplyBody, WireError, decode_reply, decode_reply_with, encode_error,
    encode_ok,
};
pub use route::{RouteError, Scheme};
pub use wire::{Reader, Str, WireWrite};
