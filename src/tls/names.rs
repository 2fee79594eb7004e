//! The names and addresses the server answers to, for its certificate and for
//! the start-up announcement.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a server certificate covers: DNS names and IP addresses, sorted so two
/// sets compare equal whatever order the interfaces were listed in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
}

impl Names {
    /// Adds a configured or discovered name: an address goes to `ips`, a DNS
    /// name (lower-cased, without a trailing dot) to `dns`. Names that cannot be
    /// in a certificate (empty, spaces, wildcards) are skipped.
    pub fn add(&mut self, name: &str) {
        let name = name.trim().trim_end_matches('.');
        if let Ok(ip) = name.trim_matches(['[', ']']).parse::<IpAddr>() {
            self.ips.insert(ip);
        } else if is_dns_name(name) {
            self.dns.insert(name.to_ascii_lowercase());
        }
    }

    pub fn len(&self) -> usize {
        self.dns.len() + self.ips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Letters, digits, hyphens and dots, in labels of 1 to 63 characters.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// This machine's host name, lower-cased ("" when it has none usable).
pub fn host_name() -> String {
    let name = gethostname::gethostname()
        .to_string_lossy()
        .to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_owned();
    if is_dns_name(&name) {
        name
    } else {
        String::new()
    }
}

/// Every address of this machine's interfaces that a client elsewhere could
/// use: loopback is left out (it is always covered), and so are IPv6 link-local
/// addresses, which need a zone that no URL or certificate can carry.
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(interfaces) = if_addrs::get_if_addrs() {
        for interface in interfaces {
            let ip = interface.ip();
            if ip.is_loopback() || is_ipv6_link_local(ip) {
                continue;
            }
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

pub fn is_ipv6_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Everything the server certificate should cover now: localhost and the
/// loopback addresses, every interface address, the host name and
/// `<host>.local`, the mDNS name, and the configured extra names.
pub fn current(mdns_name: Option<&str>, extra: &[String]) -> Names {
    let mut names = Names::default();
    names.add("localhost");
    names.ips.insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
    names.ips.insert(IpAddr::V6(Ipv6Addr::LOCALHOST));
    for ip in interface_addresses() {
        names.ips.insert(ip);
    }
    let host = host_name();
    if !host.is_empty() {
        names.add(&host);
        let first = host.split('.').next().unwrap_or(&host);
        names.add(&format!("{first}.local"));
    }
    if let Some(mdns) = mdns_name {
        names.add(mdns);
    }
    for name in extra {
        names.add(name);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_into_addresses_and_dns_names() {
        let mut names = Names::default();
        for name in [
            "Office.LOCAL.",
            "10.0.0.5",
            "[fd00::1]",
            "bad name",
            "*.x",
            "",
        ] {
            names.add(name);
        }
        assert!(names.dns.contains("office.local"));
        assert!(
            names
                .ips
                .contains(&"10.0.0.5".parse::<IpAddr>().expect("ip"))
        );
        assert!(
            names
                .ips
                .contains(&"fd00::1".parse::<IpAddr>().expect("ip"))
        );
        assert_eq!(names.len(), 3);
        let now = current(Some("lanchat.local"), &["chat.example".into()]);
        for must in ["localhost", "lanchat.local", "chat.example"] {
            assert!(now.dns.contains(must), "{must} in {now:?}");
        }
        assert!(now.ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(now.ips.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }
}
