//! Helpers shared by Hearth tests: deadlines instead of sleeps, and fixtures
//! that run the real components (the agent binary on a Unix socket).

pub mod agent;
pub mod netlab;
pub mod postgres;

use std::future::Future;
use std::time::Duration;

pub use agent::AgentProcess;

/// Fails the test at once, saying why, unless it runs as root. Root-only
/// tests are `#[ignore = "needs root ..."]`, so a plain `cargo test` lists
/// them as ignored (visible, never a silent pass) and `--run-ignored all`
/// (the README's test command, run as root in CI) runs them; one asked to
/// run must not pass without doing its work.
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root ({what}); run it as root"
    );
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming
/// `what`. The honest form of "sleep and hope".
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
