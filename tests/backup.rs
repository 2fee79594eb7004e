//! Backups against the real binary: a download from a running server restored
//! into an empty directory gives back the same database rows and files and a
//! working server; `lanchat backup` beside a running server; scheduled backups
//! with pruning; restores that must be refused.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// The archive's entries: path → content.
fn read_archive(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(bytes);
    let mut entries = BTreeMap::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("content");
        entries.insert(path, content);
    }
    entries
}

fn leftover_temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".backup-") || name.ends_with(".part"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_from_a_running_server_restores_everything() {
    let sandbox = Sandbox::new();
    sandbox.create_user("admin", true);
    sandbox.create_user("bob", false);
    let files = sandbox.seed_content();
    let mut server = TestServer::start_in(sandbox, ServerOptions::new()).await;
    let data_dir = server.data_dir();
    let admin = server.login("admin", PASSWORD).await;
    // Changes made through the running server are in the snapshot too.
    let (status, _) = server
        .post(
            "/api/v1/admin/users",
            &admin,
            json!({"username": "zed", "password": "zed password 1"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .patch(
            "/api/v1/admin/settings",
            &admin,
            json!({"server_name": "Backed up"}),
        )
        .await;
    assert_eq!(status, 200);

    let response = server
        .send(
            server
                .request(Method::POST, "/api/v1/admin/backup")
                .bearer_auth(&admin.access_token),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text);
    let headers = response.headers.clone();
    assert_eq!(headers["content-type"], "application/x-tar");
    let disposition = headers["content-disposition"].to_str().expect("ascii");
    assert!(
        disposition.starts_with("attachment; filename=\"lanchat-backup-")
            && disposition.ends_with("Z.tar\""),
        "{disposition}"
    );
    let length: usize = headers["content-length"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    let bytes = response.bytes;
    assert_eq!(bytes.len(), length);
    // The temporary archive and snapshot are gone once the download is done.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        leftover_temp_files(&data_dir).is_empty(),
        "{:?}",
        leftover_temp_files(&data_dir)
    );

    let entries = read_archive(&bytes);
    let manifest: Value = serde_json::from_slice(&entries["manifest.json"]).expect("manifest");
    assert_eq!(manifest["format"], 1);
    assert_eq!(manifest["lanchat_version"], env!("CARGO_PKG_VERSION"));
    assert!(manifest["schema_version"].as_i64().expect("schema") >= 1);
    assert!(manifest["created_at"].as_i64().is_some());
    let all_listed: Vec<&str> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    // The local CA goes with the attachments (docs/TLS.md).
    for ca_file in ["tls/ca.key", "tls/ca.crt"] {
        assert!(all_listed.contains(&ca_file), "{all_listed:?}");
    }
    let listed: Vec<&str> = all_listed
        .into_iter()
        .filter(|p| p.starts_with("files/"))
        .collect();
    let mut expected_files = files.clone();
    expected_files.sort();
    assert_eq!(listed, expected_files);
    assert!(entries.contains_key("lanchat.db"));
    assert!(
        !entries
            .keys()
            .any(|k| k.contains("tmp") || k.contains("secret")),
        "{:?}",
        entries.keys()
    );
    let archive_path = server.sandbox().root().join("download.tar");
    std::fs::write(&archive_path, &bytes).expect("save");

    server.stop().await;
    let original = dump_database(&server.sandbox().db_path());

    // Restore into a directory that does not exist yet.
    let restored = Sandbox::new();
    let archive_arg = archive_path.to_str().expect("utf-8");
    let out = restored.run(&["restore", archive_arg], None);
    out.assert_success();
    assert!(out.stdout.contains("restored"), "{out}");
    assert_eq!(dump_database(&restored.db_path()), original);
    for file in &files {
        assert_eq!(
            std::fs::read(restored.data_dir().join(file)).expect("restored file"),
            std::fs::read(data_dir.join(file)).expect("original file"),
            "{file}"
        );
    }
    assert!(!restored.data_dir().join("files/tmp").exists());

    // Restoring again into the now non-empty directory is refused, untouched.
    let before = dump_database(&restored.db_path());
    let out = restored.run(&["restore", archive_arg], None);
    assert!(out.assert_failure().contains("not empty"), "{out}");
    assert_eq!(dump_database(&restored.db_path()), before);
    // So is restoring over the live data directory.
    let out = server.sandbox().run(&["restore", archive_arg], None);
    assert!(out.assert_failure().contains("not empty"), "{out}");

    // A server on the restored directory has the same accounts and data.
    let mut server = TestServer::start_in(restored, ServerOptions::new()).await;
    let admin = server.login("admin", PASSWORD).await;
    server.login("bob", PASSWORD).await;
    server.login("zed", "zed password 1").await;
    let (_, settings) = server.get("/api/v1/admin/settings", &admin).await;
    assert_eq!(settings["server_name"], "Backed up");
    let (_, stats) = server.get("/api/v1/admin/stats", &admin).await;
    assert_eq!(stats["users"], 3);
    assert_eq!(stats["conversations"], 2);
    assert_eq!(stats["messages"], 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_backup_works_beside_a_running_server() {
    let sandbox = Sandbox::new();
    sandbox.create_user("admin", true);
    let files = sandbox.seed_content();
    let mut server = TestServer::start_in(sandbox, ServerOptions::new()).await;
    let root = server.sandbox().root().to_owned();
    let admin = server.login("admin", PASSWORD).await;
    let (status, _) = server
        .post(
            "/api/v1/admin/users",
            &admin,
            json!({"username": "live", "password": "live password 1"}),
        )
        .await;
    assert_eq!(status, 201);

    let archive = root.join("cli.tar");
    let archive_arg = archive.to_str().expect("utf-8");
    let out = server.sandbox().run(&["backup", archive_arg], None);
    out.assert_success();
    assert!(out.stdout.contains("2 attachment file(s)"), "{out}");
    // The server is unaffected and still writes.
    let (status, _) = server
        .post("/api/v1/admin/invites", &admin, json!({}))
        .await;
    assert_eq!(status, 201);
    // An existing archive is never overwritten.
    let out = server.sandbox().run(&["backup", archive_arg], None);
    assert!(out.assert_failure().contains("already exists"), "{out}");
    assert!(leftover_temp_files(&root).is_empty());
    server.stop().await;

    // With the server stopped it works as well.
    let stopped = root.join("stopped.tar");
    let out = server
        .sandbox()
        .run(&["backup", stopped.to_str().expect("utf-8")], None);
    assert!(out.success(), "backup of a stopped server failed: {out}");

    let restored = Sandbox::new();
    restored
        .run(&["restore", archive_arg], None)
        .assert_success();
    let users: Vec<String> = dump_database(&restored.db_path())
        .into_iter()
        .find(|(table, _)| table == "users")
        .expect("users table")
        .1;
    assert_eq!(users.len(), 2);
    assert!(users[1].contains("\"live\""), "{users:?}");
    for file in &files {
        assert!(restored.data_dir().join(file).is_file(), "{file}");
    }

    // No database there: a clear error, nothing created.
    let nowhere = Sandbox::new();
    let out = nowhere.run(
        &["backup", root.join("x.tar").to_str().expect("utf-8")],
        None,
    );
    assert!(
        out.assert_failure().contains("no lanchat database"),
        "{out}"
    );
    assert!(!nowhere.data_dir().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_what_is_not_a_backup() {
    let sandbox = Sandbox::new();
    let junk = sandbox.write_file("junk.tar", "this is not an archive at all");
    let target = sandbox.data_dir();
    let out = sandbox.run(&["restore", junk.to_str().expect("utf-8")], None);
    assert!(
        out.assert_failure().contains("not a lanchat backup"),
        "{out}"
    );
    assert!(!target.exists(), "nothing is left behind");

    // A tar whose entry climbs out of the data directory.
    let evil = sandbox.root().join("evil.tar");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&evil).expect("create"));
        let manifest = json!({
            "format": 1, "lanchat_version": "0.0.0", "schema_version": 1, "created_at": 0,
            "database": {"path": "lanchat.db", "size": 4, "sha256": ""},
            "files": []
        })
        .to_string();
        let mut header = tar::Header::new_gnu();
        header.set_size(manifest.len() as u64);
        builder
            .append_data(&mut header, "manifest.json", manifest.as_bytes())
            .expect("manifest");
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_entry_type(tar::EntryType::Regular);
        let name = b"../escaped";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        builder.append(&header, &b"evil"[..]).expect("entry");
        builder.finish().expect("finish");
    }
    std::fs::create_dir(&target).expect("empty target");
    let out = sandbox.run(&["restore", evil.to_str().expect("utf-8")], None);
    assert!(out.assert_failure().contains("unsafe"), "{out}");
    assert!(!sandbox.root().join("escaped").exists());
    assert_eq!(
        std::fs::read_dir(&target).expect("list").count(),
        0,
        "left empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_keep_the_newest() {
    let sandbox = Sandbox::new();
    sandbox.create_user("admin", true);
    sandbox.seed_content();
    let backups = sandbox.root().join("backups");
    let options = ServerOptions::new()
        .env("LANCHAT_BACKUP_EVERY", "1s")
        .env("LANCHAT_BACKUP_KEEP", "2")
        .env("LANCHAT_BACKUP_DIR", backups.to_str().expect("utf-8"));
    let mut server = TestServer::start_in(sandbox, options).await;
    let archives = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&backups)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("lanchat-backup-") && n.ends_with(".tar"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let written = server.stderr().matches("scheduled backup written").count();
        let present = archives();
        assert!(present.len() <= 2, "never more than keep=2: {present:?}");
        if written >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {written} scheduled backups in time; log:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
    let present = archives();
    assert_eq!(present.len(), 2, "{present:?}");
    assert!(leftover_temp_files(&backups).is_empty());
    // The newest one is a complete backup.
    let restored = Sandbox::new();
    let newest = backups.join(&present[1]);
    restored
        .run(&["restore", newest.to_str().expect("utf-8")], None)
        .assert_success();
    assert_eq!(
        dump_database(&restored.db_path()),
        dump_database(&server.sandbox().db_path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admins_cannot_download_backups() {
    let sandbox = Sandbox::new();
    sandbox.create_user("admin", true);
    sandbox.create_user("bob", false);
    let mut server = TestServer::start_in(sandbox, ServerOptions::new()).await;
    let bob = server.login("bob", PASSWORD).await;
    let (status, body) = server
        .call(Method::POST, "/api/v1/admin/backup", &bob, None)
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = server
        .call(Method::POST, "/api/v1/admin/backup", ANON, None)
        .await;
    assert_eq!(status, 401);
    assert!(leftover_temp_files(&server.data_dir()).is_empty());
    server.stop().await;
}
