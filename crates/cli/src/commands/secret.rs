//! `hearth secret set|ls|rm|unbind`: the secrets vault. A value is read
//! from stdin (or an environment variable), never from the command line,
//! where other users of the machine could see it in the process list.

use std::io::Read;

use anyhow::{bail, Context};
use clap::{Args as ClapArgs, Subcommand};
use serde_json::{json, Value};

use crate::api::{Api, ClientArgs};

#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    hearth secret set openai --from-env OPENAI_API_KEY --sandbox sbx_123 --env OPENAI_API_KEY\n  \
    printf %s \"$NEW_KEY\" | hearth secret set openai   # rotate: the next command gets it\n  \
    hearth secret ls\n  \
    hearth secret unbind openai --sandbox sbx_123\n  \
    hearth secret rm openai")]
pub struct Args {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret (or rotate the one of that name), and bind it to a
    /// sandbox as an env variable with --sandbox and --env.
    #[command(
        after_help = "Examples:\n  hearth secret set gh --from-env GITHUB_TOKEN --sandbox sbx_123 --env GITHUB_TOKEN\n  printf %s \"$TOKEN\" | hearth secret set gh"
    )]
    Set {
        name: String,
        /// Read the value from this environment variable (default: stdin).
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
        /// Bind it to this sandbox.
        #[arg(long, requires = "env")]
        sandbox: Option<String>,
        /// The env variable it is exposed as.
        #[arg(long)]
        env: Option<String>,
        /// api_key, token, password, certificate or generic.
        #[arg(long = "type", default_value = "api_key")]
        kind: String,
    },
    /// The tenant's secrets (never their values), or those bound to a
    /// sandbox.
    #[command(after_help = "Examples:\n  hearth secret ls\n  hearth secret ls --sandbox sbx_123")]
    Ls {
        #[arg(long)]
        sandbox: Option<String>,
    },
    /// Unbind a secret from a sandbox: its next command no longer gets it.
    #[command(after_help = "Examples:\n  hearth secret unbind gh --sandbox sbx_123")]
    Unbind {
        name: String,
        #[arg(long)]
        sandbox: String,
    },
    /// Delete a secret and its bindings.
    #[command(after_help = "Examples:\n  hearth secret rm gh")]
    Rm { name: String },
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    crate::api::block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<u8> {
    let api = Api::new(&args.client)?;
    let json_out = args.client.json;
    match args.command {
        SecretCommand::Set {
            name,
            from_env,
            sandbox,
            env,
            kind,
        } => {
            let value = read_value(from_env.as_deref())?;
            let v = match find(&api, &name).await? {
                Some(s) => {
                    let id = s["id"].as_str().unwrap_or_default();
                    let req = api
                        .http
                        .patch(api.url(&format!("/egress/secrets/{id}")))
                        .json(&json!({ "value": value }));
                    let v = api.send(req).await?;
                    if let (Some(sbx), Some(env)) = (&sandbox, &env) {
                        bind(&api, id, sbx, env).await?;
                    }
                    v
                }
                None => {
                    let mut body = json!({ "name": name, "value": value, "type": kind });
                    if let (Some(sbx), Some(env)) = (&sandbox, &env) {
                        body["resource_id"] = json!(sbx);
                        body["expose_as_env"] = json!(env);
                    }
                    api.post("/egress/secrets", body).await?
                }
            };
            if json_out {
                println!("{v}");
            } else {
                show(std::slice::from_ref(&v["data"]));
            }
        }
        SecretCommand::Ls { sandbox } => {
            let rows = match &sandbox {
                None => api.get("/egress/secrets").await?["data"].clone(),
                Some(sbx) => {
                    let bound = api
                        .get(&format!("/egress/bindings?resource_id={sbx}"))
                        .await?;
                    let all = api.get("/egress/secrets").await?;
                    let ids: Vec<&Value> = bound["data"]
                        .as_array()
                        .map(|b| b.iter().map(|b| &b["secret_id"]).collect())
                        .unwrap_or_default();
                    Value::Array(
                        all["data"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter(|s| ids.contains(&&s["id"]))
                                    .cloned()
                                    .collect()
                            })
                            .unwrap_or_default(),
                    )
                }
            };
            if json_out {
                println!("{rows}");
            } else {
                show(rows.as_array().map_or(&[], Vec::as_slice));
            }
        }
        SecretCommand::Unbind { name, sandbox } => {
            let s = find(&api, &name)
                .await?
                .with_context(|| format!("no secret named {name}"))?;
            let id = s["id"].as_str().unwrap_or_default();
            let bound = api
                .get(&format!(
                    "/egress/bindings?resource_id={sandbox}&secret_id={id}"
                ))
                .await?;
            let Some(list) = bound["data"].as_array().filter(|l| !l.is_empty()) else {
                bail!("{name} is not bound to {sandbox}");
            };
            for b in list {
                let bid = b["id"].as_str().unwrap_or_default();
                api.delete(&format!("/egress/bindings/{bid}")).await?;
            }
        }
        SecretCommand::Rm { name } => {
            let s = find(&api, &name)
                .await?
                .with_context(|| format!("no secret named {name}"))?;
            let id = s["id"].as_str().unwrap_or_default();
            api.delete(&format!("/egress/secrets/{id}")).await?;
        }
    }
    Ok(0)
}

/// The value: from `$VAR`, else all of stdin (one trailing newline off,
/// as `echo` adds).
fn read_value(from_env: Option<&str>) -> anyhow::Result<String> {
    let v = match from_env {
        Some(var) => std::env::var(var).with_context(|| format!("${var} is not set"))?,
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("reading the value from stdin (end with Ctrl-D)");
            }
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("read the value from stdin")?;
            s.strip_suffix('\n').map(str::to_string).unwrap_or(s)
        }
    };
    if v.is_empty() {
        bail!("the value is empty");
    }
    Ok(v)
}

async fn bind(api: &Api, secret_id: &str, sandbox: &str, env: &str) -> anyhow::Result<()> {
    api.post(
        "/egress/bindings",
        json!({ "secret_id": secret_id, "resource_id": sandbox, "resource_type": "sandbox", "expose_as_env": env }),
    )
    .await?;
    Ok(())
}

/// The tenant's secret named `name`.
async fn find(api: &Api, name: &str) -> anyhow::Result<Option<Value>> {
    let v = api.get("/egress/secrets").await?;
    Ok(v["data"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name).cloned()))
}

fn show(rows: &[Value]) {
    println!(
        "{:<24} {:<20} {:<9} {:<8}  ROTATED",
        "ID", "NAME", "TYPE", "VALUE"
    );
    for r in rows {
        let hint = format!(
            "{}…{}",
            r["value_prefix"].as_str().unwrap_or(""),
            r["last4"].as_str().unwrap_or("")
        );
        println!(
            "{:<24} {:<20} {:<9} {:<8}  {}",
            r["id"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or(""),
            r["type"].as_str().unwrap_or(""),
            hint,
            r["rotated_at"].as_str().unwrap_or("-")
        );
    }
}
