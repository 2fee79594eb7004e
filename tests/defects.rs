//! Small defects of issue 13, item 10, against the real server: read pointers
//! only move to messages of their own conversation, presence answers agree with
//! presence events, and the setup token expires, is new at every start and is
//! shown only on a terminal or in an owner-only file.

mod common;
use common::*;

use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_read_pointer_cannot_move_to_a_message_of_another_conversation() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let with_bob = server.direct(&alice, &bob).await;
    let with_carol = server.direct(&alice, &carol).await;
    let (_, other) = server
        .post(
            &format!("/api/v1/conversations/{with_carol}/messages"),
            &carol,
            json!({ "body": "elsewhere" }),
        )
        .await;
    let reply = server
        .post(
            &format!("/api/v1/conversations/{with_bob}/read"),
            &alice,
            json!({ "message_id": other["id"] }),
        )
        .await;
    assert_error(&reply, 404, "not_found");
    // Over the WebSocket the same read is an error frame.
    let mut ws = server.ws_connect(&alice.access_token).await;
    ws.recv_type("hello", WAIT).await;
    ws.send_json(
        &json!({ "type": "read", "conversation_id": with_bob, "message_id": other["id"] }),
    )
    .await;
    let error = ws.recv_type("error", WAIT).await;
    assert_eq!(error["error"]["code"], "not_found", "{error}");
}

#[tokio::test]
async fn last_seen_is_answered_as_soon_as_the_presence_event_says_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    server.direct(&alice, &bob).await;
    let mut alice_ws = server.ws_connect(&alice.access_token).await;
    alice_ws.recv_type("hello", WAIT).await;
    let bob_ws = server.ws_connect(&bob.access_token).await;
    let online = alice_ws.recv_type("presence", WAIT).await;
    assert_eq!(online["online"], true, "{online}");
    bob_ws.close().await;
    let offline = alice_ws.recv_type("presence", WAIT).await;
    assert_eq!(offline["online"], false, "{offline}");
    let seen = offline["last_seen_at"]
        .as_i64()
        .expect("last_seen_at in the event");
    let (status, user) = server
        .get(&format!("/api/v1/users/{}", bob.user_id), &alice)
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["online"], false, "{user}");
    assert_eq!(user["last_seen_at"], json!(seen), "{user}");
}

/// The setup link in the owner-only file of the data directory.
fn setup_link(server: &TestServer) -> String {
    let path = server.data_dir().join("setup-link.txt");
    let text = std::fs::read_to_string(&path).expect("the setup link file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only");
    }
    text.trim().to_owned()
}

#[tokio::test]
async fn the_setup_token_is_not_logged_is_new_at_each_start_and_expires() {
    let mut server =
        TestServer::start_with(ServerOptions::new().env("LANCHAT_AUTH_SETUP_TOKEN_TTL_SECS", "2"))
            .await;
    let link = setup_link(&server);
    let (_, token) = link.split_once("/setup?token=").expect("a setup link");
    let token = token.to_owned();
    // Standard output is not a terminal here: it names the file, not the link.
    let deadline = std::time::Instant::now() + WAIT;
    let stdout = loop {
        let stdout = server.stdout_lines().join("\n");
        if stdout.contains("setup-link.txt") || std::time::Instant::now() > deadline {
            break stdout;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(stdout.contains("setup-link.txt"), "{stdout}");
    assert!(!stdout.contains(&token), "{stdout}");
    // The log is no place for it either.
    server.wait_for_stderr("setup link").await;
    assert!(!server.stderr().contains(&token), "the token is in the log");

    server.restart().await;
    let second = setup_link(&server);
    assert_ne!(second, link, "a new token at each start");
    let (_, token) = second.split_once("/setup?token=").expect("a setup link");
    // Wait out the 2 s lifetime (no timing is measured, only the outcome).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reply = server
        .post(
            "/api/v1/setup",
            ANON,
            json!({ "setup_token": token, "username": "root", "password": PASSWORD }),
        )
        .await;
    assert_error(&reply, 403, "setup_token_expired");

    // A fresh start gives a fresh link that works, and the file goes with setup.
    server.restart().await;
    let admin = server.setup_admin("root").await;
    assert!(admin.user["is_admin"] == json!(true));
    assert!(!server.data_dir().join("setup-link.txt").exists());
}
