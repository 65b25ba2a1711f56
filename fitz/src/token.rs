//! Where CONNECT tokens come from.
//!
//! The client asks its [`TokenProvider`] for a fresh token before **every**
//! connection attempt, reconnects included, so short-lived JWTs can be
//! refreshed without rebuilding the client. The token is sent as-is; the
//! client never parses it.

use std::future::Future;
use std::pin::Pin;

/// Error a token provider may fail with.
pub type TokenError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`TokenProvider`] returns.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + 'a>>;

/// Supplies the token sent in CONNECT.
///
/// Implemented for [`StaticToken`] and for any async closure:
///
/// ```
/// # async fn fetch_jwt() -> Result<String, std::io::Error> { Ok(String::new()) }
/// let client = fitz::Client::builder("tcp://127.0.0.1:4091", || async {
///     fetch_jwt().await
/// });
/// ```
///
/// A failing provider fails that connection attempt with a retryable
/// [`crate::ErrorKind::Connection`] error; reconnection keeps trying.
pub trait TokenProvider: Send + Sync + 'static {
    /// Returns the token for the next connection attempt.
    fn token(&self) -> TokenFuture<'_>;
}

impl<F, Fut, E> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, E>> + Send + 'static,
    E: Into<TokenError>,
{
    fn token(&self) -> TokenFuture<'_> {
        let fut = self();
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// A fixed token, sent on every attempt. [`StaticToken::anonymous`] is the
/// empty token anonymous brokers accept.
#[derive(Clone, Default)]
pub struct StaticToken(String);

impl StaticToken {
    /// Wraps a fixed token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The empty token, for brokers running without authentication.
    pub fn anonymous() -> Self {
        Self(String::new())
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are credentials: never print them.
        f.write_str("StaticToken(..)")
    }
}

impl TokenProvider for StaticToken {
    fn token(&self) -> TokenFuture<'_> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}
