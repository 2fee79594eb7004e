//! HTTPS. The certificate comes from the local CA (`tls.mode = "auto"`, see
//! [`ca`]) or from files (`"files"`, see [`files`]); it is served through a
//! resolver that swaps it atomically, so a re-issue or reload never touches an
//! open connection. [`Tls::refresh`] runs every `tls.check_secs`.

pub mod ca;
pub mod files;
pub mod names;
pub mod profile;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use crate::config::Config;
use ca::{CaPublic, LocalCa};
use files::{FilePaths, Stamp};
use names::Names;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Invalid(String),
}

impl TlsError {
    pub fn file(path: &Path, message: impl std::fmt::Display) -> TlsError {
        TlsError::File {
            path: path.to_owned(),
            message: message.to_string(),
        }
    }
}

/// The certificate served right now, whatever name the client asked for (an
/// unknown or missing SNI gets it too).
#[derive(Debug)]
struct CurrentCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

enum Source {
    Auto {
        ca: Box<LocalCa>,
        extra: Vec<String>,
        cert_days: u32,
        renew_days: u32,
        /// The names the current certificate was issued for (before the CA's
        /// constraints), to notice when they change.
        asked: Mutex<Names>,
        /// The name mDNS got (it may differ from the configured one).
        mdns_name: Mutex<Option<String>>,
    },
    Files {
        paths: FilePaths,
        stamp: Mutex<Stamp>,
    },
}

/// What the running server knows about its certificate, for the announcement,
/// `/healthz` and the trust page.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub not_after: OffsetDateTime,
    pub names: Names,
}

pub struct Tls {
    current: Arc<CurrentCert>,
    server_config: Arc<rustls::ServerConfig>,
    source: Source,
    summary: Mutex<CertSummary>,
    /// Whether plain HTTP redirects to HTTPS.
    pub require: bool,
}

/// The files of `tls.mode = "files"`, read and checked before anything is
/// written: a server that cannot serve its certificate does not start.
pub fn load_files(config: &Config) -> Result<Option<(FilePaths, files::Loaded)>, TlsError> {
    if config.tls.mode != "files" {
        return Ok(None);
    }
    let paths = FilePaths {
        cert: PathBuf::from(&config.tls.cert_file),
        key: PathBuf::from(&config.tls.key_file),
    };
    let loaded = paths.load()?;
    Ok(Some((paths, loaded)))
}

impl Tls {
    /// Sets HTTPS up as configured: `None` when `tls.mode = "off"`. `files`
    /// comes from [`load_files`].
    pub fn start(
        config: &Config,
        data_dir: &Path,
        files: Option<(FilePaths, files::Loaded)>,
    ) -> Result<Option<Arc<Tls>>, TlsError> {
        let (source, key, summary) = match (config.tls.mode.as_str(), files) {
            ("off", _) => return Ok(None),
            (_, Some((paths, loaded))) => {
                let summary = CertSummary {
                    not_after: loaded.not_after,
                    names: leaf_names(&loaded.key),
                };
                let source = Source::Files {
                    paths,
                    stamp: Mutex::new(loaded.stamp),
                };
                (source, loaded.key, summary)
            }
            _ => {
                let mdns_name = config
                    .mdns
                    .enabled
                    .then(|| crate::mdns::host_name(&config.mdns.name));
                let asked = names::current(mdns_name.as_deref(), &config.tls.names);
                let (ca, created) = LocalCa::load_or_create(data_dir, &config.server.name, &asked)?;
                if created {
                    tracing::info!(fingerprint = %ca.public.fingerprint, "made a new local certificate authority");
                }
                let issued = ca.issue(&asked, config.tls.cert_days)?;
                warn_refused(&issued.refused);
                let summary = CertSummary {
                    not_after: issued.not_after,
                    names: issued.names,
                };
                let source = Source::Auto {
                    ca: Box::new(ca),
                    extra: config.tls.names.clone(),
                    cert_days: config.tls.cert_days,
                    renew_days: config.tls.renew_days,
                    asked: Mutex::new(asked),
                    mdns_name: Mutex::new(mdns_name),
                };
                (source, issued.key, summary)
            }
        };
        let current = Arc::new(CurrentCert(ArcSwap::new(key)));
        // ring builds with a plain C compiler for every target we ship (static
        // glibc, aarch64, Windows); it has no post-quantum key exchange, which
        // rustls flags as deprecated (docs/TLS.md).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // HTTP/1.1 only: WebSockets upgrade from it, and the connection layer's
        // timeouts are per HTTP/1.1 request.
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Session tickets let returning clients resume without a full handshake.
        server_config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        Ok(Some(Arc::new(Tls {
            current,
            server_config: Arc::new(server_config),
            source,
            summary: Mutex::new(summary),
            require: config.tls.require,
        })))
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config.clone()
    }

    /// The local CA, in mode "auto".
    pub fn ca(&self) -> Option<&CaPublic> {
        match &self.source {
            Source::Auto { ca, .. } => Some(&ca.public),
            Source::Files { .. } => None,
        }
    }

    pub fn ca_key_path(&self) -> Option<&Path> {
        match &self.source {
            Source::Auto { ca, .. } => Some(&ca.key_path),
            Source::Files { .. } => None,
        }
    }

    pub fn mode(&self) -> &'static str {
        match &self.source {
            Source::Auto { .. } => "auto",
            Source::Files { .. } => "files",
        }
    }

    pub fn summary(&self) -> CertSummary {
        lock(&self.summary).clone()
    }

    /// The certificate being served (its leaf first).
    pub fn current_chain(&self) -> Vec<Vec<u8>> {
        self.current
            .0
            .load()
            .cert
            .iter()
            .map(|c| c.to_vec())
            .collect()
    }

    /// Records the name mDNS actually got (after a conflict it differs from the
    /// configured one); the next [`Tls::refresh`] covers it.
    pub fn set_mdns_name(&self, name: &str) {
        if let Source::Auto { mdns_name, .. } = &self.source {
            *lock(mdns_name) = Some(name.to_owned());
        }
    }

    /// Mode "auto": issues a new certificate when the names or addresses changed
    /// or expiry is near. Mode "files": reloads changed files (a broken new
    /// pair is logged and the served one kept). Blocking (key generation, file
    /// reads): run it off the async threads. Returns whether it swapped.
    pub fn refresh(&self) -> bool {
        match &self.source {
            Source::Auto {
                ca,
                extra,
                cert_days,
                renew_days,
                asked,
                mdns_name,
            } => {
                let mdns = lock(mdns_name).clone();
                let wanted = names::current(mdns.as_deref(), extra);
                let renew_at = lock(&self.summary).not_after
                    - Duration::from_secs(u64::from(*renew_days) * 86_400);
                let changed = *lock(asked) != wanted;
                let expiring = OffsetDateTime::now_utc() >= renew_at;
                if !changed && !expiring {
                    return false;
                }
                match ca.issue(&wanted, *cert_days) {
                    Ok(issued) => {
                        warn_refused(&issued.refused);
                        tracing::info!(
                            names = issued.names.len(),
                            valid_until = %issued.not_after,
                            reason = if changed { "the names or addresses changed" } else { "expiry is near" },
                            "issued a new server certificate"
                        );
                        self.current.0.store(issued.key);
                        *lock(&self.summary) = CertSummary {
                            not_after: issued.not_after,
                            names: issued.names,
                        };
                        *lock(asked) = wanted;
                        true
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "issuing a new server certificate failed; the current one stays");
                        false
                    }
                }
            }
            Source::Files { paths, stamp } => {
                if *lock(stamp) == paths.stamp() {
                    return false;
                }
                match paths.load() {
                    Ok(loaded) => {
                        tracing::info!(cert = %paths.cert.display(), "loaded the changed certificate files");
                        *lock(&self.summary) = CertSummary {
                            not_after: loaded.not_after,
                            names: leaf_names(&loaded.key),
                        };
                        self.current.0.store(loaded.key);
                        *lock(stamp) = loaded.stamp;
                        true
                    }
                    Err(err) => {
                        // Files are often replaced one after the other: the
                        // next check tries again.
                        tracing::error!(error = %err, "the changed certificate files cannot be used; the current certificate stays");
                        false
                    }
                }
            }
        }
    }

    /// Runs [`Tls::refresh`] every `every`, off the async threads.
    pub fn spawn_refresher(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let tls = self.clone();
                let _ = tokio::task::spawn_blocking(move || tls.refresh()).await;
            }
        })
    }
}

/// What `lanchat ca` prints: the CA file, its fingerprint, and one-line
/// commands that install it machine-wide, for admins who manage many devices.
pub fn admin_guide(config: &Config) -> Result<String, TlsError> {
    let dir = config.server.data_dir.join(ca::TLS_DIR);
    let cert_path = dir.join(ca::CA_CERT_FILE);
    match config.tls.mode.as_str() {
        "off" => {
            return Err(TlsError::Invalid(
                "HTTPS is off (tls.mode = \"off\"); set it to \"auto\" to get a local certificate authority".into(),
            ));
        }
        "files" => {
            return Err(TlsError::Invalid(format!(
                "tls.mode is \"files\": the certificate {} comes from your own authority, which your devices must trust",
                config.tls.cert_file
            )));
        }
        _ => {}
    }
    let pem = std::fs::read_to_string(&cert_path).map_err(|err| {
        TlsError::file(
            &cert_path,
            format!("cannot be read ({err}); the server makes the certificate authority at its first start"),
        )
    })?;
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|der: rustls::pki_types::CertificateDer<'static>| der.to_vec())
        .map_err(|err| TlsError::file(&cert_path, format!("is not a PEM certificate: {err}")))?;
    let path = std::fs::canonicalize(&cert_path).unwrap_or(cert_path);
    let p = path.display();
    Ok(format!(
        "lanchat's local certificate authority (CA)\n\
         \n\
         certificate: {p}\n\
         private key: {key} (keep it secret; backups include it)\n\
         SHA-256 fingerprint: {fingerprint}\n\
         \n\
         People can install it themselves from the page /trust of the server. To install\n\
         it on machines you manage, copy the certificate to them and run:\n\
         \n\
         Windows, one PC (as administrator):\n\
         \x20 certutil -addstore -f Root lanchat-ca.crt\n\
         Windows, every PC of an Active Directory domain (as a domain admin):\n\
         \x20 certutil -dspublish -f lanchat-ca.crt RootCA\n\
         \x20 (or Group Policy: Computer Configuration > Policies > Windows Settings > Security\n\
         \x20 Settings > Public Key Policies > Trusted Root Certification Authorities > Import)\n\
         macOS:\n\
         \x20 sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain lanchat-ca.crt\n\
         Debian, Ubuntu (system-wide):\n\
         \x20 sudo cp lanchat-ca.crt /usr/local/share/ca-certificates/ && sudo update-ca-certificates\n\
         Fedora, RHEL:\n\
         \x20 sudo cp lanchat-ca.crt /etc/pki/ca-trust/source/anchors/ && sudo update-ca-trust\n\
         Chrome and Chromium on Linux (per user):\n\
         \x20 certutil -d sql:$HOME/.pki/nssdb -A -t \"C,,\" -n lanchat -i lanchat-ca.crt\n\
         Firefox (its own store): Settings > Privacy & Security > Certificates > Import,\n\
         \x20 or enterprise policy \"Certificates\": {{\"Install\": [\"lanchat-ca.crt\"]}}\n\
         \n\
         (lanchat-ca.crt is a copy of the certificate file above.)\n",
        key = path.with_file_name(ca::CA_KEY_FILE).display(),
        fingerprint = ca::fingerprint(&der),
    ))
}

fn warn_refused(refused: &[String]) {
    if !refused.is_empty() {
        tracing::warn!(
            names = %refused.join(", "),
            "left out of the certificate: the local CA may not sign for them (it is limited to \
             the names it was made for, .local names and private addresses; see docs/TLS.md)"
        );
    }
}

/// The names in the leaf certificate of a chain (for the summary).
fn leaf_names(key: &CertifiedKey) -> Names {
    use x509_parser::extensions::GeneralName;
    let mut names = Names::default();
    let Some(leaf) = key.cert.first() else {
        return names;
    };
    if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf)
        && let Ok(Some(san)) = parsed.subject_alternative_name()
    {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.add(dns),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                        names.ips.insert(std::net::IpAddr::from(octets));
                    } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                        names.ips.insert(std::net::IpAddr::from(octets));
                    }
                }
                _ => {}
            }
        }
    }
    names
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Creates a directory owner-only (0700) if missing.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Writes a new owner-only (0600) file atomically: a temporary file, fsync,
/// rename.
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
