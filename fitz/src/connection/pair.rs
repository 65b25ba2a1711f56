//! Two requests written back to back and answered separately: the second
//! does not wait for the first's answer, so both usually leave in one write
//! and cost one round trip.

use fitz_protocol::{Message, ReplyBody};
use tokio::sync::oneshot;

use super::command::{Command, Reply};
use super::{Connection, RequestOptions, decode_body, encode_record};
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
        let t2 = telemetry::Request::start(B::TYPE, second.route());
        let rx2 = self
            .queue_request(encode_record(second), B::TYPE, opts, &t2)
            .await;
        let r1 = rx1.await.unwrap_or_else(|_| Err(Error::closed()));
        t1.finish_reply(&r1, slow);
        let r2 = match rx2 {
            Ok(rx) => rx.await.unwrap_or_else(|_| Err(Error::closed())),
            Err(e) => Err(e),
        };
        t2.finish_reply(&r2, slow);
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
