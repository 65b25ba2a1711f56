//! `FITZ_STORAGE_MODE=local`: committed data in one [redb] file under
//! `FITZ_STORAGE_PATH` (`<path>/fitz.redb`).
//!
//! # Why redb
//!
//! redb is a pure-Rust, embedded, ACID copy-on-write B-tree: a write
//! transaction is applied atomically or not at all after a crash (no
//! partial batches, no log to replay by hand), a commit with
//! `Durability::Immediate` returns only after fsync, and it is small (no C
//! toolchain, no background compaction threads), actively maintained and
//! widely used. An LSM such as fjall would add write throughput the broker
//! does not need (engines keep their state in memory and only write
//! commits through) at the cost of background threads and a larger
//! dependency tree. 2.x is used because 3.x/4.x need a newer MSRV than the
//! workspace declares; the API used here is the same.
//!
//! # Layout
//!
//! One table per [`Keyspace`]; keys and values are the engines' bytes. The
//! `meta` table holds a format marker checked at open, so a file written by
//! an incompatible layout is refused instead of misread.
//!
//! # Durability
//!
//! * **Group commit** (`storage/group.rs`): concurrent commits share one
//!   redb write transaction — one fsync when any of them is Sync — instead
//!   of queueing for one each; a writer thread (`fitz-storage-writer`)
//!   writes each group and answers its members. A failed write fails every commit of its
//!   group and every later one (the store is poisoned until the broker
//!   restarts).
//! * [`Durability::Sync`]: the batch is on stable storage when
//!   [`Backend::commit`] returns (its group's transaction is
//!   `redb::Durability::Immediate`).
//! * [`Durability::Buffered`] → `redb::Durability::None`: applied and
//!   visible at once, written to the file without fsync. A background
//!   flusher makes them durable within [`BUFFERED_FLUSH_INTERVAL`] (the
//!   window of Buffered commits a crash can lose; a later Sync commit or a
//!   clean close persists them earlier). A crash never leaves a batch half
//!   applied: redb recovers to the last durable transaction, and every
//!   commit is one transaction. The flusher also lets redb free pages,
//!   which it only does at durable commits.
//!
//! # Blocking
//!
//! [`Backend::commit_then`] (the KV engine's path) does not block: the
//! commit is queued and its completion runs on the writer thread once its
//! group is written (for Sync, once fsynced); a Sync commit that finds the
//! writer idle and nothing queued is written on the caller's thread under
//! `block_in_place` (no hand-off), so a lone committer pays what it paid
//! before. Buffered commits always queue there: with no fsync to wait
//! for, writing them inline one by one made many one-commit transactions
//! (64 writers: 7.6–9.0 k/s inline vs 15–18.5 k/s queued). [`Backend::commit`] (the other engines) is the
//! blocking form: it waits for the completion under `block_in_place`.
//!
//! One connection's concurrent commits would defeat the inline path: its
//! reader handles them one after another, each would find the writer idle
//! and be written alone, one fsync each. So a Sync commit that would be
//! written inline is held by its session ([`Backend::defers`]) until the
//! end of the reader's batch of frames (the frames that arrived together,
//! at most 64), and the batch's held commits are handed over together
//! ([`Backend::commit_all_then`]): written here as one group when the
//! writer is still idle, else queued together for its next group.
//!
//! # Lifetime
//!
//! redb locks the file, so one broker at a time may open a path (a second
//! open fails with "in use"). [`Backend::close`] (called by
//! `Broker::shutdown` and when a `Broker` is dropped) persists Buffered
//! commits, stops the flusher and releases the file, so a broker can be
//! restarted on the same path within one process; later commits fail with
//! "storage is closed".

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableTable, TableDefinition};

use super::group::GroupCommit;
use super::{Backend, Batch, CommitDone, Durability, Keyspace, Op, Pending, StorageError};

/// Longest time a Buffered commit stays without fsync.
pub const BUFFERED_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// The database file inside `FITZ_STORAGE_PATH`.
pub const FILE_NAME: &str = "fitz.redb";
/// The format marker stored under `meta/format`.
const FORMAT: &[u8] = b"fitz-broker/local/1";
const FORMAT_KEY: &[u8] = b"format";

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;
/// A table opened in a write transaction.
type OpenTable<'tx> = redb::Table<'tx, &'static [u8], &'static [u8]>;

const fn table(keyspace: Keyspace) -> Table {
    TableDefinition::new(match keyspace {
        Keyspace::Kv => "kv",
        Keyspace::Queue => "queue",
        Keyspace::Stream => "stream",
        Keyspace::Schedule => "schedule",
        Keyspace::Meta => "meta",
    })
}

const KEYSPACES: [Keyspace; 5] = [
    Keyspace::Kv,
    Keyspace::Queue,
    Keyspace::Stream,
    Keyspace::Schedule,
    Keyspace::Meta,
];

fn fail(e: impl Into<redb::Error>) -> StorageError {
    StorageError(e.into().to_string())
}

/// The local disk backend.
pub struct LocalBackend {
    shared: Arc<Shared>,
    flusher: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    /// The thread writing groups ([`GroupCommit::run`]).
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

struct Shared {
    /// `None` once closed.
    db: RwLock<Option<Database>>,
    /// Buffered commits since the flusher last made everything durable.
    dirty: AtomicBool,
    /// Commits waiting for the writer thread's next transaction.
    group: GroupCommit<Job>,
    /// Tests: every sync fails (an fsync error).
    #[cfg(test)]
    fail_syncs: AtomicBool,
}

/// One commit in a group: a batch (empty for a checkpoint) and whether it
/// must be durable on return.
struct Job {
    batch: Batch,
    durability: Durability,
}

impl Shared {
    /// Writes a group in one transaction, durable (fsync) when any member
    /// is Sync; Buffered-only groups mark the store dirty for the flusher.
    fn write(&self, db: &Database, group: &[Job]) -> Result<(), StorageError> {
        let sync = group.iter().any(|j| j.durability == Durability::Sync);
        #[cfg(test)]
        if sync && self.fail_syncs.load(Ordering::Acquire) {
            return Err(StorageError("fsync: injected I/O error".into()));
        }
        let mut tx = db.begin_write().map_err(fail)?;
        tx.set_durability(if sync {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        });
        for job in group {
            apply(&tx, &job.batch)?;
        }
        // Dropping an uncommitted transaction aborts it: nothing applied.
        tx.commit().map_err(fail)?;
        if !sync {
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// [`Shared::write`] on the open database.
    fn write_open(&self, group: &[Job]) -> Result<(), StorageError> {
        let guard = self.db.read();
        let db = guard
            .as_ref()
            .ok_or_else(|| StorageError("storage is closed".into()))?;
        self.write(db, group)
    }

    /// A Buffered commit written on the caller's thread when the writer is
    /// idle and nothing is queued (no fsync to wait for); else given back.
    fn buffered_inline(&self, job: Job) -> Result<Result<(), StorageError>, Job> {
        if job.durability != Durability::Buffered {
            return Err(job);
        }
        self.group.try_inline(job, |g| self.write_open(g))
    }

    /// A job making every earlier commit durable (an empty Sync member).
    fn checkpoint() -> Job {
        Job {
            batch: Batch::default(),
            durability: Durability::Sync,
        }
    }
}

impl LocalBackend {
    /// Opens (creating if needed) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StorageError(format!("{} is in use by another broker", path.display()))
            }
            e => StorageError(format!("cannot open {}: {}", path.display(), fail(e).0)),
        })?;
        init(&db)?;
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(db)),
            dirty: AtomicBool::new(false),
            group: GroupCommit::default(),
            #[cfg(test)]
            fail_syncs: AtomicBool::new(false),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("fitz-storage-writer".into())
                .spawn(move || shared.group.run(|g| shared.write_open(g)))
                .map_err(|e| StorageError(format!("cannot start the writer: {e}")))?
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("fitz-storage-flush".into())
                .spawn(move || flush_loop(&shared, &stopped))
                .map_err(|e| StorageError(format!("cannot start the flusher: {e}")))?
        };
        tracing::info!(path = %path.display(), "local storage opened");
        Ok(Self {
            shared,
            flusher: Mutex::new(Some((stop, flusher))),
            writer: Mutex::new(Some(writer)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates every table and checks or writes the format marker.
fn init(db: &Database) -> Result<(), StorageError> {
    let tx = db.begin_write().map_err(fail)?;
    {
        for ks in KEYSPACES {
            tx.open_table(table(ks)).map_err(fail)?;
        }
        let mut meta = tx.open_table(table(Keyspace::Meta)).map_err(fail)?;
        let found = meta
            .get(FORMAT_KEY)
            .map_err(fail)?
            .map(|v| v.value().to_vec());
        match found {
            Some(f) if f == FORMAT => {}
            Some(f) => {
                return Err(StorageError(format!(
                    "unsupported storage format {:?} (this broker writes {:?})",
                    String::from_utf8_lossy(&f),
                    String::from_utf8_lossy(FORMAT)
                )));
            }
            None => {
                meta.insert(FORMAT_KEY, FORMAT).map_err(fail)?;
            }
        }
    }
    tx.commit().map_err(fail)
}

/// Applies `batch`'s ops, in order, inside `tx`.
fn apply(tx: &redb::WriteTransaction, batch: &Batch) -> Result<(), StorageError> {
    // Consecutive ops of one keyspace share the open table.
    let mut open: Option<(Keyspace, OpenTable<'_>)> = None;
    for op in &batch.ops {
        let ks = match op {
            Op::Put(ks, _, _) | Op::Delete(ks, _) => *ks,
        };
        if open.as_ref().is_none_or(|(cur, _)| *cur != ks) {
            open = Some((ks, tx.open_table(table(ks)).map_err(fail)?));
        }
        let Some((_, t)) = open.as_mut() else {
            continue;
        };
        match op {
            Op::Put(_, k, v) => {
                t.insert(&k[..], &v[..]).map_err(fail)?;
            }
            Op::Delete(_, k) => {
                t.remove(&k[..]).map_err(fail)?;
            }
        }
    }
    Ok(())
}

/// Runs `f`, which blocks on the disk, telling a multi-thread tokio runtime
/// first (`block_in_place`), so the tasks queued on this worker are not held
/// up behind it. Elsewhere (a current-thread runtime, no runtime) it just
/// runs `f`.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn flush_loop(shared: &Shared, stop: &mpsc::Receiver<()>) {
    // Ends when the sender is dropped (close) or sends.
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(BUFFERED_FLUSH_INTERVAL) {
        if !shared.dirty.swap(false, Ordering::AcqRel) {
            continue;
        }
        if let Err(e) = shared.group.commit(Shared::checkpoint()) {
            tracing::warn!(error = %e, "flushing buffered commits failed: storage is unusable");
            return;
        }
    }
}

impl Backend for LocalBackend {
    fn is_durable(&self) -> bool {
        true
    }

    fn writes(&self) -> u64 {
        self.shared.group.groups()
    }

    fn commit(&self, batch: Batch, durability: Durability) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let job = match self.shared.buffered_inline(Job { batch, durability }) {
            Ok(done) => return done,
            Err(job) => job,
        };
        // Waiting for a group (a Sync one's fsync takes milliseconds): let
        // the runtime move this worker's other tasks elsewhere meanwhile.
        // Without this, Buffered commits waiting behind a group held both
        // workers of a 2-thread runtime (64 concurrent writers: 3.9 k/s
        // Buffered vs 8.2 k/s Sync).
        blocking(|| self.shared.group.commit(job))
    }

    fn commit_then(&self, batch: Batch, durability: Durability, done: CommitDone) {
        if batch.is_empty() {
            return done(Ok(()));
        }
        let job = Job { batch, durability };
        // A lone Sync commit (writer idle, nothing queued) is written here,
        // as before group commit went asynchronous: no hand-off to the
        // writer thread and back on the serial path.
        let job = if durability == Durability::Sync && self.shared.group.is_idle() {
            match blocking(|| {
                self.shared
                    .group
                    .try_inline(job, |g| self.shared.write_open(g))
            }) {
                Ok(result) => return done(result),
                Err(job) => job,
            }
        } else {
            job
        };
        self.shared.group.submit(job, done);
    }

    fn defers(&self, durability: Durability) -> bool {
        // The case `commit_then` would write inline.
        durability == Durability::Sync && self.shared.group.is_idle()
    }

    fn commit_all_then(&self, commits: Vec<Pending>) {
        if commits.len() <= 1 {
            for p in commits {
                self.commit_then(p.batch, p.durability, p.done);
            }
            return;
        }
        // The batch's held commits: one group, written here when the writer
        // is still idle (one fsync for all of them, no hand-off), else
        // queued together for the writer's next group.
        let (jobs, dones): (Vec<Job>, Vec<CommitDone>) = commits
            .into_iter()
            .map(|p| {
                let job = Job {
                    batch: p.batch,
                    durability: p.durability,
                };
                (job, p.done)
            })
            .unzip();
        let written = blocking(|| {
            self.shared
                .group
                .try_inline_all(jobs, |g| self.shared.write_open(g))
        });
        match written {
            Ok(result) => {
                for done in dones {
                    done(result.clone());
                }
            }
            Err(jobs) => {
                for (job, done) in jobs.into_iter().zip(dones) {
                    self.shared.group.submit(job, done);
                }
            }
        }
    }

    fn load(&self, keyspace: Keyspace) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let guard = self.shared.db.read();
        let db = guard
            .as_ref()
            .ok_or_else(|| StorageError("storage is closed".into()))?;
        let tx = db.begin_read().map_err(fail)?;
        let t = tx.open_table(table(keyspace)).map_err(fail)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(fail)? {
            let (k, v) = item.map_err(fail)?;
            out.push((
                Bytes::copy_from_slice(k.value()),
                Bytes::copy_from_slice(v.value()),
            ));
        }
        Ok(out)
    }

    fn close(&self) {
        if let Some((stop, flusher)) = self.flusher.lock().take() {
            drop(stop);
            if flusher.join().is_err() {
                tracing::warn!("storage flusher panicked");
            }
        }
        // The writer answers what is queued, then stops; later commits
        // fail with "storage is closed".
        self.shared.group.close();
        if let Some(writer) = self.writer.lock().take()
            && writer.join().is_err()
        {
            tracing::warn!("storage writer panicked");
        }
        let db = self.shared.db.write().take();
        if let Some(db) = db {
            if self.shared.dirty.swap(false, Ordering::AcqRel)
                && self.shared.group.poisoned().is_none()
                && let Err(e) = self.shared.write(&db, &[Shared::checkpoint()])
            {
                tracing::warn!(error = %e, "flushing buffered commits at close failed");
            }
            drop(db);
            tracing::info!(path = %self.path.display(), "local storage closed");
        }
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fitz-local-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn put(ks: Keyspace, k: &str, v: &str) -> Op {
        Op::Put(
            ks,
            Bytes::copy_from_slice(k.as_bytes()),
            Bytes::copy_from_slice(v.as_bytes()),
        )
    }

    fn keys(pairs: &[(Bytes, Bytes)]) -> Vec<&[u8]> {
        pairs.iter().map(|(k, _)| &k[..]).collect()
    }

    #[test]
    fn sync_commits_run_on_either_runtime_flavor_and_outside_one() {
        let d = dir("flavors");
        let b = std::sync::Arc::new(LocalBackend::open(&d).unwrap());
        let commit = |b: &LocalBackend, k: &str| {
            b.commit(
                Batch {
                    ops: vec![put(Keyspace::Kv, k, "v")],
                },
                Durability::Sync,
            )
        };
        commit(&b, "outside").unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { commit(&b, "current-thread") })
            .unwrap();
        let shared = b.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
            .block_on(async move {
                // On a worker thread, as the engines call it.
                tokio::spawn(async move { commit(&shared, "multi-thread") })
                    .await
                    .unwrap()
            })
            .unwrap();
        assert_eq!(
            keys(&b.load(Keyspace::Kv).unwrap()),
            [&b"current-thread"[..], b"multi-thread", b"outside"]
        );
        b.close();
    }

    #[test]
    fn commits_survive_reopen_in_key_order_per_keyspace() {
        let d = dir("reopen");
        let b = LocalBackend::open(&d).unwrap();
        assert!(b.is_durable());
        b.commit(
            Batch {
                ops: vec![
                    put(Keyspace::Kv, "b", "2"),
                    put(Keyspace::Kv, "a", "1"),
                    put(Keyspace::Schedule, "s", "x"),
                    put(Keyspace::Kv, "c", "3"),
                    Op::Delete(Keyspace::Kv, Bytes::from_static(b"c")),
                ],
            },
            Durability::Sync,
        )
        .unwrap();
        b.commit(
            Batch {
                ops: vec![put(Keyspace::Kv, "d", "4")],
            },
            Durability::Buffered,
        )
        .unwrap();
        b.close();
        assert!(
            b.commit(
                Batch {
                    ops: vec![put(Keyspace::Kv, "z", "")]
                },
                Durability::Sync
            )
            .is_err()
        );
        drop(b);
        let b = LocalBackend::open(&d).unwrap();
        let kv = b.load(Keyspace::Kv).unwrap();
        assert_eq!(keys(&kv), [&b"a"[..], b"b", b"d"]);
        assert_eq!(&kv[0].1[..], b"1");
        assert_eq!(keys(&b.load(Keyspace::Schedule).unwrap()), [&b"s"[..]]);
        assert!(b.load(Keyspace::Queue).unwrap().is_empty());
        drop(b);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_second_open_of_the_same_path_is_refused_until_close() {
        let d = dir("lock");
        let a = LocalBackend::open(&d).unwrap();
        let e = LocalBackend::open(&d).err().unwrap();
        assert!(e.0.contains("in use"), "{e}");
        a.close();
        let b = LocalBackend::open(&d).unwrap();
        drop((a, b));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn buffered_commits_are_flushed_in_the_background() {
        let d = dir("flush");
        let b = LocalBackend::open(&d).unwrap();
        b.commit(
            Batch {
                ops: vec![put(Keyspace::Stream, "k", "v")],
            },
            Durability::Buffered,
        )
        .unwrap();
        assert!(b.shared.dirty.load(Ordering::Acquire));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while b.shared.dirty.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(b);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Sync commits from many threads at once.
    fn concurrent_sync_commits(b: &Arc<LocalBackend>, threads: usize, each: usize) -> Vec<bool> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..each)
                        .map(|i| {
                            b.commit(
                                Batch {
                                    ops: vec![put(Keyspace::Kv, &format!("t{t}-{i}"), "v")],
                                },
                                Durability::Sync,
                            )
                            .is_ok()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    }

    #[test]
    fn concurrent_sync_commits_share_fsyncs_and_all_survive() {
        let d = dir("group");
        let b = Arc::new(LocalBackend::open(&d).unwrap());
        let ok = concurrent_sync_commits(&b, 16, 8);
        assert!(ok.iter().all(|ok| *ok));
        let groups = b.shared.group.groups();
        assert!(groups < 128, "128 Sync commits took {groups} transactions");
        b.close();
        drop(b);
        let b = LocalBackend::open(&d).unwrap();
        assert_eq!(b.load(Keyspace::Kv).unwrap().len(), 128);
        drop(b);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Held Sync commits handed over together.
    fn held(
        n: usize,
        tag: &str,
        out: &std::sync::mpsc::Sender<Result<(), StorageError>>,
    ) -> Vec<Pending> {
        (0..n)
            .map(|i| {
                let out = out.clone();
                Pending {
                    batch: Batch {
                        ops: vec![put(Keyspace::Kv, &format!("{tag}-{i}"), "v")],
                    },
                    durability: Durability::Sync,
                    done: Box::new(move |r| out.send(r).unwrap()),
                }
            })
            .collect()
    }

    #[test]
    fn held_commits_handed_over_together_are_one_write_and_all_survive() {
        let d = dir("held");
        let b = LocalBackend::open(&d).unwrap();
        assert!(b.defers(Durability::Sync), "an idle writer: Sync is held");
        assert!(!b.defers(Durability::Buffered));
        let (tx, rx) = std::sync::mpsc::channel();
        let before = b.writes();
        b.commit_all_then(held(32, "h", &tx));
        let answers: Vec<_> = rx.try_iter().collect();
        assert_eq!(answers, vec![Ok(()); 32], "answered before returning");
        assert_eq!(b.writes() - before, 1);
        b.close();
        drop(b);
        let b = LocalBackend::open(&d).unwrap();
        assert_eq!(b.load(Keyspace::Kv).unwrap().len(), 32);
        drop(b);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn held_commits_all_fail_when_their_write_fails() {
        let d = dir("held-fails");
        let b = LocalBackend::open(&d).unwrap();
        b.shared.fail_syncs.store(true, Ordering::Release);
        let (tx, rx) = std::sync::mpsc::channel();
        b.commit_all_then(held(8, "f", &tx));
        let answers: Vec<_> = rx.try_iter().collect();
        assert_eq!(answers.len(), 8);
        assert!(answers.iter().all(Result::is_err), "{answers:?}");
        drop(b);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_fsync_fails_every_waiting_commit_and_every_later_one() {
        let d = dir("fsync-fails");
        let b = Arc::new(LocalBackend::open(&d).unwrap());
        concurrent_sync_commits(&b, 1, 1);
        b.shared.fail_syncs.store(true, Ordering::Release);
        let ok = concurrent_sync_commits(&b, 8, 4);
        assert!(ok.iter().all(|ok| !*ok), "no commit acknowledged: {ok:?}");
        // The fault is gone, but the pages it may have lost are unknown.
        b.shared.fail_syncs.store(false, Ordering::Release);
        let e = b
            .commit(
                Batch {
                    ops: vec![put(Keyspace::Kv, "later", "v")],
                },
                Durability::Sync,
            )
            .unwrap_err();
        assert!(e.0.contains("injected"), "{e}");
        b.close();
        drop(b);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn commit_then_answers_every_commit_once_after_its_write_and_all_survive() {
        let d = dir("commit-then");
        let b = Arc::new(LocalBackend::open(&d).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (b, tx) = (b.clone(), tx.clone());
                std::thread::spawn(move || {
                    for i in 0..16 {
                        let tx = tx.clone();
                        b.commit_then(
                            Batch {
                                ops: vec![put(Keyspace::Kv, &format!("t{t}-{i}"), "v")],
                            },
                            Durability::Sync,
                            Box::new(move |r| tx.send(r).unwrap()),
                        );
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        drop(tx);
        let answers: Vec<_> = rx.iter().collect();
        assert_eq!(answers.len(), 128);
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        b.shared.fail_syncs.store(true, Ordering::Release);
        let (tx, rx) = std::sync::mpsc::channel();
        b.commit_then(
            Batch {
                ops: vec![put(Keyspace::Kv, "failed", "v")],
            },
            Durability::Sync,
            Box::new(move |r| tx.send(r).unwrap()),
        );
        assert!(rx.recv().unwrap().is_err(), "acknowledged a failed fsync");
        b.close();
        drop(b);
        let b = LocalBackend::open(&d).unwrap();
        assert_eq!(b.load(Keyspace::Kv).unwrap().len(), 128);
        drop(b);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_foreign_format_is_refused() {
        let d = dir("format");
        {
            let b = LocalBackend::open(&d).unwrap();
            b.commit(
                Batch {
                    ops: vec![put(Keyspace::Meta, "format", "something-else")],
                },
                Durability::Sync,
            )
            .unwrap();
        }
        let e = LocalBackend::open(&d).err().unwrap();
        assert!(e.0.contains("unsupported storage format"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
