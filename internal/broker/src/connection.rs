//! One connection from accept to cleanup: the CONNECT handshake, the read
//! loop that decodes records and dispatches them, the writer task that
//! drains the session's outbound queue, and the cleanup every engine runs
//! when the session ends.
//!
//! Protocol violations close the connection (spec: "closing is correct here
//! and nowhere else"): no CONNECT in time, a record before CONNECT
//! (`unauthenticated: connect required`), a bad token (`connect failed:
//! <reason>`), a second CONNECT, a malformed CORRELATE, a repeated record
//! type in one frame, an unknown, reserved (201) or server-only type, an
//! oversized frame. On WebSocket the reason travels in the Close frame; TCP
//! just closes. No error record is ever sent for these.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use fitz_protocol::control::{self, ServerHello};
use fitz_protocol::record::{Labelled, LabelledRecords, Record, Side};
use fitz_protocol::{Capabilities, ClientMessage, Message, types};

use crate::io::{FrameReader, FrameWriter, ReadEvent};
use crate::session::{CloseReason, Reply, Session, Transport};
use crate::shared::Shared;

/// The capability bits every SERVER_HELLO advertises: the one place to
/// extend when a feature lands (RPC_CANCELLATION with the RPC engine; type
/// 304 is accepted exactly when that bit is in this set).
pub const CAPABILITIES: Capabilities = Capabilities::CORRELATION
    .with(Capabilities::SESSION_METADATA)
    .with(Capabilities::KV_SCAN_EXCLUSIVE)
    .with(Capabilities::RPC_CANCELLATION);

/// Close reason for a record other than CONNECT first.
pub const CONNECT_REQUIRED: CloseReason = CloseReason::new("unauthenticated: connect required");

/// Time the writer keeps trying to flush once the session is closing.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one accepted connection to the end.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut reader: FrameReader,
    mut writer: FrameWriter,
    transport: Transport,
    peer: Option<SocketAddr>,
) {
    let first = tokio::select! {
        () = shared.shutdown.cancelled() => {
            writer.close(&crate::session::SHUTDOWN).await;
            return;
        }
        r = tokio::time::timeout(shared.config.connect_timeout, reader.next()) => r,
    };
    let frame = match first {
        Err(_) => {
            tracing::debug!(?peer, "no CONNECT in time");
            writer.close(&CloseReason::new("connect timeout")).await;
            return;
        }
        Ok(ReadEvent::Closed) => return,
        Ok(ReadEvent::Violation(reason)) => {
            writer.close(&reason).await;
            return;
        }
        Ok(ReadEvent::Frame(f)) => f,
    };
    let (session, rest) = match handshake(&shared, frame, transport, peer) {
        Ok(ok) => ok,
        Err(reason) => {
            tracing::debug!(?peer, %reason, "connection refused");
            writer.close(&reason).await;
            return;
        }
    };
    tracing::debug!(
        session = session.id(),
        ?peer,
        ?transport,
        family = session.family(),
        "session opened"
    );
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    let writer_task = tokio::spawn(write_loop(session.clone(), writer.clone()));

    session.begin_inline();
    if let Err(reason) = handle_records(&shared, &session, rest) {
        session.close(reason);
    }
    end_batch(&shared, &session, &writer);
    // Frames handled since the last inline flush: the replies to frames
    // that arrived together go out in one write (at most INLINE_BATCH).
    let mut unflushed = 0usize;
    // Pinned once: a fresh cancellation future per frame registered and
    // removed a waiter under two mutexes every time (~17 % of the broker's
    // CPU in the notice fan-out profile).
    let mut closed = pin!(session.closed());
    let mut shutdown = pin!(shared.shutdown.cancelled());
    while !session.is_closed() {
        let event = if unflushed > 0 && reader.has_buffered_frame() {
            // A whole frame is already buffered: `next` returns it without
            // I/O. Closing is checked by the loop condition, shutdown by the
            // select below at least once per INLINE_BATCH frames.
            reader.next().await
        } else {
            tokio::select! {
                biased;
                () = &mut closed => break,
                () = &mut shutdown => {
                    session.close(crate::session::SHUTDOWN);
                    break;
                }
                e = reader.next() => e,
            }
        };
        match event {
            ReadEvent::Frame(frame) => {
                session.begin_inline();
                let records = LabelledRecords::new(frame, Side::Broker);
                if let Err(reason) = handle_records(&shared, &session, records) {
                    session.close(reason);
                }
                unflushed += 1;
                if unflushed >= INLINE_BATCH || !reader.has_buffered_frame() {
                    end_batch(&shared, &session, &writer);
                    unflushed = 0;
                }
            }
            ReadEvent::Closed => session.close("closed by peer"),
            ReadEvent::Violation(reason) => session.close(reason),
        }
    }
    drop(reader);
    // A batch cut short by a close still owes its held commits an outcome
    // (their resources stay locked until storage answers).
    commit_deferred(&shared, &session);
    shared.sessions.lock().remove(&session.id());
    shared.engines.session_closed(&session);
    let _ = writer_task.await;
    tracing::debug!(session = session.id(), "session closed");
}

/// Checks the first frame: CONNECT first, a valid token. On success the
/// session exists, SERVER_HELLO is queued alone in its own frame, and the
/// rest of the frame's records are returned for normal handling.
pub(crate) fn handshake(
    shared: &Arc<Shared>,
    frame: Bytes,
    transport: Transport,
    peer: Option<SocketAddr>,
) -> Result<(Session, LabelledRecords), CloseReason> {
    let mut records = LabelledRecords::new(frame, Side::Broker);
    let first = match records.next() {
        Some(Ok(l)) => l,
        Some(Err(e)) => return Err(format!("malformed frame: {e}").into()),
        None => return Err(CONNECT_REQUIRED),
    };
    if first.record.ty != types::CONNECT {
        return Err(CONNECT_REQUIRED);
    }
    let grant = shared
        .config
        .auth
        .authenticate(&first.record.payload, &shared.clock)
        .map_err(|reason| CloseReason::from(format!("connect failed: {reason}")))?;
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed) + 1;
    let session = Session::new(
        id,
        grant,
        transport,
        peer,
        shared.config.outbound,
        shared.stats.clone(),
    );
    shared.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
    let hello = ServerHello {
        version: control::PROTOCOL_VERSION,
        capabilities: CAPABILITIES,
    };
    // A hello always fits a record.
    let _ = session.send_frame(None, |b| hello.encode_record(b));
    shared.sessions.lock().insert(id, session.clone());
    Ok((session, records))
}

/// Frames read from one stream buffer whose replies share one inline write.
const INLINE_BATCH: usize = 64;

/// Handles every record of one frame in order.
pub(crate) fn handle_records(
    shared: &Shared,
    session: &Session,
    records: LabelledRecords,
) -> Result<(), CloseReason> {
    // The whole frame is checked first: a malformed frame (a bad label, a
    // repeated record type) is rejected as a unit, none of its records run.
    // Each record is parsed once: a frame of one (labelled) record — nearly
    // every frame — runs as soon as the parser has seen its end; longer
    // frames are parsed whole into a list first. (Parsing a frame a second
    // time to check it was ~16 % of the pipelined KV profile in `Bytes`
    // reference counts.)
    let malformed = |e| CloseReason::from(format!("malformed frame: {e}"));
    let mut records = records;
    let first = match records.next() {
        None => return Ok(()),
        Some(item) => item.map_err(malformed)?,
    };
    let Some(second) = records.next() else {
        return handle_record(shared, session, first.correlation, first.record);
    };
    let mut items = vec![first, second.map_err(malformed)?];
    for item in records {
        items.push(item.map_err(malformed)?);
    }
    for Labelled {
        correlation,
        record,
    } in items
    {
        handle_record(shared, session, correlation, record)?;
        if session.is_closed() {
            break;
        }
    }
    Ok(())
}

fn handle_record(
    shared: &Shared,
    session: &Session,
    correlation: Option<u64>,
    Record { ty, payload }: Record,
) -> Result<(), CloseReason> {
    match ty {
        types::CONNECT => return Err("duplicate CONNECT".into()),
        types::SESSION_METADATA => {
            match control::SessionMetadata::decode(payload)
                .ok()
                .and_then(|m| control::normalize_service_name(&m.service_name).map(str::to_owned))
            {
                Some(name) => session.set_service_name(name),
                None => {
                    tracing::debug!(session = session.id(), "ignoring invalid SESSION_METADATA")
                }
            }
            return Ok(());
        }
        _ => {}
    }
    if !ClientMessage::accepts(ty) {
        return Err(match types::info(ty) {
            Some(info) => format!("message type {ty} ({}) is server-to-client only", info.name),
            None if ty == types::QUEUE_ENQUEUE_BATCH_RESERVED => {
                format!("message type {ty} is reserved")
            }
            None => format!("unknown message type {ty}"),
        }
        .into());
    }
    if ty == types::RPC_CANCEL && !CAPABILITIES.contains(Capabilities::RPC_CANCELLATION) {
        return Err("message type 304 (RPC_CANCEL) needs CAP_RPC_CANCELLATION".into());
    }
    let reply = Reply::new(session.clone(), ty, correlation);
    match ClientMessage::decode(ty, payload.clone()) {
        Ok(message) => shared.engines.dispatch(session, message, reply),
        Err(error) => shared.engines.malformed(session, &payload, &error, reply),
    }
}

/// The end of a reader's batch of frames: the commits its frames held back
/// go to storage together ([`Session::defer_commit`]; their replies join
/// this flush when written at once), then the replies are flushed.
fn end_batch(shared: &Shared, session: &Session, writer: &SharedWriter) {
    commit_deferred(shared, session);
    flush_inline(session, writer);
}

/// Hands the commits `session`'s current batch held back to storage.
pub(crate) fn commit_deferred(shared: &Shared, session: &Session) {
    let held = session.take_deferred();
    if !held.is_empty() {
        shared.storage.commit_all_then(held);
    }
}

/// The reader's flush after a frame. On a stream (TCP, or one given to
/// `Broker::serve_stream`) it writes what is queued with non-blocking writes
/// only: whatever the socket does not take at once goes
/// back to the front of the queue for the writer task, so the reader never
/// waits on its own replies and a peer that stops reading is caught by the
/// reply bound. On WebSocket the frames are fed to the sink and flushed,
/// each step polled once without waiting (`FrameWriter::try_write_ws`):
/// frames the sink does not accept go back to the front of the queue, and
/// a flush the socket did not finish is left to the writer task (woken),
/// whose first step on waking is to flush the sink. tungstenite's write
/// buffer is bounded (`max_write_buffer_size`): a full one makes the sink
/// not ready, so frames stay in the session's bounded queue. When the
/// writer task holds the transport, it is woken instead.
fn flush_inline(session: &Session, writer: &SharedWriter) {
    if !session.end_inline() {
        return;
    }
    let Ok(mut w) = writer.try_lock() else {
        session.wake_writer();
        return;
    };
    if let FrameWriter::Ws(_) = &*w {
        let (batch, _) = session.take_batch();
        match w.try_write_ws(&batch) {
            Ok((fed, flushed)) => {
                if fed < batch.len() {
                    // Still under the writer lock: nothing can overtake it.
                    session.requeue_front(batch.slice(fed..));
                }
                if fed < batch.len() || !flushed {
                    drop(w);
                    session.wake_writer();
                }
            }
            Err(_) => {
                drop(w);
                session.close("write failed");
            }
        }
        return;
    }
    let FrameWriter::Stream(out) = &mut *w else {
        return;
    };
    let (batch, _) = session.take_batch();
    let mut written = 0;
    while written < batch.len() {
        match out.try_write(&batch[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => {
                drop(w);
                session.close("write failed");
                return;
            }
        }
    }
    if written < batch.len() {
        // Still under the writer lock: nothing can overtake the remainder.
        session.requeue_front(batch.slice(written..));
        drop(w);
        session.wake_writer();
    }
}

/// The transport's write half, shared by the writer task and the reader's
/// inline flush. An async mutex: held across the write, and batches are
/// taken only while holding it, so they go out in order.
type SharedWriter = Arc<tokio::sync::Mutex<FrameWriter>>;

/// Writes one batch; once the session is closing the write gets at most
/// [`CLOSE_FLUSH_TIMEOUT`] more. False when the transport failed.
async fn write_batch(session: &Session, writer: &mut FrameWriter, batch: Bytes) -> bool {
    let mut write = pin!(writer.write_batch(batch));
    tokio::select! {
        r = &mut write => r.is_ok(),
        () = session.closed() => {
            matches!(tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, write).await, Ok(Ok(())))
        }
    }
}

/// Flushes below the frame layer (see [`FrameWriter::flush`]), bounded in
/// time like [`write_batch`] once the session is closing.
async fn write_flush(session: &Session, writer: &mut FrameWriter) -> bool {
    let mut flush = pin!(writer.flush());
    tokio::select! {
        r = &mut flush => r.is_ok(),
        () = session.closed() => {
            matches!(tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, flush).await, Ok(Ok(())))
        }
    }
}

/// Drains the session's outbound queue into the transport (see
/// [`crate::session`] for the queue's rules), then closes the transport.
async fn write_loop(session: Session, writer: SharedWriter) {
    loop {
        let mut w = writer.lock().await;
        let (batch, close) = session.take_batch();
        if !batch.is_empty() {
            if !write_batch(&session, &mut w, batch).await {
                session.close("write failed");
                let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, w.close(&"write failed".into()))
                    .await;
                return;
            }
            continue;
        }
        if let Some(reason) = close {
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, w.close(&reason)).await;
            return;
        }
        // An inline WebSocket write may have left frames in the sink's
        // buffer (the socket was full): push them out before sleeping. The
        // quiet flush first: with nothing left it also unregisters this
        // task's waker from the sink, which would wake it on every frame
        // the peer sends (`FrameWriter::flush_quietly`).
        if !w.flush_quietly() {
            if !write_flush(&session, &mut w).await {
                session.close("write failed");
                return;
            }
            w.flush_quietly();
        }
        drop(w);
        session.writer_wait().await;
    }
}
