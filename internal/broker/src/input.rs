//! What a connection's unfinished input may hold: the broker-wide budget of
//! pending bytes and the frame-completion deadline.
//!
//! Every connection reads through a [`Metered`] stream that counts the bytes
//! it holds which no complete frame has taken yet (on TCP the rest of the
//! read buffer; on WebSocket whatever tungstenite buffered since the last
//! message). The reader reports progress with [`Meter::settle`].
//!
//! * **Budget.** A connection at a frame boundary reads up to
//!   [`FREE_READ`] bytes freely. Reading more while it holds unfinished
//!   input needs permits of one broker-wide semaphore
//!   ([`crate::config::Limits::max_pending_input`] bytes): without them the
//!   read waits, the socket's receive window closes and the sender is held
//!   by TCP flow control. Held input is therefore at most the budget plus
//!   `FREE_READ` per connection, however many connections stall in the
//!   middle of frames.
//! * **Deadline.** While unfinished input is held, a frame must complete
//!   within [`crate::config::Limits::frame_timeout`] of the last one (or of
//!   the first byte). [`Meter::overdue`] tells the reader when that passed;
//!   it closes the connection with `frame timeout`, which also returns the
//!   connection's permits.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::PollSemaphore;

/// Bytes a connection holding no unfinished input may read without permits.
pub(crate) const FREE_READ: usize = 4 * 1024;

/// Bytes read per call once permits are needed.
pub(crate) const CHARGED_READ: usize = 16 * 1024;

/// The broker-wide budget of unfinished input.
#[derive(Clone)]
pub(crate) struct InputBudget {
    sem: Arc<Semaphore>,
    frame_timeout: Duration,
}

impl InputBudget {
    pub(crate) fn new(bytes: usize, frame_timeout: Duration) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
            frame_timeout,
        }
    }

    /// Bytes of the budget not held by any connection.
    pub(crate) fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// A meter for one connection.
    pub(crate) fn meter(&self) -> Arc<Meter> {
        Arc::new(Meter {
            sem: self.sem.clone(),
            frame_timeout: self.frame_timeout,
            state: Mutex::new(MeterState::default()),
        })
    }
}

/// One connection's unfinished input. Shared by the [`Metered`] stream and
/// the connection's reader; releases its permits when dropped.
pub(crate) struct Meter {
    sem: Arc<Semaphore>,
    frame_timeout: Duration,
    state: Mutex<MeterState>,
}

#[derive(Default)]
struct MeterState {
    /// Bytes read that no complete frame has taken yet.
    held: usize,
    /// Permits taken from the budget (forgotten; given back explicitly).
    charged: usize,
    /// When the current unfinished input started (first byte, or the last
    /// completed frame): the deadline runs from here.
    since: Option<Instant>,
}

impl Meter {
    /// The reader's report: `held` bytes remain unfinished after the frames
    /// it took (0 at a frame boundary). Taking a frame restarts the deadline.
    pub(crate) fn settle(&self, held: usize) {
        let mut s = self.state.lock();
        s.held = held;
        s.since = (held > 0).then(Instant::now);
        let keep = held.saturating_sub(FREE_READ);
        if s.charged > keep {
            self.sem.add_permits(s.charged - keep);
            s.charged = keep;
        }
    }

    /// The frame-completion timeout.
    pub(crate) fn frame_timeout(&self) -> Duration {
        self.frame_timeout
    }

    /// When the current frame must be complete, if one is under way.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.state.lock().since.map(|t| t + self.frame_timeout)
    }

    /// True when a frame has been under way for longer than the timeout.
    pub(crate) fn overdue(&self) -> bool {
        self.deadline().is_some_and(|d| d <= Instant::now())
    }

    /// How many bytes the next read may take, charging the budget when the
    /// connection already holds unfinished input. `Pending` while the budget
    /// has no room (the semaphore wakes the task).
    pub(crate) fn poll_room(
        &self,
        cx: &mut Context<'_>,
        permits: &mut PollSemaphore,
    ) -> Poll<usize> {
        let (held, charged) = {
            let s = self.state.lock();
            (s.held, s.charged)
        };
        if held < FREE_READ {
            return Poll::Ready(FREE_READ - held);
        }
        // Everything held beyond the free share, plus the next read.
        let want = held - FREE_READ + CHARGED_READ;
        if want > charged {
            let need = u32::try_from(want - charged).unwrap_or(u32::MAX);
            match ready!(permits.poll_acquire_many(cx, need)) {
                Some(p) => p.forget(),
                // Never closed; read freely rather than hang.
                None => return Poll::Ready(CHARGED_READ),
            }
            self.state.lock().charged += need as usize;
        }
        Poll::Ready(CHARGED_READ)
    }

    /// [`Meter::poll_room`] as a future.
    pub(crate) async fn room(&self, permits: &mut PollSemaphore) -> usize {
        std::future::poll_fn(|cx| self.poll_room(cx, permits)).await
    }

    /// Counts `n` bytes just read.
    pub(crate) fn read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut s = self.state.lock();
        if s.held == 0 {
            s.since = Some(Instant::now());
        }
        s.held += n;
    }

    /// A semaphore handle for [`Meter::poll_room`].
    pub(crate) fn permits(&self) -> PollSemaphore {
        PollSemaphore::new(self.sem.clone())
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let charged = self.state.get_mut().charged;
        if charged > 0 {
            self.sem.add_permits(charged);
        }
    }
}

/// A byte stream whose reads are limited and charged by a [`Meter`], for
/// readers that buffer on their own (tungstenite). The TCP reader charges
/// its own buffer directly.
pub(crate) struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
    permits: PollSemaphore,
}

impl<S> Metered<S> {
    pub(crate) fn new(inner: S, meter: Arc<Meter>) -> Self {
        let permits = meter.permits();
        Self {
            inner,
            meter,
            permits,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let room = ready!(this.meter.poll_room(cx, &mut this.permits));
        let limit = room.min(buf.remaining());
        // tungstenite reads into initialized memory, so this costs nothing.
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(limit));
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        buf.advance(n);
        this.meter.read(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
