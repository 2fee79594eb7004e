//! WebSocket errors as documented, against the real server: `rate_limited`
//! carries the refused send's `client_id`, wrong-typed fields are named, and
//! protocol violations and oversize frames are closed with a close frame (1002,
//! 1009) rather than dropped.

mod common;
use common::*;

use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn rate_limited_errors_name_the_refused_send() {
    let server =
        TestServer::start_with(ServerOptions::new().env("LANCHAT_LIMITS_WS_FRAMES_PER_SEC", "1"))
            .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let id = server.direct(&alice, &bob).await;
    let mut ws = server.ws_connect_hello(&alice.access_token).await;
    // A burst of 2 is allowed; the third and fourth sends are refused.
    for n in 0..4 {
        ws.send_json(&json!({
            "type": "message.send", "conversation_id": id, "body": format!("m{n}"), "client_id": format!("c{n}")
        }))
        .await;
    }
    let mut refused = Vec::new();
    while refused.len() < 2 {
        let frame = ws.recv_json(WAIT).await;
        if frame["type"] == "error" {
            assert_eq!(frame["error"]["code"], "rate_limited", "{frame}");
            refused.push(frame["client_id"].clone());
        }
    }
    assert_eq!(refused, [json!("c2"), json!("c3")]);
}

#[tokio::test]
async fn wrong_typed_fields_are_named() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let id = server.direct(&alice, &bob).await;
    let mut ws = server.ws_connect_hello(&alice.access_token).await;
    for (frame, field) in [
        (
            json!({"type": "message.send", "conversation_id": id, "body": 5, "client_id": "x"}),
            "body",
        ),
        (
            json!({"type": "message.send", "conversation_id": id, "body": "hi", "client_id": "y", "reply_to": "one"}),
            "reply_to",
        ),
        (
            json!({"type": "message.send", "conversation_id": "one", "body": "hi", "client_id": "z"}),
            "conversation_id",
        ),
        (
            json!({"type": "message.send", "conversation_id": id, "body": "hi", "client_id": "w", "attachment_ids": [true]}),
            "attachment_ids[0]",
        ),
        (
            json!({"type": "typing", "conversation_id": id, "state": 1}),
            "state",
        ),
        (
            json!({"type": "read", "conversation_id": id, "message_id": "last"}),
            "message_id",
        ),
    ] {
        ws.send_json(&frame).await;
        let reply = ws.recv_type("error", WAIT).await;
        assert_eq!(reply["error"]["code"], "bad_request", "{frame} -> {reply}");
        assert_eq!(reply["error"]["field"], field, "{frame} -> {reply}");
    }
}

#[tokio::test]
async fn a_frame_over_one_mebibyte_is_closed_with_1009() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut ws = server.ws_connect_hello(&alice.access_token).await;
    let huge = "x".repeat(1024 * 1024 + 16);
    // The server may stop reading before the whole frame is sent.
    let _ = ws.stream.send(Message::text(huge)).await;
    assert_eq!(ws.expect_close(WAIT).await, Some(1009));
}

#[tokio::test]
async fn a_protocol_violation_is_closed_with_1002() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    // Written straight to the socket, as no client library would: a frame
    // with the reserved bits set (no extension was negotiated).
    let mut ws = server.ws_connect_hello(&alice.access_token).await;
    let bad_frame = [0xF1u8, 0x80, 0, 0, 0, 0];
    match ws.stream.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => {
            tcp.write_all(&bad_frame).await.expect("write");
            tcp.flush().await.expect("flush");
        }
        _ => panic!("plain TCP expected"),
    }
    assert_eq!(ws.expect_close(WAIT).await, Some(1002));
}
