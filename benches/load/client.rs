//! The WebSocket client driver, the same for lanchat and the wire server.
//!
//! Every connection has a reader task that parses every frame (a message counts as
//! delivered once its recipient has parsed the frame) and a sink the sender uses.
//! A message body starts with the send time, in nanoseconds since the bench
//! started, so the recipient computes the latency on its own.
//!
//! Frames are told apart the same way on both servers:
//! - lanchat: `{"type":"ack","client_id"}` is an ack; `{"type":"message.created",
//!   "message":{"body","client_id"}}` is a delivery, unless the client id is the
//!   connection's own (the copy lanchat sends to the sender's connections);
//!   `{"type":"error","client_id"}` answers one of our sends.
//! - wire server: it sends back the very frame that was sent, a
//!   `{"type":"message.send","client_id","body"}`: to its sender that is the ack (the
//!   client id carries the sender's prefix), to everyone else a delivery.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::servers::Res;

pub type Ws = WebSocketStream<Stream>;

/// A WebSocket's byte stream: plain TCP, or TLS over TCP for `wss://`.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

static TLS_CLIENT: OnceLock<Mutex<Option<Arc<rustls::ClientConfig>>>> = OnceLock::new();

/// `wss://` connections trust only this CA (DER) from now on.
pub fn trust(ca: &[u8]) -> Res<()> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.to_vec()))
        .map_err(|e| format!("the server's CA: {e}"))?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    *TLS_CLIENT
        .get_or_init(|| Mutex::new(None))
        .lock()
        .map_err(|_| "poisoned")? = Some(Arc::new(config));
    Ok(())
}

/// TCP (TCP_NODELAY, as browsers do) and, for `wss://`, the TLS handshake.
async fn open_stream(url: &str) -> Res<Stream> {
    let (secure, rest) = match url.split_once("://") {
        Some(("wss", rest)) => (true, rest),
        Some((_, rest)) => (false, rest),
        None => return Err(format!("not a URL: {url}")),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    if !secure {
        return Ok(Stream::Plain(tcp));
    }
    let config = TLS_CLIENT
        .get()
        .and_then(|c| c.lock().ok().and_then(|c| c.clone()))
        .ok_or("wss:// without a trusted CA (client::trust)")?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {authority}: {e}"))?;
    Ok(Stream::Tls(Box::new(tls)))
}
pub type Sink = SplitSink<Ws, Message>;
pub type Source = SplitStream<Ws>;

/// The bench's clock origin: send times in bodies are nanoseconds since it.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    client_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<IncomingMessage<'a>>,
    error: Option<IncomingError>,
    heartbeat_ms: Option<u64>,
}

#[derive(Deserialize)]
struct IncomingMessage<'a> {
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
    #[serde(borrow)]
    client_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct IncomingError {
    code: Option<String>,
}

/// What a frame means to the connection that received it.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Hello {
        heartbeat_ms: Option<u64>,
    },
    Ack,
    /// A delivery, with the send time taken from the body.
    Delivery {
        sent_nanos: Option<u64>,
    },
    Error {
        code: String,
        ours: bool,
    },
    Other,
}

/// Classifies a text frame for a connection whose client ids start with `prefix`.
pub fn classify(text: &str, prefix: &str) -> Kind {
    let Ok(frame) = serde_json::from_str::<Incoming<'_>>(text) else {
        return Kind::Other;
    };
    let ours = |id: &Option<Cow<'_, str>>| id.as_deref().is_some_and(|id| id.starts_with(prefix));
    let sent = |body: &Option<Cow<'_, str>>| {
        body.as_deref()
            .and_then(|b| b.split(' ').next())
            .and_then(|n| n.parse().ok())
    };
    match frame.kind.as_deref() {
        Some("hello") => Kind::Hello {
            heartbeat_ms: frame.heartbeat_ms,
        },
        Some("ack") if ours(&frame.client_id) => Kind::Ack,
        Some("message.created") => match &frame.message {
            Some(message) if !ours(&message.client_id) => Kind::Delivery {
                sent_nanos: sent(&message.body),
            },
            _ => Kind::Other,
        },
        Some("message.send") if ours(&frame.client_id) => Kind::Ack,
        Some("message.send") => Kind::Delivery {
            sent_nanos: sent(&frame.body),
        },
        Some("error") => Kind::Error {
            code: frame
                .error
                .and_then(|e| e.code)
                .unwrap_or_else(|| "unknown".into()),
            ours: ours(&frame.client_id),
        },
        _ => Kind::Other,
    }
}

/// Checks [`classify`] on frames shaped as the contract (shared/spec/API.md) and
/// the wire server send them, so a drift shows up before any measurement.
pub fn self_check() -> Res<()> {
    let cases: &[(&str, Kind)] = &[
        (
            r#"{"type":"hello","user":{"id":1,"username":"a"},"last_event_id":0,"server_version":"0.1.0","heartbeat_ms":30000}"#,
            Kind::Hello {
                heartbeat_ms: Some(30000),
            },
        ),
        (
            r#"{"type":"ack","client_id":"c1-0","message":{"id":5,"conversation_id":1,"sender_id":1,"body":"12 x","client_id":"c1-0"}}"#,
            Kind::Ack,
        ),
        (
            r#"{"event_id":9,"type":"message.created","message":{"id":5,"conversation_id":1,"sender_id":1,"body":"12 x","kind":"text","client_id":"c1-0","reply_to":null,"attachments":[],"reactions":[],"mentions":[],"created_at":1,"edited_at":null,"deleted_at":null}}"#,
            Kind::Other,
        ),
        (
            r#"{"event_id":9,"type":"message.created","message":{"id":5,"conversation_id":1,"sender_id":2,"body":"12 x","client_id":"c2-0"}}"#,
            Kind::Delivery {
                sent_nanos: Some(12),
            },
        ),
        (
            r#"{"type":"error","client_id":"c1-3","error":{"code":"rate_limited","message":"slow down"}}"#,
            Kind::Error {
                code: "rate_limited".into(),
                ours: true,
            },
        ),
        (
            r#"{"type":"delivered","conversation_id":1,"user_id":2,"message_id":5}"#,
            Kind::Other,
        ),
        (
            r#"{"type":"presence","user_id":2,"online":true,"last_seen_at":null}"#,
            Kind::Other,
        ),
        (
            r#"{"type":"message.send","conversation_id":1,"body":"77 x","client_id":"c1-0"}"#,
            Kind::Ack,
        ),
        (
            r#"{"type":"message.send","conversation_id":1,"body":"77 x","client_id":"c12-0"}"#,
            Kind::Delivery {
                sent_nanos: Some(77),
            },
        ),
    ];
    for (frame, want) in cases {
        let got = classify(frame, "c1-");
        if &got != want {
            return Err(format!(
                "self-check: {frame} classified {got:?}, expected {want:?}"
            ));
        }
    }
    Ok(())
}

/// Counters shared by all connections of one measured phase.
pub struct Phase {
    delivered: AtomicU64,
    expected: u64,
    done: Notify,
    last_delivery: Mutex<Option<Instant>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// A connection of the phase was lost: the expected count can never be reached.
    broken: std::sync::atomic::AtomicBool,
    stop: watch::Sender<bool>,
}

impl Phase {
    pub fn new(expected: u64) -> Arc<Phase> {
        Arc::new(Phase {
            delivered: AtomicU64::new(0),
            expected,
            done: Notify::new(),
            last_delivery: Mutex::new(None),
            errors: Mutex::new(BTreeMap::new()),
            broken: std::sync::atomic::AtomicBool::new(false),
            stop: watch::channel(false).0,
        })
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    pub fn last_delivery(&self) -> Option<Instant> {
        *self.last_delivery.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn error(&self, what: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default() += 1;
    }

    /// Marks the phase as unable to complete (a connection was lost) and wakes the waiter.
    fn broke(&self, why: String) {
        self.error(why);
        self.broken.store(true, Ordering::Release);
        self.done.notify_waiters();
    }

    /// Waits until every expected delivery arrived, a connection was lost, or the
    /// timeout. True when complete.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.done.notified();
            if self.delivered() >= self.expected {
                return true;
            }
            if self.broken.load(Ordering::Acquire) {
                return false;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.delivered() >= self.expected;
            }
        }
    }

    /// Tells every reader of the phase to stop.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// What one connection's reader gives back.
#[derive(Default)]
pub struct ReaderOutcome {
    pub latencies: Vec<u64>,
}

/// Per-connection wiring for the reader.
pub struct ReaderHooks {
    /// Client-id prefix of this connection's own sends.
    pub prefix: String,
    /// Gets a permit back for each ack or error answering our sends.
    pub window: Option<Arc<Semaphore>>,
    /// Told of each delivery (P1 waits for it before the next send).
    pub arrivals: Option<mpsc::UnboundedSender<()>>,
}

/// An open, greeted connection.
pub struct Conn {
    pub sink: Sink,
    pub source: Source,
    pub heartbeat_ms: Option<u64>,
}

/// Connects and waits for the server's hello.
pub async fn connect(url: &str) -> Res<Conn> {
    let config = crate::wire::ws_config().max_message_size(Some(16 << 20));
    let stream = open_stream(url)
        .await
        .map_err(|e| format!("connect {}: {e}", redact(url)))?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("connect {}: {e}", redact(url)))?;
    let (sink, mut source) = ws.split();
    let hello = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = source.next().await {
            match frame {
                Ok(Message::Text(text)) => match classify(&text, "\u{0}") {
                    Kind::Hello { heartbeat_ms } => return Ok(heartbeat_ms),
                    _ => return Err(format!("first frame is not a hello: {text}")),
                },
                Ok(Message::Close(frame)) => return Err(format!("closed at once: {frame:?}")),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("closed before the hello".to_owned())
    })
    .await
    .map_err(|_| "no hello within 30 s".to_owned())??;
    Ok(Conn {
        sink,
        source,
        heartbeat_ms: hello,
    })
}

fn redact(url: &str) -> String {
    match url.split_once("token=") {
        Some((head, _)) => format!("{head}token=…"),
        None => url.to_owned(),
    }
}

/// Connects many URLs, `parallel` handshakes at a time, retrying a failed one
/// a few times (a listen backlog can overflow under a burst).
pub async fn connect_all(urls: Vec<String>, parallel: usize) -> Res<Vec<Conn>> {
    let results: Vec<Res<Conn>> = futures_util::stream::iter(urls)
        .map(|url| async move {
            let mut last = String::new();
            for attempt in 0..5u64 {
                match connect(&url).await {
                    Ok(conn) => return Ok(conn),
                    Err(err) => last = err,
                }
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            }
            Err(last)
        })
        .buffered(parallel.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Starts the reader of a connection for a phase.
pub fn spawn_reader(
    mut source: Source,
    hooks: ReaderHooks,
    phase: Arc<Phase>,
) -> JoinHandle<ReaderOutcome> {
    let mut stop = phase.stop.subscribe();
    tokio::spawn(async move {
        let mut outcome = ReaderOutcome::default();
        loop {
            let frame = tokio::select! {
                biased;
                _ = stop.changed() => break,
                frame = source.next() => frame,
            };
            match frame {
                Some(Ok(Message::Text(text))) => match classify(&text, &hooks.prefix) {
                    Kind::Delivery { sent_nanos } => {
                        let at = now_nanos();
                        if let Some(sent) = sent_nanos {
                            outcome.latencies.push(at.saturating_sub(sent));
                        }
                        if let Some(arrivals) = &hooks.arrivals {
                            let _ = arrivals.send(());
                        }
                        let count = phase.delivered.fetch_add(1, Ordering::AcqRel) + 1;
                        if count == phase.expected {
                            *phase
                                .last_delivery
                                .lock()
                                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                            phase.done.notify_waiters();
                        }
                    }
                    Kind::Ack => {
                        if let Some(window) = &hooks.window {
                            window.add_permits(1);
                        }
                    }
                    Kind::Error { code, ours } => {
                        phase.error(format!("error frame: {code}"));
                        if ours && let Some(window) = &hooks.window {
                            window.add_permits(1);
                        }
                    }
                    Kind::Hello { .. } | Kind::Other => {}
                },
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    phase.broke(format!("closed by the server ({code})"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    phase.broke(format!("socket error: {err}"));
                    break;
                }
                None => {
                    phase.broke("socket closed".to_owned());
                    break;
                }
            }
        }
        outcome
    })
}

/// The body filler: plain words, so the search index gets real text.
pub fn filler(bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "hello", "team", "meeting", "report", "lunch", "project", "deadline", "review", "please",
        "thanks", "update", "coffee", "printer", "budget", "client", "schedule",
    ];
    let mut out = String::new();
    let mut i = 0;
    while out.len() < bytes {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(WORDS[i % WORDS.len()]);
        i += 7;
    }
    out.truncate(bytes);
    out.trim_end().to_owned()
}

/// One `message.send` frame. The body is `"<send nanos> <filler>"`; the filler
/// holds only letters and spaces, so no JSON escaping is needed.
pub fn send_frame(conversation_id: i64, prefix: &str, seq: usize, filler: &str) -> Message {
    Message::text(format!(
        r#"{{"type":"message.send","conversation_id":{conversation_id},"body":"{} {filler}","client_id":"{prefix}{seq}"}}"#,
        now_nanos()
    ))
}

/// Sends `count` messages, at most `window` unacknowledged at a time.
pub async fn send_pipelined(
    sink: &mut Sink,
    conversation_id: i64,
    prefix: &str,
    count: usize,
    window: &Semaphore,
    filler: &str,
) -> Res<()> {
    for seq in 0..count {
        window
            .acquire()
            .await
            .map_err(|_| "window closed".to_owned())?
            .forget();
        sink.send(send_frame(conversation_id, prefix, seq, filler))
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    Ok(())
}

/// Holds an idle connection: reads (and drops) what arrives, pings at the
/// server's heartbeat interval, until told to stop.
pub fn hold_idle(
    conn: Conn,
    mut stop: watch::Receiver<bool>,
    lost: Arc<AtomicU64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Conn {
            mut sink,
            mut source,
            heartbeat_ms,
        } = conn;
        let period = Duration::from_millis(heartbeat_ms.unwrap_or(3_600_000).max(1000));
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = beat.tick(), if heartbeat_ms.is_some() => {
                    if sink.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
                        lost.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                frame = source.next() => match frame {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        lost.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = sink.close().await;
    })
}
