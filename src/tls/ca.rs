//! The local certificate authority of `tls.mode = "auto"`. Made once per data
//! directory (ECDSA P-256, ten years) and kept in `tls/ca.key` (owner-only) and
//! `tls/ca.crt`; it issues the server's certificate, again whenever the
//! addresses change or expiry nears. Its name constraints limit it to this
//! machine's names, `.local` names and private addresses, so a stolen CA key
//! cannot impersonate other sites to the devices that trust it (docs/TLS.md).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::TlsError;
use super::names::Names;

pub const TLS_DIR: &str = "tls";
pub const CA_KEY_FILE: &str = "ca.key";
pub const CA_CERT_FILE: &str = "ca.crt";
const CA_YEARS: i64 = 10;

/// Private and link-local address ranges, loopback included: the CA may sign
/// for any of them, so a server that moves to another LAN address stays
/// trusted.
const PRIVATE_RANGES: &[(&str, u8)] = &[
    ("127.0.0.0", 8),
    ("10.0.0.0", 8),
    ("172.16.0.0", 12),
    ("192.168.0.0", 16),
    ("169.254.0.0", 16),
    ("100.64.0.0", 10),
    ("::1", 128),
    ("fc00::", 7),
    ("fe80::", 10),
];

/// What anyone may download: the CA certificate and how to recognise it.
#[derive(Debug, Clone)]
pub struct CaPublic {
    pub der: Vec<u8>,
    pub pem: String,
    /// SHA-256 of the certificate, `AB:CD:...` as browsers and systems show it.
    pub fingerprint: String,
    /// Base64 SHA-256 of the public key (Chromium's
    /// `--ignore-certificate-errors-spki-list`, HPKP-style pins).
    pub spki_sha256: String,
    /// The CA's common name, as trust stores list it.
    pub name: String,
}

/// The namespace the CA may sign for, read back from its name constraints.
#[derive(Debug, Clone, Default)]
struct Permitted {
    dns: Vec<String>,
    nets: Vec<(Vec<u8>, Vec<u8>)>,
    /// A CA without name constraints (made elsewhere and put in place) permits all.
    unconstrained: bool,
}

impl Permitted {
    fn allows_dns(&self, name: &str) -> bool {
        self.unconstrained
            || self
                .dns
                .iter()
                .any(|base| name == base || name.ends_with(&format!(".{base}")))
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        self.unconstrained
            || self.nets.iter().any(|(net, mask)| {
                net.len() == bytes.len()
                    && bytes
                        .iter()
                        .zip(net)
                        .zip(mask)
                        .all(|((b, n), m)| b & m == n & m)
            })
    }
}

pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    permitted: Permitted,
    pub public: CaPublic,
    pub key_path: PathBuf,
}

/// A server certificate just issued.
pub struct Issued {
    pub key: Arc<CertifiedKey>,
    pub not_after: OffsetDateTime,
    pub names: Names,
    /// Names left out because the CA may not sign for them.
    pub refused: Vec<String>,
}

impl LocalCa {
    /// Loads the CA from `<data_dir>/tls`, making it on first start. `created`
    /// says which happened. A key file readable by others is made owner-only,
    /// with a warning.
    pub fn load_or_create(
        data_dir: &Path,
        server_name: &str,
        names: &Names,
    ) -> Result<(LocalCa, bool), TlsError> {
        let dir = data_dir.join(TLS_DIR);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        match (key_path.exists(), cert_path.exists()) {
            (true, true) => Ok((Self::load(&key_path, &cert_path)?, false)),
            (false, false) => {
                super::create_private_dir(&dir).map_err(|e| TlsError::file(&dir, e))?;
                let (key, der) = create(server_name, names)?;
                super::write_private_file(&key_path, key.serialize_pem().as_bytes())
                    .map_err(|e| TlsError::file(&key_path, e))?;
                let pem = pem_of(&der);
                super::write_private_file(&cert_path, pem.as_bytes())
                    .map_err(|e| TlsError::file(&cert_path, e))?;
                Ok((Self::from_parts(key, der, key_path)?, true))
            }
            (true, false) => Err(TlsError::file(
                &cert_path,
                "is missing while the CA key is there: restore it from a backup, or move the \
                 tls directory aside to make a new CA (every device must then trust the new one)",
            )),
            (false, true) => Err(TlsError::file(
                &key_path,
                "is missing while the CA certificate is there: restore it from a backup, or move \
                 the tls directory aside to make a new CA (every device must then trust the new one)",
            )),
        }
    }

    fn load(key_path: &Path, cert_path: &Path) -> Result<LocalCa, TlsError> {
        tighten_key_permissions(key_path)?;
        let key_pem = std::fs::read_to_string(key_path).map_err(|e| TlsError::file(key_path, e))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| TlsError::file(key_path, format!("is not a usable private key: {e}")))?;
        let cert_pem =
            std::fs::read_to_string(cert_path).map_err(|e| TlsError::file(cert_path, e))?;
        let der = pem::parse(&cert_pem)
            .map_err(|e| TlsError::file(cert_path, format!("is not a PEM certificate: {e}")))?
            .into_contents();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| TlsError::file(cert_path, format!("is not a valid certificate: {e}")))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(TlsError::file(
                key_path,
                format!("does not belong to the certificate {}", cert_path.display()),
            ));
        }
        Self::from_parts(key, der, key_path.to_owned())
    }

    fn from_parts(key: KeyPair, der: Vec<u8>, key_path: PathBuf) -> Result<LocalCa, TlsError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| TlsError::Invalid(format!("the CA certificate is damaged: {e}")))?;
        let permitted = permitted_of(&parsed);
        let name = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("lanchat CA")
            .to_owned();
        let spki_sha256 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .encode(Sha256::digest(parsed.public_key().raw))
        };
        let public = CaPublic {
            pem: pem_of(&der),
            fingerprint: fingerprint(&der),
            spki_sha256,
            name,
            der: der.clone(),
        };
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(der), key)?;
        Ok(LocalCa {
            issuer,
            permitted,
            public,
            key_path,
        })
    }

    /// Issues a server certificate for `wanted` (less what the CA may not sign
    /// for), valid from an hour ago (clocks differ) for `days`.
    pub fn issue(&self, wanted: &Names, days: u32) -> Result<Issued, TlsError> {
        let mut names = Names::default();
        let mut refused = Vec::new();
        for dns in &wanted.dns {
            if self.permitted.allows_dns(dns) {
                names.dns.insert(dns.clone());
            } else {
                refused.push(dns.clone());
            }
        }
        for ip in &wanted.ips {
            if self.permitted.allows_ip(*ip) {
                names.ips.insert(*ip);
            } else {
                refused.push(ip.to_string());
            }
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        // No common name: browsers read only the alternative names, and a common
        // name outside the CA's constraints would fail some verifiers.
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "lanchat");
        params.distinguished_name = dn;
        for dns in &names.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into()?));
        }
        for ip in &names.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(3600);
        let not_after = now + Duration::from_secs(u64::from(days) * 86_400);
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(key.serialize_der()),
        ))?;
        Ok(Issued {
            key: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing_key)),
            not_after,
            names,
            refused,
        })
    }
}

/// A new CA key and self-signed certificate, constrained to `names` (this
/// machine's names and addresses when it is made), `.local` names, `localhost`
/// and the private address ranges.
fn create(server_name: &str, names: &Names) -> Result<(KeyPair, Vec<u8>), TlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let host = super::names::host_name();
    let mut dn = DistinguishedName::new();
    let label = if host.is_empty() {
        format!("{server_name} local CA")
    } else {
        format!("{server_name} local CA ({host})")
    };
    // Common names are limited to 64 characters.
    dn.push(
        DnType::CommonName,
        label.chars().take(64).collect::<String>(),
    );
    dn.push(DnType::OrganizationName, "lanchat");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(86_400);
    params.not_after = now + Duration::from_secs(CA_YEARS as u64 * 365 * 86_400);
    params.serial_number = Some(random_serial());

    let mut permitted = vec![
        GeneralSubtree::DnsName("localhost".into()),
        GeneralSubtree::DnsName("local".into()),
    ];
    for dns in &names.dns {
        let covered = dns == "localhost" || dns == "local" || dns.ends_with(".local");
        if !covered {
            permitted.push(GeneralSubtree::DnsName(dns.clone()));
        }
    }
    let mut nets = Permitted::default();
    for (addr, prefix) in PRIVATE_RANGES {
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let subnet = CidrSubnet::from_addr_prefix(ip, *prefix);
            nets.nets.push(subnet_bytes(subnet));
            permitted.push(GeneralSubtree::IpAddress(subnet));
        }
    }
    // A public address the machine has now is permitted exactly.
    for ip in &names.ips {
        if !nets.allows_ip(*ip) {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                *ip, prefix,
            )));
        }
    }
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: Vec::new(),
    });
    let cert = params.self_signed(&key)?;
    Ok((key, cert.der().to_vec()))
}

fn subnet_bytes(subnet: CidrSubnet) -> (Vec<u8>, Vec<u8>) {
    match subnet {
        CidrSubnet::V4(addr, mask) => (addr.to_vec(), mask.to_vec()),
        CidrSubnet::V6(addr, mask) => (addr.to_vec(), mask.to_vec()),
    }
}

fn permitted_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Permitted {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(constraints)) = cert.name_constraints() else {
        return Permitted {
            unconstrained: true,
            ..Default::default()
        };
    };
    let mut permitted = Permitted::default();
    let Some(subtrees) = &constraints.value.permitted_subtrees else {
        permitted.unconstrained = true;
        return permitted;
    };
    for subtree in subtrees {
        match &subtree.base {
            GeneralName::DNSName(name) => permitted
                .dns
                .push(name.trim_start_matches('.').to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) if bytes.len() == 8 || bytes.len() == 32 => {
                let half = bytes.len() / 2;
                permitted
                    .nets
                    .push((bytes[..half].to_vec(), bytes[half..].to_vec()));
            }
            _ => {}
        }
    }
    permitted
}

/// 16 random bytes, positive as a DER integer.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes[..]);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// The CA key must be readable by its owner only. A looser file is tightened
/// (it may have been copied in by hand), and the admin is told.
fn tighten_key_permissions(path: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| TlsError::file(path, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| TlsError::file(path, format!("is readable by others (mode {mode:o}) and could not be made owner-only: {e}")))?;
            let message = format!(
                "{} was readable by other users (mode {mode:o}); it is now owner-only (600). \
                 If someone may have copied it, move the tls directory aside and restart to \
                 make a new CA",
                path.display()
            );
            eprintln!("lanchat: warning: {message}");
            tracing::warn!("{message}");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Names {
        let mut names = Names::default();
        for name in list {
            names.add(name);
        }
        names
    }

    #[test]
    fn the_ca_signs_only_inside_its_constraints_and_survives_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = names(&["officepc", "chat.example", "203.0.113.7", "192.168.1.10"]);
        let (ca, created) = LocalCa::load_or_create(dir.path(), "lanchat", &made).expect("ca");
        assert!(created);
        let wanted = names(&[
            "officepc",
            "lanchat-2.local",
            "chat.example",
            "sub.chat.example",
            "localhost",
            "192.168.7.7",
            "10.1.2.3",
            "fd12::1",
            "203.0.113.7",
            "bank.example",
            "198.51.100.1",
        ]);
        let issued = ca.issue(&wanted, 397).expect("issue");
        let mut refused = issued.refused.clone();
        refused.sort();
        assert_eq!(refused, ["198.51.100.1", "bank.example"]);
        assert_eq!(issued.names.len(), wanted.len() - 2);

        // Loaded again: same CA, same constraints.
        let (again, created) =
            LocalCa::load_or_create(dir.path(), "lanchat", &Names::default()).expect("reload");
        assert!(!created);
        assert_eq!(again.public.fingerprint, ca.public.fingerprint);
        assert_eq!(again.issue(&wanted, 1).expect("issue").refused.len(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = dir.path().join(TLS_DIR).join(CA_KEY_FILE);
            let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            LocalCa::load_or_create(dir.path(), "lanchat", &Names::default()).expect("reload");
            let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "a loose key file is tightened");
        }
    }

    #[test]
    fn half_a_ca_is_refused_naming_the_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        LocalCa::load_or_create(dir.path(), "lanchat", &Names::default()).expect("ca");
        std::fs::remove_file(dir.path().join(TLS_DIR).join(CA_CERT_FILE)).expect("rm");
        let err = LocalCa::load_or_create(dir.path(), "lanchat", &Names::default())
            .err()
            .expect("refused");
        assert!(err.to_string().contains(CA_CERT_FILE), "{err}");
    }
}
