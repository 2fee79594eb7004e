//! A small harness for the admin, backup and metrics tests: runs the real
//! `lanchat` binary on a temporary data directory and talks HTTP to it.
//! (To be folded into the shared `tests/common` harness.)

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_lanchat");
pub const ADMIN_PASSWORD: &str = "admin password 1";

/// The `lanchat` command with the environment cleaned of `LANCHAT_*` settings.
pub fn lanchat() -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("LANCHAT_") {
            command.env_remove(name);
        }
    }
    command.env("LANCHAT_LOG_LEVEL", "info,lanchat::http=warn");
    command
}

/// Runs `lanchat` with `args` (and `stdin`), returning (success, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = lanchat()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lanchat");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    let output = child.wait_with_output().expect("wait for lanchat");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `lanchat --create-user NAME [--admin] --password-stdin`.
pub fn create_user(data_dir: &Path, name: &str, password: &str, admin: bool) {
    let dir = data_dir.to_str().expect("utf-8 path");
    let mut args = vec!["--data-dir", dir, "--create-user", name, "--password-stdin"];
    if admin {
        args.push("--admin");
    }
    let (ok, stdout, stderr) = run_cli(&args, Some(&format!("{password}\n")));
    assert!(ok, "create-user failed: {stdout}\n{stderr}");
}

/// A running server; killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts `lanchat` on `data_dir` with extra environment, waits for /healthz.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let log = data_dir.with_extension(format!("{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = lanchat();
        command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start lanchat");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "the server did not announce itself; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let addr = first
            .strip_prefix("lanchat listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .trim()
            .to_owned();
        let server = Server {
            child: Some(child),
            base: format!("http://{addr}"),
            data_dir: data_dir.to_owned(),
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = server.http.get(server.url("/healthz")).send().await
                && response.status() == StatusCode::OK
            {
                break;
            }
            assert!(Instant::now() < deadline, "/healthz never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A JSON request; returns the status and the body (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    /// Logs in; returns the whole token response.
    pub async fn login_full(&self, username: &str, password: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(serde_json::json!({"username": username, "password": password})),
        )
        .await
    }

    /// Logs in and returns the access token (panics on failure).
    pub async fn login(&self, username: &str, password: &str) -> String {
        let (status, body) = self.login_full(username, password).await;
        assert_eq!(status, StatusCode::OK, "login {username}: {body}");
        body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    /// Stops the server gracefully (SIGTERM), killing it if it lingers.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh data directory with an admin `admin` / [`ADMIN_PASSWORD`].
pub fn data_dir_with_admin(tmp: &Path) -> PathBuf {
    let dir = tmp.join("data");
    create_user(&dir, "admin", ADMIN_PASSWORD, true);
    dir
}

/// Content written straight into a (stopped) server's database and files
/// directory, standing in for conversations, messages and uploads: two
/// conversations, three messages (one deleted), three attachment records over two
/// distinct stored files. Returns the stored files' paths relative to the data dir.
pub fn seed_content(data_dir: &Path) -> Vec<String> {
    use sha2::Digest;
    let conn = rusqlite::Connection::open(data_dir.join("lanchat.db")).expect("open db");
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
    // Both are sent in a message: unsent uploads are cleaned up at start-up.
    conn.execute_batch(
        "INSERT INTO message_attachments (message_id, attachment_id, position) VALUES (1, 1, 0);
         INSERT INTO message_attachments (message_id, attachment_id, position) VALUES (1, 2, 1);
         INSERT INTO message_attachments (message_id, attachment_id, position) VALUES (1, 3, 2);",
    )
    .expect("link");
    // Work in progress that a backup must leave out.
    std::fs::create_dir_all(data_dir.join("files/tmp")).expect("mkdir tmp");
    std::fs::write(data_dir.join("files/tmp/upload-1"), b"partial").expect("tmp file");
    paths
}

/// Every row of every table, as text, for comparing two databases.
pub fn dump_database(path: &Path) -> Vec<(String, Vec<String>)> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
               AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%_fts%'
             ORDER BY name",
        )
        .expect("tables")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("names");
    tables
        .into_iter()
        .map(|table| {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1, 2"))
                .expect("select");
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
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("collect");
            (table, rows)
        })
        .collect()
}
