//! HTTP plumbing: shared filters (state, authentication, bounded JSON bodies),
//! the table that mounts every API area, and the one rejection handler that turns
//! anything warp refuses into the contract's JSON error.

pub mod admin;
pub mod attachments;
pub mod auth;
pub mod conversations;
pub mod export;
pub mod health;
pub mod messages;
pub mod metrics;
pub mod search;
pub mod setup;
pub mod trust;
pub mod users;
pub mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::state::SharedState;

/// The OpenAPI document served at `/api/v1/openapi.json`.
pub static OPENAPI: &str = include_str!("openapi.json");

/// Every route of the server, in one table.
pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    let api = warp::path("api")
        .and(warp::path("v1"))
        .and(
            setup::routes(state.clone())
                .or(auth::routes(state.clone()))
                .unify()
                .or(users::routes(state.clone()))
                .unify()
                .or(conversations::routes(state.clone()))
                .unify()
                .or(messages::routes(state.clone()))
                .unify()
                .or(export::routes(state.clone()))
                .unify()
                .or(ws::routes(state.clone()))
                .unify()
                .or(attachments::routes(state.clone()))
                .unify()
                .or(search::routes(state.clone()))
                .unify()
                .or(admin::routes(state.clone()))
                .unify()
                .or(warp::path!("openapi.json").and(warp::get()).map(|| {
                    warp::reply::with_header(OPENAPI, "content-type", "application/json")
                        .into_response()
                }))
                .unify(),
        )
        .boxed();

    let metrics = state.metrics.clone();
    trust::require_https(state.clone())
        .or(trust::routes(state.clone()))
        .unify()
        .or(health::routes(state.clone()))
        .unify()
        .or(metrics::routes(state.clone()))
        .unify()
        .or(api)
        .unify()
        .or(crate::static_files::routes())
        .unify()
        .recover(handle_rejection)
        .unify()
        .map(|mut response: Response| {
            response.headers_mut().insert(
                "x-content-type-options",
                warp::http::HeaderValue::from_static("nosniff"),
            );
            response
        })
        .with(warp::log::custom(move |info| log_request(&metrics, info)))
        .map(Reply::into_response)
        .boxed()
}

fn log_request(metrics: &crate::metrics::Metrics, info: warp::log::Info<'_>) {
    metrics.record_http(
        info.method(),
        info.path(),
        info.status().as_u16(),
        info.elapsed(),
    );
    tracing::info!(
        target: "lanchat::http",
        method = %info.method(),
        path = info.path(),
        status = info.status().as_u16(),
        elapsed_ms = info.elapsed().as_secs_f64() * 1000.0,
        // The client's address and scheme come from the request's span
        // (src/net/service.rs).
    );
}

/// Injects the shared state.
pub fn with_state(
    state: SharedState,
) -> impl Filter<Extract = (SharedState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Requires `Authorization: Bearer <access token>` and yields the caller.
pub fn authenticated(
    state: SharedState,
) -> impl Filter<Extract = (AuthUser,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let state = state.clone();
        async move {
            let token = header.as_deref().and_then(bearer_token).ok_or_else(|| {
                warp::reject::custom(AppError::unauthorized("sign in first: no bearer token"))
            })?;
            state.auth.authenticate(token).map_err(warp::reject::custom)
        }
    })
}

/// Like [`authenticated`], and the caller must be an enabled admin according to
/// the database at this moment (403 `forbidden` otherwise).
pub fn admin_authenticated(
    state: SharedState,
) -> impl Filter<Extract = (AuthUser,), Error = Rejection> + Clone {
    authenticated(state.clone()).and_then(move |caller: AuthUser| {
        let state = state.clone();
        async move {
            require_admin(&state, caller)
                .await
                .map_err(warp::reject::custom)?;
            Ok::<_, Rejection>(caller)
        }
    })
}

/// Checks in the database that `caller` is an enabled admin.
pub async fn require_admin(state: &SharedState, caller: AuthUser) -> AppResult<()> {
    let user_id = caller.user_id;
    let is_admin = state
        .db
        .read(move |conn| crate::admin::is_active_admin(conn, user_id))
        .await?;
    if is_admin {
        Ok(())
    } else {
        Err(AppError::forbidden("this needs an administrator"))
    }
}

pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Who is asking: the peer address and the user agent, for sessions and throttling.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub address: Option<SocketAddr>,
    pub user_agent: String,
}

impl ClientInfo {
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.address.map(|a| a.ip())
    }

    pub fn address_text(&self) -> String {
        self.address.map(|a| a.ip().to_string()).unwrap_or_default()
    }
}

/// The client's address, as the connection layer (src/net) saw it.
pub fn remote_addr() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    crate::net::peer().map(|peer: Option<crate::net::Peer>| peer.map(|p| p.addr))
}

pub fn client_info() -> impl Filter<Extract = (ClientInfo,), Error = Rejection> + Clone {
    remote_addr()
        .and(warp::header::optional::<String>("user-agent"))
        .map(|address, user_agent: Option<String>| ClientInfo {
            address,
            user_agent: user_agent.unwrap_or_default(),
        })
}

/// A JSON body of type `T`, read with a size cap (413 past it) whatever the
/// transfer encoding, and decoded with the failing field named (400).
pub fn json_body<T: DeserializeOwned + Send + 'static>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    // The content type is not checked: clients that forget the header (or send
    // curl's form default) still get their JSON parsed, or a 400 saying why not.
    warp::body::stream().and_then(move |body| async move {
        let bytes = read_limited(body, limit)
            .await
            .map_err(warp::reject::custom)?;
        parse_json::<T>(&bytes).map_err(warp::reject::custom)
    })
}

/// How much of an oversize body is still read (and dropped) before the 413, and
/// for how long: a server that closes while the client is still sending makes the
/// client's OS reset the connection, and the client never sees the 413.
const OVERSIZE_DRAIN_BYTES: u64 = 8 * 1024 * 1024;
const OVERSIZE_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);
/// Like [`json_body`], but an empty body means `T::default()` (for endpoints
/// whose fields are all optional, such as creating an invite).
pub fn optional_json_body<T: DeserializeOwned + Default + Send + 'static>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::stream().and_then(move |body| async move {
        let bytes = read_limited(body, limit)
            .await
            .map_err(warp::reject::custom)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        parse_json::<T>(&bytes).map_err(warp::reject::custom)
    })
}

async fn read_limited<S, B>(body: S, limit: u64) -> AppResult<Bytes>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut collected = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|_| AppError::bad_request("the request body could not be read"))?;
        if collected.len() as u64 + chunk.remaining() as u64 > limit {
            let mut drained = 0u64;
            let drain = async {
                while let Some(Ok(chunk)) = body.next().await {
                    drained += chunk.remaining() as u64;
                    if drained > OVERSIZE_DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(OVERSIZE_DRAIN_TIME, drain).await;
            return Err(AppError::PayloadTooLarge(
                format!("the request body is over {limit} bytes").into(),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            collected.put_slice(part);
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

/// Decodes a JSON object, naming the field at fault when there is one.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> AppResult<T> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(AppError::bad_request("a JSON body is required")),
        // serde would read a struct from an array of its fields in order:
        // every request body of the API is an object, so say so instead.
        Some(b'{') => {}
        Some(_) => return Err(AppError::bad_request("the body must be a JSON object")),
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => {
            deserializer
                .end()
                .map_err(|_| AppError::bad_request("trailing characters after the JSON body"))?;
            Ok(value)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let message = if inner.is_syntax() || inner.is_eof() {
                format!("malformed JSON: {inner}")
            } else {
                inner.to_string()
            };
            if path.is_empty() || path == "." {
                // A missing or repeated field is reported by serde at the parent:
                // pull its name out.
                match field_named_in(&message) {
                    Some(field) => Err(AppError::bad_field(field, message)),
                    None => Err(AppError::bad_request(message)),
                }
            } else {
                Err(AppError::bad_field(path, message))
            }
        }
    }
}

fn field_named_in(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("duplicate field `"))?;
    Some(rest.split('`').next()?.to_owned())
}

/// Turns a handler's result into its response (errors through the one mapping).
pub fn respond(result: AppResult<Response>) -> Response {
    result.unwrap_or_else(Reply::into_response)
}

/// A JSON response with a status.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

pub fn ok<T: Serialize>(value: &T) -> Response {
    json(StatusCode::OK, value)
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Query strings: a bad one is a 400 naming the problem.
pub fn query<T: DeserializeOwned + Send + 'static>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw: String| async move {
            serde_urlencoded_from_str::<T>(&raw).map_err(warp::reject::custom)
        })
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(raw: &str) -> AppResult<T> {
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        if path.is_empty() || path == "." {
            match field_named_in(&message) {
                Some(field) => {
                    AppError::bad_field(field, format!("bad query parameter: {message}"))
                }
                None => AppError::bad_request(format!("bad query string: {message}")),
            }
        } else {
            AppError::bad_field(path, format!("bad query parameter: {message}"))
        }
    })
}

/// The one place where warp's rejections become the contract's JSON errors.
pub async fn handle_rejection(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(app) = rejection.find::<AppError>() {
        clone_error(app)
    } else if rejection.is_not_found() {
        AppError::not_found("no such endpoint")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        AppError::MethodNotAllowed
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        AppError::PayloadTooLarge("the request body is too large".into())
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        AppError::UnsupportedMediaType("unsupported content type".into())
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        AppError::bad_request("bad query string")
    } else if let Some(header) = rejection.find::<warp::reject::InvalidHeader>() {
        AppError::bad_request(format!("bad header: {}", header.name()))
    } else if let Some(header) = rejection.find::<warp::reject::MissingHeader>() {
        AppError::bad_request(format!("missing header: {}", header.name()))
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        AppError::bad_request("a Content-Length header is required")
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        AppError::bad_request("the request could not be handled")
    };
    Ok(error.into_response())
}

/// Rejections hand out a reference; rebuild an owned error for the response.
fn clone_error(error: &AppError) -> AppError {
    match error {
        AppError::BadRequest { message, field } => AppError::BadRequest {
            message: message.clone(),
            field: field.clone(),
        },
        AppError::Validation { field, message } => AppError::Validation {
            field: field.clone(),
            message: message.clone(),
        },
        AppError::Unauthorized { code, message } => AppError::Unauthorized {
            code,
            message: message.clone(),
        },
        AppError::Forbidden { code, message } => AppError::Forbidden {
            code,
            message: message.clone(),
        },
        AppError::NotFound(message) => AppError::NotFound(message.clone()),
        AppError::MethodNotAllowed => AppError::MethodNotAllowed,
        AppError::Conflict { code, message } => AppError::Conflict {
            code,
            message: message.clone(),
        },
        AppError::PayloadTooLarge(message) => AppError::PayloadTooLarge(message.clone()),
        AppError::UnsupportedMediaType(message) => AppError::UnsupportedMediaType(message.clone()),
        AppError::RequestTimeout(message) => AppError::RequestTimeout(message.clone()),
        AppError::InsufficientStorage { code, message } => AppError::InsufficientStorage {
            code,
            message: message.clone(),
        },
        AppError::RateLimited { retry_after_secs } => AppError::RateLimited {
            retry_after_secs: *retry_after_secs,
        },
        AppError::Unavailable(message) => AppError::Unavailable(message.clone()),
        AppError::Overloaded {
            message,
            retry_after_secs,
        } => AppError::Overloaded {
            message: message.clone(),
            retry_after_secs: *retry_after_secs,
        },
        AppError::Internal(cause) => AppError::Internal(cause.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Login {
        username: String,
        password: String,
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = parse_json::<Login>(br#"{"username": 5, "password": "x"}"#).expect_err("type");
        assert_eq!(err.field(), Some("username"));
        let err = parse_json::<Login>(br#"{"username": "a"}"#).expect_err("missing");
        assert_eq!(err.field(), Some("password"));
        let err = parse_json::<Login>(br#"{"username": "a", "username": "b", "password": "c"}"#)
            .expect_err("duplicate");
        assert_eq!(err.field(), Some("username"));
        let err = parse_json::<Login>(br#"{"username": "#).expect_err("syntax");
        assert_eq!(err.code(), "bad_request");
        assert!(parse_json::<Login>(b"").is_err());
        let err = parse_json::<Login>(br#" ["alice", "secret"]"#).expect_err("array");
        assert_eq!(err.code(), "bad_request");
        assert!(parse_json::<Login>(br#" {"username": "a", "password": "b"}"#).is_ok());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn query_decoding() {
        #[derive(Debug, serde::Deserialize)]
        struct Q {
            q: Option<String>,
            limit: Option<u32>,
        }
        let q: Q = serde_urlencoded_from_str("q=h%C3%A9llo+world&limit=5").expect("ok");
        assert_eq!(q.q.as_deref(), Some("héllo world"));
        assert_eq!(q.limit, Some(5));
        let err = serde_urlencoded_from_str::<Q>("limit=abc").expect_err("bad");
        assert_eq!(err.field(), Some("limit"));
        let err = serde_urlencoded_from_str::<Q>("limit=1&limit=2").expect_err("twice");
        assert_eq!(err.field(), Some("limit"));
    }
}
