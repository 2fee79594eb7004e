//! Backups against the real binary: a download from a running server restored
//! into an empty directory gives back the same database rows and files and a
//! working server; `lanchat backup` beside a running server; scheduled backups
//! with pruning; restores that must be refused.

mod admin_support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use admin_support::{
    ADMIN_PASSWORD, Server, create_user, data_dir_with_admin, dump_database, run_cli, seed_content,
};
use reqwest::{Method, StatusCode};
use serde_json::json;

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
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = data_dir_with_admin(tmp.path());
    create_user(&data_dir, "bob", "bob password 1", false);
    let files = seed_content(&data_dir);
    let server = Server::start(&data_dir, &[]).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    // Changes made through the running server are in the snapshot too.
    let (status, _) = server
        .post(
            "/api/v1/admin/users",
            &admin,
            json!({"username": "zed", "password": "zed password 1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = server
        .patch(
            "/api/v1/admin/settings",
            &admin,
            json!({"server_name": "Backed up"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let response = server
        .http
        .post(server.url("/api/v1/admin/backup"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("backup request");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
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
    let bytes = response.bytes().await.expect("archive");
    assert_eq!(bytes.len(), length);
    // The temporary archive and snapshot are gone once the download is done.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        leftover_temp_files(&data_dir).is_empty(),
        "{:?}",
        leftover_temp_files(&data_dir)
    );

    let entries = read_archive(&bytes);
    let manifest: serde_json::Value =
        serde_json::from_slice(&entries["manifest.json"]).expect("manifest");
    assert_eq!(manifest["format"], 1);
    assert_eq!(manifest["lanchat_version"], env!("CARGO_PKG_VERSION"));
    assert!(manifest["schema_version"].as_i64().expect("schema") >= 1);
    assert!(manifest["created_at"].as_i64().is_some());
    let listed: Vec<&str> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
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
    let archive_path = tmp.path().join("download.tar");
    std::fs::write(&archive_path, &bytes).expect("save");

    server.stop();
    let original = dump_database(&data_dir.join("lanchat.db"));

    // Restore into a directory that does not exist yet.
    let restored = tmp.path().join("restored");
    let restored_arg = restored.to_str().expect("utf-8");
    let archive_arg = archive_path.to_str().expect("utf-8");
    let (ok, stdout, stderr) = run_cli(&["--data-dir", restored_arg, "restore", archive_arg], None);
    assert!(ok, "restore failed: {stdout}\n{stderr}");
    assert!(stdout.contains("restored"), "{stdout}");
    assert_eq!(dump_database(&restored.join("lanchat.db")), original);
    for file in &files {
        assert_eq!(
            std::fs::read(restored.join(file)).expect("restored file"),
            std::fs::read(data_dir.join(file)).expect("original file"),
            "{file}"
        );
    }
    assert!(!restored.join("files/tmp").exists());

    // Restoring again into the now non-empty directory is refused, untouched.
    let before = dump_database(&restored.join("lanchat.db"));
    let (ok, _, stderr) = run_cli(&["--data-dir", restored_arg, "restore", archive_arg], None);
    assert!(!ok);
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(dump_database(&restored.join("lanchat.db")), before);
    // So is restoring over the live data directory.
    let (ok, _, stderr) = run_cli(
        &[
            "--data-dir",
            data_dir.to_str().expect("utf-8"),
            "restore",
            archive_arg,
        ],
        None,
    );
    assert!(!ok);
    assert!(stderr.contains("not empty"), "{stderr}");

    // A server on the restored directory has the same accounts and data.
    let server = Server::start(&restored, &[]).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    server.login("bob", "bob password 1").await;
    server.login("zed", "zed password 1").await;
    let (_, settings) = server.get("/api/v1/admin/settings", &admin).await;
    assert_eq!(settings["server_name"], "Backed up");
    let (_, stats) = server.get("/api/v1/admin/stats", &admin).await;
    assert_eq!(stats["users"], 3);
    assert_eq!(stats["conversations"], 2);
    assert_eq!(stats["messages"], 2);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_backup_works_beside_a_running_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = data_dir_with_admin(tmp.path());
    let files = seed_content(&data_dir);
    let server = Server::start(&data_dir, &[]).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let (status, _) = server
        .post(
            "/api/v1/admin/users",
            &admin,
            json!({"username": "live", "password": "live password 1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let dir_arg = data_dir.to_str().expect("utf-8");
    let out = tmp.path().join("cli.tar");
    let out_arg = out.to_str().expect("utf-8");
    let (ok, stdout, stderr) = run_cli(&["--data-dir", dir_arg, "backup", out_arg], None);
    assert!(ok, "backup failed: {stdout}\n{stderr}");
    assert!(stdout.contains("2 attachment file(s)"), "{stdout}");
    // The server is unaffected and still writes.
    let (status, _) = server
        .post("/api/v1/admin/invites", &admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // An existing archive is never overwritten.
    let (ok, _, stderr) = run_cli(&["--data-dir", dir_arg, "backup", out_arg], None);
    assert!(!ok);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(leftover_temp_files(tmp.path()).is_empty());
    server.stop();

    // With the server stopped it works as well.
    let stopped = tmp.path().join("stopped.tar");
    let (ok, stdout, stderr) = run_cli(
        &[
            "--data-dir",
            dir_arg,
            "backup",
            stopped.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(ok, "backup of a stopped server failed: {stdout}\n{stderr}");

    let restored = tmp.path().join("restored");
    let (ok, stdout, stderr) = run_cli(
        &[
            "--data-dir",
            restored.to_str().expect("utf-8"),
            "restore",
            out_arg,
        ],
        None,
    );
    assert!(ok, "restore failed: {stdout}\n{stderr}");
    let users: Vec<String> = dump_database(&restored.join("lanchat.db"))
        .into_iter()
        .find(|(table, _)| table == "users")
        .expect("users table")
        .1;
    assert_eq!(users.len(), 2);
    assert!(users[1].contains("\"live\""), "{users:?}");
    for file in &files {
        assert!(restored.join(file).is_file(), "{file}");
    }

    // No database there: a clear error, nothing created.
    let nowhere = tmp.path().join("nowhere");
    let (ok, _, stderr) = run_cli(
        &[
            "--data-dir",
            nowhere.to_str().expect("utf-8"),
            "backup",
            tmp.path().join("x.tar").to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(!ok);
    assert!(stderr.contains("no lanchat database"), "{stderr}");
    assert!(!nowhere.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_what_is_not_a_backup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let junk = tmp.path().join("junk.tar");
    std::fs::write(&junk, b"this is not an archive at all").expect("write");
    let target = tmp.path().join("target");
    let (ok, _, stderr) = run_cli(
        &[
            "--data-dir",
            target.to_str().expect("utf-8"),
            "restore",
            junk.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(!ok);
    assert!(stderr.contains("not a lanchat backup"), "{stderr}");
    assert!(!target.exists(), "nothing is left behind");

    // A tar whose entry climbs out of the data directory.
    let evil = tmp.path().join("evil.tar");
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
    let (ok, _, stderr) = run_cli(
        &[
            "--data-dir",
            target.to_str().expect("utf-8"),
            "restore",
            evil.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(!ok);
    assert!(stderr.contains("unsafe"), "{stderr}");
    assert!(!tmp.path().join("escaped").exists());
    assert_eq!(
        std::fs::read_dir(&target).expect("list").count(),
        0,
        "left empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_keep_the_newest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = data_dir_with_admin(tmp.path());
    seed_content(&data_dir);
    let backups = tmp.path().join("backups");
    let server = Server::start(
        &data_dir,
        &[
            ("LANCHAT_BACKUP_EVERY", "1s"),
            ("LANCHAT_BACKUP_KEEP", "2"),
            ("LANCHAT_BACKUP_DIR", backups.to_str().expect("utf-8")),
        ],
    )
    .await;
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
        let written = server
            .log_text()
            .matches("scheduled backup written")
            .count();
        let present = archives();
        assert!(present.len() <= 2, "never more than keep=2: {present:?}");
        if written >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {written} scheduled backups in time; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop();
    let present = archives();
    assert_eq!(present.len(), 2, "{present:?}");
    assert!(leftover_temp_files(&backups).is_empty());
    // The newest one is a complete backup.
    let restored = tmp.path().join("restored");
    let newest = backups.join(&present[1]);
    let (ok, stdout, stderr) = run_cli(
        &[
            "--data-dir",
            restored.to_str().expect("utf-8"),
            "restore",
            newest.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(ok, "restore failed: {stdout}\n{stderr}");
    assert_eq!(
        dump_database(&restored.join("lanchat.db")),
        dump_database(&data_dir.join("lanchat.db"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admins_cannot_download_backups() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = data_dir_with_admin(tmp.path());
    create_user(&data_dir, "bob", "bob password 1", false);
    let server = Server::start(&data_dir, &[]).await;
    let bob = server.login("bob", "bob password 1").await;
    let (status, body) = server
        .call(Method::POST, "/api/v1/admin/backup", Some(&bob), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = server
        .call(Method::POST, "/api/v1/admin/backup", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(leftover_temp_files(&data_dir).is_empty());
    server.stop();
}
