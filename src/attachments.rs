//! Attachments: the stored file records and their public object. Files live in
//! the data directory, content-addressed by SHA-256.

use std::collections::HashMap;

use rusqlite::Connection;
use serde::Serialize;

use crate::error::AppResult;

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
