//! One async lock per key (a tenant, a deployment), held weakly: a key
//! nobody waits on costs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

type KeyLock = tokio::sync::Mutex<()>;

/// Locks by key, made on first use and dropped when no one holds them.
#[derive(Debug, Default)]
pub struct KeyedLocks(Mutex<HashMap<String, Weak<KeyLock>>>);

impl KeyedLocks {
    /// Waits for `key`'s lock; hold the guard for as long as it guards.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.get(key).lock_owned().await
    }

    /// `key`'s lock if nobody holds it now.
    pub fn try_lock(&self, key: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.get(key).try_lock_owned().ok()
    }

    fn get(&self, key: &str) -> Arc<KeyLock> {
        let mut map = self.0.lock();
        if let Some(l) = map.get(key).and_then(Weak::upgrade) {
            return l;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let l = Arc::new(KeyLock::default());
        map.insert(key.to_string(), Arc::downgrade(&l));
        l
    }
}
