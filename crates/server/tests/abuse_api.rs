//! Hostile tenants against the control plane (issue 15): every test here
//! is an attack through the HTTP API, and asserts it fails.

mod common;

use common::at_rest::{contains, files_under};
use common::TestServer;
use serde_json::{json, Value};

/// The id of the admin key (the only admin key a fresh server has).
async fn admin_key_id(srv: &TestServer) -> String {
    let (_, v) = srv.call("GET", "/api-keys", None).await;
    let keys = v["data"].as_array().expect("keys");
    let admin: Vec<&Value> = keys.iter().filter(|k| k["admin"] == true).collect();
    assert_eq!(admin.len(), 1, "{v}");
    admin[0]["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn a_tenant_key_cannot_revoke_the_admin_key() {
    let srv = TestServer::start().await;
    let admin_id = admin_key_id(&srv).await;
    let (_, plain) = srv.tenant_key("worker").await;
    let worker = srv.client_with(&plain);
    let (st, v) = srv
        .call_as(&worker, "DELETE", &format!("/api-keys/{admin_id}"), None)
        .await;
    assert_eq!(st, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("admin")),
        "{v}"
    );
    // The admin key still works, and can revoke the worker's.
    let (st, _) = srv.call("GET", "/sandboxes", None).await;
    assert_eq!(st, 200);
    // A key cannot revoke itself either.
    let (_, v) = srv.call_as(&worker, "GET", "/api-keys", None).await;
    let worker_id = v["data"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == "worker")
        .and_then(|k| k["id"].as_str())
        .expect("worker id")
        .to_string();
    let (st, _) = srv
        .call_as(&worker, "DELETE", &format!("/api-keys/{worker_id}"), None)
        .await;
    assert_eq!(st, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_wins_against_requests_in_flight() {
    let srv = std::sync::Arc::new(TestServer::start().await);
    for round in 0..8 {
        let (id, plain) = srv.tenant_key(&format!("racer{round}")).await;
        let client = srv.client_with(&plain);
        // Requests with the key run while it is revoked: lookups that read
        // the store before the revocation must not put it back in the cache.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut hammers = Vec::new();
        for _ in 0..4 {
            let (srv, client, stop) = (srv.clone(), client.clone(), stop.clone());
            hammers.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = srv.call_as(&client, "GET", "/sandboxes", None).await;
                }
            }));
        }
        let (st, v) = srv.call("DELETE", &format!("/api-keys/{id}"), None).await;
        assert_eq!(st, 200, "{v}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in hammers {
            h.await.expect("hammer");
        }
        for _ in 0..5 {
            let (st, _) = srv.call_as(&client, "GET", "/sandboxes", None).await;
            assert_eq!(st, 401, "round {round}: a revoked key was accepted");
        }
    }
}

#[tokio::test]
async fn env_cannot_change_in_any_state_and_no_route_answers_501() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({"env": {"A": "1"}})).await;
    let id = sbx["id"].as_str().expect("id");
    for state in ["running", "paused"] {
        if state == "paused" {
            let (st, v) = srv
                .call("POST", &format!("/sandboxes/{id}/pause"), None)
                .await;
            assert_eq!(st, 200, "{v}");
        }
        for method in ["PUT", "DELETE"] {
            let (st, v) = srv
                .call(
                    method,
                    &format!("/sandboxes/{id}/env"),
                    Some(json!({"B": "2"})),
                )
                .await;
            assert_eq!(st, 409, "{method} while {state}: {v}");
            assert_eq!(v["error"]["code"], "invalid_state", "{v}");
            let msg = v["error"]["message"].as_str().expect("message");
            assert!(msg.contains(state) && msg.contains("each exec"), "{msg}");
        }
    }
}

#[tokio::test]
async fn patched_metadata_is_bounded_in_total() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({"name": "before"})).await;
    let id = sbx["id"].as_str().expect("id");
    let chunk = "x".repeat(6 * 1024);
    for k in ["a", "b"] {
        let (st, v) = srv
            .call(
                "PATCH",
                &format!("/sandboxes/{id}"),
                Some(json!({"metadata": {k: chunk}})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    // Each patch is small; merged in, the third is over the 16 KiB total.
    let (st, v) = srv
        .call(
            "PATCH",
            &format!("/sandboxes/{id}"),
            Some(json!({"name": "after", "metadata": {"c": chunk}})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["details"][0]["field"], "metadata", "{v}");
    assert!(v.to_string().contains("16 KiB"), "{v}");
    let (_, v) = srv.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(
        v["data"]["name"], "before",
        "nothing of a refused patch applies"
    );
    assert!(v["data"]["metadata"].get("c").is_none(), "{v}");
    // Removing keys (null) makes room again.
    let (st, v) = srv
        .call(
            "PATCH",
            &format!("/sandboxes/{id}"),
            Some(json!({"metadata": {"a": null, "c": chunk}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test]
async fn credentials_never_rest_in_plain_text_and_the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let srv = TestServer::start().await;
    let secret = "sek-9f1c2e7d-never-on-disk";
    let sbx = srv
        .create_sandbox(json!({"env": {"PLAIN": "p"}, "secret_env": {"API_TOKEN": secret}}))
        .await;
    let id = sbx["id"].as_str().expect("id");
    assert_eq!(sbx["env_keys"], json!(["API_TOKEN", "PLAIN"]));
    // The guest has it.
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "printf %s \"$API_TOKEN\""})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["stdout"], secret);
    // A new API key and a share token, each minted with an Idempotency-Key
    // (so the response carrying them is kept for replay).
    let mint = |path: String, body: Value, idem: &'static str| {
        let req = srv
            .client
            .post(srv.url(&format!("/api/v1{path}")))
            .header("idempotency-key", idem)
            .json(&body);
        async move {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let replayed = resp.headers().contains_key("idempotent-replayed");
            (status, replayed, resp.json::<Value>().await.expect("json"))
        }
    };
    let (st, _, v) = mint("/api-keys".into(), json!({"name": "minted"}), "mint-key-1").await;
    assert_eq!(st, 201, "{v}");
    let new_key = v["data"]["key"].as_str().expect("key").to_string();
    let (st, replayed, again) =
        mint("/api-keys".into(), json!({"name": "minted"}), "mint-key-1").await;
    assert_eq!((st, replayed), (201, true), "{again}");
    assert_eq!(
        again["data"]["key"],
        new_key.as_str(),
        "the replay answers the same key"
    );
    let (st, v) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/previews"),
            Some(json!({"port": 8080, "visibility": "private"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let prv = v["data"]["id"].as_str().expect("preview id").to_string();
    let (st, _, v) = mint(
        format!("/sandboxes/{id}/previews/{prv}/share"),
        json!({"ttl_seconds": 600}),
        "share-1",
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let share = v["preview_token"].as_str().expect("token").to_string();

    let data = srv.core.data_dir().to_path_buf();
    let files = files_under(&data);
    // The database: SQLite's file is among them; PostgreSQL's rows are
    // read back raw, every column of every table.
    let rows = match &srv.core.config.database_url {
        Some(url) => common::postgres_rows(url).await,
        None => {
            assert!(
                files.iter().any(|(p, _)| p.ends_with("hearth.db")),
                "{files:?}"
            );
            vec![]
        }
    };
    for (path, bytes) in files.iter().chain(&rows) {
        for (what, needle) in [
            ("secret_env value", secret),
            ("new API key", new_key.as_str()),
            ("share token", share.as_str()),
        ] {
            assert!(
                !contains(bytes, needle),
                "{what} in plain text in {}",
                path.display()
            );
        }
    }
    // Only the owner may enter the data directory or read what is in it.
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for (path, _) in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("hearth.db") || name.ends_with(".key") {
            assert_eq!(mode(path), 0o600, "{}", path.display());
        }
    }
    // The env route still lists the secret's name, never its value.
    let (_, v) = srv.call("GET", &format!("/sandboxes/{id}/env"), None).await;
    let vars = v["data"]["vars"].as_array().expect("vars");
    let token = vars
        .iter()
        .find(|x| x["key"] == "API_TOKEN")
        .expect("listed");
    assert_eq!(
        (token["value"].clone(), token["secret"].clone()),
        (Value::Null, json!(true))
    );
}

/// A key of a new tenant `tenant`, made by the admin.
async fn tenant_client(srv: &TestServer, tenant: &str) -> reqwest::Client {
    let (st, v) = srv
        .call(
            "POST",
            "/api-keys",
            Some(json!({"name": "t", "tenant_id": tenant})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    srv.client_with(v["data"]["key"].as_str().expect("key"))
}

#[tokio::test]
async fn quotas_stop_a_tenant_at_its_limits_and_only_admins_set_them() {
    let srv = TestServer::start().await;
    let t = tenant_client(&srv, "ten_q").await;
    // A tenant cannot raise its own limits.
    let (st, _) = srv
        .call_as(
            &t,
            "PUT",
            "/tenants/ten_q/quotas",
            Some(json!({"sandboxes": 99})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, v) = srv
        .call(
            "PUT",
            "/tenants/ten_q/quotas",
            Some(json!({"sandboxes": 2, "vcpus": 3, "previews": 1, "api_keys": 2})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["limits"]["sandboxes"], 2);
    assert_eq!(
        v["data"]["limits"]["snapshots"], 500,
        "unset quotas keep the default"
    );
    let (st, v) = srv
        .call(
            "PUT",
            "/tenants/ten_q/quotas",
            Some(json!({"sandboxes": -1})),
        )
        .await;
    assert!(st == 422 || st == 400, "{st} {v}");

    let create = |body: Value| srv.call_as(&t, "POST", "/sandboxes", Some(body));
    let (st, a) = create(json!({"cpu_count": 2})).await;
    assert_eq!(st, 201, "{a}");
    // 2 + 2 vCPUs is over 3.
    let (st, v) = create(json!({"cpu_count": 2})).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error"]["code"], "quota_exceeded");
    assert_eq!(
        v["error"]["quota"],
        json!({"name": "vcpus", "used": 2, "limit": 3})
    );
    // API.md's shape: `details: {quota, limit, used}`.
    assert_eq!(
        v["error"]["details"],
        json!({"quota": "vcpus", "used": 2, "limit": 3})
    );
    let (st, b) = create(json!({"cpu_count": 1})).await;
    assert_eq!(st, 201, "{b}");
    let (st, v) = create(json!({"cpu_count": 1})).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error"]["quota"]["name"], "sandboxes");
    // The tenant sees its use.
    let (st, v) = srv.call_as(&t, "GET", "/quotas", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["usage"]["sandboxes"], 2);
    assert_eq!(v["data"]["usage"]["vcpus"], 3);
    // Previews and keys.
    let a_id = a["data"]["id"].as_str().expect("id");
    let previews = format!("/sandboxes/{a_id}/previews");
    let prv = |port: u16| srv.call_as(&t, "POST", &previews, Some(json!({"port": port})));
    assert_eq!(prv(3000).await.0, 201);
    let (st, v) = prv(3001).await;
    assert_eq!(
        (st, v["error"]["quota"]["name"].clone()),
        (429, json!("previews")),
        "{v}"
    );
    assert_eq!(
        srv.call_as(&t, "POST", "/api-keys", Some(json!({})))
            .await
            .0,
        201
    );
    let (st, v) = srv.call_as(&t, "POST", "/api-keys", Some(json!({}))).await;
    assert_eq!(
        (st, v["error"]["quota"]["name"].clone()),
        (429, json!("api_keys")),
        "{v}"
    );
    // Destroying frees the room; another tenant never counted.
    let (st, _) = srv
        .call_as(&t, "DELETE", &format!("/sandboxes/{a_id}"), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(create(json!({"cpu_count": 1})).await.0, 201);
    let (st, v) = srv.call("GET", "/quotas", None).await;
    assert_eq!(
        (st, v["data"]["usage"]["sandboxes"].clone()),
        (200, json!(0)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_overcommit_a_quota() {
    let srv = std::sync::Arc::new(TestServer::start().await);
    let t = tenant_client(&srv, "ten_race").await;
    let (st, v) = srv
        .call(
            "PUT",
            "/tenants/ten_race/quotas",
            Some(json!({"sandboxes": 2})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (srv, t) = (srv.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            srv.call_as(&t, "POST", "/sandboxes", Some(json!({})))
                .await
                .0
        }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.expect("task"));
    }
    codes.sort();
    assert_eq!(codes, vec![201, 201, 429, 429, 429, 429]);
}

#[tokio::test]
async fn a_key_past_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let srv = TestServer::start_with(|c| {
        c.api_rps = 2;
        c.api_burst = 5;
    })
    .await;
    let (_, plain) = srv.tenant_key("busy").await;
    let busy = srv.client_with(&plain);
    let mut limited = None;
    for _ in 0..20 {
        let resp = busy
            .get(srv.url("/api/v1/sandboxes"))
            .send()
            .await
            .expect("request");
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.expect("20 requests at once stay under a burst of 5");
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "rate_limited");
    // The admin's key has its own bucket.
    let (st, _) = srv.call("GET", "/sandboxes", None).await;
    assert_eq!(st, 200);
}

/// `requests_per_sec` is a tenant quota: an admin lifts one tenant's
/// rate (its keys then pass where the default would refuse) and lowers
/// another's, and both show in `GET /quotas`.
#[tokio::test]
async fn an_admin_sets_a_tenants_request_rate() {
    let srv = TestServer::start_with(|c| {
        c.api_rps = 1;
        c.api_burst = 3;
    })
    .await;
    // The admin lifts its own tenant's limit first (its third request).
    let (st, v) = srv
        .call(
            "PUT",
            "/tenants/ten_default/quotas",
            Some(json!({ "requests_per_sec": 0 })),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let fast = tenant_client(&srv, "ten_fast").await;
    let slow = tenant_client(&srv, "ten_slow").await;
    for (tenant, rate) in [("ten_fast", 1000), ("ten_slow", 0)] {
        let (st, v) = srv
            .call(
                "PUT",
                &format!("/tenants/{tenant}/quotas"),
                Some(json!({ "requests_per_sec": rate })),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["data"]["limits"]["requests_per_sec"], rate, "{v}");
    }
    // 0 is no limit; 1000/s with bursts of 4000: 30 requests pass for both,
    // where the default (1/s, bursts of 3) stops at the fourth.
    for (name, c) in [("fast", &fast), ("unlimited", &slow)] {
        for i in 0..30 {
            let (st, v) = srv.call_as(c, "GET", "/quotas", None).await;
            assert_eq!(st, 200, "{name} request {i}: {v}");
        }
    }
    let (st, v) = srv
        .call(
            "PUT",
            "/tenants/ten_slow/quotas",
            Some(json!({ "requests_per_sec": 1 })),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(srv.call_as(&slow, "GET", "/sandboxes", None).await.0);
    }
    assert!(
        codes.contains(&429),
        "1/s with bursts of 4 stops 10 at once: {codes:?}"
    );
    let (st, v) = srv
        .call(
            "PUT",
            "/tenants/ten_slow/quotas",
            Some(json!({ "requests_per_sec": 2_000_000 })),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["details"][0]["field"], "requests_per_sec", "{v}");
}

#[tokio::test]
async fn a_resume_takes_its_vcpus_back_within_the_quota() {
    let srv = TestServer::start().await;
    let t = tenant_client(&srv, "ten_resume").await;
    let (st, v) = srv
        .call(
            "PUT",
            "/tenants/ten_resume/quotas",
            Some(json!({"vcpus": 2})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, a) = srv
        .call_as(&t, "POST", "/sandboxes", Some(json!({"cpu_count": 2})))
        .await;
    assert_eq!(st, 201, "{a}");
    let a_id = a["data"]["id"].as_str().expect("id");
    let (st, v) = srv
        .call_as(&t, "POST", &format!("/sandboxes/{a_id}/pause"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    // Paused, it holds no vCPUs: another sandbox takes them.
    let (st, b) = srv
        .call_as(&t, "POST", "/sandboxes", Some(json!({"cpu_count": 2})))
        .await;
    assert_eq!(st, 201, "{b}");
    let (st, v) = srv
        .call_as(&t, "POST", &format!("/sandboxes/{a_id}/resume"), None)
        .await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(
        v["error"]["quota"],
        json!({"name": "vcpus", "used": 2, "limit": 2})
    );
    let b_id = b["data"]["id"].as_str().expect("id");
    let (st, _) = srv
        .call_as(&t, "DELETE", &format!("/sandboxes/{b_id}"), None)
        .await;
    assert_eq!(st, 200);
    let (st, v) = srv
        .call_as(&t, "POST", &format!("/sandboxes/{a_id}/resume"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["state"], "running");
}

/// The field a 422 names first, and its message.
fn first_bad_field(v: &Value) -> (String, String) {
    let d = &v["error"]["details"][0];
    (
        d["field"].as_str().unwrap_or_default().to_string(),
        d["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn every_query_parameter_is_bounded_with_a_422_naming_it() {
    let srv = TestServer::start().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id");
    let long = "w".repeat(257);
    let many_tags = (0..51)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(",");
    // (path and query, the field the 422 must name, a word its message must hold)
    let cases = [
        (
            format!("/sandboxes?external_workspace_id={long}"),
            "external_workspace_id",
            "256",
        ),
        (
            format!("/sandboxes?external_user_id={long}"),
            "external_user_id",
            "256",
        ),
        (
            format!("/sandboxes?template_id={long}"),
            "template_id",
            "256",
        ),
        (format!("/sandboxes?tags={many_tags}"), "tags", "50"),
        (
            format!("/sandboxes?tags={}", "t".repeat(65)),
            "tags[0]",
            "64",
        ),
        (
            "/sandboxes?external_user_id=a%0Ab".to_string(),
            "external_user_id",
            "control",
        ),
        ("/sandboxes?page_size=101".to_string(), "page_size", "100"),
        ("/sandboxes?page=99999999999".to_string(), "page", ">= 1"),
        // A repeated key is the JSON envelope naming it, not a plain-text 400.
        (
            "/sandboxes?state=running&state=paused".to_string(),
            "state",
            "duplicate",
        ),
        ("/events/stream?after=x".to_string(), "after", "integer"),
        ("/events/stream?after=-1".to_string(), "after", "integer"),
        (
            format!("/sandboxes/{id}/events?types={}", "a".repeat(129)),
            "types",
            "128",
        ),
        (
            format!("/sandboxes/{id}/processes?page_size=0"),
            "page_size",
            "1-100",
        ),
        (
            format!("/sandboxes/{id}/usage?period_start=99999999999999999"),
            "period_start",
            "unix",
        ),
        ("/usage?group_by=nope".to_string(), "group_by", "sandbox_id"),
    ];
    for (uri, field, word) in &cases {
        let (st, v) = srv.call("GET", uri, None).await;
        assert_eq!(st, 422, "GET {uri}: {v}");
        assert_eq!(v["error"]["code"], "validation_error", "GET {uri}: {v}");
        let (f, msg) = first_bad_field(&v);
        assert_eq!(&f, field, "GET {uri}: {v}");
        assert!(msg.contains(word), "GET {uri}: {msg:?} should say {word:?}");
    }
    let (st, v) = srv
        .call("POST", "/sandboxes?wait=maybe", Some(json!({})))
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(first_bad_field(&v).0, "wait", "{v}");
    // At the bound, each is accepted.
    let ok = "w".repeat(256);
    let (st, v) = srv
        .call(
            "GET",
            &format!("/sandboxes?external_workspace_id={ok}&tags=a,b&page_size=100"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let resp = srv
        .client
        .get(srv.url("/api/v1/events/stream?after=0"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), 200);
}
