//! KV: transactions over one resource and change watches (types 100–111).

use std::fmt;

use crate::connection::Connection;

/// The KV domain of a [`crate::Client`] (see [`crate::Client::kv`]).
#[derive(Clone)]
pub struct Kv {
    #[allow(dead_code)] // filled in by the domain's implementation
    conn: Connection,
}

impl fmt::Debug for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kv")
    }
}

impl Kv {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }
}
