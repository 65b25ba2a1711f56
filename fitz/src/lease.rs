//! Lease: exclusive ownership with fencing tokens (types 400–410).

use std::fmt;

use crate::connection::Connection;

/// The Lease domain of a [`crate::Client`] (see [`crate::Client::lease`]).
#[derive(Clone)]
pub struct Lease {
    #[allow(dead_code)] // filled in by the domain's implementation
    conn: Connection,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lease")
    }
}

impl Lease {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }
}
