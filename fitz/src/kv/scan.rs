//! SCAN: key ranges, paging and resuming.
//!
//! The wire speaks in *directional* bounds (`start` where the scan begins,
//! inclusive; `end` where it stops, exclusive) and can resume a page
//! strictly after a key only when the broker advertises
//! [`Capabilities::KV_SCAN_EXCLUSIVE`]. The API speaks in plain key ranges
//! instead; every request is planned from the range that is still unread, so
//! resuming is nothing more than tightening one bound to `Excluded(last key)`:
//!
//! | wanted | with the capability | without it |
//! |---|---|---|
//! | forward, exclusive start `k` | `start = k`, `start_exclusive = 1` | `start = k ‖ 0x00` (the immediate successor of `k`) |
//! | reverse, exclusive start `k` | `start = k`, `start_exclusive = 1` | `start = k` and drop a returned `k` |
//! | inclusive upper bound `k` (forward) | `end = k ‖ 0x00` | same |
//! | inclusive lower bound `k` (reverse) | `end = k` minus its last byte, entries below `k` end the scan | same |
//!
//! The one case the wire cannot express: without the capability, a reverse
//! scan whose page holds only the entry it resumes from (a value near the
//! 64 KiB page budget) cannot make progress; it fails with
//! [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) rather than
//! looping.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::{Capabilities, kv};
use futures_core::Stream;
use futures_util::future::BoxFuture;

use super::{RESERVED_END, RESERVED_PREFIX, Transaction, TxHandle, is_reserved};
use crate::error::{Error, Result};

/// Which entries a scan returns, in which order, and how many.
///
/// Built from a key range, then refined:
///
/// ```
/// use fitz::kv::ScanOptions;
///
/// let everything = ScanOptions::all();
/// let users = ScanOptions::prefix("user:");
/// let newest_ten = ScanOptions::range("log:2024".."log:2025").reverse().limit(10);
/// let from_m = ScanOptions::range("m"..).page_size(100);
/// # let _ = (everything, users, newest_ten, from_m);
/// ```
///
/// # Paging
///
/// The broker returns at most 1,024 entries and 64 KiB per page, limit or
/// not; [`Transaction::scan`] follows `has_more` until the range is done.
/// Each next page starts strictly after the last key received: natively when
/// the broker advertises [`Capabilities::KV_SCAN_EXCLUSIVE`], otherwise by
/// starting a forward page at the key's immediate successor (`key ‖ 0x00`)
/// and a reverse page at the key itself, dropping it locally. That last
/// workaround needs the repeated entry and the next one to fit one page; a
/// reverse scan over entries of nearly 32 KiB or more without the capability
/// can fail with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported)
/// rather than skip or repeat entries.
///
/// # Reserved keys
///
/// Keys under [`RESERVED_PREFIX`](super::RESERVED_PREFIX) (`\0sync/`, the
/// sync layer's markers) are never returned, whatever the range. They are
/// dropped from the broker's replies, and a page they left short of its
/// limit (or empty) is completed by a second request that starts after
/// them, so limits and page sizes count returned keys only and a page never
/// comes back short or empty with [`ScanPage::has_more`] because of them.
/// Such a page is two broker replies, so it can hold up to twice the 64 KiB
/// of one (never more entries than its limit or page size). One thing they
/// do show: `has_more` is the broker's, so a page that ends just before
/// reserved keys with nothing visible after them says `has_more`, and the
/// next page comes back empty and last.
#[derive(Clone, PartialEq, Eq)]
pub struct ScanOptions {
    lower: Bound<Bytes>,
    upper: Bound<Bytes>,
    reverse: bool,
    limit: Option<u64>,
    page_size: Option<u32>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self::all()
    }
}

impl ScanOptions {
    /// Every key of the resource, ascending.
    pub fn all() -> Self {
        Self {
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
            reverse: false,
            limit: None,
            page_size: None,
        }
    }

    /// The keys in `range`, compared byte-wise: `"a".."c"`, `b"k"..=b"m"`,
    /// `key..`, `(Bound::Excluded(a), Bound::Unbounded)` …
    pub fn range<K: AsRef<[u8]>>(range: impl RangeBounds<K>) -> Self {
        Self {
            lower: to_owned(range.start_bound()),
            upper: to_owned(range.end_bound()),
            ..Self::all()
        }
    }

    /// The keys starting with `prefix`.
    pub fn prefix(prefix: impl AsRef<[u8]>) -> Self {
        let prefix = prefix.as_ref();
        Self {
            lower: Bound::Included(Bytes::copy_from_slice(prefix)),
            upper: prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded),
            ..Self::all()
        }
    }

    /// Descending key order (the same keys, last first).
    #[must_use]
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }

    /// At most `n` entries in all (for [`Transaction::scan_page`]: in the page).
    #[must_use]
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// At most `n` entries per request (`0`: the broker's page size, at most
    /// 1,024 entries and 64 KiB). Smaller pages mean less memory per page and
    /// more round trips.
    #[must_use]
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = (n > 0).then_some(n);
        self
    }

    /// Continues strictly after `key` in the scan's direction: the range's
    /// starting side (lower bound ascending, upper bound descending) becomes
    /// `Excluded(key)`. Use it with [`ScanPage::last_key`].
    #[must_use]
    pub fn resume_after(mut self, key: impl AsRef<[u8]>) -> Self {
        self.advance(Bytes::copy_from_slice(key.as_ref()));
        self
    }

    /// True for a descending scan.
    pub fn is_reverse(&self) -> bool {
        self.reverse
    }

    fn advance(&mut self, key: Bytes) {
        if self.reverse {
            self.upper = Bound::Excluded(key);
        } else {
            self.lower = Bound::Excluded(key);
        }
    }

    /// Nothing can match: the range is empty or the limit is used up.
    fn exhausted(&self) -> bool {
        self.limit == Some(0) || self.range_is_empty()
    }

    /// No key lies in the range.
    fn range_is_empty(&self) -> bool {
        match (&self.lower, &self.upper) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(l), Bound::Included(u)) => l > u,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => {
                l >= u
            }
        }
    }
}

impl fmt::Debug for ScanOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanOptions")
            .field("lower", &self.lower)
            .field("upper", &self.upper)
            .field("reverse", &self.reverse)
            .field("limit", &self.limit)
            .field("page_size", &self.page_size)
            .finish()
    }
}

fn to_owned<K: AsRef<[u8]>>(b: Bound<&K>) -> Bound<Bytes> {
    match b {
        Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k.as_ref())),
        Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k.as_ref())),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The first key after every key starting with `prefix`: the prefix with its
/// last non-0xFF byte incremented and the rest cut. `None` when there is no
/// such key (an empty prefix or one of only 0xFF bytes).
fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let i = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut end = BytesMut::from(&prefix[..=i]);
    end[i] += 1;
    Some(end.freeze())
}

/// `key ‖ 0x00`: the smallest key greater than `key`.
fn successor(key: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(key.len() + 1);
    b.put_slice(key);
    b.put_u8(0);
    b.freeze()
}

/// One SCAN request and how to read its page.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    start: Option<Bytes>,
    end: Option<Bytes>,
    start_exclusive: Option<bool>,
    limit: Option<u32>,
    /// Emulated exclusive start: drop a first entry with this key.
    skip: Option<Bytes>,
    /// Reverse scan with an inclusive lower bound: entries below it are past
    /// the range, and end the scan.
    floor: Option<Bytes>,
    /// Entries the caller wants from this page.
    want: Option<u32>,
}

/// Plans the request for what is left of `o`; `None` when nothing is left.
fn plan(o: &ScanOptions, exclusive: bool) -> Option<Plan> {
    if o.exhausted() {
        return None;
    }
    let want = match (o.limit, o.page_size) {
        (Some(l), Some(p)) => Some(u32::try_from(l).unwrap_or(u32::MAX).min(p)),
        (Some(l), None) => Some(u32::try_from(l).unwrap_or(u32::MAX)),
        (None, p) => p,
    };
    let mut p = Plan {
        start: None,
        end: None,
        start_exclusive: None,
        limit: want,
        skip: None,
        floor: None,
        want,
    };
    let (first, last) = if o.reverse {
        (&o.upper, &o.lower)
    } else {
        (&o.lower, &o.upper)
    };
    match first {
        Bound::Unbounded => {}
        Bound::Included(k) => p.start = Some(k.clone()),
        Bound::Excluded(k) if exclusive => {
            p.start = Some(k.clone());
            p.start_exclusive = Some(true);
        }
        Bound::Excluded(k) if !o.reverse => p.start = Some(successor(k)),
        Bound::Excluded(k) => {
            // No predecessor exists to start a reverse scan at: start at `k`
            // itself and drop it, asking for one more entry to make up.
            p.start = Some(k.clone());
            p.skip = Some(k.clone());
            p.limit = want.map(|n| n.saturating_add(1));
        }
    }
    match last {
        Bound::Unbounded => {}
        Bound::Excluded(k) => p.end = Some(k.clone()),
        Bound::Included(k) if !o.reverse => p.end = Some(successor(k)),
        // Every key is ≥ the empty key.
        Bound::Included(k) if k.is_empty() => {}
        Bound::Included(k) => {
            // `k` minus its last byte sorts below `k`, so every key ≥ `k`
            // is above it; the few keys in between are cut off locally.
            p.end = Some(k.slice(..k.len() - 1));
            p.floor = Some(k.clone());
        }
    }
    Some(p)
}

/// Applies a plan's local rules to the broker's page.
fn take(plan: &Plan, page: kv::ScanOk) -> Result<ScanPage> {
    let mut entries = page.items;
    let mut has_more = page.has_more;
    let skipped = plan
        .skip
        .as_ref()
        .is_some_and(|k| entries.first().is_some_and(|(first, _)| first == k));
    if skipped {
        entries.remove(0);
    }
    if let Some(floor) = &plan.floor
        && let Some(i) = entries.iter().position(|(k, _)| k < floor)
    {
        entries.truncate(i);
        has_more = false;
    }
    if let Some(want) = plan.want
        && entries.len() > want as usize
    {
        entries.truncate(want as usize);
        has_more = true;
    }
    if has_more && entries.is_empty() {
        return Err(if skipped {
            Error::unsupported(
                "this reverse KV scan cannot resume past an entry that fills a whole page: \
                 the broker does not advertise KV_SCAN_EXCLUSIVE",
            )
        } else {
            Error::protocol("KV SCAN reported more entries but returned none")
        });
    }
    Ok(ScanPage { entries, has_more })
}

impl ScanOptions {
    /// After a page that ended on a reserved key: moves the starting side
    /// past the whole reserved prefix (forward: to its end; reverse: below
    /// its start), so the next request returns none of its keys.
    fn skip_reserved(&mut self) {
        if self.reverse {
            self.upper = Bound::Excluded(Bytes::from_static(RESERVED_PREFIX));
        } else {
            self.lower = Bound::Included(Bytes::from_static(RESERVED_END));
        }
    }
}

/// Fetches the first page of what is left of `options`, leaving out keys
/// under [`RESERVED_PREFIX`](super::RESERVED_PREFIX).
///
/// One request, as the range asks; reserved keys in its reply are dropped.
/// When that leaves the page short of its limit (or, without a limit,
/// empty) while the broker has more, the page goes on after the last key
/// received (past the whole prefix if that key was reserved): a page is
/// never short, nor empty with `has_more`, because reserved keys were
/// skipped. At most two requests per page (the second starts past the
/// prefix), and none extra when the reply held no reserved key.
pub(super) async fn fetch_page(tx: &TxHandle, options: &ScanOptions) -> Result<ScanPage> {
    let want = match (options.limit, options.page_size) {
        (Some(0), _) => return Ok(ScanPage::default()),
        (Some(l), Some(p)) => Some(l.min(u64::from(p))),
        (Some(l), None) => Some(l),
        (None, p) => p.map(u64::from),
    };
    // What is left to read, once a page has to go on (rare: only after a
    // reply that held reserved keys); the first request is `options` as is.
    let mut rest: Option<ScanOptions> = None;
    let mut out = ScanPage::default();
    loop {
        let page = match &rest {
            None => fetch_segment(tx, options).await?,
            Some(r) => {
                let part = ScanOptions {
                    limit: want.map(|w| w - out.len() as u64),
                    page_size: None,
                    ..r.clone()
                };
                fetch_segment(tx, &part).await?
            }
        };
        let received = page.len();
        let before = out.len();
        let last_reserved = page.entries.last().is_some_and(|(k, _)| is_reserved(k));
        if out.entries.is_empty() {
            // The usual case: the broker's page, kept in place.
            out.entries = page.entries;
            // A read-only pass first: most pages hold no reserved key.
            if out.entries.iter().any(|(k, _)| is_reserved(k)) {
                out.entries.retain(|(k, _)| !is_reserved(k));
            }
        } else {
            let visible = page.entries.into_iter().filter(|(k, _)| !is_reserved(k));
            out.entries.extend(visible);
        }
        let dropped = out.len() - before < received;
        out.has_more = page.has_more;
        let room = want.map_or(out.is_empty(), |w| (out.len() as u64) < w);
        if !(page.has_more && dropped && room) {
            return Ok(out);
        }
        let r = rest.get_or_insert_with(|| options.clone());
        if last_reserved {
            // Past the whole prefix.
            r.skip_reserved();
        } else if let Some((last, _)) = out.entries.last() {
            // The last key received was kept: go on after it.
            r.advance(last.clone());
        } else {
            // Unreachable (a kept last key means a non-empty page).
            return Ok(out);
        }
        if r.range_is_empty() {
            out.has_more = false;
            return Ok(out);
        }
    }
}

/// Fetches the first page of `options`' range as the broker has it.
async fn fetch_segment(tx: &TxHandle, options: &ScanOptions) -> Result<ScanPage> {
    let exclusive = tx
        .conn
        .capabilities()
        .is_some_and(|c| c.contains(Capabilities::KV_SCAN_EXCLUSIVE));
    let Some(plan) = plan(options, exclusive) else {
        return Ok(ScanPage::default());
    };
    let msg = kv::Scan {
        tx_id: tx.tx_id,
        route: tx.route.clone(),
        start: plan.start.clone(),
        end: plan.end.clone(),
        limit: plan.limit,
        reverse: options.reverse,
        start_exclusive: plan.start_exclusive,
    };
    let page: kv::ScanOk = tx.read(&msg).await?;
    take(&plan, page)
}

/// One page of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    entries: Vec<(Bytes, Bytes)>,
    has_more: bool,
}

impl ScanPage {
    /// The entries, in scan order.
    pub fn entries(&self) -> &[(Bytes, Bytes)] {
        &self.entries
    }

    /// Takes the entries.
    pub fn into_entries(self) -> Vec<(Bytes, Bytes)> {
        self.entries
    }

    /// More entries follow in the range (continue with
    /// [`ScanOptions::resume_after`] and [`ScanPage::last_key`]).
    pub fn has_more(&self) -> bool {
        self.has_more
    }

    /// The key to resume after.
    pub fn last_key(&self) -> Option<&Bytes> {
        self.entries.last().map(|(k, _)| k)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl IntoIterator for ScanPage {
    type Item = (Bytes, Bytes);
    type IntoIter = std::vec::IntoIter<(Bytes, Bytes)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// A scan in progress: a `Stream` of `(key, value)` that fetches the next
/// page when the current one is consumed (see [`Transaction::scan`]).
///
/// It ends after the last entry, or after its first error. It borrows the
/// transaction mutably, so no other operation of that transaction can run
/// in between (the broker requires them to be sequential).
pub struct Scan<'tx> {
    tx: TxHandle,
    /// What is still unread: bounds tightened and limit reduced per page.
    rest: ScanOptions,
    buffered: std::vec::IntoIter<(Bytes, Bytes)>,
    fetching: Option<BoxFuture<'static, Result<ScanPage>>>,
    done: bool,
    _tx: PhantomData<&'tx mut Transaction>,
}

impl<'tx> Scan<'tx> {
    pub(super) fn new(tx: &'tx mut Transaction, options: ScanOptions) -> Self {
        Self {
            tx: tx.handle(),
            rest: options,
            buffered: Vec::new().into_iter(),
            fetching: None,
            done: false,
            _tx: PhantomData,
        }
    }
}

impl Stream for Scan<'_> {
    type Item = Result<(Bytes, Bytes)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Every field is Unpin.
        let this = self.get_mut();
        loop {
            if let Some(entry) = this.buffered.next() {
                return Poll::Ready(Some(Ok(entry)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let fetching = this.fetching.get_or_insert_with(|| {
                let tx = this.tx.clone();
                let rest = this.rest.clone();
                Box::pin(async move { fetch_page(&tx, &rest).await })
            });
            let page = ready!(fetching.as_mut().poll(cx));
            this.fetching = None;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            };
            if let Some(last) = page.last_key() {
                this.rest.advance(last.clone());
            }
            if let Some(limit) = &mut this.rest.limit {
                *limit = limit.saturating_sub(page.len() as u64);
            }
            this.done = !page.has_more || this.rest.exhausted();
            this.buffered = page.entries.into_iter();
        }
    }
}

impl fmt::Debug for Scan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scan")
            .field("rest", &self.rest)
            .field("buffered", &self.buffered.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn page(keys: &[&str], has_more: bool) -> kv::ScanOk {
        kv::ScanOk {
            items: keys.iter().map(|k| (b(k), b("v"))).collect(),
            has_more,
        }
    }

    fn keys(p: &ScanPage) -> Vec<&[u8]> {
        p.entries().iter().map(|(k, _)| &k[..]).collect()
    }

    #[test]
    fn prefixes_end_at_the_next_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b("ac")));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b("b")));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
        let o = ScanOptions::prefix("user:");
        assert_eq!(o.lower, Bound::Included(b("user:")));
        assert_eq!(o.upper, Bound::Excluded(b("user;")));
    }

    #[test]
    fn forward_plans_map_ranges_onto_directional_bounds() {
        let p = plan(&ScanOptions::range("a".."c"), true).unwrap();
        assert_eq!(
            (p.start, p.end, p.start_exclusive),
            (Some(b("a")), Some(b("c")), None)
        );
        let p = plan(&ScanOptions::range("a"..="c"), false).unwrap();
        assert_eq!(p.end, Some(b("c\0")));
        let p = plan(&ScanOptions::all(), false).unwrap();
        assert_eq!((p.start, p.end, p.limit), (None, None, None));
    }

    #[test]
    fn forward_resumes_exclusively_with_or_without_the_capability() {
        let o = ScanOptions::all().resume_after("k");
        let p = plan(&o, true).unwrap();
        assert_eq!((p.start, p.start_exclusive), (Some(b("k")), Some(true)));
        let p = plan(&o, false).unwrap();
        assert_eq!(
            (p.start, p.start_exclusive, p.skip),
            (Some(b("k\0")), None, None)
        );
    }

    #[test]
    fn reverse_plans_start_at_the_upper_bound() {
        let o = ScanOptions::range("a".."m").reverse().limit(5);
        // Exclusive upper bound: natively, or by dropping the bound itself.
        let p = plan(&o, true).unwrap();
        assert_eq!(
            (p.start, p.start_exclusive, p.limit),
            (Some(b("m")), Some(true), Some(5))
        );
        let p = plan(&o, false).unwrap();
        assert_eq!((p.start.clone(), p.start_exclusive), (Some(b("m")), None));
        assert_eq!((p.skip, p.limit, p.want), (Some(b("m")), Some(6), Some(5)));
        // Inclusive lower bound "a": end below it, cut locally.
        assert_eq!((p.end, p.floor), (Some(b("")), Some(b("a"))));
        let p = plan(&ScanOptions::range("ab"..="az").reverse(), true).unwrap();
        assert_eq!(
            (p.start, p.end, p.floor),
            (Some(b("az")), Some(b("a")), Some(b("ab")))
        );
        let p = plan(&ScanOptions::range(""..).reverse(), true).unwrap();
        assert_eq!((p.end, p.floor), (None, None));
    }

    #[test]
    fn empty_ranges_and_spent_limits_send_nothing() {
        assert!(plan(&ScanOptions::range("b".."a"), true).is_none());
        assert!(plan(&ScanOptions::range("a".."a"), true).is_none());
        assert!(plan(&ScanOptions::range("a"..="a"), true).is_some());
        assert!(
            plan(
                &ScanOptions::range("a".."b").reverse().resume_after("a"),
                true
            )
            .is_none()
        );
        assert!(plan(&ScanOptions::all().limit(0), true).is_none());
        let p = plan(&ScanOptions::all().limit(10_000).page_size(50), true).unwrap();
        assert_eq!(p.limit, Some(50));
        let p = plan(&ScanOptions::all().limit(3).page_size(50), true).unwrap();
        assert_eq!(p.limit, Some(3));
    }

    #[test]
    fn pages_drop_the_emulated_start_and_respect_floor_and_want() {
        let o = ScanOptions::range("b"..="y")
            .reverse()
            .resume_after("q")
            .limit(2);
        let p = plan(&o, false).unwrap();
        let got = take(&p, page(&["q", "p", "o"], true)).unwrap();
        assert_eq!(keys(&got), [b"p", b"o"]);
        assert!(got.has_more());
        // The floor ends the scan even though the broker has more.
        let o = ScanOptions::range("b"..="y").reverse();
        let p = plan(&o, false).unwrap();
        let got = take(&p, page(&["c", "b", "a"], true)).unwrap();
        assert_eq!(keys(&got), [b"c", b"b"]);
        assert!(!got.has_more());
        // An absent resume key is not dropped.
        let o = ScanOptions::all().reverse().resume_after("q");
        let p = plan(&o, false).unwrap();
        let got = take(&p, page(&["p"], false)).unwrap();
        assert_eq!(keys(&got), [b"p"]);
    }

    #[test]
    fn skipping_the_reserved_prefix_moves_the_starting_side_past_it() {
        let mut o = ScanOptions::all().resume_after(b"\0sync/abc");
        o.skip_reserved();
        assert_eq!(o.lower, Bound::Included(Bytes::from_static(RESERVED_END)));
        let mut o = ScanOptions::all().reverse().resume_after(b"\0sync/abc");
        o.skip_reserved();
        assert_eq!(
            o.upper,
            Bound::Excluded(Bytes::from_static(RESERVED_PREFIX))
        );
        // A range that ends inside the prefix is then empty.
        let mut o = ScanOptions::range(&b"\0a"[..]..&b"\0sync/m"[..]);
        o.skip_reserved();
        assert!(o.range_is_empty());
    }

    #[test]
    fn a_page_without_progress_is_an_error_not_a_loop() {
        let o = ScanOptions::all().reverse().resume_after("big");
        let p = plan(&o, false).unwrap();
        let e = take(&p, page(&["big"], true)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
        let p = plan(&ScanOptions::all(), true).unwrap();
        let e = take(&p, page(&[], true)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Protocol);
    }
}
