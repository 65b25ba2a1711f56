//! The RPC engine's state: registered workers and their credit, calls in their phases, per-route wait queues, and the hashers of its maps.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use fitz_protocol::rpc::{Lifecycle, Response, RpcId};
use fitz_protocol::{Message, Str};

use crate::auth::Family;
use crate::session::{Session, SessionId};

pub(super) type Map<K, V> = HashMap<K, V, Seeded>;

#[derive(Default)]
pub(super) struct State {
    /// Credit of every registration, by registration id.
    pub(super) credit: Map<u64, Credit>,
    pub(super) calls: Map<u64, Call>,
    pub(super) by_caller: Map<(Family, RpcId), u64>,
    pub(super) by_worker_id: Map<(Family, RpcId), u64>,
    pub(super) queues: Map<Family, Map<Str, VecDeque<u64>>>,
    pub(super) queued: usize,
    /// Call deadlines (queued and running calls).
    pub(super) deadlines: BTreeSet<(SystemTime, u64)>,
    /// Cleanup grace deadlines of cancelled calls.
    pub(super) graces: BTreeSet<(SystemTime, u64)>,
    /// The tick requested and not yet run.
    pub(super) armed: Option<SystemTime>,
    pub(super) next_call: u64,
    /// Dispatch counter stamping `Credit::last_used`.
    pub(super) uses: u64,
    pub(super) invocations: u64,
}

/// A fast keyed hash (folded 64×64→128 multiplies over 8-byte words) with
/// a random seed per map. Caller UUIDs are chosen by clients, so the seed
/// keeps colliding keys from being precomputed; the other keys are broker
/// counters.
#[derive(Clone, Copy)]
pub(super) struct Seeded(u64);

impl Default for Seeded {
    fn default() -> Self {
        Seeded(RandomState::new().hash_one(0x5EED_u64) | 1)
    }
}

impl BuildHasher for Seeded {
    type Hasher = Folded;
    fn build_hasher(&self) -> Folded {
        Folded(self.0)
    }
}

#[derive(Clone, Copy)]
pub(super) struct Folded(u64);

impl Folded {
    #[inline]
    pub(super) fn mix(&mut self, word: u64) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let x = u128::from(self.0 ^ word) * u128::from(K);
        self.0 = (x as u64) ^ ((x >> 64) as u64);
    }
}

impl Hasher for Folded {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(n.into());
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(n.into());
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = *self;
        h.mix(0x2D35_8DCC_AA6C_78A5);
        h.0
    }
}

pub(super) struct Credit {
    pub(super) session: Session,
    pub(super) pattern: Arc<str>,
    pub(super) wildcard: bool,
    pub(super) max: u32,
    pub(super) in_flight: u32,
    pub(super) supports_cancellation: bool,
    pub(super) last_used: u64,
}

impl Credit {
    pub(super) fn free(&self) -> bool {
        self.in_flight < self.max && !self.session.is_closed()
    }
}

pub(super) struct Call {
    pub(super) family: Family,
    pub(super) caller_id: RpcId,
    pub(super) caller_session: SessionId,
    /// `None` once the caller is detached (cancelled, timed out, gone).
    pub(super) caller: Option<Session>,
    pub(super) route: Str,
    /// Held while queued, handed to the worker on dispatch.
    pub(super) body: Bytes,
    pub(super) has_budget: bool,
    pub(super) deadline: SystemTime,
    pub(super) phase: Phase,
}

pub(super) enum Phase {
    Queued,
    Running(Running),
    /// Cancelled (or timed out) on a supporting worker: credit is held
    /// until cleanup acknowledgement, the worker's session end, or the
    /// grace deadline closes that session.
    Cancelled(Running, SystemTime),
}

pub(super) struct Running {
    pub(super) registration: u64,
    pub(super) worker: Session,
    pub(super) worker_id: RpcId,
    pub(super) supports_cancellation: bool,
    pub(super) next_sequence: u64,
    /// The worker acknowledged cleanup before any cancellation reached it.
    pub(super) cleaned_up: bool,
}

impl Call {
    pub(super) fn running(&self) -> Option<&Running> {
        match &self.phase {
            Phase::Queued => None,
            Phase::Running(r) | Phase::Cancelled(r, _) => Some(r),
        }
    }
}

/// Sends a terminal error RESPONSE with `id` (never frame-correlated).
pub(super) fn terminal(session: &Session, id: RpcId, code: u32, message: &str) {
    let r = Response::terminal_error(id, code, message);
    // A short coded body always fits a record.
    let _ = session.send_frame(None, |b| r.encode_record(b));
}

pub(super) fn lifecycle(session: &Session, l: Lifecycle) {
    // 18 bytes always fit a record.
    let _ = session.send_frame(None, |b| l.encode_record(b));
}
