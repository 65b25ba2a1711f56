//! Live registrations and push handlers, owned by the actor.
//!
//! A *registration* is one wire subscription: its spec, the SUBSCRIBE record
//! to replay after a reconnect, the current wire id, and the local *sinks*
//! (subscription handles) it feeds. Identical SUBSCRIBE records share one
//! registration; the wire UNSUBSCRIBE goes out when its last sink leaves.
//!
//! Notifications are routed by `(notify type, wire id)` straight to the
//! sinks' mailboxes: a hash lookup and a lock-free push per sink, never a
//! wait, never an allocation.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use bytes::{Bytes, BytesMut};
use fitz_protocol::{record, route, rpc, types};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::command::{PushCmd, RegisterCmd};
use super::mailbox::{MailboxTx, Pushed};
use super::requests::{Book, Finished, IdMap, Internal, Session};
use super::{Generation, Push, PushKey, RegistrationSpec, Shared};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, SubscriptionId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// First SUBSCRIBE outstanding (or waiting for the session).
    Subscribing,
    Live,
    /// Re-SUBSCRIBE outstanding after a reconnect.
    Restoring,
    /// The session that knew it is gone; restore on the next one.
    Lost,
}

struct Sink {
    id: SubscriptionId,
    tx: MailboxTx,
    /// Inside an overflow episode (DropOldest): the event was emitted.
    overflowing: bool,
}

struct Reg {
    spec: &'static RegistrationSpec,
    record: Bytes,
    wire_id: Option<u64>,
    phase: Phase,
    sinks: Vec<Sink>,
    /// Callers of `register` waiting for the first acknowledgement.
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

impl Reg {
    fn payload(&self) -> Bytes {
        let header = fitz_protocol::record::type_len(self.spec.subscribe_type) + 2;
        self.record.slice(header.min(self.record.len())..)
    }

    fn prune_gone(&mut self) {
        self.sinks.retain(|s| s.tx.is_receiver_alive());
    }
}

struct PushSink {
    id: SubscriptionId,
    key: PushKey,
    tx: MailboxTx<Push>,
    /// For pattern keys: how specific the pattern is (see [`specificity`]).
    rank: Specificity,
}

impl PushSink {
    /// False once its stream is dropped or ended: nothing will read it.
    fn is_live(&self) -> bool {
        self.tx.is_receiver_alive() && !self.tx.is_closed()
    }
}

/// Where new internal requests go: the book, and the wire if a session is up.
pub(super) struct Wire<'a> {
    pub shared: &'a Shared,
    pub book: &'a mut Book,
    pub out: Option<&'a mut BytesMut>,
    pub session: Option<Session>,
    /// Authenticated and restored: user work may flow.
    pub ready: bool,
    pub finished: &'a mut Vec<Finished>,
}

impl Wire<'_> {
    /// Files a caller's request the actor made itself (a `Then` follow-up):
    /// admitted at once on a ready session with nothing queued before it,
    /// else queued behind what is.
    pub fn file_request(&mut self, out: super::command::Outbound) {
        let id = self.book.file(out);
        match (&self.session, self.out.as_deref_mut()) {
            (Some(s), Some(out)) if self.ready && !self.book.has_backlog() => {
                self.book.admit(id, s, out, self.finished);
            }
            _ => self.book.defer(id),
        }
    }

    fn file(&mut self, ty: u16, record: Bytes, internal: Internal) {
        let id = self.shared.next_id();
        let deadline = Instant::now() + self.shared.config.request_timeout;
        let generation = self
            .session
            .map_or_else(|| self.shared.generation(), |s| s.generation);
        // Restores and unsubscribes belong to the session at hand; a first
        // SUBSCRIBE waits, like user requests, until the session is ready.
        let now = matches!(internal, Internal::Restore(_) | Internal::Unsubscribe(_)) || self.ready;
        self.book
            .file_internal(id, ty, record, deadline, generation, internal);
        match (&self.session, self.out.as_deref_mut()) {
            (Some(s), Some(out)) if now => self.book.admit(id, s, out, self.finished),
            _ => self.book.defer(id),
        }
    }
}

#[derive(Default)]
pub(super) struct Registry {
    regs: IdMap<u64, Reg>,
    by_record: HashMap<(u16, Bytes), u64>,
    routes: IdMap<(u16, u64), u64>,
    sink_index: IdMap<u64, u64>,
    /// Pattern and `Any` handlers by push type (few; scanned per push),
    /// and UUID handlers whose key was taken.
    push: IdMap<u16, Vec<PushSink>>,
    /// UUID handlers by (push type, UUID): one lookup per push, however
    /// many calls are in flight.
    push_by_uuid: IdMap<(u16, [u8; 16]), PushSink>,
    /// `push_by_uuid` is pruned of handlers whose stream is gone (their
    /// `DropPush` was lost to a full control channel) when it grows past
    /// this size.
    prune_uuid_at: usize,
    /// Where each handler is: its push type, and its UUID when it is in
    /// `push_by_uuid`.
    push_index: IdMap<u64, (u16, Option<[u8; 16]>)>,
    next_reg: u64,
}

/// The smallest [`Registry::prune_uuid_at`].
const PRUNE_UUID_MIN: usize = 1024;

impl Registry {
    pub fn register(&mut self, cmd: RegisterCmd, wire: &mut Wire<'_>) {
        // The caller gave up before this command was handled; its removal
        // may already have overtaken it on the control channel.
        if !cmd.mailbox.is_receiver_alive() {
            let _ = cmd.reply.send(Err(Error::cancelled("subscribe abandoned")));
            return;
        }
        let sink = Sink {
            id: cmd.sink,
            tx: cmd.mailbox,
            overflowing: false,
        };
        let key = (cmd.spec.subscribe_type, cmd.record.clone());
        if let Some(&reg_id) = self.by_record.get(&key)
            && let Some(reg) = self.regs.get_mut(&reg_id)
        {
            self.sink_index.insert(sink.id.0, reg_id);
            reg.sinks.push(sink);
            match reg.phase {
                Phase::Subscribing => reg.waiters.push(cmd.reply),
                // Restoring/Lost: it exists locally and will be live again.
                _ => {
                    let _ = cmd.reply.send(Ok(()));
                }
            }
            return;
        }
        self.next_reg += 1;
        let reg_id = self.next_reg;
        self.sink_index.insert(sink.id.0, reg_id);
        self.by_record.insert(key, reg_id);
        self.regs.insert(
            reg_id,
            Reg {
                spec: cmd.spec,
                record: cmd.record.clone(),
                wire_id: None,
                phase: Phase::Subscribing,
                sinks: vec![sink],
                waiters: vec![cmd.reply],
            },
        );
        wire.file(
            cmd.spec.subscribe_type,
            cmd.record,
            Internal::Subscribe(reg_id),
        );
    }

    /// The first SUBSCRIBE was answered (or failed).
    pub fn subscribed(&mut self, reg_id: u64, result: Result<Bytes>, wire: &mut Wire<'_>) {
        let Some(reg) = self.regs.get_mut(&reg_id) else {
            return;
        };
        match result.and_then(reg.spec.ack) {
            Ok(wire_id) => {
                reg.phase = Phase::Live;
                reg.wire_id = wire_id;
                if let (Some(id), Some(ty)) = (wire_id, reg.spec.notify_type) {
                    self.routes.insert((ty, id), reg_id);
                }
                for w in reg.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
                self.release_if_unused(reg_id, wire);
            }
            Err(e) => {
                for w in reg.waiters.drain(..) {
                    let _ = w.send(Err(e.clone()));
                }
                // The handles got the error from `register`; end them quietly.
                self.remove(reg_id, None);
            }
        }
    }

    /// A re-SUBSCRIBE after reconnect was answered (or failed). Returns true
    /// when the registration is live again.
    pub fn restored(&mut self, reg_id: u64, result: Result<Bytes>, wire: &mut Wire<'_>) -> bool {
        let Some(reg) = self.regs.get_mut(&reg_id) else {
            return false;
        };
        match result.and_then(reg.spec.ack) {
            Ok(wire_id) => {
                reg.phase = Phase::Live;
                reg.wire_id = wire_id;
                if let (Some(id), Some(ty)) = (wire_id, reg.spec.notify_type) {
                    self.routes.insert((ty, id), reg_id);
                }
                self.release_if_unused(reg_id, wire);
                true
            }
            Err(e) if e.kind() == ErrorKind::Connection => {
                // This session died too; try again on the next one.
                reg.phase = Phase::Lost;
                false
            }
            Err(e) => {
                tracing::warn!(registration = reg.spec.name, error = %e, "restore failed");
                for s in &reg.sinks {
                    wire.shared.emit(Event::RestoreFailed {
                        subscription: s.id,
                        error: e.clone(),
                    });
                }
                self.remove(reg_id, Some(e));
                false
            }
        }
    }

    /// Re-subscribes every registration lost with the previous session.
    /// Returns how many restores were sent.
    pub fn restore_all(&mut self, wire: &mut Wire<'_>) -> usize {
        let mut ids: Vec<u64> = self
            .regs
            .iter()
            .filter(|(_, r)| r.phase == Phase::Lost)
            .map(|(id, _)| *id)
            .collect();
        // Registration order, for reproducible traffic.
        ids.sort_unstable();
        let mut sent = 0;
        for id in ids {
            let Some(reg) = self.regs.get_mut(&id) else {
                continue;
            };
            reg.prune_gone();
            if reg.sinks.is_empty() {
                self.remove(id, None);
                continue;
            }
            reg.phase = Phase::Restoring;
            let (ty, record) = (reg.spec.subscribe_type, reg.record.clone());
            wire.file(ty, record, Internal::Restore(id));
            sent += 1;
        }
        sent
    }

    /// The session is gone: wire ids are meaningless now. `next` is the
    /// generation of the session to come.
    pub fn session_lost(&mut self, next: u64) {
        self.routes.clear();
        for reg in self.regs.values_mut() {
            if matches!(reg.phase, Phase::Live | Phase::Restoring) {
                reg.phase = Phase::Lost;
                reg.wire_id = None;
            }
        }
        // Handlers keyed by a UUID belong to calls of the lost session.
        for (_, s) in self.push_by_uuid.drain() {
            s.tx.close(Some(Error::connection_lost(true)));
            self.push_index.remove(&s.id.0);
        }
        let mut ended = Vec::new();
        for sinks in self.push.values_mut() {
            sinks.retain(|s| {
                let session_scoped = matches!(s.key, PushKey::Uuid(_));
                if session_scoped {
                    s.tx.close(Some(Error::connection_lost(true)));
                    ended.push(s.id.0);
                }
                !session_scoped
            });
        }
        for id in ended {
            self.push_index.remove(&id);
        }
        self.push.retain(|_, v| !v.is_empty());
        // Worker deliveries carry no session stamp and their invocation ids
        // die with the session: the boundary goes in the handler's own order.
        if let Some(sinks) = self.push.get(&types::RPC_REQUEST) {
            for s in sinks {
                s.tx.push(Push::SessionEnded {
                    next: Generation(next),
                });
            }
        }
    }

    /// A handle left. Sends UNSUBSCRIBE when it was the last one.
    pub fn unsubscribe(
        &mut self,
        sink: SubscriptionId,
        reply: Option<oneshot::Sender<Result<()>>>,
        wire: &mut Wire<'_>,
    ) {
        let Some(reg_id) = self.sink_index.remove(&sink.0) else {
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        };
        if let Some(reg) = self.regs.get_mut(&reg_id) {
            reg.sinks.retain(|s| {
                let keep = s.id != sink;
                if !keep {
                    s.tx.close(None);
                }
                keep
            });
        }
        self.release_if_unused_with(reg_id, reply, wire);
    }

    fn release_if_unused(&mut self, reg_id: u64, wire: &mut Wire<'_>) {
        self.release_if_unused_with(reg_id, None, wire);
    }

    /// Drops a registration nobody listens to any more, unsubscribing on the
    /// wire when it is live. `reply` learns the outcome.
    fn release_if_unused_with(
        &mut self,
        reg_id: u64,
        reply: Option<oneshot::Sender<Result<()>>>,
        wire: &mut Wire<'_>,
    ) {
        let Some(reg) = self.regs.get_mut(&reg_id) else {
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        };
        reg.prune_gone();
        if !reg.sinks.is_empty() {
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        }
        match reg.phase {
            // The answer is still coming: decide when it arrives.
            Phase::Subscribing | Phase::Restoring => {
                if let Some(r) = reply {
                    let _ = r.send(Ok(()));
                }
            }
            Phase::Lost => {
                self.remove(reg_id, None);
                if let Some(r) = reply {
                    let _ = r.send(Ok(()));
                }
            }
            Phase::Live => {
                let record = (reg.spec.unsubscribe)(reg.wire_id, &reg.payload());
                let ty = record.as_ref().and_then(|r| record::peek_type(r));
                self.remove(reg_id, None);
                match (record, ty, wire.session.is_some()) {
                    (Some(record), Some(ty), true) => {
                        wire.file(ty, record, Internal::Unsubscribe(reply));
                    }
                    _ => {
                        if let Some(r) = reply {
                            let _ = r.send(Ok(()));
                        }
                    }
                }
            }
        }
    }

    /// Removes a registration, ending its sinks with `error` (or cleanly).
    fn remove(&mut self, reg_id: u64, error: Option<Error>) {
        let Some(reg) = self.regs.remove(&reg_id) else {
            return;
        };
        self.by_record
            .remove(&(reg.spec.subscribe_type, reg.record.clone()));
        if let (Some(id), Some(ty)) = (reg.wire_id, reg.spec.notify_type) {
            self.routes.remove(&(ty, id));
        }
        for s in &reg.sinks {
            self.sink_index.remove(&s.id.0);
            s.tx.close(error.clone());
        }
    }

    /// Drain: ends every subscription handle cleanly (its stream ends with
    /// `None`) and unsubscribes every registration on the wire. Returns one
    /// receiver per wire UNSUBSCRIBE filed, answered with its outcome.
    pub fn unsubscribe_all(&mut self, wire: &mut Wire<'_>) -> Vec<oneshot::Receiver<Result<()>>> {
        let ids: Vec<u64> = self.regs.keys().copied().collect();
        let mut outcomes = Vec::with_capacity(ids.len());
        for reg_id in ids {
            if let Some(reg) = self.regs.get_mut(&reg_id) {
                for s in reg.sinks.drain(..) {
                    self.sink_index.remove(&s.id.0);
                    s.tx.close(None);
                }
            }
            let (tx, rx) = oneshot::channel();
            self.release_if_unused_with(reg_id, Some(tx), wire);
            outcomes.push(rx);
        }
        outcomes
    }

    /// Ends every registration of one subscribe type without unsubscribing.
    pub fn end_type(&mut self, subscribe_type: u16) {
        let ids: Vec<u64> = self
            .regs
            .iter()
            .filter(|(_, r)| r.spec.subscribe_type == subscribe_type)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove(id, None);
        }
    }

    /// The client closed: every stream ends with `error`.
    pub fn close_all(&mut self, error: &Error) {
        let ids: Vec<u64> = self.regs.keys().copied().collect();
        for id in ids {
            if let Some(reg) = self.regs.get_mut(&id) {
                for w in reg.waiters.drain(..) {
                    let _ = w.send(Err(error.clone()));
                }
            }
            self.remove(id, Some(error.clone()));
        }
        for s in self
            .push
            .values()
            .flatten()
            .chain(self.push_by_uuid.values())
        {
            s.tx.close(Some(error.clone()));
        }
        self.push.clear();
        self.push_by_uuid.clear();
        self.push_index.clear();
    }

    /// Routes a notification by its leading `u64 sub_id`. False when no
    /// registration claims it.
    pub fn dispatch_notify(&mut self, ty: u16, payload: &Bytes, wire: &mut Wire<'_>) -> bool {
        let Some(head) = payload.first_chunk::<8>() else {
            return false;
        };
        let Some(&reg_id) = self.routes.get(&(ty, u64::from_be_bytes(*head))) else {
            return false;
        };
        let Some(reg) = self.regs.get_mut(&reg_id) else {
            return false;
        };
        let mut lost_sinks = false;
        let mut i = 0;
        while i < reg.sinks.len() {
            let sink = &mut reg.sinks[i];
            match sink.tx.push(payload.clone()) {
                Pushed::Delivered => sink.overflowing = false,
                Pushed::DroppedOldest => {
                    if !sink.overflowing {
                        sink.overflowing = true;
                        wire.shared.emit(Event::SlowConsumer {
                            subscription: sink.id,
                            dropped: sink.tx.dropped(),
                        });
                    }
                }
                Pushed::Overflowed => {
                    tracing::debug!(subscription = %sink.id, "subscription overflowed; ending it");
                    wire.shared.emit(Event::SlowConsumer {
                        subscription: sink.id,
                        dropped: sink.tx.dropped(),
                    });
                    let gone = reg.sinks.swap_remove(i);
                    self.sink_index.remove(&gone.id.0);
                    lost_sinks = true;
                    continue;
                }
                Pushed::ReceiverGone => {
                    let gone = reg.sinks.swap_remove(i);
                    self.sink_index.remove(&gone.id.0);
                    lost_sinks = true;
                    continue;
                }
            }
            i += 1;
        }
        if lost_sinks {
            self.release_if_unused(reg_id, wire);
        }
        true
    }

    pub fn add_push(&mut self, cmd: PushCmd) {
        // As in `register`: the caller gave up before this was handled.
        if !cmd.mailbox.is_receiver_alive() {
            if let Some(reply) = cmd.reply {
                let _ = reply.send(Err(Error::cancelled("push handler abandoned")));
            }
            return;
        }
        if let PushKey::Pattern(p) = &cmd.key
            && self.push.get(&cmd.ty).is_some_and(|sinks| {
                sinks
                    .iter()
                    .any(|s| s.key == cmd.key && s.tx.is_receiver_alive())
            })
        {
            if let Some(reply) = cmd.reply {
                let _ = reply.send(Err(Error::invalid(format!(
                    "{p} already has a handler on this client"
                ))));
            }
            return;
        }
        let rank = match &cmd.key {
            PushKey::Pattern(p) => specificity(p),
            _ => Specificity::default(),
        };
        let sink = PushSink {
            id: cmd.sink,
            key: cmd.key,
            tx: cmd.mailbox,
            rank,
        };
        let keyed = match &sink.key {
            PushKey::Uuid(u) => Some(*u),
            _ => None,
        };
        match keyed {
            Some(u) => {
                self.prune_uuid_handlers();
                match self.push_by_uuid.entry((cmd.ty, u)) {
                    Entry::Vacant(v) => {
                        v.insert(sink);
                        self.push_index.insert(cmd.sink.0, (cmd.ty, Some(u)));
                    }
                    // A second handler for one UUID (never made by this
                    // crate): it waits in the scanned list.
                    Entry::Occupied(_) => {
                        self.push_index.insert(cmd.sink.0, (cmd.ty, None));
                        self.push.entry(cmd.ty).or_default().push(sink);
                    }
                }
            }
            None => {
                self.push_index.insert(cmd.sink.0, (cmd.ty, None));
                self.push.entry(cmd.ty).or_default().push(sink);
            }
        }
        if let Some(reply) = cmd.reply {
            let _ = reply.send(Ok(()));
        }
    }

    /// Drops UUID handlers whose stream is gone, once the map has doubled
    /// since the last time: amortised O(1) per handler.
    fn prune_uuid_handlers(&mut self) {
        if self.push_by_uuid.len() < self.prune_uuid_at.max(PRUNE_UUID_MIN) {
            return;
        }
        let index = &mut self.push_index;
        self.push_by_uuid.retain(|_, s| {
            let live = s.is_live();
            if !live {
                index.remove(&s.id.0);
            }
            live
        });
        self.prune_uuid_at = self.push_by_uuid.len() * 2;
    }

    pub fn drop_push(&mut self, sink: SubscriptionId) {
        let Some((ty, keyed)) = self.push_index.remove(&sink.0) else {
            return;
        };
        if let Some(u) = keyed {
            if let Entry::Occupied(e) = self.push_by_uuid.entry((ty, u))
                && e.get().id == sink
            {
                e.remove();
            }
            return;
        }
        if let Some(sinks) = self.push.get_mut(&ty) {
            sinks.retain(|s| s.id != sink);
            if sinks.is_empty() {
                self.push.remove(&ty);
            }
        }
    }

    /// Routes a push (RPC traffic, late replies) to its handlers. False when
    /// none claimed it.
    pub fn dispatch_push(&mut self, ty: u16, payload: &Bytes) -> bool {
        let uuid = rpc::push_id(ty, payload).map(|id| id.0);
        let mut claimed = false;
        if let Some(u) = uuid
            && let Entry::Occupied(e) = self.push_by_uuid.entry((ty, u))
        {
            claimed = true;
            let s = e.get();
            s.tx.push(Push::Record(payload.clone()));
            // A call's last RESPONSE (flags byte after id and sequence, bit
            // 0): nothing more comes for it, so its handler goes now and the
            // stream's drop need not ask (`PushStream`'s `Drop`).
            let last = ty == types::RPC_RESPONSE && payload.get(24) == Some(&1);
            if last || !s.is_live() {
                self.push_index.remove(&s.id.0);
                e.remove();
            }
        }
        let Some(sinks) = self.push.get_mut(&ty) else {
            return claimed;
        };
        let route = (ty == types::RPC_REQUEST)
            .then(|| rpc::request_route(payload))
            .flatten();
        let mut any = Vec::new();
        // The most specific live pattern handler (the earliest on a tie).
        let mut best: Option<(usize, Specificity)> = None;
        for (i, s) in sinks.iter().enumerate() {
            let hit = match &s.key {
                PushKey::Uuid(u) => uuid.as_ref() == Some(u),
                PushKey::Pattern(p) => {
                    if s.tx.is_receiver_alive()
                        && !s.tx.is_closed()
                        && best.as_ref().is_none_or(|(_, b)| s.rank > *b)
                        && route.as_deref().is_some_and(|r| route::matches(p, r))
                    {
                        best = Some((i, s.rank));
                    }
                    false
                }
                PushKey::Any => {
                    any.push(i);
                    false
                }
            };
            if hit {
                claimed = true;
                s.tx.push(Push::Record(payload.clone()));
            }
        }
        if let Some((i, _)) = best {
            claimed = true;
            sinks[i].tx.push(Push::Record(payload.clone()));
        }
        if !claimed {
            for i in any {
                claimed = true;
                sinks[i].tx.push(Push::Record(payload.clone()));
            }
        }
        sinks.retain(PushSink::is_live);
        claimed
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        let sinks = self.regs.values().map(|r| r.sinks.len()).sum();
        let push = self.push.values().map(Vec::len).sum::<usize>() + self.push_by_uuid.len();
        (self.regs.len(), sinks, push)
    }
}

/// How specific a route pattern is: literal segments, then fewer `**`, then
/// fewer `*`. Larger is more specific.
type Specificity = (usize, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>);

fn specificity(pattern: &str) -> Specificity {
    use std::cmp::Reverse;
    match route::shape(pattern) {
        Ok(s) => (
            s.segments - s.stars - s.globstars,
            Reverse(s.globstars),
            Reverse(s.stars),
        ),
        Err(_) => (0, Reverse(usize::MAX), Reverse(usize::MAX)),
    }
}
