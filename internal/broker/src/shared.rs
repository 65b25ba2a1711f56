//! State shared by the listeners, connections and timers of one broker, and
//! its construction (storage, timers, engines): everything below the public
//! [`crate::Broker`] and above a connection.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{AdvanceListener, Clock, Timers};
use crate::config::Config;
use crate::engines::{Engines, Services};
use crate::input::InputBudget;
use crate::registry::SubscriptionIds;
use crate::session::{BrokerStats, Session, SessionId};
use crate::storage::{self, StorageError};

/// State shared by the listeners, connections and timer task.
pub(crate) struct Shared {
    pub config: Arc<Config>,
    pub clock: Clock,
    pub timers: Arc<Timers>,
    pub engines: Engines,
    pub sessions: SessionTable,
    pub next_session: AtomicU64,
    pub stats: Arc<BrokerStats>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// Closed at shutdown and drop so the path can be reopened.
    pub storage: Arc<dyn storage::Backend>,
    /// One permit per connection served (`FITZ_MAX_CONNECTIONS`).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// Unfinished input across connections (`FITZ_MAX_PENDING_INPUT_BYTES`).
    pub input: InputBudget,
}

/// Live sessions, with a watch channel of their count for tests.
pub(crate) struct SessionTable {
    map: Mutex<HashMap<SessionId, Session>>,
    count: watch::Sender<usize>,
}

impl SessionTable {
    fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            count: watch::Sender::new(0),
        }
    }

    /// A receiver of the live session count.
    pub(crate) fn count(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    pub(crate) fn lock(&self) -> SessionGuard<'_> {
        SessionGuard {
            map: self.map.lock(),
            count: &self.count,
        }
    }
}

/// The locked table; publishes the count when dropped.
pub(crate) struct SessionGuard<'a> {
    map: parking_lot::MutexGuard<'a, HashMap<SessionId, Session>>,
    count: &'a watch::Sender<usize>,
}

impl SessionGuard<'_> {
    pub(crate) fn insert(&mut self, id: SessionId, s: Session) {
        self.map.insert(id, s);
    }

    pub(crate) fn remove(&mut self, id: &SessionId) -> Option<Session> {
        self.map.remove(id)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Session> {
        self.map.values()
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        let n = self.map.len();
        self.count.send_if_modified(|c| {
            let changed = *c != n;
            *c = n;
            changed
        });
    }
}

impl AdvanceListener for Shared {
    fn advanced(&self, now: SystemTime) {
        for domain in self.timers.take_due(now) {
            self.engines.tick(domain, now);
        }
    }
}

impl Shared {
    /// Opens storage, starts the engines (recovering what storage holds) and
    /// subscribes to `clock`'s advances. No listener is bound.
    pub(crate) fn new(config: Config, clock: Clock) -> Result<Arc<Shared>, StorageError> {
        let storage = storage::open(&config.storage)?;
        let limits = config.limits;
        let config = Arc::new(config);
        let timers = Arc::new(Timers::new(clock.clone()));
        let services = Services {
            clock: clock.clone(),
            timers: timers.clone(),
            ids: SubscriptionIds::default(),
            storage: storage.clone(),
            config: config.clone(),
        };
        let engines = Engines::start(&services)?;
        let shared = Arc::new(Shared {
            config,
            clock: clock.clone(),
            timers,
            engines,
            sessions: SessionTable::new(),
            next_session: AtomicU64::new(0),
            stats: Arc::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            storage,
            connections: Arc::new(tokio::sync::Semaphore::new(
                limits
                    .max_connections
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            input: InputBudget::new(limits.max_pending_input, limits.frame_timeout),
        });
        let listener: Weak<dyn AdvanceListener> =
            Arc::downgrade(&shared) as Weak<dyn AdvanceListener>;
        clock.subscribe(listener);
        Ok(shared)
    }
}
