//! One QEMU VM: its state, its QMP connection, pause and resume, its
//! console and jail, destroy, and the [`Vm`] trait on top.

use parking_lot::Mutex as SyncMutex;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use hearth_agent_client::{AgentClient, Connector};

use super::layout::QemuLayout;
use super::process::{self, QemuProcess};
use super::record::{remove_disk_and_dir, remove_if_exists, VmRecord};
use super::{console, QemuError, QemuVm, CONSOLE_TAIL_LINES};
use crate::host::Accel;
use crate::jail::{EgressPolicy, JailHandle, JailRecord};
use crate::qmp::{self, QmpClient, QmpError};
use crate::snapshot::{SnapshotInfo, SnapshotOptions};
use crate::spec::{RunLayout, VmSpec};
use crate::{Vm, VmState, VmmError, VmmFuture};

impl QemuVm {
    pub(super) fn new(
        record: VmRecord,
        process: QemuProcess,
        jail: Option<JailHandle>,
        qmp_timeout: Duration,
        migrate_timeout: Duration,
    ) -> QemuVm {
        let spec = record.spec.clone();
        let layout = QemuLayout::of(&spec);
        let agent = AgentClient::new(Connector::Unix(layout.agent_socket.clone()));
        QemuVm {
            spec,
            layout,
            record,
            process,
            qmp: tokio::sync::Mutex::new(None),
            qmp_timeout,
            migrate_timeout,
            agent,
            state: SyncMutex::new(VmState::Paused),
            op: tokio::sync::Mutex::new(()),
            jail: tokio::sync::Mutex::new(jail),
            console: SyncMutex::new(None),
        }
    }

    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    pub fn layout(&self) -> &RunLayout {
        &self.layout
    }

    /// The exact arguments QEMU runs with.
    pub fn vmm_args(&self) -> &[String] {
        &self.record.args
    }

    pub fn pid(&self) -> u32 {
        self.process.pid() as u32
    }

    pub fn accel(&self) -> Accel {
        self.record.accel
    }

    /// The driver's view of the VM; a VMM process that died on its own
    /// (guest poweroff, crash, kill) shows as [`VmState::Exited`].
    pub fn state(&self) -> VmState {
        let s = *self.state.lock();
        if s.is_live() && self.process.exit_status().is_some() {
            return VmState::Exited;
        }
        s
    }

    pub(super) fn set_state(&self, s: VmState) {
        *self.state.lock() = s;
    }

    pub fn agent(&self) -> AgentClient {
        self.agent.clone()
    }

    /// Last lines of the guest console; see [`Vm::console_tail`].
    pub fn console_tail(&self, lines: usize) -> String {
        console::tail(&self.layout.console_log, lines).unwrap_or_default()
    }

    /// The console's end as quoted in an error (which says when the log
    /// is missing rather than quote nothing).
    pub(super) fn console_for_error(&self) -> String {
        quoted_tail(&self.layout.console_log, CONSOLE_TAIL_LINES)
    }

    pub(super) fn exited_error(&self, status: String, stage: &'static str) -> QemuError {
        QemuError::Exited {
            status,
            stage,
            vmm_log: quoted_tail(&self.layout.vmm_log, 10),
            console_tail: self.console_for_error(),
        }
    }

    /// Waits for QEMU's QMP socket (QEMU creates it before the guest runs).
    pub(super) async fn connect_qmp_first(&self) -> Result<(), QemuError> {
        let deadline = Instant::now() + self.qmp_timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = self.process.exit_status() {
                return Err(self.exited_error(status, "startup"));
            }
            if self.layout.qmp_socket.exists() {
                match QmpClient::connect(&self.layout.qmp_socket, self.qmp_timeout).await {
                    Ok(c) => {
                        *self.qmp.lock().await = Some(c);
                        return Ok(());
                    }
                    Err(e) if Instant::now() >= deadline => return Err(e.into()),
                    Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(QmpError::Timeout {
                    command: "qmp socket".into(),
                    timeout: self.qmp_timeout,
                }
                .into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Runs a QMP command, (re)connecting first when needed.
    pub(super) async fn qmp_run<C: qmp::Command>(&self, cmd: &C) -> Result<C::Returns, QemuError> {
        let mut guard = self.qmp.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(QmpClient::connect(&self.layout.qmp_socket, self.qmp_timeout).await?);
        }
        let client = guard.as_ref().expect("connected just above");
        Ok(client.run(cmd).await?)
    }

    pub(super) async fn query_status(&self) -> Result<qmp::StatusInfo, QemuError> {
        self.qmp_run(&qmp::QueryStatus {}).await
    }

    pub(super) fn check_state(
        &self,
        op: &'static str,
        ok: impl Fn(VmState) -> bool,
    ) -> Result<VmState, VmmError> {
        let s = self.state();
        if ok(s) {
            Ok(s)
        } else {
            Err(VmmError::InvalidState {
                id: self.spec.id.clone(),
                state: s,
                op,
            })
        }
    }

    pub async fn pause(&self) -> Result<(), VmmError> {
        let _op = self.op.lock().await;
        self.check_state("pause", VmState::can_pause)?;
        let started = Instant::now();
        self.qmp_run(&qmp::Stop {})
            .await
            .map_err(|e| VmmError::Pause {
                id: self.spec.id.clone(),
                source: Box::new(e),
            })?;
        self.set_state(VmState::Paused);
        tracing::info!(sandbox_id = %self.spec.id, ms = started.elapsed().as_millis() as u64, "vm paused");
        Ok(())
    }

    pub async fn resume(&self) -> Result<(), VmmError> {
        let _op = self.op.lock().await;
        self.check_state("resume", VmState::can_resume)?;
        let started = Instant::now();
        self.qmp_run(&qmp::Cont {})
            .await
            .map_err(|e| VmmError::Resume {
                id: self.spec.id.clone(),
                source: Box::new(e),
            })?;
        self.set_state(VmState::Running);
        tracing::info!(sandbox_id = %self.spec.id, ms = started.elapsed().as_millis() as u64, "vm resumed");
        Ok(())
    }

    /// QMP `quit`, then SIGTERM/SIGKILL to the process group if needed.
    pub(super) async fn shutdown_process(&self) -> Result<(), QemuError> {
        if self.process.exit_status().is_some() || !process::is_alive(self.process.pid()) {
            return Ok(());
        }
        let quit = tokio::time::timeout(Duration::from_secs(2), self.qmp_run(&qmp::Quit {})).await;
        if !matches!(quit, Ok(Ok(_)) | Ok(Err(QemuError::Qmp(QmpError::Closed))))
            || !self.process.wait_exit(Duration::from_secs(3)).await
        {
            tracing::warn!(pid = self.process.pid(), "vmm did not quit; signalling");
            if !self.process.terminate(Duration::from_secs(2)).await {
                return Err(QemuError::Unkillable {
                    pid: self.process.pid(),
                });
            }
        }
        self.qmp.lock().await.take();
        Ok(())
    }

    pub(super) fn clean_run_files(&self) {
        for f in self.layout.run_files() {
            remove_if_exists(f);
        }
    }

    /// The VM's jail as recorded (none when it runs unjailed).
    pub fn jail(&self) -> Option<&JailRecord> {
        self.record.jail.as_ref()
    }

    /// Puts an egress policy in force on the running VM; see
    /// [`Vm::set_egress_policy`].
    pub async fn set_egress_policy(&self, policy: Option<&EgressPolicy>) -> Result<(), VmmError> {
        let jail = self.jail.lock().await;
        match jail.as_ref() {
            Some(j) => j.set_policy(policy).await.map_err(|e| VmmError::Network {
                id: self.spec.id.clone(),
                source: Box::new(QemuError::Jail(e)),
            }),
            // Unjailed VMs have no network to narrow.
            None => Ok(()),
        }
    }

    /// Starts reading the console (QEMU creates its socket at startup).
    pub(super) fn start_console(&self) {
        let task = console::spawn(
            self.layout.console_socket.clone(),
            self.layout.console_log.clone(),
            self.layout.console_log_old.clone(),
            self.qmp_timeout,
        );
        if let Some(old) = self.console.lock().replace(task) {
            old.abort();
        }
    }

    /// Tears the jail down once the process has exited.
    pub(super) async fn release_jail(&self) {
        if let Some(task) = self.console.lock().take() {
            task.abort();
        }
        if let Some(mut j) = self.jail.lock().await.take() {
            j.release().await;
        }
    }

    /// Kill and remove everything after a failed start.
    pub(super) async fn teardown(&self, owns_disk: bool) {
        self.agent.disconnect().await;
        self.qmp.lock().await.take();
        if !self.process.terminate(Duration::from_secs(2)).await {
            tracing::error!(pid = self.process.pid(), "vmm survived SIGKILL");
        } else {
            self.release_jail().await;
        }
        self.clean_run_files();
        remove_disk_and_dir(&self.layout, &self.spec.disk, owns_disk);
        self.set_state(VmState::Destroyed);
    }

    pub async fn destroy(&self) -> Result<(), VmmError> {
        let _op = self.op.lock().await;
        if self.state() == VmState::Destroyed {
            return Ok(());
        }
        self.agent.disconnect().await;
        self.shutdown_process()
            .await
            .map_err(|e| VmmError::Destroy {
                id: self.spec.id.clone(),
                source: Box::new(e),
            })?;
        self.release_jail().await;
        self.clean_run_files();
        let disk_is_ours =
            self.record.owns_disk || self.spec.disk.parent() == Some(self.layout.dir.as_path());
        remove_disk_and_dir(&self.layout, &self.spec.disk, disk_is_ours);
        self.set_state(VmState::Destroyed);
        tracing::info!(sandbox_id = %self.spec.id, "vm destroyed");
        Ok(())
    }
}

/// The last `lines` lines of a log for an error message.
fn quoted_tail(path: &Path, lines: usize) -> String {
    console::tail(path, lines).unwrap_or_else(|| format!("({} missing)", path.display()))
}

impl Vm for QemuVm {
    fn id(&self) -> &str {
        &self.spec.id
    }
    fn spec(&self) -> &VmSpec {
        &self.spec
    }
    fn pid(&self) -> u32 {
        QemuVm::pid(self)
    }
    fn state(&self) -> VmState {
        QemuVm::state(self)
    }
    fn agent(&self) -> AgentClient {
        QemuVm::agent(self)
    }
    fn pause(&self) -> VmmFuture<'_, ()> {
        Box::pin(QemuVm::pause(self))
    }
    fn resume(&self) -> VmmFuture<'_, ()> {
        Box::pin(QemuVm::resume(self))
    }
    fn snapshot<'a>(
        &'a self,
        dest: &'a Path,
        opts: SnapshotOptions,
    ) -> VmmFuture<'a, SnapshotInfo> {
        Box::pin(QemuVm::snapshot(self, dest, opts))
    }
    fn destroy(&self) -> VmmFuture<'_, ()> {
        Box::pin(QemuVm::destroy(self))
    }
    fn set_egress_policy<'a>(&'a self, policy: Option<&'a EgressPolicy>) -> VmmFuture<'a, ()> {
        Box::pin(QemuVm::set_egress_policy(self, policy))
    }
    fn jail(&self) -> Option<&JailRecord> {
        QemuVm::jail(self)
    }
    fn console_tail(&self, max_lines: usize) -> String {
        QemuVm::console_tail(self, max_lines)
    }
    fn exited(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(self.process.exited())
    }
}
