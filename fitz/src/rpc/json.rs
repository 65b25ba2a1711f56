//! Typed JSON payloads (feature `serde`, on by default).

use std::future::Future;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CallOptions, HandlerError, Rpc, RpcRequest, WorkerHandle, worker};
use crate::error::{Error, Result};

impl Rpc {
    /// Calls `route` with `request` as JSON and decodes the whole response
    /// as JSON.
    ///
    /// Errors as [`Rpc::request`], plus
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) when `request`
    /// cannot be serialized (nothing is sent) and
    /// [`Protocol`](crate::ErrorKind::Protocol) when the response is not a
    /// `Resp` (`maybe_applied()`: the worker ran).
    ///
    /// ```no_run
    /// # async fn demo(rpc: fitz::Rpc) -> fitz::Result<()> {
    /// #[derive(serde::Serialize)]
    /// struct Add { a: i64, b: i64 }
    /// let sum: i64 = rpc.call_json("rpc://math/int/add", &Add { a: 2, b: 3 }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn call_json<Req, Resp>(&self, route: &str, request: &Req) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.call_json_with(route, request, CallOptions::default())
            .await
    }

    /// [`Rpc::call_json`] with options.
    pub async fn call_json_with<Req, Resp>(
        &self,
        route: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = serde_json::to_vec(request).map_err(|e| {
            Error::invalid(format!("the request cannot be serialized: {e}")).with_source(e)
        })?;
        let response = self.request_with(route, body, options).await?;
        serde_json::from_slice(&response).map_err(|e| {
            Error::protocol(format!("the response is not the expected JSON: {e}"))
                .with_source(e)
                .applied_if(true)
        })
    }

    /// [`Rpc::serve`] with JSON in and out: the handler gets the decoded
    /// request (and the [`RpcRequest`] for its deadline and cancellation);
    /// its `Ok` value is sent as JSON. A body that is not a `Req` is answered
    /// with error `6010` without calling the handler.
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
    pub async fn serve_json<Req, Resp, H, Fut, E>(
        &self,
        pattern: &str,
        max_concurrent: u32,
        handler: H,
    ) -> Result<WorkerHandle>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Fn(Req, RpcRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Resp, E>> + Send + 'static,
        E: Into<HandlerError> + Send + 'static,
    {
        let typed = move |request: RpcRequest| {
            let decoded =
                serde_json::from_slice::<Req>(request.body()).map(|input| handler(input, request));
            async move {
                let output = decoded
                    .map_err(|e| HandlerError::failed(format!("invalid JSON request: {e}")))?
                    .await
                    .map_err(Into::<HandlerError>::into)?;
                serde_json::to_vec(&output).map(Bytes::from).map_err(|e| {
                    HandlerError::failed(format!("the response cannot be serialized: {e}"))
                })
            }
        };
        worker::start(&self.conn, pattern, max_concurrent, worker::erase(typed)).await
    }
}
