//! `hearth image build [kernel|initramfs|minimal|debian|all]`: builds what is
//! missing in the data directory and prints one `<kind>\t<path>` line per
//! artifact.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use hearth_image::{BuildTarget, ImageStore};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth image build all\n  hearth image build kernel --data-dir ./data"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build (or find in the cache) guest artifacts.
    #[command(
        after_help = "Examples:\n  hearth image build\n  hearth image build minimal --data-dir /var/lib/hearth\n  hearth image build debian    # needs root (debootstrap), about two minutes"
    )]
    Build {
        /// What to build.
        #[arg(value_enum, default_value_t = Target::All)]
        target: Target,
        /// The data directory holding kernels/ and images/.
        #[arg(long, env = "HEARTH_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// A prebuilt static agent (default: scripts/build-agent-static).
        #[arg(long, env = hearth_image::AGENT_ENV)]
        agent: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Kernel,
    Initramfs,
    Minimal,
    Debian,
    All,
}

impl From<Target> for BuildTarget {
    fn from(target: Target) -> Self {
        match target {
            Target::Kernel => BuildTarget::Kernel,
            Target::Initramfs => BuildTarget::Initramfs,
            Target::Minimal => BuildTarget::Minimal,
            Target::Debian => BuildTarget::Debian,
            Target::All => BuildTarget::All,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Build {
            target,
            data_dir,
            agent,
        } => {
            let store = ImageStore::new(data_dir);
            for artifact in store.build(target.into(), agent.as_deref())? {
                println!("{artifact}");
            }
            Ok(())
        }
    }
}
