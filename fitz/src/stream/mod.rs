//! Stream: append sessions, paged reads, commit watches (types 600–609).

use std::fmt;

use crate::connection::Connection;

/// The Stream domain of a [`crate::Client`] (see [`crate::Client::stream`]).
#[derive(Clone)]
pub struct Streams {
    #[allow(dead_code)] // filled in by the domain's implementation
    conn: Connection,
}

impl fmt::Debug for Streams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Streams")
    }
}

impl Streams {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }
}
