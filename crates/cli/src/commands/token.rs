//! `hearth token create|ls|revoke`: scoped tokens, a key's delegates with
//! fewer scopes, for at most a day, on fewer sandboxes.

use clap::{Args as ClapArgs, Subcommand};
use serde_json::{json, Value};

use crate::api::{Api, ClientArgs};

#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    hearth token create --user alice --workspace acme --scope sandboxes:exec --sandbox sbx_123\n  \
    hearth token ls\n  \
    hearth token revoke stk_123")]
pub struct Args {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token (printed once) for an end user.
    #[command(
        after_help = "Examples:\n  hearth token create --user alice --workspace acme\n  hearth token create --user bob --workspace acme --scope sandboxes:read --scope sandboxes:exec --sandbox sbx_123 --ttl 600"
    )]
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        workspace: String,
        /// A scope it holds (repeat; default every scope).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A sandbox it is pinned to (repeat; default: its user's own).
        #[arg(long = "sandbox")]
        sandboxes: Vec<String>,
        /// Seconds it lives (at most 86400).
        #[arg(long, default_value_t = 3600)]
        ttl: u32,
    },
    /// The tenant's tokens (never their secrets).
    #[command(after_help = "Examples:\n  hearth token ls\n  hearth token ls --json")]
    Ls,
    /// Revoke a token: refused from its next request.
    #[command(after_help = "Examples:\n  hearth token revoke stk_123")]
    Revoke { id: String },
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    crate::api::block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<u8> {
    let api = Api::new(&args.client)?;
    let json_out = args.client.json;
    match args.command {
        TokenCommand::Create {
            user,
            workspace,
            scopes,
            sandboxes,
            ttl,
        } => {
            let mut body =
                json!({ "user_id": user, "workspace_id": workspace, "expires_in_seconds": ttl });
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            if !sandboxes.is_empty() {
                body["sandbox_ids"] = json!(sandboxes);
            }
            let v = api.post("/tokens/scoped", body).await?;
            if json_out {
                println!("{v}");
            } else {
                println!("{}", v["token"].as_str().unwrap_or(""));
                eprintln!(
                    "shown once; {} until {} (revoke: hearth token revoke {})",
                    v["scopes"]
                        .as_array()
                        .map(|s| s
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" "))
                        .unwrap_or_default(),
                    v["expires_at"].as_str().unwrap_or("?"),
                    v["id"].as_str().unwrap_or("?")
                );
            }
        }
        TokenCommand::Ls => {
            let v = api.get("/tokens/scoped").await?;
            if json_out {
                println!("{}", v["data"]);
            } else {
                println!(
                    "{:<24} {:<16} {:<12} {:<9}  SCOPES",
                    "ID", "USER", "WORKSPACE", "STATE"
                );
                for t in v["data"].as_array().map_or(&[][..], Vec::as_slice) {
                    let state = if t["revoked"] == true {
                        "revoked"
                    } else if t["expired"] == true {
                        "expired"
                    } else {
                        "live"
                    };
                    println!(
                        "{:<24} {:<16} {:<12} {:<9}  {}",
                        t["id"].as_str().unwrap_or(""),
                        t["user_id"].as_str().unwrap_or(""),
                        t["workspace_id"].as_str().unwrap_or(""),
                        state,
                        t["scopes"]
                            .as_array()
                            .map(|s| s
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default()
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            api.delete(&format!("/tokens/scoped/{id}")).await?;
        }
    }
    Ok(0)
}
