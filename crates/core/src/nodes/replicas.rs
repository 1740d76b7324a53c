//! Copies of paused sandboxes' snapshots on another node (`[cluster]
//! replicate_paused`): the server copies each pause's snapshot to the
//! active node with the most free disk (`cluster::replicas`) and records
//! it here, for that pause only. When the sandbox's node is lost, requests
//! for the paused sandbox go to the node holding the copy, which takes
//! the sandbox over from it on resume. A resume or destroy on the
//! sandbox's own node forgets the copy.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
use crate::model::{NodeRecord, NodeState, SandboxState};
use crate::nodes::peers::Owner;
use crate::Core;

impl Core {
    /// Where this node keeps copies of other nodes' paused snapshots.
    pub fn replica_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("replicas").join(id)
    }

    /// The active node, other than this one, with the most disk free.
    pub async fn replica_target(&self) -> Result<Option<NodeRecord>> {
        let best = self
            .nodes()
            .await?
            .into_iter()
            .filter(|(n, _)| n.id != self.node_id && n.state == NodeState::Active)
            .max_by_key(|(n, l)| n.disk_mb.saturating_sub(l.disk_mb))
            .map(|(n, _)| n);
        Ok(best)
    }

    /// Records that `node` holds a copy of the pause at `paused_at`;
    /// false when the sandbox was resumed or destroyed meanwhile.
    pub async fn record_replica(&self, id: &str, node: &str, paused_at: i64) -> Result<bool> {
        Ok(self.store.put_replica(id, node, paused_at).await?)
    }

    /// The node holding a copy of paused sandbox `id`'s snapshot.
    pub async fn replica_of(&self, id: &str) -> Result<Option<String>> {
        Ok(self.store.replica_of(id).await?)
    }

    /// Forgets sandbox `id`'s copy; the node that held it.
    pub async fn forget_replica(&self, id: &str) -> Result<Option<String>> {
        let node = self.store.replica_of(id).await?;
        if node.is_some() {
            self.store.drop_replica(id).await?;
        }
        Ok(node)
    }

    /// Whether node `node` of paused sandbox `id` is lost or gone and the
    /// copy is here: then this node answers for it.
    pub(crate) async fn replica_here(&self, id: &str) -> Result<bool> {
        Ok(self.store.replica_of(id).await?.as_deref() == Some(self.node_id.as_str()))
    }

    /// Takes paused sandbox `id` over from the copy here when its node is
    /// lost or gone; false when there is nothing to take (it is not
    /// paused, its node answers, or the copy is elsewhere).
    pub async fn adopt_replica(self: &Arc<Core>, id: &str) -> Result<bool> {
        if self.handle(id).is_some() {
            return Ok(false);
        }
        let Some(rec) = self.store.get_sandbox(id).await? else {
            return Ok(false);
        };
        let Some(from) = rec.node_id.clone().filter(|n| *n != self.node_id) else {
            return Ok(false);
        };
        if rec.state != SandboxState::Paused
            || self.live_node(&from).await? != Owner::Here
            || !self.replica_here(id).await?
        {
            return Ok(false);
        }
        let dir = self.replica_dir(id);
        self.take_over(id, &from, &dir).await?;
        tracing::warn!(sandbox_id = id, lost_node = %from, "paused sandbox taken over from its copy");
        Ok(true)
    }
}
