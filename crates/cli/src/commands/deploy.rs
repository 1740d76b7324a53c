//! `hearth deploy` (publish a sandbox as a deployment, or a new version of
//! one) and `hearth deployment ls|versions|rollback|rm`.

use clap::{Args as ClapArgs, Subcommand};
use serde_json::{json, Value};

use crate::api::{Api, ClientArgs};

#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    hearth deploy sbx_123 --name site --port 8080 --start 'python3 -m http.server 8080'\n  \
    hearth deploy sbx_456 --to dep_123 --port 8080 --start 'python3 -m http.server 8080'   # a new version")]
pub struct DeployArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The sandbox to publish.
    pub sandbox: String,
    /// A new deployment of this name...
    #[arg(long, conflicts_with = "to")]
    pub name: Option<String>,
    /// ...or a new version of this deployment.
    #[arg(long)]
    pub to: Option<String>,
    /// The port the app listens on.
    #[arg(long)]
    pub port: u16,
    /// The command that starts the app.
    #[arg(long)]
    pub start: String,
    /// Checked (2xx/3xx) before the URL switches.
    #[arg(long, default_value = "/")]
    pub health: String,
    /// Seconds the new version has to pass its health check.
    #[arg(long, default_value_t = 90)]
    pub health_timeout: u32,
}

#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    hearth deployment ls\n  \
    hearth deployment versions dep_123\n  \
    hearth deployment rollback dep_123\n  \
    hearth deployment rm dep_123")]
pub struct Args {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: DeploymentCommand,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// The tenant's deployments and their URLs.
    #[command(after_help = "Examples:\n  hearth deployment ls\n  hearth deployment ls --json")]
    Ls,
    /// A deployment's versions, newest first.
    #[command(after_help = "Examples:\n  hearth deployment versions dep_123")]
    Versions { id: String },
    /// Serve an earlier version again (the one before, or --version).
    #[command(
        after_help = "Examples:\n  hearth deployment rollback dep_123\n  hearth deployment rollback dep_123 --version dpv_456"
    )]
    Rollback {
        id: String,
        #[arg(long)]
        version: Option<String>,
    },
    /// Stop and delete a deployment.
    #[command(after_help = "Examples:\n  hearth deployment rm dep_123")]
    Rm { id: String },
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<u8> {
    crate::api::block_on(async move {
        let api = Api::new(&args.client)?;
        let mut body = json!({
            "port": args.port,
            "start_command": args.start,
            "health_check_path": args.health,
            "health_timeout_sec": args.health_timeout,
        });
        match (args.name, args.to) {
            (_, Some(dep)) => body["deployment_id"] = json!(dep),
            (Some(name), None) => body["name"] = json!(name),
            (None, None) => anyhow::bail!("name a new deployment (--name) or one to update (--to)"),
        }
        eprintln!(
            "publishing {} (snapshot, start, health check)...",
            args.sandbox
        );
        let v = api
            .post(&format!("/sandboxes/{}/deploy", args.sandbox), body)
            .await?;
        let d = &v["data"];
        if args.client.json {
            println!("{d}");
        } else if d["promoted"] == true {
            println!("{}", d["deployment"]["public_url"].as_str().unwrap_or(""));
            eprintln!(
                "version {} of {} serving",
                d["version"]["version_number"],
                d["deployment"]["id"].as_str().unwrap_or("")
            );
        } else {
            anyhow::bail!(
                "version {} failed: {}; the deployment serves what it did",
                d["version"]["version_number"],
                d["version"]["error"].as_str().unwrap_or("not promoted")
            );
        }
        Ok(0)
    })
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    crate::api::block_on(async move {
        let api = Api::new(&args.client)?;
        let json_out = args.client.json;
        match args.command {
            DeploymentCommand::Ls => {
                let v = api.get("/deployments").await?;
                rows(json_out, &v["data"], &["id", "name", "state", "public_url"]);
            }
            DeploymentCommand::Versions { id } => {
                let v = api.get(&format!("/deployments/{id}/versions")).await?;
                rows(
                    json_out,
                    &v["data"],
                    &[
                        "id",
                        "version_number",
                        "state",
                        "source_sandbox_id",
                        "error",
                    ],
                );
            }
            DeploymentCommand::Rollback { id, version } => {
                let body = match version {
                    Some(v) => json!({ "version_id": v }),
                    None => json!({}),
                };
                let v = api
                    .post(&format!("/deployments/{id}/rollback"), body)
                    .await?;
                if json_out {
                    println!("{}", v["data"]);
                } else {
                    println!(
                        "serving version {} ({})",
                        v["data"]["version"]["version_number"],
                        v["data"]["version"]["id"].as_str().unwrap_or("")
                    );
                }
            }
            DeploymentCommand::Rm { id } => {
                api.delete(&format!("/deployments/{id}")).await?;
            }
        }
        Ok(0)
    })
}

/// A table of `cols` (or the JSON with `--json`).
fn rows(json_out: bool, list: &Value, cols: &[&str]) {
    if json_out {
        println!("{list}");
        return;
    }
    println!(
        "{}",
        cols.iter()
            .map(|c| c.to_uppercase())
            .collect::<Vec<_>>()
            .join("  ")
    );
    for r in list.as_array().map_or(&[][..], Vec::as_slice) {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match &r[*c] {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                v => v.to_string(),
            })
            .collect();
        println!("{}", cells.join("  "));
    }
}
