//! Typed JSON payloads (feature `serde`, on by default), through the
//! crate's one JSON codec (`crate::json`).

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CallOptions, HandlerError, Rpc, RpcRequest, RpcWorker, worker};
use crate::error::Result;

impl Rpc {
    /// [`Rpc::request`] with JSON in and out: sends `request` encoded as
    /// JSON and decodes the whole response as a `Resp`.
    ///
    /// Errors as [`Rpc::request`], plus
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) when `request`
    /// cannot be encoded (nothing is sent) and
    /// [`Decode`](crate::ErrorKind::Decode) when the response is not JSON of
    /// type `Resp` (with `maybe_applied()` true: the worker ran).
    ///
    /// ```no_run
    /// # async fn demo(rpc: fitz::Rpc) -> fitz::Result<()> {
    /// #[derive(serde::Serialize)]
    /// struct Add { a: i64, b: i64 }
    /// let sum: i64 = rpc.request_json("rpc://math/int/add", &Add { a: 2, b: 3 }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the REQUEST was written, the call is
    /// cancelled in the background (RPC CANCEL when the broker supports it), but a
    /// worker may already have run it. Its responses are routed by the call's
    /// UUID, so they never reach another call, and its response handler is
    /// removed. Dropped before it was written, nothing is sent.
    pub async fn request_json<Req, Resp>(&self, route: &str, request: &Req) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.request_json_with(route, request, CallOptions::default())
            .await
    }

    /// [`Rpc::request_json`] with options.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the REQUEST was written, the call is
    /// cancelled in the background (RPC CANCEL when the broker supports it), but a
    /// worker may already have run it. Its responses are routed by the call's
    /// UUID, so they never reach another call, and its response handler is
    /// removed. Dropped before it was written, nothing is sent.
    pub async fn request_json_with<Req, Resp>(
        &self,
        route: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = crate::json::encode(request)?;
        let response = self.request_with(route, body, options).await?;
        let what = format_args!("the response from {route}");
        crate::json::decode(&response, what).map_err(|e| e.applied_if(true))
    }

    /// [`Rpc::serve`] with JSON in and out: the handler gets the decoded
    /// request (and the [`RpcRequest`] for its deadline and cancellation);
    /// its `Ok` value is sent as JSON. A body that is not a `Req` is answered
    /// with error `6010` without calling the handler, and so is an `Ok`
    /// value that cannot be encoded.
    ///
    /// ```no_run
    /// # async fn demo(rpc: fitz::Rpc) -> fitz::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Add { a: i64, b: i64 }
    /// let worker = rpc
    ///     .serve_json("rpc://math/int/add", 8, |add: Add, _req| async move {
    ///         Ok::<_, fitz::rpc::HandlerError>(add.a + add.b)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, the worker registration is
    /// removed (or never installed) and no handler runs.
    pub async fn serve_json<Req, Resp, H, Fut, E>(
        &self,
        pattern: &str,
        max_concurrent: u32,
        handler: H,
    ) -> Result<RpcWorker>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Fn(Req, RpcRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Resp, E>> + Send + 'static,
        E: Into<HandlerError> + Send + 'static,
    {
        let typed = move |request: RpcRequest| {
            // Decoded before the handler runs, so a bad body never reaches it.
            let called = request.json::<Req>().map(|input| handler(input, request));
            async move {
                let output = called?.await.map_err(Into::<HandlerError>::into)?;
                Ok::<_, HandlerError>(crate::json::encode(&output)?)
            }
        };
        worker::start(&self.conn, pattern, max_concurrent, worker::erase(typed)).await
    }
}
