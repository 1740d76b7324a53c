//! Which scopes a scoped token needs for each route. Checked once, in the
//! authentication layer, from the matched route: a route not listed here
//! is closed to tokens (keys, tokens, quotas, secrets, templates, the
//! tenant-wide event stream), so a route added later is safe until it is
//! given a scope. Which sandboxes a token sees is core's business
//! (`Caller::sees`).

use axum::http::Method;

const CREATE: &str = "sandboxes:create";
const READ: &str = "sandboxes:read";
const WRITE: &str = "sandboxes:write";
pub const EXEC: &str = "sandboxes:exec";
pub const FILES_READ: &str = "sandboxes:files:read";
pub const FILES_WRITE: &str = "sandboxes:files:write";
const DESTROY: &str = "sandboxes:destroy";
const PREVIEWS: &str = "previews:write";
const SNAPSHOTS: &str = "snapshots:write";

/// The scopes `method route` needs (`route` as matched, without
/// `/api/v1`); `None` when tokens may not use it at all.
pub fn required(method: &Method, route: &str) -> Option<&'static [&'static str]> {
    if let Some(e2b) = route.strip_prefix("/e2b") {
        return e2b_required(method, e2b);
    }
    let get = method == Method::GET || method == Method::HEAD;
    if route == "/sandboxes" {
        return match *method {
            Method::POST => Some(&[CREATE]),
            Method::GET => Some(&[READ]),
            _ => None,
        };
    }
    let rest = route.strip_prefix("/sandboxes/{id}")?;
    let sub = rest.strip_prefix('/').unwrap_or(rest);
    let first = sub.split('/').next().unwrap_or("");
    Some(match (first, get) {
        ("", _) => match *method {
            Method::GET => &[READ],
            Method::PATCH => &[WRITE],
            Method::DELETE => &[DESTROY],
            _ => return None,
        },
        ("events" | "usage" | "readiness", true) => &[READ],
        ("env" | "network-policy", true) => &[READ],
        ("env" | "network-policy" | "pause" | "resume" | "extend", false) => &[WRITE],
        ("exec" | "processes" | "terminals", _) => &[EXEC],
        ("files" | "fs" | "exports", true) => &[FILES_READ],
        ("files" | "fs", false) if sub.ends_with("/stat") => &[FILES_READ],
        ("files" | "fs", false) => &[FILES_WRITE],
        ("snapshots" | "previews" | "share-tokens", true) => &[READ],
        ("snapshots" | "restore", false) => &[SNAPSHOTS],
        ("fork", false) => &[SNAPSHOTS, CREATE],
        ("previews" | "expose" | "preview-token" | "share-tokens", false) => &[PREVIEWS],
        _ => return None,
    })
}

/// The same scopes for E2B's control API (`/e2b/...`). What it hands out
/// for envd (`envdAccessToken`) goes only to callers that hold the exec
/// and file scopes (see `e2b::control`).
fn e2b_required(method: &Method, route: &str) -> Option<&'static [&'static str]> {
    let route = route.strip_prefix("/v2").unwrap_or(route);
    let get = method == Method::GET;
    match (route, get) {
        ("/sandboxes", false) if method == Method::POST => return Some(&[CREATE]),
        ("/sandboxes" | "/snapshots", true) => return Some(&[READ]),
        ("/templates/{id}", false) if method == Method::DELETE => return Some(&[SNAPSHOTS]),
        _ => {}
    }
    let sub = route.strip_prefix("/sandboxes/{id}")?;
    Some(match (sub, get) {
        ("" | "/metrics" | "/logs", true) => &[READ],
        ("", false) if method == Method::DELETE => &[DESTROY],
        ("/timeout" | "/refreshes" | "/pause" | "/resume" | "/connect" | "/network", false) => {
            &[WRITE]
        }
        ("/snapshots", false) => &[SNAPSHOTS],
        ("/fork", false) => &[SNAPSHOTS, CREATE],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2b_routes_map_to_the_same_scopes() {
        let cases: &[(Method, &str, Option<&[&str]>)] = &[
            (Method::POST, "/e2b/sandboxes", Some(&[CREATE])),
            (Method::POST, "/e2b/v2/sandboxes", Some(&[CREATE])),
            (Method::GET, "/e2b/v2/sandboxes", Some(&[READ])),
            (Method::GET, "/e2b/sandboxes/{id}", Some(&[READ])),
            (Method::DELETE, "/e2b/sandboxes/{id}", Some(&[DESTROY])),
            (Method::POST, "/e2b/sandboxes/{id}/pause", Some(&[WRITE])),
            (Method::PUT, "/e2b/sandboxes/{id}/network", Some(&[WRITE])),
            (
                Method::POST,
                "/e2b/v2/sandboxes/{id}/connect",
                Some(&[WRITE]),
            ),
            (
                Method::POST,
                "/e2b/sandboxes/{id}/fork",
                Some(&[SNAPSHOTS, CREATE]),
            ),
            (Method::DELETE, "/e2b/templates/{id}", Some(&[SNAPSHOTS])),
            (Method::GET, "/e2b/templates", None),
            (Method::POST, "/e2b/templates/{id}", None),
        ];
        for (m, route, want) in cases {
            assert_eq!(required(m, route), *want, "{m} {route}");
        }
    }

    #[test]
    fn routes_map_to_their_scopes_and_the_rest_is_closed() {
        let cases: &[(Method, &str, Option<&[&str]>)] = &[
            (Method::POST, "/sandboxes", Some(&[CREATE])),
            (Method::GET, "/sandboxes", Some(&[READ])),
            (Method::GET, "/sandboxes/{id}", Some(&[READ])),
            (Method::DELETE, "/sandboxes/{id}", Some(&[DESTROY])),
            (Method::POST, "/sandboxes/{id}/exec", Some(&[EXEC])),
            (
                Method::GET,
                "/sandboxes/{id}/terminals/{tid}/ws",
                Some(&[EXEC]),
            ),
            (
                Method::GET,
                "/sandboxes/{id}/files/read",
                Some(&[FILES_READ]),
            ),
            (Method::POST, "/sandboxes/{id}/fs/stat", Some(&[FILES_READ])),
            (
                Method::POST,
                "/sandboxes/{id}/fs/write",
                Some(&[FILES_WRITE]),
            ),
            (Method::PUT, "/sandboxes/{id}/fs/raw", Some(&[FILES_WRITE])),
            (
                Method::POST,
                "/sandboxes/{id}/fork",
                Some(&[SNAPSHOTS, CREATE]),
            ),
            (
                Method::POST,
                "/sandboxes/{id}/previews/{prv}/share",
                Some(&[PREVIEWS]),
            ),
            (Method::POST, "/sandboxes/{id}/pause", Some(&[WRITE])),
            (Method::POST, "/api-keys", None),
            (Method::POST, "/tokens/scoped", None),
            (Method::GET, "/egress/secrets", None),
            (Method::GET, "/events/stream", None),
            (Method::PUT, "/tenants/{id}/quotas", None),
            (Method::POST, "/sandbox-templates", None),
            (Method::POST, "/sandboxes/{id}/something-new", None),
        ];
        for (m, route, want) in cases {
            assert_eq!(required(m, route), *want, "{m} {route}");
        }
    }
}
