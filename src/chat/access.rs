//! Who may see and do what in a conversation. A group or direct conversation is
//! invisible (404) to non-members; a channel is readable by everyone, but only
//! members write to it.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Direct,
    Group,
    Channel,
}

impl Kind {
    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "direct" => Some(Kind::Direct),
            "group" => Some(Kind::Group),
            "channel" => Some(Kind::Channel),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Group => "group",
            Kind::Channel => "channel",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn can_manage(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRow {
    pub id: i64,
    pub kind: Kind,
    pub title: String,
    pub topic: String,
    pub created_by: Option<i64>,
    pub created_at: i64,
    pub last_message_id: i64,
    pub last_activity_at: i64,
}

pub const CONVERSATION_COLUMNS: &str = "c.id, c.kind, c.title, c.topic, c.created_by, c.created_at, c.last_message_id, c.last_activity_at";

pub fn conversation_from_row(row: &Row<'_>) -> rusqlite::Result<ConversationRow> {
    let kind: String = row.get(1)?;
    Ok(ConversationRow {
        id: row.get(0)?,
        kind: Kind::parse(&kind).unwrap_or(Kind::Group),
        title: row.get(2)?,
        topic: row.get(3)?,
        created_by: row.get(4)?,
        created_at: row.get(5)?,
        last_message_id: row.get(6)?,
        last_activity_at: row.get(7)?,
    })
}

/// A caller's standing in a conversation they can see.
#[derive(Debug, Clone)]
pub struct Access {
    conversation: ConversationRow,
    /// `None` for a channel the caller has not joined.
    role: Option<Role>,
}

impl Access {
    pub fn conversation(&self) -> &ConversationRow {
        &self.conversation
    }

    pub fn role(&self) -> Option<Role> {
        self.role
    }

    pub fn is_member(&self) -> bool {
        self.role.is_some()
    }

    pub fn is_admin(&self) -> bool {
        self.role.is_some_and(Role::can_manage)
    }
}

/// The caller's access, or `None` when the conversation is unknown or hidden.
pub fn readable(conn: &Connection, user: i64, conversation_id: i64) -> AppResult<Option<Access>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS}, m.role FROM conversations c
             LEFT JOIN members m ON m.conversation_id = c.id AND m.user_id = ?2
             WHERE c.id = ?1"
        ))?
        .query_row(params![conversation_id, user], |row| {
            let role: Option<String> = row.get(8)?;
            Ok((conversation_from_row(row)?, role))
        })
        .optional()?;
    Ok(found.and_then(|(conversation, role)| {
        let role = role.as_deref().and_then(Role::parse);
        (role.is_some() || conversation.kind == Kind::Channel)
            .then_some(Access { conversation, role })
    }))
}

pub fn require_readable(conn: &Connection, user: i64, conversation_id: i64) -> AppResult<Access> {
    readable(conn, user, conversation_id)?
        .ok_or_else(|| AppError::not_found("no such conversation"))
}

/// Members only: 404 for hidden conversations, 403 for a channel not joined.
pub fn require_member(
    conn: &Connection,
    user: i64,
    conversation_id: i64,
) -> AppResult<ConversationRow> {
    let access = require_readable(conn, user, conversation_id)?;
    if !access.is_member() {
        return Err(AppError::forbidden("join this channel first"));
    }
    Ok(access.conversation)
}

/// In a direct conversation, refuses a user whom the other member blocked.
pub fn require_not_blocked_direct(
    conn: &Connection,
    user: i64,
    conversation: &ConversationRow,
) -> AppResult<()> {
    if conversation.kind != Kind::Direct {
        return Ok(());
    }
    let blocked: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM members m JOIN blocks b ON b.blocker_id = m.user_id
             WHERE m.conversation_id = ?1 AND m.user_id != ?2 AND b.blocked_id = ?2)",
        )?
        .query_row(params![conversation.id, user], |row| row.get(0))?;
    if blocked {
        return Err(AppError::forbidden_code(
            "blocked",
            "this person does not accept your messages",
        ));
    }
    Ok(())
}

/// Whether `blocker` blocked `blocked`.
pub fn has_blocked(conn: &Connection, blocker: i64, blocked: i64) -> AppResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2)",
        )?
        .query_row(params![blocker, blocked], |row| row.get(0))?)
}
