//! What one guest's load costs the host and its neighbours: a console
//! flood leaves a bounded log, a fork bomb and memory hog leave a
//! neighbour's exec latency alone.

use super::*;
fn rss_kib() -> u64 {
    status_field(std::process::id(), "VmRSS")
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_guest_flooding_its_console_leaves_a_bounded_log() -> anyhow::Result<()> {
    let w = setup().await?;
    let vm = w.boot("loud").await?;
    let mb: u64 = std::env::var("HEARTH_TEST_CONSOLE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let rss_before = rss_kib();
    let started = std::time::Instant::now();
    let r = vm
        .agent()
        .exec(&ExecRequest {
            command: format!(
                "dd if=/dev/zero bs=1048576 count={mb} 2>/dev/null | tr '\\0' x > /dev/ttyS0; echo console-flood-done > /dev/ttyS0; echo ok"
            ),
            user: Some("root".into()),
            timeout_ms: Some(900_000),
            ..Default::default()
        })
        .await?;
    let took = started.elapsed();
    assert_eq!(String::from_utf8_lossy(r.stdout.as_slice()).trim(), "ok");
    let layout = vm.layout().clone();
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    // The pump may still be draining the socket: wait for the last line.
    hearth_test_support::wait_until(
        std::time::Duration::from_secs(30),
        "last console line",
        || async {
            vm.console_tail(1)
                .contains("console-flood-done")
                .then_some(())
        },
    )
    .await?;
    let cap = hearth_vmm::qemu::console::CAP;
    assert!(
        size(&layout.console_log) <= cap,
        "{}",
        size(&layout.console_log)
    );
    assert!(size(&layout.console_log_old) <= cap);
    let rss_after = rss_kib();
    eprintln!(
        "console flood: {mb} MiB in {:.1} s; log {} + {} bytes; driver RSS {} -> {} KiB",
        took.as_secs_f64(),
        size(&layout.console_log),
        size(&layout.console_log_old),
        rss_before,
        rss_after
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "driver memory grew by {} KiB",
        rss_after.saturating_sub(rss_before)
    );
    // The guest is fine afterwards.
    assert_eq!(sh(&vm.agent(), "echo alive").await?, "alive\n");
    vm.destroy().await?;
    Ok(())
}

/// CPU time the process has used, in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

async fn exec_p50(agent: &AgentClient, rounds: usize) -> anyhow::Result<std::time::Duration> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        let r = agent
            .exec(&ExecRequest {
                command: "true".into(),
                ..Default::default()
            })
            .await?;
        anyhow::ensure!(r.exit_code == 0);
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

#[tokio::test]
async fn a_fork_bomb_and_memory_hog_do_not_slow_a_neighbour() -> anyhow::Result<()> {
    let w = setup().await?;
    let bully = w.boot("bully").await?;
    let victim = w.boot("victim").await?;
    let quiet = exec_p50(&victim.agent(), 20).await?;

    // As root in the bully: every CPU busy, its RAM filled, then a fork
    // bomb; all detached so the exec returns.
    let r = bully
        .agent()
        .exec(&ExecRequest {
            command: "setsid sh -c 'for i in 1 2 3 4; do (while :; do :; done) & done; \
                      dd if=/dev/zero of=/dev/shm/hog bs=1M count=400 2>/dev/null; \
                      b() { b | b & }; b' >/dev/null 2>&1 </dev/null & echo started"
                .into(),
            user: Some("root".into()),
            timeout_ms: Some(30_000),
            ..Default::default()
        })
        .await?;
    assert_eq!(
        String::from_utf8_lossy(r.stdout.as_slice()).trim(),
        "started"
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (ticks, t) = (cpu_ticks(bully.pid()), std::time::Instant::now());
    let loud = exec_p50(&victim.agent(), 20).await?;
    // The bully really was busy meanwhile (at least half a core).
    let busy = (cpu_ticks(bully.pid()) - ticks) as f64 / 100.0 / t.elapsed().as_secs_f64();
    assert!(busy > 0.5, "the bully used {busy:.2} cores");
    let ratio = loud.as_secs_f64() / quiet.as_secs_f64();
    eprintln!(
        "neighbour exec p50: quiet {quiet:?}, next to the bully {loud:?}, ratio {ratio:.2}; bully used {busy:.2} cores"
    );
    assert!(ratio <= 2.0, "the bully slowed its neighbour {ratio:.2}x");

    // The bully's VMM still answers its driver, and goes when told.
    let started = std::time::Instant::now();
    bully.destroy().await?;
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert_eq!(sh(&victim.agent(), "echo fine").await?, "fine\n");
    victim.destroy().await?;
    Ok(())
}
