//! The storage limit: the message rows P2 stores, inserted straight through
//! rusqlite into the project's real schema (migrations, indexes, FTS index) with
//! the writer's own pragmas (WAL, the server's default `synchronous`), in batched transactions.
//! Per message, like the server: the `messages` row, its `message.created` row in
//! the `events` log (the wire frame as payload), the conversation's
//! `last_message_id`/`last_activity_at`, and the sender's read pointer; then, as
//! the server's writer does, the transaction's bodies go into the full-text index
//! after all its rows.

use std::path::Path;
use std::time::Instant;

use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::json;

use crate::servers::Res;

#[derive(Debug, Clone, Serialize)]
pub struct Storage {
    pub rows: usize,
    pub batch: usize,
    pub transactions: usize,
    pub secs: f64,
    pub rows_per_sec: f64,
    /// Duration of each transaction (BEGIN to COMMIT returned: one commit).
    pub commit: crate::stats::Latency,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A fresh database at `path` with `pairs` direct conversations (users 2k+1 and 2k+2).
pub fn prepare(path: &Path, pairs: usize) -> Res<Connection> {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let mut conn = lanchat::db::open_writer_connection(path).map_err(err)?;
    lanchat::db::migrations::migrate(&mut conn).map_err(err)?;
    let now = lanchat::db::now_ms();
    let tx = conn.transaction().map_err(err)?;
    for pair in 0..pairs as i64 {
        let (a, b) = (2 * pair + 1, 2 * pair + 2);
        for user in [a, b] {
            tx.execute(
                "INSERT INTO users (id, username, password_hash, created_at) VALUES (?1, ?2, 'x', ?3)",
                params![user, format!("storage_{user}"), now],
            )
            .map_err(err)?;
        }
        let conversation = pair + 1;
        tx.execute(
            "INSERT INTO conversations (id, kind, created_by, created_at, direct_key, last_activity_at)
             VALUES (?1, 'direct', ?2, ?3, ?4, ?3)",
            params![conversation, a, now, format!("{a}:{b}")],
        )
        .map_err(err)?;
        for user in [a, b] {
            tx.execute(
                "INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES (?1, ?2, 'member', ?3)",
                params![conversation, user, now],
            )
            .map_err(err)?;
        }
    }
    tx.commit().map_err(err)?;
    Ok(conn)
}

/// Inserts `rows` messages round-robin over the `pairs` conversations, `batch` per
/// transaction; returns the rate.
pub fn insert(
    conn: &Connection,
    pairs: usize,
    rows: usize,
    batch: usize,
    filler: &str,
) -> Res<Storage> {
    let batch = batch.max(1);
    let mut next_event_id: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(event_id), 0) + 1 FROM events",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    let started = Instant::now();
    let mut done = 0usize;
    let mut transactions = 0usize;
    let mut commits = Vec::new();
    while done < rows {
        let end = (done + batch).min(rows);
        let commit_started = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        let now = lanchat::db::now_ms();
        {
            let mut message = conn
                .prepare_cached(
                    "INSERT INTO messages (conversation_id, sender_id, kind, body, client_id, mentions, created_at)
                     VALUES (?1, ?2, 'text', ?3, ?4, '[]', ?5)",
                )
                .map_err(err)?;
            let mut event = conn
                .prepare_cached(
                    "INSERT INTO events (event_id, type, conversation_id, user_id, actor_id, payload, created_at)
                     VALUES (?1, 'message.created', ?2, NULL, ?3, ?4, ?5)",
                )
                .map_err(err)?;
            let mut touch = conn
                .prepare_cached(
                    "UPDATE conversations SET last_message_id = ?2, last_activity_at = ?3 WHERE id = ?1",
                )
                .map_err(err)?;
            let mut read = conn
                .prepare_cached(
                    "UPDATE members SET last_read_id = ?1, last_delivered_id = MAX(last_delivered_id, ?1)
                     WHERE conversation_id = ?2 AND user_id = ?3",
                )
                .map_err(err)?;
            let mut bodies = Vec::with_capacity(end - done);
            for i in done..end {
                let conversation = (i % pairs.max(1)) as i64 + 1;
                let sender = 2 * (conversation - 1) + 1;
                let body = format!("{} {filler}", started.elapsed().as_nanos());
                let client_id = format!("c{sender}-{i}");
                message
                    .execute(params![conversation, sender, body, client_id, now])
                    .map_err(err)?;
                let id = conn.last_insert_rowid();
                let frame = json!({
                    "event_id": next_event_id,
                    "type": "message.created",
                    "message": {
                        "id": id, "conversation_id": conversation, "sender_id": sender,
                        "body": body, "kind": "text", "client_id": client_id, "reply_to": null,
                        "attachments": [], "reactions": [], "mentions": [],
                        "created_at": now, "edited_at": null, "deleted_at": null,
                    }
                })
                .to_string();
                event
                    .execute(params![next_event_id, conversation, sender, frame, now])
                    .map_err(err)?;
                next_event_id += 1;
                touch.execute(params![conversation, id, now]).map_err(err)?;
                read.execute(params![id, conversation, sender])
                    .map_err(err)?;
                bodies.push((id, body));
            }
            for (id, body) in &bodies {
                lanchat::search::index_body(conn, *id, body).map_err(err)?;
            }
        }
        conn.execute_batch("COMMIT").map_err(err)?;
        commits.push(commit_started.elapsed());
        transactions += 1;
        done = end;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Storage {
        rows,
        batch,
        transactions,
        secs,
        rows_per_sec: rows as f64 / secs.max(1e-9),
        commit: crate::stats::Latency::from_durations(&commits),
    })
}

/// Measures at each batch size on fresh databases in `dir`.
pub fn measure(
    dir: &Path,
    pairs: usize,
    runs: &[(usize, usize)],
    filler: &str,
) -> Res<Vec<Storage>> {
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut out = Vec::new();
    for &(rows, batch) in runs {
        let path = dir.join(format!("storage-{batch}.db"));
        let conn = prepare(&path, pairs)?;
        out.push(insert(&conn, pairs, rows, batch, filler)?);
        drop(conn);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    Ok(out)
}
