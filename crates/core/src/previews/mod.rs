//! Previews: a sandbox port served at `<slug>.preview.<domain>` by the
//! preview proxy (`crate::proxy`), public or private, and the share tokens
//! that open private ones (shown once, stored as SHA-256, revocable). The
//! slug is random, so preview URLs cannot be guessed from sandbox ids.
//! Share tokens are in `tokens.rs`.

mod tokens;

pub use tokens::{NewToken, TokenCheck, SHARE_TOKENS_LISTED, SHARE_TTL_DEFAULT, SHARE_TTL_MAX};

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::ids::{new_id, new_slug};
use super::keys::Caller;
use super::Core;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::model::{PreviewRecord, Visibility};
use crate::store::StoreError;

/// How long after a preview's creation the proxy watches for its port to
/// start listening (for `sandbox.preview.ready`).
const READY_WATCH: Duration = Duration::from_secs(30 * 60);

/// What the preview service keeps in memory.
#[derive(Debug, Default)]
pub struct PreviewState {
    /// The port the proxy listens on, once it does.
    port: std::sync::OnceLock<u16>,
}

impl Core {
    /// The preview whose host name starts with `slug` (any case), for the
    /// proxy: no caller, the slug is the capability.
    pub async fn preview_by_slug(&self, slug: &str) -> Result<Option<PreviewRecord>> {
        Ok(self
            .store
            .preview_by_slug(&slug.to_ascii_lowercase())
            .await?)
    }

    /// The URL the proxy serves `slug` at.
    pub fn preview_url(&self, slug: &str) -> String {
        self.proxied_url("preview", slug)
    }

    /// `<scheme>://<slug>.<kind>.<domain>[:port]`: a URL the proxy serves
    /// (`preview` for previews, `apps` for deployments).
    pub(crate) fn proxied_url(&self, kind: &str, slug: &str) -> String {
        let p = &self.config.preview;
        let port = p
            .public_port
            .or_else(|| self.previews.port.get().copied())
            .unwrap_or_else(|| p.listen.port());
        let scheme = p.url_scheme();
        let default_port = if scheme == "https" { 443 } else { 80 };
        if port == 0 || port == default_port {
            format!("{scheme}://{slug}.{kind}.{}", p.domain)
        } else {
            format!("{scheme}://{slug}.{kind}.{}:{port}", p.domain)
        }
    }

    /// Records the port the proxy listener got (the URL's default).
    pub fn set_preview_port(&self, port: u16) {
        let _ = self.previews.port.set(port);
    }

    pub async fn create_preview(
        self: &Arc<Core>,
        caller: &Caller,
        sandbox_id: &str,
        port: u16,
        visibility: Visibility,
    ) -> Result<PreviewRecord> {
        let rec = self.get_sandbox(caller, sandbox_id).await?;
        if rec.state == crate::model::SandboxState::Destroyed {
            return Err(Error::invalid_state(sandbox_id, rec.state, "preview"));
        }
        let p = PreviewRecord {
            id: new_id("prv"),
            tenant_id: caller.tenant_id.clone(),
            sandbox_id: sandbox_id.to_string(),
            port,
            visibility,
            slug: new_slug(),
            created_at: self.now_ms(),
        };
        let need = crate::quotas::Quotas {
            previews: 1,
            ..Default::default()
        };
        let _quota = self.reserve(&caller.tenant_id, need).await?;
        match self.store.insert_preview(&p).await {
            Err(StoreError::Duplicate(_)) => {
                return Err(Error::conflict(
                    "conflict",
                    format!("port {port} of {sandbox_id} already has a preview"),
                ))
            }
            r => r?,
        }
        self.watch_preview_ready(p.clone());
        Ok(p)
    }

    pub async fn list_previews(
        &self,
        caller: &Caller,
        sandbox_id: &str,
    ) -> Result<Vec<PreviewRecord>> {
        self.get_sandbox(caller, sandbox_id).await?;
        Ok(self.store.list_previews(sandbox_id).await?)
    }

    pub async fn get_preview(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        id: &str,
    ) -> Result<PreviewRecord> {
        self.get_sandbox(caller, sandbox_id).await?;
        self.store
            .get_preview(id)
            .await?
            .filter(|p| p.tenant_id == caller.tenant_id && p.sandbox_id == sandbox_id)
            .ok_or_else(|| Error::not_found("preview"))
    }

    pub async fn delete_preview(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        id: &str,
    ) -> Result<PreviewRecord> {
        let p = self.get_preview(caller, sandbox_id, id).await?;
        self.store.delete_preview(&p.id).await?;
        self.access.taken();
        Ok(p)
    }

    /// The preview of `port`, made private when there is none.
    pub async fn expose(
        self: &Arc<Core>,
        caller: &Caller,
        sandbox_id: &str,
        port: u16,
    ) -> Result<PreviewRecord> {
        if let Some(p) = self
            .list_previews(caller, sandbox_id)
            .await?
            .into_iter()
            .find(|p| p.port == port)
        {
            return Ok(p);
        }
        match self
            .create_preview(caller, sandbox_id, port, Visibility::Private)
            .await
        {
            // Two exposes of one port at once: the other one won.
            Err(e) if e.code == "conflict" => self
                .list_previews(caller, sandbox_id)
                .await?
                .into_iter()
                .find(|p| p.port == port)
                .ok_or(e),
            r => r,
        }
    }

    /// Emits `sandbox.preview.ready` once the preview's port accepts a
    /// connection (checked twice a second while the sandbox runs).
    fn watch_preview_ready(self: &Arc<Core>, p: PreviewRecord) {
        let core = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let stop = core.shutdown_token();
            while started.elapsed() < READY_WATCH && !stop.is_cancelled() {
                // A destroyed sandbox has no handle: its port never opens.
                let Some(h) = core.handle(&p.sandbox_id) else {
                    return;
                };
                let agent = Some(h)
                    .filter(|h| h.state().can_exec())
                    .and_then(|h| h.agent());
                if let Some(agent) = agent {
                    if let Ok(mut t) = agent.tunnel(p.port).await {
                        use tokio::io::AsyncWriteExt;
                        let _ = t.shutdown().await;
                        core.events
                            .emit_logged(
                                &p.tenant_id,
                                Some(&p.sandbox_id),
                                EventKind::PreviewReady,
                                json!({
                                    "preview_id": p.id,
                                    "port": p.port,
                                    "url": core.preview_url(&p.slug),
                                }),
                            )
                            .await;
                        return;
                    }
                }
                if matches!(core.store.get_preview(&p.id).await, Ok(None)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}
