//! Queue: work queues with reservations and availability watches (types 200–209).

use std::fmt;

use crate::connection::Connection;

/// The Queue domain of a [`crate::Client`] (see [`crate::Client::queue`]).
#[derive(Clone)]
pub struct Queue {
    #[allow(dead_code)] // filled in by the domain's implementation
    conn: Connection,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Queue")
    }
}

impl Queue {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }
}
