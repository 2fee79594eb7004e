//! The realtime side, against the real server with real WebSocket clients:
//! delivery to every device of every member and to no one else, acks and
//! idempotency, replay with `since`, receipts, typing, presence, and hostile frames.

mod common;
use common::*;

use std::time::Duration;

use futures_util::SinkExt;

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(400);

/// Connects and consumes the `hello` frame, returning it.
async fn connect(server: &TestServer, who: &Session) -> (WsClient, Value) {
    let mut ws = server.ws_connect(&who.access_token).await;
    let hello = ws.recv_json(WAIT).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (ws, hello)
}

fn send_frame(conversation: i64, body: &str, client_id: &str) -> Value {
    json!({"type": "message.send", "conversation_id": conversation, "body": body, "client_id": client_id})
}

#[tokio::test]
async fn hello_then_delivery_to_every_device_of_every_member_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let eve = server.register("eve").await;
    let id = server.direct(&alice, &bob).await;

    let (mut alice_phone, hello) = connect(&server, &alice).await;
    assert_eq!(hello["user"]["id"], json!(alice.user_id));
    assert!(hello["last_event_id"].as_i64().is_some());
    assert_eq!(hello["heartbeat_ms"], 30000);
    assert!(hello["server_version"].is_string());
    let alice_laptop_session = server.login("alice", PASSWORD).await;
    let (mut alice_laptop, _) = connect(&server, &alice_laptop_session).await;
    let (mut bob_ws, _) = connect(&server, &bob).await;
    let (mut eve_ws, _) = connect(&server, &eve).await;

    alice_phone.send_json(&send_frame(id, "hi bob", "c1")).await;
    // The sender's device gets both the ack and the event, in either order.
    let (mut ack, mut own) = (Value::Null, Value::Null);
    while ack.is_null() || own.is_null() {
        let frame = alice_phone.recv_json(WAIT).await;
        match frame["type"].as_str() {
            Some("ack") => ack = frame,
            Some("message.created") => own = frame,
            _ => {}
        }
    }
    assert_eq!(ack["client_id"], "c1");
    let message_id = ack["message"]["id"].as_i64().expect("id");
    assert_eq!(own["message"]["id"], json!(message_id));
    for ws in [&mut bob_ws, &mut alice_laptop] {
        let created = ws.recv_type("message.created", WAIT).await;
        assert_eq!(created["message"]["id"], json!(message_id));
        assert_eq!(created["message"]["body"], "hi bob");
        assert!(created["event_id"].as_i64().is_some());
    }
    // A non-member hears nothing at all (presence included: no shared conversation).
    eve_ws.expect_silence(QUIET).await;

    // The same client_id again: the stored message, no second event.
    alice_phone.send_json(&send_frame(id, "hi bob", "c1")).await;
    let again = alice_phone.recv_type("ack", WAIT).await;
    assert_eq!(again["message"]["id"], json!(message_id));
    let (_, page) = server
        .get(&format!("/api/v1/conversations/{id}/messages"), &bob)
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn receipts_typing_and_presence() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let id = server.direct(&alice, &bob).await;
    let (mut a, _) = connect(&server, &alice).await;
    let (mut b, _) = connect(&server, &bob).await;
    let online = a.recv_type("presence", WAIT).await;
    assert_eq!(online["user_id"], json!(bob.user_id));
    assert_eq!(online["online"], true);

    a.send_json(&send_frame(id, "ping?", "x1")).await;
    b.recv_type("message.created", WAIT).await;
    // Bob's socket got it: Alice learns it was delivered (before or after her ack).
    let (mut ack, mut delivered) = (Value::Null, Value::Null);
    while ack.is_null() || delivered.is_null() {
        let frame = a.recv_json(WAIT).await;
        match frame["type"].as_str() {
            Some("ack") => ack = frame,
            Some("delivered") => delivered = frame,
            _ => {}
        }
    }
    let message_id = ack["message"]["id"].clone();
    assert_eq!(delivered["user_id"], json!(bob.user_id));
    assert_eq!(delivered["message_id"], message_id);
    assert_eq!(delivered["conversation_id"], json!(id));

    b.send_json(&json!({"type": "read", "conversation_id": id, "message_id": message_id}))
        .await;
    let read = a.recv_type("read", WAIT).await;
    assert_eq!(read["user_id"], json!(bob.user_id));
    assert_eq!(read["message_id"], message_id);
    assert!(
        read["event_id"].as_i64().is_some(),
        "read receipts are durable events"
    );

    b.send_json(&json!({"type": "typing", "conversation_id": id, "state": "start"}))
        .await;
    let typing = a.recv_type("typing", WAIT).await;
    assert_eq!(
        (typing["user_id"].clone(), typing["state"].clone()),
        (json!(bob.user_id), json!("start"))
    );
    // Not renewed: the server says stop by itself after about 6 s.
    let started = std::time::Instant::now();
    let stop = a.recv_type("typing", Duration::from_secs(12)).await;
    assert_eq!(stop["state"], "stop");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "stop came too early: {:?}",
        started.elapsed()
    );

    b.close().await;
    let offline = a.recv_type("presence", WAIT).await;
    assert_eq!(offline["online"], false);
    assert!(offline["last_seen_at"].is_i64());
    let (_, user) = server
        .get(&format!("/api/v1/users/{}", bob.user_id), &alice)
        .await;
    assert_eq!(user["online"], false);
}

#[tokio::test]
async fn resume_with_since_after_a_burst_loses_and_duplicates_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let id = server.direct(&alice, &bob).await;
    let (mut b, hello) = connect(&server, &bob).await;
    let mut last_seen = hello["last_event_id"].as_i64().expect("last_event_id");

    // A burst that keeps going while Bob drops off and comes back.
    let burst = {
        let url = server.url(&format!("/api/v1/conversations/{id}/messages"));
        let token = alice.access_token.clone();
        let client = server.client().clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..150 {
                let reply: Value = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"body": format!("burst {i}"), "client_id": format!("b{i}")}))
                    .send()
                    .await
                    .expect("send")
                    .json()
                    .await
                    .expect("json");
                ids.push(reply["id"].as_i64().expect("id"));
            }
            ids
        })
    };
    let mut received = Vec::new();
    // Read part of the burst, then drop the connection mid-stream.
    while received.len() < 20 {
        let frame = b.recv_json(WAIT).await;
        if frame["type"] == "message.created" {
            received.push(frame["message"]["id"].as_i64().expect("id"));
        }
        if let Some(event_id) = frame["event_id"].as_i64() {
            assert!(event_id > last_seen, "event ids strictly increase");
            last_seen = event_id;
        }
    }
    drop(b);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut b = server
        .ws_connect_path(&format!(
            "/api/v1/ws?token={}&since={last_seen}",
            bob.access_token
        ))
        .await
        .expect("reconnect");
    let hello = b.recv_json(WAIT).await;
    assert_eq!(hello["type"], "hello");
    let sent = burst.await.expect("burst");
    let last_id = *sent.last().expect("sent");
    while received.last() != Some(&last_id) {
        let frame = b.recv_json(WAIT).await;
        if let Some(event_id) = frame["event_id"].as_i64() {
            assert!(
                event_id > last_seen,
                "no event twice, in order: {event_id} after {last_seen}"
            );
            last_seen = event_id;
        }
        if frame["type"] == "message.created" {
            received.push(frame["message"]["id"].as_i64().expect("id"));
        }
    }
    assert_eq!(received, sent, "every message exactly once, in order");
}

#[tokio::test]
async fn since_beyond_retention_asks_for_a_resync() {
    let server =
        TestServer::start_with(ServerOptions::new().env("LANCHAT_EVENTS_RETENTION_COUNT", "5"))
            .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let id = server.direct(&alice, &bob).await;
    for i in 0..12 {
        server
            .post(
                &format!("/api/v1/conversations/{id}/messages"),
                &alice,
                json!({"body": format!("m{i}")}),
            )
            .await;
    }
    // Pruning runs periodically; a restart runs it at once.
    let mut server = server;
    server.restart().await;
    let mut ws = server
        .ws_connect_path(&format!("/api/v1/ws?token={}&since=1", bob.access_token))
        .await
        .expect("connect");
    ws.recv_type("hello", WAIT).await;
    let frame = ws.recv_json(WAIT).await;
    assert_eq!(frame["type"], "resync_required", "{frame}");
}

#[tokio::test]
async fn every_frame_type_refuses_non_members_and_the_blocked() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let eve = server.register("eve").await;
    let id = server.direct(&alice, &bob).await;
    let (_, first) = server
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            &alice,
            json!({"body": "hi"}),
        )
        .await;

    let (mut e, _) = connect(&server, &eve).await;
    e.send_json(&send_frame(id, "intrude", "e1")).await;
    let error = e.recv_type("error", WAIT).await;
    assert_eq!(error["client_id"], "e1");
    assert_eq!(error["error"]["code"], "not_found");
    e.send_json(&json!({"type": "typing", "conversation_id": id, "state": "start"}))
        .await;
    assert_eq!(
        e.recv_type("error", WAIT).await["error"]["code"],
        "not_found"
    );
    e.send_json(&json!({"type": "read", "conversation_id": id, "message_id": first["id"]}))
        .await;
    assert_eq!(
        e.recv_type("error", WAIT).await["error"]["code"],
        "not_found"
    );

    // Alice blocks Bob: his sends and typing are refused, and she hears nothing.
    assert_eq!(
        server
            .put(&format!("/api/v1/users/{}/block", bob.user_id), &alice)
            .await
            .0,
        204
    );
    let (mut a, _) = connect(&server, &alice).await;
    let (mut b, _) = connect(&server, &bob).await;
    b.send_json(&send_frame(id, "let me in", "b1")).await;
    let error = b.recv_type("error", WAIT).await;
    assert_eq!(error["error"]["code"], "blocked");
    b.send_json(&json!({"type": "typing", "conversation_id": id, "state": "start"}))
        .await;
    assert_eq!(b.recv_type("error", WAIT).await["error"]["code"], "blocked");
    let mut saw = Vec::new();
    while let Some(WsFrame::Json(frame)) = a.next_frame(QUIET).await {
        saw.push(frame["type"].clone());
    }
    assert!(
        !saw.contains(&json!("typing")) && !saw.contains(&json!("message.created")),
        "{saw:?}"
    );
}

#[tokio::test]
async fn hostile_frames_get_errors_and_the_connection_stays_usable() {
    let server =
        TestServer::start_with(ServerOptions::new().env("LANCHAT_LIMITS_WS_FRAMES_PER_SEC", "5"))
            .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let id = server.direct(&alice, &bob).await;
    let (mut ws, _) = connect(&server, &alice).await;

    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("not json at all".into(), "bad_request", None),
        ("[1,2,3]".into(), "bad_request", Some("type")),
        (json!({"type": "dance"}).to_string(), "bad_request", Some("type")),
        (json!({"type": "message.send", "body": "x", "client_id": "c"}).to_string(), "bad_request", Some("conversation_id")),
        (json!({"type": "message.send", "conversation_id": "one", "body": "x", "client_id": "c"}).to_string(), "bad_request", Some("conversation_id")),
        (json!({"type": "message.send", "conversation_id": id, "body": "x"}).to_string(), "bad_request", Some("client_id")),
        (json!({"type": "typing", "conversation_id": id, "state": "maybe"}).to_string(), "validation_failed", Some("state")),
        (json!({"type": "message.send", "conversation_id": id, "body": "x".repeat(70_000), "client_id": "big"}).to_string(), "payload_too_large", None),
    ];
    for (frame, code, field) in &cases {
        ws.send_text(frame).await;
        let error = ws.recv_type("error", WAIT).await;
        assert_eq!(error["error"]["code"], json!(code), "{frame:.80}: {error}");
        if let Some(field) = field {
            assert_eq!(
                error["error"]["field"],
                json!(field),
                "{frame:.80}: {error}"
            );
        }
        // Slow enough to stay under the rate limit.
        tokio::time::sleep(Duration::from_millis(220)).await;
    }
    ws.send_json(&json!({"type": "ping"})).await;
    assert_eq!(ws.recv_type("pong", WAIT).await["type"], "pong");
    tokio::time::sleep(Duration::from_millis(220)).await;
    ws.send_json(&send_frame(id, "still here", "ok1")).await;
    assert_eq!(
        ws.recv_type("ack", WAIT).await["message"]["body"],
        "still here"
    );

    // A flood: rate_limited errors first, then the server closes with 1008.
    let mut rate_limited = 0;
    let mut closed = None;
    for _ in 0..200 {
        if ws
            .stream
            .send(tokio_tungstenite::tungstenite::Message::text(
                json!({"type": "ping"}).to_string(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    while let Some(frame) = ws.next_frame(WAIT).await {
        match frame {
            WsFrame::Json(value) if value["error"]["code"] == "rate_limited" => rate_limited += 1,
            WsFrame::Closed(code) => {
                closed = Some(code);
                break;
            }
            _ => {}
        }
    }
    assert!(rate_limited > 0, "flooding gets rate_limited errors");
    assert_eq!(closed.flatten().map(|(code, _)| code), Some(1008));
}

#[tokio::test]
async fn logout_and_revocation_close_sockets_and_bad_tokens_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (mut ws, _) = connect(&server, &alice).await;
    assert_eq!(
        server
            .post("/api/v1/auth/logout", &alice, json!({}))
            .await
            .0,
        204
    );
    assert_eq!(ws.expect_close(WAIT).await, Some(1008));
    assert!(
        server
            .ws_connect_path(&format!("/api/v1/ws?token={}", alice.access_token))
            .await
            .is_err()
    );
    assert!(
        server
            .ws_connect_path("/api/v1/ws?token=forged.token.here")
            .await
            .is_err()
    );
    assert!(server.ws_connect_path("/api/v1/ws").await.is_err());

    // Revoking a device from another one closes that device's socket.
    let phone = server.login("alice", PASSWORD).await;
    let laptop = server.login("alice", PASSWORD).await;
    let (mut phone_ws, _) = connect(&server, &phone).await;
    let (_, sessions) = server.get("/api/v1/auth/sessions", &laptop).await;
    let phone_session = sessions["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| s["current"] == false)
        .expect("the phone's session")["id"]
        .as_i64()
        .expect("id");
    assert_eq!(
        server
            .delete(&format!("/api/v1/auth/sessions/{phone_session}"), &laptop)
            .await
            .0,
        204
    );
    assert_eq!(phone_ws.expect_close(WAIT).await, Some(1008));
}

#[tokio::test]
async fn a_slow_consumer_is_cut_off_without_slowing_others() {
    const MESSAGES: usize = 800;
    let server =
        TestServer::start_with(ServerOptions::new().env("LANCHAT_LIMITS_WS_OUTBOUND_QUEUE", "32"))
            .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let (_, group) = server
        .post(
            "/api/v1/conversations",
            &alice,
            json!({"kind": "group", "title": "g", "member_ids": [bob.user_id, carol.user_id]}),
        )
        .await;
    let id = group["id"].as_i64().expect("id");
    // Bob never reads until the end: once the socket buffers are full, his queue
    // overflows. Carol reads all along.
    let (mut slow, _) = connect(&server, &bob).await;
    let (mut fast, _) = connect(&server, &carol).await;
    let reader = tokio::spawn(async move {
        let mut count = 0;
        while count < MESSAGES {
            fast.recv_type("message.created", WAIT).await;
            count += 1;
        }
        count
    });
    let big = "x".repeat(16_000);
    let path = format!("/api/v1/conversations/{id}/messages");
    for i in 0..MESSAGES {
        let (status, reply) = server
            .post(
                &path,
                &alice,
                json!({"body": big, "client_id": format!("s{i}")}),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
    }
    assert_eq!(
        reader.await.expect("the fast reader got everything"),
        MESSAGES
    );

    // The slow one was cut off: its stream ends (1013, or dropped if it could not
    // even take the close frame) before everything arrived.
    let mut got = 0;
    let mut end = None;
    while let Some(frame) = slow.next_frame(WAIT).await {
        match frame {
            WsFrame::Json(value) if value["type"] == "message.created" => got += 1,
            WsFrame::Closed(code) => {
                end = Some(code.map(|(c, _)| c));
                break;
            }
            _ => {}
        }
    }
    assert!(got < MESSAGES, "the slow consumer should have been cut off");
    let end = end.expect("the slow consumer's connection ended");
    assert!(matches!(end, None | Some(1013)), "closed with {end:?}");
}

#[tokio::test]
async fn disabling_a_user_closes_their_sockets_at_once() {
    let server = TestServer::start_with(ServerOptions::new().admin("boss")).await;
    let boss = server.login("boss", PASSWORD).await;
    let bob = server.register("bob").await;
    let (mut ws, _) = connect(&server, &bob).await;
    let (status, body) = server
        .patch(
            &format!("/api/v1/admin/users/{}", bob.user_id),
            &boss,
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ws.expect_close(WAIT).await, Some(1008));
    assert_error(
        &server.get("/api/v1/users/me", &bob).await,
        403,
        "account_disabled",
    );
}
