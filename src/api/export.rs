//! `GET /conversations/{id}/export?format=json|html`: the caller's readable
//! history as a download, read from the database part by part as the client
//! takes it.

use futures_util::StreamExt;
use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, header};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{authenticated, query, respond, with_state};
use crate::auth::AuthUser;
use crate::chat::export::{Export, Format};
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
    // Held by the response body until the download ends or the client leaves.
    let slot = state.transfers.exports.take(caller.user_id)?;
    // The first part checks access, before the response starts, so refusals
    // are proper errors.
    let export = Export::new(Some(caller.user_id), vec![id], format, now_ms());
    let (export, first) = next_part(&state, export).await?;
    let first = first.unwrap_or_default();
    // Each further part is read when the client has taken the one before: a
    // slow client holds nothing but this stream.
    let rest = futures_util::stream::try_unfold(
        (state, Some(export), slot),
        move |(state, export, slot)| async move {
            let Some(export) = export else {
                return Ok(None);
            };
            match next_part(&state, export).await {
                Ok((export, Some(part))) => Ok(Some((part, (state, Some(export), slot)))),
                Ok((_, None)) => Ok(None),
                Err(err) => {
                    tracing::warn!(error = %err, conversation_id = id, "export stopped");
                    Err(std::io::Error::other("export failed"))
                }
            }
        },
    );
    let body =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(rest);
    let mut response = warp::reply::stream(body).into_response();
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

/// One part of the export, read by the readers like any other read.
async fn next_part(
    state: &SharedState,
    mut export: Export,
) -> AppResult<(Export, Option<Vec<u8>>)> {
    state
        .db
        .read(move |conn| {
            let part = export.next_part(conn)?;
            Ok::<_, AppError>((export, part))
        })
        .await
}
