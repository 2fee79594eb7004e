//! `/attachments`: multipart upload (streamed to disk, never held in memory) and
//! download with conditional requests, single ranges and previews.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use warp::filters::BoxedFilter;
use warp::filters::multipart::{FormData, Part};
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{authenticated, bearer_token, json, query, respond, with_state};
use crate::attachments::media::{self, Disposition};
use crate::attachments::rate::{MinRate, RateWatch};
use crate::attachments::store::{self, NoThumbnail, THUMB_MAX};
use crate::attachments::{self, Attachment, FILES_LOCK, Received};
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::state::SharedState;

/// Room for the multipart framing and small extra fields around the file.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;
/// Fields other than `file` are read and ignored, up to this much in all.
const OTHER_FIELDS_MAX: usize = 64 * 1024;
/// After refusing an oversize upload, this much more of the body is read (and
/// dropped) so the client gets to read the 413 instead of a reset connection;
/// past it the connection is closed.
const DRAIN_MAX: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);
/// Previews decode whole images (up to `limits.thumbnail_max_pixels`): one at a
/// time, so that a few large images cannot take the server's memory together.
static THUMBNAILS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    let upload = warp::path!("attachments")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(authenticated(state.clone()))
        .and(warp::header::optional::<u64>("content-length"))
        .and(multipart_form())
        .then(upload)
        .map(respond);
    let download = warp::path!("attachments" / String)
        .and(warp::get().or(warp::head()).unify())
        .and(warp::method())
        .and(with_state(state))
        .and(warp::header::optional::<String>("authorization"))
        .and(query::<DownloadQuery>())
        .and(warp::header::headers_cloned())
        .then(download)
        .map(respond);
    upload.or(download).unify().boxed()
}

fn multipart_form() -> impl Filter<Extract = (FormData,), Error = Rejection> + Clone {
    // No length limit here: it needs a Content-Length header; the file's size is
    // counted while it streams instead.
    warp::multipart::form().max_length(None).or_else(|_| async {
        Err::<(FormData,), _>(warp::reject::custom(AppError::UnsupportedMediaType(
            "send the file as multipart/form-data, in a field named `file`".into(),
        )))
    })
}

fn too_large(limit: u64) -> AppError {
    AppError::PayloadTooLarge(format!("attachments are limited to {limit} bytes").into())
}

fn malformed(err: warp::Error) -> AppError {
    tracing::debug!(error = %err, "bad multipart body");
    AppError::bad_request("the multipart body is not well-formed")
}

async fn upload(
    state: SharedState,
    caller: AuthUser,
    content_length: Option<u64>,
    mut form: FormData,
) -> AppResult<Response> {
    let refuse = |mut form: FormData, err: AppError| async move {
        drain(
            &mut form,
            &mut futures_util::stream::empty::<Result<bytes::Bytes, warp::Error>>(),
        )
        .await;
        Err(err)
    };
    // Held until the upload is stored or refused.
    let _slot = match state.transfers.uploads.take(caller.user_id) {
        Ok(slot) => slot,
        Err(err) => return refuse(form, err).await,
    };
    let room = match room_for_upload(&state, caller.user_id).await {
        Ok(room) => room,
        Err(err) => return refuse(form, err).await,
    };
    if content_length
        .is_some_and(|declared| declared > room.limit().saturating_add(MULTIPART_OVERHEAD))
    {
        return refuse(form, room.refusal()).await;
    }
    let files = store::files_dir(&state.data_dir);
    let rate = MinRate::per_second(
        state.config.limits.upload_min_bytes_per_sec,
        state.config.limits.upload_rate_window_secs,
    );
    let mut received = None;
    let mut other_bytes = 0usize;
    while let Some(part) = next_part(&mut form, rate).await? {
        if part.name() == "file" && received.is_none() {
            let name = media::sanitize_filename(part.filename());
            let claimed = part.content_type().map(str::to_owned);
            let mut body = std::pin::pin!(part.stream());
            match attachments::receive(&files, &mut body, room.limit(), rate).await? {
                Received::Complete(temp, written) => {
                    received = Some((name, claimed, temp, written))
                }
                Received::TooLarge => {
                    drain(&mut form, &mut body).await;
                    return Err(room.refusal());
                }
            }
        } else {
            let mut body = std::pin::pin!(part.stream());
            let mut watch = RateWatch::start(rate);
            while let Some(chunk) = watch
                .next(&mut body)
                .await
                .map_err(|_| attachments::stalled(rate))?
            {
                let size = chunk.map_err(malformed)?.remaining();
                watch.received(size);
                other_bytes += size;
                if other_bytes > OTHER_FIELDS_MAX {
                    drain(&mut form, &mut body).await;
                    return Err(AppError::PayloadTooLarge(
                        "fields other than `file` are limited to 64 KiB".into(),
                    ));
                }
            }
        }
    }
    let (name, claimed, temp, written) = received.ok_or_else(|| {
        AppError::bad_field(
            "file",
            "a multipart field named `file` holding the file is required",
        )
    })?;
    let attachment = attachments::store_upload(
        &state,
        caller.user_id,
        name,
        claimed,
        temp,
        written,
        room.quota,
    )
    .await?;
    Ok(json(StatusCode::CREATED, &attachment))
}

/// The form's next part; 408 when its headers take longer than a window of the
/// minimum rate.
async fn next_part(form: &mut FormData, rate: MinRate) -> AppResult<Option<Part>> {
    let next = form.next();
    let part = if rate.enabled() {
        tokio::time::timeout(rate.window, next)
            .await
            .map_err(|_| attachments::stalled(rate))?
    } else {
        next.await
    };
    part.transpose().map_err(malformed)
}

/// How much one upload may bring: the smallest of the attachment size limit,
/// what is left of the user's quota, and the disk's free space above the
/// reserve. Which one binds decides the answer to an upload past it.
#[derive(Debug, Clone, Copy)]
struct Room {
    max_attachment: u64,
    /// 0: no quota.
    quota: u64,
    used: u64,
    /// Free space above the reserve; `None` when the system cannot tell.
    disk: Option<u64>,
}

impl Room {
    fn quota_left(&self) -> u64 {
        if self.quota == 0 {
            u64::MAX
        } else {
            self.quota.saturating_sub(self.used)
        }
    }

    fn limit(&self) -> u64 {
        self.max_attachment
            .min(self.quota_left())
            .min(self.disk.unwrap_or(u64::MAX))
    }

    /// The error for an upload past [`Room::limit`].
    fn refusal(&self) -> AppError {
        let limit = self.limit();
        if limit == self.max_attachment {
            too_large(limit)
        } else if Some(limit) == self.disk {
            low_disk()
        } else {
            attachments::over_quota(self.used, self.quota)
        }
    }
}

fn low_disk() -> AppError {
    AppError::insufficient_storage(
        "the server is low on disk space and takes no uploads for now; messages still work",
    )
}

/// The room this user's next upload has; 507 when there is none (the disk is
/// below its reserve, or the quota is used up).
async fn room_for_upload(state: &SharedState, user_id: i64) -> AppResult<Room> {
    let settings = state.settings.get();
    let disk = crate::disk::space(&state.data_dir, state.config.limits.min_free_disk_bytes).await;
    if disk.is_some_and(|disk| disk.is_low()) {
        return Err(low_disk());
    }
    let quota = settings.attachment_quota_bytes;
    let used = if quota > 0 {
        state
            .db
            .read(move |conn| attachments::stored_bytes(conn, user_id))
            .await?
    } else {
        0
    };
    if quota > 0 && used >= quota {
        return Err(attachments::over_quota(used, quota));
    }
    Ok(Room {
        max_attachment: settings.max_attachment_bytes,
        quota,
        used,
        disk: disk.map(|disk| disk.room()),
    })
}

/// Reads and drops what is left of a refused body (the rest of the current part
/// if any, then the other parts), within [`DRAIN_MAX`] and [`DRAIN_TIME`].
async fn drain<S, B>(form: &mut FormData, current: &mut S)
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let work = async {
        let mut total = 0usize;
        if !drain_part(current, &mut total).await {
            return;
        }
        while let Some(Ok(part)) = form.next().await {
            let mut body = std::pin::pin!(part.stream());
            if !drain_part(&mut body, &mut total).await {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, work).await;
}

/// Drops one part's data; false once [`DRAIN_MAX`] is passed.
async fn drain_part<S, B>(body: &mut S, total: &mut usize) -> bool
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    while let Some(Ok(chunk)) = body.next().await {
        *total += chunk.remaining();
        if *total > DRAIN_MAX {
            return false;
        }
    }
    true
}

#[derive(Debug, Deserialize)]
struct DownloadQuery {
    /// `1`/`true`: a small preview of an image instead of the file.
    #[serde(default)]
    thumb: Option<String>,
    /// The access token, for `<img src>` and other requests that cannot carry a header.
    #[serde(default)]
    token: Option<String>,
}

/// The header wins; `?token=` is for elements that cannot send one.
fn authenticate_download(
    state: &SharedState,
    authorization: Option<&str>,
    token: Option<&str>,
) -> AppResult<AuthUser> {
    let token = match authorization {
        Some(header) => bearer_token(header).ok_or_else(|| {
            AppError::unauthorized("the Authorization header is not a bearer token")
        })?,
        None => token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AppError::unauthorized("sign in first: no bearer token"))?,
    };
    state.auth.authenticate(token)
}

fn parse_flag(field: &'static str, value: Option<&str>) -> AppResult<bool> {
    match value.map(str::trim) {
        None | Some("" | "0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(_) => Err(AppError::bad_field(field, format!("`{field}` is 1 or 0"))),
    }
}

async fn download(
    id: String,
    method: Method,
    state: SharedState,
    authorization: Option<String>,
    query: DownloadQuery,
    headers: HeaderMap,
) -> AppResult<Response> {
    let caller = authenticate_download(&state, authorization.as_deref(), query.token.as_deref())?;
    let thumb = parse_flag("thumb", query.thumb.as_deref())?;
    let not_found = || AppError::not_found("no such attachment");
    let id = attachments::parse_id(&id).ok_or_else(not_found)?;
    let attachment = state
        .db
        .read(move |conn| attachments::get_readable(conn, id, caller.user_id))
        .await?
        .ok_or_else(not_found)?;
    let files = store::files_dir(&state.data_dir);
    let variant = if thumb {
        preview(files, attachment, state.config.limits.thumbnail_max_pixels).await?
    } else {
        Variant::original(&files, attachment)?
    };
    serve(variant, method == Method::HEAD, &headers).await
}

/// One servable file: the upload itself or its preview.
#[derive(Debug)]
struct Variant {
    path: PathBuf,
    mime: String,
    etag: String,
    name: String,
    disposition: Disposition,
}

impl Variant {
    fn original(files: &std::path::Path, attachment: Attachment) -> AppResult<Variant> {
        let path = store::blob_path(files, &attachment.sha256)
            .ok_or_else(|| AppError::internal("stored sha256 is not a hash"))?;
        Ok(Variant {
            path,
            disposition: media::disposition_for(&attachment.mime),
            etag: format!("\"{}\"", attachment.sha256),
            mime: attachment.mime,
            name: attachment.name,
        })
    }
}

/// The preview of an image: a JPEG of at most [`THUMB_MAX`] px made (once, then
/// cached) on a blocking thread. Anything with no preview (not an image, already
/// small, over `max_pixels`, or an image that cannot be decoded) is served as
/// itself.
async fn preview(files: PathBuf, attachment: Attachment, max_pixels: u64) -> AppResult<Variant> {
    let small = match (attachment.width, attachment.height) {
        (Some(w), Some(h)) => w <= i64::from(THUMB_MAX) && h <= i64::from(THUMB_MAX),
        _ => true,
    };
    if !media::is_previewable_image(&attachment.mime) || small {
        return Variant::original(&files, attachment);
    }
    let thumb = |path| Variant {
        path,
        mime: "image/jpeg".into(),
        etag: format!("\"{}.thumb{THUMB_MAX}\"", attachment.sha256),
        name: attachment.name.clone(),
        disposition: Disposition::Inline,
    };
    let _files = FILES_LOCK.read().await;
    // A cached preview needs no turn among the decodes.
    if let Some(path) = store::thumb_path(&files, &attachment.sha256)
        && tokio::fs::try_exists(&path).await.unwrap_or(false)
    {
        return Ok(thumb(path));
    }
    let _slot = THUMBNAILS
        .acquire()
        .await
        .map_err(|_| AppError::Unavailable("the server is shutting down".into()))?;
    let sha = attachment.sha256.clone();
    let thumb_files = files.clone();
    let made = tokio::task::spawn_blocking(move || {
        store::ensure_thumbnail(&thumb_files, &sha, max_pixels)
    })
    .await
    .map_err(|err| AppError::internal(format!("preview task: {err}")))?;
    match made {
        Ok(path) => Ok(thumb(path)),
        Err(NoThumbnail::Remembered) => Variant::original(&files, attachment),
        Err(err) => {
            tracing::info!(attachment = attachment.id, error = %err, "no preview for an image");
            Variant::original(&files, attachment)
        }
    }
}

/// A single byte range of a file of known length (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable `Range` header: the whole file (200).
    Full,
    /// Inclusive bounds (206).
    Partial { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Parses one `bytes=` range. Headers this server does not handle (other units,
/// several ranges, malformed ones) are ignored, as the RFC allows: the whole file
/// is sent.
pub fn parse_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    let number = |text: &str| -> Option<u64> {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    if first.trim().is_empty() {
        // `bytes=-N`: the last N bytes.
        return match number(last) {
            None => ByteRange::Full,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Partial {
                start: len - n.min(len),
                end: len - 1,
            },
        };
    }
    let Some(start) = number(first) else {
        return ByteRange::Full;
    };
    let end = if last.trim().is_empty() {
        None
    } else {
        match number(last) {
            Some(end) if end >= start => Some(end),
            _ => return ByteRange::Full,
        }
    };
    if start >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Partial {
        start,
        end: end.map_or(len - 1, |end| end.min(len - 1)),
    }
}

/// Whether an `If-None-Match` list names `etag` (weak comparison, `*` matches all).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    if_none_match.trim() == "*" || if_none_match.split(',').any(|tag| bare(tag) == bare(etag))
}

fn header_value(text: &str) -> AppResult<HeaderValue> {
    HeaderValue::from_str(text)
        .map_err(|_| AppError::internal(format!("bad header value {text:?}")))
}

/// Headers every answer about a file carries (200, 206, 304, 416).
fn common_headers(headers: &mut HeaderMap, variant: &Variant) -> AppResult<()> {
    headers.insert(header::ETAG, header_value(&variant.etag)?);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // Defence in depth should a browser render something anyway: no scripts, no
    // origin; and `?token=` must not leak through a Referer.
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("sandbox"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Ok(())
}

async fn serve(variant: Variant, head: bool, request: &HeaderMap) -> AppResult<Response> {
    let text = |name: header::HeaderName| request.get(name).and_then(|v| v.to_str().ok());
    if text(header::IF_NONE_MATCH).is_some_and(|inm| etag_matches(inm, &variant.etag)) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        common_headers(response.headers_mut(), &variant)?;
        return Ok(response);
    }
    let mut file = tokio::fs::File::open(&variant.path).await.map_err(|err| {
        AppError::internal(format!("attachment file {}: {err}", variant.path.display()))
    })?;
    let len = file
        .metadata()
        .await
        .map_err(|err| AppError::internal(format!("attachment file: {err}")))?
        .len();
    // A range for another version of the file (If-Range) gets the whole file.
    let range_header = text(header::RANGE)
        .filter(|_| text(header::IF_RANGE).is_none_or(|tag| tag.trim() == variant.etag));
    let (status, start, count) = match parse_range(range_header, len) {
        ByteRange::Full => (StatusCode::OK, 0, len),
        ByteRange::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            common_headers(response.headers_mut(), &variant)?;
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{len}"))?,
            );
            return Ok(response);
        }
    };
    let mut response = if head {
        StatusCode::OK.into_response()
    } else {
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|err| AppError::internal(format!("attachment file: {err}")))?;
        }
        let body = tokio_util::io::ReaderStream::with_capacity(file.take(count), 64 * 1024);
        warp::reply::stream(body).into_response()
    };
    *response.status_mut() = status;
    let headers = response.headers_mut();
    common_headers(headers, &variant)?;
    headers.insert(
        header::CONTENT_TYPE,
        header_value(&media::content_type_header(&variant.mime))?,
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    headers.insert(
        header::CONTENT_DISPOSITION,
        header_value(&media::content_disposition(
            variant.disposition,
            &variant.name,
        ))?,
    );
    if status == StatusCode::PARTIAL_CONTENT {
        headers.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {start}-{}/{len}", start + count - 1))?,
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            Partial { start: 0, end: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-100"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Partial { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        // Ignored: the whole file.
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=+1-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=a-b"), 10), Full);
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999999-"), 10),
            Full
        );
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\"", "\"abc\""));
        assert!(etag_matches("\"x\", \"abc\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }

    #[test]
    fn flags() {
        assert!(parse_flag("thumb", Some("1")).expect("ok"));
        assert!(!parse_flag("thumb", None).expect("ok"));
        assert!(!parse_flag("thumb", Some("0")).expect("ok"));
        assert!(parse_flag("thumb", Some("maybe")).is_err());
    }
}
