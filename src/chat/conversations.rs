//! Conversations (direct, group, channel), their members, roles, read pointers
//! and mute flags. Membership changes post a `system` message and emit events in
//! the same transaction.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::access::{self, Access, CONVERSATION_COLUMNS, ConversationRow, Kind, Role};
use super::messages::{self, Message, payload, to_value};
use crate::db::{EventDraft, MembershipChange, WriteCtx};
use crate::error::{AppError, AppResult};

pub const TITLE_MAX: usize = 100;
pub const TOPIC_MAX: usize = 250;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Member {
    pub user_id: i64,
    pub role: Role,
    pub joined_at: i64,
    pub last_read_id: i64,
    pub last_delivered_id: i64,
}

/// The part of a conversation that is the same for every viewer (what events carry).
#[derive(Debug, Clone, Serialize)]
pub struct ConversationBase {
    pub id: i64,
    pub kind: Kind,
    pub title: Option<String>,
    pub topic: String,
    pub created_by: Option<i64>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Member>>,
    pub member_count: i64,
}

/// The contract's Conversation object, as one viewer sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    #[serde(flatten)]
    pub base: ConversationBase,
    /// The newest message the viewer may see (none from users they blocked).
    pub last_message: Option<Message>,
    pub unread_count: i64,
    pub my_role: Option<Role>,
    pub my_last_read_id: i64,
    pub muted: bool,
}

fn member_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Member> {
    let role: String = row.get(1)?;
    Ok(Member {
        user_id: row.get(0)?,
        role: Role::parse(&role).unwrap_or(Role::Member),
        joined_at: row.get(2)?,
        last_read_id: row.get(3)?,
        last_delivered_id: row.get(4)?,
    })
}

pub fn members_of(conn: &Connection, conversation_id: i64) -> AppResult<Vec<Member>> {
    Ok(conn
        .prepare_cached(
            "SELECT user_id, role, joined_at, last_read_id, last_delivered_id FROM members
             WHERE conversation_id = ?1 ORDER BY joined_at, user_id",
        )?
        .query_map([conversation_id], member_from_row)?
        .collect::<Result<_, _>>()?)
}

fn member_count(conn: &Connection, conversation_id: i64) -> AppResult<i64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM members WHERE conversation_id = ?1")?
        .query_row([conversation_id], |row| row.get(0))?)
}

fn base(
    conn: &Connection,
    row: &ConversationRow,
    with_members: bool,
) -> AppResult<ConversationBase> {
    let members = if with_members {
        Some(members_of(conn, row.id)?)
    } else {
        None
    };
    let member_count = match &members {
        Some(list) => list.len() as i64,
        None => member_count(conn, row.id)?,
    };
    Ok(ConversationBase {
        id: row.id,
        kind: row.kind,
        title: (row.kind != Kind::Direct).then(|| row.title.clone()),
        topic: row.topic.clone(),
        created_by: row.created_by,
        created_at: row.created_at,
        members,
        member_count,
    })
}

/// The newest message of a conversation that `viewer` may see: messages of
/// users they blocked are left out, as everywhere else.
fn last_message_for(
    conn: &Connection,
    viewer: i64,
    row: &ConversationRow,
) -> AppResult<Option<Message>> {
    if row.last_message_id <= 0 {
        return Ok(None);
    }
    let id: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM messages
             WHERE conversation_id = ?1 AND id <= ?2
               AND (sender_id IS NULL
                    OR sender_id NOT IN (SELECT blocked_id FROM blocks WHERE blocker_id = ?3))
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![row.id, row.last_message_id, viewer], |r| r.get(0))
        .optional()?;
    match id {
        Some(id) => messages::load(conn, id),
        None => Ok(None),
    }
}

/// Messages after `after` that count as unread for `user`.
fn unread_count(conn: &Connection, user: i64, conversation_id: i64, after: i64) -> AppResult<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(*) FROM messages
             WHERE conversation_id = ?1 AND id > ?2 AND kind = 'text' AND deleted_at IS NULL
               AND sender_id != ?3
               AND sender_id NOT IN (SELECT blocked_id FROM blocks WHERE blocker_id = ?3)",
        )?
        .query_row(params![conversation_id, after, user], |row| row.get(0))?)
}

struct MyMembership {
    role: Role,
    last_read_id: i64,
    muted: bool,
}

fn my_membership(
    conn: &Connection,
    user: i64,
    conversation_id: i64,
) -> AppResult<Option<MyMembership>> {
    Ok(conn
        .prepare_cached("SELECT role, last_read_id, muted FROM members WHERE conversation_id = ?1 AND user_id = ?2")?
        .query_row(params![conversation_id, user], |row| {
            let role: String = row.get(0)?;
            Ok(MyMembership {
                role: Role::parse(&role).unwrap_or(Role::Member),
                last_read_id: row.get(1)?,
                muted: row.get(2)?,
            })
        })
        .optional()?)
}

fn for_viewer(
    conn: &Connection,
    user: i64,
    row: &ConversationRow,
    with_members: bool,
) -> AppResult<Conversation> {
    let base = base(conn, row, with_members)?;
    let mine = my_membership(conn, user, row.id)?;
    let (unread_count, my_role, my_last_read_id, muted) = match mine {
        Some(m) => (
            unread_count(conn, user, row.id, m.last_read_id)?,
            Some(m.role),
            m.last_read_id,
            m.muted,
        ),
        None => (0, None, 0, false),
    };
    Ok(Conversation {
        base,
        last_message: last_message_for(conn, user, row)?,
        unread_count,
        my_role,
        my_last_read_id,
        muted,
    })
}

/// One conversation the caller can see, with its members.
pub fn get(conn: &Connection, user: i64, conversation_id: i64) -> AppResult<Conversation> {
    let access = access::require_readable(conn, user, conversation_id)?;
    for_viewer(conn, user, access.conversation(), true)
}

/// One page of a list: the items and the cursor of the next page.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

pub const DEFAULT_LIST: usize = 100;
pub const MAX_LIST: usize = 200;

/// Reads a list cursor (the id of the previous page's last item).
pub fn parse_cursor(cursor: Option<&str>) -> AppResult<Option<i64>> {
    match cursor.map(str::trim).filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .map(Some)
            .map_err(|_| AppError::validation("cursor", "this cursor is not one the server gave")),
    }
}

/// Turns `limit + 1` fetched rows into a page of `limit` and its cursor.
fn page_of(
    conn: &Connection,
    user: i64,
    mut rows: Vec<ConversationRow>,
    limit: usize,
) -> AppResult<Page<Conversation>> {
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.id.to_string())
    } else {
        None
    };
    // Channels can be large: their member lists are left out of lists.
    let items = rows
        .iter()
        .map(|row| for_viewer(conn, user, row, row.kind != Kind::Channel))
        .collect::<AppResult<_>>()?;
    Ok(Page { items, next_cursor })
}

/// The caller's conversations, most recent activity first, by pages.
pub fn list(
    conn: &Connection,
    user: i64,
    after: Option<i64>,
    limit: usize,
) -> AppResult<Page<Conversation>> {
    let limit = limit.clamp(1, MAX_LIST);
    let rows: Vec<ConversationRow> = conn
        .prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM members m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.user_id = ?1
               AND (?2 IS NULL OR (c.last_activity_at, c.id) <
                    (SELECT last_activity_at, id FROM conversations WHERE id = ?2))
             ORDER BY c.last_activity_at DESC, c.id DESC LIMIT ?3"
        ))?
        .query_map(params![user, after, limit as i64 + 1], access::conversation_from_row)?
        .collect::<Result<_, _>>()?;
    page_of(conn, user, rows, limit)
}

/// Public channels, joined or not, optionally filtered by title or topic, by
/// title then id, by pages.
pub fn channels(
    conn: &Connection,
    user: i64,
    q: &str,
    after: Option<i64>,
    limit: usize,
) -> AppResult<Page<Conversation>> {
    let limit = limit.clamp(1, MAX_LIST);
    let pattern = format!("%{}%", crate::users::escape_like(&q.to_lowercase()));
    let rows: Vec<ConversationRow> = conn
        .prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations c
             WHERE c.kind = 'channel'
               AND (lower(c.title) LIKE ?1 ESCAPE '\\' OR lower(c.topic) LIKE ?1 ESCAPE '\\')
               AND (?2 IS NULL OR (lower(c.title), c.id) >
                    (SELECT lower(title), id FROM conversations WHERE id = ?2))
             ORDER BY lower(c.title), c.id LIMIT ?3"
        ))?
        .query_map(
            params![pattern, after, limit as i64 + 1],
            access::conversation_from_row,
        )?
        .collect::<Result<_, _>>()?;
    page_of(conn, user, rows, limit)
}

fn validate_title(title: &str, required: bool) -> AppResult<String> {
    let title = title.trim();
    if required && title.is_empty() {
        return Err(AppError::validation("title", "a title is required"));
    }
    if title.chars().count() > TITLE_MAX {
        return Err(AppError::validation(
            "title",
            format!("a title has at most {TITLE_MAX} characters"),
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(AppError::validation(
            "title",
            "a title cannot contain control characters",
        ));
    }
    Ok(title.to_owned())
}

fn validate_topic(topic: &str) -> AppResult<String> {
    let topic = topic.trim();
    if topic.chars().count() > TOPIC_MAX {
        return Err(AppError::validation(
            "topic",
            format!("a topic has at most {TOPIC_MAX} characters"),
        ));
    }
    Ok(topic.to_owned())
}

fn display_name(conn: &Connection, user: i64) -> AppResult<String> {
    Ok(conn
        .prepare_cached("SELECT CASE WHEN display_name = '' THEN username ELSE display_name END FROM users WHERE id = ?1")?
        .query_row([user], |row| row.get(0))
        .optional()?
        .unwrap_or_else(|| format!("user {user}")))
}

/// Active (not disabled) users among `ids`; unknown ids are a validation error.
fn require_users(conn: &Connection, ids: &[i64], field: &'static str) -> AppResult<()> {
    for id in ids {
        let ok: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1 AND disabled = 0)")?
            .query_row([id], |row| row.get(0))?;
        if !ok {
            return Err(AppError::validation(field, format!("no such user: {id}")));
        }
    }
    Ok(())
}

/// Refuses (403 `blocked`) to put `me` in a conversation with anyone among
/// `users` who blocked them.
fn require_not_blocked_by(conn: &Connection, me: i64, users: &[i64]) -> AppResult<()> {
    for user in users {
        if access::has_blocked(conn, *user, me)? {
            return Err(AppError::forbidden_code(
                "blocked",
                format!("user {user} does not accept your messages"),
            ));
        }
    }
    Ok(())
}

fn insert_conversation(
    ctx: &mut WriteCtx<'_>,
    kind: Kind,
    title: &str,
    topic: &str,
    creator: i64,
    direct_key: Option<&str>,
) -> AppResult<ConversationRow> {
    let now = ctx.now();
    ctx.conn().execute(
        "INSERT INTO conversations (kind, title, topic, created_by, created_at, direct_key, last_activity_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)",
        params![kind.as_str(), title, topic, creator, now, direct_key],
    )?;
    Ok(ConversationRow {
        id: ctx.conn().last_insert_rowid(),
        kind,
        title: title.to_owned(),
        topic: topic.to_owned(),
        created_by: Some(creator),
        created_at: now,
        last_message_id: 0,
        last_activity_at: now,
    })
}

/// Adds a member whose visible event history starts with the next event.
fn insert_member(
    ctx: &mut WriteCtx<'_>,
    conversation_id: i64,
    user: i64,
    role: Role,
) -> AppResult<()> {
    let first_event = ctx.peek_event_id();
    ctx.conn().prepare_cached(
        "INSERT INTO members (conversation_id, user_id, role, joined_at, joined_event_id, last_read_id, last_delivered_id)
         SELECT ?1, ?2, ?3, ?4, ?5, c.last_message_id, c.last_message_id FROM conversations c WHERE c.id = ?1",
    )?
    .execute(params![conversation_id, user, role.as_str(), ctx.now(), first_event])?;
    Ok(())
}

fn emit_created(
    ctx: &mut WriteCtx<'_>,
    row: &ConversationRow,
    creator: i64,
    member_ids: Vec<i64>,
) -> AppResult<()> {
    let conversation = base(ctx.conn(), row, row.kind != Kind::Channel)?;
    ctx.emit(EventDraft {
        kind: "conversation.created",
        conversation_id: Some(row.id),
        user_id: None,
        actor_id: Some(creator),
        message_id: None,
        payload: payload(&[("conversation", to_value(&conversation)?)])?,
        membership: Some(MembershipChange::Added {
            conversation_id: row.id,
            user_ids: member_ids,
        }),
    })?;
    Ok(())
}

/// The direct conversation of a pair: `(conversation, created)`.
pub fn create_direct(
    ctx: &mut WriteCtx<'_>,
    me: i64,
    other: i64,
) -> AppResult<(Conversation, bool)> {
    if me == other {
        return Err(AppError::validation(
            "user_id",
            "a direct conversation needs another person",
        ));
    }
    if access::has_blocked(ctx.conn(), other, me)? {
        return Err(AppError::forbidden_code(
            "blocked",
            "this person does not accept your messages",
        ));
    }
    let key = format!("{}:{}", me.min(other), me.max(other));
    let existing: Option<i64> = ctx
        .conn()
        .prepare_cached("SELECT id FROM conversations WHERE direct_key = ?1")?
        .query_row([&key], |row| row.get(0))
        .optional()?;
    if let Some(id) = existing {
        return Ok((get(ctx.conn(), me, id)?, false));
    }
    require_users(ctx.conn(), &[other], "user_id")?;
    let row = insert_conversation(ctx, Kind::Direct, "", "", me, Some(&key))?;
    insert_member(ctx, row.id, me, Role::Member)?;
    insert_member(ctx, row.id, other, Role::Member)?;
    emit_created(ctx, &row, me, vec![me, other])?;
    Ok((get(ctx.conn(), me, row.id)?, true))
}

pub fn create_group(
    ctx: &mut WriteCtx<'_>,
    me: i64,
    title: &str,
    member_ids: &[i64],
    max_members: usize,
) -> AppResult<Conversation> {
    let title = validate_title(title, true)?;
    let mut ids: Vec<i64> = member_ids.iter().copied().filter(|id| *id != me).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() + 1 > max_members {
        return Err(AppError::validation(
            "member_ids",
            format!("a group has at most {max_members} members"),
        ));
    }
    require_users(ctx.conn(), &ids, "member_ids")?;
    require_not_blocked_by(ctx.conn(), me, &ids)?;
    let row = insert_conversation(ctx, Kind::Group, &title, "", me, None)?;
    insert_member(ctx, row.id, me, Role::Owner)?;
    for id in &ids {
        insert_member(ctx, row.id, *id, Role::Member)?;
    }
    let mut all = vec![me];
    all.extend(ids);
    emit_created(ctx, &row, me, all)?;
    get(ctx.conn(), me, row.id)
}

pub fn create_channel(
    ctx: &mut WriteCtx<'_>,
    me: i64,
    title: &str,
    topic: &str,
) -> AppResult<Conversation> {
    let title = validate_title(title, true)?;
    let topic = validate_topic(topic)?;
    let row = insert_conversation(ctx, Kind::Channel, &title, &topic, me, None)?;
    insert_member(ctx, row.id, me, Role::Owner)?;
    emit_created(ctx, &row, me, vec![me])?;
    get(ctx.conn(), me, row.id)
}

fn emit_updated(ctx: &mut WriteCtx<'_>, conversation_id: i64, actor: i64) -> AppResult<()> {
    let row = load_row(ctx.conn(), conversation_id)?;
    let conversation = base(ctx.conn(), &row, row.kind != Kind::Channel)?;
    ctx.emit(EventDraft {
        kind: "conversation.updated",
        conversation_id: Some(conversation_id),
        user_id: None,
        actor_id: Some(actor),
        message_id: None,
        payload: payload(&[("conversation", to_value(&conversation)?)])?,
        membership: None,
    })?;
    Ok(())
}

fn load_row(conn: &Connection, conversation_id: i64) -> AppResult<ConversationRow> {
    conn.prepare_cached(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = ?1"
    ))?
    .query_row([conversation_id], access::conversation_from_row)
    .optional()?
    .ok_or_else(|| AppError::not_found("no such conversation"))
}

fn require_manager(conn: &Connection, me: i64, conversation_id: i64) -> AppResult<Access> {
    let access = access::require_readable(conn, me, conversation_id)?;
    if !access.is_admin() {
        return Err(AppError::forbidden(
            "only the conversation's owner or admins can do this",
        ));
    }
    Ok(access)
}

pub fn update(
    ctx: &mut WriteCtx<'_>,
    me: i64,
    conversation_id: i64,
    title: Option<String>,
    topic: Option<String>,
) -> AppResult<Conversation> {
    let access = access::require_readable(ctx.conn(), me, conversation_id)?;
    if access.conversation().kind == Kind::Direct {
        return Err(AppError::bad_request(
            "a direct conversation has no title or topic",
        ));
    }
    if !access.is_admin() {
        return Err(AppError::forbidden(
            "only the conversation's owner or admins can do this",
        ));
    }
    let title = title.map(|t| validate_title(&t, true)).transpose()?;
    let topic = topic.map(|t| validate_topic(&t)).transpose()?;
    if title.is_none() && topic.is_none() {
        return get(ctx.conn(), me, conversation_id);
    }
    if let Some(title) = &title {
        ctx.conn().execute(
            "UPDATE conversations SET title = ?1 WHERE id = ?2",
            params![title, conversation_id],
        )?;
    }
    if let Some(topic) = &topic {
        ctx.conn().execute(
            "UPDATE conversations SET topic = ?1 WHERE id = ?2",
            params![topic, conversation_id],
        )?;
    }
    emit_updated(ctx, conversation_id, me)?;
    get(ctx.conn(), me, conversation_id)
}

fn emit_member(
    ctx: &mut WriteCtx<'_>,
    kind: &'static str,
    conversation_id: i64,
    user: i64,
    role: Option<Role>,
    actor: i64,
    membership: Option<MembershipChange>,
) -> AppResult<()> {
    ctx.emit(EventDraft {
        kind,
        conversation_id: Some(conversation_id),
        // The removed member is no longer in the conversation at replay time.
        user_id: (kind == "member.removed").then_some(user),
        actor_id: Some(actor),
        message_id: None,
        payload: payload(&[
            ("conversation_id", conversation_id.into()),
            ("user_id", user.into()),
            (
                "role",
                role.map(|r| r.as_str().into())
                    .unwrap_or(serde_json::Value::Null),
            ),
        ])?,
        membership,
    })?;
    Ok(())
}

/// Joins a channel (idempotent).
pub fn join(ctx: &mut WriteCtx<'_>, me: i64, conversation_id: i64) -> AppResult<Conversation> {
    let access = access::require_readable(ctx.conn(), me, conversation_id)?;
    if access.is_member() {
        return get(ctx.conn(), me, conversation_id);
    }
    // require_readable only lets non-members through for channels. A channel
    // everyone left has no one to manage it: its next member becomes the owner.
    let empty: bool = ctx.conn().query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM members WHERE conversation_id = ?1)",
        [conversation_id],
        |row| row.get(0),
    )?;
    let role = if empty { Role::Owner } else { Role::Member };
    insert_member(ctx, conversation_id, me, role)?;
    emit_member(
        ctx,
        "member.added",
        conversation_id,
        me,
        Some(role),
        me,
        Some(MembershipChange::Added {
            conversation_id,
            user_ids: vec![me],
        }),
    )?;
    let name = display_name(ctx.conn(), me)?;
    messages::post_system(ctx, conversation_id, me, format!("{name} joined"))?;
    get(ctx.conn(), me, conversation_id)
}

fn remove(ctx: &mut WriteCtx<'_>, conversation_id: i64, user: i64, actor: i64) -> AppResult<()> {
    ctx.conn().execute(
        "DELETE FROM members WHERE conversation_id = ?1 AND user_id = ?2",
        params![conversation_id, user],
    )?;
    emit_member(
        ctx,
        "member.removed",
        conversation_id,
        user,
        None,
        actor,
        Some(MembershipChange::Removed {
            conversation_id,
            user_id: user,
        }),
    )
}

/// Leaves a group or channel. An owner who leaves hands ownership to the longest-
/// standing admin, or else the longest-standing member.
pub fn leave(ctx: &mut WriteCtx<'_>, me: i64, conversation_id: i64) -> AppResult<()> {
    let access = access::require_readable(ctx.conn(), me, conversation_id)?;
    if access.conversation().kind == Kind::Direct {
        return Err(AppError::bad_request(
            "you cannot leave a direct conversation",
        ));
    }
    let Some(role) = access.role() else {
        return Err(AppError::not_found(
            "you are not a member of this conversation",
        ));
    };
    let name = display_name(ctx.conn(), me)?;
    // The system message first, while the leaver is still a member and gets it.
    messages::post_system(ctx, conversation_id, me, format!("{name} left"))?;
    remove(ctx, conversation_id, me, me)?;
    if role == Role::Owner {
        let heir: Option<i64> = ctx
            .conn()
            .query_row(
                "SELECT user_id FROM members WHERE conversation_id = ?1
                 ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1",
                [conversation_id],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(heir) = heir {
            ctx.conn().execute(
                "UPDATE members SET role = 'owner' WHERE conversation_id = ?1 AND user_id = ?2",
                params![conversation_id, heir],
            )?;
            emit_member(
                ctx,
                "member.updated",
                conversation_id,
                heir,
                Some(Role::Owner),
                me,
                None,
            )?;
            let name = display_name(ctx.conn(), heir)?;
            messages::post_system(ctx, conversation_id, me, format!("{name} is now the owner"))?;
        }
    }
    Ok(())
}

pub fn add_members(
    ctx: &mut WriteCtx<'_>,
    me: i64,
    conversation_id: i64,
    user_ids: &[i64],
    max_members: usize,
) -> AppResult<Conversation> {
    let access = require_manager(ctx.conn(), me, conversation_id)?;
    if access.conversation().kind == Kind::Direct {
        return Err(AppError::bad_request(
            "a direct conversation has exactly two members",
        ));
    }
    let mut ids: Vec<i64> = user_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    require_users(ctx.conn(), &ids, "user_ids")?;
    let existing: Vec<i64> = members_of(ctx.conn(), conversation_id)?
        .iter()
        .map(|m| m.user_id)
        .collect();
    ids.retain(|id| !existing.contains(id));
    if ids.is_empty() {
        return get(ctx.conn(), me, conversation_id);
    }
    require_not_blocked_by(ctx.conn(), me, &ids)?;
    if existing.len() + ids.len() > max_members {
        return Err(AppError::validation(
            "user_ids",
            format!("a conversation has at most {max_members} members"),
        ));
    }
    let mut names = Vec::new();
    for id in &ids {
        insert_member(ctx, conversation_id, *id, Role::Member)?;
        emit_member(
            ctx,
            "member.added",
            conversation_id,
            *id,
            Some(Role::Member),
            me,
            Some(MembershipChange::Added {
                conversation_id,
                user_ids: vec![*id],
            }),
        )?;
        names.push(display_name(ctx.conn(), *id)?);
    }
    let actor = display_name(ctx.conn(), me)?;
    messages::post_system(
        ctx,
        conversation_id,
        me,
        format!("{actor} added {}", names.join(", ")),
    )?;
    get(ctx.conn(), me, conversation_id)
}

/// Removes a member: owners remove anyone, admins remove plain members, anyone
/// removes themselves (that is leaving).
pub fn remove_member(
    ctx: &mut WriteCtx<'_>,
    me: i64,
    conversation_id: i64,
    user: i64,
) -> AppResult<()> {
    if user == me {
        return leave(ctx, me, conversation_id);
    }
    let access = require_manager(ctx.conn(), me, conversation_id)?;
    if access.conversation().kind == Kind::Direct {
        return Err(AppError::bad_request(
            "a direct conversation has exactly two members",
        ));
    }
    let target: Option<String> = ctx
        .conn()
        .query_row(
            "SELECT role FROM members WHERE conversation_id = ?1 AND user_id = ?2",
            params![conversation_id, user],
            |row| row.get(0),
        )
        .optional()?;
    let Some(target) = target.as_deref().and_then(Role::parse) else {
        return Err(AppError::not_found("no such member"));
    };
    let allowed = match access.role() {
        Some(Role::Owner) => target != Role::Owner,
        Some(Role::Admin) => target == Role::Member,
        _ => false,
    };
    if !allowed {
        return Err(AppError::forbidden("you cannot remove this member"));
    }
    let actor = display_name(ctx.conn(), me)?;
    let name = display_name(ctx.conn(), user)?;
    messages::post_system(ctx, conversation_id, me, format!("{actor} removed {name}"))?;
    remove(ctx, conversation_id, user, me)
}

/// Owner only: make a member an admin or back.
pub fn set_role(
    ctx: &mut WriteCtx<'_>,
    me: i64,
    conversation_id: i64,
    user: i64,
    role: Role,
) -> AppResult<Member> {
    let access = access::require_readable(ctx.conn(), me, conversation_id)?;
    if access.role() != Some(Role::Owner) {
        return Err(AppError::forbidden("only the owner can change roles"));
    }
    if role == Role::Owner {
        return Err(AppError::validation(
            "role",
            "role is \"admin\" or \"member\"",
        ));
    }
    if user == me {
        return Err(AppError::validation(
            "user_id",
            "the owner's role cannot change",
        ));
    }
    let changed = ctx.conn().execute(
        "UPDATE members SET role = ?1 WHERE conversation_id = ?2 AND user_id = ?3",
        params![role.as_str(), conversation_id, user],
    )?;
    if changed == 0 {
        return Err(AppError::not_found("no such member"));
    }
    emit_member(
        ctx,
        "member.updated",
        conversation_id,
        user,
        Some(role),
        me,
        None,
    )?;
    let actor = display_name(ctx.conn(), me)?;
    let name = display_name(ctx.conn(), user)?;
    let what = match role {
        Role::Admin => "an admin",
        _ => "a member",
    };
    messages::post_system(
        ctx,
        conversation_id,
        me,
        format!("{actor} made {name} {what}"),
    )?;
    members_of(ctx.conn(), conversation_id)?
        .into_iter()
        .find(|m| m.user_id == user)
        .ok_or_else(|| AppError::not_found("no such member"))
}

pub fn set_muted(
    ctx: &mut WriteCtx<'_>,
    me: i64,
    conversation_id: i64,
    muted: bool,
) -> AppResult<()> {
    access::require_member(ctx.conn(), me, conversation_id)?;
    ctx.conn().execute(
        "UPDATE members SET muted = ?1 WHERE conversation_id = ?2 AND user_id = ?3",
        params![muted, conversation_id, me],
    )?;
    Ok(())
}

/// Moves the caller's read pointer forward (never back, never past the newest
/// message) and tells the other members. Returns the pointer.
pub fn mark_read(
    ctx: &mut WriteCtx<'_>,
    me: i64,
    conversation_id: i64,
    message_id: i64,
) -> AppResult<i64> {
    if message_id <= 0 {
        return Err(AppError::validation(
            "message_id",
            "a message id is positive",
        ));
    }
    let row = access::require_member(ctx.conn(), me, conversation_id)?;
    let in_conversation: bool = ctx
        .conn()
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND conversation_id = ?2)",
        )?
        .query_row(params![message_id, conversation_id], |r| r.get(0))?;
    if !in_conversation {
        return Err(AppError::not_found("no such message in this conversation"));
    }
    let target = message_id.min(row.last_message_id);
    let moved = ctx
        .conn()
        .prepare_cached(
            "UPDATE members SET last_read_id = ?1, last_delivered_id = MAX(last_delivered_id, ?1)
         WHERE conversation_id = ?2 AND user_id = ?3 AND last_read_id < ?1",
        )?
        .execute(params![target, conversation_id, me])?;
    if moved > 0 {
        ctx.emit(EventDraft {
            kind: "read",
            conversation_id: Some(conversation_id),
            user_id: None,
            actor_id: Some(me),
            message_id: None,
            payload: payload(&[
                ("conversation_id", conversation_id.into()),
                ("user_id", me.into()),
                ("message_id", target.into()),
            ])?,
            membership: None,
        })?;
        return Ok(target);
    }
    Ok(my_membership(ctx.conn(), me, conversation_id)?.map_or(0, |m| m.last_read_id))
}
