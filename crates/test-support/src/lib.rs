//! Helpers shared by Hearth tests: deadlines instead of sleeps, and fixtures
//! that run the real components (the agent binary on a Unix socket).

pub mod agent;
pub mod netlab;

use std::future::Future;
use std::time::Duration;

pub use agent::AgentProcess;

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
