//! The command line and the process: `--version`, `--help`, `--migrate`,
//! `--create-user`, `reset-password`, the data-directory lock, configuration
//! layers, graceful stop and restart.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

/// `(version, "NNNN_name")` of every migration file the binary embeds.
fn schema_files() -> Vec<(i64, String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
        .expect("read schema/")
        .filter_map(|entry| {
            let path = entry.expect("schema entry").path();
            let stem = path.file_name()?.to_str()?.strip_suffix(".sql")?.to_owned();
            let version = stem.split_once('_')?.0.parse().ok()?;
            let sql = std::fs::read(&path).expect("read a migration");
            Some((version, stem, hex::encode(Sha256::digest(&sql))))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no migration in {}", dir.display());
    files
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn version_and_help() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["--version"], None);
    out.assert_success();
    assert_eq!(
        out.stdout.trim(),
        format!("lanchat {}", env!("CARGO_PKG_VERSION"))
    );

    let out = sandbox.run(&["--help"], None);
    out.assert_success();
    for option in [
        "--migrate",
        "--create-user",
        "--admin",
        "--password-stdin",
        "--config",
        "--data-dir",
        "--listen",
        "--version",
        "--help",
        "reset-password",
    ] {
        assert!(out.stdout.contains(option), "--help lacks {option}: {out}");
    }
    // Neither printed anything into the data directory.
    assert!(!sandbox.data_dir().exists());
}

#[test]
fn bad_usage_exits_with_usage_errors() {
    let sandbox = Sandbox::new();
    // clap's usage errors exit with 2.
    for args in [
        &["--admin"][..],
        &["--migrate", "--create-user", "bob"][..],
        &["--migrate", "serve"][..],
        &["--no-such-flag"][..],
    ] {
        let out = sandbox.run(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out}");
    }
    let out = sandbox.run(&["--password-stdin"], None);
    assert!(out.assert_failure().contains("--password-stdin"), "{out}");
}

#[test]
fn migrate_fresh_then_up_to_date() {
    let sandbox = Sandbox::new();
    let before_ms = now_secs() as i64 * 1000;
    let out = sandbox.run(&["--migrate"], None);
    out.assert_success();
    let files = schema_files();
    let applied: Vec<&str> = out.stdout.lines().collect();
    let expected: Vec<String> = files
        .iter()
        .map(|(_, stem, _)| format!("applied {stem}"))
        .collect();
    assert_eq!(applied, expected, "{out}");

    // Recorded with name, checksum of the file and time, each one once.
    let conn = sandbox.db();
    let rows: Vec<(i64, String, String, i64)> = conn
        .prepare(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows.len(), files.len());
    for ((version, name, checksum, applied_at), (file_version, stem, file_sum)) in
        rows.iter().zip(&files)
    {
        assert_eq!(version, file_version);
        assert_eq!(format!("{version:04}_{name}"), *stem);
        assert_eq!(checksum, file_sum, "checksum of {stem}");
        assert!(*applied_at >= before_ms - 5_000, "applied_at {applied_at}");
    }
    // The whole v1 schema is there.
    for table in [
        "users",
        "sessions",
        "refresh_tokens",
        "conversations",
        "messages",
        "attachments",
        "reactions",
        "events",
        "settings",
        "invites",
        "blocks",
    ] {
        let exists: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                [table],
                |r| r.get(0),
            )
            .expect("sqlite_master");
        assert!(exists, "table {table} missing after --migrate");
    }
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(journal.to_lowercase(), "wal");
    drop(conn);
    assert_eq!(mode(&sandbox.data_dir()), 0o700, "data dir mode");

    let out = sandbox.run(&["--migrate"], None);
    out.assert_success();
    assert_eq!(
        out.stdout.trim(),
        "no migration pending; the database is up to date"
    );
}

#[test]
fn changed_migration_is_refused() {
    let sandbox = Sandbox::new();
    sandbox.run(&["--migrate"], None).assert_success();
    let changed = sandbox
        .db()
        .execute(
            "UPDATE schema_migrations SET checksum = 'deadbeef' WHERE version = 1",
            [],
        )
        .expect("tamper");
    assert_eq!(changed, 1);

    let out = sandbox.run(&["--migrate"], None);
    let stderr = out.assert_failure();
    assert!(stderr.contains("0001_init"), "{out}");
    assert!(stderr.contains("was changed"), "{out}");
    assert!(stderr.contains("deadbeef"), "{out}");

    // The server refuses to start on it too (instead of serving).
    let out = sandbox.run(&["--listen", "127.0.0.1:0"], None);
    assert!(out.assert_failure().contains("was changed"), "{out}");
}

#[test]
fn database_newer_than_the_binary_is_refused() {
    let sandbox = Sandbox::new();
    sandbox.run(&["--migrate"], None).assert_success();
    sandbox
        .db()
        .execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at)
             VALUES (9999, 'from_the_future', 'abc', 0)",
            [],
        )
        .expect("insert");

    let out = sandbox.run(&["--migrate"], None);
    let stderr = out.assert_failure();
    assert!(stderr.contains("9999_from_the_future"), "{out}");
    assert!(stderr.contains("newer version"), "{out}");

    let out = sandbox.run(&["--listen", "127.0.0.1:0"], None);
    assert!(out.assert_failure().contains("newer version"), "{out}");
}

#[tokio::test]
async fn create_user_then_login() {
    let sandbox = Sandbox::new();
    let out = sandbox.create_user("Alice", false);
    assert_eq!(out.stdout.trim(), "created user alice (id 1)");
    let out = sandbox.create_user("root", true);
    assert_eq!(out.stdout.trim(), "created admin user root (id 2)");

    let server = TestServer::start_in(sandbox, ServerOptions::new()).await;
    // An admin exists: no setup link, and setup is refused.
    assert_eq!(server.setup_token().await, None);
    assert!(
        !server.stdout_lines().iter().any(|l| l.contains("setup")),
        "{:?}",
        server.stdout_lines()
    );

    let alice = server.login("ALICE", PASSWORD).await;
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.user["is_admin"], json!(false));
    assert_eq!(alice.user["display_name"], json!("alice"));
    let root = server.login("root", PASSWORD).await;
    assert_eq!(root.user["is_admin"], json!(true));
    let (status, me) = server.get("/api/v1/users/me", &root).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], json!(2));
}

#[tokio::test]
async fn admin_option_of_the_harness_creates_an_admin() {
    let server = TestServer::start_with(ServerOptions::new().admin("boss")).await;
    let boss = server.login("boss", PASSWORD).await;
    assert_eq!(boss.user["is_admin"], json!(true));
    assert_eq!(server.setup_token().await, None);
}

#[test]
fn create_user_refuses_taken_and_invalid_input() {
    let sandbox = Sandbox::new();
    sandbox.create_user("alice", false);

    // Taken, whatever the case.
    let out = sandbox.run(
        &["--create-user", "ALICE", "--password-stdin"],
        Some("another password\n"),
    );
    assert!(out.assert_failure().contains("taken"), "{out}");

    // Password too short, bad username, empty stdin.
    let out = sandbox.run(
        &["--create-user", "bob", "--password-stdin"],
        Some("short\n"),
    );
    assert!(out.assert_failure().contains("password"), "{out}");
    let out = sandbox.run(
        &["--create-user", "b b", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.assert_failure().contains("username"), "{out}");
    let out = sandbox.run(&["--create-user", "bob", "--password-stdin"], Some(""));
    out.assert_failure();

    // No terminal and no --password-stdin: refuses instead of hanging.
    let out = sandbox.run(&["--create-user", "bob"], None);
    assert!(out.assert_failure().contains("terminal"), "{out}");

    let users: i64 = sandbox
        .db()
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .expect("count");
    assert_eq!(users, 1, "only alice was created");
}

#[tokio::test]
async fn create_user_works_beside_a_running_server() {
    let server = TestServer::start().await;
    let out = server.sandbox().run(
        &["--create-user", "carol", "--password-stdin"],
        Some("carol's password\n"),
    );
    out.assert_success();
    let carol = server.login("carol", "carol's password").await;
    assert_eq!(carol.username, "carol");
}

#[tokio::test]
async fn second_server_on_the_same_data_dir_is_refused() {
    let server = TestServer::start().await;
    let pid = server.pid();

    let out = server.sandbox().run(&["--listen", "127.0.0.1:0"], None);
    let stderr = out.assert_failure();
    assert!(stderr.contains("already using"), "{out}");
    assert!(
        stderr.contains(&format!("pid {pid}")),
        "names the holder: {out}"
    );
    assert!(
        stderr.contains(&server.data_dir().display().to_string()),
        "{out}"
    );

    // --migrate takes the lock too.
    let out = server.sandbox().run(&["--migrate"], None);
    assert!(out.assert_failure().contains("already using"), "{out}");

    // The first server is unharmed.
    let (status, body) = server.get("/healthz", ANON).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn graceful_stop_and_restart_keep_data_and_tokens() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let secret = server.jwt_secret();
    assert_eq!(secret.len(), 64);
    assert_eq!(mode(&server.data_dir().join("jwt.secret")), 0o600);
    assert_eq!(mode(&server.data_dir()), 0o700);

    let status = server.stop().await;
    assert!(status.success(), "exit on SIGTERM: {status}");
    let log = server.stderr();
    assert!(log.contains("database closed"), "{log}");
    // The lock is released with the process.
    server.sandbox().run(&["--migrate"], None).assert_success();

    server.start_again().await;
    assert_eq!(server.jwt_secret(), secret, "the secret is kept");
    // The access token issued before the restart is still good.
    let (status, me) = server.get("/api/v1/users/me", &alice).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], json!("alice"));
    let (status, body) = server.refresh(&alice.refresh_token).await;
    assert_eq!(status, 200, "{body}");
    server.login("alice", PASSWORD).await;
}

#[tokio::test]
async fn killed_server_keeps_acknowledged_writes() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = server
        .patch(
            "/api/v1/users/me",
            &alice,
            json!({ "status_text": "written before the crash" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.kill();
    server.start_again().await;
    let (status, me) = server.get("/api/v1/users/me", &alice).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["status_text"], json!("written before the crash"));
}

#[tokio::test]
async fn reset_password_signs_out_and_changes_the_password() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    server.stop().await;

    // Global options before the subcommand, as in `lanchat --data-dir DIR reset-password NAME`.
    let out = server.sandbox().run(
        &["reset-password", "ALICE", "--password-stdin"],
        Some("a brand new password\n"),
    );
    out.assert_success();
    assert!(out.stdout.contains("alice"), "{out}");
    let out = server.sandbox().run(
        &["reset-password", "nobody", "--password-stdin"],
        Some("whatever123\n"),
    );
    assert!(out.assert_failure().contains("nobody"), "{out}");

    server.start_again().await;
    let (status, body) = server.get("/api/v1/users/me", &alice).await;
    assert_error(&(status, body), 401, "invalid_token");
    let reply = server.refresh(&alice.refresh_token).await;
    assert_error(&reply, 401, "invalid_token");
    let reply = server.try_login("alice", PASSWORD).await;
    assert_error(&reply, 401, "unauthorized");
    server.login("alice", "a brand new password").await;
}

#[tokio::test]
async fn reset_password_beside_a_running_server_signs_out_within_seconds() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut socket = server.ws_connect(&alice.access_token).await;
    socket.recv_type("hello", Duration::from_secs(5)).await;

    let out = server.sandbox().run(
        &["reset-password", "alice", "--password-stdin"],
        Some("a brand new password\n"),
    );
    out.assert_success();
    // The server notices the other process's revocation on its own.
    assert_eq!(
        socket.expect_close(Duration::from_secs(10)).await,
        Some(1008)
    );
    let (status, body) = server.get("/api/v1/users/me", &alice).await;
    assert_error(&(status, body), 401, "invalid_token");
}

#[tokio::test]
async fn config_file_env_and_flags_are_layered() {
    // Three loopback addresses tell which layer chose the listen address.
    let sandbox = Sandbox::new();
    let config = sandbox.write_file(
        "lanchat.toml",
        "[server]\nlisten = \"127.0.0.2:0\"\nname = \"From file\"\n\n[auth]\naccess_token_ttl_secs = 120\n",
    );
    let server = TestServer::start_in(
        sandbox,
        ServerOptions::new()
            .without_listen_flag()
            .arg("--config")
            .arg(&config),
    )
    .await;
    assert_eq!(server.addr().ip().to_string(), "127.0.0.2");
    let (status, setup) = server.get("/api/v1/setup", ANON).await;
    assert_eq!(status, 200);
    assert_eq!(setup["server_name"], json!("From file"));
    let alice = server.register("alice").await;
    let (_, token) = server.refresh(&alice.refresh_token).await;
    assert_eq!(token["expires_in"], json!(120));
    drop(server);

    // The environment beats the file (numbers are parsed, strings kept as is).
    let sandbox = Sandbox::new();
    let config = sandbox.write_file(
        "lanchat.toml",
        "[server]\nlisten = \"127.0.0.2:0\"\nname = \"From file\"\n\n[auth]\naccess_token_ttl_secs = 120\n",
    );
    let server = TestServer::start_in(
        sandbox,
        ServerOptions::new()
            .without_listen_flag()
            .arg("--config")
            .arg(&config)
            .env("LANCHAT_SERVER_LISTEN", "127.0.0.3:0")
            .env("LANCHAT_SERVER_NAME", "42")
            .env("LANCHAT_AUTH_ACCESS_TOKEN_TTL_SECS", "60"),
    )
    .await;
    assert_eq!(server.addr().ip().to_string(), "127.0.0.3");
    let (_, setup) = server.get("/api/v1/setup", ANON).await;
    assert_eq!(setup["server_name"], json!("42"));
    let alice = server.register("alice").await;
    let (_, token) = server.refresh(&alice.refresh_token).await;
    assert_eq!(token["expires_in"], json!(60));
    drop(server);

    // Flags beat both; LANCHAT_CONFIG names the file.
    let sandbox = Sandbox::new();
    let config = sandbox.write_file(
        "lanchat.toml",
        "[server]\nlisten = \"127.0.0.2:0\"\nname = \"From file\"\n",
    );
    let server = TestServer::start_in(
        sandbox,
        ServerOptions::new()
            .env("LANCHAT_CONFIG", config.to_str().expect("utf-8 path"))
            .env("LANCHAT_SERVER_LISTEN", "127.0.0.3:0"),
    )
    .await;
    assert_eq!(server.addr().ip().to_string(), "127.0.0.1");
    let (_, setup) = server.get("/api/v1/setup", ANON).await;
    assert_eq!(setup["server_name"], json!("From file"));
    drop(server);

    // Nothing set: the defaults.
    let server = TestServer::start().await;
    let (_, setup) = server.get("/api/v1/setup", ANON).await;
    assert_eq!(setup["server_name"], json!("lanchat"));
    let alice = server.register("alice").await;
    let (_, token) = server.refresh(&alice.refresh_token).await;
    assert_eq!(token["expires_in"], json!(900));
}

#[tokio::test]
async fn unknown_config_keys_are_reported() {
    let sandbox = Sandbox::new();
    let config = sandbox.write_file(
        "lanchat.toml",
        "[server]\nnmae = \"typo\"\n\n[nonsense]\nx = 1\n",
    );
    let server = TestServer::start_in(
        sandbox,
        ServerOptions::new()
            .arg("--config")
            .arg(&config)
            .env("LANCHAT_SERVER_NOPE", "1"),
    )
    .await;
    let log = server.wait_for_stderr("server.nmae").await;
    assert!(log.contains("nonsense"), "{log}");
    assert!(log.contains("LANCHAT_SERVER_NOPE"), "{log}");
    drop(server);

    // One-shot commands report them too.
    let sandbox = Sandbox::new();
    let config = sandbox.write_file("lanchat.toml", "[limits]\nmax_jsno_bytes = 5\n");
    let out = sandbox.run(
        &["--config", config.to_str().expect("path"), "--migrate"],
        None,
    );
    out.assert_success();
    assert!(out.stderr.contains("limits.max_jsno_bytes"), "{out}");
}

#[test]
fn invalid_configuration_is_refused() {
    let sandbox = Sandbox::new();
    let out = sandbox.run_with_env(
        &["--migrate"],
        &[("LANCHAT_AUTH_REGISTRATION", "sometimes")],
        None,
    );
    assert!(out.assert_failure().contains("auth.registration"), "{out}");

    let out = sandbox.run_with_env(
        &["--migrate"],
        &[("LANCHAT_AUTH_ACCESS_TOKEN_TTL_SECS", "1")],
        None,
    );
    assert!(
        out.assert_failure().contains("access_token_ttl_secs"),
        "{out}"
    );

    let out = sandbox.run(&["--listen", "nowhere", "--migrate"], None);
    assert!(out.assert_failure().contains("server.listen"), "{out}");

    let config = sandbox.write_file("broken.toml", "[server\nlisten = ");
    let out = sandbox.run(
        &["--config", config.to_str().expect("path"), "--migrate"],
        None,
    );
    assert!(out.assert_failure().contains("not valid TOML"), "{out}");

    let missing = sandbox.root().join("missing.toml");
    let out = sandbox.run(
        &["--config", missing.to_str().expect("path"), "--migrate"],
        None,
    );
    assert!(
        out.assert_failure().contains("cannot read config file"),
        "{out}"
    );
}
