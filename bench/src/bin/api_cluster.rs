//! Two nodes on one store, in one process, real QEMU VMs:
//!
//! 1. exec of `true` on a sandbox node B runs, through node A's API
//!    (forwarded) vs through B's own, interleaved. Target: p50 ratio
//!    <= 1.2.
//! 2. What placing a create costs (`Core::place`: the store's placement
//!    lock, every node's load, the choice and its promise), against a
//!    floor of one plain read of the node list, in the same run.
//!
//! The store is a fresh schema of the PostgreSQL server that
//! `HEARTH_TEST_DATABASE_URL` names (`bench/run cluster` starts one), else
//! a shared SQLite file.
//!
//! Usage: `api-cluster [ROUNDS]` (default 300).

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../server.rs"]
#[allow(dead_code)] // each API bench uses part of it
mod server;

use std::time::{Duration, Instant};

use anyhow::Context;
use hearth_server::core::nodes::placement::{Need, Placement};
use serde_json::json;

use server::BenchServer;

const DEFAULT_ROUNDS: usize = 300;
const WARMUP: usize = 30;
const CALL_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    server::init_tracing();
    let rounds = match std::env::args().nth(1) {
        Some(a) => a.parse().with_context(|| format!("ROUNDS {a:?}"))?,
        None => DEFAULT_ROUNDS,
    };
    anyhow::ensure!(rounds > 0, "ROUNDS must be positive");
    let url = match std::env::var("HEARTH_TEST_DATABASE_URL") {
        Ok(_) => Some(hearth_test_support::postgres::schema_url().await?),
        Err(_) => None,
    };
    eprintln!(
        "store: {}",
        if url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let a = BenchServer::start_with_core_and(|c| {
        c.cluster.heartbeat_ms = 500;
        c.database_url = url;
    })
    .await?;
    let first = a.core()?.clone();
    let b = BenchServer::start_with_core_and(|c| {
        c.cluster.heartbeat_ms = 500;
        c.cluster.labels.insert("region".into(), "bench-b".into());
        c.secrets_key_file = Some(first.data_dir().join("secrets.key"));
        match &first.config.database_url {
            Some(u) => c.database_url = Some(u.clone()),
            None => c.database = Some(first.config.database_path()),
        }
    })
    .await?;
    // B's admin key is A's: keys live in the shared store.
    let key = a.admin_key.clone();
    let t = Instant::now();
    let id = a.create_sandbox_with(json!({"region": "bench-b"})).await?;
    anyhow::ensure!(
        b.core()?.handle(&id).is_some(),
        "the sandbox was not placed on B"
    );
    eprintln!(
        "sandbox {id} running on B after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let exec = measure_exec(&a, &b, &key, &id, rounds).await;
    let place = measure_placement(&first, rounds).await;
    let destroyed = a.destroy(&id).await;
    let (via_a, via_b) = exec?;
    let (placing, floor) = place?;
    destroyed?;
    report(rounds, via_a, via_b, placing, floor);
    Ok(())
}

async fn exec_once(srv: &BenchServer, key: &str, url: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let resp = tokio::time::timeout(
        CALL_DEADLINE,
        srv.http
            .post(url)
            .bearer_auth(key)
            .json(&json!({ "command": "true" }))
            .send(),
    )
    .await
    .context("exec hung")?
    .context("exec")?;
    let status = resp.status();
    let answer: serde_json::Value = resp.json().await.context("exec answer")?;
    let took = t.elapsed();
    anyhow::ensure!(
        status.is_success() && answer["data"]["exit_code"] == 0,
        "exec answered {status}: {answer}"
    );
    Ok(took)
}

/// Interleaved execs through A (forwarded to B) and through B.
async fn measure_exec(
    a: &BenchServer,
    b: &BenchServer,
    key: &str,
    id: &str,
    rounds: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let (url_a, url_b) = (
        a.api(&format!("/sandboxes/{id}/exec")),
        b.api(&format!("/sandboxes/{id}/exec")),
    );
    let (mut via_a, mut via_b) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + rounds {
        let ta = exec_once(a, key, &url_a).await?;
        let tb = exec_once(b, key, &url_b).await?;
        if i >= WARMUP {
            via_a.push(ta);
            via_b.push(tb);
        }
    }
    Ok((via_a, via_b))
}

/// `Core::place` for a small create, each promise released at once, vs a
/// plain read of the node list; interleaved.
async fn measure_placement(
    core: &std::sync::Arc<hearth_server::core::Core>,
    rounds: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let need = Need {
        vcpus: 1,
        memory_mb: 256,
        disk_mb: 512,
        region: None,
        template: None,
    };
    let (mut placing, mut floor) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + rounds {
        let t = Instant::now();
        let placed = core.place(need.clone()).await?;
        let p = t.elapsed();
        match placed {
            Placement::Here(Some(promise)) | Placement::Node(_, promise) => {
                core.release_placement(&promise).await
            }
            Placement::Here(None) => anyhow::bail!("no other node: nothing was placed"),
        }
        let t = Instant::now();
        core.nodes().await?;
        let f = t.elapsed();
        if i >= WARMUP {
            placing.push(p);
            floor.push(f);
        }
    }
    Ok((placing, floor))
}

fn report(
    rounds: usize,
    mut via_a: Vec<Duration>,
    mut via_b: Vec<Duration>,
    mut placing: Vec<Duration>,
    mut floor: Vec<Duration>,
) {
    let us = |v: &mut Vec<Duration>, q| common::quantile(v, q).as_secs_f64() * 1e6;
    let (b50, b99) = (us(&mut via_b, 0.5), us(&mut via_b, 0.99));
    let (a50, a99) = (us(&mut via_a, 0.5), us(&mut via_a, 0.99));
    println!("exec `true` on B's sandbox, {rounds} runs each, interleaved");
    println!("  through B (owner)       p50 {b50:8.0} us   p99 {b99:8.0} us");
    println!("  through A (forwarded)   p50 {a50:8.0} us   p99 {a99:8.0} us");
    println!(
        "  ratio p50 {:.2} (target <= 1.2)   ratio p99 {:.2}",
        a50 / b50,
        a99 / b99
    );
    let (p50, p99) = (us(&mut placing, 0.5), us(&mut placing, 0.99));
    let (f50, f99) = (us(&mut floor, 0.5), us(&mut floor, 0.99));
    println!("placing a create (2 nodes), {rounds} runs");
    println!("  placement               p50 {p50:8.0} us   p99 {p99:8.0} us");
    println!("  floor: read nodes+load  p50 {f50:8.0} us   p99 {f99:8.0} us");
    println!(
        "  ratio p50 {:.2}: placement adds {:.2} ms per create",
        p50 / f50,
        p50 / 1e3
    );
}
