//! E2B compatibility through the HTTP API and the proxy (fake VMM; the
//! official E2B SDK on real VMs is `scripts/test-e2b`): the control API's
//! shapes and errors, envd's Connect RPC in both encodings and its REST
//! files, the access token, and which ports `<port>-<id>.<domain>` opens.

mod common;

use common::previews::{client_for, start_app};
use common::TestServer;
use hearth_e2b_proto::process::{process_event, ProcessConfig, StartRequest, StartResponse};
use prost::Message;
use serde_json::{json, Value};

async fn e2b(
    srv: &TestServer,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}/e2b{path}", srv.base.trim_end_matches("/api/v1"));
    let mut req = reqwest::Client::new().request(method.parse().expect("method"), url);
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A request to envd through the proxy, by the `E2b-Sandbox-Id` header.
fn envd(
    srv: &TestServer,
    sandbox: &str,
    token: Option<&str>,
    path: &str,
) -> reqwest::RequestBuilder {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}{path}", srv.preview_addr))
        .header("E2b-Sandbox-Id", sandbox);
    if let Some(t) = token {
        req = req.header("X-Access-Token", t);
    }
    req
}

/// The messages of a Connect stream body, and its trailer.
fn frames(body: &[u8]) -> (Vec<Vec<u8>>, Value) {
    let (mut msgs, mut at) = (Vec::new(), 0);
    while at + 5 <= body.len() {
        let flags = body[at];
        let len =
            u32::from_be_bytes([body[at + 1], body[at + 2], body[at + 3], body[at + 4]]) as usize;
        let msg = body[at + 5..at + 5 + len].to_vec();
        at += 5 + len;
        if flags & 2 != 0 {
            return (msgs, serde_json::from_slice(&msg).expect("trailer"));
        }
        msgs.push(msg);
    }
    panic!("no end-of-stream trailer in {} bytes", body.len());
}

fn envelope(msg: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

#[tokio::test]
async fn the_control_api_answers_in_e2b_shapes_and_errors() {
    let srv = TestServer::start().await;
    let key = srv.admin_key.clone();
    let (st, v) = e2b(
        &srv,
        Some(&key),
        "POST",
        "/sandboxes",
        Some(
            json!({"templateID": "minimal", "timeout": 120, "metadata": {"team": "a"},
                    "envVars": {"X": "1"}}),
        ),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let id = v["sandboxID"].as_str().expect("sandboxID").to_string();
    assert!(id.starts_with("sbx-"), "{id}");
    assert_eq!(v["templateID"], "minimal");
    assert_eq!(v["envdVersion"], "0.5.6");
    assert!(v["envdAccessToken"]
        .as_str()
        .is_some_and(|t| t.starts_with("ea_")));
    assert!(
        v["domain"]
            .as_str()
            .is_some_and(|d| d.starts_with("localhost")),
        "{v}"
    );

    let (st, v) = e2b(&srv, Some(&key), "GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["state"].clone(), v["metadata"]["team"].clone()),
        (json!("running"), json!("a"))
    );
    let (_, list) = e2b(
        &srv,
        Some(&key),
        "GET",
        "/v2/sandboxes?metadata=team%3Da",
        None,
    )
    .await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let (_, list) = e2b(
        &srv,
        Some(&key),
        "GET",
        "/v2/sandboxes?metadata=team%3Db",
        None,
    )
    .await;
    assert_eq!(list, json!([]));
    let (st, _) = e2b(
        &srv,
        Some(&key),
        "POST",
        &format!("/sandboxes/{id}/timeout"),
        Some(json!({"timeout": 300})),
    )
    .await;
    assert_eq!(st, 204);
    let (st, v) = e2b(
        &srv,
        Some(&key),
        "POST",
        &format!("/sandboxes/{id}/timeout"),
        Some(json!({})),
    )
    .await;
    assert_eq!((st, v["code"].clone()), (400, json!(400)), "{v}");

    // No key, a wrong key, another tenant: refused, and the sandbox lives.
    let (st, _) = e2b(&srv, None, "GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 401);
    let (st, _) = e2b(
        &srv,
        Some("hk_wrong"),
        "GET",
        &format!("/sandboxes/{id}"),
        None,
    )
    .await;
    assert_eq!(st, 401);
    let (st, v) = srv
        .call(
            "POST",
            "/api-keys",
            Some(json!({"name": "other", "tenant_id": "ten_other"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let other = v["data"]["key"].as_str().expect("key").to_string();
    for (method, path) in [
        ("GET", format!("/sandboxes/{id}")),
        ("DELETE", format!("/sandboxes/{id}")),
    ] {
        let (st, v) = e2b(&srv, Some(&other), method, &path, None).await;
        assert_eq!(
            (st, v["code"].clone()),
            (404, json!(404)),
            "{method} {path}: {v}"
        );
    }
    let (_, list) = e2b(&srv, Some(&other), "GET", "/sandboxes", None).await;
    assert_eq!(list, json!([]));
    // A scoped token reaches only what its scopes and its user allow: it
    // lists none of the key's sandboxes, cannot kill one, cannot create
    // without `sandboxes:create`, and gets no envd token without the exec
    // and file scopes (envd would give it both).
    let token = |scopes: Value| {
        let srv = &srv;
        async move {
            let body = json!({"user_id": "u", "workspace_id": "w", "scopes": scopes});
            let (st, v) = srv.call("POST", "/tokens/scoped", Some(body)).await;
            assert_eq!(st, 201, "{v}");
            v["data"]["token"].as_str().expect("token").to_string()
        }
    };
    let reader = token(json!(["sandboxes:read", "sandboxes:destroy"])).await;
    let (st, list) = e2b(&srv, Some(&reader), "GET", "/v2/sandboxes", None).await;
    assert_eq!((st, list), (200, json!([])));
    let (st, _) = e2b(
        &srv,
        Some(&reader),
        "DELETE",
        &format!("/sandboxes/{id}"),
        None,
    )
    .await;
    assert_eq!(st, 404);
    let minimal = json!({"templateID": "minimal"});
    let (st, v) = e2b(
        &srv,
        Some(&reader),
        "POST",
        "/sandboxes",
        Some(minimal.clone()),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    let creator = token(json!(["sandboxes:create", "sandboxes:read"])).await;
    let (st, v) = e2b(
        &srv,
        Some(&creator),
        "POST",
        "/sandboxes",
        Some(minimal.clone()),
    )
    .await;
    assert_eq!(
        (st, v["envdAccessToken"].clone()),
        (201, Value::Null),
        "{v}"
    );
    // Nor by the other ways to it: get answers none, connect (which
    // needs sandboxes:write) is refused.
    let made = v["sandboxID"].as_str().expect("id").to_string();
    for (method, path, want) in [
        ("GET", format!("/sandboxes/{made}"), 200),
        ("POST", format!("/sandboxes/{made}/connect"), 403),
        ("POST", format!("/v2/sandboxes/{made}/connect"), 403),
    ] {
        let (st, v) = e2b(&srv, Some(&creator), method, &path, None).await;
        assert_eq!(st, want, "{method} {path}: {v}");
        assert_eq!(v["envdAccessToken"], Value::Null, "{method} {path}: {v}");
    }
    let worker = token(json!([
        "sandboxes:create",
        "sandboxes:read",
        "sandboxes:exec",
        "sandboxes:files:read",
        "sandboxes:files:write"
    ]))
    .await;
    let (st, v) = e2b(&srv, Some(&worker), "POST", "/sandboxes", Some(minimal)).await;
    assert_eq!(st, 201, "{v}");
    assert!(
        v["envdAccessToken"]
            .as_str()
            .is_some_and(|t| t.starts_with("ea_")),
        "{v}"
    );
    // Both tokens belong to user u: each lists the two sandboxes u made.
    let (_, list) = e2b(&srv, Some(&reader), "GET", "/v2/sandboxes", None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");

    // envd's health (no token) says whether the sandbox runs.
    let health = || async {
        reqwest::Client::new()
            .get(format!("http://{}/health", srv.preview_addr))
            .header("E2b-Sandbox-Id", &id)
            .send()
            .await
            .expect("health")
            .status()
            .as_u16()
    };
    assert_eq!(health().await, 204);
    let (st, _) = e2b(
        &srv,
        Some(&key),
        "DELETE",
        &format!("/sandboxes/{id}"),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let (st, _) = e2b(&srv, Some(&key), "GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 404);
    assert_eq!(health().await, 502);
}

#[tokio::test]
async fn envd_runs_processes_and_moves_files_with_its_access_token() {
    let srv = TestServer::start().await;
    let key = srv.admin_key.clone();
    let (_, v) = e2b(
        &srv,
        Some(&key),
        "POST",
        "/sandboxes",
        Some(json!({"templateID": "minimal", "envVars": {"GREETING": "hi"}})),
    )
    .await;
    let id = v["sandboxID"].as_str().expect("id").to_string();
    let token = v["envdAccessToken"].as_str().expect("token").to_string();

    // GET /envs: the environment it was created with, with the token only.
    let get_envs = |token: Option<&str>| {
        let mut req = reqwest::Client::new()
            .get(format!("http://{}/envs", srv.preview_addr))
            .header("E2b-Sandbox-Id", &id);
        if let Some(t) = token {
            req = req.header("X-Access-Token", t);
        }
        req.send()
    };
    let resp = get_envs(Some(&token)).await.expect("envs");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"GREETING": "hi"})
    );
    assert_eq!(get_envs(None).await.expect("envs").status(), 401);

    // Start, streamed in protobuf: start, output, end.
    let req = StartRequest {
        process: Some(ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), "echo out-$V; echo err >&2; exit 4".into()],
            envs: [("V".to_string(), "7".to_string())].into(),
            cwd: None,
        }),
        ..Default::default()
    };
    let resp = envd(&srv, &id, Some(&token), "/process.Process/Start")
        .header("Content-Type", "application/connect+proto")
        .body(envelope(&req.encode_to_vec()))
        .send()
        .await
        .expect("start");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/connect+proto");
    let (msgs, trailer) = frames(&resp.bytes().await.expect("body"));
    assert_eq!(trailer, json!({}));
    let events: Vec<process_event::Event> = msgs
        .iter()
        .map(|m| {
            StartResponse::decode(m.as_slice())
                .expect("decode")
                .event
                .expect("event")
                .event
                .expect("oneof")
        })
        .collect();
    assert!(
        matches!(events.first(), Some(process_event::Event::Start(s)) if s.pid > 0),
        "{events:?}"
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for e in &events {
        if let process_event::Event::Data(d) = e {
            match d.output.clone() {
                Some(process_event::data_event::Output::Stdout(b)) => out.extend(b),
                Some(process_event::data_event::Output::Stderr(b)) => err.extend(b),
                _ => {}
            }
        }
    }
    assert_eq!(
        (out.as_slice(), err.as_slice()),
        (&b"out-7\n"[..], &b"err\n"[..])
    );
    assert!(
        matches!(events.last(), Some(process_event::Event::End(e)) if e.exit_code == 4 && e.exited),
        "{events:?}"
    );

    // The same in JSON; a unary call (List) in JSON.
    let body = json!({"process": {"cmd": "/bin/sh", "args": ["-c", "printf json"]}});
    let resp = envd(&srv, &id, Some(&token), "/process.Process/Start")
        .header("Content-Type", "application/connect+json")
        .body(envelope(body.to_string().as_bytes()))
        .send()
        .await
        .expect("start");
    let (msgs, _) = frames(&resp.bytes().await.expect("body"));
    let decoded: Vec<Value> = msgs
        .iter()
        .map(|m| serde_json::from_slice(m).expect("json"))
        .collect();
    assert!(
        decoded
            .iter()
            .any(|m| m["event"]["data"]["stdout"] == "anNvbg=="),
        "stdout as base64 bytes: {decoded:?}"
    );
    let resp = envd(&srv, &id, Some(&token), "/process.Process/List")
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert!(v.is_object(), "{v}");

    // A unary error: JSON with Connect's code and the HTTP status.
    let resp = envd(&srv, &id, Some(&token), "/filesystem.Filesystem/Stat")
        .header("Content-Type", "application/json")
        .body(json!({"path": "/no/such/file"}).to_string())
        .send()
        .await
        .expect("stat");
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["code"], "not_found", "{v}");

    // REST files: a multipart upload, then the bytes back.
    let dir = tempfile::tempdir().expect("dir");
    let target = dir.path().join("up.bin");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![0u8, 1, 2, 255]).file_name("up.bin"),
    );
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/files?path={}",
            srv.preview_addr,
            target.display()
        ))
        .header("E2b-Sandbox-Id", &id)
        .header("X-Access-Token", &token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v[0]["path"], target.display().to_string(), "{v}");
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/files?path={}",
            srv.preview_addr,
            target.display()
        ))
        .header("E2b-Sandbox-Id", &id)
        .header("X-Access-Token", &token)
        .send()
        .await
        .expect("download");
    assert_eq!(
        resp.bytes().await.expect("bytes").as_ref(),
        &[0u8, 1, 2, 255]
    );

    // Without the token, with another sandbox's, or for a sandbox that
    // does not run: refused.
    let (_, v) = e2b(
        &srv,
        Some(&key),
        "POST",
        "/sandboxes",
        Some(json!({"templateID": "minimal"})),
    )
    .await;
    let other_token = v["envdAccessToken"].as_str().expect("token").to_string();
    for t in [None, Some(other_token.as_str()), Some("ea_forged")] {
        let resp = envd(&srv, &id, t, "/process.Process/List")
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("list");
        assert_eq!(resp.status(), 401, "token {t:?}");
    }
    let resp = envd(&srv, "sbx-nope", Some(&token), "/process.Process/List")
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), 502);
}

#[tokio::test]
async fn e2b_port_hosts_open_e2b_sandboxes_ports_only() {
    let srv = TestServer::start().await;
    let key = srv.admin_key.clone();
    let (port, seen) = start_app().await;
    // Created through E2B's API: its ports are public, as E2B's are.
    let (_, v) = e2b(
        &srv,
        Some(&key),
        "POST",
        "/sandboxes",
        Some(json!({"templateID": "minimal"})),
    )
    .await;
    let e2b_id = v["sandboxID"].as_str().expect("id").to_string();
    let host = format!("{port}-{e2b_id}.localhost");
    let resp = client_for(&host, srv.preview_addr)
        .get(format!("http://{host}:{}/page", srv.preview_addr.port()))
        .header("Authorization", format!("Bearer {key}"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    // The Hearth key the client sent never reaches the app.
    assert!(seen
        .lock()
        .expect("seen")
        .iter()
        .all(|(_, headers)| headers.iter().all(|(k, _)| k != "authorization")));

    // A sandbox made with Hearth's own API keeps its ports private: the
    // E2B host form opens nothing without its access token.
    let own = srv.create_sandbox(json!({})).await;
    let own_id = own["id"].as_str().expect("id").replace('_', "-");
    let host = format!("{port}-{own_id}.localhost");
    let c = client_for(&host, srv.preview_addr);
    let url = format!("http://{host}:{}/page", srv.preview_addr.port());
    assert_eq!(c.get(&url).send().await.expect("get").status(), 404);
    let wrong = v["envdAccessToken"]
        .as_str()
        .expect("another sandbox's token");
    let resp = c
        .get(&url)
        .header("X-Access-Token", wrong)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404);
    let (_, detail) = e2b(
        &srv,
        Some(&key),
        "GET",
        &format!("/sandboxes/{own_id}"),
        None,
    )
    .await;
    let token = detail["envdAccessToken"].as_str().expect("token");
    let resp = c
        .get(&url)
        .header("X-Access-Token", token)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn snapshots_start_sandboxes_outlive_theirs_and_forks_answer_one_by_one() {
    let srv = TestServer::start().await;
    let key = srv.admin_key.clone();
    let minimal = json!({"templateID": "minimal", "metadata": {"from": "source"}});
    let (_, v) = e2b(&srv, Some(&key), "POST", "/sandboxes", Some(minimal)).await;
    let source = v["sandboxID"].as_str().expect("id").to_string();

    let (st, snap) = e2b(
        &srv,
        Some(&key),
        "POST",
        &format!("/sandboxes/{source}/snapshots"),
        Some(json!({"name": "ready-to-go"})),
    )
    .await;
    assert_eq!(st, 201, "{snap}");
    let snap_id = snap["snapshotID"].as_str().expect("snapshotID").to_string();
    assert_eq!(snap["names"], json!(["ready-to-go"]));
    let (st, v) = e2b(
        &srv,
        Some(&key),
        "POST",
        &format!("/sandboxes/{source}/snapshots"),
        Some(json!({"memory": false})),
    )
    .await;
    assert_eq!(st, 501, "{v}");
    for query in [
        format!("?sandboxID={source}"),
        "?name=ready-to-go".into(),
        String::new(),
    ] {
        let (st, list) = e2b(&srv, Some(&key), "GET", &format!("/snapshots{query}"), None).await;
        assert_eq!((st, list), (200, json!([snap.clone()])), "{query}");
    }

    // The source is killed; its snapshot still starts sandboxes.
    let (st, _) = e2b(
        &srv,
        Some(&key),
        "DELETE",
        &format!("/sandboxes/{source}"),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let body = json!({"templateID": snap_id, "timeout": 60, "metadata": {"from": "snapshot"}});
    let (st, v) = e2b(&srv, Some(&key), "POST", "/sandboxes", Some(body)).await;
    assert_eq!(st, 201, "{v}");
    let started = v["sandboxID"].as_str().expect("id").to_string();
    assert!(v["envdAccessToken"]
        .as_str()
        .is_some_and(|t| t.starts_with("ea_")));
    let (_, info) = e2b(
        &srv,
        Some(&key),
        "GET",
        &format!("/sandboxes/{started}"),
        None,
    )
    .await;
    assert_eq!(info["metadata"]["from"], "snapshot", "{info}");
    let body = json!({"templateID": snap_id, "envVars": {"A": "1"}});
    let (st, v) = e2b(&srv, Some(&key), "POST", "/sandboxes", Some(body)).await;
    assert_eq!(st, 400, "{v}");

    // Another tenant neither sees nor starts nor deletes it.
    let body = json!({"name": "other", "tenant_id": "ten_e2b_snapshots_other"});
    let (st, v) = srv.call("POST", "/api-keys", Some(body)).await;
    assert_eq!(st, 201, "{v}");
    let other = v["data"]["key"].as_str().expect("key").to_string();
    let (_, list) = e2b(&srv, Some(&other), "GET", "/snapshots", None).await;
    assert_eq!(list, json!([]));
    // Nor snapshots, forks or rewires the sandbox that made it.
    for (method, path, body) in [
        ("POST", format!("/sandboxes/{started}/snapshots"), json!({})),
        (
            "POST",
            format!("/sandboxes/{started}/fork"),
            json!({"count": 1}),
        ),
        (
            "PUT",
            format!("/sandboxes/{started}/network"),
            json!({"allowOut": ["203.0.113.9"]}),
        ),
    ] {
        let (st, v) = e2b(&srv, Some(&other), method, &path, Some(body)).await;
        assert_eq!(st, 404, "{method} {path}: {v}");
    }
    let body = json!({"templateID": snap_id});
    let (st, _) = e2b(&srv, Some(&other), "POST", "/sandboxes", Some(body)).await;
    assert_eq!(st, 404);
    let path = format!("/templates/{snap_id}");
    let (st, _) = e2b(&srv, Some(&other), "DELETE", &path, None).await;
    assert_eq!(st, 404);
    let (st, v) = e2b(&srv, Some(&key), "DELETE", &path, None).await;
    assert_eq!(st, 204, "{v}");
    let (st, _) = e2b(&srv, Some(&key), "DELETE", &path, None).await;
    assert_eq!(st, 404);
    let (st, v) = e2b(&srv, Some(&key), "DELETE", "/templates/base", None).await;
    assert_eq!(st, 501, "{v}");

    // Fork: one snapshot, a sandbox per entry, each with its own tokens.
    let fork = format!("/sandboxes/{started}/fork");
    let (st, v) = e2b(
        &srv,
        Some(&key),
        "POST",
        &fork,
        Some(json!({"count": 2, "timeout": 60})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let forks: Vec<String> = v
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| {
            e["sandbox"]["sandboxID"]
                .as_str()
                .expect("a sandbox")
                .to_string()
        })
        .collect();
    assert_eq!(forks.len(), 2);
    assert!(forks.iter().all(|f| f != &started) && forks[0] != forks[1]);
    let (_, snaps) = e2b(
        &srv,
        Some(&key),
        "GET",
        &format!("/snapshots?sandboxID={started}"),
        None,
    )
    .await;
    assert_eq!(
        snaps.as_array().map(Vec::len),
        Some(1),
        "one snapshot for both: {snaps}"
    );
    for count in [0, 21] {
        let (st, v) = e2b(
            &srv,
            Some(&key),
            "POST",
            &fork,
            Some(json!({"count": count})),
        )
        .await;
        assert_eq!(st, 400, "{count}: {v}");
    }
}

#[tokio::test]
async fn network_settings_become_the_egress_policy_and_traffic_needs_its_token() {
    let srv = TestServer::start().await;
    let key = srv.admin_key.clone();
    let body = json!({"templateID": "minimal", "network": {
        "allowOut": ["203.0.113.7"], "denyOut": ["0.0.0.0/0"], "allowPublicTraffic": false}});
    let (st, v) = e2b(&srv, Some(&key), "POST", "/v2/sandboxes", Some(body)).await;
    assert_eq!(st, 201, "{v}");
    let e2b_id = v["sandboxID"].as_str().expect("id").to_string();
    let traffic = v["trafficAccessToken"]
        .as_str()
        .expect("traffic token")
        .to_string();
    assert!(traffic.starts_with("ta_"), "{v}");
    let id = e2b_id.replace('-', "_");
    let policy = || async {
        let (st, v) = srv
            .call("GET", &format!("/sandboxes/{id}/network-policy"), None)
            .await;
        assert_eq!(st, 200, "{v}");
        v["data"].clone()
    };
    let p = policy().await;
    assert_eq!(p["default_effect"], "allow");
    assert_eq!(
        p["rules"],
        json!([{"effect": "allow", "destination": "203.0.113.7"},
               {"effect": "deny", "destination": "0.0.0.0/0"}])
    );

    let network = format!("/sandboxes/{e2b_id}/network");
    let put = |body: Value| e2b(&srv, Some(&key), "PUT", &network, Some(body));
    let (st, v) = put(
        json!({"allowOut": ["example.com"], "denyOut": ["0.0.0.0/0"],
        "dnsServers": ["192.0.2.53"]}),
    )
    .await;
    assert_eq!(st, 204, "{v}");
    let p = policy().await;
    assert_eq!(
        p["rules"][0],
        json!({"effect": "allow", "destination": "192.0.2.53", "ports": "53"})
    );
    assert_eq!(p["rules"][1]["destination"], "example.com");
    let (st, _) = put(json!({"allow_internet_access": false})).await;
    assert_eq!(st, 204);
    let p = policy().await;
    assert_eq!(
        (p["default_effect"].clone(), p["rules"].clone()),
        (json!("deny"), json!([]))
    );
    let (st, v) = put(json!({"egressProxy": {"address": "socks5://127.0.0.1:1080"}})).await;
    assert_eq!(st, 501, "{v}");
    let (st, v) = put(json!({"allowOut": ["not a host!"]})).await;
    assert_eq!(st, 400, "{v}");

    // Its ports answer only with the traffic token (or the envd one).
    let (port, _) = start_app().await;
    let host = format!("{port}-{e2b_id}.localhost");
    let c = client_for(&host, srv.preview_addr);
    let url = format!("http://{host}:{}/page", srv.preview_addr.port());
    assert_eq!(c.get(&url).send().await.expect("get").status(), 404);
    let wrong = c
        .get(&url)
        .header("e2b-traffic-access-token", "ta_wrong")
        .send()
        .await;
    assert_eq!(wrong.expect("get").status(), 404);
    let right = c
        .get(&url)
        .header("e2b-traffic-access-token", &traffic)
        .send()
        .await;
    assert_eq!(right.expect("get").status(), 200);
}

#[tokio::test]
async fn the_e2b_listener_serves_the_api_at_its_root() {
    let srv = TestServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = hearth_server::e2b::standalone(hearth_server::routes::router(srv.core.clone()));
    tokio::spawn(async move {
        use axum::ServiceExt;
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let _ = axum::serve(listener, app).await;
    });
    let c = reqwest::Client::new();
    let create = c
        .post(format!("http://{addr}/sandboxes"))
        .header("X-API-Key", &srv.admin_key)
        .json(&json!({"templateID": "minimal"}))
        .send()
        .await
        .expect("create");
    assert_eq!(create.status(), 201);
    let id = create.json::<Value>().await.expect("json")["sandboxID"].clone();
    let list: Value = c
        .get(format!("http://{addr}/v2/sandboxes"))
        .header("X-API-Key", &srv.admin_key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list[0]["sandboxID"], id);
    // Only E2B's API is there: Hearth's own is not, and a key is needed.
    let own = c
        .get(format!("http://{addr}/api/v1/sandboxes"))
        .header("X-API-Key", &srv.admin_key)
        .send()
        .await;
    assert_eq!(own.expect("get").status(), 501);
    let anon = c.get(format!("http://{addr}/v2/sandboxes")).send().await;
    assert_eq!(anon.expect("get").status(), 401);
}
