//! Users: validation, storage and the public `User` object. Plain functions over a
//! read connection or a write transaction, testable without HTTP.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::db::WriteCtx;
use crate::error::{AppError, AppResult};

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 1024;
pub const DISPLAY_NAME_MAX: usize = 64;
pub const STATUS_TEXT_MAX: usize = 140;

/// A user as stored (without the password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub status_text: String,
    pub avatar_attachment_id: Option<i64>,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
}

/// The contract's User object; `online` comes from the realtime hub.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: i64,
    pub online: bool,
    pub last_seen_at: Option<i64>,
    pub status_text: String,
    pub avatar_attachment_id: Option<i64>,
}

impl UserRecord {
    pub fn into_user(self, online: bool) -> User {
        User {
            id: self.id,
            username: self.username,
            display_name: self.display_name,
            is_admin: self.is_admin,
            disabled: self.disabled,
            created_at: self.created_at,
            online,
            last_seen_at: self.last_seen_at,
            status_text: self.status_text,
            avatar_attachment_id: self.avatar_attachment_id,
        }
    }
}

pub const USER_COLUMNS: &str = "id, username, display_name, is_admin, disabled, status_text, \
     avatar_attachment_id, created_at, last_seen_at";

pub fn from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        username: row.get(1)?,
        display_name: row.get(2)?,
        is_admin: row.get(3)?,
        disabled: row.get(4)?,
        status_text: row.get(5)?,
        avatar_attachment_id: row.get(6)?,
        created_at: row.get(7)?,
        last_seen_at: row.get(8)?,
    })
}

/// Folds a username to lower case and checks the contract's rules.
pub fn normalize_username(raw: &str) -> AppResult<String> {
    let folded = raw.trim().to_lowercase();
    let len = folded.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&len) {
        return Err(AppError::validation(
            "username",
            format!("a username has {USERNAME_MIN} to {USERNAME_MAX} characters"),
        ));
    }
    if !folded
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
    {
        return Err(AppError::validation(
            "username",
            "a username may only contain a-z, 0-9, '_', '.' and '-'",
        ));
    }
    Ok(folded)
}

pub fn validate_password(field: &'static str, password: &str) -> AppResult<()> {
    let len = password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&len) {
        return Err(AppError::validation(
            field,
            format!("a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters"),
        ));
    }
    Ok(())
}

pub fn validate_display_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.chars().count() > DISPLAY_NAME_MAX {
        return Err(AppError::validation(
            "display_name",
            format!("a display name has at most {DISPLAY_NAME_MAX} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::validation(
            "display_name",
            "a display name cannot contain control characters",
        ));
    }
    Ok(name.to_owned())
}

pub fn validate_status_text(text: &str) -> AppResult<String> {
    let text = text.trim();
    if text.chars().count() > STATUS_TEXT_MAX {
        return Err(AppError::validation(
            "status_text",
            format!("a status has at most {STATUS_TEXT_MAX} characters"),
        ));
    }
    Ok(text.to_owned())
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub password_hash: &'a str,
    pub is_admin: bool,
}

/// Inserts a user (already validated and hashed); 409 when the name is taken.
pub fn insert(ctx: &mut WriteCtx<'_>, new: &NewUser<'_>) -> AppResult<UserRecord> {
    let now = ctx.now();
    let display_name = if new.display_name.is_empty() {
        new.username
    } else {
        new.display_name
    };
    let inserted = ctx.conn().execute(
        "INSERT INTO users (username, display_name, password_hash, is_admin, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            new.username,
            display_name,
            new.password_hash,
            new.is_admin,
            now
        ],
    );
    match inserted {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(err, _))
            if err.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(AppError::Conflict {
                code: "username_taken",
                message: "this username is taken".into(),
            });
        }
        Err(err) => return Err(err.into()),
    }
    let id = ctx.conn().last_insert_rowid();
    get(ctx.conn(), id)?.ok_or_else(|| AppError::internal("inserted user vanished"))
}

pub fn get(conn: &Connection, id: i64) -> AppResult<Option<UserRecord>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

/// A user and their password hash, by (folded) username.
pub fn get_with_hash(conn: &Connection, username: &str) -> AppResult<Option<(UserRecord, String)>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = ?1"
        ))?
        .query_row([username], |row| Ok((from_row(row)?, row.get(9)?)))
        .optional()?)
}

pub fn password_hash(conn: &Connection, id: i64) -> AppResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT password_hash FROM users WHERE id = ?1",
            [id],
            |row| row.get(0),
        )
        .optional()?)
}

pub fn set_password_hash(ctx: &mut WriteCtx<'_>, id: i64, hash: &str) -> AppResult<()> {
    ctx.conn().execute(
        "UPDATE users SET password_hash = ?1 WHERE id = ?2",
        params![hash, id],
    )?;
    Ok(())
}

/// The directory: users whose username or display name contains `q`, ordered by
/// username, after the `cursor` username.
pub fn list(
    conn: &Connection,
    q: &str,
    after_username: Option<&str>,
    limit: usize,
    include_disabled: bool,
) -> AppResult<Vec<UserRecord>> {
    let pattern = format!("%{}%", escape_like(&q.to_lowercase()));
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users
         WHERE (?1 = '%%' OR username LIKE ?1 ESCAPE '\\' OR lower(display_name) LIKE ?1 ESCAPE '\\')
           AND username > ?2 AND (?3 OR disabled = 0)
         ORDER BY username LIMIT ?4"
    );
    let users = conn
        .prepare_cached(&sql)?
        .query_map(
            params![
                pattern,
                after_username.unwrap_or(""),
                include_disabled,
                limit as i64
            ],
            from_row,
        )?
        .collect::<Result<_, _>>()?;
    Ok(users)
}

pub fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Changes to one's own profile; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ProfilePatch {
    pub display_name: Option<String>,
    pub status_text: Option<String>,
    /// `Some(None)` clears the avatar.
    pub avatar_attachment_id: Option<Option<i64>>,
}

pub fn update_profile(
    ctx: &mut WriteCtx<'_>,
    id: i64,
    patch: ProfilePatch,
) -> AppResult<UserRecord> {
    let conn = ctx.conn();
    if let Some(name) = &patch.display_name {
        conn.execute(
            "UPDATE users SET display_name = ?1 WHERE id = ?2",
            params![name, id],
        )?;
    }
    if let Some(text) = &patch.status_text {
        conn.execute(
            "UPDATE users SET status_text = ?1 WHERE id = ?2",
            params![text, id],
        )?;
    }
    if let Some(avatar) = patch.avatar_attachment_id {
        if let Some(attachment) = avatar {
            let owned: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM attachments WHERE id = ?1 AND uploader_id = ?2)",
                params![attachment, id],
                |row| row.get(0),
            )?;
            if !owned {
                return Err(AppError::validation(
                    "avatar_attachment_id",
                    "no such attachment of yours",
                ));
            }
        }
        conn.execute(
            "UPDATE users SET avatar_attachment_id = ?1 WHERE id = ?2",
            params![avatar, id],
        )?;
    }
    get(conn, id)?.ok_or_else(|| AppError::not_found("no such user"))
}

pub fn any_admin(conn: &Connection) -> AppResult<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM users WHERE is_admin = 1 AND disabled = 0)",
        [],
        |row| row.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_fold_and_validate() {
        assert_eq!(normalize_username("Alice").expect("ok"), "alice");
        assert_eq!(normalize_username("a.b-c_1").expect("ok"), "a.b-c_1");
        assert!(normalize_username("ab").is_err());
        assert!(normalize_username(&"a".repeat(33)).is_err());
        assert!(normalize_username("al ice").is_err());
        assert!(normalize_username("ålice").is_err());
        assert!(validate_password("password", "short").is_err());
        assert!(validate_password("password", "long enough").is_ok());
        assert_eq!(escape_like("50%_\\"), "50\\%\\_\\\\");
    }
}
