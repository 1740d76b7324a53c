//! Previews: a sandbox port served at `<slug>.preview.<domain>` by the
//! preview proxy (`crate::proxy`), public or private, and the share tokens
//! that open private ones (shown once, stored as SHA-256, revocable). The
//! slug is random, so preview URLs cannot be guessed from sandbox ids.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::ids::{hash_secret, new_id, new_slug, new_token};
use super::keys::Caller;
use super::Core;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::model::{PreviewRecord, PreviewTokenRecord, Visibility};
use crate::store::StoreError;

/// Share token lifetime: default and longest, in seconds.
pub const SHARE_TTL_DEFAULT: u32 = 3600;
pub const SHARE_TTL_MAX: u32 = 86_400;

/// How long after a preview's creation the proxy watches for its port to
/// start listening (for `sandbox.preview.ready`).
const READY_WATCH: Duration = Duration::from_secs(30 * 60);

/// What a presented token is worth for a preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    Valid {
        expires_at: i64,
    },
    Expired,
    Revoked,
    /// Unknown, or made for another preview or sandbox.
    Invalid,
}

/// A share token just minted: the raw secret is in `token` only.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub record: PreviewTokenRecord,
    pub token: String,
}

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
        let p = &self.config.preview;
        let port = p
            .public_port
            .or_else(|| self.previews.port.get().copied())
            .unwrap_or_else(|| p.listen.port());
        let scheme = p.url_scheme();
        let default_port = if scheme == "https" { 443 } else { 80 };
        if port == 0 || port == default_port {
            format!("{scheme}://{slug}.preview.{}", p.domain)
        } else {
            format!("{scheme}://{slug}.preview.{}:{port}", p.domain)
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

    /// Mints a token for one preview (`preview`), or for every preview of
    /// the sandbox (`None`), valid `ttl_sec`.
    pub async fn mint_preview_token(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        preview: Option<&PreviewRecord>,
        ttl_sec: u32,
    ) -> Result<NewToken> {
        let token = new_token();
        let now = self.now_ms();
        let record = PreviewTokenRecord {
            id: new_id("pvt"),
            tenant_id: caller.tenant_id.clone(),
            sandbox_id: sandbox_id.to_string(),
            preview_id: preview.map(|p| p.id.clone()),
            hash: hash_secret(&token),
            prefix: token.chars().take(12).collect(),
            expires_at: now + i64::from(ttl_sec) * 1000,
            revoked_at: None,
            created_at: now,
        };
        self.store.insert_preview_token(&record).await?;
        Ok(NewToken { record, token })
    }

    /// Revokes every share token of a preview; how many were live.
    pub async fn revoke_preview_shares(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        id: &str,
    ) -> Result<u64> {
        let p = self.get_preview(caller, sandbox_id, id).await?;
        Ok(self
            .store
            .revoke_preview_tokens(&p.id, self.now_ms())
            .await?)
    }

    /// What `token` is worth for `preview`.
    pub async fn check_preview_token(&self, preview: &PreviewRecord, token: &str) -> TokenCheck {
        let Ok(Some(t)) = self.store.preview_token_by_hash(&hash_secret(token)).await else {
            return TokenCheck::Invalid;
        };
        let fits = t.sandbox_id == preview.sandbox_id
            && t.tenant_id == preview.tenant_id
            && t.preview_id.as_deref().is_none_or(|id| id == preview.id);
        if !fits {
            return TokenCheck::Invalid;
        }
        if t.revoked_at.is_some() {
            return TokenCheck::Revoked;
        }
        if t.expires_at <= self.now_ms() {
            return TokenCheck::Expired;
        }
        TokenCheck::Valid {
            expires_at: t.expires_at,
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
