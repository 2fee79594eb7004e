//! SQLite storage: one writer thread that group-commits queued jobs, and a pool
//! of reader threads, each with its read-only connection. Nothing here runs on
//! the async threads: reads go through the readers' queue ([`ReadPool`]), writes
//! through the writer's.

pub mod migrations;
pub mod reads;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use reads::ReadPool;
pub use writer::{
    BackgroundStep, CommittedEvent, EventDraft, EventPayload, MembershipChange, WriteCtx, Writer,
};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database is busy, try again")]
    Busy,
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("{0}")]
    Migration(String),
    #[error("background task failed: {0}")]
    Task(String),
}

pub const DB_FILE: &str = "lanchat.db";

/// How long a connection waits on a lock before giving up. Only the backup and the
/// writer ever take write locks, so waits are short; this bounds the worst case.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Pragmas for every connection. The writer uses WAL with `synchronous = NORMAL`
/// by default: a transaction is committed once its pages are in the WAL file, so
/// an acknowledged write survives a crash or kill of the lanchat process (the OS
/// still holds the file). Only a power cut or kernel crash before the next WAL
/// sync (at checkpoints) could lose the newest commits; `database.synchronous =
/// "full"` closes that window with an fsync per group commit, at the price of
/// that fsync's latency on every message (see docs/PERFORMANCE.md).
fn apply_pragmas(conn: &Connection, writer: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    if writer {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The server checkpoints from its own connection ([`Db::checkpoint`]), so
        // a commit never carries a checkpoint (copying the WAL into the main file
        // and two fsyncs). This is only the backstop, for the command line and for
        // a checkpointer that cannot keep up: ~256 MiB of WAL.
        conn.pragma_update(None, "wal_autocheckpoint", 65536)?;
        // After a burst, give the disk back: the WAL is cut to this size when it
        // starts over (it is reused, not shrunk, otherwise).
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    }
    conn.pragma_update(None, "cache_size", -16384)?; // 16 MiB per connection
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Makes every commit of this connection fsync the WAL (power-loss safe).
pub fn set_full_sync(conn: &Connection) -> Result<(), DbError> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Opens the read-write connection (migrations and the writer thread).
pub fn open_writer_connection(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    apply_pragmas(&conn, true)?;
    Ok(conn)
}

/// Opens a read-only connection.
fn open_read_connection(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    apply_pragmas(&conn, false)?;
    Ok(conn)
}

/// The database handle shared by the whole server.
#[derive(Clone)]
pub struct Db {
    pub path: PathBuf,
    reads: ReadPool,
    pub writer: Writer,
    /// A read-write connection used only to checkpoint the WAL (see [`Db::checkpoint`]).
    checkpointer: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens the database: migrations must already have been applied with
    /// [`migrations::migrate`] on a writer connection, which is then handed here.
    pub fn start(
        path: &Path,
        writer_conn: Connection,
        read_connections: u32,
        on_commit: writer::CommitHook,
        background: BackgroundStep,
    ) -> Result<Db, DbError> {
        let readers = (0..read_connections.max(1))
            .map(|_| open_read_connection(path))
            .collect::<Result<Vec<_>, _>>()?;
        let reads = ReadPool::start(readers, reads::QUEUE_WAIT)?;
        let checkpointer = Connection::open(path)?;
        apply_pragmas(&checkpointer, false)?;
        let writer = Writer::start(writer_conn, on_commit, background)?;
        Ok(Db {
            path: path.to_owned(),
            reads,
            writer,
            checkpointer: Arc::new(Mutex::new(checkpointer)),
        })
    }

    /// Copies committed WAL pages into the main database file, off the writer
    /// thread and without waiting for readers or the writer (`PASSIVE`): the
    /// writer starts the WAL over once a checkpoint has caught up. The server
    /// calls it in quiet moments (see [`DeferredSchedule`]).
    /// Returns (frames in the WAL, frames checkpointed).
    pub async fn checkpoint(&self) -> Result<(i64, i64), DbError> {
        let checkpointer = self.checkpointer.clone();
        tokio::task::spawn_blocking(move || {
            let conn = checkpointer.lock().unwrap_or_else(|p| p.into_inner());
            let (_busy, frames, done) =
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })?;
            Ok((frames, done))
        })
        .await
        .map_err(|err| DbError::Task(err.to_string()))?
    }

    /// Runs `f` on one of the reader threads' connections, in turn with every
    /// other read (see [`ReadPool::read`]).
    pub async fn read<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&Connection) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.reads.read(f).await
    }

    /// A fresh read-only connection outside the pool, for long jobs (backups, the
    /// command line's exports) that must not hold a reader thread.
    pub fn open_reader(&self) -> Result<Connection, DbError> {
        open_read_connection(&self.path)
    }

    /// A read on the current thread, on a connection of its own; for CLI commands
    /// and blocking contexts only.
    pub fn read_blocking<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&Connection) -> Result<R, E>,
        E: From<DbError>,
    {
        let conn = self.open_reader()?;
        f(&conn)
    }

    /// Checks that a read connection answers (for `/healthz`).
    pub async fn ping(&self) -> bool {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                .map_err(DbError::from)
        })
        .await
        .is_ok()
    }
}

/// When the server does the writer's deferred work: the WAL checkpoint and the
/// search index's background step. Both are left for quiet moments, a tick with
/// no commit: a checkpoint during a burst of messages fsyncs the WAL while the
/// writer appends to it, and the commits behind it waited milliseconds (a run
/// of 25 slow messages in P1). Under steady load they still run, every
/// `busy_every` ticks.
#[derive(Debug)]
pub struct DeferredSchedule {
    busy_every: u32,
    last_commits: u64,
    checkpointed_commits: u64,
    busy_ticks: u32,
}

/// What a tick of [`DeferredSchedule`] says to do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeferredWork {
    pub nudge_background: bool,
    pub checkpoint: bool,
}

impl DeferredSchedule {
    pub fn new(busy_every: u32) -> DeferredSchedule {
        DeferredSchedule {
            busy_every: busy_every.max(1),
            last_commits: 0,
            checkpointed_commits: 0,
            busy_ticks: 0,
        }
    }

    /// Called every tick with the writer's count of committed transactions.
    pub fn tick(&mut self, commits: u64) -> DeferredWork {
        let quiet = commits == self.last_commits;
        self.last_commits = commits;
        self.busy_ticks = if quiet { 0 } else { self.busy_ticks + 1 };
        let overdue = self.busy_ticks >= self.busy_every;
        if overdue {
            self.busy_ticks = 0;
        }
        let checkpoint = (quiet || overdue) && commits != self.checkpointed_commits;
        if checkpoint {
            self.checkpointed_commits = commits;
        }
        DeferredWork {
            nudge_background: quiet || overdue,
            checkpoint,
        }
    }
}

/// Milliseconds since the Unix epoch: the contract's timestamp unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_work_waits_for_a_quiet_tick_or_is_overdue() {
        let mut schedule = DeferredSchedule::new(3);
        let none = DeferredWork::default();
        let both = DeferredWork {
            nudge_background: true,
            checkpoint: true,
        };
        let nudge_only = DeferredWork {
            nudge_background: true,
            checkpoint: false,
        };
        // Nothing committed yet: nothing to checkpoint.
        assert_eq!(schedule.tick(0), nudge_only);
        // A burst: wait while commits go on...
        assert_eq!(schedule.tick(10), none);
        assert_eq!(schedule.tick(20), none);
        // ...until the first quiet tick.
        assert_eq!(schedule.tick(20), both);
        assert_eq!(schedule.tick(20), nudge_only, "already checkpointed");
        // Steady load: every third busy tick anyway.
        assert_eq!(schedule.tick(30), none);
        assert_eq!(schedule.tick(40), none);
        assert_eq!(schedule.tick(50), both);
        assert_eq!(schedule.tick(60), none);
    }

    #[tokio::test]
    async fn checkpoint_copies_the_wal_off_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(DB_FILE);
        let mut conn = open_writer_connection(&path).expect("open");
        migrations::migrate(&mut conn).expect("migrate");
        let db =
            Db::start(&path, conn, 1, Box::new(|_| {}), writer::no_background()).expect("start");
        db.writer
            .run(|ctx| {
                ctx.conn().execute(
                    "INSERT INTO users (username, display_name, password_hash, created_at)
                     VALUES ('ann', 'Ann', 'x', 0)",
                    [],
                )?;
                Ok::<(), DbError>(())
            })
            .await
            .expect("write");
        let (frames, done) = db.checkpoint().await.expect("checkpoint");
        assert!(frames > 0, "the commit is in the WAL");
        assert_eq!(done, frames, "nothing held it back");
        db.writer.shutdown().await;
    }
}
