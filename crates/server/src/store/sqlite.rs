//! The SQLite store: WAL journal (readers never wait for the writer),
//! `synchronous = NORMAL` (a crash loses at most the last transactions, never
//! consistency), migrations embedded in the binary and run at open.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{IdempotentResponse, NewEvent, Page, SandboxFilter, Store, StoreError, StoreResult};
use crate::model::{
    ApiKeyRecord, BootPath, BuildRecord, BuildState, EventRecord, PreviewRecord,
    PreviewTokenRecord, SandboxRecord, SandboxState, SnapshotRecord, SnapshotStatus,
    TemplateRecord, UsageInterval, Visibility,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(SqliteStore { pool })
    }

    /// An in-memory store (tests): one connection, so every query sees it.
    pub async fn in_memory() -> StoreResult<SqliteStore> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(SqliteStore { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("maps of strings and JSON values always serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &'static str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        source: Some(e),
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn sandbox_from_row(r: &SqliteRow) -> StoreResult<SandboxRecord> {
    let state: String = r.try_get("state")?;
    let boot_path: Option<String> = r.try_get("boot_path")?;
    Ok(SandboxRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        state: SandboxState::parse(&state).ok_or(StoreError::Corrupt {
            what: "sandbox state",
            source: None,
        })?,
        template_id: r.try_get("template_id")?,
        template_version: r.try_get("template_version")?,
        cpu_count: r.try_get::<i64, _>("cpu_count")? as u32,
        memory_mb: r.try_get::<i64, _>("memory_mb")? as u32,
        disk_size_mb: r.try_get::<i64, _>("disk_size_mb")? as u32,
        timeout_sec: r.try_get::<i64, _>("timeout_sec")? as u32,
        idle_timeout_sec: r.try_get::<i64, _>("idle_timeout_sec")? as u32,
        always_on: r.try_get("always_on")?,
        persistent: r.try_get("persistent")?,
        egress: r.try_get("egress")?,
        egress_policy: r
            .try_get::<Option<String>, _>("egress_policy")?
            .map(|j| from_json(&j, "sandbox egress_policy"))
            .transpose()?,
        egress_policy_updated_at: r.try_get("egress_policy_updated_at")?,
        env: from_json(r.try_get("env")?, "sandbox env")?,
        secret_env: from_json(r.try_get("secret_env")?, "sandbox secret_env")?,
        metadata: from_json(r.try_get("metadata")?, "sandbox metadata")?,
        tags: from_json(r.try_get("tags")?, "sandbox tags")?,
        external_workspace_id: r.try_get("external_workspace_id")?,
        external_user_id: r.try_get("external_user_id")?,
        external_project_id: r.try_get("external_project_id")?,
        boot_ms: r.try_get::<Option<i64>, _>("boot_ms")?.map(|v| v as u64),
        boot_path: boot_path.as_deref().and_then(BootPath::parse),
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        paused_at: r.try_get("paused_at")?,
        destroyed_at: r.try_get("destroyed_at")?,
        deadline_at: r.try_get("deadline_at")?,
        last_activity_at: r.try_get("last_activity_at")?,
    })
}

fn snapshot_from_row(r: &SqliteRow) -> StoreResult<SnapshotRecord> {
    let status: String = r.try_get("status")?;
    Ok(SnapshotRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        sandbox_id: r.try_get("sandbox_id")?,
        status: SnapshotStatus::parse(&status).ok_or(StoreError::Corrupt {
            what: "snapshot status",
            source: None,
        })?,
        comment: r.try_get("comment")?,
        size_bytes: r.try_get::<i64, _>("size_bytes")? as u64,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
    })
}

fn template_from_row(r: &SqliteRow) -> StoreResult<TemplateRecord> {
    Ok(TemplateRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
    })
}

fn build_from_row(r: &SqliteRow) -> StoreResult<BuildRecord> {
    let state: String = r.try_get("state")?;
    Ok(BuildRecord {
        id: r.try_get("id")?,
        template_id: r.try_get("template_id")?,
        tenant_id: r.try_get("tenant_id")?,
        version: r.try_get::<i64, _>("version")? as u32,
        state: BuildState::parse(&state).ok_or(StoreError::Corrupt {
            what: "build state",
            source: None,
        })?,
        spec: from_json(r.try_get("spec")?, "build spec")?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

fn preview_from_row(r: &SqliteRow) -> StoreResult<PreviewRecord> {
    let visibility: String = r.try_get("visibility")?;
    Ok(PreviewRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        sandbox_id: r.try_get("sandbox_id")?,
        port: r.try_get::<i64, _>("port")? as u16,
        visibility: Visibility::parse(&visibility).ok_or(StoreError::Corrupt {
            what: "preview visibility",
            source: None,
        })?,
        slug: r.try_get("slug")?,
        created_at: r.try_get("created_at")?,
    })
}

fn preview_token_from_row(r: &SqliteRow) -> StoreResult<PreviewTokenRecord> {
    Ok(PreviewTokenRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        sandbox_id: r.try_get("sandbox_id")?,
        preview_id: r.try_get("preview_id")?,
        hash: r.try_get("hash")?,
        prefix: r.try_get("prefix")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        created_at: r.try_get("created_at")?,
    })
}

fn key_from_row(r: &SqliteRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        hash: r.try_get("hash")?,
        admin: r.try_get("admin")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn event_from_row(r: &SqliteRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        sandbox_id: r.try_get("sandbox_id")?,
        kind: r.try_get("type")?,
        ts: r.try_get("ts")?,
        data: from_json(r.try_get("data")?, "event data")?,
    })
}

fn usage_from_row(r: &SqliteRow) -> StoreResult<UsageInterval> {
    let state: String = r.try_get("state")?;
    Ok(UsageInterval {
        sandbox_id: r.try_get("sandbox_id")?,
        tenant_id: r.try_get("tenant_id")?,
        state: SandboxState::parse(&state).ok_or(StoreError::Corrupt {
            what: "usage state",
            source: None,
        })?,
        cpu_count: r.try_get::<i64, _>("cpu_count")? as u32,
        memory_mb: r.try_get::<i64, _>("memory_mb")? as u32,
        disk_size_mb: r.try_get::<i64, _>("disk_size_mb")? as u32,
        external_workspace_id: r.try_get("external_workspace_id")?,
        external_user_id: r.try_get("external_user_id")?,
        external_project_id: r.try_get("external_project_id")?,
        template_id: r.try_get("template_id")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
    })
}

const SANDBOX_COLUMNS: &str = "id, tenant_id, name, state, template_id, template_version, \
    cpu_count, memory_mb, disk_size_mb, timeout_sec, idle_timeout_sec, always_on, persistent, \
    egress, env, secret_env, metadata, tags, external_workspace_id, external_user_id, \
    external_project_id, boot_ms, boot_path, created_at, started_at, paused_at, destroyed_at, \
    deadline_at, last_activity_at, egress_policy, egress_policy_updated_at";

fn push_sandbox_values(b: &mut QueryBuilder<'_, Sqlite>, s: &SandboxRecord) {
    let mut v = b.separated(", ");
    v.push_bind(s.id.clone())
        .push_bind(s.tenant_id.clone())
        .push_bind(s.name.clone())
        .push_bind(s.state.as_str())
        .push_bind(s.template_id.clone())
        .push_bind(s.template_version.clone())
        .push_bind(i64::from(s.cpu_count))
        .push_bind(i64::from(s.memory_mb))
        .push_bind(i64::from(s.disk_size_mb))
        .push_bind(i64::from(s.timeout_sec))
        .push_bind(i64::from(s.idle_timeout_sec))
        .push_bind(s.always_on)
        .push_bind(s.persistent)
        .push_bind(s.egress)
        .push_bind(json(&s.env))
        .push_bind(json(&s.secret_env))
        .push_bind(json(&s.metadata))
        .push_bind(json(&s.tags))
        .push_bind(s.external_workspace_id.clone())
        .push_bind(s.external_user_id.clone())
        .push_bind(s.external_project_id.clone())
        .push_bind(s.boot_ms.map(|v| v as i64))
        .push_bind(s.boot_path.map(BootPath::as_str))
        .push_bind(s.created_at)
        .push_bind(s.started_at)
        .push_bind(s.paused_at)
        .push_bind(s.destroyed_at)
        .push_bind(s.deadline_at)
        .push_bind(s.last_activity_at)
        .push_bind(s.egress_policy.as_ref().map(json))
        .push_bind(s.egress_policy_updated_at);
}

#[async_trait]
impl Store for SqliteStore {
    async fn ensure_tenant(&self, id: &str, name: &str, now: i64) -> StoreResult<()> {
        sqlx::query("INSERT OR IGNORE INTO tenants (id, name, created_at) VALUES (?, ?, ?)")
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        sqlx::query("SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn list_api_keys(&self, tenant_id: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        sqlx::query(
            "SELECT * FROM api_keys WHERE tenant_id = ? AND revoked_at IS NULL ORDER BY created_at, id",
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
            "UPDATE api_keys SET revoked_at = ? WHERE tenant_id = ? AND id = ? AND revoked_at IS NULL",
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

    async fn insert_sandbox(&self, s: &SandboxRecord) -> StoreResult<()> {
        let mut b = QueryBuilder::new(format!(
            "INSERT INTO sandboxes ({SANDBOX_COLUMNS}) VALUES ("
        ));
        push_sandbox_values(&mut b, s);
        b.push(")");
        match b.build().execute(&self.pool).await {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate("sandbox name")),
            r => r.map(|_| ()).map_err(StoreError::from),
        }
    }

    async fn update_sandbox(&self, s: &SandboxRecord) -> StoreResult<()> {
        // REPLACE keeps one statement for every field; the row is the record.
        let mut b = QueryBuilder::new(format!(
            "REPLACE INTO sandboxes ({SANDBOX_COLUMNS}) VALUES ("
        ));
        push_sandbox_values(&mut b, s);
        b.push(")");
        match b.build().execute(&self.pool).await {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate("sandbox name")),
            r => r.map(|_| ()).map_err(StoreError::from),
        }
    }

    async fn touch_sandbox(&self, id: &str, at: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sandboxes SET last_activity_at = MAX(last_activity_at, ?) WHERE id = ?",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_sandbox(&self, id: &str) -> StoreResult<Option<SandboxRecord>> {
        sqlx::query("SELECT * FROM sandboxes WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(sandbox_from_row)
            .transpose()
    }

    async fn sandbox_by_name(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> StoreResult<Option<SandboxRecord>> {
        sqlx::query(
            "SELECT * FROM sandboxes WHERE tenant_id = ? AND name = ? \
             ORDER BY state = 'destroyed', created_at DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(sandbox_from_row)
        .transpose()
    }

    async fn list_sandboxes(
        &self,
        tenant_id: &str,
        f: &SandboxFilter,
        page: Page,
    ) -> StoreResult<(Vec<SandboxRecord>, u64)> {
        fn filtered<'a>(
            head: &str,
            tenant_id: &'a str,
            f: &'a SandboxFilter,
        ) -> QueryBuilder<'a, Sqlite> {
            let mut b = QueryBuilder::new(head);
            b.push(" FROM sandboxes WHERE tenant_id = ")
                .push_bind(tenant_id);
            if let Some(s) = f.state {
                b.push(" AND state = ").push_bind(s.as_str());
            }
            for (col, v) in [
                ("external_workspace_id", &f.external_workspace_id),
                ("external_user_id", &f.external_user_id),
                ("external_project_id", &f.external_project_id),
                ("template_id", &f.template_id),
            ] {
                if let Some(v) = v {
                    b.push(format!(" AND {col} = ")).push_bind(v.as_str());
                }
            }
            for tag in &f.tags {
                b.push(" AND EXISTS (SELECT 1 FROM json_each(sandboxes.tags) WHERE value = ")
                    .push_bind(tag.as_str())
                    .push(")");
            }
            b
        }
        let total: i64 = filtered("SELECT COUNT(*)", tenant_id, f)
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await?;
        let mut b = filtered("SELECT *", tenant_id, f);
        b.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(page.page_size))
            .push(" OFFSET ")
            .push_bind(page.offset() as i64);
        let rows = b.build().fetch_all(&self.pool).await?;
        let list = rows
            .iter()
            .map(sandbox_from_row)
            .collect::<StoreResult<_>>()?;
        Ok((list, total as u64))
    }

    async fn live_sandboxes(&self) -> StoreResult<Vec<SandboxRecord>> {
        sqlx::query("SELECT * FROM sandboxes WHERE state != 'destroyed' ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(sandbox_from_row)
            .collect()
    }

    async fn put_snapshot(&self, s: &SnapshotRecord) -> StoreResult<()> {
        sqlx::query(
            "REPLACE INTO snapshots (id, tenant_id, sandbox_id, status, comment, size_bytes, error, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        sqlx::query("SELECT * FROM snapshots WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(snapshot_from_row)
            .transpose()
    }

    async fn list_snapshots(&self, sandbox_id: &str) -> StoreResult<Vec<SnapshotRecord>> {
        sqlx::query(
            "SELECT * FROM snapshots WHERE sandbox_id = ? ORDER BY created_at DESC, id DESC",
        )
        .bind(sandbox_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(snapshot_from_row)
        .collect()
    }

    async fn delete_snapshot(&self, id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM snapshots WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_preview(&self, p: &PreviewRecord) -> StoreResult<()> {
        let r = sqlx::query(
            "INSERT INTO previews (id, tenant_id, sandbox_id, port, visibility, slug, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        sqlx::query("SELECT * FROM previews WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(preview_from_row)
            .transpose()
    }

    async fn preview_by_slug(&self, slug: &str) -> StoreResult<Option<PreviewRecord>> {
        sqlx::query("SELECT * FROM previews WHERE slug = ?")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(preview_from_row)
            .transpose()
    }

    async fn list_previews(&self, sandbox_id: &str) -> StoreResult<Vec<PreviewRecord>> {
        sqlx::query("SELECT * FROM previews WHERE sandbox_id = ? ORDER BY created_at, id")
            .bind(sandbox_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(preview_from_row)
            .collect()
    }

    async fn delete_preview(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM preview_tokens WHERE preview_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM previews WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_preview_token(&self, t: &PreviewTokenRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO preview_tokens (id, tenant_id, sandbox_id, preview_id, hash, prefix, \
             expires_at, revoked_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        sqlx::query("SELECT * FROM preview_tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(preview_token_from_row)
            .transpose()
    }

    async fn revoke_preview_tokens(&self, preview_id: &str, now: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE preview_tokens SET revoked_at = ? WHERE preview_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(preview_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn insert_template(&self, t: &TemplateRecord) -> StoreResult<()> {
        let r = sqlx::query(
            "INSERT INTO templates (id, tenant_id, name, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.tenant_id)
        .bind(&t.name)
        .bind(t.created_at)
        .execute(&self.pool)
        .await;
        match r {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate("template name")),
            r => r.map(|_| ()).map_err(StoreError::from),
        }
    }

    async fn get_template(&self, id: &str) -> StoreResult<Option<TemplateRecord>> {
        sqlx::query("SELECT * FROM templates WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(template_from_row)
            .transpose()
    }

    async fn template_by_name(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> StoreResult<Option<TemplateRecord>> {
        sqlx::query("SELECT * FROM templates WHERE tenant_id = ? AND name = ?")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(template_from_row)
            .transpose()
    }

    async fn list_templates(&self, tenant_id: &str) -> StoreResult<Vec<TemplateRecord>> {
        sqlx::query("SELECT * FROM templates WHERE tenant_id = ? ORDER BY created_at, id")
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(template_from_row)
            .collect()
    }

    async fn insert_build(&self, b: &BuildRecord) -> StoreResult<u32> {
        let spec = serde_json::to_string(&b.spec).map_err(|e| StoreError::Corrupt {
            what: "build spec",
            source: Some(e),
        })?;
        // One statement: two concurrent builds never get the same version.
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO template_builds \
             (id, template_id, tenant_id, version, state, spec, error, created_at, started_at, finished_at) \
             VALUES (?, ?, ?, \
             (SELECT COALESCE(MAX(version), 0) + 1 FROM template_builds WHERE template_id = ?), \
             ?, ?, ?, ?, ?, ?) RETURNING version",
        )
        .bind(&b.id)
        .bind(&b.template_id)
        .bind(&b.tenant_id)
        .bind(&b.template_id)
        .bind(b.state.as_str())
        .bind(spec)
        .bind(&b.error)
        .bind(b.created_at)
        .bind(b.started_at)
        .bind(b.finished_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(version as u32)
    }

    async fn update_build(&self, b: &BuildRecord) -> StoreResult<()> {
        sqlx::query(
            "UPDATE template_builds SET state = ?, error = ?, started_at = ?, finished_at = ? \
             WHERE id = ?",
        )
        .bind(b.state.as_str())
        .bind(&b.error)
        .bind(b.started_at)
        .bind(b.finished_at)
        .bind(&b.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_build(&self, id: &str) -> StoreResult<Option<BuildRecord>> {
        sqlx::query("SELECT * FROM template_builds WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(build_from_row)
            .transpose()
    }

    async fn list_builds(&self, template_id: &str) -> StoreResult<Vec<BuildRecord>> {
        sqlx::query("SELECT * FROM template_builds WHERE template_id = ? ORDER BY version DESC")
            .bind(template_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(build_from_row)
            .collect()
    }

    async fn fail_unfinished_builds(&self, error: &str, now: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE template_builds SET state = 'failed', error = ?, finished_at = ? \
             WHERE state NOT IN ('ready', 'failed')",
        )
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn append_event(&self, e: &NewEvent) -> StoreResult<EventRecord> {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO events (id, tenant_id, sandbox_id, type, ts, data) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
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
        let rows = match sandbox_id {
            Some(sid) => {
                sqlx::query(
                    "SELECT * FROM events WHERE sandbox_id = ? AND tenant_id = ? AND seq > ? \
                     ORDER BY seq LIMIT ?",
                )
                .bind(sid)
                .bind(tenant_id)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT * FROM events WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                )
                .bind(tenant_id)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(event_from_row).collect()
    }

    async fn idempotent_response(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>> {
        let row = sqlx::query(
            "SELECT fingerprint, status, body, created_at FROM idempotency \
             WHERE tenant_id = ? AND key = ?",
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
             VALUES (?, ?, ?, ?, ?, ?)",
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
        let r = sqlx::query("DELETE FROM idempotency WHERE created_at < ?")
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE usage_intervals SET ended_at = MAX(?, started_at) \
             WHERE sandbox_id = ? AND ended_at IS NULL",
        )
        .bind(at)
        .bind(sandbox_id)
        .execute(&mut *tx)
        .await?;
        if let Some(u) = next {
            sqlx::query(
                "INSERT INTO usage_intervals (sandbox_id, tenant_id, state, cpu_count, memory_mb, \
                 disk_size_mb, external_workspace_id, external_user_id, external_project_id, \
                 template_id, started_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            )
            .bind(&u.sandbox_id)
            .bind(&u.tenant_id)
            .bind(u.state.as_str())
            .bind(i64::from(u.cpu_count))
            .bind(i64::from(u.memory_mb))
            .bind(i64::from(u.disk_size_mb))
            .bind(&u.external_workspace_id)
            .bind(&u.external_user_id)
            .bind(&u.external_project_id)
            .bind(&u.template_id)
            .bind(u.started_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage_intervals(
        &self,
        tenant_id: &str,
        sandbox_id: Option<&str>,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<UsageInterval>> {
        let mut b = QueryBuilder::new("SELECT * FROM usage_intervals WHERE tenant_id = ");
        b.push_bind(tenant_id);
        if let Some(sid) = sandbox_id {
            b.push(" AND sandbox_id = ").push_bind(sid);
        }
        b.push(" AND started_at < ")
            .push_bind(to)
            .push(" AND (ended_at IS NULL OR ended_at > ")
            .push_bind(from)
            .push(") ORDER BY started_at");
        b.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(usage_from_row)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sandbox(id: &str, tenant: &str, created_at: i64) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            tenant_id: tenant.into(),
            name: None,
            state: SandboxState::Running,
            template_id: "minimal".into(),
            template_version: "1".into(),
            cpu_count: 1,
            memory_mb: 256,
            disk_size_mb: 512,
            timeout_sec: 300,
            idle_timeout_sec: 0,
            always_on: false,
            persistent: false,
            egress: true,
            egress_policy: None,
            egress_policy_updated_at: None,
            env: BTreeMap::from([("A".into(), "1".into())]),
            secret_env: vec![],
            metadata: serde_json::Map::new(),
            tags: vec![],
            external_workspace_id: None,
            external_user_id: None,
            external_project_id: None,
            boot_ms: Some(12),
            boot_path: Some(BootPath::Cold),
            created_at,
            started_at: Some(created_at),
            paused_at: None,
            destroyed_at: None,
            deadline_at: Some(created_at + 300_000),
            last_activity_at: created_at,
        }
    }

    #[tokio::test]
    async fn sandbox_round_trips_and_filters_and_pages() {
        let store = SqliteStore::in_memory().await.expect("store");
        for i in 0..25 {
            let mut s = sandbox(&format!("sbx_{i:02}"), "ten_a", i);
            if i % 2 == 0 {
                s.tags = vec!["even".into(), "x".into()];
                s.external_workspace_id = Some("ws1".into());
            }
            store.insert_sandbox(&s).await.expect("insert");
        }
        store
            .insert_sandbox(&sandbox("sbx_other", "ten_b", 0))
            .await
            .expect("insert");
        let got = store
            .get_sandbox("sbx_03")
            .await
            .expect("get")
            .expect("some");
        assert_eq!(got, sandbox("sbx_03", "ten_a", 3));

        let page = Page {
            page: 2,
            page_size: 10,
        };
        let (list, total) = store
            .list_sandboxes("ten_a", &SandboxFilter::default(), page)
            .await
            .expect("list");
        assert_eq!(total, 25);
        assert_eq!(list.len(), 10);
        assert_eq!(list[0].id, "sbx_14", "newest first, second page");

        let f = SandboxFilter {
            tags: vec!["even".into(), "x".into()],
            external_workspace_id: Some("ws1".into()),
            ..Default::default()
        };
        let (list, total) = store
            .list_sandboxes(
                "ten_a",
                &f,
                Page {
                    page: 1,
                    page_size: 100,
                },
            )
            .await
            .expect("list");
        assert_eq!(total, 13);
        assert!(list.iter().all(|s| s.tags.contains(&"even".to_string())));
        let f = SandboxFilter {
            tags: vec!["even".into(), "nope".into()],
            ..Default::default()
        };
        let (_, total) = store
            .list_sandboxes(
                "ten_a",
                &f,
                Page {
                    page: 1,
                    page_size: 100,
                },
            )
            .await
            .expect("list");
        assert_eq!(total, 0, "every tag must match");
    }

    #[tokio::test]
    async fn live_names_are_unique_per_tenant_but_reusable_after_destroy() {
        let store = SqliteStore::in_memory().await.expect("store");
        let mut a = sandbox("sbx_a", "ten_a", 1);
        a.name = Some("web".into());
        store.insert_sandbox(&a).await.expect("insert");
        let mut b = sandbox("sbx_b", "ten_a", 2);
        b.name = Some("web".into());
        assert!(matches!(
            store.insert_sandbox(&b).await,
            Err(StoreError::Duplicate(_))
        ));
        let mut other = sandbox("sbx_c", "ten_b", 2);
        other.name = Some("web".into());
        store.insert_sandbox(&other).await.expect("other tenant");
        a.state = SandboxState::Destroyed;
        store.update_sandbox(&a).await.expect("update");
        store.insert_sandbox(&b).await.expect("name free again");
        let found = store
            .sandbox_by_name("ten_a", "web")
            .await
            .expect("by name")
            .expect("some");
        assert_eq!(found.id, "sbx_b", "the live one wins");
    }

    #[tokio::test]
    async fn events_are_ordered_and_scoped() {
        let store = SqliteStore::in_memory().await.expect("store");
        for (i, (tenant, sbx)) in [("a", "s1"), ("b", "s2"), ("a", "s3"), ("a", "s1")]
            .into_iter()
            .enumerate()
        {
            store
                .append_event(&NewEvent {
                    id: format!("evt_{i}"),
                    tenant_id: tenant.into(),
                    sandbox_id: Some(sbx.into()),
                    kind: "sandbox.created".into(),
                    ts: i as i64,
                    data: serde_json::json!({"i": i}),
                })
                .await
                .expect("append");
        }
        let all = store.events_after("a", None, 0, 100).await.expect("events");
        assert_eq!(
            all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["evt_0", "evt_2", "evt_3"]
        );
        let after = store
            .events_after("a", Some("s1"), all[0].seq, 100)
            .await
            .expect("events");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].id, "evt_3");
        assert_eq!(after[0].data["i"], 3);
    }

    #[tokio::test]
    async fn usage_intervals_close_and_open() {
        let store = SqliteStore::in_memory().await.expect("store");
        let iv = |state, start| UsageInterval {
            sandbox_id: "s1".into(),
            tenant_id: "a".into(),
            state,
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 1024,
            external_workspace_id: Some("ws".into()),
            external_user_id: None,
            external_project_id: None,
            template_id: "minimal".into(),
            started_at: start,
            ended_at: None,
        };
        store
            .switch_usage("s1", 0, Some(&iv(SandboxState::Running, 0)))
            .await
            .expect("open");
        store
            .switch_usage("s1", 1_000, Some(&iv(SandboxState::Paused, 1_000)))
            .await
            .expect("switch");
        store.switch_usage("s1", 5_000, None).await.expect("close");
        let got = store
            .usage_intervals("a", Some("s1"), 0, 10_000)
            .await
            .expect("usage");
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].started_at, got[0].ended_at), (0, Some(1_000)));
        assert_eq!(
            (got[1].state, got[1].ended_at),
            (SandboxState::Paused, Some(5_000))
        );
        let none = store
            .usage_intervals("b", None, 0, 10_000)
            .await
            .expect("usage");
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn templates_and_numbered_builds() {
        let store = SqliteStore::in_memory().await.expect("store");
        let t = TemplateRecord {
            id: "tpl_1".into(),
            tenant_id: "a".into(),
            name: "web".into(),
            created_at: 1,
        };
        store.insert_template(&t).await.expect("insert");
        let dup = TemplateRecord {
            id: "tpl_2".into(),
            ..t.clone()
        };
        assert!(matches!(
            store.insert_template(&dup).await,
            Err(StoreError::Duplicate(_))
        ));
        let other_tenant = TemplateRecord {
            id: "tpl_3".into(),
            tenant_id: "b".into(),
            ..t.clone()
        };
        store.insert_template(&other_tenant).await.expect("b");
        assert_eq!(
            store.template_by_name("a", "web").await.expect("by name"),
            Some(t.clone())
        );
        assert_eq!(
            store.list_templates("a").await.expect("list"),
            vec![t.clone()]
        );

        let spec = crate::model::BuildSpec {
            from: "minimal".into(),
            from_version: None,
            packages: vec![],
            steps: vec![crate::model::BuildStep::Run("echo hi".into())],
            env: BTreeMap::new(),
            workdir: "/workspace".into(),
            user: None,
            start_cmd: None,
            ready_cmd: Some("true".into()),
            ready_timeout_sec: 60,
            cpu_count: 1,
            memory_mb: 256,
            disk_size_mb: 512,
        };
        let build = |id: &str| BuildRecord {
            id: id.into(),
            template_id: "tpl_1".into(),
            tenant_id: "a".into(),
            version: 0,
            state: BuildState::Queued,
            spec: spec.clone(),
            error: None,
            created_at: 2,
            started_at: None,
            finished_at: None,
        };
        assert_eq!(store.insert_build(&build("bld_1")).await.expect("b1"), 1);
        assert_eq!(store.insert_build(&build("bld_2")).await.expect("b2"), 2);
        let mut b1 = store.get_build("bld_1").await.expect("get").expect("some");
        assert_eq!((b1.version, b1.spec.clone()), (1, spec.clone()));
        b1.state = BuildState::Ready;
        b1.finished_at = Some(9);
        store.update_build(&b1).await.expect("update");
        assert_eq!(
            store
                .fail_unfinished_builds("restarted", 10)
                .await
                .expect("fail"),
            1
        );
        let all = store.list_builds("tpl_1").await.expect("list builds");
        assert_eq!(
            all.iter().map(|b| (b.version, b.state)).collect::<Vec<_>>(),
            vec![(2, BuildState::Failed), (1, BuildState::Ready)]
        );
        assert_eq!(all[0].error.as_deref(), Some("restarted"));
    }
}
