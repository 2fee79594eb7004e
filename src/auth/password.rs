//! Argon2id password hashing. Both functions are CPU-heavy by design: async code
//! runs them through a [`Hasher`], never on an async thread.

use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::{mpsc, oneshot};

type HashJob = Box<dyn FnOnce() + Send>;

/// Why a hash did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The queue is full: the caller should answer 503 and have the client retry.
    #[error("too many passwords are being checked; try again in a moment")]
    Busy,
    #[error("no password hashing thread is running")]
    NoThread,
    #[error("password hashing failed")]
    Failed,
}

/// The hashing threads and their bounded queue. Argon2 takes ~19 MiB and a core
/// per hash: one long-lived thread per core bounds both, and the same few
/// threads reuse their allocator state (see also `main.rs`, which makes the
/// 19 MiB blocks go back to the OS after each hash). A burst of logins queues
/// here, up to `queue_depth` hashes; past that callers are refused at once
/// rather than left waiting behind a queue that only grows.
#[derive(Debug, Clone)]
pub struct Hasher {
    queue: mpsc::Sender<HashJob>,
}

impl Hasher {
    /// Starts one hashing thread per core.
    pub fn start(queue_depth: usize) -> Hasher {
        let (queue, receiver) = mpsc::channel::<HashJob>(queue_depth.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for n in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("lanchat-hash-{n}"))
                .spawn(move || hashing_thread(&receiver));
            if let Err(err) = spawned {
                tracing::error!(error = %err, "could not start a password hashing thread");
            }
        }
        // If no thread started, the last receiver goes with this and callers get
        // an error instead of waiting forever.
        drop(receiver);
        Hasher { queue }
    }

    /// Runs `work` (a [`hash`] or [`verify`]) on the hashing threads and waits for
    /// it, or fails at once with [`HashError::Busy`] when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (reply, answer) = oneshot::channel();
        let job: HashJob = Box::new(move || {
            let _ = reply.send(work());
        });
        self.queue.try_send(job).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => HashError::Busy,
            mpsc::error::TrySendError::Closed(_) => HashError::NoThread,
        })?;
        answer.await.map_err(|_| HashError::Failed)
    }
}

fn hashing_thread(receiver: &Mutex<mpsc::Receiver<HashJob>>) {
    loop {
        // The lock is held only while waiting for a job, not while hashing.
        let job = match receiver.lock() {
            Ok(mut receiver) => receiver.blocking_recv(),
            Err(_) => None,
        };
        let Some(job) = job else { return };
        // A panicking job drops its reply (the caller sees an error); the thread stays.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Hashes with Argon2id and a random salt into a PHC string.
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| err.to_string())
}

/// True when `password` matches the PHC string `stored`.
pub fn verify(stored: &str, password: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A valid hash of a random password, verified against when the username is
/// unknown so that both failures cost the same time (no user enumeration). Made
/// at its first use: call it on a hashing thread.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 16];
        rand::fill(&mut random[..]);
        hash(&hex::encode(random)).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_verify_and_differ() {
        let a = super::hash("correct horse").expect("hash");
        let b = super::hash("correct horse").expect("hash");
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salted");
        assert!(super::verify(&a, "correct horse"));
        assert!(!super::verify(&a, "wrong horse"));
        assert!(!super::verify("not a hash", "x"));
    }

    #[tokio::test]
    async fn runs_on_the_hashing_threads() {
        let hasher = super::Hasher::start(4);
        let thread = hasher
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("hashing thread");
        assert!(thread.is_some_and(|name| name.starts_with("lanchat-hash-")));
        let hashed = hasher.run(|| super::hash("pw")).await.expect("ran");
        assert!(super::verify(&hashed.expect("hash"), "pw"));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let hasher = super::Hasher::start(1);
        // Hold every thread, then fill the one queue place.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Arc::new(std::sync::Mutex::new(gate));
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let mut held = Vec::new();
        // One at a time: each job must have left the queue before the next comes.
        for _ in 0..threads {
            let (gate, started_tx, hasher) = (gate.clone(), started_tx.clone(), hasher.clone());
            held.push(tokio::spawn(async move {
                hasher
                    .run(move || {
                        let _ = started_tx.send(());
                        let _ = gate.lock().map(|g| g.recv());
                    })
                    .await
            }));
            started.recv().await.expect("a thread took a job");
        }
        let queued = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.run(|| 1).await }
        });
        while hasher.queue.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(hasher.run(|| 2).await, Err(super::HashError::Busy));
        for _ in 0..threads {
            let _ = release.send(());
        }
        assert_eq!(queued.await.expect("join"), Ok(1));
        for job in held {
            assert_eq!(job.await.expect("join"), Ok(()));
        }
    }
}
