//! The one error type handlers return; it becomes a status plus an
//! [`AgentError`] body in exactly one place.

use std::io;
use std::path::Path;

use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_agent_protocol::paths::PathProblem;
use hearth_agent_protocol::{AgentError, ErrorCode};

/// A failed request: the code the host sees and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub code: ErrorCode,
    pub message: String,
}

impl HandlerError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HandlerError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// Maps an I/O failure on `path` to the code a client can act on.
    pub fn io(err: &io::Error, path: &Path) -> Self {
        Self::io_op(err, "", path)
    }

    /// Like [`HandlerError::io`], naming the operation that failed.
    pub fn io_op(err: &io::Error, op: &str, path: &Path) -> Self {
        let code = io_code(err);
        let what = match code {
            ErrorCode::FileNotFound => "no such file or directory".to_string(),
            ErrorCode::PermissionDenied => "permission denied".to_string(),
            ErrorCode::AlreadyExists => "already exists".to_string(),
            ErrorCode::IsADirectory => "is a directory".to_string(),
            ErrorCode::NotADirectory => "not a directory".to_string(),
            ErrorCode::DirectoryNotEmpty => "directory not empty".to_string(),
            ErrorCode::NoSpace => "no space left on device".to_string(),
            _ => err.to_string(),
        };
        let op = if op.is_empty() {
            String::new()
        } else {
            format!("{op} ")
        };
        HandlerError::new(code, format!("{op}{}: {what}", path.display()))
    }

    pub fn to_wire(&self) -> AgentError {
        AgentError {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// The error code for an I/O error.
pub fn io_code(err: &io::Error) -> ErrorCode {
    use io::ErrorKind as K;
    match err.kind() {
        K::NotFound => ErrorCode::FileNotFound,
        K::PermissionDenied => ErrorCode::PermissionDenied,
        K::AlreadyExists => ErrorCode::AlreadyExists,
        K::IsADirectory => ErrorCode::IsADirectory,
        K::NotADirectory => ErrorCode::NotADirectory,
        K::DirectoryNotEmpty => ErrorCode::DirectoryNotEmpty,
        K::StorageFull => ErrorCode::NoSpace,
        K::InvalidInput | K::InvalidFilename => ErrorCode::InvalidPath,
        _ => match err.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENAMETOOLONG) => ErrorCode::InvalidPath,
            Some(libc::EXDEV) => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        },
    }
}

impl From<PathProblem> for HandlerError {
    fn from(p: PathProblem) -> Self {
        HandlerError::new(ErrorCode::InvalidPath, p.to_string())
    }
}

impl IntoResponse for HandlerError {
    fn into_response(self) -> Response {
        let status = http::StatusCode::from_u16(self.code.http_status())
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(code = ?self.code, message = %self.message, "request failed");
        } else {
            tracing::debug!(code = ?self.code, message = %self.message, "request rejected");
        }
        (status, Json(self.to_wire())).into_response()
    }
}

pub type HandlerResult<T> = Result<T, HandlerError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_maps_to_not_found_with_path() {
        let err = io::Error::from(io::ErrorKind::NotFound);
        let h = HandlerError::io(&err, Path::new("/nope"));
        assert_eq!(h.code, ErrorCode::FileNotFound);
        assert_eq!(h.message, "/nope: no such file or directory");
        assert_eq!(h.code.http_status(), 404);
    }

    #[test]
    fn full_disk_maps_to_no_space() {
        let err = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(io_code(&err), ErrorCode::NoSpace);
    }
}
