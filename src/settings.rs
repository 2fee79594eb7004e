//! Server settings an admin can change at run time (registration mode, server
//! name, the attachment size limit, the per-user attachment quota), stored in the `settings` table and cached in
//! memory.
//!
//! Only the values an admin changed are stored (as a JSON object of overrides);
//! everything else follows the configuration, so a later change of the config
//! file still applies to the settings no admin touched.

use std::sync::RwLock;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::db::WriteCtx;
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Open,
    Invite,
    Closed,
}

/// The settings in force (overrides applied over the configuration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerSettings {
    pub registration: Registration,
    pub server_name: String,
    /// Largest attachment upload, in bytes (default `limits.max_attachment_bytes`).
    pub max_attachment_bytes: u64,
    /// Bytes of attachments one user may have stored, 0 for no quota (default
    /// `limits.attachment_quota_bytes`).
    pub attachment_quota_bytes: u64,
}

pub const SERVER_NAME_MAX: usize = 64;
pub const MIN_ATTACHMENT_BYTES: u64 = 1024;
pub const MAX_ATTACHMENT_BYTES: u64 = 1 << 40;

/// The values an admin set; `None` follows the configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attachment_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_quota_bytes: Option<u64>,
}

/// A change requested by an admin: absent fields stay, `Some(None)` goes back to
/// the configuration's default, `Some(Some(v))` sets `v`.
#[derive(Debug, Clone, Default)]
pub struct SettingsPatch {
    pub registration: Option<Option<Registration>>,
    pub server_name: Option<Option<String>>,
    pub max_attachment_bytes: Option<Option<u64>>,
    pub attachment_quota_bytes: Option<Option<u64>>,
}

const KEY: &str = "server";

impl ServerSettings {
    fn defaults(config: &Config) -> ServerSettings {
        let registration = match config.auth.registration.as_str() {
            "invite" => Registration::Invite,
            "closed" => Registration::Closed,
            _ => Registration::Open,
        };
        ServerSettings {
            registration,
            server_name: config.server.name.clone(),
            max_attachment_bytes: config.limits.max_attachment_bytes,
            attachment_quota_bytes: config.limits.attachment_quota_bytes,
        }
    }

    fn with(defaults: ServerSettings, overrides: &Overrides) -> ServerSettings {
        ServerSettings {
            registration: overrides.registration.unwrap_or(defaults.registration),
            server_name: overrides
                .server_name
                .clone()
                .unwrap_or(defaults.server_name),
            max_attachment_bytes: overrides
                .max_attachment_bytes
                .unwrap_or(defaults.max_attachment_bytes),
            attachment_quota_bytes: overrides
                .attachment_quota_bytes
                .unwrap_or(defaults.attachment_quota_bytes),
        }
    }
}

/// Checks and normalises a server name (trimmed, 1–64 characters, no control
/// characters).
pub fn validate_server_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    let len = name.chars().count();
    if len == 0 || len > SERVER_NAME_MAX {
        return Err(AppError::validation(
            "server_name",
            format!("a server name has 1 to {SERVER_NAME_MAX} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::validation(
            "server_name",
            "a server name cannot contain control characters",
        ));
    }
    Ok(name.to_owned())
}

pub fn validate_max_attachment_bytes(value: u64) -> AppResult<u64> {
    if !(MIN_ATTACHMENT_BYTES..=MAX_ATTACHMENT_BYTES).contains(&value) {
        return Err(AppError::validation(
            "max_attachment_bytes",
            format!("must be between {MIN_ATTACHMENT_BYTES} and {MAX_ATTACHMENT_BYTES} bytes"),
        ));
    }
    Ok(value)
}

/// A user's attachment quota: 0 (none) or at least one attachment's minimum.
pub fn validate_attachment_quota_bytes(value: u64) -> AppResult<u64> {
    if value != 0 && !(MIN_ATTACHMENT_BYTES..=MAX_ATTACHMENT_BYTES).contains(&value) {
        return Err(AppError::validation(
            "attachment_quota_bytes",
            format!(
                "must be 0 (no quota) or between {MIN_ATTACHMENT_BYTES} and {MAX_ATTACHMENT_BYTES} bytes"
            ),
        ));
    }
    Ok(value)
}

/// The live settings: read on every registration, written by admins.
pub struct SettingsStore {
    defaults: ServerSettings,
    current: RwLock<(Overrides, ServerSettings)>,
    /// Held across an admin's write and the cache update, so concurrent changes
    /// reach the cache in commit order.
    update: tokio::sync::Mutex<()>,
}

impl SettingsStore {
    pub fn load(conn: &Connection, config: &Config) -> AppResult<SettingsStore> {
        let defaults = ServerSettings::defaults(config);
        let overrides = load_overrides(conn)?;
        let current = ServerSettings::with(defaults.clone(), &overrides);
        Ok(SettingsStore {
            defaults,
            current: RwLock::new((overrides, current)),
            update: tokio::sync::Mutex::new(()),
        })
    }

    pub fn get(&self) -> ServerSettings {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Taken by whoever changes the settings, from before the write to after [`set`].
    ///
    /// [`set`]: SettingsStore::set
    pub async fn update_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.update.lock().await
    }

    pub fn overrides(&self) -> Overrides {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// The settings these overrides give.
    pub fn resolve(&self, overrides: &Overrides) -> ServerSettings {
        ServerSettings::with(self.defaults.clone(), overrides)
    }

    /// Replaces the cached settings after `save` committed.
    pub fn set(&self, overrides: Overrides) {
        let settings = self.resolve(&overrides);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (overrides, settings);
    }
}

pub fn load_overrides(conn: &Connection) -> AppResult<Overrides> {
    let stored: Option<String> = conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [KEY], |row| {
            row.get(0)
        })
        .optional()?;
    match stored {
        Some(json) => serde_json::from_str(&json)
            .map_err(|err| AppError::internal(format!("stored settings are damaged: {err}"))),
        None => Ok(Overrides::default()),
    }
}

/// Applies a patch to the stored overrides inside the write transaction (so two
/// admins' changes to different settings never undo each other) and returns the
/// new overrides.
pub fn apply_patch(ctx: &mut WriteCtx<'_>, patch: &SettingsPatch) -> AppResult<Overrides> {
    let mut overrides = load_overrides(ctx.conn())?;
    if let Some(value) = &patch.registration {
        overrides.registration = *value;
    }
    if let Some(value) = &patch.server_name {
        overrides.server_name = value.clone();
    }
    if let Some(value) = &patch.max_attachment_bytes {
        overrides.max_attachment_bytes = *value;
    }
    if let Some(value) = &patch.attachment_quota_bytes {
        overrides.attachment_quota_bytes = *value;
    }
    save(ctx, &overrides)?;
    Ok(overrides)
}

pub fn save(ctx: &mut WriteCtx<'_>, overrides: &Overrides) -> AppResult<()> {
    let json = serde_json::to_string(overrides).map_err(AppError::internal)?;
    ctx.conn().execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![KEY, json],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_fall_back_to_config() {
        let mut config = Config::default();
        config.limits.max_attachment_bytes = 5000;
        let defaults = ServerSettings::defaults(&config);
        let old_format: Overrides =
            serde_json::from_str(r#"{"registration":"closed","server_name":"Office"}"#)
                .expect("old stored format");
        let settings = ServerSettings::with(defaults, &old_format);
        assert_eq!(settings.registration, Registration::Closed);
        assert_eq!(settings.server_name, "Office");
        assert_eq!(settings.max_attachment_bytes, 5000);
        assert_eq!(
            serde_json::to_string(&Overrides::default()).expect("json"),
            "{}"
        );
    }

    #[test]
    fn validation() {
        assert_eq!(validate_server_name("  Office ").expect("ok"), "Office");
        assert!(validate_server_name("   ").is_err());
        assert!(validate_server_name(&"x".repeat(65)).is_err());
        assert!(validate_server_name("a\nb").is_err());
        assert!(validate_max_attachment_bytes(10).is_err());
        assert!(validate_max_attachment_bytes(1 << 20).is_ok());
        assert!(validate_attachment_quota_bytes(0).is_ok());
        assert!(validate_attachment_quota_bytes(10).is_err());
        assert!(validate_attachment_quota_bytes(1 << 30).is_ok());
    }
}
