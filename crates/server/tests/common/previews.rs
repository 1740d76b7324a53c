//! Helpers for preview tests: a guest app on loopback that records what it
//! was sent (the fake sandbox's agent tunnels to it), clients that send a
//! preview's `Host` to the proxy, and share links opened as a browser
//! does (the redirect, then the cookie).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use serde_json::{json, Value};

use super::TestServer;

/// What the guest app saw of each request: request line and headers.
pub type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// An app on a free port: `/` echoes, `/slow` sleeps 3 s, `/ws` echoes
/// WebSocket messages.
pub async fn start_app() -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new()
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if let WsMessage::Text(t) = msg {
                            let _ = socket
                                .send(WsMessage::Text(format!("echo:{t}").into()))
                                .await;
                        }
                    }
                })
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .fallback(any(move |req: Request| {
            let log = log.clone();
            async move {
                let line = format!("{} {}", req.method(), req.uri());
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                log.lock().expect("test step").push((line.clone(), headers));
                let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                    .await
                    .map(|b| b.len())
                    .unwrap_or(0);
                format!("app saw {line} with {body} body bytes").into_response()
            }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test step");
    let port = listener.local_addr().expect("test step").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

/// A client that sends `host` to the proxy (no DNS needed).
pub fn client_for(host: &str, proxy: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve(host, proxy)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("test step")
}

pub fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .split([':', '/'])
        .next()
        .expect("test step")
        .to_string()
}

pub async fn preview(srv: &TestServer, id: &str, port: u16, visibility: &str) -> Value {
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/previews"),
            Some(json!({"port": port, "visibility": visibility})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    v["data"].clone()
}

/// Mints a share token of preview `pid` of sandbox `id`: the token and
/// its id.
pub async fn share(srv: &TestServer, id: &str, pid: &str) -> (String, String) {
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/previews/{pid}/share"),
            None,
        )
        .await;
    assert_eq!(st, 201, "{v}");
    (
        v["preview_token"].as_str().expect("token").to_string(),
        v["data"]["token_id"].as_str().expect("id").to_string(),
    )
}

/// Opens a share link as a browser does: the proxy answers 303 with the
/// cookie and the URL without the token; the cookie then opens that URL.
/// Returns the `Set-Cookie` value, the `Location`, and the `name=value`
/// pair to send back.
pub async fn open_share_link(c: &reqwest::Client, link: &str) -> (String, String, String) {
    let resp = c.get(link).send().await.expect("share link");
    assert_eq!(resp.status(), 303, "a share link redirects");
    let set_cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let pair = set_cookie
        .split(';')
        .next()
        .expect("name=value")
        .to_string();
    (set_cookie, location, pair)
}

/// Makes a key for another tenant (`ten_other`) and returns it.
pub async fn stranger_key(srv: &TestServer) -> String {
    let (st, v) = srv
        .call(
            "POST",
            "/api-keys",
            Some(json!({"name": "other", "tenant_id": "ten_other"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    v["data"]["key"].as_str().expect("key").to_string()
}

/// Everything the app saw, as one string (to search for leaks).
pub fn seen_text(seen: &Seen) -> String {
    format!("{:?}", seen.lock().expect("seen"))
}

/// The headers the app saw with the request whose line is `line`.
pub fn headers_of(seen: &Seen, line: &str) -> Vec<(String, String)> {
    seen.lock()
        .expect("seen")
        .iter()
        .find(|(l, _)| l == line)
        .unwrap_or_else(|| panic!("the app never saw {line}"))
        .1
        .clone()
}
