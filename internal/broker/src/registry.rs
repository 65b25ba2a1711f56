//! The registration registry every SUBSCRIBE-style operation uses (KV and
//! Stream watches, Queue availability, Lease watches, Notice subscriptions,
//! RPC workers, Schedule watches): one [`Registry`] per domain.
//!
//! Rules (spec §3 "Registration Contract"):
//! * per session, at most [`MAX_REGISTRATIONS`] registrations of which at
//!   most [`MAX_WILDCARDS`] are wildcard patterns;
//! * a duplicate `(session, original pattern string)` returns the existing
//!   id, checked before the limits;
//! * ids come from one broker-wide `u64` counter ([`SubscriptionIds`]);
//! * matching a concrete route returns every matching registration (an exact
//!   lookup plus a scan of the wildcard patterns) of one route family only;
//!   overlapping registrations stay independent.
//!
//! Patterns are validated by the dispatcher before an engine sees them; the
//! registry only classifies them (a pattern with a `*` or `**` segment is a
//! wildcard).

use std::collections::HashMap as StdMap;

use crate::hash::Seeded;

/// Maps keyed by client-chosen routes and broker ids, with the broker's
/// keyed fast hash (SipHash was ~500 instructions per RPC lookup).
type HashMap<K, V> = StdMap<K, V, Seeded>;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fitz_protocol::route;
use parking_lot::RwLock;

use crate::auth::Family;
use crate::session::{Session, SessionId};

/// Registrations per session and domain.
pub const MAX_REGISTRATIONS: usize = 1024;
/// Wildcard registrations per session and domain.
pub const MAX_WILDCARDS: usize = 128;

/// The broker-wide subscription id counter shared by every registry.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionIds(Arc<AtomicU64>);

impl SubscriptionIds {
    /// The next id, starting at 1.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Why a registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    /// The session already holds 128 wildcard registrations in this domain.
    Wildcards,
    /// The session already holds 1,024 registrations in this domain.
    Total,
}

impl LimitError {
    /// The exact message the spec gives (Schedule quotes it; every domain uses it).
    pub fn message(self) -> &'static str {
        match self {
            LimitError::Wildcards => "wildcard subscription limit exceeded (128 per session)",
            LimitError::Total => "total subscription limit exceeded (1024 per session)",
        }
    }
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// One registration, as matching returns it.
#[derive(Debug, Clone)]
pub struct Registration<V> {
    /// Subscription id.
    pub id: u64,
    /// The subscriber.
    pub session: Session,
    /// The original pattern string.
    pub pattern: Arc<str>,
    /// True for a `*`/`**` pattern.
    pub wildcard: bool,
    /// Engine data (an RPC worker's credit, a filter …).
    pub value: V,
}

/// Outcome of [`Registry::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The subscription id.
    pub id: u64,
    /// False when the session had already registered the same pattern.
    pub created: bool,
}

/// The registrations of one domain.
pub struct Registry<V = ()> {
    ids: SubscriptionIds,
    inner: RwLock<Inner<V>>,
}

struct Inner<V> {
    by_id: HashMap<u64, Registration<V>>,
    families: HashMap<Family, FamilyIndex>,
    sessions: HashMap<SessionId, SessionRegs>,
}

#[derive(Default)]
struct FamilyIndex {
    exact: HashMap<Arc<str>, Vec<u64>>,
    wildcards: Vec<(u64, Wildcard)>,
}

/// A wildcard pattern prepared for matching at registration, so a publish
/// does not split the pattern again for every registration it checks.
#[derive(Debug, Clone)]
enum Wildcard {
    /// `scheme://a/b/**` (literal segments, then one trailing `**`): matches
    /// `scheme://a/b` and every route below it. Holds `scheme://a/b`.
    Below(Arc<str>),
    /// Any other shape: [`route::matches`] on the pattern.
    Glob(Arc<str>),
}

impl Wildcard {
    fn new(pattern: &Arc<str>) -> Self {
        if let Some(head) = pattern.strip_suffix("/**")
            && (head.ends_with(":/") || !route::is_wildcard(head))
        {
            return Wildcard::Below(Arc::from(head));
        }
        Wildcard::Glob(pattern.clone())
    }

    /// Same answer as [`route::matches`] for a concrete `route`.
    fn matches(&self, route: &str) -> bool {
        match self {
            Wildcard::Below(head) => route
                .strip_prefix(&**head)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Wildcard::Glob(pattern) => route::matches(pattern, route),
        }
    }
}

#[derive(Default)]
struct SessionRegs {
    family: Family,
    by_pattern: HashMap<Arc<str>, u64>,
    wildcards: usize,
}

impl<V: Clone> Registry<V> {
    /// An empty registry drawing ids from `ids`.
    pub fn new(ids: SubscriptionIds) -> Self {
        Self {
            ids,
            inner: RwLock::new(Inner {
                by_id: HashMap::default(),
                families: HashMap::default(),
                sessions: HashMap::default(),
            }),
        }
    }

    /// Registers `pattern` for `session` in the session's family. A
    /// duplicate of the session's own pattern returns the existing id (and
    /// keeps the existing value).
    pub fn register(
        &self,
        session: &Session,
        pattern: &str,
        value: V,
    ) -> Result<Registered, LimitError> {
        let wildcard = route::is_wildcard(pattern);
        let mut g = self.inner.write();
        let inner = &mut *g;
        let regs = inner.sessions.entry(session.id()).or_default();
        if let Some(&id) = regs.by_pattern.get(pattern) {
            return Ok(Registered { id, created: false });
        }
        if regs.by_pattern.len() >= MAX_REGISTRATIONS {
            return Err(LimitError::Total);
        }
        if wildcard && regs.wildcards >= MAX_WILDCARDS {
            return Err(LimitError::Wildcards);
        }
        let id = self.ids.next();
        let pattern: Arc<str> = Arc::from(pattern);
        regs.family = session.family();
        regs.by_pattern.insert(pattern.clone(), id);
        regs.wildcards += usize::from(wildcard);
        let fam = inner.families.entry(session.family()).or_default();
        if wildcard {
            fam.wildcards.push((id, Wildcard::new(&pattern)));
        } else {
            fam.exact.entry(pattern.clone()).or_default().push(id);
        }
        inner.by_id.insert(
            id,
            Registration {
                id,
                session: session.clone(),
                pattern,
                wildcard,
                value,
            },
        );
        Ok(Registered { id, created: true })
    }

    /// Removes the session's registration of `pattern` (the original
    /// string). Idempotent: `None` when there was none.
    pub fn unregister_pattern(&self, session: SessionId, pattern: &str) -> Option<Registration<V>> {
        let mut g = self.inner.write();
        let id = *g.sessions.get(&session)?.by_pattern.get(pattern)?;
        g.remove(id)
    }

    /// Removes registration `id` if `session` owns it. Idempotent.
    pub fn unregister_id(&self, session: SessionId, id: u64) -> Option<Registration<V>> {
        let mut g = self.inner.write();
        if g.by_id.get(&id)?.session.id() != session {
            return None;
        }
        g.remove(id)
    }

    /// Removes every registration of `session`.
    pub fn unregister_session(&self, session: SessionId) -> Vec<Registration<V>> {
        let mut g = self.inner.write();
        let Some(regs) = g.sessions.get(&session) else {
            return Vec::new();
        };
        let ids: Vec<u64> = regs.by_pattern.values().copied().collect();
        ids.into_iter().filter_map(|id| g.remove(id)).collect()
    }

    /// Calls `f` for every registration of `family` whose pattern matches the
    /// concrete `route`, under the registry's read lock: `f` must be quick
    /// and must not call back into this registry (pushing to a session's
    /// outbound is fine).
    pub fn for_each_match(&self, family: Family, route: &str, mut f: impl FnMut(&Registration<V>)) {
        let g = self.inner.read();
        let Some(fam) = g.families.get(&family) else {
            return;
        };
        if let Some(ids) = fam.exact.get(route) {
            for id in ids {
                if let Some(r) = g.by_id.get(id) {
                    f(r);
                }
            }
        }
        for (id, wildcard) in &fam.wildcards {
            if wildcard.matches(route)
                && let Some(r) = g.by_id.get(id)
            {
                f(r);
            }
        }
    }

    /// Every registration of `family` matching the concrete `route`.
    pub fn matches(&self, family: Family, route: &str) -> Vec<Registration<V>> {
        let mut out = Vec::new();
        self.for_each_match(family, route, |r| out.push(r.clone()));
        out
    }

    /// The registration with `id`.
    pub fn get(&self, id: u64) -> Option<Registration<V>> {
        self.inner.read().by_id.get(&id).cloned()
    }

    /// Replaces the value of registration `id`; false when it is gone.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut V)) -> bool {
        match self.inner.write().by_id.get_mut(&id) {
            Some(r) => {
                f(&mut r.value);
                true
            }
            None => false,
        }
    }

    /// Every registration of `family` (in no particular order).
    pub fn in_family(&self, family: Family) -> Vec<Registration<V>> {
        let g = self.inner.read();
        let Some(fam) = g.families.get(&family) else {
            return Vec::new();
        };
        fam.exact
            .values()
            .flatten()
            .chain(fam.wildcards.iter().map(|(id, _)| id))
            .filter_map(|id| g.by_id.get(id).cloned())
            .collect()
    }

    /// The registrations of `session`.
    pub fn of_session(&self, session: SessionId) -> Vec<Registration<V>> {
        let g = self.inner.read();
        g.sessions.get(&session).map_or_else(Vec::new, |regs| {
            regs.by_pattern
                .values()
                .filter_map(|id| g.by_id.get(id).cloned())
                .collect()
        })
    }

    /// Number of registrations held by `session`.
    pub fn session_count(&self, session: SessionId) -> usize {
        self.inner
            .read()
            .sessions
            .get(&session)
            .map_or(0, |r| r.by_pattern.len())
    }

    /// Number of registrations in the registry.
    pub fn len(&self) -> usize {
        self.inner.read().by_id.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V> Inner<V> {
    fn remove(&mut self, id: u64) -> Option<Registration<V>> {
        let reg = self.by_id.remove(&id)?;
        let sid = reg.session.id();
        if let Some(regs) = self.sessions.get_mut(&sid) {
            regs.by_pattern.remove(&reg.pattern);
            regs.wildcards -= usize::from(reg.wildcard);
            if regs.by_pattern.is_empty() {
                self.sessions.remove(&sid);
            }
        }
        let family = reg.session.family();
        if let Some(fam) = self.families.get_mut(&family) {
            if reg.wildcard {
                fam.wildcards.retain(|(x, _)| *x != id);
            } else if let Some(ids) = fam.exact.get_mut(&reg.pattern) {
                ids.retain(|x| *x != id);
                if ids.is_empty() {
                    fam.exact.remove(&reg.pattern);
                }
            }
            if fam.exact.is_empty() && fam.wildcards.is_empty() {
                self.families.remove(&family);
            }
        }
        Some(reg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Grant;
    use crate::session::{OutboundLimits, Transport};

    fn session(id: u64, family: Family) -> Session {
        let mut g = Grant::anonymous();
        g.family = family;
        Session::new(
            id,
            g,
            Transport::Tcp,
            None,
            OutboundLimits::default(),
            Arc::default(),
        )
    }

    /// The prepared wildcard answers exactly as the protocol's glob.
    #[test]
    fn prepared_wildcards_agree_with_the_glob() {
        let patterns = [
            "notice://**",
            "notice://a/**",
            "notice://a/b/**",
            "notice://a/*/**",
            "notice://*/b/c",
            "notice://a/**/c",
            "notice://a/b/c/**",
            "stream://a/**",
        ];
        let routes = [
            "notice://a",
            "notice://a/b",
            "notice://a/bc",
            "notice://ab/b",
            "notice://a/b/c",
            "notice://a/b/c/d",
            "notice://x/b/c",
            "stream://a/b/c",
            "notices://a/b",
        ];
        let mut below = 0;
        for p in patterns {
            let w = Wildcard::new(&Arc::from(p));
            below += usize::from(matches!(w, Wildcard::Below(_)));
            for r in routes {
                assert_eq!(w.matches(r), route::matches(p, r), "{p} vs {r}");
            }
        }
        assert_eq!(below, 5, "the trailing-** shapes take the fast path");
    }

    #[test]
    fn duplicates_return_the_same_id_and_overlaps_stay_independent() {
        let r: Registry = Registry::new(SubscriptionIds::default());
        let s = session(1, 1);
        let a = r.register(&s, "notice://a/*", ()).unwrap();
        let b = r.register(&s, "notice://a/*", ()).unwrap();
        assert_eq!((a.id, a.created, b.id, b.created), (1, true, 1, false));
        r.register(&s, "notice://a/b", ()).unwrap();
        r.register(&s, "notice://**", ()).unwrap();
        let ids: Vec<u64> = r.matches(1, "notice://a/b").iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![2, 1, 3]);
        assert!(r.matches(2, "notice://a/b").is_empty());
    }

    #[test]
    fn limits_are_checked_after_duplicates() {
        let r: Registry = Registry::new(SubscriptionIds::default());
        let s = session(1, 1);
        for i in 0..MAX_WILDCARDS {
            r.register(&s, &format!("kv://{i}/*/*"), ()).unwrap();
        }
        assert_eq!(r.register(&s, "kv://x/*/*", ()), Err(LimitError::Wildcards));
        assert!(r.register(&s, "kv://0/*/*", ()).is_ok());
        for i in MAX_WILDCARDS..MAX_REGISTRATIONS {
            r.register(&s, &format!("kv://{i}/a/b"), ()).unwrap();
        }
        assert_eq!(r.register(&s, "kv://x/a/b", ()), Err(LimitError::Total));
        assert!(r.register(&s, "kv://5000/a/b", ()).is_err());
        assert_eq!(r.session_count(1), MAX_REGISTRATIONS);
        assert!(r.unregister_pattern(1, "kv://0/*/*").is_some());
        assert!(r.register(&s, "kv://y/*/*", ()).is_ok());
    }

    #[test]
    fn removal_by_id_pattern_and_session() {
        let r: Registry = Registry::new(SubscriptionIds::default());
        let (s1, s2) = (session(1, 1), session(2, 1));
        let a = r.register(&s1, "notice://a", ()).unwrap().id;
        r.register(&s1, "notice://*", ()).unwrap();
        r.register(&s2, "notice://a", ()).unwrap();
        assert!(r.unregister_id(2, a).is_none(), "not the owner");
        assert!(r.unregister_id(1, a).is_some());
        assert!(r.unregister_id(1, a).is_none());
        assert_eq!(r.unregister_session(1).len(), 1);
        assert_eq!(r.len(), 1);
        assert_eq!(r.matches(1, "notice://a").len(), 1);
    }
}
