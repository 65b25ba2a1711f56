//! Requests written back to back and answered separately: the second of a
//! pair does not wait for the first's answer, so both usually leave in one
//! write and cost one round trip; the two follow-ups of a [`Then`] are
//! written by the actor as soon as it reads the first request's answer.

use bytes::Bytes;
use fitz_protocol::{Message, ReplyBody};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;

use super::command::{Command, Outbound, Reply, encode_request};
use super::registry::Wire;
use super::{Connection, Generation, RequestOptions, decode_body, encode_record};
use crate::error::{Error, Result};
use crate::telemetry;

impl Connection {
    /// Queues `first`, then `second`, and waits for both answers.
    ///
    /// `second` is queued only once `first` is (the actor writes records in
    /// the order they were queued, and the broker answers a session's
    /// requests in that order), so `second` never overtakes `first`. The
    /// outer error means `first` could not be queued and nothing was sent;
    /// otherwise each request has its own outcome, `second`'s an error
    /// without being sent when it could not be queued.
    ///
    /// Only for pairs whose meaning survives `first` failing with `second`
    /// already on its way (the caller decides what a failed `first` makes of
    /// `second`'s answer).
    pub(crate) async fn call_pair<A, RA, B, RB>(
        &self,
        first: &A,
        second: &B,
        opts: RequestOptions,
    ) -> Result<(Result<RA>, Result<RB>)>
    where
        A: Message,
        RA: ReplyBody,
        B: Message,
        RB: ReplyBody,
    {
        let slow = self.shared.config.slow_request_threshold;
        let t1 = telemetry::Request::start(A::TYPE, first.route());
        let rx1 = match self
            .queue_request(encode_record(first), A::TYPE, opts, &t1)
            .await
        {
            Ok(rx) => rx,
            Err(e) => {
                t1.finish::<()>(&Err(e.clone()), slow);
                return Err(e);
            }
        };
        let at = t1.started().unwrap_or_else(Instant::now);
        let t2 = telemetry::Request::start_at(B::TYPE, second.route(), at);
        let rx2 = self
            .queue_request(encode_record(second), B::TYPE, opts, &t2)
            .await;
        let r1 = rx1.await.unwrap_or_else(|_| Err(Error::closed()));
        let r2 = match rx2 {
            Ok(rx) => rx.await.unwrap_or_else(|_| Err(Error::closed())),
            Err(e) => Err(e),
        };
        // Answered together (in one frame, usually): one clock read.
        let now = Some(Instant::now());
        t1.finish_reply_at(&r1, slow, now);
        t2.finish_reply_at(&r2, slow, now);
        self.note_in_flight();
        Ok((
            r1.and_then(decode_body::<RA>),
            r2.and_then(decode_body::<RB>),
        ))
    }

    /// Queues one encoded request; its answer comes on the receiver.
    async fn queue_request(
        &self,
        record: Result<bytes::Bytes>,
        ty: u16,
        opts: RequestOptions,
        t: &telemetry::Request<'_>,
    ) -> Result<oneshot::Receiver<Result<bytes::Bytes>>> {
        let (tx, rx) = oneshot::channel();
        self.submit(
            Command::Request,
            ty,
            record?,
            opts,
            Reply::Once(tx),
            t.span(),
        )
        .await?;
        Ok(rx)
    }
}

/// Two in-flight permits set aside for the follow-ups of a
/// [`Connection::call_then`], and one for its first request until it takes
/// its own.
pub(crate) struct Spare([OwnedSemaphorePermit; 2], Option<OwnedSemaphorePermit>);

/// Two records with their types, in the order they are written.
type FollowUps = [(u16, Bytes); 2];

/// A request whose answer makes, in the actor, the two requests that follow
/// it: they are written in the turn that reads the answer, with no trip
/// through the caller's task in between (`Reply::Then`). `F` makes the
/// follow-up records from a successful answer's payload; the request
/// travels as a `Box<dyn FollowUp>`, one allocation with `F` inside.
pub(crate) struct Then<F> {
    /// The first request's answer, as `Reply::Once` delivers it.
    first: oneshot::Sender<Result<Bytes>>,
    build: F,
    /// Each follow-up's answer.
    next: [oneshot::Sender<Result<Bytes>>; 2],
    permits: Spare,
    /// The first request's session: the follow-ups are pinned to it.
    generation: u64,
}

/// What the actor does with a [`Then`] once its first request ends.
pub(crate) trait FollowUp: Send {
    /// The first request will never be written: its answer is `error`, the
    /// follow-ups are dropped unsent.
    fn reject(self: Box<Self>, error: Error);

    /// The first request ended with `result`. The follow-ups are filed (and
    /// written at once when the session is ready) only when they can be
    /// built from it: after a failed first request they are dropped unsent,
    /// and when building fails each is answered with that error.
    fn run(self: Box<Self>, result: Result<Bytes>, wire: &mut Wire<'_>);
}

impl std::fmt::Debug for dyn FollowUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FollowUp")
    }
}

impl<F> FollowUp for Then<F>
where
    F: FnOnce(&Bytes) -> Result<FollowUps> + Send,
{
    fn reject(self: Box<Self>, error: Error) {
        let _ = self.first.send(Err(error));
    }

    fn run(self: Box<Self>, result: Result<Bytes>, wire: &mut Wire<'_>) {
        let Then {
            first,
            build,
            next,
            permits: Spare(permits, _),
            generation,
        } = *self;
        let records = result.as_ref().ok().map(build);
        let _ = first.send(result);
        let records = match records {
            Some(Ok(records)) => records,
            // Not buildable (a record too large to encode): each follow-up
            // fails with that error, unsent.
            Some(Err(e)) => {
                for reply in next {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
            None => return,
        };
        let deadline = Instant::now() + wire.shared.config.request_timeout;
        for (((ty, record), reply), permit) in records.into_iter().zip(next).zip(permits) {
            wire.file_request(Outbound {
                id: wire.shared.next_id(),
                ty,
                record: record.into(),
                deadline,
                generation,
                pinned: true,
                reply: Reply::Kept(reply),
                permit,
            });
        }
    }
}

impl Connection {
    /// Two in-flight permits for [`Connection::call_then`]'s follow-ups, if
    /// three are free right now: the third, given back just before the
    /// first request takes its own, keeps a caller from setting two aside
    /// when its first request would then wait for the last one.
    pub(crate) fn spare_two(&self) -> Option<Spare> {
        let mut three = self
            .shared
            .inflight
            .clone()
            .try_acquire_many_owned(3)
            .ok()?;
        let (one, two) = (three.split(1)?, three.split(1)?);
        Some(Spare([one, two], Some(three)))
    }

    /// Sends `first` pinned to session `generation`; its answer `RA` makes
    /// the two requests `then` returns, which the actor writes as soon as it
    /// reads that answer. Waits for all three answers.
    ///
    /// The outer error: `first` was not queued (nothing sent). Otherwise
    /// each request has its own outcome; the follow-ups fail as not sent
    /// when `first` failed. The three telemetry spans all start now.
    pub(crate) async fn call_then<A, RA, B, RB, C, RC>(
        &self,
        first: &A,
        then: impl FnOnce(RA) -> (B, C) + Send + 'static,
        generation: Generation,
        mut spare: Spare,
    ) -> Result<(Result<RA>, Result<RB>, Result<RC>)>
    where
        A: Message,
        RA: ReplyBody,
        B: Message,
        RB: ReplyBody,
        C: Message,
        RC: ReplyBody,
    {
        let slow = self.shared.config.slow_request_threshold;
        let t1 = telemetry::Request::start(A::TYPE, first.route());
        let (first_tx, first_rx) = oneshot::channel();
        let (b_tx, b_rx) = oneshot::channel();
        let (c_tx, c_rx) = oneshot::channel();
        // Given back for the first request to take.
        drop(spare.1.take());
        let build = move |payload: &Bytes| {
            let (b, c) = then(decode_body::<RA>(payload.clone())?);
            Ok([(B::TYPE, encode_record(&b)?), (C::TYPE, encode_record(&c)?)])
        };
        let reply = Reply::Then(Box::new(Then {
            first: first_tx,
            build,
            next: [b_tx, c_tx],
            permits: spare,
            generation: generation.0,
        }));
        let queued = match encode_request(first) {
            Ok(record) => {
                let opts = RequestOptions::pinned(generation);
                self.submit(Command::Request, A::TYPE, record, opts, reply, t1.span())
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = queued {
            t1.finish::<()>(&Err(e.clone()), slow);
            return Err(e);
        }
        let at = t1.started().unwrap_or_else(Instant::now);
        let t2 = telemetry::Request::start_at(B::TYPE, first.route(), at);
        let t3 = telemetry::Request::start_at(C::TYPE, first.route(), at);
        // Answered in order: once the last is in (or dropped unsent), the
        // others are too.
        let unsent = || Err(Error::connection_lost(false));
        let r3 = c_rx.await.unwrap_or_else(|_| unsent());
        let r1 = first_rx.await.unwrap_or_else(|_| Err(Error::closed()));
        let r2 = b_rx.await.unwrap_or_else(|_| unsent());
        let now = Some(Instant::now());
        t1.finish_reply_at(&r1, slow, now);
        t2.finish_reply_at(&r2, slow, now);
        t3.finish_reply_at(&r3, slow, now);
        self.note_in_flight();
        Ok((
            r1.and_then(decode_body::<RA>),
            r2.and_then(decode_body::<RB>),
            r3.and_then(decode_body::<RC>),
        ))
    }
}
