//! The `Idempotency-Key` layer (also `idempotency_key` in a JSON body) on
//! every POST, PATCH and DELETE. Streamed uploads and event-stream answers
//! pass through untouched: neither can be replayed from a stored copy. The
//! node a request came to keeps its record; a node it was forwarded to
//! does not keep another.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use super::{read_limited, AppState};
use crate::core::keys::idempotency::{fingerprint, Decision};
use crate::core::keys::Caller;

/// Largest response kept for replay.
const MAX_STORED_RESPONSE: usize = 4 << 20;

pub async fn layer(State(core): State<AppState>, req: Request, next: Next) -> Response {
    let forwarded = req
        .extensions()
        .get::<crate::cluster::Forwarded>()
        .is_some();
    if forwarded || !matches!(*req.method(), Method::POST | Method::PATCH | Method::DELETE) {
        return next.run(req).await;
    }
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return next.run(req).await;
    };
    let is_json = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("application/json"));
    let header_key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !is_json {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match read_limited(body, core.config.max_json_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let key = header_key.or_else(|| {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("idempotency_key")?.as_str().map(str::to_string))
    });
    let req = Request::from_parts(parts, Body::from(bytes.clone()));
    let Some(key) = key else {
        return next.run(req).await;
    };
    let fp = fingerprint(req.method().as_str(), req.uri().path(), &bytes);
    let claim = match core.idempotency_begin(&caller.tenant_id, &key, fp).await {
        Ok(Decision::Replay(stored)) => {
            let mut resp = (
                StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
                stored.body,
            )
                .into_response();
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            h.insert(
                "idempotent-replayed",
                http::HeaderValue::from_static("true"),
            );
            return resp;
        }
        Ok(Decision::Run(claim)) => claim,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    let resp = next.run(req).await;
    let streaming = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    // Failures of the server are not final: a retry may run again.
    if streaming || resp.status().is_server_error() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_STORED_RESPONSE)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            tracing::warn!(error = %e, "response too large to keep for replay");
            return crate::error::ApiError::internal(anyhow::anyhow!("response body: {e}"))
                .into_response();
        }
    };
    core.idempotency_store(claim, parts.status.as_u16(), bytes.to_vec())
        .await;
    Response::from_parts(parts, Body::from(bytes))
}
