//! The small HTML pages the preview proxy answers with when it cannot
//! forward a request: they say what happened in words a person in a
//! browser (often inside an iframe) understands, and name no other preview.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A page with `status`, a title and one paragraph.
pub fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;\
         padding:0 1rem;color:#222}}h1{{font-size:1.3rem}}p{{color:#555}}</style></head>\
         <body><h1>{t}</h1><p>{m}</p><p><small>Hearth preview · {code}</small></p></body></html>\n",
        t = escape(title),
        m = escape(message),
        code = status.as_u16(),
    );
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `303 See Other` to `location` (the same page without the share token
/// in its URL), stored by no cache and sending no `Referer` onwards.
pub fn see_other(location: &str) -> Response {
    let mut resp = page(
        StatusCode::SEE_OTHER,
        "Opening the preview",
        "The share link worked; your browser goes on to the preview.",
    );
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

pub fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "No preview here",
        "This address does not belong to any preview. Check the link you were given.",
    )
}

pub fn private() -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        "This preview is private",
        "Open it with a share link, or with an API key of the sandbox's owner.",
    )
}

pub fn token_expired() -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        "This link has expired",
        "The share link's time is up. Ask for a new one.",
    )
}

pub fn token_revoked() -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        "This link was revoked",
        "The owner of the preview revoked this share link. Ask for a new one.",
    )
}

pub fn token_invalid() -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        "This link is not valid here",
        "The token in the link does not open this preview.",
    )
}

pub fn app_not_running(port: u16) -> Response {
    page(
        StatusCode::BAD_GATEWAY,
        "The app is not running yet",
        &format!(
            "Nothing in the sandbox listens on port {port} yet. Start the app (or wait for it \
             to start) and reload."
        ),
    )
}

pub fn sandbox_down(state: &str) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The sandbox is not running",
        &format!("The sandbox behind this preview is {state}."),
    )
}

pub fn bad_gateway(why: &str) -> Response {
    page(
        StatusCode::BAD_GATEWAY,
        "The app did not answer properly",
        &format!("The request reached the sandbox, but: {why}"),
    )
}

pub fn timeout(secs: u64) -> Response {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        "The app took too long",
        &format!("The app in the sandbox did not start answering within {secs} s."),
    )
}

pub fn too_large(limit: u64) -> Response {
    page(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request too large",
        &format!("Request bodies are limited to {limit} bytes here."),
    )
}

pub fn rate_limited() -> Response {
    let mut r = page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        "This public preview limits how fast one client may ask. Slow down and retry.",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
