//! This server as one node of several sharing a store: its identity (kept
//! in `data/node.id`), its registration with address, capacity and labels,
//! a heartbeat, and the sweep that finds nodes that stopped answering.
//!
//! A node that misses its heartbeats for `lost_after_ms` is `lost`: the
//! sweeping node (one of them, the store's `mark_lost_nodes` answers each
//! lost node once) puts what it ran in `error`, `last_error` naming the
//! node, with an event. A node that comes back registers again and its
//! recovery re-adopts the VMs it still runs. With SQLite there is one node
//! and all of this is bookkeeping.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

pub mod moves;
pub mod peers;
pub mod placement;
pub mod records;
pub mod replicas;

use crate::error::{Error, Kind, Result};
use crate::events::EventKind;
use crate::model::{NodeLoad, NodeRecord, NodeState, SandboxState};
use crate::Core;

/// The metadata key a lost node's sandboxes get (its id): the node, back,
/// re-adopts those whose VM still runs.
pub const LOST_NODE: &str = "lost_node";

/// Where a node keeps its id across restarts.
const NODE_ID_FILE: &str = "node.id";

/// This node's id: the configured one, else the one in `data_dir`, else a
/// new one written there.
pub(crate) fn node_id(
    config: &crate::config::ServerConfig,
    data_dir: &Path,
) -> std::io::Result<String> {
    if let Some(id) = &config.cluster.node_id {
        return Ok(id.clone());
    }
    let file = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&file) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = crate::ids::new_id("node");
    std::fs::write(&file, format!("{id}\n"))?;
    Ok(id)
}

/// This host's capacity: the configured figures, else the host's own.
fn capacity(config: &crate::config::ServerConfig, data_dir: &Path) -> (u32, u64, u64) {
    let c = &config.cluster;
    let vcpus = match c.vcpus {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        n => n,
    };
    let memory_mb = match c.memory_mb {
        0 => host_memory_mb().unwrap_or(0),
        n => n,
    };
    let disk_mb = match c.disk_mb {
        0 => nix::sys::statvfs::statvfs(data_dir)
            .map(|s| s.blocks() * s.fragment_size() / (1 << 20))
            .unwrap_or(0),
        n => n,
    };
    (vcpus, memory_mb, disk_mb)
}

/// The host of `scheme://host[:port][/...]` (an IPv6 host keeps its
/// brackets).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.rfind(']') {
        Some(end) => &authority[..=end],
        None => authority.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

fn host_memory_mb() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

impl Core {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// How other nodes reach this node's preview proxy: as configured,
    /// else the API's host at the proxy's port.
    fn proxy_url(&self) -> String {
        let c = &self.config;
        if let Some(u) = &c.cluster.node_proxy_url {
            return u.clone();
        }
        match c.cluster.node_url.as_deref().and_then(url_host) {
            Some(h) => format!("http://{h}:{}", c.preview.listen.port()),
            None => format!("http://{}", c.preview.listen),
        }
    }

    /// This node as it registers: address, capacity, labels.
    fn node_record(&self, state: NodeState) -> NodeRecord {
        let (vcpus, memory_mb, disk_mb) = capacity(&self.config, &self.data_dir);
        let api_url = self
            .config
            .cluster
            .node_url
            .clone()
            .or_else(|| self.config.public_url.clone())
            .unwrap_or_else(|| format!("http://{}", self.config.listen));
        let proxy_url = self.config.preview.enabled.then(|| self.proxy_url());
        let now = self.now_ms();
        NodeRecord {
            id: self.node_id.clone(),
            api_url,
            proxy_url,
            vcpus,
            memory_mb,
            disk_mb,
            labels: self.config.cluster.labels.clone(),
            templates: self.warm_templates(),
            key_check: self.key_check(),
            state,
            started_at: now,
            heartbeat_at: now,
        }
    }

    /// A digest of this node's sealing key (not the key: a hash of a
    /// secret derived from it), to find a node that does not share it.
    fn key_check(&self) -> String {
        let d = self.derive_secret("hearth-node-key-check", "");
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Registers this node (active again after a restart, even if others
    /// had found it lost) and starts its heartbeat and sweep. A node whose
    /// sealing key differs from a live node's refuses to join: nodes sign
    /// what they send each other with it.
    pub(crate) async fn join_cluster(self: &Arc<Core>) -> anyhow::Result<()> {
        let nodes = self.store.list_nodes().await?;
        let mine = self.key_check();
        if let Some(other) = nodes.iter().find(|n| {
            n.id != self.node_id
                && matches!(n.state, NodeState::Active | NodeState::Draining)
                && !n.key_check.is_empty()
                && n.key_check != mine
        }) {
            anyhow::bail!(
                "this node's sealing key differs from node {}'s: every node sharing the \
                 database needs the same secrets_key_file (HEARTH_SECRETS_KEY_FILE)",
                other.id
            );
        }
        // A draining node stays draining across a restart.
        let draining = nodes
            .iter()
            .any(|n| n.id == self.node_id && n.state == NodeState::Draining);
        let state = match draining {
            true => NodeState::Draining,
            false => NodeState::Active,
        };
        self.store.put_node(&self.node_record(state)).await?;
        self.refresh_peers().await?;
        // Revocations before this start are in the store already.
        self.catch_up_revocations().await?;
        tracing::info!(node_id = %self.node_id, state = state.as_str(), "node registered");
        let core = self.clone();
        let stop = self.shutdown.clone();
        let every = Duration::from_millis(self.config.cluster.heartbeat_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => core.heartbeat().await,
                }
            }
        });
        Ok(())
    }

    async fn heartbeat(self: &Arc<Core>) {
        let now = self.now_ms();
        let templates = self.warm_templates();
        match self
            .store
            .node_heartbeat(&self.node_id, now, &templates)
            .await
        {
            Ok(Some(NodeState::Lost | NodeState::Gone)) | Ok(None) => {
                // Others gave this node up while it was away (a long
                // pause, a partition): it is back.
                tracing::warn!(node_id = %self.node_id, "node was given up; registering again");
                let _ = self
                    .store
                    .put_node(&self.node_record(NodeState::Active))
                    .await;
            }
            Ok(Some(_)) => {}
            Err(e) => tracing::warn!(error = %e, "node heartbeat failed"),
        }
        let cutoff = now - self.config.cluster.lost_after_ms as i64;
        match self.store.mark_lost_nodes(cutoff).await {
            Ok(lost) => {
                for node in lost.into_iter().filter(|n| n.id != self.node_id) {
                    self.node_lost(&node).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "lost-node sweep failed"),
        }
        // After the sweep, so that a node it found lost is seen lost here.
        if let Err(e) = self.refresh_peers().await {
            tracing::warn!(error = %e, "node list refresh failed");
        }
        if let Err(e) = self.catch_up_revocations().await {
            tracing::warn!(error = %e, "revocation check failed");
        }
    }

    /// What a lost node ran goes to `error`, naming it (its paused
    /// sandboxes keep their state: their snapshots are on its disk).
    async fn node_lost(&self, node: &NodeRecord) {
        tracing::warn!(node_id = %node.id, api_url = %node.api_url, "node lost");
        let live = match self.store.node_sandboxes(&node.id).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(node_id = %node.id, error = %e, "sandboxes of a lost node");
                return;
            }
        };
        let now = self.now_ms();
        for mut rec in live {
            if !matches!(
                rec.state,
                SandboxState::Running | SandboxState::Provisioning | SandboxState::Snapshotting
            ) {
                continue;
            }
            let why = format!(
                "node {} stopped answering (no heartbeat for {} ms)",
                node.id, self.config.cluster.lost_after_ms
            );
            let from = rec.state;
            rec.state = SandboxState::Error;
            rec.deadline_at = None;
            rec.metadata.insert("last_error".into(), json!(why));
            rec.metadata.insert(LOST_NODE.into(), json!(node.id));
            if let Err(e) = self.store.update_sandbox(&rec).await {
                tracing::error!(sandbox_id = %rec.id, error = %e, "mark a lost node's sandbox");
                continue;
            }
            // Billing stops when the node was last heard of.
            let _ = self
                .store
                .switch_usage(&rec.id, node.heartbeat_at.min(now), None)
                .await;
            self.events
                .emit_logged(
                    &rec.tenant_id,
                    Some(&rec.id),
                    EventKind::SandboxError,
                    json!({ "from": from.as_str(), "error": why, "node_id": node.id }),
                )
                .await;
        }
    }

    /// Says this node is gone (a clean stop): nothing to sweep.
    pub async fn leave_cluster(&self) {
        let from = [NodeState::Active, NodeState::Draining];
        if let Err(e) = self
            .store
            .set_node_state(&self.node_id, &from, NodeState::Gone)
            .await
        {
            tracing::warn!(error = %e, "node deregistration failed");
        }
    }

    /// Every node with what its sandboxes take of it.
    pub async fn nodes(&self) -> Result<Vec<(NodeRecord, NodeLoad)>> {
        let mut loads: BTreeMap<String, NodeLoad> = self.store.node_loads().await?;
        Ok(self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| {
                let load = loads.remove(&n.id).unwrap_or_default();
                (n, load)
            })
            .collect())
    }

    /// Stops (`drain`) or resumes new placements on node `id`.
    pub async fn drain_node(&self, id: &str, drain: bool) -> Result<NodeRecord> {
        let (from, to) = match drain {
            true => (
                [NodeState::Active, NodeState::Draining],
                NodeState::Draining,
            ),
            false => ([NodeState::Draining, NodeState::Active], NodeState::Active),
        };
        let moved = self.store.set_node_state(id, &from, to).await?;
        self.refresh_peers().await?;
        let node = self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .find(|n| n.id == id)
            .ok_or_else(|| {
                Error::new(
                    Kind::NotFound,
                    "node_not_found",
                    format!("node {id} not found"),
                )
            })?;
        if !moved {
            return Err(Error::conflict(
                "invalid_state",
                format!("node {id} is {}", node.state.as_str()),
            ));
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_proxy_is_reached_at_the_api_host() {
        let h = super::url_host;
        assert_eq!(h("http://10.1.2.3:7070"), Some("10.1.2.3"));
        assert_eq!(h("http://node-a.internal/api"), Some("node-a.internal"));
        assert_eq!(h("https://[fd00::1]:7070"), Some("[fd00::1]"));
        assert_eq!(h("http://"), None);
    }
}
