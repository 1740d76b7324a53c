//! `hearth template build|ls`: build a template (a sandbox image with
//! packages, files and a running server, snapshotted so sandboxes start
//! warm) and list them. A build streams its log as it runs and exits
//! non-zero when the build fails, with the server's reason.

use anyhow::{bail, Context};
use clap::{Args as ClapArgs, Subcommand};
use serde_json::{json, Value};

use crate::api::{Api, ClientArgs};

#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    hearth template build web --from default --run 'pip install flask' \\\n      \
    --start 'python3 -m http.server 8000' --ready 'curl -sf localhost:8000'\n  \
    hearth template build web -f spec.json       # a build_spec as in the API\n  \
    hearth template build web --run 'echo v2 > /version'   # web exists: its next version\n  \
    hearth template ls\n  \
    hearth sandbox create --template web")]
pub struct Args {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: TemplateCommand,
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Build a template (or the next version of an existing one), streaming
    /// the build log; exits 1 when the build fails.
    #[command(
        after_help = "Examples:\n  hearth template build web --from default --run 'pip install flask' --start 'python3 app.py' --ready 'curl -sf localhost:5000'\n  hearth template build web -f spec.json\n  hearth template build tools --from minimal --run 'echo hi > /workspace/hi' --memory-mb 256"
    )]
    Build {
        /// The template's name (letters, digits, `-`, `_`).
        name: String,
        /// A JSON file with the whole build_spec (the flags below add to it).
        #[arg(short, long)]
        file: Option<std::path::PathBuf>,
        #[command(flatten)]
        spec: SpecFlags,
        /// Start the build and return without following its log.
        #[arg(long)]
        no_wait: bool,
    },
    /// List the built-in and your templates.
    #[command(
        after_help = "Examples:\n  hearth template ls\n  hearth template ls --json | jq -r '.[].name'"
    )]
    Ls,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    crate::api::block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<u8> {
    let api = Api::new(&args.client)?;
    let json_out = args.client.json;
    match args.command {
        TemplateCommand::Ls => {
            let v = api.get("/sandbox-templates").await?;
            let rows = v["data"].as_array().cloned().unwrap_or_default();
            if json_out {
                println!("{}", Value::Array(rows));
            } else {
                print_table(&rows);
            }
            Ok(0)
        }
        TemplateCommand::Build {
            name,
            file,
            spec: flags,
            no_wait,
        } => {
            let mut spec = match file {
                Some(f) => {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("read {}", f.display()))?;
                    serde_json::from_str::<Value>(&text)
                        .with_context(|| format!("{} is not JSON", f.display()))?
                }
                None => json!({}),
            };
            if !spec.is_object() {
                bail!("a build spec is a JSON object");
            }
            flags.apply(&mut spec);
            let build = start_build(&api, &name, spec).await?;
            let build_id = build["id"].as_str().context("no build id")?.to_string();
            if json_out && no_wait {
                println!("{build}");
                return Ok(0);
            }
            eprintln!(
                "template {name}: build {build_id} (version {}) {}",
                build["version"],
                build["state"].as_str().unwrap_or("")
            );
            if no_wait {
                return Ok(0);
            }
            follow(&api, &name, &build_id, json_out).await
        }
    }
}

/// The build flags, added to (or replacing fields of) a spec file.
#[derive(Debug, ClapArgs)]
pub struct SpecFlags {
    /// The base: `default`, `minimal`, or one of your templates.
    #[arg(long)]
    from: Option<String>,
    /// apt packages to install (`default` base only); repeatable.
    #[arg(long = "package")]
    packages: Vec<String>,
    /// A shell command to run during the build; repeatable, in order.
    #[arg(long = "run")]
    runs: Vec<String>,
    /// Started after the steps and kept running in every sandbox.
    #[arg(long)]
    start: Option<String>,
    /// Polled until it exits 0 before the snapshot is taken.
    #[arg(long)]
    ready: Option<String>,
    /// vCPUs of the template's sandboxes.
    #[arg(long)]
    cpu_count: Option<u32>,
    /// Memory of the template's sandboxes, MiB.
    #[arg(long)]
    memory_mb: Option<u32>,
    /// Disk of the template's sandboxes, MiB.
    #[arg(long)]
    disk_mb: Option<u32>,
}

impl SpecFlags {
    fn apply(self, spec: &mut Value) {
        if let Some(from) = self.from {
            spec["from"] = json!(from);
        }
        if !self.packages.is_empty() {
            let mut all = spec["packages"].as_array().cloned().unwrap_or_default();
            all.extend(self.packages.into_iter().map(Value::from));
            spec["packages"] = Value::Array(all);
        }
        if !self.runs.is_empty() {
            let mut steps = spec["steps"].as_array().cloned().unwrap_or_default();
            steps.extend(self.runs.into_iter().map(|r| json!({ "run": r })));
            spec["steps"] = Value::Array(steps);
        }
        for (key, value) in [("start_cmd", self.start), ("ready_cmd", self.ready)] {
            if let Some(v) = value {
                spec[key] = json!(v);
            }
        }
        for (key, value) in [
            ("cpu_count", self.cpu_count),
            ("memory_mb", self.memory_mb),
            ("disk_size_mb", self.disk_mb),
        ] {
            if let Some(v) = value {
                spec[key] = json!(v);
            }
        }
    }
}

/// Creates the template, or builds the next version of an existing one of
/// that name; the build's view.
async fn start_build(api: &Api, name: &str, spec: Value) -> anyhow::Result<Value> {
    let existing = api
        .get("/sandbox-templates")
        .await?
        .get("data")
        .and_then(Value::as_array)
        .and_then(|all| {
            all.iter()
                .find(|t| t["name"] == name && t["built_in"] == false)
                .cloned()
        });
    match existing {
        Some(t) => {
            let id = t["id"].as_str().context("no template id")?;
            // No spec given: the same spec again (a fresh base, say).
            let body = if spec == json!({}) {
                json!({})
            } else {
                json!({ "build_spec": spec })
            };
            let v = api
                .post(&format!("/sandbox-templates/{id}/builds"), body)
                .await?;
            Ok(v["data"].clone())
        }
        None => {
            let v = api
                .post(
                    "/sandbox-templates",
                    json!({ "name": name, "build_spec": spec }),
                )
                .await?;
            Ok(v["data"]["build"].clone())
        }
    }
}

/// Streams the build log until the build ends; 0 when it is ready.
async fn follow(api: &Api, name: &str, build_id: &str, json_out: bool) -> anyhow::Result<u8> {
    let mut events = api
        .events(
            api.http
                .get(api.url(&format!("/sandbox-template-builds/{build_id}/logs/stream"))),
        )
        .await?;
    let mut end = Value::Null;
    while let Some((kind, v)) = events.next().await? {
        if json_out {
            println!("{}", json!({ "event": kind, "data": v }));
        }
        match kind.as_str() {
            "log" if !json_out => {
                let text = v["text"].as_str().unwrap_or("");
                match v["stream"].as_str() {
                    Some("stderr") => eprintln!("  {text}"),
                    _ => println!("  {text}"),
                }
            }
            "done" => {
                end = v;
                break;
            }
            _ => {}
        }
    }
    if end.is_null() {
        // The stream ended early (a restart): ask for the state.
        end = api
            .get(&format!("/sandbox-template-builds/{build_id}"))
            .await?["data"]
            .clone();
    }
    match end["state"].as_str() {
        Some("ready") => {
            eprintln!("template {name}: ready (hearth sandbox create --template {name})");
            Ok(0)
        }
        state => {
            eprintln!(
                "template {name}: build {build_id} {}: {}",
                state.unwrap_or("ended"),
                end["error"].as_str().unwrap_or("no reason given")
            );
            Ok(1)
        }
    }
}

fn print_table(rows: &[Value]) {
    println!(
        "{:<24} {:<20} {:<8} {:<12} {:>4} {:>7}",
        "ID", "NAME", "VERSION", "STATE", "CPU", "MEM_MB"
    );
    for r in rows {
        let built_in = r["built_in"] == true;
        let state = if built_in {
            if r["warm_shapes"].as_array().is_some_and(|w| !w.is_empty()) {
                "built-in, warm"
            } else {
                "built-in"
            }
        } else {
            r["state"].as_str().unwrap_or("")
        };
        let num = |v: &Value| {
            if v.is_null() {
                "-".to_string()
            } else {
                v.to_string()
            }
        };
        println!(
            "{:<24} {:<20} {:<8} {:<12} {:>4} {:>7}",
            r["id"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or(""),
            r["version"].as_str().unwrap_or("-"),
            state,
            num(&r["cpu_count"]),
            num(&r["memory_mb"]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_extend_a_spec_file() {
        let mut spec = json!({
            "from": "minimal",
            "steps": [{ "run": "echo one" }],
            "packages": ["git"],
            "memory_mb": 256
        });
        SpecFlags {
            from: Some("default".into()),
            packages: vec!["curl".into()],
            runs: vec!["echo two".into()],
            start: Some("srv".into()),
            ready: None,
            cpu_count: Some(2),
            memory_mb: None,
            disk_mb: Some(2048),
        }
        .apply(&mut spec);
        assert_eq!(
            spec,
            json!({
                "from": "default",
                "steps": [{ "run": "echo one" }, { "run": "echo two" }],
                "packages": ["git", "curl"],
                "start_cmd": "srv",
                "memory_mb": 256,
                "cpu_count": 2,
                "disk_size_mb": 2048
            })
        );
    }
}
