//! HTTPS against the real binary: the local CA as the only trusted root, one
//! port for HTTP and HTTPS, the names the certificate covers, re-issue that
//! keeps connections open, `files` mode and its bad inputs, the trust pages,
//! `tls.require`, `lanchat ca`, and backups that keep the CA.

mod common;
use common::*;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a background change (re-issue, reload) may take to show.
const CHANGE_DEADLINE: Duration = Duration::from_secs(30);

async fn ca_der(server: &TestServer) -> Vec<u8> {
    let response = server
        .client()
        .get(server.url("/ca.crt"))
        .send()
        .await
        .expect("GET /ca.crt");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-x509-ca-cert"
    );
    response.bytes().await.expect("body").to_vec()
}

/// An HTTPS client trusting only `ca` (DER), with `names` resolved to the
/// server's loopback address.
fn https_client(server: &TestServer, ca: Option<&[u8]>, names: &[&str]) -> reqwest::Client {
    install_crypto_provider();
    let roots: Vec<reqwest::Certificate> = ca
        .map(|der| reqwest::Certificate::from_der(der).expect("CA certificate"))
        .into_iter()
        .collect();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .tls_certs_only(roots);
    for name in names {
        builder = builder.resolve(name, server.addr());
    }
    builder.build().expect("HTTPS client")
}

fn rustls_config(ca: &[u8]) -> Arc<rustls::ClientConfig> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.to_vec()))
        .expect("add the CA");
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS connection to the server as `name`.
async fn tls_connect(
    server: &TestServer,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.addr()).await.expect("connect");
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(name.to_owned()).expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

/// The leaf certificate a fresh connection is served.
async fn served_leaf(server: &TestServer, ca: &[u8]) -> Vec<u8> {
    let tls = tls_connect(server, rustls_config(ca), "127.0.0.1").await;
    let (_, connection) = tls.get_ref();
    connection.peer_certificates().expect("certificates")[0].to_vec()
}

fn san_of(leaf: &[u8]) -> (Vec<String>, Vec<IpAddr>) {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("parse");
    let san = cert
        .subject_alternative_name()
        .expect("SAN")
        .expect("has SAN");
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("v4")))
            }
            GeneralName::IPAddress(b) if b.len() == 16 => {
                ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("v6")))
            }
            _ => {}
        }
    }
    (dns, ips)
}

/// One HTTP/1.1 request on an open stream; returns the status line and body.
async fn keep_alive_get<S>(stream: &mut S, path: &str) -> (String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .expect("write");
    read_response(stream).await
}

/// Reads one response with a Content-Length body.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> (String, String) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read head");
        assert!(
            n > 0,
            "connection closed in the head: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("read body");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn https_with_the_local_ca_works_for_loopback_and_host_names_and_http_shares_the_port() {
    let server = TestServer::start().await;
    let ca = ca_der(&server).await;
    let host = gethostname::gethostname()
        .to_string_lossy()
        .to_ascii_lowercase();
    let port = server.addr().port();
    let client = https_client(&server, Some(&ca), &["localhost", &host]);
    for name in ["127.0.0.1", "localhost", host.as_str()] {
        let url = format!("https://{name}:{port}/healthz");
        let response = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:?}"));
        assert_eq!(response.status(), 200, "{url}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["tls"], "auto");
    }
    // The same port still speaks plain HTTP.
    let (status, body) = server.get("/healthz", ANON).await;
    assert_eq!(status, 200, "{body}");
    // Over HTTPS the app works as over HTTP, and the trust info says so.
    let info: Value = client
        .get(format!("https://127.0.0.1:{port}/api/v1/tls"))
        .send()
        .await
        .expect("tls info")
        .json()
        .await
        .expect("json");
    assert_eq!(info["secure"], true, "{info}");
    let (_, plain_info) = server.get("/api/v1/tls", ANON).await;
    assert_eq!(plain_info["secure"], false, "{plain_info}");
    assert_eq!(plain_info["mode"], "auto");
    let fingerprint = plain_info["ca"]["fingerprint_sha256"]
        .as_str()
        .expect("fingerprint");
    assert_eq!(fingerprint.len(), 32 * 3 - 1);
    // The start-up output names it, as does `lanchat ca`.
    let stdout = server.stdout_lines().join("\n");
    assert!(stdout.contains(fingerprint), "{stdout}");
    assert!(stdout.contains("/trust"), "{stdout}");
    let guide = server.sandbox().run(&["ca"], None);
    guide.assert_success();
    assert!(guide.stdout.contains(fingerprint), "{guide}");
    assert!(
        guide.stdout.contains("certutil -addstore -f Root"),
        "{guide}"
    );

    // Without the CA as a root, HTTPS is refused.
    let untrusting = https_client(&server, None, &[]);
    let refused = untrusting
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "an unknown CA must not be trusted: {refused:?}"
    );
}

#[tokio::test]
async fn the_certificate_covers_every_interface_address_and_the_machine_names() {
    let server = TestServer::start_with(
        ServerOptions::new().env("LANCHAT_TLS_NAMES", r#"["chat.office.test", "10.9.8.7"]"#),
    )
    .await;
    let ca = ca_der(&server).await;
    let (dns, ips) = san_of(&served_leaf(&server, &ca).await);
    let host = gethostname::gethostname()
        .to_string_lossy()
        .to_ascii_lowercase();
    let first = host.split('.').next().expect("label").to_owned();
    for name in [
        "localhost",
        host.as_str(),
        &format!("{first}.local"),
        "chat.office.test",
    ] {
        assert!(dns.iter().any(|d| d == name), "{name} not in {dns:?}");
    }
    let mut expected: Vec<IpAddr> = vec![
        "127.0.0.1".parse().expect("ip"),
        "::1".parse().expect("ip"),
        "10.9.8.7".parse().expect("ip"),
    ];
    for interface in if_addrs::get_if_addrs().expect("interfaces") {
        let ip = interface.ip();
        let link_local_v6 = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if !ip.is_loopback() && !link_local_v6 {
            expected.push(ip);
        }
    }
    for ip in expected {
        assert!(ips.contains(&ip), "{ip} not in {ips:?}");
    }
    // Unknown or missing SNI: the certificate is served anyway.
    let tls = tls_connect(&server, rustls_config(&ca), "127.0.0.1").await;
    drop(tls);
    let tcp = TcpStream::connect(server.addr()).await.expect("connect");
    let mut config = (*rustls_config(&ca)).clone();
    config.enable_sni = false;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await;
    assert!(tls.is_ok(), "no SNI: {tls:?}");
}

#[tokio::test]
async fn an_expiring_certificate_is_reissued_without_dropping_open_connections() {
    // A one-day certificate renewed 30 days before expiry: re-issued at every check.
    let server = TestServer::start_with(
        ServerOptions::new()
            .env("LANCHAT_TLS_CERT_DAYS", "1")
            .env("LANCHAT_TLS_CHECK_SECS", "1"),
    )
    .await;
    let ca = ca_der(&server).await;
    let alice = server.register("alice").await;
    let config = rustls_config(&ca);
    // An open keep-alive HTTPS connection and a secure WebSocket.
    let mut kept = tls_connect(&server, config.clone(), "localhost").await;
    let first_leaf = kept.get_ref().1.peer_certificates().expect("certs")[0].to_vec();
    let (status, _) = keep_alive_get(&mut kept, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    let ws_tls = tls_connect(&server, config.clone(), "localhost").await;
    let url = format!(
        "wss://localhost:{}/api/v1/ws?token={}",
        server.addr().port(),
        alice.access_token
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, ws_tls)
        .await
        .expect("wss handshake");
    use futures_util::{SinkExt, StreamExt};
    let _hello = tokio::time::timeout(REQUEST_TIMEOUT, ws.next())
        .await
        .expect("hello");

    let deadline = std::time::Instant::now() + CHANGE_DEADLINE;
    loop {
        if served_leaf(&server, &ca).await != first_leaf {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new certificate within {CHANGE_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both old connections still work.
    let (status, _) = keep_alive_get(&mut kept, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"type":"ping"}"#,
    ))
    .await
    .expect("send on the old WebSocket");
    let pong = loop {
        let frame = tokio::time::timeout(REQUEST_TIMEOUT, ws.next())
            .await
            .expect("an answer on the old WebSocket")
            .expect("open")
            .expect("frame");
        if let Ok(text) = frame.to_text()
            && text.contains("pong")
        {
            break text.to_owned();
        }
    };
    assert!(pong.contains("pong"));
    assert!(server.stderr().contains("issued a new server certificate"));
}

/// A CA and a leaf for `names`, made in the test: (ca DER, chain PEM, key PEM).
fn test_pki(names: &[&str], days_valid: (i64, i64)) -> (Vec<u8>, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days_valid.0);
    params.not_after = now + time::Duration::days(days_valid.1);
    let leaf = params.signed_by(&key, &issuer).expect("leaf");
    (
        ca_cert.der().to_vec(),
        format!("{}{}", leaf.pem(), ca_cert.pem()),
        key.serialize_pem(),
    )
}

fn files_options(sandbox: &Sandbox, chain: &str, key: &str) -> ServerOptions {
    let cert = sandbox.write_file("server.crt", chain);
    let key = sandbox.write_file("server.key", key);
    ServerOptions::new()
        .env("LANCHAT_TLS_MODE", "files")
        .env("LANCHAT_TLS_CERT_FILE", &cert.to_string_lossy())
        .env("LANCHAT_TLS_KEY_FILE", &key.to_string_lossy())
        .env("LANCHAT_TLS_CHECK_SECS", "1")
}

#[tokio::test]
async fn files_mode_serves_the_given_certificate_and_reloads_it_when_it_changes() {
    let sandbox = Sandbox::new();
    let (ca, chain, key) = test_pki(&["localhost", "127.0.0.1"], (-1, 30));
    let options = files_options(&sandbox, &chain, &key);
    let server = TestServer::start_in(sandbox, options).await;
    let client = https_client(&server, Some(&ca), &["localhost"]);
    let url = format!("https://localhost:{}/healthz", server.addr().port());
    let body: Value = client
        .get(&url)
        .send()
        .await
        .expect("https")
        .json()
        .await
        .expect("json");
    assert_eq!(body["tls"], "files");
    // No local CA to hand out in this mode.
    let (status, _) = server.get("/ca.crt", ANON).await;
    assert_eq!(status, 404);

    let (new_ca, new_chain, new_key) = test_pki(&["localhost", "127.0.0.1"], (-1, 30));
    server.sandbox().write_file("server.crt", &new_chain);
    server.sandbox().write_file("server.key", &new_key);
    let new_client = https_client(&server, Some(&new_ca), &["localhost"]);
    let deadline = std::time::Instant::now() + CHANGE_DEADLINE;
    while new_client.get(&url).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new files were not loaded\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn files_mode_refuses_bad_files_at_start_naming_them_and_writing_nothing() {
    let (_, chain, key) = test_pki(&["localhost"], (-1, 30));
    let (_, _, other_key) = test_pki(&["localhost"], (-1, 30));
    let (_, expired_chain, expired_key) = test_pki(&["localhost"], (-30, -1));
    let cases: Vec<(&str, Option<&str>, Option<&str>, &str)> = vec![
        (
            "missing certificate",
            None,
            Some(&key),
            "server.crt: cannot be read",
        ),
        (
            "missing key",
            Some(&chain),
            None,
            "server.key: cannot be read",
        ),
        ("not PEM", Some("hello"), Some(&key), "holds no certificate"),
        (
            "key of another certificate",
            Some(&chain),
            Some(&other_key),
            "does not belong to the certificate",
        ),
        (
            "expired",
            Some(&expired_chain),
            Some(&expired_key),
            "expired on",
        ),
        (
            "no key in the key file",
            Some(&chain),
            Some(&chain),
            "no usable PEM private key",
        ),
    ];
    for (what, cert, key_pem, expected) in cases {
        let sandbox = Sandbox::new();
        let cert_path = sandbox.root().join("server.crt");
        let key_path = sandbox.root().join("server.key");
        if let Some(cert) = cert {
            sandbox.write_file("server.crt", cert);
        }
        if let Some(key_pem) = key_pem {
            sandbox.write_file("server.key", key_pem);
        }
        let out = sandbox.run_with_env(
            &["--listen", "127.0.0.1:0"],
            &[
                ("LANCHAT_TLS_MODE", "files"),
                ("LANCHAT_TLS_CERT_FILE", &cert_path.to_string_lossy()),
                ("LANCHAT_TLS_KEY_FILE", &key_path.to_string_lossy()),
                ("LANCHAT_MDNS_ENABLED", "false"),
            ],
            None,
        );
        let stderr = out.assert_failure();
        assert!(stderr.contains(expected), "{what}: {out}");
        assert!(
            !sandbox.data_dir().exists(),
            "{what}: the data directory was written"
        );
    }
}

#[tokio::test]
async fn tls_off_serves_plain_http_only_and_refuses_a_handshake_cleanly() {
    let server = TestServer::start_with(ServerOptions::new().env("LANCHAT_TLS_MODE", "off")).await;
    let (status, body) = server.get("/api/v1/tls", ANON).await;
    assert_eq!(status, 200);
    assert_eq!(body["mode"], "off");
    let (status, _) = server.get("/ca.crt", ANON).await;
    assert_eq!(status, 404);
    let client = https_client(&server, None, &[]);
    assert!(
        client
            .get(format!(
                "https://127.0.0.1:{}/healthz",
                server.addr().port()
            ))
            .send()
            .await
            .is_err()
    );
    let (status, _) = server.get("/healthz", ANON).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn malformed_client_hellos_and_plain_text_in_tls_are_closed_and_harm_nothing() {
    let server = TestServer::start().await;
    let ca = ca_der(&server).await;
    // A record header promising a handshake, then garbage.
    let mut tcp = TcpStream::connect(server.addr()).await.expect("connect");
    tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00])
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, tcp.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a malformed ClientHello must end the connection"
    );
    // A TLS session, then plain HTTP inside it is just an HTTP request.
    let mut tls = tls_connect(&server, rustls_config(&ca), "localhost").await;
    let (status, _) = keep_alive_get(&mut tls, "/healthz").await;
    assert!(status.contains("200"));
    // Garbage where HTTP is expected gets a 400 or a close, not a crash.
    let mut tcp = TcpStream::connect(server.addr()).await.expect("connect");
    tcp.write_all(b"\x01\x02\x03 not http\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, tcp.read_to_end(&mut buf)).await;
    let (status, _) = server.get("/healthz", ANON).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed() {
    let server = TestServer::start_with(
        ServerOptions::new().env("LANCHAT_CONNECTIONS_TLS_HANDSHAKE_TIMEOUT_SECS", "1"),
    )
    .await;
    let mut tcp = TcpStream::connect(server.addr()).await.expect("connect");
    // The start of a ClientHello record, and nothing more.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the stalled handshake was not closed");
    // A connection that sends nothing at all is closed too.
    let mut silent = TcpStream::connect(server.addr()).await.expect("connect");
    let closed = tokio::time::timeout(Duration::from_secs(20), silent.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a silent connection was not closed");
}

#[tokio::test]
async fn the_trust_page_and_the_ca_downloads_work_over_plain_http() {
    let server = TestServer::start().await;
    let response = server
        .client()
        .get(server.url("/trust"))
        .send()
        .await
        .expect("trust");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
    assert!(response.headers().contains_key("content-security-policy"));
    let page = response.text().await.expect("page");
    assert!(page.contains("/js/trust.js") && page.contains("/ca.crt"));
    let pem = server
        .client()
        .get(server.url("/ca.pem"))
        .send()
        .await
        .expect("pem");
    assert_eq!(pem.headers()["content-type"], "application/x-pem-file");
    let pem = pem.text().await.expect("text");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let der = ca_der(&server).await;
    let profile = server
        .client()
        .get(server.url("/ca.mobileconfig"))
        .send()
        .await
        .expect("profile");
    assert_eq!(
        profile.headers()["content-type"],
        "application/x-apple-aspen-config"
    );
    let profile = profile.text().await.expect("text");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    assert!(
        profile.contains(&format!("<data>{b64}</data>")),
        "{profile}"
    );
    assert!(profile.contains("com.apple.security.root"));
}

#[tokio::test]
async fn tls_require_redirects_plain_http_except_the_trust_page() {
    let server =
        TestServer::start_with(ServerOptions::new().env("LANCHAT_TLS_REQUIRE", "true")).await;
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let port = server.addr().port();
    let response = no_redirects
        .get(server.url("/api/v1/users/me?x=1"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        format!("https://127.0.0.1:{port}/api/v1/users/me?x=1").as_str()
    );
    for path in [
        "/trust",
        "/ca.crt",
        "/healthz",
        "/api/v1/tls",
        "/js/trust.js",
    ] {
        let response = no_redirects
            .get(server.url(path))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{path}");
    }
    let ca = ca_der(&server).await;
    let client = https_client(&server, Some(&ca), &[]);
    let response = client
        .get(format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .expect("https");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_backup_carries_the_ca_and_a_restored_server_keeps_it() {
    let mut server = TestServer::start().await;
    let (_, info) = server.get("/api/v1/tls", ANON).await;
    let fingerprint = info["ca"]["fingerprint_sha256"].clone();
    server.stop().await;
    let archive = server.sandbox().root().join("b.tar");
    server
        .sandbox()
        .run(&["backup", &archive.to_string_lossy()], None)
        .assert_success();
    let restored = Sandbox::new();
    restored
        .run(&["restore", &archive.to_string_lossy()], None)
        .assert_success();
    let again = TestServer::start_in(restored, ServerOptions::new()).await;
    let (_, info) = again.get("/api/v1/tls", ANON).await;
    assert_eq!(info["ca"]["fingerprint_sha256"], fingerprint);
}
