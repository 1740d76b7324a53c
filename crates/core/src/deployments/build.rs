//! A publish's `build_command`: run once, in a clone of the source (a
//! sandbox the deployment owns, restored from the snapshot just taken), so
//! the source is left as it was. The clone after the build is the
//! version's snapshot; the tail of what the build wrote (stdout and stderr
//! together) is kept with the version, masked with the vault's values. A
//! build that exits non-zero or outlives `[deployments] build_timeout_sec`
//! fails the version.

use std::sync::Arc;
use std::time::Duration;

use hearth_agent_protocol::ExecRequest;

use super::MAX_BUILD_LOG;
use crate::error::Result;
use crate::keys::Caller;
use crate::model::{DeploymentRecord, DeploymentVersionRecord};
use crate::Core;

/// Output the agent keeps of a build; its last [`MAX_BUILD_LOG`] bytes
/// are stored.
const BUILD_OUTPUT_CAP: u64 = 4 << 20;

/// The last `max` bytes of `b` (cut at a character boundary), with a
/// first line saying how much went when some did.
pub(crate) fn tail(b: &[u8], max: usize) -> String {
    if b.len() <= max {
        return String::from_utf8_lossy(b).into_owned();
    }
    let cut = String::from_utf8_lossy(&b[b.len() - max..]).into_owned();
    let cut = cut.trim_start_matches('\u{FFFD}');
    format!("[{} earlier bytes not kept]\n{cut}", b.len() - max)
}

impl Core {
    /// Runs the version's build command in a clone and makes the clone's
    /// snapshot the version's; the reason when the build failed (its log
    /// is in the version then too).
    pub(super) async fn build_version(
        self: &Arc<Core>,
        caller: &Caller,
        dep: &DeploymentRecord,
        version: &mut DeploymentVersionRecord,
    ) -> std::result::Result<(), String> {
        let clone = self
            .boot_from_version(dep, version, "build")
            .await
            .map_err(|e| format!("the build sandbox did not start: {}", e.message))?;
        let outcome = self.run_version_build(caller, &clone.id, version).await;
        let result = match outcome {
            Ok(()) => self
                .create_snapshot(
                    caller,
                    &clone.id,
                    Some(format!("deployment {} build", dep.id)),
                )
                .await
                .map_err(|e| format!("the build's snapshot failed: {}", e.message)),
            Err(why) => Err(why),
        };
        if let Err(e) = self.destroy_sandbox(caller, &clone.id).await {
            tracing::warn!(sandbox_id = %clone.id, error = %e, "build sandbox not destroyed");
        }
        let built = result?;
        if let Some(unbuilt) = version.snapshot_id.replace(built.id) {
            self.drop_snapshot(caller, &unbuilt).await;
        }
        self.store
            .update_version(version)
            .await
            .map_err(|e| format!("the version could not be stored: {e}"))?;
        Ok(())
    }

    async fn run_version_build(
        self: &Arc<Core>,
        caller: &Caller,
        clone: &str,
        version: &mut DeploymentVersionRecord,
    ) -> std::result::Result<(), String> {
        let command = version.build_command.clone().unwrap_or_default();
        let limit = Duration::from_secs(self.config.deployments.build_timeout_sec);
        let req = ExecRequest {
            // One stream, in the order it was written.
            command: format!("exec 2>&1\n{command}"),
            cwd: version.output_path.clone(),
            env: Default::default(),
            user: None,
            stdin: None,
            timeout_ms: Some(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)),
            max_output_bytes: Some(BUILD_OUTPUT_CAP),
        };
        let ran: Result<_> =
            async { self.guest(caller, clone, true).await?.exec(&req).await }.await;
        let r = ran.map_err(|e| format!("the build could not run: {}", e.message))?;
        version.build_log = Some(tail(&r.stdout.0, MAX_BUILD_LOG));
        if r.timed_out {
            return Err(format!(
                "the build did not finish within {} s",
                limit.as_secs()
            ));
        }
        if r.exit_code != 0 {
            return Err(format!("the build exited with {}", r.exit_code));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_log_keeps_its_end() {
        assert_eq!(super::tail(b"short", 10), "short");
        let t = super::tail(b"0123456789abcdef", 6);
        assert_eq!(t, "[10 earlier bytes not kept]\nabcdef");
        // A cut inside a character does not leave half of it.
        let t = super::tail("xé".as_bytes(), 1);
        assert!(t.ends_with('\n'), "{t:?}");
    }
}
