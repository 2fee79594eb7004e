//! HTTP plumbing and hostile input: bad JSON, oversize bodies, bad and forged
//! tokens, unknown routes and methods, the static client, `/healthz`. None of it
//! may produce a 500 (the harness fails any test that gets one).

mod common;

use bytes::Bytes;
use common::*;

const LOGIN: &str = "/api/v1/auth/login";
const REGISTER: &str = "/api/v1/auth/register";

/// Posts a raw body (no content type unless given) and returns the reply.
async fn post_raw(
    server: &TestServer,
    path: &str,
    body: impl Into<reqwest::Body>,
    content_type: Option<&str>,
) -> Reply {
    let mut request = server.request(Method::POST, path).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    server.send(request).await
}

#[tokio::test]
async fn healthz_reports_version_and_database() {
    let server = TestServer::start().await;
    let reply = server.send(server.request(Method::GET, "/healthz")).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        reply.headers
    );
    assert_eq!(
        reply.json,
        json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION"), "db": "ok", "disk": "ok", "tls": "auto" })
    );
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let server = TestServer::start().await;
    let deep = "[".repeat(100_000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", br#"{"username": "alice", "pass"#.to_vec()),
        ("not json", b"username=alice&password=secret".to_vec()),
        (
            "trailing garbage",
            br#"{"username": "alice", "password": "x"} {}"#.to_vec(),
        ),
        ("an array", br#"["alice", "secret"]"#.to_vec()),
        ("a string", br#""alice""#.to_vec()),
        ("null", b"null".to_vec()),
        (
            "bad utf-8",
            b"{\"username\": \"\xff\xfe\", \"password\": \"secret\"}".to_vec(),
        ),
        ("nul bytes", b"\0\0\0\0".to_vec()),
        ("deep nesting", deep.into_bytes()),
    ];
    for (what, body) in cases {
        for content_type in [Some("application/json"), None] {
            let reply = post_raw(&server, LOGIN, body.clone(), content_type).await;
            assert_eq!(reply.status, 400, "{what}: {}", reply.text);
            assert_eq!(reply.json["error"]["code"], json!("bad_request"), "{what}");
            assert!(
                reply.json["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
    }
}

#[tokio::test]
async fn empty_body_is_a_400() {
    let server = TestServer::start().await;
    for body in ["", "   \n"] {
        let reply = post_raw(&server, REGISTER, body, Some("application/json")).await;
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert_eq!(reply.json["error"]["code"], json!("bad_request"));
    }
    // No body at all.
    let reply = server.send(server.request(Method::POST, LOGIN)).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
}

#[tokio::test]
async fn wrong_types_and_missing_fields_name_the_field() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let cases = [
        (
            LOGIN,
            json!({ "username": 5, "password": "secret123" }),
            "username",
        ),
        (
            LOGIN,
            json!({ "username": "alice", "password": null }),
            "password",
        ),
        (
            LOGIN,
            json!({ "username": "alice", "password": ["x"] }),
            "password",
        ),
        (LOGIN, json!({ "username": "alice" }), "password"),
        (LOGIN, json!({ "password": "secret123" }), "username"),
        (LOGIN, json!({}), "username"),
        (
            REGISTER,
            json!({ "username": "bob", "password": PASSWORD, "display_name": 7 }),
            "display_name",
        ),
        (
            REGISTER,
            json!({ "username": "bob", "password": PASSWORD, "invite": {} }),
            "invite",
        ),
        (
            "/api/v1/auth/refresh",
            json!({ "refresh_token": 12 }),
            "refresh_token",
        ),
        ("/api/v1/auth/refresh", json!({}), "refresh_token"),
        (
            "/api/v1/setup",
            json!({ "username": "root", "password": PASSWORD }),
            "setup_token",
        ),
    ];
    for (path, body, field) in cases {
        let reply = server.post(path, ANON, body.clone()).await;
        assert_field_error(&reply, 400, "bad_request", field);
    }
    // The same key twice.
    let reply = post_raw(
        &server,
        LOGIN,
        r#"{"username": "alice", "password": "x", "password": "y"}"#,
        Some("application/json"),
    )
    .await;
    assert_field_error(&(reply.status, reply.json), 400, "bad_request", "password");
    let reply = server
        .post(
            "/api/v1/users/me/password",
            &alice,
            json!({ "current_password": true, "new_password": "long enough" }),
        )
        .await;
    assert_field_error(&reply, 400, "bad_request", "current_password");
    // Unknown fields are ignored, as clients evolve.
    let (status, body) = server
        .post(
            LOGIN,
            ANON,
            json!({ "username": "alice", "password": PASSWORD, "otp": 1 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn oversize_bodies_are_a_413() {
    let server = TestServer::start().await;
    let limit = 1024 * 1024;
    // A valid JSON object padded with spaces to exactly the limit is read.
    let mut at_limit = br#"{"username": "nobody", "password": "whatever1"}"#.to_vec();
    at_limit.resize(limit, b' ');
    let reply = post_raw(&server, LOGIN, at_limit, Some("application/json")).await;
    assert_eq!(
        reply.status, 401,
        "the limit itself is allowed: {}",
        reply.text
    );

    // One byte more, with a Content-Length.
    let mut over = br#"{"username": "nobody", "password": "whatever1"}"#.to_vec();
    over.resize(limit + 1, b' ');
    let reply = post_raw(&server, LOGIN, over, Some("application/json")).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.json["error"]["code"], json!("payload_too_large"));

    // Much more, chunked, without a Content-Length.
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        std::iter::once(Ok(Bytes::from_static(b"{\"username\": \"")))
            .chain((0..64).map(|_| Ok(chunk.clone())))
            .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let request = server
        .request(Method::POST, REGISTER)
        .header("content-type", "application/json")
        .body(body);
    let reply = server.send(request).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.json["error"]["code"], json!("payload_too_large"));
    // The rest of the body is not read, so the connection is not reused.
    assert_eq!(reply.header("connection"), Some("close"));

    // Far too much: the server may give up on reading and close, but it survives.
    let chunk = Bytes::from(vec![b'x'; 1024 * 1024]);
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..64).map(|_| Ok(chunk.clone())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let outcome = server
        .client()
        .post(server.url(LOGIN))
        .body(body)
        .send()
        .await;
    if let Ok(response) = outcome {
        assert_eq!(response.status(), 413);
    }

    // The server is fine afterwards.
    for _ in 0..5 {
        let (status, _) = server.get("/healthz", ANON).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn missing_or_foreign_authorization_is_a_401() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let me = "/api/v1/users/me";

    let reply = server.get(me, ANON).await;
    assert_error(&reply, 401, "unauthorized");
    for header in [
        "Basic YWxpY2U6Y29ycmVjdCBob3JzZSBiYXR0ZXJ5".to_owned(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Token abc".to_owned(),
        alice.access_token.clone(), // the token without its scheme
        format!("Basic {}", alice.access_token),
    ] {
        let reply = server
            .send(
                server
                    .request(Method::GET, me)
                    .header("authorization", &header),
            )
            .await;
        assert_eq!(reply.status, 401, "{header}: {}", reply.text);
        assert_eq!(
            reply.json["error"]["code"],
            json!("unauthorized"),
            "{header}"
        );
    }
    // The scheme is case-insensitive.
    let reply = server
        .send(
            server
                .request(Method::GET, me)
                .header("authorization", format!("bearer {}", alice.access_token)),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A refresh token is not an access token.
    let reply = server.get(me, &alice.refresh_token).await;
    assert_error(&reply, 401, "invalid_token");
    for garbage in [
        "abc",
        "a.b.c",
        "....",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        &"x".repeat(10_000),
    ] {
        let reply = server.get(me, garbage).await;
        assert_error(&reply, 401, "invalid_token");
    }
}

#[tokio::test]
async fn forged_expired_and_tampered_tokens_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let secret = server.jwt_secret();
    let me = "/api/v1/users/me";
    let claims = jwt_claims(&alice.access_token);
    let sid = claims["sid"].as_i64().expect("sid");
    let now = now_secs();

    // Control: a token made here with the server's secret is accepted, so the
    // refusals below are about exactly what each one changes.
    let good = sign_jwt(
        &secret,
        &json!({ "sub": alice.user_id, "sid": sid, "iat": now, "exp": now + 600 }),
    );
    let (status, body) = server.get(me, &good).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], json!("alice"));

    // Signed with another secret.
    let forged = sign_jwt(
        &[7u8; 64],
        &json!({ "sub": alice.user_id, "sid": sid, "iat": now, "exp": now + 600 }),
    );
    assert_error(&server.get(me, &forged).await, 401, "invalid_token");

    // Expired (well past any leeway).
    let expired = sign_jwt(
        &secret,
        &json!({ "sub": alice.user_id, "sid": sid, "iat": now - 7200, "exp": now - 3600 }),
    );
    let error = assert_error(&server.get(me, &expired).await, 401, "invalid_token");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{error}"
    );
    // No expiry at all.
    let eternal = sign_jwt(
        &secret,
        &json!({ "sub": alice.user_id, "sid": sid, "iat": now }),
    );
    assert_error(&server.get(me, &eternal).await, 401, "invalid_token");

    // Tampered: alice's token with bob's id in the payload, signature kept.
    let parts: Vec<&str> = alice.access_token.split('.').collect();
    let mut payload = claims.clone();
    payload["sub"] = json!(bob.user_id);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        base64_url_encode(payload.to_string().as_bytes()),
        parts[2]
    );
    assert_error(&server.get(me, &tampered).await, 401, "invalid_token");
    // A flipped signature character.
    let mut flipped = alice.access_token.clone();
    let last = flipped.pop().expect("non-empty");
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    assert_error(&server.get(me, &flipped).await, 401, "invalid_token");
    // alg "none", and HS512 with the right secret: only HS256 is accepted.
    let none = format!(
        "{}.{}.",
        base64_url_encode(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url_encode(claims.to_string().as_bytes())
    );
    assert_error(&server.get(me, &none).await, 401, "invalid_token");
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({ "sub": alice.user_id, "sid": sid, "iat": now, "exp": now + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .expect("sign HS512");
    assert_error(&server.get(me, &hs512).await, 401, "invalid_token");
    // Wrong claim types.
    let stringly = sign_jwt(
        &secret,
        &json!({ "sub": alice.user_id.to_string(), "sid": sid, "exp": now + 600 }),
    );
    assert_error(&server.get(me, &stringly).await, 401, "invalid_token");

    // A well-signed token for a session that was signed out is refused too.
    let (status, _) = server.post("/api/v1/auth/logout", &alice, json!({})).await;
    assert_eq!(status, 204);
    assert_error(&server.get(me, &good).await, 401, "invalid_token");
    // ...and one for a user that does not exist gets no data.
    let ghost = sign_jwt(
        &secret,
        &json!({ "sub": 999_999, "sid": 999_999, "iat": now, "exp": now + 600 }),
    );
    let (status, body) = server.get(me, &ghost).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn unknown_api_routes_are_json_404s() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ] {
        for path in [
            "/api/v1/nope",
            "/api/v1/users/me/nope",
            "/api/v2/users/me",
            "/api",
            "/api/",
            "/api/v1",
            "/api/v1/",
        ] {
            let reply = server
                .send(
                    server
                        .request(method.clone(), path)
                        .bearer_auth(&alice.access_token),
                )
                .await;
            assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text);
            assert_eq!(
                reply.json["error"]["code"],
                json!("not_found"),
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn wrong_methods_are_json_405s() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for (method, path) in [
        (Method::DELETE, "/api/v1/users/me"),
        (Method::PUT, "/api/v1/users/me"),
        (Method::GET, "/api/v1/auth/login"),
        (Method::GET, "/api/v1/auth/register"),
        (Method::DELETE, "/api/v1/setup"),
        (Method::POST, "/api/v1/users"),
        (Method::POST, "/healthz"),
    ] {
        let reply = server
            .send(
                server
                    .request(method.clone(), path)
                    .bearer_auth(&alice.access_token),
            )
            .await;
        assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text);
        assert_eq!(
            reply.json["error"]["code"],
            json!("method_not_allowed"),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn the_web_client_is_served_with_a_strict_policy() {
    let server = TestServer::start().await;
    for path in ["/", "/index.html", "/login", "/c/42/some/client/route"] {
        let reply = server.send(server.request(Method::GET, path)).await;
        assert_eq!(reply.status, 200, "{path}");
        assert!(
            reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{path}: {:?}",
            reply.headers
        );
        assert!(
            reply.text.contains("<html") || reply.text.contains("<!doctype"),
            "{path}"
        );
        let csp = reply
            .header("content-security-policy")
            .expect("a CSP header");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    }
    // The app refers to no other host.
    let index = server.send(server.request(Method::GET, "/")).await.text;
    for needle in ["http://", "https://", "//cdn"] {
        let outside = index
            .match_indices(needle)
            .any(|(i, _)| !index[i..].starts_with("http://www.w3.org"));
        assert!(!outside, "index.html mentions {needle}");
    }
    // A missing asset is a 404, not the app.
    let reply = server
        .send(server.request(Method::GET, "/no-such-file.js"))
        .await;
    assert_eq!(reply.status, 404);
    // Conditional requests revalidate.
    let first = server.send(server.request(Method::GET, "/")).await;
    let etag = first.header("etag").expect("an ETag").to_owned();
    let reply = server
        .send(
            server
                .request(Method::GET, "/")
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(reply.status, 304);
}

#[tokio::test]
async fn api_errors_are_json_and_nosniff() {
    let server = TestServer::start().await;
    let reply = server
        .send(server.request(Method::GET, "/api/v1/users/me"))
        .await;
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        reply.headers
    );
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    let (status, body) = server.get("/api/v1/openapi.json", ANON).await;
    assert_eq!(status, 200);
    assert!(body["paths"].is_object(), "an OpenAPI document");
}

#[tokio::test]
async fn concurrent_registrations_of_one_name_create_one_user() {
    // 32 registrations from one address: past the default per-address throttle.
    let server = TestServer::start_with(
        ServerOptions::new().env("LANCHAT_AUTH_REGISTER_MAX_PER_ADDRESS", "100"),
    )
    .await;
    let attempts = (0..16).map(|i| {
        server.post(
            REGISTER,
            ANON,
            json!({ "username": if i % 2 == 0 { "Twin" } else { "twin" }, "password": PASSWORD }),
        )
    });
    let replies = futures_util::future::join_all(attempts).await;
    let created = replies.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 1, "{replies:?}");
    for reply in replies.iter().filter(|(status, _)| *status != 201) {
        assert_error(reply, 409, "username_taken");
    }
    // Distinct names in parallel all succeed, with distinct ids.
    let attempts = (0..16).map(|i| {
        server.post(
            REGISTER,
            ANON,
            json!({ "username": format!("user{i}"), "password": PASSWORD }),
        )
    });
    let replies = futures_util::future::join_all(attempts).await;
    let mut ids: Vec<i64> = replies
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 201, "{body}");
            body["user"]["id"].as_i64().expect("id")
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16);
}
