//! Every auth path of the contract: setup, register (and registration modes),
//! login (and throttling, disabled users), refresh rotation with reuse detection,
//! logout, sessions, and the `/users` endpoints of the foundation.

mod common;

use std::collections::HashSet;

use common::*;

/// Checks the contract's User object.
#[track_caller]
fn assert_user_shape(user: &Value) {
    for key in [
        "id",
        "username",
        "display_name",
        "is_admin",
        "disabled",
        "created_at",
        "online",
        "last_seen_at",
        "status_text",
    ] {
        assert!(user.get(key).is_some(), "user without {key}: {user}");
    }
    assert!(user["id"].as_i64().is_some_and(|id| id > 0), "{user}");
    assert!(
        user["created_at"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000),
        "ms: {user}"
    );
    assert!(
        user.get("password_hash").is_none() && user.get("password").is_none(),
        "{user}"
    );
}

// -- Setup ------------------------------------------------------------------

#[tokio::test]
async fn setup_creates_the_first_admin_once() {
    let mut server = TestServer::start().await;
    let (status, body) = server.get("/api/v1/setup", ANON).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["needs_setup"], json!(true));
    let token = server.setup_token().await.expect("a setup token on stdout");
    assert!(token.len() >= 16, "{token}");

    let attempt = |setup_token: &str, username: &str| json!({ "setup_token": setup_token, "username": username, "password": PASSWORD });
    let reply = server
        .post("/api/v1/setup", ANON, attempt("not-the-token", "root"))
        .await;
    assert_error(&reply, 403, "invalid_setup_token");
    let reply = server
        .post("/api/v1/setup", ANON, attempt("", "root"))
        .await;
    assert_error(&reply, 403, "invalid_setup_token");
    // Validation still applies to the admin account.
    let reply = server
        .post(
            "/api/v1/setup",
            ANON,
            json!({ "setup_token": token, "username": "root", "password": "short" }),
        )
        .await;
    assert_field_error(&reply, 400, "validation_failed", "password");

    let (status, body) = server
        .post("/api/v1/setup", ANON, attempt(&token, "Root"))
        .await;
    assert_eq!(status, 201, "{body}");
    let root = Session::from_tokens(&body, PASSWORD);
    assert_user_shape(&root.user);
    assert_eq!(root.user["username"], json!("root"));
    assert_eq!(root.user["is_admin"], json!(true));
    let (status, me) = server.get("/api/v1/users/me", &root).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["is_admin"], json!(true));

    let (_, body) = server.get("/api/v1/setup", ANON).await;
    assert_eq!(body["needs_setup"], json!(false));
    let reply = server
        .post("/api/v1/setup", ANON, attempt(&token, "root2"))
        .await;
    assert_error(&reply, 409, "setup_done");

    // After a restart: still done, and no setup link printed.
    server.restart().await;
    assert_eq!(server.setup_token().await, None);
    assert!(
        !server
            .stdout_lines()
            .iter()
            .any(|l| l.contains("setup?token=")),
        "{:?}",
        server.stdout_lines()
    );
    let reply = server
        .post("/api/v1/setup", ANON, attempt(&token, "root2"))
        .await;
    assert_error(&reply, 409, "setup_done");
}

#[tokio::test]
async fn concurrent_setups_create_one_admin() {
    let server = TestServer::start().await;
    let token = server.setup_token().await.expect("setup token");
    let attempts = ["root", "boss", "chief", "head"].map(|name| {
        server.post(
            "/api/v1/setup",
            ANON,
            json!({ "setup_token": token, "username": name, "password": PASSWORD }),
        )
    });
    let replies = futures_util::future::join_all(attempts).await;
    let created = replies.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 1, "{replies:?}");
    for reply in replies.iter().filter(|(status, _)| *status != 201) {
        assert_error(reply, 409, "setup_done");
    }
    let admins: i64 = server
        .db()
        .query_row("SELECT count(*) FROM users WHERE is_admin = 1", [], |r| {
            r.get(0)
        })
        .expect("count admins");
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn registering_users_does_not_end_setup() {
    let server = TestServer::start().await;
    server.register("alice").await;
    assert!(server.setup_token().await.is_some());
    let admin = server.setup_admin("root").await;
    assert_eq!(admin.user["is_admin"], json!(true));
}

// -- Register ---------------------------------------------------------------

#[tokio::test]
async fn register_returns_user_and_tokens() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/api/v1/auth/register",
            ANON,
            json!({ "username": "  Alice.B-2_x ", "password": PASSWORD, "display_name": " Alice B " }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let user = &body["user"];
    assert_user_shape(user);
    assert_eq!(
        user["username"],
        json!("alice.b-2_x"),
        "folded to lower case"
    );
    assert_eq!(user["display_name"], json!("Alice B"));
    assert_eq!(user["is_admin"], json!(false));
    assert_eq!(user["disabled"], json!(false));
    assert_eq!(user["status_text"], json!(""));
    assert_eq!(body["expires_in"], json!(900));
    let session = Session::from_tokens(&body, PASSWORD);
    assert_eq!(session.access_token.split('.').count(), 3, "a JWT");
    let claims = jwt_claims(&session.access_token);
    assert_eq!(claims["sub"], user["id"]);
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp.abs_diff(now_secs() + 900) <= 10, "exp {exp}");
    assert!(session.refresh_token.len() >= 32);
    assert_ne!(session.refresh_token, session.access_token);

    let (status, me) = server.get("/api/v1/users/me", &session).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], user["id"]);

    // Without a display name, the username is shown.
    let bob = server.register("bob").await;
    assert_eq!(bob.user["display_name"], json!("bob"));
    assert_ne!(bob.user_id, session.user_id);
}

#[tokio::test]
async fn usernames_are_case_insensitive() {
    let server = TestServer::start().await;
    let alice = server.register("Alice").await;
    assert_eq!(alice.username, "alice");
    let reply = server
        .post(
            "/api/v1/auth/register",
            ANON,
            json!({ "username": "alice", "password": "other password" }),
        )
        .await;
    assert_error(&reply, 409, "username_taken");
    let reply = server
        .post(
            "/api/v1/auth/register",
            ANON,
            json!({ "username": "ALICE ", "password": "other password" }),
        )
        .await;
    assert_error(&reply, 409, "username_taken");
    let again = server.login("ALICE", PASSWORD).await;
    assert_eq!(again.user_id, alice.user_id);
}

#[tokio::test]
async fn register_validation_names_the_field() {
    let server = TestServer::start().await;
    let long_name = "a".repeat(33);
    let long_display = "d".repeat(65);
    let long_password = "p".repeat(1025);
    let cases = [
        (
            json!({ "username": "ab", "password": PASSWORD }),
            "username",
        ),
        (
            json!({ "username": long_name, "password": PASSWORD }),
            "username",
        ),
        (
            json!({ "username": "al ice", "password": PASSWORD }),
            "username",
        ),
        (
            json!({ "username": "ålice", "password": PASSWORD }),
            "username",
        ),
        (
            json!({ "username": "al/ce", "password": PASSWORD }),
            "username",
        ),
        (json!({ "username": "", "password": PASSWORD }), "username"),
        (
            json!({ "username": "alice", "password": "seven77" }),
            "password",
        ),
        (
            json!({ "username": "alice", "password": long_password }),
            "password",
        ),
        (
            json!({ "username": "alice", "password": PASSWORD, "display_name": long_display }),
            "display_name",
        ),
        (
            json!({ "username": "alice", "password": PASSWORD, "display_name": "bell\u{7}" }),
            "display_name",
        ),
    ];
    for (body, field) in cases {
        let reply = server
            .post("/api/v1/auth/register", ANON, body.clone())
            .await;
        assert_eq!(reply.0, 400, "{body} -> {}", reply.1);
        assert_eq!(
            reply.1["error"]["field"],
            json!(field),
            "{body} -> {}",
            reply.1
        );
        assert_eq!(
            reply.1["error"]["code"],
            json!("validation_failed"),
            "{}",
            reply.1
        );
    }
    // Boundaries are accepted: 3 and 32 characters, 8-character password, 64-char name.
    for username in ["abc", &"b".repeat(32)] {
        server
            .register_with(json!({ "username": username, "password": "eight888", "display_name": "x".repeat(64) }))
            .await;
    }
    // Nothing else was created.
    let (status, list) = server
        .get("/api/v1/users", &server.login("abc", "eight888").await)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");
}

#[tokio::test]
async fn closed_registration_is_refused() {
    let server =
        TestServer::start_with(ServerOptions::new().env("LANCHAT_AUTH_REGISTRATION", "closed"))
            .await;
    let reply = server
        .post(
            "/api/v1/auth/register",
            ANON,
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    assert_error(&reply, 403, "registration_closed");
    // Setup still works: it is how the first admin gets in.
    server.setup_admin("root").await;
    let reply = server.try_login("alice", PASSWORD).await;
    assert_error(&reply, 401, "unauthorized");
}

#[tokio::test]
async fn invite_registration_needs_a_valid_code() {
    let server =
        TestServer::start_with(ServerOptions::new().env("LANCHAT_AUTH_REGISTRATION", "invite"))
            .await;
    for body in [
        json!({ "username": "alice", "password": PASSWORD }),
        json!({ "username": "alice", "password": PASSWORD, "invite": "" }),
        json!({ "username": "alice", "password": PASSWORD, "invite": "no-such-code" }),
    ] {
        let reply = server.post("/api/v1/auth/register", ANON, body).await;
        assert_error(&reply, 403, "invalid_invite");
    }
    // An invite put in the database (as the admin API will) lets exactly `uses` people in.
    let far = (now_secs() as i64 + 3600) * 1000;
    let past = (now_secs() as i64 - 3600) * 1000;
    let conn = server.db();
    for (code, uses, expires) in [("good-code", 1, Some(far)), ("old-code", 5, Some(past))] {
        conn.execute(
            "INSERT INTO invites (code, created_by, uses_left, expires_at, created_at)
             VALUES (?1, NULL, ?2, ?3, ?4)",
            rusqlite::params![code, uses, expires, far - 7_200_000],
        )
        .expect("insert an invite");
    }
    drop(conn);
    let alice = server
        .register_with(json!({ "username": "alice", "password": PASSWORD, "invite": "good-code" }))
        .await;
    assert_eq!(alice.username, "alice");
    let reply = server
        .post(
            "/api/v1/auth/register",
            ANON,
            json!({ "username": "bob", "password": PASSWORD, "invite": "good-code" }),
        )
        .await;
    assert_error(&reply, 403, "invalid_invite");
    let reply = server
        .post(
            "/api/v1/auth/register",
            ANON,
            json!({ "username": "bob", "password": PASSWORD, "invite": "old-code" }),
        )
        .await;
    assert_error(&reply, 403, "invalid_invite");
}

// -- Login ------------------------------------------------------------------

#[tokio::test]
async fn login_returns_a_new_session() {
    let server = TestServer::start().await;
    let registered = server.register("alice").await;
    let (status, body) = server.try_login(" Alice ", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert_user_shape(&body["user"]);
    assert_eq!(body["expires_in"], json!(900));
    let session = Session::from_tokens(&body, PASSWORD);
    assert_eq!(session.user_id, registered.user_id);
    assert_ne!(session.refresh_token, registered.refresh_token);
    assert_ne!(
        jwt_claims(&session.access_token)["sid"],
        jwt_claims(&registered.access_token)["sid"],
        "each login is its own session"
    );
    // Both sessions work.
    for token in [&session.access_token, &registered.access_token] {
        let (status, _) = server.get("/api/v1/users/me", token).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let wrong_password = server.try_login("alice", "not the password").await;
    let unknown_user = server.try_login("nobody", "not the password").await;
    assert_error(&wrong_password, 401, "unauthorized");
    assert_eq!(wrong_password, unknown_user, "no user enumeration");
    // An invalid username is no different either.
    let invalid = server.try_login("x", "not the password").await;
    assert_eq!(invalid, unknown_user);
}

#[tokio::test]
async fn disabled_user_is_refused_everywhere() {
    let mut server = TestServer::start().await;
    let bob = server.register("bob").await;
    let alice = server.register("alice").await;
    server.stop().await;
    let changed = server
        .db()
        .execute("UPDATE users SET disabled = 1 WHERE username = 'bob'", [])
        .expect("disable bob");
    assert_eq!(changed, 1);
    server.start_again().await;

    let reply = server.try_login("bob", PASSWORD).await;
    assert_error(&reply, 403, "account_disabled");
    // A wrong password reveals nothing about the account.
    let reply = server.try_login("bob", "not the password").await;
    assert_error(&reply, 401, "unauthorized");
    // The tokens bob already holds stop working at once.
    let reply = server.get("/api/v1/users/me", &bob).await;
    assert_error(&reply, 403, "account_disabled");
    let reply = server.refresh(&bob.refresh_token).await;
    assert_error(&reply, 403, "account_disabled");
    // Others are unaffected, and bob leaves the directory but stays addressable.
    let (status, list) = server.get("/api/v1/users", &alice).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, ["alice"], "{list}");
    let (status, user) = server
        .get(&format!("/api/v1/users/{}", bob.user_id), &alice)
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["disabled"], json!(true));
}

#[tokio::test]
async fn repeated_failures_for_one_user_are_throttled() {
    let server = TestServer::start().await;
    server.register("bob").await;
    server.register("carol").await;
    // Five failures, in any letter case: all count for `bob`.
    for name in ["bob", "BOB", "Bob", " bob", "bob"] {
        let reply = server.try_login(name, "wrong password").await;
        assert_error(&reply, 401, "unauthorized");
    }
    let reply = server
        .send(
            server
                .request(Method::POST, "/api/v1/auth/login")
                .json(&json!({ "username": "bob", "password": "wrong password" })),
        )
        .await;
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert_eq!(reply.json["error"]["code"], json!("rate_limited"));
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    // Even the right password is refused while locked.
    let reply = server.try_login("bob", PASSWORD).await;
    assert_error(&reply, 429, "rate_limited");
    // Other users from the same address are not locked out by bob's failures.
    server.login("carol", PASSWORD).await;
}

#[tokio::test]
async fn a_success_clears_the_failures_of_a_user() {
    let server = TestServer::start().await;
    server.register("bob").await;
    for _ in 0..4 {
        let reply = server.try_login("bob", "wrong password").await;
        assert_error(&reply, 401, "unauthorized");
    }
    server.login("bob", PASSWORD).await;
    for _ in 0..4 {
        let reply = server.try_login("bob", "wrong password").await;
        assert_error(&reply, 401, "unauthorized");
    }
    server.login("bob", PASSWORD).await;
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_throttled() {
    let server = TestServer::start_with(
        ServerOptions::new().env("LANCHAT_AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS", "3"),
    )
    .await;
    server.register("dave").await;
    for name in ["user1", "user2", "user3"] {
        let reply = server.try_login(name, "wrong password").await;
        assert_error(&reply, 401, "unauthorized");
    }
    // A fourth username from the same address: refused before any check.
    let reply = server
        .send(
            server
                .request(Method::POST, "/api/v1/auth/login")
                .json(&json!({ "username": "dave", "password": PASSWORD })),
        )
        .await;
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert!(reply.header("retry-after").is_some());
    // Registering is not login: still possible.
    server.register("erin").await;
}

// -- Refresh, logout, sessions --------------------------------------------

#[tokio::test]
async fn refresh_rotates_the_pair() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = server.refresh(&alice.refresh_token).await;
    assert_eq!(status, 200, "{body}");
    let rotated = Session::from_tokens(&body, PASSWORD);
    assert_eq!(rotated.user_id, alice.user_id);
    assert_ne!(rotated.refresh_token, alice.refresh_token);
    assert_eq!(
        jwt_claims(&rotated.access_token)["sid"],
        jwt_claims(&alice.access_token)["sid"],
        "same session"
    );
    let (status, _) = server.get("/api/v1/users/me", &rotated).await;
    assert_eq!(status, 200);
    // The new refresh token rotates again.
    let (status, body) = server.refresh(&rotated.refresh_token).await;
    assert_eq!(status, 200, "{body}");

    for bad in ["", "not-a-token", &"0".repeat(64)] {
        let reply = server.refresh(bad).await;
        assert_error(&reply, 401, "invalid_token");
    }
}

#[tokio::test]
async fn reused_refresh_token_revokes_the_session() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let other_device = server.login("alice", PASSWORD).await;
    let (status, body) = server.refresh(&alice.refresh_token).await;
    assert_eq!(status, 200, "{body}");
    let rotated = Session::from_tokens(&body, PASSWORD);

    // The old token again: theft suspected.
    let reply = server.refresh(&alice.refresh_token).await;
    assert_error(&reply, 401, "invalid_token");
    // The whole session is gone: the newer refresh token and both access tokens.
    let reply = server.refresh(&rotated.refresh_token).await;
    assert_error(&reply, 401, "invalid_token");
    for token in [&rotated.access_token, &alice.access_token] {
        let reply = server.get("/api/v1/users/me", token).await;
        assert_error(&reply, 401, "invalid_token");
    }
    // The user's other device is not affected.
    let (status, _) = server.get("/api/v1/users/me", &other_device).await;
    assert_eq!(status, 200);
    let (status, _) = server.refresh(&other_device.refresh_token).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", PASSWORD).await;
    let (status, body) = server.post("/api/v1/auth/logout", &alice, json!({})).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(body, Value::Null, "no body");
    let reply = server.get("/api/v1/users/me", &alice).await;
    assert_error(&reply, 401, "invalid_token");
    let reply = server.refresh(&alice.refresh_token).await;
    assert_error(&reply, 401, "invalid_token");
    let reply = server.post("/api/v1/auth/logout", &alice, json!({})).await;
    assert_error(&reply, 401, "invalid_token");
    // Without a body, as clients usually send it.
    let reply = server
        .send(
            server
                .request(Method::POST, "/api/v1/auth/logout")
                .bearer_auth(&phone.access_token),
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let reply = server.get("/api/v1/users/me", &phone).await;
    assert_error(&reply, 401, "invalid_token");
    let reply = server.post("/api/v1/auth/logout", ANON, json!({})).await;
    assert_error(&reply, 401, "unauthorized");
}

#[tokio::test]
async fn signed_out_sessions_stay_out_after_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, _) = server.post("/api/v1/auth/logout", &alice, json!({})).await;
    assert_eq!(status, 204);
    server.restart().await;
    let reply = server.get("/api/v1/users/me", &alice).await;
    assert_error(&reply, 401, "invalid_token");
    let reply = server.refresh(&alice.refresh_token).await;
    assert_error(&reply, 401, "invalid_token");
}

#[tokio::test]
async fn sessions_are_listed_and_revocable() {
    let server = TestServer::start().await;
    let laptop = server.register("alice").await;
    let (status, body) = server
        .send(
            server
                .request(Method::POST, "/api/v1/auth/login")
                .header("user-agent", "AlicePhone/1.0")
                .json(&json!({ "username": "alice", "password": PASSWORD })),
        )
        .await
        .into_pair();
    assert_eq!(status, 200, "{body}");
    let phone = Session::from_tokens(&body, PASSWORD);
    let bob = server.register("bob").await;

    let (status, list) = server.get("/api/v1/auth/sessions", &laptop).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{list}");
    let phone_sid = jwt_claims(&phone.access_token)["sid"].clone();
    let laptop_sid = jwt_claims(&laptop.access_token)["sid"].clone();
    for item in items {
        for key in [
            "id",
            "user_agent",
            "address",
            "created_at",
            "last_used_at",
            "current",
        ] {
            assert!(item.get(key).is_some(), "session without {key}: {item}");
        }
        assert_eq!(item["address"], json!("127.0.0.1"));
        assert_eq!(item["current"], json!(item["id"] == laptop_sid), "{item}");
    }
    let phone_item = items
        .iter()
        .find(|i| i["id"] == phone_sid)
        .expect("the phone session is listed");
    assert_eq!(phone_item["user_agent"], json!("AlicePhone/1.0"));

    // Bob cannot see or revoke alice's sessions: 404 as if unknown.
    let bob_list = server.get("/api/v1/auth/sessions", &bob).await.1;
    assert_eq!(bob_list["items"].as_array().map(Vec::len), Some(1));
    let reply = server
        .delete(&format!("/api/v1/auth/sessions/{phone_sid}"), &bob)
        .await;
    assert_error(&reply, 404, "not_found");
    let (status, _) = server.get("/api/v1/users/me", &phone).await;
    assert_eq!(status, 200, "still alive");
    let reply = server.delete("/api/v1/auth/sessions/999999", &laptop).await;
    assert_error(&reply, 404, "not_found");

    // Alice signs her phone out from the laptop.
    let (status, body) = server
        .delete(&format!("/api/v1/auth/sessions/{phone_sid}"), &laptop)
        .await;
    assert_eq!(status, 204, "{body}");
    let reply = server.get("/api/v1/users/me", &phone).await;
    assert_error(&reply, 401, "invalid_token");
    let reply = server.refresh(&phone.refresh_token).await;
    assert_error(&reply, 401, "invalid_token");
    let reply = server
        .delete(&format!("/api/v1/auth/sessions/{phone_sid}"), &laptop)
        .await;
    assert_error(&reply, 404, "not_found");
    let (_, list) = server.get("/api/v1/auth/sessions", &laptop).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["items"][0]["id"], laptop_sid);

    // Revoking the current session signs this device out.
    let (status, _) = server
        .delete(&format!("/api/v1/auth/sessions/{laptop_sid}"), &laptop)
        .await;
    assert_eq!(status, 204);
    let reply = server.get("/api/v1/auth/sessions", &laptop).await;
    assert_error(&reply, 401, "invalid_token");
}

// -- /users -----------------------------------------------------------------

#[tokio::test]
async fn profile_can_be_read_and_changed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    let (status, me) = server.get("/api/v1/users/me", &alice).await;
    assert_eq!(status, 200, "{me}");
    assert_user_shape(&me);
    assert_eq!(me["username"], json!("alice"));

    let (status, me) = server
        .patch(
            "/api/v1/users/me",
            &alice,
            json!({ "display_name": "  Alice Liddell ", "status_text": "in a meeting" }),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["display_name"], json!("Alice Liddell"));
    assert_eq!(me["status_text"], json!("in a meeting"));
    // An empty patch changes nothing.
    let (status, same) = server.patch("/api/v1/users/me", &alice, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(same["display_name"], json!("Alice Liddell"));
    // Others see it.
    let (status, seen) = server
        .get(&format!("/api/v1/users/{}", alice.user_id), &bob)
        .await;
    assert_eq!(status, 200, "{seen}");
    assert_user_shape(&seen);
    assert_eq!(seen["status_text"], json!("in a meeting"));

    // Limits: display name 64, status 140 characters (not bytes).
    let (status, me) = server
        .patch(
            "/api/v1/users/me",
            &alice,
            json!({ "display_name": "é".repeat(64), "status_text": "ü".repeat(140) }),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    for (body, field) in [
        (json!({ "display_name": "x".repeat(65) }), "display_name"),
        (json!({ "display_name": "tab\there" }), "display_name"),
        (json!({ "status_text": "y".repeat(141) }), "status_text"),
    ] {
        let reply = server.patch("/api/v1/users/me", &alice, body).await;
        assert_field_error(&reply, 400, "validation_failed", field);
    }
    for (body, field) in [
        (json!({ "display_name": 5 }), "display_name"),
        (json!({ "status_text": ["x"] }), "status_text"),
        (
            json!({ "avatar_attachment_id": "one" }),
            "avatar_attachment_id",
        ),
    ] {
        let reply = server.patch("/api/v1/users/me", &alice, body).await;
        assert_field_error(&reply, 400, "bad_request", field);
    }
    let reply = server
        .patch(
            "/api/v1/users/me",
            &alice,
            json!({ "avatar_attachment_id": 12345 }),
        )
        .await;
    assert_field_error(&reply, 400, "validation_failed", "avatar_attachment_id");
    // Failed patches changed nothing.
    let (_, me) = server.get("/api/v1/users/me", &alice).await;
    assert_eq!(me["display_name"], json!("é".repeat(64)));
    assert_eq!(me["status_text"], json!("ü".repeat(140)));
}

#[tokio::test]
async fn changing_the_password_signs_out_other_devices() {
    let server = TestServer::start().await;
    let laptop = server.register("alice").await;
    let phone = server.login("alice", PASSWORD).await;
    let path = "/api/v1/users/me/password";

    let reply = server
        .post(
            path,
            &laptop,
            json!({ "current_password": "not my password", "new_password": "a new password" }),
        )
        .await;
    assert_error(&reply, 403, "wrong_password");
    let reply = server
        .post(
            path,
            &laptop,
            json!({ "current_password": PASSWORD, "new_password": "short" }),
        )
        .await;
    assert_field_error(&reply, 400, "validation_failed", "new_password");
    let reply = server
        .post(path, &laptop, json!({ "current_password": PASSWORD }))
        .await;
    assert_field_error(&reply, 400, "bad_request", "new_password");
    // Nothing changed so far.
    let (status, _) = server.get("/api/v1/users/me", &phone).await;
    assert_eq!(status, 200);

    let (status, body) = server
        .post(
            path,
            &laptop,
            json!({ "current_password": PASSWORD, "new_password": "a new password" }),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    // This device stays signed in, including its refresh token.
    let (status, _) = server.get("/api/v1/users/me", &laptop).await;
    assert_eq!(status, 200);
    let (status, body) = server.refresh(&laptop.refresh_token).await;
    assert_eq!(status, 200, "{body}");
    // The other one is out.
    let reply = server.get("/api/v1/users/me", &phone).await;
    assert_error(&reply, 401, "invalid_token");
    let reply = server.refresh(&phone.refresh_token).await;
    assert_error(&reply, 401, "invalid_token");
    // Old password out, new password in.
    let reply = server.try_login("alice", PASSWORD).await;
    assert_error(&reply, 401, "unauthorized");
    server.login("alice", "a new password").await;
}

#[tokio::test]
async fn directory_pages_without_gaps_or_duplicates() {
    let server = TestServer::start().await;
    let names = ["walter", "alice", "Zoe", "bob", "carol", "alicia", "dave"];
    let mut sessions = Vec::new();
    for name in names {
        sessions.push(server.register(name).await);
    }
    let me = &sessions[0];
    let (status, _) = server
        .patch(
            "/api/v1/users/me",
            &sessions[4],
            json!({ "display_name": "Carol ALIBI" }),
        )
        .await;
    assert_eq!(status, 200);

    let mut expected: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    expected.sort();
    let collect = |query: &'static str| {
        let server = &server;
        async move {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            let mut pages = 0;
            loop {
                let mut path = format!("/api/v1/users?limit=3{query}");
                if let Some(cursor) = &cursor {
                    path.push_str(&format!("&cursor={}", cursor));
                }
                let (status, page) = server.get(&path, me).await;
                assert_eq!(status, 200, "{page}");
                let items = page["items"].as_array().expect("items");
                assert!(items.len() <= 3, "{page}");
                for item in items {
                    assert_user_shape(item);
                    seen.push(item["username"].as_str().expect("username").to_owned());
                }
                pages += 1;
                assert!(pages < 10, "pagination does not end");
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => {
                        assert_eq!(page["next_cursor"], Value::Null, "{page}");
                        break;
                    }
                }
            }
            (seen, pages)
        }
    };
    let (seen, pages) = collect("").await;
    assert_eq!(seen, expected, "every user once, in order");
    assert_eq!(pages, 3);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len());

    // q matches usernames and display names, case-insensitively.
    let (filtered, _) = collect("&q=ALI").await;
    assert_eq!(filtered, ["alice", "alicia", "carol"]);
    let (none, pages) = collect("&q=nobody-like-this").await;
    assert!(none.is_empty());
    assert_eq!(pages, 1);
    // LIKE wildcards are literal.
    let (none, _) = collect("&q=%25").await;
    assert!(none.is_empty(), "{none:?}");
    let (none, _) = collect("&q=_").await;
    assert!(none.is_empty(), "{none:?}");

    // Bad parameters are 400s naming the parameter.
    for (query, field) in [
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=99999999999", "limit"),
        ("limit=1&limit=2", "limit"),
    ] {
        let reply = server.get(&format!("/api/v1/users?{query}"), me).await;
        assert_field_error(&reply, 400, "bad_request", field);
    }
    let reply = server
        .get(&format!("/api/v1/users?q={}", "q".repeat(65)), me)
        .await;
    assert_field_error(&reply, 400, "validation_failed", "q");
    // Limits are clamped, not refused.
    let (status, page) = server.get("/api/v1/users?limit=0", me).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let (status, page) = server.get("/api/v1/users?limit=100000", me).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(7));
    // The directory needs a sign-in.
    let reply = server.get("/api/v1/users", ANON).await;
    assert_error(&reply, 401, "unauthorized");
}

#[tokio::test]
async fn single_user_lookup() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (status, user) = server
        .get(&format!("/api/v1/users/{}", bob.user_id), &alice)
        .await;
    assert_eq!(status, 200, "{user}");
    assert_user_shape(&user);
    assert_eq!(user["username"], json!("bob"));
    for id in ["999999", "0", "-1"] {
        let reply = server.get(&format!("/api/v1/users/{id}"), &alice).await;
        assert_error(&reply, 404, "not_found");
    }
    let reply = server.get("/api/v1/users/abc", &alice).await;
    assert_error(&reply, 404, "not_found");
    let reply = server
        .get(&format!("/api/v1/users/{}", bob.user_id), ANON)
        .await;
    assert_error(&reply, 401, "unauthorized");
}

#[tokio::test]
async fn block_and_unblock() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = format!("/api/v1/users/{}/block", bob.user_id);

    for _ in 0..2 {
        let (status, body) = server.put(&path, &alice).await;
        assert_eq!(status, 204, "idempotent: {body}");
    }
    let blocks: i64 = server
        .db()
        .query_row(
            "SELECT count(*) FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2",
            [alice.user_id, bob.user_id],
            |r| r.get(0),
        )
        .expect("count blocks");
    assert_eq!(blocks, 1);
    for _ in 0..2 {
        let (status, body) = server.delete(&path, &alice).await;
        assert_eq!(status, 204, "idempotent: {body}");
    }
    let blocks: i64 = server
        .db()
        .query_row("SELECT count(*) FROM blocks", [], |r| r.get(0))
        .expect("count blocks");
    assert_eq!(blocks, 0);

    let own = format!("/api/v1/users/{}/block", alice.user_id);
    let reply = server.put(&own, &alice).await;
    assert_error(&reply, 400, "validation_failed");
    let reply = server.put("/api/v1/users/999999/block", &alice).await;
    assert_error(&reply, 404, "not_found");
    let reply = server.put(&path, ANON).await;
    assert_error(&reply, 401, "unauthorized");
}
