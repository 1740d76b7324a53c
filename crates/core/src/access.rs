//! Access held over time. A request is authorised once, when it arrives;
//! a long-lived connection (an event or output stream, a terminal, a
//! WebSocket through a preview) outlives that moment. So every change
//! that takes access away (an API key or share token revoked, a preview
//! deleted) moves one signal, and each long-lived connection waits on it
//! and checks its own grant again: a revocation ends the connections it
//! opened, not only the next request.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use super::keys::Caller;
use super::Core;

/// Counts changes that took access away; connections watch it.
#[derive(Debug)]
pub(crate) struct AccessChanges(watch::Sender<u64>);

impl Default for AccessChanges {
    fn default() -> AccessChanges {
        AccessChanges(watch::channel(0).0)
    }
}

impl AccessChanges {
    /// Something lost its access: wake every connection to check its own.
    pub(crate) fn taken(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Core {
    /// Completes once the grant a connection holds is gone: when `still()`
    /// answers false after some access was taken away, or at `expires_at`
    /// (unix ms) if given. Connections race their work against it.
    pub async fn access_lost<F, Fut>(&self, expires_at: Option<i64>, mut still: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut changes = self.access.0.subscribe();
        let expiry = async {
            match expires_at {
                Some(at) => {
                    let ms = u64::try_from(at.saturating_sub(self.now_ms())).unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                () = &mut expiry => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        // Core is gone; so is every connection.
                        return;
                    }
                    if !still().await {
                        return;
                    }
                }
            }
        }
    }

    /// Completes once `caller`'s API key (or scoped token) is revoked, or
    /// the token expires. A system caller (the preview proxy's own) never
    /// loses it this way.
    pub async fn key_revoked(&self, caller: &Caller) {
        let expires_at = caller.scope.as_ref().map(|t| t.expires_at);
        self.access_lost(expires_at, || self.key_live(caller)).await;
    }

    /// Whether `caller`'s key is still good: a store read, made only when
    /// some access was taken away.
    async fn key_live(&self, caller: &Caller) -> bool {
        if let Some(t) = &caller.scope {
            return self.token_live(t, &caller.tenant_id).await;
        }
        if caller.system {
            return true;
        }
        // The store lists live keys only.
        match self.store.list_api_keys(&caller.tenant_id).await {
            Ok(keys) => keys.iter().any(|k| k.id == caller.key_id),
            // A store that cannot answer keeps the connection: the next
            // change checks again.
            Err(_) => true,
        }
    }
}
