//! Hearth's credentials on a preview request, taken out before anything
//! reaches the guest app: API keys (`Authorization` with an `hk_` key of
//! any tenant, valid or not; `X-API-Key`), and share tokens (the
//! `preview_token` query parameter, the `x-hearth-preview-token` and
//! `x-miosa-preview-token` headers, the share cookie). What is not
//! Hearth's flows on untouched: an `Authorization` meant for the app
//! (`Bearer abc`, `Basic ...`), the app's own cookies and query parameters.
//!
//! Also the share cookie itself: `__Host-` (host-only, `Secure`, `Path=/`),
//! `HttpOnly`, `SameSite=Lax` unless previews are embedded in other sites
//! (`[preview] embed`: `SameSite=None; Partitioned`).

use axum::extract::Request;
use axum::http::{header, HeaderValue, Uri};
use percent_encoding::percent_decode_str;

/// The cookie that carries a share token on a preview's own host.
pub const TOKEN_COOKIE: &str = "__Host-hearth_preview_token";
/// The cookie's name before it took the `__Host-` prefix: stripped, no
/// longer accepted.
const OLD_TOKEN_COOKIE: &str = "hearth_preview_token";
const TOKEN_QUERY: &str = "preview_token";
const TOKEN_HEADERS: [&str; 2] = ["x-hearth-preview-token", "x-miosa-preview-token"];
const API_KEY_HEADER: &str = "x-api-key";

/// Where a share token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Query,
    Header,
    Cookie,
}

/// What a request presented, once taken out of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The first share token (query, then headers, then cookie).
    pub token: Option<(String, Source)>,
    /// The first `hk_` API key (`Authorization: Bearer`, then `X-API-Key`).
    pub api_key: Option<String>,
    /// The query string carried `preview_token` (a page request is sent
    /// back to its URL without it).
    pub token_in_query: bool,
}

/// Takes every Hearth credential out of `req` and returns what was there.
pub fn take(req: &mut Request) -> Credentials {
    let mut found = Credentials::default();
    let query = take_query_token(req);
    found.token_in_query = query.is_some();
    found.token = query.map(|t| (t, Source::Query));

    for h in TOKEN_HEADERS {
        for v in remove_all(req, h) {
            if found.token.is_none() {
                found.token = v
                    .to_str()
                    .ok()
                    .map(|s| (s.trim().to_string(), Source::Header));
            }
        }
    }
    let mut kept = Vec::new();
    for v in remove_all(req, header::AUTHORIZATION) {
        match v.to_str().ok().and_then(hearth_key) {
            Some((key, bearer)) => {
                if bearer && found.api_key.is_none() {
                    found.api_key = Some(key.to_string());
                }
            }
            None => kept.push(v),
        }
    }
    for v in kept {
        req.headers_mut().append(header::AUTHORIZATION, v);
    }
    for v in remove_all(req, API_KEY_HEADER) {
        let key = v.to_str().map(str::trim).unwrap_or_default();
        if key.starts_with("hk_") && found.api_key.is_none() {
            found.api_key = Some(key.to_string());
        }
    }
    let cookie = take_cookie(req);
    if found.token.is_none() {
        found.token = cookie.map(|t| (t, Source::Cookie));
    }
    found.token = found.token.filter(|(t, _)| !t.is_empty());
    found
}

/// Removes every value of header `name`, returning them.
fn remove_all(req: &mut Request, name: impl header::IntoHeaderName) -> Vec<HeaderValue> {
    match req.headers_mut().entry(name) {
        header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
        header::Entry::Vacant(_) => Vec::new(),
    }
}

/// An `Authorization` value that carries a Hearth key (`hk_...` as its
/// credentials, whatever the scheme): the key, and whether the scheme is
/// `Bearer` (the only one the API accepts).
fn hearth_key(value: &str) -> Option<(&str, bool)> {
    let value = value.trim();
    let (scheme, cred) = value.split_once(' ').unwrap_or(("", value));
    let cred = cred.trim();
    cred.starts_with("hk_")
        .then(|| (cred, scheme.eq_ignore_ascii_case("bearer")))
}

/// Takes every `preview_token` parameter (its name percent-decoded) out of
/// the query; returns the first one's value, decoded.
fn take_query_token(req: &mut Request) -> Option<String> {
    let q = req.uri().query()?;
    let mut token = None;
    let mut removed = false;
    let mut kept = Vec::new();
    for pair in q.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(name) == TOKEN_QUERY {
            removed = true;
            if token.is_none() {
                token = Some(decode(value));
            }
        } else {
            kept.push(pair);
        }
    }
    if !removed {
        return None;
    }
    let path = req.uri().path();
    let pq = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = req.uri().clone().into_parts();
    match pq.parse() {
        Ok(pq) => parts.path_and_query = Some(pq),
        // The remainder came from a valid URI: it parses. Should it not,
        // the path alone still drops the token.
        Err(_) => parts.path_and_query = path.parse().ok(),
    }
    *req.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
    token
}

/// `%XX` and `+` decoded, lossily to text (tokens and names are ASCII).
fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Takes the share cookies (current and old name) out of the `Cookie`
/// headers, keeping every other cookie; returns the current cookie's value.
fn take_cookie(req: &mut Request) -> Option<String> {
    let values = remove_all(req, header::COOKIE);
    let mut token = None;
    let mut kept = Vec::new();
    for c in values.iter().filter_map(|v| v.to_str().ok()) {
        for pair in c.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((TOKEN_COOKIE, v)) => {
                    if token.is_none() {
                        token = Some(v.trim_matches('"').to_string());
                    }
                }
                Some((OLD_TOKEN_COOKIE, _)) => {}
                _ => kept.push(pair),
            }
        }
    }
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            req.headers_mut().insert(header::COOKIE, v);
        }
    }
    token
}

/// The `Set-Cookie` value that keeps `token` on the preview's host for
/// `max_age` seconds.
pub fn cookie(token: &str, max_age: i64, embed: bool) -> String {
    let same_site = if embed {
        "SameSite=None; Partitioned"
    } else {
        "SameSite=Lax"
    };
    format!("{TOKEN_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; Secure; {same_site}")
}

/// Whether browsers keep a `Secure` cookie from preview URLs of this
/// scheme and domain: over HTTPS, and on `localhost` (and `*.localhost`),
/// which browsers treat as secure over plain HTTP too. Elsewhere over plain
/// HTTP the cookie is dropped, so a share link must not be redirected away
/// from its token.
pub fn cookie_sticks(scheme: &str, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    scheme == "https" || domain == "localhost" || domain.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).expect("test value")
    }

    fn all(req: &Request, name: &str) -> Vec<String> {
        req.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("test value").to_string())
            .collect()
    }

    #[test]
    fn tokens_are_taken_from_query_headers_and_cookie_and_stripped() {
        let mut req = request(
            "/page?a=1&preview_token=hpt_q&b=2&preview%5Ftoken=hpt_q2",
            &[
                ("x-hearth-preview-token", "hpt_h"),
                ("x-miosa-preview-token", "hpt_m"),
                (
                    "cookie",
                    "theme=dark; __Host-hearth_preview_token=hpt_c; hearth_preview_token=hpt_old",
                ),
            ],
        );
        let c = take(&mut req);
        assert_eq!(c.token, Some(("hpt_q".into(), Source::Query)));
        assert!(c.token_in_query);
        assert_eq!(req.uri(), "/page?a=1&b=2");
        assert!(!req.headers().contains_key("x-hearth-preview-token"));
        assert!(!req.headers().contains_key("x-miosa-preview-token"));
        assert_eq!(all(&req, "cookie"), ["theme=dark"]);

        let mut req = request(
            "/",
            &[
                ("cookie", "__Host-hearth_preview_token=hpt_c"),
                ("cookie", "a=b"),
            ],
        );
        let c = take(&mut req);
        assert_eq!(c.token, Some(("hpt_c".into(), Source::Cookie)));
        assert!(!c.token_in_query);
        assert_eq!(all(&req, "cookie"), ["a=b"]);

        // The old cookie name is stripped but opens nothing.
        let mut req = request("/", &[("cookie", "hearth_preview_token=hpt_old")]);
        assert_eq!(take(&mut req).token, None);
        assert!(!req.headers().contains_key("cookie"));

        let mut req = request(
            "/x?preview_token=hpt_only",
            &[("x-miosa-preview-token", "hpt_m")],
        );
        assert_eq!(
            take(&mut req).token,
            Some(("hpt_only".into(), Source::Query))
        );
        assert_eq!(req.uri(), "/x");

        let mut req = request("/x?y=1", &[("x-miosa-preview-token", " hpt_m ")]);
        let c = take(&mut req);
        assert_eq!(c.token, Some(("hpt_m".into(), Source::Header)));
        assert_eq!(req.uri(), "/x?y=1");
    }

    #[test]
    fn every_hearth_key_goes_and_the_apps_own_authorization_stays() {
        let mut req = request(
            "/",
            &[
                ("authorization", "Bearer hk_owner"),
                ("authorization", "Basic dXNlcjpwYXNz"),
                ("authorization", "bearer   hk_second"),
                ("authorization", "Token hk_odd"),
                ("authorization", "Bearer abc"),
                ("x-api-key", "hk_header"),
                ("x-api-key", "app-key"),
            ],
        );
        let c = take(&mut req);
        assert_eq!(c.api_key.as_deref(), Some("hk_owner"));
        assert_eq!(
            all(&req, "authorization"),
            ["Basic dXNlcjpwYXNz", "Bearer abc"]
        );
        assert!(!req.headers().contains_key("x-api-key"));

        let mut req = request("/", &[("x-api-key", " hk_k ")]);
        assert_eq!(take(&mut req).api_key.as_deref(), Some("hk_k"));
        let mut req = request("/", &[("authorization", "hk_bare")]);
        assert_eq!(
            take(&mut req).api_key,
            None,
            "not a bearer key: not accepted"
        );
        assert!(!req.headers().contains_key("authorization"), "but stripped");
    }

    #[test]
    fn the_cookie_is_host_only_and_lax_unless_embedded() {
        let lax = cookie("hpt_x", 60, false);
        assert_eq!(
            lax,
            "__Host-hearth_preview_token=hpt_x; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Lax"
        );
        assert!(!lax.contains("Domain"));
        let embed = cookie("hpt_x", 60, true);
        assert!(
            embed.ends_with("Secure; SameSite=None; Partitioned"),
            "{embed}"
        );
        assert!(cookie_sticks("https", "example.com"));
        assert!(cookie_sticks("http", "localhost"));
        assert!(cookie_sticks("http", "dev.localhost."));
        assert!(!cookie_sticks("http", "example.com"));
    }
}
