//! Lifecycle, exec and process calls.

use hearth_agent_protocol::{
    routes, ExecRequest, ExecResult, HealthResponse, InitRequest, InitResponse, KillRequest,
    OutputEvent, ProcessInfo, ProcessLogs, ShutdownRequest, SignalRequest, StartProcessRequest,
    StdinRequest, SyncResponse,
};
use http::Method;

use crate::{AgentClient, ClientResult, NdjsonStream};

impl AgentClient {
    pub async fn health(&self) -> ClientResult<HealthResponse> {
        self.call::<(), _>(Method::GET, routes::HEALTH, None).await
    }

    pub async fn init(&self, req: &InitRequest) -> ClientResult<InitResponse> {
        self.call(Method::POST, routes::INIT, Some(req)).await
    }

    /// Flushes guest filesystems (before a snapshot).
    pub async fn sync(&self) -> ClientResult<SyncResponse> {
        self.call::<(), _>(Method::POST, routes::SYNC, None).await
    }

    pub async fn shutdown(&self, req: &ShutdownRequest) -> ClientResult<()> {
        self.call::<_, serde_json::Value>(Method::POST, routes::SHUTDOWN, Some(req))
            .await
            .map(|_| ())
    }

    /// Runs a command to completion.
    pub async fn exec(&self, req: &ExecRequest) -> ClientResult<ExecResult> {
        self.call(Method::POST, routes::EXEC, Some(req)).await
    }

    /// Runs a command, streaming output frames and a final exit frame.
    /// Dropping the stream kills the command's process group.
    pub async fn exec_stream(&self, req: &ExecRequest) -> ClientResult<NdjsonStream<OutputEvent>> {
        self.stream(Method::POST, routes::EXEC_STREAM, Some(req))
            .await
    }

    pub async fn process_start(&self, req: &StartProcessRequest) -> ClientResult<ProcessInfo> {
        self.call(Method::POST, routes::PROCESSES, Some(req)).await
    }

    pub async fn process_list(&self) -> ClientResult<Vec<ProcessInfo>> {
        self.call::<(), _>(Method::GET, routes::PROCESSES, None)
            .await
    }

    pub async fn process_get(&self, pid: u32) -> ClientResult<ProcessInfo> {
        self.call::<(), _>(Method::GET, &format!("{}/{pid}", routes::PROCESSES), None)
            .await
    }

    /// Sends a signal (`"SIGINT"`, `"TERM"`, `"9"`) to the process group.
    pub async fn process_signal(&self, pid: u32, signal: &str) -> ClientResult<ProcessInfo> {
        let req = SignalRequest {
            signal: signal.to_string(),
        };
        self.call(
            Method::POST,
            &format!("{}/{pid}/signal", routes::PROCESSES),
            Some(&req),
        )
        .await
    }

    pub async fn process_stdin(&self, pid: u32, req: &StdinRequest) -> ClientResult<ProcessInfo> {
        self.call(
            Method::POST,
            &format!("{}/{pid}/stdin", routes::PROCESSES),
            Some(req),
        )
        .await
    }

    /// SIGTERM, then SIGKILL after the grace period; answers once it exited.
    pub async fn process_kill(&self, pid: u32, req: &KillRequest) -> ClientResult<ProcessInfo> {
        self.call(
            Method::DELETE,
            &format!("{}/{pid}", routes::PROCESSES),
            Some(req),
        )
        .await
    }

    pub async fn process_logs(&self, pid: u32) -> ClientResult<ProcessLogs> {
        self.call::<(), _>(
            Method::GET,
            &format!("{}/{pid}/logs", routes::PROCESSES),
            None,
        )
        .await
    }

    /// Replays buffered output from `from_seq` (0: all still buffered), then
    /// follows until the process exits.
    pub async fn process_stream(
        &self,
        pid: u32,
        from_seq: Option<u64>,
    ) -> ClientResult<NdjsonStream<OutputEvent>> {
        let mut uri = format!("{}/{pid}/stream", routes::PROCESSES);
        if let Some(s) = from_seq {
            uri.push_str(&format!("?from_seq={s}"));
        }
        self.stream::<(), _>(Method::GET, &uri, None).await
    }
}
