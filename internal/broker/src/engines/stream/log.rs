//! The committed log of one route family and its storage encoding.
//!
//! Every committed record lives once, in the family's global log, indexed by
//! its global offset. Resources, areas and realms keep dense vectors of global
//! offsets, so their own offset *is* the vector index: a READ on any axis is a
//! slice walk, LAST is the last index, and watermarks are lengths. Records are
//! immutable and shared (`Arc`), so a page holds them without copying bodies.
//!
//! # Storage layout ([`Keyspace::Stream`])
//!
//! * `[b'R'][u32 family][u64 global_offset]` → [`encode_record`]: the route,
//!   the resource/area/realm offsets, `created_at`, body, metadata and
//!   discriminator. Big-endian keys make key order (family, global) order, so
//!   recovery replays each family in commit order.
//! * `[b'W'][u32 family][u8 axis][name]` → `u64`: the area (axis 0, name
//!   `realm/area`) and realm (axis 1, name `realm`) watermarks after the
//!   commit, and the family's next global offset (axis 2, no name). They are
//!   written in the same atomic batch as the records and checked at recovery:
//!   a watermark ahead of the recovered records means lost records, and
//!   startup fails rather than reusing offsets.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::stream::Record;
use fitz_protocol::wire::{Reader, Str, WireWrite};

use crate::auth::Family;
use crate::storage::StorageError;

/// One committed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredRecord {
    /// Its concrete `stream://realm/area/resource`.
    pub route: Str,
    pub resource_offset: u64,
    pub area_offset: u64,
    pub realm_offset: u64,
    pub global_offset: u64,
    pub body: Bytes,
    pub metadata: Option<Bytes>,
    pub discriminator: Option<Str>,
    /// Unix milliseconds of the commit.
    pub created_at: u64,
}

impl StoredRecord {
    /// The wire record; `global` carries the global offset (global-scope READ).
    pub fn wire(&self, global: bool) -> Record {
        Record {
            resource_offset: self.resource_offset,
            area_offset: Some(self.area_offset),
            realm_offset: Some(self.realm_offset),
            global_offset: global.then_some(self.global_offset),
            body: self.body.clone(),
            metadata: self.metadata.clone(),
            created_at: self.created_at,
        }
    }

    /// The discriminator filters see (missing = empty string).
    pub fn discriminator(&self) -> &str {
        self.discriminator.as_deref().unwrap_or("")
    }

    /// The realm, area and resource segments of the route.
    pub fn segments(&self) -> (&str, &str, &str) {
        split_route(&self.route).unwrap_or(("", "", ""))
    }
}

/// A record appended in a session, not yet committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pending {
    pub body: Bytes,
    pub metadata: Option<Bytes>,
    pub discriminator: Option<Str>,
}

impl Pending {
    /// What the record counts against `max_batch_bytes`.
    pub fn size(&self) -> usize {
        self.body.len()
            + self.metadata.as_ref().map_or(0, Bytes::len)
            + self.discriminator.as_ref().map_or(0, |d| d.len())
    }
}

/// Splits `stream://realm/area/resource` into its three segments.
pub(super) fn split_route(route: &str) -> Option<(&str, &str, &str)> {
    let path = route.strip_prefix("stream://")?;
    let mut it = path.splitn(3, '/');
    let (realm, area, resource) = (it.next()?, it.next()?, it.next()?);
    Some((realm, area, resource))
}

/// The `realm/area` key of a route's area.
fn area_key(realm: &str, area: &str) -> Str {
    Str::from(format!("{realm}/{area}"))
}

/// One resource: its records (global offsets by resource offset) and the
/// append session holding its write lock.
#[derive(Debug, Default)]
pub(super) struct ResourceLog {
    pub offsets: Vec<u64>,
    pub writer: Option<u64>,
}

/// The first and last offsets of a committed batch on every axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub first: [u64; 4],
    pub last: [u64; 4],
    pub count: u64,
}

/// Axis indexes into [`Span`] arrays.
pub(super) const RESOURCE: usize = 0;
pub(super) const AREA: usize = 1;
pub(super) const REALM: usize = 2;
pub(super) const GLOBAL: usize = 3;

/// The committed state of one route family.
#[derive(Debug, Default)]
pub(super) struct FamilyLog {
    /// Every record, by global offset.
    pub records: Vec<Arc<StoredRecord>>,
    /// By full route.
    pub resources: HashMap<Str, ResourceLog>,
    /// Global offsets by area offset, keyed `realm/area`.
    pub areas: HashMap<Str, Vec<u64>>,
    /// Global offsets by realm offset, keyed `realm`.
    pub realms: HashMap<Str, Vec<u64>>,
}

impl FamilyLog {
    /// The record at `global`.
    pub fn record(&self, global: u64) -> Option<&Arc<StoredRecord>> {
        self.records.get(usize::try_from(global).ok()?)
    }

    /// Next offset of the resource `route`.
    pub fn next_resource_offset(&self, route: &str) -> u64 {
        self.resources
            .get(route)
            .map_or(0, |r| r.offsets.len() as u64)
    }

    /// The area's global offsets (by area offset).
    pub fn area(&self, realm: &str, area: &str) -> &[u64] {
        // Areas are few per realm; building the key costs one small string.
        self.areas
            .get(&*format!("{realm}/{area}"))
            .map_or(&[], Vec::as_slice)
    }

    /// The realm's global offsets (by realm offset).
    pub fn realm(&self, realm: &str) -> &[u64] {
        self.realms.get(realm).map_or(&[], Vec::as_slice)
    }

    /// Assigns offsets to `batch` appended to `route` as if it were
    /// committed now. The log is not changed; [`FamilyLog::install`] adds
    /// the records. Commits are serialized, so nothing moves in between.
    pub fn plan(&self, route: &Str, batch: Vec<Pending>, created_at: u64) -> Vec<StoredRecord> {
        let (realm, area, _) = split_route(route).unwrap_or(("", "", ""));
        let mut resource_next = self.next_resource_offset(route);
        let mut area_next = self.area(realm, area).len() as u64;
        let mut realm_next = self.realm(realm).len() as u64;
        let mut global_next = self.records.len() as u64;
        batch
            .into_iter()
            .map(|p| {
                let r = StoredRecord {
                    route: route.clone(),
                    resource_offset: resource_next,
                    area_offset: area_next,
                    realm_offset: realm_next,
                    global_offset: global_next,
                    body: p.body,
                    metadata: p.metadata,
                    discriminator: p.discriminator,
                    created_at,
                };
                resource_next += 1;
                area_next += 1;
                realm_next += 1;
                global_next += 1;
                r
            })
            .collect()
    }

    /// Appends planned (or recovered) records. Each must carry exactly the
    /// next offset of its resource, area, realm and the family; otherwise
    /// nothing after it is added and the error says which axis broke.
    pub fn install(&mut self, records: Vec<StoredRecord>) -> Result<Option<Span>, String> {
        let mut span: Option<Span> = None;
        for r in records {
            let (realm, area, _) =
                split_route(&r.route).ok_or_else(|| format!("bad stream route {}", r.route))?;
            let akey = area_key(realm, area);
            let expect = [
                self.next_resource_offset(&r.route),
                self.areas.get(&akey).map_or(0, |v| v.len() as u64),
                self.realms.get(realm).map_or(0, |v| v.len() as u64),
                self.records.len() as u64,
            ];
            let got = [
                r.resource_offset,
                r.area_offset,
                r.realm_offset,
                r.global_offset,
            ];
            if let Some(axis) = (0..4).find(|&i| expect[i] != got[i]) {
                let name = ["resource", "area", "realm", "global"][axis];
                return Err(format!(
                    "{} has {name} offset {} where {} was expected",
                    r.route, got[axis], expect[axis]
                ));
            }
            let g = r.global_offset;
            self.resources
                .entry(r.route.clone())
                .or_default()
                .offsets
                .push(g);
            self.areas.entry(akey).or_default().push(g);
            match self.realms.get_mut(realm) {
                Some(v) => v.push(g),
                None => {
                    self.realms.insert(Str::from(realm.to_owned()), vec![g]);
                }
            }
            span = Some(match span {
                None => Span {
                    first: got,
                    last: got,
                    count: 1,
                },
                Some(s) => Span {
                    last: got,
                    count: s.count + 1,
                    ..s
                },
            });
            self.records.push(Arc::new(r));
        }
        Ok(span)
    }

    /// Drops an unlocked resource entry without records (a BEGIN that was
    /// rolled back), so sessions on ever new routes do not grow the map.
    pub fn forget_if_empty(&mut self, route: &str) {
        if self
            .resources
            .get(route)
            .is_some_and(|r| r.writer.is_none() && r.offsets.is_empty())
        {
            self.resources.remove(route);
        }
    }

    /// True when the family holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.resources.is_empty()
    }
}

/// Key of a stored record.
pub(super) fn record_key(family: Family, global: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(13);
    b.put_u8(b'R');
    b.put_u32(family);
    b.put_u64(global);
    b.freeze()
}

/// Axis byte of a watermark key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    Area = 0,
    Realm = 1,
    Global = 2,
}

/// Key of a stored watermark.
pub(super) fn watermark_key(family: Family, mark: Mark, name: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(6 + name.len());
    b.put_u8(b'W');
    b.put_u32(family);
    b.put_u8(mark as u8);
    b.put_slice(name.as_bytes());
    b.freeze()
}

/// The stored value of a record (its global offset and family are the key).
pub(super) fn encode_record(r: &StoredRecord) -> Bytes {
    let mut b = BytesMut::with_capacity(
        48 + r.route.len()
            + r.body.len()
            + r.metadata.as_ref().map_or(0, Bytes::len)
            + r.discriminator.as_ref().map_or(0, |d| d.len()),
    );
    b.put_str_field(&r.route);
    b.put_u64(r.resource_offset);
    b.put_u64(r.area_offset);
    b.put_u64(r.realm_offset);
    b.put_u64(r.created_at);
    b.put_bytes_field(&r.body);
    b.put_opt_bytes(r.metadata.as_deref());
    b.put_opt_str(r.discriminator.as_deref());
    b.freeze()
}

fn decode_record(global: u64, value: Bytes) -> Result<StoredRecord, String> {
    let mut r = Reader::new(value);
    let rec = (|| {
        Ok::<_, fitz_protocol::DecodeError>(StoredRecord {
            route: r.str()?,
            resource_offset: r.u64()?,
            area_offset: r.u64()?,
            realm_offset: r.u64()?,
            global_offset: global,
            created_at: r.u64()?,
            body: r.bytes()?,
            metadata: r.opt(Reader::bytes)?,
            discriminator: r.opt(Reader::str)?,
        })
    })()
    .map_err(|e| format!("unreadable stream record {global}: {e}"))?;
    r.finish()
        .map_err(|e| format!("unreadable stream record {global}: {e}"))?;
    if split_route(&rec.route).is_none() {
        return Err(format!("stream record {global} has route {}", rec.route));
    }
    Ok(rec)
}

/// Rebuilds every family's log from the pairs of [`Keyspace::Stream`] in key
/// order (see the module docs), checking that offsets are dense and that no
/// stored watermark is ahead of the records.
///
/// [`Keyspace::Stream`]: crate::storage::Keyspace::Stream
pub(super) fn recover(
    pairs: Vec<(Bytes, Bytes)>,
) -> Result<HashMap<Family, FamilyLog>, StorageError> {
    let bad = |m: String| StorageError(format!("stream: {m}"));
    let mut families: HashMap<Family, FamilyLog> = HashMap::new();
    let mut marks = Vec::new();
    for (key, value) in pairs {
        let family = key
            .get(1..5)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| bad("short key".into()))?;
        match key.first() {
            Some(b'R') => {
                let global = key
                    .get(5..13)
                    .filter(|_| key.len() == 13)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| bad("bad record key".into()))?;
                let rec = decode_record(global, value).map_err(bad)?;
                families
                    .entry(family)
                    .or_default()
                    .install(vec![rec])
                    .map_err(bad)?;
            }
            Some(b'W') => {
                let v = <[u8; 8]>::try_from(&value[..])
                    .map(u64::from_be_bytes)
                    .map_err(|_| bad("bad watermark value".into()))?;
                marks.push((family, key, v));
            }
            _ => return Err(bad("unknown key kind".into())),
        }
    }
    for (family, key, stored) in marks {
        let log = families.get(&family);
        let name = std::str::from_utf8(key.get(6..).unwrap_or_default())
            .map_err(|_| bad("bad watermark key".into()))?;
        let recovered = match key.get(5) {
            Some(0) => log.and_then(|l| l.areas.get(name)).map(Vec::len),
            Some(1) => log.and_then(|l| l.realms.get(name)).map(Vec::len),
            Some(2) => log.map(|l| l.records.len()),
            _ => return Err(bad("bad watermark key".into())),
        };
        // Area and realm marks store the last offset, the global mark the
        // next one; both are covered when the recovered length exceeds the
        // last offset.
        let needed = if key.get(5) == Some(&2) {
            stored
        } else {
            stored.saturating_add(1)
        };
        if (recovered.unwrap_or(0) as u64) < needed {
            return Err(bad(format!(
                "watermark {name:?} of family {family} is {stored} but the records end before it"
            )));
        }
    }
    Ok(families)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(body: &str, disc: Option<&str>) -> Pending {
        Pending {
            body: Bytes::copy_from_slice(body.as_bytes()),
            metadata: None,
            discriminator: disc.map(|d| Str::from(d.to_owned())),
        }
    }

    #[test]
    fn offsets_are_dense_per_axis_in_commit_order() {
        let mut log = FamilyLog::default();
        let x: Str = "stream://r/a/x".into();
        let y: Str = "stream://r/b/y".into();
        let p = log.plan(&x, vec![pending("1", None), pending("2", None)], 5);
        log.install(p).unwrap();
        let p = log.plan(&y, vec![pending("3", Some("d"))], 6);
        let span = log.install(p).unwrap().unwrap();
        assert_eq!(span.first, [0, 0, 2, 2]);
        let p = log.plan(&x, vec![pending("4", None)], 7);
        let span = log.install(p).unwrap().unwrap();
        assert_eq!((span.first, span.count), ([2, 2, 3, 3], 1));
        assert_eq!(log.area("r", "a"), &[0, 1, 3]);
        assert_eq!(log.realm("r"), &[0, 1, 2, 3]);
        assert_eq!(log.next_resource_offset("stream://r/a/x"), 3);
        // A record out of sequence is refused.
        let mut stale = log.plan(&x, vec![pending("5", None)], 8);
        stale[0].area_offset = 9;
        assert!(log.install(stale).unwrap_err().contains("area offset 9"));
    }

    #[test]
    fn storage_round_trip_and_integrity_checks() {
        let log = FamilyLog::default();
        let x: Str = "stream://r/a/x".into();
        let mut recs = log.plan(&x, vec![pending("1", Some("p.a")), pending("2", None)], 5);
        recs[1].metadata = Some(Bytes::from_static(b"m"));
        let mut pairs: Vec<(Bytes, Bytes)> = recs
            .iter()
            .map(|r| (record_key(7, r.global_offset), encode_record(r)))
            .collect();
        pairs.push((
            watermark_key(7, Mark::Area, "r/a"),
            Bytes::copy_from_slice(&1u64.to_be_bytes()),
        ));
        pairs.push((
            watermark_key(7, Mark::Global, ""),
            Bytes::copy_from_slice(&2u64.to_be_bytes()),
        ));
        let fams = recover(pairs.clone()).unwrap();
        let got: Vec<StoredRecord> = fams[&7].records.iter().map(|r| (**r).clone()).collect();
        assert_eq!(got, recs);
        // A watermark beyond the records fails recovery.
        let mut ahead = pairs.clone();
        ahead.push((
            watermark_key(7, Mark::Realm, "r"),
            Bytes::copy_from_slice(&2u64.to_be_bytes()),
        ));
        assert!(recover(ahead).unwrap_err().0.contains("watermark"));
        // A missing record (a gap in global offsets) fails recovery.
        let gap = vec![pairs[1].clone()];
        assert!(recover(gap).is_err());
        let junk = vec![(Bytes::from_static(b"R\0\0\0\x07"), Bytes::new())];
        assert!(recover(junk).is_err());
    }
}
