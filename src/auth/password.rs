//! Argon2id password hashing. Both functions are CPU-heavy by design: async code
//! runs them through [`off_thread`], never on an async thread.

use std::sync::{Arc, Mutex, OnceLock};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::{mpsc, oneshot};

type HashJob = Box<dyn FnOnce() + Send>;

/// Hashes waiting for a thread; past this, callers wait (asynchronously) to queue.
const QUEUE_DEPTH: usize = 256;

/// The hashing threads' queue. Argon2 takes ~19 MiB and a core per hash: one
/// long-lived thread per core bounds both (a burst of logins queues here instead
/// of occupying blocking-pool threads), and the same few threads reuse their
/// allocator state. See also `main.rs`, which makes the 19 MiB blocks go back to
/// the OS after each hash.
fn hashing_queue() -> &'static mpsc::Sender<HashJob> {
    static QUEUE: OnceLock<mpsc::Sender<HashJob>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (queue, receiver) = mpsc::channel::<HashJob>(QUEUE_DEPTH);
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
        queue
    })
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

/// Runs `work` (a [`hash`] or [`verify`]) on the hashing threads and waits for it.
pub async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (reply, answer) = oneshot::channel();
    hashing_queue()
        .send(Box::new(move || {
            let _ = reply.send(work());
        }))
        .await
        .map_err(|_| "no password hashing thread is running".to_string())?;
    answer
        .await
        .map_err(|_| "password hashing failed".to_string())
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
/// unknown so that both failures cost the same time (no user enumeration).
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
    async fn off_thread_runs_on_the_hashing_threads() {
        let thread = super::off_thread(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("hashing thread");
        assert!(thread.is_some_and(|name| name.starts_with("lanchat-hash-")));
        let hashed = super::off_thread(|| super::hash("pw")).await.expect("ran");
        assert!(super::verify(&hashed.expect("hash"), "pw"));
    }
}
