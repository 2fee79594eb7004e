//! The state every request handler shares.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::AuthState;
use crate::config::Config;
use crate::db::Db;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::settings::SettingsStore;
use crate::transfers::Transfers;

pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub auth: AuthState,
    pub hub: Hub,
    pub settings: SettingsStore,
    pub metrics: Metrics,
    pub data_dir: PathBuf,
    pub started_at: Instant,
    /// Uploads and exports in progress, per user.
    pub transfers: Transfers,
    /// HTTPS, unless `tls.mode = "off"`.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// The `.local` name advertised over mDNS, while it is.
    pub mdns_name: crate::mdns::NameSlot,
}

pub type SharedState = Arc<AppState>;
