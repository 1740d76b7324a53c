use super::*;
use crate::clock::SystemClock;
use crate::config::ServerConfig;
use crate::store::SqliteStore;
use crate::templates::{TemplateError, Templates};
use hearth_vmm::{Accel, Capabilities, SnapshotSummary, VmSpec, Vmm, VmmError, VmmFuture};

/// A driver that starts nothing: it only says whether a directory holds
/// a snapshot and what its guests' clocks depend on.
#[derive(Debug)]
struct ClockTagged(Option<&'static str>);

fn unsupported() -> VmmError {
    VmmError::InvalidSpec(vec!["this test driver starts nothing".into()])
}

impl Vmm for ClockTagged {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "test".into(),
            accel: Accel::Tcg,
            kvm: false,
            fast_clone: true,
            full_snapshot: true,
            pause: true,
            adopt: false,
            max_vcpus: 2,
            available_memory_mb: 4096,
        }
    }
    fn boot(&self, _spec: VmSpec) -> VmmFuture<'_, Box<dyn Vm>> {
        Box::pin(async { Err(unsupported()) })
    }
    fn restore<'a>(&'a self, _snap: &'a Path, _spec: VmSpec) -> VmmFuture<'a, Box<dyn Vm>> {
        Box::pin(async { Err(unsupported()) })
    }
    fn adopt<'a>(&'a self, _dir: &'a Path) -> VmmFuture<'a, Box<dyn Vm>> {
        Box::pin(async { Err(unsupported()) })
    }
    fn inspect_snapshot(&self, _dir: &Path) -> Result<SnapshotSummary, VmmError> {
        Err(unsupported())
    }
    fn snapshot_exists(&self, dir: &Path) -> bool {
        dir.join("manifest.json").is_file()
    }
    fn guest_clock_tag(&self) -> Option<String> {
        self.0.map(str::to_string)
    }
}

/// `minimal` at the content version the snapshots in a data directory
/// written before the guest clock tag existed are named by.
#[derive(Debug)]
struct Minimal;

#[async_trait::async_trait]
impl Templates for Minimal {
    fn canonical(&self, id: &str) -> Option<String> {
        (id == "minimal").then(|| id.to_string())
    }
    async fn resolve(&self, id: &str) -> Result<ResolvedTemplate, TemplateError> {
        self.canonical(id)
            .ok_or_else(|| TemplateError::Unknown(id.to_string()))?;
        Ok(ResolvedTemplate {
            id: "minimal".into(),
            version: "fecaab91a249-481d91658269".into(),
            kernel: "/nonexistent/vmlinuz".into(),
            initrd: "/nonexistent/initrd".into(),
            base_image: "/nonexistent/base.ext4".into(),
            custom: false,
        })
    }
}

/// A core on `vmm` in a fresh data directory that already holds a
/// `minimal` template snapshot written before the tag existed.
async fn core_with_untagged_snapshot(vmm: ClockTagged) -> (tempfile::TempDir, Arc<Core>, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    let store = SqliteStore::in_memory().await.expect("store");
    let core = Core::new(
        config,
        Arc::new(store),
        Arc::new(vmm),
        Arc::new(Minimal),
        Arc::new(SystemClock),
    )
    .expect("core");
    let old = core
        .templates_root("minimal")
        .join("minimal/fecaab91a249-481d91658269/1c-256m-512d");
    std::fs::create_dir_all(&old).expect("snapshot dir");
    std::fs::write(old.join("manifest.json"), b"{}").expect("manifest");
    (dir, core, old)
}

async fn shape_of(core: &Core) -> Shape {
    let tpl = core.resolve_template("minimal").await.expect("resolve");
    Shape {
        template_id: tpl.id,
        version: tpl.version,
        cpu_count: 1,
        memory_mb: 256,
        disk_size_mb: 512,
    }
}

#[tokio::test]
async fn a_template_snapshot_for_another_guest_clock_is_not_cloned() {
    let (_dir, core, old) = core_with_untagged_snapshot(ClockTagged(Some("tsc2596"))).await;
    let shape = shape_of(&core).await;
    assert_eq!(shape.version, "fecaab91a249-481d91658269-tsc2596");
    assert_ne!(core.shape_dir(&shape), old);
    assert_eq!(
        core.warm_snapshot(&shape),
        None,
        "a snapshot whose guest was told another TSC rate is cloned"
    );
    // The one written for this host's rate is.
    let new = core.shape_dir(&shape);
    std::fs::create_dir_all(&new).expect("snapshot dir");
    std::fs::write(new.join("manifest.json"), b"{}").expect("manifest");
    assert_eq!(core.warm_snapshot(&shape), Some(new));
}

#[tokio::test]
async fn a_driver_whose_guests_calibrate_their_own_clock_keeps_its_snapshots() {
    let (_dir, core, old) = core_with_untagged_snapshot(ClockTagged(None)).await;
    let shape = shape_of(&core).await;
    assert_eq!(shape.version, "fecaab91a249-481d91658269");
    assert_eq!(core.warm_snapshot(&shape), Some(old));
}
