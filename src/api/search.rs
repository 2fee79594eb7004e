//! `GET /search`: messages the caller can read that match a query.

use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::{authenticated, ok, query, respond, with_state};
use crate::auth::AuthUser;
use crate::chat::access;
use crate::error::{AppError, AppResult};
use crate::search::{self, DEFAULT_LIMIT, MAX_LIMIT, SearchQuery};
use crate::state::SharedState;

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    warp::path!("search")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(authenticated(state))
        .and(query::<SearchParams>())
        .then(search_messages)
        .map(respond)
        .boxed()
}

/// Numbers arrive as text so that an empty parameter (`&from=`) means "not set".
#[derive(Debug, Deserialize)]
struct SearchParams {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

/// An optional positive integer parameter.
fn optional_id(field: &'static str, value: Option<&str>) -> AppResult<Option<i64>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(Some)
            .ok_or_else(|| AppError::bad_field(field, format!("`{field}` is a positive integer"))),
    }
}

/// `limit`: like every list of the API, default 50 and clamped to 1–200.
fn page_size(value: Option<&str>) -> AppResult<usize> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => text
            .parse::<u64>()
            .map(|n| (n.min(MAX_LIMIT as u64) as usize).max(1))
            .map_err(|_| AppError::bad_field("limit", "`limit` is a number")),
    }
}

async fn search_messages(
    state: SharedState,
    caller: AuthUser,
    params: SearchParams,
) -> AppResult<Response> {
    let terms = search::parse_query(params.q.as_deref().unwrap_or(""))?;
    let limit = page_size(params.limit.as_deref())?;
    let query = SearchQuery {
        terms,
        conversation_id: optional_id("conversation_id", params.conversation_id.as_deref())?,
        from: optional_id("from", params.from.as_deref())?,
        before: optional_id("cursor", params.cursor.as_deref())?,
        limit,
    };
    let viewer = caller.user_id;
    let first = query.clone();
    let page = state
        .db
        .read(move |conn| read_page(conn, viewer, &first, true))
        .await?;
    let page = match page {
        Some(page) => page,
        None => {
            // Messages committed since the index's last step: index them first.
            state.db.writer.catch_up_background().await?;
            state
                .db
                .read(move |conn| read_page(conn, viewer, &query, false))
                .await?
                .ok_or_else(|| AppError::internal("the search index did not catch up"))?
        }
    };
    Ok(ok(&page))
}

/// A page of results; `None` (with `require_indexed`) when the search index has
/// not yet taken in every committed message.
fn read_page(
    conn: &rusqlite::Connection,
    viewer: i64,
    query: &SearchQuery,
    require_indexed: bool,
) -> AppResult<Option<search::SearchPage>> {
    if let Some(conversation_id) = query.conversation_id {
        // A conversation one cannot read does not exist (404), as elsewhere.
        access::require_readable(conn, viewer, conversation_id)?;
    }
    // Every term is looked up in an index (words, or character pairs).
    let uses_index = !query.terms.is_empty();
    if require_indexed && uses_index && search::needs_catch_up(conn)? {
        return Ok(None);
    }
    search::search(conn, viewer, query).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(None).expect("ok"), DEFAULT_LIMIT);
        assert_eq!(page_size(Some("0")).expect("ok"), 1);
        assert_eq!(page_size(Some("7")).expect("ok"), 7);
        assert_eq!(page_size(Some("100000")).expect("ok"), MAX_LIMIT);
        assert!(page_size(Some("-3")).is_err());
    }

    #[test]
    fn id_parameters() {
        assert_eq!(optional_id("from", None).expect("ok"), None);
        assert_eq!(optional_id("from", Some("")).expect("ok"), None);
        assert_eq!(optional_id("from", Some("12")).expect("ok"), Some(12));
        assert!(optional_id("from", Some("0")).is_err());
        assert!(optional_id("from", Some("x")).is_err());
        assert_eq!(
            optional_id("cursor", Some("-1")).expect_err("bad").field(),
            Some("cursor")
        );
    }
}
