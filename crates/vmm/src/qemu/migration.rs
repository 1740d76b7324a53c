//! Migration streams to and from files: QEMU receives the file over QMP
//! (`getfd`, then an `fd:` URI), since QEMU 7.2 has no `file:` URI.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{io_err, QemuError, QemuVm};
use crate::qmp::{self, QmpClient};

/// Name under which migration files are handed to QEMU.
const MIGRATION_FD: &str = "hearth-migration";

/// Whether the filesystem holding `path` has (almost) no room left.
fn disk_is_full(path: &Path) -> bool {
    let dir = path.parent().unwrap_or(path);
    nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available() * s.fragment_size() < (1 << 20))
        .unwrap_or(false)
}

impl QemuVm {
    pub(super) async fn qmp_with_fd(&self, file: &File, fdname: &str) -> Result<(), QemuError> {
        let mut guard = self.qmp.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(QmpClient::connect(&self.layout.qmp_socket, self.qmp_timeout).await?);
        }
        let client = guard.as_ref().expect("connected just above");
        let args = serde_json::json!({ "fdname": fdname });
        client.execute_with_fd("getfd", args, file.as_fd()).await?;
        Ok(())
    }

    /// Loads a migration file into a VM started with `-incoming defer` and
    /// starts it.
    pub(super) async fn incoming(
        &self,
        state: &Path,
        ignore_shared: bool,
    ) -> Result<(), QemuError> {
        let run = async {
            self.set_capabilities(ignore_shared).await?;
            let file = File::open(state).map_err(io_err("open", state))?;
            self.qmp_with_fd(&file, MIGRATION_FD).await?;
            drop(file); // QEMU holds its own copy now
            self.qmp_run(&qmp::MigrateIncoming {
                uri: format!("fd:{MIGRATION_FD}"),
            })
            .await?;
            let deadline = Instant::now() + self.migrate_timeout;
            let mut pause = Duration::from_millis(1);
            loop {
                let st = self.query_status().await?;
                if st.status != "inmigrate" {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(QemuError::MigrationTimeout(self.migrate_timeout));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            self.qmp_run(&qmp::Cont {}).await?;
            Ok(())
        };
        let res: Result<(), QemuError> = tokio::select! {
            r = run => r,
            status = self.process.exited() => Err(self.exited_error(status, "incoming migration")),
        };
        match res {
            // A failed load makes QEMU exit; report that rather than the
            // closed QMP socket it caused.
            Err(QemuError::Qmp(_)) if self.process.wait_exit(Duration::from_secs(2)).await => {
                Err(self.exited_error(
                    self.process.exit_status().unwrap_or_default(),
                    "incoming migration",
                ))
            }
            other => other,
        }
    }

    pub(super) async fn set_capabilities(&self, ignore_shared: bool) -> Result<(), QemuError> {
        self.qmp_run(&qmp::MigrateSetCapabilities {
            capabilities: vec![qmp::MigrationCapability {
                capability: "x-ignore-shared".into(),
                state: ignore_shared,
            }],
        })
        .await?;
        Ok(())
    }

    /// Migrates the (stopped) VM into `path`. On failure the file is cut
    /// to nothing at once: QEMU closes its copy of the descriptor a moment
    /// after it reports the failure, and until then unlinking the file
    /// would not give its blocks back (a full disk must be free again by
    /// the time the caller answers).
    pub(super) async fn migrate_to(&self, path: &Path) -> Result<u64, QemuError> {
        // The VM's memory, the tenant's alone (0600).
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err("create", path))?
        };
        let res = self.migrate_into(&file, path).await;
        if res.is_err() {
            let _ = file.set_len(0);
        }
        res
    }

    async fn migrate_into(&self, file: &File, path: &Path) -> Result<u64, QemuError> {
        self.qmp_with_fd(file, MIGRATION_FD).await?;
        self.qmp_run(&qmp::Migrate {
            uri: format!("fd:{MIGRATION_FD}"),
        })
        .await?;
        let deadline = Instant::now() + self.migrate_timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let info = self.qmp_run(&qmp::QueryMigrate {}).await?;
            match info.status.as_deref() {
                Some("completed") => break,
                Some(s @ ("failed" | "cancelled")) => {
                    let desc = info.error_desc.unwrap_or_default();
                    // QEMU's text is the only sign of why a write failed,
                    // when it says at all; a full disk is the common
                    // reason, and it shows on the filesystem.
                    let full = desc.contains("No space left") || disk_is_full(path);
                    let failed = QemuError::Migration {
                        status: s.to_string(),
                        desc,
                    };
                    return Err(if full {
                        QemuError::NoSpace {
                            path: path.to_path_buf(),
                            source: Box::new(failed),
                        }
                    } else {
                        failed
                    });
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(QemuError::MigrationTimeout(self.migrate_timeout));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        file.sync_all().map_err(io_err("fsync", path))?;
        let len = file.metadata().map_err(io_err("stat", path))?.len();
        Ok(len)
    }
}
