-- A tenant's snapshots listed without naming their sandbox (E2B's
-- `GET /snapshots`).
CREATE INDEX snapshots_tenant ON snapshots(tenant_id, created_at);
