//! Which node runs a sandbox, so that any node can answer for it: the
//! other nodes as this one last read them (refreshed with every heartbeat,
//! and at once when a sandbox names a node not yet seen), and the lookup
//! the API and the preview proxy make before they serve a sandbox. And
//! what other nodes revoked: with every heartbeat, a revocation anywhere
//! empties this node's key cache and has its open connections check their
//! grants again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::RwLock;

use crate::model::{NodeRecord, NodeState};
use crate::store::StoreResult;
use crate::Core;

/// The nodes sharing the store, by id, as last read.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    nodes: RwLock<HashMap<String, NodeRecord>>,
    /// The latest revocation this node has acted on (unix ms).
    revoked_at: AtomicI64,
}

impl Peers {
    pub(crate) fn replace(&self, list: Vec<NodeRecord>) {
        *self.nodes.write() = list.into_iter().map(|n| (n.id.clone(), n)).collect();
    }

    fn get(&self, id: &str) -> Option<NodeRecord> {
        self.nodes.read().get(id).cloned()
    }

    pub(crate) fn state_of(&self, id: &str) -> Option<NodeState> {
        self.nodes.read().get(id).map(|n| n.state)
    }

    fn others_live(&self, me: &str) -> bool {
        self.nodes
            .read()
            .values()
            .any(|n| n.id != me && matches!(n.state, NodeState::Active | NodeState::Draining))
    }
}

/// Who answers for a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node: it runs the sandbox, or nobody does (unknown, or its
    /// node is lost or gone), and the answer comes from the store.
    Here,
    /// Another live node runs it: requests go there.
    Node(NodeRecord),
}

impl Core {
    /// Who answers for sandbox `id`. A sandbox this node holds costs no
    /// store read; any other costs one (its record), plus the node list
    /// when it names a node not yet seen.
    pub async fn sandbox_owner(&self, id: &str) -> StoreResult<Owner> {
        if self.handle(id).is_some() {
            return Ok(Owner::Here);
        }
        let Some(rec) = self.store.get_sandbox(id).await? else {
            return Ok(Owner::Here);
        };
        // A destroyed sandbox's node still holds its snapshots.
        let node = match rec.node_id {
            Some(n) if n != self.node_id => n,
            _ => return Ok(Owner::Here),
        };
        let owner = self.live_node(&node).await?;
        // A lost node's paused sandbox: the node with its copy, if any.
        if owner == Owner::Here && rec.state == crate::model::SandboxState::Paused {
            if let Some(copy) = self.store.replica_of(id).await? {
                return self.live_node(&copy).await;
            }
        }
        Ok(owner)
    }

    /// Who holds snapshot `id`'s files: the node of its sandbox.
    pub async fn snapshot_owner(&self, id: &str) -> StoreResult<Owner> {
        match self.store.get_snapshot(id).await? {
            Some(s) => self.sandbox_owner(&s.sandbox_id).await,
            None => Ok(Owner::Here),
        }
    }

    /// `Owner::Node` when node `id` is another node that answers
    /// (active or draining), else `Here`.
    pub async fn live_node(&self, id: &str) -> StoreResult<Owner> {
        if id == self.node_id {
            return Ok(Owner::Here);
        }
        let live = |n: &NodeRecord| matches!(n.state, NodeState::Active | NodeState::Draining);
        // Not seen yet, not live as last read (it may be back since), or
        // silent for longer than a node may be (another node may have
        // found it lost since): read the list again.
        let silent_after = self.now_ms() - self.config.cluster.lost_after_ms as i64;
        let known = match self.peers.get(id) {
            Some(n) if live(&n) && n.heartbeat_at >= silent_after => Some(n),
            _ => {
                self.refresh_peers().await?;
                self.peers.get(id)
            }
        };
        Ok(match known {
            Some(n) if live(&n) => Owner::Node(n),
            _ => Owner::Here,
        })
    }

    /// Whether other live nodes share the store (as last read).
    pub fn has_peers(&self) -> bool {
        self.peers.others_live(&self.node_id)
    }

    /// Acts on revocations made since the last call, on any node: keys
    /// are looked up afresh and open connections check their grants.
    pub(crate) async fn catch_up_revocations(&self) -> StoreResult<()> {
        let at = self.store.latest_revocation().await?;
        if self.peers.revoked_at.fetch_max(at, Ordering::SeqCst) < at {
            self.forget_all_keys();
            self.access.taken();
        }
        Ok(())
    }

    /// Reads the node list again.
    pub(crate) async fn refresh_peers(&self) -> StoreResult<()> {
        let list = self.store.list_nodes().await?;
        self.peers.replace(list);
        Ok(())
    }
}
