-- lanchat v1 schema. Timestamps are milliseconds since the Unix epoch.

CREATE TABLE users (
    id                   INTEGER PRIMARY KEY,
    -- Always stored folded to lower case; NOCASE guards against a stray mixed-case insert.
    username             TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    display_name         TEXT    NOT NULL DEFAULT '',
    password_hash        TEXT    NOT NULL,
    is_admin             INTEGER NOT NULL DEFAULT 0,
    disabled             INTEGER NOT NULL DEFAULT 0,
    status_text          TEXT    NOT NULL DEFAULT '',
    avatar_attachment_id INTEGER,
    created_at           INTEGER NOT NULL,
    last_seen_at         INTEGER
);

-- One row per logged-in device.
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    user_agent   TEXT    NOT NULL DEFAULT '',
    address      TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- Every refresh token ever issued (hashed), so that presenting a used one is detected
-- as theft and revokes the whole session.
CREATE TABLE refresh_tokens (
    token_hash TEXT    PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

CREATE TABLE conversations (
    id               INTEGER PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind IN ('direct', 'group', 'channel')),
    title            TEXT    NOT NULL DEFAULT '',
    topic            TEXT    NOT NULL DEFAULT '',
    created_by       INTEGER REFERENCES users(id),
    created_at       INTEGER NOT NULL,
    -- "<low user id>:<high user id>" for direct conversations: at most one per pair.
    direct_key       TEXT    UNIQUE,
    last_message_id  INTEGER NOT NULL DEFAULT 0,
    last_activity_at INTEGER NOT NULL
);
CREATE INDEX conversations_by_kind ON conversations(kind, title);

CREATE TABLE members (
    conversation_id   INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    user_id           INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role              TEXT    NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    joined_at         INTEGER NOT NULL,
    -- Events of the conversation before this id are not replayed to this member.
    joined_event_id   INTEGER NOT NULL DEFAULT 0,
    last_read_id      INTEGER NOT NULL DEFAULT 0,
    last_delivered_id INTEGER NOT NULL DEFAULT 0,
    muted             INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members(user_id, conversation_id);

-- AUTOINCREMENT: message ids must never be reused, even if the newest row were removed.
CREATE TABLE messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    sender_id       INTEGER REFERENCES users(id),
    kind            TEXT    NOT NULL DEFAULT 'text' CHECK (kind IN ('text', 'system')),
    body            TEXT    NOT NULL,
    client_id       TEXT,
    reply_to        INTEGER,
    mentions        TEXT    NOT NULL DEFAULT '[]', -- JSON array of user ids
    created_at      INTEGER NOT NULL,
    edited_at       INTEGER,
    deleted_at      INTEGER
);
CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX messages_by_sender ON messages(sender_id, id);
CREATE UNIQUE INDEX messages_by_client_id ON messages(sender_id, client_id) WHERE client_id IS NOT NULL;

CREATE TABLE attachments (
    id          INTEGER PRIMARY KEY,
    uploader_id INTEGER NOT NULL REFERENCES users(id),
    name        TEXT    NOT NULL,
    mime        TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT    NOT NULL,
    width       INTEGER,
    height      INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX attachments_by_sha ON attachments(sha256);
CREATE INDEX attachments_by_uploader ON attachments(uploader_id, created_at);

CREATE TABLE message_attachments (
    message_id    INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    attachment_id INTEGER NOT NULL REFERENCES attachments(id),
    position      INTEGER NOT NULL,
    PRIMARY KEY (message_id, attachment_id)
) WITHOUT ROWID;
CREATE INDEX message_attachments_by_attachment ON message_attachments(attachment_id);

CREATE TABLE reactions (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    emoji      TEXT    NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
) WITHOUT ROWID;

-- The durable event log that WebSocket clients replay with ?since=. An event is
-- addressed to a conversation's members, or to one user, or both.
CREATE TABLE events (
    event_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    type            TEXT    NOT NULL,
    conversation_id INTEGER,
    user_id         INTEGER,
    actor_id        INTEGER, -- who caused it: hidden from recipients who blocked them
    payload         TEXT    NOT NULL, -- the complete frame as sent on the wire
    created_at      INTEGER NOT NULL
);
CREATE INDEX events_by_conversation ON events(conversation_id, event_id) WHERE conversation_id IS NOT NULL;
CREATE INDEX events_by_user ON events(user_id, event_id) WHERE user_id IS NOT NULL;
CREATE INDEX events_by_time ON events(created_at);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL -- JSON
) WITHOUT ROWID;

CREATE TABLE invites (
    code       TEXT    PRIMARY KEY,
    created_by INTEGER REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    uses_left  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE blocks (
    blocker_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    blocked_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
) WITHOUT ROWID;
CREATE INDEX blocks_by_blocked ON blocks(blocked_id);

-- Full-text search over message bodies, kept in sync by triggers inside the writer's
-- transactions, so the index can never disagree with committed messages.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    body, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.kind = 'text' BEGIN
    INSERT INTO messages_fts(rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages WHEN old.kind = 'text' BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
    INSERT INTO messages_fts(rowid, body) VALUES (new.id, new.body);
END;
