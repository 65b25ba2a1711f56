//! An RPC request and its response handler, queued as one command.

use bytes::Bytes;

use super::command::{Command, Confirm, PushCmd, Reply};
use super::{Connection, Generation, PushKey, PushStream, mailbox};
use crate::error::{Error, Result};
use crate::options::SubscriptionOptions;

impl Connection {
    /// [`Connection::send_committed`] with a push handler of type
    /// `handler_ty` for `key`, installed by the actor just before it handles
    /// the record (one command, so no response can arrive unclaimed, and no
    /// acknowledgement of the installation to wait for). The handler is
    /// installed only if the record was filed in a session; its stream ends
    /// when it never is.
    ///
    /// Resolves, with the handler's stream, as soon as the command is
    /// queued (no confirmation to wait for); errors before that as
    /// `send_committed`. A failure to write the record afterwards (the
    /// errors `send_committed` would report then: stale session, session
    /// lost, closed, not connected) ends the stream with that error instead.
    pub(crate) async fn send_committed_with_handler<G>(
        &self,
        ty: u16,
        generation: Generation,
        handler: (u16, PushKey, SubscriptionOptions),
        build: impl FnOnce() -> Result<(Bytes, G)>,
    ) -> Result<PushStream> {
        if self.shared.is_closed() {
            return Err(Error::closed());
        }
        let (handler_ty, key, options) = handler;
        let (mailbox_tx, mailbox_rx) = mailbox(options);
        let confirm = Confirm::Stream(mailbox_tx.failer());
        let sink = self.shared.next_handle();
        let push = PushCmd {
            ty: handler_ty,
            key,
            sink,
            mailbox: mailbox_tx,
            reply: None,
        };
        // Built now: dropped at any await below, it removes the handler.
        let stream = PushStream::new(self.clone(), sink, mailbox_rx);
        let wrap = move |mut out: super::Outbound| {
            out.reply = Reply::Committed(confirm);
            Command::Call { out, push }
        };
        self.send_committed_traced(ty, generation, build, wrap, false)
            .await
            .map(|()| stream)
    }
}
