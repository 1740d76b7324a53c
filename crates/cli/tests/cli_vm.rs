//! The `hearth` command's client subcommands (`sandbox`, `template`,
//! `preview`) run as a real binary against a real `hearth serve` with real
//! QEMU VMs.

mod common;

use common::*;
use serde_json::Value;

/// `hearth sandbox ...` against `api`: (exit code, stdout, stderr).
fn cli(api: &Api, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["sandbox"];
    all.extend_from_slice(args);
    hearth(api, &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn the_cli_creates_execs_copies_lists_and_removes_sandboxes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let api = &api;
    let (code, out, err) = tokio::task::block_in_place(|| {
        cli(
            api,
            &[
                "create",
                "--template",
                "minimal",
                "--memory-mb",
                "256",
                "--disk-mb",
                "512",
                "--json",
            ],
        )
    });
    assert_eq!(code, 0, "{out}{err}\n{}", server.log());
    let created: Value = serde_json::from_str(out.trim()).expect("create --json");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["state"], "running");

    // exec streams and passes the exit code on.
    let (code, out, err) = tokio::task::block_in_place(|| {
        cli(
            api,
            &[
                "exec",
                &id,
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        )
    });
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));
    let (code, out, _) =
        tokio::task::block_in_place(|| cli(api, &["exec", &id, "--", "echo", "it's", "a b"]));
    assert_eq!(
        (code, out.as_str()),
        (0, "it's a b\n"),
        "arguments are quoted"
    );

    // cp both ways.
    let local = tmp.path().join("in.bin");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &payload).expect("write");
    let dest = format!("{id}:/workspace/in.bin");
    let (code, _, err) =
        tokio::task::block_in_place(|| cli(api, &["cp", local.to_str().expect("utf8"), &dest]));
    assert_eq!(code, 0, "{err}");
    let back = tmp.path().join("back.bin");
    let (code, _, err) =
        tokio::task::block_in_place(|| cli(api, &["cp", &dest, back.to_str().expect("utf8")]));
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read(&back).expect("read") == payload,
        "cp round trip"
    );

    // ls --json parses; the table names the sandbox.
    let (code, out, _) = tokio::task::block_in_place(|| cli(api, &["ls", "--json"]));
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(out.trim()).expect("ls --json");
    assert!(list
        .as_array()
        .expect("array")
        .iter()
        .any(|s| s["id"] == id.as_str()));
    let (_, table, _) = tokio::task::block_in_place(|| cli(api, &["ls"]));
    assert!(table.starts_with("ID") && table.contains(&id), "{table}");

    // Errors are one clear line, never a panic.
    let (code, out, err) =
        tokio::task::block_in_place(|| cli(api, &["get", "sbx_nosuchsandbox00"]));
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.starts_with("error: ") && err.contains("not found") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!err.contains("panicked"));

    let (code, _, err) = tokio::task::block_in_place(|| cli(api, &["rm", &id]));
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = tokio::task::block_in_place(|| cli(api, &["get", &id, "--json"]));
    let gone: Value = serde_json::from_str(out.trim()).expect("get --json");
    assert_eq!(gone["state"], "destroyed");
}

/// GETs a preview URL (`http://<slug>.preview.localhost:PORT/...`) from the
/// server's preview listener on 127.0.0.1: (status, body). A share link's
/// redirect is followed as a browser does, with the cookie it sets.
async fn fetch_preview(url: &str) -> (u16, String) {
    let parsed = reqwest::Url::parse(url).expect("preview url");
    let host = parsed.host_str().expect("host").to_string();
    let port = parsed.port().expect("port");
    let c = reqwest::Client::builder()
        .resolve(&host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut r = c.get(url).send().await.expect("preview request");
    if r.status() == 303 {
        let cookie = r.headers()["set-cookie"].to_str().expect("cookie");
        let pair = cookie.split(';').next().expect("name=value").to_string();
        let location = r.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        r = c
            .get(location)
            .header("cookie", pair)
            .send()
            .await
            .expect("preview request");
    }
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn the_cli_builds_templates_and_shares_previews() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let api = &api;
    let run = |args: &[&str]| tokio::task::block_in_place(|| hearth(api, args));

    // A build streams its log (the step's output arrives as it runs) and
    // exits 0 once the template is ready.
    let (code, out, err) = run(&[
        "template",
        "build",
        "clitpl",
        "--from",
        "minimal",
        "--memory-mb",
        "256",
        "--run",
        "echo step-output-$((6*7)); mkdir -p /workspace/www && echo page-from-template > /workspace/www/index.html",
        "--start",
        "busybox httpd -f -p 8080 -h /workspace/www",
        "--ready",
        "wget -qO- http://127.0.0.1:8080/",
    ]);
    assert_eq!(code, 0, "{out}{err}\n{}", server.log());
    assert!(out.contains("step-output-42"), "the log streamed: {out}");
    assert!(err.contains("template clitpl: ready"), "{err}");

    let (code, out, _) = run(&["template", "ls", "--json"]);
    assert_eq!(code, 0);
    let all: Value = serde_json::from_str(out.trim()).expect("ls --json");
    let mine = all
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "clitpl"))
        .expect("clitpl listed");
    assert_eq!(
        (&mine["state"], &mine["version"]),
        (&Value::from("ready"), &Value::from("v1"))
    );
    let (_, table, _) = run(&["template", "ls"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("clitpl") && l.contains("v1") && l.contains("ready")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("minimal ") && l.contains("built-in")),
        "{table}"
    );

    // A failing step: exit 1 and the server's reason, the step's stderr
    // in the streamed log.
    let (code, out, err) = run(&[
        "template",
        "build",
        "clibad",
        "--from",
        "minimal",
        "--memory-mb",
        "256",
        "--run",
        "echo broken-on-purpose >&2; exit 7",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("broken-on-purpose"),
        "{out}{err}"
    );
    assert!(
        err.contains("template clibad: build") && err.contains("failed"),
        "{err}"
    );

    // A sandbox of the template serves its page at once; a private preview
    // refuses strangers, its share link lets them in.
    let (code, out, err) = run(&["sandbox", "create", "--template", "clitpl", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let id = serde_json::from_str::<Value>(out.trim()).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (code, out, err) = run(&["preview", "create", &id, "8080", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(out.trim()).expect("json");
    let url = created[0]["url"].as_str().expect("url").to_string();
    assert_eq!(created[0]["visibility"], "private");
    assert_eq!(fetch_preview(&url).await.0, 401);

    let (code, share, err) = run(&["preview", "share", &id, "8080", "--ttl", "600"]);
    assert_eq!(code, 0, "{share}{err}");
    assert!(err.contains("shown once"), "{err}");
    let (status, body) = fetch_preview(share.trim()).await;
    assert_eq!(
        (status, body.trim()),
        (200, "page-from-template"),
        "{share}"
    );

    let (_, table, _) = run(&["preview", "ls", &id]);
    assert!(
        table
            .lines()
            .any(|l| l.contains(" 8080 ") && l.contains("private")),
        "{table}"
    );
    let (code, _, err) = run(&["preview", "rm", &id, "8080"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&["preview", "ls", &id, "--json"]);
    assert_eq!(out.trim(), "[]");
    assert_eq!(
        fetch_preview(share.trim()).await.0,
        404,
        "a deleted preview is gone"
    );

    // Errors are one line with the server's reason.
    let (code, _, err) = run(&["preview", "create", &id, "0"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("port") && !err.contains("panicked"), "{err}");
    api.call("DELETE", &format!("/sandboxes/{id}"), None).await;
}
