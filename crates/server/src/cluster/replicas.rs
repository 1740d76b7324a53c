//! `[cluster] replicate_paused`: after each pause on this node, a copy of
//! the paused snapshot goes to the active node with the most free disk
//! (that node pulls it, as for a move, into its `replicas/`), recorded for
//! that pause only; a resume, restore or destroy forgets the copy and has
//! its node delete it. If this node is lost, the paused sandbox resumes
//! on the node with the copy (`Core::adopt_replica`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use tokio::sync::broadcast::error::RecvError;

use super::forward;
use crate::core::Core;
use crate::model::{NodeRecord, SandboxState};

/// Follows this node's events and copies or forgets replicas; off unless
/// `replicate_paused`.
pub fn spawn(core: Arc<Core>) {
    if !core.config.cluster.replicate_paused {
        return;
    }
    let mut events = core.subscribe_events();
    let stop = core.shutdown_token();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                e = events.recv() => e,
            };
            let e = match event {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "replication fell behind the event bus");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let Some(id) = e.sandbox_id.clone() else {
                continue;
            };
            let core = core.clone();
            match e.kind.as_str() {
                "sandbox.paused" => {
                    tokio::spawn(async move { replicate(&core, &id).await });
                }
                "sandbox.resumed" | "sandbox.restored" | "sandbox.destroyed" => {
                    tokio::spawn(async move { forget(&core, &id).await });
                }
                _ => {}
            }
        }
    });
}

async fn call(core: &Core, node: &NodeRecord, method: Method, path: &str) -> Result<(), String> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = forward::send(core, node, &node.api_url, None, req).await?;
    match resp.status().is_success() {
        true => Ok(()),
        false => Err(format!("{path}: {}", resp.status())),
    }
}

/// Copies paused sandbox `id`'s snapshot to another node and records it.
async fn replicate(core: &Arc<Core>, id: &str) {
    let Some(rec) = core.handle(id).map(|h| h.record()) else {
        return;
    };
    let Some(paused_at) = rec.paused_at.filter(|_| rec.state == SandboxState::Paused) else {
        return;
    };
    let target = match core.replica_target().await {
        Ok(Some(n)) => n,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(sandbox_id = id, error = %e, "no replica target");
            return;
        }
    };
    let started = std::time::Instant::now();
    let path = format!(
        "/internal/v1/sandboxes/{id}/replica?from={}",
        core.node_id()
    );
    if let Err(why) = call(core, &target, Method::POST, &path).await {
        tracing::warn!(sandbox_id = id, to = %target.id, error = %why, "paused snapshot not copied");
        return;
    }
    match core.record_replica(id, &target.id, paused_at).await {
        Ok(true) => tracing::info!(
            sandbox_id = id,
            to = %target.id,
            ms = started.elapsed().as_millis() as u64,
            "paused snapshot copied"
        ),
        // Resumed or destroyed meanwhile: the copy is of nothing.
        _ => drop_copy(core, &target, id).await,
    }
}

/// Forgets sandbox `id`'s copy and has its node delete it.
async fn forget(core: &Arc<Core>, id: &str) {
    let node = match core.forget_replica(id).await {
        Ok(Some(n)) => n,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(sandbox_id = id, error = %e, "replica not forgotten");
            return;
        }
    };
    if node == core.node_id() {
        let _ = std::fs::remove_dir_all(core.replica_dir(id));
        return;
    }
    if let Ok(crate::core::nodes::peers::Owner::Node(n)) = core.live_node(&node).await {
        drop_copy(core, &n, id).await;
    }
}

async fn drop_copy(core: &Core, node: &NodeRecord, id: &str) {
    let path = format!("/internal/v1/sandboxes/{id}/replica");
    if let Err(why) = call(core, node, Method::DELETE, &path).await {
        tracing::debug!(sandbox_id = id, node_id = %node.id, error = %why, "replica not deleted");
    }
}
