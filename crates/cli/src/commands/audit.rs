//! `hearth audit`: the tenant's audit log (who did what, when, how it
//! ended), oldest first, optionally one sandbox's or one type's.

use clap::Args as ClapArgs;
use serde_json::Value;

use crate::api::{Api, ClientArgs};

#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    hearth audit\n  \
    hearth audit --sandbox sbx_123\n  \
    hearth audit --type sandbox.exec --json")]
pub struct Args {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only entries about this sandbox.
    #[arg(long)]
    pub sandbox: Option<String>,
    /// Only entries of this type (sandbox.exec, secret.rotate, ...).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// At most this many entries (the newest are cut).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    crate::api::block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<u8> {
    let api = Api::new(&args.client)?;
    let mut query = vec![("limit", "1000".to_string())];
    if let Some(s) = &args.sandbox {
        query.push(("resource_type", "sandbox".into()));
        query.push(("resource_id", s.clone()));
    }
    if let Some(k) = &args.kind {
        query.push(("type", k.clone()));
    }
    let mut entries: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    while entries.len() < args.limit {
        let mut q = query.clone();
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        let v = api
            .send(api.http.get(api.url("/audit-log")).query(&q))
            .await?;
        entries.extend(v["data"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(c) => after = Some(c.to_string()),
            None => break,
        }
    }
    entries.truncate(args.limit);
    if args.client.json {
        println!("{}", Value::Array(entries));
        return Ok(0);
    }
    println!(
        "{:<24} {:<16} {:<8} {:<26} {:<22}  DETAIL",
        "AT", "TYPE", "OUTCOME", "ACTOR", "RESOURCE"
    );
    for e in &entries {
        let detail = e["details"]["command"]
            .as_str()
            .map(str::to_string)
            .or_else(|| e["error_code"].as_str().map(str::to_string))
            .unwrap_or_default();
        println!(
            "{:<24} {:<16} {:<8} {:<26} {:<22}  {}",
            e["at"].as_str().unwrap_or(""),
            e["type"].as_str().unwrap_or(""),
            e["outcome"].as_str().unwrap_or(""),
            format!(
                "{}:{}",
                e["actor_type"].as_str().unwrap_or(""),
                e["actor_id"].as_str().unwrap_or("")
            ),
            e["resource_id"].as_str().unwrap_or("-"),
            detail
        );
    }
    Ok(0)
}
