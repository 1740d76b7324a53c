//! Deployments against a cold create of the same app, in one run, on an
//! in-process server with real `minimal` VMs (busybox httpd serving a
//! page):
//!
//! - floor: create a sandbox (cold boot), write the page, start httpd,
//!   open a public preview, first 200 through the proxy;
//! - publish: `POST /sandboxes/{id}/deploy` of such a sandbox, to the
//!   first 200 on the deployment's URL (snapshot, instance restored from
//!   it, start command, health check, switch);
//! - promotion: a new version while the URL serves the old one, to the
//!   first answer with the new page.
//!
//! Each is the median of ROUNDS; ratios are against the floor (target:
//! publish <= 1, a publish costs no more than starting the app afresh).
//!
//! Usage: `api-deploy [ROUNDS]` (default 3).

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../server.rs"]
#[allow(dead_code)]
mod server;

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use server::BenchServer;

const PORT: u16 = 8080;
const START: &str = "busybox httpd -f -p 8080 -h /workspace/www";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    server::init_tracing();
    let rounds: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().with_context(|| format!("ROUNDS {a:?}"))?,
        None => 3,
    };
    anyhow::ensure!(rounds > 0, "ROUNDS must be positive");
    let srv = &BenchServer::start_with_core().await?;
    let (mut cold, mut publish, mut promote) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Floor: the same app, started from nothing.
        let t = Instant::now();
        let id = srv.create_sandbox().await?;
        write_page(srv, &id, &format!("cold-{round}")).await?;
        call(
            srv,
            "POST",
            &format!("/sandboxes/{id}/processes"),
            json!({"command": START}),
        )
        .await?;
        let p = call(
            srv,
            "POST",
            &format!("/sandboxes/{id}/previews"),
            json!({"port": PORT, "visibility": "public"}),
        )
        .await?;
        let url = p["data"]["url"]
            .as_str()
            .context("preview url")?
            .to_string();
        first_page(srv, &url, &format!("cold-{round}")).await?;
        cold.push(t.elapsed());

        // Publish the app (page v1; httpd is started by the deployment).
        write_page(srv, &id, &format!("v1-{round}")).await?;
        let t = Instant::now();
        let d = call(
            srv,
            "POST",
            &format!("/sandboxes/{id}/deploy"),
            json!({"name": format!("bench-{round}"), "port": PORT, "start_command": START}),
        )
        .await?;
        let dep = d["data"]["deployment"]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let app = d["data"]["deployment"]["public_url"]
            .as_str()
            .context("url")?
            .to_string();
        first_page(srv, &app, &format!("v1-{round}")).await?;
        publish.push(t.elapsed());

        // Promote v2 while v1 serves.
        write_page(srv, &id, &format!("v2-{round}")).await?;
        let t = Instant::now();
        call(
            srv,
            "POST",
            &format!("/sandboxes/{id}/deploy"),
            json!({"deployment_id": dep, "port": PORT, "start_command": START}),
        )
        .await?;
        first_page(srv, &app, &format!("v2-{round}")).await?;
        promote.push(t.elapsed());

        call(srv, "DELETE", &format!("/deployments/{dep}"), json!({})).await?;
        srv.destroy(&id).await?;
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (c, p, q) = (
        median(&mut cold),
        median(&mut publish),
        median(&mut promote),
    );
    println!("app: busybox httpd in a minimal sandbox, {rounds} rounds, medians");
    println!(
        "  cold create -> first 200 (floor)   {:>6} ms",
        c.as_millis()
    );
    println!(
        "  publish -> first 200 on its URL    {:>6} ms   ratio {:.2} (target <= 1)",
        p.as_millis(),
        p.as_secs_f64() / c.as_secs_f64()
    );
    println!(
        "  new version -> serving             {:>6} ms   ratio {:.2}",
        q.as_millis(),
        q.as_secs_f64() / c.as_secs_f64()
    );
    Ok(())
}

async fn call(srv: &BenchServer, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let m = reqwest::Method::from_bytes(method.as_bytes())?;
    let resp = srv
        .http
        .request(m, srv.api(path))
        .bearer_auth(&srv.admin_key)
        .json(&body)
        .timeout(Duration::from_secs(300))
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(
        status.is_success(),
        "{method} {path} answered {status}: {v}"
    );
    Ok(v)
}

async fn write_page(srv: &BenchServer, id: &str, page: &str) -> anyhow::Result<()> {
    let cmd = format!("mkdir -p /workspace/www && echo {page} > /workspace/www/index.html");
    let v = call(
        srv,
        "POST",
        &format!("/sandboxes/{id}/exec"),
        json!({"command": cmd}),
    )
    .await?;
    anyhow::ensure!(v["data"]["exit_code"] == 0, "write page: {v}");
    Ok(())
}

/// Polls `url` through the proxy until it answers `page`.
async fn first_page(srv: &BenchServer, url: &str, page: &str) -> anyhow::Result<()> {
    let host = url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .context("host")?;
    let c = reqwest::Client::builder()
        .resolve(host, srv.preview_addr.context("proxy address")?)
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = c.get(format!("{url}/")).send().await {
            if r.status() == 200 && r.text().await.is_ok_and(|t| t.trim() == page) {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{url} never served {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
