//! Domain engines and the dispatcher that feeds them.
//!
//! # Adding (or filling in) a domain
//!
//! Each of the seven domains has one file here and one engine type
//! implementing [`Engine`]. The session layer decodes a record into a
//! [`ClientMessage`], `Engines::dispatch` turns it into the domain's request
//! enum ([`KvRequest`], [`QueueRequest`], …), checks the route shape and the
//! caller's permission using [`DomainRequest::target`] (the table of the
//! spec's "Permission levels per message", already written for every
//! message), and only then calls [`Engine::handle`]. A refused request goes to
//! [`Engine::refuse`] so the engine answers in its own envelope and code.
//!
//! To implement a domain, replace the stub's bodies in its file:
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
//! await, and push to any session's outbound without blocking. Nothing in
//! the session or dispatch code needs to change.

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

impl Target<'_> {
    /// Checks the route shape.
    pub fn check_shape(&self) -> Result<(), RouteError> {
        match self {
            Target::Concrete { route, scheme, .. } => {
                route::validate_concrete(route, *scheme).map(|_| ())
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
    /// The record type.
    fn message_type(&self) -> u16;
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
            M::KvBegin(m) => self.run(&self.kv, session, KvRequest::Begin(m), reply),
            M::KvCommit(m) => self.run(&self.kv, session, KvRequest::Commit(m), reply),
            M::KvRollback(m) => self.run(&self.kv, session, KvRequest::Rollback(m), reply),
            M::KvGet(m) => self.run(&self.kv, session, KvRequest::Get(m), reply),
            M::KvPut(m) => self.run(&self.kv, session, KvRequest::Put(m), reply),
            M::KvInsert(m) => self.run(&self.kv, session, KvRequest::Insert(m), reply),
            M::KvDelete(m) => self.run(&self.kv, session, KvRequest::Delete(m), reply),
            M::KvDeleteRange(m) => self.run(&self.kv, session, KvRequest::DeleteRange(m), reply),
            M::KvScan(m) => self.run(&self.kv, session, KvRequest::Scan(m), reply),
            M::KvSubscribe(m) => self.run(&self.kv, session, KvRequest::Subscribe(m), reply),
            M::KvUnsubscribe(m) => self.run(&self.kv, session, KvRequest::Unsubscribe(m), reply),
            M::QueueEnqueue(m) => self.run(&self.queue, session, QueueRequest::Enqueue(m), reply),
            M::QueueReserve(m) => self.run(&self.queue, session, QueueRequest::Reserve(m), reply),
            M::QueueExtend(m) => self.run(&self.queue, session, QueueRequest::Extend(m), reply),
            M::QueueComplete(m) => self.run(&self.queue, session, QueueRequest::Complete(m), reply),
            M::QueueSubscribe(m) => {
                self.run(&self.queue, session, QueueRequest::Subscribe(m), reply)
            }
            M::QueueUnsubscribe(m) => {
                self.run(&self.queue, session, QueueRequest::Unsubscribe(m), reply)
            }
            M::RpcSubscribeWorker(m) => {
                self.run(&self.rpc, session, RpcRequest::SubscribeWorker(m), reply)
            }
            M::RpcUnsubscribeWorker(m) => {
                self.run(&self.rpc, session, RpcRequest::UnsubscribeWorker(m), reply)
            }
            M::RpcRequest(m) => self.run(&self.rpc, session, RpcRequest::Request(m), reply),
            M::RpcResponse(m) => self.run(&self.rpc, session, RpcRequest::Response(m), reply),
            M::RpcCancel(m) => self.run(&self.rpc, session, RpcRequest::Cancel(m), reply),
            M::LeaseAcquire(m) => self.run(&self.lease, session, LeaseRequest::Acquire(m), reply),
            M::LeaseRenew(m) => self.run(&self.lease, session, LeaseRequest::Renew(m), reply),
            M::LeaseRelease(m) => self.run(&self.lease, session, LeaseRequest::Release(m), reply),
            M::LeaseQuery(m) => self.run(&self.lease, session, LeaseRequest::Query(m), reply),
            M::LeaseSubscribe(m) => {
                self.run(&self.lease, session, LeaseRequest::Subscribe(m), reply)
            }
            M::LeaseUnsubscribe(m) => {
                self.run(&self.lease, session, LeaseRequest::Unsubscribe(m), reply)
            }
            M::LeaseList(m) => self.run(&self.lease, session, LeaseRequest::List(m), reply),
            M::NoticePublish(m) => {
                self.run(&self.notice, session, NoticeRequest::Publish(m), reply)
            }
            M::NoticeSubscribe(m) => {
                self.run(&self.notice, session, NoticeRequest::Subscribe(m), reply)
            }
            M::NoticeUnsubscribe(m) => {
                self.run(&self.notice, session, NoticeRequest::Unsubscribe(m), reply)
            }
            M::NoticeUnsubscribeAll(m) => self.run(
                &self.notice,
                session,
                NoticeRequest::UnsubscribeAll(m),
                reply,
            ),
            M::StreamBegin(m) => self.run(&self.stream, session, StreamRequest::Begin(m), reply),
            M::StreamAppend(m) => self.run(&self.stream, session, StreamRequest::Append(m), reply),
            M::StreamCommit(m) => self.run(&self.stream, session, StreamRequest::Commit(m), reply),
            M::StreamRollback(m) => {
                self.run(&self.stream, session, StreamRequest::Rollback(m), reply)
            }
            M::StreamRead(m) => self.run(&self.stream, session, StreamRequest::Read(m), reply),
            M::StreamLast(m) => self.run(&self.stream, session, StreamRequest::Last(m), reply),
            M::StreamGetMetadata(m) => {
                self.run(&self.stream, session, StreamRequest::GetMetadata(m), reply)
            }
            M::StreamSubscribe(m) => {
                self.run(&self.stream, session, StreamRequest::Subscribe(m), reply)
            }
            M::StreamUnsubscribe(m) => {
                self.run(&self.stream, session, StreamRequest::Unsubscribe(m), reply)
            }
            M::ScheduleCreate(m) => {
                self.run(&self.schedule, session, ScheduleRequest::Create(m), reply)
            }
            M::ScheduleCancel(m) => {
                self.run(&self.schedule, session, ScheduleRequest::Cancel(m), reply)
            }
            M::ScheduleList(m) => {
                self.run(&self.schedule, session, ScheduleRequest::List(m), reply)
            }
            M::ScheduleSubscribe(m) => self.run(
                &self.schedule,
                session,
                ScheduleRequest::Subscribe(m),
                reply,
            ),
            M::ScheduleUnsubscribe(m) => self.run(
                &self.schedule,
                session,
                ScheduleRequest::Unsubscribe(m),
                reply,
            ),
            M::ScheduleCreateBatch(m) => self.run(
                &self.schedule,
                session,
                ScheduleRequest::CreateBatch(m),
                reply,
            ),
            M::ScheduleListV2(m) => {
                self.run(&self.schedule, session, ScheduleRequest::ListV2(m), reply)
            }
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

const fn concrete(route: &str, scheme: Scheme, access: Access) -> Target<'_> {
    Target::Concrete {
        route,
        scheme,
        access,
    }
}

const fn pattern(pattern: &str, scheme: Scheme, access: Access) -> Target<'_> {
    Target::Pattern {
        pattern,
        scheme,
        access,
    }
}

/// KV requests (100–110).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum KvRequest {
    Begin(proto::kv::Begin),
    Commit(proto::kv::Commit),
    Rollback(proto::kv::Rollback),
    Get(proto::kv::Get),
    Put(proto::kv::Put),
    Insert(proto::kv::Insert),
    Delete(proto::kv::Delete),
    DeleteRange(proto::kv::DeleteRange),
    Scan(proto::kv::Scan),
    Subscribe(proto::kv::Subscribe),
    Unsubscribe(proto::kv::Unsubscribe),
}

impl DomainRequest for KvRequest {
    fn message_type(&self) -> u16 {
        use fitz_protocol::Message as _;
        match self {
            KvRequest::Begin(_) => proto::kv::Begin::TYPE,
            KvRequest::Commit(_) => proto::kv::Commit::TYPE,
            KvRequest::Rollback(_) => proto::kv::Rollback::TYPE,
            KvRequest::Get(_) => proto::kv::Get::TYPE,
            KvRequest::Put(_) => proto::kv::Put::TYPE,
            KvRequest::Insert(_) => proto::kv::Insert::TYPE,
            KvRequest::Delete(_) => proto::kv::Delete::TYPE,
            KvRequest::DeleteRange(_) => proto::kv::DeleteRange::TYPE,
            KvRequest::Scan(_) => proto::kv::Scan::TYPE,
            KvRequest::Subscribe(_) => proto::kv::Subscribe::TYPE,
            KvRequest::Unsubscribe(_) => proto::kv::Unsubscribe::TYPE,
        }
    }

    /// BEGIN needs read or write by mode. The manifest treats 101–108 as
    /// session-owned; reads and writes inside a transaction are additionally
    /// checked against the route (AC-KV-010 expects 1011 for a PUT by a
    /// read-only session), COMMIT and ROLLBACK only touch the session's own
    /// transaction.
    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Kv;
        match self {
            KvRequest::Begin(m) => concrete(
                &m.route,
                S,
                match m.mode {
                    proto::kv::TxMode::ReadOnly => Access::Read,
                    proto::kv::TxMode::ReadWrite => Access::Write,
                },
            ),
            KvRequest::Commit(_) | KvRequest::Rollback(_) => Target::SessionOwned,
            KvRequest::Get(m) => concrete(&m.route, S, Access::Read),
            KvRequest::Scan(m) => concrete(&m.route, S, Access::Read),
            KvRequest::Put(m) => concrete(&m.route, S, Access::Write),
            KvRequest::Insert(m) => concrete(&m.route, S, Access::Write),
            KvRequest::Delete(m) => concrete(&m.route, S, Access::Write),
            KvRequest::DeleteRange(m) => concrete(&m.route, S, Access::Write),
            KvRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            KvRequest::Unsubscribe(m) => pattern(&m.route, S, Access::Read),
        }
    }
}

/// Queue requests (200, 202–204, 207, 208).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum QueueRequest {
    Enqueue(proto::queue::Enqueue),
    Reserve(proto::queue::Reserve),
    Extend(proto::queue::Extend),
    Complete(proto::queue::Complete),
    Subscribe(proto::queue::Subscribe),
    Unsubscribe(proto::queue::Unsubscribe),
}

impl DomainRequest for QueueRequest {
    fn message_type(&self) -> u16 {
        use fitz_protocol::Message as _;
        match self {
            QueueRequest::Enqueue(_) => proto::queue::Enqueue::TYPE,
            QueueRequest::Reserve(_) => proto::queue::Reserve::TYPE,
            QueueRequest::Extend(_) => proto::queue::Extend::TYPE,
            QueueRequest::Complete(_) => proto::queue::Complete::TYPE,
            QueueRequest::Subscribe(_) => proto::queue::Subscribe::TYPE,
            QueueRequest::Unsubscribe(_) => proto::queue::Unsubscribe::TYPE,
        }
    }

    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Queue;
        match self {
            QueueRequest::Enqueue(m) => concrete(&m.route, S, Access::Write),
            QueueRequest::Reserve(m) => pattern(&m.route, S, Access::Write),
            QueueRequest::Extend(m) => concrete(&m.route, S, Access::Write),
            QueueRequest::Complete(m) => concrete(&m.route, S, Access::Write),
            QueueRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            QueueRequest::Unsubscribe(m) => pattern(&m.route, S, Access::Read),
        }
    }
}

/// RPC requests (300–304).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum RpcRequest {
    SubscribeWorker(proto::rpc::SubscribeWorker),
    UnsubscribeWorker(proto::rpc::UnsubscribeWorker),
    Request(proto::rpc::Request),
    Response(proto::rpc::Response),
    Cancel(proto::rpc::Cancel),
}

impl DomainRequest for RpcRequest {
    fn message_type(&self) -> u16 {
        use fitz_protocol::Message as _;
        match self {
            RpcRequest::SubscribeWorker(_) => proto::rpc::SubscribeWorker::TYPE,
            RpcRequest::UnsubscribeWorker(_) => proto::rpc::UnsubscribeWorker::TYPE,
            RpcRequest::Request(_) => proto::rpc::Request::TYPE,
            RpcRequest::Response(_) => proto::rpc::Response::TYPE,
            RpcRequest::Cancel(_) => proto::rpc::Cancel::TYPE,
        }
    }

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

/// Lease requests (400–403, 407, 408, 410).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum LeaseRequest {
    Acquire(proto::lease::Acquire),
    Renew(proto::lease::Renew),
    Release(proto::lease::Release),
    Query(proto::lease::Query),
    Subscribe(proto::lease::Subscribe),
    Unsubscribe(proto::lease::Unsubscribe),
    List(proto::lease::List),
}

impl DomainRequest for LeaseRequest {
    fn message_type(&self) -> u16 {
        use fitz_protocol::Message as _;
        match self {
            LeaseRequest::Acquire(_) => proto::lease::Acquire::TYPE,
            LeaseRequest::Renew(_) => proto::lease::Renew::TYPE,
            LeaseRequest::Release(_) => proto::lease::Release::TYPE,
            LeaseRequest::Query(_) => proto::lease::Query::TYPE,
            LeaseRequest::Subscribe(_) => proto::lease::Subscribe::TYPE,
            LeaseRequest::Unsubscribe(_) => proto::lease::Unsubscribe::TYPE,
            LeaseRequest::List(_) => proto::lease::List::TYPE,
        }
    }

    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Lease;
        match self {
            LeaseRequest::Acquire(m) => concrete(&m.route, S, Access::Write),
            LeaseRequest::Renew(m) => concrete(&m.route, S, Access::Write),
            LeaseRequest::Release(m) => concrete(&m.route, S, Access::Write),
            LeaseRequest::Query(m) => concrete(&m.route, S, Access::Read),
            LeaseRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            LeaseRequest::Unsubscribe(m) => pattern(&m.route, S, Access::Read),
            LeaseRequest::List(m) => pattern(&m.pattern, S, Access::Read),
        }
    }
}

/// Notice requests (500–503).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum NoticeRequest {
    Publish(proto::notice::Publish),
    Subscribe(proto::notice::Subscribe),
    Unsubscribe(proto::notice::Unsubscribe),
    UnsubscribeAll(proto::notice::UnsubscribeAll),
}

impl DomainRequest for NoticeRequest {
    fn message_type(&self) -> u16 {
        use fitz_protocol::Message as _;
        match self {
            NoticeRequest::Publish(_) => proto::notice::Publish::TYPE,
            NoticeRequest::Subscribe(_) => proto::notice::Subscribe::TYPE,
            NoticeRequest::Unsubscribe(_) => proto::notice::Unsubscribe::TYPE,
            NoticeRequest::UnsubscribeAll(_) => proto::notice::UnsubscribeAll::TYPE,
        }
    }

    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Notice;
        match self {
            NoticeRequest::Publish(m) => concrete(&m.route, S, Access::Write),
            NoticeRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            NoticeRequest::Unsubscribe(_) | NoticeRequest::UnsubscribeAll(_) => {
                Target::SessionOwned
            }
        }
    }
}

/// Stream requests (600–608).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum StreamRequest {
    Begin(proto::stream::Begin),
    Append(proto::stream::Append),
    Commit(proto::stream::Commit),
    Rollback(proto::stream::Rollback),
    Read(proto::stream::Read),
    Last(proto::stream::Last),
    GetMetadata(proto::stream::GetMetadata),
    Subscribe(proto::stream::Subscribe),
    Unsubscribe(proto::stream::Unsubscribe),
}

impl DomainRequest for StreamRequest {
    fn message_type(&self) -> u16 {
        use fitz_protocol::Message as _;
        match self {
            StreamRequest::Begin(_) => proto::stream::Begin::TYPE,
            StreamRequest::Append(_) => proto::stream::Append::TYPE,
            StreamRequest::Commit(_) => proto::stream::Commit::TYPE,
            StreamRequest::Rollback(_) => proto::stream::Rollback::TYPE,
            StreamRequest::Read(_) => proto::stream::Read::TYPE,
            StreamRequest::Last(_) => proto::stream::Last::TYPE,
            StreamRequest::GetMetadata(_) => proto::stream::GetMetadata::TYPE,
            StreamRequest::Subscribe(_) => proto::stream::Subscribe::TYPE,
            StreamRequest::Unsubscribe(_) => proto::stream::Unsubscribe::TYPE,
        }
    }

    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Stream;
        match self {
            StreamRequest::Begin(m) => concrete(&m.route, S, Access::Write),
            StreamRequest::Append(_) | StreamRequest::Commit(_) | StreamRequest::Rollback(_) => {
                Target::SessionOwned
            }
            StreamRequest::Read(m) => Target::StreamSelector {
                selector: &m.selector,
                access: Access::Read,
            },
            StreamRequest::Last(m) => concrete(&m.route, S, Access::Read),
            StreamRequest::GetMetadata(m) => concrete(&m.route, S, Access::Read),
            StreamRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            StreamRequest::Unsubscribe(m) => pattern(&m.route, S, Access::Read),
        }
    }
}

/// Schedule requests (700–704, 706, 707).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ScheduleRequest {
    Create(proto::schedule::Create),
    Cancel(proto::schedule::Cancel),
    List(proto::schedule::List),
    Subscribe(proto::schedule::Subscribe),
    Unsubscribe(proto::schedule::Unsubscribe),
    CreateBatch(proto::schedule::CreateBatch),
    ListV2(proto::schedule::ListV2),
}

impl DomainRequest for ScheduleRequest {
    fn message_type(&self) -> u16 {
        use fitz_protocol::Message as _;
        match self {
            ScheduleRequest::Create(_) => proto::schedule::Create::TYPE,
            ScheduleRequest::Cancel(_) => proto::schedule::Cancel::TYPE,
            ScheduleRequest::List(_) => proto::schedule::List::TYPE,
            ScheduleRequest::Subscribe(_) => proto::schedule::Subscribe::TYPE,
            ScheduleRequest::Unsubscribe(_) => proto::schedule::Unsubscribe::TYPE,
            ScheduleRequest::CreateBatch(_) => proto::schedule::CreateBatch::TYPE,
            ScheduleRequest::ListV2(_) => proto::schedule::ListV2::TYPE,
        }
    }

    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Schedule;
        match self {
            ScheduleRequest::Create(m) => concrete(&m.entry.route, S, Access::Write),
            ScheduleRequest::Cancel(m) => concrete(&m.route, S, Access::Write),
            ScheduleRequest::List(_) | ScheduleRequest::ListV2(_) => Target::SchemeWide {
                scheme: S,
                access: Access::Read,
            },
            ScheduleRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            ScheduleRequest::Unsubscribe(m) => pattern(&m.route, S, Access::Read),
            ScheduleRequest::CreateBatch(m) => Target::ConcreteSet {
                routes: m.entries.iter().map(|e| &*e.route).collect(),
                scheme: S,
                access: Access::Write,
            },
        }
    }
}
