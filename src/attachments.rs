//! Attachments: the stored file records and their public object, receiving an
//! upload, who may read a file, and the cleanup of files never sent. Files live
//! in the data directory, content-addressed by SHA-256 (see [`store`]); what a
//! file is and how a browser may show it is decided in [`media`].

pub mod media;
pub mod rate;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::Stream;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::db::WriteCtx;
use crate::error::{AppError, AppResult};
use crate::state::SharedState;
use rate::{MinRate, RateWatch, Stalled};
use store::{TempFile, UploadWriter, Written};

/// The contract's Attachment object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attachment {
    pub id: i64,
    pub name: String,
    pub mime: String,
    pub size: i64,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    pub url: String,
}

pub fn url_for(id: i64) -> String {
    format!("/api/v1/attachments/{id}")
}

/// The attachments of each of `message_ids`, in their sent order.
pub fn load_for_messages(
    conn: &Connection,
    message_ids: &[i64],
) -> AppResult<HashMap<i64, Vec<Attachment>>> {
    let mut out: HashMap<i64, Vec<Attachment>> = HashMap::new();
    if message_ids.is_empty() {
        return Ok(out);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT ma.message_id, a.id, a.name, a.mime, a.size, a.sha256, a.width, a.height
         FROM message_attachments ma JOIN attachments a ON a.id = ma.attachment_id
         WHERE ma.message_id IN (SELECT value FROM json_each(?1))
         ORDER BY ma.message_id, ma.position",
    )?;
    let ids = serde_json::to_string(message_ids).unwrap_or_else(|_| "[]".into());
    let rows = stmt.query_map([ids], |row| {
        let id: i64 = row.get(1)?;
        Ok((
            row.get::<_, i64>(0)?,
            Attachment {
                id,
                name: row.get(2)?,
                mime: row.get(3)?,
                size: row.get(4)?,
                sha256: row.get(5)?,
                width: row.get(6)?,
                height: row.get(7)?,
                url: url_for(id),
            },
        ))
    })?;
    for row in rows {
        let (message_id, attachment) = row?;
        out.entry(message_id).or_default().push(attachment);
    }
    Ok(out)
}

const COLUMNS: &str = "a.id, a.name, a.mime, a.size, a.sha256, a.width, a.height";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Attachment> {
    let id: i64 = row.get(0)?;
    Ok(Attachment {
        id,
        name: row.get(1)?,
        mime: row.get(2)?,
        size: row.get(3)?,
        sha256: row.get(4)?,
        width: row.get(5)?,
        height: row.get(6)?,
        url: url_for(id),
    })
}

/// A record for a file that was just stored.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    pub name: String,
    pub mime: String,
    pub size: u64,
    pub sha256: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// The bytes of every attachment `user_id` uploaded that is still stored (each
/// upload counts, even of content stored once for several): what the quota
/// limits.
pub fn stored_bytes(conn: &Connection, user_id: i64) -> AppResult<u64> {
    let total: i64 = conn
        .prepare_cached("SELECT COALESCE(SUM(size), 0) FROM attachments WHERE uploader_id = ?1")?
        .query_row([user_id], |row| row.get(0))?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// [`stored_bytes`] of each of `user_ids` that has any.
pub fn stored_bytes_of(conn: &Connection, user_ids: &[i64]) -> AppResult<HashMap<i64, u64>> {
    let ids = serde_json::to_string(user_ids).map_err(AppError::internal)?;
    let mut stmt = conn.prepare_cached(
        "SELECT uploader_id, SUM(size) FROM attachments
         WHERE uploader_id IN (SELECT value FROM json_each(?1)) GROUP BY uploader_id",
    )?;
    let rows = stmt.query_map([ids], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let (user, bytes) = row?;
        out.insert(user, u64::try_from(bytes).unwrap_or(0));
    }
    Ok(out)
}

/// 507 `quota_exceeded`, saying how much is used of how much.
pub fn over_quota(used: u64, quota: u64) -> AppError {
    AppError::quota_exceeded(format!(
        "your attachments use {used} of your {quota} bytes: delete some messages with files, or ask an admin for more room"
    ))
}

/// Records an upload, unless it would take the uploader past `quota` bytes
/// (0: no quota). Checked here, in the writer, so concurrent uploads cannot
/// pass it together.
pub fn insert(
    ctx: &mut WriteCtx<'_>,
    uploader_id: i64,
    new: NewAttachment,
    quota: u64,
) -> AppResult<Attachment> {
    if quota > 0 {
        let used = stored_bytes(ctx.conn(), uploader_id)?;
        if used.saturating_add(new.size) > quota {
            return Err(over_quota(used, quota));
        }
    }
    ctx.conn()
        .prepare_cached(
            "INSERT INTO attachments (uploader_id, name, mime, size, sha256, width, height, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            uploader_id,
            new.name,
            new.mime,
            new.size as i64,
            new.sha256,
            new.width,
            new.height,
            ctx.now()
        ])?;
    let id = ctx.conn().last_insert_rowid();
    Ok(Attachment {
        id,
        name: new.name,
        mime: new.mime,
        size: new.size as i64,
        sha256: new.sha256,
        width: new.width.map(i64::from),
        height: new.height.map(i64::from),
        url: url_for(id),
    })
}

/// The attachment `id` if `user_id` may read it: its uploader; a member of a
/// conversation where it was sent in a message that is not deleted (any user for
/// a channel: channels are public); anyone when it is a user's avatar (avatars
/// are shown next to names everywhere). `None` otherwise, so that existence is
/// not leaked.
pub fn get_readable(conn: &Connection, id: i64, user_id: i64) -> AppResult<Option<Attachment>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM attachments a
         WHERE a.id = ?1 AND (
            a.uploader_id = ?2
            OR EXISTS (SELECT 1 FROM users u WHERE u.avatar_attachment_id = a.id)
            OR EXISTS (
                SELECT 1 FROM message_attachments ma
                JOIN messages m ON m.id = ma.message_id
                JOIN conversations c ON c.id = m.conversation_id
                WHERE ma.attachment_id = a.id AND m.deleted_at IS NULL
                  AND (c.kind = 'channel' OR EXISTS (
                        SELECT 1 FROM members mb
                        WHERE mb.conversation_id = c.id AND mb.user_id = ?2)))
         )"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![id, user_id], from_row)
        .optional()?)
}

/// Attachment ids in paths: a positive integer in plain digits, nothing else.
pub fn parse_id(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok().filter(|id| *id > 0)
}

/// Held (shared) by an upload from placing its file until its record is
/// committed, and by preview generation; held exclusively by the cleanup while it
/// decides which files no record refers to and removes them. So the cleanup never
/// removes a file that a record is about to point to. One server per data
/// directory (it is locked), so one lock per process is enough.
pub static FILES_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// How an upload's body ended.
#[derive(Debug)]
pub enum Received {
    /// Complete and fsynced in `files/tmp`, removed if the guard is dropped.
    Complete(TempFile, Written),
    /// Past the limit: what was written has been removed; the rest of the body
    /// has not been read.
    TooLarge,
}

/// Streams one upload into a temp file in `files/tmp`, hashing and writing it
/// in short blocking tasks (no thread waits on the client); stops as soon as it
/// grows past `limit` bytes, and fails with 408 when it arrives slower than
/// `rate`. The stream is borrowed so that the caller can drain the rest of a
/// refused one.
pub async fn receive<S, B, E>(
    files_dir: &Path,
    body: &mut S,
    limit: u64,
    rate: MinRate,
) -> AppResult<Received>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: Buf,
    E: std::fmt::Display,
{
    let temp = TempFile::new_name(&store::tmp_dir(files_dir), ".part");
    let writer = UploadWriter::create(temp.path().to_owned())
        .await
        .map_err(|err| storage_error("creating an upload's file", err))?;
    let outcome = fill(writer, body, limit, rate).await;
    if let Ok(Some(written)) = outcome {
        return Ok(Received::Complete(temp, written));
    }
    let removed = tokio::task::spawn_blocking(move || {
        let mut temp = temp;
        temp.remove();
    })
    .await;
    if let Err(err) = removed {
        tracing::warn!(error = %err, "removing a temp file failed");
    }
    outcome.map(|_| Received::TooLarge)
}

/// The body into the writer: what was written, or `None` past `limit`.
async fn fill<S, B, E>(
    mut writer: UploadWriter,
    body: &mut S,
    limit: u64,
    rate: MinRate,
) -> AppResult<Option<Written>>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: Buf,
    E: std::fmt::Display,
{
    let mut watch = RateWatch::start(rate);
    let mut size = 0u64;
    let failure = loop {
        let mut chunk = match watch.next(body).await {
            Ok(None) => break None,
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(err))) => {
                tracing::debug!(error = %err, "upload body failed");
                break Some(AppError::bad_request(
                    "the upload was interrupted or is not well-formed multipart",
                ));
            }
            Err(Stalled) => break Some(stalled(rate)),
        };
        let bytes: Bytes = chunk.copy_to_bytes(chunk.remaining());
        watch.received(bytes.len());
        size += bytes.len() as u64;
        if size > limit {
            writer.abandon().await;
            return Ok(None);
        }
        if let Err(err) = writer.push(bytes).await {
            break Some(storage_error("writing an upload", err));
        }
    };
    if let Some(err) = failure {
        writer.abandon().await;
        return Err(err);
    }
    let written = writer
        .finish()
        .await
        .map_err(|err| storage_error("writing an upload", err))?;
    Ok(Some(written))
}

/// 408 for an upload slower than `rate`.
pub fn stalled(rate: MinRate) -> AppError {
    AppError::RequestTimeout(
        format!(
            "the upload stalled: less than {} bytes arrived in {} s",
            rate.min_bytes,
            rate.window.as_secs()
        )
        .into(),
    )
}

/// A failed write: 507 when the disk is full, 500 otherwise.
fn storage_error(what: &str, err: std::io::Error) -> AppError {
    if err.kind() == std::io::ErrorKind::StorageFull {
        tracing::warn!(error = %err, "{what}: the disk is full");
        AppError::insufficient_storage("the server's disk is full: the upload was not stored")
    } else {
        AppError::internal(format!("{what}: {err}"))
    }
}

/// Files a received upload under its content address (once per content) and
/// records it within the uploader's `quota` (see [`insert`]). `claimed_mime` is
/// the part's content type, checked against the bytes by [`media::decide_mime`].
/// A file refused by the quota at this last check stays on disk until the
/// hourly cleanup (another upload may be recording the same content).
pub async fn store_upload(
    state: &SharedState,
    uploader_id: i64,
    name: String,
    claimed_mime: Option<String>,
    temp: TempFile,
    written: Written,
    quota: u64,
) -> AppResult<Attachment> {
    let mime = media::decide_mime(claimed_mime.as_deref(), &name, &written.head);
    let files = store::files_dir(&state.data_dir);
    let previewable = media::is_previewable_image(&mime);
    let sha = written.sha256.clone();
    let size = written.size;
    let _files = FILES_LOCK.read().await;
    let dimensions = tokio::task::spawn_blocking(move || {
        let mut temp = temp;
        let path = store::place_blob(&files, &mut temp, &sha, size)?;
        Ok::<_, std::io::Error>(if previewable {
            store::image_dimensions(&path)
        } else {
            None
        })
    })
    .await
    .map_err(|err| AppError::internal(format!("storing an upload: {err}")))?
    .map_err(|err| storage_error("storing an upload", err))?;
    let new = NewAttachment {
        name,
        mime,
        size,
        sha256: written.sha256,
        width: dimensions.map(|d| d.0),
        height: dimensions.map(|d| d.1),
    };
    state
        .db
        .writer
        .run(move |ctx| insert(ctx, uploader_id, new, quota))
        .await
}

/// How long an upload may stay unsent before the cleanup removes it.
pub const ORPHAN_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Temp files not written to for this long are left-overs of a crash.
const TMP_MAX_AGE: Duration = Duration::from_secs(3600);
const CLEANUP_EVERY: Duration = Duration::from_secs(3600);

/// What one cleanup pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanupReport {
    /// Attachment records never sent in a message (nor used as an avatar).
    pub records: usize,
    /// Content files and previews no record refers to any more.
    pub files: usize,
    /// Abandoned temp files.
    pub temp_files: usize,
}

/// Removes attachments uploaded more than `max_age` ago and never sent in a
/// message nor used as an avatar, then every stored file that no record refers
/// to (their own, and any left by a crash between storing a file and recording
/// it), and stale temp files.
pub async fn cleanup_orphans(state: &SharedState, max_age: Duration) -> AppResult<CleanupReport> {
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let records = state
        .db
        .writer
        .run(move |ctx| {
            let cutoff = ctx.now().saturating_sub(max_age_ms);
            let removed = ctx.conn().execute(
                "DELETE FROM attachments
                 WHERE created_at < ?1
                   AND NOT EXISTS (SELECT 1 FROM message_attachments ma WHERE ma.attachment_id = attachments.id)
                   AND NOT EXISTS (SELECT 1 FROM users u WHERE u.avatar_attachment_id = attachments.id)",
                [cutoff],
            )?;
            Ok::<_, AppError>(removed)
        })
        .await?;
    let files = store::files_dir(&state.data_dir);
    let _files = FILES_LOCK.write().await;
    let (removed_files, temp_files) = state
        .db
        .read(move |conn| {
            let mut referenced =
                conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM attachments WHERE sha256 = ?1)")?;
            let mut removed = 0;
            for (sha, derived) in store::list_stored(&files) {
                if referenced.query_row([&sha], |row| row.get::<_, bool>(0))? {
                    continue;
                }
                match derived {
                    Some(path) => {
                        let _ = std::fs::remove_file(path);
                    }
                    None => store::remove_blob(&files, &sha),
                }
                removed += 1;
            }
            Ok::<_, AppError>((removed, store::sweep_tmp(&files, TMP_MAX_AGE)))
        })
        .await?;
    Ok(CleanupReport {
        records,
        files: removed_files,
        temp_files,
    })
}

/// Runs [`cleanup_orphans`] at start and then every hour. The server starts it
/// with its other chores and aborts it on shutdown.
pub fn spawn_cleanup(state: SharedState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CLEANUP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match cleanup_orphans(&state, ORPHAN_MAX_AGE).await {
                Ok(report) if report != CleanupReport::default() => {
                    tracing::info!(
                        records = report.records,
                        files = report.files,
                        temp_files = report.temp_files,
                        "removed unsent attachments"
                    );
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "attachment cleanup failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn ids_are_plain_positive_integers() {
        assert_eq!(parse_id("42"), Some(42));
        assert_eq!(parse_id("0"), None);
        assert_eq!(parse_id("-1"), None);
        assert_eq!(parse_id("+1"), None);
        assert_eq!(parse_id("abc"), None);
        assert_eq!(parse_id("1e3"), None);
        assert_eq!(parse_id(".."), None);
        assert_eq!(parse_id(""), None);
        assert_eq!(parse_id("99999999999999999999"), None);
    }

    const NO_RATE: MinRate = MinRate {
        window: Duration::ZERO,
        min_bytes: 0,
    };

    #[tokio::test]
    async fn receive_stops_past_the_limit_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = store::files_dir(dir.path());
        let chunks = vec![
            Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 600])),
            Ok(Bytes::from(vec![2u8; 600])),
        ];
        let outcome = receive(
            &files,
            &mut futures_util::stream::iter(chunks),
            1000,
            NO_RATE,
        )
        .await
        .expect("receive");
        assert!(matches!(outcome, Received::TooLarge));
        let left = std::fs::read_dir(store::tmp_dir(&files))
            .expect("tmp")
            .count();
        assert_eq!(left, 0);

        let chunks = vec![Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 1000]))];
        let outcome = receive(
            &files,
            &mut futures_util::stream::iter(chunks),
            1000,
            NO_RATE,
        )
        .await
        .expect("receive");
        let Received::Complete(temp, written) = outcome else {
            panic!("expected a complete upload");
        };
        assert_eq!(written.size, 1000);
        assert!(temp.path().is_file());
        let path = temp.path().to_owned();
        drop(temp);
        assert!(!path.exists(), "an unused temp file is removed");
    }

    #[tokio::test]
    async fn receive_gives_up_on_a_stalled_body_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = store::files_dir(dir.path());
        let mut body =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"abc"))])
                .chain(futures_util::stream::pending());
        let rule = MinRate {
            window: Duration::from_millis(50),
            min_bytes: 100,
        };
        let err = receive(&files, &mut body, 1000, rule)
            .await
            .expect_err("stalled");
        assert_eq!(err.code(), "request_timeout");
        assert_eq!(err.status(), warp::http::StatusCode::REQUEST_TIMEOUT);
        let left = std::fs::read_dir(store::tmp_dir(&files))
            .expect("tmp")
            .count();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn receive_fails_cleanly_on_a_broken_body() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = store::files_dir(dir.path());
        let chunks = vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("connection reset")),
        ];
        let err = receive(
            &files,
            &mut futures_util::stream::iter(chunks),
            1000,
            NO_RATE,
        )
        .await
        .expect_err("broken");
        assert_eq!(err.code(), "bad_request");
        let left = std::fs::read_dir(store::tmp_dir(&files))
            .expect("tmp")
            .count();
        assert_eq!(left, 0);
    }
}
