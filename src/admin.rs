//! Administration: managing accounts (create, disable, re-enable, reset password,
//! grant or revoke admin), invites and server statistics. Plain functions over a
//! read connection or a write transaction; `api::admin` wraps them in HTTP and
//! applies their in-memory consequences (revocations, closed sockets).

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::auth::sessions;
use crate::db::WriteCtx;
use crate::error::{AppError, AppResult};
use crate::users::{self, UserRecord};

/// Invites allow at most this many registrations each.
pub const INVITE_MAX_USES: u32 = 1000;
/// Invites expire at most this far ahead (a year), in seconds.
pub const INVITE_MAX_EXPIRES_IN: u64 = 366 * 86_400;
/// Length of an invite code: 20 characters of a 32-letter alphabet = 100 bits.
const INVITE_CODE_LEN: usize = 20;
/// Crockford's base 32: no I, L, O or U, so a code read aloud is not misheard.
const INVITE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Whether `user_id` is an admin whose account is enabled, as the database says
/// now (never a cached view: a demoted admin loses access at once).
pub fn is_active_admin(conn: &Connection, user_id: i64) -> AppResult<bool> {
    Ok(conn
        .prepare_cached("SELECT is_admin = 1 AND disabled = 0 FROM users WHERE id = ?1")?
        .query_row([user_id], |row| row.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false))
}

/// A change to an account; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct UserChange {
    pub disabled: Option<bool>,
    pub is_admin: Option<bool>,
    /// An Argon2 hash of the new password (hashed before the write job).
    pub password_hash: Option<String>,
}

/// What [`update_user`] did, for the caller to apply in memory after commit.
#[derive(Debug)]
pub struct UserUpdated {
    pub user: UserRecord,
    /// Sessions revoked (disabling or a password reset).
    pub revoked_sessions: Vec<i64>,
    /// `Some(new state)` when `disabled` changed.
    pub disabled_changed: Option<bool>,
}

/// Applies an admin's change to an account. A change that would leave the server
/// without any enabled admin is refused with 409 `last_admin`. Disabling and
/// password resets revoke the user's sessions, except `keep_session` (the
/// calling admin's own session when they reset their own password).
pub fn update_user(
    ctx: &mut WriteCtx<'_>,
    id: i64,
    change: &UserChange,
    keep_session: Option<i64>,
) -> AppResult<UserUpdated> {
    let before = users::get(ctx.conn(), id)?.ok_or_else(|| AppError::not_found("no such user"))?;
    let disabled = change.disabled.unwrap_or(before.disabled);
    let is_admin = change.is_admin.unwrap_or(before.is_admin);
    let was_active_admin = before.is_admin && !before.disabled;
    let stays_active_admin = is_admin && !disabled;
    if was_active_admin && !stays_active_admin {
        let others: i64 = ctx.conn().query_row(
            "SELECT COUNT(*) FROM users WHERE is_admin = 1 AND disabled = 0 AND id != ?1",
            [id],
            |row| row.get(0),
        )?;
        if others == 0 {
            return Err(AppError::Conflict {
                code: "last_admin",
                message: "this is the last enabled admin: make another admin first".into(),
            });
        }
    }
    ctx.conn().execute(
        "UPDATE users SET disabled = ?1, is_admin = ?2 WHERE id = ?3",
        params![disabled, is_admin, id],
    )?;
    if let Some(hash) = &change.password_hash {
        users::set_password_hash(ctx, id, hash)?;
    }
    let newly_disabled = disabled && !before.disabled;
    let revoked_sessions = if newly_disabled {
        sessions::revoke_all(ctx, id, None)?
    } else if change.password_hash.is_some() {
        sessions::revoke_all(ctx, id, keep_session)?
    } else {
        Vec::new()
    };
    let user = users::get(ctx.conn(), id)?.ok_or_else(|| AppError::not_found("no such user"))?;
    Ok(UserUpdated {
        user,
        revoked_sessions,
        disabled_changed: (disabled != before.disabled).then_some(disabled),
    })
}

/// The contract's invite object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Invite {
    pub code: String,
    pub created_by: Option<i64>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub uses_left: i64,
}

/// A new random invite code (100 bits, URL-safe, unambiguous when read aloud).
pub fn new_invite_code() -> String {
    let mut random = [0u8; INVITE_CODE_LEN];
    rand::fill(&mut random[..]);
    random
        .iter()
        .map(|b| INVITE_ALPHABET[usize::from(b & 31)] as char)
        .collect()
}

pub fn validate_invite(
    uses: Option<u32>,
    expires_in: Option<u64>,
) -> AppResult<(u32, Option<u64>)> {
    let uses = uses.unwrap_or(1);
    if !(1..=INVITE_MAX_USES).contains(&uses) {
        return Err(AppError::validation(
            "uses",
            format!("an invite allows 1 to {INVITE_MAX_USES} registrations"),
        ));
    }
    if let Some(secs) = expires_in
        && !(1..=INVITE_MAX_EXPIRES_IN).contains(&secs)
    {
        return Err(AppError::validation(
            "expires_in",
            format!("expires_in is 1 to {INVITE_MAX_EXPIRES_IN} seconds"),
        ));
    }
    Ok((uses, expires_in))
}

pub fn create_invite(
    ctx: &mut WriteCtx<'_>,
    created_by: i64,
    uses: u32,
    expires_in_secs: Option<u64>,
) -> AppResult<Invite> {
    let now = ctx.now();
    let expires_at = expires_in_secs.map(|secs| now + (secs as i64) * 1000);
    let code = new_invite_code();
    ctx.conn().execute(
        "INSERT INTO invites (code, created_by, created_at, expires_at, uses_left)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![code, created_by, now, expires_at, uses],
    )?;
    Ok(Invite {
        code,
        created_by: Some(created_by),
        created_at: now,
        expires_at,
        uses_left: i64::from(uses),
    })
}

/// Invites, newest first, after the cursor `"<created_at>.<code>"`.
pub fn list_invites(
    conn: &Connection,
    cursor: Option<&str>,
    limit: usize,
) -> AppResult<Vec<Invite>> {
    let (before_at, before_code) = match cursor {
        Some(cursor) => parse_invite_cursor(cursor)?,
        None => (i64::MAX, String::new()),
    };
    let invites = conn
        .prepare_cached(
            "SELECT code, created_by, created_at, expires_at, uses_left FROM invites
             WHERE created_at < ?1 OR (created_at = ?1 AND code < ?2) OR ?2 = ''
             ORDER BY created_at DESC, code DESC LIMIT ?3",
        )?
        .query_map(params![before_at, before_code, limit as i64], |row| {
            Ok(Invite {
                code: row.get(0)?,
                created_by: row.get(1)?,
                created_at: row.get(2)?,
                expires_at: row.get(3)?,
                uses_left: row.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(invites)
}

pub fn invite_cursor(invite: &Invite) -> String {
    format!("{}.{}", invite.created_at, invite.code)
}

fn parse_invite_cursor(cursor: &str) -> AppResult<(i64, String)> {
    let bad = || AppError::bad_field("cursor", "this cursor is not valid");
    let (at, code) = cursor.split_once('.').ok_or_else(bad)?;
    let at: i64 = at.parse().map_err(|_| bad())?;
    if code.is_empty() || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad());
    }
    Ok((at, code.to_owned()))
}

/// Deletes an invite; false when there was none with that code.
pub fn delete_invite(ctx: &mut WriteCtx<'_>, code: &str) -> AppResult<bool> {
    Ok(ctx
        .conn()
        .execute("DELETE FROM invites WHERE code = ?1", [code])?
        > 0)
}

/// Counts kept in the database (online users come from the hub).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct DbStats {
    pub users: i64,
    pub conversations: i64,
    /// Messages not deleted (system messages included).
    pub messages: i64,
    /// The database file's size: page count × page size.
    pub database_bytes: i64,
    /// Bytes of stored attachment files: each distinct content once.
    pub attachment_bytes: i64,
}

pub fn db_stats(conn: &Connection) -> AppResult<DbStats> {
    let count = |sql: &str| -> AppResult<i64> { Ok(conn.query_row(sql, [], |row| row.get(0))?) };
    Ok(DbStats {
        users: count("SELECT COUNT(*) FROM users")?,
        conversations: count("SELECT COUNT(*) FROM conversations")?,
        messages: count("SELECT COUNT(*) FROM messages WHERE deleted_at IS NULL")?,
        database_bytes: count(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )?,
        attachment_bytes: count(
            "SELECT COALESCE(SUM(size), 0) FROM
                 (SELECT MAX(size) AS size FROM attachments GROUP BY sha256)",
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, migrations, open_writer_connection};

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let mut conn = open_writer_connection(&path).expect("open");
        migrations::migrate(&mut conn).expect("migrate");
        let db = Db::start(
            &path,
            conn,
            1,
            Box::new(|_| {}),
            crate::db::writer::no_background(),
        )
        .expect("start");
        (dir, db)
    }

    fn add_user(db: &Db, name: &'static str, admin: bool) -> i64 {
        db.writer
            .run_blocking(move |ctx| {
                users::insert(
                    ctx,
                    &users::NewUser {
                        username: name,
                        display_name: "",
                        password_hash: "x",
                        is_admin: admin,
                    },
                )
            })
            .expect("insert")
            .id
    }

    #[test]
    fn last_admin_is_protected() {
        let (_dir, db) = db();
        let root = add_user(&db, "root", true);
        let bob = add_user(&db, "bob", false);
        let demote = UserChange {
            is_admin: Some(false),
            ..Default::default()
        };
        let disable = UserChange {
            disabled: Some(true),
            ..Default::default()
        };
        for change in [demote.clone(), disable.clone()] {
            let err = db
                .writer
                .run_blocking(move |ctx| update_user(ctx, root, &change, None))
                .expect_err("last admin");
            assert_eq!(err.code(), "last_admin");
        }
        // Disabling a plain user is fine; a second admin frees the first.
        let done = db
            .writer
            .run_blocking(move |ctx| update_user(ctx, bob, &disable, None))
            .expect("disable bob");
        assert_eq!(done.disabled_changed, Some(true));
        assert!(done.user.disabled);
        let grant = UserChange {
            is_admin: Some(true),
            disabled: Some(false),
            ..Default::default()
        };
        db.writer
            .run_blocking(move |ctx| update_user(ctx, bob, &grant, None))
            .expect("grant bob");
        let done = db
            .writer
            .run_blocking(move |ctx| update_user(ctx, root, &demote, None))
            .expect("demote root");
        assert!(!done.user.is_admin);
        assert!(
            !db.read_blocking(|conn| is_active_admin(conn, root))
                .expect("read")
        );
        assert!(
            db.read_blocking(|conn| is_active_admin(conn, bob))
                .expect("read")
        );
        db.writer.shutdown_blocking();
    }

    #[test]
    fn invites_page_and_delete() {
        let (_dir, db) = db();
        let root = add_user(&db, "root", true);
        for _ in 0..5 {
            db.writer
                .run_blocking(move |ctx| create_invite(ctx, root, 2, Some(60)))
                .expect("invite");
        }
        let first = db
            .read_blocking(|conn| list_invites(conn, None, 3))
            .expect("list");
        assert_eq!(first.len(), 3);
        let cursor = invite_cursor(&first[2]);
        let rest = db
            .read_blocking(move |conn| list_invites(conn, Some(&cursor), 10))
            .expect("list");
        assert_eq!(rest.len(), 2);
        assert!(first.iter().all(|a| rest.iter().all(|b| a.code != b.code)));
        let code = rest[0].code.clone();
        assert_eq!(code.len(), 20);
        let gone = db
            .writer
            .run_blocking(move |ctx| delete_invite(ctx, &code))
            .expect("delete");
        assert!(gone);
        assert!(
            db.read_blocking(|conn| list_invites(conn, Some("nonsense"), 3))
                .is_err()
        );
        assert!(validate_invite(Some(0), None).is_err());
        assert!(validate_invite(Some(1001), None).is_err());
        assert!(validate_invite(None, Some(0)).is_err());
        assert_eq!(validate_invite(None, None).expect("ok"), (1, None));
        let stats = db.read_blocking(db_stats).expect("stats");
        assert_eq!(stats.users, 1);
        assert!(stats.database_bytes > 0);
        db.writer.shutdown_blocking();
    }

    #[test]
    fn writer_liveness_is_reported() {
        let (_dir, db) = db();
        assert!(db.writer.is_alive());
        db.writer.shutdown_blocking();
        assert!(!db.writer.is_alive());
    }
}
