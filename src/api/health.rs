//! `GET /healthz`: liveness plus a real database round trip, a check that the
//! database writer is still running, and whether the disk is below the upload
//! reserve.

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
    // Low disk space leaves the server up (messages still work): it is reported,
    // not a 503.
    let disk = crate::disk::space(&state.data_dir, state.config.limits.min_free_disk_bytes).await;
    let disk_low = disk.is_some_and(|disk| disk.is_low());
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
            "disk": if disk_low { "low" } else { "ok" },
            "tls": state.tls.as_ref().map_or("off", |tls| tls.mode()),
        }),
    );
    response.headers_mut().insert(
        warp::http::header::CACHE_CONTROL,
        warp::http::HeaderValue::from_static("no-store"),
    );
    response
}
