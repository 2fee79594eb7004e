//! `GET /api/v1/ws`: one task per socket. It sends `hello`, replays missed events
//! (`?since=`), then forwards the hub's queue to the socket while answering the
//! client's frames. Every inbound frame is rate limited and re-checked against
//! revocation; every write it asks for is authorised by the domain functions.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{StatusCode, header};
use warp::reply::Response;

use super::messages::SendBody;
use super::{bearer_token, query, respond, with_state};
use crate::auth::AuthUser;
use crate::chat::{access, conversations, messages};
use crate::error::{AppError, AppResult};
use crate::hub::{Outbound, RegisterError, Registration, close};
use crate::state::SharedState;
use crate::users::{self, User};

pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// A write that cannot complete this long means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Frames bigger than this are cut off by the protocol layer itself; frames
/// between the configured limit and this get an `error` frame instead.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;
const REPLAY_BATCH: i64 = 500;
/// The protocol layer's read buffer per socket. tungstenite's default (128 KiB,
/// allocated up front) would dominate the memory of idle connections; frames
/// larger than this still work, the buffer grows for them.
const READ_BUFFER: usize = 4096;

type WebSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
type Sink = futures_util::stream::SplitSink<WebSocket, WsMessage>;

/// The parts of a WebSocket upgrade request. The handshake is done here rather
/// than with warp's `ws()` filter, which cannot set the read buffer size.
struct UpgradeRequest {
    key: String,
    on_upgrade: OnUpgrade,
}

fn upgrade_request() -> impl Filter<Extract = (UpgradeRequest,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("connection")
        .and(warp::header::optional::<String>("upgrade"))
        .and(warp::header::optional::<String>("sec-websocket-version"))
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<OnUpgrade>())
        .and_then(
            |connection: Option<String>,
             upgrade: Option<String>,
             version: Option<String>,
             key: Option<String>,
             on_upgrade: Option<OnUpgrade>| async move {
                let wants_upgrade = connection.is_some_and(|c| {
                    c.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                }) && upgrade
                    .is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"));
                let refuse =
                    |message: &'static str| warp::reject::custom(AppError::bad_request(message));
                if !wants_upgrade {
                    return Err(refuse("this endpoint speaks WebSocket only"));
                }
                if version.as_deref().map(str::trim) != Some("13") {
                    return Err(refuse("unsupported WebSocket version (13 is required)"));
                }
                let key = key
                    .filter(|k| !k.trim().is_empty())
                    .ok_or_else(|| refuse("missing Sec-WebSocket-Key"))?;
                let on_upgrade =
                    on_upgrade.ok_or_else(|| refuse("this connection cannot be upgraded"))?;
                Ok(UpgradeRequest { key, on_upgrade })
            },
        )
}

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    warp::path!("ws")
        .and(warp::get())
        .and(with_state(state))
        .and(warp::header::optional::<String>("authorization"))
        .and(query::<WsQuery>())
        .and(upgrade_request())
        .then(upgrade)
        .map(respond)
        .boxed()
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    since: Option<i64>,
}

async fn upgrade(
    state: SharedState,
    header: Option<String>,
    query: WsQuery,
    request: UpgradeRequest,
) -> AppResult<Response> {
    let token = header
        .as_deref()
        .and_then(bearer_token)
        .or(query.token.as_deref())
        .ok_or_else(|| AppError::unauthorized("sign in first: no access token"))?;
    let caller = state.auth.authenticate(token)?;
    if let Some(since) = query.since
        && since < 0
    {
        return Err(AppError::validation(
            "since",
            "since is an event id (0 or more)",
        ));
    }
    let user_id = caller.user_id;
    let record = state
        .db
        .read(move |conn| users::get(conn, user_id))
        .await?
        .ok_or_else(|| AppError::invalid_token("the account no longer exists"))?;
    let registration = state
        .hub
        .register(
            caller.user_id,
            caller.session_id,
            state.config.limits.max_connections_per_user,
        )
        .map_err(|RegisterError::TooManyConnections| AppError::RateLimited {
            retry_after_secs: 5,
        })?;
    let user = record.into_user(true);
    let since = query.since;
    let accept = derive_accept_key(request.key.trim().as_bytes());
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(HARD_FRAME_LIMIT))
        .max_frame_size(Some(HARD_FRAME_LIMIT));
    let on_upgrade = request.on_upgrade;
    tokio::spawn(async move {
        // Dropping the registration (if the upgrade fails) unregisters it.
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "WebSocket upgrade failed");
                return;
            }
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let connection = Connection::new(state, caller, registration);
        connection.run(socket, user, since).await;
    });
    warp::http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Default::default())
        .map_err(AppError::internal)
}

/// A token bucket for inbound frames.
struct RateLimit {
    tokens: f64,
    capacity: f64,
    per_sec: f64,
    last: Instant,
    /// Consecutive refused frames; too many and the connection is closed.
    strikes: u32,
}

impl RateLimit {
    fn new(per_sec: u32) -> RateLimit {
        let per_sec = f64::from(per_sec.max(1));
        RateLimit {
            tokens: per_sec * 2.0,
            capacity: per_sec * 2.0,
            per_sec,
            last: Instant::now(),
            strikes: 0,
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            true
        } else {
            self.strikes += 1;
            false
        }
    }

    /// A client that keeps flooding after being told is closed.
    fn exhausted(&self) -> bool {
        f64::from(self.strikes) > self.capacity
    }
}

enum Flow {
    Continue,
    Close(u16, &'static str),
}

struct Connection {
    state: SharedState,
    caller: AuthUser,
    registration: Registration,
    /// Highest event id written to this socket.
    last_sent: i64,
    limit: RateLimit,
    /// Delivery receipts owed for the frames of the write in progress.
    receipts: Vec<Receipt>,
}

/// A message written to this socket, for its sender's `delivered` receipt.
struct Receipt {
    conversation_id: i64,
    sender: i64,
    message_id: i64,
}

impl Connection {
    fn new(state: SharedState, caller: AuthUser, registration: Registration) -> Connection {
        let limit = RateLimit::new(state.config.limits.ws_frames_per_sec);
        Connection {
            last_sent: registration.last_event_id,
            state,
            caller,
            registration,
            limit,
            receipts: Vec::new(),
        }
    }

    async fn run(mut self, socket: WebSocket, user: User, since: Option<i64>) {
        let (mut sink, mut stream) = socket.split();
        let hello = json!({
            "type": "hello",
            "user": user,
            "last_event_id": self.registration.last_event_id,
            "server_version": env!("CARGO_PKG_VERSION"),
            "heartbeat_ms": HEARTBEAT.as_millis() as u64,
        });
        let start = async {
            sink.send(WsMessage::text(hello.to_string()))
                .await
                .map_err(|_| ())?;
            match since {
                Some(since) => self.replay(&mut sink, since).await,
                None => Ok(()),
            }
        };
        if !matches!(tokio::time::timeout(WRITE_TIMEOUT, start).await, Ok(Ok(()))) {
            return;
        }
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        let mut last_heard = Instant::now();
        let kill = self.registration.kill.clone();
        let outcome = loop {
            tokio::select! {
                biased;
                code = kill.fired() => break Flow::Close(code, close_reason(code)),
                item = self.registration.receiver.recv() => {
                    let Some(item) = item else { break Flow::Close(close::GOING_AWAY, "server shutting down") };
                    // A peer that stops reading blocks the write: the kill switch
                    // (fired when its queue overflows) and a timeout still end it.
                    tokio::select! {
                        written = tokio::time::timeout(WRITE_TIMEOUT, self.write_queued(&mut sink, item)) => {
                            if !matches!(written, Ok(Ok(()))) {
                                return;
                            }
                        }
                        code = kill.fired() => break Flow::Close(code, close_reason(code)),
                    }
                }
                incoming = stream.next() => {
                    let frame = match incoming {
                        Some(Ok(frame)) => frame,
                        Some(Err(err)) => match violation(&err) {
                            Some(close) => break close,
                            None => return,
                        },
                        None => return,
                    };
                    last_heard = Instant::now();
                    match self.handle_frame(&mut sink, frame).await {
                        Ok(Flow::Continue) => {}
                        Ok(close @ Flow::Close(..)) => break close,
                        Err(()) => return,
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > HEARTBEAT * 2 + HEARTBEAT / 2 {
                        break Flow::Close(close::GOING_AWAY, "no answer to heartbeats");
                    }
                    if sink.send(WsMessage::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
            }
        };
        if let Flow::Close(code, reason) = outcome {
            let goodbye = async {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                let _ = sink.send(WsMessage::Close(Some(frame))).await;
                // Read until the peer answers the close: dropping a socket with
                // unread input makes the OS reset it, and the peer might never
                // see the close code. After a protocol violation what is left
                // (the rest of an oversize frame) reads as more violations:
                // skip them.
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(frame) if frame.is_close() => break,
                        Ok(_) => {}
                        Err(err) if violation(&err).is_some() => {}
                        Err(_) => break,
                    }
                }
                let _ = sink.close().await;
            };
            // A peer that does not read gets no goodbye: the socket is dropped.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, goodbye).await;
        }
    }

    /// Writes one queued item, then whatever else is already queued, then flushes
    /// once. Receipts and the latency metric are recorded per write, not per
    /// frame: a busy group delivers many frames per write.
    async fn write_queued(&mut self, sink: &mut Sink, first: Outbound) -> Result<(), ()> {
        let mut item = Some(first);
        let mut written = 0;
        let mut oldest: Option<Instant> = None;
        self.receipts.clear();
        while let Some(current) = item.take() {
            if let Some(text) = self.frame_for(current, &mut oldest) {
                sink.feed(WsMessage::text(text)).await.map_err(|_| ())?;
                written += 1;
            }
            if written < 64 {
                item = self.registration.receiver.try_recv().ok();
            }
        }
        sink.flush().await.map_err(|_| ())?;
        if let Some(oldest) = oldest {
            // The queue is FIFO: the first event written waited the longest.
            self.state
                .metrics
                .record_delivery_latency(oldest.elapsed().as_secs_f64());
        }
        for receipt in self.receipts.drain(..) {
            self.state.hub.delivered(
                receipt.conversation_id,
                self.caller.user_id,
                receipt.message_id,
                receipt.sender,
            );
        }
        Ok(())
    }

    /// The text to send for a queued item, or `None` if replay already sent it.
    /// Notes the delivery receipt it owes and the oldest event's commit time.
    fn frame_for(&mut self, item: Outbound, oldest: &mut Option<Instant>) -> Option<Utf8Bytes> {
        match item {
            Outbound::Frame(frame) => Some(frame),
            Outbound::Event(event, text) => {
                if event.event_id <= self.last_sent {
                    return None;
                }
                self.last_sent = event.event_id;
                oldest.get_or_insert(event.created);
                if let (Some(message_id), Some(conversation_id), Some(sender)) =
                    (event.message_id, event.conversation_id, event.actor_id)
                    && sender != self.caller.user_id
                {
                    // Only the highest id per (conversation, sender) matters.
                    match self
                        .receipts
                        .iter_mut()
                        .find(|r| r.conversation_id == conversation_id && r.sender == sender)
                    {
                        Some(receipt) => receipt.message_id = receipt.message_id.max(message_id),
                        None => self.receipts.push(Receipt {
                            conversation_id,
                            sender,
                            message_id,
                        }),
                    }
                }
                // The same bytes for every recipient: no copy per socket.
                Some(text)
            }
        }
    }

    /// Sends every stored event after `since` up to where the live queue starts.
    async fn replay(&mut self, sink: &mut Sink, since: i64) -> Result<(), ()> {
        let upto = self.registration.last_event_id;
        if since == upto {
            return Ok(());
        }
        let oldest = self
            .state
            .db
            .read(|conn| {
                conn.query_row("SELECT MIN(event_id) FROM events", [], |row| {
                    row.get::<_, Option<i64>>(0)
                })
                .map_err(AppError::from)
            })
            .await
            .map_err(|_| ())?;
        let replayable = since < upto && oldest.is_some_and(|oldest| since + 1 >= oldest);
        if !replayable {
            let frame = json!({ "type": "resync_required", "last_event_id": upto });
            return sink
                .send(WsMessage::text(frame.to_string()))
                .await
                .map_err(|_| ());
        }
        let user_id = self.caller.user_id;
        let mut cursor = since;
        loop {
            let batch = self
                .state
                .db
                .read(move |conn| replay_batch(conn, user_id, cursor, upto))
                .await
                .map_err(|_| ())?;
            let done = (batch.len() as i64) < REPLAY_BATCH;
            for (event_id, kind, actor_id, payload) in batch {
                cursor = event_id;
                if !self.state.hub.visible_to(user_id, &kind, actor_id) {
                    continue;
                }
                if kind == "message.created"
                    && let Some(sender) = actor_id.filter(|s| *s != user_id)
                    && let Some((conversation_id, message_id)) = message_ref(&payload)
                {
                    self.state
                        .hub
                        .delivered(conversation_id, user_id, message_id, sender);
                }
                sink.feed(WsMessage::text(payload)).await.map_err(|_| ())?;
            }
            sink.flush().await.map_err(|_| ())?;
            if done {
                break;
            }
        }
        self.last_sent = upto;
        Ok(())
    }

    async fn handle_frame(&mut self, sink: &mut Sink, frame: WsMessage) -> Result<Flow, ()> {
        if frame.is_close() {
            return Ok(Flow::Close(1000, "bye"));
        }
        if frame.is_ping() || frame.is_pong() {
            return Ok(Flow::Continue); // pings are answered by the protocol layer
        }
        // Revocation and disabling apply to every frame, not only at connect.
        if self.state.auth.is_session_revoked(self.caller.session_id)
            || self.state.auth.is_user_disabled(self.caller.user_id)
        {
            return Ok(Flow::Close(close::POLICY, "signed out"));
        }
        if !self.limit.allow() {
            if self.limit.exhausted() {
                return Ok(Flow::Close(close::POLICY, "too many frames"));
            }
            // The refused frame's client_id, so that the client knows which
            // send failed.
            let client_id = frame
                .to_text()
                .ok()
                .filter(|text| text.len() <= self.state.config.limits.max_ws_frame_bytes)
                .and_then(|text| serde_json::from_str::<ClientIdOnly>(text).ok())
                .and_then(|frame| frame.client_id);
            let error = error_frame(
                client_id.as_deref(),
                &AppError::RateLimited {
                    retry_after_secs: 1,
                },
            );
            return sink
                .send(WsMessage::text(error))
                .await
                .map(|_| Flow::Continue)
                .map_err(|_| ());
        }
        let reply = match frame.to_text() {
            Ok(text) => self.handle_text(text).await,
            Err(_) => Some(error_frame(
                None,
                &AppError::bad_request("send JSON text frames, not binary"),
            )),
        };
        if let Some(reply) = reply {
            sink.send(WsMessage::text(reply)).await.map_err(|_| ())?;
        }
        Ok(Flow::Continue)
    }

    /// Handles one client frame; returns a frame to send back at once, if any.
    async fn handle_text(&mut self, text: &str) -> Option<String> {
        if text.len() > self.state.config.limits.max_ws_frame_bytes {
            return Some(error_frame(
                None,
                &AppError::PayloadTooLarge(
                    format!(
                        "a frame has at most {} bytes",
                        self.state.config.limits.max_ws_frame_bytes
                    )
                    .into(),
                ),
            ));
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(err) => {
                return Some(error_frame(
                    None,
                    &AppError::bad_request(format!("malformed JSON: {err}")),
                ));
            }
        };
        let client_id = value
            .get("client_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(kind) = value.get("type").and_then(Value::as_str) else {
            return Some(error_frame(
                client_id.as_deref(),
                &AppError::bad_field("type", "a frame needs a string \"type\""),
            ));
        };
        let result = match kind {
            "ping" => return Some(json!({ "type": "pong" }).to_string()),
            "message.send" => self.send_message(value, client_id.clone()).await,
            "typing" => self.typing(value).await,
            "read" => self.read(value).await,
            other => Err(AppError::bad_field(
                "type",
                format!("unknown frame type {other:?}"),
            )),
        };
        result
            .err()
            .map(|err| error_frame(client_id.as_deref(), &err))
    }

    async fn send_message(&self, value: Value, client_id: Option<String>) -> AppResult<()> {
        #[derive(Deserialize)]
        struct SendFrame {
            conversation_id: i64,
        }
        // Two passes rather than a flattened struct, which would lose the name
        // of a field of the wrong type.
        let frame: SendFrame = from_value(value.clone())?;
        let body: SendBody = from_value(value)?;
        let Some(client_id) = client_id.filter(|c| !c.is_empty()) else {
            return Err(AppError::bad_field(
                "client_id",
                "message.send needs a client_id",
            ));
        };
        let mut new = body.into_new(frame.conversation_id);
        messages::validate_new(&mut new, self.state.config.limits.max_message_chars)?;
        let sender = self.caller.user_id;
        // Queued now, so a client's sends commit in the order it sent them; the
        // ack is sent when the commit is done, without holding up this socket.
        let outcome = self
            .state
            .db
            .writer
            .enqueue_checked(move |ctx| messages::send(ctx, sender, new))
            .await?;
        let hub = self.state.hub.clone();
        let metrics = self.state.metrics.clone();
        let conn_id = self.registration.conn_id;
        tokio::spawn(async move {
            let frame = match outcome.await {
                Ok(sent) => {
                    if sent.created {
                        metrics.record_message_sent();
                    }
                    ack_frame(&client_id, &sent.message)
                        .unwrap_or_else(|err| error_frame(Some(&client_id), &err))
                }
                Err(err) => error_frame(Some(&client_id), &err),
            };
            hub.send_to_conn(conn_id, frame.into());
        });
        Ok(())
    }

    async fn typing(&self, value: Value) -> AppResult<()> {
        #[derive(Deserialize)]
        struct TypingFrame {
            conversation_id: i64,
            state: String,
        }
        let frame: TypingFrame = from_value(value)?;
        let start = match frame.state.as_str() {
            "start" => true,
            "stop" => false,
            _ => {
                return Err(AppError::validation(
                    "state",
                    "state is \"start\" or \"stop\"",
                ));
            }
        };
        let user = self.caller.user_id;
        let conversation_id = frame.conversation_id;
        self.state
            .db
            .read(move |conn| {
                let conversation = access::require_member(conn, user, conversation_id)?;
                access::require_not_blocked_direct(conn, user, &conversation)
            })
            .await?;
        self.state.hub.typing(conversation_id, user, start);
        Ok(())
    }

    async fn read(&self, value: Value) -> AppResult<()> {
        #[derive(Deserialize)]
        struct ReadFrame {
            conversation_id: i64,
            message_id: i64,
        }
        let frame: ReadFrame = from_value(value)?;
        let user = self.caller.user_id;
        let outcome = self
            .state
            .db
            .writer
            .enqueue(move |ctx| {
                conversations::mark_read(ctx, user, frame.conversation_id, frame.message_id)
            })
            .await?;
        let hub = self.state.hub.clone();
        let conn_id = self.registration.conn_id;
        tokio::spawn(async move {
            if let Err(err) = outcome.await {
                hub.send_to_conn(conn_id, error_frame(None, &err).into());
            }
        });
        Ok(())
    }
}

type ReplayRow = (i64, String, Option<i64>, String);

/// One batch of the events after `after` (up to `upto`) that `user` may see: the
/// conversations they are in (since they joined) and those addressed to them.
fn replay_batch(
    conn: &rusqlite::Connection,
    user: i64,
    after: i64,
    upto: i64,
) -> AppResult<Vec<ReplayRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT e.event_id, e.type, e.actor_id, e.payload FROM events e
             WHERE e.event_id > ?1 AND e.event_id <= ?2
               AND (e.user_id = ?3 OR EXISTS (
                    SELECT 1 FROM members m
                    WHERE m.conversation_id = e.conversation_id AND m.user_id = ?3
                      AND m.joined_event_id <= e.event_id))
             ORDER BY e.event_id LIMIT ?4",
        )?
        .query_map(rusqlite::params![after, upto, user, REPLAY_BATCH], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<Result<_, _>>()?)
}

/// `(conversation_id, message_id)` of a stored `message.created` frame.
/// `{"type":"ack","client_id":..,"message":..}`, serialized straight from the
/// message (one per message sent: no intermediate `Value` tree).
fn ack_frame(client_id: &str, message: &messages::Message) -> AppResult<String> {
    #[derive(serde::Serialize)]
    struct Ack<'a> {
        r#type: &'static str,
        client_id: &'a str,
        message: &'a messages::Message,
    }
    serde_json::to_string(&Ack {
        r#type: "ack",
        client_id,
        message,
    })
    .map_err(AppError::internal)
}

fn message_ref(payload: &str) -> Option<(i64, i64)> {
    #[derive(Deserialize)]
    struct Frame {
        message: Ref,
    }
    #[derive(Deserialize)]
    struct Ref {
        id: i64,
        conversation_id: i64,
    }
    let frame: Frame = serde_json::from_str(payload).ok()?;
    Some((frame.message.conversation_id, frame.message.id))
}

fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> AppResult<T> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        if path.is_empty() || path == "." {
            match message
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                Some(field) => AppError::bad_field(field.to_owned(), message.clone()),
                None => AppError::bad_request(message),
            }
        } else {
            AppError::bad_field(path, message)
        }
    })
}

/// Only the `client_id` of a frame (any other field is ignored).
#[derive(Deserialize)]
struct ClientIdOnly {
    #[serde(default)]
    client_id: Option<String>,
}

/// The contract's error frame.
pub fn error_frame(client_id: Option<&str>, error: &AppError) -> String {
    let mut frame = json!({ "type": "error", "error": error.to_json() });
    if let Some(client_id) = client_id {
        frame["client_id"] = Value::from(client_id);
    }
    frame.to_string()
}

/// The close owed for a violation of the protocol by the peer (RFC 6455 7.4.1),
/// or `None` when the connection is simply gone.
fn violation(err: &WsError) -> Option<Flow> {
    match err {
        WsError::Capacity(_) => Some(Flow::Close(close::TOO_BIG, "frame too large")),
        WsError::Utf8(_) => Some(Flow::Close(close::INVALID_DATA, "text is not UTF-8")),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(Flow::Close(close::PROTOCOL_ERROR, "protocol error")),
        _ => None,
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::TRY_AGAIN_LATER => "too slow: reconnect with since",
        close::POLICY => "signed out",
        close::GOING_AWAY => "server shutting down",
        _ => "closed",
    }
}
