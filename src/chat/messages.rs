//! Messages: the public object, loading, history pages, and the write paths
//! (send, edit, delete, reactions). Every write emits its durable event in the
//! same transaction.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use serde_json::Value;

use super::access::{self, Access};
use crate::attachments::{self, Attachment};
use crate::db::{DbError, EventDraft, EventPayload, WriteCtx};
use crate::error::{AppError, AppResult};
use crate::search;

pub const MAX_CLIENT_ID_CHARS: usize = 64;
pub const MAX_ATTACHMENTS: usize = 10;
pub const MAX_EMOJI_BYTES: usize = 32;
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 200;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reaction {
    pub emoji: String,
    pub user_ids: Vec<i64>,
}

/// The contract's Message object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Message {
    pub id: i64,
    pub conversation_id: i64,
    pub sender_id: Option<i64>,
    pub body: String,
    pub kind: String,
    pub client_id: Option<String>,
    pub reply_to: Option<i64>,
    pub attachments: Vec<Attachment>,
    pub reactions: Vec<Reaction>,
    pub mentions: Vec<i64>,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub deleted_at: Option<i64>,
}

const MESSAGE_COLUMNS: &str = "id, conversation_id, sender_id, body, kind, client_id, reply_to, \
     mentions, created_at, edited_at, deleted_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let mentions: String = row.get(7)?;
    Ok(Message {
        id: row.get(0)?,
        conversation_id: row.get(1)?,
        sender_id: row.get(2)?,
        body: row.get(3)?,
        kind: row.get(4)?,
        client_id: row.get(5)?,
        reply_to: row.get(6)?,
        attachments: Vec::new(),
        reactions: Vec::new(),
        mentions: serde_json::from_str(&mentions).unwrap_or_default(),
        created_at: row.get(8)?,
        edited_at: row.get(9)?,
        deleted_at: row.get(10)?,
    })
}

/// Fills in reactions and attachments for a batch of messages (two queries).
fn decorate(conn: &Connection, messages: &mut [Message]) -> AppResult<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
    let mut files = attachments::load_for_messages(conn, &ids)?;
    let mut reactions = load_reactions(conn, &ids)?;
    for message in messages.iter_mut() {
        if message.deleted_at.is_some() {
            continue;
        }
        message.attachments = files.remove(&message.id).unwrap_or_default();
        message.reactions = reactions.remove(&message.id).unwrap_or_default();
    }
    Ok(())
}

fn load_reactions(conn: &Connection, ids: &[i64]) -> AppResult<HashMap<i64, Vec<Reaction>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT message_id, emoji, user_id FROM reactions
         WHERE message_id IN (SELECT value FROM json_each(?1))
         ORDER BY message_id, created_at, emoji, user_id",
    )?;
    let ids = serde_json::to_string(ids).map_err(AppError::internal)?;
    let mut out: HashMap<i64, Vec<Reaction>> = HashMap::new();
    let rows = stmt.query_map([ids], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (message_id, emoji, user_id) = row?;
        let list = out.entry(message_id).or_default();
        match list.iter_mut().find(|r| r.emoji == emoji) {
            Some(reaction) => reaction.user_ids.push(user_id),
            None => list.push(Reaction {
                emoji,
                user_ids: vec![user_id],
            }),
        }
    }
    Ok(out)
}

/// One message, fully decorated.
pub fn load(conn: &Connection, id: i64) -> AppResult<Option<Message>> {
    let message = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"
        ))?
        .query_row([id], from_row)
        .optional()?;
    match message {
        Some(message) => {
            let mut one = [message];
            decorate(conn, &mut one)?;
            let [message] = one;
            Ok(Some(message))
        }
        None => Ok(None),
    }
}

/// Messages by id (in the given order), decorated; unknown ids are skipped.
pub fn load_many(conn: &Connection, ids: &[i64]) -> AppResult<Vec<Message>> {
    let json = serde_json::to_string(ids).map_err(AppError::internal)?;
    let mut found: HashMap<i64, Message> = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN (SELECT value FROM json_each(?1))"
        ))?
        .query_map([json], from_row)?
        .map(|m| m.map(|m| (m.id, m)))
        .collect::<Result<_, _>>()?;
    let mut messages: Vec<Message> = ids.iter().filter_map(|id| found.remove(id)).collect();
    decorate(conn, &mut messages)?;
    Ok(messages)
}

/// The newest message of each conversation (for conversation lists).
pub fn load_latest(conn: &Connection, message_ids: &[i64]) -> AppResult<HashMap<i64, Message>> {
    Ok(load_many(conn, message_ids)?
        .into_iter()
        .map(|m| (m.conversation_id, m))
        .collect())
}

/// A page of history.
#[derive(Debug, Serialize)]
pub struct HistoryPage {
    pub items: Vec<Message>,
    pub has_more_before: bool,
    pub has_more_after: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct HistoryQuery {
    pub before: Option<i64>,
    pub after: Option<i64>,
    pub around: Option<i64>,
    pub limit: Option<usize>,
}

/// Hides messages of senders the viewer blocked.
const NOT_BLOCKED: &str = "(sender_id IS NULL OR sender_id NOT IN (SELECT blocked_id FROM blocks WHERE blocker_id = :viewer))";

/// History, oldest → newest, by index range scans on (conversation_id, id).
pub fn history(
    conn: &Connection,
    viewer: i64,
    conversation_id: i64,
    query: HistoryQuery,
) -> AppResult<HistoryPage> {
    access::require_readable(conn, viewer, conversation_id)?;
    let set = [query.before, query.after, query.around]
        .iter()
        .filter(|x| x.is_some())
        .count();
    if set > 1 {
        return Err(AppError::bad_request(
            "use only one of before, after and around",
        ));
    }
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let older = |below: i64, count: usize| -> AppResult<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE conversation_id = :conversation AND id < :bound AND {NOT_BLOCKED}
             ORDER BY id DESC LIMIT :limit"
        );
        let mut rows: Vec<Message> = conn
            .prepare_cached(&sql)?
            .query_map(
                rusqlite::named_params! {":conversation": conversation_id, ":bound": below, ":viewer": viewer, ":limit": count as i64},
                from_row,
            )?
            .collect::<Result<_, _>>()?;
        rows.reverse();
        Ok(rows)
    };
    let newer = |from: i64, count: usize| -> AppResult<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE conversation_id = :conversation AND id >= :bound AND {NOT_BLOCKED}
             ORDER BY id ASC LIMIT :limit"
        );
        let rows: Vec<Message> = conn
            .prepare_cached(&sql)?
            .query_map(
                rusqlite::named_params! {":conversation": conversation_id, ":bound": from, ":viewer": viewer, ":limit": count as i64},
                from_row,
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    };

    let (mut items, has_more_before, has_more_after) = if let Some(around) = query.around {
        let half = limit / 2;
        let mut before = older(around, half + 1)?;
        let more_before = before.len() > half;
        if more_before {
            before.remove(0);
        }
        let mut after = newer(around, limit - before.len() + 1)?;
        let more_after = after.len() > limit - before.len();
        after.truncate(limit - before.len());
        before.extend(after);
        (before, more_before, more_after)
    } else if let Some(after) = query.after {
        let mut rows = newer(after.saturating_add(1), limit + 1)?;
        let more_after = rows.len() > limit;
        rows.truncate(limit);
        let more_before = exists_older(
            conn,
            viewer,
            conversation_id,
            rows.first().map_or(after + 1, |m| m.id),
        )?;
        (rows, more_before, more_after)
    } else {
        let bound = query.before.unwrap_or(i64::MAX);
        let mut rows = older(bound, limit + 1)?;
        let more_before = rows.len() > limit;
        if more_before {
            rows.remove(0);
        }
        let more_after = match query.before {
            Some(before) => exists_newer(
                conn,
                viewer,
                conversation_id,
                rows.last().map_or(before - 1, |m| m.id),
            )?,
            None => false,
        };
        (rows, more_before, more_after)
    };
    decorate(conn, &mut items)?;
    Ok(HistoryPage {
        items,
        has_more_before,
        has_more_after,
    })
}

fn exists_older(
    conn: &Connection,
    viewer: i64,
    conversation_id: i64,
    below: i64,
) -> AppResult<bool> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation_id = :conversation AND id < :bound AND {NOT_BLOCKED})"
    );
    Ok(conn.prepare_cached(&sql)?.query_row(
        rusqlite::named_params! {":conversation": conversation_id, ":bound": below, ":viewer": viewer},
        |row| row.get(0),
    )?)
}

fn exists_newer(
    conn: &Connection,
    viewer: i64,
    conversation_id: i64,
    above: i64,
) -> AppResult<bool> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation_id = :conversation AND id > :bound AND {NOT_BLOCKED})"
    );
    Ok(conn.prepare_cached(&sql)?.query_row(
        rusqlite::named_params! {":conversation": conversation_id, ":bound": above, ":viewer": viewer},
        |row| row.get(0),
    )?)
}

/// What a client asks to send.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation_id: i64,
    pub body: String,
    pub client_id: Option<String>,
    pub reply_to: Option<i64>,
    pub attachment_ids: Vec<i64>,
}

/// Validation that needs no database: run it before queueing the write.
pub fn validate_new(message: &mut NewMessage, max_chars: usize) -> AppResult<()> {
    if let Some(client_id) = &message.client_id
        && (client_id.is_empty() || client_id.chars().count() > MAX_CLIENT_ID_CHARS)
    {
        return Err(AppError::validation(
            "client_id",
            format!("client_id has 1 to {MAX_CLIENT_ID_CHARS} characters"),
        ));
    }
    if message.attachment_ids.len() > MAX_ATTACHMENTS {
        return Err(AppError::validation(
            "attachment_ids",
            format!("at most {MAX_ATTACHMENTS} attachments per message"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    message.attachment_ids.retain(|id| seen.insert(*id));
    validate_body(&message.body, !message.attachment_ids.is_empty(), max_chars)
}

fn validate_body(body: &str, has_attachments: bool, max_chars: usize) -> AppResult<()> {
    if body.trim().is_empty() && !has_attachments {
        return Err(AppError::validation("body", "a message cannot be empty"));
    }
    if body.chars().count() > max_chars {
        return Err(AppError::validation(
            "body",
            format!("a message has at most {max_chars} characters"),
        ));
    }
    Ok(())
}

/// `@username` tokens of a body, folded to lower case, without duplicates.
pub fn mentioned_usernames(body: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let at_word_start = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if chars[i] == '@' && at_word_start {
            let start = i + 1;
            let mut end = start;
            while end < chars.len()
                && (chars[end].is_ascii_alphanumeric() || matches!(chars[end], '_' | '.' | '-'))
            {
                end += 1;
            }
            // A trailing dot or dash is punctuation ("hi @bob."), not part of the name.
            while end > start && matches!(chars[end - 1], '.' | '-') {
                end -= 1;
            }
            let name: String = chars[start..end].iter().collect::<String>().to_lowercase();
            if name.len() >= crate::users::USERNAME_MIN && !names.contains(&name) {
                names.push(name);
            }
            i = end.max(start);
        } else {
            i += 1;
        }
    }
    names
}

/// Members of the conversation mentioned in `body`.
fn resolve_mentions(conn: &Connection, conversation_id: i64, body: &str) -> AppResult<Vec<i64>> {
    let names = mentioned_usernames(body);
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let json = serde_json::to_string(&names).map_err(AppError::internal)?;
    let ids = conn
        .prepare_cached(
            "SELECT u.id FROM users u JOIN members m ON m.user_id = u.id AND m.conversation_id = ?1
             WHERE u.username IN (SELECT value FROM json_each(?2)) ORDER BY u.id",
        )?
        .query_map(params![conversation_id, json], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// The outcome of a send: the stored message and whether this call created it
/// (false when `client_id` matched an earlier send).
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: Message,
    pub created: bool,
}

/// Stores a message and emits `message.created` (and `mention`s). Idempotent on
/// (sender, client_id). Every check comes before the first write: callers queue
/// it with `Writer::enqueue_checked` (no savepoint of its own).
pub fn send(ctx: &mut WriteCtx<'_>, sender: i64, new: NewMessage) -> AppResult<Sent> {
    let conn = ctx.conn();
    if let Some(client_id) = &new.client_id
        && let Some(id) = conn
            .prepare_cached("SELECT id FROM messages WHERE sender_id = ?1 AND client_id = ?2")?
            .query_row(params![sender, client_id], |row| row.get::<_, i64>(0))
            .optional()?
    {
        let message = load(conn, id)?.ok_or_else(|| AppError::internal("message vanished"))?;
        return Ok(Sent {
            message,
            created: false,
        });
    }
    let conversation = access::require_member(conn, sender, new.conversation_id)?;
    access::require_not_blocked_direct(conn, sender, &conversation)?;
    if let Some(reply_to) = new.reply_to {
        let same: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND conversation_id = ?2)",
            )?
            .query_row(params![reply_to, new.conversation_id], |row| row.get(0))?;
        if !same {
            return Err(AppError::validation(
                "reply_to",
                "no such message in this conversation",
            ));
        }
    }
    for attachment_id in &new.attachment_ids {
        let owned: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM attachments WHERE id = ?1 AND uploader_id = ?2)",
            )?
            .query_row(params![attachment_id, sender], |row| row.get(0))?;
        if !owned {
            return Err(AppError::validation(
                "attachment_ids",
                format!("no attachment {attachment_id} of yours"),
            ));
        }
    }
    let mentions = resolve_mentions(conn, new.conversation_id, &new.body)?;
    let now = ctx.now();
    let mentions_json = serde_json::to_string(&mentions).map_err(AppError::internal)?;
    conn.prepare_cached(
        "INSERT INTO messages (conversation_id, sender_id, kind, body, client_id, reply_to, mentions, created_at)
         VALUES (?1, ?2, 'text', ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        new.conversation_id,
        sender,
        new.body,
        new.client_id,
        new.reply_to,
        mentions_json,
        now
    ])?;
    let id = conn.last_insert_rowid();
    // Indexed for search by the writer's background step, off this commit.
    ctx.leave_background_work();
    let conn = ctx.conn();
    for (position, attachment_id) in new.attachment_ids.iter().enumerate() {
        conn.prepare_cached(
            "INSERT INTO message_attachments (message_id, attachment_id, position) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![id, attachment_id, position as i64])?;
    }
    conn.prepare_cached(
        "UPDATE conversations SET last_message_id = ?1, last_activity_at = ?2 WHERE id = ?3",
    )?
    .execute(params![id, now, new.conversation_id])?;
    // Sending implies having read everything up to one's own message.
    conn.prepare_cached(
        "UPDATE members SET last_read_id = ?1, last_delivered_id = MAX(last_delivered_id, ?1)
         WHERE conversation_id = ?2 AND user_id = ?3",
    )?
    .execute(params![id, new.conversation_id, sender])?;
    let attachments = if new.attachment_ids.is_empty() {
        Vec::new()
    } else {
        attachments::load_for_messages(conn, &[id])?
            .remove(&id)
            .unwrap_or_default()
    };
    let message = Message {
        id,
        conversation_id: new.conversation_id,
        sender_id: Some(sender),
        body: new.body,
        kind: "text".into(),
        client_id: new.client_id,
        reply_to: new.reply_to,
        attachments,
        reactions: Vec::new(),
        mentions,
        created_at: now,
        edited_at: None,
        deleted_at: None,
    };
    emit_message(ctx, "message.created", &message, Some(sender))?;
    for user_id in &message.mentions {
        if *user_id != sender {
            ctx.emit(EventDraft {
                kind: "mention",
                conversation_id: None,
                user_id: Some(*user_id),
                actor_id: Some(sender),
                message_id: None,
                payload: EventPayload::field("message", &message).map_err(AppError::internal)?,
                membership: None,
            })?;
        }
    }
    Ok(Sent {
        message,
        created: true,
    })
}

/// Replaces (or with `new_body` None, removes) a text message's entry in the
/// full-text index at the end of the transaction (see [`WriteCtx::before_commit`]
/// for why not at once), if the index has taken it in already: otherwise the
/// index will take in whatever text it has then.
fn reindex_later(
    ctx: &mut WriteCtx<'_>,
    id: i64,
    old_body: String,
    new_body: Option<String>,
) -> AppResult<()> {
    if !search::is_indexed(ctx.conn(), id)? {
        return Ok(());
    }
    ctx.before_commit(move |conn| {
        search::unindex_body(conn, id, &old_body)?;
        if let Some(new) = new_body {
            search::index_body(conn, id, &new)?;
        }
        Ok::<(), DbError>(())
    });
    Ok(())
}

/// Posts a `system` message (membership changes) and emits it.
pub fn post_system(
    ctx: &mut WriteCtx<'_>,
    conversation_id: i64,
    actor: i64,
    body: String,
) -> AppResult<Message> {
    let now = ctx.now();
    let conn = ctx.conn();
    conn.prepare_cached(
        "INSERT INTO messages (conversation_id, sender_id, kind, body, created_at) VALUES (?1, ?2, 'system', ?3, ?4)",
    )?
    .execute(params![conversation_id, actor, body, now])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached(
        "UPDATE conversations SET last_message_id = ?1, last_activity_at = ?2 WHERE id = ?3",
    )?
    .execute(params![id, now, conversation_id])?;
    let message = Message {
        id,
        conversation_id,
        sender_id: Some(actor),
        body,
        kind: "system".into(),
        client_id: None,
        reply_to: None,
        attachments: Vec::new(),
        reactions: Vec::new(),
        mentions: Vec::new(),
        created_at: now,
        edited_at: None,
        deleted_at: None,
    };
    emit_message(ctx, "message.created", &message, Some(actor))?;
    Ok(message)
}

fn emit_message(
    ctx: &mut WriteCtx<'_>,
    kind: &'static str,
    message: &Message,
    actor: Option<i64>,
) -> AppResult<()> {
    ctx.emit(EventDraft {
        kind,
        conversation_id: Some(message.conversation_id),
        user_id: None,
        actor_id: actor,
        message_id: (kind == "message.created").then_some(message.id),
        payload: EventPayload::field("message", message).map_err(AppError::internal)?,
        membership: None,
    })?;
    Ok(())
}

pub fn to_value<T: Serialize>(value: &T) -> AppResult<Value> {
    serde_json::to_value(value).map_err(AppError::internal)
}

pub fn payload(fields: &[(&str, Value)]) -> AppResult<EventPayload> {
    let fields: Vec<(&str, &Value)> = fields.iter().map(|(k, v)| (*k, v)).collect();
    EventPayload::fields(&fields).map_err(AppError::internal)
}

/// The message and the caller's access to its conversation; 404 if the caller
/// cannot see the conversation.
fn message_for(conn: &Connection, viewer: i64, message_id: i64) -> AppResult<(Message, Access)> {
    let message = load(conn, message_id)?.ok_or_else(|| AppError::not_found("no such message"))?;
    let access = access::readable(conn, viewer, message.conversation_id)?
        .ok_or_else(|| AppError::not_found("no such message"))?;
    Ok((message, access))
}

pub fn edit(
    ctx: &mut WriteCtx<'_>,
    editor: i64,
    message_id: i64,
    body: String,
    max_chars: usize,
) -> AppResult<Message> {
    validate_body(&body, false, max_chars)?;
    let (mut message, access) = message_for(ctx.conn(), editor, message_id)?;
    if message.sender_id != Some(editor) || message.kind != "text" {
        return Err(AppError::forbidden("only the author can edit a message"));
    }
    if !access.is_member() {
        return Err(AppError::forbidden(
            "you are no longer a member of this conversation",
        ));
    }
    if message.deleted_at.is_some() {
        return Err(AppError::conflict("this message was deleted"));
    }
    let mentions = resolve_mentions(ctx.conn(), message.conversation_id, &body)?;
    let now = ctx.now();
    ctx.conn().execute(
        "UPDATE messages SET body = ?1, edited_at = ?2, mentions = ?3 WHERE id = ?4",
        params![
            body,
            now,
            serde_json::to_string(&mentions).map_err(AppError::internal)?,
            message_id
        ],
    )?;
    let old_body = std::mem::replace(&mut message.body, body);
    reindex_later(ctx, message_id, old_body, Some(message.body.clone()))?;
    message.edited_at = Some(now);
    message.mentions = mentions;
    emit_message(ctx, "message.updated", &message, Some(editor))?;
    Ok(message)
}

pub fn delete(ctx: &mut WriteCtx<'_>, deleter: i64, message_id: i64) -> AppResult<()> {
    let (message, access) = message_for(ctx.conn(), deleter, message_id)?;
    let is_author = message.sender_id == Some(deleter) && message.kind == "text";
    if !(is_author && access.is_member() || access.is_admin()) {
        return Err(AppError::forbidden(
            "only the author or a conversation admin can delete a message",
        ));
    }
    if message.deleted_at.is_some() {
        return Ok(()); // already a tombstone: deleting twice is harmless
    }
    let now = ctx.now();
    ctx.conn().execute(
        "UPDATE messages SET body = '', mentions = '[]', deleted_at = ?1 WHERE id = ?2",
        params![now, message_id],
    )?;
    if message.kind == "text" {
        reindex_later(ctx, message_id, message.body.clone(), None)?;
    }
    let conn = ctx.conn();
    conn.execute(
        "DELETE FROM message_attachments WHERE message_id = ?1",
        [message_id],
    )?;
    conn.execute("DELETE FROM reactions WHERE message_id = ?1", [message_id])?;
    ctx.emit(EventDraft {
        kind: "message.deleted",
        conversation_id: Some(message.conversation_id),
        user_id: None,
        actor_id: Some(deleter),
        message_id: None,
        payload: payload(&[
            ("message_id", message_id.into()),
            ("conversation_id", message.conversation_id.into()),
        ])?,
        membership: None,
    })?;
    Ok(())
}

pub fn validate_emoji(emoji: &str) -> AppResult<()> {
    if emoji.is_empty() || emoji.len() > MAX_EMOJI_BYTES {
        return Err(AppError::validation(
            "emoji",
            format!("an emoji has 1 to {MAX_EMOJI_BYTES} bytes"),
        ));
    }
    if emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AppError::validation(
            "emoji",
            "an emoji cannot contain spaces or control characters",
        ));
    }
    Ok(())
}

/// Adds or removes the caller's reaction; emits only when something changed.
pub fn react(
    ctx: &mut WriteCtx<'_>,
    user: i64,
    message_id: i64,
    emoji: &str,
    add: bool,
) -> AppResult<()> {
    validate_emoji(emoji)?;
    let (message, access) = message_for(ctx.conn(), user, message_id)?;
    if !access.is_member() {
        return Err(AppError::forbidden("join the conversation to react"));
    }
    access::require_not_blocked_direct(ctx.conn(), user, access.conversation())?;
    if message.deleted_at.is_some() {
        return Err(AppError::conflict("this message was deleted"));
    }
    let changed = if add {
        ctx.conn().execute(
            "INSERT OR IGNORE INTO reactions (message_id, emoji, user_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![message_id, emoji, user, ctx.now()],
        )?
    } else {
        ctx.conn().execute(
            "DELETE FROM reactions WHERE message_id = ?1 AND emoji = ?2 AND user_id = ?3",
            params![message_id, emoji, user],
        )?
    };
    if changed > 0 {
        ctx.emit(EventDraft {
            kind: if add {
                "reaction.added"
            } else {
                "reaction.removed"
            },
            conversation_id: Some(message.conversation_id),
            user_id: None,
            actor_id: Some(user),
            message_id: None,
            payload: payload(&[
                ("message_id", message_id.into()),
                ("conversation_id", message.conversation_id.into()),
                ("emoji", emoji.into()),
                ("user_id", user.into()),
            ])?,
            membership: None,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_parsed_like_people_write_them() {
        assert_eq!(
            mentioned_usernames("hi @Bob and @alice."),
            vec!["bob", "alice"]
        );
        assert_eq!(
            mentioned_usernames("mail me at x@bob.com"),
            Vec::<String>::new()
        );
        assert_eq!(mentioned_usernames("@bob @bob @jo"), vec!["bob"]);
        assert_eq!(mentioned_usernames("(@carol_1)"), vec!["carol_1"]);
    }

    #[test]
    fn bodies_and_emoji_are_validated() {
        let mut new = NewMessage {
            conversation_id: 1,
            body: "   ".into(),
            client_id: None,
            reply_to: None,
            attachment_ids: vec![],
        };
        assert!(validate_new(&mut new, 10).is_err());
        new.attachment_ids = vec![1];
        assert!(validate_new(&mut new, 10).is_ok());
        new.body = "x".repeat(11);
        assert!(validate_new(&mut new, 10).is_err());
        new.body = "ok".into();
        new.client_id = Some("c".repeat(65));
        assert!(validate_new(&mut new, 10).is_err());
        assert!(validate_emoji("👍").is_ok());
        assert!(validate_emoji("a b").is_err());
        assert!(validate_emoji(&"x".repeat(33)).is_err());
    }
}
