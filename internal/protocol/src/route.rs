//! Routes and patterns: `scheme://segment(/segment)*`.
//!
//! A concrete route has literal segments only. A pattern may use whole
//! segments `*` (exactly one segment) and `**` (zero or more). Validation
//! borrows the input and never allocates; matching walks both strings with
//! cloned split iterators and runs in O(len(pattern) × len(route)).

use std::fmt;
use std::str::Split;

use crate::types::Domain;

/// Longest accepted route or pattern, in bytes.
pub const MAX_ROUTE_LEN: usize = u16::MAX as usize;

/// A route scheme; one per domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// `kv://`
    Kv,
    /// `queue://`
    Queue,
    /// `rpc://`
    Rpc,
    /// `lease://`
    Lease,
    /// `notice://`
    Notice,
    /// `stream://`
    Stream,
    /// `schedule://`
    Schedule,
}

impl Scheme {
    /// Every scheme.
    pub const ALL: [Scheme; 7] = [
        Scheme::Kv,
        Scheme::Queue,
        Scheme::Rpc,
        Scheme::Lease,
        Scheme::Notice,
        Scheme::Stream,
        Scheme::Schedule,
    ];

    /// The scheme name without `://`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Kv => "kv",
            Scheme::Queue => "queue",
            Scheme::Rpc => "rpc",
            Scheme::Lease => "lease",
            Scheme::Notice => "notice",
            Scheme::Stream => "stream",
            Scheme::Schedule => "schedule",
        }
    }

    /// Parses a scheme name (case-sensitive).
    pub fn parse(name: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The domain this scheme addresses.
    pub const fn domain(self) -> Domain {
        match self {
            Scheme::Kv => Domain::Kv,
            Scheme::Queue => Domain::Queue,
            Scheme::Rpc => Domain::Rpc,
            Scheme::Lease => Domain::Lease,
            Scheme::Notice => Domain::Notice,
            Scheme::Stream => Domain::Stream,
            Scheme::Schedule => Domain::Schedule,
        }
    }

    /// The scheme of a domain (`None` for the control channel).
    pub const fn for_domain(d: Domain) -> Option<Scheme> {
        match d {
            Domain::Control => None,
            Domain::Kv => Some(Scheme::Kv),
            Domain::Queue => Some(Scheme::Queue),
            Domain::Rpc => Some(Scheme::Rpc),
            Domain::Lease => Some(Scheme::Lease),
            Domain::Notice => Some(Scheme::Notice),
            Domain::Stream => Some(Scheme::Stream),
            Domain::Schedule => Some(Scheme::Schedule),
        }
    }

    /// Segments of a concrete route of this domain: 3 for KV, Queue, Stream
    /// and Lease; 4 for Schedule; `None` (any depth ≥ 1) for RPC and Notice.
    pub const fn depth(self) -> Option<usize> {
        match self {
            Scheme::Kv | Scheme::Queue | Scheme::Stream | Scheme::Lease => Some(3),
            Scheme::Schedule => Some(4),
            Scheme::Rpc | Scheme::Notice => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a route or pattern was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteError {
    /// Longer than 65,535 bytes.
    TooLong,
    /// No `scheme://` prefix.
    MissingScheme,
    /// A scheme outside the seven domains.
    UnknownScheme,
    /// A valid scheme, but not the one this operation addresses.
    WrongScheme {
        /// The scheme the operation needs.
        expected: Scheme,
        /// The scheme found.
        found: Scheme,
    },
    /// Nothing after `scheme://`, or an empty segment (`a//b`, trailing `/`).
    EmptySegment,
    /// A segment holds a control character.
    ControlCharacter,
    /// A segment mixes `*` with other characters (`ab*`, `***`).
    PartialWildcard,
    /// Two `**` segments in a row.
    AdjacentGlobstars,
    /// A wildcard where a concrete route is required.
    WildcardNotAllowed,
    /// A concrete route with the wrong number of segments.
    WrongDepth {
        /// Segments required.
        expected: usize,
        /// Segments found.
        found: usize,
    },
    /// A pattern that can never match a route of the domain's depth.
    CannotMatchDepth(usize),
    /// A stream selector outside the ten allowed shapes.
    InvalidSelector,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => f.write_str("route longer than 65535 bytes"),
            Self::MissingScheme => f.write_str("route has no scheme:// prefix"),
            Self::UnknownScheme => f.write_str("unknown route scheme"),
            Self::WrongScheme { expected, found } => {
                write!(f, "route scheme {found} where {expected} is required")
            }
            Self::EmptySegment => f.write_str("route has an empty segment"),
            Self::ControlCharacter => f.write_str("route segment holds a control character"),
            Self::PartialWildcard => f.write_str("wildcards must be whole segments: `*` or `**`"),
            Self::AdjacentGlobstars => f.write_str("two `**` segments in a row"),
            Self::WildcardNotAllowed => f.write_str("a concrete route is required here"),
            Self::WrongDepth { expected, found } => {
                write!(f, "route needs {expected} segments, found {found}")
            }
            Self::CannotMatchDepth(n) => {
                write!(f, "pattern can never match a route of {n} segments")
            }
            Self::InvalidSelector => f.write_str("not a valid stream selector"),
        }
    }
}

impl std::error::Error for RouteError {}

/// The shape of a validated route or pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Its scheme.
    pub scheme: Scheme,
    /// Number of segments (each `*`/`**` counts as one).
    pub segments: usize,
    /// Number of `*` segments.
    pub stars: usize,
    /// Number of `**` segments.
    pub globstars: usize,
}

impl Shape {
    /// True when the route has no wildcard.
    pub const fn is_concrete(&self) -> bool {
        self.stars == 0 && self.globstars == 0
    }

    /// True when a pattern of this shape can match a route of `n` segments.
    pub const fn can_match_depth(&self, n: usize) -> bool {
        if self.globstars == 0 {
            self.segments == n
        } else {
            self.segments - self.globstars <= n
        }
    }
}

/// `s.split_once("://")` without `str::split_once`'s substring searcher,
/// whose setup cost more than the search on these short strings (about
/// 1 k instructions per RPC call across client and broker, callgrind):
/// the first `:` that starts `://`, found bytewise.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(offset) = bytes[from..].iter().position(|&b| b == b':') {
        let i = from + offset;
        if bytes[i..].starts_with(b"://") {
            // ASCII at `i` and `i + 3`: both are character boundaries.
            return Some((&s[..i], &s[i + 3..]));
        }
        from = i + 1;
    }
    None
}

/// Splits `scheme://path`, returning the scheme and the path after `://`.
pub fn split(route: &str) -> Result<(Scheme, &str), RouteError> {
    if route.len() > MAX_ROUTE_LEN {
        return Err(RouteError::TooLong);
    }
    let (name, path) = split_scheme(route).ok_or(RouteError::MissingScheme)?;
    let scheme = Scheme::parse(name).ok_or(RouteError::UnknownScheme)?;
    Ok((scheme, path))
}

/// Whether `seg` holds a control character (Unicode general category Cc:
/// U+0000–U+001F, U+007F, U+0080–U+009F; the last encoded `C2 80`–`C2 9F`
/// in UTF-8), checked on the bytes.
fn has_control(seg: &[u8]) -> bool {
    seg.iter().enumerate().any(|(i, &b)| {
        b < 0x20
            || b == 0x7F
            || (b == 0xC2 && seg.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n)))
    })
}

/// The path of a route (after `scheme://`), or the input when it has no scheme.
pub fn path_of(route: &str) -> &str {
    split_scheme(route).map_or(route, |(_, p)| p)
}

/// The segment count of a path of printable ASCII without `*` and without
/// empty segments (nearly every route): branch-free passes the compiler
/// vectorises. `None` sends the path to the general check.
fn plain_segments(path: &[u8]) -> Option<usize> {
    let unusual = path.iter().fold(false, |acc, &b| {
        acc | !(0x20..0x7F).contains(&b) | (b == b'*')
    });
    let doubled = path
        .iter()
        .zip(path.iter().skip(1))
        .fold(false, |acc, (&a, &b)| acc | ((a == b'/') & (b == b'/')));
    if unusual || doubled || path.first().is_none_or(|&b| b == b'/') || path.last() == Some(&b'/') {
        return None;
    }
    Some(path.iter().filter(|&&b| b == b'/').count() + 1)
}

/// Checks the grammar of a route or pattern: scheme, non-empty segments,
/// no control characters, whole-segment wildcards, no adjacent `**`.
pub fn shape(route: &str) -> Result<Shape, RouteError> {
    let (scheme, path) = split(route)?;
    let mut s = Shape {
        scheme,
        segments: 0,
        stars: 0,
        globstars: 0,
    };
    if let Some(segments) = plain_segments(path.as_bytes()) {
        s.segments = segments;
        return Ok(s);
    }
    let mut prev_globstar = false;
    // Bytes, not chars: every byte this looks for is ASCII (or the lead of
    // a C1 control), and a slice split is cheaper than a `str` pattern.
    for seg in path.as_bytes().split(|&b| b == b'/') {
        if seg.is_empty() {
            return Err(RouteError::EmptySegment);
        }
        if has_control(seg) {
            return Err(RouteError::ControlCharacter);
        }
        let globstar = seg == b"**";
        if globstar {
            if prev_globstar {
                return Err(RouteError::AdjacentGlobstars);
            }
            s.globstars += 1;
        } else if seg == b"*" {
            s.stars += 1;
        } else if seg.contains(&b'*') {
            return Err(RouteError::PartialWildcard);
        }
        prev_globstar = globstar;
        s.segments += 1;
    }
    Ok(s)
}

fn expect_scheme(s: &Shape, scheme: Scheme) -> Result<(), RouteError> {
    if s.scheme == scheme {
        Ok(())
    } else {
        Err(RouteError::WrongScheme {
            expected: scheme,
            found: s.scheme,
        })
    }
}

/// Validates a concrete route of `scheme`: no wildcards and the domain's depth.
pub fn validate_concrete(route: &str, scheme: Scheme) -> Result<Shape, RouteError> {
    let s = shape(route)?;
    expect_scheme(&s, scheme)?;
    if !s.is_concrete() {
        return Err(RouteError::WildcardNotAllowed);
    }
    if let Some(expected) = scheme.depth()
        && s.segments != expected
    {
        return Err(RouteError::WrongDepth {
            expected,
            found: s.segments,
        });
    }
    Ok(s)
}

/// Validates a registration pattern of `scheme`: exact or wildcard, and able
/// to match a route of the domain's depth.
pub fn validate_pattern(pattern: &str, scheme: Scheme) -> Result<Shape, RouteError> {
    let s = shape(pattern)?;
    expect_scheme(&s, scheme)?;
    if let Some(depth) = scheme.depth()
        && !s.can_match_depth(depth)
    {
        return Err(RouteError::CannotMatchDepth(depth));
    }
    Ok(s)
}

/// Does `pattern` match the concrete `route`? Both are full strings with
/// scheme; different schemes never match. Inputs are assumed validated; an
/// invalid input simply fails to match.
pub fn matches(pattern: &str, route: &str) -> bool {
    match (split_scheme(pattern), split_scheme(route)) {
        (Some((ps, pp)), Some((rs, rp))) => ps == rs && matches_path(pp, rp),
        _ => false,
    }
}

/// [`matches()`] on paths (the part after `scheme://`).
pub fn matches_path(pattern_path: &str, route_path: &str) -> bool {
    // A pattern without a wildcard matches only itself: one comparison, not
    // two segment iterators (a worker matches every delivery this way).
    if !pattern_path.as_bytes().contains(&b'*') {
        return pattern_path == route_path;
    }
    glob(pattern_path.split('/'), route_path.split('/'), |p, r| {
        p == "*" || p == r
    })
}

/// Does permission pattern `outer` cover every route pattern `inner` can
/// match? `*` in `outer` covers a literal or `*`; `**` covers anything;
/// a `**` in `inner` is covered only by a `**`.
pub fn covers(outer: &str, inner: &str) -> bool {
    match (split_scheme(outer), split_scheme(inner)) {
        (Some((os, op)), Some((is, ip))) => {
            os == is
                && glob(op.split('/'), ip.split('/'), |o, i| {
                    i != "**" && (o == "*" || o == i)
                })
        }
        _ => false,
    }
}

/// Greedy segment glob with a single backtrack point: `**` absorbs zero or
/// more segments; `seg_eq` decides every other pairing.
fn glob<'a>(
    mut p: Split<'a, char>,
    mut r: Split<'a, char>,
    seg_eq: impl Fn(&str, &str) -> bool,
) -> bool {
    let mut star: Option<(Split<'a, char>, Split<'a, char>)> = None;
    loop {
        let mut p_next = p.clone();
        let mut r_next = r.clone();
        match (p_next.next(), r_next.next()) {
            (Some("**"), _) => {
                star = Some((p_next.clone(), r.clone()));
                p = p_next;
                continue;
            }
            (Some(ps), Some(rs)) if seg_eq(ps, rs) => {
                p = p_next;
                r = r_next;
                continue;
            }
            (None, None) => return true,
            _ => {}
        }
        match star.take() {
            Some((after_star, mut mark)) => {
                if mark.next().is_none() {
                    return false;
                }
                p = after_star.clone();
                r = mark.clone();
                star = Some((after_star, mark));
            }
            None => return false,
        }
    }
}

/// Which offsets a stream READ selector pages by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorScope {
    /// `stream://R/A/X`: one resource.
    Resource,
    /// `stream://R/A/*`: one area.
    Area,
    /// `stream://R/*/X`, `stream://R/*/*`, `stream://R/**`: one realm.
    Realm,
    /// Any wildcard realm, including `stream://**`: the whole family.
    Global,
}

/// Classifies a stream READ/SUBSCRIBE selector into one of the ten legal
/// shapes.
pub fn stream_selector(selector: &str) -> Result<SelectorScope, RouteError> {
    let s = shape(selector)?;
    expect_scheme(&s, Scheme::Stream)?;
    let path = path_of(selector);
    let mut segs = path.split('/');
    let (a, b, c, d) = (segs.next(), segs.next(), segs.next(), segs.next());
    match (a, b, c, d) {
        (Some("**"), None, _, _) => Ok(SelectorScope::Global),
        (Some(realm), Some("**"), None, _) if realm != "*" => Ok(SelectorScope::Realm),
        (Some(r), Some(ar), Some(res), None) if s.globstars == 0 => Ok(if r == "*" {
            SelectorScope::Global
        } else if ar == "*" {
            SelectorScope::Realm
        } else if res == "*" {
            SelectorScope::Area
        } else {
            SelectorScope::Resource
        }),
        _ => Err(RouteError::InvalidSelector),
    }
}

/// True when `pattern`'s path has a `*` or `**` segment.
pub fn is_wildcard(pattern: &str) -> bool {
    path_of(pattern).split('/').any(|s| s == "*" || s == "**")
}

/// The literal start of `pattern` before its first wildcard segment
/// (scheme included, no trailing `/`): every route the pattern matches
/// starts with it, so an ordered index can be scanned from there.
pub fn literal_prefix(pattern: &str) -> &str {
    let path = path_of(pattern);
    let mut end = pattern.len() - path.len();
    for (i, seg) in path.split('/').enumerate() {
        if seg == "*" || seg == "**" {
            break;
        }
        end += seg.len() + usize::from(i > 0);
    }
    &pattern[..end]
}

/// The first `n` segments of a concrete route's path, e.g. realm (`n = 1`)
/// or realm/area (`n = 2`). `None` when the path is shorter.
pub fn prefix(path: &str, n: usize) -> Option<&str> {
    if n == 0 {
        return Some("");
    }
    let mut end = 0;
    for (i, seg) in path.split('/').enumerate() {
        end += seg.len() + usize::from(i > 0);
        if i + 1 == n {
            return Some(&path[..end]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_pattern_matches_exactly_itself() {
        let glob_only =
            |p: &str, r: &str| glob(p.split('/'), r.split('/'), |p, r| p == "*" || p == r);
        for (p, r) in [
            ("a/b/c", "a/b/c"),
            ("a/b/c", "a/b"),
            ("a/b", "a/b/c"),
            ("a/b/c", "a/b/d"),
            ("a", "a"),
            ("a", "b"),
            ("", ""),
            ("a/", "a"),
            ("a/*/c", "a/b/c"),
            ("a/**", "a/b/c"),
        ] {
            assert_eq!(matches_path(p, r), glob_only(p, r), "{p:?} {r:?}");
        }
        assert!(matches("rpc://a/b", "rpc://a/b"));
        assert!(!matches("rpc://a/b", "queue://a/b"));
    }

    #[test]
    fn split_scheme_is_split_once_on_the_separator() {
        for s in [
            "rpc://a/b",
            "://",
            "rpc://",
            "a:b://c",
            "a:/b://c://d",
            "rpc:/a",
            "rpc:",
            ":",
            "",
            "no scheme",
            "é:ü://ö:",
            "x:://y",
            "rpc:///",
        ] {
            assert_eq!(split_scheme(s), s.split_once("://"), "{s:?}");
        }
    }

    #[test]
    fn literal_prefixes_stop_at_the_first_wildcard() {
        assert_eq!(literal_prefix("queue://a/b/*"), "queue://a/b");
        assert_eq!(literal_prefix("queue://a/b/c"), "queue://a/b/c");
        assert_eq!(literal_prefix("lease://*/b/c"), "lease://");
        assert_eq!(literal_prefix("queue://a/**"), "queue://a");
        assert_eq!(literal_prefix("queue://a/b/c/**"), "queue://a/b/c");
        assert!(is_wildcard("queue://a/*/c"));
        assert!(is_wildcard("lease://a/**"));
        assert!(!is_wildcard("kv://a/b*/c"));
        assert!(!is_wildcard("kv://a/b/c"));
    }

    #[test]
    fn grammar() {
        assert!(shape("kv://a/b/c").unwrap().is_concrete());
        assert_eq!(shape("kv:/a"), Err(RouteError::MissingScheme));
        assert_eq!(shape("http://a"), Err(RouteError::UnknownScheme));
        assert_eq!(shape("kv://"), Err(RouteError::EmptySegment));
        assert_eq!(shape("kv://a//b"), Err(RouteError::EmptySegment));
        assert_eq!(shape("kv://a/b/"), Err(RouteError::EmptySegment));
        assert_eq!(shape("kv://a/\u{0}/b"), Err(RouteError::ControlCharacter));
        assert_eq!(shape("kv://a/b*/c"), Err(RouteError::PartialWildcard));
        assert_eq!(shape("kv://a/***"), Err(RouteError::PartialWildcard));
        assert_eq!(shape("kv://**/**"), Err(RouteError::AdjacentGlobstars));
        assert!(shape("kv://**/a/**").is_ok());
        let long = format!("kv://{}", "a".repeat(MAX_ROUTE_LEN));
        assert_eq!(shape(&long), Err(RouteError::TooLong));
    }

    /// The byte-wise `shape` against the `char`-wise definition it
    /// replaced (`split_once("://")`, `split('/')`, `char::is_control`).
    #[test]
    fn byte_wise_shape_agrees_with_the_char_wise_definition() {
        fn reference(route: &str) -> Result<Shape, RouteError> {
            if route.len() > MAX_ROUTE_LEN {
                return Err(RouteError::TooLong);
            }
            let (name, path) = route.split_once("://").ok_or(RouteError::MissingScheme)?;
            let scheme = Scheme::parse(name).ok_or(RouteError::UnknownScheme)?;
            let mut s = Shape {
                scheme,
                segments: 0,
                stars: 0,
                globstars: 0,
            };
            let mut prev = false;
            for seg in path.split('/') {
                if seg.is_empty() {
                    return Err(RouteError::EmptySegment);
                }
                if seg.chars().any(char::is_control) {
                    return Err(RouteError::ControlCharacter);
                }
                let g = seg == "**";
                if g {
                    if prev {
                        return Err(RouteError::AdjacentGlobstars);
                    }
                    s.globstars += 1;
                } else if seg == "*" {
                    s.stars += 1;
                } else if seg.contains('*') {
                    return Err(RouteError::PartialWildcard);
                }
                prev = g;
                s.segments += 1;
            }
            Ok(s)
        }
        let parts = [
            "a", "*", "**", "/", "//", ":", "://", "kv", "kv://", "\u{0}", "\u{1f}", "\u{7f}",
            "\u{80}", "\u{9f}", "\u{a0}", "\u{c2}", "é", "\u{2028}", "b*", "x:/",
        ];
        let mut checked = 0;
        for prefix in ["kv://", "rpc://", "kv:/", "http://", ""] {
            for a in &parts {
                for b in &parts {
                    for c in &parts {
                        let route = format!("{prefix}{a}{b}/{c}");
                        assert_eq!(shape(&route), reference(&route), "{route:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10_000);
    }

    #[test]
    fn per_domain_depths() {
        assert!(validate_concrete("kv://r/a/x", Scheme::Kv).is_ok());
        assert_eq!(
            validate_concrete("kv://r/a", Scheme::Kv),
            Err(RouteError::WrongDepth {
                expected: 3,
                found: 2
            })
        );
        assert!(validate_concrete("schedule://r/a/x/run", Scheme::Schedule).is_ok());
        assert!(validate_concrete("schedule://r/a/x", Scheme::Schedule).is_err());
        assert!(validate_concrete("rpc://a", Scheme::Rpc).is_ok());
        assert!(validate_concrete("rpc://a/b/c/d/e", Scheme::Rpc).is_ok());
        assert_eq!(
            validate_concrete("rpc://a/*", Scheme::Rpc),
            Err(RouteError::WildcardNotAllowed)
        );
        assert!(matches!(
            validate_concrete("queue://r/a/x", Scheme::Kv),
            Err(RouteError::WrongScheme { .. })
        ));
        assert!(validate_pattern("kv://r/*/*", Scheme::Kv).is_ok());
        assert!(validate_pattern("kv://**", Scheme::Kv).is_ok());
        assert!(validate_pattern("kv://a/**/b/c", Scheme::Kv).is_ok());
        assert_eq!(
            validate_pattern("kv://a/*/b/c", Scheme::Kv),
            Err(RouteError::CannotMatchDepth(3))
        );
        assert!(validate_pattern("kv://a/b/c/**", Scheme::Kv).is_ok());
        assert!(validate_pattern("kv://a/b/c/d/**", Scheme::Kv).is_err());
        assert!(validate_pattern("notice://**", Scheme::Notice).is_ok());
    }

    #[test]
    fn matching() {
        assert!(matches("rpc://*/orders/**", "rpc://acme/orders/v1/create"));
        assert!(!matches("rpc://acme/**/orders", "rpc://acme/create"));
        assert!(matches("kv://**", "kv://a/b/c"));
        assert!(!matches("kv://**", "queue://a/b/c"));
        assert!(matches("kv://a/**", "kv://a"));
        assert!(matches("kv://a/**/c", "kv://a/c"));
        assert!(matches("kv://a/**/c", "kv://a/x/y/c"));
        assert!(!matches("kv://a/**/c", "kv://a/x/y/d"));
        assert!(matches("kv://*/b/*", "kv://a/b/c"));
        assert!(!matches("kv://*/b/*", "kv://a/b/c/d"));
        assert!(matches("kv://a/b/c", "kv://a/b/c"));
        assert!(!matches("kv://a/b/c", "kv://a/b/cc"));
        assert!(matches("notice://**/x/**/y", "notice://x/q/y"));
        assert!(!matches("notice://**/x/**/y", "notice://y/x"));
    }

    #[test]
    fn covering() {
        assert!(covers("kv://**", "kv://a/*/c"));
        assert!(covers("kv://**", "kv://**"));
        assert!(covers("kv://a/*/*", "kv://a/*/c"));
        assert!(!covers("kv://a/*/*", "kv://a/**"));
        assert!(!covers("kv://a/b/*", "kv://a/*/c"));
        assert!(covers("kv://a/**", "kv://a/b/**"));
        assert!(!covers("queue://**", "kv://a/b/c"));
    }

    #[test]
    fn selectors() {
        use SelectorScope::*;
        for (s, want) in [
            ("stream://R/A/X", Resource),
            ("stream://R/A/*", Area),
            ("stream://R/*/X", Realm),
            ("stream://R/*/*", Realm),
            ("stream://R/**", Realm),
            ("stream://*/A/X", Global),
            ("stream://*/A/*", Global),
            ("stream://*/*/X", Global),
            ("stream://*/*/*", Global),
            ("stream://**", Global),
        ] {
            assert_eq!(stream_selector(s), Ok(want), "{s}");
        }
        for s in [
            "stream://R/A",
            "stream://R/A/X/Y",
            "stream://R/**/X",
            "stream://R/A/**",
            "stream://*/**",
            "stream://R/A*/X",
            "stream://R//X",
            "kv://R/A/X",
        ] {
            assert!(stream_selector(s).is_err(), "{s}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix("r/a/x", 1), Some("r"));
        assert_eq!(prefix("r/a/x", 2), Some("r/a"));
        assert_eq!(prefix("r/a/x", 3), Some("r/a/x"));
        assert_eq!(prefix("r/a/x", 4), None);
    }
}
