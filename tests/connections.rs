//! The connection layer against the real binary: early answers arrive intact,
//! slow or silent clients are cut off by the header, idle and handshake
//! timeouts, and they cannot keep others from signing in.

mod common;
use common::*;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A generous bound for things that must happen, not a speed assertion.
const EVENTUALLY: Duration = Duration::from_secs(30);

struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response with a Content-Length body from a raw connection.
async fn read_response(stream: &mut TcpStream) -> std::io::Result<RawResponse> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

#[tokio::test]
async fn twenty_unauthenticated_uploads_in_a_row_on_one_connection_each_get_their_401() {
    let server = TestServer::start().await;
    let body = vec![b'x'; 64 * 1024];
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    for i in 0..20 {
        let head = format!(
            "POST /api/v1/attachments?name=f{i}.bin HTTP/1.1\r\nHost: test\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        stream.write_all(&body).await.expect("body");
        let response = read_response(&mut stream)
            .await
            .unwrap_or_else(|e| panic!("upload {i}: no answer: {e}"));
        assert_eq!(response.status, 401, "upload {i}");
        let json: Value = serde_json::from_slice(&response.body).expect("JSON error");
        assert_eq!(json["error"]["code"], "unauthorized", "upload {i}: {json}");
        // The small body was read and dropped: the connection stays usable.
        assert_ne!(response.header("connection"), Some("close"), "upload {i}");
    }
}

#[tokio::test]
async fn large_unread_bodies_get_their_answer_and_a_clean_close() {
    let server = TestServer::start().await;
    // Over the drain limit: each answer says Connection: close and arrives
    // whole, although the server never reads the 4 MiB.
    let body = vec![b'x'; 4 * 1024 * 1024];
    for i in 0..20 {
        let response = server
            .client()
            .post(server.url("/api/v1/attachments?name=big.bin"))
            .header("content-type", "application/octet-stream")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload {i}: {e:?}"));
        assert_eq!(response.status(), 401, "upload {i}");
        let json: Value = response.json().await.expect("JSON error");
        assert_eq!(json["error"]["code"], "unauthorized", "upload {i}");
    }
}

#[tokio::test]
async fn a_backup_request_with_a_64_kb_body_gets_the_whole_archive() {
    let server = TestServer::start_with(ServerOptions::new().admin("root")).await;
    let admin = server.login("root", PASSWORD).await;
    server.sandbox().seed_content();
    for _ in 0..3 {
        let response = server
            .client()
            .post(server.url("/api/v1/admin/backup"))
            .bearer_auth(&admin.access_token)
            .body(vec![b'{'; 64 * 1024])
            .send()
            .await
            .expect("backup");
        assert_eq!(response.status(), 200);
        let length: usize = response.headers()["content-length"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("number");
        let bytes = response.bytes().await.expect("the whole archive");
        assert_eq!(bytes.len(), length);
        let mut archive = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert!(names.iter().any(|n| n == "manifest.json"), "{names:?}");
    }
}

#[tokio::test]
async fn a_connection_trickling_its_headers_is_closed_after_the_header_timeout() {
    let server = TestServer::start_with(
        ServerOptions::new().env("LANCHAT_CONNECTIONS_HEADER_TIMEOUT_SECS", "1"),
    )
    .await;
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        .await
        .expect("start");
    let trickle = async {
        // A header byte every 200 ms, for far longer than the timeout.
        for _ in 0..150 {
            if stream.write_all(b"X").await.is_err() {
                return true;
            }
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                _ => {}
            }
        }
        false
    };
    assert!(trickle.await, "the trickling connection was never closed");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::start_with(
        ServerOptions::new().env("LANCHAT_CONNECTIONS_IDLE_TIMEOUT_SECS", "1"),
    )
    .await;
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request");
    let response = read_response(&mut stream).await.expect("response");
    assert_eq!(response.status, 200);
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(EVENTUALLY, stream.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
}

#[tokio::test]
async fn hundreds_of_connections_trickling_headers_do_not_stop_a_sign_in() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let addr = server.addr();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tricklers = Vec::new();
    for i in 0..300 {
        let mut stop = stop_rx.clone();
        tricklers.push(tokio::spawn(async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return;
            };
            let _ = stream
                .write_all(format!("GET /healthz?{i} HTTP/1.1\r\nHost: test\r\n").as_bytes())
                .await;
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if stream.write_all(b"X").await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
    // Give them time to connect; then someone else signs in and loads their list.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let work = async {
        let alice = server.login("alice", PASSWORD).await;
        let (status, body) = server.get("/api/v1/conversations", &alice).await;
        assert_eq!(status, 200, "{body}");
    };
    tokio::time::timeout(EVENTUALLY, work)
        .await
        .expect("sign-in and conversation list completed");
    let _ = stop_tx.send(true);
    for trickler in tricklers {
        let _ = trickler.await;
    }
}

#[tokio::test]
async fn at_the_connection_cap_new_clients_wait_for_a_free_slot() {
    // 16 slots, taken by stalled TLS handshakes and silent plain connections;
    // the handshake timeout frees them, then a new client is served.
    let server = TestServer::start_with(
        ServerOptions::new()
            .env("LANCHAT_CONNECTIONS_MAX_OPEN", "16")
            .env("LANCHAT_CONNECTIONS_TLS_HANDSHAKE_TIMEOUT_SECS", "1"),
    )
    .await;
    let mut held = Vec::new();
    for i in 0..16 {
        let mut tcp = TcpStream::connect(server.addr()).await.expect("connect");
        if i % 2 == 0 {
            tcp.write_all(&[0x16, 0x03, 0x01])
                .await
                .expect("partial hello");
        }
        held.push(tcp);
    }
    let (status, _) = tokio::time::timeout(EVENTUALLY, server.get("/healthz", ANON))
        .await
        .expect("served once slots were freed");
    assert_eq!(status, 200);
    drop(held);
}
