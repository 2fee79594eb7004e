//! Blocking, against the real server: nothing a blocked user does reaches the
//! person who blocked them, in new or in existing shared conversations.

mod common;
use common::*;

use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Sends a message over REST; panics unless it is stored.
async fn say(server: &TestServer, who: &Session, conversation: i64, body: &str) {
    let (status, reply) = server
        .post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            who,
            json!({ "body": body }),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
}

#[tokio::test]
async fn a_blocked_user_cannot_create_or_grow_a_group_with_the_blocker() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let (status, body) = server
        .put(&format!("/api/v1/users/{}/block", bob.user_id), &alice)
        .await;
    assert_eq!(status, 204, "{body}");

    let reply = server
        .post(
            "/api/v1/conversations",
            &bob,
            json!({ "kind": "group", "title": "you will read this", "member_ids": [alice.user_id, carol.user_id] }),
        )
        .await;
    assert_error(&reply, 403, "blocked");
    let (status, group) = server
        .post(
            "/api/v1/conversations",
            &bob,
            json!({ "kind": "group", "title": "team", "member_ids": [carol.user_id] }),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_i64().expect("id");
    let reply = server
        .post(
            &format!("/api/v1/conversations/{id}/members"),
            &bob,
            json!({ "user_ids": [alice.user_id] }),
        )
        .await;
    assert_error(&reply, 403, "blocked");
    // Alice is in no conversation at all.
    let (_, list) = server.get("/api/v1/conversations", &alice).await;
    assert_eq!(list["items"], json!([]), "{list}");
    // The blocker may still add the person they blocked (their own choice).
    let reply = server
        .post(
            "/api/v1/conversations",
            &alice,
            json!({ "kind": "group", "title": "mine", "member_ids": [bob.user_id] }),
        )
        .await;
    assert_eq!(reply.0, 201, "{}", reply.1);
}

#[tokio::test]
async fn in_a_shared_group_the_blocker_sees_nothing_of_the_blocked_user() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    // Carol's group, made before anyone blocked anyone; Bob is an admin in it.
    let (status, group) = server
        .post(
            "/api/v1/conversations",
            &carol,
            json!({ "kind": "group", "title": "team", "member_ids": [alice.user_id, bob.user_id] }),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_i64().expect("id");
    let (status, body) = server
        .patch(
            &format!("/api/v1/conversations/{id}/members/{}", bob.user_id),
            &carol,
            json!({ "role": "admin" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    say(&server, &carol, id, "hello team").await;
    let (status, _) = server
        .put(&format!("/api/v1/users/{}/block", bob.user_id), &alice)
        .await;
    assert_eq!(status, 204);
    let mut alice_ws = server.ws_connect_hello(&alice.access_token).await;

    // Bob writes and renames the group: Alice hears none of it.
    say(&server, &bob, id, "something nasty").await;
    let (status, body) = server
        .patch(
            &format!("/api/v1/conversations/{id}"),
            &bob,
            json!({ "title": "something nasty" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Carol's next message is the first thing Alice receives.
    say(&server, &carol, id, "from carol").await;
    let first = alice_ws.recv_json(WAIT).await;
    assert_eq!(first["type"], "message.created", "{first}");
    assert_eq!(first["message"]["body"], "from carol", "{first}");

    // Bob writes last: the sidebar preview shows Carol's message, not Bob's.
    say(&server, &bob, id, "still nasty").await;
    let (_, list) = server.get("/api/v1/conversations", &alice).await;
    let item = &list["items"][0];
    assert_eq!(item["last_message"]["body"], "from carol", "{item}");
    assert_eq!(item["unread_count"], 2, "{item}");
    let (_, one) = server
        .get(&format!("/api/v1/conversations/{id}"), &alice)
        .await;
    assert_eq!(one["last_message"]["body"], "from carol", "{one}");
    // Carol, who blocked no one, sees Bob's message.
    let (_, one) = server
        .get(&format!("/api/v1/conversations/{id}"), &carol)
        .await;
    assert_eq!(one["last_message"]["body"], "still nasty", "{one}");
    // Replay after a reconnect leaves Bob's rename out too.
    let since = (first["event_id"].as_i64().expect("event id") - 10).max(0);
    let mut replay = server
        .ws_connect(&format!("{}&since={since}", alice.access_token))
        .await;
    let hello = replay.recv_json(WAIT).await;
    assert_eq!(hello["type"], "hello");
    loop {
        let Some(WsFrame::Json(frame)) = replay.next_frame(Duration::from_millis(500)).await else {
            break;
        };
        assert_ne!(frame["type"], "conversation.updated", "{frame}");
        if frame["type"] == "message.created" {
            assert_ne!(frame["message"]["sender_id"], json!(bob.user_id), "{frame}");
        }
    }
}
