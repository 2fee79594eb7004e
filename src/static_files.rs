//! The bundled web client: `static/` embedded in the binary, served at `/` with a
//! single-page-app fallback, ETags, and a strict Content-Security-Policy.

use std::collections::HashMap;
use std::sync::OnceLock;

use include_dir::{Dir, include_dir};
use sha2::{Digest, Sha256};
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, Response as HttpResponse, StatusCode, header};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::error::AppError;

static STATIC_DIR: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/static");

/// Only our own origin, no inline script or style, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
     connect-src 'self' ws: wss:; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

struct Asset {
    body: &'static [u8],
    mime: String,
    etag: String,
}

fn assets() -> &'static HashMap<String, Asset> {
    static ASSETS: OnceLock<HashMap<String, Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let mut map = HashMap::new();
        collect(&STATIC_DIR, &mut map);
        map
    })
}

fn collect(dir: &'static Dir<'static>, map: &mut HashMap<String, Asset>) {
    for file in dir.files() {
        let path = file.path().to_string_lossy().replace('\\', "/");
        let mime = mime_guess::from_path(&path)
            .first_or_octet_stream()
            .essence_str()
            .to_owned();
        let mime = if mime.starts_with("text/") || mime == "application/javascript" {
            format!("{mime}; charset=utf-8")
        } else {
            mime
        };
        let etag = format!(
            "\"{}\"",
            &hex::encode(Sha256::digest(file.contents()))[..32]
        );
        map.insert(
            path,
            Asset {
                body: file.contents(),
                mime,
                etag,
            },
        );
    }
    for sub in dir.dirs() {
        collect(sub, map);
    }
}

pub fn routes() -> BoxedFilter<(Response,)> {
    // The API has its own 404s: never answer an API path with the page. The path
    // is checked before the method, or `POST /api/v1/nope` would be a 405 here.
    let not_api = warp::path::full().and_then(|path: FullPath| async move {
        if is_api_path(path.as_str()) {
            Err(warp::reject::not_found())
        } else {
            Ok(path)
        }
    });
    not_api
        .and(warp::get().or(warp::head()).unify())
        .and(warp::header::optional::<String>("if-none-match"))
        .and_then(|path: FullPath, if_none_match: Option<String>| async move {
            serve(path.as_str(), if_none_match.as_deref())
        })
        .boxed()
}

/// One embedded page by its path in `static/` (such as `trust.html`), with the
/// same headers as every asset.
pub fn page(relative: &str, if_none_match: Option<&str>) -> Response {
    match serve(relative, if_none_match) {
        Ok(response) => response,
        Err(_) => AppError::not_found("no such page").into_response(),
    }
}

fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

fn serve(path: &str, if_none_match: Option<&str>) -> Result<Response, warp::Rejection> {
    let relative = path.trim_start_matches('/');
    let assets = assets();
    let asset = match assets.get(relative) {
        Some(asset) if !relative.is_empty() => asset,
        _ => {
            // Paths that name a file (have an extension) and do not exist are 404s;
            // everything else is a client-side route and gets the app.
            let last = relative.rsplit('/').next().unwrap_or("");
            if last.contains('.') {
                return Ok(AppError::not_found("no such file").into_response());
            }
            match assets.get("index.html") {
                Some(index) => index,
                None => {
                    return Ok(AppError::not_found("the web client is not bundled").into_response());
                }
            }
        }
    };
    let mut builder = HttpResponse::builder()
        .header(header::CONTENT_TYPE, asset.mime.as_str())
        .header(header::ETAG, asset.etag.as_str())
        // Revalidate every time: file names are not content-hashed, and a 304 is cheap.
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header("referrer-policy", "no-referrer")
        .header("x-frame-options", "DENY");
    let not_modified = if_none_match.is_some_and(|tags| {
        tags.split(',')
            .any(|t| t.trim() == asset.etag || t.trim() == "*")
    });
    let response = if not_modified {
        builder = builder.status(StatusCode::NOT_MODIFIED);
        builder.body(bytes::Bytes::new().into())
    } else {
        builder.body(bytes::Bytes::from_static(asset.body).into())
    };
    Ok(response.unwrap_or_else(|_| {
        let mut fallback = Response::new(Default::default());
        *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        fallback
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        fallback
    }))
}
