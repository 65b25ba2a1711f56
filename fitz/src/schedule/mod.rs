//! Schedule: durable cron schedules and their fires (types 700–707).

use std::fmt;

use crate::connection::Connection;

/// The Schedule domain of a [`crate::Client`] (see [`crate::Client::schedule`]).
#[derive(Clone)]
pub struct Schedule {
    #[allow(dead_code)] // filled in by the domain's implementation
    conn: Connection,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Schedule")
    }
}

impl Schedule {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }
}
