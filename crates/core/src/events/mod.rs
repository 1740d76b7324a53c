//! The event log: every event is appended to the store first (so a stream
//! can resume from any id), then broadcast to live SSE subscribers. What
//! one event carries is bounded (`payload.rs`), and old events are pruned
//! (`retention.rs`).

mod payload;
mod retention;

pub use payload::{MAX_DATA, MAX_STRING};

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
    DeploymentPromoted,
    DeploymentFailed,
    DeploymentReplaced,
}

impl EventKind {
    pub const ALL: [EventKind; 20] = [
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
        EventKind::DeploymentPromoted,
        EventKind::DeploymentFailed,
        EventKind::DeploymentReplaced,
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
            EventKind::DeploymentPromoted => "deployment.promoted",
            EventKind::DeploymentFailed => "deployment.failed",
            EventKind::DeploymentReplaced => "deployment.replaced",
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

    /// Appends and publishes one event; `data` is cut to [`MAX_DATA`]
    /// bytes, and each string in it to [`MAX_STRING`] (`"truncated": true`
    /// says it was).
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
                data: payload::cap(data),
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

/// Events read from the store per query while a stream replays. With
/// data capped at [`MAX_DATA`], a replaying stream holds at most this many
/// times that (1 MiB), whatever the log holds.
const REPLAY_PAGE: u32 = 64;
/// Most events one history answer (`Accept: application/json`) lists.
const HISTORY_PAGE: u32 = 500;

/// Most type globs one reader may give.
pub const MAX_GLOBS: usize = 32;
/// Longest type glob, in bytes (event kinds are far shorter).
pub const MAX_GLOB_LEN: usize = 128;

/// Which events a reader wants: one tenant's, optionally one sandbox's,
/// whose kind matches one of `globs` (none: all).
#[derive(Debug, Clone)]
pub struct EventFilter {
    pub tenant_id: String,
    pub sandbox_id: Option<String>,
    pub globs: Vec<String>,
}

impl EventFilter {
    /// A filter from comma-separated `types` globs, refused (naming the
    /// limit) past [`MAX_GLOBS`] globs or [`MAX_GLOB_LEN`] bytes in one.
    pub fn new(
        tenant_id: String,
        sandbox_id: Option<String>,
        types: Option<&str>,
    ) -> super::error::Result<EventFilter> {
        let globs: Vec<String> = types
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if globs.len() > MAX_GLOBS {
            return Err(super::error::Error::field(
                "types",
                format!("at most {MAX_GLOBS} type globs"),
            ));
        }
        if globs.iter().any(|g| g.len() > MAX_GLOB_LEN) {
            return Err(super::error::Error::field(
                "types",
                format!("a type glob is at most {MAX_GLOB_LEN} bytes"),
            ));
        }
        Ok(EventFilter {
            tenant_id,
            sandbox_id,
            globs,
        })
    }

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
                HISTORY_PAGE,
            )
            .await?;
        Ok(list.into_iter().filter(|e| filter.wants(e)).collect())
    }

    /// Every event this node emits from now on, of every tenant.
    pub fn subscribe_events(&self) -> broadcast::Receiver<EventRecord> {
        self.events.subscribe()
    }

    /// Every event after `after` that `filter` wants: the stored ones,
    /// then live ones as they happen. With other nodes on the store (whose
    /// events this node's bus never carries), the store is also read every
    /// [`CLUSTER_POLL`].
    pub fn follow_events(&self, filter: EventFilter, after: i64) -> EventFollower {
        EventFollower {
            store: self.store.clone(),
            live: self.events.subscribe(),
            filter,
            last: after,
            ready: VecDeque::new(),
            replaying: true,
            poll: self.has_peers().then_some(CLUSTER_POLL),
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
    /// How often to read the store for other nodes' events.
    poll: Option<std::time::Duration>,
}

/// How often a follower reads other nodes' events from the store.
pub const CLUSTER_POLL: std::time::Duration = std::time::Duration::from_millis(500);

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
            let received = match self.poll {
                None => self.live.recv().await,
                Some(every) => match tokio::time::timeout(every, self.live.recv()).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.replaying = true;
                        continue;
                    }
                },
            };
            match received {
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

/// `*` matches any run of bytes. No recursion: one pass that remembers the
/// last `*` and retries from there, so at most `pat.len() * s.len()` steps
/// whatever the pattern (a recursive matcher was exponential in the stars,
/// and tens of thousands of them overflowed the stack).
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Where the last `*` was, and where in `s` it currently stops.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
            }
            Some(&c) if c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
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
                n.starts_with("sandbox.")
                    || n.starts_with("template.")
                    || n.starts_with("deployment."),
                "{n}"
            );
        }
    }

    #[test]
    fn globs_match_without_recursion_and_stay_fast() {
        assert!(glob_match(b"*a*b*c*", b"xxaxxbxxc"));
        assert!(!glob_match(b"*a*b*c*d", b"xxaxxbxxc"));
        assert!(glob_match(b"**", b""));
        assert!(!glob_match(b"a", b""));
        assert!(glob_match(b"sandbox.*.ready", b"sandbox.snapshot.ready"));
        assert!(!glob_match(b"sandbox.*.ready", b"sandbox.snapshot.readyx"));
        // The pattern that took seconds (16 stars) or blew the stack (tens
        // of thousands): now a bounded loop.
        let stars = "*".repeat(100_000) + "x";
        let kind = "sandbox.exec.completed".repeat(3);
        let started = std::time::Instant::now();
        assert!(!glob_match(stars.as_bytes(), kind.as_bytes()));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn filters_refuse_too_many_or_too_long_globs() {
        let f = EventFilter::new("t".into(), None, Some(" sandbox.* , ,*.ready")).unwrap();
        assert_eq!(f.globs, ["sandbox.*", "*.ready"]);
        let many = vec!["a"; MAX_GLOBS + 1].join(",");
        let e = EventFilter::new("t".into(), None, Some(&many)).unwrap_err();
        assert_eq!(
            (e.code, e.details[0].field.as_str()),
            ("validation_error", "types")
        );
        let long = "*".repeat(MAX_GLOB_LEN + 1);
        let e = EventFilter::new("t".into(), None, Some(&long)).unwrap_err();
        assert!(e.message.contains("128 bytes"), "{}", e.message);
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
