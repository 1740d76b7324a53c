//! `hearth sandbox ...`: drive a running server's REST API. The server is
//! `--url` / `HEARTH_BASE_URL` (default http://127.0.0.1:7070); the key is
//! `--api-key` / `HEARTH_API_KEY`, else `./data/admin.key`. Tables for
//! people, `--json` for scripts; `exec` streams and exits with the
//! command's exit code.

use std::io::Write;

use anyhow::{bail, Context};
use clap::{Args as ClapArgs, Subcommand};
use serde_json::{json, Value};

use crate::api::{Api, ClientArgs, Events};

#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Examples:\n  hearth sandbox create --template minimal --memory-mb 256\n  hearth sandbox exec sbx_123 -- python3 -c 'print(42)'\n  hearth sandbox ls --json | jq '.[].id'\n  hearth sandbox cp ./app.py sbx_123:/workspace/app.py\n  hearth sandbox rm sbx_123"
)]
pub struct Args {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: SandboxCommand,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox and wait until it runs.
    #[command(
        after_help = "Examples:\n  hearth sandbox create\n  hearth sandbox create --template minimal --memory-mb 256 --disk-mb 1024\n  hearth sandbox create --template web --timeout-sec 3600 --name review-42\n  ID=$(hearth sandbox create --json | jq -r .id)"
    )]
    Create {
        #[arg(long, default_value = "default")]
        template: String,
        #[arg(long)]
        cpu_count: Option<u32>,
        #[arg(long)]
        memory_mb: Option<u32>,
        #[arg(long)]
        disk_mb: Option<u32>,
        #[arg(long)]
        timeout_sec: Option<u32>,
        #[arg(long)]
        name: Option<String>,
    },
    /// List sandboxes.
    #[command(
        after_help = "Examples:\n  hearth sandbox ls\n  hearth sandbox ls --state paused\n  hearth sandbox ls --json | jq -r '.[].id'"
    )]
    Ls {
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one sandbox.
    #[command(
        after_help = "Examples:\n  hearth sandbox get sbx_123\n  hearth sandbox get sbx_123 --json | jq .state"
    )]
    Get { id: String },
    /// Run a command, streaming its output; exits with its exit code.
    #[command(
        after_help = "Examples:\n  hearth sandbox exec sbx_123 -- uname -a\n  hearth sandbox exec sbx_123 -- python3 -c 'print(6*7)'\n  hearth sandbox exec sbx_123 -- sh -c 'cd /workspace && make test' || echo failed with $?"
    )]
    Exec {
        id: String,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// An interactive shell in the sandbox (a terminal in raw mode,
    /// resized with the window); with piped input, the shell runs it as
    /// a script without a terminal, as ssh does, and exits with its code.
    #[command(
        after_help = "Examples:\n  hearth sandbox shell sbx_123\n  hearth sandbox shell sbx_123 --shell /bin/sh\n  printf 'ls /\\nexit 3\\n' | hearth sandbox shell sbx_123; echo $?"
    )]
    Shell {
        id: String,
        /// The shell to run (default: the sandbox's login shell).
        #[arg(long)]
        shell: Option<String>,
    },
    /// Copy a file in (`LOCAL ID:/path`) or out (`ID:/path LOCAL`).
    #[command(
        after_help = "Examples:\n  hearth sandbox cp ./app.py sbx_123:/workspace/app.py\n  hearth sandbox cp sbx_123:/workspace/out.csv ./out.csv"
    )]
    Cp { from: String, to: String },
    /// Destroy a sandbox.
    #[command(
        after_help = "Examples:\n  hearth sandbox rm sbx_123\n  hearth sandbox ls --json | jq -r '.[].id' | xargs -n1 hearth sandbox rm"
    )]
    Rm { id: String },
    #[command(
        after_help = "Examples:\n  hearth sandbox pause sbx_123     # memory and disk to data/paused/, QEMU stops\n  hearth sandbox resume sbx_123"
    )]
    /// Pause: memory and disk to disk, the VM stops; resume restores it.
    Pause { id: String },
    #[command(after_help = "Examples:\n  hearth sandbox resume sbx_123")]
    /// Resume a paused sandbox.
    Resume { id: String },
    /// Snapshot a running sandbox.
    #[command(
        after_help = "Examples:\n  hearth sandbox snapshot sbx_123\n  hearth sandbox snapshot sbx_123 --json | jq -r .id"
    )]
    Snapshot { id: String },
    /// A new sandbox from a snapshot of this one (taken now unless given).
    #[command(
        after_help = "Examples:\n  hearth sandbox fork sbx_123\n  hearth sandbox fork sbx_123 --snapshot snap_456"
    )]
    Fork {
        id: String,
        #[arg(long)]
        snapshot: Option<String>,
    },
}

fn print_table(rows: &[Value]) {
    print!("{}", table(rows));
}

/// The sandbox list as aligned columns. Numbers are rendered to text
/// first: a JSON value ignores a format's width.
fn table(rows: &[Value]) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut out = format!(
        "{:<22} {:<12} {:<10} {:>4} {:>7}  NAME\n",
        "ID", "STATE", "TEMPLATE", "CPU", "MEM_MB"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<22} {:<12} {:<10} {:>4} {:>7}  {}\n",
            text(&r["id"]),
            text(&r["state"]),
            text(&r["template_id"]),
            text(&r["cpu_count"]),
            text(&r["memory_mb"]),
            text(&r["name"])
        ));
    }
    out
}

fn show(json_out: bool, v: &Value) {
    if json_out {
        println!("{v}");
    } else {
        print_table(std::slice::from_ref(v));
    }
}

/// Runs the command; `Ok(code)` is the process exit status.
pub fn run(args: Args) -> anyhow::Result<u8> {
    crate::api::block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<u8> {
    let api = Api::new(&args.client)?;
    let j = args.client.json;
    match args.command {
        SandboxCommand::Create {
            template,
            cpu_count,
            memory_mb,
            disk_mb,
            timeout_sec,
            name,
        } => {
            let mut body = json!({ "template_id": template });
            for (k, v) in [
                ("cpu_count", cpu_count),
                ("memory_mb", memory_mb),
                ("disk_size_mb", disk_mb),
                ("timeout_sec", timeout_sec),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let v = api.post("/sandboxes", body).await?;
            show(j, &v["data"]);
        }
        SandboxCommand::Ls { state } => {
            let path = match state {
                Some(s) => format!("/sandboxes?page_size=100&state={s}"),
                None => "/sandboxes?page_size=100".into(),
            };
            let v = api.get(&path).await?;
            let rows = v["data"].as_array().cloned().unwrap_or_default();
            if j {
                println!("{}", Value::Array(rows));
            } else {
                print_table(&rows);
            }
        }
        SandboxCommand::Get { id } => show(j, &api.get(&format!("/sandboxes/{id}")).await?["data"]),
        SandboxCommand::Rm { id } => {
            let v = api.delete(&format!("/sandboxes/{id}")).await?;
            show(j, &v["data"]);
        }
        SandboxCommand::Pause { id } => show(
            j,
            &api.post(&format!("/sandboxes/{id}/pause"), json!({}))
                .await?["data"],
        ),
        SandboxCommand::Resume { id } => show(
            j,
            &api.post(&format!("/sandboxes/{id}/resume"), json!({}))
                .await?["data"],
        ),
        SandboxCommand::Snapshot { id } => {
            let v = api
                .post(&format!("/sandboxes/{id}/snapshots"), json!({}))
                .await?;
            if j {
                println!("{}", v["data"]);
            } else {
                println!(
                    "{} {} {} bytes",
                    v["data"]["id"].as_str().unwrap_or(""),
                    v["data"]["status"].as_str().unwrap_or(""),
                    v["data"]["size_bytes"]
                );
            }
        }
        SandboxCommand::Fork { id, snapshot } => {
            let body = match snapshot {
                Some(s) => json!({ "snapshot_id": s }),
                None => json!({}),
            };
            show(
                j,
                &api.post(&format!("/sandboxes/{id}/fork"), body).await?["data"],
            );
        }
        SandboxCommand::Exec { id, command } => return exec(&api, &id, &command, j).await,
        SandboxCommand::Shell { id, shell } => {
            return crate::commands::shell::run(&api, &id, shell.as_deref()).await
        }
        SandboxCommand::Cp { from, to } => cp(&api, &from, &to).await?,
    }
    Ok(0)
}

/// `ID:/path` split, if `s` is one.
fn remote(s: &str) -> Option<(&str, &str)> {
    let (id, path) = s.split_once(':')?;
    (id.starts_with("sbx_") && path.starts_with('/')).then_some((id, path))
}

async fn cp(api: &Api, from: &str, to: &str) -> anyhow::Result<()> {
    match (remote(from), remote(to)) {
        (None, Some((id, path))) => {
            let data = tokio::fs::read(from)
                .await
                .with_context(|| format!("read {from}"))?;
            api.send(
                api.http
                    .put(api.url(&format!("/sandboxes/{id}/fs/raw")))
                    .query(&[("path", path)])
                    .body(data),
            )
            .await?;
        }
        (Some((id, path)), None) => {
            let resp = api
                .response(
                    api.http
                        .get(api.url(&format!("/sandboxes/{id}/fs/download")))
                        .query(&[("path", path)]),
                )
                .await?;
            let bytes = resp.bytes().await.context("download")?;
            tokio::fs::write(to, &bytes)
                .await
                .with_context(|| format!("write {to}"))?;
        }
        _ => bail!("one side of cp is a sandbox path (sbx_...:/path), the other a local file"),
    }
    Ok(())
}

/// Streams `command`'s output; the command's exit code.
async fn exec(api: &Api, id: &str, command: &[String], json_out: bool) -> anyhow::Result<u8> {
    let cmd = command
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut events = api
        .events(
            api.http
                .post(api.url(&format!("/sandboxes/{id}/exec/stream")))
                .json(&json!({ "command": cmd, "timeout": 86_400 })),
        )
        .await?;
    print_output(&mut events, json_out).await
}

/// `a` as one word of a `/bin/sh` command line (quoted only when needed).
pub(crate) fn shell_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Copies a process's output events (`exec/stream`, a process's
/// `stream`) to stdout and stderr, or prints each as a JSON line; the
/// process's exit status: its code, or 128 + the signal that ended it.
pub(crate) async fn print_output(events: &mut Events, json_out: bool) -> anyhow::Result<u8> {
    let mut code = None;
    while let Some((kind, v)) = events.next().await? {
        if json_out {
            println!("{v}");
        }
        match kind.as_str() {
            "stdout" if !json_out => {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(v["data"].as_str().unwrap_or("").as_bytes());
                let _ = o.flush();
            }
            "stderr" if !json_out => {
                let mut e = std::io::stderr().lock();
                let _ = e.write_all(v["data"].as_str().unwrap_or("").as_bytes());
                let _ = e.flush();
            }
            "exit" => {
                code = Some(exit_status(&v));
                break;
            }
            _ => {}
        }
    }
    code.context("the output stream ended without an exit code")
}

/// The status a local shell would report for an `exit` event: the exit
/// code, 128 + the signal for a killed process, 1 when neither is known.
fn exit_status(exit: &Value) -> u8 {
    match (exit["exit_code"].as_i64(), exit["signal"].as_i64()) {
        (Some(code), _) if code >= 0 => u8::try_from(code.min(255)).unwrap_or(1),
        (_, Some(sig)) if (1..128).contains(&sig) => 128 + sig as u8,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_killed_process_is_not_a_success() {
        assert_eq!(exit_status(&json!({"exit_code": 0, "signal": null})), 0);
        assert_eq!(exit_status(&json!({"exit_code": 5, "signal": null})), 5);
        assert_eq!(exit_status(&json!({"exit_code": -1, "signal": 9})), 137);
        assert_eq!(exit_status(&json!({"exit_code": -1, "signal": 15})), 143);
        assert_eq!(exit_status(&json!({"exit_code": -1, "signal": null})), 1);
        assert_eq!(exit_status(&json!({})), 1);
    }

    #[test]
    fn words_are_quoted_only_when_the_shell_would_split_them() {
        assert_eq!(shell_quote("/bin/sh"), "/bin/sh");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn the_list_lines_up_under_its_headers() {
        let rows = [
            json!({"id": "sbx_0123456789abcdef", "state": "running", "template_id": "minimal",
                   "cpu_count": 1, "memory_mb": 1024, "name": null}),
            json!({"id": "sbx_fedcba9876543210", "state": "paused", "template_id": "default",
                   "cpu_count": 8, "memory_mb": 256, "name": "web"}),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        // Every column ends where its header ends.
        let end = |line: &str, word: &str| line.find(word).map(|i| i + word.len());
        let cpu = end(lines[0], "CPU").expect("CPU");
        let mem = end(lines[0], "MEM_MB").expect("MEM_MB");
        assert_eq!(end(lines[1], " 1 "), Some(cpu + 1), "{t}");
        assert_eq!(end(lines[1], "1024"), Some(mem), "{t}");
        assert_eq!(end(lines[2], " 8 "), Some(cpu + 1), "{t}");
        assert_eq!(end(lines[2], " 256"), Some(mem), "{t}");
        assert!(lines[2].ends_with("  web"), "{t}");
        assert!(
            lines[1].ends_with("  "),
            "no `null` for a missing name: {t}"
        );
    }
}
