//! API keys and tenants: `hk_` keys stored as hashes, each bound to a
//! tenant; the first start creates an admin key. Lookups are cached in
//! memory (one server owns the store), revocations drop the cache entry.

pub mod idempotency;
pub mod scoped;

use parking_lot::RwLock;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::ids::{hash_secret, new_api_key, new_id};
use super::Core;
use crate::error::{Error, Result};
use crate::model::ApiKeyRecord;

/// The tenant of the first admin key.
pub const DEFAULT_TENANT: &str = "ten_default";

/// Who is calling: the tenant every object lookup is scoped to, and for a
/// scoped token, what it may do and see ([`scoped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant_id: String,
    /// The API key's id, or the scoped token's.
    pub key_id: String,
    pub admin: bool,
    /// `Some` for a scoped token.
    pub scope: Option<std::sync::Arc<scoped::TokenScope>>,
    /// The server acting for the tenant on its own (a timer, the
    /// deployment supervisor, the preview proxy): no key to revoke, and
    /// `system` in the audit log.
    pub system: bool,
}

impl Caller {
    /// The server itself acting in `tenant` (`who` names the part).
    pub fn system(tenant: &str, who: &str) -> Caller {
        Caller {
            tenant_id: tenant.to_string(),
            key_id: who.to_string(),
            admin: false,
            scope: None,
            system: true,
        }
    }
}

/// Keys looked up by hash. `epoch` counts revocations: a lookup that
/// read the store before a revocation finished does not put what it read
/// back into the cache (it reads again), so a revocation wins every race.
#[derive(Debug, Default)]
pub(crate) struct KeyCache(RwLock<CacheInner>);

#[derive(Debug, Default)]
pub(crate) struct CacheInner {
    keys: HashMap<String, ApiKeyRecord>,
    epoch: u64,
}

/// Keys cached at most; past that the cache starts over (a flood of
/// distinct valid keys cannot grow it without bound).
const MAX_CACHED_KEYS: usize = 10_000;

/// A key just created: the only time its plain text exists.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub record: ApiKeyRecord,
    pub key: String,
}

impl Core {
    /// The caller behind a bearer key, or 401.
    pub async fn authenticate(&self, key: &str) -> Result<Caller> {
        if key.starts_with(scoped::TOKEN_PREFIX) {
            return self.authenticate_token(key).await;
        }
        if !key.starts_with("hk_") {
            return Err(Error::unauthorized("invalid API key"));
        }
        let hash = hash_secret(key);
        let rec = loop {
            let epoch = {
                let cache = self.keys.0.read();
                if let Some(r) = cache.keys.get(&hash) {
                    break r.clone();
                }
                cache.epoch
            };
            let r = self
                .store
                .api_key_by_hash(&hash)
                .await?
                .ok_or_else(|| Error::unauthorized("invalid API key"))?;
            let mut cache = self.keys.0.write();
            if cache.epoch != epoch {
                // A key was revoked while we read: read again.
                continue;
            }
            if cache.keys.len() >= MAX_CACHED_KEYS {
                cache.keys.clear();
            }
            cache.keys.insert(hash, r.clone());
            break r;
        };
        Ok(Caller {
            tenant_id: rec.tenant_id,
            key_id: rec.id,
            admin: rec.admin,
            scope: None,
            system: false,
        })
    }

    /// Creates a key for `tenant_id` (created if new).
    pub async fn create_api_key(&self, tenant_id: &str, name: &str, admin: bool) -> Result<NewKey> {
        let now = self.now_ms();
        self.store.ensure_tenant(tenant_id, tenant_id, now).await?;
        let key = new_api_key();
        let record = ApiKeyRecord {
            id: new_id("key"),
            tenant_id: tenant_id.to_string(),
            name: name.to_string(),
            prefix: key.chars().take(10).collect(),
            hash: hash_secret(&key),
            admin,
            created_at: now,
            revoked_at: None,
        };
        let need = crate::quotas::Quotas {
            api_keys: 1,
            ..Default::default()
        };
        let _quota = self.reserve(tenant_id, need).await?;
        self.store.insert_api_key(&record).await?;
        Ok(NewKey { record, key })
    }

    pub async fn list_api_keys(&self, caller: &Caller) -> Result<Vec<ApiKeyRecord>> {
        Ok(self.store.list_api_keys(&caller.tenant_id).await?)
    }

    /// Revokes one of the caller's tenant's keys; 404 for anything else.
    /// A key cannot revoke itself, and only an admin key can revoke an
    /// admin key.
    pub async fn revoke_api_key(&self, caller: &Caller, id: &str) -> Result<()> {
        if id == caller.key_id {
            return Err(Error::conflict("conflict", "a key cannot revoke itself"));
        }
        let target = self
            .store
            .list_api_keys(&caller.tenant_id)
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| Error::not_found("api key"))?;
        if target.admin && !caller.admin {
            return Err(Error::forbidden(
                "only an admin key can revoke an admin key",
            ));
        }
        // The epoch moves before the store changes and again after, so a
        // lookup that overlaps the revocation in any way sees it move.
        self.forget_key(id);
        if !self
            .store
            .revoke_api_key(&caller.tenant_id, id, self.now_ms())
            .await?
        {
            return Err(Error::not_found("api key"));
        }
        self.forget_key(id);
        // What the key minted goes with it.
        self.store
            .revoke_tokens_minted_by(id, self.now_ms())
            .await?;
        self.access.taken();
        Ok(())
    }

    /// Empties the key cache (another node revoked a key).
    pub(crate) fn forget_all_keys(&self) {
        let mut cache = self.keys.0.write();
        cache.epoch += 1;
        cache.keys.clear();
    }

    fn forget_key(&self, id: &str) {
        let mut cache = self.keys.0.write();
        cache.epoch += 1;
        cache.keys.retain(|_, r| r.id != id);
    }

    /// On the very first start (no key at all), creates the admin key and
    /// writes it to `path` (mode 0600). Returns it so the caller prints it
    /// once; `None` on every later start.
    pub async fn bootstrap_admin_key(&self, path: &Path) -> anyhow::Result<Option<String>> {
        if self.store.count_api_keys().await? > 0 {
            return Ok(None);
        }
        let new = self
            .create_api_key(DEFAULT_TENANT, "admin", true)
            .await
            .map_err(|e| anyhow::anyhow!("create admin key: {e}"))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        writeln!(f, "{}", new.key)?;
        f.sync_all()?;
        Ok(Some(new.key))
    }
}
