//! `hearth up`: from a fresh machine to a running sandbox. Builds (or finds
//! cached) the guest kernel, initramfs and root filesystems, then boots a demo
//! sandbox in a real VM, runs Python in it, writes and reads a file, and
//! destroys it. Grows into "start the server" once the control plane lands.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use hearth_agent_protocol::{ExecRequest, WriteFileRequest};
use hearth_image::{create_sparse_ext4, static_agent_binary, ImageStore, Recipe};
use hearth_vmm::{QemuConfig, QemuVmm, VmSpec};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth up\n  hearth up --data-dir /var/lib/hearth --template minimal"
)]
pub struct Args {
    /// Where images, sandboxes and the store live.
    #[arg(long, default_value = "./data", env = "HEARTH_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Root filesystem of the demo sandbox: `default` (debian) or `minimal`.
    #[arg(long, default_value = "default")]
    pub template: String,
    /// Also run this shell command in the demo sandbox and print its output.
    #[arg(long)]
    pub run: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let recipe: Recipe = args
        .template
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("unknown template {:?}", args.template))?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create data dir {}", args.data_dir.display()))?;
    // VM specs take absolute paths only (the VMM runs in its own directory).
    let data_dir = std::path::absolute(&args.data_dir)?;
    let store = ImageStore::new(&data_dir);
    let t = Instant::now();
    let agent = static_agent_binary().context("build the guest agent")?;
    let kernel = store.kernel().context("guest kernel")?;
    let initrd = store.initramfs(&kernel, &agent).context("initramfs")?;
    // Both built-in templates are made up front, so the first real sandbox
    // of either kind does not wait for an image build.
    let minimal = store
        .rootfs(Recipe::Minimal, &agent)
        .context("minimal image")?;
    let base = match recipe {
        Recipe::Minimal => minimal,
        other => store
            .rootfs(other, &agent)
            .context("default (debian) image")?,
    };
    println!(
        "images ready in {:.1}s (kernel {})",
        t.elapsed().as_secs_f64(),
        kernel.version
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(demo(&data_dir, kernel.vmlinuz, initrd, base, args.run))
}

async fn demo(
    data_dir: &std::path::Path,
    kernel: PathBuf,
    initrd: PathBuf,
    base: PathBuf,
    run: Option<String>,
) -> anyhow::Result<()> {
    let vmm = QemuVmm::new(QemuConfig::default());
    let id = format!("demo-{}", std::process::id());
    let mut spec = VmSpec::new(&id, &data_dir.join("sandboxes"), kernel, initrd, base);
    spec.memory_mb = 512;
    std::fs::create_dir_all(&spec.dir)?;
    create_sparse_ext4(&spec.disk, 1024).context("sandbox disk")?;
    println!(
        "booting demo sandbox {id} ({:?} acceleration)...",
        vmm.accel()
    );
    let t = Instant::now();
    let dir = spec.dir.clone();
    let vm = match vmm.boot_vm(spec).await {
        Ok(vm) => vm,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(anyhow::Error::new(e).context("boot the demo sandbox"));
        }
    };
    println!(
        "sandbox running, agent answered after {} ms",
        t.elapsed().as_millis()
    );
    let result = exercise(&vm.agent(), run).await;
    vm.destroy().await.context("destroy the demo sandbox")?;
    result?;
    println!("demo sandbox destroyed. Hearth works on this machine.");
    Ok(())
}

async fn exercise(
    agent: &hearth_agent_client::AgentClient,
    run: Option<String>,
) -> anyhow::Result<()> {
    let r = agent
        .exec(&ExecRequest {
            command: "python3 -c 'import platform; print(\"hello from\", platform.python_version(), \"in\", platform.node())' 2>/dev/null || echo hello from busybox $(uname -r)".into(),
            ..Default::default()
        })
        .await?;
    print!(
        "exec ({} ms): {}",
        r.duration_ms,
        String::from_utf8_lossy(&r.stdout.0)
    );
    agent
        .write_file(&WriteFileRequest {
            path: "/workspace/hello.txt".into(),
            content: "written by hearth up\n".into(),
            mode: None,
        })
        .await?;
    let back = agent.read_file_bytes("/workspace/hello.txt").await?;
    print!(
        "file /workspace/hello.txt: {}",
        String::from_utf8_lossy(&back)
    );
    if let Some(command) = run {
        let r = agent
            .exec(&ExecRequest {
                command: command.clone(),
                timeout_ms: Some(120_000),
                ..Default::default()
            })
            .await?;
        println!("$ {command}  (exit {})", r.exit_code);
        print!(
            "{}{}",
            String::from_utf8_lossy(&r.stdout.0),
            String::from_utf8_lossy(&r.stderr.0)
        );
    }
    Ok(())
}
