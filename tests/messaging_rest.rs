//! Conversations and messages over REST, against the real server: the rules of
//! the contract, the permission checks, and hostile input.

mod common;
use common::*;

async fn send(server: &TestServer, who: &Session, conversation: i64, body: &str) -> Value {
    let (status, message) = server
        .post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            who,
            json!({ "body": body }),
        )
        .await;
    assert_eq!(status, 201, "{message}");
    message
}

#[tokio::test]
async fn direct_conversations_are_one_per_pair_and_private() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let eve = server.register("eve").await;

    let (status, first) = server
        .post(
            "/api/v1/conversations",
            &alice,
            json!({"kind": "direct", "user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["kind"], "direct");
    assert_eq!(first["title"], Value::Null);
    assert_eq!(first["member_count"], 2);
    // From the other side: the same conversation, 200.
    let (status, again) = server
        .post(
            "/api/v1/conversations",
            &bob,
            json!({"kind": "direct", "user_id": alice.user_id}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first["id"]);

    let id = first["id"].as_i64().expect("id");
    send(&server, &alice, id, "hello bob").await;
    // A stranger learns nothing, not even that it exists.
    let path = format!("/api/v1/conversations/{id}");
    assert_error(&server.get(&path, &eve).await, 404, "not_found");
    assert_error(
        &server.get(&format!("{path}/messages"), &eve).await,
        404,
        "not_found",
    );
    assert_error(
        &server
            .post(&format!("{path}/messages"), &eve, json!({"body": "x"}))
            .await,
        404,
        "not_found",
    );
    assert_error(
        &server.get(&format!("{path}/export"), &eve).await,
        404,
        "not_found",
    );
    let (_, list) = server.get("/api/v1/conversations", &eve).await;
    assert_eq!(list["items"], json!([]));

    // Self, unknown users and bad kinds are refused.
    assert_field_error(
        &server
            .post(
                "/api/v1/conversations",
                &alice,
                json!({"kind": "direct", "user_id": alice.user_id}),
            )
            .await,
        400,
        "validation_failed",
        "user_id",
    );
    assert_field_error(
        &server
            .post(
                "/api/v1/conversations",
                &alice,
                json!({"kind": "direct", "user_id": 9999}),
            )
            .await,
        400,
        "validation_failed",
        "user_id",
    );
    assert_field_error(
        &server
            .post("/api/v1/conversations", &alice, json!({"kind": "party"}))
            .await,
        400,
        "validation_failed",
        "kind",
    );
    assert_field_error(
        &server
            .post(
                "/api/v1/conversations",
                &alice,
                json!({"kind": "direct", "user_id": "bob"}),
            )
            .await,
        400,
        "bad_request",
        "user_id",
    );
}

#[tokio::test]
async fn sending_is_idempotent_and_validated() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let id = server.direct(&alice, &bob).await;
    let path = format!("/api/v1/conversations/{id}/messages");

    let (status, first) = server
        .post(&path, &alice, json!({"body": "once", "client_id": "c-1"}))
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = server
        .post(&path, &alice, json!({"body": "once", "client_id": "c-1"}))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(first["id"], second["id"]);
    let (_, page) = server.get(&path, &alice).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));

    assert_field_error(
        &server.post(&path, &alice, json!({"body": "   "})).await,
        400,
        "validation_failed",
        "body",
    );
    let long = "x".repeat(16_001);
    assert_field_error(
        &server.post(&path, &alice, json!({"body": long})).await,
        400,
        "validation_failed",
        "body",
    );
    let long_id = "c".repeat(65);
    assert_field_error(
        &server
            .post(&path, &alice, json!({"body": "x", "client_id": long_id}))
            .await,
        400,
        "validation_failed",
        "client_id",
    );
    assert_field_error(
        &server.post(&path, &alice, json!({"body": 5})).await,
        400,
        "bad_request",
        "body",
    );
    assert_field_error(
        &server.post(&path, &alice, json!({})).await,
        400,
        "bad_request",
        "body",
    );
    assert_field_error(
        &server
            .post(
                &path,
                &alice,
                json!({"body": "x", "attachment_ids": [4242]}),
            )
            .await,
        400,
        "validation_failed",
        "attachment_ids",
    );

    // reply_to must be in the same conversation.
    let carol = server.register("carol").await;
    let other = server.direct(&alice, &carol).await;
    let elsewhere = send(&server, &alice, other, "elsewhere").await;
    assert_field_error(
        &server
            .post(
                &path,
                &alice,
                json!({"body": "re", "reply_to": elsewhere["id"]}),
            )
            .await,
        400,
        "validation_failed",
        "reply_to",
    );
    let (status, reply) = server
        .post(&path, &bob, json!({"body": "re", "reply_to": first["id"]}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(reply["reply_to"], first["id"]);
    assert!(reply["id"].as_i64() > first["id"].as_i64(), "ids increase");
}

#[tokio::test]
async fn history_pages_have_no_gaps_or_duplicates() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let id = server.direct(&alice, &bob).await;
    let mut sent = Vec::new();
    for i in 0..230 {
        sent.push(
            send(
                &server,
                if i % 2 == 0 { &alice } else { &bob },
                id,
                &format!("m{i}"),
            )
            .await["id"]
                .as_i64()
                .expect("id"),
        );
    }
    let path = format!("/api/v1/conversations/{id}/messages");

    // Newest first page, then walk back with before=.
    let (_, page) = server.get(&format!("{path}?limit=50"), &alice).await;
    assert_eq!(page["has_more_before"], true);
    assert_eq!(page["has_more_after"], false);
    let mut seen: Vec<i64> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["id"].as_i64().expect("id"))
        .collect();
    loop {
        let oldest = seen[0];
        let (status, page) = server
            .get(&format!("{path}?before={oldest}&limit=50"), &alice)
            .await;
        assert_eq!(status, 200);
        let ids: Vec<i64> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| m["id"].as_i64().expect("id"))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest to newest");
        assert_eq!(page["has_more_after"], true);
        let more = page["has_more_before"] == true;
        seen.splice(0..0, ids);
        if !more {
            break;
        }
    }
    assert_eq!(seen, sent, "walking back visits every message once");

    // Forward with after=.
    let mut forward = Vec::new();
    let mut cursor = 0;
    loop {
        let (_, page) = server
            .get(&format!("{path}?after={cursor}&limit=70"), &alice)
            .await;
        let ids: Vec<i64> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| m["id"].as_i64().expect("id"))
            .collect();
        cursor = *ids.last().expect("non-empty page");
        forward.extend(ids);
        if page["has_more_after"] != true {
            break;
        }
    }
    assert_eq!(forward, sent);

    // around= centres on a message.
    let middle = sent[100];
    let (_, page) = server
        .get(&format!("{path}?around={middle}&limit=10"), &alice)
        .await;
    let ids: Vec<i64> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, sent[95..105].to_vec());
    assert_eq!(
        (
            page["has_more_before"].clone(),
            page["has_more_after"].clone()
        ),
        (json!(true), json!(true))
    );

    // Bad cursors are 400s, never 500s.
    assert_field_error(
        &server.get(&format!("{path}?before=abc"), &alice).await,
        400,
        "bad_request",
        "before",
    );
    assert_error(
        &server
            .get(&format!("{path}?before=1&after=2"), &alice)
            .await,
        400,
        "bad_request",
    );
    let (_, page) = server.get(&format!("{path}?limit=100000"), &alice).await;
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(200),
        "limit is capped at 200"
    );
}

#[tokio::test]
async fn edits_deletes_and_reactions_follow_the_rules() {
    let server = TestServer::start().await;
    let owner = server.register("owner").await;
    let member = server.register("member").await;
    let other = server.register("other").await;
    let (status, group) = server
        .post(
            "/api/v1/conversations",
            &owner,
            json!({"kind": "group", "title": "Team", "member_ids": [member.user_id, other.user_id]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_i64().expect("id");
    let message = send(&server, &member, id, "typo").await;
    let mid = message["id"].as_i64().expect("id");

    assert_error(
        &server
            .patch(
                &format!("/api/v1/messages/{mid}"),
                &other,
                json!({"body": "mine"}),
            )
            .await,
        403,
        "forbidden",
    );
    let (status, edited) = server
        .patch(
            &format!("/api/v1/messages/{mid}"),
            &member,
            json!({"body": "fixed"}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["body"], "fixed");
    assert!(edited["edited_at"].is_i64());

    // Reactions: idempotent (twice is once), listed per emoji, URL-encoded.
    let thumbs = "%F0%9F%91%8D";
    let react_path = format!("/api/v1/messages/{mid}/reactions/{thumbs}");
    for who in [&other, &other, &owner] {
        assert_eq!(server.put(&react_path, who).await.0, 204);
    }
    let (_, page) = server
        .get(&format!("/api/v1/conversations/{id}/messages"), &member)
        .await;
    let reactions = &page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|m| m["id"] == json!(mid))
        .expect("message")["reactions"];
    assert_eq!(
        reactions,
        &json!([{"emoji": "👍", "user_ids": [other.user_id, owner.user_id]}])
    );
    let too_long = "x".repeat(33);
    assert_field_error(
        &server
            .put(
                &format!("/api/v1/messages/{mid}/reactions/{too_long}"),
                &other,
            )
            .await,
        400,
        "validation_failed",
        "emoji",
    );
    assert_eq!(
        server
            .delete(
                &format!("/api/v1/messages/{mid}/reactions/{thumbs}"),
                &other
            )
            .await
            .0,
        204
    );

    // Another member may not delete; the group's owner may. A tombstone stays.
    assert_error(
        &server
            .delete(&format!("/api/v1/messages/{mid}"), &other)
            .await,
        403,
        "forbidden",
    );
    assert_eq!(
        server
            .delete(&format!("/api/v1/messages/{mid}"), &owner)
            .await
            .0,
        204
    );
    let (_, page) = server
        .get(&format!("/api/v1/conversations/{id}/messages"), &member)
        .await;
    let tomb = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|m| m["id"] == json!(mid))
        .expect("tombstone")
        .clone();
    assert_eq!(tomb["body"], "");
    assert!(tomb["deleted_at"].is_i64());
    assert_eq!(tomb["reactions"], json!([]));
    assert_error(
        &server
            .patch(
                &format!("/api/v1/messages/{mid}"),
                &member,
                json!({"body": "back"}),
            )
            .await,
        409,
        "conflict",
    );

    // Someone outside the group: 404 everywhere.
    let stranger = server.register("stranger").await;
    assert_error(
        &server
            .patch(
                &format!("/api/v1/messages/{mid}"),
                &stranger,
                json!({"body": "x"}),
            )
            .await,
        404,
        "not_found",
    );
    assert_error(
        &server
            .delete(&format!("/api/v1/messages/{mid}"), &stranger)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &server
            .put(
                &format!("/api/v1/messages/{mid}/reactions/{thumbs}"),
                &stranger,
            )
            .await,
        404,
        "not_found",
    );
    assert_error(
        &server.delete("/api/v1/messages/987654", &member).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn groups_have_roles_and_membership_posts_system_messages() {
    let server = TestServer::start().await;
    let owner = server.register("owner").await;
    let admin = server.register("admin1").await;
    let member = server.register("member").await;
    let newcomer = server.register("newcomer").await;
    let stranger = server.register("stranger").await;
    let (_, group) = server
        .post("/api/v1/conversations", &owner, json!({"kind": "group", "title": "Team", "member_ids": [admin.user_id, member.user_id]}))
        .await;
    let id = group["id"].as_i64().expect("id");
    assert_eq!(group["my_role"], "owner");
    let base = format!("/api/v1/conversations/{id}");

    // Only the owner changes roles.
    assert_error(
        &server
            .patch(
                &format!("{base}/members/{}", member.user_id),
                &admin,
                json!({"role": "admin"}),
            )
            .await,
        403,
        "forbidden",
    );
    let (status, promoted) = server
        .patch(
            &format!("{base}/members/{}", admin.user_id),
            &owner,
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["role"], "admin");
    assert_field_error(
        &server
            .patch(
                &format!("{base}/members/{}", admin.user_id),
                &owner,
                json!({"role": "owner"}),
            )
            .await,
        400,
        "validation_failed",
        "role",
    );

    // Members cannot add people; admins can.
    assert_error(
        &server
            .post(
                &format!("{base}/members"),
                &member,
                json!({"user_ids": [newcomer.user_id]}),
            )
            .await,
        403,
        "forbidden",
    );
    let (status, after_add) = server
        .post(
            &format!("{base}/members"),
            &admin,
            json!({"user_ids": [newcomer.user_id]}),
        )
        .await;
    assert_eq!(status, 200, "{after_add}");
    assert_eq!(after_add["member_count"], 4);
    assert_error(
        &server
            .post(
                &format!("{base}/members"),
                &stranger,
                json!({"user_ids": [stranger.user_id]}),
            )
            .await,
        404,
        "not_found",
    );

    // An admin cannot remove another admin or the owner; the owner can remove anyone.
    assert_error(
        &server
            .delete(&format!("{base}/members/{}", owner.user_id), &admin)
            .await,
        403,
        "forbidden",
    );
    assert_eq!(
        server
            .delete(&format!("{base}/members/{}", newcomer.user_id), &admin)
            .await
            .0,
        204
    );
    assert_error(&server.get(&base, &newcomer).await, 404, "not_found");

    // Title changes by owner/admin only.
    assert_error(
        &server.patch(&base, &member, json!({"title": "Mine"})).await,
        403,
        "forbidden",
    );
    let (_, renamed) = server
        .patch(&base, &admin, json!({"title": "Renamed"}))
        .await;
    assert_eq!(renamed["title"], "Renamed");
    assert_field_error(
        &server
            .patch(&base, &admin, json!({"title": "x".repeat(101)}))
            .await,
        400,
        "validation_failed",
        "title",
    );

    // The owner leaves: ownership passes to the admin.
    assert_eq!(
        server
            .post(&format!("{base}/leave"), &owner, json!({}))
            .await
            .0,
        204
    );
    let (_, view) = server.get(&base, &admin).await;
    assert_eq!(view["my_role"], "owner");

    let (_, page) = server.get(&format!("{base}/messages"), &admin).await;
    let system: Vec<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|m| m["kind"] == "system")
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        system,
        vec![
            "owner made admin1 an admin",
            "admin1 added newcomer",
            "admin1 removed newcomer",
            "owner left",
            "admin1 is now the owner",
        ]
    );
}

#[tokio::test]
async fn channels_are_public_to_browse_and_read_but_members_write() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (status, channel) = server
        .post(
            "/api/v1/conversations",
            &alice,
            json!({"kind": "channel", "title": "General", "topic": "Everything"}),
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    let id = channel["id"].as_i64().expect("id");
    send(&server, &alice, id, "welcome").await;

    let (_, browse) = server.get("/api/v1/channels?q=gen", &bob).await;
    assert_eq!(browse["items"][0]["id"], json!(id));
    assert_eq!(browse["items"][0]["my_role"], Value::Null);
    let (status, history) = server
        .get(&format!("/api/v1/conversations/{id}/messages"), &bob)
        .await;
    assert_eq!(status, 200, "a channel is readable by everyone");
    assert_eq!(history["items"][0]["body"], "welcome");
    assert_error(
        &server
            .post(
                &format!("/api/v1/conversations/{id}/messages"),
                &bob,
                json!({"body": "hi"}),
            )
            .await,
        403,
        "forbidden",
    );

    let (status, joined) = server
        .post(&format!("/api/v1/conversations/{id}/join"), &bob, json!({}))
        .await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["my_role"], "member");
    send(&server, &bob, id, "hi all").await;
    let (_, list) = server.get("/api/v1/conversations", &bob).await;
    assert_eq!(list["items"][0]["id"], json!(id));
    assert_eq!(
        server
            .post(
                &format!("/api/v1/conversations/{id}/leave"),
                &bob,
                json!({})
            )
            .await
            .0,
        204
    );
    let (_, list) = server.get("/api/v1/conversations", &bob).await;
    assert_eq!(list["items"], json!([]));
    // A channel everyone left is not orphaned: its next member owns it.
    let leave = format!("/api/v1/conversations/{id}/leave");
    assert_eq!(server.post(&leave, &alice, json!({})).await.0, 204);
    let join = format!("/api/v1/conversations/{id}/join");
    let (_, rejoined) = server.post(&join, &bob, json!({})).await;
    assert_eq!(rejoined["my_role"], "owner");

    // Groups cannot be joined from outside.
    let (_, group) = server
        .post(
            "/api/v1/conversations",
            &alice,
            json!({"kind": "group", "title": "Secret", "member_ids": []}),
        )
        .await;
    assert_error(
        &server
            .post(
                &format!("/api/v1/conversations/{}/join", group["id"]),
                &bob,
                json!({}),
            )
            .await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn unread_counts_read_pointers_mute_and_activity_order() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let with_bob = server.direct(&alice, &bob).await;
    let with_carol = server.direct(&alice, &carol).await;
    let mut last = 0;
    for i in 0..3 {
        last = send(&server, &bob, with_bob, &format!("b{i}")).await["id"]
            .as_i64()
            .expect("id");
    }
    send(&server, &carol, with_carol, "c").await;

    let (_, list) = server.get("/api/v1/conversations", &alice).await;
    let items = list["items"].as_array().expect("items");
    assert_eq!(
        items[0]["id"],
        json!(with_carol),
        "most recent activity first"
    );
    assert_eq!(items[0]["unread_count"], 1);
    assert_eq!(items[1]["unread_count"], 3);
    assert_eq!(items[1]["last_message"]["body"], "b2");

    let read = format!("/api/v1/conversations/{with_bob}/read");
    let (status, _) = server
        .post(&read, &alice, json!({"message_id": last - 1}))
        .await;
    assert_eq!(status, 200);
    let (_, view) = server
        .get(&format!("/api/v1/conversations/{with_bob}"), &alice)
        .await;
    assert_eq!(view["unread_count"], 1);
    assert_eq!(view["my_last_read_id"], json!(last - 1));
    // Never backwards.
    server.post(&read, &alice, json!({"message_id": 1})).await;
    let (_, view) = server
        .get(&format!("/api/v1/conversations/{with_bob}"), &alice)
        .await;
    assert_eq!(view["my_last_read_id"], json!(last - 1));
    assert_field_error(
        &server.post(&read, &alice, json!({"message_id": "x"})).await,
        400,
        "bad_request",
        "message_id",
    );
    assert_error(
        &server
            .post(&read, &carol, json!({"message_id": last}))
            .await,
        404,
        "not_found",
    );

    let mute = format!("/api/v1/conversations/{with_bob}/mute");
    assert_eq!(server.put(&mute, &alice).await.0, 204);
    let (_, view) = server
        .get(&format!("/api/v1/conversations/{with_bob}"), &alice)
        .await;
    assert_eq!(view["muted"], true);
    assert_eq!(server.delete(&mute, &alice).await.0, 204);
    let (_, view) = server
        .get(&format!("/api/v1/conversations/{with_bob}"), &alice)
        .await;
    assert_eq!(view["muted"], false);
    assert_error(&server.put(&mute, &carol).await, 404, "not_found");
}

#[tokio::test]
async fn blocking_stops_direct_messages_from_the_blocked() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let id = server.direct(&alice, &bob).await;
    let hello = send(&server, &alice, id, "hello").await;
    assert_eq!(
        server
            .put(&format!("/api/v1/users/{}/block", bob.user_id), &alice)
            .await
            .0,
        204
    );

    let path = format!("/api/v1/conversations/{id}/messages");
    assert_error(
        &server.post(&path, &bob, json!({"body": "hey"})).await,
        403,
        "blocked",
    );
    assert_error(
        &server
            .put(
                &format!("/api/v1/messages/{}/reactions/%F0%9F%91%8D", hello["id"]),
                &bob,
            )
            .await,
        403,
        "blocked",
    );
    // The blocked cannot open (or reopen) a direct conversation with the blocker;
    // everyone else is unaffected.
    assert_error(
        &server
            .post(
                "/api/v1/conversations",
                &bob,
                json!({"kind": "direct", "user_id": alice.user_id}),
            )
            .await,
        403,
        "blocked",
    );
    let (status, _) = server
        .post(
            "/api/v1/conversations",
            &bob,
            json!({"kind": "direct", "user_id": carol.user_id}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .post(
            "/api/v1/conversations",
            &carol,
            json!({"kind": "direct", "user_id": alice.user_id}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, group) = server
        .post(
            "/api/v1/conversations",
            &carol,
            json!({"kind": "group", "title": "Trio", "member_ids": [alice.user_id, bob.user_id]}),
        )
        .await;
    let gid = group["id"].as_i64().expect("id");
    send(&server, &bob, gid, "from bob").await;
    send(&server, &carol, gid, "from carol").await;
    let (_, page) = server
        .get(&format!("/api/v1/conversations/{gid}/messages"), &alice)
        .await;
    let bodies: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|m| m["kind"] == "text")
        .map(|m| m["body"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        bodies,
        vec!["from carol"],
        "the blocker sees nothing from the blocked"
    );

    assert_eq!(
        server
            .delete(&format!("/api/v1/users/{}/block", bob.user_id), &alice)
            .await
            .0,
        204
    );
    assert_eq!(
        server
            .post(&path, &bob, json!({"body": "hey again"}))
            .await
            .0,
        201
    );
}

#[tokio::test]
async fn export_is_a_readable_escaped_download() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let id = server.direct(&alice, &bob).await;
    send(&server, &bob, id, "<img src=x onerror=alert(1)>").await;
    let reply = server
        .send(
            server
                .request(
                    Method::GET,
                    &format!("/api/v1/conversations/{id}/export?format=html"),
                )
                .bearer_auth(&alice.access_token),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-disposition")
            .is_some_and(|v| v.starts_with("attachment"))
    );
    let html = reply.text.clone();
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(!html.contains("<img"), "{html}");
    let (status, json_export) = server
        .get(
            &format!("/api/v1/conversations/{id}/export?format=json"),
            &alice,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        json_export["conversations"][0]["messages"][0]["body"],
        "<img src=x onerror=alert(1)>"
    );
    assert_field_error(
        &server
            .get(
                &format!("/api/v1/conversations/{id}/export?format=pdf"),
                &alice,
            )
            .await,
        400,
        "validation_failed",
        "format",
    );
}

#[tokio::test]
async fn conversation_and_channel_lists_page_with_cursors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut titles = Vec::new();
    for i in 0..5 {
        let title = format!("chan {i}");
        let (status, _) = server
            .post(
                "/api/v1/conversations",
                &alice,
                json!({"kind": "channel", "title": title}),
            )
            .await;
        assert_eq!(status, 201);
        titles.push(title);
    }
    for (path, expected) in [
        ("/api/v1/channels", titles.clone()),
        (
            "/api/v1/conversations",
            titles.iter().rev().cloned().collect::<Vec<_>>(),
        ),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}?limit=2&cursor={c}"),
                None => format!("{path}?limit=2"),
            };
            let (status, page) = server.get(&url, &alice).await;
            assert_eq!(status, 200, "{page}");
            let items = page["items"].as_array().expect("items");
            assert!(items.len() <= 2);
            seen.extend(
                items
                    .iter()
                    .map(|c| c["title"].as_str().unwrap_or_default().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, expected, "{path}: every item once, in order");
    }
    assert_field_error(
        &server.get("/api/v1/channels?cursor=abc", &alice).await,
        400,
        "validation_failed",
        "cursor",
    );
}
