//! The audit log: every mutating action and every denied attempt, with
//! who (`api_key`, `scoped_token`, `system`), what, on which resource,
//! when, from where and how it ended. The API layer records each request
//! ([`Core::record_audit`]); entries are append-only and kept for
//! `[audit] retention_days`. No entry holds a secret's value: commands are
//! truncated and masked with the vault's values before they are written.

use serde_json::Value;

use crate::error::Result;
use crate::ids::new_id;
use crate::keys::Caller;
use crate::model::AuditRecord;
use crate::store::AuditFilter;
use crate::Core;

/// Entries one reading answers at most.
pub const MAX_PAGE: u32 = 1000;
/// The longest command kept in an entry, in bytes.
pub const MAX_COMMAND_BYTES: usize = 1024;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// An entry to record (the store numbers it).
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub kind: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    /// `ok`, `denied` or `error`.
    pub outcome: &'static str,
    pub error_code: Option<String>,
    pub details: Value,
}

/// Who a caller is, as the log names it.
fn actor(caller: &Caller) -> (&'static str, String) {
    match &caller.scope {
        Some(t) => ("scoped_token", t.token_id.clone()),
        None if caller.system => ("system", caller.key_id.clone()),
        None => ("api_key", caller.key_id.clone()),
    }
}

/// `text` cut to [`MAX_COMMAND_BYTES`] on a character boundary.
pub fn truncate(text: &str) -> String {
    if text.len() <= MAX_COMMAND_BYTES {
        return text.to_string();
    }
    let mut end = MAX_COMMAND_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl Core {
    /// Appends an entry for `caller`'s tenant. A store failure is logged,
    /// never the caller's problem.
    pub async fn record_audit(&self, caller: &Caller, e: NewAudit) {
        let (actor_type, actor_id) = actor(caller);
        let rec = AuditRecord {
            seq: 0,
            id: new_id("aud"),
            tenant_id: caller.tenant_id.clone(),
            kind: e.kind,
            actor_type: actor_type.into(),
            actor_id,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            request_id: e.request_id,
            ip: e.ip,
            at: self.now_ms(),
            outcome: e.outcome.into(),
            error_code: e.error_code,
            details: e.details,
        };
        if let Err(err) = self.store.append_audit(&rec).await {
            tracing::warn!(error = %hearth_agent_protocol::error_chain(&err), kind = %rec.kind, "audit entry not written");
        }
    }

    /// The caller's tenant's entries after `after` (a `seq`), oldest
    /// first, and the cursor of the next page when there may be one.
    pub async fn audit_log(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        after: i64,
        limit: u32,
    ) -> Result<(Vec<AuditRecord>, Option<i64>)> {
        let limit = limit.clamp(1, MAX_PAGE);
        let list = self
            .store
            .audit_after(&caller.tenant_id, filter, after, limit)
            .await?;
        let next = (list.len() == limit as usize)
            .then(|| list.last().map(|e| e.seq))
            .flatten();
        Ok((list, next))
    }

    /// Deletes entries past `[audit] retention_days` (0 keeps them all).
    pub async fn prune_audit(&self) -> u64 {
        let days = self.config.audit.retention_days;
        if days == 0 {
            return 0;
        }
        let days = i64::try_from(days).unwrap_or(i64::MAX);
        let before = self.now_ms().saturating_sub(days.saturating_mul(DAY_MS));
        match self.store.prune_audit(before).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(entries = n, "old audit entries pruned");
                }
                n
            }
            Err(e) => {
                tracing::warn!(error = %hearth_agent_protocol::error_chain(&e), "prune audit log");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_commands_are_cut_on_a_character_boundary() {
        let long = "é".repeat(600);
        let t = super::truncate(&long);
        assert!(
            t.len() <= super::MAX_COMMAND_BYTES + "…".len(),
            "{}",
            t.len()
        );
        assert!(t.ends_with('…'));
        assert_eq!(super::truncate("ls"), "ls");
    }
}
