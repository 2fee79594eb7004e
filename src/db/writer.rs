//! The single writer: one OS thread owns the read-write connection, takes every
//! queued write job, runs all that are waiting in ONE transaction (group commit:
//! one fsync for the batch), then answers each caller. Each job runs inside its own
//! savepoint, so a job that fails rolls back alone and the others still commit.
//!
//! Jobs append durable events through [`WriteCtx::emit`]; the events are written in
//! the same transaction as the change and handed to the commit hook (the realtime
//! hub) only after the commit succeeded, in event-id order.
//!
//! Work that need not delay a caller (the full-text index) is left to a
//! [`BackgroundStep`] the writer runs in transactions of its own, between batches.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::{DbError, now_ms};

/// How many jobs one transaction may carry. Large enough that a burst shares one
/// fsync, small enough that the first caller of a batch is not kept waiting long.
const MAX_BATCH: usize = 512;
/// Bounded queue: callers wait (asynchronously) when the writer is this far behind.
const QUEUE_DEPTH: usize = 4096;
/// The background step runs as soon as this many items await it; fewer wait for
/// a nudge ([`Writer::nudge_background`]). Under load that is one step per
/// this many messages, instead of one small index segment per commit.
const BACKGROUND_AFTER: u64 = 1024;
/// Most items one background transaction takes (~4 µs each when indexing: under
/// 20 ms), so a backlog never holds the jobs queued behind it for long.
const BACKGROUND_STEP_LIMIT: usize = 4096;

/// A membership change carried by an event, applied by the hub to its routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    Added {
        conversation_id: i64,
        user_ids: Vec<i64>,
    },
    Removed {
        conversation_id: i64,
        user_id: i64,
    },
}

/// A durable event a job wants to append.
#[derive(Debug)]
pub struct EventDraft {
    /// The wire `type`, e.g. `message.created`.
    pub kind: &'static str,
    /// Delivered to every member of this conversation...
    pub conversation_id: Option<i64>,
    /// ...and/or to this one user.
    pub user_id: Option<i64>,
    /// Who caused it; recipients who blocked this user do not receive it.
    pub actor_id: Option<i64>,
    /// The message it is about, for `message.created` (drives delivery receipts).
    pub message_id: Option<i64>,
    /// The payload fields; `event_id` and `type` are added here.
    pub payload: EventPayload,
    pub membership: Option<MembershipChange>,
}

/// An event's fields as the text of a JSON object, serialized once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPayload(String);

impl EventPayload {
    /// `{"<name>": value}`, serialized straight from `value` (no `Value` tree).
    pub fn field<T: serde::Serialize + ?Sized>(
        name: &str,
        value: &T,
    ) -> Result<EventPayload, serde_json::Error> {
        Self::fields(&[(name, value)])
    }

    /// `{"<name>": value, ...}` from fields of one type.
    pub fn fields<T: serde::Serialize + ?Sized>(
        fields: &[(&str, &T)],
    ) -> Result<EventPayload, serde_json::Error> {
        use serde::ser::{SerializeMap, Serializer};
        let mut text = Vec::with_capacity(256);
        let mut serializer = serde_json::Serializer::new(&mut text);
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (name, value) in fields {
            map.serialize_entry(name, value)?;
        }
        map.end()?;
        // serde_json writes only valid UTF-8.
        String::from_utf8(text)
            .map(EventPayload)
            .map_err(serde::ser::Error::custom)
    }

    /// No fields.
    pub fn empty() -> EventPayload {
        EventPayload("{}".into())
    }
}

/// An event after commit, serialized once; every recipient shares `frame`.
#[derive(Debug, Clone)]
pub struct CommittedEvent {
    pub event_id: i64,
    pub kind: &'static str,
    pub conversation_id: Option<i64>,
    pub user_id: Option<i64>,
    pub actor_id: Option<i64>,
    pub message_id: Option<i64>,
    pub membership: Option<MembershipChange>,
    /// The complete frame as sent on the wire (UTF-8 JSON), shared by all recipients.
    pub frame: bytes::Bytes,
    /// When it was appended (for the delivery-latency metric).
    pub created: std::time::Instant,
}

/// Called on the writer thread after each successful commit with that batch's
/// events in order. It must not block.
pub type CommitHook = Box<dyn Fn(Vec<Arc<CommittedEvent>>) + Send>;

/// Work a job leaves for the end of its transaction (see [`WriteCtx::before_commit`]).
pub type BeforeCommit = Box<dyn FnOnce(&Connection) -> Result<(), DbError>>;

/// Work the writer does off the jobs' commit path, in a transaction of its own:
/// handles up to `limit` waiting items and says whether more remain. It must find
/// its work in the database (it runs after any restart as well).
pub type BackgroundStep = Box<dyn FnMut(&Connection, usize) -> Result<bool, DbError> + Send>;

/// A [`BackgroundStep`] with nothing to do, for tools and tests.
pub fn no_background() -> BackgroundStep {
    Box::new(|_, _| Ok(false))
}

/// What a job sees: the open transaction and the event log.
pub struct WriteCtx<'a> {
    conn: &'a Connection,
    events: &'a mut Vec<Arc<CommittedEvent>>,
    before_commit: &'a mut Vec<BeforeCommit>,
    next_event_id: &'a mut i64,
    background_items: &'a mut u64,
    now: i64,
}

impl WriteCtx<'_> {
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// The batch's timestamp: one clock reading shared by the whole transaction.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The id the next emitted event will get (e.g. to record where a member's
    /// visible history starts).
    pub fn peek_event_id(&self) -> i64 {
        *self.next_event_id
    }

    /// Runs `work` in this transaction after every job of the batch, outside the
    /// jobs' savepoints, in the order queued; dropped if this job rolls back. If it
    /// fails, the whole batch rolls back. For the full-text index: FTS5 writes its
    /// pending terms to disk at every savepoint release, so indexing inside each
    /// job wrote (and later merged) one index segment per message.
    pub fn before_commit(
        &mut self,
        work: impl FnOnce(&Connection) -> Result<(), DbError> + 'static,
    ) {
        self.before_commit.push(Box::new(work));
    }

    /// Tells the writer this change left an item for its [`BackgroundStep`] (a
    /// message to index), so that the step runs soon.
    pub fn leave_background_work(&mut self) {
        *self.background_items += 1;
    }

    /// Appends a durable event in this transaction and returns its id.
    pub fn emit(&mut self, draft: EventDraft) -> Result<i64, DbError> {
        let event_id = *self.next_event_id;
        // `{"event_id":N,"type":"kind",` + the payload object's fields.
        let fields = draft.payload.0;
        let fields = fields
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or_else(|| DbError::Task("an event payload is not a JSON object".into()))?;
        let kind = serde_json::to_string(draft.kind).map_err(|e| DbError::Task(e.to_string()))?;
        let mut text = String::with_capacity(fields.len() + kind.len() + 32);
        text.push_str("{\"event_id\":");
        text.push_str(&event_id.to_string());
        text.push_str(",\"type\":");
        text.push_str(&kind);
        if !fields.is_empty() {
            text.push(',');
            text.push_str(fields);
        }
        text.push('}');
        self.conn
            .prepare_cached(
                "INSERT INTO events (event_id, type, conversation_id, user_id, actor_id, payload, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                event_id,
                draft.kind,
                draft.conversation_id,
                draft.user_id,
                draft.actor_id,
                text,
                self.now
            ])?;
        *self.next_event_id += 1;
        self.events.push(Arc::new(CommittedEvent {
            event_id,
            kind: draft.kind,
            conversation_id: draft.conversation_id,
            user_id: draft.user_id,
            actor_id: draft.actor_id,
            message_id: draft.message_id,
            membership: draft.membership,
            frame: text.into(),
            created: std::time::Instant::now(),
        }));
        Ok(event_id)
    }
}

type Finisher = Box<dyn FnOnce(Result<(), DbError>) + Send>;

/// Runs a job's closure; says whether it succeeded and how to answer its caller.
type JobRun = Box<dyn FnOnce(&mut WriteCtx<'_>) -> (bool, Finisher) + Send>;

struct Job {
    run: JobRun,
    /// Makes every check before its first write (see [`Writer::enqueue_checked`]).
    checks_first: bool,
}

enum Command {
    Job(Job),
    /// Run the background step if anything awaits it.
    Nudge,
    /// Run the background step until nothing awaits it, then answer.
    CatchUp(oneshot::Sender<Result<(), DbError>>),
    Stop(oneshot::Sender<()>),
}

/// Counters the metrics endpoint reads.
#[derive(Debug)]
pub struct WriterStats {
    pub transactions: AtomicU64,
    pub jobs: AtomicU64,
    pub last_batch_size: AtomicU64,
    /// Jobs per committed transaction.
    pub batch_sizes: prometheus_client::metrics::histogram::Histogram,
    /// Items awaiting the background step (an estimate: 1 may mean "some").
    pub background_pending: AtomicU64,
    /// Transactions the background step ran.
    pub background_transactions: AtomicU64,
}

impl WriterStats {
    /// Every transaction run, the jobs' and the background step's: when this has
    /// not moved, the writer was idle.
    pub fn all_transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
            + self.background_transactions.load(Ordering::Relaxed)
    }
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            transactions: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
            last_batch_size: AtomicU64::new(0),
            batch_sizes: crate::metrics::batch_size_histogram(),
            background_pending: AtomicU64::new(0),
            background_transactions: AtomicU64::new(0),
        }
    }
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Command>,
    pub stats: Arc<WriterStats>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Writer {
    pub fn start(
        conn: Connection,
        on_commit: CommitHook,
        background: BackgroundStep,
    ) -> Result<Writer, DbError> {
        // AUTOINCREMENT's sequence remembers the highest id ever used, so ids are
        // never reused even after old events were pruned.
        let last_event_id: i64 = conn.query_row(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                        COALESCE((SELECT MAX(event_id) FROM events), 0))",
            [],
            |row| row.get(0),
        )?;
        let next_event_id = last_event_id + 1;
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("lanchat-writer".into())
            .spawn(move || {
                let mut background = Background {
                    step: background,
                    // Whatever the last run left is found by the first step.
                    pending: 1,
                    transactions: 0,
                };
                writer_loop(
                    conn,
                    receiver,
                    next_event_id,
                    on_commit,
                    &mut background,
                    &thread_stats,
                )
            })
            .map_err(|err| DbError::Task(err.to_string()))?;
        Ok(Writer {
            queue,
            stats,
            thread: Arc::new(std::sync::Mutex::new(Some(handle))),
        })
    }

    fn job<R, E, F>(f: F, checks_first: bool) -> (Job, oneshot::Receiver<Result<R, E>>)
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let run = Box::new(move |ctx: &mut WriteCtx<'_>| {
            let result = f(ctx);
            let ok = result.is_ok();
            let finish: Finisher = Box::new(move |commit| {
                let outcome = match commit {
                    Err(cause) if ok => Err(E::from(cause)),
                    _ => result,
                };
                // The caller may have gone away (request cancelled): nothing to do.
                let _ = reply.send(outcome);
            });
            (ok, finish)
        });
        (Job { run, checks_first }, answer)
    }

    /// Queues `f` and waits for its transaction to commit. `Ok` means durable.
    pub async fn run<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (job, answer) = Self::job(f, false);
        self.queue
            .send(Command::Job(job))
            .await
            .map_err(|_| E::from(DbError::WriterGone))?;
        answer.await.map_err(|_| E::from(DbError::WriterGone))?
    }

    /// Queues `f` now (keeping the caller's order in the writer's FIFO queue) and
    /// returns a future for its outcome, so one caller can pipeline many jobs.
    pub async fn enqueue<R, E, F>(
        &self,
        f: F,
    ) -> Result<impl std::future::Future<Output = Result<R, E>> + Send + 'static, E>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.queue_job(f, false).await
    }

    /// [`Writer::enqueue`] for a job that makes every check (and can fail) before
    /// its first write, like sending a message. It runs without a savepoint of its
    /// own: a savepoint copies every page the job touches, the largest cost of a
    /// message in a busy batch. A failure that wrote nothing needs no undoing. If
    /// such a job fails after writing all the same (an SQLite error, or a bug), its
    /// writes cannot be undone alone: the transaction is rolled back and the jobs
    /// that ran in it before fail with [`DbError::Busy`] (try again); nothing half
    /// done is ever committed.
    pub async fn enqueue_checked<R, E, F>(
        &self,
        f: F,
    ) -> Result<impl std::future::Future<Output = Result<R, E>> + Send + 'static, E>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.queue_job(f, true).await
    }

    async fn queue_job<R, E, F>(
        &self,
        f: F,
        checks_first: bool,
    ) -> Result<impl std::future::Future<Output = Result<R, E>> + Send + 'static, E>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (job, answer) = Self::job(f, checks_first);
        self.queue
            .send(Command::Job(job))
            .await
            .map_err(|_| E::from(DbError::WriterGone))?;
        Ok(async move { answer.await.map_err(|_| E::from(DbError::WriterGone))? })
    }

    /// Like [`Writer::run`], for the command line and other non-async callers.
    pub fn run_blocking<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (job, answer) = Self::job(f, false);
        self.queue
            .blocking_send(Command::Job(job))
            .map_err(|_| E::from(DbError::WriterGone))?;
        answer
            .blocking_recv()
            .map_err(|_| E::from(DbError::WriterGone))?
    }

    /// Has the background step run soon if anything awaits it; the server calls
    /// this periodically, so work left in a quiet moment is done within a period.
    pub fn nudge_background(&self) {
        if self.stats.background_pending.load(Ordering::Relaxed) > 0 {
            // A full queue means a busy writer: the next nudge will do.
            let _ = self.queue.try_send(Command::Nudge);
        }
    }

    /// Waits until the background step has done everything committed before
    /// this call (search calls it so that a message just sent can be found).
    pub async fn catch_up_background(&self) -> Result<(), DbError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Command::CatchUp(reply))
            .await
            .map_err(|_| DbError::WriterGone)?;
        answer.await.map_err(|_| DbError::WriterGone)?
    }

    /// Whether the writer thread is still taking jobs (for `/healthz`).
    pub fn is_alive(&self) -> bool {
        if self.queue.is_closed() {
            return false;
        }
        match self.thread.lock() {
            Ok(slot) => slot.as_ref().is_some_and(|handle| !handle.is_finished()),
            Err(_) => false,
        }
    }

    /// Commits everything queued so far, then stops the thread and closes the
    /// connection. Later jobs fail with `WriterGone`.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Command::Stop(done)).await.is_ok() {
            let _ = wait.await;
        }
        let handle = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Blocking variant of [`Writer::shutdown`] for the command line.
    pub fn shutdown_blocking(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.blocking_send(Command::Stop(done)).is_ok() {
            let _ = wait.blocking_recv();
        }
        let handle = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// The background step and how much work awaits it.
struct Background {
    step: BackgroundStep,
    pending: u64,
    transactions: u64,
}

/// What one turn of the writer loop took from the queue.
#[derive(Default)]
struct Intake {
    batch: Vec<Job>,
    nudged: bool,
    catch_up: Vec<oneshot::Sender<Result<(), DbError>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Intake {
    fn take(&mut self, command: Command) {
        match command {
            Command::Job(job) => self.batch.push(job),
            Command::Nudge => self.nudged = true,
            Command::CatchUp(reply) => self.catch_up.push(reply),
            Command::Stop(done) => self.stop = Some(done),
        }
    }
}

fn writer_loop(
    conn: Connection,
    mut receiver: mpsc::Receiver<Command>,
    mut next_event_id: i64,
    on_commit: CommitHook,
    background: &mut Background,
    stats: &WriterStats,
) {
    let mut intake = Intake {
        batch: Vec::with_capacity(MAX_BATCH),
        ..Intake::default()
    };
    stats
        .background_pending
        .store(background.pending, Ordering::Relaxed);
    while intake.stop.is_none() {
        match receiver.blocking_recv() {
            Some(command) => intake.take(command),
            None => break,
        }
        while intake.batch.len() < MAX_BATCH && intake.stop.is_none() {
            match receiver.try_recv() {
                Ok(command) => intake.take(command),
                Err(_) => break,
            }
        }
        if !intake.batch.is_empty() {
            background.pending += run_batch(
                &conn,
                &mut intake.batch,
                &mut next_event_id,
                &on_commit,
                stats,
            );
        }
        run_background(&conn, background, &mut intake);
        stats
            .background_pending
            .store(background.pending, Ordering::Relaxed);
        stats
            .background_transactions
            .store(background.transactions, Ordering::Relaxed);
    }
    // Refuse anything queued after the stop: their callers see WriterGone.
    receiver.close();
    drop(receiver);
    if let Err((_, err)) = conn.close() {
        tracing::error!(error = %err, "closing the database failed");
    }
    if let Some(done) = intake.stop {
        let _ = done.send(());
    }
}

/// Runs the background step when it is due: until done if someone waits for it,
/// once if nudged or if enough work piled up.
fn run_background(conn: &Connection, background: &mut Background, intake: &mut Intake) {
    let nudged = std::mem::take(&mut intake.nudged);
    if !intake.catch_up.is_empty() {
        let outcome = loop {
            match background_transaction(conn, background) {
                Ok(true) => continue,
                Ok(false) => break Ok(()),
                Err(err) => break Err(err),
            }
        };
        // On failure, the next nudge tries again.
        background.pending = u64::from(outcome.is_err());
        for reply in intake.catch_up.drain(..) {
            let answer = match &outcome {
                Ok(()) => Ok(()),
                Err(err) => Err(DbError::Task(err.to_string())),
            };
            let _ = reply.send(answer);
        }
    } else if background.pending >= BACKGROUND_AFTER || (nudged && background.pending > 0) {
        match background_transaction(conn, background) {
            // Any rest waits for the next nudge or pile-up: jobs come first.
            Ok(more) => background.pending = u64::from(more),
            Err(_) => background.pending = 1,
        }
    }
}

/// One background step in a transaction of its own.
fn background_transaction(conn: &Connection, background: &mut Background) -> Result<bool, DbError> {
    background.transactions += 1;
    let outcome = run_cached(conn, "BEGIN IMMEDIATE")
        .map_err(DbError::from)
        .and_then(|_| (background.step)(conn, BACKGROUND_STEP_LIMIT))
        .and_then(|more| {
            run_cached(conn, "COMMIT")?;
            Ok(more)
        });
    if let Err(err) = &outcome {
        tracing::warn!(error = %err, "the writer's background step failed; it will be retried");
        let _ = run_cached(conn, "ROLLBACK");
    }
    outcome
}

/// Runs a statement without parameters through the statement cache (the savepoint
/// statements run several times per batch; parsing them each time showed up).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

/// Runs one batch of jobs in one transaction; returns how many items the
/// committed jobs left for the background step.
fn run_batch(
    conn: &Connection,
    batch: &mut Vec<Job>,
    next_event_id: &mut i64,
    on_commit: &CommitHook,
    stats: &WriterStats,
) -> u64 {
    let batch_start_event_id = *next_event_id;
    let mut finishers: Vec<Finisher> = Vec::with_capacity(batch.len());
    let mut events: Vec<Arc<CommittedEvent>> = Vec::new();
    let mut before_commit: Vec<BeforeCommit> = Vec::new();
    let mut background_items = 0u64;

    if let Err(err) = run_cached(conn, "BEGIN IMMEDIATE") {
        tracing::error!(error = %err, "could not begin a write transaction");
        // Dropping the jobs drops their reply channels: callers get `WriterGone`.
        batch.clear();
        return 0;
    }

    let now = now_ms();
    let jobs = batch.len() as u64;
    let mut in_transaction = true;
    let begin_again = |conn: &Connection| {
        let _ = run_cached(conn, "ROLLBACK");
        match run_cached(conn, "BEGIN IMMEDIATE") {
            Ok(_) => true,
            Err(err) => {
                tracing::error!(error = %err, "could not begin a write transaction");
                false
            }
        }
    };
    for (index, job) in batch.drain(..).enumerate() {
        if !in_transaction {
            break; // dropped jobs: their callers get `WriterGone`
        }
        // The first job needs no savepoint: if it fails, rolling back the whole
        // transaction undoes exactly its changes. Nor do jobs that check first.
        let savepoint = index > 0 && !job.checks_first;
        let events_mark = events.len();
        let before_commit_mark = before_commit.len();
        let event_id_mark = *next_event_id;
        let changes_mark = conn.total_changes();
        if savepoint && run_cached(conn, "SAVEPOINT job").is_err() {
            continue;
        }
        let mut ctx = WriteCtx {
            conn,
            events: &mut events,
            before_commit: &mut before_commit,
            next_event_id,
            background_items: &mut background_items,
            now,
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (job.run)(&mut ctx)));
        let keep = matches!(outcome, Ok((true, _)));
        let wrote = conn.total_changes() != changes_mark;
        if savepoint {
            if !keep {
                let _ = run_cached(conn, "ROLLBACK TO job");
            }
            let _ = run_cached(conn, "RELEASE job");
        } else if !keep && wrote {
            if finishers.is_empty() {
                // Only this job's writes are in the transaction.
                in_transaction = begin_again(conn);
            } else {
                tracing::error!(
                    "a write job failed after writing: the jobs before it in its batch were rolled back too (their callers are told to try again)"
                );
                in_transaction = begin_again(conn);
                for finish in finishers.drain(..) {
                    finish(Err(DbError::Busy));
                }
                events.clear();
                before_commit.clear();
                *next_event_id = batch_start_event_id;
            }
        }
        if !keep {
            events.truncate(events_mark);
            before_commit.truncate(before_commit_mark);
            *next_event_id = (*next_event_id).min(event_id_mark);
        }
        match outcome {
            Ok((_, finish)) => finishers.push(finish),
            Err(_) => tracing::error!("a write job panicked; its changes were rolled back"),
        }
    }

    let committed = if in_transaction {
        before_commit
            .into_iter()
            .try_for_each(|work| work(conn))
            .and_then(|()| Ok(run_cached(conn, "COMMIT").map(|_| ())?))
    } else {
        Err(DbError::WriterGone)
    };
    stats.transactions.fetch_add(1, Ordering::Relaxed);
    stats.jobs.fetch_add(jobs, Ordering::Relaxed);
    stats.last_batch_size.store(jobs, Ordering::Relaxed);
    stats.batch_sizes.observe(jobs as f64);
    match committed {
        Ok(()) => {
            if !events.is_empty() {
                on_commit(events);
            }
            for finish in finishers {
                finish(Ok(()));
            }
            background_items
        }
        Err(err) => {
            tracing::error!(error = %err, "commit failed; the batch was rolled back");
            let _ = run_cached(conn, "ROLLBACK");
            *next_event_id = batch_start_event_id;
            for finish in finishers {
                finish(Err(DbError::Task(err.to_string())));
            }
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> Writer {
        writer_with(no_background())
    }

    fn writer_with(background: BackgroundStep) -> Writer {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE events (event_id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT,
                 conversation_id INTEGER, user_id INTEGER, actor_id INTEGER, payload TEXT,
                 created_at INTEGER);
             CREATE TABLE log (line TEXT NOT NULL);",
        )
        .expect("schema");
        Writer::start(conn, Box::new(|_| {}), background).expect("writer")
    }

    /// A background step that logs each run (in its transaction) and answers
    /// from `script` (then "nothing more"); returns how many times it ran.
    fn scripted_step(
        script: Vec<Result<bool, DbError>>,
    ) -> (BackgroundStep, Arc<std::sync::atomic::AtomicUsize>) {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = runs.clone();
        let mut script = std::collections::VecDeque::from(script);
        let step: BackgroundStep = Box::new(move |conn, limit| {
            assert_eq!(limit, BACKGROUND_STEP_LIMIT);
            counter.fetch_add(1, Ordering::SeqCst);
            log(conn, "step")?;
            script.pop_front().unwrap_or(Ok(false))
        });
        (step, runs)
    }

    /// Runs a job leaving `items` for the background step, and one more job after
    /// it, so that whatever the writer did in between is done.
    async fn leave(writer: &Writer, items: u64) {
        writer
            .run(move |ctx| {
                for _ in 0..items {
                    ctx.leave_background_work();
                }
                Ok::<(), DbError>(())
            })
            .await
            .expect("job");
        writer.run(|_| Ok::<(), DbError>(())).await.expect("job");
    }

    #[tokio::test]
    async fn the_background_step_waits_for_a_nudge_or_a_pile_of_work() {
        let (step, runs) = scripted_step(vec![]);
        let writer = writer_with(step);
        leave(&writer, 3).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0, "a little work waits");
        writer.nudge_background();
        leave(&writer, 0).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "a nudge runs it");
        writer.nudge_background();
        leave(&writer, 0).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "nothing left: no run");
        leave(&writer, BACKGROUND_AFTER).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "a pile runs it at once");
        assert_eq!(lines(&writer).await, ["step", "step"]);
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn catching_up_runs_the_step_until_done_and_reports_failure() {
        let (step, runs) = scripted_step(vec![
            Ok(true),
            Ok(true),
            Ok(false),
            Err(DbError::Task("index broken".into())),
        ]);
        let writer = writer_with(step);
        writer.catch_up_background().await.expect("caught up");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let failed = writer.catch_up_background().await;
        assert!(failed.is_err(), "the failure reaches the waiter");
        // The failed step's writes were rolled back; jobs go on; it is retried.
        assert_eq!(lines(&writer).await, ["step", "step", "step"]);
        writer.nudge_background();
        leave(&writer, 0).await;
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        assert_eq!(lines(&writer).await.len(), 4);
        writer.shutdown().await;
    }

    fn log(conn: &Connection, line: &str) -> Result<(), DbError> {
        conn.execute("INSERT INTO log (line) VALUES (?1)", [line])?;
        Ok(())
    }

    /// Occupies the writer until `release` is sent, so that the jobs queued
    /// meanwhile all land in the next batch, in order.
    async fn hold(writer: &Writer) -> std::sync::mpsc::Sender<()> {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel::<()>();
        let held = writer
            .enqueue(move |_| {
                let _ = started.send(());
                let _ = wait.recv();
                Ok::<(), DbError>(())
            })
            .await
            .expect("queued");
        tokio::spawn(held);
        running.await.expect("the writer took the job");
        release
    }

    type TestJob = Box<dyn FnOnce(&mut WriteCtx<'_>) -> Result<(), DbError> + Send>;

    /// Queues `jobs` so that they all run in one batch, in order (with
    /// `enqueue_checked` if `checks_first`), and returns their outcomes.
    async fn one_batch(
        writer: &Writer,
        checks_first: bool,
        jobs: Vec<TestJob>,
    ) -> Vec<Result<(), DbError>> {
        let release = hold(writer).await;
        let mut outcomes = Vec::new();
        for job in jobs {
            outcomes.push(writer.queue_job(job, checks_first).await.expect("queued"));
        }
        release.send(()).expect("release");
        futures_util::future::join_all(outcomes).await
    }

    /// Which of `jobs`, run in one batch with savepoints, succeeded.
    async fn succeeded(writer: &Writer, jobs: Vec<TestJob>) -> Vec<bool> {
        one_batch(writer, false, jobs)
            .await
            .iter()
            .map(Result::is_ok)
            .collect()
    }

    async fn lines(writer: &Writer) -> Vec<String> {
        writer
            .run(|ctx| {
                let mut stmt = ctx.conn().prepare("SELECT line FROM log ORDER BY rowid")?;
                let rows = stmt.query_map([], |row| row.get(0))?;
                Ok::<_, DbError>(rows.collect::<Result<Vec<String>, _>>()?)
            })
            .await
            .expect("read")
    }

    #[tokio::test]
    async fn before_commit_runs_after_the_batch_and_only_for_kept_jobs() {
        let writer = writer();
        let jobs = [("a", false), ("b", true), ("c", false)].map(|(name, fail)| {
            Box::new(move |ctx: &mut WriteCtx<'_>| {
                log(ctx.conn(), name)?;
                ctx.before_commit(move |conn| log(conn, &format!("{name} later")));
                if fail {
                    return Err(DbError::Task("refused".into()));
                }
                Ok(())
            }) as TestJob
        });
        let results = succeeded(&writer, jobs.into()).await;
        assert_eq!(results, [true, false, true]);
        // One batch: the deferred work after every job, in order; b's went with b.
        assert_eq!(lines(&writer).await, ["a", "c", "a later", "c later"]);
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn failing_before_commit_rolls_back_the_whole_batch() {
        let writer = writer();
        let jobs = ["a", "b"].map(|name| {
            Box::new(move |ctx: &mut WriteCtx<'_>| {
                log(ctx.conn(), name)?;
                ctx.before_commit(move |conn| {
                    if name == "b" {
                        return Err(DbError::Task("index failed".into()));
                    }
                    log(conn, "a later")
                });
                Ok(())
            }) as TestJob
        });
        for outcome in one_batch(&writer, false, jobs.into()).await {
            assert!(outcome.is_err(), "nothing of the batch committed");
        }
        assert!(lines(&writer).await.is_empty());
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn a_failing_first_job_rolls_back_alone() {
        let writer = writer();
        let jobs = [("a", true), ("b", false), ("c", true), ("d", false)].map(|(name, fail)| {
            Box::new(move |ctx: &mut WriteCtx<'_>| {
                log(ctx.conn(), name)?;
                ctx.emit(EventDraft {
                    kind: "test",
                    conversation_id: None,
                    user_id: None,
                    actor_id: None,
                    message_id: None,
                    payload: EventPayload::empty(),
                    membership: None,
                })?;
                if fail {
                    return Err(DbError::Task("refused".into()));
                }
                Ok(())
            }) as TestJob
        });
        let results = succeeded(&writer, jobs.into()).await;
        assert_eq!(results, [false, true, false, true]);
        assert_eq!(lines(&writer).await, ["b", "d"]);
        // Event ids of rolled-back jobs are reused: the log has no gaps.
        let ids = writer
            .run(|ctx| {
                let mut stmt = ctx
                    .conn()
                    .prepare("SELECT event_id FROM events ORDER BY 1")?;
                let rows = stmt.query_map([], |row| row.get(0))?;
                Ok::<_, DbError>(rows.collect::<Result<Vec<i64>, _>>()?)
            })
            .await
            .expect("read");
        assert_eq!(ids, [1, 2]);
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn jobs_that_check_first_run_without_savepoints_and_fail_safely() {
        let writer = writer();
        // (name, fails, writes before failing)
        let plan = [
            ("a", false, false),
            ("b", true, false), // refused before writing: nothing to undo
            ("c", false, false),
            ("d", true, true), // fails after writing: a, c and d roll back
            ("e", false, false),
        ];
        let jobs = plan.map(|(name, fail, write_first)| {
            Box::new(move |ctx: &mut WriteCtx<'_>| {
                if fail && !write_first {
                    return Err(DbError::Task("refused".into()));
                }
                log(ctx.conn(), name)?;
                if fail {
                    return Err(DbError::Task("failed late".into()));
                }
                Ok(())
            }) as TestJob
        });
        let results: Vec<Option<String>> = one_batch(&writer, true, jobs.into())
            .await
            .into_iter()
            .map(|r| r.err().map(|e| e.to_string()))
            .collect();
        assert_eq!(
            results[0].as_deref(),
            Some(DbError::Busy.to_string().as_str())
        );
        assert_eq!(
            results[1].as_deref(),
            Some("background task failed: refused")
        );
        assert_eq!(
            results[2].as_deref(),
            Some(DbError::Busy.to_string().as_str())
        );
        assert_eq!(
            results[3].as_deref(),
            Some("background task failed: failed late")
        );
        assert_eq!(results[4], None);
        assert_eq!(lines(&writer).await, ["e"]);
        writer.shutdown().await;
    }
}
