//! `/conversations/*` and `/channels`: thin handlers over `chat::conversations`.

use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{authenticated, json, json_body, no_content, ok, query, respond, with_state};
use crate::auth::AuthUser;
use crate::chat::access::Role;
use crate::chat::conversations;
use crate::error::{AppError, AppResult};
use crate::state::SharedState;

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    let limit = state.config.limits.max_json_bytes;
    let s = || with_state(state.clone());
    let a = || authenticated(state.clone());
    let create = warp::path!("conversations")
        .and(warp::post())
        .and(s())
        .and(a())
        .and(json_body::<CreateConversation>(limit))
        .then(create)
        .map(respond);
    let list = warp::path!("conversations")
        .and(warp::get())
        .and(s())
        .and(a())
        .and(query::<ListQuery>())
        .then(list)
        .map(respond);
    let channels = warp::path!("channels")
        .and(warp::get())
        .and(s())
        .and(a())
        .and(query::<ChannelQuery>())
        .then(channels)
        .map(respond);
    let get_one = warp::path!("conversations" / i64)
        .and(warp::get())
        .and(s())
        .and(a())
        .then(get_one)
        .map(respond);
    let patch = warp::path!("conversations" / i64)
        .and(warp::patch())
        .and(s())
        .and(a())
        .and(json_body::<PatchConversation>(limit))
        .then(patch)
        .map(respond);
    let join = warp::path!("conversations" / i64 / "join")
        .and(warp::post())
        .and(s())
        .and(a())
        .then(join)
        .map(respond);
    let leave = warp::path!("conversations" / i64 / "leave")
        .and(warp::post())
        .and(s())
        .and(a())
        .then(leave)
        .map(respond);
    let add_members = warp::path!("conversations" / i64 / "members")
        .and(warp::post())
        .and(s())
        .and(a())
        .and(json_body::<AddMembers>(limit))
        .then(add_members)
        .map(respond);
    let remove_member = warp::path!("conversations" / i64 / "members" / i64)
        .and(warp::delete())
        .and(s())
        .and(a())
        .then(remove_member)
        .map(respond);
    let set_role = warp::path!("conversations" / i64 / "members" / i64)
        .and(warp::patch())
        .and(s())
        .and(a())
        .and(json_body::<SetRole>(limit))
        .then(set_role)
        .map(respond);
    let mute = warp::path!("conversations" / i64 / "mute")
        .and(warp::put())
        .and(s())
        .and(a())
        .then(|id, state, caller| set_muted(id, state, caller, true))
        .map(respond);
    let unmute = warp::path!("conversations" / i64 / "mute")
        .and(warp::delete())
        .and(s())
        .and(a())
        .then(|id, state, caller| set_muted(id, state, caller, false))
        .map(respond);
    let read = warp::path!("conversations" / i64 / "read")
        .and(warp::post())
        .and(s())
        .and(a())
        .and(json_body::<MarkRead>(limit))
        .then(mark_read)
        .map(respond);
    create
        .or(list)
        .unify()
        .or(channels)
        .unify()
        .or(get_one)
        .unify()
        .or(patch)
        .unify()
        .or(join)
        .unify()
        .or(leave)
        .unify()
        .or(add_members)
        .unify()
        .or(remove_member)
        .unify()
        .or(set_role)
        .unify()
        .or(mute)
        .unify()
        .or(unmute)
        .unify()
        .or(read)
        .unify()
        .boxed()
}

#[derive(Debug, Deserialize)]
struct CreateConversation {
    kind: String,
    #[serde(default)]
    user_id: Option<i64>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    member_ids: Option<Vec<i64>>,
}

async fn create(
    state: SharedState,
    caller: AuthUser,
    body: CreateConversation,
) -> AppResult<Response> {
    let me = caller.user_id;
    let max_members = state.config.limits.max_group_members;
    match body.kind.as_str() {
        "direct" => {
            let other = body.user_id.ok_or_else(|| {
                AppError::bad_field("user_id", "user_id is required for a direct conversation")
            })?;
            let (conversation, created) = state
                .db
                .writer
                .run(move |ctx| conversations::create_direct(ctx, me, other))
                .await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json(status, &conversation))
        }
        "group" => {
            let title = body.title.unwrap_or_default();
            let members = body.member_ids.unwrap_or_default();
            let conversation = state
                .db
                .writer
                .run(move |ctx| conversations::create_group(ctx, me, &title, &members, max_members))
                .await?;
            Ok(json(StatusCode::CREATED, &conversation))
        }
        "channel" => {
            let title = body.title.unwrap_or_default();
            let topic = body.topic.unwrap_or_default();
            let conversation = state
                .db
                .writer
                .run(move |ctx| conversations::create_channel(ctx, me, &title, &topic))
                .await?;
            Ok(json(StatusCode::CREATED, &conversation))
        }
        _ => Err(AppError::validation(
            "kind",
            "kind is \"direct\", \"group\" or \"channel\"",
        )),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn list(state: SharedState, caller: AuthUser, query: ListQuery) -> AppResult<Response> {
    let after = conversations::parse_cursor(query.cursor.as_deref())?;
    let limit = query.limit.unwrap_or(conversations::DEFAULT_LIST);
    let page = state
        .db
        .read(move |conn| conversations::list(conn, caller.user_id, after, limit))
        .await?;
    Ok(ok(&page))
}

#[derive(Debug, Deserialize)]
struct ChannelQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn channels(
    state: SharedState,
    caller: AuthUser,
    query: ChannelQuery,
) -> AppResult<Response> {
    let q = query.q.trim().to_owned();
    let after = conversations::parse_cursor(query.cursor.as_deref())?;
    let limit = query.limit.unwrap_or(conversations::DEFAULT_LIST);
    let page = state
        .db
        .read(move |conn| conversations::channels(conn, caller.user_id, &q, after, limit))
        .await?;
    Ok(ok(&page))
}

async fn get_one(id: i64, state: SharedState, caller: AuthUser) -> AppResult<Response> {
    let conversation = state
        .db
        .read(move |conn| conversations::get(conn, caller.user_id, id))
        .await?;
    Ok(ok(&conversation))
}

#[derive(Debug, Deserialize)]
struct PatchConversation {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    topic: Option<String>,
}

async fn patch(
    id: i64,
    state: SharedState,
    caller: AuthUser,
    body: PatchConversation,
) -> AppResult<Response> {
    let conversation = state
        .db
        .writer
        .run(move |ctx| conversations::update(ctx, caller.user_id, id, body.title, body.topic))
        .await?;
    Ok(ok(&conversation))
}

async fn join(id: i64, state: SharedState, caller: AuthUser) -> AppResult<Response> {
    let conversation = state
        .db
        .writer
        .run(move |ctx| conversations::join(ctx, caller.user_id, id))
        .await?;
    Ok(ok(&conversation))
}

async fn leave(id: i64, state: SharedState, caller: AuthUser) -> AppResult<Response> {
    state
        .db
        .writer
        .run(move |ctx| conversations::leave(ctx, caller.user_id, id))
        .await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
struct AddMembers {
    user_ids: Vec<i64>,
}

async fn add_members(
    id: i64,
    state: SharedState,
    caller: AuthUser,
    body: AddMembers,
) -> AppResult<Response> {
    let max_members = state.config.limits.max_group_members;
    let conversation = state
        .db
        .writer
        .run(move |ctx| {
            conversations::add_members(ctx, caller.user_id, id, &body.user_ids, max_members)
        })
        .await?;
    Ok(ok(&conversation))
}

async fn remove_member(
    id: i64,
    user_id: i64,
    state: SharedState,
    caller: AuthUser,
) -> AppResult<Response> {
    state
        .db
        .writer
        .run(move |ctx| conversations::remove_member(ctx, caller.user_id, id, user_id))
        .await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
struct SetRole {
    role: String,
}

async fn set_role(
    id: i64,
    user_id: i64,
    state: SharedState,
    caller: AuthUser,
    body: SetRole,
) -> AppResult<Response> {
    let role = match Role::parse(&body.role) {
        Some(role @ (Role::Admin | Role::Member)) => role,
        _ => {
            return Err(AppError::validation(
                "role",
                "role is \"admin\" or \"member\"",
            ));
        }
    };
    let member = state
        .db
        .writer
        .run(move |ctx| conversations::set_role(ctx, caller.user_id, id, user_id, role))
        .await?;
    Ok(ok(&member))
}

async fn set_muted(
    id: i64,
    state: SharedState,
    caller: AuthUser,
    muted: bool,
) -> AppResult<Response> {
    state
        .db
        .writer
        .run(move |ctx| conversations::set_muted(ctx, caller.user_id, id, muted))
        .await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
struct MarkRead {
    message_id: i64,
}

async fn mark_read(
    id: i64,
    state: SharedState,
    caller: AuthUser,
    body: MarkRead,
) -> AppResult<Response> {
    let last_read_id = state
        .db
        .writer
        .run(move |ctx| conversations::mark_read(ctx, caller.user_id, id, body.message_id))
        .await?;
    Ok(ok(
        &serde_json::json!({ "conversation_id": id, "last_read_id": last_read_id }),
    ))
}
