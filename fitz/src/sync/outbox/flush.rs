//! The flush side of the outbox: one task per lane takes its head entry,
//! attempts it (KV: the marker recipe; stream: the expected-offset check)
//! until it is applied or fails for good, settles it, and moves on.

use super::*;
use crate::sync::QueueEnvelope;

/// How one flush attempt ended.
enum Attempt {
    /// Applied now or before: dequeue.
    Applied,
    /// Try again after a delay.
    Retry(String),
    /// Never going to work: dead letter.
    Permanent(String, Option<u32>),
}

/// The tx id in a stream record's metadata, if it has one.
fn record_tx(metadata: Option<&Bytes>) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(metadata?).ok()?;
    v.get("sync_tx")?.as_str().map(str::to_owned)
}

/// [`classify`] for appends: an offset conflict means another batch reached
/// O first (ours, or another writer's): the next attempt reads O and tells.
/// An append session already open on the stream (another writer's, or an
/// abandoned one of ours that ends with its connection) is a wait, like a
/// locked KV resource, never a reason to dead-letter.
fn classify_append(e: &Error) -> Attempt {
    if matches!(
        e.code(),
        Some(crate::codes::STREAM_CONCURRENCY_CONFLICT | crate::codes::STREAM_SESSION_ACTIVE)
    ) {
        Attempt::Retry(e.to_string())
    } else {
        classify(e)
    }
}

fn classify(e: &Error) -> Attempt {
    use crate::ErrorKind as K;
    let transient = match e.kind() {
        // The session, not the entry, failed: a stale handle is a lost
        // session; a closed client ends the lane (its loop sees `Closed`)
        // with the entry kept for the next open.
        K::Connection
        | K::Timeout
        | K::Backpressure
        | K::Stale
        | K::Cancelled
        | K::Closed
        | K::Auth
        | K::Protocol => true,
        _ => e.is_retryable(),
    };
    // A maybe-applied failure is retried too: the marker tells on the next
    // attempt whether it was.
    if transient || e.maybe_applied() {
        Attempt::Retry(e.to_string())
    } else {
        Attempt::Permanent(e.to_string(), e.code())
    }
}

impl Inner {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the lane's flush task unless it runs.
    pub(super) fn start_lane(self: &Arc<Self>, lane: &str) {
        let mut st = self.lock();
        let Some(state) = st.lanes.get_mut(lane) else {
            return;
        };
        if state.running || state.pending == 0 {
            return;
        }
        state.running = true;
        let inner = self.clone();
        let lane = lane.to_owned();
        // Dropping the last `Outbox` cancels `stop`, which ends the task at
        // its next stop point (see `run_lane`).
        let task = tokio::spawn(run_lane(inner, lane));
        drop(st);
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Waits until the client is authenticated. False when it never will be
    /// (closed).
    async fn authenticated(&self) -> bool {
        let mut rx = self.client.watch_state();
        let r = rx
            .wait_for(|s| matches!(s, State::Authenticated | State::Closed))
            .await
            .map(|s| *s == State::Authenticated);
        r.unwrap_or(false)
    }

    async fn head(&self, lane: &str) -> Result<Option<Entry>, SyncError> {
        let prefix = lane_prefix(lane);
        let first = blocking(&self.store, move |s| {
            Ok(s.scan_prefix(Table::Outbox, &prefix)?.into_iter().next())
        })
        .await?;
        first.map(|(_, v)| decode::<Entry>(&v)).transpose()
    }

    /// This entry's tx id, as stream records carry it.
    fn tx_id(&self, seq: u64) -> String {
        format!("{}/{seq}", self.client_id)
    }

    /// Stores `entry` again (its expected offset changed).
    async fn rewrite(&self, entry: &Entry) -> Result<(), SyncError> {
        let ops = vec![StoreOp::Put {
            table: Table::Outbox,
            key: entry_key(&entry.lane, entry.seq),
            value: encode(entry)?,
        }];
        blocking(&self.store, move |s| s.apply(&ops)).await
    }

    /// One attempt at appending a stream entry's batch at its expected
    /// offset O: if a record is at O already, it is ours (applied before) or
    /// another writer's (fix a new O); otherwise BEGIN at O, append, commit.
    /// The broker refuses a batch that would not start at O, so the batch
    /// is either at O or nowhere.
    async fn attempt_append(&self, entry: &mut Entry, records: &[StreamAppend]) -> Attempt {
        let streams = self.client.stream();
        let at = match entry.expected {
            Some(at) => at,
            None => {
                let next = match streams.metadata(&entry.lane).await {
                    Ok(m) => m.next_offset(),
                    Err(e) => return classify(&e),
                };
                entry.expected = Some(next);
                if let Err(e) = self.rewrite(entry).await {
                    entry.expected = None;
                    return Attempt::Retry(e.to_string());
                }
                next
            }
        };
        let tx_id = self.tx_id(entry.seq);
        let options = crate::stream::ReadOptions::new().limit(1);
        let page = match streams.read_page(&entry.lane, at, &options).await {
            Ok(p) => p,
            Err(e) => return classify(&e),
        };
        if let Some(rec) = page.records().find(|r| r.offset() == at) {
            if self.check_marker && record_tx(rec.metadata()).as_deref() == Some(tx_id.as_str()) {
                return Attempt::Applied;
            }
            // Another writer has O: fix a new one on the next attempt.
            entry.expected = None;
            if let Err(e) = self.rewrite(entry).await {
                return Attempt::Retry(e.to_string());
            }
            return Attempt::Retry(format!("offset {at} was taken by another writer"));
        }
        if !page.is_empty() {
            // Something is past O but O cannot be read (retention dropped
            // it, or it is withheld from this token): whether the batch
            // landed cannot be told, so it is neither sent again nor
            // dropped silently.
            return Attempt::Permanent(
                format!(
                    "offset {at} of {} is no longer readable (retention or permissions): \
                     cannot tell whether this batch was applied",
                    entry.lane
                ),
                None,
            );
        }
        let mut session = match streams.begin_at(&entry.lane, at).await {
            Ok(s) => s,
            Err(e) => return classify_append(&e),
        };
        for r in records {
            let meta = serde_json::json!({ "sync_tx": tx_id, "aspect": r.aspect });
            let mut options = crate::stream::AppendOptions::new().metadata(meta.to_string());
            if let Some(a) = &r.aspect {
                options = options.discriminator(a.clone());
            }
            if let Err(e) = session
                .append_with(Bytes::from(r.body.clone()), options)
                .await
            {
                return classify_append(&e);
            }
        }
        match session.commit(Durability::Sync).await {
            Ok(_) => Attempt::Applied,
            Err(e) => classify_append(&e),
        }
    }

    /// One attempt at a schedule or queue entry: one request, whose
    /// outcome is the entry's. Schedule create/cancel are idempotent, so a
    /// retry after a lost answer is harmless; an enqueue retried after a
    /// lost answer may store the message twice (at least once; the
    /// envelope's tx id lets consumers tell).
    async fn attempt_request(&self, entry: &Entry) -> Attempt {
        let lane = entry.lane.as_str();
        let result = match &entry.mutation {
            Mutation::ScheduleCreate {
                cron,
                mode,
                payload,
            } => {
                let payload = Bytes::from(payload.clone());
                self.client
                    .schedule()
                    .create(lane, cron, *mode, payload)
                    .await
            }
            Mutation::ScheduleCancel => self.client.schedule().cancel(lane).await,
            Mutation::Enqueue { body, envelope } => {
                let body = if *envelope {
                    // Tx ids are `<hex>/<digits>`: never a newline.
                    match QueueEnvelope::wrap(&self.tx_id(entry.seq), body) {
                        Some(b) => b,
                        None => {
                            return Attempt::Permanent(
                                "tx id not fit for an envelope".into(),
                                None,
                            );
                        }
                    }
                } else {
                    Bytes::from(body.clone())
                };
                self.client.queue().enqueue(lane, body).await.map(drop)
            }
            // Not request kinds; `attempt` routes them elsewhere.
            Mutation::Writes(_) | Mutation::Named { .. } | Mutation::Append(_) => {
                return Attempt::Retry("KV or stream entry on the request path".into());
            }
        };
        match result {
            Ok(()) => Attempt::Applied,
            Err(e) => classify(&e),
        }
    }

    /// One attempt at applying `entry`.
    async fn attempt(&self, entry: &mut Entry) -> Attempt {
        match &entry.mutation {
            Mutation::Append(records) => {
                let records = records.clone();
                return self.attempt_append(entry, &records).await;
            }
            Mutation::ScheduleCreate { .. }
            | Mutation::ScheduleCancel
            | Mutation::Enqueue { .. } => {
                return self.attempt_request(entry).await;
            }
            Mutation::Writes(_) | Mutation::Named { .. } => {}
        }
        let mut tx = match self.client.kv().begin(&entry.lane, TxMode::ReadWrite).await {
            Ok(tx) => tx,
            Err(e) => return classify(&e),
        };
        if self.check_marker {
            match tx.get(&self.marker).await {
                Ok(Some(v)) => {
                    let applied = std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .is_some_and(|m| m >= entry.seq);
                    if applied {
                        // Dropping sends the rollback.
                        drop(tx);
                        return Attempt::Applied;
                    }
                }
                Ok(None) => {}
                Err(e) => return classify(&e),
            }
        }
        let applied = match &entry.mutation {
            Mutation::Writes(writes) => apply_writes(&mut tx, writes).await,
            Mutation::Named { name, args } => match self.handlers.get(name) {
                Some(h) => match h(&mut tx, Bytes::from(args.clone())).await {
                    Ok(()) => Ok(()),
                    Err(MutationError::Fitz(e)) => Err(classify(&e)),
                    Err(MutationError::Permanent(m)) => Err(Attempt::Permanent(m, None)),
                },
                None => Err(Attempt::Permanent(
                    format!("no handler is registered for mutation {name:?}"),
                    None,
                )),
            },
            // Handled above; never reached.
            Mutation::Append(_)
            | Mutation::ScheduleCreate { .. }
            | Mutation::ScheduleCancel
            | Mutation::Enqueue { .. } => Err(Attempt::Retry("not a KV entry".into())),
        };
        if let Err(a) = applied {
            return a;
        }
        if let Err(e) = tx.put(&self.marker, entry.seq.to_string()).await {
            return classify(&e);
        }
        match tx.commit(Durability::Sync).await {
            Ok(()) => Attempt::Applied,
            Err(e) => classify(&e),
        }
    }

    /// Removes `entry` from the outbox (applied), or moves it to the dead
    /// letter, in one local transaction.
    async fn settle(&self, entry: &Entry, dead: Option<DeadLetter>) -> Result<(), SyncError> {
        let mut ops = vec![StoreOp::Delete {
            table: Table::Outbox,
            key: entry_key(&entry.lane, entry.seq),
        }];
        if let Some(d) = &dead {
            ops.push(StoreOp::Put {
                table: Table::DeadLetter,
                key: d.seq.to_be_bytes().to_vec(),
                value: encode(d)?,
            });
        }
        blocking(&self.store, move |s| s.apply(&ops)).await
    }

    fn set_error(&self, lane: &str, error: Option<String>) {
        if let Some(l) = self.lock().lanes.get_mut(lane) {
            l.last_error = error;
        }
    }

    /// Waits `delay`, or less when [`Outbox::sync_now`] is called or the
    /// outbox stops.
    async fn pause(&self, delay: Duration) {
        let woken = self.wake.notified();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = woken => {}
            () = self.stop.cancelled() => {}
        }
    }
}

async fn apply_writes(tx: &mut Transaction, writes: &[KvWrite]) -> Result<(), Attempt> {
    for w in writes {
        let r = match w {
            KvWrite::Put { key, value } => tx.put(key, Bytes::from(value.clone())).await,
            KvWrite::Insert { key, value } => tx.insert(key, Bytes::from(value.clone())).await,
            KvWrite::Delete { key } => tx.delete(key).await,
            // Split around the reserved prefix by the transaction itself.
            KvWrite::DeleteRange { start, end } => tx.delete_range(start..end).await,
        };
        r.map_err(|e| classify(&e))?;
    }
    Ok(())
}

/// A full-jitter pause of at most `ceiling` (the reconnect's own helper).
fn jittered(ceiling: Duration) -> Duration {
    full_jitter(ceiling, &mut rand::rng())
}

/// The flush loop of one lane: head entry, attempt until applied or
/// permanent, settle, next; ends when the lane is empty.
///
/// Stop points (where a cancelled `stop` ends the task): waiting for the
/// connection, waiting out a retry delay, and between an attempt and the
/// local dequeue (an applied entry then stays queued; the next open finds
/// its marker). An attempt itself is never cut short: a BEGIN abandoned
/// mid-flight could leave the resource locked on a session that lives on.
async fn run_lane(inner: Arc<Inner>, lane: String) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let ready = tokio::select! {
            () = inner.stop.cancelled() => false,
            ok = inner.authenticated() => ok,
        };
        if !ready {
            if let Some(l) = inner.lock().lanes.get_mut(&lane) {
                l.running = false;
            }
            return;
        }
        let mut entry = match inner.head(&lane).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                // Pushes count an entry only after it is stored, so the
                // lane is empty: end (and forget a miscount, if any).
                let stale = match inner.lock().lanes.get_mut(&lane) {
                    Some(l) => {
                        l.running = false;
                        std::mem::take(&mut l.pending)
                    }
                    None => 0,
                };
                inner.pending.send_modify(|n| *n = n.saturating_sub(stale));
                return;
            }
            Err(e) => {
                inner.set_error(&lane, Some(e.to_string()));
                inner.pause(jittered(BACKOFF_MAX)).await;
                continue;
            }
        };
        let outcome = inner.attempt(&mut entry).await;
        if inner.stop.is_cancelled() {
            return;
        }
        let (event, dead) = match outcome {
            Attempt::Retry(msg) => {
                tracing::debug!(lane = %lane, seq = entry.seq, error = %msg, "sync: retrying");
                inner.set_error(&lane, Some(msg));
                inner.pause(jittered(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Attempt::Applied => (
                SyncEvent::Synced {
                    lane: lane.clone(),
                    seq: entry.seq,
                },
                None,
            ),
            Attempt::Permanent(error, code) => (
                SyncEvent::Failed {
                    lane: lane.clone(),
                    seq: entry.seq,
                    error: error.clone(),
                    code,
                },
                Some(DeadLetter {
                    seq: entry.seq,
                    lane: lane.clone(),
                    mutation: entry.mutation.clone(),
                    error,
                    code,
                }),
            ),
        };
        backoff = BACKOFF_MIN;
        if let Err(e) = inner.settle(&entry, dead.clone()).await {
            // Still in the outbox: the next attempt finds the marker (or
            // fails permanently again).
            inner.set_error(&lane, Some(e.to_string()));
            inner.pause(jittered(BACKOFF_MAX)).await;
            continue;
        }
        {
            let mut st = inner.lock();
            if dead.is_some() {
                st.dead += 1;
            }
            if let Some(l) = st.lanes.get_mut(&lane) {
                l.pending = l.pending.saturating_sub(1);
                l.last_error = dead.as_ref().map(|d| d.error.clone());
            }
        }
        inner.pending.send_modify(|n| *n = n.saturating_sub(1));
        let _ = inner.events.send(event);
        let done = {
            let mut st = inner.lock();
            match st.lanes.get_mut(&lane) {
                Some(l) if l.pending == 0 => {
                    l.running = false;
                    if l.last_error.is_none() {
                        st.lanes.remove(&lane);
                    }
                    true
                }
                Some(_) => false,
                None => true,
            }
        };
        if done {
            return;
        }
    }
}
