//! `/metrics`: an admin key on the API listener (the numbers cover every
//! tenant), no key on the `[metrics] listen` listener, and label values
//! from closed sets whatever methods and paths clients invent.

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use rand::Rng;

/// Every value of `label` in the request histogram's series.
fn label_values(text: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    text.lines()
        .filter(|l| l.starts_with("hearth_http_request_duration_seconds_count{"))
        .filter_map(|l| l.split(&needle).nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn metrics_take_an_admin_key() {
    let srv = TestServer::start().await;
    let anonymous = reqwest::Client::new();
    let tenant = srv.stranger().await;
    for path in ["/metrics", "/api/v1/metrics"] {
        let resp = anonymous.get(srv.url(path)).send().await.expect("get");
        assert_eq!(resp.status(), 401, "{path} without a key");
        let body = resp.text().await.expect("body");
        assert!(!body.contains("hearth_sandboxes"), "{body}");
        let resp = tenant.get(srv.url(path)).send().await.expect("get");
        assert_eq!(resp.status(), 403, "{path} with a tenant key");
        let resp = srv.client.get(srv.url(path)).send().await.expect("get");
        assert_eq!(resp.status(), 200, "{path} with the admin key");
        assert!(resp
            .text()
            .await
            .expect("body")
            .contains("hearth_sandboxes{"));
    }
    let resp = anonymous
        .get(srv.url("/metrics"))
        .header("authorization", "Bearer hk_wrong")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 401);
    let resp = anonymous
        .get(srv.url("/metrics"))
        .header("x-api-key", &srv.admin_key)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200, "X-API-Key as on the API");
}

#[tokio::test]
async fn invented_methods_and_paths_do_not_grow_the_label_set() {
    let srv = TestServer::start().await;
    let anonymous = reqwest::Client::new();
    let mut rng = rand::thread_rng();
    for i in 0..200 {
        let method: String = (0..8)
            .map(|_| char::from(rng.gen_range(b'A'..=b'Z')))
            .collect();
        let method = reqwest::Method::from_bytes(format!("X{method}{i}").as_bytes())
            .expect("an extension method");
        let path = match i % 3 {
            0 => format!("/api/v1/sandboxes/sbx_{i}"),
            1 => format!("/nothing/here/{i}"),
            _ => "/healthz".to_string(),
        };
        let client = if i % 2 == 0 { &srv.client } else { &anonymous };
        let st = client
            .request(method, srv.url(&path))
            .send()
            .await
            .expect("request")
            .status();
        assert!(st.is_client_error(), "{st}");
    }
    let text = srv
        .client
        .get(srv.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let methods = label_values(&text, "method");
    let routes = label_values(&text, "route");
    let statuses = label_values(&text, "status");
    assert!(methods.contains("other"), "{methods:?}");
    assert!(
        methods
            .iter()
            .all(|m| ["GET", "other"].contains(&m.as_str())),
        "{methods:?}"
    );
    assert!(
        routes
            .iter()
            .all(|r| !r.contains("sbx_") && !r.contains("/nothing/")),
        "raw paths became labels: {routes:?}"
    );
    assert!(routes.len() <= 4, "{routes:?}");
    assert!(statuses.iter().all(|s| s.ends_with("xx")), "{statuses:?}");
    let series = text
        .lines()
        .filter(|l| l.starts_with("hearth_http_request_duration_seconds_count{"))
        .count();
    assert!(
        series <= 12,
        "{series} series after 200 invented requests:\n{text}"
    );
}

#[tokio::test]
async fn the_metrics_listener_serves_metrics_alone_without_a_key() {
    let srv = TestServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = hearth_server::routes::system::metrics_router(srv.core.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let anonymous = reqwest::Client::new();
    let resp = anonymous
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert!(resp
        .text()
        .await
        .expect("body")
        .contains("hearth_sandboxes{"));
    for path in ["/api/v1/sandboxes", "/api/v1/metrics", "/healthz"] {
        let resp = srv
            .client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 404, "{path} is not on the metrics listener");
    }
}
