//! Deployments on real VMs: an app built in a sandbox (busybox httpd
//! serving a page that names its version) is published; its URL serves
//! after the source is destroyed; v2 goes live while a client polls every
//! 50 ms with no failed request; rollback brings v1 back the same way; a
//! v3 whose health check never passes is `failed` and production stays;
//! the serving instance's VMM killed, the supervisor replaces it; after
//! `kill -9` of the server and a restart, the URL serves again.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SHAPE: &str =
    r#"{"template_id": "minimal", "memory_mb": 256, "disk_size_mb": 512, "timeout_sec": 900}"#;
const START: &str = "busybox httpd -f -p 8080 -h /workspace/www";

/// A sandbox whose `/workspace/www/index.html` says `page`.
async fn app(api: &Api, server: &Server, page: &str) -> String {
    let id = api
        .create(serde_json::from_str(SHAPE).expect("shape"), server)
        .await;
    let r = api
        .exec(
            &id,
            &format!("mkdir -p /workspace/www && echo {page} > /workspace/www/index.html"),
        )
        .await;
    assert_eq!(r["exit_code"], 0, "{r}");
    id
}

/// A client that sends the deployment's host to the proxy, and the URL.
fn client(url: &str) -> reqwest::Client {
    let host = url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .expect("host");
    let port: u16 = url.rsplit(':').next().expect("port").parse().expect("port");
    reqwest::Client::builder()
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn page(c: &reqwest::Client, url: &str) -> Option<String> {
    let r = c.get(format!("{url}/")).send().await.ok()?;
    r.status().is_success().then_some(())?;
    r.text().await.ok().map(|t| t.trim().to_string())
}

/// Polls `url` every 50 ms until stopped: (requests, failures, pages seen).
struct Poller {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64, Vec<String>)>,
}

impl Poller {
    fn start(url: &str) -> Poller {
        let (c, url) = (client(url), url.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut n, mut failed, mut seen) = (0, 0, Vec::<String>::new());
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    sent.fetch_add(1, Ordering::SeqCst);
                    match page(&c, &url).await {
                        Some(p) => {
                            if seen.last() != Some(&p) {
                                seen.push(p);
                            }
                        }
                        None => failed += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (n, failed, seen)
            })
        };
        Poller { stop, task }
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("poller")
    }
}

async fn deploy(api: &Api, sbx: &str, body: Value) -> Value {
    let (st, v) = api
        .call("POST", &format!("/sandboxes/{sbx}/deploy"), Some(body))
        .await;
    assert_eq!(st, 201, "{v}");
    v["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn publish_promote_roll_back_and_fail_without_downtime_on_real_vms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut server, api) = fresh_server(tmp.path()).await;
    let v1_src = app(&api, &server, "version-1").await;

    let t = Instant::now();
    let d = deploy(
        &api,
        &v1_src,
        json!({"name": "site", "port": 8080, "start_command": START}),
    )
    .await;
    assert_eq!(d["promoted"], true, "{d}\n{}", server.log());
    let dep = d["deployment"]["id"].as_str().expect("id").to_string();
    let url = d["deployment"]["public_url"]
        .as_str()
        .expect("url")
        .to_string();
    let c = client(&url);
    assert_eq!(page(&c, &url).await.as_deref(), Some("version-1"));
    eprintln!(
        "publish -> first 200 on the URL: {} ms",
        t.elapsed().as_millis()
    );

    // The source goes; the deployment serves from its own snapshot.
    let (st, _) = api
        .call("DELETE", &format!("/sandboxes/{v1_src}"), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(page(&c, &url).await.as_deref(), Some("version-1"));

    // v2 while a client polls: no failed request, and it switches.
    let v2_src = app(&api, &server, "version-2").await;
    let poll = Poller::start(&url);
    // A window of requests to v1 before the switch (not a wait for a state).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let d = deploy(
        &api,
        &v2_src,
        json!({"deployment_id": dep, "port": 8080, "start_command": START}),
    )
    .await;
    assert_eq!(d["promoted"], true, "{d}");
    eprintln!("v2 publish -> serving: {} ms", t.elapsed().as_millis());
    // Keep polling past the old instance's 2 s drain and its stop: the
    // window in which a request could fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (n, failed, seen) = poll.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {n} requests failed during the switch"
    );
    assert_eq!(seen, ["version-1", "version-2"], "{n} requests");

    // Rollback, again under polling.
    let poll = Poller::start(&url);
    let (st, v) = api
        .call(
            "POST",
            &format!("/deployments/{dep}/rollback"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // Past the drain and stop of the instance rolled back from.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (n, failed, seen) = poll.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {n} requests failed during the rollback"
    );
    assert_eq!(seen, ["version-2", "version-1"], "{n} requests");

    // The serving instance's VMM dies: the supervisor starts another and
    // the URL serves again.
    let active = |inst: &Value| {
        inst["data"]
            .as_array()
            .and_then(|l| l.iter().find(|i| i["active"] == true))
            .and_then(|i| i["id"].as_str())
            .map(str::to_string)
    };
    let (_, inst) = api
        .call(
            "GET",
            &format!("/deployments/{dep}/runtime-instances"),
            None,
        )
        .await;
    let old = active(&inst).expect("an active instance");
    let killed = std::process::Command::new("pkill")
        .args(["-9", "-f", &format!("sandboxes/{old}/")])
        .status()
        .expect("pkill");
    assert!(killed.success(), "the instance's VMM was found and killed");
    let t = Instant::now();
    loop {
        let (_, inst) = api
            .call(
                "GET",
                &format!("/deployments/{dep}/runtime-instances"),
                None,
            )
            .await;
        let now = active(&inst);
        if now.as_deref().is_some_and(|n| n != old)
            && page(&c, &url).await.as_deref() == Some("version-1")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not replaced within 60 s: {inst}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "instance VMM killed -> URL serves again: {} ms",
        t.elapsed().as_millis()
    );

    // kill -9 of the server: after a restart (a new proxy port) the URL
    // serves the same version again.
    server.kill9();
    let (server, api) = started(&tmp.path().join("data")).await;
    let (st, d) = api.call("GET", &format!("/deployments/{dep}"), None).await;
    assert_eq!(st, 200, "{d}");
    let url = d["data"]["public_url"].as_str().expect("url").to_string();
    let c = client(&url);
    assert_eq!(
        page(&c, &url).await.as_deref(),
        Some("version-1"),
        "{}",
        server.log()
    );

    // A v3 whose health check never passes, published with the CLI: it
    // fails saying why, and production stays on v1.
    let (code, out, err) = hearth(
        &api,
        &[
            "deploy",
            &v2_src,
            "--to",
            &dep,
            "--port",
            "8080",
            "--start",
            START,
            "--health",
            "/missing",
            "--health-timeout",
            "5",
        ],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("failed") && err.contains("404"), "{err}");
    assert_eq!(page(&c, &url).await.as_deref(), Some("version-1"));
    let (code, out, _) = hearth(&api, &["deployment", "versions", &dep]);
    assert_eq!(code, 0);
    assert!(
        out.lines().nth(1).is_some_and(|l| l.contains("failed")),
        "{out}"
    );
    // The failed instance and the drained ones are gone.
    let (_, inst) = api
        .call(
            "GET",
            &format!("/deployments/{dep}/runtime-instances"),
            None,
        )
        .await;
    assert_eq!(inst["data"].as_array().map(Vec::len), Some(1), "{inst}");

    let (code, out, _) = hearth(&api, &["deployment", "ls"]);
    assert!(
        code == 0 && out.contains(&dep) && out.contains("running"),
        "{out}"
    );
    let (code, _, err) = hearth(&api, &["deployment", "rm", &dep]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(page(&c, &url).await, None);
    api.call("DELETE", &format!("/sandboxes/{v2_src}"), None)
        .await;
}

/// The distinct pages `url` answers over `n` requests.
async fn pages(c: &reqwest::Client, url: &str, n: usize) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        if let Some(p) = page(c, url).await {
            seen.insert(p);
        }
    }
    seen
}

/// Waits (at most 120 s) until `url`'s pages over 12 requests are
/// `want(pages)`; those pages.
async fn until_pages(
    c: &reqwest::Client,
    url: &str,
    what: &str,
    want: impl Fn(&std::collections::BTreeSet<String>) -> bool,
) -> std::collections::BTreeSet<String> {
    let t = Instant::now();
    loop {
        let seen = pages(c, url, 12).await;
        if want(&seen) {
            return seen;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{what}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn replicas_builds_env_and_scaling_on_real_vms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let src = app(&api, &server, "unused").await;

    // Published with the CLI: the build runs once in a clone (the source
    // stays as it was), two instances serve, each page naming its host.
    let start = "echo \"$(hostname) $(cat built.txt) [$GREETING]\" > index.html; exec busybox httpd -f -p 8080 -h .";
    let t = Instant::now();
    let (code, out, err) = hearth(
        &api,
        &[
            "deploy",
            &src,
            "--name",
            "multi",
            "--port",
            "8080",
            "--replicas",
            "2",
            "--build",
            "echo compiled > built.txt && echo build-ok",
            "--output-path",
            "/workspace/www",
            "--start",
            start,
        ],
    );
    assert_eq!(code, 0, "{out}{err}\n{}", server.log());
    eprintln!(
        "publish with a build and 2 replicas: {} ms",
        t.elapsed().as_millis()
    );
    let url = out.trim().to_string();
    let (_, list) = api.call("GET", "/deployments", None).await;
    let dep = list["data"][0]["id"].as_str().expect("id").to_string();
    let (_, versions) = api
        .call("GET", &format!("/deployments/{dep}/versions"), None)
        .await;
    assert_eq!(versions["data"][0]["build_log"], "build-ok\n", "{versions}");
    let r = api.exec(&src, "test -e /workspace/www/built.txt").await;
    assert_eq!(
        r["exit_code"], 1,
        "the build ran in a clone, not the source"
    );

    let c = client(&url);
    let hosts = |seen: &std::collections::BTreeSet<String>| -> Vec<String> {
        seen.iter()
            .map(|p| p.split(' ').next().unwrap_or("").replace('-', "_"))
            .collect()
    };
    let seen = until_pages(&c, &url, "both instances serve", |s| s.len() == 2).await;
    assert!(seen.iter().all(|p| p.ends_with(" compiled []")), "{seen:?}");
    let (_, inst) = api
        .call(
            "GET",
            &format!("/deployments/{dep}/runtime-instances"),
            None,
        )
        .await;
    let mut ids: Vec<String> = inst["data"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    assert_eq!(hosts(&seen), ids, "the pages come from the two instances");

    // A new env, applied by a redeploy under polling: no failed request.
    let (code, _, err) = hearth(&api, &["deployment", "env", &dep, "GREETING=hello"]);
    assert_eq!(code, 0, "{err}");
    let poll = Poller::start(&url);
    let (code, _, err) = hearth(&api, &["deployment", "redeploy", &dep]);
    assert_eq!(code, 0, "{err}");
    // Past the 2 s drain of the replaced instances.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (n, failed, _) = poll.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {n} requests failed during the redeploy"
    );
    let seen = pages(&c, &url, 8).await;
    assert!(
        !seen.is_empty() && seen.iter().all(|p| p.ends_with(" compiled [hello]")),
        "{seen:?}"
    );

    // Scale to 3, then kill one instance's VMM under polling: the proxy
    // passes requests to the others, and the supervisor brings 3 back.
    let (code, out, err) = hearth(&api, &["deployment", "scale", &dep, "3"]);
    assert_eq!(code, 0, "{out}{err}");
    let three = until_pages(&c, &url, "three instances serve", |s| s.len() == 3).await;
    let victim = hosts(&three)[0].clone();
    let poll = Poller::start(&url);
    let killed = std::process::Command::new("pkill")
        .args(["-9", "-f", &format!("sandboxes/{victim}/")])
        .status()
        .expect("pkill");
    assert!(killed.success(), "the instance's VMM was found and killed");
    let t = Instant::now();
    let back = until_pages(&c, &url, "a third instance again", |s| {
        s.len() == 3 && !hosts(s).contains(&victim)
    })
    .await;
    eprintln!(
        "one of 3 instances killed -> 3 serve again: {} ms",
        t.elapsed().as_millis()
    );
    let (n, failed, _) = poll.finish().await;
    eprintln!("{failed} of {n} requests failed while an instance died");
    assert!(
        failed <= 1,
        "{failed} of {n} requests failed: only one in flight may"
    );
    assert_eq!(back.len(), 3);

    // Down to 1; the logs of what serves.
    let (code, _, err) = hearth(&api, &["deployment", "scale", &dep, "1"]);
    assert_eq!(code, 0, "{err}");
    until_pages(&c, &url, "one instance serves", |s| s.len() == 1).await;
    let (code, out, err) = hearth(&api, &["deployment", "logs", &dep, "--lines", "5"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = hearth(&api, &["deployment", "rm", &dep]);
    assert_eq!(code, 0, "{err}");
    api.call("DELETE", &format!("/sandboxes/{src}"), None).await;
}
