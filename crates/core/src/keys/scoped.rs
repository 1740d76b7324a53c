//! Scoped tokens (`/tokens/scoped`): what a tenant key hands a browser or
//! an end user. A token carries a subset of [`SCOPES`], expires within a
//! day, and sees only the sandboxes pinned to it (`sandbox_ids`) or else
//! those tagged with its `user_id` and `workspace_id` (which every sandbox
//! it creates gets). It is `hk_st_...`, so it goes wherever a key goes
//! (REST, SSE, WebSocket, the preview proxy) and is stripped like one; it
//! is read from the store on every request, so a revocation, or one of the
//! key that minted it, holds from the next request on.

use std::sync::Arc;

use super::Caller;
use crate::error::{Error, Kind, Result};
use crate::ids::{hash_secret, new_api_key, new_id};
use crate::model::{SandboxRecord, ScopedTokenRecord};
use crate::Core;

/// Every scope a token may carry.
pub const SCOPES: &[&str] = &[
    "sandboxes:create",
    "sandboxes:read",
    "sandboxes:write",
    "sandboxes:exec",
    "sandboxes:files:read",
    "sandboxes:files:write",
    "sandboxes:destroy",
    "previews:write",
    "snapshots:write",
];
/// What a token's plain text starts with.
pub const TOKEN_PREFIX: &str = "hk_st_";
/// The longest a token lives.
pub const MAX_TTL_SEC: u64 = 86_400;
/// Tokens one listing shows at most.
pub const MAX_LISTED: u32 = 1000;

/// What a caller that is a scoped token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScope {
    pub token_id: String,
    pub user_id: String,
    pub workspace_id: String,
    pub scopes: Vec<String>,
    pub sandbox_ids: Option<Vec<String>>,
    pub expires_at: i64,
}

impl TokenScope {
    /// Whether the token may touch sandbox `rec`: pinned to it, or (when
    /// not pinned) tagged with the token's user and workspace.
    pub fn sees(&self, rec: &SandboxRecord) -> bool {
        match &self.sandbox_ids {
            Some(ids) => ids.contains(&rec.id),
            None => {
                rec.external_user_id.as_deref() == Some(self.user_id.as_str())
                    && rec.external_workspace_id.as_deref() == Some(self.workspace_id.as_str())
            }
        }
    }
}

impl Caller {
    /// Whether the caller holds `scope` (an API key holds every scope).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|t| t.scopes.iter().any(|s| s == scope))
    }

    /// Whether the caller may see sandbox `rec` (its tenant's, and within a
    /// token's reach).
    pub fn sees(&self, rec: &SandboxRecord) -> bool {
        rec.tenant_id == self.tenant_id && self.scope.as_ref().is_none_or(|t| t.sees(rec))
    }

    /// 403 naming `scope` unless the caller holds it.
    pub fn require(&self, scope: &str) -> Result<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "this token lacks the scope {scope}"
            )))
        }
    }
}

/// A token to mint (fields checked by the API layer).
#[derive(Debug, Clone)]
pub struct NewToken {
    pub user_id: String,
    pub workspace_id: String,
    pub ttl_sec: u64,
    /// `None`: every scope.
    pub scopes: Option<Vec<String>>,
    pub sandbox_ids: Option<Vec<String>>,
}

impl Core {
    /// Mints a token for the caller's tenant; the plain text exists only in
    /// the answer. Only an API key mints (a token cannot make another).
    pub async fn mint_scoped_token(
        &self,
        caller: &Caller,
        new: NewToken,
    ) -> Result<(ScopedTokenRecord, String)> {
        if caller.scope.is_some() {
            return Err(Error::forbidden("a scoped token cannot mint tokens"));
        }
        if let Some(ids) = &new.sandbox_ids {
            for id in ids {
                self.get_sandbox(caller, id).await?;
            }
        }
        let token = format!("{TOKEN_PREFIX}{}", &new_api_key()[3..]);
        let now = self.now_ms();
        let ttl_ms = i64::try_from(new.ttl_sec.min(MAX_TTL_SEC)).unwrap_or(0) * 1000;
        let rec = ScopedTokenRecord {
            id: new_id("stk"),
            tenant_id: caller.tenant_id.clone(),
            minted_by: caller.key_id.clone(),
            user_id: new.user_id,
            workspace_id: new.workspace_id,
            scopes: new
                .scopes
                .unwrap_or_else(|| SCOPES.iter().map(|s| s.to_string()).collect()),
            sandbox_ids: new.sandbox_ids,
            hash: hash_secret(&token),
            prefix: token.chars().take(12).collect(),
            created_at: now,
            expires_at: now + ttl_ms,
            revoked_at: None,
        };
        self.store.insert_scoped_token(&rec).await?;
        Ok((rec, token))
    }

    pub async fn list_scoped_tokens(&self, caller: &Caller) -> Result<Vec<ScopedTokenRecord>> {
        Ok(self
            .store
            .list_scoped_tokens(&caller.tenant_id, MAX_LISTED)
            .await?)
    }

    /// Revokes one of the tenant's tokens: its next request is 401, and
    /// the streams and sockets it opened end.
    pub async fn revoke_scoped_token(&self, caller: &Caller, id: &str) -> Result<()> {
        if !self
            .store
            .revoke_scoped_token(&caller.tenant_id, id, self.now_ms())
            .await?
        {
            return Err(Error::new(
                Kind::NotFound,
                "token_not_found",
                format!("token {id} not found"),
            ));
        }
        self.access.taken();
        Ok(())
    }

    /// The caller behind a scoped token, or 401 (unknown, expired,
    /// revoked).
    pub(super) async fn authenticate_token(&self, token: &str) -> Result<Caller> {
        let t = self
            .store
            .scoped_token_by_hash(&hash_secret(token))
            .await?
            .filter(|t| t.revoked_at.is_none() && t.expires_at > self.now_ms())
            .ok_or_else(|| Error::unauthorized("invalid, expired or revoked token"))?;
        Ok(Caller {
            tenant_id: t.tenant_id,
            key_id: t.id.clone(),
            admin: false,
            system: false,
            scope: Some(Arc::new(TokenScope {
                token_id: t.id,
                user_id: t.user_id,
                workspace_id: t.workspace_id,
                scopes: t.scopes,
                sandbox_ids: t.sandbox_ids,
                expires_at: t.expires_at,
            })),
        })
    }

    /// Whether a token caller's token is still good (streams check it when
    /// some access was taken away).
    pub(crate) async fn token_live(&self, scope: &TokenScope, tenant: &str) -> bool {
        match self.store.get_scoped_token(tenant, &scope.token_id).await {
            Ok(t) => t.is_some_and(|t| t.revoked_at.is_none() && t.expires_at > self.now_ms()),
            Err(_) => true,
        }
    }
}
