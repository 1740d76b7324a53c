//! Wire contract between the Hearth host and `hearth-agent` inside a guest.
//!
//! Transport: HTTP/2 without TLS (prior knowledge) over one byte stream, after
//! the line handshake in [`handshake`]. Unary calls are JSON in, JSON out.
//! Streams (exec output, process output, file watch) are newline-delimited JSON
//! frames in the response body. Byte tunnels (PTY, TCP) are full-duplex
//! request/response bodies of raw bytes. Every failure is an HTTP status plus an
//! [`AgentError`] body.
//!
//! Changing any type here changes the wire: bump [`PROTOCOL_VERSION`] and
//! regenerate `schema.json` (`UPDATE_SCHEMA=1 cargo test -p hearth-agent-protocol`).

pub mod b64;
pub mod chain;
pub mod handshake;
pub mod paths;
pub mod schema;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use b64::Base64Bytes;
pub use chain::{causes, error_chain};

/// Version of the wire contract; the host refuses an agent outside
/// [`MIN_AGENT_PROTOCOL_VERSION`]`..=PROTOCOL_VERSION`.
pub const PROTOCOL_VERSION: u32 = 3;

/// The oldest agent the host still speaks to. Versions 2 and 3 only added
/// optional fields (`PtyInfo::exit_code`; `InitRequest::keep_env`, which an
/// older agent ignores: a restore then replaces the env it holds), so a
/// version-1 agent (in a VM that was running, paused, snapshotted or built
/// into a template before an upgrade) still works; raise this when a
/// change is not additive.
pub const MIN_AGENT_PROTOCOL_VERSION: u32 = 1;

/// Default cap on output kept per exec call, per stream.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 16 * 1024 * 1024;

/// Default grace period between SIGTERM and SIGKILL when killing a process.
pub const DEFAULT_KILL_GRACE_MS: u64 = 5_000;

/// Name of the virtio-serial port the agent serves in a VM.
pub const VIRTIO_PORT_NAME: &str = "hearth.agent";

/// Default vsock port the agent listens on (Firecracker).
pub const DEFAULT_VSOCK_PORT: u32 = 1024;

/// Request paths. Kept in one place so the client and the agent cannot drift.
pub mod routes {
    pub const HEALTH: &str = "/v1/health";
    pub const INIT: &str = "/v1/init";
    pub const SYNC: &str = "/v1/sync";
    pub const SHUTDOWN: &str = "/v1/shutdown";
    pub const EXEC: &str = "/v1/exec";
    pub const EXEC_STREAM: &str = "/v1/exec/stream";
    pub const PROCESSES: &str = "/v1/processes";
    pub const PTY: &str = "/v1/pty";
    pub const TUNNEL: &str = "/v1/tunnel";
    pub const FILES_READ: &str = "/v1/files/read";
    pub const FILES_WRITE: &str = "/v1/files/write";
    pub const FILES_RAW: &str = "/v1/files/raw";
    pub const FILES_LIST: &str = "/v1/files/list";
    pub const FILES_STAT: &str = "/v1/files/stat";
    pub const FILES_MKDIR: &str = "/v1/files/mkdir";
    pub const FILES_REMOVE: &str = "/v1/files/remove";
    pub const FILES_RENAME: &str = "/v1/files/rename";
    pub const FILES_TREE: &str = "/v1/files/tree";
    pub const FILES_WRITE_MANY: &str = "/v1/files/write-many";
    pub const FILES_ARCHIVE: &str = "/v1/files/archive";
    pub const FILES_WATCH: &str = "/v1/files/watch";
}

// ---------------------------------------------------------------- errors

/// Machine-readable error class. The HTTP status follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    InvalidPath,
    FileNotFound,
    AlreadyExists,
    IsADirectory,
    NotADirectory,
    DirectoryNotEmpty,
    PermissionDenied,
    ProcessNotFound,
    PtyNotFound,
    InvalidSignal,
    UserNotFound,
    SpawnFailed,
    PortClosed,
    PayloadTooLarge,
    NoSpace,
    Unsupported,
    Internal,
}

impl ErrorCode {
    /// HTTP status the agent answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::InvalidPath
            | ErrorCode::InvalidSignal
            | ErrorCode::IsADirectory
            | ErrorCode::NotADirectory
            | ErrorCode::UserNotFound => 400,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::FileNotFound | ErrorCode::ProcessNotFound | ErrorCode::PtyNotFound => 404,
            ErrorCode::AlreadyExists | ErrorCode::DirectoryNotEmpty => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Unsupported => 501,
            ErrorCode::PortClosed => 502,
            ErrorCode::NoSpace => 507,
            ErrorCode::SpawnFailed | ErrorCode::Internal => 500,
        }
    }
}

/// Body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentError {
    pub code: ErrorCode,
    pub message: String,
}

// ---------------------------------------------------------------- lifecycle

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HealthResponse {
    pub protocol_version: u32,
    pub agent_version: String,
    pub uptime_ms: u64,
    /// True when the agent runs as PID 1 (inside a VM).
    pub pid1: bool,
    /// Set by the last `init`.
    pub sandbox_id: Option<String>,
}

/// Identity handed to a guest at boot and after every restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InitRequest {
    pub sandbox_id: String,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Env applied to every later exec, process and PTY (request env wins).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names whose current value is kept when `env` does not carry them
    /// (secrets the host does not store: a restore after a host restart).
    #[serde(default)]
    pub keep_env: Vec<String>,
    /// Host wall clock, milliseconds since the Unix epoch.
    #[serde(default)]
    pub clock_unix_ms: Option<i64>,
    /// Bytes to mix into (and credit to) the kernel entropy pool.
    #[serde(default)]
    pub entropy: Option<Base64Bytes>,
}

/// What `init` changed. System-wide effects (clock, hostname, credited
/// entropy) only happen when the agent manages the system (PID 1 or
/// `--manage-system`); a host-process agent reports them as not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InitResponse {
    pub hostname_set: bool,
    pub clock_set: bool,
    pub entropy_added: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SyncResponse {
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShutdownRequest {
    /// Reboot instead of powering off (PID 1 only).
    #[serde(default)]
    pub reboot: bool,
}

// ---------------------------------------------------------------- exec

/// Who a command runs as. Absent: `sandbox` when that user exists, else the
/// agent's own user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExecRequest {
    pub command: String,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stdin: Option<Base64Bytes>,
    /// Kill the whole process group after this long. Absent: no limit.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Cap on output kept per stream (unary exec). Default 16 MiB.
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExecResult {
    pub stdout: Base64Bytes,
    pub stderr: Base64Bytes,
    /// Exit status; `-1` when killed by timeout, `128 + n` when killed by signal n.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    pub timed_out: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// One frame of an exec or process output stream (NDJSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputEvent {
    /// Output bytes, in the order the agent read them. `seq` counts chunks
    /// across both streams from 0 and never repeats.
    Output {
        seq: u64,
        stream: StreamKind,
        data: Base64Bytes,
    },
    /// Bytes dropped from a process ring buffer before a replay started.
    Dropped { bytes: u64 },
    /// The process ended; always the last frame.
    Exit {
        exit_code: i32,
        signal: Option<i32>,
        timed_out: bool,
        duration_ms: u64,
    },
}

// ---------------------------------------------------------------- processes

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StartProcessRequest {
    pub command: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    Running,
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessInfo {
    pub pid: u32,
    pub name: Option<String>,
    pub command: String,
    pub state: ProcessState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub started_at_ms: i64,
    pub exited_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SignalRequest {
    /// `SIGINT`, `INT` or a number.
    pub signal: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StdinRequest {
    #[serde(default)]
    pub data: Option<Base64Bytes>,
    /// Close stdin after writing `data`.
    #[serde(default)]
    pub eof: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KillRequest {
    /// Wait this long after SIGTERM before SIGKILL. Default 5000.
    #[serde(default)]
    pub grace_ms: Option<u64>,
}

/// Buffered output of a background process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessLogs {
    pub stdout: Base64Bytes,
    pub stderr: Base64Bytes,
    /// Bytes that fell out of the ring buffer.
    pub dropped_bytes: u64,
}

/// Query of a process output stream: replay buffered chunks with
/// `seq >= from_seq` (default 0 = everything still buffered), then follow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessStreamQuery {
    #[serde(default)]
    pub from_seq: Option<u64>,
}

// ---------------------------------------------------------------- pty

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PtyOpenRequest {
    pub cols: u16,
    pub rows: u16,
    /// Default `/bin/bash` when present, else `/bin/sh`.
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PtyInfo {
    pub id: String,
    pub pid: u32,
    pub cols: u16,
    pub rows: u16,
    pub exited: bool,
    /// The shell's exit code (`128 + signal` when a signal killed it), once
    /// it has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PtyResizeRequest {
    pub cols: u16,
    pub rows: u16,
}

// ---------------------------------------------------------------- tunnel

/// Query of `POST /v1/tunnel`: the guest port on 127.0.0.1 to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TunnelQuery {
    pub port: u16,
}

// ---------------------------------------------------------------- files

/// Query naming one path. In query strings a path may carry percent-encoded
/// non-UTF-8 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PathQuery {
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListQuery {
    pub path: String,
    /// 1 = direct children only. Max 10.
    #[serde(default)]
    pub depth: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RawWriteQuery {
    pub path: String,
    /// Octal permission bits, e.g. `"644"` or `"0755"`.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WriteFileRequest {
    pub path: String,
    pub content: Base64Bytes,
    /// Permission bits (e.g. 0o644). Default 0644, or the replaced file's mode.
    #[serde(default)]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WriteResult {
    pub path: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    /// Set when the name is not valid UTF-8: `name`/`path` are lossy then,
    /// and this carries the exact bytes of the path.
    pub raw_path: Option<Base64Bytes>,
    #[serde(rename = "type")]
    pub file_type: FileType,
    pub size: u64,
    /// Permission bits, e.g. 0o644.
    pub mode: u32,
    pub modified_at_ms: i64,
    /// Target of a symlink.
    pub symlink_target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListResponse {
    pub path: String,
    pub entries: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TreeNode {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub file_type: FileType,
    pub size: u64,
    /// Present for directories within the depth limit.
    pub children: Option<Vec<TreeNode>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MkdirRequest {
    pub path: String,
    #[serde(default)]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RemoveRequest {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RenameRequest {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WriteManyRequest {
    pub files: Vec<WriteFileRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WriteFailure {
    pub path: String,
    pub error: AgentError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WriteManyResponse {
    pub written: Vec<WriteResult>,
    pub failed: Vec<WriteFailure>,
}

/// Body of `POST /v1/files/archive`; the answer is a tar.gz stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArchiveRequest {
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WatchQuery {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WatchEventKind {
    Created,
    Modified,
    Deleted,
    Renamed,
}

/// One frame of a watch stream (NDJSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WatchEvent {
    pub event: WatchEventKind,
    pub path: String,
    pub is_dir: bool,
    /// For `renamed`: where it was before.
    pub old_path: Option<String>,
}

/// Every type that crosses the wire, for the schema snapshot.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct WireSchema {
    agent_error: AgentError,
    health: HealthResponse,
    init_request: InitRequest,
    init_response: InitResponse,
    sync_response: SyncResponse,
    shutdown_request: ShutdownRequest,
    exec_request: ExecRequest,
    exec_result: ExecResult,
    output_event: OutputEvent,
    start_process: StartProcessRequest,
    process_info: ProcessInfo,
    signal_request: SignalRequest,
    stdin_request: StdinRequest,
    kill_request: KillRequest,
    process_logs: ProcessLogs,
    process_stream_query: ProcessStreamQuery,
    pty_open: PtyOpenRequest,
    pty_info: PtyInfo,
    pty_resize: PtyResizeRequest,
    tunnel_query: TunnelQuery,
    path_query: PathQuery,
    list_query: ListQuery,
    raw_write_query: RawWriteQuery,
    write_file: WriteFileRequest,
    write_result: WriteResult,
    list_response: ListResponse,
    tree_node: TreeNode,
    file_entry: FileEntry,
    mkdir: MkdirRequest,
    remove: RemoveRequest,
    rename: RenameRequest,
    write_many: WriteManyRequest,
    write_many_response: WriteManyResponse,
    archive: ArchiveRequest,
    watch_query: WatchQuery,
    watch_event: WatchEvent,
    hello: handshake::Hello,
}
