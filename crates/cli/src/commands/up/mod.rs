//! `hearth up`: from a fresh machine to a running server with a sandbox
//! shown working. It checks the machine ([`preflight`]: packages, root,
//! disk) and installs what is missing, builds the guest kernel, initramfs
//! and root filesystems (cached after the first run, with the image
//! builder's progress), starts the server, prints its URL and admin key,
//! and runs a demo through the REST API ([`demo`]): create a sandbox, run
//! Python, write and read a file, destroy it, then show a second sandbox
//! restored from the template snapshot. Then it serves until Ctrl-C, or
//! stops after the demo with `--exit-after-demo`.

mod demo;
mod preflight;
mod progress;

use anyhow::{bail, Context};
use hearth_image::{static_agent_binary, ImageStore, Recipe};
use tokio::sync::oneshot;

use super::serve;
use crate::api::Api;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    hearth up                               # everything, then serve on 127.0.0.1:7070\n  \
    hearth up --template minimal            # a busybox demo sandbox (no Debian build)\n  \
    hearth up --exit-after-demo             # check a machine, then stop\n  \
    hearth up --data-dir /var/lib/hearth --listen 0.0.0.0:7070\n  \
    hearth up --run 'pip list'              # also run this in the demo sandbox")]
pub struct Args {
    #[command(flatten)]
    pub serve: serve::Args,
    /// Template of the demo sandbox: `default` (Debian with Python, git,
    /// Node.js; its image takes about two minutes to build once) or
    /// `minimal` (busybox, seconds).
    #[arg(long, default_value = "default")]
    pub template: String,
    /// Also run this shell command in the demo sandbox and print its output.
    #[arg(long)]
    pub run: Option<String>,
    /// Start the server without the demo.
    #[arg(long)]
    pub no_demo: bool,
    /// Stop the server after the demo instead of serving (scripts, CI).
    #[arg(long, conflicts_with = "no_demo")]
    pub exit_after_demo: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = serve::config(&args.serve)?;
    let recipe = match args.template.as_str() {
        "default" | "debian" => Recipe::Debian,
        "minimal" => Recipe::Minimal,
        other => bail!("unknown template {other:?}: `hearth up` demos `default` or `minimal`"),
    };
    let data_dir = std::path::absolute(&cfg.data_dir).context("resolve the data directory")?;
    let store = ImageStore::new(cfg.images_dir());

    // The machine first: every problem at once, each with its fix.
    let cached = match recipe {
        Recipe::Debian => store.debian_is_built(),
        Recipe::Minimal => cfg.images_dir().join("images").is_dir(),
    };
    let facts = preflight::facts(&data_dir, cached, recipe == Recipe::Debian);
    match preflight::plan(&facts) {
        Err(problems) => bail!("hearth up cannot run on this machine yet:\n  {problems}"),
        Ok(preflight::Plan::Install { packages, sudo }) => preflight::install(&packages, sudo)?,
        Ok(preflight::Plan::Ready) => {}
    }

    eprintln!(
        "up: guest images in {} (built on the first run, then cached)",
        cfg.images_dir().display()
    );
    let agent = static_agent_binary().context("build the guest agent")?;
    let kernel = store.kernel().context("guest kernel")?;
    store
        .initramfs(&kernel, &agent)
        .context("guest initramfs")?;
    store
        .rootfs(Recipe::Minimal, &agent)
        .context("the minimal image")?;
    if recipe == Recipe::Debian {
        store
            .rootfs(Recipe::Debian, &agent)
            .context("the default (Debian) image")?;
    }
    let accel = hearth_vmm::open(&cfg.vmm)
        .context("open the VMM driver")?
        .capabilities()
        .accel;
    eprintln!(
        "up: VMs run with {}",
        match accel {
            hearth_vmm::Accel::Kvm => "KVM".to_string(),
            hearth_vmm::Accel::Tcg =>
                "QEMU's TCG emulation (no usable KVM here: slower, same behaviour)".to_string(),
        }
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(serve_and_demo(cfg, args))
}

/// Runs the server; once it listens, runs the demo against it. A failed
/// demo stops the server and is the command's error.
async fn serve_and_demo(cfg: hearth_server::ServerConfig, args: Args) -> anyhow::Result<()> {
    let (started_tx, started_rx) = oneshot::channel::<(String, String, String)>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let template = if args.template == "debian" {
        "default".to_string()
    } else {
        args.template.clone()
    };
    let (no_demo, exit_after, run) = (args.no_demo, args.exit_after_demo, args.run.clone());
    let warm_boot = cfg.warm_boot;
    let prebuilt = cfg.warm_boot && cfg.warm_prebuild;
    let demo = tokio::spawn(async move {
        let Ok((url, key, key_file)) = started_rx.await else {
            return Ok(()); // the server did not start; its error says why
        };
        let result = if no_demo {
            Ok(())
        } else {
            demo::run(
                &Api::with(&url, &key),
                &template,
                run.as_deref(),
                warm_boot,
                prebuilt,
            )
            .await
        };
        match &result {
            Ok(()) if !exit_after => {
                println!();
                println!("Hearth is running at {url}. Ctrl-C stops it (sandboxes keep running).");
                println!("  export HEARTH_BASE_URL={url} HEARTH_API_KEY=$(cat {key_file})");
                println!("  hearth sandbox create --template minimal");
                println!("  hearth sandbox exec <id> -- uname -a");
                println!("  hearth sandbox shell <id>");
            }
            _ => {
                let _ = stop_tx.send(());
            }
        }
        result
    });
    let shutdown = async move {
        tokio::select! {
            _ = hearth_server::shutdown_signal() => {}
            _ = stop_rx => {}
        }
    };
    let served = hearth_server::serve_until(
        cfg,
        |started| {
            println!("hearth listening on {}", started.url);
            let key = match &started.admin_key {
                Some(key) => {
                    println!(
                        "admin key (shown once; also in {}): {key}",
                        started.admin_key_file.display()
                    );
                    Some(key.clone())
                }
                None => {
                    println!("admin key: in {}", started.admin_key_file.display());
                    std::fs::read_to_string(&started.admin_key_file)
                        .ok()
                        .map(|k| k.trim().to_string())
                }
            };
            if let Some(key) = key {
                let file = started.admin_key_file.display().to_string();
                let _ = started_tx.send((started.url.clone(), key, file));
            }
        },
        shutdown,
    )
    .await;
    let demo = demo.await.context("the demo task")?;
    served?;
    demo
}
