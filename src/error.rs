//! The one error type of the application layer, and its single mapping to the
//! contract's JSON error body. Handlers and domain functions return `AppError`;
//! nothing else decides status codes.

use std::borrow::Cow;

use warp::http::StatusCode;

use crate::db::DbError;

/// Every failure a request can end in. The `message` is shown to the user; the
/// cause of an `Internal` error is logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed (bad JSON, wrong types, bad query string).
    #[error("{message}")]
    BadRequest {
        message: Cow<'static, str>,
        field: Option<Cow<'static, str>>,
    },
    /// 400: well-formed, but a value breaks a rule (length, charset, range).
    #[error("{message}")]
    Validation {
        field: Cow<'static, str>,
        message: Cow<'static, str>,
    },
    /// 401: missing, invalid or expired credentials.
    #[error("{message}")]
    Unauthorized {
        code: &'static str,
        message: Cow<'static, str>,
    },
    /// 403 with a specific code (`forbidden`, `account_disabled`, `blocked`, ...).
    #[error("{message}")]
    Forbidden {
        code: &'static str,
        message: Cow<'static, str>,
    },
    /// 404: unknown resource, or one the caller may not know exists.
    #[error("{0}")]
    NotFound(Cow<'static, str>),
    /// 405 on a known path with another method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: a uniqueness rule or state conflict.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: Cow<'static, str>,
    },
    /// 413: a body over its limit.
    #[error("{0}")]
    PayloadTooLarge(Cow<'static, str>),
    /// 415: a body in a content type the endpoint does not accept.
    #[error("{0}")]
    UnsupportedMediaType(Cow<'static, str>),
    /// 408: a request body that stopped arriving, or arrived too slowly.
    #[error("{0}")]
    RequestTimeout(Cow<'static, str>),
    /// 507: no room to store an upload: the disk's free-space reserve
    /// (`insufficient_storage`) or the user's quota (`quota_exceeded`).
    #[error("{message}")]
    InsufficientStorage {
        code: &'static str,
        message: Cow<'static, str>,
    },
    /// 429 with a `Retry-After` of this many seconds.
    #[error("too many requests, retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// 503: the server cannot serve right now (database unusable, shutting down).
    #[error("{0}")]
    Unavailable(Cow<'static, str>),
    /// 503 with a `Retry-After` of this many seconds: too busy for this request
    /// right now (the password hashing queue is full).
    #[error("{message}")]
    Overloaded {
        message: Cow<'static, str>,
        retry_after_secs: u64,
    },
    /// 500: a bug or an I/O failure. The cause is logged, the user sees a generic text.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        AppError::BadRequest {
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_field(
        field: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        AppError::BadRequest {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn validation(
        field: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        AppError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        AppError::Unauthorized {
            code: "unauthorized",
            message: message.into(),
        }
    }

    pub fn invalid_token(message: impl Into<Cow<'static, str>>) -> Self {
        AppError::Unauthorized {
            code: "invalid_token",
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        AppError::Forbidden {
            code: "forbidden",
            message: message.into(),
        }
    }

    pub fn forbidden_code(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        AppError::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        AppError::NotFound(message.into())
    }

    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        AppError::Conflict {
            code: "conflict",
            message: message.into(),
        }
    }

    pub fn insufficient_storage(message: impl Into<Cow<'static, str>>) -> Self {
        AppError::InsufficientStorage {
            code: "insufficient_storage",
            message: message.into(),
        }
    }

    pub fn quota_exceeded(message: impl Into<Cow<'static, str>>) -> Self {
        AppError::InsufficientStorage {
            code: "quota_exceeded",
            message: message.into(),
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        AppError::Internal(cause.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest { .. } | AppError::Validation { .. } => StatusCode::BAD_REQUEST,
            AppError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_) | AppError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest { .. } => "bad_request",
            AppError::Validation { .. } => "validation_failed",
            AppError::Unauthorized { code, .. } => code,
            AppError::Forbidden { code, .. } => code,
            AppError::NotFound(_) => "not_found",
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::Conflict { code, .. } => code,
            AppError::PayloadTooLarge(_) => "payload_too_large",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::RequestTimeout(_) => "request_timeout",
            AppError::InsufficientStorage { code, .. } => code,
            AppError::RateLimited { .. } => "rate_limited",
            AppError::Unavailable(_) | AppError::Overloaded { .. } => "unavailable",
            AppError::Internal(_) => "internal",
        }
    }

    /// The text shown to the client: never the cause of an internal error.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Internal(_) => "internal server error".to_owned(),
            other => other.to_string(),
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            AppError::BadRequest { field, .. } => field.as_deref(),
            AppError::Validation { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The contract's error object: `{"code", "message", "field"?}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code(),
            "message": self.public_message(),
        });
        if let Some(field) = self.field() {
            error["field"] = serde_json::Value::from(field);
        }
        error
    }
}

impl From<DbError> for AppError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Busy | DbError::WriterGone => AppError::Unavailable(err.to_string().into()),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(err: rusqlite::Error) -> Self {
        AppError::from(DbError::from(err))
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// The single conversion of an error into the contract's HTTP response.
impl warp::Reply for AppError {
    fn into_response(self) -> warp::reply::Response {
        if let AppError::Internal(cause) = &self {
            tracing::error!(cause = %cause, "request failed");
        }
        let status = self.status();
        let body = serde_json::json!({ "error": self.to_json() });
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), status).into_response();
        match self {
            AppError::RateLimited { retry_after_secs }
            | AppError::Overloaded {
                retry_after_secs, ..
            } => {
                if let Ok(value) = warp::http::HeaderValue::from_str(&retry_after_secs.to_string())
                {
                    response
                        .headers_mut()
                        .insert(warp::http::header::RETRY_AFTER, value);
                }
            }
            // The rest of the body is not read: the connection cannot carry another
            // request, and a client that reused it would fail without a reason.
            AppError::PayloadTooLarge(_)
            | AppError::RequestTimeout(_)
            | AppError::InsufficientStorage { .. } => {
                response.headers_mut().insert(
                    warp::http::header::CONNECTION,
                    warp::http::HeaderValue::from_static("close"),
                );
            }
            _ => {}
        }
        response
    }
}

impl warp::reject::Reject for AppError {}
