//! Custom domains of deployments through the API and the proxy (fake
//! VMM): a domain is served only once its TXT record holds its token (a
//! stand-in DNS server on loopback answers); a domain's own certificate is
//! checked against its name and key and served by SNI, sealed at rest;
//! another tenant can claim the name but not take it nor see ours.

mod common;

use common::previews::start_app;
use common::TestServer;
use serde_json::{json, Value};

async fn deploy(srv: &TestServer, sbx: &str, body: Value) -> (u16, Value) {
    srv.call("POST", &format!("/sandboxes/{sbx}/deploy"), Some(body))
        .await
}

async fn verify(srv: &TestServer, dep: &str, did: &str) -> (u16, Value) {
    let path = format!("/deployments/{dep}/domains/{did}/verify");
    srv.call("POST", &path, None).await
}

#[tokio::test]
async fn custom_domains_verify_by_txt_and_serve_with_their_own_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let default = rcgen::generate_simple_self_signed(vec![
        "*.preview.localhost".to_string(),
        "*.apps.localhost".to_string(),
        // Stands in for a wildcard an operator configured: a domain given
        // no certificate of its own is served with it.
        "*.example.test".to_string(),
    ])
    .expect("certificate");
    let default_pem = default.cert.pem();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &default_pem).expect("write cert");
    std::fs::write(&key_path, default.key_pair.serialize_pem()).expect("write key");
    let (dns, zone) = common::dns::start().await;
    let srv = TestServer::start_with(|c| {
        c.preview.tls_cert = Some(cert_path.clone());
        c.preview.tls_key = Some(key_path.clone());
        c.deployments.dns_servers = vec![dns];
    })
    .await;
    let (port, _) = start_app().await;
    let src = srv.create_sandbox(json!({})).await;
    let src = src["id"].as_str().expect("id").to_string();
    let (st, v) = deploy(
        &srv,
        &src,
        json!({"name": "shop", "port": port, "start_command": "true", "custom_domain": "shop.example.test"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let dep = v["data"]["deployment"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let shop = v["data"]["custom_domain"].clone();
    assert_eq!(shop["state"], "pending", "{v}");
    assert_eq!(shop["domain"], "shop.example.test");
    assert_eq!(
        shop["verification"]["name"],
        "_hearth-challenge.shop.example.test"
    );
    let token = shop["verification"]["value"]
        .as_str()
        .expect("value")
        .to_string();
    assert!(token.starts_with("hearth-verify="), "{token}");
    let shop_id = shop["id"].as_str().expect("id").to_string();
    assert_eq!(v["data"]["deployment"]["custom_domain_id"], Value::Null);

    let https = |host: &str, root: &str| {
        reqwest::Client::builder()
            .resolve(host, srv.preview_addr)
            .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).expect("pem"))
            .tls_built_in_root_certs(false)
            .build()
            .expect("client")
    };
    let port_of_proxy = srv.preview_addr.port();
    let fetch = |host: &'static str, root: String| {
        let c = https(host, &root);
        async move {
            c.get(format!("https://{host}:{port_of_proxy}/page"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    // Not verified: not served.
    assert_eq!(
        fetch("shop.example.test", default_pem.clone()).await.ok(),
        Some(404)
    );

    // No record, then a wrong one: 409 naming what was found.
    let (st, v) = verify(&srv, &dep, &shop_id).await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (409, json!("domain_not_verified")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no TXT record"),
        "{v}"
    );
    zone.set_txt(
        "_hearth-challenge.shop.example.test",
        &["hearth-verify=someone-else"],
    );
    let (st, v) = verify(&srv, &dep, &shop_id).await;
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("someone-else"),
        "{v}"
    );
    assert!(zone
        .asked
        .lock()
        .expect("asked")
        .iter()
        .all(|q| q == "_hearth-challenge.shop.example.test"));
    zone.set_txt(
        "_hearth-challenge.shop.example.test",
        &["unrelated", &token],
    );
    let (st, v) = verify(&srv, &dep, &shop_id).await;
    assert_eq!(
        (st, v["data"]["state"].clone()),
        (200, json!("verified")),
        "{v}"
    );
    let (_, v) = srv.call("GET", &format!("/deployments/{dep}"), None).await;
    assert_eq!(v["data"]["custom_domain_id"], shop_id.as_str(), "{v}");
    // Served, with the proxy's own certificate (none was given).
    assert_eq!(
        fetch("shop.example.test", default_pem.clone()).await.ok(),
        Some(200)
    );

    // A domain with its own certificate: checked against the name...
    let www = rcgen::generate_simple_self_signed(vec!["www.example.test".to_string()])
        .expect("certificate");
    let (www_pem, www_key) = (www.cert.pem(), www.key_pair.serialize_pem());
    let domains = format!("/deployments/{dep}/domains");
    let (st, v) = srv
        .call(
            "POST",
            &domains,
            Some(json!({"domain": "api.example.test", "certificate_pem": www_pem, "private_key_pem": www_key})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not valid for api.example.test"),
        "{v}"
    );
    let (st, v) = srv
        .call(
            "POST",
            &domains,
            Some(json!({"domain": "www.example.test", "certificate_pem": www_pem, "private_key_pem": default.key_pair.serialize_pem()})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    for bad in [
        "localhost",
        "x.apps.localhost",
        "Shop.Example.test",
        "10.0.0.1",
        "a..b",
    ] {
        let (st, v) = srv
            .call("POST", &domains, Some(json!({"domain": bad})))
            .await;
        assert_eq!(
            (st, v["error"]["details"][0]["field"].clone()),
            (422, json!("domain")),
            "{bad}: {v}"
        );
    }
    // ...then served for that name (SNI) once verified.
    let (st, v) = srv
        .call(
            "POST",
            &domains,
            Some(json!({"domain": "www.example.test", "certificate_pem": www_pem, "private_key_pem": www_key})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["has_certificate"], true);
    assert!(v["data"].get("private_key_pem").is_none());
    let www_id = v["data"]["id"].as_str().expect("id").to_string();
    let www_token = v["data"]["verification"]["value"]
        .as_str()
        .expect("v")
        .to_string();
    zone.set_txt("_hearth-challenge.www.example.test", &[&www_token]);
    let (st, v) = verify(&srv, &dep, &www_id).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        fetch("www.example.test", www_pem.clone()).await.ok(),
        Some(200)
    );
    assert!(
        fetch("www.example.test", default_pem.clone())
            .await
            .is_err(),
        "the domain's own certificate is served, not the proxy's"
    );
    // The key is sealed at rest.
    let key_line = www_key.lines().nth(1).expect("a key line").to_string();
    for (path, bytes) in common::at_rest::files_under(srv.dir.path()) {
        assert!(
            !common::at_rest::contains(&bytes, &key_line),
            "the key rests in {path:?}"
        );
    }

    // Another tenant may claim the name, but not take it, nor see ours.
    let other = srv.stranger().await;
    let (_, s) = srv
        .call_as(
            &other,
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "minimal"})),
        )
        .await;
    let sid = s["data"]["id"].as_str().expect("id");
    let (st, v) = srv
        .call_as(
            &other,
            "POST",
            &format!("/sandboxes/{sid}/deploy"),
            Some(json!({"name": "thief", "port": port, "start_command": "true", "custom_domain": "www.example.test"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let theirs = v["data"]["deployment"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let their_dom = v["data"]["custom_domain"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let their_token = v["data"]["custom_domain"]["verification"]["value"]
        .as_str()
        .expect("v")
        .to_string();
    zone.set_txt(
        "_hearth-challenge.www.example.test",
        &[&www_token, &their_token],
    );
    let (st, v) = srv
        .call_as(
            &other,
            "POST",
            &format!("/deployments/{theirs}/domains/{their_dom}/verify"),
            None,
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (409, json!("domain_taken")),
        "{v}"
    );
    for path in [domains.clone(), format!("{domains}/{www_id}/verify")] {
        let method = if path.ends_with("verify") {
            "POST"
        } else {
            "GET"
        };
        let (st, _) = srv.call_as(&other, method, &path, None).await;
        assert_eq!(st, 404, "{path}");
    }
    let (st, _) = srv
        .call_as(&other, "DELETE", &format!("{domains}/{www_id}"), None)
        .await;
    assert_eq!(st, 404);

    // Removed: no longer served.
    let (st, v) = srv
        .call("DELETE", &format!("{domains}/{www_id}"), None)
        .await;
    assert_eq!(
        (st, v["data"]["deleted"].clone()),
        (200, json!(true)),
        "{v}"
    );
    let (_, v) = srv.call("GET", &domains, None).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        fetch("www.example.test", default_pem.clone()).await.ok(),
        Some(404)
    );
}
