//! Create to first exec answered, through the REST API: from a template
//! snapshot (warm: the fast-clone form) vs a cold boot of the same image,
//! in one run. Target: p50 ratio <= 0.05.
//!
//! Two in-process servers over the same image cache: one with warm boot
//! off (every create boots cold: the floor), one with it on, whose first
//! create builds the template snapshot in the background; the warm rounds
//! start once it is ready. Each round: POST /sandboxes, POST .../exec
//! `true`, then DELETE (not timed).
//!
//! A third server keeps a warm pool of one pre-cloned, warmed-up VM per
//! shape (`warm_pool_size = 1`): its creates skip the clone too.
//!
//! Usage: `api-create [WARM_ROUNDS] [COLD_ROUNDS]` (default 10 and 3).

#[path = "../server.rs"]
#[allow(dead_code)] // each API bench uses part of it
mod server;

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use server::BenchServer;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One create + first exec; returns (wall ms, boot_path, boot_ms) and the id.
async fn create_and_exec(s: &BenchServer) -> anyhow::Result<(f64, String, u64, String)> {
    let t = Instant::now();
    let resp = s
        .http
        .post(s.api("/sandboxes"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"template_id": "minimal", "memory_mb": 256, "disk_size_mb": 512, "timeout_sec": 600}))
        .timeout(Duration::from_secs(600))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    anyhow::ensure!(status == 201, "create answered {status}: {body}");
    let id = body["data"]["id"].as_str().context("id")?.to_string();
    let resp = s
        .http
        .post(s.api(&format!("/sandboxes/{id}/exec")))
        .bearer_auth(&s.admin_key)
        .json(&json!({"command": "true"}))
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "exec answered {}", resp.status());
    let wall = ms(t.elapsed());
    let path = body["data"]["boot_path"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let boot_ms = body["data"]["boot_ms"].as_u64().unwrap_or(0);
    Ok((wall, path, boot_ms, id))
}

async fn wait_warm(s: &BenchServer) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let v: Value = s
            .http
            .get(s.api("/sandbox-templates/minimal"))
            .bearer_auth(&s.admin_key)
            .send()
            .await?
            .json()
            .await?;
        if v["data"]["warm_shapes"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "template snapshot never appeared: {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    server::init_tracing();
    let mut args = std::env::args().skip(1);
    let warm_rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let cold_rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    anyhow::ensure!(
        warm_rounds > 0 && cold_rounds > 0,
        "rounds must be positive"
    );

    let cold_server = BenchServer::start_opts(false).await?;
    let mut cold = Vec::new();
    for _ in 0..cold_rounds {
        let (wall, path, _, id) = create_and_exec(&cold_server).await?;
        anyhow::ensure!(path == "cold", "floor booted {path}");
        cold_server.destroy(&id).await?;
        cold.push(wall);
    }

    let warm_server = BenchServer::start_opts(true).await?;
    let (_, path, _, first) = create_and_exec(&warm_server).await?;
    anyhow::ensure!(
        path == "cold",
        "first create of a shape boots cold, got {path}"
    );
    warm_server.destroy(&first).await?;
    wait_warm(&warm_server).await?;
    let mut warm = Vec::new();
    let mut boots = Vec::new();
    for _ in 0..warm_rounds {
        let (wall, path, boot_ms, id) = create_and_exec(&warm_server).await?;
        anyhow::ensure!(path == "snapshot", "warm create booted {path}");
        warm_server.destroy(&id).await?;
        warm.push(wall);
        boots.push(boot_ms as f64);
    }
    drop(warm_server);

    // Fork of a running 1 GiB sandbox (snapshot taken on the fly, then a
    // new VM restored from it); the source keeps running.
    let fork = fork_1g(&cold_server).await?;

    // With a warm pool of one: creates take a VM cloned and warmed up ahead.
    let pool_server = BenchServer::start_pool(true, 1).await?;
    let (_, _, _, first) = create_and_exec(&pool_server).await?;
    pool_server.destroy(&first).await?;
    wait_warm(&pool_server).await?;
    let mut pooled = Vec::new();
    let mut pooled_boots = Vec::new();
    for _ in 0..warm_rounds {
        // Not timed: the pool refills (a clone and its first exec).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (wall, path, boot_ms, id) = create_and_exec(&pool_server).await?;
        anyhow::ensure!(path == "snapshot", "pooled create booted {path}");
        pool_server.destroy(&id).await?;
        pooled.push(wall);
        pooled_boots.push(boot_ms as f64);
    }

    let (c, w, p) = (median(cold), median(warm.clone()), median(pooled.clone()));
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!("create -> first exec answered, through the API (cold p50 {c:.0} ms):");
    println!(
        "  clone of the template snapshot: p50 {w:.0} ms (max {:.0}; boot_ms p50 {:.0}); ratio {:.3} (target <= 0.05)",
        max(&warm),
        median(boots),
        w / c
    );
    println!(
        "  from a warm pool of 1:          p50 {p:.0} ms (max {:.0}; boot_ms p50 {:.0}); ratio {:.3} (target <= 0.05)",
        max(&pooled),
        median(pooled_boots),
        p / c
    );
    println!(
        "fork of a running 1 GiB sandbox: {:.0} ms wall; snapshot {} MiB on disk, the fork's own disk {} MiB on disk",
        fork.on_the_fly_ms,
        fork.snap_bytes >> 20,
        fork.disk_bytes >> 20
    );
    println!(
        "fork of that snapshot -> first exec: restored whole {:.0} ms; from its fast-clone form p50 {:.0} ms (ratio {:.2}; the form takes {} MiB more on disk)",
        fork.full_exec_ms,
        fork.fast_exec_ms,
        fork.fast_exec_ms / fork.full_exec_ms,
        fork.fast_bytes >> 20
    );
    Ok(())
}

/// Blocks a file really occupies.
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

async fn fork_1g(s: &BenchServer) -> anyhow::Result<Fork> {
    let post = |path: String, body: Value| {
        s.http
            .post(s.api(&path))
            .bearer_auth(&s.admin_key)
            .json(&body)
            .timeout(Duration::from_secs(600))
            .send()
    };
    let v: Value = post(
        "/sandboxes".into(),
        json!({"template_id": "minimal", "memory_mb": 1024, "disk_size_mb": 1024, "timeout_sec": 600}),
    )
    .await?
    .json()
    .await?;
    let id = v["data"]["id"].as_str().context("id")?.to_string();
    post(
        format!("/sandboxes/{id}/exec"),
        json!({"command": "dd if=/dev/urandom of=/workspace/blob bs=1M count=16 2>/dev/null"}),
    )
    .await?;
    let t = Instant::now();
    let resp = post(format!("/sandboxes/{id}/fork"), json!({})).await?;
    let wall = ms(t.elapsed());
    let status = resp.status();
    let f: Value = resp.json().await?;
    anyhow::ensure!(status == 201, "fork answered {status}: {f}");
    let fork = f["data"]["id"].as_str().context("fork id")?.to_string();
    let snap = f["data"]["metadata"]["snapshot_id"]
        .as_str()
        .context("snapshot id")?
        .to_string();
    let snap_dir = s.data_dir().join("snapshots").join(&snap);
    let snap_bytes: u64 = std::fs::read_dir(&snap_dir)?
        .flatten()
        .map(|e| allocated(&e.path()))
        .sum();
    let disk = allocated(&s.data_dir().join("sandboxes").join(&fork).join("disk.ext4"));
    s.destroy(&fork).await?;

    // Forks of that snapshot by id: the first restores it whole and then
    // writes its fast-clone form; later ones clone that form.
    let fork_exec = |label: &'static str| {
        let post = &post;
        let snap = snap.clone();
        let id = id.clone();
        async move {
            let t = Instant::now();
            let resp = post(
                format!("/sandboxes/{id}/fork"),
                json!({"snapshot_id": snap}),
            )
            .await?;
            let status = resp.status();
            let f: Value = resp.json().await?;
            anyhow::ensure!(status == 201, "{label} fork answered {status}: {f}");
            let fork = f["data"]["id"].as_str().context("fork id")?.to_string();
            let r = post(
                format!("/sandboxes/{fork}/exec"),
                json!({"command": "true"}),
            )
            .await?;
            anyhow::ensure!(
                r.status() == 200,
                "{label} fork exec answered {}",
                r.status()
            );
            Ok::<_, anyhow::Error>((ms(t.elapsed()), fork))
        }
    };
    let (full_ms, f1) = fork_exec("full").await?;
    s.destroy(&f1).await?;
    let fast = snap_dir.join("fast").join("manifest.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !fast.exists() {
        anyhow::ensure!(Instant::now() < deadline, "no fast-clone form of {snap}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let fast_bytes: u64 = std::fs::read_dir(snap_dir.join("fast"))?
        .flatten()
        .map(|e| allocated(&e.path()))
        .sum();
    let mut fast_ms = Vec::new();
    for _ in 0..3 {
        let (t, f) = fork_exec("fast").await?;
        s.destroy(&f).await?;
        fast_ms.push(t);
    }
    s.destroy(&id).await?;
    Ok(Fork {
        on_the_fly_ms: wall,
        snap_bytes,
        disk_bytes: disk,
        full_exec_ms: full_ms,
        fast_exec_ms: median(fast_ms),
        fast_bytes,
    })
}

struct Fork {
    on_the_fly_ms: f64,
    snap_bytes: u64,
    disk_bytes: u64,
    /// Fork by snapshot id, restored whole, to its first exec answered.
    full_exec_ms: f64,
    /// The same from the fast-clone form (p50 of 3).
    fast_exec_ms: f64,
    fast_bytes: u64,
}
