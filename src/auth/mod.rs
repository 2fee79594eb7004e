//! Authentication: passwords, tokens, sessions, login throttling, and the
//! in-memory revocation view that makes a revoked session or a disabled user be
//! refused at once, without a database read per request.

pub mod password;
pub mod sessions;
pub mod throttle;
pub mod tokens;

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::config::Config;
use crate::error::AppError;

/// The authenticated caller of a request or WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: i64,
    pub session_id: i64,
}

pub struct AuthState {
    pub keys: tokens::TokenKeys,
    pub throttle: throttle::LoginThrottle,
    pub registrations: throttle::RegistrationThrottle,
    pub hasher: password::Hasher,
    pub refresh_ttl_ms: i64,
    revoked_sessions: RwLock<HashSet<i64>>,
    disabled_users: RwLock<HashSet<i64>>,
    /// The one-time setup token, present while no admin exists.
    setup_token: RwLock<Option<SetupToken>>,
}

/// The first-run setup token and when it stops being accepted.
#[derive(Debug, Clone)]
struct SetupToken {
    token: String,
    expires: Instant,
}

/// What a presented setup token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupCheck {
    Valid,
    Wrong,
    Expired,
    /// Setup is over: an admin exists.
    Done,
}

impl AuthState {
    /// Builds the state and loads current revocations from the database.
    pub fn load(conn: &Connection, secret: &[u8], config: &Config) -> Result<AuthState, AppError> {
        let access_ttl_ms = (config.auth.access_token_ttl_secs as i64) * 1000;
        let since = crate::db::now_ms() - access_ttl_ms - 60_000;
        let revoked: HashSet<i64> = conn
            .prepare("SELECT id FROM sessions WHERE revoked_at IS NOT NULL AND revoked_at > ?1")?
            .query_map([since], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let disabled: HashSet<i64> = conn
            .prepare("SELECT id FROM users WHERE disabled = 1")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let has_admin: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE is_admin = 1 AND disabled = 0)",
            [],
            |row| row.get(0),
        )?;
        Ok(AuthState {
            keys: tokens::TokenKeys::new(secret, config.auth.access_token_ttl_secs),
            throttle: throttle::LoginThrottle::new(throttle::LoginLimits {
                window: Duration::from_secs(config.auth.login_window_secs),
                free_failures: config.auth.login_max_failures_per_user,
                max_failures_per_address: config.auth.login_max_failures_per_address,
                max_delay: Duration::from_secs(config.auth.login_max_delay_secs.max(1)),
            }),
            registrations: throttle::RegistrationThrottle::new(
                Duration::from_secs(config.auth.register_window_secs),
                config.auth.register_max_per_address,
            ),
            hasher: password::Hasher::start(config.auth.password_hash_queue),
            refresh_ttl_ms: (config.auth.refresh_token_ttl_days as i64) * 86_400_000,
            revoked_sessions: RwLock::new(revoked),
            disabled_users: RwLock::new(disabled),
            setup_token: RwLock::new((!has_admin).then(|| SetupToken {
                token: tokens::random_hex(16),
                expires: Instant::now() + Duration::from_secs(config.auth.setup_token_ttl_secs),
            })),
        })
    }

    /// Verifies an access token and that its session and user are still valid.
    pub fn authenticate(&self, token: &str) -> Result<AuthUser, AppError> {
        let claims = self.keys.verify(token).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::ExpiredSignature => {
                    AppError::invalid_token("the access token has expired")
                }
                _ => AppError::invalid_token("the access token is not valid"),
            }
        })?;
        // Disabled first: disabling also revokes the sessions, and the client
        // should learn why (403 account_disabled) rather than try to refresh.
        if read(&self.disabled_users).contains(&claims.sub) {
            return Err(AppError::forbidden_code(
                "account_disabled",
                "this account is disabled",
            ));
        }
        if read(&self.revoked_sessions).contains(&claims.sid) {
            return Err(AppError::invalid_token("this session has been signed out"));
        }
        Ok(AuthUser {
            user_id: claims.sub,
            session_id: claims.sid,
        })
    }

    pub fn is_session_revoked(&self, session_id: i64) -> bool {
        read(&self.revoked_sessions).contains(&session_id)
    }

    pub fn is_user_disabled(&self, user_id: i64) -> bool {
        read(&self.disabled_users).contains(&user_id)
    }

    /// Record revocations after they were committed.
    pub fn mark_sessions_revoked(&self, session_ids: &[i64]) {
        let mut set = self
            .revoked_sessions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        set.extend(session_ids.iter().copied());
    }

    pub fn set_user_disabled(&self, user_id: i64, disabled: bool) {
        let mut set = self
            .disabled_users
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if disabled {
            set.insert(user_id);
        } else {
            set.remove(&user_id);
        }
    }

    /// The setup token while setup is possible (no admin yet), expired or not.
    pub fn setup_token(&self) -> Option<String> {
        read(&self.setup_token).as_ref().map(|s| s.token.clone())
    }

    /// Checks a presented setup token (in constant time) and its expiry.
    pub fn check_setup_token(&self, presented: &str) -> SetupCheck {
        match read(&self.setup_token).as_ref() {
            None => SetupCheck::Done,
            Some(expected)
                if !tokens::constant_time_eq(expected.token.as_bytes(), presented.as_bytes()) =>
            {
                SetupCheck::Wrong
            }
            Some(expected) if Instant::now() >= expected.expires => SetupCheck::Expired,
            Some(_) => SetupCheck::Valid,
        }
    }

    /// Called once an admin exists: setup is over for good.
    pub fn end_setup(&self) {
        *self.setup_token.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}
