//! `hearth serve`: the control plane. Config from a TOML file (`--config`
//! or `HEARTH_CONFIG`), `HEARTH_*` variables, then these flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use hearth_server::ServerConfig;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth serve\n  hearth serve --listen 0.0.0.0:7070 --data-dir /var/lib/hearth\n  HEARTH_ACCEL=tcg hearth serve --config /etc/hearth.toml"
)]
#[group(id = "server_flags")]
pub struct Args {
    /// TOML config file.
    #[arg(long, env = "HEARTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the REST API (default 127.0.0.1:7070).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory: store, sandboxes, images (default ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Image cache directory (default: the data directory).
    #[arg(long)]
    pub images_dir: Option<PathBuf>,
}

pub fn config(args: &Args) -> anyhow::Result<ServerConfig> {
    let mut cfg = ServerConfig::load(args.config.as_deref())?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(d) = &args.images_dir {
        cfg.images_dir = Some(d.clone());
    }
    cfg.validate()?;
    Ok(cfg)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(hearth_server::serve(cfg, |started| {
        println!("hearth listening on {}", started.url);
        match &started.admin_key {
            Some(key) => println!(
                "admin key (shown once; also in {}): {key}",
                started.admin_key_file.display()
            ),
            None => println!("admin key: see {}", started.admin_key_file.display()),
        }
    }))
}
