//! The queries of the SQL stores, written once for SQLite and PostgreSQL:
//! this directory is compiled into each backend's module (`../sqlite/`,
//! `../postgres/`), which names the database types this code uses (`Db`,
//! `DbRow`, `DbPool`), its store (`ThisStore`) and its `DIALECT`. The SQL is
//! the dialect both speak, placeholders `$1`, `$2`, ...; where they differ
//! (JSON arrays, scalar max, insertion order) [`Dialect`] says how.
//!
//! This file is the one `impl Store` (a trait impl cannot be split across
//! files), one short method per query, in the trait's order; row mapping
//! is in `rows.rs`, tests in `tests.rs`; the longer queries live by
//! concept, each in its file (`sandboxes.rs`, `templates.rs`, `events.rs`,
//! `share_tokens.rs`, `quotas.rs`, `secrets.rs`, `scoped_tokens.rs`,
//! `deployments.rs`, `audit.rs`, `usage.rs`), and the methods here call
//! them.

use async_trait::async_trait;
use sqlx::Row;

use super::{Db, DbPool, DbRow, ThisStore, DIALECT};
use std::collections::BTreeMap;

use crate::model::{
    ApiKeyRecord, AuditRecord, BuildRecord, DeploymentRecord, DeploymentVersionRecord, EventRecord,
    PreviewRecord, PreviewTokenRecord, SandboxRecord, ScopedTokenRecord, SecretBindingRecord,
    SecretRecord, SnapshotRecord, TemplateRecord, UsageInterval,
};
use crate::model::{NodeLoad, NodeRecord, NodeState};
use crate::store::{
    AuditFilter, IdempotentResponse, NewEvent, Page, SandboxFilter, SecretFilter, Store,
    StoreError, StoreResult,
};

mod audit;
mod deployments;
mod events;
mod nodes;
mod quotas;
mod rows;
mod sandboxes;
mod scoped_tokens;
mod secrets;
mod share_tokens;
mod templates;
mod usage;

use rows::*;

#[async_trait]
impl Store for ThisStore {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn ensure_tenant(&self, id: &str, name: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_api_key(&self, k: &ApiKeyRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, admin, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&k.id)
        .bind(&k.tenant_id)
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(k.admin)
        .bind(k.created_at)
        .bind(k.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        sqlx::query("SELECT * FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn list_api_keys(&self, tenant_id: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        sqlx::query(
            "SELECT * FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_from_row)
        .collect()
    }

    async fn revoke_api_key(&self, tenant_id: &str, id: &str, now: i64) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn count_api_keys(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn latest_revocation(&self) -> StoreResult<i64> {
        nodes::latest_revocation(&self.pool).await
    }

    async fn tenant_quotas(
        &self,
        tenant: &str,
    ) -> StoreResult<Option<crate::quotas::QuotaOverrides>> {
        quotas::get(&self.pool, tenant).await
    }

    async fn put_tenant_quotas(
        &self,
        tenant: &str,
        overrides: &crate::quotas::QuotaOverrides,
        now: i64,
    ) -> StoreResult<()> {
        quotas::put(&self.pool, tenant, overrides, now).await
    }

    async fn tenant_usage(&self, tenant: &str) -> StoreResult<crate::quotas::Quotas> {
        quotas::usage(&self.pool, tenant).await
    }

    async fn put_deployment(&self, d: &DeploymentRecord) -> StoreResult<()> {
        deployments::put(&self.pool, d).await
    }

    async fn get_deployment(&self, id: &str) -> StoreResult<Option<DeploymentRecord>> {
        deployments::get(&self.pool, id).await
    }

    async fn deployment_by_slug(&self, slug: &str) -> StoreResult<Option<DeploymentRecord>> {
        deployments::by_slug(&self.pool, slug).await
    }

    async fn list_deployments(
        &self,
        tenant: &str,
        filter: &crate::model::DeploymentListFilter,
    ) -> StoreResult<Vec<DeploymentRecord>> {
        deployments::list(&self.pool, tenant, filter).await
    }

    async fn running_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
        deployments::running(&self.pool).await
    }

    async fn delete_deployment(&self, id: &str) -> StoreResult<()> {
        deployments::delete(&self.pool, id).await
    }

    async fn settle_interrupted_publishes(&self, error: &str, now: i64) -> StoreResult<u64> {
        deployments::settle_interrupted(&self.pool, error, now).await
    }

    async fn insert_version(
        &self,
        v: &DeploymentVersionRecord,
    ) -> StoreResult<DeploymentVersionRecord> {
        deployments::insert_version(&self.pool, v).await
    }

    async fn update_version(&self, v: &DeploymentVersionRecord) -> StoreResult<()> {
        deployments::update_version(&self.pool, v).await
    }

    async fn list_versions(
        &self,
        deployment_id: &str,
    ) -> StoreResult<Vec<DeploymentVersionRecord>> {
        deployments::versions(&self.pool, deployment_id).await
    }

    async fn put_domain(&self, d: &crate::model::DomainRecord) -> StoreResult<()> {
        deployments::put_domain(&self.pool, d).await
    }

    async fn delete_domain(&self, id: &str) -> StoreResult<()> {
        deployments::delete_domain(&self.pool, id).await
    }

    async fn domains_of(
        &self,
        deployment_id: &str,
    ) -> StoreResult<Vec<crate::model::DomainRecord>> {
        deployments::domains(
            &self.pool,
            "deployment_id = $1 ORDER BY created_at",
            deployment_id,
        )
        .await
    }

    async fn verified_domains(&self) -> StoreResult<Vec<crate::model::DomainRecord>> {
        deployments::domains(&self.pool, "state = $1 ORDER BY domain", "verified").await
    }

    async fn append_audit(&self, e: &AuditRecord) -> StoreResult<i64> {
        audit::append(&self.pool, e).await
    }

    async fn audit_after(
        &self,
        tenant: &str,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        audit::after(&self.pool, tenant, filter, after_seq, limit).await
    }

    async fn prune_audit(&self, before: i64) -> StoreResult<u64> {
        audit::prune(&self.pool, before).await
    }

    async fn insert_scoped_token(&self, t: &ScopedTokenRecord) -> StoreResult<()> {
        scoped_tokens::insert(&self.pool, t).await
    }

    async fn scoped_token_by_hash(&self, hash: &str) -> StoreResult<Option<ScopedTokenRecord>> {
        scoped_tokens::by_hash(&self.pool, hash).await
    }

    async fn get_scoped_token(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Option<ScopedTokenRecord>> {
        scoped_tokens::get(&self.pool, tenant, id).await
    }

    async fn list_scoped_tokens(
        &self,
        tenant: &str,
        limit: u32,
    ) -> StoreResult<Vec<ScopedTokenRecord>> {
        scoped_tokens::list(&self.pool, tenant, limit).await
    }

    async fn revoke_scoped_token(&self, tenant: &str, id: &str, now: i64) -> StoreResult<bool> {
        scoped_tokens::revoke(&self.pool, tenant, id, now).await
    }

    async fn revoke_tokens_minted_by(&self, key_id: &str, now: i64) -> StoreResult<u64> {
        scoped_tokens::revoke_minted_by(&self.pool, key_id, now).await
    }

    async fn insert_secret(&self, s: &SecretRecord) -> StoreResult<()> {
        secrets::insert(&self.pool, s).await
    }

    async fn get_secret(&self, tenant: &str, id: &str) -> StoreResult<Option<SecretRecord>> {
        secrets::get(&self.pool, tenant, id).await
    }

    async fn secrets_named(
        &self,
        tenant: &str,
        names: &[String],
    ) -> StoreResult<Vec<SecretRecord>> {
        secrets::named(&self.pool, tenant, names).await
    }

    async fn list_secrets(
        &self,
        tenant: &str,
        filter: &SecretFilter,
        limit: u32,
    ) -> StoreResult<Vec<SecretRecord>> {
        secrets::list(&self.pool, tenant, filter, limit).await
    }

    async fn update_secret(&self, s: &SecretRecord) -> StoreResult<()> {
        secrets::update(&self.pool, s).await
    }

    async fn delete_secret(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        secrets::delete(&self.pool, tenant, id).await
    }

    async fn count_secrets(&self, tenant: &str) -> StoreResult<u64> {
        secrets::count(&self.pool, tenant).await
    }

    async fn insert_binding(&self, b: &SecretBindingRecord) -> StoreResult<()> {
        secrets::insert_binding(&self.pool, b).await
    }

    async fn list_bindings(
        &self,
        tenant: &str,
        filter: &SecretFilter,
        limit: u32,
    ) -> StoreResult<Vec<SecretBindingRecord>> {
        secrets::list_bindings(&self.pool, tenant, filter, limit).await
    }

    async fn delete_binding(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        secrets::delete_binding(&self.pool, tenant, id).await
    }

    async fn bound_secrets(
        &self,
        tenant: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> StoreResult<Vec<(SecretBindingRecord, SecretRecord)>> {
        secrets::bound(&self.pool, tenant, resource_type, resource_id).await
    }

    async fn insert_sandbox(&self, s: &SandboxRecord) -> StoreResult<()> {
        sandboxes::insert_sandbox(&self.pool, s).await
    }

    async fn update_sandbox(&self, s: &SandboxRecord) -> StoreResult<()> {
        sandboxes::update_sandbox(&self.pool, s).await
    }

    async fn touch_sandbox(&self, id: &str, at: i64) -> StoreResult<()> {
        sandboxes::touch_sandbox(&self.pool, id, at).await
    }

    async fn get_sandbox(&self, id: &str) -> StoreResult<Option<SandboxRecord>> {
        sandboxes::get_sandbox(&self.pool, id).await
    }

    async fn sandbox_by_name(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> StoreResult<Option<SandboxRecord>> {
        sandboxes::sandbox_by_name(&self.pool, tenant_id, name).await
    }

    async fn list_sandboxes(
        &self,
        tenant_id: &str,
        f: &SandboxFilter,
        page: Page,
    ) -> StoreResult<(Vec<SandboxRecord>, u64)> {
        sandboxes::list_sandboxes(&self.pool, tenant_id, f, page).await
    }

    async fn live_sandboxes(&self, node: &str) -> StoreResult<Vec<SandboxRecord>> {
        sandboxes::live_sandboxes(&self.pool, node, true).await
    }

    async fn node_sandboxes(&self, node: &str) -> StoreResult<Vec<SandboxRecord>> {
        sandboxes::live_sandboxes(&self.pool, node, false).await
    }

    async fn put_node(&self, n: &NodeRecord) -> StoreResult<()> {
        nodes::put(&self.pool, n).await
    }

    async fn place(
        &self,
        now: i64,
        choose: &crate::store::PlacementChoice<'_>,
    ) -> StoreResult<Option<crate::model::PlacementRecord>> {
        nodes::place(&self.pool, now, choose).await
    }

    async fn move_paused(&self, id: &str, from: &str, to: &str) -> StoreResult<bool> {
        nodes::move_paused(&self.pool, id, from, to).await
    }

    async fn put_replica(&self, id: &str, node: &str, paused_at: i64) -> StoreResult<bool> {
        nodes::put_replica(&self.pool, id, node, paused_at).await
    }

    async fn replica_of(&self, id: &str) -> StoreResult<Option<String>> {
        nodes::replica_of(&self.pool, id).await
    }

    async fn drop_replica(&self, id: &str) -> StoreResult<()> {
        nodes::drop_replica(&self.pool, id).await
    }

    async fn release_placement(&self, id: &str) -> StoreResult<()> {
        nodes::release(&self.pool, id).await
    }

    async fn node_heartbeat(
        &self,
        id: &str,
        now: i64,
        templates: &[String],
    ) -> StoreResult<Option<NodeState>> {
        nodes::heartbeat(&self.pool, id, now, templates).await
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        nodes::list(&self.pool).await
    }

    async fn set_node_state(
        &self,
        id: &str,
        from: &[NodeState],
        to: NodeState,
    ) -> StoreResult<bool> {
        nodes::set_state(&self.pool, id, from, to).await
    }

    async fn mark_lost_nodes(&self, cutoff: i64) -> StoreResult<Vec<NodeRecord>> {
        nodes::mark_lost(&self.pool, cutoff).await
    }

    async fn node_loads(&self) -> StoreResult<BTreeMap<String, NodeLoad>> {
        nodes::loads(&self.pool).await
    }

    async fn put_snapshot(&self, s: &SnapshotRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO snapshots (id, tenant_id, sandbox_id, status, comment, size_bytes, error, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET status = $4, comment = $5, size_bytes = $6, error = $7",
        )
        .bind(&s.id)
        .bind(&s.tenant_id)
        .bind(&s.sandbox_id)
        .bind(s.status.as_str())
        .bind(&s.comment)
        .bind(s.size_bytes as i64)
        .bind(&s.error)
        .bind(s.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_snapshot(&self, id: &str) -> StoreResult<Option<SnapshotRecord>> {
        sqlx::query("SELECT * FROM snapshots WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(snapshot_from_row)
            .transpose()
    }

    async fn list_snapshots(&self, sandbox_id: &str) -> StoreResult<Vec<SnapshotRecord>> {
        sqlx::query(
            "SELECT * FROM snapshots WHERE sandbox_id = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(sandbox_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(snapshot_from_row)
        .collect()
    }

    async fn tenant_snapshots(
        &self,
        tenant_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<SnapshotRecord>> {
        sqlx::query(
            "SELECT * FROM snapshots WHERE tenant_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(tenant_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(snapshot_from_row)
        .collect()
    }

    async fn delete_snapshot(&self, id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM snapshots WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_preview(&self, p: &PreviewRecord) -> StoreResult<()> {
        let r = sqlx::query(
            "INSERT INTO previews (id, tenant_id, sandbox_id, port, visibility, slug, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&p.id)
        .bind(&p.tenant_id)
        .bind(&p.sandbox_id)
        .bind(i64::from(p.port))
        .bind(p.visibility.as_str())
        .bind(&p.slug)
        .bind(p.created_at)
        .execute(&self.pool)
        .await;
        match r {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate("preview of this port")),
            r => r.map(|_| ()).map_err(StoreError::from),
        }
    }

    async fn get_preview(&self, id: &str) -> StoreResult<Option<PreviewRecord>> {
        sqlx::query("SELECT * FROM previews WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(preview_from_row)
            .transpose()
    }

    async fn preview_by_slug(&self, slug: &str) -> StoreResult<Option<PreviewRecord>> {
        sqlx::query("SELECT * FROM previews WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(preview_from_row)
            .transpose()
    }

    async fn list_previews(&self, sandbox_id: &str) -> StoreResult<Vec<PreviewRecord>> {
        sqlx::query("SELECT * FROM previews WHERE sandbox_id = $1 ORDER BY created_at, id")
            .bind(sandbox_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(preview_from_row)
            .collect()
    }

    async fn delete_preview(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM preview_tokens WHERE preview_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM previews WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_preview_token(&self, t: &PreviewTokenRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO preview_tokens (id, tenant_id, sandbox_id, preview_id, hash, prefix, \
             expires_at, revoked_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&t.id)
        .bind(&t.tenant_id)
        .bind(&t.sandbox_id)
        .bind(&t.preview_id)
        .bind(&t.hash)
        .bind(&t.prefix)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .bind(t.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn preview_token_by_hash(&self, hash: &str) -> StoreResult<Option<PreviewTokenRecord>> {
        sqlx::query("SELECT * FROM preview_tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(preview_token_from_row)
            .transpose()
    }

    async fn revoke_preview_tokens(&self, preview_id: &str, now: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE preview_tokens SET revoked_at = $1 WHERE preview_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(preview_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn get_preview_token(&self, id: &str) -> StoreResult<Option<PreviewTokenRecord>> {
        share_tokens::get(&self.pool, id).await
    }

    async fn list_preview_tokens(
        &self,
        sandbox_id: &str,
        preview_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<PreviewTokenRecord>> {
        share_tokens::list(&self.pool, sandbox_id, preview_id, limit).await
    }

    async fn revoke_sandbox_preview_tokens(&self, sandbox_id: &str, now: i64) -> StoreResult<u64> {
        share_tokens::revoke_sandbox(&self.pool, sandbox_id, now).await
    }

    async fn revoke_preview_token(&self, id: &str, now: i64) -> StoreResult<bool> {
        share_tokens::revoke_one(&self.pool, id, now).await
    }

    async fn insert_template(&self, t: &TemplateRecord) -> StoreResult<()> {
        templates::insert_template(&self.pool, t).await
    }

    async fn get_template(&self, id: &str) -> StoreResult<Option<TemplateRecord>> {
        templates::get_template(&self.pool, id).await
    }

    async fn template_by_name(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> StoreResult<Option<TemplateRecord>> {
        templates::template_by_name(&self.pool, tenant_id, name).await
    }

    async fn list_templates(&self, tenant_id: &str) -> StoreResult<Vec<TemplateRecord>> {
        templates::list_templates(&self.pool, tenant_id).await
    }

    async fn insert_build(&self, b: &BuildRecord) -> StoreResult<u32> {
        templates::insert_build(&self.pool, b).await
    }

    async fn update_build(&self, b: &BuildRecord) -> StoreResult<()> {
        templates::update_build(&self.pool, b).await
    }

    async fn get_build(&self, id: &str) -> StoreResult<Option<BuildRecord>> {
        templates::get_build(&self.pool, id).await
    }

    async fn list_builds(&self, template_id: &str) -> StoreResult<Vec<BuildRecord>> {
        templates::list_builds(&self.pool, template_id).await
    }

    async fn fail_unfinished_builds(&self, error: &str, now: i64) -> StoreResult<u64> {
        templates::fail_unfinished_builds(&self.pool, error, now).await
    }

    async fn append_event(&self, e: &NewEvent) -> StoreResult<EventRecord> {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO events (id, tenant_id, sandbox_id, type, ts, data) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        )
        .bind(&e.id)
        .bind(&e.tenant_id)
        .bind(&e.sandbox_id)
        .bind(&e.kind)
        .bind(e.ts)
        .bind(json(&e.data))
        .fetch_one(&self.pool)
        .await?;
        Ok(EventRecord {
            seq,
            id: e.id.clone(),
            tenant_id: e.tenant_id.clone(),
            sandbox_id: e.sandbox_id.clone(),
            kind: e.kind.clone(),
            ts: e.ts,
            data: e.data.clone(),
        })
    }

    async fn events_after(
        &self,
        tenant_id: &str,
        sandbox_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let rows =
            match sandbox_id {
                Some(sid) => sqlx::query(
                    "SELECT * FROM events WHERE sandbox_id = $1 AND tenant_id = $2 AND seq > $3 \
                     ORDER BY seq LIMIT $4",
                )
                .bind(sid)
                .bind(tenant_id)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?,
                None => sqlx::query(
                    "SELECT * FROM events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(tenant_id)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?,
            };
        rows.iter().map(event_from_row).collect()
    }

    async fn prune_events(
        &self,
        before_ts: Option<i64>,
        max_rows: u64,
        max_per_tenant: u64,
    ) -> StoreResult<u64> {
        events::prune(&self.pool, before_ts, max_rows, max_per_tenant).await
    }

    async fn idempotent_response(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>> {
        let row = sqlx::query(
            "SELECT fingerprint, status, body, created_at FROM idempotency \
             WHERE tenant_id = $1 AND key = $2",
        )
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(IdempotentResponse {
                fingerprint: r.try_get("fingerprint")?,
                status: r.try_get::<i64, _>("status")? as u16,
                body: r.try_get("body")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn put_idempotent_response(
        &self,
        tenant_id: &str,
        key: &str,
        resp: &IdempotentResponse,
    ) -> StoreResult<()> {
        let r = sqlx::query(
            "INSERT INTO idempotency (tenant_id, key, fingerprint, status, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant_id)
        .bind(key)
        .bind(&resp.fingerprint)
        .bind(i64::from(resp.status))
        .bind(&resp.body)
        .bind(resp.created_at)
        .execute(&self.pool)
        .await;
        match r {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate("idempotency key")),
            r => r.map(|_| ()).map_err(StoreError::from),
        }
    }

    async fn prune_idempotency(&self, before: i64) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM idempotency WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn switch_usage(
        &self,
        sandbox_id: &str,
        at: i64,
        next: Option<&UsageInterval>,
    ) -> StoreResult<()> {
        usage::switch(&self.pool, sandbox_id, at, next).await
    }

    async fn usage_intervals(
        &self,
        tenant_id: &str,
        sandbox_id: Option<&str>,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<UsageInterval>> {
        usage::intervals(&self.pool, tenant_id, sandbox_id, from, to).await
    }
}

#[cfg(test)]
mod tests;
