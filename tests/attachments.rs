//! Attachments end to end, against the real binary: upload, dedup, limits,
//! download headers, ranges, conditional requests, types a browser could
//! execute, access control, path tricks and previews. The orphan cleanup is
//! tested in-process.

mod common;

use std::path::Path;

use common::*;
use reqwest::multipart::{Form, Part};

/// `GET path` as `user`, the whole reply (headers and raw bytes).
async fn get(server: &TestServer, user: &Session, path: &str) -> Reply {
    get_with(server, user, path, &[]).await
}

/// [`get`] with request headers (ranges, conditions).
async fn get_with(
    server: &TestServer,
    user: &Session,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = server
        .request(Method::GET, path)
        .bearer_auth(&user.access_token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    server.send(request).await
}

/// A response header, `""` when absent.
fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply.header(name).unwrap_or("")
}

/// Content files under files/ (not temp files, not previews).
fn blobs(data_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(data_dir.join("files")) else {
        return out;
    };
    for dir in dirs.flatten() {
        if dir.file_name() == "tmp" || !dir.path().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(dir.path()).expect("dir").flatten() {
            if !file.file_name().to_string_lossy().ends_with(".thumb.jpg") {
                out.push(file.path());
            }
        }
    }
    out
}

fn temp_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("files").join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn round_trip_with_headers_ranges_and_etags() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let content: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let attachment = server
        .upload(&alice, &content, "notes.txt", "text/plain")
        .await;
    assert_eq!(attachment["name"], "notes.txt");
    assert_eq!(attachment["mime"], "text/plain");
    assert_eq!(attachment["size"], 5000);
    assert!(attachment.get("width").is_none());
    let sha = attachment["sha256"].as_str().expect("sha").to_owned();
    assert_eq!(sha.len(), 64);
    let url = attachment["url"].as_str().expect("url").to_owned();
    assert_eq!(url, format!("/api/v1/attachments/{}", attachment["id"]));

    let response = get(&server, &alice, &url).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        header(&response, "content-type"),
        "text/plain; charset=utf-8"
    );
    assert_eq!(header(&response, "content-length"), "5000");
    assert_eq!(header(&response, "etag"), format!("\"{sha}\""));
    assert_eq!(header(&response, "accept-ranges"), "bytes");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert!(header(&response, "cache-control").contains("private"));
    assert_eq!(
        header(&response, "content-disposition"),
        "inline; filename=\"notes.txt\"; filename*=UTF-8''notes.txt"
    );
    assert_eq!(response.bytes, content);

    // A single range.
    let response = get_with(&server, &alice, &url, &[("range", "bytes=100-199")]).await;
    assert_eq!(response.status, 206);
    assert_eq!(header(&response, "content-range"), "bytes 100-199/5000");
    assert_eq!(header(&response, "content-length"), "100");
    assert_eq!(response.bytes, content[100..200]);

    // A suffix range.
    let response = get_with(&server, &alice, &url, &[("range", "bytes=-10")]).await;
    assert_eq!(response.status, 206);
    assert_eq!(header(&response, "content-range"), "bytes 4990-4999/5000");
    assert_eq!(response.bytes, content[4990..]);

    // Past the end.
    let response = get_with(&server, &alice, &url, &[("range", "bytes=5000-")]).await;
    assert_eq!(response.status, 416);
    assert_eq!(header(&response, "content-range"), "bytes */5000");

    // A range for another version of the file (If-Range) gets everything.
    let response = get_with(
        &server,
        &alice,
        &url,
        &[("range", "bytes=0-9"), ("if-range", "\"something-else\"")],
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.bytes.len(), 5000);

    // Conditional requests.
    let response = get_with(
        &server,
        &alice,
        &url,
        &[("if-none-match", &format!("\"{sha}\""))],
    )
    .await;
    assert_eq!(response.status, 304);
    assert_eq!(header(&response, "etag"), format!("\"{sha}\""));
    let response = get_with(&server, &alice, &url, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(response.status, 200);

    // HEAD: the headers, no body.
    let response = server
        .send(
            server
                .request(Method::HEAD, &url)
                .bearer_auth(&alice.access_token),
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(header(&response, "content-length"), "5000");

    // `?token=` for elements that cannot send a header; nothing without credentials.
    let response = server
        .send(server.request(Method::GET, &format!("{url}?token={}", alice.access_token)))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.bytes, content);
    let response = server.send(server.request(Method::GET, &url)).await;
    assert_eq!(response.status, 401);
    let response = server
        .send(server.request(Method::GET, &format!("{url}?token=forged")))
        .await;
    assert_eq!(response.status, 401);

    // Uploading needs credentials and a `file` field in a multipart body.
    let response = server
        .send(
            server
                .request(Method::POST, "/api/v1/attachments")
                .multipart(file_form(b"x".to_vec(), "x.txt", "text/plain")),
        )
        .await;
    assert_eq!(response.status, 401);
    let response = server
        .send(
            server
                .request(Method::POST, "/api/v1/attachments")
                .bearer_auth(&alice.access_token)
                .multipart(Form::new().text("other", "value")),
        )
        .await;
    assert_eq!(response.status, 400);
    let body = &response.json;
    assert_eq!(body["error"]["field"], "file");
    let response = server
        .send(
            server
                .request(Method::POST, "/api/v1/attachments")
                .bearer_auth(&alice.access_token)
                .json(&json!({"file": "x"})),
        )
        .await;
    assert_eq!(response.status, 415);
    let body = &response.json;
    assert_eq!(body["error"]["code"], "unsupported_media_type");

    // Names as browsers send them: raw UTF-8, maybe with a path.
    let form = Form::new().percent_encode_noop().part(
        "file",
        Part::bytes(b"quarterly".to_vec())
            .file_name("C:\\fakepath\\报告 \"Q3\".txt")
            .mime_str("text/plain")
            .expect("mime"),
    );
    let response = server
        .send(
            server
                .request(Method::POST, "/api/v1/attachments")
                .bearer_auth(&alice.access_token)
                .multipart(form),
        )
        .await;
    assert_eq!(response.status, 201);
    let named = &response.json;
    assert_eq!(named["name"], "报告 \"Q3\".txt");
    let response = get(&server, &alice, named["url"].as_str().expect("url")).await;
    assert_eq!(
        header(&response, "content-disposition"),
        "inline; filename=\"__ _Q3_.txt\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A%20%22Q3%22.txt"
    );
}

#[tokio::test]
async fn same_content_is_stored_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let content = b"the same bytes, uploaded twice".to_vec();
    let first = server
        .upload(&alice, &content, "one.txt", "text/plain")
        .await;
    let second = server.upload(&bob, &content, "two.txt", "text/plain").await;
    assert_ne!(first["id"], second["id"]);
    assert_eq!(first["sha256"], second["sha256"]);
    assert_eq!(second["name"], "two.txt");
    let stored = blobs(&server.data_dir());
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(std::fs::read(&stored[0]).expect("read"), content);
    // Content-addressed: files/ab/cdef...
    let sha = first["sha256"].as_str().expect("sha");
    assert!(stored[0].ends_with(Path::new(&sha[..2]).join(&sha[2..])));
    assert_eq!(temp_files(&server.data_dir()), 0);
    // Each record keeps its own name.
    let response = get(&server, &bob, second["url"].as_str().expect("url")).await;
    assert!(header(&response, "content-disposition").contains("two.txt"));
}

#[tokio::test]
async fn oversize_uploads_are_refused_and_leave_nothing() {
    let limit = 64 * 1024;
    let server = TestServer::start_with(
        ServerOptions::new().env("LANCHAT_LIMITS_MAX_ATTACHMENT_BYTES", "65536"),
    )
    .await;
    let alice = server.register("alice").await;

    // Exactly the limit is fine.
    let ok = server
        .upload(
            &alice,
            &vec![7u8; limit],
            "full.bin",
            "application/octet-stream",
        )
        .await;
    assert_eq!(ok["size"], limit);
    let before = blobs(&server.data_dir());
    assert_eq!(before.len(), 1);

    // One byte over (found while streaming), well over (refused from Content-Length),
    // and a chunked body with no length at all.
    for (label, size, chunked) in [
        ("one byte over", limit + 1, false),
        ("declared far over", 4 * limit, false),
        ("chunked", 3 * limit, true),
    ] {
        let bytes = vec![9u8; size];
        let part = if chunked {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                bytes.chunks(8192).map(|c| Ok(c.to_vec())).collect();
            Part::stream(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
        } else {
            Part::bytes(bytes)
        }
        .file_name("big.bin");
        let response = server
            .send(
                server
                    .request(Method::POST, "/api/v1/attachments")
                    .bearer_auth(&alice.access_token)
                    .multipart(Form::new().part("file", part)),
            )
            .await;
        assert_eq!(response.status, 413, "{label}");
        let body = &response.json;
        assert_eq!(body["error"]["code"], "payload_too_large", "{label}");
        assert_eq!(
            blobs(&server.data_dir()),
            before,
            "{label}: a file was left"
        );
        assert_eq!(
            temp_files(&server.data_dir()),
            0,
            "{label}: a temp file was left"
        );
    }
    // The server is still fine.
    server
        .upload(&alice, b"small", "small.txt", "text/plain")
        .await;
}

#[tokio::test]
async fn executable_types_are_downloads() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let html = b"<html><body><script>alert(document.cookie)</script></body></html>";
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
    for (bytes, name, claimed, stored) in [
        (&html[..], "page.html", "text/html", "text/html"),
        // HTML pretending to be a picture is still HTML.
        (&html[..], "cat.png", "image/png", "text/html"),
        (&svg[..], "logo.svg", "image/svg+xml", "image/svg+xml"),
        (b"alert(1)", "x.js", "text/javascript", "text/javascript"),
        (
            b"<?xml version=\"1.0\"?><a/>",
            "a.xml",
            "application/xml",
            "application/xml",
        ),
        (
            b"%PDF-1.7\n",
            "doc.pdf",
            "application/pdf",
            "application/pdf",
        ),
        (
            b"\x00\x01\x02",
            "blob",
            "application/octet-stream",
            "application/octet-stream",
        ),
        // A claimed image the bytes do not confirm is not trusted.
        (
            b"not a picture",
            "fake.gif",
            "image/gif",
            "application/octet-stream",
        ),
    ] {
        let attachment = server.upload(&alice, bytes, name, claimed).await;
        assert_eq!(attachment["mime"], stored, "{name}");
        let response = get(&server, &alice, attachment["url"].as_str().expect("url")).await;
        assert_eq!(response.status, 200);
        let disposition = header(&response, "content-disposition");
        assert!(
            disposition.starts_with("attachment;"),
            "{name}: {disposition}"
        );
        assert!(
            disposition.contains(&format!("filename*=UTF-8''{name}")),
            "{disposition}"
        );
        assert_eq!(
            header(&response, "x-content-type-options"),
            "nosniff",
            "{name}"
        );
        assert_eq!(
            header(&response, "content-security-policy"),
            "sandbox",
            "{name}"
        );
    }
}

#[tokio::test]
async fn only_the_uploader_and_readers_of_the_message_get_the_file() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let secret = server
        .upload(&alice, b"group secret", "s.txt", "text/plain")
        .await;
    let public = server
        .upload(&alice, b"for everyone", "p.txt", "text/plain")
        .await;
    let secret_url = secret["url"].as_str().expect("url").to_owned();
    let public_url = public["url"].as_str().expect("url").to_owned();

    // Not sent yet: only alice.
    assert_eq!(get(&server, &alice, &secret_url).await.status, 200);
    assert_eq!(get(&server, &bob, &secret_url).await.status, 404);

    let group = server
        .post_ok(
            "/api/v1/conversations",
            &alice,
            json!({"kind": "group", "title": "g", "member_ids": [bob.user_id]}),
        )
        .await;
    let message = server
        .post_ok(
            &format!("/api/v1/conversations/{}/messages", group["id"]),
            &alice,
            json!({"body": "see attached", "attachment_ids": [secret["id"]]}),
        )
        .await;
    assert_eq!(message["attachments"][0]["id"], secret["id"]);
    assert_eq!(get(&server, &bob, &secret_url).await.status, 200);
    let response = get(&server, &carol, &secret_url).await;
    assert_eq!(response.status, 404);
    let body = &response.json;
    assert_eq!(body["error"]["code"], "not_found");

    // A channel is public: anyone may read what was sent there.
    let channel = server
        .post_ok(
            "/api/v1/conversations",
            &alice,
            json!({"kind": "channel", "title": "news"}),
        )
        .await;
    server
        .post_ok(
            &format!("/api/v1/conversations/{}/messages", channel["id"]),
            &alice,
            json!({"body": "", "attachment_ids": [public["id"]]}),
        )
        .await;
    assert_eq!(get(&server, &carol, &public_url).await.status, 200);

    // Deleting the message withdraws the file from the others.
    let (status, body) = server
        .delete(&format!("/api/v1/messages/{}", message["id"]), &alice)
        .await;
    assert!((200..300).contains(&status), "delete: {status} {body}");
    assert_eq!(get(&server, &bob, &secret_url).await.status, 404);
    assert_eq!(get(&server, &alice, &secret_url).await.status, 200);
}

#[tokio::test]
async fn path_tricks_never_reach_a_file() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    server.upload(&alice, b"mine", "m.txt", "text/plain").await;
    for path in [
        "/api/v1/attachments/abc",
        "/api/v1/attachments/0",
        "/api/v1/attachments/-1",
        "/api/v1/attachments/1.0",
        "/api/v1/attachments/1e0",
        "/api/v1/attachments/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/v1/attachments/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/attachments/1%00",
        "/api/v1/attachments/99999999999999999999999",
    ] {
        let response = get(&server, &alice, path).await;
        let status = response.status;
        let body = &response.text;
        assert!(status == 404 || status == 400, "{path}: {status}");
        assert!(!body.contains("root:"), "{path}: {body}");
    }
    // Sent raw, without the client normalizing the dots away.
    for path in [
        "/api/v1/attachments/../../etc/passwd",
        "/api/v1/attachments/../../../../../../etc/passwd",
        "/api/v1/attachments/..%2f..%2fetc%2fpasswd",
    ] {
        let (status, body) = server.raw_get(path, &alice.access_token).await;
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
        assert!(!body.contains("root:"), "{path}: {body}");
    }
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode");
    out.into_inner()
}

#[tokio::test]
async fn images_get_dimensions_and_previews() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    // The client's type does not matter: the bytes are a PNG.
    let big = server
        .upload(
            &alice,
            &png(1000, 500),
            "photo.png",
            "application/octet-stream",
        )
        .await;
    assert_eq!(big["mime"], "image/png");
    assert_eq!(
        (big["width"].as_i64(), big["height"].as_i64()),
        (Some(1000), Some(500))
    );
    let url = big["url"].as_str().expect("url").to_owned();

    let original = get(&server, &alice, &url).await;
    assert_eq!(header(&original, "content-type"), "image/png");
    assert!(header(&original, "content-disposition").starts_with("inline;"));

    for round in 0..2 {
        let response = get(&server, &alice, &format!("{url}?thumb=1")).await;
        assert_eq!(response.status, 200, "round {round}");
        assert_eq!(header(&response, "content-type"), "image/jpeg");
        let etag = header(&response, "etag").to_owned();
        assert_ne!(etag, header(&original, "etag"));
        let preview = image::load_from_memory(&response.bytes).expect("a JPEG");
        assert_eq!((preview.width(), preview.height()), (320, 160));
        // Conditional requests work on previews too.
        let response = get_with(
            &server,
            &alice,
            &format!("{url}?thumb=1"),
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(response.status, 304);
    }
    // Cached on disk next to the file.
    let sha = big["sha256"].as_str().expect("sha");
    let cached = server
        .data_dir()
        .join("files")
        .join(&sha[..2])
        .join(format!("{}.thumb.jpg", &sha[2..]));
    assert!(cached.is_file());

    // A small image is its own preview; a non-image is served as itself.
    let small = server
        .upload(&alice, &png(100, 50), "icon.png", "image/png")
        .await;
    let response = get(
        &server,
        &alice,
        &format!("{}?thumb=1", small["url"].as_str().expect("url")),
    )
    .await;
    assert_eq!(header(&response, "content-type"), "image/png");
    let text = server
        .upload(&alice, b"just text", "t.txt", "text/plain")
        .await;
    let response = get(
        &server,
        &alice,
        &format!("{}?thumb=1", text["url"].as_str().expect("url")),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.bytes.as_slice(), b"just text");
    let response = get(&server, &alice, &format!("{url}?thumb=maybe")).await;
    assert_eq!(response.status, 400);
}

/// In-process: records older than the limit and never sent are removed with
/// their files; sent ones, avatars and recent ones stay; stray files go.
#[tokio::test]
async fn cleanup_removes_unsent_uploads() {
    use lanchat::attachments::{self, store};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = lanchat::config::Config::default();
    config.server.data_dir = dir.path().to_owned();
    let prepared = lanchat::server::prepare(config).expect("prepare");
    let state = prepared.state.clone();
    let files = store::files_dir(dir.path());

    let day = 24 * 3600 * 1000i64;
    let sha = |n: u8| format!("{:064x}", n);
    // (sha, age, sent in a message, avatar)
    let cases = [
        (sha(1), 2 * day, false, false), // old, never sent: removed
        (sha(2), 2 * day, true, false),  // old, sent: kept
        (sha(3), 2 * day, false, true),  // old, an avatar: kept
        (sha(4), 1000, false, false),    // recent: kept
    ];
    for (sha, _, _, _) in &cases {
        let path = store::blob_path(&files, sha).expect("path");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, sha).expect("write");
    }
    // A file no record refers to (a crash between storing and recording).
    let stray = store::blob_path(&files, &sha(5)).expect("path");
    std::fs::create_dir_all(stray.parent().expect("parent")).expect("mkdir");
    std::fs::write(&stray, b"stray").expect("write");

    let rows = cases.clone();
    state
        .db
        .writer
        .run(move |ctx| {
            let conn = ctx.conn();
            let now = ctx.now();
            conn.execute(
                "INSERT INTO users (id, username, password_hash, created_at) VALUES (1, 'alice', 'x', 0)",
                [],
            )?;
            conn.execute(
                "INSERT INTO conversations (id, kind, created_at, last_activity_at) VALUES (1, 'group', 0, 0)",
                [],
            )?;
            conn.execute(
                "INSERT INTO messages (id, conversation_id, sender_id, body, created_at) VALUES (1, 1, 1, 'x', 0)",
                [],
            )?;
            for (i, (sha, age, sent, avatar)) in rows.iter().enumerate() {
                let id = i as i64 + 1;
                conn.execute(
                    "INSERT INTO attachments (id, uploader_id, name, mime, size, sha256, created_at)
                     VALUES (?1, 1, 'f', 'text/plain', 64, ?2, ?3)",
                    rusqlite::params![id, sha, now - age],
                )?;
                if *sent {
                    conn.execute(
                        "INSERT INTO message_attachments (message_id, attachment_id, position) VALUES (1, ?1, 0)",
                        [id],
                    )?;
                }
                if *avatar {
                    conn.execute("UPDATE users SET avatar_attachment_id = ?1 WHERE id = 1", [id])?;
                }
            }
            Ok::<_, lanchat::error::AppError>(())
        })
        .await
        .expect("fixture");

    let report = attachments::cleanup_orphans(&state, attachments::ORPHAN_MAX_AGE)
        .await
        .expect("cleanup");
    assert_eq!(report.records, 1);
    assert_eq!(report.files, 2, "the orphan's file and the stray file");
    assert!(!store::blob_path(&files, &sha(1)).expect("p").exists());
    assert!(!stray.exists());
    for n in 2..=4 {
        assert!(
            store::blob_path(&files, &sha(n)).expect("p").exists(),
            "{n}"
        );
    }
    let left: i64 = state
        .db
        .read(|conn| {
            conn.query_row("SELECT count(*) FROM attachments", [], |r| r.get(0))
                .map_err(lanchat::error::AppError::from)
        })
        .await
        .expect("count");
    assert_eq!(left, 3);
    // Nothing more to do the second time.
    let report = attachments::cleanup_orphans(&state, attachments::ORPHAN_MAX_AGE)
        .await
        .expect("cleanup");
    assert_eq!(report, attachments::CleanupReport::default());
    state.db.writer.shutdown().await;
}
