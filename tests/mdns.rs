//! mDNS: the server's `.local` name resolves through the `mdns-sd` crate's own
//! browser, and a second server wanting the same name takes `<name>-2.local`.
//! Multicast stays on a LAN made for the test: two network namespaces joined by
//! a veth pair. The servers run in them (`ip netns exec`); the browser's daemon
//! thread is started from a thread moved into one (setns). Needs root and
//! iproute2 (CI has both); skipped with a message otherwise.
#![cfg(target_os = "linux")]

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn run(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Two namespaces joined by a veth pair (a two-machine LAN, 10.231.0.1 and
/// .2), each with its loopback up; multicast stays on that link.
fn make_lan() -> Option<(Namespace, Namespace)> {
    let id = std::process::id();
    let (a, b) = (format!("lanchat-mdns-a{id}"), format!("lanchat-mdns-b{id}"));
    if !run(&["netns", "add", &a]) {
        return None;
    }
    let a = Namespace(a);
    if !run(&["netns", "add", &b]) {
        return None;
    }
    let b = Namespace(b);
    let (va, vb) = (format!("lcm{id}a"), format!("lcm{id}b"));
    let ok = run(&["link", "add", &va, "type", "veth", "peer", "name", &vb])
        && run(&["link", "set", &va, "netns", &a.0])
        && run(&["link", "set", &vb, "netns", &b.0]);
    if !ok {
        return None;
    }
    for (ns, dev, addr) in [(&a, &va, "10.231.0.1/24"), (&b, &vb, "10.231.0.2/24")] {
        let ok = run(&["-n", &ns.0, "link", "set", "lo", "up"])
            && run(&["-n", &ns.0, "addr", "add", addr, "dev", dev])
            && run(&["-n", &ns.0, "link", "set", dev, "up"])
            && run(&["-n", &ns.0, "route", "add", "224.0.0.0/4", "dev", dev]);
        if !ok {
            return None;
        }
    }
    Some((a, b))
}

/// A lanchat server in the namespace with mDNS on, and its stdout lines.
fn start_server(ns: &Namespace, sandbox: &Sandbox, name: &str) -> (Child, Receiver<String>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, BIN, "--data-dir"])
        .arg(sandbox.data_dir())
        .args(["--listen", "0.0.0.0:0"])
        .env("LANCHAT_MDNS_NAME", name)
        .env("LANCHAT_MDNS_ENABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lanchat in the namespace");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Stdout lines until one contains `needle` (or the deadline passes).
fn lines_until(rx: &Receiver<String>, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains(needle)) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    lines.join("\n")
}

/// Resolves `host` (with the trailing dot) with mdns-sd inside the namespace,
/// collecting answers until `want` is among them or the search times out (the
/// first answer may hold only the link-local IPv6 address).
fn resolve(ns: &Namespace, host: &str, want: IpAddr) -> Vec<IpAddr> {
    let ns_path = format!("/var/run/netns/{}", ns.0);
    let host = host.to_owned();
    std::thread::spawn(move || {
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
                    if found.contains(&want) {
                        break;
                    }
                }
                mdns_sd::HostnameResolutionEvent::SearchTimeout(_) => break,
                _ => {}
            }
        }
        let _ = daemon.shutdown();
        found
    })
    .join()
    .expect("resolver thread")
}

#[test]
fn the_name_resolves_and_a_taken_name_becomes_name_2() {
    let Some((ns_a, ns_b)) = make_lan() else {
        eprintln!("skipped: network namespaces need root and iproute2");
        return;
    };
    let lan_a: IpAddr = "10.231.0.1".parse().expect("ip");
    let lan_b: IpAddr = "10.231.0.2".parse().expect("ip");
    let name = format!("lanchat-t{}", std::process::id());
    let first_dir = Sandbox::new();
    let (mut first, first_out) = start_server(&ns_a, &first_dir, &name);
    let printed = lines_until(&first_out, ".local", START_DEADLINE);
    assert!(
        printed.contains(&format!("http://{name}.local:")),
        "{printed}"
    );
    // Resolved from the other machine.
    let resolved = resolve(&ns_b, &format!("{name}.local."), lan_a);
    assert!(
        resolved.contains(&lan_a),
        "{name}.local did not resolve to the server's address: {resolved:?}"
    );

    // A server on the other machine asking for the same name gets
    // <name>-2.local and says so.
    let second_dir = Sandbox::new();
    let (mut second, second_out) = start_server(&ns_b, &second_dir, &name);
    let taken = format!("{name}-2.local");
    let printed = lines_until(&second_out, &taken, Duration::from_secs(30));
    let resolved_second = resolve(&ns_a, &format!("{taken}."), lan_b);
    for child in [&mut first, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(printed.contains("is taken"), "{printed}");
    assert!(
        resolved_second.contains(&lan_b),
        "{taken} did not resolve to the second server: {resolved_second:?}"
    );
}
