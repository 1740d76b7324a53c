//! Previews through the proxy, on the server with agents in place of VMs
//! (see `common`): the fake sandbox's agent runs on this host, so its
//! tunnel reaches an app this test serves on 127.0.0.1. The real-VM
//! version (an app inside a guest) is in the CLI crate's tests.

mod common;

use std::time::Duration;

use axum::routing::get;
use common::previews::*;
use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

#[tokio::test]
async fn public_previews_stream_through_the_proxy_over_http1_and_http2() {
    let srv = TestServer::start().await;
    let (port, seen) = start_app().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("test step");
    let p = preview(&srv, id, port, "public").await;
    let url = p["url"].as_str().expect("test step").to_string();
    assert_eq!(
        url,
        format!(
            "http://{}.preview.localhost:{}",
            p["slug"].as_str().expect("test step"),
            srv.preview_addr.port()
        )
    );
    let host = host_of(&url);
    let c = client_for(&host, srv.preview_addr);
    let resp = c
        .post(format!("{url}/hello?x=1"))
        .header("x-forwarded-for", "203.0.113.9")
        .body(vec![7u8; 100_000])
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-security-policy"],
        "frame-ancestors 'self' localhost:*"
    );
    assert_eq!(
        resp.text().await.expect("test step"),
        "app saw POST /hello?x=1 with 100000 body bytes"
    );
    {
        let seen = seen.lock().expect("test step");
        let h: std::collections::HashMap<_, _> = seen[0].1.iter().cloned().collect();
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(
            h["x-forwarded-host"],
            format!("{host}:{}", srv.preview_addr.port())
        );
        assert_eq!(h["host"], format!("{host}:{}", srv.preview_addr.port()));
    }
    // HTTP/2 from the client; the guest app still gets HTTP/1.1.
    let h2 = reqwest::Client::builder()
        .resolve(&host, srv.preview_addr)
        .http2_prior_knowledge()
        .build()
        .expect("test step");
    let resp = h2
        .get(format!("{url}/over-h2"))
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        resp.text().await.expect("test step"),
        "app saw GET /over-h2 with 0 body bytes"
    );

    // A WebSocket passes through.
    let tcp = tokio::net::TcpStream::connect(srv.preview_addr)
        .await
        .expect("test step");
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{host}/ws"), tcp)
        .await
        .expect("websocket through the proxy");
    assert_eq!(resp.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
        .await
        .expect("test step");
    let got = ws.next().await.expect("test step").expect("test step");
    assert_eq!(got.into_text().expect("test step").as_str(), "echo:hi");

    // Listing, and no preview twice for one port.
    let (_, list) = srv
        .call("GET", &format!("/sandboxes/{id}/previews"), None)
        .await;
    assert_eq!(list["data"][0]["id"], p["id"]);
    let (st, _) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/previews"),
            Some(json!({"port": port})),
        )
        .await;
    assert_eq!(st, 409);
}

#[tokio::test]
async fn private_previews_take_the_owners_key_or_a_share_token_the_app_never_sees() {
    let srv = TestServer::start().await;
    let (port, seen) = start_app().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("test step");
    let p = preview(&srv, id, port, "private").await;
    let pid = p["id"].as_str().expect("test step");
    let url = p["url"].as_str().expect("test step").to_string();
    let c = client_for(&host_of(&url), srv.preview_addr);

    let resp = c.get(format!("{url}/")).send().await.expect("test step");
    assert_eq!(resp.status(), 401);
    assert!(resp
        .text()
        .await
        .expect("test step")
        .contains("This preview is private"));

    // The owner's API key works, and is not forwarded.
    let resp = c
        .get(format!("{url}/with-key"))
        .bearer_auth(&srv.admin_key)
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 200);

    // A share link: the token works once from the URL, then from the cookie.
    let (st, share) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/previews/{pid}/share"),
            Some(json!({"ttl_seconds": 600})),
        )
        .await;
    assert_eq!(st, 201, "{share}");
    let token = share["preview_token"]
        .as_str()
        .expect("test step")
        .to_string();
    assert!(token.starts_with("hpt_"));
    assert_eq!(
        share["share_url"].as_str().expect("test step"),
        format!("{url}/?preview_token={token}")
    );
    assert_eq!(share["data"]["share_token_prefix"], &token[..12]);
    let (cookie, location, pair) =
        open_share_link(&c, &format!("{url}/page?preview_token={token}&keep=1")).await;
    assert!(
        cookie.starts_with(&format!("__Host-hearth_preview_token={token};")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    assert_eq!(location, format!("{url}/page?keep=1"));
    let resp = c
        .get(&location)
        .header("cookie", &pair)
        .send()
        .await
        .expect("test step");
    assert_eq!(
        resp.text().await.expect("test step"),
        "app saw GET /page?keep=1 with 0 body bytes"
    );
    let resp = c
        .get(format!("{url}/later"))
        .header("cookie", format!("theme=dark; {pair}"))
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 200);
    let resp = c
        .get(format!("{url}/by-header"))
        .header("x-miosa-preview-token", &token)
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 200);
    {
        let seen = seen.lock().expect("test step");
        let all = format!("{seen:?}");
        assert!(!all.contains(&token), "the app saw the token: {all}");
        assert!(!all.contains(&srv.admin_key), "the app saw the API key");
        let later = &seen
            .iter()
            .find(|(l, _)| l == "GET /later")
            .expect("test step")
            .1;
        assert!(later.contains(&("cookie".into(), "theme=dark".into())));
    }

    // Another preview's token does not open this one.
    let (port2, _) = start_app().await;
    let p2 = preview(&srv, id, port2, "private").await;
    let (_, share2) = srv
        .call(
            "POST",
            &format!(
                "/sandboxes/{id}/previews/{}/share",
                p2["id"].as_str().expect("test step")
            ),
            None,
        )
        .await;
    let other = share2["preview_token"].as_str().expect("test step");
    let resp = c
        .get(format!("{url}/?preview_token={other}"))
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 401);
    assert!(resp
        .text()
        .await
        .expect("test step")
        .contains("not valid here"));

    // Revoked: 401 with a page that says so.
    let (st, v) = srv
        .call(
            "DELETE",
            &format!("/sandboxes/{id}/previews/{pid}/share"),
            None,
        )
        .await;
    assert_eq!((st, v["data"]["revoked"].clone()), (200, json!(1)));
    let resp = c
        .get(format!("{url}/"))
        .header("cookie", &pair)
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.expect("test step").contains("revoked"));

    // Expired: likewise.
    let (_, short) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/previews/{pid}/share"),
            Some(json!({"ttl_seconds": 1})),
        )
        .await;
    let short = short["preview_token"].as_str().expect("test step");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = c
        .get(format!("{url}/?preview_token={short}"))
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.expect("test step").contains("expired"));

    // A TTL past the maximum is refused.
    let (st, _) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/previews/{pid}/share"),
            Some(json!({"ttl_seconds": 86_401})),
        )
        .await;
    assert_eq!(st, 422);

    // expose reuses the port's preview; preview-token mints a working link.
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/expose"),
            Some(json!({"port": port})),
        )
        .await;
    assert_eq!((st, v["url"].as_str()), (200, Some(url.as_str())));
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/preview-token"),
            Some(json!({"port": port, "expires_in": 60})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let link = v["url"].as_str().expect("test step");
    let (_, location, pair) = open_share_link(&c, link).await;
    let resp = c
        .get(location)
        .header("cookie", pair)
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn bad_hosts_closed_ports_slow_apps_big_bodies_and_floods() {
    let srv = TestServer::start_with(|c| {
        c.preview.max_body_bytes = 1000;
        c.preview.upstream_timeout_ms = 500;
        c.preview.public_rps = 2;
    })
    .await;
    let (port, _) = start_app().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("test step");

    // Unknown slug and non-preview hosts: the same 404 page.
    for host in ["nosuchslug.preview.localhost", "example.com"] {
        let resp = client_for(host, srv.preview_addr)
            .get(format!("http://{host}:{}/", srv.preview_addr.port()))
            .send()
            .await
            .expect("test step");
        assert_eq!(resp.status(), 404, "{host}");
        assert!(resp
            .text()
            .await
            .expect("test step")
            .contains("No preview here"));
    }

    // Nothing listens on the port yet: 502 and a page saying so; once
    // something does, sandbox.preview.ready fires.
    let free = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("test step");
        l.local_addr().expect("test step").port()
    };
    let idle = preview(&srv, id, free, "public").await;
    let url = idle["url"].as_str().expect("test step");
    let c = client_for(&host_of(url), srv.preview_addr);
    let resp = c.get(url).send().await.expect("test step");
    assert_eq!(resp.status(), 502);
    assert!(resp
        .text()
        .await
        .expect("test step")
        .contains(&format!("listens on port {free}")));
    let _late = std::net::TcpListener::bind(("127.0.0.1", free)).expect("test step");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev: Value = srv
            .client
            .get(srv.url(&format!("/api/v1/sandboxes/{id}/events")))
            .header("accept", "application/json")
            .send()
            .await
            .expect("test step")
            .json()
            .await
            .expect("test step");
        let ready = ev["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["type"] == "sandbox.preview.ready" && e["data"]["port"] == json!(free));
        if let Some(e) = ready {
            assert_eq!(e["data"]["url"], url);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no preview.ready: {ev}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let p = preview(&srv, id, port, "public").await;
    let url = p["url"].as_str().expect("test step").to_string();
    let c = client_for(&host_of(&url), srv.preview_addr);
    // An app that does not answer in time: 504.
    let resp = c
        .get(format!("{url}/slow"))
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 504);
    // A body over the limit: 413, declared or streamed.
    let resp = c
        .post(format!("{url}/"))
        .body(vec![0u8; 5000])
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 413);
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 500]))),
    );
    let resp = c
        .post(format!("{url}/"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 413);

    // A flood from one client on a public preview: 429 after the burst.
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(
            c.get(format!("{url}/"))
                .send()
                .await
                .expect("test step")
                .status()
                .as_u16(),
        );
    }
    assert!(codes.contains(&429), "{codes:?}");
    assert!(
        codes.iter().filter(|c| **c == 200).count() <= 9,
        "{codes:?}"
    );
}

#[tokio::test]
async fn a_request_wakes_a_paused_persistent_sandbox_and_other_tenants_see_nothing() {
    let srv = TestServer::start().await;
    let (port, _) = start_app().await;
    let sbx = srv.create_sandbox(json!({"persistent": true})).await;
    let id = sbx["id"].as_str().expect("test step");
    let p = preview(&srv, id, port, "public").await;
    let url = p["url"].as_str().expect("test step").to_string();
    let (st, v) = srv
        .call("POST", &format!("/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(
        (st, v["data"]["state"].clone()),
        (200, json!("paused")),
        "{v}"
    );
    let c = client_for(&host_of(&url), srv.preview_addr);
    let resp = c
        .get(format!("{url}/wake"))
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 200);
    let (_, v) = srv.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(v["data"]["state"], "running");
    // Preview traffic is activity: it resets the idle clock.
    let before = srv.core.handle(id).expect("live").record().last_activity_at;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let resp = c.get(format!("{url}/again")).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    let after = srv.core.handle(id).expect("live").record().last_activity_at;
    assert!(after > before, "{after} > {before}");

    // A paused sandbox that is not persistent stays paused: 503.
    let other = srv.create_sandbox(json!({})).await;
    let oid = other["id"].as_str().expect("test step");
    let op = preview(&srv, oid, port, "public").await;
    srv.call("POST", &format!("/sandboxes/{oid}/pause"), None)
        .await;
    let ourl = op["url"].as_str().expect("test step");
    let resp = client_for(&host_of(ourl), srv.preview_addr)
        .get(ourl)
        .send()
        .await
        .expect("test step");
    assert_eq!(resp.status(), 503);

    let stranger = srv.stranger().await;
    let pid = p["id"].as_str().expect("test step");
    for path in [
        format!("/api/v1/sandboxes/{id}/previews"),
        format!("/api/v1/sandboxes/{id}/previews/{pid}"),
    ] {
        let st = stranger
            .get(srv.url(&path))
            .send()
            .await
            .expect("test step")
            .status();
        assert_eq!(st, 404, "{path}");
    }
    let st = stranger
        .post(srv.url(&format!("/api/v1/sandboxes/{id}/previews/{pid}/share")))
        .send()
        .await
        .expect("test step")
        .status();
    assert_eq!(st, 404);
    // Deleting a preview takes its URL away.
    let (st, _) = srv
        .call("DELETE", &format!("/sandboxes/{id}/previews/{pid}"), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        c.get(format!("{url}/"))
            .send()
            .await
            .expect("test step")
            .status(),
        404
    );
}

/// Chromium from `HEARTH_CHROMIUM`, else `chromium` on PATH.
fn chromium() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_CHROMIUM") {
        return p.into();
    }
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v chromium || command -v chromium-browser"])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "this test needs chromium (scripts/setup installs it)"
    );
    path.into()
}

#[tokio::test]
async fn a_share_link_works_inside_an_iframe_in_headless_chromium() {
    // Another site embeds the preview: that takes `[preview] embed`.
    let srv = TestServer::start_with(|c| c.preview.embed = true).await;
    // The guest app: a page whose script fetches /data (which needs the
    // cookie the share link set) and tells its parent what it got.
    let inner = axum::Router::new()
        .route(
            "/",
            get(|| async {
                axum::response::Html(
                    "<!doctype html><p>inner</p><script>\
                     fetch('/data',{credentials:'include'}).then(r=>r.text())\
                     .then(t=>parent.postMessage('iframe got: '+t.trim(),'*'))\
                     </script>",
                )
            }),
        )
        .route("/data", get(|| async { "secret-data" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app_port = l.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(l, inner).await });
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    let p = preview(&srv, id, app_port, "private").await;
    let (st, share) = srv
        .call(
            "POST",
            &format!(
                "/sandboxes/{id}/previews/{}/share",
                p["id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(st, 201);
    let share_url = share["share_url"].as_str().expect("url").to_string();

    // Another site embeds the share URL.
    let outer_html = format!(
        "<!doctype html><div id=\"out\">waiting</div><iframe src=\"{share_url}\"></iframe>\
         <script>addEventListener('message',e=>document.getElementById('out').textContent=e.data)</script>"
    );
    let outer = axum::Router::new().route(
        "/",
        get(move || {
            let html = outer_html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let outer_port = l.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(l, outer).await });

    // Virtual time can run out before a loaded host serves the iframe (seen
    // with the whole suite running beside it): several tries, each with a
    // fresh profile (no cookie carried over), a moment apart.
    let mut dom = String::new();
    let mut stderr = String::new();
    for attempt in 0..6 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let profile = tempfile::tempdir().expect("profile");
        let out = tokio::process::Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--virtual-time-budget=30000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("http://localhost:{outer_port}/"))
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(90), out)
            .await
            .expect("chromium finished")
            .expect("chromium ran");
        dom = String::from_utf8_lossy(&out.stdout).into_owned();
        stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !dom.contains(">waiting<") {
            break;
        }
    }
    assert!(
        dom.contains("<div id=\"out\">iframe got: secret-data</div>"),
        "the iframe did not load with the share link and its cookie:\n{dom}\n{stderr}"
    );
}

#[tokio::test]
async fn previews_serve_https_with_a_configured_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = rcgen::generate_simple_self_signed(vec!["*.preview.localhost".to_string()])
        .expect("certificate");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert_pem).expect("write cert");
    std::fs::write(&key_path, key_pem).expect("write key");
    let srv = TestServer::start_with(|c| {
        c.preview.tls_cert = Some(cert_path.clone());
        c.preview.tls_key = Some(key_path.clone());
    })
    .await;
    let (port, seen) = start_app().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let p = preview(&srv, sbx["id"].as_str().expect("id"), port, "public").await;
    let url = p["url"].as_str().expect("url").to_string();
    assert!(url.starts_with("https://"), "{url}");
    let host = url
        .trim_start_matches("https://")
        .split(':')
        .next()
        .expect("host")
        .to_string();
    let c = reqwest::Client::builder()
        .resolve(&host, srv.preview_addr)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let resp = c.get(format!("{url}/secure")).send().await.expect("https");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    assert_eq!(
        resp.text().await.expect("body"),
        "app saw GET /secure with 0 body bytes"
    );
    {
        let seen = seen.lock().expect("seen");
        assert!(seen[0]
            .1
            .contains(&("x-forwarded-proto".to_string(), "https".to_string())));
    }
    // Plain HTTP to the TLS port gets nothing useful.
    let plain = reqwest::Client::builder()
        .resolve(&host, srv.preview_addr)
        .build()
        .expect("client");
    let r = plain
        .get(url.replacen("https://", "http://", 1))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(r.map(|r| r.status() != 200).unwrap_or(true));
}
