//! The REST API of API.md: one file per resource, handlers that extract,
//! validate, call one `Core` operation and convert the result. This module
//! builds the router and owns the cross-cutting layers: request ids,
//! metrics, authentication, idempotency, and the JSON extractor that turns
//! every bad body into the error envelope.

pub mod audit;
pub mod deployments;
pub mod env;
pub mod events;
pub mod exec;
pub mod files;
pub mod idempotency;
pub mod keys;
pub mod network;
pub mod nodes;
pub mod openapi;
pub mod previews;
pub mod processes;
pub mod query;
pub mod quotas;
pub mod request_id;
pub mod sandboxes;
pub mod scopes;
pub mod secrets;
pub mod snapshots;
pub mod sse;
pub mod system;
pub mod templates;
pub mod tokens;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;

use crate::core::keys::Caller;
use crate::core::Core;
use crate::error::{ApiError, FieldError};
use crate::ratelimit::Limiter;

pub type AppState = Arc<Core>;

/// Every route with its part of the OpenAPI document: those under
/// `/api/v1` (they want an API key) and those at the root (public). The
/// router ([`router`]) and the document ([`document`]) are both built
/// from this one list, so they cannot differ (see [`openapi`]).
pub fn routes() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let api = OpenApiRouter::new()
        .merge(sandboxes::routes())
        .merge(network::routes())
        .merge(snapshots::routes())
        .merge(previews::routes())
        .merge(templates::routes())
        .merge(exec::routes())
        .merge(processes::routes())
        .merge(files::routes())
        .merge(env::routes())
        .merge(events::routes())
        .merge(keys::routes())
        .merge(quotas::routes())
        .merge(secrets::routes())
        .merge(tokens::routes())
        .merge(audit::routes())
        .merge(deployments::routes())
        .merge(nodes::routes())
        .merge(system::authed_routes());
    (api, system::public_routes())
}

/// The whole HTTP application.
pub fn router(core: AppState) -> Router {
    let (api, public) = routes();
    let limits = KeyLimits {
        core: core.clone(),
        limiter: Arc::new(Limiter::new(
            core.config.api_rps,
            core.config.api_burst,
            MAX_LIMITED_KEYS,
        )),
    };
    // Inside out: forwarding to the node that runs the sandbox,
    // idempotency (kept by the node the request came to), authentication
    // (a bad key never leaves this node).
    let api = api
        .route_layer(middleware::from_fn_with_state(
            core.clone(),
            crate::cluster::api_layer,
        ))
        .route_layer(middleware::from_fn_with_state(
            core.clone(),
            idempotency::layer,
        ))
        .route_layer(middleware::from_fn_with_state(limits.clone(), authenticate));
    // Outermost: it sees the caller the authentication layer found.
    let api = api.route_layer(middleware::from_fn_with_state(core.clone(), audit::layer));
    // E2B's control API: the same keys, limits and audit log.
    let e2b = crate::e2b::control::router()
        .route_layer(middleware::from_fn_with_state(
            core.clone(),
            crate::cluster::api_layer,
        ))
        .route_layer(middleware::from_fn_with_state(limits, authenticate))
        .route_layer(middleware::from_fn_with_state(core.clone(), audit::layer));
    let (app, _) = OpenApiRouter::new()
        .nest("/api/v1", api)
        .merge(public)
        .split_for_parts();
    app.nest("/e2b", e2b)
        .merge(crate::cluster::transfer::router())
        .fallback(|| async { ApiError::not_found("route") })
        .layer(middleware::from_fn_with_state(core.clone(), observe))
        .layer(middleware::from_fn(request_id::layer))
        // Outermost: a forwarding node's header is checked and stripped
        // before anything reads the request.
        .layer(middleware::from_fn_with_state(
            core.clone(),
            crate::cluster::accept_layer,
        ))
        // Bodies are limited where they are read (ApiJson, raw uploads).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(core)
}

/// The OpenAPI document of [`router`]'s routes, before
/// [`openapi::finish`].
pub fn document() -> utoipa::openapi::OpenApi {
    let (api, public) = routes();
    OpenApiRouter::with_openapi(openapi::base())
        .nest("/api/v1", api)
        .merge(public)
        .into_openapi()
}

/// Records the request's duration under its route template.
async fn observe(State(core): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    core.metrics
        .observe_request(&method, &route, resp.status().as_u16(), ms);
    tracing::debug!(%method, %route, status = resp.status().as_u16(), ms, "request");
    resp
}

/// Keys whose request rate is remembered at most (idle ones go first).
const MAX_LIMITED_KEYS: usize = 100_000;

/// What [`authenticate`] needs: the core, and each key's token bucket.
#[derive(Clone)]
struct KeyLimits {
    core: AppState,
    limiter: Arc<Limiter<String>>,
}

/// `Authorization: Bearer hk_...` (or `X-API-Key`) to a [`Caller`] in the
/// request's extensions; 401 without a valid key, 429 with `Retry-After`
/// past the key's rate (its tenant's `requests_per_sec` quota, else
/// `api_rps` with bursts of `api_burst`).
async fn authenticate(
    State(KeyLimits { core, limiter }): State<KeyLimits>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(key) = presented_key(req.headers()) else {
        return ApiError::unauthorized("missing API key (Authorization: Bearer <key>)")
            .into_response();
    };
    match core.authenticate(&key).await {
        Ok(caller) => {
            let rate = match core.request_rate(&caller.tenant_id).await {
                Ok(r) => r,
                Err(e) => return ApiError::from(e).into_response(),
            };
            // A forwarded request was counted by the node it came to.
            let forwarded = req
                .extensions()
                .get::<crate::cluster::Forwarded>()
                .is_some();
            if rate.per_sec > 0 && !forwarded {
                let now = Instant::now();
                let taken = limiter.take_with(caller.key_id.clone(), rate.per_sec, rate.burst, now);
                if let Err(wait) = taken {
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    return ApiError::from(crate::core::error::Error::rate_limited(secs.max(1)))
                        .into_response();
                }
            }
            if caller.scope.is_some() {
                if let Err(e) = token_may(&caller, &req) {
                    // The audit layer records the denial under the caller.
                    let mut resp = e.into_response();
                    resp.extensions_mut().insert(caller);
                    return resp;
                }
            }
            req.extensions_mut().insert(caller.clone());
            let mut resp = next.run(req).await;
            resp.extensions_mut().insert(caller);
            resp
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// A scoped token's request: 403 unless its route is open to tokens and
/// the token holds every scope the route needs.
fn token_may(caller: &Caller, req: &Request) -> Result<(), ApiError> {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str())
        .unwrap_or("");
    let route = route.strip_prefix("/api/v1").unwrap_or(route);
    let Some(needed) = scopes::required(req.method(), route) else {
        return Err(ApiError::forbidden(format!(
            "scoped tokens cannot use {} {route}",
            req.method()
        )));
    };
    for s in needed {
        caller.require(s)?;
    }
    Ok(())
}

/// The API key a request presents: `Authorization: Bearer <key>`, else
/// `X-API-Key: <key>`.
pub(crate) fn presented_key(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(|s| s.trim().to_string())
}

/// The authenticated caller of a route, as [`authenticate`] found it:
/// handlers take `Auth(caller): Auth`.
#[derive(Debug, Clone)]
pub struct Auth(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Auth, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Auth)
            .ok_or_else(|| ApiError::unauthorized("missing API key"))
    }
}

/// A query string parsed into `T`. A value that does not fit (a repeated
/// key, a wrong type) is a 422 naming the field, in the JSON envelope, never
/// axum's plain-text 400. Handlers bound each value themselves.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(raw).map(ApiQuery).map_err(|e| {
            let msg = e.to_string();
            // serde names the field between backticks ("duplicate field `state`").
            let field = msg.split('`').nth(1).unwrap_or("query").to_string();
            ApiError::field(&field, msg)
        })
    }
}

/// Tells "absent" (`None`) from "null" (`Some(None)`) in a body field
/// (`#[serde(default, deserialize_with = "double_option")]`).
pub(crate) fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    <Option<String> as serde::Deserialize>::deserialize(d).map(Some)
}

/// A free-text query filter: at most `max` bytes, no control characters.
pub fn query_text(
    bad: &mut Vec<FieldError>,
    field: &str,
    v: Option<String>,
    max: usize,
) -> Option<String> {
    let v = v.filter(|s| !s.is_empty())?;
    if v.len() > max || v.chars().any(char::is_control) {
        bad.push(FieldError::new(
            field,
            format!("must be at most {max} bytes without control characters"),
        ));
        return None;
    }
    Some(v)
}

/// A JSON body: size-limited (413), parsed with the path of the first bad
/// field (422 naming it), syntax errors 400. An empty body is `{}`, so
/// routes whose fields are all optional accept no body at all. Unknown
/// fields are ignored (API.md).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_json_body_bytes;
        let bytes = read_limited(req.into_body(), limit).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Reads a whole body, refusing (413) past `limit` bytes without reading
/// the rest.
pub async fn read_limited(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large(limit))
        }
        Err(e) => Err(ApiError::bad_request(format!("read request body: {e}"))),
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!("malformed JSON: {inner}"));
        }
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        // serde's message carries "at line 1 column 9"; the field says where.
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        ApiError::validation(vec![FieldError::new(field, msg)])
    })
}

/// `{"data": value}`.
pub fn data<T: Serialize>(value: T) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "data": value }))
}

/// `{"data": [...], "page": {page, page_size, total}}`.
pub fn page<T: Serialize>(
    items: Vec<T>,
    page: u32,
    page_size: u32,
    total: u64,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "data": items,
        "page": { "page": page, "page_size": page_size, "total": total },
    }))
}

/// `page` and `page_size` from a query, checked against API.md's limits.
#[derive(Debug, Clone, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number, from 1 (default 1).
    #[param(value_type = u32, required = false, minimum = 1)]
    pub page: Option<String>,
    /// Items per page, 1-100 (default 20).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 100)]
    pub page_size: Option<String>,
}

pub fn parse_page(
    page: Option<&str>,
    page_size: Option<&str>,
) -> Result<crate::model::Page, ApiError> {
    let mut bad = Vec::new();
    let page_n = match page {
        None | Some("") => 1,
        Some(p) => match p.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                bad.push(FieldError::new("page", "must be an integer >= 1"));
                1
            }
        },
    };
    let size = match page_size {
        None | Some("") => 20,
        Some(p) => match p.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                bad.push(FieldError::new("page_size", "must be an integer 1-100"));
                20
            }
        },
    };
    if bad.is_empty() {
        Ok(crate::model::Page {
            page: page_n,
            page_size: size,
        })
    } else {
        Err(ApiError::validation(bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        cpu_count: Option<u32>,
        name: Option<String>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<Body>(br#"{"cpu_count": "two"}"#).expect_err("type error");
        assert_eq!(e.status, http::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.details[0].field, "cpu_count");
        let e = parse_json::<Body>(br#"{"cpu_count": 1"#).expect_err("syntax");
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        let ok = parse_json::<Body>(b"").expect("empty is {}");
        assert!(ok.cpu_count.is_none());
        let ok =
            parse_json::<Body>(br#"{"auto_start": true, "name": "x"}"#).expect("unknown ignored");
        assert_eq!(ok.name.as_deref(), Some("x"));
    }

    #[test]
    fn pages_are_checked() {
        let p = parse_page(None, None).expect("defaults");
        assert_eq!((p.page, p.page_size), (1, 20));
        let e = parse_page(Some("0"), Some("101")).expect_err("both bad");
        assert_eq!(e.details.len(), 2);
    }
}
