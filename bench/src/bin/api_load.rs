//! `GET /api/v1/sandboxes/{id}` under load from `wrk` (64 connections, 2
//! threads, loopback) vs `GET /healthz` of the same in-process server (no
//! key, no store), in one run. Target: >= 10,000 req/s with p99 < 10 ms.
//! A running sandbox is answered from memory; `GET /api/v1/sandboxes` (the
//! list, one page) reads the store, and is measured too.
//!
//! Usage: `api-load [SECONDS]` (default 10). Needs `wrk` on PATH (Debian
//! package `wrk`), or `WRK=/path/to/wrk`.

#[path = "../server.rs"]
#[allow(dead_code)] // each API bench uses part of it
mod server;

use std::time::{Duration, Instant};

use anyhow::Context;

use server::BenchServer;

const DEFAULT_SECONDS: u32 = 10;
const WARMUP_SECONDS: u32 = 2;
const CONNECTIONS: u32 = 64;
const THREADS: u32 = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    server::init_tracing();
    let seconds = match std::env::args().nth(1) {
        Some(a) => a.parse().with_context(|| format!("SECONDS {a:?}"))?,
        None => DEFAULT_SECONDS,
    };
    anyhow::ensure!(seconds > 0, "SECONDS must be positive");
    let wrk = std::env::var("WRK").unwrap_or_else(|_| "wrk".into());
    let version = tokio::process::Command::new(&wrk)
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("run {wrk}: install it (apt-get install wrk) or set WRK"))?;
    let version = String::from_utf8_lossy(&version.stdout);
    // `wrk debian/4.1.0-3+b2 [epoll] Copyright ...`: keep the name and version.
    let version: String = version
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");

    let srv = &BenchServer::start().await?;
    let t = Instant::now();
    let (floor, get, list) = srv
        .with_sandbox(|id| async move {
            eprintln!(
                "sandbox {id} running after {:.1} s",
                t.elapsed().as_secs_f64()
            );
            let healthz = format!("{}/healthz", srv.url);
            let sandbox = srv.api(&format!("/sandboxes/{id}"));
            let auth = format!("Authorization: Bearer {}", srv.admin_key);
            let check = srv
                .http
                .get(&sandbox)
                .bearer_auth(&srv.admin_key)
                .send()
                .await?;
            anyhow::ensure!(
                check.status().is_success(),
                "GET /sandboxes/{id} answered {}: {}",
                check.status(),
                check.text().await.unwrap_or_default()
            );
            run_wrk(&wrk, &healthz, None, WARMUP_SECONDS).await?;
            run_wrk(&wrk, &sandbox, Some(&auth), WARMUP_SECONDS).await?;
            let floor = run_wrk(&wrk, &healthz, None, seconds).await?;
            let get = run_wrk(&wrk, &sandbox, Some(&auth), seconds).await?;
            let list = run_wrk(&wrk, &srv.api("/sandboxes"), Some(&auth), seconds).await?;
            Ok((floor, get, list))
        })
        .await?;

    println!("{version}: {THREADS} threads, {CONNECTIONS} connections, {seconds} s each, loopback");
    for (name, r) in [
        ("GET /healthz      ", &floor),
        ("GET /sandboxes/id ", &get),
        ("GET /sandboxes    ", &list),
    ] {
        println!(
            "  {name} {:9.0} req/s   p50 {:6.2} ms   p99 {:6.2} ms",
            r.requests_per_sec,
            ms(r.p50),
            ms(r.p99)
        );
    }
    println!(
        "  sandbox GET: {:.0} req/s (target >= 10000), p99 {:.2} ms (target < 10)   ratio to healthz {:.2}",
        get.requests_per_sec,
        ms(get.p99),
        get.requests_per_sec / floor.requests_per_sec
    );
    println!(
        "  sandbox list: {:.0} req/s, p99 {:.2} ms (from the store)",
        list.requests_per_sec,
        ms(list.p99)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What one `wrk --latency` run measured.
#[derive(Debug, Clone, Copy)]
struct WrkResult {
    requests_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn run_wrk(
    wrk: &str,
    url: &str,
    header: Option<&str>,
    seconds: u32,
) -> anyhow::Result<WrkResult> {
    let mut cmd = tokio::process::Command::new(wrk);
    cmd.arg(format!("-t{THREADS}"))
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency");
    if let Some(h) = header {
        cmd.arg("-H").arg(h);
    }
    let out = cmd
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("run {wrk}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk {url} exited {}: {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text).with_context(|| format!("wrk {url} printed:\n{text}"))
}

/// Reads `Requests/sec:` and the `--latency` distribution; refuses a run
/// with socket errors or non-2xx answers, whose rate would measure errors.
fn parse_wrk(text: &str) -> anyhow::Result<WrkResult> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().context("Requests/sec")?);
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = Some(parse_latency(v.trim())?);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = Some(parse_latency(v.trim())?);
        } else if line.starts_with("Non-2xx or 3xx responses:") {
            anyhow::bail!("{line}");
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            let total: u64 = v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            anyhow::ensure!(total == 0, "{line}");
        }
    }
    Ok(WrkResult {
        requests_per_sec: rps.context("no Requests/sec line")?,
        p50: p50.context("no 50% latency line (wrk --latency)")?,
        p99: p99.context("no 99% latency line (wrk --latency)")?,
    })
}

/// wrk's latency format: a number then `us`, `ms`, `s`, `m` or `h`.
fn parse_latency(s: &str) -> anyhow::Result<Duration> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("latency {s:?} has no unit"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("latency {s:?}"))?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => anyhow::bail!("latency {s:?}: unknown unit"),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 10s test @ http://127.0.0.1:1/healthz
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   793.48us  412.11us  12.03ms   84.20%
    Req/Sec    40.89k     2.31k   45.51k    73.00%
  Latency Distribution
     50%  710.00us
     75%    0.92ms
     90%    1.21ms
     99%    2.05ms
  813760 requests in 10.00s, 125.72MB read
Requests/sec:  81353.66
Transfer/sec:     12.57MB
";

    #[test]
    fn parses_rate_and_latency_distribution() {
        let r = parse_wrk(SAMPLE).expect("sample parses");
        assert_eq!(r.requests_per_sec, 81353.66);
        assert_eq!(r.p50, Duration::from_micros(710));
        assert_eq!(r.p99, Duration::from_micros(2050));
    }

    #[test]
    fn refuses_error_answers() {
        let text = format!("{SAMPLE}  Non-2xx or 3xx responses: 12\n");
        let e = parse_wrk(&text).expect_err("non-2xx must fail");
        assert!(e.to_string().contains("Non-2xx"), "{e}");
        let text = format!("{SAMPLE}  Socket errors: connect 0, read 3, write 0, timeout 0\n");
        assert!(parse_wrk(&text).is_err());
        let text = format!("{SAMPLE}  Socket errors: connect 0, read 0, write 0, timeout 0\n");
        assert!(parse_wrk(&text).is_ok());
    }

    #[test]
    fn latency_units() {
        assert_eq!(
            parse_latency("1.50s").expect("s"),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_latency("250.00us").expect("us"),
            Duration::from_micros(250)
        );
        assert!(parse_latency("12").is_err());
    }
}
