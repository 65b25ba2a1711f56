//! Auto-paging readers: replay until caught up, or follow forever.
//!
//! One engine ([`Pager`]) issues READs page after page, applying the
//! continuation rules (next offset on the selector's axis, echoed global
//! continuation while the broker has more, stall detection). A replay ends
//! on the first caught-up page. A follow was subscribed before its first
//! READ and, once caught up, waits for a commit notification or a
//! reconnect (commits made while disconnected are never notified), then
//! reads again.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use fitz_protocol::route::SelectorScope;
use futures_core::Stream;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use super::fetch_page;
use super::read::{ReadPage, ReadPosition, ReadSpec, StreamItem};
use crate::connection::{Connection, Generation, Subscription};
use crate::error::{Error, Result};
use crate::events::State;
use crate::retry::RetryPolicy;

/// Consecutive `has_more` pages without progress that make a stall.
const STALL_PAGES: u8 = 2;

/// What a follow waits on between catch-ups.
pub(super) struct Follow {
    /// Commit notifications of the selector; the items only wake.
    pub wake: Subscription<()>,
    pub state: watch::Receiver<State>,
    /// The generation the last READ was issued on.
    pub read_generation: Generation,
    /// A terminal subscription error seen while draining wakes.
    pub failed: Option<Error>,
}

impl Follow {
    /// Resolves when there may be something new to read.
    async fn wait(&mut self, conn: &Connection) -> Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        loop {
            // A reconnect since the last READ: whatever was committed while
            // disconnected was never notified.
            if conn.generation() != self.read_generation
                && *self.state.borrow_and_update() == State::Authenticated
            {
                return Ok(());
            }
            tokio::select! {
                item = self.wake.next() => match item {
                    Some(Ok(())) => {
                        self.drain();
                        return Ok(());
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err(Error::cancelled("the follow subscription ended")),
                },
                changed = self.state.changed() => {
                    if changed.is_err() || *self.state.borrow() == State::Closed {
                        return Err(Error::closed());
                    }
                }
            }
        }
    }

    /// Coalesces the wakes already queued: one READ covers them all.
    fn drain(&mut self) {
        loop {
            match self.wake.next().now_or_never() {
                Some(Some(Ok(()))) => continue,
                Some(Some(Err(e))) => {
                    self.failed = Some(e);
                    return;
                }
                _ => return,
            }
        }
    }
}

/// The paging engine shared by every auto-paging reader.
pub(super) struct Pager {
    conn: Connection,
    retry: RetryPolicy,
    spec: ReadSpec,
    position: ReadPosition,
    /// Consecutive `has_more` pages that did not move the cursor.
    stalls: u8,
    caught_up: bool,
    done: bool,
    follow: Option<Follow>,
}

impl Pager {
    pub fn new(
        conn: Connection,
        retry: RetryPolicy,
        spec: ReadSpec,
        from: u64,
        follow: Option<Follow>,
    ) -> Self {
        Self {
            conn,
            retry,
            spec,
            position: ReadPosition::at(from),
            stalls: 0,
            caught_up: false,
            done: false,
            follow,
        }
    }

    /// The next page; `None` once a replay caught up or after an error.
    async fn next_page(&mut self) -> Option<Result<ReadPage>> {
        if self.done {
            return None;
        }
        if self.caught_up {
            let Some(follow) = &mut self.follow else {
                self.done = true;
                return None;
            };
            if let Err(e) = follow.wait(&self.conn).await {
                self.finish();
                return Some(Err(e));
            }
        }
        if let Some(follow) = &mut self.follow {
            follow.read_generation = self.conn.generation();
        }
        let result = fetch_page(&self.conn, &self.retry, &self.spec, self.position)
            .await
            .and_then(|page| self.advance(page));
        if result.is_err() {
            self.finish();
        }
        Some(result)
    }

    /// Ends the reader after a failure and releases the follow subscription
    /// now rather than when the reader is dropped.
    fn finish(&mut self) {
        self.done = true;
        self.follow = None;
    }

    fn advance(&mut self, page: ReadPage) -> Result<ReadPage> {
        let moved = page.next_offset() != self.position.offset();
        if page.caught_up() || moved {
            self.stalls = 0;
        } else {
            // A rotated continuation alone is no progress.
            self.stalls += 1;
            if self.stalls >= STALL_PAGES {
                return Err(Error::protocol(format!(
                    "stream READ of {} stalled: {STALL_PAGES} pages in a row reported more \
                     without moving past offset {}",
                    &*self.spec.selector,
                    self.position.offset()
                )));
            }
        }
        self.position = page.next_position();
        self.caught_up = page.caught_up();
        Ok(page)
    }

    pub fn into_stream(self) -> BoxStream<'static, Result<ReadPage>> {
        futures_util::stream::unfold(self, |mut pager| async move {
            let page = pager.next_page().await?;
            Some((page, pager))
        })
        // Polling past the end keeps answering None.
        .fuse()
        .boxed()
    }
}

/// Pages of an auto-paging read, in order: a `Stream` of [`ReadPage`]s.
///
/// Every successful page is yielded, including empty and filtered-only ones
/// (their [`ReadPage::next_offset`] may still move). A replay
/// ([`super::Streams::read_pages`]) ends after the first caught-up page; a
/// follow ([`super::Streams::follow_pages`]) goes on. An error is the last
/// item.
pub struct ReadPages {
    inner: BoxStream<'static, Result<ReadPage>>,
    selector: String,
}

impl ReadPages {
    pub(super) fn new(pager: Pager, selector: String) -> Self {
        Self {
            inner: pager.into_stream(),
            selector,
        }
    }

    /// The selector read.
    pub fn selector(&self) -> &str {
        &self.selector
    }
}

impl Stream for ReadPages {
    type Item = Result<ReadPage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_next_unpin(cx)
    }
}

impl fmt::Debug for ReadPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadPages")
            .field("selector", &self.selector)
            .finish()
    }
}

/// Items of an auto-paging read, in axis order: a `Stream` of
/// [`StreamItem`]s (records and filtered markers).
///
/// [`StreamReader::next_offset`] is the offset to resume from so that
/// nothing not yet yielded is skipped: store it with your progress. A replay
/// ([`super::Streams::read`]) ends once caught up; a follow
/// ([`super::Streams::follow`]) goes on. An error is the last item.
///
/// ```no_run
/// # async fn demo(client: fitz::Client) -> fitz::Result<()> {
/// use futures_util::StreamExt;
/// use fitz::stream::{ReadOptions, StreamItem};
///
/// let mut reader = client.stream().read("stream://prod/orders/*", 0, ReadOptions::new())?;
/// while let Some(item) = reader.next().await {
///     if let StreamItem::Record(record) = item? {
///         println!("{} #{}: {:?}", record.route(), record.offset(), record.body());
///     }
/// }
/// println!("caught up; resume from {}", reader.next_offset());
/// # Ok(()) }
/// ```
pub struct StreamReader {
    pages: BoxStream<'static, Result<ReadPage>>,
    selector: String,
    scope: SelectorScope,
    buffer: VecDeque<StreamItem>,
    /// Next offset of the page being drained.
    page_next: u64,
    resume: u64,
}

impl StreamReader {
    pub(super) fn new(pager: Pager, selector: String, scope: SelectorScope, from: u64) -> Self {
        Self {
            pages: pager.into_stream(),
            selector,
            scope,
            buffer: VecDeque::new(),
            page_next: from,
            resume: from,
        }
    }

    /// The selector read.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The axis the selector pages by.
    pub fn scope(&self) -> SelectorScope {
        self.scope
    }

    /// Where to resume so that nothing not yet yielded is skipped.
    pub fn next_offset(&self) -> u64 {
        self.resume
    }
}

impl Stream for StreamReader {
    type Item = Result<StreamItem>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.buffer.pop_front() {
                if this.buffer.is_empty() {
                    this.resume = this.page_next;
                } else if let Some(offset) = item.axis_offset(this.scope) {
                    this.resume = this.resume.max(offset.saturating_add(1));
                }
                return Poll::Ready(Some(Ok(item)));
            }
            match ready!(this.pages.poll_next_unpin(cx)) {
                Some(Ok(page)) => {
                    this.page_next = page.next_offset();
                    let items = page.into_items();
                    if items.is_empty() {
                        this.resume = this.page_next;
                    }
                    this.buffer.extend(items);
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            }
        }
    }
}

impl fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader")
            .field("selector", &self.selector)
            .field("scope", &self.scope)
            .field("next_offset", &self.resume)
            .finish()
    }
}
