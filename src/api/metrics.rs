//! `GET /metrics`: the Prometheus (OpenMetrics) exposition, readable per
//! `metrics.access`: `loopback` (only from this machine; others get 404, as if
//! there were no such endpoint), `admins` (an admin's bearer token), `anyone`,
//! or `off` (404).

use std::net::{IpAddr, SocketAddr};

use warp::Filter;
use warp::Reply;
use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use warp::reply::Response;

use super::{bearer_token, require_admin, respond, with_state};
use crate::error::{AppError, AppResult};
use crate::state::SharedState;

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .and(super::remote_addr())
        .and(warp::header::optional::<String>("authorization"))
        .then(metrics)
        .map(respond)
        .boxed()
}

/// Whether a peer is on this machine (IPv4 127.0.0.0/8, `::1`, or IPv4-mapped
/// loopback on a dual-stack socket).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

async fn metrics(
    state: SharedState,
    remote: Option<SocketAddr>,
    authorization: Option<String>,
) -> AppResult<Response> {
    let hidden = || AppError::not_found("no such endpoint");
    match state.config.metrics.access.as_str() {
        "anyone" => {}
        "loopback" => {
            if !remote.is_some_and(|addr| is_loopback(addr.ip())) {
                return Err(hidden());
            }
        }
        "admins" => {
            let token = authorization
                .as_deref()
                .and_then(bearer_token)
                .ok_or_else(|| AppError::unauthorized("sign in first: no bearer token"))?;
            let caller = state.auth.authenticate(token)?;
            require_admin(&state, caller).await?;
        }
        _ => return Err(hidden()),
    }
    let text = state.metrics.encode().map_err(AppError::internal)?;
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_peers() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["192.168.1.5", "10.0.0.1", "::ffff:10.0.0.1", "fe80::1"] {
            assert!(!is_loopback(ip.parse().expect("ip")), "{ip}");
        }
    }
}
