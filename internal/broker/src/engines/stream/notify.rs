//! Commit notifications, debounced per resource.
//!
//! The first commit to a resource opens a 25 ms window ([`DEBOUNCE`]) and
//! asks the timers for a tick at its end; later commits to the same resource
//! inside the window only widen the pending event (first offsets of the
//! first commit, last offsets of the latest, batch sizes added). When the
//! window ends, one NOTIFY per matching registration carries the merged
//! event. The window is fixed, not extended by later commits, so a resource
//! committed to continuously still notifies every 25 ms.
//!
//! Bounds: at most one pending event per resource that was committed to in
//! the last window; events of resources nobody watches are not kept.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fitz_protocol::Str;
use fitz_protocol::stream::{CommitEvent, Committed};

use super::log::{AREA, GLOBAL, REALM, RESOURCE, Span};
use crate::auth::Family;

/// How long commits to one resource are coalesced.
pub const DEBOUNCE: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, Copy)]
struct Event {
    due: SystemTime,
    span: Span,
}

/// Pending events by (family, route).
#[derive(Debug, Default)]
pub struct Debouncer {
    pending: HashMap<(Family, Str), Event>,
}

impl Debouncer {
    /// Records a commit; returns the deadline to wake at when it opened a
    /// new window.
    pub fn add(
        &mut self,
        family: Family,
        route: Str,
        span: Span,
        now: SystemTime,
    ) -> Option<SystemTime> {
        match self.pending.get_mut(&(family, route.clone())) {
            Some(e) => {
                e.span.last = span.last;
                e.span.count += span.count;
                None
            }
            None => {
                let due = now + DEBOUNCE;
                self.pending.insert((family, route), Event { due, span });
                Some(due)
            }
        }
    }

    /// Removes the events due at `now`, and tells the next deadline.
    pub fn take_due(&mut self, now: SystemTime) -> (Vec<(Family, Str, Span)>, Option<SystemTime>) {
        let mut due = Vec::new();
        self.pending.retain(|(family, route), e| {
            if e.due <= now {
                due.push((*family, route.clone(), e.span));
                false
            } else {
                true
            }
        });
        // Stable order: by route, so tests and subscribers see a fixed order.
        due.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let next = self.pending.values().map(|e| e.due).min();
        (due, next)
    }

    /// Pending events (inspection).
    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

/// The NOTIFY payload: the commit event with every axis the broker
/// assigns (global offsets included).
pub fn committed_json(span: &Span) -> Bytes {
    let (f, l) = (&span.first, &span.last);
    CommitEvent::Committed(Committed {
        first_resource_offset: f[RESOURCE],
        last_resource_offset: l[RESOURCE],
        first_area_offset: Some(f[AREA]),
        last_area_offset: Some(l[AREA]),
        first_realm_offset: Some(f[REALM]),
        last_realm_offset: Some(l[REALM]),
        first_global_offset: Some(f[GLOBAL]),
        last_global_offset: Some(l[GLOBAL]),
        batch_size: Some(span.count),
    })
    .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_inside_the_window_merge() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut d = Debouncer::default();
        let route: Str = "stream://r/a/x".into();
        let s1 = Span {
            first: [0, 4, 9, 20],
            last: [1, 5, 10, 21],
            count: 2,
        };
        let s2 = Span {
            first: [2, 8, 12, 30],
            last: [2, 8, 12, 30],
            count: 1,
        };
        assert_eq!(d.add(1, route.clone(), s1, t0), Some(t0 + DEBOUNCE));
        assert_eq!(d.add(1, route.clone(), s2, t0 + DEBOUNCE / 2), None);
        let (due, next) = d.take_due(t0 + DEBOUNCE / 2);
        assert!(due.is_empty());
        assert_eq!(next, Some(t0 + DEBOUNCE));
        let (due, next) = d.take_due(t0 + DEBOUNCE);
        assert_eq!((due.len(), next, d.len()), (1, None, 0));
        let json = committed_json(&due[0].2);
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            "{\"event\":\"committed\",\"first_resource_offset\":0,\"last_resource_offset\":2,\
             \"first_area_offset\":4,\"last_area_offset\":8,\"first_realm_offset\":9,\
             \"last_realm_offset\":12,\"first_global_offset\":20,\"last_global_offset\":30,\
             \"batch_size\":3}"
        );
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["batch_size"], 3);
    }
}
