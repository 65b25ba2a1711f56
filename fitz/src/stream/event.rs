//! Commit notifications (609): the JSON payload and the subscription stream.
//!
//! The payload is a small flat JSON object. It is decoded here with a tiny
//! strict parser rather than serde so the crate works without the `serde`
//! feature; unknown fields are ignored (the broker may add offsets), while
//! malformed JSON, an unknown `event` or a missing required field fail that
//! one notification.

use std::borrow::Cow;
use std::fmt;
use std::ops::RangeInclusive;

use bytes::Bytes;
use fitz_protocol::{Message, Str, stream};

use crate::connection::{Subscription, domain_subscription};
use crate::error::{Error, Result};

/// One notification of a [`StreamSubscription`].
///
/// Notifications only wake a reader: they are best effort (dropped under
/// broker backpressure, never replayed after a reconnect) and debounced (one
/// event may cover several commits to the resource). Read the stream to learn
/// what was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitEvent {
    /// One or more batches were committed to a resource.
    Committed(Committed),
    /// A resource's watermark advanced.
    WatermarkAdvanced(WatermarkAdvanced),
}

impl CommitEvent {
    /// The concrete `stream://realm/area/resource` route it is about.
    pub fn route(&self) -> &str {
        match self {
            Self::Committed(c) => c.route(),
            Self::WatermarkAdvanced(w) => w.route(),
        }
    }
}

/// Committed offsets of one resource (possibly several debounced commits).
#[derive(Clone, PartialEq, Eq)]
pub struct Committed {
    route: Str,
    resource: RangeInclusive<u64>,
    area: Option<RangeInclusive<u64>>,
    realm: Option<RangeInclusive<u64>>,
    global: Option<RangeInclusive<u64>>,
    batch_size: u64,
}

impl Committed {
    /// The concrete route committed to.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The resource offsets committed.
    pub fn resource_offsets(&self) -> RangeInclusive<u64> {
        self.resource.clone()
    }

    /// The area offsets they were given, if reported.
    pub fn area_offsets(&self) -> Option<RangeInclusive<u64>> {
        self.area.clone()
    }

    /// The realm offsets they were given, if reported.
    pub fn realm_offsets(&self) -> Option<RangeInclusive<u64>> {
        self.realm.clone()
    }

    /// The global offsets they were given, if reported.
    pub fn global_offsets(&self) -> Option<RangeInclusive<u64>> {
        self.global.clone()
    }

    /// Records committed.
    pub fn batch_size(&self) -> u64 {
        self.batch_size
    }
}

impl fmt::Debug for Committed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committed")
            .field("route", &&*self.route)
            .field("resource", &self.resource)
            .field("area", &self.area)
            .field("realm", &self.realm)
            .field("global", &self.global)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

/// A resource's watermark moved from `previous` to `watermark`.
#[derive(Clone, PartialEq, Eq)]
pub struct WatermarkAdvanced {
    route: Str,
    previous: u64,
    watermark: u64,
}

impl WatermarkAdvanced {
    /// The concrete route.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The watermark before.
    pub fn previous(&self) -> u64 {
        self.previous
    }

    /// The watermark now.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }
}

impl fmt::Debug for WatermarkAdvanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatermarkAdvanced")
            .field("route", &&*self.route)
            .field("previous", &self.previous)
            .field("watermark", &self.watermark)
            .finish()
    }
}

domain_subscription! {
    /// A live Stream subscription: a `Stream` of [`CommitEvent`]s for every
    /// resource its selector matches.
    ///
    /// It keeps working across reconnects (commits made while disconnected are
    /// not notified: read the stream to catch up, or use
    /// [`super::Streams::follow`], which does). Two kinds of `Err` items:
    ///
    /// * a notification that cannot be decoded (malformed JSON, an unknown
    ///   `event`) yields one [`crate::ErrorKind::Protocol`] item and the stream
    ///   goes on;
    /// * overflow under [`crate::Overflow::Error`], a failed restore after a
    ///   reconnect, or the client closing yield a last error, then the end.
    ///
    /// Subscriptions of one client to the same selector share one broker
    /// registration; dropping one unsubscribes it in the background.
    pub struct StreamSubscription: CommitEvent, keyed by selector, dropping "Notifications";
}

impl StreamSubscription {
    pub(crate) fn new(inner: Subscription<CommitEvent>, selector: String) -> Self {
        Self { inner, selector }
    }
}

/// Decodes one NOTIFY payload (runs in the consumer's task).
pub(crate) fn decode_notify(payload: Bytes) -> Result<CommitEvent> {
    let n = stream::Notify::decode(payload)
        .map_err(|e| Error::protocol(format!("malformed STREAM NOTIFY: {e}")).with_source(e))?;
    parse_event(n.route.clone(), &n.payload).map_err(|why| {
        Error::protocol(format!(
            "undecodable STREAM NOTIFY for {}: {why}",
            &*n.route
        ))
    })
}

fn parse_event(route: Str, json: &[u8]) -> std::result::Result<CommitEvent, String> {
    let fields = flat_object(json)?;
    let get = |name: &str| fields.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
    let number = |name: &str| -> std::result::Result<Option<u64>, String> {
        match get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("`{name}` is not an unsigned integer: {n}")),
            Some(_) => Err(format!("`{name}` is not a number")),
        }
    };
    let required = |name: &str| number(name)?.ok_or_else(|| format!("`{name}` is missing"));
    let span = |axis: &str| -> std::result::Result<Option<RangeInclusive<u64>>, String> {
        match (
            number(&format!("first_{axis}_offset"))?,
            number(&format!("last_{axis}_offset"))?,
        ) {
            (Some(first), Some(last)) => Ok(Some(first..=last)),
            _ => Ok(None),
        }
    };
    let event = match get("event") {
        Some(Value::String(s)) => s.as_ref(),
        Some(_) => return Err("`event` is not a string".into()),
        None => return Err("`event` is missing".into()),
    };
    match event {
        "committed" => {
            let first = required("first_resource_offset")?;
            let last = required("last_resource_offset")?;
            let batch_size = match number("batch_size")? {
                Some(n) => n,
                None => last.saturating_sub(first).saturating_add(1),
            };
            Ok(CommitEvent::Committed(Committed {
                route,
                resource: first..=last,
                area: span("area")?,
                realm: span("realm")?,
                global: span("global")?,
                batch_size,
            }))
        }
        "watermark_advanced" => Ok(CommitEvent::WatermarkAdvanced(WatermarkAdvanced {
            route,
            previous: required("previous")?,
            watermark: required("watermark")?,
        })),
        other => Err(format!("unknown event {other:?}")),
    }
}

/// A top-level JSON value, as far as commit events need to know it.
#[derive(Debug, PartialEq)]
enum Value<'a> {
    String(Cow<'a, str>),
    /// The number's text, validated against the JSON grammar.
    Number(&'a str),
    Null,
    /// true, false, an array or an object: skipped.
    Other,
}

/// Nesting allowed in skipped values (the payload is flat; this only bounds
/// recursion on hostile input).
const MAX_DEPTH: usize = 16;

/// Parses a JSON object and returns its top-level fields in order.
fn flat_object(input: &[u8]) -> std::result::Result<Vec<(Cow<'_, str>, Value<'_>)>, String> {
    let mut p = Parser { s: input, i: 0 };
    p.ws();
    p.expect(b'{')?;
    let mut fields = Vec::new();
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            let key = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let value = p.value(0)?;
            fields.push((key, value));
            p.ws();
            match p.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(p.error("`,` or `}`")),
            }
        }
    }
    p.ws();
    if p.i != input.len() {
        return Err(p.error("the end of the payload"));
    }
    Ok(fields)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn error(&self, expected: &str) -> String {
        format!("invalid JSON at byte {}: expected {expected}", self.i)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, b: u8) -> std::result::Result<(), String> {
        if self.next() == Some(b) {
            Ok(())
        } else {
            Err(self.error(&format!("`{}`", b as char)))
        }
    }

    fn literal(&mut self, word: &[u8]) -> std::result::Result<(), String> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.error("a JSON value"))
        }
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Value<'a>, String> {
        if depth > MAX_DEPTH {
            return Err("JSON nested too deeply".into());
        }
        match self.peek() {
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            Some(b'n') => self.literal(b"null").map(|()| Value::Null),
            Some(b't') => self.literal(b"true").map(|()| Value::Other),
            Some(b'f') => self.literal(b"false").map(|()| Value::Other),
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Value::Other);
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next() {
                        Some(b',') => continue,
                        Some(b']') => return Ok(Value::Other),
                        _ => return Err(self.error("`,` or `]`")),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Value::Other);
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next() {
                        Some(b',') => continue,
                        Some(b'}') => return Ok(Value::Other),
                        _ => return Err(self.error("`,` or `}`")),
                    }
                }
            }
            _ => Err(self.error("a JSON value")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> std::result::Result<&'a str, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("a digit")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.error("a digit"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("a digit"));
            }
        }
        // Only ASCII was consumed.
        std::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.error("a number"))
    }

    fn hex4(&mut self) -> std::result::Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.next() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.error("a hex digit")),
            };
            v = v * 16 + u32::from(d);
        }
        Ok(v)
    }

    fn string(&mut self) -> std::result::Result<Cow<'a, str>, String> {
        self.expect(b'"')?;
        let start = self.i;
        // Fast path: no escapes, borrow the bytes as they are.
        while let Some(b) = self.peek() {
            match b {
                b'"' => {
                    let s = std::str::from_utf8(&self.s[start..self.i])
                        .map_err(|_| self.error("UTF-8"))?;
                    self.i += 1;
                    return Ok(Cow::Borrowed(s));
                }
                b'\\' => break,
                0..=0x1F => return Err(self.error("no control character in a string")),
                _ => self.i += 1,
            }
        }
        let mut out = std::str::from_utf8(&self.s[start..self.i])
            .map_err(|_| self.error("UTF-8"))?
            .to_owned();
        loop {
            let run = self.i;
            while matches!(self.peek(), Some(b) if b != b'"' && b != b'\\' && b >= 0x20) {
                self.i += 1;
            }
            out.push_str(
                std::str::from_utf8(&self.s[run..self.i]).map_err(|_| self.error("UTF-8"))?,
            );
            match self.next() {
                Some(b'"') => return Ok(Cow::Owned(out)),
                Some(b'\\') => {}
                _ => return Err(self.error("the end of the string")),
            }
            let c = match self.next() {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    let hi = self.hex4()?;
                    let code = if (0xD800..0xDC00).contains(&hi) {
                        self.literal(b"\\u")?;
                        let lo = self.hex4()?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return Err(self.error("a low surrogate"));
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        hi
                    };
                    char::from_u32(code).ok_or_else(|| self.error("a Unicode scalar value"))?
                }
                _ => return Err(self.error("an escape")),
            };
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> std::result::Result<CommitEvent, String> {
        parse_event(Str::from_static("stream://r/a/x"), json.as_bytes())
    }

    #[test]
    fn decodes_committed_with_and_without_optional_axes() {
        let full = event(
            r#"{"event":"committed","first_resource_offset":0,"last_resource_offset":2,
               "first_area_offset":4,"last_area_offset":8,"first_realm_offset":9,
               "last_realm_offset":12,"first_global_offset":20,"last_global_offset":30,
               "batch_size":3,"future":{"x":[1,2,{"y":null}]}}"#,
        )
        .unwrap();
        let CommitEvent::Committed(c) = &full else {
            panic!("{full:?}")
        };
        assert_eq!(c.route(), "stream://r/a/x");
        assert_eq!(c.resource_offsets(), 0..=2);
        assert_eq!(c.area_offsets(), Some(4..=8));
        assert_eq!(c.realm_offsets(), Some(9..=12));
        assert_eq!(c.global_offsets(), Some(20..=30));
        assert_eq!(c.batch_size(), 3);

        let bare = event(
            r#" { "event" : "committed", "first_resource_offset": 5, "last_resource_offset": 6 } "#,
        )
        .unwrap();
        let CommitEvent::Committed(c) = bare else {
            panic!()
        };
        assert_eq!((c.area_offsets(), c.batch_size()), (None, 2));
    }

    #[test]
    fn decodes_watermark_advanced() {
        let e = event(r#"{"event":"watermark_advanced","previous":3,"watermark":7}"#).unwrap();
        let CommitEvent::WatermarkAdvanced(w) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            (w.previous(), w.watermark(), e.route()),
            (3, 7, "stream://r/a/x")
        );
    }

    #[test]
    fn rejects_what_it_cannot_trust() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"event":"committed"}"#,
            r#"{"event":"committed","first_resource_offset":-1,"last_resource_offset":2}"#,
            r#"{"event":"committed","first_resource_offset":1.5,"last_resource_offset":2}"#,
            r#"{"event":"committed","first_resource_offset":"1","last_resource_offset":2}"#,
            r#"{"event":"compacted","first_resource_offset":1,"last_resource_offset":2}"#,
            r#"{"event":7}"#,
            r#"{"event":"watermark_advanced","previous":1}"#,
            r#"{"event":"watermark_advanced","previous":1,"watermark":2} x"#,
            r#"{"event":"watermark_advanced",,"previous":1,"watermark":2}"#,
            r#"{"event":"watermark_advanced","previous":01,"watermark":2}"#,
            "{\"event\":\"a\u{1}\"}",
        ] {
            assert!(event(bad).is_err(), "{bad:?}");
        }
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(flat_object(deep.as_bytes()).is_err());
    }

    #[test]
    fn strings_unescape() {
        let f = flat_object(br#"{"a\"b":"\u00e9\ud83d\ude00\n","c":"plain"}"#).unwrap();
        assert_eq!(f[0].0, "a\"b");
        assert_eq!(f[0].1, Value::String(Cow::Borrowed("é😀\n")));
        assert!(matches!(f[1].1, Value::String(Cow::Borrowed("plain"))));
        assert!(flat_object(br#"{"a":"\ud83d"}"#).is_err());
        assert!(flat_object(br#"{"a":"\q"}"#).is_err());
    }

    #[test]
    fn notify_payloads_decode_to_events_or_protocol_errors() {
        let body = notify_payload(
            7,
            "stream://r/a/x",
            br#"{"event":"watermark_advanced","previous":0,"watermark":1}"#,
        );
        assert!(matches!(
            decode_notify(body).unwrap(),
            CommitEvent::WatermarkAdvanced(_)
        ));
        let e = decode_notify(notify_payload(7, "stream://r/a/x", b"nope")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Protocol);
        assert!(e.message().contains("stream://r/a/x"), "{e}");
        assert!(decode_notify(Bytes::from_static(&[0, 1])).is_err());
    }

    fn notify_payload(sub_id: u64, route: &str, json: &[u8]) -> Bytes {
        stream::Notify {
            sub_id,
            route: Str::from(route),
            payload: Bytes::copy_from_slice(json),
        }
        .to_payload()
    }
}
