//! Conversation export as JSON or a standalone HTML page, written to any
//! `io::Write` in batches: the HTTP handler streams it to the client, the command
//! line writes it to a file. Memory stays flat whatever the history's size.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use rusqlite::{Connection, params};
use serde::Serialize;

use super::access::{self, CONVERSATION_COLUMNS, ConversationRow, Kind};
use super::messages::{self, Message};
use crate::error::{AppError, AppResult};

const BATCH: i64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Html,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "json" => Some(Format::Json),
            "html" => Some(Format::Html),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Html => "text/html; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Html => "html",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Person {
    username: String,
    display_name: String,
}

fn io_err(err: std::io::Error) -> AppError {
    AppError::internal(format!("export write failed: {err}"))
}

/// Which conversations `viewer` may export (`None`: an admin on the command line).
pub fn check_access(
    conn: &Connection,
    viewer: Option<i64>,
    conversation_id: i64,
) -> AppResult<ConversationRow> {
    match viewer {
        Some(user) => Ok(access::require_readable(conn, user, conversation_id)?
            .conversation()
            .clone()),
        None => conn
            .query_row(
                &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = ?1"),
                [conversation_id],
                access::conversation_from_row,
            )
            .map_err(|_| AppError::not_found("no such conversation")),
    }
}

/// Every conversation id, for a whole-server export.
pub fn all_conversation_ids(conn: &Connection) -> AppResult<Vec<i64>> {
    Ok(conn
        .prepare("SELECT id FROM conversations ORDER BY id")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Messages after `after`, oldest first, hiding senders the viewer blocked.
fn batch_after(
    conn: &Connection,
    viewer: Option<i64>,
    conversation_id: i64,
    after: i64,
) -> AppResult<Vec<Message>> {
    let ids: Vec<i64> = conn
        .prepare_cached(
            "SELECT id FROM messages WHERE conversation_id = ?1 AND id > ?2
               AND (?3 IS NULL OR sender_id IS NULL
                    OR sender_id NOT IN (SELECT blocked_id FROM blocks WHERE blocker_id = ?3))
             ORDER BY id LIMIT ?4",
        )?
        .query_map(params![conversation_id, after, viewer, BATCH], |row| {
            row.get(0)
        })?
        .collect::<Result<_, _>>()?;
    messages::load_many(conn, &ids)
}

fn people(
    conn: &Connection,
    ids: impl IntoIterator<Item = i64>,
) -> AppResult<BTreeMap<i64, Person>> {
    let mut out = BTreeMap::new();
    let mut stmt = conn.prepare_cached("SELECT username, display_name FROM users WHERE id = ?1")?;
    for id in ids {
        if let Ok(person) = stmt.query_row([id], |row| {
            Ok(Person {
                username: row.get(0)?,
                display_name: row.get(1)?,
            })
        }) {
            out.insert(id, person);
        }
    }
    Ok(out)
}

fn title_of(conn: &Connection, row: &ConversationRow) -> AppResult<String> {
    if row.kind != Kind::Direct {
        return Ok(row.title.clone());
    }
    let names: Vec<String> = conn
        .prepare_cached(
            "SELECT u.username FROM members m JOIN users u ON u.id = m.user_id
             WHERE m.conversation_id = ?1 ORDER BY u.username",
        )?
        .query_map([row.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(format!("Direct messages: {}", names.join(", ")))
}

/// Writes the export of the given conversations. With `viewer`, only what that
/// user may read; without, everything (the command line's admin export).
pub fn write(
    conn: &Connection,
    viewer: Option<i64>,
    conversation_ids: &[i64],
    format: Format,
    now: i64,
    out: &mut dyn Write,
) -> AppResult<()> {
    let mut export = Export::new(viewer, conversation_ids.to_vec(), format, now);
    while let Some(part) = export.next_part(conn)? {
        out.write_all(&part).map_err(io_err)?;
    }
    out.flush().map_err(io_err)
}

/// An export produced part by part (the page's start, then a batch of at most
/// [`BATCH`] messages at a time, then its end), each part a short read: the HTTP
/// handler reads the next part only when the client has taken the previous one,
/// so a slow client holds no database connection or thread meanwhile.
#[derive(Debug)]
pub struct Export {
    viewer: Option<i64>,
    conversation_ids: Vec<i64>,
    format: Format,
    now: i64,
    rows: Vec<ConversationRow>,
    step: Step,
    /// JSON: every sender, for the `users` map at the end.
    senders: BTreeSet<i64>,
    /// HTML: the names of the senders met so far.
    names: BTreeMap<i64, Person>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    /// Conversation `index` of `rows`: its opening written or not, its messages
    /// after `after` still to write.
    Messages {
        index: usize,
        opened: bool,
        after: i64,
        first: bool,
    },
    Finish,
    Done,
}

impl Export {
    pub fn new(
        viewer: Option<i64>,
        conversation_ids: Vec<i64>,
        format: Format,
        now: i64,
    ) -> Export {
        Export {
            viewer,
            conversation_ids,
            format,
            now,
            rows: Vec::new(),
            step: Step::Start,
            senders: BTreeSet::new(),
            names: BTreeMap::new(),
        }
    }

    /// The next part of the export, `None` once it is complete. Access is
    /// checked by the first part.
    pub fn next_part(&mut self, conn: &Connection) -> AppResult<Option<Vec<u8>>> {
        let mut out = Vec::with_capacity(64 * 1024);
        match self.step {
            Step::Done => return Ok(None),
            Step::Start => {
                for id in &self.conversation_ids {
                    self.rows.push(check_access(conn, self.viewer, *id)?);
                }
                match self.format {
                    Format::Json => self.json_start(&mut out)?,
                    Format::Html => self.html_start(conn, &mut out)?,
                }
                self.step = Step::Messages {
                    index: 0,
                    opened: false,
                    after: 0,
                    first: true,
                };
            }
            Step::Messages {
                index,
                opened,
                after,
                first,
            } => {
                let Some(row) = self.rows.get(index).cloned() else {
                    self.step = Step::Finish;
                    return self.next_part(conn);
                };
                if !opened {
                    match self.format {
                        Format::Json => json_open(conn, &row, index, &mut out)?,
                        Format::Html => self.html_open(conn, &row, &mut out)?,
                    }
                }
                let batch = batch_after(conn, self.viewer, row.id, after)?;
                self.step = match batch.last() {
                    Some(last) => Step::Messages {
                        index,
                        opened: true,
                        after: last.id,
                        first: false,
                    },
                    None => {
                        out.write_all(match self.format {
                            Format::Json => b"]}",
                            Format::Html => b"</ol>\n",
                        })
                        .map_err(io_err)?;
                        Step::Messages {
                            index: index + 1,
                            opened: false,
                            after: 0,
                            first: true,
                        }
                    }
                };
                match self.format {
                    Format::Json => self.json_batch(&batch, first, &mut out)?,
                    Format::Html => self.html_batch(conn, &batch, &mut out)?,
                }
            }
            Step::Finish => {
                match self.format {
                    Format::Json => {
                        out.write_all(b"],\"users\":").map_err(io_err)?;
                        serde_json::to_writer(
                            &mut out,
                            &people(conn, self.senders.iter().copied())?,
                        )
                        .map_err(AppError::internal)?;
                        out.write_all(b"}").map_err(io_err)?;
                    }
                    Format::Html => out.write_all(b"</body></html>\n").map_err(io_err)?,
                }
                self.step = Step::Done;
            }
        }
        Ok(Some(out))
    }

    fn json_start(&self, out: &mut Vec<u8>) -> AppResult<()> {
        write!(out, "{{\"exported_at\":{},\"conversations\":[", self.now).map_err(io_err)
    }

    fn json_batch(&mut self, batch: &[Message], first: bool, out: &mut Vec<u8>) -> AppResult<()> {
        for (n, message) in batch.iter().enumerate() {
            if !(first && n == 0) {
                out.write_all(b",").map_err(io_err)?;
            }
            self.senders.extend(message.sender_id);
            serde_json::to_writer(&mut *out, message).map_err(AppError::internal)?;
        }
        Ok(())
    }

    fn html_start(&self, conn: &Connection, out: &mut Vec<u8>) -> AppResult<()> {
        let page_title = match self.rows.as_slice() {
            [one] => title_of(conn, one)?,
            _ => "lanchat export".to_owned(),
        };
        write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{}</title><style>{}</style></head><body>\n<h1>{}</h1>\n<p class=\"meta\">Exported {}</p>\n",
            esc(&page_title),
            HTML_STYLE,
            esc(&page_title),
            format_time(self.now)
        )
        .map_err(io_err)
    }

    fn html_open(
        &self,
        conn: &Connection,
        row: &ConversationRow,
        out: &mut Vec<u8>,
    ) -> AppResult<()> {
        if self.rows.len() > 1 {
            writeln!(out, "<h2>{}</h2>", esc(&title_of(conn, row)?)).map_err(io_err)?;
        }
        if !row.topic.is_empty() {
            writeln!(out, "<p class=\"meta\">{}</p>", esc(&row.topic)).map_err(io_err)?;
        }
        out.write_all(b"<ol class=\"messages\">\n").map_err(io_err)
    }

    fn html_batch(
        &mut self,
        conn: &Connection,
        batch: &[Message],
        out: &mut Vec<u8>,
    ) -> AppResult<()> {
        let unknown: Vec<i64> = batch
            .iter()
            .filter_map(|m| m.sender_id)
            .filter(|id| !self.names.contains_key(id))
            .collect();
        self.names.extend(people(conn, unknown)?);
        for message in batch {
            write_html_message(out, message, &self.names)?;
        }
        Ok(())
    }
}

/// A conversation's object up to its `messages` array, opened.
fn json_open(
    conn: &Connection,
    row: &ConversationRow,
    index: usize,
    out: &mut Vec<u8>,
) -> AppResult<()> {
    if index > 0 {
        out.write_all(b",").map_err(io_err)?;
    }
    let header = serde_json::json!({
        "id": row.id,
        "kind": row.kind,
        "title": title_of(conn, row)?,
        "topic": row.topic,
        "created_at": row.created_at,
    });
    let header = header.to_string();
    // Reopen the header object to append the messages array to it.
    out.write_all(&header.as_bytes()[..header.len() - 1])
        .map_err(io_err)?;
    out.write_all(b",\"messages\":[").map_err(io_err)
}

fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_text(text)
}

fn write_html_message(
    out: &mut dyn Write,
    message: &Message,
    names: &BTreeMap<i64, Person>,
) -> AppResult<()> {
    let sender = message
        .sender_id
        .and_then(|id| names.get(&id))
        .map(|p| {
            if p.display_name.is_empty() {
                p.username.clone()
            } else {
                p.display_name.clone()
            }
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let class = if message.kind == "system" {
        "system"
    } else {
        "text"
    };
    write!(
        out,
        "<li class=\"{class}\" id=\"m{}\"><span class=\"who\">{}</span> <time>{}</time>",
        message.id,
        esc(&sender),
        format_time(message.created_at)
    )
    .map_err(io_err)?;
    if message.deleted_at.is_some() {
        out.write_all(b"<div class=\"body deleted\">(deleted)</div>")
            .map_err(io_err)?;
    } else {
        write!(out, "<div class=\"body\">{}</div>", esc(&message.body)).map_err(io_err)?;
        for attachment in &message.attachments {
            write!(
                out,
                "<div class=\"file\">&#128206; {} ({} bytes)</div>",
                esc(&attachment.name),
                attachment.size
            )
            .map_err(io_err)?;
        }
        if message.edited_at.is_some() {
            out.write_all(b"<span class=\"meta\"> (edited)</span>")
                .map_err(io_err)?;
        }
    }
    out.write_all(b"</li>\n").map_err(io_err)
}

/// `YYYY-MM-DD HH:MM UTC` from epoch milliseconds.
pub fn format_time(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

const HTML_STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}\
.meta,time{color:#6e6e73;font-size:.85em}ol{list-style:none;padding:0}li{padding:.35rem 0;border-bottom:1px solid #eee}\
.who{font-weight:600}.body{white-space:pre-wrap;overflow-wrap:anywhere}.system{color:#6e6e73;font-style:italic}\
.deleted{color:#6e6e73}.file{font-size:.9em}@media (prefers-color-scheme:dark){body{background:#1c1c1e;color:#f2f2f7}li{border-color:#333}}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time(1_709_210_096_000), "2024-02-29 12:34 UTC");
        assert_eq!(Format::parse("html"), Some(Format::Html));
        assert_eq!(Format::parse("pdf"), None);
    }
}
