//! A revocation ends the connections it opened, not only the next request:
//! a WebSocket through a private preview closes when its share token is
//! revoked or its preview deleted, and an event stream or terminal socket
//! opened with an API key ends when that key is revoked. Others' stay up.

mod common;

use std::time::Duration;

use common::previews::*;
use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Well past the moment a revocation is noticed (one store read).
const ENDS_WITHIN: Duration = Duration::from_secs(5);

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket to the preview app's `/ws` echo, through the proxy, with
/// one credential header.
async fn preview_ws(srv: &TestServer, host: &str, header: (&'static str, &str)) -> Ws {
    let tcp = tokio::net::TcpStream::connect(srv.preview_addr)
        .await
        .expect("proxy");
    let mut req = format!("ws://{host}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert(header.0, header.1.parse().expect("header"));
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("websocket through the proxy");
    assert_eq!(resp.status(), 101);
    ws
}

/// Sends `text` and expects its echo.
async fn echoes(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.expect("send");
    let got = tokio::time::timeout(ENDS_WITHIN, ws.next())
        .await
        .expect("an echo in time")
        .expect("a frame")
        .expect("a message");
    assert_eq!(
        got.into_text().expect("text").as_str(),
        format!("echo:{text}")
    );
}

/// Waits for the socket to end (a close frame, an error or EOF), failing
/// if it is still up after [`ENDS_WITHIN`]; returns the close frame's code.
async fn ends<S>(ws: &mut S) -> Option<u16>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(ENDS_WITHIN, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the connection should have ended once its access was revoked")
}

#[tokio::test]
async fn a_preview_websocket_closes_when_its_token_is_revoked_or_its_preview_deleted() {
    let srv = TestServer::start().await;
    let (port, _) = start_app().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id").to_string();
    let p = preview(&srv, &id, port, "private").await;
    let pid = p["id"].as_str().expect("id").to_string();
    let host = host_of(p["url"].as_str().expect("url"));
    let (doomed, doomed_id) = share(&srv, &id, &pid).await;
    let (kept, _) = share(&srv, &id, &pid).await;
    let mut by_doomed = preview_ws(&srv, &host, ("x-hearth-preview-token", &doomed)).await;
    let mut by_kept = preview_ws(&srv, &host, ("x-hearth-preview-token", &kept)).await;
    let bearer = format!("Bearer {}", srv.admin_key);
    let mut by_owner = preview_ws(&srv, &host, ("authorization", &bearer)).await;
    for ws in [&mut by_doomed, &mut by_kept, &mut by_owner] {
        echoes(ws, "before").await;
    }

    let (st, v) = srv
        .call(
            "DELETE",
            &format!("/sandboxes/{id}/share-tokens/{doomed_id}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    ends(&mut by_doomed).await;
    // The other token's socket and the owner's are untouched.
    echoes(&mut by_kept, "after one revocation").await;
    echoes(&mut by_owner, "after one revocation").await;

    // Deleting the preview ends every connection through it.
    let (st, v) = srv
        .call("DELETE", &format!("/sandboxes/{id}/previews/{pid}"), None)
        .await;
    assert!(st == 200 || st == 204, "{st} {v}");
    ends(&mut by_kept).await;
    ends(&mut by_owner).await;
}

/// Opens the tenant's event stream with `key` and reads until the first
/// frame (the stream is live).
async fn event_stream(srv: &TestServer, key: &str) -> reqwest::Response {
    let resp = srv
        .client_with(key)
        .get(srv.url("/api/v1/events/stream"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), 200);
    resp
}

/// Whether the SSE body ends within [`ENDS_WITHIN`] (reading past any
/// frames still coming).
async fn stream_ends(mut resp: reqwest::Response) -> bool {
    tokio::time::timeout(ENDS_WITHIN, async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn streams_and_terminals_opened_with_a_key_end_when_it_is_revoked() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id").to_string();
    let (doomed_id, doomed) = srv.tenant_key("doomed").await;
    let (_, kept) = srv.tenant_key("kept").await;

    let doomed_events = event_stream(&srv, &doomed).await;
    let kept_events = event_stream(&srv, &kept).await;
    let (tid, mut term) = srv.terminal_ws(&id, &doomed).await;
    term.send(Message::binary(b"echo alive\n".to_vec()))
        .await
        .expect("type");

    let (st, v) = srv
        .call("DELETE", &format!("/api-keys/{doomed_id}"), None)
        .await;
    assert!(st == 200 || st == 204, "{st} {v}");

    assert_eq!(
        ends(&mut term).await,
        Some(1008),
        "the terminal closes with 1008 (policy)"
    );
    assert!(
        stream_ends(doomed_events).await,
        "the revoked key's event stream should end"
    );
    assert!(
        !stream_ends(kept_events).await,
        "another key's event stream stays open"
    );
    // The shell itself runs on: the admin attaches to it again.
    let mut req = srv
        .url(&format!("/api/v1/sandboxes/{id}/terminals/{tid}/ws"))
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", srv.admin_key).parse().expect("header"),
    );
    let (mut term, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the admin attaches");
    term.send(Message::binary(b"echo still-$((40+2))\n".to_vec()))
        .await
        .expect("type");
    let mut out = String::new();
    tokio::time::timeout(ENDS_WITHIN, async {
        while let Some(Ok(m)) = term.next().await {
            if let Message::Binary(b) = m {
                out.push_str(&String::from_utf8_lossy(&b));
                if out.contains("still-42") {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the shell should still answer: {out:?}"));
}
