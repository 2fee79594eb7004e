//! `GET /healthz`: liveness plus a real database round trip and a check that the
//! database writer is still running.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{json, with_state};
use crate::state::SharedState;

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    warp::path!("healthz")
        .and(warp::get())
        .and(with_state(state))
        .then(healthz)
        .boxed()
}

async fn healthz(state: SharedState) -> Response {
    let writer_ok = state.db.writer.is_alive();
    let db_ok = writer_ok && state.db.ping().await;
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = json(
        status,
        &serde_json::json!({
            "status": if db_ok { "ok" } else { "unavailable" },
            "version": env!("CARGO_PKG_VERSION"),
            "db": if db_ok { "ok" } else { "error" },
            "tls": state.tls.as_ref().map_or("off", |tls| tls.mode()),
        }),
    );
    response.headers_mut().insert(
        warp::http::header::CACHE_CONTROL,
        warp::http::HeaderValue::from_static("no-store"),
    );
    response
}
