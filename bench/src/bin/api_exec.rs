//! exec of `true` through the REST API (`POST /api/v1/sandboxes/{id}/exec`
//! on an in-process server) vs through the agent client directly, on the
//! same VM, in one run. Target: p50 ratio <= 1.3.
//!
//! The direct side uses the server's own agent client of the sandbox (the
//! very connection the exec handler uses): QEMU's agent chardev accepts one
//! connection at a time and the server holds it, so a second client on the
//! sandbox's `agent.sock` would never be answered. The ratio is therefore
//! exactly the API's cost: HTTP/1.1, auth, JSON, events, activity.
//!
//! Usage: `api-exec [ROUNDS]` (default 300).

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../server.rs"]
#[allow(dead_code)] // each API bench uses part of it
mod server;

use std::time::{Duration, Instant};

use anyhow::Context;
use hearth_agent_protocol::ExecRequest;
use serde_json::json;

use server::BenchServer;

const DEFAULT_ROUNDS: usize = 300;
const WARMUP: usize = 30;
/// A call that takes longer than this is a hang, not a sample.
const CALL_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    server::init_tracing();
    let rounds = match std::env::args().nth(1) {
        Some(a) => a.parse().with_context(|| format!("ROUNDS {a:?}"))?,
        None => DEFAULT_ROUNDS,
    };
    anyhow::ensure!(rounds > 0, "ROUNDS must be positive");
    let srv = &BenchServer::start_with_core().await?;
    let t = Instant::now();
    let (rest, direct) = srv
        .with_sandbox(|id| async move {
            eprintln!(
                "sandbox {id} running after {:.1} s",
                t.elapsed().as_secs_f64()
            );
            measure(srv, &id, rounds).await
        })
        .await?;
    report(rounds, rest, direct);
    Ok(())
}

/// Interleaved rounds of REST exec and direct exec; the samples of each.
async fn measure(
    srv: &BenchServer,
    id: &str,
    rounds: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let url = srv.api(&format!("/sandboxes/{id}/exec"));
    let body = json!({ "command": "true" });
    let agent = srv.agent(id)?;
    // What the server sends for that body (its default timeout and output
    // cap), so both sides ask the guest for the same work.
    let req = ExecRequest {
        command: "true".into(),
        timeout_ms: Some(60_000),
        max_output_bytes: Some(16 << 20),
        ..Default::default()
    };

    let mut rest = Vec::with_capacity(rounds);
    let mut direct = Vec::with_capacity(rounds);
    for i in 0..WARMUP + rounds {
        // Interleaved, so drift on the machine hits both sides alike.
        let t = Instant::now();
        let resp = tokio::time::timeout(
            CALL_DEADLINE,
            srv.http
                .post(&url)
                .bearer_auth(&srv.admin_key)
                .json(&body)
                .send(),
        )
        .await
        .context("REST exec hung")?
        .context("REST exec")?;
        let status = resp.status();
        let answer: serde_json::Value = resp.json().await.context("REST exec answer")?;
        let r = t.elapsed();
        anyhow::ensure!(status.is_success(), "REST exec answered {status}: {answer}");
        anyhow::ensure!(
            answer["data"]["exit_code"] == 0,
            "REST exec of true answered {answer}"
        );

        let t = Instant::now();
        let a = tokio::time::timeout(CALL_DEADLINE, agent.exec(&req))
            .await
            .context("direct exec hung")?
            .context("direct exec")?;
        let d = t.elapsed();
        anyhow::ensure!(
            a.exit_code == 0,
            "direct exec of true answered {}",
            a.exit_code
        );

        if i >= WARMUP {
            rest.push(r);
            direct.push(d);
        }
    }
    Ok((rest, direct))
}

fn report(rounds: usize, mut rest: Vec<Duration>, mut direct: Vec<Duration>) {
    let p = |v: &mut Vec<Duration>, q| common::quantile(v, q).as_secs_f64() * 1e6;
    let (d50, d99) = (p(&mut direct, 0.5), p(&mut direct, 0.99));
    let (r50, r99) = (p(&mut rest, 0.5), p(&mut rest, 0.99));
    println!("exec `true` in a minimal sandbox, {rounds} runs each, interleaved");
    println!("  agent client   p50 {d50:8.0} us   p99 {d99:8.0} us");
    println!("  REST API       p50 {r50:8.0} us   p99 {r99:8.0} us");
    println!(
        "  ratio p50 {:.2} (target <= 1.3)   ratio p99 {:.2}",
        r50 / d50,
        r99 / d99
    );
}
