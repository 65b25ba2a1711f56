//! Group commit: concurrent commits share one write transaction and one
//! fsync.
//!
//! A commit joins a queue and waits. Whichever waiter finds no group being
//! written leads: it takes everything queued (its own commit included),
//! writes it with one `write` call — for the local store, one redb
//! transaction, durable (fsync) when any member asked for `Sync` — and
//! wakes everyone with the outcome. Commits arriving meanwhile queue for
//! the next group, led by one of them. N concurrent committers therefore pay
//! about two transactions and two fsyncs, not N; a lone committer pays what
//! it paid before (one transaction, one fsync). Members are written in
//! queue order, which is the order `commit` was called in.
//!
//! A commit returns only after the group containing it was written, so a
//! Sync commit is acknowledged only once its data is durable.
//!
//! **A failed write poisons the store.** Every commit of the failed group
//! gets its error, and so does every later one: after a failed fsync the
//! kernel may have dropped the dirty pages, so a later fsync that succeeds
//! proves nothing about them (PostgreSQL's "fsyncgate"); the broker must be
//! restarted (it then recovers to the last durable state). Nothing is ever
//! acknowledged that a failed write may have lost. A group is all or
//! nothing, so one member's failure is every member's.
//!
//! Waiting blocks the calling thread (a condition variable); callers on a
//! tokio worker wrap the commit in `block_in_place` (see `local.rs`). The
//! queue holds at most one entry per blocked caller, so it is bounded by
//! the callers (engines on the broker's threads), not by clients.

use parking_lot::{Condvar, Mutex};

use super::StorageError;

/// The group commit of one store, for jobs of type `J`.
pub(crate) struct GroupCommit<J> {
    state: Mutex<State<J>>,
    /// A group was written (waiters recheck).
    done: Condvar,
}

struct State<J> {
    /// Jobs waiting for the next group, in arrival order.
    queue: Vec<J>,
    /// Sequence number of the last job queued.
    queued: u64,
    /// Every job up to this sequence number has its outcome.
    finished: u64,
    /// A leader is writing a group.
    writing: bool,
    /// From the first failed write: the first job it failed, and the error.
    poisoned: Option<(u64, StorageError)>,
    /// Groups written (succeeded or failed), for stats and tests.
    groups: u64,
}

impl<J> Default for GroupCommit<J> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                queue: Vec::new(),
                queued: 0,
                finished: 0,
                writing: false,
                poisoned: None,
                groups: 0,
            }),
            done: Condvar::new(),
        }
    }
}

impl<J> GroupCommit<J> {
    /// Commits `job`: returns once the group containing it was written by
    /// `write` (called by whichever waiter leads, outside the lock, with the
    /// whole group in order), with that write's outcome.
    pub(crate) fn commit(
        &self,
        job: J,
        write: impl Fn(&[J]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut s = self.state.lock();
        if let Some((_, e)) = &s.poisoned {
            return Err(e.clone());
        }
        s.queued += 1;
        let seq = s.queued;
        s.queue.push(job);
        loop {
            if s.finished >= seq {
                return match &s.poisoned {
                    Some((from, e)) if seq >= *from => Err(e.clone()),
                    _ => Ok(()),
                };
            }
            if s.writing {
                self.done.wait(&mut s);
                continue;
            }
            s.writing = true;
            let group = std::mem::take(&mut s.queue);
            let (first, last) = (s.finished + 1, s.queued);
            let result = match &s.poisoned {
                Some((_, e)) => Err(e.clone()),
                None => parking_lot::MutexGuard::unlocked(&mut s, || write(&group)),
            };
            s.writing = false;
            s.groups += 1;
            if let Err(e) = result
                && s.poisoned.is_none()
            {
                s.poisoned = Some((first, e));
            }
            s.finished = last;
            self.done.notify_all();
        }
    }

    /// True while a leader writes a group (a new commit would wait).
    pub(crate) fn is_writing(&self) -> bool {
        self.state.lock().writing
    }

    /// Groups written so far.
    #[cfg(test)]
    pub(crate) fn groups(&self) -> u64 {
        self.state.lock().groups
    }

    /// Jobs queued so far.
    #[cfg(test)]
    fn queued(&self) -> u64 {
        self.state.lock().queued
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

    type Written = Arc<std::sync::Mutex<Vec<Vec<u32>>>>;

    /// Job 0 leads a write that is held open; jobs 1–3 commit meanwhile and
    /// form the next group, whose write returns `second`.
    fn group_of_three(
        second: Result<(), StorageError>,
    ) -> (Vec<Result<(), StorageError>>, Written) {
        let g = Arc::new(GroupCommit::<u32>::default());
        let (release_tx, release_rx) = mpsc::channel::<Result<(), StorageError>>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let written: Written = Arc::default();
        let write = {
            let (rx, written) = (release_rx.clone(), written.clone());
            move |group: &[u32]| {
                written.lock().unwrap().push(group.to_vec());
                rx.lock().unwrap().recv().unwrap()
            }
        };
        let first = {
            let (g, write) = (g.clone(), write.clone());
            std::thread::spawn(move || g.commit(0, write))
        };
        until(|| g.state.lock().writing);
        let followers: Vec<_> = (1..=3)
            .map(|job| {
                let (g2, write) = (g.clone(), write.clone());
                let h = std::thread::spawn(move || g2.commit(job, write));
                until(|| g.queued() == u64::from(job) + 1);
                h
            })
            .collect();
        release_tx.send(Ok(())).unwrap();
        assert_eq!(first.join().unwrap(), Ok(()));
        release_tx.send(second).unwrap();
        let results = followers.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(g.groups(), 2, "the three followers shared one write");
        (results, written)
    }

    #[test]
    fn concurrent_commits_share_one_write_in_arrival_order() {
        let (results, written) = group_of_three(Ok(()));
        assert_eq!(results, vec![Ok(()), Ok(()), Ok(())]);
        assert_eq!(*written.lock().unwrap(), vec![vec![0], vec![1, 2, 3]]);
    }

    #[test]
    fn a_failed_write_fails_every_commit_of_its_group_and_poisons_the_store() {
        let e = StorageError("fsync: I/O error".into());
        let (results, _) = group_of_three(Err(e.clone()));
        assert_eq!(
            results,
            vec![Err(e.clone()), Err(e.clone()), Err(e.clone())]
        );
        let g = GroupCommit::<u32>::default();
        assert_eq!(g.commit(1, |_| Err(e.clone())), Err(e.clone()));
        // A later write that would succeed proves nothing: still refused,
        // and never attempted.
        assert_eq!(g.commit(2, |_| panic!("written after a failure")), Err(e));
    }

    #[test]
    fn a_lone_commit_is_its_own_group() {
        let g = GroupCommit::<u32>::default();
        for job in 0..3 {
            g.commit(job, |group| {
                assert_eq!(group, [job]);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(g.groups(), 3);
    }
}
