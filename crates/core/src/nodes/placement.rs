//! Where a create runs when several nodes share the store: an active node
//! with room for it (its capacity times the configured overcommit, less
//! what its sandboxes and the promises made to it take), preferring the
//! requested `region` label, then the node left with the most room, with
//! a bonus for one that holds the template's snapshot (it boots the
//! create warm). The choice and a promise of the room are made under the
//! store's placement lock, so two creates on two nodes never both take the
//! last room of one; the promise counts until the sandbox's record is
//! stored, or expires after [`PROMISE_MS`]. No room anywhere is
//! `503 no_capacity`, naming what is short.
//!
//! A node alone on its store places nothing: its creates run there, as
//! they always have, bounded by quotas and the host's own checks.

use crate::config::ClusterConfig;
use crate::error::{Error, Kind, Result};
use crate::ids::new_id;
use crate::model::{NodeLoad, NodeRecord, NodeState, PlacementRecord};
use crate::Core;

/// How long a promise of room holds a node's capacity for a create that
/// has not stored its sandbox yet.
pub const PROMISE_MS: i64 = 60_000;

/// How much room one node's bonus for holding the template's snapshot is
/// worth, as a fraction of its capacity.
const WARM_BONUS: f64 = 0.1;

/// What a create needs of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub vcpus: u64,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// The `region` label asked for, if any (a preference).
    pub region: Option<String>,
    /// `<template>/<version>/<shape>`, when the template resolves.
    pub template: Option<String>,
}

/// Where a create runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On this node, under the promise `Some(id)` (none when alone).
    Here(Option<String>),
    /// On another node, under the promise with this id.
    Node(NodeRecord, String),
}

/// What a node can give, all told: capacity times overcommit.
fn allowance(n: &NodeRecord, c: &ClusterConfig) -> [u64; 3] {
    let pct = |v: u64, p: u32| v.saturating_mul(u64::from(p)) / 100;
    [
        pct(u64::from(n.vcpus), c.cpu_overcommit_percent),
        pct(n.memory_mb, c.memory_overcommit_percent),
        pct(n.disk_mb, c.disk_overcommit_percent),
    ]
}

fn taken(l: &NodeLoad) -> [u64; 3] {
    [l.vcpus, l.memory_mb, l.disk_mb]
}

const WHAT: [&str; 3] = ["vCPUs", "MiB of memory", "MiB of disk"];

/// The node for `need` among `nodes` (with their loads), or why none fits.
pub(crate) fn choose(
    nodes: &[(NodeRecord, NodeLoad)],
    need: &Need,
    c: &ClusterConfig,
    now: i64,
) -> std::result::Result<String, String> {
    let want = [need.vcpus, need.memory_mb, need.disk_mb];
    let fresh = now - c.lost_after_ms as i64;
    let live: Vec<_> = nodes
        .iter()
        .filter(|(n, _)| n.state == NodeState::Active && n.heartbeat_at >= fresh)
        .collect();
    if live.is_empty() {
        return Err("no node takes new sandboxes (every node is draining, lost or gone)".into());
    }
    let mut most_free = [0u64; 3];
    let mut best: Option<((bool, f64), &NodeRecord)> = None;
    for (n, load) in &live {
        let all = allowance(n, c);
        let used = taken(load);
        let free: Vec<u64> = (0..3).map(|i| all[i].saturating_sub(used[i])).collect();
        for i in 0..3 {
            most_free[i] = most_free[i].max(free[i]);
        }
        if (0..3).any(|i| free[i] < want[i]) {
            continue;
        }
        // Room left after this create, by its scarcest dimension.
        let left = (0..3)
            .map(|i| (free[i] - want[i]) as f64 / all[i].max(1) as f64)
            .fold(f64::INFINITY, f64::min);
        let warm = need
            .template
            .as_ref()
            .is_some_and(|t| n.templates.contains(t));
        let score = left + if warm { WARM_BONUS } else { 0.0 };
        let in_region = need
            .region
            .as_ref()
            .is_some_and(|r| n.labels.get("region") == Some(r));
        let key = (in_region, score);
        let better = match &best {
            None => true,
            Some(((r, s), b)) => {
                (in_region, score) > (*r, *s) || ((key == (*r, *s)) && n.id < b.id)
            }
        };
        if better {
            best = Some((key, n));
        }
    }
    if let Some((_, n)) = best {
        return Ok(n.id.clone());
    }
    let short: Vec<String> = (0..3)
        .filter(|&i| most_free[i] < want[i])
        .map(|i| {
            format!(
                "{} {} (the most any node has free is {})",
                want[i], WHAT[i], most_free[i]
            )
        })
        .collect();
    Err(match short.is_empty() {
        true => format!(
            "no single node has {} vCPUs, {} MiB of memory and {} MiB of disk free at once",
            want[0], want[1], want[2]
        ),
        false => format!("no node has room for {}", short.join(", ")),
    })
}

impl Core {
    /// Where a create needing `need` runs (see the module). Alone on the
    /// store, here with no promise.
    pub async fn place(&self, need: Need) -> Result<Placement> {
        // A node that joined since the last heartbeat counts at once (one
        // read of the small node list per create on a lone node).
        if !self.has_peers() {
            self.refresh_peers().await?;
        }
        if !self.has_peers() {
            return Ok(Placement::Here(None));
        }
        let now = self.now_ms();
        let config = self.config.cluster.clone();
        let why = parking_lot::Mutex::new(String::new());
        let choice = |nodes: &[(NodeRecord, NodeLoad)]| match choose(nodes, &need, &config, now) {
            Ok(node_id) => Some(PlacementRecord {
                id: new_id("plc"),
                node_id,
                vcpus: need.vcpus,
                memory_mb: need.memory_mb,
                disk_mb: need.disk_mb,
                expires_at: now + PROMISE_MS,
            }),
            Err(e) => {
                *why.lock() = e;
                None
            }
        };
        let Some(promise) = self.store.place(now, &choice).await? else {
            return Err(Error::new(
                Kind::Unavailable,
                "no_capacity",
                why.into_inner(),
            ));
        };
        if promise.node_id == self.node_id {
            return Ok(Placement::Here(Some(promise.id)));
        }
        let node = self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .find(|n| n.id == promise.node_id);
        match node {
            Some(n) => Ok(Placement::Node(n, promise.id)),
            None => Err(Error::new(
                Kind::Unavailable,
                "no_capacity",
                format!("node {} left as the create was placed", promise.node_id),
            )),
        }
    }

    /// Whether this node has room for `need` now (its capacity times the
    /// overcommit, less what its sandboxes and promises take).
    pub async fn room_here(&self, need: &Need) -> Result<bool> {
        let nodes = self.nodes().await?;
        let Some((me, load)) = nodes.iter().find(|(n, _)| n.id == self.node_id) else {
            return Ok(true);
        };
        let all = allowance(me, &self.config.cluster);
        let used = taken(load);
        let want = [need.vcpus, need.memory_mb, need.disk_mb];
        // A paused sandbox's disk is in the load already.
        Ok((0..2).all(|i| all[i].saturating_sub(used[i]) >= want[i]))
    }

    /// A promise kept (its sandbox is stored) or given up.
    pub async fn release_placement(&self, id: &str) {
        if let Err(e) = self.store.release_placement(id).await {
            tracing::warn!(placement = id, error = %e, "placement release failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn node(id: &str, region: &str, templates: &[&str]) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            api_url: String::new(),
            proxy_url: None,
            vcpus: 4,
            memory_mb: 8_192,
            disk_mb: 100_000,
            labels: BTreeMap::from([("region".into(), region.into())]),
            templates: templates.iter().map(|t| t.to_string()).collect(),
            key_check: String::new(),
            state: NodeState::Active,
            started_at: 0,
            heartbeat_at: 1_000,
        }
    }

    fn load(vcpus: u64, memory_mb: u64) -> NodeLoad {
        NodeLoad {
            sandboxes: vcpus,
            vcpus,
            memory_mb,
            disk_mb: 0,
        }
    }

    fn config() -> ClusterConfig {
        ClusterConfig {
            cpu_overcommit_percent: 100,
            memory_overcommit_percent: 100,
            disk_overcommit_percent: 100,
            ..ClusterConfig::default()
        }
    }

    fn need(vcpus: u64, memory_mb: u64) -> Need {
        Need {
            vcpus,
            memory_mb,
            disk_mb: 1_000,
            region: None,
            template: Some("minimal/v1/1c-512m-1000d".into()),
        }
    }

    #[test]
    fn the_emptiest_node_with_room_wins_and_region_comes_first() {
        let c = config();
        let nodes = vec![
            (node("a", "eu", &[]), load(2, 4_096)),
            (node("b", "us", &[]), load(0, 0)),
        ];
        assert_eq!(choose(&nodes, &need(1, 512), &c, 1_000), Ok("b".into()));
        let mut eu = need(1, 512);
        eu.region = Some("eu".into());
        assert_eq!(choose(&nodes, &eu, &c, 1_000), Ok("a".into()));
        // A region with no room is a preference, not a wall.
        eu.vcpus = 3;
        assert_eq!(choose(&nodes, &eu, &c, 1_000), Ok("b".into()));
    }

    #[test]
    fn a_node_with_the_template_snapshot_is_preferred_when_nearly_as_free() {
        let c = config();
        let warm = "minimal/v1/1c-512m-1000d";
        let big = |id: &str, templates: &[&str]| NodeRecord {
            vcpus: 16,
            ..node(id, "eu", templates)
        };
        let nodes = vec![
            (big("a", &[warm]), load(1, 512)),
            (big("b", &[]), load(0, 0)),
        ];
        assert_eq!(choose(&nodes, &need(1, 512), &c, 1_000), Ok("a".into()));
        // Much fuller, it is passed over.
        let nodes = vec![
            (big("a", &[warm]), load(8, 6_000)),
            (big("b", &[]), load(0, 0)),
        ];
        assert_eq!(choose(&nodes, &need(1, 512), &c, 1_000), Ok("b".into()));
    }

    #[test]
    fn no_room_names_what_is_short_and_skips_draining_and_silent_nodes() {
        let c = config();
        let nodes = vec![
            (node("a", "eu", &[]), load(4, 1_024)),
            (node("b", "eu", &[]), load(3, 1_024)),
        ];
        let e = choose(&nodes, &need(2, 512), &c, 1_000).expect_err("full");
        assert!(
            e.contains("2 vCPUs (the most any node has free is 1)"),
            "{e}"
        );
        assert!(!e.contains("memory"), "{e}");
        let mut draining = node("c", "eu", &[]);
        draining.state = NodeState::Draining;
        let mut silent = node("d", "eu", &[]);
        silent.heartbeat_at = -100_000;
        let nodes = vec![(draining, load(0, 0)), (silent, load(0, 0))];
        let e = choose(&nodes, &need(1, 512), &c, 1_000).expect_err("none live");
        assert!(e.contains("draining"), "{e}");
        // Overcommit lets a node give more than it has.
        let c = ClusterConfig {
            cpu_overcommit_percent: 800,
            ..config()
        };
        let nodes = vec![(node("a", "eu", &[]), load(4, 1_024))];
        assert_eq!(choose(&nodes, &need(2, 512), &c, 1_000), Ok("a".into()));
    }
}
