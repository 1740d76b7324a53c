//! Lifecycle calls: health, init (identity after boot or restore), sync
//! (before a snapshot) and shutdown.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Json;
use hearth_agent_protocol::{
    routes, HealthResponse, InitRequest, InitResponse, ShutdownRequest, SyncResponse,
    PROTOCOL_VERSION,
};

use super::{AgentRouter, AgentState};
use crate::error::{HandlerError, HandlerResult};
use crate::extract::JsonBody;

pub fn routes() -> AgentRouter {
    AgentRouter::new()
        .route(routes::HEALTH, get(health))
        .route(routes::INIT, post(init))
        .route(routes::SYNC, post(sync))
        .route(routes::SHUTDOWN, post(shutdown))
}

async fn health(agent: AgentState) -> Json<HealthResponse> {
    let sandbox_id = agent.identity.read().sandbox_id.clone();
    Json(HealthResponse {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms: agent.started.elapsed().as_millis() as u64,
        pid1: agent.config.pid1,
        sandbox_id,
    })
}

async fn init(
    agent: AgentState,
    JsonBody(req): JsonBody<InitRequest>,
) -> HandlerResult<Json<InitResponse>> {
    if req.sandbox_id.is_empty() {
        return Err(HandlerError::bad_request("sandbox_id must not be empty"));
    }
    if let Some(h) = &req.hostname {
        validate_hostname(h)?;
    }
    for key in req.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(HandlerError::bad_request(format!(
                "invalid env name {key:?}"
            )));
        }
    }
    let manage = agent.config.manage_system;
    let mut resp = InitResponse {
        hostname_set: false,
        clock_set: false,
        entropy_added: false,
    };
    if manage {
        if let Some(h) = &req.hostname {
            nix::unistd::sethostname(h)
                .map_err(|e| HandlerError::internal(format!("set hostname: {e}")))?;
            resp.hostname_set = true;
        }
        if let Some(ms) = req.clock_unix_ms {
            let ts =
                nix::sys::time::TimeSpec::new(ms.div_euclid(1000), ms.rem_euclid(1000) * 1_000_000);
            nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts)
                .map_err(|e| HandlerError::internal(format!("set clock: {e}")))?;
            resp.clock_set = true;
        }
    }
    if let Some(entropy) = req.entropy.as_ref().filter(|e| !e.0.is_empty()) {
        // Inline: two ioctls that never block. A blocking-pool task would
        // start a thread in a just-restored guest, on every create.
        resp.entropy_added = add_entropy(&entropy.0, manage)
            .map_err(|e| HandlerError::internal(format!("add entropy: {e}")))?;
    }
    let mut identity = agent.identity.write();
    identity.sandbox_id = Some(req.sandbox_id.clone());
    let mut env = req.env;
    for k in &req.keep_env {
        if let Some(v) = identity.env.get(k).filter(|_| !env.contains_key(k)) {
            env.insert(k.clone(), v.clone());
        }
    }
    identity.env = env;
    tracing::debug!(sandbox_id = %req.sandbox_id, ?resp, "initialized");
    Ok(Json(resp))
}

fn validate_hostname(h: &str) -> HandlerResult<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !h.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(HandlerError::bad_request(format!("invalid hostname {h:?}")))
    }
}

/// Mixes `bytes` into the kernel pool. With `credit` (the agent manages the
/// system and is root) the bytes are also credited, so `getrandom` in a fresh
/// clone does not block; otherwise they are only mixed in.
fn add_entropy(bytes: &[u8], credit: bool) -> std::io::Result<bool> {
    use std::io::Write;
    if credit && nix::unistd::Uid::effective().is_root() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/random")?;
        let mut info = Vec::with_capacity(8 + bytes.len());
        info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
        info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
        info.extend_from_slice(bytes);
        // RNDADDENTROPY = _IOW('R', 0x03, int[2])
        const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
        use std::os::fd::AsRawFd;
        // SAFETY: `info` is a valid rand_pool_info: two ints then `buf_size` bytes.
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) };
        if rc == 0 {
            // Credited entropy is not used until the next reseed; force it,
            // so clones restored from one snapshot diverge at once.
            // RNDRESEEDCRNG = _IO('R', 0x07)
            const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
            // SAFETY: RNDRESEEDCRNG takes no argument.
            let rc = unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG) };
            if rc != 0 {
                tracing::warn!(error = %std::io::Error::last_os_error(), "RNDRESEEDCRNG failed");
            }
            return Ok(true);
        }
        tracing::warn!(error = %std::io::Error::last_os_error(), "RNDADDENTROPY failed; mixing only");
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?
        .write_all(bytes)?;
    Ok(true)
}

async fn sync() -> HandlerResult<Json<SyncResponse>> {
    let start = Instant::now();
    tokio::task::spawn_blocking(nix::unistd::sync)
        .await
        .map_err(|e| HandlerError::internal(format!("sync task: {e}")))?;
    Ok(Json(SyncResponse {
        duration_ms: start.elapsed().as_millis() as u64,
    }))
}

async fn shutdown(
    agent: AgentState,
    body: axum::body::Bytes,
) -> HandlerResult<Json<serde_json::Value>> {
    let req: ShutdownRequest = if body.is_empty() {
        ShutdownRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| HandlerError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let reboot = req.reboot;
    agent.reboot_requested.store(reboot, Ordering::Relaxed);
    tracing::info!(reboot, "shutdown requested");
    let token = agent.shutdown.clone();
    // Answer first, then wind down.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        token.cancel();
    });
    Ok(Json(serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_checked() {
        assert!(validate_hostname("sbx-abc.local").is_ok());
        assert!(validate_hostname("").is_err());
        assert!(validate_hostname("-x").is_err());
        assert!(validate_hostname("a b").is_err());
        assert!(validate_hostname(&"a".repeat(65)).is_err());
    }
}
