//! The connection layer. One TCP port serves both HTTPS and plain HTTP: the
//! first byte tells them apart (a TLS ClientHello starts with 0x16). Each
//! connection is served by hyper's HTTP/1.1 over warp's routes, with:
//!
//! - a cap on open connections (`connections.max_open`), counted the same for
//!   TLS and plain, WebSockets included, from accept (so a TLS handshake holds a
//!   slot) until the socket is closed; at the cap new clients wait in the
//!   kernel's listen queue;
//! - a TLS handshake timeout (also for the first byte),
//! - a request-header timeout: once a request starts arriving, its headers must
//!   be complete within `connections.header_timeout_secs`;
//! - an idle keep-alive timeout between requests;
//! - early answers that arrive intact ([`service`]) and a lingering close
//!   ([`io`]);
//! - graceful shutdown: stop accepting, let requests in flight finish, close
//!   idle connections.

pub mod io;
pub mod service;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::config::ConnectionsConfig;
use crate::tls::Tls;
use io::{Activity, Phase, Stream, Watched};
use service::{ConnService, RequestBody};
use warp::http::Request;

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Who is on the other end of a request's connection, and whether it came over
/// TLS. Every request carries one (read it with [`peer`]).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// A filter yielding the request's [`Peer`] (`None` only for requests that did
/// not come through [`serve`], such as warp's test requests).
pub fn peer() -> impl warp::Filter<Extract = (Option<Peer>,), Error = Infallible> + Clone {
    warp::ext::optional::<Peer>()
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_open: u32,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
}

impl Limits {
    pub fn from_config(config: &ConnectionsConfig) -> Limits {
        Limits {
            max_open: config.max_open,
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            handshake_timeout: Duration::from_secs(config.tls_handshake_timeout_secs),
        }
    }
}

/// Accepts and serves connections until `stop` completes, then stops
/// accepting, asks every connection to finish gracefully, and returns once all
/// are closed (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    tls: Option<Arc<Tls>>,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_open as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let acceptor = tls.map(|tls| TlsAcceptor::from(tls.server_config()));
    let service = TowerToHyperService::new(warp::service(routes));
    let mut stop = std::pin::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or similar: pause instead of
                    // spinning, and keep serving the connections we have.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let connection = Connection {
            limits,
            acceptor: acceptor.clone(),
            stop: stop_rx.clone(),
        };
        tokio::spawn(connection.run(stream, addr, permit, service.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until its socket is closed.
    let _ = slots.acquire_many(limits.max_open).await;
}

struct Connection {
    limits: Limits,
    acceptor: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run<S, B>(
        mut self,
        tcp: TcpStream,
        addr: SocketAddr,
        permit: OwnedSemaphorePermit,
        inner: S,
    ) where
        S: hyper::service::Service<
                Request<RequestBody>,
                Response = warp::http::Response<B>,
                Error = Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Small realtime frames leave at once instead of waiting behind an
        // unacknowledged one (Nagle), which costs tens of ms under fan-out.
        let _ = tcp.set_nodelay(true);
        let Some((stream, tls)) = self.open(tcp).await else {
            return;
        };
        let activity = Arc::new(Activity::new());
        let io = Watched::new(stream, activity.clone(), permit);
        let service = ConnService {
            inner,
            peer: Peer { addr, tls },
            activity: activity.clone(),
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let mut closing = false;
        loop {
            let deadline = match activity.phase() {
                (Phase::Idle, since) => Some(since + self.limits.idle_timeout),
                (Phase::Head, since) => Some(since + self.limits.header_timeout),
                (Phase::Busy | Phase::Upgraded, _) => None,
            };
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, %addr, "connection ended with an error");
                    }
                    return;
                }
                () = timer => match activity.phase().0 {
                    // Nothing of a request yet: close as if the server stopped.
                    Phase::Idle if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    // Headers trickling in too slowly, or an idle connection
                    // that did not close: drop it.
                    Phase::Idle | Phase::Head => {
                        tracing::debug!(%addr, "closing a connection that sent no complete request in time");
                        return;
                    }
                    Phase::Busy | Phase::Upgraded => {}
                },
                () = activity.changed.notified() => {}
                changed = self.stop.changed(), if !closing => {
                    if changed.is_err() || *self.stop.borrow() {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }

    /// Waits for the first byte, then makes the TLS handshake if it starts one;
    /// both within the handshake timeout. `None` when the client sent nothing,
    /// went away, or failed the handshake.
    async fn open(&self, tcp: TcpStream) -> Option<(Stream, bool)> {
        let timeout = self.limits.handshake_timeout;
        let start = tokio::time::Instant::now();
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(timeout, tcp.peek(&mut first)).await;
        match peeked {
            Ok(Ok(1)) => {}
            _ => return None,
        }
        match &self.acceptor {
            Some(acceptor) if first[0] == TLS_HANDSHAKE_RECORD => {
                let handshake = acceptor.accept(tcp);
                match tokio::time::timeout_at(start + timeout, handshake).await {
                    Ok(Ok(stream)) => Some((Stream::Tls(Box::new(stream)), true)),
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        None
                    }
                }
            }
            _ => Some((Stream::Plain(tcp), false)),
        }
    }
}
