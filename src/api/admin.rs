//! `/admin/*`: accounts, settings, invites, statistics and backups. Every route
//! needs an enabled admin, checked in the database on each request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use serde::Deserialize;
use tokio::io::{AsyncRead, ReadBuf};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::auth::hash_password;
use super::users::{double_option, with_presence};
use super::{
    admin_authenticated, json, json_body, no_content, ok, optional_json_body, query, respond,
    with_state,
};
use crate::admin::{self, UserChange};
use crate::auth::AuthUser;
use crate::backup::{self, TempPath};
use crate::error::{AppError, AppResult};
use crate::hub::close;
use crate::settings::{self, Registration, SettingsPatch};
use crate::state::SharedState;
use crate::users::{self, NewUser, User};

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    let limit = state.config.limits.max_json_bytes;
    let s = || with_state(state.clone());
    let a = || admin_authenticated(state.clone());
    let list_users = warp::path!("admin" / "users")
        .and(warp::get())
        .and(s())
        .and(a())
        .and(query::<ListQuery>())
        .then(list_users)
        .map(respond);
    let create_user = warp::path!("admin" / "users")
        .and(warp::post())
        .and(s())
        .and(a())
        .and(json_body::<CreateUser>(limit))
        .then(create_user)
        .map(respond);
    let patch_user = warp::path!("admin" / "users" / i64)
        .and(warp::patch())
        .and(s())
        .and(a())
        .and(json_body::<PatchUser>(limit))
        .then(patch_user)
        .map(respond);
    let get_settings = warp::path!("admin" / "settings")
        .and(warp::get())
        .and(s())
        .and(a())
        .then(get_settings)
        .map(respond);
    let patch_settings = warp::path!("admin" / "settings")
        .and(warp::patch())
        .and(s())
        .and(a())
        .and(json_body::<PatchSettings>(limit))
        .then(patch_settings)
        .map(respond);
    let create_invite = warp::path!("admin" / "invites")
        .and(warp::post())
        .and(s())
        .and(a())
        .and(optional_json_body::<CreateInvite>(limit))
        .then(create_invite)
        .map(respond);
    let list_invites = warp::path!("admin" / "invites")
        .and(warp::get())
        .and(s())
        .and(a())
        .and(query::<ListQuery>())
        .then(list_invites)
        .map(respond);
    let delete_invite = warp::path!("admin" / "invites" / String)
        .and(warp::delete())
        .and(s())
        .and(a())
        .then(delete_invite)
        .map(respond);
    let stats = warp::path!("admin" / "stats")
        .and(warp::get())
        .and(s())
        .and(a())
        .then(stats)
        .map(respond);
    let backup = warp::path!("admin" / "backup")
        .and(warp::post())
        .and(s())
        .and(a())
        .then(backup)
        .map(respond);
    list_users
        .or(create_user)
        .unify()
        .or(patch_user)
        .unify()
        .or(get_settings)
        .unify()
        .or(patch_settings)
        .unify()
        .or(create_invite)
        .unify()
        .or(list_invites)
        .unify()
        .or(delete_invite)
        .unify()
        .or(stats)
        .unify()
        .or(backup)
        .unify()
        .boxed()
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

impl ListQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, 200) as usize
    }

    fn cursor(&self) -> Option<String> {
        self.cursor.clone().filter(|c| !c.is_empty())
    }
}

async fn list_users(state: SharedState, _admin: AuthUser, query: ListQuery) -> AppResult<Response> {
    let limit = query.limit();
    let q = query.q.trim().to_owned();
    if q.chars().count() > 64 {
        return Err(AppError::validation(
            "q",
            "the search text has at most 64 characters",
        ));
    }
    let cursor = query.cursor();
    let mut records = state
        .db
        .read(move |conn| users::list(conn, &q, cursor.as_deref(), limit + 1, true))
        .await?;
    let next_cursor = if records.len() > limit {
        records.truncate(limit);
        records.last().map(|u| u.username.clone())
    } else {
        None
    };
    let ids: Vec<i64> = records.iter().map(|record| record.id).collect();
    let mut stored = state
        .db
        .read(move |conn| crate::attachments::stored_bytes_of(conn, &ids))
        .await?;
    let items: Vec<AdminUser> = records
        .into_iter()
        .map(|record| AdminUser {
            attachment_bytes: stored.remove(&record.id).unwrap_or(0),
            user: with_presence(&state, record),
        })
        .collect();
    Ok(ok(
        &serde_json::json!({ "items": items, "next_cursor": next_cursor }),
    ))
}

/// A User as admins see it in the list: with the bytes of attachments the user
/// has stored (what `attachment_quota_bytes` limits).
#[derive(Debug, serde::Serialize)]
struct AdminUser {
    #[serde(flatten)]
    user: User,
    attachment_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    username: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    is_admin: bool,
}

async fn create_user(
    state: SharedState,
    _admin: AuthUser,
    body: CreateUser,
) -> AppResult<Response> {
    let username = users::normalize_username(&body.username)?;
    users::validate_password("password", &body.password)?;
    let display_name = users::validate_display_name(body.display_name.as_deref().unwrap_or(""))?;
    let hash = hash_password(&state, body.password).await?;
    let is_admin = body.is_admin;
    let record = state
        .db
        .writer
        .run(move |ctx| {
            users::insert(
                ctx,
                &NewUser {
                    username: &username,
                    display_name: &display_name,
                    password_hash: &hash,
                    is_admin,
                },
            )
        })
        .await?;
    if record.is_admin {
        super::setup::end_setup(&state);
    }
    Ok(json(StatusCode::CREATED, &with_presence(&state, record)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchUser {
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    is_admin: Option<bool>,
    #[serde(default)]
    password: Option<String>,
}

async fn patch_user(
    id: i64,
    state: SharedState,
    caller: AuthUser,
    body: PatchUser,
) -> AppResult<Response> {
    if let Some(password) = &body.password {
        users::validate_password("password", password)?;
    }
    let password_hash = match body.password {
        Some(password) => Some(hash_password(&state, password).await?),
        None => None,
    };
    let change = UserChange {
        disabled: body.disabled,
        is_admin: body.is_admin,
        password_hash,
    };
    // An admin resetting their own password stays signed in on this device.
    let keep = (id == caller.user_id).then_some(caller.session_id);
    let updated = state
        .db
        .writer
        .run(move |ctx| admin::update_user(ctx, id, &change, keep))
        .await?;
    state.auth.mark_sessions_revoked(&updated.revoked_sessions);
    if let Some(disabled) = updated.disabled_changed {
        state.auth.set_user_disabled(id, disabled);
    }
    if updated.disabled_changed == Some(true) {
        state.hub.close_user(id, close::POLICY);
    } else {
        for session_id in &updated.revoked_sessions {
            state.hub.close_session(*session_id, close::POLICY);
        }
    }
    Ok(ok(&with_presence(&state, updated.user)))
}

async fn get_settings(state: SharedState, _admin: AuthUser) -> AppResult<Response> {
    Ok(ok(&state.settings.get()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchSettings {
    #[serde(default, deserialize_with = "double_option")]
    registration: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    server_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    max_attachment_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    attachment_quota_bytes: Option<Option<u64>>,
}

impl PatchSettings {
    /// Checks the values; `null` means "back to the configuration's default".
    fn validate(self) -> AppResult<SettingsPatch> {
        let registration = self
            .registration
            .map(|value| value.map(|text| parse_registration(&text)).transpose())
            .transpose()?;
        let server_name = self
            .server_name
            .map(|value| {
                value
                    .map(|name| settings::validate_server_name(&name))
                    .transpose()
            })
            .transpose()?;
        let max_attachment_bytes = self
            .max_attachment_bytes
            .map(|value| {
                value
                    .map(settings::validate_max_attachment_bytes)
                    .transpose()
            })
            .transpose()?;
        let attachment_quota_bytes = self
            .attachment_quota_bytes
            .map(|value| {
                value
                    .map(settings::validate_attachment_quota_bytes)
                    .transpose()
            })
            .transpose()?;
        Ok(SettingsPatch {
            registration,
            server_name,
            max_attachment_bytes,
            attachment_quota_bytes,
        })
    }
}

fn parse_registration(text: &str) -> AppResult<Registration> {
    match text {
        "open" => Ok(Registration::Open),
        "invite" => Ok(Registration::Invite),
        "closed" => Ok(Registration::Closed),
        _ => Err(AppError::validation(
            "registration",
            "registration is \"open\", \"invite\" or \"closed\"",
        )),
    }
}

async fn patch_settings(
    state: SharedState,
    _admin: AuthUser,
    body: PatchSettings,
) -> AppResult<Response> {
    let patch = body.validate()?;
    // Serialises admins' changes so the cache is set in commit order.
    let _guard = state.settings.update_lock().await;
    let overrides = state
        .db
        .writer
        .run(move |ctx| settings::apply_patch(ctx, &patch))
        .await?;
    state.settings.set(overrides);
    Ok(ok(&state.settings.get()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInvite {
    #[serde(default)]
    uses: Option<u32>,
    #[serde(default)]
    expires_in: Option<u64>,
}

async fn create_invite(
    state: SharedState,
    caller: AuthUser,
    body: CreateInvite,
) -> AppResult<Response> {
    let (uses, expires_in) = admin::validate_invite(body.uses, body.expires_in)?;
    let created_by = caller.user_id;
    let invite = state
        .db
        .writer
        .run(move |ctx| admin::create_invite(ctx, created_by, uses, expires_in))
        .await?;
    Ok(json(StatusCode::CREATED, &invite))
}

async fn list_invites(
    state: SharedState,
    _admin: AuthUser,
    query: ListQuery,
) -> AppResult<Response> {
    let limit = query.limit();
    let cursor = query.cursor();
    let mut items = state
        .db
        .read(move |conn| admin::list_invites(conn, cursor.as_deref(), limit + 1))
        .await?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(admin::invite_cursor)
    } else {
        None
    };
    Ok(ok(
        &serde_json::json!({ "items": items, "next_cursor": next_cursor }),
    ))
}

async fn delete_invite(code: String, state: SharedState, _admin: AuthUser) -> AppResult<Response> {
    let deleted = state
        .db
        .writer
        .run(move |ctx| admin::delete_invite(ctx, &code))
        .await?;
    if deleted {
        Ok(no_content())
    } else {
        Err(AppError::not_found("no such invite"))
    }
}

async fn stats(state: SharedState, _admin: AuthUser) -> AppResult<Response> {
    let counts = state.db.read(admin::db_stats).await?;
    let disk = crate::disk::space(&state.data_dir, state.config.limits.min_free_disk_bytes).await;
    Ok(ok(&serde_json::json!({
        "users": counts.users,
        "online_users": state.hub.online_users(),
        "conversations": counts.conversations,
        "messages": counts.messages,
        "database_bytes": counts.database_bytes,
        "attachment_bytes": counts.attachment_bytes,
        "disk_free_bytes": disk.map(|disk| disk.available),
        "disk_reserve_bytes": state.config.limits.min_free_disk_bytes,
    })))
}

/// Builds the archive in a temporary file in the data directory (off the async
/// threads), then streams it; the file is deleted once sent or abandoned.
async fn backup(state: SharedState, caller: AuthUser) -> AppResult<Response> {
    let data_dir = state.data_dir.clone();
    let started = std::time::Instant::now();
    let (temp, manifest) =
        tokio::task::spawn_blocking(move || backup::archive_to_temp_file(&data_dir, &data_dir))
            .await
            .map_err(AppError::internal)??;
    let file = tokio::fs::File::open(temp.path())
        .await
        .map_err(AppError::internal)?;
    let size = file.metadata().await.map_err(AppError::internal)?.len();
    tracing::info!(
        admin = caller.user_id,
        bytes = size,
        files = manifest.attachment_count(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "backup made for download"
    );
    let filename = backup::archive_name(manifest.created_at);
    let body = FileStream { file, _temp: temp };
    let mut response = warp::reply::Reply::into_response(warp::reply::stream(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Streams a file in 64 KiB chunks, deleting it when done or dropped.
struct FileStream {
    file: tokio::fs::File,
    _temp: TempPath,
}

const CHUNK: usize = 64 * 1024;

impl Stream for FileStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut chunk = vec![0u8; CHUNK];
        let mut read_buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.file).poll_read(cx, &mut read_buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
            Poll::Ready(Ok(())) => {
                let n = read_buf.filled().len();
                if n == 0 {
                    return Poll::Ready(None);
                }
                chunk.truncate(n);
                Poll::Ready(Some(Ok(Bytes::from(chunk))))
            }
        }
    }
}
