//! Server settings an admin can change at run time (registration mode, server
//! name, ...), stored as JSON in the `settings` table and cached in memory.

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerSettings {
    pub registration: Registration,
    pub server_name: String,
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
        }
    }
}

/// The live settings: read on every registration, written by admins.
pub struct SettingsStore {
    current: RwLock<ServerSettings>,
}

impl SettingsStore {
    pub fn load(conn: &Connection, config: &Config) -> AppResult<SettingsStore> {
        let stored: Option<String> = conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [KEY], |row| {
                row.get(0)
            })
            .optional()?;
        let current = match stored {
            Some(json) => serde_json::from_str(&json)
                .map_err(|err| AppError::internal(format!("stored settings are damaged: {err}")))?,
            None => ServerSettings::defaults(config),
        };
        Ok(SettingsStore {
            current: RwLock::new(current),
        })
    }

    pub fn get(&self) -> ServerSettings {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the cached settings after `save` committed.
    pub fn set(&self, settings: ServerSettings) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = settings;
    }
}

pub fn save(ctx: &mut WriteCtx<'_>, settings: &ServerSettings) -> AppResult<()> {
    let json = serde_json::to_string(settings).map_err(AppError::internal)?;
    ctx.conn().execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![KEY, json],
    )?;
    Ok(())
}
