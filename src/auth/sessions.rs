//! Sessions (one per device) and rotating refresh tokens with reuse detection.
//! These are plain functions over a connection or a write transaction.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::tokens::{hash_refresh_token, new_refresh_token};
use crate::db::WriteCtx;
use crate::error::{AppError, AppResult};

/// A session as the owner sees it in the devices list.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: i64,
    pub user_agent: String,
    pub address: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
    pub current: bool,
}

/// Opens a session and returns `(session_id, refresh_token)`.
pub fn create(
    ctx: &mut WriteCtx<'_>,
    user_id: i64,
    user_agent: &str,
    address: &str,
    ttl_ms: i64,
) -> AppResult<(i64, String)> {
    let now = ctx.now();
    ctx.conn().execute(
        "INSERT INTO sessions (user_id, user_agent, address, created_at, last_used_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        params![
            user_id,
            truncate(user_agent, 256),
            truncate(address, 64),
            now,
            now + ttl_ms
        ],
    )?;
    let session_id = ctx.conn().last_insert_rowid();
    let token = new_refresh_token();
    ctx.conn().execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES (?1, ?2, ?3)",
        params![hash_refresh_token(&token), session_id, now],
    )?;
    Ok((session_id, token))
}

/// (session id, token used at, user id, session revoked at, expires at, user disabled)
type TokenRow = (i64, Option<i64>, i64, Option<i64>, i64, bool);

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Rotation {
    /// A fresh token for the same session.
    Rotated {
        user_id: i64,
        session_id: i64,
        refresh_token: String,
    },
    /// The token had been used before: the session is now revoked (theft suspected).
    Reused { session_id: i64 },
}

pub fn rotate(
    ctx: &mut WriteCtx<'_>,
    presented: &str,
    address: &str,
    ttl_ms: i64,
) -> AppResult<Rotation> {
    let now = ctx.now();
    let hash = hash_refresh_token(presented);
    let found: Option<TokenRow> = ctx
        .conn()
        .query_row(
            "SELECT s.id, t.used_at, s.user_id, s.revoked_at, s.expires_at, u.disabled
             FROM refresh_tokens t
             JOIN sessions s ON s.id = t.session_id
             JOIN users u ON u.id = s.user_id
             WHERE t.token_hash = ?1",
            [&hash],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            },
        )
        .optional()?;
    let Some((session_id, used_at, user_id, revoked_at, expires_at, disabled)) = found else {
        return Err(AppError::invalid_token("the refresh token is not valid"));
    };
    if revoked_at.is_some() {
        return Err(AppError::invalid_token("this session has been signed out"));
    }
    if used_at.is_some() {
        revoke(ctx, session_id)?;
        return Ok(Rotation::Reused { session_id });
    }
    if expires_at <= now {
        return Err(AppError::invalid_token(
            "the session has expired; sign in again",
        ));
    }
    if disabled {
        return Err(AppError::forbidden_code(
            "account_disabled",
            "this account is disabled",
        ));
    }
    ctx.conn().execute(
        "UPDATE refresh_tokens SET used_at = ?1 WHERE token_hash = ?2",
        params![now, hash],
    )?;
    let refresh_token = new_refresh_token();
    ctx.conn().execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES (?1, ?2, ?3)",
        params![hash_refresh_token(&refresh_token), session_id, now],
    )?;
    ctx.conn().execute(
        "UPDATE sessions SET last_used_at = ?1, expires_at = ?2, address = ?3 WHERE id = ?4",
        params![now, now + ttl_ms, truncate(address, 64), session_id],
    )?;
    Ok(Rotation::Rotated {
        user_id,
        session_id,
        refresh_token,
    })
}

/// Revokes one session. Returns whether it was live.
pub fn revoke(ctx: &mut WriteCtx<'_>, session_id: i64) -> AppResult<bool> {
    let changed = ctx.conn().execute(
        "UPDATE sessions SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
        params![ctx.now(), session_id],
    )?;
    Ok(changed > 0)
}

/// Revokes a user's live sessions, except `keep`; returns the ids revoked.
pub fn revoke_all(ctx: &mut WriteCtx<'_>, user_id: i64, keep: Option<i64>) -> AppResult<Vec<i64>> {
    let ids: Vec<i64> = ctx
        .conn()
        .prepare(
            "UPDATE sessions SET revoked_at = ?1
             WHERE user_id = ?2 AND revoked_at IS NULL AND id IS NOT ?3
             RETURNING id",
        )?
        .query_map(params![ctx.now(), user_id, keep], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// Sessions revoked at or after `since_ms` (by this process or another one).
pub fn revoked_since(conn: &Connection, since_ms: i64) -> AppResult<Vec<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM sessions WHERE revoked_at >= ?1")?
        .query_map([since_ms], |row| row.get(0))?
        .collect::<Result<_, _>>()?)
}

/// The owner of a session, if it is live.
pub fn live_owner(conn: &Connection, session_id: i64) -> AppResult<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT user_id FROM sessions WHERE id = ?1 AND revoked_at IS NULL",
            [session_id],
            |row| row.get(0),
        )
        .optional()?)
}

/// A user's live sessions, newest use first.
pub fn list(
    conn: &Connection,
    user_id: i64,
    current: i64,
    now: i64,
) -> AppResult<Vec<SessionInfo>> {
    let sessions = conn
        .prepare(
            "SELECT id, user_agent, address, created_at, last_used_at, expires_at FROM sessions
             WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2
             ORDER BY last_used_at DESC, id DESC",
        )?
        .query_map(params![user_id, now], |row| {
            let id: i64 = row.get(0)?;
            Ok(SessionInfo {
                id,
                user_agent: row.get(1)?,
                address: row.get(2)?,
                created_at: row.get(3)?,
                last_used_at: row.get(4)?,
                expires_at: row.get(5)?,
                current: id == current,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(sessions)
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
