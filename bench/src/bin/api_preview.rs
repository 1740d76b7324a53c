//! The preview proxy vs the raw agent tunnel it is built on, in one run,
//! against one `busybox httpd` in one `minimal` sandbox:
//!
//! - throughput of 1 MiB responses: `GET /blob` through the proxy (HTTP/1.1
//!   from a keep-alive client, a private preview opened with the API key)
//!   vs the same request written by hand into a tunnel from the server's
//!   own agent client. Target: ratio >= 0.7.
//! - added latency of a small request (p50, p99): `GET /` the same two ways.
//!
//! Both sides open a fresh tunnel per request (busybox httpd closes every
//! connection), so the difference is the proxy's own cost: host routing,
//! the preview lookup, auth, HTTP parsing on both sides.
//!
//! Usage: `api-preview [ROUNDS]` (default 200 small requests, ROUNDS/10
//! blobs).

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../server.rs"]
#[allow(dead_code)]
mod server;

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use server::BenchServer;

const DEFAULT_ROUNDS: usize = 200;
const BLOB: usize = 1 << 20;
const PORT: u16 = 8080;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    server::init_tracing();
    let rounds: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().with_context(|| format!("ROUNDS {a:?}"))?,
        None => DEFAULT_ROUNDS,
    };
    anyhow::ensure!(rounds >= 10, "ROUNDS must be at least 10");
    let srv = &BenchServer::start_with_core().await?;
    srv.with_sandbox(|id| async move { run(srv, &id, rounds).await })
        .await
}

async fn api(srv: &BenchServer, path: &str, body: Value) -> anyhow::Result<Value> {
    let resp = srv
        .http
        .post(srv.api(path))
        .bearer_auth(&srv.admin_key)
        .json(&body)
        .timeout(Duration::from_secs(120))
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    anyhow::ensure!(status.is_success(), "{path} answered {status}: {v}");
    Ok(v)
}

/// A request written by hand into a fresh tunnel; the bytes of the answer.
async fn raw_get(agent: &hearth_agent_client::AgentClient, path: &str) -> anyhow::Result<usize> {
    let mut t = agent.tunnel(PORT).await?;
    t.write_all(format!("GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::with_capacity(BLOB + 4096);
    t.read_to_end(&mut buf).await?;
    anyhow::ensure!(
        buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200"),
        "raw tunnel answer: {:?}",
        String::from_utf8_lossy(&buf[..buf.len().min(80)])
    );
    Ok(buf.len())
}

async fn proxy_get(c: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<usize> {
    let r = c.get(url).bearer_auth(key).send().await?;
    anyhow::ensure!(r.status() == 200, "proxy answered {}", r.status());
    Ok(r.bytes().await?.len())
}

async fn run(srv: &BenchServer, id: &str, rounds: usize) -> anyhow::Result<()> {
    api(
        srv,
        &format!("/sandboxes/{id}/exec"),
        json!({"command": format!("mkdir -p /workspace/www && echo ok > /workspace/www/index.html && head -c {BLOB} /dev/urandom > /workspace/www/blob")}),
    )
    .await?;
    api(
        srv,
        &format!("/sandboxes/{id}/processes"),
        json!({"command": format!("busybox httpd -f -p {PORT} -h /workspace/www")}),
    )
    .await?;
    let p = api(
        srv,
        &format!("/sandboxes/{id}/previews"),
        json!({"port": PORT}),
    )
    .await?;
    let url = p["data"]["url"]
        .as_str()
        .context("preview url")?
        .to_string();
    let host = url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .context("host")?
        .to_string();
    let client = reqwest::Client::builder()
        .resolve(&host, srv.preview_addr.context("proxy address")?)
        .http1_only()
        .tcp_nodelay(true)
        .build()?;
    let agent = srv.agent(id)?;
    let key = srv.admin_key.clone();
    // Wait for httpd, then warm both paths up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = raw_get(&agent, "/").await {
        anyhow::ensure!(Instant::now() < deadline, "httpd never answered: {e:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..20 {
        raw_get(&agent, "/").await?;
        proxy_get(&client, &format!("{url}/"), &key).await?;
    }

    // Small requests, interleaved.
    let (mut raw, mut proxied) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        raw_get(&agent, "/").await?;
        raw.push(t.elapsed());
        let t = Instant::now();
        proxy_get(&client, &format!("{url}/"), &key).await?;
        proxied.push(t.elapsed());
    }
    // 1 MiB responses, interleaved.
    let blobs = (rounds / 10).max(5);
    let (mut raw_t, mut proxy_t) = (Duration::ZERO, Duration::ZERO);
    let (mut raw_b, mut proxy_b) = (0usize, 0usize);
    for _ in 0..blobs {
        let t = Instant::now();
        raw_b += raw_get(&agent, "/blob").await?;
        raw_t += t.elapsed();
        let t = Instant::now();
        proxy_b += proxy_get(&client, &format!("{url}/blob"), &key).await?;
        proxy_t += t.elapsed();
    }
    let mbps = |b: usize, t: Duration| b as f64 / t.as_secs_f64() / f64::from(1 << 20);
    let (r, p) = (mbps(raw_b, raw_t), mbps(proxy_b, proxy_t));
    let q = |v: &mut Vec<Duration>, x| common::quantile(v, x).as_secs_f64() * 1000.0;
    let (r50, r99, p50, p99) = (
        q(&mut raw, 0.5),
        q(&mut raw, 0.99),
        q(&mut proxied, 0.5),
        q(&mut proxied, 0.99),
    );
    println!("preview proxy vs the raw agent tunnel, busybox httpd in one sandbox:");
    println!(
        "  1 MiB responses ({blobs} each): proxy {p:.1} MiB/s vs raw tunnel {r:.1} MiB/s; ratio {:.2} (target >= 0.7)",
        p / r
    );
    println!(
        "  small request ({rounds} each): proxy p50 {p50:.2} ms, p99 {p99:.2} ms vs raw p50 {r50:.2} ms, p99 {r99:.2} ms; added p50 {:.2} ms, p99 {:.2} ms",
        p50 - r50,
        p99 - r99
    );
    Ok(())
}
