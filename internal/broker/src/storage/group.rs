//! Group commit: concurrent Sync commits share one fsync.
//!
//! A Sync commit is applied first without fsync (visible to the store, not
//! yet durable) and takes a *ticket*, the count of such commits so far. It
//! is acknowledged only once a sync that *started after* it was applied has
//! succeeded. Whichever waiter finds no sync under way leads: it notes the
//! newest ticket, runs one sync (which covers every commit applied before
//! it started) outside the lock, records that ticket as durable and wakes
//! everyone; waiters whose ticket is covered return, the rest elect the
//! next leader. While one fsync runs, every commit arriving meanwhile
//! queues for the next, so N concurrent committers pay ~2 fsyncs, not N.
//!
//! **A failed sync poisons the store.** After a failed fsync the kernel may
//! have dropped the dirty pages, so a later fsync that succeeds proves
//! nothing about them (PostgreSQL's "fsyncgate"). Every commit not yet
//! durable when a sync fails — the whole group, and anyone queued behind
//! it — gets that error, and so does every later commit and sync: the
//! broker must be restarted (it then recovers to the last durable state).
//! Nothing is ever acknowledged that a failed sync may have lost.
//!
//! Waiting blocks the calling thread (a condition variable); callers on a
//! tokio worker wrap the wait in `block_in_place` (see `local.rs`).

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::StorageError;

/// The shared state of one store's group commit.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// Tickets handed out: commits applied without fsync so far.
    applied: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A leader is running a sync.
    syncing: bool,
    /// Set by the first failed sync; the store is unusable from then on.
    poisoned: Option<StorageError>,
    /// Syncs run (succeeded or failed), for stats and tests.
    syncs: u64,
}

impl GroupCommit {
    /// Fails when an earlier sync failed (see the module docs).
    pub(crate) fn check(&self) -> Result<(), StorageError> {
        match &self.state.lock().poisoned {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Takes the ticket of a commit just applied without fsync. Must be
    /// called after the apply returned, so a later sync covers it.
    pub(crate) fn ticket(&self) -> u64 {
        let mut s = self.state.lock();
        s.applied += 1;
        s.applied
    }

    /// Returns once `ticket` is durable, leading a sync with `sync` when none
    /// is under way; the error of the failed sync otherwise.
    pub(crate) fn wait_durable(
        &self,
        ticket: u64,
        sync: impl Fn() -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut s = self.state.lock();
        loop {
            if s.durable >= ticket {
                return Ok(());
            }
            if let Some(e) = &s.poisoned {
                return Err(e.clone());
            }
            if s.syncing {
                self.done.wait(&mut s);
            } else {
                self.lead(&mut s, &sync);
            }
        }
    }

    /// Syncs everything applied so far, Sync or Buffered (the background
    /// flusher, close): waits out a sync under way, then leads a fresh one.
    pub(crate) fn sync_all(
        &self,
        sync: impl Fn() -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut s = self.state.lock();
        while s.syncing {
            self.done.wait(&mut s);
        }
        self.lead(&mut s, &sync)
    }

    /// Runs one sync as the leader, the lock released meanwhile.
    fn lead(
        &self,
        s: &mut MutexGuard<'_, State>,
        sync: &impl Fn() -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        if let Some(e) = &s.poisoned {
            return Err(e.clone());
        }
        s.syncing = true;
        let target = s.applied;
        let result = MutexGuard::unlocked(s, sync);
        s.syncing = false;
        s.syncs += 1;
        match &result {
            Ok(()) => s.durable = s.durable.max(target),
            Err(e) => s.poisoned = Some(e.clone()),
        }
        self.done.notify_all();
        result
    }

    /// Syncs run so far.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Tickets handed out so far.
    #[cfg(test)]
    pub(crate) fn applied(&self) -> u64 {
        self.state.lock().applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Waits (bounded) until `cond` holds.
    fn until(cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "condition never held");
            std::thread::yield_now();
        }
    }

    /// One committer leads a sync that is held open; three more commit
    /// meanwhile and share the next sync; its result is everyone's.
    fn group_of_three(second: Result<(), StorageError>) -> Vec<Result<(), StorageError>> {
        let g = Arc::new(GroupCommit::default());
        let (release_tx, release_rx) = mpsc::channel::<Result<(), StorageError>>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let sync = {
            let rx = release_rx.clone();
            move || rx.lock().unwrap().recv().unwrap()
        };
        let t = g.ticket();
        let first = {
            let (g, sync) = (g.clone(), sync.clone());
            std::thread::spawn(move || g.wait_durable(t, sync))
        };
        // The first sync is under way (its leader waits for a release).
        until(|| g.state.lock().syncing);
        let followers: Vec<_> = (0..3)
            .map(|_| {
                let (g, sync) = (g.clone(), sync.clone());
                let t = g.ticket();
                std::thread::spawn(move || g.wait_durable(t, sync))
            })
            .collect();
        assert_eq!(g.applied(), 4);
        release_tx.send(Ok(())).unwrap();
        assert_eq!(first.join().unwrap(), Ok(()));
        release_tx.send(second).unwrap();
        let results: Vec<_> = followers.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(g.syncs(), 2, "the three followers shared one sync");
        results
    }

    #[test]
    fn concurrent_commits_share_one_sync() {
        assert_eq!(group_of_three(Ok(())), vec![Ok(()), Ok(()), Ok(())]);
    }

    #[test]
    fn a_failed_sync_fails_every_commit_of_its_group_and_poisons_the_store() {
        let e = StorageError("fsync: I/O error".into());
        assert_eq!(
            group_of_three(Err(e.clone())),
            vec![Err(e.clone()), Err(e.clone()), Err(e.clone())]
        );
        let g = GroupCommit::default();
        let t = g.ticket();
        assert_eq!(g.wait_durable(t, || Err(e.clone())), Err(e.clone()));
        assert_eq!(g.check(), Err(e.clone()));
        // A later sync that would succeed proves nothing: still refused.
        let t = g.ticket();
        assert_eq!(g.wait_durable(t, || Ok(())), Err(e.clone()));
        assert_eq!(g.sync_all(|| Ok(())), Err(e));
    }

    #[test]
    fn a_commit_is_not_acknowledged_by_a_sync_that_started_before_it() {
        let g = Arc::new(GroupCommit::default());
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = std::sync::Mutex::new(go_rx);
        let g2 = g.clone();
        // A background sync (nothing applied yet) is held open.
        let flusher = std::thread::spawn(move || {
            g2.sync_all(|| {
                go_rx.lock().unwrap().recv().unwrap();
                Ok(())
            })
        });
        until(|| g.state.lock().syncing);
        let t = g.ticket();
        let syncs_seen = Arc::new(Mutex::new(0));
        let committer = {
            let (g, seen) = (g.clone(), syncs_seen.clone());
            std::thread::spawn(move || {
                g.wait_durable(t, || {
                    *seen.lock() += 1;
                    Ok(())
                })
            })
        };
        go_tx.send(()).unwrap();
        assert_eq!(flusher.join().unwrap(), Ok(()));
        assert_eq!(committer.join().unwrap(), Ok(()));
        assert_eq!(*syncs_seen.lock(), 1, "the commit led a sync of its own");
    }
}
