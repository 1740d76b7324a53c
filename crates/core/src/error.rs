//! What a core operation fails with, in the control plane's own terms.
//!
//! Core never names an HTTP type: it says *what kind* of failure happened
//! ([`Kind`]), with the stable machine code and the message the caller may
//! see. `crate::error` maps a [`Kind`] to a status in one place (as
//! Firecracker maps `VmmActionError`), so a second API (E2B, gRPC) maps the
//! same errors its own way.

use serde::Serialize;

use crate::model::SandboxState;

/// One bad request field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's path in the request (`cpu_count`, `env.1BAD`,
    /// `rules[2].ports`).
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

/// The kinds of failure a caller can act on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The input is malformed as a whole.
    BadRequest,
    /// One or more fields are invalid ([`Error::details`] says which).
    Invalid,
    /// No usable credential.
    Unauthorized,
    /// The credential may not do this.
    Forbidden,
    /// The thing named does not exist (or belongs to another tenant).
    NotFound,
    /// The sandbox's lifecycle state does not allow the operation.
    InvalidState,
    /// The operation conflicts with something that exists or is in use.
    Conflict,
    /// The input is larger than allowed.
    TooLarge,
    /// The host (or guest) disk is full.
    NoSpace,
    /// The sandbox's guest did not answer, or its port is closed.
    Unreachable,
    /// The service cannot do it now (shutting down, at capacity); retry.
    Unavailable,
    /// A tenant quota would be exceeded ([`Error::quota`] says which).
    QuotaExceeded,
    /// Too many requests from one key; retry after [`Error::retry_after_sec`].
    RateLimited,
    /// Not built yet.
    NotImplemented,
    /// A failure the caller cannot act on; the cause is logged, never shown.
    Internal,
}

/// A failed core operation.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    /// Stable machine-readable code (API.md's `error.code`).
    pub code: &'static str,
    /// What the caller may read.
    pub message: String,
    pub details: Vec<FieldError>,
    /// What actually went wrong, for the log only.
    pub cause: Option<String>,
    /// With [`Kind::QuotaExceeded`]: the quota, its use and its limit.
    pub quota: Option<Box<QuotaInfo>>,
    /// With [`Kind::RateLimited`]: when a retry may succeed.
    pub retry_after_sec: Option<u64>,
}

/// Which quota a request would exceed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QuotaInfo {
    /// `sandboxes`, `vcpus`, `memory_mb`, `disk_mb`, `snapshots`,
    /// `previews`, `api_keys` or `concurrent_builds`.
    pub name: String,
    pub used: u64,
    pub limit: u64,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Error {
        Error {
            kind,
            code,
            message: message.into(),
            details: Vec::new(),
            cause: None,
            quota: None,
            retry_after_sec: None,
        }
    }

    /// Names the quota exceeded.
    pub fn with_quota(self, name: &str, used: u64, limit: u64) -> Error {
        Error {
            quota: Some(Box::new(QuotaInfo {
                name: name.to_string(),
                used,
                limit,
            })),
            ..self
        }
    }

    /// Too many requests: retry after `secs`.
    pub fn rate_limited(secs: u64) -> Error {
        Error {
            retry_after_sec: Some(secs),
            ..Error::new(
                Kind::RateLimited,
                "rate_limited",
                format!("too many requests with this key; retry in {secs} s"),
            )
        }
    }

    /// Keeps `cause` for the log.
    pub fn with_cause(self, cause: impl Into<String>) -> Error {
        Error {
            cause: Some(cause.into()),
            ..self
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Error {
        Error::new(Kind::Unauthorized, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(Kind::Forbidden, "forbidden", message)
    }
    pub fn not_found(what: &str) -> Error {
        Error::new(Kind::NotFound, "not_found", format!("{what} not found"))
    }
    pub fn sandbox_not_found(id: &str) -> Error {
        Error::new(
            Kind::NotFound,
            "sandbox_not_found",
            format!("sandbox {id} not found"),
        )
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Error {
        Error::new(Kind::Conflict, code, message)
    }
    pub fn not_running(id: &str, state: SandboxState) -> Error {
        Error::new(
            Kind::InvalidState,
            "sandbox_not_running",
            format!("sandbox {id} is {state}, not running"),
        )
    }
    pub fn invalid_state(id: &str, state: SandboxState, op: &str) -> Error {
        Error::new(
            Kind::InvalidState,
            "invalid_state",
            format!("cannot {op} sandbox {id} while it is {state}"),
        )
    }
    pub fn validation(details: Vec<FieldError>) -> Error {
        let message = match details.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} invalid fields", many.len()),
        };
        Error {
            details,
            ..Error::new(Kind::Invalid, "validation_error", message)
        }
    }
    pub fn field(field: &str, message: impl Into<String>) -> Error {
        Error::validation(vec![FieldError::new(field, message)])
    }
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(Kind::BadRequest, "bad_request", message)
    }
    pub fn too_large(limit: usize) -> Error {
        Error::new(
            Kind::TooLarge,
            "payload_too_large",
            format!("request body exceeds {limit} bytes"),
        )
    }
    pub fn not_implemented(what: &str) -> Error {
        Error::new(
            Kind::NotImplemented,
            "not_implemented",
            format!("{what} is not implemented yet"),
        )
    }
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(Kind::Unavailable, "unavailable", message)
    }

    /// A failure writing a snapshot: `NoSpace` (`insufficient_storage`)
    /// when the host disk is full (the client can free space or wait), else
    /// [`Error::internal`].
    pub fn from_snapshot_error(err: &(dyn std::error::Error + 'static), what: &str) -> Error {
        let full = chain_is_no_space(err);
        let chain = hearth_agent_protocol::error_chain(err);
        if full {
            return Error::new(
                Kind::NoSpace,
                "insufficient_storage",
                format!("the host disk is full: {what} failed and left nothing behind; the sandbox keeps running"),
            )
            .with_cause(chain);
        }
        Error::internal(anyhow::anyhow!(chain))
    }

    /// A failure the caller cannot act on: logged with its whole cause
    /// chain, reported as a bare "internal error".
    pub fn internal(err: impl Into<anyhow::Error>) -> Error {
        let err = err.into();
        Error::new(Kind::Internal, "internal", "internal error").with_cause(format!("{err:#}"))
    }
}

/// Whether the driver said the disk is full anywhere in `err`'s chain
/// (it decides that itself: [`hearth_vmm::VmmError::NoSpace`]).
fn chain_is_no_space(err: &(dyn std::error::Error + 'static)) -> bool {
    hearth_agent_protocol::causes(err).any(|e| {
        e.downcast_ref::<hearth_vmm::VmmError>()
            .is_some_and(hearth_vmm::VmmError::is_no_space)
    })
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Error {
        match e {
            crate::store::StoreError::Duplicate(what) => {
                Error::conflict("conflict", format!("{what} already exists"))
            }
            // SQLITE_FULL: the host disk is full; nothing was written.
            crate::store::StoreError::Query(sqlx::Error::Database(ref db))
                if db.code().as_deref() == Some("13") =>
            {
                let cause = hearth_agent_protocol::error_chain(&e);
                Error::new(
                    Kind::NoSpace,
                    "insufficient_storage",
                    "the host disk is full: the change was not recorded and nothing changed",
                )
                .with_cause(cause)
            }
            e => Error::internal(e),
        }
    }
}

/// An agent failure as the caller should see it: the agent's own 4xx
/// answers keep their meaning; a lost channel is a failure of the sandbox
/// (`Unreachable`), not of the request.
impl From<hearth_agent_client::AgentClientError> for Error {
    fn from(e: hearth_agent_client::AgentClientError) -> Error {
        use hearth_agent_client::AgentClientError as E;
        use hearth_agent_protocol::ErrorCode;
        match &e {
            E::Agent { status, error } => {
                let (kind, code) = match error.code {
                    ErrorCode::FileNotFound => (Kind::NotFound, "file_not_found"),
                    ErrorCode::ProcessNotFound | ErrorCode::PtyNotFound => {
                        (Kind::NotFound, "not_found")
                    }
                    ErrorCode::AlreadyExists | ErrorCode::DirectoryNotEmpty => {
                        (Kind::Conflict, "conflict")
                    }
                    ErrorCode::PermissionDenied => (Kind::Forbidden, "forbidden"),
                    ErrorCode::BadRequest
                    | ErrorCode::InvalidPath
                    | ErrorCode::InvalidSignal
                    | ErrorCode::IsADirectory
                    | ErrorCode::NotADirectory
                    | ErrorCode::UserNotFound => (Kind::Invalid, "validation_error"),
                    ErrorCode::PayloadTooLarge => (Kind::TooLarge, "payload_too_large"),
                    ErrorCode::PortClosed => (Kind::Unreachable, "port_closed"),
                    ErrorCode::NoSpace => (Kind::NoSpace, "no_space"),
                    ErrorCode::Unsupported => (Kind::NotImplemented, "not_implemented"),
                    ErrorCode::SpawnFailed | ErrorCode::Internal if *status < 500 => {
                        (Kind::BadRequest, "bad_request")
                    }
                    ErrorCode::SpawnFailed => (Kind::Invalid, "spawn_failed"),
                    ErrorCode::Internal => return Error::internal(e),
                };
                Error::new(kind, code, error.message.clone())
            }
            _ if e.is_connection() => Error::new(
                Kind::Unreachable,
                "sandbox_unreachable",
                "the sandbox's agent did not answer",
            )
            .with_cause(format!("{:#}", anyhow::Error::new(e))),
            _ => Error::internal(e),
        }
    }
}
