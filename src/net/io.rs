//! The byte stream under hyper: plain TCP or TLS over TCP, watched for
//! activity (for the connection's timeouts) and closed with a lingering close.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_rustls::server::TlsStream;

/// After the server closes its side, what the client still sends is read and
/// dropped until it closes too, stays silent this long, or the total time
/// runs out. Closing with unread data makes the kernel send a reset, which can
/// destroy the response the client has not read yet (a client may well finish
/// sending a large upload before it reads the early answer).
const LINGER_SILENCE: Duration = Duration::from_secs(2);
const LINGER_TOTAL: Duration = Duration::from_secs(30);

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn into_tcp(self) -> TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.into_inner().0,
        }
    }
}

/// Where a connection is between requests, for its timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request (the idle keep-alive timeout runs).
    Idle,
    /// A request has started arriving (the header timeout runs).
    Head,
    /// A request is being handled or its response sent (no timeout here: the
    /// handlers bound their own work).
    Busy,
    /// Handed over to a WebSocket.
    Upgraded,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Idle,
            1 => Phase::Head,
            2 => Phase::Busy,
            _ => Phase::Upgraded,
        }
    }
}

/// A connection's phase and when it began, shared by the stream (which sees
/// bytes arrive), the service (which sees requests and responses) and the
/// connection task (which enforces the timeouts).
pub struct Activity {
    phase: AtomicU8,
    since_ms: AtomicU64,
    in_flight: AtomicU64,
    start: Instant,
    pub changed: Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            phase: AtomicU8::new(Phase::Idle as u8),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            start: Instant::now(),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn set(&self, phase: Phase) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
        self.changed.notify_one();
    }

    pub fn phase(&self) -> (Phase, Instant) {
        let phase = Phase::from_u8(self.phase.load(Ordering::Acquire));
        let since = self.start + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        (phase, since)
    }

    /// Bytes arrived: an idle connection starts receiving a request head.
    fn bytes_arrived(&self) {
        if self
            .phase
            .compare_exchange(
                Phase::Idle as u8,
                Phase::Head as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// A request head was parsed and handed to the service.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.phase().0 != Phase::Upgraded {
            self.set(Phase::Busy);
        }
    }

    /// A response was sent completely (or abandoned).
    pub fn request_finished(&self) {
        let left = self
            .in_flight
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        if left == 0 && self.phase().0 == Phase::Busy {
            self.set(Phase::Idle);
        }
    }

    pub fn upgraded(&self) {
        self.set(Phase::Upgraded);
    }
}

/// The stream hyper reads and writes. It tells [`Activity`] when bytes arrive,
/// holds the connection's slot (a semaphore permit) until the socket is really
/// closed, and when the server closes its side, lingers: reads and drops what
/// the client still sends, briefly, before closing.
pub struct Watched {
    stream: Option<Stream>,
    activity: Arc<Activity>,
    permit: Option<OwnedSemaphorePermit>,
    shut_down: bool,
    read_eof: bool,
}

impl Watched {
    pub fn new(stream: Stream, activity: Arc<Activity>, permit: OwnedSemaphorePermit) -> Watched {
        Watched {
            stream: Some(stream),
            activity,
            permit: Some(permit),
            shut_down: false,
            read_eof: false,
        }
    }

    fn stream(&mut self) -> io::Result<&mut Stream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let (Some(stream), Some(permit)) = (self.stream.take(), self.permit.take()) else {
            return;
        };
        // Only a close the server chose (hyper shut the stream down after a
        // response) lingers; a client that already closed, or a connection
        // dropped for a timeout, is closed at once.
        if !self.shut_down || self.read_eof {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream.into_tcp(), permit));
        }
    }
}

async fn linger(mut tcp: TcpStream, _permit: OwnedSemaphorePermit) {
    // Normally already done by the TLS close or hyper's shutdown.
    let _ = tcp.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER_TOTAL;
    let mut buf = vec![0u8; 64 * 1024];
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(LINGER_SILENCE, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = match self.stream()? {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        };
        if let Poll::Ready(Ok(())) = result {
            if buf.filled().len() > before {
                self.activity.bytes_arrived();
            } else if buf.remaining() > 0 {
                self.read_eof = true;
            }
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream()? {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream()? {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Some(Stream::Plain(tcp)) => tcp.is_write_vectored(),
            Some(Stream::Tls(tls)) => tls.is_write_vectored(),
            None => false,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream()? {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut_down = true;
        match self.stream()? {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
