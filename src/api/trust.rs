//! The secure-connection pages: the trust page (`/trust`), the local CA for
//! download (`/ca.crt`, `/ca.pem`, `/ca.mobileconfig`), what the trust page
//! needs to know (`GET /api/v1/tls`), and, with `tls.require`, the redirect of
//! everything else from plain HTTP to HTTPS. All of it works over plain HTTP
//! and without signing in: it is how a device learns to trust the server.

use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, Response as HttpResponse, StatusCode, header};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{ok, with_state};
use crate::error::AppError;
use crate::net::Peer;
use crate::state::SharedState;

/// Paths plain HTTP keeps serving under `tls.require`: what the trust page
/// needs.
const ALWAYS_PLAIN: &[&str] = &[
    "/trust",
    "/ca.crt",
    "/ca.pem",
    "/ca.mobileconfig",
    "/healthz",
    "/api/v1/tls",
    "/js/trust.js",
    "/css/app.css",
    "/favicon.svg",
];

const CA_FILES: &[&str] = &["ca.crt", "ca.pem", "ca.mobileconfig"];

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    let trust = warp::path!("trust")
        .and(warp::get().or(warp::head()).unify())
        .and(warp::header::optional::<String>("if-none-match"))
        .map(|etag: Option<String>| crate::static_files::page("trust.html", etag.as_deref()));
    // The name is checked before the method, so other one-segment paths keep
    // their own 404 or 405.
    let ca = warp::path!(String)
        .and_then(|file: String| async move {
            if CA_FILES.contains(&file.as_str()) {
                Ok(file)
            } else {
                Err(warp::reject::not_found())
            }
        })
        .and(warp::get().or(warp::head()).unify())
        .and(with_state(state.clone()))
        .and_then(|file: String, state: SharedState| async move { ca_file(&file, &state) });
    let info = warp::path!("api" / "v1" / "tls")
        .and(warp::get())
        .and(crate::net::peer())
        .and(with_state(state))
        .map(|peer: Option<Peer>, state: SharedState| info(&state, peer));
    trust.or(ca).unify().or(info).unify().boxed()
}

fn ca_file(file: &str, state: &SharedState) -> Result<Response, Rejection> {
    let (mime, disposition) = match file {
        "ca.crt" => ("application/x-x509-ca-cert", "lanchat-ca.crt"),
        "ca.pem" => ("application/x-pem-file", "lanchat-ca.pem"),
        "ca.mobileconfig" => (crate::tls::profile::CONTENT_TYPE, "lanchat-ca.mobileconfig"),
        _ => return Err(warp::reject::not_found()),
    };
    let Some(ca) = state.tls.as_ref().and_then(|tls| tls.ca()) else {
        return Ok(AppError::not_found(
            "this server has no local certificate authority (tls.mode is not \"auto\")",
        )
        .into_response());
    };
    let body: Vec<u8> = match file {
        "ca.crt" => ca.der.clone(),
        "ca.pem" => ca.pem.clone().into_bytes(),
        _ => crate::tls::profile::mobileconfig(ca, &state.settings.get().server_name).into_bytes(),
    };
    let response = HttpResponse::builder()
        .header(header::CONTENT_TYPE, mime)
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{disposition}\""),
        )
        .header(header::CACHE_CONTROL, "no-cache")
        .body(bytes::Bytes::from(body).into());
    Ok(response.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

fn info(state: &SharedState, peer: Option<Peer>) -> Response {
    let tls = state.tls.as_deref();
    let mdns_name = state
        .mdns_name
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let certificate = tls.map(|tls| {
        let summary = tls.summary();
        let mut names: Vec<String> = summary.names.dns.iter().cloned().collect();
        names.extend(summary.names.ips.iter().map(ToString::to_string));
        serde_json::json!({
            "expires_at": summary.not_after.unix_timestamp() * 1000,
            "names": names,
        })
    });
    let ca = tls.and_then(|tls| tls.ca()).map(|ca| {
        serde_json::json!({
            "name": ca.name,
            "fingerprint_sha256": ca.fingerprint,
            "der_url": "/ca.crt",
            "pem_url": "/ca.pem",
            "apple_profile_url": "/ca.mobileconfig",
        })
    });
    let mut response = ok(&serde_json::json!({
        "mode": tls.map_or("off", |tls| tls.mode()),
        "secure": peer.is_some_and(|p| p.tls),
        "require": tls.is_some_and(|tls| tls.require),
        "mdns_name": mdns_name,
        "ca": ca,
        "certificate": certificate,
    }));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// With `tls.require`: a request over plain HTTP for anything but the trust
/// page and what it needs is redirected to the same URL over HTTPS (same host
/// and port). Rejects (to let the routes run) otherwise.
pub fn require_https(state: SharedState) -> BoxedFilter<(Response,)> {
    warp::any()
        .and(crate::net::peer())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::optional::<String>("host"))
        .and_then(
            move |peer: Option<Peer>, path: FullPath, query: String, host: Option<String>| {
                let required = state.tls.as_ref().is_some_and(|tls| tls.require);
                async move {
                    let plain = peer.is_some_and(|p| !p.tls);
                    let path = path.as_str();
                    let exempt = ALWAYS_PLAIN.contains(&path);
                    match host {
                        Some(host) if required && plain && !exempt => {
                            let query = if query.is_empty() {
                                String::new()
                            } else {
                                format!("?{query}")
                            };
                            Ok(redirect(&format!("https://{host}{path}{query}")))
                        }
                        _ => Err(warp::reject::not_found()),
                    }
                }
            },
        )
        .boxed()
}

fn redirect(location: &str) -> Response {
    let Ok(location) = HeaderValue::from_str(location) else {
        return AppError::bad_request("bad Host header").into_response();
    };
    let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    response
}
