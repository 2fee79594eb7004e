//! The per-connection service around warp's: it tags each request with the
//! peer, tracks when responses finish (for the idle timeout), and makes early
//! answers arrive. When a handler answers without reading the request body
//! (401 on an upload without a token, an error mid-upload), a small rest of
//! the body is read and dropped so the connection stays usable; a larger one
//! gets `Connection: close`, and the stream's lingering close lets the client
//! read the whole answer instead of a reset.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use warp::http::{HeaderValue, Request, Response, StatusCode, header};

use super::Peer;
use super::io::Activity;

/// At most this much of an unread request body is read and dropped after the
/// answer, within this time, to keep the connection open.
const DRAIN_BYTES: u64 = 256 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

type Slot = Arc<Mutex<Option<Incoming>>>;

/// A request body that, when dropped before its end, leaves the rest in a
/// slot for the service to deal with.
pub struct RequestBody {
    inner: Option<Incoming>,
    ended: bool,
    leftover: Slot,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(Body::size_hint)
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take()
            && !self.ended
            && !inner.is_end_stream()
        {
            *self
                .leftover
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(inner);
        }
    }
}

/// A response body that tells the connection when it is done (sent, or
/// dropped because the client went away).
pub struct ResponseBody<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B> Drop for ResponseBody<B> {
    fn drop(&mut self) {
        self.activity.request_finished();
    }
}

impl<B: Body + Unpin> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// warp's service for one connection.
#[derive(Clone)]
pub struct ConnService<S> {
    pub inner: S,
    pub peer: Peer,
    pub activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: hyper::service::Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body + Unpin + Send + 'static,
{
    type Response = Response<ResponseBody<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.activity.request_started();
        request.extensions_mut().insert(self.peer);
        let expects_continue = request
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let leftover: Slot = Arc::new(Mutex::new(None));
        let request = request.map(|body| RequestBody {
            inner: Some(body),
            ended: false,
            leftover: leftover.clone(),
        });
        let inner = self.inner.clone();
        let activity = self.activity.clone();
        let span = tracing::info_span!("request", remote = %self.peer.addr, tls = self.peer.tls);
        Box::pin(tracing::Instrument::instrument(
            async move {
                // The handler's future (and with it the request body, if unread)
                // is gone once this completes.
                let Ok(mut response) = inner.call(request).await;
                let unread = leftover
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(body) = unread {
                    // A client waiting for "100 Continue" sends nothing more once
                    // it has the final answer: reading would only invite the body.
                    let drained = !expects_continue && drain(body).await;
                    if !drained {
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                }
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    activity.upgraded();
                }
                Ok(response.map(|inner| ResponseBody { inner, activity }))
            },
            span,
        ))
    }
}

/// Reads and drops the rest of a request body if it is small and arrives
/// promptly; whether the body was read to its end.
async fn drain(mut body: Incoming) -> bool {
    if body.size_hint().lower() > DRAIN_BYTES {
        return false;
    }
    let read = async {
        let mut total = 0u64;
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                None => return true,
                Some(Err(_)) => return false,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        total += data.len() as u64;
                        if total > DRAIN_BYTES {
                            return false;
                        }
                    }
                }
            }
        }
    };
    tokio::time::timeout(DRAIN_TIME, read)
        .await
        .unwrap_or(false)
}
