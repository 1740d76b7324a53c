//! The one place domain failures become wire errors: [`ApiError`] and its
//! `IntoResponse`, which writes API.md's envelope
//! `{"error": {"code", "message", "request_id", "details"?}}`. A 500 says
//! "internal error" and nothing more; the cause goes to the log under the
//! request id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::SandboxState;

/// One bad request field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A failure as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
    /// For 500s: what actually went wrong (logged, never sent).
    pub internal: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            internal: None,
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
    /// A failure writing a snapshot: 507 `insufficient_storage` when the
    /// host disk is full (the client can free space or wait), else
    /// [`ApiError::internal`].
    pub fn from_snapshot_error(err: &(dyn std::error::Error + 'static), what: &str) -> ApiError {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        let mut full = false;
        let mut chain = String::new();
        while let Some(e) = cur {
            full |= e
                .downcast_ref::<hearth_vmm::VmmError>()
                .is_some_and(hearth_vmm::VmmError::is_no_space);
            if !chain.is_empty() {
                chain.push_str(": ");
            }
            chain.push_str(&e.to_string());
            cur = e.source();
        }
        if full {
            return ApiError {
                internal: Some(chain),
                ..ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "insufficient_storage",
                    format!("the host disk is full: {what} failed and left nothing behind; the sandbox keeps running"),
                )
            };
        }
        ApiError::internal(anyhow::anyhow!(chain))
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

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        match e {
            crate::store::StoreError::Duplicate(what) => {
                ApiError::conflict("conflict", format!("{what} already exists"))
            }
            e => ApiError::internal(e),
        }
    }
}

/// Maps an agent failure to what the client should see: the agent's own
/// 4xx answers keep their meaning; a lost channel is a 502-class failure of
/// the sandbox, not of the request.
impl From<hearth_agent_client::AgentClientError> for ApiError {
    fn from(e: hearth_agent_client::AgentClientError) -> ApiError {
        use hearth_agent_client::AgentClientError as E;
        use hearth_agent_protocol::ErrorCode;
        match &e {
            E::Agent { status, error } => {
                let (status, code) = match error.code {
                    ErrorCode::FileNotFound => (StatusCode::NOT_FOUND, "file_not_found"),
                    ErrorCode::ProcessNotFound | ErrorCode::PtyNotFound => {
                        (StatusCode::NOT_FOUND, "not_found")
                    }
                    ErrorCode::AlreadyExists | ErrorCode::DirectoryNotEmpty => {
                        (StatusCode::CONFLICT, "conflict")
                    }
                    ErrorCode::PermissionDenied => (StatusCode::FORBIDDEN, "forbidden"),
                    ErrorCode::BadRequest
                    | ErrorCode::InvalidPath
                    | ErrorCode::InvalidSignal
                    | ErrorCode::IsADirectory
                    | ErrorCode::NotADirectory
                    | ErrorCode::UserNotFound => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "validation_error")
                    }
                    ErrorCode::PayloadTooLarge => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
                    }
                    ErrorCode::PortClosed => (StatusCode::BAD_GATEWAY, "port_closed"),
                    ErrorCode::NoSpace => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
                    ErrorCode::Unsupported => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
                    ErrorCode::SpawnFailed | ErrorCode::Internal if *status < 500 => {
                        (StatusCode::BAD_REQUEST, "bad_request")
                    }
                    ErrorCode::SpawnFailed => (StatusCode::UNPROCESSABLE_ENTITY, "spawn_failed"),
                    ErrorCode::Internal => return ApiError::internal(e),
                };
                ApiError::new(status, code, error.message.clone())
            }
            _ if e.is_connection() => ApiError {
                internal: Some(format!("{:#}", anyhow::Error::new(e))),
                ..ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "sandbox_unreachable",
                    "the sandbox's agent did not answer",
                )
            },
            _ => ApiError::internal(e),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    details: &'a [FieldError],
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
                details: &self.details,
            },
        };
        (self.status, axum::Json(body)).into_response()
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
        let e = ApiError::from_snapshot_error(&full, "the snapshot");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        );
        // Any other failure, whatever its text, is an internal error.
        let other = hearth_vmm::VmmError::Snapshot {
            id: "sbx_1".into(),
            source: "No space left on device".into(),
        };
        let e = ApiError::from_snapshot_error(&other, "the snapshot");
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
