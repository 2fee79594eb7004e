//! The wire limit: a minimal WebSocket server with no JSON parsing and no
//! database. Each connection names its room in the URL (`/ws?room=N`); every text
//! frame it sends is echoed back to it (the "ack") and forwarded, as the same
//! bytes, to every other connection of the room (the DM peer, or all the group's
//! members). It is what the machine and tokio-tungstenite can do for the same
//! workloads, with no messenger in the way.
//!
//! It runs in its own process (this bench binary re-executed with
//! [`SUBCOMMAND`]), so its CPU and memory are measured from /proc exactly like
//! lanchat's, and it competes for the same two cores with the generator.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::servers::{ChildServer, Res};

/// The first argument that turns this binary into the wire server.
pub const SUBCOMMAND: &str = "__lanchat_bench_wire_server";
const LISTENING: &str = "wire listening on ";
/// Outbound frames queued per connection, like lanchat's default `ws_outbound_queue`.
const QUEUE: usize = 1024;

/// A socket's small buffers: what a lean server would pick for many connections.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

struct Member {
    id: u64,
    queue: mpsc::Sender<Message>,
}

#[derive(Default)]
struct Rooms {
    rooms: RwLock<HashMap<u64, Vec<Member>>>,
    dropped: AtomicU64,
}

/// Starts the wire server as a child process.
pub async fn start(log_path: &Path) -> Res<ChildServer> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    ChildServer::spawn(
        "wire server",
        &me,
        &[SUBCOMMAND.to_owned()],
        &[],
        LISTENING,
        None,
        log_path.to_owned(),
    )
    .await
}

/// Entry point of the child process.
pub fn serve_main() -> ExitCode {
    crate::procstat::raise_nofile_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("wire server: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wire server: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{LISTENING}{}", listener.local_addr()?);
    let rooms = Arc::new(Rooms::default());
    let mut next_id = 0u64;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors and the like: wait instead of spinning.
                eprintln!("wire server: accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        next_id += 1;
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, rooms.clone(), next_id));
    }
}

fn room_of(request: &Request) -> Option<u64> {
    request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("room="))
            .and_then(|v| v.parse().ok())
    })
}

// The handshake callback's error type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, rooms: Arc<Rooms>, id: u64) {
    let mut room = None;
    let callback = |request: &Request, response: Response| {
        room = room_of(request);
        Ok(response)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config())).await
    else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (queue, mut outbound) = mpsc::channel::<Message>(QUEUE);
    if let Some(room) = room {
        let mut all = rooms.rooms.write().unwrap_or_else(|e| e.into_inner());
        all.entry(room).or_default().push(Member {
            id,
            queue: queue.clone(),
        });
    }
    let _ = queue.try_send(Message::text(r#"{"type":"hello"}"#));

    // Writer: drain whatever is queued, then flush once.
    let writer = tokio::spawn(async move {
        while let Some(frame) = outbound.recv().await {
            if sink.feed(frame).await.is_err() {
                return;
            }
            while let Ok(frame) = outbound.try_recv() {
                if sink.feed(frame).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    while let Some(Ok(frame)) = source.next().await {
        match frame {
            Message::Text(_) | Message::Binary(_) => {
                if queue.try_send(frame.clone()).is_err() {
                    rooms.dropped.fetch_add(1, Ordering::Relaxed);
                }
                let Some(room) = room else { continue };
                let all = rooms.rooms.read().unwrap_or_else(|e| e.into_inner());
                for member in all.get(&room).into_iter().flatten() {
                    if member.id != id && member.queue.try_send(frame.clone()).is_err() {
                        rooms.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }

    if let Some(room) = room {
        let mut all = rooms.rooms.write().unwrap_or_else(|e| e.into_inner());
        if let Some(members) = all.get_mut(&room) {
            members.retain(|m| m.id != id);
            if members.is_empty() {
                all.remove(&room);
            }
        }
    }
    drop(queue);
    let _ = writer.await;
    let dropped = rooms.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        eprintln!("wire server: {dropped} frames dropped on full queues");
    }
}

/// The URL a client of room `room` connects to (`None`: an idle connection).
pub fn url(server: &ChildServer, room: Option<u64>) -> String {
    match room {
        Some(room) => format!("ws://{}/ws?room={room}", server.addr),
        None => format!("ws://{}/ws", server.addr),
    }
}
