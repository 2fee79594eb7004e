//! The readers: a few threads of their own, each holding a read-only connection,
//! taking read jobs from one queue. Reads never run on tokio's blocking pool, so
//! whatever else fills that pool (file I/O, previews) cannot keep a sign-in or a
//! history page waiting for a thread, and at most [`QUEUED_PER_READER`] jobs per
//! reader wait in the queue: past that, callers wait for a place (as futures,
//! holding no thread) up to [`QUEUE_WAIT`], then get [`DbError::Busy`] (503).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::DbError;

/// Jobs that may wait in the queue, per reader thread.
pub const QUEUED_PER_READER: usize = 64;
/// How long a read may wait for a place in the queue before it is refused.
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce(&Connection) + Send>;

/// The queue of the reader threads; cheap to clone. The threads end when the
/// last clone is dropped.
#[derive(Clone)]
pub struct ReadPool {
    jobs: mpsc::Sender<(Job, OwnedSemaphorePermit)>,
    /// One permit per job running or queued: bounds the queue.
    places: Arc<Semaphore>,
    queue_wait: Duration,
}

impl ReadPool {
    /// Starts one reader thread per connection; a read waits at most
    /// `queue_wait` ([`QUEUE_WAIT`] in the server) for a place in the queue.
    pub fn start(connections: Vec<Connection>, queue_wait: Duration) -> Result<ReadPool, DbError> {
        let readers = connections.len().max(1);
        let (jobs, queue) = mpsc::channel::<(Job, OwnedSemaphorePermit)>();
        let queue = Arc::new(Mutex::new(queue));
        for (index, conn) in connections.into_iter().enumerate() {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("lanchat-read-{index}"))
                .spawn(move || reader(&conn, &queue))
                .map_err(|err| DbError::Task(format!("starting a reader thread: {err}")))?;
        }
        Ok(ReadPool {
            jobs,
            places: Arc::new(Semaphore::new(readers * (1 + QUEUED_PER_READER))),
            queue_wait,
        })
    }

    /// Runs `f` on a reader's connection and hands back its result. A caller that
    /// goes away while its job is queued (a cancelled request) costs nothing: the
    /// job is skipped.
    pub async fn read<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&Connection) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let place = tokio::time::timeout(self.queue_wait, self.places.clone().acquire_owned())
            .await
            .map_err(|_| DbError::Busy)?
            .map_err(|_| DbError::Busy)?;
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            if !answer.is_closed() {
                let _ = answer.send(f(conn));
            }
        });
        self.jobs
            .send((job, place))
            .map_err(|_| DbError::Task("the reader threads have stopped".into()))?;
        answered
            .await
            .map_err(|_| E::from(DbError::Task("a read failed".into())))?
    }
}

/// A reader thread: takes the next job, runs it, gives its place back.
fn reader(conn: &Connection, queue: &Mutex<mpsc::Receiver<(Job, OwnedSemaphorePermit)>>) {
    loop {
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((job, place)) = next else {
            return; // the pool was dropped
        };
        // A panicking read fails its own request (its answer is dropped), not
        // the thread.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(conn))).is_err() {
            tracing::error!("a database read panicked");
        }
        drop(place);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(readers: usize) -> ReadPool {
        let connections = (0..readers)
            .map(|_| Connection::open_in_memory().expect("open"))
            .collect();
        ReadPool::start(connections, Duration::from_millis(50)).expect("start")
    }

    fn one(conn: &Connection) -> Result<i64, DbError> {
        Ok(conn.query_row("SELECT 1", [], |row| row.get(0))?)
    }

    #[tokio::test]
    async fn reads_run_on_the_reader_threads() {
        let pool = pool(2);
        let name = pool
            .read(|_| Ok::<_, DbError>(std::thread::current().name().unwrap_or("").to_owned()))
            .await
            .expect("read");
        assert!(name.starts_with("lanchat-read-"), "{name}");
        assert_eq!(pool.read(one).await.expect("read"), 1);
    }

    #[tokio::test]
    async fn a_panicking_read_fails_alone() {
        let pool = pool(1);
        let failed = pool
            .read(|_| -> Result<(), DbError> { panic!("boom") })
            .await;
        assert!(matches!(failed, Err(DbError::Task(_))));
        assert_eq!(pool.read(one).await.expect("the thread lives on"), 1);
    }

    #[tokio::test]
    async fn the_queue_is_bounded() {
        let pool = pool(1);
        let places = 1 + QUEUED_PER_READER;
        // Hold the reader, then fill every place of the queue.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.read(move |_| {
                    let _ = hold.recv();
                    Ok::<_, DbError>(())
                })
                .await
            }
        });
        let mut queued = Vec::new();
        for _ in 1..places {
            queued.push(tokio::spawn({
                let pool = pool.clone();
                async move { pool.read(one).await }
            }));
        }
        // Wait until every place is taken.
        while pool.places.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = pool.read(one).await;
        assert!(matches!(refused, Err(DbError::Busy)), "{refused:?}");
        release.send(()).expect("release");
        blocker.await.expect("join").expect("read");
        for read in queued {
            assert_eq!(read.await.expect("join").expect("read"), 1);
        }
    }
}
