//! RPC (300–305): worker registrations with credit, call routing, streamed
//! responses, deadlines and cooperative cancellation (capability bit 3).
//!
//! # State
//!
//! Everything is ephemeral and lives behind one mutex (calls, credit and
//! wait queues must change together: a terminal response releases credit
//! and dispatches the next queued call in one step):
//!
//! * worker registrations come from a [`Registry`] (limits, duplicates,
//!   matching, family isolation); the engine keeps each registration's
//!   credit (`max_concurrent`, calls in flight) next to it. Credit is shared
//!   by every route the registration matches; a duplicate registration keeps
//!   its original credit and flags;
//! * live calls, indexed by the caller's UUID within its family (duplicates
//!   get 6007) and by the id the worker sees: the caller UUID for legacy
//!   workers, a fresh opaque invocation UUID for workers that registered
//!   with the cancellation flag;
//! * one FIFO wait queue per (family, concrete route), bounded by
//!   [`ROUTE_QUEUE_CAPACITY`]; all live calls (queued or dispatched) are
//!   bounded by [`MAX_LIVE_CALLS`]. Either bound full: terminal 6003, the
//!   call was never enqueued. A queue is dropped when it empties.
//!
//! # Dispatch
//!
//! A REQUEST goes to the matching registration with free credit that was
//! used least recently (exact and wildcard registrations compete as
//! equals), which spreads calls evenly across workers. With every matching
//! worker busy it waits in its route's queue; whenever a registration gets
//! credit back (terminal response, cleanup acknowledgement, new
//! registration) it takes the oldest queued call among the routes it
//! matches. So a queue is non-empty only while every registration matching
//! its route is busy. Queued calls stay queued when their workers vanish:
//! a new worker takes them, or they time out with 6001 (AC-RPC-006).
//!
//! A successful REQUEST produces no frame; every failure is one terminal
//! RESPONSE carrying the caller UUID, never frame-correlated. Errors about
//! a worker's RESPONSE (6005 unknown id, 6008 not the owner, 6006 bad
//! sequence) go back to the worker as a terminal RESPONSE carrying the id
//! it used; 6006 also fails the call for the caller and releases the
//! credit, as the reference broker does.
//!
//! # Deadlines
//!
//! A call's deadline is its arrival plus the caller's budget, capped at
//! [`Config::rpc_request_timeout`]; queueing never renews it. Expiry sends
//! the caller 6001 (queued or dispatched); a supporting worker also gets
//! RPC_LIFECYCLE kind 2 reason 4 and the call then waits for its cleanup
//! like a cancelled one. Supporting workers receive the remaining budget
//! (rounded down) when the caller sent one.
//!
//! # Cancellation
//!
//! A caller's RPC_CANCEL kind 1 is answered with RPC_LIFECYCLE kind 4 (1
//! queued call removed, 2 signal forwarded, 3 worker does not support it,
//! 4 already cancelled, 5 unknown / not the caller's / finished, 6 the
//! worker is already gone). A forwarded cancel detaches the caller, keeps
//! the worker's credit until its kind-3 cleanup acknowledgement or its
//! session ends, and closes the worker's session after
//! [`Config::rpc_cancellation_grace`] without acknowledgement. Responses
//! to a cancelled call are ignored. Malformed RPC_CANCEL records are
//! discarded; RPC_CANCEL is never answered directly.
//!
//! # Sessions
//!
//! A worker session's end removes its registrations and fails its running
//! calls with 6002 (UNSUBSCRIBE_WORKER does the same for the calls of that
//! registration). A caller session's end drops its queued calls, signals
//! its calls on supporting workers (kind 2 reason 3) and lets calls on
//! legacy workers run to their end with the responses discarded.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fitz_protocol::rpc::{
    Cancel, CancelReason, CancelStatus, Lifecycle, MAX_CONCURRENT, Request, Response, RpcId,
    SignalReason, SubscribeWorker, SubscribeWorkerOk,
};
use fitz_protocol::types::Domain;
use fitz_protocol::{Message, Str, codes, route, types};
use parking_lot::Mutex;

use super::{Engine, Refusal, RpcRequest, Services};
use crate::auth::Family;
use crate::clock::{Clock, Timers};
use crate::registry::Registry;
use crate::session::{CloseReason, Reply, Session};
use crate::storage::StorageError;

use super::{DomainRequest, Target, concrete, pattern};
use crate::auth::Access;

mod state;

use self::state::*;

#[cfg(doc)]
use crate::config::Config;
use fitz_protocol::route::Scheme;

/// Calls waiting for a worker on one route; one more gets 6003.
pub const ROUTE_QUEUE_CAPACITY: usize = 1024;
/// Live calls (queued, dispatched, or cancelled awaiting cleanup) of the
/// whole broker; one more gets 6003.
pub const MAX_LIVE_CALLS: usize = 16_384;

const NO_WORKERS: &str = "No workers registered for route";
const BACKPRESSURE: &str = "RPC backpressure: too many pending requests";
const WORKER_GONE: &str = "Worker disconnected or unregistered";
const NOT_FOUND: &str = "Correlation ID not found (orphaned response)";
const DUPLICATE: &str = "Correlation ID already has a live pending request";
const WRONG_WORKER: &str = "Worker does not own this correlation ID";
const BAD_SEQUENCE: &str = "RPC response sequence must start at seq=0 and advance contiguously";
const TIMEOUT: &str = "Worker did not reply within timeout period";
const UNAUTHORIZED: &str = "unauthorized: permission denied";

/// Close reason of a worker that did not acknowledge a cancellation in time.
pub const GRACE_EXPIRED: CloseReason = CloseReason::new("rpc cancellation grace expired");

/// The RPC engine.
pub struct RpcEngine {
    clock: Clock,
    timers: Arc<Timers>,
    request_timeout: Duration,
    grace: Duration,
    workers: Registry,
    /// Keys of the invocation-UUID mixer, random per broker.
    mixer: RandomState,
    /// A random mask for the counter half of invocation UUIDs.
    mask: u64,
    state: Mutex<State>,
}

/// The engine's maps hash with `Seeded`: SipHash was a quarter of the
/// broker's instructions on the call path.
impl RpcEngine {
    /// The worker registrations (inspection).
    pub fn workers(&self) -> &Registry {
        &self.workers
    }

    /// Number of live calls: queued, running, or cancelled awaiting cleanup.
    pub fn live_calls(&self) -> usize {
        self.state.lock().calls.len()
    }

    /// Number of calls waiting for a worker.
    pub fn queued_calls(&self) -> usize {
        self.state.lock().queued
    }

    /// A fresh opaque invocation UUID: a keyed hash of a counter next to
    /// the counter masked by another keyed value, so ids never repeat within
    /// a broker and cannot be predicted from outside.
    fn invocation_id(&self, st: &mut State, family: Family) -> RpcId {
        loop {
            st.invocations += 1;
            let n = st.invocations;
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&self.mixer.hash_one(n).to_be_bytes());
            id[8..].copy_from_slice(&(n ^ self.mask).to_be_bytes());
            let id = RpcId(id);
            // A caller may have chosen the same UUID for a legacy worker.
            if !st.by_worker_id.contains_key(&(family, id)) {
                return id;
            }
        }
    }

    fn arm(&self, st: &mut State, at: SystemTime) {
        if st.armed.is_none_or(|a| at < a) {
            st.armed = Some(at);
            self.timers.wake_at(Domain::Rpc, at);
        }
    }

    fn subscribe(&self, session: &Session, s: SubscribeWorker, reply: Reply) {
        if !(1..=MAX_CONCURRENT).contains(&s.max_concurrent) {
            reply.coded(
                codes::RPC_UNAVAILABLE,
                "max_concurrent must be between 1 and 1024",
            );
            return;
        }
        let mut st = self.state.lock();
        let reg = match self.workers.register(session, &s.pattern, ()) {
            Ok(r) => r,
            Err(e) => {
                drop(st);
                reply.coded(codes::RPC_SUBSCRIPTION_LIMIT, e.message());
                return;
            }
        };
        if reg.created {
            st.credit.insert(
                reg.id,
                Credit {
                    session: session.clone(),
                    pattern: Arc::from(&*s.pattern),
                    wildcard: route::is_wildcard(&s.pattern),
                    max: s.max_concurrent,
                    in_flight: 0,
                    supports_cancellation: s.supports_cancellation(),
                    last_used: 0,
                },
            );
        }
        // The reply goes out before any queued call this worker takes.
        let _ = reply.ok(&SubscribeWorkerOk);
        if reg.created {
            let now = self.clock.now();
            self.drain(&mut st, reg.id, now);
        }
    }

    fn unsubscribe(&self, session: &Session, pattern: &str, reply: Reply) {
        let mut st = self.state.lock();
        if let Some(reg) = self.workers.unregister_pattern(session.id(), pattern) {
            st.credit.remove(&reg.id);
            let failed: Vec<u64> = st
                .calls
                .iter()
                .filter(|(_, c)| matches!(&c.phase, Phase::Running(r) if r.registration == reg.id))
                .map(|(id, _)| *id)
                .collect();
            for id in failed {
                if let Some(call) = self.remove_call(&mut st, id)
                    && let Some(caller) = &call.caller
                {
                    terminal(
                        caller,
                        call.caller_id,
                        codes::RPC_WORKER_NOT_FOUND,
                        WORKER_GONE,
                    );
                }
            }
        }
        drop(st);
        reply.ack();
    }

    fn request(&self, session: &Session, req: Request) {
        let now = self.clock.now();
        let family = session.family();
        let mut st = self.state.lock();
        let key = (family, req.id);
        if st.by_caller.contains_key(&key) || st.by_worker_id.contains_key(&key) {
            drop(st);
            return terminal(session, req.id, codes::RPC_DUPLICATE_CORRELATION, DUPLICATE);
        }
        let mut any = false;
        let mut best: Option<(u64, u64)> = None;
        self.workers.for_each_match(family, &req.route, |reg| {
            let Some(c) = st.credit.get(&reg.id) else {
                return;
            };
            if c.session.is_closed() {
                return;
            }
            any = true;
            if c.in_flight < c.max && best.is_none_or(|(used, _)| c.last_used < used) {
                best = Some((c.last_used, reg.id));
            }
        });
        if !any {
            drop(st);
            return terminal(session, req.id, codes::RPC_NO_WORKER, NO_WORKERS);
        }
        let budget = req.budget_ms.map(|ms| Duration::from_millis(ms.into()));
        if budget == Some(Duration::ZERO) {
            drop(st);
            return terminal(session, req.id, codes::RPC_TIMEOUT, TIMEOUT);
        }
        if st.calls.len() >= MAX_LIVE_CALLS {
            drop(st);
            return terminal(session, req.id, codes::RPC_BACKPRESSURE, BACKPRESSURE);
        }
        let deadline = now + budget.map_or(self.request_timeout, |b| b.min(self.request_timeout));
        let call_id = st.next_call;
        st.next_call += 1;
        if best.is_none() {
            let queue = st
                .queues
                .entry(family)
                .or_default()
                .entry(req.route.clone())
                .or_default();
            if queue.len() >= ROUTE_QUEUE_CAPACITY {
                drop(st);
                return terminal(session, req.id, codes::RPC_BACKPRESSURE, BACKPRESSURE);
            }
            queue.push_back(call_id);
            st.queued += 1;
        }
        st.calls.insert(
            call_id,
            Call {
                family,
                caller_id: req.id,
                caller_session: session.id(),
                caller: Some(session.clone()),
                route: req.route,
                body: req.body,
                has_budget: budget.is_some(),
                deadline,
                phase: Phase::Queued,
            },
        );
        st.by_caller.insert(key, call_id);
        let s = &mut *st;
        s.deadlines.insert(deadline, call_id, &s.calls);
        self.arm(&mut st, deadline);
        if let Some((_, reg)) = best {
            self.dispatch(&mut st, call_id, reg, now);
        }
    }

    /// Hands call `call_id` (not queued) to registration `reg`, which has
    /// free credit.
    fn dispatch(&self, st: &mut State, call_id: u64, reg: u64, now: SystemTime) {
        st.uses += 1;
        let uses = st.uses;
        let Some(c) = st.credit.get_mut(&reg) else {
            return;
        };
        c.in_flight += 1;
        c.last_used = uses;
        let worker = c.session.clone();
        let supports = c.supports_cancellation;
        let Some(family) = st.calls.get(&call_id).map(|c| c.family) else {
            return;
        };
        let worker_id = if supports {
            self.invocation_id(st, family)
        } else {
            st.calls
                .get(&call_id)
                .map_or_else(RpcId::default, |c| c.caller_id)
        };
        let Some(call) = st.calls.get_mut(&call_id) else {
            return;
        };
        let budget_ms = (supports && call.has_budget).then(|| {
            let left = call.deadline.duration_since(now).unwrap_or(Duration::ZERO);
            u32::try_from(left.as_millis()).unwrap_or(u32::MAX)
        });
        let msg = Request {
            id: worker_id,
            route: call.route.clone(),
            body: std::mem::take(&mut call.body),
            budget_ms,
        };
        call.phase = Phase::Running(Running {
            registration: reg,
            worker: worker.clone(),
            worker_id,
            supports_cancellation: supports,
            next_sequence: 0,
            cleaned_up: false,
        });
        st.by_worker_id.insert((family, worker_id), call_id);
        if worker.send_frame(None, |b| msg.encode_record(b)).is_err() {
            // Cannot happen for a request the caller could send, unless the
            // budget extension pushed it over the record limit.
            if let Some(call) = self.remove_call(st, call_id)
                && let Some(caller) = &call.caller
            {
                terminal(
                    caller,
                    call.caller_id,
                    codes::RPC_UNAVAILABLE,
                    "request could not be delivered to the worker",
                );
            }
            self.release(st, reg, now);
        }
    }

    /// Removes a call from every index (not its credit).
    fn remove_call(&self, st: &mut State, call_id: u64) -> Option<Call> {
        let call = st.calls.remove(&call_id)?;
        let key = (call.family, call.caller_id);
        if st.by_caller.get(&key) == Some(&call_id) {
            st.by_caller.remove(&key);
        }
        st.deadlines.remove(call.deadline, call_id);
        match &call.phase {
            Phase::Queued => {
                if let Some(fam) = st.queues.get_mut(&call.family)
                    && let Some(q) = fam.get_mut(&call.route)
                {
                    if let Some(i) = q.iter().position(|id| *id == call_id) {
                        q.remove(i);
                        st.queued -= 1;
                    }
                    if q.is_empty() {
                        fam.remove(&call.route);
                        if fam.is_empty() {
                            st.queues.remove(&call.family);
                        }
                    }
                }
            }
            Phase::Running(r) => {
                st.by_worker_id.remove(&(call.family, r.worker_id));
            }
            Phase::Cancelled(r, grace) => {
                st.by_worker_id.remove(&(call.family, r.worker_id));
                st.graces.remove(&(*grace, call_id));
            }
        }
        Some(call)
    }

    /// Gives one unit of credit back to `reg` and lets it take queued work.
    fn release(&self, st: &mut State, reg: u64, now: SystemTime) {
        if let Some(c) = st.credit.get_mut(&reg) {
            c.in_flight = c.in_flight.saturating_sub(1);
            self.drain(st, reg, now);
        }
    }

    /// Dispatches the oldest queued calls `reg` matches while it has credit.
    fn drain(&self, st: &mut State, reg: u64, now: SystemTime) {
        while st.queued > 0 {
            let Some(c) = st.credit.get(&reg) else {
                return;
            };
            if !c.free() {
                return;
            }
            let family = c.session.family();
            let Some(fam) = st.queues.get_mut(&family) else {
                return;
            };
            let route: Option<Str> = if c.wildcard {
                fam.iter()
                    .filter(|(r, _)| route::matches(&c.pattern, r))
                    .filter_map(|(r, q)| q.front().map(|id| (*id, r)))
                    .min_by_key(|(id, _)| *id)
                    .map(|(_, r)| r.clone())
            } else {
                fam.get_key_value(&*c.pattern).map(|(r, _)| r.clone())
            };
            let Some(route) = route else {
                return;
            };
            let Some(q) = fam.get_mut(&route) else {
                return;
            };
            let next = q.pop_front();
            if q.is_empty() {
                fam.remove(&route);
                if fam.is_empty() {
                    st.queues.remove(&family);
                }
            }
            let Some(call_id) = next else {
                return;
            };
            st.queued -= 1;
            // A call whose deadline passed in this very tick is not handed
            // out: it gets its timeout instead.
            if st.calls.get(&call_id).is_some_and(|c| c.deadline <= now) {
                if let Some(call) = self.remove_call(st, call_id)
                    && let Some(caller) = &call.caller
                {
                    terminal(caller, call.caller_id, codes::RPC_TIMEOUT, TIMEOUT);
                }
                continue;
            }
            self.dispatch(st, call_id, reg, now);
        }
    }

    fn response(&self, session: &Session, resp: Response) {
        let now = self.clock.now();
        let mut st = self.state.lock();
        let Some(&call_id) = st.by_worker_id.get(&(session.family(), resp.id)) else {
            drop(st);
            return terminal(
                session,
                resp.id,
                codes::RPC_CORRELATION_NOT_FOUND,
                NOT_FOUND,
            );
        };
        let Some(call) = st.calls.get_mut(&call_id) else {
            return;
        };
        let caller_id = call.caller_id;
        let r = match &mut call.phase {
            Phase::Running(r) => r,
            Phase::Cancelled(r, _) => {
                // Late progress of a cancelled call is ignored; only the
                // cleanup acknowledgement releases its credit.
                if r.worker.id() != session.id() {
                    drop(st);
                    terminal(session, resp.id, codes::RPC_WRONG_WORKER, WRONG_WORKER);
                }
                return;
            }
            Phase::Queued => return,
        };
        if r.worker.id() != session.id() {
            drop(st);
            return terminal(session, resp.id, codes::RPC_WRONG_WORKER, WRONG_WORKER);
        }
        let reg = r.registration;
        if resp.sequence != r.next_sequence {
            if let Some(call) = self.remove_call(&mut st, call_id)
                && let Some(caller) = &call.caller
            {
                terminal(caller, caller_id, codes::RPC_INVALID_SEQUENCE, BAD_SEQUENCE);
            }
            terminal(session, resp.id, codes::RPC_INVALID_SEQUENCE, BAD_SEQUENCE);
            self.release(&mut st, reg, now);
            return;
        }
        r.next_sequence += 1;
        if let Some(caller) = &call.caller {
            let out = Response {
                id: caller_id,
                sequence: resp.sequence,
                end: resp.end,
                body: resp.body,
            };
            // The worker's record had the same size, so it fits.
            let _ = caller.send_frame(None, |b| out.encode_record(b));
        }
        if resp.end {
            self.remove_call(&mut st, call_id);
            self.release(&mut st, reg, now);
        }
    }

    /// Detaches the caller of a running call on a supporting worker, sends
    /// the worker `reason` and starts the cleanup grace. A worker that
    /// already acknowledged cleanup (its own deadline fired first) is done:
    /// the call ends and the credit comes back at once.
    fn signal(&self, st: &mut State, call_id: u64, reason: SignalReason, now: SystemTime) {
        let Some(call) = st.calls.get_mut(&call_id) else {
            return;
        };
        let Phase::Running(r) = &call.phase else {
            return;
        };
        lifecycle(
            &r.worker,
            Lifecycle::WorkerSignal {
                id: r.worker_id,
                reason,
            },
        );
        if r.cleaned_up {
            let reg = r.registration;
            self.remove_call(st, call_id);
            self.release(st, reg, now);
            return;
        }
        let grace = now + self.grace;
        call.caller = None;
        if let Phase::Running(r) = std::mem::replace(&mut call.phase, Phase::Queued) {
            call.phase = Phase::Cancelled(r, grace);
        }
        let deadline = call.deadline;
        st.deadlines.remove(deadline, call_id);
        st.graces.insert((grace, call_id));
        self.arm(st, grace);
    }

    fn cancel(&self, session: &Session, cancel: Cancel) {
        let now = self.clock.now();
        let family = session.family();
        let mut st = self.state.lock();
        match cancel {
            Cancel::Caller { id, reason } => {
                let call_id = st.by_caller.get(&(family, id)).copied().filter(|c| {
                    st.calls
                        .get(c)
                        .is_some_and(|c| c.caller_session == session.id())
                });
                let status = match call_id.and_then(|c| st.calls.get(&c)).map(|c| &c.phase) {
                    None => CancelStatus::Unknown,
                    Some(Phase::Queued) => CancelStatus::QueuedRemoved,
                    Some(Phase::Cancelled(..)) => CancelStatus::AlreadyCancelled,
                    Some(Phase::Running(r)) if !r.supports_cancellation => {
                        CancelStatus::Unsupported
                    }
                    Some(Phase::Running(r)) if r.worker.is_closed() => CancelStatus::ForwardFailed,
                    Some(Phase::Running(_)) => CancelStatus::Forwarded,
                };
                match (status, call_id) {
                    (CancelStatus::QueuedRemoved, Some(c)) => {
                        self.remove_call(&mut st, c);
                    }
                    (CancelStatus::Forwarded, Some(c)) => {
                        let reason = match reason {
                            CancelReason::Explicit => SignalReason::Explicit,
                            CancelReason::CallerDeadline => SignalReason::CallerDeadline,
                        };
                        self.signal(&mut st, c, reason, now);
                    }
                    _ => {}
                }
                drop(st);
                lifecycle(session, Lifecycle::CallerResult { id, status });
            }
            Cancel::CleanupDone { id } => {
                let Some(&call_id) = st.by_worker_id.get(&(family, id)) else {
                    return;
                };
                // Acknowledgements from other sessions are ignored, and so
                // are those of completed calls (the official worker sends one
                // after every invocation): their id is already gone.
                let reg = match st.calls.get_mut(&call_id).map(|c| &mut c.phase) {
                    Some(Phase::Cancelled(r, _)) if r.worker.id() == session.id() => r.registration,
                    Some(Phase::Running(r)) if r.worker.id() == session.id() => {
                        // The worker's own deadline fired before the broker's
                        // signal reached it: the handler is gone but the call
                        // keeps its credit until it is cancelled, times out or
                        // ends, which then needs no further acknowledgement.
                        r.cleaned_up = true;
                        return;
                    }
                    _ => return,
                };
                self.remove_call(&mut st, call_id);
                self.release(&mut st, reg, now);
            }
        }
    }

    fn expire(&self, st: &mut State, call_id: u64, now: SystemTime) {
        let Some(call) = st.calls.get(&call_id) else {
            return;
        };
        let (caller, caller_id, key) = (
            call.caller.clone(),
            call.caller_id,
            (call.family, call.caller_id),
        );
        let (running, supports) = match &call.phase {
            Phase::Cancelled(..) => return,
            Phase::Queued => (None, false),
            Phase::Running(r) => (Some(r.registration), r.supports_cancellation),
        };
        if let Some(caller) = &caller {
            terminal(caller, caller_id, codes::RPC_TIMEOUT, TIMEOUT);
        }
        if supports {
            // The caller has its terminal frame: its UUID is free again.
            st.by_caller.remove(&key);
            self.signal(st, call_id, SignalReason::BrokerDeadline, now);
            return;
        }
        self.remove_call(st, call_id);
        if let Some(reg) = running {
            self.release(st, reg, now);
        }
    }
}

impl Engine for RpcEngine {
    type Request = RpcRequest;

    fn start(services: &Services) -> Result<Self, StorageError> {
        Ok(Self {
            clock: services.clock.clone(),
            timers: services.timers.clone(),
            request_timeout: services.config.rpc_request_timeout,
            grace: services.config.rpc_cancellation_grace,
            workers: Registry::new(services.ids.clone()),
            mixer: RandomState::new(),
            mask: RandomState::new().hash_one(0u64),
            state: Mutex::new(State::default()),
        })
    }

    fn handle(&self, session: &Session, request: RpcRequest, reply: Reply) {
        match request {
            RpcRequest::SubscribeWorker(s) => self.subscribe(session, s, reply),
            RpcRequest::UnsubscribeWorker(u) => self.unsubscribe(session, &u.route, reply),
            RpcRequest::Request(r) => self.request(session, r),
            RpcRequest::Response(r) => self.response(session, r),
            RpcRequest::Cancel(c) => self.cancel(session, c),
        }
    }

    fn refuse(
        &self,
        session: &Session,
        refusal: Refusal<'_, RpcRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        match refusal {
            Refusal::Unauthorized { request } => match request {
                RpcRequest::Request(r) => {
                    terminal(session, r.id, codes::RPC_UNAUTHORIZED, UNAUTHORIZED);
                }
                _ => reply.coded(codes::RPC_UNAUTHORIZED, UNAUTHORIZED),
            },
            Refusal::BadRoute { request, error } => match request {
                RpcRequest::Request(r) => {
                    terminal(
                        session,
                        r.id,
                        codes::RPC_INVALID_ROUTE,
                        &format!("invalid RPC route: {error}"),
                    );
                }
                _ => reply.coded(
                    codes::RPC_INVALID_PATTERN,
                    &format!("invalid RPC worker pattern: {error}"),
                ),
            },
            Refusal::Malformed { payload, error } => {
                let uuid = payload
                    .get(..16)
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    .map(RpcId);
                match (reply.message_type(), uuid) {
                    // Malformed control records are discarded, never answered.
                    (types::RPC_CANCEL, _) => {}
                    (types::RPC_REQUEST, Some(id)) => terminal(
                        session,
                        id,
                        codes::RPC_UNAVAILABLE,
                        &format!("RPC request parse failed: {error}"),
                    ),
                    (types::RPC_RESPONSE, Some(id)) => terminal(
                        session,
                        id,
                        codes::RPC_UNAVAILABLE,
                        &format!("RPC response parse failed: {error}"),
                    ),
                    // Without a UUID no terminal frame can name the call.
                    (types::RPC_REQUEST | types::RPC_RESPONSE, None) => {
                        return Err(format!("malformed RPC record: {error}").into());
                    }
                    _ => reply.coded(
                        codes::RPC_UNAVAILABLE,
                        &format!("malformed request: {error}"),
                    ),
                }
            }
        }
        Ok(())
    }

    fn session_closed(&self, session: &Session) {
        let sid = session.id();
        let now = self.clock.now();
        let mut st = self.state.lock();
        for reg in self.workers.unregister_session(sid) {
            st.credit.remove(&reg.id);
        }
        let mine: Vec<u64> = st
            .calls
            .iter()
            .filter(|(_, c)| {
                c.caller_session == sid || c.running().is_some_and(|r| r.worker.id() == sid)
            })
            .map(|(id, _)| *id)
            .collect();
        for call_id in mine {
            let Some(call) = st.calls.get(&call_id) else {
                continue;
            };
            let key = (call.family, call.caller_id);
            let worker_gone = call.running().is_some_and(|r| r.worker.id() == sid);
            let legacy = matches!(&call.phase, Phase::Running(r) if !r.supports_cancellation);
            if worker_gone {
                // Cancelled calls have no caller to tell any more.
                if let Some(call) = self.remove_call(&mut st, call_id)
                    && let Phase::Running(_) = call.phase
                    && let Some(caller) = &call.caller
                {
                    terminal(
                        caller,
                        call.caller_id,
                        codes::RPC_WORKER_NOT_FOUND,
                        WORKER_GONE,
                    );
                }
                continue;
            }
            // The caller is gone.
            match &call.phase {
                Phase::Queued => {
                    self.remove_call(&mut st, call_id);
                }
                Phase::Running(_) if legacy => {
                    // Legacy workers finish as usual; responses are dropped.
                    st.by_caller.remove(&key);
                    if let Some(call) = st.calls.get_mut(&call_id) {
                        call.caller = None;
                    }
                }
                Phase::Running(_) => {
                    st.by_caller.remove(&key);
                    self.signal(&mut st, call_id, SignalReason::CallerDisconnected, now);
                }
                Phase::Cancelled(..) => {}
            }
        }
    }

    fn tick(&self, now: SystemTime) {
        let mut st = self.state.lock();
        st.armed = None;
        loop {
            let s = &mut *st;
            let Some(due) = s.deadlines.pop_due(now, &s.calls) else {
                break;
            };
            if let Some(call_id) = due {
                self.expire(&mut st, call_id, now);
            }
        }
        while let Some(&(at, call_id)) = st.graces.first() {
            if at > now {
                break;
            }
            st.graces.pop_first();
            // The call stays (and holds its credit) until the session's
            // cleanup removes it.
            if let Some(Phase::Cancelled(r, _)) = st.calls.get(&call_id).map(|c| &c.phase) {
                tracing::debug!(
                    worker = r.worker.id(),
                    "rpc cancellation not acknowledged in time: closing the worker session"
                );
                r.worker.close(GRACE_EXPIRED);
            }
        }
        let graces = st.graces.first().map(|(at, _)| *at);
        let next = st.deadlines.first().into_iter().chain(graces).min();
        if let Some(at) = next {
            self.arm(&mut st, at);
        }
    }
}

/// Route shapes and permissions per request (spec §4, "Permission levels
/// per message"): checked by the dispatcher before [`Engine::handle`].
impl DomainRequest for RpcRequest {
    /// Worker registration needs `#*` (AC-RPC-007); a REQUEST needs write;
    /// RESPONSE and CANCEL act on calls the session is part of.
    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Rpc;
        match self {
            RpcRequest::SubscribeWorker(m) => pattern(&m.pattern, S, Access::All),
            RpcRequest::UnsubscribeWorker(m) => pattern(&m.route, S, Access::All),
            RpcRequest::Request(m) => concrete(&m.route, S, Access::Write),
            RpcRequest::Response(_) | RpcRequest::Cancel(_) => Target::SessionOwned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    #[test]
    fn seeded_hash_separates_close_keys_and_seeds() {
        let s = Seeded::default();
        let h = |b: &[u8]| {
            let mut x = s.build_hasher();
            x.write(b);
            x.finish()
        };
        assert_ne!(h(b"ab"), h(b"ab\0"));
        assert_ne!(h(&[0; 16]), h(&[0; 17]));
        let a = (1u32, RpcId([7; 16]));
        assert_ne!(s.hash_one(a), Seeded::default().hash_one(a), "per-map seed");
        let mut m: Map<(Family, RpcId), u64> = Map::default();
        for i in 0..1000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            m.insert((1, RpcId(id)), u64::from(i));
        }
        assert_eq!(m.len(), 1000);
    }
}
