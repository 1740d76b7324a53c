//! The event log: every event is appended to the store first (so a stream
//! can resume from any id), then broadcast to live SSE subscribers.

use std::sync::Arc;

use std::collections::VecDeque;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::clock::Clock;
use super::ids::new_id;
use crate::model::EventRecord;
use crate::store::{NewEvent, Store, StoreResult};

/// How many events a slow subscriber may fall behind before it re-reads
/// from the store.
const BROADCAST_CAPACITY: usize = 1024;

/// Every kind of event Hearth records (API.md, "Events"); the wire name is
/// [`EventKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    SandboxCreated,
    SandboxRunning,
    SandboxPaused,
    SandboxResumed,
    SandboxRestored,
    SandboxIdle,
    SandboxTimeout,
    SandboxError,
    SandboxDestroyed,
    NetworkPolicyUpdated,
    ExecStarted,
    ExecCompleted,
    FileWritten,
    PreviewReady,
    SnapshotReady,
    TemplateBuildReady,
    TemplateBuildFailed,
}

impl EventKind {
    pub const ALL: [EventKind; 17] = [
        EventKind::SandboxCreated,
        EventKind::SandboxRunning,
        EventKind::SandboxPaused,
        EventKind::SandboxResumed,
        EventKind::SandboxRestored,
        EventKind::SandboxIdle,
        EventKind::SandboxTimeout,
        EventKind::SandboxError,
        EventKind::SandboxDestroyed,
        EventKind::NetworkPolicyUpdated,
        EventKind::ExecStarted,
        EventKind::ExecCompleted,
        EventKind::FileWritten,
        EventKind::PreviewReady,
        EventKind::SnapshotReady,
        EventKind::TemplateBuildReady,
        EventKind::TemplateBuildFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SandboxCreated => "sandbox.created",
            EventKind::SandboxRunning => "sandbox.running",
            EventKind::SandboxPaused => "sandbox.paused",
            EventKind::SandboxResumed => "sandbox.resumed",
            EventKind::SandboxRestored => "sandbox.restored",
            EventKind::SandboxIdle => "sandbox.idle",
            EventKind::SandboxTimeout => "sandbox.timeout",
            EventKind::SandboxError => "sandbox.error",
            EventKind::SandboxDestroyed => "sandbox.destroyed",
            EventKind::NetworkPolicyUpdated => "sandbox.network_policy_updated",
            EventKind::ExecStarted => "sandbox.exec.started",
            EventKind::ExecCompleted => "sandbox.exec.completed",
            EventKind::FileWritten => "sandbox.file.written",
            EventKind::PreviewReady => "sandbox.preview.ready",
            EventKind::SnapshotReady => "sandbox.snapshot.ready",
            EventKind::TemplateBuildReady => "template.build.ready",
            EventKind::TemplateBuildFailed => "template.build.failed",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
        kind: EventKind,
        data: serde_json::Value,
    ) -> StoreResult<EventRecord> {
        let rec = self
            .store
            .append_event(&NewEvent {
                id: new_id("evt"),
                tenant_id: tenant_id.to_string(),
                sandbox_id: sandbox_id.map(str::to_string),
                kind: kind.as_str().to_string(),
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
        kind: EventKind,
        data: serde_json::Value,
    ) {
        if let Err(e) = self.emit(tenant_id, sandbox_id, kind, data).await {
            tracing::warn!(kind = kind.as_str(), sandbox_id, error = %e, "event not recorded");
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EventRecord> {
        self.tx.subscribe()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// Events read from the store per query while replaying.
const REPLAY_PAGE: u32 = 500;

/// Which events a reader wants: one tenant's, optionally one sandbox's,
/// whose kind matches one of `globs` (none: all).
#[derive(Debug, Clone)]
pub struct EventFilter {
    pub tenant_id: String,
    pub sandbox_id: Option<String>,
    pub globs: Vec<String>,
}

impl EventFilter {
    fn wants(&self, e: &EventRecord) -> bool {
        e.tenant_id == self.tenant_id
            && self
                .sandbox_id
                .as_deref()
                .is_none_or(|s| e.sandbox_id.as_deref() == Some(s))
            && matches_types(&self.globs, &e.kind)
    }
}

impl super::Core {
    /// Up to one page of stored events after `after` that `filter` wants.
    pub async fn event_history(
        &self,
        filter: &EventFilter,
        after: i64,
    ) -> super::error::Result<Vec<EventRecord>> {
        let list = self
            .store
            .events_after(
                &filter.tenant_id,
                filter.sandbox_id.as_deref(),
                after,
                REPLAY_PAGE,
            )
            .await?;
        Ok(list.into_iter().filter(|e| filter.wants(e)).collect())
    }

    /// Every event after `after` that `filter` wants: the stored ones,
    /// then live ones as they happen.
    pub fn follow_events(&self, filter: EventFilter, after: i64) -> EventFollower {
        EventFollower {
            store: self.store.clone(),
            live: self.events.subscribe(),
            filter,
            last: after,
            ready: VecDeque::new(),
            replaying: true,
        }
    }
}

/// Reads events in order without gaps: replays from the store, then
/// follows the bus; after falling behind the bus, replays again from the
/// last event it handed out.
#[derive(Debug)]
pub struct EventFollower {
    store: Arc<dyn Store>,
    live: broadcast::Receiver<EventRecord>,
    filter: EventFilter,
    last: i64,
    ready: VecDeque<EventRecord>,
    replaying: bool,
}

impl EventFollower {
    /// The next event; `None` when the store fails or the bus closed.
    pub async fn next(&mut self) -> Option<EventRecord> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            if self.replaying {
                let f = &self.filter;
                let batch = match self
                    .store
                    .events_after(
                        &f.tenant_id,
                        f.sandbox_id.as_deref(),
                        self.last,
                        REPLAY_PAGE,
                    )
                    .await
                {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "event replay failed");
                        return None;
                    }
                };
                self.replaying = batch.len() >= REPLAY_PAGE as usize;
                for e in batch {
                    self.last = e.seq;
                    if self.filter.wants(&e) {
                        self.ready.push_back(e);
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Ok(e) if e.seq > self.last && self.filter.wants(&e) => {
                    self.last = e.seq;
                    return Some(e);
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => self.replaying = true,
                Err(RecvError::Closed) => return None,
            }
        }
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
    fn event_kinds_have_distinct_dotted_names() {
        let names: std::collections::BTreeSet<&str> =
            EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), EventKind::ALL.len());
        for n in names {
            assert!(
                n.starts_with("sandbox.") || n.starts_with("template."),
                "{n}"
            );
        }
    }

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
