//! Domain engines and the dispatcher that feeds them.
//!
//! A record is decoded once, in the protocol crate, into a
//! [`ClientMessage`] whose variant is its domain and whose inner enum
//! (`fitz_protocol::kv::ClientMessage`, here [`KvRequest`], …) is the
//! operation. `Engines::dispatch` matches once, on the domain; `run` checks
//! the route shape and the caller's permission from the request's
//! [`DomainRequest::target`] (each engine's file holds its domain's table,
//! the spec's "Permission levels per message") and only then calls
//! [`Engine::handle`], which matches once, on the operation. A refused
//! request goes to [`Engine::refuse`] so the engine answers in its own
//! envelope and code.
//!
//! Each engine implements [`Engine`]:
//! * `start` builds the engine from [`Services`] (clock, timers, subscription
//!   ids, storage backend, configuration) and recovers durable state;
//! * `handle` answers through the [`Reply`] (now, or later from a stored
//!   clone: it keeps the correlation id);
//! * `refuse` maps malformed payloads, bad routes and missing permissions to
//!   the domain's codes, or closes the session by returning `Err`;
//! * `session_closed` releases everything the session owned;
//! * `tick` runs expiries the engine asked for with [`Timers::wake_at`].
//!
//! Engines are synchronous: they keep state behind short-lived locks, never
//! await, and push to any session's outbound without blocking.
//! docs/ARCHITECTURE.md walks through adding an operation end to end.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use fitz_protocol::route::{self, RouteError, Scheme};
use fitz_protocol::types::Domain;
use fitz_protocol::{self as proto, ClientMessage, DecodeError};

use crate::auth::Access;
use crate::clock::{Clock, Timers};
use crate::config::Config;
use crate::registry::SubscriptionIds;
use crate::session::{CloseReason, Reply, Session};
use crate::storage::{Backend, StorageError};

pub mod kv;
pub mod lease;
pub mod notice;
pub mod queue;
pub mod rpc;
pub mod schedule;
pub mod stream;

pub use self::kv::KvEngine;
pub use self::lease::LeaseEngine;
pub use self::notice::NoticeEngine;
pub use self::queue::QueueEngine;
pub use self::rpc::RpcEngine;
pub use self::schedule::ScheduleEngine;
pub use self::stream::StreamEngine;

/// What every engine gets at start: shared services of the broker.
#[derive(Clone)]
pub struct Services {
    /// The broker clock.
    pub clock: Clock,
    /// Tick requests ([`Timers::wake_at`]).
    pub timers: Arc<Timers>,
    /// The broker-wide subscription id counter for [`crate::registry::Registry`].
    pub ids: SubscriptionIds,
    /// Durable storage of committed data.
    pub storage: Arc<dyn Backend>,
    /// The broker configuration.
    pub config: Arc<Config>,
}

/// A domain engine. See the module docs.
pub trait Engine: Send + Sync + Sized + 'static {
    /// The domain's decoded requests.
    type Request: DomainRequest;

    /// Builds the engine, recovering durable state from `services.storage`.
    fn start(services: &Services) -> Result<Self, StorageError>;

    /// Handles a request whose route shape and permission were checked.
    fn handle(&self, session: &Session, request: Self::Request, reply: Reply);

    /// Answers a request refused before [`Engine::handle`]. `Err` closes the
    /// session with that reason instead (no reply is sent then).
    fn refuse(
        &self,
        session: &Session,
        refusal: Refusal<'_, Self::Request>,
        reply: &Reply,
    ) -> Result<(), CloseReason>;

    /// Releases everything `session` owned. Called exactly once per session,
    /// after it stopped reading; its outbound is already closed.
    fn session_closed(&self, session: &Session);

    /// Runs due work. Called at or after a time the engine asked for with
    /// [`Timers::wake_at`] (possibly early or twice: compare with `now`).
    fn tick(&self, _now: SystemTime) {}
}

/// Why a request never reached [`Engine::handle`].
#[derive(Debug)]
pub enum Refusal<'a, R> {
    /// The payload of a known type could not be decoded.
    Malformed {
        /// The raw payload.
        payload: &'a Bytes,
        /// What was wrong with it.
        error: &'a DecodeError,
    },
    /// The route or pattern has the wrong shape for the operation.
    BadRoute {
        /// The request.
        request: &'a R,
        /// What was wrong with the route.
        error: RouteError,
    },
    /// The session's permissions do not cover the route (or the token expired).
    Unauthorized {
        /// The request.
        request: &'a R,
    },
}

/// What a request addresses, for the shape and permission checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// One concrete route of the scheme's depth.
    Concrete {
        /// The route.
        route: &'a str,
        /// Its required scheme.
        scheme: Scheme,
        /// Access needed.
        access: Access,
    },
    /// An exact route or wildcard pattern able to match the scheme's depth;
    /// the permission must cover every route it can match.
    Pattern {
        /// The pattern.
        pattern: &'a str,
        /// Its required scheme.
        scheme: Scheme,
        /// Access needed.
        access: Access,
    },
    /// A Stream READ selector (one of the ten legal shapes).
    StreamSelector {
        /// The selector.
        selector: &'a str,
        /// Access needed.
        access: Access,
    },
    /// Several concrete routes, all of which must be allowed.
    ConcreteSet {
        /// The routes.
        routes: Vec<&'a str>,
        /// Their required scheme.
        scheme: Scheme,
        /// Access needed.
        access: Access,
    },
    /// Every route of the scheme (`scheme://**`).
    SchemeWide {
        /// The scheme.
        scheme: Scheme,
        /// Access needed.
        access: Access,
    },
    /// Acts only on state the session owns (an open transaction, its own
    /// subscription id): no route check, no permission check.
    SessionOwned,
}

/// Longest route [`Target::check_shape`] remembers as valid.
const MAX_CACHED_ROUTE: usize = 256;

thread_local! {
    /// The concrete route (and scheme) last validated on this thread.
    static LAST_VALID: std::cell::RefCell<(Option<Scheme>, String)> =
        const { std::cell::RefCell::new((None, String::new())) };
}

impl Target<'_> {
    /// Checks the route shape.
    pub fn check_shape(&self) -> Result<(), RouteError> {
        match self {
            Target::Concrete { route, scheme, .. } => {
                // The route this thread validated last (a caller repeats
                // its route: ~530 instructions per RPC record saved).
                // Validation is a pure function of route and scheme.
                LAST_VALID.with(|last| {
                    let mut last = last.borrow_mut();
                    if last.0 == Some(*scheme) && last.1 == *route {
                        return Ok(());
                    }
                    route::validate_concrete(route, *scheme)?;
                    last.0 = Some(*scheme);
                    last.1.clear();
                    if route.len() <= MAX_CACHED_ROUTE {
                        last.1.push_str(route);
                    } else {
                        last.0 = None;
                    }
                    Ok(())
                })
            }
            Target::Pattern {
                pattern, scheme, ..
            } => route::validate_pattern(pattern, *scheme).map(|_| ()),
            Target::StreamSelector { selector, .. } => route::stream_selector(selector).map(|_| ()),
            Target::ConcreteSet { routes, scheme, .. } => routes
                .iter()
                .try_for_each(|r| route::validate_concrete(r, *scheme).map(|_| ())),
            Target::SchemeWide { .. } | Target::SessionOwned => Ok(()),
        }
    }

    /// Checks the permission of `session` (including token expiry).
    pub fn allowed(&self, session: &Session, clock: &Clock) -> bool {
        let grant = session.grant();
        let now = || clock.now();
        match self {
            Target::Concrete { route, access, .. } => grant.allows(route, *access, now),
            Target::Pattern {
                pattern, access, ..
            } => grant.allows(pattern, *access, now),
            Target::StreamSelector { selector, access } => grant.allows(selector, *access, now),
            Target::ConcreteSet { routes, access, .. } => {
                routes.iter().all(|r| grant.allows(r, *access, now))
            }
            Target::SchemeWide { scheme, access } => {
                grant.allows(&format!("{}://**", scheme.as_str()), *access, now)
            }
            Target::SessionOwned => true,
        }
    }
}

/// A decoded request of one domain.
pub trait DomainRequest: Sized {
    /// What it addresses (spec §4 "Permission levels per message").
    fn target(&self) -> Target<'_>;
}

/// All seven engines of a broker.
pub struct Engines {
    /// KV (100–111).
    pub kv: KvEngine,
    /// Queue (200–209).
    pub queue: QueueEngine,
    /// RPC (300–305).
    pub rpc: RpcEngine,
    /// Lease (400–410).
    pub lease: LeaseEngine,
    /// Notice (500–504).
    pub notice: NoticeEngine,
    /// Stream (600–609).
    pub stream: StreamEngine,
    /// Schedule (700–707).
    pub schedule: ScheduleEngine,
    clock: Clock,
}

impl Engines {
    pub(crate) fn start(services: &Services) -> Result<Self, StorageError> {
        Ok(Self {
            kv: KvEngine::start(services)?,
            queue: QueueEngine::start(services)?,
            rpc: RpcEngine::start(services)?,
            lease: LeaseEngine::start(services)?,
            notice: NoticeEngine::start(services)?,
            stream: StreamEngine::start(services)?,
            schedule: ScheduleEngine::start(services)?,
            clock: services.clock.clone(),
        })
    }

    /// Checks and hands a domain message to its engine. Control messages
    /// (CONNECT, SESSION_METADATA) never get here.
    pub(crate) fn dispatch(
        &self,
        session: &Session,
        message: ClientMessage,
        reply: Reply,
    ) -> Result<(), CloseReason> {
        use ClientMessage as M;
        match message {
            M::Connect(_) | M::SessionMetadata(_) => Ok(()),
            M::Kv(r) => self.run(&self.kv, session, r, reply),
            M::Queue(r) => self.run(&self.queue, session, r, reply),
            M::Rpc(r) => self.run(&self.rpc, session, r, reply),
            M::Lease(r) => self.run(&self.lease, session, r, reply),
            M::Notice(r) => self.run(&self.notice, session, r, reply),
            M::Stream(r) => self.run(&self.stream, session, r, reply),
            M::Schedule(r) => self.run(&self.schedule, session, r, reply),
        }
    }

    /// Order of checks (spec §4): route shape, then permission, then dispatch.
    fn run<E: Engine>(
        &self,
        engine: &E,
        session: &Session,
        request: E::Request,
        reply: Reply,
    ) -> Result<(), CloseReason> {
        let target = request.target();
        if let Err(error) = target.check_shape() {
            drop(target);
            return engine.refuse(
                session,
                Refusal::BadRoute {
                    request: &request,
                    error,
                },
                &reply,
            );
        }
        if !target.allowed(session, &self.clock) {
            drop(target);
            return engine.refuse(session, Refusal::Unauthorized { request: &request }, &reply);
        }
        drop(target);
        engine.handle(session, request, reply);
        Ok(())
    }

    /// Hands an undecodable payload of a known client type to its engine.
    pub(crate) fn malformed(
        &self,
        session: &Session,
        payload: &Bytes,
        error: &DecodeError,
        reply: Reply,
    ) -> Result<(), CloseReason> {
        let ty = reply.message_type();
        match Domain::of(ty) {
            Some(Domain::Kv) => {
                self.kv
                    .refuse(session, Refusal::Malformed { payload, error }, &reply)
            }
            Some(Domain::Queue) => {
                self.queue
                    .refuse(session, Refusal::Malformed { payload, error }, &reply)
            }
            Some(Domain::Rpc) => {
                self.rpc
                    .refuse(session, Refusal::Malformed { payload, error }, &reply)
            }
            Some(Domain::Lease) => {
                self.lease
                    .refuse(session, Refusal::Malformed { payload, error }, &reply)
            }
            Some(Domain::Notice) => {
                self.notice
                    .refuse(session, Refusal::Malformed { payload, error }, &reply)
            }
            Some(Domain::Stream) => {
                self.stream
                    .refuse(session, Refusal::Malformed { payload, error }, &reply)
            }
            Some(Domain::Schedule) => {
                self.schedule
                    .refuse(session, Refusal::Malformed { payload, error }, &reply)
            }
            Some(Domain::Control) | None => {
                Err(format!("malformed message type {ty}: {error}").into())
            }
        }
    }

    /// Every engine's cleanup for a session that ended.
    pub(crate) fn session_closed(&self, session: &Session) {
        self.kv.session_closed(session);
        self.queue.session_closed(session);
        self.rpc.session_closed(session);
        self.lease.session_closed(session);
        self.notice.session_closed(session);
        self.stream.session_closed(session);
        self.schedule.session_closed(session);
    }

    /// Runs the tick of `domain`.
    pub(crate) fn tick(&self, domain: Domain, now: SystemTime) {
        match domain {
            Domain::Kv => self.kv.tick(now),
            Domain::Queue => self.queue.tick(now),
            Domain::Rpc => self.rpc.tick(now),
            Domain::Lease => self.lease.tick(now),
            Domain::Notice => self.notice.tick(now),
            Domain::Stream => self.stream.tick(now),
            Domain::Schedule => self.schedule.tick(now),
            Domain::Control => {}
        }
    }
}

pub(crate) const fn concrete(route: &str, scheme: Scheme, access: Access) -> Target<'_> {
    Target::Concrete {
        route,
        scheme,
        access,
    }
}

pub(crate) const fn pattern(pattern: &str, scheme: Scheme, access: Access) -> Target<'_> {
    Target::Pattern {
        pattern,
        scheme,
        access,
    }
}

/// KV requests: [`proto::kv::ClientMessage`], under the name the engine uses.
pub type KvRequest = proto::kv::ClientMessage;
/// Queue requests: [`proto::queue::ClientMessage`], under the name the engine uses.
pub type QueueRequest = proto::queue::ClientMessage;
/// RPC requests: [`proto::rpc::ClientMessage`], under the name the engine uses.
pub type RpcRequest = proto::rpc::ClientMessage;
/// Lease requests: [`proto::lease::ClientMessage`], under the name the engine uses.
pub type LeaseRequest = proto::lease::ClientMessage;
/// Notice requests: [`proto::notice::ClientMessage`], under the name the engine uses.
pub type NoticeRequest = proto::notice::ClientMessage;
/// Stream requests: [`proto::stream::ClientMessage`], under the name the engine uses.
pub type StreamRequest = proto::stream::ClientMessage;
/// Schedule requests: [`proto::schedule::ClientMessage`], under the name the engine uses.
pub type ScheduleRequest = proto::schedule::ClientMessage;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remembered_valid_route_never_lets_another_route_or_scheme_through() {
        let kv = |r| concrete(r, Scheme::Kv, Access::Read).check_shape();
        assert!(kv("kv://r/a/x").is_ok());
        assert!(kv("kv://r/a/x").is_ok(), "remembered");
        assert!(kv("kv://r/a").is_err(), "a different, invalid route");
        assert!(kv("kv://r/a/x").is_ok());
        let rpc = concrete("kv://r/a/x", Scheme::Rpc, Access::Read).check_shape();
        assert!(rpc.is_err(), "same text, other scheme");
        assert!(kv("kv://r/a/x").is_ok());
    }
}
