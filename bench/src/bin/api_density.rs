//! Density: how much host memory an idle sandbox costs, and whether many
//! of them slow creates and execs down. A real `hearth serve` (the release
//! binary, in its own process) with real QEMU VMs, one fresh server per
//! template:
//!
//! - warm-up: creates until one is cloned from the template snapshot
//!   (`boot_path: "snapshot"`; the first create of a shape boots cold and
//!   the server writes the snapshot in the background, or has written it
//!   at start), all destroyed, no snapshot being written any more; then
//!   `sync`, `drop_caches` (root) and `MemAvailable` as the baseline;
//! - N idle 1 GiB sandboxes created one at a time (each create timed on
//!   the client); at N = 1, 10 and N, after 10 s idle: every sandbox's QEMU
//!   process's PSS and RSS (`/proc/<pid>/smaps_rollup`, the pid from
//!   `sandboxes/<id>/vmm.pid`), host memory per sandbox (the drop of
//!   `MemAvailable` from the baseline over the count: QEMU, the server's
//!   share, the kernel's), and create p50/p99 of the creates since the
//!   previous checkpoint;
//! - after the last checkpoint: 20 execs of `true` on the first sandbox and
//!   on the N-th, interleaved (one untimed exec of each first); p50 of each.
//!
//! Bounds (issue): mean PSS per idle 1 GiB sandbox at N = 50 <= 32 MiB for
//! `minimal`, <= 48 MiB for `default`; exec p50 on the N-th sandbox within
//! 1.5x of the first. Each is printed as a ratio (target <= 1).
//!
//! Usage: `api-density [N] [TEMPLATE...]` (default 50, `minimal default`).
//! Needs the release `hearth` beside it (`bench/run density` builds both;
//! `HEARTH_BIN` measures another build; VM images from `HEARTH_DATA_DIR`,
//! default `./data`). Run it under `flock /tmp/hearth-vm.lock` beside other
//! VM tests.

#[path = "../child.rs"]
#[allow(dead_code)] // each bench uses part of it
mod child;
#[path = "../common.rs"]
#[allow(dead_code)] // each bench uses part of it
mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use child::{kib_field, Api, Server};
use serde_json::json;

const DEFAULT_N: usize = 50;
const DEFAULT_TEMPLATES: [&str; 2] = ["minimal", "default"];
/// Memory of every sandbox, MiB.
const MEMORY_MB: u64 = 1024;
/// Idle time before each checkpoint's measurement.
const SETTLE: Duration = Duration::from_secs(10);
const EXEC_ROUNDS: usize = 20;
/// Exec p50 on the N-th sandbox over the first's.
const EXEC_BOUND: f64 = 1.5;
/// Cold boots under TCG and the template snapshot behind them are slow.
const WARM_DEADLINE: Duration = Duration::from_secs(1200);
const MIB: f64 = (1u64 << 20) as f64;

/// Mean PSS bound of an idle 1 GiB sandbox at N = 50, MiB.
fn pss_bound(template: &str) -> Option<f64> {
    match template {
        "minimal" => Some(32.0),
        "default" => Some(48.0),
        _ => None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = match args.next() {
        Some(a) => a.parse().with_context(|| format!("N {a:?}"))?,
        None => DEFAULT_N,
    };
    ensure!(n > 0, "N must be positive");
    let mut templates: Vec<String> = args.collect();
    if templates.is_empty() {
        templates = DEFAULT_TEMPLATES.map(String::from).to_vec();
    }
    let mut summary = Vec::new();
    for template in &templates {
        println!("== {template}: {n} idle sandboxes of {MEMORY_MB} MiB");
        let tmp = tempfile::Builder::new()
            .prefix("hearth-density-")
            .tempdir()
            .context("temp dir")?;
        let server = Server::start(tmp.path(), &config(n), "density")?;
        let report = on_fresh_server(&server, template, n).await;
        if report.is_err() {
            server.print_log_tail(40);
        }
        // The server (and anything it left) goes before its directory.
        drop(server);
        drop(tmp);
        let report = report.with_context(|| format!("template {template}"))?;
        report.print();
        summary.push(report);
    }
    if summary.len() > 1 {
        println!();
        println!("== summary");
        for r in &summary {
            println!("{}:", r.template);
            r.print_bounds();
        }
    }
    Ok(())
}

/// What one template measured.
struct Report {
    template: String,
    n: usize,
    points: Vec<Point>,
    /// Exec p50 on the first and the N-th sandbox, ms.
    exec_first: f64,
    exec_last: f64,
}

/// One checkpoint: `n` sandboxes running.
struct Point {
    n: usize,
    /// Means over the sandboxes' QEMU processes, bytes.
    pss: f64,
    rss: f64,
    /// Host memory per sandbox (MemAvailable's drop over `n`), bytes.
    host: f64,
    /// The creates since the previous checkpoint: their numbers and times.
    from: usize,
    create_p50: Duration,
    create_p99: Duration,
}

impl Point {
    /// The creates this point's create times cover: `3` or `2-10`.
    fn range(&self) -> String {
        if self.from == self.n {
            format!("{}", self.n)
        } else {
            format!("{}-{}", self.from, self.n)
        }
    }
}

impl Report {
    fn print(&self) {
        println!();
        println!(
            "| N | mean PSS | mean RSS | host / sandbox | creates | create p50 | create p99 |"
        );
        println!("|---|---|---|---|---|---|---|");
        for p in &self.points {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                p.n,
                mib(p.pss),
                mib(p.rss),
                mib(p.host),
                p.range(),
                ms(p.create_p50),
                ms(p.create_p99),
            );
        }
        if self.points.iter().any(|p| p.host < 0.0) {
            println!(
                "(host / sandbox below 0: MemAvailable rose after the baseline, so another \
                 process freed memory meanwhile; that column needs a quiet host)"
            );
        }
        self.print_bounds();
    }

    fn print_bounds(&self) {
        let last = self.points.last().expect("N > 0 has a checkpoint");
        match pss_bound(&self.template) {
            Some(bound) => println!(
                "mean PSS at N={}: {:.1} MiB, bound {bound:.0} MiB: ratio {:.2}",
                last.n,
                last.pss / MIB,
                last.pss / MIB / bound
            ),
            None => println!(
                "mean PSS at N={}: {:.1} MiB (no bound for this template)",
                last.n,
                last.pss / MIB
            ),
        }
        if self.n == 1 {
            println!(
                "exec p50: {:.1} ms on the only sandbox (N=1: nothing to compare)",
                self.exec_first
            );
        } else {
            println!(
                "exec p50: first {:.1} ms, {} {:.1} ms: ratio {:.2} (bound {EXEC_BOUND})",
                self.exec_first,
                ordinal(self.n),
                self.exec_last,
                self.exec_last / self.exec_first
            );
        }
    }
}

/// Warm-up, the N sandboxes and their measurements on `srv`; every
/// sandbox is destroyed either way.
async fn on_fresh_server(srv: &Server, template: &str, n: usize) -> anyhow::Result<Report> {
    let api = srv.api().await?;
    let mut live = Vec::new();
    let report = measure(srv, &api, template, n, &mut live).await;
    let started = Instant::now();
    let count = live.len();
    let mut destroyed = Ok(());
    while let Some(id) = live.pop() {
        if let Err(e) = api.destroy(&id).await {
            eprintln!("destroy {id}: {e:#}");
            destroyed = Err(e);
        }
    }
    if count > 0 {
        println!(
            "  {count} sandbox(es) destroyed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let report = report?;
    destroyed?;
    Ok(report)
}

async fn measure(
    srv: &Server,
    api: &Api,
    template: &str,
    n: usize,
    live: &mut Vec<String>,
) -> anyhow::Result<Report> {
    warm_up(srv, api, template, live).await?;
    let baseline = mem_available()?;
    println!(
        "  baseline: MemAvailable {:.0} MiB, server RSS {:.0} MiB",
        baseline as f64 / MIB,
        srv.rss()? as f64 / MIB
    );

    let mut checkpoints = vec![1, 10, n];
    checkpoints.retain(|&c| c <= n);
    checkpoints.dedup();
    let mut points = Vec::new();
    let mut creates = Vec::new();
    let mut cold = 0;
    for i in 1..=n {
        let started = Instant::now();
        let created = api
            .create(template)
            .await
            .with_context(|| format!("create {i} of {n}"))?;
        creates.push(started.elapsed());
        live.push(created.id);
        if created.boot_path != "snapshot" {
            cold += 1;
            println!(
                "  create {i} booted {} ({} ms), not from the snapshot",
                created.boot_path, created.boot_ms
            );
        }
        if !checkpoints.contains(&i) {
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        api.check_running(live).await?;
        let from = points.last().map_or(1, |p: &Point| p.n + 1);
        let mut since = creates[from - 1..].to_vec();
        points.push(checkpoint(srv, live, baseline, from, &mut since)?);
    }
    if cold > 0 {
        println!("  {cold} of {n} creates did not clone the template snapshot");
    }

    let (first, last) = (&live[0], &live[n - 1]);
    let (exec_first, exec_last) = exec_p50s(api, first, last).await?;
    Ok(Report {
        template: template.to_string(),
        n,
        points,
        exec_first,
        exec_last,
    })
}

/// Measures the `live` sandboxes: PSS and RSS of their QEMU processes,
/// host memory per sandbox against `baseline`; `creates` are the create
/// times since the previous checkpoint (sandboxes `from` to now).
fn checkpoint(
    srv: &Server,
    live: &[String],
    baseline: u64,
    from: usize,
    creates: &mut [Duration],
) -> anyhow::Result<Point> {
    let n = live.len();
    let mut pss = Vec::with_capacity(n);
    let mut rss = Vec::with_capacity(n);
    for id in live {
        let pid = srv.vmm_pid(id)?;
        let m = smaps_rollup(pid).with_context(|| format!("QEMU of sandbox {id} (pid {pid})"))?;
        pss.push(m.pss);
        rss.push(m.rss);
    }
    let available = mem_available()?;
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64;
    let point = Point {
        n,
        pss: mean(&pss),
        rss: mean(&rss),
        host: (baseline as f64 - available as f64) / n as f64,
        from,
        create_p50: common::quantile(creates, 0.5),
        create_p99: common::quantile(creates, 0.99),
    };
    let (lo, hi) = (
        *pss.iter().min().expect("n > 0"),
        *pss.iter().max().expect("n > 0"),
    );
    println!(
        "  N={n}: mean PSS {} ({} to {}), mean RSS {}, host {} per sandbox, \
         server RSS {}; creates {}: p50 {} p99 {}",
        mib(point.pss),
        mib(lo as f64),
        mib(hi as f64),
        mib(point.rss),
        mib(point.host),
        mib(srv.rss()? as f64),
        point.range(),
        ms(point.create_p50),
        ms(point.create_p99),
    );
    Ok(point)
}

/// Creates until one clones the template snapshot (waiting for the server
/// to write it after the first cold boot, unless it was there already),
/// destroys them all, waits for the build VMs to go, and drops the host's
/// caches: the baseline's conditions.
async fn warm_up(
    srv: &Server,
    api: &Api,
    template: &str,
    live: &mut Vec<String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WARM_DEADLINE;
    for attempt in 1.. {
        let started = Instant::now();
        let created = api
            .create(template)
            .await
            .with_context(|| format!("warm-up create {attempt}"))?;
        live.push(created.id.clone());
        println!(
            "  warm-up create {attempt}: {} boot, boot_ms {}, {} (client)",
            created.boot_path,
            created.boot_ms,
            ms(started.elapsed())
        );
        api.destroy(&created.id).await?;
        live.pop();
        if created.boot_path == "snapshot" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no create cloned the {template} snapshot within {WARM_DEADLINE:?}"
        );
        api.wait_warm_shape(template, deadline).await?;
    }
    // Snapshots the server writes meanwhile (of other templates, at
    // start) must not run beside the measurement: wait until none is
    // being written and every build VM (which exits with its snapshot)
    // has gone with its directory.
    let waited = Instant::now();
    while srv.build_vms() > 0 || api.snapshots_building().await? > 0 {
        ensure!(
            Instant::now() < deadline,
            "a template snapshot is still being written"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if waited.elapsed() > Duration::from_secs(1) {
        println!(
            "  waited {:.1} s for template snapshots being written",
            waited.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop_caches();
    Ok(())
}

/// `EXEC_ROUNDS` execs of `true` on each sandbox, interleaved (after one
/// untimed exec of each); the p50 of each, ms.
async fn exec_p50s(api: &Api, first: &str, last: &str) -> anyhow::Result<(f64, f64)> {
    let a = api.exec_true(first).await?;
    let b = api.exec_true(last).await?;
    println!(
        "  first exec after idle (untimed): first sandbox {}, last {}",
        ms(a),
        ms(b)
    );
    let (mut on_first, mut on_last) = (Vec::new(), Vec::new());
    for _ in 0..EXEC_ROUNDS {
        on_first.push(api.exec_true(first).await?);
        on_last.push(api.exec_true(last).await?);
    }
    let p50 = |v: &mut Vec<Duration>| common::quantile(v, 0.5).as_secs_f64() * 1000.0;
    Ok((p50(&mut on_first), p50(&mut on_last)))
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / MIB)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Proportional and resident set size, bytes.
struct Mem {
    pss: u64,
    rss: u64,
}

fn smaps_rollup(pid: i32) -> anyhow::Result<Mem> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    Ok(Mem {
        pss: kib_field(&text, "Pss:").with_context(|| path.clone())?,
        rss: kib_field(&text, "Rss:").with_context(|| path.clone())?,
    })
}

fn mem_available() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    kib_field(&text, "MemAvailable:").context("/proc/meminfo")
}

/// `sync`, then drops the page cache, dentries and inodes (root only; a
/// note otherwise, and the baseline keeps whatever is cached).
fn drop_caches() {
    // SAFETY: sync has no arguments and cannot fail.
    unsafe { libc::sync() };
    if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
        println!("  (caches not dropped before the baseline: {e})");
    }
}

/// The server's config: warm boot on (the server's default), no API rate
/// limit, no preview proxy, and quotas with room for `n` sandboxes and the
/// warm-up.
fn config(n: usize) -> String {
    let room = n as u64 + 10;
    format!(
        "api_rps = 0\n\
         [preview]\nenabled = false\n\
         [quotas]\nsandboxes = {room}\nvcpus = {}\nmemory_mb = {}\ndisk_mb = {}\n",
        room * 16,
        room * MEMORY_MB * 2,
        room * 64 * 1024,
    )
}

/// A created sandbox.
struct Created {
    id: String,
    boot_path: String,
    boot_ms: u64,
}

impl Api {
    async fn create(&self, template: &str) -> anyhow::Result<Created> {
        let v = self
            .call(
                "POST",
                "/sandboxes",
                Some(json!({
                    "template_id": template,
                    "memory_mb": MEMORY_MB,
                    "timeout_sec": 3600,
                })),
            )
            .await?;
        let d = &v["data"];
        ensure!(d["state"] == "running", "created: {v}");
        Ok(Created {
            id: d["id"]
                .as_str()
                .with_context(|| format!("no id: {v}"))?
                .into(),
            boot_path: d["boot_path"].as_str().unwrap_or("?").into(),
            boot_ms: d["boot_ms"].as_u64().unwrap_or(0),
        })
    }

    /// Fails unless every sandbox of `ids` still runs, with the state and
    /// `last_error` (the end of its console, when its VM died) of the
    /// first that does not.
    async fn check_running(&self, ids: &[String]) -> anyhow::Result<()> {
        for (i, id) in ids.iter().enumerate() {
            let v = self.call("GET", &format!("/sandboxes/{id}"), None).await?;
            let d = &v["data"];
            ensure!(
                d["state"] == "running",
                "sandbox {} of {} ({id}) is {} after {SETTLE:?} idle: {}",
                i + 1,
                ids.len(),
                d["state"],
                d["metadata"]["last_error"]
            );
        }
        Ok(())
    }

    /// Template snapshots being written, of every template
    /// (`GET /sandbox-templates`; a server that does not say has none).
    async fn snapshots_building(&self) -> anyhow::Result<usize> {
        let v = self.call("GET", "/sandbox-templates", None).await?;
        let templates = v["data"].as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(templates
            .iter()
            .flat_map(|t| t["snapshots"].as_array().into_iter().flatten())
            .filter(|s| s["state"] == "building")
            .count())
    }

    /// One exec of `true`, timed on the client.
    async fn exec_true(&self, id: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let v = self
            .call(
                "POST",
                &format!("/sandboxes/{id}/exec"),
                Some(json!({ "command": "true" })),
            )
            .await?;
        let took = started.elapsed();
        ensure!(v["data"]["exit_code"] == 0, "exec of true in {id}: {v}");
        Ok(took)
    }

    /// Waits until built-in `template` has a snapshot of the benchmark's
    /// shape (`<c>c-1024m-<d>d` in `warm_shapes`); a server that does not
    /// say gets 5 s, and the next create tells.
    async fn wait_warm_shape(&self, template: &str, deadline: Instant) -> anyhow::Result<()> {
        let shape = format!("-{MEMORY_MB}m-");
        loop {
            let v = self
                .call("GET", &format!("/sandbox-templates/{template}"), None)
                .await;
            let Some(shapes) = v
                .as_ref()
                .ok()
                .and_then(|v| v["data"]["warm_shapes"].as_array())
            else {
                tokio::time::sleep(Duration::from_secs(5)).await;
                return Ok(());
            };
            if shapes
                .iter()
                .any(|s| s.as_str().is_some_and(|s| s.contains(&shape)))
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the {template} snapshot never appeared: {shapes:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
