//! exec of `true` through the agent over a Unix socket vs spawning `true`
//! directly, in one run. Target: p50 ratio <= 3.

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use hearth_agent_protocol::ExecRequest;
use hearth_test_support::AgentProcess;

const ITERATIONS: usize = 1000;
const WARMUP: usize = 50;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::tune_allocator();
    let agent = AgentProcess::start(&common::agent_binary()?, &[]).await?;
    let client = agent.client();
    let req = ExecRequest {
        command: "true".into(),
        ..Default::default()
    };

    let mut direct = Vec::with_capacity(ITERATIONS);
    let mut via_agent = Vec::with_capacity(ITERATIONS);
    for i in 0..WARMUP + ITERATIONS {
        // Interleaved, so drift on the machine hits both sides alike.
        let t = Instant::now();
        let status = std::process::Command::new("true").status()?;
        let d = t.elapsed();
        anyhow::ensure!(status.success(), "true failed");
        let t = Instant::now();
        let r = client.exec(&req).await?;
        let a = t.elapsed();
        anyhow::ensure!(r.exit_code == 0, "exec of true answered {}", r.exit_code);
        if i >= WARMUP {
            direct.push(d);
            via_agent.push(a);
        }
    }
    let p = |v: &mut Vec<Duration>, q| common::quantile(v, q).as_secs_f64() * 1e6;
    let (d50, d99) = (p(&mut direct, 0.5), p(&mut direct, 0.99));
    let (a50, a99) = (p(&mut via_agent, 0.5), p(&mut via_agent, 0.99));
    println!("exec `true`, {ITERATIONS} runs each, interleaved");
    println!("  direct spawn   p50 {d50:8.0} us   p99 {d99:8.0} us");
    println!("  via agent      p50 {a50:8.0} us   p99 {a99:8.0} us");
    println!(
        "  ratio p50 {:.2} (target <= 3)   ratio p99 {:.2}",
        a50 / d50,
        a99 / d99
    );
    Ok(())
}
