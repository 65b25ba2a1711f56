//! The connection actor: one task per client.
//!
//! It moves between three modes:
//!
//! * **idle** (`Disconnected`): waits for `connect()`; requests fail at once;
//! * **pending** (connecting, handshaking, backing off): requests are filed
//!   and wait (their deadlines still run) for the session to become ready;
//! * **session**: reads frames, writes batches, routes replies and
//!   notifications, restores registrations after a reconnect and only then
//!   reports `Authenticated` and lets queued work out.
//!
//! In every mode it keeps draining its command channels, so callers are
//! answered (or time out) even while the broker is unreachable, and `close()`
//! is honoured at once, including in the middle of a backoff.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use fitz_protocol::control::{self, ServerHello};
use fitz_protocol::frame::encode_frame_with;
use fitz_protocol::record::{Labelled, LabelledRecords, Side};
use fitz_protocol::{Capabilities, Message, WireError, types};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};

use super::command::{Command, Control, reject};
use super::handshake::{Handshake, Refusals, Verdict, handshake};
use super::registry::{Registry, Wire};
use super::requests::{Book, Finished, Internal, Session};
use super::{DebugSnapshot, Shared};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, State};
use crate::transport::{Inbound, Transport};

/// Stop admitting new frames while this much output is unwritten: the
/// broker is not reading, and memory must stay bounded.
const HIGH_WATER: usize = 256 * 1024;

/// Commands taken per wake-up.
const BATCH: usize = 128;

/// Output coalescing (see [`Actor::serve`]): frames encoded while more
/// commands or inbound frames are ready share one write, up to this many
/// bytes; past it they are written at once.
const WRITE_CAP: usize = 64 * 1024;

/// Output coalescing: at most this many ready events (command batches,
/// inbound reads, control messages) are handled before encoded output is
/// written, however busy both sides stay.
const COALESCE_ROUNDS: u32 = 16;

/// How long `close()` waits for the goodbye (flush, Close frame / FIN).
const GOODBYE: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) async fn run(
    shared: Arc<Shared>,
    state: watch::Sender<State>,
    commands: mpsc::Receiver<Command>,
    control: mpsc::Receiver<Control>,
) {
    let mut actor = Actor {
        shared,
        state,
        commands,
        control,
        book: Book::default(),
        registry: Registry::default(),
        finished: Vec::new(),
        connect_waiters: Vec::new(),
        restoring: 0,
        restored: 0,
        shut_down: false,
    };
    actor.idle().await;
}

/// How an attempt or a session ended.
enum End {
    /// The client is closing (or closed for good).
    Closed,
    /// Give up for now: back to idle.
    Idle,
}

enum Mode<'a> {
    Idle,
    Pending,
    Session {
        session: Session,
        ready: bool,
        transport: &'a mut Transport,
    },
}

struct Actor {
    shared: Arc<Shared>,
    state: watch::Sender<State>,
    commands: mpsc::Receiver<Command>,
    control: mpsc::Receiver<Control>,
    book: Book,
    registry: Registry,
    /// Internal requests that finished; drained by [`Actor::settle`].
    finished: Vec<Finished>,
    /// `connect()` callers waiting for the current attempt.
    connect_waiters: Vec<oneshot::Sender<Result<()>>>,
    /// Restores outstanding on the current session; it becomes ready at 0.
    restoring: usize,
    /// Restores that succeeded on the current session.
    restored: usize,
    shut_down: bool,
}

impl Actor {
    fn set_state(&self, s: State) {
        crate::telemetry::state(s);
        self.state.send_replace(s);
    }

    // ----- idle -----

    async fn idle(&mut self) {
        let close = self.shared.close.clone();
        loop {
            let cmd = tokio::select! {
                _ = close.cancelled() => break,
                cmd = self.commands.recv() => cmd,
                Some(ctl) = self.control.recv() => {
                    self.on_control(ctl, &mut Mode::Idle);
                    continue;
                }
            };
            match cmd {
                None => break, // every handle is gone
                Some(Command::Connect(reply)) => {
                    self.connect_waiters.push(reply);
                    if let End::Closed = self.connect_loop(false).await {
                        break;
                    }
                }
                Some(cmd) => self.on_command(cmd, &mut Mode::Idle),
            }
        }
        self.shutdown(None, Error::closed()).await;
    }

    /// Connects, serves, and reconnects until told to stop.
    async fn connect_loop(&mut self, mut reconnecting: bool) -> End {
        let policy = self.shared.config.reconnect;
        let mut attempt: u32 = 0;
        let mut refusals = Refusals::default();
        loop {
            let mut delay = None;
            match self.attempt(refusals.token.clone()).await {
                Err(None) => return End::Closed,
                Ok((mut transport, hello)) => {
                    attempt = 0;
                    refusals = Refusals::default();
                    match self.serve(&mut transport, hello, reconnecting).await {
                        None => {
                            self.shutdown(Some(&mut transport), Error::closed()).await;
                            return End::Closed;
                        }
                        Some(lost) => {
                            tracing::warn!(error = %lost, "fitz session lost");
                            self.shared.emit(Event::Disconnected { reason: lost });
                        }
                    }
                    reconnecting = true;
                    if !policy.enabled {
                        return self
                            .give_up(Error::connection("connection lost; reconnect is disabled"));
                    }
                }
                Err(Some(failed)) => match failed.verdict {
                    Verdict::Network => {
                        tracing::debug!(error = %failed.error, "fitz connection attempt failed");
                        // The refused token stays refused.
                        refusals.streak = 0;
                        if !reconnecting || !policy.enabled {
                            return self.give_up(failed.error);
                        }
                    }
                    verdict => {
                        // Possibly the token: retried with a fresh one from
                        // the provider (a first `connect()` too), up to the
                        // configured number of handshakes in a row.
                        refusals.streak += 1;
                        if verdict == Verdict::Refused {
                            refusals.token = failed.token;
                        }
                        let limit = self.shared.config.auth_attempts;
                        if verdict == Verdict::RefusedAgain || refusals.streak >= limit {
                            let error = Error::auth(format!(
                                "authentication rejected after {} handshake(s) in a row: {}",
                                refusals.streak,
                                failed.error.message()
                            ));
                            tracing::warn!(error = %error, "fitz authentication rejected");
                            self.shared.emit(Event::AuthRejected {
                                error: error.clone(),
                            });
                            self.shutdown(None, error).await;
                            return End::Closed;
                        }
                        tracing::warn!(
                            error = %failed.error,
                            streak = refusals.streak,
                            limit,
                            "fitz handshake closed, possibly a token refusal: retrying with a fresh token"
                        );
                        if verdict == Verdict::Refused {
                            // A refreshed token may be accepted at once.
                            delay = Some(std::time::Duration::ZERO);
                        }
                    }
                },
            }
            attempt += 1;
            if policy.exhausted(attempt) {
                return self.give_up(Error::connection("reconnect attempts exhausted"));
            }
            let delay = delay.unwrap_or_else(|| policy.delay(attempt));
            if reconnecting {
                self.set_state(State::Reconnecting);
                self.shared
                    .emit(Event::ReconnectScheduled { attempt, delay });
            }
            if !self.backoff(delay).await {
                return End::Closed;
            }
        }
    }

    /// Back to idle: waiting work fails, registrations stay for a later
    /// `connect()`.
    fn give_up(&mut self, error: Error) -> End {
        self.set_state(State::Disconnected);
        let generation = self.shared.generation();
        let err = error.clone();
        self.book.fail_session(
            generation,
            move |_| err.clone().applied_if(false),
            &mut self.finished,
        );
        self.settle(&mut Mode::Idle);
        for w in self.connect_waiters.drain(..) {
            let _ = w.send(Err(error.clone()));
        }
        End::Idle
    }

    async fn backoff(&mut self, delay: std::time::Duration) -> bool {
        let close = self.shared.close.clone();
        let mut wake = pin!(tokio::time::sleep(delay));
        loop {
            let deadline = self.book.next_deadline();
            tokio::select! {
                () = &mut wake => return true,
                _ = close.cancelled() => {
                    self.shutdown(None, Error::closed()).await;
                    return false;
                }
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd, &mut Mode::Pending),
                    None => {
                        self.shutdown(None, Error::closed()).await;
                        return false;
                    }
                },
                Some(ctl) = self.control.recv() => self.on_control(ctl, &mut Mode::Pending),
                () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    self.book.expire(Instant::now(), None, &mut bytes::BytesMut::new(), &mut self.finished);
                    self.settle(&mut Mode::Pending);
                }
            }
        }
    }

    /// One connection attempt, bounded by the connect timeout, never sending
    /// `refused` (a token the broker refused). `Err(None)`: closing.
    async fn attempt(
        &mut self,
        refused: Option<Bytes>,
    ) -> std::result::Result<(Transport, ServerHello), Option<Handshake>> {
        self.set_state(State::Connecting);
        let deadline = Instant::now() + self.shared.config.connect_timeout;
        let close = self.shared.close.clone();
        let mut handshake = pin!(handshake(
            self.shared.clone(),
            self.state.clone(),
            deadline,
            refused
        ));
        loop {
            let book_deadline = self.book.next_deadline();
            tokio::select! {
                r = &mut handshake => return r.map_err(Some),
                _ = close.cancelled() => {
                    self.shutdown(None, Error::closed()).await;
                    return Err(None);
                }
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd, &mut Mode::Pending),
                    None => {
                        self.shutdown(None, Error::closed()).await;
                        return Err(None);
                    }
                },
                Some(ctl) = self.control.recv() => self.on_control(ctl, &mut Mode::Pending),
                () = sleep_until(book_deadline.unwrap_or_else(far_future)), if book_deadline.is_some() => {
                    self.book.expire(Instant::now(), None, &mut bytes::BytesMut::new(), &mut self.finished);
                    self.settle(&mut Mode::Pending);
                }
            }
        }
    }

    // ----- session -----

    /// Serves one session. Returns why it ended: `Some(reason)` when the
    /// connection was lost, `None` when the client is closing.
    async fn serve(
        &mut self,
        transport: &mut Transport,
        hello: ServerHello,
        reconnected: bool,
    ) -> Option<Error> {
        let caps = hello.capabilities;
        let session = Session {
            correlated: caps.contains(Capabilities::CORRELATION),
            generation: self.shared.generation(),
            max_frame: transport.max_frame(),
        };
        self.shared.set_capabilities(Some((hello.version, caps)));
        let mut metadata_sent = self.send_metadata(transport, caps, false);

        // Pinned once: re-creating it every iteration would re-register a
        // waiter (and take the token's lock) on the hot path.
        let close = self.shared.close.clone();
        let mut closing = pin!(close.cancelled());
        let (ping_interval, dead_after) = (
            self.shared.config.ping_interval,
            self.shared.config.dead_peer_timeout,
        );
        let websocket = transport.is_websocket();

        let mut mode = Mode::Session {
            session,
            ready: false,
            transport,
        };
        // Restore before anything else may use the session (pipelined: every
        // SUBSCRIBE is written now, the answers are collected as they come).
        self.restored = 0;
        self.restoring = {
            let mut wire = wire(&self.shared, &mut self.book, &mut self.finished, &mut mode);
            self.registry.restore_all(&mut wire)
        };

        let mut batch = Vec::with_capacity(BATCH);
        // Output coalescing: encoded frames are written once nothing else is
        // ready (the `biased` select's last branch), so the frames of several
        // command batches and of the replies to inbound frames share one
        // write. Bounded by `WRITE_CAP` bytes and `COALESCE_ROUNDS` events. A
        // lone request is written in the same wake-up it was taken in.
        let mut unwritten = false;
        let mut rounds: u32 = 0;
        let mut last_inbound = Instant::now();
        let mut pinged = false;
        let mut timer = pin!(sleep_until(far_future()));
        let mut timer_at = far_future();
        let lost = loop {
            self.settle(&mut mode);
            if self.restoring == 0 && matches!(mode, Mode::Session { ready: false, .. }) {
                let restored = reconnected.then_some(self.restored);
                self.become_ready(&mut mode, caps, reconnected, restored);
            }
            if let Mode::Session {
                session,
                ready: true,
                transport,
            } = &mut mode
                && self.book.has_backlog()
            {
                let session = *session;
                self.book
                    .admit_backlog(&session, transport.out(), HIGH_WATER, &mut self.finished);
                self.settle(&mut mode);
            }

            // One timer serves request deadlines and WebSocket liveness. It is
            // re-armed only when something earlier than `timer_at` appears or
            // when it fires, so the hot path rarely touches the timer wheel.
            let liveness =
                websocket.then(|| last_inbound + if pinged { dead_after } else { ping_interval });
            let wanted = [self.book.next_deadline(), liveness]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(far_future);
            if wanted < timer_at {
                timer_at = wanted;
                timer.as_mut().reset(wanted);
            }

            // Held-back work is admitted as soon as the output drains,
            // whether or not anything arrives meanwhile.
            let room_below = matches!(mode, Mode::Session { ready: true, .. })
                .then_some(HIGH_WATER)
                .filter(|_| self.book.has_backlog());
            let Mode::Session { transport, .. } = &mut mode else {
                break None;
            };
            tokio::select! {
                biased;
                () = &mut closing => break None,
                // While output is being coalesced the transport only reads;
                // otherwise it writes what is pending first (and waits for
                // writability when the socket is full).
                io = poll_fn(|cx| transport.poll_io(cx, room_below, !unwritten)) => {
                    if !matches!(io, Ok(Inbound::Room)) {
                        last_inbound = Instant::now();
                        pinged = false;
                    }
                    match io {
                        Err(failure) => break Some(failure.error),
                        // The backlog is admitted at the top of the loop.
                        Ok(Inbound::Activity | Inbound::Room) => {}
                        Ok(Inbound::Frame(frame)) => {
                            if let Err(e) = self.on_frames(frame, &mut mode, &mut metadata_sent) {
                                break Some(e);
                            }
                        }
                    }
                }
                n = self.commands.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break None; // every handle is gone
                    }
                    for cmd in batch.drain(..) {
                        self.on_command(cmd, &mut mode);
                    }
                }
                Some(ctl) = self.control.recv() => self.on_control(ctl, &mut mode),
                () = &mut timer => {
                    // Re-armed at once: a fired `Sleep` stays ready, and left
                    // as it is it would wake this loop forever once nothing
                    // earlier is pending.
                    timer_at = far_future();
                    timer.as_mut().reset(timer_at);
                    let now = Instant::now();
                    if let Mode::Session { session, transport, .. } = &mut mode {
                        let session = *session;
                        self.book.expire(now, Some(&session), transport.out(), &mut self.finished);
                        if websocket {
                            if now >= last_inbound + dead_after {
                                break Some(Error::connection(format!(
                                    "nothing from the broker for {dead_after:?}: dead peer"
                                )));
                            }
                            if !pinged && now >= last_inbound + ping_interval {
                                transport.queue_ping();
                                pinged = true;
                            }
                        }
                    }
                }
                // Nothing else is ready: write what was coalesced.
                () = std::future::ready(()), if unwritten => {
                    unwritten = false;
                    rounds = 0;
                    if let Mode::Session { transport, .. } = &mut mode {
                        if let Err(f) = transport.write_now() {
                            break Some(f.error);
                        }
                        crate::telemetry::outbound_pending(transport.pending_out());
                    }
                    continue;
                }
            }
            // Anything just encoded waits for the write above, unless the cap
            // says now.
            if let Mode::Session { transport, .. } = &mut mode
                && !transport.out().is_empty()
            {
                rounds += 1;
                unwritten = true;
                if transport.out().len() >= WRITE_CAP || rounds >= COALESCE_ROUNDS {
                    unwritten = false;
                    rounds = 0;
                    if let Err(f) = transport.write_now() {
                        break Some(f.error);
                    }
                }
            }
        };
        if lost.is_some() {
            self.session_lost();
        }
        lost
    }

    /// Everything tied to the lost session fails; registrations wait for the
    /// next one.
    fn session_lost(&mut self) {
        let ended = self.shared.generation();
        self.shared.advance_generation();
        self.shared.set_capabilities(None);
        self.set_state(State::Reconnecting);
        self.book
            .fail_session(ended, Error::connection_lost, &mut self.finished);
        self.settle(&mut Mode::Pending);
        self.registry.session_lost(self.shared.generation());
        self.restoring = 0;
    }

    /// Handles a frame and every further frame already buffered.
    fn on_frames(
        &mut self,
        first: Bytes,
        mode: &mut Mode<'_>,
        metadata_sent: &mut bool,
    ) -> Result<()> {
        self.on_frame(first, mode, metadata_sent)?;
        // Settled after every frame: a SUBSCRIBE acknowledgement installs the
        // wire id that the notifications in the very next frame carry (the
        // broker sends a Queue watch's first notifications right after it).
        self.settle(mode);
        loop {
            let Mode::Session { transport, .. } = mode else {
                return Ok(());
            };
            match transport.next_buffered() {
                Ok(Some(frame)) => {
                    self.on_frame(frame, mode, metadata_sent)?;
                    self.settle(mode);
                }
                Ok(None) => return Ok(()),
                Err(failure) => return Err(failure.error),
            }
        }
    }

    fn become_ready(
        &mut self,
        mode: &mut Mode<'_>,
        caps: Capabilities,
        reconnected: bool,
        restored: Option<usize>,
    ) {
        if let Mode::Session { ready, .. } = mode {
            *ready = true;
        }
        self.set_state(State::Authenticated);
        tracing::info!(?caps, reconnected, "fitz session ready");
        if let Some(count) = restored {
            self.shared.emit(Event::Restored { count });
        }
        self.shared.emit(Event::Connected {
            capabilities: caps,
            reconnected,
        });
        for w in self.connect_waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
    }

    /// SESSION_METADATA once per connection, only when the broker takes it.
    fn send_metadata(&self, transport: &mut Transport, caps: Capabilities, already: bool) -> bool {
        if already || !caps.contains(Capabilities::SESSION_METADATA) {
            return already;
        }
        let Some(name) = &self.shared.config.service_name else {
            return false;
        };
        let msg = control::SessionMetadata {
            service_name: name.as_str().into(),
        };
        let max = transport.max_frame();
        if let Err(e) = encode_frame_with(transport.out(), max, |b| msg.encode_record(b)) {
            tracing::warn!(error = %e, "SESSION_METADATA not sent");
        }
        true
    }

    /// Handles one inbound frame. An error drops the connection.
    fn on_frame(
        &mut self,
        frame: Bytes,
        mode: &mut Mode<'_>,
        metadata_sent: &mut bool,
    ) -> Result<()> {
        let Mode::Session {
            session, transport, ..
        } = mode
        else {
            return Ok(());
        };
        let session = *session;
        for labelled in LabelledRecords::new(frame, Side::Client) {
            let Labelled {
                correlation,
                record,
            } = labelled
                .map_err(|e| Error::protocol(format!("malformed frame from the broker: {e}")))?;
            if record.ty == types::SERVER_HELLO {
                // A later hello may update the capabilities; the regime stays
                // the one negotiated at the handshake.
                let hello = ServerHello::decode(record.payload)
                    .map_err(|e| Error::protocol(format!("malformed SERVER_HELLO: {e}")))?;
                self.shared
                    .set_capabilities(Some((hello.version, hello.capabilities)));
                *metadata_sent = self.send_metadata(transport, hello.capabilities, *metadata_sent);
                continue;
            }
            let unclaimed = self.book.on_record(
                correlation,
                record.ty,
                record.payload,
                &session,
                transport.out(),
                &mut self.finished,
            );
            if let Some(payload) = unclaimed {
                let mut wire = Wire {
                    shared: &self.shared,
                    book: &mut self.book,
                    out: Some(transport.out()),
                    session: Some(session),
                    ready: false,
                    finished: &mut self.finished,
                };
                if !self
                    .registry
                    .dispatch_notify(record.ty, &payload, &mut wire)
                    && !self.registry.dispatch_push(record.ty, &payload)
                {
                    tracing::trace!(
                        ty = record.ty,
                        name = types::name(record.ty),
                        late = correlation.is_some(),
                        "dropping an unclaimed record"
                    );
                }
            }
        }
        Ok(())
    }

    // ----- commands -----

    fn on_command(&mut self, cmd: Command, mode: &mut Mode<'_>) {
        match cmd {
            Command::Connect(reply) => match mode {
                Mode::Session { ready: true, .. } => {
                    let _ = reply.send(Ok(()));
                }
                _ => self.connect_waiters.push(reply),
            },
            Command::Call { push, out } => {
                if !matches!(mode, Mode::Idle) {
                    self.registry.add_push(push);
                }
                self.on_command(Command::Send(out), mode);
            }
            Command::Request(out) | Command::Send(out) => {
                if let Mode::Idle = mode {
                    reject(out, Error::not_connected());
                    return;
                }
                match mode {
                    // Writable now: straight out, or filed and admitted
                    // when it must be filed first (see `Book::send_now`).
                    Mode::Session {
                        session,
                        ready: true,
                        transport,
                    } if !self.book.has_backlog() && transport.pending_out() < HIGH_WATER => {
                        let session = *session;
                        let sent =
                            self.book
                                .send_now(out, &session, transport.out(), &mut self.finished);
                        if let Some(out) = sent {
                            let id = self.book.file(out);
                            self.book
                                .admit(id, &session, transport.out(), &mut self.finished);
                        }
                    }
                    Mode::Session {
                        ready: true,
                        transport,
                        ..
                    } if transport.pending_out() >= HIGH_WATER => {
                        crate::telemetry::outbound_backpressured();
                        let id = self.book.file(out);
                        self.book.defer(id);
                    }
                    _ => {
                        let id = self.book.file(out);
                        self.book.defer(id);
                    }
                }
            }
            Command::Register(reg) => {
                if let Mode::Idle = mode {
                    let _ = reg.reply.send(Err(Error::not_connected()));
                    return;
                }
                let mut wire = wire(&self.shared, &mut self.book, &mut self.finished, mode);
                self.registry.register(reg, &mut wire);
            }
            Command::Push(push) => self.registry.add_push(push),
            Command::EndRegistrations {
                subscribe_type,
                reply,
            } => {
                self.registry.end_type(subscribe_type);
                let _ = reply.send(());
            }
            Command::UnsubscribeAll(reply) => {
                let mut wire = wire(&self.shared, &mut self.book, &mut self.finished, mode);
                let _ = reply.send(self.registry.unsubscribe_all(&mut wire));
            }
            Command::Inspect(reply) => {
                let (pending, tombstones, backlog) = self.book.counts();
                let (registrations, sinks, push_handlers) = self.registry.counts();
                let _ = reply.send(DebugSnapshot {
                    pending,
                    tombstones,
                    backlog,
                    registrations,
                    sinks,
                    push_handlers,
                    free_permits: self.shared.inflight.available_permits(),
                });
            }
        }
        self.settle(mode);
    }

    fn on_control(&mut self, ctl: Control, mode: &mut Mode<'_>) {
        match ctl {
            Control::Unsubscribe { sink, reply } => {
                let mut wire = wire(&self.shared, &mut self.book, &mut self.finished, mode);
                self.registry.unsubscribe(sink, reply, &mut wire);
            }
            Control::DropPush { sink } => self.registry.drop_push(sink),
        }
        self.settle(mode);
    }

    /// Applies finished internal requests (their outcomes may file more).
    fn settle(&mut self, mode: &mut Mode<'_>) {
        let mut work = std::mem::take(&mut self.finished);
        while !work.is_empty() {
            for (internal, result) in work.drain(..) {
                let mut wire = wire(&self.shared, &mut self.book, &mut self.finished, mode);
                match internal {
                    Internal::Subscribe(reg) => self.registry.subscribed(reg, result, &mut wire),
                    Internal::Restore(reg) => {
                        if self.registry.restored(reg, result, &mut wire) {
                            self.restored += 1;
                        }
                        self.restoring = self.restoring.saturating_sub(1);
                    }
                    Internal::Unsubscribe(reply) => {
                        let outcome = match result {
                            Ok(payload) => ack(payload),
                            // The session died with the registration on it.
                            Err(e) if e.kind() == ErrorKind::Connection => Ok(()),
                            Err(e) => Err(e),
                        };
                        if let Some(r) = reply {
                            let _ = r.send(outcome);
                        }
                    }
                    Internal::Then(then) => then.run(result, &mut wire),
                }
            }
            std::mem::swap(&mut work, &mut self.finished);
        }
        // Keep an allocation: after a pass the drained list is in
        // `self.finished` and `work` is the fresh, empty one.
        if work.capacity() > self.finished.capacity() {
            self.finished = work;
        }
    }

    /// Ends everything: the client is closed.
    async fn shutdown(&mut self, transport: Option<&mut Transport>, error: Error) {
        if std::mem::replace(&mut self.shut_down, true) {
            return;
        }
        let first = !self
            .shared
            .closed
            .swap(true, std::sync::atomic::Ordering::AcqRel);
        if first {
            self.shared.advance_generation();
        }
        self.shared.set_capabilities(None);
        self.book.fail_all(
            |_| {
                if error.kind() == ErrorKind::Closed {
                    Error::closed()
                } else {
                    error.clone()
                }
            },
            &mut self.finished,
        );
        self.settle(&mut Mode::Idle);
        self.registry.close_all(&error);
        // Final before anyone hears of it: a `connect()` that returns the
        // error finds the client `Closed`.
        self.set_state(State::Closed);
        for w in self.connect_waiters.drain(..) {
            let _ = w.send(Err(error.clone()));
        }
        self.commands.close();
        self.control.close();
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Request(out) | Command::Send(out) | Command::Call { out, .. } => {
                    reject(out, Error::closed());
                }
                Command::Connect(r) => {
                    let _ = r.send(Err(error.clone()));
                }
                Command::Register(r) => {
                    let _ = r.reply.send(Err(Error::closed()));
                }
                Command::Push(p) => {
                    if let Some(reply) = p.reply {
                        let _ = reply.send(Err(Error::closed()));
                    }
                }
                Command::EndRegistrations { reply, .. } => {
                    let _ = reply.send(());
                }
                Command::UnsubscribeAll(reply) => {
                    let _ = reply.send(Vec::new());
                }
                Command::Inspect(reply) => {
                    let _ = reply.send(DebugSnapshot::default());
                }
            }
        }
        if let Some(t) = transport {
            let _ = tokio::time::timeout(GOODBYE, t.goodbye()).await;
        }
        self.shared.emit(Event::Closed);
    }
}

fn far_future() -> Instant {
    // ~30 years: "never" for a timer that must exist.
    Instant::now() + std::time::Duration::from_secs(86_400 * 365 * 30)
}

/// The registry's view of the wire, borrowed field by field so the registry
/// itself stays free to borrow.
fn wire<'w>(
    shared: &'w Shared,
    book: &'w mut Book,
    finished: &'w mut Vec<Finished>,
    mode: &'w mut Mode<'_>,
) -> Wire<'w> {
    let (out, session, ready) = match mode {
        Mode::Session {
            session,
            ready,
            transport,
        } => (Some(transport.out()), Some(*session), *ready),
        _ => (None, None, false),
    };
    Wire {
        shared,
        book,
        out,
        session,
        ready,
        finished,
    }
}

/// An acknowledgement reply: status 0, or an error envelope.
fn ack(payload: Bytes) -> Result<()> {
    match payload.first() {
        Some(0) => Ok(()),
        _ => match WireError::decode(payload) {
            Ok(e) => Err(Error::broker(&e)),
            Err(e) => Err(Error::malformed_reply(e)),
        },
    }
}
