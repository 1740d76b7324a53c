//! The real `hearth-agent` binary as a host process on a Unix socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hearth_agent_client::{AgentClient, Connector};

/// A running agent in its own temp directory; killed on drop.
#[derive(Debug)]
pub struct AgentProcess {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    binary: PathBuf,
    wrapper: Vec<String>,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl AgentProcess {
    /// Starts `binary` (pass `env!("CARGO_BIN_EXE_hearth-agent")`) with
    /// `extra_args` and waits until its socket answers.
    pub async fn start(binary: &Path, extra_args: &[&str]) -> anyhow::Result<AgentProcess> {
        Self::start_wrapped(&[], binary, extra_args).await
    }

    /// Like [`AgentProcess::start`], run under `wrapper` (e.g. `unshare
    /// --pid --fork` to make the agent PID 1 of a new namespace).
    pub async fn start_wrapped(
        wrapper: &[&str],
        binary: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<AgentProcess> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("agent.sock");
        let mut p = AgentProcess {
            dir,
            socket,
            binary: binary.to_path_buf(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        p.spawn().await?;
        Ok(p)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        let child = cmd
            .arg("--listen")
            .arg(format!("unix:{}", self.socket.display()))
            .arg("--default-cwd")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .env(
                "HEARTH_AGENT_LOG",
                std::env::var("HEARTH_AGENT_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let socket = self.socket.clone();
        crate::wait_until(Duration::from_secs(10), "agent socket", || {
            let s = socket.clone();
            async move { std::os::unix::net::UnixStream::connect(&s).ok().map(|_| ()) }
        })
        .await
    }

    /// A fresh client for this agent.
    pub fn client(&self) -> AgentClient {
        AgentClient::new(Connector::Unix(self.socket.clone()))
    }

    /// The agent's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the agent (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts the agent again on the same socket.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// Waits for the agent to exit by itself and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("agent not running"))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait()? {
                self.child = None;
                return Ok(s);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("agent still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A path inside the fixture's temp directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
