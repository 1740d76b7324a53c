//! Background processes and terminals (PTYs) in the guest.

use hearth_agent_protocol::{
    KillRequest, ProcessInfo, ProcessLogs, PtyInfo, PtyOpenRequest, StartProcessRequest,
    StdinRequest,
};

use super::{Guest, Pipe};
use crate::error::Result;

impl Guest {
    /// Starts a process with the vault's secrets in its env.
    pub async fn process_start(&self, req: &StartProcessRequest) -> Result<ProcessInfo> {
        let mut req = req.clone();
        self.with_vault(&mut req.env).await?;
        Ok(self.agent.process_start(&req).await?)
    }

    pub async fn process_list(&self) -> Result<Vec<ProcessInfo>> {
        Ok(self.agent.process_list().await?)
    }

    pub async fn process_get(&self, pid: u32) -> Result<ProcessInfo> {
        Ok(self.agent.process_get(pid).await?)
    }

    pub async fn process_kill(&self, pid: u32, grace_ms: u64) -> Result<ProcessInfo> {
        let req = KillRequest {
            grace_ms: Some(grace_ms),
        };
        Ok(self.agent.process_kill(pid, &req).await?)
    }

    pub async fn process_signal(&self, pid: u32, signal: &str) -> Result<ProcessInfo> {
        Ok(self.agent.process_signal(pid, signal).await?)
    }

    pub async fn process_stdin(&self, pid: u32, req: &StdinRequest) -> Result<ProcessInfo> {
        Ok(self.agent.process_stdin(pid, req).await?)
    }

    /// A process's buffered output, the sandbox's bound secrets masked.
    pub async fn process_logs(&self, pid: u32) -> Result<ProcessLogs> {
        let mut logs = self.agent.process_logs(pid).await?;
        let redactor = self.vault().await?.redactor;
        if !redactor.is_empty() {
            logs.stdout.0 = redactor.redact(std::mem::take(&mut logs.stdout.0));
            logs.stderr.0 = redactor.redact(std::mem::take(&mut logs.stderr.0));
        }
        Ok(logs)
    }

    /// Opens a terminal whose shell has the vault's secrets in its env
    /// (its output, interactive, is not masked).
    pub async fn terminal_open(&self, req: &PtyOpenRequest) -> Result<PtyInfo> {
        let mut req = req.clone();
        self.with_vault(&mut req.env).await?;
        Ok(self.agent.pty_open(&req).await?)
    }

    pub async fn terminal_list(&self) -> Result<Vec<PtyInfo>> {
        Ok(self.agent.pty_list().await?)
    }

    pub async fn terminal_get(&self, id: &str) -> Result<PtyInfo> {
        Ok(self.agent.pty_get(id).await?)
    }

    pub async fn terminal_resize(&self, id: &str, cols: u16, rows: u16) -> Result<()> {
        Ok(self.agent.pty_resize(id, cols, rows).await?)
    }

    pub async fn terminal_close(&self, id: &str) -> Result<()> {
        Ok(self.agent.pty_close(id).await?)
    }

    /// The terminal's input and output as one pipe.
    pub async fn terminal_attach(&self, id: &str) -> Result<Pipe> {
        Ok(self.agent.pty_attach(id).await?)
    }
}
