//! The admin API against the real binary: access control on every route, account
//! management with immediate revocation, the last-admin rule, invites,
//! registration modes, settings and statistics.

mod common;

use common::*;

/// Every admin route with a plausible body.
fn admin_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/api/v1/admin/users", None),
        (
            Method::POST,
            "/api/v1/admin/users",
            Some(json!({"username": "mallory2", "password": "password 123"})),
        ),
        (
            Method::PATCH,
            "/api/v1/admin/users/1",
            Some(json!({"disabled": true})),
        ),
        (Method::GET, "/api/v1/admin/settings", None),
        (
            Method::PATCH,
            "/api/v1/admin/settings",
            Some(json!({"registration": "open"})),
        ),
        (Method::POST, "/api/v1/admin/invites", Some(json!({}))),
        (Method::GET, "/api/v1/admin/invites", None),
        (Method::DELETE, "/api/v1/admin/invites/NOSUCHCODE", None),
        (Method::GET, "/api/v1/admin/stats", None),
        (Method::POST, "/api/v1/admin/backup", None),
    ]
}

async fn register(server: &TestServer, username: &str, password: &str) -> (u16, Value) {
    server
        .post(
            "/api/v1/auth/register",
            ANON,
            json!({"username": username, "password": password}),
        )
        .await
}

async fn register_with(server: &TestServer, username: &str, invite: &str) -> (u16, Value) {
    server
        .post(
            "/api/v1/auth/register",
            ANON,
            json!({"username": username, "password": "password 123", "invite": invite}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_needs_an_admin() {
    let mut server = TestServer::start_with(ServerOptions::new().admin("admin")).await;
    let (status, body) = register(&server, "bob", "password 123").await;
    assert_eq!(status, 201, "{body}");
    let bob = body["access_token"].as_str().expect("token").to_owned();
    let bob_id = body["user"]["id"].as_i64().expect("id");
    let admin = server.login("admin", PASSWORD).await;

    for (method, path, body) in admin_routes() {
        let (status, answer) = server.call(method.clone(), path, ANON, body.as_ref()).await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
        let (status, answer) = server
            .call(method.clone(), path, "not-a-token", body.as_ref())
            .await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
        let (status, answer) = server.call(method.clone(), path, &bob, body.as_ref()).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "forbidden", "{method} {path}");
    }
    // Nothing a refused call asked for happened.
    let (status, users) = server.get("/api/v1/admin/users", &admin).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = users["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|u| u["username"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["admin", "bob"]);
    assert_eq!(users["items"][0]["disabled"], false);

    // Admin rights are read from the database on each request: granted and
    // revoked at once, with the same token.
    let (status, _) = server
        .patch(
            &format!("/api/v1/admin/users/{bob_id}"),
            &admin,
            json!({"is_admin": true}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server.get("/api/v1/admin/stats", &bob).await;
    assert_eq!(status, 200);
    let (status, user) = server
        .patch(
            &format!("/api/v1/admin/users/{bob_id}"),
            &admin,
            json!({"is_admin": false}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(user["is_admin"], false);
    let (status, _) = server.get("/api/v1/admin/stats", &bob).await;
    assert_eq!(status, 403);

    // Unknown admin paths and ids are 404 for an admin, never a 500.
    let (status, _) = server.get("/api/v1/admin/nothing", &admin).await;
    assert_eq!(status, 404);
    let (status, _) = server
        .patch(
            "/api/v1/admin/users/99999",
            &admin,
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .patch("/api/v1/admin/users/abc", &admin, json!({"disabled": true}))
        .await;
    assert!((400..500).contains(&status), "{status}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_resetting_and_the_last_admin() {
    let mut server = TestServer::start_with(ServerOptions::new().admin("admin")).await;
    let admin_login = server.try_login("admin", PASSWORD).await.1;
    let admin = admin_login["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let admin_id = admin_login["user"]["id"].as_i64().expect("id");

    // Create an account whatever the registration mode.
    let (status, _) = server
        .patch(
            "/api/v1/admin/settings",
            &admin,
            json!({"registration": "closed"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, carol) = server
        .post(
            "/api/v1/admin/users",
            &admin,
            json!({"username": "Carol", "password": "carol password", "display_name": "Carol C"}),
        )
        .await;
    assert_eq!(status, 201, "{carol}");
    assert_eq!(carol["username"], "carol");
    assert_eq!(carol["display_name"], "Carol C");
    assert_eq!(carol["is_admin"], false);
    assert_eq!(carol["disabled"], false);
    let carol_id = carol["id"].as_i64().expect("id");
    let carol_path = format!("/api/v1/admin/users/{carol_id}");
    let (status, body) = server
        .post(
            "/api/v1/admin/users",
            &admin,
            json!({"username": "carol", "password": "another password"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = server
        .post(
            "/api/v1/admin/users",
            &admin,
            json!({"username": "no", "password": "another password"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["field"], "username");
    let (status, body) = server
        .post(
            "/api/v1/admin/users",
            &admin,
            json!({"username": "dan", "password": "short"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["field"], "password");

    // Disable: the token is refused at once, login and refresh too.
    let (status, carol_tokens) = server.try_login("carol", "carol password").await;
    assert_eq!(status, 200);
    let carol_token = carol_tokens["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let carol_refresh = carol_tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let (status, _) = server.get("/api/v1/users/me", &carol_token).await;
    assert_eq!(status, 200);
    // assert that disabling closes it at once (close code 1008).
    let (status, user) = server
        .patch(&carol_path, &admin, json!({"disabled": true}))
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["disabled"], true);
    let (status, body) = server.get("/api/v1/users/me", &carol_token).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "account_disabled");
    let (status, body) = server.try_login("carol", "carol password").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "account_disabled");
    let (status, _) = server.refresh(&carol_refresh).await;
    assert!(
        (400..500).contains(&status),
        "refresh after disable: {status}"
    );
    // Disabled accounts are listed for admins (and searchable).
    let (status, list) = server.get("/api/v1/admin/users?q=caro", &admin).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["username"], "carol");
    assert_eq!(list["items"][0]["disabled"], true);

    // Re-enable: carol can sign in again.
    let (status, user) = server
        .patch(&carol_path, &admin, json!({"disabled": false}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(user["disabled"], false);
    let carol_token = server.login("carol", "carol password").await;
    let (status, _) = server.get("/api/v1/users/me", &carol_token).await;
    assert_eq!(status, 200);

    // Password reset revokes her sessions; only the new password works.
    let (status, body) = server
        .patch(&carol_path, &admin, json!({"password": "short"}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = server
        .patch(
            &carol_path,
            &admin,
            json!({"password": "brand new password"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server.get("/api/v1/users/me", &carol_token).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = server.try_login("carol", "carol password").await;
    assert_eq!(status, 401);
    server.login("carol", "brand new password").await;

    // Unknown fields are refused rather than silently ignored.
    let (status, body) = server
        .patch(&carol_path, &admin, json!({"disabeld": true}))
        .await;
    assert_eq!(status, 400, "{body}");

    // The last enabled admin can neither disable nor demote themselves.
    let admin_path = format!("/api/v1/admin/users/{admin_id}");
    for change in [json!({"disabled": true}), json!({"is_admin": false})] {
        let (status, body) = server.patch(&admin_path, &admin, change).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "last_admin");
    }
    let (status, _) = server.get("/api/v1/admin/stats", &admin).await;
    assert_eq!(status, 200, "still an admin");
    // With a second admin, stepping down works, and takes effect at once.
    let (status, _) = server
        .patch(&carol_path, &admin, json!({"is_admin": true}))
        .await;
    assert_eq!(status, 200);
    let (status, user) = server
        .patch(&admin_path, &admin, json!({"is_admin": false}))
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["is_admin"], false);
    let (status, _) = server.get("/api/v1/admin/stats", &admin).await;
    assert_eq!(status, 403);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_and_registration_modes() {
    let mut server = TestServer::start_with(ServerOptions::new().admin("admin")).await;
    let admin = server.login("admin", PASSWORD).await;

    let (status, settings) = server.get("/api/v1/admin/settings", &admin).await;
    assert_eq!(status, 200);
    assert_eq!(settings["registration"], "open");
    assert_eq!(settings["server_name"], "lanchat");
    assert_eq!(settings["max_attachment_bytes"], 100 * 1024 * 1024);

    let (status, settings) = server
        .patch(
            "/api/v1/admin/settings",
            &admin,
            json!({"registration": "invite"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(settings["registration"], "invite");
    let (status, body) = register(&server, "nocode", "password 123").await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "invalid_invite");

    // Bad invite requests.
    for bad in [
        json!({"uses": 0}),
        json!({"uses": 1001}),
        json!({"expires_in": 0}),
        json!({"uses": "two"}),
    ] {
        let (status, body) = server
            .post("/api/v1/admin/invites", &admin, bad.clone())
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // A two-use invite: two registrations, then it is used up.
    let (status, invite) = server
        .post("/api/v1/admin/invites", &admin, json!({"uses": 2}))
        .await;
    assert_eq!(status, 201, "{invite}");
    let code = invite["code"].as_str().expect("code").to_owned();
    assert!(code.len() >= 20, "{code}: at least 96 bits");
    assert!(code.chars().all(|c| c.is_ascii_alphanumeric()), "{code}");
    assert_eq!(invite["uses_left"], 2);
    assert_eq!(invite["expires_at"], Value::Null);
    assert!(invite["created_at"].as_i64().is_some());
    let (status, body) = register_with(&server, "dave", &code).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = register_with(&server, "erin", &code).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = register_with(&server, "frank", &code).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "invalid_invite");

    // An invite that expires.
    let (status, short) = server
        .post("/api/v1/admin/invites", &admin, json!({"expires_in": 1}))
        .await;
    assert_eq!(status, 201);
    let created_at = short["created_at"].as_i64().expect("created_at");
    assert_eq!(short["expires_at"].as_i64(), Some(created_at + 1000));
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (status, body) =
        register_with(&server, "grace", short["code"].as_str().expect("code")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "invalid_invite");

    // Listing pages through all of them, newest first; deleting one. (The body
    // is optional: every field has a default.)
    let (status, fresh) = server
        .call(Method::POST, "/api/v1/admin/invites", &admin, None)
        .await;
    assert_eq!(status, 201);
    let fresh_code = fresh["code"].as_str().expect("code").to_owned();
    let (status, page) = server.get("/api/v1/admin/invites?limit=2", &admin).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    assert_eq!(page["items"][0]["code"], fresh_code.as_str());
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    let (status, rest) = server
        .get(
            &format!("/api/v1/admin/invites?limit=2&cursor={cursor}"),
            &admin,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(rest["items"].as_array().expect("items").len(), 1);
    assert_eq!(rest["items"][0]["code"], code.as_str());
    assert_eq!(rest["items"][0]["uses_left"], 0);
    assert_eq!(rest["next_cursor"], Value::Null);
    let (status, _) = server
        .delete(&format!("/api/v1/admin/invites/{fresh_code}"), &admin)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .delete(&format!("/api/v1/admin/invites/{fresh_code}"), &admin)
        .await;
    assert_eq!(status, 404);
    let (status, body) = register_with(&server, "heidi", &fresh_code).await;
    assert_eq!(status, 403, "{body}");

    // Closed: nobody registers, with or without a code.
    let (status, _) = server
        .patch(
            "/api/v1/admin/settings",
            &admin,
            json!({"registration": "closed"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = register(&server, "ivan", "password 123").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "registration_closed");

    // Settings validation, server name, limits and going back to defaults.
    for (bad, field) in [
        (json!({"registration": "sometimes"}), "registration"),
        (json!({"server_name": "   "}), "server_name"),
        (json!({"server_name": "x".repeat(65)}), "server_name"),
        (json!({"max_attachment_bytes": 10}), "max_attachment_bytes"),
    ] {
        let (status, body) = server.patch("/api/v1/admin/settings", &admin, bad).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let (status, body) = server
        .patch("/api/v1/admin/settings", &admin, json!({"nonsense": 1}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, settings) = server
        .patch(
            "/api/v1/admin/settings",
            &admin,
            json!({"server_name": " Office chat ", "max_attachment_bytes": 1048576}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(settings["server_name"], "Office chat");
    assert_eq!(settings["max_attachment_bytes"], 1_048_576);
    assert_eq!(settings["registration"], "closed");
    let (_, setup) = server.get("/api/v1/setup", ANON).await;
    assert_eq!(setup["server_name"], "Office chat");
    let (status, settings) = server
        .patch(
            "/api/v1/admin/settings",
            &admin,
            json!({"max_attachment_bytes": null, "registration": null}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(settings["max_attachment_bytes"], 100 * 1024 * 1024);
    assert_eq!(settings["registration"], "open");
    assert_eq!(settings["server_name"], "Office chat");

    // Settings survive a restart.
    server.restart().await;
    let admin = server.login("admin", PASSWORD).await;
    let (_, settings) = server.get("/api/v1/admin/settings", &admin).await;
    assert_eq!(settings["server_name"], "Office chat");
    assert_eq!(settings["registration"], "open");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_what_is_stored() {
    let sandbox = Sandbox::new();
    sandbox.create_user("admin", true);
    sandbox.seed_content();
    let mut server = TestServer::start_in(sandbox, ServerOptions::new()).await;
    let admin = server.login("admin", PASSWORD).await;
    let (status, stats) = server.get("/api/v1/admin/stats", &admin).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["users"], 1);
    assert_eq!(stats["online_users"], 0);
    assert_eq!(stats["conversations"], 2);
    assert_eq!(stats["messages"], 2, "the deleted message is not counted");
    let expected_attachments =
        "first attachment bytes".len() + "second attachment, longer bytes".len();
    assert_eq!(stats["attachment_bytes"], expected_attachments);
    let db_bytes = stats["database_bytes"].as_u64().expect("bytes");
    assert!(db_bytes >= 4096 && db_bytes % 512 == 0, "{db_bytes}");
    server.stop().await;
}
