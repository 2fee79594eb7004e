//! Settings, layered highest first: command-line flags, `LANCHAT_SECTION_KEY`
//! environment variables, the TOML config file, built-in defaults. Unknown keys in
//! the file or the environment are reported, never silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const ENV_PREFIX: &str = "LANCHAT_";
/// Environment variables with the prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &["LANCHAT_CONFIG"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: String, message: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub events: EventsConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub backup: BackupConfig,
    pub connections: ConnectionsConfig,
    pub tls: TlsConfig,
    pub mdns: MdnsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// Where the database, the JWT secret and attachments live.
    pub data_dir: PathBuf,
    /// Name shown in the web client until an admin changes it.
    pub name: String,
    /// Read-only SQLite connections in the pool.
    pub read_connections: u32,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DatabaseConfig {
    /// "normal": an acknowledged write survives a crash of the process; "full":
    /// it also survives a power cut (one fsync per group commit).
    pub synchronous: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            synchronous: "normal".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AuthConfig {
    /// Lifetime of access tokens (JWT), in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a session's refresh token, in days (renewed at each refresh).
    pub refresh_token_ttl_days: u64,
    /// Registration mode on a new server: "open", "invite" or "closed". The admin
    /// setting, once changed, takes precedence.
    pub registration: String,
    /// Failed logins for one username within the window before 429.
    pub login_max_failures_per_user: u32,
    /// Failed logins from one client address within the window before 429.
    pub login_max_failures_per_address: u32,
    /// The throttling window, in seconds.
    pub login_window_secs: u64,
    /// The longest delay between login attempts for one username, in seconds.
    pub login_max_delay_secs: u64,
    /// Registration attempts from one client address within the window.
    pub register_max_per_address: u32,
    /// The registration throttling window, in seconds.
    pub register_window_secs: u64,
    /// Password hashes waiting for a hashing thread before requests get 503.
    pub password_hash_queue: usize,
    /// How long the first-run setup token printed at start-up is valid, in seconds.
    pub setup_token_ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LimitsConfig {
    pub max_json_bytes: u64,
    pub max_attachment_bytes: u64,
    pub max_message_chars: usize,
    pub max_group_members: usize,
    pub max_ws_frame_bytes: usize,
    /// Outbound frames queued per WebSocket before the slow consumer is closed (1013).
    pub ws_outbound_queue: usize,
    /// Inbound frames per second a WebSocket may send (burst of twice that).
    pub ws_frames_per_sec: u32,
    /// Open WebSockets per user.
    pub max_connections_per_user: usize,
    /// Bytes of attachments one user may have stored (0: no quota); admins can
    /// change it at run time.
    pub attachment_quota_bytes: u64,
    /// Uploads are refused (507) while the data directory's disk has less free
    /// space than this.
    pub min_free_disk_bytes: u64,
    /// Uploads one user may have in progress at once (429 past it).
    pub max_uploads_per_user: usize,
    /// Conversation exports one user may be downloading at once (429 past it).
    pub max_exports_per_user: usize,
    /// An upload must send at least this many bytes per second on average over
    /// every `upload_rate_window_secs` (408 otherwise; 0 turns it off).
    pub upload_min_bytes_per_sec: u64,
    pub upload_rate_window_secs: u64,
    /// Largest image, in pixels, that the server decodes to make a preview;
    /// larger ones are shown as they are.
    pub thumbnail_max_pixels: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EventsConfig {
    /// Replay keeps at least this many of the newest events...
    pub retention_count: u64,
    /// ...and everything younger than this many days.
    pub retention_days: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LogConfig {
    /// A tracing filter: "info", "debug", "lanchat=debug,warp=info"...
    pub level: String,
    /// "text" or "json".
    pub format: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MetricsConfig {
    /// Who may read /metrics: "loopback", "admins", "anyone" or "off".
    pub access: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BackupConfig {
    /// Scheduled backup interval such as "24h" or "30m"; empty disables it.
    pub every: String,
    /// Where scheduled backups go; empty means `<data_dir>/backups`.
    pub dir: String,
    /// Scheduled backups kept; older ones are deleted.
    pub keep: u32,
}

/// How connections are accepted and how long a client may keep one without
/// making progress (src/net).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ConnectionsConfig {
    /// Open connections (HTTP, HTTPS and WebSockets together, TLS handshakes
    /// included); further clients wait in the listen queue.
    pub max_open: u32,
    /// Seconds a client has to send a request's headers once it has started.
    pub header_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open between requests.
    pub idle_timeout_secs: u64,
    /// Seconds a client has to complete the TLS handshake (and to send its first
    /// byte).
    pub tls_handshake_timeout_secs: u64,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            max_open: 20_000,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            tls_handshake_timeout_secs: 5,
        }
    }
}

/// HTTPS (src/tls).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TlsConfig {
    /// "auto": a local certificate authority in the data directory issues the
    /// server's certificate; "files": `cert_file` and `key_file`; "off".
    pub mode: String,
    /// PEM certificate chain, leaf first (mode "files").
    pub cert_file: String,
    /// PEM private key (mode "files").
    pub key_file: String,
    /// Plain HTTP redirects to HTTPS, except the trust page, the CA and /healthz.
    pub require: bool,
    /// More DNS names or addresses the certificate covers (mode "auto").
    pub names: Vec<String>,
    /// Lifetime of an issued server certificate, in days (mode "auto").
    pub cert_days: u32,
    /// Re-issue this many days before the certificate expires (mode "auto").
    pub renew_days: u32,
    /// How often addresses, expiry and the files are checked, in seconds.
    pub check_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            mode: "auto".into(),
            cert_file: String::new(),
            key_file: String::new(),
            require: false,
            names: Vec::new(),
            cert_days: 397,
            renew_days: 30,
            check_secs: 60,
        }
    }
}

/// Multicast DNS: the server's `<name>.local` (src/mdns.rs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MdnsConfig {
    pub enabled: bool,
    /// The host name to advertise, without `.local`.
    pub name: String,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig {
            enabled: true,
            name: "lanchat".into(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8080".into(),
            data_dir: PathBuf::from("./lanchat-data"),
            name: "lanchat".into(),
            read_connections: 4,
            shutdown_grace_secs: 10,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_days: 30,
            registration: "open".into(),
            login_max_failures_per_user: 5,
            login_max_failures_per_address: 20,
            login_window_secs: 15 * 60,
            login_max_delay_secs: 300,
            register_max_per_address: 10,
            register_window_secs: 3600,
            password_hash_queue: 64,
            setup_token_ttl_secs: 3600,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_json_bytes: 1024 * 1024,
            max_attachment_bytes: 100 * 1024 * 1024,
            max_message_chars: 16_000,
            max_group_members: 1_000,
            max_ws_frame_bytes: 64 * 1024,
            ws_outbound_queue: 1024,
            ws_frames_per_sec: 50,
            max_connections_per_user: 32,
            attachment_quota_bytes: 5 * 1024 * 1024 * 1024,
            min_free_disk_bytes: 1024 * 1024 * 1024,
            max_uploads_per_user: 4,
            max_exports_per_user: 2,
            upload_min_bytes_per_sec: 1024,
            upload_rate_window_secs: 30,
            thumbnail_max_pixels: 50_000_000,
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention_count: 10_000,
            retention_days: 7,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            access: "loopback".into(),
        }
    }
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            every: String::new(),
            dir: String::new(),
            keep: 7,
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers in force.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
}

/// A loaded configuration and the warnings met while loading it (unknown keys),
/// to be logged once logging is set up.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads from the optional file, the process environment and the overrides.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Loaded, ConfigError> {
        Self::load_from(file, std::env::vars(), overrides)
    }

    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|err| ConfigError::Parse {
                        path: path.to_owned(),
                        message: err.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let known =
            toml::Table::try_from(Config::default()).map_err(|err| ConfigError::Invalid {
                key: "defaults".into(),
                message: err.to_string(),
            })?;
        apply_env(&mut table, &known, env, &mut warnings);

        let mut config: Config = {
            let mut unknown = Vec::new();
            let config = serde_ignored::deserialize(toml::Value::Table(table), |path| {
                unknown.push(path.to_string())
            })
            .map_err(|err: toml::de::Error| ConfigError::Invalid {
                key: "config".into(),
                message: err.to_string(),
            })?;
            for key in unknown {
                warnings.push(format!("unknown config key `{key}` ignored"));
            }
            config
        };
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir = dir.clone();
        }
        if let Some(listen) = &overrides.listen {
            config.server.listen = listen.clone();
        }
        config.validate()?;
        Ok(Loaded { config, warnings })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        };
        self.listen_addr()?;
        if !["open", "invite", "closed"].contains(&self.auth.registration.as_str()) {
            return Err(invalid(
                "auth.registration",
                "must be \"open\", \"invite\" or \"closed\"",
            ));
        }
        if !["normal", "full"].contains(&self.database.synchronous.as_str()) {
            return Err(invalid(
                "database.synchronous",
                "must be \"normal\" or \"full\"",
            ));
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err(invalid("log.format", "must be \"text\" or \"json\""));
        }
        if !["loopback", "admins", "anyone", "off"].contains(&self.metrics.access.as_str()) {
            return Err(invalid(
                "metrics.access",
                "must be \"loopback\", \"admins\", \"anyone\" or \"off\"",
            ));
        }
        if self.auth.access_token_ttl_secs < 10 {
            return Err(invalid("auth.access_token_ttl_secs", "must be at least 10"));
        }
        if self.limits.ws_outbound_queue < 8 {
            return Err(invalid("limits.ws_outbound_queue", "must be at least 8"));
        }
        if self.limits.max_uploads_per_user == 0 {
            return Err(invalid("limits.max_uploads_per_user", "must be at least 1"));
        }
        if self.limits.max_exports_per_user == 0 {
            return Err(invalid("limits.max_exports_per_user", "must be at least 1"));
        }
        if !self.backup.every.is_empty() {
            parse_duration(&self.backup.every).map_err(|m| invalid("backup.every", &m))?;
        }
        self.validate_network()?;
        Ok(())
    }

    /// The `connections`, `tls` and `mdns` sections.
    fn validate_network(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        };
        let c = &self.connections;
        if c.max_open < 16 {
            return Err(invalid("connections.max_open", "must be at least 16"));
        }
        for (key, value) in [
            ("connections.header_timeout_secs", c.header_timeout_secs),
            ("connections.idle_timeout_secs", c.idle_timeout_secs),
            (
                "connections.tls_handshake_timeout_secs",
                c.tls_handshake_timeout_secs,
            ),
            ("tls.check_secs", self.tls.check_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let tls = &self.tls;
        match tls.mode.as_str() {
            "auto" | "off" => {}
            "files" => {
                if tls.cert_file.is_empty() || tls.key_file.is_empty() {
                    return Err(invalid(
                        "tls.mode",
                        "\"files\" needs tls.cert_file and tls.key_file",
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    "tls.mode",
                    "must be \"auto\", \"files\" or \"off\"",
                ));
            }
        }
        if tls.require && tls.mode == "off" {
            return Err(invalid(
                "tls.require",
                "needs tls.mode \"auto\" or \"files\"",
            ));
        }
        if tls.cert_days == 0 || tls.cert_days > 825 {
            return Err(invalid(
                "tls.cert_days",
                "must be 1 to 825 (Apple refuses longer; 397 is accepted everywhere)",
            ));
        }
        let name = self.mdns.name.trim_end_matches('.');
        let name = name.strip_suffix(".local").unwrap_or(name);
        let label_ok = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !label_ok {
            return Err(invalid(
                "mdns.name",
                "must be one DNS label: letters, digits and inner hyphens, at most 63",
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "server.listen".into(),
                message: format!("`{}` is not ADDRESS:PORT", self.server.listen),
            })
    }
}

/// Overlays `LANCHAT_SECTION_KEY=value` variables onto the file's table. A value is
/// read as a TOML literal when the key is not a string setting, so numbers and
/// booleans work unquoted.
fn apply_env(
    table: &mut toml::Table,
    known: &toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    warnings: &mut Vec<String>,
) {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_KEYS.contains(&name.as_str()) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_') else {
            warnings.push(format!("environment variable {name} is not a config key"));
            continue;
        };
        let Some(default) = known
            .get(section)
            .and_then(|s| s.as_table())
            .and_then(|s| s.get(key))
        else {
            warnings.push(format!("environment variable {name} is not a config key"));
            continue;
        };
        let value = if default.is_str() {
            toml::Value::String(raw)
        } else {
            match format!("v = {raw}").parse::<toml::Table>() {
                Ok(mut parsed) => parsed.remove("v").unwrap_or(toml::Value::String(raw)),
                Err(_) => toml::Value::String(raw),
            }
        };
        let section_table = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(section_table) = section_table.as_table_mut() {
            section_table.insert(key.to_owned(), value);
        }
    }
}

/// Parses "90s", "30m", "24h", "7d" into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30m, 24h or 7d"))?;
    let factor = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}` has an unknown unit (use s, m, h or d)")),
    };
    if number == 0 {
        return Err("a duration must be more than zero".into());
    }
    Ok(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_flags_over_env_over_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:9000\"\nname = \"Office\"\n[limits]\nmax_group_members = 50\n",
        )
        .expect("write");
        let loaded = Config::load_from(
            Some(&file),
            env(&[
                ("LANCHAT_LIMITS_MAX_GROUP_MEMBERS", "70"),
                ("LANCHAT_SERVER_NAME", "123"),
            ]),
            &Overrides {
                listen: Some("127.0.0.1:9100".into()),
                ..Default::default()
            },
        )
        .expect("load");
        assert_eq!(loaded.config.server.listen, "127.0.0.1:9100");
        assert_eq!(loaded.config.server.name, "123");
        assert_eq!(loaded.config.limits.max_group_members, 70);
        assert_eq!(loaded.config.auth.access_token_ttl_secs, 900);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn reports_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "[server]\nlisten_port = 1\n[nonsense]\nx = 1\n").expect("write");
        let loaded = Config::load_from(
            Some(&file),
            env(&[("LANCHAT_SERVER_NOPE", "1")]),
            &Overrides::default(),
        )
        .expect("load");
        let all = loaded.warnings.join("\n");
        assert!(all.contains("server.listen_port"), "{all}");
        assert!(all.contains("nonsense"), "{all}");
        assert!(all.contains("LANCHAT_SERVER_NOPE"), "{all}");
    }

    #[test]
    fn rejects_bad_values() {
        let err = Config::load_from(
            None,
            env(&[("LANCHAT_AUTH_REGISTRATION", "sometimes")]),
            &Overrides::default(),
        )
        .expect_err("invalid");
        assert!(err.to_string().contains("auth.registration"));
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert!(parse_duration("5x").is_err());
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// `config.example.toml` documents every key with its default: it must parse
    /// without warnings into exactly the defaults.
    #[test]
    fn example_config_lists_every_key_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let loaded = Config::load_from(Some(&path), Vec::new(), &Overrides::default())
            .expect("example loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.config, Config::default());
        let text = std::fs::read_to_string(&path).expect("read");
        let table: toml::Table = text.parse().expect("toml");
        let defaults = toml::Table::try_from(Config::default()).expect("defaults");
        for (section, keys) in &defaults {
            let keys = keys.as_table().expect("section");
            for key in keys.keys() {
                assert!(
                    table.get(section).and_then(|s| s.get(key)).is_some(),
                    "config.example.toml lacks {section}.{key}"
                );
            }
        }
    }
}
