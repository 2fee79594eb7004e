//! `/users/*`: one's own profile and password, the directory, and blocking.

use rusqlite::params;
use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::auth::{check_password_length, hash_password, verify_password};
use super::{authenticated, json_body, no_content, ok, query, respond, with_state};
use crate::auth::{AuthUser, sessions};
use crate::error::{AppError, AppResult};
use crate::hub::close;
use crate::state::SharedState;
use crate::users::{self, ProfilePatch, User, UserRecord};

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    let limit = state.config.limits.max_json_bytes;
    let s = || with_state(state.clone());
    let a = || authenticated(state.clone());
    let me = warp::path!("users" / "me")
        .and(warp::get())
        .and(s())
        .and(a())
        .then(get_me)
        .map(respond);
    let patch_me = warp::path!("users" / "me")
        .and(warp::patch())
        .and(s())
        .and(a())
        .and(json_body::<PatchMe>(limit))
        .then(patch_me)
        .map(respond);
    let password = warp::path!("users" / "me" / "password")
        .and(warp::post())
        .and(s())
        .and(a())
        .and(json_body::<ChangePassword>(limit))
        .then(change_password)
        .map(respond);
    let directory = warp::path!("users")
        .and(warp::get())
        .and(s())
        .and(a())
        .and(query::<DirectoryQuery>())
        .then(directory)
        .map(respond);
    let one = warp::path!("users" / i64)
        .and(warp::get())
        .and(s())
        .and(a())
        .then(get_user)
        .map(respond);
    let block = warp::path!("users" / i64 / "block")
        .and(warp::put())
        .and(s())
        .and(a())
        .then(|id, state, caller| set_block(id, state, caller, true))
        .map(respond);
    let unblock = warp::path!("users" / i64 / "block")
        .and(warp::delete())
        .and(s())
        .and(a())
        .then(|id, state, caller| set_block(id, state, caller, false))
        .map(respond);
    me.or(patch_me)
        .unify()
        .or(password)
        .unify()
        .or(directory)
        .unify()
        .or(one)
        .unify()
        .or(block)
        .unify()
        .or(unblock)
        .unify()
        .boxed()
}

/// A user record with live presence (the last-seen time is known to the hub
/// before it is saved).
pub fn with_presence(state: &SharedState, mut record: UserRecord) -> User {
    let online = state.hub.is_online(record.id);
    record.last_seen_at = record.last_seen_at.max(state.hub.last_seen(record.id));
    record.into_user(online)
}

async fn get_me(state: SharedState, caller: AuthUser) -> AppResult<Response> {
    let record = state
        .db
        .read(move |conn| users::get(conn, caller.user_id))
        .await?
        .ok_or_else(|| AppError::invalid_token("the account no longer exists"))?;
    Ok(ok(&with_presence(&state, record)))
}

#[derive(Debug, Deserialize)]
struct PatchMe {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    status_text: Option<String>,
    /// Absent: unchanged; null: cleared.
    #[serde(default, deserialize_with = "double_option")]
    avatar_attachment_id: Option<Option<i64>>,
}

/// Tells an absent field (`None`) from an explicit null (`Some(None)`).
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

async fn patch_me(state: SharedState, caller: AuthUser, body: PatchMe) -> AppResult<Response> {
    let patch = ProfilePatch {
        display_name: body
            .display_name
            .as_deref()
            .map(users::validate_display_name)
            .transpose()?,
        status_text: body
            .status_text
            .as_deref()
            .map(users::validate_status_text)
            .transpose()?,
        avatar_attachment_id: body.avatar_attachment_id,
    };
    let user_id = caller.user_id;
    let record = state
        .db
        .writer
        .run(move |ctx| users::update_profile(ctx, user_id, patch))
        .await?;
    Ok(ok(&with_presence(&state, record)))
}

#[derive(Debug, Deserialize)]
struct ChangePassword {
    current_password: String,
    new_password: String,
}

async fn change_password(
    state: SharedState,
    caller: AuthUser,
    body: ChangePassword,
) -> AppResult<Response> {
    users::validate_password("new_password", &body.new_password)?;
    check_password_length("current_password", &body.current_password)?;
    let user_id = caller.user_id;
    let stored = state
        .db
        .read(move |conn| users::password_hash(conn, user_id))
        .await?
        .ok_or_else(|| AppError::invalid_token("the account no longer exists"))?;
    if !verify_password(&state, Some(stored), body.current_password).await? {
        return Err(AppError::Forbidden {
            code: "wrong_password",
            message: "the current password is wrong".into(),
        });
    }
    let hash = hash_password(&state, body.new_password).await?;
    let keep = caller.session_id;
    let revoked = state
        .db
        .writer
        .run(move |ctx| {
            users::set_password_hash(ctx, user_id, &hash)?;
            sessions::revoke_all(ctx, user_id, Some(keep))
        })
        .await?;
    state.auth.mark_sessions_revoked(&revoked);
    for session_id in revoked {
        state.hub.close_session(session_id, close::POLICY);
    }
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
struct DirectoryQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

async fn directory(
    state: SharedState,
    _caller: AuthUser,
    query: DirectoryQuery,
) -> AppResult<Response> {
    let limit = query.limit.unwrap_or(50).clamp(1, 200) as usize;
    let q = query.q.trim().to_owned();
    if q.chars().count() > 64 {
        return Err(AppError::validation(
            "q",
            "the search text has at most 64 characters",
        ));
    }
    let cursor = query.cursor.filter(|c| !c.is_empty());
    let mut records = state
        .db
        .read(move |conn| users::list(conn, &q, cursor.as_deref(), limit + 1, false))
        .await?;
    let next_cursor = if records.len() > limit {
        records.truncate(limit);
        records.last().map(|u| u.username.clone())
    } else {
        None
    };
    let items: Vec<User> = records
        .into_iter()
        .map(|record| with_presence(&state, record))
        .collect();
    Ok(ok(
        &serde_json::json!({ "items": items, "next_cursor": next_cursor }),
    ))
}

async fn get_user(id: i64, state: SharedState, _caller: AuthUser) -> AppResult<Response> {
    let record = state
        .db
        .read(move |conn| users::get(conn, id))
        .await?
        .ok_or_else(|| AppError::not_found("no such user"))?;
    Ok(ok(&with_presence(&state, record)))
}

async fn set_block(id: i64, state: SharedState, caller: AuthUser, on: bool) -> AppResult<Response> {
    if id == caller.user_id {
        return Err(AppError::validation("user_id", "you cannot block yourself"));
    }
    let blocker = caller.user_id;
    state
        .db
        .writer
        .run(move |ctx| {
            if users::get(ctx.conn(), id)?.is_none() {
                return Err(AppError::not_found("no such user"));
            }
            if on {
                ctx.conn().execute(
                    "INSERT OR IGNORE INTO blocks (blocker_id, blocked_id, created_at) VALUES (?1, ?2, ?3)",
                    params![blocker, id, ctx.now()],
                )?;
            } else {
                ctx.conn().execute(
                    "DELETE FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2",
                    params![blocker, id],
                )?;
            }
            Ok(())
        })
        .await?;
    state.hub.set_block(blocker, id, on);
    Ok(no_content())
}
