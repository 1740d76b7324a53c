//! The QEMU driver: one `qemu-system-x86_64` per VM in its own session,
//! controlled over QMP, with its sockets, pidfile, logs and `vm.json` (the
//! spec and exact arguments) in the VM directory so a new driver instance
//! can re-adopt it. Snapshots migrate to a file QEMU receives over QMP
//! (`getfd` and an `fd:` URI): QEMU 7.2 has no `file:` URI, and an
//! `exec:cat` helper gets SIGTERM the moment QEMU closes its pipe.

mod args;
pub mod console;
mod process;

use std::fs::File;
use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use hearth_agent_client::{AgentClient, AgentClientError, Connector};
use hearth_agent_protocol::{Base64Bytes, InitRequest};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

pub use args::MachineKind;

use crate::host::{Accel, HostInfo};
use crate::jail::{EgressPolicy, JailConfig, JailError, JailHandle, JailRecord, JailSpec, Jailer};
use crate::qmp::{self, QmpClient, QmpError};
use crate::snapshot::{
    self, AfterSnapshot, SnapshotInfo, SnapshotKind, SnapshotManifest, SnapshotOptions,
    SnapshotTimings, DISK_FILE, MANIFEST_FILE, MANIFEST_FORMAT, MEMORY_FILE, STATE_FILE,
};
use crate::spec::{MemoryBacking, RunLayout, VmSpec};
use crate::{Capabilities, Vm, VmState, Vmm, VmmError, VmmFuture};
use args::{Ram, Rewrite};
use process::QemuProcess;

/// Version of `vm.json`.
const RECORD_FORMAT: u32 = 1;
/// Lines of console log quoted in errors.
const CONSOLE_TAIL_LINES: usize = 25;
/// Name under which migration files are handed to QEMU.
const MIGRATION_FD: &str = "hearth-migration";

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccelChoice {
    /// KVM when usable ([`crate::host::kvm_usable`]), else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// Driver configuration (the `[vmm.qemu]` table of the server config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QemuConfig {
    /// `qemu-system-x86_64`, looked up on `PATH` unless absolute.
    pub binary: PathBuf,
    pub accel: AccelChoice,
    pub machine: MachineKind,
    /// Deadline of one QMP command, and of the QMP socket appearing.
    pub qmp_timeout_ms: u64,
    /// Deadline of a migration to or from a file.
    pub migrate_timeout_ms: u64,
    /// TCG translation cache size (QEMU's default is 1 GiB of address space).
    pub tcg_tb_size_mb: Option<u32>,
    /// The jail each QEMU process runs in.
    pub jail: JailConfig,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            binary: PathBuf::from("qemu-system-x86_64"),
            accel: AccelChoice::Auto,
            machine: MachineKind::Microvm,
            qmp_timeout_ms: 10_000,
            migrate_timeout_ms: 300_000,
            tcg_tb_size_mb: None,
            jail: JailConfig::default(),
        }
    }
}

/// The QEMU driver's own errors; they reach callers as the `source` of a
/// [`VmmError`].
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("spawn {}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu exited ({status}) during {stage}\n--- vmm log ---\n{vmm_log}\n--- console tail ---\n{console_tail}")]
    Exited {
        status: String,
        stage: &'static str,
        vmm_log: String,
        console_tail: String,
    },
    #[error("qmp")]
    Qmp(#[from] QmpError),
    #[error("guest agent did not answer within {waited:?}\n--- console tail ---\n{console_tail}")]
    AgentTimeout {
        waited: Duration,
        console_tail: String,
        #[source]
        last: Option<AgentClientError>,
    },
    #[error("guest agent")]
    Agent(#[source] AgentClientError),
    #[error("jail")]
    Jail(#[from] JailError),
    #[error("migration {status}: {desc}")]
    Migration { status: String, desc: String },
    #[error("migration did not finish within {0:?}")]
    MigrationTimeout(Duration),
    #[error("snapshot {}: {reason}", dir.display())]
    BadSnapshot { dir: PathBuf, reason: String },
    #[error("template snapshots need a vm booted with shared-file memory")]
    NotTemplateCapable,
    #[error("{} already holds a snapshot", dir.display())]
    SnapshotExists { dir: PathBuf },
    #[error("{} is in use by vmm pid {pid}", dir.display())]
    DirInUse { dir: PathBuf, pid: i32 },
    #[error("vm record {}: {reason}", path.display())]
    BadRecord { path: PathBuf, reason: String },
    #[error("vmm process {pid} is gone")]
    ProcessGone { pid: i32 },
    #[error("pid {pid} is not the vmm of this directory")]
    NotOurProcess { pid: i32 },
    #[error("vmm pid {pid} did not exit after SIGKILL")]
    Unkillable { pid: i32 },
    #[error("restore arguments: {0}")]
    Args(String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> QemuError {
    let path = path.to_path_buf();
    move |source| QemuError::Io { what, path, source }
}

/// `vm.json`: what a new driver instance needs to take a VM over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmRecord {
    format: u32,
    spec: VmSpec,
    binary: PathBuf,
    args: Vec<String>,
    pid: i32,
    accel: Accel,
    version: String,
    /// The driver made the disk (restores): destroy removes it wherever it is.
    owns_disk: bool,
    started_at_ms: i64,
    /// The VM's jail (absent: started unjailed, or by an older driver).
    #[serde(default)]
    jail: Option<JailRecord>,
}

/// The QEMU driver.
#[derive(Debug)]
pub struct QemuVmm {
    config: QemuConfig,
    accel: Accel,
    host: HostInfo,
    version: tokio::sync::OnceCell<String>,
    /// The jail builder, or why the jail config is unusable.
    jailer: Result<Jailer, String>,
}

impl QemuVmm {
    pub fn new(config: QemuConfig) -> QemuVmm {
        let host = HostInfo::probe();
        let accel = match config.accel {
            AccelChoice::Kvm => Accel::Kvm,
            AccelChoice::Tcg => Accel::Tcg,
            AccelChoice::Auto if host.kvm_usable => Accel::Kvm,
            AccelChoice::Auto => Accel::Tcg,
        };
        tracing::info!(
            %accel,
            choice = ?config.accel,
            kvm_usable = host.kvm_usable,
            machine = ?config.machine,
            "qemu driver ready"
        );
        let jailer = Jailer::new(config.jail.clone()).map_err(|e| {
            tracing::error!(error = %e, "vm jail unusable: every VM start will fail");
            e.to_string()
        });
        QemuVmm {
            config,
            accel,
            host,
            version: tokio::sync::OnceCell::new(),
            jailer,
        }
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    fn qmp_timeout(&self) -> Duration {
        Duration::from_millis(self.config.qmp_timeout_ms)
    }

    /// `qemu-system-x86_64 --version`, first line, cached.
    pub async fn version(&self) -> String {
        self.version
            .get_or_init(|| async {
                match tokio::process::Command::new(&self.config.binary)
                    .arg("--version")
                    .output()
                    .await
                {
                    Ok(o) => String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                    Err(e) => format!("unknown ({e})"),
                }
            })
            .await
            .clone()
    }

    /// The exact argument vector a cold boot of `spec` uses.
    pub fn boot_args(&self, spec: &VmSpec) -> Vec<String> {
        let mut a = args::build(
            spec,
            &spec.layout(),
            self.accel,
            self.config.machine,
            self.config.tcg_tb_size_mb,
        );
        args::confine(
            &mut a,
            self.jailed(),
            self.config.jail.unfiltered_network_unjailed,
        );
        a
    }

    /// Whether VMs run jailed (and so may have a network).
    pub fn jailed(&self) -> bool {
        self.jailer.as_ref().is_ok_and(|j| j.enabled())
    }

    fn jailer(&self) -> Result<&Jailer, QemuError> {
        self.jailer
            .as_ref()
            .map_err(|e| QemuError::Jail(JailError::Config(e.clone())))
    }

    /// Cold boot; see [`Vmm::boot`].
    pub async fn boot_vm(&self, spec: VmSpec) -> Result<QemuVm, VmmError> {
        let span = tracing::info_span!("vm", sandbox_id = %spec.id);
        self.boot_inner(spec).instrument(span).await
    }

    async fn boot_inner(&self, spec: VmSpec) -> Result<QemuVm, VmmError> {
        spec.validate()?;
        if !spec.disk.is_file() {
            return Err(VmmError::InvalidSpec(vec![format!(
                "disk {} is not a file",
                spec.disk.display()
            )]));
        }
        spec.check_host(&HostInfo::probe())?;
        let id = spec.id.clone();
        let boot_err = |e: QemuError| VmmError::Boot {
            id: id.clone(),
            source: Box::new(e),
        };
        let started = Instant::now();
        let args = self.boot_args(&spec);
        let vm = self
            .launch(spec, args, false, None)
            .await
            .map_err(boot_err)?;
        vm.set_state(VmState::Running);
        let timeout = Duration::from_millis(vm.spec.boot_timeout_ms);
        if let Err(e) = vm.wait_agent_and_init(timeout, "boot").await {
            vm.teardown(false).await;
            return Err(boot_err(e));
        }
        let agent_ms = started.elapsed().as_millis();
        tracing::info!(
            pid = vm.process.pid(),
            accel = %self.accel,
            agent_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "vm booted"
        );
        Ok(vm)
    }

    /// Restore from a snapshot directory; see [`Vmm::restore`].
    pub async fn restore_vm(&self, snapshot: &Path, spec: VmSpec) -> Result<QemuVm, VmmError> {
        let span = tracing::info_span!("vm", sandbox_id = %spec.id);
        self.restore_inner(snapshot, spec).instrument(span).await
    }

    async fn restore_inner(&self, snap: &Path, mut spec: VmSpec) -> Result<QemuVm, VmmError> {
        let started = Instant::now();
        let id = spec.id.clone();
        let restore_err = |e: QemuError| VmmError::Restore {
            id: id.clone(),
            snapshot: snap.to_path_buf(),
            source: Box::new(e),
        };
        let bad = |reason: String| {
            restore_err(QemuError::BadSnapshot {
                dir: snap.to_path_buf(),
                reason,
            })
        };
        let manifest = SnapshotManifest::load(snap).map_err(|e| bad(e.to_string()))?;
        manifest.check_files(snap).map_err(|e| bad(e.to_string()))?;
        let old = &manifest.spec;
        let mut mismatch = Vec::new();
        if spec.vcpus != old.vcpus {
            mismatch.push(format!(
                "vcpus {} differs from the snapshot's {}",
                spec.vcpus, old.vcpus
            ));
        }
        if spec.memory_mb != old.memory_mb {
            mismatch.push(format!(
                "memory_mb {} differs from the snapshot's {}",
                spec.memory_mb, old.memory_mb
            ));
        }
        if !mismatch.is_empty() {
            return Err(VmmError::InvalidSpec(mismatch));
        }
        // The guest already runs this kernel from this base: the snapshot's
        // files are the truth.
        spec.kernel = old.kernel.clone();
        spec.initrd = old.initrd.clone();
        spec.base_image = old.base_image.clone();
        spec.kernel_args = old.kernel_args.clone();
        spec.validate()?;
        spec.check_host(&HostInfo::probe())?;

        // RAM: anonymous (loaded from the stream) or the template's file
        // mapped privately; or, when the spec asks for shared-file memory,
        // a file of the VM's own filled from a full snapshot's stream, so
        // this VM can be snapshotted as a template. (QEMU 7.2 brings a
        // template's RAM file, copied and mapped shared, back as zeros under
        // x-ignore-shared: a template goes through a full snapshot first.)
        let shared = spec.memory == MemoryBacking::SharedFile;
        if shared && manifest.kind == SnapshotKind::Template {
            return Err(VmmError::InvalidSpec(vec![
                "a template snapshot restores into private memory only; \
                 take a full snapshot of the clone to get shared memory"
                    .into(),
            ]));
        }
        let new_layout = spec.layout();
        let memory_path = snap.join(manifest.memory_file.as_deref().unwrap_or(MEMORY_FILE));
        let ram = match (manifest.kind, shared) {
            (SnapshotKind::Full, false) => Ram::Anonymous,
            (SnapshotKind::Template, false) => Ram::File {
                path: &memory_path,
                share: false,
            },
            (SnapshotKind::Full, true) => Ram::File {
                path: &new_layout.memory_file,
                share: true,
            },
            (SnapshotKind::Template, true) => unreachable!("refused above"),
        };
        let args = args::rewrite_for_restore(
            &manifest.vmm_args,
            &Rewrite {
                old_layout: &old.layout(),
                old_disk: &old.disk,
                new_layout: &new_layout,
                new_disk: &spec.disk,
                ram,
                memory_mb: spec.memory_mb,
                egress: spec.egress,
            },
        )
        .map_err(|e| restore_err(QemuError::Args(e)))?;
        let mut args = args;
        args::confine(
            &mut args,
            self.jailed(),
            self.config.jail.unfiltered_network_unjailed,
        );
        let template_ram = (manifest.kind == SnapshotKind::Template).then(|| memory_path.clone());

        prepare_dir(&new_layout).map_err(restore_err)?;
        let disk_src = snap.join(&manifest.disk_file);
        let disk_dst = spec.disk.clone();
        let copy_started = Instant::now();
        blocking(move || snapshot::sparse_copy(&disk_src, &disk_dst))
            .await
            .map_err(io_err("copy snapshot disk to", &spec.disk))
            .map_err(restore_err)?;
        let copy_ms = copy_started.elapsed().as_millis() as u64;

        let disk = spec.disk.clone();
        let launch_started = Instant::now();
        let vm = match self.launch(spec, args, true, template_ram.as_deref()).await {
            Ok(vm) => vm,
            Err(e) => {
                remove_disk_and_dir(&new_layout, &disk, true);
                return Err(restore_err(e));
            }
        };
        let launch_ms = launch_started.elapsed().as_millis() as u64;
        let incoming_started = Instant::now();
        let state_path = snap.join(&manifest.state_file);
        if let Err(e) = vm
            .incoming(&state_path, manifest.kind == SnapshotKind::Template)
            .await
        {
            vm.teardown(true).await;
            return Err(restore_err(e));
        }
        let incoming_ms = incoming_started.elapsed().as_millis() as u64;
        vm.set_state(VmState::Running);
        let timeout = Duration::from_millis(vm.spec.boot_timeout_ms);
        let agent_started = Instant::now();
        if let Err(e) = vm.wait_agent_and_init(timeout, "restore").await {
            vm.teardown(true).await;
            return Err(restore_err(e));
        }
        tracing::info!(
            pid = vm.process.pid(),
            kind = ?manifest.kind,
            copy_ms,
            launch_ms,
            incoming_ms,
            agent_ms = agent_started.elapsed().as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "vm restored"
        );
        Ok(vm)
    }

    /// Takes over a running VM from its directory; see [`Vmm::adopt`].
    pub async fn adopt_vm(&self, dir: &Path) -> Result<QemuVm, VmmError> {
        let adopt_err = |e: QemuError| VmmError::Adopt {
            dir: dir.to_path_buf(),
            source: Box::new(e),
        };
        let layout = RunLayout::new(dir);
        let record = read_record(&layout.record).map_err(adopt_err)?;
        let pid = record.pid;
        if !process::is_alive(pid) {
            return Err(adopt_err(QemuError::ProcessGone { pid }));
        }
        let ours = process::cmdline(pid).is_some_and(|c| c.get(1..) == Some(&record.args[..]));
        if !ours {
            return Err(adopt_err(QemuError::NotOurProcess { pid }));
        }
        let jail = match (&record.jail, self.jailer.as_ref()) {
            (Some(r), Ok(j)) => Some(j.adopt(r.clone()).await),
            _ => None,
        };
        let vm = QemuVm::new(
            record,
            QemuProcess::adopt(pid),
            jail,
            self.qmp_timeout(),
            Duration::from_millis(self.config.migrate_timeout_ms),
        );
        vm.start_console();
        let status = vm.query_status().await.map_err(adopt_err)?;
        vm.set_state(if status.running {
            VmState::Running
        } else {
            VmState::Paused
        });
        tracing::info!(sandbox_id = %vm.spec.id, pid, status = %status.status, "vm adopted");
        Ok(vm)
    }

    /// Spawns QEMU for `spec` with `args` in its jail and waits for its
    /// QMP socket. `template_ram` is a template's RAM file the VM maps.
    async fn launch(
        &self,
        spec: VmSpec,
        args: Vec<String>,
        owns_disk: bool,
        template_ram: Option<&Path>,
    ) -> Result<QemuVm, QemuError> {
        let layout = spec.layout();
        prepare_dir(&layout)?;
        let mut read_write: Vec<&Path> = template_ram.into_iter().collect();
        if !spec.disk.starts_with(&layout.dir) {
            read_write.push(&spec.disk);
        }
        let jailed = self
            .jailer()?
            .prepare(&JailSpec {
                dir: &layout.dir,
                read_only: vec![&spec.kernel, &spec.initrd, &spec.base_image],
                read_write,
                disk: &spec.disk,
                egress: spec.egress,
                policy: spec.egress_policy.as_ref(),
                vcpus: spec.vcpus,
                memory_mb: spec.memory_mb,
                kvm: self.accel == Accel::Kvm,
            })
            .await?;
        let (mut jail, pre_exec) = match jailed {
            Some((h, p)) => (Some(h), Some(p)),
            None => (None, None),
        };
        let process =
            match QemuProcess::spawn(&self.config.binary, &args, &layout.vmm_log, pre_exec) {
                Ok(p) => p,
                Err(source) => {
                    if let Some(j) = jail.as_mut() {
                        j.release().await;
                    }
                    return Err(QemuError::Spawn {
                        binary: self.config.binary.clone(),
                        source,
                    });
                }
            };
        let record = VmRecord {
            format: RECORD_FORMAT,
            spec,
            binary: self.config.binary.clone(),
            args,
            pid: process.pid(),
            accel: self.accel,
            version: self.version().await,
            owns_disk,
            started_at_ms: now_ms(),
            jail: jail.as_ref().map(|j| j.record().clone()),
        };
        let vm = QemuVm::new(
            record,
            process,
            jail,
            self.qmp_timeout(),
            Duration::from_millis(self.config.migrate_timeout_ms),
        );
        vm.start_console();
        let written = serde_json::to_vec_pretty(&vm.record)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            .and_then(|json| write_atomic(&layout.record, &json))
            .and_then(|()| {
                write_atomic(
                    &layout.pidfile,
                    format!("{}\n", vm.process.pid()).as_bytes(),
                )
            })
            .map_err(io_err("write vm record", &layout.record));
        if let Err(e) = written {
            vm.teardown(owns_disk).await;
            return Err(e);
        }
        if let Err(e) = vm.connect_qmp_first().await {
            vm.teardown(owns_disk).await;
            return Err(e);
        }
        Ok(vm)
    }
}

/// Creates the VM directory and clears what a dead VM left in it; refuses
/// a directory whose VMM still runs.
fn prepare_dir(layout: &RunLayout) -> Result<(), QemuError> {
    std::fs::create_dir_all(&layout.dir).map_err(io_err("create vm directory", &layout.dir))?;
    if let Ok(rec) = read_record(&layout.record) {
        if process::is_alive(rec.pid)
            && process::cmdline(rec.pid).is_some_and(|c| c.get(1..) == Some(&rec.args[..]))
        {
            return Err(QemuError::DirInUse {
                dir: layout.dir.clone(),
                pid: rec.pid,
            });
        }
    }
    for f in layout.run_files() {
        remove_if_exists(f);
    }
    Ok(())
}

fn read_record(path: &Path) -> Result<VmRecord, QemuError> {
    let bytes = std::fs::read(path).map_err(io_err("read vm record", path))?;
    let rec: VmRecord = serde_json::from_slice(&bytes).map_err(|e| QemuError::BadRecord {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if rec.format != RECORD_FORMAT || rec.args.is_empty() {
        return Err(QemuError::BadRecord {
            path: path.to_path_buf(),
            reason: format!("format {} with {} args", rec.format, rec.args.len()),
        });
    }
    Ok(rec)
}

/// Replaces `path` atomically but without fsync: run files only need to
/// survive a crash of the driver process, never of the host (which takes
/// the VM with it).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn remove_if_exists(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "remove vm file");
        }
    }
}

fn remove_disk_and_dir(layout: &RunLayout, disk: &Path, remove_disk: bool) {
    if remove_disk {
        remove_if_exists(disk);
    }
    // Only when empty: anything else in it is not ours.
    let _ = std::fs::remove_dir(&layout.dir);
}

/// Whether the filesystem holding `path` has (almost) no room left.
fn disk_is_full(path: &Path) -> bool {
    let dir = path.parent().unwrap_or(path);
    nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available() * s.fragment_size() < (1 << 20))
        .unwrap_or(false)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The last `lines` lines of a log file, reading at most its last 16 KiB
/// (and the end of `<path>.1` when the console rotated just now).
pub fn log_tail(path: &Path, lines: usize) -> String {
    console::tail(path, lines)
}

fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// Sends hellos on a throwaway connection at a fast cadence until the agent
/// answers one. A restored guest swallows the first hellos in the HTTP/2
/// session it had when the snapshot was taken; the agent client retries
/// only every 250 ms, so probing first cuts ~0.4 s off every restore.
/// Failures are left to the real connection that follows.
async fn probe_agent(socket: &Path) {
    use hearth_agent_protocol::handshake::{Hello, LineScanner, READY_PREFIX};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return;
    };
    let base = now_ms() as u64 ^ 0x5eed_0000_0000_0000;
    let mut scanner = LineScanner::default();
    let mut buf = [0u8; 1024];
    let mut pause = Duration::from_millis(10);
    for attempt in 0u64.. {
        let hello = Hello {
            generation: base.wrapping_add(attempt),
            protocol_version: hearth_agent_protocol::PROTOCOL_VERSION,
        };
        if stream
            .write_all(hello.hello_line().as_bytes())
            .await
            .is_err()
        {
            return;
        }
        let until = tokio::time::Instant::now() + pause;
        while let Ok(read) = tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            let n = match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let answered = scanner
                .feed(&buf[..n], |line| Hello::parse(line, READY_PREFIX))
                .is_some_and(|(ready, _)| ready.generation.wrapping_sub(base) <= attempt);
            if answered {
                return;
            }
        }
        // A restored guest answers within ~100 ms: probe densely for a
        // while, then calmly through a cold boot.
        if attempt == 200 {
            pause = Duration::from_millis(100);
        }
    }
}

/// One QEMU VM.
#[derive(Debug)]
pub struct QemuVm {
    spec: VmSpec,
    layout: RunLayout,
    record: VmRecord,
    process: QemuProcess,
    qmp: tokio::sync::Mutex<Option<QmpClient>>,
    qmp_timeout: Duration,
    migrate_timeout: Duration,
    agent: AgentClient,
    state: StdMutex<VmState>,
    /// Serializes lifecycle operations on this VM.
    op: tokio::sync::Mutex<()>,
    /// Released once the process is gone for good.
    jail: tokio::sync::Mutex<Option<JailHandle>>,
    /// Reads the serial console into its capped log.
    console: StdMutex<Option<tokio::task::JoinHandle<()>>>,
}

impl QemuVm {
    fn new(
        record: VmRecord,
        process: QemuProcess,
        jail: Option<JailHandle>,
        qmp_timeout: Duration,
        migrate_timeout: Duration,
    ) -> QemuVm {
        let spec = record.spec.clone();
        let layout = spec.layout();
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
            state: StdMutex::new(VmState::Paused),
            op: tokio::sync::Mutex::new(()),
            jail: tokio::sync::Mutex::new(jail),
            console: StdMutex::new(None),
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
        let s = *self.state.lock().expect("vm state lock poisoned");
        if s.is_live() && self.process.exit_status().is_some() {
            return VmState::Exited;
        }
        s
    }

    fn set_state(&self, s: VmState) {
        *self.state.lock().expect("vm state lock poisoned") = s;
    }

    pub fn agent(&self) -> AgentClient {
        self.agent.clone()
    }

    /// Last lines of the guest console.
    pub fn console_tail(&self, lines: usize) -> String {
        log_tail(&self.layout.console_log, lines)
    }

    fn exited_error(&self, status: String, stage: &'static str) -> QemuError {
        QemuError::Exited {
            status,
            stage,
            vmm_log: log_tail(&self.layout.vmm_log, 10),
            console_tail: self.console_tail(CONSOLE_TAIL_LINES),
        }
    }

    /// Waits for QEMU's QMP socket (QEMU creates it before the guest runs).
    async fn connect_qmp_first(&self) -> Result<(), QemuError> {
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
    async fn qmp_run<C: qmp::Command>(&self, cmd: &C) -> Result<C::Returns, QemuError> {
        let mut guard = self.qmp.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(QmpClient::connect(&self.layout.qmp_socket, self.qmp_timeout).await?);
        }
        let client = guard.as_ref().expect("connected just above");
        Ok(client.run(cmd).await?)
    }

    async fn qmp_with_fd(&self, file: &File, fdname: &str) -> Result<(), QemuError> {
        let mut guard = self.qmp.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(QmpClient::connect(&self.layout.qmp_socket, self.qmp_timeout).await?);
        }
        let client = guard.as_ref().expect("connected just above");
        let args = serde_json::json!({ "fdname": fdname });
        client.execute_with_fd("getfd", args, file.as_fd()).await?;
        Ok(())
    }

    async fn query_status(&self) -> Result<qmp::StatusInfo, QemuError> {
        self.qmp_run(&qmp::QueryStatus {}).await
    }

    /// Waits until the agent answers, the VMM exits, or `timeout`, and
    /// hands it its identity: id, hostname, env, host clock and fresh
    /// entropy (so restored clones never share random state). `init` is the
    /// first request on the channel: it is idempotent, so a connection that
    /// fails is simply retried, and a restore saves a round trip.
    async fn wait_agent_and_init(
        &self,
        timeout: Duration,
        stage: &'static str,
    ) -> Result<(), QemuError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let entropy = random_bytes(32).map_err(io_err("read", Path::new("/dev/urandom")))?;
        let mut req = InitRequest {
            sandbox_id: self.spec.id.clone(),
            hostname: Some(self.spec.hostname().to_string()),
            env: self.spec.env.clone(),
            clock_unix_ms: None,
            entropy: Some(Base64Bytes::from(entropy)),
        };
        let mut last: Option<AgentClientError> = None;
        tokio::select! {
            status = self.process.exited() => {
                return Err(self.exited_error(status, stage));
            }
            _ = tokio::time::timeout(timeout, probe_agent(&self.layout.agent_socket)) => {}
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(QemuError::AgentTimeout {
                    waited: started.elapsed(),
                    console_tail: self.console_tail(CONSOLE_TAIL_LINES),
                    last,
                });
            }
            req.clock_unix_ms = Some(now_ms());
            tokio::select! {
                status = self.process.exited() => {
                    return Err(self.exited_error(status, stage));
                }
                r = tokio::time::timeout(remaining, self.agent.init(&req)) => match r {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) if !e.is_connection() => return Err(QemuError::Agent(e)),
                    Ok(Err(e)) => {
                        last = Some(e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => {}
                },
            }
        }
    }

    /// Loads a migration file into a VM started with `-incoming defer` and
    /// starts it.
    async fn incoming(&self, state: &Path, ignore_shared: bool) -> Result<(), QemuError> {
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

    async fn set_capabilities(&self, ignore_shared: bool) -> Result<(), QemuError> {
        self.qmp_run(&qmp::MigrateSetCapabilities {
            capabilities: vec![qmp::MigrationCapability {
                capability: "x-ignore-shared".into(),
                state: ignore_shared,
            }],
        })
        .await?;
        Ok(())
    }

    /// Migrates the (stopped) VM into `path`.
    async fn migrate_to(&self, path: &Path) -> Result<u64, QemuError> {
        let file = File::create(path).map_err(io_err("create", path))?;
        self.qmp_with_fd(&file, MIGRATION_FD).await?;
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
                    let mut desc = info.error_desc.unwrap_or_default();
                    // QEMU does not always say why a write failed; a full
                    // disk is the common reason, and it shows.
                    if !desc.contains("No space left") && disk_is_full(path) {
                        desc = format!("No space left on device ({desc})");
                    }
                    return Err(QemuError::Migration {
                        status: s.to_string(),
                        desc,
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

    fn check_state(
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

    /// Writes a snapshot into `dest`; see [`Vm::snapshot`].
    pub async fn snapshot(
        &self,
        dest: &Path,
        opts: SnapshotOptions,
    ) -> Result<SnapshotInfo, VmmError> {
        let _op = self.op.lock().await;
        let before = self.check_state("snapshot", VmState::can_snapshot)?;
        let span = tracing::info_span!("snapshot", sandbox_id = %self.spec.id, kind = ?opts.kind);
        let res = self
            .snapshot_inner(dest, opts, before)
            .instrument(span)
            .await;
        res.map_err(|e| VmmError::Snapshot {
            id: self.spec.id.clone(),
            source: Box::new(e),
        })
    }

    async fn snapshot_inner(
        &self,
        dest: &Path,
        opts: SnapshotOptions,
        before: VmState,
    ) -> Result<SnapshotInfo, QemuError> {
        if opts.kind == SnapshotKind::Template && self.spec.memory != MemoryBacking::SharedFile {
            return Err(QemuError::NotTemplateCapable);
        }
        if let Err(reason) = crate::spec::check_path(dest) {
            return Err(QemuError::BadSnapshot {
                dir: dest.to_path_buf(),
                reason: reason.into(),
            });
        }
        if dest.join(MANIFEST_FILE).exists() {
            return Err(QemuError::SnapshotExists {
                dir: dest.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dest).map_err(io_err("create snapshot directory", dest))?;
        let started = Instant::now();
        let mut timings = SnapshotTimings::default();

        if before == VmState::Running {
            // Best effort: RAM and disk are captured together while stopped,
            // so a sync only shortens what the guest replays after restore.
            match tokio::time::timeout(Duration::from_secs(30), self.agent.sync()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "agent sync before snapshot failed"),
                Err(_) => tracing::warn!("agent sync before snapshot timed out"),
            }
        }
        timings.sync_ms = started.elapsed().as_millis() as u64;

        let t = Instant::now();
        self.qmp_run(&qmp::Stop {}).await?;
        self.set_state(VmState::Paused);
        timings.stop_ms = t.elapsed().as_millis() as u64;

        let res = self.capture(dest, opts, &mut timings, started).await;
        match (&res, opts.then) {
            (Ok(_), AfterSnapshot::Exit) => {
                self.shutdown_process().await?;
                self.release_jail().await;
                self.clean_run_files();
                self.set_state(VmState::Exited);
            }
            _ => {
                if res.is_err() {
                    for f in [STATE_FILE, MEMORY_FILE, DISK_FILE, MANIFEST_FILE] {
                        remove_if_exists(&dest.join(f));
                    }
                    let _ = std::fs::remove_dir(dest);
                }
                if before == VmState::Running && self.process.exit_status().is_none() {
                    self.qmp_run(&qmp::Cont {}).await?;
                    self.set_state(VmState::Running);
                }
            }
        }
        let manifest = res?;
        tracing::info!(
            dir = %dest.display(),
            total_ms = manifest.timings.total_ms,
            migrate_ms = manifest.timings.migrate_ms,
            copy_ms = manifest.timings.copy_ms,
            state_bytes = manifest.state_bytes,
            "snapshot written"
        );
        Ok(SnapshotInfo {
            dir: dest.to_path_buf(),
            manifest,
        })
    }

    /// The part of a snapshot that runs while the VM is stopped.
    async fn capture(
        &self,
        dest: &Path,
        opts: SnapshotOptions,
        timings: &mut SnapshotTimings,
        started: Instant,
    ) -> Result<SnapshotManifest, QemuError> {
        let template = opts.kind == SnapshotKind::Template;
        let t = Instant::now();
        self.set_capabilities(template).await?;
        let state_path = dest.join(STATE_FILE);
        let state_bytes = self.migrate_to(&state_path).await?;
        timings.migrate_ms = t.elapsed().as_millis() as u64;

        let t = Instant::now();
        let disk_src = self.spec.disk.clone();
        let disk_dst = dest.join(DISK_FILE);
        blocking(move || snapshot::sparse_copy(&disk_src, &disk_dst))
            .await
            .map_err(io_err("copy disk from", &self.spec.disk))?;
        let disk_bytes = std::fs::metadata(dest.join(DISK_FILE))
            .map_err(io_err("stat", dest))?
            .len();
        let mut memory_bytes = None;
        if template {
            let src = self.layout.memory_file.clone();
            let dst = dest.join(MEMORY_FILE);
            // Exiting anyway: once QEMU is gone its RAM file can simply move
            // (same filesystem); otherwise copy it while the guest is stopped.
            let moved = opts.then == AfterSnapshot::Exit
                && self.shutdown_process().await.is_ok()
                && std::fs::rename(&src, &dst).is_ok();
            if moved {
                std::fs::File::open(&dst)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("fsync", &dst))?;
            } else {
                blocking(move || snapshot::sparse_copy(&src, &dst))
                    .await
                    .map_err(io_err("copy memory file", &self.layout.memory_file))?;
            }
            memory_bytes = Some(
                std::fs::metadata(dest.join(MEMORY_FILE))
                    .map_err(io_err("stat", dest))?
                    .len(),
            );
        }
        timings.copy_ms = t.elapsed().as_millis() as u64;
        timings.total_ms = started.elapsed().as_millis() as u64;

        let manifest = SnapshotManifest {
            format: MANIFEST_FORMAT,
            kind: opts.kind,
            spec: self.spec.clone(),
            vmm_args: self.record.args.clone(),
            vmm_binary: self.record.binary.clone(),
            vmm_version: self.record.version.clone(),
            accel: self.record.accel,
            state_file: STATE_FILE.into(),
            state_bytes,
            memory_file: template.then(|| MEMORY_FILE.to_string()),
            memory_bytes,
            disk_file: DISK_FILE.into(),
            disk_bytes,
            created_at_ms: now_ms(),
            timings: timings.clone(),
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            .map_err(io_err("encode manifest", dest))?;
        snapshot::write_durable(&dest.join(MANIFEST_FILE), &json)
            .map_err(io_err("write manifest in", dest))?;
        Ok(manifest)
    }

    /// QMP `quit`, then SIGTERM/SIGKILL to the process group if needed.
    async fn shutdown_process(&self) -> Result<(), QemuError> {
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

    fn clean_run_files(&self) {
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
    fn start_console(&self) {
        let task = console::spawn(
            self.layout.console_socket.clone(),
            self.layout.console_log.clone(),
            self.layout.console_log_old.clone(),
            self.qmp_timeout,
        );
        if let Some(old) = self
            .console
            .lock()
            .expect("console lock poisoned")
            .replace(task)
        {
            old.abort();
        }
    }

    /// Tears the jail down once the process has exited.
    async fn release_jail(&self) {
        if let Some(task) = self.console.lock().expect("console lock poisoned").take() {
            task.abort();
        }
        if let Some(mut j) = self.jail.lock().await.take() {
            j.release().await;
        }
    }

    /// Kill and remove everything after a failed start.
    async fn teardown(&self, owns_disk: bool) {
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

impl Vmm for QemuVmm {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "qemu".into(),
            accel: self.accel,
            kvm: self.accel == Accel::Kvm,
            fast_clone: true,
            full_snapshot: true,
            pause: true,
            adopt: true,
            max_vcpus: self.host.cpus,
            available_memory_mb: self.host.mem_available_mb,
        }
    }

    fn boot(&self, spec: VmSpec) -> VmmFuture<'_, Box<dyn Vm>> {
        Box::pin(async move { Ok(Box::new(self.boot_vm(spec).await?) as Box<dyn Vm>) })
    }

    fn restore<'a>(&'a self, snapshot: &'a Path, spec: VmSpec) -> VmmFuture<'a, Box<dyn Vm>> {
        Box::pin(async move { Ok(Box::new(self.restore_vm(snapshot, spec).await?) as Box<dyn Vm>) })
    }

    fn adopt<'a>(&'a self, dir: &'a Path) -> VmmFuture<'a, Box<dyn Vm>> {
        Box::pin(async move { Ok(Box::new(self.adopt_vm(dir).await?) as Box<dyn Vm>) })
    }
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
    fn exited(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(self.process.exited())
    }
}
