//! Shared pieces of the benchmarks: locating the release agent, percentiles.

use std::path::PathBuf;
use std::time::Duration;

/// The agent binary to measure: `HEARTH_AGENT_BIN`, else the release build.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTH_AGENT_BIN") {
        return Ok(p.into());
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/hearth-agent");
    anyhow::ensure!(
        p.exists(),
        "{} missing: run `cargo build --release -p hearth-agent` (bench/run does)",
        p.display()
    );
    Ok(p)
}

/// The `q`-quantile (0..=1) of `samples`, which get sorted.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i.min(samples.len() - 1)]
}

/// The same allocator settings the agent uses (see `hearth_agent::tune_allocator`):
/// the bench process stands in for the host server's side of a transfer.
pub fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; called first thing in main.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 * 1024 * 1024);
    }
}
