//! The web client in real headless Chromium: starts the real server and runs the
//! Playwright suite in `tests/browser/` against it with Node.js.
//!
//! Needs Node.js and Debian's `chromium` (`apt-get install chromium`); installs the
//! suite's one npm dependency (`playwright-core`, which downloads no browser) on
//! first run. Set `LANCHAT_SCREENSHOTS=1` to refresh `docs/screenshots/`.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

const ADMIN: &str = "admin";

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// `npm ci` once, if `node_modules` is missing or older than the lock file.
fn install_suite(dir: &Path) {
    let marker = dir.join("node_modules/playwright-core/package.json");
    let lock = dir.join("package-lock.json");
    let stale = match (std::fs::metadata(&marker), std::fs::metadata(&lock)) {
        (Ok(installed), Ok(lock)) => match (installed.modified(), lock.modified()) {
            (Ok(a), Ok(b)) => a < b,
            _ => false,
        },
        _ => true,
    };
    if stale {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .status()
            .expect("npm must be installed to run the browser tests");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
}

/// Chromium is there and the suite's npm dependency installed (once, though
/// the tests run in parallel).
fn prepare_suite() {
    let browser = chromium();
    assert!(
        browser.exists(),
        "the browser tests need Chromium at {} (Debian: apt-get install chromium)",
        browser.display()
    );
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| install_suite(&suite_dir()));
}

/// Runs one spec file of the suite with node, with `env` added, and checks
/// that it passed and really ran something; prints the runner's summary
/// (shown with `cargo test -- --nocapture`).
async fn run_spec(server: &TestServer, spec: &'static str, env: Vec<(&'static str, String)>) {
    let dir = suite_dir();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new("node");
        command
            .args(["--test", "--test-concurrency=1", spec])
            .current_dir(&dir)
            .env("CHROMIUM", chromium());
        for (name, value) in env {
            command.env(name, value);
        }
        command
            .output()
            .expect("node must be installed to run the browser tests")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{spec} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log\n{}",
        server.stderr()
    );
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("# ") && !l.starts_with("# Subtest"))
    {
        println!("{spec} {line}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("# pass") && !l.trim().ends_with(" 0")),
        "{spec} ran no test:\n{stdout}"
    );
}

#[tokio::test]
async fn web_client_in_headless_chromium() {
    prepare_suite();
    // An admin made before the first start (the suite cannot read the setup
    // token from the server's output): the admin page test signs in as it.
    let server = TestServer::start_with(ServerOptions::new().admin(ADMIN)).await;
    run_spec(
        &server,
        "chat.spec.mjs",
        vec![
            ("LANCHAT_URL", server.base_url().to_owned()),
            ("LANCHAT_ADMIN_USER", ADMIN.to_owned()),
            ("LANCHAT_ADMIN_PASSWORD", PASSWORD.to_owned()),
        ],
    )
    .await;
}

/// The secure-connection flow (tests/browser/tls.spec.mjs): Chromium on the
/// name office.test, the server's CA trusted through an NSS database made with
/// certutil in a temporary HOME, as the trust page tells a Linux user to do.
#[tokio::test]
async fn secure_connection_in_headless_chromium() {
    prepare_suite();
    let server = TestServer::start_with(
        ServerOptions::new()
            .admin(ADMIN)
            .env("LANCHAT_TLS_NAMES", r#"["office.test"]"#),
    )
    .await;
    let (_, info) = server.get("/api/v1/tls", ANON).await;
    let fingerprint = info["ca"]["fingerprint_sha256"]
        .as_str()
        .expect("the CA fingerprint")
        .to_owned();
    let pem = server
        .client()
        .get(server.url("/ca.pem"))
        .send()
        .await
        .expect("GET /ca.pem")
        .text()
        .await
        .expect("PEM");
    let home = tempfile::tempdir().expect("temporary HOME");
    let nssdb = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).expect("mkdir nssdb");
    let ca_file = home.path().join("lanchat-ca.pem");
    std::fs::write(&ca_file, pem).expect("write the CA");
    let db = format!("sql:{}", nssdb.display());
    for args in [
        vec!["-N", "-d", db.as_str(), "--empty-password"],
        vec![
            "-A",
            "-d",
            db.as_str(),
            "-n",
            "lanchat",
            "-t",
            "C,,",
            "-i",
            ca_file.to_str().expect("utf-8 path"),
        ],
    ] {
        let status = Command::new("certutil")
            .args(&args)
            .status()
            .expect("certutil (Debian: apt-get install libnss3-tools) must be installed");
        assert!(status.success(), "certutil {args:?} failed");
    }
    run_spec(
        &server,
        "tls.spec.mjs",
        vec![
            ("LANCHAT_PORT", server.addr().port().to_string()),
            ("LANCHAT_URL", server.base_url().to_owned()),
            ("LANCHAT_FINGERPRINT", fingerprint),
            ("HOME", home.path().display().to_string()),
        ],
    )
    .await;
}
