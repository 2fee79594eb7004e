//! mDNS: the server's `.local` name resolves through the `mdns-sd` crate's own
//! browser. Multicast stays inside a network namespace made for the test, with
//! only a loopback interface: the server runs there (`ip netns exec`), and the
//! browser's daemon thread is started from a thread moved into it (setns). Needs
//! root and iproute2; skipped with a message otherwise.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn make_namespace() -> Option<Namespace> {
    let name = format!("lanchat-mdns-{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .ok()?;
    if !made.success() {
        return None;
    }
    let ns = Namespace(name);
    let up = Command::new("ip")
        .args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"])
        .status()
        .ok()?;
    // Multicast on loopback needs the flag and a route for 224.0.0.0/4.
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "ip",
            "link",
            "set",
            "lo",
            "multicast",
            "on",
        ])
        .status();
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "ip",
            "route",
            "add",
            "224.0.0.0/4",
            "dev",
            "lo",
        ])
        .status();
    up.success().then_some(ns)
}

#[test]
fn the_advertised_name_resolves_with_the_mdns_sd_browser() {
    let Some(ns) = make_namespace() else {
        eprintln!("skipped: creating a network namespace needs root and iproute2");
        return;
    };
    let sandbox = Sandbox::new();
    let name = format!("lanchat-t{}", std::process::id());
    let mut server = Command::new("ip")
        .args(["netns", "exec", &ns.0, BIN, "--data-dir"])
        .arg(sandbox.data_dir())
        .args(["--listen", "127.0.0.1:0"])
        .env("LANCHAT_MDNS_NAME", &name)
        .env("LANCHAT_MDNS_ENABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lanchat in the namespace");
    let stdout = server.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + START_DEADLINE;
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains(".local")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let host = format!("{name}.local.");
    let printed = lines.join("\n");
    // Resolve from a thread inside the namespace.
    let ns_path = format!("/var/run/netns/{}", ns.0);
    let resolved = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&ns_path).expect("open the namespace");
        // SAFETY: setns on a valid namespace fd; it moves only this thread (and
        // the threads it starts) into that network namespace.
        let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns failed");
        let daemon = mdns_sd::ServiceDaemon::new().expect("mdns daemon");
        let events = daemon
            .resolve_hostname(&host, Some(10_000))
            .expect("resolve");
        let mut found = Vec::new();
        while let Ok(event) = events.recv_timeout(Duration::from_secs(15)) {
            match event {
                mdns_sd::HostnameResolutionEvent::AddressesFound(_, addrs) => {
                    found.extend(addrs.iter().map(|a| a.to_ip_addr()));
                    break;
                }
                mdns_sd::HostnameResolutionEvent::SearchTimeout(_) => break,
                _ => {}
            }
        }
        let _ = daemon.shutdown();
        found
    })
    .join()
    .expect("resolver thread");
    let _ = server.kill();
    let _ = server.wait();
    assert!(printed.contains(&format!("{name}.local")), "{printed}");
    assert!(
        resolved.iter().any(|ip| ip.is_loopback()),
        "{name}.local did not resolve to the server's address: {resolved:?}"
    );
}
