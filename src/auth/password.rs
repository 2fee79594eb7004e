//! Argon2id password hashing. Both functions are CPU-heavy by design: call them
//! from `spawn_blocking`, never on an async thread.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

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
}
