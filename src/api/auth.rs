//! `/auth/*`: register, login, refresh, logout and the sessions (devices) list.

use rusqlite::params;
use serde::{Deserialize, Serialize};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{
    ClientInfo, authenticated, client_info, json, json_body, no_content, ok, respond, with_state,
};
use crate::auth::AuthUser;
use crate::auth::password::{self, HashError};
use crate::auth::sessions::{self, Rotation};
use crate::db::WriteCtx;
use crate::error::{AppError, AppResult};
use crate::hub::close;
use crate::settings::Registration;
use crate::state::SharedState;
use crate::users::{self, NewUser, User};

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    let limit = state.config.limits.max_json_bytes;
    let s = || with_state(state.clone());
    let register = warp::path!("auth" / "register")
        .and(warp::post())
        .and(s())
        .and(client_info())
        .and(json_body::<RegisterRequest>(limit))
        .then(register)
        .map(respond);
    let login = warp::path!("auth" / "login")
        .and(warp::post())
        .and(s())
        .and(client_info())
        .and(warp::cookie::optional::<String>(DEVICE_COOKIE))
        .and(json_body::<LoginRequest>(limit))
        .then(login)
        .map(respond);
    let refresh = warp::path!("auth" / "refresh")
        .and(warp::post())
        .and(s())
        .and(client_info())
        .and(json_body::<RefreshRequest>(limit))
        .then(refresh)
        .map(respond);
    let logout = warp::path!("auth" / "logout")
        .and(warp::post())
        .and(s())
        .and(authenticated(state.clone()))
        .then(logout)
        .map(respond);
    let list_sessions = warp::path!("auth" / "sessions")
        .and(warp::get())
        .and(s())
        .and(authenticated(state.clone()))
        .then(list_sessions)
        .map(respond);
    let revoke_session = warp::path!("auth" / "sessions" / i64)
        .and(warp::delete())
        .and(s())
        .and(authenticated(state.clone()))
        .then(revoke_session)
        .map(respond);
    register
        .or(login)
        .unify()
        .or(refresh)
        .unify()
        .or(logout)
        .unify()
        .or(list_sessions)
        .unify()
        .or(revoke_session)
        .unify()
        .boxed()
}

#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    username: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    invite: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// The contract's token response.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub user: User,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

pub struct NewAccount {
    pub username: String,
    pub password: String,
    pub display_name: Option<String>,
    pub invite: Option<String>,
    /// First-run setup: the account is an admin, and registration rules do not apply.
    pub as_setup_admin: bool,
}

/// The cookie holding a device token (see [`crate::auth::throttle`]). It is sent
/// back only to the login endpoint and is not readable by scripts.
pub const DEVICE_COOKIE: &str = "lanchat_device";

/// Hashes `password` on the hashing threads (Argon2 is deliberately slow).
pub async fn hash_password(state: &SharedState, password: String) -> AppResult<String> {
    state
        .auth
        .hasher
        .run(move || password::hash(&password))
        .await
        .map_err(hashing_error)?
        .map_err(AppError::internal)
}

/// Verifies on the hashing threads; `None` verifies against a decoy hash, so
/// that an unknown username takes as long as a wrong password.
pub async fn verify_password(
    state: &SharedState,
    stored: Option<String>,
    password: String,
) -> AppResult<bool> {
    state
        .auth
        .hasher
        .run(move || match stored {
            Some(stored) => password::verify(&stored, &password),
            None => password::verify(password::decoy_hash(), &password),
        })
        .await
        .map_err(hashing_error)
}

fn hashing_error(err: HashError) -> AppError {
    match err {
        HashError::Busy => AppError::Overloaded {
            message: err.to_string().into(),
            retry_after_secs: 1,
        },
        other => AppError::internal(other),
    }
}

/// Refuses what cannot be a password before anything is hashed.
pub fn check_password_length(field: &'static str, password: &str) -> AppResult<()> {
    if password.chars().count() > users::PASSWORD_MAX {
        return Err(AppError::validation(
            field,
            format!("a password has at most {} characters", users::PASSWORD_MAX),
        ));
    }
    Ok(())
}

/// Creates an account and signs it in: used by register and by setup. Every
/// cheap check (the body, the registration mode, the username, the invite, the
/// per-address throttle) comes before the password is hashed.
pub async fn create_account(
    state: &SharedState,
    client: &ClientInfo,
    account: NewAccount,
) -> AppResult<Response> {
    let username = users::normalize_username(&account.username)?;
    users::validate_password("password", &account.password)?;
    let display_name = users::validate_display_name(account.display_name.as_deref().unwrap_or(""))?;
    let registration = state.settings.get().registration;
    if !account.as_setup_admin {
        match registration {
            Registration::Closed => {
                return Err(AppError::forbidden_code(
                    "registration_closed",
                    "registration is closed on this server; ask an admin for an account",
                ));
            }
            Registration::Invite if account.invite.as_deref().unwrap_or("").is_empty() => {
                return Err(invalid_invite());
            }
            _ => {}
        }
    }
    let invite = account
        .invite
        .filter(|_| registration == Registration::Invite && !account.as_setup_admin);
    let (taken, invite_usable) = {
        let (username, invite) = (username.clone(), invite.clone());
        state
            .db
            .read(move |conn| {
                let taken = users::get_with_hash(conn, &username)?.is_some();
                let usable = match &invite {
                    Some(code) => invite_is_usable(conn, code)?,
                    None => true,
                };
                Ok::<_, AppError>((taken, usable))
            })
            .await?
    };
    if taken {
        return Err(username_taken());
    }
    if !invite_usable {
        return Err(invalid_invite());
    }
    if !account.as_setup_admin {
        state
            .auth
            .registrations
            .admit(client.ip())
            .map_err(|retry_after_secs| AppError::RateLimited { retry_after_secs })?;
    }
    let hash = hash_password(state, account.password).await?;
    let ttl = state.auth.refresh_ttl_ms;
    let user_agent = client.user_agent.clone();
    let address = client.address_text();
    let as_admin = account.as_setup_admin;
    let (user, session_id, refresh_token) = state
        .db
        .writer
        .run(move |ctx| {
            if as_admin && users::any_admin(ctx.conn())? {
                return Err(AppError::Conflict {
                    code: "setup_done",
                    message: "setup is already done: an admin exists".into(),
                });
            }
            if let Some(code) = &invite {
                consume_invite(ctx, code)?;
            }
            let user = users::insert(
                ctx,
                &NewUser {
                    username: &username,
                    display_name: &display_name,
                    password_hash: &hash,
                    is_admin: as_admin,
                },
            )?;
            let (session_id, refresh_token) =
                sessions::create(ctx, user.id, &user_agent, &address, ttl)?;
            Ok((user, session_id, refresh_token))
        })
        .await?;
    let online = state.hub.is_online(user.id);
    let username = user.username.clone();
    let body = token_response(state, user.into_user(online), session_id, refresh_token)?;
    let mut response = json(StatusCode::CREATED, &body);
    set_device_cookie(state, &mut response, &username, None);
    Ok(response)
}

fn invalid_invite() -> AppError {
    AppError::forbidden_code(
        "invalid_invite",
        "this invite code is missing, unknown, used up or expired",
    )
}

fn username_taken() -> AppError {
    AppError::Conflict {
        code: "username_taken",
        message: "this username is taken".into(),
    }
}

/// Whether an invite code can still be used (checked again when it is used up).
fn invite_is_usable(conn: &rusqlite::Connection, code: &str) -> AppResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM invites
             WHERE code = ?1 AND uses_left > 0 AND (expires_at IS NULL OR expires_at > ?2))",
        )?
        .query_row(params![code, crate::db::now_ms()], |row| row.get(0))?)
}

/// Gives the client a device token for `username` (keeping its device id), so
/// that its later logins are not held back by other clients' failures.
fn set_device_cookie(
    state: &SharedState,
    response: &mut Response,
    username: &str,
    device: Option<&str>,
) {
    let token = match state.auth.keys.issue_device(username, device) {
        Ok(token) => token,
        Err(err) => {
            tracing::warn!(error = %err, "could not issue a device token");
            return;
        }
    };
    let cookie = format!(
        "{DEVICE_COOKIE}={token}; Path=/api/v1/auth/login; Max-Age={}; HttpOnly; SameSite=Strict",
        crate::auth::tokens::DEVICE_TOKEN_TTL_SECS
    );
    if let Ok(value) = warp::http::HeaderValue::from_str(&cookie) {
        response
            .headers_mut()
            .append(warp::http::header::SET_COOKIE, value);
    }
}

/// Uses up one use of an invite, or fails with 403 `invalid_invite`.
fn consume_invite(ctx: &mut WriteCtx<'_>, code: &str) -> AppResult<()> {
    let now = ctx.now();
    let updated = ctx.conn().execute(
        "UPDATE invites SET uses_left = uses_left - 1
         WHERE code = ?1 AND uses_left > 0 AND (expires_at IS NULL OR expires_at > ?2)",
        params![code, now],
    )?;
    if updated == 0 {
        return Err(invalid_invite());
    }
    Ok(())
}

fn token_response(
    state: &SharedState,
    user: User,
    session_id: i64,
    refresh_token: String,
) -> AppResult<TokenResponse> {
    let access_token = state
        .auth
        .keys
        .issue(user.id, session_id)
        .map_err(AppError::internal)?;
    Ok(TokenResponse {
        user,
        access_token,
        refresh_token,
        expires_in: state.auth.keys.access_ttl_secs,
    })
}

async fn register(
    state: SharedState,
    client: ClientInfo,
    body: RegisterRequest,
) -> AppResult<Response> {
    create_account(
        &state,
        &client,
        NewAccount {
            username: body.username,
            password: body.password,
            display_name: body.display_name,
            invite: body.invite,
            as_setup_admin: false,
        },
    )
    .await
}

async fn login(
    state: SharedState,
    client: ClientInfo,
    device_cookie: Option<String>,
    body: LoginRequest,
) -> AppResult<Response> {
    check_password_length("password", &body.password)?;
    let wrong = || AppError::unauthorized("wrong username or password");
    // A name that breaks the username rules cannot exist: nothing to verify.
    let Ok(username) = users::normalize_username(&body.username) else {
        return Err(wrong());
    };
    let device = device_cookie
        .as_deref()
        .and_then(|token| state.auth.keys.device_of(token, &username));
    let attempt = state
        .auth
        .throttle
        .begin(&username, client.ip(), device.as_deref())
        .map_err(|retry_after_secs| AppError::RateLimited { retry_after_secs })?;
    let lookup = username.clone();
    let found = state
        .db
        .read(move |conn| users::get_with_hash(conn, &lookup))
        .await?;
    let (user, stored) = match found {
        Some((user, hash)) => (Some(user), Some(hash)),
        None => (None, None),
    };
    let matches = verify_password(&state, stored, body.password).await?;
    let Some(user) = user.filter(|_| matches) else {
        attempt.failed();
        return Err(wrong());
    };
    if user.disabled {
        return Err(AppError::forbidden_code(
            "account_disabled",
            "this account is disabled",
        ));
    }
    attempt.succeeded();
    let ttl = state.auth.refresh_ttl_ms;
    let user_id = user.id;
    let user_agent = client.user_agent.clone();
    let address = client.address_text();
    let (session_id, refresh_token) = state
        .db
        .writer
        .run(move |ctx| sessions::create(ctx, user_id, &user_agent, &address, ttl))
        .await?;
    let online = state.hub.is_online(user.id);
    let body = token_response(&state, user.into_user(online), session_id, refresh_token)?;
    let mut response = ok(&body);
    set_device_cookie(&state, &mut response, &username, device.as_deref());
    Ok(response)
}

async fn refresh(
    state: SharedState,
    client: ClientInfo,
    body: RefreshRequest,
) -> AppResult<Response> {
    let ttl = state.auth.refresh_ttl_ms;
    let address = client.address_text();
    let presented = body.refresh_token;
    let rotation = state
        .db
        .writer
        .run(move |ctx| sessions::rotate(ctx, &presented, &address, ttl))
        .await?;
    match rotation {
        Rotation::Reused { session_id } => {
            state.auth.mark_sessions_revoked(&[session_id]);
            state.hub.close_session(session_id, close::POLICY);
            tracing::warn!(
                session_id,
                "a used refresh token was presented again; session revoked"
            );
            Err(AppError::invalid_token(
                "this refresh token was already used; the session has been signed out",
            ))
        }
        Rotation::Rotated {
            user_id,
            session_id,
            refresh_token,
        } => {
            let user = state
                .db
                .read(move |conn| users::get(conn, user_id))
                .await?
                .ok_or_else(|| AppError::invalid_token("the account no longer exists"))?;
            let online = state.hub.is_online(user_id);
            let body = token_response(&state, user.into_user(online), session_id, refresh_token)?;
            Ok(ok(&body))
        }
    }
}

async fn logout(state: SharedState, caller: AuthUser) -> AppResult<Response> {
    let session_id = caller.session_id;
    state
        .db
        .writer
        .run(move |ctx| sessions::revoke(ctx, session_id))
        .await?;
    state.auth.mark_sessions_revoked(&[session_id]);
    state.hub.close_session(session_id, close::POLICY);
    Ok(no_content())
}

async fn list_sessions(state: SharedState, caller: AuthUser) -> AppResult<Response> {
    let now = crate::db::now_ms();
    let items = state
        .db
        .read(move |conn| sessions::list(conn, caller.user_id, caller.session_id, now))
        .await?;
    Ok(ok(
        &serde_json::json!({ "items": items, "next_cursor": null }),
    ))
}

async fn revoke_session(
    session_id: i64,
    state: SharedState,
    caller: AuthUser,
) -> AppResult<Response> {
    let owner = state
        .db
        .read(move |conn| sessions::live_owner(conn, session_id))
        .await?;
    // Someone else's session is as unknown to the caller as a missing one.
    if owner != Some(caller.user_id) {
        return Err(AppError::not_found("no such session"));
    }
    state
        .db
        .writer
        .run(move |ctx| sessions::revoke(ctx, session_id))
        .await?;
    state.auth.mark_sessions_revoked(&[session_id]);
    state.hub.close_session(session_id, close::POLICY);
    Ok(no_content())
}
