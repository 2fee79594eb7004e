//! `GET /conversations/{id}/export?format=json|html`: the caller's readable
//! history as a download, streamed while it is read from the database.

use std::io::Write;

use serde::Deserialize;
use tokio::sync::mpsc;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, header};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{authenticated, query, respond, with_state};
use crate::auth::AuthUser;
use crate::chat::export::{self, Format};
use crate::db::now_ms;
use crate::error::{AppError, AppResult};
use crate::state::SharedState;

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    warp::path!("conversations" / i64 / "export")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(authenticated(state))
        .and(query::<ExportQuery>())
        .then(export_conversation)
        .map(respond)
        .boxed()
}

#[derive(Debug, Deserialize)]
struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
}

/// An `io::Write` that hands each chunk to the response stream; the export is
/// produced on a blocking thread and backpressured by the bounded channel.
struct ChannelWriter {
    sender: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    buffer: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.buffer);
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

async fn export_conversation(
    id: i64,
    state: SharedState,
    caller: AuthUser,
    query: ExportQuery,
) -> AppResult<Response> {
    let format = match query.format.as_deref() {
        None => Format::Json,
        Some(text) => Format::parse(text)
            .ok_or_else(|| AppError::validation("format", "format is \"json\" or \"html\""))?,
    };
    // Check access before the response starts, so refusals are proper errors.
    let user = caller.user_id;
    state
        .db
        .read(move |conn| export::check_access(conn, Some(user), id).map(|_| ()))
        .await?;
    let (sender, receiver) = mpsc::channel(8);
    let db = state.db.clone();
    tokio::spawn(async move {
        let failure = sender.clone();
        let result = tokio::task::spawn_blocking(move || {
            let conn = db.open_reader()?;
            let mut writer = ChannelWriter {
                sender,
                buffer: Vec::with_capacity(64 * 1024),
            };
            export::write(&conn, Some(user), &[id], format, now_ms(), &mut writer)
        })
        .await
        .map_err(AppError::internal)
        .and_then(|r| r);
        if let Err(err) = result {
            tracing::warn!(error = %err, conversation_id = id, "export stopped");
            let _ = failure
                .send(Err(std::io::Error::other("export failed")))
                .await;
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut response = warp::reply::stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"lanchat-conversation-{id}.{}\"",
        format.extension()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
