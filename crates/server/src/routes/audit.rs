//! The audit log over HTTP: the layer that records every mutating request
//! and every denied one (403) under the caller the authentication layer
//! found, and `GET /audit-log` (pages after a cursor) and
//! `GET /audit-log/export` (NDJSON) to read the tenant's. A handler adds
//! what only it knows (the id it created, a command) as an [`AuditNote`]
//! in its answer's extensions.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{AUDIT, E422};
use super::{query_text, ApiQuery, AppState};
use crate::core::audit::{NewAudit, MAX_PAGE};
use crate::core::clock::rfc3339;
use crate::core::keys::Caller;
use crate::core::store::AuditFilter;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::AuditRecord;
use crate::routes::Auth;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(export))
}

/// What a handler adds to its request's audit entry.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// The resource it made (a new sandbox's id), when the path has none.
    pub resource: Option<(&'static str, String)>,
    /// Merged into the entry's details (never a secret's value).
    pub details: Map<String, Value>,
}

impl AuditNote {
    pub fn created(kind: &'static str, id: impl Into<String>) -> AuditNote {
        AuditNote {
            resource: Some((kind, id.into())),
            details: Map::new(),
        }
    }

    pub fn detail(mut self, key: &str, v: impl Into<Value>) -> AuditNote {
        self.details.insert(key.to_string(), v.into());
        self
    }
}

/// The entry's type: `sandbox.exec`, `secret.rotate`, ...; `request` for
/// a route this table does not name.
pub fn kind_of(method: &Method, route: &str) -> &'static str {
    let m = method.as_str();
    if let Some(rest) = route.strip_prefix("/sandboxes/{id}") {
        let sub = rest.strip_prefix('/').unwrap_or(rest);
        let first = sub.split('/').next().unwrap_or("");
        return match (m, first) {
            ("PATCH", "") => "sandbox.update",
            ("DELETE", "") => "sandbox.destroy",
            ("POST", "exec") => "sandbox.exec",
            ("POST", "pause") => "sandbox.pause",
            ("POST", "resume") => "sandbox.resume",
            ("POST", "extend") => "sandbox.extend",
            ("POST", "fork") => "sandbox.fork",
            ("POST", "deploy") => "deployment.publish",
            (_, "env") => "sandbox.env",
            (_, "network-policy") => "sandbox.network",
            ("POST", "processes") if sub == "processes" => "process.start",
            ("DELETE", "processes") => "process.kill",
            ("POST", "processes") if sub.ends_with("/signal") => "process.signal",
            ("POST", "processes") if sub.ends_with("/stdin") => "process.stdin",
            ("POST", "terminals") => "terminal.open",
            ("DELETE", "terminals") => "terminal.close",
            ("GET", "terminals") => "terminal.attach",
            ("POST", "fs") if sub.ends_with("/remove") => "file.remove",
            ("POST", "fs") if sub.ends_with("/rename") => "file.rename",
            ("POST", "fs") if sub.ends_with("/mkdir") => "file.mkdir",
            ("POST" | "PUT", "files" | "fs") if !sub.ends_with("/stat") => "file.write",
            ("POST", "snapshots") => "snapshot.create",
            ("DELETE", "snapshots") => "snapshot.delete",
            ("POST", "restore") => "snapshot.restore",
            ("POST", "previews") if sub.ends_with("/share") => "share.create",
            ("DELETE", "previews") if sub.contains("/share") => "share.revoke",
            ("POST", "previews" | "expose") => "preview.create",
            ("DELETE", "previews") => "preview.delete",
            ("POST", "preview-token") => "share.create",
            ("DELETE", "share-tokens") => "share.revoke",
            _ => "request",
        };
    }
    if let Some(rest) = route.strip_prefix("/deployments/{id}") {
        return match (m, rest) {
            ("PATCH", "") => "deployment.update",
            ("DELETE", "") => "deployment.delete",
            ("POST", "/publish") => "deployment.publish",
            ("POST", "/stop") => "deployment.stop",
            ("POST", "/redeploy") => "deployment.redeploy",
            ("POST", "/rollback") => "deployment.rollback",
            ("POST", "/versions/{vid}/promote") => "deployment.promote",
            ("PUT", "/env") => "deployment.env",
            ("POST", "/domains") => "domain.add",
            ("POST", "/domains/{did}/verify") => "domain.verify",
            ("DELETE", "/domains/{did}") => "domain.delete",
            _ => "request",
        };
    }
    match (m, route) {
        ("POST", "/sandboxes") => "sandbox.create",
        ("POST", "/egress/secrets") => "secret.create",
        ("PATCH", "/egress/secrets/{id}") => "secret.rotate",
        ("DELETE", "/egress/secrets/{id}") => "secret.delete",
        ("POST", "/egress/bindings") => "binding.create",
        ("DELETE", "/egress/bindings/{id}") => "binding.delete",
        ("POST", "/api-keys") => "api_key.create",
        ("DELETE", "/api-keys/{id}") => "api_key.revoke",
        ("POST", "/tokens/scoped") => "token.mint",
        ("DELETE", "/tokens/scoped/{id}") => "token.revoke",
        ("PUT", "/tenants/{id}/quotas") => "quota.update",
        _ => "request",
    }
}

/// The resource a route's path names: `(type, id)`, the id read from
/// the path where the route has `{id}`.
fn resource_of(route: &str, path: &str) -> Option<(&'static str, String)> {
    let kind = [
        ("/sandboxes/{id}", "sandbox"),
        ("/egress/secrets/{id}", "secret"),
        ("/deployments/{id}", "deployment"),
        ("/egress/bindings/{id}", "binding"),
        ("/api-keys/{id}", "api_key"),
        ("/tokens/scoped/{id}", "token"),
        ("/tenants/{id}", "tenant"),
    ]
    .into_iter()
    .find(|(prefix, _)| route.starts_with(prefix))?
    .1;
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(r, _)| *r == "{id}")
        .map(|(_, id)| (kind, id.to_string()))
}

/// Whether a request is written to the log: any that changes something,
/// a terminal attach, and any the server denied.
fn recorded(method: &Method, route: &str, status: u16) -> bool {
    status == 403
        || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || route.ends_with("/ws")
}

/// Records the request after it is answered.
pub async fn layer(State(core): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let full = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    let ip = crate::cluster::client_ip(&req).map(|ip| ip.to_string());
    let request_id = super::request_id::current();
    let mut resp = next.run(req).await;
    let Some(caller) = resp.extensions_mut().remove::<Caller>() else {
        // Not authenticated (401): no tenant to file it under.
        return resp;
    };
    if resp
        .extensions()
        .get::<crate::cluster::ForwardedOut>()
        .is_some()
    {
        // The node that served it recorded it.
        return resp;
    }
    let route = full.strip_prefix("/api/v1").unwrap_or(&full).to_string();
    let status = resp.status().as_u16();
    if !recorded(&method, &route, status) {
        return resp;
    }
    let note = resp
        .extensions_mut()
        .remove::<AuditNote>()
        .unwrap_or_default();
    let (outcome, error_code) = match status {
        200..=399 => ("ok", None),
        401 | 403 => ("denied", Some(error_code(status))),
        _ => ("error", Some(error_code(status))),
    };
    let (resource_type, resource_id) = match resource_of(&route, &path).or(note.resource) {
        Some((k, id)) => (Some(k.to_string()), Some(id)),
        None => (None, None),
    };
    let mut details = note.details;
    details.insert("method".into(), json!(method.as_str()));
    details.insert("route".into(), json!(route));
    details.insert("status".into(), json!(status));
    core.record_audit(
        &caller,
        NewAudit {
            kind: kind_of(&method, &route).to_string(),
            resource_type,
            resource_id,
            request_id: Some(request_id),
            ip,
            outcome,
            error_code,
            details: Value::Object(details),
        },
    )
    .await;
    resp
}

/// The error code a status stands for (the body is streamed on, unread).
fn error_code(status: u16) -> String {
    match status {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        413 => "payload_too_large",
        422 => "validation_error",
        429 => "rate_limited",
        507 => "insufficient_storage",
        s if s >= 500 => "internal",
        _ => "bad_request",
    }
    .to_string()
}

fn view(e: &AuditRecord) -> Value {
    json!({
        "id": e.id,
        "cursor": e.seq.to_string(),
        "type": e.kind,
        "actor_type": e.actor_type,
        "actor_id": e.actor_id,
        "tenant_id": e.tenant_id,
        "resource_type": e.resource_type,
        "resource_id": e.resource_id,
        "request_id": e.request_id,
        "ip": e.ip,
        "at": rfc3339(e.at),
        "outcome": e.outcome,
        "error_code": e.error_code,
        "details": e.details,
    })
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries after this cursor (a previous page's `next_cursor`).
    #[param(value_type = u64, required = false)]
    pub after: Option<String>,
    /// Entries per page, 1-1000 (default 100).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Only entries of this type (`sandbox.exec`, ...).
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = String, required = false, max_length = 64)]
    pub kind: Option<String>,
    /// Only this actor's (a key's or token's id).
    #[param(value_type = String, required = false, max_length = 64)]
    pub actor_id: Option<String>,
    /// Only entries about this type of resource (`sandbox`, `secret`, ...).
    #[param(value_type = String, required = false, max_length = 32)]
    pub resource_type: Option<String>,
    /// Only entries about this resource.
    #[param(value_type = String, required = false, max_length = 256)]
    pub resource_id: Option<String>,
}

impl AuditQuery {
    fn parse(self) -> ApiResult<(AuditFilter, i64, u32)> {
        let mut bad = Vec::new();
        let after = match self.after.as_deref().map(str::trim) {
            None | Some("") => 0,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .unwrap_or_else(|| {
                    bad.push(FieldError::new(
                        "after",
                        "must be a cursor (an integer >= 0)",
                    ));
                    0
                }),
        };
        let limit = match self.limit.as_deref().map(str::trim) {
            None | Some("") => 100,
            Some(s) => s
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .unwrap_or_else(|| {
                    bad.push(FieldError::new("limit", format!("must be 1-{MAX_PAGE}")));
                    100
                }),
        };
        let f = AuditFilter {
            kind: query_text(&mut bad, "type", self.kind, 64),
            actor_id: query_text(&mut bad, "actor_id", self.actor_id, 64),
            resource_type: query_text(&mut bad, "resource_type", self.resource_type, 32),
            resource_id: query_text(&mut bad, "resource_id", self.resource_id, 256),
        };
        if bad.is_empty() {
            Ok((f, after, limit))
        } else {
            Err(ApiError::validation(bad))
        }
    }
}

#[utoipa::path(
    get,
    path = "/audit-log",
    tag = AUDIT,
    summary = "The tenant's audit log, oldest first after a cursor",
    description = "Answers `{data: [{id, type, actor_type, actor_id, tenant_id, resource_type, \
                   resource_id, request_id, ip, at, outcome, error_code, details}], next_cursor}`; \
                   `next_cursor` is null on the last page.",
    params(AuditQuery),
    responses((status = 200, description = "OK"), E422),
)]
async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let (filter, after, limit) = q.parse()?;
    let (list, next) = state.audit_log(&caller, &filter, after, limit).await?;
    Ok(axum::Json(json!({
        "data": list.iter().map(view).collect::<Vec<_>>(),
        "next_cursor": next.map(|n| n.to_string()),
    })))
}

#[utoipa::path(
    get,
    path = "/audit-log/export",
    tag = AUDIT,
    summary = "The tenant's audit log as NDJSON (one entry per line), after a cursor",
    params(AuditQuery),
    responses((status = 200, description = "NDJSON", content_type = "application/x-ndjson"), E422),
)]
async fn export(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    let (filter, mut after, _) = q.parse()?;
    let stream = async_stream_pages(move |tx| async move {
        loop {
            let Ok((page, next)) = state.audit_log(&caller, &filter, after, MAX_PAGE).await else {
                return;
            };
            let mut chunk = String::new();
            for e in &page {
                chunk.push_str(&view(e).to_string());
                chunk.push('\n');
            }
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            match next {
                Some(n) => after = n,
                None => return,
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A body fed page by page by a task; it stops when the client goes.
fn async_stream_pages<F, Fut>(
    f: F,
) -> tokio_stream::wrappers::ReceiverStream<Result<String, std::convert::Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<String, std::convert::Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_comes_from_the_routes_id_segment() {
        assert_eq!(
            resource_of("/sandboxes/{id}/fs/write", "/sandboxes/sbx_1/fs/write"),
            Some(("sandbox", "sbx_1".into()))
        );
        assert_eq!(
            resource_of("/tokens/scoped/{id}", "/api/v1/tokens/scoped/stk_2"),
            Some(("token", "stk_2".into()))
        );
        assert_eq!(resource_of("/sandboxes", "/sandboxes"), None);
        assert_eq!(
            kind_of(&Method::POST, "/sandboxes/{id}/fs/rename"),
            "file.rename"
        );
        assert_eq!(
            kind_of(&Method::POST, "/sandboxes/{id}/processes/{pid}/signal"),
            "process.signal"
        );
        assert_eq!(
            kind_of(
                &Method::DELETE,
                "/sandboxes/{id}/previews/{prv}/share/{token_id}"
            ),
            "share.revoke"
        );
        assert_eq!(kind_of(&Method::POST, "/sandbox-templates"), "request");
        assert_eq!(
            kind_of(&Method::POST, "/deployments/{id}/rollback"),
            "deployment.rollback"
        );
        assert_eq!(
            kind_of(&Method::POST, "/deployments/{id}/domains/{did}/verify"),
            "domain.verify"
        );
        assert_eq!(
            kind_of(&Method::PUT, "/deployments/{id}/env"),
            "deployment.env"
        );
        assert_eq!(
            kind_of(&Method::POST, "/sandboxes/{id}/deploy"),
            "deployment.publish"
        );
        assert_eq!(
            resource_of("/deployments/{id}/stop", "/deployments/dep_1/stop"),
            Some(("deployment", "dep_1".into()))
        );
    }
}
