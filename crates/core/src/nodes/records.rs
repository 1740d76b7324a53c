//! What a node and its load are, as stored (re-exported from
//! [`crate::model`]).

use std::collections::BTreeMap;

/// A `hearth serve` sharing the database: where others reach it, what it
/// holds, and its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    /// How other nodes reach its API (`HEARTH_NODE_URL`).
    pub api_url: String,
    /// Its preview proxy, when it runs one.
    pub proxy_url: Option<String>,
    pub vcpus: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// `region` and the like, from its config.
    pub labels: BTreeMap<String, String>,
    /// The template snapshots it holds (`<template>/<version>/<shape>`).
    pub templates: Vec<String>,
    /// A digest of its sealing key, which every node must share.
    pub key_check: String,
    pub state: NodeState,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

/// A node's part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Takes new sandboxes.
    Active,
    /// Runs what it has, takes nothing new.
    Draining,
    /// Missed its heartbeats: what it ran is in `error`.
    Lost,
    /// Stopped cleanly.
    Gone,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Lost => "lost",
            NodeState::Gone => "gone",
        }
    }

    pub fn parse(s: &str) -> Option<NodeState> {
        [
            NodeState::Active,
            NodeState::Draining,
            NodeState::Lost,
            NodeState::Gone,
        ]
        .into_iter()
        .find(|n| n.as_str() == s)
    }
}

/// What the sandboxes a node runs take of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// Sandboxes not destroyed.
    pub sandboxes: u64,
    /// Of running sandboxes (paused ones give theirs back).
    pub vcpus: u64,
    pub memory_mb: u64,
    /// Of every sandbox not destroyed.
    pub disk_mb: u64,
}

/// Room a create was promised on a node: counted in its load until the
/// sandbox's record is stored there, or until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRecord {
    pub id: String,
    pub node_id: String,
    pub vcpus: u64,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub expires_at: i64,
}
