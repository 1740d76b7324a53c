//! Templates built from a BuildSpec, through the API, on the server with
//! agents in place of VMs (see `common`): build states, the log stream,
//! readiness failures, versions, and sandboxes created from a template.
//! The real-VM version (the file and the server really in the clone) is in
//! the CLI crate's tests.

mod common;

use std::time::Duration;

use common::{log_frames, TestServer};
use serde_json::{json, Value};

/// Polls a build until it is `ready` or `failed`.
async fn wait_build(srv: &TestServer, id: &str) -> Value {
    for _ in 0..400 {
        let (st, v) = srv
            .call("GET", &format!("/sandbox-template-builds/{id}"), None)
            .await;
        assert_eq!(st, 200, "{v}");
        if matches!(v["data"]["state"].as_str(), Some("ready" | "failed")) {
            return v["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("build {id} did not finish");
}

fn spec_in(dir: &std::path::Path, extra: Value) -> Value {
    let mut spec = json!({
        "from": "minimal",
        "workdir": dir.to_str().expect("utf8"),
        "cpu_count": 1,
        "memory_mb": 256,
        "disk_size_mb": 512,
    });
    for (k, v) in extra.as_object().expect("object") {
        spec[k] = v.clone();
    }
    spec
}

#[tokio::test]
async fn build_a_template_and_create_sandboxes_from_it() {
    let srv = TestServer::start().await;
    let work = tempfile::tempdir().expect("workdir");
    let spec = spec_in(
        work.path(),
        json!({
            "steps": [
                {"run": "echo built > marker.txt && echo step-output"},
                {"copy": {"path": "conf/app.txt", "content_base64": "aGVsbG8=", "mode": 0o600}},
            ],
            "env": {"GREETING": "hi"},
            "start_cmd": "sleep 60",
            "ready_cmd": "test -f marker.txt && test \"$GREETING\" = hi",
        }),
    );
    let (st, v) = srv
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "web", "build_spec": spec})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let tpl_id = v["data"]["id"].as_str().expect("id").to_string();
    assert!(tpl_id.starts_with("tpl_"));
    assert_eq!(v["data"]["build"]["version"], 1);
    let build_id = v["data"]["build"]["id"]
        .as_str()
        .expect("build id")
        .to_string();
    assert!(matches!(
        v["data"]["build"]["state"].as_str(),
        Some("queued" | "building")
    ));

    let b = wait_build(&srv, &build_id).await;
    assert_eq!(b["state"], "ready", "{b}");
    assert!(b["duration_ms"].as_i64().is_some());
    assert_eq!(
        std::fs::read_to_string(work.path().join("marker.txt")).expect("step ran"),
        "built\n"
    );
    let copied = work.path().join("conf/app.txt");
    assert_eq!(std::fs::read(&copied).expect("copied"), b"hello");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&copied)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // The log: every phase, the step's output, and the end.
    let frames = log_frames(&srv, &build_id, None).await;
    let texts: Vec<String> = frames
        .iter()
        .filter(|(k, _)| k == "log")
        .map(|(_, d)| d["text"].as_str().unwrap_or_default().to_string())
        .collect();
    for want in [
        "step 1: run echo built",
        "step-output",
        "step 2: copied 5 bytes",
        "start_cmd running as pid",
        "ready after 1 attempt",
        "version 1 ready",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(want)),
            "{want:?} not in log: {texts:#?}"
        );
    }
    let (kind, end) = frames.last().expect("frames");
    assert_eq!(
        (kind.as_str(), end["state"].as_str()),
        ("done", Some("ready"))
    );
    // Resuming after the second-to-last line replays only the last one.
    let n = texts.len() as u64;
    let tail = log_frames(&srv, &build_id, Some(n - 2)).await;
    assert_eq!(tail.len(), 2, "one line and the end: {tail:?}");

    // The template, by id and by name, and in the list.
    let (st, t) = srv.call("GET", "/sandbox-templates/web", None).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        (t["data"]["id"].as_str(), t["data"]["version"].as_str()),
        (Some(tpl_id.as_str()), Some("v1"))
    );
    let (_, list) = srv.call("GET", "/sandbox-templates", None).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["default", "minimal", tpl_id.as_str()]);

    // A sandbox of it takes the template's shape and restores its snapshot.
    let (st, s) = srv
        .call("POST", "/sandboxes", Some(json!({"template_id": "web"})))
        .await;
    assert_eq!(st, 201, "{s}");
    let s = &s["data"];
    assert_eq!(s["template_id"], tpl_id.as_str());
    assert_eq!(s["template_version"], "v1");
    assert_eq!(s["boot_path"], "snapshot");
    assert_eq!(
        (s["cpu_count"].as_u64(), s["memory_mb"].as_u64()),
        (Some(1), Some(256))
    );
    // Asking for another size is refused with the reason.
    let (st, e) = srv
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"template_id": tpl_id, "memory_mb": 512})),
        )
        .await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(e["error"]["details"][0]["field"], "cpu_count", "{e}");
    let msg = e["error"]["details"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains("1 vCPU, 256 MiB memory and 512 MiB disk"),
        "{msg}"
    );

    // A rebuild is version 2; the name then points at it.
    let (st, b2) = srv
        .call("POST", &format!("/sandbox-templates/{tpl_id}/builds"), None)
        .await;
    assert_eq!(st, 202, "{b2}");
    assert_eq!(b2["data"]["version"], 2);
    let b2 = wait_build(&srv, b2["data"]["id"].as_str().expect("id")).await;
    assert_eq!(b2["state"], "ready", "{b2}");
    let (_, t) = srv
        .call("GET", &format!("/sandbox-templates/{tpl_id}"), None)
        .await;
    assert_eq!(t["data"]["version"], "v2");
    assert_eq!(t["data"]["versions"].as_array().map(Vec::len), Some(2));
    let (st, s2) = srv
        .call("POST", "/sandboxes", Some(json!({"template_id": "web"})))
        .await;
    assert_eq!(st, 201, "{s2}");
    assert_eq!(s2["data"]["template_version"], "v2");
}

#[tokio::test]
async fn a_build_whose_ready_cmd_never_succeeds_fails_with_its_log() {
    let srv = TestServer::start().await;
    let work = tempfile::tempdir().expect("workdir");
    let spec = spec_in(
        work.path(),
        json!({
            "start_cmd": "echo server-starting; sleep 60",
            "ready_cmd": "echo not-yet; false",
            "ready_timeout_sec": 1,
        }),
    );
    let (st, v) = srv
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "never", "build_spec": spec})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let build_id = v["data"]["build"]["id"].as_str().expect("id").to_string();
    let b = wait_build(&srv, &build_id).await;
    assert_eq!(b["state"], "failed");
    let err = b["error"].as_str().expect("error");
    assert!(
        err.contains("ready_cmd did not succeed within 1 s"),
        "{err}"
    );
    let frames = log_frames(&srv, &build_id, None).await;
    let all = serde_json::to_string(&frames).expect("json");
    for want in ["not-yet", "server-starting", "build failed: ready_cmd"] {
        assert!(all.contains(want), "{want:?} not in the log: {all}");
    }
    assert_eq!(frames.last().expect("end").1["state"], "failed");
    // No version exists: creating from it says so.
    let (st, e) = srv
        .call("POST", "/sandboxes", Some(json!({"template_id": "never"})))
        .await;
    assert_eq!(st, 422, "{e}");
    assert!(e.to_string().contains("no ready version"), "{e}");
    let (_, t) = srv.call("GET", "/sandbox-templates/never", None).await;
    assert_eq!(
        (t["data"]["state"].as_str(), t["data"]["version"].clone()),
        (Some("failed"), Value::Null)
    );

    // A start_cmd that dies fails the build at once, not at the deadline.
    let spec = spec_in(
        work.path(),
        json!({"start_cmd": "exit 3", "ready_cmd": "false", "ready_timeout_sec": 600}),
    );
    let (_, v) = srv
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "dies", "build_spec": spec})),
        )
        .await;
    let started = std::time::Instant::now();
    let b = wait_build(&srv, v["data"]["build"]["id"].as_str().expect("id")).await;
    assert_eq!(b["state"], "failed");
    assert!(
        b["error"]
            .as_str()
            .unwrap_or_default()
            .contains("start_cmd exited with 3"),
        "{b}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // A failing step stops the build with the step's exit code.
    let spec = spec_in(
        work.path(),
        json!({"steps": [{"run": "echo boom >&2; exit 7"}]}),
    );
    let (_, v) = srv
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "badstep", "build_spec": spec})),
        )
        .await;
    let b = wait_build(&srv, v["data"]["build"]["id"].as_str().expect("id")).await;
    assert_eq!(
        b["error"], "step 1 (echo boom >&2; exit 7) exited with 7",
        "{b}"
    );
}

#[tokio::test]
async fn bad_specs_names_and_other_tenants_are_refused() {
    let srv = TestServer::start().await;
    // validate reports every problem without building.
    let (st, v) = srv
        .call(
            "POST",
            "/sandbox-templates/validate",
            Some(json!({"build_spec": {"from": "minimal", "packages": ["curl"], "cpu_count": 0}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["valid"], false);
    let fields: Vec<&str> = v["data"]["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["build_spec.cpu_count"]);
    let (_, v) = srv
        .call(
            "POST",
            "/sandbox-templates/validate",
            Some(json!({"build_spec": {"from": "minimal", "packages": ["curl"]}})),
        )
        .await;
    assert_eq!(
        v["data"]["errors"][0]["field"], "build_spec.packages",
        "{v}"
    );
    let (_, v) = srv
        .call(
            "POST",
            "/sandbox-templates/validate",
            Some(json!({"build_spec": {"steps": [{"run": "make"}]}})),
        )
        .await;
    assert_eq!(v["data"]["valid"], true, "{v}");
    assert_eq!(v["data"]["build_spec"]["workdir"], "/workspace");

    // Creates: bad spec, built-in name, packages on minimal, unknown base.
    for (body, field) in [
        (
            json!({"name": "x", "build_spec": {"steps": [{"sh": "make"}]}}),
            "build_spec.steps[0]",
        ),
        (json!({"name": "minimal", "build_spec": {}}), "name"),
        (
            json!({"name": "x", "build_spec": {"from": "minimal", "packages": ["git"]}}),
            "build_spec.packages",
        ),
        (
            json!({"name": "x", "build_spec": {"from": "nope"}}),
            "build_spec.from",
        ),
    ] {
        let (st, v) = srv
            .call("POST", "/sandbox-templates", Some(body.clone()))
            .await;
        assert_eq!(st, 422, "{body}: {v}");
        assert_eq!(v["error"]["details"][0]["field"], field, "{body}: {v}");
    }
    let (st, _) = srv
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "x", "build_spec": {"form": "debian"}})),
        )
        .await;
    assert!(
        st == 400 || st == 422,
        "unknown spec fields are refused: {st}"
    );

    // A name is unique in a tenant.
    let work = tempfile::tempdir().expect("workdir");
    let spec = spec_in(work.path(), json!({}));
    let (st, v) = srv
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "dup", "build_spec": spec})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let tpl_id = v["data"]["id"].as_str().expect("id").to_string();
    let build_id = v["data"]["build"]["id"].as_str().expect("id").to_string();
    let (st, v) = srv
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "dup", "build_spec": spec})),
        )
        .await;
    assert_eq!(st, 409, "{v}");

    // Another tenant sees none of it.
    let other = srv.stranger().await;
    for path in [
        format!("/api/v1/sandbox-templates/{tpl_id}"),
        "/api/v1/sandbox-templates/dup".to_string(),
        format!("/api/v1/sandbox-template-builds/{build_id}"),
        format!("/api/v1/sandbox-template-builds/{build_id}/logs/stream"),
    ] {
        let st = other
            .get(srv.url(&path))
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(st, 404, "{path}");
    }
    let st = other
        .post(srv.url(&format!("/api/v1/sandbox-templates/{tpl_id}/builds")))
        .send()
        .await
        .expect("rebuild")
        .status();
    assert_eq!(st, 404);
    let st = other
        .post(srv.url("/api/v1/sandboxes"))
        .json(&json!({"template_id": "dup"}))
        .send()
        .await
        .expect("create")
        .status();
    assert_eq!(st, 422, "another tenant's template name is unknown");
    wait_build(&srv, &build_id).await;
}

#[tokio::test]
async fn templates_stack_on_custom_templates() {
    let srv = TestServer::start().await;
    let work = tempfile::tempdir().expect("workdir");
    let base = spec_in(
        work.path(),
        json!({"env": {"FROM_BASE": "1", "SHARED": "base"}, "steps": [{"run": "echo base > base.txt"}]}),
    );
    let (st, v) = srv
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "base", "build_spec": base})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let base_id = v["data"]["id"].as_str().expect("id").to_string();
    let b = wait_build(&srv, v["data"]["build"]["id"].as_str().expect("id")).await;
    assert_eq!(b["state"], "ready", "{b}");

    // A size that differs from the base's is refused; packages on a chain
    // that starts at minimal too.
    for (extra, field) in [
        (json!({"memory_mb": 512}), "build_spec.cpu_count"),
        (json!({"packages": ["git"]}), "build_spec.packages"),
    ] {
        let mut spec = json!({"from": "base"});
        for (k, v) in extra.as_object().expect("object") {
            spec[k] = v.clone();
        }
        let (st, v) = srv
            .call(
                "POST",
                "/sandbox-templates",
                Some(json!({"name": "child", "build_spec": spec})),
            )
            .await;
        assert_eq!(st, 422, "{v}");
        assert_eq!(v["error"]["details"][0]["field"], field, "{v}");
    }

    let child = json!({
        "from": "base",
        "workdir": work.path().to_str().expect("utf8"),
        "env": {"SHARED": "child"},
        "steps": [{"run": "test -f base.txt && echo child > child.txt"}],
    });
    let (st, v) = srv
        .call(
            "POST",
            "/sandbox-templates/validate",
            Some(json!({"build_spec": child})),
        )
        .await;
    assert_eq!((st, v["data"]["valid"].clone()), (200, json!(true)), "{v}");
    let (st, v) = srv
        .call(
            "POST",
            "/sandbox-templates",
            Some(json!({"name": "child", "build_spec": child})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let spec = &v["data"]["build"]["build_spec"];
    assert_eq!(spec["from"], base_id.as_str(), "pinned to the base's id");
    assert_eq!(spec["from_version"], 1);
    assert_eq!(spec["memory_mb"], 256, "the base's size");
    assert_eq!(spec["env"], json!({"FROM_BASE": "1", "SHARED": "child"}));
    let b = wait_build(&srv, v["data"]["build"]["id"].as_str().expect("id")).await;
    assert_eq!(b["state"], "ready", "{b}");
    let frames = log_frames(&srv, b["id"].as_str().expect("id"), None).await;
    assert!(
        serde_json::to_string(&frames)
            .expect("json")
            .contains(&format!("restoring {base_id} v1")),
        "{frames:?}"
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("child.txt")).expect("child step"),
        "child\n"
    );

    // A sandbox of it has both templates' env, under its own.
    let (st, s) = srv
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "child", "env": {"OWN": "x"}})),
        )
        .await;
    assert_eq!(st, 201, "{s}");
    assert_eq!(s["data"]["boot_path"], "snapshot");
    let id = s["data"]["id"].as_str().expect("id");
    let (st, r) = srv
        .call(
            "POST",
            &format!("/sandboxes/{id}/exec"),
            Some(json!({"command": "echo $FROM_BASE $SHARED $OWN"})),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["data"]["stdout"], "1 child x\n");
}

/// A template snapshot being written sits in `<shape>.partial`, manifest
/// and all, until it is renamed whole: only the renamed one is warm (a
/// client that created a sandbox on the staged one booted cold).
#[tokio::test]
async fn a_template_snapshot_still_being_written_is_not_listed_warm() {
    let srv = TestServer::start().await;
    let version = srv.core.data_dir().join("templates/minimal/v-test");
    for shape in ["1c-256m-512d.partial", "2c-512m-1024d"] {
        std::fs::create_dir_all(version.join(shape)).expect("shape dir");
        std::fs::write(version.join(shape).join("manifest.json"), "{}").expect("manifest");
    }
    let (st, v) = srv.call("GET", "/sandbox-templates/minimal", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["warm_shapes"], json!(["2c-512m-1024d"]), "{v}");
}
