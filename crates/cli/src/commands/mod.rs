//! The command tree. Each top-level subcommand lives in its own module with
//! an `Args` type and a `run` function; add new ones (`serve`, `up`, ...) to
//! [`Command`] and [`run`].

pub mod audit;
pub mod deploy;
pub mod image;
pub mod preview;
pub mod sandbox;
pub mod secret;
pub mod serve;
pub mod shell;
pub mod template;
pub mod token;
pub mod up;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hearth",
    version,
    about = "Self-hosted microVM sandboxes for AI agents",
    after_help = "Examples:\n  hearth up                                  # set up, serve, and run a demo sandbox\n  hearth sandbox create --template minimal\n  hearth sandbox exec sbx_123 -- python3 -c 'print(42)'\n  hearth sandbox shell sbx_123\n  hearth template build web --from default --run 'pip install flask'\n  hearth preview share sbx_123 8000\n  printf %s \"$TOKEN\" | hearth secret set gh --sandbox sbx_123 --env GITHUB_TOKEN\n\nThe client commands find the server in --url / HEARTH_BASE_URL and the key in\n--api-key / HEARTH_API_KEY (else ./data/admin.key)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build guest kernels, initramfs and root filesystem images.
    Image(image::Args),
    /// Set up this machine, start the server, and show a sandbox working.
    Up(up::Args),
    /// Run the control plane (REST API on 127.0.0.1:7070 by default).
    Serve(serve::Args),
    /// Create, list, exec in, shell into, copy to and from, and destroy sandboxes.
    Sandbox(sandbox::Args),
    /// Build templates (packages, files, a running server; sandboxes start warm) and list them.
    Template(template::Args),
    /// Preview URLs for ports in a sandbox, and share links.
    Preview(preview::Args),
    /// The secrets vault: store, rotate, bind to a sandbox as env, delete.
    Secret(secret::Args),
    /// Scoped tokens for end users: mint, list, revoke.
    Token(token::Args),
    /// The audit log: who did what, when, and how it ended.
    Audit(audit::Args),
    /// Publish a sandbox as a deployment (or a new version of one).
    Deploy(deploy::DeployArgs),
    /// Deployments: list, versions, logs, rollback, scale, env, domains, delete.
    Deployment(deploy::Args),
}

/// Runs the command; `Ok` carries the exit status (`sandbox exec` passes
/// the command's on).
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Image(args) => image::run(args).map(|()| 0),
        Command::Up(args) => up::run(args).map(|()| 0),
        Command::Serve(args) => serve::run(args).map(|()| 0),
        Command::Sandbox(args) => sandbox::run(args),
        Command::Template(args) => template::run(args),
        Command::Preview(args) => preview::run(args),
        Command::Secret(args) => secret::run(args),
        Command::Token(args) => token::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Deploy(args) => deploy::deploy(args),
        Command::Deployment(args) => deploy::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every command, down to the leaves, shows examples in `--help`.
    #[test]
    fn every_command_has_examples_in_its_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            let help = cmd
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            if !help.contains("Examples:\n  hearth ") {
                missing.push(path.clone());
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert_eq!(missing, Vec::<String>::new(), "commands without examples");
    }

    #[test]
    fn image_build_takes_a_target_and_a_data_dir() {
        let cli = Cli::try_parse_from(["hearth", "image", "build", "minimal", "--data-dir", "/x"])
            .unwrap();
        let Command::Image(image::Args {
            command: image::ImageCommand::Build {
                target, data_dir, ..
            },
        }) = cli.command
        else {
            panic!("parsed as another command");
        };
        assert_eq!(target, image::Target::Minimal);
        assert_eq!(data_dir, std::path::PathBuf::from("/x"));
        assert!(Cli::try_parse_from(["hearth", "image", "build", "alpine"]).is_err());
    }
}
