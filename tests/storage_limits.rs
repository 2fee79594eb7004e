//! Limits that keep one client from stalling the server or filling its disk,
//! against the real binary: trickling uploads, per-user caps on uploads and
//! exports, the upload minimum rate, the attachment quota, the free-disk
//! reserve, and hostile images.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUNDARY: &str = "lanchat-test-boundary";

/// An upload written by hand that sends its headers, the part's header and a
/// few bytes of the file, then stops: the server sits in the file's body.
async fn start_upload(addr: SocketAddr, token: &str) -> TcpStream {
    let part_head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\nfirst bytes"
    );
    let head = format!(
        "POST /api/v1/attachments HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 1000000\r\n\r\n{part_head}"
    );
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("send");
    stream
}

/// Reads a response's status line and the rest of what arrives within the
/// client timeout.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    received.extend_from_slice(&buffer[..n]);
                    if String::from_utf8_lossy(&received).contains("}}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn temp_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("files").join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits (up to the client timeout) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A multipart upload of `bytes`, and whatever the server answered.
async fn try_upload(server: &TestServer, user: &Session, bytes: Vec<u8>) -> Reply {
    let request = server
        .request(Method::POST, "/api/v1/attachments")
        .bearer_auth(&user.access_token)
        .multipart(file_form(bytes, "file.bin", "application/octet-stream"));
    server.send(request).await
}

/// Hundreds of uploads trickling in at once (one user's, the cap on uploads
/// per user raised past them) must leave the server answering everyone else:
/// each upload holds no thread while it waits on its client, and reads have
/// threads of their own.
#[tokio::test]
async fn trickling_uploads_do_not_stall_other_users() {
    const UPLOADS: usize = 600;
    let server = TestServer::start_with(
        ServerOptions::new().env("LANCHAT_LIMITS_MAX_UPLOADS_PER_USER", "10000"),
    )
    .await;
    let slowpoke = server.register("slowpoke").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dm = server.direct(&bob, &carol).await;
    server
        .post_ok(
            &format!("/api/v1/conversations/{dm}/messages"),
            &carol,
            json!({"body": "are you there?"}),
        )
        .await;

    let addr = server.addr();
    let mut uploads = Vec::with_capacity(UPLOADS);
    for _ in 0..UPLOADS {
        uploads.push(start_upload(addr, &slowpoke.access_token).await);
    }
    // One byte per second each, as the measurement did.
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for upload in &mut uploads {
                let _ = upload.write_all(b"x").await;
            }
        }
    });
    let data_dir = server.data_dir();
    eventually("the uploads to reach their files", || {
        temp_files(&data_dir) >= UPLOADS * 5 / 6
    })
    .await;

    // Another user signs in and loads the conversation list and history; the
    // client's own timeout is the bound.
    let bob = server.login("bob", PASSWORD).await;
    let (status, list) = server.get("/api/v1/conversations", &bob).await;
    assert_eq!(status, 200, "{list}");
    let (status, history) = server
        .get(&format!("/api/v1/conversations/{dm}/messages"), &bob)
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["items"][0]["body"], "are you there?");

    trickle.abort();
    let _ = trickle.await;
    eventually("abandoned uploads to leave no temp file", || {
        temp_files(&data_dir) == 0
    })
    .await;
}

#[tokio::test]
async fn uploads_past_the_per_user_cap_get_429() {
    let server = TestServer::start_with(
        ServerOptions::new().env("LANCHAT_LIMITS_MAX_UPLOADS_PER_USER", "2"),
    )
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let addr = server.addr();
    let first = start_upload(addr, &alice.access_token).await;
    let _second = start_upload(addr, &alice.access_token).await;
    let data_dir = server.data_dir();
    eventually("both uploads to start", || temp_files(&data_dir) == 2).await;

    let refused = try_upload(&server, &alice, b"third".to_vec()).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.json["error"]["code"], "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("5"));
    // Other users are not affected.
    assert_eq!(
        try_upload(&server, &bob, b"bob's".to_vec()).await.status,
        201
    );

    // An upload that ends gives its place back.
    drop(first);
    eventually("the abandoned upload to end", || temp_files(&data_dir) == 1).await;
    let accepted = try_upload(&server, &alice, b"third".to_vec()).await;
    assert_eq!(accepted.status, 201, "{}", accepted.text);
}

#[tokio::test]
async fn a_stalled_upload_is_cut_off_and_leaves_nothing() {
    let server = TestServer::start_with(
        ServerOptions::new()
            .env("LANCHAT_LIMITS_UPLOAD_RATE_WINDOW_SECS", "1")
            .env("LANCHAT_LIMITS_UPLOAD_MIN_BYTES_PER_SEC", "1000"),
    )
    .await;
    let alice = server.register("alice").await;
    let mut upload = start_upload(server.addr(), &alice.access_token).await;
    let (status, text) = read_response(&mut upload).await;
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let data_dir = server.data_dir();
    eventually("the temp file to go", || temp_files(&data_dir) == 0).await;

    // Stalled before the file's part even starts.
    let mut stuck = TcpStream::connect(server.addr()).await.expect("connect");
    let head = format!(
        "POST /api/v1/attachments HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 1000\r\n\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-da",
        server.addr(),
        alice.access_token
    );
    stuck.write_all(head.as_bytes()).await.expect("send");
    let (status, text) = read_response(&mut stuck).await;
    assert_eq!(status, 408, "{text}");

    // A normal upload is well above the minimum.
    assert_eq!(
        try_upload(&server, &alice, vec![7u8; 200_000]).await.status,
        201
    );
}

/// Fills a conversation with `count` messages of 1,000 characters straight in
/// the database (the server stopped), so that its export outgrows the socket
/// buffers and stays open while its client does not read.
async fn fill_conversation(server: &mut TestServer, conversation: i64, sender: i64, count: usize) {
    server.stop().await;
    let conn = server.db();
    let body = "x".repeat(1000);
    conn.execute_batch("BEGIN").expect("begin");
    for _ in 0..count {
        conn.execute(
            "INSERT INTO messages (conversation_id, sender_id, body, created_at) VALUES (?1, ?2, ?3, 1)",
            rusqlite::params![conversation, sender, body],
        )
        .expect("insert");
    }
    conn.execute_batch("COMMIT").expect("commit");
    drop(conn);
    server.start_again().await;
}

/// An export request written by hand whose client never reads the answer.
async fn start_export(addr: SocketAddr, token: &str, conversation: i64) -> TcpStream {
    let request = format!(
        "GET /api/v1/conversations/{conversation}/export HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    stream
}

#[tokio::test]
async fn exports_past_the_per_user_cap_get_429() {
    let mut server = TestServer::start_with(
        ServerOptions::new().env("LANCHAT_LIMITS_MAX_EXPORTS_PER_USER", "1"),
    )
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let dm = server.direct(&alice, &bob).await;
    fill_conversation(&mut server, dm, alice.user_id, 20_000).await;
    let alice = server.login("alice", PASSWORD).await;
    let bob = server.login("bob", PASSWORD).await;
    let path = format!("/api/v1/conversations/{dm}/export");

    let mut stuck = start_export(server.addr(), &alice.access_token, dm).await;
    // The first bytes of the download: the export is under way.
    let mut first = [0u8; 12];
    stuck.read_exact(&mut first).await.expect("response starts");
    assert_eq!(&first, b"HTTP/1.1 200");

    let (status, body) = server.get(&path, &alice).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    // Bob's export of the same conversation runs, all 20,000 messages of it.
    let (status, export) = server.get(&path, &bob).await;
    assert_eq!(status, 200);
    assert_eq!(
        export["conversations"][0]["messages"]
            .as_array()
            .map(Vec::len),
        Some(20_000)
    );

    drop(stuck);
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        let (status, _) = server.get(&path, &alice).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(
            Instant::now() < deadline,
            "the export's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_attachment_quota_is_per_user_and_admins_see_and_change_it() {
    let server = TestServer::start_with(
        ServerOptions::new()
            .env("LANCHAT_LIMITS_ATTACHMENT_QUOTA_BYTES", "3000")
            .admin("root"),
    )
    .await;
    let root = server.login("root", PASSWORD).await;
    let alice = server.register("alice").await;
    assert_eq!(
        try_upload(&server, &alice, vec![1u8; 2000]).await.status,
        201
    );
    // Past the quota, whether announced by Content-Length or not.
    let refused = try_upload(&server, &alice, vec![2u8; 2000]).await;
    assert_eq!(refused.status, 507, "{}", refused.text);
    assert_eq!(refused.json["error"]["code"], "quota_exceeded");
    assert!(
        refused.json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("2000 of your 3000 bytes")),
        "{}",
        refused.text
    );
    assert_eq!(
        try_upload(&server, &alice, vec![3u8; 1000]).await.status,
        201
    );
    let full = try_upload(&server, &alice, vec![4u8; 1]).await;
    assert_eq!(full.status, 507);
    assert_eq!(full.json["error"]["code"], "quota_exceeded");

    let (status, users) = server.get("/api/v1/admin/users?q=alice", &root).await;
    assert_eq!(status, 200, "{users}");
    assert_eq!(users["items"][0]["attachment_bytes"], 3000);
    let (status, settings) = server.get("/api/v1/admin/settings", &root).await;
    assert_eq!(status, 200);
    assert_eq!(settings["attachment_quota_bytes"], 3000);
    let (status, settings) = server
        .patch(
            "/api/v1/admin/settings",
            &root,
            json!({"attachment_quota_bytes": 0}),
        )
        .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["attachment_quota_bytes"], 0);
    assert_eq!(
        try_upload(&server, &alice, vec![4u8; 5000]).await.status,
        201
    );
    let (status, bad) = server
        .patch(
            "/api/v1/admin/settings",
            &root,
            json!({"attachment_quota_bytes": 5}),
        )
        .await;
    assert_field_error(
        &(status, bad),
        400,
        "validation_failed",
        "attachment_quota_bytes",
    );
}

#[tokio::test]
async fn below_the_disk_reserve_uploads_get_507_and_messages_work() {
    // A reserve far above any disk's free space.
    let server = TestServer::start_with(
        ServerOptions::new()
            .env("LANCHAT_LIMITS_MIN_FREE_DISK_BYTES", "1000000000000000000")
            .admin("root"),
    )
    .await;
    let root = server.login("root", PASSWORD).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let refused = try_upload(&server, &alice, b"hello".to_vec()).await;
    assert_eq!(refused.status, 507, "{}", refused.text);
    assert_eq!(refused.json["error"]["code"], "insufficient_storage");

    let dm = server.direct(&alice, &bob).await;
    let (status, sent) = server
        .post(
            &format!("/api/v1/conversations/{dm}/messages"),
            &alice,
            json!({"body": "still talking"}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");

    let (status, health) = server.get("/healthz", ANON).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["disk"], "low");
    let (status, stats) = server.get("/api/v1/admin/stats", &root).await;
    assert_eq!(status, 200);
    assert!(stats["disk_free_bytes"].as_u64().is_some(), "{stats}");
    assert_eq!(stats["disk_reserve_bytes"], 1_000_000_000_000_000_000u64);
}

#[tokio::test]
async fn healthz_says_the_disk_is_fine_by_default() {
    let server = TestServer::start().await;
    let (status, health) = server.get("/healthz", ANON).await;
    assert_eq!(status, 200);
    assert_eq!(health["disk"], "ok");
}

/// A PNG of `width` × `height` black pixels (grey scale).
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::GrayImage::new(width, height)
        .write_to(&mut bytes, image::ImageFormat::Png)
        .expect("encode");
    bytes.into_inner()
}

/// Replaces the image data of a PNG by bytes that do not decode, keeping its
/// header (so its dimensions still read).
fn corrupt(mut png: Vec<u8>) -> Vec<u8> {
    let idat = png
        .windows(4)
        .position(|w| w == b"IDAT")
        .expect("an IDAT chunk");
    for byte in &mut png[idat + 4..idat + 40] {
        *byte = 0xA5;
    }
    png
}

/// A few bytes claiming 100,000 × 100,000 pixels: a decompression bomb.
fn bomb() -> Vec<u8> {
    let mut png = png(1, 1);
    let ihdr = png.windows(4).position(|w| w == b"IHDR").expect("IHDR");
    png[ihdr + 4..ihdr + 8].copy_from_slice(&100_000u32.to_be_bytes());
    png[ihdr + 8..ihdr + 12].copy_from_slice(&100_000u32.to_be_bytes());
    png
}

fn no_preview_logs(server: &TestServer) -> usize {
    server.stderr().matches("no preview for an image").count()
}

#[tokio::test]
async fn hostile_images_are_never_decoded_twice_nor_past_the_pixel_limit() {
    let server = TestServer::start_with(
        ServerOptions::new().env("LANCHAT_LIMITS_THUMBNAIL_MAX_PIXELS", "1000000"),
    )
    .await;
    let alice = server.register("alice").await;
    let thumb =
        |attachment: &Value| format!("{}?thumb=1", attachment["url"].as_str().unwrap_or(""));
    let fetch = |path: String| {
        let server = &server;
        let alice = &alice;
        async move {
            server
                .send(
                    server
                        .request(Method::GET, &path)
                        .bearer_auth(&alice.access_token),
                )
                .await
        }
    };

    // Within the limit: a preview.
    let fine = server
        .upload(&alice, &png(1000, 1000), "fine.png", "image/png")
        .await;
    let reply = fetch(thumb(&fine)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("image/jpeg"));

    // Over the pixel limit: not decoded, the image itself is served.
    let big = server
        .upload(&alice, &png(1001, 1000), "big.png", "image/png")
        .await;
    assert_eq!(big["width"], 1001);
    let reply = fetch(thumb(&big)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("image/png"));
    assert_eq!(no_preview_logs(&server), 1);

    // A corrupt image: tried once, then remembered.
    let broken = server
        .upload(&alice, &corrupt(png(1000, 900)), "broken.png", "image/png")
        .await;
    assert_eq!(broken["height"], 900);
    for _ in 0..3 {
        let reply = fetch(thumb(&broken)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("image/png"));
    }
    assert_eq!(no_preview_logs(&server), 2, "decoded once, then remembered");
    let again = fetch(thumb(&big)).await;
    assert_eq!(again.header("content-type"), Some("image/png"));
    assert_eq!(no_preview_logs(&server), 2);

    // A bomb: its size does not even read, it is stored and served as is.
    let bomb = server
        .upload(&alice, &bomb(), "bomb.png", "image/png")
        .await;
    assert!(bomb.get("width").is_none(), "{bomb}");
    let reply = fetch(thumb(&bomb)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.bytes.len() as u64, bomb["size"].as_u64().unwrap_or(0));
    let (status, health) = server.get("/healthz", ANON).await;
    assert_eq!(status, 200, "{health}");
}
