//! Every request gets an id (`req_...`, or the client's `X-Request-Id` when
//! it is sane), carried in a task-local so errors can name it, returned in
//! the `X-Request-Id` header, and attached to the request's log span.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use tracing::Instrument;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id (`req_unknown` outside a request).
pub fn current() -> String {
    REQUEST_ID
        .try_with(|id| id.clone())
        .unwrap_or_else(|_| "req_unknown".to_string())
}

fn client_id(req: &Request) -> Option<String> {
    let v = req.headers().get("x-request-id")?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| v.to_string())
}

pub async fn layer(req: Request, next: Next) -> Response {
    let id = client_id(&req).unwrap_or_else(|| crate::core::ids::new_id("req"));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = REQUEST_ID
        .scope(id.clone(), next.run(req).instrument(span))
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
