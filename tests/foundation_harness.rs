//! Checks of the test harness itself (tests/common), for the parts no foundation
//! endpoint exercises yet: the WebSocket client and the token helpers.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn base64url_round_trips_and_reads_jwt_claims() {
    for len in 0..40 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let encoded = base64_url_encode(&bytes);
        assert!(!encoded.contains(['=', '+', '/']), "{encoded}");
        assert_eq!(base64_url_decode(&encoded), bytes);
    }
    let token = sign_jwt(b"secret", &json!({ "sub": 7, "sid": 9, "exp": 1 }));
    assert_eq!(jwt_claims(&token), json!({ "sub": 7, "sid": 9, "exp": 1 }));
}

#[tokio::test]
async fn ws_client_speaks_json_and_sees_the_close() {
    // A tiny WebSocket server: greets, echoes one frame, then closes with 1008.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        ws.send(Message::text(r#"{"type":"hello"}"#))
            .await
            .expect("send");
        ws.send(Message::Ping(vec![1, 2, 3].into()))
            .await
            .expect("ping");
        let echoed = loop {
            match ws.next().await.expect("a frame").expect("ok") {
                Message::Text(text) => break text,
                _ => continue,
            }
        };
        ws.send(Message::Text(echoed)).await.expect("echo");
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "bye".into(),
        })))
        .await
        .expect("close");
        // Let the client read the close before the socket goes away.
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    });

    let (stream, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect");
    let mut client = WsClient { stream };
    let hello = client.recv_type("hello", Duration::from_secs(5)).await;
    assert_eq!(hello, json!({ "type": "hello" }));
    client.send_json(&json!({ "type": "ping", "n": 1 })).await;
    let echo = client.recv_json(Duration::from_secs(5)).await;
    assert_eq!(echo, json!({ "type": "ping", "n": 1 }));
    assert_eq!(
        client.expect_close(Duration::from_secs(5)).await,
        Some(1008)
    );
    peer.await.expect("peer");
}
