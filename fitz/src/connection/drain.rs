//! The connection's side of `Client::flush` and `Client::drain` (see
//! `crate::drain`): the draining flag, the workers' stop tokens and task
//! tracker, ending every subscription, and the domains a flush must cover.

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Connection;
use super::command::Command;
use crate::error::{Error, Result};

impl Connection {
    /// `Err(Closed)` once the client is closed or draining: no new
    /// subscription or worker is taken then.
    pub(crate) fn check_taking_work(&self) -> Result<()> {
        if self.shared.is_closed() {
            Err(Error::closed())
        } else if self.shared.draining.load(Ordering::Acquire) {
            Err(Error::closed_because("the client is draining"))
        } else {
            Ok(())
        }
    }

    /// Starts a drain; false when one was already started.
    pub(crate) fn begin_drain(&self) -> bool {
        let first = !self.shared.draining.swap(true, Ordering::AcqRel);
        if first {
            self.shared.drain.cancel();
            self.shared.workers.close();
        }
        first
    }

    /// A stop token for a new worker: cancelled when the client drains.
    pub(crate) fn worker_stop_token(&self) -> CancellationToken {
        self.shared.drain.child_token()
    }

    /// Spawns a worker's task where `drain` can wait for it.
    pub(crate) fn spawn_worker<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.workers.spawn(task)
    }

    /// Waits until every worker task has ended; returns how many are still
    /// running when `deadline` passes first.
    pub(crate) async fn workers_finished(&self, deadline: Instant) -> usize {
        match tokio::time::timeout_at(deadline, self.shared.workers.wait()).await {
            Ok(()) => 0,
            Err(_) => self.shared.workers.len(),
        }
    }

    /// Ends every subscription and unsubscribes on the wire; one receiver
    /// per UNSUBSCRIBE sent.
    pub(crate) async fn unsubscribe_all(&self) -> Result<Vec<oneshot::Receiver<Result<()>>>> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::UnsubscribeAll(tx))
            .await
            .map_err(|_| Error::closed())?;
        rx.await.map_err(|_| Error::closed())
    }

    /// The domains that carried a record since the last call (bits of
    /// [`domain_bit`]), clearing them.
    pub(crate) fn take_domains_used(&self) -> u32 {
        self.shared.domains_used.swap(0, Ordering::AcqRel)
    }

    /// Puts back domains a failed flush did not confirm.
    pub(crate) fn restore_domains_used(&self, bits: u32) {
        self.shared.domains_used.fetch_or(bits, Ordering::AcqRel);
    }
}
