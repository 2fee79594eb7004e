//! `tls.mode = "files"`: a certificate chain and key from the office's own PKI,
//! checked at start (a clear error naming the file) and read again whenever the
//! files change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::TlsError;

/// When the files were last read: their modification times and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<(Option<SystemTime>, u64)>);

impl Stamp {
    pub fn of(paths: &[&Path]) -> Stamp {
        Stamp(
            paths
                .iter()
                .map(|path| match std::fs::metadata(path) {
                    Ok(meta) => (meta.modified().ok(), meta.len()),
                    Err(_) => (None, 0),
                })
                .collect(),
        )
    }
}

pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub not_after: OffsetDateTime,
    pub stamp: Stamp,
}

#[derive(Debug, Clone)]
pub struct FilePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl FilePaths {
    pub fn stamp(&self) -> Stamp {
        Stamp::of(&[&self.cert, &self.key])
    }

    /// Reads and checks both files: PEM, a usable key that belongs to the first
    /// certificate, and a first certificate valid now.
    pub fn load(&self) -> Result<Loaded, TlsError> {
        // Taken before reading, so a change made while reading is seen next time.
        let stamp = self.stamp();
        let cert_bytes = std::fs::read(&self.cert)
            .map_err(|e| TlsError::file(&self.cert, format!("cannot be read: {e}")))?;
        let chain = CertificateDer::pem_slice_iter(&cert_bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::file(&self.cert, format!("is not valid PEM: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(TlsError::file(
                &self.cert,
                "holds no certificate (expected PEM blocks \"BEGIN CERTIFICATE\", the server's first)",
            ));
        };
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| TlsError::file(&self.cert, format!("has a damaged certificate: {e}")))?;
        let validity = parsed.validity();
        let not_before = validity.not_before.to_datetime();
        let not_after = validity.not_after.to_datetime();
        let now = OffsetDateTime::now_utc();
        if now > not_after {
            return Err(TlsError::file(
                &self.cert,
                format!("has a certificate that expired on {}", day(not_after)),
            ));
        }
        if now < not_before {
            return Err(TlsError::file(
                &self.cert,
                format!(
                    "has a certificate that is valid only from {} (check the clock)",
                    day(not_before)
                ),
            ));
        }
        let key_bytes = std::fs::read(&self.key)
            .map_err(|e| TlsError::file(&self.key, format!("cannot be read: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
            TlsError::file(
                &self.key,
                format!("holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
            )
        })?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
            TlsError::file(&self.key, format!("holds a key rustls cannot use: {e}"))
        })?;
        let certified = CertifiedKey::new(chain, signing_key);
        if certified.keys_match().is_err() {
            return Err(TlsError::file(
                &self.key,
                format!(
                    "does not belong to the certificate in {}",
                    self.cert.display()
                ),
            ));
        }
        Ok(Loaded {
            key: Arc::new(certified),
            not_after,
            stamp,
        })
    }
}

fn day(at: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    )
}
