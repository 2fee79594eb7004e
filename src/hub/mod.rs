//! The realtime hub: who is connected, who is in which conversation, and the
//! routing of events to sockets.
//!
//! - Durable events arrive from the writer thread after each commit, in event-id
//!   order ([`Hub::publish`]); each is serialized once and the same bytes are
//!   queued to every recipient connection.
//! - Every connection has a bounded outbound queue. A connection whose queue is
//!   full is a slow consumer: it is closed with 1013 and resumes with `since`;
//!   nobody else waits for it.
//! - Ephemeral events (typing, presence, delivered) are routed the same way but
//!   never stored.
//!
//! The routing table (members per conversation, blocks) mirrors the database and
//! is updated from the committed events themselves, so it can never run ahead of
//! what is durable.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::db::{CommittedEvent, MembershipChange, now_ms};

pub type ConnId = u64;

/// Close codes used by the server.
pub mod close {
    /// Server shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Policy violation: flooding, or the session was revoked.
    pub const POLICY: u16 = 1008;
    /// The outbound queue overflowed ("try again later" with `since`).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The client broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A frame over the hard size limit (1 MiB).
    pub const TOO_BIG: u16 = 1009;
}

/// One item on a connection's outbound queue.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A durable event (skipped if the connection already sent it during replay),
    /// with its frame as WebSocket text: checked as UTF-8 once per event, not
    /// once per recipient.
    Event(Arc<CommittedEvent>, Utf8Bytes),
    /// An ephemeral frame, already serialized.
    Frame(Utf8Bytes),
}

/// A trigger that tells a connection task to close its socket with a code.
#[derive(Debug, Default)]
pub struct KillSwitch {
    code: AtomicU16,
    fired: AtomicBool,
    notify: Notify,
}

impl KillSwitch {
    pub fn fire(&self, code: u16) {
        if !self.fired.swap(true, Ordering::AcqRel) {
            self.code.store(code, Ordering::Release);
            self.notify.notify_one();
        }
    }

    /// Resolves with the close code once fired.
    pub async fn fired(&self) -> u16 {
        loop {
            let notified = self.notify.notified();
            if self.fired.load(Ordering::Acquire) {
                return self.code.load(Ordering::Acquire);
            }
            notified.await;
        }
    }
}

struct ConnEntry {
    user_id: i64,
    session_id: i64,
    queue: mpsc::Sender<Outbound>,
    kill: Arc<KillSwitch>,
}

#[derive(Default)]
struct Routing {
    /// Highest event id handed to connections; replay covers up to it. Atomic so
    /// that publishing can run under the read lock (registration takes the write
    /// lock, so it still sees a value consistent with the queues).
    last_event_id: AtomicI64,
    conns: HashMap<ConnId, ConnEntry>,
    by_user: HashMap<i64, Vec<ConnId>>,
    members: HashMap<i64, HashSet<i64>>,
    conversations_of: HashMap<i64, HashSet<i64>>,
    /// blocker → users they blocked.
    blocks: HashMap<i64, HashSet<i64>>,
    typing: HashMap<(i64, i64), Instant>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct HubStats {
    pub events_delivered: AtomicU64,
    pub slow_consumers_closed: AtomicU64,
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    routing: RwLock<Routing>,
    next_conn_id: AtomicU64,
    queue_len: usize,
    pub stats: HubStats,
    receipts: std::sync::Mutex<Receipts>,
    /// Users that went offline, with when, not yet persisted.
    last_seen_dirty: std::sync::Mutex<HashMap<i64, i64>>,
    /// When users went offline, since start-up: the database has it only
    /// after the next flush (one entry per user at most).
    last_seen: std::sync::Mutex<HashMap<i64, i64>>,
}

/// Delivery receipts, keyed by (conversation id, recipient user id).
#[derive(Default)]
struct Receipts {
    /// The highest message id known delivered: receipts only move forward.
    persisted: HashMap<(i64, i64), i64>,
    /// Marks not yet written to the database.
    dirty: HashMap<(i64, i64), i64>,
    /// Receipts not yet sent: the highest id and the senders to tell.
    unsent: HashMap<(i64, i64), (i64, Vec<i64>)>,
}

/// State gathered in memory, to be persisted by the periodic flush.
#[derive(Debug, Default)]
pub struct Dirty {
    /// ((conversation id, user id), highest delivered message id)
    pub delivered: Vec<((i64, i64), i64)>,
    /// (user id, last seen at)
    pub last_seen: Vec<(i64, i64)>,
}

/// Why a registration was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    TooManyConnections,
}

/// A registered connection. Dropping it unregisters the connection (and may
/// mark the user offline), so no exit path of a socket task can leak an entry.
pub struct Registration {
    hub: Hub,
    pub conn_id: ConnId,
    pub user_id: i64,
    pub receiver: mpsc::Receiver<Outbound>,
    pub kill: Arc<KillSwitch>,
    /// Events up to this id are to be replayed from the database; the queue
    /// carries everything after it.
    pub last_event_id: i64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.conn_id);
    }
}

const TYPING_TIMEOUT: Duration = Duration::from_secs(6);

impl Hub {
    pub fn new(queue_len: usize) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                routing: RwLock::new(Routing::default()),
                next_conn_id: AtomicU64::new(1),
                queue_len,
                stats: HubStats::default(),
                receipts: Default::default(),
                last_seen_dirty: Default::default(),
                last_seen: Default::default(),
            }),
        }
    }

    pub fn stats(&self) -> &HubStats {
        &self.inner.stats
    }

    /// Loads memberships and blocks from the database at start-up.
    pub fn load(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut routing = self.write();
        let mut stmt = conn.prepare("SELECT conversation_id, user_id FROM members")?;
        let rows = stmt.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?;
        for row in rows {
            let (conversation_id, user_id) = row?;
            routing.add_member(conversation_id, user_id);
        }
        let mut stmt = conn.prepare("SELECT blocker_id, blocked_id FROM blocks")?;
        let rows = stmt.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?;
        for row in rows {
            let (blocker, blocked) = row?;
            routing.blocks.entry(blocker).or_default().insert(blocked);
        }
        let last: i64 = conn.query_row(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                        COALESCE((SELECT MAX(event_id) FROM events), 0))",
            [],
            |row| row.get(0),
        )?;
        routing.last_event_id.store(last, Ordering::Release);
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Routing> {
        self.inner.routing.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Routing> {
        self.inner
            .routing
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection. Its first queued event will be the one after the
    /// returned `last_event_id`, so replay-then-live has no gap and no duplicate.
    pub fn register(
        &self,
        user_id: i64,
        session_id: i64,
        max_per_user: usize,
    ) -> Result<Registration, RegisterError> {
        let conn_id = self.inner.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let (queue, receiver) = mpsc::channel(self.inner.queue_len);
        let kill = Arc::new(KillSwitch::default());
        let (came_online, last_event_id) = {
            let mut routing = self.write();
            let list = routing.by_user.entry(user_id).or_default();
            if list.len() >= max_per_user {
                return Err(RegisterError::TooManyConnections);
            }
            list.push(conn_id);
            let came_online = list.len() == 1;
            routing.conns.insert(
                conn_id,
                ConnEntry {
                    user_id,
                    session_id,
                    queue,
                    kill: kill.clone(),
                },
            );
            (came_online, routing.last_event_id.load(Ordering::Acquire))
        };
        if came_online {
            self.broadcast_presence(user_id, true, None);
        }
        Ok(Registration {
            hub: self.clone(),
            conn_id,
            user_id,
            receiver,
            kill,
            last_event_id,
        })
    }

    fn unregister(&self, conn_id: ConnId) {
        let went_offline = {
            let mut routing = self.write();
            let Some(entry) = routing.conns.remove(&conn_id) else {
                return;
            };
            let user_id = entry.user_id;
            let empty = match routing.by_user.get_mut(&user_id) {
                Some(list) => {
                    list.retain(|id| *id != conn_id);
                    list.is_empty()
                }
                None => true,
            };
            if empty {
                routing.by_user.remove(&user_id);
                Some(user_id)
            } else {
                None
            }
        };
        if let Some(user_id) = went_offline {
            let now = now_ms();
            self.lock_last_seen().insert(user_id, now);
            self.inner
                .last_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(user_id, now);
            self.stop_typing_everywhere(user_id);
            self.broadcast_presence(user_id, false, Some(now));
        }
    }

    fn lock_last_seen(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i64>> {
        self.inner
            .last_seen_dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// When the user's last connection closed, if it did since start-up.
    pub fn last_seen(&self, user_id: i64) -> Option<i64> {
        self.inner
            .last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user_id)
            .copied()
    }

    pub fn is_online(&self, user_id: i64) -> bool {
        self.read().by_user.contains_key(&user_id)
    }

    pub fn online_users(&self) -> usize {
        self.read().by_user.len()
    }

    pub fn open_connections(&self) -> usize {
        self.read().conns.len()
    }

    pub fn is_member(&self, conversation_id: i64, user_id: i64) -> bool {
        self.read()
            .members
            .get(&conversation_id)
            .is_some_and(|m| m.contains(&user_id))
    }

    /// Whether `blocker` has blocked `blocked`.
    pub fn has_blocked(&self, blocker: i64, blocked: i64) -> bool {
        self.read()
            .blocks
            .get(&blocker)
            .is_some_and(|b| b.contains(&blocked))
    }

    /// Mirrors a committed block or unblock.
    pub fn set_block(&self, blocker: i64, blocked: i64, on: bool) {
        let mut routing = self.write();
        if on {
            routing.blocks.entry(blocker).or_default().insert(blocked);
        } else if let Some(set) = routing.blocks.get_mut(&blocker) {
            set.remove(&blocked);
        }
    }

    /// Routes a committed batch of events. Runs on the writer thread: only
    /// non-blocking queue pushes happen here.
    pub fn publish(&self, events: Vec<Arc<CommittedEvent>>) {
        let mut overflowed = Vec::new();
        let mut delivered = 0u64;
        if events.iter().any(|e| e.membership.is_some()) {
            let mut routing = self.write();
            for event in events {
                if let Some(MembershipChange::Added {
                    conversation_id,
                    user_ids,
                }) = &event.membership
                {
                    for user_id in user_ids {
                        routing.add_member(*conversation_id, *user_id);
                    }
                }
                delivered += routing.route(&event, &mut overflowed);
                if let Some(MembershipChange::Removed {
                    conversation_id,
                    user_id,
                }) = &event.membership
                {
                    routing.remove_member(*conversation_id, *user_id);
                }
                routing
                    .last_event_id
                    .fetch_max(event.event_id, Ordering::AcqRel);
            }
        } else {
            // The common case (messages, reactions, receipts): routing only reads.
            let routing = self.read();
            for event in events {
                delivered += routing.route(&event, &mut overflowed);
                routing
                    .last_event_id
                    .fetch_max(event.event_id, Ordering::AcqRel);
            }
        }
        self.inner
            .stats
            .events_delivered
            .fetch_add(delivered, Ordering::Relaxed);
        self.close_overflowed(overflowed);
    }

    fn close_overflowed(&self, overflowed: Vec<Arc<KillSwitch>>) {
        for kill in overflowed {
            self.inner
                .stats
                .slow_consumers_closed
                .fetch_add(1, Ordering::Relaxed);
            kill.fire(close::TRY_AGAIN_LATER);
        }
    }

    /// Queues an ephemeral frame to every connection of `users`.
    fn send_to_users(&self, users: impl IntoIterator<Item = i64>, frame: Utf8Bytes) {
        let mut overflowed = Vec::new();
        {
            let routing = self.read();
            for user_id in users {
                routing.push_to_user(user_id, &Outbound::Frame(frame.clone()), &mut overflowed);
            }
        }
        self.close_overflowed(overflowed);
    }

    /// Queues a frame to one connection (acks and errors for its own requests).
    /// Returns false if the connection is gone or overflowed.
    pub fn send_to_conn(&self, conn_id: ConnId, frame: Utf8Bytes) -> bool {
        let routing = self.read();
        let Some(entry) = routing.conns.get(&conn_id) else {
            return false;
        };
        match entry.queue.try_send(Outbound::Frame(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                entry.kill.fire(close::TRY_AGAIN_LATER);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn broadcast_presence(&self, user_id: i64, online: bool, last_seen_at: Option<i64>) {
        let audience: Vec<i64> = {
            let routing = self.read();
            routing
                .contacts_of(user_id)
                .into_iter()
                .filter(|contact| !routing.blocked_by(*contact, user_id))
                .collect()
        };
        if audience.is_empty() {
            return;
        }
        let frame = serde_json::json!({
            "type": "presence",
            "user_id": user_id,
            "online": online,
            "last_seen_at": last_seen_at,
        })
        .to_string();
        self.send_to_users(audience, frame.into());
    }

    /// A member started or stopped typing. The caller checked membership.
    pub fn typing(&self, conversation_id: i64, user_id: i64, start: bool) {
        {
            let mut routing = self.write();
            let key = (conversation_id, user_id);
            if start {
                routing.typing.insert(key, Instant::now() + TYPING_TIMEOUT);
            } else if routing.typing.remove(&key).is_none() {
                return; // already stopped: nothing to tell anyone
            }
        }
        self.send_typing(conversation_id, user_id, start);
    }

    fn send_typing(&self, conversation_id: i64, user_id: i64, start: bool) {
        let audience: Vec<i64> = {
            let routing = self.read();
            match routing.members.get(&conversation_id) {
                Some(members) => members
                    .iter()
                    .copied()
                    .filter(|m| *m != user_id && !routing.blocked_by(*m, user_id))
                    .collect(),
                None => return,
            }
        };
        let frame = serde_json::json!({
            "type": "typing",
            "conversation_id": conversation_id,
            "user_id": user_id,
            "state": if start { "start" } else { "stop" },
        })
        .to_string();
        self.send_to_users(audience, frame.into());
    }

    fn stop_typing_everywhere(&self, user_id: i64) {
        let stopped: Vec<i64> = {
            let mut routing = self.write();
            let keys: Vec<(i64, i64)> = routing
                .typing
                .keys()
                .filter(|(_, u)| *u == user_id)
                .copied()
                .collect();
            for key in &keys {
                routing.typing.remove(key);
            }
            keys.into_iter().map(|(c, _)| c).collect()
        };
        for conversation_id in stopped {
            self.send_typing(conversation_id, user_id, false);
        }
    }

    /// Sends `stop` for every `start` not renewed in time. Called every second.
    pub fn expire_typing(&self) {
        let now = Instant::now();
        let expired: Vec<(i64, i64)> = {
            let mut routing = self.write();
            let expired: Vec<(i64, i64)> = routing
                .typing
                .iter()
                .filter(|(_, deadline)| **deadline <= now)
                .map(|(key, _)| *key)
                .collect();
            for key in &expired {
                routing.typing.remove(key);
            }
            expired
        };
        for (conversation_id, user_id) in expired {
            self.send_typing(conversation_id, user_id, false);
        }
    }

    /// A connection of `user_id` has written `message_id` (sent by `sender_id`)
    /// to its socket. Receipts are coalesced: [`Hub::flush_receipts`] sends each
    /// sender one `delivered` per (conversation, recipient) with the highest id,
    /// instead of one frame per message and recipient (a group burst would
    /// otherwise flood the senders' queues).
    pub fn delivered(&self, conversation_id: i64, user_id: i64, message_id: i64, sender_id: i64) {
        let mut receipts = self.lock_receipts();
        let mark = receipts
            .persisted
            .entry((conversation_id, user_id))
            .or_insert(0);
        if *mark >= message_id {
            return;
        }
        *mark = message_id;
        receipts
            .dirty
            .insert((conversation_id, user_id), message_id);
        let pending = receipts
            .unsent
            .entry((conversation_id, user_id))
            .or_insert((0, Vec::new()));
        pending.0 = pending.0.max(message_id);
        if !pending.1.contains(&sender_id) {
            pending.1.push(sender_id);
        }
    }

    fn lock_receipts(&self) -> std::sync::MutexGuard<'_, Receipts> {
        self.inner
            .receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the coalesced `delivered` frames. Called a few times a second.
    pub fn flush_receipts(&self) {
        let unsent = std::mem::take(&mut self.lock_receipts().unsent);
        for ((conversation_id, user_id), (message_id, mut senders)) in unsent {
            // A sender who blocked this recipient hears nothing from them.
            {
                let routing = self.read();
                senders.retain(|sender| !routing.blocked_by(*sender, user_id));
            }
            if senders.is_empty() {
                continue;
            }
            let frame = serde_json::json!({
                "type": "delivered",
                "conversation_id": conversation_id,
                "user_id": user_id,
                "message_id": message_id,
            })
            .to_string();
            self.send_to_users(senders, frame.into());
        }
    }

    /// Takes the delivery marks and last-seen times gathered since the last call,
    /// for the periodic flush to the database.
    pub fn take_dirty(&self) -> Dirty {
        let delivered: Vec<_> = std::mem::take(&mut self.lock_receipts().dirty)
            .into_iter()
            .collect();
        let seen: Vec<_> = std::mem::take(&mut *self.lock_last_seen())
            .into_iter()
            .collect();
        Dirty {
            delivered,
            last_seen: seen,
        }
    }

    /// Closes every connection of a session (logout, revocation).
    pub fn close_session(&self, session_id: i64, code: u16) {
        let routing = self.read();
        for entry in routing.conns.values() {
            if entry.session_id == session_id {
                entry.kill.fire(code);
            }
        }
    }

    /// Closes every connection of a user (disabled, password reset).
    pub fn close_user(&self, user_id: i64, code: u16) {
        let routing = self.read();
        if let Some(list) = routing.by_user.get(&user_id) {
            for conn_id in list {
                if let Some(entry) = routing.conns.get(conn_id) {
                    entry.kill.fire(code);
                }
            }
        }
    }

    /// Closes everything (server shutdown).
    pub fn close_all(&self, code: u16) {
        let routing = self.read();
        for entry in routing.conns.values() {
            entry.kill.fire(code);
        }
    }

    /// Whether an event may be shown to `user_id` (block filtering), for replay.
    pub fn visible_to(&self, user_id: i64, kind: &str, actor_id: Option<i64>) -> bool {
        let routing = self.read();
        !hidden_by_block(&routing, user_id, kind, actor_id)
    }
}

/// Nothing a user does reaches those who blocked them (their messages,
/// reactions, receipts, mentions, conversations they create or rename); only
/// membership changes stay visible, so that a shared group's member list stays
/// right.
fn hidden_by_block(routing: &Routing, recipient: i64, kind: &str, actor_id: Option<i64>) -> bool {
    match actor_id {
        Some(actor) if actor != recipient => {
            !kind.starts_with("member.") && routing.blocked_by(recipient, actor)
        }
        _ => false,
    }
}

impl Routing {
    fn add_member(&mut self, conversation_id: i64, user_id: i64) {
        self.members
            .entry(conversation_id)
            .or_default()
            .insert(user_id);
        self.conversations_of
            .entry(user_id)
            .or_default()
            .insert(conversation_id);
    }

    fn remove_member(&mut self, conversation_id: i64, user_id: i64) {
        if let Some(set) = self.members.get_mut(&conversation_id) {
            set.remove(&user_id);
        }
        if let Some(set) = self.conversations_of.get_mut(&user_id) {
            set.remove(&conversation_id);
        }
        self.typing.remove(&(conversation_id, user_id));
    }

    fn blocked_by(&self, blocker: i64, blocked: i64) -> bool {
        self.blocks
            .get(&blocker)
            .is_some_and(|b| b.contains(&blocked))
    }

    /// Everyone who shares a conversation with `user_id`.
    fn contacts_of(&self, user_id: i64) -> HashSet<i64> {
        let mut audience = HashSet::new();
        if let Some(conversations) = self.conversations_of.get(&user_id) {
            for conversation_id in conversations {
                if let Some(members) = self.members.get(conversation_id) {
                    audience.extend(members.iter().copied());
                }
            }
        }
        audience.remove(&user_id);
        audience
    }

    /// Queues one durable event to all its recipients; returns how many
    /// connections it was queued to.
    fn route(&self, event: &Arc<CommittedEvent>, overflowed: &mut Vec<Arc<KillSwitch>>) -> u64 {
        let Ok(text) = Utf8Bytes::try_from(event.frame.clone()) else {
            return 0; // never: frames are serialized from Strings
        };
        let item = Outbound::Event(event.clone(), text);
        let mut count = 0;
        let mut send = |user_id: i64| {
            if !hidden_by_block(self, user_id, event.kind, event.actor_id) {
                count += self.push_to_user(user_id, &item, overflowed);
            }
        };
        if let Some(conversation_id) = event.conversation_id
            && let Some(members) = self.members.get(&conversation_id)
        {
            for user_id in members {
                send(*user_id);
            }
        }
        if let Some(user_id) = event.user_id {
            let already = event
                .conversation_id
                .and_then(|c| self.members.get(&c))
                .is_some_and(|m| m.contains(&user_id));
            if !already {
                send(user_id);
            }
        }
        count
    }

    fn push_to_user(
        &self,
        user_id: i64,
        item: &Outbound,
        overflowed: &mut Vec<Arc<KillSwitch>>,
    ) -> u64 {
        let Some(list) = self.by_user.get(&user_id) else {
            return 0;
        };
        let mut count = 0;
        for conn_id in list {
            let Some(entry) = self.conns.get(conn_id) else {
                continue;
            };
            match entry.queue.try_send(item.clone()) {
                Ok(()) => count += 1,
                Err(mpsc::error::TrySendError::Full(_)) => overflowed.push(entry.kill.clone()),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        id: i64,
        conversation_id: i64,
        membership: Option<MembershipChange>,
    ) -> Arc<CommittedEvent> {
        Arc::new(CommittedEvent {
            event_id: id,
            kind: "message.created",
            conversation_id: Some(conversation_id),
            user_id: None,
            actor_id: Some(1),
            message_id: Some(id),
            membership,
            frame: format!("{{\"event_id\":{id}}}").into(),
            created: Instant::now(),
        })
    }

    #[test]
    fn routes_to_members_only_and_closes_slow_consumers() {
        let hub = Hub::new(8);
        hub.publish(vec![event(
            1,
            10,
            Some(MembershipChange::Added {
                conversation_id: 10,
                user_ids: vec![1, 2],
            }),
        )]);
        let mut member = hub.register(2, 100, 4).expect("register");
        let mut outsider = hub.register(3, 101, 4).expect("register");
        assert_eq!(member.last_event_id, 1);
        assert_eq!(hub.register(2, 102, 4).expect("again").last_event_id, 1);
        hub.publish(vec![event(2, 10, None)]);
        assert!(matches!(member.receiver.try_recv(), Ok(Outbound::Event(e, _)) if e.event_id == 2));
        assert!(outsider.receiver.try_recv().is_err());
        for id in 3..20 {
            hub.publish(vec![event(id, 10, None)]);
        }
        assert!(member.kill.fired.load(Ordering::Acquire));
        assert_eq!(
            member.kill.code.load(Ordering::Acquire),
            close::TRY_AGAIN_LATER
        );
        assert!(hub.is_online(2));
        drop(member);
        assert!(!hub.is_online(2));
    }

    #[test]
    fn blocked_users_are_filtered_and_connection_cap_holds() {
        let hub = Hub::new(8);
        hub.publish(vec![event(
            1,
            10,
            Some(MembershipChange::Added {
                conversation_id: 10,
                user_ids: vec![1, 2],
            }),
        )]);
        hub.set_block(2, 1, true);
        let mut blocker = hub.register(2, 100, 1).expect("register");
        assert!(matches!(
            hub.register(2, 101, 1),
            Err(RegisterError::TooManyConnections)
        ));
        hub.publish(vec![event(2, 10, None)]);
        assert!(blocker.receiver.try_recv().is_err());
        assert!(!hub.visible_to(2, "message.created", Some(1)));
        assert!(!hub.visible_to(2, "conversation.updated", Some(1)));
        assert!(hub.visible_to(2, "member.added", Some(1)));
    }
}
