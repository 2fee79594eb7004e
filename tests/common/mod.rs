//! The shared integration-test harness: runs the real `lanchat` binary on a
//! loopback ephemeral port with a temporary data directory, and talks to it with a
//! real HTTP (and WebSocket) client.
//!
//! Every test file of the project can use it with `mod common;`:
//!
//! ```ignore
//! mod common;
//! use common::*;
//!
//! #[tokio::test]
//! async fn example() {
//!     let server = TestServer::start().await;
//!     let alice = server.register("alice").await;
//!     let (status, me) = server.get("/api/v1/users/me", &alice).await;
//!     assert_eq!(status, 200, "{me}");
//! }
//! ```
//!
//! What it guarantees:
//!
//! - **Isolation.** Each [`TestServer`] owns a [`Sandbox`] (a temporary directory with
//!   the data directory in `data/`), listens on `127.0.0.1:0` and is killed when
//!   dropped, so tests run in parallel without sharing anything. `LANCHAT_*`
//!   variables of the developer's environment are not passed to the child; only
//!   what [`ServerOptions`] sets is.
//! - **No sleeps.** Start-up reads the real address from the first stdout line
//!   (`lanchat listening on http://ADDR`), then polls `GET /healthz` with a short
//!   back-off until it answers 200, within [`START_DEADLINE`].
//! - **Diagnostics.** The server's stderr (its logs) is captured; when a test panics
//!   while a server is alive, the tail of that log is printed with the failure.
//! - **No 500s.** Every response that goes through [`TestServer::send`] (which all
//!   the HTTP helpers use) is checked: a `500` fails the test on the spot, with the
//!   server log, because the contract says a 500 is always a bug. Use
//!   [`TestServer::send_unchecked`] in the rare test that expects one.
//!
//! Conventions: statuses are plain `u16`s, bodies are `serde_json::Value`s (`Null`
//! for an empty body, a `Value::String` holding the text when it is not JSON).
//! Users created by the helpers have the password [`PASSWORD`].

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
pub use reqwest::Method;
pub use reqwest::header::HeaderMap;
pub use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The binary under test, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_lanchat");
/// The password of every user the helpers create.
pub const PASSWORD: &str = "correct horse battery";
/// How long a server may take from spawn to answering `/healthz`.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a one-shot command (`--migrate`, `--create-user`...) may run.
pub const CLI_DEADLINE: Duration = Duration::from_secs(60);
/// How long a graceful stop (SIGTERM) may take before the server is killed.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Per-request timeout of the HTTP client.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The first stdout line of a serving lanchat, followed by its address.
pub const LISTENING_PREFIX: &str = "lanchat listening on http://";

// ---------------------------------------------------------------------------
// Sandbox: a temporary home for one server, and one-shot commands in it.
// ---------------------------------------------------------------------------

/// A temporary directory holding a data directory (`data/`) and whatever else a
/// test needs beside it (config files). Deleted when dropped.
pub struct Sandbox {
    root: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = tempfile::Builder::new()
            .prefix("lanchat-test-")
            .tempdir()
            .expect("create a temporary directory");
        Sandbox { root }
    }

    /// The temporary directory (the working directory of every process run here).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The data directory passed as `--data-dir` (created by lanchat itself).
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The SQLite database inside the data directory.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join("lanchat.db")
    }

    /// Writes `contents` to `name` in the sandbox (not in the data directory) and
    /// returns its path, e.g. for `--config`.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.root.path().join(name);
        std::fs::write(&path, contents).expect("write a sandbox file");
        path
    }

    /// Opens the database directly, to inspect it or to set up states the API
    /// cannot reach (a disabled user, a tampered migration). Stop the server first
    /// when you change something it caches (users' disabled flag, settings).
    pub fn db(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.db_path()).expect("open lanchat.db");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("set a busy timeout");
        conn
    }

    /// The JWT signing secret the server generated in the data directory.
    pub fn jwt_secret(&self) -> Vec<u8> {
        let text =
            std::fs::read_to_string(self.data_dir().join("jwt.secret")).expect("read jwt.secret");
        hex::decode(text.trim()).expect("jwt.secret is hex")
    }

    /// The binary with `--data-dir <sandbox>/data`, run in the sandbox, with the
    /// developer's `LANCHAT_*` variables removed.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.root.path());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LANCHAT_") {
                cmd.env_remove(name);
            }
        }
        cmd.arg("--data-dir").arg(self.data_dir());
        cmd
    }

    /// Runs a one-shot command (`--migrate`, `--create-user`, `reset-password`...)
    /// to completion with `stdin` piped in (or no stdin at all, so it is never a
    /// terminal). Panics if it runs past [`CLI_DEADLINE`].
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        self.run_with_env(args, &[], stdin)
    }

    /// [`Sandbox::run`] with extra environment variables.
    pub fn run_with_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> CliOutput {
        let mut cmd = self.command();
        cmd.args(args);
        for (name, value) in env {
            cmd.env(name, value);
        }
        run_command(cmd, stdin)
    }

    /// `lanchat --create-user NAME [--admin] --password-stdin` with [`PASSWORD`];
    /// panics unless it succeeds.
    pub fn create_user(&self, name: &str, admin: bool) -> CliOutput {
        let mut args = vec!["--create-user", name];
        if admin {
            args.push("--admin");
        }
        args.push("--password-stdin");
        let out = self.run(&args, Some(&format!("{PASSWORD}\n")));
        out.assert_success();
        out
    }

    /// Writes content straight into the database and the files directory, standing
    /// in for conversations, messages and uploads (for backups and statistics):
    /// two conversations, three messages (one deleted), three attachment records
    /// over two distinct stored files, all sent by user 1 (create a user first,
    /// and start the server after). Returns the stored files' paths relative to
    /// the data directory. Also leaves an upload in progress in `files/tmp/`, which
    /// a backup must leave out. The server indexes the messages for search itself.
    pub fn seed_content(&self) -> Vec<String> {
        use sha2::Digest;
        let data_dir = self.data_dir();
        let conn = self.db();
        conn.execute_batch(
            "INSERT INTO conversations (id, kind, title, created_by, created_at, last_activity_at)
                 VALUES (1, 'channel', 'general', 1, 1000, 1000),
                        (2, 'group', 'team', 1, 1000, 1000);
             INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES (1, 1, 'owner', 1000);
             INSERT INTO messages (id, conversation_id, sender_id, body, created_at)
                 VALUES (1, 1, 1, 'hello world', 1001), (2, 1, 1, 'second', 1002);
             INSERT INTO messages (id, conversation_id, sender_id, body, created_at, deleted_at)
                 VALUES (3, 1, 1, '', 1003, 1004);",
        )
        .expect("seed rows");
        let contents: [&[u8]; 2] = [
            b"first attachment bytes",
            b"second attachment, longer bytes",
        ];
        let mut paths = Vec::new();
        for (i, content) in contents.iter().enumerate() {
            let sha = hex::encode(sha2::Sha256::digest(content));
            let relative = format!("files/{}/{}", &sha[..2], &sha[2..]);
            let path = data_dir.join(&relative);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, content).expect("write file");
            paths.push(relative);
            // The first content is uploaded twice (deduplicated on disk).
            for copy in 0..(if i == 0 { 2 } else { 1 }) {
                conn.execute(
                    "INSERT INTO attachments (uploader_id, name, mime, size, sha256, created_at)
                     VALUES (1, ?1, 'application/octet-stream', ?2, ?3, 1000)",
                    rusqlite::params![format!("f{i}-{copy}.bin"), content.len() as i64, sha],
                )
                .expect("attachment row");
            }
        }
        // All are sent in a message: unsent uploads are cleaned up at start-up.
        conn.execute_batch(
            "INSERT INTO message_attachments (message_id, attachment_id, position) VALUES (1, 1, 0);
             INSERT INTO message_attachments (message_id, attachment_id, position) VALUES (1, 2, 1);
             INSERT INTO message_attachments (message_id, attachment_id, position) VALUES (1, 3, 2);",
        )
        .expect("link");
        std::fs::create_dir_all(data_dir.join("files/tmp")).expect("mkdir tmp");
        std::fs::write(data_dir.join("files/tmp/upload-1"), b"partial").expect("tmp file");
        paths
    }
}

/// What a finished one-shot command left.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, showing both streams, unless the command exited with 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "command failed: {self}");
        self
    }

    /// Panics unless the command exited non-zero; returns stderr for assertions.
    pub fn assert_failure(&self) -> &str {
        assert!(
            !self.status.success(),
            "command succeeded but should have failed: {self}"
        );
        &self.stderr
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion (see [`Sandbox::run`]).
pub fn run_command(mut cmd: Command, stdin: Option<&str>) -> CliOutput {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn lanchat");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // The command may exit without reading (bad arguments): ignore EPIPE.
        let _ = pipe.write_all(input.as_bytes());
    }
    let stdout = read_to_string_thread(child.stdout.take().expect("stdout pipe"));
    let stderr = read_to_string_thread(child.stderr.take().expect("stderr pipe"));
    let deadline = Instant::now() + CLI_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for lanchat") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "lanchat {:?} ran for more than {CLI_DEADLINE:?}\n--- stdout ---\n{}--- stderr ---\n{}",
                cmd.get_args().collect::<Vec<_>>(),
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    CliOutput {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_to_string_thread(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// rustls (under reqwest and the TLS tests) uses ring, as the server does:
/// install it as the process default once, before any client is built.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

// ---------------------------------------------------------------------------
// Server options.
// ---------------------------------------------------------------------------

/// How to start a [`TestServer`]: extra environment, extra arguments, admins to
/// create beforehand. Kept for [`TestServer::restart`].
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    env: Vec<(String, String)>,
    args: Vec<String>,
    listen_flag: bool,
    admins: Vec<String>,
}

impl ServerOptions {
    pub fn new() -> ServerOptions {
        ServerOptions {
            listen_flag: true,
            ..Default::default()
        }
    }

    /// Sets an environment variable, e.g. `("LANCHAT_AUTH_REGISTRATION", "closed")`.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a command-line argument (after `--data-dir` and `--listen`).
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.args.push(arg.as_ref().to_string_lossy().into_owned());
        self
    }

    /// Does not pass `--listen 127.0.0.1:0`: the test provides the address through
    /// the config file or `LANCHAT_SERVER_LISTEN` (use port 0 there too).
    pub fn without_listen_flag(mut self) -> Self {
        self.listen_flag = false;
        self
    }

    /// Creates an admin with `--create-user NAME --admin --password-stdin`
    /// (password [`PASSWORD`]) before the first start; log in with
    /// [`TestServer::login`].
    pub fn admin(mut self, name: &str) -> Self {
        self.admins.push(name.to_owned());
        self
    }
}

// ---------------------------------------------------------------------------
// The server.
// ---------------------------------------------------------------------------

/// A running (or stopped, between [`TestServer::stop`] and
/// [`TestServer::start_again`]) lanchat server. Killed when dropped.
pub struct TestServer {
    sandbox: Sandbox,
    options: ServerOptions,
    client: reqwest::Client,
    run: Option<Running>,
    /// stderr of every run of this server, in order.
    log: Arc<Mutex<String>>,
    runs: usize,
}

struct Running {
    child: Child,
    addr: SocketAddr,
    base: String,
    stdout: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl TestServer {
    /// A fresh server with default settings and no admin.
    pub async fn start() -> TestServer {
        Self::start_with(ServerOptions::new()).await
    }

    /// A fresh server with extra environment, arguments or admins.
    pub async fn start_with(options: ServerOptions) -> TestServer {
        Self::start_in(Sandbox::new(), options).await
    }

    /// A server on an existing sandbox (prepared with one-shot commands first).
    pub async fn start_in(sandbox: Sandbox, options: ServerOptions) -> TestServer {
        for name in &options.admins {
            let env: Vec<(&str, &str)> = options
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            sandbox
                .run_with_env(
                    &["--create-user", name, "--admin", "--password-stdin"],
                    &env,
                    Some(&format!("{PASSWORD}\n")),
                )
                .assert_success();
        }
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build the HTTP client");
        let mut server = TestServer {
            sandbox,
            options,
            client,
            run: None,
            log: Arc::new(Mutex::new(String::new())),
            runs: 0,
        };
        server.start_again().await;
        server
    }

    /// Starts the stopped server again on the same data directory (a new port).
    pub async fn start_again(&mut self) {
        assert!(self.run.is_none(), "the server is already running");
        self.runs += 1;
        if self.runs > 1 {
            let mut log = self.log.lock().expect("log lock");
            log.push_str(&format!("----- start #{} -----\n", self.runs));
        }
        let mut cmd = self.sandbox.command();
        if self.options.listen_flag {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        // No multicast from tests onto the machine's networks (tests/mdns.rs
        // runs it in a network namespace of its own); options may turn it on.
        cmd.env("LANCHAT_MDNS_ENABLED", "false");
        // Uploads must not depend on how full the test machine's disk is; the
        // reserve's own test sets it.
        cmd.env("LANCHAT_LIMITS_MIN_FREE_DISK_BYTES", "0");
        cmd.args(&self.options.args);
        for (name, value) in &self.options.env {
            cmd.env(name, value);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn lanchat");
        let deadline = Instant::now() + START_DEADLINE;

        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let stdout = child.stdout.take().expect("stdout pipe");
        let lines = stdout_lines.clone();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().expect("stdout lock").push(line.clone());
                let _ = tx.send(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = self.log.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                log.lock().expect("log lock").push_str(&line);
                line.clear();
            }
        });
        let readers = vec![stdout_reader, stderr_reader];

        // The first stdout line names the address (the port is chosen by the OS).
        let first = tokio::time::timeout_at(deadline.into(), async {
            while let Some(line) = rx.recv().await {
                if let Some(addr) = line.strip_prefix(LISTENING_PREFIX) {
                    return Some(addr.trim().to_owned());
                }
            }
            None
        })
        .await;
        let addr = match first {
            Ok(Some(addr)) => addr,
            Ok(None) => {
                let status = child.wait().ok();
                for reader in readers {
                    let _ = reader.join();
                }
                panic!(
                    "lanchat exited ({status:?}) before listening\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "lanchat did not print its address within {START_DEADLINE:?}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
        };
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|_| panic!("unexpected listening address {addr:?}"));
        let base = format!("http://{addr}");

        // Ready once /healthz answers 200.
        let mut delay = Duration::from_millis(5);
        loop {
            if let Some(status) = child.try_wait().expect("poll lanchat") {
                for reader in readers {
                    let _ = reader.join();
                }
                panic!(
                    "lanchat exited ({status}) while starting\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            let probe = self
                .client
                .get(format!("{base}/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(&probe, Ok(response) if response.status() == 200) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "lanchat did not answer /healthz within {START_DEADLINE:?} (last: {probe:?})\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
        self.run = Some(Running {
            child,
            addr,
            base,
            stdout: stdout_lines,
            readers,
        });
    }

    /// Stops the server gracefully (SIGTERM), waits for it to exit and returns its
    /// exit status. Falls back to SIGKILL after [`STOP_DEADLINE`].
    pub async fn stop(&mut self) -> ExitStatus {
        let mut run = self.run.take().expect("the server is not running");
        let pid = run.child.id().to_string();
        let signalled = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !signalled {
            let _ = run.child.kill();
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        let status = loop {
            if let Some(status) = run.child.try_wait().expect("wait for lanchat") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = run.child.kill();
                let status = run.child.wait().expect("wait for lanchat");
                self.log
                    .lock()
                    .expect("log lock")
                    .push_str("----- harness: SIGTERM timed out, killed -----\n");
                break status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        for reader in run.readers {
            let _ = reader.join();
        }
        status
    }

    /// Kills the server at once (SIGKILL), like a crash or a power cut of the process.
    pub fn kill(&mut self) {
        let mut run = self.run.take().expect("the server is not running");
        let _ = run.child.kill();
        let _ = run.child.wait();
        for reader in run.readers {
            let _ = reader.join();
        }
    }

    /// Stops gracefully and starts again on the same data directory. The address
    /// changes; tokens and data survive.
    pub async fn restart(&mut self) {
        let status = self.stop().await;
        assert!(
            status.success(),
            "lanchat exited with {status} on SIGTERM\n--- stderr ---\n{}",
            self.stderr()
        );
        self.start_again().await;
    }

    /// Sets (or replaces) an environment variable for the next start: between
    /// [`TestServer::stop`] and [`TestServer::start_again`], to run the same data
    /// directory with another setting.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.options.env.retain(|(key, _)| key != name);
        self.options.env.push((name.to_owned(), value.to_owned()));
    }

    pub fn is_running(&self) -> bool {
        self.run.is_some()
    }

    fn running(&self) -> &Running {
        self.run.as_ref().expect("the server is not running")
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub fn data_dir(&self) -> PathBuf {
        self.sandbox.data_dir()
    }

    /// See [`Sandbox::db`].
    pub fn db(&self) -> rusqlite::Connection {
        self.sandbox.db()
    }

    pub fn jwt_secret(&self) -> Vec<u8> {
        self.sandbox.jwt_secret()
    }

    pub fn pid(&self) -> u32 {
        self.running().child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.running().addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> &str {
        &self.running().base
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running().base)
    }

    /// The `ws://` URL of `path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.running().addr)
    }

    /// The shared HTTP client (no proxy, [`REQUEST_TIMEOUT`]).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The stdout lines of the current run so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.running().stdout.lock().expect("stdout lock").clone()
    }

    /// Everything the server wrote on stderr (all runs) so far.
    pub fn stderr(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until the server's stderr contains `needle` (within 10 s) and returns
    /// the whole log; panics otherwise.
    pub async fn wait_for_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the server log never showed {needle:?}\n--- stderr ---\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The one-time setup token, from the setup link the server writes to
    /// `setup-link.txt` in the data directory while no admin exists (it prints it
    /// only on a terminal), or `None` once setup is done (as `GET /api/v1/setup`
    /// says).
    pub async fn setup_token(&self) -> Option<String> {
        let (status, body) = self.get("/api/v1/setup", ANON).await;
        assert_eq!(status, 200, "{body}");
        if body["needs_setup"] != json!(true) {
            return None;
        }
        let path = self.data_dir().join("setup-link.txt");
        let link = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!(
                "needs_setup is true but {} cannot be read: {err}",
                path.display()
            )
        });
        let (_, token) = link
            .split_once("/setup?token=")
            .unwrap_or_else(|| panic!("no setup link in {}: {link:?}", path.display()));
        Some(token.trim().to_owned())
    }

    // -- HTTP ---------------------------------------------------------------

    /// A request to `path` on this server, to customise before [`TestServer::send`].
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends a request and reads the whole response. Fails the test on a 500.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let reply = self.send_unchecked(request).await;
        if reply.status == 500 {
            panic!(
                "the server answered 500 {} {}: {}\n--- stderr ---\n{}",
                reply.method,
                reply.url,
                reply.text,
                tail(&self.stderr(), 60)
            );
        }
        reply
    }

    /// [`TestServer::send`] without the 500 check.
    pub async fn send_unchecked(&self, request: reqwest::RequestBuilder) -> Reply {
        let request = request.build().expect("build the request");
        let method = request.method().clone();
        let url = request.url().to_string();
        let response = self.client.execute(request).await.unwrap_or_else(|err| {
            panic!(
                "{method} {url} failed: {err:?}\n--- stderr ---\n{}",
                tail(&self.stderr(), 60)
            )
        });
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .unwrap_or_else(|err| panic!("reading the body of {method} {url} failed: {err:?}"));
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
        };
        Reply {
            method,
            url,
            status,
            headers,
            bytes: bytes.to_vec(),
            text,
            json,
        }
    }

    /// Sends `method path` with an optional JSON body and bearer token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: impl Bearer,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.request(method, path);
        if let Some(token) = auth.bearer() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await.into_pair()
    }

    pub async fn get(&self, path: &str, auth: impl Bearer) -> (u16, Value) {
        self.call(Method::GET, path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: impl Bearer, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, auth, Some(&body)).await
    }

    pub async fn patch(&self, path: &str, auth: impl Bearer, body: Value) -> (u16, Value) {
        self.call(Method::PATCH, path, auth, Some(&body)).await
    }

    /// PUT without a body (`/users/{id}/block`, `/mute`, reactions...).
    pub async fn put(&self, path: &str, auth: impl Bearer) -> (u16, Value) {
        self.call(Method::PUT, path, auth, None).await
    }

    pub async fn delete(&self, path: &str, auth: impl Bearer) -> (u16, Value) {
        self.call(Method::DELETE, path, auth, None).await
    }

    /// POSTs JSON for a set-up step (a conversation, a message); panics unless
    /// the answer is a 2xx, and returns its body.
    pub async fn post_ok(&self, path: &str, auth: impl Bearer, body: Value) -> Value {
        let (status, reply) = self.post(path, auth, body).await;
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {reply}"
        );
        reply
    }

    /// Uploads `bytes` as the `file` field of a multipart body to
    /// `POST /api/v1/attachments`; panics unless 201, and returns the attachment.
    pub async fn upload(&self, auth: impl Bearer, bytes: &[u8], name: &str, mime: &str) -> Value {
        let mut request = self
            .request(Method::POST, "/api/v1/attachments")
            .multipart(file_form(bytes.to_vec(), name, mime));
        if let Some(token) = auth.bearer() {
            request = request.bearer_auth(token);
        }
        let reply = self.send(request).await;
        assert_eq!(reply.status, 201, "upload of {name}: {}", reply.text);
        reply.json
    }

    /// A GET written by hand on a fresh TCP connection, so that the path reaches
    /// the server exactly as given (an HTTP client would resolve `..` first).
    /// Returns the status and the whole response (head and body) as text; fails
    /// the test on a 500 like [`TestServer::send`].
    pub async fn raw_get(&self, path: &str, auth: impl Bearer) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.addr();
        let authorization = auth
            .bearer()
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n"
        );
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| panic!("raw GET {path} timed out"))
            .unwrap_or_else(|err| panic!("raw GET {path} failed: {err}"));
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if status == 500 {
            panic!(
                "the server answered 500 to a raw GET {path}: {text}\n--- stderr ---\n{}",
                tail(&self.stderr(), 60)
            );
        }
        (status, text)
    }

    // -- Accounts -----------------------------------------------------------

    /// The direct conversation of `a` and `b` (created or existing); its id.
    pub async fn direct(&self, a: &Session, b: &Session) -> i64 {
        let (status, body) = self
            .post(
                "/api/v1/conversations",
                a,
                json!({"kind": "direct", "user_id": b.user_id}),
            )
            .await;
        assert!(
            status == 201 || status == 200,
            "direct conversation: {body}"
        );
        body["id"].as_i64().expect("conversation id")
    }

    /// Registers `username` with [`PASSWORD`]; panics unless 201.
    pub async fn register(&self, username: &str) -> Session {
        self.register_with(json!({ "username": username, "password": PASSWORD }))
            .await
    }

    /// Registers with a full request body; panics unless 201.
    pub async fn register_with(&self, body: Value) -> Session {
        let password = body["password"].as_str().unwrap_or_default().to_owned();
        let (status, reply) = self.post("/api/v1/auth/register", ANON, body).await;
        assert_eq!(status, 201, "register failed: {reply}");
        Session::from_tokens(&reply, &password)
    }

    /// Logs in; panics unless 200.
    pub async fn login(&self, username: &str, password: &str) -> Session {
        let (status, reply) = self.try_login(username, password).await;
        assert_eq!(status, 200, "login of {username} failed: {reply}");
        Session::from_tokens(&reply, password)
    }

    /// Logs in and returns whatever the server answered.
    pub async fn try_login(&self, username: &str, password: &str) -> (u16, Value) {
        self.post(
            "/api/v1/auth/login",
            ANON,
            json!({ "username": username, "password": password }),
        )
        .await
    }

    /// Presents a refresh token and returns whatever the server answered.
    pub async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        self.post(
            "/api/v1/auth/refresh",
            ANON,
            json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    /// Creates the first admin through `POST /api/v1/setup` with the printed
    /// token; panics unless 201.
    pub async fn setup_admin(&self, username: &str) -> Session {
        let token = self
            .setup_token()
            .await
            .expect("setup is already done on this server");
        let (status, reply) = self
            .post(
                "/api/v1/setup",
                ANON,
                json!({ "setup_token": token, "username": username, "password": PASSWORD }),
            )
            .await;
        assert_eq!(status, 201, "setup failed: {reply}");
        Session::from_tokens(&reply, PASSWORD)
    }

    // -- WebSocket ----------------------------------------------------------

    /// Opens `/api/v1/ws?token=...`; panics unless the upgrade succeeds.
    pub async fn ws_connect(&self, token: &str) -> WsClient {
        self.ws_connect_path(&format!("/api/v1/ws?token={token}"))
            .await
            .unwrap_or_else(|err| panic!("WebSocket connect failed: {err}"))
    }

    /// [`TestServer::ws_connect`], then reads the `hello` frame (panics unless
    /// it comes first).
    pub async fn ws_connect_hello(&self, token: &str) -> WsClient {
        let mut ws = self.ws_connect(token).await;
        let hello = ws.recv_json(Duration::from_secs(10)).await;
        assert_eq!(hello["type"], "hello", "{hello}");
        ws
    }

    /// Opens a WebSocket on any path and query (`/api/v1/ws?token=..&since=..`);
    /// the error tells why an upgrade was refused (for a refused upgrade it holds
    /// the HTTP response).
    pub async fn ws_connect_path(
        &self,
        path_and_query: &str,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let url = self.ws_url(path_and_query);
        let (stream, _response) = tokio::time::timeout(
            REQUEST_TIMEOUT,
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .unwrap_or_else(|_| panic!("WebSocket connect to {url} timed out"))?;
        Ok(WsClient { stream })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut run) = self.run.take() {
            let _ = run.child.kill();
            let _ = run.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- lanchat server log (last lines, {} run(s)) -----\n{}",
                self.runs,
                tail(&self.stderr(), 80)
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

// ---------------------------------------------------------------------------
// Replies, credentials, sessions.
// ---------------------------------------------------------------------------

/// A whole HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub method: Method,
    pub url: String,
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as it came (files, images, ranges).
    pub bytes: Vec<u8>,
    /// The body as text (lossy UTF-8).
    pub text: String,
    /// The body as JSON: `Null` when empty, a `Value::String` of the text when not JSON.
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn into_pair(self) -> (u16, Value) {
        (self.status, self.json)
    }
}

/// Anything that can authenticate a request: an access token (`&str`,
/// `String`), a [`Session`], or [`ANON`] for none.
pub trait Bearer {
    fn bearer(&self) -> Option<&str>;
}

/// No `Authorization` header.
#[derive(Debug, Clone, Copy)]
pub struct Anonymous;
pub const ANON: Anonymous = Anonymous;

impl Bearer for Anonymous {
    fn bearer(&self) -> Option<&str> {
        None
    }
}

impl Bearer for str {
    fn bearer(&self) -> Option<&str> {
        Some(self)
    }
}

impl Bearer for String {
    fn bearer(&self) -> Option<&str> {
        Some(self)
    }
}

impl Bearer for Session {
    fn bearer(&self) -> Option<&str> {
        Some(&self.access_token)
    }
}

impl<T: Bearer + ?Sized> Bearer for &T {
    fn bearer(&self) -> Option<&str> {
        (**self).bearer()
    }
}

impl<T: Bearer> Bearer for Option<T> {
    fn bearer(&self) -> Option<&str> {
        self.as_ref().and_then(Bearer::bearer)
    }
}

/// A signed-in device: what register, login, setup and refresh return.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: i64,
    pub username: String,
    pub password: String,
    pub access_token: String,
    pub refresh_token: String,
    /// The `user` object of the token response.
    pub user: Value,
}

impl Session {
    /// Reads the contract's token response `{user, access_token, refresh_token,
    /// expires_in}`, checking its shape.
    pub fn from_tokens(body: &Value, password: &str) -> Session {
        let field = |name: &str| {
            body[name]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| panic!("token response without {name}: {body}"))
                .to_owned()
        };
        assert!(
            body["expires_in"].as_u64().is_some_and(|s| s > 0),
            "token response without expires_in: {body}"
        );
        Session {
            user_id: body["user"]["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("token response without user.id: {body}")),
            username: body["user"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            password: password.to_owned(),
            access_token: field("access_token"),
            refresh_token: field("refresh_token"),
            user: body["user"].clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// Uploads and database dumps.
// ---------------------------------------------------------------------------

/// A multipart body with one `file` field holding `bytes`, named and typed as a
/// browser would send it (see [`TestServer::upload`]).
pub fn file_form(bytes: Vec<u8>, name: &str, mime: &str) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(mime)
        .expect("a valid MIME type");
    reqwest::multipart::Form::new().part("file", part)
}

/// Every row of every table of the database at `path` (the search indexes and
/// their watermark aside: the background indexer may move them at any moment), as text, table by table: to compare two databases (a backup and its
/// restore).
pub fn dump_database(path: &Path) -> Vec<(String, Vec<String>)> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database read-only");
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
               AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%_fts%'
               AND name NOT LIKE 'messages_cjk%' AND name != 'search_index_state'
             ORDER BY name",
        )
        .expect("list tables")
        .query_map([], |row| row.get(0))
        .expect("list tables")
        .collect::<Result<_, _>>()
        .expect("table names");
    tables
        .into_iter()
        .map(|table| {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1, 2"))
                .expect("select rows");
            let columns = stmt.column_count();
            let rows: Vec<String> = stmt
                .query_map([], |row| {
                    let mut cells = Vec::with_capacity(columns);
                    for i in 0..columns {
                        let value: rusqlite::types::Value = row.get(i)?;
                        cells.push(format!("{value:?}"));
                    }
                    Ok(cells.join("|"))
                })
                .expect("read rows")
                .collect::<Result<_, _>>()
                .expect("rows");
            (table, rows)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Assertions and token crafting.
// ---------------------------------------------------------------------------

/// Asserts a contract error: this status, body `{"error": {"code": code,
/// "message": <non-empty>}}`. Returns the error object for further checks.
#[track_caller]
pub fn assert_error(reply: &(u16, Value), status: u16, code: &str) -> Value {
    let (got_status, body) = reply;
    assert_eq!(*got_status, status, "unexpected status, body: {body}");
    let error = &body["error"];
    assert_eq!(error["code"], json!(code), "unexpected error code: {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
    error.clone()
}

/// [`assert_error`] plus the `field` at fault.
#[track_caller]
pub fn assert_field_error(reply: &(u16, Value), status: u16, code: &str, field: &str) {
    let error = assert_error(reply, status, code);
    assert_eq!(error["field"], json!(field), "unexpected field: {error}");
}

/// Signs `claims` as an HS256 JWT with `secret` (the server's, from
/// [`Sandbox::jwt_secret`], or any other to forge one).
pub fn sign_jwt(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign a JWT")
}

/// The claims of a JWT, decoded without checking anything.
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&base64_url_decode(payload)).expect("JWT claims are JSON")
}

/// Decodes unpadded base64url (JWT segments).
pub fn base64_url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET
            .iter()
            .position(|c| *c == byte)
            .expect("base64url character") as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

/// Encodes unpadded base64url (to build JWT segments by hand).
pub fn base64_url_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

// ---------------------------------------------------------------------------
// WebSocket client.
// ---------------------------------------------------------------------------

/// A WebSocket connection to the server, speaking JSON text frames.
pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

/// What [`WsClient::next_frame`] saw.
#[derive(Debug)]
pub enum WsFrame {
    /// A text frame, parsed (a `Value::String` when not JSON).
    Json(Value),
    Binary(Vec<u8>),
    /// The server closed: its close code and reason, if it sent any.
    Closed(Option<(u16, String)>),
}

impl WsClient {
    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a raw text frame (for malformed-frame tests).
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_owned()))
            .await
            .expect("send a WebSocket frame");
    }

    /// The next data frame or the close, skipping pings and pongs; `None` after
    /// `timeout` without one.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<WsFrame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            return Some(match next {
                None => WsFrame::Closed(None),
                Some(Err(_)) => WsFrame::Closed(None),
                Some(Ok(Message::Text(text))) => WsFrame::Json(
                    serde_json::from_str(text.as_str())
                        .unwrap_or_else(|_| Value::String(text.to_string())),
                ),
                Some(Ok(Message::Binary(bytes))) => WsFrame::Binary(bytes.to_vec()),
                Some(Ok(Message::Close(frame))) => {
                    WsFrame::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
                }
                Some(Ok(_)) => continue,
            });
        }
    }

    /// The next JSON frame; panics on close, binary or after `timeout`.
    pub async fn recv_json(&mut self, timeout: Duration) -> Value {
        match self.next_frame(timeout).await {
            Some(WsFrame::Json(value)) => value,
            other => panic!("expected a JSON frame within {timeout:?}, got {other:?}"),
        }
    }

    /// Reads frames until one has `"type": kind` and returns it; panics after
    /// `timeout` or on close.
    pub async fn recv_type(&mut self, kind: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.recv_json(left).await;
            if frame["type"] == json!(kind) {
                return frame;
            }
        }
    }

    /// Waits for the server to close; returns its close code (None if it dropped
    /// the connection without a close frame). Panics on a data frame or timeout.
    pub async fn expect_close(&mut self, timeout: Duration) -> Option<u16> {
        match self.next_frame(timeout).await {
            Some(WsFrame::Closed(frame)) => frame.map(|(code, _)| code),
            other => panic!("expected the server to close within {timeout:?}, got {other:?}"),
        }
    }

    /// Asserts that nothing but pings arrives for `duration`.
    pub async fn expect_silence(&mut self, duration: Duration) {
        if let Some(frame) = self.next_frame(duration).await {
            panic!("expected no frame for {duration:?}, got {frame:?}");
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
