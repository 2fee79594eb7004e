//! Login and registration throttling, and the bounded password hashing queue,
//! against the real server: concurrent guesses are counted while in flight, an
//! attacker cannot keep a user out of their own device, registrations are
//! throttled per address, and cheap checks come before any hashing.

mod common;
use common::*;

use futures_util::future::join_all;

/// Logs in, optionally with a device cookie; returns the reply.
async fn login(server: &TestServer, username: &str, password: &str, cookie: Option<&str>) -> Reply {
    let mut request = server
        .request(Method::POST, "/api/v1/auth/login")
        .json(&json!({ "username": username, "password": password }));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    server.send(request).await
}

/// The `name=value` part of the device cookie a reply set.
fn device_cookie(reply: &Reply) -> String {
    let header = reply
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie in {:?}", reply.headers));
    assert!(header.contains("HttpOnly"), "{header}");
    assert!(header.contains("SameSite=Strict"), "{header}");
    header
        .split(';')
        .next()
        .expect("a cookie")
        .trim()
        .to_owned()
}

fn retry_after(reply: &Reply) -> u64 {
    reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", reply.headers))
}

/// Fires `count` logins at once; returns the statuses.
async fn concurrent_logins(
    server: &TestServer,
    count: usize,
    username: impl Fn(usize) -> String,
) -> Vec<u16> {
    join_all((0..count).map(|i| {
        let name = username(i);
        async move { login(server, &name, "wrong password!", None).await.status }
    }))
    .await
}

#[tokio::test]
async fn concurrent_guesses_from_one_address_are_counted_while_in_flight() {
    let server = TestServer::start_with(
        ServerOptions::new()
            .env("LANCHAT_AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS", "3")
            .env("LANCHAT_AUTH_LOGIN_MAX_FAILURES_PER_USER", "100"),
    )
    .await;
    let statuses = concurrent_logins(&server, 20, |i| format!("nobody{i}")).await;
    let verified = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        verified <= 3,
        "only 3 guesses may be verified: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn concurrent_guesses_for_one_user_are_counted_while_in_flight() {
    let server = TestServer::start_with(
        ServerOptions::new()
            .env("LANCHAT_AUTH_LOGIN_MAX_FAILURES_PER_USER", "3")
            .env("LANCHAT_AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS", "1000"),
    )
    .await;
    server.register("victim").await;
    let statuses = concurrent_logins(&server, 20, |_| "victim".to_owned()).await;
    let verified = statuses.iter().filter(|s| **s == 401).count();
    // 3 free failures, and at most one more once the first delay (1 s) passed.
    assert!(
        verified <= 4,
        "at most 4 guesses may be verified: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn an_attacker_cannot_keep_the_admin_out_of_their_own_device() {
    let server = TestServer::start_with(
        ServerOptions::new()
            .admin("admin")
            .env("LANCHAT_AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS", "1000"),
    )
    .await;
    // The admin signed in on their device before: it keeps the device cookie.
    let first = login(&server, "admin", PASSWORD, None).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let cookie = device_cookie(&first);
    // The guesser's own device cookie, for another user.
    server.register("mallory").await;
    let mallory = login(&server, "mallory", PASSWORD, None).await;
    let mallorys = device_cookie(&mallory);

    // Someone else guesses the admin's password, over and over.
    let mut refused = 0;
    for _ in 0..30 {
        let reply = login(&server, "admin", "not the password", None).await;
        assert!(reply.status == 401 || reply.status == 429, "{}", reply.text);
        if reply.status == 429 {
            refused += 1;
            // Progressive delays, never longer than the configured maximum.
            assert!(
                (1..=300).contains(&retry_after(&reply)),
                "{:?}",
                reply.headers
            );
        }
    }
    assert!(refused > 0, "guessing must be slowed down");
    // A device cookie for another user does not help the guesser.
    let reply = login(&server, "admin", "not the password", Some(&mallorys)).await;
    assert_error(&reply.into_pair(), 429, "rate_limited");

    // The admin's device gets in with the right password all the same...
    let reply = login(&server, "admin", PASSWORD, Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // ...and keeps its device id across sign-ins.
    let again = device_cookie(&reply);
    let reply = login(&server, "admin", PASSWORD, Some(&again)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn a_known_device_gets_in_from_an_address_that_is_refused() {
    // Behind a reverse proxy (or NAT) everyone shares one address.
    let server = TestServer::start_with(ServerOptions::new().admin("admin")).await;
    let first = login(&server, "admin", PASSWORD, None).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let cookie = device_cookie(&first);
    for i in 0..25 {
        let reply = login(&server, &format!("guess{i}"), "not the password", None).await;
        assert!(reply.status == 401 || reply.status == 429, "{}", reply.text);
    }
    let refused = login(&server, "admin", PASSWORD, None).await;
    assert_eq!(
        refused.status, 429,
        "the address is over its limit: {}",
        refused.text
    );
    let reply = login(&server, "admin", PASSWORD, Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn registration_is_throttled_per_address_after_the_cheap_checks() {
    let server = TestServer::start_with(
        ServerOptions::new()
            .admin("admin")
            .env("LANCHAT_AUTH_REGISTER_MAX_PER_ADDRESS", "2"),
    )
    .await;
    // Refused for cheap reasons: nothing is hashed, nothing is counted.
    let taken = server
        .post(
            "/api/v1/auth/register",
            ANON,
            json!({ "username": "admin", "password": PASSWORD }),
        )
        .await;
    assert_error(&taken, 409, "username_taken");
    for i in 0..3 {
        let short = server
            .post(
                "/api/v1/auth/register",
                ANON,
                json!({ "username": format!("user{i}"), "password": "short" }),
            )
            .await;
        assert_error(&short, 400, "validation_failed");
    }
    server.register("first").await;
    server.register("second").await;
    let reply = server
        .send(
            server
                .request(Method::POST, "/api/v1/auth/register")
                .json(&json!({ "username": "third", "password": PASSWORD })),
        )
        .await;
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert!(retry_after(&reply) > 0);
    // Admins still create accounts.
    let admin = server.login("admin", PASSWORD).await;
    let (status, body) = server
        .post(
            "/api/v1/admin/users",
            &admin,
            json!({ "username": "third", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn invite_codes_are_checked_before_the_password_is_hashed() {
    let server = TestServer::start_with(
        ServerOptions::new()
            .admin("admin")
            .env("LANCHAT_AUTH_REGISTRATION", "invite")
            .env("LANCHAT_AUTH_REGISTER_MAX_PER_ADDRESS", "1"),
    )
    .await;
    for i in 0..3 {
        let reply = server
            .post(
                "/api/v1/auth/register",
                ANON,
                json!({ "username": format!("user{i}"), "password": PASSWORD, "invite": "WRONG" }),
            )
            .await;
        assert_error(&reply, 403, "invalid_invite");
    }
    // The wrong codes did not use up the address's one registration.
    let admin = server.login("admin", PASSWORD).await;
    let (status, invite) = server
        .post("/api/v1/admin/invites", &admin, json!({}))
        .await;
    assert_eq!(status, 201, "{invite}");
    let (status, body) = server
        .post(
            "/api/v1/auth/register",
            ANON,
            json!({ "username": "invited", "password": PASSWORD, "invite": invite["code"] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn passwords_over_the_maximum_are_refused_before_hashing() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let long = "x".repeat(1025);
    let reply = login(&server, "alice", &long, None).await;
    assert_field_error(&reply.into_pair(), 400, "validation_failed", "password");
    // Not counted as a failed guess either: the right password still works.
    let reply = login(&server, "alice", PASSWORD, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let alice = server.login("alice", PASSWORD).await;
    let reply = server
        .post(
            "/api/v1/users/me/password",
            &alice,
            json!({ "current_password": long, "new_password": "another good password" }),
        )
        .await;
    assert_field_error(&reply, 400, "validation_failed", "current_password");
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_with_retry_after() {
    let server = TestServer::start_with(
        ServerOptions::new()
            .env("LANCHAT_AUTH_PASSWORD_HASH_QUEUE", "1")
            .env("LANCHAT_AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS", "1000")
            .env("LANCHAT_AUTH_LOGIN_MAX_FAILURES_PER_USER", "1000"),
    )
    .await;
    let replies = join_all((0..60).map(|i| {
        let server = &server;
        async move { login(server, &format!("someone{i}"), "wrong password!", None).await }
    }))
    .await;
    let busy: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(
        !busy.is_empty(),
        "60 logins at once must overflow a queue of 1: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for reply in &busy {
        assert_eq!(
            reply.json["error"]["code"],
            json!("unavailable"),
            "{}",
            reply.text
        );
        assert!(retry_after(reply) >= 1);
    }
    assert!(replies.iter().all(|r| r.status == 401 || r.status == 503));
}
