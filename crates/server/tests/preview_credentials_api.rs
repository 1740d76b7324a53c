//! No Hearth credential reaches a guest app through the preview proxy, and
//! share links leave the browser's URL (and so its history and `Referer`)
//! at once. The app here records every request it gets (see
//! `common::previews`); the tests attack the proxy with every credential
//! Hearth knows and look for any of them in what the app saw.

mod common;

use common::previews::*;
use common::TestServer;
use serde_json::json;

/// Hearth's credentials in every place a client can put them, sent to a
/// public and to a private preview: the app sees none of them, while its
/// own `Authorization`, cookies and query parameters arrive untouched.
#[tokio::test]
async fn no_hearth_credential_reaches_the_guest_app() {
    let srv = TestServer::start().await;
    let (port, seen) = start_app().await;
    let (port2, seen2) = start_app().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    let public = preview(&srv, id, port, "public").await;
    let private = preview(&srv, id, port2, "private").await;
    let stranger = stranger_key(&srv).await;
    let (pub_url, prv_url) = (
        public["url"].as_str().expect("url").to_string(),
        private["url"].as_str().expect("url").to_string(),
    );
    let pc = client_for(&host_of(&pub_url), srv.preview_addr);
    let (st, share) = srv
        .call(
            "POST",
            &format!(
                "/sandboxes/{id}/previews/{}/share",
                private["id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(st, 201, "{share}");
    let token = share["preview_token"].as_str().expect("token").to_string();

    // A public preview: another tenant's key, the owner's key as
    // X-API-Key, an invalid hk_ key, share tokens in headers and cookies
    // (current and old name), beside the app's own cookie.
    let resp = pc
        .get(format!("{pub_url}/everything"))
        .bearer_auth(&stranger)
        .header("x-api-key", &srv.admin_key)
        .header("x-hearth-preview-token", &token)
        .header("x-miosa-preview-token", &token)
        .header(
            "cookie",
            format!(
                "__Host-hearth_preview_token={token}; theme=dark; hearth_preview_token={token}"
            ),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let h = headers_of(&seen, "GET /everything");
    assert!(h.contains(&("cookie".into(), "theme=dark".into())), "{h:?}");
    assert!(
        !h.iter()
            .any(|(k, _)| k == "authorization" || k == "x-api-key"),
        "{h:?}"
    );
    let resp = pc
        .get(format!("{pub_url}/invalid-key"))
        .header("authorization", "Bearer hk_notakeyatall")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    // What is meant for the app flows on.
    for (path, auth) in [("/bearer", "Bearer abc"), ("/basic", "Basic dXNlcjpwYXNz")] {
        let resp = pc
            .get(format!("{pub_url}{path}"))
            .header("authorization", auth)
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200);
        let h = headers_of(&seen, &format!("GET {path}"));
        assert!(h.contains(&("authorization".into(), auth.into())), "{h:?}");
    }
    // A form post with the token in its URL is forwarded, without it.
    let resp = pc
        .post(format!("{pub_url}/form?preview_token={token}&keep=1"))
        .body("x=1")
        .send()
        .await
        .expect("post");
    assert_eq!(
        resp.text().await.expect("body"),
        "app saw POST /form?keep=1 with 3 body bytes"
    );

    // A private preview: the owner's key, and another tenant's key beside
    // a valid share cookie.
    let vc = client_for(&host_of(&prv_url), srv.preview_addr);
    let resp = vc
        .get(format!("{prv_url}/owner"))
        .bearer_auth(&srv.admin_key)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let resp = vc
        .get(format!("{prv_url}/owner-by-header"))
        .header("x-api-key", &srv.admin_key)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200, "X-API-Key opens it as on the API");
    let resp = vc
        .get(format!("{prv_url}/cookie"))
        .bearer_auth(&stranger)
        .header(
            "cookie",
            format!("__Host-hearth_preview_token={token}; a=b"),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert!(headers_of(&seen2, "GET /cookie").contains(&("cookie".into(), "a=b".into())));
    // Another tenant's key alone opens nothing.
    let resp = vc
        .get(format!("{prv_url}/stranger"))
        .bearer_auth(&stranger)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 401);

    for (name, all) in [("public", seen_text(&seen)), ("private", seen_text(&seen2))] {
        for secret in [
            "hk_",
            token.as_str(),
            "preview_token",
            "x-api-key",
            "x-hearth-preview-token",
            "x-miosa-preview-token",
        ] {
            assert!(
                !all.contains(secret),
                "the {name} app saw {secret:?}: {all}"
            );
        }
    }
    assert_eq!(
        seen2.lock().expect("seen").len(),
        3,
        "the 401 was not forwarded"
    );
}

/// A share link opened in a browser: 303 to the same URL without the
/// token, with a host-only, Lax cookie; nothing is forwarded until the
/// cookie comes back. Header tokens and non-page requests need no detour.
#[tokio::test]
async fn a_token_in_a_page_url_is_traded_for_a_cookie_and_a_clean_url() {
    let srv = TestServer::start().await;
    let (port, seen) = start_app().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    let p = preview(&srv, id, port, "private").await;
    let url = p["url"].as_str().expect("url").to_string();
    let c = client_for(&host_of(&url), srv.preview_addr);
    let (_, share) = srv
        .call(
            "POST",
            &format!(
                "/sandboxes/{id}/previews/{}/share",
                p["id"].as_str().expect("id")
            ),
            Some(json!({"ttl_seconds": 600})),
        )
        .await;
    let token = share["preview_token"].as_str().expect("token").to_string();

    let resp = c
        .get(format!("{url}/a/b?x=1&preview_token={token}&y=2"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 303);
    let h = resp.headers();
    assert_eq!(h["location"], format!("{url}/a/b?x=1&y=2"));
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    let cookie = h["set-cookie"].to_str().expect("cookie");
    let max_age: i64 = cookie
        .split("Max-Age=")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.parse().ok())
        .expect("max-age");
    assert!((595..=600).contains(&max_age), "{cookie}");
    assert_eq!(
        cookie,
        format!(
            "__Host-hearth_preview_token={token}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax"
        )
    );
    assert!(
        seen.lock().expect("seen").is_empty(),
        "nothing forwarded yet"
    );

    // HEAD too; a path that looks like another host stays on this one.
    let resp = c
        .head(format!("{url}//evil.example/x?preview_token={token}"))
        .send()
        .await
        .expect("head");
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], format!("{url}//evil.example/x"));

    // A token in a header is forwarded at once (and leaves the cookie).
    let resp = c
        .get(format!("{url}/api"))
        .header("x-hearth-preview-token", &token)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("set-cookie"));
    // A POST with the token in its URL is forwarded without it.
    let resp = c
        .post(format!("{url}/submit?preview_token={token}"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.expect("body"),
        "app saw POST /submit with 0 body bytes"
    );
    // An invalid token in the URL is refused, not redirected.
    let resp = c
        .get(format!("{url}/?preview_token=hpt_wrong"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 401);
    assert_eq!(
        seen.lock()
            .expect("seen")
            .iter()
            .map(|(l, _)| l.as_str())
            .collect::<Vec<_>>(),
        ["GET /api", "POST /submit"]
    );

    // Embedding previews in other sites is opt-in: the cookie is then
    // SameSite=None and partitioned (CHIPS).
    let srv = TestServer::start_with(|c| c.preview.embed = true).await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    let p = preview(&srv, id, port, "private").await;
    let (_, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/preview-token"),
            Some(json!({"port": port})),
        )
        .await;
    let (url, link) = (
        p["url"].as_str().expect("url"),
        v["url"].as_str().expect("link"),
    );
    assert!(link.starts_with(url), "{link}");
    let c = client_for(&host_of(url), srv.preview_addr);
    let (cookie, _, _) = open_share_link(&c, link).await;
    assert!(
        cookie.ends_with("; HttpOnly; Secure; SameSite=None; Partitioned"),
        "{cookie}"
    );
}

/// Over plain HTTP on a domain that is not `localhost`, browsers drop a
/// `Secure` cookie: a share link is then served in place (token stripped)
/// rather than redirected to a URL nothing opens.
#[tokio::test]
async fn share_links_are_not_redirected_where_the_cookie_cannot_stick() {
    let srv = TestServer::start_with(|c| c.preview.domain = "previews.test".into()).await;
    let (port, seen) = start_app().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/preview-token"),
            Some(json!({"port": port})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let link = v["url"].as_str().expect("url");
    assert!(link.contains(".preview.previews.test:"), "{link}");
    let c = client_for(&host_of(link), srv.preview_addr);
    let resp = c.get(link).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.expect("body"),
        "app saw GET / with 0 body bytes"
    );
    assert!(!seen_text(&seen).contains("preview_token"));
}
