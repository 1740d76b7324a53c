//! The timer wheel: one task holds every sandbox's next deadline (timeout
//! or idle) in a min-heap and wakes when the earliest is due. A fired timer
//! re-reads the sandbox and decides from its record (`SandboxRecord::due`),
//! so stale entries (activity moved the idle deadline, an extend moved the
//! timeout) are harmless: a deadline that is not due is just rescheduled.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex as SyncMutex;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::events::EventKind;
use crate::model::Expiry;
use crate::sandboxes::actor::{Op, PauseReason};
use crate::Core;

/// The longest the wheel sleeps without looking at the clock again (a
/// clock moved by hand in tests, or a wall clock that jumped).
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// A sandbox id and its next deadline (`None`: no timer).
type Schedule = (String, Option<i64>);

#[derive(Debug)]
pub struct Timers {
    tx: mpsc::UnboundedSender<Schedule>,
    rx: SyncMutex<Option<mpsc::UnboundedReceiver<Schedule>>>,
    clock: Arc<dyn Clock>,
    poke: Arc<Notify>,
}

impl Timers {
    pub fn new(clock: Arc<dyn Clock>) -> Timers {
        let (tx, rx) = mpsc::unbounded_channel();
        Timers {
            tx,
            rx: SyncMutex::new(Some(rx)),
            clock,
            poke: Arc::new(Notify::new()),
        }
    }

    /// Sets (or clears, with `None`) the sandbox's next deadline.
    pub fn schedule(&self, id: &str, deadline_ms: Option<i64>) {
        let _ = self.tx.send((id.to_string(), deadline_ms));
    }

    /// Makes the wheel look at the clock now (tests with a manual clock).
    pub fn poke(&self) {
        self.poke.notify_one();
    }
}

/// The heap and the newest deadline per sandbox; pure, so it is tested
/// without tasks or time.
#[derive(Debug, Default)]
pub(crate) struct Wheel {
    heap: BinaryHeap<Reverse<(i64, String)>>,
    current: HashMap<String, i64>,
}

impl Wheel {
    pub(crate) fn set(&mut self, id: String, deadline: Option<i64>) {
        match deadline {
            Some(d) => {
                if self.current.get(&id) != Some(&d) {
                    self.current.insert(id.clone(), d);
                    self.heap.push(Reverse((d, id)));
                }
            }
            None => {
                self.current.remove(&id);
            }
        }
    }

    /// The earliest live deadline.
    pub(crate) fn next(&mut self) -> Option<i64> {
        while let Some(Reverse((d, id))) = self.heap.peek() {
            if self.current.get(id) == Some(d) {
                return Some(*d);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns every sandbox due at `now`.
    pub(crate) fn pop_due(&mut self, now: i64) -> Vec<String> {
        let mut due = Vec::new();
        while let Some(d) = self.next() {
            if d > now {
                break;
            }
            if let Some(Reverse((_, id))) = self.heap.pop() {
                self.current.remove(&id);
                due.push(id);
            }
        }
        due
    }
}

pub(crate) fn spawn_wheel(core: Arc<Core>, stop: CancellationToken) {
    let Some(mut rx) = core.timers.rx.lock().take() else {
        return;
    };
    let clock = core.timers.clock.clone();
    let poke = core.timers.poke.clone();
    tokio::spawn(async move {
        let mut wheel = Wheel::default();
        loop {
            let now = clock.now_ms();
            for id in wheel.pop_due(now) {
                let core = core.clone();
                tokio::spawn(async move { fire(&core, &id).await });
            }
            let sleep = wheel
                .next()
                .map(|d| Duration::from_millis((d - now).max(1) as u64))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = rx.recv() => match msg {
                    Some((id, d)) => wheel.set(id, d),
                    None => return,
                },
                _ = poke.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    });
}

/// A deadline passed: do what the record says is due, if anything.
async fn fire(core: &Arc<Core>, id: &str) {
    let Some(h) = core.handle(id) else { return };
    let rec = h.record();
    let now = core.now_ms();
    let Some(expiry) = rec.due(now) else {
        core.timers.schedule(id, rec.next_deadline());
        return;
    };
    let (kind, data) = match expiry {
        Expiry::TimeoutDestroy => (EventKind::SandboxTimeout, json!({"action": "destroy"})),
        Expiry::TimeoutPause => (EventKind::SandboxTimeout, json!({"action": "pause"})),
        Expiry::IdleDestroy => (EventKind::SandboxIdle, json!({"action": "destroy"})),
        Expiry::IdlePause => (EventKind::SandboxIdle, json!({"action": "pause"})),
    };
    tracing::info!(sandbox_id = id, ?expiry, "timer fired");
    core.events
        .emit_logged(&h.tenant_id, Some(id), kind, data)
        .await;
    let op = match expiry {
        Expiry::TimeoutDestroy => Op::Destroy {
            reason: "timeout",
            reply: None,
        },
        Expiry::TimeoutPause => Op::Pause {
            reason: PauseReason::Timeout,
            reply: None,
        },
        Expiry::IdleDestroy => Op::Destroy {
            reason: "idle",
            reply: None,
        },
        Expiry::IdlePause => Op::Pause {
            reason: PauseReason::Idle,
            reply: None,
        },
    };
    h.send(op);
    // The audit log names the system as the actor.
    let (kind, action) = match expiry {
        Expiry::TimeoutDestroy => ("sandbox.destroy", "timeout"),
        Expiry::TimeoutPause => ("sandbox.pause", "timeout"),
        Expiry::IdleDestroy => ("sandbox.destroy", "idle"),
        Expiry::IdlePause => ("sandbox.pause", "idle"),
    };
    core.record_audit(
        &crate::keys::Caller::system(&h.tenant_id, "timer"),
        crate::audit::NewAudit {
            kind: kind.into(),
            resource_type: Some("sandbox".into()),
            resource_id: Some(id.to_string()),
            request_id: None,
            ip: None,
            outcome: "ok",
            error_code: None,
            details: json!({ "reason": action }),
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_fires_in_order_and_skips_stale_deadlines() {
        let mut w = Wheel::default();
        w.set("a".into(), Some(100));
        w.set("b".into(), Some(50));
        w.set("c".into(), Some(70));
        // Activity moved a's deadline; the old entry must not fire.
        w.set("a".into(), Some(300));
        // c was cleared (destroyed, paused, always_on).
        w.set("c".into(), None);
        assert_eq!(w.next(), Some(50));
        assert_eq!(w.pop_due(49), Vec::<String>::new());
        assert_eq!(w.pop_due(100), vec!["b".to_string()]);
        assert_eq!(w.next(), Some(300));
        assert_eq!(w.pop_due(1_000), vec!["a".to_string()]);
        assert_eq!(w.next(), None);
    }

    #[test]
    fn same_deadline_twice_is_one_entry() {
        let mut w = Wheel::default();
        w.set("a".into(), Some(10));
        w.set("a".into(), Some(10));
        assert_eq!(w.pop_due(10), vec!["a".to_string()]);
        assert!(w.pop_due(10).is_empty());
    }
}
