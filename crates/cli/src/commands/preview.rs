//! `hearth preview create|ls|share|rm`: a URL for a port in a sandbox, and
//! share links (a token in the URL, shown once) for private ones.

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use serde_json::{json, Value};

use crate::api::{Api, ClientArgs};

#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    hearth preview create sbx_123 8000             # private: your key or a share link\n  \
    hearth preview create sbx_123 3000 --public\n  \
    hearth preview share sbx_123 8000 --ttl 600    # a link anyone can open for 10 minutes\n  \
    hearth preview ls sbx_123\n  \
    hearth preview rm sbx_123 8000")]
pub struct Args {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: PreviewCommand,
}

#[derive(Debug, Subcommand)]
pub enum PreviewCommand {
    /// A preview URL for a port in the sandbox.
    #[command(
        after_help = "Examples:\n  hearth preview create sbx_123 8000\n  hearth preview create sbx_123 3000 --public"
    )]
    Create {
        sandbox: String,
        port: u16,
        /// Anyone with the URL may open it (rate limited); default private.
        #[arg(long)]
        public: bool,
    },
    /// The sandbox's previews.
    #[command(
        after_help = "Examples:\n  hearth preview ls sbx_123\n  hearth preview ls sbx_123 --json"
    )]
    Ls { sandbox: String },
    /// A share link for a port's preview (created private if missing).
    #[command(
        after_help = "Examples:\n  hearth preview share sbx_123 8000\n  hearth preview share sbx_123 8000 --ttl 600"
    )]
    Share {
        sandbox: String,
        /// The port, or the preview's id.
        port: String,
        /// Seconds the link works (at most 86400).
        #[arg(long, default_value_t = 3600)]
        ttl: u32,
    },
    /// Delete a port's preview (by port or id).
    #[command(after_help = "Examples:\n  hearth preview rm sbx_123 8000")]
    Rm { sandbox: String, port: String },
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    crate::api::block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<u8> {
    let api = Api::new(&args.client)?;
    let json_out = args.client.json;
    match args.command {
        PreviewCommand::Create {
            sandbox,
            port,
            public,
        } => {
            let visibility = if public { "public" } else { "private" };
            let v = api
                .post(
                    &format!("/sandboxes/{sandbox}/previews"),
                    json!({ "port": port, "visibility": visibility }),
                )
                .await?;
            show(json_out, std::slice::from_ref(&v["data"]));
        }
        PreviewCommand::Ls { sandbox } => {
            let v = api.get(&format!("/sandboxes/{sandbox}/previews")).await?;
            show(json_out, v["data"].as_array().map_or(&[], Vec::as_slice));
        }
        PreviewCommand::Share { sandbox, port, ttl } => {
            let id = match find(&api, &sandbox, &port).await? {
                Some(p) => p,
                None => {
                    let port: u16 = port
                        .parse()
                        .with_context(|| format!("no preview {port:?} in {sandbox}"))?;
                    let v = api
                        .post(
                            &format!("/sandboxes/{sandbox}/previews"),
                            json!({ "port": port }),
                        )
                        .await?;
                    v["data"]["id"].as_str().unwrap_or_default().to_string()
                }
            };
            let v = api
                .post(
                    &format!("/sandboxes/{sandbox}/previews/{id}/share"),
                    json!({ "ttl_seconds": ttl }),
                )
                .await?;
            if json_out {
                println!("{v}");
            } else {
                println!("{}", v["share_url"].as_str().unwrap_or(""));
                eprintln!(
                    "shown once; works until {} (revoke: DELETE /api/v1/sandboxes/{sandbox}/previews/{id}/share)",
                    v["data"]["share_token_expires_at"].as_str().unwrap_or("?")
                );
            }
        }
        PreviewCommand::Rm { sandbox, port } => {
            let id = find(&api, &sandbox, &port)
                .await?
                .with_context(|| format!("no preview {port:?} in {sandbox}"))?;
            api.delete(&format!("/sandboxes/{sandbox}/previews/{id}"))
                .await?;
        }
    }
    Ok(0)
}

/// The id of the sandbox's preview of port (or with id) `which`.
async fn find(api: &Api, sandbox: &str, which: &str) -> anyhow::Result<Option<String>> {
    let v = api.get(&format!("/sandboxes/{sandbox}/previews")).await?;
    Ok(v["data"].as_array().and_then(|all| {
        all.iter()
            .find(|p| {
                p["id"] == which
                    || which
                        .parse::<u64>()
                        .is_ok_and(|n| p["port"].as_u64() == Some(n))
            })
            .and_then(|p| p["id"].as_str().map(str::to_string))
    }))
}

fn show(json_out: bool, rows: &[Value]) {
    if json_out {
        println!("{}", Value::Array(rows.to_vec()));
        return;
    }
    println!("{:<24} {:>5} {:<8}  URL", "ID", "PORT", "ACCESS");
    for r in rows {
        println!(
            "{:<24} {:>5} {:<8}  {}",
            r["id"].as_str().unwrap_or(""),
            r["port"],
            r["visibility"].as_str().unwrap_or(""),
            r["url"].as_str().unwrap_or("")
        );
    }
}
