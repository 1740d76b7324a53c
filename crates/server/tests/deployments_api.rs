//! Deployments through the HTTP API and the proxy: publish a sandbox, the
//! app serves at `<slug>.apps.<domain>` from an instance the deployment
//! owns, also after the source is destroyed; a version whose health check
//! never passes is `failed` and the URL stays; a healthy one is promoted;
//! rollback serves the earlier version again; another tenant sees none of
//! it; deleting stops it. (The fake VMM's instances tunnel to an app on
//! the test's own loopback; real VMs are in the CLI's `deployments_vm`.)

mod common;

use std::time::Duration;

use common::previews::{client_for, host_of, start_app};
use common::{wait_until, TestServer};
use serde_json::{json, Value};

async fn deploy(srv: &TestServer, sbx: &str, body: Value) -> (u16, Value) {
    srv.call("POST", &format!("/sandboxes/{sbx}/deploy"), Some(body))
        .await
}

async fn get_url(srv: &TestServer, url: &str) -> (u16, String) {
    let c = client_for(&host_of(url), srv.preview_addr);
    let resp = c.get(format!("{url}/page")).send().await.expect("get");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn publish_serve_fail_promote_roll_back_and_delete() {
    let srv = TestServer::start().await;
    let (port, _) = start_app().await;
    let src = srv.create_sandbox(json!({})).await;
    let src = src["id"].as_str().expect("id").to_string();

    let (st, v) = deploy(
        &srv,
        &src,
        json!({"name": "web", "port": port, "start_command": "true", "health_check_path": "/healthz"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let d = &v["data"];
    assert_eq!(d["promoted"], true, "{v}");
    assert_eq!(d["deployment"]["state"], "running");
    assert_eq!(d["version"]["state"], "active");
    assert_eq!(d["version"]["version_number"], 1);
    assert_eq!(d["version"]["kind"], "sandbox_backed");
    let dep = d["deployment"]["id"].as_str().expect("id").to_string();
    let v1 = d["version"]["id"].as_str().expect("id").to_string();
    let url = d["deployment"]["public_url"]
        .as_str()
        .expect("url")
        .to_string();
    assert!(url.contains(".apps.localhost:"), "{url}");
    assert_eq!(
        get_url(&srv, &url).await,
        (200, "app saw GET /page with 0 body bytes".into())
    );

    // The instance is the deployment's, not among the tenant's sandboxes.
    let (_, list) = srv.call("GET", "/sandboxes", None).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, [src.as_str()], "{list}");
    let (_, inst) = srv
        .call(
            "GET",
            &format!("/deployments/{dep}/runtime-instances"),
            None,
        )
        .await;
    assert_eq!(inst["data"].as_array().map(Vec::len), Some(1), "{inst}");
    assert_eq!(inst["data"][0]["active"], true);

    // The source goes; production stays.
    let (st, _) = srv.call("DELETE", &format!("/sandboxes/{src}"), None).await;
    assert_eq!(st, 200);
    assert_eq!(get_url(&srv, &url).await.0, 200);

    // A version whose health check never passes: failed, URL unchanged.
    let src2 = srv.create_sandbox(json!({})).await;
    let src2 = src2["id"].as_str().expect("id").to_string();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (st, v) = deploy(
        &srv,
        &src2,
        json!({"deployment_id": dep, "port": closed, "start_command": "true", "health_timeout_sec": 2}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["promoted"], false, "{v}");
    assert_eq!(v["data"]["version"]["state"], "failed");
    assert!(
        v["data"]["version"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not healthy")),
        "{v}"
    );
    assert_eq!(v["data"]["deployment"]["active_version_id"], v1.as_str());
    assert_eq!(get_url(&srv, &url).await.0, 200);

    // A healthy v3 is promoted; rollback serves v1 again.
    let (st, v) = deploy(
        &srv,
        &src2,
        json!({"deployment_id": dep, "port": port, "start_command": "true"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["promoted"], true, "{v}");
    assert_eq!(v["data"]["version"]["version_number"], 3);
    let v3 = v["data"]["version"]["id"].as_str().expect("id").to_string();
    assert_eq!(get_url(&srv, &url).await.0, 200);
    let (st, v) = srv
        .call(
            "POST",
            &format!("/deployments/{dep}/rollback"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["data"]["version"]["id"],
        v1.as_str(),
        "back to the version before: {v}"
    );
    assert_eq!(v["data"]["deployment"]["active_version_id"], v1.as_str());
    let (_, vs) = srv
        .call("GET", &format!("/deployments/{dep}/versions"), None)
        .await;
    let states: Vec<(i64, String)> = vs["data"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version_number"].as_i64().unwrap_or(0),
                v["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (3, "retired".into()),
            (2, "failed".into()),
            (1, "active".into())
        ],
        "{vs}"
    );
    let (st, v) = srv
        .call(
            "POST",
            &format!("/deployments/{dep}/versions/{v3}/promote"),
            None,
        )
        .await;
    assert_eq!(
        (st, v["data"]["promoted"].clone()),
        (200, json!(true)),
        "{v}"
    );

    // Another tenant sees none of it.
    let other = srv.stranger().await;
    let (st, _) = srv
        .call_as(&other, "GET", &format!("/deployments/{dep}"), None)
        .await;
    assert_eq!(st, 404);
    let (_, v) = srv.call_as(&other, "GET", "/deployments", None).await;
    assert_eq!(v["data"], json!([]));
    let (st, _) = srv
        .call_as(&other, "DELETE", &format!("/deployments/{dep}"), None)
        .await;
    assert_eq!(st, 404);

    // One name per tenant; bad bodies are 422.
    let (st, v) = deploy(
        &srv,
        &src2,
        json!({"name": "web", "port": port, "start_command": "true"}),
    )
    .await;
    assert_eq!(st, 409, "{v}");
    for (body, field) in [
        (json!({"name": "x", "start_command": "true"}), "port"),
        (json!({"name": "x", "port": 80}), "start_command"),
        (json!({"port": 80, "start_command": "true"}), "name"),
        (
            json!({"name": "x", "port": 80, "start_command": "true", "health_check_path": "nope"}),
            "health_check_path",
        ),
    ] {
        let (st, v) = deploy(&srv, &src2, body.clone()).await;
        assert_eq!(st, 422, "{body}: {v}");
        assert_eq!(v["error"]["details"][0]["field"], field, "{v}");
    }

    // Deleting stops it: the URL is gone, its instances are destroyed.
    let (st, v) = srv
        .call("DELETE", &format!("/deployments/{dep}"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(get_url(&srv, &url).await.0, 404);
    let (st, _) = srv.call("GET", &format!("/deployments/{dep}"), None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn publish_stop_redeploy_rename_and_read_logs() {
    let srv = TestServer::start().await;
    let (port, _) = start_app().await;
    let src = srv.create_sandbox(json!({})).await;
    let src = src["id"].as_str().expect("id").to_string();
    let (st, v) = deploy(
        &srv,
        &src,
        json!({"name": "api", "port": port, "run_command": "echo started-$((6*7))"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let dep = v["data"]["deployment"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let url = v["data"]["deployment"]["public_url"]
        .as_str()
        .expect("url")
        .to_string();
    let v1 = v["data"]["version"]["id"].as_str().expect("id").to_string();

    // Its start command's output, for the deployment and per instance.
    let (st, logs) = srv
        .call("GET", &format!("/deployments/{dep}/logs?lines=5"), None)
        .await;
    assert_eq!(st, 200, "{logs}");
    assert_eq!(logs["data"]["stdout"], "started-42", "{logs}");
    let (_, inst) = srv
        .call(
            "GET",
            &format!("/deployments/{dep}/runtime-instances"),
            None,
        )
        .await;
    let iid = inst["data"][0]["id"].as_str().expect("iid").to_string();
    let (st, one) = srv
        .call(
            "GET",
            &format!("/deployments/{dep}/runtime-instances/{iid}"),
            None,
        )
        .await;
    assert_eq!(
        (st, one["data"]["active"].clone()),
        (200, json!(true)),
        "{one}"
    );
    let (st, l) = srv
        .call(
            "GET",
            &format!("/deployments/{dep}/runtime-instances/{iid}/logs"),
            None,
        )
        .await;
    assert_eq!(
        (st, l["data"]["stdout"].clone()),
        (200, json!("started-42")),
        "{l}"
    );
    let (st, v) = srv
        .call("GET", &format!("/deployments/{dep}/logs?lines=0"), None)
        .await;
    assert_eq!(st, 422, "{v}");
    let (st, v) = srv
        .call("GET", &format!("/deployments/{dep}/versions/{v1}"), None)
        .await;
    assert_eq!(
        (st, v["data"]["state"].clone()),
        (200, json!("active")),
        "{v}"
    );

    // Publish by deployment, not waiting: 202 at once with the version
    // building; it goes live in the background.
    let (st, v) = srv
        .call(
            "POST",
            &format!("/deployments/{dep}/publish"),
            Some(
                json!({"source_sandbox_id": src, "port": port, "start_command": "true",
                        "build_command": "sleep 1; echo built", "wait": false}),
            ),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["data"]["version"]["version_number"], 2);
    assert_eq!(v["data"]["version"]["state"], "building");
    assert_eq!(v["data"]["promoted"], false);
    let v2 = v["data"]["version"]["id"].as_str().expect("id").to_string();
    let version = wait_until(Duration::from_secs(30), "v2 to go live", || async {
        let (_, v) = srv
            .call("GET", &format!("/deployments/{dep}/versions/{v2}"), None)
            .await;
        (v["data"]["state"] != "building").then_some(v)
    })
    .await;
    assert_eq!(version["data"]["state"], "active", "{version}");
    assert_eq!(version["data"]["build_log"], "built\n");
    let (_, d) = srv.call("GET", &format!("/deployments/{dep}"), None).await;
    assert_eq!(d["data"]["active_version_id"], v2.as_str(), "{d}");

    // Rename, then stop: the URL answers 404; redeploy serves again.
    let (st, v) = srv
        .call(
            "PATCH",
            &format!("/deployments/{dep}"),
            Some(json!({"name": "api-renamed", "metadata": {"team": "web"}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["name"], "api-renamed");
    assert_eq!(v["data"]["metadata"]["team"], "web");
    let (st, v) = srv
        .call("POST", &format!("/deployments/{dep}/stop"), None)
        .await;
    assert_eq!(
        (st, v["data"]["state"].clone()),
        (200, json!("stopped")),
        "{v}"
    );
    assert_eq!(get_url(&srv, &url).await.0, 404);
    let (_, inst) = srv
        .call(
            "GET",
            &format!("/deployments/{dep}/runtime-instances"),
            None,
        )
        .await;
    assert_eq!(inst["data"], json!([]), "{inst}");
    let (st, v) = srv
        .call("POST", &format!("/deployments/{dep}/redeploy"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["promoted"], true);
    assert_eq!(v["data"]["deployment"]["state"], "running");
    assert_eq!(get_url(&srv, &url).await.0, 200);
    let (st, v) = srv.call("GET", "/deployments?state=running", None).await;
    assert_eq!(st, 200);
    assert_eq!(v["data"][0]["id"], dep.as_str(), "{v}");
}

/// The ids of a deployment's runtime instances that serve it.
async fn serving(srv: &TestServer, dep: &str) -> Vec<String> {
    srv.deployment_instances(dep)
        .await
        .iter()
        .filter(|i| i["active"] == true)
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// How many runtime instances the deployment has (serving or draining).
async fn instance_count(srv: &TestServer, dep: &str) -> usize {
    srv.deployment_instances(dep).await.len()
}

#[tokio::test]
async fn replicas_scale_env_builds_external_ids_and_usage() {
    let srv = TestServer::start().await;
    let (port, seen) = start_app().await;
    let src = srv
        .create_sandbox(json!({"external_workspace_id": "ws-1"}))
        .await;
    let src = src["id"].as_str().expect("id").to_string();

    // Two replicas; a build that writes to both streams, kept in order.
    let (st, v) = deploy(
        &srv,
        &src,
        json!({
            "name": "multi", "port": port, "replicas": 2, "domain": "multi-app",
            "build_command": "echo building-$((1+1)); echo warned >&2; pwd",
            "output_path": "/tmp",
            "start_command": "echo \"GREETING=$GREETING in $(pwd)\"; exec sleep 600",
        }),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let d = &v["data"];
    assert_eq!(d["promoted"], true, "{v}");
    assert_eq!(d["deployment"]["replicas"], 2);
    assert_eq!(d["deployment"]["external_workspace_id"], "ws-1");
    assert_eq!(d["deployment"]["slug"], "multi-app");
    let url = d["deployment"]["public_url"]
        .as_str()
        .expect("url")
        .to_string();
    assert!(url.contains("multi-app.apps.localhost"), "{url}");
    assert_eq!(
        d["version"]["build_log"], "building-2\nwarned\n/tmp\n",
        "{v}"
    );
    assert_eq!(d["version"]["output_path"], "/tmp");
    let dep = d["deployment"]["id"].as_str().expect("id").to_string();
    let first = serving(&srv, &dep).await;
    assert_eq!(first.len(), 2, "{first:?}");
    let mut ids: Vec<String> =
        serde_json::from_value(d["deployment"]["instance_ids"].clone()).expect("instance_ids");
    ids.sort();
    assert_eq!(ids, first, "the listing and the deployment agree");
    // Neither the instances nor the build's clone are the tenant's
    // sandboxes.
    let (_, list) = srv.call("GET", "/sandboxes", None).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    for _ in 0..4 {
        assert_eq!(get_url(&srv, &url).await.0, 200);
    }
    let pages = |seen: &common::previews::Seen| {
        let seen = seen.lock().expect("seen");
        seen.iter()
            .filter(|(line, _)| line.contains("/page"))
            .count()
    };
    assert_eq!(pages(&seen), 4, "health checks aside");
    // A name taken by another deployment is a conflict.
    let (st, v) = deploy(
        &srv,
        &src,
        json!({"name": "other", "port": port, "start_command": "true", "domain": "multi-app"}),
    )
    .await;
    assert_eq!(st, 409, "{v}");

    // The environment: validated, stored, applied by a redeploy (fresh
    // instances in place of both).
    let env_path = format!("/deployments/{dep}/env");
    let (st, v) = srv
        .call("PUT", &env_path, Some(json!({"env": {"1BAD": "x"}})))
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["details"][0]["field"], "env.1BAD", "{v}");
    let (st, v) = srv.call("PUT", &env_path, Some(json!({}))).await;
    assert_eq!(st, 422, "{v}");
    let (st, v) = srv
        .call(
            "PUT",
            &env_path,
            Some(json!({"env": {"GREETING": "hello"}})),
        )
        .await;
    assert_eq!(
        (st, v["data"]["env"]["GREETING"].clone()),
        (200, json!("hello")),
        "{v}"
    );
    let (_, v) = srv.call("GET", &env_path, None).await;
    assert_eq!(v["data"]["env"], json!({"GREETING": "hello"}), "{v}");
    let (st, v) = srv
        .call("POST", &format!("/deployments/{dep}/redeploy"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    let second = serving(&srv, &dep).await;
    assert_eq!(second.len(), 2);
    assert!(
        second.iter().all(|i| !first.contains(i)),
        "{first:?} {second:?}"
    );
    // A new instance's start command prints once it runs, which may be
    // just after it is first listed as serving.
    let logs_path = format!("/deployments/{dep}/logs");
    wait_until(
        Duration::from_secs(10),
        "the new instances' start-command output",
        || async {
            let (_, logs) = srv.call("GET", &logs_path, None).await;
            (logs["data"]["stdout"] == "GREETING=hello in /tmp").then_some(())
        },
    )
    .await;
    // The replaced ones drain, then go.
    wait_until(
        Duration::from_secs(15),
        "the old instances to stop",
        || async { (instance_count(&srv, &dep).await == 2).then_some(()) },
    )
    .await;

    // Scale up (healthy before they join), then down (the extra drain).
    let path = format!("/deployments/{dep}");
    let (st, v) = srv.call("PATCH", &path, Some(json!({"replicas": 3}))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["replicas"], 3);
    let three = serving(&srv, &dep).await;
    assert_eq!(three.len(), 3);
    assert!(
        second.iter().all(|i| three.contains(i)),
        "scaling up keeps the serving ones"
    );
    let (st, v) = srv.call("PATCH", &path, Some(json!({"replicas": 1}))).await;
    assert_eq!(
        (st, v["data"]["instance_ids"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{v}"
    );
    wait_until(
        Duration::from_secs(15),
        "the extra instances to stop",
        || async { (instance_count(&srv, &dep).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(get_url(&srv, &url).await.0, 200);
    for bad in [json!({"replicas": 0}), json!({"replicas": 21})] {
        let (st, v) = srv.call("PATCH", &path, Some(bad)).await;
        assert_eq!(
            (st, v["error"]["details"][0]["field"].clone()),
            (422, json!("replicas")),
            "{v}"
        );
    }

    // A build that fails: the version is failed with its log; production
    // stays.
    let (st, v) = deploy(
        &srv,
        &src,
        json!({"deployment_id": dep, "port": port, "start_command": "true",
               "build_command": "echo oops; exit 3"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["promoted"], false, "{v}");
    assert_eq!(v["data"]["version"]["state"], "failed");
    assert_eq!(v["data"]["version"]["error"], "the build exited with 3");
    assert_eq!(v["data"]["version"]["build_log"], "oops\n");
    assert_eq!(v["data"]["deployment"]["state"], "running");
    assert_eq!(get_url(&srv, &url).await.0, 200);
    // Instances take the source's shape (they restore its memory
    // snapshot): another is refused naming what it is.
    let (_, shape) = srv.call("GET", &format!("/sandboxes/{src}"), None).await;
    let cpus = shape["data"]["cpu_count"].as_u64().expect("cpu_count");
    let (st, v) = deploy(
        &srv,
        &src,
        json!({"deployment_id": dep, "port": port, "start_command": "true",
               "resources": {"cpu_count": cpus + 1}}),
    )
    .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(
        v["error"]["details"][0]["field"], "resources.cpu_count",
        "{v}"
    );
    let (st, v) = deploy(
        &srv,
        &src,
        json!({"deployment_id": dep, "port": port, "start_command": "true",
               "resources": {"cpu_count": cpus}}),
    )
    .await;
    assert_eq!(
        (st, v["data"]["promoted"].clone()),
        (201, json!(true)),
        "{v}"
    );

    // Listing by external ids.
    let (_, v) = srv
        .call("GET", "/deployments?external_workspace_id=ws-1", None)
        .await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "{v}");
    let (_, v) = srv
        .call("GET", "/deployments?external_workspace_id=ws-2", None)
        .await;
    assert_eq!(v["data"], json!([]), "{v}");

    // Usage labelled with the deployment: its instances' time.
    let (st, v) = srv.call("GET", "/usage?group_by=deployment_id", None).await;
    assert_eq!(st, 200, "{v}");
    let groups = v["data"]["groups"].as_array().expect("groups");
    let mine = groups
        .iter()
        .find(|g| g["key"] == dep.as_str())
        .unwrap_or_else(|| panic!("no usage for {dep}: {v}"));
    assert!(mine["runtime_sec"].as_f64().unwrap_or(0.0) > 0.0, "{v}");

    // The replicas quota: a tenant allowed 1 cannot run 2.
    let other = srv.stranger().await;
    let (st, v) = srv
        .call(
            "PUT",
            "/tenants/ten_other/quotas",
            Some(json!({"replicas": 1})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, s) = srv
        .call_as(
            &other,
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "minimal"})),
        )
        .await;
    assert_eq!(st, 201, "{s}");
    let sid = s["data"]["id"].as_str().expect("id");
    let (st, v) = srv
        .call_as(
            &other,
            "POST",
            &format!("/sandboxes/{sid}/deploy"),
            Some(json!({"name": "big", "port": port, "start_command": "true", "replicas": 2})),
        )
        .await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error"]["details"]["quota"], "replicas", "{v}");
}
