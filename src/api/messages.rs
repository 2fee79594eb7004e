//! Message routes: history, send, edit, delete, reactions. Thin handlers over
//! `chat::messages`.

use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{authenticated, json, json_body, no_content, ok, query, respond, with_state};
use crate::auth::AuthUser;
use crate::chat::messages::{self, HistoryQuery, NewMessage};
use crate::error::{AppError, AppResult};
use crate::state::SharedState;

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    let limit = state.config.limits.max_json_bytes;
    let s = || with_state(state.clone());
    let a = || authenticated(state.clone());
    let history = warp::path!("conversations" / i64 / "messages")
        .and(warp::get())
        .and(s())
        .and(a())
        .and(query::<HistoryParams>())
        .then(history)
        .map(respond);
    let send = warp::path!("conversations" / i64 / "messages")
        .and(warp::post())
        .and(s())
        .and(a())
        .and(json_body::<SendBody>(limit))
        .then(send)
        .map(respond);
    let edit = warp::path!("messages" / i64)
        .and(warp::patch())
        .and(s())
        .and(a())
        .and(json_body::<EditBody>(limit))
        .then(edit)
        .map(respond);
    let delete = warp::path!("messages" / i64)
        .and(warp::delete())
        .and(s())
        .and(a())
        .then(delete)
        .map(respond);
    let add_reaction = warp::path!("messages" / i64 / "reactions" / String)
        .and(warp::put())
        .and(s())
        .and(a())
        .then(|id, emoji, state, caller| react(id, emoji, state, caller, true))
        .map(respond);
    let unreact = warp::path!("messages" / i64 / "reactions" / String)
        .and(warp::delete())
        .and(s())
        .and(a())
        .then(|id, emoji, state, caller| react(id, emoji, state, caller, false))
        .map(respond);
    history
        .or(send)
        .unify()
        .or(edit)
        .unify()
        .or(delete)
        .unify()
        .or(add_reaction)
        .unify()
        .or(unreact)
        .unify()
        .boxed()
}

#[derive(Debug, Deserialize)]
struct HistoryParams {
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    around: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
}

async fn history(
    id: i64,
    state: SharedState,
    caller: AuthUser,
    params: HistoryParams,
) -> AppResult<Response> {
    let query = HistoryQuery {
        before: params.before,
        after: params.after,
        around: params.around,
        limit: params.limit.map(|l| l as usize),
    };
    let page = state
        .db
        .read(move |conn| messages::history(conn, caller.user_id, id, query))
        .await?;
    Ok(ok(&page))
}

/// The body of a send, shared by REST and the WebSocket `message.send` frame.
#[derive(Debug, Deserialize)]
pub struct SendBody {
    pub body: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub reply_to: Option<i64>,
    #[serde(default)]
    pub attachment_ids: Option<Vec<i64>>,
}

impl SendBody {
    pub fn into_new(self, conversation_id: i64) -> NewMessage {
        NewMessage {
            conversation_id,
            body: self.body,
            client_id: self.client_id,
            reply_to: self.reply_to,
            attachment_ids: self.attachment_ids.unwrap_or_default(),
        }
    }
}

async fn send(
    id: i64,
    state: SharedState,
    caller: AuthUser,
    body: SendBody,
) -> AppResult<Response> {
    let mut new = body.into_new(id);
    messages::validate_new(&mut new, state.config.limits.max_message_chars)?;
    let sender = caller.user_id;
    let sent = state
        .db
        .writer
        .enqueue_checked(move |ctx| messages::send(ctx, sender, new))
        .await?
        .await?;
    let status = if sent.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &sent.message))
}

#[derive(Debug, Deserialize)]
struct EditBody {
    body: String,
}

async fn edit(
    id: i64,
    state: SharedState,
    caller: AuthUser,
    body: EditBody,
) -> AppResult<Response> {
    let max_chars = state.config.limits.max_message_chars;
    let message = state
        .db
        .writer
        .run(move |ctx| messages::edit(ctx, caller.user_id, id, body.body, max_chars))
        .await?;
    Ok(ok(&message))
}

async fn delete(id: i64, state: SharedState, caller: AuthUser) -> AppResult<Response> {
    state
        .db
        .writer
        .run(move |ctx| messages::delete(ctx, caller.user_id, id))
        .await?;
    Ok(no_content())
}

async fn react(
    id: i64,
    raw_emoji: String,
    state: SharedState,
    caller: AuthUser,
    add: bool,
) -> AppResult<Response> {
    let emoji = percent_encoding::percent_decode_str(&raw_emoji)
        .decode_utf8()
        .map_err(|_| AppError::validation("emoji", "the emoji is not valid UTF-8"))?
        .into_owned();
    messages::validate_emoji(&emoji)?;
    state
        .db
        .writer
        .run(move |ctx| messages::react(ctx, caller.user_id, id, &emoji, add))
        .await?;
    Ok(no_content())
}
