//! Share tokens: minted for one preview or for every preview of a sandbox,
//! shown once, stored as SHA-256; listed and revoked by preview, by
//! sandbox or one by one. The proxy checks a presented token against the
//! store on every request, so a revocation holds from the next request on.

use crate::error::{Error, Result};
use crate::ids::{hash_secret, new_id, new_token};
use crate::keys::Caller;
use crate::model::{PreviewRecord, PreviewTokenRecord};
use crate::Core;

/// Share token lifetime: default and longest, in seconds.
pub const SHARE_TTL_DEFAULT: u32 = 3600;
pub const SHARE_TTL_MAX: u32 = 86_400;

/// Tokens one listing shows at most (the newest).
pub const SHARE_TOKENS_LISTED: u32 = 1000;

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

impl Core {
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
        let n = self
            .store
            .revoke_preview_tokens(&p.id, self.now_ms())
            .await?;
        self.access.taken();
        Ok(n)
    }

    /// A sandbox's share tokens, newest first (at most
    /// [`SHARE_TOKENS_LISTED`]): those of one preview when `preview_id` is
    /// given, else all of them, sandbox-wide ones included.
    pub async fn list_share_tokens(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        preview_id: Option<&str>,
    ) -> Result<Vec<PreviewTokenRecord>> {
        match preview_id {
            Some(id) => {
                self.get_preview(caller, sandbox_id, id).await?;
            }
            None => {
                self.get_sandbox(caller, sandbox_id).await?;
            }
        }
        Ok(self
            .store
            .list_preview_tokens(sandbox_id, preview_id, SHARE_TOKENS_LISTED)
            .await?)
    }

    /// Revokes every share token of a sandbox: each preview's and the
    /// sandbox-wide ones; how many were live.
    pub async fn revoke_sandbox_shares(&self, caller: &Caller, sandbox_id: &str) -> Result<u64> {
        self.get_sandbox(caller, sandbox_id).await?;
        let n = self
            .store
            .revoke_sandbox_preview_tokens(sandbox_id, self.now_ms())
            .await?;
        self.access.taken();
        Ok(n)
    }

    /// Revokes one share token of a sandbox (of its preview `preview_id`
    /// when given); revoking a revoked token changes nothing. A token of
    /// another sandbox, preview or tenant is not found.
    pub async fn revoke_share_token(
        &self,
        caller: &Caller,
        sandbox_id: &str,
        preview_id: Option<&str>,
        token_id: &str,
    ) -> Result<PreviewTokenRecord> {
        match preview_id {
            Some(id) => {
                self.get_preview(caller, sandbox_id, id).await?;
            }
            None => {
                self.get_sandbox(caller, sandbox_id).await?;
            }
        }
        let found = self.store.get_preview_token(token_id).await?.filter(|t| {
            t.tenant_id == caller.tenant_id
                && t.sandbox_id == sandbox_id
                && preview_id.is_none_or(|p| t.preview_id.as_deref() == Some(p))
        });
        let Some(t) = found else {
            return Err(Error::not_found("share token"));
        };
        self.store
            .revoke_preview_token(&t.id, self.now_ms())
            .await?;
        self.access.taken();
        self.store
            .get_preview_token(&t.id)
            .await?
            .ok_or_else(|| Error::not_found("share token"))
    }

    /// What `token` is worth for `preview`, read from the store each time
    /// (no cache: a revocation holds from the next request on).
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
}
