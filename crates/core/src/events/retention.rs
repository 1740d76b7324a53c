//! Event retention: events older than `[events] retention_days`, and the
//! oldest past `max_rows_per_tenant` of a tenant or `max_rows` in all, are
//! deleted. The server's hourly housekeeping calls [`Core::prune_events`].

use hearth_agent_protocol::error_chain;

use crate::Core;

const DAY_MS: i64 = 24 * 3600 * 1000;

impl Core {
    /// Deletes the events `[events]` no longer keeps; how many went (a
    /// store failure is logged, and counts none).
    pub async fn prune_events(&self) -> u64 {
        let c = &self.config.events;
        let before = (c.retention_days > 0).then(|| {
            let days = i64::try_from(c.retention_days).unwrap_or(i64::MAX);
            self.now_ms().saturating_sub(days.saturating_mul(DAY_MS))
        });
        match self
            .store
            .prune_events(before, c.max_rows, c.max_rows_per_tenant)
            .await
        {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(events = n, "old events pruned");
                }
                n
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "prune events");
                0
            }
        }
    }
}
