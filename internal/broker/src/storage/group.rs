//! Group commit: concurrent commits share one write transaction and one
//! fsync, written by one storage thread that answers every member.
//!
//! A commit is *submitted*: its job joins a queue with a completion (`Done`),
//! and the caller goes on. The store's writer thread ([`GroupCommit::run`])
//! takes everything queued, writes it with one `write` call — for the local
//! store, one redb transaction, durable (fsync) when any member asked for
//! `Sync` — and then calls every member's completion, in queue order, with
//! the outcome. Commits arriving meanwhile queue for the next group. N
//! concurrent committers therefore pay about two transactions and two
//! fsyncs, not N, and **no caller's thread waits**: the KV engine parks the
//! COMMIT's reply in the completion (the resource stays locked), so a
//! runtime thread is not blocked per waiting commit. Members are written in
//! queue order, which is the order `submit` was called in.
//!
//! A completion runs only after the group containing it was written, so a
//! Sync commit is acknowledged only once its data is durable.
//!
//! [`GroupCommit::try_inline`] writes a job on the caller's thread when the
//! writer is idle and nothing is queued (a lone commit skips the hand-off
//! to the writer thread and back; the local store runs a Sync one under
//! `block_in_place`); it takes the same `writing` flag, so writes never
//! overlap and queue order is kept. Commits arriving meanwhile queue for
//! the writer thread as usual.
//! [`GroupCommit::commit`] is the blocking form (submit, then wait) for
//! callers that need the outcome on their thread.
//!
//! **A failed write poisons the store.** Every commit of the failed group
//! gets its error, and so does every later one: after a failed fsync the
//! kernel may have dropped the dirty pages, so a later fsync that succeeds
//! proves nothing about them (PostgreSQL's "fsyncgate"); the broker must be
//! restarted (it then recovers to the last durable state). Nothing is ever
//! acknowledged that a failed write may have lost. A group is all or
//! nothing, so one member's failure is every member's.
//!
//! The queue holds one entry per commit in flight. Its bound is the
//! callers': the KV engine has at most one commit in flight per locked
//! resource and keeps a committing transaction's bytes charged to its staging
//! budget until the completion runs; the other engines use the blocking
//! [`GroupCommit::commit`] (one entry per blocked thread).

use parking_lot::{Condvar, Mutex};

use super::StorageError;

/// What a submitted commit is told, once, when its group was written.
pub(crate) type Done = super::CommitDone;

/// The group commit of one store, for jobs of type `J`.
pub(crate) struct GroupCommit<J> {
    state: Mutex<State<J>>,
    /// Jobs were queued, the writer finished an inline write, or closing.
    work: Condvar,
}

struct State<J> {
    /// Jobs waiting for the next group, in arrival order.
    queue: Vec<(J, Done)>,
    /// A group (the writer's or an inline one) is being written.
    writing: bool,
    /// From the first failed write on: its error.
    poisoned: Option<StorageError>,
    /// No more jobs: the writer drains the queue and returns.
    closed: bool,
    /// Groups written (succeeded or failed), for stats and tests.
    groups: u64,
}

impl<J> Default for GroupCommit<J> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                queue: Vec::new(),
                writing: false,
                poisoned: None,
                closed: false,
                groups: 0,
            }),
            work: Condvar::new(),
        }
    }
}

/// Why a job is refused before it is queued.
fn refused<J>(s: &State<J>) -> Option<StorageError> {
    if let Some(e) = &s.poisoned {
        return Some(e.clone());
    }
    s.closed.then(|| StorageError("storage is closed".into()))
}

impl<J> GroupCommit<J> {
    /// Queues `job`; `done` is called with the outcome of the group that
    /// writes it (on the writer thread), or at once on this thread when the
    /// store is poisoned or closed.
    pub(crate) fn submit(&self, job: J, done: Done) {
        let mut s = self.state.lock();
        if let Some(e) = refused(&s) {
            drop(s);
            done(Err(e));
            return;
        }
        s.queue.push((job, done));
        if s.queue.len() == 1 {
            self.work.notify_all();
        }
    }

    /// Writes `job` on this thread when no group is being written and none
    /// is queued, returning the outcome; otherwise gives `job` back.
    pub(crate) fn try_inline(
        &self,
        job: J,
        write: impl FnOnce(&[J]) -> Result<(), StorageError>,
    ) -> Result<Result<(), StorageError>, J> {
        self.try_inline_all([job], write).map_err(|[job]| job)
    }

    /// [`GroupCommit::try_inline`] for several jobs written as one group.
    pub(crate) fn try_inline_all<B: AsRef<[J]>>(
        &self,
        jobs: B,
        write: impl FnOnce(&[J]) -> Result<(), StorageError>,
    ) -> Result<Result<(), StorageError>, B> {
        let mut s = self.state.lock();
        if let Some(e) = refused(&s) {
            return Ok(Err(e));
        }
        if s.writing || !s.queue.is_empty() {
            return Err(jobs);
        }
        s.writing = true;
        let result = parking_lot::MutexGuard::unlocked(&mut s, || write(jobs.as_ref()));
        s.writing = false;
        s.groups += 1;
        if let Err(e) = &result
            && s.poisoned.is_none()
        {
            s.poisoned = Some(e.clone());
        }
        if !s.queue.is_empty() {
            self.work.notify_all();
        }
        Ok(result)
    }

    /// Submits `job` and blocks this thread until its group was written.
    pub(crate) fn commit(&self, job: J) -> Result<(), StorageError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            job,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv()
            .unwrap_or_else(|_| Err(StorageError("storage writer stopped".into())))
    }

    /// The writer: writes queued groups with `write` and answers their
    /// members, until [`GroupCommit::close`] and the queue is empty.
    pub(crate) fn run(&self, write: impl Fn(&[J]) -> Result<(), StorageError>) {
        let mut s = self.state.lock();
        loop {
            if s.queue.is_empty() || s.writing {
                if s.closed && s.queue.is_empty() {
                    return;
                }
                self.work.wait(&mut s);
                continue;
            }
            let group = std::mem::take(&mut s.queue);
            let poisoned = s.poisoned.clone();
            s.writing = true;
            let (result, group) = parking_lot::MutexGuard::unlocked(&mut s, || {
                let (jobs, dones): (Vec<J>, Vec<Done>) = group.into_iter().unzip();
                let result = match poisoned {
                    Some(e) => Err(e),
                    None => write(&jobs),
                };
                drop(jobs);
                (result, dones)
            });
            s.writing = false;
            s.groups += 1;
            if let Err(e) = &result
                && s.poisoned.is_none()
            {
                s.poisoned = Some(e.clone());
            }
            // Answer outside the lock: completions take engine locks and
            // may submit again.
            parking_lot::MutexGuard::unlocked(&mut s, || {
                for done in group {
                    done(result.clone());
                }
            });
        }
    }

    /// Refuses later jobs and lets [`GroupCommit::run`] return once the
    /// queue is written.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.work.notify_all();
    }

    /// True when no group is being written and none is queued (a
    /// [`GroupCommit::try_inline`] would likely write at once).
    pub(crate) fn is_idle(&self) -> bool {
        let s = self.state.lock();
        !s.writing && s.queue.is_empty()
    }

    /// True once a write failed (every later commit fails).
    pub(crate) fn poisoned(&self) -> Option<StorageError> {
        self.state.lock().poisoned.clone()
    }

    /// Groups written so far.
    pub(crate) fn groups(&self) -> u64 {
        self.state.lock().groups
    }

    /// Jobs queued and not yet taken by the writer.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.state.lock().queue.len()
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
    type Outcomes = mpsc::Receiver<(u32, Result<(), StorageError>)>;

    /// A store whose writer thread records each group and returns what is
    /// sent on the returned channel (one message per group).
    fn store() -> (
        Arc<GroupCommit<u32>>,
        mpsc::Sender<Result<(), StorageError>>,
        Written,
    ) {
        let g = Arc::new(GroupCommit::<u32>::default());
        let (release_tx, release_rx) = mpsc::channel::<Result<(), StorageError>>();
        let written: Written = Arc::default();
        {
            let (g, written) = (g.clone(), written.clone());
            std::thread::spawn(move || {
                g.run(|group: &[u32]| {
                    written.lock().unwrap().push(group.to_vec());
                    release_rx.recv().unwrap()
                });
            });
        }
        (g, release_tx, written)
    }

    fn submit(g: &GroupCommit<u32>, job: u32, out: &mpsc::Sender<(u32, Result<(), StorageError>)>) {
        let out = out.clone();
        g.submit(job, Box::new(move |r| out.send((job, r)).unwrap()));
    }

    /// Job 0 is written in a group held open; jobs 1–3 are submitted
    /// meanwhile and form the next group, whose write returns `second`.
    fn group_of_three(
        second: Result<(), StorageError>,
    ) -> (Outcomes, Written, Arc<GroupCommit<u32>>) {
        let (g, release, written) = store();
        let (out_tx, out) = mpsc::channel();
        submit(&g, 0, &out_tx);
        until(|| written.lock().unwrap().len() == 1);
        for job in 1..=3 {
            submit(&g, job, &out_tx);
        }
        assert_eq!(g.queued(), 3);
        assert!(out.try_recv().is_err(), "nothing answered before its write");
        release.send(Ok(())).unwrap();
        assert_eq!(out.recv().unwrap(), (0, Ok(())));
        release.send(second).unwrap();
        (out, written, g)
    }

    #[test]
    fn concurrent_commits_share_one_write_and_are_answered_in_arrival_order() {
        let (out, written, g) = group_of_three(Ok(()));
        let answers: Vec<_> = (0..3).map(|_| out.recv().unwrap()).collect();
        assert_eq!(answers, vec![(1, Ok(())), (2, Ok(())), (3, Ok(()))]);
        assert_eq!(*written.lock().unwrap(), vec![vec![0], vec![1, 2, 3]]);
        assert_eq!(g.groups(), 2, "the three later commits shared one write");
    }

    #[test]
    fn a_failed_write_fails_every_commit_of_its_group_and_poisons_the_store() {
        let e = StorageError("fsync: I/O error".into());
        let (out, written, g) = group_of_three(Err(e.clone()));
        let answers: Vec<_> = (0..3).map(|_| out.recv().unwrap()).collect();
        assert_eq!(
            answers,
            vec![
                (1, Err(e.clone())),
                (2, Err(e.clone())),
                (3, Err(e.clone()))
            ]
        );
        // A later write that would succeed proves nothing: refused, and
        // never attempted (the writer would block on the release channel).
        assert_eq!(g.commit(4), Err(e.clone()));
        assert_eq!(
            g.try_inline(5, |_| panic!("written after a failure")),
            Ok(Err(e))
        );
        assert_eq!(written.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_lone_commit_is_its_own_group_and_blocking_commit_waits_for_it() {
        let (g, release, written) = store();
        for job in 0..3 {
            release.send(Ok(())).unwrap();
            assert_eq!(g.commit(job), Ok(()));
        }
        assert_eq!(*written.lock().unwrap(), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(g.groups(), 3);
    }

    #[test]
    fn an_inline_write_only_when_idle_and_nothing_queued() {
        let (g, release, written) = store();
        assert_eq!(
            g.try_inline(7, |j| {
                assert_eq!(j, [7]);
                Ok(())
            }),
            Ok(Ok(()))
        );
        let (out_tx, out) = mpsc::channel();
        submit(&g, 0, &out_tx);
        until(|| written.lock().unwrap().len() == 1);
        // The writer is writing job 0: an inline write would overlap it.
        assert_eq!(g.try_inline(8, |_| panic!("overlapping write")), Err(8));
        assert_eq!(
            g.try_inline_all(vec![10, 11], |_| panic!("overlapping write")),
            Err(vec![10, 11])
        );
        release.send(Ok(())).unwrap();
        assert_eq!(out.recv().unwrap(), (0, Ok(())));
        // Idle again: several jobs are one group.
        until(|| g.is_idle());
        let groups = g.groups();
        assert_eq!(
            g.try_inline_all(vec![12, 13, 14], |j| {
                assert_eq!(j, [12, 13, 14]);
                Ok(())
            }),
            Ok(Ok(()))
        );
        assert_eq!(g.groups(), groups + 1);
        g.close();
        assert_eq!(g.commit(9), Err(StorageError("storage is closed".into())));
    }
}
