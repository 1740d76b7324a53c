//! The event log: every event is appended to the store first (so a stream
//! can resume from any id), then broadcast to live SSE subscribers.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::clock::Clock;
use super::ids::new_id;
use crate::model::EventRecord;
use crate::store::{NewEvent, Store, StoreResult};

/// How many events a slow subscriber may fall behind before it re-reads
/// from the store.
const BROADCAST_CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
pub struct EventBus {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    tx: broadcast::Sender<EventRecord>,
}

impl EventBus {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> EventBus {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        EventBus { store, clock, tx }
    }

    /// Appends and publishes one event.
    pub async fn emit(
        &self,
        tenant_id: &str,
        sandbox_id: Option<&str>,
        kind: &str,
        data: serde_json::Value,
    ) -> StoreResult<EventRecord> {
        let rec = self
            .store
            .append_event(&NewEvent {
                id: new_id("evt"),
                tenant_id: tenant_id.to_string(),
                sandbox_id: sandbox_id.map(str::to_string),
                kind: kind.to_string(),
                ts: self.clock.now_ms(),
                data,
            })
            .await?;
        let _ = self.tx.send(rec.clone());
        Ok(rec)
    }

    /// Like [`EventBus::emit`], but a failure is only logged: an event must
    /// never fail the operation it describes.
    pub async fn emit_logged(
        &self,
        tenant_id: &str,
        sandbox_id: Option<&str>,
        kind: &str,
        data: serde_json::Value,
    ) {
        if let Err(e) = self.emit(tenant_id, sandbox_id, kind, data).await {
            tracing::warn!(kind, sandbox_id, error = %e, "event not recorded");
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EventRecord> {
        self.tx.subscribe()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// Whether `kind` matches one of comma-separated globs (`*` matches any run
/// of characters, e.g. `sandbox.*`, `*.ready`). No globs match everything.
pub fn matches_types(globs: &[String], kind: &str) -> bool {
    globs.is_empty()
        || globs
            .iter()
            .any(|g| glob_match(g.as_bytes(), kind.as_bytes()))
}

fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob_match(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && glob_match(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_globs() {
        let g = |s: &str| vec![s.to_string()];
        assert!(matches_types(&[], "sandbox.created"));
        assert!(matches_types(&g("sandbox.*"), "sandbox.exec.completed"));
        assert!(matches_types(&g("*.ready"), "sandbox.snapshot.ready"));
        assert!(!matches_types(&g("sandbox.exec.*"), "sandbox.created"));
        assert!(matches_types(&g("sandbox.created"), "sandbox.created"));
        assert!(!matches_types(&g("sandbox.created"), "sandbox.created.x"));
        assert!(matches_types(
            &["a.b".to_string(), "sandbox.*d".to_string()],
            "sandbox.paused"
        ));
    }
}
