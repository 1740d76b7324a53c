//! A resume on a draining node, or on one without room for the sandbox's
//! vCPUs and memory, moves the paused sandbox first: placed on a node that
//! takes new sandboxes, let go of here, copied and taken over there
//! ([`super::transfer`]), then the resume is sent there. A move that fails
//! leaves the sandbox paused here, as it was. (With no room anywhere, a
//! node that is not draining resumes it itself.)

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;

use super::{client_ip, forward, ForwardedOut};
use crate::core::keys::Caller;
use crate::core::nodes::placement::{Need, Placement};
use crate::core::Core;
use crate::error::ApiError;
use crate::model::{NodeRecord, SandboxState};

/// `Some(answer)` when the resume of `id` was sent to the node the
/// sandbox moved to; `None` to resume it here.
pub async fn resume(
    core: &Arc<Core>,
    caller: &Caller,
    id: &str,
    req: Request,
) -> Result<Option<Response>, ApiError> {
    // The caller's own sandbox, paused here, on a draining node.
    let rec = core.get_sandbox(caller, id).await?;
    // Paused on a lost node whose copy is here: this node takes it over.
    if rec.state == SandboxState::Paused && core.handle(id).is_none() {
        core.adopt_replica(id).await?;
    }
    if rec.state != SandboxState::Paused || core.handle(id).is_none() {
        return Ok(None);
    }
    if !core.has_peers() {
        return Ok(None);
    }
    let need = Need {
        vcpus: u64::from(rec.cpu_count),
        memory_mb: u64::from(rec.memory_mb),
        disk_mb: u64::from(rec.disk_size_mb),
        region: None,
        template: None,
    };
    let draining = core.is_draining().await?;
    if !draining && core.room_here(&need).await? {
        return Ok(None);
    }
    let placed = match core.place(need).await {
        Ok(p) => p,
        Err(e) if !draining && e.code == "no_capacity" => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (node, promise) = match placed {
        Placement::Here(p) => {
            if let Some(p) = p {
                core.release_placement(&p).await;
            }
            return Ok(None);
        }
        Placement::Node(n, p) => (n, p),
    };
    let moved = move_to(core, id, &node).await;
    let answer = match moved {
        Ok(()) => {
            let ip = client_ip(&req);
            forward::to_node(core, &node, &node.api_url, ip, req, false)
                .await
                .map(|mut r| {
                    r.extensions_mut().insert(ForwardedOut);
                    r
                })
                .map_err(|why| ApiError::new(StatusCode::BAD_GATEWAY, "node_unreachable", why))
        }
        Err(e) => Err(e),
    };
    core.release_placement(&promise).await;
    answer.map(Some)
}

/// Moves paused sandbox `id` to `node`: let go of here, copied and taken
/// over there, its files here then deleted; on failure, taken back.
pub async fn move_to(core: &Arc<Core>, id: &str, node: &NodeRecord) -> Result<(), ApiError> {
    core.release_paused(id).await?;
    let path = format!("/internal/v1/sandboxes/{id}/adopt?from={}", core.node_id());
    let started = std::time::Instant::now();
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    let outcome = match forward::send(core, node, &node.api_url, None, req).await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let status = r.status();
            let body = r.into_body().collect().await.map(|b| b.to_bytes());
            let text = body.map(|b| String::from_utf8_lossy(&b).into_owned());
            Err(format!("{status}: {}", text.unwrap_or_default()))
        }
        Err(why) => Err(why),
    };
    match outcome {
        Ok(()) => {
            core.drop_moved(id);
            tracing::info!(
                sandbox_id = id,
                to = %node.id,
                ms = started.elapsed().as_millis() as u64,
                "paused sandbox moved"
            );
            Ok(())
        }
        Err(why) => {
            tracing::warn!(sandbox_id = id, to = %node.id, error = %why, "move failed; kept here");
            core.reclaim_paused(id).await?;
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "move_failed",
                format!("moving sandbox {id} to node {} failed: {why}", node.id),
            ))
        }
    }
}
