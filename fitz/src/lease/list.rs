//! LIST (410): the held-lease inventory, paged over one snapshot.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use fitz_protocol::route::{self, Scheme};
use fitz_protocol::{Str, lease};
use futures_core::Stream;
use futures_util::future::BoxFuture;

use crate::connection::{Connection, decode_body};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// Where the next page of a LIST snapshot starts. Opaque; it remembers the
/// pattern it was issued for, and the broker rejects it (5011) once the
/// snapshot is finished or the broker restarted.
#[derive(Clone, PartialEq, Eq)]
pub struct ListCursor {
    pattern: Str,
    inner: lease::ListCursor,
}

impl fmt::Debug for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListCursor")
            .field("pattern", &&*self.pattern)
            .finish_non_exhaustive()
    }
}

/// One held lease in a LIST result.
#[derive(Clone, PartialEq, Eq)]
pub struct HeldLease {
    route: Str,
    owner: Str,
    holder_incarnation: u64,
    acquired_at: Str,
    expires_in: Duration,
    renewals: u32,
}

impl HeldLease {
    /// The lease's concrete route.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The holder's owner id (as passed to ACQUIRE).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Opaque identity of the holding session: stable while it lives,
    /// different after a reconnect.
    pub fn holder_incarnation(&self) -> u64 {
        self.holder_incarnation
    }

    /// When it was acquired, as the broker's RFC 3339 timestamp.
    pub fn acquired_at(&self) -> &str {
        &self.acquired_at
    }

    /// Time left before it expires unless renewed (whole seconds, as of the
    /// snapshot).
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }

    /// Renewals so far.
    pub fn renewals(&self) -> u32 {
        self.renewals
    }
}

impl fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldLease")
            .field("route", &&*self.route)
            .field("owner", &&*self.owner)
            .field("holder_incarnation", &self.holder_incarnation)
            .field("acquired_at", &&*self.acquired_at)
            .field("expires_in", &self.expires_in)
            .field("renewals", &self.renewals)
            .finish()
    }
}

/// One page of a LIST snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    leases: Vec<HeldLease>,
    next: Option<ListCursor>,
}

impl ListPage {
    /// The leases of this page.
    pub fn leases(&self) -> &[HeldLease] {
        &self.leases
    }

    /// Takes the leases.
    pub fn into_leases(self) -> Vec<HeldLease> {
        self.leases
    }

    /// The cursor of the next page; `None` on the last one.
    pub fn next_cursor(&self) -> Option<&ListCursor> {
        self.next.as_ref()
    }
}

pub(super) async fn fetch_page(
    conn: &Connection,
    retry: &RetryPolicy,
    pattern: &str,
    cursor: Option<&ListCursor>,
    limit: u32,
) -> Result<ListPage> {
    route::validate_pattern(pattern, Scheme::Lease).map_err(Error::route)?;
    if let Some(c) = cursor
        && *c.pattern != *pattern
    {
        return Err(Error::invalid(format!(
            "this LIST cursor continues pattern {:?}, not {pattern:?}",
            &*c.pattern
        )));
    }
    let pattern = Str::from(pattern);
    let msg = lease::List {
        pattern: pattern.clone(),
        cursor: cursor.map(|c| c.inner),
        limit,
    };
    let payload = crate::retry::replay_safe_raw(retry, || conn.request(&msg)).await?;
    let ok: lease::ListOk = decode_body(payload)?;
    Ok(ListPage {
        leases: ok
            .items
            .into_iter()
            .map(|i| HeldLease {
                route: i.route,
                owner: i.owner,
                holder_incarnation: i.holder_incarnation,
                acquired_at: i.acquired_at,
                expires_in: Duration::from_secs(i.expires_in_secs),
                renewals: i.renewals,
            })
            .collect(),
        next: ok.next.map(|inner| ListCursor { pattern, inner }),
    })
}

/// Every held lease matching a pattern (see [`super::Leases::list`]): a
/// `Stream` fetching the pages of one snapshot as it is consumed. It ends
/// after the last lease, or after its first error.
pub struct LeaseList {
    conn: Connection,
    retry: RetryPolicy,
    pattern: String,
    page_size: u32,
    cursor: Option<ListCursor>,
    buffered: std::vec::IntoIter<HeldLease>,
    fetching: Option<BoxFuture<'static, Result<ListPage>>>,
    done: bool,
}

impl LeaseList {
    pub(super) fn new(conn: Connection, retry: RetryPolicy, pattern: &str) -> Self {
        Self {
            conn,
            retry,
            pattern: pattern.to_owned(),
            page_size: 0,
            cursor: None,
            buffered: Vec::new().into_iter(),
            fetching: None,
            done: false,
        }
    }

    /// Leases per request (0, the default: the broker's 100; it caps pages
    /// at 500). Takes effect from the next request.
    #[must_use]
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n;
        self
    }
}

impl Stream for LeaseList {
    type Item = Result<HeldLease>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Every field is Unpin.
        let this = self.get_mut();
        loop {
            if let Some(lease) = this.buffered.next() {
                return Poll::Ready(Some(Ok(lease)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let fetching = this.fetching.get_or_insert_with(|| {
                let conn = this.conn.clone();
                let pattern = this.pattern.clone();
                let cursor = this.cursor.clone();
                let limit = this.page_size;
                let retry = this.retry;
                Box::pin(async move {
                    fetch_page(&conn, &retry, &pattern, cursor.as_ref(), limit).await
                })
            });
            let page = ready!(fetching.as_mut().poll(cx));
            this.fetching = None;
            match page {
                Ok(page) => {
                    this.done = page.next.is_none();
                    this.cursor = page.next;
                    this.buffered = page.leases.into_iter();
                }
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl fmt::Debug for LeaseList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseList")
            .field("pattern", &self.pattern)
            .field("page_size", &self.page_size)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
