//! The one place domain failures become wire errors: [`ApiError`] and its
//! `IntoResponse`, which writes API.md's envelope
//! `{"error": {"code", "message", "request_id", "details"?}}`. A 500 says
//! "internal error" and nothing more; the cause goes to the log under the
//! request id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::SandboxState;

pub use crate::core::error::FieldError;
use crate::core::error::{Error, Kind, QuotaInfo};

/// A failure as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
    /// For 500s: what actually went wrong (logged, never sent).
    pub internal: Option<String>,
    /// With `quota_exceeded`: the quota, its use and its limit.
    pub quota: Option<Box<QuotaInfo>>,
    /// With `rate_limited`: the `Retry-After` header, in seconds.
    pub retry_after_sec: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            internal: None,
            quota: None,
            retry_after_sec: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn sandbox_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "sandbox_not_found",
            format!("sandbox {id} not found"),
        )
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }
    pub fn not_running(id: &str, state: SandboxState) -> ApiError {
        ApiError::conflict(
            "sandbox_not_running",
            format!("sandbox {id} is {state}, not running"),
        )
    }
    pub fn invalid_state(id: &str, state: SandboxState, op: &str) -> ApiError {
        ApiError::conflict(
            "invalid_state",
            format!("cannot {op} sandbox {id} while it is {state}"),
        )
    }
    pub fn validation(details: Vec<FieldError>) -> ApiError {
        let message = match details.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} invalid fields", many.len()),
        };
        ApiError {
            details,
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_error",
                message,
            )
        }
    }
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::validation(vec![FieldError::new(field, message)])
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds {limit} bytes"),
        )
    }
    pub fn not_implemented(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            format!("{what} is not implemented yet"),
        )
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    /// A failure the client cannot act on: logged with its whole cause
    /// chain, answered as a bare "internal error".
    pub fn internal(err: impl Into<anyhow::Error>) -> ApiError {
        let err = err.into();
        ApiError {
            internal: Some(format!("{err:#}")),
            ..ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// The one mapping from a core failure to HTTP.
pub fn status_of(kind: Kind) -> StatusCode {
    match kind {
        Kind::BadRequest => StatusCode::BAD_REQUEST,
        Kind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        Kind::Unauthorized => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::InvalidState | Kind::Conflict => StatusCode::CONFLICT,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        Kind::Unreachable => StatusCode::BAD_GATEWAY,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        Kind::QuotaExceeded | Kind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError {
            status: status_of(e.kind),
            code: e.code,
            message: e.message,
            details: e.details,
            internal: e.cause,
            quota: e.quota,
            retry_after_sec: e.retry_after_sec,
        }
    }
}

/// The error envelope of API.md, every failure's answer.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub(crate) struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
struct Body<'a> {
    /// Lower snake case: `unauthorized`, `forbidden`, `not_found`,
    /// `sandbox_not_found`, `conflict`, `sandbox_not_running`,
    /// `invalid_state`, `validation_error`, `payload_too_large`,
    /// `rate_limited`, `internal`, ...
    code: &'a str,
    message: &'a str,
    /// `req_...`, also in the `X-Request-Id` header.
    request_id: &'a str,
    /// With `validation_error`: each bad field (a list). With
    /// `quota_exceeded`: `{quota, limit, used}` (an object).
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
    /// With `quota_exceeded`: which quota, its use and its limit (as
    /// `details`, named `name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<&'a QuotaInfo>,
}

/// What `details` holds, by error.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum Details<'a> {
    Fields(&'a [FieldError]),
    Quota {
        quota: &'a str,
        limit: u64,
        used: u64,
    },
}

impl<'a> Details<'a> {
    fn of(fields: &'a [FieldError], quota: Option<&'a QuotaInfo>) -> Option<Details<'a>> {
        match quota {
            Some(q) => Some(Details::Quota {
                quota: &q.name,
                limit: q.limit,
                used: q.used,
            }),
            None if fields.is_empty() => None,
            None => Some(Details::Fields(fields)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = crate::routes::request_id::current();
        if let Some(cause) = &self.internal {
            tracing::error!(request_id = %request_id, code = self.code, error = %cause, "request failed");
        } else if self.status.is_server_error() {
            tracing::warn!(request_id = %request_id, code = self.code, message = %self.message, "request failed");
        }
        let body = Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
                request_id: &request_id,
                details: Details::of(&self.details, self.quota.as_deref()),
                quota: self.quota.as_deref(),
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_sec {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let err = ApiError::internal(anyhow::anyhow!("disk /secret/path exploded"));
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["code"], "internal");
        assert_eq!(v["error"]["message"], "internal error");
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
    }

    #[test]
    fn a_snapshot_on_a_full_disk_is_507_by_the_drivers_typed_error() {
        let full = hearth_vmm::VmmError::NoSpace {
            id: "sbx_1".into(),
            op: "snapshot",
            source: Box::new(std::io::Error::from_raw_os_error(28)),
        };
        let e = ApiError::from(crate::core::error::Error::from_snapshot_error(
            &full,
            "the snapshot",
        ));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        );
        // Any other failure, whatever its text, is an internal error.
        let other = hearth_vmm::VmmError::Snapshot {
            id: "sbx_1".into(),
            source: "No space left on device".into(),
        };
        let e = ApiError::from(crate::core::error::Error::from_snapshot_error(
            &other,
            "the snapshot",
        ));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn validation_lists_every_field() {
        let err = ApiError::validation(vec![
            FieldError::new("cpu_count", "must be 1-8"),
            FieldError::new("memory_mb", "must be 128-8192"),
        ]);
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["code"], "validation_error");
        assert_eq!(v["error"]["details"][1]["field"], "memory_mb");
    }
}
