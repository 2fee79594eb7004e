//! Child server processes (lanchat, and the bench's own wire server) and the
//! HTTP calls the set-up needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub type Res<T> = Result<T, String>;

/// Environment the bench gives the lanchat server unless the caller's environment
/// already sets the variable: lifts the per-user socket cap (C10K opens hundreds
/// per user), the inbound frame rate limit (throughput workloads send far more
/// than a person), the group size cap and the registrations per address (every
/// bench user registers from loopback), and keeps access tokens valid for a long run.
pub const SERVER_ENV: &[(&str, &str)] = &[
    ("LANCHAT_AUTH_REGISTER_MAX_PER_ADDRESS", "1000000"),
    ("LANCHAT_LIMITS_MAX_CONNECTIONS_PER_USER", "1000000"),
    ("LANCHAT_LIMITS_WS_FRAMES_PER_SEC", "1000000"),
    ("LANCHAT_LIMITS_MAX_GROUP_MEMBERS", "100000"),
    ("LANCHAT_AUTH_ACCESS_TOKEN_TTL_SECS", "86400"),
    ("LANCHAT_LOG_LEVEL", "warn"),
];

/// The lanchat binary: `--server`/`LANCHAT_BENCH_SERVER`, else the release binary
/// cargo builds beside this bench (`cargo bench` builds the package's binaries
/// with the bench profile, which inherits `release`).
pub fn lanchat_binary(given: Option<&Path>) -> Res<PathBuf> {
    let path = match given {
        Some(path) => path.to_owned(),
        None => PathBuf::from(env!("CARGO_BIN_EXE_lanchat")),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the lanchat binary {} does not exist: run `cargo bench --bench load` \
             (which builds it) or pass --server PATH",
            path.display()
        ))
    }
}

/// A server running as a child process.
pub struct ChildServer {
    pub name: &'static str,
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    /// From spawn to the first successful health check (or first line for the wire server).
    pub startup: Duration,
    pub log_path: PathBuf,
}

impl ChildServer {
    /// Starts `program args...`, waits for the line `<prefix><addr>` on its stdout,
    /// then, when `health` is given, polls `GET http://addr<health>` until 200.
    pub async fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        prefix: &str,
        health: Option<&str>,
        log_path: PathBuf,
    ) -> Res<ChildServer> {
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .map_err(|_| format!("{name} printed no listening line within 60 s"))?
                .map_err(|e| e.to_string())?;
            let Some(line) = line else {
                return Err(format!(
                    "{name} exited before listening; its log {} ends with:\n{}",
                    log_path.display(),
                    tail(&log_path)
                ));
            };
            if let Some(rest) = line.trim().strip_prefix(prefix) {
                let addr = rest.trim_start_matches("http://").trim_end_matches('/');
                break addr
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("{name}: bad address in {line:?}: {e}"))?;
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        if let Some(path) = health {
            let url = format!("http://{addr}{path}");
            let http = reqwest::Client::new();
            let deadline = started + Duration::from_secs(60);
            loop {
                if let Ok(response) = http.get(&url).send().await
                    && response.status().is_success()
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{name} did not become healthy within 60 s"));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(ChildServer {
            name,
            child,
            pid,
            addr,
            startup: started.elapsed(),
            log_path,
        })
    }

    /// SIGTERM, then SIGKILL if it has not exited within 20 s.
    pub async fn stop(mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("  ({} did not stop within 20 s; killing it)", self.name);
            let _ = self.child.kill().await;
        }
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Starts the lanchat release server on a loopback port with `data_dir`.
pub async fn start_lanchat(binary: &Path, data_dir: &Path) -> Res<ChildServer> {
    std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
    let args = vec![
        "--data-dir".to_owned(),
        data_dir.display().to_string(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    let env: Vec<(String, String)> = SERVER_ENV
        .iter()
        .filter(|(key, _)| std::env::var_os(key).is_none())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let log = data_dir.with_extension("server.log");
    ChildServer::spawn(
        "lanchat",
        binary,
        &args,
        &env,
        "lanchat listening on ",
        Some("/healthz"),
        log,
    )
    .await
}

/// A registered user.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: i64,
    pub token: String,
}

/// The lanchat HTTP API, as much as the bench needs.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub addr: SocketAddr,
    /// WebSockets over TLS (`wss://`, see `client::trust`).
    pub tls: bool,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .tcp_nodelay(true)
                .build()
                .expect("http client"),
            base: format!("http://{addr}/api/v1"),
            addr,
            tls: false,
        }
    }

    pub fn ws_url(&self, token: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/api/v1/ws?token={token}", self.addr)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Res<(u16, Value)> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    fn expect(what: &str, (status, value): (u16, Value), ok: &[u16]) -> Res<Value> {
        if ok.contains(&status) {
            Ok(value)
        } else {
            Err(format!("{what}: HTTP {status} {value}"))
        }
    }

    fn account(value: &Value) -> Res<Account> {
        let id = value["user"]["id"]
            .as_i64()
            .ok_or("no user.id in the answer")?;
        let token = value["access_token"]
            .as_str()
            .ok_or("no access_token in the answer")?
            .to_owned();
        Ok(Account { id, token })
    }

    pub async fn register(&self, username: &str, password: &str) -> Res<Account> {
        let body = json!({"username": username, "password": password});
        let answer = self
            .call(reqwest::Method::POST, "/auth/register", None, Some(body))
            .await?;
        Self::account(&Self::expect("register", answer, &[200, 201])?)
    }

    pub async fn login(&self, username: &str, password: &str) -> Res<Account> {
        let body = json!({"username": username, "password": password});
        let answer = self
            .call(reqwest::Method::POST, "/auth/login", None, Some(body))
            .await?;
        Self::account(&Self::expect("login", answer, &[200])?)
    }

    /// Registers `count` users named `<prefix><n>`, a few at a time (each costs
    /// an Argon2 hash on the server).
    pub async fn register_many(&self, prefix: &str, count: usize) -> Res<Vec<Account>> {
        use futures_util::StreamExt;
        let results: Vec<Res<Account>> = futures_util::stream::iter(0..count)
            .map(|n| {
                let api = self.clone();
                let name = format!("{prefix}{n}");
                async move { api.register(&name, "bench-password").await }
            })
            .buffered(4)
            .collect()
            .await;
        results.into_iter().collect()
    }

    pub async fn direct(&self, token: &str, peer: i64) -> Res<i64> {
        let body = json!({"kind": "direct", "user_id": peer});
        let answer = self
            .call(
                reqwest::Method::POST,
                "/conversations",
                Some(token),
                Some(body),
            )
            .await?;
        let value = Self::expect("create direct conversation", answer, &[200, 201])?;
        value["id"]
            .as_i64()
            .ok_or_else(|| "no id in the conversation".to_owned())
    }

    pub async fn group(&self, token: &str, title: &str, members: &[i64]) -> Res<i64> {
        let body = json!({"kind": "group", "title": title, "member_ids": members});
        let answer = self
            .call(
                reqwest::Method::POST,
                "/conversations",
                Some(token),
                Some(body),
            )
            .await?;
        let value = Self::expect("create group", answer, &[200, 201])?;
        value["id"]
            .as_i64()
            .ok_or_else(|| "no id in the conversation".to_owned())
    }

    /// A timed GET; the body is read to the end (and parsed, as a client would).
    pub async fn timed_get(&self, token: &str, path: &str) -> Res<(Duration, Value)> {
        let started = Instant::now();
        let (status, value) = self
            .call(reqwest::Method::GET, path, Some(token), None)
            .await?;
        let took = started.elapsed();
        if status != 200 {
            return Err(format!("GET {path}: HTTP {status} {value}"));
        }
        Ok((took, value))
    }
}
