//! Work inside a running sandbox: exec, files, processes, terminals and
//! port tunnels. A [`Guest`] is one caller's use of one running sandbox's
//! agent: every call goes through it, its failures come back as core
//! errors, and the domain events they cause (`sandbox.exec.*`,
//! `sandbox.file.written`) are emitted here, whoever the caller is (REST,
//! the preview proxy, a future API).

mod exec;
mod files;
mod processes;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use hearth_agent_client::{AgentClient, ByteStream, NdjsonStream};
use serde::de::DeserializeOwned;

pub use exec::Output;
pub use files::WriteMany;
/// A full-duplex byte pipe into the guest (a terminal, a tunnel to a port).
pub use hearth_agent_client::Duplex as Pipe;

use super::error::{Error, Result};
use super::keys::Caller;
use super::Core;
use crate::sandboxes::actor::SandboxHandle;

/// One running sandbox's agent, for one caller.
#[derive(Debug, Clone)]
pub struct Guest {
    core: Arc<Core>,
    handle: Arc<SandboxHandle>,
    agent: AgentClient,
    /// Vault secrets this call names (`secrets: ["NAME"]`), added to the
    /// env of what it starts, beside those bound to the sandbox.
    secrets: Vec<String>,
    /// The vault's answer for this call, read once (the command's env and
    /// the masking of its output and of its audit entry share it).
    vault: Arc<tokio::sync::OnceCell<crate::secrets::SecretEnv>>,
}

impl Core {
    /// The guest of a running sandbox of the caller's; `activity` resets
    /// the idle clock (reads do not, writes and commands do).
    pub async fn guest(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        activity: bool,
    ) -> Result<Guest> {
        let Some(h) = self.live(caller, id) else {
            let rec = self.get_sandbox(caller, id).await?;
            return Err(Error::not_running(id, rec.state));
        };
        let state = h.state();
        let agent = match (state.can_exec(), h.agent()) {
            (true, Some(a)) => a,
            _ => return Err(Error::not_running(id, state)),
        };
        if activity {
            self.touch(&h);
        }
        Ok(Guest {
            core: self.clone(),
            handle: h,
            agent,
            secrets: Vec::new(),
            vault: Default::default(),
        })
    }
}

impl Guest {
    /// This call also exposes the vault's secrets `names` (by name).
    pub fn with_secrets(mut self, names: Vec<String>) -> Guest {
        self.secrets = names;
        self.vault = Default::default();
        self
    }

    /// The vault's env for what this call starts, and its redactor: read
    /// from the store the first time this call needs it.
    async fn vault(&self) -> Result<crate::secrets::SecretEnv> {
        self.vault
            .get_or_try_init(|| {
                self.core
                    .secret_env(&self.handle.tenant_id, &self.handle.id, &self.secrets)
            })
            .await
            .cloned()
    }

    /// `command` as the audit log keeps it: masked with the values this
    /// call's vault exposes, truncated.
    pub async fn audit_command(&self, command: &str) -> Result<String> {
        let redactor = self.vault().await?.redactor;
        let masked =
            String::from_utf8_lossy(&redactor.redact(command.as_bytes().to_vec())).into_owned();
        Ok(crate::audit::truncate(&masked))
    }

    /// `env` with the vault's variables added (a secret wins over a
    /// variable of the same name), and the redactor of their values.
    async fn with_vault(
        &self,
        env: &mut std::collections::BTreeMap<String, String>,
    ) -> Result<crate::secrets::Redactor> {
        let v = self.vault().await?;
        env.extend(v.env);
        Ok(v.redactor)
    }

    pub fn sandbox_id(&self) -> &str {
        &self.handle.id
    }

    pub fn tenant_id(&self) -> &str {
        &self.handle.tenant_id
    }

    /// Counts as activity: resets the sandbox's idle clock.
    pub fn touch(&self) {
        self.core.touch(&self.handle);
    }

    /// A byte pipe to `port` inside the guest (`port_closed` when nothing
    /// listens there).
    pub async fn tunnel(&self, port: u16) -> Result<Pipe> {
        Ok(self.agent.tunnel(port).await?)
    }

    async fn emit(&self, kind: super::events::EventKind, data: serde_json::Value) {
        self.core
            .events
            .emit_logged(&self.handle.tenant_id, Some(&self.handle.id), kind, data)
            .await;
    }
}

/// Frames of type `T` the guest streams (file watch events), until it
/// ends the stream.
#[derive(Debug)]
pub struct Frames<T>(NdjsonStream<T>);

impl<T: DeserializeOwned> Frames<T> {
    /// The next frame, or `None` at the end.
    pub async fn next(&mut self) -> Option<Result<T>> {
        Some(self.0.next().await?.map_err(Error::from))
    }
}

/// Bytes read from the guest (a file, an archive), as they arrive.
#[derive(Debug)]
pub struct GuestBytes(ByteStream);

impl Stream for GuestBytes {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|o| o.map(|r| r.map_err(Error::from)))
    }
}
