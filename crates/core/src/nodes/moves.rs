//! A paused sandbox moves to another node: its node lets go of it (the
//! actor ends; the snapshot files stay to be copied), the other node
//! copies the snapshot (over HTTP, in the server's `cluster::transfer`),
//! and takes it over in the store in one conditional update, so that
//! exactly one node answers for it at any time. A move that fails gives
//! the sandbox back to its node.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{NodeState, SandboxRecord, SandboxState};
use crate::sandboxes::actor::Op;
use crate::Core;

impl Core {
    /// Whether this node is draining, read from the store now (a drain
    /// may come from any node).
    pub async fn is_draining(&self) -> Result<bool> {
        self.refresh_peers().await?;
        Ok(self.peers.state_of(&self.node_id) == Some(NodeState::Draining))
    }

    /// Lets go of paused sandbox `id` so that another node can take it:
    /// its actor ends (the files stay). 409 unless it is paused here.
    pub async fn release_paused(&self, id: &str) -> Result<SandboxRecord> {
        let h = self.handle(id).ok_or_else(|| Error::not_found("sandbox"))?;
        h.call(|tx| Op::Release { reply: Some(tx) }).await
    }

    /// Takes back a sandbox whose move failed: it is this node's again,
    /// paused, as the store has it.
    pub async fn reclaim_paused(self: &Arc<Core>, id: &str) -> Result<()> {
        let rec = self
            .store
            .get_sandbox(id)
            .await?
            .ok_or_else(|| Error::not_found("sandbox"))?;
        if rec.node_id.as_deref() == Some(self.node_id.as_str()) && self.handle(id).is_none() {
            let next = rec.next_deadline();
            self.spawn_actor(rec, None);
            self.timers.schedule(id, next);
        }
        Ok(())
    }

    /// What is left here of a sandbox another node now runs: its files.
    pub fn drop_moved(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.paused_dir(id));
        let _ = std::fs::remove_dir_all(self.sandboxes_dir().join(id));
    }

    /// Where a snapshot being copied here is written until it is whole.
    pub fn incoming_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("incoming").join(id)
    }

    /// Takes over paused sandbox `id` from node `from`, its snapshot whole
    /// in [`Core::incoming_dir`]: the store says this node runs it (only
    /// if it is still `from`'s and paused), the snapshot becomes its
    /// paused snapshot here, and an actor answers for it.
    pub async fn adopt_moved(self: &Arc<Core>, id: &str, from: &str) -> Result<SandboxRecord> {
        self.take_over(id, from, &self.incoming_dir(id)).await
    }

    /// Takes over paused sandbox `id` from node `from` with the snapshot
    /// in `snapshot` (made its paused snapshot here).
    pub(crate) async fn take_over(
        self: &Arc<Core>,
        id: &str,
        from: &str,
        snapshot: &std::path::Path,
    ) -> Result<SandboxRecord> {
        self.vmm
            .inspect_snapshot(snapshot)
            .map_err(|e| Error::from_snapshot_error(&e, "the move"))?;
        let dest = self.paused_dir(id);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(Error::internal)?;
        }
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(snapshot, &dest).map_err(Error::internal)?;
        if !self.store.move_paused(id, from, &self.node_id).await? {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(Error::conflict(
                "sandbox_moved",
                format!("sandbox {id} is no longer paused on node {from}"),
            ));
        }
        let rec = self
            .store
            .get_sandbox(id)
            .await?
            .ok_or_else(|| Error::not_found("sandbox"))?;
        debug_assert_eq!(rec.state, SandboxState::Paused);
        // A copy elsewhere is of a pause this node now answers for (one
        // here is the snapshot itself now, or stale).
        let _ = self.store.drop_replica(id).await;
        let _ = std::fs::remove_dir_all(self.replica_dir(id));
        let next = rec.next_deadline();
        self.spawn_actor(rec.clone(), None);
        self.timers.schedule(id, next);
        tracing::info!(sandbox_id = id, from, "paused sandbox moved here");
        Ok(rec)
    }
}
