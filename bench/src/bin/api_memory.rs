//! The server's memory under output floods: a real `hearth serve` (the
//! release binary, in its own process, so its RSS is its own) with real
//! QEMU VMs, driven through the REST API while one tenant
//!
//! - runs a unary exec that prints 64 MiB to stdout (the answer is capped
//!   at `exec_output_cap_bytes`, 16 MiB, and so must the server's copy be),
//! - downloads a 64 MiB guest file 20 times at once (`GET /fs/download`),
//! - reads a 32 MiB guest file as base64 JSON 8 times at once
//!   (`GET /files/read`),
//! - replays 4,000 events (each quoting a 100 KB command, cut to 4 KiB)
//!   on 20 event streams at once,
//! - builds a template whose step prints 100,000 lines, following its log.
//!
//! Each flood runs on a fresh server with one sandbox (what one flood
//! leaves in the allocator would hide the next one's growth). The floor is
//! that server's own RSS, idle with the sandbox running (and the flood's
//! input made), measured in the same run. Each flood prints RSS idle, at
//! its peak (`VmHWM`, reset through `/proc/<pid>/clear_refs` first, and
//! sampled every 20 ms as well) and after, and the peak's growth over the
//! floor as a ratio of the bound: growth < 256 MiB, ratio < 1.
//!
//! Usage: `api-memory` (needs the release `hearth` beside it: `bench/run
//! memory` builds both; `HEARTH_BIN` measures another build; VM images
//! from `HEARTH_DATA_DIR`, default `./data`).

#[path = "../child.rs"]
#[allow(dead_code)] // each bench uses part of it
mod child;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use child::{Api, Server};
use serde_json::{json, Value};

/// What one flood may add to the server's idle RSS.
const BOUND_MIB: f64 = 256.0;
const MIB: u64 = 1 << 20;

/// The floods, each measured on a server of its own.
#[derive(Debug, Clone, Copy)]
enum Flood {
    Exec,
    Downloads,
    JsonReads,
    EventReplay,
    BuildLog,
}

impl Flood {
    const ALL: [Flood; 5] = [
        Flood::Exec,
        Flood::Downloads,
        Flood::JsonReads,
        Flood::EventReplay,
        Flood::BuildLog,
    ];

    fn name(self) -> &'static str {
        match self {
            Flood::Exec => "unary exec printing 64 MiB",
            Flood::Downloads => "20 concurrent 64 MiB downloads",
            Flood::JsonReads => "8 concurrent 32 MiB JSON reads",
            Flood::EventReplay => "20 event streams replaying 4,000 events",
            Flood::BuildLog => "template build, 100k-line log",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for flood in Flood::ALL {
        println!("== {}", flood.name());
        let tmp = tempfile::Builder::new()
            .prefix("hearth-bench-mem-")
            .tempdir()
            .context("temp dir")?;
        let server = Server::start(tmp.path(), CONFIG, "memory")?;
        let row = on_fresh_server(&server, flood).await;
        if row.is_err() {
            eprintln!("server log: {}", server.log.display());
        }
        drop(server);
        rows.push(row?);
    }
    println!();
    println!("| flood | idle floor | peak | after | peak - idle | ratio to {BOUND_MIB} MiB |");
    println!("|---|---|---|---|---|---|");
    let mut worst: f64 = 0.0;
    for r in &rows {
        let growth = r.peak.saturating_sub(r.idle) as f64 / MIB as f64;
        let ratio = growth / BOUND_MIB;
        worst = worst.max(ratio);
        println!(
            "| {} | {} | {} | {} | {growth:.0} MiB | {ratio:.2} |",
            r.name,
            mib(r.idle),
            mib(r.peak),
            mib(r.after)
        );
    }
    println!("worst ratio {worst:.2} (target < 1)");
    ensure!(
        worst < 1.0,
        "a flood grew the server by more than {BOUND_MIB} MiB"
    );
    Ok(())
}

/// One sandbox on `srv`, what `flood` needs in it, the idle floor, then
/// the flood; the sandbox is destroyed either way.
async fn on_fresh_server(srv: &Server, flood: Flood) -> anyhow::Result<Row> {
    let api = srv.api().await?;
    let id = api.create_sandbox().await?;
    let row = async {
        prepare(&api, &id, flood).await?;
        // Let the server settle before the floor is taken.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = status_of(srv.pid())?.rss;
        println!("  idle: server RSS {} with one sandbox running", mib(idle));
        measure(srv, idle, flood.name(), run_flood(&api, &id, flood)).await
    }
    .await;
    let destroyed = api.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    let row = row?;
    destroyed?;
    Ok(row)
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / MIB as f64)
}

struct Row {
    name: &'static str,
    idle: u64,
    peak: u64,
    after: u64,
}

/// What a flood reads, made before the floor is measured (writing it is
/// the guest's work, and the server's part of it is not what is measured).
async fn prepare(api: &Api, id: &str, flood: Flood) -> anyhow::Result<()> {
    let make = match flood {
        Flood::Downloads => "head -c 67108864 /dev/zero | tr '\\0' b > /workspace/big",
        Flood::JsonReads => "head -c 33554432 /dev/zero | tr '\\0' c > /workspace/mid",
        Flood::EventReplay => {
            // 2,000 execs quoting 100 KB commands: 4,000 events of the
            // sandbox, each command cut to 4 KiB in its event.
            let command = format!("true {}", "x".repeat(100_000));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..4 {
                let (api, id, command) = (api.clone(), id.to_string(), command.clone());
                tasks.spawn(async move {
                    for _ in 0..500 {
                        api.exec(&id, &command).await?;
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            return Ok(());
        }
        Flood::Exec | Flood::BuildLog => return Ok(()),
    };
    let made = api.exec(id, make).await?;
    ensure!(made["exit_code"] == 0, "making the file failed: {made}");
    Ok(())
}

async fn run_flood(api: &Api, id: &str, flood: Flood) -> anyhow::Result<()> {
    match flood {
        Flood::Exec => {
            let v = api
                .exec(id, "head -c 67108864 /dev/zero | tr '\\0' a")
                .await?;
            let n = v["stdout"].as_str().map_or(0, str::len);
            ensure!(v["truncated"] == true, "not truncated: {n} bytes");
            println!("  exec answered {} of stdout, truncated", mib(n as u64));
        }
        Flood::Downloads => {
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..20 {
                let api = api.clone();
                let url = api.url(&format!("/sandboxes/{id}/fs/download?path=/workspace/big"));
                tasks.spawn(async move { api.drain(&url).await });
            }
            let mut total = 0;
            while let Some(r) = tasks.join_next().await {
                let n = r??;
                ensure!(n == 64 * MIB, "a download got {n} bytes");
                total += n;
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "  {} in {secs:.1} s ({:.0} MiB/s)",
                mib(total),
                total as f64 / MIB as f64 / secs
            );
        }
        Flood::JsonReads => {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let api = api.clone();
                let url = api.url(&format!("/sandboxes/{id}/files/read?path=/workspace/mid"));
                tasks.spawn(async move { api.drain(&url).await });
            }
            while let Some(r) = tasks.join_next().await {
                let n = r??;
                // base64 of 32 MiB, inside a small JSON object.
                ensure!(n > 32 * MIB * 4 / 3, "a JSON read got {n} bytes");
            }
        }
        Flood::EventReplay => {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..20 {
                let api = api.clone();
                let url = api.url(&format!("/sandboxes/{id}/events?types=sandbox.exec.*"));
                tasks.spawn(async move { api.count_frames(&url, 4000).await });
            }
            while let Some(r) = tasks.join_next().await {
                let n = r??;
                ensure!(n >= 4000, "a stream replayed {n} events");
            }
        }
        Flood::BuildLog => {
            let started = Instant::now();
            let (lines, state) = api.build_following("seq 1 100000").await?;
            ensure!(state == "ready", "the build ended {state}");
            println!(
                "  build ready in {:.1} s; its follower saw {lines} log lines",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Runs `flood`, sampling the server's RSS; its row.
async fn measure(
    srv: &Server,
    idle: u64,
    name: &'static str,
    flood: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Row> {
    reset_peak(srv.pid());
    let before = status_of(srv.pid())?.rss;
    let stop = Arc::new(AtomicBool::new(false));
    let sampled = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (stop, sampled, pid) = (stop.clone(), sampled.clone(), srv.pid());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = status_of(pid) {
                    sampled.fetch_max(s.rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let result = flood.await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    result.with_context(|| format!("flood {name:?}"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = status_of(srv.pid())?;
    let peak = s.hwm.max(sampled.load(Ordering::Relaxed));
    println!(
        "  RSS before {}, peak {}, after {}",
        mib(before),
        mib(peak),
        mib(s.rss)
    );
    Ok(Row {
        name,
        idle,
        peak,
        after: s.rss,
    })
}

/// Resident and peak resident memory, in bytes.
struct Status {
    rss: u64,
    hwm: u64,
}

fn status_of(pid: u32) -> anyhow::Result<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} in /proc/{pid}/status"))?;
        let kib: u64 = line.split_whitespace().nth(1).context("value")?.parse()?;
        Ok(kib * 1024)
    };
    Ok(Status {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// The server's config. No warm boot: its background template snapshot
/// would add a VM and the server's part of writing it to every
/// measurement.
const CONFIG: &str = "warm_boot = false\n[preview]\nenabled = false\n";

/// Resets `VmHWM` of `pid` to its current RSS (Linux's `clear_refs` 5);
/// the 20 ms sampling still catches the peak where that is not allowed.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

impl Api {
    async fn create_sandbox(&self) -> anyhow::Result<String> {
        let v = self
            .call(
                "POST",
                "/sandboxes",
                Some(json!({
                    "template_id": "minimal",
                    "memory_mb": 512,
                    "disk_size_mb": 1024,
                    "timeout_sec": 3600,
                })),
            )
            .await?;
        ensure!(v["data"]["state"] == "running", "created: {v}");
        Ok(v["data"]["id"].as_str().context("id")?.to_string())
    }

    /// A unary exec's answer (`data`).
    async fn exec(&self, id: &str, command: &str) -> anyhow::Result<Value> {
        let v = self
            .call(
                "POST",
                &format!("/sandboxes/{id}/exec"),
                Some(json!({ "command": command, "timeout": 600 })),
            )
            .await?;
        Ok(v["data"].clone())
    }

    /// GETs `url` and counts its body's bytes as they come.
    async fn drain(&self, url: &str) -> anyhow::Result<u64> {
        let mut resp = self
            .http
            .get(url)
            .bearer_auth(&self.key)
            .timeout(Duration::from_secs(900))
            .send()
            .await?;
        ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
        let mut n = 0;
        while let Some(chunk) = resp.chunk().await? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    /// Reads the SSE stream at `url` until `want` frames came; how many.
    async fn count_frames(&self, url: &str, want: u64) -> anyhow::Result<u64> {
        let mut resp = self
            .http
            .get(url)
            .bearer_auth(&self.key)
            .timeout(Duration::from_secs(900))
            .send()
            .await?;
        ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
        let (mut n, mut pending) = (0, String::new());
        while let Some(chunk) = resp.chunk().await? {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let frame: String = pending.drain(..end + 2).collect();
                if frame.starts_with("event: ") {
                    n += 1;
                }
            }
            if n >= want {
                break;
            }
        }
        Ok(n)
    }

    /// Builds a template whose one step runs `run`, following its log
    /// stream to the end: the log lines seen and the build's final state.
    async fn build_following(&self, run: &str) -> anyhow::Result<(u64, String)> {
        let v = self
            .call(
                "POST",
                "/sandbox-templates",
                Some(json!({
                    "name": "loud",
                    "build_spec": {
                        "from": "minimal", "memory_mb": 256, "disk_size_mb": 512,
                        "steps": [{"run": run}],
                    },
                })),
            )
            .await?;
        let build = v["data"]["build"]["id"].as_str().context("build id")?;
        let mut resp = self
            .http
            .get(self.url(&format!("/sandbox-template-builds/{build}/logs/stream")))
            .bearer_auth(&self.key)
            .timeout(Duration::from_secs(900))
            .send()
            .await?;
        ensure!(resp.status().is_success(), "log stream: {}", resp.status());
        let (mut lines, mut state) = (0, String::new());
        let mut pending = String::new();
        while let Some(chunk) = resp.chunk().await? {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let frame: String = pending.drain(..end + 2).collect();
                if frame.starts_with("event: log") {
                    lines += 1;
                } else if frame.starts_with("event: done") {
                    let data = frame
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .context("done data")?;
                    let d: Value = serde_json::from_str(data)?;
                    state = d["state"].as_str().unwrap_or_default().to_string();
                }
            }
        }
        Ok((lines, state))
    }
}
