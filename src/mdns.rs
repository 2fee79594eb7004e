//! Multicast DNS: the server answers to `<mdns.name>.local` on the LAN with
//! its addresses, and advertises `_https._tcp` (when TLS is on) and `_http._tcp`
//! services, so people can type `https://lanchat.local:8080`. The `mdns-sd`
//! daemon probes the name first; when another machine holds it, the daemon
//! takes `<name>-2.local` (then -3...), and we print and use that.

use std::sync::{Arc, Mutex};

use mdns_sd::{DaemonEvent, ServiceDaemon, ServiceInfo};

use crate::tls::Tls;

/// `name` as a `.local` host name: `lanchat` and `lanchat.local` both give
/// `lanchat.local`.
pub fn host_name(name: &str) -> String {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let name = name.strip_suffix(".local").unwrap_or(&name);
    format!("{name}.local")
}

/// The advertised name, shared with whoever shows it (`None` while mDNS is off).
pub type NameSlot = Arc<Mutex<Option<String>>>;

/// A running advertisement; dropping it withdraws the records.
pub struct Mdns {
    daemon: ServiceDaemon,
    name: NameSlot,
}

impl Mdns {
    /// Starts advertising `<name>.local` for `port`. Errors (no multicast-capable
    /// interface, the mDNS port unavailable) are logged: the server runs
    /// without a `.local` name then.
    pub fn start(
        configured: &str,
        instance: &str,
        port: u16,
        tls: Option<Arc<Tls>>,
        name: NameSlot,
    ) -> Option<Mdns> {
        let host = host_name(configured);
        let daemon = match ServiceDaemon::new() {
            Ok(daemon) => daemon,
            Err(err) => {
                tracing::warn!(error = %err, "mDNS is unavailable; {host} will not resolve");
                return None;
            }
        };
        *lock(&name) = Some(host.clone());
        if let Ok(events) = daemon.monitor() {
            let name = name.clone();
            let tls = tls.clone();
            let spawned = std::thread::Builder::new()
                .name("lanchat-mdns".into())
                .spawn(move || watch(events, name, tls));
            if let Err(err) = spawned {
                tracing::warn!(error = %err, "cannot watch mDNS name conflicts");
            }
        }
        let mut types = vec!["_http._tcp.local."];
        if tls.is_some() {
            types.insert(0, "_https._tcp.local.");
        }
        for ty in types {
            let info = ServiceInfo::new(
                ty,
                instance,
                &format!("{host}."),
                (),
                port,
                &[("path", "/")][..],
            )
            .map(ServiceInfo::enable_addr_auto);
            match info.and_then(|info| daemon.register(info)) {
                Ok(()) => {}
                Err(err) => {
                    tracing::warn!(error = %err, service = ty, "cannot advertise the service over mDNS");
                }
            }
        }
        Some(Mdns { daemon, name })
    }

    /// The name currently advertised (`lanchat-2.local` after a conflict).
    pub fn name(&self) -> Option<String> {
        lock(&self.name).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Mdns {
    fn drop(&mut self) {
        *lock(&self.name) = None;
        // Sends goodbye records so caches forget us at once.
        let _ = self.daemon.shutdown();
    }
}

/// Follows the daemon's events: a host name change after a conflict is
/// printed, and the certificate is re-issued for the new name.
fn watch(events: mdns_sd::Receiver<DaemonEvent>, name: NameSlot, tls: Option<Arc<Tls>>) {
    while let Ok(event) = events.recv() {
        match event {
            DaemonEvent::NameChange(change)
                if change.rr_type == mdns_sd::RRType::A
                    || change.rr_type == mdns_sd::RRType::AAAA =>
            {
                let new = change.new_name.trim_end_matches('.').to_owned();
                let old = change.original.trim_end_matches('.').to_owned();
                *lock(&name) = Some(new.clone());
                println!("  {old} is taken on this network: now answering to {new}");
                tracing::warn!(taken = %old, now = %new, "mDNS name conflict: using another name");
                if let Some(tls) = &tls {
                    tls.set_mdns_name(&new);
                    tls.refresh();
                }
            }
            DaemonEvent::Error(err) => tracing::debug!(error = %err, "mDNS"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_get_one_local_suffix() {
        assert_eq!(host_name("lanchat"), "lanchat.local");
        assert_eq!(host_name("Office.local."), "office.local");
    }
}
