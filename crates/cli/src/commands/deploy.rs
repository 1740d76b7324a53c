//! `hearth deploy` (publish a sandbox as a deployment, or a new version of
//! one) and `hearth deployment ls|versions|logs|rollback|scale|env|domain|
//! redeploy|stop|rm`.

use clap::{Args as ClapArgs, Subcommand};
use serde_json::{json, Value};

use crate::api::{Api, ClientArgs};

#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    hearth deploy sbx_123 --name site --port 8080 --start 'python3 -m http.server 8080'\n  \
    hearth deploy sbx_456 --to dep_123 --port 8080 --start 'python3 -m http.server 8080'   # a new version\n  \
    hearth deploy sbx_123 --name api --port 3000 --build 'npm ci && npm run build' --start 'npm start' --replicas 2")]
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
    /// Run once at publish in a clone of the sandbox (its log is kept).
    #[arg(long)]
    pub build: Option<String>,
    /// The directory the build and start commands run in.
    #[arg(long)]
    pub output_path: Option<String>,
    /// Instances serving it, load-balanced.
    #[arg(long)]
    pub replicas: Option<u32>,
    /// A new deployment's name in its URL (`<domain>.apps.<proxy domain>`).
    #[arg(long)]
    pub domain: Option<String>,
    /// A custom domain to serve too, once verified.
    #[arg(long)]
    pub custom_domain: Option<String>,
    /// Answer once the snapshot is taken; the build and roll-out go on
    /// (`hearth deployment versions` shows how it went).
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    hearth deployment ls\n  \
    hearth deployment versions dep_123\n  \
    hearth deployment logs dep_123 --lines 50\n  \
    hearth deployment rollback dep_123\n  \
    hearth deployment scale dep_123 3\n  \
    hearth deployment env dep_123 PORT=8080 DEBUG=0\n  \
    hearth deployment domain add dep_123 app.example.com\n  \
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
    /// What the start command wrote (the first serving instance's, or
    /// --instance).
    #[command(
        after_help = "Examples:\n  hearth deployment logs dep_123\n  hearth deployment logs dep_123 --lines 20 --instance sbx_456"
    )]
    Logs {
        id: String,
        #[arg(long, default_value_t = 200)]
        lines: u32,
        #[arg(long)]
        instance: Option<String>,
    },
    /// Run this many instances (new ones healthy before they serve).
    #[command(after_help = "Examples:\n  hearth deployment scale dep_123 3")]
    Scale { id: String, replicas: u32 },
    /// Show the start command's environment, or change it (KEY=VALUE sets,
    /// --unset KEY removes); `redeploy` applies it to running instances.
    #[command(
        after_help = "Examples:\n  hearth deployment env dep_123\n  hearth deployment env dep_123 MODE=prod --unset DEBUG"
    )]
    Env {
        id: String,
        set: Vec<String>,
        #[arg(long)]
        unset: Vec<String>,
    },
    /// Custom domains: add, list, verify (its TXT record), remove.
    #[command(
        subcommand,
        after_help = "Examples:\n  hearth deployment domain add dep_123 app.example.com\n  hearth deployment domain verify dep_123 dom_456"
    )]
    Domain(DomainCommand),
    /// Fresh instances of the active version, without downtime.
    #[command(after_help = "Examples:\n  hearth deployment redeploy dep_123")]
    Redeploy { id: String },
    /// Stop serving (versions are kept; redeploy serves again).
    #[command(after_help = "Examples:\n  hearth deployment stop dep_123")]
    Stop { id: String },
    /// Stop and delete a deployment.
    #[command(after_help = "Examples:\n  hearth deployment rm dep_123")]
    Rm { id: String },
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Add a domain; prints the TXT record that verifies it. With --cert
    /// and --key (PEM files), that certificate is served for it.
    #[command(
        after_help = "Examples:\n  hearth deployment domain add dep_123 app.example.com\n  hearth deployment domain add dep_123 app.example.com --cert fullchain.pem --key privkey.pem"
    )]
    Add {
        id: String,
        domain: String,
        #[arg(long, requires = "key")]
        cert: Option<std::path::PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<std::path::PathBuf>,
    },
    /// A deployment's domains and their state.
    #[command(after_help = "Examples:\n  hearth deployment domain ls dep_123")]
    Ls { id: String },
    /// Look up the domain's TXT record; served once verified.
    #[command(after_help = "Examples:\n  hearth deployment domain verify dep_123 dom_456")]
    Verify { id: String, domain_id: String },
    /// Remove a domain.
    #[command(after_help = "Examples:\n  hearth deployment domain rm dep_123 dom_456")]
    Rm { id: String, domain_id: String },
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
        let optional = [
            ("build_command", args.build.map(Value::from)),
            ("output_path", args.output_path.map(Value::from)),
            ("replicas", args.replicas.map(Value::from)),
            ("domain", args.domain.map(Value::from)),
            ("custom_domain", args.custom_domain.map(Value::from)),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                body[k] = v;
            }
        }
        if args.no_wait {
            body["wait"] = json!(false);
        }
        match (args.name, args.to) {
            (_, Some(dep)) => body["deployment_id"] = json!(dep),
            (Some(name), None) => body["name"] = json!(name),
            (None, None) => anyhow::bail!("name a new deployment (--name) or one to update (--to)"),
        }
        let steps = match body.get("build_command") {
            Some(_) => "snapshot, build, start, health check",
            None => "snapshot, start, health check",
        };
        eprintln!("publishing {} ({steps})...", args.sandbox);
        let v = api
            .post(&format!("/sandboxes/{}/deploy", args.sandbox), body)
            .await?;
        let d = &v["data"];
        if args.client.json {
            println!("{d}");
        } else if args.no_wait {
            println!("{}", d["deployment"]["public_url"].as_str().unwrap_or(""));
            eprintln!(
                "version {} ({}) is building; `hearth deployment versions {}` shows how it goes",
                d["version"]["version_number"],
                d["version"]["id"].as_str().unwrap_or(""),
                d["deployment"]["id"].as_str().unwrap_or("")
            );
        } else if d["promoted"] == true {
            println!("{}", d["deployment"]["public_url"].as_str().unwrap_or(""));
            eprintln!(
                "version {} of {} serving",
                d["version"]["version_number"],
                d["deployment"]["id"].as_str().unwrap_or("")
            );
        } else {
            if let Some(log) = d["version"]["build_log"].as_str() {
                eprint!("{log}");
            }
            anyhow::bail!(
                "version {} failed: {}; the deployment serves what it did",
                d["version"]["version_number"],
                d["version"]["error"].as_str().unwrap_or("not promoted")
            );
        }
        if let Some(dom) = d["custom_domain"].as_object() {
            print_challenge(dom);
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
            DeploymentCommand::Logs {
                id,
                lines,
                instance,
            } => {
                let path = match instance {
                    Some(i) => {
                        format!("/deployments/{id}/runtime-instances/{i}/logs?lines={lines}")
                    }
                    None => format!("/deployments/{id}/logs?lines={lines}"),
                };
                let v = api.get(&path).await?;
                if json_out {
                    println!("{}", v["data"]);
                } else {
                    for (stream, text) in [
                        ("stdout", &v["data"]["stdout"]),
                        ("stderr", &v["data"]["stderr"]),
                    ] {
                        let text = text.as_str().unwrap_or("");
                        if stream == "stdout" {
                            println!("{text}");
                        } else if !text.is_empty() {
                            eprintln!("{text}");
                        }
                    }
                }
            }
            DeploymentCommand::Scale { id, replicas } => {
                eprintln!("scaling {id} to {replicas} (new instances are health-checked first)...");
                let v = api
                    .patch(
                        &format!("/deployments/{id}"),
                        json!({ "replicas": replicas }),
                    )
                    .await?;
                println!(
                    "{} instances serve {id}",
                    v["data"]["instance_ids"].as_array().map_or(0, Vec::len)
                );
            }
            DeploymentCommand::Env { id, set, unset } => {
                let path = format!("/deployments/{id}/env");
                let mut env = api.get(&path).await?["data"]["env"].clone();
                if !set.is_empty() || !unset.is_empty() {
                    let map = env
                        .as_object_mut()
                        .ok_or_else(|| anyhow::anyhow!("no env in the answer"))?;
                    for kv in set {
                        let (k, v) = kv
                            .split_once('=')
                            .ok_or_else(|| anyhow::anyhow!("{kv:?}: give KEY=VALUE"))?;
                        map.insert(k.to_string(), json!(v));
                    }
                    for k in unset {
                        map.remove(&k);
                    }
                    env = api.put(&path, json!({ "env": env })).await?["data"]["env"].clone();
                    eprintln!("saved; `hearth deployment redeploy {id}` applies it to the running instances");
                }
                if json_out {
                    println!("{env}");
                } else {
                    for (k, v) in env.as_object().into_iter().flatten() {
                        println!("{k}={}", v.as_str().unwrap_or(""));
                    }
                }
            }
            DeploymentCommand::Domain(cmd) => domain(&api, json_out, cmd).await?,
            DeploymentCommand::Redeploy { id } => {
                eprintln!("starting fresh instances of {id} (health check first)...");
                let v = api
                    .post(&format!("/deployments/{id}/redeploy"), json!({}))
                    .await?;
                if v["data"]["promoted"] != true {
                    anyhow::bail!(
                        "the new instances did not become healthy; the old ones serve on"
                    );
                }
                println!(
                    "{}",
                    v["data"]["deployment"]["public_url"].as_str().unwrap_or("")
                );
            }
            DeploymentCommand::Stop { id } => {
                api.post(&format!("/deployments/{id}/stop"), json!({}))
                    .await?;
            }
            DeploymentCommand::Rm { id } => {
                api.delete(&format!("/deployments/{id}")).await?;
            }
        }
        Ok(0)
    })
}

async fn domain(api: &Api, json_out: bool, cmd: DomainCommand) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match cmd {
        DomainCommand::Add {
            id,
            domain,
            cert,
            key,
        } => {
            let mut body = json!({ "domain": domain });
            if let (Some(c), Some(k)) = (cert, key) {
                let read = |p: &std::path::Path| {
                    std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))
                };
                body["certificate_pem"] = json!(read(&c)?);
                body["private_key_pem"] = json!(read(&k)?);
            }
            let v = api
                .post(&format!("/deployments/{id}/domains"), body)
                .await?;
            if json_out {
                println!("{}", v["data"]);
            } else if let Some(d) = v["data"].as_object() {
                print_challenge(d);
            }
        }
        DomainCommand::Ls { id } => {
            let v = api.get(&format!("/deployments/{id}/domains")).await?;
            rows(
                json_out,
                &v["data"],
                &["id", "domain", "state", "has_certificate"],
            );
        }
        DomainCommand::Verify { id, domain_id } => {
            let v = api
                .post(
                    &format!("/deployments/{id}/domains/{domain_id}/verify"),
                    json!({}),
                )
                .await?;
            println!("{} verified", v["data"]["domain"].as_str().unwrap_or(""));
        }
        DomainCommand::Rm { id, domain_id } => {
            api.delete(&format!("/deployments/{id}/domains/{domain_id}"))
                .await?;
        }
    }
    Ok(())
}

/// How to verify a domain just added.
fn print_challenge(d: &serde_json::Map<String, Value>) {
    let v = &d["verification"];
    eprintln!(
        "{} ({}): create a TXT record {} holding {:?}, then `hearth deployment domain verify {} {}`",
        d["domain"].as_str().unwrap_or(""),
        d["state"].as_str().unwrap_or(""),
        v["name"].as_str().unwrap_or(""),
        v["value"].as_str().unwrap_or(""),
        d["deployment_id"].as_str().unwrap_or(""),
        d["id"].as_str().unwrap_or(""),
    );
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
