//! READ: one page over a selector, in the order of the selector's axis.
//!
//! The scope comes from the selector string alone
//! ([`fitz_protocol::route::stream_selector`]): an exact resource pages by
//! resource offset, `R/A/*` by area offset, `R/*/X`, `R/*/*` and `R/**` by
//! realm offset, and every wildcard-realm shape by the family's global offset.
//! Shapes narrower than their axis (`R/*/X`, `*/A/*` …) walk the axis and
//! skip records of other routes silently: those are not part of the
//! selector, but the cursor still moves over them.
//!
//! Page rules (decisions where the spec is silent are marked *):
//! * `limit` bounds the items (events and markers), capped at
//!   [`MAX_ITEMS`]; `limit = 0` is an invalid bound (2004)*.
//! * `max_bytes` bounds the encoded items; the first item is always returned
//!   when it fits a record, so a small budget never stalls a reader*;
//!   `max_bytes = 0` is 2004*. A record that cannot fit any page (the page
//!   lives in one `bytes` field of one record) is 2013.
//! * At most [`MAX_EXAMINED`] records are looked at per page, so narrow
//!   selectors over a big axis answer in bounded time: the page then ends
//!   with `has_more` and a cursor past everything examined, possibly with no
//!   items (filtered-only and empty pages still advance).
//! * A record the filter rejects becomes a tag-1 marker with its axis offset;
//!   the next rejected record of the same route with no event in between
//!   turns it into a tag-2 range (reason 1, server filter).
//! * Cursor: the axis field is the last offset examined (or, for the global
//!   axis of a finished page, the snapshot end − 1); the other fields come
//!   from the last record of the selector examined. Nothing examined: the
//!   axis field is absent (resource scope: `from_offset − 1`, saturating), so
//!   a client keeps its requested offset.
//! * Global scope: the first page captures the family's global watermark
//!   (the next global offset) and only records below it are served; every
//!   page carries a fingerprint binding family, canonical selector, filter,
//!   captured watermark and the next offset. A continuation must echo both
//!   values; a mismatch, a watermark ahead of the family's, or continuation
//!   values on a non-global selector are invalid bounds (2004)*.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
#[cfg(test)]
use fitz_protocol::Str;
use fitz_protocol::codes;
use fitz_protocol::route::SelectorScope;
use fitz_protocol::stream::{FilterReason, FilterSet, Item, ItemKind, ReadPage};

use super::log::{FamilyLog, StoredRecord};
use crate::auth::Family;

/// Most items in one page, whatever `limit` asks.
pub const MAX_ITEMS: u64 = 10_000;
/// Most records examined for one page.
pub const MAX_EXAMINED: usize = 4_096;
/// Bytes a page may use: one record value minus the READ reply's status
/// byte, id flag and the `bytes` length prefix.
pub const PAGE_LIMIT: usize = u16::MAX as usize - 1 - 1 - 4;

/// A READ failure: code and message (the engine picks the envelope).
pub type ReadError = (u32, String);

/// What a selector selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// `stream://R/A/X`.
    Resource(&'a str),
    /// `stream://R/A/*`.
    Area { realm: &'a str, area: &'a str },
    /// `stream://R/*/X`, `R/*/*`, `R/**`.
    Realm {
        realm: &'a str,
        resource: Option<&'a str>,
    },
    /// Wildcard realm: `*/A/X`, `*/A/*`, `*/*/X`, `*/*/*`, `**`.
    Global {
        area: Option<&'a str>,
        resource: Option<&'a str>,
    },
}

impl<'a> Selector<'a> {
    /// Parses a selector already classified as `scope`.
    pub fn parse(selector: &'a str, scope: SelectorScope) -> Option<Self> {
        let path = selector.strip_prefix("stream://")?;
        let mut segs = path.split('/');
        let (a, b, c) = (segs.next()?, segs.next(), segs.next());
        let lit = |s: Option<&'a str>| s.filter(|s| *s != "*");
        Some(match scope {
            SelectorScope::Resource => Selector::Resource(selector),
            SelectorScope::Area => Selector::Area { realm: a, area: b? },
            SelectorScope::Realm => Selector::Realm {
                realm: a,
                resource: lit(c),
            },
            SelectorScope::Global => Selector::Global {
                area: lit(b).filter(|s| *s != "**"),
                resource: lit(c),
            },
        })
    }

    /// The canonical spelling (`R/**` ≡ `R/*/*`, `**` ≡ `*/*/*`) that
    /// fingerprints bind, so both spellings continue each other.
    pub fn canonical(&self) -> String {
        let or_star = |s: Option<&str>| s.unwrap_or("*").to_owned();
        match self {
            Selector::Resource(route) => (*route).to_owned(),
            Selector::Area { realm, area } => format!("stream://{realm}/{area}/*"),
            Selector::Realm { realm, resource } => {
                format!("stream://{realm}/*/{}", or_star(*resource))
            }
            Selector::Global { area, resource } => {
                format!("stream://*/{}/{}", or_star(*area), or_star(*resource))
            }
        }
    }

    fn is_global(&self) -> bool {
        matches!(self, Selector::Global { .. })
    }

    /// Does `r`, met while walking this selector's axis, belong to it?
    fn selects(&self, r: &StoredRecord) -> bool {
        let (_, area, resource) = r.segments();
        match self {
            Selector::Resource(_) | Selector::Area { .. } => true,
            Selector::Realm { resource: want, .. } => want.is_none_or(|w| w == resource),
            Selector::Global {
                area: want_area,
                resource: want_res,
            } => want_area.is_none_or(|w| w == area) && want_res.is_none_or(|w| w == resource),
        }
    }
}

/// A decoded READ request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub selector: Selector<'a>,
    pub from_offset: u64,
    pub limit: u64,
    pub max_bytes: Option<u64>,
    /// `None` also for a filter without clauses.
    pub filter: Option<FilterSet>,
    pub cursor_fingerprint: Option<u64>,
    pub captured_watermark: Option<u64>,
}

/// FNV-1a, 64 bit: a stable, dependency-free hash. The fingerprint is an
/// integrity check against misuse (a token echoed with another selector,
/// filter or position), not a secret: permissions are checked on every READ
/// and a forged token can only ask for what a fresh first page would serve.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        // Length-prefix each part so ("ab","c") and ("a","bc") differ.
        for b in (part.len() as u64).to_be_bytes().iter().chain(part.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The continuation token of a global page whose next offset is `next`.
pub fn fingerprint(
    family: Family,
    selector: &Selector<'_>,
    filter: Option<&FilterSet>,
    captured: u64,
    next: u64,
) -> u64 {
    let filter = filter.map(FilterSet::to_bytes).unwrap_or_default();
    fnv(&[
        b"fitz-stream-cursor-v1",
        &family.to_be_bytes(),
        selector.canonical().as_bytes(),
        &filter,
        &captured.to_be_bytes(),
        &next.to_be_bytes(),
    ])
}

fn bound(message: &str) -> ReadError {
    (codes::STREAM_INVALID_READ_BOUND, message.to_owned())
}

/// Builds the page for `req` over `log` (absent: the family has nothing).
pub fn page(
    family: Family,
    log: Option<&FamilyLog>,
    req: &Request<'_>,
) -> Result<ReadPage, ReadError> {
    if req.limit == 0 {
        return Err(bound("limit must be at least 1"));
    }
    if req.max_bytes == Some(0) {
        return Err(bound("max_bytes must be at least 1"));
    }
    let global = req.selector.is_global();
    let continuing = req.cursor_fingerprint.is_some() || req.captured_watermark.is_some();
    let empty = FamilyLog::default();
    let log = log.unwrap_or(&empty);
    let captured = if global {
        let frontier = log.records.len() as u64;
        match (req.cursor_fingerprint, req.captured_watermark) {
            (None, None) => frontier,
            (Some(fp), Some(w)) => {
                if w > frontier {
                    return Err(bound("captured_watermark is ahead of the stream"));
                }
                let want = fingerprint(
                    family,
                    &req.selector,
                    req.filter.as_ref(),
                    w,
                    req.from_offset,
                );
                if fp != want {
                    return Err(bound(
                        "cursor_fingerprint does not match this selector, filter, snapshot or offset",
                    ));
                }
                w
            }
            _ => {
                return Err(bound(
                    "cursor_fingerprint and captured_watermark must be sent together",
                ));
            }
        }
    } else {
        if continuing {
            return Err(bound(
                "cursor_fingerprint and captured_watermark need a global selector",
            ));
        }
        0
    };

    let mut b = Builder {
        global,
        limit: req.limit.min(MAX_ITEMS) as usize,
        byte_cap: req
            .max_bytes
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX))
            .min(PAGE_LIMIT - ReadPage::max_overhead(global)),
        item_room: PAGE_LIMIT - ReadPage::max_overhead(global),
        filter: req.filter.as_ref(),
        selector: req.selector,
        items: Vec::new(),
        used: 0,
        examined: 0,
        last_axis: None,
        last_match: None,
        has_more: false,
        run_open: false,
    };
    let from = usize::try_from(req.from_offset).unwrap_or(usize::MAX);
    let by_global = |offsets: &[u64]| -> Vec<(u64, Arc<StoredRecord>)> {
        // Collecting at most MAX_EXAMINED + 1 entries keeps the walk bounded.
        offsets
            .iter()
            .enumerate()
            .skip(from)
            .take(MAX_EXAMINED + 1)
            .filter_map(|(i, g)| log.record(*g).map(|r| (i as u64, r.clone())))
            .collect()
    };
    let walk = match req.selector {
        Selector::Resource(route) => by_global(
            log.resources
                .get(route)
                .map_or(&[][..], |r| r.offsets.as_slice()),
        ),
        Selector::Area { realm, area } => by_global(log.area(realm, area)),
        Selector::Realm { realm, .. } => by_global(log.realm(realm)),
        Selector::Global { .. } => {
            let end = usize::try_from(captured).unwrap_or(usize::MAX);
            log.records
                .get(from.min(end)..end)
                .unwrap_or_default()
                .iter()
                .take(MAX_EXAMINED + 1)
                .map(|r| (r.global_offset, r.clone()))
                .collect()
        }
    };
    b.walk(walk)?;

    let last = b.last_match.as_deref();
    let mut p = ReadPage {
        last_resource_offset: last.map_or(0, |r| r.resource_offset),
        last_area_offset: last.map(|r| r.area_offset),
        last_realm_offset: last.map(|r| r.realm_offset),
        has_more: b.has_more,
        ..ReadPage::default()
    };
    match req.selector {
        Selector::Resource(_) => {
            p.last_resource_offset = b
                .last_axis
                .unwrap_or_else(|| req.from_offset.saturating_sub(1));
        }
        Selector::Area { .. } => p.last_area_offset = b.last_axis,
        Selector::Realm { .. } => p.last_realm_offset = b.last_axis,
        Selector::Global { .. } => {
            p.last_global_offset = if b.has_more {
                b.last_axis
            } else if req.from_offset < captured {
                Some(captured - 1)
            } else {
                req.from_offset.checked_sub(1)
            };
            let next = p
                .last_global_offset
                .map_or(req.from_offset, |g| g.saturating_add(1));
            p.cursor_fingerprint = Some(fingerprint(
                family,
                &req.selector,
                req.filter.as_ref(),
                captured,
                next,
            ));
            p.captured_watermark = Some(captured);
        }
    }
    p.items = b.items;
    Ok(p)
}

struct Builder<'a> {
    global: bool,
    limit: usize,
    byte_cap: usize,
    item_room: usize,
    filter: Option<&'a FilterSet>,
    selector: Selector<'a>,
    items: Vec<Item>,
    used: usize,
    examined: usize,
    last_axis: Option<u64>,
    last_match: Option<Arc<StoredRecord>>,
    has_more: bool,
    /// The last item is a marker that a further rejected record of the same
    /// route may extend (no event since).
    run_open: bool,
}

impl Builder<'_> {
    fn walk(&mut self, walk: Vec<(u64, Arc<StoredRecord>)>) -> Result<(), ReadError> {
        for (axis, rec) in walk {
            if self.examined == MAX_EXAMINED {
                self.has_more = true;
                return Ok(());
            }
            if !self.selector.selects(&rec) {
                self.examined += 1;
                self.last_axis = Some(axis);
                continue;
            }
            let accepted = self.filter.is_none_or(|f| f.matches(rec.discriminator()));
            let fits = if accepted {
                self.push_event(&rec)?
            } else {
                self.push_filtered(&rec, axis)
            };
            if !fits {
                self.has_more = true;
                return Ok(());
            }
            self.examined += 1;
            self.last_axis = Some(axis);
            self.last_match = Some(rec);
        }
        Ok(())
    }

    /// Room for `size` more bytes: the first item only needs to fit a record.
    fn room(&self, size: usize) -> bool {
        if self.items.is_empty() {
            size <= self.item_room
        } else {
            self.used + size <= self.byte_cap
        }
    }

    fn push_event(&mut self, rec: &StoredRecord) -> Result<bool, ReadError> {
        let item = Item {
            route: rec.route.clone(),
            kind: ItemKind::Event(rec.wire(self.global)),
        };
        let size = item.encoded_len(self.global);
        if self.items.is_empty() && size > self.item_room {
            return Err((
                codes::STREAM_RESPONSE_TOO_LARGE,
                format!(
                    "record at resource offset {} needs {size} bytes, more than a READ page can carry",
                    rec.resource_offset
                ),
            ));
        }
        if self.items.len() >= self.limit || !self.room(size) {
            return Ok(false);
        }
        self.used += size;
        self.items.push(item);
        self.run_open = false;
        Ok(true)
    }

    fn push_filtered(&mut self, rec: &StoredRecord, axis: u64) -> bool {
        let alone = self.items.len() == 1;
        if self.run_open
            && let Some(last) = self.items.last_mut()
            && last.route == rec.route
        {
            match &mut last.kind {
                ItemKind::FilteredRange { to_offset, .. } => {
                    *to_offset = axis;
                    return true;
                }
                ItemKind::Filtered { offset, reason } => {
                    // A marker becoming a range grows by one u64.
                    if self.used + 8 > self.byte_cap && !alone {
                        return false;
                    }
                    self.used += 8;
                    last.kind = ItemKind::FilteredRange {
                        from_offset: *offset,
                        to_offset: axis,
                        reason: *reason,
                    };
                    return true;
                }
                ItemKind::Event(_) => {}
            }
        }
        let item = Item {
            route: rec.route.clone(),
            kind: ItemKind::Filtered {
                offset: axis,
                reason: FilterReason::ServerFilter,
            },
        };
        let size = item.encoded_len(self.global);
        if self.items.len() >= self.limit || !self.room(size) {
            return false;
        }
        self.used += size;
        self.items.push(item);
        self.run_open = true;
        true
    }
}

/// Encodes a page into the bytes of the READ reply.
pub fn encode(page: &ReadPage, global: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(
        ReadPage::max_overhead(global)
            + page
                .items
                .iter()
                .map(|i| i.encoded_len(global))
                .sum::<usize>(),
    );
    page.encode(&mut b, global);
    b.freeze()
}

/// The routes a READ item list mentions (tests).
#[cfg(test)]
pub fn routes(p: &ReadPage) -> Vec<Str> {
    p.items.iter().map(|i| i.route.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::super::log::Pending;
    use super::*;
    use fitz_protocol::route::stream_selector;
    use fitz_protocol::stream::FilterClause;

    fn log_of(commits: &[(&str, &[Option<&str>])]) -> FamilyLog {
        let mut log = FamilyLog::default();
        for (route, discs) in commits {
            let route: Str = Str::from((*route).to_owned());
            let batch = discs
                .iter()
                .map(|d| Pending {
                    body: Bytes::from_static(b"body"),
                    metadata: None,
                    discriminator: d.map(|d| Str::from(d.to_owned())),
                })
                .collect();
            let p = log.plan(&route, batch, 1);
            log.install(p).unwrap();
        }
        log
    }

    fn req(selector: &str, from: u64, limit: u64) -> Request<'_> {
        let scope = stream_selector(selector).unwrap();
        Request {
            selector: Selector::parse(selector, scope).unwrap(),
            from_offset: from,
            limit,
            max_bytes: None,
            filter: None,
            cursor_fingerprint: None,
            captured_watermark: None,
        }
    }

    #[test]
    fn canonical_spellings_share_fingerprints() {
        let a = Selector::parse("stream://r/**", SelectorScope::Realm).unwrap();
        let b = Selector::parse("stream://r/*/*", SelectorScope::Realm).unwrap();
        assert_eq!(a, b);
        let g = Selector::parse("stream://**", SelectorScope::Global).unwrap();
        assert_eq!(g.canonical(), "stream://*/*/*");
        assert_eq!(
            fingerprint(1, &g, None, 3, 1),
            fingerprint(1, &g, None, 3, 1)
        );
        assert_ne!(
            fingerprint(1, &g, None, 3, 1),
            fingerprint(2, &g, None, 3, 1)
        );
        assert_ne!(
            fingerprint(1, &g, None, 3, 1),
            fingerprint(1, &g, None, 3, 2)
        );
    }

    #[test]
    fn filtered_runs_become_ranges_and_cursors_follow_the_axis() {
        let log = log_of(&[
            (
                "stream://r/a/x",
                &[Some("p.1"), Some("no"), Some("no"), Some("no")],
            ),
            ("stream://r/a/y", &[Some("no")]),
            ("stream://r/a/x", &[Some("p.2")]),
        ]);
        let mut q = req("stream://r/a/*", 0, 10);
        q.filter = Some(FilterSet {
            clauses: vec![FilterClause::StartsWith("p.".into())],
        });
        let p = page(1, Some(&log), &q).unwrap();
        let kinds: Vec<_> = p.items.iter().map(|i| i.kind.clone()).collect();
        assert!(matches!(kinds[0], ItemKind::Event(_)));
        assert_eq!(
            kinds[1],
            ItemKind::FilteredRange {
                from_offset: 1,
                to_offset: 3,
                reason: FilterReason::ServerFilter
            }
        );
        assert_eq!(
            kinds[2],
            ItemKind::Filtered {
                offset: 4,
                reason: FilterReason::ServerFilter
            }
        );
        assert!(matches!(kinds[3], ItemKind::Event(_)));
        assert_eq!(routes(&p)[2], "stream://r/a/y");
        assert_eq!((p.last_area_offset, p.has_more), (Some(5), false));
        assert_eq!(p.last_resource_offset, 4);
    }

    #[test]
    fn narrow_selectors_skip_silently_and_bound_the_walk() {
        let mut commits: Vec<(&str, &[Option<&str>])> = Vec::new();
        for _ in 0..(MAX_EXAMINED + 10) {
            commits.push(("stream://r/a/noise", &[None]));
        }
        commits.push(("stream://r/b/x", &[None]));
        let log = log_of(&commits);
        let p = page(1, Some(&log), &req("stream://r/*/x", 0, 10)).unwrap();
        assert!(p.items.is_empty() && p.has_more);
        assert_eq!(p.last_realm_offset, Some(MAX_EXAMINED as u64 - 1));
        let next = p.last_realm_offset.unwrap() + 1;
        let p = page(1, Some(&log), &req("stream://r/*/x", next, 10)).unwrap();
        assert_eq!((p.items.len(), p.has_more), (1, false));
        // Global: the same, then the snapshot end.
        let p = page(1, Some(&log), &req("stream://*/b/*", 0, 10)).unwrap();
        assert!(p.items.is_empty() && p.has_more);
    }

    #[test]
    fn page_bytes_stay_inside_one_record() {
        let mut log = FamilyLog::default();
        let route: Str = "stream://r/a/x".into();
        let big = |n| Pending {
            body: Bytes::from(vec![1u8; n]),
            metadata: None,
            discriminator: None,
        };
        let p = log.plan(&route, vec![big(30_000), big(30_000), big(30_000)], 1);
        log.install(p).unwrap();
        for sel in ["stream://r/a/x", "stream://**"] {
            let global = sel == "stream://**";
            let p = page(1, Some(&log), &req(sel, 0, 10)).unwrap();
            assert_eq!((p.items.len(), p.has_more), (2, true), "{sel}");
            assert!(encode(&p, global).len() <= PAGE_LIMIT);
        }
        // max_bytes smaller than one record still returns the first.
        let mut q = req("stream://r/a/x", 1, 10);
        q.max_bytes = Some(10);
        let p = page(1, Some(&log), &q).unwrap();
        assert_eq!(
            (p.items.len(), p.has_more, p.last_resource_offset),
            (1, true, 1)
        );
        // A record no page can carry.
        let p = log.plan(&route, vec![big(65_500)], 1);
        log.install(p).unwrap();
        let e = page(1, Some(&log), &req("stream://r/a/x", 3, 10)).unwrap_err();
        assert_eq!(e.0, codes::STREAM_RESPONSE_TOO_LARGE);
    }
}
