//! Who may pass through a preview, decided per request and held by the
//! connections a request opens: a WebSocket through a private preview
//! lives only while the key or share token that opened it does (and the
//! preview itself), and a token's connection ends when the token expires.

use std::sync::Arc;

use axum::response::Response;

use super::{credentials, pages};
use crate::core::previews::TokenCheck;
use crate::core::Core;
use crate::model::{PreviewRecord, Visibility};

/// What let a request through.
#[derive(Debug, Clone)]
pub(super) enum Grant {
    /// A public preview: anyone, while it stays public.
    Public,
    /// The owning tenant's API key.
    Owner(String),
    /// A share token, until `expires_at` (unix ms).
    Token { token: String, expires_at: i64 },
}

/// The grant a request's credentials give on `preview`, and the share
/// token to set as a cookie when one was presented another way; or the
/// page that refuses it.
pub(super) async fn authorize(
    core: &Core,
    preview: &PreviewRecord,
    presented: &credentials::Credentials,
) -> Result<(Grant, Option<(String, i64)>), Response> {
    if preview.visibility == Visibility::Public {
        return Ok((Grant::Public, None));
    }
    if let Some(key) = &presented.api_key {
        if is_owner(core, preview, key).await {
            return Ok((Grant::Owner(key.clone()), None));
        }
    }
    let Some((token, source)) = &presented.token else {
        return Err(pages::private());
    };
    match core.check_preview_token(preview, token).await {
        TokenCheck::Valid { expires_at } => {
            let cookie =
                (*source != credentials::Source::Cookie).then(|| (token.clone(), expires_at));
            let grant = Grant::Token {
                token: token.clone(),
                expires_at,
            };
            Ok((grant, cookie))
        }
        TokenCheck::Expired => Err(pages::token_expired()),
        TokenCheck::Revoked => Err(pages::token_revoked()),
        TokenCheck::Invalid => Err(pages::token_invalid()),
    }
}

/// Whether `key` (an API key of the preview's tenant, or a scoped token
/// with `sandboxes:read` that sees the preview's sandbox) opens the
/// preview.
async fn is_owner(core: &Core, preview: &PreviewRecord, key: &str) -> bool {
    match core.authenticate(key).await {
        Ok(c) if c.tenant_id == preview.tenant_id => {
            c.scope.is_none()
                || (c.has_scope("sandboxes:read")
                    && core.get_sandbox(&c, &preview.sandbox_id).await.is_ok())
        }
        _ => false,
    }
}

impl Grant {
    /// Whether the grant still lets a request through the preview at
    /// `slug`, read afresh: the preview still there (the same one), still
    /// public, the key or token still good.
    async fn holds(&self, core: &Core, slug: &str, preview_id: &str) -> bool {
        let preview = match core.preview_by_slug(slug).await {
            Ok(Some(p)) if p.id == preview_id => p,
            Ok(_) => return false,
            // The store did not answer: keep the connection, and check
            // again at the next change.
            Err(_) => return true,
        };
        match self {
            Grant::Public => preview.visibility == Visibility::Public,
            Grant::Owner(key) => is_owner(core, &preview, key).await,
            Grant::Token { token, .. } => matches!(
                core.check_preview_token(&preview, token).await,
                TokenCheck::Valid { .. }
            ),
        }
    }

    /// Completes when the grant is gone (revoked, expired, or its preview
    /// deleted): a connection it opened races its work against this.
    pub(super) async fn lost(self, core: Arc<Core>, slug: String, preview_id: String) {
        let expires_at = match &self {
            Grant::Token { expires_at, .. } => Some(*expires_at),
            Grant::Public | Grant::Owner(_) => None,
        };
        core.access_lost(expires_at, || self.holds(&core, &slug, &preview_id))
            .await;
    }
}
