//! Access tokens (short-lived HS256 JWTs carrying the session id) and refresh
//! tokens (random, stored only as SHA-256 hashes).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: i64,
    /// The session id: checked against revocations on every request.
    pub sid: i64,
    pub iat: u64,
    pub exp: u64,
}

/// A device token: proof that a client signed in as `usr` before, so that other
/// clients' failed logins for that username do not slow it down. It grants no
/// access by itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct DeviceClaims {
    /// Always [`DEVICE_TOKEN_TYPE`]: an access token can never pass for one.
    typ: String,
    /// The (folded) username it was issued to.
    usr: String,
    /// The device's random id: its failures are counted under it.
    dev: String,
    iat: u64,
    exp: u64,
}

const DEVICE_TOKEN_TYPE: &str = "device";

/// How long a device token is valid (400 days: the longest a browser keeps a cookie).
pub const DEVICE_TOKEN_TTL_SECS: u64 = 400 * 86_400;

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl_secs: u64,
}

impl TokenKeys {
    pub fn new(secret: &[u8], access_ttl_secs: u64) -> TokenKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        // Tokens are short-lived; a small leeway covers clock steps on the server only.
        validation.leeway = 5;
        // `sub` is numeric here; serde enforces it, the spec-claim check wants a string.
        validation.set_required_spec_claims(&["exp"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl_secs,
        }
    }

    pub fn issue(&self, user_id: i64, session_id: i64) -> Result<String, String> {
        let now = unix_now();
        let claims = Claims {
            sub: user_id,
            sid: session_id,
            iat: now,
            exp: now + self.access_ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|err| err.to_string())
    }

    /// A device token for `username`, keeping the device's id when it had one.
    pub fn issue_device(&self, username: &str, device: Option<&str>) -> Result<String, String> {
        let now = unix_now();
        let claims = DeviceClaims {
            typ: DEVICE_TOKEN_TYPE.to_owned(),
            usr: username.to_owned(),
            dev: device.map_or_else(|| random_hex(16), str::to_owned),
            iat: now,
            exp: now + DEVICE_TOKEN_TTL_SECS,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|err| err.to_string())
    }

    /// The device id of a valid device token issued to `username`.
    pub fn device_of(&self, token: &str, username: &str) -> Option<String> {
        let claims = jsonwebtoken::decode::<DeviceClaims>(token, &self.decoding, &self.validation)
            .ok()?
            .claims;
        (claims.typ == DEVICE_TOKEN_TYPE && claims.usr == username).then_some(claims.dev)
    }

    /// Verifies signature, algorithm and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new random refresh token (256 bits, hex).
pub fn new_refresh_token() -> String {
    random_hex(32)
}

/// `bytes` random bytes as lower-case hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

/// What the database stores for a refresh token: its SHA-256, so a stolen
/// database does not hand out live sessions.
pub fn hash_refresh_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let a = Sha256::digest(a);
    let b = Sha256::digest(b);
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_foreign_secret() {
        let keys = TokenKeys::new(b"secret-one-secret-one-secret-one", 60);
        let token = keys.issue(7, 9).expect("issue");
        let claims = keys.verify(&token).expect("verify");
        assert_eq!((claims.sub, claims.sid), (7, 9));
        let other = TokenKeys::new(b"secret-two-secret-two-secret-two", 60);
        assert!(other.verify(&token).is_err());
        assert!(keys.verify(&format!("{token}x")).is_err());
    }

    #[test]
    fn device_tokens_are_per_username_and_not_access_tokens() {
        let keys = TokenKeys::new(b"secret-one-secret-one-secret-one", 60);
        let device = keys.issue_device("alice", None).expect("issue");
        let id = keys.device_of(&device, "alice").expect("valid for alice");
        assert_eq!(id.len(), 32);
        assert_eq!(keys.device_of(&device, "bob"), None);
        assert!(keys.verify(&device).is_err(), "not an access token");
        let access = keys.issue(7, 9).expect("issue");
        assert_eq!(keys.device_of(&access, "alice"), None);
        let again = keys.issue_device("alice", Some(&id)).expect("reissue");
        assert_eq!(keys.device_of(&again, "alice"), Some(id));
        let other = TokenKeys::new(b"secret-two-secret-two-secret-two", 60);
        assert_eq!(other.device_of(&device, "alice"), None);
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let a = new_refresh_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, new_refresh_token());
        assert_eq!(hash_refresh_token(&a), hash_refresh_token(&a));
        assert_ne!(hash_refresh_token(&a), a);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}
