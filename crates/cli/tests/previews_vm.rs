//! Previews on the real `hearth serve` with real QEMU VMs: a guest app
//! behind share tokens, and a Python app with a WebSocket on the `default`
//! template.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn previews_serve_a_guest_app_with_share_tokens_on_real_vms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let id = api.create(json!({"template_id": "minimal", "memory_mb": 256, "disk_size_mb": 512, "timeout_sec": 600}), &server).await;
    // A page, and a CGI script that shows what the app receives.
    api.exec(
        &id,
        "mkdir -p /workspace/www/cgi-bin && echo hello-from-the-guest > /workspace/www/index.html \
         && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho \"query=$QUERY_STRING\"\\nenv | grep -i -e token -e cookie -e ^HTTP_ | sort\\n' \
            > /workspace/www/cgi-bin/show && chmod +x /workspace/www/cgi-bin/show",
    )
    .await;

    // The preview first: nothing listens yet, so the proxy says so.
    let (st, p) = api
        .call(
            "POST",
            &format!("/sandboxes/{id}/previews"),
            Some(json!({"port": 8080})),
        )
        .await;
    assert_eq!(st, 201, "{p}");
    let pid = p["data"]["id"].as_str().expect("pid").to_string();
    let url = p["data"]["url"].as_str().expect("url").to_string();
    let host = url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .expect("host")
        .to_string();
    let port: u16 = url.rsplit(':').next().expect("port").parse().expect("port");
    let web = reqwest::Client::builder()
        .resolve(&host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let (st, v) = api
        .call(
            "POST",
            &format!("/sandboxes/{id}/previews/{pid}/share"),
            Some(json!({"ttl_seconds": 600})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let token = v["preview_token"].as_str().expect("token").to_string();
    let share_url = v["share_url"].as_str().expect("share url").to_string();
    // The link trades its token for a cookie and a clean URL.
    let (cookie, location) = open_share_link(&web, &share_url).await;
    assert_eq!(location, format!("{url}/"));
    let r = web
        .get(&location)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 502);
    assert!(r.text().await.expect("body").contains("not running yet"));

    let (st, v) = api
        .call(
            "POST",
            &format!("/sandboxes/{id}/processes"),
            Some(json!({"command": "busybox httpd -f -p 8080 -h /workspace/www"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = web
            .get(&location)
            .header("cookie", &cookie)
            .send()
            .await
            .expect("get");
        if r.status() != 502 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello-from-the-guest\n");

    // Private: nothing without a credential; no Hearth credential reaches
    // the guest (the CGI script prints what it got).
    assert_eq!(web.get(&url).send().await.expect("get").status(), 401);
    let started = Instant::now();
    let shown = web
        .get(format!("{url}/cgi-bin/show?a=1"))
        .header("cookie", format!("theme=dark; {cookie}"))
        .header("x-hearth-preview-token", &token)
        .header("x-api-key", &api.key)
        .bearer_auth(&api.key)
        .send()
        .await
        .expect("get");
    println!(
        "request through the preview proxy into the guest: {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(shown.status(), 200);
    let shown = shown.text().await.expect("body");
    assert!(shown.contains("query=a=1\n"), "{shown}");
    assert!(shown.contains("HTTP_COOKIE=theme=dark\n"), "{shown}");
    for secret in [token.as_str(), api.key.as_str(), "hk_", "HTTP_X_API_KEY"] {
        assert!(!shown.contains(secret), "the guest saw {secret:?}: {shown}");
    }
    // A form post keeps its token in the URL: forwarded, without it.
    let posted = web
        .post(format!("{url}/cgi-bin/show?a=1&preview_token={token}"))
        .body("x=1")
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 200);
    let posted = posted.text().await.expect("body");
    assert!(posted.contains("query=a=1\n"), "{posted}");
    assert!(
        !posted.contains(&token),
        "the guest saw the token: {posted}"
    );

    // Revoked: 401, and the page says so.
    let (st, _) = api
        .call(
            "DELETE",
            &format!("/sandboxes/{id}/previews/{pid}/share"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let r = web.get(&share_url).send().await.expect("get");
    assert_eq!(r.status(), 401);
    assert!(r.text().await.expect("body").contains("revoked"));
    api.call("DELETE", &format!("/sandboxes/{id}"), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn a_python_app_and_its_websocket_through_a_preview_on_the_default_template() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let id = api
        .create(
            json!({"template_id": "default", "memory_mb": 512, "timeout_sec": 900}),
            &server,
        )
        .await;
    let write = reqwest::Client::new()
        .put(format!(
            "{}/api/v1/sandboxes/{id}/fs/raw?path=/workspace/app.py",
            api.base
        ))
        .bearer_auth(&api.key)
        .body(PY_APP)
        .send()
        .await
        .expect("upload");
    assert!(write.status().is_success(), "{}", write.status());
    let (st, v) = api
        .call(
            "POST",
            &format!("/sandboxes/{id}/processes"),
            Some(json!({"command": "python3 /workspace/app.py", "name": "app"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let pid = v["data"]["pid"].as_u64().expect("pid");
    let (st, v) = api
        .call(
            "POST",
            &format!("/sandboxes/{id}/preview-token"),
            Some(json!({"port": 8000, "expires_in": 600})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let token = v["token"].as_str().expect("token").to_string();
    let link = v["url"].as_str().expect("url").to_string();
    let host = link
        .trim_start_matches("http://")
        .split(':')
        .next()
        .expect("host")
        .to_string();
    let port: u16 = link
        .trim_start_matches("http://")
        .split([':', '/'])
        .nth(1)
        .expect("port")
        .parse()
        .expect("port");
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let web = reqwest::Client::builder()
        .resolve(&host, proxy)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let (cookie, location) = open_share_link(&web, &link).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = web
            .get(&location)
            .header("cookie", &cookie)
            .send()
            .await
            .expect("get");
        if r.status() != 502 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "python saw GET / HTTP/1.1\n");
    let base = link.split("/?").next().expect("base").to_string();
    assert_eq!(web.get(&base).send().await.expect("get").status(), 401);

    // A WebSocket through the proxy, with the token in a header.
    let tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect");
    let (mut ws, resp) = tokio_tungstenite::client_async(
        tokio_tungstenite::tungstenite::http::Request::builder()
            .uri(format!("ws://{host}:{port}/ws"))
            .header("host", format!("{host}:{port}"))
            .header("x-hearth-preview-token", &token)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header(
                "sec-websocket-key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            )
            .body(())
            .expect("request"),
        tcp,
    )
    .await
    .expect("websocket through the preview proxy");
    assert_eq!(resp.status(), 101);
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::Text("ping".into()))
        .await
        .expect("send");
    let got = ws.next().await.expect("frame").expect("frame");
    assert_eq!(got.into_text().expect("text").as_str(), "echo:ping");

    // The app logged every request line; the token is in none of them.
    let (_, logs) = api
        .call(
            "GET",
            &format!("/sandboxes/{id}/processes/{pid}/logs"),
            None,
        )
        .await;
    let logs = logs.to_string();
    assert!(logs.contains("REQ GET / HTTP/1.1"), "{logs}");
    assert!(logs.contains("REQ GET /ws HTTP/1.1"), "{logs}");
    assert!(!logs.contains(&token), "the guest saw the token: {logs}");
    api.call("DELETE", &format!("/sandboxes/{id}"), None).await;
}

/// A Python app for the default (Debian) template: `GET /` answers with the
/// request line it got, every request line goes to stderr, and `/ws` is a
/// WebSocket that echoes one text message (stdlib only).
const PY_APP: &str = r#"
import base64, hashlib, http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        sys.stderr.write("REQ " + self.requestline + " COOKIE=" + str(self.headers.get("Cookie")) + "\n"); sys.stderr.flush()
        if self.path == "/ws":
            key = self.headers["Sec-WebSocket-Key"]
            acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            self.send_response(101); self.send_header("Upgrade", "websocket"); self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", acc); self.end_headers(); self.wfile.flush()
            b = self.rfile.read(2); n = b[1] & 127
            if n == 126: n = int.from_bytes(self.rfile.read(2), "big")
            mask = self.rfile.read(4); data = bytes(c ^ mask[i % 4] for i, c in enumerate(self.rfile.read(n)))
            out = b"echo:" + data
            self.wfile.write(bytes([0x81, len(out)]) + out); self.wfile.flush()
            self.close_connection = True
            return
        body = ("python saw " + self.requestline + "\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
S(("127.0.0.1", 8000), H).serve_forever()
"#;

/// Opens a share link as a browser does: 303 to the URL without the token,
/// with the share cookie. Returns the cookie's `name=value` and the URL.
async fn open_share_link(web: &reqwest::Client, link: &str) -> (String, String) {
    let r = web.get(link).send().await.expect("share link");
    assert_eq!(r.status(), 303, "a share link redirects");
    let cookie = r.headers()["set-cookie"].to_str().expect("cookie");
    assert!(
        cookie.starts_with("__Host-hearth_preview_token=") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value").to_string();
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert!(!location.contains("preview_token"), "{location}");
    (pair, location)
}
