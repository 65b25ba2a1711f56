//! RPC: calls with streamed responses, workers, cancellation (types 300–305).

use std::fmt;

use crate::connection::Connection;

/// The RPC domain of a [`crate::Client`] (see [`crate::Client::rpc`]).
#[derive(Clone)]
pub struct Rpc {
    #[allow(dead_code)] // filled in by the domain's implementation
    conn: Connection,
}

impl fmt::Debug for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rpc")
    }
}

impl Rpc {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }
}
