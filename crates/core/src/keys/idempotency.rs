//! Idempotent mutations: the first response to an `Idempotency-Key` is
//! stored for the TTL and replayed for the same key and request; the same
//! key with a different request is a conflict. Concurrent duplicates queue
//! on a per-key lock, so the mutation runs once. Responses are stored
//! sealed (`crate::seal`): one may hold a new API key or share token.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex as SyncMutex;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::{IdempotentResponse, StoreError};
use crate::Core;

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

type KeyLock = tokio::sync::Mutex<()>;

#[derive(Debug, Default)]
pub struct Locks(SyncMutex<HashMap<(String, String), Weak<KeyLock>>>);

impl Locks {
    fn get(&self, tenant: &str, key: &str) -> Arc<KeyLock> {
        let mut map = self.0.lock();
        map.retain(|_, w| w.strong_count() > 0);
        let k = (tenant.to_string(), key.to_string());
        if let Some(l) = map.get(&k).and_then(Weak::upgrade) {
            return l;
        }
        let l = Arc::new(KeyLock::default());
        map.insert(k, Arc::downgrade(&l));
        l
    }
}

/// What the first request looked like: method, path and body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b" ");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a stored response is bound to: its tenant and key.
fn aad(tenant: &str, key: &str) -> Vec<u8> {
    format!("idempotency\0{tenant}\0{key}").into_bytes()
}

/// Held while the first request with a key runs.
#[derive(Debug)]
pub struct Claim {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    tenant: String,
    key: String,
    fingerprint: String,
}

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Decision {
    /// Answer with the stored response.
    Replay(IdempotentResponse),
    /// Run it, then [`Core::idempotency_store`] the response.
    Run(Claim),
}

impl Core {
    /// Drops stored replays older than the configured TTL.
    pub async fn prune_idempotency(&self) {
        let before = self.now_ms() - (self.config.idempotency_ttl_sec * 1000) as i64;
        if let Err(e) = self.store.prune_idempotency(before).await {
            tracing::warn!(error = %e, "prune idempotency keys");
        }
    }

    pub async fn idempotency_begin(
        &self,
        tenant: &str,
        key: &str,
        fingerprint: String,
    ) -> Result<Decision> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::field(
                "Idempotency-Key",
                format!("must be 1-{MAX_KEY_LEN} characters"),
            ));
        }
        let guard = self.idempotency_locks.get(tenant, key).lock_owned().await;
        let ttl_ms = (self.config.idempotency_ttl_sec * 1000) as i64;
        if let Some(stored) = self.store.idempotent_response(tenant, key).await? {
            if stored.created_at + ttl_ms > self.now_ms() {
                if stored.fingerprint != fingerprint {
                    return Err(Error::conflict(
                        "idempotency_key_reused",
                        "this Idempotency-Key was used with a different request",
                    ));
                }
                // Stored sealed: a response may carry a new key or share
                // token, which must not rest in plain text.
                let Ok(body) = self.sealer.open(&aad(tenant, key), &stored.body) else {
                    return Err(Error::conflict(
                        "idempotency_key_unreadable",
                        "the response stored for this Idempotency-Key cannot be read \
                         (the server's secrets.key changed); use a new key",
                    ));
                };
                return Ok(Decision::Replay(IdempotentResponse { body, ..stored }));
            }
            self.store.prune_idempotency(self.now_ms() - ttl_ms).await?;
        }
        Ok(Decision::Run(Claim {
            _guard: guard,
            tenant: tenant.to_string(),
            key: key.to_string(),
            fingerprint,
        }))
    }

    /// Stores the response of a claimed request (then releases the key).
    pub async fn idempotency_store(&self, claim: Claim, status: u16, body: Vec<u8>) {
        let resp = IdempotentResponse {
            fingerprint: claim.fingerprint.clone(),
            status,
            body: self.sealer.seal(&aad(&claim.tenant, &claim.key), &body),
            created_at: self.now_ms(),
        };
        match self
            .store
            .put_idempotent_response(&claim.tenant, &claim.key, &resp)
            .await
        {
            Ok(()) | Err(StoreError::Duplicate(_)) => {}
            Err(e) => tracing::warn!(error = %e, "idempotent response not stored"),
        }
    }
}
