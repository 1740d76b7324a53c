//! Share tokens listed and revoked through the API: one by id, every token
//! of a sandbox (sandbox-wide ones included, which nothing could revoke
//! before), and never another tenant's. A revoked token fails on the very
//! next request through the proxy, from a URL, a header or a cookie.

mod common;

use common::previews::*;
use common::TestServer;
use serde_json::{json, Value};

/// Status of a GET through the proxy with `token` in the header.
async fn open_with(c: &reqwest::Client, url: &str, token: &str) -> u16 {
    c.get(format!("{url}/"))
        .header("x-hearth-preview-token", token)
        .send()
        .await
        .expect("get")
        .status()
        .as_u16()
}

#[tokio::test]
async fn share_tokens_are_listed_and_revoked_by_id_and_by_sandbox() {
    let srv = TestServer::start().await;
    let (port1, _) = start_app().await;
    let (port2, _) = start_app().await;
    let sbx = srv.create_sandbox(json!({})).await;
    let id = sbx["id"].as_str().expect("id").to_string();
    let p1 = preview(&srv, &id, port1, "private").await;
    let p2 = preview(&srv, &id, port2, "private").await;
    let (pid1, pid2) = (
        p1["id"].as_str().expect("id").to_string(),
        p2["id"].as_str().expect("id").to_string(),
    );
    let (url1, url2) = (
        p1["url"].as_str().expect("url").to_string(),
        p2["url"].as_str().expect("url").to_string(),
    );
    let (c1, c2) = (
        client_for(&host_of(&url1), srv.preview_addr),
        client_for(&host_of(&url2), srv.preview_addr),
    );
    let (t1, t1_id) = share(&srv, &id, &pid1).await;
    let (t2, t2_id) = share(&srv, &id, &pid1).await;
    let (t3, _) = share(&srv, &id, &pid2).await;
    let (st, v) = srv
        .call("POST", &format!("/sandboxes/{id}/preview-token"), None)
        .await;
    assert_eq!(st, 201, "{v}");
    let (wide, wide_id) = (
        v["token"].as_str().expect("token").to_string(),
        v["token_id"].as_str().expect("id").to_string(),
    );
    assert_eq!(
        open_with(&c1, &url1, &wide).await,
        200,
        "sandbox-wide opens p1"
    );
    assert_eq!(open_with(&c2, &url2, &wide).await, 200, "and p2");
    // The cookie a browser got from the sandbox-wide link.
    let (_, _, wide_cookie) = open_share_link(&c1, &format!("{url1}/?preview_token={wide}")).await;

    // Listed newest first, without secrets.
    let (st, list) = srv
        .call("GET", &format!("/sandboxes/{id}/share-tokens"), None)
        .await;
    assert_eq!(st, 200, "{list}");
    let items = list["data"].as_array().expect("list");
    let ids: Vec<&str> = items
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], wide_id);
    assert_eq!(items[0]["preview_id"], Value::Null);
    assert_eq!(items[0]["prefix"], &wide[..12]);
    assert_eq!(
        (items[0]["revoked"].clone(), items[0]["expired"].clone()),
        (json!(false), json!(false))
    );
    for secret in [&t1, &t2, &t3, &wide] {
        assert!(!list.to_string().contains(secret.as_str()));
    }
    let (_, only_p1) = srv
        .call(
            "GET",
            &format!("/sandboxes/{id}/previews/{pid1}/share"),
            None,
        )
        .await;
    let p1_ids: Vec<&str> = only_p1["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(p1_ids, [t2_id.as_str(), t1_id.as_str()]);

    // Another tenant sees and revokes nothing: 404 everywhere.
    let stranger = srv.stranger().await;
    for (method, path) in [
        ("GET", format!("/sandboxes/{id}/share-tokens")),
        ("DELETE", format!("/sandboxes/{id}/share-tokens")),
        ("DELETE", format!("/sandboxes/{id}/share-tokens/{wide_id}")),
        ("GET", format!("/sandboxes/{id}/previews/{pid1}/share")),
        (
            "DELETE",
            format!("/sandboxes/{id}/previews/{pid1}/share/{t1_id}"),
        ),
    ] {
        let (st, v) = srv.call_as(&stranger, method, &path, None).await;
        assert_eq!(st, 404, "{method} {path}: {v}");
    }
    // A token of another preview is not found under this one.
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("/sandboxes/{id}/previews/{pid2}/share/{t1_id}"),
            None,
        )
        .await;
    assert_eq!(st, 404);
    assert_eq!(open_with(&c1, &url1, &wide).await, 200, "still live");
    assert_eq!(open_with(&c1, &url1, &t1).await, 200, "still live");

    // One token by id: the very next request fails, the others work.
    let (st, v) = srv
        .call(
            "DELETE",
            &format!("/sandboxes/{id}/previews/{pid1}/share/{t2_id}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["data"]["id"].as_str(), v["data"]["revoked"].clone()),
        (Some(t2_id.as_str()), json!(true))
    );
    assert_eq!(open_with(&c1, &url1, &t2).await, 401);
    assert_eq!(open_with(&c1, &url1, &t1).await, 200);
    // Again: nothing changes, revoked_at stays.
    let (st, again) = srv
        .call(
            "DELETE",
            &format!("/sandboxes/{id}/previews/{pid1}/share/{t2_id}"),
            None,
        )
        .await;
    assert_eq!(
        (st, &again["data"]["revoked_at"]),
        (200, &v["data"]["revoked_at"])
    );

    // The per-preview DELETE leaves the sandbox-wide token alone...
    let (st, v) = srv
        .call(
            "DELETE",
            &format!("/sandboxes/{id}/previews/{pid1}/share"),
            None,
        )
        .await;
    assert_eq!(
        (st, v["data"]["revoked"].clone()),
        (200, json!(1)),
        "t1 only"
    );
    assert_eq!(open_with(&c1, &url1, &t1).await, 401);
    assert_eq!(open_with(&c1, &url1, &wide).await, 200);
    // ...the sandbox-wide DELETE takes it and every other one.
    let (st, v) = srv
        .call("DELETE", &format!("/sandboxes/{id}/share-tokens"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["data"],
        json!({"sandbox_id": id, "revoked": 2}),
        "wide and t3"
    );
    assert_eq!(open_with(&c1, &url1, &wide).await, 401);
    assert_eq!(open_with(&c2, &url2, &wide).await, 401);
    assert_eq!(open_with(&c2, &url2, &t3).await, 401);
    let resp = c1
        .get(format!("{url1}/"))
        .header("cookie", &wide_cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 401, "a browser's cookie dies with its token");
    assert!(resp.text().await.expect("body").contains("revoked"));
    let (_, list) = srv
        .call("GET", &format!("/sandboxes/{id}/share-tokens"), None)
        .await;
    assert!(list["data"]
        .as_array()
        .expect("list")
        .iter()
        .all(|t| t["revoked"] == json!(true) && t["revoked_at"].is_string()));

    // A fresh sandbox-wide token, revoked by id at the sandbox level.
    let (_, v) = srv
        .call("POST", &format!("/sandboxes/{id}/preview-token"), None)
        .await;
    let (fresh, fresh_id) = (
        v["token"].as_str().expect("token").to_string(),
        v["token_id"].as_str().expect("id").to_string(),
    );
    assert_eq!(open_with(&c2, &url2, &fresh).await, 200);
    let (st, v) = srv
        .call(
            "DELETE",
            &format!("/sandboxes/{id}/share-tokens/{fresh_id}"),
            None,
        )
        .await;
    assert_eq!(
        (st, v["data"]["revoked"].clone()),
        (200, json!(true)),
        "{v}"
    );
    assert_eq!(open_with(&c2, &url2, &fresh).await, 401);
    let (st, _) = srv
        .call(
            "DELETE",
            &format!("/sandboxes/{id}/share-tokens/pvt_nosuchtoken"),
            None,
        )
        .await;
    assert_eq!(st, 404);
}
